"""Float64 ground truth on SciPy/NumPy for every operation of ``kernels``.

Never imports ``kernels``.  Small and obviously right beats fast: the
tests hold every algorithm to these functions, and the forward-error-bound
scale of :mod:`kernels.accuracy` is ``conv2d(abs(x), abs(w), ...)``.
"""

from .conv import conv1d, conv2d, correlate, convolve
from .pooling import (max_pool1d, max_pool2d, avg_pool1d, avg_pool2d,
                      global_avg_pool2d)
from .transposed import conv_transpose1d, conv_transpose2d
from .backward import (conv2d_input_grad, conv2d_weight_grad,
                       max_pool2d_backward, avg_pool2d_backward)

__all__ = ["conv1d", "conv2d", "correlate", "convolve",
           "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
           "global_avg_pool2d", "conv_transpose1d", "conv_transpose2d",
           "conv2d_input_grad", "conv2d_weight_grad", "max_pool2d_backward",
           "avg_pool2d_backward"]
