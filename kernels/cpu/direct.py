"""Direct convolution on the CPU: register-tiled SIMD micro-kernel (Numba).

``KERNELS[("conv2d", "direct")]`` is its entry in the backend contract of
:mod:`kernels._dispatch` (``conv2d`` the same on plain arguments); it
supports every configuration: any stride, asymmetric zero padding,
dilation, groups, bias, float32/float64, and 1-D as ``H = kH = 1``.

How it works
------------
1. **Pack the input** (:func:`pack_input`) once into a zero-padded
   *polyphase* layout::

       xq[n, c, ph, pw, i, j] = x_pad[n, c, i*sh + ph, j*sw + pw]

   made of ``Hq x Wq`` planes with ``Wq = Wo + dw*(kW - 1) // sw`` and
   ``Hq = Ho + dh*(kH - 1) // sh`` (``x_pad`` is the zero-padded input).
   Tap ``(c, i, j)`` of the filter then reads, for output pixel
   ``(oh, ow)``, element ``tap_offsets[(c*kH + i)*kW + j] + oh*Wq + ow``
   of the image's packed block (:func:`tap_offsets`): a constant plus a
   position that is contiguous in ``ow`` for *every* stride and dilation.
   Padding is plain zeros, so the inner loop has no edge cases, and
   strided layers vectorise like stride-1 ones.
2. **Virtual output grid.**  The outputs of one image and channel are
   enumerated as ``v = oh*Wq + ow``, ``0 <= v < Ho*Wq``; the ``Wq - Wo``
   extra columns of each row are computed and dropped when stored.
   Tiling this flattened grid rather than single rows keeps 7x7 and 14x14
   layers efficient.
3. **Register tile** (:func:`fma_tile`).  A tile is up to ``MAX_BLOCK``
   output channels (6 on AVX-512, 4 on AVX2) x ``TILE_VECTORS`` SIMD
   vectors of consecutive virtual outputs (half of them for a plane's
   last tile where its outputs fit, :func:`tile_vectors`); its
   accumulators stay in registers for all ``R = C/groups*kH*kW`` taps.
   Per tap the tile loads its input vectors once and updates every
   accumulator with a fused multiply-add by the broadcast weight of its
   channel (an outer product).  The tile is written out once, at the end.
   Weights are read in place from the filters' rows (one stream per
   channel of the tile): a packed copy cost more than the tile's work on
   small layers (LeNet-5's C5: 35 of 54 us) and 2 ms at 512@7^2.
   This loop is emitted as LLVM vector IR by a Numba ``intrinsic``, so the
   register allocation does not depend on LLVM unrolling heuristics.
4. **Parallel tasks.**  One task is a run of consecutive column tiles of
   one channel block; tasks are ``prange``-d over (image, group, column
   run, channel block), channel block fastest so that a thread reuses the
   same input rows (still in L2: a run holds at most
   ``DirectTuning.run_taps`` taps x columns) for all filters.  A run
   writes each output plane sequentially: with one tile per task, layers
   of few taps (jet images' first layers, 1-D signals) were bound by
   stores scattered over 32 interleaved planes, 1.5-2.2x slower.  The
   output and the packed input are allocated by NumPy outside the jitted
   code (:func:`run_driver`: huge pages, no fault per 4 KiB).  Each output
   is computed by one thread, in a fixed order: results do not depend on
   the number of threads.  Problems of at most ``DirectTuning.serial_max_macs``
   multiply-adds run on one thread, where waking the pool costs more than
   it saves.
5. **Channel tile.**  On AVX-512, layers of more than one tap with rows
   at least 14 wide and enough output positions per byte of filters
   (strided ones too, since stop 35) run a second
   tile, SIMD lanes over output channels
   (:mod:`kernels.cpu._direct_channels`): the same chains, the same bits.
   The packing stage lives in :mod:`kernels.cpu._direct_packing`, shared
   by both tiles.

Accuracy: each output is ``bias + sum_r w_r x_r`` accumulated in the input
dtype, in the order ``r = (c, i, j)``, with ``llvm.fmuladd`` (fused where
the CPU has FMA).  No fast-math flags are used, so NaN and Inf propagate
as in IEEE arithmetic to exactly the outputs whose window holds them.
Padding zeros are multiplied like data (``0 * inf = nan`` for an infinite
weight), as the float64 reference does.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .._dispatch import ConvSpec, Kernel
from . import _direct_channels, _tuning
from ._prefetch import LINE_BYTES, prefetch_write_at
from ._simd import VECTOR_BITS, lanes_of
from ._direct_packing import (pack_input, pack_into, packed_geometry,
                              packed_size, tap_offsets)
from ._workspace import Workspace

__all__ = ["conv2d", "pack_input", "tap_offsets", "packed_geometry",
           "tile_columns", "packed_size", "run_columns", "run_driver",
           "fma_tile", "emit_fma_tile", "run_tile", "tile_vectors",
           "tile_buffer",
           "tile_width", "stack_tile",
           "lanes",
           "MAX_BLOCK",
           "KERNELS"]


# SIMD width and vectors per channel in a tile, and output channels per
# tile (a group's last tile takes those left over): on AVX-512 6 x 4
# vectors, 24 of the 32 registers; AVX2 has 16 registers, so 4 x 2
# there.  With 4 x 4 on AVX-512, a tap's 4 loads of x (unaligned: each
# crosses a line) served 16 multiply-adds; 6 x 4 serve 24 with them
# (Xeon VM, 3x3 pad 1 at batch 1, ms per call, 4 x 4 / 6 x 4: 64@56^2
# 1.13-1.19 / 1.00, 128@28^2 1.20 / 1.06-1.07, 256@14^2 1.27-1.30 /
# 1.16-1.18, 512@7^2 1.30-1.32 / 1.24-1.28).  Each output's chain of
# multiply-adds is the same in any tile.
TILE_VECTORS = 4 if VECTOR_BITS == 512 else 2
HALF_VECTORS = TILE_VECTORS // 2
MAX_BLOCK = 6 if VECTOR_BITS == 512 else 4


def tile_columns(dtype):
    """Virtual outputs per tile (and per task) for ``dtype``."""
    return TILE_VECTORS * lanes_of(np.dtype(dtype).itemsize)


# --------------------------------------------------------------------------
# Stage 2: the register-tiled micro-kernel
# --------------------------------------------------------------------------

def lanes(dtype):
    """Elements of a Numba float type per SIMD vector (for code
    generation; :func:`._simd.lanes` is the jitted form)."""
    return lanes_of(dtype.bitwidth // 8)


def stack_tile(x, rows):
    """``(signature, codegen)`` of an intrinsic returning a pointer to a
    stack buffer of ``rows`` x tile columns of ``x``'s dtype (it lives in
    the caller's frame: intrinsics are emitted inline)."""
    dtype = x.dtype
    size = rows * TILE_VECTORS * lanes(dtype)

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(dtype),
                                   size=size)

    return types.CPointer(dtype)(x), codegen


