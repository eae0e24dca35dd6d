"""The CUDA FFT's transform lengths: powers of two per axis.

Separate from :mod:`kernels.cuda.fft` because it imports no CUDA: the
roofline model of ``convbench cuda-report --model`` uses the same rule as
the kernels.  See :mod:`kernels.cuda.fft` for what the rule is and why.
"""

from __future__ import annotations

from .._fft_geometry import axis_phases
from ..geometry import conv_output_size
from ._tuning import FFT

__all__ = ["choose_tile", "next_pow2"]


def next_pow2(n):
    return 1 << max(0, int(n) - 1).bit_length()


def _axis_tile(size, pad_lo, pad_hi, k, dilation, stride, tuning):
    out = conv_output_size(size, k, stride, (pad_lo, pad_hi), dilation)
    kq = axis_phases(k, dilation, stride)[3]
    t = next_pow2(tuning.taps_per_tile * (kq - 1))
    t = max(next_pow2(2 * kq), min(tuning.max_tile, max(tuning.min_tile, t)))
    return min(t, next_pow2(out + kq - 1))


def choose_tile(x_shape, w_shape, stride, padding, dilation, tuning=None):
    """Power-of-two transform lengths ``(t0, t1)`` (see the module docstring)."""
    tuning = FFT if tuning is None else tuning
    return tuple(_axis_tile(n, lo, hi, k, d, s, tuning) for n, lo, hi, k, d, s
                 in zip(x_shape[2:], padding[0::2], padding[1::2],
                        w_shape[2:], dilation, stride))
