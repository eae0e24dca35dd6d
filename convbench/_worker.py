"""A timing worker process: ``python -m convbench._worker`` (see
:mod:`convbench.isolated`, which starts and drives it).

The worker imports only what its contenders need, in the order it is
told: a torch-only worker never imports ``kernels`` (whose import sets
``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` for the OpenMP runtime that
torch would load next), a SciPy-only worker imports neither.  It builds
the seeded data of every case, warms every contender up, and then times
what the parent asks for, one request at a time; between requests it
blocks on its pipe (asleep), like a process that is not being measured.

Protocol: one JSON object per line.  The first line from the parent is
the job (contenders, cases, dtype, seed, backend, import order, whether
malloc keeps freed memory, optionally ``weight_cache: [entries, bytes]``,
the bounds of ``kernels``' cache of transformed filters, and ``between:
"relu"``, a NumPy ReLU on each call's output as part of the call; a case is a
ConvCase's fields, or a problem of any op as
:func:`convbench.ops.worker_case` describes it, whose peers are
built by :mod:`convbench.peer_runners` without ``kernels``); the
worker answers ``{"ready": {name: null | reason}, "cases": {name: [null |
reason per case]}}`` (a contender is ready when it runs at least one case;
a request for a case it cannot run gets no times).  Then each
``{"run": name, "case": i | null, "calls": k}`` is answered with
``{"times": [seconds, ...]}`` (``case`` null: every case in order, one
call being the whole sequence, as a network runs its layers; with
``"per_case": true`` as well, each call's times of every case inside
the sequence, ``[[seconds | null per case], ...]``, null where the
contender cannot run a case, which the sequence then skips), and
``{"modules": [name, ...]}`` with each module's position in the import
order (null: not imported), and ``{"quit": true}`` ends the worker.  The protocol uses the process's
original stdout; ``sys.stdout`` is redirected to stderr so that prints of
imported libraries cannot corrupt it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import sys
import time

PEERS = ("scipy-direct", "scipy-fft", "scipy-oa", "torch")

#: What a call may do after its convolution (``between`` of the job):
#: work that a network runs between its convolutions, the same NumPy code
#: for every contender, so that what differs is how each library's
#: threads fare while the caller is busy elsewhere.
BETWEEN = ("none", "relu")


def followed_by_relu(run):
    """``run`` then ``np.maximum(y, 0, out=y)`` on its output, on the
    calling thread (NumPy's, whatever produced ``y``: a torch tensor is
    viewed as an array); returns the output."""
    import numpy as np

    def call():
        y = run()
        out = y if isinstance(y, np.ndarray) else y.numpy()
        np.maximum(out, 0, out=out)
        return y
    return call


def _padding_pairs(padding, kh, kw):
    """((top, bottom), (left, right)) zero padding of a case (no kernels
    import: a peer's worker must not load it)."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        return ((kh - 1) // 2, kh - 1 - (kh - 1) // 2), \
               ((kw - 1) // 2, kw - 1 - (kw - 1) // 2)
    p = int(padding)
    return (p, p), (p, p)


def _kernels_runner(name, case, x, w, backend):
    import kernels
    _, _, _, stride, padding, groups = case

    def run():
        return kernels.conv2d(x, w, stride=stride, padding=padding,
                              groups=groups, algorithm=name, backend=backend)
    return run


def _torch_runner(case, x, w):
    import torch
    import torch.nn.functional as F
    _, _, w_shape, stride, padding, groups = case
    (pt, pb), (pl, pr) = _padding_pairs(padding, *w_shape[2:])
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    symmetric = pt == pb and pl == pr

    def run():
        with torch.no_grad():
            if symmetric:
                return F.conv2d(xt, wt, stride=stride, padding=(pt, pl),
                                groups=groups)
            return F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wt, stride=stride,
                            groups=groups)
    return run


def _correlate(signal, plane, filt, method):
    """'valid' correlation by scipy.signal: correlate(method=) or, for
    method "oa", oaconvolve with the flipped filter."""
    if method == "oa":
        return signal.oaconvolve(plane, filt[::-1, ::-1], mode="valid")
    return signal.correlate(plane, filt, mode="valid", method=method)


def _scipy_runner(method, case, x, w):
    import numpy as np
    import scipy.signal
    _, _, w_shape, stride, padding, groups = case
    k, cg = w_shape[:2]
    pads = ((0, 0), (0, 0)) + _padding_pairs(padding, *w_shape[2:])
    k_per_group = k // groups

    def run():
        xp = np.pad(x, pads)
        planes = []
        for i in range(x.shape[0]):
            for j in range(k):
                g = j // k_per_group
                acc = sum(_correlate(scipy.signal, xp[i, g * cg + c],
                                     w[j, c], method)
                          for c in range(cg))
                planes.append(acc[::stride, ::stride])
        return np.stack(planes)
    return run


def _problem_runner(name, case, data, backend):
    """The runner of ``name`` on a problem case (a dict made by
    :func:`convbench.ops.worker_case`): a peer from its plain spec (no
    ``kernels`` import), an algorithm through :mod:`convbench.ops`."""
    if name in PEERS:
        peer = case["peers"][name]
        if "reason" in peer:
            raise ValueError(peer["reason"])
        from convbench import peer_runners
        if name == "torch":
            return peer_runners.torch_runner(peer["spec"], data)
        return peer_runners.scipy_runner(name, peer["spec"], data)
    from convbench import ops
    from convbench.problems import parse_problem
    run, _ = ops.make_runner(name, parse_problem(case["problem"]), data,
                             backend=backend)
    return run


