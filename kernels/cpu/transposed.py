"""Transposed convolution on the CPU: "direct" and "im2col" kernels.

A transposed convolution scatters every input pixel, scaled by the
kernel, into the output::

    y[n, g Co + o, ih sh - ph + kh dh, iw sw - pw + kw dw]
        += x[n, g Ci + c, ih, iw] * w[g Ci + c, o, kh, kw]

(``Ci = C_in / groups``, ``Co = C_out / groups``, ``w`` of shape
``(C_in, Co, kH, kW)``; ``(ph, pw)`` is the padding cropped from the top
and left of the full result).  Both algorithms here *gather* instead: each
parallel task owns one output row and collects what lands in it, so no
two threads write the same element and no atomics are needed.

Output row ``oh`` receives kernel row ``kh`` from input row
``ih = (oh + ph - kh dh) / sh`` when that is an integer inside the input.
Along a row, kernel column ``kw`` sends input column ``iw`` to
``ow = iw sw + off`` with ``off = kw dw - pw``: every such ``ow`` has the
same phase ``r = off mod sw``.  Accumulating into one buffer per phase,
``acc[r, j]`` for ``ow = j sw + r``, turns the strided scatter into a
contiguous ``acc[r, iw + q] += w * x[iw]`` (``q = (off - r) / sw``), which
vectorises; the phases are interleaved into the output row at the end.

* ``direct``: each of the ``sh sw`` output phases is a stride-1
  correlation of the input with its own subset of the taps, run by the
  forward direct kernel's register tile (``MAX_BLOCK`` output channels x
  ``TILE_VECTORS`` SIMD vectors); see the section comment above :func:`_phase_shifts`.  Filters
  holding Inf or NaN take the gather loop above (``_gather_direct``),
  which never multiplies padding.
* ``im2col``: one GEMM per image and group, ``cols = W_g^T @ X_g`` with
  ``W_g^T`` of shape ``(Co kH kW, Ci)`` and ``X_g = (Ci, H W)``, then
  ``col2im``, the same gather with ``cols`` rows in place of ``w * x``.
  This is PyTorch's ``slow_conv_transpose2d`` order.  The column matrix
  is built for a band of input rows at a time so that it stays under
  :func:`kernels.cpu.im2col.get_scratch_limit` (64 MiB by default).

Backend contract (:mod:`kernels._dispatch`): ``KERNELS`` entries
``("conv_transpose2d", "direct")`` and ``("conv_transpose2d", "im2col")``,
``run(spec, x, w, bias)`` with a :class:`~kernels._dispatch.TransposeSpec`
(x C-contiguous ``(N, C_in, H, W)``, w ``(C_in, Co, kH, kW)``, ``pad_lo =
(ph, pw)`` the crop of the top/left, ``out_hw = (Ho, Wo)`` whatever
output_padding and the bottom/right crop give).
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, prange

from .. import _threads
from .._dispatch import Kernel
from . import _blas, _tuning
from .direct import (MAX_BLOCK, TILE_VECTORS, run_tile, tile_buffer,
                     tile_columns, tile_vectors)
from ._workspace import Workspace

__all__ = ["ALGORITHMS", "conv_transpose2d", "direct", "im2col",
           "col2im_add", "col2im_add_serial", "flip_swap_filters", "KERNELS"]

ALGORITHMS = ("direct", "im2col")

# Output rows are split into at most this many contiguous parallel tasks,
# each allocating its phase buffer once.
_MAX_CHUNKS = 512

# Default column-matrix budget when kernels.cpu.im2col is not importable.


@njit(cache=True, inline="always")
def _chunk_bounds(chunk, n_chunks, total):
    return chunk * total // n_chunks, (chunk + 1) * total // n_chunks


@njit(cache=True, inline="always")
def _phase_len(wo, sw, r):
    """Number of output columns ``ow < wo`` with ``ow mod sw == r``."""
    return (wo - r + sw - 1) // sw


@njit(cache=True, inline="always")
def _phase_span(off, sw, wo, n):
    """Phase r, shift q and source range [lo, hi) of a row landing at ``off``.

    ``src[iw]`` lands on output column ``iw sw + off``, i.e. on entry
    ``iw + q`` of phase ``r``; only entries inside the phase's length count.
    """
    r = off % sw                 # Python semantics: 0 <= r < sw
    q = (off - r) // sw
    nj = _phase_len(wo, sw, r)
    return r, q, max(0, -q), min(n, nj - q)


@njit(cache=True, inline="always")
def _add_row(acc, src, scale, off, sw, wo):
    """acc[phase of off] += scale * src, for the columns that land in [0, wo).

    ``src[iw]`` lands on output column ``iw sw + off``.
    """
    r, q, lo, hi = _phase_span(off, sw, wo, src.size)
    if hi > lo:
        dst = acc[r, lo + q:hi + q]
        s = src[lo:hi]
        for j in range(dst.size):
            dst[j] += scale * s[j]


@njit(cache=True, inline="always")
def _add_row_unscaled(acc, src, off, sw, wo):
    """As _add_row with scale 1 (no multiply, no type promotion)."""
    r, q, lo, hi = _phase_span(off, sw, wo, src.size)
    if hi > lo:
        dst = acc[r, lo + q:hi + q]
        s = src[lo:hi]
        for j in range(dst.size):
            dst[j] += s[j]


@njit(cache=True, inline="always")
def _store_row(acc, out_row, sw):
    """Interleave the phase buffers into the output row."""
    wo = out_row.size
    for r in range(min(sw, wo)):
        a = acc[r]
        for j in range(_phase_len(wo, sw, r)):
            out_row[j * sw + r] = a[j]


@njit(cache=True, inline="always")
def _load_row(acc, out_row, sw):
    """Split an output row into the phase buffers (inverse of _store_row)."""
    wo = out_row.size
    for r in range(min(sw, wo)):
        a = acc[r]
        for j in range(_phase_len(wo, sw, r)):
            a[j] = out_row[j * sw + r]


@njit(cache=True, inline="always")
def _input_row(oh, kh, sh, ph, dh, height):
    """Input row feeding output row oh through kernel row kh, or -1."""
    t = oh + ph - kh * dh
    if t < 0 or t % sh != 0:
        return -1
    ih = t // sh
    return ih if ih < height else -1


@njit(parallel=True, cache=True)
def _gather_direct(x, w, bias, sh, sw, ph, pw, dh, dw, ho, wo, groups):
    n, c_in, height, width = x.shape
    _, c_out_g, kh_size, kw_size = w.shape
    c_in_g = c_in // groups
    c_out = c_out_g * groups
    y = np.empty((n, c_out, ho, wo), dtype=x.dtype)
    tasks = n * c_out * ho
    n_chunks = max(1, min(tasks, _MAX_CHUNKS))
    n_phase = (wo + sw - 1) // sw
    for chunk in prange(n_chunks):
        acc = np.empty((sw, n_phase), dtype=x.dtype)
        t0, t1 = _chunk_bounds(chunk, n_chunks, tasks)
        for task in range(t0, t1):
            b = task // (c_out * ho)
            rest = task - b * c_out * ho
            co = rest // ho
            oh = rest - co * ho
            g = co // c_out_g
            o = co - g * c_out_g
            acc[:, :] = bias[co]
            for kh in range(kh_size):
                ih = _input_row(oh, kh, sh, ph, dh, height)
                if ih < 0:
                    continue
                for ci in range(g * c_in_g, (g + 1) * c_in_g):
                    xrow = x[b, ci, ih]
                    for kw in range(kw_size):
                        _add_row(acc, xrow, w[ci, o, kh, kw], kw * dw - pw,
                                 sw, wo)
            _store_row(acc, y[b, co, oh], sw)
    return y


# --------------------------------------------------------------------------
# direct: polyphase register-tiled kernel
# --------------------------------------------------------------------------
#
# Output row oh = j sh + rh (its *phase* rh = oh mod sh) receives kernel row
# kh exactly when kh dh = rh + ph (mod sh), from input row ih = j + e with
# e = (rh + ph - kh dh) / sh; likewise along columns.  Each kernel index
# belongs to one phase, so the sh sw output phases are sh sw independent
# stride-1 correlations of the input with disjoint subsets of the taps
# (a 2x2 stride-2 layer: four 1x1 convolutions, i.e. four (Co x Ci) @
# (Ci x HW) products).  Each phase runs the same register tile as the
# forward direct kernel (:mod:`kernels.cpu.direct`): 6 (AVX2: 4) output channels
# x 4 (AVX2: 2) SIMD vectors of outputs kept in registers over the phase's taps, on a
# zero-padded copy of the input in which tap (c, kh, kw) of phase output
# (j, jw) reads element ``offs[tap] + j Wp + jw``.  Padding is read as
# zeros and multiplied: exact for finite weights (a zero product), so
# filters holding Inf or NaN take the gather kernel above, which only
# multiplies real input pixels, as the reference and PyTorch do.


@njit(cache=True)
def _phase_shifts(k, s, p, d):
    """Phase ``r`` and input shift ``e`` of each kernel index along one axis.

    Kernel index ``i`` feeds the outputs ``j s + r`` (``r = (i d - p) mod
    s``) from input ``j + e`` with ``e = (r + p - i d) / s`` (exact).
    """
    r = np.empty(k, np.int64)
    e = np.empty(k, np.int64)
    for i in range(k):
        r[i] = (i * d - p) % s
        e[i] = (r[i] + p - i * d) // s
    return r, e


@njit(cache=True)
def _phase_taps(c_in_g, rh, eh, rw, ew, sh, sw, pad_top, pad_left, hp,
                wp):
    """Taps of every output phase, grouped by phase.

    Returns ``offs``, ``src`` and ``start``: the taps of phase ``p = rh sw
    + rw`` are ``start[p] .. start[p + 1]``, in the order (c, kh, kw);
    tap ``t`` reads packed element ``offs[t] + j Wp + jw`` for phase output
    ``(j, jw)`` and is weight ``src[t] = (c kH + kh) kW + kw`` of a filter.
    """
    kh_size, kw_size = rh.size, rw.size
    n_phase = sh * sw
    counts = np.zeros(n_phase + 1, np.int64)
    for kh in range(kh_size):
        for kw in range(kw_size):
            counts[rh[kh] * sw + rw[kw] + 1] += c_in_g
    start = np.cumsum(counts)
    fill = start[:-1].copy()
    total = c_in_g * kh_size * kw_size
    offs = np.empty(total, np.int64)
    src = np.empty(total, np.int64)
    plane = hp * wp
    for c in range(c_in_g):
        for kh in range(kh_size):
            for kw in range(kw_size):
                t = fill[rh[kh] * sw + rw[kw]]
                fill[rh[kh] * sw + rw[kw]] += 1
                offs[t] = (c * plane + (eh[kh] + pad_top) * wp
                           + ew[kw] + pad_left)
                src[t] = (c * kh_size + kh) * kw_size + kw
    return offs, src, start


@njit(cache=True, inline="always")
def _phase_weights(w, src, groups, wt):
    """Copy the filters into ``wt`` in phase-tap order; True if all finite.

    ``wt[(g Co + o) R + t] = w[g Ci + c, o, kh, kw]`` for tap ``t`` of
    :func:`_phase_taps` (``src[t] = (c kH + kh) kW + kw``), ``R = Ci kH
    kW``: each output channel's taps are contiguous, phase by phase.
    """
    c_in, c_out_g, kh_size, kw_size = w.shape
    taps = kh_size * kw_size
    c_in_g = c_in // groups
    r_total = c_in_g * taps
    pos = np.empty(r_total, np.int64)
    for t in range(r_total):
        pos[src[t]] = t
    w_flat = w.reshape(w.size)
    # Tasks of 8 output channels: each reads rows w[c, o0:o0 + 8] in turn.
    o_blocks = (c_out_g + 7) // 8
    finite = np.ones(groups * o_blocks, np.bool_)
    for task in prange(groups * o_blocks):
        g = task // o_blocks
        o0 = (task - g * o_blocks) * 8
        o1 = min(c_out_g, o0 + 8)
        # v - v is 0 for finite v, NaN for Inf and NaN; an OR of the tests
        # (not a sum: no loop-carried floating-point latency).
        bad = False
        for c in range(c_in_g):
            src0 = (g * c_in_g + c) * c_out_g * taps
            p0 = pos[c * taps:(c + 1) * taps]
            for o in range(o0, o1):
                dst0 = (g * c_out_g + o) * r_total
                row = src0 + o * taps
                for k in range(taps):
                    v = w_flat[row + k]
                    bad |= (v - v) != 0
                    wt[dst0 + p0[k]] = v
        finite[task] = not bad
    return finite.all()


@njit(cache=True, inline="always")
def _pack_rows(x, out, pad_top, pad_left, hp, wp):
    """Zero-padded copy of ``x`` into ``out`` (flat, at least N C Hp Wp
    long): ``out[((n C + c) Hp + i) Wp + j] = x[n, c, i - pad_top, j -
    pad_left]``, zero outside ``x``; the rest of ``out`` is zeroed."""
    height, width = x.shape[2], x.shape[3]
    n_rows = x.shape[0] * x.shape[1] * hp
    x_flat = x.reshape(x.size)
    out[n_rows * wp:] = 0
    # Packed columns [first, stop) hold input columns [0, stop - first).
    first = min(pad_left, wp)
    stop = min(pad_left + width, wp)
    for row in prange(n_rows):
        plane = row // hp
        src_row = row - plane * hp - pad_top
        dst = row * wp
        lo, hi = first, stop
        if src_row < 0 or src_row >= height:
            lo = hi = wp
        for j in range(lo):
            out[dst + j] = 0
        for j in range(hi, wp):
            out[dst + j] = 0
        src = (plane * height + src_row) * width - first
        for j in range(lo, hi):
            out[dst + j] = x_flat[src + j]


@njit(cache=True, parallel=True)
def _phase_prepare_parallel(w, src, groups, wt, x, xq, pad_top, pad_left, hp,
                            wp, pack):
    if pack:
        _pack_rows(x, xq, pad_top, pad_left, hp, wp)
    return _phase_weights(w, src, groups, wt)


@njit(cache=True)
def _phase_prepare_serial(w, src, groups, wt, x, xq, pad_top, pad_left, hp,
                          wp, pack):
    if pack:
        _pack_rows(x, xq, pad_top, pad_left, hp, wp)
    return _phase_weights(w, src, groups, wt)


@njit(cache=True, inline="always")
def _store_phase_tile(acc, kb, width, y, y0, v0, wp, jh, jw, sh, sw, rh, rw):
    """Write a phase tile's real outputs to the flat output ``y``.

    Virtual output ``v = j Wp + jc`` is output pixel ``(j sh + rh, jc sw +
    rw)`` when ``j < jh`` and ``jc < jw`` (the phase's rows and columns);
    channel ``q`` of the tile starts at ``y[y0 + q Ho Wo]``.
    """
    ho, wo = y.shape[2], y.shape[3]
    y_flat = y.reshape(y.size)
    v = v0
    v_end = min(v0 + width, jh * wp)
    while v < v_end:
        j = v // wp
        jc = v - j * wp
        run = min(v_end - v, jw - jc)
        if run > 0:
            s = v - v0
            for q in range(kb):
                dst = y0 + q * ho * wo + (j * sh + rh) * wo + jc * sw + rw
                for t in range(run):
                    y_flat[dst + t * sw] = acc[q, s + t]
        v = (j + 1) * wp


@njit(cache=True, inline="always")
def _edge_tile_inputs(xq, x0_first, n_edge, width, span, plane, c_in_g,
                      cols, group_step):
    """Zero-padded copies of what the last ``n_edge`` column tiles read.

    Column tile ``l`` (counted over (image, group, column)) starts at
    ``x0``; row ``c`` of its copy holds the ``span`` elements of ``xq``
    from ``x0 + c plane``, zero past the end of ``xq``.
    """
    edge = np.zeros((n_edge, c_in_g * span), xq.dtype)
    for e in prange(n_edge):
        l = x0_first + e
        col = l % cols
        x0 = (l // cols) * group_step + col * width
        for c in range(c_in_g):
            first = x0 + c * plane
            for i in range(max(0, min(span, xq.size - first))):
                edge[e, c * span + i] = xq[first + i]
    return edge


@njit(cache=True, inline="always")
def _phase_direct_body(xq, c_in, wt, offs, edge_offs, edge_span, start, bias,
                       sh, sw, hp, wp, n_img, ho, wo, c_out_g, groups,
                       full_width, y):
    """The phase tiles of every (image, group, column, phase, channel
    block); ``full_width = tile_columns(dtype)`` outputs per full tile."""
    c_in_g = c_in // groups
    c_out = c_out_g * groups
    r_total = offs.size
    plane = hp * wp
    max_off = offs.max() if r_total else 0
    jh_max = (ho + sh - 1) // sh
    nv = jh_max * wp
    lanes = full_width // TILE_VECTORS
    narrow = nv <= lanes
    width = lanes if narrow else full_width
    n_cols = (nv + width - 1) // width
    n_phase = sh * sw
    blocks = (c_out_g + MAX_BLOCK - 1) // MAX_BLOCK
    # Column tiles (image, group, column) l >= l_edge would read past the
    # end of the input (read in place, without a tail): they read
    # zero-padded copies of their columns instead.  The tiles' starts grow
    # with l, so these are the last ones.
    group_step = c_in_g * plane
    n_tiles = n_img * groups * n_cols
    l_edge = n_tiles
    while l_edge > 0:
        l = l_edge - 1
        x0 = (l // n_cols) * group_step + (l % n_cols) * width
        if x0 + max_off + full_width <= xq.size:
            break
        l_edge = l
    edge = _edge_tile_inputs(xq, l_edge, n_tiles - l_edge, width, edge_span,
                             plane, c_in_g, n_cols, group_step)
    # Channel block fastest, then phase: consecutive tasks of a thread
    # read the same input columns.
    for task in prange(n_img * groups * n_cols * n_phase * blocks):
        blk = task % blocks
        rest = task // blocks
        p = rest % n_phase
        rest //= n_phase
        col = rest % n_cols
        rest //= n_cols
        g = rest % groups
        n = rest // groups
        rh = p // sw
        rw = p - rh * sw
        jh = (ho - rh + sh - 1) // sh
        jw = (wo - rw + sw - 1) // sw
        v0 = col * width
        if v0 >= jh * wp or jw <= 0:
            continue
        o0 = blk * MAX_BLOCK
        kb = min(MAX_BLOCK, c_out_g - o0)
        co0 = g * c_out_g + o0
        acc_ptr = tile_buffer(xq)
        acc = carray(acc_ptr, (MAX_BLOCK, full_width))
        for q in range(kb):
            acc[q, :] = bias[co0 + q]
        taps = slice(start[p], start[p + 1])
        w0 = co0 * r_total + start[p]
        l = (n * groups + g) * n_cols + col
        vectors = tile_vectors(narrow, jh * wp - v0, lanes)
        if l < l_edge:
            run_tile(kb, vectors, xq, l // n_cols * group_step + v0,
                     offs[taps], wt, w0, r_total, acc_ptr)
        else:
            run_tile(kb, vectors, edge[l - l_edge], 0, edge_offs[taps],
                     wt, w0, r_total, acc_ptr)
        _store_phase_tile(acc, kb, width, y, (n * c_out + co0) * ho * wo, v0,
                          wp, jh, jw, sh, sw, rh, rw)


@njit(cache=True, parallel=True)
def _phase_direct_parallel(xq, c_in, wt, offs, edge_offs, edge_span, start,
                           bias, sh, sw, hp, wp, n_img, ho, wo, c_out_g,
                           groups, full_width, y):
    _phase_direct_body(xq, c_in, wt, offs, edge_offs, edge_span, start,
                       bias, sh, sw, hp, wp, n_img, ho, wo, c_out_g,
                       groups, full_width, y)


@njit(cache=True)
def _phase_direct_serial(xq, c_in, wt, offs, edge_offs, edge_span, start,
                         bias, sh, sw, hp, wp, n_img, ho, wo, c_out_g, groups,
                         full_width, y):
    _phase_direct_body(xq, c_in, wt, offs, edge_offs, edge_span, start,
                       bias, sh, sw, hp, wp, n_img, ho, wo, c_out_g,
                       groups, full_width, y)


def _phase_geometry(in_size, k, s, p, d, out_size):
    """Per axis: (phase of each kernel index, its shift, padding before
    the input, packed length)."""
    r, e = _phase_shifts(k, s, p, d)
    pad = max(0, -int(e.min()))
    # The phase with most outputs has ceil(out / s); its last reads input
    # j + max(e).
    return r, e, pad, (out_size + s - 1) // s + int(e.max()) + pad


@njit(cache=True, inline="always")
def _col2im_chunk(chunk, n_chunks, acc, cols, y, ih_start, ih_stop, kh_size,
                  kw_size, sh, sw, ph, pw, dh, dw, bias, first):
    """The output rows of one chunk of :func:`col2im_add`."""
    nb, groups, _, band = cols.shape
    _, c_out, ho, wo = y.shape
    c_out_g = c_out // groups
    width = band // (ih_stop - ih_start)
    t0, t1 = _chunk_bounds(chunk, n_chunks, nb * c_out * ho)
    for task in range(t0, t1):
        b = task // (c_out * ho)
        rest = task - b * c_out * ho
        co = rest // ho
        oh = rest - co * ho
        g = co // c_out_g
        o = co - g * c_out_g
        touched = first
        if first:
            acc[:, :] = bias[co]
        for kh in range(kh_size):
            ih = _input_row(oh, kh, sh, ph, dh, ih_stop)
            if ih < ih_start:
                continue
            if not touched:
                _load_row(acc, y[b, co, oh], sw)
                touched = True
            base = (ih - ih_start) * width
            for kw in range(kw_size):
                row = cols[b, g, (o * kh_size + kh) * kw_size + kw,
                           base:base + width]
                _add_row_unscaled(acc, row, kw * dw - pw, sw, wo)
        if touched:
            _store_row(acc, y[b, co, oh], sw)


@njit(parallel=True, cache=True)
def col2im_add(cols, y, ih_start, ih_stop, kh_size, kw_size, sh, sw, ph, pw,
               dh, dw, bias, first):
    """y += col2im(cols) for the input rows [ih_start, ih_stop).

    ``cols[b, g, (o kH + kh) kW + kw, (ih - ih_start) W + iw]`` is the
    contribution of input pixel ``(ih, iw)`` to tap ``(kh, kw)`` of output
    channel ``g Co + o`` of image ``b``.  With ``first`` the previous
    content of ``y`` is ignored and every row starts from ``bias`` (so
    ``y`` needs no initialisation pass).  Parallel over output rows.
    """
    tasks = y.shape[0] * y.shape[1] * y.shape[2]
    n_chunks = max(1, min(tasks, _MAX_CHUNKS))
    n_phase = (y.shape[3] + sw - 1) // sw
    for chunk in prange(n_chunks):
        acc = np.empty((sw, n_phase), dtype=y.dtype)
        _col2im_chunk(chunk, n_chunks, acc, cols, y, ih_start, ih_stop,
                      kh_size, kw_size, sh, sw, ph, pw, dh, dw, bias, first)
    return y


@njit(cache=True)
def col2im_add_serial(cols, y, ih_start, ih_stop, kh_size, kw_size, sh, sw,
                      ph, pw, dh, dw, bias, first):
    """:func:`col2im_add` on the calling thread (same result).

    Used when Numba's OpenMP workers would spin beside BLAS's threads
    (:func:`kernels._threads.prange_beside_blas_is_safe`).
    """
    tasks = y.shape[0] * y.shape[1] * y.shape[2]
    n_chunks = max(1, min(tasks, _MAX_CHUNKS))
    acc = np.empty((sw, (y.shape[3] + sw - 1) // sw), dtype=y.dtype)
    for chunk in range(n_chunks):
        _col2im_chunk(chunk, n_chunks, acc, cols, y, ih_start, ih_stop,
                      kh_size, kw_size, sh, sw, ph, pw, dh, dw, bias, first)
    return y


def _bias_or_zeros(bias, c_out, dtype):
    if bias is None:
        return np.zeros(c_out, dtype=dtype)
    return np.ascontiguousarray(bias, dtype=dtype)


# The permuted filters and the padded input of direct, reused across calls
# (fresh multi-megabyte arrays cost a page fault per 4 KiB: 2-3 ms of the
# 8 MiB filters of U-Net's 1024->512 layer).
_direct_workspace = Workspace()


def direct(x, w, bias, stride, pad_lo, out_hw, dilation, groups):
    """Polyphase register-tiled transposed convolution (no GEMM).

    The ``sh sw`` output phases are stride-1 correlations of the input
    with disjoint subsets of the taps, each run by the forward direct
    kernel's register tile (see the section comment above
    :func:`_phase_shifts`).  The input is read in place when no phase
    reaches outside it (kernel = stride, no padding: U-Net's 2x2/2), else
    from a zero-padded copy.  Filters holding Inf or NaN take the gather
    kernel :func:`_gather_direct` instead, which does not multiply
    padding.  Each output is written by one thread, accumulated in a fixed
    order: the result does not depend on the number of threads.
    """
    n, c_in, height, width = x.shape
    _, c_out_g, kh_size, kw_size = w.shape
    b = _bias_or_zeros(bias, c_out_g * groups, x.dtype)
    rh, eh, pad_top, hp = _phase_geometry(height, kh_size, stride[0],
                                          pad_lo[0], dilation[0], out_hw[0])
    rw, ew, pad_left, wp = _phase_geometry(width, kw_size, stride[1],
                                           pad_lo[1], dilation[1], out_hw[1])
    c_in_g = c_in // groups
    offs, src, start = _phase_taps(c_in_g, rh, eh, rw, ew, *stride, pad_top,
                                   pad_left, hp, wp)
    plane = hp * wp
    # Tiles at the very end of the input read a padded copy of their
    # columns: tap t at edge_offs[t] in rows of edge_span.
    chan = src // (kh_size * kw_size)
    tile = tile_columns(x.dtype)
    edge_span = int((offs - chan * plane).max(initial=0)) + tile
    edge_offs = offs + chan * (edge_span - plane)
    pack = not (pad_top == 0 and pad_left == 0 and hp == height
                and wp == width)
    xq = (_direct_workspace.get("xq", (n * c_in * plane + tile + wp,),
                                x.dtype)
          if pack else x.reshape(-1))
    wt = _direct_workspace.get("wt", (w.size,), x.dtype)
    macs = n * c_in * c_out_g * kh_size * kw_size * height * width
    serial = macs <= _tuning.current().direct.serial_max_macs
    finite = (_phase_prepare_serial if serial else _phase_prepare_parallel)(
        w, src, groups, wt, x, xq, pad_top, pad_left, hp, wp, pack)
    if not finite:
        return _gather_direct(x, w, b, *stride, *pad_lo, *dilation, *out_hw,
                              groups)
    run = _phase_direct_serial if serial else _phase_direct_parallel
    # The output is NumPy's (transparent huge pages), not Numba's: see
    # kernels.cpu.direct.run_driver.
    y = np.empty((n, c_out_g * groups) + tuple(out_hw), x.dtype)
    run(xq, c_in, wt, offs, edge_offs, edge_span, start, b, *stride,
        hp, wp, n, *out_hw, c_out_g, groups, tile, y)
    return y


def _scratch_limit():
    """Bound on one band's column matrix: the transposed tuning's, else
    im2col's scratch limit."""
    tuning = _tuning.current()
    limit = tuning.transposed.scratch_limit
    return tuning.im2col.scratch_limit if limit is None else limit


# The column matrix of the im2col path, reused across calls per thread:
# allocating tens of MiB afresh on every call costs a page fault per 4 KiB
# (the kernel zeroes each page), measured 30-60 % on top of the GEMM for
# the U-Net decoder layers.  It grows to the largest column matrix used so
# far, at most the scratch limit.
_workspace = Workspace()


def _bands(n, height, row_bytes, limit):
    """(images per step, input rows per step) keeping cols under limit."""
    image_bytes = row_bytes * height
    if image_bytes <= limit:
        return max(1, min(n, limit // max(image_bytes, 1))), height
    return 1, max(1, min(height, limit // max(row_bytes, 1)))


def im2col(x, w, bias, stride, pad_lo, out_hw, dilation, groups):
    """GEMM + col2im transposed convolution."""
    n, c_in, height, width = x.shape
    _, c_out_g, kh_size, kw_size = w.shape
    c_in_g = c_in // groups
    c_out = c_out_g * groups
    m = c_out_g * kh_size * kw_size
    ho, wo = out_hw
    y = np.empty((n, c_out, ho, wo), dtype=x.dtype)
    bias = _bias_or_zeros(bias, c_out, x.dtype)
    # W_g^T: (G, Co kH kW, Ci), a transposed view (BLAS reads it as is).
    w_t = w.reshape(groups, c_in_g, m).transpose(0, 2, 1)
    x_g = x.reshape(n, groups, c_in_g, height, width)
    row_bytes = groups * m * width * x.itemsize
    images, rows = _bands(n, height, row_bytes, _scratch_limit())
    # col2im alternates with BLAS: serial where OpenMP workers would spin.
    col2im = (col2im_add if _threads.prange_beside_blas_is_safe()
              else col2im_add_serial)
    for b0 in range(0, n, images):
        b1 = min(n, b0 + images)
        for ih0 in range(0, height, rows):
            ih1 = min(height, ih0 + rows)
            xb = x_g[b0:b1, :, :, ih0:ih1].reshape(b1 - b0, groups, c_in_g,
                                                   (ih1 - ih0) * width)
            # (images, G, Co kH kW, band)
            cols = _workspace.get("cols", (b1 - b0, groups, m, xb.shape[-1]),
                                  x.dtype)
            _blas.matmul(w_t, xb, cols, split="longer")
            col2im(cols, y[b0:b1], ih0, ih1, kh_size, kw_size, *stride,
                   *pad_lo, *dilation, bias, ih0 == 0)
    return y


def conv_transpose2d(x, w, bias, stride, pad_lo, out_hw, dilation, groups,
                     algorithm):
    """Run ``algorithm`` ("direct" or "im2col") on a validated problem."""
    kernel = {"direct": direct, "im2col": im2col}[algorithm]
    return kernel(x, w, bias, tuple(stride), tuple(pad_lo), tuple(out_hw),
                  tuple(dilation), int(groups))


# --------------------------------------------------------------------------
# The forward filters of a transposed convolution
# --------------------------------------------------------------------------

# Square tiles of (input channel, output channel) pairs: a tile's reads
# and writes each touch _FLIP_TILE rows, so the transposed copy stays in
# the cache and the TLB.  NumPy's strided copy of a 2048 x 512 x 1 x 1
# weight took 10-13 ms here, these tiles 1.0-1.7 (docs/performance.md).
_FLIP_TILE = 32


@njit(parallel=True, cache=True)
def _swap_tiles(w, out):
    """out[g, o, c, q] = w[g, c, o, KK - 1 - q]: flipping both spatial
    axes of a C-contiguous kH x kW filter reverses its flat order."""
    groups, c_in_g, c_out_g, taps = w.shape
    tiles = (c_out_g + _FLIP_TILE - 1) // _FLIP_TILE
    for t in prange(groups * tiles):
        g, o0 = t // tiles, t % tiles * _FLIP_TILE
        for c0 in range(0, c_in_g, _FLIP_TILE):
            for o in range(o0, min(o0 + _FLIP_TILE, c_out_g)):
                for c in range(c0, min(c0 + _FLIP_TILE, c_in_g)):
                    for q in range(taps):
                        out[g, o, c, q] = w[g, c, o, taps - 1 - q]


@njit(parallel=True, cache=True)
def _swap_tiles_1x1(w, out):
    """:func:`_swap_tiles` for 1 x 1 filters, without the tap loop (whose
    one-trip overhead made it 2.5x slower on them)."""
    groups, c_in_g, c_out_g = w.shape
    tiles = (c_out_g + _FLIP_TILE - 1) // _FLIP_TILE
    for t in prange(groups * tiles):
        g, o0 = t // tiles, t % tiles * _FLIP_TILE
        for c0 in range(0, c_in_g, _FLIP_TILE):
            for o in range(o0, min(o0 + _FLIP_TILE, c_out_g)):
                for c in range(c0, min(c0 + _FLIP_TILE, c_in_g)):
                    out[g, o, c] = w[g, c, o]


def flip_swap_filters(w, groups):
    """The forward filters of a transposed convolution's weight.

    ``w`` is ``(C_in, C_out / groups, kH, kW)`` and C-contiguous; the
    result ``w'[g Co + o, c] = w[g Ci + c, o]`` flipped in both spatial
    axes, ``(C_out, C_in / groups, kH, kW)``: the stride-1 transposed
    convolution is the forward correlation with ``w'``.  A copy, made in
    parallel square tiles of channel pairs.
    """
    c_in, c_out_g, kh, kw = w.shape
    c_in_g = c_in // groups
    out = np.empty((groups * c_out_g, c_in_g, kh, kw), w.dtype)
    if kh * kw == 1:
        _swap_tiles_1x1(w.reshape(groups, c_in_g, c_out_g),
                        out.reshape(groups, c_out_g, c_in_g))
    else:
        _swap_tiles(w.reshape(groups, c_in_g, c_out_g, kh * kw),
                    out.reshape(groups, c_out_g, c_in_g, kh * kw))
    return out


def _entry(kernel):
    """The contract's ``run(spec, x, w, bias)`` for one of the kernels."""
    def run(spec, x, w, bias):
        return kernel(x, w, bias, spec.stride, spec.pad_lo, spec.out_hw,
                      spec.dilation, spec.groups)
    return run


# Both kernels compute every valid configuration.
KERNELS = {("conv_transpose2d", "direct"): Kernel(_entry(direct)),
           ("conv_transpose2d", "im2col"): Kernel(_entry(im2col)),
           ("conv_transpose2d_filters", None): Kernel(flip_swap_filters)}
