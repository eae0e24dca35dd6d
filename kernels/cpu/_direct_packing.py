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
    base = np.uint64(row * wq)
    src_row = i * sh + ph - pad_top
    # Packed column j holds input column j*sw + pw - pad_left: inside the
    # input for first <= j < stop.
    first = -((pw - pad_left) // sw) if pw < pad_left else 0
    stop = (w - 1 - pw + pad_left) // sw + 1
    if src_row < 0 or src_row >= h:
        first = stop = j_hi
    first = min(max(first, j_lo), j_hi)
    stop = min(max(stop, first), j_hi)
    # (unsigned indices: no negative-index wraparound, so loops vectorise)
    for j in range(np.uint64(j_lo), np.uint64(first)):
        out[base + j] = 0
    for j in range(np.uint64(stop), np.uint64(j_hi)):
        out[base + j] = 0
    if stop > first:
        src = np.uint64((nc * h + src_row) * w + first * sw + pw - pad_left)
        dst = base + np.uint64(first)
        if sw == 1:
            for j in range(np.uint64(stop - first)):
                out[dst + j] = x_flat[src + j]
        else:
            step = np.uint64(sw)
            for j in range(np.uint64(stop - first)):
                out[dst + j] = x_flat[src + j * step]


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
    else:
        # short rows: tasks are runs of whole rows
        rows_per_task = _PACK_PIECE // wq
        for task in prange((n_rows + rows_per_task - 1) // rows_per_task):
            for row in range(task * rows_per_task,
                             min(n_rows, (task + 1) * rows_per_task)):
                _pack_row(x_flat, h, w, out, row, 0, wq, pad_top, pad_left,
                          sh, sw, hq, wq)
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
