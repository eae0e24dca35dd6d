"""The CUDA pooling kernels (kernels/cuda/pooling.py) against the CPU
backend, which tests/test_pooling.py checks against reference/.

Max pooling, its indices and both max-pool gradients must equal the CPU's
bit for bit (the kernels add in the CPU's order; NaN payloads and signed
zeros included); averages must be within the documented bounds of the
float64 reference (forward) and the CPU's float64-accumulated gradient.
Shapes are tiny (numba's CUDA simulator); some cover several blocks with
a partial last one.
"""

from __future__ import annotations

import numpy as np
import pytest

from cuda_support import requires_cuda

pytestmark = requires_cuda
pytest.importorskip("numba_cuda")

import kernels  # noqa: E402
import reference.pooling as ref  # noqa: E402
from kernels import _pooling  # noqa: E402
from kernels._pooling import (avg_pool_error_constant,  # noqa: E402
                              global_avg_pool_error_constant)
from kernels.cpu import pooling as cpu  # noqa: E402

DTYPES = (np.float32, np.float64)

# (x shape, nsp, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    ((2, 3, 7, 9), 2, (3, 3), (2, 2), (1, 1), (1, 1), False),   # the usual
    ((1, 2, 8, 7), 2, (2, 3), (1, 2), (1, 1), (2, 1), True),    # dilation, ceil
    ((2, 1, 5, 6), 2, (3, 2), (3, 1), (1, 0), (2, 2), True),    # stride 3
    ((1, 1, 9, 9), 2, (4, 4), (3, 3), (2, 2), (1, 1), True),    # clipped windows
    ((1, 2, 19, 23), 2, (2, 2), (1, 1), (0, 0), (1, 1), False),  # 4 blocks, partial
    ((1, 1, 2, 2), 2, (2, 2), (1, 1), (1, 1), (3, 3), False),   # a window w/o input
    ((2, 3, 17), 1, (3,), (2,), (1,), (2,), True),              # 1-D
]
MAX_IDS = ["3x3s2p1", "dil-ceil", "stride3", "ceil-clip", "partial-block",
           "empty-window", "1d"]


def spec_and_planes(case, x):
    """The front end's PoolSpec and (P, H, W) planes for a case."""
    _, nsp, kernel, stride, padding, dilation, ceil_mode = case
    spec = _pooling.pool_spec(nsp, x, kernel, stride, padding, dilation,
                               ceil_mode)
    return spec, _pooling._planes(x, spec)


