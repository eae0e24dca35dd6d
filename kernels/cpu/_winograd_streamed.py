"""Winograd's tuple GEMMs with the filters transformed inside each job:
no transformed weights kept, read or compared.

The cached path (:mod:`._winograd_gemm`) multiplies by a U transformed
once per weight array and kept in the weight cache.  On deep layers with
few tiles U is large and used little: ResNet-50's 512@7^2 at batch 4 has
U = 36 x 512 x 512 floats (38 MB, four times the filter) for 16 tiles a
plane, and every call reads it from memory and compares the filter with
its stored copy (2 x 9.4 MB) before that: with caches cold (as between a
network's layers) the comparison took 0.71 ms and the GEMMs 1.74 of a
2.9 ms call, both bound by memory (Xeon VM, ~20 GB/s).  Here each parallel
job, one strip of ``width`` output channels, reads its filters once:

1. for a block of input channels it gathers each channel's taps of the
   strip's filters (one vector of output channels at a time, their
   filters ``C kH kW`` elements apart) and transforms them in registers
   into ``U`` rows laid out as the GEMM's panel.  Reading whole runs of
   taps with vector loads and transposing them in registers instead took
   1.7x as long on the Xeon VM (512@7^2's transforms, 2 threads: 1.36 ms
   against 0.80, alternated in one process), and asking for the next
   channels' taps ahead of the gathers 1.1-1.2x as long;
2. multiplies V's rows by that block with the GEMM's register tile
   (:func:`kernels.cpu._panel_gemm.first_tile_rows` and its siblings),
   accumulating over the blocks of input channels in the order c = 0, 1,
   ... (the sums of the cached path, on this U);
3. puts the last block's sums straight into M.

U here is computed in ``w``'s dtype (the cached U in float64, rounded
once): it differs from the cached one by a few units in the last place
(the transform's own rounding, a sum of at most r terms per axis), which
the error constant of the tile covers (docs/accuracy.md).  Rows of G
that are mirror images (``G[a', j] = (-1)^j G[a, j]``, the points +-p)
share their even and odd partial sums, so F(4,3)'s transform takes 13
multiplications and additions per column instead of 21.

The transform also checks the filter for NaN and Inf (``u * 0`` for an
output u that every tap enters is 0 only when u is finite): a job reports
its strip's filters as finite or not, so that the front end need not pass
over the filter (a non-finite one goes to direct, as elsewhere).
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._winograd_math import transform_matrices
from ._panel_gemm import first_tile_rows, last_tile_rows, panel_tile_rows
from ._winograd_unrolled import UNROLLED_TILES, output_block
from ._simd import VECTOR_BITS, lanes_of
from .direct import TILE_VECTORS, lanes, tile_columns

__all__ = ["streams", "strip_width", "filter_tag", "prepare_conv",
           "streamed_conv", "streamed_gemm", "transform_strip"]

# Rows (tiles) of V per register tile, as the cached path's.
TILE_ROWS = 6


def strip_width(dtype):
    """Output channels per job (one register tile's width)."""
    return tile_columns(dtype)


def streams(tile):
    """Whether this path computes ``tile``: the square tiles whose
    transforms are unrolled (F(2,3), F(4,3): :data:`UNROLLED_TILES`), the
    3x3 tiles of ResNet-style layers, whose staged input and output
    transforms are the fast ones."""
    return (tile.m_h == tile.m_w and tile.r_h == tile.r_w
            and (tile.m_h, tile.r_h) in UNROLLED_TILES)


def filter_tag(tile):
    """The compile-time tag of ``tile``'s filter transform: the tag of its
    unrolled transforms (``winograd._tile_tag``), a tuple whose length is
    the tile's code in :data:`UNROLLED_TILES` (a tuple through a parallel
    loop must be flat)."""
    return (0,) * UNROLLED_TILES[(tile.m_h, tile.r_h)]


# --------------------------------------------------------------------------
# The filter transform of one input channel of a strip, gathered
# --------------------------------------------------------------------------

class _VectorGEP(ir.instructions.Instruction):
    """``getelementptr inbounds T, T* base, <n x i32> offsets``: a vector
    of pointers, which AVX-512/AVX2 gathers read with 32-bit offsets
    (llvmlite's ``gep`` takes scalar indices only)."""

    def __init__(self, parent, ptr, offsets, name=""):
        super().__init__(parent, ir.VectorType(ptr.type, offsets.type.count),
                         "getelementptr", [ptr, offsets], name=name)

    def descr(self, buf):
        ptr, offsets = self.operands
        buf.append(f"getelementptr inbounds {ptr.type.pointee}, {ptr.type} "
                   f"{ptr.get_reference()}, {offsets.type} "
                   f"{offsets.get_reference()}\n")


def _vector_gep(builder, ptr, offsets):
    instr = _VectorGEP(builder.block, ptr, offsets)
    builder._insert(instr)
    return instr


def _mirror_pairs(G):
    """Rows of ``G`` as ("one", a) or ("pair", a, a2) with ``G[a2, j] =
    (-1)^j G[a, j]`` and both the even and the odd part nonzero."""
    rows, done = [], set()
    sign = np.array([(-1) ** j for j in range(G.shape[1])])
    for a in range(G.shape[0]):
        if a in done:
            continue
        done.add(a)
        even, odd = G[a, ::2], G[a, 1::2]
        mate = None
        if even.any() and odd.any():
            for a2 in range(a + 1, G.shape[0]):
                if a2 not in done and np.array_equal(G[a2], G[a] * sign):
                    mate = a2
                    break
        if mate is None:
            rows.append(("one", a))
        else:
            done.add(mate)
            rows.append(("pair", a, mate))
    return rows


def _weighted_sum(builder, coefs, values, zero):
    """sum_j coefs[j] values[j] in index order: zero terms left out, +-1
    as addition and subtraction, no fused multiply-adds (the same bits on
    any machine)."""
    total = None
    for c, value in zip(coefs, values):
        c = float(c)
        if c == 0.0:
            continue
        negate = c == -1.0
        term = value if c in (1.0, -1.0) else builder.fmul(
            ir.Constant(value.type, [c] * value.type.count), value)
        if total is None:
            total = builder.fneg(term) if negate else term
        else:
            total = (builder.fsub(total, term) if negate
                     else builder.fadd(total, term))
    return zero if total is None else total


def _transform_axis(builder, G, values, zero):
    """``[sum_j G[a, j] values[j] for a]``, mirror rows sharing their even
    and odd partial sums."""
    out = [None] * G.shape[0]
    for row in _mirror_pairs(G):
        if row[0] == "one":
            out[row[1]] = _weighted_sum(builder, G[row[1]], values, zero)
            continue
        _, a, a2 = row
        even = _weighted_sum(builder, G[a, ::2], values[::2], zero)
        odd = _weighted_sum(builder, G[a, 1::2], values[1::2], zero)
        out[a], out[a2] = builder.fadd(even, odd), builder.fsub(even, odd)
    return out


def _row_of_all_taps(G):
    """A row of ``G`` without zeros: the output of the transform that
    every tap enters (the tiles of :func:`streams` have one)."""
    return next(a for a in range(G.shape[0]) if np.all(G[a] != 0))


def _tag_tile(tag):
    """(m_h, m_w, r_h, r_w) of a :func:`filter_tag`."""
    m, r = next(tile for tile, code in UNROLLED_TILES.items()
                if code == tag.count)
    return m, m, r, r


@functools.lru_cache(maxsize=None)
def _matrices(m_h, m_w, r_h, r_w, dtype_name):
    """G_h, G_w rounded to the dtype (their entries are the constants of
    the emitted code)."""
    return (transform_matrices(m_h, r_h)[1].astype(dtype_name),
            transform_matrices(m_w, r_w)[1].astype(dtype_name))


@intrinsic
def _transform_channel(typingctx, tag, w, w0, stride, dst, d0, plane, flag):
    """For one strip of ``width`` output channels (:func:`strip_width`)
    and one input channel: ``dst[d0 + p plane + l] = (G_h g_l G_w^T)[p]``
    with ``g_l[i, j] = w[w0 + l stride + i r_w + j]``, and ``flag[:]`` (one
    vector) += ``u * 0`` for an output u that every tap enters (NaN once a
    tap is NaN or Inf, or once u overflows: such filters go to direct,
    which gives the right result anyway)."""
    if not isinstance(tag, types.UniTuple):
        return None
    m_h, m_w, r_h, r_w = _tag_tile(tag)
    sig = types.void(tag, w, w0, stride, dst, d0, plane, flag)

    def codegen(context, builder, signature, args):
        _, w_v, w0_v, stride_v, dst_v, d0_v, plane_v, flag_v = args
        dtype = w.dtype
        G_h, G_w = _matrices(m_h, m_w, r_h, r_w, str(dtype))
        n_lanes = lanes(dtype)
        width = TILE_VECTORS * n_lanes
        elem = context.get_value_type(dtype)
        align = context.get_abi_sizeof(elem)
        i1, i32, i64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
        vec = ir.VectorType(elem, n_lanes)
        offsets_t = ir.VectorType(i32, n_lanes)
        gather = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(vec, [ir.VectorType(elem.as_pointer(), n_lanes),
                                  i32, ir.VectorType(i1, n_lanes), vec]),
            "llvm.masked.gather.v%d%s.v%dp0" % (
                n_lanes, "f32" if align == 4 else "f64", n_lanes))
        all_lanes = ir.Constant(ir.VectorType(i1, n_lanes), [1] * n_lanes)
        undef = ir.Constant(vec, ir.Undefined)
        zero = ir.Constant(vec, [0.0] * n_lanes)
        w_data = context.make_array(w)(context, builder, w_v).data
        dst_data = context.make_array(dst)(context, builder, dst_v).data
        flag_ptr = builder.bitcast(
            context.make_array(flag)(context, builder, flag_v).data,
            vec.as_pointer())
        # Lane l's filter starts l * stride elements on (32-bit offsets:
        # a strip's filters span width * C * r_h * r_w elements).
        stride32 = builder.trunc(stride_v, i32)
        splat = builder.shuffle_vector(
            builder.insert_element(ir.Constant(offsets_t, ir.Undefined),
                                   stride32, ir.Constant(i32, 0)),
            ir.Constant(offsets_t, ir.Undefined),
            ir.Constant(offsets_t, [0] * n_lanes))
        lane_offsets = builder.mul(splat, ir.Constant(offsets_t,
                                                      list(range(n_lanes))))
        bad = builder.load(flag_ptr, align=align)
        alpha_w = G_w.shape[0]
        a_all, b_all = _row_of_all_taps(G_h), _row_of_all_taps(G_w)
        for v in range(TILE_VECTORS):
            first = builder.gep(w_data, [builder.add(
                w0_v, builder.mul(stride_v, ir.Constant(i64, v * n_lanes)))],
                inbounds=True)
            taps = [[builder.call(gather, [
                        _vector_gep(builder, builder.gep(
                            first, [ir.Constant(i64, i * r_w + j)],
                            inbounds=True), lane_offsets),
                        ir.Constant(i32, align), all_lanes, undef])
                     for j in range(r_w)] for i in range(r_h)]
            # Along the rows of each filter row first (G_w), then down the
            # columns (G_h), as the cached transform.
            rows = [_transform_axis(builder, G_w, row, zero) for row in taps]
            for b in range(alpha_w):
                column = _transform_axis(
                    builder, G_h, [rows[i][b] for i in range(r_h)], zero)
                if b == b_all:
                    # Every tap enters this output: NaN/Inf in one makes
                    # it NaN/Inf, and it times 0 NaN.
                    bad = builder.fadd(bad, builder.fmul(column[a_all], zero))
                for a, value in enumerate(column):
                    plane_start = builder.mul(
                        plane_v, ir.Constant(i64, a * alpha_w + b))
                    index = builder.add(d0_v, builder.add(
                        plane_start, ir.Constant(i64, v * n_lanes)))
                    builder.store(value, builder.bitcast(
                        builder.gep(dst_data, [index], inbounds=True),
                        vec.as_pointer()), align=align)
        builder.store(bad, flag_ptr, align=align)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _transform_block(tag, wf, w0, stride, ub, nc, taps, width, flag):
    """U of a block of ``nc`` input channels of a strip (the first at
    ``w0``) into ``ub`` (planes :func:`_plane_stride` apart), channel by
    channel."""
    plane = _plane_stride(nc, width)
    for c in range(nc):
        _transform_channel(tag, wf, w0 + c * taps, stride, ub, c * width,
                           plane, flag)


