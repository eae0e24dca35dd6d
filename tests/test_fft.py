"""FFT convolution (kernels/cpu/fft.py).

* The FFT-length rule is checked against its definition by brute force
  (``2**a * m``, odd part ``m`` in {1, 3, 5, 7, 9}, ``>= n``, minimal).
* Each stage is checked against its definition in float64 NumPy: the
  padded, phase-split input against ``np.pad`` and slicing, the input and
  weight spectra against ``numpy.fft.rfft2`` of windows / phase kernels
  built here, the contraction against ``np.einsum``, and the inverse
  against ``numpy.fft.irfft2`` followed by the overlap-save scatter (output
  pre-filled with NaN so an unwritten element shows).  Both spectrum
  layouts (batch-major, frequency-major) and chunked tiles are covered.
* End to end, results are held to ``kernels.accuracy.error_bound("fft",
  ...)`` (normwise) against ``reference.conv2d`` in both dtypes, with
  stride, dilation, groups, asymmetric padding, H = 1 and forced tilings
  whose blocks straddle the image border; tiled and untiled results are
  compared with each other.
* The weight-spectrum cache never returns spectra of a filter that was
  modified in place, or of another filter of the same shape.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import kernels
import reference
from kernels.accuracy import error_bound
from kernels.cpu import _tuning, fft

DTYPES = (np.float32, np.float64)
over_dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
over_layouts = pytest.mark.parametrize("freq_major", [False, True],
                                       ids=["batch-major", "freq-major"])


# --------------------------------------------------------------------------
# Helpers: definitions in float64 NumPy
# --------------------------------------------------------------------------

def odd_part(n):
    while n % 2 == 0:
        n //= 2
    return n


def dilate(w, dilation):
    """Zero-inserted kernel: taps at multiples of the dilation."""
    dh, dw = dilation
    k, c, kh, kw = w.shape
    out = np.zeros((k, c, dh * (kh - 1) + 1, dw * (kw - 1) + 1), w.dtype)
    out[:, :, ::dh, ::dw] = w
    return out


def zero_pad(x, padding):
    top, bottom, left, right = padding
    return np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)])


def reference_conv(x, w, bias, stride, padding, dilation, groups):
    """reference.conv2d with asymmetric zero padding (np.pad, then valid)."""
    xp = zero_pad(np.asarray(x, np.float64), padding)
    b = None if bias is None else np.asarray(bias, np.float64)
    return reference.conv2d(xp, np.asarray(w, np.float64), b, stride, 0,
                            dilation, groups)


def fft_bound(dtype, x, w, bias, stride, padding, dilation, groups):
    """The documented bound: c u max(|x| * |w| + |bias|)."""
    scale = reference_conv(np.abs(x), np.abs(w),
                           None if bias is None else np.abs(bias),
                           stride, padding, dilation, groups)
    return error_bound("fft", dtype, scale)


def assert_within(y, y_ref, tol, what):
    assert y.shape == y_ref.shape, f"{what}: shape {y.shape} != {y_ref.shape}"
    err = np.abs(np.asarray(y, np.float64) - y_ref)
    assert np.isfinite(y).all(), f"{what}: non-finite output"
    worst = np.unravel_index(np.argmax(err - tol), err.shape) if err.size else ()
    assert (err <= tol).all(), (
        f"{what}: |diff| {err[worst]:.3e} > tolerance "
        f"{np.broadcast_to(tol, err.shape)[worst]:.3e} at {worst}")


def read_mask(axis, kernel, dilation, residue):
    """Phase positions u (padded index u s + r) that some output reads."""
    s = axis.stride
    read = np.zeros(axis.padded, bool)
    for o in range(axis.out):
        for a in range(kernel):
            e = o * s + a * dilation - residue
            if e % s == 0 and 0 <= e // s < axis.padded:
                read[e // s] = True
    return read


def phase_signals(x, geom, padding, kernel=None, dilation=None):
    """xpad[n, (c, p0, p1), u, v] = zero_pad(x)[n, c, u s0 + r0, v s1 + r1].

    With ``kernel`` and ``dilation``, positions that no output reads are
    zero (what the FFT module must do, see test_inputs_no_output_reads...).
    """
    rows, cols = geom.rows, geom.cols
    xp = zero_pad(np.asarray(x, np.float64), padding)
    # Enough zeros after the input for every tile window.
    need_h = rows.padded * rows.stride + rows.stride
    need_w = cols.padded * cols.stride + cols.stride
    xp = np.pad(xp, [(0, 0), (0, 0), (0, max(0, need_h - xp.shape[2])),
                     (0, max(0, need_w - xp.shape[3]))])
    parts = []
    n, c = x.shape[:2]
    for ch in range(c):
        for r0 in rows.residues:
            for r1 in cols.residues:
                part = xp[:, ch, r0::rows.stride, r1::cols.stride][
                    :, :rows.padded, :cols.padded].copy()
                if kernel is not None:
                    part[:, ~read_mask(rows, kernel[0], dilation[0], r0)] = 0
                    part[:, :, ~read_mask(cols, kernel[1], dilation[1], r1)] = 0
                parts.append(part)
    return np.stack(parts, axis=1)


def tile_windows(xphase, geom):
    """(N * tiles, C', t0, t1): the window tile (n, i, j) reads."""
    rows, cols = geom.rows, geom.cols
    out = []
    for n in range(xphase.shape[0]):
        for i in range(rows.tiles):
            for j in range(cols.tiles):
                out.append(xphase[n, :, i * rows.b:i * rows.b + rows.t,
                                  j * cols.b:j * cols.b + cols.t])
    return np.stack(out)


def phase_kernels(w, geom, dilation):
    """(K, Cg * phases, kq0, kq1): wd[q s + r] of the dilated kernel."""
    rows, cols = geom.rows, geom.cols
    wd = dilate(np.asarray(w, np.float64), dilation)
    k, cg = w.shape[:2]
    out = np.zeros((k, cg, len(rows.residues), len(cols.residues), rows.kq,
                    cols.kq))
    for a in range(wd.shape[2]):
        for b in range(wd.shape[3]):
            if a % rows.stride in rows.residues and b % cols.stride in cols.residues:
                p0 = rows.residues.index(a % rows.stride)
                p1 = cols.residues.index(b % cols.stride)
                out[:, :, p0, p1, a // rows.stride, b // cols.stride] = wd[:, :, a, b]
            else:
                assert (wd[:, :, a, b] == 0).all(), "a dropped phase has taps"
    return out.reshape(k, -1, rows.kq, cols.kq)


def random_problem(rng, dtype, n=1, c=2, k=3, hw=(9, 11), khw=(3, 2),
                   groups=1, bias=True):
    x = rng.standard_normal((n, c) + hw).astype(dtype)
    w = rng.standard_normal((k, c // groups) + khw).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    return x, w, b


# --------------------------------------------------------------------------
# FFT lengths and geometry
# --------------------------------------------------------------------------

def test_fast_length_is_the_smallest_allowed_length():
    allowed = [m for m in range(1, 5000) if odd_part(m) in (1, 3, 5, 7, 9)]
    for n in range(1, 4500):
        expected = next(m for m in allowed if m >= n)
        assert fft.fast_length(n) == expected, n


def test_fast_length_rejects_nonpositive():
    with pytest.raises(ValueError):
        fft.fast_length(0)


@settings(deadline=None)
@given(size=st.integers(1, 60), lo=st.integers(0, 4), hi=st.integers(0, 4),
       k=st.integers(1, 7), d=st.integers(1, 3), s=st.integers(1, 4),
       t=st.one_of(st.none(), st.integers(1, 40)))
def test_axis_geometry_tiles_cover_the_output(size, lo, hi, k, d, s, t):
    extent = d * (k - 1) + 1
    assume(extent <= size + lo + hi)
    try:
        g = fft.axis_geometry(size, lo, hi, k, d, s, t)
    except ValueError:
        residues, _, taps_q, _ = fft.axis_phases(k, d, s)
        assert t is not None and t < max(taps_q) + 1
        return
    assert g.out == (size + lo + hi - extent) // s + 1
    assert g.b >= 1 and (g.tiles - 1) * g.b < g.out <= g.tiles * g.b
    # every output's window fits its tile without wrapping around
    assert g.b + g.kq - 1 <= g.t
    single = fft.fast_length(g.out + g.kq - 1)
    if t is None or t >= single:
        # one tile: the fast length of the whole padded phase signal
        assert g.t == single and g.tiles == 1
    else:
        assert g.t == t                      # a forced length is kept


def test_choose_tile_returns_fast_lengths_and_prefers_small_tiles_for_many_channels():
    one = fft.choose_tile((1, 1, 1024, 1024), (1, 1, 9, 9), (1, 1), (4,) * 4,
                          (1, 1), 1)
    many = fft.choose_tile((1, 64, 1024, 1024), (64, 64, 9, 9), (1, 1),
                           (4,) * 4, (1, 1), 1)
    for t in one + many:
        assert odd_part(t) in fft.FAST_ODD_PARTS and t >= 9
    assert many[0] * many[1] <= one[0] * one[1]


def test_chosen_tiles_follow_the_tunables():
    # The model reads chunk_bytes and tasks_per_thread: the tile cache must
    # not return a tile chosen under other tunables.
    many = ((4, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1,) * 4, (1, 1), 1)
    one = ((1, 1, 1024, 1024), (1, 1, 51, 51), (1, 1), (25,) * 4, (1, 1), 1)
    default = fft.choose_tile(*many), fft.choose_tile(*one)
    with _tuning.override(fft=dict(chunk_bytes=2**10)) as tuning:
        assert fft.choose_tile(*many) != default[0]
    assert fft.choose_tile(*many, tuning=tuning.fft) != default[0]
    if _tuning.block_shape_threads() > 1:    # else blocks make no tail
        with _tuning.override(fft=dict(tasks_per_thread=64)):
            assert fft.choose_tile(*one) != default[1]
    assert (fft.choose_tile(*many), fft.choose_tile(*one)) == default


# --------------------------------------------------------------------------
# Stages against their definitions
# --------------------------------------------------------------------------

STAGE_CASES = [
    # x_shape, w_shape, stride, padding, dilation, groups, tile
    ((2, 3, 13, 11), (4, 3, 3, 4), (1, 1), (1, 2, 0, 3), (1, 1), 1, (8, 7)),
    ((1, 4, 12, 15), (4, 2, 3, 3), (2, 3), (1, 1, 2, 0), (1, 2), 2, (5, 6)),
    ((2, 2, 1, 40), (3, 2, 1, 5), (1, 2), (0, 0, 3, 1), (1, 3), 1, (1, 16)),
    ((1, 2, 10, 10), (2, 2, 3, 3), (2, 2), (1, 1, 1, 1), (2, 2), 1, None),
]
STAGE_IDS = ["tiled", "stride-dilation-groups", "H=1", "single-tile-stride=dilation"]
over_stage_cases = pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding, dilation, groups, tile", STAGE_CASES,
    ids=STAGE_IDS)


@over_stage_cases
@over_dtypes
def test_padded_input_matches_numpy(x_shape, w_shape, stride, padding,
                                    dilation, groups, tile, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape).astype(dtype)
    geom = fft.plan_geometry(x_shape, w_shape, stride, padding, dilation,
                             groups, dtype, tile)
    xpad = fft.padded_input(x, geom)
    expected = phase_signals(x, geom, padding, w_shape[2:], dilation)
    got = xpad[:, :, :, :geom.cols.padded]
    np.testing.assert_array_equal(got, expected.astype(dtype))


@over_stage_cases
@over_layouts
@over_dtypes
def test_input_spectra_are_rfft2_of_the_tile_windows(
        x_shape, w_shape, stride, padding, dilation, groups, tile, freq_major,
        dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(x_shape).astype(dtype)
    geom = fft.plan_geometry(x_shape, w_shape, stride, padding, dilation,
                             groups, dtype, tile, freq_major)
    windows = tile_windows(phase_signals(x.astype(np.float64), geom, padding,
                                         w_shape[2:], dilation), geom)
    expected = np.fft.rfft2(windows, axes=(-2, -1))
    spec = fft.input_spectra(x, geom)
    scale = np.abs(windows).sum(axis=(-2, -1), keepdims=True)
    tol = 8 * np.finfo(dtype).eps * np.log2(windows[0, 0].size + 1) * scale
    assert_within(spec.real, expected.real, tol, "real part")
    assert_within(spec.imag, expected.imag, tol, "imaginary part")


@over_layouts
def test_input_spectra_of_chunks_are_the_matching_slices(freq_major):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 30, 20)).astype(np.float64)
    geom = fft.plan_geometry(x.shape, (2, 2, 3, 3), (1, 1), (1, 1, 1, 1),
                             (1, 1), 1, np.float64, (8, 8), freq_major)
    whole = fft.input_spectra(x, geom)
    xpad = fft.padded_input(x, geom)
    # Rows of tiles within one image, and whole images.
    for chunk in (fft.Chunk(1, 1, 2, 2), fft.Chunk(0, 2, 0, geom.rows.tiles)):
        part = fft.input_spectra(x, geom, chunk, xpad)
        m0 = chunk.m0(geom)
        np.testing.assert_allclose(part, whole[m0:m0 + chunk.tiles(geom)],
                                   rtol=1e-13, atol=1e-12)


@over_stage_cases
@over_layouts
@over_dtypes
def test_weight_spectra_are_conjugate_rfft2_of_the_phase_kernels(
        x_shape, w_shape, stride, padding, dilation, groups, tile, freq_major,
        dtype):
    rng = np.random.default_rng(4)
    w = rng.standard_normal(w_shape).astype(dtype)
    geom = fft.plan_geometry(x_shape, w_shape, stride, padding, dilation,
                             groups, dtype, tile, freq_major)
    t0, t1 = geom.tile_shape
    wp = phase_kernels(w, geom, dilation)                 # (K, Cg', q0, q1)
    expected = np.conj(np.fft.rfft2(wp, s=(t0, t1))) / (t0 * t1)
    expected = expected.transpose(1, 0, 2, 3)             # (Cg', K, F0, F1h)
    spec = fft.weight_spectra(w, geom)
    scale = np.abs(wp).sum(axis=(-2, -1)).T[:, :, None, None] / (t0 * t1)
    tol = 8 * np.finfo(dtype).eps * np.log2(t0 * t1 + 1) * scale
    assert_within(spec.real, expected.real, tol, "real part")
    assert_within(spec.imag, expected.imag, tol, "imaginary part")


@pytest.mark.parametrize("m, cp, k, groups", [(3, 1, 1, 1), (5, 4, 6, 1),
                                              (4, 6, 4, 2), (6, 4, 4, 4),
                                              (8, 16, 8, 1), (1, 5, 7, 1)])
@over_layouts
@over_dtypes
def test_contract_is_a_gemm_per_frequency(m, cp, k, groups, freq_major, dtype):
    rng = np.random.default_rng(5)
    cdtype = np.complex64 if dtype == np.float32 else np.complex128
    f0, f1 = 6, 4
    cgp, kg = cp // groups, k // groups

    def spectrum(rows, cols):
        buf, view = fft.spectrum_buffer((rows, cols), (f0, 2 * (f1 - 1)),
                                         cdtype, freq_major)
        view[...] = (rng.standard_normal(view.shape)
                     + 1j * rng.standard_normal(view.shape))
        return view

    x = spectrum(m, cp)
    w = spectrum(cgp, k)
    expected = np.einsum("mgcf,cgkf->mgkf",
                         x.reshape(m, groups, cgp, -1).astype(np.complex128),
                         w.reshape(cgp, groups, kg, -1).astype(np.complex128))
    expected = expected.reshape(m, k, f0, f1)
    y = fft.contract(x, w, groups)
    assert y.shape == (m, k, f0, f1)
    tol = 4 * cgp * np.finfo(dtype).eps * (
        np.abs(x).max() * np.abs(w).max())
    np.testing.assert_allclose(y, expected, rtol=0, atol=tol)


@over_stage_cases
@over_layouts
@over_dtypes
def test_inverse_is_irfft2_then_overlap_save_scatter(
        x_shape, w_shape, stride, padding, dilation, groups, tile, freq_major,
        dtype):
    rng = np.random.default_rng(6)
    geom = fft.plan_geometry(x_shape, w_shape, stride, padding, dilation,
                             groups, dtype, tile, freq_major)
    t0, t1 = geom.tile_shape
    k = geom.k
    bias = rng.standard_normal(k).astype(dtype)
    # Spectra of random real tiles (so that irfft2 returns them).
    tiles = rng.standard_normal((geom.m, k, t0, t1))
    cdtype = geom.complex_dtype
    buf, spec = fft.spectrum_buffer((geom.m, k), (t0, t1), cdtype, freq_major)
    spec[...] = np.fft.rfft2(tiles)
    expected = np.full(geom.out_shape, np.nan)
    rows, cols = geom.rows, geom.cols
    for mm in range(geom.m):
        n, rest = divmod(mm, geom.tiles)
        i, j = divmod(rest, cols.tiles)
        hs = min(rows.b, rows.out - i * rows.b)
        ws = min(cols.b, cols.out - j * cols.b)
        expected[n, :, i * rows.b:i * rows.b + hs, j * cols.b:j * cols.b + ws] = (
            tiles[mm, :, :hs, :ws] * (t0 * t1) + bias[:, None, None])
    assert not np.isnan(expected).any(), "the tiles must cover the output"
    out = np.full(geom.out_shape, np.nan, dtype=dtype)
    fft.inverse(spec, geom, bias, out)
    tol = 64 * np.finfo(dtype).eps * np.log2(t0 * t1 + 1) * (
        np.abs(tiles).max() * t0 * t1 + np.abs(bias).max())
    assert_within(out, expected, tol, "inverse")


def test_inverse_of_a_chunk_writes_only_its_tiles():
    geom = fft.plan_geometry((2, 1, 20, 20), (2, 1, 3, 3), (1, 1),
                             (1, 1, 1, 1), (1, 1), 1, np.float64, (8, 8))
    chunk = fft.Chunk(1, 1, 1, 1)           # image 1, second row of tiles
    mc = chunk.tiles(geom)
    buf, spec = fft.spectrum_buffer((mc, 2), geom.tile_shape,
                                     np.complex128, False)
    spec[...] = np.fft.rfft2(np.ones((mc, 2) + geom.tile_shape))
    out = np.full(geom.out_shape, np.nan)
    fft.inverse(spec, geom, None, out, chunk.m0(geom))
    written = ~np.isnan(out)
    expected = np.zeros(geom.out_shape, bool)
    b0 = geom.rows.b
    expected[1, :, b0:2 * b0, :] = True
    np.testing.assert_array_equal(written, expected)


@over_dtypes
def test_inverse_tiles_is_the_unscaled_irfft2(dtype):
    rng = np.random.default_rng(27)
    geom = fft.plan_geometry((2, 3, 21, 17), (2, 3, 4, 3), (1, 1),
                             (1, 1, 1, 1), (1, 1), 1, dtype, (10, 8))
    tiles = rng.standard_normal((geom.m, 2) + geom.tile_shape)
    buf, spec = fft.spectrum_buffer((geom.m, 2), geom.tile_shape,
                                     geom.complex_dtype, False)
    spec[...] = np.fft.rfft2(tiles)
    z = fft.inverse_tiles(spec, geom)
    assert z.shape == tiles.shape and z.dtype == dtype
    scale = np.prod(geom.tile_shape)
    np.testing.assert_allclose(z, tiles * scale, rtol=0,
                               atol=64 * np.finfo(dtype).eps * scale)


@over_dtypes
def test_scatter_of_blocks_equals_scatter_of_the_batch(dtype):
    # One scatter kernel serves the staged path (tiles m0.. of the batch)
    # and, compiled serially, the task path (a block's corner and shape).
    from kernels.cpu import _fft_kernels
    rng = np.random.default_rng(28)
    geom = fft.plan_geometry((3, 1, 41, 37), (1, 1, 4, 3), (1, 1),
                             (1, 2, 3, 0), (1, 1), 1, dtype, (9, 12))
    k = geom.k
    z = rng.standard_normal((geom.m, k) + geom.tile_shape).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype)
    whole = fft.scatter(z, geom, bias, np.full(geom.out_shape, np.nan, dtype))
    assert not np.isnan(whole).any()
    expected = np.full(geom.out_shape, np.nan, dtype)
    rows, cols = geom.rows, geom.cols
    for mm in range(geom.m):
        n, rest = divmod(mm, geom.tiles)
        i, j = divmod(rest, cols.tiles)
        part = expected[n, :, i * rows.b:(i + 1) * rows.b,
                        j * cols.b:(j + 1) * cols.b]
        part[...] = (z[mm, :, :part.shape[1], :part.shape[2]]
                     + bias[:, None, None])
    np.testing.assert_array_equal(whole, expected)
    tile_index = np.arange(geom.m).reshape(geom.n, rows.tiles, cols.tiles)
    per_tile = fft.per_tile_bytes(geom)
    for budget in (geom.tiles, cols.tiles, 2):     # images, rows, tiles
        with _tuning.override(fft=dict(task_bytes=budget * per_tile,
                                       tasks_per_thread=0,
                                       min_task_seconds=0)):
            blocks = fft.task_blocks(geom)
        out = np.full(geom.out_shape, np.nan, dtype)
        for b in blocks:
            mine = tile_index[b.n0:b.n0 + b.images, b.i0:b.i0 + b.rows,
                              b.j0:b.j0 + b.cols].ravel()
            _fft_kernels.scatter_tiles_serial(
                np.ascontiguousarray(z[mine]), out, bias, 0, b.n0, b.i0,
                b.j0, b.rows, b.cols, rows.b, cols.b)
        np.testing.assert_array_equal(out, whole)


def test_fft_geometry_is_backend_neutral():
    import subprocess
    import sys
    code = ("import sys, kernels._fft_geometry; "
            "print(sorted(m for m in ('numba', 'pyfftw', 'kernels.cpu') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------
# End to end against the reference
# --------------------------------------------------------------------------

def check_against_reference(x, w, b, stride, padding, dilation, groups,
                            **options):
    y = fft.conv2d(x, w, b, stride, padding, dilation, groups, **options)
    assert y.dtype == x.dtype and y.flags.c_contiguous
    y_ref = reference_conv(x, w, b, stride, padding, dilation, groups)
    tol = fft_bound(x.dtype, x, w, b, stride, padding, dilation, groups)
    assert_within(y, y_ref, tol, f"fft {options}")
    return y


@st.composite
def problems(draw):
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, 3))
    k = groups * draw(st.integers(1, 3))
    one_d = draw(st.booleans())
    kh = 1 if one_d else draw(st.integers(1, 5))
    kw = draw(st.integers(1, 6))
    dh = 1 if one_d else draw(st.integers(1, 3))
    dw = draw(st.integers(1, 3))
    sh = 1 if one_d else draw(st.integers(1, 3))
    sw = draw(st.integers(1, 3))
    pad = tuple(draw(st.integers(0, 3)) for _ in range(4))
    if one_d:
        pad = (0, 0) + pad[2:]
    h = 1 if one_d else draw(st.integers(max(1, dh * (kh - 1) + 1 - pad[0] - pad[1]), 20))
    w_ = draw(st.integers(max(1, dw * (kw - 1) + 1 - pad[2] - pad[3]), 40))
    n = draw(st.integers(1, 2))
    tile = draw(st.one_of(st.none(), st.tuples(st.integers(1, 24),
                                               st.integers(1, 24))))
    layout = draw(st.sampled_from([None, False, True]))
    return dict(x_shape=(n, c, h, w_), w_shape=(k, c // groups, kh, kw),
                stride=(sh, sw), padding=pad, dilation=(dh, dw),
                groups=groups, tile=tile, freq_major=layout)


@settings(deadline=None)
@given(p=problems(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_conv2d_matches_reference(p, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(p["x_shape"]).astype(dtype)
    w = rng.standard_normal(p["w_shape"]).astype(dtype)
    b = rng.standard_normal(p["w_shape"][0]).astype(dtype)
    tile = p["tile"]
    if tile is not None:
        geom = fft.plan_geometry(p["x_shape"], p["w_shape"], p["stride"],
                                 p["padding"], p["dilation"], p["groups"],
                                 dtype)
        assume(tile[0] >= geom.rows.kq and tile[1] >= geom.cols.kq)
    check_against_reference(x, w, b, p["stride"], p["padding"], p["dilation"],
                            p["groups"], tile=tile,
                            freq_major=p["freq_major"])


@pytest.mark.parametrize("tile", [(8, 8), (9, 10), (16, 12), (14, 32)])
@over_dtypes
def test_tiled_equals_untiled_across_tile_boundaries(tile, dtype):
    # 37 x 29 outputs with 5 x 4 kernels: no tile size divides the output,
    # so the last row and column of tiles straddle the border.
    rng = np.random.default_rng(7)
    x, w, b = random_problem(rng, dtype, n=2, c=3, k=2, hw=(39, 30),
                             khw=(5, 4))
    args = (b, (1, 1), (1, 1, 1, 2), (1, 1), 1)
    tiled = check_against_reference(x, w, *args, tile=tile)
    untiled = check_against_reference(x, w, *args, tile=(10**6, 10**6))
    geom = fft.plan_geometry(x.shape, w.shape, (1, 1), (1, 1, 1, 2), (1, 1),
                             1, dtype, tile)
    assert geom.tiles > 1 and geom.rows.out % geom.rows.b != 0
    tol = 2 * fft_bound(dtype, x, w, b, *args[1:])
    assert_within(tiled, untiled.astype(np.float64), tol, "tiled vs untiled")


@over_dtypes
def test_chunked_equals_whole(dtype):
    rng = np.random.default_rng(8)
    x, w, b = random_problem(rng, dtype, n=3, c=4, k=5, hw=(30, 26),
                             khw=(3, 3))
    args = (b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    whole = fft.conv2d(x, w, *args, tile=(8, 8))
    with _tuning.override(fft=dict(chunk_bytes=1)):  # one row of tiles each
        geom = fft.plan_geometry(x.shape, w.shape, (1, 1), (1, 1, 1, 1),
                                 (1, 1), 1, dtype, (8, 8))
        assert len(fft.chunks(geom)) == x.shape[0] * geom.rows.tiles
        chunked = check_against_reference(x, w, *args, tile=(8, 8))
    tol = 2 * fft_bound(dtype, x, w, *args)
    assert_within(chunked, whole.astype(np.float64), tol, "chunked vs whole")


# --------------------------------------------------------------------------
# Task-parallel path (few channels)
# --------------------------------------------------------------------------

def covered_tiles(geom, blocks):
    """How many blocks cover each tile (n, i, j)."""
    count = np.zeros((geom.n, geom.rows.tiles, geom.cols.tiles), int)
    for b in blocks:
        count[b.n0:b.n0 + b.images, b.i0:b.i0 + b.rows,
              b.j0:b.j0 + b.cols] += 1
    return count


@settings(deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 70), w_=st.integers(1, 70),
       kh=st.integers(1, 6), kw=st.integers(1, 6),
       tile=st.tuples(st.integers(6, 40), st.integers(6, 40)),
       task_bytes=st.sampled_from([1, 10**4, 10**5, 2**20, 2**30]),
       per_thread=st.integers(0, 6),
       least=st.sampled_from([0, 1e-6, 1e-4, 1e-2]))
def test_task_blocks_partition_the_tiles(n, h, w_, kh, kw, tile, task_bytes,
                                         per_thread, least):
    import numba
    assume(h >= kh and w_ >= kw)
    with _tuning.override(fft=dict(task_bytes=task_bytes,
                                   tasks_per_thread=per_thread,
                                   min_task_seconds=least)):
        geom = fft.plan_geometry((n, 1, h, w_), (1, 1, kh, kw), (1, 1),
                                 (0, 0, 0, 0), (1, 1), 1, np.float32, tile)
        blocks = fft.task_blocks(geom)
        assert (covered_tiles(geom, blocks) == 1).all()
        for b in blocks:
            # whole images, or a rectangle inside one image
            assert b.images == 1 or (b.rows, b.cols) == (geom.rows.tiles,
                                                          geom.cols.tiles)
            assert b.rows == 1 or b.cols == geom.cols.tiles
        previous = numba.get_num_threads()
        try:
            numba.set_num_threads(1)
            assert fft.task_blocks(geom) == blocks, \
                "the cut depends on the thread count"
        finally:
            numba.set_num_threads(previous)


@pytest.mark.parametrize("kind", ["images", "rows", "tiles"])
@over_dtypes
def test_each_block_kind_matches_reference(kind, dtype):
    # Stride, dilation and groups with few channels: the task path, whose
    # blocks pad their own input windows (the untouched inputs included).
    rng = np.random.default_rng(21)
    x, w, b = random_problem(rng, dtype, n=3, c=2, k=2, hw=(41, 37),
                             khw=(4, 3), groups=2)
    args = ((2, 1), (1, 2, 3, 0), (2, 3), 2)
    geom = fft.plan_geometry(x.shape, w.shape, *args, dtype, (9, 12))
    assert fft.use_tasks(geom) and geom.rows.tiles > 2 and geom.cols.tiles > 2
    per_tile = fft.per_tile_bytes(geom)
    budget = {"images": 2 * geom.tiles, "rows": 2 * geom.cols.tiles,
              "tiles": 2}[kind]
    with _tuning.override(fft=dict(task_bytes=budget * per_tile,
                                   tasks_per_thread=0,   # the budget decides
                                   min_task_seconds=0)):
        blocks = fft.task_blocks(geom)
        assert len(blocks) >= 2 and all(b.tiles == budget
                                        for b in blocks[:-1])
        if kind == "images":
            assert blocks[0].images == 2
        elif kind == "rows":
            assert blocks[0].images == 1 and blocks[0].rows == 2
        else:
            assert blocks[0].rows == 1 and blocks[0].cols == 2
        check_against_reference(x, w, b, *args, tile=(9, 12))


@over_dtypes
def test_task_and_staged_paths_agree(dtype, monkeypatch):
    rng = np.random.default_rng(22)
    x, w, b = random_problem(rng, dtype, n=2, c=1, k=1, hw=(90, 70),
                             khw=(7, 5))
    args = (b, (1, 1), (3, 3, 2, 2), (1, 1), 1)
    tasks = check_against_reference(x, w, *args, tile=(24, 16))
    monkeypatch.setattr(fft, "use_tasks", lambda geom: False)
    staged = check_against_reference(x, w, *args, tile=(24, 16))
    tol = 2 * fft_bound(dtype, x, w, *args)
    assert_within(tasks, staged.astype(np.float64), tol, "tasks vs staged")


def test_task_path_result_does_not_depend_on_the_thread_count():
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs NUMBA_NUM_THREADS >= 2")
    rng = np.random.default_rng(23)
    x, w, b = random_problem(rng, np.float32, n=1, c=1, k=1, hw=(300, 260),
                             khw=(9, 9))
    args = (b, (1, 1), (4, 4, 4, 4), (1, 1), 1)
    geom = fft.plan_geometry(x.shape, w.shape, *args[1:], np.float32)
    assert fft.use_tasks(geom) and len(fft.task_blocks(geom)) > 2
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fft.conv2d(x, w, *args)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = fft.conv2d(x, w, *args)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(one, many)


def test_concurrent_calls_from_python_threads():
    # Calls from several threads share plans (per worker slot, each under
    # its lock) and the weight cache; every result must be its own.
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(24)
    problems = [random_problem(rng, np.float32, n=1, c=1, k=1,
                               hw=(120, 100), khw=(7, 7)) for _ in range(6)]
    args = ((1, 1), (3, 3, 3, 3), (1, 1), 1)
    alone = [fft.conv2d(x, w, b, *args, tile=(32, 32)) for x, w, b in problems]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(
            lambda p: fft.conv2d(p[0], p[1], p[2], *args, tile=(32, 32)),
            problems * 3))
    for i, y in enumerate(together):
        np.testing.assert_array_equal(y, alone[i % len(problems)])


@pytest.mark.parametrize("kernel", [1, 9, 63])
@over_dtypes
def test_long_1d_signal_through_conv1d(kernel, dtype):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 20000)).astype(dtype)
    w = rng.standard_normal((3, 2, kernel)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    y = kernels.conv1d(x, w, b, padding="same", algorithm="fft")
    y_ref = reference.conv1d(x, w, b, padding="same")
    scale = reference.conv1d(np.abs(x), np.abs(w), np.abs(b), padding="same")
    assert_within(y, y_ref, error_bound("fft", dtype, scale), "conv1d")
    geom = fft.plan_geometry((1, 2, 1, 20000), w.shape[:2] + (1, kernel),
                             (1, 1), (0, 0, kernel // 2, kernel // 2), (1, 1),
                             1, dtype)
    assert geom.rows.t == 1, "H = 1 must use 1-D transforms"


@over_dtypes
def test_public_api_dispatches_to_fft(dtype):
    rng = np.random.default_rng(10)
    x, w, b = random_problem(rng, dtype, n=2, c=4, k=4, hw=(17, 13),
                             khw=(3, 5), groups=2)
    y = kernels.conv2d(x, w, b, stride=(2, 1), padding=(2, 1), dilation=(1, 2),
                       groups=2, algorithm="fft")
    y_ref = reference.conv2d(x, w, b, stride=(2, 1), padding=(2, 1),
                             dilation=(1, 2), groups=2)
    scale = reference.conv2d(np.abs(x), np.abs(w), np.abs(b), stride=(2, 1),
                             padding=(2, 1), dilation=(1, 2), groups=2)
    assert_within(y, y_ref, error_bound("fft", dtype, scale), "kernels.conv2d")


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", [
    # every tap falls on the padding: the exact result is zero
    ((1, 2, 6, 1), (3, 2, 2, 2), (1, 1), (0, 0, 1, 1), (1, 2)),
    # the last columns and rows are past the last strided window
    ((2, 1, 23, 30), (2, 1, 3, 4), (4, 5), (0, 0, 0, 0), (1, 1)),
    # one output row: the input between the dilated taps is never read
    ((1, 1, 5, 40), (1, 1, 3, 3), (1, 1), (0, 0, 1, 1), (2, 1)),
], ids=["all-padding", "stride-remainder", "dilation-gap"])
@over_dtypes
def test_inputs_no_output_reads_do_not_add_error(x_shape, w_shape, stride,
                                                 padding, dilation, dtype):
    # An FFT spreads the rounding error of every value in a tile over all
    # of its outputs; values that no output reads must not be in the tile,
    # or they can exceed a bound that (rightly) does not see them.
    rng = np.random.default_rng(17)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    geom = fft.plan_geometry(x_shape, w_shape, stride, padding, dilation, 1,
                             dtype)
    read = np.zeros(zero_pad(x, padding).shape[2:], bool)
    extent = [d * (k - 1) + 1 for k, d in zip(w_shape[2:], dilation)]
    for i in range(geom.rows.out):
        for j in range(geom.cols.out):
            read[i * stride[0]:i * stride[0] + extent[0]:dilation[0],
                 j * stride[1]:j * stride[1] + extent[1]:dilation[1]] = True
    top, left = padding[0], padding[2]
    unread = ~read[top:top + x_shape[2], left:left + x_shape[3]]
    assert unread.any()
    x[:, :, unread] = 1e6 * np.sign(x[:, :, unread])
    for tile in (None, (geom.rows.kq + 2, geom.cols.kq + 3)):
        check_against_reference(x, w, None, stride, padding, dilation, 1,
                                tile=tile)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(11)
    x, w, b = random_problem(rng, np.float32, n=2, c=2, k=2, hw=(20, 20),
                             khw=(3, 3))
    copies = [a.copy() for a in (x, w, b)]
    fft.conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1, tile=(8, 8))
    fft.conv2d(x, w, b, (2, 2), (0, 1, 0, 1), (1, 1), 1)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


