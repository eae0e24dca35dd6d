"""Blocks of Winograd tiles for the CPU kernels: their shapes, the block
of each parallel job, and the unit-stride accumulation both transforms
are made of.  Block shapes depend on the problem, the tunables and
``_tuning.block_shape_threads()``, never on the current thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["block_shape", "output_step", "block_of_job", "job_count", "add_scaled",
           "input_block_passes", "output_block_passes"]


def block_shape(tiles_h, tiles_w, n_img, bytes_per_tile, budget, min_jobs, step=1):
    """(rows, cols) of a block of tiles: as many tiles as fit ``budget``
    bytes, while leaving at least ``min_jobs`` blocks when possible.
    ``cols`` is a multiple of ``step`` unless it spans the whole row."""
    fit = max(1, budget // max(1, bytes_per_tile))
    if fit >= tiles_w:
        rows = max(1, min(tiles_h, fit // tiles_w))
        while rows > 1 and n_img * -(-tiles_h // rows) < min_jobs:
            rows -= 1
        if rows > 1 or n_img * tiles_h >= min_jobs:
            return rows, tiles_w
        fit = tiles_w
    cols = min(tiles_w, fit)
    while cols > step and n_img * tiles_h * -(-tiles_w // cols) < min_jobs:
        cols = max(step, cols // 2)
    if cols < tiles_w and cols > step:
        cols -= cols % step
    return 1, cols


def output_step(m_w):
    """Tiles spanning a multiple of 16 output columns (one 64-byte line of
    float32), so that blocks of one row never share a cache line of y."""
    return 16 // int(np.gcd(16, m_w))


@njit(cache=True)
def block_of_job(job, tiles_h, tiles_w, rows, cols):
    """(n, ti0, nr, tj0, ns): the block of tiles of one job.

    The tiles of every image are cut into blocks of ``rows`` tile rows by
    ``cols`` tiles (``rows > 1`` only when ``cols == tiles_w``, so the
    tiles of a block are consecutive in the tile order (n, ti, tj)).
    """
    row_blocks = (tiles_h + rows - 1) // rows
    col_blocks = (tiles_w + cols - 1) // cols
    n = job // (row_blocks * col_blocks)
    ti0 = ((job // col_blocks) % row_blocks) * rows
    tj0 = (job % col_blocks) * cols
    return n, ti0, min(rows, tiles_h - ti0), tj0, min(cols, tiles_w - tj0)


@njit(cache=True)
def job_count(n_img, tiles_h, tiles_w, rows, cols):
    """Jobs over a batch in blocks of ``rows`` x ``cols`` tiles (see
    :func:`block_of_job`)."""
    return n_img * ((tiles_h + rows - 1) // rows) * ((tiles_w + cols - 1) // cols)


@njit(cache=True)
def add_scaled(out, coef, src):
    """``out += coef * src`` over the elements of 1-D ``out`` (``src``
    contiguous, of any shape with as many elements); nothing when ``coef``
    is 0 (most entries of the transforms).  The passes of both transforms
    are sums of such unit-stride vector loops over (tile, channel)."""
    if coef != 0:
        flat = src.reshape(out.shape[0])
        for e in range(out.shape[0]):
            out[e] += coef * flat[e]


@njit(cache=True)
def input_block_passes(xp, n, ti0, nr, tj0, ns, bt_h, bt_w, m_h, m_w, half, v, t0,
                 row_stride):
    """Input transform of a block of nr x ns tiles of image n, as passes
    of unit-stride vector loops (any tile).

    Writes ``v[p, t0 + r * row_stride + s, :]`` for tile (ti0 + r, tj0 + s).
    ``xp`` is the padded input, channels last; ``half`` is scratch of at
    least (alpha_h, alpha_w, ns * C).  The ns tiles of a tile row are
    consecutive in v, so both passes are unit-stride loops of length
    ns * C over (tile, channel), and the second writes v directly.
    """
    nc = xp.shape[3]
    a_h = bt_h.shape[0]
    a_w = bt_w.shape[0]
    length = ns * nc
    for r in range(nr):
        ti = ti0 + r
        # half[i, b, s*C + c] = sum_l B_w^T[b, l] d_s[i, l, c]   (along rows)
        for i in range(a_h):
            xrow = xp[n, ti * m_h + i]
            for b in range(a_w):
                acc = half[i, b, :length]
                acc[:] = 0
                for l in range(a_w):
                    coef = bt_w[b, l]
                    if coef != 0:
                        for s in range(ns):
                            src = xrow[(tj0 + s) * m_w + l]
                            for c in range(nc):
                                acc[s * nc + c] += coef * src[c]
        # v[a, b] = sum_k B_h^T[a, k] half[k, b]   (along columns)
        first = t0 + r * row_stride
        for a in range(a_h):
            for b in range(a_w):
                out = v[a * a_w + b, first:first + ns].reshape(length)
                out[:] = 0
                for k in range(a_h):
                    add_scaled(out, bt_h[a, k], half[k, b, :length])


@njit(cache=True)
def output_block_passes(mm, t0, row_stride, n, ti0, nr, tj0, ns, at_h, at_w, bias,
                  k0, half, line, y):
    """Output transform of a block of nr x ns tiles into y[n, k0 + k], as
    passes of unit-stride vector loops (any tile).

    Reads ``mm[p, t0 + r * row_stride + s, :]`` for tile (ti0 + r, tj0 + s).
    Both passes are vector loops over (tile, channel); each output row is
    then transposed in the small (L1) buffer ``line`` (K, ns * m_w), so
    that y (NCHW) is written in unit-stride runs.  Rows and columns past (Ho, Wo), the
    overhang of partial edge tiles, are not written.  Scratch ``half`` has
    at least (alpha_h + 1, m_w, ns * K) elements (the last plane holds one
    finished row of tiles).
    """
    _, _, Ho, Wo = y.shape
    nk = mm.shape[2]
    m_h, a_h = at_h.shape
    m_w, a_w = at_w.shape
    has_bias = bias.shape[0] > 0
    zero = np.zeros(1, mm.dtype)[0]      # keeps the sum in the data's dtype
    length = ns * nk
    col0 = tj0 * m_w
    cols = min(ns * m_w, Wo - col0)
    for r in range(nr):
        ti = ti0 + r
        first = t0 + r * row_stride
        # half[i, b, s*K + k] = sum_j A_w^T[b, j] M_s[i, j, k]
        for i in range(a_h):
            for b in range(m_w):
                acc = half[i, b, :length]
                acc[:] = 0
                for j in range(a_w):
                    add_scaled(acc, at_w[b, j], mm[i * a_w + j, first:first + ns])
        rows = min(m_h, Ho - ti * m_h)
        out = half[a_h, 0, :length]
        for a in range(rows):
            # out[s*K + k] = sum_i A_h^T[a, i] half[i, b, s*K + k]
            for b in range(m_w):
                out[:] = 0
                for i in range(a_h):
                    add_scaled(out, at_h[a, i], half[i, b, :length])
                for s in range(ns):
                    for k in range(nk):
                        line[k, s * m_w + b] = out[s * nk + k]
            row = ti * m_h + a
            for k in range(nk):
                shift = bias[k0 + k] if has_bias else zero
                dst = y[n, k0 + k, row]
                src = line[k]
                for j in range(cols):
                    dst[col0 + j] = src[j] + shift
