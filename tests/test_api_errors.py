"""Bad input, unusual memory layouts and edge cases of the public conv API.

Every bad-input test checks the exception type and that the message names
the offending argument.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import kernels
import reference
from kernels import _choose, _dispatch
from helpers import (api, ALL_ALGORITHMS, DTYPES, assert_within_bound, conv_function,
                     conv_problems, normalised_config, random_array, supports)

over_algorithms = pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
over_dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
over_nsp = pytest.mark.parametrize("nsp", (1, 2))


pytestmark = pytest.mark.usefixtures("backend")

def _xw(nsp, c=2, k=3, size=6, ksize=3, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = random_array(rng, (2, c) + (size,) * nsp, dtype)
    w = random_array(rng, (k, c) + (ksize,) * nsp, dtype)
    return x, w


# --------------------------------------------------------------------------
# Bad input: one test each
# --------------------------------------------------------------------------

@over_nsp
def test_wrong_ndim_of_x_is_rejected(nsp):
    x, w = _xw(nsp)
    with pytest.raises(ValueError, match=r"\bx must be"):
        conv_function(nsp)(x[0, 0], w)
    with pytest.raises(ValueError, match=r"\bx must be"):
        conv_function(nsp)(x[None], w)


@over_nsp
def test_wrong_ndim_of_w_is_rejected(nsp):
    x, w = _xw(nsp)
    with pytest.raises(ValueError, match=r"\bw must be"):
        conv_function(nsp)(x, w[0])


@over_nsp
def test_channels_not_matching_w_and_groups_are_rejected(nsp):
    x, _ = _xw(nsp, c=4)
    _, w = _xw(nsp, c=3)
    with pytest.raises(ValueError, match=r"w\.shape\[1\]"):
        conv_function(nsp)(x, w)
    _, w2 = _xw(nsp, c=4, k=4)
    with pytest.raises(ValueError, match=r"w\.shape\[1\].*groups"):
        conv_function(nsp)(x, w2, groups=2)


@over_nsp
def test_groups_not_dividing_the_channels_are_rejected(nsp):
    x, w = _xw(nsp, c=3, k=4)
    with pytest.raises(ValueError, match=r"groups \(2\) must divide the input channels"):
        conv_function(nsp)(x, w[:, :1], groups=2)
    x, w = _xw(nsp, c=4, k=3)
    with pytest.raises(ValueError, match=r"groups \(2\) must divide the output channels"):
        conv_function(nsp)(x, w[:, :2], groups=2)


@pytest.mark.parametrize("groups", (0, -1))
def test_groups_below_one_are_rejected(groups):
    x, w = _xw(2)
    with pytest.raises(ValueError, match=r"groups"):
        api.conv2d(x, w, groups=groups)


def test_non_integer_groups_are_rejected():
    x, w = _xw(2)
    with pytest.raises(TypeError, match=r"groups"):
        api.conv2d(x, w, groups=1.0)


@over_nsp
def test_kernel_larger_than_the_padded_input_is_rejected(nsp):
    x, w = _xw(nsp, size=4, ksize=5)
    with pytest.raises(ValueError, match=r"kernel size .* larger than the padded input"):
        conv_function(nsp)(x, w)
    with pytest.raises(ValueError, match=r"kernel size .* \(dilated: 9\)"):
        conv_function(nsp)(x, w[..., :3] if nsp == 1 else w[..., :3, :3], dilation=4,
                           padding=1)
    conv_function(nsp)(x, w, padding=1)  # fits once padded


@over_nsp
@pytest.mark.parametrize("name", ("stride", "dilation"))
@pytest.mark.parametrize("value", (0, -1))
def test_stride_and_dilation_below_one_are_rejected(nsp, name, value):
    x, w = _xw(nsp)
    with pytest.raises(ValueError, match=rf"{name} must be >= 1"):
        conv_function(nsp)(x, w, **{name: value})
    with pytest.raises(ValueError, match=rf"{name} must be >= 1"):
        conv_function(nsp)(x, w, **{name: (1,) * (nsp - 1) + (value,)})


@over_nsp
@pytest.mark.parametrize("name", ("stride", "dilation", "padding"))
def test_non_integer_stride_dilation_padding_are_rejected(nsp, name):
    x, w = _xw(nsp)
    with pytest.raises(TypeError, match=name):
        conv_function(nsp)(x, w, **{name: 1.5})
    with pytest.raises((TypeError, ValueError), match=name):
        conv_function(nsp)(x, w, **{name: (1,) * (nsp + 1)})   # wrong length


@over_nsp
def test_negative_padding_is_rejected(nsp):
    x, w = _xw(nsp)
    with pytest.raises(ValueError, match=r"padding must be >= 0"):
        conv_function(nsp)(x, w, padding=-1)


@over_nsp
def test_same_padding_with_stride_is_rejected(nsp):
    x, w = _xw(nsp)
    with pytest.raises(ValueError, match=r"padding='same'.*stride"):
        conv_function(nsp)(x, w, padding="same", stride=2)


@pytest.mark.parametrize("name, value", [("algorithm", "winograd_fast"),
                                         ("backend", "tpu"),
                                         ("padding_mode", "symmetric"),
                                         ("padding", "full")])
def test_unknown_choice_is_rejected(name, value):
    x, w = _xw(2)
    with pytest.raises(ValueError, match=rf"{name} must be one of .*{value}"):
        api.conv2d(x, w, **{name: value})


@pytest.mark.parametrize("mode", ("reflect", "circular"))
def test_padding_larger_than_padding_mode_allows_is_rejected(mode):
    x, w = _xw(1, size=3, ksize=1)
    with pytest.raises(ValueError, match=rf"padding_mode='{mode}'"):
        api.conv1d(x, w, padding=4, padding_mode=mode)


@over_nsp
@pytest.mark.parametrize("bad", (np.int32, np.int64, np.complex64, np.complex128, np.float16, bool))
@pytest.mark.parametrize("which", ("x", "w", "bias"))
def test_integer_complex_and_half_dtypes_are_rejected(nsp, bad, which):
    x, w = _xw(nsp, dtype=np.float64)
    args = {"x": x, "w": w, "bias": np.zeros(w.shape[0])}
    args[which] = args[which].astype(bad)
    with pytest.raises(TypeError, match=rf"\b{which} must have dtype float32 or float64"):
        conv_function(nsp)(args["x"], args["w"], args["bias"])


@over_nsp
def test_mismatched_dtypes_are_rejected(nsp):
    x, w = _xw(nsp, dtype=np.float32)
    with pytest.raises(TypeError, match=r"\bw has dtype float64 but x has dtype float32"):
        conv_function(nsp)(x, w.astype(np.float64))
    with pytest.raises(TypeError, match=r"\bbias has dtype float64"):
        conv_function(nsp)(x, w, np.zeros(w.shape[0]))


@over_nsp
@pytest.mark.parametrize("shape", [(2,), (4,), (3, 1), ()])
def test_bias_of_the_wrong_shape_is_rejected(nsp, shape):
    x, w = _xw(nsp, k=3)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        conv_function(nsp)(x, w, np.zeros(shape, np.float32))


@pytest.mark.parametrize("function", ("correlate", "convolve"))
def test_scipy_style_bad_input_is_rejected(function):
    f = getattr(kernels, function)
    a, b = np.ones(5), np.ones(3)
    with pytest.raises(ValueError, match=r"in1 and in2 must have the same number of dimensions"):
        f(a, np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"in1 and in2 must be 1-D or 2-D"):
        f(np.ones((2, 2, 2)), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match=r"mode must be one of"):
        f(a, b, mode="circular")
    with pytest.raises(ValueError, match=r"method must be one of"):
        f(a, b, method="karatsuba")
    with pytest.raises(ValueError, match=r"mode='valid'.*in1"):
        f(np.ones((5, 2)), np.ones((2, 5)), mode="valid")
    with pytest.raises(ValueError, match=r"must not be empty"):
        f(np.ones(0), b)
    with pytest.raises(TypeError, match=r"\bin1 must be real"):
        f(a.astype(complex), b)
    with pytest.raises(TypeError, match=r"\bin2 must have a real numeric dtype"):
        f(a, b.astype(str))


@over_nsp
@pytest.mark.parametrize("bad", [
    {"stride": True}, {"stride": 1.0}, {"padding": 1.0}, {"padding": True},
    {"groups": True}, {"groups": 1.0}, {"dilation": True}],
    ids=lambda bad: "-".join(f"{k}={v!r}" for k, v in bad.items()))
def test_a_call_validated_before_lets_no_bad_argument_through(nsp, bad):
    # conv1d/conv2d validate a call once per shapes, dtypes and arguments
    # (kernels._conv's plans); True and 1.0 compare and hash equal to 1,
    # and must still be rejected after a call with 1.
    x, w = _xw(nsp)
    good = dict(stride=1, padding=1, dilation=1, groups=1)
    conv_function(nsp)(x, w, **good)
    name = next(iter(bad))
    with pytest.raises(TypeError, match=name):
        conv_function(nsp)(x, w, **{**good, **bad})


@over_nsp
@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(padding="same"),
                                    dict(padding=2, padding_mode="reflect"),
                                    dict(stride=2, dilation=2, padding=1)])
def test_repeated_calls_of_one_shape_stay_correct(nsp, kwargs):
    # The second and third calls reuse the first one's validation: batched
    # and unbatched inputs of the same shape, new values each time.
    rng = np.random.default_rng(5)
    for unbatched in (False, True):
        for _ in range(3):
            x = random_array(rng, (2, 3) + (9,) * nsp, np.float64)
            w = random_array(rng, (4, 3) + (3,) * nsp, np.float64)
            if unbatched:
                x = x[0]
            y = conv_function(nsp)(x, w, algorithm="direct", **kwargs)
            batched = x[None] if unbatched else x
            assert y.shape == (batched.shape[0:1] if not unbatched else ()) \
                + (4,) + y.shape[-nsp:]
            assert_within_bound("direct", y[None] if unbatched else y,
                                batched, w, **kwargs)


# --------------------------------------------------------------------------
# Layouts, side effects, edge cases: every algorithm
# --------------------------------------------------------------------------

def _views(a):
    """Non-contiguous, Fortran-order and negative-stride views of ``a``'s values."""
    spaced = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    spaced[..., ::2] = a
    return {
        "non-contiguous": spaced[..., ::2],
        "fortran": np.asfortranarray(a),
        "negative-stride": np.ascontiguousarray(a[..., ::-1])[..., ::-1],
        "transposed-copy": np.ascontiguousarray(np.swapaxes(a, 0, 1)).swapaxes(0, 1),
    }


