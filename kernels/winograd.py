"""Winograd convolution: generated transforms, tiles, reusable weights.

``kernels.conv2d(..., algorithm="winograd")`` computes stride-1,
undilated convolutions with kernels of 1 to 7 taps per axis by the
minimal-filtering algorithm F(m x m, r x r) of Lavin & Gray (CVPR 2016):
the mathematics is backend-neutral (:mod:`kernels._winograd_math`), the
kernels are each backend's ``winograd`` module (:mod:`kernels.cpu.winograd`).
This module is the public face of what is specific to Winograd:

* :func:`cook_toom` / :func:`transform_matrices`: the transforms
  (A^T, G, B^T), generated exactly from :data:`INTERPOLATION_POINTS`;
* :func:`use_tile`: choose the output tile m for the calls in a block;
  :func:`tile_for` says which tile a kernel gets;
* :func:`transform_weights` + :func:`conv2d`: transform filters once and
  reuse them (inference), skipping the kernel transform on every call;
* :data:`ERROR_CONSTANTS_BY_TILE`, :func:`error_constant`: measured
  accuracy per tile.

Examples
--------
>>> import numpy as np
>>> from kernels import winograd
>>> rng = np.random.default_rng(0)
>>> x = rng.standard_normal((1, 8, 12, 12)).astype(np.float32)
>>> w = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
>>> tw = winograd.transform_weights(w, m=6)
>>> tw
TransformedWeights(F(6x6, 3x3), w_shape=(4, 8, 3, 3), groups=1, dtype=float32)
>>> y = winograd.conv2d(x, tw, padding=1)
>>> bool(np.array_equal(y, winograd.conv2d(x, w, padding=1, m=6)))  # same tile, same bits
True
"""

from __future__ import annotations

import functools

import numpy as np

from . import _arrays, _dispatch
from ._conv import run_conv2d, run_if_finite
from ._dispatch import ConvSpec
from ._validation import (UnsupportedConfiguration,
                          check_ndim, check_same_dtype, normalise_padding)
from ._weight_cache import transformed_weights
from ._winograd_math import (DEFAULT_TILE_BY_KERNEL, ERROR_CONSTANTS_BY_TILE,
                             INTERPOLATION_POINTS, MAX_ALPHA,
                             SUPPORTED_KERNEL_SIZES, Tile, TransformedWeights,
                             cook_toom, error_constant, kernel_size_rule,
                             requested_tile, tile_for, transform_matrices,
                             use_tile)
from .geometry import effective_kernel_size

__all__ = [
    "DEFAULT_TILE_BY_KERNEL", "ERROR_CONSTANTS_BY_TILE", "INTERPOLATION_POINTS",
    "MAX_ALPHA", "SUPPORTED_KERNEL_SIZES", "Tile", "TransformedWeights",
    "clear_cache", "conv2d", "cook_toom", "error_constant", "requested_tile",
    "tile_for", "transform_matrices", "transform_weights", "use_tile",
]


def _as_filters(w, backend):
    """Filters as a 4-D array; 1-D filters (K, C, k) become (K, C, 1, k)."""
    w = _arrays.as_input("w", w, _dispatch.check_backend(backend))
    check_ndim("w", w, (3, 4), "(K, C // groups, kH, kW) or (K, C // groups, k)")
    if w.ndim == 3:
        return _arrays.reshape(w, (w.shape[0], w.shape[1], 1, w.shape[2]))
    return w


def _tile_or_raise(kernel_hw, m):
    if any(k not in SUPPORTED_KERNEL_SIZES for k in kernel_hw):
        raise UnsupportedConfiguration(kernel_size_rule(kernel_hw))
    return tile_for(kernel_hw, m)


