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

The parts live in their own modules: :mod:`kernels._fft_geometry`
(backend-neutral: FFT lengths, tiles, polyphase split, chunks and blocks),
:mod:`kernels.cpu._fft_model` (cost model, :func:`choose_tile`),
:mod:`kernels.cpu._fft_plans` (FFTW plans, planner effort, buffers),
:mod:`kernels.cpu._fft_kernels` (Numba kernels) and
:mod:`kernels.cpu._fft_tasks` (the task-parallel path).  This module holds
the stages, the driver and the entry points, and re-exports the names
tests and benchmarks use.

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

Two execution paths.  With many channels (the BLAS contraction) the four
stages run one after the other over chunks of tiles, each stage spread
over the threads (FFTW's threads, prange, BLAS GEMMs split over Python
threads).  With few channels (the frequency-lane contraction),
:func:`conv2d` cuts the tiles into blocks (:func:`task_blocks`) that
Python threads pull from a shared counter, running every stage of a block
single-threaded (see :mod:`kernels.cpu._fft_tasks`): on the 2-vCPU
development VM that was 1.0-2x faster, chiefly because each staged step
waited for the slower thread.

Plans and threads: see :mod:`kernels.cpu._fft_plans`.  Not thread-safe to
call concurrently with different planner efforts; concurrent calls are
otherwise safe (each plan executes under its lock).
"""

from __future__ import annotations

import numba
import numpy as np

from .._dispatch import Kernel
from .. import _fft_geometry
from .._fft_geometry import (  # noqa: F401  (re-exported)
    FAST_ODD_PARTS, AxisGeometry, Block, Chunk, FFTGeometry, axis_geometry,
    axis_phases, overlapping_tiles, per_tile_bytes, fast_length,
    whole_batch)
from .._weight_cache import transformed_weights
from . import _blas, _tuning
from ._fft_kernels import scatter_tiles, fill_window, lane_product, phase_info
from ._fft_model import use_freq_major, choose_tile, clear_tile_cache
from ._fft_plans import (  # noqa: F401  (re-exported)
    aligned_width, empty_aligned, aligned_like, fftw_plan, spectrum_buffer, transform_axes,
    clear_plans, get_planner_effort, plan_count, set_planner_effort)
from ._fft_tasks import (conv2d_tasks, WeightSpectra, clear_task_plans,
                         task_blocks, task_plan_info)

__all__ = [
    "conv2d", "unsupported_reason", "fast_length", "FFTGeometry",
    "AxisGeometry", "Chunk", "Block", "plan_geometry", "choose_tile",
    "chunks", "task_blocks", "use_tasks",
    "padded_input", "input_spectra", "weight_spectra",
    "cached_weight_spectra", "contract", "inverse_tiles", "scatter",
    "inverse", "clear_caches", "cache_info", "set_planner_effort",
    "get_planner_effort",
]

# --------------------------------------------------------------------------
# Planning: tiles, layout, chunks, path
# --------------------------------------------------------------------------

def plan_geometry(x_shape, w_shape, stride, padding, dilation, groups,
                  dtype=np.float32, tile=None, freq_major=None, tuning=None):
    """Cut a normalised problem into transform tiles, with the CPU's choices.

    :func:`kernels._fft_geometry.plan_geometry`, whose arguments these
    are, except that ``tile`` defaults to :func:`choose_tile` (under
    ``tuning``, default ``_tuning.current().fft``) and ``freq_major`` to
    the layout the channel counts call for (tests force either).
    """
    dtype = np.dtype(dtype)
    if tile is None:
        tile = choose_tile(x_shape, w_shape, stride, padding, dilation,
                           groups, dtype.itemsize, tuning)
    geom = _fft_geometry.plan_geometry(x_shape, w_shape, stride, padding,
                                       dilation, groups, dtype, tile)
    if freq_major is None:
        freq_major = use_freq_major(geom.m, geom.channels_per_group,
                                     geom.k // geom.groups)
    return geom._replace(freq_major=bool(freq_major))


def chunks(geom, tuning=None):
    """Split the tiles into chunks of whole images or of rows of tiles.

    :func:`kernels._fft_geometry.chunks` with the budget
    ``tuning.chunk_bytes`` (default ``_tuning.current().fft``).
    """
    if tuning is None:
        tuning = _tuning.current().fft
    return _fft_geometry.chunks(geom, tuning.chunk_bytes)


def use_tasks(geom):
    """True when :func:`conv2d` runs the problem as tasks (lane contraction)."""
    return not geom.freq_major


# --------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------

def padded_input(x, geom):
    """Zero-padded, phase-split input covering every tile.

    Returns
    -------
    xpad : ndarray (N, C * phases, Hq, Wq)
        ``xpad[n, (c, p0, p1), u, v] = x[n, c, u s0 + r0 - top, v s1 + r1 -
        left]`` (zero outside ``x``), ``Hq = (tiles_rows - 1) b0 + t0`` and
        ``Wq`` the same along columns, rounded up for alignment.
    """
    xpad = empty_aligned((geom.n, geom.channels, geom.rows.padded,
                   aligned_width(geom.cols.padded, geom.dtype)), geom.dtype)
    fill_window(x, xpad, geom, 0, 0, phase_info(geom))
    return xpad


def _tile_view(xpad, geom, chunk):
    """(images, rows, tiles_cols, C', t0, t1) overlapping view of xpad."""
    base = xpad[chunk.n0:chunk.n0 + chunk.images, :, chunk.i0 * geom.rows.b:]
    return overlapping_tiles(base, geom, chunk.rows, geom.cols.tiles)


def _logical(buf, rows, cols, geom):
    """The (rows, cols, F0, F1h) view of a spectrum buffer."""
    spec = geom.spectrum_shape
    if geom.freq_major:
        return buf.reshape(spec + (rows, cols)).transpose(2, 3, 0, 1)
    return buf.reshape((rows, cols) + spec)


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
    buf, spec = spectrum_buffer(batch, geom.tile_shape, geom.complex_dtype,
                                 geom.freq_major)
    tiles = _tile_view(xpad, geom, chunk)

    def scratch():
        return (_tile_view(empty_aligned(xpad.shape, xpad.dtype), geom, chunk),
                spectrum_buffer(batch, geom.tile_shape, geom.complex_dtype,
                                 geom.freq_major)[1])

    # Out-of-place real-to-complex transforms never write their input (FFTW
    # manual, "Planner Flags"), so the overlapping tiles are read in place.
    plan = fftw_plan(tiles, spec, transform_axes(6, geom.tile_shape),
                 "FFTW_FORWARD", scratch)
    plan(tiles, spec)
    return _logical(buf, chunk.tiles(geom), geom.channels, geom)


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
        :func:`fftw_plan`); default: plans with FFTW's own threads.

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
    rows = empty_aligned((cgp, k, kq0, t1), geom.dtype)
    full_buf, full = spectrum_buffer((cgp, k), (t0, t1), cdtype,
                                      geom.freq_major)
    # Plans first: planning overwrites the arrays.
    if t0 == 1:
        row_spec = full
    else:
        _, row_spec = spectrum_buffer((cgp, k), (kq0, t1), cdtype, False)
        col_plan = fftw_plan(full, full, (2,), "FFTW_FORWARD", slot=slot)
    row_plan = fftw_plan(rows, row_spec, (3,), "FFTW_FORWARD", slot=slot)
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


