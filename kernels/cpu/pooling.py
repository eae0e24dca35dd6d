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
  precomputed by :func:`kernels._pooling.avg_divisors`.

Parallelism is over output rows of all planes (or over planes where a
thread must own a whole plane), split into contiguous chunks so that each
task allocates its scratch once; there is no parallel reduction, so the
results do not depend on the number of threads.  Averages accumulate in
the input's dtype, as PyTorch's CPU kernels do (float64 sums had cost
float32 windows 10-25 %: twice the vector instructions, conversions;
measured out of cache on (8, 64, 112, 112)); global average pooling sums
in float64.  Outputs and gradients are allocated by NumPy in the Python
wrappers and filled by the ``_*_into`` kernels: NumPy backs large arrays
with transparent huge pages, Numba's allocator does not (a page fault
per 4 KiB of a fresh array; see :func:`kernels.cpu.direct.run_driver`).
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from .._dispatch import Kernel
from ._prefetch import prefetch_row

__all__ = [
    "max_pool", "max_pool_with_indices", "avg_pool",
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
# Performance notes (measured on a 2-core AVX-512 VM, (8, 64, 112, 112)
# float32 3x3/2 windows; see README):
# * Every inner loop indexes from 0 with the loop variable only, or indexes
#   a 3-D array ``x[p, ih, j]`` whose leading indices are fixed in the loop.
#   An index such as ``a[offset + j]`` with a runtime offset makes Numba
#   emit its negative-index wraparound check per element, which stops LLVM
#   from vectorising (10x slower).
# * Few array views per output row.  An earlier version sliced 1-D views of
#   every input row, buffer and output row (about a dozen per output row):
#   with 55-wide rows that bookkeeping cost more than the arithmetic (max
#   pool 1.7 vs 1.1 ms with the data in cache).
# * Stride 2 (the common case) de-interleaves the row buffer into its even
#   and odd columns once, so that every tap is a unit-stride load: LLVM
#   compiled ``buf[2 * ow + t]`` into gathers (``vgatherqps``).  Average
#   pooling went from 1.9 to 1.2 ms in cache, 2.5 to 1.9 ms from memory.
# * The common 2- and 3-wide windows get loops whose offsets are literals;
#   other windows take one view per tap.
# * The column stage is inlined into the row loop: calling it once per
#   output row (with a 3-D array argument) cost 15-30 % (A/B, 0.70-0.87x
#   the time inlined).


@njit(cache=True, inline="always")
def _deinterleave(buf, even, odd):
    """even[i] = buf[2 i], odd[i] = buf[2 i + 1] for i < even.size."""
    for i in range(even.size):
        even[i] = buf[2 * i]
        odd[i] = buf[2 * i + 1]


@njit(cache=True, inline="always")
def _phase_tap(even, odd, offset):
    """The view v with v[ow] = buf[2 ow + offset] (buf de-interleaved)."""
    if offset % 2 == 0:
        return even[offset // 2:]
    return odd[offset // 2:]


@njit(cache=True, inline="always")
def _max_columns(buf, even, odd, out, p, oh, sw, kw, dw):
    """out[p, oh, ow] = max over t of buf[ow sw + t dw] (NaN-propagating).

    With ``sw == 2`` ``even``/``odd`` (length ``wo + (kw - 1) dw // 2``)
    receive the de-interleaved buffer; otherwise they are unused.
    """
    wo = out.shape[2]
    if sw == 2:
        _deinterleave(buf, even, odd)
        if dw == 1 and kw == 3:
            for ow in range(wo):
                out[p, oh, ow] = _nan_max(_nan_max(even[ow], odd[ow]),
                                          even[ow + 1])
            return
        if dw == 1 and kw == 2:
            for ow in range(wo):
                out[p, oh, ow] = _nan_max(even[ow], odd[ow])
            return
        row = out[p, oh]
        for ow in range(wo):
            row[ow] = even[ow]
        for t in range(1, kw):
            tap = _phase_tap(even, odd, t * dw)
            for ow in range(wo):
                row[ow] = _nan_max(row[ow], tap[ow])
        return
    if sw == 1 and dw == 1 and kw == 3:
        for ow in range(wo):
            out[p, oh, ow] = _nan_max(_nan_max(buf[ow], buf[ow + 1]),
                                      buf[ow + 2])
        return
    if sw == 1 and dw == 1 and kw == 2:
        for ow in range(wo):
            out[p, oh, ow] = _nan_max(buf[ow], buf[ow + 1])
        return
    row = out[p, oh]
    if sw == 1:
        for ow in range(wo):
            row[ow] = buf[ow]
    else:
        for ow in range(wo):
            row[ow] = buf[ow * sw]
    for t in range(1, kw):
        tap = buf[t * dw:]
        if sw == 1:
            for ow in range(wo):
                row[ow] = _nan_max(row[ow], tap[ow])
        else:
            for ow in range(wo):
                row[ow] = _nan_max(row[ow], tap[ow * sw])


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


@njit(cache=True, inline="always")
def _aligned_row_buffer(n, pw, fill, dtype):
    """A length-``n`` buffer filled with ``fill`` whose element ``pw`` is
    64-byte aligned.

    The vertical pass stores into ``buf[pw:]`` once per window row; with
    ``pw = 1`` and an aligned buffer every 64-byte vector store straddled
    two cache lines (average pool 3x3/2 padding 1: 2.2 vs 1.9 ms, A/B in one
    process).
    """
    raw = np.full(n + 64, fill, dtype=dtype)
    itemsize = raw.itemsize
    per_line = 64 // itemsize
    addr = raw.ctypes.data // itemsize + pw
    lead = (per_line - addr % per_line) % per_line
    return raw[lead:lead + n]


# Output rows ahead of the current one whose new input rows are
# prefetched.  2, 4, 8 and 16 measured alike (3x3/2 max pool, out of
# cache: 1.7-1.8 ms against 2.0-2.1 ms without).
_PREFETCH_AHEAD = 4


@njit(cache=True, inline="always")
def _prefetch_window(x, r, rows, ho, kh, sh, ph, dh, cols):
    """Prefetch the input rows of output row ``r`` (of ``rows``, planes
    flattened) that output row ``r - 1`` did not read."""
    if r >= rows:
        return
    p = r // ho
    ih0 = (r - p * ho) * sh - ph
    last_before = ih0 - sh + (kh - 1) * dh
    for t in range(kh):
        ih = ih0 + t * dh
        if ih > last_before and 0 <= ih < x.shape[1]:
            prefetch_row(x, p, ih, cols)


def max_pool(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """Max pooling of the planes ``x[p]``; values only (separable)."""
    out = np.empty((x.shape[0], ho, wo), dtype=x.dtype)
    _max_pool_into(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, out)
    return out


@njit(parallel=True, cache=True)
def _max_pool_into(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, out):
    n_planes, height, width = x.shape
    span = (wo - 1) * sw + (kw - 1) * dw + 1
    # Input columns that land inside the buffer (floor mode can drop some).
    cols = min(width, span - pw)
    half = wo + (kw - 1) * dw // 2
    rows = n_planes * ho
    n_chunks = _n_chunks(rows)
    for chunk in prange(n_chunks):
        # The row buffer's padding margins stay -inf; one spare element
        # for the stride-2 de-interleave.
        buf = _aligned_row_buffer(span + 1, pw, -np.inf, x.dtype)
        even = np.empty(half, dtype=x.dtype)
        odd = np.empty(half, dtype=x.dtype)
        inner = buf[pw:pw + cols]
        r0, r1 = _chunk_bounds(chunk, n_chunks, rows)
        for r in range(r0, r1):
            _prefetch_window(x, r + _PREFETCH_AHEAD, rows, ho, kh, sh, ph,
                             dh, cols)
            p = r // ho
            oh = r - p * ho
            ih0 = oh * sh - ph
            t0, t1 = _valid_taps(ih0, kh, dh, height)
            if t1 == t0:  # dilated window that skips every input row
                for j in range(cols):
                    inner[j] = -np.inf
            else:
                ih = ih0 + t0 * dh
                for j in range(cols):
                    inner[j] = x[p, ih, j]
                for t in range(t0 + 1, t1):
                    ih = ih0 + t * dh
                    for j in range(cols):
                        inner[j] = _nan_max(inner[j], x[p, ih, j])
            _max_columns(buf, even, odd, out, p, oh, sw, kw, dw)


@njit(cache=True, inline="always")
def _window_taps(oh, ow, height, width, kh, kw, sh, sw, ph, pw, dh, dw):
    """``(ih0, ih1, iw0, iw1)``: window ``(oh, ow)``'s first tap row and
    column inside the plane and the ends (exclusive) of its taps there;
    the taps are ``range(ih0, ih1, dh) x range(iw0, iw1, dw)``."""
    ih0 = oh * sh - ph
    iw0 = ow * sw - pw
    ih1 = min(ih0 + (kh - 1) * dh + 1, height)
    iw1 = min(iw0 + (kw - 1) * dw + 1, width)
    while ih0 < 0:
        ih0 += dh
    while iw0 < 0:
        iw0 += dw
    return ih0, ih1, iw0, iw1


@njit(cache=True, inline="always")
def _window_argmax(plane, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw):
    """(value, flat index) of one window, in PyTorch's order and rules."""
    height, width = plane.shape
    ih0, ih1, iw0, iw1 = _window_taps(oh, ow, height, width, kh, kw, sh, sw,
                                      ph, pw, dh, dw)
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


def max_pool_with_indices(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo):
    """Max pooling with PyTorch's int64 argmax indices (flat per plane).

    The values come from the separable kernel (:func:`max_pool`); each
    window's index is then found by one scan of its taps in window order
    that stops at the first tap equal to the maximum — PyTorch's first
    maximum — or, when the maximum is NaN, keeps the last NaN, and the
    value is re-read from that tap (the sign of a zero maximum, a NaN's
    payload: PyTorch's).  One
    window at a time with a compare and a branch per tap
    (:func:`_window_argmax`) was 10-15x slower than the values alone.
    """
    out = max_pool(x, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo)
    indices = np.empty((x.shape[0], ho, wo), dtype=np.int64)
    _argmax_indices_into(x, out, kh, kw, sh, sw, ph, pw, dh, dw, indices)
    return out, indices


@njit(cache=True, inline="always")
def _index_of(plane, y, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw):
    """``(flat index, hit)`` of value ``y`` in window ``(oh, ow)``: its
    first tap equal to ``y``, the last NaN tap when ``y`` is NaN; when no
    tap holds it (no input element in the window), the window's first
    tap position (PyTorch's placeholder, maybe outside the plane) and
    ``hit`` False."""
    height, width = plane.shape
    ih0, ih1, iw0, iw1 = _window_taps(oh, ow, height, width, kh, kw, sh, sw,
                                      ph, pw, dh, dw)
    found = ih0 * width + iw0
    hit = False
    nan = y != y
    ih = ih0
    while ih < ih1:
        iw = iw0
        while iw < iw1:
            v = plane[ih, iw]
            if nan:
                if v != v:
                    found = ih * width + iw
                    hit = True
            elif v == y:
                return ih * width + iw, True
            iw += dw
        ih += dh
    return found, hit


@njit(parallel=True, cache=True)
def _argmax_indices_into(x, out, kh, kw, sh, sw, ph, pw, dh, dw, indices):
    n_planes, ho, wo = out.shape
    rows = n_planes * ho
    n_chunks = _n_chunks(rows)
    for chunk in prange(n_chunks):
        r0, r1 = _chunk_bounds(chunk, n_chunks, rows)
        for r in range(r0, r1):
            p = r // ho
            oh = r - p * ho
            plane = x[p]
            flat = plane.reshape(plane.size)
            for ow in range(wo):
                i, hit = _index_of(plane, out[p, oh, ow], oh, ow, kh, kw, sh,
                                   sw, ph, pw, dh, dw)
                indices[p, oh, ow] = i
                if hit:
                    # The value of the argmax itself, as PyTorch returns
                    # it: -0.0 where the first maximum is -0.0 (the
                    # separable kernel may have kept +0.0).
                    out[p, oh, ow] = flat[i]


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


def max_pool_backward_fused(grad_out, x, kh, kw, sh, sw, ph, pw, dh, dw):
    """Gradient of max pooling, argmax recomputed, one pass per plane.

    Each thread owns whole planes and scatters ``grad_out`` to the argmax
    of each window inside its own plane (no atomics).  Use when there are
    at least as many planes as threads; else see
    :func:`max_pool_backward_indices`.
    """
    grad_in = np.zeros(x.shape, dtype=x.dtype)
    _max_pool_backward_fused_into(grad_out, x, kh, kw, sh, sw, ph, pw, dh,
                                  dw, grad_in)
    return grad_in


@njit(parallel=True, cache=True)
def _max_pool_backward_fused_into(grad_out, x, kh, kw, sh, sw, ph, pw, dh, dw,
                                  grad_in):
    n_planes, height, width = x.shape
    ho, wo = grad_out.shape[1], grad_out.shape[2]
    plane_size = height * width
    for p in prange(n_planes):
        flat = grad_in[p].reshape(plane_size)
        for oh in range(ho):
            for ow in range(wo):
                _, i, found = _window_argmax(x[p], oh, ow, kh, kw, sh, sw,
                                             ph, pw, dh, dw)
                if found:
                    flat[i] += grad_out[p, oh, ow]


@njit(cache=True, inline="always")
def _tap(offset, k, d):
    """True when ``offset`` from a window start is one of its k taps."""
    return 0 <= offset <= (k - 1) * d and (d == 1 or offset % d == 0)


def max_pool_backward_indices(grad_out, indices, height, width, kh, kw, sh,
                              sw, ph, pw, dh, dw):
    """Gradient of max pooling from argmax indices.

    With at least as many planes as threads, each thread scatters
    ``grad_out`` of whole planes to their indices
    (:func:`_max_pool_backward_scatter_into`: one pass over ``grad_out``);
    with fewer, each task gathers one input row of all planes
    (:func:`_max_pool_backward_gather_into`), so that a single plane
    scales too.  Both add the contributions to an input in the same
    order (output row, then column): the result does not depend on the
    path or the thread count.  An index that is not a tap of its own
    window (PyTorch's placeholder for a window that holds no input
    element) contributes nothing: that output is constant in ``x``.
    """
    # Each task zeroes what it owns: the pages are touched in parallel.
    grad_in = np.empty((grad_out.shape[0], height, width),
                       dtype=grad_out.dtype)
    if grad_out.shape[0] >= get_num_threads():
        into = _max_pool_backward_scatter_into
    else:
        into = _max_pool_backward_gather_into
    into(grad_out, indices, height, width, kh, kw, sh, sw, ph, pw, dh, dw,
         grad_in)
    return grad_in


@njit(parallel=True, cache=True)
def _max_pool_backward_scatter_into(grad_out, indices, height, width, kh, kw,
                                    sh, sw, ph, pw, dh, dw, grad_in):
    n_planes, ho, wo = grad_out.shape
    size = height * width
    for p in prange(n_planes):
        flat = grad_in[p].reshape(size)
        flat[:] = 0
        for oh in range(ho):
            top = oh * sh - ph
            for ow in range(wo):
                i = indices[p, oh, ow]
                if i < 0 or i >= size:
                    continue
                ih = i // width
                if (_tap(ih - top, kh, dh)
                        and _tap(i - ih * width - (ow * sw - pw), kw, dw)):
                    flat[i] += grad_out[p, oh, ow]


@njit(parallel=True, cache=True)
def _max_pool_backward_gather_into(grad_out, indices, height, width, kh, kw,
                                   sh, sw, ph, pw, dh, dw, grad_in):
    n_planes, ho, wo = grad_out.shape
    rows = n_planes * height
    n_chunks = _n_chunks(rows)
    for chunk in prange(n_chunks):
        r0, r1 = _chunk_bounds(chunk, n_chunks, rows)
        for r in range(r0, r1):
            p = r // height
            ih = r - p * height
            row_start = ih * width
            row = grad_in[p, ih]
            row[:] = 0
            # The output rows whose windows span input row ih:
            # oh sh - ph <= ih <= oh sh - ph + (kh - 1) dh.
            first = max(0, -((-(ih + ph - (kh - 1) * dh)) // sh))
            last = min(ho - 1, (ih + ph) // sh)
            for oh in range(first, last + 1):
                if not _tap(ih - (oh * sh - ph), kh, dh):
                    continue
                for ow in range(wo):
                    iw = indices[p, oh, ow] - row_start
                    if 0 <= iw < width and _tap(iw - (ow * sw - pw), kw, dw):
                        row[iw] += grad_out[p, oh, ow]


# --------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _sum_columns(buf, even, odd, out, p, oh, sw, kw, div, recip, sums):
    """out[p, oh, ow] = (sum over t < kw of buf[ow sw + t]) / div[ow].

    The window sums go to ``sums`` first (terms added left to right
    whatever the path), then one loop divides: a test of ``recip`` inside
    the summing loops kept them from vectorising.  With ``recip`` ``div``
    holds reciprocals and is multiplied (float32: two roundings instead of
    one, and a vector division costs as much as the rest of the row).
    With ``sw == 2`` ``even`` and ``odd``
    receive the de-interleaved buffer (see :func:`_max_columns`).
    """
    wo = out.shape[2]
    if sw == 2:
        _deinterleave(buf, even, odd)
        if kw == 3:
            for ow in range(wo):
                sums[ow] = (even[ow] + odd[ow]) + even[ow + 1]
        elif kw == 2:
            for ow in range(wo):
                sums[ow] = even[ow] + odd[ow]
        else:
            for ow in range(wo):
                sums[ow] = even[ow]
            for t in range(1, kw):
                tap = _phase_tap(even, odd, t)
                for ow in range(wo):
                    sums[ow] += tap[ow]
    elif sw == 1 and kw == 3:
        for ow in range(wo):
            sums[ow] = (buf[ow] + buf[ow + 1]) + buf[ow + 2]
    elif sw == 1 and kw == 2:
        for ow in range(wo):
            sums[ow] = buf[ow] + buf[ow + 1]
    else:
        for ow in range(wo):
            sums[ow] = buf[ow * sw]
        for t in range(1, kw):
            tap = buf[t:]
            if sw == 1:
                for ow in range(wo):
                    sums[ow] += tap[ow]
            else:
                for ow in range(wo):
                    sums[ow] += tap[ow * sw]
    row = out[p, oh]
    if recip:
        for ow in range(wo):
            row[ow] = sums[ow] * div[ow]
    else:
        for ow in range(wo):
            row[ow] = sums[ow] / div[ow]


def avg_pool(x, kh, kw, sh, sw, ph, pw, ho, wo, div_h, div_w):
    """Average pooling (separable), output ``sum / (div_h[oh] div_w[ow])``.

    ``div_h``/``div_w`` are float64 factors (with ``divisor_override`` the
    whole divisor is in ``div_h`` and ``div_w`` is ones).  Sums in the
    input's dtype; float32 multiplies by the divisor's reciprocal (computed
    in float64, rounded once).
    """
    out = np.empty((x.shape[0], ho, wo), dtype=x.dtype)
    _avg_pool_into(x, kh, kw, sh, sw, ph, pw, ho, wo, div_h, div_w, out)
    return out


@njit(parallel=True, cache=True)
def _avg_pool_into(x, kh, kw, sh, sw, ph, pw, ho, wo, div_h, div_w, out):
    n_planes, height, width = x.shape
    recip = out.itemsize == 4       # float32 output: multiply by 1 / div
    span = (wo - 1) * sw + kw
    cols = min(width, span - pw)
    half = wo + (kw - 1) // 2
    rows = n_planes * ho
    n_chunks = _n_chunks(rows)
    for chunk in prange(n_chunks):
        # Margins stay 0; one spare element for the stride-2 de-interleave.
        buf = _aligned_row_buffer(span + 1, pw, 0.0, x.dtype)
        even = np.empty(half, dtype=x.dtype)
        odd = np.empty(half, dtype=x.dtype)
        sums = np.empty(wo, dtype=x.dtype)
        div = np.empty(wo, dtype=x.dtype)
        div_row = np.nan            # div_h of the row div holds (none yet)
        inner = buf[pw:pw + cols]
        r0, r1 = _chunk_bounds(chunk, n_chunks, rows)
        for r in range(r0, r1):
            _prefetch_window(x, r + _PREFETCH_AHEAD, rows, ho, kh, sh, ph,
                             1, cols)
            p = r // ho
            oh = r - p * ho
            ih0 = oh * sh - ph
            t0, t1 = _valid_taps(ih0, kh, 1, height)
            if t1 == t0:
                for j in range(cols):
                    inner[j] = 0.0
            else:
                ih = ih0 + t0
                for j in range(cols):
                    inner[j] = x[p, ih, j]
                for t in range(t0 + 1, t1):
                    ih = ih0 + t
                    for j in range(cols):
                        inner[j] += x[p, ih, j]
            # The divisors change only at the borders: recompute (and
            # divide) only when this row's factor differs from the last.
            if div_h[oh] != div_row:
                div_row = div_h[oh]
                for ow in range(wo):
                    if recip:
                        div[ow] = 1.0 / (div_row * div_w[ow])
                    else:
                        div[ow] = div_row * div_w[ow]
            _sum_columns(buf, even, odd, out, p, oh, sw, kw, div, recip,
                         sums)


def avg_pool_backward(grad_out, height, width, kh, kw, sh, sw, ph, pw,
                      div_h, div_w):
    """Gradient of average pooling, gathered per input row.

    Input row ``ih`` receives ``grad_out[oh, ow] / divisor`` from every
    window containing it; each task owns one input row (no atomics) and
    walks the candidate output rows.  Accumulates in float64.
    """
    grad_in = np.empty((grad_out.shape[0], height, width),
                       dtype=grad_out.dtype)
    _avg_pool_backward_into(grad_out, height, width, kh, kw, sh, sw, ph, pw,
                            div_h, div_w, grad_in)
    return grad_in


@njit(parallel=True, cache=True)
def _avg_pool_backward_into(grad_out, height, width, kh, kw, sh, sw, ph, pw,
                            div_h, div_w, grad_in):
    n_planes, ho, wo = grad_out.shape
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


# --------------------------------------------------------------------------
# The backend contract (kernels._dispatch): one entry per pooling op
# --------------------------------------------------------------------------

def _run_max_pool(spec, x):
    return max_pool(x, *spec.geometry(), *spec.out_hw)


def _run_max_pool_with_indices(spec, x):
    return max_pool_with_indices(x, *spec.geometry(), *spec.out_hw)


def _run_max_pool_backward(spec, grad_out, x):
    return max_pool_backward(grad_out, x, *spec.geometry())


def _run_max_pool_backward_indices(spec, grad_out, indices):
    return max_pool_backward_indices(grad_out, indices, *spec.in_hw,
                                     *spec.geometry())


def _run_avg_pool(spec, x, div_h, div_w):
    kh, kw, sh, sw, ph, pw, _, _ = spec.geometry()
    return avg_pool(x, kh, kw, sh, sw, ph, pw, *spec.out_hw, div_h, div_w)


def _run_avg_pool_backward(spec, grad_out, div_h, div_w):
    kh, kw, sh, sw, ph, pw, _, _ = spec.geometry()
    return avg_pool_backward(grad_out, *spec.in_hw, kh, kw, sh, sw, ph, pw,
                             div_h, div_w)


def _run_global_avg_pool(spec, x):
    return global_avg_pool(x.reshape(x.shape[0], -1))


KERNELS = {
    ("max_pool2d", None): Kernel(_run_max_pool),
    ("max_pool2d_with_indices", None): Kernel(_run_max_pool_with_indices),
    ("max_pool2d_backward", None): Kernel(_run_max_pool_backward),
    ("max_pool2d_backward_indices", None): Kernel(_run_max_pool_backward_indices),
    ("avg_pool2d", None): Kernel(_run_avg_pool),
    ("avg_pool2d_backward", None): Kernel(_run_avg_pool_backward),
    ("global_avg_pool2d", None): Kernel(_run_global_avg_pool),
}
