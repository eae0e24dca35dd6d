"""Float64 ground truth for convolution, built on ``scipy.signal``.

Everything here is written to be obviously right rather than fast, and never
imports ``kernels``: the tests hold every algorithm of ``kernels`` to these
functions.  Inputs of any float dtype are converted to float64 and results
are float64.

``conv1d`` / ``conv2d`` follow ``torch.nn.functional.conv1d/conv2d`` (with
``padding_mode`` of ``torch.nn.Conv1d/Conv2d``).  Along each spatial axis,
with zero-based indices,

    y[n, k, i] = bias[k] + sum_{c, j} x_pad[n, g C/G + c, s i + d j] w[k, c, j]

where ``G = groups``, ``g = k // (K / G)`` is the group of output channel
``k``, ``c`` runs over the ``C / G`` channels of that group, ``j`` over the
kernel taps, ``s`` is the stride, ``d`` the dilation and ``x_pad`` the input
padded by ``p_lo`` and ``p_hi`` elements (zeros, or filled by
``padding_mode``).  The output length is
``floor((L + p_lo + p_hi - d (k - 1) - 1) / s) + 1``.

How the sum is computed, one step each:

* padding: ``numpy.pad`` (``zeros`` -> ``constant``, ``reflect`` ->
  ``reflect``, ``replicate`` -> ``edge``, ``circular`` -> ``wrap``);
* the sum over channels and taps: ``scipy.signal.correlate(...,
  mode="valid", method="direct")`` of the ``(C/G, *spatial)`` block of a
  group with the ``(C/G, *kernel)`` filter, whose channel axis has the full
  length and so collapses to one;
* stride: the stride-1 result subsampled, ``[::s]``;
* dilation: the stride-1 dilated result, split by phase.  Output ``t = r +
  d m`` (``0 <= r < d``) only reads inputs ``t + d j = r + d (m + j)``, so
  the outputs of phase ``r`` are the undilated correlation of the input
  subsampled as ``x_pad[r::d]``.  (Inserting zeros into the kernel instead
  would be as exact for finite inputs but would turn an infinite input
  under a gap of the kernel into ``inf * 0 = nan``, which the dilated
  convolution never computes.)

``correlate`` / ``convolve`` are ``scipy.signal``'s with ``method="direct"``
in float64: they *are* the definition that ``kernels.correlate/convolve``
promise to match.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.signal

__all__ = ["conv1d", "conv2d", "correlate", "convolve"]

_NUMPY_PAD_MODE = {"zeros": "constant", "reflect": "reflect",
                   "replicate": "edge", "circular": "wrap"}


def _as_tuple(name, value, nsp):
    """An int or a sequence of ``nsp`` ints as a tuple of ``nsp`` ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != nsp:
            raise ValueError(f"{name} must be an int or {nsp} ints, got {value!r}")
        return tuple(int(v) for v in value)
    return (int(value),) * nsp


