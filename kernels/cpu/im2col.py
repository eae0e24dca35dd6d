"""im2col convolution: gather patches into a matrix, then one GEMM.

For each group ``g`` the convolution is a matrix product::

    y[n, g K/G : (g+1) K/G, :] = W_g @ P_g[n]

with ``W_g = w[g K/G : (g+1) K/G].reshape(K/G, C/G kH kW)`` and the patch
matrix ``P_g[n]`` of shape ``(C/G kH kW, Ho Wo)`` whose column ``p`` holds
the (zero-padded, strided, dilated) input window of output position ``p``.
Row ``(c, i, j)`` of ``P`` is the input plane ``c`` shifted by the kernel
tap ``(i, j)``, so building it is a strided copy.

At stride 1 ``P`` is never built (:func:`_gemm_from_images`): the GEMM's
jobs copy each panel's slice of it straight from the images, zero-padded
first where the layer pads (:func:`pad_images`), into a buffer in L1
just before their register tiles use it
(:func:`._panel_gemm.matmul_image`); a row of a panel is one or a few
runs of an image row.  Built, ``P`` is 9x the image for a 3x3 layer,
written to memory by the gather and read back by the GEMM: ResNet-50's
3x3 layers at batch 4 ran 1.10-1.26x faster packed from the images
(docs/performance.md section AM).  Strided layers (whose ``P`` is no
larger than x, and whose runs would be strided copies), and images whose
padded copy exceeds the scratch limit, are gathered chunk by chunk by a
Numba ``prange`` kernel (:func:`fill_panels`).

The product is this package's own register-tiled GEMM
(:mod:`kernels.cpu._panel_gemm`), not a BLAS call: every output is one
chain of fused multiply-adds over ``(c, i, j)`` in increasing order,
wherever its column lies in the product.  So im2col on any window of an
image gives the same bits as on the whole image (a Dask block equals the
in-memory result), whatever the chunking, the thread count or the BLAS
NumPy is linked to.  With OpenBLAS the last bits depended on the
column's place in the call and on the call's width.  The gather writes
the patch matrix in the GEMM's panels (one register tile wide), and the
GEMM writes straight into ``y`` (a column slice of ``y[n]`` viewed as
``(G, K/G, Ho Wo)``).  All groups' patch matrices are stacked as one
``(C kH kW, cols)`` matrix: one gather and one GEMM call do every group.
A 1x1, stride-1, unpadded convolution's image is its own ``P``: its rows
are the channels, one long output row each.

Bounded memory: the patch matrix is built in chunks of output positions
(a contiguous range of the flattened ``(ho, wo)`` index, so a 1-D signal
with ``Ho = 1`` is chunked too) small enough that the scratch never exceeds
:func:`get_scratch_limit` (64 MiB by default; environment variable
``CONVBENCH_IM2COL_SCRATCH`` or :func:`set_scratch_limit`).  Within the
limit a chunk is preferably cache-sized (``Im2colTuning.cache_target_bytes``,
but at least ``min_gemm_columns`` GEMM columns), so the GEMM reads patches the
gather has just written.  When whole images are small (deep layers, 7x7
maps) several images share one chunk and one GEMM, whose result is then
copied into ``y``: one wide GEMM is faster than many skinny ones.

Every step is a ``prange`` kernel in Numba's one OpenMP team, so no other
thread pool wakes beside them whichever library was imported first.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .._dispatch import ConvSpec, Kernel
from . import _panel_gemm, _pointwise, _tuning
from ._panel_gemm import panel_width_of
from ._workspace import Workspace

__all__ = ["conv2d", "set_scratch_limit", "get_scratch_limit", "plan_chunks",
           "fill_panels", "fill_patches", "fill_patches_serial"]

SCRATCH_ENV_VAR = _tuning.SCRATCH_ENV_VAR

# Parallel tasks of the gather: at least _MIN_TASKS (so every thread gets
# several, whatever the core count), none shorter than
# _MIN_POSITIONS_PER_TASK output positions (to amortise the loop set-up).
# Compile-time constants of the gather kernel.
_MIN_TASKS = 64
_MIN_POSITIONS_PER_TASK = 1024


def _check_limit(nbytes):
    if isinstance(nbytes, (bool, np.bool_)) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"scratch limit must be an int number of bytes, got {nbytes!r}")
    if nbytes < 1:
        raise ValueError(f"scratch limit must be >= 1 byte, got {nbytes}")
    return int(nbytes)


def set_scratch_limit(nbytes):
    """Set the most scratch memory (bytes) one ``conv2d`` call may allocate.

    The scratch is the patch matrix of one chunk (plus, when images are
    merged, that chunk's GEMM result).  A chunk holds at least one output
    position, so the scratch is at most ``max(nbytes, one patch column)``
    where one column is ``C kH kW`` elements (plus ``K`` when merging).
    Process-wide (``kernels.cpu._tuning.set_defaults``); returns the
    previous limit, so a caller can restore it.
    """
    previous = _tuning.defaults().im2col.scratch_limit
    _tuning.set_defaults(im2col=dict(scratch_limit=_check_limit(nbytes)))
    return previous


def get_scratch_limit():
    """The scratch limit in bytes in force (default 64 MiB or
    ``$CONVBENCH_IM2COL_SCRATCH``, see :func:`set_scratch_limit`)."""
    return _tuning.current().im2col.scratch_limit


class Chunk(NamedTuple):
    """Images ``n0:n1`` and flattened output positions ``p0:p1`` of each."""

    n0: int
    n1: int
    p0: int
    p1: int


def plan_chunks(n_images, positions, column_bytes, merged_column_bytes,
                limit, merge_below=None, target=None, min_columns=None):
    """Split the output of a convolution into chunks that fit in ``limit``.

    Parameters
    ----------
    n_images, positions : int
        Batch size and output positions per image (``Ho * Wo``).
    column_bytes : int
        Scratch bytes per output position when the GEMM writes into ``y``
        (one patch column).
    merged_column_bytes : int
        The same when images are merged (patch column plus GEMM result).
    limit : int
        Scratch limit in bytes: never exceeded, except that a chunk holds
        at least one output position.
    merge_below, target, min_columns : int, optional
        Default: the :class:`~kernels.cpu._tuning.Im2colTuning` in force.
    merge_below : int
        Merge whole images only when ``positions`` is below this.
    target : int
        Preferred scratch bytes of a chunk, so that the patches the gather
        writes are still in cache when the GEMM reads them ...
    min_columns : int
        ... unless that makes the GEMM narrower than this many columns.

    Returns
    -------
    list of Chunk
        Covering every ``(image, position)`` exactly once, in order.  A
        chunk either spans several whole images (``p0 = 0, p1 =
        positions``) or lies inside one image.
    """
    tuning = _tuning.current().im2col
    merge_below = tuning.merge_below_positions if merge_below is None else merge_below
    target = tuning.cache_target_bytes if target is None else target
    min_columns = tuning.min_gemm_columns if min_columns is None else min_columns
    if positions < merge_below and n_images > 1:
        wanted_columns = max(min_columns, target // max(1, merged_column_bytes))
        per_chunk = min(n_images, -(-wanted_columns // positions),
                        limit // max(1, merged_column_bytes * positions))
        if per_chunk >= 2:
            # Equal chunks: the last one is not a sliver.
            n_chunks = -(-n_images // per_chunk)
            per_chunk = -(-n_images // n_chunks)
            return [Chunk(n0, min(n_images, n0 + per_chunk), 0, positions)
                    for n0 in range(0, n_images, per_chunk)]
    wanted_columns = max(min_columns, target // max(1, column_bytes))
    cols = max(1, min(positions, wanted_columns, limit // max(1, column_bytes)))
    n_chunks = -(-positions // cols)
    cols = -(-positions // n_chunks)
    return [Chunk(n, n + 1, p0, min(positions, p0 + cols))
            for n in range(n_images) for p0 in range(0, positions, cols)]


@njit(cache=True, inline="always")
def _ceil_div(a, b):
    return -((-a) // b)


@njit(cache=True, inline="always")
def _put_zeros(dst, row_base, panel, panel_stride, c0, c1):
    """Zero columns ``[c0, c1)`` of one patch row (``row_base``: the row's
    offset in a panel; see :func:`fill_panels` for the layout)."""
    c = c0
    while c < c1:
        p = c // panel
        lane = c - p * panel
        n = min(c1 - c, panel - lane)
        out = dst[p * panel_stride + row_base + lane:]
        for q in range(n):
            out[q] = 0
        c += n


@njit(cache=True, inline="always")
def _put_copy(dst, row_base, panel, panel_stride, c0, n, src, sw):
    """Columns ``[c0, c0 + n)`` of one patch row = ``src[0], src[sw], ...``."""
    done = 0
    while done < n:
        c = c0 + done
        p = c // panel
        lane = c - p * panel
        m = min(n - done, panel - lane)
        # Views that start at the first element, indexed from 0: Numba
        # then drops its negative-index check and vectorises the loop
        # (measured 3x faster than indexing dst[base + wo]).
        out = dst[p * panel_stride + row_base + lane:]
        part = src[done * sw:]
        if sw == 1:
            for q in range(m):
                out[q] = part[q]
        else:
            for q in range(m):
                out[q] = part[q * sw]
        done += m


@njit(cache=True, inline="always")
def _fill_segment(plane, dst, row_base, panel, panel_stride, p_start, p_end,
                  p_base, row_offset, col_offset, sh, sw, wo_count):
    """Column p - p_base of one patch row = plane[ho sh + row_offset, wo sw
    + col_offset] for flattened output positions p = ho Wo + wo in
    [p_start, p_end); zero where the tap falls in the padding."""
    h, w = plane.shape
    flat = plane.ravel()
    # Output columns whose tap lands inside the row: 0 <= wo sw + off < W.
    valid_lo = max(0, _ceil_div(-col_offset, sw))
    valid_hi = min(wo_count, _ceil_div(w - col_offset, sw))
    p = p_start
    ho = p // wo_count
    wo0 = p - ho * wo_count
    while p < p_end:
        wo1 = min(wo_count, wo0 + (p_end - p))
        base = p - p_base - wo0          # column of output column wo = 0
        hi = ho * sh + row_offset
        if hi < 0 or hi >= h:
            lo = up = wo1                # the whole row is padding
        else:
            lo = min(max(wo0, valid_lo), wo1)
            up = max(min(wo1, valid_hi), lo)
        _put_zeros(dst, row_base, panel, panel_stride, base + wo0, base + lo)
        if up > lo:
            _put_copy(dst, row_base, panel, panel_stride, base + lo, up - lo,
                      flat[hi * w + lo * sw + col_offset:], sw)
        _put_zeros(dst, row_base, panel, panel_stride, base + up, base + wo1)
        p += wo1 - wo0
        # The next output row, from its first column (no division).
        ho += 1
        wo0 = 0


@njit(cache=True)
def _task_blocks(rows, npos):
    """(blocks per row, positions per block) of the gather's tasks.

    Positions are split only when there are too few rows to keep every
    thread busy (1-D signals with few channels): splitting a row costs
    speed otherwise.
    """
    n_blocks = max(1, min(_ceil_div(npos, _MIN_POSITIONS_PER_TASK),
                          _ceil_div(_MIN_TASKS, rows)))
    return n_blocks, _ceil_div(npos, n_blocks)


@njit(cache=True, inline="always")
def _fill_row(row, m, a, b, p_base, x, n0, kh, kw, sh, sw, pad_top, pad_left,
              dh, dw, wo_count, patches, row_base, panel, panel_stride):
    """Positions ``[a, b)`` of image ``n0 + m`` under patch row ``row``
    (column ``p - p_base`` for position ``p``), for :func:`fill_panels`
    and :func:`fill_patches`.  ``panel`` is a compile-time constant in
    both: LLVM then turns the panel arithmetic into shifts and copies
    whole pieces with few instructions."""
    taps = kh * kw
    c = row // taps
    i = (row % taps) // kw
    j = row % kw
    # Whole rows keep Numba's contiguous layout (a 2-D slice would not).
    plane = x[n0 + m, c]
    if sw == 1:
        # A literal stride lets LLVM specialise the copy loop: measured
        # 25% faster than passing sw through at stride 1; at stride 2 it
        # vectorises with shuffles instead of one scalar load per element
        # (ResNet-50's stride-2 gathers 1.3-2.2x faster, Zen 3).
        _fill_segment(plane, patches, row_base, panel, panel_stride, a, b,
                      p_base, i * dh - pad_top, j * dw - pad_left, sh, 1,
                      wo_count)
    elif sw == 2:
        _fill_segment(plane, patches, row_base, panel, panel_stride, a, b,
                      p_base, i * dh - pad_top, j * dw - pad_left, sh, 2,
                      wo_count)
    else:
        _fill_segment(plane, patches, row_base, panel, panel_stride, a, b,
                      p_base, i * dh - pad_top, j * dw - pad_left, sh, sw,
                      wo_count)


@njit(cache=True, inline="always")
def _fill_task(task, n_blocks, block_len, x, n0, n1, p0, p1, kh, kw, sh, sw,
               pad_top, pad_left, dh, dw, wo_count, patches, rows, panel,
               row_stride):
    """One (patch row, image, block of positions) of the gather: rows
    ``row_stride`` apart within a panel of ``panel`` columns."""
    n_img = n1 - n0
    block = task % n_blocks
    rest = task // n_blocks
    a = p0 + block * block_len
    m = rest % n_img
    row = rest // n_img
    _fill_row(row, m, a, min(p1, a + block_len), p0 - m * (p1 - p0), x, n0,
              kh, kw, sh, sw, pad_top, pad_left, dh, dw, wo_count, patches,
              row * row_stride, panel, rows * row_stride)


# The "panel" of a row-major patch matrix: wider than any row.
_WHOLE_ROW = 1 << 62


@njit(parallel=True, cache=True)
def fill_panels(x, n0, n1, p0, p1, kh, kw, sh, sw, pad_top, pad_left,
                dh, dw, wo_count, patches, rows, panel):
    """Gather the patch matrix of images ``n0:n1``, positions ``p0:p1``,
    in the panels of :mod:`._panel_gemm`.

    The patch matrix has ``rows = C kH kW`` rows and ``(n1 - n0) (p1 -
    p0)`` columns; row ``(c, i, j)``, column ``m (p1 - p0) + (p - p0)``
    receives the input value under kernel tap ``(i, j)`` of channel ``c``
    for output position ``p`` (flattened ``ho Wo + wo``) of image ``n0 +
    m``, zero in the padding.  ``patches`` (1-D) holds it in panels of
    ``P`` = :func:`._panel_gemm.panel_width` columns: element (r, col) at
    ``(col // P) rows P + r P + col % P``.  Parallel over (row, image,
    block of positions): every element is written by one task.

    ``panel`` is the caller's :func:`._panel_gemm.panel_width`: the
    kernel compiles its own in as a constant, and a cached kernel compiled
    before that width changed (Numba's cache sees only this file) would
    write past the buffer; it raises instead.
    """
    width = panel_width_of(patches)      # a constant, unlike ``panel``
    if panel != width:
        raise ValueError("stale compiled gather: its panel width is not "
                         "_panel_gemm.panel_width; clear Numba's cache")
    tasks = rows * (n1 - n0)
    n_blocks, block_len = _task_blocks(tasks, p1 - p0)
    for task in prange(tasks * n_blocks):
        _fill_task(task, n_blocks, block_len, x, n0, n1, p0, p1, kh, kw,
                   sh, sw, pad_top, pad_left, dh, dw, wo_count, patches,
                   rows, width, width)


@njit(parallel=True, cache=True)
def fill_patches(x, n0, n1, p0, p1, kh, kw, sh, sw, pad_top, pad_left,
                 dh, dw, wo_count, patches):
    """:func:`fill_panels` into a row-major, C-contiguous ``(C kH kW, (n1
    - n0) (p1 - p0))`` matrix ``patches`` (the weight gradient's BLAS
    GEMM reads it)."""
    rows, cols = patches.shape
    tasks = rows * (n1 - n0)
    n_blocks, block_len = _task_blocks(tasks, p1 - p0)
    for task in prange(tasks * n_blocks):
        _fill_task(task, n_blocks, block_len, x, n0, n1, p0, p1, kh, kw,
                   sh, sw, pad_top, pad_left, dh, dw, wo_count,
                   patches.reshape(patches.size), rows, _WHOLE_ROW, cols)


@njit(cache=True)
def fill_patches_serial(x, n0, n1, p0, p1, kh, kw, sh, sw, pad_top, pad_left,
                        dh, dw, wo_count, patches):
    """:func:`fill_patches` on the calling thread only (same result).

    Used when Numba's OpenMP workers would spin-wait beside BLAS's threads
    (see :mod:`kernels._threads`): a serial gather leaves BLAS the cores.
    """
    rows, cols = patches.shape
    tasks = rows * (n1 - n0)
    n_blocks, block_len = _task_blocks(tasks, p1 - p0)
    for task in range(tasks * n_blocks):
        _fill_task(task, n_blocks, block_len, x, n0, n1, p0, p1, kh, kw,
                   sh, sw, pad_top, pad_left, dh, dw, wo_count,
                   patches.reshape(patches.size), rows, _WHOLE_ROW, cols)


def _is_pointwise(w_shape, stride, padding):
    """1x1 kernel, stride 1, no padding: each image is one long row."""
    return (w_shape[2] == 1 and w_shape[3] == 1 and tuple(stride) == (1, 1)
            and not any(padding))


def conv2d(x, w, bias, stride, padding, dilation, groups, tuning=None):
    """im2col + GEMM convolution.

    Parameters
    ----------
    x : ndarray, (N, C, H, W), C-contiguous float32/float64
    w : ndarray, (K, C // groups, kH, kW), same dtype
    bias : ndarray (K,) or None
    stride, dilation : (int, int)
    padding : (top, bottom, left, right) zero padding
    groups : int
    tuning : Im2colTuning, optional
        Default ``kernels.cpu._tuning.current().im2col``.

    Returns
    -------
    y : ndarray, (N, K, Ho, Wo), new and C-contiguous, dtype of x

    Notes
    -----
    Each output is one dot product of length ``C/G kH kW`` computed by the
    BLAS GEMM, so the error is that of a (blocked) dot product; the
    documented bound is ``kernels.accuracy.error_bound("im2col", ...)``.
    The scratch memory is bounded by :func:`get_scratch_limit`.
    """
    spec = ConvSpec(x.shape, w.shape, tuple(stride), tuple(padding),
                    tuple(dilation), int(groups), x.dtype)
    return _run(spec, np.ascontiguousarray(x), np.ascontiguousarray(w), bias,
                tuning)


def _run(spec, x, w, bias, tuning=None):
    """The contract's entry: ``run(spec, x, w, bias)``."""
    return _prepare(spec, tuning)(x, w, bias)


def _prepare(spec, tuning=None):
    """The contract's ``prepare``: the lanes product's prepared form
    (:func:`._pointwise.prepare`) where it applies, the kept GEMM calls of
    other 1x1 layers, else the general GEMM path (:func:`_run_gemm`)
    with the tunables in force."""
    tuning = tuning or _tuning.current().im2col
    if _pointwise.applies(spec, tuning):
        product = _pointwise.prepare(spec)
        return lambda x, w, bias: _add_channel_bias(product(x, w), bias)
    calls = None
    if _is_pointwise(spec.w_shape, spec.stride, spec.padding):
        calls = _pointwise_calls(spec.x_shape, spec.w_shape, spec.groups,
                                 np.dtype(spec.dtype), tuning,
                                 _tuning.block_shape_threads())
    if calls is None:
        return lambda x, w, bias: _run_gemm(spec, x, w, bias, tuning)

    def pointwise_gemm(x, w, bias):
        if x.flags.writeable:
            return _run_pointwise(calls, spec, x, w, bias)
        return _run_gemm(spec, x, w, bias, tuning)

    return pointwise_gemm


def _run_gemm(spec, x, w, bias, tuning):
    """The general GEMM path: a problem neither the lanes product nor
    kept 1x1 calls (:func:`_prepare`) compute."""
    stride, padding, dilation, groups = (spec.stride, spec.padding,
                                         spec.dilation, spec.groups)
    k, cg, kh, kw = w.shape
    y = np.empty(spec.out_shape, dtype=x.dtype)
    # (G, K/G, C/G kH kW): the GEMM's left factor of every group.
    w_stack = w.reshape(groups, k // groups, cg * kh * kw)
    bias_stack = None if bias is None else bias.reshape(groups, k // groups, 1)
    x_run, y_run = x, y
    if _is_pointwise(w.shape, stride, padding):
        # Each image as one row of H W pixels: the gather copies whole
        # planes instead of one image row at a time.
        n, c, h, wd = x.shape
        x_run = x.reshape(n, c, 1, h * wd)
        y_run = y.reshape(n, k, 1, h * wd)
    _chunked_gemm(x_run, w.shape, w_stack, bias_stack, y_run, stride,
                  padding, dilation, tuning)
    return y


@functools.lru_cache(maxsize=1024)
def _pointwise_calls(x_shape, w_shape, groups, dtype, tuning, threads):
    """The GEMM calls of a 1x1, stride-1, unpadded layer whose chunks
    each lie in one image, as :func:`_gemm_from_images` would make them
    (:class:`._panel_gemm.ImageCall`, x and y flattened), or None where it
    would not pack from the images or would merge images.  Kept per
    problem: working the calls out again took ~10 us of a ~30 us call
    (Xeon VM), and a network calls the same 1x1 layers again and again.
    ``threads``: :func:`._tuning.block_shape_threads`, which the jobs
    follow."""
    n, c, h, w = x_shape
    k = w_shape[0]
    positions = h * w
    item = np.dtype(dtype).itemsize
    if not tuning.pack_from_image or c * positions * item > tuning.scratch_limit:
        return None
    chunks = _image_chunks(x_shape, w_shape, (0, 0, 0, 0), positions, item,
                           tuning)
    if any(ch.n1 - ch.n0 > 1 for ch in chunks):
        return None
    image = c * positions
    a_shape = (groups, k // groups, c // groups)
    return tuple(
        _panel_gemm.plan_image_call(
            a_shape, dtype,
            _panel_gemm.image_geometry(ch.n0 * image, ch.p0, 1, positions,
                                       image, positions, 1, positions),
            ch.p1 - ch.p0, ch.n0 * k * positions + ch.p0, positions)
        for ch in chunks)


def _image_chunks(x_shape, w_shape, padding, positions, itemsize, tuning):
    """The chunks of :func:`_gemm_from_images`: its GEMM's calls as the
    gather would size them (:func:`plan_chunks`).  A whole 1 x 65536
    signal in one call made each job keep accumulators for all its panels
    (2 MB at 64 channels, k = 3) between blocks of the reduction, outside
    L2.  A column costs its patches or its share of the padded image,
    whichever is more (a widely dilated kernel's patch matrix is the
    smaller), so merged images stay within the scratch limit."""
    n, c, h, w = x_shape
    k, _, kh, kw = w_shape
    pt, pb, pl, pr = padding
    image = c * (h + pt + pb) * (w + pl + pr)
    column = max(c * kh * kw * itemsize, -(-image * itemsize // positions))
    return plan_chunks(n, positions, column, column + k * itemsize,
                       tuning.scratch_limit, tuning.merge_below_positions,
                       tuning.cache_target_bytes, tuning.min_gemm_columns)


def _run_pointwise(calls, spec, x, w, bias):
    """A 1x1 layer through its kept GEMM calls (:func:`_pointwise_calls`):
    the calls, and so the bits, of :func:`_gemm_from_images`."""
    y = np.empty(spec.out_shape, dtype=x.dtype)
    groups = spec.groups
    k, cg = spec.w_shape[:2]
    a = w.reshape(groups, k // groups, cg)
    src, out = x.reshape(x.size), y.reshape(y.size)
    for call in calls:
        _panel_gemm.run_image_call(call, a, src, out)
    return _add_channel_bias(y, bias)


def _add_channel_bias(y, bias):
    """``y`` (N, K, Ho, Wo) plus ``bias`` (K,) or None, in place; ``y``."""
    _add_bias(y, None if bias is None else bias.reshape(1, -1, 1, 1))
    return y


def _add_bias(out, bias_stack):
    """``out += bias_stack`` (when there is a bias).  Inf - Inf and
    overflow give NaN/Inf, as in torch: no warnings.  (The jitted gather
    and GEMM ignore NumPy's error state; only this NumPy add needs it.)"""
    if bias_stack is not None:
        with np.errstate(all="ignore"):
            out += bias_stack


def _chunked_gemm(x, w_shape, w_stack, bias_stack, y, stride, padding, dilation,
                  tuning):
    """Multiply the patches into y: packed by the GEMM's jobs from the
    (padded) images at stride 1 where one padded image fits the scratch
    limit, else gathered one chunk at a time."""
    if (tuning.pack_from_image and tuple(stride) == (1, 1)
            and _padded_bytes(x, padding) <= tuning.scratch_limit):
        _gemm_from_images(x, w_shape, w_stack, bias_stack, y, stride, padding,
                          dilation, tuning)
    else:
        _gathered_gemm(x, w_shape, w_stack, bias_stack, y, stride, padding,
                       dilation, tuning)


# The padded images the GEMM packs from, kept between calls: a fresh 16 MB
# copy of a 64 x 65536 signal cost 4096 page faults a call, 37 ms instead
# of 8.1 back to back, where the allocator handed its pages back each time.
_workspace = Workspace()


def clear_workspace():
    """Drop the scratch buffers kept for the calling thread."""
    _workspace.clear()


def _padded_bytes(x, padding):
    """Bytes of one zero-padded image of x."""
    _, c, h, w = x.shape
    pt, pb, pl, pr = padding
    return c * (h + pt + pb) * (w + pl + pr) * x.itemsize


@njit(parallel=True, cache=True)
def pad_images(x, n0, pt, pl, out):
    """``out[m] = x[n0 + m]`` zero-padded by ``pt`` rows above and ``pl``
    columns on the left (and whatever ``out``'s shape leaves below and on
    the right), one (image, channel) plane per task."""
    n_img, c, hp, wp = out.shape
    h, w = x.shape[2], x.shape[3]
    for task in prange(n_img * c):
        m = task // c
        ch = task - m * c
        plane = out[m, ch]
        src = x[n0 + m, ch]
        for r in range(hp):
            row = plane[r]
            hi = r - pt
            if hi < 0 or hi >= h:
                for q in range(wp):
                    row[q] = 0
                continue
            for q in range(pl):
                row[q] = 0
            part = row[pl:]
            line = src[hi]
            for q in range(w):
                part[q] = line[q]
            for q in range(pl + w, wp):
                row[q] = 0


@functools.lru_cache(maxsize=256)
def _tap_offsets(c, kh, kw, dh, dw, plane_h, plane_w):
    """Offset of patch row ``(c, i, j)`` in a (C, plane_h, plane_w) image:
    the input under tap (i, j) of output position (0, 0)."""
    taps = (np.arange(kh)[:, None] * dh * plane_w
            + np.arange(kw)[None, :] * dw).ravel()
    offsets = (np.arange(c)[:, None] * plane_h * plane_w
               + taps[None, :]).ravel().astype(np.int64)
    offsets.setflags(write=False)
    return offsets


def _multiply_chunk(gemm, y, y_stack, bias_stack, result_buffer, n0, n1, p0,
                    p1):
    """``gemm(out, cols)`` for the chunk (images ``n0:n1``, positions
    ``p0:p1``), plus the bias: one image's straight into ``y``, merged
    images' through ``result_buffer`` and a transpose into ``y``."""
    groups, kg, positions = y_stack.shape[1:]
    images = n1 - n0
    cols = images * (p1 - p0)
    if images == 1:
        out = y_stack[n0, :, :, p0:p1]
        gemm(out, cols)
        _add_bias(out, bias_stack)
        return
    result = result_buffer[:groups * kg * cols].reshape(groups, kg, cols)
    gemm(result, cols)
    _add_bias(result, bias_stack)
    y[n0:n1].reshape(images, groups * kg, positions)[...] = result.reshape(
        groups * kg, images, positions).transpose(1, 0, 2)


def _gemm_from_images(x, w_shape, w_stack, bias_stack, y, stride, padding,
                      dilation, tuning):
    """im2col without a patch matrix: the GEMM's jobs copy each panel's
    slice of it from the images (zero-padded first where the layer pads;
    :func:`._panel_gemm.matmul_image`), in L1, where the gather wrote the
    whole patch matrix to memory and the GEMM read it back.  The same
    panels, so the same bits as :func:`_gathered_gemm`."""
    n, c, h, w = x.shape
    k, _, kh, kw = w_shape
    groups, kg, _ = w_stack.shape
    _, _, ho, wo = y.shape
    sh, sw = stride
    pt, pb, pl, pr = padding
    positions = ho * wo
    padded = any(padding) or not x.flags.writeable
    hp, wp = h + pt + pb, w + pl + pr
    image = c * hp * wp
    chunks = _image_chunks(x.shape, w_shape, padding, positions,
                           x.dtype.itemsize, tuning)
    per_chunk = chunks[0].n1 - chunks[0].n0
    source = (_workspace.get("padded", (per_chunk, c, hp, wp), x.dtype)
              if padded else None)
    # A 1x1 layer's rows are its channels, a plane apart; others' taps
    # come from a table.
    pointwise = kh == kw == 1
    offsets = (_panel_gemm.NO_OFFSETS if pointwise else
               _tap_offsets(c, kh, kw, dilation[0], dilation[1], hp, wp))
    merged = per_chunk > 1
    result_buffer = np.empty(k * per_chunk * positions if merged else 0,
                             dtype=x.dtype)
    y_stack = y.reshape(n, groups, kg, positions)
    x_flat = x.reshape(x.size)
    in_source = None            # the images source holds, padded
    for n0, n1, p0, p1 in chunks:
        images = n1 - n0
        if not padded:
            flat, base = x_flat, n0 * image
        else:
            if in_source != (n0, n1):
                pad_images(x, n0, pt, pl, source[:images])
                in_source = (n0, n1)
            flat, base = source[:images].reshape(images * image), 0
        geom = _panel_gemm.image_geometry(base, p0, ho, wo, image, sh * wp, sw,
                                          hp * wp if pointwise else 0)
        _multiply_chunk(
            lambda out, cols: _panel_gemm.matmul_image(w_stack, flat, offsets,
                                                       geom, cols, out),
            y, y_stack, bias_stack, result_buffer, n0, n1, p0, p1)


def _gathered_gemm(x, w_shape, w_stack, bias_stack, y, stride, padding,
                   dilation, tuning):
    """Gather the patches of one chunk at a time and multiply each into y."""
    n, c, _, _ = x.shape
    k, _, kh, kw = w_shape
    groups, kg, depth = w_stack.shape
    _, _, ho, wo = y.shape
    sh, sw = stride
    pt, _, pl, _ = padding
    dh, dw = dilation
    rows = c * kh * kw                  # patch rows of all groups together
    positions = ho * wo
    item = x.dtype.itemsize
    chunks = plan_chunks(n, positions, rows * item, (rows + k) * item,
                         tuning.scratch_limit, tuning.merge_below_positions,
                         tuning.cache_target_bytes, tuning.min_gemm_columns)
    max_cols = max((ch.n1 - ch.n0) * (ch.p1 - ch.p0) for ch in chunks)
    patch_buffer = np.empty(_panel_gemm.buffer_size(rows, max_cols, x.dtype),
                            dtype=x.dtype)
    merged = chunks[0].n1 - chunks[0].n0 > 1
    result_buffer = np.empty(k * max_cols if merged else 0, dtype=x.dtype)
    y_stack = y.reshape(n, groups, kg, positions)
    panel = _panel_gemm.panel_width(x.dtype)

    for n0, n1, p0, p1 in chunks:
        cols = (n1 - n0) * (p1 - p0)
        patches = patch_buffer[:_panel_gemm.buffer_size(rows, cols, x.dtype)]
        _panel_gemm.zero_padding(patches, rows, cols)
        fill_panels(x, n0, n1, p0, p1, kh, kw, sh, sw, pt, pl, dh, dw, wo,
                    patches, rows, panel)
        _multiply_chunk(
            lambda out, cols: _panel_gemm.matmul(w_stack, patches, cols, out),
            y, y_stack, bias_stack, result_buffer, n0, n1, p0, p1)


KERNELS = {("conv2d", "im2col"): Kernel(_run, prepare=_prepare)}
