"""Public pooling functions: validate once, reshape to planes, dispatch.

Semantics are those of ``torch.nn.functional.max_pool1d/2d`` and
``avg_pool1d/2d`` on NumPy arrays, including PyTorch's ``ceil_mode``
rule, its NaN and tie rules for the argmax and its divisor for windows
clipped by ``ceil_mode``; :func:`max_pool2d_backward` and
:func:`avg_pool2d_backward` are the gradients of the forward functions
with respect to ``x``.  The kernels live in ``kernels/<backend>/pooling.py``
(see :mod:`kernels.cpu.pooling`); a 1-D problem is a 2-D one with H = 1.

Accuracy: max pooling is exact.  Average pooling satisfies
``|y - y_ref| <= c u avg_pool(|x|)`` with ``u`` the unit roundoff of the
dtype and ``c = kh kw + 1`` (sums in the input's dtype, as PyTorch's),
see :func:`avg_pool_error_constant`; global average pooling sums float32
in float64 (``c = 2``, :func:`global_avg_pool_error_constant`).
"""

from __future__ import annotations

import numpy as np

from . import _arrays, _dispatch
from ._dispatch import PoolSpec
from ._validation import check_ndim, check_same_dtype, int_tuple
from .geometry import pool_output_size

__all__ = ["max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
           "global_avg_pool2d", "max_pool2d_backward", "avg_pool2d_backward",
           "avg_pool_error_constant", "global_avg_pool_error_constant",
           # for kernels.dask, which validates the same arguments:
           "pool_spec", "avg_spec", "check_flag", "pool_input"]


def avg_pool_error_constant(dtype, kernel_area):
    """Constant ``c`` of ``|y - y_ref| <= c u avg_pool(|x|)``.

    A ``kh x kw`` window is summed in the input's dtype, rows then columns
    (``kh + kw - 2`` additions on any term's path), then divided (float64)
    or multiplied by a rounded reciprocal (float32): at most ``kh + kw``
    roundings, which ``kernel_area + 1`` bounds for every window shape.
    """
    del dtype                           # the same rule for both dtypes
    return float(kernel_area) + 1.0


def global_avg_pool_error_constant(dtype, kernel_area):
    """Constant ``c`` of global average pooling's bound.

    float32 planes are summed in float64 (error ``kernel_area * 2**-53``,
    far below float32's ``u``) and rounded once: ``c = 2``; float64 as
    :func:`avg_pool_error_constant`.
    """
    if np.dtype(dtype) == np.float32:
        return 2.0
    return float(kernel_area) + 1.0


def _kernel(op, backend):
    """The backend's kernel for a pooling op (validates ``backend``)."""
    return _dispatch.load(op, _dispatch.check_backend(backend))


def check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _normalise_stride(stride, kernel, nsp):
    # torch: stride=None (or an empty list) means the kernel size.
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel
    return int_tuple("stride", stride, nsp, 1)


def pool_spec(nsp, x, kernel_size, stride, padding, dilation, ceil_mode):
    layout = "(N, C, L) or (C, L)" if nsp == 1 else "(N, C, H, W) or (C, H, W)"
    check_ndim("x", x, (nsp + 1, nsp + 2), layout)
    lead = x.shape[:-nsp]
    spatial = x.shape[-nsp:]
    if 0 in x.shape[-nsp - 1:]:
        raise ValueError(
            f"x must have non-zero channel and spatial sizes (only the batch "
            f"axis may be empty), got shape {x.shape}")
    kernel = int_tuple("kernel_size", kernel_size, nsp, 1)
    stride = _normalise_stride(stride, kernel, nsp)
    padding = int_tuple("padding", padding, nsp, 0)
    dilation = int_tuple("dilation", dilation, nsp, 1)
    ceil_mode = check_flag("ceil_mode", ceil_mode)
    out = []
    for axis in range(nsp):
        try:
            out.append(pool_output_size(spatial[axis], kernel[axis],
                                        stride[axis], padding[axis],
                                        dilation[axis], ceil_mode))
        except ValueError as exc:
            raise ValueError(f"along spatial axis {axis}: {exc}") from None
    pad1 = (1,) * (2 - nsp)
    return PoolSpec(nsp, tuple(lead), pad1 + tuple(spatial), pad1 + kernel,
                    pad1 + stride, (0,) * (2 - nsp) + padding, pad1 + dilation,
                    pad1 + tuple(out))


