"""CUDA transposed convolution (kernels/cuda/transposed.py): the "direct"
and "im2col" entry points against ``reference`` within the documented
bound of :mod:`kernels.accuracy`, the adjoint identity, im2col's banding,
device arrays in and out.

Runs on a GPU or in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``),
so the shapes are tiny: one to a few blocks, chosen to hit partial blocks
(a channel block of 4 with 3 or 5 channels, thread blocks not filled) and
every stride phase.  The parameter is named ``alg``, not ``algorithm``:
conftest skips ``algorithm``-parametrised tests whose *forward* kernel is
not built.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from cuda_support import SIMULATED, requires_cuda

pytestmark = requires_cuda
pytest.importorskip("numba_cuda")

import kernels  # noqa: E402
import reference  # noqa: E402
import reference.transposed as ref_t  # noqa: E402
from kernels import geometry  # noqa: E402
from kernels._dispatch import TransposeSpec  # noqa: E402
from kernels.accuracy import error_bound  # noqa: E402

ALGS = ("direct", "im2col")
DTYPES = (np.float32, np.float64)
OP = "conv_transpose2d"


@pytest.fixture(scope="module")
def cuda_transposed():
    from kernels.cuda import transposed
    return transposed


def _spec(x_shape, w_shape, stride=(1, 1), padding=(0, 0),
          output_padding=(0, 0), dilation=(1, 1), groups=1, dtype=np.float64):
    """The TransposeSpec kernels._transposed builds for a 2-D call (its
    normalisation is inline there; mirrored here, checked against the
    front end by test_the_front_end_reaches_the_same_kernel)."""
    out = tuple(geometry.conv_transpose_output_size(
        n, k, s, p, o, d) for n, k, s, p, o, d in zip(
            x_shape[2:], w_shape[2:], stride, padding, output_padding,
            dilation))
    return TransposeSpec(tuple(x_shape), tuple(w_shape), tuple(stride),
                         tuple(padding), out, tuple(dilation), groups,
                         np.dtype(dtype))


def _arrays(rng, x_shape, w_shape, groups, dtype, with_bias):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = (rng.standard_normal(w_shape[1] * groups).astype(dtype)
         if with_bias else None)
    return x, w, b


def _check(alg, dtype, y, x, w, b, kw):
    """y against reference.conv_transpose2d: NaN where it has NaN, equal
    infinities, and |y - ref| <= c u (|x| *T |w| + |b|) elsewhere."""
    y_ref = ref_t.conv_transpose2d(x, w, b, **kw)
    assert isinstance(y, np.ndarray) and y.dtype == dtype
    assert y.shape == y_ref.shape
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    inf = np.isinf(y_ref)
    np.testing.assert_array_equal(y[inf], y_ref[inf])
    finite = np.isfinite(y_ref)
    scale = ref_t.conv_transpose2d(np.abs(x), np.abs(w),
                                   None if b is None else np.abs(b), **kw)
    err = np.abs(y[finite].astype(np.float64) - y_ref[finite])
    bound = error_bound(alg, dtype, scale[finite])
    assert np.all(err <= bound), f"{np.max(err / bound):.3g} bound units"


# (x_shape, w_shape, conv_transpose2d keywords): stride 1/2/3, dilation,
# groups, crop (padding), output_padding, batch > 1, Co = 3 and 5 (a
# partial channel block of 4), 1-D as H = 1.
CASES = [
    ((2, 4, 3, 4), (4, 3, 3, 2),
     dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2),
          dilation=(1, 2), groups=2)),
    ((1, 3, 4, 3), (3, 5, 3, 3),
     dict(stride=(1, 1), padding=(2, 1), output_padding=(0, 0),
          dilation=(2, 1), groups=1)),
    ((2, 2, 3, 3), (2, 2, 4, 3),
     dict(stride=(3, 2), padding=(0, 2), output_padding=(2, 0),
          dilation=(2, 3), groups=1)),
    ((1, 6, 2, 3), (6, 1, 2, 2),
     dict(stride=(2, 2), padding=(0, 0), output_padding=(1, 0),
          dilation=(1, 1), groups=3)),
    ((2, 2, 1, 6), (2, 3, 1, 4),
     dict(stride=(1, 3), padding=(0, 2), output_padding=(0, 1),
          dilation=(1, 2), groups=1)),
]


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_the_reference_within_the_bound(cuda_transposed, alg, dtype,
                                                case):
    x_shape, w_shape, kw = CASES[case]
    rng = np.random.default_rng(case)
    x, w, b = _arrays(rng, x_shape, w_shape, kw["groups"], dtype,
                      with_bias=case % 2 == 0)
    spec = _spec(x_shape, w_shape, dtype=dtype, **kw)
    kernel = cuda_transposed.KERNELS[(OP, alg)]
    assert kernel.reason(spec) is None
    y = kernel.run(spec, x, w, b)
    _check(alg, dtype, y, x, w, b, kw)


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_1d_through_the_front_end(alg, dtype):
    """conv_transpose1d(backend='cuda'): H = 1 as the front end builds it."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 5)).astype(dtype)
    w = rng.standard_normal((4, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2, dilation=2)
    y = kernels.conv_transpose1d(x, w, b, algorithm=alg, backend="cuda", **kw)
    y_ref = ref_t.conv_transpose1d(x, w, b, **kw)
    scale = ref_t.conv_transpose1d(np.abs(x), np.abs(w), np.abs(b), **kw)
    assert y.dtype == dtype and y.shape == y_ref.shape == (2, 6, 12)
    assert np.all(np.abs(y - y_ref) <= error_bound(alg, dtype, scale))


@pytest.mark.parametrize("alg", ALGS)
def test_the_front_end_reaches_the_same_kernel(cuda_transposed, alg):
    """kernels.conv_transpose2d(backend='cuda') equals the entry point on
    the spec mirrored by _spec (same kernel, same summation order)."""
    rng = np.random.default_rng(8)
    x_shape, w_shape, kw = CASES[0]
    x, w, b = _arrays(rng, x_shape, w_shape, kw["groups"], np.float32, True)
    y = kernels.conv_transpose2d(x, w, b, algorithm=alg, backend="cuda", **kw)
    spec = _spec(x_shape, w_shape, dtype=np.float32, **kw)
    np.testing.assert_array_equal(
        y, cuda_transposed.KERNELS[(OP, alg)].run(spec, x, w, b))


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("case", [
    ((2, 3, 5, 4), (4, 3, 3, 2), dict(stride=(2, 3), padding=(1, 1),
                                      dilation=(1, 2), groups=1)),
    ((1, 4, 6, 5), (2, 2, 2, 3), dict(stride=(3, 1), padding=(0, 2),
                                      dilation=(2, 1), groups=2)),
])
def test_adjoint_of_the_reference_convolution(cuda_transposed, alg, case):
    """<conv2d(x, w), y> == <x, conv_transpose2d(y, w)> (float64), with
    the output_padding that gives back x's size."""
    x_shape, w_shape, kw = case
    rng = np.random.default_rng(9)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    conv = reference.conv2d(x, w, **kw)
    y = rng.standard_normal(conv.shape)
    out_pad = tuple(n - ((m - 1) * s - 2 * p + d * (k - 1) + 1)
                    for n, m, s, p, d, k in zip(x_shape[2:], conv.shape[2:],
                                                kw["stride"], kw["padding"],
                                                kw["dilation"], w_shape[2:]))
    spec = _spec(y.shape, w_shape, output_padding=out_pad, **kw)
    xt = cuda_transposed.KERNELS[(OP, alg)].run(spec, y, w, None)
    assert xt.shape == x.shape
    scale = np.vdot(np.abs(x), ref_t.conv_transpose2d(
        np.abs(y), np.abs(w), output_padding=out_pad, **kw))
    assert abs(np.vdot(conv, y) - np.vdot(x, xt)) <= 1e-12 * scale


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("alg", ALGS)
def test_non_finite_inputs_propagate_like_the_reference(cuda_transposed,
                                                       alg):
    rng = np.random.default_rng(10)
    x_shape, w_shape, kw = CASES[2]
    x, w, b = _arrays(rng, x_shape, w_shape, 1, np.float32, True)
    x[0, 0, 1, 1] = np.inf
    x[1, 1, 0, 2] = -np.inf
    x[1, 0, 2, 0] = np.nan
    w[1, 0, 0, 0] = 0.0          # inf * 0 = nan where that tap lands
    spec = _spec(x_shape, w_shape, dtype=np.float32, **kw)
    y = cuda_transposed.KERNELS[(OP, alg)].run(spec, x, w, b)
    assert np.isnan(y).any() and np.isinf(y).any()
    _check(alg, np.float32, y, x, w, b, kw)


@pytest.mark.parametrize("limit", [1, 1500, 2200])
def test_im2col_bands_and_image_chunks(cuda_transposed, monkeypatch, limit):
    """A small scratch_limit.  The column matrix of one image is 5 * 3 * 2
    rows x 3 * 3 pixels x 8 bytes = 2160 bytes, of one input row 720:
    one row per step (1), bands of 2 rows and 1 row of one image (1500),
    one image per step (2200)."""
    monkeypatch.setattr(cuda_transposed, "TRANSPOSED", dataclasses.replace(
        cuda_transposed.TRANSPOSED, scratch_limit=limit))
    rng = np.random.default_rng(11)
    x_shape, w_shape = (2, 2, 3, 3), (2, 5, 3, 2)
    kw = dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0),
              dilation=(1, 2), groups=1)
    x, w, b = _arrays(rng, x_shape, w_shape, 1, np.float64, True)
    steps = {1: (1, 1), 1500: (1, 2), 2200: (1, 3)}[limit]
    assert cuda_transposed._bands(2, 3, 3, 720, limit) == steps
    spec = _spec(x_shape, w_shape, **kw)
    y = cuda_transposed.KERNELS[(OP, "im2col")].run(spec, x, w, b)
    _check("im2col", np.float64, y, x, w, b, kw)


