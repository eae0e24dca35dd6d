"""Was ``algorithm="auto"`` right?  Its pick against the fastest algorithm.

:func:`auto_rows` reads a sweep that timed the algorithms and ``auto``
(``convbench sweep ... --algorithms direct,im2col,winograd,fft,auto``)
and returns, per case, the fastest algorithm, the algorithm ``auto``
picked, and the pick's time over the fastest time.  The pick's *own*
median is compared (``auto`` runs the pick, so its time differs from the
pick's only by the choice's overhead and noise); ``auto``'s time is given
beside it.  A pick that the sweep skipped for its time limit counts with
the time that got it skipped (its warm-up call or the crop's estimate):
a lower bound of its ratio.

With ``isolated=True`` (``--isolated``) a sweep run with ``--isolated``
is judged on the medians of each contender timed alone in its own worker
process: in one process, a call that touched gigabytes (FFT on U-Net's
largest layers) slows the contender timed after it, and the in-process
medians then misjudge the pick.  Cases without isolated times keep their
in-process medians, and the row says so.

Command line (a table per sweep file, exit code 1 when a pick is off by
more than the tolerance)::

    python -m convbench.autocheck /tmp/auto-*.json [--tolerance 0.10]
        [--isolated] [--repick] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass

__all__ = ["AutoRow", "auto_rows", "format_rows", "markdown_rows", "main"]

#: The algorithms ``auto`` chooses among.
ALGORITHMS = ("direct", "im2col", "winograd", "fft")


@dataclass
class AutoRow:
    """``auto`` on one case of a sweep.

    ``ratio`` is ``pick_s / fastest_s`` (1.0 when the pick is the fastest),
    ``auto_ratio`` ``auto_s / fastest_s``; ``within`` says whether
    ``ratio <= 1 + tolerance``; ``note`` says when the pick was skipped
    (its ratio is then a lower bound) or when no time is known.
    """

    case: str
    fastest: str | None
    fastest_s: float | None
    pick: str | None
    pick_s: float | None
    ratio: float | None
    auto_s: float | None
    auto_ratio: float | None
    within: bool | None
    note: str = ""


def _measurements(result):
    """The list of measurement dicts of a SweepResult, its ``to_dict()``,
    or a sweep JSON file's path."""
    if isinstance(result, (str, bytes)) or hasattr(result, "__fspath__"):
        with open(result) as f:
            result = json.load(f)
    if isinstance(result, dict):
        return result["results"]
    return [asdict(m) for m in result.measurements]


def _current_pick(m):
    """What ``algorithm="auto"`` picks now for a measurement's problem."""
    import kernels
    from .sweep import zero_padding
    from .workloads import ConvCase
    case = ConvCase(m["case"], tuple(m["x_shape"]), tuple(m["w_shape"]),
                    m["stride"], m["padding"], m["groups"])
    return kernels.choose_algorithm(case.x_shape, case.w_shape,
                                    (case.stride,) * 2, zero_padding(case),
                                    (1, 1), case.groups)


def _median(m, isolated):
    """A measurement's median: its isolated one when asked and known."""
    if isolated and m.get("isolated_median_s"):
        return m["isolated_median_s"]
    return m["median_s"]