def make_input(seed, shape, dtype, kind):
    """'ties': few distinct values, with both signed zeros; 'nan': NaNs
    (two payloads) among normal values."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if kind == "ties":
        x = np.round(x)
        x[rng.random(shape) < 0.3] = -0.0
    x = x.astype(dtype)
    if kind == "nan":
        flat = x.reshape(-1)
        where = rng.integers(0, flat.size, size=max(2, flat.size // 8))
        flat[where] = np.nan
        other = np.array(np.nan, dtype).view(f"u{x.itemsize}") | 1
        flat[where[::2]] = other.view(dtype)     # a second NaN payload
    return x


def assert_bitwise_equal(actual, expected):
    actual = np.asarray(actual)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    if actual.dtype.kind == "f":
        bits = f"u{actual.itemsize}"
        actual, expected = actual.view(bits), expected.view(bits)
    np.testing.assert_array_equal(actual, expected)


def cuda_kernel(op):
    from kernels.cuda import pooling
    return pooling.KERNELS[(op, None)]


def cpu_kernel(op):
    return cpu.KERNELS[(op, None)]


# --------------------------------------------------------------------------
# max pooling: bit for bit with the CPU backend
# --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ties", "nan"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES, ids=MAX_IDS)
def test_max_pool_and_gradients_equal_the_cpu_bit_for_bit(case, dtype, kind):
    x = make_input(1, case[0], dtype, kind)
    spec, xp = spec_and_planes(case, x)
    y = cuda_kernel("max_pool2d").run(spec, xp)
    assert_bitwise_equal(y, cpu_kernel("max_pool2d").run(spec, xp))
    y_i, idx = cuda_kernel("max_pool2d_with_indices").run(spec, xp)
    y_i_cpu, idx_cpu = cpu_kernel("max_pool2d_with_indices").run(spec, xp)
    assert idx.dtype == np.int64
    assert_bitwise_equal(y_i, y_i_cpu)
    assert_bitwise_equal(idx, idx_cpu)

    g = make_input(2, (spec.n_planes,) + spec.out_hw, dtype, "normal")
    gx = cuda_kernel("max_pool2d_backward").run(spec, g, xp)
    assert_bitwise_equal(gx, cpu_kernel("max_pool2d_backward").run(spec, g, xp))
    gx_i = cuda_kernel("max_pool2d_backward_indices").run(spec, g, idx_cpu)
    assert_bitwise_equal(
        gx_i, cpu_kernel("max_pool2d_backward_indices").run(spec, g, idx_cpu))


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_pool_values_and_indices_match_the_reference(dtype):
    case = MAX_CASES[1]
    x = make_input(3, case[0], dtype, "ties")
    _, nsp, kernel, stride, padding, dilation, ceil_mode = case
    spec, xp = spec_and_planes(case, x)
    y, idx = cuda_kernel("max_pool2d_with_indices").run(spec, xp)
    y_ref, idx_ref = ref.max_pool2d(x, kernel, stride, padding, dilation,
                                    ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y.reshape(spec.out_shape), y_ref)
    np.testing.assert_array_equal(idx.reshape(spec.out_shape), idx_ref)


def test_max_pool_gradient_sums_overlapping_windows():
    # Stride 1, constant input: every window's argmax is its first tap;
    # grad ones: grad_x counts the windows whose first tap an element is.
    x = np.zeros((1, 1, 4, 5), np.float64)
    case = (x.shape, 2, (2, 2), (1, 1), (0, 0), (1, 1), False)
    spec, xp = spec_and_planes(case, x)
    g = np.ones((1,) + spec.out_hw)
    gx = cuda_kernel("max_pool2d_backward").run(spec, g, xp)[0]
    expected = np.zeros((4, 5))
    expected[:3, :4] = 1.0
    np.testing.assert_array_equal(gx, expected)


# --------------------------------------------------------------------------
# average pooling: within the documented bounds
# --------------------------------------------------------------------------

# (x shape, nsp, kernel, stride, padding, ceil_mode, count_include_pad,
#  divisor_override)
AVG_CASES = [
    ((2, 3, 7, 9), 2, (3, 3), (2, 2), (1, 1), False, True, None),
    ((1, 2, 8, 7), 2, (3, 2), (2, 3), (1, 1), True, False, None),
    ((2, 1, 6, 5), 2, (2, 3), (1, 1), (1, 1), True, True, None),
    ((1, 1, 9, 9), 2, (4, 4), (3, 3), (2, 2), True, False, None),
    ((1, 2, 20, 21), 2, (2, 2), (1, 1), (0, 0), False, True, -3),
    ((2, 3, 17), 1, (4,), (3,), (2,), True, False, None),
]
AVG_IDS = ["3x3s2p1", "ceil-nopad", "stride1-ceil", "ceil-clip",
           "partial-block-override", "1d"]


def avg_problem(case, x):
    _, nsp, kernel, stride, padding, ceil_mode, cip, override = case
    spec, (div_h, div_w) = _pooling.avg_spec(nsp, x, kernel, stride,
                                              padding, ceil_mode, cip,
                                              override)
    kwargs = dict(kernel_size=kernel, stride=stride, padding=padding,
                  ceil_mode=ceil_mode, count_include_pad=cip,
                  divisor_override=override)
    return spec, _pooling._planes(x, spec), div_h, div_w, kwargs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES, ids=AVG_IDS)
def test_avg_pool_and_gradient_within_bound(case, dtype):
    x = make_input(4, case[0], dtype, "normal")
    spec, xp, div_h, div_w, kwargs = avg_problem(case, x)
    area = int(np.prod(spec.kernel))
    u = np.finfo(dtype).eps / 2
    c = avg_pool_error_constant(dtype, area)

    y = cuda_kernel("avg_pool2d").run(spec, xp, div_h, div_w)
    assert y.dtype == dtype and y.shape == (spec.n_planes,) + spec.out_hw
    pool = ref.avg_pool1d if spec.nsp == 1 else ref.avg_pool2d
    y_ref = pool(x, **kwargs).reshape(y.shape)
    scale = np.abs(pool(np.abs(x.astype(np.float64)), **kwargs)).reshape(y.shape)
    err = np.abs(y - y_ref)
    assert np.all(err <= c * u * scale + np.finfo(dtype).tiny), \
        f"{np.max(err / (c * u * scale)):.3g} bound units"

    # The gradient against the CPU's (float64 sums, one rounding each):
    # both within u |g| + area u64 sum |terms| of the exact value.
    g = make_input(5, y.shape, dtype, "normal")
    gx = cuda_kernel("avg_pool2d_backward").run(spec, g, div_h, div_w)
    gx_cpu = cpu_kernel("avg_pool2d_backward").run(spec, g, div_h, div_w)
    assert gx.dtype == dtype and gx.shape == xp.shape
    g_scale = cpu_kernel("avg_pool2d_backward").run(
        spec, np.abs(g).astype(np.float64), np.abs(div_h), np.abs(div_w))
    g_scale = np.abs(g_scale)
    assert np.all(np.abs(gx - gx_cpu) <= 2 * c * u * g_scale
                  + np.finfo(dtype).tiny)


def test_avg_pool_propagates_non_finite_like_the_cpu():
    case = AVG_CASES[0]
    x = make_input(6, case[0], np.float32, "normal")
    x[0, 0, 2, 3] = np.inf
    x[1, 2, 5, 5] = np.nan
    spec, xp, div_h, div_w, _ = avg_problem(case, x)
    y = cuda_kernel("avg_pool2d").run(spec, xp, div_h, div_w)
    y_cpu = cpu_kernel("avg_pool2d").run(spec, xp, div_h, div_w)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_cpu))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(y_cpu))
    assert np.isnan(y).any() and np.isposinf(y).any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_global_avg_pool_within_bound(dtype):
    # 17 x 19 = 323 > 256 elements per plane (threads with two terms and
    # with one), and 3 x 1 (most threads without any).
    for shape in [(1, 2, 17, 19), (2, 1, 3, 1)]:
        x = make_input(7, shape, dtype, "normal") + 0.5
        spec = _pooling.PoolSpec(2, shape[:2], shape[2:], shape[2:],
                                 shape[2:], (0, 0), (1, 1), (1, 1))
        y = cuda_kernel("global_avg_pool2d").run(spec,
                                                  _pooling._planes(x, spec))
        assert y.dtype == dtype and y.shape == (spec.n_planes,)
        y_ref = ref.global_avg_pool2d(x).reshape(-1)
        scale = ref.global_avg_pool2d(np.abs(x.astype(np.float64))).reshape(-1)
        c = global_avg_pool_error_constant(dtype, shape[2] * shape[3])
        assert np.all(np.abs(y - y_ref) <= c * np.finfo(dtype).eps / 2 * scale)


def test_global_avg_pool_nan_stays_in_its_plane():
    x = np.ones((1, 3, 4, 5), np.float32)
    x[0, 1, 2, 2] = np.nan
    y = kernels.global_avg_pool2d(x, backend="cuda")
    assert y.shape == (1, 3, 1, 1)
    np.testing.assert_array_equal(y.reshape(-1), [1.0, np.nan, 1.0])


# --------------------------------------------------------------------------
# through the front end, and device arrays
# --------------------------------------------------------------------------

def test_public_functions_run_on_the_cuda_backend():
    x = make_input(8, (2, 2, 6, 7), np.float32, "ties")
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    y, idx = kernels.max_pool2d(x, return_indices=True, backend="cuda", **kw)
    y_cpu, idx_cpu = kernels.max_pool2d(x, return_indices=True, **kw)
    assert_bitwise_equal(y, y_cpu)
    assert_bitwise_equal(idx, idx_cpu)
    g = make_input(9, y.shape, np.float32, "normal")
    gx = kernels.max_pool2d_backward(g, x, backend="cuda", indices=idx, **kw)
    assert_bitwise_equal(gx, kernels.max_pool2d_backward(g, x, indices=idx,
                                                         **kw))
    ya = kernels.avg_pool2d(x, backend="cuda", **kw)
    np.testing.assert_allclose(ya, kernels.avg_pool2d(x, **kw), rtol=1e-6,
                               atol=1e-6)


def test_device_arrays_in_give_device_arrays_out():
    from numba import cuda

    def is_device_array(a):
        # (The simulator's arrays have no __cuda_array_interface__.)
        return not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host")

    case = MAX_CASES[0]
    x = make_input(10, case[0], np.float64, "nan")
    spec, xp = spec_and_planes(case, x)
    y, idx = cuda_kernel("max_pool2d_with_indices").run(spec,
                                                        cuda.to_device(xp))
    assert is_device_array(y) and is_device_array(idx)
    y_cpu, idx_cpu = cpu_kernel("max_pool2d_with_indices").run(spec, xp)
    assert_bitwise_equal(y.copy_to_host(), y_cpu)
    assert_bitwise_equal(idx.copy_to_host(), idx_cpu)
    g = make_input(11, y.shape, np.float64, "normal")
    gx = cuda_kernel("max_pool2d_backward_indices").run(
        spec, cuda.to_device(g), idx)
    assert is_device_array(gx)
    assert_bitwise_equal(gx.copy_to_host(), cpu_kernel(
        "max_pool2d_backward_indices").run(spec, g, idx_cpu))
