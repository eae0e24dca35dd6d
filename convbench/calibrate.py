"""``convbench calibrate``: measure the thresholds of ``algorithm="auto"``.

:mod:`kernels._choose` picks an algorithm with a cost model whose
thresholds (``kernels._choose.default_thresholds("cpu")``, from
``kernels/cpu/_tuning.py``) are crossovers, each measured here on one
probe (a short interleaved sweep):

``fft_min_area_single``, ``fft_min_area_few``, ``fft_min_area_multi``
    kernel area from which FFT beats what "auto" would run otherwise,
    with C/g * K/g = 1, 16 and 4096: one 2048 x 2048 image (against
    direct), C = K = 4 at 512 x 512 (against direct: few channels never go
    to im2col or Winograd) and C = K = 64 at 56 x 56 (against the best of
    the others);
``fft_1d_area_factor_single``, ``fft_1d_area_factor``
    the 1-D threshold as a fraction of the 2-D one, for one channel and
    for more: one channel of 10^6 samples (kernels 1 x 31 to 1 x 383), and
    3 -> 16 channels of 10^5 samples x 4 (kernels 1 x 15 to 1 x 127), FFT
    against direct; the crossover length over the 2-D area threshold of
    the same channels (as applied);
``direct_max_macs``
    multiply-adds per image up to which direct beats the rest: 3 x 3, C = K
    = 16, growing images;
``direct_max_macs_fc``
    the same for a 1x1 output (fully connected): 1x1 convolutions of
    batch 32 on 1x1 maps, C = K growing, direct against im2col;
``direct_max_macs_pointwise``
    the same for other 1x1 kernels: C = K growing on a 14 x 14 map,
    batch 1 (MobileNet's pointwise layers), direct against im2col;
``im2col_max_area``
    the largest kernel area (kH * kW) at which im2col still beats direct:
    C = K = 64 at 28 x 28, kernels 1, 3, 5, 7;
``im2col_min_depth_strided``
    the reduction length (C * kH * kW) from which im2col beats direct on
    strided layers: C = K growing, 3 x 3, stride 2, 56 x 56, batch 1;
``im2col_serial_max_macs``
    multiply-adds from which direct beats im2col on a 1x1 convolution
    whose GEMM is one BLAS piece (7 x 7, batch 1, 32 output channels): C
    growing;
``winograd_min_channels``
    output channel count from which Winograd beats the fallback on 3 x 3
    stride-1 layers: C = K growing at 56 x 56, batch 4;
``winograd_min_pixels``
    image size (H * W) from which it does so with many channels: C = K =
    128, batch 4, sides 7 to 84 (ResNet-50's 3x3 layers, and one beyond:
    the crossover's smoothing needs a point past it);
``winograd_min_positions``
    output positions over the batch (N Ho Wo) from which it does so: C = K
    = 128 on the smallest square map ``winograd_min_pixels`` admits whose
    side is a multiple of 4 (F(4,3) wastes none of it), batches 1 to 16.

``im2col_min_out_channels``, ``winograd_min_macs``,
``winograd_deep_min_positions``, ``winograd_mid_min_positions``,
``winograd_narrow_min_positions``,
``winograd_min_channels_5x5`` and ``im2col_min_positions_strided`` are
not measured (they keep their defaults).  The
Winograd thresholds are measured against the algorithm the cost model
would otherwise run on a 3 x 3 layer: im2col or direct, as
``im2col_max_area`` says (see ``_winograd_rivals``).

Each probe times its contenders interleaved, five repeats, no accuracy
check, no peers.  Besides the value, each threshold gets a *status*:

``pinned``
    the crossover is clear: beyond the noise on both sides, and the same
    in every repeat;
``within noise``
    the two sides of the crossover differ by less than 10 % (either
    algorithm is then within 10 % of the other near the threshold), or the
    crossover moved between repeats: another run may put it elsewhere.
    When the repeats' crossovers straddle the default, the default is
    kept (the measured value is recorded beside it: a threshold moved on
    a coin flip sent ResNet-50's 256@14^2 layer from Winograd to direct,
    1.47x slower, on the AVX2 Zen 3); when they all lie on one side of
    it, the measured value is applied;
``edge``
    one algorithm won over the whole probe: the value is set beyond that
    end (a bound, not a measurement);
``default``
    not measured (an algorithm not built).

The whole calibration takes about a minute on 2 cores once the kernels
are compiled.  The result is written with
:func:`kernels._calibration.save_thresholds` (the statuses in the file's
``meta``), which ``algorithm="auto"`` reads from then on.
"""

