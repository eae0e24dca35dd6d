"""Convolution and pooling of images larger than memory, on Dask.

The functions here take a ``dask.array.Array`` chunked along its spatial
axes and return a lazy ``dask.array.Array`` with the shape, dtype and
values of the in-memory function of the same name (:mod:`kernels`).
Dask does all the scheduling; this module only says which input each
output chunk reads.  Install with ``pip install 'convbench[dask]'``; it
is imported only by ``import kernels.dask``.

How a chunk is computed (:mod:`kernels._blocks` has the arithmetic):

* Every output belongs to the input chunk that holds the first input of
  its window, so a chunk reads a halo from the chunks after it only (the
  effective kernel extent, dilation included, minus one).  Each block's
  task gathers exactly the inputs its outputs read: its own chunk, and a
  copied slice of every other chunk the window spans (each its own small
  task, so that only halos move between workers and no neighbour is held
  for the block).  When the chunks are slices of a stored array
  (``da.from_array``, ``da.from_zarr``), the block's task reads that
  slice from the store instead (:data:`HALOS_FROM_STORE`): no block then
  waits for a neighbouring chunk at all.  A convolution block computes its
  output rows in bands of about :data:`BAND_BYTES`, each from a view of
  its own chunk or a copy of just that band's rows, so it never holds a
  copy of its whole window (docs/dask.md, Memory).  Chunk boundaries need
  not be multiples of the stride (a chunk's first output starts a little
  inside it), and chunks may be smaller than the halo: the output chunks
  are exactly the outputs each input chunk owns.  With
  ``split_seams=True`` (convolutions) each chunk's outputs are cut into a
  body, which reads only that chunk, and a thin seam chunk, which reads
  copied slices of it and of the next chunks, so that no output chunk but
  the thin seams waits for a neighbour (:func:`kernels._blocks.
  split_seams`).  A chunk that would own no output is merged into a
  neighbour (with a ``UserWarning`` naming the axis and the new chunks).
* Padding is applied at the outer border of the whole image only.  Zero
  padding: a block on the border gets the padding its window lacks and
  interior blocks get none, so each block runs the in-memory kernel on
  exactly the inputs its outputs read.  ``reflect``/``replicate``/
  ``circular`` padding: the Dask array is padded first (``dask.array.pad``,
  the data at the far side for ``circular``).  Pooling (whose divisors and
  ``ceil_mode`` depend on where a window lies relative to the padding)
  runs on a window that starts on a multiple of the stride, with the
  global padding, and keeps the chunk's own outputs.
* Each block calls the in-memory kernel (``algorithm="auto"`` chooses per
  block).  ``direct``, ``im2col`` and pooling give the in-memory result
  bit for bit (each sums an output in one order wherever it lies);
  ``winograd`` and ``fft`` differ where their tiles fall, within their
  documented error bounds.

Threads: each block's kernel runs on ``kernel_threads`` threads (default
1): one kernel thread per Dask thread, so that Dask's threads (or worker
processes) and Numba's do not oversubscribe the cores.  The number is set
with ``numba.set_num_threads``, which is per calling thread; the package's
BLAS pieces and FFTW plans follow it, and FFTW plans are made per thread
(never shared between Dask's threads).  Pass ``kernel_threads=None`` to
leave Numba's setting alone (one Dask thread, e.g. the synchronous
scheduler, using every core inside each block).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import itertools
import numbers
import operator
import warnings

import numba
import numpy as np

try:
    import dask
    import dask.array as da
    import dask.array.chunk
    import dask.array.core
    from dask.array.optimization import fuse_slice
    from dask.base import tokenize
    from dask.delayed import Delayed
    from dask.highlevelgraph import HighLevelGraph
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "kernels.dask needs Dask: pip install -e '.[dask]' in the convbench "
        "checkout (or pip install 'dask[array,distributed]')") from exc

from . import _blocks, _dispatch
from ._conv import (NUMPY_PAD_MODE, real_numeric, scipy_result_dtype,
                    conv_problem, run_conv2d, scipy_pads)
from ._dispatch import ConvSpec, check_backend
from ._pooling import avg_spec, check_flag, pool_input, pool_spec
from ._pooling import avg_pool2d as _avg_pool2d
from ._pooling import max_pool2d as _max_pool2d
from ._validation import ALGORITHMS, check_choice
from .geometry import conv_output_size, effective_kernel_size

__all__ = ["conv2d", "correlate", "convolve", "max_pool2d", "avg_pool2d"]


# --------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------

def _require_dask(name, a, in_memory):
    if not isinstance(a, da.Array):
        raise TypeError(
            f"{name} must be a dask.array.Array, got {type(a).__name__}; for "
            f"an array in memory call kernels.{in_memory}, or wrap it with "
            f"dask.array.from_array({name}, chunks=...)")


def _require_numpy(name, a):
    if isinstance(a, da.Array):
        raise TypeError(
            f"{name} must be an array in memory (NumPy), got a Dask array; "
            f"it is sent whole to every block: call {name}.compute() first")
    return a


def _native(x):
    """``x`` with a native byte order (big-endian FITS data), lazily."""
    if not x.dtype.isnative:
        return x.astype(x.dtype.newbyteorder("="))
    return x


def _stand_in(shape, dtype):
    """A zero-strided array of ``shape``: validates like ``x``, costs nothing."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape,
                                           (0,) * len(shape), writeable=False)


