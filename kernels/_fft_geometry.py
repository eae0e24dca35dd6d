"""Geometry of the FFT convolution, independent of any backend.

How a convolution layer is cut into transform tiles: FFT lengths, the
polyphase split of strides and dilations, the tiles along each axis
(:class:`AxisGeometry`, :class:`FFTGeometry`, :func:`plan_geometry`), the
inputs no output reads, and the partitions of the tiles into the chunks
of the staged path (:func:`chunks`) and the blocks of the task path
(:func:`task_blocks`).  Pure NumPy: the budgets, thread counts and
per-tile times a partition depends on are arguments, and the choices a
backend makes (tile lengths, spectrum layout) are passed in.

Tiling is overlap-save: the output is cut into blocks of ``b0 x b1``; tile
``(i, j)`` reads the ``t0 x t1`` input window starting at ``(i b0, j b1)``
(windows overlap by ``q - 1``, outputs do not).  FFTW reads the
overlapping windows straight out of the padded input through a strided
view (out-of-place real-to-complex transforms never write their input).
One tile covering the whole image is the untiled FFT convolution.
A backend picks ``(t0, t1)`` (the CPU: a cost model,
:func:`kernels.cpu._fft_model.choose_tile`).

Stride by polyphase decomposition, dilation by zero insertion.  A
stride-``s`` correlation with the (dilated) kernel ``wd`` of extent
``e = d (k - 1) + 1`` is the sum over ``r < s`` of the stride-1
correlations of the phase signals ``x_r[j] = x[j s + r]`` with the phase
kernels ``w_r[q] = wd[q s + r]``.  The phases become extra input channels
(channel ``c`` turns into ``(c, r0, r1)``), so the contraction sums them
for free and only the outputs needed are ever transformed back.  Phases
whose kernel is all zero (dilation a multiple of a stride factor) are
dropped, and so are inputs that no output reads (past the last strided
window, or between dilated taps when there are fewer outputs than the
gap): an FFT spreads the rounding error of every value in a tile over all
of its outputs, so such values could exceed an error bound that rightly
does not see them.

FFT lengths: :func:`fast_length` returns the smallest ``2**a * m >= n``
with odd part ``m`` in ``{1, 3, 5, 7, 9}``.  Measured with pyFFTW (2-D
real transforms, FFTW_MEASURE, 120 random sizes 40..1500, each against the
fastest length >= n): this rule is 1.08x slower than the best on average
(worst 1.44x), while 2^a 3^b gives 1.30x (worst 3.8x: odd parts 27, 81,
243 are slow), 7-smooth 1.33x and 5-smooth (``scipy.fft.next_fast_len``)
1.27x (worst 2.9x: 1125 = 3^2 5^3 and 1215 = 3^5 5 are slow).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .geometry import conv_output_size

__all__ = [
    "FAST_ODD_PARTS", "fast_length", "AxisGeometry", "FFTGeometry",
    "plan_geometry", "Chunk", "whole_batch", "chunks", "Block",
    "task_blocks",
]

# --------------------------------------------------------------------------
# FFT lengths
# --------------------------------------------------------------------------

# Odd parts m of the lengths 2**a * m that FFTW transforms fast (see the
# module docstring for the measurement behind this choice).
FAST_ODD_PARTS = (1, 3, 5, 7, 9)


def fast_length(n):
    """Smallest ``L >= n`` of the form ``2**a * m``, ``m`` in {1, 3, 5, 7, 9}.

    Parameters
    ----------
    n : int, >= 1

    Returns
    -------
    int
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    best = None
    for m in FAST_ODD_PARTS:
        length = m
        while length < n:
            length *= 2
        if best is None or length < best:
            best = length
    return best


def fast_lengths_between(lo, hi):
    """All fast lengths L with lo <= L <= hi, ascending."""
    out = set()
    for m in FAST_ODD_PARTS:
        length = m
        while length <= hi:
            if length >= lo:
                out.add(length)
            length *= 2
    return sorted(out)


