"""GEMM pieces run by Numba's parallel jobs, through NumPy's own BLAS.

:func:`kernels.cpu._blas.matmul` splits a product into pieces of output
columns (or rows) and runs each piece as one single-threaded BLAS call.
Here the pieces are the jobs of one ``prange`` loop, so they run on
Numba's threads: the same OpenMP team as every other parallel kernel of
the package, and as torch's when torch was imported first (the two then
share one ``libgomp``).  The alternative, Python threads
(:func:`kernels.cpu._blas.in_parallel`), is a second set of threads
beside that team, and loses whenever the team's workers spin:

* after a torch call, torch's libgomp (which read no wait policy, so
  spins for milliseconds) keeps a core busy while our Python threads
  wait for it.  On the 2-core machine, a 1x1 convolution 256 -> 64 at
  56^2 (batch 1) took 1.49-1.58 ms right after a torch call with Python
  threads against 0.90-0.97 ms as ``prange`` jobs (0.84-0.91 ms without
  the torch call before it), torch imported first, two processes;
* im2col's gather had to run serially wherever OpenMP workers spin
  beside BLAS (:mod:`kernels._threads`); with the GEMM in the same team
  it never alternated with another pool.  (im2col's forward pass has
  its own GEMM since 61b5519; the weight gradient's gather still
  alternates with these pieces.)

The BLAS is NumPy's OpenBLAS, through its CBLAS entry points
(``scipy_cblas_sgemm64_``, ``scipy_cblas_dgemm64_``; 64-bit integers),
found among the loaded libraries with threadpoolctl and registered with
LLVM under a private name, so that the kernel is cached like the others.
Numba's own ``np.dot`` calls SciPy's OpenBLAS instead, which ran 5-10 %
slower on im2col's shapes, and requires contiguous operands; the CBLAS
call takes each operand's leading dimension, so strided views (a column
slice of an output, the weight gradient's transposed operand) need no
copy.

:func:`available` is False where NumPy is linked to another BLAS (MKL,
Accelerate, a system OpenBLAS without the ``scipy_`` prefix): the caller
then keeps the Python threads.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["available", "dot", "gemm_pieces", "operand", "set_enabled"]

# Private LLVM symbol names of NumPy's CBLAS entry points.
_SGEMM = "convbench_numpy_cblas_sgemm"
_DGEMM = "convbench_numpy_cblas_dgemm"
_SYMBOLS = {_SGEMM: "scipy_cblas_sgemm64_", _DGEMM: "scipy_cblas_dgemm64_"}

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

_switched_off = False     # set_enabled(False): tests of the other path


def _numpy_openblas():
    """ctypes handle of the loaded library holding NumPy's CBLAS, or None."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for info in threadpool_info():
        if info.get("internal_api") != "openblas":
            continue
        try:
            lib = ctypes.CDLL(info["filepath"])
        except OSError:
            continue
        if all(hasattr(lib, name) for name in _SYMBOLS.values()):
            return lib
    return None


def _register():
    """Register NumPy's CBLAS under the private names; True when found.

    Done at import, before any kernel that names them is compiled or
    loaded from the cache: every such kernel must link, so where NumPy's
    CBLAS is missing a stub that does nothing is registered instead, and
    the kernels never call it (their ``cblas`` argument is False).
    """
    import llvmlite.binding as llvm
    lib = _numpy_openblas()
    for private, public in _SYMBOLS.items():
        if lib is not None:
            function = getattr(lib, public)
        else:
            function = _STUB_TYPE(lambda *args: None)
            _stubs.append(function)         # keep the callback alive
        llvm.add_symbol(private, ctypes.cast(function, ctypes.c_void_p).value)
    return lib is not None


_STUB_TYPE = ctypes.CFUNCTYPE(None, *([ctypes.c_int] * 3
                                     + [ctypes.c_int64] * 3
                                     + [ctypes.c_double, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_double,
                                        ctypes.c_void_p, ctypes.c_int64]))
_stubs = []
_found = _register()


def set_enabled(value):
    """Switch this path off (False) or back on (True), for tests and
    benchmarks of the fallbacks; returns the previous setting."""
    global _switched_off
    if value not in (True, False):
        raise ValueError(f"value must be True or False, got {value!r}")
    previous, _switched_off = not _switched_off, not value
    return previous


