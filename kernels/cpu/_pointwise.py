"""im2col's product for 1x1 layers with output channels in the SIMD lanes.

A 1x1 layer is the GEMM ``y[n] = W @ x[n]`` (W the filters as (K, C), an
image as (C, H W)).  The panel GEMM (:mod:`kernels.cpu._panel_gemm`) puts
output *positions* in its lanes: it broadcasts filter values and packs
the image into panels of 64 columns (AVX-512, float32) on every call.  A
7^2 map's 49 positions then fill 49 of a panel's 64 lanes and a 14^2
map's last 4 a whole vector, and the packing is a copy of the image.
Here the lanes hold *output channels*, as in direct's channel tile
(:mod:`kernels.cpu._direct_channels`, whose register tile and stores this
module runs): per input channel the tile loads ``NVEC`` vectors of
filters and broadcasts ``COLS`` pixels read in place from ``x``, and each
channel's ``COLS`` sums are written with one masked vector store.  A
layer's positions are covered by segments of ``COLS`` pixels, the last
one ending at the image's end (overlapping the one before, whose outputs
it writes again with the same bits), so no lane is wasted on channels
that are a multiple of the tile's ``NVEC x lanes``.

The filters are packed on every call (filter values for ``lanes``
consecutive output channels side by side, :func:`._direct_channels.
pack_block`), by the task that uses them, just before its tiles: a
network's filters come from memory on each call anyway, and a cached
copy would cost a bit-for-bit comparison with the filter (as much
memory traffic as packing it).

**Same bits as the panel GEMM.**  Each output is the chain of fused
multiply-adds over the input channels in increasing order, starting from
zero, whatever its place; im2col adds the bias afterwards in both cases.
So im2col's result does not depend on which product ran (the tests
compare them bit for bit), and the choice may depend on the image's size
without breaking im2col's windows-equal-the-whole guarantee.

A task is (group, block of ``NVEC x lanes`` output channels, run of
segments over all images): it packs its block's filters into its own
part of a scratch buffer, then computes its segments, each over the whole
reduction (the block's filters, ``C x 128`` bytes at float32, stay in L2
while the image streams past).  Where a group's images exceed half of
L2, runs of segments that fit it are the tasks' slowest index instead,
so that a thread's run stays in L2 while it passes every block; such a
run comes from memory, and its first task asks for its lines plane
after plane before computing (the tile reads a line of each of ``C``
planes in turn, more streams than the hardware prefetcher follows).
Every segment asks for the next one's output lines, to be written, and
for its share of the filters the thread's next task packs, into L2
(``_PREFETCH_RUNS``, ``_PREFETCH_OUT``, ``_PREFETCH_FILTERS``).  A
strided layer's positions are first copied into a compact image
(:func:`_subsample`), within im2col's scratch limit.

Measured on the Xeon VM (AVX-512, 2 threads, float32, caches cold, 21
shuffled calls each, docs/performance.md section AS), the panel GEMM's
time over this product on ResNet-50's 1x1 layers of at least 256 input
channels, ``C -> K @ H^2``, batch 1 / 4: 256 -> 64 @ 56^2 1.10 / 1.15,
256 -> 128 @ 56^2 1.11 / 1.09, 512 -> 128 @ 28^2 1.09 / 1.21, 1024 ->
256 @ 14^2 1.04 / 1.25, 256 -> 1024 @ 14^2 1.08 / 1.34, 2048 -> 512 @
7^2 1.17 / 1.08, 512 -> 2048 @ 7^2 1.07 / 1.23, stride 2 256 -> 512 @
56^2 1.02 / 1.13, 512 -> 1024 @ 28^2 1.18 / 1.19, 1024 -> 2048 @ 14^2
1.14 / 1.11; summed 1.11 / 1.19.  With 64 or 128 input channels the
stores' transposes weigh more against the tile's short reduction (64 ->
64 @ 56^2 0.73, 64 -> 256 0.83, 128 -> 512 @ 28^2 0.89): those layers
keep the panel GEMM (``Im2colTuning.channel_lanes_min_depth``).
"""

from __future__ import annotations

import numpy as np
from numba import config, get_thread_id, njit, prange

