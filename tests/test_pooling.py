"""Pooling: agreement with ``reference``, invariances, gradient routing, errors.

Max pooling is exact (a maximum of the inputs is one of the inputs), so
values and argmax indices must equal the float64 reference bit for bit.
Average pooling must satisfy ``|y - y_ref| <= c u avg_pool(|x|) + tiny``
with ``c = kernels._pooling.avg_pool_error_constant(dtype, kh kw)``
(``kh kw + 1``; global average pooling: 2 for float32, summed in float64).  Gradients are checked against finite differences in
``tests/test_backward.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import kernels
from helpers import api
import reference.pooling as ref
from kernels import geometry
from kernels._pooling import (avg_pool_error_constant,
                              global_avg_pool_error_constant)
from kernels.cpu import pooling as cpu_pooling

pytestmark = pytest.mark.usefixtures("backend")

DTYPES = (np.float32, np.float64)


# --------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------

@st.composite
def pool_cases(draw, nsp=2, avg=False, max_size=9, max_width=None):
    """A valid pooling problem: shape and keyword arguments.

    ``max_width`` bounds the last axis separately: rows of up to ~100
    elements reach the vectorised main loops of the kernels (16 float32
    lanes) and their remainders, which 9-wide rows never do.
    """
    lead = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    sizes = [max_size] * nsp
    if max_width is not None:
        sizes[-1] = max_width
    spatial = tuple(draw(st.integers(1, n)) for n in sizes)
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nsp))
    stride = draw(st.none() | st.tuples(*[st.integers(1, 3)] * nsp))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    ceil_mode = draw(st.booleans())
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding,
                  ceil_mode=ceil_mode)
    dilation = (1,) * nsp
    if not avg:
        dilation = tuple(draw(st.integers(1, 2)) for _ in range(nsp))
        kwargs["dilation"] = dilation
    strides = kernel if stride is None else stride
    try:
        for n, k, s, p, d in zip(spatial, kernel, strides, padding, dilation):
            ref.pool_output_size(n, k, s, p, d, ceil_mode)
    except ValueError:
        assume(False)
    return lead + spatial, kwargs


def make_input(seed, shape, dtype, ties=False, nan=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if ties:  # few distinct values: many windows hold several maxima
        x = np.round(x)
    if nan and x.size:
        x.flat[rng.integers(0, x.size, size=max(1, x.size // 20))] = np.nan
    return x.astype(dtype)


# --------------------------------------------------------------------------
# agreement with the reference
# --------------------------------------------------------------------------

@settings(deadline=None)
@given(case=pool_cases(), dtype=st.sampled_from(DTYPES), ties=st.booleans(),
       nan=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_max_pool2d_equals_the_reference_exactly(case, dtype, ties, nan, seed):
    shape, kwargs = case
    x = make_input(seed, shape, dtype, ties, nan)
    y, idx = api.max_pool2d(x, return_indices=True, **kwargs)
    y_ref, idx_ref = ref.max_pool2d(x, return_indices=True, **kwargs)
    assert y.dtype == dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(y, y_ref.astype(dtype))
    # Windows that hold no input element (dilation gaps) have no argmax.
    has_input = idx_ref >= 0
    np.testing.assert_array_equal(idx[has_input], idx_ref[has_input])
    np.testing.assert_array_equal(api.max_pool2d(x, **kwargs), y)


@settings(deadline=None)
@given(case=pool_cases(nsp=1), dtype=st.sampled_from(DTYPES),
       nan=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_max_pool1d_equals_the_reference_exactly(case, dtype, nan, seed):
    shape, kwargs = case
    x = make_input(seed, shape, dtype, ties=True, nan=nan)
    y, idx = api.max_pool1d(x, return_indices=True, **kwargs)
    y_ref, idx_ref = ref.max_pool1d(x, return_indices=True, **kwargs)
    np.testing.assert_array_equal(y, y_ref.astype(dtype))
    has_input = idx_ref >= 0
    np.testing.assert_array_equal(idx[has_input], idx_ref[has_input])


@settings(deadline=None)
@given(case=pool_cases(max_size=5, max_width=100), dtype=st.sampled_from(DTYPES),
       nan=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_max_pool2d_on_wide_rows_equals_the_reference_exactly(case, dtype, nan,
                                                              seed):
    shape, kwargs = case
    x = make_input(seed, shape, dtype, nan=nan)
    np.testing.assert_array_equal(api.max_pool2d(x, **kwargs),
                                  ref.max_pool2d(x, **kwargs).astype(dtype))


# The windows of real networks (ResNet/VGG/Inception stems and blocks),
# each with its own literal-offset loop in the kernels, plus dilated and
# wide-stride windows that take the generic loops; widths around one and
# several 16-lane vectors.
COMMON_WINDOWS = [
    dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, stride=2),
    dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=2, stride=1), dict(kernel_size=1, stride=2),
    dict(kernel_size=4, stride=2, padding=1), dict(kernel_size=5, stride=3,
                                                   padding=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [15, 56, 113])
@pytest.mark.parametrize("window", COMMON_WINDOWS, ids=str)
def test_common_windows_on_wide_rows_match_the_reference(window, width, dtype):
    x = make_input(width, (2, 3, 9, width), dtype, nan=True)
    np.testing.assert_array_equal(api.max_pool2d(x, **window),
                                  ref.max_pool2d(x, **window).astype(dtype))
    for dilation in (2, 3):
        if window["kernel_size"] > 1 and not window.get("ceil_mode"):
            kw = dict(window, dilation=dilation)
            np.testing.assert_array_equal(api.max_pool2d(x, **kw),
                                          ref.max_pool2d(x, **kw).astype(dtype))
    x = make_input(width, (2, 3, 9, width), dtype)
    for count_include_pad in (True, False):
        kw = dict(window, count_include_pad=count_include_pad)
        assert_avg_within_bound(api.avg_pool2d(x, **kw), x, kw, 2)


@pytest.mark.parametrize("divisor_override", [-1, 1, -3])
def test_every_divisor_override_value_is_applied(divisor_override):
    # The kernel caches a row's divisors; no value may pass for "not yet
    # computed" (-1 once did).
    x = make_input(5, (2, 3, 7, 40), np.float32)
    kw = dict(kernel_size=3, stride=2, padding=1,
              divisor_override=divisor_override)
    assert_avg_within_bound(api.avg_pool2d(x, **kw), x, kw, 2)


def assert_avg_within_bound(y, x, kwargs, nsp):
    pool = ref.avg_pool1d if nsp == 1 else ref.avg_pool2d
    y_ref = pool(x, **kwargs)
    scale = np.abs(pool(np.abs(x.astype(np.float64)), **kwargs))
    area = int(np.prod(kwargs["kernel_size"]))
    u = np.finfo(x.dtype).eps / 2
    bound = avg_pool_error_constant(x.dtype, area) * u * scale + np.finfo(x.dtype).tiny
    err = np.abs(y.astype(np.float64) - y_ref)
    assert y.dtype == x.dtype and y.shape == y_ref.shape
    assert np.all(err <= bound), (
        f"max error {np.max(err / bound):.3g} bound units for {kwargs}")


@settings(deadline=None)
@given(case=pool_cases(avg=True), dtype=st.sampled_from(DTYPES),
       count_include_pad=st.booleans(),
       divisor_override=st.none() | st.sampled_from([1, 3, -2, 7]),
       seed=st.integers(0, 2**32 - 1))
def test_avg_pool2d_within_a_few_ulps_of_the_reference(case, dtype,
                                                      count_include_pad,
                                                      divisor_override, seed):
    shape, kwargs = case
    kwargs.update(count_include_pad=count_include_pad,
                  divisor_override=divisor_override)
    x = make_input(seed, shape, dtype)
    assert_avg_within_bound(api.avg_pool2d(x, **kwargs), x, kwargs, 2)


@settings(deadline=None)
@given(case=pool_cases(avg=True, max_size=5, max_width=100),
       dtype=st.sampled_from(DTYPES), count_include_pad=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_avg_pool2d_on_wide_rows_within_a_few_ulps_of_the_reference(
        case, dtype, count_include_pad, seed):
    shape, kwargs = case
    kwargs.update(count_include_pad=count_include_pad)
    x = make_input(seed, shape, dtype)
    assert_avg_within_bound(api.avg_pool2d(x, **kwargs), x, kwargs, 2)


@settings(deadline=None)
@given(case=pool_cases(nsp=1, avg=True), dtype=st.sampled_from(DTYPES),
       count_include_pad=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_avg_pool1d_within_a_few_ulps_of_the_reference(case, dtype,
                                                      count_include_pad, seed):
    shape, kwargs = case
    kwargs.update(count_include_pad=count_include_pad)
    x = make_input(seed, shape, dtype)
    assert_avg_within_bound(api.avg_pool1d(x, **kwargs), x, kwargs, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_avg_pool2d_within_a_few_ulps_of_the_reference(dtype):
    x = make_input(3, (2, 5, 7, 9), dtype)
    y = api.global_avg_pool2d(x)
    y_ref = ref.global_avg_pool2d(x)
    scale = ref.global_avg_pool2d(np.abs(x.astype(np.float64)))
    u = np.finfo(dtype).eps / 2
    c = global_avg_pool_error_constant(dtype, 7 * 9)
    assert y.shape == (2, 5, 1, 1) and y.dtype == dtype
    assert np.all(np.abs(y - y_ref) <= c * u * scale)
    assert api.global_avg_pool2d(x[0]).shape == (5, 1, 1)


def test_unbatched_input_gives_unbatched_output():
    x = make_input(0, (3, 6, 7), np.float64)
    for f in (kernels.max_pool2d, kernels.avg_pool2d):
        np.testing.assert_array_equal(f(x, 2), f(x[None], 2)[0])
    np.testing.assert_array_equal(api.max_pool1d(x[0], 2),
                                  api.max_pool1d(x[:1], 2)[0])


def test_batch_size_zero_gives_an_empty_result():
    x = np.zeros((0, 3, 6, 6), np.float32)
    assert api.max_pool2d(x, 2).shape == (0, 3, 3, 3)
    assert api.avg_pool2d(x, 3, 1, 1).shape == (0, 3, 6, 6)
    y, idx = api.max_pool2d(x, 2, return_indices=True)
    assert idx.shape == (0, 3, 3, 3)


def test_inputs_are_not_modified_and_views_are_accepted():
    base = make_input(1, (2, 3, 9, 10), np.float64)
    x = base[:, ::-1, 1:, ::2]           # a non-contiguous view
    keep = x.copy()
    y = api.max_pool2d(x, 3, 2, 1)
    np.testing.assert_array_equal(x, keep)
    np.testing.assert_array_equal(y, ref.max_pool2d(keep, 3, 2, 1))
    g = np.ones_like(y)
    api.max_pool2d_backward(g, x, 3, 2, 1)
    api.avg_pool2d_backward(api.avg_pool2d(x, 3, 2, 1), x, 3, 2, 1)
    np.testing.assert_array_equal(x, keep)


# --------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------

@settings(deadline=None)
@given(case=pool_cases(max_size=12))
def test_output_shape_is_the_geometry_formula(case):
    shape, kwargs = case
    x = np.zeros(shape)
    k, s, p, d = (kwargs["kernel_size"], kwargs["stride"] or kwargs["kernel_size"],
                  kwargs["padding"], kwargs["dilation"])
    expected = tuple(geometry.pool_output_size(n, *args, ceil_mode=kwargs["ceil_mode"])
                     for n, *args in zip(shape[2:], k, s, p, d))
    # The geometry formula and the reference's own derivation agree...
    assert expected == tuple(ref.pool_output_size(n, *args, ceil_mode=kwargs["ceil_mode"])
                             for n, *args in zip(shape[2:], k, s, p, d))
    # ...and the output has that shape.
    assert api.max_pool2d(x, **kwargs).shape == shape[:2] + expected


def test_ceil_mode_window_past_the_padded_input_is_clipped_like_torch():
    # 3 + 2*0 - 4 = -1 < 0, yet ceil_mode gives one window (PyTorch's rule).
    x = make_input(0, (1, 1, 3, 3), np.float64)
    assert geometry.pool_output_size(3, 4, 2, 0, 1, ceil_mode=True) == 1
    np.testing.assert_array_equal(api.max_pool2d(x, 4, 2, ceil_mode=True),
                                  x.max(keepdims=True))
    np.testing.assert_allclose(api.avg_pool2d(x, 4, 2, ceil_mode=True),
                               x.mean(keepdims=True))


# --------------------------------------------------------------------------
# invariances and the meaning of max pooling
# --------------------------------------------------------------------------

@settings(deadline=None)
@given(shape=st.tuples(st.integers(1, 6), st.integers(1, 7)),
       shift=st.tuples(st.integers(-8, 8), st.integers(-8, 8)),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_global_avg_pool_is_exactly_invariant_to_circular_shifts(shape, shift,
                                                                dtype, seed):
    # Multiples of 1/64 below 2**10: every partial sum is exact in both
    # dtypes, so whatever the summation order, a correct kernel returns
    # the same correctly rounded mean for every shift.
    rng = np.random.default_rng(seed)
    x = (rng.integers(-2**16, 2**16, size=(2, 3) + shape) / 64).astype(dtype)
    y = api.global_avg_pool2d(x)
    y_shifted = api.global_avg_pool2d(np.roll(x, shift, axis=(2, 3)))
    np.testing.assert_array_equal(y_shifted, y)
    np.testing.assert_array_equal(y, ref.global_avg_pool2d(x).astype(dtype))


@settings(deadline=None)
@given(k=st.integers(1, 4), s=st.integers(1, 4), size=st.integers(6, 14),
       pos=st.tuples(st.integers(0, 13), st.integers(0, 13)),
       dtype=st.sampled_from(DTYPES))
def test_max_pool_of_an_impulse_marks_exactly_the_windows_holding_it(k, s, size,
                                                                    pos, dtype):
    i, j = min(pos[0], size - 1), min(pos[1], size - 1)
    x = np.full((1, 1, size, size), -1.0, dtype)
    x[0, 0, i, j] = 1.0
    y = api.max_pool2d(x, k, s)
    ho, wo = y.shape[2:]
    rows = (np.arange(ho) * s <= i) & (i < np.arange(ho) * s + k)
    cols = (np.arange(wo) * s <= j) & (j < np.arange(wo) * s + k)
    np.testing.assert_array_equal(y[0, 0], np.where(np.outer(rows, cols), 1.0, -1.0))


@pytest.mark.parametrize("k, s", [(2, 2), (3, 3), (3, 2), (2, 1)])
def test_max_pool_of_an_impulse_is_shift_invariant_within_a_window(k, s):
    size = 4 * s + k
    base = np.zeros((1, 1, size, size))

    def pooled(i, j):
        x = base.copy()
        x[0, 0, i, j] = 1.0
        return api.max_pool2d(x, k, s)

    i0 = j0 = s + (k - 1)
    y0 = pooled(i0, j0)
    # Non-overlapping windows (k == s): anywhere inside the same window
    # gives the same output.
    if k == s:
        for di in range(k):
            for dj in range(k):
                np.testing.assert_array_equal(pooled(s + di, s + dj), pooled(s, s))
    # Moving it by one stride moves the output by one pixel.
    y1 = pooled(i0 + s, j0)
    np.testing.assert_array_equal(y1[0, 0, 1:, :], y0[0, 0, :-1, :])
    y2 = pooled(i0, j0 + s)
    np.testing.assert_array_equal(y2[0, 0, :, 1:], y0[0, 0, :, :-1])


# --------------------------------------------------------------------------
# backward: routing and conservation
# --------------------------------------------------------------------------

def scatter_to_argmax(grad_out, idx_ref, x_shape):
    """The definition: each window's gradient lands on its argmax."""
    planes = int(np.prod(x_shape[:-2]))
    hw = x_shape[-2] * x_shape[-1]
    out = np.zeros((planes, hw))
    g = grad_out.reshape(planes, -1)
    i = idx_ref.reshape(planes, -1)
    for p in range(planes):
        ok = i[p] >= 0
        np.add.at(out[p], i[p][ok], g[p][ok])
    return out.reshape(x_shape)


