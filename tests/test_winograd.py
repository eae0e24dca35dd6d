"""Winograd F(m x m, r x r) convolution (kernels/cpu/winograd.py, kernels/winograd.py).

* Every generated transform triple (A^T, G, B^T) is checked EXACTLY, in
  rational arithmetic, against direct correlation of random integer
  signals and tiles (1-D, and the 2-D nesting, square and not).
* Each stage is checked against its mathematical definition, computed in
  float64 NumPy from the exact matrices: kernel transform G g G^T, input
  transform B^T d B of every tile of the zero-padded input, the tuple
  GEMMs, and the output transform A^T M A (+ bias) with partial edge tiles
  clipped (outputs pre-filled with NaN, as NNPACK's testers do, so an
  unwritten element shows).
* End to end, every tile in both dtypes is held to its documented error
  constant against ``reference.conv2d``, with the *normwise* scale
  ``max(|x| * |w| + |bias|)`` (see ERROR_CONSTANTS_BY_TILE for why).
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
import reference
from kernels import winograd
from kernels._weight_cache import WeightTransformCache, transformed_weights
from kernels.accuracy import unit_roundoff
from kernels.cpu import _tuning
from kernels.cpu import winograd as impl
from helpers import assert_within_bound

DTYPES = (np.float32, np.float64)
over_dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])

# Every 1-D tile the module can build: r = 1..7, alpha = m + r - 1 <= MAX_ALPHA
# (an r = 1 axis always uses m = 1).
ALL_TILES = sorted(winograd.ERROR_CONSTANTS_BY_TILE)
TILE_IDS = [f"F({m},{r})" for m, r in ALL_TILES]
over_tiles = pytest.mark.parametrize("m, r", ALL_TILES, ids=TILE_IDS)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def exact(rows):
    return [[Fraction(v) for v in row] for row in rows]


def matvec(A, v):
    return [sum((a * b for a, b in zip(row, v)), Fraction(0)) for row in A]


def matmul(A, B):
    return [[sum((A[i][k] * B[k][j] for k in range(len(B))), Fraction(0))
             for j in range(len(B[0]))] for i in range(len(A))]


def transpose(A):
    return [list(col) for col in zip(*A)]


def random_integers(rng, shape):
    return rng.integers(-9, 10, shape).tolist()


def floats(rows):
    return np.array([[float(v) for v in row] for row in rows])


def normwise_check(y, x, w, bias, tile, padding, what):
    """|y - y_ref| <= c u max(|x| * |w| + |bias|) + tiny, c of the tile."""
    dtype = x.dtype
    y_ref = reference.conv2d(x.astype(np.float64), w.astype(np.float64),
                             None if bias is None else bias.astype(np.float64),
                             padding=padding)
    scale = reference.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                             None if bias is None else np.abs(bias).astype(np.float64),
                             padding=padding)
    assert y.shape == y_ref.shape and y.dtype == dtype, (what, y.shape, y_ref.shape)
    c = winograd.error_constant(tile, dtype)
    bound = c * unit_roundoff(dtype) * scale.max() + 8 * np.finfo(dtype).tiny
    err = np.abs(y.astype(np.float64) - y_ref)
    assert err.max() <= bound, (
        f"{what}: max error {err.max():.3e} > bound {bound:.3e} (c = {c}); "
        f"observed c = {err.max() / (unit_roundoff(dtype) * scale.max()):.1f}")


def padded(x, padding):
    """x zero-padded by (top, bottom, left, right): reference.conv2d takes
    only symmetric padding, so asymmetric cases compare as valid convs."""
    top, bottom, left, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def random_problem(rng, dtype, n=2, c=3, k=4, hw=(9, 11), kernel=(3, 3),
                   bias=True):
    x = rng.standard_normal((n, c) + tuple(hw)).astype(dtype)
    w = rng.standard_normal((k, c) + tuple(kernel)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    return x, w, b


# --------------------------------------------------------------------------
# Generated transforms: exact
# --------------------------------------------------------------------------

def test_interpolation_points_are_distinct_and_extend_each_other():
    """One point sequence: alpha - 1 distinct points, each row a prefix of
    the next (so every tile of a given alpha uses the same points)."""
    rows = winograd.INTERPOLATION_POINTS
    for alpha, points in rows.items():
        assert len(points) == alpha - 1 and len(set(points)) == len(points), alpha
        if alpha + 1 in rows:
            assert rows[alpha + 1][:alpha - 1] == points, alpha


@over_tiles
def test_generated_transforms_compute_1d_correlation_exactly(m, r):
    """A^T ((G g) * (B^T d)) == sum_i g[i] d[t + i] in rational arithmetic."""
    AT, G, BT = (exact(M) for M in winograd.cook_toom(m, r))
    alpha = m + r - 1
    assert (len(AT), len(AT[0]), len(G), len(G[0]), len(BT), len(BT[0])) == (
        m, alpha, alpha, r, alpha, alpha)
    rng = np.random.default_rng(1000 * m + r)
    for _ in range(4):
        d = [Fraction(v) for v in random_integers(rng, alpha)]
        g = [Fraction(v) for v in random_integers(rng, r)]
        products = [u * v for u, v in zip(matvec(G, g), matvec(BT, d))]
        y = matvec(AT, products)
        direct = [sum(g[i] * d[t + i] for i in range(r)) for t in range(m)]
        assert y == direct, f"F({m}, {r}): {y} != {direct} for d={d}, g={g}"


@pytest.mark.parametrize("tile_h, tile_w", [((2, 3), (2, 3)), ((4, 3), (4, 3)),
                                            ((6, 3), (6, 3)), ((4, 5), (4, 5)),
                                            ((2, 7), (2, 7)), ((4, 3), (2, 5)),
                                            ((1, 1), (4, 7)), ((3, 4), (5, 2))],
                         ids=lambda t: f"F{t}")
def test_generated_transforms_nest_into_exact_2d_correlation(tile_h, tile_w):
    """A_h^T [(G_h g G_w^T) * (B_h^T d B_w)] A_w == 2-D correlation, exactly."""
    (m_h, r_h), (m_w, r_w) = tile_h, tile_w
    ATh, Gh, BTh = (exact(M) for M in winograd.cook_toom(m_h, r_h))
    ATw, Gw, BTw = (exact(M) for M in winograd.cook_toom(m_w, r_w))
    rng = np.random.default_rng(7)
    d = exact(random_integers(rng, (m_h + r_h - 1, m_w + r_w - 1)))
    g = exact(random_integers(rng, (r_h, r_w)))
    U = matmul(matmul(Gh, g), transpose(Gw))
    V = matmul(matmul(BTh, d), transpose(BTw))
    M = [[u * v for u, v in zip(ur, vr)] for ur, vr in zip(U, V)]
    Y = matmul(matmul(ATh, M), transpose(ATw))
    direct = [[sum(g[i][j] * d[a + i][b + j] for i in range(r_h) for j in range(r_w))
               for b in range(m_w)] for a in range(m_h)]
    assert Y == direct


def test_cook_toom_rejects_bad_point_sets():
    with pytest.raises(ValueError, match="distinct"):
        winograd.cook_toom(2, 3, (0, 1, 1))
    with pytest.raises(ValueError, match="distinct"):
        winograd.cook_toom(2, 3, (0, 1))
    with pytest.raises(ValueError, match="alpha"):
        winograd.cook_toom(9, 3)


def test_float_transforms_of_the_data_are_exact_in_float32():
    """A^T and B^T (applied to the data in its own dtype) round nothing:
    every entry is a dyadic rational that float32 holds exactly; G (applied
    in float64) is the exact G rounded once."""
    for m, r in ALL_TILES:
        AT_exact, G_exact, BT_exact = winograd.cook_toom(m, r)
        AT, G, BT = winograd.transform_matrices(m, r, np.float32)
        for computed, exact_rows in ((AT, AT_exact), (BT, BT_exact)):
            assert computed.dtype == np.float32
            assert [[Fraction(float(v)) for v in row] for row in computed] == \
                [list(row) for row in exact_rows], f"F({m},{r})"
        assert G.dtype == np.float64
        np.testing.assert_array_equal(G, floats(G_exact))


# --------------------------------------------------------------------------
# Stages against their definitions
# --------------------------------------------------------------------------

STAGE_TILES = [(2, 3, 2, 3), (2, 2, 3, 3), (4, 4, 3, 3), (6, 6, 3, 3), (4, 2, 5, 3),
               (1, 4, 1, 7), (3, 2, 6, 4)]
over_stage_tiles = pytest.mark.parametrize(
    "tile", [impl.Tile(*t) for t in STAGE_TILES],
    ids=[f"F({a}x{b},{c}x{d})" for a, b, c, d in STAGE_TILES])


def exact_float_matrices(tile):
    ATh, Gh, BTh = (floats(M) for M in winograd.cook_toom(tile.m_h, tile.r_h))
    ATw, Gw, BTw = (floats(M) for M in winograd.cook_toom(tile.m_w, tile.r_w))
    return (ATh, Gh, BTh), (ATw, Gw, BTw)


@over_stage_tiles
def test_kernel_transform_is_g_w_gt(tile):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, tile.r_h, tile.r_w))
    (_, Gh, _), (_, Gw, _) = exact_float_matrices(tile)
    U = impl.transform_kernel(w, tile)
    expected = np.einsum("ai,kcij,bj->abck", Gh, w, Gw).reshape(-1, 3, 5)
    np.testing.assert_allclose(U, expected, rtol=1e-13, atol=1e-13)


@over_stage_tiles
@pytest.mark.parametrize("padding", [(0, 0, 0, 0), (1, 2, 0, 3)])
def test_input_transform_is_bt_d_b_of_every_tile(tile, padding):
    """V[a alpha_w + b, t, c] = (B_h^T d B_w)[a, b], d the tile's patch of
    the zero-padded input (zeros also past its end, for partial tiles)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 10, 13))
    ho = 10 + padding[0] + padding[1] - tile.r_h + 1
    wo = 13 + padding[2] + padding[3] - tile.r_w + 1
    V = impl.transform_input(x, tile, padding, (ho, wo))
    th, tw = impl.tile_counts((ho, wo), tile)
    (_, _, BTh), (_, _, BTw) = exact_float_matrices(tile)
    xp = np.zeros((2, 3, th * tile.m_h + tile.alpha_h, tw * tile.m_w + tile.alpha_w))
    p = padded(x, padding)
    xp[:, :, :p.shape[2], :p.shape[3]] = p
    assert V.shape == (tile.alpha_h * tile.alpha_w, 2 * th * tw, 3)
    for n in range(2):
        for i in range(th):
            for j in range(tw):
                d = xp[n, :, i * tile.m_h:i * tile.m_h + tile.alpha_h,
                       j * tile.m_w:j * tile.m_w + tile.alpha_w]
                expected = np.einsum("ak,ckl,bl->abc", BTh, d, BTw)
                t = (n * th + i) * tw + j
                np.testing.assert_allclose(V[:, t, :], expected.reshape(-1, 3),
                                           rtol=1e-12, atol=1e-12)


