"""The register-tiled GEMM core that implicit GEMM, Winograd, FFT and the
1x1 case share.

``C[b, m, n] = sum_k A[b, m, k] B[b, k, n]`` for a batch of problems, where
*where A and B come from* and *where C goes* are the caller's device
functions: the implicit GEMM gathers B's columns from the image (the patch
matrix is never written to global memory), Winograd reads its transformed
tiles, FFT the real and imaginary parts of its spectra.  So the core is a
kernel *template*::

    kernel = gemm_kernel(load_a, load_b, store_c, dtype)
    kernel[gemm_grid(M, N, batch), GEMM.threads](a_src, b_src, c_dst,
                                                 geom, M, N, K)

with ``load_a(a_src, geom, b, m, k)`` and ``load_b(b_src, geom, b, k, n)``
returning one element (called only for ``m < M``, ``n < N``, ``k < K``)
and ``store_c(c_dst, geom, b, m, n, value)`` writing one.  ``geom`` is a
tuple of integers the three functions interpret.

How a block works (:class:`kernels.cuda._tuning.GemmTuning`): it owns a
``block_m x block_n`` tile of C; each of its threads keeps ``thread_m x
thread_n`` accumulators in registers, at rows ``ty + i*TY`` and columns
``tx + j*TX`` (strided, so that a warp's loads and stores of B and C touch
consecutive columns).  K advances ``block_k`` at a time through two
shared-memory slabs of A and B: while the block multiplies one slab, each
thread has already fetched its elements of the next into registers and
stores them into the other slab afterwards, so one barrier per slab
suffices and global-memory latency overlaps the arithmetic.  Loads are
enumerated with m (or n) fastest: consecutive threads read consecutive
columns of B, which the implicit GEMM's gather makes consecutive pixels.

Each accumulator sums its K products in increasing k, one thread per
output: results do not depend on the launch, and the order is that of a
plain dot product (error bound ``K u sum |a||b|``).
"""

from __future__ import annotations

import functools

from ._runtime import cuda, numba_type
from ._tuning import GEMM

__all__ = ["gemm_kernel", "gemm_grid", "matrix_loaders", "batched_matmul",
           "REPORT"]

_BM, _BN, _BK = GEMM.block_m, GEMM.block_n, GEMM.block_k
_TM, _TN = GEMM.thread_m, GEMM.thread_n
_TX, _TY = _BN // _TN, _BM // _TM
_THREADS = _TX * _TY
# Elements of one slab of A (B) each thread loads.
_A_PER_THREAD = (_BK * _BM + _THREADS - 1) // _THREADS
_B_PER_THREAD = (_BK * _BN + _THREADS - 1) // _THREADS