def _planes(a, spec):
    """``a`` (input-shaped) as C-contiguous ``(P, H, W)`` planes."""
    return _arrays.reshape(_arrays.contiguous(a),
                           (spec.n_planes,) + spec.in_hw)


def _out_planes(a, spec):
    """``a`` (output-shaped) as C-contiguous ``(P, Ho, Wo)`` planes."""
    return _arrays.reshape(_arrays.contiguous(a),
                           (spec.n_planes,) + spec.out_hw)


def pool_input(x, backend):
    """``x`` as an array ``backend`` takes (validates ``backend``)."""
    return _arrays.as_input("x", x, _dispatch.check_backend(backend))


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------

def _max_pool(nsp, x, kernel_size, stride, padding, dilation, ceil_mode,
              return_indices, backend):
    x = pool_input(x, backend)
    spec = pool_spec(nsp, x, kernel_size, stride, padding, dilation,
                      ceil_mode)
    return_indices = check_flag("return_indices", return_indices)
    kernel = _kernel("max_pool2d_with_indices" if return_indices
                     else "max_pool2d", backend)
    if spec.n_planes == 0:
        y = _arrays.empty(spec.out_shape, x.dtype, like=x)
        return ((y, _arrays.empty(spec.out_shape, np.int64, like=x))
                if return_indices else y)
    if return_indices:
        y, idx = kernel.run(spec, _planes(x, spec))
        return y.reshape(spec.out_shape), idx.reshape(spec.out_shape)
    return kernel.run(spec, _planes(x, spec)).reshape(spec.out_shape)


_MAX_DOC = """{dim}-D max pooling, as ``torch.nn.functional.max_pool{nd}d``.

    Parameters
    ----------
    x : ndarray, shape {xshape} or unbatched {xunb}
        float32 or float64; the output has the same dtype.
    kernel_size : int or tuple of {nd} ints, >= 1
    stride : int or tuple of {nd} ints, optional
        Defaults to ``kernel_size``.
    padding : int or tuple of {nd} ints
        Implicit ``-inf`` padding on both sides; at most ``kernel_size // 2``.
    dilation : int or tuple of {nd} ints, >= 1
    ceil_mode : bool
        Round the output size up; a window must still start inside the
        input or the left padding (PyTorch's rule).
    return_indices : bool
        Also return the int64 argmax of each window, flat in the input
        plane ({flat}).
    backend : {{"cpu", "cuda"}}

    Returns
    -------
    y : ndarray, shape {yshape}
    indices : ndarray of int64, same shape, only with ``return_indices``

    Raises
    ------
    TypeError
        Integer or complex ``x``; non-integer sizes; non-bool flags.
    ValueError
        Wrong ndim, empty channel/spatial axes, kernel/stride/dilation < 1,
        negative padding or more than half the kernel, window larger than
        the padded input.
    NotImplementedError
        ``backend`` has no pooling kernels yet.

    Notes
    -----
    NaN propagates. The argmax is the first maximum in window order
    (row-major), or the last NaN of the window; ``max_pool2d_backward``
    routes the gradient through the same argmax.  Output size
    :func:`kernels.geometry.pool_output_size`.

    Examples
    --------
    >>> import numpy as np, kernels
    >>> x = np.arange(16, dtype=np.float32).reshape({ex_shape})
    >>> kernels.max_pool{nd}d(x, 2){ex_out}
"""


def max_pool1d(x, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode=False, return_indices=False, backend="cpu"):
    return _max_pool(1, x, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, backend)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode=False, return_indices=False, backend="cpu"):
    return _max_pool(2, x, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, backend)


