"""``convbench report``: sweeps, figures and a self-contained report.

The command runs the sweeps a report needs (or reads saved ones) and
writes, into one directory,

* ``report.md`` and ``report.html`` (the same content; the HTML embeds
  every figure as a base64 ``data:`` URI and has no other external
  resource, so it can be mailed or attached as one file);
* the figures as PNG (:mod:`convbench.plots`);
* every sweep as JSON (schema ``convbench.sweep/1``, as ``convbench sweep
  --json`` writes it, plus a ``report`` block: workload, description, date),
  so that ``convbench report --from-json DIR/sweep-*.json`` redraws it.

What is swept (:func:`plan_sweeps`): ``--quick`` a single-channel kernel
sweep, ResNet-50's 3x3 layers and the jet-image layers at 1/8 of their
batch, with 5 repeats and cheaper checks; no workload: the same set with
9 repeats; named workloads (:data:`convbench.workloads.WORKLOADS`): those,
at full size.  ``--from-asv`` adds (or, alone, makes) a section of asv
results along commits (:func:`read_asv_results`).

A KeyboardInterrupt (Ctrl-C) stops the measuring; what was measured is
written, marked as interrupted at the top of the report, and the command
exits with 130.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import plots

__all__ = ["SCHEMA", "ReportInputError", "SweepPlan", "SweepData",
           "plan_sweeps", "quick_plans", "load_sweep_json", "sweep_data",
           "Panel", "panels", "layer_table", "Document", "AsvRun",
           "read_asv_results", "select_asv_benchmarks", "asv_lines",
           "check_out_dir", "measure", "write_report", "run"]

#: The sweep JSON schema this module reads and writes.
SCHEMA = "convbench.sweep/1"

#: asv benchmarks plotted besides every ``track_crossover*`` when
#: ``--asv-bench`` is not given (the first few, by name).
DEFAULT_ASV_BENCH = r"time_conv2d$"
DEFAULT_ASV_BENCH_COUNT = 4
MAX_ASV_LINES = 12


class ReportInputError(ValueError):
    """A file or directory given to the report cannot be used."""


# --------------------------------------------------------------------------
# What to sweep
# --------------------------------------------------------------------------

@dataclass
class SweepPlan:
    """One sweep of a report: a workload (or part of one) and its settings."""

    name: str
    description: str
    cases: list
    repeats: int
    note: str = ""
    check_macs: float = 1.5e8
    peer_time_limit: float = 2.0


QUICK_REPEATS = 5
DEFAULT_REPEATS = 9
#: --quick: cheaper float64 reference check and SciPy peer limit.
QUICK_CHECK_MACS = 1.5e7
QUICK_PEER_TIME_LIMIT = 0.3
#: --quick runs the jet-image layers at 1/JET_SHRINK of their batch.
JET_SHRINK = 8


def _shrink_batch(cases, factor):
    """The cases with their batch divided by ``factor`` (labels follow)."""
    from .workloads import ConvCase
    out = []
    for c in cases:
        n = max(1, c.x_shape[0] // factor)
        label = re.sub(rf"\bb{c.x_shape[0]}\b", f"b{n}", c.label)
        out.append(ConvCase(label, (n,) + tuple(c.x_shape[1:]), c.w_shape,
                            c.stride, c.padding, c.groups))
    return out


def quick_plans(repeats=QUICK_REPEATS, quick=True):
    """The default set: single-channel kernel sweep, ResNet-50 3x3 layers,
    jet images (batch / 8).  ``quick`` selects the cheaper checks."""
    from . import workloads
    extra = (dict(check_macs=QUICK_CHECK_MACS,
                  peer_time_limit=QUICK_PEER_TIME_LIMIT) if quick else {})
    checks = ("float64 check cropped to 1.5e7 multiply-adds per case, SciPy "
              "peers skipped above 0.3 s per call" if quick else "")
    single = workloads.kernel_sweep((1, 1, 512, 512), 1, range(3, 32, 4))
    jets = _shrink_batch(workloads.WORKLOADS["jet-images"].build(), JET_SHRINK)
    return [
        SweepPlan("single-channel-512",
                  "one 512x512 image, one filter, 'same' padding, kernels "
                  "3..31 (the image size of deconv-microscopy's smallest "
                  "frames)", single, repeats, checks, **extra),
        SweepPlan("resnet50-3x3", workloads.WORKLOADS["resnet50-3x3"].description,
                  workloads.WORKLOADS["resnet50-3x3"].build(), repeats, checks,
                  **extra),
        SweepPlan("jet-images",
                  workloads.WORKLOADS["jet-images"].description,
                  jets, repeats,
                  "; ".join(filter(None, [
                      f"batch divided by {JET_SHRINK} (1024/512/256 -> "
                      f"{1024 // JET_SHRINK}/{512 // JET_SHRINK}/"
                      f"{256 // JET_SHRINK}) to fit the quick report", checks])),
                  **extra),
    ]


def problem_plans(names=(), problem_file=None, ops=None, directions=("fwd",),
                  repeats=DEFAULT_REPEATS, quick=False):
    """Sweeps of every op: one per named workload (its layers of every op,
    :func:`convbench.workloads.workload_problems`) and one of a problem
    file, restricted to ``ops`` and run in ``directions``
    (:func:`convbench.problems.select`; ValueError when nothing is left).
    """
    from . import workloads
    from .problems import read_problems, select
    extra = (dict(check_macs=QUICK_CHECK_MACS,
                  peer_time_limit=QUICK_PEER_TIME_LIMIT) if quick else {})
    sources = []
    for name in names:
        wl = workloads.WORKLOADS[name]
        source = f" (source: {wl.provenance})" if wl.provenance else ""
        sources.append((name, wl.description + source,
                        workloads.workload_problems(name)))
    if problem_file is not None:
        sources.append((f"problems-{Path(problem_file).stem}",
                        f"the problems of {problem_file}",
                        read_problems(problem_file)))
    plans = []
    for name, description, problems in sources:
        chosen, notes = select(problems, ops, directions)
        if ops is not None or tuple(directions) != ("fwd",):
            name += "-" + "-".join(ops or ["all"]) + (
                "" if tuple(directions) == ("fwd",) else
                "-" + "-".join(directions))
        plans.append(SweepPlan(name, description, chosen, repeats,
                               "; ".join(notes), **extra))
    return plans


def plan_sweeps(names=(), quick=False, shape=None, kernels=None, repeats=None):
    """The sweeps of a report.

    Parameters
    ----------
    names : sequence of str
        Named workloads (keys of ``convbench.workloads.WORKLOADS``).
    quick : bool
        Fewer repeats and cheaper checks; with no names and no shape, the
        quick set (:func:`quick_plans`).
    shape : (N, C, H, W, K) or None
        A kernel-size sweep of this input over ``kernels``.
    kernels : list of (kh, kw) or None
        Kernel sizes of ``shape`` (default 3..31 step 4).
    repeats : int or None
        Overrides the repeats of every sweep.
    """
    from . import workloads
    reps = repeats or (QUICK_REPEATS if quick else DEFAULT_REPEATS)
    if not names and shape is None:
        return quick_plans(reps, quick=quick)
    extra = (dict(check_macs=QUICK_CHECK_MACS,
                  peer_time_limit=QUICK_PEER_TIME_LIMIT) if quick else {})
    plans = []
    if shape is not None:
        n, c, h, w, k = shape
        ks = kernels or [(s, s) for s in range(3, 32, 4)]
        cases = [workloads.ConvCase(f"k={kh}" if kh == kw else f"k={kh}x{kw}",
                                    (n, c, h, w), (k, c, kh, kw), 1,
                                    kh // 2, 1) for kh, kw in ks]
        plans.append(SweepPlan(f"shape-{n}x{c}x{h}x{w}-K{k}",
                               f"input {n}x{c}x{h}x{w}, {k} filters, "
                               f"padding k//2, kernels "
                               f"{', '.join(f'{a}x{b}' for a, b in ks)}",
                               cases, reps, **extra))
    for name in names:
        wl = workloads.WORKLOADS[name]
        source = f" (source: {wl.provenance})" if wl.provenance else ""
        plans.append(SweepPlan(name, wl.description + source, wl.build(),
                               reps, **extra))
    return plans


# --------------------------------------------------------------------------
# Sweep data (from a run or a JSON file)
# --------------------------------------------------------------------------

@dataclass
class SweepData:
    """A sweep as the report reads it."""

    name: str
    description: str
    note: str
    date: str
    dtype: str
    repeats: int
    interrupted: bool
    machine: dict | None
    measurements: list
    raw: dict
    source: str | None = None
    seconds: float | None = None
    backend: str = "cpu"
    file: str | None = None      # name of its JSON in the output directory


def _now():
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M")


def _measurement(d):
    from .sweep import Measurement
    known = Measurement.__dataclass_fields__
    m = Measurement(**{k: v for k, v in d.items() if k in known})
    m.x_shape = tuple(m.x_shape)
    m.w_shape = None if m.w_shape is None else tuple(m.w_shape)
    m.times_s = list(m.times_s or [])
    return m


def _name_from_argv(argv, fallback):
    argv = list(argv or [])
    for flag in ("--workload", "--network"):
        if flag in argv and argv.index(flag) + 1 < len(argv):
            return argv[argv.index(flag) + 1]
    if "--shape" in argv and argv.index("--shape") + 1 < len(argv):
        return "shape " + argv[argv.index("--shape") + 1]
    return fallback


def sweep_data(d, source=None, date=None):
    """:class:`SweepData` of a sweep dict (``SweepResult.to_dict()`` with,
    optionally, a ``report`` block); raises :class:`ReportInputError`
    naming ``source`` when the dict is not a readable sweep."""
    where = source or "sweep data"
    if not isinstance(d, dict) or "schema" not in d:
        raise ReportInputError(
            f"{where}: no 'schema' field: not a convbench sweep JSON "
            f"(expected schema {SCHEMA!r}, as written by `convbench sweep "
            f"--json` or `convbench report`)")
    if d["schema"] != SCHEMA:
        raise ReportInputError(
            f"{where}: schema {d['schema']!r} is not supported; this "
            f"convbench reads {SCHEMA!r} (rerun the sweep with this version)")
    for key in ("config", "results"):
        if key not in d:
            raise ReportInputError(f"{where}: schema {SCHEMA!r} but no "
                                   f"{key!r} field: the file is damaged")
    try:
        measurements = [_measurement(r) for r in d["results"]]
    except (TypeError, ValueError) as exc:
        raise ReportInputError(f"{where}: unreadable result: {exc}") from None
    meta = d.get("report") or {}
    stem = Path(source).stem if source else "sweep"
    config = d["config"]
    return SweepData(
        name=meta.get("workload") or _name_from_argv(d.get("argv"), stem),
        description=meta.get("description", ""),
        note=meta.get("note", ""),
        date=meta.get("date") or date or _now(),
        dtype=config.get("dtype", "float32"),
        repeats=config.get("repeats", 0),
        interrupted=bool(d.get("interrupted")),
        machine=d.get("machine"),
        measurements=measurements, raw=d, source=source,
        seconds=meta.get("seconds"), backend=config.get("backend", "cpu"))


def load_sweep_json(path):
    """Read a saved sweep; :class:`ReportInputError` names the file and
    what is wrong with it (missing, not JSON, another schema)."""
    path = str(path)
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ReportInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportInputError(f"{path}: is a directory, not a JSON file") from None
    except UnicodeDecodeError:
        raise ReportInputError(f"{path}: not JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{path}: not JSON ({exc})") from None
    mtime = _dt.datetime.fromtimestamp(os.path.getmtime(path)).astimezone()
    return sweep_data(d, source=path, date=mtime.strftime("%Y-%m-%d %H:%M"))


# --------------------------------------------------------------------------
# Panels: one x axis of figures (a kernel-size series or the layers)
# --------------------------------------------------------------------------

@dataclass
class Panel:
    """Measurements along one x axis.

    ``kind`` is ``"kernel"`` (x: kernel sizes of one input shape) or
    ``"layers"`` (x: the sweep's cases in order).  ``cells[i]`` maps
    contender -> Measurement for x ``i``.
    """

    kind: str
    title: str
    x: list
    labels: list
    cells: list
    xlabel: str
    crossovers: list = field(default_factory=list)

    def contenders(self):
        names = []
        for cell in self.cells:
            for name in cell:
                if name not in names:
                    names.append(name)
        return names

    def values(self, attr, names=None, ok_only=True):
        names = self.contenders() if names is None else names
        out = {}
        for name in names:
            vals = []
            for cell in self.cells:
                m = cell.get(name)
                ok = m is not None and (m.status == "ok" or not ok_only)
                vals.append(getattr(m, attr) if ok else None)
            out[name] = vals
        return out


def _series_key(m):
    """(key, size, kind) of a kernel-size series, or None: square kernels
    and 1 x k kernels (1-D signals run as 2-D) form series; problems of
    other ops (convbench.problems) are layers."""
    if m.op != "conv2d" or m.w_shape is None:
        return None
    kh, kw = m.w_shape[2:]
    if kh == kw:
        size, kind = kh, "k x k"
    elif kh == 1:
        size, kind = kw, "1 x k"
    else:
        return None
    pad = m.padding if isinstance(m.padding, str) else "int"
    return (tuple(m.x_shape), m.w_shape[0], m.stride, m.groups, pad, kind), size


def _by_case(measurements):
    cases = {}
    for m in measurements:
        cases.setdefault(m.case, {})[m.contender] = m
    return cases


def panels(sweep, min_sizes=3):
    """The panels of a sweep: one per kernel-size series when every case
    belongs to a series of at least ``min_sizes`` sizes, else one panel
    of all cases as layers."""
    cases = _by_case(sweep.measurements)
    series = {}
    for label, cell in cases.items():
        first = next(iter(cell.values()))
        key = _series_key(first)
        if key is None:
            series = None
            break
        series.setdefault(key[0], {})[key[1]] = cell
    if series and all(len(v) >= min_sizes for v in series.values()):
        return [_kernel_panel(key, by_size) for key, by_size in series.items()]
    labels = list(cases)
    return [Panel("layers", "layers", labels, labels,
                  [cases[k] for k in labels], "layer")]


def _kernel_panel(key, by_size):
    from .crossover import find_crossovers
    x_shape, k_out, stride, groups, _pad, kind = key
    sizes = sorted(by_size)
    cells = [by_size[s] for s in sizes]
    title = ("input {}, K={}{}{}".format(
        "x".join(map(str, x_shape)), k_out,
        f", stride {stride}" if stride != 1 else "",
        f", groups {groups}" if groups != 1 else ""))
    panel = Panel("kernel", title, sizes, [f"k={s}" for s in sizes], cells,
                  f"kernel size k ({kind} filter)")
    times = {k: v for k, v in panel.values("median_s").items() if k != "auto"}
    panel.crossovers = find_crossovers(sizes, times)
    return panel


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------

def _ms(t):
    return "-" if t is None else f"{t * 1e3:.3g}"


def layer_table(panel):
    """Rows per x of a panel: fastest algorithm, auto's pick, auto time /
    fastest algorithm time, fastest peer, fastest algorithm vs that peer.

    Returns ``(header, rows, misses)``; ``misses`` counts the rows where
    auto is more than 10 % slower than the fastest algorithm.
    """
    header = ("case", "fastest algorithm", "ms", "auto → pick", "auto ms",
              "auto / fastest", "fastest peer", "peer ms",
              "peer / fastest algorithm")
    rows, misses = [], 0
    for label, cell in zip(panel.labels, panel.cells):
        ok = {k: m for k, m in cell.items()
              if m.status == "ok" and m.median_s}
        algs = {k: m.median_s for k, m in ok.items()
                if not plots.is_peer(k) and k != "auto"}
        peers = {k: m.median_s for k, m in ok.items() if plots.is_peer(k)}
        best = min(algs, key=algs.get) if algs else None
        peer = min(peers, key=peers.get) if peers else None
        auto = ok.get("auto")
        pick = cell["auto"].chose if "auto" in cell else None
        ratio = auto.median_s / algs[best] if auto and best else None
        ratio_txt = "-" if ratio is None else f"{ratio:.2f}"
        if ratio is not None and ratio > 1.10:
            ratio_txt = f"**{ratio_txt}**"
            misses += 1
        rows.append((label, best or "-", _ms(algs.get(best)),
                     f"auto → {pick}" if pick else "-",
                     _ms(auto.median_s if auto else None), ratio_txt,
                     peer or "-", _ms(peers.get(peer)),
                     f"{peers[peer] / algs[best]:.3g}x" if peer and best else "-"))
    return header, rows, misses


def _status_notes(sweep):
    """One line per (contender, status, rule) of what did not run."""
    notes = {}
    for m in sweep.measurements:
        if m.status in ("ok", "pending"):
            continue
        rule = re.sub(r"\d+(\.\d+)?", "#", m.reason or "")
        entry = notes.setdefault((m.contender, m.status, rule), [m.reason, []])
        entry[1].append(m.case)
    lines = []
    for (name, status, _), (reason, cases) in notes.items():
        where = cases[0] if len(cases) == 1 else f"{len(cases)} cases"
        lines.append(f"{name} {status} ({where}): {reason}")
    return lines


# --------------------------------------------------------------------------
# Documents: a list of blocks rendered as Markdown and as HTML
# --------------------------------------------------------------------------

class Document:
    """Headings, paragraphs, tables, figures and preformatted text."""

    def __init__(self):
        self.blocks = []
        self.figures = 0

    def h(self, level, text):
        self.blocks.append(("h", level, text))

    def p(self, text):
        self.blocks.append(("p", text))

    def ul(self, items):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header, rows):
        self.blocks.append(("table", header, rows))

    def pre(self, text, summary=None):
        self.blocks.append(("pre", text, summary))

    def figure(self, path, caption):
        self.figures += 1
        self.blocks.append(("figure", Path(path),
                            f"Figure {self.figures}. {caption}"))

    def markdown(self):
        out = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out.append("#" * b[1] + " " + b[2])
            elif kind == "p":
                out.append(b[1])
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in b[1]))
            elif kind == "table":
                out.append(_md_table(b[1], b[2]))
            elif kind == "pre":
                text = b[1]
                out.append((f"{b[2]}:\n\n" if b[2] else "") + f"```\n{text}\n```")
            elif kind == "figure":
                out.append(f"![{b[1].stem}]({b[1].name})\n\n*{b[2]}*")
        return "\n\n".join(out) + "\n"

    def html(self, title):
        body = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                body.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
            elif kind == "p":
                body.append(f"<p>{_inline(b[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>"
                                             for i in b[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{_inline(c)}</th>" for c in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>"
                                                for c in r) + "</tr>"
                               for r in b[2])
                body.append(f"<table><thead><tr>{head}</tr></thead>"
                            f"<tbody>{rows}</tbody></table>")
            elif kind == "pre":
                pre = f"<pre>{html.escape(b[1])}</pre>"
                body.append(f"<details><summary>{_inline(b[2])}</summary>{pre}"
                            f"</details>" if b[2] else pre)
            elif kind == "figure":
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(b[1].stem)}" '
                            f'src="data:image/png;base64,{data}">'
                            f"<figcaption>{_inline(b[2])}</figcaption></figure>")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
                f"</head><body>\n" + "\n".join(body) + "\n</body></html>\n")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em "
        "auto;padding:0 1em;color:#222;line-height:1.45}"
        "table{border-collapse:collapse;font-size:.9em;margin:1em 0}"
        "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "th:first-child,td:first-child{text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%}"
        "figure{margin:1.5em 0}figcaption{font-size:.9em;color:#444}"
        "pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}"
        ".interrupted{background:#fee;border:1px solid #c33;padding:.5em}")


def _inline(text):
    """HTML of a line with Markdown's `code` and **bold**."""
    text = html.escape(str(text))
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _md_table(header, rows):
    def cell(v):
        return str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(c) for c in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# Writing the report
# --------------------------------------------------------------------------

def _slug(text):
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "sweep"


def _sgemm(sweeps, machine):
    for info in [machine] + [s.machine for s in sweeps]:
        if info and info.get("sgemm_1024_gflops"):
            return info["sgemm_1024_gflops"]
    return None


def _constants(panel):
    out = {}
    for cell in panel.cells:
        for name, m in cell.items():
            if m.error_constant and not plots.is_peer(name) and name != "auto":
                out.setdefault(name, m.error_constant)
    return out


def _sweep_section(doc, sweep, out, sgemm):
    """Figures, tables and notes of one sweep."""
    slug = _slug(sweep.name)
    doc.h(2, f"{sweep.name}")
    facts = [sweep.description.rstrip(".") + ".",
             f"{len({m.case for m in sweep.measurements})} cases, "
             f"{sweep.dtype}, backend {sweep.backend}, {sweep.repeats} "
             f"repeats (median of interleaved calls), measured {sweep.date}"
             + (f" in {sweep.seconds:.0f} s" if sweep.seconds else "") + "."]
    if sweep.note:
        facts.append(f"Note: {sweep.note}.")
    if sweep.interrupted:
        facts.append("**Interrupted:** this sweep was stopped by Ctrl-C; "
                     "cases after the interruption are missing and a time "
                     "with fewer repeats is marked (Nx) in the table below.")
    if sweep.file:
        facts.append(f"Data: `{sweep.file}`.")
    doc.p(" ".join(f for f in facts if f))
    sub = plots.subtitle(sweep.name, sweep.dtype, sweep.repeats, sweep.date)
    for i, panel in enumerate(panels(sweep), 1):
        _panel_figures(doc, sweep, panel, out, f"{slug}-{i}", sub, sgemm)
    notes = _status_notes(sweep)
    if notes:
        doc.p("Not run:")
        doc.ul(notes)
    from .sweep import SweepResult, format_table
    table = format_table(SweepResult(sweep.raw.get("config", {}), [],
                                     sweep.measurements, sweep.interrupted))
    doc.pre(table, summary=f"All measurements of {sweep.name}")


def _panel_figures(doc, sweep, panel, out, stem, sub, sgemm):
    names = panel.contenders()
    algs = [n for n in names if not plots.is_peer(n) and n != "auto"]
    x = panel.x if panel.kind == "kernel" else panel.labels
    if panel.kind == "kernel":
        doc.h(3, f"{panel.title}: kernel sizes {x[0]}..{x[-1]}")
        times = plots.Series(x, panel.values("median_s"))
        marked = [(c.slower, c.faster, c.size) for c in panel.crossovers
                  if c.slower in algs and c.faster in algs]
        path = plots.plot_time(out / f"{stem}-time.png", times, marked,
                               f"Time per call vs kernel size, {panel.title}",
                               sub, xlabel=panel.xlabel)
        doc.figure(path, "Time per call vs kernel size (log axis), every "
                   "algorithm (solid) and peer (dashed); auto as open stars; "
                   "dotted vertical lines mark where one algorithm overtakes "
                   "another for good (B < A: B is faster from that k on). "
                   + sub)
        if panel.crossovers:
            doc.p("Crossovers (smoothed over neighbouring sizes, "
                  "`convbench.crossover`):")
            doc.ul(c.describe() for c in panel.crossovers)
        else:
            doc.p("Crossovers: none, the order of the contenders does not "
                  "change over these sizes.")
    else:
        doc.h(3, "Per layer")
        times = plots.Series(x, panel.values("median_s"))
        picks = {label: cell["auto"].chose for label, cell
                 in zip(panel.labels, panel.cells) if "auto" in cell}
        path = plots.plot_layer_bars(out / f"{stem}-layers.png", times, picks,
                                     "Time per layer relative to the fastest "
                                     "peer", sub)
        doc.figure(path, "Time of every algorithm, auto and peer per layer, "
                   "divided by the fastest peer's time on that layer (log "
                   "axis; below 1: faster than every peer); the star marks "
                   "the algorithm auto picked. " + sub)
    header, rows, misses = layer_table(panel)
    doc.table(header, rows)
    doc.p("auto / fastest: auto's time over the fastest of the four "
          "algorithms' (the goal is at most 1.10; above it in bold"
          + (f": {misses} case(s) here" if misses else ": none here")
          + "). peer / fastest algorithm: above 1 the fastest algorithm beats "
          "every peer.")
    gf = plots.Series(x, panel.values("gflops"))
    path = plots.plot_gflops(out / f"{stem}-gflops.png", gf, sgemm,
                             f"Achieved GFLOP/s, {panel.title}", sub,
                             panel.xlabel)
    doc.figure(path, "Achieved rate, counting a direct convolution's "
               "2·N·K·C·kH·kW·Ho·Wo FLOPs for every contender (so FFT and "
               "Winograd can pass the GEMM rate: they do fewer operations), "
               "against this machine's measured float32 GEMM rate (dotted). "
               + sub)
    err = plots.Series(x, panel.values("error_units", algs))
    path = plots.plot_error(out / f"{stem}-error.png", err, _constants(panel),
                            f"Error in bound units, {panel.title}", sub,
                            panel.xlabel)
    doc.figure(path, "Max error against the float64 reference in units of "
               "each algorithm's documented bound (kernels.accuracy): "
               "elementwise c·u·(|x|⋆|w|) for direct and im2col, normwise "
               "for winograd and fft; each must stay below its c (dashed, "
               "same colour). Zeros are drawn at 0.01. " + sub)


def _machine_section(doc, machine):
    from .machine import format_machine_info
    doc.h(2, "Machine")
    if not machine:
        doc.p("No machine information in the sweep data.")
        return
    try:
        text = format_machine_info(machine)
    except (KeyError, TypeError):
        text = json.dumps(machine, indent=1, default=str)
    doc.pre(text)
    copy = machine.get("copy_gbs")
    doc.p("The sgemm rate is the practical peak of the GEMM-based algorithms "
          "(the reference line of the GFLOP/s figures)."
          + (f" Copy bandwidth {copy:.1f} GB/s is the practical peak of "
             "memory-bound operations such as pooling; pooling is not swept "
             "yet, its rates against this line come with issue 14."
             if copy else ""))


def write_report(out, sweeps, machine=None, *, command="", interrupted=False,
                 asv=None, seconds=None):
    """Write ``report.md``, ``report.html`` and the PNGs into ``out``.

    Parameters
    ----------
    out : path
        Existing, writable directory.
    sweeps : list of :class:`SweepData`
    machine : dict or None
        ``machine_info()`` of the run (else the first sweep's).
    command : str
        The command line, shown in the report.
    interrupted : bool
        Ctrl-C stopped the run: said at the top of the report.
    asv : tuple (root, history, selected) or None
        asv results to plot (:func:`read_asv_results`).
    seconds : float or None
        Wall time of the measuring.

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out)
    machine = machine or next((s.machine for s in sweeps if s.machine), None)
    doc = Document()
    doc.h(1, "convbench report")
    if interrupted:
        doc.p("**Interrupted (Ctrl-C): this report shows what was measured "
              "before the interruption; sweeps and cases after it are "
              "missing.**")
    date = _now()
    facts = [f"Written {date}"]
    if command:
        facts.append(f"by `{command}`")
    if seconds is not None:
        facts.append(f"after {seconds:.0f} s of measuring")
    doc.p(" ".join(facts) + ".")
    if sweeps:
        doc.p("Sweeps: " + "; ".join(
            f"**{s.name}** ({len({m.case for m in s.measurements})} cases"
            + (", interrupted" if s.interrupted else "") + ")"
            for s in sweeps) + ". Regenerate from the saved data with "
            "`convbench report --from-json " + " ".join(
                s.file or "sweep.json" for s in sweeps) + " --out DIR`.")
        doc.p("Colours are the same in every figure: " + ", ".join(
            f"{name} {color}" for name, color in plots.COLORS.items())
            + "; kernels' algorithms solid, peers (SciPy, torch) dashed or "
              "hatched; time axes logarithmic.")
    sgemm = _sgemm(sweeps, machine)
    for s in sweeps:
        _sweep_section(doc, s, out, sgemm)
    if asv is not None:
        _asv_section(doc, out, *asv)
    _machine_section(doc, machine)
    written = [out / "report.md", out / "report.html"]
    written[0].write_text(doc.markdown(), encoding="utf-8")
    written[1].write_text(doc.html("convbench report"), encoding="utf-8")
    written += [b[1] for b in doc.blocks if b[0] == "figure"]
    return written


# --------------------------------------------------------------------------
# asv results along commits
# --------------------------------------------------------------------------

_ASV_COLUMNS = ["result", "params", "version", "started_at", "duration",
                "stats_ci_99_a", "stats_ci_99_b", "stats_q_25", "stats_q_75",
                "stats_number", "stats_repeat", "samples", "profile"]


@dataclass
class AsvRun:
    """One asv results file: one commit on one machine and environment."""

    machine: str
    commit: str
    date: float          # ms since the epoch (commit date), as asv stores it
    env: str
    results: dict        # benchmark -> (values list, params list of lists)


def _asv_file(path, machine):
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or "results" not in d or "commit_hash" not in d:
        return None                     # machine.json, benchmarks.json, ...
    columns = d.get("result_columns") or _ASV_COLUMNS
    results = {}
    for name, row in d["results"].items():
        if isinstance(row, dict):       # asv < 0.5 (results API version 1)
            value, params = row.get("result"), row.get("params") or []
        else:
            rec = dict(zip(columns, row or []))
            value, params = rec.get("result"), rec.get("params") or []
        if not isinstance(value, list):
            value = [value]
        results[name] = (value, params)
    return AsvRun(machine, str(d["commit_hash"]), float(d.get("date") or 0),
                  str(d.get("env_name", "")), results)


def read_asv_results(root):
    """Every asv results file under ``root`` (``.asv/results``: one folder
    per machine holding ``<commit>-<env>.json``), oldest commit first.

    Raises :class:`ReportInputError` when ``root`` is not a directory or
    holds no results.
    """
    root = Path(root)
    if not root.is_dir():
        raise ReportInputError(f"{root}: not a directory (give asv's results "
                               f"directory, e.g. .asv/results)")
    runs = []
    for path in sorted(root.rglob("*.json")):
        machine = path.parent.name if path.parent != root else ""
        run = _asv_file(path, machine)
        if run is not None:
            runs.append(run)
    if not runs:
        raise ReportInputError(
            f"{root}: no asv results (no <machine>/<commit>-<env>.json with "
            f"'results' and 'commit_hash'); run `asv run` first")
    runs.sort(key=lambda r: (r.date, r.commit))
    return runs


def select_asv_benchmarks(runs, pattern=None):
    """Every ``track_crossover*`` benchmark, and the ``time_`` ones whose
    name matches ``pattern`` (default: the first few matching
    :data:`DEFAULT_ASV_BENCH`)."""
    names = sorted({n for r in runs for n in r.results})
    crossover = [n for n in names if n.rsplit(".", 1)[-1].startswith(
        "track_crossover")]
    regex = re.compile(pattern or DEFAULT_ASV_BENCH)
    timed = [n for n in names if n.rsplit(".", 1)[-1].startswith("time_")
             and regex.search(n)]
    if pattern is None:
        timed = timed[:DEFAULT_ASV_BENCH_COUNT]
    return crossover + timed


def _combos(params):
    import itertools
    if not params:
        return [()]
    return list(itertools.product(*params))


def asv_lines(runs, name):
    """(commit labels, {line label: values per commit}, dropped) of one
    benchmark; a line per machine/env/parameter combination."""
    commits = []
    seen = {}
    for r in runs:
        if r.commit not in seen:
            seen[r.commit] = len(commits)
            date = _dt.datetime.fromtimestamp(r.date / 1e3, _dt.timezone.utc)
            commits.append(f"{r.commit[:8]}\n{date:%Y-%m-%d}")
    machines = {r.machine for r in runs}
    envs = {r.env for r in runs}
    lines = {}
    for r in runs:
        if name not in r.results:
            continue
        values, params = r.results[name]
        for combo, value in zip(_combos(params), values):
            parts = [str(p).strip("'\"") for p in combo]
            if len(machines) > 1:
                parts.insert(0, r.machine)
            if len(envs) > 1:
                parts.insert(0, r.env)
            label = ", ".join(parts) or name.rsplit(".", 1)[-1]
            row = lines.setdefault(label, [None] * len(commits))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[seen[r.commit]] = float(value)
    keys = sorted(lines)
    dropped = max(0, len(keys) - MAX_ASV_LINES)
    return commits, {k: lines[k] for k in keys[:MAX_ASV_LINES]}, dropped


def _asv_section(doc, out, root, runs, selected):
    doc.h(2, "asv history")
    machines = sorted({r.machine for r in runs})
    doc.p(f"{len(runs)} asv result files from `{root}` "
          f"({len({r.commit for r in runs})} commits, machine(s): "
          f"{', '.join(machines) or '-'}); every `track_crossover*` benchmark "
          "and the selected `time_` benchmarks, oldest commit first.")
    if not selected:
        doc.p("No `track_crossover*` benchmark and no `time_` benchmark "
              "matching the selection in these results.")
    for name in selected:
        commits, lines, dropped = asv_lines(runs, name)
        crossover = "track_crossover" in name
        ylabel = ("crossover kernel size k" if crossover
                  else "time per call (ms, log)")
        path = plots.plot_asv(out / f"asv-{_slug(name)}.png", commits, lines,
                              f"{name} along commits", ylabel,
                              log=not crossover, integer=crossover,
                              scale=1.0 if crossover else 1e3)
        caption = (f"asv `{name}` per commit"
                   + ("; a missing point is a crossover outside the tracked "
                      "range (NaN) or a failed run" if crossover else "")
                   + (f"; {dropped} more parameter combinations not drawn"
                      if dropped else "") + ".")
        doc.figure(path, caption)


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------

def _step(i, n, text):
    print(f"step {i}/{n}: {text}", file=sys.stderr, flush=True)


def check_out_dir(out):
    """Create ``out`` if needed and prove it writable; returns None or why
    not (checked before anything is measured)."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        return f"cannot create output directory {str(out)!r}: {exc.strerror or exc}"
    if not os.path.isdir(out):
        return f"{str(out)!r} is not a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".convbench-write-"):
            pass
    except OSError as exc:
        return f"cannot write to output directory {str(out)!r}: {exc.strerror or exc}"
    return None


def _check_backend(backend):
    """None when ``backend``'s kernels run here, else why not."""
    if backend == "cpu":
        return None
    import numpy as np

    import kernels
    if not kernels.built_algorithms(backend):
        return f"no algorithm is built for backend {backend!r}"
    x = np.ones((1, 1, 4, 4), np.float32)
    try:
        kernels.conv2d(x, x[:, :, :3, :3], backend=backend)
    except (ImportError, RuntimeError, NotImplementedError) as exc:
        return str(exc)
    return None


def _contenders(backend):
    import kernels
    algorithms = tuple(kernels.built_algorithms(backend)) + ("auto",)
    peers = ["scipy-direct", "scipy-fft"]
    try:
        import torch  # noqa: F401
        peers.append("torch")
    except ImportError:
        pass
    return algorithms, tuple(peers)


def _save_sweep(out, sweep_dict, plan_name):
    path = Path(out) / f"sweep-{_slug(plan_name)}.json"
    with open(path, "w") as f:
        json.dump(sweep_dict, f, indent=1, default=str)
    return path.name


def measure(plans, out, *, dtype="float32", backend="cpu", progress=True,
            command="", isolated=False):
    """Run ``plans``, saving each sweep's JSON into ``out``; ``isolated``
    also times every contender in its own worker process.

    Returns ``(sweeps, machine, interrupted, seconds)``; a
    KeyboardInterrupt ends the measuring early with ``interrupted`` True
    (what was measured is kept).
    """
    from . import sweep as sweep_mod
    from .machine import machine_info
    algorithms, peers = _contenders(backend)
    steps = len(plans) + 2          # machine, sweeps, writing
    sweeps, machine, interrupted = [], None, False
    t0 = time.perf_counter()
    try:
        _step(1, steps, "machine: CPU, threads, BLAS, sgemm and copy rates")
        machine = machine_info(measure=True)
        for i, plan in enumerate(plans, 2):
            _step(i, steps, f"sweep {plan.name}: {len(plan.cases)} cases x "
                            f"{len(algorithms) + len(peers)} contenders, "
                            f"{plan.repeats} repeats")
            from .problems import Problem
            plan_peers = peers
            if any(isinstance(c, Problem) for c in plan.cases):
                # oaconvolve: SciPy's method for long 1-D signals.
                plan_peers = peers[:2] + ("scipy-oa",) + peers[2:]
            config = sweep_mod.SweepConfig(
                algorithms=algorithms, peers=plan_peers, dtype=dtype,
                repeats=plan.repeats, check_macs=plan.check_macs,
                peer_time_limit=plan.peer_time_limit, backend=backend,
                progress=progress, isolated=isolated)
            start = time.perf_counter()
            date = _now()
            result = sweep_mod.run_sweep(plan.cases, config)
            seconds = time.perf_counter() - start
            result.machine = machine
            d = result.to_dict()
            d["argv"] = list(sys.argv)
            d["report"] = {"workload": plan.name,
                           "description": plan.description,
                           "note": plan.note, "date": date,
                           "seconds": round(seconds, 1), "command": command}
            data = sweep_data(d)
            data.file = _save_sweep(out, d, plan.name)
            sweeps.append(data)
            if result.interrupted:
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    if machine is not None:
        # What the sweeps changed or loaded: malloc thresholds, torch's
        # threads, numba's threading layer (the measured rates stay); the
        # saved sweeps get it too.
        machine.update(machine_info(measure=False))
        for data in sweeps:
            data.raw["machine"] = machine
            _save_sweep(out, data.raw, data.name)
    return sweeps, machine, interrupted, time.perf_counter() - t0


def _command_line(args):
    """The report's command line, rebuilt from its arguments."""
    import shlex
    words = ["convbench", "report", *args.workloads]
    if args.quick:
        words.append("--quick")
    words += ["--out", str(args.out)]
    if args.shape:
        words += ["--shape", ",".join(map(str, args.shape))]
    if args.kernels:
        words += ["--kernels", ",".join(f"{a}x{b}" if a != b else str(a)
                                        for a, b in args.kernels)]
    for flag, value, default in (("--backend", args.backend, "cpu"),
                                 ("--dtype", args.dtype, "float32"),
                                 ("--repeats", args.repeats, None),
                                 ("--from-asv", args.from_asv, None),
                                 ("--asv-bench", args.asv_bench, None)):
        if value != default:
            words += [flag, str(value)]
    if args.problems:
        words += ["--problems", str(args.problems)]
    if args.op is not None:
        words += ["--op", "all" if args.op == "all" else ",".join(args.op)]
    if args.direction != ["fwd"]:
        words += ["--direction", ",".join(args.direction)]
    if args.from_json:
        words += ["--from-json", *args.from_json]
    return " ".join(shlex.quote(w) for w in words)


def _plans(args, parser):
    """The report's sweeps: conv2d kernel sweeps and workloads as before;
    with --problems, --op or --direction, the workloads' layers of every
    op (and the problem file) as problems."""
    every_op = (args.problems or args.op is not None
                or args.direction != ["fwd"])
    if not every_op:
        return plan_sweeps(args.workloads, args.quick, args.shape,
                           args.kernels, args.repeats)
    from .problems import ProblemError
    reps = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)
    plans = (plan_sweeps((), args.quick, args.shape, args.kernels,
                         args.repeats) if args.shape else [])
    try:
        plans += problem_plans(args.workloads, args.problems,
                               args.op if isinstance(args.op, list) else None,
                               args.direction, reps, args.quick)
    except ProblemError as exc:
        parser.error(f"argument --problems: {exc}")
    except OSError as exc:
        parser.error(f"argument --problems: cannot read {args.problems}: "
                     f"{exc.strerror or exc}")
    except ValueError as exc:
        parser.error(f"argument --op/--direction: {exc}")
    if not plans:
        parser.error("nothing to sweep: give WORKLOAD names or --problems "
                     "with --op / --direction")
    return plans