UNROLLED = sorted(impl.UNROLLED_TILES)


def test_unrolled_transforms_are_what_the_generator_writes():
    """kernels/cpu/_winograd_unrolled.py is generated: it must be rewritten
    (python -m kernels.cpu._winograd_codegen) whenever the generator, the
    transforms or the list of tiles change."""
    from kernels.cpu import _winograd_codegen
    assert _winograd_codegen.TARGET.read_text() == _winograd_codegen.generate()
    assert tuple(UNROLLED) == tuple(sorted(_winograd_codegen.UNROLLED_TILES))


@over_dtypes
@pytest.mark.parametrize("m, r", UNROLLED, ids=[f"F({m},{r})" for m, r in UNROLLED])
@pytest.mark.parametrize("channels", [(3, 5), (64, 64), (70, 130)])
def test_unrolled_transforms_equal_the_generic_passes(monkeypatch, dtype, m, r,
                                                      channels):
    """The unrolled transforms sum in the generic passes' order, so every
    stage and both paths give the same bits (channel counts below, at and
    past the unrolled code's run of 64 channels; partial edge tiles)."""
    c, k = channels
    rng = np.random.default_rng(31)
    tile = impl.tile_for((r, r), m)
    assert impl._unrolled_code(tile) > 0
    x, w, b = random_problem(rng, dtype, n=2, c=c, k=k, hw=(2 * m + 3, 3 * m + 1),
                             kernel=(r, r))
    padding = (1, 0, 2, 1)
    ho, wo = x.shape[2] + 1 - r + 1, x.shape[3] + 3 - r + 1
    transformed = impl.transform_weights(w, tile)

    def run():
        V = impl.transform_input(x, tile, padding, (ho, wo))
        M = impl.tuple_gemm(V, transformed.U[0])
        y = impl.transform_output(M, tile, (2, k, ho, wo), b)
        paths = [impl.conv2d_transformed(x, transformed, b, padding, path=p)
                 for p in ("fused", "staged")]
        return [V.copy(), M, y] + paths

    unrolled = run()
    monkeypatch.setattr(impl, "_unrolled_code", lambda tile: 0)
    generic = run()
    for name, a, g in zip(["V", "M", "y", "fused", "staged"], unrolled, generic):
        np.testing.assert_array_equal(a, g, err_msg=name)


@over_dtypes
def test_tuple_gemm_is_one_matrix_product_per_coefficient(dtype):
    rng = np.random.default_rng(2)
    for planes, tiles, c, k in [(36, 50, 7, 5), (1, 300, 3, 4), (16, 1, 2, 9)]:
        V = rng.standard_normal((planes, tiles, c)).astype(dtype)
        U = rng.standard_normal((planes, c, k)).astype(dtype)
        M = impl.tuple_gemm(V, U)
        expected = np.einsum("ptc,pck->ptk", V.astype(np.float64), U.astype(np.float64))
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(M, expected, rtol=tol, atol=tol)