def _check_threads(kernel_threads):
    if kernel_threads is None:
        return None
    if (isinstance(kernel_threads, bool)
            or not isinstance(kernel_threads, numbers.Integral)
            or kernel_threads < 1):
        raise ValueError(f"kernel_threads must be None or an int >= 1, got "
                         f"{kernel_threads!r}")
    return int(kernel_threads)


@contextlib.contextmanager
def _kernel_threads(n):
    """Numba's thread count for the calling thread only, restored after."""
    if n is None:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _whole_channels(x, axis, what):
    """``x`` with axis ``axis`` in one chunk (a warning if it was not)."""
    if len(x.chunks[axis]) > 1:
        warnings.warn(
            f"{what} are split across {len(x.chunks[axis])} chunks "
            f"{x.chunks[axis]}; rechunking them into one (every output "
            f"channel reads every input channel of its group)",
            UserWarning, stacklevel=3)
        x = x.rechunk({axis: -1})
    return x


# --------------------------------------------------------------------------
# Chunks: which outputs each block owns
# --------------------------------------------------------------------------

def _absorb_padding(chunks, lo, hi):
    """Chunks of a padded axis with the chunks ``dask.array.pad`` added
    (``lo`` and ``hi`` elements, in one or more chunks: ``wrap`` takes
    them from several) merged into their neighbours."""
    bounds = _blocks.boundaries(chunks)
    n = bounds[-1]
    kept = [0] + [b for b in bounds[1:-1] if lo < b < n - hi] + [n]
    return tuple(b - a for a, b in zip(kept, kept[1:]))


def _fit_axis(x, axis, n_out, extent, stride, lo, windows_of,
              padded=(0, 0)):
    """Chunks and windows along ``axis`` (a warning if rechunked).

    ``padded``: the padding ``dask.array.pad`` added to ``x`` along the
    axis, whose chunk boundaries are not the caller's and go unreported.
    """
    old = x.chunks[axis]
    chunks, windows = _blocks.fit_chunks(old, n_out, extent, stride, lo,
                                         windows_of)
    if chunks != old:
        users = set(_blocks.boundaries(old)[1:-1]) - {
            padded[0], x.shape[axis] - padded[1]}
        if users - set(_blocks.boundaries(chunks)):
            warnings.warn(
                f"rechunked spatial axis {axis} from {old} to {chunks}: "
                f"every chunk must own at least one output (kernel extent "
                f"{extent}, stride {stride})", UserWarning, stacklevel=3)
    return chunks, windows


def _pieces(bounds, start, stop):
    """[(chunk index, slice within it)] covering inputs [start, stop)."""
    parts = []
    c = max(0, bisect.bisect_right(bounds, start) - 1)
    while c < len(bounds) - 1 and bounds[c] < stop:
        lo, hi = max(start, bounds[c]), min(stop, bounds[c + 1])
        if lo < hi:
            parts.append((c, slice(lo - bounds[c], hi - bounds[c])))
        c += 1
    return parts


