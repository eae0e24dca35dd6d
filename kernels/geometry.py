"""Shape formulas of convolution and pooling layers (pure Python).

These are the single source of the output shapes used by every kernel,
by the references and by the benchmarks.  All sizes are per spatial axis.

Formulas (PyTorch's, ``torch.nn.Conv2d`` and friends)::

    effective kernel      k_eff = d (k - 1) + 1
    convolution           n_out = floor((n + p_total - k_eff) / s) + 1
    transposed conv.      n_out = (n - 1) s - p_total + k_eff + output_padding
    pooling               n_out = floor_or_ceil((n + 2p - k_eff) / s) + 1,
                          and with ceil_mode the last window must start
                          inside the input or the left padding.

``p_total`` is the sum of the padding on both sides; passing ``padding=p``
means ``p`` on each side (``p_total = 2p``), a pair ``(lo, hi)`` gives each
side explicitly.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

__all__ = [
    "effective_kernel_size",
    "conv_output_size",
    "live_taps",
    "conv_transpose_output_size",
    "pool_output_size",
    "same_padding",
    "receptive_field",
    "conv_params",
]


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _padding_total(padding):
    if isinstance(padding, (tuple, list)):
        if len(padding) != 2:
            raise ValueError(
                f"padding must be an int or a (lo, hi) pair, got {padding!r}")
        lo = _check_int("padding", padding[0], 0)
        hi = _check_int("padding", padding[1], 0)
        return lo + hi
    return 2 * _check_int("padding", padding, 0)


def effective_kernel_size(k: int, dilation: int = 1) -> int:
    """Extent of a dilated kernel: ``dilation * (k - 1) + 1``."""
    k = _check_int("k", k, 1)
    dilation = _check_int("dilation", dilation, 1)
    return dilation * (k - 1) + 1


def conv_output_size(n: int, k: int, stride: int = 1, padding=0,
                     dilation: int = 1) -> int:
    """Output length of a convolution along one axis.

    ``floor((n + p_total - (d (k - 1) + 1)) / s) + 1``.  Raises
    ``ValueError`` when the dilated kernel is larger than the padded input.

    Examples
    --------
    >>> conv_output_size(224, 7, stride=2, padding=3)
    112
    """
    n = _check_int("n", n, 0)
    stride = _check_int("stride", stride, 1)
    k_eff = effective_kernel_size(k, dilation)
    padded = n + _padding_total(padding)
    if k_eff > padded:
        raise ValueError(
            f"kernel (dilated size {k_eff}) is larger than the padded input "
            f"(size {padded}); use a smaller kernel or dilation, or more padding")
    return (padded - k_eff) // stride + 1


def live_taps(n: int, k: int, stride: int = 1, padding=0,
              dilation: int = 1):
    """``(first, last)``: the first and last kernel taps along one axis
    that meet the input at some output, or None when none does.

    Tap ``i`` of output ``o`` reads padded position ``o s + i d``, input
    position ``o s + i d - p_lo``; taps before ``first`` and after ``last``
    only ever meet the zero padding (a 9-tap kernel padded by 4 over a
    one-row image: only tap 4 meets it).  ``padding`` is an int or
    ``(p_lo, p_hi)``, as for :func:`conv_output_size`.

    Examples
    --------
    >>> live_taps(1, 9, padding=4)
    (4, 4)
    >>> live_taps(224, 3, padding=1)
    (0, 2)
    """
    out = conv_output_size(n, k, stride, padding, dilation)
    lo = padding if isinstance(padding, int) else padding[0]
    live = []
    for i in range(k):
        offset = i * dilation - lo          # input position at o = 0
        # outputs o in [0, out) with 0 <= o s + offset < n
        first_o = -(offset // stride) if offset < 0 else 0
        last_o = (min(out - 1, (n - 1 - offset) // stride)
                  if offset <= n - 1 else -1)
        if first_o <= last_o:
            live.append(i)
    return (live[0], live[-1]) if live else None


def conv_transpose_output_size(n: int, k: int, stride: int = 1, padding=0,
                               output_padding: int = 0,
                               dilation: int = 1) -> int:
    """Output length of a transposed convolution along one axis.

    ``(n - 1) s - p_total + d (k - 1) + 1 + output_padding``; with
    ``padding=p`` this is PyTorch's ``(n - 1) s - 2p + d (k - 1) +
    output_padding + 1``.  ``output_padding`` must be smaller than the
    stride or the dilation (PyTorch's rule).
    """
    n = _check_int("n", n, 0)
    stride = _check_int("stride", stride, 1)
    dilation = _check_int("dilation", dilation, 1)
    output_padding = _check_int("output_padding", output_padding, 0)
    if output_padding >= stride and output_padding >= dilation:
        raise ValueError(
            f"output_padding ({output_padding}) must be smaller than either "
            f"stride ({stride}) or dilation ({dilation})")
    size = ((n - 1) * stride - _padding_total(padding)
            + effective_kernel_size(k, dilation) + output_padding)
    if size < 1:
        raise ValueError(
            f"transposed convolution output size {size} is not positive; "
            "reduce padding")
    return size


def pool_output_size(n: int, k: int, stride: int | None = None, padding: int = 0,
                     dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a pooling window along one axis (PyTorch's rule).

    ``floor_or_ceil((n + 2p - d (k - 1) - 1) / s) + 1``; with
    ``ceil_mode`` the last window is dropped if it would start in the right
    padding, and a window up to ``s - 1`` elements longer than the padded
    input still gives one (clipped) output, as in PyTorch.  ``stride``
    defaults to ``k``.  ``padding`` must be at most half the kernel size,
    and ``n >= 1``, as in PyTorch.
    """
    n = _check_int("n", n, 1)
    k = _check_int("kernel_size", k, 1)
    stride = k if stride is None else _check_int("stride", stride, 1)
    padding = _check_int("padding", padding, 0)
    dilation = _check_int("dilation", dilation, 1)
    if padding > k // 2:
        raise ValueError(
            f"padding ({padding}) must be at most half the kernel size "
            f"({k} // 2 = {k // 2})")
    k_eff = effective_kernel_size(k, dilation)
    span = n + 2 * padding - k_eff
    if ceil_mode:
        # Floor division rounds towards -inf, as PyTorch's div_rtn: a
        # window up to stride - 1 elements longer than the padded input
        # still gives one (clipped) output.
        out = (span + stride - 1) // stride + 1
        # The last window must start inside the input or the left padding.
        if (out - 1) * stride >= n + padding:
            out -= 1
    else:
        out = span // stride + 1
    if out < 1:
        raise ValueError(
            f"pooling window (dilated size {k_eff}) is larger than the padded "
            f"input (size {n + 2 * padding}); output size would be {out}")
    return out


def same_padding(k: int, dilation: int = 1) -> tuple[int, int]:
    """(lo, hi) zero padding of ``padding="same"`` at stride 1.

    PyTorch puts ``total // 2`` on the low side and the rest on the high
    side, ``total = d (k - 1)``; for even kernels the extra element goes
    to the high side.
    """
    total = effective_kernel_size(k, dilation) - 1
    return total // 2, total - total // 2


def receptive_field(layers: Iterable[Sequence[int]]) -> int:
    """Receptive field (in input pixels) of a stack of layers along one axis.

    Each layer is ``(k, stride)`` or ``(k, stride, dilation)``.  The
    recursion is ``r <- r + (k_eff - 1) * j`` and ``j <- j * s`` with
    ``j`` the product of the strides of the layers below (the "jump").

    Examples
    --------
    >>> receptive_field([(3, 1), (3, 1)])   # two 3x3 layers see 5x5
    5
    """
    r, jump = 1, 1
    for layer in layers:
        layer = tuple(layer)
        if len(layer) not in (2, 3):
            raise ValueError(
                f"each layer must be (k, stride) or (k, stride, dilation), "
                f"got {layer!r}")
        k, s = layer[0], layer[1]
        d = layer[2] if len(layer) == 3 else 1
        s = _check_int("stride", s, 1)
        r += (effective_kernel_size(k, d) - 1) * jump
        jump *= s
    return r


def conv_params(c_in: int, c_out: int, k, bias: bool = True,
                groups: int = 1) -> int:
    """Number of learnable parameters of a convolution layer.

    ``c_out * (c_in / groups) * prod(k) + (c_out if bias else 0)``; ``k``
    is an int (square kernel, any number of axes given by a tuple) or a
    tuple of kernel sizes.  A fully connected layer is ``k=1``.
    """
    c_in = _check_int("c_in", c_in, 1)
    c_out = _check_int("c_out", c_out, 1)
    groups = _check_int("groups", groups, 1)
    if c_in % groups or c_out % groups:
        raise ValueError(
            f"groups ({groups}) must divide c_in ({c_in}) and c_out ({c_out})")
    if isinstance(k, (tuple, list)):
        ksize = math.prod(_check_int("k", v, 1) for v in k)
    else:
        ksize = _check_int("k", k, 1) ** 2
    return c_out * (c_in // groups) * ksize + (c_out if bias else 0)
