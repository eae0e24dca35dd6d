"""Winograd with the filters transformed inside the tuple GEMMs
(kernels/cpu/_winograd_streamed.py, winograd.conv2d_streamed).

* The in-job filter transform against G g G^T in float64 (the
  definition), within the rounding of two passes of at most r terms, in
  blocks of input channels of any size, and its NaN/Inf flag.
* The streamed GEMMs against the cached path's GEMM on that same U: the
  same chains of multiply-adds, so the same bits, however the input
  channels are split into blocks and the tiles into register tiles; with
  the output transform inside the jobs, against the GEMM followed by the
  staged output transform (the same bits).
* End to end against ``reference.conv2d`` with the tile's documented
  error constant, through the front end: no weight cache, no pass of the
  front end's own over the filter, NaN/Inf in the filter to direct.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import _arrays
from kernels._weight_cache import transformed_weights
from kernels._winograd_math import tile_for, transform_matrices
from kernels.accuracy import unit_roundoff
from kernels.cpu import _tuning, _winograd_gemm
from kernels.cpu import _winograd_streamed as streamed
from kernels.cpu import winograd as impl
from helpers import assert_within_bound

DTYPES = (np.float32, np.float64)
over_dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
over_tiles = pytest.mark.parametrize("m", [2, 4], ids=["F(2,3)", "F(4,3)"])

# Small problems take the staged path (and so this one) when the fused
# path is ruled out.
STAGED = dict(fused_max_u_bytes=0)


def width(dtype):
    return streamed.strip_width(np.dtype(dtype))


def lanes(dtype):
    return width(dtype) // streamed.TILE_VECTORS


def transform64(w, m):
    """U[p, c, k] = (G w[k, c] G^T)[p] and its scale (|G| |w| |G|^T), in
    float64 from the float64 matrices."""
    _, G, _ = transform_matrices(m, 3)
    w64 = w.astype(np.float64)
    U = np.einsum("ai,kcij,bj->abck", G, w64, G)
    scale = np.einsum("ai,kcij,bj->abck", np.abs(G), np.abs(w64), np.abs(G))
    P = G.shape[0] ** 2
    return U.reshape(P, w.shape[1], w.shape[0]), scale.reshape(P, w.shape[1], w.shape[0])


def streamed_u(w, tile, c_block):
    """The U the streamed GEMM makes, strip by strip and block by block,
    as (P, C, K)."""
    dtype = w.dtype
    K, C = w.shape[:2]
    P = tile.alpha_h * tile.alpha_w
    U = np.empty((P, C, K), dtype)
    finite = True
    for strip in range(K // width(dtype)):
        for c_lo in range(0, C, c_block):
            nc = min(c_block, C - c_lo)
            block, ok = streamed.transform_strip(
                streamed.filter_tag(tile), w, strip, c_lo, nc, P)
            k0 = strip * width(dtype)
            U[:, c_lo:c_lo + nc, k0:k0 + width(dtype)] = block
            finite = finite and ok
    return U, finite


# --------------------------------------------------------------------------
# The filter transform
# --------------------------------------------------------------------------

@over_dtypes
@over_tiles
@pytest.mark.parametrize("channels, c_block", [(32, 32), (21, 32), (40, 16),
                                               (7, 4)])
def test_in_job_transform_is_g_w_gt_within_its_rounding(dtype, m, channels,
                                                        c_block):
    """Blocks of any number of channels, two strips: within 8 u of |G|
    |w| |G|^T (each of the two passes sums at most 3 rounded products of
    rounded coefficients)."""
    rng = np.random.default_rng(31)
    w = rng.standard_normal((2 * width(dtype), channels, 3, 3)).astype(dtype)
    tile = tile_for((3, 3), m)
    U, finite = streamed_u(w, tile, c_block)
    U64, scale = transform64(w, m)
    assert finite
    err = np.abs(U.astype(np.float64) - U64)
    assert (err <= 8 * unit_roundoff(dtype) * scale).all(), (
        err / (unit_roundoff(dtype) * scale)).max()


@over_dtypes
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_in_job_transform_flags_every_non_finite_tap(dtype, special):
    """Any tap of any filter of either strip, first or last channel,
    makes the block non-finite."""
    rng = np.random.default_rng(32)
    C = lanes(dtype) + 3
    base = rng.standard_normal((2 * width(dtype), C, 3, 3)).astype(dtype)
    tile = tile_for((3, 3), 4)
    assert streamed_u(base, tile, C)[1]
    wd = width(dtype)
    for where in [(0, 0, 0, 0), (wd - 1, lanes(dtype) - 1, 2, 2),
                  (wd + 5, 3, 1, 0), (2 * wd - 1, C - 1, 2, 2),
                  (7, lanes(dtype), 0, 1)]:
        w = base.copy()
        w[where] = special
        assert not streamed_u(w, tile, C)[1], where


def test_mirror_rows_of_g_share_their_partial_sums():
    """F(4,3)'s rows for the points +-1 and +-2 are mirror pairs; F(2,3)'s
    +-1; the pairing is exact (G[a2] = G[a] with odd entries negated)."""
    for m, pairs in [(4, [(1, 2), (3, 4)]), (2, [(1, 2)])]:
        _, G, _ = transform_matrices(m, 3)
        found = [row[1:] for row in streamed._mirror_pairs(G) if row[0] == "pair"]
        assert found == pairs
        for a, a2 in found:
            np.testing.assert_array_equal(G[a2], G[a] * [1, -1, 1])


# --------------------------------------------------------------------------
# The GEMMs
# --------------------------------------------------------------------------

@over_dtypes
@over_tiles
@pytest.mark.parametrize("n_tiles, channels, c_block",
                         [(16, 64, 32), (13, 40, 16), (5, 24, 32), (1, 17, 8),
                          (7, 32, 32)])
def test_streamed_gemm_equals_the_cached_gemm_on_its_u(dtype, m, n_tiles,
                                                       channels, c_block):
    """M[p] = V[p] @ U[p] with U made inside the jobs equals the cached
    path's GEMM on the same U bit for bit: one chain of multiply-adds per
    output in c = 0, 1, ..., whether the channels come in one block or
    several (sums kept in the job's buffer between them) and whatever the
    register tiles' rows (1..6)."""
    rng = np.random.default_rng(33)
    tile = tile_for((3, 3), m)
    P = tile.alpha_h * tile.alpha_w
    K = 2 * width(dtype)
    w = rng.standard_normal((K, channels, 3, 3)).astype(dtype)
    V = rng.standard_normal((P, n_tiles, channels)).astype(dtype)
    M = np.full((P, n_tiles, K), np.nan, dtype)
    assert streamed.streamed_gemm(tile, V, w, M, c_block)
    U, _ = streamed_u(w, tile, c_block)
    expected = _winograd_gemm.tuple_gemm(
        V, _winograd_gemm.pack(U, width(dtype)), np.empty_like(M), 1)
    np.testing.assert_array_equal(M, expected)


@over_dtypes
@over_tiles
@pytest.mark.parametrize("n_img, out_hw, channels, c_block, bias", [
    (2, (9, 10), 40, 16, True), (1, (7, 7), 17, 32, False),
    (3, (5, 6), 24, 8, True)])
def test_streamed_conv_equals_the_gemm_then_the_output_transform(
        dtype, m, n_img, out_hw, channels, c_block, bias):
    """The output transform inside the GEMM's jobs (each strip's M from
    the job's buffer) writes what :func:`streamed_gemm` followed by the
    staged :func:`winograd.transform_output` writes, bit for bit: into
    the channels from ``k0`` of a wider y (a group), with and without
    bias, the other channels untouched."""
    rng = np.random.default_rng(37)
    tile = tile_for((3, 3), m)
    P = tile.alpha_h * tile.alpha_w
    K = 2 * width(dtype)
    tiles_hw = impl.tile_counts(out_hw, tile)
    n_tiles = n_img * tiles_hw[0] * tiles_hw[1]
    w = rng.standard_normal((K, channels, 3, 3)).astype(dtype)
    V = rng.standard_normal((P, n_tiles, channels)).astype(dtype)
    b = rng.standard_normal(K + 5).astype(dtype) if bias else None
    shape = (n_img, K + 5) + out_hw
    y = np.full(shape, np.nan, dtype)
    assert streamed.streamed_conv(tile, V, w, y, b, 3, tiles_hw, c_block)
    M = np.empty((P, n_tiles, K), dtype)
    assert streamed.streamed_gemm(tile, V, w, M, c_block)
    expected = np.full(shape, np.nan, dtype)
    impl.transform_output(M, tile, shape, bias=b, channels=(3, K),
                          out=expected)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("n_tiles, expected", [(16, 32), (31, 32), (32, 64),
                                               (64, 64)])
def test_streamed_c_block_grows_with_the_tiles(n_tiles, expected):
    """The documented rule: blocks of 32 input channels below 32 tiles in
    the batch, of 64 from there."""
    assert impl.streamed_c_block(_tuning.WinogradTuning(), n_tiles) == expected


def test_streamed_gemm_reports_a_non_finite_filter():
    rng = np.random.default_rng(34)
    tile = tile_for((3, 3), 4)
    w = rng.standard_normal((128, 20, 3, 3)).astype(np.float32)
    V = rng.standard_normal((36, 6, 20)).astype(np.float32)
    M = np.empty((36, 6, 128), np.float32)
    assert streamed.streamed_gemm(tile, V, w, M, 8)
    w[100, 19, 1, 1] = np.inf
    assert not streamed.streamed_gemm(tile, V, w, M, 8)


# --------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 40), k_strips=st.integers(1, 2),
       h=st.integers(3, 13), w_=st.integers(3, 13), pad=st.integers(0, 2),
       groups=st.sampled_from([1, 2]), m=st.sampled_from([2, 4]),
       dtype=st.sampled_from(DTYPES), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_conv2d_streamed_within_the_tile_error_bound(n, c, k_strips, h, w_, pad,
                                                     groups, m, dtype, bias,
                                                     seed):
    rng = np.random.default_rng(seed)
    kg = k_strips * width(dtype)
    x = rng.standard_normal((n, c * groups, h, w_)).astype(dtype)
    w = rng.standard_normal((kg * groups, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(kg * groups).astype(dtype) if bias else None
    tile = tile_for((3, 3), m)
    y = impl.conv2d_streamed(x, w, b, (pad,) * 4, groups, tile)
    assert_within_bound("winograd", y, x, w, b, padding=pad, groups=groups)


def test_front_end_streams_without_the_weight_cache_or_a_filter_pass(monkeypatch):
    """Through ``kernels.conv2d``: the problem streams (the rule says so),
    nothing enters the weight cache, the front end makes no pass over the
    filter, and the result is within Winograd's bound."""
    rng = np.random.default_rng(35)
    x = rng.standard_normal((2, 24, 9, 10)).astype(np.float32)
    w = rng.standard_normal((128, 24, 3, 3)).astype(np.float32)
    transformed_weights.clear()
    checked = []
    real = _arrays.all_finite
    monkeypatch.setattr(_arrays, "all_finite",
                        lambda a: checked.append(a.shape) or real(a))
    with _tuning.override(winograd=STAGED):
        tile = impl._problem_tile(x.shape, w.shape, (1, 1), (1, 1, 1, 1),
                                  (1, 1), 1, 4, _tuning.current().winograd,
                                  None, _tuning.block_shape_threads())[1]
        assert impl._streams_filters(tile, x.shape, w.shape, 1, (1, 1, 1, 1), 4,
                                     _tuning.current().winograd,
                                     _tuning.block_shape_threads())
        y = kernels.conv2d(x, w, padding=1, algorithm="winograd")
    assert_within_bound("winograd", y, x, w, padding=1)
    assert transformed_weights.count("winograd") == 0
    assert w.shape not in checked and x.shape not in checked


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_non_finite_filter_on_the_streamed_path_goes_to_direct(special):
    rng = np.random.default_rng(36)
    x = rng.standard_normal((1, 16, 8, 8)).astype(np.float32)
    w = rng.standard_normal((64, 16, 3, 3)).astype(np.float32)
    w[63, 15, 2, 0] = special
    with _tuning.override(winograd=STAGED):
        y = kernels.conv2d(x, w, padding=1, algorithm="winograd")
    np.testing.assert_array_equal(
        y, kernels.conv2d(x, w, padding=1, algorithm="direct"))


@pytest.mark.parametrize("shape, streams", [
    ((4, 512, 7, 7), True),        # ResNet-50's last 3x3 at batch 4: 16 tiles
    ((1, 256, 14, 14), True),      # 256@14^2 at batch 1: 16 tiles
    ((8, 512, 7, 7), True),        # 32 tiles
    ((32, 512, 7, 7), False),      # 128 tiles: U serves enough of them
    ((1, 64, 56, 56), False),      # the fused path (small U)
])
def test_rule_streams_deep_layers_with_few_tiles(shape, streams):
    C = shape[1]
    w_shape = (C, C, 3, 3)
    tuning = _tuning.current().winograd
    tile = impl._problem_tile(shape, w_shape, (1, 1), (1, 1, 1, 1), (1, 1), 1,
                              4, tuning, None, _tuning.block_shape_threads())[1]
    assert impl._streams_filters(tile, shape, w_shape, 1, (1, 1, 1, 1), 4,
                                 tuning, _tuning.block_shape_threads()) is streams


@pytest.mark.parametrize("w_shape", [(128, 128, 3, 3), (64, 256, 3, 3)])
def test_rule_streams_fused_problems_whose_u_leaves_the_cache(w_shape):
    """28^2 at batch 1 (49 tiles, F(4,3)) runs fused through the cache;
    it streams where its U is above the bound and every thread has a
    strip of output channels (K = 128: two strips; K = 64: one)."""
    shape = (1, w_shape[1], 28, 28)
    tile = tile_for((3, 3), 4)
    base = _tuning.current().winograd
    u_bytes = 36 * w_shape[0] * w_shape[1] * 4
    strips = w_shape[0] // width(np.float32)

    def streams(bound, threads):
        tuning = type(base)(**{**base.__dict__,
                               "streamed_min_fused_u_bytes": bound})
        layout = impl._layout(tile, shape, w_shape[1], w_shape[0],
                              (1, 1, 1, 1), 4, tuning, None, threads)
        assert layout.fused_blocks is not None
        return impl._streams_filters(tile, shape, w_shape, 1, (1, 1, 1, 1),
                                     4, tuning, threads)

    assert streams(u_bytes - 1, 2) is (strips >= 2)
    assert streams(u_bytes - 1, 1)
    assert not streams(u_bytes, 1)


def test_rule_needs_whole_strips_and_a_streamed_tile():
    tuning = _tuning.current().winograd
    threads = _tuning.block_shape_threads()
    tile = tile_for((3, 3), 4)
    k = width(np.float32) + 8                  # a strip and a half-vector
    assert not impl._streams_filters(tile, (4, 512, 7, 7), (k, 512, 3, 3), 1,
                                     (1, 1, 1, 1), 4, tuning, threads)
    assert impl._streams_filters(tile, (4, 512, 7, 7), (k - 8, 512, 3, 3), 1,
                                 (1, 1, 1, 1), 4, tuning, threads)
    tile5 = tile_for((5, 5), 4)
    assert not impl._streams_filters(tile5, (4, 512, 9, 9), (512, 512, 5, 5), 1,
                                     (2, 2, 2, 2), 4, tuning, threads)


@pytest.mark.parametrize("shape, m", [
    # 14^2 at batch 1: F(4,3)'s 16 tiles overhang to 16^2, F(2,3)'s 49
    # cover 14^2; 16 (16 + 49) < 36 (16 + 16) with the filter term 16.
    ((1, 256, 14, 14), 2),
    ((1, 512, 14, 14), 2),
    ((4, 512, 7, 7), 4),           # 36 (16 + 16) < 16 (64 + 16)
    ((2, 256, 14, 14), 4),         # F(2,3)'s 98 tiles would not stream
    ((1, 256, 28, 28), 4),         # nor its 196
])
def test_streamed_problems_take_the_tile_of_least_modelled_cost(shape, m):
    C = shape[1]
    tuning = _tuning.current().winograd
    threads = _tuning.block_shape_threads()
    tile = impl._problem_tile(shape, (C, C, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1),
                              1, 4, tuning, None, threads)[1]
    assert (tile.m_h, tile.m_w) == (m, m)
    assert impl._streams_filters(tile, shape, (C, C, 3, 3), 1, (1, 1, 1, 1), 4,
                                 tuning, threads)


def test_filter_term_zero_keeps_the_larger_tile():
    """The filter transforms are what tips 256@14^2 to F(2,3): without
    them in the model the multiplies alone favour F(4,3)."""
    shape, w_shape = (1, 256, 14, 14), (256, 256, 3, 3)
    tuning = _tuning.current().winograd
    no_filters = type(tuning)(**{**tuning.__dict__,
                                 "streamed_filter_tiles": 0})
    tile = impl._problem_tile(shape, w_shape, (1, 1), (1, 1, 1, 1), (1, 1), 1,
                              4, no_filters, None,
                              _tuning.block_shape_threads())[1]
    assert tile.m_h == 4


def test_front_end_runs_the_cheaper_streamed_tile():
    """``kernels.conv2d`` on a problem the rule gives F(2,3) returns the
    F(2,3) streamed path's bits, within Winograd's bound."""
    rng = np.random.default_rng(37)
    x = rng.standard_normal((1, 256, 14, 14)).astype(np.float32)
    w = rng.standard_normal((256, 256, 3, 3)).astype(np.float32)
    y = kernels.conv2d(x, w, padding=1, algorithm="winograd")
    np.testing.assert_array_equal(
        y, impl.conv2d_streamed(x, w, None, (1, 1, 1, 1), 1,
                                tile_for((3, 3), 2)))
    assert_within_bound("winograd", y, x, w, padding=1)