from __future__ import annotations

import math
import time

from .crossover import crossover
from .sweep import SweepConfig, run_sweep
from .workloads import ConvCase, kernel_sweep

__all__ = ["calibrate", "measure_thresholds", "resolve"]

_REPEATS = 5
#: Two contenders closer than this (ratio) on both sides of a crossover
#: are within noise.
NOISE = 0.10


class _Times(dict):
    """{algorithm: [median seconds per case]} (None where not measured),
    with ``repeats``: {algorithm: [[seconds of each repeat] per case]}."""

    repeats = None


def _times(cases, algorithms, progress):
    """Interleaved times of ``algorithms`` on ``cases`` (a :class:`_Times`)."""
    config = SweepConfig(algorithms=tuple(algorithms), peers=(), repeats=_REPEATS,
                         check=False, progress=progress)
    result = run_sweep(cases, config)
    if result.interrupted:
        raise KeyboardInterrupt
    table = {a: {} for a in algorithms}
    for m in result.measurements:
        table[m.contender][m.case] = m if m.status == "ok" else None
    out = _Times({a: [m.median_s if (m := table[a].get(c.label)) else None
                      for c in cases] for a in algorithms})
    out.repeats = {a: [list(m.times_s) if (m := table[a].get(c.label)) else None
                       for c in cases] for a in algorithms}
    return out


def _best_of(times, names):
    """Per case, the fastest time among ``names`` (None if none ran)."""
    out = []
    for i in range(len(next(iter(times.values())))):
        vals = [times[n][i] for n in names if times[n][i] is not None]
        out.append(min(vals) if vals else None)
    return out


def _best_repeats(times, names):
    """Per case and repeat, the fastest among ``names`` (None: unknown)."""
    reps = getattr(times, "repeats", None)
    if not reps:
        return None
    out = []
    for i in range(len(next(iter(times.values())))):
        rows = [reps[n][i] for n in names if reps.get(n) and reps[n][i]]
        out.append([min(r) for r in zip(*rows)] if rows else None)
    return out


class Resolved(tuple):
    """``(at, status, why)`` of :func:`resolve`, with ``crossovers``: the
    crossover of each repeat (or just ``at`` without repeats)."""

    crossovers = ()


def _resolved(at, status, why, crossovers):
    out = Resolved((at, status, why))
    out.crossovers = tuple(crossovers) or (at,)
    return out


def resolve(sizes, slow, fast, slow_repeats=None, fast_repeats=None,
            noise=NOISE):
    """Crossover of ``fast`` over ``slow`` and how sure it is.

    Returns ``(at, status, why)``: ``at`` the crossover size
    (:func:`convbench.crossover.crossover`, None if ``fast`` never takes
    over), ``status`` one of ``"pinned"``, ``"within noise"``, ``"edge"``
    (``fast`` wins everywhere or nowhere) and ``why`` a sentence.  With
    per-repeat times (lists per size, repeat r of both taken in the same
    round), a crossover that differs between repeats is within noise.
    """
    at = crossover(sizes, slow, fast)
    ratio = [s / f if s and f else None for s, f in zip(slow, fast)]

    def near(i):
        return ratio[i] is not None and abs(math.log(ratio[i])) < math.log1p(noise)

    per = set()
    if slow_repeats and fast_repeats:
        for r in range(min(len(x) for x in slow_repeats + fast_repeats
                           if x is not None)):
            per.add(crossover(sizes, [x[r] if x else None for x in slow_repeats],
                              [x[r] if x else None for x in fast_repeats]))
    per = sorted(per | {at}, key=lambda v: (v is None, v))
    if at is None or at == sizes[0]:
        end = len(sizes) - 1 if at is None else 0
        who = "the slower one" if at is None else "the faster one"
        status = "within noise" if near(end) else "edge"
        why = (f"{who} won over the whole probe; at the {('last', 'first')[end == 0]} "
               f"size the ratio was {ratio[end]:.2f}"
               if ratio[end] is not None else "no times")
        return _resolved(at, status, why, per)
    i = sizes.index(at)
    if near(i) and near(i - 1):
        return _resolved(at, "within noise", (
            f"ratios {ratio[i - 1]:.2f} and {ratio[i]:.2f} on either side of "
            f"{at}: within {noise:.0%}"), per)
    if len(per) > 1:
        return _resolved(at, "within noise", (
            f"the crossover moved between repeats: {per}"), per)
    return _resolved(at, "pinned", (f"ratio {ratio[i - 1]:.2f} before {at}, "
                                    f"{ratio[i]:.2f} at it"), per)


