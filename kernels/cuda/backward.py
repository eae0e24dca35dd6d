"""Weight gradient of the 2-D convolution on the GPU: an implicit GEMM
whose reduction runs over the batch's output positions.

For ``y = conv2d(x, w, stride=s, padding=p, dilation=d, groups=G)`` and
``gy = dL/dy``, per group ``g``::

    grad_w[g Kg + m, c, i, j] = sum_r gy[img, g Kg + m, oh, ow]
                                      x_pad[img, g Cg + c, oh sh + i dh - pt,
                                                           ow sw + j dw - pl]

with ``r = (img, oh, ow)`` running over all ``N Ho Wo`` output positions:
the GEMM ``C[m, n] = sum_r A[m, r] B[r, n]`` of the GEMM core
(:mod:`kernels.cuda._gemm`) with ``m`` the output channel within the group
(``Kg`` rows), ``n = (c, i, j)`` (``Cg kH kW`` columns, so the store is
``grad_w`` viewed as ``(K, Cg kH kW)``: coalesced), ``A`` read from ``gy``
(viewed as ``(N, K, Ho Wo)``) and ``B`` gathered from the zero-padded
``x`` like the forward implicit GEMM's patch matrix (:mod:`.im2col`), never
materialised.  Both loaders enumerate the slab's reduction index slowest
(the core's order): a block reads, per 8-deep slab, 8 consecutive output
positions of 64 channels of ``gy`` (whole 32-byte sectors in float32,
served through L1) and the matching taps of ``x``.

**Split-K.**  The output is small (``K Cg kH kW``) and the reduction long,
so a plain launch would run few blocks on a 132-SM GPU.  The reduction is
cut into ``S`` contiguous ranges (each a multiple of the 8-deep slab):
the GEMM launch has ``G S`` blocks along z, block ``(g, s)`` sums range
``s`` of group ``g`` into ``partial[g, s]`` (``(G, S, Kg, Cg kH kW)``), and
``sum_partials`` (one thread per gradient element, ``BackwardTuning.threads``
per block) adds ``partial[g, 0] + partial[g, 1] + ...`` in that fixed
order.  ``S`` (:func:`split_count`) is chosen from the problem alone:
enough blocks for ``BackwardTuning.target_blocks``, each range at least
``min_split_length`` long, at most ``max_splits``.  With ``S = 1`` the GEMM
writes ``grad_w`` directly and the second kernel is not launched.

**Address arithmetic.**  Every division by a size is :func:`.im2col.divide`
with a precomputed magic pair (``(t M) >> s``, exact below 2**31):
per element of A 2 (``z -> g, s`` and ``r -> img, p``), of B 5 (``z -> g,
s``, ``r -> img, oh, ow`` and ``n -> c, i, j``), plus the padding test.
Batches with ``N Ho Wo >= 2**31`` run as several GEMM launches over
slices of whole images, each with its own ranges of ``partial``.

**Determinism and accuracy.**  No atomics: every partial sum and every
gradient element is written by one thread, summing in increasing ``r``
within a range and then over the ranges in increasing order; ``S``
depends on the shapes only, so results are the same on every GPU and
launch.  The error is at most that of one dot product of length ``N Ho
Wo`` (each range's length plus ``S``), the bound of
:data:`kernels.accuracy.ERROR_CONSTANTS` ``["im2col"]`` as on the CPU.
Zero padding taps contribute ``gy * 0`` (``inf * 0 = nan``, as the
float64 definition computes it).
"""

from __future__ import annotations

import functools

from .._dispatch import Kernel
from ._gemm import gemm_grid, gemm_kernel
from ._runtime import ReportEntry, cuda, device_entry, grid, numba_type
from ._tuning import BACKWARD, GEMM
from .im2col import MAX_GRID_Z, divide, fast_divisor, image_slices

__all__ = ["KERNELS", "REPORT", "weight_grad_device", "split_count"]

# Fields of the geometry tuple (compile-time indices); a divisor X comes as
# X, X_M, X_S (see im2col.fast_divisor).
(_Z0, _S_OFF, _CHUNK, _LEN, _KG, _CG, _H, _W, _SH, _SW, _DH, _DW, _PT, _PL,
 _S, _S_M, _S_S, _KHW, _KHW_M, _KHW_S, _KW, _KW_M, _KW_S,
 _HOWO, _HOWO_M, _HOWO_S, _WO, _WO_M, _WO_S) = range(29)
