"""Time contenders in worker processes: each alone, or together in a
chosen import order.

A comparison inside one process is not neutral: thread pools of different
libraries interfere (an OpenMP runtime loaded by one library spins beside
the other's threads), and whatever ran just before a call changes it
(issue 12 measured torch's ResNet-50 moving between 26 and 44 ms with
what preceded it).  So contenders are also timed the way pyperf and asv
do, each in its own worker process that imports only what it needs
(:mod:`convbench._worker`), and the parent alternates the workers call by
call, in a new seeded order every round (:func:`convbench.timing.repeat_order`),
so that a burst of noise hits every contender alike.  Only one worker
computes at a time; the others sleep on their pipes.

:func:`worker_times` is the driver: ``isolated=True`` gives every
contender its own worker; ``isolated=False`` puts them all in one worker
that imports the libraries in ``import_order`` (the in-process figure a
user who imports both sees, for either order).  :func:`settings_times`
runs several such settings at once, round by round, so that they can be
compared round by round (:func:`per_round_ratios`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

from .timing import repeat_order, summarize

__all__ = ["Worker", "WorkerError", "WorkerTimes", "per_round_ratios",
           "settings_times", "worker_times"]


class WorkerError(RuntimeError):
    """A worker process died or answered out of protocol."""


class Worker:
    """One ``python -m convbench._worker`` process hosting ``contenders``.

    ``weight_cache``: (entries, bytes), bounds for ``kernels``' cache of
    transformed filters in the worker (default: the package's).
    ``between``: what each call does after its convolution, one of
    :data:`convbench._worker.BETWEEN` (``"relu"``: a NumPy ReLU on the
    output, the same for every contender).
    Starting it builds the data and warms every contender up; ``status``
    maps each contender to None (ready: it runs at least one case) or the
    reason it cannot run; ``case_status`` to a reason or None per case.
    """

    def __init__(self, contenders, cases, *, dtype="float32", seed=0,
                 backend="cpu", import_order=(), warmup=2,
                 keep_freed_memory=False, python=sys.executable, env=None,
                 weight_cache=None, between="none"):
        from ._worker import BETWEEN
        if between not in BETWEEN:
            raise ValueError(f"between must be one of {BETWEEN}, got "
                             f"{between!r}")
        job = {"contenders": list(contenders),
               "cases": [_plain_case(c) for c in cases], "dtype": dtype,
               "seed": seed, "backend": backend,
               "import_order": list(import_order), "warmup": warmup,
               "keep_freed_memory": bool(keep_freed_memory),
               "weight_cache": weight_cache and [int(v) for v in weight_cache],
               "between": between}
        self._proc = subprocess.Popen(
            [python, "-m", "convbench._worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            bufsize=1, env=env, cwd=_project_root())
        self._send(job)
        answer = self._receive()
        self.status = answer["ready"]
        self.case_status = answer["cases"]

    def _send(self, obj):
        try:
            self._proc.stdin.write(json.dumps(obj) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(self._died()) from None

    def _receive(self):
        line = self._proc.stdout.readline()
        if not line:
            raise WorkerError(self._died())
        return json.loads(line)

    def _died(self):
        self._proc.wait()
        tail = self._proc.stderr.read()[-2000:]
        return (f"timing worker exited with code {self._proc.returncode}:\n"
                f"{tail}")

    def time(self, name, case=None, calls=1, per_case=False):
        """Seconds of ``calls`` calls of ``name`` on case index ``case``
        (None: every case in order, one call being the whole sequence).

        ``per_case`` (with ``case`` None): per call, the seconds of every
        case timed inside the sequence, None for a case ``name`` cannot
        run (skipped in the sequence)."""
        self._send({"run": name, "case": case, "calls": calls,
                    "per_case": bool(per_case)})
        return self._receive()["times"]

    def imported(self, modules):
        """{module: position in the worker's import order, or None}."""
        self._send({"modules": list(modules)})
        return self._receive()["modules"]

    def close(self):
        if self._proc.poll() is None:
            try:
                self._send({"quit": True})
                self._proc.wait(timeout=30)
            except (WorkerError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _plain_case(case):
    """A case as JSON: a ConvCase's fields, or a problem's
    :func:`convbench.ops.worker_case`."""
    from .problems import Problem
    if isinstance(case, Problem):
        from .ops import worker_case
        return worker_case(case)
    label, x_shape, w_shape, stride, padding, groups = case
    return [label, list(x_shape), list(w_shape), int(stride),
            padding if isinstance(padding, str) else int(padding), int(groups)]


def _project_root():
    """The directory holding the ``convbench`` package being run, so a
    worker imports the same code as its parent (a checkout run with
    ``python -m`` included)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class WorkerTimes:
    """Seconds per contender, and why a contender did not run."""

    times: dict = field(default_factory=dict)       # name -> [seconds]
    status: dict = field(default_factory=dict)      # name -> None | reason

    def summary(self):
        """name -> :class:`convbench.timing.TimingSummary` of those that ran."""
        return {n: summarize(t) for n, t in self.times.items() if t}


def worker_times(contenders, cases, rounds, *, isolated=True, sequence=False,
                 case_index=None, calls=1, import_order=(), dtype="float32",
                 seed=0, backend="cpu", order_seed=0, keep_freed_memory=False,
                 python=sys.executable, between="none"):
    """Time ``contenders`` in worker processes, alternated round by round.

    Parameters
    ----------
    contenders : list of str
        Algorithms of ``kernels`` (or "auto") and peers ("torch",
        "scipy-direct", "scipy-fft").
    cases : list of ConvCase
    rounds : int
        Each round times every contender ``calls`` times, contenders in
        the order :func:`~convbench.timing.repeat_order` ``(names, round,
        order_seed)``.
    isolated : bool
        True: one worker per contender, importing only what it needs.
        False: one worker for all, importing in ``import_order``.
    sequence : bool
        True: one call runs every case in order (a network's layers);
        otherwise one call runs ``cases[case_index]`` (default 0).
    import_order : sequence of str
        Module names ("kernels", "torch", "scipy.signal") in import order.
    keep_freed_memory : bool
        Workers call :func:`convbench.machine.keep_freed_memory` first, as
        a sweep's own process does.
    between : {"none", "relu"}
        What each call does after its convolution (:class:`Worker`).

    Returns
    -------
    WorkerTimes
    """
    setting = dict(isolated=isolated, import_order=import_order)
    return settings_times(
        contenders, cases, rounds, [setting], sequence=sequence,
        case_index=case_index, calls=calls, dtype=dtype, seed=seed,
        backend=backend, order_seed=order_seed,
        keep_freed_memory=keep_freed_memory, python=python,
        between=between)[0]


def settings_times(contenders, cases, rounds, settings, *, sequence=False,
                   case_index=None, calls=1, dtype="float32", seed=0,
                   backend="cpu", order_seed=0, keep_freed_memory=False,
                   python=sys.executable, between="none"):
    """:func:`worker_times` in several settings at once, interleaved.

    ``settings`` is a list of dicts with the keys ``isolated`` and
    ``import_order`` of :func:`worker_times`.  Every setting's workers
    start first; then each round runs every setting, settings in a new
    seeded order (:func:`~convbench.timing.repeat_order` of their
    indices, seed ``order_seed + 1``), and inside a setting every
    contender in :func:`worker_times`' order.  So round ``r`` of one
    setting and round ``r`` of another are timed within one round of each
    other: their ratio compares the settings, not two moments of a
    machine whose speed drifts (on the 2-vCPU VMs torch's own time moved
    by more than 10 % between two settings timed one after the other,
    which hid whether the import order mattered: issue 12, target 1).
    Returns one :class:`WorkerTimes` per setting, in order.
    """
    names = list(contenders)
    case = None if sequence else (case_index or 0)
    options = dict(dtype=dtype, seed=seed, backend=backend,
                   keep_freed_memory=keep_freed_memory, python=python,
                   between=between)
    workers, hosts, results = [], [], []
    try:
        for setting in settings:
            groups = ([[n] for n in names] if setting.get("isolated", True)
                      else [names])
            host, result = {}, WorkerTimes()
            for group in groups:
                worker = Worker(group, cases,
                                import_order=setting.get("import_order", ()),
                                **options)
                workers.append(worker)
                for name, reason in worker.status.items():
                    result.status[name] = reason
                    if reason is None:
                        host[name] = worker
                        result.times[name] = []
            hosts.append(host)
            results.append(result)
        for r in range(rounds):
            for i in repeat_order(range(len(settings)), r, order_seed + 1):
                for name in repeat_order(list(hosts[i]), r, order_seed):
                    results[i].times[name].extend(
                        hosts[i][name].time(name, case, calls))
    finally:
        for worker in workers:
            worker.close()
    return results


def per_round_ratios(numerator, denominator, name):
    """``numerator``'s time over ``denominator``'s for contender ``name``,
    round by round (two :class:`WorkerTimes` of one
    :func:`settings_times` run, one call a round); empty where either did
    not run it."""
    return [a / b for a, b in zip(numerator.times.get(name, ()),
                                  denominator.times.get(name, ()))]
