"""The CUDA Winograd kernels (kernels/cuda/winograd.py), in the simulator
or on a GPU.

Each stage against NumPy float64 of the same stage with the matrices of
kernels/_winograd_math.py (U = G g G^T, V = B^T d B, M = U @ V,
y = A^T M A), then whole convolutions against ``reference`` in units of
the documented normwise bound (c = 128 for "winograd").  Shapes are tiny:
the simulator runs a 256-thread GEMM block in ~0.3 s, and a tuple GEMM
launches at least alpha_h * alpha_w blocks.
"""

from __future__ import annotations

import numpy as np
import pytest

from cuda_support import requires_cuda

pytestmark = requires_cuda
pytest.importorskip("numba_cuda")

import kernels  # noqa: E402
from helpers import assert_within_bound, random_array, u  # noqa: E402
from kernels import _dispatch, winograd  # noqa: E402
from kernels._dispatch import ConvSpec  # noqa: E402
from kernels._validation import UnsupportedConfiguration  # noqa: E402
from kernels._weight_cache import transformed_weights  # noqa: E402
from kernels._winograd_math import (Tile, tile_counts,  # noqa: E402
                                    transform_matrices, use_tile)
from kernels.cuda import winograd as cw  # noqa: E402
from kernels.cuda._runtime import cuda, is_device_array  # noqa: E402

DTYPES = (np.float32, np.float64)
TINY = {np.dtype(np.float32): 1e-38, np.dtype(np.float64): 1e-300}

# F(4x4, 3x3) (default), F(4x4, 5x5) (alpha = 8: two column chunks),
# a 1-D tile and a non-square one.
STAGE_TILES = (Tile(4, 4, 3, 3), Tile(4, 4, 5, 5), Tile(1, 4, 1, 3),
               Tile(2, 3, 2, 4))


def _host(a):
    return a.copy_to_host() if is_device_array(a) else a


def _matrices(tile):
    """(A^T, G, B^T) per axis in float64."""
    return (transform_matrices(tile.m_h, tile.r_h),
            transform_matrices(tile.m_w, tile.r_w))


def _assert_close(got, want, tol, what):
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = np.abs(got - want)
    assert (err <= tol).all(), (
        f"{what}: max error {err.max():.3e}, worst excess "
        f"{(err - tol).max():.3e}")


def _padded_tiles(x, tile, padding, out_hw):
    """x zero padded and extended to whole tiles: (N, C, rows, cols)."""
    tiles_h, tiles_w = tile_counts(out_hw, tile)
    rows = tiles_h * tile.m_h + tile.r_h - 1
    cols = tiles_w * tile.m_w + tile.r_w - 1
    n, c, h, w = x.shape
    xp = np.zeros((n, c, rows, cols))
    xp[:, :, padding[0]:padding[0] + h, padding[2]:padding[2] + w] = x
    return xp, tiles_h, tiles_w


# --------------------------------------------------------------------------
# Stages, each against NumPy float64 of the same stage
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile", STAGE_TILES)
def test_transform_kernel_is_G_g_GT(tile, dtype):
    rng = np.random.default_rng(1)
    groups, kg, cg = 2, 3, 2
    w = random_array(rng, (groups * kg, cg, tile.r_h, tile.r_w), dtype)
    U = _host(cw.transform_kernel(w, tile, groups))
    (_, G_h, _), (_, G_w, _) = _matrices(tile)
    P = tile.alpha_h * tile.alpha_w
    want = np.einsum("ai,kcij,bj->kcab", G_h, w.astype(np.float64), G_w)
    scale = np.einsum("ai,kcij,bj->kcab", abs(G_h), abs(w.astype(np.float64)),
                      abs(G_w))
    # U[g, p, kl, c] for filter k = g kg + kl
    want = want.reshape(groups, kg, cg, P).transpose(0, 3, 1, 2)
    scale = scale.reshape(groups, kg, cg, P).transpose(0, 3, 1, 2)
    assert U.dtype == dtype
    # float64 arithmetic, one rounding to dtype
    _assert_close(U, want, 2 * u(dtype) * scale + 64 * u(np.float64) * scale,
                  "U")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile", STAGE_TILES)
