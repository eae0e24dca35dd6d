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
            buf = np.empty(max(size, 1), np.uint8)
            if size <= self.max_bytes:
                self.buffers[name] = buf
        return buf[:size].view(dtype).reshape(shape)

    def clear(self):
        """Drop every buffer of the calling thread."""
        self.buffers.clear()
