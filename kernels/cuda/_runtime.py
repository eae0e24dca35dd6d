"""What every CUDA module shares: the guarded import, arrays in and out,
launch shapes, and the list of kernels the compilation report builds.

Importing this module imports ``numba.cuda``; nothing outside
``kernels/cuda/`` imports it, so ``import kernels`` never loads CUDA.

**Arrays.**  A CUDA entry point (the ``run`` of a :class:`kernels._dispatch.Kernel`)
is wrapped with :func:`device_entry`: it receives NumPy arrays (copied to
the device) or objects exposing ``__cuda_array_interface__`` (numba device
arrays, CuPy arrays, torch CUDA tensors; used in place), and its inner
function sees numba device arrays only.  The result comes back as NumPy
when the first array argument was a NumPy array, else as a numba device
array on the device.

**Simulator.**  ``NUMBA_ENABLE_CUDASIM=1`` runs every kernel in numba's
CUDA simulator (Python threads, real barriers, bounds-checked indexing):
the test suite's way of running this backend without a GPU.  One
simulator rule shapes the kernels: two ``cuda.shared.array`` calls on one
source line alias each other there, so each has a line of its own.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

INSTALL_HINT = ("pip install 'convbench[cuda]' (numba-cuda with the CUDA "
                "toolkit wheels)")

try:
    from numba import cuda
except ImportError as exc:  # numba without its CUDA target
    raise ImportError(
        f"backend='cuda' needs numba-cuda, which is not installed "
        f"({exc}); install it with {INSTALL_HINT}") from exc

__all__ = ["cuda", "INSTALL_HINT", "SIMULATOR", "require_device",
           "is_device_array", "as_device_array", "to_device",
           "canonical_host_array", "device_entry",
           "grid",
           "numba_type", "ReportEntry"]

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _check_numpy_is_supported():
    """Fail at import, saying what to do, where numba-cuda cannot compile.

    numba-cuda 0.30.4 (the last release; the project is in maintenance)
    registers an overload of ``np.row_stack``, which NumPy 2.5 removed, so
    with NumPy 2.5 every kernel's first launch raised ``AttributeError:
    module 'numpy' has no attribute 'row_stack'`` (seen on an H200;
    NVIDIA/numba-cuda#907).  The simulator never loads that module.
    """
    if SIMULATOR or hasattr(np, "row_stack"):
        return
    try:
        import numba.cuda.np.arrayobj  # noqa: F401  (registers overloads)
    except AttributeError as exc:
        raise ImportError(
            f"backend='cuda': this numba-cuda cannot compile kernels with "
            f"NumPy {np.__version__} ({exc}; NVIDIA/numba-cuda#907); "
            f"install NumPy < 2.5: pip install 'numpy<2.5' (the cuda "
            f"extra asks for it)") from exc


_check_numpy_is_supported()


def require_device():
    """Raise a clear ``RuntimeError`` when kernels cannot run here."""
    if SIMULATOR:
        return
    if not cuda.is_available():
        raise RuntimeError(
            "backend='cuda': numba-cuda is installed but no CUDA GPU is "
            "usable here (numba.cuda.is_available() is False: no device or "
            "no driver); run on a machine with an NVIDIA GPU, or set "
            "NUMBA_ENABLE_CUDASIM=1 before starting Python to run the "
            "kernels in numba's (slow) CUDA simulator")


def is_device_array(a):
    """True for objects with ``__cuda_array_interface__`` (not NumPy), and
    for the simulator's device arrays (which have none)."""
    return (a is not None and not isinstance(a, np.ndarray)
            and (hasattr(a, "__cuda_array_interface__")
                 or type(a).__name__ == "FakeCUDAArray"))


def to_device(a, stream=0):
    """``a`` as a numba device array: in place for device objects, else a
    copy of the (C-contiguous) host array."""
    if a is None:
        return None
    if is_device_array(a):
        return as_device_array(a)
    return cuda.to_device(canonical_host_array(a), stream=stream)


def canonical_host_array(a):
    """``a`` C-contiguous with the strides NumPy gives a new array.

    NumPy calls an array C-contiguous whatever strides its unit axes carry
    (``x[None]`` has stride 0 there, a flipped unit axis a negative one),
    so ``np.ascontiguousarray`` hands such a view back unchanged.  A numba
    device array keeps those strides, does not count itself contiguous,
    and then refuses to reshape ("operation requires copying") or, with a
    negative stride, to be copied to.  The simulator's arrays are NumPy
    arrays, so only a GPU shows it.  The layout in memory is the same, so
    a view with the usual strides is enough: no copy.
    """
    a = np.ascontiguousarray(a)
    # Reshaping a contiguous array through one dimension is a view with
    # the strides NumPy gives a new array.
    return a.reshape(a.size).reshape(a.shape)


def as_device_array(a):
    """A numba device array over a device object's memory (no copy)."""
    if type(a).__name__ == "FakeCUDAArray":
        return a
    if SIMULATOR:
        raise TypeError(
            f"{type(a).__name__} is a real CUDA array, but numba runs its "
            f"CUDA simulator (NUMBA_ENABLE_CUDASIM=1), which only takes its "
            f"own device arrays (numba.cuda.to_device)")
    return cuda.as_cuda_array(a)


def _copy_back(result, stream):
    if isinstance(result, tuple):
        return tuple(_copy_back(r, stream) for r in result)
    if is_device_array(result):
        return result.copy_to_host(stream=stream)
    return result


def device_entry(run):
    """Wrap ``run(spec, *device_arrays)`` as a contract entry point.

    Host arrays go to the device, device arrays stay; the result returns
    to the host when the first array argument was a host array.  Other
    arguments (None, scalars, records) pass through.
    """
    @functools.wraps(run)
    def entry(spec, *args, stream=0):
        require_device()
        first = next((a for a in args if a is not None
                      and (isinstance(a, np.ndarray) or is_device_array(a))),
                     None)
        on_host = isinstance(first, np.ndarray)
        moved = [to_device(a, stream)
                 if isinstance(a, np.ndarray) or is_device_array(a) else a
                 for a in args]
        result = run(spec, *moved, stream=stream)
        if on_host:
            result = _copy_back(result, stream)
            if stream:
                stream.synchronize()
        return result
    entry.device_run = run
    return entry


def grid(n, threads):
    """Blocks of ``threads`` that cover ``n`` items (at least one)."""
    return max(1, math.ceil(n / threads))


def numba_type(dtype):
    """numba's scalar type for a NumPy float dtype."""
    from numba import float32, float64
    return {np.dtype(np.float32): float32,
            np.dtype(np.float64): float64}[np.dtype(dtype)]


# --------------------------------------------------------------------------
# What the compilation report builds (convbench cuda-report)
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportEntry:
    """One kernel as its driver launches it.

    ``kernel(dtype)`` returns the ``@cuda.jit`` dispatcher used for that
    dtype; ``signature(dtype)`` its argument types (a tuple of numba
    types, as ``numba.cuda.compile_ptx`` takes them); ``threads`` the
    threads per block of its launch configuration; ``dynamic_shared(dtype)``
    bytes of dynamic shared memory per block (0 for static only).
    """

    module: str
    name: str
    kernel: Callable
    signature: Callable
    threads: int
    dynamic_shared: Optional[Callable] = None
    note: str = ""


# Each module lists its kernels in a module-level ``REPORT`` list of
# :class:`ReportEntry`; ``convbench cuda-report`` compiles them all.
