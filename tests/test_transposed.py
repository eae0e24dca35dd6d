"""Transposed convolution: adjoint identity, reference agreement, shapes, errors.

Every algorithm able to compute a transposed convolution is tested:
``direct`` and ``im2col`` (own kernels) and ``winograd``/``fft`` (through
the forward algorithm on the zero-upsampled input) where they apply and
are built.  Accuracy is judged by the forward constants of
:mod:`kernels.accuracy`: ``|y - y_ref| <= c[alg, dtype] u (|x| *T |w| +
|bias|) + tiny`` with ``*T`` the reference transposed convolution.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import kernels
import reference
import reference.transposed as ref_t
from kernels import geometry
from kernels._transposed import transposed_algorithms
from kernels.accuracy import NORMWISE, error_bound

from helpers import api, grouped_conv2d_problems

pytestmark = pytest.mark.usefixtures("backend")

DTYPES = (np.float32, np.float64)
ALGORITHMS = kernels.ALGORITHMS


# The parameter is named ``alg``, not ``algorithm``: conftest skips tests
# parametrised by ``algorithm`` when the *forward* algorithm is not built,
# but the transposed direct/im2col kernels do not depend on it.
def _skip_unless_transposable(algorithm):
    if algorithm not in transposed_algorithms():
        pytest.skip(f"{algorithm!r} is not available for transposed convolution")


def _full_abs_max(x, w, kw):
    """max of |x| *T |w| over the whole uncropped result.

    Normwise algorithms (FFT) spread their rounding errors over the full
    transposed convolution, before the padding is cropped; their error
    scale is its largest entry, even where the cropped output is all
    zeros.
    """
    full = ref_t.conv_transpose2d(np.abs(x), np.abs(w), stride=kw["stride"],
                                  dilation=kw["dilation"], groups=kw["groups"])
    return full.max()


def _run(algorithm, *args, **kwargs):
    """kernels.conv_transpose2d, or None where the algorithm does not apply."""
    try:
        return api.conv_transpose2d(*args, algorithm=algorithm, **kwargs)
    except kernels.UnsupportedConfiguration:
        return None


# --------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------

def forward_problems(max_size=7):
    """A forward conv2d problem (shapes and arguments) with groups."""
    return grouped_conv2d_problems(max_size, max_channels=3, max_kernel=4,
                                   max_stride=(3, 3), max_padding=(2, 2))


# --------------------------------------------------------------------------
# 1. adjoint identity
# --------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ALGORITHMS)
@settings(deadline=None)
@given(problem=forward_problems(), seed=st.integers(0, 2**32 - 1))
def test_transposed_convolution_is_the_adjoint_of_convolution(alg, problem,
                                                             seed):
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)> in float64."""
    _skip_unless_transposable(alg)
    x_shape, w_shape, kw = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    conv = reference.conv2d(x, w, **kw)
    y = rng.standard_normal(conv.shape)
    # The output_padding that gives back x's size (less than the stride).
    out_pad = tuple(n - ((m - 1) * s - 2 * p + d * (k - 1) + 1)
                    for n, m, s, p, d, k in zip(x_shape[2:], conv.shape[2:],
                                                kw["stride"], kw["padding"],
                                                kw["dilation"], w_shape[2:]))
    xt = _run(alg, y, w, output_padding=out_pad, **kw)
    if xt is None:
        return
    assert xt.shape == x.shape
    lhs = np.vdot(conv, y)
    rhs = np.vdot(x, xt)
    # Relative to the sum of |terms| (cancellation-proof scale).
    scale = np.vdot(np.abs(x), ref_t.conv_transpose2d(
        np.abs(y), np.abs(w), output_padding=out_pad, **kw))
    if alg in NORMWISE:
        scale = max(scale, np.abs(x).sum() * _full_abs_max(y, w, kw))
    assert abs(lhs - rhs) <= 1e-10 * scale + 1e-300


# --------------------------------------------------------------------------
# 2. agreement with the reference within the documented bound
# --------------------------------------------------------------------------

