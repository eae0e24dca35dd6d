"""Find the module that implements an algorithm on a backend.

Every algorithm lives in its own module, ``kernels/<backend>/<algorithm>.py``,
and exports::

    conv2d(x, w, bias, stride, padding, dilation, groups) -> y
        x      C-contiguous (N, C, H, W), float32 or float64, N >= 1
        w      C-contiguous (K, C // groups, kH, kW), same dtype
        bias   (K,) same dtype, or None
        stride (sh, sw); dilation (dh, dw); groups int
        padding (top, bottom, left, right): zero padding, already checked
        returns a new C-contiguous (N, K, Ho, Wo) array of x's dtype

    unsupported_reason(x_shape, w_shape, stride, padding, dilation, groups)
        optional: None when the algorithm can compute the configuration,
        else a sentence naming the rule it breaks.

The public functions validate and normalise once, then call ``conv2d``
of the chosen module; a 1-D convolution is a 2-D one with H = kH = 1.
"""

from __future__ import annotations

import importlib
import importlib.util

from ._validation import ALGORITHMS, UnsupportedConfiguration


def _module_name(algorithm, backend):
    return f"kernels.{backend}.{algorithm}"


def is_built(algorithm, backend="cpu"):
    """True when ``kernels/<backend>/<algorithm>.py`` exists."""
    try:
        return importlib.util.find_spec(_module_name(algorithm, backend)) is not None
    except ModuleNotFoundError:
        return False


def built_algorithms(backend="cpu"):
    """The algorithms of ``kernels.ALGORITHMS`` built for ``backend``."""
    return tuple(a for a in ALGORITHMS if is_built(a, backend))


def load(algorithm, backend="cpu"):
    """Import and return the module of ``algorithm`` on ``backend``."""
    if not is_built(algorithm, backend):
        raise NotImplementedError(
            f"algorithm {algorithm!r} is not built for backend {backend!r} yet; "
            f"built: {', '.join(built_algorithms(backend)) or 'none'}")
    return importlib.import_module(_module_name(algorithm, backend))


def unsupported_reason(algorithm, backend, x_shape, w_shape, stride, padding,
                       dilation, groups):
    """None when ``algorithm`` can do this configuration, else why not."""
    module = load(algorithm, backend)
    check = getattr(module, "unsupported_reason", None)
    if check is None:
        return None
    return check(tuple(x_shape), tuple(w_shape), tuple(stride), tuple(padding),
                 tuple(dilation), int(groups))


def require_supported(algorithm, backend, *config):
    reason = unsupported_reason(algorithm, backend, *config)
    if reason is not None:
        raise UnsupportedConfiguration(
            f"algorithm={algorithm!r} cannot compute this configuration: "
            f"{reason}; use algorithm='auto' or one of "
            f"{', '.join(repr(a) for a in ALGORITHMS)}")
