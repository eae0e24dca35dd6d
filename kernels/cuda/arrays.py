"""Array operations the front ends need on device arrays, done on the device.

The public functions validate and reshape their arguments with NumPy when
they are NumPy arrays.  When they are CUDA device arrays (anything with
``__cuda_array_interface__``: numba device arrays, CuPy arrays, torch CUDA
tensors) the same steps run here, so no data crosses to the host:
making a strided view contiguous, padding modes (reflect, replicate,
circular), the zero-upsampling and filter flip of transposed convolution
through a forward algorithm, the finiteness test that sends NaN/Inf input
to ``direct``, empty results with a bias, the bias gradient, and
axis permutations.  Each is one gather kernel: one thread per output
element, no atomics (the finiteness flag is written by any thread that
finds a non-finite value, with the same value: a benign race).

``KERNELS[("device_array_ops", None)].run(name, *args)`` calls operation
``name`` (see :data:`OPS`); :mod:`kernels._arrays` is the front ends' side.
"""

from __future__ import annotations

import math

import numpy as np

from .._dispatch import Kernel
from ._runtime import ReportEntry, as_device_array, cuda, grid, numba_type
from ._runtime import to_device as _to_device

__all__ = ["OPS", "KERNELS", "REPORT"]

_THREADS = 256
_MODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}


# --------------------------------------------------------------------------
# Kernels (4-D unless the name says otherwise)
# --------------------------------------------------------------------------

@cuda.jit(device=True, inline="always")
def _unravel4(e, shape):
    l = e % shape[3]
    e //= shape[3]
    k = e % shape[2]
    e //= shape[2]
    j = e % shape[1]
    return e // shape[1], j, k, l


@cuda.jit
def _copy4(src, dst):
    """dst = src (src any strides, dst C-contiguous, same shape)."""
    e = cuda.grid(1)
    if e < dst.size:
        i, j, k, l = _unravel4(e, dst.shape)
        dst[i, j, k, l] = src[i, j, k, l]


@cuda.jit(device=True, inline="always")
def _source_index(axis, axes, i, j, k, l):
    """The index of ``src``'s axis ``axis``: dst axis p reads src axis
    axes[p] (selects, no local array: no stack frame)."""
    if axes[0] == axis:
        return i
    if axes[1] == axis:
        return j
    if axes[2] == axis:
        return k
    return l


@cuda.jit
def _permute4(src, dst, axes):
    """dst = src.transpose(axes), both 4-D."""
    e = cuda.grid(1)
    if e < dst.size:
        i, j, k, l = _unravel4(e, dst.shape)
        dst[i, j, k, l] = src[_source_index(0, axes, i, j, k, l),
                              _source_index(1, axes, i, j, k, l),
                              _source_index(2, axes, i, j, k, l),
                              _source_index(3, axes, i, j, k, l)]


@cuda.jit(device=True, inline="always")
def _source(i, n, lo, mode):
    """Index into an axis of length n for padded position i (-1: zero)."""
    t = i - lo
    if 0 <= t < n:
        return t
    if mode == 0:
        return -1
    if mode == 1:        # reflect, edge not repeated (|pad| < n checked)
        if t < 0:
            return -t
        return 2 * (n - 1) - t
    if mode == 2:        # replicate
        return 0 if t < 0 else n - 1
    return t % n         # circular (pad <= n checked)


@cuda.jit
def _pad4(src, dst, top, left, mode):
    e = cuda.grid(1)
    if e < dst.size:
        i, j, k, l = _unravel4(e, dst.shape)
        r = _source(k, src.shape[2], top, mode)
        c = _source(l, src.shape[3], left, mode)
        if r < 0 or c < 0:
            dst[i, j, k, l] = 0
        else:
            dst[i, j, k, l] = src[i, j, r, c]


