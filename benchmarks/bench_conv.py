"""2-D convolution: algorithms against SciPy and PyTorch, per workload.

``Conv2dKernelSize``  one 256 x 256 image, kernel sizes 3..15: time and
                      error (in bound units) of each algorithm and peer.
``Conv2dWorkloads``   representative layers of every named workload
                      (``convbench.workloads.WORKLOADS``): time of each
                      algorithm, ``auto`` and every peer.
``Conv2dWorkloadsError``  error in bound units, one layer per workload.
``Conv2dScratch``     peak memory of im2col and FFT on shapes where their
                      scratch is visible, against the inputs alone.
``Crossover``         where the faster-growing algorithm takes over, on
                      fixed shapes chosen so that, on the machine the suite
                      was tuned on, the crossover lies inside the range
                      (docs/benchmarks.md has the measured values).

Every combination that cannot run here (an algorithm not built, the CUDA
backend without a GPU, a missing peer, a contender slower than
``common.CALL_LIMIT_S`` per call) raises NotImplementedError: asv reports
it as skipped.  Every contender is called in ``setup``, so Numba
compilation, FFT planning and thread-pool start-up are never timed.
"""

from __future__ import annotations

import numpy as np

import kernels

from .common import (ALGORITHMS, BACKENDS, PEER_TIME_LIMIT_S, PEERS,
                     ConvCase, contender, crossover_of_cases,
                     error_in_bound_units, make_data, measured_crossover,
                     make_runner, representative_layers, require_backend,
                     skip_if_slow)

CONTENDERS = ALGORITHMS + ["auto"] + PEERS


class Conv2dKernelSize:
    """One image, one filter, 'same' padding, growing kernel."""

    params = [ALGORITHMS + PEERS, BACKENDS, [3, 5, 7, 11, 15]]
    param_names = ["algorithm", "backend", "kernel_size"]
    timeout = 120
    number = 1
    repeat = (3, 10, 10.0)
    warmup_time = 0.0        # setup warms up; compilation is never timed

    def setup(self, algorithm, backend, kernel_size):
        self.case = ConvCase(f"k={kernel_size}", (1, 1, 256, 256),
                             (1, 1, kernel_size, kernel_size), 1, "same", 1)
        self.x, self.w = make_data(self.case.x_shape, self.case.w_shape)
        self.run = contender(algorithm, self.case, self.x, self.w,
                             PEER_TIME_LIMIT_S, backend)

    def time_conv2d(self, algorithm, backend, kernel_size):
        self.run()

    def track_error_bound_units(self, algorithm, backend, kernel_size):
        return error_in_bound_units(algorithm, self.case, self.x, self.w,
                                    self.run())

    track_error_bound_units.unit = "bound units"


class Conv2dWorkloads:
    """Representative conv2d layers of every named workload (the smallest
    and the largest of at most 1e10 FLOPs, ``common.representative_layers``),
    float32: time of each algorithm, ``auto``, and the peers."""

    params = [CONTENDERS, BACKENDS, list(representative_layers())]
    param_names = ["algorithm", "backend", "layer"]
    timeout = 300
    number = 1
    repeat = (2, 5, 10.0)
    warmup_time = 0.0

    def setup(self, algorithm, backend, layer):
        self.case = representative_layers()[layer]
        self.x, self.w = make_data(self.case.x_shape, self.case.w_shape)
        self.run = contender(algorithm, self.case, self.x, self.w,
                             PEER_TIME_LIMIT_S, backend)
        skip_if_slow(self.run)

    def time_conv2d(self, algorithm, backend, layer):
        self.run()


class Conv2dWorkloadsError:
    """Error in bound units (max |y - y_ref| / (u |x| |w|) against the
    float64 reference, a cropped region on large layers) of each algorithm
    and peer on the smallest conv layer of every named workload."""

    params = [ALGORITHMS + PEERS, BACKENDS,
              list(representative_layers(count=1))]
    param_names = ["algorithm", "backend", "layer"]
    timeout = 300

    def setup(self, algorithm, backend, layer):
        self.case = representative_layers(count=1)[layer]
        self.x, self.w = make_data(self.case.x_shape, self.case.w_shape)
        self.run = contender(algorithm, self.case, self.x, self.w,
                             PEER_TIME_LIMIT_S, backend)

    def track_error_bound_units(self, algorithm, backend, layer):
        return error_in_bound_units(algorithm, self.case, self.x, self.w,
                                    self.run())

    track_error_bound_units.unit = "bound units"


