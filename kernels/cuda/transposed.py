"""Transposed convolution on CUDA: "direct" and "im2col" kernels.

A transposed convolution scatters every input pixel, scaled by the
kernel, into the output::

    y[n, g Co + o, ih sh - ph + i dh, iw sw - pw + j dw]
        += x[n, g Ci + c, ih, iw] * w[g Ci + c, o, i, j]

(``Ci = C_in / groups``, ``Co = C_out / groups``, ``w`` of shape
``(C_in, Co, kH, kW)``, ``(ph, pw)`` the crop of the top/left; ``out_hw``
already holds output_padding and the bottom/right crop).  Both kernels
here *gather*, as the CPU ones (:mod:`kernels.cpu.transposed`) do: one
thread owns each output element and collects what lands in it, so no
atomics are needed and every result is summed in a fixed order.

**Taps of one output pixel.**  Output row ``oh`` receives kernel row
``i`` from input row ``ih = (t - i dh) / sh`` (``t = oh + ph``) when that
is an integer in ``[0, H)``.  With ``g = gcd(dh, sh)`` the valid ``i``
exist only when ``g | t`` and are ``i0, i0 + step, ...`` with ``step =
sh / g`` and ``i0 = (t / g) inv mod step`` (``inv`` the inverse of
``dh / g`` modulo ``step``, computed on the host); consecutive valid
taps move ``ih`` by ``dh / g``.  :func:`_tap_range` clips that
progression to the taps whose ``ih`` lies inside the input, so the
loops visit exactly the contributing taps, with no test per tap.
Columns likewise.

**Launch order.**  Threads are numbered pixel-fastest, and inside an
output row by *stride phase* (``ow mod sw``) first: the ``Wo`` columns
are enumerated as ``ow = q sw + r`` for ``r = 0 .. sw-1`` then ``q``, so
a warp's threads share one phase, hence one set of taps (no divergence),
and read consecutive input columns (coalesced); the weights they read
are the same address (broadcast).

* ``direct`` (:func:`_direct_kernel`): one thread per output pixel and
  ``TRANSPOSED.out_block`` output channels of one group (a register block:
  each input value loaded is used ``out_block`` times).  It sums, for each
  input channel ``c`` of the group, each valid row tap ``i`` and each
  valid column tap ``j``, ``x[n, c, ih, iw] * w[c, o, i, j]``, in that
  order ``(c, i, j)``, then adds the bias.  Two launches: a small one
  packs the weights as ``(C_in, kH, kW, Co)`` with ``Co`` padded by zeros
  to a multiple of ``out_block`` (:func:`_pack_kernel`: a thread's
  weights of one tap become adjacent, and a partial channel block needs
  no branch), then the gather, a 1-D grid over ``N * groups *
  ceil(Co / out_block) * Ho * Wo`` threads, ``TRANSPOSED.threads`` per
  block.
* ``im2col``: the GEMM ``cols[g] = W_g^T @ X_g`` of shape ``(Co kH kW,
  images * band)``, batched over the groups, on the shared GEMM core
  (:mod:`kernels.cuda._gemm`; loaders read ``W_g^T`` as a transposed view
  of ``w`` and ``X_g`` straight from ``x``, nothing is copied), into a
  scratch device array; then :func:`_col2im_kernel` gathers, for each
  output pixel, the columns that map to it in the fixed order ``(i, j)``
  and adds the bias (PyTorch's ``slow_conv_transpose2d`` order).  The two
  stages are separate launches: fusing col2im into the GEMM's store would
  need a scatter (atomics).  The column matrix stays under
  ``TRANSPOSED.scratch_limit`` bytes: several images per step when they
  fit, else bands of input rows of one image (later bands add into ``y``,
  launches in order on one stream: still deterministic).

**Determinism.**  Every output element is written by one thread per
launch, summing in a fixed order; no atomics.  Results do not depend on
the launch shape (except through ``scratch_limit``, which sets im2col's
bands).

**Accuracy.**  ``direct`` sums ``Ci * taps`` products in one
accumulator: the documented constant ``c = 128`` of
:mod:`kernels.accuracy` holds (``Ci * taps`` products plus the bias).
``im2col`` sums ``Ci`` products per column (GEMM) then the ``taps``
columns: the error is within ``(Ci + taps + 1) u`` of the scale, under
the constant ``c = 160``.  NaN and Inf propagate as in the reference:
only real products ``x * w`` are summed (there are no padding taps).

Backend contract (:mod:`kernels._dispatch`): ``KERNELS`` entries
``("conv_transpose2d", "direct")`` and ``("conv_transpose2d", "im2col")``,
``run(spec, x, w, bias)`` with a :class:`~kernels._dispatch.TransposeSpec`.
Like the CPU kernels, both compute every valid configuration.
"""