def test_planner_effort_estimate_gives_the_same_result():
    rng = np.random.default_rng(12)
    x, w, b = random_problem(rng, np.float64, n=1, c=2, k=2, hw=(21, 19),
                             khw=(4, 3))
    args = (b, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    before = fft.get_planner_effort()
    try:
        fft.set_planner_effort("FFTW_ESTIMATE")
        fft.clear_caches(plans=True)
        estimate = check_against_reference(x, w, *args, tile=(11, 9))
    finally:
        fft.set_planner_effort(before)
    measure = check_against_reference(x, w, *args, tile=(11, 9))
    np.testing.assert_allclose(estimate, measure, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        fft.set_planner_effort("FFTW_FAST")


# --------------------------------------------------------------------------
# Weight-spectrum cache
# --------------------------------------------------------------------------

def test_cache_is_used_for_the_same_unchanged_filter():
    fft.clear_caches()
    rng = np.random.default_rng(13)
    x, w, b = random_problem(rng, np.float64, hw=(16, 16), khw=(3, 3))
    args = (b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    first = fft.conv2d(x, w, *args)
    assert fft.cache_info()["weight_entries"] == 1
    again = fft.conv2d(x, w, *args)
    assert fft.cache_info()["weight_entries"] == 1
    np.testing.assert_array_equal(first, again)


@over_dtypes
def test_cache_sees_a_filter_modified_in_place(dtype):
    fft.clear_caches()
    rng = np.random.default_rng(14)
    x, w, b = random_problem(rng, dtype, hw=(16, 16), khw=(3, 3))
    args = (b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    fft.conv2d(x, w, *args)
    # A change to a single tap, and one by the smallest possible amount.
    w[1, 0, 2, 1] += 1
    check_against_reference(x, w, *args)
    w[0, 1, 0, 0] = np.nextafter(w[0, 1, 0, 0], np.inf)
    check_against_reference(x, w, *args)
    w *= -1
    check_against_reference(x, w, *args)


def test_cache_distinguishes_filters_of_the_same_shape():
    fft.clear_caches()
    rng = np.random.default_rng(15)
    x, w, b = random_problem(rng, np.float64, hw=(16, 16), khw=(3, 3))
    args = (b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    for _ in range(3):
        w = rng.standard_normal(w.shape)         # new array each time
        check_against_reference(x, w, *args)
    # A view of a different filter at the same address (same buffer).
    buf = rng.standard_normal((2,) + w.shape)
    check_against_reference(x, buf[0], *args)
    buf[0] = buf[1]
    check_against_reference(x, buf[0], *args)


def test_cache_is_keyed_on_the_geometry():
    fft.clear_caches()
    rng = np.random.default_rng(16)
    x, w, b = random_problem(rng, np.float64, hw=(24, 24), khw=(3, 3))
    for tile, stride in [((8, 8), (1, 1)), ((16, 16), (1, 1)), (None, (2, 2)),
                         (None, (1, 1))]:
        check_against_reference(x, w, b, stride, (1, 1, 1, 1), (1, 1), 1,
                                tile=tile)
    check_against_reference(x.astype(np.float32), w.astype(np.float32),
                            b.astype(np.float32), (1, 1), (1, 1, 1, 1), (1, 1),
                            1)


def test_unsupported_reason_is_none():
    assert fft.unsupported_reason((1, 1, 5, 5), (1, 1, 3, 3), (2, 2),
                                  (0, 0, 0, 0), (2, 2), 1) is None


def test_task_path_reraises_a_failed_weight_transform(monkeypatch):
    # Worker 0 transforms the filters while the others start on their
    # blocks: its failure must reach the caller, not leave them waiting.
    rng = np.random.default_rng(25)
    x, w, b = random_problem(rng, np.float32, n=1, c=1, k=1, hw=(200, 180),
                             khw=(5, 5))

    def broken(*args, **kwargs):
        raise MemoryError("no room for the spectra")

    monkeypatch.setattr(fft, "weight_spectra", broken)
    with pytest.raises(MemoryError, match="no room"):
        fft.conv2d(x, w, b, (1, 1), (2, 2, 2, 2), (1, 1), 1, tile=(24, 24),
                   cache_weights=False)


def test_task_plans_are_reused_and_bounded():
    rng = np.random.default_rng(26)
    fft.clear_caches(plans=True)
    x, w, b = random_problem(rng, np.float32, n=1, c=1, k=1, hw=(64, 60),
                             khw=(5, 5))
    args = (b, (1, 1), (2, 2, 2, 2), (1, 1), 1)
    first = fft.conv2d(x, w, *args, tile=(16, 16))
    again = fft.conv2d(x, w, *args, tile=(16, 16))
    np.testing.assert_array_equal(first, again)
    info = fft.cache_info()
    assert info["task_plans"] == 1 and info["task_plan_bytes"] > 0
    with _tuning.override(fft=dict(task_plan_bytes=1)):
        for tile in ((12, 12), (20, 20), (24, 16)):
            check_against_reference(x, w, *args, tile=tile)
        assert fft.cache_info()["task_plans"] == 1
    fft.clear_caches(plans=True)
    assert fft.cache_info()["task_plans"] == 0
