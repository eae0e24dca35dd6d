"""Implicit-GEMM convolution on the GPU: im2col without the patch matrix.

Per group ``g`` the convolution is one matrix product (as in
:mod:`kernels.cpu.im2col`)::

    C[m, n] = sum_k W[g Kg + m, k] P_g[k, n]

with ``m`` the output channel within the group (``Kg = K / G`` rows),
``k = (c, i, j)`` a channel of the group and a kernel tap (``Cg kH kW``),
and ``n = (img, oh, ow)`` an output position of the *whole batch*
(``N Ho Wo`` columns: deep layers with 7x7 maps still fill the 64-wide
tiles).  ``P_g[k, n] = x_pad[img, g Cg + c, oh sh + i dh - pt, ow sw + j dw
- pl]`` (zero outside the image) is never written to global memory: the
B loader of the GEMM core (:mod:`kernels.cuda._gemm`) gathers it straight
into the shared-memory slabs.  Consecutive ``n`` are consecutive ``ow``, so
the gather of a warp reads consecutive (stride ``sw``) addresses.  The
store fuses the bias and writes ``y[img, g Kg + m, oh, ow]`` (consecutive
threads, consecutive pixels).  So the only kernel is the GEMM core:
gather, product, bias and the NCHW layout are one pass.

**Per-element address arithmetic.**  Decoding a flat index into
coordinates divides by sizes known only at launch; a hardware-free 64-bit
division costs ~50 instructions on the GPU.  So every divisor ``d`` comes
in ``geom`` with its magic pair (:func:`fast_divisor`): ``q = (t M) >> s``
is ``t // d`` exactly for ``0 <= t, d < 2**31`` (one 64-bit multiply and a
shift, ~5 instructions), and ``t - q d`` the remainder.  ``kH kW``, ``Ho
Wo`` and the other products are precomputed there too.  Per element:

* general loader of B: 4 such divisions (``k -> c, (i, j)``, ``(i, j) ->
  i, j``, ``n -> img, (oh, ow)``, ``(oh, ow) -> oh, ow``), 4 multiply-adds
  for the input coordinates, 4 compares (zero padding) and the 4-D index;
  A (the weights, a plain ``(K, Cg kH kW)`` matrix): the index only; the
  store: 1 division (``n -> img, p``) and the bias.  A thread loads 2
  elements of A and 2 of B per 8-deep slab, on which it does 128 FMAs.
* 1x1, stride 1, unpadded (``pointwise``; dilation is then irrelevant):
  ``x`` viewed as ``(N, C, H W)`` *is* ``P``, so B costs 1 division (``n ->
  img, p``) and no bounds test: a plain GEMM on each image's ``(C, H W)``
  matrix, batch flattened into the columns.

The 31-bit decode needs ``N Ho Wo < 2**31`` per launch: larger batches
run as several launches over slices of whole images.  Refused (the only
configurations refused, beyond any memory): one image with ``Ho Wo >=
2**31`` output pixels, or ``C/G kH kW >= 2**31``.

**Launch.**  ``gemm_grid(Kg, N Ho Wo, groups)``: blocks of the GEMM core's
``GEMM.threads`` (256) threads own a 64x64 tile of ``C``; grid z is the
group.  More than 65535 groups (the grid's z limit) run as several
launches, the first group of each passed in ``geom``.

**Determinism and accuracy.**  One thread per output, each summing its
``Cg kH kW`` products in increasing ``k`` (FMA-contracted by NVVM, no
fastmath), then adding the bias: the order of a plain dot product, so
the bound of :data:`kernels.accuracy.ERROR_CONSTANTS` ``["im2col"]`` (c =
160) holds.  NaN/Inf propagate as in the float64 reference: a padding
tap multiplies zero by the weight (``0 * inf = nan``), as the CPU's patch
matrix does.
"""

from __future__ import annotations

import functools

from .._dispatch import Kernel
from ._gemm import gemm_grid, gemm_kernel
from ._runtime import ReportEntry, cuda, device_entry, numba_type
from ._tuning import GEMM, IM2COL

__all__ = ["KERNELS", "REPORT", "conv2d_device", "fast_divisor", "divide",
           "is_pointwise", "INDEX_LIMIT", "MAX_GRID_Z"]

# Flat indices decoded by divide() stay below this.
INDEX_LIMIT = 2 ** 31
# Most blocks along the grid's z axis.
MAX_GRID_Z = 65535

# Fields of the general geometry tuple (compile-time indices).  A divisor
# X comes as X (the value), X_M and X_S (its magic multiplier and shift).
(_G0, _KG, _CG, _H, _W, _SH, _SW, _DH, _DW, _PT, _PL, _HAS_BIAS,
 _KHW, _KHW_M, _KHW_S, _KW, _KW_M, _KW_S,
 _HOWO, _HOWO_M, _HOWO_S, _WO, _WO_M, _WO_S) = range(24)
