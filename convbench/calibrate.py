"""``convbench calibrate``: measure the thresholds of ``algorithm="auto"``.

:mod:`kernels._choose` picks an algorithm with a cost model whose
thresholds (``kernels._choose.default_thresholds("cpu")``, from
``kernels/cpu/_tuning.py``) are crossovers:

``fft_min_area_single``
    kernel area from which FFT beats the other algorithms on one channel
    (C = K = 1): a kernel-size sweep of a 256 x 256 image;
``fft_min_area_multi``
    the same with many channels: C = K = 16 at 32 x 32;
``direct_max_macs``
    multiply-adds per image up to which direct beats the rest: 3 x 3, C = K
    = 16, growing images;
``im2col_max_area``
    the largest kernel area (kH * kW) at which im2col still beats direct:
    C = K = 64 at 28 x 28, kernels 1, 3, 5, 7;
``winograd_min_channels``
    channel count from which Winograd beats the fallback on 3 x 3
    stride-1 layers: C = K growing at 56 x 56, batch 4;
``winograd_min_pixels``
    image size (H * W) from which it does so with many channels: C = K =
    128, batch 4, sides 7 to 56 (ResNet-50's 3x3 layers).

The Winograd thresholds are measured against the algorithm the cost model
would otherwise run on a 3 x 3 layer: im2col or direct, as
``im2col_max_area`` says (see ``_winograd_rivals``).

Each is a few quick interleaved sweeps (five repeats, no accuracy check,
no peers); the whole calibration takes well under a minute once the
kernels are compiled.  A threshold whose algorithms are not built keeps
its default.  The result is written with
:func:`kernels._calibration.save_thresholds`, which ``algorithm="auto"``
reads from then on.
"""

from __future__ import annotations

import math
import time

from .crossover import crossover
from .sweep import SweepConfig, run_sweep
from .workloads import ConvCase, kernel_sweep

__all__ = ["calibrate", "measure_thresholds"]

_REPEATS = 5


def _times(cases, algorithms, progress):
    """{algorithm: [median seconds per case]} (None where not measured)."""
    config = SweepConfig(algorithms=tuple(algorithms), peers=(), repeats=_REPEATS,
                         check=False, progress=progress)
    result = run_sweep(cases, config)
    if result.interrupted:
        raise KeyboardInterrupt
    table = {a: {} for a in algorithms}
    for m in result.measurements:
        table[m.contender][m.case] = m.median_s if m.status == "ok" else None
    return {a: [table[a].get(c.label) for c in cases] for a in algorithms}


def _best_of(times, names):
    """Per case, the fastest time among ``names`` (None if none ran)."""
    out = []
    for i in range(len(next(iter(times.values())))):
        vals = [times[n][i] for n in names if times[n][i] is not None]
        out.append(min(vals) if vals else None)
    return out


def _crossover_or_edges(sizes, slow, fast, below, beyond):
    """Crossover size; ``below`` if ``fast`` wins everywhere, ``beyond`` if
    it never takes over (both given as values of the threshold)."""
    at = crossover(sizes, slow, fast)
    if at is None:
        return beyond, None
    if at == sizes[0]:
        return below, at
    return at, at


def _fft_area(built, x_shape, k_out, kernel_sizes, progress, report):
    others = [a for a in built if a != "fft"]
    cases = kernel_sweep(x_shape, k_out, kernel_sizes)
    times = _times(cases, built, progress)
    best_other = _best_of(times, others)
    sizes = list(kernel_sizes)
    k, at = _crossover_or_edges(sizes, best_other, times["fft"],
                                below=sizes[0], beyond=sizes[-1] + 2)
    report.append({"x_shape": x_shape, "K": k_out, "kernel_sizes": sizes,
                   "times_s": times, "crossover_kernel": at})
    return k * k


def _direct_macs(built, progress, report):
    c = 16
    sides = (8, 12, 16, 24, 32, 48, 64)
    cases = [ConvCase(f"{s}x{s}", (1, c, s, s), (c, c, 3, 3), 1, 1, 1)
             for s in sides]
    times = _times(cases, built, progress)
    # FFT is chosen by kernel area before this threshold is consulted.
    others = [a for a in built if a not in ("direct", "fft")]
    macs = [float(c * c * 9 * s * s) for s in sides]   # _choose's formula
    best_other = _best_of(times, others)
    at = crossover(macs, times["direct"], best_other)
    report.append({"x_shape": [1, c, "s", "s"], "sides": list(sides),
                   "macs": macs, "times_s": times, "crossover_macs": at})
    if at is None:                 # direct wins throughout
        return macs[-1]
    i = macs.index(at)
    if i == 0:                     # the others win from the smallest size
        return macs[0] / 2
    return math.sqrt(macs[i - 1] * macs[i])   # between the two sizes


def _im2col_area(built, progress, report):
    sizes = (1, 3, 5, 7)
    cases = kernel_sweep((1, 64, 28, 28), 64, sizes)
    times = _times(cases, ["direct", "im2col"], progress)
    at = crossover(list(sizes), times["im2col"], times["direct"])
    report.append({"x_shape": [1, 64, 28, 28], "K": 64,
                   "kernel_sizes": list(sizes), "times_s": times,
                   "crossover_kernel": at})
    if at is None:                  # im2col wins up to the largest kernel
        return 4 * sizes[-1] ** 2
    i = sizes.index(at)
    return sizes[i - 1] ** 2 if i > 0 else 0