@intrinsic
def tile_buffer(typingctx, x):
    """Pointer to a stack buffer for one tile (MAX_BLOCK x tile columns)."""
    return stack_tile(x, MAX_BLOCK)


def emit_fma_tile(context, builder, dtype, n_ch, n_vec, x_data, x_row, w_data,
                  wb, wstride, n_taps, acc_ptr, acc_stride=None,
                  zero_init=False, store_ptr=None, store_stride=None):
    """Emit ``acc[q, l] += sum_r w[wb + q*wstride + r] * x[x_row(r) + l]``
    for ``r < n_taps``, ``q < n_ch``, ``l < n_vec`` vectors of lanes.

    ``x_row(r)`` emits the index of tap ``r``'s first element of x; the
    other arguments are LLVM values (``acc_ptr``: the (n_ch, tile columns)
    accumulators, row-major).  The accumulators are loaded into ``n_ch *
    n_vec`` vector registers, updated for every tap with ``llvm.fmuladd``
    (in increasing ``r``) and stored back.  Shared by :func:`fma_tile` and
    the im2col GEMM's tile (:mod:`kernels.cpu._panel_gemm`).

    ``acc_stride`` (an LLVM i64, elements) puts the accumulators' rows that
    far apart instead of one tile's width, so that a tile can live in its
    final place (a block of a row-major output); ``zero_init`` starts them
    from zero in registers instead of loading them (the same sums as
    loading zeros: the chain is unchanged).  ``store_ptr`` (rows
    ``store_stride`` apart) receives the sums instead of ``acc_ptr``: the
    last block of a reduction moves them from a buffer to their place.
    """
    n_lanes = lanes(dtype)
    width = TILE_VECTORS * n_lanes
    elem = context.get_value_type(dtype)
    align = context.get_abi_sizeof(elem)
    vec = ir.VectorType(elem, n_lanes)
    i32, i64 = ir.IntType(32), ir.IntType(64)
    fmuladd = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec, vec, vec]),
        "llvm.fmuladd.v%d%s" % (n_lanes, "f32" if align == 4 else "f64"))
    broadcast_mask = ir.Constant(ir.VectorType(i32, n_lanes), [0] * n_lanes)
    undef = ir.Constant(vec, ir.Undefined)

    def vector_at(base, index):
        ptr = builder.gep(base, [index], inbounds=True)
        return builder.bitcast(ptr, vec.as_pointer())

    def element_at(base, stride, q, v):
        if stride is None:
            return vector_at(base, ir.Constant(i64, q * width + v * n_lanes))
        return vector_at(base, builder.add(
            builder.mul(stride, ir.Constant(i64, q)),
            ir.Constant(i64, v * n_lanes)))

    def acc_at(q, v):
        return element_at(acc_ptr, acc_stride, q, v)

    def store_at(q, v):
        if store_ptr is None:
            return acc_at(q, v)
        return element_at(store_ptr, store_stride, q, v)

    # Accumulators in single-value slots: mem2reg turns them into
    # registers (phi nodes of the tap loop).
    slots = {}
    for q in range(n_ch):
        for v in range(n_vec):
            slots[q, v] = cgutils.alloca_once(builder, vec)
            start = (ir.Constant(vec, [0.0] * n_lanes) if zero_init
                     else builder.load(acc_at(q, v), align=align))
            builder.store(start, slots[q, v])
    with cgutils.for_range(builder, n_taps) as loop:
        r = loop.index
        x_base = x_row(r)
        xs = [builder.load(vector_at(x_data, builder.add(
                  x_base, ir.Constant(i64, v * n_lanes))), align=align)
              for v in range(n_vec)]
        w_base = builder.add(wb, r)
        for q in range(n_ch):
            w_q = builder.load(builder.gep(
                w_data, [builder.add(w_base, builder.mul(
                    wstride, ir.Constant(i64, q)))], inbounds=True))
            w_vec = builder.shuffle_vector(
                builder.insert_element(undef, w_q, ir.Constant(i32, 0)),
                undef, broadcast_mask)
            for v in range(n_vec):
                builder.store(builder.call(
                    fmuladd, [w_vec, xs[v], builder.load(slots[q, v])]),
                    slots[q, v])
    for q in range(n_ch):
        for v in range(n_vec):
            builder.store(builder.load(slots[q, v]), store_at(q, v),
                          align=align)


