"""BLAS calls that never wake OpenBLAS's own worker threads.

After a multithreaded call OpenBLAS's workers keep spinning (busy-waiting
with ``sched_yield``) until their ``THREAD_TIMEOUT`` runs out.  On the
2-core development machine (Zen 4 VM, NumPy's OpenBLAS 0.3.31) that took
longer than 0.5 s, and every Numba parallel kernel started meanwhile ran on
one core: the direct kernel on ResNet-50's 64@56^2 layer (batch 4) took
2.35 ms before any BLAS call, 5.0 ms after a 512^2 ``matmul`` (still
5.5 ms after sleeping 0.5 s), 2.35 ms again after sleeping 1 s, and
2.36 ms throughout with ``OPENBLAS_THREAD_TIMEOUT=4``.  That environment
variable is read when OpenBLAS loads, i.e. at ``import numpy``, before
``import kernels`` can set it.

So the package calls BLAS single-threaded (:data:`serial_blas`) and does
its own parallelism: :func:`matmul` splits the columns (or rows) of a
product into pieces and runs each piece as one BLAS call in a Numba
parallel job (:mod:`kernels.cpu._gemm`: NumPy's OpenBLAS called from the
OpenMP team that runs every other kernel, and torch's when it was
imported first).  Where NumPy's CBLAS cannot be found, or an operand is
not a float array BLAS can read in place, the pieces run on
``numba.get_num_threads()`` Python threads instead, which sleep on a
queue when idle (NumPy releases the GIL during the call).  im2col's
ResNet-50 layers ran 1.25-1.4x faster with either than with OpenBLAS's
own 2-thread GEMMs, and the kernel called right after them 2.1-2.6x
faster (A/B in one process).  Since 61b5519 im2col's forward pass has
its own GEMM (:mod:`._panel_gemm`); the weight gradient, transposed
im2col and FFT's contraction still call BLAS here.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from . import _gemm, _tuning

__all__ = ["serial_blas", "thread_pool", "matmul", "in_parallel",
           "gemm_in_openmp"]

# The piece sizes (``min_piece_columns``, ``min_parallel_macs``) are
# tunables: kernels.cpu._tuning.BlasTuning.


class _SerialBlas:
    """Context: BLAS libraries run single-threaded (re-entrant, thread-safe).

    The thread counts are restored when the outermost user leaves.  Other
    threads calling BLAS meanwhile run single-threaded too (slower, never
    wrong).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = []
        self._libs = None

    def _controllers(self):
        if self._libs is None:
            import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba calls)
            from threadpoolctl import ThreadpoolController
            self._libs = [lib for lib in ThreadpoolController().lib_controllers
                          if lib.user_api == "blas"]
        return self._libs

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                libs = self._controllers()
                self._saved = [lib.num_threads for lib in libs]
                for lib in libs:
                    lib.set_num_threads(1)
            self._depth += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for lib, n in zip(self._libs, self._saved):
                    lib.set_num_threads(n)


#: Context manager: BLAS single-threaded inside (see :class:`_SerialBlas`).
serial_blas = _SerialBlas()

_pool = None
_pool_lock = threading.Lock()


def thread_pool(workers):
    """A shared pool of at least ``workers`` Python threads."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            from concurrent.futures import ThreadPoolExecutor
            _pool = ThreadPoolExecutor(workers,
                                       thread_name_prefix="convbench-blas")
        return _pool


def _pieces(cols, macs):
    """Boundaries of the pieces of a product's ``cols`` columns (or rows).

    They depend on the problem and on ``NUMBA_NUM_THREADS`` (fixed for the
    process), never on the current ``numba.get_num_threads()``: a piece's
    width can change how OpenBLAS sums, and the result must not depend on
    the thread count.
    """
    tuning = _tuning.current().blas
    if macs < tuning.min_parallel_macs:
        return [0, cols]
    n = max(1, min(_tuning.block_shape_threads(),
                   cols // tuning.min_piece_columns))
    width = -(-cols // n)
    width += -width % 16
    return list(range(0, cols, width)) + [cols]


def _run_pieces(a, b, out, bounds, by_rows):
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if by_rows:
            np.matmul(a[..., lo:hi, :], b, out=out[..., lo:hi, :])
        else:
            np.matmul(a, b[..., lo:hi], out=out[..., lo:hi])


def matmul(a, b, out, split="columns"):
    """``out[...] = a @ b`` (``numpy.matmul``, stacks allowed), in parallel
    over pieces of the output, with BLAS single-threaded.

    Parameters
    ----------
    a : ndarray (..., M, K)
    b : ndarray (..., K, N)
    out : ndarray (..., M, N), written in place (views welcome)
    split : {"columns", "rows", "longer"}
        Split the N columns (of ``b`` and ``out``) or the M rows (of ``a``
        and ``out``) into pieces; "longer": the rows when M > N.  Each
        piece's BLAS call packs all of the other operand, so split the
        long side: a 1x1 layer's 512 x 2048 weights times 49 columns ran
        in 1.07 ms split by rows against 2.51 by columns (one column
        piece: one thread).

    Returns
    -------
    out
    """
    if split not in ("columns", "rows", "longer"):
        raise ValueError(
            f"split must be 'columns', 'rows' or 'longer', got {split!r}")
    rows, depth = a.shape[-2:]
    cols = b.shape[-1]
    by_rows = split == "rows" or (split == "longer" and rows > cols)
    stack = out.size // max(1, rows * cols)
    bounds = _pieces(rows if by_rows else cols, stack * rows * depth * cols)
    with serial_blas:
        if _gemm.gemm_pieces(a, b, out, bounds, by_rows):
            return out
    in_parallel(lambda run: _run_pieces(a, b, out, run, by_rows), bounds)
    return out


def gemm_in_openmp():
    """Whether :func:`matmul` runs its pieces as Numba parallel jobs (the
    OpenMP team) rather than on Python threads (see :mod:`._gemm`)."""
    return _gemm.available()


def in_parallel(run, bounds):
    """``run(piece_bounds)`` on contiguous runs of the pieces
    ``[bounds[i], bounds[i + 1])``, one run per thread (the caller's
    included, at most ``numba.get_num_threads()``), BLAS single-threaded.

    ``run`` gets a list of boundaries, as ``bounds`` itself, and must
    release the GIL for the runs to overlap (NumPy's BLAS calls do).
    """
    n_pieces = len(bounds) - 1
    workers = max(1, min(numba.get_num_threads(), n_pieces))
    with serial_blas:
        if workers == 1:
            run(list(bounds))
            return
        per = -(-n_pieces // workers)
        runs = [list(bounds[i:i + per + 1]) for i in range(0, n_pieces, per)]
        pool = thread_pool(len(runs) - 1)
        futures = [pool.submit(run, r) for r in runs[1:]]
        run(runs[0])
        for future in futures:
            future.result()