from __future__ import annotations

import functools
import math

from numba import uint32, uint64

from .._dispatch import Kernel
from ._gemm import gemm_grid, gemm_kernel
from ._runtime import ReportEntry, cuda, device_entry, grid, numba_type
from ._tuning import GEMM, TRANSPOSED

__all__ = ["KERNELS", "REPORT", "ALGORITHMS"]

ALGORITHMS = ("direct", "im2col")

_THREADS = TRANSPOSED.threads
_OB = TRANSPOSED.out_block
_COL2IM_THREADS = TRANSPOSED.col2im_threads

# Lengths of the integer geometry tuples the kernels take.
_DIRECT_GEOM = 23
_COL2IM_GEOM = 26
_GEMM_GEOM = 4
# Most columns of one im2col step (see _load_x).
_MAX_COLUMNS = 2**31 - 1


# --------------------------------------------------------------------------
# Device functions shared by the gathers
# --------------------------------------------------------------------------

@cuda.jit(device=True, inline="always")
def _tap_range(t, k, s, d, g, step, inv, in_lo, in_hi):
    """First and last kernel tap ``i`` of coordinate ``t = o + pad`` whose
    back-projection ``(t - i d) / s`` is an integer in ``[in_lo, in_hi)``
    (valid taps are ``first, first + step, ... <= last``; none when
    ``first > last``)."""
    top = t - in_lo * s
    if top < 0 or t % g != 0:
        return 0, -1
    last = min(k - 1, top // d)
    first = ((t // g) * inv) % step
    over = t - (in_hi - 1) * s
    if over > 0:
        lo = (over + d - 1) // d
        if lo > first:
            first += ((lo - first + step - 1) // step) * step
    return first, last


@cuda.jit(device=True, inline="always")
def _phase_column(tcol, wo, sw):
    """Output column of the ``tcol``-th thread of a row, numbered by stride
    phase: phases ``r < wo mod sw`` hold ``wo // sw + 1`` columns, the
    others ``wo // sw``; ``ow = q sw + r``."""
    a = wo // sw
    b = wo - a * sw
    big = b * (a + 1)
    if tcol < big:
        r = tcol // (a + 1)
        q = tcol - r * (a + 1)
    else:
        rest = tcol - big
        r = b + rest // a
        q = rest - (r - b) * a
    return q * sw + r


# --------------------------------------------------------------------------
# direct
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _pack_kernel(dtype):
    """``wp[c, i, j, o] = w[c, o, i, j]`` with ``o`` padded by zeros to
    a multiple of ``out_block`` (cached per dtype)."""

    @cuda.jit
    def pack(w, wp, c_out_g, taps, c_out_pad):
        e = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if e >= wp.size:
            return
        o = e % c_out_pad
        rest = e // c_out_pad
        tap = rest % taps
        c = rest // taps
        if o < c_out_g:
            wp[e] = w[(c * c_out_g + o) * taps + tap]
        else:
            wp[e] = 0

    return pack


@functools.lru_cache(maxsize=None)
def _direct_kernel(dtype):
    """The gather kernel for ``dtype`` (cached).

    ``x`` and ``y`` come flattened (1-D), the weights packed as
    ``wp[c, i, j, o]`` with ``o`` padded to a multiple of ``out_block``
    (:func:`_pack_kernel`): a thread's ``out_block`` weights of one tap
    are adjacent (one address, immediate offsets) and a partial block
    multiplies zeros instead of branching.  The inner loops move two
    running offsets, cast to unsigned where they index (no negative-index
    wraparound code): with
    this the kernel needs 70-80 registers instead of ~140.
    """
    nbtype = numba_type(dtype)

    @cuda.jit
    def direct(x, wp, bias, y, geom):
        (n_img, c_in_g, height, width, c_out_g, kh, kw, ho, wo, sh, sw, ph,
         pw, dh, dw, g_h, step_h, inv_h, g_w, step_w, inv_w, n_ob,
         groups) = geom
        acc = cuda.local.array(_OB, nbtype)
        e = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        plane = ho * wo
        if e >= n_img * groups * n_ob * plane:
            return
        p = e % plane
        rest = e // plane
        ob = rest % n_ob
        rest = rest // n_ob
        grp = rest % groups
        n = rest // groups
        oh = p // wo
        ow = _phase_column(p - oh * wo, wo, sw)
        c_out_pad = n_ob * _OB

        th = oh + ph
        tw = ow + pw
        i_first, i_last = _tap_range(th, kh, sh, dh, g_h, step_h, inv_h, 0,
                                     height)
        j_first, j_last = _tap_range(tw, kw, sw, dw, g_w, step_w, inv_w, 0,
                                     width)
        for r in range(_OB):
            acc[r] = 0
        if i_first <= i_last and j_first <= j_last:
            n_i = (i_last - i_first) // step_h + 1
            n_j = (j_last - j_first) // step_w + 1
            # Offsets of x[n, c, ih, iw] and wp[c, i, j, o0] at the first
            # taps of channel c = c0, and their moves per tap and channel.
            ih = (th - i_first * dh) // sh
            iw = (tw - j_first * dw) // sw
            c0 = grp * c_in_g
            x_c = ((n * groups * c_in_g + c0) * height + ih) * width + iw
            w_c = (((c0 * kh + i_first) * kw + j_first) * c_out_pad
                   + ob * _OB)
            x_di = (dh // g_h) * width
            x_dj = dw // g_w
            w_di = step_h * kw * c_out_pad
            w_dj = step_w * c_out_pad
            for c in range(c_in_g):
                x_i = x_c
                w_i = w_c
                for ii in range(n_i):
                    x_j = x_i
                    w_j = w_i
                    for jj in range(n_j):
                        xv = x[uint64(x_j)]
                        for r in range(_OB):
                            acc[r] += xv * wp[uint64(w_j + r)]
                        x_j -= x_dj
                        w_j += w_dj
                    x_i -= x_di
                    w_i += w_di
                x_c += height * width
                w_c += kh * kw * c_out_pad

        for r in range(_OB):
            o = ob * _OB + r
            if o < c_out_g:
                co = grp * c_out_g + o
                v = acc[r]
                if bias.shape[0] > co:
                    v += bias[co]
                y[((n * groups * c_out_g + co) * ho + oh) * wo + ow] = v

    return direct


def _axis_solver(s, d):
    """(gcd, step, inverse) of one axis (see the module docstring)."""
    g = math.gcd(s, d)
    step = s // g
    inv = pow(d // g, -1, step) if step > 1 else 0
    return g, step, inv


def _bias_arg(bias, dtype, stream):
    """The bias, or an empty placeholder (the kernels add ``bias[co]``
    only where ``co < bias.shape[0]``)."""
    if bias is None:
        return cuda.device_array(0, dtype=dtype, stream=stream)
    return bias


def _direct(spec, x, w, bias, stream=0):
    n, c_in, height, width = x.shape
    _, c_out_g, kh, kw = w.shape
    groups = spec.groups
    sh, sw = spec.stride
    ph, pw = spec.pad_lo
    dh, dw = spec.dilation
    ho, wo = spec.out_hw
    y = cuda.device_array((n, c_out_g * groups, ho, wo), dtype=x.dtype,
                          stream=stream)
    n_ob = -(-c_out_g // _OB)
    geom = ((n, c_in // groups, height, width, c_out_g, kh, kw, ho, wo, sh,
             sw, ph, pw, dh, dw) + _axis_solver(sh, dh) + _axis_solver(sw, dw)
            + (n_ob, groups))
    wp = cuda.device_array(c_in * kh * kw * n_ob * _OB, dtype=x.dtype,
                           stream=stream)
    pack = _pack_kernel(x.dtype)
    pack[grid(wp.size, _THREADS), _THREADS, stream](
        w.reshape(w.size), wp, c_out_g, kh * kw, n_ob * _OB)
    total = n * groups * n_ob * ho * wo
    kernel = _direct_kernel(x.dtype)
    kernel[grid(total, _THREADS), _THREADS, stream](
        x.reshape(x.size), wp, _bias_arg(bias, x.dtype, stream),
        y.reshape(y.size), geom)
    return y


# --------------------------------------------------------------------------
# im2col: GEMM into the column matrix, then a col2im gather
# --------------------------------------------------------------------------
# GEMM geometry: (Ci, band pixels, first pixel of the band, first image).

@cuda.jit(device=True, inline="always")
def _load_wt(w2, geom, g, m, k):
    """W_g^T[m, k] = w[g Ci + k, m] (w viewed as (C_in, Co kH kW))."""
    return w2[g * geom[0] + k, m]


@cuda.jit(device=True, inline="always")
def _load_x(x3, geom, g, k, n):
    """X_g[k, n]: channel g Ci + k of pixel n of the band's images
    (x viewed as (N, C_in, H W)).  32-bit unsigned division (the driver
    keeps a step's columns under 2**31): the 64-bit one would cost the
    GEMM ~30 registers."""
    band = uint32(geom[1])
    col = uint32(n)
    img = col // band
    return x3[geom[3] + img, g * geom[0] + k, geom[2] + (col - img * band)]


@cuda.jit(device=True, inline="always")
def _store_cols(cols, geom, g, m, n, value):
    cols[g, m, n] = value


@functools.lru_cache(maxsize=None)
def _col2im_kernel(dtype):
    """The col2im gather for ``dtype`` (cached): ``cols`` flattened,
    offsets moved incrementally and cast to unsigned where they index."""
    nbtype = numba_type(dtype)

    @cuda.jit
    def col2im(cols, bias, y, geom):
        (width, c_out_g, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw, g_h, step_h,
         inv_h, g_w, step_w, inv_w, img0, images, ih0, ih1, first, c_out,
         m, n_cols) = geom
        e = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        plane = ho * wo
        if e >= images * c_out * plane:
            return
        p = e % plane
        rest = e // plane
        co = rest % c_out
        img = rest // c_out
        grp = co // c_out_g
        o = co - grp * c_out_g
        oh = p // wo
        ow = _phase_column(p - oh * wo, wo, sw)

        th = oh + ph
        tw = ow + pw
        i_first, i_last = _tap_range(th, kh, sh, dh, g_h, step_h, inv_h, ih0,
                                     ih1)
        j_first, j_last = _tap_range(tw, kw, sw, dw, g_w, step_w, inv_w, 0,
                                     width)
        acc = nbtype(0)
        if i_first <= i_last and j_first <= j_last:
            n_i = (i_last - i_first) // step_h + 1
            n_j = (j_last - j_first) // step_w + 1
            ih = (th - i_first * dh) // sh
            iw = (tw - j_first * dw) // sw
            # cols[grp, (o kH + i) kW + j, (img (ih1 - ih0) + ih - ih0) W + iw]
            at_i = ((grp * m + (o * kh + i_first) * kw + j_first) * n_cols
                    + (img * (ih1 - ih0) + ih - ih0) * width + iw)
            di = step_h * kw * n_cols - (dh // g_h) * width
            dj = step_w * n_cols - dw // g_w
            for ii in range(n_i):
                at = at_i
                for jj in range(n_j):
                    acc += cols[uint64(at)]
                    at += dj
                at_i += di

        at_y = (((img0 + img) * c_out + co) * ho + oh) * wo + ow
        if first:
            if bias.shape[0] > co:
                acc += bias[co]
            y[at_y] = acc
        else:
            y[at_y] += acc

    return col2im


def _bands(n, height, width, row_bytes, limit):
    """(images per step, input rows per step) keeping the column matrix
    under ``limit`` bytes (as the CPU kernel's) and its columns under
    2**31 (:func:`_load_x`'s 32-bit arithmetic)."""
    image_bytes = row_bytes * height
    if image_bytes <= limit:
        images = max(1, min(n, limit // max(image_bytes, 1)))
        return max(1, min(images, _MAX_COLUMNS // (height * width))), height
    rows = max(1, min(height, limit // max(row_bytes, 1)))
    return 1, max(1, min(rows, _MAX_COLUMNS // width))


def _scratch_limit():
    """The column-matrix budget in bytes, read at each call."""
    return TRANSPOSED.scratch_limit


def _im2col(spec, x, w, bias, stream=0):
    n, c_in, height, width = x.shape
    _, c_out_g, kh, kw = w.shape
    groups = spec.groups
    c_in_g = c_in // groups
    c_out = c_out_g * groups
    m = c_out_g * kh * kw
    sh, sw = spec.stride
    ph, pw = spec.pad_lo
    dh, dw = spec.dilation
    ho, wo = spec.out_hw
    y = cuda.device_array((n, c_out, ho, wo), dtype=x.dtype, stream=stream)
    bias_arr = _bias_arg(bias, x.dtype, stream)
    w2 = w.reshape(c_in, m)
    x3 = x.reshape(n, c_in, height * width)
    row_bytes = groups * m * width * x.dtype.itemsize
    images, rows = _bands(n, height, width, row_bytes, _scratch_limit())
    n_cols = images * rows * width
    cols = cuda.device_array((groups, m, n_cols), dtype=x.dtype,
                             stream=stream)
    cols1, y1 = cols.reshape(cols.size), y.reshape(y.size)
    gemm = gemm_kernel(_load_wt, _load_x, _store_cols, x.dtype)
    col2im = _col2im_kernel(x.dtype)
    axes = _axis_solver(sh, dh) + _axis_solver(sw, dw)
    for b0 in range(0, n, images):
        b1 = min(n, b0 + images)
        for ih0 in range(0, height, rows):
            ih1 = min(height, ih0 + rows)
            band = (ih1 - ih0) * width
            big_n = (b1 - b0) * band
            gemm[gemm_grid(m, big_n, groups), GEMM.threads, stream](
                w2, x3, cols, (c_in_g, band, ih0 * width, b0), m, big_n,
                c_in_g)
            geom = ((width, c_out_g, kh, kw, ho, wo, sh, sw, ph, pw, dh, dw)
                    + axes + (b0, b1 - b0, ih0, ih1, int(ih0 == 0), c_out, m,
                              n_cols))
            total = (b1 - b0) * c_out * ho * wo
            col2im[grid(total, _COL2IM_THREADS), _COL2IM_THREADS, stream](
                cols1, bias_arr, y1, geom)
    return y


# --------------------------------------------------------------------------
# Contract
# --------------------------------------------------------------------------

# Both kernels compute every valid configuration (as the CPU ones).
KERNELS = {("conv_transpose2d", "direct"): Kernel(device_entry(_direct)),
           ("conv_transpose2d", "im2col"): Kernel(device_entry(_im2col))}


def _direct_signature(dtype):
    from numba import types
    t = numba_type(dtype)
    a1 = t[::1]
    return (a1, a1, a1, a1, types.UniTuple(types.int64, _DIRECT_GEOM))


def _gemm_signature(dtype):
    from numba import types
    t = numba_type(dtype)
    return (t[:, ::1], t[:, :, ::1], t[:, :, ::1],
            types.UniTuple(types.int64, _GEMM_GEOM), types.int64,
            types.int64, types.int64)


def _col2im_signature(dtype):
    from numba import types
    t = numba_type(dtype)
    return (t[::1], t[::1], t[::1], types.UniTuple(types.int64, _COL2IM_GEOM))


def _pack_signature(dtype):
    from numba import types
    t = numba_type(dtype)
    return (t[::1], t[::1], types.int64, types.int64, types.int64)


REPORT = [
    ReportEntry("transposed", "pack_weights", _pack_kernel, _pack_signature,
                _THREADS, note="direct's weights as (C_in, kH, kW, Co pad)"),
    ReportEntry("transposed", "direct", _direct_kernel, _direct_signature,
                _THREADS, note=f"gather, {_OB} output channels per thread"),
    ReportEntry("transposed", "im2col_gemm",
                lambda dtype: gemm_kernel(_load_wt, _load_x, _store_cols,
                                          dtype),
                _gemm_signature, GEMM.threads,
                note="cols[g] = W_g^T @ X_g on the GEMM core"),
    ReportEntry("transposed", "col2im", _col2im_kernel, _col2im_signature,
                _COL2IM_THREADS, note="gather of the column matrix + bias"),
]
