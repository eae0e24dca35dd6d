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

* ``direct``: the loop above over input channels and kernel taps.
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
from numba import njit, prange

from .. import _threads
from .._dispatch import Kernel
from . import _blas, _tuning
from ._workspace import Workspace

__all__ = ["ALGORITHMS", "conv_transpose2d", "direct", "im2col",
           "col2im_add", "col2im_add_serial", "KERNELS"]

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
def _direct(x, w, bias, sh, sw, ph, pw, dh, dw, ho, wo, groups):
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


def direct(x, w, bias, stride, pad_lo, out_hw, dilation, groups):
    """Gather-form transposed convolution, parallel over output rows."""
    c_out = w.shape[1] * groups
    return _direct(x, w, _bias_or_zeros(bias, c_out, x.dtype), *stride,
                   *pad_lo, *dilation, *out_hw, groups)


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
            _blas.matmul(w_t, xb, cols)
            col2im(cols, y[b0:b1], ih0, ih1, kh_size, kw_size, *stride,
                   *pad_lo, *dilation, bias, ih0 == 0)
    return y


def conv_transpose2d(x, w, bias, stride, pad_lo, out_hw, dilation, groups,
                     algorithm):
    """Run ``algorithm`` ("direct" or "im2col") on a validated problem."""
    kernel = {"direct": direct, "im2col": im2col}[algorithm]
    return kernel(x, w, bias, tuple(stride), tuple(pad_lo), tuple(out_hw),
                  tuple(dilation), int(groups))


def _entry(kernel):
    """The contract's ``run(spec, x, w, bias)`` for one of the kernels."""
    def run(spec, x, w, bias):
        return kernel(x, w, bias, spec.stride, spec.pad_lo, spec.out_hw,
                      spec.dilation, spec.groups)
    return run


# Both kernels compute every valid configuration.
KERNELS = {("conv_transpose2d", "direct"): Kernel(_entry(direct)),
           ("conv_transpose2d", "im2col"): Kernel(_entry(im2col))}