@over_dtypes
@over_nsp
@over_algorithms
@pytest.mark.parametrize("layout", ("non-contiguous", "fortran", "negative-stride",
                                    "transposed-copy"))
def test_non_contiguous_views_give_correct_results(algorithm, nsp, dtype, layout):
    rng = np.random.default_rng(1)
    x = random_array(rng, (2, 3) + (7,) * nsp, dtype)
    w = random_array(rng, (4, 3) + (3,) * nsp, dtype)
    bias = random_array(rng, (4,), dtype)
    xv, wv = _views(x)[layout], _views(w)[layout]
    bv = _views(bias[None])[layout][0] if layout != "transposed-copy" else bias
    for a, v in ((x, xv), (w, wv), (bias, bv)):
        np.testing.assert_array_equal(a, v)
    y = conv_function(nsp)(xv, wv, bv, padding=1, algorithm=algorithm)
    assert_within_bound(algorithm, y, x, w, bias, padding=1)


@over_dtypes
@over_nsp
@over_algorithms
@given(data=st.data())
def test_inputs_are_never_modified(algorithm, nsp, dtype, data):
    problem = data.draw(conv_problems(nsp), label="problem")
    assume(problem.supported_by(algorithm))
    x, w, bias = problem.arrays(dtype)
    copies = [None if a is None else a.copy() for a in (x, w, bias)]
    problem.run(algorithm, x, w, bias)
    for a, c in zip((x, w, bias), copies):
        if a is not None:
            np.testing.assert_array_equal(a, c)