@pytest.mark.parametrize("alg", ALGS)
def test_device_arrays_in_device_array_out(cuda_transposed, alg):
    from numba import cuda
    rng = np.random.default_rng(12)
    x_shape, w_shape, kw = CASES[3]
    x, w, _ = _arrays(rng, x_shape, w_shape, kw["groups"], np.float32, False)
    spec = _spec(x_shape, w_shape, dtype=np.float32, **kw)
    run = cuda_transposed.KERNELS[(OP, alg)].run
    y_dev = run(spec, cuda.to_device(x), cuda.to_device(w), None)
    assert not isinstance(y_dev, np.ndarray)
    assert SIMULATED or hasattr(y_dev, "__cuda_array_interface__")
    y = y_dev.copy_to_host()
    assert y.shape == spec.out_shape and y.dtype == np.float32
    _check(alg, np.float32, y, x, w, None, kw)
    # Deterministic: the same bits from host arrays, and on a second run.
    np.testing.assert_array_equal(y, run(spec, x, w, None))


@pytest.mark.parametrize("alg", ALGS)
def test_device_arrays_through_the_front_end(alg):
    """kernels.conv_transpose2d(backend='cuda') on device arrays: a device
    array out, equal to the host call's result."""
    from numba import cuda
    rng = np.random.default_rng(13)
    x_shape, w_shape, kw = CASES[4]
    x, w, b = _arrays(rng, x_shape, w_shape, kw["groups"], np.float64, True)
    y_dev = kernels.conv_transpose2d(
        cuda.to_device(x), cuda.to_device(w), cuda.to_device(b),
        algorithm=alg, backend="cuda", **kw)
    assert not isinstance(y_dev, np.ndarray)
    y = y_dev.copy_to_host()
    _check(alg, np.float64, y, x, w, b, kw)


