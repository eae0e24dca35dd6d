"""The CUDA implicit-GEMM convolution (kernels/cuda/im2col.py) against the
float64 reference, in units of im2col's documented error bound.

Runs on a GPU or in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``);
shapes are tiny (one to four 64x64 GEMM tiles) but chosen so that M
(output channels per group), N (batch x output pixels) and K (C/G kH kW)
are not multiples of the 64/64/8 tile: edge tiles and partial slabs.
Asymmetric padding is applied to x beforehand for the reference (the same
sum), so every case is one zero-padded problem for both sides.
"""

from __future__ import annotations

import numpy as np
import pytest

from cuda_support import SIMULATED, requires_cuda

pytestmark = requires_cuda

pytest.importorskip("numba_cuda")

import kernels  # noqa: E402
from kernels._dispatch import ConvSpec  # noqa: E402

from helpers import assert_within_bound, random_array  # noqa: E402

DTYPES = (np.float32, np.float64)


def _module():
    from kernels.cuda import im2col
    return im2col


def _host(y):
    """``y`` as a NumPy array (device results copied back; NumPy inputs
    give NumPy, test_host_arrays_in_host_array_out)."""
    return y if isinstance(y, np.ndarray) else y.copy_to_host()


def _spec(x_shape, w_shape, stride, padding, dilation, groups, dtype):
    return ConvSpec.from_config(x_shape, w_shape, stride, padding, dilation,
                                groups, dtype)


def _check(x, w, bias, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
           groups=1, **run_kwargs):
    """Run the entry point on the 2-D problem, compare with the reference."""
    im2col = _module()
    spec = _spec(x.shape, w.shape, stride, padding, dilation, groups, x.dtype)
    if run_kwargs:
        from numba import cuda
        y = im2col.conv2d_device(
            spec, cuda.to_device(x), cuda.to_device(w),
            None if bias is None else cuda.to_device(bias),
            **run_kwargs).copy_to_host()
    else:
        y = _host(im2col.KERNELS[("conv2d", "im2col")].run(spec, x, w, bias))
    assert y.shape == spec.out_shape
    x_pad = np.pad(x, ((0, 0), (0, 0), padding[:2], padding[2:]))
    assert_within_bound("im2col", y, x_pad, w, bias, stride=stride,
                        dilation=dilation, groups=groups)
    return y


