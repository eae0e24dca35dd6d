"""Issue 12's layer table: each contender against torch in three settings.

Run::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python -m benchmarks.layer_table [--rounds 7] [--workload resnet50-3x3]
        [--contenders direct,im2col,winograd,auto,torch]

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
(the spread between the two is the run's noise).

Before stop 43 this was a script outside the repository (``table12.py``
in docs/performance.md, sections Y to AN), the same harness.
"""
from __future__ import annotations

import argparse
import sys

from convbench.isolated import worker_times
from convbench.workloads import workload

SETTINGS = (
    ("isolated", dict(isolated=True)),
    ("kernels first", dict(isolated=False, import_order=("kernels", "torch"))),
    ("torch first", dict(isolated=False, import_order=("torch", "kernels"))),
)
CONTENDERS = ("direct", "im2col", "winograd", "auto", "torch")


def layer_rows(names, cases, case_index, rounds, settings=SETTINGS):
    """[(setting, {name: (median s, fastest s)})] of one layer; contenders
    that cannot run it are left out."""
    rows = []
    for label, options in settings:
        times = worker_times(names, cases, rounds, case_index=case_index,
                             keep_freed_memory=True, **options)
        rows.append((label, {n: (t.median, t.min)
                             for n, t in times.summary().items()}))
    return rows


def format_row(label, stats, peer="torch"):
    """One line: ``name median-ms (peer/name by median, by fastest)``."""
    cells = []
    for name, (median, fastest) in stats.items():
        cell = f"{name} {median * 1e3:.2f}"
        if peer in stats and name != peer:
            cell += (f" ({stats[peer][0] / median:.2f},"
                     f" min {stats[peer][1] / fastest:.2f})")
        cells.append(cell)
    return f"  {label:14s} " + "  ".join(cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workload", default="resnet50-3x3")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--layers", default=None,
                        help="comma-separated layer indices (default: all)")
    args = parser.parse_args(argv)
    cases = workload(args.workload)
    names = args.contenders.split(",")
    indices = (range(len(cases)) if args.layers is None
               else [int(i) for i in args.layers.split(",")])
    for i in indices:
        case = cases[i]
        print(f"## {case.label}: x {tuple(case.x_shape)}, w "
              f"{tuple(case.w_shape)}", flush=True)
        for label, stats in layer_rows(names, cases, i, args.rounds):
            print(format_row(label, stats), flush=True)


if __name__ == "__main__":
    sys.exit(main())
