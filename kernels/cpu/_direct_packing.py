"""Direct convolution's input packing (stage 1 of :mod:`kernels.cpu.direct`),
shared by its pixel tile and its channel tile
(:mod:`kernels.cpu._direct_channels`).

The zero-padded *polyphase* layout::

    xq[n, c, ph, pw, i, j] = x_pad[n, c, i*sh + ph, j*sw + pw]

makes tap ``(c, i, j)`` of output ``(oh, ow)`` element
``tap_offsets[(c*kH + i)*kW + j] + oh*Wq + ow`` of an image's block: a
constant plus a position contiguous in ``ow`` for every stride and
dilation (see :mod:`kernels.cpu.direct`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["packed_geometry", "tap_offsets", "packed_size", "pack_into",
           "pack_input"]

# Packed input rows are filled in pieces of at most this many elements, so
# that a long 1-D signal is packed by all threads.
_PACK_PIECE = 16384
# Whole input planes are packing tasks where there are at least this many
# planes; a single plane (one channel, batch 1) is packed by runs of rows,
# so that every thread takes part.
_MIN_PLANE_TASKS = 2


@njit(cache=True)
def packed_geometry(ho, wo, kh, kw, sh, sw, dh, dw):
    """``(Hq, Wq)``: the packed-plane size for an ``(Ho, Wo)`` output."""
    return ho + (dh * (kh - 1)) // sh, wo + (dw * (kw - 1)) // sw


@njit(cache=True)
def tap_offsets(cg, kh, kw, sh, sw, dh, dw, hq, wq):
    """Offset of each tap ``(c, i, j)`` (C order) in a packed image.

    Tap ``(c, i, j)`` of output ``(oh, ow)`` reads packed element
    ``offsets[(c*kh + i)*kw + j] + oh*wq + ow``.
    """
    offsets = np.empty(cg * kh * kw, np.int64)
    plane = hq * wq
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                phase = (c * sh + (i * dh) % sh) * sw + (j * dw) % sw
                offsets[(c * kh + i) * kw + j] = (
                    phase * plane + ((i * dh) // sh) * wq + (j * dw) // sw)
    return offsets


@njit(cache=True, inline="always")
def _row_span(w, j_lo, j_hi, pad_left, sw, pw):
    """``(first, stop)``: packed columns ``j_lo <= first <= j < stop <=
    j_hi`` of phase ``pw`` whose input column ``j*sw + pw - pad_left`` is
    inside a row of ``w``."""
    first = -((pw - pad_left) // sw) if pw < pad_left else 0
    stop = (w - 1 - pw + pad_left) // sw + 1
    first = min(max(first, j_lo), j_hi)
    return first, min(max(stop, first), j_hi)


@njit(cache=True, inline="always")
def _fill_row(x_flat, src_row_start, out, base, j_lo, j_hi, first, stop,
              sw, pw, pad_left, inside):
    """Packed columns ``j_lo .. j_hi`` of the row at ``out[base:]``: zeros,
    then input row ``x_flat[src_row_start:]`` (phase ``pw``) over ``first
    .. stop`` when ``inside`` (the row is not padding)."""
    if not inside:
        first = stop = j_hi
    # (unsigned indices: no negative-index wraparound, so loops vectorise)
    base = np.uint64(base)
    for j in range(np.uint64(j_lo), np.uint64(first)):
        out[base + j] = 0
    for j in range(np.uint64(stop), np.uint64(j_hi)):
        out[base + j] = 0
    if stop > first:
        src = np.uint64(src_row_start + first * sw + pw - pad_left)
        dst = base + np.uint64(first)
        if sw == 1:
            for j in range(np.uint64(stop - first)):
                out[dst + j] = x_flat[src + j]
        else:
            step = np.uint64(sw)
            for j in range(np.uint64(stop - first)):
                out[dst + j] = x_flat[src + j * step]


@njit(cache=True, inline="always")
def _pack_row(x_flat, h, w, out, row, j_lo, j_hi, pad_top, pad_left, sh, sw,
              hq, wq):
    """Fill columns j_lo .. j_hi of packed row ``row`` (see pack_input).

    ``x_flat`` is the input, flattened; ``h`` and ``w`` its height and width.
    """
    i = row % hq
    rest = row // hq
    pw = rest % sw
    rest //= sw
    ph = rest % sh
    nc = rest // sh
    src_row = i * sh + ph - pad_top
    first, stop = _row_span(w, j_lo, j_hi, pad_left, sw, pw)
    _fill_row(x_flat, (nc * h + src_row) * w, out, row * wq, j_lo, j_hi,
              first, stop, sw, pw, pad_left, 0 <= src_row < h)


@njit(cache=True, inline="always")
def _pack_plane(x_flat, h, w, out, nc, pad_top, pad_left, sh, sw, hq, wq,
                spans):
    """Every packed row of input plane ``nc`` (all ``sh x sw`` phases):
    the row's place and source follow from the loop counters, with no
    division per row (one row of a 14-wide layer is ~30 elements, and
    six divisions per row took most of the time: 256@28^2/2 0.21 ms)."""
    plane = hq * wq
    for ph in range(sh):
        if sw == 2:
            _pack_two_phases(x_flat, h, w, out, nc, ph, pad_top, pad_left,
                             sh, hq, wq, spans)
            continue
        for pw in range(sw):
            first, stop = spans[pw, 0], spans[pw, 1]
            base = ((nc * sh + ph) * sw + pw) * plane
            src_row = ph - pad_top
            for i in range(hq):
                _fill_row(x_flat, (nc * h + src_row) * w, out, base, 0, wq,
                          first, stop, sw, pw, pad_left,
                          0 <= src_row < h)
                base += wq
                src_row += sh


@njit(cache=True, inline="always")
def _pack_two_phases(x_flat, h, w, out, nc, ph, pad_top, pad_left, sh, hq,
                     wq, spans):
    """Both column phases of row phase ``ph`` of a column stride of 2: each
    input row is read once for its even and odd columns, in one loop over
    the columns both phases take from it (a strided copy per phase ran
    at half the speed of a stride-1 copy)."""
    lo = max(spans[0, 0], spans[1, 0])
    hi = max(lo, min(spans[0, 1], spans[1, 1]))
    base0 = ((nc * sh + ph) * 2) * hq * wq
    base1 = base0 + hq * wq
    src_row = ph - pad_top
    for i in range(hq):
        start = (nc * h + src_row) * w
        inside = 0 <= src_row < h
        for pw in range(2):
            base = base1 if pw else base0
            first, stop = spans[pw, 0], spans[pw, 1]
            if inside:
                # the columns outside [lo, hi): zeros and single copies
                _fill_row(x_flat, start, out, base, 0, lo, min(first, lo),
                          min(stop, lo), 2, pw, pad_left, True)
                _fill_row(x_flat, start, out, base, hi, wq, max(first, hi),
                          max(stop, hi), 2, pw, pad_left, True)
            else:
                _fill_row(x_flat, start, out, base, 0, wq, first, stop, 2,
                          pw, pad_left, False)
        if inside and hi > lo:
            src = np.uint64(start + 2 * lo - pad_left)
            d0 = np.uint64(base0 + lo)
            d1 = np.uint64(base1 + lo)
            for j in range(np.uint64(hi - lo)):
                out[d0 + j] = x_flat[src + np.uint64(2) * j]
                out[d1 + j] = x_flat[src + np.uint64(2) * j + np.uint64(1)]
        base0 += wq
        base1 += wq
        src_row += sh


def packed_size(x_shape, sh, sw, hq, wq, tail):
    """Elements of :func:`pack_input`'s result for an input of ``x_shape``."""
    return x_shape[0] * x_shape[1] * sh * sw * hq * wq + tail