@st.composite
def transposed_problems(draw, max_size=6):
    x_shape, w_shape, kw = draw(forward_problems(max_size=max_size))
    # Transposed convention: w is (C_in, C_out // groups, kH, kW) where
    # C_in are the channels of x (the forward K).
    n, _, h, wd = x_shape
    k_out, c_g = w_shape[:2]
    op = tuple(draw(st.integers(0, max(s, d) - 1))
               for s, d in zip(kw["stride"], kw["dilation"]))
    sizes = []
    for n_in, k, s, p, o, d in zip((h, wd), w_shape[2:], kw["stride"],
                                   kw["padding"], op, kw["dilation"]):
        sizes.append((n_in - 1) * s - 2 * p + d * (k - 1) + 1 + o)
    assume(min(sizes) >= 1)
    return (n, k_out, h, wd), (k_out, c_g) + w_shape[2:], dict(kw, output_padding=op)


@pytest.mark.parametrize("alg", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None)
@given(problem=transposed_problems(), with_bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_matches_the_reference_within_the_error_bound(alg, dtype, problem,
                                                      with_bias, seed):
    _skip_unless_transposable(alg)
    x_shape, w_shape, kw = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    c_out = w_shape[1] * kw["groups"]
    bias = rng.standard_normal(c_out).astype(dtype) if with_bias else None
    y = _run(alg, x, w, bias, **kw)
    if y is None:
        return
    y_ref = ref_t.conv_transpose2d(x, w, bias, **kw)
    scale = ref_t.conv_transpose2d(np.abs(x), np.abs(w),
                                   None if bias is None else np.abs(bias), **kw)
    if alg in NORMWISE:
        scale = np.maximum(scale, _full_abs_max(x, w, kw))
    assert y.dtype == dtype and y.shape == y_ref.shape
    err = np.abs(y.astype(np.float64) - y_ref)
    bound = error_bound(alg, dtype, scale)
    assert np.all(err <= bound), f"{np.max(err / bound):.3g} bound units"


@pytest.mark.parametrize("alg", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_1d_matches_the_reference(alg, dtype):
    _skip_unless_transposable(alg)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 9)).astype(dtype)
    w = rng.standard_normal((4, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=1)
    try:
        y = api.conv_transpose1d(x, w, b, algorithm=alg, **kw)
    except kernels.UnsupportedConfiguration:
        pytest.skip("not applicable")
    y_ref = ref_t.conv_transpose1d(x, w, b, **kw)
    scale = ref_t.conv_transpose1d(np.abs(x), np.abs(w), np.abs(b), **kw)
    assert y.shape == (2, 6, 18)
    assert np.all(np.abs(y - y_ref) <= error_bound(alg, dtype, scale))
    np.testing.assert_array_equal(
        api.conv_transpose1d(x[0], w, b, algorithm=alg, **kw), y[0])


@pytest.mark.parametrize("limit", [1, 3000, 40000])
def test_im2col_banding_gives_the_same_result(limit):
    """Column matrices built a band of rows / a few images at a time."""
    from kernels.cpu import _tuning
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 7, 6))
    w = rng.standard_normal((4, 5, 3, 2))
    kw = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    y_ref = ref_t.conv_transpose2d(x, w, **kw)
    with _tuning.override(transposed=dict(scratch_limit=limit)):
        y = api.conv_transpose2d(x, w, algorithm="im2col", **kw)
    scale = ref_t.conv_transpose2d(np.abs(x), np.abs(w), **kw)
    assert np.all(np.abs(y - y_ref) <= error_bound("im2col", np.float64, scale))