def _winograd_rivals(built, im2col_max_area):
    """What "auto" would run instead of Winograd on a 3 x 3 layer.

    The cost model consults the Winograd thresholds only after FFT (by
    kernel area) and direct (by multiply-adds) have declined, and then
    falls back to im2col (kernels of at most ``im2col_max_area``) or
    direct; comparing against both would let an algorithm's wins on
    layers it is never chosen for veto Winograd.
    """
    fallback = "im2col" if im2col_max_area >= 9 else "direct"
    rivals = [a for a in built if a == fallback]
    return rivals or [a for a in built if a not in ("winograd", "fft")]


def _winograd_channels(built, im2col_max_area, progress, report):
    # Batch 4 at 56 x 56, as ResNet-50's first 3x3 layers: at 28 x 28 with
    # one image (49 tiles of F(4,3)) Winograd never caught up with im2col
    # below 128 channels, while it wins on the real 64@56^2 layer.
    channels = (8, 16, 32, 64, 128)
    cases = [ConvCase(f"C=K={c}", (4, c, 56, 56), (c, c, 3, 3), 1, 1, 1)
             for c in channels]
    times = _times(cases, built, progress)
    best_other = _best_of(times, _winograd_rivals(built, im2col_max_area))
    value, at = _crossover_or_edges(list(channels), best_other,
                                    times["winograd"], below=channels[0],
                                    beyond=2 * channels[-1])
    report.append({"x_shape": [4, "C", 56, 56], "channels": list(channels),
                   "times_s": times, "crossover_channels": at})
    return value


def _winograd_pixels(built, im2col_max_area, progress, report):
    c, batch = 128, 4
    sides = (7, 14, 21, 28, 42, 56)
    cases = [ConvCase(f"{s}x{s}", (batch, c, s, s), (c, c, 3, 3), 1, 1, 1)
             for s in sides]
    times = _times(cases, built, progress)
    best_other = _best_of(times, _winograd_rivals(built, im2col_max_area))
    pixels = [s * s for s in sides]
    value, at = _crossover_or_edges(pixels, best_other, times["winograd"],
                                    below=pixels[0], beyond=4 * pixels[-1])
    report.append({"x_shape": [batch, c, "s", "s"], "sides": list(sides),
                   "times_s": times, "crossover_pixels": at})
    return value


def measure_thresholds(progress=True, log=print):
    """Measure every threshold whose algorithms are built.

    Returns
    -------
    thresholds : dict
        Measured values, keys of ``kernels._choose.default_thresholds()``.
    report : dict
        The sweeps behind each value (times, crossovers), for the file's meta.
    """
    import kernels
    built = list(kernels.built_algorithms())
    thresholds, report = {}, {}

    def step(key, needs, fn, rivals=None):
        missing = [a for a in needs if a not in built]
        rivals = [a for a in built if a not in needs and a in (rivals or built)]
        if missing or not rivals:
            why = (f"{', '.join(missing)} not built" if missing
                   else "no rival algorithm built")
            log(f"{key}: kept the default ({why})")
            return
        t0 = time.perf_counter()
        report[key] = []
        thresholds[key] = fn(report[key])
        log(f"{key}: {thresholds[key]:g}  ({time.perf_counter() - t0:.1f} s)")

    step("fft_min_area_single", ["fft"],
         lambda r: _fft_area(built, (1, 1, 256, 256), 1, (3, 5, 7, 9, 11, 13, 15, 19),
                             progress, r))
    step("fft_min_area_multi", ["fft"],
         lambda r: _fft_area(built, (1, 16, 32, 32), 16, (3, 5, 7, 9, 11, 13),
                             progress, r))
    step("direct_max_macs", ["direct"], lambda r: _direct_macs(built, progress, r),
         rivals=["im2col", "winograd"])
    step("im2col_max_area", ["im2col"],
         lambda r: _im2col_area(built, progress, r), rivals=["direct"])
    from kernels._choose import default_thresholds
    area = thresholds.get("im2col_max_area",
                          default_thresholds("cpu")["im2col_max_area"])
    step("winograd_min_channels", ["winograd"],
         lambda r: _winograd_channels(built, area, progress, r),
         rivals=["direct", "im2col"])
    step("winograd_min_pixels", ["winograd"],
         lambda r: _winograd_pixels(built, area, progress, r),
         rivals=["direct", "im2col"])
    return thresholds, report


def calibrate(path=None, write=True, progress=True, log=print):
    """Measure the thresholds and save them for ``algorithm="auto"``.

    Returns the dict written (the defaults with the measured values over
    them).
    """
    from kernels._calibration import calibration_path, save_thresholds
    from kernels._choose import default_thresholds, machine_key
    from .machine import machine_info

    t0 = time.perf_counter()
    measured, report = measure_thresholds(progress=progress, log=log)
    thresholds = default_thresholds("cpu")
    thresholds.update(measured)
    meta = {"measured": sorted(measured), "sweeps": report,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine_info(measure=False),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    log(f"calibration took {meta['seconds']} s")
    if write:
        where = save_thresholds("cpu", thresholds, machine_key("cpu"), meta,
                                path or calibration_path())
        log(f"wrote {where}")
    else:
        log("dry run: nothing written")
    return thresholds
