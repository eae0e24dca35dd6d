"""The CUDA weight gradient (kernels/cuda/backward.py) against its float64
definition, in units of im2col's documented error bound::

    grad_w[k, c, i, j] = sum_{n, u, v} gy[n, k, u, v]
                         x_pad[n, g C/G + c, u sh + i dh, v sw + j dw]

computed here with NumPy in float64 (and with absolute values for the
bound's scale).  Runs on a GPU or in numba's CUDA simulator; tiny shapes
with M (K/G), N (C/G kH kW) and the reduction (N Ho Wo) not multiples of
the 64/64/8 tile, with and without split-K.
"""

from __future__ import annotations

import numpy as np
import pytest

from cuda_support import SIMULATED, requires_cuda

pytestmark = requires_cuda

pytest.importorskip("numba_cuda")

from kernels._dispatch import ConvSpec  # noqa: E402
from kernels.accuracy import error_bound  # noqa: E402

from helpers import assert_close_within, random_array  # noqa: E402

DTYPES = (np.float32, np.float64)


def _module():
    from kernels.cuda import backward
    return backward


def _host(y):
    """NumPy out for NumPy in (asserted), device results copied back."""
    return y if isinstance(y, np.ndarray) else y.copy_to_host()


def weight_grad_definition(gy, x, w_shape, stride, padding, dilation, groups):
    """float64 ``grad_w`` from the definition, and its bound's scale."""
    n, _, _, _ = x.shape
    k, cg, kh, kw = w_shape
    kg = k // groups
    ho, wo = gy.shape[2:]
    xp = np.pad(x.astype(np.float64),
                ((0, 0), (0, 0), padding[:2], padding[2:]))
    g64 = gy.astype(np.float64).reshape(n, groups, kg, ho, wo)
    grad, scale = np.zeros(w_shape), np.zeros(w_shape)
    with np.errstate(invalid="ignore"):
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dilation[0], j * dilation[1]
                patch = xp[:, :, r0:r0 + stride[0] * (ho - 1) + 1:stride[0],
                           c0:c0 + stride[1] * (wo - 1) + 1:stride[1]]
                patch = patch.reshape(n, groups, cg, ho, wo)
                grad[:, :, i, j] = np.einsum("ngkuv,ngcuv->gkc", g64,
                                             patch).reshape(k, cg)
                scale[:, :, i, j] = np.einsum("ngkuv,ngcuv->gkc", np.abs(g64),
                                              np.abs(patch)).reshape(k, cg)
    return grad, scale


def _problem(rng, x_shape, w_shape, stride, padding, dilation, groups, dtype):
    spec = ConvSpec.from_config(x_shape, w_shape, stride, padding, dilation,
                                groups, dtype)
    x = random_array(rng, x_shape, dtype)
    gy = random_array(rng, spec.out_shape, dtype)
    return spec, gy, x


def _check(spec, gy, x, grad_w):
    grad_w = _host(grad_w)
    assert grad_w.shape == spec.w_shape and grad_w.dtype == spec.dtype
    ref, scale = weight_grad_definition(gy, x, spec.w_shape, spec.stride,
                                        spec.padding, spec.dilation,
                                        spec.groups)
    assert (np.isnan(grad_w) == np.isnan(ref)).all()
    assert (np.isinf(grad_w) == np.isinf(ref)).all()
    assert (grad_w[np.isinf(ref)] == ref[np.isinf(ref)]).all()
    finite = np.isfinite(ref)
    assert_close_within(np.where(finite, grad_w, 0), np.where(finite, ref, 0),
                        error_bound("im2col", spec.dtype,
                                    np.where(finite, scale, 0)),
                        "weight gradient")


def _run(spec, gy, x, **kwargs):
    backward = _module()
    if not kwargs:
        return backward.KERNELS[("conv2d_weight_grad", "im2col")].run(
            spec, gy, x)
    from numba import cuda
    return backward.weight_grad_device(spec, cuda.to_device(gy),
                                       cuda.to_device(x), **kwargs)