max_pool1d.__doc__ = _MAX_DOC.format(
    dim="1", nd=1, xshape="(N, C, L)", xunb="(C, L)", yshape="(N, C, L_out)",
    flat="``l``", ex_shape="1, 1, 16",
    ex_out="\n    array([[[ 1.,  3.,  5.,  7.,  9., 11., 13., 15.]]], dtype=float32)")
max_pool2d.__doc__ = _MAX_DOC.format(
    dim="2", nd=2, xshape="(N, C, H, W)", xunb="(C, H, W)",
    yshape="(N, C, H_out, W_out)", flat="``h * W + w``", ex_shape="1, 1, 4, 4",
    ex_out="\n    array([[[[ 5.,  7.],\n             [13., 15.]]]], dtype=float32)")


def _grad_out_planes(grad_out, x, spec, backend):
    grad_out = _arrays.as_input("grad_out", grad_out, backend)
    check_same_dtype(x=x, grad_out=grad_out)
    if grad_out.shape != spec.out_shape:
        raise ValueError(
            f"grad_out must have the shape of the forward output "
            f"{spec.out_shape} (for x of shape {x.shape}), got "
            f"{grad_out.shape}")
    return _out_planes(grad_out, spec)


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0,
                        dilation=1, ceil_mode=False, backend="cpu",
                        indices=None):
    """Gradient of :func:`max_pool2d` with respect to ``x``.

    Parameters
    ----------
    grad_out : ndarray, shape of ``max_pool2d(x, ...)``
        Gradient of the loss with respect to the pooled output; same dtype
        as ``x``.
    x : ndarray, shape (N, C, H, W) or (C, H, W)
        The forward input.
    kernel_size, stride, padding, dilation, ceil_mode
        As in the forward call.
    backend : {"cpu", "cuda"}
    indices : ndarray of int, optional
        The ``return_indices`` output of the forward call; without it the
        argmax is recomputed from ``x``.

    Returns
    -------
    grad_x : ndarray, shape and dtype of ``x``
        ``grad_x[argmax of window o] += grad_out[o]`` for every window.

    Notes
    -----
    The argmax follows PyTorch (first maximum in window order, last NaN).
    With many planes each thread recomputes the argmax and scatters inside
    the planes it owns (one pass); otherwise the argmax is computed in
    parallel first and every input row gathers its gradient.  A window
    that holds no input element (possible with dilation; its output is
    ``-inf`` whatever ``x``) contributes nothing, and neither does an
    index that is not a tap of its own window (PyTorch's placeholder index
    for such windows, which PyTorch's own backward follows).
    """
    x = pool_input(x, backend)
    spec = pool_spec(2, x, kernel_size, stride, padding, dilation, ceil_mode)
    g = _grad_out_planes(grad_out, x, spec, backend)
    kernel = _kernel("max_pool2d_backward" if indices is None
                     else "max_pool2d_backward_indices", backend)
    if spec.n_planes == 0:
        return _arrays.zeros(x.shape, x.dtype, like=x)
    if indices is not None and _arrays.is_device_array(indices):
        indices = _arrays.device_op(backend, "as_array", indices)
        if np.dtype(indices.dtype) != np.int64:
            raise TypeError(f"device indices must have dtype int64 (as "
                            f"return_indices gives), got {indices.dtype}")
        if tuple(indices.shape) != spec.out_shape:
            raise ValueError(f"indices must have the shape of grad_out "
                             f"{spec.out_shape}, got {tuple(indices.shape)}")
        gx = kernel.run(spec, g, _out_planes(indices, spec))
    elif indices is not None:
        indices = np.asarray(indices)
        if not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"indices must be an integer array, got dtype "
                            f"{indices.dtype}")
        if indices.shape != spec.out_shape:
            raise ValueError(f"indices must have the shape of grad_out "
                             f"{spec.out_shape}, got {indices.shape}")
        idx = _out_planes(indices.astype(np.int64, copy=False), spec)
        gx = kernel.run(spec, g, idx)
    else:
        gx = kernel.run(spec, g, _planes(x, spec))
    return gx.reshape(x.shape)