def _valued(report, resolved, value_of):
    """``(value, status)`` of a probe from its :class:`Resolved`; the
    probe's report entry gets ``value_range``, the values that the
    repeats' crossovers give (:func:`applied` keeps a default inside it)."""
    values = sorted({value_of(a) for a in resolved.crossovers})
    report[-1]["value_range"] = [values[0], values[-1]]
    return value_of(resolved[0]), resolved[1]


def _macs_value(macs, at):
    """A multiply-add limit from a crossover of probe sizes ``macs``."""
    if at is None:                  # the slower one won throughout
        return 2 * macs[-1]
    if at == macs[0]:               # the faster one won from the start
        return macs[0] / 2
    return _between(macs, at)


def _fft_area(built, x_shape, k_out, kernel_sizes, rivals, progress, report):
    """Area from which FFT beats the best of ``rivals``."""
    rivals = [a for a in rivals if a in built and a != "fft"]
    cases = kernel_sweep(x_shape, k_out, kernel_sizes)
    times = _times(cases, ["fft"] + rivals, progress)
    sizes = list(kernel_sizes)
    r = resolve(sizes, _best_of(times, rivals), times["fft"],
                _best_repeats(times, rivals), _best_repeats(times, ["fft"]))
    at, status, why = r

    def area(at):
        if at is None:
            return (sizes[-1] + 2) ** 2
        if at == sizes[0]:
            return sizes[0] ** 2
        # Between the last size direct won and the first FFT won.
        return (sizes[sizes.index(at) - 1] ** 2 + at * at) // 2

    report.append({"x_shape": list(x_shape), "K": k_out, "kernel_sizes": sizes,
                   "rivals": rivals, "times_s": dict(times),
                   "crossover_kernel": at, "status": status, "why": why})
    return _valued(report, r, area)


def _fft_1d_factor(built, x_shape, k_out, sizes, area_2d, progress, report):
    """Kernel length from which FFT beats direct on signals of
    ``x_shape`` (N, C, 1, L) with ``k_out`` filters, over ``area_2d``, the
    2-D area threshold of the same channels."""
    cases = [ConvCase(f"k={k}", x_shape, (k_out, x_shape[1], 1, k), 1, 0, 1)
             for k in sizes]
    times = _times(cases, ["fft", "direct"], progress)
    r = resolve(list(sizes), times["direct"], times["fft"],
                _best_repeats(times, ["direct"]), _best_repeats(times, ["fft"]))
    at, status, why = r
    report.append({"x_shape": list(x_shape), "K": k_out,
                   "kernel_lengths": list(sizes), "area_2d": area_2d,
                   "times_s": dict(times), "crossover_kernel": at,
                   "status": status, "why": why})

    def factor(at):
        if at is None:
            length = 2 * sizes[-1]
        elif at == sizes[0]:
            length = sizes[0]
        else:
            length = (sizes[sizes.index(at) - 1] + at) / 2
        return round(length / area_2d, 3)

    return _valued(report, r, factor)