CASES = {
    # stride, dilation, asymmetric padding, batch 2; reduction 2*2*7 = 28
    "stride_dilation_asym_pad": dict(
        x=(2, 3, 5, 6), w=(4, 3, 3, 2), stride=(2, 1), padding=(1, 0, 2, 1),
        dilation=(1, 2), groups=1),
    # groups, stride 2, padding
    "groups_stride": dict(
        x=(2, 4, 5, 6), w=(6, 2, 3, 3), stride=(2, 2), padding=(1, 1, 1, 1),
        dilation=(1, 1), groups=2),
    # 1-D as H = kH = 1
    "one_dimensional": dict(
        x=(2, 3, 1, 13), w=(2, 3, 1, 3), stride=(1, 2), padding=(0, 0, 2, 1),
        dilation=(1, 2), groups=1),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_definition(case, dtype):
    c = CASES[case]
    rng = np.random.default_rng(sorted(CASES).index(case))
    spec, gy, x = _problem(rng, c["x"], c["w"], c["stride"], c["padding"],
                           c["dilation"], c["groups"], dtype)
    assert _module().split_count(spec) == 1     # tiny: one GEMM launch
    _check(spec, gy, x, _run(spec, gy, x))


def test_edge_tiles_in_every_dimension():
    """M = K = 65 (two row tiles), N = C kH kW = 2*5*7 = 70 (two column
    tiles), reduction 1*3*4 = 12 (a partial slab)."""
    rng = np.random.default_rng(3)
    spec, gy, x = _problem(rng, (1, 2, 4, 10), (65, 2, 5, 7), (1, 1),
                           (1, 0, 0, 0), (1, 1), 1, np.float32)
    _check(spec, gy, x, _run(spec, gy, x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_k(dtype):
    """Three partial sums (ranges of 24, 24 and 12 of the 60 positions:
    the last one short) added by the second kernel."""
    rng = np.random.default_rng(4)
    spec, gy, x = _problem(rng, (3, 4, 5, 4), (6, 2, 2, 3), (1, 1),
                           (1, 0, 1, 1), (1, 1), 2, dtype)
    assert _module()._pieces(spec, 3) == [(0, 3, 3, 24)]
    _check(spec, gy, x, _host(_run(spec, gy, x, splits=3)))


def test_split_count_from_the_tuning(monkeypatch):
    """The entry point splits when the tuning asks for more blocks; the
    count depends on the shapes only."""
    import dataclasses
    backward = _module()
    rng = np.random.default_rng(5)
    spec, gy, x = _problem(rng, (2, 2, 4, 6), (3, 2, 2, 2), (1, 1),
                           (0, 0, 0, 0), (1, 1), 1, np.float64)
    tuning = dataclasses.replace(backward.BACKWARD, target_blocks=100,
                                 min_split_length=6, max_splits=4)
    assert backward.split_count(spec, tuning) == 4
    monkeypatch.setattr(backward, "BACKWARD", tuning)
    _check(spec, gy, x, _run(spec, gy, x))


def test_several_launches_over_images_and_splits(monkeypatch):
    """Batches beyond the 31-bit decode run as image slices, each with its
    own partial sums, and z beyond the grid limit as several launches
    (limits lowered to force them)."""
    from kernels.cuda import im2col
    backward = _module()
    monkeypatch.setattr(im2col, "INDEX_LIMIT", 2 * 16 + 1)   # 2 images
    monkeypatch.setattr(backward, "MAX_GRID_Z", 3)
    rng = np.random.default_rng(6)
    spec, gy, x = _problem(rng, (3, 4, 4, 5), (4, 2, 2, 3), (1, 1),
                           (0, 1, 0, 1), (1, 1), 2, np.float32)
    assert backward._pieces(spec, 3) == [(0, 2, 2, 16), (2, 3, 1, 16)]
    _check(spec, gy, x, _host(_run(spec, gy, x, splits=3)))
    _check(spec, gy, x, _host(_run(spec, gy, x, splits=1)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_propagate_like_the_definition():
    rng = np.random.default_rng(7)
    spec, gy, x = _problem(rng, (2, 2, 4, 5), (2, 2, 2, 2), (1, 1),
                           (1, 0, 0, 1), (1, 1), 1, np.float64)
    x[0, 1, 2, 3] = np.inf      # inf * gy of both signs: nan
    x[1, 0, 0, 0] = np.nan
    gy[0, 1] = np.abs(gy[0, 1])
    x[1, 1, 3, 4] = 1e308       # 1e308 * gy overflows in some sums
    grad_w = _host(_run(spec, gy, x))
    assert np.isnan(grad_w).any() and np.isfinite(grad_w).any()
    _check(spec, gy, x, grad_w)


def test_device_arrays_in_device_array_out():
    from numba import cuda
    from kernels.cuda._runtime import is_device_array
    rng = np.random.default_rng(8)
    spec, gy, x = _problem(rng, (2, 2, 4, 5), (3, 2, 3, 3), (1, 1),
                           (1, 1, 1, 1), (1, 1), 1, np.float32)
    grad_w = _module().KERNELS[("conv2d_weight_grad", "im2col")].run(
        spec, cuda.to_device(gy), cuda.to_device(x))
    assert is_device_array(grad_w) or (SIMULATED
                                       and hasattr(grad_w, "copy_to_host"))
    _check(spec, gy, x, grad_w.copy_to_host())


def test_front_end_uses_it_for_im2col_on_cuda():
    """kernels._backward hands (spec, grad_out, x) to this kernel for
    algorithm "im2col" on backend "cuda"."""
    from kernels import _backward
    rng = np.random.default_rng(9)
    spec, gy, x = _problem(rng, (1, 2, 3, 4), (2, 1, 2, 2), (1, 1),
                           (0, 0, 1, 0), (1, 1), 2, np.float32)
    _check(spec, gy, x, _backward._weight_gradient(gy, x, spec, "im2col",
                                                   "cuda"))
