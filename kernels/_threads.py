"""Keep Numba's and OpenBLAS's thread pools from fighting.

Numba's OpenMP threading layer (GNU libgomp on Linux) and OpenBLAS both
keep their worker threads spinning for a while after a parallel region.
When a ``prange`` kernel and a BLAS call alternate (im2col, Winograd, FFT
contraction), each pool's spinning threads steal the cores the other needs.
Measured on the 2-core development machine (im2col, 64 channels at 56x56,
batch 1, float32; fresh processes, median of 40): 1.8 ms with OpenMP
sleeping (``OMP_WAIT_POLICY=PASSIVE``), 16 ms when it spins (policy
``ACTIVE``, or unset because the runtime was loaded before ``kernels``).

Two layers of defence, so that a user never has to know:

1. :func:`configure`, run by ``import kernels``, sets
   ``OMP_WAIT_POLICY=PASSIVE`` (unless the user chose a value).  libgomp
   reads it once, when it is loaded, which Numba does lazily at its first
   parallel launch, so this works whenever ``kernels`` is imported before
   any OpenMP runtime is loaded.
2. That is too late when an OpenMP runtime was loaded first: a Numba
   parallel function run before ``import kernels``, or ``import torch``
   (which loads its own ``libgomp.so.1``; Numba then shares it), or an
   explicit ``OMP_WAIT_POLICY=ACTIVE``.  Since the package runs its BLAS
   pieces as ``prange`` jobs (:mod:`kernels.cpu._gemm`), inside the same
   OpenMP team, there is nothing for spinning workers to clash with.
   Where those pieces must run on Python threads instead (NumPy's CBLAS
   not found), :func:`prange_beside_blas_is_safe` detects the spinning
   cases and the kernels that alternate ``prange`` with BLAS then run
   their (cheap, memory-bound) ``prange`` step on the calling thread
   only, leaving the cores to BLAS: results are identical (the kernels
   parallelise over outputs) and the clash is gone (1.8 ms again in all
   those cases; the serial gather cost im2col 64@56^2 x 4 15-25 % on 2
   cores, hence layer 1 first).

With the policy its own, :func:`configure` also sets a short
``GOMP_SPINCOUNT`` (unless set): workers spin some 100 microseconds
before sleeping, so that the launches of a network's calls, a Python
call's worth apart, do not pay the wake-up of a halted virtual CPU, and
they are asleep long before a BLAS call could need the core.

The detection is a heuristic for Linux (it reads ``/proc/self/maps``); on
other systems only the "Numba launched its pool before ``import kernels``"
case is seen.  The detection does not look at ``GOMP_SPINCOUNT``.
"""

from __future__ import annotations

import os
import re

_POLICY = "OMP_WAIT_POLICY"

# Spin iterations before a PASSIVE libgomp worker sleeps.  Waking a
# sleeping worker cost ~200 us per parallel launch on a 2-vCPU VM (the
# idle vCPU is halted): the direct kernel on C = K = 16 at 28^2 took
# 263 us in parallel against 63 us serially.  With GOMP_SPINCOUNT 1000 to
# 10000 back-to-back launches took 50 us and im2col (prange beside BLAS,
# 64@56^2) kept its 1.8-2.1 ms; at 30000 the clash began (2.5 ms), at
# 100000 it was back (6.6 ms).  3000 until 2026-12-04, when the Xeon VM
# (AVX-512; an Intel pause is ~140 cycles) showed how short that is: a
# 2-thread prange after a gap of busy Python took 2-3 us up to a 20 us
# gap and 35-50 us from 50 us on (10000: asleep between 100 and 200 us;
# 30000: 200-500 us).  A ResNet-50 pass at batch 1 leaves 30-60 us of
# Python between launches: 3000 / 10000, alternated workers, 9 rounds,
# 62.9 / 55.9 ms (per round 1.11, 1.04-1.21).  The clash pattern of
# benchmarks/bench_threads.py (parallel gather, then NumPy's threaded
# sgemm) took 1.97-2.17 ms per pair at 3000, 1.91-2.31 at 10000,
# 1.74-2.92 at 30000 and 3.9-4.8 at 100000.
_SPINCOUNT = 10000

# Filled in by configure() at ``import kernels``.
_policy_before_import = None     # the user's value, None when unset
_runtime_loaded_before_import = False

