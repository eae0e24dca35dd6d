"""FFT convolution on the GPU: transform, per-frequency contraction, inverse.

The CUDA counterpart of :mod:`kernels.cpu.fft`, with the same semantics
(cross-correlation as ``torch.nn.functional.conv2d``, any stride,
dilation, groups, asymmetric zero padding, bias, 1-D as H = 1) and the
same backend-neutral geometry, :mod:`kernels._fft_geometry`: overlap-save
tiles, stride by polyphase split (the phases become extra input
channels), dilation by zero insertion, inputs that no output reads
zeroed.  The FFTs are this backend's own (:mod:`kernels.cuda._fft_stockham`,
a Stockham radix-4/2 FFT in numba.cuda; no cuFFT).

**Transform lengths are powers of two** (the CPU uses FFTW's
``2**a * {1, 3, 5, 7, 9}``): :func:`choose_tile` picks per axis the
smallest power of two ``>= taps_per_tile * (kq - 1)`` clamped to
``[min_tile, max_tile]`` and at least ``2 kq`` (``kq`` the phase kernel's
length; :class:`kernels.cuda._tuning.FFTTuning`), or one tile of the
smallest power of two ``>= out + kq - 1`` when the whole axis fits in
that; :func:`plan_geometry` cuts the problem with
:func:`kernels._fft_geometry.plan_geometry` and replaces the FFTW length
of a single-tile axis by that power of two.

Stages (each a function, tested against its NumPy definition):

1. :func:`input_spectra`: for every tile ``m = (n, i, j)`` and
   phase-split channel ``c'``, the 2-D spectrum of its ``t0 x t1`` window
   of the zero-padded, phase-split input, read straight from ``x``
   through two small index maps (:func:`input_index_maps`: padded phase
   position -> row / column of ``x``, or -1 for padding and for inputs no
   output reads); no padded copy is made.  A row pass (complex FFTs of
   length ``t1`` of the real rows: the real-input transform done as a
   complex one, twice the arithmetic of a real-to-complex FFT, for
   simplicity) keeps the ``h1 = t1 / 2 + 1`` non-redundant columns, then a
   column pass (length ``t0``) runs in place on those only.  Spectra are
   split complex, frequency-major with the tiles last: ``X (2, t0, h1, C',
   M)``.
   :func:`weight_spectra`: the same for the phase-split filters, stored
   circularly reversed and scaled by ``1 / (t0 t1)`` (a power of two:
   exact), so that the product with an input spectrum is the spectrum of
   the circular cross-correlation and the inverse needs no scaling: ``W
   (2, t0, h1, Cg', K)``.
2. The contraction ``Y[f][k, m] = sum_c W[f][k, c] X[f][c, m]`` per
   frequency ``f`` and group, one of two kernels, chosen by
   :func:`few_channel` from the per-group channel counts ``Kg = K / G``
   and ``Cg'`` (phase-split input channels per group):

   * many channels (``Kg > FFTTuning.few_channel_max_k = 8`` or ``Cg' >
     few_channel_max_c = 8``): :func:`contract`, on the GEMM core
     (:mod:`kernels.cuda._gemm`) as a real GEMM: the loaders present ``A =
     [[Wr, -Wi], [Wi, Wr]]`` (2 Kg x 2 Cg') and ``B = [Xr; Xi]`` (2 Cg' x
     M), and the store writes ``[Yr; Yi]``; one GEMM per (frequency,
     group), the batch of the launch.  Tiles are the GEMM's N, contiguous
     in X and Y, so B loads and C stores are coalesced.
   * few channels: :func:`contract_few`, elementwise complex
     multiply-adds, one thread per (frequency, group, tile) (grid-stride,
     tiles fastest: coalesced X loads and Y stores, uniform W loads)
     computing all ``Kg`` outputs of its group.  Why: the GEMM pads ``M =
     2 Kg`` to its 64-row block tile and ``2 Cg'`` to 8, so it executes
     ``(2 Kg / 64) (2 Cg' / pad8(2 Cg'))`` useful FLOPs -- 3 % for a
     single-channel image (2 x 2), which left FFT slower than direct on
     2048^2 images at every kernel size in the roofline model.  The
     elementwise kernel wastes nothing but re-uses nothing through shared
     memory either (about one load per FMA, so near a quarter of the FMA
     rate when compute bound); the GEMM's useful share exceeds that only
     above ``Kg = 8``.  ``Cg' <= 8`` keeps the X lines each thread
     re-reads for its ``Kg`` outputs in L1 (:class:`kernels.cuda._tuning.
     FFTTuning` has the figures).
3./4. :func:`inverse`: a column pass (inverse, length ``t0``) in place on
   ``Y``, then the inverse row pass of the first ``b0`` rows of every tile
   (the only ones kept), which rebuilds each full row from its half by
   Hermitian symmetry (``Z[u, t1 - l] = conj(Z[u, l])``) and whose store
   *is* the overlap-save scatter: element ``(u, v)``, ``v < b1``, of tile
   ``(n, i, j)`` goes to ``y[n, k, i b0 + u, j b1 + v]`` (inside y) plus
   the bias, real part only.  Fusing stage 3's row pass with stage 4
   saves writing and reading ``K M t0 t1`` real values.

Launches per call (per chunk of images, :attr:`FFTTuning.chunk_bytes`):
input rows, input columns, contraction (GEMM: batches of at most 65535
(frequency, group) pairs, the grid's z limit; few channels: one
grid-stride launch), inverse columns, inverse rows + scatter; the weight
spectra (rows, columns) once per call.  FFT passes: blocks of
:attr:`FFTTuning.threads` threads, each block ``shared_length / L``
transforms of length ``L`` in shared memory; longer transforms (a phase
kernel of more than ``shared_length / 2`` taps) go stage by stage through
global memory.  GEMM: :data:`GEMM` blocks.  Few-channel contraction:
:attr:`FFTTuning.threads` threads per block, at most
:attr:`FFTTuning.contract_max_blocks` blocks.

Weight spectra are not cached: :mod:`kernels._weight_cache` keys on host
addresses and compares the filter bit for bit on the host, while this
entry point sees device arrays, so a lookup would cost a device-to-host
copy of ``w`` and a synchronisation, more than the two small launches
that transform the filters.

Determinism: every output element is written by one thread, sums in a
fixed order (FFT stages, GEMM dot products in increasing k); no atomics.
Both contractions sum each output in the same order -- the GEMM's K index
runs over ``[Xr; Xi]``, so ``Yr = sum_c Wr Xr + sum_c (-Wi) Xi`` and
``Yi = sum_c Wi Xr + sum_c Wr Xi``, c increasing in each -- so they agree
bit for bit wherever both round alike (the simulator: tested), and the
error constant is the same for both.

Accuracy: the documented FFT bound (:mod:`kernels.accuracy`, c = 40,
normwise) holds; measured constants are in ``tests/test_cuda_fft.py``'s
docstring.  Non-finite inputs never reach this kernel (the front end
sends them to direct): an FFT would spread one NaN over its whole tile.
"""