def cached_weight_spectra(w, geom, slot=None):
    """:func:`weight_spectra`, reusing the spectra of an identical filter.

    The spectra live in the shared :data:`kernels._weight_cache.
    transformed_weights` (kind ``"fft"``, keyed on ``geom.weight_key()``);
    an entry is used only if its stored copy of the filter equals ``w`` bit
    for bit, so in-place changes of ``w`` are always seen.  ``slot``: as
    for :func:`weight_spectra`.
    """
    return transformed_weights.get(w, "fft", geom.weight_key(),
                                   lambda own: weight_spectra(own, geom, slot))


def _is_freq_major(a):
    """True when a logical (rows, cols, F0, F1h) array is (F0, F1h, rows, cols) in memory."""
    return a.transpose(2, 3, 0, 1).flags.c_contiguous


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


def _contract_blas(x_spec, w_spec, groups):
    """:func:`contract` on frequency-major spectra: a BLAS GEMM per frequency."""
    m, cp, f0, f1 = x_spec.shape
    cgp, k = w_spec.shape[:2]
    kg = k // groups
    nf = f0 * f1
    buf = empty_aligned((f0, f1, m, k), x_spec.dtype)
    x3 = x_spec.transpose(2, 3, 0, 1).reshape(nf, m, cp)
    w3 = w_spec.transpose(2, 3, 0, 1).reshape(nf, cgp, k)
    y3 = buf.reshape(nf, m, k)
    if groups > 1:
        x3 = x3.reshape(nf, m, groups, cgp).transpose(0, 2, 1, 3)
        w3 = w3.reshape(nf, cgp, groups, kg).transpose(0, 2, 1, 3)
        y3 = y3.reshape(nf, m, groups, kg).transpose(0, 2, 1, 3)
    _stacked_matmul(x3, w3, y3)
    return buf.transpose(2, 3, 0, 1)


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
    if _is_freq_major(x_spec) and _is_freq_major(w_spec) and not (
            x_spec.flags.c_contiguous and w_spec.flags.c_contiguous):
        return _contract_blas(x_spec, w_spec, groups)
    x_spec = np.ascontiguousarray(x_spec)
    w_spec = np.ascontiguousarray(w_spec)
    out = empty_aligned((m, k, f0, f1), x_spec.dtype)
    real = x_spec.real.dtype
    lane_product(x_spec.reshape(m, cp, -1).view(real),
                 w_spec.reshape(cgp, k, -1).view(real),
                 out.reshape(m, k, -1).view(real), groups)
    return out