def _between(values, at):
    """Geometric mean of ``at`` and the value before it."""
    i = values.index(at)
    return math.sqrt(values[i - 1] * values[i])


def _direct_macs(built, progress, report):
    c = 16
    sides = (8, 12, 16, 24, 32, 48, 64)
    cases = [ConvCase(f"{s}x{s}", (1, c, s, s), (c, c, 3, 3), 1, 1, 1)
             for s in sides]
    times = _times(cases, built, progress)
    # FFT is chosen by kernel area before this threshold is consulted.
    others = [a for a in built if a not in ("direct", "fft")]
    macs = [float(c * c * 9 * s * s) for s in sides]   # _choose's formula
    r = resolve(macs, times["direct"], _best_of(times, others),
                _best_repeats(times, ["direct"]),
                _best_repeats(times, others))
    at, status, why = r
    report.append({"x_shape": [1, c, "s", "s"], "sides": list(sides),
                   "macs": macs, "times_s": dict(times), "crossover_macs": at,
                   "status": status, "why": why})
    return _valued(report, r, lambda a: _macs_value(macs, a))


def _one_by_one(widths, batch, side, slow, fast, progress, report,
                out_channels=None):
    """1x1 convolutions, C = K in ``widths`` (or C in ``widths`` and K =
    ``out_channels``), on ``batch`` maps of ``side`` x ``side``: the
    multiply-adds (per call) from which ``fast`` beats ``slow`` (direct
    and im2col, one way or the other)."""
    outs = [c if out_channels is None else out_channels for c in widths]
    cases = [ConvCase(f"C={c},K={k}", (batch, c, side, side), (k, c, 1, 1),
                      1, 0, 1) for c, k in zip(widths, outs)]
    times = _times(cases, ["direct", "im2col"], progress)
    macs = [float(batch * side * side * c * k) for c, k in zip(widths, outs)]
    r = resolve(macs, times[slow], times[fast], _best_repeats(times, [slow]),
                _best_repeats(times, [fast]))
    at, status, why = r
    report.append({"x_shape": [batch, "C", side, side], "widths": list(widths),
                   "out_channels": outs,
                   "macs": macs, "times_s": dict(times), "crossover_macs": at,
                   "status": status, "why": why})
    return _valued(report, r, lambda a: _macs_value(macs, a))


def _direct_macs_fc(built, progress, report):
    """1x1 convolutions of batch 32 on 1x1 maps (SE blocks)."""
    return _one_by_one((16, 32, 64, 128, 256, 512), 32, 1, "direct",
                       "im2col", progress, report)


def _direct_macs_pointwise(built, progress, report):
    """1x1 convolutions on a 14x14 map, batch 1 (196 output positions:
    more than one BLAS piece)."""
    return _one_by_one((32, 64, 96, 128, 192, 256, 384), 1, 14, "direct",
                       "im2col", progress, report)


def _im2col_area(built, progress, report):
    sizes = (1, 3, 5, 7)
    cases = kernel_sweep((1, 64, 28, 28), 64, sizes)
    times = _times(cases, ["direct", "im2col"], progress)
    r = resolve(list(sizes), times["im2col"], times["direct"],
                _best_repeats(times, ["im2col"]), _best_repeats(times, ["direct"]))
    at, status, why = r
    report.append({"x_shape": [1, 64, 28, 28], "K": 64,
                   "kernel_sizes": list(sizes), "times_s": dict(times),
                   "crossover_kernel": at, "status": status, "why": why})

    def area(at):
        if at is None:              # im2col wins up to the largest kernel
            return 4 * sizes[-1] ** 2
        i = sizes.index(at)
        return sizes[i - 1] ** 2 if i > 0 else 0

    return _valued(report, r, area)


