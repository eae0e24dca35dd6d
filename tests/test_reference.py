"""The float64 reference itself: against explicit loops, NumPy and PyTorch.

Everything else is judged by ``reference``, so it is checked here against
independent definitions: the summation formula written as plain loops,
``numpy.correlate/convolve``, and ``torch.nn.functional`` when installed.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import reference
from helpers import conv_problems, padding_pairs

REPO_ROOT = Path(__file__).resolve().parent.parent

_NUMPY_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
              "circular": "wrap"}


def conv_by_loops(x, w, bias, stride, padding, dilation, groups, padding_mode):
    """``y[n, k, i] = b[k] + sum_{c, j} x_pad[n, g C/G + c, s i + d j] w[k, c, j]``,
    one multiply-add at a time (any number of spatial axes)."""
    nsp = w.ndim - 2
    unbatched = x.ndim == nsp + 1
    x = np.asarray(x, np.float64)[None] if unbatched else np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    pads = padding_pairs(padding, w.shape[2:], dilation, stride)
    xp = np.pad(x, [(0, 0), (0, 0)] + pads, mode=_NUMPY_PAD[padding_mode])
    n_batch, c_in = x.shape[:2]
    k_out, c_group = w.shape[:2]
    out = [(size - d * (k - 1) - 1) // s + 1
           for size, k, d, s in zip(xp.shape[2:], w.shape[2:], dilation, stride)]
    y = np.zeros((n_batch, k_out) + tuple(out))
    for n, k in itertools.product(range(n_batch), range(k_out)):
        g = k // (k_out // groups)
        for i in itertools.product(*(range(o) for o in out)):
            acc = 0.0 if bias is None else float(bias[k])
            for c in range(c_group):
                for j in itertools.product(*(range(kk) for kk in w.shape[2:])):
                    pos = tuple(s * ii + d * jj for s, ii, d, jj in zip(stride, i, dilation, j))
                    acc += xp[(n, g * c_group + c) + pos] * w[(k, c) + j]
            y[(n, k) + i] = acc
    return y[0] if unbatched else y


@pytest.mark.parametrize("nsp", (1, 2))
@given(data=st.data())
def test_reference_conv_matches_the_summation_formula(nsp, data):
    problem = data.draw(conv_problems(nsp, max_extra=3, max_kernel=3), label="problem")
    x, w, bias = problem.arrays(np.float64)
    ref = reference.conv1d if nsp == 1 else reference.conv2d
    y = ref(x, w, bias, **problem.kwargs)
    expected = conv_by_loops(x, w, bias, problem.stride, problem.padding, problem.dilation,
                             problem.groups, problem.padding_mode)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12, err_msg=str(problem))


@pytest.mark.parametrize("nsp", (1, 2))
@given(data=st.data())
def test_reference_conv_matches_torch(nsp, data):
    torch = pytest.importorskip("torch")
    problem = data.draw(conv_problems(nsp), label="problem")
    x, w, bias = problem.arrays(np.float64)
    ref = reference.conv1d if nsp == 1 else reference.conv2d
    y = ref(x, w, bias, **problem.kwargs)
    layer_class = torch.nn.Conv1d if nsp == 1 else torch.nn.Conv2d
    layer = layer_class(w.shape[1] * problem.groups, w.shape[0], w.shape[2:],
                        stride=problem.stride, padding=problem.padding,
                        dilation=problem.dilation, groups=problem.groups,
                        bias=bias is not None, padding_mode=problem.padding_mode,
                        dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        if bias is not None:
            layer.bias.copy_(torch.from_numpy(bias))
        expected = layer(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12, err_msg=str(problem))


@pytest.mark.parametrize("mode", ("full", "valid", "same"))
@given(n1=st.integers(1, 12), n2=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_reference_correlate_and_convolve_match_numpy_in_1d(mode, n1, n2, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(n1), rng.standard_normal(n2)
    if mode == "same" and n2 > n1:
        a, b = b, a   # numpy's "same" keeps the longer input's length
    np.testing.assert_allclose(reference.correlate(a, b, mode), np.correlate(a, b, mode),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reference.convolve(a, b, mode), np.convolve(a, b, mode),
                               rtol=1e-12, atol=1e-12)


@given(shape1=st.tuples(st.integers(1, 6), st.integers(1, 6)),
       shape2=st.tuples(st.integers(1, 4), st.integers(1, 4)), seed=st.integers(0, 2**32 - 1))
def test_reference_correlate_full_matches_the_summation_formula_in_2d(shape1, shape2, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(shape1), rng.standard_normal(shape2)
    (h1, w1), (h2, w2) = shape1, shape2
    expected = np.zeros((h1 + h2 - 1, w1 + w2 - 1))
    # z[k] = sum_l in1[l + k - (n2 - 1)] in2[l]
    for (ki, kj), (li, lj) in itertools.product(np.ndindex(expected.shape), np.ndindex(shape2)):
        i, j = li + ki - (h2 - 1), lj + kj - (w2 - 1)
        if 0 <= i < h1 and 0 <= j < w1:
            expected[ki, kj] += a[i, j] * b[li, lj]
    np.testing.assert_allclose(reference.correlate(a, b), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(reference.convolve(a, b[::-1, ::-1]), expected,
                               rtol=1e-12, atol=1e-12)


def test_reference_dilation_does_not_multiply_infinities_by_gaps():
    # Taps at 0 and 3 only: the infinity at 3 is read by outputs 0 and 3
    # and must stay inf; a zero-filled dilated kernel would give inf * 0 = nan.
    x = np.zeros((1, 1, 7))
    x[0, 0, 3] = np.inf
    y = reference.conv1d(x, np.ones((1, 1, 2)), dilation=3)
    np.testing.assert_array_equal(y[0, 0], [np.inf, 0, 0, np.inf])


def test_reference_propagates_nan_through_zero_weights_like_the_formula():
    x = np.zeros((1, 1, 5))
    x[0, 0, 2] = np.nan
    y = reference.conv1d(x, np.array([[[1.0, 0.0, 1.0]]]))
    assert np.isnan(y).all()   # every window holds the nan (times 1 or 0)


@pytest.mark.parametrize("nsp", (1, 2))
def test_reference_handles_unbatched_and_empty_batches(nsp):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3,) + (6,) * nsp)
    w = rng.standard_normal((2, 3) + (3,) * nsp)
    ref = reference.conv1d if nsp == 1 else reference.conv2d
    np.testing.assert_array_equal(ref(x, w), ref(x[None], w)[0])
    empty = ref(x[None][:0], w, padding=1)
    assert empty.shape == (0, 2) + (6,) * nsp and empty.dtype == np.float64


def test_reference_returns_float64_for_float32_input():
    x = np.ones((1, 1, 4), np.float32)
    assert reference.conv1d(x, x[:, :, :2]).dtype == np.float64
    assert reference.correlate(x[0, 0], x[0, 0]).dtype == np.float64


def test_reference_never_imports_kernels():
    code = "import sys, reference; assert 'kernels' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
