"""Public transposed convolution: validate once, normalise, dispatch.

``conv_transpose1d``/``conv_transpose2d`` follow
``torch.nn.functional.conv_transpose1d/2d`` on NumPy arrays.  A transposed
convolution is the adjoint (the gradient with respect to the input) of
the convolution with the same ``w``, stride, padding, dilation and
groups: for every ``x`` and ``y`` of matching shapes
``<conv2d(x, w), y> = <x, conv_transpose2d(y, w)>``.

Algorithms (``algorithm=``):

* ``"direct"``, ``"im2col"``: own kernels, :mod:`kernels.cpu.transposed`
  (gather form; GEMM + col2im).  Every configuration.
* ``"winograd"``, ``"fft"``: through the forward convolution of the same
  name.  The transposed convolution equals a stride-1 correlation of the
  zero-upsampled input (``s - 1`` zeros between samples) with the
  spatially flipped, channel-swapped kernel ``w'[g Co + o, c] =
  w[g Ci + c, o, ::-1, ::-1]`` (dilation ``d``), padded by
  ``d (k - 1) - p`` at the low end (negative padding crops).  Available
  when the forward algorithm is built and accepts the upsampled problem
  (Winograd: stride 1, undilated kernels of the sizes it supports).
* ``"auto"``: at stride 1 the forward problem is no larger than the
  transposed one, so it runs through the forward convolution with the
  forward chooser's pick; at larger strides ``direct`` (small problems),
  ``fft`` (large kernels) or ``im2col``
  (:func:`choose_transposed_algorithm`).
"""

from __future__ import annotations

import numpy as np

from . import _arrays, _dispatch
from ._choose import (VIA_FORWARD, choose_transposed_algorithm,
                      transposed_algorithms, transposed_unsupported_reason)
from ._conv import run_conv2d
from ._dispatch import TransposeSpec, check_backend
from ._validation import (UnsupportedConfiguration,
                          check_algorithm, check_groups, check_ndim,
                          check_same_dtype, int_tuple)
from .geometry import conv_transpose_output_size

__all__ = ["conv_transpose1d", "conv_transpose2d", "transposed_algorithms",
           "choose_transposed_algorithm", "run_conv_transpose2d"]


def _via_forward(spec, x, w, bias, algorithm, backend):
    """Transposed convolution as a stride-1 forward correlation."""
    (up_h, up_w), (ct, cb, cl, cr), fspec = spec.forward_problem()
    if _arrays.is_device_array(x):
        z = _arrays.device_op(backend, "upsample", x, spec.stride,
                              (up_h, up_w), (ct, cb, cl, cr))
        w_f = _arrays.device_op(backend, "flip_swap_filters", w, spec.groups)
        return run_conv2d(fspec, z, w_f, bias, algorithm, backend)
    n, c_in, h, wd = spec.x_shape
    sh, sw = spec.stride
    if (sh, sw) == (1, 1):
        z = x            # nothing to upsample: no zeroed copy of x
    else:
        z = np.zeros((n, c_in, up_h, up_w), dtype=x.dtype)
        z[:, :, ::sh, ::sw] = x
    z = z[:, :, ct:up_h - cb, cl:up_w - cr]
    return run_conv2d(fspec, z, _forward_filters(w, spec.groups), bias,
                      algorithm, backend)


def _forward_filters(w, groups):
    """``w'[g Co + o, c] = w[g Ci + c, o]`` flipped in both spatial axes,
    for NumPy ``w``: the CPU backend's tiled copy when it is built (a
    host-memory job whichever backend computes), else NumPy's."""
    kernel = _dispatch.find("conv_transpose2d_filters", "cpu")
    if kernel is not None:
        return kernel.run(w, groups)
    c_in, c_out_g, kh, kw = w.shape
    c_in_g = c_in // groups
    w_f = (w.reshape(groups, c_in_g, c_out_g, kh, kw)
           .transpose(0, 2, 1, 3, 4)
           .reshape(groups * c_out_g, c_in_g, kh, kw)[:, :, ::-1, ::-1])
    return np.ascontiguousarray(w_f)


