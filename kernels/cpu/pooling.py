"""Max and average pooling, forward and backward, as Numba kernels.

Every kernel works on a stack of planes ``x[p, h, w]`` (``p`` runs over
the flattened batch and channel axes; a 1-D problem has ``H = 1``) and
takes the pooling geometry per axis: kernel ``(kh, kw)``, stride
``(sh, sw)``, padding ``(ph, pw)``, dilation ``(dh, dw)`` and the output
size ``(ho, wo)`` computed by :func:`kernels.geometry.pool_output_size`.
The public front-end (:mod:`kernels._pooling`) validates and reshapes.

Forward kernels are *separable*: for one output row they first reduce the
``kh`` input rows of its window column by column into a row buffer
(contiguous loads, which LLVM vectorises), then reduce ``kw`` taps of that
buffer for each output.  Each input element is read from memory once per
output row that needs it (``kh / sh`` times, from cache after the first),
which keeps the kernels at memory speed.  The buffer has the padded width
``(wo - 1) sw + (kw - 1) dw + 1`` and is filled with the identity of the
reduction (``-inf`` for max, ``0`` for sum) where the window lies in the
padding or beyond the input (``ceil_mode``).

Semantics follow PyTorch's CPU kernels exactly:

* max: NaN propagates; the argmax (``return_indices`` and the gradient) is
  the first maximum in window order (row-major), or the *last* NaN when
  the window holds one (PyTorch's ``val > max || isnan(val)`` update);
  the index is flat in the input plane, ``h * W + w``.
* average: the divisor is ``kh' * kw'`` with the window clipped to the
  padded input (``count_include_pad``), to the input itself (otherwise),
  or ``divisor_override``.  It factors into a row part and a column part,
  precomputed by :func:`avg_divisors`.

Parallelism is over output rows of all planes (or over planes where a
thread must own a whole plane), split into contiguous chunks so that each
task allocates its scratch once; there is no parallel reduction, so the
results do not depend on the number of threads.  float32 averages are
accumulated in float64 and rounded once.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

__all__ = [
    "max_pool", "max_pool_with_indices", "avg_pool", "avg_divisors",
    "global_avg_pool", "max_pool_backward", "max_pool_backward_fused",
    "max_pool_backward_indices",
    "avg_pool_backward",
]

# Rows are split into at most this many contiguous chunks, each a parallel
# task that allocates its scratch once: enough to balance many threads,
# few enough that the allocations do not count.  (A fixed number rather
# than one derived from numba.get_num_threads(), which would keep the
# kernels out of Numba's on-disk cache.)
_MAX_CHUNKS = 512


@njit(cache=True, inline="always")
def _chunk_bounds(chunk, n_chunks, total):
    return chunk * total // n_chunks, (chunk + 1) * total // n_chunks


@njit(cache=True, inline="always")
def _n_chunks(total):
    return max(1, min(total, _MAX_CHUNKS))


@njit(cache=True, inline="always")
def _nan_max(current, candidate):
    """max that propagates NaN (a NaN candidate always wins)."""
    if candidate > current or candidate != candidate:
        return candidate
    return current


# --------------------------------------------------------------------------
# max pooling, forward
# --------------------------------------------------------------------------
#
# Performance notes (measured on AVX-512, see README):
# * Every inner loop indexes a view from 0 with the loop variable only.  An
#   index such as ``a[offset + j]`` with a runtime offset makes Numba emit
#   its negative-index wraparound check per element, which stops LLVM from
#   vectorising (10x slower).
# * ``buf[j] = nan_max(buf[j], row[j])`` compiles to a *masked* vector store,
#   slow on AMD Zen; writing into a different array (ping-pong between two
#   buffers) gives plain stores.
# * Strides 1 and 2 get loops whose stride is a literal, so LLVM can use
#   interleaved (de-interleaving) vector loads.

@njit(cache=True, inline="always")
def _max_rows(dst, a, b):
    """dst[j] = nan_max(a[j], b[j]) (dst may be a or b only if unused)."""
    for j in range(dst.size):
        dst[j] = _nan_max(a[j], b[j])


@njit(cache=True)
def _max_columns(src, out_row, scratch, sw, kw, dw):
    """out_row[ow] = max over t of src[ow sw + t dw] (NaN-propagating)."""
    wo = out_row.size
    if kw == 1:
        for ow in range(wo):
            out_row[ow] = src[ow * sw]
        return
    s1 = src[dw:]
    last = src[(kw - 1) * dw:]
    if sw == 1:
        if kw == 2:
            for ow in range(wo):
                out_row[ow] = _nan_max(src[ow], s1[ow])
            return
        for ow in range(wo):
            scratch[ow] = _nan_max(src[ow], s1[ow])
        for t in range(2, kw - 1):
            st = src[t * dw:]
            for ow in range(wo):
                scratch[ow] = _nan_max(scratch[ow], st[ow])
        for ow in range(wo):
            out_row[ow] = _nan_max(scratch[ow], last[ow])
    elif sw == 2:
        if kw == 2:
            for ow in range(wo):
                out_row[ow] = _nan_max(src[2 * ow], s1[2 * ow])
            return
        for ow in range(wo):
            scratch[ow] = _nan_max(src[2 * ow], s1[2 * ow])
        for t in range(2, kw - 1):
            st = src[t * dw:]
            for ow in range(wo):
                scratch[ow] = _nan_max(scratch[ow], st[2 * ow])
        for ow in range(wo):
            out_row[ow] = _nan_max(scratch[ow], last[2 * ow])
    else:
        for ow in range(wo):
            base = ow * sw
            m = src[base]
            for t in range(1, kw):
                m = _nan_max(m, src[base + t * dw])
            out_row[ow] = m


@njit(cache=True, inline="always")
def _valid_taps(start, k, d, n):
    """Range [t0, t1) of taps t with 0 <= start + t d < n."""
    t0 = 0
    while t0 < k and start + t0 * d < 0:
        t0 += 1
    t1 = k
    while t1 > t0 and start + (t1 - 1) * d >= n:
        t1 -= 1
    return t0, t1


@njit(parallel=True, cache=True)
def max_pool(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """Max pooling of the planes ``x[p]``; values only (separable)."""
    n_planes, height, width = x.shape
    out = np.empty((n_planes, ho, wo), dtype=x.dtype)
    buf_len = (wo - 1) * sw + (kw - 1) * dw + 1
    # Input columns that land inside the buffer (floor mode can drop some).
    cols = min(width, buf_len - pw)
    rows = n_planes * ho
    n_chunks = _n_chunks(rows)
    for chunk in prange(n_chunks):
        # Two row buffers (ping-pong); their padding margins stay -inf.
        bufs = np.full((2, buf_len), -np.inf, dtype=x.dtype)
        scratch = np.empty(wo, dtype=x.dtype)
        r0, r1 = _chunk_bounds(chunk, n_chunks, rows)
        for r in range(r0, r1):
            p = r // ho
            oh = r - p * ho
            ih0 = oh * sh - ph
            t0, t1 = _valid_taps(ih0, kh, dh, height)
            cur = 0
            if t1 - t0 == 0:  # dilated window that skips every input row
                bufs[0, pw:pw + cols] = -np.inf
            elif t1 - t0 == 1:
                bufs[0, pw:pw + cols] = x[p, ih0 + t0 * dh, :cols]
            else:
                _max_rows(bufs[0, pw:pw + cols], x[p, ih0 + t0 * dh, :cols],
                          x[p, ih0 + (t0 + 1) * dh, :cols])
                for t in range(t0 + 2, t1):
                    _max_rows(bufs[1 - cur, pw:pw + cols],
                              bufs[cur, pw:pw + cols], x[p, ih0 + t * dh, :cols])
                    cur = 1 - cur
            _max_columns(bufs[cur], out[p, oh], scratch, sw, kw, dw)
    return out


@njit(cache=True, inline="always")
def _window_argmax(plane, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw):
    """(value, flat index) of one window, in PyTorch's order and rules."""
    height, width = plane.shape
    ih0 = oh * sh - ph
    iw0 = ow * sw - pw
    ih1 = min(ih0 + (kh - 1) * dh + 1, height)
    iw1 = min(iw0 + (kw - 1) * dw + 1, width)
    while ih0 < 0:
        ih0 += dh
    while iw0 < 0:
        iw0 += dw
    best = -np.inf
    # PyTorch's index for a window that holds no input element (possible
    # with dilation): the first tap position, which may lie outside.
    best_index = ih0 * width + iw0
    found = False
    for ih in range(ih0, ih1, dh):
        for iw in range(iw0, iw1, dw):
            found = True
            v = plane[ih, iw]
            if v > best or v != v:
                best = v
                best_index = ih * width + iw
    return best, best_index, found