class _Window:
    """The inputs a block reads, as pieces of the chunks it spans.

    ``grid`` is a 2-D grid (row by row) of pieces ``[array, index]``: the
    array (a neighbour's slice, or the block's own chunk) and what to take
    of it (None: all).  Rows of the window are assembled on demand, so a
    block need never hold a copy of its whole window.
    """

    def __init__(self, grid, shape, dtype):
        self.lines = [[a if index is None else a[index] for a, index in line]
                      for line in grid]
        self.shape, self.dtype = tuple(shape), dtype

    def rows(self, start, stop):
        """Rows ``[start, stop)`` of the window, C-contiguous: a view when
        they lie in one piece that is already contiguous, else each
        piece's part copied once, straight into its place."""
        parts, r = [], 0
        for line in self.lines:
            height = line[0].shape[-2] if line else 0
            lo, hi = max(start, r), min(stop, r + height)
            if lo < hi:
                parts.append([p[..., lo - r:hi - r, :] for p in line])
            r += height
        if len(parts) == 1 and len(parts[0]) == 1:
            return np.ascontiguousarray(parts[0][0])
        band = np.empty(self.shape[:-2] + (stop - start, self.shape[-1]),
                        self.dtype)
        r = 0
        for line in parts:
            c = 0
            for piece in line:
                band[..., r:r + piece.shape[-2],
                     c:c + piece.shape[-1]] = piece
                c += piece.shape[-1]
            r += line[0].shape[-2]
        return band

    def whole(self):
        return self.rows(0, self.shape[-2])


#: Whether a block reads its halos straight from the stored array when the
#: input's chunks are basic slices of one (``da.from_array``,
#: ``da.from_zarr``, then any basic slicing): then no block depends on a
#: neighbouring chunk, and Dask's order never holds a chunk for its
#: neighbour's block (docs/dask.md, Memory).  The price: a halo re-reads
#: the store (for Zarr, it decompresses each stored chunk the halo touches).
#: False: halos are always slices of the neighbouring chunks.
HALOS_FROM_STORE = True

#: Tasks that read a stored array, and those that may slice their result.
_STORE_GETTERS = (dask.array.core.getter, dask.array.core.getter_nofancy,
                  dask.array.core.getter_inline)
_SLICERS = _STORE_GETTERS + (dask.array.chunk.getitem, operator.getitem)


def _call(task):
    """``(func, args, kwargs)`` of a graph node, or None if it is data.
    Both Dask's task objects (2024.12 and later) and legacy tuples."""
    if isinstance(task, tuple) and task and callable(task[0]):
        return task[0], task[1:], {}
    func = getattr(task, "func", None)
    if func is None or not callable(func):
        return None
    return func, tuple(task.args), dict(getattr(task, "kwargs", {}) or {})


def _literal(arg):
    """The value of a literal argument (Dask wraps some in DataNode)."""
    return getattr(arg, "value", arg) if type(arg).__name__ == "DataNode" \
        else arg


def _ref(arg):
    """The key an argument refers to, or None for a literal."""
    return getattr(arg, "key", None) if type(arg).__name__ in (
        "TaskRef", "Alias") else None


def _stored_chunk(graph, key):
    """How chunk ``key`` is read from the stored array it is a basic slice
    of: ``(getter, source, indices, extra)``, the chunk being
    ``getter(source, ...)`` indexed by ``indices`` (outermost first); or
    None when it is not one (computed chunks, rechunked inputs...)."""
    indices = []
    while True:
        call = _call(graph.get(key))
        if call is None or call[0] not in _SLICERS or len(call[1]) < 2:
            return None
        func, args, kwargs = call
        indices.append(_literal(args[1]))
        inner = _ref(args[0])
        if inner is not None and _call(graph.get(inner)) is not None:
            key = inner                    # a slice of a slice: go on
            continue
        if func not in _STORE_GETTERS:
            return None
        source = inner if inner is not None else _literal(args[0])
        if kwargs:
            func = functools.partial(func, **kwargs)
        return func, source, indices, tuple(_literal(a) for a in args[2:])


def _store_read(stored, index):
    """A task that reads ``chunk[index]`` straight from the store, for a
    chunk described by :func:`_stored_chunk`; None for an index that does
    not fold into the store's (fancy indexing)."""
    func, source, indices, extra = stored
    try:
        for sub in indices:
            index = _fuse_index(sub, index)
    except (NotImplementedError, TypeError, IndexError):
        return None
    # Stores (Zarr, h5py) take no None in an index: read without the new
    # axes, then add them
    kept = tuple(i for i in index if i is not None)
    new_axes = tuple(None if i is None else slice(None) for i in index
                     if not isinstance(i, numbers.Integral))
    return (_store_piece, func, source, kept, new_axes, extra)


def _store_piece(getter, source, index, new_axes, extra):
    """``getter(source, index, *extra)`` with axes of length one inserted
    where ``new_axes`` has None."""
    piece = getter(source, index, *extra)
    return piece[new_axes] if None in new_axes else piece


