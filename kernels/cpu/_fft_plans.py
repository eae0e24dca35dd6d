"""pyFFTW plans and aligned buffers of the CPU FFT convolution.

Plans and threads: pyFFTW plans are cached (keyed on array layouts, axes,
direction, threads, effort and task-worker slot); FFTW_MEASURE for large
transforms and FFTW_ESTIMATE for small ones by default
(:func:`set_planner_effort`, environment variable
``CONVBENCH_FFTW_EFFORT``).  Staged transforms use
``numba.get_num_threads()`` threads when large enough to pay for waking
them (``_MIN_POINTS_PER_THREAD``); the per-frequency BLAS GEMMs run
single-threaded, split over that many Python threads.

Not thread-safe to call concurrently with different planner efforts;
concurrent calls are otherwise safe: each thread has plans of its own
(and each plan executes under its lock).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numba
import numpy as np
import pyfftw
from numpy.lib.stride_tricks import as_strided

__all__ = ["set_planner_effort", "get_planner_effort"]

# --------------------------------------------------------------------------
# Buffers
# --------------------------------------------------------------------------

def empty_aligned(shape, dtype):
    return pyfftw.empty_aligned(shape, dtype=dtype)


# Row starts of the padded input are multiples of this many bytes, so that
# every chunk of it is as aligned as the one its plan was made for.
_ROW_ALIGN_BYTES = 64


def aligned_width(n, dtype):
    """``n`` rounded up to a whole number of ``_ROW_ALIGN_BYTES`` rows."""
    per_row = _ROW_ALIGN_BYTES // np.dtype(dtype).itemsize
    return -(-n // per_row) * per_row


def spectrum_buffer(batch, tile, cdtype, freq_major):
    """A complex buffer and its logical ``(*batch, F0, F1h)`` view.

    Memory order is ``(*batch, F0, F1h)`` (batch-major) or
    ``(F0, F1h, *batch)`` (frequency-major).
    """
    spec = (tile[0], tile[1] // 2 + 1)
    batch = tuple(batch)
    if not freq_major:
        buf = empty_aligned(batch + spec, cdtype)
        return buf, buf
    buf = empty_aligned(spec + batch, cdtype)
    nb = len(batch)
    return buf, buf.transpose(tuple(range(2, 2 + nb)) + (0, 1))


def aligned_like(a):
    """An aligned, uninitialised array with a's shape and strides."""
    if any(st < 0 for st in a.strides):
        raise ValueError("negative strides")
    span = sum((n - 1) * st for n, st in zip(a.shape, a.strides)) + a.itemsize
    base = empty_aligned(span // a.itemsize + 1, a.dtype)
    return as_strided(base, a.shape, a.strides)


def transform_axes(ndim, tile):
    """The last two axes of an ndim array (only the last when t0 == 1)."""
    return (ndim - 1,) if tile[0] == 1 else (ndim - 2, ndim - 1)


# --------------------------------------------------------------------------
# Planner effort
# --------------------------------------------------------------------------

# Planner effort.  Measured on the development machine (float32, steady
# state, interleaved): FFTW_MEASURE plans ran 10-25% faster than
# FFTW_ESTIMATE ones for the large single-channel tiles (1024² image,
# tiles 112² to 576²; CPU time on one thread 6.8 vs 9.5 ms at k = 9, 8.8
# vs 11.1 ms at k = 51) and the same for the small tiles of CNN layers
# (16x16 and below: 3.1 vs 3.1 ms, 1.2 vs 1.2 ms), while MEASURE's one-off
# planning took 0.2-1.9 s for the former and 1-7 s for the latter (many
# batched shapes).  "auto" therefore measures transforms of at least
# _MEASURE_MIN_POINTS points and estimates smaller ones.  FFTW keeps the
# wisdom for the process: a shape is only planned once.
_EFFORTS = ("auto", "FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT")
_MEASURE_MIN_POINTS = 1 << 12
_planner_effort = os.environ.get("CONVBENCH_FFTW_EFFORT", "auto")
if _planner_effort not in _EFFORTS:
    _planner_effort = "auto"


def set_planner_effort(effort):
    """Planner effort of new plans: "auto" (default) or an FFTW flag.

    "auto" uses FFTW_MEASURE for transforms of at least 2**12 points (or
    1-D transforms of at least 256) and FFTW_ESTIMATE for smaller ones;
    "FFTW_ESTIMATE", "FFTW_MEASURE" and "FFTW_PATIENT" apply to every
    transform.
    """
    global _planner_effort
    if effort not in _EFFORTS:
        raise ValueError(f"effort must be one of {_EFFORTS}, got {effort!r}")
    _planner_effort = effort


def get_planner_effort():
    return _planner_effort


# One-dimensional transforms (the column pass of the weight transform, 1-D
# signals) of at least this length are measured too: the 576-point column
# transforms of a 576x576 weight tile ran 0.31 ms measured, 0.60 ms
# estimated (289 columns, float32).
_MEASURE_MIN_LENGTH_1D = 256


def _effort_for(lengths):
    """Planner effort for transforms of the given lengths (one per axis)."""
    if _planner_effort != "auto":
        return _planner_effort
    points = int(np.prod(lengths))
    if points >= _MEASURE_MIN_POINTS or (
            len(lengths) == 1 and points >= _MEASURE_MIN_LENGTH_1D):
        return "FFTW_MEASURE"
    return "FFTW_ESTIMATE"


# --------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------

# Below this many real points per thread a transform runs on one thread:
# waking a sleeping thread (OMP_WAIT_POLICY=PASSIVE) costs more.
_MIN_POINTS_PER_THREAD = 1 << 16

_PLAN_CACHE_SIZE = 128
_plans = OrderedDict()
_plans_lock = threading.Lock()


class _Plan:
    """A pyFFTW plan, executed on new arrays of the planned layout."""

    def __init__(self, fftw):
        self.fftw = fftw
        self.lock = threading.Lock()

    def __call__(self, src, dst):
        with self.lock:
            self.fftw.update_arrays(src, dst)
            self.fftw.execute()


def _threads_for(points):
    threads = numba.get_num_threads()
    return int(max(1, min(threads, points // _MIN_POINTS_PER_THREAD)))


def _layout(a):
    aligned = a.ctypes.data % pyfftw.simd_alignment == 0
    return (a.shape, a.strides, a.dtype.str, aligned)


def fftw_plan(src, dst, axes, direction, scratch=None, slot=None):
    """Cached plan transforming ``src`` into ``dst`` along ``axes``.

    Plans are keyed on the arrays' shapes, strides, dtypes and alignment,
    the axes, the direction, the thread count, the planner effort and the
    calling thread.  A
    new plan is made on the arrays returned by ``scratch()`` (same layout)
    or, without it, on ``src`` and ``dst`` themselves: FFTW_MEASURE
    overwrites them, so callers without ``scratch`` plan before filling.

    ``slot`` (an int) asks for a single-threaded plan of its own for one
    worker of the task-parallel path; every slot's plan for a layout is
    the same FFTW plan (the later ones come from the wisdom the first one
    left), so results do not depend on which worker ran a task.
    """
    real = src if src.dtype.kind == "f" else dst
    threads = _threads_for(real.size) if slot is None else 1
    effort = _effort_for([real.shape[a] for a in axes])
    # Each calling thread gets plans of its own: two threads (Dask's, a
    # user's) transforming same-shaped arrays would otherwise take turns
    # on one plan's lock.
    key = (_layout(src), _layout(dst), tuple(axes), direction, threads,
           effort, slot, threading.get_ident())
    with _plans_lock:
        plan = _plans.get(key)
        if plan is not None:
            _plans.move_to_end(key)
            return plan
    if scratch is not None:
        src, dst = scratch()
    fftw = pyfftw.FFTW(src, dst, axes=tuple(axes), direction=direction,
                       flags=(effort, "FFTW_DESTROY_INPUT"),
                       threads=threads)
    plan = _Plan(fftw)
    with _plans_lock:
        _plans[key] = plan
        while len(_plans) > _PLAN_CACHE_SIZE:
            _plans.popitem(last=False)
    return plan


def clear_plans():
    """Forget every cached plan."""
    with _plans_lock:
        _plans.clear()


def plan_count():
    """Plans held."""
    return len(_plans)
