"""Backward passes against central finite differences (float64).

The loss is ``L = <f(x, w, b), gy>`` with ``f`` the *reference* forward
function, so the kernels' gradients are compared with derivatives of an
independent implementation:

* convolution is linear in ``x``, in ``w`` and in ``b``, so the central
  difference ``(L(x + h v) - L(x - h v)) / 2h`` equals the directional
  derivative ``<dL/dx, v>`` up to rounding for any ``h`` (``h = 1``);
  every coordinate direction of small problems is checked, plus random
  directions of larger ones;
* pooling is piecewise linear: with inputs whose values are at least
  ``delta`` apart, steps ``h < delta / 2`` never change the argmax (or
  which elements a window averages), so the central difference is exact
  up to rounding as well.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import kernels
import reference
import reference.pooling as ref_pool
import reference.transposed as ref_t
from kernels.accuracy import error_bound

from helpers import api, grouped_conv2d_problems

# The forward convolution algorithms are built by other modules; grad_w
# runs through them, so the algorithm-parametrised tests only use those
# that are built (conftest skips the others by the parameter "algorithm").
pytestmark = pytest.mark.usefixtures("backend")

ALGORITHMS = ("auto",) + kernels.ALGORITHMS


def central_difference(loss, a, direction, h):
    return (loss(a + h * direction) - loss(a - h * direction)) / (2 * h)


def coordinate_directions(shape):
    for i in range(int(np.prod(shape))):
        e = np.zeros(int(np.prod(shape)))
        e[i] = 1.0
        yield e.reshape(shape)


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------

def conv_problems(max_size=6):
    return grouped_conv2d_problems(max_size, max_channels=2, max_kernel=3,
                                   max_stride=(3, 2), max_padding=(2, 1))


def _backward_or_skip(gy, x, w, algorithm, **kw):
    try:
        return api.conv2d_backward(gy, x, w, algorithm=algorithm, **kw)
    except kernels.UnsupportedConfiguration:
        return None


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(deadline=None)
@given(problem=conv_problems(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_backward_matches_finite_differences(algorithm, problem, seed):
    x_shape, w_shape, kw = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    gy = rng.standard_normal(reference.conv2d(x, w, **kw).shape)
    grads = _backward_or_skip(gy, x, w, algorithm, **kw)
    if grads is None:
        return
    gx, gw, gb = grads
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape

    def loss_x(a):
        return np.vdot(reference.conv2d(a, w, b, **kw), gy)

    def loss_w(a):
        return np.vdot(reference.conv2d(x, a, b, **kw), gy)

    def loss_b(a):
        return np.vdot(reference.conv2d(x, w, a, **kw), gy)

    for grad, loss, point in ((gx, loss_x, x), (gw, loss_w, w), (gb, loss_b, b)):
        # Scale: the loss of the absolute values bounds every rounding.
        scale = np.vdot(reference.conv2d(np.abs(x), np.abs(w), np.abs(b), **kw),
                        np.abs(gy)) + 1.0
        directions = (list(coordinate_directions(point.shape)) if point.size <= 64
                      else [rng.standard_normal(point.shape) for _ in range(8)])
        for v in directions:
            fd = central_difference(loss, point, v, 1.0)
            assert abs(np.vdot(grad, v) - fd) <= 1e-9 * scale * (1 + np.abs(v).max())


@pytest.mark.parametrize("algorithm", ("auto", "direct", "im2col", "fft"))
@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_conv2d_backward_is_within_the_error_bounds(algorithm, dtype):
    """grad_x by the transposed reference, grad_w by the definition."""
    if algorithm != "auto" and algorithm not in api.built_algorithms():
        pytest.skip(f"forward {algorithm!r} not built")
    rng = np.random.default_rng(11)
    kw = dict(stride=2, padding=1, dilation=1, groups=2)
    x = rng.standard_normal((2, 4, 9, 8)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    gy = rng.standard_normal(reference.conv2d(x, w, **kw).shape).astype(dtype)
    gx, gw, gb = api.conv2d_backward(gy, x, w, algorithm=algorithm, **kw)
    out_pad = (9 - ((gy.shape[2] - 1) * 2 - 2 + 3), 8 - ((gy.shape[3] - 1) * 2 - 2 + 3))
    tkw = dict(kw, output_padding=out_pad)
    gx_ref = ref_t.conv_transpose2d(gy, w, **tkw)
    gx_scale = ref_t.conv_transpose2d(np.abs(gy), np.abs(w), **tkw)
    loose = "fft" if algorithm == "auto" else algorithm   # auto: any of them
    assert np.all(np.abs(gx - gx_ref) <= error_bound(loose, dtype, gx_scale))
    # grad_w[k, c, i, j] = sum_{n,u,v} gy[n,k,u,v] x_pad[n, g C/G + c, 2u + i, 2v + j]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    ho, wo = gy.shape[2:]
    gw_ref = np.zeros(w.shape)
    gw_scale = np.zeros(w.shape)
    for i in range(3):
        for j in range(3):
            patch = xp[:, :, i:i + 2 * ho:2, j:j + 2 * wo:2].reshape(2, 2, 2, ho, wo)
            g = gy.astype(np.float64).reshape(2, 2, 3, ho, wo)
            gw_ref[:, :, i, j] = np.einsum("ngkuv,ngcuv->gkc", g, patch).reshape(6, 2)
            gw_scale[:, :, i, j] = np.einsum("ngkuv,ngcuv->gkc", np.abs(g),
                                             np.abs(patch)).reshape(6, 2)
    assert np.all(np.abs(gw - gw_ref) <= error_bound(loose, dtype, gw_scale))
    np.testing.assert_allclose(gb, gy.astype(np.float64).sum(axis=(0, 2, 3)),
                               rtol=4 * np.finfo(dtype).eps)
    assert gx.dtype == gw.dtype == gb.dtype == dtype


@pytest.mark.parametrize("limit", [1, 2000, 30000])
def test_weight_gradient_in_chunks_matches_finite_differences(limit):
    """The im2col weight gradient with its patches built in small chunks
    (single positions, parts of an image, several whole images)."""
    from kernels.cpu import im2col
    rng = np.random.default_rng(12)
    kw = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    x = rng.standard_normal((3, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 2))
    gy = rng.standard_normal(reference.conv2d(x, w, **kw).shape)
    previous = im2col.set_scratch_limit(limit)
    try:
        _, gw, _ = api.conv2d_backward(gy, x, w, algorithm="im2col", **kw)
    finally:
        im2col.set_scratch_limit(previous)
    scale = np.vdot(reference.conv2d(np.abs(x), np.abs(w), **kw), np.abs(gy))
    for v in coordinate_directions(w.shape):
        fd = central_difference(
            lambda a: np.vdot(reference.conv2d(x, a, **kw), gy), w, v, 1.0)
        assert abs(np.vdot(gw, v) - fd) <= 1e-12 * scale


def test_conv2d_backward_accepts_same_padding_and_unbatched_input():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 7))
    w = rng.standard_normal((2, 3, 4, 2))
    gy = rng.standard_normal((2, 6, 7))
    gx, gw, gb = api.conv2d_backward(gy, x, w, padding="same")
    gx_b, gw_b, gb_b = api.conv2d_backward(gy[None], x[None], w, padding="same")
    np.testing.assert_array_equal(gx, gx_b[0])
    np.testing.assert_array_equal(gw, gw_b)
    for v in coordinate_directions(w.shape):
        fd = central_difference(
            lambda a: np.vdot(reference.conv2d(x, a, padding="same"), gy), w, v, 1.0)
        assert abs(np.vdot(gw, v) - fd) <= 1e-10 * (1 + abs(fd))


def test_conv2d_backward_rejects_bad_input():
    x = np.zeros((1, 2, 6, 6))
    w = np.zeros((4, 2, 3, 3))
    gy = np.zeros((1, 4, 4, 4))
    with pytest.raises(ValueError, match="shape of the forward output"):
        api.conv2d_backward(gy[:, :, :3], x, w)
    with pytest.raises(ValueError, match="shape of the forward output"):
        api.conv2d_backward(gy, x, w, stride=2)
    with pytest.raises(TypeError, match="dtype"):
        api.conv2d_backward(gy.astype(np.float32), x, w)
    with pytest.raises(ValueError, match="dimensions"):
        api.conv2d_backward(gy[0], x, w)
    with pytest.raises(ValueError, match="groups"):
        api.conv2d_backward(gy, x, w, groups=3)
    with pytest.raises(ValueError, match="algorithm"):
        api.conv2d_backward(gy, x, w, algorithm=("direct",))
    with pytest.raises(ValueError, match="algorithm"):
        api.conv2d_backward(gy, x, w, algorithm="best")
    with pytest.raises(ValueError, match="larger than the padded input"):
        api.conv2d_backward(gy, x, np.zeros((4, 2, 7, 7)))
    with pytest.raises(ValueError, match="backend"):
        api.conv2d_backward(gy, x, w, backend="tpu")


def test_conv2d_backward_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    for kw in (dict(stride=2, padding=1), dict(dilation=2, groups=2, padding=(1, 0)),
               dict(stride=(1, 3))):
        x = rng.standard_normal((2, 4, 9, 10))
        w = rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 3))
        tx = torch.from_numpy(x).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        ty = torch.nn.functional.conv2d(tx, tw, None, **kw)
        gy = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.from_numpy(gy))
        gx, gw, gb = api.conv2d_backward(gy, x, w, **kw)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-12)


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

def spaced_values(rng, shape, delta=1e-2):
    """Distinct values at least ``delta`` apart, in random order."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * delta - n * delta / 2).reshape(shape)


