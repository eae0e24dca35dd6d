"""Scientific inputs as they arrive: integer images, big-endian FITS data,
and a malformed scratch-size environment variable (issue 11).

* ``correlate``/``convolve`` take any real numeric dtype as
  ``scipy.signal`` does; bool/integer inputs are computed in float64,
  mixed float/integer inputs in ``np.result_type`` (SciPy's rule).
* Every public function takes non-native byte order float32/float64 and
  returns the native dtype of the same kind, with the values of the native
  input.
* The torch-style functions keep their float32/float64 contract.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal

import kernels
from kernels import winograd
from kernels.cpu import _tuning

SCIPY_FUNCTIONS = ("correlate", "convolve")
NON_NATIVE = {np.float32: np.dtype(np.float32).newbyteorder("S"),
              np.float64: np.dtype(np.float64).newbyteorder("S")}
over_dtypes = pytest.mark.parametrize("dtype", (np.float32, np.float64),
                                      ids=["float32", "float64"])


def _integers(dtype, shape, rng):
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    # small enough that no sum overflows uint16 (SciPy wraps)
    hi = 60 if np.dtype(dtype).kind == "u" else 500
    lo = 0 if np.dtype(dtype).kind == "u" else -500
    return rng.integers(lo, hi, shape).astype(dtype)


def _swapped(a):
    """``a`` in non-native byte order, same values."""
    out = a.astype(a.dtype.newbyteorder("S"))
    assert not out.dtype.isnative and np.array_equal(out, a)
    return out


# --------------------------------------------------------------------------
# correlate / convolve: integer and bool inputs
# --------------------------------------------------------------------------

@pytest.mark.parametrize("function", SCIPY_FUNCTIONS)
@pytest.mark.parametrize("dtype", (np.uint16, np.int32, np.uint8, np.int64, np.bool_))
@pytest.mark.parametrize("method", ("auto", "direct", "im2col", "fft"))
@pytest.mark.parametrize("mode", ("full", "valid", "same"))
@pytest.mark.parametrize("ndim", (1, 2))
def test_integer_and_bool_inputs_match_scipy_in_float64(function, dtype, method, mode, ndim):
    rng = np.random.default_rng(11)
    in1 = _integers(dtype, (9, 7)[:ndim] if ndim == 2 else (13,), rng)
    in2 = _integers(dtype, (3, 4)[:ndim] if ndim == 2 else (4,), rng)
    z = getattr(kernels, function)(in1, in2, mode=mode, method=method)
    assert z.dtype == np.float64
    # SciPy with float64 inputs: the exact values (SciPy's own integer result
    # would wrap on overflow and is not defined for bool with method='direct').
    expected = getattr(scipy.signal, function)(in1.astype(np.float64),
                                               in2.astype(np.float64), mode=mode,
                                               method="direct")
    np.testing.assert_allclose(z, expected, rtol=1e-12, atol=1e-9)
    if dtype in (np.uint16, np.int32, np.int64):
        # No overflow at these magnitudes: SciPy's integer result, same values.
        native = getattr(scipy.signal, function)(in1, in2, mode=mode, method="direct")
        assert native.dtype == np.dtype(dtype)
        np.testing.assert_allclose(z, native, rtol=0, atol=1e-6)


@pytest.mark.parametrize("function", SCIPY_FUNCTIONS)
@pytest.mark.parametrize("dtype1, dtype2", [
    (np.float32, np.uint16), (np.uint16, np.float32), (np.float32, np.uint8),
    (np.float32, np.int32), (np.float32, np.float64), (np.float64, np.uint16),
    (np.float32, np.bool_), (np.int64, np.float64), (np.float16, np.float16),
    (np.float16, np.uint16),
])
def test_mixed_dtypes_follow_scipy_promotion(function, dtype1, dtype2):
    rng = np.random.default_rng(3)
    in1 = _integers(np.int16, (6, 5), rng).astype(dtype1) if dtype1 != np.bool_ else _integers(bool, (6, 5), rng)
    in2 = _integers(np.uint8, (3, 2), rng).astype(dtype2) if dtype2 != np.bool_ else _integers(bool, (3, 2), rng)
    z = getattr(kernels, function)(in1, in2)
    if np.dtype(dtype1) == np.float16 == np.dtype(dtype2):
        assert z.dtype == np.float32  # SciPy: float16 ('fft' only)
    else:
        assert z.dtype == getattr(scipy.signal, function)(in1, in2, method="direct").dtype
    expected = getattr(scipy.signal, function)(in1.astype(np.float64), in2.astype(np.float64))
    rtol = 1e-5 if z.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(z, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def test_lists_of_ints_are_accepted_like_scipy():
    z = kernels.convolve([1, 2, 3], [0, 1, 2])
    assert z.dtype == np.float64
    np.testing.assert_array_equal(z, scipy.signal.convolve([1, 2, 3], [0, 1, 2]))


@pytest.mark.parametrize("function", SCIPY_FUNCTIONS)
@pytest.mark.parametrize("bad", (np.complex64, np.complex128))
@pytest.mark.parametrize("which", ("in1", "in2"))
def test_complex_input_to_correlate_raises_type_error(function, bad, which):
    args = {"in1": np.ones(5), "in2": np.ones(3)}
    args[which] = args[which].astype(bad)
    with pytest.raises(TypeError, match=rf"\b{which} must be real, got complex"):
        getattr(kernels, function)(args["in1"], args["in2"])


@pytest.mark.parametrize("function", SCIPY_FUNCTIONS)
def test_non_numeric_input_to_correlate_raises_type_error(function):
    with pytest.raises(TypeError, match=r"\bin2 must have a real numeric dtype"):
        getattr(kernels, function)(np.ones(5), np.array(["a", "b"]))
    with pytest.raises(TypeError, match=r"\bin1 must have a real numeric dtype"):
        getattr(kernels, function)(np.array([None, 1.0]), np.ones(2))


def test_extended_precision_input_to_correlate_raises_type_error():
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is float64 here")
    with pytest.raises(TypeError, match=r"float32 or float64"):
        kernels.correlate(np.ones(5, np.longdouble), np.ones(3))


# --------------------------------------------------------------------------
# torch-style functions keep float32/float64
# --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", (np.uint16, np.int32, np.bool_))
def test_integers_still_raise_for_conv2d_naming_the_rule(bad):
    x = np.ones((1, 2, 5, 5), bad)
    w = np.ones((3, 2, 3, 3), np.float32)
    with pytest.raises(TypeError, match=r"\bx must have dtype float32 or float64.*"
                                        r"astype\(np\.float32\)"):
        kernels.conv2d(x, w)
    with pytest.raises(TypeError, match=r"\bx must have dtype float32 or float64"):
        kernels.max_pool2d(x, 2)


# --------------------------------------------------------------------------
# non-native byte order
# --------------------------------------------------------------------------

def _check_same(got, expected):
    assert got.dtype == expected.dtype and got.dtype.isnative
    np.testing.assert_array_equal(got, expected)


@over_dtypes
@pytest.mark.parametrize("algorithm", ("direct", "im2col", "winograd", "fft", "auto"))
def test_big_endian_conv2d_equals_native(dtype, algorithm):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 9, 9)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    expected = kernels.conv2d(x, w, b, padding=1, algorithm=algorithm)
    _check_same(kernels.conv2d(_swapped(x), _swapped(w), _swapped(b), padding=1,
                               algorithm=algorithm), expected)
    # one argument swapped, the others native: same dtype after conversion
    _check_same(kernels.conv2d(_swapped(x), w, b, padding=1, algorithm=algorithm), expected)


@over_dtypes
def test_big_endian_conv1d_pooling_transposed_backward_equal_native(dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    w = rng.standard_normal((3, 4, 3, 3)).astype(dtype)
    wf = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    xs, ws, wfs = _swapped(x), _swapped(w), _swapped(wf)
    _check_same(kernels.max_pool2d(xs, 2), kernels.max_pool2d(x, 2))
    _check_same(kernels.avg_pool2d(xs, 3, 1, 1), kernels.avg_pool2d(x, 3, 1, 1))
    _check_same(kernels.max_pool1d(xs[:, :, 0], 2), kernels.max_pool1d(x[:, :, 0], 2))
    _check_same(kernels.conv_transpose2d(xs, ws, stride=2),
                kernels.conv_transpose2d(x, w, stride=2))
    _check_same(kernels.conv_transpose1d(xs[:, :, 0], ws[:, :, 0], stride=2),
                kernels.conv_transpose1d(x[:, :, 0], w[:, :, 0], stride=2))
    _check_same(kernels.conv1d(xs[:, :, 0], wfs[:, :, 0]),
                kernels.conv1d(x[:, :, 0], wf[:, :, 0]))
    y = kernels.conv2d(x, wf)
    got = kernels.conv2d_backward(_swapped(np.ones_like(y)), xs, wfs)
    expected = kernels.conv2d_backward(np.ones_like(y), x, wf)
    for g, e in zip(got, expected):
        if e is not None:
            _check_same(g, e)
    pooled = kernels.max_pool2d(x, 2)
    _check_same(kernels.max_pool2d_backward(_swapped(np.ones_like(pooled)), xs, 2),
                kernels.max_pool2d_backward(np.ones_like(pooled), x, 2))


@over_dtypes
def test_big_endian_winograd_functions_equal_native(dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 2, 10, 10)).astype(dtype)
    w = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    _check_same(winograd.conv2d(_swapped(x), _swapped(w)), winograd.conv2d(x, w))
    tw = winograd.transform_weights(_swapped(w))
    _check_same(winograd.conv2d(_swapped(x), tw), winograd.conv2d(x, winograd.transform_weights(w)))


@over_dtypes
@pytest.mark.parametrize("function", SCIPY_FUNCTIONS)
@pytest.mark.parametrize("method", ("direct", "fft"))
def test_big_endian_correlate_equals_native(dtype, function, method):
    rng = np.random.default_rng(8)
    a = rng.standard_normal((12, 10)).astype(dtype)
    b = rng.standard_normal((3, 5)).astype(dtype)
    f = getattr(kernels, function)
    _check_same(f(_swapped(a), _swapped(b), method=method), f(a, b, method=method))
    _check_same(f(_swapped(a), b, method=method), f(a, b, method=method))


def test_big_endian_is_not_modified():
    x = _swapped(np.arange(2 * 3 * 5 * 5, dtype=np.float32).reshape(2, 3, 5, 5))
    before = x.copy()
    kernels.conv2d(x, _swapped(np.ones((1, 3, 2, 2), np.float32)))
    assert x.dtype == before.dtype and np.array_equal(x, before)


# --------------------------------------------------------------------------
# CONVBENCH_IM2COL_SCRATCH
# --------------------------------------------------------------------------

@pytest.mark.parametrize("text, nbytes", [
    ("67108864", 64 * 2**20), ("64M", 64 * 2**20), ("64MiB", 64 * 2**20),
    ("64 mb", 64 * 2**20), ("1G", 2**30), ("512k", 512 * 2**10), ("1.5M", 3 * 2**19),
])
def test_scratch_sizes_parse(text, nbytes):
    assert _tuning.parse_nbytes(text) == nbytes


@pytest.mark.parametrize("text", ["abc", "64X", " ", "", "M", "-5", "0", "0.4",
                                  "inf", "nan", "1e400", "-1G"])
def test_malformed_scratch_size_raises_naming_the_variable(text):
    with pytest.raises(ValueError, match=r"CONVBENCH_IM2COL_SCRATCH="):
        _tuning.parse_nbytes(text)


def test_malformed_scratch_environment_variable_is_an_error(monkeypatch):
    monkeypatch.setenv("CONVBENCH_IM2COL_SCRATCH", "-64M")
    with pytest.raises(ValueError, match=r"CONVBENCH_IM2COL_SCRATCH='-64M'"):
        _tuning._default_scratch()
    monkeypatch.setenv("CONVBENCH_IM2COL_SCRATCH", "32M")
    assert _tuning._default_scratch() == 32 * 2**20
    monkeypatch.delenv("CONVBENCH_IM2COL_SCRATCH")
    assert _tuning._default_scratch() == 64 * 2**20


@pytest.mark.parametrize("value", ["lots", "0"])
def test_malformed_scratch_environment_variable_fails_at_import(value):
    env = dict(os.environ, CONVBENCH_IM2COL_SCRATCH=value)
    proc = subprocess.run([sys.executable, "-c", "import kernels.cpu.im2col"],
                          env=env, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode != 0
    assert f"CONVBENCH_IM2COL_SCRATCH={value!r}" in proc.stderr