@cuda.jit
def _upsample4(src, dst, sh, sw, crop_top, crop_left):
    """dst[n, c, i, j] = src[n, c, (i + ct) / sh, (j + cl) / sw] where both
    divide, else 0: the zero-upsampled (and cropped) input."""
    e = cuda.grid(1)
    if e < dst.size:
        n, c, i, j = _unravel4(e, dst.shape)
        ii = i + crop_top
        jj = j + crop_left
        if ii % sh == 0 and jj % sw == 0:
            dst[n, c, i, j] = src[n, c, ii // sh, jj // sw]
        else:
            dst[n, c, i, j] = 0


@cuda.jit
def _flip_swap4(w, dst, groups):
    """dst[g Co + o, c, i, j] = w[g Ci + c, o, kh-1-i, kw-1-j]: the forward
    filters of a transposed convolution."""
    e = cuda.grid(1)
    if e < dst.size:
        ko, c, i, j = _unravel4(e, dst.shape)
        c_out_g = w.shape[1]
        c_in_g = dst.shape[1]
        g = ko // c_out_g
        o = ko - g * c_out_g
        dst[ko, c, i, j] = w[g * c_in_g + c, o, w.shape[2] - 1 - i,
                             w.shape[3] - 1 - j]


@cuda.jit
def _flip2(src, dst):
    e = cuda.grid(1)
    if e < dst.size:
        i = e // dst.shape[1]
        j = e - i * dst.shape[1]
        dst[i, j] = src[src.shape[0] - 1 - i, src.shape[1] - 1 - j]


@cuda.jit
def _nonfinite_flag(flat, flag):
    e = cuda.grid(1)
    if e < flat.size:
        v = flat[e]
        if math.isnan(v) or math.isinf(v):
            flag[0] = 1


@cuda.jit
def _fill_bias4(dst, bias, has_bias):
    e = cuda.grid(1)
    if e < dst.size:
        i, j, k, l = _unravel4(e, dst.shape)
        dst[i, j, k, l] = bias[j] if has_bias else 0


@cuda.jit
def _sum_nhw(g, out):
    """out[k] = sum over n, h, w of g[n, k, h, w], summed in float64 in a
    fixed order and rounded once to out's dtype (one thread per channel:
    K is small and this runs once per backward call)."""
    k = cuda.grid(1)
    if k < g.shape[1]:
        acc = np.float64(0.0)
        for n in range(g.shape[0]):
            for i in range(g.shape[2]):
                for j in range(g.shape[3]):
                    acc += np.float64(g[n, k, i, j])
        out[k] = acc


# --------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------

def _launch(kernel, n):
    return kernel[grid(n, _THREADS), _THREADS]


def as_array(a):
    """A numba device array over ``a``'s memory (no copy)."""
    return as_device_array(a)


def is_c_contiguous(a):
    return bool(a.is_c_contiguous()) if hasattr(a, "is_c_contiguous") \
        else bool(np.asarray(a).flags.c_contiguous)


def contiguous(a):
    """``a`` if C-contiguous, else a C-contiguous device copy."""
    if is_c_contiguous(a):
        return a
    if a.ndim > 4:
        raise ValueError(f"device arrays of more than 4 dimensions are not "
                         f"supported here, got shape {a.shape}")
    out = cuda.device_array(a.shape, dtype=a.dtype)
    if a.size == 0:
        return out
    if a.ndim == 4:
        _launch(_copy4, a.size)(a, out)
        return out
    # Fewer axes: the same kernel through unit axes (views of both).
    shape4 = (1,) * (4 - a.ndim) + tuple(a.shape)
    src = _unit_axes_view(a, shape4)
    _launch(_copy4, a.size)(src, out.reshape(shape4))
    return out


def _unit_axes_view(a, shape4):
    """A strided device view of ``a`` with leading unit axes."""
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    if not isinstance(a, DeviceNDArray):     # the simulator's arrays
        return a.reshape(shape4) if is_c_contiguous(a) else \
            a[(None,) * (4 - a.ndim)]
    strides = (0,) * (4 - a.ndim) + tuple(a.strides)
    return DeviceNDArray(shape4, strides, a.dtype, gpu_data=a.gpu_data)


def copy(a):
    """A new C-contiguous device copy of ``a``."""
    if not is_c_contiguous(a):
        return contiguous(a)
    out = cuda.device_array(a.shape, dtype=a.dtype)
    out.copy_to_device(a)
    return out


def reshape(a, shape):
    return contiguous(a).reshape(tuple(shape))


def permute(a, axes):
    """``a.transpose(axes)`` as a new C-contiguous array (4-D)."""
    a = contiguous(a)
    shape = tuple(a.shape[ax] for ax in axes)
    out = cuda.device_array(shape, dtype=a.dtype)
    if a.size:
        _launch(_permute4, a.size)(a, out, tuple(int(v) for v in axes))
    return out


def pad(x, pads, mode):
    """``x`` (N, C, H, W) padded by ``pads = ((top, bottom), (left, right))``
    with ``mode`` (the front end checked the sizes)."""
    x = contiguous(x)
    (top, bottom), (left, right) = pads
    n, c, h, w = x.shape
    out = cuda.device_array((n, c, h + top + bottom, w + left + right),
                            dtype=x.dtype)
    if out.size:
        _launch(_pad4, out.size)(x, out, top, left, _MODES[mode])
    return out


def upsample(x, stride, up_hw, crop):
    """The zero-upsampled input of a transposed convolution, cropped by
    ``crop = (top, bottom, left, right)``."""
    x = contiguous(x)
    ct, cb, cl, cr = crop
    n, c = x.shape[:2]
    out = cuda.device_array((n, c, up_hw[0] - ct - cb, up_hw[1] - cl - cr),
                            dtype=x.dtype)
    if out.size:
        _launch(_upsample4, out.size)(x, out, stride[0], stride[1], ct, cl)
    return out


def flip_swap_filters(w, groups):
    """Forward filters ``(G Co, Ci, kH, kW)`` of transposed filters
    ``w (G Ci, Co, kH, kW)``: channels swapped per group, flipped."""
    w = contiguous(w)
    c_in, c_out_g, kh, kw = w.shape
    out = cuda.device_array((groups * c_out_g, c_in // groups, kh, kw),
                            dtype=w.dtype)
    if out.size:
        _launch(_flip_swap4, out.size)(w, out, groups)
    return out


def flip2(a):
    """``a[::-1, ::-1]`` of a 2-D array, contiguous."""
    a = contiguous(a)
    out = cuda.device_array(a.shape, dtype=a.dtype)
    if a.size:
        _launch(_flip2, a.size)(a, out)
    return out


def all_finite(a):
    """True when no entry of ``a`` is NaN or infinite."""
    a = contiguous(a)
    if a.size == 0:
        return True
    flag = cuda.to_device(np.zeros(1, np.int32))
    _launch(_nonfinite_flag, a.size)(a.reshape(a.size), flag)
    return int(flag.copy_to_host()[0]) == 0


def filled(shape, dtype, bias=None):
    """A device array of ``shape`` (N, K, H, W): zeros, plus ``bias[k]``."""
    out = cuda.device_array(tuple(shape), dtype=dtype)
    if out.size:
        has = bias is not None
        b = contiguous(bias) if has else cuda.to_device(np.zeros(1, dtype))
        _launch(_fill_bias4, out.size)(out, b, has)
    return out


def bias_gradient(grad_out, dtype):
    """``grad_out.sum(axis=(0, 2, 3))`` in float64, rounded once to ``dtype``."""
    g = contiguous(grad_out)
    out = cuda.device_array(g.shape[1], dtype=dtype)
    _launch(_sum_nhw, g.shape[1])(g, out)
    return out


def empty(shape, dtype):
    return cuda.device_array(tuple(shape), dtype=dtype)


def to_host(a):
    return a.copy_to_host()


def to_device(a):
    return _to_device(a)


OPS = {f.__name__: f for f in (as_array, contiguous, copy, reshape, permute, pad,
                               upsample, flip_swap_filters, flip2,
                               all_finite, filled, bias_gradient, empty,
                               to_host, to_device)}


def _run(name, *args):
    return OPS[name](*args)


KERNELS = {("device_array_ops", None): Kernel(_run)}


def _sig4(dtype, *extra):
    t = numba_type(dtype)
    return (t[:, :, :, :], t[:, :, :, ::1]) + extra


def _report():
    from numba import types
    i64 = types.int64
    one = lambda k: (lambda dtype: k)   # noqa: E731 - one dispatcher, any dtype

    def contiguous4(d):
        t = numba_type(d)
        return (t[:, :, :, ::1], t[:, :, :, ::1])

    def entry(name, kernel, signature):
        return ReportEntry("arrays", name, one(kernel), signature, _THREADS)

    return [
        entry("copy4", _copy4, lambda d: _sig4(d)),
        entry("permute4", _permute4,
              lambda d: contiguous4(d) + (types.UniTuple(i64, 4),)),
        entry("pad4", _pad4, lambda d: _sig4(d, i64, i64, i64)),
        entry("upsample4", _upsample4, lambda d: _sig4(d, i64, i64, i64, i64)),
        entry("flip_swap4", _flip_swap4, lambda d: contiguous4(d) + (i64,)),
        entry("flip2", _flip2,
              lambda d: (numba_type(d)[:, ::1], numba_type(d)[:, ::1])),
        entry("nonfinite_flag", _nonfinite_flag,
              lambda d: (numba_type(d)[::1], types.int32[::1])),
        entry("fill_bias4", _fill_bias4,
              lambda d: (numba_type(d)[:, :, :, ::1], numba_type(d)[::1],
                         types.boolean)),
        entry("sum_nhw", _sum_nhw,
              lambda d: (numba_type(d)[:, :, :, ::1], numba_type(d)[::1])),
    ]


REPORT = _report()