# --------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------

def _check_divisor(divisor_override):
    if divisor_override is None:
        return None
    if isinstance(divisor_override, (bool, np.bool_)) or not isinstance(
            divisor_override, (int, np.integer)):
        raise TypeError(f"divisor_override must be an int or None, got "
                        f"{divisor_override!r}")
    if divisor_override == 0:
        raise ValueError("divisor_override must not be zero")
    return int(divisor_override)


def avg_spec(nsp, x, kernel_size, stride, padding, ceil_mode,
              count_include_pad, divisor_override):
    spec = pool_spec(nsp, x, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = check_flag("count_include_pad", count_include_pad)
    divisor = _check_divisor(divisor_override)
    return spec, _divisors(spec, count_include_pad, divisor)


def avg_divisors(n, k, s, p, n_out, count_include_pad):
    """Per-output divisor factor along one axis, PyTorch's rule.

    The window ``[o s - p, o s - p + k)`` is clipped to the padded input
    ``[-p, n + p)`` (only ceil_mode windows reach past it); with
    ``count_include_pad`` that clipped length is the factor, else the
    length of its intersection with the input ``[0, n)``.
    """
    start = np.arange(n_out, dtype=np.int64) * s - p
    end = np.minimum(start + k, n + p)
    if count_include_pad:
        return (end - start).astype(np.float64)
    return (np.minimum(end, n) - np.maximum(start, 0)).astype(np.float64)


def _divisors(spec, count_include_pad, divisor):
    """Row and column factors of each output's divisor (float64)."""
    (kh, kw), (sh, sw), (ph, pw) = spec.kernel, spec.stride, spec.padding
    (height, width), (ho, wo) = spec.in_hw, spec.out_hw
    if divisor is not None:
        return np.full(ho, float(divisor)), np.ones(wo)
    return (avg_divisors(height, kh, sh, ph, ho, count_include_pad),
            avg_divisors(width, kw, sw, pw, wo, count_include_pad))


def _avg_pool(nsp, x, kernel_size, stride, padding, ceil_mode,
              count_include_pad, divisor_override, backend):
    x = pool_input(x, backend)
    spec, (div_h, div_w) = avg_spec(nsp, x, kernel_size, stride, padding,
                                     ceil_mode, count_include_pad,
                                     divisor_override)
    kernel = _kernel("avg_pool2d", backend)
    if spec.n_planes == 0:
        return _arrays.empty(spec.out_shape, x.dtype, like=x)
    y = kernel.run(spec, _planes(x, spec), div_h, div_w)
    return y.reshape(spec.out_shape)


_AVG_DOC = """{dim}-D average pooling, as ``torch.nn.functional.avg_pool{nd}d``.

    Parameters
    ----------
    x : ndarray, shape {xshape} or unbatched {xunb}
        float32 or float64; the output has the same dtype.
    kernel_size : int or tuple of {nd} ints, >= 1
    stride : int or tuple of {nd} ints, optional
        Defaults to ``kernel_size``.
    padding : int or tuple of {nd} ints
        Implicit zero padding on both sides; at most ``kernel_size // 2``.
    ceil_mode : bool
        Round the output size up (PyTorch's rule).
    count_include_pad : bool
        Count the padding in the divisor.
    divisor_override : int, optional
        Divide every window sum by this instead.
    backend : {{"cpu", "cuda"}}

    Returns
    -------
    y : ndarray, shape {yshape}

    Raises
    ------
    TypeError, ValueError
        As :func:`max_pool{nd}d`; ``divisor_override`` zero or not an int.

    Notes
    -----
    The divisor is PyTorch's: the window clipped to the padded input (a
    ``ceil_mode`` window that reaches past the right padding is shortened),
    further clipped to the input when ``count_include_pad`` is False.
    Error: ``|y - y_ref| <= c u avg_pool(|x|)`` with ``c`` from
    :func:`kernels._pooling.avg_pool_error_constant` (``kh kw + 1``).

    Examples
    --------
    >>> import numpy as np, kernels
    >>> x = np.arange(16, dtype=np.float32).reshape({ex_shape})
    >>> kernels.avg_pool{nd}d(x, 2){ex_out}
"""


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, backend="cpu"):
    return _avg_pool(1, x, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override, backend)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, backend="cpu"):
    return _avg_pool(2, x, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override, backend)


