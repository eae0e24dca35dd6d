"""Float64 ground truth for pooling, from ``sliding_window_view``.

Never imports ``kernels``; written from the definitions (PyTorch's
semantics) rather than for speed.  Inputs of any float dtype are
converted to float64; results are float64 (indices int64).

Per spatial axis, with input size ``n``, kernel ``k``, stride ``s``,
padding ``p``, dilation ``d`` and ``k_eff = d (k - 1) + 1``:

* output size ``floor_or_ceil((n + 2p - k_eff) / s) + 1``; with
  ``ceil_mode`` a last window that would start in the right padding is
  dropped, and a window may run past the padded input (it is clipped);
* the input is padded by ``p`` on both sides, and on the right by as many
  more elements as the last ``ceil_mode`` window needs; windows are the
  strided, dilated views of that padded array;
* max: the padding is ``-inf``; ``np.max`` propagates NaN.  The argmax is
  the flat input index ``h W + w`` of the first maximum in row-major
  window order among the window's *input* elements, or of the last NaN
  (PyTorch's update ``if v > best or isnan(v)``), or -1 for a window that
  holds no input element at all;
* average: the padding is zero; the divisor is the number of window
  elements inside ``[-p, n + p)`` (``count_include_pad``), or inside the
  input ``[0, n)`` (otherwise), or ``divisor_override``; counted with
  the same windows over an indicator array.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["pool_output_size", "max_pool1d", "max_pool2d", "avg_pool1d",
           "avg_pool2d", "global_avg_pool2d"]


def _as_tuple(value, nsp):
    if isinstance(value, (tuple, list)):
        if len(value) != nsp:
            raise ValueError(f"expected {nsp} values, got {value!r}")
        return tuple(int(v) for v in value)
    return (int(value),) * nsp


def pool_output_size(n, k, s, p, d=1, ceil_mode=False):
    """PyTorch's pooling output size; ValueError where PyTorch refuses."""
    if n < 1 or k < 1 or s < 1 or d < 1 or p < 0:
        raise ValueError("sizes must be positive (padding non-negative)")
    if 2 * p > k:
        raise ValueError(f"padding {p} is more than half the kernel {k}")
    k_eff = d * (k - 1) + 1
    num = n + 2 * p - k_eff
    if ceil_mode:
        out = -((-num) // s) + 1        # ceil for either sign
        # math.ceil(num / s) for num < 0 rounds towards 0, PyTorch's
        # (num + s - 1) // s floors: identical, as both equal ceil.
        if (out - 1) * s >= n + p:
            out -= 1
    else:
        out = num // s + 1
    if out < 1:
        raise ValueError(f"output size {out} < 1")
    return out


def _windows(a, fill, kernel, stride, padding, dilation, out):
    """Strided, dilated windows ``(..., Ho, Wo, kh, kw)`` of ``a`` padded with fill."""
    widths = [(0, 0)] * (a.ndim - 2)
    for axis in range(2):
        need = (out[axis] - 1) * stride[axis] + dilation[axis] * (kernel[axis] - 1) + 1
        size = a.shape[a.ndim - 2 + axis] + 2 * padding[axis]
        widths.append((padding[axis], padding[axis] + max(0, need - size)))
    padded = np.pad(a, widths, mode="constant", constant_values=fill)
    k_eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    win = sliding_window_view(padded, k_eff, axis=(-2, -1))
    win = win[..., ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]
    return win[..., :out[0], :out[1], :, :]


def _geometry(x, nsp, kernel_size, stride, padding, dilation, ceil_mode):
    kernel = _as_tuple(kernel_size, nsp)
    stride = kernel if stride is None else _as_tuple(stride, nsp)
    padding = _as_tuple(padding, nsp)
    dilation = _as_tuple(dilation, nsp)
    out = tuple(pool_output_size(n, k, s, p, d, ceil_mode) for n, k, s, p, d
                in zip(x.shape[-nsp:], kernel, stride, padding, dilation))
    lift = (1,) * (2 - nsp)
    return (lift + kernel, lift + stride, (0,) * (2 - nsp) + padding,
            lift + dilation, lift + out)


def _lift(x, nsp):
    x = np.asarray(x, dtype=np.float64)
    return x[..., None, :] if nsp == 1 else x


def _drop(y, nsp):
    return y[..., 0, :] if nsp == 1 else y


def _max_pool(nsp, x, kernel_size, stride, padding, dilation, ceil_mode,
              return_indices):
    x = _lift(x, nsp)
    kernel, stride, padding, dilation, out = _geometry(
        x, 2, *(_lift_args(nsp, kernel_size, stride, padding, dilation)),
        ceil_mode)
    win = _windows(x, -np.inf, kernel, stride, padding, dilation, out)
    y = win.max(axis=(-2, -1))
    if not return_indices:
        return _drop(y, nsp)
    h, w = x.shape[-2:]
    plane = np.arange(h * w, dtype=np.int64).reshape(h, w)
    iwin = _windows(plane, -1, kernel, stride, padding, dilation, out)
    iwin = np.broadcast_to(iwin, win.shape)
    flat_v = win.reshape(win.shape[:-2] + (-1,))
    flat_i = iwin.reshape(iwin.shape[:-2] + (-1,))
    valid = flat_i >= 0
    nan = np.isnan(flat_v) & valid
    values = np.where(valid, flat_v, -np.inf)
    best = values.max(axis=-1, keepdims=True)
    first_max = np.argmax(valid & (values == best), axis=-1)
    last_nan = flat_v.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    pick = np.where(nan.any(axis=-1), last_nan, first_max)
    idx = np.take_along_axis(flat_i, pick[..., None], axis=-1)[..., 0]
    idx = np.where(valid.any(axis=-1), idx, -1)
    return _drop(y, nsp), _drop(idx, nsp)


def _lift_args(nsp, kernel_size, stride, padding, dilation):
    """Per-axis arguments of a 1-D call as 2-D ones (H axis: 1, 1, 0, 1)."""
    if nsp == 2:
        return kernel_size, stride, padding, dilation
    k = _as_tuple(kernel_size, 1)
    return ((1,) + k, None if stride is None else (1,) + _as_tuple(stride, 1),
            (0,) + _as_tuple(padding, 1), (1,) + _as_tuple(dilation, 1))


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool1d`` in float64 (indices: int64)."""
    if stride is None:
        stride = kernel_size
    return _max_pool(1, x, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode=False, return_indices=False):
    """``torch.nn.functional.max_pool2d`` in float64 (indices: int64)."""
    return _max_pool(2, x, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def _avg_pool(nsp, x, kernel_size, stride, padding, ceil_mode,
              count_include_pad, divisor_override):
    x = _lift(x, nsp)
    if nsp == 1 and stride is None:
        stride = kernel_size
    kernel, stride, padding, dilation, out = _geometry(
        x, 2, *(_lift_args(nsp, kernel_size, stride, padding, 1)), ceil_mode)
    sums = _windows(x, 0.0, kernel, stride, padding, dilation,
                    out).sum(axis=(-2, -1))
    if divisor_override is not None:
        return _drop(sums / float(divisor_override), nsp)
    h, w = x.shape[-2:]
    if count_include_pad:
        # Ones over the input and its padding, zeros beyond (ceil_mode).
        region = np.ones((h + 2 * padding[0], w + 2 * padding[1]))
        counts = _windows(region, 0.0, kernel, stride, (0, 0), dilation, out)
    else:
        counts = _windows(np.ones((h, w)), 0.0, kernel, stride, padding,
                          dilation, out)
    return _drop(sums / counts.sum(axis=(-2, -1)), nsp)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """``torch.nn.functional.avg_pool1d`` in float64 (plus divisor_override)."""
    return _avg_pool(1, x, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """``torch.nn.functional.avg_pool2d`` in float64."""
    return _avg_pool(2, x, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override)


def global_avg_pool2d(x):
    """Mean over the last two axes, kept as size-1 axes."""
    return np.asarray(x, dtype=np.float64).mean(axis=(-2, -1), keepdims=True)