def auto_rows(result, tolerance=0.10, algorithms=ALGORITHMS, repick=False,
              isolated=False):
    """Per case: fastest algorithm, ``auto``'s pick and the ratio.

    Parameters
    ----------
    result : SweepResult, dict or path
        A :class:`convbench.sweep.SweepResult`, its ``to_dict()`` or the
        path of a ``convbench sweep --json`` file.
    tolerance : float
        A pick within ``(1 + tolerance)`` times the fastest time is right.
    algorithms : tuple of str
        The algorithms ``auto`` is compared against.
    repick : bool
        Judge the pick ``kernels.choose_algorithm`` makes now (this
        checkout's thresholds) instead of the one recorded in the sweep;
        every case counts, whether or not the sweep ran ``auto``, and
        ``auto_s`` is left empty.
    isolated : bool
        Compare the medians of the contenders timed alone (``sweep
        --isolated``) where the sweep has them.

    Returns
    -------
    list of :class:`AutoRow`
        One per case that ran ``auto``, in the sweep's order.
    """
    by_case = {}
    for m in _measurements(result):
        by_case.setdefault(m["case"], {})[m["contender"]] = m
    rows = []
    for case, ms in by_case.items():
        auto = ms.get("auto")
        if repick:
            auto = {"chose": _current_pick(next(iter(ms.values()))),
                    "status": "not run", "median_s": None}
        if auto is None:
            continue
        ok = {a: _median(ms[a], isolated) for a in algorithms
              if a in ms and ms[a]["status"] == "ok"}
        fastest = min(ok, key=ok.get) if ok else None
        fastest_s = ok.get(fastest)
        pick = auto.get("chose")
        auto_s = _median(auto, isolated) if auto["status"] == "ok" else None
        pick_s, note = ok.get(pick), ""
        if isolated and not all(ms[a].get("isolated_median_s") for a in ok):
            note = "in-process times (no isolated ones)"
        if pick_s is None and pick in ms and ms[pick].get("warmup_s"):
            pick_s = ms[pick]["warmup_s"]
            note = f"{pick} {ms[pick]['status']}: ratio is a lower bound"
        if pick_s is None and pick not in ms and auto_s is not None:
            pick_s, note = auto_s, f"{pick} not swept: auto's own time"
        ratio = (pick_s / fastest_s if pick_s is not None and fastest_s
                 else None)
        if pick == fastest and ratio is not None:
            ratio = 1.0
        if ratio is None and not note:
            note = "no time for the pick or the fastest"
        rows.append(AutoRow(
            case, fastest, fastest_s, pick, pick_s, ratio, auto_s,
            auto_s / fastest_s if auto_s is not None and fastest_s else None,
            None if ratio is None else ratio <= 1 + tolerance, note))
    return rows


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.4g}"


def _ratio(value):
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _cells(row):
    return (row.case, row.fastest or "-", _ms(row.fastest_s), row.pick or "-",
            _ms(row.pick_s), _ratio(row.ratio), _ratio(row.auto_ratio),
            "yes" if row.within else ("?" if row.within is None else "NO"),
            row.note)


_HEADER = ("case", "fastest", "ms", "auto's pick", "pick ms", "pick/fastest",
           "auto/fastest", "within", "note")


def format_rows(rows):
    """Plain-text table of :func:`auto_rows`."""
    table = [_HEADER] + [_cells(r) for r in rows]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(_HEADER))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths))
                     .rstrip() for r in table)


def markdown_rows(rows, workload=None):
    """Markdown table rows (no header unless ``workload`` is None)."""
    lines = []
    if workload is None:
        lines.append("| " + " | ".join(_HEADER) + " |")
        lines.append("|" + "---|" * len(_HEADER))
    for r in rows:
        cells = list(_cells(r))
        if workload is not None:
            cells = [workload] + cells
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m convbench.autocheck",
        description="auto's pick against the fastest algorithm, per case of "
                    "convbench sweep --json files")
    parser.add_argument("files", nargs="+", metavar="SWEEP.json")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--markdown", action="store_true",
                        help="one markdown table (workload column first)")
    parser.add_argument("--repick", action="store_true",
                        help="judge what auto picks now, not the sweep's pick")
    parser.add_argument("--isolated", action="store_true",
                        help="compare the contenders' isolated medians "
                             "(sweep --isolated) where the sweep has them")
    args = parser.parse_args(argv)
    misses = 0
    if args.markdown:
        print("| workload | " + " | ".join(_HEADER) + " |")
        print("|" + "---|" * (len(_HEADER) + 1))
    for path in args.files:
        rows = auto_rows(path, args.tolerance, repick=args.repick,
                         isolated=args.isolated)
        misses += sum(r.within is False for r in rows)
        if args.markdown:
            with open(path) as f:
                argv_ = json.load(f).get("argv") or []
            name = next((argv_[i + 1] for i, a in enumerate(argv_[:-1])
                         if a in ("--workload", "--network")), path)
            print(markdown_rows(rows, workload=name))
        else:
            print(f"# {path}")
            print(format_rows(rows))
            print()
    print(f"{misses} pick(s) slower than {1 + args.tolerance:.2f}x the fastest",
          file=sys.stderr)
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
