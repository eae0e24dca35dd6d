"""Max and average pooling, forward and backward, as CUDA kernels.

The same seven operations, arguments and results as
:mod:`kernels.cpu.pooling` (``kernels._dispatch.POOLING_OPS``): the arrays
are stacks of planes ``x[p, h, w]`` (``p`` over the flattened batch and
channel axes; 1-D problems have ``H = 1``), the geometry comes from the
:class:`kernels._dispatch.PoolSpec` built by :mod:`kernels._pooling`, and
average pooling receives the float64 per-row / per-column divisor factors
``div_h``, ``div_w`` the front end computed (PyTorch's rule; with
``divisor_override`` all of it is in ``div_h``).

**How it works.**  Every kernel is a *gather*: each output element is
written by exactly one thread, which reads what it needs; there are no
atomics and no inter-thread communication except in global average
pooling's block reduction.

* Forward (``max_pool2d``, ``max_pool2d_with_indices``, ``avg_pool2d``):
  one thread per output element, a grid-stride loop over the ``P Ho Wo``
  outputs with ``ow`` fastest, so a warp writes 32 consecutive outputs and
  reads the input rows of its windows at stride ``sw`` (coalesced for
  ``sw = 1``, two or three cache lines per warp and row for ``sw = 2, 3``).
  The window's taps outside the input are skipped (``-inf`` padding for
  max, zeros for the average); no separate padding pass.
* Max backward with ``x`` (``max_pool2d_backward``): one thread per input
  element ``(ih, iw)``.  The output rows whose windows contain ``ih`` are
  ``oh`` in ``[ceil((ih + ph - (kh - 1) dh) / sh), floor((ih + ph) / sh)]``
  with ``(ih + ph - oh sh) % dh == 0`` (columns alike); for each such
  window the thread recomputes the argmax (same scan and tie rule as the
  forward with indices) and adds ``grad_out`` when it is this element.
  The recomputation reads ``kh kw`` elements per covering window, about
  ``(kh kw)^2 / (sh sw)`` loads per input element (36 for 3x3/2), served by
  L1/L2: the price of having no scatter and no atomics, and no index
  array in memory.
* Max backward with indices: the same covering windows; a window adds its
  ``grad_out`` when its stored index equals this element's ``ih W + iw``
  (an index that is not a tap of its own window, PyTorch's placeholder for
  a window with no input element, so never matches, as on the CPU).
* Average backward: the same gather, each covering window adding
  ``grad_out / (div_h[oh] div_w[ow])`` in float64, rounded once at the end.
* Global average pooling: one block per plane (grid-stride over planes);
  thread ``t`` sums the elements ``t, t + T, t + 2T, ...`` of the plane in
  float64, then the block adds the ``T`` partial sums with a fixed-shape
  tree in shared memory (``T = POOLING.reduce_threads``, a power of two),
  divides by ``H W`` and rounds once to the input's dtype.

Nothing is fused across operations: each op is one kernel launch (the
contract's ops are separate calls); within an op, padding, clipping of
``ceil_mode`` windows, divisors and the final rounding are fused into the
one pass.

**Semantics, bit for bit with the CPU backend.**  ``max_pool2d`` combines
the window the way the CPU's separable kernel does, column by column:
each window column is reduced over its rows, then the column maxima left
to right, with the NaN-propagating update ``if v > best or v != v`` (the
last NaN wins); so even the sign of a zero maximum and the payload of a
NaN match the CPU.  ``max_pool2d_with_indices`` scans the window row-major
with the same update, as the CPU does: the first maximum in window order
or the last NaN, index ``h W + w`` in the plane, and for a window holding
no input element (dilation gaps) PyTorch's placeholder, its first tap
position.  The backward kernels add their terms, for a given input
element, in increasing output row then column, starting from zero: the
order in which the CPU's kernels (``max_pool_backward_fused``,
``max_pool_backward_indices``, ``avg_pool_backward``) add to that element
too, so gradients are bitwise equal to the CPU's as well (max: sums in
the dtype; average: float64 then one rounding).  ``avg_pool2d`` sums like
the CPU (rows of a window column first, in the dtype, then the columns
left to right) and divides by ``div_h[oh] div_w[ow]`` (float64) or, for
float32, multiplies by that product's reciprocal rounded to float32:
also the CPU's sequence of operations.  No fastmath; only additions and
comparisons, so NVVM's FMA contraction cannot change a result.

**Determinism and accuracy.**  Every output is written by one thread
summing in a fixed order independent of the launch; results do not
depend on the block or grid size (except global average pooling's tree,
whose shape is fixed by ``POOLING.reduce_threads``).  Max pooling is
exact.  Average pooling keeps the CPU's bound ``|y - y_ref| <= (kh kw + 1)
u avg_pool(|x|)`` (:func:`kernels._pooling.avg_pool_error_constant`): the
same operations.  Global average pooling: a term passes through at most
``ceil(n / T) - 1`` sequential and ``log2 T`` tree additions, and only
additions of two non-zero partial sums round, so the float64 sum's error
is at most ``min(n - 1, ceil(n / T) - 1 + log2 T) u64 sum |x|`` (a
sequential sum: ``n - 1``; the CPU's four partial sums: ``n / 4 + 1``).
For float32 that is far below float32's ``u``: ``c = 2`` as on the CPU; for
float64 within ``c = H W + 1`` (:func:`kernels._pooling.
global_avg_pool_error_constant`).  Results equal the CPU's to within
these bounds, not bitwise (different summation order).

**Roofline (bytes per output, ``s`` = itemsize, compulsory DRAM traffic
assuming the input is read once and windows overlap in cache).**
Forward max/avg: ``s`` written plus ``sh sw s`` read (``H W / (Ho Wo)``
input elements per output; the ``kh kw`` window loads hit L1/L2), plus
16 bytes of divisors per output row/column for the average (cached);
with indices ``s + 8`` written.  Max backward with ``x``: per input
element ``s`` written, ``s`` of ``x`` and ``s / (sh sw)`` of ``grad_out``
read (L1/L2 traffic ``(kh kw)^2 / (sh sw)`` loads); with indices ``s``
written, ``(s + 8) / (sh sw)`` read.  Average backward: ``s`` written,
``s / (sh sw)`` read.  Global: ``H W s`` read per output.  Arithmetic
intensity is below one operation per byte everywhere: memory-bound.

**Launch shapes.**  The element kernels use ``POOLING.threads`` threads
per block and ``min(ceil(n / threads), POOLING.max_blocks)`` blocks with a
grid-stride loop; global average pooling ``POOLING.reduce_threads``
threads and ``min(P, POOLING.max_blocks)`` blocks.  No dynamic shared
memory; only the reduction's static ``reduce_threads`` float64 slots.
sm_90 (ptxas, float32 / float64): 36-80 registers per thread, no
spills, occupancy >= 37.5 % at 256 threads; integer ``%`` and runtime-step
``range`` (64-bit divisions) are kept out of the loops for that.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import types

from .._dispatch import Kernel
from ._runtime import ReportEntry, cuda, device_entry, grid, numba_type
from ._tuning import POOLING

__all__ = ["KERNELS", "REPORT"]

_THREADS = POOLING.threads
_MAX_BLOCKS = POOLING.max_blocks
_RTHREADS = POOLING.reduce_threads
if _RTHREADS < 1 or _RTHREADS & (_RTHREADS - 1):
    raise ValueError(f"POOLING.reduce_threads must be a power of two, got "
                     f"{_RTHREADS}")


# --------------------------------------------------------------------------
# Device functions shared by the kernels
# --------------------------------------------------------------------------

@cuda.jit(device=True, inline="always")
def _split(i, ho, wo):
    """Flat index over (P, Ho, Wo) -> (p, oh, ow)."""
    r = i // wo
    ow = i - r * wo
    p = r // ho
    return p, r - p * ho, ow


@cuda.jit(device=True, inline="always")
def _first_tap(start, d):
    """The first position ``start + t d >= 0`` (``start`` itself if >= 0).

    A loop of at most ``p / d + 1`` steps (``p <= k / 2``), not a 64-bit
    division, which costs registers in the backward kernel's loops."""
    while start < 0:
        start += d
    return start


