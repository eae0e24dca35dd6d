"""im2col convolution: gather patches into a matrix, then one BLAS GEMM.

For each group ``g`` the convolution is a matrix product::

    y[n, g K/G : (g+1) K/G, :] = W_g @ P_g[n]

with ``W_g = w[g K/G : (g+1) K/G].reshape(K/G, C/G kH kW)`` and the patch
matrix ``P_g[n]`` of shape ``(C/G kH kW, Ho Wo)`` whose column ``p`` holds
the (zero-padded, strided, dilated) input window of output position ``p``.
Row ``(c, i, j)`` of ``P`` is the input plane ``c`` shifted by the kernel
tap ``(i, j)``, so building it is a strided copy, done by a Numba
``prange`` kernel; the product is NumPy's ``matmul`` (OpenBLAS/MKL).

Layout choices, each to avoid a copy:

* The patch matrices of all groups are stacked as ``(G, C/G kH kW, cols)``,
  which is ``(C kH kW, cols)`` in memory: one gather kernel fills every
  group, and one stacked ``matmul`` multiplies them all.
* The GEMM writes straight into ``y``: ``y[n]`` viewed as
  ``(G, K/G, Ho Wo)`` has a column slice ``[:, :, p0:p1]`` that BLAS can
  write through its leading dimension.
* A 1x1, stride-1, unpadded convolution needs no patch matrix at all:
  ``x[n]`` viewed as ``(G, C/G, H W)`` *is* it.

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

The gather is a Numba ``prange`` kernel; the GEMM runs single-threaded
BLAS calls on column pieces as the jobs of another ``prange``
(:func:`kernels.cpu._blas.matmul`), so that OpenBLAS's own workers never
wake and spin beside the next ``prange`` (1.25-1.4x faster on ResNet-50's
3x3 layers than OpenBLAS's 2-thread GEMMs, and the kernel called next 2x
faster), and both steps run in the same OpenMP team, whichever library
loaded it.  Where the pieces must run on Python threads instead (NumPy's
CBLAS not found), :mod:`kernels._threads` keeps Numba's OpenMP workers
from spinning beside them (the gather runs serially where they would).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .. import _threads
from .._dispatch import ConvSpec, Kernel
from . import _blas, _tuning

__all__ = ["conv2d", "set_scratch_limit", "get_scratch_limit", "plan_chunks",
           "fill_patches", "fill_patches_serial"]

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


@njit(cache=True)
def _fill_segment(plane, dst, p_start, p_end, p_base, row_offset, col_offset,
                  sh, sw, wo_count):
    """dst[p - p_base] = plane[ho sh + row_offset, wo sw + col_offset] for
    flattened output positions p = ho Wo + wo in [p_start, p_end); zero
    where the tap falls in the padding."""
    h, w = plane.shape
    flat = plane.ravel()
    # Output columns whose tap lands inside the row: 0 <= wo sw + off < W.
    valid_lo = max(0, _ceil_div(-col_offset, sw))
    valid_hi = min(wo_count, _ceil_div(w - col_offset, sw))
    p = p_start
    while p < p_end:
        ho = p // wo_count
        wo0 = p - ho * wo_count
        wo1 = min(wo_count, wo0 + (p_end - p))
        base = p - p_base - wo0          # dst index of column wo = 0
        hi = ho * sh + row_offset
        if hi < 0 or hi >= h:
            lo = up = wo1                # the whole row is padding
        else:
            lo = min(max(wo0, valid_lo), wo1)
            up = max(min(wo1, valid_hi), lo)
        for q in range(base + wo0, base + lo):
            dst[q] = 0
        # Copy through views that start at the first element, indexed from
        # 0: Numba then drops its negative-index check and vectorises the
        # loop (measured 3x faster than indexing dst[base + wo]).
        if up > lo:
            src = flat[hi * w + lo * sw + col_offset:]
            out = dst[base + lo:base + up]
            if sw == 1:
                for q in range(up - lo):
                    out[q] = src[q]
            else:
                for q in range(up - lo):
                    out[q] = src[q * sw]
        for q in range(base + up, base + wo1):
            dst[q] = 0
        p += wo1 - wo0


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


@njit(cache=True)
def _fill_task(task, n_blocks, block_len, x, n0, n1, p0, p1, kh, kw, sh, sw,
               pad_top, pad_left, dh, dw, wo_count, patches):
    """One (patch row, image, block of positions) of :func:`fill_patches`."""
    taps = kh * kw
    n_img = n1 - n0
    npos = p1 - p0
    block = task % n_blocks
    rest = task // n_blocks
    m = rest % n_img
    row = rest // n_img
    c = row // taps
    i = (row % taps) // kw
    j = row % kw
    a = p0 + block * block_len
    b = min(p1, a + block_len)
    # Whole rows keep Numba's contiguous layout (a 2-D slice would not).
    plane = x[n0 + m, c]
    dst = patches[row]
    if sw == 1:
        # A literal unit stride lets LLVM specialise the copy loop
        # (measured 25% faster than passing sw through).
        _fill_segment(plane, dst, a, b, p0 - m * npos, i * dh - pad_top,
                      j * dw - pad_left, sh, 1, wo_count)
    else:
        _fill_segment(plane, dst, a, b, p0 - m * npos, i * dh - pad_top,
                      j * dw - pad_left, sh, sw, wo_count)


@njit(parallel=True, cache=True)
def fill_patches(x, n0, n1, p0, p1, kh, kw, sh, sw, pad_top, pad_left,
                 dh, dw, wo_count, patches):
    """Gather the patch matrix of images ``n0:n1``, positions ``p0:p1``.

    ``patches`` has shape ``(C kH kW, (n1 - n0) (p1 - p0))``; row
    ``(c, i, j)``, column ``m (p1 - p0) + (p - p0)`` receives the input
    value under kernel tap ``(i, j)`` of channel ``c`` for output position
    ``p`` (flattened ``ho Wo + wo``) of image ``n0 + m``, zero in the
    padding.  Parallel over (row, image, block of positions): every output
    element is written by exactly one task.
    """
    rows = patches.shape[0] * (n1 - n0)
    n_blocks, block_len = _task_blocks(rows, p1 - p0)
    for task in prange(rows * n_blocks):
        _fill_task(task, n_blocks, block_len, x, n0, n1, p0, p1, kh, kw,
                   sh, sw, pad_top, pad_left, dh, dw, wo_count, patches)


@njit(cache=True)
def fill_patches_serial(x, n0, n1, p0, p1, kh, kw, sh, sw, pad_top, pad_left,
                        dh, dw, wo_count, patches):
    """:func:`fill_patches` on the calling thread only (same result).

    Used when Numba's OpenMP workers would spin-wait beside BLAS's threads
    (see :mod:`kernels._threads`): a serial gather leaves BLAS the cores.
    """
    rows = patches.shape[0] * (n1 - n0)
    n_blocks, block_len = _task_blocks(rows, p1 - p0)
    for task in range(rows * n_blocks):
        _fill_task(task, n_blocks, block_len, x, n0, n1, p0, p1, kh, kw,
                   sh, sw, pad_top, pad_left, dh, dw, wo_count, patches)


def _is_pointwise(w_shape, stride, padding):
    """1x1 kernel, stride 1, no padding: x itself is the patch matrix."""
    return (w_shape[2] == 1 and w_shape[3] == 1 and tuple(stride) == (1, 1)
            and not any(padding))


def _pointwise(x, w_stack, bias_stack, y, groups):
    """y[n] = W_g @ x[n] per group, without any scratch."""
    n, c, h, wd = x.shape
    x_stack = x.reshape(n, groups, c // groups, h * wd)
    y_stack = y.reshape(n, groups, y.shape[1] // groups, h * wd)
    for i in range(n):
        _blas.matmul(w_stack, x_stack[i], y_stack[i], split="longer")
        if bias_stack is not None:
            y_stack[i] += bias_stack


def _pointwise_merged(x, w_stack, bias_stack, y, groups):
    """y = W_g @ P_g for every image at once: P (C, N H W) is x with its
    first two axes swapped (a NumPy copy; the prange gather's tasks were
    too short on such maps: 1.7 ms to copy 32 x 2048 values)."""
    n, c, h, wd = x.shape
    hw = h * wd
    k = y.shape[1]
    patches = np.ascontiguousarray(x.reshape(n, c, hw).transpose(1, 0, 2))
    result = np.empty((groups, k // groups, n * hw), dtype=x.dtype)
    _gemm_into_images(w_stack, patches.reshape(groups, c // groups, n * hw),
                      bias_stack, result, y.reshape(n, k, hw))


def _gemm_into_images(w_stack, patch_stack, bias_stack, result, y_images):
    """result = W_g @ P_g (+ bias), then its columns, ordered (image,
    position), into ``y_images`` (images, K, positions)."""
    _blas.matmul(w_stack, patch_stack, result, split="longer")
    if bias_stack is not None:
        result += bias_stack
    images, k, positions = y_images.shape
    y_images[...] = result.reshape(k, images, positions).transpose(1, 0, 2)


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
    tuning = tuning or _tuning.current().im2col
    stride, padding, dilation, groups = (spec.stride, spec.padding,
                                         spec.dilation, spec.groups)
    k, cg, kh, kw = w.shape
    y = np.empty(spec.out_shape, dtype=x.dtype)
    # (G, K/G, C/G kH kW): the GEMM's left factor of every group.
    w_stack = w.reshape(groups, k // groups, cg * kh * kw)
    bias_stack = None if bias is None else bias.reshape(groups, k // groups, 1)

    # Inf - Inf and overflow give NaN/Inf in y, as in torch: no warnings.
    with np.errstate(all="ignore"):
        if _is_pointwise(w.shape, stride, padding):
            # Small maps (SE blocks' 1x1 maps, 7x7): one GEMM for all the
            # images, not one per image (a fully connected 64 -> 16 layer
            # at batch 256 took 4-11 ms one image at a time).
            # Its scratch (a copy of x and of y) stays within the limit.
            small = y.shape[2] * y.shape[3] < tuning.merge_below_positions
            fits = x.nbytes + y.nbytes <= tuning.scratch_limit
            if small and x.shape[0] > 1 and fits:
                _pointwise_merged(x, w_stack, bias_stack, y, groups)
            else:
                _pointwise(x, w_stack, bias_stack, y, groups)
        else:
            _chunked_gemm(x, w.shape, w_stack, bias_stack, y, stride, padding,
                          dilation, tuning)
    return y


def _chunked_gemm(x, w_shape, w_stack, bias_stack, y, stride, padding, dilation,
                  tuning):
    """Gather the patches of one chunk at a time and GEMM each into y."""
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
    patch_buffer = np.empty(rows * max_cols, dtype=x.dtype)
    merged = chunks[0].n1 - chunks[0].n0 > 1
    result_buffer = np.empty(k * max_cols if merged else 0, dtype=x.dtype)
    y_stack = y.reshape(n, groups, kg, positions)
    # The gather alternates with the GEMM's pieces.  Those run in Numba's
    # OpenMP team where NumPy's CBLAS was found (_blas.gemm_in_openmp), so
    # the gather may too; on Python threads, run it serially where the
    # OpenMP workers would spin beside them (kernels._threads).
    gather = (fill_patches if (_blas.gemm_in_openmp()
                               or _threads.prange_beside_blas_is_safe())
              else fill_patches_serial)

    for n0, n1, p0, p1 in chunks:
        cols = (n1 - n0) * (p1 - p0)
        patches = patch_buffer[:rows * cols].reshape(rows, cols)
        gather(x, n0, n1, p0, p1, kh, kw, sh, sw, pt, pl, dh, dw, wo, patches)
        patch_stack = patches.reshape(groups, depth, cols)
        if n1 - n0 == 1:
            out = y_stack[n0, :, :, p0:p1]
            _blas.matmul(w_stack, patch_stack, out, split="longer")
            if bias_stack is not None:
                out += bias_stack
        else:
            result = result_buffer[:k * cols].reshape(groups, kg, cols)
            _gemm_into_images(w_stack, patch_stack, bias_stack, result,
                              y_stack[n0:n1].reshape(n1 - n0, k, positions))


KERNELS = {("conv2d", "im2col"): Kernel(_run)}