@njit(parallel=True, cache=True)
def max_pool_with_indices(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """Max pooling with PyTorch's int64 argmax indices (flat per plane)."""
    n_planes = x.shape[0]
    out = np.empty((n_planes, ho, wo), dtype=x.dtype)
    indices = np.empty((n_planes, ho, wo), dtype=np.int64)
    rows = n_planes * ho
    n_chunks = _n_chunks(rows)
    for chunk in prange(n_chunks):
        r0, r1 = _chunk_bounds(chunk, n_chunks, rows)
        for r in range(r0, r1):
            p = r // ho
            oh = r - p * ho
            for ow in range(wo):
                v, i, _ = _window_argmax(x[p], oh, ow, kh, kw, sh, sw, ph,
                                         pw, dh, dw)
                out[p, oh, ow] = v
                indices[p, oh, ow] = i
    return out, indices


# --------------------------------------------------------------------------
# max pooling, backward
# --------------------------------------------------------------------------

def max_pool_backward(grad_out, x, kh, kw, sh, sw, ph, pw, dh, dw):
    """Gradient of max pooling with the argmax recomputed from ``x``.

    With at least as many planes as threads, one fused pass
    (:func:`max_pool_backward_fused`); otherwise the argmax is computed in
    parallel over output rows, then gathered per input row.  Both routes
    add the same terms in the same order.
    """
    if x.shape[0] >= get_num_threads():
        return max_pool_backward_fused(grad_out, x, kh, kw, sh, sw, ph, pw,
                                       dh, dw)
    _, indices = max_pool_with_indices(x, kh, kw, sh, sw, ph, pw, dh, dw,
                                       grad_out.shape[1], grad_out.shape[2])
    return max_pool_backward_indices(grad_out, indices, x.shape[1],
                                     x.shape[2], kh, kw, sh, sw, ph, pw, dh,
                                     dw)


@njit(parallel=True, cache=True)
def max_pool_backward_fused(grad_out, x, kh, kw, sh, sw, ph, pw, dh, dw):
    """Gradient of max pooling, argmax recomputed, one pass per plane.

    Each thread owns whole planes and scatters ``grad_out`` to the argmax
    of each window inside its own plane (no atomics).  Use when there are
    at least as many planes as threads; else see
    :func:`max_pool_backward_indices`.
    """
    n_planes, height, width = x.shape
    ho, wo = grad_out.shape[1], grad_out.shape[2]
    grad_in = np.zeros(x.shape, dtype=x.dtype)
    plane_size = height * width
    for p in prange(n_planes):
        flat = grad_in[p].reshape(plane_size)
        for oh in range(ho):
            for ow in range(wo):
                _, i, found = _window_argmax(x[p], oh, ow, kh, kw, sh, sw,
                                             ph, pw, dh, dw)
                if found:
                    flat[i] += grad_out[p, oh, ow]
    return grad_in


@njit(cache=True, inline="always")
def _tap(offset, k, d):
    """True when ``offset`` from a window start is one of its k taps."""
    return 0 <= offset <= (k - 1) * d and offset % d == 0


@njit(parallel=True, cache=True)
def max_pool_backward_indices(grad_out, indices, height, width, kh, kw, sh,
                              sw, ph, pw, dh, dw):
    """Gradient of max pooling from argmax indices, gathered per input row.

    Each task owns one input row and collects the gradient of the output
    rows whose windows can reach it, keeping the windows whose index
    points into the row.  Parallel over all input rows of all planes, so
    it scales even for a single plane.  An index that is not a tap of its
    own window (PyTorch's placeholder for a window that holds no input
    element) contributes nothing: that output is constant in ``x``.
    """
    n_planes, ho, wo = grad_out.shape
    grad_in = np.zeros((n_planes, height, width), dtype=grad_out.dtype)
    rows = n_planes * height
    n_chunks = _n_chunks(rows)
    for chunk in prange(n_chunks):
        r0, r1 = _chunk_bounds(chunk, n_chunks, rows)
        for r in range(r0, r1):
            p = r // height
            ih = r - p * height
            row_start = ih * width
            row = grad_in[p, ih]
            for oh in range(ho):
                if not _tap(ih - (oh * sh - ph), kh, dh):
                    continue
                for ow in range(wo):
                    iw = indices[p, oh, ow] - row_start
                    if 0 <= iw < width and _tap(iw - (ow * sw - pw), kw, dw):
                        row[iw] += grad_out[p, oh, ow]
    return grad_in


# --------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------

def avg_divisors(n, k, s, p, n_out, count_include_pad):
    """Per-output divisor factor along one axis, PyTorch's rule.

    The window ``[o s - p, o s - p + k)`` is clipped to the padded input
    ``[-p, n + p)`` (only ceil_mode windows reach past it); with
    ``count_include_pad`` that clipped length is the factor, else the
    length of its intersection with the input ``[0, n)``.
    """
    start = np.arange(n_out, dtype=np.int64) * s - p
    end = np.minimum(start + k, n + p)
    if count_include_pad:
        return (end - start).astype(np.float64)
    return (np.minimum(end, n) - np.maximum(start, 0)).astype(np.float64)


@njit(cache=True, inline="always")
def _finish(total, d, recip):
    return total * d if recip else total / d


@njit(cache=True)
def _sum_columns(src, out_row, scratch, sw, kw, div, recip):
    """out_row[ow] = (sum over t < kw of src[ow sw + t]) / div[ow].

    With ``recip`` ``div`` holds reciprocals and is multiplied (float32
    outputs: the float64 product differs from the quotient by at most
    2 ulps of float64, invisible after rounding to float32, and a
    vector division costs as much as the rest of the row).
    """
    wo = out_row.size
    if kw == 1:
        for ow in range(wo):
            out_row[ow] = _finish(src[ow * sw], div[ow], recip)
        return
    s1 = src[1:]
    last = src[kw - 1:]
    if sw == 1:
        if kw == 2:
            for ow in range(wo):
                out_row[ow] = _finish((src[ow] + s1[ow]), div[ow], recip)
            return
        for ow in range(wo):
            scratch[ow] = src[ow] + s1[ow]
        for t in range(2, kw - 1):
            st = src[t:]
            for ow in range(wo):
                scratch[ow] += st[ow]
        for ow in range(wo):
            out_row[ow] = _finish((scratch[ow] + last[ow]), div[ow], recip)
    elif sw == 2:
        if kw == 2:
            for ow in range(wo):
                out_row[ow] = _finish((src[2 * ow] + s1[2 * ow]), div[ow], recip)
            return
        for ow in range(wo):
            scratch[ow] = src[2 * ow] + s1[2 * ow]
        for t in range(2, kw - 1):
            st = src[t:]
            for ow in range(wo):
                scratch[ow] += st[2 * ow]
        for ow in range(wo):
            out_row[ow] = _finish((scratch[ow] + last[2 * ow]), div[ow], recip)
    else:
        for ow in range(wo):
            base = ow * sw
            acc = src[base]
            for t in range(1, kw):
                acc += src[base + t]
            out_row[ow] = _finish(acc, div[ow], recip)


@njit(parallel=True, cache=True)
def avg_pool(x, kh, kw, sh, sw, ph, pw, ho, wo, div_h, div_w):
    """Average pooling (separable), output ``sum / (div_h[oh] div_w[ow])``.

    ``div_h``/``div_w`` are float64 factors (with ``divisor_override`` the
    whole divisor is in ``div_h`` and ``div_w`` is ones).  Sums in float64.
    """
    n_planes, height, width = x.shape
    out = np.empty((n_planes, ho, wo), dtype=x.dtype)
    recip = out.itemsize == 4       # float32 output: multiply by 1 / div
    buf_len = (wo - 1) * sw + kw
    cols = min(width, buf_len - pw)
    rows = n_planes * ho
    n_chunks = _n_chunks(rows)
    for chunk in prange(n_chunks):
        buf = np.zeros(buf_len, dtype=np.float64)  # margins stay 0
        scratch = np.empty(wo, dtype=np.float64)
        div = np.empty(wo, dtype=np.float64)
        inner = buf[pw:pw + cols]
        r0, r1 = _chunk_bounds(chunk, n_chunks, rows)
        for r in range(r0, r1):
            p = r // ho
            oh = r - p * ho
            ih0 = oh * sh - ph
            t0, t1 = _valid_taps(ih0, kh, 1, height)
            if t1 - t0 == 0:
                inner[:] = 0.0
            elif t1 - t0 == 1:
                first = x[p, ih0 + t0, :cols]
                for j in range(cols):
                    inner[j] = first[j]
            else:
                first = x[p, ih0 + t0, :cols]
                second = x[p, ih0 + t0 + 1, :cols]
                for j in range(cols):
                    inner[j] = np.float64(first[j]) + np.float64(second[j])
                for t in range(t0 + 2, t1):
                    row = x[p, ih0 + t, :cols]
                    for j in range(cols):
                        inner[j] += row[j]
            for ow in range(wo):
                div[ow] = div_h[oh] * div_w[ow]
            if recip:
                for ow in range(wo):
                    div[ow] = 1.0 / div[ow]
            _sum_columns(buf, out[p, oh], scratch, sw, kw, div, recip)
    return out


@njit(parallel=True, cache=True)
def avg_pool_backward(grad_out, height, width, kh, kw, sh, sw, ph, pw,
                      div_h, div_w):
    """Gradient of average pooling, gathered per input row.

    Input row ``ih`` receives ``grad_out[oh, ow] / divisor`` from every
    window containing it; each task owns one input row (no atomics) and
    walks the candidate output rows.  Accumulates in float64.
    """
    n_planes, ho, wo = grad_out.shape
    grad_in = np.empty((n_planes, height, width), dtype=grad_out.dtype)
    rows = n_planes * height
    n_chunks = _n_chunks(rows)
    buf_len = (wo - 1) * sw + kw
    for chunk in prange(n_chunks):
        buf = np.empty(max(buf_len, pw + width), dtype=np.float64)
        r0, r1 = _chunk_bounds(chunk, n_chunks, rows)
        for r in range(r0, r1):
            p = r // height
            ih = r - p * height
            buf[:] = 0.0
            # Output rows whose window [oh sh - ph, oh sh - ph + kh) holds ih.
            oh_lo = max(0, (ih + ph - kh + sh) // sh)
            oh_hi = min(ho - 1, (ih + ph) // sh)
            for oh in range(oh_lo, oh_hi + 1):
                dv = div_h[oh]
                for ow in range(wo):
                    g = grad_out[p, oh, ow] / (dv * div_w[ow])
                    base = ow * sw
                    for t in range(kw):
                        buf[base + t] += g
            row = grad_in[p, ih]
            for j in range(width):
                row[j] = buf[pw + j]
    return grad_in


@njit(parallel=True, cache=True)
def global_avg_pool(x):
    """Mean of each plane ``x[p]`` (2-D array ``(P, H*W)``), float64 sums.

    Four interleaved partial sums break the add latency chain; the order
    is fixed, so the result does not depend on the thread count.
    """
    n_planes, size = x.shape
    out = np.empty(n_planes, dtype=x.dtype)
    for p in prange(n_planes):
        row = x[p]
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        j = 0
        while j + 4 <= size:
            s0 += row[j]
            s1 += row[j + 1]
            s2 += row[j + 2]
            s3 += row[j + 3]
            j += 4
        while j < size:
            s0 += row[j]
            j += 1
        out[p] = ((s0 + s1) + (s2 + s3)) / size
    return out
