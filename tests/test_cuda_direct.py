"""CUDA direct convolution (kernels/cuda/direct.py) against the reference.

Every result is compared with ``reference.conv2d`` / ``conv1d`` (float64)
under the documented bound of ``kernels.accuracy`` for "direct" (c = 128,
checked by ``helpers.assert_within_bound``, which also requires NaN
exactly where the reference has NaN).  The asymmetric ``(top, bottom,
left, right)`` padding of the contract is applied with ``np.pad`` before
a valid reference convolution.  Shapes are tiny (the simulator runs one
Python thread per CUDA thread) and chosen to reach each path: partial
register blocks (channels not a multiple of 4) and partial tiles, several
tiles and channel blocks, the three chunkings of the reduction (whole
channels, kernel rows, kernel columns) through smaller shared-memory
budgets given to :func:`direct.plan`, and a kernel whose window does not
fit the real budget.
"""

from __future__ import annotations

import numpy as np
import pytest

from cuda_support import SIMULATED, requires_cuda

pytestmark = requires_cuda
pytest.importorskip("numba_cuda")

from helpers import assert_within_bound  # noqa: E402

from kernels._dispatch import ConvSpec  # noqa: E402

DTYPES = (np.float32, np.float64)
F32, F64 = DTYPES
over_dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])


@pytest.fixture(scope="module")
def direct():
    from kernels.cuda import direct
    return direct


def host(y):
    """``y`` (the result of a call with NumPy inputs) as NumPy: it must be."""
    assert isinstance(y, np.ndarray), f"host arrays in, {type(y)} out"
    return y


def arrays(x_shape, w_shape, dtype, bias=True, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


def spec_of(x, w, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
            groups=1):
    return ConvSpec.from_config(x.shape, w.shape, stride, padding, dilation,
                                groups, x.dtype)


def check(direct, x, w, bias, stride=(1, 1), padding=(0, 0, 0, 0),
          dilation=(1, 1), groups=1, plan=None):
    """Run the entry point (or a given plan) on 4-D x and w; hold the
    result to the reference.  Returns y."""
    spec = spec_of(x, w, stride, padding, dilation, groups)
    x_before, w_before = x.copy(), w.copy()
    if plan is None:
        y = direct.KERNELS[("conv2d", "direct")].run(spec, x, w, bias)
    else:
        y = direct.run_planned(spec, x, w, bias, plan)
    y = host(y)
    assert y.shape == spec.out_shape
    assert y.flags.c_contiguous
    assert np.array_equal(x, x_before, equal_nan=True), "x was modified"
    assert np.array_equal(w, w_before, equal_nan=True), "w was modified"
    top, bottom, left, right = padding
    x_pad = np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)])
    assert_within_bound("direct", y, x_pad, w, bias, stride=stride, padding=0,
                        dilation=dilation, groups=groups)
    return y


# --------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------

