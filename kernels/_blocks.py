"""Which outputs each chunk of a sliding-window op owns, and what it reads.

Pure index arithmetic along one axis, shared by :mod:`kernels.dask` (and
testable without Dask).  A sliding-window op (convolution or pooling)
along an axis of ``n`` inputs, with ``lo``/``hi`` padding, effective
kernel extent ``extent = d (k - 1) + 1`` and stride ``s``, gives output
``o`` from the padded inputs ``[o s, o s + extent)``, i.e. from the
inputs ``[o s - lo, o s - lo + extent)``.

**Ownership.**  The input is cut into chunks ``[b_j, b_{j+1})``.  Output
``o`` belongs to the chunk holding the first input of its window,
``o s - lo``; windows that start in the left padding belong to the first
chunk, those that start in the right padding to the last.  So every
output has exactly one owner, each chunk's outputs are consecutive, and a
chunk reads only itself and at most ``extent - 1`` inputs of the chunks
after it: the halo is one-sided, and chunk boundaries need not be
multiples of the stride (a chunk's first output simply starts a little
inside it).

Two ways to compute a chunk's outputs from a window of the input:

* :func:`exact_windows` (convolution): the window is exactly the inputs
  the chunk's outputs read, clipped to ``[0, n)``, with the padding the
  op needs on the sides where it was clipped (non-zero only at the outer
  border of the whole input).  Run on that window with that padding, the
  op yields precisely the chunk's outputs.
* :func:`aligned_windows` (pooling): the op is run with its *global*
  padding on both sides of a window that starts on a multiple of the
  stride, and the chunk's outputs are a slice of its result.  Needed
  where an output's value depends on where its window lies relative to
  the padding (average pooling's divisors, ``ceil_mode``): shifting the
  input by a multiple of the stride shifts the outputs by whole
  positions and leaves every such rule unchanged; outputs next to a
  window edge that is not the input's border read the window's own
  padding and are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["boundaries", "owned_outputs", "exact_windows", "reads",
           "aligned_windows", "ExactWindow", "AlignedWindow", "halo",
           "fit_chunks", "split_seams"]


def boundaries(chunks):
    """Chunk sizes -> their start offsets and the total, ``[0, ..., n]``."""
    bounds = [0]
    for size in chunks:
        bounds.append(bounds[-1] + int(size))
    return bounds


def owned_outputs(chunks, n_out, stride, lo):
    """``[(o0, o1), ...]``: the outputs each chunk owns (module docstring).

    ``chunks`` are the input chunk sizes along the axis, ``n_out`` the
    op's output size, ``stride`` and ``lo`` (left padding) its geometry.
    Chunks that own nothing get an empty range ``(o, o)``.
    """
    bounds = boundaries(chunks)
    firsts = [0]
    for b in bounds[1:-1]:
        o = -((-b - lo) // stride)      # first o with o s - lo >= b
        firsts.append(min(max(o, firsts[-1]), n_out))
    firsts.append(n_out)
    return [(firsts[j], firsts[j + 1]) for j in range(len(chunks))]


@dataclass(frozen=True)
class ExactWindow:
    """Chunk ``j``'s outputs ``[out_start, out_stop)`` and their inputs.

    ``[in_start, in_stop)`` is clipped to the input; ``pad_lo``/``pad_hi``
    restore what was clipped (zero except at the input's outer border).
    Where the chunk's windows lie in the padding only (padding wider than
    the kernel), the window is empty and ``pad_lo`` is their whole extent.
    """

    out_start: int
    out_stop: int
    in_start: int
    in_stop: int
    pad_lo: int
    pad_hi: int


def exact_windows(chunks, n_out, extent, stride, lo):
    """One :class:`ExactWindow` per chunk (convolution; module docstring).

    Needs every chunk to own at least one output.  The op run on inputs
    ``[in_start, in_stop)`` with padding ``(pad_lo, pad_hi)`` gives
    exactly ``out_stop - out_start`` outputs: the first reads from input
    ``out_start * stride - lo``, the last up to ``(out_stop - 1) * stride
    - lo + extent``.
    """
    n = boundaries(chunks)[-1]
    windows = []
    for o0, o1 in owned_outputs(chunks, n_out, stride, lo):
        if o1 <= o0:
            raise ValueError("every chunk must own at least one output")
        windows.append(ExactWindow(o0, o1, *reads(o0, o1, n, extent, stride,
                                                  lo)))
    return windows


def reads(o0, o1, n, extent, stride, lo):
    """``(in_start, in_stop, pad_lo, pad_hi)`` for outputs ``[o0, o1)``.

    The inputs those outputs read, clipped to ``[0, n)``, and the padding
    that restores what was clipped: the op run on them gives exactly the
    outputs ``[o0, o1)``.  Where the windows lie in the padding only, the
    inputs are empty and ``pad_lo`` is their whole extent.  Used for a
    chunk's window (:func:`exact_windows`) and for a band of its outputs.
    """
    first = o0 * stride - lo
    end = (o1 - 1) * stride - lo + extent
    if end <= 0 or first >= n:            # windows in the padding only
        at = min(max(first, 0), n)
        return at, at, end - first, 0
    return max(0, first), min(n, end), max(0, -first), max(0, end - n)


def split_seams(chunks, windows, extent, stride, lo):
    """Each chunk's :class:`ExactWindow` cut in two: its *body*, the
    outputs that read nothing past the chunk's end, and its *seam*, the
    outputs whose windows cross into the chunks after it.

    Returns ``[(window, owner), ...]`` in output order, empty parts left
    out: ``owner`` is the chunk a body reads (its only input) and None for
    a seam.  A body then depends on one chunk and a seam on thin slices of
    two or more, so no part waits for a neighbouring chunk while holding
    its own (docs/dask.md, Memory).  The last chunk is all body: past its
    end lies padding, not a neighbour.
    """
    bounds = boundaries(chunks)
    n = bounds[-1]
    parts = []
    for j, w in enumerate(windows):
        end = bounds[j + 1]
        # Output o reads up to o s - lo + extent (exclusive).
        last_body = w.out_stop if end == n else (end + lo - extent) // stride + 1
        body_stop = min(max(last_body, w.out_start), w.out_stop)
        for o0, o1, owner in ((w.out_start, body_stop, j),
                              (body_stop, w.out_stop, None)):
            if o1 > o0:
                parts.append((ExactWindow(o0, o1, *reads(o0, o1, n, extent,
                                                         stride, lo)), owner))
    return parts


@dataclass(frozen=True)
class AlignedWindow:
    """Chunk ``j``'s outputs and the window the op runs on with its padding.

    The op's outputs ``[keep_start, keep_stop)`` on inputs ``[in_start,
    in_stop)`` are the global outputs ``[out_start, out_stop)``.
    """

    out_start: int
    out_stop: int
    in_start: int
    in_stop: int
    keep_start: int
    keep_stop: int


def aligned_windows(chunks, n_out, extent, stride, lo):
    """One :class:`AlignedWindow` per chunk (pooling; module docstring).

    The window starts at the largest multiple of ``stride`` that is at most
    the chunk's first read input (0 for the first chunk), so the op's
    output ``o'`` is the global output ``o' + in_start // stride``.
    """
    n = boundaries(chunks)[-1]
    windows = []
    for o0, o1 in owned_outputs(chunks, n_out, stride, lo):
        if o1 <= o0:
            raise ValueError("every chunk must own at least one output")
        start = (max(0, o0 * stride - lo) // stride) * stride
        stop = min(n, (o1 - 1) * stride - lo + extent)
        shift = start // stride
        windows.append(AlignedWindow(o0, o1, start, stop, o0 - shift,
                                     o1 - shift))
    return windows


def halo(chunks, windows):
    """(inputs read before, after) each chunk's own range, at most."""
    bounds = boundaries(chunks)
    before = max(max(0, bounds[j] - w.in_start) for j, w in enumerate(windows))
    after = max(max(0, w.in_stop - bounds[j + 1])
                for j, w in enumerate(windows))
    return before, after


def fit_chunks(chunks, n_out, extent, stride, lo, windows_of):
    """Chunk sizes close to ``chunks`` in which every chunk owns an output.

    A chunk that owns none (shorter than the stride, or past the last
    window) is merged into the previous chunk (the first into the next).
    ``windows_of`` is :func:`exact_windows` or :func:`aligned_windows`.
    Returns ``(chunks, windows)``.  A window may span several chunks.
    """
    chunks = tuple(int(c) for c in chunks)
    while len(chunks) > 1:
        owns = [o1 > o0 for o0, o1 in owned_outputs(chunks, n_out, stride, lo)]
        if all(owns):
            break
        chunks = _merge_idle(chunks, owns)
    return chunks, windows_of(chunks, n_out, extent, stride, lo)


def _merge_idle(chunks, keep):
    """Merge each chunk that owns no output into the previous one (the
    first into the next)."""
    merged = []
    pending = 0
    for size, owns in zip(chunks, keep):
        if not owns:
            if merged:
                merged[-1] += size
            else:
                pending += size
        else:
            merged.append(size + pending)
            pending = 0
    if pending:                       # nothing owned anything
        merged.append(pending)
    return tuple(merged)
