"""FFT convolution: transform, per-frequency GEMM, inverse transform.

A convolution layer (cross-correlation, as ``torch.nn.functional.conv2d``)
is computed in four stages, each its own function so that it can be tested
against the ``numpy.fft`` definitions:

1. :func:`input_spectra`  real-to-complex transforms (pyFFTW) of the
   zero-padded, overlapping input tiles: ``X[m, c, f]``.
2. :func:`weight_spectra` transforms the filters: ``W[c, k, f]`` (cached
   across calls, see below).
3. :func:`contract` multiplies per frequency, ``Y[:, :, f] = X[:, :, f] @
   W[:, :, f]``: one small complex GEMM per frequency ``f``, block-diagonal
   when there are groups.
4. :func:`inverse` transforms ``Y`` back and scatters the valid part of
   every tile into the output, adding the bias.

Correlation as circular correlation.  Along one axis, for an input window
``x[0 : t]`` and a kernel ``w[0 : q]``, the circular correlation of length
``t`` equals the linear one at the ``b = t - q + 1`` positions ``0 .. b-1``
(none of them wraps around), so a transform of length ``t`` gives ``b``
outputs.  The kernel is stored circularly reversed (``w_rev[-a mod t] =
w[a]``), whose spectrum is ``conj(W)``: the frequency-domain product is a
plain product (no conjugation pass), and the ``1 / (t0 t1)`` of the inverse
transform is folded into the weights.

Tiling is overlap-save: the output is cut into blocks of ``b0 x b1``; tile
``(i, j)`` reads the ``t0 x t1`` input window starting at ``(i b0, j b1)``
(windows overlap by ``q - 1``, outputs do not).  FFTW reads the
overlapping windows straight out of the padded input through a strided
view (out-of-place real-to-complex transforms never write their input).
One tile covering the whole image is the untiled FFT convolution.
:func:`choose_tile` picks ``(t0, t1)`` with a cost model.

Stride by polyphase decomposition, dilation by zero insertion.  A
stride-``s`` correlation with the (dilated) kernel ``wd`` of extent
``e = d (k - 1) + 1`` is the sum over ``r < s`` of the stride-1
correlations of the phase signals ``x_r[j] = x[j s + r]`` with the phase
kernels ``w_r[q] = wd[q s + r]``.  The phases become extra input channels
(channel ``c`` turns into ``(c, r0, r1)``), so the contraction sums them
for free and only the outputs needed are ever transformed back.  Phases
whose kernel is all zero (dilation a multiple of a stride factor) are
dropped, and so are inputs that no output reads (past the last strided
window, or between dilated taps when there are fewer outputs than the
gap): an FFT spreads the rounding error of every value in a tile over all
of its outputs, so such values could exceed an error bound that rightly
does not see them.

Spectrum layouts.  Stage results have fixed logical shapes (``X``:
``(M, C', F0, F1h)``, ``W``: ``(C'/G, K, F0, F1h)``, ``Y``: ``(M, K, F0,
F1h)``) but one of two memory layouts, chosen per problem
(``FFTGeometry.freq_major``):

* batch-major (C-contiguous): FFTW's natural layout, and frequencies are
  contiguous, so the contraction is a Numba loop with the frequency as the
  SIMD lane (as NNPACK's "tuple GEMM"); used for few channels, where
  per-frequency GEMMs are too small for BLAS;
* frequency-major (``(F0, F1h, M, C')`` in memory): FFTW writes/reads it
  directly, and the contraction is one stacked ``numpy.matmul`` (a BLAS
  GEMM per frequency); used when ``C'/G * K/G`` is large.

Weight-spectrum cache: :func:`conv2d` keeps the spectra of recently used
filters in the cache all algorithms share,
:data:`kernels._weight_cache.transformed_weights` (kind ``"fft"``), keyed
on the filter array's data pointer, shape, strides, dtype and the
transform geometry.  A hit is accepted only when a stored copy of the
filter equals the array passed now bit for bit, so modifying the filter in
place, or passing another array that happens to reuse the same memory,
can never return stale spectra (the comparison is one pass over ``w``).
:func:`clear_caches` empties its FFT entries; ``conv2d(...,
cache_weights=False)`` bypasses it.

Tunables (chunk and block budgets, task-plan cache bound) are
:class:`kernels.cpu._tuning.FFTTuning`: :func:`conv2d` reads
``_tuning.current().fft`` once and passes it down, and the caches whose
content depends on it (chosen tiles, task plans) have it in their keys.

FFT lengths: :func:`fast_length` returns the smallest ``2**a * m >= n``
with odd part ``m`` in ``{1, 3, 5, 7, 9}``.  Measured with pyFFTW (2-D
real transforms, FFTW_MEASURE, 120 random sizes 40..1500, each against the
fastest length >= n): this rule is 1.08x slower than the best on average
(worst 1.44x), while 2^a 3^b gives 1.30x (worst 3.8x: odd parts 27, 81,
243 are slow), 7-smooth 1.33x and 5-smooth (``scipy.fft.next_fast_len``)
1.27x (worst 2.9x: 1125 = 3^2 5^3 and 1215 = 3^5 5 are slow).

Two execution paths.  With many channels (the BLAS contraction) the four
stages run one after the other over chunks of tiles, each stage spread
over the threads (FFTW's threads, prange, BLAS GEMMs split over Python
threads).  With few channels (the frequency-lane contraction),
:func:`conv2d` cuts the tiles into blocks (:func:`task_blocks`) that
Python threads pull from a shared counter, running every stage of a block
single-threaded (see "Task-parallel path" below): on the 2-vCPU
development VM that was 1.0-2x faster, chiefly because each staged step
waited for the slower thread.

Plans and threads: pyFFTW plans are cached (keyed on array layouts, axes,
direction, threads, effort and task-worker slot); FFTW_MEASURE for large
transforms and FFTW_ESTIMATE for small ones by default
(:func:`set_planner_effort`, environment variable
``CONVBENCH_FFTW_EFFORT``).  Staged transforms use
``numba.get_num_threads()`` threads when large enough to pay for waking
them (``_MIN_POINTS_PER_THREAD``); the per-frequency BLAS GEMMs run
single-threaded, split over that many Python threads.

Not thread-safe to call concurrently with different planner efforts;
concurrent calls are otherwise safe (each plan executes under its lock).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import types
from collections import OrderedDict
from typing import NamedTuple

import numba
import numpy as np
import pyfftw
from numba import njit, prange
from numpy.lib.stride_tricks import as_strided

from .._weight_cache import transformed_weights
from . import _blas, _tuning

__all__ = [
    "conv2d", "unsupported_reason", "fast_length", "FFTGeometry",
    "AxisGeometry", "Chunk", "Block", "plan_geometry", "choose_tile",
    "chunks", "task_blocks", "use_tasks",
    "padded_input", "input_spectra", "weight_spectra",
    "cached_weight_spectra", "contract", "inverse", "clear_caches",
    "cache_info", "set_planner_effort", "get_planner_effort",
]

# --------------------------------------------------------------------------
# FFT lengths
# --------------------------------------------------------------------------

# Odd parts m of the lengths 2**a * m that FFTW transforms fast (see the
# module docstring for the measurement behind this choice).
FAST_ODD_PARTS = (1, 3, 5, 7, 9)


def fast_length(n):
    """Smallest ``L >= n`` of the form ``2**a * m``, ``m`` in {1, 3, 5, 7, 9}.

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
# Geometry: polyphase split, tiles, layout
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

    @property
    def padded(self):
        """Length of the padded phase signal that every tile reads from."""
        return (self.tiles - 1) * self.b + self.t