# --------------------------------------------------------------------------
# Geometry: polyphase split, tiles, layout
# --------------------------------------------------------------------------

class AxisGeometry(NamedTuple):
    """How one spatial axis is cut into transform tiles."""

    size: int          # input length (without padding)
    pad_lo: int        # zeros before the input
    stride: int
    out: int           # output length
    residues: tuple    # kept input phases r (0 <= r < stride), ascending
    taps_phase: tuple  # for every kernel tap a: index of its phase in residues
    taps_q: tuple      # for every kernel tap a: position q in its phase kernel
    kq: int            # length of the phase kernels
    t: int             # transform length
    b: int             # outputs per tile
    tiles: int         # number of tiles

    @property
    def padded(self):
        """Length of the padded phase signal that every tile reads from."""
        return (self.tiles - 1) * self.b + self.t


def axis_phases(k, dilation, stride):
    """Residues of the dilated taps mod stride, and each tap's (phase, q)."""
    offsets = [a * dilation for a in range(k)]
    residues = tuple(sorted({e % stride for e in offsets}))
    where = {r: i for i, r in enumerate(residues)}
    taps_phase = tuple(where[e % stride] for e in offsets)
    taps_q = tuple(e // stride for e in offsets)
    return residues, taps_phase, taps_q, max(taps_q) + 1


def axis_geometry(size, pad_lo, pad_hi, k, dilation, stride, t=None):
    out = conv_output_size(size, k, stride, (pad_lo, pad_hi), dilation)
    residues, taps_phase, taps_q, kq = axis_phases(k, dilation, stride)
    single = fast_length(out + kq - 1)
    if t is None or t >= single:
        t, b = single, out
    else:
        if t < kq:
            raise ValueError(f"transform length {t} is shorter than the "
                             f"(phase) kernel ({kq})")
        b = t - kq + 1
    tiles = -(-out // b)
    return AxisGeometry(size, pad_lo, stride, out, residues, taps_phase,
                        taps_q, kq, t, b, tiles)


class FFTGeometry(NamedTuple):
    """Everything the stages need to know about one problem."""

    n: int              # batch
    c: int              # input channels
    k: int              # output channels
    groups: int
    cg: int             # input channels per group (before the phase split)
    rows: AxisGeometry  # H axis
    cols: AxisGeometry  # W axis
    dtype: np.dtype
    freq_major: bool    # spectra laid out frequency-major (BLAS contraction)

    @property
    def phases(self):
        return len(self.rows.residues) * len(self.cols.residues)

    @property
    def channels(self):
        """Input channels after the phase split, C * phases."""
        return self.c * self.phases

    @property
    def channels_per_group(self):
        return self.cg * self.phases

    @property
    def tiles(self):
        """Tiles of one image."""
        return self.rows.tiles * self.cols.tiles

    @property
    def m(self):
        """Rows of the per-frequency GEMM: tiles of the whole batch."""
        return self.n * self.tiles

    @property
    def tile_shape(self):
        return (self.rows.t, self.cols.t)

    @property
    def spectrum_shape(self):
        return (self.rows.t, self.cols.t // 2 + 1)

    @property
    def out_shape(self):
        return (self.n, self.k, self.rows.out, self.cols.out)

    @property
    def complex_dtype(self):
        return np.dtype(np.complex64 if self.dtype == np.float32
                        else np.complex128)

    def weight_key(self):
        """What the weight spectra depend on, besides the weights."""
        return (self.rows.t, self.cols.t, self.rows.residues,
                self.cols.residues, self.rows.taps_phase, self.rows.taps_q,
                self.cols.taps_phase, self.cols.taps_q, self.groups,
                self.freq_major, self.dtype.str)


def plan_geometry(x_shape, w_shape, stride, padding, dilation, groups,
                  dtype, tile, freq_major=False):
    """Cut a normalised problem into transform tiles of the given lengths.

    Parameters
    ----------
    x_shape, w_shape : (N, C, H, W), (K, C // groups, kH, kW)
    stride, dilation : (sh, sw), (dh, dw)
    padding : (top, bottom, left, right)
    groups : int
    dtype : float32 or float64
    tile : (t0, t1)
        Transform lengths; a length at least that of the whole (padded)
        axis means one tile along it.  A backend chooses them (the CPU's
        cost model: :func:`kernels.cpu._fft_model.choose_tile`).
    freq_major : bool
        Spectrum layout (a backend's choice, see ``FFTGeometry``).

    Returns
    -------
    FFTGeometry
    """
    n, c, h, w = x_shape
    k, cg, kh, kw = w_shape
    rows = axis_geometry(h, padding[0], padding[1], kh, dilation[0],
                          stride[0], tile[0])
    cols = axis_geometry(w, padding[2], padding[3], kw, dilation[1],
                          stride[1], tile[1])
    return FFTGeometry(n, c, k, groups, cg, rows, cols, np.dtype(dtype),
                       bool(freq_major))


# --------------------------------------------------------------------------
# Inputs that no output reads
# --------------------------------------------------------------------------

def _untouched(axis, phase):
    """Positions of a padded phase signal that no output reads.

    Position p of phase ``phase`` is read when some tap q of that phase and
    some output o < out have o + q = p.  The rest (inputs past the last
    window, or between the taps of a dilated kernel when there are fewer
    outputs than the gap) would add nothing to the result, but an FFT
    spreads the rounding errors of every value in a tile over all its
    outputs: such a value, however large, must not be there.
    """
    touched = np.zeros(axis.padded, dtype=bool)
    for q in {q for ph, q in zip(axis.taps_phase, axis.taps_q) if ph == phase}:
        touched[q:q + axis.out] = True
    return np.flatnonzero(~touched)


def untouched_lists(geom):
    """(axis, phase, padded positions) no output reads, non-empty only."""
    out = []
    for axis, geo in ((0, geom.rows), (1, geom.cols)):
        for phase in range(len(geo.residues)):
            idx = _untouched(geo, phase)
            if idx.size:
                out.append((axis, phase, idx))
    return out


def zero_untouched_window(window, geom, r0, c0, untouched):
    """Zero the inputs that no output reads (see :func:`_untouched`).

    ``window`` (images, C', rows, cols) starts at padded position (r0, c0);
    ``untouched`` is :func:`untouched_lists`.
    """
    rows, cols = geom.rows, geom.cols
    p0n, p1n = len(rows.residues), len(cols.residues)
    n, _, hq, wq = window.shape
    six = window.reshape(n, geom.c, p0n, p1n, hq, wq)
    for axis, phase, idx in untouched:
        lo = r0 if axis == 0 else c0
        size = hq if axis == 0 else wq
        idx = idx[(idx >= lo) & (idx < lo + size)] - lo
        if not idx.size:
            continue
        if axis == 0:
            six[:, :, phase, :, idx, :] = 0
        else:
            six[:, :, :, phase, :, idx] = 0


# --------------------------------------------------------------------------
# Tile windows
# --------------------------------------------------------------------------

def input_window(geom, n_rows, n_cols):
    """Rows and columns of padded input that n_rows x n_cols tiles read."""
    rows, cols = geom.rows, geom.cols
    return ((n_rows - 1) * rows.b + rows.t, (n_cols - 1) * cols.b + cols.t)


def overlapping_tiles(base, geom, rows, cols):
    """(images, rows, cols, C', t0, t1) read-only view of the tile windows.

    ``base`` is padded input (images, C', H', W') whose element (0, 0) is
    where the first tile starts; windows step by the outputs per tile.
    """
    sn, sc, sh, sw = base.strides
    return as_strided(base, (base.shape[0], rows, cols, geom.channels,
                             geom.rows.t, geom.cols.t),
                      (sn, geom.rows.b * sh, geom.cols.b * sw, sc, sh, sw),
                      writeable=False)


# --------------------------------------------------------------------------
# Chunks (staged path) and blocks (task path)
# --------------------------------------------------------------------------

class Chunk(NamedTuple):
    """Tiles transformed together: whole images, or rows of tiles of one."""

    n0: int       # first image
    images: int   # images in the chunk
    i0: int       # first row of tiles (0 when images > 1)
    rows: int     # rows of tiles per image

    def m0(self, geom):
        """Index of the first tile, in (N, tiles_rows, tiles_cols) order."""
        return (self.n0 * geom.rows.tiles + self.i0) * geom.cols.tiles

    def tiles(self, geom):
        return self.images * self.rows * geom.cols.tiles


def whole_batch(geom):
    return Chunk(0, geom.n, 0, geom.rows.tiles)


def chunks(geom, chunk_bytes):
    """Split the tiles into chunks of whole images or of rows of tiles.

    A chunk's spectra (input and output) stay below ``chunk_bytes`` where
    one row of tiles allows.
    """
    f = geom.spectrum_shape[0] * geom.spectrum_shape[1]
    per_tile = f * (geom.channels + geom.k) * geom.complex_dtype.itemsize
    budget = max(1, chunk_bytes // per_tile)
    if budget >= geom.tiles:
        step = min(geom.n, budget // geom.tiles)
        return [Chunk(n0, min(step, geom.n - n0), 0, geom.rows.tiles)
                for n0 in range(0, geom.n, step)]
    step = max(1, budget // geom.cols.tiles)
    return [Chunk(n, 1, i0, min(step, geom.rows.tiles - i0))
            for n in range(geom.n) for i0 in range(0, geom.rows.tiles, step)]


class Block(NamedTuple):
    """Tiles computed by one task: whole images, or a rectangle of one."""

    n0: int       # first image
    images: int
    i0: int       # first row of tiles
    rows: int
    j0: int       # first column of tiles
    cols: int

    @property
    def tiles(self):
        return self.images * self.rows * self.cols

    @property
    def shape(self):
        return (self.images, self.rows, self.cols)


def per_tile_bytes(geom):
    """Bytes of a task block's buffers per tile: the input and output
    spectra (one buffer for both with one channel in and out) and a real
    ``t0 x t1`` tile per input and output channel."""
    t0, t1 = geom.tile_shape
    f = geom.spectrum_shape[0] * geom.spectrum_shape[1]
    c, k = geom.channels, geom.k
    in_place = c == 1 and k == 1
    spectra = f * (c + (0 if in_place else k)) * geom.complex_dtype.itemsize
    return spectra + t0 * t1 * (c + k) * geom.dtype.itemsize


def task_blocks(geom, task_bytes, tasks_per_thread, min_task_seconds,
                threads, tile_seconds):
    """Cut the tiles of every image into blocks (the tasks).

    A block's buffers (:func:`per_tile_bytes` per tile) fit in
    ``task_bytes``, and there are at least ``tasks_per_thread * threads``
    blocks when there are enough tiles, unless that leaves a block less
    than ``min_task_seconds`` of work at ``tile_seconds`` per tile.

    Blocks are whole images when several fit in a task, else rectangles of
    full rows of tiles, else runs of tiles within a row.  The cut depends
    only on the problem and the arguments: a block's shape decides how the
    transforms are batched, so ``threads`` must be fixed per process
    (never the current thread count) for results not to depend on it.
    """
    per_image = geom.tiles
    total = geom.n * per_image
    want = max(1, tasks_per_thread * threads)
    least = int(np.ceil(min_task_seconds / tile_seconds))
    size = max(1, min(task_bytes // per_tile_bytes(geom), total // want),
               least)
    rows, cols = geom.rows.tiles, geom.cols.tiles
    if size >= per_image:
        step = size // per_image
        return [Block(n0, min(step, geom.n - n0), 0, rows, 0, cols)
                for n0 in range(0, geom.n, step)]
    if size >= cols:
        step = size // cols
        return [Block(n, 1, i0, min(step, rows - i0), 0, cols)
                for n in range(geom.n) for i0 in range(0, rows, step)]
    return [Block(n, 1, i, 1, j0, min(size, cols - j0))
            for n in range(geom.n) for i in range(rows)
            for j0 in range(0, cols, size)]
