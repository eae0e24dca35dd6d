"""One bounded cache of transformed filters, shared by every algorithm.

Winograd's kernel transform and FFT's filter spectra cost far more than
comparing the filter with a stored copy (~100x), and a network calls each
layer with the same filter again and again.  An entry is found by the
filter array's address, shape, strides and dtype plus the algorithm's own
key (tile, FFT geometry, groups, tuning), and used only if the stored copy
equals the filter **bit for bit**: in-place changes are always seen, and
``-0.0``/``0.0`` or two NaN payloads count as different filters (a
by-value comparison would reuse a transform of other bits, and NaN never
compares equal by value, so NaN filters were transformed on every call).

Each entry also records whether its filter is finite, so that the
front end's rule "NaN/Inf in the filter: compute with direct" costs one
pass over the filter when it is transformed, not on every call: a
call's fetches are seen through :meth:`WeightTransformCache.watch`
(ResNet-50 at batch 1 spent ~1.5 ms a pass on ``np.isfinite(w).all()``
for its Winograd layers, 67-100 us for each 256-channel 3x3 filter).

The cache is bounded in entries and bytes (256 and 1 GiB by default,
:func:`set_weight_cache_limits`); the least recently used go first.  A
network whose transforms exceed the bound evicts each one before its next
call and recomputes every one on every call: VGG-16 at batch 1 (~300 MB
of Winograd transforms and copies) took 900-1040 ms a pass under the
former 256 MiB bound against 103 ms with all of them kept (torch: 190-210;
Zen 3, 2026-12-03).  The first transform recomputed after its eviction
gives one :class:`WeightCacheWarning` saying so.  The cache is
thread-safe; two threads that miss at once both transform (the result is
the same) and one entry is kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import warnings
from collections import OrderedDict

import numpy as np

__all__ = ["WeightTransformCache", "WeightCacheWarning", "same_bits",
           "set_weight_cache_limits", "transformed_weights"]

DEFAULT_MAX_ENTRIES = 256
DEFAULT_MAX_BYTES = 1 << 30


class WeightCacheWarning(UserWarning):
    """A filter's transform was evicted and then needed again: the cache
    is too small for the filters in use (see :func:`set_weight_cache_limits`)."""


def _libc_memcmp():
    """The C library's ``memcmp`` through ctypes, or None (Windows)."""
    try:
        libc = ctypes.CDLL(None)
        memcmp = libc.memcmp
    except (OSError, AttributeError, TypeError):
        return None
    memcmp.restype = ctypes.c_int
    memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    return memcmp


_memcmp = _libc_memcmp()


def same_bits(a, b):
    """True when ``a`` and ``b`` have the same shape, dtype and bits.

    Contiguous arrays are compared with ``memcmp``: every call with a
    cached transform compares the whole filter, and NumPy's comparison
    (an equality array, then ``all``) took 1.8-2.2 ms on 512 x 512 x 3 x 3
    float32 filters against memcmp's 1.4 (Xeon VM; both bound by memory).
    """
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if (_memcmp is not None and a.flags.c_contiguous and b.flags.c_contiguous
            and a.dtype.isnative):
        return a.nbytes == 0 or _memcmp(a.ctypes.data, b.ctypes.data, a.nbytes) == 0
    as_int = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(np.ascontiguousarray(a).view(as_int),
                               np.ascontiguousarray(b).view(as_int)))


