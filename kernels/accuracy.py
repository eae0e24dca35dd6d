"""Documented forward error bounds of every algorithm.

A result ``y`` of algorithm ``a`` in dtype ``t`` satisfies, elementwise,

    |y - y_ref| <= c[a, t] * u * (|x| * |w|) + tiny

where ``y_ref`` is the float64 reference, ``u = eps / 2`` the unit
roundoff of ``t``, ``|x| * |w|`` the same convolution applied to the
absolute values (computed by ``reference``), and ``tiny`` a guard for
results that are exactly zero.  For algorithms marked ``NORMWISE`` (whose
rounding errors are spread over the whole output, FFT) the bound uses the
largest entry of ``|x| * |w|`` instead of each entry.

The constants were measured (max over random problems of the observed
``|y - y_ref| / (u * (|x| * |w|))``), then given headroom; the README's
accuracy table lists them with the shapes they were measured on.
"""

from __future__ import annotations

import numpy as np

# c[algorithm][dtype name]; filled in from measurements (see README).
ERROR_CONSTANTS = {
    "direct": {"float32": 128.0, "float64": 128.0},
    "im2col": {"float32": 160.0, "float64": 160.0},
    "winograd": {"float32": 128.0, "float64": 128.0},
    "fft": {"float32": 40.0, "float64": 40.0},
}

NORMWISE = frozenset({"fft", "winograd"})


def unit_roundoff(dtype):
    return float(np.finfo(dtype).eps) / 2


def error_constant(algorithm, dtype):
    return ERROR_CONSTANTS[algorithm][np.dtype(dtype).name]


def error_bound(algorithm, dtype, abs_conv):
    """Elementwise bound on |y - y_ref| given ``abs_conv = |x| * |w|``."""
    abs_conv = np.asarray(abs_conv, dtype=np.float64)
    scale = abs_conv
    if algorithm in NORMWISE and abs_conv.size:
        scale = np.full_like(abs_conv, abs_conv.max())
    u = unit_roundoff(dtype)
    tiny = 8 * float(np.finfo(dtype).tiny)
    return error_constant(algorithm, dtype) * u * scale + tiny


def error_in_bound_units(algorithm, dtype, y, y_ref, abs_conv):
    """max |y - y_ref| / (u * scale): the observed constant c."""
    abs_conv = np.asarray(abs_conv, dtype=np.float64)
    if abs_conv.size == 0:
        return 0.0
    scale = abs_conv
    if algorithm in NORMWISE:
        scale = np.full_like(abs_conv, abs_conv.max())
    err = np.abs(np.asarray(y, np.float64) - np.asarray(y_ref, np.float64))
    denom = unit_roundoff(dtype) * scale + float(np.finfo(dtype).tiny)
    return float(np.max(err / denom))