def test_auto_picks_an_applicable_algorithm_and_is_accurate():
    rng = np.random.default_rng(3)
    for x_shape, w_shape, kw in [((1, 3, 5, 5), (3, 2, 3, 3), dict(stride=2)),
                                 ((1, 64, 16, 16), (64, 32, 4, 4),
                                  dict(stride=2, padding=1)),
                                 ((1, 1, 20, 20), (1, 1, 11, 11), {})]:
        x = rng.standard_normal(x_shape)
        w = rng.standard_normal(w_shape)
        y = api.conv_transpose2d(x, w, **kw)
        y_ref = ref_t.conv_transpose2d(x, w, **kw)
        scale = ref_t.conv_transpose2d(np.abs(x), np.abs(w), **kw)
        assert np.all(np.abs(y - y_ref) <= error_bound("fft", np.float64, scale))


def test_batch_size_zero_and_non_contiguous_views():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(2)
    y = api.conv_transpose2d(np.zeros((0, 3, 4, 4)), w, b, stride=2)
    assert y.shape == (0, 2, 9, 9)
    base = rng.standard_normal((2, 6, 9, 8))
    x = base[:, ::2, ::-1, 1:7]
    keep = x.copy()
    for algorithm in ("direct", "im2col"):
        y = api.conv_transpose2d(x, w, b, stride=2, algorithm=algorithm)
        np.testing.assert_allclose(y, ref_t.conv_transpose2d(keep, w, b, stride=2),
                                   rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(x, keep)


@pytest.mark.parametrize("alg", ALGORITHMS)
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_reach_exactly_the_outputs_of_their_patch(alg, special):
    _skip_unless_transposable(alg)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1, 2, 6, 5))
    w = rng.uniform(0.5, 1.5, (2, 3, 3, 3))      # no zero taps: Inf * w = Inf
    x[0, 1, 2, 3] = special
    kw = dict(stride=2, padding=1, output_padding=1, groups=1, dilation=1)
    y = _run(alg, x, w, **kw)
    if y is None:
        pytest.skip("not applicable")
    y_ref = ref_t.conv_transpose2d(x, w, **kw)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(y_ref))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(y_ref))
    finite = np.isfinite(y_ref)
    assert finite.any() and not finite.all()
    np.testing.assert_allclose(y[finite], y_ref[finite], rtol=1e-12, atol=1e-12)


