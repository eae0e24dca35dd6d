"""Direct convolution's channel tile: SIMD lanes over output channels.

:mod:`kernels.cpu.direct`'s pixel tile puts consecutive virtual outputs of
one plane in its SIMD lanes; per tap it loads ``TILE_VECTORS`` unaligned
vectors of input and broadcasts one filter value per channel (6 x 4 on
AVX-512: 24 multiply-adds).  The channel tile puts ``lanes`` consecutive
*output channels* in a vector and ``COLS`` pixels of one output row
beside them: per tap it loads ``NVEC`` vectors of filter values (packed on
every call, channels fastest) and broadcasts ``COLS`` input values from
direct's packed input (:mod:`kernels.cpu._direct_packing`), ``COLS x
NVEC`` multiply-adds (14 x 2 = 28 on AVX-512).  It asks for the filter vectors
``PREFETCH_TAPS`` taps ahead and for the input lines ``X_PREFETCH_TAPS``
taps ahead.

Each output is computed with the same chain as the pixel tile (the bias,
then ``llvm.fmuladd`` over the taps ``r = (c, i, j)`` in increasing order):
the two tiles give the same bits.

Stages (:func:`conv_channels`, one parallel call): pack the input as
direct does (zero-padded polyphase planes: a strided layer's taps read
contiguous pixels too); then tasks over (group, channel block, image,
chunk of rows), channel block slowest so that a thread keeps one block
of packed filters in L2 for all its images, or, where the packed input
is larger than the filters (:func:`rows_outer`), over (group, image,
chunk of rows, run of channel blocks), each row computed for every block
of the run in turn so that its packed input is read from L1 or L2 once
for all of them.  Filters are packed (:func:`pack_block`: lanes x lanes
squares transposed in registers, :func:`._simd.transpose_square`) all
before the tasks where rows are outside blocks, and, where blocks are
outside rows, by each thread into its own part of the scratch, a block
when its run of tasks reaches it: written and read again while in L2,
with no parallel step of its own before the tasks.  ResNet-50's
256@28^2/2 at batch 1 (filters 2.25 MiB) ran 1.12-1.17x faster inside
the network's sequence, VGG-16's 512@28^2 layers 1.06-1.12x through
direct (docs/performance.md section AY).  Where
those tasks are too few for the threads, or (rows outside blocks) a
task's rows would read more than half the core's L2 of packed input,
rows are also cut into chunks of columns (:func:`task_cols`): a 1-D
signal is a single row, and with one or two channel blocks (32 or 64
channels) it ran on one or two tasks.  1-D ``conv1d``, C = K, batch 1,
caches cold, paired in one process (Xeon VM, docs/performance.md section
AN), whole rows' time over chunks': 32 channels k = 3 / 9 at L = 1024
1.11 / 1.25, 4096 1.48 / 1.63, 65536 1.74 / 1.84; 64 channels 1.02-1.25;
128 and 256 channels and 2-D layers within 3 %.
A row (or chunk) is covered by segments of ``COLS`` pixels, the last one
ending at its end (it overlaps the one before where ``COLS`` does not
divide the width: those outputs are computed and written twice, with the
same bits).

Where it is used (:func:`tile_for`,
``DirectTuning.channel_tile_max_filter_bytes_per_position``): layers
with more than one tap per channel, rows at least ``COLS`` wide
with overlaps computing at most 15 % extra, output channels per group a
multiple of ``NVEC x lanes``, and few enough filter bytes per output
position to repay packing them.  Measured against the pixel tile (Xeon VM,
AVX-512, float32, paired in one process, docs/performance.md section AF):
ResNet-50's 3x3 layers at batch 1 / 4 64@56^2 1.18 / 1.15, 128@28^2 1.27
/ 1.25, 256@14^2 1.21 / 1.24; VGG-16's 1.06-1.26.  It lost on 1x1 layers
(0.55-1.22: a new plane's line per tap) and 7x7 planes in two-row tiles
(0.82-1.04): those keep the pixel tile.  Strided layers took it from
stop 35, with the rows-outer order: stride-2 3x3 at batch 1 / 4, inputs
out of cache, pixel tile's time over the channel tile's: 64@56^2 1.26,
128@56^2 1.13 / 1.29, 256@28^2 1.04 / 1.22; ResNet's 7x7/2 stem 1.05 /
1.06 (with the block-outer order alone 0.95-1.08: stop 34 kept them off).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import config, get_thread_id, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _prefetch, _tuning
from ._simd import VECTOR_BITS, lanes_of
from ._simd import lanes as _lanes
from ._simd import simd_vector as _simd_vector
from ._simd import store_first_lanes as _store_first_lanes
from ._simd import transpose_square as _transpose_square
from ._simd import transposed as _transposed
from ._simd import vector_pointer as _vector_pointer
from ._direct_packing import (pack_into, packed_geometry, packed_size,
                              tap_offsets)
from ._workspace import Workspace

__all__ = ["COLS", "NVEC", "PREFETCH_TAPS", "X_PREFETCH_TAPS", "lanes_of",
           "tile_applies", "tile_for", "pack_filters", "pack_block",
           "channel_tile", "channel_tile_buffer",
           "store_tile", "conv_channels", "task_rows", "task_cols",
           "MIN_TASK_COLS", "input_bytes_per_column", "run", "prepare"]

# Pixels and vectors of channels of the tile: 28 accumulators of
# AVX-512's 32 registers (two more hold the tap's filter vectors); 12 of
# AVX2's 16 (not measured there: the tile is off by default on AVX2).
COLS, NVEC = (14, 2) if VECTOR_BITS == 512 else (6, 2)

# Taps ahead of the one being computed whose filter vectors, and input
# lines, are asked for (llvm.prefetch).  Filters, 512@7^2 batch 1: none
# 1.11 ms, 8 taps ahead 1.02-1.43, 32 ahead 0.96-1.00.  Input, paired
# against the pixel tile (ratios, batch 1 / 4): none 64@56^2 1.11 / 1.04,
# 128@28^2 1.10 / 1.12, 256@14^2 0.95 / 1.07; 4 ahead 1.10 / 1.14, 1.08 /
# 1.17, 0.94 / 1.10; 8 ahead 1.15 / 1.14, 1.22 / 1.20, 0.97 / 1.12.
# 24 ahead since strided layers run this tile (a channel's input is four
# phase planes, 2.7 channels ahead is one phase set): ms 8 -> 24, inputs
# and filters rotated, two runs (docs/performance.md section AH): 3x3/2
# 128@56^2 1.22-1.26 -> 1.11-1.12, 256@28^2 1.17-1.23 -> 1.08-1.09,
# 64@112^2 1.56-1.60 -> 1.25-1.27; stride-1 layers and VGG-16's within
# 2 %.
PREFETCH_TAPS = 32
X_PREFETCH_TAPS = 24

# Rows are covered by overlapping segments only where at least this share
# of the computed outputs is distinct.
_MIN_EFFICIENCY = 0.85

# A task's columns when rows are split among tasks (:func:`task_cols`):
# eight tiles.
MIN_TASK_COLS = 8 * COLS


def tile_applies(wo, kg, itemsize):
    """Whether the tile can cover rows ``wo`` wide (overlapping segments
    computing at most 15 % extra) for ``kg`` output channels per group."""
    if wo < COLS or kg % (NVEC * lanes_of(itemsize)):
        return False
    return wo / (-(-wo // COLS) * COLS) >= _MIN_EFFICIENCY


def tile_for(spec, tuning):
    """Whether direct computes ``spec`` (a :class:`kernels._dispatch.
    ConvSpec`) with the channel tile (see the module's docstring)."""
    bound = tuning.channel_tile_max_filter_bytes_per_position
    ho, wo = spec.out_hw
    kh, kw = spec.w_shape[2:]
    itemsize = np.dtype(spec.dtype).itemsize
    filter_bytes = math.prod(spec.w_shape) // spec.groups * itemsize
    return (bound > 0
            and kh * kw > 1
            and filter_bytes <= bound * spec.x_shape[0] * ho * wo
            and tile_applies(wo, spec.w_shape[0] // spec.groups, itemsize))




@njit(cache=True, inline="always")
def pack_block(flat, r_len, b, block, out, base):
    """``out[base + r*block + q] = flat[(b*block + q)*r_len + r]``: block
    ``b`` of the filters ``flat`` (K rows of ``r_len`` taps, flattened),
    taps major, channels fastest.  Squares of lanes x lanes are
    transposed in registers; the taps past the last whole square one by
    one."""
    lanes = _lanes(flat)
    r_whole = r_len - r_len % lanes
    for r0 in range(0, r_whole, lanes):
        for q0 in range(0, block, lanes):
            _transpose_square(flat, (b * block + q0) * r_len + r0, r_len,
                              out, base + r0 * block + q0, block)
    for r in range(r_whole, r_len):
        for q in range(block):
            out[base + r * block + q] = flat[(b * block + q) * r_len + r]


@njit(cache=True, inline="always")
def _pack_filters(w2, block, out):
    """``out[b, r, q] = w2[b*block + q, r]``: filters (K, R) as blocks of
    ``block`` channels, taps major, channels fastest (flat ``out``)."""
    k_total, r_len = w2.shape
    flat = w2.reshape(w2.size)
    for b in prange(k_total // block):
        pack_block(flat, r_len, b, block, out, b * r_len * block)


@njit(cache=True, parallel=True)
def _pack_filters_parallel(w2, block, out):
    _pack_filters(w2, block, out)


def pack_filters(w, block):
    """``w`` (K, ...) as :func:`conv_channels` reads it: blocks of
    ``block`` channels, taps major, channels fastest (flat)."""
    w2 = np.ascontiguousarray(w).reshape(w.shape[0], -1)
    out = np.empty(w2.size, w.dtype)
    _pack_filters_parallel(w2, block, out)
    return out


def _emit_prefetch(builder, data, index, locality=3):
    """A read prefetch of ``data[index]`` where this llvmlite can emit one
    (an address outside the array is harmless: a prefetch never faults)."""
    if _prefetch.AVAILABLE:
        _prefetch.emit_prefetch(builder, builder.gep(data, [index]),
                                locality=locality)


@intrinsic
def channel_tile(typingctx, xq, x0, offs, n_taps, wp, w0, init, k0, acc,
                 far, far0, far_lines):
    """The channel tile: for ``c < COLS`` and ``q < B = NVEC * lanes``::

        acc[c, q] = init[k0+q] + sum_r wp[w0 + r*B + q] * xq[x0 + offs[r] + c]

    over the taps ``r < n_taps`` in increasing order with ``llvm.fmuladd``;
    ``acc`` points to a (COLS, B) buffer.  ``offs`` holds
    ``X_PREFETCH_TAPS`` entries past the last tap (read for prefetches
    only).  At tap ``r < far_lines`` it also asks for the cache line at
    ``far[far0 + r * line]`` into L2 (a later task's data, one line a
    tap so that the requests spread over the tile's multiply-adds;
    ``far_lines`` 0: none)."""
    dtype = xq.dtype

    def codegen(context, builder, signature, args):
        (xq_v, x0_v, offs_v, n_taps_v, wp_v, w0_v, init_v, k0_v, acc_ptr,
         far_v, far0_v, far_lines_v) = args
        x_data = context.make_array(xq)(context, builder, xq_v).data
        w_data = context.make_array(wp)(context, builder, wp_v).data
        b_data = context.make_array(init)(context, builder, init_v).data
        o_data = context.make_array(offs)(context, builder, offs_v).data
        f_data = context.make_array(far)(context, builder, far_v).data
        far0_v = context.cast(builder, far0_v, signature.args[10], types.int64)
        far_lines_v = context.cast(builder, far_lines_v, signature.args[11],
                                   types.int64)
        vec, align, n_lanes = _simd_vector(context, dtype)
        width = NVEC * n_lanes
        i32, i64 = ir.IntType(32), ir.IntType(64)
        far_step = _prefetch.LINE_BYTES // align
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec, vec, vec]),
            "llvm.fmuladd.v%d%s" % (n_lanes, "f32" if align == 4 else "f64"))
        zeros = ir.Constant(ir.VectorType(i32, n_lanes), [0] * n_lanes)
        undef = ir.Constant(vec, ir.Undefined)

        def const(value):
            return ir.Constant(i64, value)

        def vector_at(base, index):
            return _vector_pointer(builder, base, index, vec)

        starts = [builder.load(vector_at(b_data, builder.add(
                      k0_v, const(v * n_lanes))), align=align)
                  for v in range(NVEC)]
        # Accumulators in single-value slots: mem2reg makes them registers.
        slots = {}
        for c in range(COLS):
            for v in range(NVEC):
                slots[c, v] = cgutils.alloca_once(builder, vec)
                builder.store(starts[v], slots[c, v])
        with cgutils.for_range(builder, n_taps_v) as loop:
            r = loop.index
            w_base = builder.add(w0_v, builder.mul(r, const(width)))
            w_ahead = builder.add(w_base, const(PREFETCH_TAPS * width))
            for byte in range(0, width * align, 64):
                _emit_prefetch(builder, w_data,
                               builder.add(w_ahead, const(byte // align)))
            x_ahead = builder.add(x0_v, builder.load(builder.gep(
                o_data, [builder.add(r, const(X_PREFETCH_TAPS))],
                inbounds=True)))
            for c in (0, COLS - 1):
                _emit_prefetch(builder, x_data, builder.add(x_ahead, const(c)))
            with builder.if_then(builder.icmp_signed("<", r, far_lines_v)):
                _emit_prefetch(builder, f_data, builder.add(
                    far0_v, builder.mul(r, const(far_step))), locality=2)
            x_base = builder.add(x0_v, builder.load(
                builder.gep(o_data, [r], inbounds=True)))
            ws = [builder.load(vector_at(w_data, builder.add(
                      w_base, const(v * n_lanes))), align=align)
                  for v in range(NVEC)]
            for c in range(COLS):
                x_c = builder.load(builder.gep(
                    x_data, [builder.add(x_base, const(c))], inbounds=True))
                x_vec = builder.shuffle_vector(
                    builder.insert_element(undef, x_c, ir.Constant(i32, 0)),
                    undef, zeros)
                for v in range(NVEC):
                    builder.store(builder.call(
                        fmuladd, [ws[v], x_vec, builder.load(slots[c, v])]),
                        slots[c, v])
        for c in range(COLS):
            for v in range(NVEC):
                builder.store(builder.load(slots[c, v]), vector_at(
                    acc_ptr, const(c * width + v * n_lanes)), align=align)
        return context.get_dummy_value()

    sig = types.void(xq, x0, offs, n_taps, wp, w0, init, k0, acc, far, far0,
                     far_lines)
    return sig, codegen


@intrinsic
def store_tile(typingctx, acc, y, y0, hw):
    """``y[y0 + q*hw + c] = acc[c*B + q]`` for ``c < COLS``, ``q < B =
    NVEC * lanes``: the tile's sums, pixels major, written channel by
    channel.  Each lanes x lanes square (lanes pixels of lanes channels;
    rows past ``COLS`` are zeros, never stored) is transposed in
    registers and each channel's run of pixels written with one vector
    store, masked to its ``COLS`` pixels.  A scalar store per output
    took 23 % of the 7x7/2 stem's time: Xeon VM, batch 1, float32, in one
    process, scalar stores' time over these: the stem 1.30, 3x3 64@56^2
    1.04-1.07, 64@224^2 1.06-1.07, 128@28^2, 128@56^2/2, 256@28^2/2 and
    256@14^2 1.00-1.03 (docs/performance.md section AR).
    """
    dtype = y.dtype

    def codegen(context, builder, signature, args):
        acc_ptr, y_v, y0_v, hw_v = args
        y_data = context.make_array(y)(context, builder, y_v).data
        vec, align, n_lanes = _simd_vector(context, dtype)
        width = NVEC * n_lanes
        i64 = ir.IntType(64)

        def vector_at(base, index):
            return _vector_pointer(builder, base, index, vec)

        for v in range(NVEC):
            for p0 in range(0, COLS, n_lanes):
                count = min(n_lanes, COLS - p0)
                rows = [builder.load(vector_at(acc_ptr, ir.Constant(
                            i64, (p0 + i) * width + v * n_lanes)), align=align)
                        if i < count else ir.Constant(vec, None)
                        for i in range(n_lanes)]
                for j, column in enumerate(_transposed(builder, rows)):
                    channel = ir.Constant(i64, v * n_lanes + j)
                    index = builder.add(builder.add(
                        y0_v, builder.mul(channel, hw_v)),
                        ir.Constant(i64, p0))
                    _store_first_lanes(builder, column,
                                       vector_at(y_data, index), count, align)
        return context.get_dummy_value()

    return types.void(acc, y, y0, hw), codegen


@intrinsic
def channel_tile_buffer(typingctx, x):
    """Pointer to a stack buffer for one tile's sums (the caller's frame:
    intrinsics are emitted inline)."""
    dtype = x.dtype
    size = COLS * NVEC * VECTOR_BITS // dtype.bitwidth

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(dtype),
                                   size=size)
    return types.CPointer(dtype)(x), codegen


@njit(cache=True, inline="always")
def _row_tiles(xq, x0, offs, n_taps, wp, w0, init, k0, block, y, y0, hw,
               col_lo, col_hi, acc_ptr):
    """The tiles of columns ``col_lo .. col_hi - 1`` (at least ``COLS``)
    of one output row of ``block`` channels: ``COLS`` pixels each, the
    last ending at ``col_hi``."""
    ow0 = col_lo
    while ow0 < col_hi:
        ow0 = min(ow0, col_hi - COLS)
        channel_tile(xq, x0 + ow0, offs, n_taps, wp, w0, init, k0, acc_ptr,
                     xq, 0, 0)
        store_tile(acc_ptr, y, y0 + ow0, hw)
        ow0 += COLS


@njit(cache=True, inline="always")
def _block_row(xq, offs, r_len, wp, w0, init, block, yf, g, blk, n, oh, cg,
               kg, c_total, k_total, image, wq, hw, wo, col_lo, col_hi,
               acc_ptr):
    """Columns ``col_lo .. col_hi - 1`` of output row ``oh`` of image
    ``n`` for channel block ``blk`` of group ``g``, its packed filters at
    ``wp[w0:]``."""
    k0 = g * kg + blk * block
    _row_tiles(xq, (n * c_total + g * cg) * image + oh * wq, offs, r_len, wp,
               w0, init, k0, block, yf, (n * k_total + k0) * hw + oh * wo,
               hw, col_lo, col_hi, acc_ptr)


@njit(cache=True, inline="always")
def _task_coords(task, runs_fastest, block_runs, row_chunks, n_img):
    """(run of blocks, chunk of rows, image, group) of ``task``: the run
    the fastest index where ``runs_fastest``, else the slowest but for
    the group."""
    if runs_fastest:
        run = task % block_runs
        rest = task // block_runs
        chunk = rest % row_chunks
        rest //= row_chunks
        n = rest % n_img
        return run, chunk, n, rest // n_img
    chunk = task % row_chunks
    rest = task // row_chunks
    n = rest % n_img
    rest //= n_img
    return rest % block_runs, chunk, n, rest // block_runs


@njit(cache=True, parallel=True)
def conv_channels(x, w2, init, sh, sw, dh, dw, pt, pl, kh, kw, groups,
                  block, rows_per_task, xq, wp, y, blocks_per_task,
                  cols_per_task):
    """Direct convolution with channel tiles into ``y`` (N, K, Ho, Wo).

    ``w2`` is the filters as (K, R), C-contiguous; ``init`` (K,) the bias
    or zeros; ``block`` the tile's channels; a task computes
    ``rows_per_task`` rows (:func:`task_rows`) over ``cols_per_task``
    columns (:func:`task_cols`: ``Wo`` or fewer, the last task of a row
    taking the rest); ``xq`` and ``wp`` are scratch for the packed input
    and filters.  ``blocks_per_task`` 0: a task is one channel block's
    rows (blocks outside rows), and each thread packs the block it
    computes into its own ``R x block`` elements of ``wp`` (at least
    ``NUMBA_NUM_THREADS`` of them), once for its run of tasks of that
    block; otherwise a task is a run of that many blocks for its rows,
    row by row (:func:`rows_outer`), and ``wp`` holds all the filters,
    packed before the tasks.
    """
    n_img, c_total = x.shape[0], x.shape[1]
    k_total, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    cg = c_total // groups
    kg = k_total // groups
    hq, wq = packed_geometry(ho, wo, kh, kw, sh, sw, dh, dw)
    pack_into(x, pt, pl, sh, sw, hq, wq, xq)
    per_thread = blocks_per_task == 0
    if not per_thread:
        _pack_filters(w2, block, wp)
    taps = tap_offsets(cg, kh, kw, sh, sw, dh, dw, hq, wq)
    image = sh * sw * hq * wq           # a channel's polyphase planes
    r_len = taps.shape[0]
    # the last tap's offset repeated for the prefetches past the end
    offs = np.empty(r_len + X_PREFETCH_TAPS, np.int64)
    offs[:r_len] = taps
    offs[r_len:] = taps[r_len - 1]
    blocks = kg // block
    hw = ho * wo
    yf = y.reshape(y.size)
    row_chunks = (ho + rows_per_task - 1) // rows_per_task
    # Blocks outside rows: runs of one block, the slowest index of a task
    # but for the group; rows outside blocks: runs of blocks_per_task
    # blocks, the fastest index.
    per_run = max(1, blocks_per_task)
    block_runs = (blocks + per_run - 1) // per_run
    # Column chunks are the fastest index: a row's chunks are neighbours.
    col_chunks = max(1, wo // cols_per_task)
    flat = w2.reshape(w2.size)
    # The block packed in each thread's part of wp (per_thread only).
    packed = np.full(wp.size // (r_len * block) if per_thread else 0, -1,
                     np.int64)
    for task in prange(groups * n_img * row_chunks * block_runs * col_chunks):
        run, chunk, n, g = _task_coords(task // col_chunks, blocks_per_task > 0,
                                        block_runs, row_chunks, n_img)
        col_chunk = task % col_chunks
        col_lo = col_chunk * cols_per_task
        col_hi = wo if col_chunk == col_chunks - 1 else col_lo + cols_per_task
        w0 = 0
        if per_thread:
            # The thread's own part of wp, written and read again while
            # in L2; packed again only where its previous task (prange
            # hands a thread a run of tasks) had another block.
            tid = get_thread_id()
            w0 = tid * r_len * block
            if packed[tid] != g * blocks + run:
                pack_block(flat, r_len, g * blocks + run, block, wp, w0)
                packed[tid] = g * blocks + run
        acc_ptr = channel_tile_buffer(x)
        for oh in range(chunk * rows_per_task,
                        min(ho, (chunk + 1) * rows_per_task)):
            for blk in range(run * per_run, min(blocks, (run + 1) * per_run)):
                if not per_thread:
                    w0 = (g * kg + blk * block) * r_len
                _block_row(xq, offs, r_len, wp, w0, init, block, yf, g, blk,
                           n, oh, cg, kg, c_total, k_total, image, wq, hw, wo,
                           col_lo, col_hi, acc_ptr)
    return y


def rows_outer(packed_bytes, filter_bytes):
    """Whether a task runs its rows outside its channel blocks (each
    packed input row read once for all the blocks, every block's filters
    in turn) rather than a block outside its rows (the block's filters
    read once, the whole packed input in turn): the first where the packed
    input is the larger.  A stride-2 layer packs four times the input of
    the stride-1 layer of the same output, and with the block-outer order
    128@56^2/2 ran at half the speed of 128@28^2/1.  Xeon VM, inputs out
    of cache, block-outer time over rows-outer (docs/performance.md
    section AG): where this says rows, 3x3/2 64@56^2 1.17, 128@56^2 1.18 /
    1.29 (batch 1 / 4), 256@28^2 x 4 1.13, the 7x7/2 stem 1.06 / 1.10,
    3x3/1 64@56^2 1.04 / 1.03, 128@28^2 x 4 1.04, VGG-16's 64@224^2 1.10,
    128@112^2 1.04, 256@56^2 1.02; where it says blocks, 256@14^2 x 1
    (rows 0.82 of blocks), 512@28^2 (0.87), 256@28^2/2 (1.00)."""
    return packed_bytes > filter_bytes


def task_rows(ho, other_tasks, min_tasks):
    """Output rows per task: all of a plane's, or fewer until there are
    ``min_tasks`` tasks with the ``other_tasks`` (channel blocks x images
    x groups)."""
    chunks = max(1, min(ho, -(-min_tasks // max(other_tasks, 1))))
    return -(-ho // chunks)


def task_cols(wo, other_tasks, min_tasks, max_cols=None):
    """Output columns per task: the whole row (``wo``), or a multiple of
    ``COLS`` of at least ``MIN_TASK_COLS`` when the other tasks (channel
    runs x row chunks x images x groups) are fewer than ``min_tasks`` or
    the row is wider than ``max_cols``.  A 1-D signal is one row: at 32
    channels (one channel block) its whole output was one task, run by
    one thread."""
    chunks = -(-min_tasks // max(other_tasks, 1))
    if max_cols is not None:
        chunks = max(chunks, -(-wo // max(max_cols, 1)))
    chunks = min(chunks, wo // MIN_TASK_COLS)
    if chunks <= 1:
        return wo
    return wo // chunks // COLS * COLS


def input_bytes_per_column(spec, rows, itemsize):
    """Bytes of packed input one output column of ``rows`` output rows
    reads, over a group's channels."""
    kh = spec.w_shape[2]
    sh, sw = spec.stride
    cg = spec.x_shape[1] // spec.groups
    return cg * sw * (rows * sh + (kh - 1) * spec.dilation[0]) * itemsize


# Packed input a task of rows outside blocks keeps for all its blocks:
# half the core's L2.
_TASK_INPUT_BYTES = _tuning.l2_bytes() // 2

# Packed input and filters: scratch reused across calls (per Python thread).
_workspace = Workspace()


def run(spec, x, w, bias):
    """Direct convolution of C-contiguous ``x`` and ``w`` with the channel
    tile (where :func:`tile_for`); returns a new (N, K, Ho, Wo) array."""
    return prepare(spec)(x, w, bias)


def prepare(spec):
    """:func:`run` for the problem ``spec`` as a callable ``(x, w, bias)
    -> y``, its geometry and tasks worked out once."""
    n_img, c_total = spec.x_shape[:2]
    k_total, _, kh, kw = spec.w_shape
    groups = int(spec.groups)
    dh, dw = spec.dilation
    pt, _, pl, _ = spec.padding
    ho, wo = spec.out_hw
    sh, sw = spec.stride
    dtype = np.dtype(spec.dtype)
    block = NVEC * lanes_of(dtype.itemsize)
    hq, wq = packed_geometry(ho, wo, kh, kw, sh, sw, dh, dw)
    packed = packed_size(spec.x_shape, sh, sw, hq, wq, 0)
    w_size = math.prod(spec.w_shape)
    threads = _tuning.block_shape_threads()
    blocks = k_total // groups // block
    if rows_outer(packed * dtype.itemsize, w_size * dtype.itemsize):
        # Rows split first, then columns (as far as tasks are wanted, and
        # so that a task's packed input stays in L2 for all its blocks),
        # then runs of blocks.
        per = task_rows(ho, n_img * groups, 4 * threads)
        row_tasks = -(-ho // per) * n_img * groups
        cols = task_cols(wo, row_tasks, 4 * threads,
                         _TASK_INPUT_BYTES // input_bytes_per_column(
                             spec, per, dtype.itemsize))
        runs = max(1, min(blocks, -(-4 * threads
                                    // (row_tasks * max(1, wo // cols)))))
        blocks_per_task = -(-blocks // runs)
    else:
        per = task_rows(ho, blocks * n_img, 4 * threads)
        cols = task_cols(wo, blocks * -(-ho // per) * n_img * groups,
                         4 * threads)
        blocks_per_task = 0
        # Each thread packs the blocks it computes (conv_channels).
        w_size = config.NUMBA_NUM_THREADS * w_size // k_total * block
    zeros = np.zeros(k_total, dtype)
    out_shape = (n_img, k_total, ho, wo)

    def channel_tiles(x, w, bias):
        xq = _workspace.get("xq", (packed,), dtype)
        wp = _workspace.get("wp", (w_size,), dtype)
        init = zeros if bias is None else np.ascontiguousarray(bias)
        y = np.empty(out_shape, dtype)
        return conv_channels(x, w.reshape(k_total, -1), init, sh, sw, dh, dw,
                             pt, pl, kh, kw, groups, block, per, xq, wp, y,
                             blocks_per_task, cols)

    return channel_tiles
