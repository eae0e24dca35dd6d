"""Scratch arrays reused across calls, one set per Python thread.

A CPU kernel whose every call needs multi-megabyte temporaries keeps them
in a :class:`Workspace` (Winograd: the padded input, and V and M of the
staged path) rather than allocating them afresh.
"""

from __future__ import annotations

import math
import threading

import numpy as np

__all__ = ["Workspace"]


# Alignment of every buffer: a cache line, so that a kernel's vector
# loads from aligned offsets of a buffer do not straddle two lines.
# NumPy's large arrays come from mmap 16 bytes past a page.  Xeon VM
# (AVX-512: a 64-byte vector a load), buffers 16 bytes past a line over
# aligned ones, caches cold, 25 alternated calls: direct's channel tile
# (packed filters) on the 7x7/2 stem 1.038, 3x3/2 128@56^2 1.036; the
# 1x1 product of kernels/cpu/_pointwise.py 1.071; Winograd 1.00
# (docs/performance.md section AS).
ALIGNMENT = 64


def _aligned_bytes(nbytes):
    """A new uint8 array of ``nbytes`` starting on an ``ALIGNMENT``
    boundary."""
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes]


class Workspace(threading.local):
    """Scratch arrays reused across calls, one set per Python thread.

    Fresh multi-megabyte arrays cost a page fault per 4 KiB on first touch
    (3 of 13 ms of the staged path on ResNet's 64@56^2, one thread); reusing
    them avoids that.  A buffer larger than ``max_bytes`` is not kept.
    """

    max_bytes = 256 * 2**20

    def __init__(self):
        self.buffers = {}

    def get(self, name, shape, dtype):
        """An uninitialised array of ``shape`` and ``dtype`` in the buffer
        called ``name`` (grown when too small); valid until the next
        ``get`` of that name in this thread."""
        dtype = np.dtype(dtype)
        size = math.prod(shape) * dtype.itemsize   # np.prod: 3 us a call
        buf = self.buffers.get(name)
        if buf is None or buf.nbytes < size:
            buf = _aligned_bytes(max(size, 1))
            if size <= self.max_bytes:
                self.buffers[name] = buf
        return buf[:size].view(dtype).reshape(shape)

    def clear(self):
        """Drop every buffer of the calling thread."""
        self.buffers.clear()