@njit(cache=True, inline="always")
def pack_into(x, pad_top, pad_left, sh, sw, hq, wq, out):
    """:func:`pack_input` into ``out``, inlined in a parallel caller (its
    loops are ``prange``-d there)."""
    n_rows = x.shape[0] * x.shape[1] * sh * sw * hq
    h, w = x.shape[2], x.shape[3]
    x_flat = x.reshape(x.size)
    out[n_rows * wq:] = 0
    if wq >= _PACK_PIECE:
        # long rows (1-D signals): tasks are pieces of a row
        pieces = (wq + _PACK_PIECE - 1) // _PACK_PIECE
        for task in prange(n_rows * pieces):
            j_lo = (task % pieces) * _PACK_PIECE
            _pack_row(x_flat, h, w, out, task // pieces, j_lo,
                      min(wq, j_lo + _PACK_PIECE), pad_top, pad_left, sh, sw,
                      hq, wq)
    elif x.shape[0] * x.shape[1] < _MIN_PLANE_TASKS:
        # one plane: tasks are runs of rows
        rows_per_task = _PACK_PIECE // wq
        for task in prange((n_rows + rows_per_task - 1) // rows_per_task):
            for row in range(task * rows_per_task,
                             min(n_rows, (task + 1) * rows_per_task)):
                _pack_row(x_flat, h, w, out, row, 0, wq, pad_top, pad_left,
                          sh, sw, hq, wq)
    else:
        # short rows: tasks are runs of whole input planes
        planes = x.shape[0] * x.shape[1]
        spans = np.empty((sw, 2), np.int64)
        for pw in range(sw):
            spans[pw, 0], spans[pw, 1] = _row_span(w, 0, wq, pad_left, sw, pw)
        per_task = max(1, _PACK_PIECE // (sh * sw * hq * wq))
        for task in prange((planes + per_task - 1) // per_task):
            for nc in range(task * per_task,
                            min(planes, (task + 1) * per_task)):
                _pack_plane(x_flat, h, w, out, nc, pad_top, pad_left, sh, sw,
                            hq, wq, spans)
    return out


@njit(cache=True, parallel=True)
def _pack_parallel(x, pad_top, pad_left, sh, sw, hq, wq, out):
    return pack_into(x, pad_top, pad_left, sh, sw, hq, wq, out)


def pack_input(x, pad_top, pad_left, sh, sw, hq, wq, tail):
    """Zero-padded polyphase copy of ``x`` (N, C, H, W), flat.

    ``out[(((n*C + c)*sh + ph)*sw + pw)*hq*wq + i*wq + j]`` is
    ``x[n, c, i*sh + ph - pad_top, j*sw + pw - pad_left]``, or zero where
    that is outside ``x``; ``tail`` zeros follow so that a tile may read
    past the last plane (into outputs it drops).
    """
    out = np.empty(packed_size(x.shape, sh, sw, hq, wq, tail), x.dtype)
    return _pack_parallel(x, pad_top, pad_left, sh, sw, hq, wq, out)
