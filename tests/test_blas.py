"""kernels.cpu._blas: products split into pieces, BLAS single-threaded.

Both ways of running the pieces are checked: as Numba parallel jobs
calling NumPy's CBLAS (kernels.cpu._gemm) and on Python threads.  Against
the float64 product (NumPy), for both split axes, stacks, broadcasting and
strided views; the result must not depend on the thread count, and BLAS's
thread counts must be restored afterwards.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from kernels.cpu import _blas, _gemm, _tuning

MIN_PARALLEL_MACS = _tuning.current().blas.min_parallel_macs


@pytest.fixture(params=["openmp", "python-threads"])
def path(request):
    """Run the test with the pieces on one path, then restore."""
    if request.param == "openmp" and not _gemm.available():
        pytest.skip("NumPy's CBLAS (scipy_cblas_sgemm64_) not found")
    previous = _gemm.set_enabled(request.param == "openmp")
    yield request.param
    _gemm.set_enabled(previous)


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas"]


def _within_gemm_bound(out, a, b):
    """|out - a@b| <= depth * u * (|a| @ |b|), in float64."""
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    scale = np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64)))
    u = np.finfo(out.dtype).eps / 2
    assert np.all(np.abs(out - exact) <= a.shape[-1] * u * scale + 1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("split", ["columns", "rows", "longer"])
@pytest.mark.parametrize("shape", [
    ((3, 5), (5, 7)),                     # tiny: one piece, calling thread
    ((64, 576), (576, 3136)),             # ResNet 64@56^2 chunk: many pieces
    ((512, 2048), (2048, 49)),            # a 1x1 layer at 7^2: long rows
    ((300, 700), (700, 129)),             # widths not multiples of 16
    ((2, 32, 288), (2, 288, 1000)),       # a stack (groups)
    ((2, 48, 200), (3, 1, 200, 900)),     # broadcast over a leading axis
])
def test_matches_the_float64_product(shape, split, dtype, path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape[0]).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
                   + (a.shape[-2], b.shape[-1]), dtype)
    assert _blas.matmul(a, b, out, split=split) is out
    _within_gemm_bound(out, a, b)


def test_writes_through_strided_views(path):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((70, 400)).astype(np.float32)
    big_b = rng.standard_normal((400, 3000)).astype(np.float32)
    b = big_b[:, 500:2600]                  # column slice: leading dim 3000
    y = np.full((70, 4000), np.nan, np.float32)
    out = y[:, 1000:3100]
    _blas.matmul(a, b, out)
    _within_gemm_bound(out, a, b)
    assert np.isnan(y[:, :1000]).all() and np.isnan(y[:, 3100:]).all()
    rows = np.empty((70, 2100), np.float32)
    _blas.matmul(a, b.T.copy().T, rows, split="rows")   # Fortran-ordered b
    _within_gemm_bound(rows, a, b)


@pytest.mark.parametrize("split", ["columns", "rows"])
def test_result_does_not_depend_on_the_thread_count(split, path):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 Numba threads")
    rng = np.random.default_rng(2)
    a = rng.standard_normal((96, 600)).astype(np.float32)
    b = rng.standard_normal((600, 2500)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append(_blas.matmul(a, b, np.empty((96, 2500), np.float32),
                                        split=split))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0], results[1])


def test_pieces_cover_the_axis_and_ignore_the_current_thread_count():
    before = numba.get_num_threads()
    try:
        for cols in (1, 15, 64, 129, 3136, 10_000):
            seen = []
            for threads in range(1, numba.config.NUMBA_NUM_THREADS + 1):
                numba.set_num_threads(threads)
                bounds = _blas._pieces(cols, MIN_PARALLEL_MACS)
                assert bounds[0] == 0 and bounds[-1] == cols
                assert all(lo < hi for lo, hi in zip(bounds[:-1], bounds[1:]))
                assert all(lo % 16 == 0 for lo in bounds[:-1])
                seen.append(bounds)
            assert all(s == seen[0] for s in seen)
            assert _blas._pieces(cols, MIN_PARALLEL_MACS - 1) == [0, cols]
    finally:
        numba.set_num_threads(before)


def test_blas_is_single_threaded_inside_and_restored_after():
    before = _blas_threads()
    if not before:
        pytest.skip("threadpoolctl sees no BLAS library")
    with _blas.serial_blas:
        assert set(_blas_threads()) == {1}
        with _blas.serial_blas:            # re-entrant
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 576)).astype(np.float32)
    b = rng.standard_normal((576, 3136)).astype(np.float32)
    _blas.matmul(a, b, np.empty((64, 3136), np.float32))
    assert _blas_threads() == before


@pytest.mark.parametrize("shape, rows", [((512, 2048, 49), True),
                                         ((64, 576, 3136), False)])
def test_longer_splits_the_longer_side(shape, rows, monkeypatch):
    m, k, n = shape
    a = np.ones((m, k), np.float32)
    b = np.ones((k, n), np.float32)
    seen = []
    real = _blas._pieces
    monkeypatch.setattr(_blas, "_pieces",
                        lambda side, macs: seen.append(side) or real(side, macs))
    _blas.matmul(a, b, np.empty((m, n), np.float32), split="longer")
    assert seen == [m if rows else n]


def test_rejects_an_unknown_split():
    a = np.ones((2, 2))
    with pytest.raises(ValueError, match="split must be"):
        _blas.matmul(a, a, np.empty((2, 2)), split="diagonal")


def test_both_paths_give_the_same_bits():
    """The pieces are the same BLAS calls on either path."""
    if not _gemm.available():
        pytest.skip("NumPy's CBLAS not found")
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 40, 300)).astype(np.float32)
    b = rng.standard_normal((2, 300, 2000)).astype(np.float32)
    results = []
    for enabled in (True, False):
        previous = _gemm.set_enabled(enabled)
        try:
            results.append(_blas.matmul(a, b, np.empty((2, 40, 2000),
                                                       np.float32)))
        finally:
            _gemm.set_enabled(previous)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("shape, strides, expected", [
    ((3, 5), (20, 4), (_gemm._NO_TRANS, 5)),     # C-contiguous
    ((3, 5), (40, 4), (_gemm._NO_TRANS, 10)),    # column slice of a wider one
    ((3, 5), (4, 12), (_gemm._TRANS, 3)),        # Fortran-ordered
    ((1, 5), (0, 4), (_gemm._NO_TRANS, 5)),      # one row: its stride is moot
    ((3, 5), (40, 8), None),                     # no unit-stride axis
    ((3, 5), (-20, 4), None),                    # negative stride
    ((3, 5), (8, 4), None),                      # rows overlap
])
def test_operand_flags(shape, strides, expected):
    assert _gemm.operand(shape, strides, 4) == expected


def test_unreadable_operands_fall_back_to_python_threads():
    """Every-other-column views and integer arrays: still the product."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((50, 300)).astype(np.float32)
    wide = rng.standard_normal((300, 4000)).astype(np.float32)
    b = wide[:, ::2]
    out = np.empty((50, 2000), np.float32)
    _blas.matmul(a, b, out)
    _within_gemm_bound(out, a, b)
    ai = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(
        _blas.matmul(ai, ai.T, np.empty((2, 2), ai.dtype)), ai @ ai.T)


def test_set_enabled_rejects_non_bool():
    with pytest.raises(ValueError, match="True or False"):
        _gemm.set_enabled("yes")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [(7, 5, 9), (1, 5, 9), (7, 1, 9),
                                     (7, 0, 9), (0, 5, 9)])
def test_dot_inside_numba_matches_the_product(m, k, n, dtype):
    """kernels.cpu._gemm.dot (Winograd's tuple GEMMs) on row slices of
    larger arrays, through NumPy's CBLAS and through Numba's np.dot."""
    from numba import njit

    @njit
    def run(a, b, out, cblas):
        rows = out.shape[0] - 2
        _gemm.dot(a[1:1 + rows], b, out[1:1 + rows], cblas)

    rng = np.random.default_rng(6)
    a = rng.standard_normal((m + 3, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    for cblas in ((True, False) if _gemm.available() else (False,)):
        out = np.full((m + 2, n), np.nan, dtype)
        run(a, b, out, cblas)
        _within_gemm_bound(out[1:1 + m], a[1:1 + m], b)
        assert np.isnan(out[0]).all() and np.isnan(out[-1]).all()
