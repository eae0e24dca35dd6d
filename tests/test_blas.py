"""kernels.cpu._blas: products split over Python threads, BLAS single-threaded.

Checked against the float64 product (NumPy), for both split axes, stacks,
broadcasting and strided views; the result must not depend on the thread
count, and BLAS's thread counts must be restored afterwards.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from kernels.cpu import _blas, _tuning

MIN_PARALLEL_MACS = _tuning.current().blas.min_parallel_macs


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
@pytest.mark.parametrize("split", ["columns", "rows"])
@pytest.mark.parametrize("shape", [
    ((3, 5), (5, 7)),                     # tiny: one piece, calling thread
    ((64, 576), (576, 3136)),             # ResNet 64@56^2 chunk: many pieces
    ((300, 700), (700, 129)),             # widths not multiples of 16
    ((2, 32, 288), (2, 288, 1000)),       # a stack (groups)
    ((2, 48, 200), (3, 1, 200, 900)),     # broadcast over a leading axis
])
def test_matches_the_float64_product(shape, split, dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape[0]).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    out = np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
                   + (a.shape[-2], b.shape[-1]), dtype)
    assert _blas.matmul(a, b, out, split=split) is out
    _within_gemm_bound(out, a, b)


def test_writes_through_strided_views():
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
def test_result_does_not_depend_on_the_thread_count(split):
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


def test_rejects_an_unknown_split():
    a = np.ones((2, 2))
    with pytest.raises(ValueError, match="split must be"):
        _blas.matmul(a, a, np.empty((2, 2)), split="diagonal")