def _im2col_strided(built, progress, report):
    """Stride-2 3 x 3 layers, C = K growing at 56 x 56, batch 1 (ResNet's
    downsampling 3 x 3 layers): the reduction length C * 9 at which
    im2col takes over from direct (Zen 3: between 32 and 64 channels)."""
    channels = (16, 32, 64, 128, 256, 512)
    cases = [ConvCase(f"C=K={c}", (1, c, 56, 56), (c, c, 3, 3), 2, 1, 1)
             for c in channels]
    times = _times(cases, ["direct", "im2col"], progress)
    depths = [9 * c for c in channels]
    r = resolve(depths, times["direct"], times["im2col"],
                _best_repeats(times, ["direct"]), _best_repeats(times, ["im2col"]))
    at, status, why = r
    report.append({"x_shape": [1, "C", 56, 56], "stride": 2,
                   "channels": list(channels), "times_s": dict(times),
                   "crossover_depth": at, "status": status, "why": why})
    return _valued(report, r, lambda a: 2 * depths[-1] if a is None else a)


def _im2col_serial(built, progress, report):
    """1x1 convolutions on a 7x7 map, batch 1, to 32 output channels: 49
    positions by 32 channels, a GEMM of one BLAS piece."""
    return _one_by_one((1024, 2048, 4096, 8192, 16384), 1, 7, "im2col",
                       "direct", progress, report, out_channels=32)


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


def _winograd_probe(built, im2col_max_area, cases, sizes, progress, report,
                    fields, crossover_key, edge):
    """Winograd against what "auto" would run instead on ``cases``: the
    size (of ``sizes``, one per case) from which it wins, ``edge`` if it
    never does.  ``fields`` (the probe's shape and axis) and the crossover,
    under ``crossover_key``, go to the report."""
    times = _times(cases, built, progress)
    rivals = _winograd_rivals(built, im2col_max_area)
    r = resolve(sizes, _best_of(times, rivals), times["winograd"],
                _best_repeats(times, rivals), _best_repeats(times, ["winograd"]))
    at, status, why = r
    report.append({**fields, "times_s": dict(times), crossover_key: at,
                   "status": status, "why": why})
    return _valued(report, r, lambda a: edge if a is None else a)


def _winograd_channels(built, im2col_max_area, progress, report):
    # Batch 4 at 56 x 56, as ResNet-50's first 3x3 layers: at 28 x 28 with
    # one image (49 tiles of F(4,3)) Winograd never caught up with im2col
    # below 128 channels, while it wins on the real 64@56^2 layer.
    channels = (16, 32, 64, 128, 256)
    cases = [ConvCase(f"C=K={c}", (4, c, 56, 56), (c, c, 3, 3), 1, 1, 1)
             for c in channels]
    return _winograd_probe(
        built, im2col_max_area, cases, list(channels), progress, report,
        {"x_shape": [4, "C", 56, 56], "channels": list(channels)},
        "crossover_channels", 2 * channels[-1])


def _winograd_pixels(built, im2col_max_area, progress, report):
    # 84^2 beyond ResNet-50's largest 3x3 map: a crossover is the first
    # size from which the ratio, smoothed by a median of three, stays
    # below one, so a win at the last size alone reads as none.  (With
    # direct's channel tile on the Xeon VM, winograd won at 56^2 only,
    # 1.20x, after ties at 28^2 and 42^2, and the threshold went to the
    # edge, 4 x 56^2.)
    c, batch = 128, 4
    sides = (7, 14, 21, 28, 42, 56, 84)
    cases = [ConvCase(f"{s}x{s}", (batch, c, s, s), (c, c, 3, 3), 1, 1, 1)
             for s in sides]
    pixels = [s * s for s in sides]
    return _winograd_probe(
        built, im2col_max_area, cases, pixels, progress, report,
        {"x_shape": [batch, c, "s", "s"], "sides": list(sides)},
        "crossover_pixels", 4 * pixels[-1])


