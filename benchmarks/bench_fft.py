"""FFT convolution: against scipy's fftconvolve, the other algorithms, torch.

asv classes (plain classes: ``params``/``param_names``, a seeded
``setup`` that warms every contender up, ``time_`` / ``track_`` methods):

``FFTvsFFTConvolve``  single-channel 1024² float32 image, every odd kernel
                      9..63, 'same' and 'valid': ``algorithm="fft"`` (the
                      kernel transform included: the weight cache is
                      cleared before each call) against
                      ``scipy.signal.fftconvolve`` with 1 and 2 workers.
``FFTStages``         the four stages on a 1024² image and a CNN layer.
``FFTvsDirect``       C = K in {1, 16, 64} at 56², kernels 3..31: fft
                      against direct / im2col (crossover sweep).
``FFTLayers``         VGG-16 and AlexNet layers: fft (model tile), fft with
                      forced 16x16 and 8x8 tiles (NNPACK's ft16x16/ft8x8),
                      im2col, winograd, direct, torch.
``FFTOneD``           1-D signals of 1e5 and 1e6 samples, kernels 9..63,
                      against scipy's oaconvolve and fftconvolve.
``FFTAccuracy``       observed error constants (kernels.accuracy units).

Script (interleaved medians, each repeat in a new seeded order:
``convbench.timing.interleaved_times``; the tables of the README)::

    python -m benchmarks.bench_fft speed [same|valid]   # vs fftconvolve
    python -m benchmarks.bench_fft crossover            # vs direct/im2col
    python -m benchmarks.bench_fft crossover-cpu        # same, CPU time, 1 thread
    python -m benchmarks.bench_fft layers               # VGG/AlexNet
    python -m benchmarks.bench_fft layers-cpu           # same, CPU time, 1 thread
    python -m benchmarks.bench_fft oned                 # 1-D signals
    python -m benchmarks.bench_fft accuracy             # error constants
    python -m benchmarks.bench_fft effort               # MEASURE vs ESTIMATE

Run the script with ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`` so
that OpenBLAS picks its kernel for the machine.

Classes and script with SciPy peers fix glibc malloc's thresholds first
(``convbench.machine.keep_freed_memory``): otherwise, depending on the
process's heap history, SciPy's large temporaries were mapped and
page-faulted afresh on every call (``fftconvolve`` 1024^2: 1.4-1.6x
slower), a handicap that has nothing to do with SciPy.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import kernels
import reference
from kernels.accuracy import error_in_bound_units
from kernels.cpu import fft

from convbench.machine import keep_freed_memory
from convbench.timing import interleaved_times, summarize

from .common import make_data, torch_available, warm_up

IMAGE = (1, 1, 1024, 1024)
ODD_KERNELS = list(range(9, 64, 2))
#: The asv grid's kernels (every odd one is the script's: 28 sizes x 2
#: modes x 3 contenders took a quarter of the suite's --quick wall time).
ASV_KERNELS = [9, 15, 23, 31, 47, 63]


# --------------------------------------------------------------------------
# Contenders
# --------------------------------------------------------------------------

def fft_fresh_weights(x, w, padding, **kw):
    """``algorithm="fft"`` with the weight spectra recomputed every call."""
    def run():
        fft.clear_caches()
        return kernels.conv2d(x, w, padding=padding, algorithm="fft", **kw)
    return run


def fftconvolve(x, w, mode, workers):
    """scipy.signal.fftconvolve of one channel, as a correlation."""
    import scipy.fft
    import scipy.signal
    img, flipped = x[0, 0], np.ascontiguousarray(w[0, 0, ::-1, ::-1])

    def run():
        with scipy.fft.set_workers(workers):
            return scipy.signal.fftconvolve(img, flipped, mode=mode)
    return run


def algorithm(name, x, w, **conv_kwargs):
    if name not in kernels.built_algorithms():
        raise NotImplementedError(f"{name} is not built")
    return lambda: kernels.conv2d(x, w, algorithm=name, **conv_kwargs)


def fft_with_tile(x, w, tile, stride=1, padding=0):
    """The FFT module with forced transform lengths (weights cached)."""
    s = (stride, stride)
    p = (padding,) * 4
    return lambda: fft.conv2d(x, w, None, s, p, (1, 1), 1, tile=tile)


def torch_conv(x, w, **conv_kwargs):
    if not torch_available():
        raise NotImplementedError("torch is not installed")
    import torch
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    return lambda: torch.nn.functional.conv2d(xt, wt, **conv_kwargs)


# --------------------------------------------------------------------------
# asv classes
# --------------------------------------------------------------------------

class FFTvsFFTConvolve:
    """1024² single channel, odd kernels 9..63, kernel transform included."""

    params = [ASV_KERNELS, ["same", "valid"],
              ["fft", "fftconvolve-1", "fftconvolve-2"]]
    param_names = ["k", "mode", "contender"]
    timeout = 600
    number = 1
    repeat = (3, 10, 20.0)
    warmup_time = 0.0

    def setup(self, k, mode, contender):
        keep_freed_memory()
        x, w = make_data(IMAGE, (1, 1, k, k))
        if contender == "fft":
            self.run = fft_fresh_weights(x, w, mode)
        else:
            self.run = fftconvolve(x, w, mode, int(contender[-1]))
        warm_up(self.run, 2)

    def time_conv(self, k, mode, contender):
        self.run()


LAYERS = {
    # name: (x_shape, w_shape, stride, padding)
    "alexnet-conv1": ((1, 3, 224, 224), (64, 3, 11, 11), 4, 2),
    "alexnet-conv2": ((1, 64, 27, 27), (192, 64, 5, 5), 1, 2),
    "alexnet-conv3": ((1, 192, 13, 13), (384, 192, 3, 3), 1, 1),
    "vgg16-conv1_2": ((1, 64, 224, 224), (64, 64, 3, 3), 1, 1),
    "vgg16-conv2_2": ((1, 128, 112, 112), (128, 128, 3, 3), 1, 1),
    "vgg16-conv3_2": ((1, 256, 56, 56), (256, 256, 3, 3), 1, 1),
    "vgg16-conv4_2": ((1, 512, 28, 28), (512, 512, 3, 3), 1, 1),
}


def layer_contenders(layer):
    """name -> warm callable for one layer (missing ones left out)."""
    x_shape, w_shape, stride, padding = LAYERS[layer]
    x, w = make_data(x_shape, w_shape)
    kw = dict(stride=stride, padding=padding)
    out = {"fft": algorithm("fft", x, w, **kw),
           "fft-16x16": fft_with_tile(x, w, (16, 16), stride, padding),
           "fft-8x8": fft_with_tile(x, w, (8, 8), stride, padding)}
    for name in ("im2col", "winograd", "direct"):
        if name in kernels.built_algorithms():
            if name == "winograd" and (w_shape[2:] != (3, 3) or stride != 1):
                continue
            out[name] = algorithm(name, x, w, **kw)
    if torch_available():
        out["torch"] = torch_conv(x, w, **kw)
    for fn in out.values():
        warm_up(fn)
    return out


class FFTLayers:
    """VGG-16 / AlexNet layers (batch 1, float32, weights cached)."""

    params = [list(LAYERS), ["fft", "fft-16x16", "fft-8x8", "im2col",
                             "winograd", "direct", "torch"]]
    param_names = ["layer", "contender"]
    timeout = 600
    number = 1
    repeat = (3, 10, 30.0)
    warmup_time = 0.0

    def setup(self, layer, contender):
        runs = layer_contenders(layer)
        if contender not in runs:
            raise NotImplementedError(f"{contender} not available here")
        self.run = runs[contender]

    def time_conv2d(self, layer, contender):
        self.run()


class FFTStages:
    """input_spectra / weight_spectra / contract / inverse, one chunk."""

    params = [["1024²-k9", "1024²-k63", "vgg16-conv3_2", "c16-56²-k9"]]
    param_names = ["problem"]
    timeout = 300
    number = 1
    repeat = (3, 10, 20.0)
    warmup_time = 0.0

    PROBLEMS = {
        "1024²-k9": (IMAGE, (1, 1, 9, 9), 4),
        "1024²-k63": (IMAGE, (1, 1, 63, 63), 31),
        "vgg16-conv3_2": ((1, 256, 56, 56), (256, 256, 3, 3), 1),
        "c16-56²-k9": ((1, 16, 56, 56), (16, 16, 9, 9), 4),
    }

    def setup(self, problem):
        x_shape, w_shape, p = self.PROBLEMS[problem]
        self.x, self.w = make_data(x_shape, w_shape)
        self.geom = fft.plan_geometry(x_shape, w_shape, (1, 1), (p,) * 4,
                                      (1, 1), 1, np.float32)
        self.xpad = fft.padded_input(self.x, self.geom)
        self.X = fft.input_spectra(self.x, self.geom, None, self.xpad)
        self.W = fft.weight_spectra(self.w, self.geom)
        self.Y = fft.contract(self.X, self.W, 1)
        self.y = np.empty(self.geom.out_shape, np.float32)
        for stage in (self.time_pad, self.time_input_spectra,
                      self.time_weight_spectra, self.time_contract,
                      self.time_inverse):
            warm_up(lambda: stage(problem))

    def time_pad(self, problem):
        fft.padded_input(self.x, self.geom)

    def time_input_spectra(self, problem):
        fft.input_spectra(self.x, self.geom, None, self.xpad)

    def time_weight_spectra(self, problem):
        fft.weight_spectra(self.w, self.geom)

    def time_contract(self, problem):
        fft.contract(self.X, self.W, 1)

    def time_inverse(self, problem):
        # inverse destroys its input: time on a copy, as conv2d would own it
        fft.inverse(self.Y.copy(), self.geom, None, self.y)


CROSSOVER_KERNELS = [3, 5, 7, 9, 11, 13, 15, 21, 31]


class FFTvsDirect:
    """C = K channels at 56² (batch 1), kernels 3..31, 'same' padding."""

    params = [[1, 16, 64], CROSSOVER_KERNELS, ["fft", "direct", "im2col"]]
    param_names = ["channels", "k", "contender"]
    timeout = 600
    number = 1
    repeat = (3, 10, 20.0)
    warmup_time = 0.0

    def setup(self, channels, k, contender):
        x, w = make_data((1, channels, 56, 56), (channels, channels, k, k))
        self.run = algorithm(contender, x, w, padding=k // 2)
        warm_up(self.run)

    def time_conv2d(self, channels, k, contender):
        self.run()


class FFTOneD:
    """1-D signals (H = 1 fast path) against scipy's oaconvolve/fftconvolve."""

    params = [[100_000, 1_000_000], [9, 31, 63],
              ["fft", "oaconvolve", "fftconvolve"]]
    param_names = ["length", "k", "contender"]
    timeout = 300
    number = 1
    repeat = (3, 10, 20.0)
    warmup_time = 0.0

    def setup(self, length, k, contender):
        import scipy.signal
        keep_freed_memory()
        x, w = make_data((1, 1, length), (1, 1, k))
        if contender == "fft":
            def run():
                fft.clear_caches()
                return kernels.conv1d(x, w, padding="same", algorithm="fft")
            self.run = run
        else:
            f = getattr(scipy.signal, contender)
            sig, ker = x[0, 0], np.ascontiguousarray(w[0, 0, ::-1])
            self.run = lambda: f(sig, ker, mode="same")
        warm_up(self.run)

    def time_conv1d(self, length, k, contender):
        self.run()


