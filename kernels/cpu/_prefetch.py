"""Software prefetch for Numba kernels: ``prefetch_row(a, i, j, n)``,
``prefetch_at(a, i)``, ``prefetch_write_at(a, i)``.

Memory-bound kernels that do a little arithmetic on short rows (pooling
on 112-wide feature maps) keep too few cache misses in flight for the
hardware prefetcher to hide memory latency: a 3x3/2 max pool over
(8, 64, 112, 112) float32 ran at 2.0 ms with its input out of cache and
1.2 ms in cache, while a plain streaming kernel over the same bytes took
1.2 ms and 0.7 ms.  Asking for the rows that a later iteration will read
(LLVM's ``llvm.prefetch``) brought the out-of-cache time to 1.7 ms.  The
1x1 layers' GEMM packs panels from rows 12.5 KiB apart (64@56^2), too
many streams for the hardware too; ``prefetch_at`` asks for each row's
line 128 bytes on (without it, packing from the image lost 5-26 % with
cold caches; asking one line on instead of two, 256 x 64 @ 56^2 took 0.93
ms against 0.76: the L2 prefetcher already brings a line's pair).  The
same GEMM reads A (the filters) in place, a register tile's rows a
reduction apart: asking for the next tile's block while one computes
took 2048 -> 512 at 7^2 from 1.06-1.17 ms to 0.82-0.83 with the filters
out of cache (AVX-512 Xeon; 0.73-0.82 with them in cache either way).
``prefetch_write_at`` asks for a line to be written: the GEMM asks for
the next tile's place in the output while one computes, so that a tile's
stores do not wait for lines read from memory (a network's outputs are
written to memory that left the caches a pass ago: 64 -> 256 at 56^2 after
a 64 MB pass took 1.25 ms, 0.50 in cache; with the prefetch 1.04).

The intrinsic is compiled into the calling function (``cache=True`` still
works).  If this llvmlite cannot emit it, :data:`AVAILABLE` is False and
both compile to nothing.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["prefetch_row", "prefetch_at", "prefetch_write_at", "emit_prefetch",
           "AVAILABLE"]

# Bytes per cache line: one prefetch per line.
LINE_BYTES = 64


@intrinsic
def _prefetch(typingctx, arr, i, j, k):
    """Prefetch a[i, j, k] (a 3-D array) for reading into all cache levels."""
    if not (isinstance(arr, types.Array) and arr.ndim == 3):
        return None
    return types.void(arr, i, j, k), _prefetch_codegen


@intrinsic
def _prefetch_at(typingctx, arr, i):
    """Prefetch a[i] (a 1-D array) for reading into all cache levels; an
    index past the end is harmless (a prefetch never faults)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1):
        return None
    return types.void(arr, i), _prefetch_codegen


@intrinsic
def _prefetch_write_at(typingctx, arr, i):
    """Ask for a[i] (a 1-D array) in every cache level, to be written
    (``prefetchw`` on x86: the line arrives owned, so that the store
    finds it instead of waiting for it); past the end is harmless."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1):
        return None
    return types.void(arr, i), _prefetch_write_codegen


def _prefetch_write_codegen(context, builder, signature, args):
    return _prefetch_codegen(context, builder, signature, args, write=True)


def _prefetch_codegen(context, builder, signature, args, write=False):
    """``llvm.prefetch`` of the element of array ``args[0]`` at the
    indices ``args[1:]`` (no bounds check, no wraparound), for reading,
    or for writing where ``write``."""
    aryty = signature.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    idx = [context.cast(builder, v, t, types.intp)
           for v, t in zip(args[1:], signature.args[1:])]
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx,
                                   wraparound=False)
    emit_prefetch(builder, ptr, write)
    return context.get_dummy_value()


def emit_prefetch(builder, ptr, write=False, locality=3):
    """Emit ``llvm.prefetch`` of the LLVM pointer ``ptr`` into every cache
    level (``locality`` 3; 2 leaves L1 out), for reading or for writing
    where ``write`` (for intrinsics that build their own loops; check
    :data:`AVAILABLE` first)."""
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty,
                                        "llvm.prefetch.p0")
    # (address, rw = read or write, locality, data cache)
    builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, int(write)),
                      ir.Constant(i32, locality), ir.Constant(i32, 1)])


@njit(cache=True, inline="always")
def _prefetch_row(a, i, j, n):
    """Prefetch a[i, j, :n], one request per cache line."""
    step = max(1, LINE_BYTES // a.itemsize)
    for k in range(0, n, step):
        _prefetch(a, i, j, k)


def _probe():
    """Compile and run the intrinsic once; False when this llvmlite can't."""
    import numpy as np

    @njit
    def probe(a):
        _prefetch(a, 0, 0, 0)

    try:
        probe(np.zeros((1, 1, 1), np.float32))
    except Exception:  # noqa: BLE001 - any compile failure means "no"
        return False
    return True


AVAILABLE = _probe()

if AVAILABLE:
    prefetch_row = _prefetch_row
    prefetch_at = _prefetch_at
    prefetch_write_at = _prefetch_write_at
else:
    @njit(cache=True, inline="always")
    def prefetch_row(a, i, j, n):
        """No-op: llvm.prefetch could not be compiled here."""
        return None

    @njit(cache=True, inline="always")
    def prefetch_at(a, i):
        """No-op: llvm.prefetch could not be compiled here."""
        return None

    @njit(cache=True, inline="always")
    def prefetch_write_at(a, i):
        """No-op: llvm.prefetch could not be compiled here."""
        return None