@intrinsic
def fma_tile(typingctx, kb, nvec, xq, x0, offs, w, wb, wstride, acc):
    """``acc[q, l] += sum_r w[wb + q*wstride + r] * xq[x0 + offs[r] + l]``
    for the taps ``r < len(offs)`` (:func:`emit_fma_tile`).

    ``kb`` (a literal, 1..MAX_BLOCK) channels by ``nvec`` (a literal,
    1..TILE_VECTORS) vectors of outputs; ``acc`` points to the (kb, tile
    columns) accumulators, row-major.  ``wstride`` is the distance between
    two channels' filters in ``w``: ``len(offs)`` here (all taps), more in
    transposed convolution, whose output phases use a subset of the taps
    (:mod:`kernels.cpu.transposed`).
    """
    if not (isinstance(kb, types.IntegerLiteral)
            and isinstance(nvec, types.IntegerLiteral)):
        return None
    n_ch = kb.literal_value
    n_vec = nvec.literal_value

    def codegen(context, builder, signature, args):
        _, _, xq_v, x0_v, offs_v, w_v, wb_v, wstride_v, acc_ptr = args
        x_data = context.make_array(xq)(context, builder, xq_v).data
        w_data = context.make_array(w)(context, builder, w_v).data
        offs_arr = context.make_array(offs)(context, builder, offs_v)

        def x_row(r):
            return builder.add(x0_v, builder.load(
                builder.gep(offs_arr.data, [r], inbounds=True)))

        emit_fma_tile(context, builder, xq.dtype, n_ch, n_vec, x_data, x_row,
                      w_data, wb_v, wstride_v,
                      builder.extract_value(offs_arr.shape, 0), acc_ptr)
        return context.get_dummy_value()

    return types.void(kb, nvec, xq, x0, offs, w, wb, wstride, acc), codegen


