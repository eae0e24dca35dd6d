"""``convbench calibrate``: measure the thresholds of ``algorithm="auto"``.

:mod:`kernels._choose` picks an algorithm with a cost model whose
thresholds (``kernels._choose.DEFAULT_THRESHOLDS``) are crossovers:

``fft_min_area_single``
    kernel area from which FFT beats the other algorithms on one channel
    (C = K = 1): a kernel-size sweep of a 256 x 256 image;
``fft_min_area_multi``
    the same with many channels: C = K = 16 at 32 x 32;
``direct_max_macs``
    multiply-adds per image up to which direct beats the rest: 3 x 3, C = K
    = 16, growing images;
``winograd_min_channels``
    channel count from which Winograd beats im2col on 3 x 3 stride-1
    layers: C = K growing at 56 x 56, batch 4;
``winograd_min_pixels``
    image size (H * W) from which it does so with many channels: C = K =
    128, batch 4, sides 7 to 56 (ResNet-50's 3x3 layers).

The Winograd thresholds are measured against im2col alone, the algorithm
the cost model falls back to (see ``_winograd_rivals``).

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


def _winograd_rivals(built):
    """What "auto" would run instead of Winograd: im2col.

    The cost model consults the Winograd thresholds only after FFT (by
    kernel area) and direct (by multiply-adds) have declined, so im2col
    is the algorithm it falls back to; comparing against direct too would
    let direct's wins on layers it is never chosen for veto Winograd.
    """
    rivals = [a for a in built if a == "im2col"]
    return rivals or [a for a in built if a not in ("winograd", "fft")]


def _winograd_channels(built, progress, report):
    # Batch 4 at 56 x 56, as ResNet-50's first 3x3 layers: at 28 x 28 with
    # one image (49 tiles of F(4,3)) Winograd never caught up with im2col
    # below 128 channels, while it wins on the real 64@56^2 layer.
    channels = (8, 16, 32, 64, 128)
    cases = [ConvCase(f"C=K={c}", (4, c, 56, 56), (c, c, 3, 3), 1, 1, 1)
             for c in channels]
    times = _times(cases, built, progress)
    best_other = _best_of(times, _winograd_rivals(built))
    value, at = _crossover_or_edges(list(channels), best_other,
                                    times["winograd"], below=channels[0],
                                    beyond=2 * channels[-1])
    report.append({"x_shape": [4, "C", 56, 56], "channels": list(channels),
                   "times_s": times, "crossover_channels": at})
    return value


def _winograd_pixels(built, progress, report):
    c, batch = 128, 4
    sides = (7, 14, 21, 28, 42, 56)
    cases = [ConvCase(f"{s}x{s}", (batch, c, s, s), (c, c, 3, 3), 1, 1, 1)
             for s in sides]
    times = _times(cases, built, progress)
    best_other = _best_of(times, _winograd_rivals(built))
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
        Measured values, keys of ``kernels._choose.DEFAULT_THRESHOLDS``.
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
    step("winograd_min_channels", ["winograd"],
         lambda r: _winograd_channels(built, progress, r),
         rivals=["direct", "im2col"])
    step("winograd_min_pixels", ["winograd"],
         lambda r: _winograd_pixels(built, progress, r),
         rivals=["direct", "im2col"])
    return thresholds, report


def calibrate(path=None, write=True, progress=True, log=print):
    """Measure the thresholds and save them for ``algorithm="auto"``.

    Returns the dict written (the defaults with the measured values over
    them).
    """
    from kernels._calibration import calibration_path, save_thresholds
    from kernels._choose import DEFAULT_THRESHOLDS
    from .machine import machine_info

    t0 = time.perf_counter()
    measured, report = measure_thresholds(progress=progress, log=log)
    thresholds = dict(DEFAULT_THRESHOLDS)
    thresholds.update(measured)
    meta = {"measured": sorted(measured), "sweeps": report,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine_info(measure=False),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    log(f"calibration took {meta['seconds']} s")
    if write:
        where = save_thresholds(thresholds, meta, path or calibration_path())
        log(f"wrote {where}")
    else:
        log("dry run: nothing written")
    return thresholds