def _fuse_index(outer, inner):
    """The index into the array ``outer`` indexes that ``[outer][inner]``
    takes (basic indexing: slices, integers, None)."""
    if not isinstance(outer, tuple):
        outer = (outer,)
    if any(isinstance(o, (list, np.ndarray)) or o is Ellipsis
           for o in outer):
        raise NotImplementedError("fancy index")
    return fuse_slice(outer, inner)


def _halo_piece(chunk, index):
    """A copy of the part of a neighbouring chunk a block reads: a view
    would keep the whole chunk in memory until the block has run, where
    Dask's order computes the chunk well before that block."""
    return np.array(chunk[index], copy=True)


def _run_block(grid, shape, dtype, func, i, j, *args):
    return func(_Window(grid, shape, dtype), i, j, *args)


def _windowed(x, rows, cols, func, out_chunks, dtype, name, args=(),
              owners=None):
    """A lazy array whose block (..., i, j) is ``func(window, i, j, *args)``.

    ``window`` (a :class:`_Window`) gives the inputs ``[rows[i].in_start,
    rows[i].in_stop) x [cols[j].in_start, cols[j].in_stop)`` of ``x``'s
    block row ``(..., i, j)``, whole or a band of rows at a time.  They are
    gathered from the chunks the window spans: the block's own chunk
    directly, every other chunk through a copied slice (its own small
    task, so that between workers only the halo moves, and the neighbour
    is not held for this block), or, when ``x``'s chunks are slices of a
    stored array, a read of just that slice from the store inside the
    block's own task (:func:`_store_read`); the pieces are copied inside
    the block's task: no overlapped copy of the chunk is kept between
    tasks.  ``args``
    may hold Dask delayed objects (computed once, shared by the blocks).

    ``owners``: (row owners, column owners), the input chunk index each
    output block row / column calls its own (read directly, not through a
    piece), None for none; by default block i's own chunk is chunk i.
    """
    if owners is None:
        owners = (range(len(rows)), range(len(cols)))
    token = tokenize(x, rows, cols, func, out_chunks, name, HALOS_FROM_STORE,
                     [getattr(a, "key", a) for a in args],
                     [list(o) for o in owners])
    out_name, piece_name = f"{name}-{token}", f"{name}-piece-{token}"
    bounds_h = _blocks.boundaries(x.chunks[-2])
    bounds_w = _blocks.boundaries(x.chunks[-1])
    keys_or_values = [a.key if isinstance(a, Delayed) else a
                      for a in args]
    lead_shape = [len(c) for c in x.chunks[:-2]]
    row_pieces = [_pieces(bounds_h, w.in_start, w.in_stop) for w in rows]
    col_pieces = [_pieces(bounds_w, w.in_start, w.in_stop) for w in cols]
    graph, stored = x.__dask_graph__(), {}
    dsk = {}
    for lead in itertools.product(*(range(n) for n in lead_shape)):
        for i, wr in enumerate(rows):
            row_parts = row_pieces[i]
            for j, wc in enumerate(cols):
                col_parts = col_pieces[j]
                own = (owners[0][i], owners[1][j])
                grid = []
                for ci, rs in row_parts:
                    line = []
                    for cj, cs in col_parts:
                        chunk = (x.name,) + lead + (ci, cj)
                        if (ci, cj) == own:    # own chunk: sliced here
                            line.append([chunk, (Ellipsis, rs, cs)])
                            continue
                        index = (slice(None),) * len(lead) + (rs, cs)
                        if chunk not in stored:    # each chunk walked once
                            stored[chunk] = (HALOS_FROM_STORE and
                                             _stored_chunk(graph, chunk))
                        read = stored[chunk] and _store_read(stored[chunk],
                                                             index)
                        if read:     # read inside the block's own task
                            line.append([read, None])
                            continue
                        key = (piece_name,) + lead + (i, j, ci, cj)
                        dsk[key] = (_halo_piece, chunk, index)
                        line.append([key, None])
                    grid.append(line)
                shape = tuple(x.chunks[a][lead[a]] for a in range(len(lead)))
                shape += (wr.in_stop - wr.in_start, wc.in_stop - wc.in_start)
                dsk[(out_name,) + lead + (i, j)] = (
                    _run_block, grid, shape, x.dtype, func, i, j,
                    *keys_or_values)
    deps = [x] + [a for a in args if isinstance(a, Delayed)]
    graph = HighLevelGraph.from_collections(out_name, dsk, dependencies=deps)
    return da.Array(graph, out_name, out_chunks, dtype=dtype,
                    meta=np.empty((0,) * x.ndim, dtype))


