"""Backward pass of the 2-D convolution, built from the forward algorithms.

For ``y = conv2d(x, w, bias, stride=s, padding=p, dilation=d,
groups=G)`` and a gradient ``gy = dL/dy``:

* ``dL/dx`` is the adjoint of the convolution applied to ``gy``: a
  transposed convolution with the same ``w``, stride, padding, dilation and
  groups, whose output size is pinned to ``x``'s (what ``output_padding``
  does; rows/columns of ``x`` that no window reaches get zero).
* ``dL/dw[k, c, i, j] = sum_{n, u, v} gy[n, k, u, v] x_pad[n, g C/G + c,
  u s + i d, v s + j d]``: a correlation of ``x`` with ``gy`` in which the
  batch axis is summed over like a channel axis, the forward stride
  becomes the dilation and the forward dilation becomes the stride.  With
  ``x`` viewed as a batch of ``C/G`` images of ``G N`` channels and ``gy``
  as ``K`` filters of ``N`` channels and size ``(Ho, Wo)``, it is one
  grouped forward convolution whose ``(C/G, K, kH, kW)`` output is
  ``dL/dw`` transposed.
* ``dL/dbias[k] = sum_{n, u, v} gy[n, k, u, v]`` (float64 sum).

Both products reuse the forward machinery: ``dL/dx`` runs through
:func:`kernels._transposed.run_conv_transpose2d` (at stride 1 with
``"auto"``, the forward convolution and its chooser), ``dL/dw`` through
:func:`kernels._conv.run_conv2d` on the swapped problem, except for
``"auto"``/``"im2col"`` on a backend with a ``conv2d_weight_grad``
kernel: on the CPU the forward im2col patch gather feeds one GEMM per
chunk, ``gy (K, N Ho Wo) @ patches^T`` (PyTorch's order; the swapped
problem would be many skinny GEMMs), :mod:`kernels.cpu.backward`.  Each algorithm's error
bound carries over.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _arrays, _dispatch
from ._conv import run_conv2d
from ._dispatch import ConvSpec, TransposeSpec, check_backend
from ._transposed import run_conv_transpose2d
from ._validation import (check_algorithm, check_groups, check_ndim,
                          check_same_dtype, int_tuple, normalise_padding)
from .geometry import effective_kernel_size

__all__ = ["conv2d_backward", "weight_gradient_problem"]


def _algorithms(algorithm):
    """(grad_x algorithm, grad_w algorithm) from a name or a pair."""
    if isinstance(algorithm, (tuple, list)):
        if len(algorithm) != 2:
            raise ValueError(
                f"algorithm must be a name or a (grad_x, grad_w) pair of "
                f"names, got {algorithm!r}")
        return check_algorithm(algorithm[0]), check_algorithm(algorithm[1])
    algorithm = check_algorithm(algorithm)
    return algorithm, algorithm


def weight_gradient_problem(spec, out_hw):
    """The forward problem that computes the weight gradient of ``spec``.

    Returns ``(crop, wspec)``: ``crop = (bottom rows, right columns)`` of
    ``x`` no window reaches (dropped before the call), and the
    :class:`~kernels._dispatch.ConvSpec` of the forward problem on
    ``x' = (C/G, G N, H', W')`` and ``gy' = (K, N, Ho, Wo)``.
    """
    n, c, h, w = spec.x_shape
    k, c_g, kh, kw = spec.w_shape
    pads, crop, sizes = [], [], []
    for size, kk, s, d, out, (lo, hi) in zip(
            (h, w), (kh, kw), spec.stride, spec.dilation, out_hw,
            (spec.padding[:2], spec.padding[2:])):
        # Pad (or crop) the high side so that exactly k taps come out.
        hi_needed = effective_kernel_size(kk, d) - 1 + s * (out - 1) + 1 - size - lo
        crop.append(max(0, -hi_needed))
        pads += [lo, max(0, hi_needed)]
        sizes.append(size - crop[-1])
    wspec = ConvSpec((c_g, spec.groups * n, sizes[0], sizes[1]),
                     (k, n) + tuple(out_hw), tuple(spec.dilation), tuple(pads),
                     tuple(spec.stride), spec.groups, spec.dtype)
    return tuple(crop), wspec


def _weight_gradient(grad_out, x, spec, algorithm, backend):
    # A backend's own weight-gradient kernel (the CPU's: im2col's patch
    # gather feeding one GEMM per chunk) serves "auto" and "im2col".
    kernel = (_dispatch.find("conv2d_weight_grad", backend, "im2col")
              if algorithm in ("auto", "im2col") else None)
    if kernel is not None:
        return kernel.run(spec, _arrays.contiguous(grad_out),
                          _arrays.contiguous(x))
    if _arrays.is_device_array(x):
        return _weight_gradient_swapped_device(grad_out, x, spec, algorithm,
                                               backend)
    return _weight_gradient_swapped(grad_out, x, spec, algorithm, backend)


def _weight_gradient_swapped_device(grad_out, x, spec, algorithm, backend):
    """:func:`_weight_gradient_swapped` on device arrays: one forward
    problem per group, each on channel slices made contiguous on the
    device, written into its rows of ``grad_w``."""
    n, c, h, w = spec.x_shape
    k, c_g, kh, kw = spec.w_shape
    g = spec.groups
    k_g = k // g
    ops = functools.partial(_arrays.device_op, backend)
    group_spec = ConvSpec((n, c_g, h, w), (k_g, c_g, kh, kw), spec.stride,
                          spec.padding, spec.dilation, 1, spec.dtype)
    (crop_h, crop_w), wspec = weight_gradient_problem(group_spec,
                                                      grad_out.shape[2:])
    grad_w = ops("empty", spec.w_shape, spec.dtype)
    for gi in range(g):
        xg = ops("contiguous", x[:, gi * c_g:(gi + 1) * c_g,
                                 :h - crop_h, :w - crop_w])
        gyg = ops("contiguous", grad_out[:, gi * k_g:(gi + 1) * k_g])
        gw_t = run_conv2d(wspec, ops("permute", xg, (1, 0, 2, 3)),
                          ops("permute", gyg, (1, 0, 2, 3)), None, algorithm,
                          backend)
        # Rows gi*k_g ... of grad_w are one contiguous block.
        grad_w[gi * k_g:(gi + 1) * k_g].copy_to_device(
            ops("permute", gw_t, (1, 0, 2, 3)))
    return grad_w


def _weight_gradient_swapped(grad_out, x, spec, algorithm, backend):
    n, c, h, w = spec.x_shape
    k, c_g, kh, kw = spec.w_shape
    g = spec.groups
    (crop_h, crop_w), wspec = weight_gradient_problem(spec, grad_out.shape[2:])
    # x'[c, gi N + b] = x[b, gi C/G + c]; gy'[k, b] = gy[b, k].
    x_t = (x[:, :, :h - crop_h, :w - crop_w]
           .reshape(n, g, c_g, h - crop_h, w - crop_w)
           .transpose(2, 1, 0, 3, 4)
           .reshape(wspec.x_shape))
    gy_t = grad_out.transpose(1, 0, 2, 3)
    gw_t = run_conv2d(wspec, x_t, gy_t, None, algorithm, backend)
    if gw_t.shape[2:] != (kh, kw):  # pragma: no cover - geometry guarantees it
        raise AssertionError(f"weight gradient of shape {gw_t.shape}")
    return np.ascontiguousarray(gw_t.transpose(1, 0, 2, 3))


GRADIENTS = ("x", "w", "bias")


def _check_grads(grads):
    """The tuple of gradient names asked for (a subset of GRADIENTS)."""
    names = (grads,) if isinstance(grads, str) else tuple(grads)
    unknown = [g for g in names if g not in GRADIENTS]
    if unknown or not names:
        raise ValueError(f"grads must be a non-empty subset of {GRADIENTS}, "
                         f"got {grads!r}")
    return names


def conv2d_backward(grad_out, x, w, stride=1, padding=0, dilation=1, groups=1,
                    algorithm="auto", backend="cpu", grads=GRADIENTS):
    """Gradients of :func:`kernels.conv2d` with respect to x, w and bias.

    Parameters
    ----------
    grad_out : ndarray, shape (N, K, H_out, W_out) or unbatched (K, H_out, W_out)
        Gradient of the loss with respect to ``conv2d(x, w, ...)``; same
        dtype as ``x``.
    x : ndarray, shape (N, C, H, W) or (C, H, W)
        The forward input.
    w : ndarray, shape (K, C // groups, kH, kW)
        The forward filters.
    stride, padding, dilation, groups
        As in the forward call (``padding`` int, pair, ``"valid"`` or
        ``"same"``; zero padding).
    algorithm : str or (str, str)
        ``"auto"`` or one of :data:`kernels.ALGORITHMS`, for both products,
        or a ``(grad_x, grad_w)`` pair.  ``grad_x`` runs as a transposed
        convolution (:func:`kernels.conv_transpose2d`), ``grad_w`` as a
        forward convolution with a ``(H_out, W_out)`` kernel, so e.g.
        ``"winograd"`` rarely applies to ``grad_w``.
    backend : {"cpu", "cuda"}
    grads : str or sequence of {"x", "w", "bias"}
        The gradients to compute (as the ``output_mask`` of PyTorch's
        ``convolution_backward``); the others are returned as None.  A
        layer whose input needs no gradient (a network's first) asks for
        ``("w", "bias")``.

    Returns
    -------
    grad_x : ndarray, shape and dtype of ``x``, or None
    grad_w : ndarray, shape and dtype of ``w``, or None
    grad_bias : ndarray, shape (K,), or None

    Raises
    ------
    TypeError, ValueError
        As :func:`kernels.conv2d`; ``grad_out`` not of the forward output's
        shape or dtype.
    UnsupportedConfiguration
        The requested algorithm cannot compute one of the two products.

    Examples
    --------
    >>> import numpy as np, kernels
    >>> x = np.ones((1, 2, 5, 5)); w = np.ones((3, 2, 3, 3))
    >>> gy = np.ones((1, 3, 3, 3))
    >>> gx, gw, gb = kernels.conv2d_backward(gy, x, w)
    >>> gx.shape, gw.shape, gb
    ((1, 2, 5, 5), (3, 2, 3, 3), array([9., 9., 9.]))
    """
    check_backend(backend)
    grads = _check_grads(grads)
    x = _arrays.as_input("x", x, backend)
    w = _arrays.as_input("w", w, backend)
    grad_out = _arrays.as_input("grad_out", grad_out, backend)
    dtype = check_same_dtype(x=x, w=w, grad_out=grad_out)
    check_ndim("x", x, (3, 4), "(N, C, H, W) or (C, H, W)")
    check_ndim("w", w, (4,), "(K, C // groups, kH, kW)")
    alg_x, alg_w = _algorithms(algorithm)
    groups = check_groups(groups)
    unbatched = x.ndim == 3
    if grad_out.ndim != x.ndim:
        raise ValueError(f"grad_out must have x's number of dimensions "
                         f"({x.ndim}), got shape {grad_out.shape}")
    if unbatched:
        x = _arrays.reshape(x, (1,) + tuple(x.shape))
        grad_out = _arrays.reshape(grad_out, (1,) + tuple(grad_out.shape))
    n, c, h, wd = x.shape
    k, c_g, kh, kw = w.shape
    if c % groups or k % groups or c_g * groups != c:
        raise ValueError(
            f"x.shape[1] ({c}) must equal w.shape[1] ({c_g}) * groups "
            f"({groups}) and groups must divide w.shape[0] ({k})")
    if min(kh, kw, h, wd) < 1:
        raise ValueError(f"x and w must have non-empty spatial axes, got "
                         f"{x.shape} and {w.shape}")
    stride = int_tuple("stride", stride, 2, 1)
    dilation = int_tuple("dilation", dilation, 2, 1)
    pads = normalise_padding(padding, 2, (kh, kw), dilation, stride)
    for axis, (size, kk, d, (lo, hi)) in enumerate(zip((h, wd), (kh, kw),
                                                        dilation, pads)):
        if effective_kernel_size(kk, d) > size + lo + hi:
            raise ValueError(
                f"kernel size along spatial axis {axis} (dilated: "
                f"{effective_kernel_size(kk, d)}) is larger than the padded "
                f"input ({size + lo + hi})")
    spec = ConvSpec(tuple(x.shape), tuple(w.shape), stride,
                    pads[0] + pads[1], dilation, groups, dtype)
    if grad_out.shape != spec.out_shape:
        want = spec.out_shape[1:] if unbatched else spec.out_shape
        got = grad_out.shape[1:] if unbatched else grad_out.shape
        raise ValueError(f"grad_out must have the shape of the forward output "
                         f"{want}, got {got}")

    grad_x = grad_w = grad_bias = None
    if "bias" in grads:
        grad_bias = _bias_gradient(grad_out, dtype, backend)
    empty = n == 0 or 0 in grad_out.shape[2:]
    if "x" in grads:
        if empty:
            grad_x = _arrays.zeros(x.shape, dtype, like=x)
        else:
            tspec = TransposeSpec(tuple(grad_out.shape), tuple(w.shape),
                                  stride, (pads[0][0], pads[1][0]), (h, wd),
                                  dilation, groups, dtype)
            grad_x = run_conv_transpose2d(tspec, grad_out, w, None, alg_x,
                                          backend)
        if unbatched:
            grad_x = grad_x[0]
    if "w" in grads:
        grad_w = (_arrays.zeros(w.shape, dtype, like=x) if empty else
                  _weight_gradient(grad_out, x, spec, alg_w, backend))
    return grad_x, grad_w, grad_bias


def _bias_gradient(grad_out, dtype, backend):
    if _arrays.is_device_array(grad_out):
        return _arrays.device_op(backend, "bias_gradient", grad_out, dtype)
    return grad_out.sum(axis=(0, 2, 3), dtype=np.float64).astype(dtype)
