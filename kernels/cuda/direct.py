"""Direct convolution on CUDA: shared-memory tiles, register-blocked threads.

``KERNELS[("conv2d", "direct")]`` is its entry in the backend contract of
:mod:`kernels._dispatch`; like the CPU direct kernel it supports every
configuration: any stride, dilation, groups, asymmetric zero padding
(``spec.padding = (top, bottom, left, right)``), bias, float32/float64, and
1-D as ``H = kH = 1``.  One kernel, :func:`direct_kernel`, does it all.

How it works
------------
**A block** (``DirectTuning.threads`` = 256 threads) owns one image ``n``,
one group ``g``, a block of ``KB = thread_channels * TK`` output channels
of that group and a ``TH x TW`` tile of output pixels (at most ``P =
thread_pixels * threads / TK`` of them).  Thread ``t`` is channel thread
``t // (threads/TK)`` and pixel thread ``t % (threads/TK)``; it accumulates
a 4 x 4 register block: channels ``kt + q*TK`` by pixel slots ``pt +
r*threads/TK`` (strided, so that consecutive threads read consecutive
shared-memory columns and write consecutive output columns, and a warp
reads one weight: a broadcast).

**Chunks.**  The block walks the reduction ``(c, i, j)`` (group input
channel, kernel row, kernel column) in chunks.  For each chunk it
cooperatively stages into shared memory (1) the input window the tile
needs, zero where it falls into the padding, and (2) the chunk's weights
of its KB channels; barrier; every thread multiply-adds its register
block over the chunk's taps, reading both operands from shared memory;
barrier.  The chunk's taps are walked through a small table of window
offsets (also in shared memory, ended by -1), so the inner loop is one
loop of 4 weight loads, 4 input loads and 16 multiply-adds per tap.  A
chunk is, in order of preference (:func:`plan`):

* ``CB`` whole channels (``IC = kH``, ``JC = kW``): the window of
  ``((TH-1)*sh + (kH-1)*dh + 1) x ((TW-1)*sw + (kW-1)*dw + 1)`` elements
  per channel, the usual case (a 3x3 layer stages 12 (float32) or 6
  (float64) channels of an 18x18 window at a time);
* when one channel's window (or its KB x kH x kW weights) does not fit:
  one channel, ``IC < kH`` kernel rows (the window rows those taps need);
* when one kernel row does not fit either: one channel, one kernel row,
  ``JC < kW`` kernel columns.

These *streamed* variants are the same code with other chunk bounds, so
large kernels and dilations cost more barriers, never a failure.  The
tile shape is chosen per problem (fewest tiles, then smallest window)
among tiles whose one-tap chunk fits, so huge strides shrink the tile.
The channel threads ``TK`` (a power of two) grow from 1 to
``channel_threads`` while the group has more channels than the block, and
on to ``max_channel_threads`` when the output plane is small enough that
the smaller pixel tile still covers it.

Nothing is fused beyond this: the input is read in place (no packed copy,
unlike the CPU kernel: shared memory is the packing), the bias starts the
accumulators, and the result is written once.

Registers: block-level integers are kept in 32 bits and arrays are
indexed unsigned (no wraparound code); only offsets into x, w and y are
64-bit.  ptxas for sm_90 at 256 threads: float32 64 registers, float64
80, no spills (occupancy 50 % and 37.5 %).

Launch: a 1-D grid of ``N * G * tiles * ceil((K/G) / KB)`` blocks, the
channel block fastest (neighbouring blocks read the same input window
from L2); static shared memory ``input_shared_bytes + weight_shared_bytes``
(24 KiB) plus the tap table (2 KiB float32, 1 KiB float64), no dynamic
shared memory.

Determinism and accuracy
------------------------
Every output is written by one thread, which computes ``bias + sum w*x``
in the input dtype in the fixed order ``(c, i, j)`` (the chunking never
reorders: ``IC < kH`` implies one channel per chunk, ``JC < kW`` one kernel
row), exactly as the CPU direct kernel; no atomics.  Results therefore
do not depend on the launch, and the bound of ``kernels.accuracy``
(``c = 128`` for "direct") holds.  No fast-math: NaN and Inf propagate as
in IEEE arithmetic to exactly the outputs whose window holds them, and
padding zeros are multiplied like data (``0 * inf = nan`` for an infinite
weight), as in the CPU kernel and the float64 reference.
"""

from __future__ import annotations

import collections
import functools
import math

import numpy as np
from numba import int32, int64, uint32, uint64

from .._dispatch import Kernel
from ._runtime import ReportEntry, cuda, device_entry, numba_type
from ._tuning import DIRECT

__all__ = ["direct_kernel", "plan", "Plan", "run", "run_planned", "KERNELS",
           "REPORT"]

