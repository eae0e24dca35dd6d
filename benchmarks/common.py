"""Helpers shared by the asv benchmarks.

Data is seeded so that every run times the same numbers; every contender
is called once in ``setup`` so that Numba compilation, FFT planning and
thread-pool start-up are never timed; a combination that does not apply
(an algorithm that is not built or cannot do the configuration, a missing
peer) raises ``NotImplementedError``, which asv reports as skipped.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import time

import numpy as np

import kernels  # noqa: F401  (sets OMP_WAIT_POLICY before Numba's runtime)
from convbench import workloads  # noqa: F401  (re-exported for benchmarks)
from convbench.crossover import crossover
from convbench.sweep import (NotApplicable, ReferenceCheck, Skipped,
                             SweepConfig, bound_kind, make_runner, run_sweep)
from convbench.timing import make_inputs
from convbench.workloads import ConvCase, kernel_sweep

__all__ = ["ALGORITHMS", "SCIPY_PEERS", "PEERS", "BACKENDS", "ConvCase",
           "make_data", "warm_up", "contender", "error_in_bound_units",
           "torch_available", "require_backend", "skip_if_slow",
           "measured_crossover", "representative_layers", "workloads"]

#: Every algorithm of the package, built or not: asv's parameter grid must
#: not change from one commit to the next.
ALGORITHMS = list(kernels.ALGORITHMS)
SCIPY_PEERS = ["scipy-direct", "scipy-fft"]
#: Every peer: listed whether installed or not (a missing one is skipped).
PEERS = SCIPY_PEERS + ["torch"]
#: Every backend of the package; one that cannot run here is skipped.
BACKENDS = list(kernels.BACKENDS)

#: A contender whose second (warm) call takes longer than this is skipped:
#: it would dominate the suite's wall time without telling more.
CALL_LIMIT_S = 3.0
#: SciPy peers estimated slower than this per call are skipped (sweep's rule).
PEER_TIME_LIMIT_S = 2.0

DTYPE = np.float32
SEED = 1234


def make_data(x_shape, w_shape, dtype=DTYPE, seed=SEED):
    """Seeded standard-normal input and filters, C-contiguous
    (:func:`convbench.timing.make_inputs` with the benchmarks' seed)."""
    return make_inputs(x_shape, w_shape, dtype, seed)


def warm_up(fn, calls=1):
    """Call ``fn`` untimed (compilation, planning); return its last result."""
    result = None
    for _ in range(calls):
        result = fn()
    return result


def torch_available():
    """True when torch is installed (without importing it: 2 s per process)."""
    return importlib.util.find_spec("torch") is not None


@functools.lru_cache(maxsize=None)
def _backend_unusable(backend):
    """None when ``backend`` runs here at full speed, else why not."""
    if backend == "cpu":
        return None
    if backend != "cuda":
        return f"backend {backend!r} is not benchmarked"
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not installed"
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return "the CUDA simulator is not timed"
    from numba import cuda
    return None if cuda.is_available() else "no GPU is usable"


def require_backend(backend):
    """Raise NotImplementedError (asv: skipped) unless ``backend`` can run
    here: the CUDA backend needs numba-cuda and a GPU (not the simulator)."""
    reason = _backend_unusable(backend)
    if reason is not None:
        raise NotImplementedError(reason)


def skip_if_slow(run, limit=CALL_LIMIT_S):
    """NotImplementedError when a warm call of ``run`` takes over ``limit``
    seconds.  ``run`` has been called once (compiled); it is timed again
    only when a first timed call is over the limit (so that a slow first
    call caused by a busy machine does not skip it)."""
    for _ in range(2):
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        if seconds <= limit:
            return
    raise NotImplementedError(
        f"{seconds:.3g} s per call, over the suite's {limit:g} s limit")


def contender(name, case, x, w, peer_time_limit=math.inf, backend="cpu"):
    """A warmed-up zero-argument callable for algorithm or peer ``name``.

    Raises NotImplementedError (asv: skipped) when ``backend`` cannot run
    here, ``name`` is not built, cannot compute ``case``, or is a peer
    that is missing or too slow.  Peers run on the CPU only: with another
    backend they are skipped.
    """
    require_backend(backend)
    if name not in kernels.ALGORITHMS + ("auto",) and backend != "cpu":
        raise NotImplementedError("peers are benchmarked with backend='cpu'")
    if (name in kernels.ALGORITHMS
            and name not in kernels.built_algorithms(backend)):
        raise NotImplementedError(f"{name} is not built for {backend}")
    try:
        run, _ = make_runner(name, case, x, w, peer_time_limit,
                             backend=backend)
    except (NotApplicable, Skipped) as exc:
        raise NotImplementedError(str(exc)) from None
    try:
        warm_up(run)
    except kernels.UnsupportedConfiguration as exc:
        raise NotImplementedError(str(exc)) from None
    return run


def error_in_bound_units(name, case, x, w, y):
    """Error of output ``y`` of ``name`` in units of its error bound."""
    check = ReferenceCheck(case, x, w, check_batch=1, check_macs=1e8)
    return check.error_units(bound_kind(name), x.dtype, y)


def measured_crossover(x_shape, k_out, kernel_sizes, slow, fast, repeats=3,
                       backend="cpu"):
    """Kernel size from which ``fast`` stays faster than ``slow`` (a small
    interleaved sweep); NaN when it never takes over, NotImplementedError
    when either is not built."""
    cases = kernel_sweep(x_shape, k_out, kernel_sizes)
    return crossover_of_cases(cases, list(kernel_sizes), slow, fast, repeats,
                              backend)


def crossover_of_cases(cases, sizes, slow, fast, repeats=3, backend="cpu"):
    """Size (``sizes[i]`` labels ``cases[i]``) from which algorithm ``fast``
    stays faster than ``slow``, by :func:`convbench.crossover.crossover` on
    an interleaved sweep with ``repeats`` timed calls each (after a warm-up
    call: compilation is never timed); NaN when ``fast`` never takes over
    for good."""
    require_backend(backend)
    built = kernels.built_algorithms(backend)
    for name in (slow, fast):
        if name not in built:
            raise NotImplementedError(f"{name} is not built for {backend}")
    config = SweepConfig(algorithms=(slow, fast), peers=(), repeats=repeats,
                         check=False, progress=False, backend=backend)
    result = run_sweep(cases, config)
    label_size = {case.label: size for case, size in zip(cases, sizes)}
    times = {slow: {}, fast: {}}
    for m in result.measurements:
        ok = m.status == "ok"
        times[m.contender][label_size[m.case]] = m.median_s if ok else None
    at = crossover(sizes, [times[slow].get(s) for s in sizes],
                   [times[fast].get(s) for s in sizes])
    return math.nan if at is None else float(at)


def layer_key(workload, case):
    """The asv parameter value of a workload layer: ``"workload: label"``."""
    return f"{workload}: {case.label}"


@functools.lru_cache(maxsize=None)
def representative_layers(count=2, max_flops=1e10):
    """``{"workload: label": ConvCase}``: the smallest and the largest
    (by FLOPs) distinct conv2d layers of every named workload, ``count``
    of them at most, spread evenly by FLOPs, among those of at most
    ``max_flops`` (the smallest one when none is that small), so that the
    whole suite stays within its time budget."""
    chosen = {}
    for name, wl in workloads.WORKLOADS.items():
        cases = sorted(wl.build(), key=workloads.case_flops)
        small = [c for c in cases if workloads.case_flops(c) <= max_flops]
        small = small or cases[:1]
        picks = _spread(len(small), count)
        for i in picks:
            chosen[layer_key(name, small[i])] = small[i]
    return chosen


def _spread(n, count):
    """Up to ``count`` distinct indices of ``range(n)`` from first to last."""
    if n <= count:
        return list(range(n))
    if count == 1:
        return [0]
    return sorted({round(i * (n - 1) / (count - 1)) for i in range(count)})