@cuda.jit(device=True, inline="always")
def _window_argmax(x, p, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, neg_inf):
    """(value, flat index) of one max-pool window, row-major scan.

    PyTorch's (and the CPU backend's) rule: ``v > best or v != v``
    replaces, so the first maximum or the last NaN wins; a window without
    input elements answers ``-inf`` and its first tap position.
    """
    height = x.shape[1]
    width = x.shape[2]
    ih0 = oh * sh - ph
    iw0 = ow * sw - pw
    ih1 = min(ih0 + (kh - 1) * dh + 1, height)
    iw1 = min(iw0 + (kw - 1) * dw + 1, width)
    ih0 = _first_tap(ih0, dh)
    iw0 = _first_tap(iw0, dw)
    best = neg_inf
    best_index = ih0 * width + iw0
    # while, not range(a, b, step): a runtime step makes numba's range
    # divide for the trip count (64-bit, ~20 registers in the backward).
    ih = ih0
    while ih < ih1:
        iw = iw0
        while iw < iw1:
            v = x[p, ih, iw]
            if v > best or v != v:
                best = v
                best_index = ih * width + iw
            iw += dw
        ih += dh
    return best, best_index


@cuda.jit(device=True, inline="always")
def _covering(i, pad, k, s, d, n_out):
    """Range [lo, hi] of outputs along one axis whose window holds input
    position ``i`` (a tap only where ``(i + pad - o s) % d == 0``)."""
    top = i + pad
    lo = max(0, (top - (k - 1) * d + s - 1) // s)
    hi = min(n_out - 1, top // s)
    return lo, hi


@cuda.jit(device=True, inline="always")
def _offset_phase(offset, d):
    """``offset % d`` for ``0 <= offset <= (k - 1) d``, by subtraction (at
    most ``k - 1`` steps): a 64-bit ``%`` per output in the backward loops
    cost 12 registers per thread (87 against 75, max backward with
    indices, sm_90)."""
    while offset >= d:
        offset -= d
    return offset


@cuda.jit(device=True, inline="always")
def _next_phase(phase, step, d):
    """The phase of the next output's offset (``offset - s``), with
    ``step = s % d``."""
    phase -= step
    if phase < 0:
        phase += d
    return phase


# --------------------------------------------------------------------------
# Kernels (one factory per op, cached per dtype)
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def max_pool_kernel(dtype):
    """Max pooling, values only, one thread per output (CPU's order)."""
    neg_inf = np.dtype(dtype).type(-np.inf)

    @cuda.jit
    def max_pool(x, out, kh, kw, sh, sw, ph, pw, dh, dw):
        n_planes, ho, wo = out.shape
        height = x.shape[1]
        width = x.shape[2]
        n = n_planes * ho * wo
        i = cuda.grid(1)
        step = cuda.gridsize(1)
        while i < n:
            p, oh, ow = _split(i, ho, wo)
            ih0 = oh * sh - ph
            iw0 = ow * sw - pw
            best = neg_inf
            # Column maxima first, then across columns: the CPU's
            # separable order (same NaN and signed-zero winner).
            for tw in range(kw):
                iw = iw0 + tw * dw
                if 0 <= iw < width:
                    col = neg_inf
                    for th in range(kh):
                        ih = ih0 + th * dh
                        if 0 <= ih < height:
                            v = x[p, ih, iw]
                            if v > col or v != v:
                                col = v
                    if col > best or col != col:
                        best = col
            out[p, oh, ow] = best
            i += step

    return max_pool


@functools.lru_cache(maxsize=None)
def max_pool_indices_kernel(dtype):
    """Max pooling with int64 argmax indices, one thread per output."""
    neg_inf = np.dtype(dtype).type(-np.inf)

    @cuda.jit
    def max_pool_indices(x, out, indices, kh, kw, sh, sw, ph, pw, dh, dw):
        n_planes, ho, wo = out.shape
        n = n_planes * ho * wo
        i = cuda.grid(1)
        step = cuda.gridsize(1)
        while i < n:
            p, oh, ow = _split(i, ho, wo)
            v, k = _window_argmax(x, p, oh, ow, kh, kw, sh, sw, ph, pw, dh,
                                  dw, neg_inf)
            out[p, oh, ow] = v
            indices[p, oh, ow] = k
            i += step

    return max_pool_indices


def _max_backward_template(is_argmax, dtype):
    """The max-pool gradient gather: one thread per input element adds, in
    increasing output row then column, ``grad_out`` of every covering
    window for which ``is_argmax(src, p, oh, ow, me, ...)`` says that this
    element is the window's maximum (``src``: the input or the indices)."""
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def max_backward(grad_out, src, grad_in, kh, kw, sh, sw, ph, pw, dh, dw):
        n_planes, height, width = grad_in.shape
        ho = grad_out.shape[1]
        wo = grad_out.shape[2]
        n = n_planes * height * width
        step_h = sh % dh
        step_w = sw % dw
        i = cuda.grid(1)
        step = cuda.gridsize(1)
        while i < n:
            p, ih, iw = _split(i, height, width)
            me = ih * width + iw
            oh_lo, oh_hi = _covering(ih, ph, kh, sh, dh, ho)
            ow_lo, ow_hi = _covering(iw, pw, kw, sw, dw, wo)
            # Phase 0: ih (iw) is a tap of that output's window.
            phase_h = _offset_phase(ih + ph - oh_lo * sh, dh)
            phase_w0 = _offset_phase(iw + pw - ow_lo * sw, dw)
            acc = zero
            for oh in range(oh_lo, oh_hi + 1):
                if phase_h == 0:
                    phase_w = phase_w0
                    for ow in range(ow_lo, ow_hi + 1):
                        if phase_w == 0 and is_argmax(src, p, oh, ow, me, kh,
                                                      kw, sh, sw, ph, pw, dh,
                                                      dw):
                            acc += grad_out[p, oh, ow]
                        phase_w = _next_phase(phase_w, step_w, dw)
                phase_h = _next_phase(phase_h, step_h, dh)
            grad_in[p, ih, iw] = acc
            i += step

    return max_backward


@functools.lru_cache(maxsize=None)
def max_backward_kernel(dtype):
    """Max-pool gradient from ``x``: the window's argmax is recomputed
    (the forward's scan and tie rule)."""
    neg_inf = np.dtype(dtype).type(-np.inf)

    @cuda.jit(device=True, inline="always")
    def recomputed(x, p, oh, ow, me, kh, kw, sh, sw, ph, pw, dh, dw):
        _, k = _window_argmax(x, p, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw,
                              neg_inf)
        return k == me

    return _max_backward_template(recomputed, dtype)


@cuda.jit(device=True, inline="always")
def _stored(indices, p, oh, ow, me, kh, kw, sh, sw, ph, pw, dh, dw):
    return indices[p, oh, ow] == me


@functools.lru_cache(maxsize=None)
def max_backward_indices_kernel(dtype):
    """Max-pool gradient from the forward's stored indices."""
    return _max_backward_template(_stored, dtype)


@functools.lru_cache(maxsize=None)
def avg_pool_kernel(dtype):
    """Average pooling, one thread per output (CPU's order of operations)."""
    zero = np.dtype(dtype).type(0)
    nbtype = numba_type(dtype)
    reciprocal = np.dtype(dtype) == np.float32

    @cuda.jit
    def avg_pool(x, div_h, div_w, out, kh, kw, sh, sw, ph, pw):
        n_planes, ho, wo = out.shape
        height = x.shape[1]
        width = x.shape[2]
        n = n_planes * ho * wo
        i = cuda.grid(1)
        step = cuda.gridsize(1)
        while i < n:
            p, oh, ow = _split(i, ho, wo)
            ih0 = oh * sh - ph
            iw0 = ow * sw - pw
            th0 = max(0, -ih0)
            th1 = min(kh, height - ih0)
            total = zero
            for tw in range(kw):
                iw = iw0 + tw
                col = zero
                if 0 <= iw < width and th0 < th1:
                    # Rows of the column in the dtype, first row assigned
                    # (not added to 0): the CPU's row buffer.
                    col = x[p, ih0 + th0, iw]
                    for th in range(th0 + 1, th1):
                        col += x[p, ih0 + th, iw]
                if tw == 0:
                    total = col
                else:
                    total += col
            divisor = div_h[oh] * div_w[ow]
            if reciprocal:
                out[p, oh, ow] = total * nbtype(1.0 / divisor)
            else:
                out[p, oh, ow] = total / divisor
            i += step

    return avg_pool


@functools.lru_cache(maxsize=None)
def avg_backward_kernel(dtype):
    """Average-pool gradient, gathered per input element in float64."""

    @cuda.jit
    def avg_backward(grad_out, div_h, div_w, grad_in, kh, kw, sh, sw, ph,
                     pw):
        n_planes, height, width = grad_in.shape
        ho = grad_out.shape[1]
        wo = grad_out.shape[2]
        n = n_planes * height * width
        i = cuda.grid(1)
        step = cuda.gridsize(1)
        while i < n:
            p, ih, iw = _split(i, height, width)
            oh_lo, oh_hi = _covering(ih, ph, kh, sh, 1, ho)
            ow_lo, ow_hi = _covering(iw, pw, kw, sw, 1, wo)
            acc = 0.0
            for oh in range(oh_lo, oh_hi + 1):
                dv = div_h[oh]
                for ow in range(ow_lo, ow_hi + 1):
                    acc += types.float64(grad_out[p, oh, ow]) / (dv * div_w[ow])
            grad_in[p, ih, iw] = acc
            i += step

    return avg_backward


@functools.lru_cache(maxsize=None)
def global_avg_kernel(dtype):
    """Mean of each plane: one block per plane, float64 tree reduction."""

    @cuda.jit
    def global_avg(x, out):
        partial = cuda.shared.array(_RTHREADS, types.float64)
        n_planes, size = x.shape
        t = cuda.threadIdx.x
        p = cuda.blockIdx.x
        while p < n_planes:
            s = 0.0
            j = t
            while j < size:
                s += x[p, j]
                j += _RTHREADS
            partial[t] = s
            cuda.syncthreads()
            half = _RTHREADS // 2
            while half > 0:
                if t < half:
                    partial[t] += partial[t + half]
                cuda.syncthreads()
                half //= 2
            if t == 0:
                out[p] = partial[0] / size
            # partial[0] is read before the next plane overwrites it.
            cuda.syncthreads()
            p += cuda.gridDim.x

    return global_avg


# --------------------------------------------------------------------------
# Launch drivers
# --------------------------------------------------------------------------

def _blocks(n):
    """Grid of the grid-stride element kernels for ``n`` items."""
    return min(grid(n, _THREADS), _MAX_BLOCKS)


def _spec_geometry(spec):
    return tuple(int(v) for v in spec.geometry())


def _avg_geometry(spec):
    kh, kw, sh, sw, ph, pw, _, _ = _spec_geometry(spec)
    return kh, kw, sh, sw, ph, pw


# --------------------------------------------------------------------------
# The backend contract (kernels._dispatch): one entry per pooling op
# --------------------------------------------------------------------------

def _run_max_pool(spec, x, stream=0):
    out = cuda.device_array((x.shape[0],) + tuple(spec.out_hw), x.dtype,
                            stream=stream)
    kernel = max_pool_kernel(x.dtype)
    kernel[_blocks(out.size), _THREADS, stream](x, out, *_spec_geometry(spec))
    return out


def _run_max_pool_with_indices(spec, x, stream=0):
    shape = (x.shape[0],) + tuple(spec.out_hw)
    out = cuda.device_array(shape, x.dtype, stream=stream)
    indices = cuda.device_array(shape, np.int64, stream=stream)
    kernel = max_pool_indices_kernel(x.dtype)
    kernel[_blocks(out.size), _THREADS, stream](x, out, indices,
                                                *_spec_geometry(spec))
    return out, indices


def _run_max_pool_backward(spec, grad_out, x, stream=0):
    grad_in = cuda.device_array(x.shape, x.dtype, stream=stream)
    kernel = max_backward_kernel(x.dtype)
    kernel[_blocks(grad_in.size), _THREADS, stream](grad_out, x, grad_in,
                                                    *_spec_geometry(spec))
    return grad_in


def _run_max_pool_backward_indices(spec, grad_out, indices, stream=0):
    grad_in = cuda.device_array((grad_out.shape[0],) + tuple(spec.in_hw),
                                grad_out.dtype, stream=stream)
    kernel = max_backward_indices_kernel(grad_out.dtype)
    kernel[_blocks(grad_in.size), _THREADS, stream](grad_out, indices,
                                                    grad_in,
                                                    *_spec_geometry(spec))
    return grad_in


def _run_avg_pool(spec, x, div_h, div_w, stream=0):
    out = cuda.device_array((x.shape[0],) + tuple(spec.out_hw), x.dtype,
                            stream=stream)
    kernel = avg_pool_kernel(x.dtype)
    kernel[_blocks(out.size), _THREADS, stream](x, div_h, div_w, out,
                                                *_avg_geometry(spec))
    return out


def _run_avg_pool_backward(spec, grad_out, div_h, div_w, stream=0):
    grad_in = cuda.device_array((grad_out.shape[0],) + tuple(spec.in_hw),
                                grad_out.dtype, stream=stream)
    kernel = avg_backward_kernel(grad_out.dtype)
    kernel[_blocks(grad_in.size), _THREADS, stream](grad_out, div_h, div_w,
                                                    grad_in,
                                                    *_avg_geometry(spec))
    return grad_in


def _run_global_avg_pool(spec, x, stream=0):
    n_planes = x.shape[0]
    flat = x.reshape(n_planes, x.shape[1] * x.shape[2])
    out = cuda.device_array(n_planes, x.dtype, stream=stream)
    kernel = global_avg_kernel(x.dtype)
    kernel[min(n_planes, _MAX_BLOCKS), _RTHREADS, stream](flat, out)
    return out


KERNELS = {
    ("max_pool2d", None): Kernel(device_entry(_run_max_pool)),
    ("max_pool2d_with_indices", None):
        Kernel(device_entry(_run_max_pool_with_indices)),
    ("max_pool2d_backward", None):
        Kernel(device_entry(_run_max_pool_backward)),
    ("max_pool2d_backward_indices", None):
        Kernel(device_entry(_run_max_pool_backward_indices)),
    ("avg_pool2d", None): Kernel(device_entry(_run_avg_pool)),
    ("avg_pool2d_backward", None):
        Kernel(device_entry(_run_avg_pool_backward)),
    ("global_avg_pool2d", None): Kernel(device_entry(_run_global_avg_pool)),
}


# --------------------------------------------------------------------------
# What the compilation report builds
# --------------------------------------------------------------------------

def _planes_t(dtype):
    return numba_type(dtype)[:, :, ::1]


_INT8 = (types.int64,) * 8
_INT6 = (types.int64,) * 6
_DIV = types.float64[::1]
_IDX = types.int64[:, :, ::1]


def _sig_max_pool(dtype):
    a = _planes_t(dtype)
    return (a, a) + _INT8


def _sig_max_pool_indices(dtype):
    a = _planes_t(dtype)
    return (a, a, _IDX) + _INT8


def _sig_max_backward(dtype):
    a = _planes_t(dtype)
    return (a, a, a) + _INT8


def _sig_max_backward_indices(dtype):
    a = _planes_t(dtype)
    return (a, _IDX, a) + _INT8


def _sig_avg_pool(dtype):
    a = _planes_t(dtype)
    return (a, _DIV, _DIV, a) + _INT6


def _sig_avg_backward(dtype):
    a = _planes_t(dtype)
    return (a, _DIV, _DIV, a) + _INT6


def _sig_global_avg(dtype):
    t = numba_type(dtype)
    return (t[:, ::1], t[::1])


REPORT = [
    ReportEntry("pooling", "max_pool", max_pool_kernel, _sig_max_pool,
                _THREADS),
    ReportEntry("pooling", "max_pool_indices", max_pool_indices_kernel,
                _sig_max_pool_indices, _THREADS),
    ReportEntry("pooling", "max_backward", max_backward_kernel,
                _sig_max_backward, _THREADS),
    ReportEntry("pooling", "max_backward_indices",
                max_backward_indices_kernel, _sig_max_backward_indices,
                _THREADS),
    ReportEntry("pooling", "avg_pool", avg_pool_kernel, _sig_avg_pool,
                _THREADS),
    ReportEntry("pooling", "avg_backward", avg_backward_kernel,
                _sig_avg_backward, _THREADS),
    ReportEntry("pooling", "global_avg", global_avg_kernel, _sig_global_avg,
                _RTHREADS,
                note="one block per plane, float64 shared-memory tree"),
]
