"""Winograd F(m x m, r x r): stage timings, peers, accuracy per tile.

``WinogradStages``    ResNet-50's 3x3 layers (batch 4, float32) per tile
                      m: input transform, tuple GEMMs, output transform,
                      the fused path and the whole call.
``WinogradStreamed``  the same layers with the filters transformed inside
                      the GEMM jobs (F(2,3), F(4,3)): the transforms, the
                      GEMMs with them, the whole call, and the cached
                      path's GEMMs beside them.
``WinogradVsPeers``   the same layers: winograd (default tile) against
                      im2col and torch.
``WinogradAccuracy``  per tile (m, r) and dtype: the observed error
                      constant (kernels.accuracy units, and normwise) and
                      the bits kept in float32.

Also a script::

    python -m benchmarks.bench_winograd accuracy [seeds] [part/parts]
                                                   # table of ERROR_CONSTANTS_BY_TILE
    python -m benchmarks.bench_winograd speed      # stage split and ratios

Timings of the script are interleaved medians (each repeat in a new
seeded order, ``convbench.timing.interleaved_times``), in two modes: wall
clock with every thread pool at its default, and CPU time with everything
on one thread (robust on a busy machine).
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np

import kernels
import reference
from kernels import winograd
from kernels.accuracy import error_in_bound_units, unit_roundoff
from kernels.cpu import _tuning
from kernels.cpu import winograd as impl

from convbench.timing import interleaved_times, summarize

from .common import make_data, torch_available, warm_up

LAYERS = {"64@56": (64, 56), "128@28": (128, 28), "256@14": (256, 14),
          "512@7": (512, 7)}
BATCH = 4
PADDING = (1, 1, 1, 1)


def _layer_data(layer, dtype=np.float32):
    c, hw = LAYERS[layer]
    return make_data((BATCH, c, hw, hw), (c, c, 3, 3), dtype)


class _StageTimings:
    """asv's settings of the stage benchmarks: one call a sample, warmed
    up in setup (the first call compiles)."""

    param_names = ["layer", "m"]
    timeout = 300
    number = 1
    repeat = (3, 10, 20.0)
    warmup_time = 0.0


class WinogradStages(_StageTimings):
    """Each stage of F(m x m, 3 x 3) on a ResNet-50 layer, batch 4."""

    params = [list(LAYERS), [2, 4, 6]]

    def setup(self, layer, m):
        self.x, self.w = _layer_data(layer)
        hw = self.x.shape[2:]
        self.tile = winograd.tile_for((3, 3), m)
        self.tw = winograd.transform_weights(self.w, m)
        self.V = impl.transform_input(self.x, self.tile, PADDING, hw)
        self.packed = impl.packed_weights(self.tw, 0)    # U's GEMM layout
        self.M = impl.tuple_gemm(self.V, self.tw.U[0], packed=self.packed)
        self.y = np.empty_like(self.x)
        self.hw = hw
        for stage in (self.time_fused, self.time_staged, self.time_whole,
                      self.time_input_transform, self.time_tuple_gemm,
                      self.time_output_transform):
            warm_up(lambda: stage(layer, m))

    def time_kernel_transform(self, layer, m):
        impl.transform_kernel(self.w, self.tile)

    def time_input_transform(self, layer, m):
        impl.transform_input(self.x, self.tile, PADDING, self.hw, out=self.V)

    def time_tuple_gemm(self, layer, m):
        impl.tuple_gemm(self.V, self.tw.U[0], out=self.M, packed=self.packed)

    def time_output_transform(self, layer, m):
        impl.transform_output(self.M, self.tile, self.y.shape, out=self.y)

    def time_fused(self, layer, m):
        impl.conv2d_transformed(self.x, self.tw, None, PADDING, path="fused")

    def time_staged(self, layer, m):
        impl.conv2d_transformed(self.x, self.tw, None, PADDING, path="staged")

    def time_whole(self, layer, m):
        with winograd.use_tile(m):
            kernels.conv2d(self.x, self.w, padding=1, algorithm="winograd")


class WinogradStreamed(_StageTimings):
    """The streamed path on a ResNet-50 layer, batch 4 (F(2,3) or F(4,3)):
    the filters transformed inside the GEMM jobs alone (jobs with no
    tiles), the GEMMs with those transforms, and the whole convolution,
    beside the cached path's tuple GEMMs on the same V."""

    params = [list(LAYERS), [2, 4]]

    def setup(self, layer, m):
        from kernels.cpu import _winograd_streamed
        self.streamed = _winograd_streamed
        self.x, self.w = _layer_data(layer)
        self.tile = winograd.tile_for((3, 3), m)
        self.V = impl.transform_input(self.x, self.tile, PADDING,
                                      self.x.shape[2:])
        self.c_block = impl.streamed_c_block(_tuning.current().winograd,
                                             self.V.shape[1])
        self.no_tiles = np.empty(self.V.shape[:1] + (0,) + self.V.shape[2:],
                                 self.V.dtype)
        self.M = np.empty(self.V.shape[:2] + (self.w.shape[0],), self.V.dtype)
        self.M0 = np.empty((self.V.shape[0], 0, self.w.shape[0]), self.V.dtype)
        self.tw = winograd.transform_weights(self.w, m)
        self.packed = impl.packed_weights(self.tw, 0)
        for stage in (self.time_filter_transforms, self.time_streamed_gemm,
                      self.time_cached_gemm, self.time_streamed_conv):
            warm_up(lambda: stage(layer, m))

    def time_filter_transforms(self, layer, m):
        self.streamed.streamed_gemm(self.tile, self.no_tiles, self.w, self.M0,
                                    self.c_block)

    def time_streamed_gemm(self, layer, m):
        self.streamed.streamed_gemm(self.tile, self.V, self.w, self.M,
                                    self.c_block)

    def time_cached_gemm(self, layer, m):
        impl.tuple_gemm(self.V, self.tw.U[0], out=self.M, packed=self.packed)

    def time_streamed_conv(self, layer, m):
        impl.conv2d_streamed(self.x, self.w, None, PADDING, 1, self.tile)