def test_transform_input_is_BT_d_B(tile, dtype):
    rng = np.random.default_rng(2)
    groups, cg = 2, 2
    x = random_array(rng, (2, groups * cg, 5 + tile.r_h, 6 + tile.r_w), dtype)
    padding = (2, 0, 1, 3)              # asymmetric; partial edge tiles
    out_hw = (x.shape[2] + 2 - tile.r_h + 1, x.shape[3] + 4 - tile.r_w + 1)
    V = _host(cw.transform_input(x, tile, padding, out_hw, groups))
    xp, tiles_h, tiles_w = _padded_tiles(x, tile, padding, out_hw)
    (_, _, BT_h), (_, _, BT_w) = _matrices(tile)
    a_h, a_w = tile.alpha_h, tile.alpha_w
    # d[n, c, i, j, :, :]: the alpha_h x alpha_w patch of tile (i, j)
    d = np.stack([np.stack([xp[:, :, i * tile.m_h:i * tile.m_h + a_h,
                               j * tile.m_w:j * tile.m_w + a_w]
                            for j in range(tiles_w)], axis=2)
                  for i in range(tiles_h)], axis=2)
    want = np.einsum("ak,ncijkl,bl->cabnij", BT_h, d, BT_w)
    scale = np.einsum("ak,ncijkl,bl->cabnij", abs(BT_h), abs(d), abs(BT_w))
    T = x.shape[0] * tiles_h * tiles_w
    want = want.reshape(groups, cg, a_h * a_w, T).transpose(0, 2, 1, 3)
    scale = scale.reshape(groups, cg, a_h * a_w, T).transpose(0, 2, 1, 3)
    assert V.dtype == dtype
    _assert_close(V, want, 2 * a_h * a_w * u(dtype) * scale, "V")


@pytest.mark.parametrize("dtype", DTYPES)
def test_tuple_gemm_is_einsum(dtype):
    # Kg = 5, Cg = 3, 70 tiles: partial GEMM blocks in every direction
    # (64 x 64 x 8), two column blocks; groups x positions = 4 problems.
    rng = np.random.default_rng(3)
    U = random_array(rng, (2, 2, 5, 3), dtype)
    V = random_array(rng, (2, 2, 3, 70), dtype)
    M = _host(cw.tuple_gemm(U, V))
    want = np.einsum("gpkc,gpct->gpkt", U.astype(np.float64), V.astype(np.float64))
    scale = np.einsum("gpkc,gpct->gpkt", abs(U.astype(np.float64)),
                      abs(V.astype(np.float64)))
    assert M.dtype == dtype
    _assert_close(M, want, 3 * u(dtype) * scale, "M")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tile", STAGE_TILES)
def test_transform_output_is_AT_m_A(tile, dtype):
    rng = np.random.default_rng(4)
    groups, kg = 2, 2
    out_shape = (2, groups * kg, 2 * tile.m_h + 1, 2 * tile.m_w - 1)  # partial tiles
    tiles_h, tiles_w = tile_counts(out_shape[2:], tile)
    T = out_shape[0] * tiles_h * tiles_w
    a_h, a_w = tile.alpha_h, tile.alpha_w
    M = random_array(rng, (groups, a_h * a_w, kg, T), dtype)
    bias = random_array(rng, (groups * kg,), dtype)
    y = _host(cw.transform_output(M, tile, out_shape, bias))
    (AT_h, _, _), (AT_w, _, _) = _matrices(tile)
    m = M.astype(np.float64).reshape(groups, a_h, a_w, kg, out_shape[0],
                                     tiles_h, tiles_w)
    full = np.einsum("ai,gijknst,bj->nkgsatb", AT_h, m, AT_w)
    scale = np.einsum("ai,gijknst,bj->nkgsatb", abs(AT_h), abs(m), abs(AT_w))
    shape = (out_shape[0], groups * kg, tiles_h * tile.m_h, tiles_w * tile.m_w)
    # k = g kg + kl; crop the overhang of the edge tiles
    want = full.transpose(0, 2, 1, 3, 4, 5, 6).reshape(shape)
    scale = scale.transpose(0, 2, 1, 3, 4, 5, 6).reshape(shape)
    crop = (slice(None), slice(None), slice(0, out_shape[2]), slice(0, out_shape[3]))
    want = want[crop] + bias.astype(np.float64)[None, :, None, None]
    scale = scale[crop] + abs(bias.astype(np.float64))[None, :, None, None]
    assert y.dtype == dtype
    _assert_close(y, want, 2 * a_h * a_w * u(dtype) * scale, "y")


