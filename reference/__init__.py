"""Float64 ground truth on SciPy/NumPy for every operation of ``kernels``.

Never imports ``kernels``.  Small and obviously right beats fast: the
tests hold every algorithm to these functions, and the forward-error-bound
scale of :mod:`kernels.accuracy` is ``conv2d(abs(x), abs(w), ...)``.
"""

from .conv import conv1d, conv2d, correlate, convolve

__all__ = ["conv1d", "conv2d", "correlate", "convolve"]