@njit(cache=True)
def transform_strip(tag, w, strip, c_lo, nc, n_planes):
    """The strip's filter transform for input channels ``c_lo .. c_lo + nc
    - 1`` as the streamed GEMM makes it: (U as (n_planes, nc, width),
    whether the taps read were finite).  For tests and timing."""
    taps = w.shape[2] * w.shape[3]
    stride = w.shape[1] * taps
    n_lanes = VECTOR_BITS // (8 * w.itemsize)
    width = TILE_VECTORS * n_lanes
    plane = _plane_stride(nc, width)
    block = np.empty(n_planes * plane, w.dtype)
    flag = np.zeros(n_lanes, w.dtype)
    wf = w.reshape(w.size)
    _transform_block(tag, wf, strip * width * stride + c_lo * taps, stride,
                     block, nc, taps, width, flag)
    out = np.empty((n_planes, nc, width), w.dtype)
    for p in range(n_planes):
        for c in range(nc):
            start = p * plane + c * width
            out[p, c, :] = block[start:start + width]
    return out, np.isfinite(flag.sum())


# --------------------------------------------------------------------------
# The GEMM over a block of U
# --------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _plane_stride(nc, width):
    """Elements between two planes of a block of U: nc rows of a strip
    and one vector more, so that the transform's stores to its planes (at
    the same place in each) do not all fall in one set of the L1 cache
    (a block of 32 channels is 8 KiB a plane in float32: 0.61 ms for
    512@7^2's transforms with planes 36 rows of a strip apart, 1.7 with
    8 KiB, 2 threads, Xeon VM)."""
    return nc * width + width // TILE_VECTORS