_forced = None                   # test/benchmark override, see force_...()
_detected = None                 # cached answer of prange_beside_blas_is_safe

# A loaded GNU OpenMP runtime that Numba's omppool would bind to: the
# dynamic linker resolves its dependency ``libgomp.so.1`` to any already
# loaded library of that soname (system libgomp, torch/lib/libgomp.so.1),
# whereas renamed copies (``libgomp-a34b3233.so.1`` in scikit-learn wheels)
# are separate runtimes that Numba does not use.
_SHARED_GOMP = re.compile(r"/libgomp\.so(\.\d+)*\s*$", re.MULTILINE)


def configure():
    """Ask OpenMP to sleep, not spin, between parallel regions.

    Called once by ``import kernels``, before this package launches any
    Numba parallel kernel.  Records whether an OpenMP runtime was already
    loaded (then the variable comes too late; see the module docstring).
    """
    global _policy_before_import, _runtime_loaded_before_import
    _policy_before_import = os.environ.get(_POLICY)
    _runtime_loaded_before_import = _openmp_runtime_loaded()
    if _policy_before_import is None:
        os.environ[_POLICY] = "PASSIVE"
        # ... after a short spin (see _SPINCOUNT); only when the policy is
        # ours, so that a user's explicit choice stays whole.
        os.environ.setdefault("GOMP_SPINCOUNT", str(_SPINCOUNT))
    # GNU OpenMP honours OMP_WAIT_POLICY; Intel's runtime reads this one.
    os.environ.setdefault("KMP_BLOCKTIME", "0")


def _openmp_runtime_loaded():
    """True when Numba would use an OpenMP runtime that is already loaded."""
    try:
        with open("/proc/self/maps") as maps:
            return _SHARED_GOMP.search(maps.read()) is not None
    except OSError:
        pass
    try:  # not Linux: the case we can still see is Numba's own pool
        from numba.np.ufunc import parallel
        return bool(parallel._is_initialized)
    except (ImportError, AttributeError):
        return False


def numba_threading_layer():
    """Numba's threading layer ('omp', 'tbb' or 'workqueue'), launching it."""
    import numba
    try:
        from numba.np.ufunc import parallel
        parallel._launch_threads()          # what a first prange call does
    except (ImportError, AttributeError):   # private API moved: launch it
        _launch_with_a_parallel_kernel()    # the public way
    return numba.threading_layer()


def _launch_with_a_parallel_kernel():
    import numpy as np
    from numba import njit, prange

    @njit(parallel=True)
    def touch(a):
        for i in prange(a.size):
            a[i] = i

    touch(np.empty(4))


def effective_wait_policy():
    """The ``OMP_WAIT_POLICY`` the loaded libgomp read (best knowledge).

    Returns the upper-cased value, or None when the runtime saw none
    (GNU's default: spin about 300000 iterations, milliseconds, then sleep).
    """
    if _runtime_loaded_before_import:
        value = _policy_before_import
    else:
        value = os.environ.get(_POLICY)
    return None if value is None else value.strip().upper()


def prange_beside_blas_is_safe():
    """Whether a ``prange`` kernel may alternate with BLAS calls.

    True when Numba's workers sleep between parallel regions: the
    threading layer is not OpenMP (``workqueue`` workers block on a
    semaphore; TBB yields), or it is OpenMP with a PASSIVE wait policy in
    force.  Kernels that alternate ``prange`` and BLAS run the ``prange``
    step serially when this is False.
    """
    global _detected
    if _forced is not None:
        return _forced
    if _detected is None:  # fixed once Numba's pool is up: detect once
        _detected = (numba_threading_layer() != "omp"
                     or effective_wait_policy() == "PASSIVE")
    return _detected


def force_prange_beside_blas(value):
    """Override :func:`prange_beside_blas_is_safe` (None restores detection).

    For tests and benchmarks that must exercise one path; returns the
    previous override.
    """
    global _forced
    if value not in (None, True, False):
        raise ValueError(f"value must be None, True or False, got {value!r}")
    previous, _forced = _forced, value
    return previous


def describe():
    """What was detected, for benchmark reports."""
    return {
        "threading_layer": numba_threading_layer(),
        "omp_wait_policy_seen_by_runtime": effective_wait_policy(),
        "openmp_loaded_before_kernels": _runtime_loaded_before_import,
        "prange_beside_blas_is_safe": prange_beside_blas_is_safe(),
    }