def available():
    """Whether NumPy's CBLAS was found and this path is switched on."""
    return _found and not _switched_off


def _signature(real):
    i32, i64, ptr = types.int32, types.int64, types.voidptr
    return types.void(i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr, i64,
                      real, ptr, i64)


_sgemm = types.ExternalFunction(_SGEMM, _signature(types.float32))
_dgemm = types.ExternalFunction(_DGEMM, _signature(types.float64))


@intrinsic
def _voidptr(typingctx, address):
    """The integer ``address`` as a ``void *``."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(address), codegen


@njit(cache=True, inline="always")
def _leading(a):
    """Leading dimension of 2-D ``a`` with unit-stride rows (a single
    row's stride is moot: its length)."""
    if a.shape[0] > 1:
        return a.strides[0] // a.itemsize
    return a.shape[1]


@njit(cache=True, inline="always")
def dot(a, b, out, cblas):
    """``out = a @ b`` for 2-D float arrays with unit-stride rows, inside
    a Numba kernel: NumPy's CBLAS when ``cblas`` (pass :func:`available`),
    else Numba's ``np.dot`` (SciPy's BLAS; contiguous operands only)."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:
        out[:] = 0
        return
    if cblas:
        lda, ldb, ldc = _leading(a), _leading(b), _leading(out)
        if a.itemsize == 8:
            _dgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k, 1.0,
                   _voidptr(a.ctypes.data), lda, _voidptr(b.ctypes.data),
                   ldb, 0.0, _voidptr(out.ctypes.data), ldc)
        else:
            _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, m, n, k,
                   np.float32(1.0), _voidptr(a.ctypes.data), lda,
                   _voidptr(b.ctypes.data), ldb, np.float32(0.0),
                   _voidptr(out.ctypes.data), ldc)
    else:
        np.dot(a, b, out)


@njit(cache=True, inline="always")
def _job(job, double, m, n, k, a, a_offsets, trans_a, lda, a_step,
         b, b_offsets, trans_b, ldb, b_step, c, c_offsets, ldc, c_step,
         bounds, by_rows):
    """BLAS call ``job`` = (stack entry, piece).

    ``a``, ``b``, ``c`` are base addresses; ``*_offsets`` the byte offset
    of each stack entry; a piece ``[lo, hi)`` of rows (``by_rows``) moves
    A and C by ``lo * a_step`` and ``lo * c_step`` bytes, of columns moves
    B and C by ``lo * b_step`` and ``lo * c_step`` bytes.
    """
    pieces = bounds.shape[0] - 1
    s = job // pieces
    lo = bounds[job % pieces]
    hi = bounds[job % pieces + 1]
    pa = a + a_offsets[s]
    pb = b + b_offsets[s]
    pc = c + c_offsets[s] + lo * c_step
    rows, cols = m, n
    if by_rows:
        pa += lo * a_step
        rows = hi - lo
    else:
        pb += lo * b_step
        cols = hi - lo
    if double:
        _dgemm(_ROW_MAJOR, trans_a, trans_b, rows, cols, k, 1.0,
               _voidptr(pa), lda, _voidptr(pb), ldb, 0.0, _voidptr(pc), ldc)
    else:
        _sgemm(_ROW_MAJOR, trans_a, trans_b, rows, cols, k, np.float32(1.0),
               _voidptr(pa), lda, _voidptr(pb), ldb, np.float32(0.0),
               _voidptr(pc), ldc)


@njit(parallel=True, cache=True)
def _jobs_parallel(double, m, n, k, a, a_offsets, trans_a, lda, a_step,
                   b, b_offsets, trans_b, ldb, b_step, c, c_offsets, ldc,
                   c_step, bounds, by_rows):
    """Every job of :func:`_job`, one prange iteration each."""
    for job in prange(c_offsets.shape[0] * (bounds.shape[0] - 1)):
        _job(job, double, m, n, k, a, a_offsets, trans_a, lda, a_step,
             b, b_offsets, trans_b, ldb, b_step, c, c_offsets, ldc, c_step,
             bounds, by_rows)


@njit(cache=True)
def _jobs_serial(double, m, n, k, a, a_offsets, trans_a, lda, a_step,
                 b, b_offsets, trans_b, ldb, b_step, c, c_offsets, ldc,
                 c_step, bounds, by_rows):
    """Every job of :func:`_job` on the calling thread (one job: no
    parallel launch, which would wake the sleeping workers for nothing)."""
    for job in range(c_offsets.shape[0] * (bounds.shape[0] - 1)):
        _job(job, double, m, n, k, a, a_offsets, trans_a, lda, a_step,
             b, b_offsets, trans_b, ldb, b_step, c, c_offsets, ldc, c_step,
             bounds, by_rows)


def operand(shape, strides, itemsize):
    """(CBLAS transpose flag, leading dimension) of a row-major (R, C)
    matrix with these strides, or None when BLAS cannot read it in place
    (neither axis unit-stride, or a negative or unaligned stride)."""
    rows, cols = shape
    row_stride, col_stride = strides
    if cols <= 1:
        col_stride = itemsize
    if rows <= 1:
        row_stride = max(cols, 1) * itemsize
    if col_stride == itemsize and row_stride % itemsize == 0:
        ld = row_stride // itemsize
        if ld >= max(1, cols):
            return _NO_TRANS, ld
    if row_stride == itemsize and col_stride % itemsize == 0:
        ld = col_stride // itemsize
        if ld >= max(1, rows):
            return _TRANS, ld
    return None


def _stack_offsets(array, stack_shape):
    """Byte offset of each entry of ``array``'s leading (stack) axes,
    broadcast to ``stack_shape``, flattened in C order."""
    lead = array.ndim - 2
    return _offsets(tuple(stack_shape), tuple(array.shape[:lead]),
                    tuple(array.strides[:lead]))


@functools.lru_cache(maxsize=512)
def _bounds(bounds):
    array = np.array(bounds, dtype=np.int64)
    array.setflags(write=False)
    return array


@functools.lru_cache(maxsize=512)
def _offsets(stack_shape, shape, strides):
    """:func:`_stack_offsets` of a stack of this shape and strides (cached:
    a network calls the same shapes again and again, and building the
    offsets with NumPy cost more than a small GEMM)."""
    pad = len(stack_shape) - len(shape)
    shape, strides = (1,) * pad + shape, (0,) * pad + strides
    offsets = np.zeros(stack_shape, dtype=np.int64)
    for axis, (size, own, stride) in enumerate(zip(stack_shape, shape,
                                                    strides)):
        if own == 1:
            continue                       # broadcast (or a single entry)
        view = [1] * len(stack_shape)
        view[axis] = size
        offsets = offsets + (np.arange(size, dtype=np.int64)
                             * stride).reshape(view)
    offsets = np.ascontiguousarray(offsets.reshape(-1))
    offsets.setflags(write=False)
    return offsets


def gemm_pieces(a, b, out, bounds, by_rows):
    """``out[...] = a @ b`` as prange jobs, one per stack entry and piece
    (``bounds``: boundaries of rows when ``by_rows``, else of columns).

    Returns False, having done nothing, where an operand is not a
    float32/float64 array BLAS can read in place (the caller then computes
    the product otherwise); BLAS must already be single-threaded.
    """
    dtype = out.dtype
    if (dtype not in (np.float32, np.float64) or a.dtype != dtype
            or b.dtype != dtype or not available()):
        return False
    item = dtype.itemsize
    m, k = a.shape[-2:]
    n = b.shape[-1]
    flags = [operand(x.shape[-2:], x.strides[-2:], item) for x in (a, b, out)]
    if any(f is None for f in flags) or flags[2][0] != _NO_TRANS:
        return False
    (ta, lda), (tb, ldb), (_, ldc) = flags
    stack = out.shape[:-2]
    a_step = lda * item if ta == _NO_TRANS else item    # one row of A
    b_step = item if tb == _NO_TRANS else ldb * item    # one column of B
    c_step = ldc * item if by_rows else item
    if 0 in out.shape:
        return True
    bounds = _bounds(tuple(bounds))
    c_offsets = _stack_offsets(out, stack)
    jobs = _jobs_parallel if c_offsets.size * (bounds.size - 1) > 1 else _jobs_serial
    jobs(dtype == np.float64, m, n, k,
         a.ctypes.data, _stack_offsets(a, stack), ta, lda, a_step,
         b.ctypes.data, _stack_offsets(b, stack), tb, ldb, b_step,
         out.ctypes.data, c_offsets, ldc, c_step, bounds, by_rows)
    return True