def transform_weights(w, m=None, groups=1, backend="cpu"):
    """Run the Winograd kernel transform once, for reuse across calls.

    Parameters
    ----------
    w : ndarray, shape (K, C // groups, kH, kW) or (K, C // groups, k)
        Filters, float32 or float64; copied, so later changes to ``w`` do
        not affect the result.
    m : int or (int, int), optional
        Output tile; default :data:`DEFAULT_TILE_BY_KERNEL` per kernel size.
    groups : int
        As in :func:`kernels.conv2d`; must divide K.
    backend : str
        The backend whose kernels will use the transform.

    Returns
    -------
    TransformedWeights
        Accepted by :func:`conv2d` in place of ``w``.

    Raises
    ------
    UnsupportedConfiguration
        A kernel size outside :data:`SUPPORTED_KERNEL_SIZES`.
    ValueError
        A tile with more than :data:`MAX_ALPHA` points; groups not dividing K.
    """
    w = _as_filters(w, backend)
    if int(groups) < 1 or w.shape[0] % int(groups):
        raise ValueError(f"groups ({groups}) must be >= 1 and divide the output "
                         f"channels w.shape[0] ({w.shape[0]})")
    tile = _tile_or_raise(w.shape[2:], m)
    if _arrays.is_device_array(w):
        own = _arrays.device_op(backend, "copy", w)
    else:
        own = np.array(w, copy=True, order="C")
        own.setflags(write=False)
    kernel = _dispatch.load("winograd_transform_weights", backend, "winograd")
    return kernel.run(own, tile, int(groups))


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=None, *,
           m=None, backend="cpu"):
    """Winograd 2-D convolution with a chosen tile or pre-transformed filters.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W)
    w : ndarray (K, C // groups, kH, kW) or TransformedWeights
        With :class:`TransformedWeights` (from :func:`transform_weights`)
        the kernel transform is skipped; its tile and groups are used.
    bias : ndarray (K,), optional
    stride, dilation : 1
        Anything else raises UnsupportedConfiguration.
    padding : int, (int, int), "valid" or "same"
        Zero padding, as :func:`kernels.conv2d`.
    groups : int, optional
        Default 1 (or that of the transformed weights, which it must match).
    m : int or (int, int), optional
        Output tile for an ndarray ``w`` (:func:`use_tile`); must be None
        with transformed weights (their tile is fixed).

    Returns
    -------
    y : ndarray (N, K, H_out, W_out), dtype of x

    Notes
    -----
    An ndarray ``w`` goes through ``kernels.conv2d(..., algorithm=
    "winograd")``, whose transformed filters are cached per array anyway;
    :class:`TransformedWeights` saves the cache's content check and makes
    the reuse explicit.
    """
    if not isinstance(w, TransformedWeights):
        from ._conv import conv2d as front_end
        with use_tile(m):
            return front_end(x, w, bias, stride, padding, dilation,
                             1 if groups is None else groups,
                             algorithm="winograd", backend=backend)
    if m is not None:
        raise ValueError("m must be None with TransformedWeights: their tile "
                         f"is fixed ({w.tile})")
    if groups is not None and int(groups) != w.groups:
        raise ValueError(f"groups={groups} differs from the transformed "
                         f"weights' groups={w.groups}")
    x = _arrays.as_input("x", x, _dispatch.check_backend(backend))
    check_ndim("x", x, (3, 4), "(N, C, H, W)")
    if bias is not None:
        bias = _arrays.as_input("bias", bias, backend)
    check_same_dtype(x=x, w=w.weights, bias=bias)
    unbatched = x.ndim == 3
    if unbatched:
        x = _arrays.reshape(x, (1,) + tuple(x.shape))
    K, cg, kh, kw = w.w_shape
    if x.shape[1] != cg * w.groups:
        raise ValueError(f"x has {x.shape[1]} channels; the transformed weights "
                         f"expect {cg * w.groups} (C // groups = {cg}, groups = "
                         f"{w.groups})")
    if bias is not None and bias.shape != (K,):
        raise ValueError(f"bias must have shape ({K},), got {bias.shape}")
    for name, value in (("stride", stride), ("dilation", dilation)):
        if np.any(np.asarray(value) != 1):
            raise UnsupportedConfiguration(
                f"algorithm='winograd' cannot compute this configuration: "
                f"Winograd computes {name} 1 only, got {name}={value!r}")
    pads = normalise_padding(padding, 2, (kh, kw), (1, 1), (1, 1))
    for axis, (size, k, (lo, hi)) in enumerate(zip(x.shape[2:], (kh, kw), pads)):
        if effective_kernel_size(k, 1) > size + lo + hi:
            raise ValueError(f"kernel size {k} along spatial axis {axis} is larger "
                             f"than the padded input ({size} + {lo} + {hi})")
    padding4 = pads[0] + pads[1]
    spec = ConvSpec(tuple(x.shape), tuple(w.w_shape), (1, 1), padding4, (1, 1),
                    w.groups, x.dtype)
    y = None
    if 0 not in x.shape:
        kernel = _dispatch.load("conv2d_pretransformed", backend, "winograd")
        x_run = _arrays.contiguous(x)
        y = run_if_finite(kernel, functools.partial(kernel.run, spec),
                          x_run, w, bias)
    if y is None:
        # The front-end's handling: empty results, non-finite input to direct.
        y = run_conv2d(spec, x, w.weights, bias, "winograd", backend)
    return y[0] if unbatched else y


def clear_cache():
    """Forget the transformed filters cached by ``kernels.conv2d`` and the
    scratch buffers of the calling thread."""
    transformed_weights.clear("winograd")
    for backend in _dispatch.backends():
        # None also when the backend's toolkit is not installed.
        kernel = _dispatch.find("winograd_clear_workspace", backend, "winograd")
        if kernel is not None:
            kernel.run()