_GEOM_LEN = 24
# Fields of the pointwise geometry tuple.
_P_G0, _P_KG, _P_CG, _P_HAS_BIAS, _P_HW, _P_HW_M, _P_HW_S = range(7)
_P_GEOM_LEN = 7


def fast_divisor(d):
    """``(d, M, s)`` with ``(t * M) >> s == t // d`` for ``0 <= t < 2**31``.

    Round-up reciprocal: ``s = 31 + ceil(log2 d)``, ``M = ceil(2**s / d)
    <= 2**32``, so ``t M < 2**63`` fits int64, and the error ``t (M d -
    2**s) / (d 2**s) < 1 / d`` never crosses an integer.  ``1 <= d <
    2**31``.
    """
    d = int(d)
    if not 1 <= d < INDEX_LIMIT:
        raise ValueError(f"divisor {d} outside [1, 2**31)")
    shift = 31 + (d - 1).bit_length()
    return d, -(-(1 << shift) // d), shift


@cuda.jit(device=True, inline="always")
def divide(t, magic, shift):
    """``t // d`` for the ``(d, magic, shift)`` of :func:`fast_divisor`."""
    return (t * magic) >> shift


# --------------------------------------------------------------------------
# Device functions: the GEMM core's loaders and stores
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _general_functions(dtype):
    """(load_a, load_b, store_c) of the general implicit GEMM for ``dtype``."""
    nbtype = numba_type(dtype)

    @cuda.jit(device=True, inline="always")
    def load_w(w2, geom, b, m, k):
        # w viewed as (K, Cg kH kW): row g Kg + m.
        return w2[(geom[_G0] + b) * geom[_KG] + m, k]

    @cuda.jit(device=True, inline="always")
    def load_patch(x, geom, b, k, n):
        c = divide(k, geom[_KHW_M], geom[_KHW_S])
        r = k - c * geom[_KHW]
        i = divide(r, geom[_KW_M], geom[_KW_S])
        j = r - i * geom[_KW]
        img = divide(n, geom[_HOWO_M], geom[_HOWO_S])
        p = n - img * geom[_HOWO]
        oh = divide(p, geom[_WO_M], geom[_WO_S])
        ow = p - oh * geom[_WO]
        ih = oh * geom[_SH] + i * geom[_DH] - geom[_PT]
        iw = ow * geom[_SW] + j * geom[_DW] - geom[_PL]
        if ih >= 0 and ih < geom[_H] and iw >= 0 and iw < geom[_W]:
            return x[img, (geom[_G0] + b) * geom[_CG] + c, ih, iw]
        return nbtype(0)

    @cuda.jit(device=True, inline="always")
    def store_y(dst, geom, b, m, n, value):
        # dst = (y viewed as (N, K, Ho Wo), bias or a dummy).
        y, bias = dst
        img = divide(n, geom[_HOWO_M], geom[_HOWO_S])
        ch = (geom[_G0] + b) * geom[_KG] + m
        if geom[_HAS_BIAS]:
            value += bias[ch]
        y[img, ch, n - img * geom[_HOWO]] = value

    return load_w, load_patch, store_y


@functools.lru_cache(maxsize=None)
def _pointwise_functions(dtype):
    """(load_a, load_b, store_c) of the 1x1 / stride-1 / unpadded GEMM."""

    @cuda.jit(device=True, inline="always")
    def load_w(w2, geom, b, m, k):
        return w2[(geom[_P_G0] + b) * geom[_P_KG] + m, k]

    @cuda.jit(device=True, inline="always")
    def load_x(x3, geom, b, k, n):
        # x viewed as (N, C, H W); n = img H W + p.
        img = divide(n, geom[_P_HW_M], geom[_P_HW_S])
        return x3[img, (geom[_P_G0] + b) * geom[_P_CG] + k,
                  n - img * geom[_P_HW]]

    @cuda.jit(device=True, inline="always")
    def store_y(dst, geom, b, m, n, value):
        y, bias = dst
        img = divide(n, geom[_P_HW_M], geom[_P_HW_S])
        ch = (geom[_P_G0] + b) * geom[_P_KG] + m
        if geom[_P_HAS_BIAS]:
            value += bias[ch]
        y[img, ch, n - img * geom[_P_HW]] = value

    return load_w, load_x, store_y


def general_kernel(dtype):
    """The implicit-GEMM kernel (any geometry) for ``dtype``."""
    return gemm_kernel(*_general_functions(dtype), dtype)


def pointwise_kernel(dtype):
    """The 1x1 / stride-1 / unpadded kernel for ``dtype``."""
    return gemm_kernel(*_pointwise_functions(dtype), dtype)


# --------------------------------------------------------------------------
# Launch driver
# --------------------------------------------------------------------------

def is_pointwise(spec):
    """1x1 kernel, stride 1, no padding: x itself is the patch matrix."""
    return (spec.w_shape[2] == 1 and spec.w_shape[3] == 1
            and tuple(spec.stride) == (1, 1) and not any(spec.padding))


def image_slices(n_img, positions):
    """``[(i0, i1), ...]``: whole images with ``(i1 - i0) positions <
    2**31`` (what :func:`divide` decodes), in order."""
    per = max(1, (INDEX_LIMIT - 1) // max(1, positions))
    return [(i0, min(n_img, i0 + per)) for i0 in range(0, n_img, per)]


def _launch(kernel, groups, m, n, k, a_src, b_src, c_dst, geom, stream):
    """``kernel`` over all groups, at most MAX_GRID_Z per launch (the first
    group of each is ``geom[0]``)."""
    for g0 in range(0, groups, MAX_GRID_Z):
        count = min(MAX_GRID_Z, groups - g0)
        kernel[gemm_grid(m, n, count), GEMM.threads, stream](
            a_src, b_src, c_dst, (g0,) + geom[1:], m, n, k)


def conv2d_device(spec, x, w, bias, stream=0, pointwise=None):
    """``y = conv2d(x, w, bias)`` on device arrays (the entry's body).

    ``pointwise``: force (True) or forbid (False) the 1x1 loaders; None
    uses them when :func:`is_pointwise` and ``IM2COL.pointwise``.
    """
    n_img, c, h, wd = spec.x_shape
    k, cg, kh, kw = spec.w_shape
    groups = spec.groups
    kg = k // groups
    ho, wo = spec.out_hw
    y = cuda.device_array((n_img, k, ho, wo), dtype=x.dtype, stream=stream)
    w2 = w.reshape(k, cg * kh * kw)
    has_bias = int(bias is not None)
    bias_arg = bias if has_bias else w.reshape(w.size)   # never read
    if pointwise is None:
        pointwise = IM2COL.pointwise and is_pointwise(spec)
    if pointwise:
        kernel = pointwise_kernel(x.dtype)
        geom = (0, kg, cg, has_bias) + fast_divisor(h * wd)
    else:
        kernel = general_kernel(x.dtype)
        sh, sw = spec.stride
        dh, dw = spec.dilation
        pt, _, pl, _ = spec.padding
        geom = ((0, kg, cg, h, wd, sh, sw, dh, dw, pt, pl, has_bias)
                + fast_divisor(kh * kw) + fast_divisor(kw)
                + fast_divisor(ho * wo) + fast_divisor(wo))
    for i0, i1 in image_slices(n_img, ho * wo):
        xs, ys = x[i0:i1], y[i0:i1]
        dst = (ys.reshape(i1 - i0, k, ho * wo), bias_arg)
        if pointwise:
            _launch(kernel, groups, kg, (i1 - i0) * h * wd, cg, w2,
                    xs.reshape(i1 - i0, c, h * wd), dst, geom, stream)
        else:
            _launch(kernel, groups, kg, (i1 - i0) * ho * wo, cg * kh * kw,
                    w2, xs, dst, geom, stream)
    return y


# --------------------------------------------------------------------------
# Contract entry points
# --------------------------------------------------------------------------

def unsupported_reason(spec):
    """None, unless an index would not fit the 31-bit decode."""
    _, cg, kh, kw = spec.w_shape
    if spec.out_hw[0] * spec.out_hw[1] >= INDEX_LIMIT:
        return "one image has 2**31 or more output pixels"
    if cg * kh * kw >= INDEX_LIMIT:
        return "C/groups * kH * kW is 2**31 or more"
    return None


def _run(spec, x, w, bias, stream=0):
    return conv2d_device(spec, x, w, bias, stream=stream)


run = device_entry(_run)

KERNELS = {("conv2d", "im2col"): Kernel(run, unsupported_reason)}


# --------------------------------------------------------------------------
# Compilation report
# --------------------------------------------------------------------------

def _signature(dims, geom_len):
    def signature(dtype):
        from numba import types
        t = numba_type(dtype)
        arr2, arr3, arr1 = t[:, ::1], t[:, :, ::1], t[::1]
        x_arr = t[:, :, :, ::1] if dims == 4 else arr3
        return (arr2, x_arr, types.Tuple((arr3, arr1)),
                types.UniTuple(types.int64, geom_len), types.int64,
                types.int64, types.int64)
    return signature


REPORT = [
    ReportEntry("im2col", "implicit_gemm", general_kernel,
                _signature(4, _GEOM_LEN), GEMM.threads,
                note="GEMM core, B gathered from the padded image, bias fused"),
    ReportEntry("im2col", "implicit_gemm_pointwise", pointwise_kernel,
                _signature(3, _P_GEOM_LEN), GEMM.threads,
                note="GEMM core on each image's (C, H W) matrix (1x1)"),
]