def gemm_grid(m, n, batch=1):
    """The launch grid: (column tiles, row tiles, batch)."""
    return ((n + _BN - 1) // _BN, (m + _BM - 1) // _BM, batch)


@functools.lru_cache(maxsize=None)
def gemm_kernel(load_a, load_b, store_c, dtype):
    """The GEMM kernel over the given loaders for ``dtype`` (cached)."""
    nbtype = numba_type(dtype)

    @cuda.jit
    def gemm(a_src, b_src, c_dst, geom, M, N, K):
        # One line per shared array: the simulator aliases two on a line.
        a_slab = cuda.shared.array((2, _BK, _BM), nbtype)
        b_slab = cuda.shared.array((2, _BK, _BN), nbtype)
        acc = cuda.local.array((_TM, _TN), nbtype)
        a_next = cuda.local.array(_A_PER_THREAD, nbtype)
        b_next = cuda.local.array(_B_PER_THREAD, nbtype)
        a_reg = cuda.local.array(_TM, nbtype)
        b_reg = cuda.local.array(_TN, nbtype)

        tx = cuda.threadIdx.x % _TX
        ty = cuda.threadIdx.x // _TX
        tid = cuda.threadIdx.x
        n0 = cuda.blockIdx.x * _BN
        m0 = cuda.blockIdx.y * _BM
        b = cuda.blockIdx.z
        for i in range(_TM):
            for j in range(_TN):
                acc[i, j] = 0

        slabs = (K + _BK - 1) // _BK
        # Slab 0 straight into shared memory.
        _fetch(a_src, b_src, geom, b, m0, n0, 0, M, N, K, tid, a_next, b_next)
        _stage(a_slab, b_slab, 0, tid, a_next, b_next)
        cuda.syncthreads()
        for s in range(slabs):
            cur = s % 2
            more = s + 1 < slabs
            if more:   # the next slab's global loads overlap this slab's FMAs
                _fetch(a_src, b_src, geom, b, m0, n0, (s + 1) * _BK, M, N, K,
                       tid, a_next, b_next)
            for kk in range(_BK):
                for i in range(_TM):
                    a_reg[i] = a_slab[cur, kk, ty + i * _TY]
                for j in range(_TN):
                    b_reg[j] = b_slab[cur, kk, tx + j * _TX]
                for i in range(_TM):
                    for j in range(_TN):
                        acc[i, j] += a_reg[i] * b_reg[j]
            if more:
                _stage(a_slab, b_slab, 1 - cur, tid, a_next, b_next)
            cuda.syncthreads()

        for i in range(_TM):
            m = m0 + ty + i * _TY
            if m < M:
                for j in range(_TN):
                    n = n0 + tx + j * _TX
                    if n < N:
                        store_c(c_dst, geom, b, m, n, acc[i, j])

    @cuda.jit(device=True, inline="always")
    def _fetch(a_src, b_src, geom, b, m0, n0, k0, M, N, K, tid, a_next, b_next):
        for r in range(_A_PER_THREAD):
            e = tid + r * _THREADS
            kk = e // _BM
            m = m0 + e % _BM
            k = k0 + kk
            if kk < _BK and m < M and k < K:
                a_next[r] = load_a(a_src, geom, b, m, k)
            else:
                a_next[r] = 0
        for r in range(_B_PER_THREAD):
            e = tid + r * _THREADS
            kk = e // _BN
            n = n0 + e % _BN
            k = k0 + kk
            if kk < _BK and n < N and k < K:
                b_next[r] = load_b(b_src, geom, b, k, n)
            else:
                b_next[r] = 0

    @cuda.jit(device=True, inline="always")
    def _stage(a_slab, b_slab, buf, tid, a_next, b_next):
        for r in range(_A_PER_THREAD):
            e = tid + r * _THREADS
            if e < _BK * _BM:
                a_slab[buf, e // _BM, e % _BM] = a_next[r]
        for r in range(_B_PER_THREAD):
            e = tid + r * _THREADS
            if e < _BK * _BN:
                b_slab[buf, e // _BN, e % _BN] = b_next[r]

    return gemm


# --------------------------------------------------------------------------
# Plain batched matrices: the loaders, and C[b] = A[b] @ B[b]
# --------------------------------------------------------------------------

@cuda.jit(device=True, inline="always")
def _load_a_rowmajor(a, geom, b, m, k):
    return a[b, m, k]


@cuda.jit(device=True, inline="always")
def _load_b_rowmajor(bm, geom, b, k, n):
    return bm[b, k, n]


@cuda.jit(device=True, inline="always")
def _store_rowmajor(c, geom, b, m, n, value):
    c[b, m, n] = value


def matrix_loaders():
    """``(load_a, load_b, store_c)`` for row-major ``(batch, rows, cols)``
    arrays: the template applied to ordinary matrices."""
    return _load_a_rowmajor, _load_b_rowmajor, _store_rowmajor


def batched_matmul(a, bm, out=None, stream=0):
    """``out[b] = a[b] @ bm[b]`` for device arrays of shape (batch, M, K)
    and (batch, K, N); returns ``out`` (allocated when None)."""
    batch, m, k = a.shape
    n = bm.shape[2]
    if out is None:
        out = cuda.device_array((batch, m, n), dtype=a.dtype, stream=stream)
    kernel = gemm_kernel(*matrix_loaders(), a.dtype)
    kernel[gemm_grid(m, n, batch), _THREADS, stream](a, bm, out, (0,), m, n, k)
    return out


def _matmul_signature(dtype):
    t = numba_type(dtype)
    from numba import types
    arr = t[:, :, ::1]
    return (arr, arr, arr, types.UniTuple(types.int64, 1), types.int64,
            types.int64, types.int64)


REPORT = []


def _report_entries():
    from ._runtime import ReportEntry
    return [ReportEntry("_gemm", "batched_matmul",
                        lambda dtype: gemm_kernel(*matrix_loaders(), dtype),
                        _matmul_signature, _THREADS,
                        note="GEMM core on row-major matrices")]


REPORT.extend(_report_entries())
