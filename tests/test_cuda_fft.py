"""CUDA FFT convolution (kernels/cuda/fft.py, kernels/cuda/_fft_stockham.py).

Runs on a GPU or in numba's CUDA simulator; skipped without numba-cuda.

* The Stockham FFT against ``numpy.fft`` (forward and unnormalised
  inverse, batched, lengths 1..32, both the shared-memory kernel and the
  global-memory path).
* Each convolution stage against its float64 NumPy definition: input and
  weight spectra against ``numpy.fft.rfft2`` of windows / phase kernels
  built here, both contractions (GEMM core and few-channel elementwise)
  against ``np.einsum`` and against each other, the inverse against
  ``numpy.fft.irfft2`` and the overlap-save scatter (output pre-filled
  with NaN so that an unwritten element shows).
* End to end through ``KERNELS[("conv2d", "fft")].run`` against
  ``reference.conv2d`` in units of the documented normwise bound
  (``kernels.accuracy``, c = 40), float32 and float64: padding
  (asymmetric), stride, dilation, stride with dilation, groups, 1-D,
  single and multi channel, bias, edge tiles, batch > 1, device arrays
  in and out; the cases have <= 8 channels per group (the few-channel
  contraction), a few also forced through the GEMM path, and one with
  Kg = 9 takes the GEMM on its own.

Simulator-sized: tiles of 1 .. 8 (every (frequency, group) pair is a GEMM
block, ~0.5 s each in the simulator).  Measured error constants
(simulator, which rounds like the GPU except for FMA contraction;
max |y - y_ref| / (u * normwise scale)), 1-D, C = K = 2, 9 taps, one
seed each:

    FFT length      16     64     256    1024
    float32         0.51   0.58   0.78   0.93
    float64         0.74   0.73   1.19   1.61

so c = 40 holds with a wide margin on long transforms too; the end-to-end
tests here observe c < 2.  (2-D 32 x 32 tiles and the global-memory path
at 2048 were not measured: 500-1000 GEMM blocks each, too slow for the
simulator.)
"""

from __future__ import annotations

import numpy as np
import pytest

from cuda_support import requires_cuda

pytestmark = requires_cuda
pytest.importorskip("numba_cuda")

import reference  # noqa: E402
from test_fft import phase_kernels, read_mask  # noqa: E402  (the CPU tests')
from kernels._dispatch import ConvSpec  # noqa: E402
from kernels.accuracy import (error_bound, error_in_bound_units,  # noqa: E402
                              normwise_scale, unit_roundoff)

DTYPES = (np.float32, np.float64)


@pytest.fixture(scope="module")
def cuda():
    from numba import cuda
    return cuda


@pytest.fixture(scope="module")
def fft():
    from kernels.cuda import fft
    return fft


@pytest.fixture(scope="module")
def stockham():
    from kernels.cuda import _fft_stockham
    return _fft_stockham


# --------------------------------------------------------------------------
# Definitions in float64 NumPy
# --------------------------------------------------------------------------

def split(z):
    return np.ascontiguousarray(np.stack([z.real, z.imag]))


def join(a):
    a = np.asarray(a, np.float64)
    return a[0] + 1j * a[1]


def zero_pad(x, padding):
    top, bottom, left, right = padding
    return np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)])


def tile_windows(x, geom, padding, kernel, dilation):
    """(M, C', t0, t1): the zero-padded phase-split window each tile reads,
    zero where no output reads it."""
    rows, cols = geom.rows, geom.cols
    xp = zero_pad(np.asarray(x, np.float64), padding)
    need_h = rows.padded * rows.stride + rows.stride
    need_w = cols.padded * cols.stride + cols.stride
    xp = np.pad(xp, [(0, 0), (0, 0), (0, max(0, need_h - xp.shape[2])),
                     (0, max(0, need_w - xp.shape[3]))])
    parts = []
    for ch in range(x.shape[1]):
        for r0 in rows.residues:
            for r1 in cols.residues:
                part = xp[:, ch, r0::rows.stride, r1::cols.stride][
                    :, :rows.padded, :cols.padded].copy()
                part[:, ~read_mask(rows, kernel[0], dilation[0], r0)] = 0
                part[:, :, ~read_mask(cols, kernel[1], dilation[1], r1)] = 0
                parts.append(part)
    xphase = np.stack(parts, axis=1)
    out = []
    for n in range(x.shape[0]):
        for i in range(rows.tiles):
            for j in range(cols.tiles):
                out.append(xphase[n, :, i * rows.b:i * rows.b + rows.t,
                                  j * cols.b:j * cols.b + cols.t])
    return np.stack(out)