def _axis_phases(k, dilation, stride):
    """Residues of the dilated taps mod stride, and each tap's (phase, q)."""
    offsets = [a * dilation for a in range(k)]
    residues = tuple(sorted({e % stride for e in offsets}))
    where = {r: i for i, r in enumerate(residues)}
    taps_phase = tuple(where[e % stride] for e in offsets)
    taps_q = tuple(e // stride for e in offsets)
    return residues, taps_phase, taps_q, max(taps_q) + 1


def _axis_geometry(size, pad_lo, pad_hi, k, dilation, stride, t=None):
    extent = dilation * (k - 1) + 1
    out = (size + pad_lo + pad_hi - extent) // stride + 1
    residues, taps_phase, taps_q, kq = _axis_phases(k, dilation, stride)
    single = fast_length(out + kq - 1)
    if t is None or t >= single:
        t, b = single, out
    else:
        if t < kq:
            raise ValueError(f"transform length {t} is shorter than the "
                             f"(phase) kernel ({kq})")
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
    freq_major: bool    # spectra laid out frequency-major (BLAS contraction)

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
                self.cols.taps_phase, self.cols.taps_q, self.groups,
                self.freq_major, self.dtype.str)


# Per-frequency GEMMs with at least this many multiply-adds per row
# (C'/G * K/G) go to BLAS through the frequency-major layout, smaller ones
# to the frequency-lane Numba loop.  Measured (float32, one thread, CPU
# time per complex multiply-add): C = K = 8, 2 rows: loop 0.33 ns, BLAS
# 0.54 ns; C = K = 16, 49 rows: 0.27 vs 0.13 ns; C = K = 64: 0.32 vs
# 0.10 ns with 49 rows, 0.98 vs 0.52 ns with one row (both reading the
# weight spectra from memory).
_BLAS_MIN_CK = 64
_BLAS_MIN_ROWS = 1


def _use_freq_major(m, cgp, kg):
    return cgp * kg >= _BLAS_MIN_CK and m >= _BLAS_MIN_ROWS