@st.composite
def pooling_problems(draw, avg):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)),
             draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    kw = dict(kernel_size=kernel, stride=stride, padding=padding,
              ceil_mode=draw(st.booleans()))
    dilation = (1, 1)
    if avg:
        kw["count_include_pad"] = draw(st.booleans())
        kw["divisor_override"] = draw(st.none() | st.integers(1, 5))
    else:
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        kw["dilation"] = dilation
    try:
        for n, k, s, p, d in zip(shape[2:], kernel, stride, padding, dilation):
            ref_pool.pool_output_size(n, k, s, p, d, kw["ceil_mode"])
    except ValueError:
        assume(False)
    return shape, kw


@settings(deadline=None)
@given(problem=pooling_problems(avg=False), seed=st.integers(0, 2**32 - 1))
def test_max_pool2d_backward_matches_finite_differences(problem, seed):
    shape, kw = problem
    rng = np.random.default_rng(seed)
    x = spaced_values(rng, shape)
    gy = rng.standard_normal(ref_pool.max_pool2d(x, **kw).shape)
    gx = api.max_pool2d_backward(gy, x, **kw)

    def loss(a):
        # Windows of pure padding/gaps give -inf whatever a: drop them.
        y = ref_pool.max_pool2d(a, **kw)
        return np.vdot(np.where(np.isfinite(y), y, 0.0), gy)

    for v in coordinate_directions(shape):
        fd = central_difference(loss, x, v, 1e-3)
        assert abs(np.vdot(gx, v) - fd) <= 1e-9 * (1 + np.abs(gy).sum())


