"""Winograd's tuple GEMMs on the CPU: ``M[p] = V[p] @ U[p]`` by register
tiles over a packed U.

The products are many and short: ``alpha^2`` planes of (tiles x C) @
(C x K), a few dozen to a few hundred tiles each, and in the fused path
one set per cache-sized block of tiles.  A BLAS call packs both operands
every time; here U is packed once per weight array (:func:`pack`, kept
with the transformed weights, :func:`packed_weights`) into strips of
``width`` output channels, each strip one contiguous (C, width) block,
and the product runs on the im2col GEMM's register tile
(:func:`kernels.cpu._panel_gemm.first_tile_rows`, the strip as its panel):
``TILE_ROWS`` tiles (broadcast from V) by ``width`` channels of a strip
(vector loads, rows at a constant stride), accumulated over C from zero
in registers in the order c = 0, 1, ..., C - 1 (as a BLAS dot product
does, and with the same fused multiply-adds) and stored straight into M.
Until stop 35 it ran direct's tile, which reads each row's place from a
table and accumulates through a buffer: the same bits, 1.1-1.7x slower
(section AG of docs/performance.md).

Xeon VM (AVX-512), 2 threads, float32, staged GEMMs of ResNet-50's 3x3
layers at batch 4, against NumPy's OpenBLAS called the same way (one
single-threaded call per plane and chunk of tiles): 256@14^2 F(4,3)
3.0 ms against 3.3, 512@7^2 F(2,3) 5.1-5.6 against 6.7, 512@7^2 F(4,3)
(16 tiles per plane) 4.4-4.5 against 9.4; 100-120 GFLOP/s where
OpenBLAS got 32-109 (with direct's tile).  With U read in place (rows K
apart) instead of packed strips, the same kernel got 39-105.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, prange
from numba.extending import intrinsic

from ._panel_gemm import first_tile_rows
from .direct import TILE_VECTORS, stack_tile, tile_columns

__all__ = ["TILE_ROWS", "strip_width", "pack", "packed_weights",
           "tuple_gemm", "block_gemm"]

# Tiles per register tile: 6 x TILE_VECTORS accumulators (24 of the 32
# AVX-512 registers).  One core, operands in L1, float32: 4 x 4 ran at
# 77 GFLOP/s, 6 x 4 at 116, 8 x 3 at 123 (8 x 3 is 48 channels wide,
# which wastes lanes on layers of 64, 128, ... channels).
TILE_ROWS = 6


def strip_width(dtype):
    """Output channels per packed strip of U (one register tile's width)."""
    return tile_columns(dtype)


def pack(U, width):
    """U (P, C, K) as (P, ceil(K / width), C, width) strips, zero-padded
    past K; read-only."""
    P, C, K = U.shape
    strips = -(-K // width)
    packed = np.zeros((P, strips, C, width), U.dtype)
    for s in range(strips):
        k0 = s * width
        k1 = min(K, k0 + width)
        packed[:, s, :, :k1 - k0] = U[:, :, k0:k1]
    packed.setflags(write=False)
    return packed


def packed_weights(transformed, group):
    """The packed U of ``group``, made once and kept with ``transformed``
    (a :class:`~kernels._winograd_math.TransformedWeights`)."""
    key = ("cpu_packed_u", group)
    packed = transformed.derived.get(key)
    if packed is None:
        U = transformed.U[group]
        packed = pack(U, strip_width(U.dtype))
        transformed.derived[key] = packed
    return packed


@intrinsic
def _tile_buffer(typingctx, x):
    """Pointer to a stack buffer of TILE_ROWS x a strip's width (the
    tiles of a last, narrower strip pass through it): no allocation per
    job or block."""
    return stack_tile(x, TILE_ROWS)


@njit(cache=True, inline="always")
def _strip_product(vf, uf, strips, width, mm, mf, p, strip, t_lo, t_hi, c,
                   acc):
    """mm[p, t_lo:t_hi, strip's channels] = V[p, t_lo:t_hi] @ U[p][:, strip].

    ``vf`` and ``uf`` are V (P, T, C) and the packed U (P, strips, C,
    width) flattened, ``mf`` mm (P, T, K) flattened; a tile of a full
    strip goes straight to its place in mm, one of the last, narrower
    strip through ``acc`` (TILE_ROWS x width)."""
    n_tiles, k_total = mm.shape[1], mm.shape[2]
    k0 = strip * width
    kw = min(width, k_total - k0)
    u0 = (p * strips + strip) * c * width
    for t0 in range(t_lo, t_hi, TILE_ROWS):
        rows = min(TILE_ROWS, t_hi - t0)
        v0 = (p * n_tiles + t0) * c
        if kw == width:
            first_tile_rows(rows, uf, u0, width, vf, v0, c, c, mf,
                            (p * n_tiles + t0) * k_total + k0, k_total)
        else:
            first_tile_rows(rows, uf, u0, width, vf, v0, c, c, acc, 0, width)
            for q in range(rows):
                mm[p, t0 + q, k0:k0 + kw] = acc[q * width:q * width + kw]


@njit(parallel=True, cache=True)
def _tuple_gemm_kernel(v, up, mm, chunk):
    n_planes, n_tiles, c = v.shape
    strips = up.shape[1]
    width = up.shape[3]
    vf = v.reshape(v.size)
    uf = up.reshape(up.size)
    mf = mm.reshape(mm.size)
    chunks = (n_tiles + chunk - 1) // chunk
    for job in prange(n_planes * strips * chunks):
        p = job // (strips * chunks)
        strip = (job // chunks) % strips
        t_lo = (job % chunks) * chunk
        acc = carray(_tile_buffer(vf), (TILE_ROWS * width,))
        _strip_product(vf, uf, strips, width, mm, mf, p, strip, t_lo,
                       min(n_tiles, t_lo + chunk), c, acc)


def tuple_gemm(V, packed, out, min_jobs):
    """``out[p] = V[p] @ U[p]`` for every plane, in parallel jobs of one
    strip of one plane (and a chunk of tiles, when that gives fewer than
    ``min_jobs`` jobs).  ``V`` (P, T, C) C-contiguous, ``packed`` from
    :func:`pack`, ``out`` (P, T, K)."""
    n_planes, n_tiles, _ = V.shape
    jobs = n_planes * packed.shape[1]
    chunks = max(1, min(-(-min_jobs // jobs), -(-n_tiles // TILE_ROWS)))
    chunk = -(-n_tiles // chunks)
    chunk = -(-chunk // TILE_ROWS) * TILE_ROWS
    _tuple_gemm_kernel(V, packed, out, chunk)
    return out


@njit(cache=True)
def block_gemm(v, up, mm):
    """``mm[p] = v[p] @ U[p]`` for every plane, on the calling thread (a
    fused block's GEMMs)."""
    n_planes, n_tiles, c = v.shape
    vf = v.reshape(v.size)
    uf = up.reshape(up.size)
    mf = mm.reshape(mm.size)
    strips, width = up.shape[1], up.shape[3]
    acc = carray(_tile_buffer(vf), (TILE_ROWS * width,))
    for p in range(n_planes):
        for strip in range(strips):
            _strip_product(vf, uf, strips, width, mm, mf, p, strip, 0,
                           n_tiles, c, acc)