def _fingerprint(a):
    """A hash of ``a``'s bits, sampled to at most ~8192 elements."""
    flat = a.reshape(-1)
    if flat.size > 16384:
        flat = flat[::flat.size // 8192]
    return hash(np.ascontiguousarray(flat).tobytes())


class WeightTransformCache:
    """Transforms of recently used filters, keyed by array and algorithm.

    Parameters
    ----------
    max_entries : int
    max_bytes : int
        Bound on the stored copies plus the transforms' ``nbytes``; a
        transform larger than this on its own is returned, not stored.
    """

    def __init__(self, max_entries=DEFAULT_MAX_ENTRIES,
                 max_bytes=DEFAULT_MAX_BYTES):
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        # key -> (copy of w, transform, copy holds no NaN/Inf)
        self._entries = OrderedDict()
        self._lock = threading.Lock()
        self._local = threading.local()     # this thread's open watches
        # Keys evicted for room, most recent last (bounded): a miss on one
        # of them is a transform recomputed because the cache was full.
        self._evicted = OrderedDict()
        self.recomputed = 0
        self._warned = False

    @staticmethod
    def _key(w, kind, key):
        return (kind, w.__array_interface__["data"][0], w.shape, w.strides,
                w.dtype.str, key)

    @staticmethod
    def _size(entry):
        own, value, _ = entry
        return own.nbytes + int(value.nbytes)

    @contextlib.contextmanager
    def watch(self):
        """Within the block, note whether the filters this thread fetches
        with :meth:`get` are finite.

        Yields a :class:`FetchedFilters`: ``fetched`` is True once a
        filter was fetched, ``finite`` whether all of them were (from the
        entry's record: no pass over the filter on a hit).  Watches nest;
        a fetch is noted by the innermost one only.
        """
        stack = self._watches()
        seen = FetchedFilters()
        stack.append(seen)
        try:
            yield seen
        finally:
            stack.pop()

    def _watches(self):
        stack = getattr(self._local, "watches", None)
        if stack is None:
            stack = self._local.watches = []
        return stack

    def _note(self, finite):
        stack = getattr(self._local, "watches", None)
        if stack:
            stack[-1].note(finite)

    def note_checked(self, finite):
        """Tell the innermost open :meth:`watch` that a kernel read a
        filter itself, without this cache, and found it finite or not (so
        that the front end makes no pass of its own over the filter)."""
        self._note(bool(finite))

    def get(self, w, kind, key, transform):
        """``transform(copy of w)``, or the stored result for these bits.

        ``kind`` names the algorithm (``"winograd"``, ``"fft"``), ``key``
        is hashable and holds everything else the transform depends on.
        ``transform`` receives a private read-only copy of ``w`` (which it
        may keep a reference to) and returns an object with ``nbytes``.
        """
        full_key = self._key(w, kind, key)
        with self._lock:
            hit = self._entries.get(full_key)
        if hit is not None and same_bits(hit[0], w):
            with self._lock:
                if full_key in self._entries:
                    self._entries.move_to_end(full_key)
            self._note(hit[2])
            return hit[1]
        if hit is None:
            self._note_recomputed(full_key, w)
        own = np.array(w, copy=True, order="C")
        own.setflags(write=False)
        finite = bool(np.isfinite(own).all())
        if finite:
            value = transform(own)
        else:
            # The front end drops what a non-finite filter's transform
            # gives (such filters go to direct); its NaN/Inf arithmetic
            # must not warn, or raise under np.errstate(all="raise").
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                value = transform(own)
        entry = (own, value, finite)
        if self._size(entry) <= self.max_bytes:
            with self._lock:
                self._entries[full_key] = entry
                self._evict()
        self._note(finite)
        return value

    def _note_recomputed(self, full_key, w):
        """Count (and warn once of) a miss on a filter evicted for room:
        same key and the same sampled bits (a new filter that reuses a
        freed array's address has the key but not the bits)."""
        with self._lock:
            evicted = self._evicted.pop(full_key, None)
        if evicted is None or evicted != _fingerprint(w):
            return
        with self._lock:
            self.recomputed += 1
            warn, self._warned = not self._warned, True
        if warn:
            warnings.warn(
                f"kernels' weight cache evicted a filter transform that was "
                f"needed again (bound: {self.max_entries} entries, "
                f"{self.max_bytes / 2**20:.4g} MiB): the filters in use do "
                f"not fit, and each call recomputes its transform. Raise "
                f"the bound with kernels.set_weight_cache_limits(max_bytes=...)",
                WeightCacheWarning, stacklevel=4)

    def _evict(self):
        total = sum(self._size(e) for e in self._entries.values())
        while self._entries and (len(self._entries) > self.max_entries
                                 or total > self.max_bytes):
            key, old = self._entries.popitem(last=False)
            total -= self._size(old)
            self._evicted[key] = _fingerprint(old[0])
        while len(self._evicted) > 4 * max(self.max_entries, 1):
            self._evicted.popitem(last=False)

    def set_limits(self, max_entries=None, max_bytes=None):
        """Change the bounds (None: keep), evicting what no longer fits;
        returns the previous ``(max_entries, max_bytes)``."""
        for name, value in (("max_entries", max_entries),
                            ("max_bytes", max_bytes)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int (or None to keep it), "
                                f"got {value!r}")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        with self._lock:
            previous = (self.max_entries, self.max_bytes)
            if max_entries is not None:
                self.max_entries = int(max_entries)
            if max_bytes is not None:
                self.max_bytes = int(max_bytes)
            # Evictions under the old bound say nothing of the new one.
            self._evicted.clear()
            self._evict()
            self._warned = False
        return previous

    def clear(self, kind=None):
        """Forget every entry, or only those of algorithm ``kind``."""
        with self._lock:
            if kind is None:
                self._entries.clear()
                self._evicted.clear()
                return
            for full_key in [k for k in self._entries if k[0] == kind]:
                del self._entries[full_key]

    def count(self, kind=None):
        """Entries held, in all or of algorithm ``kind``."""
        with self._lock:
            return sum(1 for k in self._entries if kind is None or k[0] == kind)

    def nbytes(self, kind=None):
        with self._lock:
            return sum(self._size(e) for k, e in self._entries.items()
                       if kind is None or k[0] == kind)

    def __len__(self):
        return self.count()


class FetchedFilters:
    """What one :meth:`WeightTransformCache.watch` saw."""

    __slots__ = ("fetched", "finite")

    def __init__(self):
        self.fetched = False
        self.finite = True

    def note(self, finite):
        self.fetched = True
        self.finite = self.finite and finite


# The process's cache, used by every backend's Winograd and FFT.
transformed_weights = WeightTransformCache()


def set_weight_cache_limits(max_entries=None, max_bytes=None):
    """Bound the cache of transformed filters (Winograd's, FFT's spectra).

    Parameters
    ----------
    max_entries : int, optional
        Filters kept (default 256).
    max_bytes : int, optional
        Bytes kept, the filters' private copies included (default 1 GiB).
        A network whose transforms do not fit recomputes each on every
        call (a :class:`WeightCacheWarning` says so once).

    Returns
    -------
    (max_entries, max_bytes) : the previous bounds

    Raises
    ------
    TypeError
        A bound that is not an int.
    ValueError
        A negative bound.

    Examples
    --------
    >>> import kernels
    >>> previous = kernels.set_weight_cache_limits(max_bytes=2 * 2**30)
    >>> _ = kernels.set_weight_cache_limits(*previous)
    """
    return transformed_weights.set_limits(max_entries, max_bytes)
