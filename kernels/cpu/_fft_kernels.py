"""Numba kernels of the CPU FFT convolution.

Padding and polyphase split of the input (:func:`_pad_phases`), the
overlap-save scatter of the inverse transforms' valid parts into the
output with the bias (:func:`scatter_tiles`), and the frequency-lane
contraction (:func:`_contract_lanes`, :func:`_multiply_lanes`).  The
``prange`` kernels serve the staged path; ``*_serial`` are
single-threaded, GIL-releasing compilations of the same code for the task
path's Python threads.  Both paths pad and contract through
:func:`fill_window` and :func:`lane_product`.
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

from .._fft_geometry import untouched_lists, zero_untouched_window

# Rows handled by one parallel task: enough to amortise a task's index
# arithmetic, few enough that one image still gives every thread work.
_ROWS_PER_TASK = 32


@njit(parallel=True, cache=True)
def _pad_phases(x, out, s0, s1, lo0, lo1, res0, res1):
    """out[n, (c, p0, p1), u, v] = x[n, c, u s0 + r0 - lo0, v s1 + r1 - lo1].

    Zero where the index falls outside x (the padding).
    """
    nb, cp, hq, wq = out.shape
    h, w = x.shape[2], x.shape[3]
    p0n, p1n = res0.size, res1.size
    blocks = (hq + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for task in prange(nb * cp * blocks):
        blk = task % blocks
        ch = (task // blocks) % cp
        n = task // (blocks * cp)
        p1 = ch % p1n
        p0 = (ch // p1n) % p0n
        c = ch // (p1n * p0n)
        # Columns: valid v satisfy 0 <= base + v s1 <= w - 1.
        base = res1[p1] - lo1
        v_lo = 0
        if base < 0:
            v_lo = min(wq, (-base + s1 - 1) // s1)
        v_hi = wq
        if base + (wq - 1) * s1 > w - 1:
            v_hi = (w - 1 - base) // s1 + 1 if w - 1 - base >= 0 else 0
        v_hi = max(v_hi, v_lo)
        for u in range(blk * _ROWS_PER_TASK, min(hq, (blk + 1) * _ROWS_PER_TASK)):
            src_row = u * s0 + res0[p0] - lo0
            # Loops over 1-D views indexed by the loop counter: slice
            # assignment and 4-D indexing with computed offsets measured
            # several times slower.
            dst = out[n, ch, u]
            if src_row < 0 or src_row >= h:
                for v in range(wq):
                    dst[v] = 0
                continue
            for v in range(v_lo):
                dst[v] = 0
            part = dst[v_lo:v_hi]
            if s1 == 1:
                src = x[n, c, src_row, base + v_lo:base + v_hi]
            else:
                src = x[n, c, src_row, base + v_lo * s1::s1]
            for v in range(v_hi - v_lo):
                part[v] = src[v]
            tail = dst[v_hi:]
            for v in range(wq - v_hi):
                tail[v] = 0


@njit(parallel=True, cache=True)
def scatter_tiles(z, y, bias, m0, n0, i0, j0, rows, cols, b0, b1):
    """y[n0 + a, k, (i0 + i) b0 + u, (j0 + j) b1 + v] = z[mm, k, u, v] + bias[k].

    Tile ``m0 + mm`` is (a, i, j) in C order over (images, rows, cols):
    the staged path passes its chunk's first tile ``m0`` in the whole
    batch's (N, tiles_rows, tiles_cols) frame at the origin, the task path
    a block's corner ``(n0, i0, j0)`` and shape with ``m0 = 0``.  Only the
    valid part (inside y) is written.  One parallel task writes a block of
    rows of one tile in every channel.
    """
    nm, k_out = z.shape[0], z.shape[1]
    ho, wo = y.shape[2], y.shape[3]
    blocks = (b0 + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    for task in prange(nm * blocks):
        blk = task % blocks
        mm = task // blocks
        m = m0 + mm
        n = n0 + m // (rows * cols)
        oy = (i0 + (m // cols) % rows) * b0
        ox = (j0 + m % cols) * b1
        width = min(b1, wo - ox)
        u_begin = blk * _ROWS_PER_TASK
        u_end = min(b0, u_begin + _ROWS_PER_TASK, ho - oy)
        for k in range(k_out):
            bk = bias[k]
            for u in range(u_begin, u_end):
                # 1-D views indexed by the loop counter (see _pad_phases).
                src = z[mm, k, u]
                dst = y[n, k, oy + u, ox:ox + width]
                for v in range(width):
                    dst[v] = src[v] + bk


# Frequencies per task of the frequency-lane loops: the accumulator row
# (2 KiB in complex64) stays in L1 while the channels stream past.
_LANE_BLOCK = 256


@njit(parallel=True, cache=True)
def _contract_lanes(x, w, y, groups, fb):
    """y[m, k, f] = sum_c x[m, g Cg + c, f] w[c, k, f], g = k // Kg.

    Arrays are complex viewed as float pairs, frequencies last:
    x (M, C', 2F), w (Cg', K, 2F), y (M, K, 2F).  One task per (m, k,
    block of fb frequencies), each writing its own part of y; the inner
    loop runs along the frequencies, so it vectorises.
    """
    nm = x.shape[0]
    nf = x.shape[2] // 2
    cgp, k_out = w.shape[0], w.shape[1]
    kg = k_out // groups
    nfb = (nf + fb - 1) // fb
    for task in prange(nm * k_out * nfb):
        b = task % nfb
        k = (task // nfb) % k_out
        m = task // (nfb * k_out)
        g = k // kg
        lo = 2 * b * fb
        hi = 2 * min(nf, (b + 1) * fb)
        n = (hi - lo) // 2
        acc = y[m, k, lo:hi]
        for i in range(2 * n):
            acc[i] = 0
        for c in range(cgp):
            xr = x[m, g * cgp + c, lo:hi]
            wr = w[c, k, lo:hi]
            for i in range(n):
                a = xr[2 * i]
                bb = xr[2 * i + 1]
                p = wr[2 * i]
                q = wr[2 * i + 1]
                acc[2 * i] += a * p - bb * q
                acc[2 * i + 1] += a * q + bb * p


@njit(parallel=True, cache=True)
def _multiply_lanes(x, w, y, fb):
    """y[m, g, f] = x[m, g, f] w[0, g, f]: one channel per group in and out.

    Complex as float pairs: x, y (M, G, 2F), w (1, G, 2F).  The one-term
    case of :func:`_contract_lanes` without its accumulator pass: a merged
    kernel (first channel written, the others added, in one loop or
    through an inlined helper) ran the single-channel product 4-15 %
    slower (float32 and float64, 1 x 576^2 and 4 x 320^2 tiles, serial).
    """
    nm, ng = x.shape[0], x.shape[1]
    nf = x.shape[2] // 2
    nfb = (nf + fb - 1) // fb
    for task in prange(nm * ng * nfb):
        b = task % nfb
        g = (task // nfb) % ng
        m = task // (nfb * ng)
        lo = 2 * b * fb
        hi = 2 * min(nf, (b + 1) * fb)
        n = (hi - lo) // 2
        xr = x[m, g, lo:hi]
        wr = w[0, g, lo:hi]
        yr = y[m, g, lo:hi]
        for i in range(n):
            a = xr[2 * i]
            bb = xr[2 * i + 1]
            p = wr[2 * i]
            q = wr[2 * i + 1]
            yr[2 * i] = a * p - bb * q
            yr[2 * i + 1] = a * q + bb * p


def _serial(kernel, name):
    """A single-threaded, GIL-releasing compilation of a prange kernel.

    Used by the task-parallel path, whose threads are Python threads: a
    parallel kernel there would start an OpenMP team per task.  The copy
    gets its own name so that Numba's on-disk caches of the two versions
    do not collide.
    """
    fn = kernel.py_func
    copy = types.FunctionType(fn.__code__, fn.__globals__, name,
                              fn.__defaults__, fn.__closure__)
    copy.__qualname__ = name
    copy.__doc__ = fn.__doc__
    return njit(nogil=True, cache=True)(copy)


_pad_phases_serial = _serial(_pad_phases, "_pad_phases_serial")
scatter_tiles_serial = _serial(scatter_tiles, "scatter_tiles_serial")
_contract_lanes_serial = _serial(_contract_lanes, "_contract_lanes_serial")
_multiply_lanes_serial = _serial(_multiply_lanes, "_multiply_lanes_serial")


# --------------------------------------------------------------------------
# Callers' entry points (staged path: parallel; task path: serial)
# --------------------------------------------------------------------------

def phase_info(geom):
    """What :func:`fill_window` needs besides the geometry: the kept
    residues along each axis (int64 arrays) and the inputs no output reads
    (:func:`kernels._fft_geometry.untouched_lists`)."""
    return (np.array(geom.rows.residues, np.int64),
            np.array(geom.cols.residues, np.int64), untouched_lists(geom))


def fill_window(x, window, geom, r0, c0, info, serial=False):
    """The padded, phase-split input window starting at padded (r0, c0).

    ``window[n, (c, p0, p1), u, v]`` is the padded phase signal at ``(r0 +
    u, c0 + v)`` of image ``n`` of ``x`` (:func:`_pad_phases`), zero where
    no output reads it; ``info`` is :func:`phase_info`.
    """
    rows, cols = geom.rows, geom.cols
    res0, res1, untouched = info
    pad = _pad_phases_serial if serial else _pad_phases
    pad(x, window, rows.stride, cols.stride, rows.pad_lo - r0 * rows.stride,
        cols.pad_lo - c0 * cols.stride, res0, res1)
    if untouched:
        zero_untouched_window(window, geom, r0, c0, untouched)


def lane_product(x, w, y, groups, serial=False):
    """Frequency-lane contraction of (M, C', 2F), (Cg', K, 2F) into (M, K, 2F).

    :func:`_multiply_lanes` when one channel per group meets one, else
    :func:`_contract_lanes`.
    """
    if w.shape[0] == 1 and w.shape[1] == groups:
        multiply = _multiply_lanes_serial if serial else _multiply_lanes
        multiply(x, w, y, _LANE_BLOCK)
    else:
        contract = _contract_lanes_serial if serial else _contract_lanes
        contract(x, w, y, groups, _LANE_BLOCK)

