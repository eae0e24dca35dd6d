"""Cost model of the CPU FFT convolution, and the tile it chooses.

:func:`choose_tile` picks the transform lengths ``(t0, t1)`` that minimise
the modelled time; :func:`use_freq_major` picks the spectrum layout (BLAS
contraction or the frequency-lane loop) by channel counts.  The model's
constants were measured on the development machine; only their ratios
matter.  Tunables it reads (the staged path's chunk budget, the task
path's blocks per thread) come in an :class:`~kernels.cpu._tuning.
FFTTuning`, which is part of the tile cache's key.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .._fft_geometry import axis_geometry, fast_lengths_between, fast_length
from . import _tuning

__all__ = ["choose_tile"]

# --------------------------------------------------------------------------
# Spectrum layout
# --------------------------------------------------------------------------

# Per-frequency GEMMs with at least this many multiply-adds per row
# (C'/G * K/G) go to BLAS through the frequency-major layout, smaller ones
# to the frequency-lane Numba loop.  Measured (float32, one thread, CPU
# time per complex multiply-add): C = K = 8, 2 rows: loop 0.33 ns, BLAS
# 0.54 ns; C = K = 16, 49 rows: 0.27 vs 0.13 ns; C = K = 64: 0.32 vs
# 0.10 ns with 49 rows, 0.98 vs 0.52 ns with one row (both reading the
# weight spectra from memory).
_BLAS_MIN_CK = 64
_BLAS_MIN_ROWS = 1


def use_freq_major(m, cgp, kg):
    return cgp * kg >= _BLAS_MIN_CK and m >= _BLAS_MIN_ROWS


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
        cands = fast_lengths_between(max(kq, 2), single - 1)
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
    g_rows = axis_geometry(h, padding[0], padding[1], kh, dilation[0],
                            stride[0])
    g_cols = axis_geometry(w, padding[2], padding[3], kw, dilation[1],
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


def per_tile_seconds(geom):
    """Modelled single-thread time of one tile's transforms."""
    return (geom.channels + geom.k) * float(_transform_seconds(*geom.tile_shape))


def clear_tile_cache():
    """Forget the chosen tiles."""
    _TILE_CACHE.clear()