@settings(deadline=None)
@given(problem=pooling_problems(avg=True), seed=st.integers(0, 2**32 - 1))
def test_avg_pool2d_backward_matches_finite_differences(problem, seed):
    shape, kw = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    gy = rng.standard_normal(ref_pool.avg_pool2d(x, **kw).shape)
    gx = api.avg_pool2d_backward(gy, x, **kw)

    def loss(a):
        return np.vdot(ref_pool.avg_pool2d(a, **kw), gy)

    for v in coordinate_directions(shape):
        fd = central_difference(loss, x, v, 1.0)   # linear: any step
        assert abs(np.vdot(gx, v) - fd) <= 1e-12 * (1 + np.abs(gy).sum())


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
def test_pooling_backward_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 9, 8)).astype(dtype)
    for k, s, p, c in [(3, 2, 1, False), (2, 2, 0, True), (3, 1, 1, True)]:
        tx = torch.from_numpy(x).requires_grad_()
        ty = torch.nn.functional.max_pool2d(tx, k, s, p, ceil_mode=c)
        gy = rng.standard_normal(tuple(ty.shape)).astype(dtype)
        ty.backward(torch.from_numpy(gy))
        np.testing.assert_allclose(api.max_pool2d_backward(gy, x, k, s, p, ceil_mode=c),
                                   tx.grad.numpy(), rtol=1e-6, atol=1e-6)
        tx = torch.from_numpy(x).requires_grad_()
        ty = torch.nn.functional.avg_pool2d(tx, k, s, p, ceil_mode=c,
                                            count_include_pad=False)
        ty.backward(torch.from_numpy(gy))
        np.testing.assert_allclose(
            api.avg_pool2d_backward(gy, x, k, s, p, ceil_mode=c,
                                        count_include_pad=False),
            tx.grad.numpy(), rtol=1e-5, atol=1e-6)