def run_conv_transpose2d(spec, x, w, bias, algorithm="auto", backend="cpu"):
    """Dispatch a validated problem (used by conv2d_backward as well)."""
    algorithm = check_algorithm(algorithm)
    check_backend(backend)
    through_forward = algorithm in VIA_FORWARD
    if algorithm == "auto":
        algorithm, through_forward = choose_transposed_algorithm(spec, backend)
    else:
        reason = transposed_unsupported_reason(algorithm, spec, backend)
        if reason is not None:
            raise UnsupportedConfiguration(
                f"algorithm={algorithm!r} cannot compute this transposed "
                f"convolution: {reason}; use algorithm='auto' or one of "
                f"{', '.join(repr(a) for a in transposed_algorithms(backend))}")
    if spec.is_empty():
        return _arrays.filled(spec.out_shape, spec.dtype, bias, like=x)
    x, w, bias = (_arrays.contiguous(a) for a in (x, w, bias))
    if through_forward and not (_arrays.all_finite(x) and _arrays.all_finite(w)):
        # The forward algorithm would spread NaN/Inf over whole tiles.
        algorithm, through_forward = "direct", False
    if not through_forward:
        kernel = _dispatch.load("conv_transpose2d", backend, algorithm)
        return kernel.run(spec, x, w, bias)
    return _via_forward(spec, x, w, bias, algorithm, backend)


def _conv_transpose(nsp, x, w, bias, stride, padding, output_padding, groups,
                    dilation, algorithm, backend):
    layout = "(N, C_in, L)" if nsp == 1 else "(N, C_in, H, W)"
    wlayout = ("(C_in, C_out // groups, k)" if nsp == 1
               else "(C_in, C_out // groups, kH, kW)")
    check_backend(backend)
    x = _arrays.as_input("x", x, backend)
    w = _arrays.as_input("w", w, backend)
    if bias is not None:
        bias = _arrays.as_input("bias", bias, backend)
    dtype = check_same_dtype(x=x, w=w, bias=bias)
    check_ndim("x", x, (nsp + 1, nsp + 2), layout)
    check_ndim("w", w, (nsp + 2,), wlayout)
    algorithm = check_algorithm(algorithm)
    groups = check_groups(groups)

    unbatched = x.ndim == nsp + 1
    if unbatched:
        x = _arrays.reshape(x, (1,) + tuple(x.shape))
    if 0 in x.shape[2:]:
        raise ValueError(f"x must have non-empty spatial axes, got shape "
                         f"{x.shape}")
    c_in = x.shape[1]
    if w.shape[0] != c_in:
        raise ValueError(
            f"w.shape[0] ({w.shape[0]}) must equal the input channels "
            f"x.shape[1] ({c_in}); the weight of a transposed convolution is "
            f"{wlayout}")
    if c_in % groups:
        raise ValueError(f"groups ({groups}) must divide the input channels "
                         f"x.shape[1] ({c_in})")
    kernel = w.shape[2:]
    if min(kernel) < 1 or w.shape[1] < 1:
        raise ValueError(f"w must have non-empty output-channel and kernel "
                         f"axes, got shape {w.shape}")
    c_out = w.shape[1] * groups
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},) (w.shape[1] * "
                         f"groups output channels), got {bias.shape}")
    stride = int_tuple("stride", stride, nsp, 1)
    padding = int_tuple("padding", padding, nsp, 0)
    output_padding = int_tuple("output_padding", output_padding, nsp, 0)
    dilation = int_tuple("dilation", dilation, nsp, 1)
    out = []
    for axis in range(nsp):
        try:
            out.append(conv_transpose_output_size(
                x.shape[2 + axis], kernel[axis], stride[axis], padding[axis],
                output_padding[axis], dilation[axis]))
        except ValueError as exc:
            raise ValueError(f"along spatial axis {axis}: {exc}") from None

    if nsp == 1:
        x4 = _arrays.reshape(x, (x.shape[0], x.shape[1], 1, x.shape[2]))
        w4 = _arrays.reshape(w, (w.shape[0], w.shape[1], 1, w.shape[2]))
        one = (1,)
        spec = TransposeSpec(tuple(x4.shape), tuple(w4.shape), one + stride,
                             (0,) + padding, one + tuple(out), one + dilation,
                             groups, dtype)
    else:
        x4, w4 = x, w
        spec = TransposeSpec(tuple(x.shape), tuple(w.shape), stride, padding,
                             tuple(out), dilation, groups, dtype)
    y = run_conv_transpose2d(spec, x4, w4, bias, algorithm, backend)
    if nsp == 1:
        y = _arrays.reshape(y, (y.shape[0], y.shape[1], y.shape[3]))
    return y[0] if unbatched else y


