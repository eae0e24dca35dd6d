"""im2col's GEMM, ``C[g] = A[g] @ B[g]``, summed in an order that does not
depend on where an output column lies.

The product of im2col is ``y = W @ P``: W (K, C kH kW) the filters, P the
patch matrix, one column per output position.  A BLAS GEMM sums a
column's products in an order that depends on the column's place in the
call: OpenBLAS 0.3.31 (Haswell kernels, float32, (64 x 576) @ (576 x 64))
gave a column one result at positions 0-7 and 56-63 of the call and
another at 8-55, and calls of other widths other results again.  So the
same output came out differently in the last bits when im2col ran on a
piece of the image (a Dask block) than on the whole of it.  Here every
output is one chain of fused multiply-adds over the reduction index in
increasing order, whatever the call's shape, the column's place, the job
split or the thread count: im2col on any window of an image equals the
same outputs of the whole image bit for bit, with any BLAS or none.

B arrives in *panels* of :func:`panel_width` columns (one register tile's
width), written so by im2col's gather: panel ``p`` holds columns ``[p P,
(p + 1) P)`` of every row, row after row, so that a tile's slice of it is
contiguous.  The last panel is padded to full width (the pad's products
are computed and dropped: each column is a lane of its own); where its
columns fit in half (a quarter of) a panel, its tiles compute only that
half (quarter).  A job,
(group, chunk of row tiles, chunk of panels), multiplies a register tile
of up to ``TILE_ROWS`` rows of A, read in place, by one panel at a time
(:func:`_panel_tile`), in blocks of the reduction sized for the caches
(:func:`_panel_gemm_kernel`).  :func:`matmul_image` takes B as a
convolution's images instead (element (r, c) at a row's offset plus a
column's, the columns in runs along output rows) and each job packs its
panels from them as it goes, no patch matrix built; :func:`matmul_rows`
is its case of a row-major B (a 1x1 layer's image).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

from . import _tuning
from ._prefetch import LINE_BYTES, prefetch_at, prefetch_write_at
from ._simd import copy_lanes, lanes
from .direct import TILE_VECTORS, emit_fma_tile, tile_columns

__all__ = ["matmul", "matmul_rows", "matmul_image", "image_geometry",
           "ImageCall", "plan_image_call", "run_image_call",
           "panel_width", "panel_width_of",
           "buffer_size", "zero_padding", "first_tile_rows",
           "panel_tile_rows", "last_tile_rows"]

# Rows of A per register tile: TILE_ROWS x TILE_VECTORS accumulators (12
# of AVX2's 16 vector registers, 24 of AVX-512's 32).
TILE_ROWS = 6

# Jobs wanted per thread, so that the last ones to finish are short ...
_JOBS_PER_THREAD = 4
# ... but one where the jobs pack B from rows or images (matmul_image):
# every further run of tiles packs B again, and every further run of
# panels reads A again.  Xeon VM, 2 threads, ResNet-50's twelve 1x1
# shapes at batch 1, 31 alternated calls in each of two processes, time
# with 4 a thread over 1, caches cold / warm: 2048 -> 512 @ 7^2 (8 runs
# of tiles against 2) 1.30 / 1.21, 1.13 / 1.15; 1024 -> 256 @ 14^2
# (runs of 2 x 4 against 1 x 2) 1.16 / 0.96, 1.18 / 0.93; the twelve
# summed 1.04 and 1.04 cold (docs/performance.md section AQ).
_JOBS_PER_THREAD_PACKING = 1
# A tile's slice of a panel per block of the reduction: 16 KiB, half a
# 32 KiB L1 (Zen 3, float32: 256 rows), and at least 128 rows, so that
# reloading the accumulators is amortised.
_B_BLOCK_BYTES = 16 * 1024
_MIN_DEPTH_BLOCK = 128
# A job's block of A (its row tiles times a reduction block): half of a
# 512 KiB L2 (Zen 3).
_A_BLOCK_BYTES = 256 * 1024
# What a job's packing of B from rows costs, per element, against a read
# of A or of B's panels (see _job_split).
_B_ROWS_WEIGHT = 3


def panel_width(dtype):
    """Columns per panel of B: one register tile's width.

    Wider panels (four cache lines, rows five lines apart) let the gather
    write longer pieces (64@56^2's gather 0.84-0.92 ms against 1.1-2.0
    with one-tile panels, 0.6-0.8 row-major; Zen 3) but slowed the
    products 1.3-2x, where one-tile panels ran level with OpenBLAS; the
    products cost three to eight times the gather.
    """
    return tile_columns(dtype)


def panel_width_of(array):  # pragma: no cover
    """:func:`panel_width` of ``array``'s dtype, a compile-time constant in
    jitted code."""
    raise NotImplementedError("only callable from jitted code")


@overload(panel_width_of, inline="always")
def _panel_width_of_impl(array):
    width = panel_width(as_dtype(array.dtype))
    return lambda array: width


def buffer_size(rows, cols, dtype):
    """Elements of a panel buffer for a (rows, cols) matrix."""
    panel = panel_width(dtype)
    return -(-cols // panel) * rows * panel


def zero_padding(buffer, rows, cols):
    """Zero the columns past ``cols`` of the last panel: they are
    multiplied too (and dropped), and no NaN or subnormal left there from
    an earlier use should slow the GEMM down."""
    panel = panel_width(buffer.dtype)
    last = (cols - 1) // panel
    used = cols - last * panel
    if used < panel:
        start = last * rows * panel
        buffer[start:start + rows * panel].reshape(rows, panel)[:, used:] = 0


@functools.lru_cache(maxsize=256)
def _row_tiles(m):
    """(first row, rows) of the register tiles that cover ``m`` rows of A:
    ``TILE_ROWS`` at a time, the rest in tiles of 4, 2 and 1 (each row's
    sums are the same in any of them)."""
    starts, sizes = [], []
    m0 = 0
    for size in (TILE_ROWS, 4, 2, 1):
        while m - m0 >= size:
            starts.append(m0)
            sizes.append(size)
            m0 += size
    starts, sizes = np.array(starts, np.int64), np.array(sizes, np.int64)
    starts.setflags(write=False)
    sizes.setflags(write=False)
    return starts, sizes


def _element_ptr(context, builder, ary_type, ary, index):
    """Pointer to element ``index`` of the 1-D array value ``ary``."""
    data = context.make_array(ary_type)(context, builder, ary).data
    return builder.gep(data, [index], inbounds=True)


def _is_tile_tag(tag):
    """A tile's tag: R copies of a tuple of V elements, for R rows of A
    and V vectors of B's lanes (:data:`_FULL`, :data:`_HALF` or
    :data:`_QUARTER`)."""
    return (isinstance(tag, types.UniTuple)
            and isinstance(tag.dtype, types.UniTuple))


def _emit_panel_tile(context, builder, types_, values, acc_ptr, **options):
    """:func:`kernels.cpu.direct.emit_fma_tile` for the tile whose first
    eight arguments (types ``types_``, LLVM ``values``) are ``tag, b, b0,
    b_step, a, a0, a_row, steps``; ``options`` as there."""
    tag, b, _, _, a = types_[:5]
    _, b_v, b0_v, b_step_v, a_v, a0_v, a_row_v, steps_v = values[:8]
    emit_fma_tile(context, builder, b.dtype, tag.count, tag.dtype.count,
                  context.make_array(b)(context, builder, b_v).data,
                  lambda r: builder.add(b0_v, builder.mul(r, b_step_v)),
                  context.make_array(a)(context, builder, a_v).data, a0_v,
                  a_row_v, steps_v, acc_ptr, **options)


@intrinsic
def _panel_tile(typingctx, tag, b, b0, b_step, a, a0, a_row, steps, c, c0):
    """``c[c0 + q w + l] += sum_r a[a0 + q a_row + r] * b[b0 + r b_step +
    l]`` for ``r < steps``, ``q < R``, ``l < w`` (one tile's width), R the
    length of the tuple ``tag`` (a compile-time constant; only its first V
    vectors of lanes where its elements are tuples of V, see
    :func:`_is_tile_tag`): direct's
    register tile (:func:`kernels.cpu.direct.emit_fma_tile`) with B's rows
    at a constant stride (direct's reads a table of offsets, one more load
    per step: 1.4x slower than this on 512@7^2's product, 1.1x on 64@56^2).
    """
    if not _is_tile_tag(tag):
        return None
    sig = types.void(tag, b, b0, b_step, a, a0, a_row, steps, c, c0)

    def codegen(context, builder, signature, args):
        _emit_panel_tile(context, builder, signature.args, args,
                         _element_ptr(context, builder, c, args[8], args[9]))
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _first_tile_at(typingctx, tag, b, b0, b_step, a, a0, a_row, steps, c, c0,
                   ldc):
    """:func:`_panel_tile` with sums that start from zero in registers and
    rows ``ldc`` apart (``c[c0 + q ldc + l]``, only written): a full-width
    tile straight into its place in the output, or a reduction's first
    block into the job's buffer (``ldc`` one tile's width), with nothing
    zeroed beforehand.  The same chain of multiply-adds."""
    if not _is_tile_tag(tag):
        return None
    sig = types.void(tag, b, b0, b_step, a, a0, a_row, steps, c, c0, ldc)

    def codegen(context, builder, signature, args):
        _emit_panel_tile(context, builder, signature.args, args,
                         _element_ptr(context, builder, c, args[8], args[9]),
                         acc_stride=args[10], zero_init=True)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _last_tile_to(typingctx, tag, b, b0, b_step, a, a0, a_row, steps, c, c0,
                  out, o0, ldc):
    """:func:`_panel_tile` whose sums, loaded from the tile buffer at
    ``c[c0]``, go to ``out[o0 + q ldc + l]``: a reduction's last block
    puts a full-width tile in its place instead of back in the buffer."""
    if not _is_tile_tag(tag):
        return None
    sig = types.void(tag, b, b0, b_step, a, a0, a_row, steps, c, c0, out, o0,
                     ldc)

    def codegen(context, builder, signature, args):
        _emit_panel_tile(context, builder, signature.args, args,
                         _element_ptr(context, builder, c, args[8], args[9]),
                         store_ptr=_element_ptr(context, builder, out,
                                                args[10], args[11]),
                         store_stride=args[12])
        return context.get_dummy_value()

    return sig, codegen




@njit(cache=True, inline="always")
def _store_rows(tile, rows, nw, width, out, o0, ldc):
    """out[o0 + q ldc : + nw] = tile[q width : + nw] for q < rows."""
    for q in range(rows):
        dst = out[o0 + q * ldc:]
        src = tile[q * width:]
        for lane in range(nw):
            dst[lane] = src[lane]


# Tile tags' vector tuples: a whole panel's width, or its first half (a
# last panel of at most half a panel's columns: 49 = 3 x 16 + 1 columns,
# a 7^2 map, compute 56 lanes instead of 64; each lane's sum is the same).
_FULL = (0,) * TILE_VECTORS
_HALF = (0,) * (TILE_VECTORS // 2)
# A last panel of at most a quarter of a panel's columns (196 = 3 x 64 + 4,
# a 14^2 map) computes one vector of lanes (AVX-512; on AVX2 a quarter is
# the half).  M 256, depth 1024 on the Xeon VM: 196 columns took 0.491 ms
# with a half last panel against 192 columns' 0.428.
_QUARTER = (0,) * max(1, TILE_VECTORS // 4)


@njit(cache=True, inline="always")
def _edge_lanes(width, panel):
    """Lanes the tiles of a last panel of ``width`` columns compute: a
    quarter, half or all of the panel's."""
    quarter = panel * len(_QUARTER) // TILE_VECTORS
    half = panel * len(_HALF) // TILE_VECTORS
    if width <= quarter:
        return quarter
    if width <= half:
        return half
    return panel


@njit(cache=True, inline="always")
def _run_tile(rows, v, b, b0, b_step, af, a0, depth, steps, acc, c0):
    """:func:`_panel_tile` for a tile of ``rows`` (6, 4, 2 or 1) rows and
    the vectors ``v`` (``_FULL``, ``_HALF`` or ``_QUARTER``)."""
    # The tuples' lengths are the tiles' rows (TILE_ROWS = 6).
    if rows == 6:
        _panel_tile((v, v, v, v, v, v), b, b0, b_step, af, a0, depth, steps,
                    acc, c0)
    elif rows == 4:
        _panel_tile((v, v, v, v), b, b0, b_step, af, a0, depth, steps, acc,
                    c0)
    elif rows == 2:
        _panel_tile((v, v), b, b0, b_step, af, a0, depth, steps, acc, c0)
    else:
        _panel_tile((v,), b, b0, b_step, af, a0, depth, steps, acc, c0)


@njit(cache=True, inline="always")
def _run_first_tile(rows, v, b, b0, b_step, af, a0, depth, steps, c, c0,
                    ldc):
    """:func:`_first_tile_at` for a tile of ``rows`` (6, 4, 2 or 1) rows
    and the vectors ``v``."""
    if rows == 6:
        _first_tile_at((v, v, v, v, v, v), b, b0, b_step, af, a0, depth,
                       steps, c, c0, ldc)
    elif rows == 4:
        _first_tile_at((v, v, v, v), b, b0, b_step, af, a0, depth, steps, c,
                       c0, ldc)
    elif rows == 2:
        _first_tile_at((v, v), b, b0, b_step, af, a0, depth, steps, c, c0, ldc)
    else:
        _first_tile_at((v,), b, b0, b_step, af, a0, depth, steps, c, c0, ldc)


@njit(cache=True, inline="always")
def _run_last_tile(rows, b, b0, b_step, af, a0, depth, steps, c, c0, out, o0,
                   ldc):
    """:func:`_last_tile_to` for a full-width tile of ``rows`` (6, 4, 2 or
    1) rows."""
    v = _FULL
    if rows == 6:
        _last_tile_to((v, v, v, v, v, v), b, b0, b_step, af, a0, depth, steps,
                      c, c0, out, o0, ldc)
    elif rows == 4:
        _last_tile_to((v, v, v, v), b, b0, b_step, af, a0, depth, steps, c,
                      c0, out, o0, ldc)
    elif rows == 2:
        _last_tile_to((v, v), b, b0, b_step, af, a0, depth, steps, c, c0, out,
                      o0, ldc)
    else:
        _last_tile_to((v,), b, b0, b_step, af, a0, depth, steps, c, c0, out,
                      o0, ldc)


# Winograd's tuple GEMMs (kernels/cpu/_winograd_gemm.py and, with their
# sums kept in a buffer between blocks of the reduction,
# _winograd_streamed.py) run these tiles over a whole panel's width, on
# register tiles of any number of rows: V's tiles come in runs of any
# length.

@njit(cache=True, inline="always")
def first_tile_rows(rows, b, b0, b_step, a, a0, a_row, steps, c, c0, ldc):
    """:func:`_first_tile_at` over a whole panel for a tile of ``rows``
    (1..6, a run-time value) rows of A."""
    v = _FULL
    if rows == 6:
        _first_tile_at((v, v, v, v, v, v), b, b0, b_step, a, a0, a_row, steps,
                       c, c0, ldc)
    elif rows == 5:
        _first_tile_at((v, v, v, v, v), b, b0, b_step, a, a0, a_row, steps, c,
                       c0, ldc)
    elif rows == 4:
        _first_tile_at((v, v, v, v), b, b0, b_step, a, a0, a_row, steps, c, c0,
                       ldc)
    elif rows == 3:
        _first_tile_at((v, v, v), b, b0, b_step, a, a0, a_row, steps, c, c0,
                       ldc)
    elif rows == 2:
        _first_tile_at((v, v), b, b0, b_step, a, a0, a_row, steps, c, c0, ldc)
    else:
        _first_tile_at((v,), b, b0, b_step, a, a0, a_row, steps, c, c0, ldc)


@njit(cache=True, inline="always")
def panel_tile_rows(rows, b, b0, b_step, a, a0, a_row, steps, c, c0):
    """:func:`_panel_tile` (sums loaded from and stored to ``c``, rows one
    panel apart) for a tile of ``rows`` (1..6) rows of A."""
    v = _FULL
    if rows == 6:
        _panel_tile((v, v, v, v, v, v), b, b0, b_step, a, a0, a_row, steps, c,
                    c0)
    elif rows == 5:
        _panel_tile((v, v, v, v, v), b, b0, b_step, a, a0, a_row, steps, c, c0)
    elif rows == 4:
        _panel_tile((v, v, v, v), b, b0, b_step, a, a0, a_row, steps, c, c0)
    elif rows == 3:
        _panel_tile((v, v, v), b, b0, b_step, a, a0, a_row, steps, c, c0)
    elif rows == 2:
        _panel_tile((v, v), b, b0, b_step, a, a0, a_row, steps, c, c0)
    else:
        _panel_tile((v,), b, b0, b_step, a, a0, a_row, steps, c, c0)


@njit(cache=True, inline="always")
def last_tile_rows(rows, b, b0, b_step, a, a0, a_row, steps, c, c0, out, o0,
                   ldc):
    """:func:`_last_tile_to` for a tile of ``rows`` (1..6) rows of A."""
    v = _FULL
    if rows == 6:
        _last_tile_to((v, v, v, v, v, v), b, b0, b_step, a, a0, a_row, steps,
                      c, c0, out, o0, ldc)
    elif rows == 5:
        _last_tile_to((v, v, v, v, v), b, b0, b_step, a, a0, a_row, steps, c,
                      c0, out, o0, ldc)
    elif rows == 4:
        _last_tile_to((v, v, v, v), b, b0, b_step, a, a0, a_row, steps, c, c0,
                      out, o0, ldc)
    elif rows == 3:
        _last_tile_to((v, v, v), b, b0, b_step, a, a0, a_row, steps, c, c0,
                      out, o0, ldc)
    elif rows == 2:
        _last_tile_to((v, v), b, b0, b_step, a, a0, a_row, steps, c, c0, out,
                      o0, ldc)
    else:
        _last_tile_to((v,), b, b0, b_step, a, a0, a_row, steps, c, c0, out, o0,
                      ldc)


@njit(cache=True, inline="always")
def _run_edge_tile(rows, width, first, b, b0, b_step, af, a0, depth, steps,
                   acc, c0):
    """A tile of the last panel, ``width`` columns narrower than a panel,
    into its buffer (rows one panel apart): the first block of the
    reduction (:func:`_run_first_tile`) or a later one
    (:func:`_run_tile`), over a quarter or half of the lanes where the
    columns fit in them."""
    panel = panel_width_of(acc)
    lanes = _edge_lanes(width, panel)
    if lanes == panel * len(_QUARTER) // TILE_VECTORS:
        if first:
            _run_first_tile(rows, _QUARTER, b, b0, b_step, af, a0, depth,
                            steps, acc, c0, panel)
        else:
            _run_tile(rows, _QUARTER, b, b0, b_step, af, a0, depth, steps,
                      acc, c0)
    elif lanes < panel:
        if first:
            _run_first_tile(rows, _HALF, b, b0, b_step, af, a0, depth, steps,
                            acc, c0, panel)
        else:
            _run_tile(rows, _HALF, b, b0, b_step, af, a0, depth, steps, acc,
                      c0)
    elif first:
        _run_first_tile(rows, _FULL, b, b0, b_step, af, a0, depth, steps, acc,
                        c0, panel)
    else:
        _run_tile(rows, _FULL, b, b0, b_step, af, a0, depth, steps, acc, c0)


# B read from an image (matmul_image): element (r, c) at ``src[row(r) +
# column_offset(c)]``, the column's offset given by ``geom``, an int64 array
# of these entries:
_GEOM_BASE = 0        # offset of the first image's element (0, 0)
_GEOM_FIRST = 1       # flattened position of column 0 in its image
_GEOM_ROWS = 2        # output rows per image (Ho)
_GEOM_WIDTH = 3       # positions per output row (Wo)
_GEOM_IMAGE = 4       # elements from one image to the next
_GEOM_PITCH = 5       # elements from one output row's sources to the next
_GEOM_STEP = 6        # elements from one output column's source to the next
_GEOM_ROW_STEP = 7    # row(r) = r times this, or row_offsets[r] where it is 0
GEOM_SIZE = 8


@njit(cache=True, inline="always")
def _row_at(row_offsets, row_step, r):
    """Offset of B's row ``r`` in its image: rows at a constant step (a
    1x1 layer's channels, a row-major B: no table to build or read), or
    from the table of a layer's taps."""
    if row_step > 0:
        return r * row_step
    return row_offsets[r]


@njit(cache=True, inline="always")
def _seek(c, geom, at):
    """``at[:3]`` = (image, output row, output column) of B's column
    ``c``."""
    q = geom[_GEOM_FIRST] + c
    positions = geom[_GEOM_ROWS] * geom[_GEOM_WIDTH]
    m = q // positions
    p = q - m * positions
    ho = p // geom[_GEOM_WIDTH]
    at[0] = m
    at[1] = ho
    at[2] = p - ho * geom[_GEOM_WIDTH]


@njit(cache=True, inline="always")
def _take_runs(width, geom, at, runs):
    """Split the ``width`` columns of B from ``at`` = (image, output row,
    output column) on into runs that lie in one output row: run ``s`` is
    lanes ``runs[3 s] .. + runs[3 s + 2]`` of a panel, read from ``runs[3
    s + 1]`` on in steps of ``geom[_GEOM_STEP]``.  Returns the number of
    runs; ``at`` moves to the column after them, so that a panel's runs
    follow from the one before it without a division.  (The position
    lives in an array: carried through the jobs' loops as scalars it sent
    Numba's parfor reduction analysis into endless recursion.)"""
    row_len = geom[_GEOM_WIDTH]
    m, ho, wo = at[0], at[1], at[2]
    count = 0
    lane = 0
    while lane < width:
        n = min(width - lane, row_len - wo)
        runs[3 * count] = lane
        runs[3 * count + 1] = (geom[_GEOM_BASE] + m * geom[_GEOM_IMAGE]
                               + ho * geom[_GEOM_PITCH] + wo * geom[_GEOM_STEP])
        runs[3 * count + 2] = n
        count += 1
        lane += n
        wo += n
        if wo == row_len:
            wo = 0
            ho += 1
            if ho == geom[_GEOM_ROWS]:
                ho = 0
                m += 1
    at[0] = m
    at[1] = ho
    at[2] = wo
    return count


@njit(cache=True, inline="always")
def _runs_span(runs, n_runs, width, geom):
    """(lo, hi) for :func:`_prefetch_panel_part`: the source offsets of a
    panel's first and last columns, or of its first run's ends where the
    two lie more than a few output rows apart (a panel across two
    images)."""
    step = geom[_GEOM_STEP]
    lo = runs[1]
    last = 3 * (n_runs - 1)
    hi = runs[last + 1] + (runs[last + 2] - 1) * step
    if hi < lo or hi - lo > 2 * (width * step + geom[_GEOM_PITCH]):
        hi = lo + (runs[2] - 1) * step
    return lo, hi


# A job's record of the runs (``st``, int64): the runs' counts of its two
# rows of runs, the next panel's source span (lo, hi), the position after
# the runs taken (image, output row, column), the first panel's span.
# Scalars carried through the jobs' loops instead cost the 6-row tile's
# inner loop a register: a reload from the stack per step, 64-deep 1x1
# layers 5-8 % slower (Xeon VM).
_ST_SIZE = 9


@njit(cache=True, inline="always")
def _first_panel_runs(p_lo, cols, panel, geom, runs, st):
    """The runs of a job's first panel into ``runs[0]`` (its count to
    ``st[0]``, its span to ``st[7:9]``), the position after them to
    ``st[4:7]``."""
    width = min(panel, cols - p_lo * panel)
    _seek(p_lo * panel, geom, st[4:])
    st[0] = _take_runs(width, geom, st[4:], runs[0])
    lo, hi = _runs_span(runs[0], st[0], width, geom)
    st[7] = lo
    st[8] = hi


@njit(cache=True, inline="always")
def _next_panel_runs(width, geom, runs, st, row):
    """The next panel's runs (its ``width`` columns from the position in
    ``st[4:7]``) into ``runs``, their count into ``st[row]`` and their
    source span (:func:`_runs_span`) into ``st[2:4]``."""
    n = _take_runs(width, geom, st[4:], runs)
    st[row] = n
    lo, hi = _runs_span(runs, n, width, geom)
    st[2] = lo
    st[3] = hi


@njit(cache=True, inline="always")
def _copy_run(src, s0, dst, d0, n, step):
    """``dst[d0 + l] = src[s0 + l step]`` for ``l < n``."""
    if step == 1:
        # Whole vectors and a masked last one, at offsets (no slices): an
        # LLVM-vectorised loop ends in a scalar one, up to 15 elements of a
        # 40- or 24-column run.
        v = lanes(dst)
        for q in range(0, n, v):
            copy_lanes(src, s0 + q, dst, d0 + q, n - q)
    else:
        for lane in range(n):
            dst[d0 + lane] = src[s0 + lane * step]


@njit(cache=True, inline="always")
def _pack_panel(src, row_offsets, row_step, r0, steps, runs, n_runs, step,
                width, buf, panel):
    """``buf[r panel + l] = B[r0 + r, l]`` for ``r < steps``, ``l <
    width``, zero for the lanes past ``width`` that the tiles compute
    (:func:`_edge_lanes`): one panel's slice of B copied from its image
    (:func:`_take_runs`) into the job's buffer, zero-padded
    as the gather pads its last panel (its rows were asked for while the
    panel before it computed: :func:`_prefetch_panel_part`)."""
    lanes_used = _edge_lanes(width, panel)
    if n_runs == 1 and step == 1:
        # One run (a 1x1 layer's panels, wide maps' inner panels): LLVM's
        # loop over the whole row, as before runs existed.
        first = runs[1]
        for r in range(steps):
            src_row = src[_row_at(row_offsets, row_step, r0 + r) + first:]
            dst = buf[r * panel:]
            for lane in range(width):
                dst[lane] = src_row[lane]
            for lane in range(width, lanes_used):
                dst[lane] = 0
        return
    for r in range(steps):
        base = _row_at(row_offsets, row_step, r0 + r)
        d0 = r * panel
        for s in range(n_runs):
            _copy_run(src, base + runs[3 * s + 1], buf, d0 + runs[3 * s],
                      runs[3 * s + 2], step)
        for lane in range(width, lanes_used):
            buf[d0 + lane] = 0


@njit(cache=True, inline="always")
def _prefetch_panel_part(src, row_offsets, row_step, r0, steps, lo, hi, part,
                         parts):
    """Ask for part ``part`` of ``parts`` of a panel's slice in B's image:
    ``src[row(r0 + r) + lo : + hi - lo + 1]`` for the ``r`` in
    ``[part steps // parts, (part + 1) steps // parts)``, one request per
    cache line (``lo``, ``hi``: the offsets of the panel's first and last
    sources, or the first run's ends where the panel spans images).
    Spread over the tiles of the panel before it, the next panel's rows
    arrive while those tiles compute, a few lines per tile: each row's
    piece is a few lines, rows a plane apart, too many streams for the
    hardware prefetcher.  Asking for the whole next panel while packing
    this one (up to stop 34: 2 lines ahead in each row, Zen 3) issued
    hundreds of requests at once; spread out, ResNet-50's 1x1 layers with
    their image out of cache ran 0.96-1.19x faster (Xeon,
    docs/performance.md section AG)."""
    line = LINE_BYTES // src.itemsize
    for r in range(part * steps // parts, (part + 1) * steps // parts):
        s = _row_at(row_offsets, row_step, r0 + r)
        for k in range(lo, hi + 1, line):
            prefetch_at(src, s + k)
        prefetch_at(src, s + hi)


@njit(cache=True, inline="always")
def _prefetch_slice_part(b, start, length, part, parts):
    """Ask for part ``part`` of ``parts`` of ``b[start : start + length]``
    (a panel's slice in the gathered panels, contiguous), one request per
    cache line: spread over the tiles of the slice before it, as
    :func:`_prefetch_panel_part` does for a row-major B."""
    line = LINE_BYTES // b.itemsize
    lines = (length + line - 1) // line
    for q in range(part * lines // parts, (part + 1) * lines // parts):
        prefetch_at(b, start + q * line)


@njit(cache=True, inline="always")
def _prefetch_tile_rows(af, a0, rows, depth, steps):
    """Ask for ``af[a0 + q depth : + steps]``, ``q < rows`` (a register
    tile's block of A), one request per cache line: the next tile's
    block while this one computes.  A's rows are a reduction's length
    apart (8 KiB at 2048 channels), so a block is ``rows`` short runs in
    as many pages, which the hardware prefetcher does not follow."""
    line = LINE_BYTES // af.itemsize
    for q in range(rows):
        for k in range(0, steps, line):
            prefetch_at(af, a0 + q * depth + k)


@njit(cache=True, inline="always")
def _prefetch_tile_out(out, o0, rows, ldc, width):
    """Ask for ``out[o0 + q ldc : + width]``, ``q < rows`` (a tile's place
    in the output), to be written, one request per cache line: the next
    tile's while this one computes."""
    line = LINE_BYTES // out.itemsize
    for q in range(rows):
        for k in range(0, width, line):
            prefetch_write_at(out, o0 + q * ldc + k)


@njit(cache=True, inline="always")
def _panel_source(b, src, row_offsets, geom, runs, n_runs, buf, g, p, d0,
                  steps, groups, depth, cols, panel):
    """(array, offset) of panel ``p``'s rows ``d0 .. d0 + steps`` of group
    ``g``'s B: in ``b``'s panels, or, when ``geom`` places B in an image,
    packed from the image ``src`` (the panel's ``runs``) into ``buf``
    first."""
    if geom[_GEOM_WIDTH] == 0:
        return b, (p * groups * depth + g * depth + d0) * panel
    n0 = p * panel
    _pack_panel(src, row_offsets, geom[_GEOM_ROW_STEP], g * depth + d0, steps,
                runs, n_runs, geom[_GEOM_STEP], min(panel, cols - n0), buf,
                panel)
    return buf, 0


@njit(cache=True, inline="always")
def _one_block_job(g, t_lo, t_hi, p_lo, p_hi, tile_m0, tile_rows, b, src,
                   row_offsets, geom, af, m_total, depth, groups, cols, out,
                   out_off, ldc, panel):
    """A job of :func:`_panel_gemm_kernel` whose reduction is one block:
    each tile's sums start from zero in registers and go straight to
    ``out`` (through a one-tile buffer only in the last panel, narrower
    than a tile).  The job-wide accumulators of the blocked path would be
    zeroed, written and copied again: as much traffic as the output, at
    two multiply-adds per element read on a 64-deep 1x1 layer (ResNet-50's
    pointwise layers, which lost 0.3-0.6 ms each to torch).  The same
    chain of multiply-adds as the blocked path, so the same sums."""
    from_image = geom[_GEOM_WIDTH] > 0
    tile = np.empty(TILE_ROWS * panel, af.dtype)
    buf = np.empty(depth * panel if from_image else 0, af.dtype)
    # The runs of panel p in row (p - p_lo) % 2 (see _ST_SIZE).
    runs = np.empty((2, 3 * panel if from_image else 0), np.int64)
    st = np.zeros(_ST_SIZE, np.int64)
    if from_image:
        _first_panel_runs(p_lo, cols, panel, geom, runs, st)
    for p in range(p_lo, p_hi):
        cur = (p - p_lo) & 1
        bp, b0 = _panel_source(b, src, row_offsets, geom, runs[cur], st[cur],
                               buf, g, p, 0, depth, groups, depth, cols, panel)
        n0 = p * panel
        width = min(panel, cols - n0)
        if from_image and p + 1 < p_hi:
            _next_panel_runs(min(panel, cols - n0 - panel), geom,
                             runs[1 - cur], st, 1 - cur)
        for t in range(t_lo, t_hi):
            if from_image and p + 1 < p_hi:
                _prefetch_panel_part(src, row_offsets, geom[_GEOM_ROW_STEP],
                                     g * depth, depth, st[2], st[3], t - t_lo,
                                     t_hi - t_lo)
            a0 = (g * m_total + tile_m0[t]) * depth
            if p == p_lo and t + 1 < t_hi:
                _prefetch_tile_rows(af, a0 + tile_rows[t] * depth,
                                    tile_rows[t + 1], depth, depth)
            o0 = out_off + (g * m_total + tile_m0[t]) * ldc + n0
            if t + 1 < t_hi:
                _prefetch_tile_out(out, o0 + tile_rows[t] * ldc,
                                   tile_rows[t + 1], ldc, width)
            if width == panel:
                _run_first_tile(tile_rows[t], _FULL, bp, b0, panel, af, a0,
                                depth, depth, out, o0, ldc)
            else:
                _run_edge_tile(tile_rows[t], width, True, bp,
                               b0, panel, af, a0, depth, depth, tile, 0)
                _store_rows(tile, tile_rows[t], width, panel, out, o0, ldc)


@njit(parallel=True, cache=True)
def _panel_gemm_kernel(a, tile_m0, tile_rows, b, src, row_offsets, geom,
                       cols, out, out_off, ldc, t_jobs, p_jobs, depth_block):
    """out[g, m, :cols] = a[g, m] @ B[g] for every group and row; B is
    ``b`` in panels (module docstring), out's row (g, m) starts at
    ``out[out_off + (g M + m) ldc]``; A's register tiles are rows
    ``tile_m0[t]`` to ``tile_m0[t] + tile_rows[t]``.

    A job is (group, one of ``t_jobs`` runs of tiles, one of ``p_jobs``
    runs of panels), the runs as equal as they can be.  Its
    reduction runs in blocks of ``depth_block`` steps: the block of its
    rows of A stays in L2 while its panels pass, a panel's slice in L1
    while the tiles pass.  Between blocks the accumulators wait in the
    job's own buffer, from where the next block reloads them exactly: the
    sums are those of one unbroken chain.

    Where ``geom`` places B in an image (:func:`matmul_image`), B is read
    from ``src`` instead: a job copies each panel's slice into its own
    buffer just before its tiles use it (:func:`_take_runs`,
    :func:`_pack_panel`), where the gather would have copied every panel
    beforehand."""
    groups, m_total, depth = a.shape
    panel = panel_width_of(b)
    af = a.reshape(a.size)
    n_tiles = tile_m0.shape[0]
    panels = (cols + panel - 1) // panel
    tile_size = TILE_ROWS * panel
    from_image = geom[_GEOM_WIDTH] > 0
    for job in prange(groups * t_jobs * p_jobs):
        g = job // (t_jobs * p_jobs)
        ti = (job // p_jobs) % t_jobs
        pi = job % p_jobs
        t_lo = ti * n_tiles // t_jobs
        t_hi = (ti + 1) * n_tiles // t_jobs
        p_lo = pi * panels // p_jobs
        p_hi = (pi + 1) * panels // p_jobs
        n_p = p_hi - p_lo
        if depth <= depth_block:
            _one_block_job(g, t_lo, t_hi, p_lo, p_hi, tile_m0, tile_rows, b,
                           src, row_offsets, geom, af, m_total, depth, groups,
                           cols, out, out_off, ldc, panel)
            continue
        # The first block writes every tile of acc, the last moves every
        # full-width one to out: acc is never zeroed, and only the last
        # panel's tiles (narrower than a panel) are copied.
        acc = np.empty((t_hi - t_lo) * n_p * tile_size, a.dtype)
        buf = np.empty(depth_block * panel if from_image else 0, a.dtype)
        runs = np.empty((2, 3 * panel if from_image else 0), np.int64)
        st = np.zeros(_ST_SIZE, np.int64)
        for d0 in range(0, depth, depth_block):
            steps = min(depth, d0 + depth_block) - d0
            last = d0 + steps == depth
            if from_image:
                # Each pass over the job's panels works their runs out
                # again from the first (no table of every panel's).
                _first_panel_runs(p_lo, cols, panel, geom, runs, st)
            for p in range(p_lo, p_hi):
                cur = (p - p_lo) & 1
                bp, b0 = _panel_source(b, src, row_offsets, geom, runs[cur],
                                       st[cur], buf, g, p, d0, steps, groups,
                                       depth, cols, panel)
                n0 = p * panel
                full = n0 + panel <= cols
                # The slice packed next: the next panel's, or the first
                # panel's in the next block of the reduction.
                next_p, next_d0 = (p + 1, d0) if p + 1 < p_hi else (
                    p_lo, d0 + depth_block)
                next_steps = min(depth, next_d0 + depth_block) - next_d0
                if from_image and next_steps > 0:
                    if p + 1 < p_hi:
                        _next_panel_runs(min(panel, cols - next_p * panel),
                                         geom, runs[1 - cur], st, 1 - cur)
                    else:
                        st[2] = st[7]
                        st[3] = st[8]
                for t in range(t_lo, t_hi):
                    if from_image and next_steps > 0:
                        _prefetch_panel_part(src, row_offsets,
                                             geom[_GEOM_ROW_STEP],
                                             g * depth + next_d0, next_steps,
                                             st[2], st[3], t - t_lo,
                                             t_hi - t_lo)
                    elif next_steps > 0:
                        _prefetch_slice_part(
                            b, (next_p * groups * depth + g * depth + next_d0)
                            * panel, next_steps * panel, t - t_lo, t_hi - t_lo)
                    a0 = (g * m_total + tile_m0[t]) * depth + d0
                    if p == p_lo and t + 1 < t_hi:
                        _prefetch_tile_rows(af, a0 + tile_rows[t] * depth,
                                            tile_rows[t + 1], depth, steps)
                    c0 = ((t - t_lo) * n_p + p - p_lo) * tile_size
                    if not full:
                        _run_edge_tile(tile_rows[t], cols - n0, d0 == 0, bp,
                                       b0, panel, af, a0, depth, steps, acc,
                                       c0)
                    elif d0 == 0:
                        _run_first_tile(tile_rows[t], _FULL, bp, b0, panel,
                                        af, a0, depth, steps, acc, c0, panel)
                    elif last:
                        if t + 1 < t_hi:
                            _prefetch_tile_out(
                                out, out_off + (g * m_total + tile_m0[t + 1])
                                * ldc + n0, tile_rows[t + 1], ldc, panel)
                        _run_last_tile(tile_rows[t], bp, b0, panel, af, a0,
                                       depth, steps, acc, c0, out,
                                       out_off + (g * m_total + tile_m0[t])
                                       * ldc + n0, ldc)
                    else:
                        _run_tile(tile_rows[t], _FULL, bp, b0, panel, af, a0,
                                  depth, steps, acc, c0)
        if cols < p_hi * panel:
            p = p_hi - 1
            n0 = p * panel
            for t in range(t_lo, t_hi):
                _store_rows(acc[((t - t_lo) * n_p + p - p_lo) * tile_size:],
                            tile_rows[t], cols - n0, panel, out,
                            out_off + (g * m_total + tile_m0[t]) * ldc + n0,
                            ldc)


def _job_split(groups, n_tiles, panels, depth_block, itemsize, threads, cols,
               b_weight=1):
    """(t_jobs, p_jobs): ``t_jobs`` runs of tiles, whose blocks of A
    (``depth_block`` steps, the reduction's length when shorter) fit
    ``_A_BLOCK_BYTES``, by ``p_jobs`` runs of panels.

    At least ``_JOBS_PER_THREAD`` jobs per thread where the problem has
    them (``_JOBS_PER_THREAD_PACKING`` where the jobs pack B, ``b_weight``
    above 1), and a multiple of the thread count where it can be: Numba's
    ``prange`` gives each thread an equal run of the jobs, and 7 jobs
    (128 x 512 @ 512 x 784, a ResNet-50 1x1 layer) left one of two
    threads 14 % more work than the other's mean, 9 jobs (2048 x 512 @
    512 x 49) 11 %.  Among the splits that do, the one that moves least:
    each run of tiles reads all of B, each run of panels all of A, so
    ``b_weight t_jobs cols + p_jobs rows`` (in units of the reduction's
    length).  ``b_weight`` is 3 where
    the jobs pack B from rows (:func:`matmul_rows`): with 1, 256 x 1024 @
    1024 x 196 and 512 x 2048 @ 2048 x 49 chose more runs of tiles and
    ran 7 % and 11 % slower than with two or three (Zen 3).
    """
    tile_bytes = depth_block * TILE_ROWS * itemsize
    t_min = -(-n_tiles // max(1, _A_BLOCK_BYTES // tile_bytes))
    per_thread = _JOBS_PER_THREAD if b_weight == 1 else _JOBS_PER_THREAD_PACKING
    wanted = min(per_thread * threads, groups * n_tiles * panels)
    rows = n_tiles * TILE_ROWS
    best = None
    for t_jobs in range(t_min, min(n_tiles, t_min + wanted) + 1):
        for p_jobs in range(1, min(panels, wanted) + 1):
            jobs = groups * t_jobs * p_jobs
            if jobs < wanted:
                continue
            key = (jobs % threads != 0,
                   b_weight * t_jobs * cols + p_jobs * rows, jobs)
            if best is None or key < best[0]:
                best = (key, t_jobs, p_jobs)
    # (The largest split searched has at least the wanted jobs: wanted is
    # at most groups n_tiles panels, and either range reaches wanted.)
    return best[1], best[2]


def _flat_rows(array):
    """(1-D view of the C-contiguous buffer under ``array``, offset of its
    first element, row stride in elements) of a (G, R, C) ``array`` with
    unit-stride rows at one constant stride across groups (a C-contiguous
    array, or a column slice of one)."""
    base = array
    while isinstance(base.base, np.ndarray):
        base = base.base
    groups, rows, cols = array.shape
    item = array.itemsize
    if rows > 1:
        ld = array.strides[1] // item
    else:                       # one row per group: groups are rows apart
        ld = array.strides[0] // item if groups > 1 else cols
    if (not base.flags.c_contiguous
            or (cols > 1 and array.strides[2] != item)
            or (groups > 1 and array.strides[0] != rows * ld * item)):
        raise ValueError("out must be a C-contiguous array or a column "
                         "slice of one")
    flat = base.reshape(-1)
    # (ctypes.data: half the cost of __array_interface__, on every call)
    offset = (array.ctypes.data - flat.ctypes.data) // item
    return flat, offset, ld


def matmul(a, b, cols, out):
    """``out[g] = a[g] @ B[g]`` in the order of the module docstring.

    Parameters
    ----------
    a : ndarray (G, M, D), C-contiguous
    b : ndarray, 1-D, C-contiguous
        B (G D rows, ``cols`` columns) in panels: with ``P =
        panel_width(dtype)``, element (r, c) at ``(c // P) G D P + r P + c
        % P``; :func:`buffer_size` elements at least.
    cols : int
    out : ndarray (G, M, cols), written in place: C-contiguous, or a
        column slice of a C-contiguous array

    Returns
    -------
    out
    """
    groups, _, depth = a.shape
    if b.dtype != a.dtype or b.size < buffer_size(groups * depth, cols, a.dtype):
        raise ValueError(f"b is not a panel buffer of {groups * depth} rows "
                         f"and {cols} columns of {a.dtype}")
    return _launch(a, b, np.empty(0, a.dtype), NO_OFFSETS, _NO_GEOMETRY,
                   cols, out)


def matmul_rows(a, rows, rows_off, rows_ld, cols, out):
    """:func:`matmul` with B read from a row-major matrix, packed into
    panels by each job as it goes (no panel buffer, no gather); the same
    sums, bit for bit.

    Parameters
    ----------
    a : ndarray (G, M, D), C-contiguous
    rows : ndarray, 1-D, C-contiguous, dtype of ``a``
        B's element (r, c) (r < G D, c < ``cols``) at ``rows[rows_off + r
        rows_ld + c]``: a 1x1 layer's image ``x[n].reshape(C, H W)``,
        flattened, is its own B.
    rows_off, rows_ld : int
    cols : int
    out : ndarray (G, M, cols), as for :func:`matmul`

    Returns
    -------
    out
    """
    groups, _, depth = a.shape
    if rows.dtype != a.dtype or rows_ld < cols or (
            groups * depth and rows_off + (groups * depth - 1) * rows_ld + cols
            > rows.size):
        raise ValueError(f"rows does not hold {groups * depth} rows of {cols} "
                         f"columns of {a.dtype}, {rows_ld} apart from "
                         f"{rows_off}")
    return _launch(a, np.empty(0, a.dtype), rows, NO_OFFSETS,
                   image_geometry(rows_off, 0, 1, cols, 0, 0, 1, rows_ld), cols,
                   out)


def image_geometry(base, first, rows, row_width, image_stride, pitch, step,
                   row_step=0):
    """The ``geom`` array of :func:`matmul_image`: column ``c`` of B is
    output position ``q = first + c`` counted across images of ``rows``
    output rows of ``row_width`` (image ``q // (rows row_width)``, output
    row and column of the rest), read at ``base + image image_stride +
    row pitch + column step`` in the source, plus ``r row_step`` for B's
    row ``r`` where ``row_step`` > 0 (else the caller's ``row_offsets``)."""
    geom = np.array([base, first, rows, row_width, image_stride, pitch,
                     step, row_step], dtype=np.int64)
    return geom


def matmul_image(a, src, row_offsets, geom, cols, out):
    """:func:`matmul` with B read from an image, each job packing its
    panels as it goes (no gather, no panel buffer); the same sums, bit for
    bit, as :func:`matmul` on the gathered panels.

    B's element (r, c) is ``src[row(r) + o(c)]``, ``o`` the column offset
    of ``geom`` (:func:`image_geometry`) and ``row(r)`` either ``r`` times
    its ``row_step`` or ``row_offsets[r]``: for a convolution's patch
    matrix, ``src`` the zero-padded images, ``row_offsets[(c, i, j)]`` the
    offset of tap ``(i, j)`` of channel ``c`` and ``o`` the top-left input
    of an output position.  The caller keeps every offset inside ``src``
    (jitted code does not check).

    Parameters
    ----------
    a : ndarray (G, M, D), C-contiguous
    src : ndarray, 1-D, C-contiguous and writeable, dtype of ``a``
    row_offsets : ndarray (G D,) of int64, or empty with a ``row_step``
    geom : ndarray (:data:`GEOM_SIZE`,) of int64
    cols : int
    out : ndarray (G, M, cols), as for :func:`matmul`

    Returns
    -------
    out
    """
    groups, _, depth = a.shape
    if src.dtype != a.dtype:
        raise ValueError(f"src must be {a.dtype}, got {src.dtype}")
    if geom.shape != (GEOM_SIZE,) or geom[_GEOM_WIDTH] < 1:
        raise ValueError("geom must come from image_geometry")
    if geom[_GEOM_ROW_STEP] == 0 and row_offsets.shape != (groups * depth,):
        raise ValueError(f"row_offsets must hold {groups * depth} offsets "
                         "when geom has no row_step")
    return _launch(a, np.empty(0, a.dtype), src, row_offsets, geom, cols, out)


NO_OFFSETS = np.empty(0, np.int64)
_NO_GEOMETRY = np.zeros(GEOM_SIZE, np.int64)


def _launch(a, b, src, row_offsets, geom, cols, out):
    """Run :func:`_panel_gemm_kernel` on checked operands."""
    groups, n_rows, depth = a.shape
    if out.size == 0:
        return out
    if depth == 0:
        out[...] = 0
        return out
    out_flat, out_off, ldc = _flat_rows(out)
    depth_block = _depth_block(a.dtype)
    tile_m0, tile_rows, t_jobs, p_jobs = _launch_plan(
        groups, n_rows, depth, cols, a.dtype, depth_block,
        _tuning.block_shape_threads(), geom[_GEOM_WIDTH] > 0)
    _panel_gemm_kernel(np.ascontiguousarray(a), tile_m0, tile_rows, b, src,
                       row_offsets, geom, cols, out_flat, out_off, ldc,
                       t_jobs, p_jobs, depth_block)
    return out


class ImageCall(NamedTuple):
    """One :func:`matmul_image` call worked out in advance
    (:func:`plan_image_call`), for callers that make the same call again
    and again (:func:`run_image_call`)."""

    geom: np.ndarray
    cols: int
    out_off: int
    ldc: int
    tile_m0: np.ndarray
    tile_rows: np.ndarray
    t_jobs: int
    p_jobs: int
    depth_block: int


def plan_image_call(a_shape, dtype, geom, cols, out_off, ldc):
    """The :class:`ImageCall` of ``matmul_image(a, src, NO_OFFSETS, geom,
    cols, out)`` for an ``a`` of ``a_shape`` and an ``out`` whose row
    ``(g, m)`` starts at element ``out_off + (g M + m) ldc`` of its
    flattened C-contiguous base; ``geom`` with a ``row_step`` (B's rows a
    constant step apart)."""
    groups, n_rows, depth = a_shape
    # (Writeable like image_geometry's: a read-only array is another
    # Numba type, another compilation of the kernel.)
    geom = np.array(geom, np.int64)
    depth_block = _depth_block(dtype)
    tile_m0, tile_rows, t_jobs, p_jobs = _launch_plan(
        groups, n_rows, depth, cols, np.dtype(dtype), depth_block,
        _tuning.block_shape_threads(), True)
    return ImageCall(geom, cols, out_off, ldc, tile_m0, tile_rows, t_jobs,
                     p_jobs, depth_block)


def run_image_call(call, a, src, out_flat):
    """:func:`matmul_image` as planned: ``a`` (G, M, D) C-contiguous,
    ``src`` 1-D, C-contiguous and writeable, ``out_flat`` the 1-D base of
    the output, all of one dtype and of the planned shapes (not checked:
    a network's 1x1 layer spent ~10 us a call working out and checking
    what its last call had)."""
    _panel_gemm_kernel(a, call.tile_m0, call.tile_rows, _no_panels(a.dtype),
                       src, NO_OFFSETS, call.geom, call.cols, out_flat,
                       call.out_off, call.ldc, call.t_jobs, call.p_jobs,
                       call.depth_block)


@functools.lru_cache(maxsize=None)
def _no_panels(dtype):
    return np.empty(0, dtype)


def _depth_block(dtype):
    """Steps of the reduction per block: a tile's slice of a panel in
    ``_B_BLOCK_BYTES``, and at least ``_MIN_DEPTH_BLOCK``."""
    dtype = np.dtype(dtype)
    return max(_MIN_DEPTH_BLOCK,
               _B_BLOCK_BYTES // (panel_width(dtype) * dtype.itemsize))


@functools.lru_cache(maxsize=1024)
def _launch_plan(groups, n_rows, depth, cols, dtype, depth_block, threads,
                 from_rows=False):
    """(tile_m0, tile_rows, t_jobs, p_jobs) of a product: a
    network calls the same shapes again and again, and working them out
    cost a few of a call's ~50 us of Python."""
    tile_m0, tile_rows = _row_tiles(n_rows)
    dtype = np.dtype(dtype)
    t_jobs, p_jobs = _job_split(
        groups, tile_m0.size, -(-cols // panel_width(dtype)),
        min(depth, depth_block), dtype.itemsize, threads, cols,
        _B_ROWS_WEIGHT if from_rows else 1)
    return tile_m0, tile_rows, t_jobs, p_jobs
