"""Regression benchmark for the Numba/OpenBLAS thread-pool clash.

A ``prange`` kernel (the im2col gather) alternating with a BLAS GEMM is the
pattern that ran about 9x slower (16 ms instead of 1.8 ms per im2col conv
at 64@56) when Numba's OpenMP workers spun beside OpenBLAS's (see
``kernels/_threads.py``).  ``time_gather_then_gemm`` runs
exactly that pattern with the *parallel* gather, bypassing the package's
serial fallback, so it measures whether the OMP_WAIT_POLICY fix is in
force; compare it with ``time_gather_only + time_gemm_only`` (same
process): about their sum when the pools cooperate, 5 to 10 times more
when the clash is back (measured on 2 cores: 1.8 ms per gather+GEMM pair
at 64@56, 16 ms with spinning OpenMP workers).  A single-process ratio
cannot show the clash (with spinning workers ``time_gemm_only`` is slowed
as well), so watch the absolute history of ``time_gather_then_gemm`` and
``track_prange_beside_blas_is_safe``.

``kernels`` is imported before anything that could load an OpenMP runtime
(asv imports each benchmark module in a fresh process).
"""

import time

import numpy as np

import kernels  # noqa: F401  (first: sets OMP_WAIT_POLICY before OpenMP loads)
from kernels import _threads
from kernels.cpu import im2col

from convbench.network import SETTINGS as NETWORK_SETTINGS
from convbench.timing import make_inputs

# ResNet-50 3x3 layers, batch 1, one image per GEMM: "channels@size".
LAYERS = ["64@56", "128@28", "512@7"]


def _layer(name):
    channels, size = (int(v) for v in name.split("@"))
    return channels, size


class TimePrangeBesideBlas:
    """Alternate a parallel gather and an sgemm, as im2col does per chunk."""

    params = [LAYERS]
    param_names = ["layer"]
    repeat = (3, 10, 20.0)

    def setup(self, layer):
        c, s = _layer(layer)
        self.x, self.w = make_inputs((1, c, s, s), (c, c, 3, 3), np.float32,
                                     seed=0)
        self.s = s
        self.patches = np.empty((c * 9, s * s), np.float32)
        self.w2 = self.w.reshape(c, c * 9)
        self.out = np.empty((c, s * s), np.float32)
        for _ in range(3):  # compile and wake both pools
            self.gather()
            self.gemm()
            kernels.conv2d(self.x, self.w, padding=1, algorithm="im2col")

    def gather(self):
        s = self.s
        im2col.fill_patches(self.x, 0, 1, 0, s * s, 3, 3, 1, 1, 1, 1, 1, 1, s,
                            self.patches)

    def gemm(self):
        np.matmul(self.w2, self.patches, out=self.out)

    def time_gather_then_gemm(self, layer):
        for _ in range(4):
            self.gather()
            self.gemm()

    def time_gather_only(self, layer):
        for _ in range(4):
            self.gather()

    def time_gemm_only(self, layer):
        for _ in range(4):
            self.gemm()

    def time_conv2d_im2col(self, layer):
        kernels.conv2d(self.x, self.w, padding=1, algorithm="im2col")


class TrackThreadGuard:
    """1 when the package considers prange beside BLAS safe (PASSIVE OpenMP
    or a non-OpenMP threading layer), 0 when it falls back to serial
    gathers; in asv's fresh processes this must stay 1."""

    def track_prange_beside_blas_is_safe(self):
        return int(_threads.prange_beside_blas_is_safe())

    track_prange_beside_blas_is_safe.unit = "bool"