def _contenders(x, w):
    """name -> zero-argument callable, warmed up; im2col / torch when there."""
    out = {"winograd": lambda: kernels.conv2d(x, w, padding=1, algorithm="winograd")}
    if "im2col" in kernels.built_algorithms():
        out["im2col"] = lambda: kernels.conv2d(x, w, padding=1, algorithm="im2col")
    if torch_available():
        import torch
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        out["torch"] = lambda: torch.nn.functional.conv2d(xt, wt, padding=1)
    for fn in out.values():
        warm_up(fn)
    return out


class WinogradVsPeers:
    """Winograd (default tile) against im2col and torch, ResNet-50 layers."""

    params = [list(LAYERS), ["winograd", "im2col", "torch"]]
    param_names = ["layer", "contender"]
    timeout = 300
    number = 1
    repeat = (3, 10, 20.0)
    warmup_time = 0.0

    def setup(self, layer, contender):
        x, w = _layer_data(layer)
        if contender == "im2col" and "im2col" not in kernels.built_algorithms():
            raise NotImplementedError("im2col is not built")
        if contender == "torch" and not torch_available():
            raise NotImplementedError("torch is not installed")
        self.run = _contenders(x, w)[contender]

    def time_conv2d(self, layer, contender):
        self.run()


# --------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------