def tile_width(xq):  # pragma: no cover
    """Columns of one register tile for ``xq``'s dtype, a compile-time
    constant in jitted code (:func:`tile_columns`)."""
    raise NotImplementedError("only callable from jitted code")


@overload(tile_width, inline="always")
def _tile_width_impl(xq):
    width = TILE_VECTORS * lanes(xq.dtype)
    return lambda xq: width


@njit(cache=True, inline="always")
def _run_tile_of(kb, nvec, xq, x0, offs, w, wb, wstride, acc_ptr):
    """:func:`fma_tile` with a run-time ``kb`` (each size is its own code)
    and ``nvec`` (a literal)."""
    if kb == 6:
        fma_tile(6, nvec, xq, x0, offs, w, wb, wstride, acc_ptr)
    elif kb == 5:
        fma_tile(5, nvec, xq, x0, offs, w, wb, wstride, acc_ptr)
    elif kb == 4:
        fma_tile(4, nvec, xq, x0, offs, w, wb, wstride, acc_ptr)
    elif kb == 3:
        fma_tile(3, nvec, xq, x0, offs, w, wb, wstride, acc_ptr)
    elif kb == 2:
        fma_tile(2, nvec, xq, x0, offs, w, wb, wstride, acc_ptr)
    else:
        fma_tile(1, nvec, xq, x0, offs, w, wb, wstride, acc_ptr)


@njit(cache=True, inline="always")
def run_tile(kb, vectors, xq, x0, offs, w, wb, wstride, acc_ptr):
    """:func:`fma_tile` with a run-time ``kb`` and ``vectors`` of outputs:
    ``TILE_VECTORS``, half of them (see :func:`tile_vectors`) or one."""
    if vectors == TILE_VECTORS:
        _run_tile_of(kb, TILE_VECTORS, xq, x0, offs, w, wb, wstride, acc_ptr)
    elif vectors == 1:
        _run_tile_of(kb, 1, xq, x0, offs, w, wb, wstride, acc_ptr)
    else:
        _run_tile_of(kb, HALF_VECTORS, xq, x0, offs, w, wb, wstride, acc_ptr)


@njit(cache=True, inline="always")
def tile_vectors(narrow, remaining, lanes):
    """Vectors a tile computes: one where the planes are ``narrow`` (at
    most a vector of outputs), else ``TILE_VECTORS``, or half of them
    where the ``remaining`` outputs of the virtual grid (from the tile's
    first) fit in half: the last tile of a 14^2 plane (224 virtual
    outputs, 256 in four full tiles)."""
    if narrow:
        return 1
    if remaining <= HALF_VECTORS * lanes:
        return HALF_VECTORS
    return TILE_VECTORS


@njit(cache=True, inline="always")
def _prefetch_tile_out(kb, width, y, y0, hw, v0, nv, wq, wo):
    """Ask for the lines :func:`_store_tile` will write for the tile at
    ``v0``, to be written (one request per line of each channel's run
    of pixels): the next tile's while this one computes, so that its
    stores find the output's lines owned (a network's outputs arrive from
    memory)."""
    oh = v0 // wq
    start = oh * wo + min(v0 - oh * wq, wo)
    v_end = min(v0 + width, nv)
    oh_end = (v_end - 1) // wq
    end = oh_end * wo + min(v_end - oh_end * wq, wo)
    line = LINE_BYTES // y.itemsize
    for q in range(kb):
        for i in range(start, end, line):
            prefetch_write_at(y, y0 + q * hw + i)


@njit(cache=True, inline="always")
def _store_tile(acc, kb, width, y, y0, hw, v0, nv, wq, wo):
    """Write the tile's virtual outputs that are real pixels to ``y``.

    Virtual output ``v = oh*wq + ow`` is pixel ``(oh, ow)`` when
    ``ow < wo``; channel ``q`` of the tile goes to
    ``y[y0 + q*hw + oh*wo + ow]``.
    """
    v = v0
    v_end = min(v0 + width, nv)
    while v < v_end:
        oh = v // wq
        ow = v - oh * wq
        run = min(v_end - v, wo - ow)
        if run > 0:
            s = v - v0
            for q in range(kb):
                dst = y0 + q * hw + oh * wo + ow
                y[dst:dst + run] = acc[q, s:s + run]
        v = (oh + 1) * wq