class TrackKernelAfterBlas:
    """How much a Numba parallel kernel slows down right after im2col.

    OpenBLAS's workers spin for a long time after a multithreaded call
    (longer than 0.5 s on the 2-core development machine), and a ``prange``
    kernel started meanwhile runs on the cores they leave.  The package
    never wakes them (``kernels/cpu/_blas.py``): the direct kernel right
    after an im2col call must run as fast as right after another direct
    call (ratio ~1; 2.1-2.6 when im2col still used OpenBLAS's threads).
    The direct-after-direct times are taken first, and ``setup`` compiles
    im2col on a problem too small for BLAS to go multithreaded, so that
    no woken worker is left over to slow both down and hide a regression.
    (The same slowdown follows the user's own large ``numpy.matmul``,
    which the package cannot prevent: 2.1x here, unless
    ``OPENBLAS_THREAD_TIMEOUT=4`` is set before NumPy loads.)
    """

    number = 1
    repeat = 1

    def setup(self):
        self.x, self.w = make_inputs((4, 64, 56, 56), (64, 64, 3, 3),
                                     np.float32, seed=0)
        self.direct()
        kernels.conv2d(self.x[:1, :, :3, :3], self.w, padding=1,
                       algorithm="im2col")          # compile, BLAS tiny

    def direct(self):
        kernels.conv2d(self.x, self.w, padding=1, algorithm="direct")

    def im2col(self):
        kernels.conv2d(self.x, self.w, padding=1, algorithm="im2col")

    def _median_direct_after(self, first, repeats=9):
        times = []
        for _ in range(repeats):
            first()
            t0 = time.perf_counter()
            self.direct()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    def track_direct_after_im2col_vs_after_direct(self):
        after_direct = self._median_direct_after(self.direct)
        after_im2col = self._median_direct_after(self.im2col)
        return after_im2col / after_direct

    track_direct_after_im2col_vs_after_direct.unit = "ratio"


def _torch_importable():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


class TrackImportOrder:
    """Each algorithm and torch in one worker process, imported in either
    order (issue 12): with ``torch`` first, the OpenMP runtime is torch's
    ``libgomp``, which read no wait policy and spins for milliseconds
    after each torch call.  ``track_ms`` is our median time per call,
    ``track_speed_vs_torch`` torch's median over ours in the same worker
    (contenders alternated in a new seeded order every round, 9 rounds),
    ``track_over_other_order`` our time in this order over our time in the
    other, round by round (median).  The two orders' workers run at once,
    round by round (:func:`convbench.isolated.settings_times`), so that
    the last is not the machine's drift between two runs.  Every
    algorithm should be within 10 % of itself across the two orders.
    The workers are fresh processes (:mod:`convbench.isolated`): this
    module has imported ``kernels`` first, which would decide the order
    here.
    """

    params = [["kernels-first", "torch-first"], ["64@56", "512@7"],
              ["direct", "im2col", "winograd", "auto"]]
    param_names = ["order", "layer", "algorithm"]
    timeout = 600
    rounds = 9
    orders = {name: NETWORK_SETTINGS[name][1] for name in params[0]}

    def setup_cache(self):
        if not _torch_importable():
            return None
        from convbench.isolated import settings_times
        from convbench.workloads import ConvCase
        results = {}
        for layer in self.params[1]:
            c, s = _layer(layer)
            case = ConvCase(layer, (4, c, s, s), (c, c, 3, 3), 1, 1, 1)
            measured = settings_times(
                self.params[2] + ["torch"], [case], self.rounds,
                [dict(isolated=False, import_order=imports)
                 for imports in self.orders.values()])
            for order, times in zip(self.orders, measured):
                results[order, layer] = {name: list(t)
                                         for name, t in times.times.items()
                                         if t}
        return results

    def setup(self, results, order, layer, algorithm):
        if results is None:
            raise NotImplementedError("torch is not installed")
        self.times = results[order, layer]
        other, = (o for o in self.orders if o != order)
        self.other = results[other, layer]
        if not all(n in t for n in (algorithm, "torch")
                   for t in (self.times, self.other)):
            raise NotImplementedError(f"{algorithm} did not run")

    def track_ms(self, results, order, layer, algorithm):
        return float(np.median(self.times[algorithm])) * 1e3

    track_ms.unit = "ms"

    def track_speed_vs_torch(self, results, order, layer, algorithm):
        return float(np.median(self.times["torch"])
                     / np.median(self.times[algorithm]))

    track_speed_vs_torch.unit = "ratio"

    def track_over_other_order(self, results, order, layer, algorithm):
        return float(np.median([a / b for a, b in zip(
            self.times[algorithm], self.other[algorithm])]))

    track_over_other_order.unit = "ratio"
