"""Transposed convolution on U-Net decoder shapes, against PyTorch.

``ConvTranspose2dUNet``  N = 1, float32: 512->256 at 28², 256->128 at
                         56², 128->64 at 112² (input sizes), each with
                         k = 2, s = 2 and k = 4, s = 2, p = 1 (both double
                         the resolution); ``time_`` per algorithm and for
                         torch, ``track_speedup_vs_torch`` per algorithm
                         (median of interleaved repeats).

Run as a script for a table: ``python -m benchmarks.bench_transposed``.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import kernels
from kernels._transposed import transposed_algorithms

from convbench.timing import seeded_normal

from .bench_pooling import interleaved_medians, torch_available

SEED = 1234
# label -> (C_in, C_out, input size)
LAYERS = {"512->256@28": (512, 256, 28), "256->128@56": (256, 128, 56),
          "128->64@112": (128, 64, 112)}
# label -> (kernel, stride, padding)
KERNELS = {"k2s2": (2, 2, 0), "k4s2p1": (4, 2, 1)}
CONTENDERS = ["auto", "direct", "im2col", "winograd", "fft", "torch"]


def make_data(layer, kernel):
    c_in, c_out, size = LAYERS[layer]
    k = KERNELS[kernel][0]
    x, w, b = seeded_normal((1, c_in, size, size), (c_in, c_out, k, k), c_out,
                            dtype=np.float64, seed=SEED)
    w = w / np.sqrt(c_in * k * k)          # scaled in float64, then rounded
    return tuple(a.astype(np.float32) for a in (x, w, b))


def contender(name, layer, kernel, x, w, b):
    """A zero-argument callable, or NotImplementedError if not applicable."""
    _, s, p = KERNELS[kernel]
    if name == "torch":
        if not torch_available():
            raise NotImplementedError("torch is not installed")
        import torch
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))

        def run_torch():
            with torch.no_grad():
                return torch.nn.functional.conv_transpose2d(tx, tw, tb, s, p)
        return run_torch
    if name != "auto" and name not in transposed_algorithms():
        raise NotImplementedError(f"{name!r} is not built")

    def run():
        return kernels.conv_transpose2d(x, w, b, s, p, algorithm=name)
    try:
        run()
    except kernels.UnsupportedConfiguration as exc:
        raise NotImplementedError(str(exc)) from None
    return run


class ConvTranspose2dUNet:
    """U-Net decoder up-convolutions, batch 1, float32."""

    params = [CONTENDERS, list(LAYERS), list(KERNELS)]
    param_names = ["algorithm", "layer", "kernel"]
    timeout = 600
    number = 1
    repeat = (2, 7, 30.0)
    warmup_time = 0.0

    def setup(self, algorithm, layer, kernel):
        if algorithm == "direct" and layer != "128->64@112":
            # Direct needs seconds on the deep layers; one shape tracks it.
            raise NotImplementedError("direct is timed on one layer only")
        self.x, self.w, self.b = make_data(layer, kernel)
        self.run = contender(algorithm, layer, kernel, self.x, self.w, self.b)
        self.run()

    def time_conv_transpose2d(self, algorithm, layer, kernel):
        self.run()

    def track_speedup_vs_torch(self, algorithm, layer, kernel):
        if algorithm == "torch" or not torch_available():
            # NaN is asv's n/a; NotImplementedError outside setup is a
            # failure (asv 0.6).
            return math.nan
        torch_run = contender("torch", layer, kernel, self.x, self.w, self.b)
        torch_run()
        t = interleaved_medians({"ours": self.run, "torch": torch_run}, 5)
        return t["torch"] / t["ours"]

    track_speedup_vs_torch.unit = "x torch"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--algorithms", default="auto,im2col,fft,torch")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_info
    blas = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads"))
            for i in threadpool_info() if i.get("user_api") == "blas"]
    print(f"N=1 float32, median of {args.repeats} interleaved repeats; BLAS {blas}")
    names = args.algorithms.split(",")
    print(f"{'layer':13} {'kernel':7} " + " ".join(f"{n + ' ms':>10}" for n in names)
          + "   ratios vs torch (speed)")
    for layer in LAYERS:
        for kernel in KERNELS:
            x, w, b = make_data(layer, kernel)
            fns = {}
            for name in names:
                try:
                    fns[name] = contender(name, layer, kernel, x, w, b)
                except NotImplementedError:
                    pass
            t = interleaved_medians(fns, args.repeats, warmup=1)
            cells = " ".join(f"{t[n] * 1e3:10.1f}" if n in t else f"{'-':>10}"
                             for n in names)
            ratios = ", ".join(f"{n} {t['torch'] / t[n]:.2f}" for n in t
                               if n != "torch" and "torch" in t)
            print(f"{layer:13} {kernel:7} {cells}   {ratios}")


if __name__ == "__main__":
    main()