_THREADS = DIRECT.threads
_RK = DIRECT.thread_channels       # channels per thread
_RP = DIRECT.thread_pixels         # pixels per thread

# Geometry tuple passed to the kernel (all int32), in this order.
_GEOM = ("has_bias", "c_total", "h", "wd", "k_total", "cg", "kh", "kw",
         "sh", "sw", "dh", "dw", "pad_top", "pad_left", "ho", "wo", "th",
         "tw", "tiles_w", "n_tiles", "kblocks", "groups", "tk", "cb", "ic",
         "jc", "wh", "ww")


def _shared_elements(dtype):
    """(input, weight) shared-memory elements for ``dtype``."""
    size = np.dtype(dtype).itemsize
    return DIRECT.input_shared_bytes // size, DIRECT.weight_shared_bytes // size


# --------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------
# Indices are non-negative: arrays are indexed with _at (unsigned, so no
# negative-index wraparound code); block-level quantities are 32-bit (_i,
# _div: numba would widen them to 64 bits, two registers each), except the
# offsets into x, w and y, which may pass 2**31.

@cuda.jit(device=True, inline="always")
def _at(i):
    return uint64(i)


@cuda.jit(device=True, inline="always")
def _i(v):
    return int32(v)


@cuda.jit(device=True, inline="always")
def _div(a, b):
    return int32(uint32(a) // uint32(b))


@functools.lru_cache(maxsize=None)
def direct_kernel(dtype):
    """The direct-convolution kernel for ``dtype`` (cached).

    ``direct(x, w, bias, y, geom)`` on flat C-order arrays (``bias`` is
    not read when ``geom``'s has_bias is 0); ``geom`` as :data:`_GEOM`
    (int32).
    """
    nbtype = numba_type(dtype)
    xs_size, ws_size = _shared_elements(dtype)
    offs_size = ws_size // _RK + 1       # taps of a chunk, and the end mark

    @cuda.jit
    def direct(x, w, bias, y, geom):
        (has_bias, c_total, h, wd, k_total, cg, kh, kw, sh, sw, dh, dw,
         pad_top, pad_left, ho, wo, th, tw, tiles_w, n_tiles, kblocks,
         groups, tk, cb, ic, jc, wh, ww) = geom
        # One line per shared array: the simulator aliases two on a line.
        xs = cuda.shared.array(xs_size, nbtype)
        ws = cuda.shared.array(ws_size, nbtype)
        offs = cuda.shared.array(offs_size, int32)
        acc = cuda.local.array((_RK, _RP), nbtype)
        w_reg = cuda.local.array(_RK, nbtype)
        x_reg = cuda.local.array(_RP, nbtype)
        slot = cuda.local.array(_RP, int32)

        kg = _div(k_total, groups)
        tid = _i(cuda.threadIdx.x)
        tpx = _div(_THREADS, tk)
        kt = _div(tid, tpx)
        pt = _i(tid - kt * tpx)
        kb = _i(_RK * tk)

        blk = _i(cuda.blockIdx.x)
        rest = _div(blk, kblocks)
        kblk = _i(blk - rest * kblocks)
        rest2 = _div(rest, n_tiles)
        tile = _i(rest - rest2 * n_tiles)
        n = _div(rest2, groups)
        g = _i(rest2 - n * groups)
        k0 = _i(g * kg + kblk * kb)
        k_end = _i((g + 1) * kg)
        tile_r = _div(tile, tiles_w)
        oh0 = _i(tile_r * th)
        ow0 = _i((tile - tile_r * tiles_w) * tw)
        win = _i(wh * ww)

        # Window offset of each pixel slot (slots past the tile read the
        # window's corner; their sums are dropped).
        for r in range(_RP):
            p = _i(pt + r * tpx)
            ph = _div(p, tw)
            if ph < th:
                slot[r] = _i(ph * sh * ww + (p - ph * tw) * sw)
            else:
                slot[r] = 0
        for q in range(_RK):
            k = k0 + kt + q * tk
            start = nbtype(0)
            if has_bias != 0 and k < k_end:
                start = bias[_at(k)]
            for r in range(_RP):
                acc[q, r] = start

        # The chunks (c0, i0, j0), in (c, i, j) order.
        n_i = _div(kh + ic - 1, ic)
        n_j = _div(kw + jc - 1, jc)
        n_chunks = _i(_div(cg + cb - 1, cb) * n_i * n_j)
        for chunk in range(n_chunks):
            ci = _div(chunk, n_j)
            j0 = _i((chunk - ci * n_j) * jc)
            c0 = _div(ci, n_i)
            i0 = _i((ci - c0 * n_i) * ic)
            c0 = _i(c0 * cb)
            cbn = min(cb, _i(cg - c0))
            icn = min(ic, _i(kh - i0))
            jcn = min(jc, _i(kw - j0))
            # Stage the input window of the chunk, zero in the padding.
            r_base = _i(oh0 * sh - pad_top + i0 * dh)
            c_base = _i(ow0 * sw - pad_left + j0 * dw)
            x_chunk = (int64(n) * c_total + g * cg + c0) * h * wd
            for e in range(tid, _i(cbn * win), _THREADS):
                row = _div(e, ww)
                c = _div(row, wh)
                ih = _i(r_base + row - c * wh)
                iw = _i(c_base + e - row * ww)
                v = nbtype(0)
                if ih >= 0 and ih < h and iw >= 0 and iw < wd:
                    v = x[_at(x_chunk + (int64(c) * h + ih) * wd + iw)]
                xs[_at(e)] = v
            # Stage the chunk's weights as ws[tap * kb + channel]; the
            # chunk's taps (c, i, j) are rows of jcn in w.
            taps = _i(cbn * icn * jcn)
            w_chunk = (int64(k0) * cg + c0) * kh * kw + i0 * kw + j0
            for e in range(tid, _i(kb * taps), _THREADS):
                kk = _div(e, taps)
                t = _i(e - kk * taps)
                row = _div(t, jcn)
                v = nbtype(0)
                if k0 + kk < k_end:
                    v = w[_at(w_chunk + int64(kk) * cg * kh * kw
                              + row * kw + t - row * jcn)]
                ws[_at(t * kb + kk)] = v
            # The window offset of each tap, and -1 after the last.
            for t in range(tid, taps + 1, _THREADS):
                off = -1
                if t < taps:
                    row = _div(t, jcn)
                    c = _div(row, icn)
                    off = (c * win + (row - c * icn) * dh * ww
                           + (t - row * jcn) * dw)
                offs[_at(t)] = off
            cuda.syncthreads()
            # Register block over the chunk's taps, in (c, i, j) order.
            # The loop ends at the -1: a trip count the compiler cannot
            # see, so it does not unroll the loop (which would double the
            # live operand registers).
            wt = kt
            t = 0
            off = offs[0]
            while off >= 0:
                for q in range(_RK):
                    w_reg[q] = ws[_at(wt + q * tk)]
                for r in range(_RP):
                    x_reg[r] = xs[_at(off + slot[r])]
                for q in range(_RK):
                    for r in range(_RP):
                        acc[q, r] += w_reg[q] * x_reg[r]
                wt = _i(wt + kb)
                t = _i(t + 1)
                off = offs[_at(t)]
            cuda.syncthreads()

        for q in range(_RK):
            k = _i(k0 + kt + q * tk)
            if k < k_end:
                for r in range(_RP):
                    p = _i(pt + r * tpx)
                    ph = _div(p, tw)
                    oh = _i(oh0 + ph)
                    ow = _i(ow0 + p - ph * tw)
                    if ph < th and oh < ho and ow < wo:
                        y[_at(((int64(n) * k_total + k) * ho + oh) * wo
                              + ow)] = acc[q, r]

    return direct


def _signature(dtype):
    """The argument types the driver passes to :func:`direct_kernel`."""
    from numba import types
    t = numba_type(dtype)
    flat = t[::1]
    return (flat, flat, flat, flat, types.UniTuple(types.int32, len(_GEOM)))


# --------------------------------------------------------------------------
# Launch planning and driver
# --------------------------------------------------------------------------

Plan = collections.namedtuple("Plan", "tk th tw cb ic jc")
Plan.__doc__ = """The launch of one problem: ``(tk, th, tw, cb, ic, jc)``.

``tk`` channel threads (``KB = thread_channels * tk`` channels per block),
a ``th x tw`` output tile, and reduction chunks of ``cb`` channels x ``ic``
kernel rows x ``jc`` kernel columns (``ic < kh`` only with ``cb = 1``,
``jc < kw`` only with ``ic = 1``).
"""


def _channel_threads(kg, npix):
    """TK: channel threads of a block (a power of two)."""
    tk = 1
    while tk < DIRECT.max_channel_threads and tk * _RK < kg:
        pixels_after = _RP * (_THREADS // (2 * tk))
        if tk >= DIRECT.channel_threads and pixels_after < npix:
            break
        tk *= 2
    return tk


def _tile(ho, wo, sh, sw, n_pix, x_budget, rows_extra, cols_extra):
    """(th, tw): fewest tiles of at most ``n_pix`` pixels, then the
    smallest window; only tiles whose one-tap chunk fits ``x_budget``."""
    widths = {min(wo, n_pix)}
    t = 1
    while t <= min(wo, n_pix):
        widths.add(t)
        t *= 2
    best = None
    for tw in sorted(widths):
        rows_fit = x_budget // ((tw - 1) * sw + 1)   # rows of a one-tap window
        if rows_fit < 1:
            continue
        th = min(ho, n_pix // tw, (rows_fit - 1) // sh + 1)
        tiles = math.ceil(ho / th) * math.ceil(wo / tw)
        window = ((th - 1) * sh + rows_extra) * ((tw - 1) * sw + cols_extra)
        key = (tiles, window, -tw)
        if best is None or key < best[0]:
            best = (key, th, tw)
    return best[1], best[2]


def plan(spec, x_budget=None, w_budget=None):
    """The :class:`Plan` of ``spec``; the budgets (shared-memory elements
    for the input window and the weights) default to the kernel's and may
    only be made smaller (the tests use that to reach every chunking)."""
    xs_size, ws_size = _shared_elements(spec.dtype)
    x_budget = min(x_budget or xs_size, xs_size)
    w_budget = min(w_budget or ws_size, ws_size)
    k, cg, kh, kw = spec.w_shape
    sh, sw = spec.stride
    dh, dw = spec.dilation
    ho, wo = spec.out_hw
    tk = _channel_threads(k // spec.groups, ho * wo)
    kb = _RK * tk
    n_pix = _RP * (_THREADS // tk)
    rows_k = (kh - 1) * dh + 1
    cols_k = (kw - 1) * dw + 1
    th, tw = _tile(ho, wo, sh, sw, n_pix, x_budget, rows_k, cols_k)
    rows_tile = (th - 1) * sh
    cols_tile = (tw - 1) * sw
    win = (rows_tile + rows_k) * (cols_tile + cols_k)
    if win <= x_budget and kb * kh * kw <= w_budget:
        cb = min(cg, x_budget // win, w_budget // (kb * kh * kw))
        return Plan(tk, th, tw, cb, kh, kw)
    # One channel, as many kernel rows as fit.
    rows_fit = x_budget // (cols_tile + cols_k)
    ic = 0
    if rows_fit > rows_tile:
        ic = min(kh, (rows_fit - rows_tile - 1) // dh + 1, w_budget // (kb * kw))
    if ic >= 1:
        return Plan(tk, th, tw, 1, ic, kw)
    # One kernel row, as many kernel columns as fit (one always does).
    cols_fit = x_budget // (rows_tile + 1)
    jc = min(kw, (cols_fit - cols_tile - 1) // dw + 1, w_budget // kb)
    return Plan(tk, th, tw, 1, 1, jc)


def _launch(spec, x, w, bias, plan_, stream=0):
    """Launch the kernel for ``spec`` with ``plan_`` on device arrays."""
    n, c_total, h, wd = spec.x_shape
    k, cg, kh, kw = spec.w_shape
    ho, wo = spec.out_hw
    groups = spec.groups
    tk, th, tw, cb, ic, jc = plan_
    kb = _RK * tk
    tiles_w = math.ceil(wo / tw)
    n_tiles = math.ceil(ho / th) * tiles_w
    kblocks = math.ceil((k // groups) / kb)
    wh = (th - 1) * spec.stride[0] + (ic - 1) * spec.dilation[0] + 1
    ww = (tw - 1) * spec.stride[1] + (jc - 1) * spec.dilation[1] + 1
    geom = (int(bias is not None), c_total, h, wd, k, cg, kh, kw,
            *spec.stride, *spec.dilation, spec.padding[0], spec.padding[2],
            ho, wo, th, tw, tiles_w, n_tiles, kblocks, groups, tk, cb, ic, jc,
            wh, ww)
    y = cuda.device_array(spec.out_shape, dtype=x.dtype, stream=stream)
    flat_w = w.reshape(w.size)
    # Without a bias the kernel never reads it: pass w.
    b = bias if bias is not None else flat_w
    blocks = n * groups * n_tiles * kblocks
    direct_kernel(np.dtype(x.dtype))[blocks, _THREADS, stream](
        x.reshape(x.size), flat_w, b, y.reshape(y.size),
        tuple(np.int32(v) for v in geom))
    return y


def _run(spec, x, w, bias, stream=0):
    """The contract's entry on device arrays: ``run(spec, x, w, bias)``."""
    return _launch(spec, x, w, bias, plan(spec), stream)


run = device_entry(_run)
# The same with an explicit :class:`Plan` (``run_planned(spec, x, w, bias,
# plan)``): the tests reach every chunking with it on tiny problems.
run_planned = device_entry(_launch)

KERNELS = {("conv2d", "direct"): Kernel(run)}

REPORT = [ReportEntry("direct", "direct", direct_kernel, _signature, _THREADS,
                      note="shared-memory tiles, 4x4 register blocks")]