def _runner(name, case, data, backend):
    if isinstance(case, dict):
        return _problem_runner(name, case, data, backend)
    x, w = data
    if name == "torch":
        return _torch_runner(case, x, w)
    if name in ("scipy-direct", "scipy-fft", "scipy-oa"):
        return _scipy_runner(name[len("scipy-"):], case, x, w)
    return _kernels_runner(name, case, x, w, backend)


def _case_data(case, dtype, seed):
    """The seeded arrays of a case, as its parent drew them: ``(x, w)``
    of a ConvCase, ``{name: array}`` of a problem."""
    from convbench.timing import make_inputs, seeded_normal
    if isinstance(case, dict):
        names = [name for name, _ in case["arrays"]]
        shapes = [tuple(shape) for _, shape in case["arrays"]]
        return dict(zip(names, seeded_normal(*shapes, dtype=dtype,
                                             seed=seed)))
    return make_inputs(case[1], case[2], dtype, seed)


def _import_in_order(job):
    """Import the libraries the contenders need, in the job's order."""
    names = job["contenders"]
    needed = set()
    if any(n not in PEERS for n in names):
        needed.add("kernels")
    if "torch" in names:
        needed.add("torch")
    if any(n.startswith("scipy-") for n in names):
        needed.add("scipy.signal")
    order = [m for m in job.get("import_order") or [] if m in needed]
    for module in order + sorted(needed - set(order)):
        importlib.import_module(module)


def _warmed_up(name, case, data, backend, warmup):
    """(runner, None) after ``warmup`` calls, or (None, why it cannot run)."""
    try:
        run = _runner(name, case, data, backend)
        for _ in range(warmup):
            run()
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        return None, f"{type(exc).__name__}: {exc}"
    return run, None


class _Job:
    """The worker's contenders, data and runners."""

    def __init__(self, job):
        if job.get("keep_freed_memory"):    # as the sweep's own process
            from convbench.machine import keep_freed_memory
            keep_freed_memory()
        _import_in_order(job)
        if job.get("weight_cache") and "kernels" in sys.modules:
            from kernels._weight_cache import transformed_weights
            entries, nbytes = job["weight_cache"]
            transformed_weights.set_limits(int(entries), int(nbytes))
        self.cases = [c if isinstance(c, dict) else tuple(c)
                      for c in job["cases"]]
        self.runners = {}
        self.status = {}
        data = [_case_data(c, job["dtype"], job["seed"] + i)
                for i, c in enumerate(self.cases)]
        self.case_status = {}
        warmup = job.get("warmup", 2)
        for name in job["contenders"]:
            runs, reasons = [], []
            for c, arrays in zip(self.cases, data):
                run, reason = _warmed_up(name, c, arrays,
                                         job.get("backend", "cpu"), warmup)
                runs.append(run)
                reasons.append(reason)
            self.case_status[name] = reasons
            if job.get("between", "none") == "relu":
                runs = [run and followed_by_relu(run) for run in runs]
            ok = [r is None for r in reasons]
            # Ready when it runs at least one case; otherwise the reason.
            self.status[name] = None if any(ok) else reasons[0]
            if any(ok):
                self.runners[name] = runs

    def time(self, name, case, calls, per_case=False):
        runs = self.runners[name]
        if case is None and per_case:
            return self._time_each_case(runs, calls)
        if case is None:
            if any(run is None for run in runs):
                return []           # a sequence it cannot run whole
            def call():
                for run in runs:
                    run()
        elif runs[case] is None:
            return []
        else:
            call = runs[case]
        times = []
        with _gc_paused():
            for _ in range(calls):
                t0 = time.perf_counter()
                call()
                times.append(time.perf_counter() - t0)
        return times

    @staticmethod
    def _time_each_case(runs, calls):
        """[[seconds | None per case] per call]: the sequence of the cases
        this contender runs, each call timed inside it."""
        rows = []
        with _gc_paused():
            for _ in range(calls):
                row = []
                for run in runs:
                    if run is None:
                        row.append(None)
                        continue
                    t0 = time.perf_counter()
                    run()
                    row.append(time.perf_counter() - t0)
                rows.append(row)
        return rows


@contextlib.contextmanager
def _gc_paused():
    """Collect once, then no garbage collection inside the timed calls."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def main():
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    os.dup2(sys.stderr.fileno(), 1)     # native prints go to stderr too

    def send(obj):
        protocol.write(json.dumps(obj) + "\n")

    job = _Job(json.loads(sys.stdin.readline()))
    send({"ready": job.status, "cases": job.case_status})
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        if "modules" in request:     # where each module is in import order
            order = list(sys.modules)
            send({"modules": {m: order.index(m) if m in sys.modules else None
                              for m in request["modules"]}})
            continue
        send({"times": job.time(request["run"], request.get("case"),
                                int(request.get("calls", 1)),
                                bool(request.get("per_case")))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
