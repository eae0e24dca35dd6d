"""Transposed convolution (issue 4): names reserved until built."""


def conv_transpose1d(*args, **kwargs):
    raise NotImplementedError("kernels.conv_transpose1d is not built yet (issue 4)")


def conv_transpose2d(*args, **kwargs):
    raise NotImplementedError("kernels.conv_transpose2d is not built yet (issue 4)")