def plan_geometry(x_shape, w_shape, stride, padding, dilation, groups,
                  dtype=np.float32, tile=None, freq_major=None, tuning=None):
    """Cut a normalised problem into transform tiles.

    Parameters
    ----------
    x_shape, w_shape : (N, C, H, W), (K, C // groups, kH, kW)
    stride, dilation : (sh, sw), (dh, dw)
    padding : (top, bottom, left, right)
    groups : int
    dtype : float32 or float64
    tile : (t0, t1), optional
        Transform lengths; a length at least that of the whole (padded)
        axis means one tile along it.  Default: :func:`choose_tile`.
    freq_major : bool, optional
        Force the spectrum layout (tests); default by channel counts.
    tuning : FFTTuning, optional
        Tunables for :func:`choose_tile`; default ``_tuning.current().fft``.

    Returns
    -------
    FFTGeometry
    """
    n, c, h, w = x_shape
    k, cg, kh, kw = w_shape
    dtype = np.dtype(dtype)
    if tile is None:
        tile = choose_tile(x_shape, w_shape, stride, padding, dilation,
                           groups, dtype.itemsize, tuning)
    rows = _axis_geometry(h, padding[0], padding[1], kh, dilation[0],
                          stride[0], tile[0])
    cols = _axis_geometry(w, padding[2], padding[3], kw, dilation[1],
                          stride[1], tile[1])
    phases = len(rows.residues) * len(cols.residues)
    if freq_major is None:
        freq_major = _use_freq_major(n * rows.tiles * cols.tiles,
                                     cg * phases, k // groups)
    return FFTGeometry(n, c, k, groups, cg, rows, cols, dtype,
                       bool(freq_major))


# --------------------------------------------------------------------------
# Cost model for the tile size
# --------------------------------------------------------------------------

# Seconds per unit on the development machine (AMD EPYC, AVX-512, float32,
# one thread, measured under CPU contention); only their ratios matter.
_SEC_PER_FFT_FLOP = 0.15e-9   # per n log2 n of a real transform of n points
_SEC_PER_TRANSFORM = 0.2e-6   # per transform: FFTW loop and tile overheads
_SEC_PER_CMAC_BLAS = 0.15e-9  # complex multiply-add in a BLAS GEMM
_SEC_PER_CMAC_LANE = 0.35e-9  # complex multiply-add in the frequency-lane loop
_SEC_PER_GEMM_CALL = 1.5e-6   # numpy.matmul's BLAS call per frequency
_SEC_PER_BYTE = 0.1e-9        # streaming a spectrum or real buffer once
# Reading the weight spectra in the per-frequency GEMMs.  With few rows
# (tiles) per GEMM, each frequency's C' x K block is used for little work,
# so the contraction streams the weight spectra from memory (and BLAS packs
# them): 16x16 tiles of VGG-16's 256-channel 56x56 layer ran 2.3x slower
# than 10x9 tiles for the same multiply-adds, 24x24 tiles 6.5x.  This
# term is what favours small tiles for many channels (the memory-traffic
# argument of Zlateski et al., ICS 2019).
_SEC_PER_WEIGHT_BYTE = 0.4e-9


def _fft_cost(t0, t1):
    points = t0 * t1
    return points * np.log2(np.maximum(points, 2))


def _tiles_per_image(t0, t1, kq0, kq1, out0, out1):
    """Tiles of t0 x t1 (arrays) covering an out0 x out1 output."""
    b0 = np.where(t0 >= out0 + kq0 - 1, out0, t0 - kq0 + 1)
    b1 = np.where(t1 >= out1 + kq1 - 1, out1, t1 - kq1 + 1)
    return np.ceil(out0 / b0) * np.ceil(out1 / b1)


def _transform_seconds(t0, t1):
    """Modelled single-thread seconds of one t0 x t1 real transform."""
    return _fft_cost(t0, t1) * _SEC_PER_FFT_FLOP + _SEC_PER_TRANSFORM


def _model_time(n, c_in, cg_in, k, groups, t0, t1, kq0, kq1, out0, out1,
                itemsize, chunk_bytes):
    """Modelled seconds of the FFT convolution with tiles t0 x t1 (arrays).

    c_in and cg_in count the input channels after the phase split;
    chunk_bytes is the staged path's chunk budget (FFTTuning.chunk_bytes).
    """
    m = n * _tiles_per_image(t0, t1, kq0, kq1, out0, out1)
    freqs = t0 * (t1 // 2 + 1)
    kg = k // groups
    csize = 2 * itemsize
    # The weight transforms only run over the kq0 non-zero rows first.
    transforms = m * c_in + 0.6 * k * cg_in + m * k
    fft = transforms * _transform_seconds(t0, t1)
    blas = (cg_in * kg >= _BLAS_MIN_CK) & (m >= _BLAS_MIN_ROWS)
    cmacs = freqs * m * cg_in * k
    weight_bytes = freqs * cg_in * k * csize
    passes = np.maximum(1, np.ceil(freqs * m * (c_in + k) * csize / chunk_bytes))
    contraction = np.where(
        blas,
        cmacs * _SEC_PER_CMAC_BLAS + freqs * groups * _SEC_PER_GEMM_CALL
        + passes * weight_bytes * _SEC_PER_WEIGHT_BYTE,
        cmacs * _SEC_PER_CMAC_LANE)
    spectra = freqs * m * (c_in + k) * csize
    real = (t0 * t1 * m * k + n * c_in * (out0 + kq0) * (out1 + kq1)) * itemsize
    traffic = (2 * spectra + 2 * real) * _SEC_PER_BYTE
    return fft + contraction + traffic


def _tile_candidates(out, kq, many_channels):
    """Transform lengths to consider along one axis.

    Every fast length from the kernel up to one tile for the whole axis;
    with many channels (BLAS contraction) only powers of two from 8 on
    and the one-tile length: the measured optimum was 8 or 16 (as
    NNPACK's ft8x8/ft16x16) on every VGG-16/AlexNet layer, while the model
    alone, with its noisy constants, sometimes picked odd shapes such as
    16x40 that ran 1.7x slower.
    """
    single = fast_length(out + kq - 1)
    if many_channels:
        cands = [t for t in (2 ** e for e in range(3, 13))
                 if kq < t < single]
    else:
        cands = _fast_lengths_between(max(kq, 2), single - 1)
    return np.array(cands + [single])


def _task_tail_factor(n, t0, t1, g_rows, g_cols, tasks_per_thread):
    """Makespan of the task-parallel path relative to its work / threads.

    With P threads pulling B blocks, the last block ends on average half a
    block after the others, and a thread slowed down (this development VM
    slows an idle vCPU for milliseconds) holds up the call by up to a
    block: time ~ work/P + (work/B)(1 - 1/P), B ~ min(tiles, blocks per
    thread x P).  Four 576^2 tiles of a 1024^2 image (k = 45..63) ran
    1.07-1.2x slower than sixteen 320^2 ones, though the model's work is
    10 % lower.  P is :func:`_tuning.block_shape_threads` (as for the
    blocks themselves), the blocks per thread ``tasks_per_thread``.
    """
    p = _tuning.block_shape_threads()
    tiles = n * _tiles_per_image(t0, t1, g_rows.kq, g_cols.kq, g_rows.out,
                                 g_cols.out)
    blocks = np.minimum(tiles, max(1, tasks_per_thread * p))
    return 1 + (p - 1) / blocks


# (problem, itemsize, FFTTuning) -> (t0, t1); the tunables are in the key
# because the model reads them (chunk_bytes, tasks_per_thread).
_TILE_CACHE = OrderedDict()


def choose_tile(x_shape, w_shape, stride, padding, dilation, groups,
                itemsize=4, tuning=None):
    """Transform lengths ``(t0, t1)`` minimising the cost model.

    The model adds the FFT work (``t log t`` per transform, for the input,
    weight and inverse transforms, plus a per-transform overhead), the
    contraction's complex multiply-adds (BLAS or Numba rate), and a
    memory-traffic term (spectra written and read once, input and output
    tiles streamed), each with a constant measured on the development
    machine.  Many channels favour small tiles (the contraction and the
    spectra grow with the tile overlap and the weight spectra with the
    tile area); one channel favours large tiles (less overlap), but not
    the whole image when the kernel is small (``log t`` grows).

    ``tuning`` (an :class:`~kernels.cpu._tuning.FFTTuning`, default
    ``_tuning.current().fft``) gives the chunk budget and the blocks per
    thread that the model reads.
    """
    if tuning is None:
        tuning = _tuning.current().fft
    key = (tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding),
           tuple(dilation), int(groups), int(itemsize), tuning)
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
    many = cg * ph * (k // groups) >= _BLAS_MIN_CK
    t0 = _tile_candidates(g_rows.out, g_rows.kq, many)[:, None]
    t1 = _tile_candidates(g_cols.out, g_cols.kq, many)[None, :]
    cost = _model_time(n, c * ph, cg * ph, k, groups, t0, t1, g_rows.kq,
                       g_cols.kq, g_rows.out, g_cols.out, itemsize,
                       tuning.chunk_bytes)
    if not many:
        cost = cost * _task_tail_factor(n, t0, t1, g_rows, g_cols,
                                        tuning.tasks_per_thread)
    i, j = np.unravel_index(np.argmin(cost), cost.shape)
    result = (int(t0[i, 0]), int(t1[0, j]))
    if len(_TILE_CACHE) >= 4096:
        _TILE_CACHE.popitem(last=False)
    _TILE_CACHE[key] = result
    return result


# --------------------------------------------------------------------------
# pyFFTW plans
# --------------------------------------------------------------------------

# Planner effort.  Measured on the development machine (float32, steady
# state, interleaved): FFTW_MEASURE plans ran 10-25% faster than
# FFTW_ESTIMATE ones for the large single-channel tiles (1024² image,
# tiles 112² to 576²; CPU time on one thread 6.8 vs 9.5 ms at k = 9, 8.8
# vs 11.1 ms at k = 51) and the same for the small tiles of CNN layers
# (16x16 and below: 3.1 vs 3.1 ms, 1.2 vs 1.2 ms), while MEASURE's one-off
# planning took 0.2-1.9 s for the former and 1-7 s for the latter (many
# batched shapes).  "auto" therefore measures transforms of at least
# _MEASURE_MIN_POINTS points and estimates smaller ones.  FFTW keeps the
# wisdom for the process: a shape is only planned once.
_EFFORTS = ("auto", "FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT")
_MEASURE_MIN_POINTS = 1 << 12
_planner_effort = os.environ.get("CONVBENCH_FFTW_EFFORT", "auto")
if _planner_effort not in _EFFORTS:
    _planner_effort = "auto"


def set_planner_effort(effort):
    """Planner effort of new plans: "auto" (default) or an FFTW flag.

    "auto" uses FFTW_MEASURE for transforms of at least 2**12 points (or
    1-D transforms of at least 256) and FFTW_ESTIMATE for smaller ones;
    "FFTW_ESTIMATE", "FFTW_MEASURE" and "FFTW_PATIENT" apply to every
    transform.
    """
    global _planner_effort
    if effort not in _EFFORTS:
        raise ValueError(f"effort must be one of {_EFFORTS}, got {effort!r}")
    _planner_effort = effort


def get_planner_effort():
    return _planner_effort


# One-dimensional transforms (the column pass of the weight transform, 1-D
# signals) of at least this length are measured too: the 576-point column
# transforms of a 576x576 weight tile ran 0.31 ms measured, 0.60 ms
# estimated (289 columns, float32).
_MEASURE_MIN_LENGTH_1D = 256


def _effort_for(lengths):
    """Planner effort for transforms of the given lengths (one per axis)."""
    if _planner_effort != "auto":
        return _planner_effort
    points = int(np.prod(lengths))
    if points >= _MEASURE_MIN_POINTS or (
            len(lengths) == 1 and points >= _MEASURE_MIN_LENGTH_1D):
        return "FFTW_MEASURE"
    return "FFTW_ESTIMATE"


# Below this many real points per thread a transform runs on one thread:
# waking a sleeping thread (OMP_WAIT_POLICY=PASSIVE) costs more.
_MIN_POINTS_PER_THREAD = 1 << 16

_PLAN_CACHE_SIZE = 128
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


def _plan(src, dst, axes, direction, scratch=None, slot=None):
    """Cached plan transforming ``src`` into ``dst`` along ``axes``.

    Plans are keyed on the arrays' shapes, strides, dtypes and alignment,
    the axes, the direction, the thread count and the planner effort.  A
    new plan is made on the arrays returned by ``scratch()`` (same layout)
    or, without it, on ``src`` and ``dst`` themselves: FFTW_MEASURE
    overwrites them, so callers without ``scratch`` plan before filling.

    ``slot`` (an int) asks for a single-threaded plan of its own for one
    worker of the task-parallel path; every slot's plan for a layout is
    the same FFTW plan (the later ones come from the wisdom the first one
    left), so results do not depend on which worker ran a task.
    """
    real = src if src.dtype.kind == "f" else dst
    threads = _threads_for(real.size) if slot is None else 1
    effort = _effort_for([real.shape[a] for a in axes])
    key = (_layout(src), _layout(dst), tuple(axes), direction, threads,
           effort, slot)
    with _plans_lock:
        plan = _plans.get(key)
        if plan is not None:
            _plans.move_to_end(key)
            return plan
    if scratch is not None:
        src, dst = scratch()
    fftw = pyfftw.FFTW(src, dst, axes=tuple(axes), direction=direction,
                       flags=(effort, "FFTW_DESTROY_INPUT"),
                       threads=threads)
    plan = _Plan(fftw)
    with _plans_lock:
        _plans[key] = plan
        while len(_plans) > _PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


def _spectrum_buffer(batch, tile, cdtype, freq_major):
    """A complex buffer and its logical ``(*batch, F0, F1h)`` view.

    Memory order is ``(*batch, F0, F1h)`` (batch-major) or
    ``(F0, F1h, *batch)`` (frequency-major).
    """
    spec = (tile[0], tile[1] // 2 + 1)
    batch = tuple(batch)
    if not freq_major:
        buf = _empty(batch + spec, cdtype)
        return buf, buf
    buf = _empty(spec + batch, cdtype)
    nb = len(batch)
    return buf, buf.transpose(tuple(range(2, 2 + nb)) + (0, 1))


def _transform_axes(ndim, tile):
    """The last two axes of an ndim array (only the last when t0 == 1)."""
    return (ndim - 1,) if tile[0] == 1 else (ndim - 2, ndim - 1)


# --------------------------------------------------------------------------
# Numba kernels: padding, scatter, frequency-lane contraction
# --------------------------------------------------------------------------

# Rows handled by one parallel task: enough to amortise a task's index
# arithmetic, few enough that one image still gives every thread work.
_ROWS_PER_TASK = 32


@njit(parallel=True, cache=True)
def _pad_phases(x, out, s0, s1, lo0, lo1, res0, res1):
    """out[n, (c, p0, p1), u, v] = x[n, c, u s0 + r0 - lo0, v s1 + r1 - lo1].

    Zero where the index falls outside x (the padding).
    """
    nb, cp, hq, wq = out.shape
    h, w = x.shape[2], x.shape[3]
    p0n, p1n = res0.size, res1.size
    blocks = (hq + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for task in prange(nb * cp * blocks):
        blk = task % blocks
        ch = (task // blocks) % cp
        n = task // (blocks * cp)
        p1 = ch % p1n
        p0 = (ch // p1n) % p0n
        c = ch // (p1n * p0n)
        # Columns: valid v satisfy 0 <= base + v s1 <= w - 1.
        base = res1[p1] - lo1
        v_lo = 0
        if base < 0:
            v_lo = min(wq, (-base + s1 - 1) // s1)
        v_hi = wq
        if base + (wq - 1) * s1 > w - 1:
            v_hi = (w - 1 - base) // s1 + 1 if w - 1 - base >= 0 else 0
        v_hi = max(v_hi, v_lo)
        for u in range(blk * _ROWS_PER_TASK, min(hq, (blk + 1) * _ROWS_PER_TASK)):
            src_row = u * s0 + res0[p0] - lo0
            # Loops over 1-D views indexed by the loop counter: slice
            # assignment and 4-D indexing with computed offsets measured
            # several times slower.
            dst = out[n, ch, u]
            if src_row < 0 or src_row >= h:
                for v in range(wq):
                    dst[v] = 0
                continue
            for v in range(v_lo):
                dst[v] = 0
            part = dst[v_lo:v_hi]
            if s1 == 1:
                src = x[n, c, src_row, base + v_lo:base + v_hi]
            else:
                src = x[n, c, src_row, base + v_lo * s1::s1]
            for v in range(v_hi - v_lo):
                part[v] = src[v]
            tail = dst[v_hi:]
            for v in range(wq - v_hi):
                tail[v] = 0


@njit(parallel=True, cache=True)
def _scatter_tiles(z, y, bias, m0, tiles0, tiles1, b0, b1):
    """y[n, k, i b0 + u, j b1 + v] = z[mm, k, u, v] + bias[k] (valid part).

    Tile m = m0 + mm is (n, i, j) in C order over (N, tiles0, tiles1).  One
    parallel task writes a block of rows of one tile in every channel.
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
                # 1-D views indexed by the loop counter (see _pad_phases).
                src = z[mm, k, u]
                dst = y[n, k, i * b0 + u, ox:ox + width]
                for v in range(width):
                    dst[v] = src[v] + bk


# Frequencies per task of the frequency-lane loops: the accumulator row
# (2 KiB in complex64) stays in L1 while the channels stream past.
_LANE_BLOCK = 256


@njit(parallel=True, cache=True)
def _contract_lanes(x, w, y, groups, fb):
    """y[m, k, f] = sum_c x[m, g Cg + c, f] w[c, k, f], g = k // Kg.

    Arrays are complex viewed as float pairs, frequencies last:
    x (M, C', 2F), w (Cg', K, 2F), y (M, K, 2F).  One task per (m, k,
    block of fb frequencies), each writing its own part of y; the inner
    loop runs along the frequencies, so it vectorises.
    """
    nm = x.shape[0]
    nf = x.shape[2] // 2
    cgp, k_out = w.shape[0], w.shape[1]
    kg = k_out // groups
    nfb = (nf + fb - 1) // fb
    for task in prange(nm * k_out * nfb):
        b = task % nfb
        k = (task // nfb) % k_out
        m = task // (nfb * k_out)
        g = k // kg
        lo = 2 * b * fb
        hi = 2 * min(nf, (b + 1) * fb)
        n = (hi - lo) // 2
        acc = y[m, k, lo:hi]
        for i in range(2 * n):
            acc[i] = 0
        for c in range(cgp):
            xr = x[m, g * cgp + c, lo:hi]
            wr = w[c, k, lo:hi]
            for i in range(n):
                a = xr[2 * i]
                bb = xr[2 * i + 1]
                p = wr[2 * i]
                q = wr[2 * i + 1]
                acc[2 * i] += a * p - bb * q
                acc[2 * i + 1] += a * q + bb * p


@njit(parallel=True, cache=True)
def _multiply_lanes(x, w, y, fb):
    """y[m, g, f] = x[m, g, f] w[0, g, f]: one channel per group in and out.

    Complex as float pairs: x, y (M, G, 2F), w (1, G, 2F).
    """
    nm, ng = x.shape[0], x.shape[1]
    nf = x.shape[2] // 2
    nfb = (nf + fb - 1) // fb
    for task in prange(nm * ng * nfb):
        b = task % nfb
        g = (task // nfb) % ng
        m = task // (nfb * ng)
        lo = 2 * b * fb
        hi = 2 * min(nf, (b + 1) * fb)
        n = (hi - lo) // 2
        xr = x[m, g, lo:hi]
        wr = w[0, g, lo:hi]
        yr = y[m, g, lo:hi]
        for i in range(n):
            a = xr[2 * i]
            bb = xr[2 * i + 1]
            p = wr[2 * i]
            q = wr[2 * i + 1]
            yr[2 * i] = a * p - bb * q
            yr[2 * i + 1] = a * q + bb * p


def _serial(kernel, name):
    """A single-threaded, GIL-releasing compilation of a prange kernel.

    Used by the task-parallel path, whose threads are Python threads: a
    parallel kernel there would start an OpenMP team per task.  The copy
    gets its own name so that Numba's on-disk caches of the two versions
    do not collide.
    """
    fn = kernel.py_func
    copy = types.FunctionType(fn.__code__, fn.__globals__, name,
                              fn.__defaults__, fn.__closure__)
    copy.__qualname__ = name
    copy.__doc__ = fn.__doc__
    return njit(nogil=True, cache=True)(copy)


_pad_phases_serial = _serial(_pad_phases, "_pad_phases_serial")
_contract_lanes_serial = _serial(_contract_lanes, "_contract_lanes_serial")
_multiply_lanes_serial = _serial(_multiply_lanes, "_multiply_lanes_serial")


@njit(nogil=True, cache=True)
def _scatter_block(z, y, bias, n0, i0, j0, rows, cols, b0, b1):
    """y[n0 + a, k, (i0 + i) b0 + u, (j0 + j) b1 + v] = z[mm, k, u, v] + bias[k].

    Tile ``mm`` of the block is (a, i, j) in C order over (images, rows,
    cols); only the part inside y is written.
    """
    nm, k_out = z.shape[0], z.shape[1]
    ho, wo = y.shape[2], y.shape[3]
    for mm in range(nm):
        j = mm % cols
        i = (mm // cols) % rows
        a = mm // (cols * rows)
        oy = (i0 + i) * b0
        ox = (j0 + j) * b1
        height = min(b0, ho - oy)
        width = min(b1, wo - ox)
        for k in range(k_out):
            bk = bias[k]
            for u in range(height):
                src = z[mm, k, u]
                dst = y[n0 + a, k, oy + u, ox:ox + width]
                for v in range(width):
                    dst[v] = src[v] + bk


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
        """Index of the first tile, in (N, tiles_rows, tiles_cols) order."""
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
        ``xpad[n, (c, p0, p1), u, v] = x[n, c, u s0 + r0 - top, v s1 + r1 -
        left]`` (zero outside ``x``), ``Hq = (tiles_rows - 1) b0 + t0`` and
        ``Wq`` the same along columns, rounded up for alignment.
    """
    rows, cols = geom.rows, geom.cols
    per_row = _ROW_ALIGN_BYTES // geom.dtype.itemsize
    wq = -(-cols.padded // per_row) * per_row
    xpad = _empty((geom.n, geom.channels, rows.padded, wq), geom.dtype)
    _pad_phases(x, xpad, rows.stride, cols.stride, rows.pad_lo, cols.pad_lo,
                np.array(rows.residues, np.int64),
                np.array(cols.residues, np.int64))
    _zero_untouched(xpad, geom)
    return xpad


def _untouched(axis, phase):
    """Positions of a padded phase signal that no output reads.

    Position p of phase ``phase`` is read when some tap q of that phase and
    some output o < out have o + q = p.  The rest (inputs past the last
    window, or between the taps of a dilated kernel when there are fewer
    outputs than the gap) would add nothing to the result, but an FFT
    spreads the rounding errors of every value in a tile over all its
    outputs: such a value, however large, must not be there.
    """
    touched = np.zeros(axis.padded, dtype=bool)
    for q in {q for ph, q in zip(axis.taps_phase, axis.taps_q) if ph == phase}:
        touched[q:q + axis.out] = True
    return np.flatnonzero(~touched)


def _zero_untouched(xpad, geom):
    """Zero the inputs that no output reads (see :func:`_untouched`)."""
    _zero_untouched_window(xpad, geom, 0, 0, _untouched_lists(geom))


def _overlapping_tiles(base, geom, rows, cols):
    """(images, rows, cols, C', t0, t1) read-only view of the tile windows.

    ``base`` is padded input (images, C', H', W') whose element (0, 0) is
    where the first tile starts; windows step by the outputs per tile.
    """
    sn, sc, sh, sw = base.strides
    return as_strided(base, (base.shape[0], rows, cols, geom.channels,
                             geom.rows.t, geom.cols.t),
                      (sn, geom.rows.b * sh, geom.cols.b * sw, sc, sh, sw),
                      writeable=False)


def _tile_view(xpad, geom, chunk):
    """(images, rows, tiles_cols, C', t0, t1) overlapping view of xpad."""
    base = xpad[chunk.n0:chunk.n0 + chunk.images, :, chunk.i0 * geom.rows.b:]
    return _overlapping_tiles(base, geom, chunk.rows, geom.cols.tiles)


def input_spectra(x, geom, chunk=None, xpad=None):
    """Spectra of the input tiles of ``chunk`` (default: all tiles).

    Parameters
    ----------
    x : ndarray (N, C, H, W), C-contiguous
    geom : FFTGeometry
    chunk : Chunk, optional
    xpad : ndarray, optional
        :func:`padded_input` of ``x``, when already computed.

    Returns
    -------
    X : complex ndarray, logical shape (Mc, C * phases, F0, F1h)
        ``X[mm, (c, p0, p1)]`` is ``numpy.fft.rfft2`` of the ``t0 x t1``
        window of the padded, phase-split input that tile ``m0 + mm`` reads
        (tile ``(n, i, j)`` starts at row ``i b0`` and column ``j b1``);
        ``F0 = t0``, ``F1h = t1 // 2 + 1``.  Memory layout per
        ``geom.freq_major``.
    """
    if chunk is None:
        chunk = whole_batch(geom)
    if xpad is None:
        xpad = padded_input(x, geom)
    batch = (chunk.images, chunk.rows, geom.cols.tiles, geom.channels)
    buf, spec = _spectrum_buffer(batch, geom.tile_shape, geom.complex_dtype,
                                 geom.freq_major)
    tiles = _tile_view(xpad, geom, chunk)

    def scratch():
        return (_tile_view(_empty(xpad.shape, xpad.dtype), geom, chunk),
                _spectrum_buffer(batch, geom.tile_shape, geom.complex_dtype,
                                 geom.freq_major)[1])

    # Out-of-place real-to-complex transforms never write their input (FFTW
    # manual, "Planner Flags"), so the overlapping tiles are read in place.
    plan = _plan(tiles, spec, _transform_axes(6, geom.tile_shape),
                 "FFTW_FORWARD", scratch)
    plan(tiles, spec)
    return _logical(buf, chunk.tiles(geom), geom.channels, geom)


def _logical(buf, rows, cols, geom):
    """The (rows, cols, F0, F1h) view of a spectrum buffer."""
    spec = geom.spectrum_shape
    if geom.freq_major:
        return buf.reshape(spec + (rows, cols)).transpose(2, 3, 0, 1)
    return buf.reshape((rows, cols) + spec)


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


def weight_spectra(w, geom, slot=None):
    """Spectra of the circularly reversed, scaled filters.

    Parameters
    ----------
    w : ndarray (K, C // groups, kH, kW)
    geom : FFTGeometry
    slot : int, optional
        Use the single-threaded plans of this task worker (see
        :func:`_plan`); default: plans with FFTW's own threads.

    Returns
    -------
    W : complex ndarray, logical shape (Cg * phases, K, F0, F1h)
        ``conj(rfft2(w_phase, (t0, t1))) / (t0 t1)`` of every phase-split
        filter: the factor that turns the product with an input spectrum
        into the spectrum of the circular cross-correlation, the inverse
        transform's normalisation included.  Memory layout per
        ``geom.freq_major``.

    Notes
    -----
    Only ``kq0`` of the ``t0`` rows of a padded filter are non-zero, so the
    row transforms run on those rows only, then the column transforms
    (complex, along F0) on the result: about half the work of a full 2-D
    transform when the filter is much smaller than the tile.
    """
    t0, t1 = geom.tile_shape
    wp = _phase_kernels(w, geom) * (1.0 / (t0 * t1))
    k, cgp, kq0, kq1 = wp.shape
    cdtype = geom.complex_dtype
    rows = _empty((cgp, k, kq0, t1), geom.dtype)
    full_buf, full = _spectrum_buffer((cgp, k), (t0, t1), cdtype,
                                      geom.freq_major)
    # Plans first: planning overwrites the arrays.
    if t0 == 1:
        row_spec = full
    else:
        _, row_spec = _spectrum_buffer((cgp, k), (kq0, t1), cdtype, False)
        col_plan = _plan(full, full, (2,), "FFTW_FORWARD", slot=slot)
    row_plan = _plan(rows, row_spec, (3,), "FFTW_FORWARD", slot=slot)
    # Circular reversal: tap q goes to -q mod t, whose spectrum is conj(W).
    rows[...] = 0
    rows[:, :, :, (-np.arange(kq1)) % t1] = wp.transpose(1, 0, 2, 3)
    row_plan(rows, row_spec)
    if t0 == 1:
        return full
    full_buf[...] = 0
    full[:, :, (-np.arange(kq0)) % t0] = row_spec
    col_plan(full, full)
    return full


def cached_weight_spectra(w, geom):
    """:func:`weight_spectra`, reusing the spectra of an identical filter.

    The spectra live in the shared :data:`kernels._weight_cache.
    transformed_weights` (kind ``"fft"``, keyed on ``geom.weight_key()``);
    an entry is used only if its stored copy of the filter equals ``w`` bit
    for bit, so in-place changes of ``w`` are always seen.
    """
    return transformed_weights.get(w, "fft", geom.weight_key(),
                                   lambda own: weight_spectra(own, geom))


def clear_caches(plans=False):
    """Forget cached weight spectra (and FFTW plans, task plans and chosen
    tiles when ``plans``)."""
    transformed_weights.clear("fft")
    if plans:
        with _plans_lock:
            _plans.clear()
        with _task_plans_lock:
            _task_plans.clear()
        _TILE_CACHE.clear()


def cache_info():
    """Entries and bytes held by the weight-spectrum, plan and task caches.

    The weight figures are the ``"fft"`` entries of the shared
    :data:`kernels._weight_cache.transformed_weights`, whose bound
    (``max_bytes``, ``max_entries``) all algorithms share.
    """
    with _task_plans_lock:
        task_bytes = sum(p.nbytes for p in _task_plans.values())
        tasks = len(_task_plans)
    return {"weight_entries": transformed_weights.count("fft"),
            "weight_bytes": transformed_weights.nbytes("fft"),
            "plans": len(_plans), "task_plans": tasks,
            "task_plan_bytes": task_bytes}


def _is_freq_major(a):
    """True when a logical (rows, cols, F0, F1h) array is (F0, F1h, rows, cols) in memory."""
    return a.transpose(2, 3, 0, 1).flags.c_contiguous


def contract(x_spec, w_spec, groups=1):
    """Per-frequency GEMM ``Y[:, :, f] = X[:, :, f] @ W[:, :, f]`` by group.

    Parameters
    ----------
    x_spec : complex ndarray, logical (M, C', F0, F1h)
    w_spec : complex ndarray, logical (C' // groups, K, F0, F1h)
    groups : int
        Input channel block ``g`` meets output channel block ``g`` only.

    Returns
    -------
    Y : complex ndarray, logical (M, K, F0, F1h)
        ``Y[m, g Kg + kk, f] = sum_c X[m, g Cg' + c, f] W[c, g Kg + kk, f]``;
        frequency-major (BLAS) when both inputs are, else batch-major
        (frequency-lane loops; other layouts are copied to it first).
    """
    m, cp, f0, f1 = x_spec.shape
    cgp, k = w_spec.shape[:2]
    kg = k // groups
    if _is_freq_major(x_spec) and _is_freq_major(w_spec) and not (
            x_spec.flags.c_contiguous and w_spec.flags.c_contiguous):
        return _contract_blas(x_spec, w_spec, groups)
    x_spec = np.ascontiguousarray(x_spec)
    w_spec = np.ascontiguousarray(w_spec)
    out = _empty((m, k, f0, f1), x_spec.dtype)
    real = x_spec.real.dtype
    x3 = x_spec.reshape(m, cp, -1).view(real)
    w3 = w_spec.reshape(cgp, k, -1).view(real)
    y3 = out.reshape(m, k, -1).view(real)
    if cgp == 1 and kg == 1:
        _multiply_lanes(x3, w3, y3, _LANE_BLOCK)
    else:
        _contract_lanes(x3, w3, y3, groups, _LANE_BLOCK)
    return out


def _contract_blas(x_spec, w_spec, groups):
    """:func:`contract` on frequency-major spectra: a BLAS GEMM per frequency."""
    m, cp, f0, f1 = x_spec.shape
    cgp, k = w_spec.shape[:2]
    kg = k // groups
    nf = f0 * f1
    buf = _empty((f0, f1, m, k), x_spec.dtype)
    x3 = x_spec.transpose(2, 3, 0, 1).reshape(nf, m, cp)
    w3 = w_spec.transpose(2, 3, 0, 1).reshape(nf, cgp, k)
    y3 = buf.reshape(nf, m, k)
    if groups > 1:
        x3 = x3.reshape(nf, m, groups, cgp).transpose(0, 2, 1, 3)
        w3 = w3.reshape(nf, cgp, groups, kg).transpose(0, 2, 1, 3)
        y3 = y3.reshape(nf, m, groups, kg).transpose(0, 2, 1, 3)
    _stacked_matmul(x3, w3, y3)
    return buf.transpose(2, 3, 0, 1)


def _stacked_matmul(x, w, y):
    """y[f] = x[f] @ w[f] for every f (leading axis), in parallel over f.

    numpy.matmul makes one BLAS call per frequency; letting each of those
    small GEMMs fork BLAS threads was measured 1.5x slower on an idle
    machine and 10x slower under CPU contention (every call waits for all
    its threads).  So BLAS runs single-threaded, and the frequencies are
    split across ``numba.get_num_threads()`` Python threads (numpy releases
    the GIL).
    """
    nf = x.shape[0]
    workers = max(1, min(numba.get_num_threads(), nf))
    bounds = np.linspace(0, nf, workers + 1).astype(int)

    def run(piece_bounds):
        a, b = piece_bounds[0], piece_bounds[-1]
        np.matmul(x[a:b], w[a:b], out=y[a:b])

    _blas.in_parallel(run, bounds)


def _like(a):
    """An aligned, uninitialised array with a's shape and strides."""
    if any(st < 0 for st in a.strides):
        raise ValueError("negative strides")
    span = sum((n - 1) * st for n, st in zip(a.shape, a.strides)) + a.itemsize
    base = _empty(span // a.itemsize + 1, a.dtype)
    return as_strided(base, a.shape, a.strides)


def inverse(y_spec, geom, bias, out, m0=0):
    """Inverse-transform tile spectra and scatter their valid outputs.

    Parameters
    ----------
    y_spec : complex ndarray, logical (Mc, K, F0, F1h); destroyed
        Spectra of the tiles ``m0 .. m0 + Mc - 1``, as :func:`contract`
        returns them.
    geom : FFTGeometry
    bias : ndarray (K,) or None
    out : ndarray (N, K, Ho, Wo)
        Receives ``out[n, k, i b0 + u, j b1 + v] = irfft2(Y)[u, v] + bias[k]``
        for ``u < b0``, ``v < b1`` inside the output; returned.
    """
    mc, k = y_spec.shape[:2]
    batch = (mc, k)
    tiles = _empty(batch + geom.tile_shape, geom.dtype)

    def scratch():
        return _like(y_spec), _empty(batch + geom.tile_shape, geom.dtype)

    plan = _plan(y_spec, tiles, _transform_axes(4, geom.tile_shape),
                 "FFTW_BACKWARD", scratch)
    plan(y_spec, tiles)
    if bias is None:
        bias = np.zeros(k, geom.dtype)
    rows, cols = geom.rows, geom.cols
    _scatter_tiles(tiles, out, bias, m0, rows.tiles, cols.tiles, rows.b,
                   cols.b)
    return out


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------

def chunks(geom, tuning=None):
    """Split the tiles into chunks of whole images or of rows of tiles.

    A chunk's spectra (input and output) stay below ``tuning.chunk_bytes``
    (default ``_tuning.current().fft``) where one row of tiles allows.
    """
    if tuning is None:
        tuning = _tuning.current().fft
    f = geom.spectrum_shape[0] * geom.spectrum_shape[1]
    per_tile = f * (geom.channels + geom.k) * geom.complex_dtype.itemsize
    budget = max(1, tuning.chunk_bytes // per_tile)
    if budget >= geom.tiles:
        step = min(geom.n, budget // geom.tiles)
        return [Chunk(n0, min(step, geom.n - n0), 0, geom.rows.tiles)
                for n0 in range(0, geom.n, step)]
    step = max(1, budget // geom.cols.tiles)
    return [Chunk(n, 1, i0, min(step, geom.rows.tiles - i0))
            for n in range(geom.n) for i0 in range(0, geom.rows.tiles, step)]


# --------------------------------------------------------------------------
# Task-parallel path (few channels)
# --------------------------------------------------------------------------

# With few channels (frequency-lane contraction) every block of tiles goes
# through all four stages on its own: pad its input window, forward
# transforms, multiply, inverse transforms, scatter.  Blocks are tasks
# pulled by Python threads from a shared counter, each stage single-threaded
# (one-thread FFTW plans, serial Numba kernels that release the GIL).
# Measured on the 2-vCPU development VM, 1024^2 image, one channel: the
# staged path (each stage spread over both threads by FFTW, prange or BLAS)
# took 3.5 ms back to back but 4.3-6.4 ms right after a 14 ms
# single-threaded call and 6.7 ms after 14 ms asleep: a vCPU that idled
# runs slowly for milliseconds, and every stage waited for it.  Tasks let
# the fast thread take more blocks, wake the pool once per call instead of
# once per stage, and keep a block's buffers in L2 between its stages.
#
# The cut into blocks follows FFTTuning (kernels/cpu/_tuning.py): a block's
# buffers (input window, spectra, output tiles) fit in task_bytes, and a
# problem is cut into at least tasks_per_thread blocks per thread
# (block_shape_threads()), when it has enough tiles, so that a slow thread
# holds up the call by a fraction of a block, unless that leaves a block
# less than min_task_seconds of work (cost model): a block costs ~20 us of
# Python (with the GIL held) on top.


class Block(NamedTuple):
    """Tiles computed by one task: whole images, or a rectangle of one."""

    n0: int       # first image
    images: int
    i0: int       # first row of tiles
    rows: int
    j0: int       # first column of tiles
    cols: int

    @property
    def tiles(self):
        return self.images * self.rows * self.cols

    @property
    def shape(self):
        return (self.images, self.rows, self.cols)


def _per_tile_bytes(geom):
    t0, t1 = geom.tile_shape
    f = geom.spectrum_shape[0] * geom.spectrum_shape[1]
    c, k = geom.channels, geom.k
    in_place = c == 1 and k == 1
    spectra = f * (c + (0 if in_place else k)) * geom.complex_dtype.itemsize
    return spectra + t0 * t1 * (c + k) * geom.dtype.itemsize


def _per_tile_seconds(geom):
    """Modelled single-thread time of one tile's transforms."""
    return (geom.channels + geom.k) * float(_transform_seconds(*geom.tile_shape))


def task_blocks(geom, tuning=None):
    """Cut the tiles of every image into blocks (the tasks).

    Blocks are whole images when several fit in a task, else rectangles of
    full rows of tiles, else runs of tiles within a row.  The cut depends
    only on the problem, ``tuning`` (default ``_tuning.current().fft``) and
    :func:`_tuning.block_shape_threads` (fixed per process): a block's
    shape decides how FFTW batches its transforms, and results must not
    change with ``numba.set_num_threads``.
    """
    if tuning is None:
        tuning = _tuning.current().fft
    per_image = geom.tiles
    total = geom.n * per_image
    want = max(1, tuning.tasks_per_thread * _tuning.block_shape_threads())
    least = int(np.ceil(tuning.min_task_seconds / _per_tile_seconds(geom)))
    size = max(1, min(tuning.task_bytes // _per_tile_bytes(geom),
                      total // want), least)
    rows, cols = geom.rows.tiles, geom.cols.tiles
    if size >= per_image:
        step = size // per_image
        return [Block(n0, min(step, geom.n - n0), 0, rows, 0, cols)
                for n0 in range(0, geom.n, step)]
    if size >= cols:
        step = size // cols
        return [Block(n, 1, i0, min(step, rows - i0), 0, cols)
                for n in range(geom.n) for i0 in range(0, rows, step)]
    return [Block(n, 1, i, 1, j0, min(size, cols - j0))
            for n in range(geom.n) for i in range(rows)
            for j0 in range(0, cols, size)]


def use_tasks(geom):
    """True when :func:`conv2d` runs the problem as tasks (lane contraction)."""
    return not geom.freq_major


class _Scratch:
    """One worker's buffers, sized for the largest block, reused per block."""

    def __init__(self, geom, block):
        self.block = block
        t0, t1 = geom.tile_shape
        f0, f1h = geom.spectrum_shape
        m, c, k = block.tiles, geom.channels, geom.k
        rows, cols = _window(geom, block.rows, block.cols)
        per_row = _ROW_ALIGN_BYTES // geom.dtype.itemsize
        self.width = -(-cols // per_row) * per_row
        self.window = _empty(block.images * c * rows * self.width, geom.dtype)
        self.x_spec = _empty(m * c * f0 * f1h, geom.complex_dtype)
        self.y_spec = (self.x_spec if c == 1 and k == 1
                       else _empty(m * k * f0 * f1h, geom.complex_dtype))
        self.tiles = _empty(m * k * t0 * t1, geom.dtype)
        self.nbytes = sum(a.nbytes for a in {id(a): a for a in (
            self.window, self.x_spec, self.y_spec, self.tiles)}.values())

    def views(self, geom, shape):
        """(window, tile view, X, Y, output tiles) for blocks of ``shape``.

        ``shape`` is a block's (images, rows, cols); the views of every
        block of one shape are the same memory.
        """
        images, n_rows, n_cols = shape
        t0, t1 = geom.tile_shape
        f0, f1h = geom.spectrum_shape
        m, c, k = images * n_rows * n_cols, geom.channels, geom.k
        rows = _window(geom, n_rows, n_cols)[0]
        window = self.window[:images * c * rows * self.width].reshape(
            images, c, rows, self.width)
        tiles = _overlapping_tiles(window, geom, n_rows, n_cols)
        x_spec = self.x_spec[:m * c * f0 * f1h].reshape(
            (images, n_rows, n_cols, c, f0, f1h))
        y_spec = self.y_spec[:m * k * f0 * f1h].reshape(m, k, f0, f1h)
        z = self.tiles[:m * k * t0 * t1].reshape(m, k, t0, t1)
        return window, tiles, x_spec, y_spec, z


def _window(geom, n_rows, n_cols):
    """Rows and columns of padded input that n_rows x n_cols tiles read."""
    rows, cols = geom.rows, geom.cols
    return ((n_rows - 1) * rows.b + rows.t, (n_cols - 1) * cols.b + cols.t)


class _Worker:
    """One task worker slot's buffers, plans and views (kept per geometry).

    Each block shape gets the views of this worker's scratch and the
    worker slot's forward and inverse plans; :meth:`bound` holds the plans
    (their locks) with these arrays bound, so that a block only runs
    ``execute``: no per-block array checks.
    """

    def __init__(self, geom, blocks, slot):
        self.geom = geom
        self.scratch = _Scratch(geom, blocks[0])
        real = geom.dtype
        self.shapes = {}
        for shape in dict.fromkeys(b.shape for b in blocks):
            window, tiles, x_spec, y_spec, z = self.scratch.views(geom, shape)
            fwd, inv = self._plans(shape, tiles, x_spec, y_spec, z, slot)
            m = z.shape[0]
            self.shapes[shape] = dict(
                window=window, tiles=tiles, x_spec=x_spec, y_spec=y_spec, z=z,
                fwd=fwd, inv=inv,
                x3=x_spec.reshape(m, geom.channels, -1).view(real),
                y3=y_spec.reshape(m, geom.k, -1).view(real))

    def _plans(self, shape, tiles, x_spec, y_spec, z, slot):
        geom = self.geom

        # Planning overwrites its arrays: plan on a twin of the scratch.
        def twin():
            return _Scratch(geom, self.scratch.block).views(geom, shape)

        fwd = _plan(tiles, x_spec, _transform_axes(6, geom.tile_shape),
                    "FFTW_FORWARD", lambda: twin()[1:3], slot)
        inv = _plan(y_spec, z, _transform_axes(4, geom.tile_shape),
                    "FFTW_BACKWARD", lambda: twin()[3:5], slot)
        return fwd, inv

    @contextlib.contextmanager
    def bound(self):
        """Hold this worker's plans, bound to its arrays."""
        views = self.shapes.values()
        pairs = [(v["fwd"], v["tiles"], v["x_spec"]) for v in views]
        pairs += [(v["inv"], v["y_spec"], v["z"]) for v in views]
        with contextlib.ExitStack() as stack:
            # One global order (by identity), so concurrent calls whose
            # workers share plans cannot deadlock.
            for plan, src, dst in sorted(pairs, key=lambda p: id(p[0])):
                stack.enter_context(plan.lock)
                plan.fftw.update_arrays(src, dst)
            yield

    def run(self, x, weights, bias, y, block, phase_info):
        """All four stages for the tiles of ``block`` (single-threaded).

        Call inside :meth:`bound`.  ``weights``: a :class:`_WeightSpectra`;
        ``phase_info``: the kept residues along each axis (int64 arrays)
        and :func:`_untouched_lists`.
        """
        geom = self.geom
        rows, cols = geom.rows, geom.cols
        v = self.shapes[block.shape]
        r0, c0 = block.i0 * rows.b, block.j0 * cols.b
        _pad_phases_serial(x[block.n0:block.n0 + block.images], v["window"],
                           rows.stride, cols.stride,
                           rows.pad_lo - r0 * rows.stride,
                           cols.pad_lo - c0 * cols.stride,
                           phase_info[0], phase_info[1])
        if phase_info[2]:
            _zero_untouched_window(v["window"], geom, r0, c0, phase_info[2])
        v["fwd"].fftw.execute()
        w3 = weights.get()
        if w3.shape[0] == 1 and geom.k // geom.groups == 1:
            _multiply_lanes_serial(v["x3"], w3, v["y3"], _LANE_BLOCK)
        else:
            _contract_lanes_serial(v["x3"], w3, v["y3"], geom.groups,
                                   _LANE_BLOCK)
        v["inv"].fftw.execute()
        _scatter_block(v["z"], y, bias, block.n0, block.i0, block.j0,
                       block.rows, block.cols, rows.b, cols.b)


def _zero_untouched_window(window, geom, r0, c0, untouched):
    """:func:`_zero_untouched` on the window starting at padded (r0, c0)."""
    rows, cols = geom.rows, geom.cols
    p0n, p1n = len(rows.residues), len(cols.residues)
    n, _, hq, wq = window.shape
    six = window.reshape(n, geom.c, p0n, p1n, hq, wq)
    for axis, phase, idx in untouched:
        lo = r0 if axis == 0 else c0
        size = hq if axis == 0 else wq
        idx = idx[(idx >= lo) & (idx < lo + size)] - lo
        if not idx.size:
            continue
        if axis == 0:
            six[:, :, phase, :, idx, :] = 0
        else:
            six[:, :, :, phase, :, idx] = 0


def _untouched_lists(geom):
    """(axis, phase, padded positions) no output reads, non-empty only."""
    out = []
    for axis, geo in ((0, geom.rows), (1, geom.cols)):
        for phase in range(len(geo.residues)):
            idx = _untouched(geo, phase)
            if idx.size:
                out.append((axis, phase, idx))
    return out


class _WeightSpectra:
    """Filter spectra that one task worker computes while the others start.

    With a cache miss, worker 0 transforms the filters (single-threaded)
    before its first block, while the other workers pad and transform
    their first blocks' inputs; every worker waits only when it reaches
    its first contraction.  The 576^2 tiles of a 1024^2 image with a 63^2
    kernel spent 0.3 ms (of 4.5) in the filter transform before any block
    could start.
    """

    def __init__(self, w, geom, cache=True):
        self.w, self.geom, self.cache = w, geom, cache
        self.error = None
        self.ready = threading.Event()

    def _publish(self, spectra):
        spectra = np.ascontiguousarray(spectra)
        self.w3 = spectra.reshape(spectra.shape[0], self.geom.k, -1).view(
            self.geom.dtype)
        self.ready.set()

    def compute(self, slot):
        """Look them up or compute them (worker ``slot``); never raises.

        With ``cache``, through the shared weight cache (a hit costs one
        bitwise comparison of the filter).
        """
        geom = self.geom
        try:
            if self.cache:
                spectra = transformed_weights.get(
                    self.w, "fft", geom.weight_key(),
                    lambda own: weight_spectra(own, geom, slot))
            else:
                spectra = weight_spectra(self.w, geom, slot)
            self._publish(spectra)
        except BaseException as exc:   # re-raised by every waiting worker
            self.error = exc
            self.ready.set()

    def get(self):
        """The (Cg', K, 2F) real view, waiting for it if needed."""
        self.ready.wait()
        if self.error is not None:
            raise self.error
        return self.w3


class _TaskPlan:
    """What the task path needs for one geometry, kept across calls.

    The blocks, the phase tables and each worker slot's buffers and bound
    plans: building them took ~0.15 ms per call (two workers), 4 % of a
    1024^2 convolution.  A worker is only used inside its ``bound()``
    (which holds its plans' locks), so concurrent calls of one geometry
    take turns per slot.
    """

    def __init__(self, geom, tuning):
        self.geom = geom
        self.blocks = task_blocks(geom, tuning)
        self.phase_info = (np.array(geom.rows.residues, np.int64),
                           np.array(geom.cols.residues, np.int64),
                           _untouched_lists(geom))
        self._workers = {}
        self._lock = threading.Lock()
        self.nbytes = 0

    def worker(self, slot):
        with self._lock:
            w = self._workers.get(slot)
            if w is None:
                w = self._workers[slot] = _Worker(self.geom, self.blocks, slot)
                self.nbytes += w.scratch.nbytes
            return w


# (geometry, tunables of the cut into blocks) -> _TaskPlan; kept (least
# recently used first out) while their buffers total at most
# FFTTuning.task_plan_bytes.
_task_plans = OrderedDict()
_task_plans_lock = threading.Lock()


def _task_plan(geom, tuning):
    key = (geom, tuning.task_bytes, tuning.tasks_per_thread,
           tuning.min_task_seconds)
    with _task_plans_lock:
        plan = _task_plans.get(key)
        if plan is None:
            plan = _task_plans[key] = _TaskPlan(geom, tuning)
        _task_plans.move_to_end(key)
        total = sum(p.nbytes for p in _task_plans.values())
        while total > tuning.task_plan_bytes and len(_task_plans) > 1:
            _, old = _task_plans.popitem(last=False)
            total -= old.nbytes
    return plan


def _conv2d_tasks(x, weights, bias, geom, tuning):
    """The FFT convolution as tasks over blocks of tiles (few channels).

    ``weights`` is a :class:`_WeightSpectra`, ``tuning`` the call's
    FFTTuning (the worker threads read no tunables: the blocks are cut
    here).
    """
    plan = _task_plan(geom, tuning)
    blocks, phase_info = plan.blocks, plan.phase_info
    n_workers = max(1, min(numba.get_num_threads(), len(blocks)))
    y = np.empty(geom.out_shape, dtype=geom.dtype)
    if bias is None:
        bias = np.zeros(geom.k, geom.dtype)
    counter = itertools.count()

    def work(slot):
        if slot == 0:
            weights.compute(slot)
        worker = plan.worker(slot)
        with worker.bound():
            for t in iter(counter.__next__, None):
                if t >= len(blocks):
                    return
                worker.run(x, weights, bias, y, blocks[t], phase_info)

    if n_workers == 1:
        work(0)
        return y
    pool = _blas.thread_pool(n_workers - 1)
    futures = [pool.submit(work, slot) for slot in range(1, n_workers)]
    try:
        work(0)
    finally:
        for future in futures:
            future.result()
    return y


def conv2d(x, w, bias, stride, padding, dilation, groups, *, tile=None,
           freq_major=None, cache_weights=True):
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
    freq_major : bool, optional
        Force the spectrum layout (tests).
    cache_weights : bool
        Use the weight-spectrum cache.

    Returns
    -------
    y : ndarray (N, K, Ho, Wo) of x's dtype

    The tunables (``_tuning.current().fft``) are read once, here, and
    passed down.
    """
    tuning = _tuning.current().fft
    geom = plan_geometry(x.shape, w.shape, tuple(stride), tuple(padding),
                         tuple(dilation), int(groups), x.dtype, tile,
                         freq_major, tuning)
    if use_tasks(geom):
        return _conv2d_tasks(x, _WeightSpectra(w, geom, cache_weights),
                             bias, geom, tuning)
    w_spec = (cached_weight_spectra(w, geom) if cache_weights
              else weight_spectra(w, geom))
    y = np.empty(geom.out_shape, dtype=x.dtype)
    xpad = padded_input(x, geom)
    for chunk in chunks(geom, tuning):
        x_spec = input_spectra(x, geom, chunk, xpad)
        y_spec = contract(x_spec, w_spec, geom.groups)
        del x_spec
        inverse(y_spec, geom, bias, y, chunk.m0(geom))
    return y


def unsupported_reason(x_shape, w_shape, stride, padding, dilation, groups):
    """None: the FFT algorithm computes every configuration."""
    return None
