"""Blocks of Winograd tiles for the CPU kernels: their shapes, the block
of each parallel job, and the unit-stride accumulation both transforms
are made of.  Block shapes depend on the problem, the tunables and
``_tuning.block_shape_threads()``, never on the current thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["block_shape", "output_step", "block_of_job", "job_count", "add_scaled"]


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
