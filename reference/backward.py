"""Gradients of the 2-D convolution and of pooling, in float64, by definition.

* ``conv2d_input_grad``: the adjoint of the convolution applied to
  ``grad_out``, a transposed convolution whose output size is pinned to
  ``x``'s (:func:`reference.conv_transpose2d` with the output padding that
  gives it).
* ``conv2d_weight_grad``: ``dL/dw[k, c, i, j] = sum_{n, u, v} gy[n, k, u,
  v] x_pad[n, g C/G + c, u s + i d, v s + j d]``, one tensor contraction
  per filter tap.
* ``max_pool2d_backward``: each ``grad_out`` entry added to the input its
  window's max came from (PyTorch's tie and NaN rules, through
  :func:`reference.max_pool2d`'s indices).
* ``avg_pool2d_backward``: each ``grad_out`` entry divided by its window's
  divisor and added to every input of the window (zero padding,
  ``ceil_mode=False``, ``count_include_pad=True``: the divisor is kH kW).
"""

from __future__ import annotations

import numpy as np

from .pooling import max_pool2d
from .transposed import conv_transpose2d

__all__ = ["conv2d_input_grad", "conv2d_weight_grad", "max_pool2d_backward",
           "avg_pool2d_backward"]


def _pairs(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _side_pads(padding):
    """((top, bottom), (left, right)) from an int, a symmetric pair or
    per-side pairs."""
    return [tuple(p) if isinstance(p, (tuple, list)) else (p, p)
            for p in _pairs(padding)]


def conv2d_input_grad(grad_out, x_shape, w, stride=1, padding=0, dilation=1,
                      groups=1):
    """Gradient of ``conv2d(x, w, ...)`` with respect to ``x``;
    ``padding`` an int, a per-axis pair or per-side pairs ``((top,
    bottom), (left, right))``.

    The unpadded transposed convolution of ``grad_out`` is the gradient
    with respect to the padded input; rows and columns no window reaches
    get zero, and the padding is cropped off.
    """
    grad_out = np.asarray(grad_out, dtype=np.float64)
    (sh, sw), (dh, dw) = _pairs(stride), _pairs(dilation)
    (pt, pb), (pl, pr) = _side_pads(padding)
    full = conv_transpose2d(grad_out, w, stride=(sh, sw), groups=groups,
                            dilation=(dh, dw))
    n, c, h, wd = x_shape
    grad_pad = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    rows = min(full.shape[2], grad_pad.shape[2])
    cols = min(full.shape[3], grad_pad.shape[3])
    grad_pad[:, :, :rows, :cols] = full[:, :, :rows, :cols]
    return grad_pad[:, :, pt:pt + h, pl:pl + wd]


def conv2d_weight_grad(x, grad_out, kernel_size, stride=1, padding=0,
                       dilation=1, groups=1):
    """Gradient of ``conv2d(x, w, ...)`` with respect to ``w`` of spatial
    size ``kernel_size``; ``padding`` is ``((top, bottom), (left, right))``
    or symmetric per axis."""
    x = np.asarray(x, dtype=np.float64)
    gy = np.asarray(grad_out, dtype=np.float64)
    (sh, sw), (dh, dw), (kh, kw) = map(_pairs, (stride, dilation, kernel_size))
    pads = _side_pads(padding)
    n, c, _, _ = x.shape
    k, ho, wo = gy.shape[1:]
    xp = np.pad(x, ((0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])))
    cg, kg = c // groups, k // groups
    g_out = gy.reshape(n, groups, kg, ho, wo)
    grad_w = np.zeros((k, cg, kh, kw))
    for i in range(kh):
        for j in range(kw):
            taps = xp[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh,
                      j * dw:j * dw + (wo - 1) * sw + 1:sw]
            taps = taps.reshape(n, groups, cg, ho, wo)
            grad_w[:, :, i, j] = np.einsum("ngkuv,ngcuv->gkc", g_out,
                                           taps).reshape(k, cg)
    return grad_w


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0,
                        dilation=1):
    """Gradient of ``max_pool2d(x, ...)`` with respect to ``x``."""
    x = np.asarray(x)
    _, indices = max_pool2d(x, kernel_size, stride, padding, dilation,
                            return_indices=True)
    n, c, h, w = x.shape
    planes = n * c
    grad_x = np.zeros((planes, h * w))
    flat = indices.reshape(planes, -1)
    rows = np.repeat(np.arange(planes), flat.shape[1])
    keep = flat.ravel() >= 0
    np.add.at(grad_x, (rows[keep], flat.ravel()[keep]),
              np.asarray(grad_out, np.float64).reshape(planes, -1).ravel()[keep])
    return grad_x.reshape(x.shape)


def avg_pool2d_backward(grad_out, x_shape, kernel_size, stride=None,
                        padding=0):
    """Gradient of ``avg_pool2d(x, ...)`` (``count_include_pad=True``,
    ``ceil_mode=False``) with respect to ``x``."""
    gy = np.asarray(grad_out, dtype=np.float64)
    kh, kw = _pairs(kernel_size)
    sh, sw = _pairs(kernel_size if stride is None else stride)
    ph, pw = _pairs(padding)
    n, c, h, w = x_shape
    ho, wo = gy.shape[2:]
    share = gy / (kh * kw)
    grad_pad = np.zeros((n, c, h + 2 * ph, w + 2 * pw))
    for i in range(kh):
        for j in range(kw):
            grad_pad[:, :, i:i + (ho - 1) * sh + 1:sh,
                     j:j + (wo - 1) * sw + 1:sw] += share
    return grad_pad[:, :, ph:ph + h, pw:pw + w]