def run(args, parser):
    """``convbench report``: validate everything, measure, write."""
    from . import workloads
    for name in args.workloads:
        if name not in workloads.WORKLOADS:
            parser.error(f"argument WORKLOAD: unknown workload {name!r}; "
                         f"choose from {', '.join(workloads.WORKLOADS)}")
    if args.kernels is not None and args.shape is None:
        parser.error("argument --kernels: only with --shape")
    if args.from_json and (args.workloads or args.shape or args.quick
                           or args.problems):
        parser.error("argument --from-json: redraws saved sweeps; it cannot be "
                     "combined with WORKLOAD, --shape or --quick")
    if args.asv_bench is not None:
        try:
            re.compile(args.asv_bench)
        except re.error as exc:
            parser.error(f"argument --asv-bench: not a regular expression: {exc}")
    loaded = []
    for path in args.from_json or []:
        try:
            loaded.append(load_sweep_json(path))
        except ReportInputError as exc:
            parser.error(f"argument --from-json: {exc}")
    asv = None
    if args.from_asv:
        try:
            runs = read_asv_results(args.from_asv)
        except ReportInputError as exc:
            parser.error(f"argument --from-asv: {exc}")
        asv = (args.from_asv, runs, select_asv_benchmarks(runs, args.asv_bench))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        parser.error("convbench report draws with matplotlib, which is not "
                     "installed: pip install 'convbench[bench]' (or "
                     "pip install matplotlib)")
    problem = check_out_dir(args.out)
    if problem:
        parser.error(f"argument --out: {problem}")
    reason = _check_backend(args.backend)
    if reason:
        parser.error(f"argument --backend: {args.backend} is not usable here: "
                     f"{reason}")
    command = _command_line(args)
    out = Path(args.out)
    machine, interrupted, seconds = None, False, None
    sweeps = loaded
    steps = 1
    if loaded:
        for s in loaded:
            target = out / Path(s.source).name
            if not (target.exists() and os.path.samefile(s.source, target)):
                shutil.copyfile(s.source, target)
            s.file = target.name
    elif not (args.from_asv and not args.workloads and not args.shape
              and not args.quick and not args.problems):
        plans = _plans(args, parser)
        steps = len(plans) + 2
        sweeps, machine, interrupted, seconds = measure(
            plans, out, dtype=args.dtype, backend=args.backend,
            progress=not args.no_progress, command=command,
            isolated=args.isolated)
    _step(steps, steps, "writing the report and figures")
    written = write_report(out, sweeps, machine, command=command,
                           interrupted=interrupted, asv=asv, seconds=seconds)
    print(f"wrote {written[0]} and {written[1]} ({len(written) - 2} figures)")
    if interrupted:
        print("interrupted by Ctrl-C: the report shows the partial results",
              file=sys.stderr)
        return 130
    return 0