from __future__ import annotations

import functools

import numpy as np

from .._dispatch import Kernel
from .. import _fft_geometry
from .._fft_geometry import untouched_lists
from ._runtime import ReportEntry, cuda, device_entry, numba_type
from ._gemm import gemm_grid, gemm_kernel
from ._tuning import FFT, GEMM
from ._fft_tiles import choose_tile, next_pow2
from ._fft_stockham import (THREADS, column_loaders, dummy_aux, fft_columns,
                            global_kernels, run_pass, fft_kernel)

__all__ = ["choose_tile", "plan_geometry", "input_index_maps",
           "weight_tap_maps", "input_spectra", "weight_spectra", "contract",
           "few_channel", "contract_few", "few_channel_kernel", "inverse", "conv2d", "KERNELS", "REPORT"]

# Batches of one GEMM launch: gridDim.z is at most 65535.
_MAX_GRID_Z = 65535


# --------------------------------------------------------------------------
# Device functions: loaders and stores of the FFT passes and of the GEMM
# --------------------------------------------------------------------------

@cuda.jit(device=True, inline="always")
def _load_input(x, maps, aux_f, g, bt, l, zero):
    """Row ``u`` element ``l`` of tile m's window of phase channel c'.

    ``bt = u I + c' M + m``; ``g = (M, T0, T1, b0, b1, P0, P1, I)``.
    """
    m_tiles = g[0]
    inner = g[7]
    u = bt // inner
    i = bt % inner
    cp = i // m_tiles
    m = i % m_tiles
    tj = m % g[2]
    ti = (m // g[2]) % g[1]
    n = m // (g[2] * g[1])
    p1 = cp % g[6]
    p0 = (cp // g[6]) % g[5]
    c = cp // (g[6] * g[5])
    r = maps[0, p0, ti * g[3] + u]
    cc = maps[1, p1, tj * g[4] + l]
    if r >= 0 and cc >= 0:
        return x[n, c, r, cc], zero
    return zero, zero


@cuda.jit(device=True, inline="always")
def _load_weight(w, maps, scale, g, bt, l, zero):
    """Row ``u`` element ``l`` of the reversed, scaled phase filter.

    ``bt = (u Cg' + c') K + k``; ``g = (K, Cg', P0, P1, t0, t1)``; the
    reversed filter holds tap ``q`` at ``-q mod t``.
    """
    k_out = g[0]
    k = bt % k_out
    cp = (bt // k_out) % g[1]
    u = bt // (k_out * g[1])
    q0 = (g[4] - u) % g[4]
    q1 = (g[5] - l) % g[5]
    kq = maps.shape[2]
    if q0 < kq and q1 < kq:
        p1 = cp % g[3]
        p0 = (cp // g[3]) % g[2]
        c = cp // (g[3] * g[2])
        a0 = maps[0, p0, q0]
        a1 = maps[1, p1, q1]
        if a0 >= 0 and a1 >= 0:
            return w[k, c, a0, a1] * scale[0], zero
    return zero, zero


@cuda.jit(device=True, inline="always")
def _store_half(dst, aux_i, aux_f, g, bt, l, re, im):
    """Keep columns ``l < h1`` of row pass ``bt = u I + i`` in (2, t0, h1, I)."""
    if l < dst.shape[2]:
        inner = dst.shape[3]
        u = bt // inner
        i = bt % inner
        dst[0, u, l, i] = re
        dst[1, u, l, i] = im


@cuda.jit(device=True, inline="always")
def _load_hermitian(ys, aux_i, aux_f, g, bt, l, zero):
    """Element ``l`` of full row ``bt = u I + i`` of (2, t0, h1, I) half
    spectra: ``Z[t1 - l] = conj(Z[l])`` beyond the half; ``g[7] = t1``."""
    inner = ys.shape[3]
    u = bt // inner
    i = bt % inner
    if l < ys.shape[2]:
        return ys[0, u, l, i], ys[1, u, l, i]
    return ys[0, u, g[7] - l, i], -ys[1, u, g[7] - l, i]


@cuda.jit(device=True, inline="always")
def _store_output(y, aux_i, bias, g, bt, l, re, im):
    """Overlap-save scatter: ``y[n, k, i b0 + u, j b1 + l] = re (+ bias[k])``.

    ``bt = u (K M) + k M + m``, ``m = (n, i, j)``, ``l < b1``, inside y;
    ``g = (M, T0, T1, b0, b1, has_bias, K M, t1)``.
    """
    if l < g[4]:
        m_tiles = g[0]
        u = bt // g[6]
        i = bt % g[6]
        k = i // m_tiles
        m = i % m_tiles
        tj = m % g[2]
        ti = (m // g[2]) % g[1]
        n = m // (g[2] * g[1])
        oy = ti * g[3] + u
        ox = tj * g[4] + l
        if oy < y.shape[2] and ox < y.shape[3]:
            if g[5]:
                y[n, k, oy, ox] = re + bias[k]
            else:
                y[n, k, oy, ox] = re


@cuda.jit(device=True, inline="always")
def _gemm_load_w(ws, g, b, row, col):
    """A = [[Wr, -Wi], [Wi, Wr]] of frequency f, group grp.

    ``ws`` (2, F, Cg', K); ``g = (G, Kg, Cg', batch offset)``.
    """
    bb = b + g[3]
    f = bb // g[0]
    grp = bb % g[0]
    pr = row // g[1]
    kk = row - pr * g[1]
    pc = col // g[2]
    c = col - pc * g[2]
    v = ws[pr ^ pc, f, c, grp * g[1] + kk]
    if pr == 0 and pc == 1:
        return -v
    return v


@cuda.jit(device=True, inline="always")
def _gemm_load_x(xs, g, b, row, n):
    """B = [Xr; Xi] of frequency f, group grp: ``xs`` (2, F, C', M)."""
    bb = b + g[3]
    f = bb // g[0]
    grp = bb % g[0]
    pc = row // g[2]
    c = row - pc * g[2]
    return xs[pc, f, grp * g[2] + c, n]


@cuda.jit(device=True, inline="always")
def _gemm_store_y(ys, g, b, row, n, value):
    """[Yr; Yi] into ``ys`` (2, F, K, M)."""
    bb = b + g[3]
    f = bb // g[0]
    grp = bb % g[0]
    pr = row // g[1]
    kk = row - pr * g[1]
    ys[pr, f, grp * g[1] + kk, n] = value


# --------------------------------------------------------------------------
# Few-channel contraction: elementwise complex multiply-adds
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def few_channel_kernel(dtype):
    """The elementwise contraction for ``dtype`` (cached).

    ``few_channel(ws, xs, ys, groups, kg, cgp)``: ``ws`` (2, F, Cg', K),
    ``xs`` (2, F, C', M), ``ys`` (2, F, K, M).  One thread per (frequency
    ``f``, group, tile ``m``), grid-stride, ``m`` fastest (coalesced
    X loads and Y stores; the W loads of a warp are uniform).  For each
    output ``k`` of its group it sums in the GEMM path's order (the
    GEMM's K index runs over ``[Xr; Xi]``): first ``Yr += Wr Xr``,
    ``Yi += Wi Xr`` for c increasing, then ``Yr += (-Wi) Xi``, ``Yi += Wr
    Xi`` for c increasing.
    """
    nbtype = numba_type(dtype)

    @cuda.jit
    def few_channel(ws, xs, ys, groups, kg, cgp):
        m_tiles = xs.shape[3]
        total = xs.shape[1] * groups * m_tiles
        for i in range(cuda.grid(1), total, cuda.gridsize(1)):
            m = i % m_tiles
            fg = i // m_tiles
            grp = fg % groups
            f = fg // groups
            c0 = grp * cgp
            for k in range(grp * kg, grp * kg + kg):
                re = nbtype(0)
                im = nbtype(0)
                for c in range(cgp):
                    xr = xs[0, f, c0 + c, m]
                    re += ws[0, f, c, k] * xr
                    im += ws[1, f, c, k] * xr
                for c in range(cgp):
                    xi = xs[1, f, c0 + c, m]
                    re += -ws[1, f, c, k] * xi
                    im += ws[0, f, c, k] * xi
                ys[0, f, k, m] = re
                ys[1, f, k, m] = im

    return few_channel


# --------------------------------------------------------------------------
# Geometry: power-of-two tiles on the shared overlap-save geometry
# --------------------------------------------------------------------------

def _pow2_axis(axis, t):
    """The shared geometry's axis with a power-of-two length: it replaces a
    tile length that covers the whole axis by FFTW's fast length."""
    if axis.t == t:
        return axis
    return axis._replace(t=next_pow2(axis.out + axis.kq - 1))


def plan_geometry(x_shape, w_shape, stride, padding, dilation, groups,
                  dtype=np.float32, tile=None):
    """:func:`kernels._fft_geometry.plan_geometry` with power-of-two lengths.

    ``tile`` (powers of two) defaults to :func:`choose_tile`; a length at
    least the whole axis gives one tile of the smallest power of two that
    holds it.
    """
    if tile is None:
        tile = choose_tile(x_shape, w_shape, stride, padding, dilation)
    tile = tuple(int(t) for t in tile)
    if any(t < 1 or t & (t - 1) for t in tile):
        raise ValueError(f"CUDA FFT tile lengths must be powers of two, got {tile}")
    geom = _fft_geometry.plan_geometry(tuple(x_shape), tuple(w_shape),
                                       tuple(stride), tuple(padding),
                                       tuple(dilation), int(groups), dtype,
                                       tile)
    return geom._replace(rows=_pow2_axis(geom.rows, tile[0]),
                         cols=_pow2_axis(geom.cols, tile[1]))


def input_index_maps(geom):
    """int32 (2, P, S): where each padded phase position reads ``x``.

    ``maps[0, p0, u]`` is the row of ``x`` that row ``u`` of row phase
    ``p0`` holds (``u s0 + r0 - top``), ``maps[1, p1, v]`` the column;
    -1 for padding, for positions no output reads
    (:func:`kernels._fft_geometry.untouched_lists`) and past the axis.
    """
    rows, cols = geom.rows, geom.cols
    phases = max(len(rows.residues), len(cols.residues))
    maps = np.full((2, phases, max(rows.padded, cols.padded)), -1, np.int32)
    for a, axis in enumerate((rows, cols)):
        u = np.arange(axis.padded)
        for p, r in enumerate(axis.residues):
            src = u * axis.stride + r - axis.pad_lo
            maps[a, p, :axis.padded] = np.where(
                (src >= 0) & (src < axis.size), src, -1)
    for a, phase, idx in untouched_lists(geom):
        maps[a, phase, idx] = -1
    return maps


def weight_tap_maps(geom):
    """int32 (2, P, KQ): ``maps[0, p0, q0]`` is the filter row whose tap is
    position ``q0`` of row phase ``p0`` (-1 where none), ``[1]`` columns."""
    rows, cols = geom.rows, geom.cols
    phases = max(len(rows.residues), len(cols.residues))
    maps = np.full((2, phases, max(rows.kq, cols.kq)), -1, np.int32)
    for a, axis in enumerate((rows, cols)):
        for tap, (p, q) in enumerate(zip(axis.taps_phase, axis.taps_q)):
            maps[a, p, q] = tap
    return maps


@functools.lru_cache(maxsize=64)
def _device_maps(kind, rows, cols):
    geom = _fft_geometry.FFTGeometry(0, 0, 0, 1, 0, rows, cols,
                                     np.dtype(np.float64), False)
    maps = input_index_maps(geom) if kind == "input" else weight_tap_maps(geom)
    return cuda.to_device(maps)


# --------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------

def _half(geom):
    return geom.cols.t // 2 + 1


def input_spectra(x, geom, stream=0, force_global=False):
    """Spectra of every input tile: device ``X (2, t0, h1, C', M)``.

    ``X[0] + 1j X[1]`` at ``[:, :, c', m]`` is ``numpy.fft.rfft2`` of the
    ``t0 x t1`` window tile ``m = (n, i, j)`` (C order over the images of
    ``x``, ``geom.rows.tiles``, ``geom.cols.tiles``) reads of phase channel
    ``c' = (c, p0, p1)``: the padded phase signal at rows ``i b0 ..``,
    columns ``j b1 ..``, zero where no output reads it.  ``x`` is the
    device input (its batch may be a chunk of ``geom``'s).
    """
    rows, cols = geom.rows, geom.cols
    dtype = np.dtype(x.dtype)
    t0, t1, h1 = rows.t, cols.t, _half(geom)
    m_tiles = x.shape[0] * geom.tiles
    inner = geom.channels * m_tiles
    xs = cuda.device_array((2, t0, h1, inner), dtype, stream=stream)
    maps = _device_maps("input", rows, cols)
    g = (m_tiles, rows.tiles, cols.tiles, rows.b, cols.b,
         len(rows.residues), len(cols.residues), inner)
    run_pass(_load_input, _store_half, x, xs, maps, dummy_aux(dtype)[1], g,
             t0 * inner, t1, False, dtype, stream, force_global)
    fft_columns(xs.reshape(2, t0, h1 * inner), False, stream, force_global)
    return xs.reshape(2, t0, h1, geom.channels, m_tiles)


def weight_spectra(w, geom, stream=0, force_global=False):
    """Spectra of the reversed, scaled phase filters: ``W (2, t0, h1, Cg', K)``.

    ``W[0] + 1j W[1]`` at ``[:, :, c', k]`` is ``conj(rfft2(w_phase[k,
    c'], (t0, t1))) / (t0 t1)``, ``w_phase[k, (c, p0, p1), q0, q1] =
    w[k, c, a0, a1]`` for the taps of phase ``(p0, p1)`` at ``(q0, q1)``.
    """
    rows, cols = geom.rows, geom.cols
    dtype = np.dtype(w.dtype)
    t0, t1, h1 = rows.t, cols.t, _half(geom)
    cgp, k_out = geom.channels_per_group, geom.k
    inner = cgp * k_out
    ws = cuda.device_array((2, t0, h1, inner), dtype, stream=stream)
    scale = cuda.to_device(np.array([1.0 / (t0 * t1)], dtype), stream=stream)
    g = (k_out, cgp, len(rows.residues), len(cols.residues), t0, t1)
    run_pass(_load_weight, _store_half, w, ws,
             _device_maps("weight", rows, cols), scale, g, t0 * inner, t1,
             False, dtype, stream, force_global)
    fft_columns(ws.reshape(2, t0, h1 * inner), False, stream, force_global)
    return ws.reshape(2, t0, h1, cgp, k_out)


def contract(xs, ws, geom, stream=0):
    """``Y[f][k, m] = sum_c' W[f][c', k] X[f][c', m]`` per frequency and group.

    ``xs`` (2, t0, h1, C', M), ``ws`` (2, t0, h1, Cg', K) split complex;
    returns ``Y (2, t0, h1, K, M)``: ``Y[:, :, :, g Kg + kk]`` sums over
    the channels ``g Cg' + c`` of group ``g`` only.
    """
    _, t0, h1, cp, m_tiles = xs.shape
    cgp, k_out = ws.shape[3], ws.shape[4]
    groups = geom.groups
    kg = k_out // groups
    nf = t0 * h1
    dtype = np.dtype(xs.dtype)
    ys = cuda.device_array((2, t0, h1, k_out, m_tiles), dtype, stream=stream)
    x4 = xs.reshape(2, nf, cp, m_tiles)
    w4 = ws.reshape(2, nf, cgp, k_out)
    y4 = ys.reshape(2, nf, k_out, m_tiles)
    kernel = gemm_kernel(_gemm_load_w, _gemm_load_x, _gemm_store_y, dtype)
    total = nf * groups
    for b0 in range(0, total, _MAX_GRID_Z):
        batch = min(_MAX_GRID_Z, total - b0)
        kernel[gemm_grid(2 * kg, m_tiles, batch), GEMM.threads, stream](
            w4, x4, y4, (groups, kg, cgp, b0), 2 * kg, m_tiles, 2 * cgp)
    return ys


def few_channel(geom, tuning=None):
    """True when :func:`contract_few` runs the contraction: at most
    ``tuning.few_channel_max_k`` outputs and ``few_channel_max_c`` phase
    channels per group (:class:`kernels.cuda._tuning.FFTTuning`)."""
    tuning = FFT if tuning is None else tuning
    return (geom.k // geom.groups <= tuning.few_channel_max_k
            and geom.channels_per_group <= tuning.few_channel_max_c)


def contract_few(xs, ws, geom, stream=0):
    """:func:`contract` as elementwise complex multiply-adds, no GEMM.

    Same arguments, result and per-output summation order as
    :func:`contract`; no tile padding, for few channels per group.
    """
    _, t0, h1, cp, m_tiles = xs.shape
    cgp, k_out = ws.shape[3], ws.shape[4]
    groups = geom.groups
    nf = t0 * h1
    dtype = np.dtype(xs.dtype)
    ys = cuda.device_array((2, t0, h1, k_out, m_tiles), dtype, stream=stream)
    total = nf * groups * m_tiles
    threads = FFT.threads
    blocks = max(1, min(FFT.contract_max_blocks, -(-total // threads)))
    few_channel_kernel(dtype)[blocks, threads, stream](
        ws.reshape(2, nf, cgp, k_out), xs.reshape(2, nf, cp, m_tiles),
        ys.reshape(2, nf, k_out, m_tiles), groups, k_out // groups, cgp)
    return ys


def inverse(ys, geom, bias, y, stream=0, force_global=False):
    """Inverse transforms of ``Y`` and the overlap-save scatter into ``y``.

    ``ys`` (2, t0, h1, K, M) is destroyed (column pass in place); ``y``
    (images, K, Ho, Wo) receives ``irfft2(Y[:, :, k, m], (t0, t1))[u, v]
    (+ bias[k])`` at ``(i b0 + u, j b1 + v)`` for ``u < b0``, ``v < b1``
    inside ``y`` (unscaled: ``1 / (t0 t1)`` is in the weight spectra).
    Returns ``y``.
    """
    rows, cols = geom.rows, geom.cols
    dtype = np.dtype(ys.dtype)
    _, t0, h1, k_out, m_tiles = ys.shape
    inner = k_out * m_tiles
    fft_columns(ys.reshape(2, t0, h1 * inner), True, stream, force_global)
    has_bias = bias is not None
    if not has_bias:
        bias = dummy_aux(dtype)[1]
    g = (m_tiles, rows.tiles, cols.tiles, rows.b, cols.b, int(has_bias),
         inner, cols.t)
    run_pass(_load_hermitian, _store_output, ys.reshape(2, t0, h1, inner), y,
             dummy_aux(dtype)[0], bias, g, rows.b * inner, cols.t, True, dtype,
             stream, force_global)
    return y


# --------------------------------------------------------------------------
# Driver and entry point
# --------------------------------------------------------------------------

def _chunk_images(geom, tuning):
    f = geom.rows.t * _half(geom)
    per_image = 2 * f * (geom.channels + geom.k) * geom.tiles * geom.dtype.itemsize
    return max(1, min(geom.n, tuning.chunk_bytes // max(1, per_image)))


def conv2d(spec, x, w, bias, stream=0, tile=None, force_global=False,
           contraction=None):
    """FFT convolution of device arrays; returns a new device ``y``.

    ``tile`` forces the transform lengths (powers of two; tests),
    ``force_global`` the global-memory FFT path (tests), ``contraction``
    ``"few"`` (:func:`contract_few`) or ``"gemm"`` (:func:`contract`)
    instead of the choice of :func:`few_channel` (tests, benchmarks).
    """
    geom = plan_geometry(spec.x_shape, spec.w_shape, spec.stride,
                         spec.padding, spec.dilation, spec.groups,
                         x.dtype, tile)
    if contraction is None:
        contraction = "few" if few_channel(geom) else "gemm"
    if contraction not in ("few", "gemm"):
        raise ValueError(f"contraction must be 'few' or 'gemm', got {contraction!r}")
    contract_fn = contract_few if contraction == "few" else contract
    y = cuda.device_array(geom.out_shape, x.dtype, stream=stream)
    ws = weight_spectra(w, geom, stream, force_global)
    step = _chunk_images(geom, FFT)
    for n0 in range(0, geom.n, step):
        n1 = min(geom.n, n0 + step)
        xs = input_spectra(x[n0:n1], geom, stream, force_global)
        ys = contract_fn(xs, ws, geom, stream)
        del xs
        inverse(ys, geom, bias, y[n0:n1], stream, force_global)
    return y


def _run(spec, x, w, bias, stream=0):
    return conv2d(spec, x, w, bias, stream)


def unsupported_reason(spec):
    """None: as on the CPU, the FFT algorithm computes every configuration
    (:func:`kernels.cpu.fft.unsupported_reason`)."""
    return None


run = device_entry(_run)

KERNELS = {("conv2d", "fft"): Kernel(run, unsupported_reason)}


# --------------------------------------------------------------------------
# Compilation report: every kernel the driver launches
# --------------------------------------------------------------------------

def _types(dtype):
    from numba import types
    t = numba_type(dtype)
    return types, t, t[:, :, :, ::1], t[:, :, ::1]


def _pass_signature(src, dst, glen):
    def signature(dtype):
        types, t, arr4, arr3 = _types(dtype)
        arrays = {"4": arr4, "3": arr3}
        return (arrays[src], arrays[dst], types.int32[:, :, ::1], t[::1],
                types.UniTuple(types.int64, glen), types.int64, types.int64,
                types.int64, t[:, ::1])
    return signature


def _gather_signature(src, glen):
    def signature(dtype):
        types, t, arr4, arr3 = _types(dtype)
        return ({"4": arr4, "3": arr3}[src], types.int32[:, :, ::1], t[::1],
                types.UniTuple(types.int64, glen), types.int64, types.int64,
                arr3)
    return signature


def _scatter_signature(dst, glen):
    def signature(dtype):
        types, t, arr4, arr3 = _types(dtype)
        return (arr3, {"4": arr4, "3": arr3}[dst], types.int32[:, :, ::1],
                t[::1], types.UniTuple(types.int64, glen), types.int64,
                types.int64)
    return signature


def _stage_signature(dtype):
    types, t, _, arr3 = _types(dtype)
    return (arr3, arr3, types.int64, types.int64, types.int64, t[:, ::1])


def _gemm_signature(dtype):
    types, _, arr4, _ = _types(dtype)
    return (arr4, arr4, arr4, types.UniTuple(types.int64, 4), types.int64,
            types.int64, types.int64)


def _few_signature(dtype):
    types, _, arr4, _ = _types(dtype)
    return (arr4, arr4, arr4, types.int64, types.int64, types.int64)


_PASSES = (
    # name, load, store, src rank, dst rank, geom length
    ("input_rows", _load_input, _store_half, "4", "4", 8),
    ("weight_rows", _load_weight, _store_half, "4", "4", 6),
    ("columns", *column_loaders(), "3", "3", 1),
    ("inverse_rows_scatter", _load_hermitian, _store_output, "4", "4", 8),
)


def _report_entries():
    entries = []
    for name, load, store, src, dst, glen in _PASSES:
        entries.append(ReportEntry(
            "fft", name, functools.partial(fft_kernel, load, store),
            _pass_signature(src, dst, glen), THREADS,
            note="shared-memory Stockham radix-4/2 pass"))
        entries.append(ReportEntry(
            "fft", name + "_gather",
            lambda dtype, load=load, store=store:
                global_kernels(load, store, dtype)[0],
            _gather_signature(src, glen), THREADS,
            note="global-memory path (length > shared_length)"))
        entries.append(ReportEntry(
            "fft", name + "_scatter",
            lambda dtype, load=load, store=store:
                global_kernels(load, store, dtype)[2],
            _scatter_signature(dst, glen), THREADS,
            note="global-memory path (length > shared_length)"))
    entries.append(ReportEntry(
        "fft", "global_stage",
        lambda dtype: global_kernels(*column_loaders(), dtype)[1],
        _stage_signature, THREADS,
        note="one radix-2 stage through global memory"))
    entries.append(ReportEntry(
        "fft", "contract",
        lambda dtype: gemm_kernel(_gemm_load_w, _gemm_load_x, _gemm_store_y,
                                  dtype),
        _gemm_signature, GEMM.threads,
        note="GEMM core, complex as [[Wr,-Wi],[Wi,Wr]] x [Xr;Xi]"))
    entries.append(ReportEntry(
        "fft", "contract_few", few_channel_kernel, _few_signature,
        FFT.threads,
        note="few channels: elementwise complex multiply-adds, grid-stride"))
    return entries


REPORT = _report_entries()
