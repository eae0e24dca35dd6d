"""Winograd minimal-filtering convolution F(m x m, r x r) on the CPU.

The mathematics (Lavin & Gray's transforms y = A^T [(G g) * (B^T d)],
generated exactly by Cook-Toom; tiles, supported kernel sizes, error
constants) is backend-neutral and lives in :mod:`kernels._winograd_math`;
this module holds the CPU kernels and drivers.  Over C input channels the
elementwise products of transformed tiles and filters become sums over C,
so a layer is ``alpha_h * alpha_w`` independent (tiles x C) @ (C x K)
matrix products.

The computation runs as separate stages, NNPACK style (each is a public
function with its own test):

1. :func:`transform_kernel`  ``U[p, c, k]``  (once per weight array; cached)
2. :func:`transform_input`   ``V[p, t, c]``  tiles -> GEMM layout
3. :func:`tuple_gemm`        ``M[p] = V[p] @ U[p]``  (BLAS)
4. :func:`transform_output`  ``y`` from ``M``, partial edge tiles clipped

where ``p`` indexes the ``alpha_h * alpha_w`` transformed coefficients and
``t`` the tiles of the whole batch.  The transforms work on blocks of
consecutive tiles with channels innermost, so that both passes of each
transform are long unit-stride vector loops over (tile, channel), and
write straight into the layout the next stage reads.

:func:`conv2d` runs them one of two ways.  *Fused*: one parallel job per
block of tiles runs stages 2-4 for its block, whose V and M stay in the
core's cache (ResNet's 64@56^2, 128@28^2, 256@14^2 layers: 20-35% faster
than staged).  *Staged*: each stage over the whole batch, the GEMMs split over
``p`` (deep layers with few tiles and a large U, where every fused block
would stream all of U).  In both, BLAS is called from inside Numba's
parallel jobs, single-threaded: alternating Numba's OpenMP pool with
OpenBLAS's own pool (NumPy's ``matmul``) made whole calls 2-20x slower on
a busy 2-core machine.

Only stride 1 and dilation 1 are supported, and inputs at least as large
as the kernel; each kernel axis may have any size in
:data:`~kernels._winograd_math.SUPPORTED_KERNEL_SIZES` (an axis of size 1
uses the identity transform, so 1-D convolutions, H = kH = 1, run as 1-D
F(m, r)).  Groups run one after another, each as its own set of GEMMs.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._dispatch import Kernel
from .._weight_cache import transformed_weights
from .._winograd_math import (Tile, TransformedWeights, requested_tile,
                              tile_counts, tile_for, transform_matrices,
                              unsupported_reason)
from ..geometry import conv_output_size
from . import _blas, _gemm, _tuning
from ._winograd_blocks import (add_scaled, block_of_job, block_shape,
                               job_count, output_step)
from ._workspace import Workspace

# Tile, tile_counts and tile_for are re-exported for the stage functions'
# callers (tests, benchmarks); unsupported_reason for kernels._dispatch.
__all__ = ["Tile", "clear_workspace", "conv2d", "conv2d_transformed",
           "tile_counts", "tile_for", "tile_for_problem", "transform_input",
           "transform_kernel", "transform_output", "transform_weights",
           "tuple_gemm", "unsupported_reason"]


# --------------------------------------------------------------------------
# Scratch (the shapes of blocks of tiles: _winograd_blocks.py)
# --------------------------------------------------------------------------

# The padded input, and V and M of the staged path.
_workspace = Workspace()


def clear_workspace():
    """Drop the scratch buffers kept for the calling thread."""
    _workspace.clear()


def _winograd_tuning(tuning):
    """``tuning``, or the Winograd record in force when it is None (for
    the stage functions called on their own)."""
    return _tuning.current().winograd if tuning is None else tuning


# --------------------------------------------------------------------------
# Stage 1: kernel transform   U[p, c, k] = (G_h w[k, c] G_w^T)[a, b], p = a alpha_w + b
# --------------------------------------------------------------------------

def transform_kernel(w, tile):
    """Transform filters ``w`` (K, C, r_h, r_w) into the GEMM operand U.

    Returns a C-contiguous (alpha_h * alpha_w, C, K) array of ``w.dtype``,
    computed in float64 and rounded once.
    """
    K, C, r_h, r_w = w.shape
    _, G_h, _ = transform_matrices(tile.m_h, r_h)
    _, G_w, _ = transform_matrices(tile.m_w, r_w)
    a_h, a_w = G_h.shape[0], G_w.shape[0]
    w64 = np.asarray(w, dtype=np.float64)
    # Two large matrix products instead of K*C tiny ones (BLAS kept
    # single-threaded: its woken workers would spin beside the next kernel).
    with _blas.serial_blas:
        t = w64.reshape(K * C * r_h, r_w) @ G_w.T              # (K C r_h, a_w)
        t = t.reshape(K * C, r_h, a_w).transpose(1, 0, 2).reshape(r_h, -1)
        u = (G_h @ t).reshape(a_h, K, C, a_w)                  # (a_h, K, C, a_w)
    u = u.transpose(0, 3, 2, 1).reshape(a_h * a_w, C, K)
    return np.ascontiguousarray(u, dtype=w.dtype)


def transform_weights(w, tile, groups=1):
    """Kernel transform of every group of ``w`` (K, C // groups, kH, kW).

    Keeps a read-only reference to ``w``: pass a private copy if the caller
    may modify it."""
    w = np.ascontiguousarray(w)
    K = w.shape[0]
    kg = K // groups
    U = np.stack([transform_kernel(w[g * kg:(g + 1) * kg], tile)
                  for g in range(groups)])
    U.setflags(write=False)
    return TransformedWeights(U, w, tile, groups)


# --------------------------------------------------------------------------
# Stage 2: input transform   V[p, t, c] = (B_h^T d_{t,c} B_w)[a, b]
# --------------------------------------------------------------------------

def _padded_channels_last(x, channels, top, left, rows, cols):
    """Channels ``c0 .. c0 + nc - 1`` of x as (N, rows, cols, nc), x placed
    at (top, left) and zeros around it: the zero padding plus the overhang
    of partial edge tiles.  Channels innermost let the transforms run as
    unit-stride vector loops (NumPy's transposing copy is faster than a
    Numba loop for this step).  The result lives in the thread's workspace
    until the next call."""
    c0, nc = channels
    n_img, _, H, W = x.shape
    xp = _workspace.get("xp", (n_img, rows, cols, nc), x.dtype)
    if (x.strides[1] % _ALIASING_BYTES == 0 and x.strides[3] == x.itemsize
            and x.strides[2] == W * x.itemsize):
        _channels_last_rows(x, c0, top, left, xp)
        return xp
    xp[:, :top] = 0
    xp[:, top + H:] = 0
    xp[:, top:top + H, :left] = 0
    xp[:, top:top + H, left + W:] = 0
    xp[:, top:top + H, left:left + W] = x[:, c0:c0 + nc].transpose(0, 2, 3, 1)
    return xp


# Input planes whose stride is a multiple of this many bytes (power-of-two
# images: 128^2, 256^2 float32) all map to the same cache sets, and
# NumPy's transposing copy, which reads one element of every channel in
# turn, thrashes: 64 channels of 4 x 128^2 took 12.8 ms (112^2: 3.8), of
# 4 x 256^2 53 ms; copied row by row from each plane instead, 2.8 and
# 11.4 ms.  (At 570^2 NumPy's copy was the faster, 11.8 ms against 15.6.)
_ALIASING_BYTES = 4096


@njit(parallel=True, cache=True)
def _channels_last_rows(x, c0, top, left, xp):
    """xp[n, top + h, left + w, c] = x[n, c0 + c, h, w], zeros around it;
    one job per padded row, each reading whole rows of the planes."""
    n_img, rows, _, nc = xp.shape
    H, W = x.shape[2], x.shape[3]
    for job in prange(n_img * rows):
        n = job // rows
        h = job % rows - top
        dst = xp[n, job % rows]
        if h < 0 or h >= H:
            dst[:, :] = 0
            continue
        dst[:left, :] = 0
        dst[left + W:, :] = 0
        for c in range(nc):
            src = x[n, c0 + c, h]
            for w in range(W):
                dst[left + w, c] = src[w]


@njit(cache=True)
def _input_block(xp, n, ti0, nr, tj0, ns, bt_h, bt_w, m_h, m_w, half, v, t0,
                 row_stride):
    """Input transform of a block of nr x ns tiles of image n.

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


@njit(parallel=True, cache=True)
def _transform_input_kernel(xp, bt_h, bt_w, m_h, m_w, tiles_h, tiles_w,
                            rows, cols, v):
    n_img, _, _, nc = xp.shape
    tiles = tiles_h * tiles_w
    for job in prange(job_count(n_img, tiles_h, tiles_w, rows, cols)):
        n, ti0, nr, tj0, ns = block_of_job(job, tiles_h, tiles_w, rows, cols)
        half = np.empty((bt_h.shape[0], bt_w.shape[0], ns * nc), xp.dtype)
        _input_block(xp, n, ti0, nr, tj0, ns, bt_h, bt_w, m_h, m_w, half, v,
                     n * tiles + ti0 * tiles_w + tj0, tiles_w)


def transform_input(x, tile, padding, out_hw, channels=None, out=None,
                    tuning=None):
    """Input transform of every tile, in the GEMM layout.

    Parameters
    ----------
    x : ndarray (N, C, H, W)
    tile : Tile
    padding : (top, bottom, left, right) zero padding
    out_hw : (Ho, Wo) output size
    channels : (c0, nc), optional
        Transform input channels ``c0 .. c0 + nc - 1`` only (one group).
    out : ndarray, optional
        Preallocated (alpha_h * alpha_w, T, nc) array of x's dtype.
    tuning : WinogradTuning, optional
        Default ``_tuning.current().winograd``.

    Returns
    -------
    V : ndarray (alpha_h * alpha_w, T, nc)
        ``V[a * alpha_w + b, t, c] = (B_h^T d B_w)[a, b]`` where ``d`` is the
        alpha_h x alpha_w patch of the zero-padded channel c under tile
        ``t = (n * tiles_h + i) * tiles_w + j``, whose top-left corner is at
        padded row ``i m_h`` and column ``j m_w``.
    """
    channels = (0, x.shape[1]) if channels is None else channels
    nc = channels[1]
    _, _, BT_h = transform_matrices(tile.m_h, tile.r_h, x.dtype)
    _, _, BT_w = transform_matrices(tile.m_w, tile.r_w, x.dtype)
    tiles_h, tiles_w = tile_counts(out_hw, tile)
    n_img = x.shape[0]
    xp = _padded_channels_last(x, channels, padding[0], padding[2],
                               tiles_h * tile.m_h + tile.r_h - 1,
                               tiles_w * tile.m_w + tile.r_w - 1)
    if out is None:
        out = np.empty((tile.alpha_h * tile.alpha_w, n_img * tiles_h * tiles_w,
                        nc), x.dtype)
    tuning = _winograd_tuning(tuning)
    rows, cols = block_shape(tiles_h, tiles_w, n_img,
                             tile.alpha_h * tile.alpha_w * nc * x.itemsize,
                             tuning.transform_budget,
                             4 * _tuning.block_shape_threads())
    _transform_input_kernel(xp, BT_h, BT_w, tile.m_h, tile.m_w, tiles_h,
                            tiles_w, rows, cols, out)
    return out


# --------------------------------------------------------------------------
# Stage 3: tuple GEMMs   M[p] = V[p] @ U[p]
# --------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _tuple_gemm_kernel(v, u, mm, chunk, cblas):
    """mm[p, t0:t1] = v[p, t0:t1] @ u[p], one BLAS call per (p, chunk) job.

    Calls BLAS from the Numba threads (run single-threaded, see
    :data:`kernels.cpu._blas.serial_blas`) instead of NumPy's multithreaded
    matmul: OpenBLAS's own thread pool and Numba's OpenMP pool, used one
    after the other, fight for the cores (up to 20x slower on a busy 2-core
    machine).  The BLAS is NumPy's (``cblas``, see :mod:`._gemm`): SciPy's,
    which Numba's ``np.dot`` calls, made 512@7^2 (16 planes of 64 x 512 @
    512 x 512) 1.13-1.40x slower.
    """
    n_planes, n_tiles, _ = v.shape
    chunks = (n_tiles + chunk - 1) // chunk
    for job in prange(n_planes * chunks):
        p = job // chunks
        t0 = (job % chunks) * chunk
        t1 = min(n_tiles, t0 + chunk)
        _gemm.dot(v[p, t0:t1], u[p], mm[p, t0:t1], cblas)


def tuple_gemm(V, U, out=None):
    """``alpha_h * alpha_w`` independent products (T, C) @ (C, K), batched
    over all tiles of the batch so each is a sizeable BLAS call; the
    products (split into tile chunks when there are few) run in parallel,
    each on one thread."""
    n_planes, n_tiles, _ = V.shape
    if out is None:
        out = np.empty((n_planes, n_tiles, U.shape[2]), V.dtype)
    min_jobs = 4 * _tuning.block_shape_threads()
    chunks = max(1, -(-min_jobs // n_planes))
    chunk = max(16, -(-n_tiles // chunks))
    with _blas.serial_blas:
        _tuple_gemm_kernel(V, U, out, chunk, _gemm.available())
    return out


# --------------------------------------------------------------------------
# Stage 4: output transform   y[tile] = A_h^T M A_w (+ bias), clipped
# --------------------------------------------------------------------------

@njit(cache=True)
def _output_block(mm, t0, row_stride, n, ti0, nr, tj0, ns, at_h, at_w, bias,
                  k0, half, line, y):
    """Output transform of a block of nr x ns tiles into y[n, k0 + k].

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


@njit(parallel=True, cache=True)
def _transform_output_kernel(mm, at_h, at_w, bias, k0, tiles_h, tiles_w,
                             rows, cols, y):
    n_img = y.shape[0]
    nk = mm.shape[2]
    tiles = tiles_h * tiles_w
    for job in prange(job_count(n_img, tiles_h, tiles_w, rows, cols)):
        n, ti0, nr, tj0, ns = block_of_job(job, tiles_h, tiles_w, rows, cols)
        m_w = at_w.shape[0]
        half = np.empty((at_h.shape[1] + 1, m_w, ns * nk), mm.dtype)
        line = np.empty((nk, ns * m_w), mm.dtype)
        _output_block(mm, n * tiles + ti0 * tiles_w + tj0, tiles_w, n, ti0, nr,
                      tj0, ns, at_h, at_w, bias, k0, half, line, y)


def transform_output(M, tile, out_shape, bias=None, channels=None, out=None,
                     tuning=None):
    """Output transform of every tile, with partial tiles clipped.

    Parameters
    ----------
    M : ndarray (alpha_h * alpha_w, T, nk), tuple-GEMM result
    tile : Tile
    out_shape : (N, K, Ho, Wo) of the whole output
    bias : ndarray (K,), optional
    channels : (k0, nk), optional
        Write output channels ``k0 .. k0 + nk - 1`` (one group) of ``out``.
    out : ndarray (N, K, Ho, Wo), optional (allocated when None)
    tuning : WinogradTuning, optional
        Default ``_tuning.current().winograd``.

    Returns
    -------
    y : ndarray (N, K, Ho, Wo), with
        ``y[n, k, i m_h + a, j m_w + b] = (A_h^T M_t A_w)[a, b] + bias[k]``
        for tile ``t = (n * tiles_h + i) * tiles_w + j`` and
        ``M_t[a', b'] = M[a' alpha_w + b', t, k]``.
    """
    if out is None:
        out = np.empty(out_shape, M.dtype)
    k0 = 0 if channels is None else channels[0]
    AT_h, _, _ = transform_matrices(tile.m_h, tile.r_h, M.dtype)
    AT_w, _, _ = transform_matrices(tile.m_w, tile.r_w, M.dtype)
    tiles_h, tiles_w = tile_counts(out_shape[2:], tile)
    bias_arr = np.zeros(0, M.dtype) if bias is None else bias
    rows, cols = block_shape(tiles_h, tiles_w, out_shape[0],
                             (tile.alpha_h + 2) * tile.m_w * M.shape[2] * M.itemsize,
                             _winograd_tuning(tuning).transform_budget,
                             4 * _tuning.block_shape_threads(),
                             output_step(tile.m_w))
    _transform_output_kernel(M, AT_h, AT_w, bias_arr, k0, tiles_h, tiles_w,
                             rows, cols, out)
    return out


# --------------------------------------------------------------------------
# Fused path: stages 2-4 per cache-sized block of tiles
# --------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _fused_kernel(xp, u, bt_h, bt_w, at_h, at_w, bias, k0, tiles_h, tiles_w,
                  rows, cols, y, cblas):
    """All three stages per block of tiles, one prange job per block.

    The block's V and M (alpha^2 x tiles x channels) stay in the core's
    cache between the stages; only x, U and y travel through memory.
    """
    n_img, _, _, nc = xp.shape
    n_planes, _, nk = u.shape
    m_h, a_h = at_h.shape
    m_w, a_w = at_w.shape
    for job in prange(job_count(n_img, tiles_h, tiles_w, rows, cols)):
        n, ti0, nr, tj0, ns = block_of_job(job, tiles_h, tiles_w, rows, cols)
        nt = nr * ns
        v = np.empty((n_planes, nt, nc), xp.dtype)
        mm = np.empty((n_planes, nt, nk), xp.dtype)
        half = np.empty((a_h, a_w, ns * nc), xp.dtype)
        _input_block(xp, n, ti0, nr, tj0, ns, bt_h, bt_w, m_h, m_w, half, v, 0,
                     ns)
        for p in range(n_planes):
            _gemm.dot(v[p], u[p], mm[p], cblas)
        half_out = np.empty((a_h + 1, m_w, ns * nk), xp.dtype)
        line = np.empty((nk, ns * m_w), xp.dtype)
        _output_block(mm, 0, ns, n, ti0, nr, tj0, ns, at_h, at_w, bias, k0,
                      half_out, line, y)


def _fused_blocks(tile, tiles_hw, n_img, nc, nk, itemsize, tuning, path=None):
    """Blocks of the fused kernel, or None for the staged path.

    ``path`` "fused" or "staged" forces that path; None chooses.  Every
    block streams all of U through the core's cache, so the fused path
    needs blocks of >= 8 tiles and a U below ``tuning.fused_max_u_bytes``
    (it then wins by 10-50%: ResNet's 64@56^2, 128@28^2, 256@14^2 with
    F(2,3)); deep layers with few tiles and large U (512@7^2) run staged,
    where each tuple GEMM reads its U[p] once.  And >= 2 blocks per
    thread."""
    if path == "staged":
        return None
    n_planes = tile.alpha_h * tile.alpha_w
    threads = _tuning.block_shape_threads()

    def blocks(min_jobs):
        return block_shape(tiles_hw[0], tiles_hw[1], n_img,
                           n_planes * (nc + nk) * itemsize, tuning.block_budget,
                           min_jobs, output_step(tile.m_w))

    if n_planes * nc * nk * itemsize < tuning.fused_max_u_bytes:
        # Four blocks per thread balance best; with few tiles (batch 1 at
        # 14^2: 49) two per thread keep the blocks at >= 8 tiles.
        for per_thread in (4, 2):
            rows, cols = blocks(per_thread * threads)
            if (rows * cols >= 8
                    and job_count(n_img, tiles_hw[0], tiles_hw[1], rows,
                                  cols) >= 2 * threads):
                return rows, cols
    return blocks(1) if path == "fused" else None


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def tile_for_problem(kernel_hw, out_hw, n_img, channels=(0, 0), itemsize=4,
                     tuning=None):
    """The default tile for a problem: :func:`tile_for`'s per-kernel default,
    or m = 2 (where that is smaller) when the tuple GEMMs would be short.

    Short means fewer than ``tuning.min_gemm_rows`` (32) tiles in the
    batch, or fewer than ``min_gemm_rows_large_u`` (128) with a U of more
    than ``large_u_bytes`` (4 MiB; ``channels = (C, K)`` per group):
    such GEMMs have too few rows to pay for reading U (alpha^2 C K
    numbers), and a smaller tile shrinks U and adds rows.  Measured with
    one thread, CPU time, F(2, 3) against F(4, 3): 256@14^2 at batch 1, 2,
    4 (16-64 tiles, U 9.4 MiB) 1.5x faster; 512@7^2 at batch 4 (16 tiles)
    1.4x; but 128@28^2 at batch 1 (49 tiles, U 2.4 MiB) 1.2x slower and
    512@7^2 at batch 16 (64 tiles) 1.1x slower.
    """
    tuning = _winograd_tuning(tuning)
    tile = tile_for(kernel_hw)
    tiles_h, tiles_w = tile_counts(out_hw, tile)
    n_tiles = n_img * tiles_h * tiles_w
    u_bytes = tile.alpha_h * tile.alpha_w * channels[0] * channels[1] * itemsize
    short = n_tiles < (tuning.min_gemm_rows_large_u
                       if u_bytes > tuning.large_u_bytes
                       else tuning.min_gemm_rows)
    if not short:
        return tile
    return tile._replace(m_h=min(tile.m_h, 2), m_w=min(tile.m_w, 2))


def _output_hw(in_hw, kernel_hw, padding):
    """(Ho, Wo) of the stride-1 convolution; ``padding`` is (top, bottom,
    left, right)."""
    pads = (tuple(padding[:2]), tuple(padding[2:]))
    return tuple(conv_output_size(n, k, padding=p)
                 for n, k, p in zip(in_hw, kernel_hw, pads))


def _set_padding_only_outputs(y, bias, in_hw, padding, kernel_hw):
    """Outputs whose window lies wholly in the zero padding are exactly the
    bias.  Winograd computes them from the other inputs of their tile,
    as a sum that cancels only up to rounding; set them exactly."""
    value = 0 if bias is None else bias[None, :, None, None]
    for axis, (size, lo, r) in enumerate(zip(in_hw, padding[::2], kernel_hw)):
        # Output i sees padded positions i .. i + r - 1; real ones lo .. lo + size - 1.
        first_seeing = max(0, lo - r + 1)
        last_seeing = lo + size - 1
        index = [slice(None)] * 4
        if first_seeing > 0:
            index[2 + axis] = slice(0, first_seeing)
            y[tuple(index)] = value
        if last_seeing + 1 < y.shape[2 + axis]:
            index[2 + axis] = slice(last_seeing + 1, None)
            y[tuple(index)] = value


def conv2d_transformed(x, transformed, bias, padding, path=None,
                       tuning=None):
    """Stride-1 convolution of x with already transformed weights.

    ``path`` is ``"fused"`` (all stages per cache-sized block of tiles),
    ``"staged"`` (each stage over the whole batch: input transform, tuple
    GEMMs, output transform) or None (fused when the blocks are big enough,
    see ``_fused_blocks``).  Groups run one after another.  ``tuning`` is
    a WinogradTuning (default ``_tuning.current().winograd``).
    Returns (N, K, Ho, Wo) of x's dtype.
    """
    tuning = _winograd_tuning(tuning)
    tile = transformed.tile
    n_img, C, H, W = x.shape
    K, cg = transformed.w_shape[:2]
    groups = transformed.groups
    kg = K // groups
    Ho, Wo = _output_hw((H, W), (tile.r_h, tile.r_w), padding)
    tiles_h, tiles_w = tile_counts((Ho, Wo), tile)
    y = np.empty((n_img, K, Ho, Wo), x.dtype)
    blocks = _fused_blocks(tile, (tiles_h, tiles_w), n_img, cg, kg, x.itemsize,
                           tuning, path)
    bias_arr = np.zeros(0, x.dtype) if bias is None else bias
    AT_h, _, BT_h = transform_matrices(tile.m_h, tile.r_h, x.dtype)
    AT_w, _, BT_w = transform_matrices(tile.m_w, tile.r_w, x.dtype)
    for g in range(groups):
        if blocks is None:
            n_planes, n_tiles = tile.alpha_h * tile.alpha_w, n_img * tiles_h * tiles_w
            V = transform_input(x, tile, padding, (Ho, Wo), channels=(g * cg, cg),
                                out=_workspace.get("V", (n_planes, n_tiles, cg), x.dtype),
                                tuning=tuning)
            M = tuple_gemm(V, transformed.U[g],
                           out=_workspace.get("M", (n_planes, n_tiles, kg), x.dtype))
            transform_output(M, tile, y.shape, bias, channels=(g * kg, kg),
                             out=y, tuning=tuning)
            continue
        xp = _padded_channels_last(x, (g * cg, cg), padding[0], padding[2],
                                   tiles_h * tile.m_h + tile.r_h - 1,
                                   tiles_w * tile.m_w + tile.r_w - 1)
        with _blas.serial_blas:
            _fused_kernel(xp, transformed.U[g], BT_h, BT_w, AT_h, AT_w,
                          bias_arr, g * kg, tiles_h, tiles_w, blocks[0],
                          blocks[1], y, _gemm.available())
    _set_padding_only_outputs(y, bias, (H, W), padding, (tile.r_h, tile.r_w))
    return y


def conv2d(x, w, bias, stride, padding, dilation, groups):
    """Winograd convolution (behind ``KERNELS[("conv2d", "winograd")]``).

    The tile is the one requested with :func:`use_tile`, else
    :func:`tile_for_problem`'s.  Transformed weights are kept in the
    shared :data:`kernels._weight_cache.transformed_weights` (kind
    ``"winograd"``, key (tile, groups)).  The tunables in force are read
    once, here.
    """
    reason = unsupported_reason(x.shape, w.shape, stride, padding, dilation,
                                groups)
    if reason is not None:
        raise ValueError(reason)
    tuning = _tuning.current().winograd
    if requested_tile() is None:
        out_hw = _output_hw(x.shape[2:], w.shape[2:], padding)
        tile = tile_for_problem(w.shape[2:], out_hw, x.shape[0],
                                (w.shape[1], w.shape[0] // groups), x.itemsize,
                                tuning)
    else:
        tile = tile_for(w.shape[2:], requested_tile())
    transformed = transformed_weights.get(
        w, "winograd", (tile, groups),
        lambda own: transform_weights(own, tile, groups))
    return conv2d_transformed(x, transformed, bias, padding, tuning=tuning)


# --------------------------------------------------------------------------
# The backend contract (kernels._dispatch)
# --------------------------------------------------------------------------

def _run(spec, x, w, bias):
    return conv2d(x, w, bias, spec.stride, spec.padding, spec.dilation,
                  spec.groups)


def _unsupported(spec):
    return unsupported_reason(*spec.config())


def _run_pretransformed(spec, x, transformed, bias):
    return conv2d_transformed(x, transformed, bias, spec.padding)


KERNELS = {
    ("conv2d", "winograd"): Kernel(_run, _unsupported),
    ("winograd_transform_weights", "winograd"): Kernel(transform_weights),
    ("conv2d_pretransformed", "winograd"): Kernel(_run_pretransformed),
    ("winograd_clear_workspace", "winograd"): Kernel(clear_workspace),
}