avg_pool1d.__doc__ = _AVG_DOC.format(
    dim="1", nd=1, xshape="(N, C, L)", xunb="(C, L)", yshape="(N, C, L_out)",
    ex_shape="1, 1, 16",
    ex_out="\n    array([[[ 0.5,  2.5,  4.5,  6.5,  8.5, 10.5, 12.5, 14.5]]], dtype=float32)")
avg_pool2d.__doc__ = _AVG_DOC.format(
    dim="2", nd=2, xshape="(N, C, H, W)", xunb="(C, H, W)",
    yshape="(N, C, H_out, W_out)", ex_shape="1, 1, 4, 4",
    ex_out="\n    array([[[[ 2.5,  4.5],\n             [10.5, 12.5]]]], dtype=float32)")


def avg_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True,
                        divisor_override=None, backend="cpu"):
    """Gradient of :func:`avg_pool2d` with respect to ``x``.

    Parameters
    ----------
    grad_out : ndarray, shape of ``avg_pool2d(x, ...)``, dtype of ``x``
    x : ndarray, shape (N, C, H, W) or (C, H, W)
        The forward input (only its shape and dtype are used).
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As in the forward call.
    backend : {"cpu", "cuda"}

    Returns
    -------
    grad_x : ndarray, shape and dtype of ``x``
        ``grad_x[i] = sum over windows o containing i of grad_out[o] / divisor[o]``,
        gathered per input row (float64 accumulation).
    """
    x = pool_input(x, backend)
    spec, (div_h, div_w) = avg_spec(2, x, kernel_size, stride, padding,
                                     ceil_mode, count_include_pad,
                                     divisor_override)
    g = _grad_out_planes(grad_out, x, spec, backend)
    kernel = _kernel("avg_pool2d_backward", backend)
    if spec.n_planes == 0:
        return _arrays.zeros(x.shape, x.dtype, like=x)
    gx = kernel.run(spec, g, div_h, div_w)
    return gx.reshape(x.shape)


def global_avg_pool2d(x, backend="cpu"):
    """Mean over H and W of each plane: ``(N, C, H, W) -> (N, C, 1, 1)``.

    Equals ``torch.nn.functional.adaptive_avg_pool2d(x, 1)``; an unbatched
    ``(C, H, W)`` gives ``(C, 1, 1)``.  Sums in float64 (four interleaved
    partial sums in a fixed order, independent of the thread count), then
    divides by ``H W`` and rounds once to the dtype of ``x``.

    Examples
    --------
    >>> import numpy as np, kernels
    >>> kernels.global_avg_pool2d(np.ones((2, 3, 4, 4))).shape
    (2, 3, 1, 1)
    """
    x = pool_input(x, backend)
    check_ndim("x", x, (3, 4), "(N, C, H, W) or (C, H, W)")
    if 0 in x.shape[-3:]:
        raise ValueError(
            f"x must have non-zero channel and spatial sizes (only the batch "
            f"axis may be empty), got shape {x.shape}")
    kernel = _kernel("global_avg_pool2d", backend)
    hw = x.shape[-2:]
    spec = PoolSpec(2, tuple(x.shape[:-2]), hw, hw, hw, (0, 0), (1, 1), (1, 1))
    if spec.n_planes == 0:
        return _arrays.empty(spec.out_shape, x.dtype, like=x)
    return kernel.run(spec, _planes(x, spec)).reshape(spec.out_shape)