_GEOM_LEN = 29


# --------------------------------------------------------------------------
# Kernels: the GEMM core's loaders and store, and the partial-sum reduction
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _gemm_functions(dtype):
    """(load_a, load_b, store_c) of the weight-gradient GEMM for ``dtype``."""
    nbtype = numba_type(dtype)

    @cuda.jit(device=True, inline="always")
    def load_gy(gy3, geom, b, m, k):
        # gy viewed as (images of this launch, K, Ho Wo).
        z = geom[_Z0] + b
        g = divide(z, geom[_S_M], geom[_S_S])
        r = (z - g * geom[_S]) * geom[_CHUNK] + k
        if r >= geom[_LEN]:
            return nbtype(0)
        img = divide(r, geom[_HOWO_M], geom[_HOWO_S])
        return gy3[img, g * geom[_KG] + m, r - img * geom[_HOWO]]

    @cuda.jit(device=True, inline="always")
    def load_patch(x, geom, b, k, n):
        z = geom[_Z0] + b
        g = divide(z, geom[_S_M], geom[_S_S])
        r = (z - g * geom[_S]) * geom[_CHUNK] + k
        if r >= geom[_LEN]:
            return nbtype(0)
        img = divide(r, geom[_HOWO_M], geom[_HOWO_S])
        p = r - img * geom[_HOWO]
        oh = divide(p, geom[_WO_M], geom[_WO_S])
        ow = p - oh * geom[_WO]
        c = divide(n, geom[_KHW_M], geom[_KHW_S])
        t = n - c * geom[_KHW]
        i = divide(t, geom[_KW_M], geom[_KW_S])
        j = t - i * geom[_KW]
        ih = oh * geom[_SH] + i * geom[_DH] - geom[_PT]
        iw = ow * geom[_SW] + j * geom[_DW] - geom[_PL]
        if ih >= 0 and ih < geom[_H] and iw >= 0 and iw < geom[_W]:
            return x[img, g * geom[_CG] + c, ih, iw]
        return nbtype(0)

    @cuda.jit(device=True, inline="always")
    def store_partial(partial, geom, b, m, n, value):
        # partial: (G, S_total, Kg, Cg kH kW); grad_w itself when S_total = 1.
        z = geom[_Z0] + b
        g = divide(z, geom[_S_M], geom[_S_S])
        partial[g, geom[_S_OFF] + z - g * geom[_S], m, n] = value

    return load_gy, load_patch, store_partial


def gemm_kernel_for(dtype):
    """The weight-gradient GEMM kernel for ``dtype``."""
    return gemm_kernel(*_gemm_functions(dtype), dtype)


@functools.lru_cache(maxsize=None)
def sum_partials_kernel(dtype):
    """``out[g, q] = partial[g, 0, q] + partial[g, 1, q] + ...`` in order."""

    @cuda.jit
    def sum_partials(partial, out):
        t = cuda.grid(1)
        per_group = out.shape[1]
        if t < out.shape[0] * per_group:
            g = t // per_group
            q = t - g * per_group
            acc = partial[g, 0, q]
            for s in range(1, partial.shape[1]):
                acc += partial[g, s, q]
            out[g, q] = acc

    return sum_partials


# --------------------------------------------------------------------------
# Launch driver
# --------------------------------------------------------------------------