# Each configuration in one dtype (the simulator is slow); both dtypes
# run every path of the kernel across the file.
@pytest.mark.parametrize("case", [
    # x_shape, w_shape, stride, padding, dilation, groups, bias, dtype
    ((1, 3, 6, 7), (5, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True, F32),
    ((1, 3, 6, 7), (5, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True, F64),
    ((2, 2, 7, 8), (3, 2, 3, 2), (2, 2), (1, 2, 0, 3), (1, 1), 1, False, F64),
    ((1, 2, 8, 7), (6, 2, 2, 3), (1, 2), (0, 1, 2, 0), (2, 2), 1, True, F32),
    ((1, 4, 5, 6), (6, 2, 3, 3), (1, 1), (2, 0, 1, 1), (1, 2), 2, True, F64),
    ((1, 3, 5, 5), (3, 1, 3, 3), (2, 1), (1, 1, 1, 1), (1, 1), 3, False, F32),
    ((1, 2, 4, 5), (4, 1, 2, 2), (1, 1), (0, 0, 0, 0), (2, 1), 2, True, F64),
], ids=["pad1-k5-float32", "pad1-k5-float64", "stride2-asym-nobias-float64",
        "dilation2-float32", "groups2-float64", "depthwise-float32",
        "depthwise-x2-float64"])
def test_configurations(direct, case):
    x_shape, w_shape, stride, padding, dilation, groups, has_bias, dtype = case
    x, w, b = arrays(x_shape, w_shape, dtype, has_bias)
    check(direct, x, w, b, stride, padding, dilation, groups)


@pytest.mark.parametrize("dtype, bias", [(F32, True), (F64, False)],
                         ids=["float32-bias", "float64-nobias"])
def test_conv1d(direct, dtype, bias):
    """1-D as H = kH = 1, held to reference.conv1d."""
    x, w, b = arrays((2, 3, 1, 13), (5, 3, 1, 3), dtype, bias)
    stride, padding, dilation = (1, 2), (0, 0, 2, 1), (1, 2)
    spec = spec_of(x, w, stride, padding, dilation)
    y = host(direct.KERNELS[("conv2d", "direct")].run(spec, x, w, b))
    assert y.shape == spec.out_shape
    x_pad = np.pad(x[:, :, 0], [(0, 0), (0, 0), (2, 1)])
    assert_within_bound("direct", y[:, :, 0], x_pad, w[:, :, 0], b,
                        stride=2, padding=0, dilation=2)


@pytest.mark.parametrize("dtype", [F32])   # 4 blocks: slow to simulate
def test_several_tiles_and_channel_blocks(direct, dtype):
    """17 channels (tk = 4: blocks of 16, the second holding one) over a
    17x17 output (two tiles of at most 256 pixels, the second partial)."""
    x, w, b = arrays((1, 1, 17, 17), (17, 1, 1, 1), dtype)
    spec = spec_of(x, w)
    p = direct.plan(spec)
    assert p.tk == 4 and p.th * p.tw < 17 * 17
    check(direct, x, w, b)


# --------------------------------------------------------------------------
# Chunkings of the reduction (plans with smaller shared-memory budgets)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [F64])
def test_channel_chunks_and_partial_tiles(direct, dtype):
    """Two channels per chunk (the last chunk holds one) over 4x4 tiles
    of a 6x7 output (partial at the bottom and the right edge), with 8
    channels per block for 6 filters."""
    x, w, b = arrays((1, 5, 6, 7), (6, 5, 2, 2), dtype)
    padding = (1, 0, 0, 1)
    p = direct.Plan(tk=2, th=4, tw=4, cb=2, ic=2, jc=2)
    assert spec_of(x, w, padding=padding).out_hw == (6, 7)
    check(direct, x, w, b, padding=padding, plan=p)


@pytest.mark.parametrize("dtype", [F32])
def test_kernel_row_chunks(direct, dtype):
    """One channel and fewer kernel rows than kH per chunk."""
    x, w, b = arrays((1, 2, 9, 6), (3, 2, 5, 3), dtype)
    padding, dilation = (2, 1, 1, 1), (2, 1)
    spec = spec_of(x, w, (1, 1), padding, dilation)
    p = direct.plan(spec, x_budget=60)
    assert p.cb == 1 and 1 <= p.ic < 5 and p.jc == 3, p
    check(direct, x, w, b, (1, 1), padding, dilation, plan=p)
    # The weights' budget alone forces it too.
    p = direct.plan(spec, w_budget=4 * 3 * 2)
    assert p.cb == 1 and p.ic == 2 and p.jc == 3, p
    check(direct, x, w, b, (1, 1), padding, dilation, plan=p)


@pytest.mark.parametrize("dtype", [F64])
def test_kernel_column_chunks(direct, dtype):
    """One channel, one kernel row and fewer columns than kW per chunk."""
    x, w, b = arrays((1, 2, 4, 12), (2, 2, 2, 7), dtype)
    stride, padding, dilation = (1, 2), (0, 1, 3, 2), (1, 2)
    p = direct.plan(spec_of(x, w, stride, padding, dilation), x_budget=36)
    assert p.cb == 1 and p.ic == 1 and p.jc == 3, p
    check(direct, x, w, b, stride, padding, dilation, plan=p)


@pytest.mark.parametrize("dtype", [F32])
def test_large_dilated_kernel_falls_back(direct, dtype):
    """A 5x5 kernel at dilation 20: its 82x82 window exceeds the real
    shared-memory budget, so the default plan streams kernel rows."""
    x, w, b = arrays((1, 1, 83, 83), (2, 1, 5, 5), dtype)
    spec = spec_of(x, w, dilation=(20, 20))
    p = direct.plan(spec)
    assert p.cb == 1 and p.ic < 5, p
    check(direct, x, w, b, dilation=(20, 20))


def test_plans_respect_the_budgets(direct):
    """Every plan keeps its chunk within the shared memory and never
    reorders the reduction (pure Python, many geometries)."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        kh, kw = rng.integers(1, 40, 2)
        sh, sw, dh, dw = rng.integers(1, 50, 4)
        h = (kh - 1) * dh + 1 + rng.integers(0, 60)
        wd = (kw - 1) * dw + 1 + rng.integers(0, 300)
        groups = int(rng.choice([1, 2, 3]))
        k = groups * int(rng.integers(1, 70))
        cg = int(rng.integers(1, 9))
        dtype = rng.choice([np.float32, np.float64])
        spec = ConvSpec.from_config((1, cg * groups, h, wd), (k, cg, kh, kw),
                                    (sh, sw), (0, 0, 0, 0), (dh, dw), groups,
                                    dtype)
        p = direct.plan(spec)
        xs, ws = (direct.DIRECT.input_shared_bytes // np.dtype(dtype).itemsize,
                  direct.DIRECT.weight_shared_bytes // np.dtype(dtype).itemsize)
        kb = direct.DIRECT.thread_channels * p.tk
        wh = (p.th - 1) * sh + (p.ic - 1) * dh + 1
        ww = (p.tw - 1) * sw + (p.jc - 1) * dw + 1
        assert p.th * p.tw <= direct.DIRECT.thread_pixels * direct.DIRECT.threads // p.tk
        assert p.cb * wh * ww <= xs and kb * p.cb * p.ic * p.jc <= ws, (spec, p)
        assert p.ic == kh or p.cb == 1, p
        assert p.jc == kw or p.ic == 1, p


# --------------------------------------------------------------------------
# Non-finite values, device arrays
# --------------------------------------------------------------------------

@over_dtypes
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_nan_and_inf_reach_exactly_their_windows(direct, dtype):
    x, w, b = arrays((1, 2, 6, 7), (3, 2, 3, 3), dtype)
    x[0, 0, 1, 2] = np.nan
    x[0, 1, 4, 6] = np.inf
    x[0, 1, 5, 0] = -np.inf
    y = check(direct, x, w, b, (2, 1), (1, 0, 2, 1), (1, 2))
    assert np.isnan(y).any() and np.isinf(y).any()
    # An infinite weight times the padding's zeros is NaN, as in the
    # reference.
    x, w, b = arrays((1, 1, 4, 4), (2, 1, 3, 3), dtype)
    w[1, 0, 0, 0] = np.inf
    y = check(direct, x, w, b, padding=(1, 1, 1, 1))
    assert np.isnan(y[0, 1, 0, :]).all() and np.isfinite(y[0, 0]).all()


@pytest.mark.parametrize("dtype", [F64])
def test_device_arrays_in_device_array_out(direct, dtype):
    from numba import cuda
    x, w, b = arrays((1, 3, 5, 6), (4, 3, 3, 2), dtype)
    spec = spec_of(x, w, padding=(1, 0, 0, 1))
    y = direct.KERNELS[("conv2d", "direct")].run(
        spec, cuda.to_device(x), cuda.to_device(w), cuda.to_device(b))
    from kernels.cuda._runtime import is_device_array
    assert is_device_array(y) or (SIMULATED and hasattr(y, "copy_to_host"))
    assert y.dtype == dtype and y.shape == spec.out_shape
    host = y.copy_to_host()
    assert_within_bound("direct", host, np.pad(x, [(0, 0), (0, 0), (1, 0), (0, 1)]),
                        w, b, padding=0)


def test_every_configuration_is_supported(direct):
    kernel = direct.KERNELS[("conv2d", "direct")]
    spec = ConvSpec.from_config((1, 4, 9, 9), (4, 1, 7, 7), (3, 2),
                                (3, 0, 1, 2), (1, 2), 4, np.float64)
    assert kernel.reason(spec) is None
