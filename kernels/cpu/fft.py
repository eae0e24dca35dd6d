"""FFT convolution: transform, per-frequency GEMM, inverse transform.

A convolution layer (cross-correlation, as ``torch.nn.functional.conv2d``)
is computed in four stages, each its own function so that it can be tested
against the ``numpy.fft`` definitions:

1. :func:`input_spectra`  gathers zero-padded, possibly overlapping input
   tiles and real-to-complex transforms them (pyFFTW): ``X[f, m, c]``.
2. :func:`weight_spectra` transforms the filters once: ``W[f, c, k]``
   (cached across calls, see below).
3. :func:`contract` multiplies per frequency, ``Y[f] = X[f] @ W[f]`` (one
   small complex GEMM per frequency ``f``, block-diagonal with groups).
4. :func:`inverse` transforms ``Y`` back and scatters the valid part of
   every tile into the output, adding the bias.

Correlation by circular correlation.  Along one axis, for an input window
``x[0 : t]`` and a kernel ``w[0 : q]``, the circular correlation of length
``t`` equals the linear one at the ``b = t - q + 1`` positions ``0 .. b-1``
(none of them wraps around), so a transform of length ``t`` suffices for
``b`` outputs.  The kernel is stored circularly reversed
(``w_rev[-a mod t] = w[a]``), whose spectrum is ``conj(W)``, so the
frequency-domain product is a plain product (no conjugation pass), and the
``1 / (t0 t1)`` of the inverse transform is folded into the weights.

Tiling is overlap-save: the (stride-1) output is cut into blocks of
``b0 x b1``; tile ``(i, j)`` reads the input window starting at
``(i b0, j b1)`` of size ``t0 x t1`` (windows overlap by ``q - 1``, outputs
do not).  One tile covering the whole image is the untiled FFT
convolution.  :func:`choose_tile` picks ``(t0, t1)`` with a cost model.

Stride by polyphase decomposition, dilation by zero insertion.  A
stride-``s`` correlation with the (dilated) kernel ``wd`` of extent
``e = d (k - 1) + 1`` splits into ``s`` stride-1 correlations of the phase
signals ``x_r[j] = x[j s + r]`` with the phase kernels
``w_r[q] = wd[q s + r]``, summed over ``r``.  The phases become extra input
channels (channel ``c`` turns into ``(c, r0, r1)``), so the contraction sums
them for free and only the needed outputs are ever transformed back.
Phases whose kernel is all zero (dilation a multiple of a stride factor)
are dropped.

Weight-spectrum cache: :func:`conv2d` keeps the spectra of recently used
filters, keyed on the filter array's data pointer, shape, strides, dtype
and the transform geometry.  A hit is only accepted when a stored copy of
the filter is bit-for-bit equal to the array passed now, so modifying the
filter in place, or passing another array that happens to reuse the same
memory, can never return stale spectra (the comparison costs one pass over
``w``, negligible next to the transforms).  :func:`clear_caches` empties it.

FFT lengths: :func:`fast_length` returns the smallest ``2**a * m >= n``
with odd part ``m`` in ``{1, 3, 5, 7, 9}``.  Measured with pyFFTW (2-D
real transforms, FFTW_MEASURE, 120 random sizes 40..1500) against the
fastest length >= n: this rule is on average 1.08x slower than the best
(worst 1.44x), while 2^a 3^b gives 1.30x (worst 3.8x, odd parts 27, 81,
243 are slow), 7-smooth 1.33x and 5-smooth (``scipy.fft.next_fast_len``)
1.27x (worst 2.9x: 1125 = 3^2 5^3, 1215 = 3^5 5 are slow).

Threads: pyFFTW transforms use ``numba.get_num_threads()`` threads when
a transform batch is large enough to pay for waking them (see
``_MIN_WORK_PER_THREAD``), else one; the contraction uses BLAS (its own
threads) or a Numba ``prange`` over frequencies.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

import numba
import numpy as np
import pyfftw
from numpy.lib.stride_tricks import as_strided
from numba import njit, prange

__all__ = [
    "conv2d", "unsupported_reason", "fast_length", "FFTGeometry",
    "plan_geometry", "choose_tile", "input_spectra", "weight_spectra",
    "cached_weight_spectra", "contract", "inverse", "clear_caches",
    "cache_info", "PLANNER_EFFORT", "Chunk", "chunks", "padded_input",
]

# --------------------------------------------------------------------------
# FFT lengths
# --------------------------------------------------------------------------

# Odd parts m of the lengths 2**a * m that FFTW transforms fast (see the
# module docstring for the measurement behind this choice).
FAST_ODD_PARTS = (1, 3, 5, 7, 9)


def fast_length(n):
    """Smallest ``L >= n`` of the form ``2**a * m`` with ``m`` in {1,3,5,7,9}.

    Parameters
    ----------
    n : int, >= 1

    Returns
    -------
    int
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    best = None
    for m in FAST_ODD_PARTS:
        length = m
        while length < n:
            length *= 2
        if best is None or length < best:
            best = length
    return best