def split_count(spec, tuning=None):
    """Partial sums per gradient element (split-K), from the shapes only."""
    tuning = tuning or BACKWARD
    n_img, _, _, _ = spec.x_shape
    k, cg, kh, kw = spec.w_shape
    length = n_img * spec.out_hw[0] * spec.out_hw[1]
    gx, gy, _ = gemm_grid(k // spec.groups, cg * kh * kw)
    blocks = gx * gy * spec.groups
    want = -(-tuning.target_blocks // blocks)
    most = max(1, min(tuning.max_splits, length // tuning.min_split_length))
    return max(1, min(want, most))


def _pieces(spec, splits):
    """``[(i0, i1, S, chunk), ...]``: image slices (each under 2**31
    positions) and the split of each, ``sum S >= splits`` in total."""
    n_img = spec.x_shape[0]
    positions = spec.out_hw[0] * spec.out_hw[1]
    total = n_img * positions
    bk = GEMM.block_k
    pieces = []
    for i0, i1 in image_slices(n_img, positions):
        length = (i1 - i0) * positions
        s = max(1, -(-splits * length // total))
        chunk = -(-(-(-length // s)) // bk) * bk     # a multiple of the slab
        pieces.append((i0, i1, -(-length // chunk), chunk))
    return pieces


def weight_grad_device(spec, gy, x, stream=0, splits=None):
    """``grad_w`` (device array) from device arrays ``gy`` and ``x``.

    ``splits``: the split-K count (default :func:`split_count`).
    """
    n_img, c, h, wd = spec.x_shape
    k, cg, kh, kw = spec.w_shape
    groups = spec.groups
    kg = k // groups
    ho, wo = spec.out_hw
    cols = cg * kh * kw
    dtype = x.dtype
    grad_w = cuda.device_array((k, cg, kh, kw), dtype=dtype, stream=stream)
    pieces = _pieces(spec, split_count(spec) if splits is None else splits)
    s_total = sum(p[2] for p in pieces)
    if s_total == 1:
        partial = grad_w.reshape(groups, 1, kg, cols)
    else:
        partial = cuda.device_array((groups, s_total, kg, cols), dtype=dtype,
                                    stream=stream)
    sh, sw = spec.stride
    dh, dw = spec.dilation
    pt, _, pl, _ = spec.padding
    kernel = gemm_kernel_for(dtype)
    gy3 = gy.reshape(n_img, k, ho * wo)
    s_off = 0
    for i0, i1, s, chunk in pieces:
        length = (i1 - i0) * ho * wo
        z_total = groups * s
        for z0 in range(0, z_total, MAX_GRID_Z):
            geom = ((z0, s_off, chunk, length, kg, cg, h, wd, sh, sw, dh, dw,
                     pt, pl)
                    + fast_divisor(s) + fast_divisor(kh * kw)
                    + fast_divisor(kw) + fast_divisor(ho * wo)
                    + fast_divisor(wo))
            count = min(MAX_GRID_Z, z_total - z0)
            kernel[gemm_grid(kg, cols, count), GEMM.threads, stream](
                gy3[i0:i1], x[i0:i1], partial, geom, kg, cols, chunk)
        s_off += s
    if s_total > 1:
        out = grad_w.reshape(groups, kg * cols)
        sum_partials_kernel(dtype)[grid(out.size, BACKWARD.threads),
                                   BACKWARD.threads, stream](
            partial.reshape(groups, s_total, kg * cols), out)
    return grad_w


# --------------------------------------------------------------------------
# Contract entry points
# --------------------------------------------------------------------------

def _run(spec, grad_out, x, stream=0):
    """``run(spec, grad_out, x) -> grad_w (K, C/G, kH, kW)``."""
    return weight_grad_device(spec, grad_out, x, stream=stream)


run = device_entry(_run)

KERNELS = {("conv2d_weight_grad", "im2col"): Kernel(run)}


# --------------------------------------------------------------------------
# Compilation report
# --------------------------------------------------------------------------

def _gemm_signature(dtype):
    from numba import types
    t = numba_type(dtype)
    return (t[:, :, ::1], t[:, :, :, ::1], t[:, :, :, ::1],
            types.UniTuple(types.int64, _GEOM_LEN), types.int64, types.int64,
            types.int64)


def _sum_signature(dtype):
    t = numba_type(dtype)
    return (t[:, :, ::1], t[:, ::1])


REPORT = [
    ReportEntry("backward", "weight_grad_gemm", gemm_kernel_for,
                _gemm_signature, GEMM.threads,
                note="GEMM core over N Ho Wo, split-K partial sums"),
    ReportEntry("backward", "sum_partials", sum_partials_kernel,
                _sum_signature, BACKWARD.threads,
                note="adds the split-K partial sums in a fixed order"),
]
