"""Seeded data and interleaved timing: how convbench and every benchmark
script make their inputs and time their contenders.

Data
    :func:`make_inputs` (an input and its filters) and :func:`seeded_normal`
    (any number of arrays) draw standard-normal values from
    ``numpy.random.default_rng(seed)``, one array after the other, in
    float64, and cast them to the requested dtype: the values every seed
    gave before these helpers existed.

Timing
    :func:`interleaved_times` calls every contender once per repeat, in an
    order drawn afresh for each repeat from a generator seeded with
    ``(repeat, seed)`` (:func:`repeat_order`).  Interleaving makes a burst
    of noise on a shared machine hit every contender alike; a new order
    each repeat keeps a contender from always following the same one: what
    a predecessor leaves behind (sleeping or spinning threads, caches)
    showed up as its follower's time ("auto" after "fft": 1.1-1.6x on
    ResNet-50's layers, 2-vCPU VM, when the sweep's order was a fixed
    cycle).  :func:`summarize` gives the median and the spread (min-max and
    quartiles) of a contender's times.

Only NumPy and the standard library are imported (not ``kernels``, not
Numba): cheap to import from anywhere, ``convbench.machine`` included.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass

import numpy as np

__all__ = ["seeded_normal", "make_inputs", "time_call", "repeat_order",
           "interleaved_times", "TimingSummary", "summarize", "summarize_all"]


# --------------------------------------------------------------------------
# Seeded data
# --------------------------------------------------------------------------

def seeded_normal(*shapes, dtype=np.float32, seed=0, draw_dtype=np.float64):
    """Standard-normal arrays of ``shapes``, drawn in turn from one generator.

    Parameters
    ----------
    *shapes : int or tuple of int
        One array per shape, drawn in this order from
        ``numpy.random.default_rng(seed)``.
    dtype : dtype
        dtype of the arrays returned (cast after drawing).
    seed : int
        Seed of the generator.
    draw_dtype : {float64, float32}
        dtype NumPy draws in.  float32 draws are a different stream (not the
        float64 values rounded); the default, float64, gives the values the
        project's seeds have always given.

    Returns
    -------
    tuple of ndarray
        C-contiguous, one per shape.
    """
    rng = np.random.default_rng(seed)
    draw = np.dtype(draw_dtype)
    return tuple(rng.standard_normal(shape, dtype=draw).astype(dtype, copy=False)
                 for shape in shapes)


def make_inputs(x_shape, w_shape, dtype=np.float32, seed=0):
    """Seeded standard-normal input ``x`` and filters ``w``, C-contiguous
    (``x`` drawn first, both in float64, then cast to ``dtype``)."""
    return seeded_normal(x_shape, w_shape, dtype=dtype, seed=seed)


# --------------------------------------------------------------------------
# Interleaved timing
# --------------------------------------------------------------------------

def time_call(fn, clock=time.perf_counter):
    """Seconds (of ``clock``) taken by one call of ``fn()``."""
    t0 = clock()
    fn()
    return clock() - t0


def repeat_order(names, repeat, seed=0):
    """The order of ``names`` in timed repeat ``repeat``: a permutation
    drawn from ``numpy.random.default_rng([repeat, seed])``, reproducible and
    different from one repeat to the next.  ``seed`` must be >= 0; with
    ``seed=0`` it is ``default_rng(repeat)``'s permutation (SeedSequence
    pads its entropy with zeros), the sweep's order since it was
    introduced."""
    order = list(names)
    np.random.default_rng([repeat, seed]).shuffle(order)
    return order


def interleaved_times(contenders, repeats, seed=0, warmup=1, *,
                      clock=time.perf_counter, timer=None, times=None,
                      disable_gc=False, before_call=None, after_call=None):
    """Time each contender ``repeats`` times, interleaved in seeded orders.

    Parameters
    ----------
    contenders : dict
        name -> zero-argument callable.
    repeats : int
        Timed calls per contender.  Repeat ``r`` calls every contender once,
        in the order :func:`repeat_order` ``(names, r, seed)``.
    seed : int
        Seed of the orders (>= 0).
    warmup : int
        Untimed calls of each contender first (``warmup`` in a row, in the
        order of ``contenders``): compilation, planning, thread start.
    clock : callable
        The clock of :func:`time_call` (``time.process_time`` for CPU time).
    timer : callable, optional
        ``timer(fn) -> seconds`` instead of ``time_call(fn, clock)``: for
        contenders that time themselves, pass ``lambda fn: fn()``.
    times : dict, optional
        name -> list to append to (created where missing).  The lists grow
        call by call, so whatever was measured before an exception
        (KeyboardInterrupt) is still in them.
    disable_gc : bool
        Collect once, then keep the garbage collector off while timing, so
        that no collection lands in a timed call.
    before_call, after_call : callable, optional
        ``before_call(name, repeat)`` and ``after_call(name, repeat,
        seconds)`` around each timed call (progress bars).

    Returns
    -------
    dict
        name -> list of seconds, in repeat order (``times[a][r]`` and
        ``times[b][r]`` were taken in the same repeat).
    """
    if timer is not None and clock is not time.perf_counter:
        raise TypeError("give clock or timer, not both")
    if repeats < 0 or warmup < 0:
        raise ValueError(f"repeats and warmup must be >= 0, got {repeats} "
                         f"and {warmup}")
    if timer is None:
        def timer(fn):
            return time_call(fn, clock)
    names = list(contenders)
    times = {} if times is None else times
    for name in names:
        times.setdefault(name, [])
    for name in names:
        for _ in range(warmup):
            contenders[name]()
    if not names:
        return times
    gc_was_enabled = gc.isenabled()
    if disable_gc:
        gc.collect()
        gc.disable()
    try:
        for r in range(repeats):
            for name in repeat_order(names, r, seed):
                if before_call is not None:
                    before_call(name, r)
                seconds = timer(contenders[name])
                times[name].append(seconds)
                if after_call is not None:
                    after_call(name, r, seconds)
    finally:
        if disable_gc and gc_was_enabled:
            gc.enable()
    return times


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class TimingSummary:
    """Median and spread of one contender's times (seconds).

    ``q1`` / ``q3`` are the 25th / 75th percentiles with linear
    interpolation between the sorted times (NumPy's default, R's type 7).
    """

    n: int
    median: float
    min: float
    max: float
    q1: float
    q3: float

    @property
    def spread(self):
        """max - min."""
        return self.max - self.min

    @property
    def iqr(self):
        """Interquartile range, q3 - q1."""
        return self.q3 - self.q1


def _percentile(ordered, p):
    """Linearly interpolated ``p``-th quantile (0 <= p <= 1) of sorted data."""
    pos = p * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(seconds):
    """:class:`TimingSummary` of a non-empty sequence of times."""
    ordered = sorted(float(s) for s in seconds)
    if not ordered:
        raise ValueError("no times to summarize")
    return TimingSummary(n=len(ordered), median=statistics.median(ordered),
                         min=ordered[0], max=ordered[-1],
                         q1=_percentile(ordered, 0.25),
                         q3=_percentile(ordered, 0.75))


def summarize_all(times):
    """name -> :class:`TimingSummary` of a dict of times."""
    return {name: summarize(ts) for name, ts in times.items()}