def test_tap_range_enumerates_exactly_the_contributing_taps(cuda_transposed):
    """_tap_range (pure Python here) against a test of every tap."""
    import math
    tap_range = cuda_transposed._tap_range.py_func
    for k, s, d, size in itertools.product((1, 2, 3, 5), (1, 2, 3, 4),
                                           (1, 2, 3, 4), (1, 2, 5)):
        g = math.gcd(s, d)
        step = s // g
        inv = pow(d // g, -1, step) if step > 1 else 0
        for lo, hi in ((0, size), (1, size), (0, max(1, size - 1))):
            if lo >= hi:
                continue
            for t in range(0, (size - 1) * s + d * (k - 1) + 2):
                want = [i for i in range(k) if (t - i * d) % s == 0
                        and lo <= (t - i * d) // s < hi]
                first, last = tap_range(t, k, s, d, g, step, inv, lo, hi)
                got = list(range(first, last + 1, step))
                assert got == want, (t, k, s, d, lo, hi)


def test_phase_column_is_a_permutation_by_phase(cuda_transposed):
    phase_column = cuda_transposed._phase_column.py_func
    for wo, sw in itertools.product(range(1, 12), range(1, 5)):
        cols = [phase_column(t, wo, sw) for t in range(wo)]
        assert sorted(cols) == list(range(wo))
        assert [c % sw for c in cols] == sorted(c % sw for c in cols)