# The CPU direct kernel splits the output into stride phases and runs each
# as register tiles of 4 channels x 4 SIMD vectors over a padded copy of
# the input; these shapes reach its full tiles, partial channel blocks,
# phases without taps, several tap rows per phase and long rows.
DIRECT_TILED_PROBLEMS = [
    # U-Net up-convolution, 9 channels = 4 + 4 + 1, several column tiles
    ((2, 5, 13, 13), (5, 9, 2, 2), dict(stride=2)),
    ((1, 6, 11, 9), (6, 5, 4, 4), dict(stride=2, padding=1)),
    ((1, 4, 10, 12), (4, 3, 3, 3), dict(stride=2, padding=1,
                                        output_padding=1)),
    # stride > kernel: some output phases receive no tap (bias only)
    ((2, 3, 9, 8), (3, 5, 1, 2), dict(stride=(3, 3), output_padding=(2, 1))),
    # dilation: taps of several kernel rows share a phase
    ((1, 4, 9, 10), (4, 6, 3, 3), dict(stride=(2, 3), dilation=(2, 2),
                                       padding=(2, 1), groups=2)),
    # a 1-D signal longer than a tile
    ((1, 3, 1, 70), (3, 2, 1, 4), dict(stride=(1, 2), padding=(0, 1))),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, kw", DIRECT_TILED_PROBLEMS)
def test_direct_matches_the_reference_on_tiled_shapes(x_shape, w_shape, kw,
                                                      dtype):
    rng = np.random.default_rng(12)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[1] * kw.get("groups", 1)).astype(dtype)
    y = api.conv_transpose2d(x, w, b, algorithm="direct", **kw)
    y_ref = ref_t.conv_transpose2d(x, w, b, **kw)
    scale = ref_t.conv_transpose2d(np.abs(x), np.abs(w), np.abs(b), **kw)
    assert y.dtype == dtype and y.shape == y_ref.shape
    err = np.abs(y.astype(np.float64) - y_ref)
    bound = error_bound("direct", dtype, scale)
    assert np.all(err <= bound), f"{np.max(err / bound):.3g} bound units"


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_direct_non_finite_weights_reach_only_real_contributions(special):
    """A NaN/Inf weight multiplies real input pixels only: outputs whose
    tap would fall on the padding (cropped or outside the input) stay
    finite, as in the reference (no 0 * Inf = NaN from padding)."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((1, 2, 5, 6))
    w = rng.uniform(0.5, 1.5, (2, 3, 3, 3))
    w[1, 2, 0, 2] = special
    kw = dict(stride=2, padding=1, output_padding=1)
    y = api.conv_transpose2d(x, w, algorithm="direct", **kw)
    y_ref = ref_t.conv_transpose2d(x, w, **kw)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(y_ref))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(y_ref))
    finite = np.isfinite(y_ref)
    assert finite.any() and not finite.all()
    np.testing.assert_allclose(y[finite], y_ref[finite], rtol=1e-12, atol=1e-12)


def test_direct_result_does_not_depend_on_the_thread_count():
    if api.backend != "cpu":
        pytest.skip("CPU thread pool")
    import numba
    rng = np.random.default_rng(14)
    # 2.1 M multiply-adds: above DirectTuning.serial_max_macs, so parallel
    x = rng.standard_normal((2, 32, 16, 16)).astype(np.float32)
    w = rng.standard_normal((32, 32, 2, 2)).astype(np.float32)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = api.conv_transpose2d(x, w, stride=2, algorithm="direct")
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = api.conv_transpose2d(x, w, stride=2, algorithm="direct")
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(one, many)


# --------------------------------------------------------------------------
# 3. shapes
# --------------------------------------------------------------------------

@settings(deadline=None)
@given(problem=transposed_problems(max_size=9))
def test_output_shape_is_the_geometry_formula(problem):
    x_shape, w_shape, kw = problem
    y = api.conv_transpose2d(np.zeros(x_shape), np.zeros(w_shape),
                                 algorithm="direct", **kw)
    expected = tuple(
        geometry.conv_transpose_output_size(n, k, s, p, o, d)
        for n, k, s, p, o, d in zip(x_shape[2:], w_shape[2:], kw["stride"],
                                    kw["padding"], kw["output_padding"],
                                    kw["dilation"]))
    assert y.shape == (x_shape[0], w_shape[1] * kw["groups"]) + expected
    # H_out = s (H_in - 1) + d (k - 1) + 1 - 2p + output_padding
    for n, k, s, p, o, d, got in zip(x_shape[2:], w_shape[2:], kw["stride"],
                                     kw["padding"], kw["output_padding"],
                                     kw["dilation"], y.shape[2:]):
        assert got == s * (n - 1) + d * (k - 1) + 1 - 2 * p + o
        if d == 1 and o == 0:
            assert got == s * (n - 1) + k - 2 * p


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

XT = np.zeros((1, 4, 5, 5), np.float32)
WT = np.zeros((4, 3, 3, 3), np.float32)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(output_padding=2, stride=2), ValueError, "output_padding"),
    (dict(output_padding=1), ValueError, "output_padding"),
    (dict(output_padding=-1, stride=2), ValueError, "output_padding"),
    (dict(stride=0), ValueError, "stride"),
    (dict(dilation=0), ValueError, "dilation"),
    (dict(padding=-1), ValueError, "padding"),
    (dict(padding=4), ValueError, "not positive"),
    (dict(stride=1.5), TypeError, "stride"),
    (dict(groups=3), ValueError, "groups"),
    (dict(groups=0), ValueError, "groups"),
    (dict(algorithm="fastest"), ValueError, "algorithm"),
    (dict(backend="gpu"), ValueError, "backend"),
])
def test_invalid_arguments_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        api.conv_transpose2d(XT, WT, **kwargs)


def test_invalid_arrays_are_rejected():
    with pytest.raises(ValueError, match=r"w.shape\[0\]"):
        api.conv_transpose2d(XT, WT[:3])
    with pytest.raises(TypeError, match="dtype"):
        api.conv_transpose2d(XT, WT.astype(np.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        api.conv_transpose2d(XT.astype(np.int64), WT)
    with pytest.raises(ValueError, match="bias"):
        api.conv_transpose2d(XT, WT, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="dimensional"):
        api.conv_transpose2d(XT[0, 0], WT)
    with pytest.raises(ValueError, match="dimensional"):
        api.conv_transpose1d(XT, WT)


def test_inapplicable_algorithm_raises_unsupported_configuration():
    if "winograd" not in transposed_algorithms():
        pytest.skip("winograd not built")
    # Winograd computes undilated convolutions only.
    with pytest.raises(kernels.UnsupportedConfiguration, match="winograd"):
        api.conv_transpose2d(XT, WT, dilation=2, algorithm="winograd")


# --------------------------------------------------------------------------
# optional cross-check against PyTorch
# --------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ALGORITHMS)
def test_matches_torch(alg):
    torch = pytest.importorskip("torch")
    _skip_unless_transposable(alg)
    rng = np.random.default_rng(9)
    for x_shape, w_shape, kw in [
            ((2, 4, 5, 6), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
            ((1, 4, 4, 4), (4, 2, 2, 2), dict(stride=2, groups=2)),
            ((1, 2, 6, 5), (2, 3, 3, 2), dict(dilation=(2, 1), padding=(2, 0)))]:
        x = rng.standard_normal(x_shape)
        w = rng.standard_normal(w_shape)
        b = rng.standard_normal(w_shape[1] * kw.get("groups", 1))
        y = _run(alg, x, w, b, **kw)
        if y is None:
            continue
        t = torch.nn.functional.conv_transpose2d(
            torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **kw)
        np.testing.assert_allclose(y, t.numpy(), rtol=1e-10, atol=1e-10)


def test_winograd_runs_transposed_convolutions_of_stride_one_only():
    # An upsampled input is mostly zeros: s^2 times the work, and
    # Winograd's tile-wide rounding lands on outputs that are exactly zero.
    if "winograd" not in api.built_algorithms():
        pytest.skip("winograd is not built")
    x = np.ones((1, 2, 6, 6))
    w = np.ones((2, 3, 3, 3))
    with pytest.raises(kernels.UnsupportedConfiguration, match="stride 1 only"):
        api.conv_transpose2d(x, w, stride=2, algorithm="winograd")
    assert api.conv_transpose2d(x, w, stride=2).shape == (1, 3, 13, 13)
    y = api.conv_transpose2d(x, w, stride=1, algorithm="winograd")
    np.testing.assert_allclose(y, ref_t.conv_transpose2d(x, w), rtol=1e-12)


@settings(deadline=None, max_examples=25)
@given(st.integers(1, 4), st.integers(1, 70), st.integers(1, 70),
       st.integers(1, 4), st.integers(1, 4), st.sampled_from(DTYPES),
       st.integers(0, 2**32 - 1))
def test_forward_filters_are_the_swapped_flipped_weight(groups, c_in_g,
                                                        c_out_g, kh, kw,
                                                        dtype, seed):
    # The stride-1 transposed convolution runs as a forward correlation
    # with w'[g Co + o, c] = w[g Ci + c, o, ::-1, ::-1]; the CPU backend
    # copies it in tiles (1 x 1 filters by their own loop).  Checked
    # element by element against that definition, across tile edges.
    from kernels.cpu.transposed import flip_swap_filters
    w = np.random.default_rng(seed).standard_normal(
        (groups * c_in_g, c_out_g, kh, kw)).astype(dtype)
    got = flip_swap_filters(w, groups)
    assert got.shape == (groups * c_out_g, c_in_g, kh, kw)
    assert got.dtype == w.dtype and got.flags.c_contiguous
    for g in range(groups):
        for o in range(c_out_g):
            np.testing.assert_array_equal(
                got[g * c_out_g + o],
                w[g * c_in_g:(g + 1) * c_in_g, o, ::-1, ::-1])