@settings(deadline=None)
@given(case=pool_cases(), dtype=st.sampled_from(DTYPES), ties=st.booleans(),
       nan=st.booleans(), use_indices=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_max_pool_backward_routes_each_gradient_to_the_argmax(case, dtype, ties,
                                                              nan, use_indices,
                                                              seed):
    shape, kwargs = case
    x = make_input(seed, shape, dtype, ties, nan)
    _, idx_ref = ref.max_pool2d(x, return_indices=True, **kwargs)
    rng = np.random.default_rng(seed + 1)
    # Small integers: every sum of them is exact, whatever the order.
    g = rng.integers(-8, 9, size=idx_ref.shape).astype(dtype)
    extra = {}
    if use_indices:
        extra["indices"] = api.max_pool2d(x, return_indices=True, **kwargs)[1]
    gx = api.max_pool2d_backward(g, x, **kwargs, **extra)
    expected = scatter_to_argmax(g, idx_ref, x.shape)
    assert gx.dtype == dtype and gx.shape == x.shape
    np.testing.assert_array_equal(gx, expected.astype(dtype))
    if (idx_ref >= 0).all():   # the whole gradient arrives
        assert gx.astype(np.float64).sum() == g.astype(np.float64).sum()


@pytest.mark.parametrize("planes", [1, 2, 7])
def test_both_max_pool_backward_kernels_agree_with_the_definition(planes):
    # The fused (plane-owning) and gathered (index-based) kernels, called
    # directly: the front-end picks one by the number of planes.
    x = make_input(5, (planes, 11, 9), np.float64, ties=True, nan=True)
    geom = (3, 2, 2, 1, 1, 0, 1, 2)          # kh kw sh sw ph pw dh dw
    ho = geometry.pool_output_size(11, 3, 2, 1, 1)
    wo = geometry.pool_output_size(9, 2, 1, 0, 2)
    g = np.random.default_rng(0).integers(-4, 5, (planes, ho, wo)).astype(float)
    _, idx_ref = ref.max_pool2d(x, (3, 2), (2, 1), (1, 0), (1, 2), return_indices=True)
    expected = scatter_to_argmax(g, idx_ref, x.shape)
    fused = cpu_pooling.max_pool_backward_fused(g, x, *geom)
    _, idx = cpu_pooling.max_pool_with_indices(x, *geom, ho, wo)
    gathered = cpu_pooling.max_pool_backward_indices(g, idx, 11, 9, *geom)
    np.testing.assert_array_equal(fused, expected)
    np.testing.assert_array_equal(gathered, expected)


@settings(deadline=None)
@given(kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       planes=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_max_pool_backward_scatter_and_gather_add_in_the_same_order(
        kernel, stride, dilation, planes, seed):
    """The two index kernels (per-plane scatter, per-row gather) add each
    input's contributions in the same order: bitwise equal float32
    results, whatever path the plane count picks; and both are the
    definition (scatter to the argmax) within the summation bound."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    ph, pw = kh // 2, kw // 2
    h, w = 9, 8
    if (kh - 1) * dh + 1 > h + 2 * ph or (kw - 1) * dw + 1 > w + 2 * pw:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((planes, h, w)).astype(np.float32)
    ho = geometry.pool_output_size(h, kh, sh, ph, dh)
    wo = geometry.pool_output_size(w, kw, sw, pw, dw)
    g = rng.standard_normal((planes, ho, wo)).astype(np.float32)
    _, idx = ref.max_pool2d(x, kernel, stride, (ph, pw), dilation,
                            return_indices=True)
    idx = np.ascontiguousarray(idx.astype(np.int64))
    geom = (kh, kw, sh, sw, ph, pw, dh, dw)
    outs = []
    for into in (cpu_pooling._max_pool_backward_scatter_into,
                 cpu_pooling._max_pool_backward_gather_into):
        out = np.zeros((planes, h, w), np.float32)
        into(g, idx, h, w, *geom, out)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    expected = scatter_to_argmax(g.astype(np.float64), idx, x.shape)
    scale = scatter_to_argmax(np.abs(g.astype(np.float64)), idx, x.shape)
    u = np.finfo(np.float32).eps / 2
    assert np.all(np.abs(outs[0] - expected) <= kh * kw * u * scale)


@settings(deadline=None)
@given(k=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       tiles=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_avg_pool_backward_conserves_the_gradient_when_windows_tile(k, tiles,
                                                                   dtype, seed):
    shape = (2, 2, k[0] * tiles[0], k[1] * tiles[1])
    x = np.zeros(shape, dtype)
    # Gradients that are multiples of the window area: every share is exact.
    rng = np.random.default_rng(seed)
    area = k[0] * k[1]
    g = (rng.integers(-50, 50, size=shape[:2] + tiles) * area).astype(dtype)
    gx = api.avg_pool2d_backward(g, x, k)
    assert gx.sum(dtype=np.float64) == g.sum(dtype=np.float64)
    # and each input element gets its window's share.
    share = np.repeat(np.repeat(g / area, k[0], axis=2), k[1], axis=3)
    np.testing.assert_array_equal(gx, share)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

X = np.zeros((1, 2, 8, 8), np.float32)


@pytest.mark.parametrize("f", [kernels.max_pool2d, kernels.avg_pool2d])
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(kernel_size=0), ValueError, "kernel_size"),
    (dict(kernel_size=(2, 2, 2)), ValueError, "kernel_size"),
    (dict(kernel_size=2.5), TypeError, "kernel_size"),
    (dict(kernel_size=2, stride=0), ValueError, "stride"),
    (dict(kernel_size=2, padding=-1), ValueError, "padding"),
    (dict(kernel_size=3, padding=2), ValueError, "half the kernel"),
    (dict(kernel_size=9), ValueError, "larger than the padded input"),
    (dict(kernel_size=2, ceil_mode="yes"), TypeError, "ceil_mode"),
])
def test_invalid_pooling_arguments_are_rejected(f, kwargs, error, match):
    with pytest.raises(error, match=match):
        f(X, **kwargs)


def test_invalid_input_arrays_are_rejected():
    with pytest.raises(TypeError, match="float32 or float64"):
        api.max_pool2d(X.astype(np.int32), 2)
    with pytest.raises(TypeError, match="float32 or float64"):
        api.avg_pool2d(X.astype(np.complex64), 2)
    with pytest.raises(ValueError, match="dimensional"):
        api.max_pool2d(X[0, 0], 2)
    with pytest.raises(ValueError, match="dimensional"):
        api.max_pool1d(X, 2)
    with pytest.raises(ValueError, match="non-zero"):
        api.max_pool2d(np.zeros((1, 0, 4, 4)), 2)
    with pytest.raises(ValueError, match="dimensional"):
        api.global_avg_pool2d(X[0, 0])


def test_invalid_divisor_override_is_rejected():
    with pytest.raises(ValueError, match="divisor_override"):
        api.avg_pool2d(X, 2, divisor_override=0)
    with pytest.raises(TypeError, match="divisor_override"):
        api.avg_pool2d(X, 2, divisor_override=1.5)


def test_backward_rejects_a_grad_out_of_the_wrong_shape_or_dtype():
    g = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="shape of the forward output"):
        api.max_pool2d_backward(g[:, :, :3], X, 2)
    with pytest.raises(ValueError, match="shape of the forward output"):
        api.avg_pool2d_backward(g, X, 3)
    with pytest.raises(TypeError, match="dtype"):
        api.max_pool2d_backward(g.astype(np.float64), X, 2)
    with pytest.raises(ValueError, match="indices"):
        api.max_pool2d_backward(g, X, 2, indices=np.zeros((1, 2, 3, 4), np.int64))
    with pytest.raises(TypeError, match="indices"):
        api.max_pool2d_backward(g, X, 2, indices=np.zeros(g.shape))


@pytest.mark.parametrize("call", [
    lambda b: api.max_pool2d(X, 2, backend=b),
    lambda b: api.avg_pool1d(X[0], 2, backend=b),
    lambda b: api.global_avg_pool2d(X, backend=b),
    lambda b: api.max_pool2d_backward(np.zeros((1, 2, 4, 4), np.float32), X, 2, backend=b),
])
def test_unknown_backend_is_refused(call):
    # backend="cuda" itself: tests/test_cuda_contract.py.
    with pytest.raises(ValueError, match="backend"):
        call("gpu")


# --------------------------------------------------------------------------
# optional cross-check against PyTorch
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_torch_on_a_grid(dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = make_input(7, (2, 3, 9, 8), dtype, ties=True, nan=True)
    tx = torch.from_numpy(x)
    for k, s, p, d, c in [(3, 2, 1, 1, False), (3, 2, 1, 1, True), (2, 2, 0, 1, True),
                          (3, 1, 1, 2, False), (4, 3, 2, 1, True)]:
        y, i = api.max_pool2d(x, k, s, p, d, c, return_indices=True)
        ty, ti = F.max_pool2d(tx, k, s, p, d, c, return_indices=True)
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(i, ti.numpy())
        for cip in (True, False):
            np.testing.assert_allclose(api.avg_pool2d(x, k, s, p, c, cip),
                                       F.avg_pool2d(tx, k, s, p, c, cip).numpy(),
                                       rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_with_indices_returns_the_first_maximum_itself(dtype):
    """PyTorch's rule, first maximum in window order, decides the value
    too: of -0.0 and +0.0 (equal maxima) the first one's sign is kept."""
    for first, second in ((-0.0, 0.0), (0.0, -0.0)):
        # Window order is row-major: (0, 1) comes before (1, 0), whatever
        # order a separable (columns-first) reduction would visit them in.
        x = np.array([[[[-1.0, first], [second, -1.0]]]], dtype=dtype)
        y, idx = api.max_pool2d(x, 2, return_indices=True)
        assert idx.ravel().tolist() == [1]
        assert np.signbit(y.ravel()[0]) == np.signbit(first)
