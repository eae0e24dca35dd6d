"""The host's SIMD width and register-level helpers that kernels of
different algorithms share: :func:`lanes` (a dtype's lanes, a constant in
jitted code), :func:`transpose_square` (a lanes x lanes block
transposed in registers: direct's channel tile packs its filters with it,
Winograd's fused jobs their input channels last), and the IR pieces
:func:`transposed` and :func:`store_first_lanes` with which direct's
channel tile and :func:`store_columns` (Winograd's output rows) write
sums held channels fastest as runs of pixels, one vector store a run.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import _tuning

__all__ = ["VECTOR_BITS", "lanes_of", "lanes", "transpose_square",
           "copy_lanes", "transposed", "store_first_lanes", "store_columns",
           "simd_vector", "vector_pointer"]

VECTOR_BITS = _tuning.host_vector_bits()


def lanes_of(itemsize):
    """SIMD lanes for elements of ``itemsize`` bytes."""
    return VECTOR_BITS // (8 * itemsize)


def lanes(a):  # pragma: no cover
    """SIMD lanes of ``a``'s dtype, a constant in jitted code."""
    raise NotImplementedError("only callable from jitted code")


@overload(lanes, inline="always")
def _lanes_impl(a):
    n = lanes_of(a.dtype.bitwidth // 8)
    return lambda a: n


def simd_vector(context, dtype):
    """``(vector type, element alignment in bytes, lanes)`` of one SIMD
    register of ``dtype`` elements (a Numba type) in LLVM IR."""
    elem = context.get_value_type(dtype)
    align = context.get_abi_sizeof(elem)
    n = lanes_of(align)
    return ir.VectorType(elem, n), align, n


def vector_pointer(builder, data, index, vec):
    """A pointer of type ``vec*`` to element ``index`` of ``data``."""
    return builder.bitcast(builder.gep(data, [index], inbounds=True),
                           vec.as_pointer())


def transposed(builder, rows):
    """The columns of the square whose rows are ``rows`` (n LLVM vectors
    of n lanes, n a power of two), emitted as log2(n) stages of shuffles
    that swap the off-diagonal blocks."""
    n = len(rows)
    rows = list(rows)

    def mask(values):
        return ir.Constant(ir.VectorType(ir.IntType(32), n), values)

    m = 1
    while m < n:
        # swap the off-diagonal m x m blocks of every 2m x 2m block
        for p in range(n):
            if p & m:
                continue
            q = p + m
            low = [j if not j & m else n + j - m for j in range(n)]
            high = [j + m if not j & m else n + j for j in range(n)]
            rows[p], rows[q] = (
                builder.shuffle_vector(rows[p], rows[q], mask(low)),
                builder.shuffle_vector(rows[p], rows[q], mask(high)))
        m *= 2
    return rows


def store_first_lanes(builder, value, ptr, count, align):
    """Store lanes ``0 .. count - 1`` of the vector ``value`` at ``ptr``
    (a pointer to the vector's type; ``count`` a Python int): one plain
    store where ``count`` is all the lanes, else ``llvm.masked.store``
    with a constant mask (nothing past ``count`` is written)."""
    n = value.type.count
    if count >= n:
        builder.store(value, ptr, align=align)
        return
    i1, i32 = ir.IntType(1), ir.IntType(32)
    mask = ir.Constant(ir.VectorType(i1, n),
                       [int(lane < count) for lane in range(n)])
    bits = 8 * align
    store_fn = builder.module.declare_intrinsic(
        f"llvm.masked.store.v{n}f{bits}.p0v{n}f{bits}", (), ir.FunctionType(
            ir.VoidType(), [value.type, ptr.type, i32, mask.type]))
    builder.call(store_fn, [value, ptr, ir.Constant(i32, align), mask])


@intrinsic
def transpose_square(typingctx, src, s0, s_stride, dst, d0, d_stride):
    """``dst[d0 + j*d_stride + i] = src[s0 + i*s_stride + j]`` for ``i, j <
    lanes``: a lanes x lanes block transposed in registers (lanes vector
    loads, log2(lanes) stages of shuffles swapping off-diagonal blocks,
    lanes vector stores)."""
    dtype = src.dtype

    def codegen(context, builder, signature, args):
        src_v, s0_v, s_stride_v, dst_v, d0_v, d_stride_v = args
        s_data = context.make_array(src)(context, builder, src_v).data
        d_data = context.make_array(dst)(context, builder, dst_v).data
        vec, align, n = simd_vector(context, dtype)
        i64 = ir.IntType(64)

        def at(data, base, stride, row):
            return vector_pointer(builder, data, builder.add(
                base, builder.mul(stride, ir.Constant(i64, row))), vec)

        rows = transposed(builder, [
            builder.load(at(s_data, s0_v, s_stride_v, i), align=align)
            for i in range(n)])
        for j in range(n):
            builder.store(rows[j], at(d_data, d0_v, d_stride_v, j),
                          align=align)
        return context.get_dummy_value()

    return types.void(src, s0, s_stride, dst, d0, d_stride), codegen


@intrinsic
def copy_lanes(typingctx, src, s0, dst, d0, n):
    """``dst[d0 + l] = src[s0 + l]`` for ``l < min(n, lanes)``: one vector
    load and store, masked where ``n`` is below the lanes (nothing past
    ``n`` is read or written, so a run's last piece needs no scalar
    loop)."""
    dtype = src.dtype

    def codegen(context, builder, signature, args):
        src_v, s0_v, dst_v, d0_v, n_v = args
        s_data = context.make_array(src)(context, builder, src_v).data
        d_data = context.make_array(dst)(context, builder, dst_v).data
        vec, align, count = simd_vector(context, dtype)
        i32 = ir.IntType(32)
        s_ptr = vector_pointer(builder, s_data, s0_v, vec)
        d_ptr = vector_pointer(builder, d_data, d0_v, vec)
        full = builder.icmp_signed(">=", n_v, ir.Constant(n_v.type, count))
        with builder.if_else(full) as (whole, part):
            with whole:
                builder.store(builder.load(s_ptr, align=align), d_ptr,
                              align=align)
            with part:
                # lane l is on where l < n
                limit = builder.trunc(n_v, i32)
                splat = builder.insert_element(
                    ir.Constant(ir.VectorType(i32, count), None), limit,
                    ir.Constant(i32, 0))
                splat = builder.shuffle_vector(
                    splat, ir.Constant(ir.VectorType(i32, count), None),
                    ir.Constant(ir.VectorType(i32, count), [0] * count))
                mask = builder.icmp_signed(
                    "<", ir.Constant(ir.VectorType(i32, count),
                                     list(range(count))), splat)
                module = builder.module
                ptr_t = vec.as_pointer()
                suffix = f"v{count}f{8 * align}.p0v{count}f{8 * align}"
                load_fn = module.declare_intrinsic(
                    f"llvm.masked.load.{suffix}", (), ir.FunctionType(
                        vec, [ptr_t, i32, mask.type, vec]))
                store_fn = module.declare_intrinsic(
                    f"llvm.masked.store.{suffix}", (), ir.FunctionType(
                        ir.VoidType(), [vec, ptr_t, i32, mask.type]))
                zero = ir.Constant(vec, None)
                value = builder.call(load_fn, [s_ptr, ir.Constant(i32, align),
                                               mask, zero])
                builder.call(store_fn, [value, d_ptr,
                                        ir.Constant(i32, align), mask])
        return context.get_dummy_value()

    return types.void(src, s0, dst, d0, n), codegen


def _columns_store(rows):
    """The intrinsic ``store_columns_{rows}`` (see :func:`store_columns`)."""

    @intrinsic
    def store_columns_of(typingctx, src, r0, c0, add, a0, dst, d0, d_stride,
                         count):
        dtype = src.dtype

        def codegen(context, builder, signature, args):
            (src_v, r0_v, c0_v, add_v, a0_v, dst_v, d0_v, stride_v,
             count_v) = args
            src_a = context.make_array(src)(context, builder, src_v)
            width = cgutils.unpack_tuple(builder, src_a.shape, 2)[1]
            add_data = context.make_array(add)(context, builder, add_v).data
            d_data = context.make_array(dst)(context, builder, dst_v).data
            vec, align, n = simd_vector(context, dtype)
            part = ir.VectorType(vec.element, rows)
            i32, i64 = ir.IntType(32), ir.IntType(64)

            def vector_at(data, index, of=vec):
                return vector_pointer(builder, data, index, of)

            def row(b):
                return builder.add(builder.mul(
                    builder.add(r0_v, ir.Constant(i64, b)), width), c0_v)

            shift = builder.load(vector_at(add_data, a0_v), align=align)
            square = [builder.fadd(builder.load(
                          vector_at(src_a.data, row(b)), align=align), shift)
                      for b in range(rows)]
            square += [ir.Constant(vec, ir.Undefined)] * (n - rows)
            columns = transposed(builder, square)
            whole = builder.icmp_signed(">=", count_v,
                                        ir.Constant(count_v.type, rows))
            with builder.if_else(whole) as (all_rows, some_rows):
                with all_rows:
                    for q, column in enumerate(columns):
                        index = builder.add(d0_v, builder.mul(
                            stride_v, ir.Constant(i64, q)))
                        head = builder.shuffle_vector(
                            column, column, ir.Constant(
                                ir.VectorType(i32, rows), list(range(rows))))
                        builder.store(head, vector_at(d_data, index, part),
                                      align=align)
                with some_rows:
                    for q, column in enumerate(columns):
                        index = builder.add(d0_v, builder.mul(
                            stride_v, ir.Constant(i64, q)))
                        for b in range(rows - 1):
                            inside = builder.icmp_signed(
                                ">", count_v, ir.Constant(count_v.type, b))
                            with builder.if_then(inside):
                                builder.store(
                                    builder.extract_element(
                                        column, ir.Constant(i32, b)),
                                    builder.gep(d_data, [builder.add(
                                        index, ir.Constant(i64, b))],
                                        inbounds=True), align=align)
            return context.get_dummy_value()

        sig = types.void(src, r0, c0, add, a0, dst, d0, d_stride, count)
        return sig, codegen

    return store_columns_of


_COLUMN_STORES = {}


def store_columns(rows):
    """An intrinsic ``f(src, r0, c0, add, a0, dst, d0, d_stride, count)``
    that writes ``dst[d0 + q*d_stride + b] = src[r0 + b, c0 + q] +
    add[a0 + q]`` for ``q < lanes`` and ``b < min(count, rows)``: ``rows``
    rows of lanes channels of a 2-D C-contiguous scratch, each channel's
    ``rows`` values written as one short vector (lanes x lanes squares
    transposed in registers, the rows past ``rows`` undefined and never
    stored).  A Winograd tile's output rows go to ``y`` so, a run of
    ``m`` pixels a channel."""
    if rows not in _COLUMN_STORES:
        _COLUMN_STORES[rows] = _columns_store(rows)
    return _COLUMN_STORES[rows]
