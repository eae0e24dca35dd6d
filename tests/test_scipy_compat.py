"""kernels.correlate / kernels.convolve against scipy.signal (float64, direct).

``reference.correlate/convolve`` are ``scipy.signal.correlate/convolve``
with ``method="direct"`` in float64; every algorithm must match them within
its documented bound, in every mode, including ``valid`` with the second
input the larger one, and even and odd sizes.
"""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
import scipy.signal
from hypothesis import assume, given
from hypothesis import strategies as st

import kernels
import kernels._conv
import reference
from helpers import (api, ALL_ALGORITHMS, DTYPES, assert_close_within, bound, random_array,
                     scipy_style_supported)

over_algorithms = pytest.mark.parametrize("algorithm", ALL_ALGORITHMS)
over_dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
over_functions = pytest.mark.parametrize("function", ("correlate", "convolve"))
over_modes = pytest.mark.parametrize("mode", ("full", "valid", "same"))


pytestmark = pytest.mark.usefixtures("backend")

def check_against_scipy(function, algorithm, in1, in2, mode):
    assume_ok = scipy_style_supported(algorithm, in1.shape, in2.shape, mode)
    if not assume_ok:
        return False
    z = getattr(api, function)(in1, in2, mode=mode, method=algorithm)
    ref = getattr(reference, function)
    expected = ref(in1, in2, mode)
    scale = ref(np.abs(in1), np.abs(in2), mode)
    # FFT/Winograd errors follow the whole full-mode correlation, also the
    # part that "same"/"valid" crop away (kernels.accuracy.normwise_scale).
    normwise = ref(np.abs(in1), np.abs(in2), "full").max()
    what = f"{function}({in1.shape}, {in2.shape}, mode={mode!r}, method={algorithm!r})"
    assert z.dtype == in1.dtype, f"{what}: dtype {z.dtype}"
    assert z.shape == expected.shape, f"{what}: shape {z.shape} != scipy's {expected.shape}"
    assert_close_within(z, expected, bound(algorithm, in1.dtype, scale, normwise), what)
    return True


@st.composite
def scipy_pairs(draw, ndim, mode):
    """Shapes of (in1, in2) that scipy accepts for ``mode``."""
    shape1 = tuple(draw(st.integers(1, 12)) for _ in range(ndim))
    shape2 = tuple(draw(st.integers(1, 8)) for _ in range(ndim))
    if mode != "valid" and draw(st.booleans()):
        shape1 = tuple(max(a, b) for a, b in zip(shape1, shape2))   # in1 dominates
    if mode == "valid":
        if draw(st.booleans()):       # in1 dominates
            shape2 = tuple(min(a, b) for a, b in zip(shape1, shape2))
        else:                         # in2 dominates
            shape1 = tuple(min(a, b) for a, b in zip(shape1, shape2))
    return shape1, shape2


@over_dtypes
@pytest.mark.parametrize("ndim", (1, 2))
@over_modes
@over_functions
@over_algorithms
@given(data=st.data())
def test_matches_scipy_signal_within_error_bound(algorithm, function, mode, ndim, dtype, data):
    shape1, shape2 = data.draw(scipy_pairs(ndim, mode), label="shapes")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    in1, in2 = random_array(rng, shape1, dtype), random_array(rng, shape2, dtype)
    assume(check_against_scipy(function, algorithm, in1, in2, mode))


# Even and odd sizes of both inputs, and each input the larger.
_SIZES_1D = [(5, 3), (6, 3), (5, 4), (6, 4), (3, 5), (4, 6), (1, 1), (2, 7), (7, 7), (8, 1)]


@over_dtypes
@over_modes
@over_functions
@over_algorithms
def test_even_and_odd_sizes_match_scipy_signal(algorithm, function, mode, dtype):
    rng = np.random.default_rng(3)
    checked = 0
    for n1, n2 in _SIZES_1D:
        in1, in2 = random_array(rng, (n1,), dtype), random_array(rng, (n2,), dtype)
        checked += check_against_scipy(function, algorithm, in1, in2, mode)
    for (h1, h2), (w1, w2) in itertools.product(_SIZES_1D[:6], repeat=2):
        if mode == "valid" and (h1 - h2) * (w1 - w2) < 0:
            continue                  # neither input dominates: scipy refuses
        in1, in2 = random_array(rng, (h1, w1), dtype), random_array(rng, (h2, w2), dtype)
        checked += check_against_scipy(function, algorithm, in1, in2, mode)
    assert checked > 0


@over_functions
def test_valid_mode_where_neither_input_dominates_is_rejected_like_scipy(function):
    a, b = np.ones((5, 2)), np.ones((2, 5))
    with pytest.raises(ValueError):
        getattr(scipy.signal, function)(a, b, mode="valid")
    with pytest.raises(ValueError, match="valid"):
        getattr(api, function)(a, b, mode="valid")


def test_docstring_examples_of_the_conv_front_end():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    tests = [t for t in finder.find(kernels._conv) if t.examples]
    assert {t.name.rsplit(".", 1)[-1] for t in tests} >= {"correlate", "convolve"}
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0
