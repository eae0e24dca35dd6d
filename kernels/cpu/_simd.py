"""The host's SIMD width and register-level helpers that kernels of
different algorithms share: :func:`lanes` (a dtype's lanes, a constant in
jitted code) and :func:`transpose_square` (a lanes x lanes block
transposed in registers: direct's channel tile packs its filters with it,
Winograd's fused jobs their input channels last).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from . import _tuning

__all__ = ["VECTOR_BITS", "lanes_of", "lanes", "transpose_square"]

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
        elem = context.get_value_type(dtype)
        align = context.get_abi_sizeof(elem)
        n = lanes_of(align)
        vec = ir.VectorType(elem, n)
        i64 = ir.IntType(64)

        def at(data, base, stride, row):
            index = builder.add(base, builder.mul(stride,
                                                  ir.Constant(i64, row)))
            ptr = builder.gep(data, [index], inbounds=True)
            return builder.bitcast(ptr, vec.as_pointer())

        def mask(values):
            return ir.Constant(ir.VectorType(ir.IntType(32), n), values)

        rows = [builder.load(at(s_data, s0_v, s_stride_v, i), align=align)
                for i in range(n)]
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
        for j in range(n):
            builder.store(rows[j], at(d_data, d0_v, d_stride_v, j),
                          align=align)
        return context.get_dummy_value()

    return types.void(src, s0, s_stride, dst, d0, d_stride), codegen
