"""2-D convolution: algorithms against SciPy and PyTorch.

``Conv2dKernelSize``  one 256 x 256 image, kernel sizes 3..15: time and
                      error (in bound units) of each algorithm and of
                      ``scipy.signal.correlate`` (direct and FFT).
``ResNetLayers``      ResNet-50's 3 x 3 stride-1 layers at batch 4.
``Crossover``         kernel size from which FFT / im2col overtake direct,
                      and FFT overtakes im2col.
"""

from __future__ import annotations

import kernels

from .common import (ALGORITHMS, SCIPY_PEERS, ConvCase, contender,
                     error_in_bound_units, make_data, measured_crossover,
                     torch_available, workloads)


class Conv2dKernelSize:
    """One image, one filter, 'same' padding, growing kernel."""

    params = [ALGORITHMS + SCIPY_PEERS, [3, 5, 7, 11, 15]]
    param_names = ["algorithm", "kernel_size"]
    timeout = 120
    number = 1
    repeat = (3, 10, 10.0)
    warmup_time = 0.0        # setup warms up; compilation is never timed

    def setup(self, algorithm, kernel_size):
        self.case = ConvCase(f"k={kernel_size}", (1, 1, 256, 256),
                             (1, 1, kernel_size, kernel_size), 1, "same", 1)
        self.x, self.w = make_data(self.case.x_shape, self.case.w_shape)
        self.run = contender(algorithm, self.case, self.x, self.w)

    def time_conv2d(self, algorithm, kernel_size):
        self.run()

    def track_error_bound_units(self, algorithm, kernel_size):
        return error_in_bound_units(algorithm, self.case, self.x, self.w,
                                    self.run())

    track_error_bound_units.unit = "bound units"


def _resnet_contenders():
    return ALGORITHMS + (["torch"] if torch_available() else [])


class ResNetLayers:
    """ResNet-50's 3x3 stride-1 convolutions (64@56², ..., 512@7²), batch 4."""

    params = [_resnet_contenders(),
              [case.label for case in workloads.workload("resnet50-3x3")]]
    param_names = ["algorithm", "layer"]
    timeout = 300
    number = 1
    repeat = (2, 5, 20.0)
    warmup_time = 0.0

    def setup(self, algorithm, layer):
        cases = {c.label: c for c in workloads.workload("resnet50-3x3")}
        self.case = cases[layer]
        self.x, self.w = make_data(self.case.x_shape, self.case.w_shape)
        self.run = contender(algorithm, self.case, self.x, self.w)

    def time_conv2d(self, algorithm, layer):
        self.run()


class Crossover:
    """Measured crossover kernel sizes (small sweeps, three interleaved
    repeats each); NaN when the faster-growing algorithm never takes over."""

    #: name -> (slower at small kernels, faster at large ones, input shape,
    #:          output channels, kernel sizes)
    SWEEPS = {
        "fft-over-direct": ("direct", "fft", (1, 1, 128, 128), 1,
                            (3, 5, 7, 9, 11, 13, 15)),
        "im2col-over-direct": ("direct", "im2col", (1, 16, 32, 32), 16,
                               (1, 3, 5, 7, 9)),
        "fft-over-im2col": ("im2col", "fft", (1, 16, 32, 32), 16,
                            (3, 5, 7, 9, 11, 13)),
    }
    params = [list(SWEEPS)]
    param_names = ["pair"]
    timeout = 300
    number = 1
    repeat = 1

    def setup(self, pair):
        slow, fast = self.SWEEPS[pair][:2]
        built = kernels.built_algorithms()
        for name in (slow, fast):
            if name not in built:
                raise NotImplementedError(f"{name} is not built")

    def track_crossover(self, pair):
        slow, fast, x_shape, k_out, sizes = self.SWEEPS[pair]
        return measured_crossover(x_shape, k_out, sizes, slow=slow, fast=fast)

    track_crossover.unit = "kernel size"
