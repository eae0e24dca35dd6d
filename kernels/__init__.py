"""convbench kernels: convolution, pooling and their backward passes.

Semantics are those of ``torch.nn.functional`` on NumPy arrays (NCHW /
NCL); ``correlate`` and ``convolve`` are those of ``scipy.signal``.
Every compute function takes ``backend=`` and, where more than one
algorithm exists, ``algorithm=`` (``"auto"`` or one of :data:`ALGORITHMS`).

Note: the import name ``kernels`` is also used by an unrelated PyPI
distribution; this package marks itself with ``kernels.__convbench__``.
"""

from ._threads import configure as _configure_threads

_configure_threads()  # before Numba's OpenMP runtime can start

from . import geometry  # noqa: E402
from ._validation import ALGORITHMS, BACKENDS, UnsupportedConfiguration  # noqa: E402
from ._dispatch import built_algorithms  # noqa: E402
from ._choose import choose_algorithm  # noqa: E402
from ._conv import conv1d, conv2d, correlate, convolve  # noqa: E402
from ._pooling import (max_pool1d, max_pool2d, avg_pool1d, avg_pool2d,  # noqa: E402
                       global_avg_pool2d, max_pool2d_backward,
                       avg_pool2d_backward)
from ._transposed import conv_transpose1d, conv_transpose2d  # noqa: E402
from ._backward import conv2d_backward  # noqa: E402
from ._weight_cache import WeightCacheWarning, set_weight_cache_limits  # noqa: E402

__convbench__ = True
__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS", "BACKENDS", "UnsupportedConfiguration", "geometry",
    "built_algorithms", "choose_algorithm",
    "conv1d", "conv2d", "correlate", "convolve",
    "conv_transpose1d", "conv_transpose2d", "conv2d_backward",
    "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
    "global_avg_pool2d", "max_pool2d_backward", "avg_pool2d_backward",
    "set_weight_cache_limits", "WeightCacheWarning",
]