@over_dtypes
def test_packed_tuple_gemm_matches_float64_products_for_any_split(dtype):
    """The register-tile GEMM over packed strips of U: K past a strip
    boundary and tile counts not multiples of the register tile's rows;
    every split into jobs (min_jobs) and the fused blocks' serial product
    give the same bits, each within float rounding of the float64 product."""
    from kernels.cpu import _winograd_gemm as wgemm
    rng = np.random.default_rng(12)
    width = wgemm.strip_width(dtype)
    for planes, tiles, c, k in [(4, 13, 9, width + 3), (2, 7, 70, 2 * width),
                                (3, 1, 5, 1)]:
        V = rng.standard_normal((planes, tiles, c)).astype(dtype)
        U = rng.standard_normal((planes, c, k)).astype(dtype)
        packed = wgemm.pack(U, width)
        assert packed.shape == (planes, -(-k // width), c, width)
        expected = np.einsum("ptc,pck->ptk", V.astype(np.float64), U.astype(np.float64))
        scale = np.einsum("ptc,pck->ptk", np.abs(V).astype(np.float64),
                          np.abs(U).astype(np.float64))
        results = [wgemm.tuple_gemm(V, packed, np.full((planes, tiles, k), np.nan, dtype),
                                    min_jobs)
                   for min_jobs in (1, 8, 1000)]
        serial = np.full((planes, tiles, k), np.nan, dtype)
        wgemm.block_gemm(V, packed, serial)
        for M in results[1:] + [serial]:
            np.testing.assert_array_equal(M, results[0])
        err = np.abs(results[0] - expected)
        assert (err <= c * unit_roundoff(dtype) * scale).all()


def test_transformed_weights_keep_the_packed_u_and_count_it():
    from kernels.cpu import _winograd_gemm as wgemm
    rng = np.random.default_rng(13)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    tw = impl.transform_weights(w, impl.tile_for((3, 3), 2), groups=3)
    assert len(tw.derived) == 3
    for g in range(3):
        packed = wgemm.packed_weights(tw, g)
        assert packed is wgemm.packed_weights(tw, g)
        np.testing.assert_array_equal(packed[:, 0, :, :2], tw.U[g])
        assert not packed[:, 0, :, 2:].any()
    assert tw.nbytes == w.nbytes + tw.U.nbytes + sum(a.nbytes for a in tw.derived.values())


@over_stage_tiles
def test_output_transform_is_at_m_a_plus_bias_clipped(tile):
    """Every output element written exactly once: (A_h^T M_t A_w)[a, b] + bias
    inside (Ho, Wo); the overhang of partial edge tiles dropped."""
    rng = np.random.default_rng(3)
    ho, wo = 2 * tile.m_h + 1, 3 * tile.m_w - 1 if tile.m_w > 1 else 5
    th, tw = impl.tile_counts((ho, wo), tile)
    n, k = 2, 4
    M = rng.standard_normal((tile.alpha_h * tile.alpha_w, n * th * tw, k))
    bias = rng.standard_normal(k)
    y = np.full((n, k, ho, wo), np.nan)
    impl.transform_output(M, tile, y.shape, bias, out=y)
    assert not np.isnan(y).any(), "unwritten outputs"
    (ATh, _, _), (ATw, _, _) = exact_float_matrices(tile)
    full = np.empty((n, k, th * tile.m_h, tw * tile.m_w))
    for nn in range(n):
        for i in range(th):
            for j in range(tw):
                t = (nn * th + i) * tw + j
                Mt = M[:, t, :].reshape(tile.alpha_h, tile.alpha_w, k)
                block = np.einsum("ai,ijk,bj->kab", ATh, Mt, ATw)
                full[nn, :, i * tile.m_h:(i + 1) * tile.m_h,
                     j * tile.m_w:(j + 1) * tile.m_w] = block
    expected = full[:, :, :ho, :wo] + bias[None, :, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_output_transform_writes_only_its_group_channels():
    tile = impl.tile_for((3, 3), 4)
    rng = np.random.default_rng(4)
    M = rng.standard_normal((36, 2 * 2 * 2, 3))
    y = np.full((2, 9, 7, 8), np.nan)
    impl.transform_output(M, tile, y.shape, channels=(3, 3), out=y)
    assert not np.isnan(y[:, 3:6]).any()
    assert np.isnan(y[:, :3]).all() and np.isnan(y[:, 6:]).all()


# --------------------------------------------------------------------------
# End to end: every tile within its documented constant
# --------------------------------------------------------------------------

@over_tiles
@over_dtypes
def test_each_tile_matches_reference_within_its_constant(m, r, dtype):
    """Square F(m x m, r x r) on H, W that are not multiples of m (partial
    edge tiles), asymmetric padding, bias."""
    rng = np.random.default_rng(10 * m + r)
    x, w, b = random_problem(rng, dtype, c=5, hw=(2 * m + r + 1, 3 * m + r - 1),
                             kernel=(r, r))
    padding = (r // 2, (r - 1) // 2 + 1, r - 1, 0)
    with winograd.use_tile(m):
        y = impl.conv2d(x, w, b, (1, 1), padding, (1, 1), 1)
    normwise_check(y, padded(x, padding), w, b, impl.tile_for((r, r), m), 0,
                   f"F({m},{r})")


@over_dtypes
@pytest.mark.parametrize("path", ["fused", "staged"])
@pytest.mark.parametrize("shape", [((2, 8, 20, 21), (6, 8, 3, 3)),
                                   ((3, 5, 9, 30), (4, 5, 5, 3)),
                                   ((1, 4, 1, 200), (3, 4, 1, 7))],
                         ids=["3x3", "5x3", "1x7"])
def test_fused_and_staged_paths_match_reference(dtype, path, shape):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape[0]).astype(dtype)
    w = rng.standard_normal(shape[1]).astype(dtype)
    b = rng.standard_normal(shape[1][0]).astype(dtype)
    padding = (shape[1][2] // 2, shape[1][2] // 2, shape[1][3] // 2, shape[1][3] // 2)
    tw = winograd.transform_weights(w)
    y = impl.conv2d_transformed(x, tw, b, padding, path=path)
    normwise_check(y, padded(x, padding), w, b, tw.tile, 0, path)


@over_dtypes
@pytest.mark.parametrize("kernel", [(3, 5), (5, 3), (1, 7), (7, 1), (2, 4), (6, 6),
                                    (1, 1), (4, 1)])
def test_non_square_kernels_use_a_tile_per_axis(dtype, kernel):
    rng = np.random.default_rng(sum(kernel))
    x, w, b = random_problem(rng, dtype, hw=(11, 12), kernel=kernel)
    y = kernels.conv2d(x, w, b, padding=(kernel[0] // 2, kernel[1] // 2),
                       algorithm="winograd")
    tile = winograd.tile_for(kernel)
    assert tile == (winograd.DEFAULT_TILE_BY_KERNEL[kernel[0]],
                    winograd.DEFAULT_TILE_BY_KERNEL[kernel[1]]) + kernel
    normwise_check(y, x, w, b, tile, (kernel[0] // 2, kernel[1] // 2), f"{kernel}")


@over_dtypes
@pytest.mark.parametrize("groups, c, k", [(2, 6, 4), (3, 3, 3), (4, 8, 8)],
                         ids=["groups2", "depthwise", "groups4"])
def test_groups_run_as_separate_gemms(dtype, groups, c, k):
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((2, c, 10, 9)).astype(dtype)
    w = rng.standard_normal((k, c // groups, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    y = kernels.conv2d(x, w, b, padding=1, groups=groups, algorithm="winograd")
    y_ref = reference.conv2d(x.astype(np.float64), w.astype(np.float64),
                             b.astype(np.float64), padding=1, groups=groups)
    scale = reference.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                             np.abs(b).astype(np.float64), padding=1, groups=groups)
    c_tile = winograd.error_constant(winograd.tile_for((3, 3)), dtype)
    assert np.abs(y - y_ref).max() <= c_tile * unit_roundoff(dtype) * scale.max()


@over_dtypes
def test_conv1d_runs_as_1d_transforms(dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 257)).astype(dtype)
    w = rng.standard_normal((4, 3, 5)).astype(dtype)
    y = kernels.conv1d(x, w, padding=2, algorithm="winograd")
    y_ref = reference.conv1d(x.astype(np.float64), w.astype(np.float64), padding=2)
    scale = reference.conv1d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                             padding=2)
    c_tile = winograd.error_constant(winograd.tile_for((1, 5)), dtype)
    assert winograd.tile_for((1, 5)).alpha_h == 1       # no transform along H
    assert np.abs(y - y_ref).max() <= c_tile * unit_roundoff(dtype) * scale.max()


@st.composite
def stride_one_problems(draw):
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    pads = tuple(draw(st.integers(0, k - 1)) for k in (kh, kh, kw, kw))
    h = draw(st.integers(kh, 14))             # inputs at least as large as the kernel
    w = draw(st.integers(kw, 14))
    groups = draw(st.sampled_from([1, 1, 2]))
    c, k = groups * draw(st.integers(1, 4)), groups * draw(st.integers(1, 3))
    m = draw(st.sampled_from([None, 1, 2, 3, 4]))
    return dict(x_shape=(draw(st.integers(1, 2)), c, h, w), w_shape=(k, c // groups, kh, kw),
                padding=pads, groups=groups, m=m, bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))


@over_dtypes
@settings(deadline=None)
@given(problem=stride_one_problems())
def test_random_stride_one_problems_match_reference(dtype, problem):
    """Any kernel up to 7x7, asymmetric padding, groups, any allowed tile."""
    rng = np.random.default_rng(problem["seed"])
    x = rng.standard_normal(problem["x_shape"]).astype(dtype)
    w = rng.standard_normal(problem["w_shape"]).astype(dtype)
    b = rng.standard_normal(problem["w_shape"][0]).astype(dtype) if problem["bias"] else None
    m = problem["m"]
    tile = winograd.tile_for(problem["w_shape"][2:], m)
    with winograd.use_tile(m):
        y = impl.conv2d(x, w, b, (1, 1), problem["padding"], (1, 1), problem["groups"])
    xp = padded(x, problem["padding"])
    y_ref = reference.conv2d(xp.astype(np.float64), w.astype(np.float64),
                             None if b is None else b.astype(np.float64),
                             groups=problem["groups"])
    scale = reference.conv2d(np.abs(xp).astype(np.float64), np.abs(w).astype(np.float64),
                             None if b is None else np.abs(b).astype(np.float64),
                             groups=problem["groups"])
    bound = (winograd.error_constant(tile, dtype) * unit_roundoff(dtype) * scale.max()
             + 8 * np.finfo(dtype).tiny)
    assert y.shape == y_ref.shape
    assert np.abs(y - y_ref).max() <= bound, (problem, tile)


def test_small_batches_of_tiles_use_the_smaller_tile():
    """Short tuple GEMMs: m = 2 (cheaper transforms, less overhang); else
    the default.  A large U keeps the larger tile down to fewer tiles."""
    assert impl.tile_for_problem((3, 3), (7, 7), 4) == impl.Tile(2, 2, 3, 3)
    assert impl.tile_for_problem((3, 3), (56, 56), 4) == winograd.tile_for((3, 3))
    # 16 tiles: too few for a small U, enough for a large one; 4: too few.
    assert impl.tile_for_problem((3, 3), (14, 14), 1, (64, 64)) == impl.Tile(2, 2, 3, 3)
    assert impl.tile_for_problem((3, 3), (14, 14), 1, (256, 256)) == winograd.tile_for((3, 3))
    assert impl.tile_for_problem((3, 3), (7, 7), 4, (512, 512)) == winograd.tile_for((3, 3))
    assert impl.tile_for_problem((3, 3), (7, 7), 1, (512, 512)) == impl.Tile(2, 2, 3, 3)
    assert impl.tile_for_problem((1, 7), (1, 9), 1) == impl.Tile(1, 2, 1, 7)
    for m, r in ALL_TILES:                      # never a less accurate tile
        small = impl.tile_for_problem((r, r), (3, 3), 1)
        assert (winograd.error_constant(small, np.float32)
                <= winograd.error_constant(winograd.tile_for((r, r)), np.float32))


@pytest.mark.parametrize("hw", [(32, 32), (31, 33), (16, 64)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_channels_last_copy(hw, dtype):
    """The copies (row by row where the plane stride is a multiple of 4096
    bytes, column by column otherwise, NumPy's for other strides) give the
    zero-padded channels-last input of the requested channels."""
    rng = np.random.default_rng(21)
    contiguous = rng.standard_normal((2, 5) + hw).astype(dtype)
    strided = rng.standard_normal((2, 5, hw[0], 2 * hw[1])).astype(dtype)[..., ::2]
    top, left, rows, cols = 2, 1, hw[0] + 5, hw[1] + 4
    for x in (contiguous, strided):
        xp, finite = impl._padded_channels_last(x, (1, 3), top, left, rows, cols)
        expected = np.zeros((2, rows, cols, 3), dtype)
        expected[:, top:top + hw[0], left:left + hw[1]] = (
            x[:, 1:4].transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(xp, expected)
        assert finite is True


@pytest.mark.parametrize("hw", [(32, 32), (31, 33)])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_padded_channels_last_copy_sees_non_finite_input(hw, special):
    """The copies report NaN/Inf in the channels they copy (anywhere: first
    and last element of a plane, any image), and only there."""
    rng = np.random.default_rng(22)
    base = rng.standard_normal((2, 5) + hw).astype(np.float32)
    rows, cols = hw[0] + 5, hw[1] + 4
    for where, seen in [((0, 1, 0, 0), True), ((1, 3, -1, -1), True),
                        ((1, 2, hw[0] // 2, 7), True), ((0, 0, 3, 3), False),
                        ((1, 4, 0, 0), False)]:
        contiguous = base.copy()
        contiguous[where] = special
        strided = np.repeat(contiguous, 2, axis=3)[..., ::2]
        for x in (contiguous, strided):
            _, finite = impl._padded_channels_last(x, (1, 3), 2, 1, rows, cols)
            assert finite is not seen, where


@st.composite
def regions(draw):
    """An input, its group's channels, and a region of its zero-padded
    plane: inside it, overhanging any side, or wholly in the padding."""
    dtype = draw(st.sampled_from(DTYPES))
    n_img = draw(st.integers(1, 2))
    c_total = draw(st.integers(1, 40))
    c0 = draw(st.integers(0, c_total - 1))
    nc = draw(st.integers(1, c_total - c0))
    H, W = draw(st.integers(1, 20)), draw(st.integers(1, 40))
    rows, cols = draw(st.integers(1, 12)), draw(st.integers(1, 45))
    row0 = draw(st.integers(-rows - 2, H + 1))
    col0 = draw(st.integers(-cols - 2, W + 1))
    special = draw(st.sampled_from((None, np.nan, np.inf, -np.inf)))
    where = (draw(st.integers(0, n_img - 1)), draw(st.integers(0, c_total - 1)),
             draw(st.integers(0, H - 1)), draw(st.integers(0, W - 1)))
    return dict(dtype=dtype, shape=(n_img, c_total, H, W), c0=c0, nc=nc,
                n=draw(st.integers(0, n_img - 1)), row0=row0, col0=col0,
                rows=rows, cols=cols, special=special, where=where,
                seed=draw(st.integers(0, 2**32 - 1)))


@settings(deadline=None)
@given(case=regions())
def test_region_copy_is_the_padded_input_under_a_block(case):
    """A fused job's copy of its region (squares transposed in registers,
    the last square of a row overlapping the one before it, the channels
    past the last square one by one) is the zero-padded input there,
    channels last; it reports NaN/Inf exactly when one lies in it."""
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(case["dtype"])
    if case["special"] is not None:
        x[case["where"]] = case["special"]
    n, c0, nc = case["n"], case["c0"], case["nc"]
    row0, col0, rows, cols = (case[k] for k in ("row0", "col0", "rows", "cols"))
    H, W = x.shape[2:]
    # the padded plane, margins wide enough for any region drawn
    pad = max(rows, cols) + 3
    padded = np.zeros((nc, H + 2 * pad, W + 2 * pad), x.dtype)
    padded[:, pad:pad + H, pad:pad + W] = x[n, c0:c0 + nc]
    expected = padded[:, pad + row0:pad + row0 + rows,
                      pad + col0:pad + col0 + cols].transpose(1, 2, 0)
    region = np.full((1, rows, cols, nc), 7, x.dtype)    # every element set
    finite = impl._region_channels_last(x, n, c0, row0, col0, region)
    np.testing.assert_array_equal(region[0], expected)
    assert finite == bool(np.isfinite(expected).all())


@pytest.mark.parametrize("groups", [1, 2])
@over_dtypes
def test_fused_jobs_reading_x_give_the_padded_copys_bits(dtype, groups):
    """The fused path reads a C-contiguous x block by block and any other
    x through the padded copy of the whole group: the same bits."""
    rng = np.random.default_rng(25)
    for x_shape, padding in (((2, 2 * groups * 9, 23, 30), (1, 1, 1, 1)),
                             ((1, groups * 17, 12, 41), (2, 0, 0, 3))):
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal((4 * groups, x_shape[1] // groups, 3, 3)
                                ).astype(dtype)
        tw = winograd.transform_weights(w, groups=groups)
        strided = np.repeat(x, 2, axis=3)[..., ::2]
        assert not strided.flags.c_contiguous
        y = impl.conv2d_transformed(x, tw, None, padding, path="fused")
        top, bottom, left, right = padding
        padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        assert_within_bound("winograd", y, padded, w, groups=groups)
        np.testing.assert_array_equal(
            y, impl.conv2d_transformed(strided, tw, None, padding,
                                       path="fused"))


@pytest.mark.parametrize("special", [np.nan, np.inf])
def test_fused_jobs_reading_x_see_non_finite_input(special):
    """NaN/Inf anywhere in x (a corner, the middle, the last image) stops
    the fused path when asked to check, as the padded copy does."""
    rng = np.random.default_rng(26)
    x = rng.standard_normal((2, 12, 20, 27)).astype(np.float32)
    tw = winograd.transform_weights(
        rng.standard_normal((16, 12, 3, 3)).astype(np.float32))
    impl.conv2d_transformed(x, tw, None, (1, 1, 1, 1), path="fused",
                            check_finite=True)
    for where in ((0, 0, 0, 0), (1, 11, 19, 26), (1, 5, 9, 13)):
        bad = x.copy()
        bad[where] = special
        with pytest.raises(kernels._dispatch.NonFiniteInput):
            impl.conv2d_transformed(bad, tw, None, (1, 1, 1, 1), path="fused",
                                    check_finite=True)


def test_front_end_leaves_the_finiteness_of_x_to_the_winograd_kernel(monkeypatch):
    """The CPU Winograd kernel checks x while packing it: the front end
    makes no pass of its own over x, and x with NaN in one group's channels
    only still goes to direct (the same bits)."""
    from kernels import _arrays
    rng = np.random.default_rng(23)
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    kernels.conv2d(x, w, padding=1, groups=2, algorithm="winograd")   # cached w
    x_bad = x.copy()
    x_bad[1, 6, 9, 9] = np.nan                  # the second group's channels
    direct = kernels.conv2d(x_bad, w, padding=1, groups=2, algorithm="direct")
    checked = []
    real = _arrays.all_finite
    monkeypatch.setattr(_arrays, "all_finite",
                        lambda a: checked.append(a.shape) or real(a))
    y = kernels.conv2d(x, w, padding=1, groups=2, algorithm="winograd")
    assert_within_bound("winograd", y, x, w, padding=1, groups=2)
    y_bad = kernels.conv2d(x_bad, w, padding=1, groups=2, algorithm="winograd")
    np.testing.assert_array_equal(y_bad, direct)
    assert x.shape not in checked


def test_pretransformed_path_leaves_the_finiteness_of_x_to_the_kernel(monkeypatch):
    """``kernels.winograd.conv2d`` with transformed weights makes no pass of
    its own over x either; NaN/Inf in x still gives direct's bits."""
    from kernels import _arrays
    rng = np.random.default_rng(24)
    x = rng.standard_normal((2, 6, 9, 11)).astype(np.float32)
    w = rng.standard_normal((5, 6, 3, 3)).astype(np.float32)
    tw = winograd.transform_weights(w)
    checked = []
    real = _arrays.all_finite
    monkeypatch.setattr(_arrays, "all_finite",
                        lambda a: checked.append(a.shape) or real(a))
    y = winograd.conv2d(x, tw, padding=1)
    assert_within_bound("winograd", y, x, w, padding=1)
    assert x.shape not in checked
    for special in (np.nan, np.inf):
        x_bad = x.copy()
        x_bad[1, 4, 0, 10] = special
        np.testing.assert_array_equal(
            winograd.conv2d(x_bad, tw, padding=1),
            kernels.conv2d(x_bad, w, padding=1, algorithm="direct"))


@pytest.mark.parametrize("path", ["fused", "staged"])
def test_conv2d_transformed_sets_padding_only_outputs_to_the_bias(path):
    """With U the transform of no filter, the outputs whose window is all
    padding come out of the tile arithmetic as anything; they must be the
    bias exactly (real filters mostly cancel exactly there, so the test
    above passes even without the rule)."""
    from kernels._winograd_math import TransformedWeights
    rng = np.random.default_rng(9)
    tile = impl.Tile(4, 4, 3, 3)
    x = rng.standard_normal((1, 2, 3, 3))
    U = rng.standard_normal((1, 36, 2, 3))
    U.setflags(write=False)
    transformed = TransformedWeights(U, np.zeros((3, 2, 3, 3)), tile, 1)
    bias = np.array([1.25, -3.5, 0.5])
    y = impl.conv2d_transformed(x, transformed, bias, (3, 3, 3, 3), path=path)
    edge = np.ones((7, 7), bool)            # padded by 3: rows/cols 0 and 6
    edge[1:6, 1:6] = False
    for k in range(3):
        assert (y[0, k][edge] == bias[k]).all()
        assert (y[0, k][~edge] != bias[k]).all()


def test_outputs_that_see_only_padding_are_exactly_the_bias():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 2, 3, 4))
    w = rng.standard_normal((3, 2, 2, 3))
    b = rng.standard_normal(3)
    y = kernels.conv2d(x, w, b, padding=(3, 4), algorithm="winograd")
    expected = reference.conv2d(x, w, b, padding=(3, 4))
    only_padding = np.ones(y.shape[2:], bool)
    only_padding[2:2 + 3 + 2 - 1, 2:2 + 4 + 3 - 1] = False   # windows touching x
    for k in range(3):
        assert (y[0, k][only_padding] == b[k]).all()
    np.testing.assert_allclose(y, expected, atol=1e-12)


# --------------------------------------------------------------------------
# Contract: inputs untouched, thread-count independence, caching
# --------------------------------------------------------------------------

def test_inputs_are_not_modified():
    rng = np.random.default_rng(9)
    x, w, b = random_problem(rng, np.float32)
    copies = [a.copy() for a in (x, w, b)]
    kernels.conv2d(x, w, b, padding=1, algorithm="winograd")
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("path", ["fused", "staged"])
def test_result_does_not_depend_on_the_thread_count(path):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    rng = np.random.default_rng(10)
    x, w, b = random_problem(rng, np.float32, n=2, c=16, k=16, hw=(30, 29))
    tw = winograd.transform_weights(w)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = impl.conv2d_transformed(x, tw, b, (1, 1, 1, 1), path)
        numba.set_num_threads(2)
        two = impl.conv2d_transformed(x, tw, b, (1, 1, 1, 1), path)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, two)


def _cached_winograd_entry(w, tile, groups=1):
    """The shared cache's Winograd entry for ``w``; fails on a miss."""
    def no_transform(own):
        raise AssertionError("no cached transform for these filters")
    return transformed_weights.get(w, "winograd", (tile, groups), no_transform)


def test_weight_cache_reuses_and_notices_in_place_changes():
    rng = np.random.default_rng(11)
    x, w, _ = random_problem(rng, np.float64, bias=False)
    tile = impl.tile_for_problem((3, 3), x.shape[2:], 2, (3, 4), x.itemsize)
    winograd.clear_cache()
    impl.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert transformed_weights.count("winograd") == 1
    first = _cached_winograd_entry(w, tile)
    assert first.tile == tile and first.groups == 1
    impl.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    assert _cached_winograd_entry(w, tile) is first           # hit
    w[0, 0, 1, 1] += 1.0                                      # modified in place
    y = impl.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    again = _cached_winograd_entry(w, tile)
    assert again is not first
    np.testing.assert_array_equal(again.weights, w)
    assert transformed_weights.count("winograd") == 1         # replaced, not added
    np.testing.assert_allclose(y, reference.conv2d(x, w, padding=1), atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ">f4"])
def test_same_bits_compares_every_bit_of_any_layout(dtype):
    """memcmp for contiguous arrays, NumPy's comparison for views: both see
    a flipped low bit anywhere, -0.0 against 0.0, and two NaN payloads."""
    from kernels._weight_cache import same_bits
    rng = np.random.default_rng(15)
    a = rng.standard_normal((3, 4, 5)).astype(dtype)
    as_int = np.dtype(f"u{a.itemsize}").newbyteorder(a.dtype.byteorder)
    for view in (lambda z: z, lambda z: z[:, ::2], lambda z: z.transpose(2, 0, 1)):
        assert same_bits(view(a), view(a.copy()))
        shape = view(a).shape
        for index in ((0, 0, 0), (1, 1, 2), tuple(n - 1 for n in shape)):
            b = a.copy()
            view(b).view(as_int)[index] ^= 1
            assert not same_bits(view(a), view(b)), index
    zeros, negative = np.zeros(4, dtype), -np.zeros(4, dtype)
    assert not same_bits(zeros, negative)
    nan = np.full(2, np.nan, dtype)
    other_nan = nan.copy()
    other_nan.view(as_int)[1] ^= 1
    assert same_bits(nan, nan.copy()) and not same_bits(nan, other_nan)
    assert same_bits(np.zeros((0, 3), dtype), np.zeros((0, 3), dtype))
    assert not same_bits(a, a.astype(np.float64 if a.itemsize == 4 else np.float32))


def test_weight_cache_compares_filters_bit_for_bit():
    """-0.0 and 0.0 are different filters (a miss, the new bits are
    transformed); a NaN filter is found again (NaN != NaN by value)."""
    rng = np.random.default_rng(14)
    x, w, _ = random_problem(rng, np.float32, bias=False)
    tile = impl.tile_for_problem((3, 3), x.shape[2:], 2, (3, 4), x.itemsize)
    args = (None, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    w[1, 2, 0, 0] = 0.0
    winograd.clear_cache()
    impl.conv2d(x, w, *args)
    positive = _cached_winograd_entry(w, tile)
    w[1, 2, 0, 0] = -0.0                                      # equal by value
    y = impl.conv2d(x, w, *args)
    negative = _cached_winograd_entry(w, tile)
    assert negative is not positive
    assert np.signbit(negative.weights[1, 2, 0, 0])
    winograd.clear_cache()
    np.testing.assert_array_equal(impl.conv2d(x, w, *args), y)   # as if uncached

    w[0, 0, 1, 1] = np.nan
    y = impl.conv2d(x, w, *args)
    nan_entry = _cached_winograd_entry(w, tile)
    assert np.isnan(nan_entry.weights[0, 0, 1, 1])
    assert np.isnan(y[:, 0]).any() and not np.isnan(y[:, 1:]).any()
    impl.conv2d(x, w, *args)
    assert _cached_winograd_entry(w, tile) is nan_entry       # hit
    assert transformed_weights.count("winograd") == 1


@pytest.mark.parametrize("algorithm", ["winograd", "fft"])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_non_finite_filters_go_to_direct_also_from_the_cache(algorithm, special):
    """A filter holding NaN/Inf is computed by direct (its transform would
    spread it over whole tiles): on the call that transforms it, on the
    calls that find it in the weight cache (whose entry records its
    finiteness), and when a cached finite filter turns non-finite in
    place, or back.  NaN must be exactly where the reference has it."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    transformed_weights.clear()

    def check():
        # As strict as a user may be: the transform of a non-finite filter
        # (whose result is dropped) must neither warn nor raise.
        with warnings.catch_warnings(), np.errstate(all="raise"):
            warnings.simplefilter("error")
            y = kernels.conv2d(x, w, padding=1, algorithm=algorithm)
        assert_within_bound(algorithm, y, x, w, padding=1)
        return y

    check()                                   # finite: transformed, cached
    w[2, 1, 0, 2] = special                   # in place: the bits differ
    bad = check()
    assert not np.isfinite(bad[:, 2]).all()
    assert np.isfinite(bad[:, [0, 1, 3]]).all()
    check()                                   # the non-finite entry, a hit
    w[2, 1, 0, 2] = 0.25                      # finite again
    assert np.isfinite(check()).all()


def test_watch_notes_the_filters_fetched_inside_it():
    cache = WeightTransformCache()
    finite = np.ones((2, 2), np.float32)
    nan = finite.copy()
    nan[0, 1] = np.nan
    with cache.watch() as outer:
        assert not outer.fetched
        cache.get(finite, "k", 0, lambda own: own * 2)
        assert outer.fetched and outer.finite
        with cache.watch() as inner:
            cache.get(nan, "k", 0, lambda own: own * 2)      # a miss
        assert inner.fetched and not inner.finite
        assert outer.finite                     # the inner fetch is not its
        cache.get(nan, "k", 0, lambda own: own * 2)          # a hit
        assert outer.fetched and not outer.finite
    cache.get(nan, "k", 0, lambda own: own * 2)              # no watch open
    with cache.watch() as later:
        pass
    assert not later.fetched and later.finite


def test_clear_cache_forgets_winograd_entries_and_scratch():
    rng = np.random.default_rng(15)
    x, w, _ = random_problem(rng, np.float32, bias=False)
    kernels.conv2d(x, w, padding=1, algorithm="winograd")
    assert transformed_weights.count("winograd") >= 1
    winograd.clear_cache()
    assert transformed_weights.count("winograd") == 0
    assert impl._workspace.buffers == {}


def test_tunables_are_read_from_the_tuning_in_force():
    """A U above fused_max_u_bytes runs the staged path: the same bits as
    asking for it."""
    rng = np.random.default_rng(16)
    x, w, b = random_problem(rng, np.float32, n=2, c=16, k=16, hw=(30, 29))
    tw = winograd.transform_weights(w)
    fused = impl.conv2d_transformed(x, tw, b, (1, 1, 1, 1), "fused")
    staged = impl.conv2d_transformed(x, tw, b, (1, 1, 1, 1), "staged")
    with _tuning.override(winograd=dict(fused_max_u_bytes=1)):
        assert impl._fused_blocks(tw.tile, impl.tile_counts((30, 29), tw.tile),
                                  2, 16, 16, 4, _tuning.current().winograd) is None
        np.testing.assert_array_equal(winograd.conv2d(x, tw, b, padding=1), staged)
    if impl._fused_blocks(tw.tile, impl.tile_counts((30, 29), tw.tile), 2, 16, 16, 4,
                          _tuning.current().winograd) is not None:
        np.testing.assert_array_equal(winograd.conv2d(x, tw, b, padding=1), fused)


def test_a_mid_sized_u_runs_fused_only_when_staging_would_leave_the_cache():
    # U of 128 channels, F(4,3): 2.25 MiB, between fused_small_u_bytes (as
    # before stop 43) and fused_max_u_bytes; the staged V and M of 49
    # tiles take 1.8 MB, of 784 tiles 29 MB.
    tile = impl.tile_for((3, 3), 4)
    rules = dict(fused_max_u_bytes=6 << 20, fused_small_u_bytes=1 << 20,
                 fused_min_staged_bytes=16 << 20)
    with _tuning.override(winograd=rules):
        tuning = _tuning.current().winograd
        assert impl._fused_blocks(tile, (7, 7), 1, 128, 128, 4, tuning) is None
        assert impl._fused_blocks(tile, (28, 28), 1, 128, 128, 4,
                                  tuning) is not None
        # a U at most fused_small_u_bytes (64 channels: 0.56 MiB) runs fused
        assert impl._fused_blocks(tile, (7, 7), 4, 64, 64, 4,
                                  tuning) is not None
    from kernels.cpu._tuning import host_vector_bits
    small = _tuning.WinogradTuning().fused_small_u_bytes
    assert small == ((5 << 19) if host_vector_bits() == 512
                     else _tuning.WinogradTuning().fused_max_u_bytes)
    # the defaults: 128 channels (U 2.25 MiB) run fused, 144 (2.85) staged
    tuning = _tuning.WinogradTuning()
    assert impl._fused_blocks(tile, (7, 7), 4, 128, 128, 4, tuning) is not None
    staged_144 = impl._fused_blocks(tile, (7, 7), 4, 144, 144, 4, tuning) is None
    assert staged_144 == (host_vector_bits() == 512)


@pytest.mark.parametrize("n_img", [1, 2, 4, 8])
@pytest.mark.parametrize("hw", [(7, 7), (14, 14), (28, 28), (56, 56), (13, 30)])
@pytest.mark.parametrize("m", [2, 4])
def test_fused_blocks_keep_their_rules(m, hw, n_img):
    """Wherever the fused path is chosen, its blocks hold >= 8 tiles, give
    every thread >= 2 jobs, and cover every tile once, for batch 1 too."""
    from kernels.cpu._winograd_blocks import block_of_job, job_count
    tile = impl.tile_for((3, 3), m)
    tiles_h, tiles_w = impl.tile_counts(hw, tile)
    threads = _tuning.block_shape_threads()
    blocks = impl._fused_blocks(tile, (tiles_h, tiles_w), n_img, 64, 64, 4,
                                _tuning.current().winograd)
    if blocks is None:
        return
    rows, cols = blocks
    jobs = job_count(n_img, tiles_h, tiles_w, rows, cols)
    assert rows * cols >= 8 and jobs >= 2 * threads
    seen = np.zeros((n_img, tiles_h, tiles_w), int)
    for job in range(jobs):
        n, ti0, nr, tj0, ns = block_of_job(job, tiles_h, tiles_w, rows, cols)
        seen[n, ti0:ti0 + nr, tj0:tj0 + ns] += 1
    assert (seen == 1).all()


def test_transformed_weights_are_a_snapshot_and_reproduce_the_array_path():
    rng = np.random.default_rng(12)
    x, w, b = random_problem(rng, np.float32)
    tw = winograd.transform_weights(w, m=2)
    y_array = winograd.conv2d(x, w, b, padding=1, m=2)
    w[:] = 0                                    # the snapshot is unaffected
    y_transformed = winograd.conv2d(x, tw, b, padding=1)
    np.testing.assert_array_equal(y_transformed, y_array)
    assert winograd.conv2d(x[0], tw, b, padding=1).shape == y_array.shape[1:]


def test_transformed_weights_validate_their_use():
    rng = np.random.default_rng(13)
    x, w, _ = random_problem(rng, np.float32)
    tw = winograd.transform_weights(w)
    with pytest.raises(ValueError, match="channels"):
        winograd.conv2d(x[:, :2], tw)
    with pytest.raises(ValueError, match="m must be None"):
        winograd.conv2d(x, tw, m=4)
    with pytest.raises(kernels.UnsupportedConfiguration, match="stride"):
        winograd.conv2d(x, tw, stride=2)
    with pytest.raises(TypeError):
        winograd.conv2d(x.astype(np.float64), tw)
    with pytest.raises(kernels.UnsupportedConfiguration, match="kernel sizes"):
        winograd.transform_weights(np.ones((1, 1, 9, 9)))


# --------------------------------------------------------------------------
# Unsupported configurations
# --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, x_hw, w_shape, match", [
    (dict(stride=2), (12, 12), (2, 3, 3, 3), "stride"),
    (dict(stride=(1, 2)), (12, 12), (2, 3, 3, 3), "stride"),
    (dict(dilation=2), (12, 12), (2, 3, 3, 3), "dilation"),
    (dict(), (12, 12), (2, 3, 9, 3), "kernel sizes 1 to 7"),
    (dict(), (12, 12), (2, 3, 3, 8), "kernel sizes 1 to 7"),
    (dict(padding=3), (12, 5), (2, 3, 3, 7), "at least as large as the kernel"),
])
def test_unsupported_configurations_raise_through_the_front_end(kwargs, x_hw, w_shape,
                                                                match):
    x = np.ones((1, 3) + x_hw)
    with pytest.raises(kernels.UnsupportedConfiguration, match=match):
        kernels.conv2d(x, np.ones(w_shape), algorithm="winograd", **kwargs)


def test_a_requested_tile_that_needs_too_many_points_is_unsupported():
    x, w = np.ones((1, 1, 12, 12)), np.ones((1, 1, 5, 5))
    with winograd.use_tile(7):                  # alpha = 11 > MAX_ALPHA
        with pytest.raises(kernels.UnsupportedConfiguration, match="use_tile"):
            kernels.conv2d(x, w, algorithm="winograd")
    with pytest.raises(ValueError, match="interpolation points"):
        winograd.tile_for((5, 5), 7)
    assert winograd.requested_tile() is None    # the context was left


def test_supported_configurations_have_no_reason():
    for kernel in [(1, 1), (3, 3), (7, 7), (2, 5)]:
        assert impl.unsupported_reason((1, 2, 9, 9), (1, 2) + kernel, (1, 1),
                                       (0, 0, 0, 0), (1, 1), 1) is None


# --------------------------------------------------------------------------
# The weight cache's bound
# --------------------------------------------------------------------------

class _Transform:
    """A stand-in transform of a known size, counting its calls."""

    calls = 0

    def __init__(self, own):
        type(self).calls += 1
        self.nbytes = 4 * own.nbytes


def test_a_cache_too_small_for_a_cycle_of_filters_warns_once():
    from kernels._weight_cache import WeightCacheWarning, WeightTransformCache
    filters = [np.full((8, 8, 3, 3), i, np.float32) for i in range(6)]
    entry = 5 * filters[0].nbytes                       # copy + transform
    cache = WeightTransformCache(max_entries=100, max_bytes=4 * entry)
    _Transform.calls = 0

    def one_pass():
        for w in filters:
            cache.get(w, "winograd", "key", _Transform)

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one_pass()                                      # first pass: only misses
    assert _Transform.calls == 6 and cache.recomputed == 0
    with pytest.warns(WeightCacheWarning, match="set_weight_cache_limits"):
        one_pass()                  # LRU over a cycle of 6 in room for 4: all miss
    assert _Transform.calls == 12 and cache.recomputed == 6
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # once per bound
        one_pass()
    # Room for all six: the misses of the next pass refill the cache
    # without a warning, and every call of the pass after hits.
    assert cache.set_limits(max_bytes=6 * entry) == (100, 4 * entry)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one_pass()
        calls = _Transform.calls
        one_pass()
    assert _Transform.calls == calls and cache.count() == 6
    # A lower bound evicts at once.
    cache.set_limits(max_entries=2)
    assert cache.count() == 2


def test_an_evicted_filter_changed_since_is_not_called_recomputed():
    # Weights updated in place (a training step), or a new filter at a
    # freed one's address: the key comes back with other bits, which is
    # not the cache being too small.
    from kernels._weight_cache import WeightTransformCache
    filters = [np.full((8, 8, 3, 3), i, np.float32) for i in range(3)]
    entry = 5 * filters[0].nbytes
    cache = WeightTransformCache(max_entries=100, max_bytes=2 * entry)
    for w in filters:                                   # evicts filters[0]
        cache.get(w, "winograd", "key", _Transform)
    filters[0][0, 0, 0, 0] += 1
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.get(filters[0], "winograd", "key", _Transform)
    assert cache.recomputed == 0


def test_set_weight_cache_limits_is_public_and_checks_its_arguments():
    previous = kernels.set_weight_cache_limits()
    try:
        assert previous == (transformed_weights.max_entries,
                            transformed_weights.max_bytes)
        assert kernels.set_weight_cache_limits(max_bytes=12345) == previous
        assert transformed_weights.max_bytes == 12345
        with pytest.raises(ValueError, match="max_bytes must be >= 0"):
            kernels.set_weight_cache_limits(max_bytes=-1)
        for bad in (1.5, True, "1G"):
            with pytest.raises(TypeError, match="max_bytes must be an int"):
                kernels.set_weight_cache_limits(max_bytes=bad)
        with pytest.raises(TypeError, match="max_entries"):
            kernels.set_weight_cache_limits(max_entries=2.0)
        assert transformed_weights.max_bytes == 12345     # left as it was
    finally:
        kernels.set_weight_cache_limits(*previous)
    assert issubclass(kernels.WeightCacheWarning, UserWarning)


def test_conv2d_warns_when_its_filters_outgrow_the_cache():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 16, 12, 12))
    filters = [rng.standard_normal((16, 16, 3, 3)) for _ in range(3)]
    winograd.clear_cache()
    previous = kernels.set_weight_cache_limits(max_entries=2)
    # Through the cache: on AVX2 this problem would transform its filters
    # inside the GEMMs (16 output channels are whole float64 strips there).
    try:
        with _tuning.override(winograd=dict(streamed_max_tiles=0)):
            for w in filters:
                kernels.conv2d(x, w, padding=1, algorithm="winograd")
            with pytest.warns(kernels.WeightCacheWarning):
                kernels.conv2d(x, filters[0], padding=1, algorithm="winograd")
    finally:
        kernels.set_weight_cache_limits(*previous)
        winograd.clear_cache()