def test_transform_output_sets_padding_only_outputs_to_the_bias():
    # A 3x3 input padded by 3 on every side: output rows/columns 0 and 6
    # see only padding and must be the bias exactly.
    tile = Tile(4, 4, 3, 3)
    out_shape = (1, 2, 7, 7)
    tiles_h, tiles_w = tile_counts(out_shape[2:], tile)
    rng = np.random.default_rng(5)
    M = random_array(rng, (1, 36, 2, tiles_h * tiles_w), np.float32)
    bias = np.array([1.25, -3.5], np.float32)
    y = _host(cw.transform_output(M, tile, out_shape, bias, in_hw=(3, 3),
                                  padding=(3, 3, 3, 3)))
    edge = np.ones((7, 7), bool)
    edge[1:6, 1:6] = False
    for k in range(2):
        assert (y[0, k][edge] == bias[k]).all()
        assert (y[0, k][~edge] != bias[k]).all()


# --------------------------------------------------------------------------
# Whole convolutions against reference.conv2d, in bound units
# --------------------------------------------------------------------------

def _spec(x, w, padding, groups=1):
    return ConvSpec.from_config(x.shape, w.shape, (1, 1), padding, (1, 1),
                                groups, x.dtype)


def _check_conv(y, x, w, bias, padding, groups=1):
    """y against reference on the explicitly zero-padded x (asymmetric
    padding), normwise bound with c = 128."""
    xp = np.pad(x, ((0, 0), (0, 0), padding[:2], padding[2:]))
    assert_within_bound("winograd", y, xp, w, bias, groups=groups)


@pytest.mark.parametrize("dtype, m", [(np.float32, 4), (np.float64, None)])
def test_conv2d_3x3_batch_bias_asymmetric_padding(dtype, m):
    # float32 with F(4x4, 3x3) forced; float64 with the default for few
    # tiles (m = 2).  5 filters, 3 channels: partial GEMM blocks; 7x9
    # input, padding (1, 2, 0, 1): partial edge tiles in both directions.
    rng = np.random.default_rng(6)
    x = random_array(rng, (2, 3, 7, 9), dtype)
    w = random_array(rng, (5, 3, 3, 3), dtype)
    bias = random_array(rng, (5,), dtype)
    padding = (1, 2, 0, 1)
    spec = _spec(x, w, padding)
    run = cw.KERNELS[("conv2d", "winograd")].run
    before = transformed_weights.count("winograd")
    with use_tile(m):
        assert cw._tile(spec) == (Tile(4, 4, 3, 3) if m else Tile(2, 2, 3, 3))
        y = run(spec, x, w, bias)
        assert isinstance(y, np.ndarray) and y.dtype == dtype
        assert y.shape == spec.out_shape
        _check_conv(y, x, w, bias, padding)
        if m is None:   # (the simulator's F(4x4, 3x3) GEMMs are slow)
            np.testing.assert_array_equal(run(spec, x, w, bias), y)  # deterministic
    # the host filters' transform was cached once
    assert transformed_weights.count("winograd") == before + 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv1d_groups_through_the_front_end(dtype):
    # 1-D (H = kH = 1), two groups, batch 2, bias, padding "same" with an
    # even kernel (asymmetric: 1 left, 2 right).
    rng = np.random.default_rng(7)
    x = random_array(rng, (2, 4, 11), dtype)
    w = random_array(rng, (6, 2, 4), dtype)
    bias = random_array(rng, (6,), dtype)
    y = kernels.conv1d(x, w, bias, padding="same", groups=2,
                       algorithm="winograd", backend="cuda")
    assert_within_bound("winograd", y, x, w, bias, padding="same", groups=2)


def test_conv2d_non_square_kernel_no_bias():
    rng = np.random.default_rng(8)
    x = random_array(rng, (1, 2, 6, 8), np.float32)
    w = random_array(rng, (3, 2, 2, 5), np.float32)
    padding = (0, 1, 2, 2)
    y = cw.KERNELS[("conv2d", "winograd")].run(_spec(x, w, padding), x, w, None)
    _check_conv(y, x, w, None, padding)


