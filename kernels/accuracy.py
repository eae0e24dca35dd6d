"""Documented forward error bounds of every algorithm.

A result ``y`` of algorithm ``a`` in dtype ``t`` satisfies, elementwise,

    |y - y_ref| <= c[a, t] * u * (|x| * |w|) + tiny

where ``y_ref`` is the float64 reference, ``u = eps / 2`` the unit
roundoff of ``t``, ``|x| * |w|`` the same convolution applied to the
absolute values (computed by ``reference``), and ``tiny`` a guard for
results that are exactly zero.  For algorithms marked ``NORMWISE`` (FFT
and Winograd, whose rounding errors are spread over a whole transform or
tile) the bound uses one scale for every entry: the largest entry of the
full stride-1 ``|x| * |w|`` (:func:`normwise_scale`).

The constants were measured (max over random problems of the observed
``|y - y_ref| / (u * (|x| * |w|))``), then given headroom; the README's
accuracy table lists them with the shapes they were measured on.
"""

from __future__ import annotations

import numpy as np

from ._validation import MIXING_ALGORITHMS

# c[algorithm][dtype name]; filled in from measurements (see README).
ERROR_CONSTANTS = {
    "direct": {"float32": 128.0, "float64": 128.0},
    "im2col": {"float32": 160.0, "float64": 160.0},
    "winograd": {"float32": 128.0, "float64": 128.0},
    "fft": {"float32": 40.0, "float64": 40.0},
}

NORMWISE = frozenset(MIXING_ALGORITHMS)


def unit_roundoff(dtype):
    return float(np.finfo(dtype).eps) / 2


def error_constant(algorithm, dtype):
    return ERROR_CONSTANTS[algorithm][np.dtype(dtype).name]


def normwise_scale(x, w):
    """Largest entry the full stride-1 ``|x| * |w|`` can have: ``max|x| max_k sum|w[k]|``.

    FFT and Winograd compute every shift of a tile or transform, also those
    that stride, dilation or cropping then discard, and their rounding error
    follows all of them; this is the scale of their normwise bound (the
    largest returned entry of ``|x| * |w|`` can be far smaller, e.g. zero).
    """
    x = np.abs(np.asarray(x, dtype=np.float64))
    w = np.abs(np.asarray(w, dtype=np.float64))
    if x.size == 0 or w.size == 0:
        return 0.0
    per_filter = w.reshape(w.shape[0], -1).sum(axis=1) if w.ndim > 1 else w.sum()
    finite_x = x[np.isfinite(x)]
    return float((finite_x.max() if finite_x.size else 0.0) * np.max(per_filter))


def _scale(algorithm, abs_conv, normwise):
    abs_conv = np.asarray(abs_conv, dtype=np.float64)
    if algorithm not in NORMWISE or abs_conv.size == 0:
        return abs_conv
    top = abs_conv.max()
    if normwise is not None:
        top = max(top, float(normwise))
    return np.full_like(abs_conv, top)


def error_bound(algorithm, dtype, abs_conv, normwise=None):
    """Elementwise bound on |y - y_ref| given ``abs_conv = |x| * |w|``.

    ``normwise``: for the NORMWISE algorithms, the scale of the whole
    computed correlation (:func:`normwise_scale` of x and w); when omitted
    the largest entry of ``abs_conv`` is used.
    """
    scale = _scale(algorithm, abs_conv, normwise)
    u = unit_roundoff(dtype)
    tiny = 8 * float(np.finfo(dtype).tiny)
    return error_constant(algorithm, dtype) * u * scale + tiny


def error_in_bound_units(algorithm, dtype, y, y_ref, abs_conv, normwise=None):
    """max |y - y_ref| / (u * scale): the observed constant c."""
    scale = _scale(algorithm, abs_conv, normwise)
    if scale.size == 0:
        return 0.0
    err = np.abs(np.asarray(y, np.float64) - np.asarray(y_ref, np.float64))
    denom = unit_roundoff(dtype) * scale + float(np.finfo(dtype).tiny)
    return float(np.max(err / denom))
