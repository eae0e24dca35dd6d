"""Helpers shared by the asv benchmarks.

Data is seeded so that every run times the same numbers; every contender
is called once in ``setup`` so that Numba compilation, FFT planning and
thread-pool start-up are never timed; a combination that does not apply
(an algorithm that is not built or cannot do the configuration, a missing
peer) raises ``NotImplementedError``, which asv reports as skipped.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np

import kernels  # noqa: F401  (sets OMP_WAIT_POLICY before Numba's runtime)
from convbench import workloads  # noqa: F401  (re-exported for benchmarks)
from convbench.crossover import crossover
from convbench.sweep import (NotApplicable, ReferenceCheck, Skipped,
                             SweepConfig, bound_kind, make_runner, run_sweep)
from convbench.timing import make_inputs
from convbench.workloads import ConvCase, kernel_sweep

__all__ = ["ALGORITHMS", "SCIPY_PEERS", "ConvCase", "make_data", "warm_up",
           "contender", "error_in_bound_units", "torch_available",
           "measured_crossover", "workloads"]

#: Every algorithm of the package, built or not: asv's parameter grid must
#: not change from one commit to the next.
ALGORITHMS = list(kernels.ALGORITHMS)
SCIPY_PEERS = ["scipy-direct", "scipy-fft"]

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


def contender(name, case, x, w, peer_time_limit=math.inf):
    """A warmed-up zero-argument callable for algorithm or peer ``name``.

    Raises NotImplementedError (asv: skipped) when ``name`` is not built,
    cannot compute ``case``, or is a peer that is missing or too slow.
    """
    if name in kernels.ALGORITHMS and name not in kernels.built_algorithms():
        raise NotImplementedError(f"{name} is not built")
    try:
        run, _ = make_runner(name, case, x, w, peer_time_limit)
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


def measured_crossover(x_shape, k_out, kernel_sizes, slow, fast, repeats=3):
    """Kernel size from which ``fast`` stays faster than ``slow`` (a small
    interleaved sweep); NaN when it never takes over, NotImplementedError
    when either is not built."""
    built = kernels.built_algorithms()
    for name in (slow, fast):
        if name not in built:
            raise NotImplementedError(f"{name} is not built")
    cases = kernel_sweep(x_shape, k_out, kernel_sizes)
    config = SweepConfig(algorithms=(slow, fast), peers=(), repeats=repeats,
                         check=False, progress=False)
    result = run_sweep(cases, config)
    times = {slow: {}, fast: {}}
    for m in result.measurements:
        times[m.contender][m.kernel_size] = m.median_s if m.status == "ok" else None
    sizes = list(kernel_sizes)
    at = crossover(sizes, [times[slow].get(k) for k in sizes],
                   [times[fast].get(k) for k in sizes])
    return math.nan if at is None else float(at)