def _fast_lengths_between(lo, hi):
    """All fast lengths L with lo <= L <= hi, ascending."""
    out = set()
    for m in FAST_ODD_PARTS:
        length = m
        while length <= hi:
            if length >= lo:
                out.add(length)
            length *= 2
    return sorted(out)


# --------------------------------------------------------------------------
# Geometry: polyphase split, tiles
# --------------------------------------------------------------------------

class AxisGeometry(NamedTuple):
    """How one spatial axis is cut into transform tiles."""

    size: int          # input length (without padding)
    pad_lo: int        # zeros before the input
    stride: int
    out: int           # output length
    residues: tuple    # kept input phases r (0 <= r < stride), ascending
    taps_phase: tuple  # for every kernel tap a: index of its phase in residues
    taps_q: tuple      # for every kernel tap a: position q in its phase kernel
    kq: int            # length of the phase kernels
    t: int             # transform length
    b: int             # outputs per tile
    tiles: int         # number of tiles


def _axis_phases(k, dilation, stride):
    """Residues of the dilated taps mod stride, and each tap's (phase, q)."""
    offsets = [a * dilation for a in range(k)]
    residues = tuple(sorted({e % stride for e in offsets}))
    where = {r: i for i, r in enumerate(residues)}
    taps_phase = tuple(where[e % stride] for e in offsets)
    taps_q = tuple(e // stride for e in offsets)
    kq = max(taps_q) + 1
    return residues, taps_phase, taps_q, kq


def _axis_geometry(size, pad_lo, pad_hi, k, dilation, stride, t=None):
    extent = dilation * (k - 1) + 1
    out = (size + pad_lo + pad_hi - extent) // stride + 1
    residues, taps_phase, taps_q, kq = _axis_phases(k, dilation, stride)
    single = fast_length(out + kq - 1)
    if t is None or t >= single:
        t, b = single, out
    else:
        if t < kq:
            raise ValueError(f"tile length {t} is shorter than the phase "
                             f"kernel ({kq})")
        b = t - kq + 1
    tiles = -(-out // b)
    return AxisGeometry(size, pad_lo, stride, out, residues, taps_phase,
                        taps_q, kq, t, b, tiles)


class FFTGeometry(NamedTuple):
    """Everything the stages need to know about one problem."""

    n: int              # batch
    c: int              # input channels
    k: int              # output channels
    groups: int
    cg: int             # input channels per group (before the phase split)
    rows: AxisGeometry  # H axis
    cols: AxisGeometry  # W axis
    dtype: np.dtype

    @property
    def phases(self):
        return len(self.rows.residues) * len(self.cols.residues)

    @property
    def channels(self):
        """Input channels after the phase split, C * phases."""
        return self.c * self.phases

    @property
    def channels_per_group(self):
        return self.cg * self.phases

    @property
    def tiles(self):
        """Tiles of one image."""
        return self.rows.tiles * self.cols.tiles

    @property
    def m(self):
        """Rows of the per-frequency GEMM: tiles of the whole batch."""
        return self.n * self.tiles

    @property
    def tile_shape(self):
        return (self.rows.t, self.cols.t)

    @property
    def spectrum_shape(self):
        return (self.rows.t, self.cols.t // 2 + 1)

    @property
    def out_shape(self):
        return (self.n, self.k, self.rows.out, self.cols.out)

    @property
    def complex_dtype(self):
        return np.dtype(np.complex64 if self.dtype == np.float32
                        else np.complex128)

    def weight_key(self):
        """What the weight spectra depend on, besides the weights."""
        return (self.rows.t, self.cols.t, self.rows.residues,
                self.cols.residues, self.rows.taps_phase, self.rows.taps_q,
                self.cols.taps_phase, self.cols.taps_q, self.groups)


def plan_geometry(x_shape, w_shape, stride, padding, dilation, groups,
                  dtype=np.float32, tile=None):
    """Cut a normalised problem into transform tiles.

    Parameters
    ----------
    x_shape, w_shape : (N, C, H, W), (K, C // groups, kH, kW)
    stride, dilation : (sh, sw), (dh, dw)
    padding : (top, bottom, left, right)
    groups : int
    dtype : float32 or float64
    tile : (t0, t1), optional
        Transform lengths; a length at least the whole (padded) axis means
        one tile along it.  Default: :func:`choose_tile`.

    Returns
    -------
    FFTGeometry
    """
    n, c, h, w = x_shape
    k, cg, kh, kw = w_shape
    if tile is None:
        tile = choose_tile(x_shape, w_shape, stride, padding, dilation, groups)
    rows = _axis_geometry(h, padding[0], padding[1], kh, dilation[0],
                          stride[0], tile[0])
    cols = _axis_geometry(w, padding[2], padding[3], kw, dilation[1],
                          stride[1], tile[1])
    return FFTGeometry(n, c, k, groups, cg, rows, cols, np.dtype(dtype))


# --------------------------------------------------------------------------
# Cost model for the tile size
# --------------------------------------------------------------------------

# Seconds per unit, measured on the development machine (AMD EPYC, AVX-512,
# float32); only their ratios matter for the choice.
_SEC_PER_FFT_FLOP = 0.15e-9   # per n log2 n of a real transform of n points
_SEC_PER_CMAC_BLAS = 0.25e-9  # complex multiply-add inside a BLAS GEMM
_SEC_PER_CMAC_LOOP = 1.0e-9   # complex multiply-add in the small-GEMM loop
_SEC_PER_BYTE = 0.08e-9       # streaming a spectrum or a tile buffer once
_SEC_PER_TILE = 0.3e-6        # per tile and channel: loop set-up, gathers


def _fft_cost(t0, t1):
    points = t0 * t1
    return points * np.log2(np.maximum(points, 2))


def _model_time(n, c_in, cg_in, k, t0, t1, kq0, kq1, out0, out1, itemsize):
    """Modelled seconds of the FFT convolution with tiles t0 x t1 (arrays)."""
    single0 = t0 >= out0 + kq0 - 1
    single1 = t1 >= out1 + kq1 - 1
    b0 = np.where(single0, out0, t0 - kq0 + 1)
    b1 = np.where(single1, out1, t1 - kq1 + 1)
    tiles = np.ceil(out0 / b0) * np.ceil(out1 / b1)
    m = n * tiles
    freqs = t0 * (t1 // 2 + 1)
    fft = _fft_cost(t0, t1) * _SEC_PER_FFT_FLOP
    transforms = (m * c_in + k * cg_in + m * k) * fft
    cmacs = freqs * m * cg_in * k
    per_cmac = np.where(cg_in * k >= 64, _SEC_PER_CMAC_BLAS, _SEC_PER_CMAC_LOOP)
    contraction = cmacs * per_cmac
    csize = 2 * itemsize
    spectra = freqs * (m * c_in + cg_in * k + m * k) * csize
    real = t0 * t1 * (m * c_in + m * k) * itemsize
    traffic = (2 * spectra + real) * _SEC_PER_BYTE
    overhead = m * (c_in + k) * _SEC_PER_TILE
    return transforms + contraction + traffic + overhead


def _tile_candidates(out, kq):
    single = fast_length(out + kq - 1)
    lo = max(kq, 2) if single > 1 else 1
    cands = [t for t in _fast_lengths_between(lo, single) if t - kq + 1 >= 1]
    return np.array(cands or [single])


def choose_tile(x_shape, w_shape, stride, padding, dilation, groups,
                itemsize=4):
    """Transform lengths ``(t0, t1)`` minimising the cost model.

    The model adds the FFT flops (``t log t`` per tile and channel, for the
    input, weight and inverse transforms), the contraction's complex
    multiply-adds, a memory-traffic term (spectra written and read once,
    tiles gathered and scattered), and a per-tile overhead, each with a
    constant measured on the development machine.  Many channels favour
    small tiles (the contraction and the spectra grow with the tile area
    per output, the weight transforms with the tile area); one channel
    favours large tiles (fewer redundant overlaps).
    """
    return _choose_tile_cached(tuple(x_shape), tuple(w_shape), tuple(stride),
                               tuple(padding), tuple(dilation), int(groups),
                               int(itemsize))


_TILE_CACHE = OrderedDict()


def _choose_tile_cached(x_shape, w_shape, stride, padding, dilation, groups,
                        itemsize):
    key = (x_shape, w_shape, stride, padding, dilation, groups, itemsize)
    hit = _TILE_CACHE.get(key)
    if hit is not None:
        return hit
    n, c, h, w = x_shape
    k, cg, kh, kw = w_shape
    g_rows = _axis_geometry(h, padding[0], padding[1], kh, dilation[0],
                            stride[0])
    g_cols = _axis_geometry(w, padding[2], padding[3], kw, dilation[1],
                            stride[1])
    ph = len(g_rows.residues) * len(g_cols.residues)
    t0 = _tile_candidates(g_rows.out, g_rows.kq)[:, None]
    t1 = _tile_candidates(g_cols.out, g_cols.kq)[None, :]
    cost = _model_time(n, c * ph, cg * ph, k, t0, t1, g_rows.kq, g_cols.kq,
                       g_rows.out, g_cols.out, itemsize)
    i, j = np.unravel_index(np.argmin(cost), cost.shape)
    result = (int(t0[i, 0]), int(t1[0, j]))
    if len(_TILE_CACHE) > 1024:
        _TILE_CACHE.popitem(last=False)
    _TILE_CACHE[key] = result
    return result


# --------------------------------------------------------------------------
# pyFFTW plans
# --------------------------------------------------------------------------

# "FFTW_MEASURE" or "FFTW_ESTIMATE"; see the README for the measurement.
PLANNER_EFFORT = "FFTW_ESTIMATE"

# Below this many real points per thread a transform runs on one thread:
# waking a sleeping thread (OMP_WAIT_POLICY=PASSIVE) costs more.
_MIN_POINTS_PER_THREAD = 1 << 16

_PLAN_CACHE_SIZE = 64
_plans = OrderedDict()
_plans_lock = threading.Lock()


class _Plan:
    """A pyFFTW plan, executed on new arrays of the planned layout."""

    def __init__(self, fftw):
        self.fftw = fftw
        self.lock = threading.Lock()

    def __call__(self, src, dst):
        with self.lock:
            self.fftw.update_arrays(src, dst)
            self.fftw.execute()


def _threads_for(points):
    threads = numba.get_num_threads()
    return int(max(1, min(threads, points // _MIN_POINTS_PER_THREAD)))


def _empty(shape, dtype):
    return pyfftw.empty_aligned(shape, dtype=dtype)


def _layout(a):
    aligned = a.ctypes.data % pyfftw.simd_alignment == 0
    return (a.shape, a.strides, a.dtype.str, aligned)


def _plan(src, dst, axes, direction, scratch=None):
    """Cached plan transforming ``src`` into ``dst`` along ``axes``.

    Plans are keyed on the arrays' shapes, strides, dtypes and alignment,
    the axes, the direction, the thread count and the planner effort.  A
    new plan is made on the arrays returned by ``scratch()`` (same layout)
    or, without it, on ``src`` and ``dst`` themselves: FFTW_MEASURE
    overwrites them, so callers without ``scratch`` plan before filling.
    """
    real = src if src.dtype.kind == "f" else dst
    threads = _threads_for(real.size)
    key = (_layout(src), _layout(dst), tuple(axes), direction, threads,
           PLANNER_EFFORT)
    with _plans_lock:
        plan = _plans.get(key)
        if plan is not None:
            _plans.move_to_end(key)
            return plan
    flags = (PLANNER_EFFORT, "FFTW_DESTROY_INPUT")
    if scratch is not None:
        src, dst = scratch()
    fftw = pyfftw.FFTW(src, dst, axes=tuple(axes), direction=direction,
                       flags=flags, threads=threads)
    plan = _Plan(fftw)
    with _plans_lock:
        _plans[key] = plan
        while len(_plans) > _PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


def _spectrum_buffer(batch, tile, cdtype):
    """Complex buffer laid out (F0, F1h, *batch), and its (*batch, F0, F1h) view."""
    t0, t1 = tile
    buf = _empty((t0, t1 // 2 + 1) + tuple(batch), cdtype)
    nb = len(batch)
    return buf, buf.transpose(tuple(range(2, 2 + nb)) + (0, 1))


def _transform_axes(nbatch, tile):
    """Axes of a (*batch, t0, t1) array to transform (1-D when t0 == 1)."""
    return (nbatch + 1,) if tile[0] == 1 else (nbatch, nbatch + 1)


# --------------------------------------------------------------------------
# Numba kernels: gather tiles, scatter tiles, small per-frequency GEMMs
# --------------------------------------------------------------------------

# Rows of a tile handled by one parallel task: enough to amortise the
# index arithmetic (integer divisions) of a task, few enough that one big
# tile still gives every thread work.
_ROWS_PER_TASK = 32


@njit(parallel=True, cache=True)
def _gather_tiles(x, out, m0, tiles0, tiles1, b0, b1, s0, s1, lo0, lo1,
                  res0, res1):
    """out[mm, (c, p0, p1), u, v] = xpad[n, c, (i b0 + u) s0 + r0, (j b1 + v) s1 + r1].

    Tile m = m0 + mm is (n, i, j) in C order over (N, tiles0, tiles1);
    positions outside the input read zero (the padding).  One parallel task
    fills a block of rows of one tile in every channel.
    """
    nm, cp, t0, t1 = out.shape
    h, w = x.shape[2], x.shape[3]
    p0n, p1n = res0.size, res1.size
    blocks = (t0 + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for task in prange(nm * blocks):
        blk = task % blocks
        mm = task // blocks
        m = m0 + mm
        n = m // (tiles0 * tiles1)
        i = (m // tiles1) % tiles0
        j = m % tiles1
        u_begin = blk * _ROWS_PER_TASK
        u_end = min(t0, u_begin + _ROWS_PER_TASK)
        for ch in range(cp):
            p1 = ch % p1n
            p0 = (ch // p1n) % p0n
            c = ch // (p1n * p0n)
            # Columns: valid v satisfy 0 <= base + v s1 <= w - 1.
            base = j * b1 * s1 + res1[p1] - lo1
            v_lo = 0
            if base < 0:
                v_lo = min(t1, (-base + s1 - 1) // s1)
            v_hi = t1
            if base + (t1 - 1) * s1 > w - 1:
                v_hi = (w - 1 - base) // s1 + 1 if w - 1 - base >= 0 else 0
            v_hi = max(v_hi, v_lo)
            row0 = (i * b0) * s0 + res0[p0] - lo0
            for u in range(u_begin, u_end):
                src_row = row0 + u * s0
                # Loops over 1-D views indexed by the loop counter: slice
                # assignment and 4-D indexing with computed offsets
                # measured several times slower.
                dst = out[mm, ch, u]
                if src_row < 0 or src_row >= h:
                    for v in range(t1):
                        dst[v] = 0
                    continue
                for v in range(v_lo):
                    dst[v] = 0
                part = dst[v_lo:v_hi]
                if s1 == 1:
                    src = x[n, c, src_row, base + v_lo:base + v_hi]
                    for v in range(v_hi - v_lo):
                        part[v] = src[v]
                else:
                    src = x[n, c, src_row, base + v_lo * s1::s1]
                    for v in range(v_hi - v_lo):
                        part[v] = src[v]
                tail = dst[v_hi:]
                for v in range(t1 - v_hi):
                    tail[v] = 0


@njit(parallel=True, cache=True)
def _scatter_tiles(z, y, bias, m0, tiles0, tiles1, b0, b1):
    """y[n, k, i b0 + u, j b1 + v] = z[mm, k, u, v] + bias[k] (valid part).

    One parallel task writes a block of rows of one tile in every channel.
    """
    nm, k_out = z.shape[0], z.shape[1]
    ho, wo = y.shape[2], y.shape[3]
    blocks = (b0 + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for task in prange(nm * blocks):
        blk = task % blocks
        mm = task // blocks
        m = m0 + mm
        n = m // (tiles0 * tiles1)
        i = (m // tiles1) % tiles0
        j = m % tiles1
        ox = j * b1
        width = min(b1, wo - ox)
        u_begin = blk * _ROWS_PER_TASK
        u_end = min(b0, u_begin + _ROWS_PER_TASK, ho - i * b0)
        for k in range(k_out):
            bk = bias[k]
            for u in range(u_begin, u_end):
                # 1-D views indexed by the loop counter (see _gather_tiles).
                src = z[mm, k, u]
                dst = y[n, k, i * b0 + u, ox:ox + width]
                for v in range(width):
                    dst[v] = src[v] + bk


# Complex multiply-adds per parallel task of the contraction loops: a
# prange over single frequencies of tiny GEMMs measured 5x slower than
# blocks of frequencies.
_CMACS_PER_TASK = 4096


@njit(parallel=True, cache=True)
def _contract_loops(x, w, y, nm, cp, cgp, k_out, groups, per_task):
    """y[f, m, g Kg + kk] = sum_c x[f, m, g Cg + c] w[f, c, g Kg + kk].

    x (F M C'), w (F Cg' K), y (F M K) are flat complex arrays viewed as
    float pairs (Numba's complex arithmetic in these loops measured 3x
    slower).  Parallel over blocks of ``per_task`` frequencies, each task
    writing its own y[f]; the innermost loop runs along k, contiguous in w
    and y.
    """
    kg = k_out // groups
    nf = x.size // (2 * nm * cp)
    for blk in prange((nf + per_task - 1) // per_task):
        for f in range(blk * per_task, min(nf, (blk + 1) * per_task)):
            xo = 2 * f * nm * cp
            wo = 2 * f * cgp * k_out
            yo = 2 * f * nm * k_out
            for m in range(nm):
                ym = y[yo + 2 * m * k_out:yo + 2 * (m + 1) * k_out]
                for k in range(2 * k_out):
                    ym[k] = 0
                for g in range(groups):
                    yg = ym[2 * g * kg:2 * (g + 1) * kg]
                    for c in range(cgp):
                        xc = xo + 2 * (m * cp + g * cgp + c)
                        ar = x[xc]
                        ai = x[xc + 1]
                        wc0 = wo + 2 * (c * k_out + g * kg)
                        wc = w[wc0:wc0 + 2 * kg]
                        for kk in range(kg):
                            br = wc[2 * kk]
                            bi = wc[2 * kk + 1]
                            yg[2 * kk] += ar * br - ai * bi
                            yg[2 * kk + 1] += ar * bi + ai * br


@njit(parallel=True, cache=True)
def _multiply(x, w, y, per_task):
    """y = x * w, flat complex arrays of one length."""
    n = x.size
    for blk in prange((n + per_task - 1) // per_task):
        for i in range(blk * per_task, min(n, (blk + 1) * per_task)):
            y[i] = x[i] * w[i]


@njit(parallel=True, cache=True)
def _multiply_broadcast(x, w, y, nm, groups, per_task):
    """y[f, m, g] = x[f, m, g] w[f, g]: one channel in and out per group."""
    nf = w.size // groups
    for blk in prange((nf + per_task - 1) // per_task):
        for f in range(blk * per_task, min(nf, (blk + 1) * per_task)):
            wf = w[f * groups:(f + 1) * groups]
            xf = x[f * nm * groups:(f + 1) * nm * groups]
            yf = y[f * nm * groups:(f + 1) * nm * groups]
            for m in range(nm):
                for g in range(groups):
                    yf[m * groups + g] = xf[m * groups + g] * wf[g]


# --------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------

class Chunk(NamedTuple):
    """Tiles transformed together: whole images, or rows of tiles of one."""

    n0: int       # first image
    images: int   # images in the chunk
    i0: int       # first row of tiles (0 when images > 1)
    rows: int     # rows of tiles per image

    def m0(self, geom):
        """Index of the chunk's first tile in (N, tiles_rows, tiles_cols) order."""
        return (self.n0 * geom.rows.tiles + self.i0) * geom.cols.tiles

    def tiles(self, geom):
        return self.images * self.rows * geom.cols.tiles


def whole_batch(geom):
    return Chunk(0, geom.n, 0, geom.rows.tiles)


# Row starts of the padded input are multiples of this many bytes, so that
# every chunk of it is as aligned as the one its plan was made for.
_ROW_ALIGN_BYTES = 64


def padded_input(x, geom):
    """Zero-padded, phase-split input covering every tile.

    Returns
    -------
    xpad : ndarray (N, C * phases, Hq, Wq)
        ``xpad[n, (c, p0, p1), u, v] = x[n, c, u s0 + r0 - top, v s1 + r1 - left]``
        (zero outside ``x``), with ``Hq >= (tiles_rows - 1) b0 + t0`` and
        ``Wq`` that plus alignment slack.
    """
    rows, cols = geom.rows, geom.cols
    hq = (rows.tiles - 1) * rows.b + rows.t
    wq = (cols.tiles - 1) * cols.b + cols.t
    per_row = _ROW_ALIGN_BYTES // geom.dtype.itemsize
    wq = -(-wq // per_row) * per_row
    xpad = _empty((geom.n, geom.channels, hq, wq), geom.dtype)
    _gather_tiles(x, xpad, 0, 1, 1, 0, 0, rows.stride, cols.stride,
                  rows.pad_lo, cols.pad_lo, np.array(rows.residues, np.int64),
                  np.array(cols.residues, np.int64))
    return xpad


def _tile_view(xpad, geom, chunk):
    """(images, rows, tiles_cols, C', t0, t1) overlapping view of xpad."""
    rows, cols = geom.rows, geom.cols
    sn, sc, sh, sw = xpad.strides
    base = xpad[chunk.n0:chunk.n0 + chunk.images, :, chunk.i0 * rows.b:]
    return as_strided(base, (chunk.images, chunk.rows, cols.tiles,
                             geom.channels, rows.t, cols.t),
                      (sn, rows.b * sh, cols.b * sw, sc, sh, sw),
                      writeable=False)


def input_spectra(x, geom, chunk=None, xpad=None):
    """Spectra of the input tiles of ``chunk`` (default: all).

    Parameters
    ----------
    x : ndarray (N, C, H, W), C-contiguous
    geom : FFTGeometry
    chunk : Chunk, optional
    xpad : ndarray, optional
        :func:`padded_input` of ``x``, when already computed.

    Returns
    -------
    X : complex ndarray (F0, F1h, Mc, C * phases)
        ``X[:, :, mm, (c, p0, p1)]`` is ``numpy.fft.rfft2`` of the ``t0 x t1``
        window of the padded, phase-split input read by tile
        ``m0 + mm`` (tile ``(n, i, j)`` starts at row ``i b0``, column
        ``j b1``), with ``F0 = t0`` and ``F1h = t1 // 2 + 1``.
    """
    if chunk is None:
        chunk = whole_batch(geom)
    batch = (chunk.images, chunk.rows, geom.cols.tiles, geom.channels)
    buf, spec = _spectrum_buffer(batch, geom.tile_shape, geom.complex_dtype)
    if xpad is None:
        xpad = padded_input(x, geom)
    tiles = _tile_view(xpad, geom, chunk)

    def scratch():
        return (_tile_view(_empty(xpad.shape, xpad.dtype), geom, chunk),
                _spectrum_buffer(batch, geom.tile_shape,
                                 geom.complex_dtype)[1])

    # FFTW reads the overlapping tiles in place: its out-of-place
    # real-to-complex transforms never write their input (FFTW docs,
    # "Planner Flags": DESTROY_INPUT only affects c2r).
    plan = _plan(tiles, spec, _transform_axes(4, geom.tile_shape),
                 "FFTW_FORWARD", scratch)
    plan(tiles, spec)
    mc = chunk.tiles(geom)
    return buf.reshape(geom.spectrum_shape + (mc, geom.channels))


def _phase_kernels(w, geom):
    """(K, Cg * phases, kq0, kq1): the dilated filters split into phases."""
    rows, cols = geom.rows, geom.cols
    k, cg = w.shape[:2]
    p0n, p1n = len(rows.residues), len(cols.residues)
    wp = np.zeros((k, cg, p0n, p1n, rows.kq, cols.kq), dtype=w.dtype)
    ph0 = np.array(rows.taps_phase)[:, None]
    q0 = np.array(rows.taps_q)[:, None]
    ph1 = np.array(cols.taps_phase)[None, :]
    q1 = np.array(cols.taps_q)[None, :]
    wp[:, :, ph0, ph1, q0, q1] = w
    return wp.reshape(k, cg * p0n * p1n, rows.kq, cols.kq)


def weight_spectra(w, geom):
    """Spectra of the circularly reversed, scaled filters.

    Parameters
    ----------
    w : ndarray (K, C // groups, kH, kW)
    geom : FFTGeometry

    Returns
    -------
    W : complex ndarray (F0, F1h, Cg * phases, K)
        ``conj(rfft2(w_phase, (t0, t1))) / (t0 t1)`` of every phase-split
        filter: the factor that turns the product with an input spectrum
        into the spectrum of the circular cross-correlation, the inverse
        transform's normalisation included.

    Notes
    -----
    Only ``kq0`` of the ``t0`` rows of a padded filter are non-zero, so the
    row transforms run on those rows only, and the column transforms
    (complex, along axis 0) on the result: about half the work of a full
    2-D transform when the filter is much smaller than the tile.
    """
    t0, t1 = geom.tile_shape
    f1 = t1 // 2 + 1
    wp = _phase_kernels(w, geom) * (1.0 / (t0 * t1))
    k, cgp, kq0, kq1 = wp.shape
    cdtype = geom.complex_dtype
    rows = _empty((cgp, k, kq0, t1), geom.dtype)
    row_buf, row_spec = _spectrum_buffer((cgp, k), (kq0, t1), cdtype)
    row_plan = _plan(rows, row_spec, (3,), "FFTW_FORWARD")
    if t0 > 1:
        full = _empty((t0, f1, cgp, k), cdtype)
        col_plan = _plan(full, full, (0,), "FFTW_FORWARD")
    # Circular reversal: tap q goes to -q mod t, whose spectrum is conj(W).
    rows[...] = 0
    r1 = (-np.arange(kq1)) % t1
    rows[:, :, :, r1] = wp.transpose(1, 0, 2, 3)
    row_plan(rows, row_spec)
    if t0 == 1:
        return row_buf
    full[...] = 0
    full[(-np.arange(kq0)) % t0] = row_buf
    col_plan(full, full)
    return full


# Weight-spectrum cache: key -> (copy of w, spectra); bounded in bytes.
WEIGHT_CACHE_BYTES = 256 * 2**20
_weights = OrderedDict()
_weights_lock = threading.Lock()


def _weight_cache_key(w, geom):
    ptr = w.__array_interface__["data"][0]
    return (ptr, w.shape, w.strides, w.dtype.str) + geom.weight_key()


def _same_bits(a, b):
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    view = np.uint32 if a.dtype.itemsize == 4 else np.uint64
    return np.array_equal(a.view(view), b.view(view))


def cached_weight_spectra(w, geom):
    """:func:`weight_spectra`, reusing the spectra of an identical filter.

    A cached entry is used only if the stored copy of the filter equals
    ``w`` bit for bit, so in-place changes are always seen.
    """
    key = _weight_cache_key(w, geom)
    with _weights_lock:
        hit = _weights.get(key)
    if hit is not None and _same_bits(hit[0], w):
        with _weights_lock:
            if key in _weights:
                _weights.move_to_end(key)
        return hit[1]
    spectra = weight_spectra(w, geom)
    size = spectra.nbytes + w.nbytes
    if size <= WEIGHT_CACHE_BYTES // 4:
        with _weights_lock:
            _weights[key] = (w.copy(), spectra)
            total = sum(a.nbytes + s.nbytes for a, s in _weights.values())
            while total > WEIGHT_CACHE_BYTES and len(_weights) > 1:
                _, (a, s) = _weights.popitem(last=False)
                total -= a.nbytes + s.nbytes
    return spectra


def clear_caches(plans=False):
    """Forget cached weight spectra (and FFTW plans when ``plans``)."""
    with _weights_lock:
        _weights.clear()
    if plans:
        with _plans_lock:
            _plans.clear()


def cache_info():
    """Entries and bytes held by the weight-spectrum and plan caches."""
    with _weights_lock:
        nbytes = sum(a.nbytes + s.nbytes for a, s in _weights.values())
        entries = len(_weights)
    return {"weight_entries": entries, "weight_bytes": nbytes,
            "plans": len(_plans)}


# Per-frequency GEMMs with fewer multiply-adds than this go to the Numba
# loop (BLAS call overhead dominates), bigger ones to numpy.matmul.
_BLAS_MIN_CMACS = 2048
# GEMMs with fewer rows are matrix-vector products, memory-bound on W:
# numpy.matmul calls BLAS once per frequency and was measured 4x slower.
_BLAS_MIN_ROWS = 4


def contract(x_spec, w_spec, groups=1, out=None):
    """Per-frequency GEMM ``Y[f] = X[f] @ W[f]``, block-diagonal in groups.

    Parameters
    ----------
    x_spec : complex ndarray (F0, F1h, M, C')
    w_spec : complex ndarray (F0, F1h, C' // groups, K)
    groups : int
        Input channel block ``g`` meets output channel block ``g`` only.
    out : complex ndarray (F0, F1h, M, K), optional

    Returns
    -------
    Y : complex ndarray (F0, F1h, M, K)
    """
    f0, f1, m, cp = x_spec.shape
    cgp, k = w_spec.shape[2:]
    kg = k // groups
    nf = f0 * f1
    if out is None:
        out = _empty((f0, f1, m, k), x_spec.dtype)
    per_f = max(1, m * cgp * kg)
    per_task = max(1, _CMACS_PER_TASK // per_f)
    if cgp == 1 and kg == 1 and m == 1:
        _multiply(x_spec.reshape(-1), w_spec.reshape(-1), out.reshape(-1),
                  _CMACS_PER_TASK)
    elif cgp == 1 and kg == 1:
        _multiply_broadcast(x_spec.reshape(-1), w_spec.reshape(-1),
                            out.reshape(-1), m, groups, per_task)
    elif per_f < _BLAS_MIN_CMACS or m < _BLAS_MIN_ROWS:
        real = x_spec.real.dtype
        _contract_loops(x_spec.reshape(-1).view(real),
                        w_spec.reshape(-1).view(real),
                        out.reshape(-1).view(real), m, cp, cgp, k, groups,
                        per_task)
    elif groups == 1:
        np.matmul(x_spec.reshape(nf, m, cp), w_spec.reshape(nf, cgp, k),
                  out=out.reshape(nf, m, k))
    else:
        xg = x_spec.reshape(nf, m, groups, cgp).transpose(0, 2, 1, 3)
        wg = w_spec.reshape(nf, cgp, groups, kg).transpose(0, 2, 1, 3)
        yg = out.reshape(nf, m, groups, kg).transpose(0, 2, 1, 3)
        np.matmul(xg, wg, out=yg)
    return out


def inverse(y_spec, geom, bias, out, m0=0):
    """Inverse-transform tile spectra and scatter their valid outputs.

    Parameters
    ----------
    y_spec : complex ndarray (F0, F1h, Mc, K), C-contiguous; destroyed
        Spectra of the tiles ``m0 .. m0 + Mc - 1``.
    geom : FFTGeometry
    bias : ndarray (K,) or None
    out : ndarray (N, K, Ho, Wo)
        Receives ``out[n, k, i b0 + u, j b1 + v] = irfft2(Y)[u, v] + bias[k]``
        for ``u < b0``, ``v < b1`` inside the output; returned.
    """
    mc, k = y_spec.shape[2:]
    batch = (mc, k)
    spec = y_spec.transpose(2, 3, 0, 1)
    tiles = _empty(batch + geom.tile_shape, geom.dtype)

    def scratch():
        return (_spectrum_buffer(batch, geom.tile_shape, y_spec.dtype)[1],
                _empty(batch + geom.tile_shape, geom.dtype))

    plan = _plan(spec, tiles, _transform_axes(2, geom.tile_shape),
                 "FFTW_BACKWARD", scratch)
    plan(spec, tiles)
    if bias is None:
        bias = np.zeros(k, geom.dtype)
    rows, cols = geom.rows, geom.cols
    _scatter_tiles(tiles, out, bias, m0, rows.tiles, cols.tiles, rows.b,
                   cols.b)
    return out


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------

# Tiles per chunk are chosen so the chunk's spectra (input + output) stay
# below this: bounded memory, and the spectra stay in the last-level cache
# between the stages.
CHUNK_BYTES = 16 * 2**20


def chunks(geom):
    """Split the tiles into chunks of whole images or of rows of tiles."""
    f = geom.spectrum_shape[0] * geom.spectrum_shape[1]
    per_tile = f * (geom.channels + geom.k) * geom.complex_dtype.itemsize
    budget = max(1, CHUNK_BYTES // max(per_tile, 1))
    per_image = geom.tiles
    if budget >= per_image:
        step = min(geom.n, budget // per_image)
        return [Chunk(n0, min(step, geom.n - n0), 0, geom.rows.tiles)
                for n0 in range(0, geom.n, step)]
    step = max(1, budget // geom.cols.tiles)
    return [Chunk(n, 1, i0, min(step, geom.rows.tiles - i0))
            for n in range(geom.n) for i0 in range(0, geom.rows.tiles, step)]


def conv2d(x, w, bias, stride, padding, dilation, groups, *, tile=None,
           cache_weights=True):
    """FFT convolution; the contract of :mod:`kernels._dispatch`.

    Parameters
    ----------
    x : ndarray (N, C, H, W), float32 or float64, C-contiguous
    w : ndarray (K, C // groups, kH, kW), same dtype
    bias : ndarray (K,) or None
    stride, dilation : (sh, sw), (dh, dw)
    padding : (top, bottom, left, right) zero padding
    groups : int
    tile : (t0, t1), optional
        Force the transform lengths (tests); default :func:`choose_tile`.
    cache_weights : bool
        Use the weight-spectrum cache.

    Returns
    -------
    y : ndarray (N, K, Ho, Wo) of x's dtype
    """
    geom = plan_geometry(x.shape, w.shape, tuple(stride), tuple(padding),
                         tuple(dilation), int(groups), x.dtype, tile)
    w_spec = (cached_weight_spectra(w, geom) if cache_weights
              else weight_spectra(w, geom))
    y = np.empty(geom.out_shape, dtype=x.dtype)
    xpad = padded_input(x, geom)
    for chunk in chunks(geom):
        x_spec = input_spectra(x, geom, chunk, xpad)
        y_spec = contract(x_spec, w_spec, groups)
        del x_spec
        inverse(y_spec, geom, bias, y, chunk.m0(geom))
    return y


def unsupported_reason(x_shape, w_shape, stride, padding, dilation, groups):
    """FFT convolution computes every configuration."""
    return None
