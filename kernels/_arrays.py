"""The front ends' array steps, for NumPy arrays and for device arrays.

The public functions take NumPy arrays on every backend and, on a backend
that implements ``("device_array_ops", None)`` (the CUDA one), also device
arrays: objects exposing ``__cuda_array_interface__`` (numba device
arrays, CuPy arrays, torch CUDA tensors).  Device arrays never go through
the host: each step below is NumPy for NumPy arrays and the backend's
device operation (:mod:`kernels.cuda.arrays`) for device arrays, and the
result of a call with a device-array ``x`` is a device array.
"""

from __future__ import annotations

import numpy as np

from . import _dispatch
from ._validation import FLOAT_DTYPES, as_float_array

__all__ = ["is_device_array", "as_input", "reshape", "contiguous",
           "all_finite", "filled", "empty", "zeros", "flip2", "device_op"]


def is_device_array(a):
    """True for objects exposing ``__cuda_array_interface__`` (not NumPy),
    and for the device arrays of numba's CUDA simulator (which do not)."""
    return (a is not None and not isinstance(a, np.ndarray)
            and (hasattr(a, "__cuda_array_interface__")
                 or type(a).__name__ == "FakeCUDAArray"))


def device_op(backend, name, *args):
    """Run the backend's device-array operation ``name``."""
    return _dispatch.load("device_array_ops", backend).run(name, *args)


def as_input(name, a, backend):
    """``a`` as a float32/float64 array the backend takes.

    NumPy (or anything ``np.asarray`` takes) for every backend; device
    arrays, kept on the device, for backends with device-array support,
    else a ``TypeError`` saying what to do.
    """
    if not is_device_array(a):
        return as_float_array(name, a)
    if _dispatch.find("device_array_ops", backend) is None:
        raise TypeError(
            f"{name} is a device array ({type(a).__name__} with "
            f"__cuda_array_interface__) but backend={backend!r} computes on "
            f"NumPy arrays; pass backend='cuda', or copy {name} to the host "
            f"(e.g. {name}.copy_to_host() or {name}.cpu().numpy())")
    a = device_op(backend, "as_array", a)
    if np.dtype(a.dtype) not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have dtype float32 or float64, got {a.dtype}; "
            f"convert it on the device first")
    return a


def _backend_of(a):
    """The backend whose device holds ``a``: the first registered backend
    with device-array operations (today only CUDA has a device)."""
    for backend in _dispatch.backends():
        if _dispatch.find("device_array_ops", backend) is not None:
            return backend
    raise TypeError(f"{type(a).__name__} is a device array, but no installed "
                    f"backend takes device arrays (pip install 'convbench[cuda]')")


def reshape(a, shape):
    """``a.reshape(shape)`` (a device array is made contiguous first)."""
    if is_device_array(a):
        return device_op(_backend_of(a), "reshape", a, tuple(shape))
    return a.reshape(shape)


def contiguous(a):
    """C-contiguous ``a`` (None stays None)."""
    if a is None:
        return None
    if is_device_array(a):
        return device_op(_backend_of(a), "contiguous", a)
    return np.ascontiguousarray(a)


def all_finite(a):
    """True when ``a`` holds no NaN or infinity."""
    if is_device_array(a):
        return device_op(_backend_of(a), "all_finite", a)
    return bool(np.isfinite(a).all())


def filled(shape, dtype, bias, like):
    """Zeros of ``shape`` (N, K, ...) plus ``bias[k]``, where ``like`` lives."""
    if is_device_array(like):
        backend = _backend_of(like)
        if bias is not None and not is_device_array(bias):
            bias = device_op(backend, "to_device", np.ascontiguousarray(bias))
        return device_op(backend, "filled", tuple(shape), dtype, bias)
    y = np.zeros(shape, dtype=dtype)
    if bias is not None and y.size:
        y += np.asarray(bias).reshape((1, -1) + (1,) * (len(shape) - 2))
    return y


def empty(shape, dtype, like):
    """An uninitialised array of ``shape`` where ``like`` lives."""
    if is_device_array(like):
        return device_op(_backend_of(like), "empty", tuple(shape), dtype)
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype, like):
    return filled(shape, dtype, None, like)


def flip2(a):
    """``a[::-1, ::-1]`` of a 2-D array (a copy)."""
    if is_device_array(a):
        return device_op(_backend_of(a), "flip2", a)
    return a[::-1, ::-1].copy()
