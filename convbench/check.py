"""``convbench check``: correctness only, a status per problem and algorithm.

oneDNN benchdnn's correctness mode for this package: every algorithm of
``kernels`` (and ``"auto"``; pooling's one contender ``"kernels"``) runs
once on each problem, and its output is compared with the float64
reference of ``reference/`` in units of the algorithm's documented error
bound (:mod:`convbench.ops`).  Each pair gets one status:

``passed``
    error within the bound (``units <= c``);
``failed``
    error above the bound: the excess ``units / c`` is reported;
``unsupported``
    the algorithm cannot compute the configuration (the reason, as
    ``kernels.UnsupportedConfiguration`` gives it);
``unchecked``
    the reference would cost more than ``check_macs`` multiply-adds even
    on one image (a conv2d is first cropped to the output rows that fit);
``error``
    the call raised anything else (the exception).

The summary line reads ``N passed, N failed, ...``; the exit code of
``convbench check`` is 1 when anything failed or raised, so that a
user's CI can run it on the user's own layers.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass

import numpy as np

import kernels

from . import ops
from .problems import POOL_OPS

__all__ = ["CheckResult", "STATUSES", "run_check", "format_check",
           "summary_line", "exit_code"]

STATUSES = ("passed", "failed", "unsupported", "unchecked", "error")


@dataclass
class CheckResult:
    """One algorithm on one problem."""

    label: str
    problem: str          # the descriptor
    algorithm: str
    status: str           # one of STATUSES
    units: float | None = None      # max |y - y_ref| / (u scale)
    constant: float | None = None   # the bound c it is held to
    model: str | None = None        # whose bound (auto: its pick)
    chose: str | None = None        # auto's pick, where kernels tells it
    reason: str | None = None
    checked: str | None = None      # the part of the output compared

    @property
    def excess(self):
        """``units / c`` (above 1: failed), or None."""
        if self.units is None or self.constant is None:
            return None
        if self.constant == 0:
            return 0.0 if self.units == 0 else float("inf")
        return self.units / self.constant


class _ConvReference:
    """:class:`convbench.sweep.ReferenceCheck` (rows cropped to the budget)
    behind :class:`convbench.ops.Reference`'s interface."""

    skipped = None

    def __init__(self, case, data, check_macs):
        from .sweep import ReferenceCheck
        self._ref = ReferenceCheck(case, data["x"], data["w"], check_batch=0,
                                   check_macs=check_macs)
        region = self._ref.region
        self.description = (f"{region['batch']} image(s), {region['rows']} "
                            f"x {region['cols']} outputs "
                            f"({region['fraction']:.0%})")

    def error_units(self, name, dtype, y, chose=None):
        model = chose if name == "auto" else name
        units = self._ref.error_units(model, dtype, y)
        from kernels import accuracy
        return units, accuracy.error_constant(model, dtype), model


def _reference(p, data, check_macs):
    """The cheapest complete reference of ``p`` within ``check_macs``:
    every image, else the first one (a conv2d: else its first rows)."""
    from .workloads import fits_conv_case, problem_case
    if fits_conv_case(p):
        return _ConvReference(problem_case(p), data, check_macs)
    ref = ops.Reference(p, data, check_batch=0, check_macs=check_macs)
    if ref.skipped is not None and p.n > 1:
        ref = ops.Reference(p, data, check_batch=1, check_macs=check_macs)
    if ref.skipped is None:
        ref.description = (f"{ref.batch} of {p.n} image(s)"
                           if ref.batch < p.n else "all outputs")
    return ref


def _contenders(p, algorithms):
    if p.op in POOL_OPS:
        return [ops.POOL_CONTENDER]
    return [a for a in algorithms if a != ops.POOL_CONTENDER]