from . import _tuning
from ._direct_channels import (COLS, NVEC, X_PREFETCH_TAPS, channel_tile,
                               channel_tile_buffer, lanes_of, pack_block,
                               store_tile)
from ._prefetch import LINE_BYTES, prefetch_at, prefetch_write_at
from ._workspace import Workspace

__all__ = ["applies", "block_channels", "task_chunks", "run", "prepare"]

# Images a run of segments reads, at most: half the core's L2.
_RUN_BYTES = _tuning.l2_bytes() // 2

# Tasks wanted per thread (as the panel GEMM's jobs): a thread's share
# of tasks ends close to the others'.
_TASKS_PER_THREAD = 4

# Whether a run of segments (images larger than half of L2) is asked for
# plane after plane before its tiles read it, and a segment's output
# lines for writing while the segment before computes; False for
# comparisons.  In ResNet-50's sequence at batch 1 (each call's input
# out of cache; Xeon VM, two runs of 9 and 11 rounds), the 256-channel
# 1x1 layers at 56^2 took 0.78-0.83 ms with both against 0.91-1.02
# without, 256 -> 128 1.36-1.39 against 1.49-1.50; seven single layers
# summed, the time without over the time with: caches cold (512 MB
# written between calls) 1.10, L2 cold (32 MB) 0.99, warm 0.98
# (docs/performance.md section AT).
_PREFETCH_RUNS = True
_PREFETCH_OUT = True
# Whether a task asks for the next task's block of filters (into L2,
# a line per tap of its tiles) while it computes, so that the next
# packing reads them from L2; False for comparisons.  Packing 2048 x 512
# filters took 0.18 ms of a 0.56 ms call (7^2, 2 threads).  In
# ResNet-50's sequence at batch 1 (Xeon VM model 207, three processes of
# 15 alternated passes), the time without over the time with: 512 ->
# 2048 @ 7^2 1.15-1.16, 2048 -> 512 @ 7^2 1.05-1.10, 1024 -> 2048 @
# 14^2/2 1.10-1.14, 256 -> 1024 @ 14^2 1.04-1.05, 1024 -> 256 @ 14^2
# 1.01-1.02; the 28^2 and 56^2 layers 0.97-1.03 (docs/performance.md
# section AW).
_PREFETCH_FILTERS = True


def block_channels(dtype):
    """Output channels of one tile (``NVEC`` vectors of lanes)."""
    return NVEC * lanes_of(np.dtype(dtype).itemsize)


