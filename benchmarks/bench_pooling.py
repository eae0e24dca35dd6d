"""Pooling: kernels against PyTorch and against the machine's copy bandwidth.

``MaxPool2d`` / ``AvgPool2d``  (8, 64, 112, 112) float32, windows 3x3/2
                               (ResNet's stem pool, padding 1), 3x3/2 and
                               2x2/2 unpadded; ``time_`` per implementation,
                               ``track_`` the speed-up over torch and the
                               fraction of copy bandwidth reached.

Pooling reads the input once and writes the output once, so its speed
limit is memory bandwidth: ``track_fraction_of_copy_bandwidth`` is
``(x.nbytes + y.nbytes) / time / B`` with ``B`` the bandwidth of
``np.copyto`` of a 256 MiB array (bytes read + written per second),
measured in the same process, interleaved with the pooling runs.  Every
ratio is a median over interleaved repeats (each in a new seeded order,
``convbench.timing.interleaved_times``), so that load from other
processes hits both sides alike.

Run as a script for a table: ``python -m benchmarks.bench_pooling``
(set ``--repeats``; unset OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE first).
"""

from __future__ import annotations

import argparse
import math
import importlib.util
import statistics

import numpy as np

import kernels
from convbench.timing import interleaved_times, seeded_normal

SHAPE = (8, 64, 112, 112)
SEED = 1234
# label -> (kernel_size, stride, padding)
WINDOWS = {"3x3/2 pad 1": (3, 2, 1), "3x3/2": (3, 2, 0), "2x2/2": (2, 2, 0)}
COPY_ELEMENTS = 64 * 2**20          # 256 MiB of float32: far beyond any cache


def torch_available():
    return importlib.util.find_spec("torch") is not None


def interleaved_medians(functions, repeats=7, statistic=statistics.median,
                        warmup=0):
    """Median (or ``statistic``) seconds of each callable, calls interleaved
    in a new seeded order each repeat, after ``warmup`` untimed calls."""
    return {name: statistic(ts) for name, ts in
            interleaved_times(functions, repeats, warmup=warmup).items()}


def pooling_input(shape=SHAPE):
    """The seeded float32 input (drawn in float32, as it always was)."""
    return seeded_normal(shape, dtype=np.float32, seed=SEED,
                         draw_dtype=np.float32)[0]


class CopyBandwidth:
    """``np.copyto`` of a large array: bytes read + written per second."""

    def __init__(self, n=COPY_ELEMENTS):
        self.src = pooling_input(n)
        self.dst = np.empty_like(self.src)
        np.copyto(self.dst, self.src)            # fault the pages in

    def __call__(self):
        np.copyto(self.dst, self.src)

    @property
    def bytes_moved(self):
        return 2 * self.src.nbytes


def pool_callables(op, window, x):
    """{'kernels': fn, 'torch': fn (when installed)} for op 'max'/'avg'."""
    k, s, p = WINDOWS[window]
    kernel_fn = kernels.max_pool2d if op == "max" else kernels.avg_pool2d
    out = {"kernels": lambda: kernel_fn(x, k, s, p)}
    if torch_available():
        import torch
        F = torch.nn.functional
        torch_fn = F.max_pool2d if op == "max" else F.avg_pool2d
        tx = torch.from_numpy(x)

        def run_torch():
            with torch.no_grad():
                return torch_fn(tx, k, s, p)
        out["torch"] = run_torch
    return out


def measure(op, window, repeats=7, copy=None, statistic=statistics.median):
    """Median times, speed-up over torch and fraction of copy bandwidth.

    ``statistic=min`` gives the best case of the repeats instead (closer to
    an idle machine when other processes compete for the cores).
    """
    x = pooling_input()
    fns = pool_callables(op, window, x)
    copy = copy or CopyBandwidth()
    fns["copy"] = copy
    # Two untimed calls each: compile, warm caches and thread pools.
    t = interleaved_medians(fns, repeats, statistic, warmup=2)
    y = fns["kernels"]()
    moved = x.nbytes + y.nbytes
    bandwidth = copy.bytes_moved / t["copy"]
    result = {"time_kernels": t["kernels"], "copy_GBps": bandwidth / 1e9,
              "fraction_of_copy_bandwidth": moved / t["kernels"] / bandwidth}
    if "torch" in t:
        result["time_torch"] = t["torch"]
        result["torch_fraction_of_copy_bandwidth"] = moved / t["torch"] / bandwidth
        result["speedup_vs_torch"] = t["torch"] / t["kernels"]
    return result


class _Pool2d:
    op = None
    params = [["kernels", "torch"], list(WINDOWS)]
    param_names = ["implementation", "window"]
    timeout = 300
    number = 1
    repeat = (3, 15, 20.0)
    warmup_time = 0.0

    def setup(self, implementation, window):
        if implementation == "torch" and not torch_available():
            raise NotImplementedError("torch is not installed")
        self.x = pooling_input()
        self.run = pool_callables(self.op, window, self.x)[implementation]
        self.run()
        self.run()

    def time_pool(self, implementation, window):
        self.run()

    def track_speedup_vs_torch(self, implementation, window):
        if implementation != "kernels" or not torch_available():
            # NaN is asv's n/a; NotImplementedError outside setup is a
            # failure (asv 0.6).
            return math.nan
        return measure(self.op, window)["speedup_vs_torch"]

    track_speedup_vs_torch.unit = "x torch"

    def track_fraction_of_copy_bandwidth(self, implementation, window):
        result = measure(self.op, window)
        if implementation == "kernels":
            return result["fraction_of_copy_bandwidth"]
        return result["torch_fraction_of_copy_bandwidth"]

    track_fraction_of_copy_bandwidth.unit = "fraction of copy bandwidth"


class MaxPool2d(_Pool2d):
    """max_pool2d on (8, 64, 112, 112) float32."""

    op = "max"


class AvgPool2d(_Pool2d):
    """avg_pool2d on (8, 64, 112, 112) float32."""

    op = "avg"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--statistic", choices=("median", "min"),
                        default="median")
    args = parser.parse_args(argv)
    statistic = statistics.median if args.statistic == "median" else min
    from threadpoolctl import threadpool_info
    blas = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads"))
            for i in threadpool_info() if i.get("user_api") == "blas"]
    print(f"shape {SHAPE} float32, {args.statistic} of {args.repeats} "
          f"interleaved repeats; "
          f"BLAS {blas}")
    copy = CopyBandwidth()
    print(f"{'op':4} {'window':12} {'kernels ms':>10} {'torch ms':>9} "
          f"{'x torch':>8} {'bw frac':>8} {'torch bw':>8} {'copy GB/s':>9}")
    for op in ("max", "avg"):
        for window in WINDOWS:
            r = measure(op, window, args.repeats, copy, statistic)
            print(f"{op:4} {window:12} {r['time_kernels'] * 1e3:10.2f} "
                  f"{r.get('time_torch', float('nan')) * 1e3:9.2f} "
                  f"{r.get('speedup_vs_torch', float('nan')):8.2f} "
                  f"{r['fraction_of_copy_bandwidth']:8.2f} "
                  f"{r.get('torch_fraction_of_copy_bandwidth', float('nan')):8.2f} "
                  f"{r['copy_GBps']:9.1f}")


if __name__ == "__main__":
    main()