class Conv2dScratch:
    """Peak resident memory of the whole benchmark process (interpreter,
    Numba, inputs, output and the algorithm's scratch) for one call;
    ``inputs-only`` allocates the output and nothing else, so the
    difference to it is the algorithm's scratch (im2col's patch matrix,
    bounded by ``CONVBENCH_IM2COL_SCRATCH``; FFT's padded spectra).

    ``setup_cache`` runs every contender once on every problem in a
    process of its own (once per environment), so Numba's on-disk cache
    holds every compiled path; ``setup`` then calls each contender on a
    tiny problem (loading its code), and the call measured loads little or
    nothing: the peak is the call's, not a compiler's."""

    #: problem -> (input shape, weight shape)
    PROBLEMS = {
        # im2col's patch matrix: C k^2 H W floats (157 MB unbounded).
        "64@112x112 k=7": ((1, 64, 112, 112), (64, 64, 7, 7)),
        # FFT's padded spectra of a PSF-sized kernel.
        "1@2048x2048 k=63": ((1, 1, 2048, 2048), (1, 1, 63, 63)),
    }
    ALGORITHMS = ["direct", "im2col", "fft"]
    params = [["inputs-only"] + ALGORITHMS, list(PROBLEMS)]
    param_names = ["algorithm", "problem"]
    timeout = 300

    def setup_cache(self):
        compiled = []       # not None: asv passes None to nobody
        for problem in self.PROBLEMS:
            case, x, w = self._problem(problem)
            for algorithm in self.ALGORITHMS:
                if algorithm == "im2col" and problem.startswith("1@"):
                    continue
                try:
                    contender(algorithm, case, x, w)
                except NotImplementedError:
                    continue
                compiled.append((algorithm, problem))
        return compiled

    def _problem(self, problem):
        x_shape, w_shape = self.PROBLEMS[problem]
        case = ConvCase(problem, x_shape, w_shape, 1, "same", 1)
        return (case,) + make_data(x_shape, w_shape)

    def setup(self, _cache, algorithm, problem):
        if algorithm == "im2col" and problem.startswith("1@"):
            # 33 GFLOP through a one-channel GEMM: seconds, no news.
            raise NotImplementedError("im2col is measured on the 64-channel "
                                      "problem only")
        self.case, self.x, self.w = self._problem(problem)
        n, k = self.x.shape[0], self.w.shape[0]
        if algorithm == "inputs-only":
            out_shape = (n, k) + self.x.shape[2:]
            self.run = lambda: np.ones(out_shape, self.x.dtype)
            return
        kh = self.w.shape[-1]
        tiny = ConvCase("tiny", (1, self.x.shape[1], kh + 2, kh + 2),
                        self.w.shape, 1, "same", 1)
        contender(algorithm, tiny, *make_data(tiny.x_shape, tiny.w_shape))
        self.run, _ = make_runner(algorithm, self.case, self.x, self.w)

    def peakmem_conv2d(self, _cache, algorithm, problem):
        self.run()


class Crossover:
    """Measured crossovers on fixed shapes (small interleaved sweeps, five
    timed calls per point after a warm-up, ``convbench.crossover``): the
    size from which the algorithm that loses at small sizes stays faster;
    NaN when it never takes over.  Method ``track_crossover_A_B``: ``A``
    is fastest at the small sizes, ``B`` from the tracked size on."""

    #: method -> (A, B, input shape, output channels, kernel sizes)
    KERNEL_SWEEPS = {
        # few channels: direct's per-tap cost vs FFT's fixed transforms
        "direct_fft": ("direct", "fft", (1, 4, 128, 128), 4,
                       tuple(range(3, 24, 2))),
        # many channels: im2col's GEMM grows with k^2, FFT's barely
        "im2col_fft": ("im2col", "fft", (1, 64, 56, 56), 64, (1, 3, 5, 7, 9)),
        # 1x1 is a plain GEMM (im2col); direct wins from 2x2/3x3 on
        "im2col_direct": ("im2col", "direct", (1, 3, 224, 224), 64,
                          (1, 2, 3, 4, 5, 6, 7)),
    }
    #: 3x3 'same' layers at 28x28, batch 1, C = K over these channels
    WINOGRAD_CHANNELS = (16, 32, 64, 96, 128, 192, 256, 384)

    #: timed calls per point (median): three moved the crossovers by a step
    REPEATS = 5
    params = [BACKENDS]
    param_names = ["backend"]
    timeout = 300
    number = 1
    repeat = 1

    def setup(self, backend):
        require_backend(backend)
        built = kernels.built_algorithms(backend)
        missing = {"direct", "im2col", "fft", "winograd"} - set(built)
        if missing:
            raise NotImplementedError(f"{sorted(missing)} not built")

    def _kernel_crossover(self, name, backend):
        a, b, x_shape, k_out, sizes = self.KERNEL_SWEEPS[name]
        return measured_crossover(x_shape, k_out, sizes, slow=a, fast=b,
                                  repeats=self.REPEATS, backend=backend)

    def track_crossover_direct_fft(self, backend):
        """Kernel size from which fft beats direct: C = K = 4, 128x128."""
        return self._kernel_crossover("direct_fft", backend)

    def track_crossover_im2col_fft(self, backend):
        """Kernel size from which fft beats im2col: C = K = 64, 56x56."""
        return self._kernel_crossover("im2col_fft", backend)

    def track_crossover_im2col_direct(self, backend):
        """Kernel size from which direct beats im2col: C = 3, K = 64,
        224x224 (a stem-like layer, stride 1)."""
        return self._kernel_crossover("im2col_direct", backend)

    def track_crossover_direct_winograd_channels(self, backend):
        """Channel count C = K from which winograd beats direct: 3x3
        'same' layers at 28x28, batch 1."""
        cases = [ConvCase(f"C=K={c}", (1, c, 28, 28), (c, c, 3, 3), 1, 1, 1)
                 for c in self.WINOGRAD_CHANNELS]
        return crossover_of_cases(cases, list(self.WINOGRAD_CHANNELS),
                                  "direct", "winograd", self.REPEATS,
                                  backend=backend)

    track_crossover_direct_fft.unit = "kernel size"
    track_crossover_im2col_fft.unit = "kernel size"
    track_crossover_im2col_direct.unit = "kernel size"
    track_crossover_direct_winograd_channels.unit = "channels"