def _winograd_positions(built, im2col_max_area, min_pixels, progress, report):
    """Output positions over the batch (N Ho Wo) from which Winograd wins,
    on the smallest square map the per-image limit admits (``min_pixels``
    as it will be applied) that F(4,3)'s tiles cover without waste, C = K
    = 128, batches 1 to 16: separates the batch's share from the image
    size's, which the pixel probe (batch 4) measures together.  (On 21^2,
    the smallest map of 441 pixels, F(4,3) computes 24^2: direct won at
    every batch there on the AVX-512 Xeon VM and the threshold went to
    14110 positions, sending ResNet-50's batch-4 layers, 1.5x faster
    through Winograd at 256@14^2, to direct.)"""
    c, batches = 128, (1, 2, 4, 8, 16)
    side = max(8, 4 * math.ceil(math.sqrt(min_pixels) / 4))
    cases = [ConvCase(f"{n}x{side}x{side}", (n, c, side, side), (c, c, 3, 3),
                      1, 1, 1) for n in batches]
    positions = [n * side * side for n in batches]
    return _winograd_probe(
        built, im2col_max_area, cases, positions, progress, report,
        {"x_shape": ["n", c, side, side], "batches": list(batches)},
        "crossover_positions", 2 * positions[-1])


def measure_thresholds(progress=True, log=print):
    """Measure every threshold whose algorithms are built.

    Returns
    -------
    thresholds : dict
        Measured values, keys of ``kernels._choose.default_thresholds()``.
    report : dict
        Per threshold, the probe behind its value: times, crossover,
        ``status`` (``"pinned"``, ``"within noise"``, ``"edge"``) and
        ``why``, for the file's meta.
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
            log(f"{key:<24} default   ({why})")
            return
        t0 = time.perf_counter()
        report[key] = []
        thresholds[key], status = fn(report[key])
        why = report[key][-1]["why"] if report[key] else ""
        log(f"{key:<24} {thresholds[key]:<9.4g} {status}: {why} "
            f"({time.perf_counter() - t0:.1f} s)")

    step("fft_min_area_single", ["fft"],
         lambda r: _fft_area(built, (1, 1, 2048, 2048), 1,
                             (9, 11, 13, 15, 17, 19, 23), ["direct"],
                             progress, r), rivals=["direct"])
    step("fft_min_area_few", ["fft"],
         lambda r: _fft_area(built, (1, 4, 512, 512), 4,
                             (7, 11, 15, 19, 23, 27), ["direct"],
                             progress, r), rivals=["direct"])
    step("fft_min_area_multi", ["fft"],
         lambda r: _fft_area(built, (1, 64, 56, 56), 64, (3, 5, 7, 9, 11),
                             built, progress, r))
    from kernels._choose import (default_thresholds, fft_min_area,
                                 one_d_fft_factor)
    defaults = default_thresholds("cpu")
    # Later probes build on earlier thresholds as they will be applied.
    areas = in_force(thresholds, report, defaults)
    step("fft_1d_area_factor_single", ["fft"],
         lambda r: _fft_1d_factor(built, (1, 1, 1, 10 ** 6), 1,
                                  (31, 47, 63, 95, 127, 191, 255, 383),
                                  fft_min_area(1, 1, areas), progress, r),
         rivals=["direct"])
    step("fft_1d_area_factor", ["fft"],
         lambda r: _fft_1d_factor(built, (4, 3, 1, 10 ** 5), 16,
                                  (15, 23, 31, 47, 63, 95, 127),
                                  # the multi-channel 1-D factor as auto
                                  # applies it at this probe (~1.01)
                                  fft_min_area(3, 16, areas)
                                  * one_d_fft_factor(3, 16, 4, 10 ** 5),
                                  progress, r),
         rivals=["direct"])
    step("direct_max_macs", ["direct"], lambda r: _direct_macs(built, progress, r),
         rivals=["im2col", "winograd"])
    step("direct_max_macs_fc", ["direct"],
         lambda r: _direct_macs_fc(built, progress, r), rivals=["im2col"])
    step("direct_max_macs_pointwise", ["direct"],
         lambda r: _direct_macs_pointwise(built, progress, r),
         rivals=["im2col"])
    step("im2col_max_area", ["im2col"],
         lambda r: _im2col_area(built, progress, r), rivals=["direct"])
    step("im2col_min_depth_strided", ["im2col"],
         lambda r: _im2col_strided(built, progress, r), rivals=["direct"])
    step("im2col_serial_max_macs", ["im2col"],
         lambda r: _im2col_serial(built, progress, r), rivals=["direct"])
    area = in_force(thresholds, report, defaults)["im2col_max_area"]
    step("winograd_min_channels", ["winograd"],
         lambda r: _winograd_channels(built, area, progress, r),
         rivals=["direct", "im2col"])
    step("winograd_min_pixels", ["winograd"],
         lambda r: _winograd_pixels(built, area, progress, r),
         rivals=["direct", "im2col"])
    pixels = in_force(thresholds, report, defaults)["winograd_min_pixels"]
    step("winograd_min_positions", ["winograd"],
         lambda r: _winograd_positions(built, area, pixels, progress, r),
         rivals=["direct", "im2col"])
    return thresholds, report


def statuses(thresholds, report, measured=None):
    """{threshold: {"value", "status", "why"}} for every threshold, with
    ``"measured"`` where a measured value was not applied."""
    out = {}
    for key, value in thresholds.items():
        probe = (report.get(key) or [{}])[-1]
        out[key] = {"value": value, "status": probe.get("status", "default"),
                    "why": probe.get("why", "not measured: the default")}
        if measured and key in measured and measured[key] != value:
            out[key]["measured"] = measured[key]
    return out


def applied(measured, report, defaults):
    """The measured thresholds that replace the defaults: pinned ones,
    edges, and those within noise whose repeats' crossovers all put the
    threshold on one side of the default (a default inside that range is
    as consistent with the measurement as the medians' crossover)."""
    out = {}
    for key, value in measured.items():
        probe = (report.get(key) or [{}])[-1]
        low, high = probe.get("value_range") or (value, value)
        default = defaults.get(key)
        if (probe.get("status") == "within noise" and default is not None
                and low <= default <= high):
            continue
        out[key] = value
    return out


def in_force(measured, report, defaults):
    """The thresholds ``calibrate`` writes: the defaults, with
    :func:`applied` measured values over them."""
    return dict(defaults, **applied(measured, report, defaults))


def calibrate(path=None, write=True, progress=True, log=print):
    """Measure the thresholds and save them for ``algorithm="auto"``.

    Pinned thresholds and edges replace the defaults; those within noise
    keep the default when their repeats' crossovers straddle it
    (:func:`applied`).  Prints one line per threshold (value, status,
    why) and a summary of those it could not pin down; the statuses go
    into the file's meta (``meta["thresholds"]``, ``meta["unresolved"]``).  Returns the dict
    written (the defaults with the measured values over them).
    """
    from kernels._calibration import calibration_path, save_thresholds
    from kernels._choose import default_thresholds, machine_key
    from .machine import machine_info

    t0 = time.perf_counter()
    measured, report = measure_thresholds(progress=progress, log=log)
    thresholds = in_force(measured, report, default_thresholds("cpu"))
    table = statuses(thresholds, report, measured)
    unresolved = sorted(k for k, v in table.items() if v["status"] != "pinned")
    meta = {"measured": sorted(measured), "thresholds": table,
            "unresolved": unresolved, "sweeps": report,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine_info(measure=False),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    noisy = [k for k in unresolved if table[k]["status"] != "default"]
    if noisy:
        log("not pinned down (contenders within noise, or one won the whole "
            "probe): " + ", ".join(f"{k} ({table[k]['status']})" for k in noisy))
    kept = [k for k in noisy if "measured" in table[k]]
    if kept:
        log("within noise, default kept: " + ", ".join(
            f"{k} {table[k]['value']:.4g} (measured {table[k]['measured']:.4g})"
            for k in kept))
    defaults = [k for k in unresolved if table[k]["status"] == "default"]
    if defaults:
        log("left at the default (not measured): " + ", ".join(defaults))
    log(f"calibration took {meta['seconds']} s")
    if write:
        # Thresholds it did not measure are left out: the installed
        # package's defaults apply to them, also after an upgrade.
        where = save_thresholds("cpu", {k: v for k, v in thresholds.items()
                                        if k not in defaults},
                                machine_key("cpu"), meta,
                                path or calibration_path())
        log(f"wrote {where}")
    else:
        log("dry run: nothing written")
    return thresholds
