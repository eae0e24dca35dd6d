"""Argument checks shared by every public function.

Each check raises ``TypeError`` (wrong kind of value) or ``ValueError``
(right kind, wrong value) with a message that names the argument, quotes
the offending value and says what is allowed.
"""

from __future__ import annotations

import numbers

import numpy as np

from .geometry import same_padding

ALGORITHMS = ("direct", "im2col", "winograd", "fft")
BACKENDS = ("cpu", "cuda")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Algorithms whose arithmetic mixes every input of a tile into every output
# of it (Inf * 0 = NaN): with non-finite input they would spread NaN beyond
# the outputs whose window holds it, so such inputs go to "direct"; their
# rounding error is spread likewise, so their error bound is normwise
# (kernels.accuracy).
MIXING_ALGORITHMS = ("winograd", "fft")


class UnsupportedConfiguration(ValueError):
    """A valid configuration that the requested algorithm cannot compute.

    ``algorithm="auto"`` never picks an algorithm that would raise this.
    """


def as_float_array(name, a):
    """Return ``a`` as an ndarray of native float32/float64, or raise TypeError.

    Non-native byte order (``np.dtype('>f4')`` on a little-endian machine)
    is converted to the native dtype of the same kind, values unchanged;
    every other dtype (integer, bool, float16, complex) raises.
    """
    if not isinstance(a, np.ndarray):
        if np.isscalar(a) or isinstance(a, (list, tuple)):
            a = np.asarray(a)
        else:
            try:
                a = np.asarray(a)
            except Exception as exc:  # pragma: no cover - exotic objects
                raise TypeError(f"{name} must be a NumPy array, got "
                                f"{type(a).__name__}") from exc
    if not a.dtype.isnative and a.dtype.newbyteorder("=") in FLOAT_DTYPES:
        # Big-endian data (FITS files) on a little-endian machine, or the
        # reverse: same values in the native byte order the kernels take.
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have dtype float32 or float64 (either byte order), "
            f"got {a.dtype}; convert with {name}.astype(np.float32) or "
            f"np.float64 (kernels.correlate/convolve also take integer and "
            f"bool arrays, computed in float64)")
    return a


def check_same_dtype(**arrays):
    """All given arrays (None skipped) must share one dtype."""
    items = [(k, v) for k, v in arrays.items() if v is not None]
    first_name, first = items[0]
    for name, a in items[1:]:
        if a.dtype != first.dtype:
            raise TypeError(
                f"{name} has dtype {a.dtype} but {first_name} has dtype "
                f"{first.dtype}; cast them to one dtype (float32 or float64)")
    return first.dtype


def check_ndim(name, a, ndims, layout):
    if a.ndim not in ndims:
        want = " or ".join(str(n) for n in ndims)
        raise ValueError(
            f"{name} must be {want}-dimensional ({layout}), got shape "
            f"{a.shape} with {a.ndim} dimensions")


def int_tuple(name, value, n, minimum):
    """Normalise an int or a length-``n`` sequence of ints to a tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(
                f"{name} must be an int or a tuple of {n} ints, got {value!r}")
        values = tuple(value)
    else:
        values = (value,) * n
    if all(type(v) is int and v >= minimum for v in values):
        return values           # the common case, without the ABC checks
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int or a tuple of {n} ints, "
                            f"got {value!r}")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        out.append(int(v))
    return tuple(out)


def check_groups(groups):
    """``groups`` as a positive int, or TypeError/ValueError."""
    if type(groups) is int and groups >= 1:
        return groups
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    return int(groups)


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}; "
            f"got {value!r}")
    return value


def check_algorithm(algorithm):
    return check_choice("algorithm", algorithm, ("auto",) + ALGORITHMS)


def normalise_padding(padding, nsp, kernel, dilation, stride):
    """Per-axis (lo, hi) pairs from an int, a tuple, 'valid' or 'same'."""
    if isinstance(padding, str):
        check_choice("padding", padding, ("valid", "same"))
        if padding == "valid":
            return [(0, 0)] * nsp
        if any(s != 1 for s in stride):
            raise ValueError(
                f"padding='same' is not supported for strided convolutions "
                f"(stride={stride}); pass explicit padding instead")
        return [same_padding(k, d) for k, d in zip(kernel, dilation)]
    pads = int_tuple("padding", padding, nsp, 0)
    return [(p, p) for p in pads]