# --------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------

def observed_constant(x, w, stride=1, padding=0, dilation=1, groups=1,
                      exact_reference=False):
    """max |y - y_ref| / (u max(|x| * |w|)) of algorithm="fft"."""
    y = kernels.conv2d(x, w, stride=stride, padding=padding,
                       dilation=dilation, groups=groups, algorithm="fft")
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y_ref = reference.conv2d(x, w, **kw)
    scale = reference.conv2d(np.abs(x), np.abs(w), **kw)
    return error_in_bound_units("fft", x.dtype, y, y_ref, scale)


def accuracy_problems(dtype, rng, n_random=60):
    """(description, x, w, conv kwargs): the measured set.

    float64 problems use small integers, for which the float64 reference
    (direct summation) is exact, so the measured error is the FFT's alone.
    """
    def data(shape):
        if dtype == np.float64:
            return rng.integers(-64, 65, shape).astype(dtype)
        return rng.standard_normal(shape).astype(dtype)

    out = []
    for k in (3, 9, 15, 31, 63):
        for mode in ("same", "valid"):
            out.append((f"1x1024² k={k} {mode}", data(IMAGE),
                        data((1, 1, k, k)), dict(padding=mode)))
    # Positive image (pixels in [0, 1)), zero-mean filter: |y| << |x|*|w|.
    img = rng.random(IMAGE).astype(dtype)
    out.append(("1x1024² [0,1) image k=31", img, data((1, 1, 31, 31)),
                dict(padding="same")))
    for c, hw, k in ((64, 56, 3), (64, 56, 5), (64, 28, 9), (16, 56, 15)):
        out.append((f"C=K={c} {hw}² k={k}", data((1, c, hw, hw)),
                    data((c, c, k, k)), dict(padding=k // 2)))
    out.append(("C=K=64 56² k=3 stride 2", data((2, 64, 56, 56)),
                data((64, 64, 3, 3)), dict(padding=1, stride=2)))
    out.append(("C=K=64 groups=8 dilation 2", data((1, 64, 40, 40)),
                data((64, 8, 3, 3)), dict(padding=2, dilation=2, groups=8)))
    out.append(("1-D 1e5 k=63", data((1, 1, 1, 100_000)),
                data((1, 1, 1, 63)), dict(padding=(0, 31))))
    for i in range(n_random):
        g = int(rng.integers(1, 3))
        c, k = g * int(rng.integers(1, 9)), g * int(rng.integers(1, 9))
        kh, kw = (int(v) for v in rng.integers(1, 12, 2))
        h, w_ = (int(v) for v in rng.integers(12, 90, 2))
        s = tuple(int(v) for v in rng.integers(1, 3, 2))
        d = tuple(int(v) for v in rng.integers(1, 3, 2))
        if d[0] * (kh - 1) + 1 > h or d[1] * (kw - 1) + 1 > w_:
            continue
        out.append((f"random {i}", data((int(rng.integers(1, 3)), c, h, w_)),
                    data((k, c // g, kh, kw)),
                    dict(stride=s, dilation=d, groups=g,
                         padding=tuple(int(v) for v in rng.integers(0, 4, 2)))))
    return out


class FFTAccuracy:
    """Observed error constants of a few problems (kernels.accuracy units)."""

    params = [["float32", "float64"],
              ["1x1024² k=63 same", "C=K=64 56² k=3", "C=K=64 56² k=5"]]
    param_names = ["dtype", "problem"]
    timeout = 600

    def setup(self, dtype, problem):
        rng = np.random.default_rng(0)
        for name, x, w, kw in accuracy_problems(np.dtype(dtype).type, rng, 0):
            if name == problem:
                self.problem = (x, w, kw)
                return
        raise NotImplementedError(problem)

    def track_error_constant(self, dtype, problem):
        x, w, kw = self.problem
        return observed_constant(x, w, **kw)

    track_error_constant.unit = "u max(|x|*|w|)"


# --------------------------------------------------------------------------
# Script
# --------------------------------------------------------------------------

def interleaved(fns, repeats, warmup=0):
    """name -> array of wall times, index r from repeat r; every repeat
    calls the contenders in a new seeded order (after ``warmup`` untimed
    calls of each)."""
    times = interleaved_times(fns, repeats, warmup=warmup)
    return {name: np.array(v) for name, v in times.items()}


def _blas_note():
    from threadpoolctl import threadpool_info
    blas = [f"{i.get('internal_api')} {i.get('version')} "
            f"{i.get('architecture')} ({i.get('num_threads')} threads)"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(blas)


def speed(mode="same", repeats=9, kernel_sizes=ODD_KERNELS):
    import numba
    print(f"# 1024² float32, mode={mode!r}, interleaved, median of {repeats}; "
          f"numba threads {numba.get_num_threads()}; BLAS: {_blas_note()}")
    print("| k | tile | fft ms | fftconvolve(1) ms | fftconvolve(2) ms | "
          "fftconvolve(1) / fft | fftconvolve(2) / fft | "
          "fftconvolve(1) / fft on 1 thread |")
    print("|---|---|---|---|---|---|---|---|")
    threads = numba.get_num_threads()
    for k in kernel_sizes:
        x, w = make_data(IMAGE, (1, 1, k, k), seed=k)
        default = fft_fresh_weights(x, w, mode)

        def one_thread(default=default):
            numba.set_num_threads(1)
            try:
                return default()
            finally:
                numba.set_num_threads(threads)
        fns = {"fft": default, "fft1": one_thread,
               "sp1": fftconvolve(x, w, mode, 1),
               "sp2": fftconvolve(x, w, mode, 2)}
        t = interleaved(fns, repeats, warmup=2)
        pad = (k // 2,) * 4 if mode == "same" else (0,) * 4
        tile = fft.choose_tile(IMAGE, (1, 1, k, k), (1, 1), pad, (1, 1), 1)
        r1 = np.median(t["sp1"] / t["fft"])
        r2 = np.median(t["sp2"] / t["fft"])
        r11 = np.median(t["sp1"] / t["fft1"])
        med = {n: summarize(v).median * 1e3 for n, v in t.items()}
        print(f"| {k} | {tile[0]}x{tile[1]} | {med['fft']:.2f} | "
              f"{med['sp1']:.2f} | {med['sp2']:.2f} "
              f"| {r1:.2f} | {r2:.2f} | {r11:.2f} |", flush=True)


def crossover(repeats=5):
    print(f"# 56² batch 1, 'same' padding, float32, median of {repeats}; "
          f"ratio = other / fft (> 1: fft faster)")
    others = [a for a in ("direct", "im2col") if a in kernels.built_algorithms()]
    if torch_available():
        others.append("torch")
    print("| C = K | k | fft ms | " + " | ".join(f"{o} ms" for o in others)
          + " | " + " | ".join(f"{o}/fft" for o in others) + " |")
    print("|---" * (3 + 2 * len(others)) + "|")
    for c in (1, 16, 64):
        for k in CROSSOVER_KERNELS:
            x, w = make_data((1, c, 56, 56), (c, c, k, k))
            fns = {"fft": algorithm("fft", x, w, padding=k // 2)}
            for o in others:
                fns[o] = (torch_conv(x, w, padding=k // 2) if o == "torch"
                          else algorithm(o, x, w, padding=k // 2))
            t = interleaved(fns, repeats, warmup=2)
            med = {n: summarize(v).median * 1e3 for n, v in t.items()}
            ratios = [np.median(t[o] / t["fft"]) for o in others]
            print(f"| {c} | {k} | {med['fft']:.2f} | "
                  + " | ".join(f"{med[o]:.2f}" for o in others) + " | "
                  + " | ".join(f"{r:.2f}" for r in ratios) + " |", flush=True)


def _cpu_interleaved(fns, repeats, warmup=0):
    """name -> median CPU seconds (time.process_time), interleaved as
    :func:`interleaved`."""
    times = interleaved_times(fns, repeats, warmup=warmup,
                              clock=time.process_time)
    return {name: summarize(v).median for name, v in times.items()}


def crossover_cpu(repeats=5):
    """The crossover table in CPU time with every pool on one thread.

    Robust on a shared machine: a descheduled thread does not count, and
    no parallel region waits for one.
    """
    import numba
    from threadpoolctl import threadpool_limits
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    others = [a for a in ("direct", "im2col") if a in kernels.built_algorithms()]
    if torch_available():
        import torch
        torch.set_num_threads(1)
        others.append("torch")
    print(f"# 56² batch 1, 'same', float32, weights cached, CPU time on one "
          f"thread, median of {repeats}; ratio = other / fft")
    print("| C = K | k | fft ms | " + " | ".join(f"{o} ms" for o in others)
          + " | " + " | ".join(f"{o}/fft" for o in others) + " |")
    print("|---" * (3 + 2 * len(others)) + "|")
    try:
        with threadpool_limits(1):
            for c in (1, 16, 64):
                for k in CROSSOVER_KERNELS:
                    x, w = make_data((1, c, 56, 56), (c, c, k, k))
                    fns = {"fft": algorithm("fft", x, w, padding=k // 2)}
                    for o in others:
                        fns[o] = (torch_conv(x, w, padding=k // 2)
                                  if o == "torch"
                                  else algorithm(o, x, w, padding=k // 2))
                    t = _cpu_interleaved(fns, repeats, warmup=2)
                    print(f"| {c} | {k} | {t['fft'] * 1e3:.2f} | "
                          + " | ".join(f"{t[o] * 1e3:.2f}" for o in others)
                          + " | " + " | ".join(f"{t[o] / t['fft']:.2f}"
                                               for o in others) + " |",
                          flush=True)
    finally:
        numba.set_num_threads(threads)


def layers(repeats=5, cpu=False):
    """VGG-16 / AlexNet layers; ``cpu``: CPU time with every pool on one
    thread (robust on a shared machine) instead of wall clock."""
    import contextlib

    import numba
    from threadpoolctl import threadpool_limits
    threads = numba.get_num_threads()
    clock = "CPU time on one thread" if cpu else "wall clock"
    blas = "limited to 1 thread" if cpu else _blas_note()
    print(f"# batch 1, float32, weights cached, {clock}, median of {repeats} "
          f"(ms); BLAS: {blas}")
    names = ["fft", "fft-16x16", "fft-8x8", "im2col", "winograd", "direct",
             "torch"]
    print("| layer | fft tile | " + " | ".join(names) + " |")
    print("|---" * (2 + len(names)) + "|")
    limit = threadpool_limits(1) if cpu else contextlib.nullcontext()
    if cpu:
        numba.set_num_threads(1)
        if torch_available():
            import torch
            torch.set_num_threads(1)
    try:
        with limit:
            for layer, (x_shape, w_shape, stride, padding) in LAYERS.items():
                runs = layer_contenders(layer)
                if cpu:
                    t = _cpu_interleaved(runs, repeats)
                else:
                    t = {n: summarize(v).median
                         for n, v in interleaved(runs, repeats).items()}
                tile = fft.choose_tile(x_shape, w_shape, (stride,) * 2,
                                       (padding,) * 4, (1, 1), 1)
                cells = [f"{t[n] * 1e3:.1f}" if n in t else "-" for n in names]
                print(f"| {layer} | {tile[0]}x{tile[1]} | "
                      + " | ".join(cells) + " |", flush=True)
    finally:
        numba.set_num_threads(threads)


def oned(repeats=7):
    import scipy.signal
    print("| length | k | tile | fft ms | oaconvolve ms | fftconvolve ms |")
    print("|---|---|---|---|---|---|")
    for length in (100_000, 1_000_000):
        for k in (9, 31, 63):
            x, w = make_data((1, 1, length), (1, 1, k))
            sig, ker = x[0, 0], np.ascontiguousarray(w[0, 0, ::-1])

            def ours():
                fft.clear_caches()
                return kernels.conv1d(x, w, padding="same", algorithm="fft")
            fns = {"fft": ours,
                   "oa": lambda: scipy.signal.oaconvolve(sig, ker, mode="same"),
                   "fftc": lambda: scipy.signal.fftconvolve(sig, ker, mode="same")}
            t = interleaved(fns, repeats, warmup=2)
            tile = fft.choose_tile((1, 1, 1, length), (1, 1, 1, k), (1, 1),
                                   (0, 0, k // 2, k // 2), (1, 1), 1)
            print(f"| {length} | {k} | {tile[1]} | "
                  + " | ".join(f"{summarize(t[n]).median * 1e3:.2f}" for n in fns)
                  + " |", flush=True)


def accuracy(n_random=60):
    rng = np.random.default_rng(2024)
    print("| dtype | problem | observed c |")
    print("|---|---|---|")
    for dtype in (np.float32, np.float64):
        worst = (0.0, "")
        for name, x, w, kw in accuracy_problems(dtype, rng, n_random):
            c = observed_constant(x, w, **kw)
            worst = max(worst, (c, name))
            if not name.startswith("random"):
                print(f"| {np.dtype(dtype).name} | {name} | {c:.2f} |",
                      flush=True)
        print(f"| {np.dtype(dtype).name} | max over all (incl. {n_random} "
              f"random) | {worst[0]:.2f} ({worst[1]}) |", flush=True)


def effort(repeats=7):
    """First call (planning) and steady state, FFTW_MEASURE vs ESTIMATE."""
    import pyfftw
    print("| problem | effort | first call ms | steady ms |")
    print("|---|---|---|---|")
    problems = [(IMAGE, (1, 1, k, k)) for k in (9, 31, 63)]
    problems += [((1, 64, 56, 56), (64, 64, 3, 3)),
                 ((1, 16, 56, 56), (16, 16, 9, 9))]
    before = fft.get_planner_effort()
    try:
        for x_shape, w_shape in problems:
            x, w = make_data(x_shape, w_shape)
            k = w_shape[-1]
            runs, first = {}, {}
            for eff in ("FFTW_ESTIMATE", "FFTW_MEASURE"):
                fft.set_planner_effort(eff)
                pyfftw.forget_wisdom()
                fft.clear_caches(plans=True)
                run = fft_fresh_weights(x, w, k // 2)
                t0 = time.perf_counter()
                run()
                first[eff] = time.perf_counter() - t0

                def steady(run=run, eff=eff):
                    fft.set_planner_effort(eff)
                    run()
                runs[eff] = steady
            t = interleaved(runs, repeats)
            for eff in runs:
                print(f"| {x_shape} * {w_shape} | {eff} | "
                      f"{first[eff] * 1e3:.0f} | {summarize(t[eff]).median * 1e3:.2f} |",
                      flush=True)
    finally:
        fft.set_planner_effort(before)


def main(argv):
    keep_freed_memory()
    what = argv[0] if argv else "speed"
    if what == "speed":
        speed(argv[1] if len(argv) > 1 else "same")
    elif what in ("crossover", "layers", "oned", "accuracy", "effort"):
        globals()[what]()
    elif what == "crossover-cpu":
        crossover_cpu()
    elif what == "layers-cpu":
        layers(cpu=True)
    else:
        raise SystemExit(f"unknown mode {what!r}; see the module docstring")


if __name__ == "__main__":
    main(sys.argv[1:])
