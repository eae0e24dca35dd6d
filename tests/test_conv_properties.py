"""Properties of conv1d/conv2d that every algorithm must have.

Each test compares an algorithm with ``reference`` (float64) or with a
mathematical identity, never with itself on the same computation.  The
tolerance of an identity ``lhs == rhs`` between two computed results is the
sum of the documented error bounds of both sides (:mod:`kernels.accuracy`),
propagated through any intermediate result with the abs-values reference:
if ``y1`` has error at most ``E1``, then ``conv(y1, w)`` has error at most
``|E1| * |w| + bound(|y1| * |w|)``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import reference
from kernels import geometry
from helpers import (api, ALL_ALGORITHMS, DTYPES, abs_scale, assert_close_within,
                     assert_within_bound, bound, conv_function, conv_problems,
                     padding_pairs, random_array, reference_function,
                     scipy_style_supported, supports, u)

pytestmark = pytest.mark.usefixtures("backend")

NSPS = (1, 2)

over_algorithms = pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
over_nsp = pytest.mark.parametrize("nsp", NSPS)
over_dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])


def seeds():
    return st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------------
# 1, 2: shape and agreement with the reference
# --------------------------------------------------------------------------

@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_conv_output_shape_matches_geometry(algorithm, nsp, dtype, data):
    problem = data.draw(conv_problems(nsp), label="problem")
    assume(problem.supported_by(algorithm))
    x, w, bias = problem.arrays(dtype)
    y = problem.run(algorithm, x, w, bias)
    pads = padding_pairs(problem.padding, w.shape[2:], problem.dilation, problem.stride)
    spatial = tuple(
        geometry.conv_output_size(n, k, s, pad, d)
        for n, k, s, pad, d in zip(x.shape[-nsp:], w.shape[2:], problem.stride,
                                   pads, problem.dilation))
    expected = x.shape[:-nsp - 1] + (w.shape[0],) + spatial
    assert y.shape == expected, f"{problem}: shape {y.shape} != {expected}"


@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_conv_matches_reference_within_error_bound(algorithm, nsp, dtype, data):
    problem = data.draw(conv_problems(nsp), label="problem")
    assume(problem.supported_by(algorithm))
    x, w, bias = problem.arrays(dtype)
    y = problem.run(algorithm, x, w, bias)
    assert_within_bound(algorithm, y, x, w, bias, **problem.kwargs)


# --------------------------------------------------------------------------
# 3: equivariance under translation and reflection
# --------------------------------------------------------------------------

def _odd_extent_kernel(data, max_k=5):
    """(k, d) with an odd dilated extent d (k - 1) + 1: symmetric padding fits it."""
    k = data.draw(st.integers(1, max_k))
    d = data.draw(st.sampled_from((1, 1, 2, 3)))
    if d * (k - 1) % 2:
        k += 1
    return k, d


@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_circular_shift_of_input_by_stride_multiple_shifts_output(algorithm, nsp, dtype, data):
    """Circular padding of (k_eff - 1) / 2 makes conv a circular correlation
    of period n: rolling x by s t rolls y by t (s divides n)."""
    simple = data.draw(st.booleans())
    stride, kernel, dilation, sizes, shifts = [], [], [], [], []
    for _ in range(nsp):
        s = 1 if simple else data.draw(st.integers(1, 3))
        k, d = _odd_extent_kernel(data)
        if simple:
            d = 1
            k += (k % 2 == 0)
        p = d * (k - 1) // 2
        smallest = max(1, -(-p // s), k if simple else 1)   # Winograd: n >= k
        n = s * data.draw(st.integers(smallest, smallest + 7))
        stride.append(s), kernel.append(k), dilation.append(d), sizes.append(n)
        shifts.append(data.draw(st.integers(-(n // s), n // s)))
    padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    c, k_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    kwargs = dict(stride=tuple(stride), padding=padding, dilation=tuple(dilation),
                  padding_mode="circular")
    x_shape, w_shape = (2, c) + tuple(sizes), (k_out, c) + tuple(kernel)
    assume(supports(algorithm, nsp, x_shape, w_shape, **kwargs))
    rng = np.random.default_rng(data.draw(seeds()))
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    axes = tuple(range(2, 2 + nsp))
    conv = conv_function(nsp)
    y = conv(x, w, algorithm=algorithm, **kwargs)
    x_rolled = np.roll(x, [s * t for s, t in zip(stride, shifts)], axis=axes)
    y_of_rolled = conv(x_rolled, w, algorithm=algorithm, **kwargs)
    assert y.shape[2:] == tuple(n // s for n, s in zip(sizes, stride))
    scale = abs_scale(x, w, **kwargs)
    tol = bound(algorithm, dtype, np.roll(scale, shifts, axis=axes)) + \
        np.roll(bound(algorithm, dtype, scale), shifts, axis=axes)
    assert_close_within(y_of_rolled, np.roll(y, shifts, axis=axes), tol,
                        f"{algorithm}: shifts {shifts}, {kwargs}, x {x_shape}, w {w_shape}")


@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_shift_of_input_shifts_output_in_the_interior(algorithm, nsp, dtype, data):
    """Zero padding: where neither window touches the padding or the
    wrapped-around part of the rolled input, y(roll(x, s t))[i] = y(x)[i - t]."""
    simple = data.draw(st.booleans())
    stride, kernel, dilation, padding, sizes, shifts = [], [], [], [], [], []
    for _ in range(nsp):
        s = 1 if simple else data.draw(st.integers(1, 3))
        d = 1 if simple else data.draw(st.integers(1, 2))
        k, p, t = data.draw(st.integers(1, 4)), data.draw(st.integers(0, 2)), \
            data.draw(st.integers(0, 3))
        n = s * t + p + d * (k - 1) + 1 + s + data.draw(st.integers(0, 5))
        for lst, v in zip((stride, kernel, dilation, padding, sizes, shifts),
                          (s, k, d, p, n, t)):
            lst.append(v)
    kwargs = dict(stride=tuple(stride), padding=tuple(padding), dilation=tuple(dilation))
    c, k_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    x_shape, w_shape = (1, c) + tuple(sizes), (k_out, c) + tuple(kernel)
    assume(supports(algorithm, nsp, x_shape, w_shape, **kwargs))
    rng = np.random.default_rng(data.draw(seeds()))
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    axes = tuple(range(2, 2 + nsp))
    conv = conv_function(nsp)
    y = conv(x, w, algorithm=algorithm, **kwargs)
    y_shifted = conv(np.roll(x, [s * t for s, t in zip(stride, shifts)], axis=axes), w,
                     algorithm=algorithm, **kwargs)
    # Output i reads x_pad[s i .. s i + k_eff - 1] = x[s i - p ...]; keep the
    # outputs whose window lies in x[s t:] of the rolled input.
    inside, before = [], []
    for n, k, s, d, p, t in zip(sizes, kernel, stride, dilation, padding, shifts):
        i = np.arange(y.shape[2 + len(inside)])
        keep = i[(s * i - p >= s * t) & (s * i - p + d * (k - 1) <= n - 1)]
        assert keep.size, "the strategy must leave an interior"
        inside.append(keep), before.append(keep - t)
    index = (slice(None), slice(None)) + np.ix_(*inside)
    index_before = (slice(None), slice(None)) + np.ix_(*before)
    scale = abs_scale(x, w, **kwargs)
    tol = 2 * bound(algorithm, dtype, scale[index_before])
    assert_close_within(y_shifted[index], y[index_before], tol,
                        f"{algorithm}: shifts {shifts}, {kwargs}, x {x_shape}, w {w_shape}")


@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_flipping_input_and_kernel_flips_output(algorithm, nsp, dtype, data):
    """Stride 1 and symmetric padding (any padding mode): flipping x and w
    along a spatial axis flips y along it."""
    problem = data.draw(conv_problems(nsp, stride_one=True, paddings=("int", "tuple", "valid")),
                        label="problem")
    assume(problem.supported_by(algorithm))
    x, w, bias = problem.arrays(dtype)
    axis = data.draw(st.sampled_from(range(-nsp, 0)), label="axis")
    y = problem.run(algorithm, x, w, bias)
    y_of_flipped = problem.run(algorithm, np.flip(x, axis), np.flip(w, axis), bias)
    scale = abs_scale(x, w, bias, **problem.kwargs)
    tol = bound(algorithm, dtype, np.flip(scale, axis)) * 2
    assert_close_within(y_of_flipped, np.flip(y, axis), tol, f"{problem}, axis {axis}")


# --------------------------------------------------------------------------
# 4: composition, associativity, commutativity, linearity
# --------------------------------------------------------------------------

def composed_kernel(w1, w2):
    """Kernel of two stacked valid cross-correlations, in float64.

    ``(x (*) a) (*) b = x (*) (a * b)`` for cross-correlation ``(*)`` and
    full convolution ``*``: ``sum_l sum_j x[i + l + j] a[j] b[l] = sum_t
    x[i + t] sum_{j + l = t} a[j] b[l]``.  With channels,
    ``W[k, c] = sum_m w1[m, c] * w2[k, m]`` (full convolution).
    """
    k_out, m_mid = w2.shape[:2]
    c_in = w1.shape[1]
    out = np.zeros((k_out, c_in) + tuple(a + b - 1 for a, b in zip(w1.shape[2:], w2.shape[2:])))
    for k in range(k_out):
        for c in range(c_in):
            for m in range(m_mid):
                out[k, c] += reference.convolve(w1[m, c], w2[k, m], mode="full")
    return out


@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_two_valid_convs_equal_one_with_the_composed_kernel(algorithm, nsp, dtype, data):
    c, m, k_out = (data.draw(st.integers(1, 3)) for _ in range(3))
    k1 = tuple(data.draw(st.integers(1, 3)) for _ in range(nsp))
    k2 = tuple(data.draw(st.integers(1, 3)) for _ in range(nsp))
    sizes = tuple(a + b - 2 + data.draw(st.integers(1, 6)) for a, b in zip(k1, k2))
    x_shape = (2, c) + sizes
    kc = tuple(a + b - 1 for a, b in zip(k1, k2))
    assume(supports(algorithm, nsp, x_shape, (m, c) + k1)
           and supports(algorithm, nsp, (2, m) + tuple(n - a + 1 for n, a in zip(sizes, k1)),
                        (k_out, m) + k2)
           and supports(algorithm, nsp, x_shape, (k_out, c) + kc))
    rng = np.random.default_rng(data.draw(seeds()))
    x = random_array(rng, x_shape, dtype)
    w1 = random_array(rng, (m, c) + k1, dtype)
    w2 = random_array(rng, (k_out, m) + k2, dtype)
    conv, ref = conv_function(nsp), reference_function(nsp)

    y1 = conv(x, w1, algorithm=algorithm)
    lhs = conv(y1, w2, algorithm=algorithm)
    e1 = bound(algorithm, dtype, ref(np.abs(x), np.abs(w1)))
    e_lhs = ref(e1, np.abs(w2)) + bound(algorithm, dtype, ref(np.abs(y1), np.abs(w2)))

    w64 = composed_kernel(w1, w2)
    wc = w64.astype(dtype)
    rhs = conv(x, wc, algorithm=algorithm)
    # wc differs from the exact composed kernel by its rounding to dtype and
    # by the float64 sums of m * prod(k1) products.
    terms = m * math.prod(k1) + 1
    kernel_err = u(dtype) * np.abs(w64) + terms * u(np.float64) * composed_kernel(
        np.abs(w1), np.abs(w2))
    e_rhs = bound(algorithm, dtype, ref(np.abs(x), np.abs(wc))) + ref(np.abs(x), kernel_err)
    assert_close_within(lhs, rhs, e_lhs + e_rhs,
                        f"{algorithm}: x {x_shape}, w1 {w1.shape}, w2 {w2.shape}")


def _small_array(data, rng, ndim, dtype, max_size):
    shape = tuple(data.draw(st.integers(1, max_size)) for _ in range(ndim))
    return random_array(rng, shape, dtype)


@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_convolve_is_associative(algorithm, nsp, dtype, data):
    rng = np.random.default_rng(data.draw(seeds()))
    g, h = (_small_array(data, rng, nsp, dtype, 4) for _ in range(2))
    gh_shape = tuple(a + b - 1 for a, b in zip(g.shape, h.shape))
    if data.draw(st.integers(0, 3)):  # mostly f at least as large as g * h (Winograd)
        f_shape = tuple(n + data.draw(st.integers(0, 3)) for n in gh_shape)
        f = random_array(rng, f_shape, dtype)
    else:
        f = _small_array(data, rng, nsp, dtype, 5)
    fg_shape = tuple(a + b - 1 for a, b in zip(f.shape, g.shape))
    assume(scipy_style_supported(algorithm, f.shape, g.shape)
           and scipy_style_supported(algorithm, g.shape, h.shape)
           and scipy_style_supported(algorithm, fg_shape, h.shape)
           and scipy_style_supported(algorithm, f.shape, gh_shape))
    conv = lambda a, b: api.convolve(a, b, mode="full", method=algorithm)  # noqa: E731
    fg, gh = conv(f, g), conv(g, h)
    lhs, rhs = conv(fg, h), conv(f, gh)
    refc = lambda a, b: reference.convolve(a, b, mode="full")  # noqa: E731
    a, b, c = np.abs(f), np.abs(g), np.abs(h)
    e_fg, e_gh = bound(algorithm, dtype, refc(a, b)), bound(algorithm, dtype, refc(b, c))
    e_lhs = refc(e_fg, c) + bound(algorithm, dtype, refc(np.abs(fg), c))
    e_rhs = refc(a, e_gh) + bound(algorithm, dtype, refc(a, np.abs(gh)))
    assert_close_within(lhs, rhs, e_lhs + e_rhs,
                        f"{algorithm}: f {f.shape}, g {g.shape}, h {h.shape}")


@over_dtypes
@over_nsp
@over_algorithms
@pytest.mark.parametrize("mode", ("full", "valid"))
@given(data=st.data())
def test_convolve_is_commutative(algorithm, nsp, dtype, mode, data):
    rng = np.random.default_rng(data.draw(seeds()))
    f = _small_array(data, rng, nsp, dtype, 9)
    g = _small_array(data, rng, nsp, dtype, 9)
    if data.draw(st.booleans()):      # equal shapes: each is a valid kernel of the other
        g = random_array(rng, f.shape, dtype)
    if mode == "valid" and not (all(p >= q for p, q in zip(f.shape, g.shape))
                                or all(p <= q for p, q in zip(f.shape, g.shape))):
        g = g[tuple(slice(0, n) for n in f.shape)]  # make f dominate g
    assume(scipy_style_supported(algorithm, f.shape, g.shape, mode)
           and scipy_style_supported(algorithm, g.shape, f.shape, mode))
    fg = api.convolve(f, g, mode=mode, method=algorithm)
    gf = api.convolve(g, f, mode=mode, method=algorithm)
    tol = 2 * bound(algorithm, dtype, reference.convolve(np.abs(f), np.abs(g), mode=mode))
    assert_close_within(fg, gf, tol, f"{algorithm}: f {f.shape}, g {g.shape}, mode {mode}")


def _scalars(data, dtype):
    values = st.floats(-4, 4, allow_nan=False, width=32)
    return (float(np.asarray(data.draw(values), dtype)) for _ in range(2))


def _assert_linear(algorithm, nsp, dtype, data, in_kernel):
    """conv(a v1 + b v2) = a conv(v1) + b conv(v2), v the input or the kernel.

    The combination is rounded to dtype (within 2 u (|a v1| + |b v2|) of
    exact); each side may err by the algorithm's bound on its own scale.
    """
    problem = data.draw(conv_problems(nsp, bias=False), label="problem")
    assume(problem.supported_by(algorithm))
    x, w, _ = problem.arrays(dtype)
    v1 = w if in_kernel else x
    v2 = random_array(np.random.default_rng(problem.seed + 1), v1.shape, dtype)
    a, b = _scalars(data, dtype)
    kw = problem.kwargs

    def operands(v):
        return (x, v) if in_kernel else (v, w)

    def run(v):
        return problem.run(algorithm, *operands(v), None)

    def scale(v):
        return abs_scale(*operands(v), **kw)

    combination = a * v1 + b * v2
    lhs = run(combination)
    y1, y2 = run(v1), run(v2)
    rhs = a * y1 + b * y2
    rounding = 2 * u(dtype) * (abs(a) * np.abs(v1.astype(np.float64))
                               + abs(b) * np.abs(v2.astype(np.float64)))
    e_lhs = bound(algorithm, dtype, scale(combination)) + scale(rounding)
    e_rhs = (abs(a) * bound(algorithm, dtype, scale(v1))
             + abs(b) * bound(algorithm, dtype, scale(v2))
             + 2 * u(dtype) * (np.abs(a * y1.astype(np.float64))
                               + np.abs(b * y2.astype(np.float64))))
    assert_close_within(lhs, rhs, e_lhs + e_rhs, f"{problem}, a={a}, b={b}")


@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_conv_is_linear_in_the_input(algorithm, nsp, dtype, data):
    _assert_linear(algorithm, nsp, dtype, data, in_kernel=False)


@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_conv_is_linear_in_the_kernel(algorithm, nsp, dtype, data):
    _assert_linear(algorithm, nsp, dtype, data, in_kernel=True)


# --------------------------------------------------------------------------
# 5: convolution theorem
# --------------------------------------------------------------------------

def circular_correlation_by_fft(x, w, dilation):
    """``y[n, k, i] = sum_{c, j} x[n, c, (i + d j - lo) mod L] w[k, c, j]`` in float64.

    ``lo = d (k - 1) // 2`` is the low padding of ``padding="same"``.  By the
    correlation theorem, per channel pair: ``irfft(rfft(x) conj(rfft(v)))``
    with ``v[m] = sum_{j : d j - lo = m (mod L)} w[j]``.
    """
    spatial = x.shape[2:]
    axes = tuple(range(-len(spatial), 0))
    v = np.zeros(w.shape[:2] + spatial)
    taps = np.indices(w.shape[2:]).reshape(len(spatial), -1).T
    for tap in taps:
        lo = [d * (k - 1) // 2 for k, d in zip(w.shape[2:], dilation)]
        pos = tuple((d * j - l) % n for j, d, l, n in zip(tap, dilation, lo, spatial))
        v[(slice(None), slice(None)) + pos] += w[(slice(None), slice(None)) + tuple(tap)]
    fx = np.fft.rfftn(x.astype(np.float64), axes=axes)
    fv = np.fft.rfftn(v, axes=axes)
    spectrum = np.einsum("nc...,kc...->nk...", fx, np.conj(fv))
    return np.fft.irfftn(spectrum, s=spatial, axes=axes)


@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_circular_conv_matches_the_convolution_theorem(algorithm, nsp, dtype, data):
    simple = data.draw(st.booleans())
    kernel = tuple(data.draw(st.integers(1, 6)) for _ in range(nsp))
    dilation = (1,) * nsp if simple else tuple(data.draw(st.integers(1, 3)) for _ in range(nsp))
    # circular padding needs each side at most the input length
    sizes = tuple(data.draw(st.integers(max(1, d * (k - 1) - d * (k - 1) // 2,
                                            k if simple else 1), 12))
                  for k, d in zip(kernel, dilation))
    c, k_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    kwargs = dict(padding="same", dilation=dilation, padding_mode="circular")
    x_shape, w_shape = (2, c) + sizes, (k_out, c) + kernel
    assume(supports(algorithm, nsp, x_shape, w_shape, **kwargs))
    rng = np.random.default_rng(data.draw(seeds()))
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    y = conv_function(nsp)(x, w, algorithm=algorithm, **kwargs)
    expected = circular_correlation_by_fft(x.astype(np.float64), w.astype(np.float64), dilation)
    scale = abs_scale(x, w, **kwargs)
    # numpy's float64 FFT is itself only normwise accurate: allow it fft's bound.
    tol = bound(algorithm, dtype, scale) + bound("fft", np.float64, scale)
    assert_close_within(y, expected, tol, f"{algorithm}: x {x_shape}, w {w_shape}, {kwargs}")


# --------------------------------------------------------------------------
# 6: 1x1 and depthwise-separable convolutions
# --------------------------------------------------------------------------

@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_1x1_conv_is_a_per_pixel_matrix_product(algorithm, nsp, dtype, data):
    c, k_out, n = (data.draw(st.integers(1, 4)) for _ in range(3))
    sizes = tuple(data.draw(st.integers(1, 9)) for _ in range(nsp))
    simple = data.draw(st.booleans())
    stride = (1,) * nsp if simple else tuple(data.draw(st.integers(1, 3)) for _ in range(nsp))
    x_shape, w_shape = (n, c) + sizes, (k_out, c) + (1,) * nsp
    assume(supports(algorithm, nsp, x_shape, w_shape, stride=stride))
    rng = np.random.default_rng(data.draw(seeds()))
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    bias = random_array(rng, (k_out,), dtype) if data.draw(st.booleans()) else None
    y = conv_function(nsp)(x, w, bias, stride=stride, algorithm=algorithm)
    sub = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)
    matrix = w.reshape(k_out, c).astype(np.float64)
    pixels = x[sub].astype(np.float64)
    b = np.zeros(k_out) if bias is None else bias.astype(np.float64)
    expand = (slice(None),) + (None,) * nsp
    expected = np.einsum("kc,nc...->nk...", matrix, pixels) + b[expand]
    scale = np.einsum("kc,nc...->nk...", np.abs(matrix), np.abs(pixels)) + np.abs(b)[expand]
    tol = bound(algorithm, dtype, scale) + (c + 1) * u(np.float64) * scale
    assert_close_within(y, expected, tol, f"{algorithm}: x {x_shape}, w {w_shape}, stride {stride}")


@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_depthwise_then_pointwise_equals_the_separable_dense_conv(algorithm, nsp, dtype, data):
    """conv(conv(x, dw, groups=C), pw) = conv(x, W), W[k, c] = pw[k, c] dw[c]."""
    c, k_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    kernel = tuple(data.draw(st.integers(1, 5)) for _ in range(nsp))
    simple = data.draw(st.booleans())
    stride = (1,) * nsp if simple else tuple(data.draw(st.integers(1, 2)) for _ in range(nsp))
    dilation = (1,) * nsp if simple else tuple(data.draw(st.integers(1, 2)) for _ in range(nsp))
    padding = tuple(data.draw(st.integers(0, 2)) for _ in range(nsp))
    sizes = tuple(max(1, d * (k - 1) + 1 - 2 * p, k if simple else 1)
                  + data.draw(st.integers(0, 6))
                  for k, d, p in zip(kernel, dilation, padding))
    kw = dict(stride=stride, padding=padding, dilation=dilation)
    x_shape = (2, c) + sizes
    dw_shape, pw_shape = (c, 1) + kernel, (k_out, c) + (1,) * nsp
    assume(supports(algorithm, nsp, x_shape, dw_shape, groups=c, **kw)
           and supports(algorithm, nsp, x_shape, (k_out, c) + kernel, **kw)
           and supports(algorithm, nsp, (2, c) + sizes, pw_shape))
    rng = np.random.default_rng(data.draw(seeds()))
    x = random_array(rng, x_shape, dtype)
    dw, pw = random_array(rng, dw_shape, dtype), random_array(rng, pw_shape, dtype)
    conv, ref = conv_function(nsp), reference_function(nsp)

    y1 = conv(x, dw, groups=c, algorithm=algorithm, **kw)
    lhs = conv(y1, pw, algorithm=algorithm)
    e1 = bound(algorithm, dtype, ref(np.abs(x), np.abs(dw), groups=c, **kw))
    e_lhs = ref(e1, np.abs(pw)) + bound(algorithm, dtype, ref(np.abs(y1), np.abs(pw)))

    w64 = pw.astype(np.float64) * np.swapaxes(dw.astype(np.float64), 0, 1)  # (K, C, *k)
    wc = w64.astype(dtype)
    rhs = conv(x, wc, algorithm=algorithm, **kw)
    e_rhs = bound(algorithm, dtype, ref(np.abs(x), np.abs(wc), **kw)) + \
        ref(np.abs(x), u(dtype) * np.abs(w64), **kw)
    assert_close_within(lhs, rhs, e_lhs + e_rhs,
                        f"{algorithm}: x {x_shape}, dw {dw_shape}, pw {pw_shape}, {kw}")


@given(c=st.integers(1, 512), k_out=st.integers(1, 512), k=st.integers(1, 11))
def test_separable_to_dense_parameter_ratio_is_inverse_cout_plus_inverse_area(c, k_out, k):
    separable = (geometry.conv_params(c, c, k, bias=False, groups=c)
                 + geometry.conv_params(c, k_out, 1, bias=False))
    dense = geometry.conv_params(c, k_out, k, bias=False)
    assert Fraction(separable, dense) == Fraction(1, k_out) + Fraction(1, k * k)


# --------------------------------------------------------------------------
# 7: receptive field
# --------------------------------------------------------------------------

@over_dtypes
@over_algorithms
@given(data=st.data())
def test_impulse_response_support_has_the_receptive_field_width(algorithm, dtype, data):
    """Output pixel o of a stack of positive-weight valid 1-D layers depends
    on exactly the inputs of its receptive field: batch item m holds an
    impulse at m, so y[m, 0, o] > 0 iff input m is in o's field; the field
    spans geometry.receptive_field(layers) inputs.

    Computed values below the propagated error bound count as zero: true
    non-zeros are at least 0.5 ** layers, far above the bound."""
    n_layers = data.draw(st.integers(1, 3))
    simple = data.draw(st.booleans())
    layers = [(data.draw(st.integers(1, 4)),
               1 if simple else data.draw(st.integers(1, 3)),
               1 if simple else data.draw(st.integers(1, 2))) for _ in range(n_layers)]
    field = geometry.receptive_field(layers)
    jump = math.prod(s for _, s, _ in layers)
    length = field + jump * data.draw(st.integers(0, 4))
    rng = np.random.default_rng(data.draw(seeds()))
    x = np.eye(length, dtype=dtype)[:, None, :]          # (L, 1, L): impulses
    y, err = x, np.zeros(x.shape)
    for k, s, d in layers:
        assume(supports(algorithm, 1, y.shape, (1, 1, k), stride=s, dilation=d))
        w = rng.uniform(0.5, 1.0, (1, 1, k)).astype(dtype)
        err = (reference.conv1d(err, w, stride=s, dilation=d)
               + bound(algorithm, dtype, reference.conv1d(np.abs(y), w, stride=s, dilation=d)))
        y = api.conv1d(y, w, stride=s, dilation=d, algorithm=algorithm)
    assert y.shape[2] >= 1
    for o in range(y.shape[2]):
        support = np.flatnonzero(y[:, 0, o] > err[:, 0, o])
        width = support.max() - support.min() + 1 if support.size else 0
        assert width == field, (f"{algorithm}: layers {layers}: output {o} depends on "
                                f"inputs {support.tolist()}, width {width} != {field}")
        assert support.min() == o * jump