@njit(cache=True, inline="always")
def _block_product(vf, ub, mb, mf, p, n_tiles, c_total, c_lo, nc, width, k0,
                   k_total, first, last):
    """Plane ``p``'s products of V's rows (input channels c_lo ..) by the
    block ``ub`` (P, nc, width): into M's strip directly (one block), the
    job's buffer ``mb`` (first, middle) or from it into M (last)."""
    b0 = p * _plane_stride(nc, width)
    for t0 in range(0, n_tiles, TILE_ROWS):
        rows = min(TILE_ROWS, n_tiles - t0)
        a0 = (p * n_tiles + t0) * c_total + c_lo
        m0 = (p * n_tiles + t0) * width
        o0 = (p * n_tiles + t0) * k_total + k0
        if first and last:
            first_tile_rows(rows, ub, b0, width, vf, a0, c_total, nc, mf, o0,
                            k_total)
        elif first:
            first_tile_rows(rows, ub, b0, width, vf, a0, c_total, nc, mb, m0,
                            width)
        elif last:
            last_tile_rows(rows, ub, b0, width, vf, a0, c_total, nc, mb, m0,
                           mf, o0, k_total)
        else:
            panel_tile_rows(rows, ub, b0, width, vf, a0, c_total, nc, mb, m0)


@njit(parallel=True, cache=True)
def _streamed_kernel(tag, v, w, mm, c_block, finite, y, at, bias, k0, tiles_h,
                     tiles_w):
    """One prange job per strip of output channels.  With ``y`` a
    placeholder (no images) the strip's sums go to M (``mm``); otherwise
    they stay in the job's buffer, whose layout (P, T, width) is M's for
    the strip alone, and the job's output transform reads them from
    there into y's channels ``k0 + strip width ..``."""
    n_planes, n_tiles, c_total = v.shape
    k_total = w.shape[0]
    taps = w.shape[2] * w.shape[3]
    width = TILE_VECTORS * (finite.shape[1])
    stride = c_total * taps
    fused = y.shape[0] > 0
    vf = v.reshape(v.size)
    wf = w.reshape(w.size)
    mf = mm.reshape(mm.size)
    for strip in prange(k_total // width):
        ub = np.empty(n_planes * _plane_stride(c_block, width), w.dtype)
        mb = np.empty(n_planes * n_tiles * width
                      if fused or c_total > c_block else 1, w.dtype)
        flag = np.zeros(finite.shape[1], w.dtype)
        w0 = strip * width * stride
        for c_lo in range(0, c_total, c_block):
            nc = min(c_block, c_total - c_lo)
            _transform_block(tag, wf, w0 + c_lo * taps, stride, ub, nc, taps,
                             width, flag)
            for p in range(n_planes):
                _block_product(vf, ub, mb, mf, p, n_tiles, c_total, c_lo, nc,
                               width, strip * width, k_total, c_lo == 0,
                               c_lo + nc == c_total and not fused)
        finite[strip, :] = flag
        if fused:
            m_strip = mb.reshape((n_planes, n_tiles, width))
            no_scratch = np.empty((0, 0, 0), w.dtype)   # unrolled tiles only
            tiles = tiles_h * tiles_w
            for n in range(y.shape[0]):
                output_block(tag, m_strip, n * tiles, tiles_w, n, 0, tiles_h,
                             0, tiles_w, at, at, bias, k0 + strip * width,
                             no_scratch, no_scratch[0], y)


@functools.lru_cache(maxsize=None)
def _placeholders(dtype):
    """Empty arrays for the kernel's arguments that a mode does not use
    (made once per dtype: zero-sized, never written)."""
    return (np.empty((0, 0, 0), dtype), np.empty((0, 0, 0, 0), dtype),
            np.empty(0, dtype))


@functools.lru_cache(maxsize=None)
def _output_matrix(tile, dtype):
    """A^T of ``tile`` (square) in ``dtype``, as the staged output
    transform uses it."""
    return transform_matrices(tile.m_h, tile.r_h, dtype)[0]


def streamed_gemm(tile, V, w, out, c_block):
    """``out[p] = V[p] @ U[p]`` with U, ``tile``'s transform of ``w`` (K,
    C, r_h, r_w) C-contiguous, made block by block inside the jobs (one
    strip of :func:`strip_width` output channels each; K a multiple of
    it).  ``V`` (P, T, C) and ``out`` (P, T, K) C-contiguous; ``c_block``
    input channels per block.  Returns whether ``w`` was finite."""
    _, no_y, no_bias = _placeholders(w.dtype)
    return _strips_runner(tile, w.dtype, w.shape[0], int(c_block), (0, 0))(
        V, w, out, no_y, no_bias, 0)


def streamed_conv(tile, V, w, y, bias, k0, tiles_hw, c_block):
    """:func:`streamed_gemm` followed by the output transform inside each
    job: the strip's M (P x T x width, 590 KB for 256@14^2 x 4 with
    F(4,3) in float32) goes from the job's buffer, in its core's cache, to
    y's channels ``k0 + strip width ..`` (``y`` (N, K_all, Ho, Wo),
    ``bias`` of K_all or None), instead of through a whole-batch M in
    memory and a second parallel stage.  ``V`` holds the N images'
    ``tiles_hw`` tiles each.  Returns whether ``w`` was finite."""
    return prepare_conv(tile, w.dtype, w.shape[0], tiles_hw, c_block)(
        V, w, y, bias, k0)


def prepare_conv(tile, dtype, k, tiles_hw, c_block):
    """:func:`streamed_conv` for ``k`` output channels, its constant
    arguments worked out once: a callable ``(V, w, y, bias, k0) ->
    finite``."""
    run = _strips_runner(tile, np.dtype(dtype), k, int(c_block),
                         tuple(tiles_hw))
    no_mm, _, no_bias = _placeholders(np.dtype(dtype))

    def conv(V, w, y, bias, k0):
        return run(V, w, no_mm, y, no_bias if bias is None else bias, k0)

    return conv


def _strips_runner(tile, dtype, k, c_block, tiles_hw):
    """:func:`_streamed_kernel` over the strips of ``k`` output channels
    (into M, or through the output transform into y), its constant
    arguments worked out once: a callable ``(V, w, mm, y, bias, k0) ->
    whether w was finite``."""
    shape = (k // strip_width(dtype), lanes_of(dtype.itemsize))
    tag = filter_tag(tile)
    a_t = _output_matrix(tile, dtype)
    tiles_h, tiles_w = tiles_hw

    def run(V, w, mm, y, bias, k0):
        finite = np.empty(shape, dtype)
        _streamed_kernel(tag, V, w, mm, c_block, finite, y, a_t, bias,
                         int(k0), tiles_h, tiles_w)
        return bool(np.isfinite(finite.sum()))

    return run