def _accuracy_problem(m, r, kind, seed, dtype):
    """Standard-normal problems: "wide" (a 32-channel layer), "narrow2d"
    and "narrow1d" (1-3 channels, random zero padding 0..r-1, sizes around
    a few tiles: where the error of a few large inputs is least diluted)."""
    rng = np.random.default_rng(seed)
    if kind == "wide":
        x, w, pad = (rng.standard_normal((2, 32, 17, 19)),
                     rng.standard_normal((8, 32, r, r)), r // 2)
    else:
        c = 1 + seed % 3
        pad = int(rng.integers(0, r))
        if kind == "narrow2d":
            shape = (1, c, int(rng.integers(r, 3 * m + r)), int(rng.integers(r, 3 * m + r)))
            x, w = rng.standard_normal(shape), rng.standard_normal((2, c, r, r))
        else:
            x = rng.standard_normal((1, c, 1, int(rng.integers(r, 4 * m + r))))
            w, pad = rng.standard_normal((2, c, 1, r)), (0, pad)
    return x.astype(dtype), w.astype(dtype), pad


def measure_accuracy(m, r, dtype, seeds=60):
    """Observed error of F(m x m, r x r) in ``dtype`` against float64.

    Returns a dict: ``normwise`` max |y - y_ref| / (u max(|x| * |w|)) over
    all problems (what ERROR_CONSTANTS_BY_TILE documents, x2),
    ``bound_units`` kernels.accuracy.error_in_bound_units on the wide
    problems, ``relative`` max |y - y_ref| / max |y_ref| on the wide
    problems and ``bits`` = -log2(relative).
    """
    dtype = np.dtype(dtype)
    normwise = bound_units = relative = 0.0
    for kind in ("wide", "narrow2d", "narrow1d"):
        for seed in range(4 if kind == "wide" else seeds):
            x, w, pad = _accuracy_problem(m, r, kind, seed, dtype)
            with winograd.use_tile(m):
                y = kernels.conv2d(x, w, padding=pad, algorithm="winograd")
            x64, w64 = x.astype(np.float64), w.astype(np.float64)
            y_ref = reference.conv2d(x64, w64, padding=pad)
            scale = reference.conv2d(np.abs(x64), np.abs(w64), padding=pad)
            err = np.abs(y - y_ref)
            normwise = max(normwise, err.max() / (unit_roundoff(dtype) * scale.max()))
            if kind == "wide":
                relative = max(relative, err.max() / np.abs(y_ref).max())
                bound_units = max(bound_units, error_in_bound_units(
                    "winograd", dtype, y, y_ref, scale))
    return {"normwise": normwise, "bound_units": bound_units,
            "relative": relative, "bits": -math.log2(relative) if relative else 53.0}


def _accuracy_tiles():
    return [f"{m},{r}" for m, r in sorted(winograd.ERROR_CONSTANTS_BY_TILE)]


class WinogradAccuracy:
    """Observed error constants per tile and dtype (seeded problems).

    ``setup_cache`` measures every tile once per environment (one process);
    the 240 tracked values are then read from its result instead of each
    process re-measuring its tile."""

    params = [_accuracy_tiles(), ["float32", "float64"]]
    param_names = ["tile", "dtype"]
    timeout = 1200
    number = 1
    repeat = 1

    def setup_cache(self):
        results = {}
        for tile in _accuracy_tiles():
            m, r = map(int, tile.split(","))
            for dtype in ("float32", "float64"):
                results[tile, dtype] = measure_accuracy(m, r, dtype, seeds=20)
        return results

    def setup(self, results, tile, dtype):
        self.result = results[tile, dtype]

    def track_error_in_bound_units(self, results, tile, dtype):
        """kernels.accuracy.error_in_bound_units on 32-channel layers."""
        return self.result["bound_units"]

    track_error_in_bound_units.unit = "bound units"

    def track_normwise_constant(self, results, tile, dtype):
        return self.result["normwise"]

    track_normwise_constant.unit = "u * max(|x|*|w|)"

    def track_bits_kept(self, results, tile, dtype):
        return self.result["bits"]

    track_bits_kept.unit = "bits"


# --------------------------------------------------------------------------
# Script
# --------------------------------------------------------------------------

def _interleaved(fns, repeats, clock, warmup=0):
    """name -> median seconds of ``clock``, interleaved in seeded orders."""
    times = interleaved_times(fns, repeats, warmup=warmup, clock=clock)
    return {k: summarize(v).median for k, v in times.items()}


def _speed(layers=tuple(LAYERS), repeats=15):
    import numba
    import threadpoolctl
    blas = threadpoolctl.threadpool_info()
    print("BLAS:", [(i.get("internal_api"), i.get("architecture"), i.get("num_threads"))
                    for i in blas], "| numba threads:", numba.get_num_threads())
    modes = [("wall clock, default threads", time.perf_counter, None),
             ("CPU time, one thread", time.process_time, 1)]
    for mode, clock, threads in modes:
        print(f"\n## {mode} (interleaved medians of {repeats}, ms)")
        for layer in layers:
            x, w = _layer_data(layer)
            fns = _contenders(x, w)
            hw = x.shape[2:]
            tile = impl.tile_for_problem((3, 3), hw, BATCH, (x.shape[1], w.shape[0]),
                                         x.itemsize)
            tw = winograd.transform_weights(w, (tile.m_h, tile.m_w))
            V = impl.transform_input(x, tile, PADDING, hw)
            packed = impl.packed_weights(tw, 0)
            M = impl.tuple_gemm(V, tw.U[0], packed=packed)
            y = np.empty_like(x)
            fns["  input transform"] = lambda: impl.transform_input(x, tile, PADDING, hw, out=V)
            fns["  tuple GEMMs"] = lambda: impl.tuple_gemm(V, tw.U[0], out=M, packed=packed)
            fns["  output transform"] = lambda: impl.transform_output(M, tile, y.shape, out=y)
            fns["  fused path"] = lambda: impl.conv2d_transformed(x, tw, None, PADDING, "fused")
            fns["  staged path"] = lambda: impl.conv2d_transformed(x, tw, None, PADDING, "staged")
            for m in (2, 4, 6):
                def run(m=m):
                    with winograd.use_tile(m):
                        kernels.conv2d(x, w, padding=1, algorithm="winograd")
                fns[f"winograd F({m},3)"] = run
            context = threadpoolctl.threadpool_limits(threads) if threads else None
            previous = numba.get_num_threads()
            torch_threads = None
            if threads and torch_available():
                import torch
                torch_threads = torch.get_num_threads()
                torch.set_num_threads(threads)
            try:
                if threads:
                    numba.set_num_threads(threads)
                t = _interleaved(fns, repeats, clock, warmup=1)
            finally:
                numba.set_num_threads(previous)
                if context is not None:
                    context.restore_original_limits()
                if torch_threads:
                    torch.set_num_threads(torch_threads)
            ratios = ", ".join(f"{peer} / winograd = {t[peer] / t['winograd']:.2f}"
                               for peer in ("im2col", "torch") if peer in t)
            fused = impl._fused_blocks(tile, impl.tile_counts(hw, tile), BATCH,
                                       x.shape[1], w.shape[0], x.itemsize,
                                       _tuning.current().winograd)
            print(f"{layer} (default tile F({tile.m_h},3), {'fused' if fused else 'staged'}"
                  f" path; stages below are of that tile): {ratios}")
            for name, seconds in t.items():
                print(f"  {name:22s} {seconds * 1e3:8.2f}")


def _accuracy_table(seeds=6000, part=0, parts=1):
    """The table of observed constants; ``part`` of ``parts`` (0-based)
    measures every ``parts``-th tile, for runs in separate processes."""
    print("| tile | alpha | float32 normwise c | float32 bits kept | float32 c (bound units, "
          "C=32) | float64 normwise c | documented c (f32 / f64) |")
    print("|---|---|---|---|---|---|---|")
    tiles = sorted(winograd.ERROR_CONSTANTS_BY_TILE, key=lambda t: (t[1], t[0]))
    for m, r in tiles[part::parts]:
        a32 = measure_accuracy(m, r, np.float32, seeds)
        a64 = measure_accuracy(m, r, np.float64, seeds)
        doc = winograd.ERROR_CONSTANTS_BY_TILE[(m, r)]
        default = " (default)" if winograd.DEFAULT_TILE_BY_KERNEL[r] == m else ""
        print(f"| F({m},{r}){default} | {m + r - 1} | {a32['normwise']:.1f} | "
              f"{a32['bits']:.1f} | {a32['bound_units']:.1f} | {a64['normwise']:.1f} | "
              f"{doc['float32']:g} / {doc['float64']:g} |", flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "speed"
    if what == "accuracy":
        # [seeds] [part/parts]
        seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 6000
        part, parts = (map(int, sys.argv[3].split("/")) if len(sys.argv) > 3
                       else (0, 1))
        _accuracy_table(seeds, part, parts)
    else:
        _speed(tuple(sys.argv[2:]) or tuple(LAYERS))