CASES = {
    # stride, dilation, asymmetric padding, bias, batch 2; N = 2*2*7 = 28,
    # K = 3*3*2 = 18 (two full slabs and a partial one)
    "stride_dilation_asym_pad": dict(
        x=(2, 3, 5, 6), w=(4, 3, 3, 2), stride=(2, 1), padding=(1, 0, 2, 1),
        dilation=(1, 2), bias=True),
    # groups, symmetric padding, no bias; per group M = 3, K = 2*3*3 = 18
    "groups_pad": dict(
        x=(2, 4, 5, 6), w=(6, 2, 3, 3), stride=(1, 1), padding=(1, 1, 1, 1),
        dilation=(1, 1), groups=2, bias=False),
    # windows mostly in the padding, stride larger than the kernel
    "tiny_input_big_pad": dict(
        x=(1, 2, 2, 3), w=(3, 2, 2, 3), stride=(3, 2), padding=(2, 3, 0, 2),
        dilation=(2, 1), bias=True),
    # 1x1 kernel with stride (not the pointwise path)
    "one_by_one_strided": dict(
        x=(2, 3, 5, 5), w=(5, 3, 1, 1), stride=(2, 2), padding=(0, 0, 0, 0),
        dilation=(1, 1), bias=True),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference(case, dtype):
    c = dict(CASES[case])
    rng = np.random.default_rng(sorted(CASES).index(case))
    x = random_array(rng, c.pop("x"), dtype)
    w = random_array(rng, c.pop("w"), dtype)
    bias = random_array(rng, (w.shape[0],), dtype) if c.pop("bias") else None
    _check(x, w, bias, **c)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_dimensional(dtype):
    """1-D as H = kH = 1, compared with reference.conv1d."""
    rng = np.random.default_rng(5)
    x = random_array(rng, (2, 3, 11), dtype)
    w = random_array(rng, (4, 3, 3), dtype)
    bias = random_array(rng, (4,), dtype)
    spec = _spec((2, 3, 1, 11), (4, 3, 1, 3), (1, 2), (0, 0, 2, 1), (1, 2), 1,
                 dtype)
    y = _host(_module().KERNELS[("conv2d", "im2col")].run(
        spec, x[:, :, None], w[:, :, None], bias))
    x_pad = np.pad(x, ((0, 0), (0, 0), (2, 1)))
    assert_within_bound("im2col", y[:, :, 0], x_pad, w, bias, stride=2,
                        dilation=2)


def test_edge_tiles_in_every_dimension():
    """M = 65 and N = 2*5*7 = 70 (two tiles each way, one row / six
    columns in the second), K = 3*2*2 = 12 (one partial slab)."""
    rng = np.random.default_rng(6)
    x = random_array(rng, (2, 3, 6, 8), np.float32)
    w = random_array(rng, (65, 3, 2, 2), np.float32)
    bias = random_array(rng, (65,), np.float32)
    _check(x, w, bias)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_path(dtype):
    """1x1, stride 1, unpadded: the (C, H W) GEMM, with groups, batch 3
    (N = 3*5*7 = 105: an image boundary inside a tile) and bias; the
    general loaders give the same values within the bound."""
    im2col = _module()
    rng = np.random.default_rng(7)
    x = random_array(rng, (3, 4, 5, 7), dtype)
    w = random_array(rng, (6, 2, 1, 1), dtype)
    bias = random_array(rng, (6,), dtype)
    spec = _spec(x.shape, w.shape, (1, 1), (0, 0, 0, 0), (2, 3), 2, dtype)
    assert im2col.is_pointwise(spec)
    _check(x, w, bias, dilation=(2, 3), groups=2)
    _check(x, w, bias, dilation=(2, 3), groups=2, pointwise=True)
    _check(x, w, None, dilation=(2, 3), groups=2, pointwise=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_propagate_like_the_reference():
    """Inf in x reaches exactly its windows; an infinite weight makes the
    padding taps 0 * inf = nan, as in the float64 definition."""
    rng = np.random.default_rng(8)
    x = random_array(rng, (1, 2, 5, 6), np.float64)
    w = random_array(rng, (3, 2, 2, 2), np.float64)
    x[0, 1, 2, 3] = np.inf
    x[0, 0, 4, 0] = -np.inf
    w[2, 0, 1, 1] = np.inf
    w[1, 1, 0, 0] = np.nan
    y = _check(x, w, None, padding=(1, 0, 0, 1))
    assert np.isnan(y).any() and np.isinf(y).any() and np.isfinite(y).any()


def test_device_arrays_in_device_array_out():
    from numba import cuda
    from kernels.cuda._runtime import is_device_array
    rng = np.random.default_rng(9)
    x = random_array(rng, (2, 2, 4, 5), np.float32)
    w = random_array(rng, (3, 2, 3, 3), np.float32)
    bias = random_array(rng, (3,), np.float32)
    spec = _spec(x.shape, w.shape, (1, 1), (1, 1, 1, 1), (1, 1), 1, np.float32)
    y = _module().KERNELS[("conv2d", "im2col")].run(
        spec, cuda.to_device(x), cuda.to_device(w), cuda.to_device(bias))
    assert is_device_array(y) or (SIMULATED and hasattr(y, "copy_to_host"))
    assert y.shape == spec.out_shape and y.dtype == np.float32
    assert_within_bound("im2col", y.copy_to_host(), x, w, bias, padding=1)


def test_host_arrays_in_host_array_out():
    rng = np.random.default_rng(13)
    x = random_array(rng, (1, 2, 3, 3), np.float32)
    w = random_array(rng, (2, 2, 2, 2), np.float32)
    spec = _spec(x.shape, w.shape, (1, 1), (0, 0, 0, 0), (1, 1), 1, np.float32)
    y = _module().KERNELS[("conv2d", "im2col")].run(spec, x, w, None)
    assert isinstance(y, np.ndarray)


def test_several_launches_over_images_and_groups(monkeypatch):
    """Batches beyond the 31-bit decode and groups beyond the grid's z
    limit run as several launches (limits lowered to force them)."""
    im2col = _module()
    monkeypatch.setattr(im2col, "INDEX_LIMIT", 2 * 4 * 3 + 1)   # 2 images
    monkeypatch.setattr(im2col, "MAX_GRID_Z", 1)                # 1 group
    rng = np.random.default_rng(10)
    x = random_array(rng, (3, 4, 5, 4), np.float64)
    w = random_array(rng, (4, 2, 2, 2), np.float64)
    bias = random_array(rng, (4,), np.float64)
    assert im2col.image_slices(3, 4 * 3) == [(0, 2), (2, 3)]
    _check(x, w, bias, groups=2)


def test_fast_divisor_is_exact_below_2_31():
    im2col = _module()
    top = 2 ** 31 - 1
    rng = np.random.default_rng(11)
    divisors = [1, 2, 3, 7, 49, 3136, 2 ** 30, 2 ** 30 + 1, top - 1, top]
    divisors += [int(v) for v in rng.integers(1, top, 200)]
    for d in divisors:
        d_, magic, shift = im2col.fast_divisor(d)
        assert d_ == d and magic <= 2 ** 32
        ts = [0, 1, d - 1, d, d + 1, top, top - top % d, top - top % d - 1]
        ts += [int(v) for v in rng.integers(0, top, 50)]
        for t in ts:
            if 0 <= t <= top:
                assert t * magic < 2 ** 63
                assert (t * magic) >> shift == t // d, (t, d)
    with pytest.raises(ValueError):
        im2col.fast_divisor(2 ** 31)


def test_refuses_only_indices_beyond_31_bits():
    im2col = _module()
    kernel = im2col.KERNELS[("conv2d", "im2col")]
    ok = _spec((2, 3, 5, 6), (4, 3, 3, 2), (2, 1), (1, 0, 2, 1), (1, 2), 1,
               np.float32)
    assert kernel.reason(ok) is None
    huge = _spec((1, 1, 1, 2 ** 31), (1, 1, 1, 1), (1, 1), (0, 0, 0, 0),
                 (1, 1), 1, np.float32)
    assert "2**31" in kernel.reason(huge)


def test_public_api_backend_cuda():
    """kernels.conv2d(..., backend="cuda", algorithm="im2col") reaches it."""
    rng = np.random.default_rng(12)
    x = random_array(rng, (1, 2, 4, 4), np.float32)
    w = random_array(rng, (2, 2, 2, 2), np.float32)
    y = kernels.conv2d(x, w, None, padding=1, algorithm="im2col",
                       backend="cuda")
    assert_within_bound("im2col", y, x, w, None, padding=1)