# --------------------------------------------------------------------------
# Stage 3: the whole convolution, in parallel tasks
# --------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _direct_body(x, w, bias, has_bias, sh, sw, dh, dw, pt, pl, ho, wo,
                 groups, run_cols, xq, y):
    n_img, c_total, h, wd = x.shape
    k_total, cg, kh, kw = w.shape
    hq, wq = packed_geometry(ho, wo, kh, kw, sh, sw, dh, dw)
    full_width = tile_width(x)
    pack_into(x, pt, pl, sh, sw, hq, wq, xq)
    offs = tap_offsets(cg, kh, kw, sh, sw, dh, dw, hq, wq)
    r_len = offs.shape[0]
    wf = w.reshape(k_total * r_len)      # filter k's taps at k*R .. k*R + R

    kg = k_total // groups
    blocks = (kg + MAX_BLOCK - 1) // MAX_BLOCK
    chan_size = sh * sw * hq * wq          # one packed input channel
    nv = ho * wq
    hw = ho * wo
    y = y.reshape(n_img * k_total * hw)
    # Output planes of at most one vector (LeNet-5's C5: 1x1, packed 5
    # wide) use one-vector tiles: the full tile would spend 3/4 of its
    # multiply-adds on columns that are dropped.
    lanes = full_width // TILE_VECTORS
    narrow = nv <= lanes
    width = lanes if narrow else full_width
    n_cols = (nv + width - 1) // width
    n_runs = (n_cols + run_cols - 1) // run_cols
    for task in prange(n_img * groups * n_runs * blocks):
        blk = task % blocks
        rest = task // blocks
        run = rest % n_runs
        rest //= n_runs
        g = rest % groups
        n = rest // groups
        k0 = g * kg + blk * MAX_BLOCK
        kb = min(MAX_BLOCK, (g + 1) * kg - k0)
        acc_ptr = tile_buffer(x)
        acc = carray(acc_ptr, (MAX_BLOCK, full_width))
        col_end = min(n_cols, (run + 1) * run_cols)
        for col in range(run * run_cols, col_end):
            v0 = col * width
            for q in range(kb):
                acc[q, :] = bias[k0 + q] if has_bias else 0
            if col + 1 < col_end:
                _prefetch_tile_out(kb, width, y, (n * k_total + k0) * hw, hw,
                                   v0 + width, nv, wq, wo)
            x0 = (n * c_total + g * cg) * chan_size + v0
            run_tile(kb, tile_vectors(narrow, nv - v0, lanes), xq, x0, offs,
                     wf, k0 * r_len, r_len, acc_ptr)
            _store_tile(acc, kb, width, y, (n * k_total + k0) * hw, hw, v0,
                        nv, wq, wo)


@njit(cache=True, parallel=True)
def _direct_parallel(x, w, bias, has_bias, sh, sw, dh, dw, pt, pl, ho, wo,
                     groups, run_cols, xq, y):
    _direct_body(x, w, bias, has_bias, sh, sw, dh, dw, pt, pl, ho, wo,
                 groups, run_cols, xq, y)


@njit(cache=True)
def _direct_serial(x, w, bias, has_bias, sh, sw, dh, dw, pt, pl, ho, wo,
                   groups, run_cols, xq, y):
    _direct_body(x, w, bias, has_bias, sh, sw, dh, dw, pt, pl, ho, wo,
                 groups, run_cols, xq, y)


# The packed input is scratch, reused across calls (per Python thread).
_workspace = Workspace()