def _check_one(p, name, data, ref, backend):
    label = p.label or p.short
    result = CheckResult(label, p.descriptor(), name, "error")
    try:
        run, chose = ops.make_runner(name, p, data, backend=backend)
        y = run()
    except (ops.NotApplicable, kernels.UnsupportedConfiguration) as exc:
        result.status, result.reason = "unsupported", str(exc)
        return result
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - a status, not a crash
        result.reason = f"{type(exc).__name__}: {exc}"
        return result
    if ref.skipped is not None:
        result.status, result.reason = "unchecked", ref.skipped
        return result
    dtype = data["x"].dtype
    units, constant, model = ref.error_units(name, dtype, np.asarray(y),
                                             chose)
    result.units, result.constant, result.model = units, constant, model
    result.chose = chose
    result.checked = ref.description
    if name == "auto" and chose is None and model is not None:
        result.reason = f"held to {model}'s bound (its pick is not known)"
    result.status = "passed" if result.excess <= 1 else "failed"
    if result.status == "failed":
        result.reason = (f"max |y - y_ref| is {units:.3g} u |x|*|w|, "
                         f"{result.excess:.3g}x the bound c = {constant:g}")
    return result


def run_check(problems, algorithms, *, backend="cpu", dtype="float32",
              seed=0, check_macs=2e9, progress=None):
    """Check every algorithm on every problem.

    Parameters
    ----------
    problems : list of :class:`convbench.problems.Problem`
    algorithms : list of str
        Algorithms of ``kernels`` and ``"auto"``; pooling problems run
        their one contender, ``"kernels"``, instead.
    backend, dtype, seed
        Of the calls and the seeded data (:func:`convbench.ops.make_data`).
    check_macs : float
        Multiply-adds the reference may spend per problem.
    progress : callable or None
        Called with a line of text before each problem.

    Returns
    -------
    list of :class:`CheckResult`, problem by problem in order.
    """
    results = []
    for index, p in enumerate(problems):
        if progress is not None:
            progress(f"[{index + 1}/{len(problems)}] {p.descriptor()}")
        data = ops.make_data(p, np.dtype(dtype), seed + index)
        ref = _reference(p, data, check_macs)
        for name in _contenders(p, algorithms):
            results.append(_check_one(p, name, data, ref, backend))
    return results


def summary_line(results):
    """``"12 passed, 1 failed, 3 unsupported, 0 unchecked, 0 errors"``."""
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    parts = [f"{counts[s]} {s}" for s in STATUSES[:-1]]
    parts.append(f"{counts['error']} error{'s' if counts['error'] != 1 else ''}")
    return ", ".join(parts)


def exit_code(results):
    """1 when any result failed or raised, else 0."""
    return int(any(r.status in ("failed", "error") for r in results))


def format_check(results):
    """One line per problem and algorithm, then the reasons and the
    summary line."""
    rows = [("problem", "algorithm", "status", "err units", "bound c",
             "of bound", "checked")]
    for r in results:
        rows.append((
            r.label, r.algorithm + (f"->{r.chose}" if r.chose else ""),
            r.status.upper() if r.status in ("failed", "error") else r.status,
            "-" if r.units is None else f"{r.units:.3g}",
            "-" if r.constant is None else f"{r.constant:g}",
            "-" if r.excess is None else f"{r.excess:.3g}",
            r.checked or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [r for r in results if r.status != "passed" and r.reason]
    if notes:
        lines.append("")
        for r in notes:
            lines.append(f"{r.label} {r.algorithm} {r.status}: {r.reason}")
    lines.append("")
    lines.append("err units: max |y - y_ref| / (u |x|*|w|) over the checked "
                 "outputs; passed when <= bound c (of bound <= 1)")
    lines.append(summary_line(results))
    return "\n".join(lines)


def write_json(results, path, argv=None):
    """Every result as JSON (schema ``convbench.check/1``)."""
    import json
    data = {"schema": "convbench.check/1", "argv": argv or list(sys.argv),
            "summary": summary_line(results),
            "results": [dict(asdict(r), excess=r.excess) for r in results]}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