_DOC = """{dim}-D transposed convolution, as ``torch.nn.functional.conv_transpose{nd}d``.

    Parameters
    ----------
    x : ndarray, shape {xshape}
        Input, float32 or float64; an unbatched {xunb} is accepted too.
    w : ndarray, shape {wshape}
        Filters (note: input channels first), same dtype as ``x``.
    bias : ndarray, shape (C_out,), optional
    stride, dilation : int or tuple of {nd} ints, >= 1
    padding : int or tuple of {nd} ints, >= 0
        ``dilation (k - 1) - padding`` zeros of implicit padding; equivalently
        ``padding`` rows/columns cropped from each side of the full result.
    output_padding : int or tuple of {nd} ints
        Extra size added at the high end of each axis (to pick one of the
        ``stride`` input sizes a strided convolution maps to the same size);
        must be smaller than the stride or the dilation.
    groups : int
        Divides C_in; output channels are ``w.shape[1] * groups``.
    algorithm : {{"auto", "direct", "im2col", "winograd", "fft"}}
        ``"winograd"``/``"fft"`` run the forward algorithm on the
        zero-upsampled input (see :mod:`kernels._transposed`).
    backend : {{"cpu", "cuda"}}

    Returns
    -------
    y : ndarray, shape {yshape}, dtype of ``x``

    Raises
    ------
    TypeError
        Integer, complex or mixed dtypes; non-integer sizes.
    ValueError
        Wrong ndim, channel/groups mismatch, stride/dilation < 1, negative
        padding, output_padding not smaller than stride or dilation,
        non-positive output size.
    UnsupportedConfiguration
        ``algorithm`` cannot do this configuration.
    NotImplementedError
        ``backend`` has no transposed kernels yet.

    Notes
    -----
    Output size per axis ``(n - 1) s - 2 p + d (k - 1) + output_padding + 1``
    (:func:`kernels.geometry.conv_transpose_output_size`).  The result is
    the adjoint of ``conv{nd}d`` with the same ``w``, stride, padding,
    dilation and groups.

    Examples
    --------
    >>> import numpy as np, kernels
    >>> x = np.ones({ex_x}, dtype=np.float32)
    >>> w = np.ones({ex_w}, dtype=np.float32)
    >>> kernels.conv_transpose{nd}d(x, w, stride=2).shape
    {ex_y}
"""


def conv_transpose1d(x, w, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, algorithm="auto", backend="cpu"):
    return _conv_transpose(1, x, w, bias, stride, padding, output_padding,
                           groups, dilation, algorithm, backend)


def conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, algorithm="auto", backend="cpu"):
    return _conv_transpose(2, x, w, bias, stride, padding, output_padding,
                           groups, dilation, algorithm, backend)


conv_transpose1d.__doc__ = _DOC.format(
    dim="1", nd=1, xshape="(N, C_in, L)", xunb="(C_in, L)",
    wshape="(C_in, C_out // groups, k)", yshape="(N, C_out, L_out)",
    ex_x="(1, 2, 8)", ex_w="(2, 4, 2)", ex_y="(1, 4, 16)")
conv_transpose2d.__doc__ = _DOC.format(
    dim="2", nd=2, xshape="(N, C_in, H, W)", xunb="(C_in, H, W)",
    wshape="(C_in, C_out // groups, kH, kW)", yshape="(N, C_out, H_out, W_out)",
    ex_x="(1, 2, 8, 8)", ex_w="(2, 4, 2, 2)", ex_y="(1, 4, 16, 16)")