def test_device_arrays_in_device_array_out():
    rng = np.random.default_rng(9)
    x = random_array(rng, (1, 2, 1, 9), np.float64)
    w = random_array(rng, (3, 2, 1, 3), np.float64)
    bias = random_array(rng, (3,), np.float64)
    padding = (0, 0, 2, 1)
    spec = _spec(x, w, padding)
    y = cw.KERNELS[("conv2d", "winograd")].run(
        spec, cuda.to_device(x), cuda.to_device(w), cuda.to_device(bias))
    assert is_device_array(y)
    assert y.shape == spec.out_shape and y.dtype == np.float64
    _check_conv(y.copy_to_host(), x, w, bias, padding)
    # the scratch of this thread is dropped
    assert cw._workspace.buffers
    cw.KERNELS[("winograd_clear_workspace", "winograd")].run()
    assert not cw._workspace.buffers


def test_transform_weights_and_pretransformed_round_trip():
    # Public front end: transform once on the device, reuse; and a
    # CPU-made transform runs on the CUDA backend too.
    rng = np.random.default_rng(10)
    x = random_array(rng, (2, 2, 3, 7), np.float32)
    w = random_array(rng, (4, 1, 1, 3), np.float32)
    bias = random_array(rng, (4,), np.float32)
    tw = winograd.transform_weights(w, m=2, groups=2, backend="cuda")
    assert is_device_array(tw.U) and tw.U.shape == (2, 4, 2, 1)
    assert isinstance(tw.weights, np.ndarray) and tw.tile == Tile(1, 2, 1, 3)
    y = winograd.conv2d(x, tw, bias, padding=(0, 1), backend="cuda")
    assert_within_bound("winograd", y, x, w, bias, padding=(0, 1), groups=2)
    cpu_tw = winograd.transform_weights(w, m=2, groups=2, backend="cpu")
    y_cpu_tw = winograd.conv2d(x, cpu_tw, bias, padding=(0, 1), backend="cuda")
    np.testing.assert_array_equal(y_cpu_tw, y)    # same U bits, same kernels


# --------------------------------------------------------------------------
# What Winograd computes: the CPU's rule, and the tile
# --------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    ((1, 2, 8, 8), (3, 2, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 2, 8, 8), (3, 2, 3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    ((1, 2, 8, 8), (3, 2, 3, 3), (1, 1), (0, 0, 0, 0), (1, 2), 1),
    ((1, 2, 9, 9), (3, 2, 8, 8), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    ((1, 2, 2, 8), (3, 2, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((1, 4, 1, 8), (4, 2, 1, 5), (1, 1), (0, 0, 2, 2), (1, 1), 2),
])
def test_unsupported_reason_is_the_cpus(config):
    spec = ConvSpec.from_config(*config)
    cpu = _dispatch.find("conv2d", "cpu", "winograd").reason(spec)
    assert cw.KERNELS[("conv2d", "winograd")].reason(spec) == cpu
    with use_tile(9):
        cpu = _dispatch.find("conv2d", "cpu", "winograd").reason(spec)
        assert cw.KERNELS[("conv2d", "winograd")].reason(spec) == cpu


def test_unsupported_configuration_raises_before_any_launch():
    x = np.zeros((1, 1, 8, 8), np.float32)
    w = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(UnsupportedConfiguration, match="stride-1"):
        kernels.conv2d(x, w, stride=2, algorithm="winograd", backend="cuda")


def test_tile_for_problem():
    assert cw.tile_for_problem((3, 3), (56, 56), 1) == Tile(4, 4, 3, 3)
    # 4 tiles of F(4x4, 3x3): too few for the tuple GEMMs, m = 2
    assert cw.tile_for_problem((3, 3), (8, 8), 1) == Tile(2, 2, 3, 3)
    assert cw.tile_for_problem((1, 3), (1, 200), 1) == Tile(1, 4, 1, 3)
    assert cw.tile_for_problem((7, 7), (5, 5), 1) == Tile(2, 2, 7, 7)


def test_generated_kernels_hold_the_transform_constants():
    source = cw.kernel_source("output", Tile(4, 4, 3, 3), np.float32)
    assert "DT(8.0) * " in source        # A^T of F(4, 3): the point 2, cubed
    assert "m[g, 35, kl, t]" in source   # all 36 tuple positions, unrolled