def _delayed(a):
    """A small array as one graph node that every block depends on."""
    return None if a is None else dask.delayed(a, pure=True)


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------

#: Bytes of output a block computes per call of the in-memory kernel.
#: A block runs its rows in bands of about this size, so that besides its
#: own chunk and its output it holds only one band's window and the
#: kernel's scratch for it, not a copy of its whole window (docs/dask.md,
#: Memory).  Each band re-reads the halo rows: a band is at least
#: ``BAND_MIN_HALOS`` times the kernel's extent high.
BAND_BYTES = 8 << 20
BAND_MIN_HALOS = 4


def output_bands(n_rows, row_bytes, extent, stride):
    """``[(t0, t1), ...]``: a block's ``n_rows`` output rows in bands of
    about :data:`BAND_BYTES` (``row_bytes`` each), each at least
    ``BAND_MIN_HALOS`` extents of input high."""
    count = max(1, -(-n_rows * row_bytes // BAND_BYTES))
    height = max(-(-n_rows // count),
                 -(-BAND_MIN_HALOS * extent // stride), 1)
    return [(t, min(t + height, n_rows)) for t in range(0, n_rows, height)]


def _conv_block(window, i, j, w, bias, rows, cols, stride, dilation, groups,
                algorithm, backend, threads):
    """One output block: the in-memory kernel on exactly its inputs, a
    band of output rows at a time (:func:`output_bands`)."""
    wr, wc = rows[i], cols[j]
    n_rows, n_cols = wr.out_stop - wr.out_start, wc.out_stop - wc.out_start
    extent = effective_kernel_size(w.shape[2], dilation[0])
    row_bytes = window.shape[0] * w.shape[0] * n_cols * window.dtype.itemsize
    bands = output_bands(n_rows, row_bytes, extent, stride[0])
    y = None
    for t0, t1 in bands:
        start, stop, pad_top, pad_bottom = _blocks.reads(
            t0, t1, window.shape[2], extent, stride[0], wr.pad_lo)
        y_band = _conv_window(
            window.rows(start, stop), w, bias,
            (pad_top, pad_bottom, wc.pad_lo, wc.pad_hi), stride, dilation,
            groups, algorithm, backend, threads)
        if len(bands) == 1:
            return y_band
        if y is None:
            y = np.empty(y_band.shape[:2] + (n_rows, n_cols), y_band.dtype)
        y[..., t0:t1, :] = y_band
    return y


def _conv_window(x, w, bias, padding, stride, dilation, groups, algorithm,
                 backend, threads):
    """The in-memory kernel on a window with its (top, bottom, left,
    right) zero padding."""
    spec = ConvSpec(tuple(x.shape), tuple(w.shape), stride, padding,
                    dilation, groups, x.dtype)
    refused = algorithm != "auto" and _dispatch.unsupported_reason(
        "conv2d", backend, algorithm, spec) is not None
    if 0 in x.shape[2:] or refused:
        # Windows in the padding only (no inputs at all), or a window
        # narrower than the kernel at the border (Winograd's size rule;
        # the whole problem was checked when the graph was built): the
        # same problem with its zero padding written into the window.
        x = np.pad(x, ((0, 0), (0, 0)) + tuple(zip(padding[::2],
                                                   padding[1::2])))
        spec = ConvSpec(tuple(x.shape), tuple(w.shape), stride,
                        (0, 0, 0, 0), dilation, groups, x.dtype)
    with _kernel_threads(threads):
        return np.asarray(run_conv2d(spec, x, w, bias, algorithm, backend))


def _conv_blockwise(x, w, bias, stride, dilation, pads, groups, algorithm,
                    backend, threads, split_seams, padded=((0, 0), (0, 0))):
    """The convolution of a 4-D Dask array whose padding mode is applied.

    ``pads``: ``(lo, hi)`` of zeros per spatial axis; ``padded``: what
    ``dask.array.pad`` added (see :func:`_fit_axis`); ``split_seams``: as
    :func:`conv2d`.
    """
    if algorithm != "auto":      # UnsupportedConfiguration now, not at compute
        spec = ConvSpec(tuple(x.shape), tuple(w.shape), tuple(stride),
                        tuple(p for pair in pads for p in pair),
                        tuple(dilation), groups, x.dtype)
        _dispatch.require_supported("conv2d", backend, algorithm, spec)
    fits = {}
    for axis, (k, s, d, (lo, hi), added) in enumerate(
            zip(w.shape[2:], stride, dilation, pads, padded), start=2):
        n_out = conv_output_size(x.shape[axis], k, s, (lo, hi), d)
        fits[axis] = _fit_axis(x, axis, n_out, effective_kernel_size(k, d),
                               s, lo, _blocks.exact_windows, added)
    x = x.rechunk({axis: chunks for axis, (chunks, _) in fits.items()})
    rows, cols = fits[2][1], fits[3][1]
    owners = None
    if split_seams:
        parts = [_blocks.split_seams(x.chunks[axis], fits[axis][1],
                                     effective_kernel_size(k, d), s, lo)
                 for axis, k, s, d, (lo, _) in zip(
                     (2, 3), w.shape[2:], stride, dilation, pads)]
        (rows, row_owners), (cols, col_owners) = (
            map(list, zip(*axis_parts)) for axis_parts in parts)
        owners = (row_owners, col_owners)
    out_chunks = (x.chunks[0], (w.shape[0],),
                  tuple(r.out_stop - r.out_start for r in rows),
                  tuple(c.out_stop - c.out_start for c in cols))
    args = (_delayed(w), _delayed(bias), rows, cols, tuple(stride),
            tuple(dilation), groups, algorithm, backend, threads)
    return _windowed(x, rows, cols, _conv_block, out_chunks, x.dtype,
                     "kernels-conv2d", args, owners)


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", algorithm="auto", backend="cpu", *,
           kernel_threads=1, split_seams=False):
    """:func:`kernels.conv2d` of a Dask array, chunk by chunk, seam-free.

    Parameters
    ----------
    x : dask.array.Array, shape (N, C, H, W) or (C, H, W)
        float32 or float64, chunked in any way along N, H and W; C split
        across chunks is rechunked into one (with a warning).
    w, bias, stride, padding, dilation, groups, padding_mode, algorithm, backend
        As :func:`kernels.conv2d`; ``w`` and ``bias`` are NumPy arrays.
    kernel_threads : int or None
        Threads each block's kernel uses (default 1: one per Dask thread).
        ``None`` leaves Numba's setting alone.
    split_seams : bool
        False (default): one output chunk per input chunk.  True: the
        outputs whose windows cross into the next chunk (the last
        ``(extent - 1) / stride`` or so rows and columns of each chunk's
        outputs) become thin output chunks of their own, computed from
        thin copies of both sides, so that every other output chunk
        depends on its own input chunk only.  For an ``x`` computed by
        other tasks (``map_blocks``, a previous filter) this lets Dask
        free each input chunk as soon as it is used instead of holding it
        until its neighbour exists: use it when peak memory matters and
        what follows works chunk by chunk (a reduction, ``da.store`` into
        a file, ``map_blocks``).  Values are the same either way.

    Returns
    -------
    y : dask.array.Array, shape (N, K, H_out, W_out), dtype of ``x``
        Lazy; ``y.compute()`` equals ``kernels.conv2d`` of the whole array
        (bit for bit for ``direct`` and ``im2col``).  Its H and W chunks
        are the outputs each input chunk owns (module docstring), each
        split in two with ``split_seams``.

    Raises
    ------
    TypeError
        ``x`` not a Dask array, ``w`` a Dask array, or dtypes as
        :func:`kernels.conv2d`.
    ValueError
        As :func:`kernels.conv2d`; ``kernel_threads`` not None or >= 1.
    TypeError
        ``split_seams`` not a bool.

    Examples
    --------
    >>> import numpy as np, dask.array as da, kernels.dask
    >>> x = da.ones((1, 1, 8, 8), dtype=np.float32, chunks=(1, 1, 3, 5))
    >>> w = np.ones((1, 1, 3, 3), np.float32)
    >>> kernels.dask.conv2d(x, w, padding=1).compute()[0, 0, :2]
    array([[4., 6., 6., 6., 6., 6., 6., 4.],
           [6., 9., 9., 9., 9., 9., 9., 6.]], dtype=float32)
    """
    _require_dask("x", x, "conv2d")
    _require_numpy("w", w)
    _require_numpy("bias", bias)
    threads = _check_threads(kernel_threads)
    split_seams = check_flag("split_seams", split_seams)
    x = _native(x)
    p = conv_problem(2, _stand_in(x.shape, x.dtype), w, bias, stride,
                     padding, dilation, groups, padding_mode, algorithm, "cpu")
    backend = check_backend(backend)
    if p.unbatched:
        x = x[None]
    x = _whole_channels(x, 1, "input channels (axis 1 of x)")
    pads, padded = p.pads, ((0, 0), (0, 0))
    if padding_mode != "zeros" and any(lo or hi for lo, hi in pads):
        padded = tuple(tuple(q) for q in pads)
        x = da.pad(x, ((0, 0), (0, 0)) + padded,
                   mode=NUMPY_PAD_MODE[padding_mode])
        # The thin chunks pad() adds join their neighbours: the output
        # chunks are then those of zero padding.
        x = x.rechunk({axis: _absorb_padding(x.chunks[axis], lo, hi)
                       for axis, (lo, hi) in enumerate(padded, start=2)})
        pads = [(0, 0), (0, 0)]
    y = _conv_blockwise(x, p.w, p.bias, p.stride, p.dilation, pads, p.groups,
                        p.algorithm, backend, threads, split_seams, padded)
    return y[0] if p.unbatched else y


def _scipy_args(in1, in2, mode, method, backend, kernel_threads, split_seams,
                name):
    _require_dask("in1", in1, name)
    _require_numpy("in2", in2)
    threads = _check_threads(kernel_threads)
    check_flag("split_seams", split_seams)
    backend = check_backend(backend)
    check_choice("mode", mode, ("full", "valid", "same"))
    method = check_choice("method", method, ("auto",) + ALGORITHMS)
    in2 = real_numeric("in2", in2)
    real_numeric("in1", np.empty(0, in1.dtype))   # the same dtype rules
    dtype = scipy_result_dtype(in1.dtype, in2.dtype)
    if in1.ndim != 2 or in2.ndim != 2:
        raise ValueError(
            f"kernels.dask.{name} takes 2-D in1 and in2, got {in1.ndim}-D and "
            f"{in2.ndim}-D; for 1-D signals call kernels.{name}")
    if in1.size == 0 or in2.size == 0:
        raise ValueError("in1 and in2 must not be empty")
    if mode == "valid" and any(a < b for a, b in zip(in1.shape, in2.shape)):
        raise ValueError(
            f"for mode='valid', in1 {in1.shape} (the Dask array) must be at "
            f"least as large as in2 {in2.shape} in every dimension")
    return (in1.astype(dtype), np.ascontiguousarray(in2, dtype=dtype), method,
            backend, threads)


def _correlate(in1, in2, mode, method, backend, threads, split_seams):
    x = in1[None, None]
    w = in2[None, None]
    y = _conv_blockwise(x, w, None, (1, 1), (1, 1), scipy_pads(in2.shape, mode),
                        1, method, backend, threads, split_seams)
    return y[0, 0]


def correlate(in1, in2, mode="full", method="auto", backend="cpu", *,
              kernel_threads=1, split_seams=False):
    """:func:`kernels.correlate` of a 2-D Dask array with a small filter.

    Parameters
    ----------
    in1 : dask.array.Array, shape (H, W)
        Any real numeric dtype, chunked in any way.
    in2 : ndarray, shape (kH, kW)
        The filter, in memory.
    mode, method, backend
        As :func:`kernels.correlate`.  In ``valid`` mode ``in1`` must be
        the larger input in every dimension.
    kernel_threads, split_seams
        As :func:`conv2d`.

    Returns
    -------
    z : dask.array.Array, dtype as :func:`kernels.correlate`
    """
    in1, in2, method, backend, threads = _scipy_args(
        in1, in2, mode, method, backend, kernel_threads, split_seams,
        "correlate")
    return _correlate(in1, in2, mode, method, backend, threads, split_seams)


def convolve(in1, in2, mode="full", method="auto", backend="cpu", *,
             kernel_threads=1, split_seams=False):
    """:func:`kernels.convolve` of a 2-D Dask array with a small filter.

    Parameters and result as :func:`correlate`; ``convolve(a, b)`` is
    ``correlate(a, b[::-1, ::-1])``.
    """
    in1, in2, method, backend, threads = _scipy_args(
        in1, in2, mode, method, backend, kernel_threads, split_seams,
        "convolve")
    return _correlate(in1, np.ascontiguousarray(in2[::-1, ::-1]), mode,
                      method, backend, threads, split_seams)


# --------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------

def _pool_block(window, i, j, pool, rows, cols, with_indices, width):
    """One output block: the in-memory pooling of an aligned window."""
    wr, wc = rows[i], cols[j]
    keep = (Ellipsis, slice(wr.keep_start, wr.keep_stop),
            slice(wc.keep_start, wc.keep_stop))
    result = pool(window.whole())
    if not with_indices:
        return result[keep]
    y, idx = result[0][keep], result[1][keep]
    # The window's flat indices -> the input plane's.
    rows_in, cols_in = np.divmod(idx, window.shape[-1])
    return y, (rows_in + wr.in_start) * width + cols_in + wc.in_start


def _pool_blockwise(x, spec, pool, threads, with_indices=False):
    """Pooling of a Dask array ``x`` (..., H, W) by ``pool(window)``."""
    fits = {}
    for axis, k, s, p, d, n_out in zip((x.ndim - 2, x.ndim - 1), spec.kernel,
                                       spec.stride, spec.padding,
                                       spec.dilation, spec.out_hw):
        fits[axis] = _fit_axis(x, axis, n_out, effective_kernel_size(k, d), s,
                               p, _blocks.aligned_windows)
    x = x.rechunk({axis: chunks for axis, (chunks, _) in fits.items()})
    rows, cols = fits[x.ndim - 2][1], fits[x.ndim - 1][1]
    out_chunks = x.chunks[:-2] + (
        tuple(r.out_stop - r.out_start for r in rows),
        tuple(c.out_stop - c.out_start for c in cols))
    args = (functools.partial(_pooled, pool=pool, threads=threads), rows,
            cols, with_indices, x.shape[-1])
    if not with_indices:
        return _windowed(x, rows, cols, _pool_block, out_chunks, x.dtype,
                         "kernels-pool2d", args)
    # One task per block computes both; two arrays take their parts.
    pairs = _windowed(x, rows, cols, _pool_block, out_chunks, x.dtype,
                      "kernels-pool2d-pairs", args)
    meta = np.empty((0,) * x.ndim, x.dtype)
    y = pairs.map_blocks(_first, dtype=x.dtype, meta=meta)
    idx = pairs.map_blocks(_second, dtype=np.int64,
                           meta=np.empty((0,) * x.ndim, np.int64))
    return y, idx


def _pooled(window, pool, threads):
    with _kernel_threads(threads):
        return pool(window)


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _pool_input(x, name):
    _require_dask("x", x, name)
    return _native(x)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode=False, return_indices=False, backend="cpu", *,
               kernel_threads=1):
    """:func:`kernels.max_pool2d` of a Dask array, chunk by chunk.

    ``x``: a ``dask.array.Array`` of shape (N, C, H, W) or (C, H, W),
    chunked in any way (channels too).  Other parameters as
    :func:`kernels.max_pool2d`, ``kernel_threads`` as :func:`conv2d`.
    With ``return_indices`` the indices are flat in each input plane, as
    in memory; computing both arrays together (``dask.compute(y, idx)``)
    runs the pooling once.
    """
    x = _pool_input(x, "max_pool2d")
    spec = pool_spec(2, pool_input(_stand_in(x.shape, x.dtype), backend),
                      kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = check_flag("return_indices", return_indices)
    pool = functools.partial(_max_pool2d, kernel_size=kernel_size,
                             stride=stride, padding=padding,
                             dilation=dilation, ceil_mode=ceil_mode,
                             return_indices=return_indices, backend=backend)
    return _pool_blockwise(x, spec, pool, _check_threads(kernel_threads),
                           return_indices)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, backend="cpu",
               *, kernel_threads=1):
    """:func:`kernels.avg_pool2d` of a Dask array, chunk by chunk.

    ``x`` as :func:`max_pool2d`; other parameters as
    :func:`kernels.avg_pool2d`, ``kernel_threads`` as :func:`conv2d`.
    """
    x = _pool_input(x, "avg_pool2d")
    spec, _ = avg_spec(2, pool_input(_stand_in(x.shape, x.dtype), backend),
                        kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override)
    pool = functools.partial(_avg_pool2d, kernel_size=kernel_size,
                             stride=stride, padding=padding,
                             ceil_mode=ceil_mode,
                             count_include_pad=count_include_pad,
                             divisor_override=divisor_override,
                             backend=backend)
    return _pool_blockwise(x, spec, pool, _check_threads(kernel_threads))