@over_dtypes
@over_nsp
@over_algorithms
def test_batch_size_zero_returns_an_empty_array(algorithm, nsp, dtype):
    x, w = _xw(nsp, size=8, dtype=dtype)
    for kwargs in (dict(), dict(padding=1), dict(padding=2, padding_mode="reflect")):
        y = conv_function(nsp)(x[:0], w, np.ones(3, dtype), algorithm=algorithm, **kwargs)
        expected = reference.conv2d if nsp == 2 else reference.conv1d
        assert y.shape == expected(x[:0], w, **kwargs).shape
        assert y.dtype == dtype


@over_dtypes
@over_nsp
@over_algorithms
@pytest.mark.parametrize("special", ("nan", "inf", "-inf", "inf and -inf", "nan and inf"))
def test_nan_and_inf_in_x_propagate_as_in_the_reference(algorithm, nsp, dtype, special):
    if algorithm in ("winograd", "fft") and "direct" not in api.built_algorithms():
        pytest.skip("the front-end computes non-finite input of winograd/fft with "
                    "'direct', which is not built yet")
    rng = np.random.default_rng(2)
    size = 12 if nsp == 1 else 9
    x = random_array(rng, (2, 2) + (size,) * nsp, dtype)
    w = random_array(rng, (3, 2) + (3,) * nsp, dtype)
    values = {"nan": [np.nan], "inf": [np.inf], "-inf": [-np.inf],
              "inf and -inf": [np.inf, -np.inf], "nan and inf": [np.nan, np.inf]}[special]
    flat = x.reshape(-1)
    for i, v in enumerate(values):
        flat[(7 + 13 * i) % flat.size] = v       # also near each other
        flat[(flat.size // 2 + 3 * i)] = v
    for kwargs in (dict(padding=1), dict(dilation=2), dict(padding="same")):
        if not supports(algorithm, nsp, x.shape, w.shape, **kwargs):
            continue
        y = conv_function(nsp)(x, w, algorithm=algorithm, **kwargs)
        assert_within_bound(algorithm, y, x, w, **kwargs)


@over_nsp
@over_algorithms
@over_dtypes
def test_output_dtype_is_the_input_dtype(algorithm, nsp, dtype):
    x, w = _xw(nsp, dtype=dtype)
    y = conv_function(nsp)(x, w, algorithm=algorithm)
    assert y.dtype == dtype
    unbatched = conv_function(nsp)(x[0], w, algorithm=algorithm)
    assert unbatched.dtype == y.dtype and unbatched.shape == y.shape[1:]


@over_algorithms
def test_algorithm_not_built_raises_not_implemented_naming_it(algorithm, monkeypatch):
    monkeypatch.delitem(_dispatch.MODULES, ("conv2d", algorithm))
    _dispatch.reload_registry()
    try:
        x, w = _xw(2)
        with pytest.raises(NotImplementedError,
                           match=rf"algorithm '{algorithm}' is not built"):
            api.conv2d(x, w, algorithm=algorithm)
        assert algorithm not in api.built_algorithms()
    finally:
        monkeypatch.undo()
        _dispatch.reload_registry()


@pytest.mark.parametrize("algorithm", ("auto",) + ALL_ALGORITHMS)
def test_cuda_backend_says_why_it_cannot_run(algorithm):
    """Not built: NotImplementedError naming what is; numba-cuda missing:
    ImportError naming the extra (tests/test_cuda_contract.py checks the
    no-GPU error and the results where CUDA can run)."""
    if algorithm != "auto" and _dispatch.is_built("conv2d", "cuda", algorithm):
        pytest.skip(f"{algorithm} is built for CUDA")
    if algorithm == "auto" and kernels.built_algorithms("cuda"):
        pytest.skip("CUDA kernels are built")
    x, w = _xw(2)
    missing = _dispatch.import_error("cuda") is not None
    with pytest.raises(ImportError if missing else NotImplementedError,
                       match=r"convbench\[cuda\]" if missing else r"cuda"):
        api.conv2d(x, w, algorithm=algorithm, backend="cuda")


@over_nsp
@given(data=st.data())
def test_auto_never_picks_an_algorithm_that_cannot_compute_the_problem(nsp, data):
    problem = data.draw(conv_problems(nsp), label="problem")
    config = normalised_config(nsp, problem.x_shape, problem.w_shape, **problem.kwargs)
    spec = _dispatch.ConvSpec.from_config(*config)
    candidates = _choose.candidates(spec, api.backend)
    choice = api.choose_algorithm(*config)
    assert choice in candidates
    assert _dispatch.unsupported_reason("conv2d", api.backend, choice, spec) is None
    x, w, bias = problem.arrays(np.float32)
    y = problem.run("auto", x, w, bias)
    assert_within_bound(choice, y, x, w, bias, **problem.kwargs)
