"""Issue 12's layer table: each contender against torch in three settings.

Run::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m benchmarks.layer_table [--rounds 7] [--workload resnet50-3x3]
        [--contenders direct,im2col,winograd,auto,torch] [--control]

For each layer of the workload (default: ResNet-50's 3x3 stride-1 layers
at batch 4) the contenders run in worker processes
(:func:`convbench.isolated.worker_times`), one call each per round in a
new seeded order, in three settings: ``isolated`` (a worker per
contender, importing only what it needs), ``kernels first`` and ``torch
first`` (one worker for all, importing the two libraries in that order).
Every worker keeps glibc malloc's freed memory, as ``convbench sweep``
does.  One call per round after the other contenders ran is a cold call:
caches hold the others' data and the pool has slept, as between a
network's layers.  Printed per setting: each contender's median time and
torch's median over it, then torch's fastest round over the contender's
(the spread between the two is the run's noise), then the median over
rounds of torch's time over the contender's in the same round (the two
calls adjacent: a slow phase of the machine hits both, as in ``convbench
network``'s ratios; issue 12's target 2 by this one since stop 53).

The three settings run at once, round by round
(:func:`convbench.isolated.settings_times`; until stop 48 one after the
other), and a last line gives each contender's time with torch imported
first over its time with ``kernels`` first, round by round: median
(min-max).  That is issue 12's target 1 (within 10 %): the two settings'
medians alone also carry the machine's drift between them (torch's own
time moved by 0.87-1.20 between the two in section AR).

``--control`` adds a fourth setting, ``kernels first again``: a second
worker set up exactly as ``kernels first``, and a line with its times
over ``kernels first``'s, round by round.  The two differ in nothing but
the process, so that line is the harness's own noise floor for target 1:
an import-order ratio no further from 1 than the control's says nothing
about import order.

Before stop 43 this was a script outside the repository (``table12.py``
in docs/performance.md, sections Y to AN), the same harness.
"""
from __future__ import annotations

import argparse
import statistics
import sys

from convbench.isolated import per_round_ratios, settings_times
from convbench.network import CONTROL_SETTINGS
from convbench.network import SETTINGS as NETWORK_SETTINGS
from convbench.workloads import workload

# The network report's three settings, labelled "kernels first" etc.
SETTINGS = tuple((name.replace("-", " "),
                  dict(isolated=isolated, import_order=order))
                 for name, (isolated, order) in NETWORK_SETTINGS.items())
CONTENDERS = ("direct", "im2col", "winograd", "auto", "torch")
# --control's setting: "kernels first" again, in a worker of its own.
CONTROL = ("kernels first again",
           dict(isolated=CONTROL_SETTINGS["kernels-first-again"][0],
                import_order=CONTROL_SETTINGS["kernels-first-again"][1]))


def layer_times(names, cases, case_index, rounds, settings=SETTINGS):
    """{setting: WorkerTimes} of one layer, the settings interleaved round
    by round."""
    times = settings_times(names, cases, rounds,
                           [options for _, options in settings],
                           case_index=case_index, keep_freed_memory=True)
    return {label: t for (label, _), t in zip(settings, times)}


def layer_rows(times, peer="torch"):
    """[(setting, {name: (median s, fastest s, paired)})] of
    :func:`layer_times`, ``paired`` the median over rounds of the peer's
    time over the contender's in the same round (None for the peer, or
    without it); contenders that cannot run the layer are left out."""
    rows = []
    for label, t in times.items():
        stats = {}
        for name, s in t.summary().items():
            ratios = ([] if name == peer
                      else [p / o for o, p in zip(t.times[name],
                                                  t.times.get(peer, ()))])
            stats[name] = (s.median, s.min,
                           statistics.median(ratios) if ratios else None)
        rows.append((label, stats))
    return rows


def order_ratios(times, first="kernels first", then="torch first"):
    """{name: [time in ``then`` over time in ``first``, per round]}."""
    return {name: per_round_ratios(times[then], times[first], name)
            for name in times[first].times}


def format_ratios(ratios, label="torch first / kernels first, per round"):
    """One line: ``name median (min-max)`` of each contender's ratios."""
    cells = [f"{name} {statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"
             for name, r in ratios.items() if r]
    return f"  {label}: " + "  ".join(cells)


def format_row(label, stats, peer="torch"):
    """One line: ``name median-ms (peer/name by median, by fastest, round
    by round)`` of :func:`layer_rows`' stats."""
    cells = []
    for name, (median, fastest, paired) in stats.items():
        cell = f"{name} {median * 1e3:.2f}"
        if peer in stats and name != peer:
            cell += (f" ({stats[peer][0] / median:.2f},"
                     f" min {stats[peer][1] / fastest:.2f}")
            cell += f", round {paired:.2f})" if paired is not None else ")"
        cells.append(cell)
    return f"  {label:14s} " + "  ".join(cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workload", default="resnet50-3x3")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--layers", default=None,
                        help="comma-separated layer indices (default: all)")
    parser.add_argument("--control", action="store_true",
                        help="add a second 'kernels first' worker and print "
                             "its times over the first's (the noise floor)")
    args = parser.parse_args(argv)
    cases = workload(args.workload)
    names = args.contenders.split(",")
    indices = (range(len(cases)) if args.layers is None
               else [int(i) for i in args.layers.split(",")])
    for i in indices:
        case = cases[i]
        print(f"## {case.label}: x {tuple(case.x_shape)}, w "
              f"{tuple(case.w_shape)}", flush=True)
        settings = SETTINGS + ((CONTROL,) if args.control else ())
        times = layer_times(names, cases, i, args.rounds, settings)
        for label, stats in layer_rows(times):
            print(format_row(label, stats), flush=True)
        print(format_ratios(order_ratios(times)), flush=True)
        if args.control:
            print(format_ratios(order_ratios(times, then=CONTROL[0]),
                                f"{CONTROL[0]} / kernels first, per round"),
                  flush=True)


if __name__ == "__main__":
    sys.exit(main())