def fft_tolerance(dtype, length, x):
    """Normwise: c u log2(2 L) sum_l |x_l| per transform, c = 8."""
    u = unit_roundoff(dtype)
    return 8 * u * np.log2(2 * length) * np.abs(x).sum(axis=0, keepdims=True)


def conv_reference(x, w, bias, stride, padding, dilation, groups):
    """(y_ref, |x| * |w| + |bias|) in float64 with asymmetric zero padding."""
    xp = zero_pad(np.asarray(x, np.float64), padding)
    w64 = np.asarray(w, np.float64)
    b = None if bias is None else np.asarray(bias, np.float64)
    y = reference.conv2d(xp, w64, b, stride, 0, dilation, groups)
    scale = reference.conv2d(np.abs(xp), np.abs(w64),
                             None if b is None else np.abs(b), stride, 0,
                             dilation, groups)
    return y, scale


def random_problem(seed, dtype, x_shape, w_shape, bias=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


# --------------------------------------------------------------------------
# The FFT itself
# --------------------------------------------------------------------------

@pytest.mark.parametrize("length, dtype", [
    (1, np.float64), (2, np.float32), (4, np.float64), (8, np.float32),
    (16, np.float64), (32, np.float32), (32, np.float64)])
def test_fft_matches_numpy(cuda, stockham, length, dtype):
    rng = np.random.default_rng(length)
    z = rng.standard_normal((length, 5)) + 1j * rng.standard_normal((length, 5))
    z = join(split(z).astype(dtype))
    buf = cuda.to_device(split(z).astype(dtype))
    stockham.fft_columns(buf)
    got = join(buf.copy_to_host())
    tol = fft_tolerance(dtype, length, z)
    assert (np.abs(got - np.fft.fft(z, axis=0)) <= tol).all()
    stockham.fft_columns(buf, inverse=True)
    back = join(buf.copy_to_host())
    # inverse is unnormalised: length * ifft
    expected = length * np.fft.ifft(np.fft.fft(z, axis=0), axis=0)
    assert (np.abs(back - expected) <= 2 * length * tol).all()


@pytest.mark.parametrize("length", [8, 16])
def test_fft_global_memory_path(cuda, stockham, length):
    rng = np.random.default_rng(7)
    z = rng.standard_normal((length, 3)) + 1j * rng.standard_normal((length, 3))
    buf = cuda.to_device(split(z))
    stockham.fft_columns(buf, force_global=True)
    got = join(buf.copy_to_host())
    assert (np.abs(got - np.fft.fft(z, axis=0))
            <= fft_tolerance(np.float64, length, z)).all()
    stockham.fft_columns(buf, inverse=True, force_global=True)
    back = join(buf.copy_to_host())
    assert np.allclose(back, length * z, rtol=0, atol=1e-12 * length)


def test_fft_rejects_non_power_of_two(cuda, stockham):
    buf = cuda.to_device(np.zeros((2, 6, 1)))
    with pytest.raises(ValueError, match="power of two"):
        stockham.fft_columns(buf)


# --------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------

def test_tiles_are_powers_of_two_and_cover_the_output(fft):
    for x_shape, w_shape, stride, padding, dilation in [
            ((1, 1, 56, 56), (1, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
            ((1, 1, 9, 300), (1, 1, 7, 5), (2, 1), (0, 1, 2, 0), (1, 3)),
            ((1, 1, 1, 3000), (1, 1, 1, 3), (1, 1), (0, 0, 0, 0), (1, 700)),
            ((1, 1, 5, 6), (1, 1, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1))]:
        geom = fft.plan_geometry(x_shape, w_shape, stride, padding, dilation, 1)
        for axis in (geom.rows, geom.cols):
            assert axis.t & (axis.t - 1) == 0, axis
            assert axis.b + axis.kq - 1 <= axis.t
            assert (axis.tiles - 1) * axis.b < axis.out <= axis.tiles * axis.b
            assert axis.t >= min(2 * axis.kq, axis.out + axis.kq - 1)
    # a 3 x 3 filter on a large image: 32 x 32 tiles; a small image: one tile
    big = fft.plan_geometry((1, 1, 56, 56), (1, 1, 3, 3), (1, 1),
                            (1, 1, 1, 1), (1, 1), 1)
    assert big.tile_shape == (32, 32) and big.rows.tiles == 2
    small = fft.plan_geometry((1, 1, 5, 6), (1, 1, 3, 3), (1, 1),
                              (0, 0, 0, 0), (1, 1), 1)
    assert small.tile_shape == (8, 8) and small.tiles == 1
    with pytest.raises(ValueError, match="powers of two"):
        fft.plan_geometry((1, 1, 9, 9), (1, 1, 3, 3), (1, 1), (0,) * 4,
                          (1, 1), 1, tile=(6, 8))


def test_unsupported_reason_is_none_like_the_cpu(fft):
    spec = ConvSpec.from_config((1, 4, 5, 7), (4, 2, 3, 3), (2, 3),
                                (1, 0, 2, 1), (2, 1), 2)
    assert fft.KERNELS[("conv2d", "fft")].reason(spec) is None


# --------------------------------------------------------------------------
# Stages against their definitions
# --------------------------------------------------------------------------

STAGE_PROBLEM = dict(x_shape=(2, 2, 9, 9), w_shape=(4, 1, 3, 3), stride=(2, 1),
                     padding=(1, 0, 2, 1), dilation=(1, 2), groups=2,
                     tile=(4, 8))


def stage_problem(fft, dtype=np.float64):
    p = STAGE_PROBLEM
    x, w, b = random_problem(3, dtype, p["x_shape"], p["w_shape"])
    geom = fft.plan_geometry(p["x_shape"], p["w_shape"], p["stride"],
                             p["padding"], p["dilation"], p["groups"], dtype,
                             p["tile"])
    return x, w, b, geom


def test_input_spectra_are_rfft2_of_the_tile_windows(cuda, fft):
    x, w, _, geom = stage_problem(fft)
    p = STAGE_PROBLEM
    assert geom.rows.tiles > 1 and geom.cols.tiles > 1   # edge tiles
    got = join(fft.input_spectra(cuda.to_device(x), geom).copy_to_host())
    windows = tile_windows(x, geom, p["padding"], p["w_shape"][2:],
                           p["dilation"])
    expected = np.fft.rfft2(windows).transpose(2, 3, 1, 0)   # (t0, h1, C', M)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-13 * np.abs(windows).sum()


def test_weight_spectra_are_reversed_scaled_rfft2(cuda, fft):
    x, w, _, geom = stage_problem(fft)
    t0, t1 = geom.tile_shape
    got = join(fft.weight_spectra(cuda.to_device(w), geom).copy_to_host())
    wp = phase_kernels(w, geom, STAGE_PROBLEM["dilation"])
    expected = np.conj(np.fft.rfft2(wp, (t0, t1))) / (t0 * t1)
    expected = expected.transpose(2, 3, 1, 0)                  # (t0, h1, Cg', K)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-14 * np.abs(wp).sum()


def contract_problem(dtype, groups=2, cp=4, k=6, m=5, t0=2, h1=2, seed=5):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((2, t0, h1, cp, m)).astype(dtype)
    ws = rng.standard_normal((2, t0, h1, cp // groups, k)).astype(dtype)
    return xs, ws


def per_group_einsum(a, b, groups):
    """Y[f][k, m] = sum_c W[f][c, k] X[f][c, m] within each group."""
    cg, kg = a.shape[2] // groups, b.shape[3] // groups
    return np.concatenate(
        [np.einsum("abcm,abck->abkm", a[:, :, g * cg:(g + 1) * cg],
                   b[:, :, :, g * kg:(g + 1) * kg]) for g in range(groups)],
        axis=2)


@pytest.mark.parametrize("stage, dtype, groups, cp, k, m", [
    ("contract", np.float32, 2, 4, 6, 5),
    ("contract_few", np.float32, 2, 4, 6, 5),
    ("contract_few", np.float64, 3, 6, 3, 37),    # Kg = 1, Cg' = 2
    ("contract_few", np.float64, 1, 1, 1, 7),     # single channel
])
def test_contract_matches_einsum(cuda, fft, stage, dtype, groups, cp, k, m):
    x, w, _, geom = stage_problem(fft, dtype)
    xs, ws = contract_problem(dtype, groups, cp, k, m)
    geom = geom._replace(groups=groups)
    got = join(getattr(fft, stage)(cuda.to_device(xs), cuda.to_device(ws),
                                   geom).copy_to_host())
    expected = per_group_einsum(join(xs), join(ws), groups)
    scale = per_group_einsum(np.abs(xs).sum(0), np.abs(ws).sum(0), groups)
    tol = 4 * (cp // groups) * unit_roundoff(dtype) * scale
    assert got.shape == expected.shape
    assert (np.abs(got - expected) <= tol).all()


def test_few_channel_contraction_sums_like_the_gemm(cuda, fft):
    """Same per-output order as the GEMM path: equal bit for bit where
    both round the same way (the simulator: no FMA contraction)."""
    from kernels.cuda._runtime import SIMULATOR
    x, w, _, geom = stage_problem(fft, np.float32)
    xs, ws = contract_problem(np.float32, seed=8)
    xs_d, ws_d = cuda.to_device(xs), cuda.to_device(ws)
    few = fft.contract_few(xs_d, ws_d, geom).copy_to_host()
    gemm = fft.contract(xs_d, ws_d, geom).copy_to_host()
    if SIMULATOR:
        np.testing.assert_array_equal(few, gemm)
    else:   # FMA contraction may differ between the two kernels
        np.testing.assert_allclose(few, gemm, rtol=0, atol=1e-5)


def test_few_channel_threshold(fft):
    from kernels.cuda._tuning import FFT
    small = fft.plan_geometry((1, 1, 20, 20), (1, 1, 3, 3), (1, 1),
                              (0,) * 4, (1, 1), 1)
    assert fft.few_channel(small)
    # Kg = 16 > 8: the GEMM core; Cg' = 4 channels x 4 phases = 16 > 8 too
    assert not fft.few_channel(small._replace(k=16))
    strided = fft.plan_geometry((1, 4, 20, 20), (2, 4, 3, 3), (2, 2),
                                (0,) * 4, (1, 1), 1)
    assert strided.channels_per_group == 16 and not fft.few_channel(strided)
    assert fft.few_channel(strided, FFT.__class__(few_channel_max_c=16))


def test_inverse_is_irfft2_then_overlap_save_scatter(cuda, fft):
    x, w, b, geom = stage_problem(fft)
    rows, cols = geom.rows, geom.cols
    t0, t1 = geom.tile_shape
    rng = np.random.default_rng(9)
    m_tiles = geom.m
    # spectra of real tiles, so that irfft2 is their exact inverse
    tiles = rng.standard_normal((m_tiles, geom.k, t0, t1))
    ys = np.fft.rfft2(tiles).transpose(2, 3, 1, 0)   # (t0, h1, K, M)
    y = cuda.to_device(np.full(geom.out_shape, np.nan))
    fft.inverse(cuda.to_device(split(ys)), geom, cuda.to_device(b), y)
    got = y.copy_to_host()
    expected = np.full(geom.out_shape, np.nan)
    ho, wo = expected.shape[2:]
    for m in range(m_tiles):
        n, i, j = np.unravel_index(m, (geom.n, rows.tiles, cols.tiles))
        oy, ox = i * rows.b, j * cols.b
        hh, ww = min(rows.b, ho - oy), min(cols.b, wo - ox)
        expected[n, :, oy:oy + hh, ox:ox + ww] = (
            tiles[m, :, :hh, :ww] * (t0 * t1) + b[:, None, None])
    assert not np.isnan(got).any()
    assert np.abs(got - expected).max() <= 1e-12 * t0 * t1


# --------------------------------------------------------------------------
# End to end against reference.conv2d, in units of the documented bound
# --------------------------------------------------------------------------

CASES = {
    # name: x_shape, w_shape, stride, padding, dilation, groups, bias, tile,
    # dtypes.  Tiny transforms: every (frequency, group) is a GEMM block.
    "default-tile-host-arrays": ((1, 1, 3, 3), (1, 1, 2, 2), (1, 1),
                                 (0, 0, 0, 0), (1, 1), 1, True, None,
                                 (np.float64,)),
    "asym-padding-edge-tiles-batch": ((2, 2, 6, 7), (3, 2, 2, 2), (1, 1),
                                      (1, 0, 2, 1), (1, 1), 1, True, (2, 4),
                                      DTYPES),
    "stride2-groups": ((1, 4, 7, 6), (4, 2, 3, 3), (2, 2), (1, 1, 0, 1),
                       (1, 1), 2, True, (2, 2), (np.float64,)),
    "dilation": ((1, 2, 3, 9), (2, 2, 1, 2), (1, 1), (0, 0, 1, 1), (1, 3), 1,
                 False, (1, 8), (np.float32,)),
    "stride-and-dilation": ((1, 2, 7, 9), (2, 2, 2, 2), (2, 3), (0, 1, 0, 0),
                            (2, 1), 1, True, (2, 1), (np.float64,)),
    "1d-multichannel": ((2, 3, 1, 20), (2, 3, 1, 3), (1, 2), (0, 0, 1, 2),
                        (1, 2), 1, True, (1, 8), (np.float32,)),
    "1d-single-channel": ((1, 1, 1, 17), (1, 1, 1, 4), (1, 1), (0, 0, 0, 0),
                          (1, 1), 1, False, (1, 8), (np.float64,)),
}
CASE_PARAMS = [pytest.param(name, dtype,
                            id=f"{name}-{np.dtype(dtype).name}")
               for name, case in CASES.items() for dtype in case[-1]]


def check_case(fft, case, dtype, seed=11, contraction=None):
    x_shape, w_shape, stride, padding, dilation, groups, bias, tile, _ = case
    x, w, b = random_problem(seed, dtype, x_shape, w_shape, bias)
    spec = ConvSpec.from_config(x_shape, w_shape, stride, padding, dilation,
                                groups, dtype)
    if tile is None and contraction is None:
        y = fft.KERNELS[("conv2d", "fft")].run(spec, x, w, b)
    else:
        from numba import cuda
        y = fft.conv2d(spec, cuda.to_device(x), cuda.to_device(w),
                       None if b is None else cuda.to_device(b),
                       tile=tile, contraction=contraction).copy_to_host()
    return x, w, b, y, spec


def assert_within_fft_bound(x, w, b, y, spec):
    y_ref, scale = conv_reference(x, w, b, spec.stride, spec.padding,
                                  spec.dilation, spec.groups)
    assert y.dtype == x.dtype and y.shape == y_ref.shape
    normwise = normwise_scale(x, w)
    bound = error_bound("fft", x.dtype, scale, normwise)
    c = error_in_bound_units("fft", x.dtype, y, y_ref, scale, normwise)
    assert (np.abs(y - y_ref) <= bound).all(), f"observed c = {c:.2f} > 40"


@pytest.mark.parametrize("name, dtype", CASE_PARAMS)
def test_conv2d_within_documented_bound(fft, name, dtype):
    # these have <= 8 channels per group: the few-channel contraction
    assert_within_fft_bound(*check_case(fft, CASES[name], dtype))


@pytest.mark.parametrize("name, dtype, contraction", [
    ("stride2-groups", np.float64, "gemm"),
    ("asym-padding-edge-tiles-batch", np.float32, "gemm"),
    ("1d-multichannel", np.float32, "gemm"),
    ("1d-single-channel", np.float64, "few"),
])
def test_conv2d_both_contractions(fft, name, dtype, contraction):
    assert_within_fft_bound(*check_case(fft, CASES[name], dtype,
                                        contraction=contraction))


def test_conv2d_many_channels_takes_the_gemm(fft, monkeypatch):
    """Kg = 9 > 8: the driver's own choice is the GEMM path."""
    calls = []
    monkeypatch.setattr(fft, "contract_few",
                        lambda *a, **k: calls.append("few"))
    case = ((1, 1, 3, 4), (9, 1, 2, 2), (1, 1), (0, 1, 0, 0), (1, 1), 1,
            False, (2, 4), ())
    assert_within_fft_bound(*check_case(fft, case, np.float64,
                                        contraction=None))
    assert calls == []


def test_conv2d_global_memory_fft_path(cuda, fft):
    x_shape, w_shape = (1, 2, 5, 6), (2, 2, 2, 2)
    x, w, b = random_problem(2, np.float64, x_shape, w_shape)
    spec = ConvSpec.from_config(x_shape, w_shape, (1, 1), (1, 0, 0, 1),
                                (1, 1), 1, np.float64)
    y = fft.conv2d(spec, cuda.to_device(x), cuda.to_device(w),
                   cuda.to_device(b), tile=(2, 4), force_global=True)
    assert_within_fft_bound(x, w, b, y.copy_to_host(), spec)


def test_device_arrays_in_device_array_out(cuda, fft):
    x_shape, w_shape = (1, 1, 3, 2), (2, 1, 2, 2)
    x, w, b = random_problem(4, np.float32, x_shape, w_shape)
    spec = ConvSpec.from_config(x_shape, w_shape, (1, 1), (0, 0, 0, 0),
                                (1, 1), 1, np.float32)
    out = fft.run(spec, cuda.to_device(x), cuda.to_device(w),
                  cuda.to_device(b))
    # (the simulator's device arrays have no __cuda_array_interface__)
    assert not isinstance(out, np.ndarray) and hasattr(out, "copy_to_host")
    assert out.shape == (1, 2, 2, 1) and out.dtype == np.float32
    assert_within_fft_bound(x, w, b, out.copy_to_host(), spec)