def run_columns(r_len, n_cols, other_tasks, tuning, filter_bytes=0,
                input_bytes=0):
    """Column tiles per task (see ``DirectTuning.run_taps``; all of an
    image's where its group's ``filter_bytes`` of filters exceed
    ``DirectTuning.filter_bound_bytes`` and its ``input_bytes`` of packed
    input do not), fewer when the tasks would not give every thread
    (block_shape_threads) four."""
    if filter_bytes > tuning.filter_bound_bytes >= input_bytes:
        run = max(1, min(tuning.max_run_columns, n_cols))
    else:
        run = max(1, min(tuning.max_run_columns,
                         tuning.run_taps // max(r_len, 1)))
    min_tasks = 4 * _tuning.block_shape_threads()
    while run > 1 and other_tasks * -(-n_cols // run) < min_tasks:
        run //= 2
    return run


def run_driver(driver, x, w, bias, has_bias, sh, sw, dh, dw, pt, pl, ho, wo,
               groups, tuning=None):
    """Run ``driver`` (serial or parallel) with its buffers, return y.

    The output and the packed input are allocated here, by NumPy, not
    inside the jitted code: NumPy asks the kernel for transparent huge
    pages on large arrays (``madvise``), Numba's allocator does not, and a
    fresh output then takes a page fault per 4 KiB.  Jet images' 2@64^2
    at batch 256 (a 128 MiB output): direct 113 ms with the output
    allocated in Numba, 66 ms by NumPy, im2col 80-83 ms (medians of 7
    rounds in isolated workers).
    The packed input comes from a per-thread workspace.
    """
    n_img, c_total = x.shape[:2]
    k_total, _, kh, kw = w.shape
    hq, wq = packed_geometry(ho, wo, kh, kw, sh, sw, dh, dw)
    # A tile reads up to width - 1 outputs past the last, and dropped
    # columns up to wq - wo elements past the last packed plane.
    tail = tile_columns(x.dtype) + wq
    xq = _workspace.get("xq", (packed_size(x.shape, sh, sw, hq, wq, tail),),
                        x.dtype)
    y = np.empty((n_img, k_total, ho, wo), x.dtype)
    width = tile_columns(x.dtype)
    n_cols = -(-ho * wq // width)
    blocks = -(-(k_total // groups) // MAX_BLOCK)
    run_cols = run_columns(w[0].size, n_cols, n_img * groups * blocks,
                           tuning or _tuning.current().direct,
                           filter_bytes=w.nbytes // groups,
                           input_bytes=(w.shape[1] * sh * sw * hq * wq
                                        * x.itemsize))
    driver(x, w, bias, has_bias, sh, sw, dh, dw, pt, pl, ho, wo, groups,
           run_cols, xq, y)
    return y


# --------------------------------------------------------------------------
# Public entry point (the kernels/_dispatch.py contract)
# --------------------------------------------------------------------------

def conv2d(x, w, bias, stride, padding, dilation, groups, tuning=None):
    """Direct 2-D convolution (cross-correlation), ``torch`` semantics.

    Parameters
    ----------
    x : ndarray, (N, C, H, W), C-contiguous float32 or float64
    w : ndarray, (K, C // groups, kH, kW), C-contiguous, x's dtype
    bias : ndarray (K,) or None
    stride, dilation : (int, int)
    padding : (top, bottom, left, right) zero padding
    groups : int
    tuning : DirectTuning, optional
        Default ``kernels.cpu._tuning.current().direct``.

    Returns
    -------
    y : ndarray, (N, K, Ho, Wo), new and C-contiguous, x's dtype
    """
    if w.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise TypeError(f"x, w and bias must have the same dtype, got "
                        f"{x.dtype}, {w.dtype} and "
                        f"{None if bias is None else bias.dtype}")
    spec = ConvSpec(x.shape, w.shape, tuple(int(s) for s in stride),
                    tuple(int(p) for p in padding),
                    tuple(int(d) for d in dilation), int(groups), x.dtype)
    return _run(spec, np.ascontiguousarray(x), np.ascontiguousarray(w), bias,
                tuning)


def _run(spec, x, w, bias, tuning=None):
    """The contract's entry: ``run(spec, x, w, bias)``."""
    return _prepare(spec, tuning)(x, w, bias)


def _prepare(spec, tuning=None):
    """The contract's ``prepare``: the channel tile's prepared form
    (:func:`._direct_channels.prepare`) where it applies, else the pixel
    tile's driver with its arguments worked out once."""
    tuning = tuning or _tuning.current().direct
    serial = spec.macs <= tuning.serial_max_macs
    if not serial and _direct_channels.tile_for(spec, tuning):
        return _direct_channels.prepare(spec)
    sh, sw = spec.stride
    dh, dw = spec.dilation
    pt, _, pl, _ = spec.padding
    ho, wo = spec.out_hw
    groups = int(spec.groups)
    driver = _direct_serial if serial else _direct_parallel
    no_bias = np.zeros(1, spec.dtype)

    def pixel_tile(x, w, bias):
        has_bias = bias is not None
        b = np.ascontiguousarray(bias) if has_bias else no_bias
        return run_driver(driver, x, w, b, has_bias, sh, sw, dh, dw, pt, pl,
                          ho, wo, groups, tuning)

    return pixel_tile


KERNELS = {("conv2d", "direct"): Kernel(_run, prepare=_prepare)}