def inverse_tiles(y_spec, geom):
    """Inverse transforms of tile spectra.

    Parameters
    ----------
    y_spec : complex ndarray, logical (Mc, K, F0, F1h); destroyed
        As :func:`contract` returns them.
    geom : FFTGeometry

    Returns
    -------
    z : ndarray (Mc, K, t0, t1) of geom.dtype
        ``numpy.fft.irfft2(Y, (t0, t1))`` of every spectrum (unscaled: the
        ``1 / (t0 t1)`` is in the weight spectra).
    """
    batch = y_spec.shape[:2]
    tiles = empty_aligned(batch + geom.tile_shape, geom.dtype)

    def scratch():
        return aligned_like(y_spec), empty_aligned(batch + geom.tile_shape, geom.dtype)

    plan = fftw_plan(y_spec, tiles, transform_axes(4, geom.tile_shape),
                 "FFTW_BACKWARD", scratch)
    plan(y_spec, tiles)
    return tiles


def scatter(z, geom, bias, out, m0=0):
    """Write the valid part of every tile into the output, adding the bias.

    ``out[n, k, i b0 + u, j b1 + v] = z[mm, k, u, v] + bias[k]`` for tile
    ``m0 + mm = (n, i, j)`` (C order over (N, tiles_rows, tiles_cols)),
    ``u < b0``, ``v < b1``, inside ``out``; returns ``out``.  ``bias``
    may be None.
    """
    if bias is None:
        bias = np.zeros(z.shape[1], geom.dtype)
    rows, cols = geom.rows, geom.cols
    scatter_tiles(z, out, bias, m0, 0, 0, 0, rows.tiles, cols.tiles, rows.b,
                   cols.b)
    return out


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
    return scatter(inverse_tiles(y_spec, geom), geom, bias, out, m0)


# --------------------------------------------------------------------------
# Driver and entry points
# --------------------------------------------------------------------------

def _conv2d_staged(x, w_spec, bias, geom, tuning):
    """The FFT convolution stage by stage over chunks of tiles (many
    channels; the task path is :func:`kernels.cpu._fft_tasks.conv2d_tasks`).
    """
    y = np.empty(geom.out_shape, dtype=geom.dtype)
    xpad = padded_input(x, geom)
    for chunk in chunks(geom, tuning):
        x_spec = input_spectra(x, geom, chunk, xpad)
        y_spec = contract(x_spec, w_spec, geom.groups)
        del x_spec
        inverse(y_spec, geom, bias, y, chunk.m0(geom))
    return y


def conv2d(x, w, bias, stride, padding, dilation, groups, *, tile=None,
           freq_major=None, cache_weights=True):
    """FFT convolution (behind ``KERNELS[("conv2d", "fft")]``).

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
        def spectra(slot):
            if cache_weights:
                return cached_weight_spectra(w, geom, slot)
            return weight_spectra(w, geom, slot)

        return conv2d_tasks(x, WeightSpectra(geom, spectra), bias, geom,
                             tuning)
    w_spec = (cached_weight_spectra(w, geom) if cache_weights
              else weight_spectra(w, geom))
    return _conv2d_staged(x, w_spec, bias, geom, tuning)


def unsupported_reason(x_shape, w_shape, stride, padding, dilation, groups):
    """None: the FFT algorithm computes every configuration."""
    return None


def clear_caches(plans=False):
    """Forget cached weight spectra (and FFTW plans, task plans and chosen
    tiles when ``plans``)."""
    transformed_weights.clear("fft")
    if plans:
        clear_plans()
        clear_task_plans()
        clear_tile_cache()


def cache_info():
    """Entries and bytes held by the weight-spectrum, plan and task caches.

    The weight figures are the ``"fft"`` entries of the shared
    :data:`kernels._weight_cache.transformed_weights`, whose bound
    (``max_bytes``, ``max_entries``) all algorithms share.
    """
    tasks, task_bytes = task_plan_info()
    return {"weight_entries": transformed_weights.count("fft"),
            "weight_bytes": transformed_weights.nbytes("fft"),
            "plans": plan_count(), "task_plans": tasks,
            "task_plan_bytes": task_bytes}


# --------------------------------------------------------------------------
# The backend contract (kernels._dispatch)
# --------------------------------------------------------------------------

def _run(spec, x, w, bias):
    return conv2d(x, w, bias, spec.stride, spec.padding, spec.dilation,
                  spec.groups)


def _unsupported(spec):
    return unsupported_reason(*spec.config())


KERNELS = {("conv2d", "fft"): Kernel(_run, _unsupported)}