def _padding_pairs(padding, kernel, dilation, stride):
    """Per-axis ``(lo, hi)`` padding, with torch's rule for ``"same"``."""
    nsp = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * nsp
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError("padding='same' needs stride 1")
            # torch: total d (k - 1), total // 2 low, the rest high.
            totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return [(t // 2, t - t // 2) for t in totals]
        raise ValueError(f"padding must be an int, a tuple, 'valid' or 'same', "
                         f"got {padding!r}")
    return [(p, p) for p in _as_tuple("padding", padding, nsp)]


def _dilated_valid_correlation(block, filt, dilation):
    """Stride-1 valid correlation of ``block`` (C, *sp) with ``filt`` (C, *k).

    Returns the ``(*out)`` array ``z[t] = sum_{c, j} block[c, t + d j]
    filt[c, j]`` (multi-index ``t`` and ``j``), computed phase by phase.
    """
    spatial, kernel = block.shape[1:], filt.shape[1:]
    out_shape = tuple(n - d * (k - 1) for n, k, d in zip(spatial, kernel, dilation))
    z = np.empty(out_shape, dtype=np.float64)
    for phase in itertools.product(*(range(min(d, t)) for d, t in zip(dilation, out_shape))):
        sub = (slice(None),) + tuple(slice(r, None, d) for r, d in zip(phase, dilation))
        out = tuple(slice(r, None, d) for r, d in zip(phase, dilation))
        z[out] = scipy.signal.correlate(block[sub], filt, mode="valid",
                                        method="direct")[0]
    return z


def _conv(nsp, x, w, bias, stride, padding, dilation, groups, padding_mode):
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if x.ndim not in (nsp + 1, nsp + 2) or w.ndim != nsp + 2:
        raise ValueError(f"x must be {nsp + 1}-D or {nsp + 2}-D and w "
                         f"{nsp + 2}-D, got {x.shape} and {w.shape}")
    unbatched = x.ndim == nsp + 1
    if unbatched:
        x = x[None]
    n_batch, c_in = x.shape[:2]
    k_out, c_group = w.shape[:2]
    kernel = w.shape[2:]
    if c_in % groups or k_out % groups or c_group * groups != c_in:
        raise ValueError(f"channels do not match: x {x.shape}, w {w.shape}, "
                         f"groups {groups}")
    stride = _as_tuple("stride", stride, nsp)
    dilation = _as_tuple("dilation", dilation, nsp)
    pads = _padding_pairs(padding, kernel, dilation, stride)
    if padding_mode not in _NUMPY_PAD_MODE:
        raise ValueError(f"unknown padding_mode {padding_mode!r}")

    x_pad = np.pad(x, [(0, 0), (0, 0)] + pads, mode=_NUMPY_PAD_MODE[padding_mode])
    for size, k, d in zip(x_pad.shape[2:], kernel, dilation):
        if d * (k - 1) + 1 > size:
            raise ValueError("the dilated kernel is larger than the padded input")

    out_spatial = tuple((size - d * (k - 1) - 1) // s + 1 for size, k, d, s
                        in zip(x_pad.shape[2:], kernel, dilation, stride))
    subsample = tuple(slice(None, None, s) for s in stride)
    k_per_group = k_out // groups
    y = np.empty((n_batch, k_out) + out_spatial, dtype=np.float64)
    for n in range(n_batch):
        for k in range(k_out):
            g = k // k_per_group
            block = x_pad[n, g * c_group:(g + 1) * c_group]
            y[n, k] = _dilated_valid_correlation(block, w[k], dilation)[subsample]
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64)
        y = y + bias.reshape((1, k_out) + (1,) * nsp)
    return y[0] if unbatched else y


def conv1d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    """1-D convolution (cross-correlation) as ``torch.nn.functional.conv1d``.

    Parameters
    ----------
    x : array_like, shape (N, C, L) or (C, L)
    w : array_like, shape (K, C // groups, k)
    bias : array_like, shape (K,), optional
    stride, dilation : int or 1-tuple
    padding : int, 1-tuple, ``"valid"`` or ``"same"``
    groups : int
    padding_mode : {"zeros", "reflect", "replicate", "circular"}

    Returns
    -------
    y : float64 ndarray, shape (N, K, L_out) or (K, L_out)

    Notes
    -----
    ``y[n, k, i] = bias[k] + sum_{c, j} x_pad[n, g C/G + c, s i + d j]
    w[k, c, j]`` (see the module docstring).
    """
    return _conv(1, x, w, bias, stride, padding, dilation, groups, padding_mode)


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    """2-D convolution (cross-correlation) as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
    w : array_like, shape (K, C // groups, kH, kW)
    bias : array_like, shape (K,), optional
    stride, dilation : int or 2-tuple
    padding : int, 2-tuple, ``"valid"`` or ``"same"``
    groups : int
    padding_mode : {"zeros", "reflect", "replicate", "circular"}

    Returns
    -------
    y : float64 ndarray, shape (N, K, H_out, W_out) or (K, H_out, W_out)

    Notes
    -----
    ``y[n, k, i, j] = bias[k] + sum_{c, a, b} x_pad[n, g C/G + c,
    s_h i + d_h a, s_w j + d_w b] w[k, c, a, b]`` (see the module docstring).
    """
    return _conv(2, x, w, bias, stride, padding, dilation, groups, padding_mode)


def correlate(in1, in2, mode="full"):
    """``scipy.signal.correlate(in1, in2, mode, method="direct")`` in float64.

    ``z[k] = sum_l in1[l + k - (n2 - 1)] in2[l]`` in ``full`` mode (1-D;
    out-of-range ``in1`` reads as zero); ``valid`` keeps the full overlaps,
    ``same`` the centre with ``in1``'s shape.
    """
    in1 = np.asarray(in1, dtype=np.float64)
    in2 = np.asarray(in2, dtype=np.float64)
    return scipy.signal.correlate(in1, in2, mode=mode, method="direct")


def convolve(in1, in2, mode="full"):
    """``scipy.signal.convolve(in1, in2, mode, method="direct")`` in float64.

    ``z[k] = sum_l in1[l] in2[k - l]`` in ``full`` mode (1-D; out-of-range
    reads as zero); modes as :func:`correlate`.
    """
    in1 = np.asarray(in1, dtype=np.float64)
    in2 = np.asarray(in2, dtype=np.float64)
    return scipy.signal.convolve(in1, in2, mode=mode, method="direct")