def applies(spec, tuning):
    """Whether im2col runs ``spec`` (a :class:`kernels._dispatch.ConvSpec`)
    with this product: a 1x1 unpadded kernel, output channels per group a
    multiple of :func:`block_channels`, a reduction (input channels per
    group) of at least ``tuning.channel_lanes_min_depth`` (0: never), and
    at least ``COLS`` output positions per image; a strided layer's
    compact copy of its inputs within ``tuning.scratch_limit`` (larger
    ones are gathered chunk by chunk)."""
    depth = tuning.channel_lanes_min_depth
    k, cg, kh, kw = spec.w_shape
    ho, wo = spec.out_hw
    compact = (0 if spec.x_shape[2:] == (ho, wo) else
               spec.x_shape[0] * spec.x_shape[1] * ho * wo
               * np.dtype(spec.dtype).itemsize)
    return (depth > 0 and kh == kw == 1 and not any(spec.padding)
            and cg >= depth and (k // spec.groups)
            % block_channels(spec.dtype) == 0
            and ho * wo >= COLS and compact <= tuning.scratch_limit)


def task_chunks(groups, blocks, segments, threads):
    """Runs of segments per (group, block): one, or more until there are
    ``_TASKS_PER_THREAD`` tasks a thread (each run packs its block's
    filters again), at most one per segment."""
    wanted = -(-_TASKS_PER_THREAD * threads // (groups * blocks))
    return max(1, min(segments, wanted))


@njit(cache=True, parallel=True)
def _subsample(x, sh, sw, out):
    """``out[n, c] = x[n, c, ::sh, ::sw]``, flattened: a strided 1x1
    layer's inputs as a compact image."""
    n_img, c_total = x.shape[0], x.shape[1]
    ho, wo = out.shape[2], out.shape[3]
    for plane in prange(n_img * c_total):
        n = plane // c_total
        c = plane % c_total
        for i in range(ho):
            for j in range(wo):
                out[n, c, i, j] = x[n, c, i * sh, j * sw]


@njit(cache=True, inline="always")
def _segment(s, segs, hw):
    """(image, first position) of segment ``s`` of images of ``hw``
    positions, ``segs`` segments each: the last one of an image ends at
    its end."""
    return s // segs, min((s % segs) * COLS, hw - COLS)


@njit(cache=True, inline="always")
def _prefetch_planes(xf, p_lo, p_hi, plane0, planes, hw):
    """Ask for every cache line of pixels ``p_lo .. p_hi`` of ``planes``
    channel planes from ``plane0`` of ``xf`` (planes ``hw`` long), plane
    after plane, in address order."""
    line = LINE_BYTES // xf.itemsize
    for c in range(planes):
        base = (plane0 + c) * hw
        for q in range(p_lo, p_hi, line):
            prefetch_at(xf, base + q)
        prefetch_at(xf, base + p_hi - 1)


@njit(cache=True, inline="always")
def _task_coords(task, chunks_outer, groups, blocks, chunks):
    """(group, block, run of segments) of ``task``."""
    if chunks_outer:
        return task // blocks % groups, task % blocks, task // (groups * blocks)
    return task // (blocks * chunks), (task // chunks) % blocks, task % chunks


@njit(cache=True, inline="always")
def _next_filters(task, g, b, n_tasks, chunks_outer, groups, blocks, chunks,
                  kg, cg, block, line):
    """(first element, cache lines) of the filters the task after ``task``
    (of group ``g``, block ``b``) packs (its block's ``block`` rows of
    ``cg``, contiguous in the (G kg, cg) filters), or (0, 0) where it
    packs the same block or there is none."""
    if task + 1 >= n_tasks:
        return 0, 0
    g1, b1, _ = _task_coords(task + 1, chunks_outer, groups, blocks, chunks)
    if g1 == g and b1 == b:
        return 0, 0
    return (g1 * kg + b1 * block) * cg, -(-block * cg // line)


@njit(cache=True, parallel=True)
def _pointwise_kernel(xf, wf, n_img, cg, kg, groups, hw, block, chunks,
                      chunks_outer, prefetch_run, prefetch_out,
                      prefetch_filters, wp, yf):
    """``y[n, g kg + k, p] = sum_c w[g kg + k, c] x[n, g cg + c, p]`` over
    ``c < cg`` in increasing order from zero, for (N, G cg, hw) images
    ``xf`` and (G kg, cg) filters ``wf``, both flattened; ``wp`` holds
    ``cg x block`` elements per thread."""
    blocks = kg // block
    segs = -(-hw // COLS)
    segments = n_img * segs
    # Input channel r's pixels are r planes on; the prefetches read
    # X_PREFETCH_TAPS entries past the last.
    offs = np.empty(cg + X_PREFETCH_TAPS, np.int64)
    for r in range(cg):
        offs[r] = r * hw
    offs[cg:] = (cg - 1) * hw
    zeros = np.zeros(groups * kg, xf.dtype)
    line = LINE_BYTES // xf.itemsize
    n_tasks = groups * blocks * chunks
    for task in prange(n_tasks):
        g, b, chunk = _task_coords(task, chunks_outer, groups, blocks, chunks)
        # The next task (this thread's, as prange hands out runs of
        # tasks) packs the filters of its block: where that block is
        # another, its rows (contiguous in wf) are asked for a line per
        # tap while this task computes.
        far0, far_total = 0, 0
        if prefetch_filters:
            far0, far_total = _next_filters(task, g, b, n_tasks,
                                            chunks_outer, groups, blocks,
                                            chunks, kg, cg, block, line)
        s_lo = chunk * segments // chunks
        s_hi = (chunk + 1) * segments // chunks
        # The thread's own buffer, the same for all its tasks: written
        # and read again while in L2.  (A buffer per task, all of them as
        # large as the filters, left L2 between tasks: 2048 -> 512 @ 7^2
        # ran as slowly as the panel GEMM.)
        w0 = get_thread_id() * cg * block
        k0 = g * kg + b * block
        if prefetch_run and b == 0:
            # The run comes from memory.  The tile reads a line of each of
            # cg planes in turn, more streams than the hardware prefetcher
            # follows; asked for plane after plane, in address order, the
            # lines come at its pace (see _PREFETCH_RUNS).
            for n in range(s_lo // segs, (s_hi - 1) // segs + 1):
                _, p_lo = _segment(max(s_lo, n * segs), segs, hw)
                _, p_hi = _segment(min(s_hi, (n + 1) * segs) - 1, segs, hw)
                _prefetch_planes(xf, p_lo, p_hi + COLS,
                                 (n * groups + g) * cg, cg, hw)
        pack_block(wf, cg, g * blocks + b, block, wp, w0)
        acc = channel_tile_buffer(xf)
        for s in range(s_lo, s_hi):
            n, p0 = _segment(s, segs, hw)
            if prefetch_out and s + 1 < s_hi:
                # The next segment's outputs, to be written (_PREFETCH_OUT)
                n1, p1 = _segment(s + 1, segs, hw)
                o1 = (n1 * groups * kg + k0) * hw + p1 + COLS - 1
                for q in range(block):
                    prefetch_write_at(yf, o1 + q * hw)
            # this segment's share of the next block's lines
            f_lo = (s - s_lo) * far_total // (s_hi - s_lo)
            f_hi = (s + 1 - s_lo) * far_total // (s_hi - s_lo)
            channel_tile(xf, (n * groups * cg + g * cg) * hw + p0, offs, cg,
                         wp, w0, zeros, k0, acc, wf, far0 + f_lo * line,
                         min(f_hi - f_lo, cg))
            store_tile(acc, yf, (n * groups * kg + k0) * hw + p0, hw)


# Packed filters and compact images: scratch reused across calls (per
# Python thread).
_workspace = Workspace()


def run(spec, x, w):
    """The product of the 1x1 layer ``spec`` (:func:`applies`) for
    C-contiguous ``x`` and ``w``: a new (N, K, Ho, Wo) array, no bias."""
    return prepare(spec)(x, w)


def prepare(spec):
    """:func:`run` for the problem ``spec`` as a callable ``(x, w) -> y``,
    its tasks' shapes worked out once (the prefetch switches are read on
    every call)."""
    n_img, c_total = spec.x_shape[:2]
    k = spec.w_shape[0]
    groups = int(spec.groups)
    ho, wo = spec.out_hw
    sh, sw = spec.stride
    dtype = np.dtype(spec.dtype)
    compact = None
    if (sh, sw) != (1, 1) or tuple(spec.x_shape[2:]) != (ho, wo):
        compact = (n_img, c_total, ho, wo)
    cg, kg = c_total // groups, k // groups
    block = block_channels(dtype)
    blocks = kg // block
    segments = n_img * -(-(ho * wo) // COLS)
    chunks = task_chunks(groups, blocks, segments,
                         _tuning.block_shape_threads())
    # Where a group's images exceed half of L2, runs of segments small
    # enough for it are the tasks' slowest index: a thread's run stays in
    # L2 while it passes every block of filters.
    runs_in_l2 = -(-n_img * ho * wo * cg * dtype.itemsize // _RUN_BYTES)
    chunks_outer = runs_in_l2 > 1
    if chunks_outer:
        chunks = max(chunks, min(segments, runs_in_l2))
    wp_shape = (config.NUMBA_NUM_THREADS * cg * block,)
    out_shape = (n_img, k, ho, wo)
    hw = ho * wo

    def product(x, w):
        if compact is not None:
            x_c = _workspace.get("compact", compact, dtype)
            _subsample(x, sh, sw, x_c)
            x = x_c
        wp = _workspace.get("wp", wp_shape, dtype)
        y = np.empty(out_shape, dtype)
        _pointwise_kernel(x.reshape(x.size), w.reshape(w.size), n_img, cg,
                          kg, groups, hw, block, chunks, chunks_outer,
                          chunks_outer and _PREFETCH_RUNS, _PREFETCH_OUT,
                          _PREFETCH_FILTERS, wp, y.reshape(y.size))
        return y

    return product
