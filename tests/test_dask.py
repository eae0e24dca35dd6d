"""kernels.dask: the kernels on Dask arrays, seam-free (issue 13).

Every result is compared with the in-memory function on the whole array
(exactly for ``direct`` and for pooling) or with the float64 reference
within the algorithm's documented bound; the chunk arithmetic of
``kernels._blocks`` against a one-dimensional brute force.
"""

from __future__ import annotations

import os
import time
import warnings
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import _blocks
from kernels.geometry import pool_output_size

import reference
from helpers import (ConvProblem, abs_scale, assert_close_within,
                     assert_within_bound, bound, conv_problems, random_array)

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
kd = pytest.importorskip("kernels.dask")

SYNC = {"scheduler": "synchronous"}


def _chunking(draw, size, max_chunk=9):
    """Random chunk sizes summing to ``size`` (odd and size-1 chunks too)."""
    chunks = []
    while sum(chunks) < size:
        chunks.append(min(draw(st.integers(1, max_chunk)), size - sum(chunks)))
    return tuple(chunks)


@st.composite
def chunkings(draw, shape, spatial_from):
    """Chunks for ``shape``: random along N (if any) and the spatial axes,
    whole along the others."""
    chunks = []
    for axis, size in enumerate(shape):
        if axis >= spatial_from or (axis == 0 and spatial_from == 2
                                    and len(shape) == 4):
            chunks.append(_chunking(draw, size))
        else:
            chunks.append((size,))
    return tuple(chunks)


# --------------------------------------------------------------------------
# Chunk arithmetic, against a 1-D brute force
# --------------------------------------------------------------------------

@st.composite
def axes(draw):
    k, d, s = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(
        st.integers(1, 4))
    lo, hi = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    extent = d * (k - 1) + 1
    n = draw(st.integers(max(1, extent - lo - hi), 40))
    return n, k, d, s, lo, hi, _chunking(draw, n, 12)


@given(axes(), st.integers(0, 2**32 - 1))
def test_exact_windows_compute_every_output_once(axis, seed):
    n, k, d, s, lo, hi, chunks = axis
    extent = d * (k - 1) + 1
    n_out = (n + lo + hi - extent) // s + 1
    rng = np.random.default_rng(seed)
    x, taps = rng.standard_normal(n), rng.standard_normal(k)
    w = np.zeros(extent)
    w[::d] = taps
    padded = np.concatenate([np.zeros(lo), x, np.zeros(hi)])
    expected = [padded[o * s:o * s + extent] @ w for o in range(n_out)]

    fitted, windows = _blocks.fit_chunks(chunks, n_out, extent, s, lo,
                                         _blocks.exact_windows)
    before, after = _blocks.halo(fitted, windows)
    assert sum(fitted) == n and before == 0 and after <= extent - 1
    got, bounds = [], _blocks.boundaries(fitted)
    for j, win in enumerate(windows):
        assert bounds[j] <= win.in_start or win.in_start == win.in_stop
        seg = np.concatenate([np.zeros(win.pad_lo), x[win.in_start:win.in_stop],
                              np.zeros(win.pad_hi)])
        outputs = (len(seg) - extent) // s + 1
        assert outputs == win.out_stop - win.out_start
        got += [seg[o * s:o * s + extent] @ w for o in range(outputs)]
    np.testing.assert_array_equal(got, expected)


@given(axes())
def test_split_seams_cut_each_chunk_into_a_body_and_a_seam(axis):
    n, k, d, s, lo, hi, chunks = axis
    extent = d * (k - 1) + 1
    n_out = (n + lo + hi - extent) // s + 1
    fitted, windows = _blocks.fit_chunks(chunks, n_out, extent, s, lo,
                                         _blocks.exact_windows)
    parts = _blocks.split_seams(fitted, windows, extent, s, lo)
    bounds = _blocks.boundaries(fitted)
    # Every output once, in order, each part a non-empty range.
    outputs = [o for win, _ in parts for o in range(win.out_start,
                                                    win.out_stop)]
    assert outputs == list(range(n_out))
    for win, owner in parts:
        # Each part's inputs are those of its outputs (checked against
        # the brute force by the test above).
        assert (win.in_start, win.in_stop, win.pad_lo, win.pad_hi) == \
            _blocks.reads(win.out_start, win.out_stop, n, extent, s, lo)
        # Whose is it?  The chunk of its first output's first input.
        first = min(max(win.out_start * s - lo, 0), n - 1)
        j = max(i for i in range(len(fitted)) if bounds[i] <= first)
        j = min(j, len(windows) - 1)
        assert windows[j].out_start <= win.out_start < windows[j].out_stop
        if owner is None:          # a seam reads past its chunk's end...
            assert win.in_stop > bounds[j + 1]
        else:                      # ...a body only inside its chunk
            assert owner == j
            assert bounds[j] <= win.in_start or win.in_start == win.in_stop
            assert win.in_stop <= bounds[j + 1]
    # At most one body and one seam per chunk, the body first.
    for j, window in enumerate(windows):
        mine = [owner for win, owner in parts
                if window.out_start <= win.out_start < window.out_stop]
        assert mine in ([j], [None], [j, None])
    # Body outputs are as many as fit: one more would read past the chunk.
    for win, owner in parts:
        if owner is not None and owner < len(windows) - 1:
            assert win.out_stop * s - lo + extent > bounds[owner + 1]


@given(axes(), st.booleans(), st.integers(0, 2**32 - 1))
def test_aligned_windows_keep_the_global_outputs(axis, ceil_mode, seed):
    n, k, d, s, p, _, chunks = axis
    p = min(p, k // 2)
    extent = d * (k - 1) + 1
    if n + 2 * p < extent:
        return
    n_out = pool_output_size(n, k, s, p, d, ceil_mode)
    x = np.random.default_rng(seed).standard_normal(n)

    def pool(a):   # max pooling with -inf padding, ceil_mode windows clipped
        m = pool_output_size(len(a), k, s, p, d, ceil_mode)
        padded = np.concatenate([np.full(p, -np.inf), a,
                                 np.full(p + extent, -np.inf)])
        return [padded[o * s:o * s + extent:d].max() for o in range(m)]

    fitted, windows = _blocks.fit_chunks(chunks, n_out, extent, s, p,
                                         _blocks.aligned_windows)
    assert _blocks.halo(fitted, windows)[0] <= s - 1
    got = []
    for win in windows:
        assert win.in_start % s == 0
        got += pool(x[win.in_start:win.in_stop])[win.keep_start:win.keep_stop]
    np.testing.assert_array_equal(got, pool(x))


def test_idle_chunks_are_merged():
    # 12 inputs, kernel 3, stride 4, no padding: outputs read [0, 3),
    # [4, 7), [8, 11).  Chunk [1, 3) owns none (joins [0, 1)); [9, 11) and
    # [11, 12) own none (join [3, 9)).
    chunks, windows = _blocks.fit_chunks((1, 2, 6, 2, 1), 3, 3, 4, 0,
                                         _blocks.exact_windows)
    assert chunks == (3, 9)
    assert [(w.out_start, w.out_stop, w.in_start, w.in_stop)
            for w in windows] == [(0, 1, 0, 3), (1, 3, 4, 11)]


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------

def _arrays(problem, dtype):
    rng = np.random.default_rng(problem.seed)
    x = random_array(rng, problem.x_shape, dtype)
    w = random_array(rng, problem.w_shape, dtype)
    b = random_array(rng, problem.w_shape[:1], dtype) if problem.has_bias else None
    return x, w, b


def _quiet(func, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return func(*args, **kwargs)


@settings(max_examples=30)
@given(st.data(), conv_problems(2, max_extra=12),
       st.sampled_from(kernels.ALGORITHMS), st.sampled_from(["float32", "float64"]))
def test_conv2d_equals_in_memory(data, problem: ConvProblem, algorithm, dtype):
    if not problem.supported_by(algorithm):
        return
    x, w, b = _arrays(problem, dtype)
    chunks = data.draw(chunkings(x.shape, x.ndim - 2))
    # Blocks in bands of output rows: the default (one band at these
    # sizes), or bands as thin as one row (padding-only bands included).
    thin_bands = data.draw(st.booleans(), label="thin_bands")
    split_seams = data.draw(st.booleans(), label="split_seams")
    y = _quiet(kd.conv2d, da.from_array(x, chunks=chunks), w, b,
               algorithm=algorithm, split_seams=split_seams, **problem.kwargs)
    with mock.patch.multiple(kd, BAND_BYTES=1 if thin_bands else kd.BAND_BYTES,
                             BAND_MIN_HALOS=0 if thin_bands else 4):
        got = y.compute(**SYNC)
    assert isinstance(y, da.Array) and got.dtype == x.dtype
    expected = kernels.conv2d(x, w, b, algorithm=algorithm, **problem.kwargs)
    assert got.shape == expected.shape
    if algorithm in ("direct", "im2col"):
        # Both sum each output in one order wherever its block lies.
        np.testing.assert_array_equal(got, expected)
    else:
        assert_within_bound(algorithm, got, x, w, b, **problem.kwargs)


@given(st.integers(1, 300), st.integers(1, 1 << 16), st.integers(1, 40),
       st.integers(1, 4))
def test_output_bands_cover_the_rows_in_bands_of_about_band_bytes(
        n_rows, row_bytes, extent, stride):
    bands = kd.output_bands(n_rows, row_bytes, extent, stride)
    assert bands[0][0] == 0 and bands[-1][1] == n_rows
    assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
    heights = [t1 - t0 for t0, t1 in bands]
    assert all(h >= 1 for h in heights)
    least = -(-kd.BAND_MIN_HALOS * extent // stride)
    # Every band but the last is as high as the halo rule asks, and no
    # higher than the byte budget needs unless the halo rule asks it.
    for h in heights[:-1]:
        assert h >= least
        assert h * row_bytes <= kd.BAND_BYTES + row_bytes or h == least


@pytest.mark.parametrize("band_bytes", [None, 1 << 12])
def test_a_block_in_bands_holds_no_copy_of_its_window(band_bytes):
    # A tall block in bands: equal to the in-memory result bit for bit,
    # and no band window is larger than a band needs.
    rng = np.random.default_rng(7)
    x = random_array(rng, (1, 1, 300, 40), np.float32)
    w = random_array(rng, (1, 1, 5, 5), np.float32)
    y = kd.conv2d(da.from_array(x, chunks=(1, 1, (150, 150), (23, 17))), w,
                  padding=2, algorithm="direct")
    seen = []
    real = kd._conv_window

    def spy(window, *args):
        seen.append(window.shape[2])
        return real(window, *args)

    budget = kd.BAND_BYTES if band_bytes is None else band_bytes
    with mock.patch.object(kd, "_conv_window", spy), \
            mock.patch.object(kd, "BAND_BYTES", budget):
        got = y.compute(**SYNC)
    np.testing.assert_array_equal(
        got, kernels.conv2d(x, w, padding=2, algorithm="direct"))
    if band_bytes is None:
        assert len(seen) == 4 and max(seen) >= 150  # one band per block
    else:
        # At most budget / row bytes + 1 output rows of the narrower
        # (17-wide) blocks per band, plus the kernel's 4 halo rows.
        assert len(seen) > 4 and max(seen) <= budget // (17 * 4) + 1 + 4


class _Store:
    """An array-like as Zarr and h5py give one: a read takes basic slices
    and integers only (no None, no Ellipsis, no lists) and returns a new
    array.  ``reads`` records the shape of every read."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim = a, a.shape, a.dtype, a.ndim
        self.reads = []

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        if not all(isinstance(i, (slice, int, np.integer)) for i in index):
            raise IndexError(f"a store takes slices and integers: {index}")
        piece = self.a[index].copy()
        self.reads.append(piece.shape)
        return piece


@st.composite
def stored_inputs(draw, x):
    """(dask array, the NumPy array it holds): ``x`` read from a store in
    random chunks, directly, through basic slicing (offset chunk grid)
    or, for batched ``x``, as a store without the batch axis plus None."""
    how = draw(st.sampled_from(["direct", "sliced", "new axis"]))
    if how == "new axis" and x.ndim == 4:
        x = x[:1]
        store = da.from_array(_Store(x[0]), chunks=draw(
            chunkings(x.shape[1:], 1)))
        return store[None], x
    if how == "sliced":
        lo, hi = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        pad = [(0, 0)] * (x.ndim - 2) + [(lo, hi), (hi, lo)]
        big = np.pad(x, pad, constant_values=np.nan)
        store = da.from_array(_Store(big), chunks=draw(
            chunkings(big.shape, x.ndim - 2)))
        return store[..., lo:lo + x.shape[-2], hi:hi + x.shape[-1]], x
    return da.from_array(_Store(x), chunks=draw(
        chunkings(x.shape, x.ndim - 2))), x


@given(st.data(), conv_problems(2, max_extra=12))
def test_conv2d_with_halos_read_from_a_store_equals_in_memory(data, problem):
    # Halos read straight from the stored array, with the index of the
    # input's slicing folded in: NaN outside x's part of a sliced store
    # shows any read off by one.
    x, w, b = _arrays(problem, "float64")
    xd, x = data.draw(stored_inputs(x))
    y = _quiet(kd.conv2d, xd, w, b, algorithm="direct", **problem.kwargs)
    np.testing.assert_array_equal(
        y.compute(**SYNC),
        kernels.conv2d(x, w, b, algorithm="direct", **problem.kwargs))


def _chunks_read(y, x):
    """{output block index: indices of the chunks of ``x`` it depends on,
    through any tasks in between (halo pieces)}."""
    graph = dict(y.__dask_graph__())

    def chunks_under(key, seen):
        if key in seen:
            return set()
        seen.add(key)
        if isinstance(key, tuple) and key[0] == x.name:
            return {key[1:]}
        found = set()
        for dep in dask.core.get_dependencies(graph, key):
            found |= chunks_under(dep, seen)
        return found

    return {key[1:]: chunks_under(key, set())
            for key in graph if isinstance(key, tuple) and key[0] == y.name}


@pytest.mark.parametrize("from_store", [True, False])
def test_halos_are_read_from_the_store_not_cut_from_neighbours(from_store):
    rng = np.random.default_rng(3)
    image = random_array(rng, (60, 50), np.float32)
    w = random_array(rng, (1, 1, 5, 5), np.float32)
    store = _Store(image)
    xd = da.from_array(store, chunks=(20, 25))[None, None]
    with mock.patch.object(kd, "HALOS_FROM_STORE", from_store):
        y = kd.conv2d(xd, w, padding="same", algorithm="direct")
    reads = _chunks_read(y, xd)
    assert len(reads) == 6
    own = {block: {block} for block in reads}
    if from_store:     # each block waits for its own chunk only
        assert reads == own
    else:              # 3 x 2 chunks: 1 to 3 neighbours each but the last
        assert sum(len(r - own[b]) for b, r in reads.items()) == 9
    np.testing.assert_array_equal(
        y.compute(**SYNC),
        kernels.conv2d(image[None, None], w, padding="same",
                       algorithm="direct"))
    # (from_array reads an empty piece for its meta)
    halo_reads = [r for r in store.reads if r != (20, 25) and min(r) > 0]
    if from_store:     # 9 halo-sized reads: 4 rows or 4 columns or both
        assert len(halo_reads) == 9 and all(min(r) <= 4 for r in halo_reads)
    else:
        assert halo_reads == []


def test_halos_of_computed_or_fancy_indexed_chunks_come_from_neighbours():
    rng = np.random.default_rng(4)
    image = random_array(rng, (30, 30), np.float32)
    w = random_array(rng, (1, 1, 3, 3), np.float32)
    computed = da.from_array(_Store(image), chunks=10) * 2
    fancy = da.from_array(_Store(image), chunks=10)[np.arange(30)]
    for xd, x in ((computed, image * 2), (fancy, image)):
        xd = xd[None, None]
        y = kd.conv2d(xd, w, padding=1, algorithm="direct")
        assert any(len(r) > 1 for r in _chunks_read(y, xd).values())
        np.testing.assert_array_equal(
            y.compute(**SYNC),
            kernels.conv2d(x[None, None], w, padding=1, algorithm="direct"))


def test_split_seams_make_no_block_wait_for_a_neighbouring_chunk():
    rng = np.random.default_rng(6)
    image = random_array(rng, (1, 1, 40, 36), np.float32)
    w = random_array(rng, (1, 1, 5, 3), np.float32)
    computed = da.from_array(image, chunks=(1, 1, 10, 12)) * 2
    y = kd.conv2d(computed, w, padding="same", algorithm="direct",
                  split_seams=True)
    # Rows: chunk [0, 10) owns outputs 0..11 (output o reads inputs
    # o - 2 .. o + 2); 0..7 read inside it, 8..11 (extent - 1 = 4) read the
    # next chunk; the last chunk's outputs read the padding, not a seam.
    # Columns likewise with extent 3: seams of 2.
    assert y.chunks[2:] == ((8, 4, 6, 4, 6, 4, 8), (11, 2, 10, 2, 11))
    graph = dict(y.__dask_graph__())
    direct_reads = {key[1:]: [d for d in dask.core.get_dependencies(graph, key)
                              if d[0] == computed.name]
                    for key in graph if key[0] == y.name}
    seams = [(i, j) for i in range(7) for j in range(5)
             if i in (1, 3, 5) or j in (1, 3)]
    for (_, _, i, j), chunks in direct_reads.items():
        # A body holds its own chunk; a seam holds thin copies only.
        assert len(chunks) == (0 if (i, j) in seams else 1)
    reads = _chunks_read(y, computed)
    assert max(len(r) for r in reads.values()) == 4      # a corner seam
    np.testing.assert_array_equal(
        y.compute(**SYNC),
        kernels.conv2d(image * 2, w, padding="same", algorithm="direct"))


def _memory_of_row_strips(source, split_seams=False):
    """(peak of NumPy's memory (tracemalloc), most memory Dask's
    synchronous scheduler held between tasks), in input chunks, of the
    benchmark's graph on 16 row strips, in bands of 1/8 chunk (as the
    default gives on 64 MiB chunks)."""
    import tracemalloc
    from dask.callbacks import Callback
    from convbench.dask_bench import generated_image, filtered
    chunk = 128 * 2048 * 4
    held = [0]

    class Held(Callback):
        def _posttask(self, key, result, dsk, state, id):
            held[0] = max(held[0], sum(getattr(v, "nbytes", 0)
                                       for v in state["cache"].values()))

    filtered(generated_image(20, 10, source), 5,
             split_seams).compute(**SYNC)                      # compile
    image = generated_image(2048, (128, 2048), source)
    tracemalloc.start()
    try:
        with Held(), mock.patch.object(kd, "BAND_BYTES", chunk // 8):
            filtered(image, 5, split_seams).compute(**SYNC)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak / chunk, held[0] / chunk


def test_row_strips_of_a_stored_image_hold_one_chunk_between_tasks():
    # The memory target, below 4 input chunks.  A stored image
    # gives each block its halos from the store, so Dask's order never
    # holds a chunk for its neighbour's block; a computed image (halos cut
    # from the neighbours) holds three: the contrast shows the check can
    # fail.
    stored_peak, stored_held = _memory_of_row_strips("stored")
    computed_peak, computed_held = _memory_of_row_strips("computed")
    assert stored_held < 1.1 and computed_held > 2.9
    assert stored_peak < 4 and computed_peak > stored_peak + 1


def test_row_strips_of_a_computed_image_with_split_seams_hold_one_chunk():
    # Seams split off: no block depends on a neighbouring chunk, so Dask
    # frees each computed chunk once its body and thin seam copies are
    # made (without, the test above measures three held).
    peak, held = _memory_of_row_strips("computed", split_seams=True)
    assert held < 1.1 and peak < 4


@pytest.mark.parametrize("chunks", [(1, 1, 1), (1, 1, (2, 1)), (1, 1, (1, 2))])
def test_winograd_on_border_chunks_narrower_than_the_kernel(chunks):
    # Found by the thorough profile: the whole problem (width 2, kernel 2,
    # "same") suits Winograd, but a 1-wide border chunk gave a block input
    # narrower than the kernel, which Winograd's size rule refuses.
    rng = np.random.default_rng(5)
    x = random_array(rng, (1, 1, 3), np.float32)
    w = random_array(rng, (1, 1, 1, 2), np.float32)
    got = kd.conv2d(da.from_array(x, chunks=chunks), w, padding="same",
                    algorithm="winograd").compute(**SYNC)
    assert_within_bound("winograd", got, x, w, None, padding="same")


def test_conv2d_auto_and_its_chunks():
    rng = np.random.default_rng(1)
    x = random_array(rng, (3, 4, 50, 45), np.float32)
    w = random_array(rng, (6, 4, 5, 5), np.float32)
    y = kd.conv2d(da.from_array(x, chunks=(2, 4, 17, 16)), w, stride=2,
                  padding=2)
    # Output chunks: the outputs each input chunk owns.  Rows: output o
    # starts at input 2 o - 2, so chunk [17, 34) owns o = 10..17 and
    # [34, 50) owns 18..24 (25 outputs); columns likewise, 23 outputs.
    assert y.chunks[:2] == ((2, 1), (6,))
    assert y.chunks[2] == (10, 8, 7) and y.chunks[3] == (9, 8, 6)
    # Each block may pick its own algorithm: the loosest bound holds.
    got = y.compute(**SYNC)
    expected = reference.conv2d(x, w, stride=2, padding=2)
    scale = abs_scale(x, w, stride=2, padding=2)
    normwise = kernels.accuracy.normwise_scale(x, w)
    tolerance = np.max([bound(a, x.dtype, scale, normwise)
                        for a in ("direct", "im2col", "fft")], axis=0)
    assert_close_within(got, expected, tolerance, "auto on Dask")


def test_padding_modes_give_the_output_chunks_of_zero_padding():
    x = da.ones((1, 1, 40, 30), chunks=(1, 1, 13, 11))
    w = np.ones((1, 1, 5, 3))
    zeros = kd.conv2d(x, w, padding=(2, 1))
    for mode in ("reflect", "replicate", "circular"):
        assert kd.conv2d(x, w, padding=(2, 1),
                         padding_mode=mode).chunks == zeros.chunks
    # Output o starts at input o - 2: [0, 13) owns o < 15; columns o < 12.
    assert zeros.chunks[2:] == ((15, 13, 12), (12, 11, 7))


def test_conv2d_unbatched_and_one_by_one():
    rng = np.random.default_rng(2)
    x = random_array(rng, (3, 20, 30), np.float64)
    w = random_array(rng, (5, 3, 1, 1), np.float64)
    got = kd.conv2d(da.from_array(x, chunks=(3, 7, 11)), w,
                    algorithm="direct").compute(**SYNC)
    np.testing.assert_array_equal(got, kernels.conv2d(x, w, algorithm="direct"))


# --------------------------------------------------------------------------
# correlate / convolve
# --------------------------------------------------------------------------

@settings(max_examples=25)
@given(st.data(), st.integers(1, 30), st.integers(1, 30), st.integers(1, 7),
       st.integers(1, 7), st.sampled_from(["full", "same", "valid"]),
       st.sampled_from(["correlate", "convolve"]), st.integers(0, 2**32 - 1))
def test_scipy_style_equals_in_memory(data, h, wd, kh, kw, mode, name, seed):
    if mode == "valid" and (kh > h or kw > wd):
        return
    rng = np.random.default_rng(seed)
    in1, in2 = rng.standard_normal((h, wd)), rng.standard_normal((kh, kw))
    chunks = data.draw(chunkings(in1.shape, 0))
    split_seams = data.draw(st.booleans(), label="split_seams")
    got = _quiet(getattr(kd, name), da.from_array(in1, chunks=chunks), in2,
                 mode=mode, method="direct",
                 split_seams=split_seams).compute(**SYNC)
    expected = getattr(kernels, name)(in1, in2, mode=mode, method="direct")
    np.testing.assert_array_equal(got, expected)


def test_correlate_integer_input_computes_in_float64():
    img = np.arange(400, dtype=np.uint16).reshape(20, 20)
    k = np.ones((3, 3), np.int32)
    got = kd.correlate(da.from_array(img, chunks=7), k, mode="same",
                       method="direct").compute(**SYNC)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, kernels.correlate(img, k, mode="same",
                                                         method="direct"))


# --------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------

@st.composite
def pool_problems(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    shape = [draw(st.integers(1, 2)), draw(st.integers(1, 3))]
    for kk, dd, pp in zip(k, d, p):
        shape.append(draw(st.integers(max(1, dd * (kk - 1) + 1 - 2 * pp), 30)))
    return tuple(shape), dict(kernel_size=k, stride=s, padding=p,
                              ceil_mode=draw(st.booleans())), d


@settings(max_examples=30)
@given(st.data(), pool_problems(), st.integers(0, 2**32 - 1))
def test_max_pool2d_equals_in_memory(data, problem, seed):
    shape, kwargs, dilation = problem
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    xd = da.from_array(x, chunks=data.draw(chunkings(shape, 1)))
    y, idx = _quiet(kd.max_pool2d, xd, dilation=dilation, return_indices=True,
                    **kwargs)
    got_y, got_idx = dask.compute(y, idx, **SYNC)
    exp_y, exp_idx = kernels.max_pool2d(x, dilation=dilation,
                                        return_indices=True, **kwargs)
    np.testing.assert_array_equal(got_y, exp_y)
    np.testing.assert_array_equal(got_idx, exp_idx)


@settings(max_examples=30)
@given(st.data(), pool_problems(), st.booleans(),
       st.sampled_from([None, 3]), st.integers(0, 2**32 - 1))
def test_avg_pool2d_equals_in_memory(data, problem, count_include_pad,
                                     divisor, seed):
    shape, kwargs, _ = problem
    x = np.random.default_rng(seed).standard_normal(shape)
    xd = da.from_array(x, chunks=data.draw(chunkings(shape, 1)))
    got = _quiet(kd.avg_pool2d, xd, count_include_pad=count_include_pad,
                 divisor_override=divisor, **kwargs).compute(**SYNC)
    expected = kernels.avg_pool2d(x, count_include_pad=count_include_pad,
                                  divisor_override=divisor, **kwargs)
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------

def test_threaded_scheduler_runs_one_kernel_thread_per_dask_thread(
        monkeypatch):
    import numba
    rng = np.random.default_rng(3)
    x = random_array(rng, (1, 1, 300, 300), np.float32)
    w = random_array(rng, (1, 1, 21, 21), np.float32)
    inside = []

    def spy(*args):
        inside.append(numba.get_num_threads())
        return kd.run_conv2d.__wrapped__(*args)

    spy.__wrapped__ = kd.run_conv2d
    monkeypatch.setattr(kd, "run_conv2d", spy)
    y = kd.conv2d(da.from_array(x, chunks=(1, 1, 100, 100)), w, padding=10,
                  algorithm="fft")
    before = numba.get_num_threads()
    with dask.config.set(scheduler="threads", num_workers=2):
        got = y.compute()
        again = y.compute()     # each thread's own FFTW plans, reused
    assert inside and set(inside) == {1}
    assert numba.get_num_threads() == before
    assert_within_bound("fft", got, x, w, padding=10)
    np.testing.assert_array_equal(again, got)


def test_processes_scheduler():
    x = np.random.default_rng(7).standard_normal((1, 1, 60, 70)).astype(
        np.float32)
    w = np.ones((2, 1, 5, 5), np.float32)
    y = kd.conv2d(da.from_array(x, chunks=(1, 1, 20, 35)), w, padding=2,
                  algorithm="direct")
    with dask.config.set(scheduler="processes", num_workers=2):
        got = y.compute()
    np.testing.assert_array_equal(
        got, kernels.conv2d(x, w, padding=2, algorithm="direct"))


def test_kernel_threads_none_leaves_numbas_setting(monkeypatch):
    import numba
    inside = []

    def spy(*args):
        inside.append(numba.get_num_threads())
        return spy.__wrapped__(*args)

    spy.__wrapped__ = kd.run_conv2d
    monkeypatch.setattr(kd, "run_conv2d", spy)
    x = da.ones((1, 1, 20, 20), chunks=10)
    kd.conv2d(x, np.ones((1, 1, 3, 3)), kernel_threads=None).compute(**SYNC)
    assert set(inside) == {numba.get_num_threads()}


def test_big_endian_input_gives_the_native_result():
    x = np.random.default_rng(6).standard_normal((1, 2, 12, 12))
    w = np.ones((3, 2, 3, 3))
    got = kd.conv2d(da.from_array(x.astype(">f8"), chunks=5), w,
                    algorithm="direct").compute(**SYNC)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, kernels.conv2d(x, w, algorithm="direct"))


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------

def test_bad_input_is_named():
    x = np.ones((1, 2, 8, 8), np.float32)
    w = np.ones((1, 2, 3, 3), np.float32)
    xd = da.from_array(x, chunks=(1, 2, 4, 4))
    with pytest.raises(TypeError, match="x must be a dask.array.Array"):
        kd.conv2d(x, w)
    with pytest.raises(TypeError, match="w must be an array in memory"):
        kd.conv2d(xd, da.from_array(w))
    with pytest.raises(TypeError, match="w has dtype float64 but x has dtype float32"):
        kd.conv2d(xd, w.astype(np.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        kd.conv2d(xd.astype(np.int32), w.astype(np.int32))
    with pytest.raises(ValueError, match="groups"):
        kd.conv2d(xd, w, groups=3)
    with pytest.raises(ValueError, match="kernel_threads"):
        kd.conv2d(xd, w, kernel_threads=0)
    with pytest.raises(TypeError, match="split_seams must be True or False"):
        kd.conv2d(xd, w, split_seams="yes")
    with pytest.raises(TypeError, match="split_seams must be True or False"):
        kd.correlate(da.ones((4, 4), chunks=2), np.ones((2, 2)),
                     split_seams=None)
    with pytest.raises(kernels.UnsupportedConfiguration):
        kd.conv2d(xd, w, stride=2, algorithm="winograd")
    with pytest.raises(ValueError, match="padding_mode='reflect'"):
        kd.conv2d(xd, w, padding=8, padding_mode="reflect")
    with pytest.raises(ValueError, match="2-D"):
        kd.correlate(da.ones(10, chunks=5), np.ones(3))
    with pytest.raises(ValueError, match="at least as large"):
        kd.correlate(da.ones((4, 4), chunks=2), np.ones((5, 3)), mode="valid")
    with pytest.raises(TypeError, match="complex"):
        kd.correlate(da.ones((4, 4), chunks=2), np.ones((2, 2), complex))
    with pytest.raises(ValueError, match="padding"):
        kd.max_pool2d(xd, 2, padding=2)
    with pytest.raises(TypeError, match="return_indices"):
        kd.max_pool2d(xd, 2, return_indices=1)
    with pytest.raises(TypeError, match="x must be a dask.array.Array"):
        kd.avg_pool2d(x, 2)


def test_split_channels_are_joined_and_small_chunks_work():
    rng = np.random.default_rng(4)
    x = random_array(rng, (1, 4, 20, 20), np.float64)
    w = random_array(rng, (2, 4, 7, 7), np.float64)
    # Rows in chunks of 3 < the halo (6): windows span three chunks.
    xd = da.from_array(x, chunks=(1, 2, 3, 20))
    with pytest.warns(UserWarning) as record:
        y = kd.conv2d(xd, w, padding=3, algorithm="direct")
    messages = " ".join(str(r.message) for r in record)
    # The last row chunk [18, 20) holds no window's first input (the last
    # window starts at 16 - 3 + 3 = 16), so it joins [15, 18).
    assert "input channels" in messages
    assert "spatial axis 2 from (3, 3, 3, 3, 3, 3, 2) to (3, 3, 3, 3, 3, 5)" \
        in messages and "spatial axis 3" not in messages
    # Output o starts at input o - 3: [0, 3) owns o < 6, [15, 20) o >= 18.
    assert y.chunks[2] == (6, 3, 3, 3, 3, 2)
    with pytest.warns(UserWarning, match="rechunked spatial axis 2"):
        strided = kd.conv2d(xd, w, stride=4, algorithm="direct")
    # Windows start at 0, 4, 8, 12: chunks [9, 12) and [15, 20) own none.
    assert strided.chunks[2] == (1, 1, 1, 1)
    np.testing.assert_array_equal(y.compute(**SYNC),
                                  kernels.conv2d(x, w, padding=3,
                                                 algorithm="direct"))


def test_inputs_are_not_modified():
    x = np.random.default_rng(5).standard_normal((1, 1, 16, 16))
    w = np.ones((1, 1, 3, 3))
    x0, w0 = x.copy(), w.copy()
    kd.conv2d(da.from_array(x, chunks=5), w, padding=1).compute(**SYNC)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


# --------------------------------------------------------------------------
# A real cluster: two worker processes, one of them killed mid-way
# --------------------------------------------------------------------------

MOSAIC = 4096
MOSAIC_CHUNK = 1024


def _hubble_block(block_info=None, kill_marker=None):
    """One chunk of a 4096^2 mosaic of scikit-image's Hubble Deep Field
    (luminance, mirrored tiles so that the seams are continuous), made on
    the worker.  With ``kill_marker``, the worker computing chunk (1, 1)
    kills its own process the first time (the nanny restarts it)."""
    from skimage import data
    from skimage.color import rgb2gray
    info = block_info[None]
    (r0, r1), (c0, c1) = info["array-location"]
    if kill_marker and info["chunk-location"] == (1, 1) \
            and not os.path.exists(kill_marker):
        open(kill_marker, "w").close()
        os.kill(os.getpid(), 9)
    tile = rgb2gray(data.hubble_deep_field()).astype(np.float32)
    tile = np.block([[tile, tile[:, ::-1]], [tile[::-1], tile[::-1, ::-1]]])
    rows = np.arange(r0, r1) % tile.shape[0]
    cols = np.arange(c0, c1) % tile.shape[1]
    return tile[np.ix_(rows, cols)]


def _filter_bank():
    """Gaussian-derivative and Laplacian-of-Gaussian filters, 3 scales."""
    filters = []
    for sigma, size in ((1.0, 7), (2.0, 13), (3.0, 19)):
        r = np.arange(size) - size // 2
        yy, xx = np.meshgrid(r, r, indexing="ij")
        g = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
        g /= g.sum()
        log = (xx ** 2 + yy ** 2 - 2 * sigma ** 2) / sigma ** 4 * g
        pad = (19 - size) // 2
        for f in (g, -xx / sigma ** 2 * g, -yy / sigma ** 2 * g, log - log.mean()):
            filters.append(np.pad(f, pad))
    return np.asarray(filters, np.float32)[:, None]


def test_local_cluster_filter_bank_survives_a_killed_worker(tmp_path):
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("skimage")
    marker = str(tmp_path / "killed")
    mosaic = da.map_blocks(_hubble_block, chunks=((MOSAIC_CHUNK,) * 4,) * 2,
                           dtype=np.float32, kill_marker=marker)
    w = _filter_bank()
    y = kd.conv2d(mosaic[None, None], w, padding=9, algorithm="direct")

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                  processes=True, host="127.0.0.1",
                                  dashboard_address=None,
                                  silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        pids = set(client.run(os.getpid).values())
        got = client.compute(y).result(timeout=600)
        after = set(client.run(os.getpid).values())
    assert os.path.exists(marker), "no worker was killed"
    assert pids != after, "the killed worker was not replaced"

    image = _hubble_block({None: {"array-location": [(0, MOSAIC)] * 2,
                                  "chunk-location": (0, 0)}})
    expected = kernels.conv2d(image[None, None], w, padding=9,
                              algorithm="direct")
    np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------
# convbench dask (the harness, tiny sizes)
# --------------------------------------------------------------------------

def test_convbench_dask_measures_every_setting(capsys):
    pytest.importorskip("distributed")
    from convbench import cli, dask_bench
    r = dask_bench.measure(kernel_sizes=(3,), size=96, chunk=(32, 48),
                           workers=2, reference=64, rounds=1)
    one, two = r["clusters"]
    assert (one["workers"], two["workers"]) == (1, 2)
    assert len(two["memory"]) == 2
    for setting in (one, two, r["threaded"]):
        assert setting[3]["median"] > 0 and setting[3]["first_seconds"] > 0
    for cluster in (one, two):    # at least the output chunks were held
        assert cluster[3]["managed_chunks_per_worker"] > 0
        # A polled peak cannot exceed the worker's high-water mark.
        steady = cluster[3]["steady_rss_chunks"]
        assert steady.keys() == cluster["memory"].keys()
        for addr, value in steady.items():
            assert value <= cluster["memory"][addr]["increase_chunks"] + 1e-9
    assert r["scaling_efficiency"][3] == pytest.approx(
        two[3]["median"] / (2 * one[3]["median"]))
    table = dask_bench.format_results(r)
    assert "3x3" in table and "2 worker(s)" in table
    assert "peak RSS during the timed runs" in table
    with pytest.raises(SystemExit):
        cli.main(["dask", "--kernels", "4"])
    assert "must be odd" in capsys.readouterr().err
    # --source and --split-seams reach the measurement and its table.
    r["source"], r["split_seams"] = "computed", True
    with mock.patch.object(dask_bench, "measure", return_value=r) as measure:
        assert cli.main(["dask", "--source", "computed",
                         "--split-seams"]) == 0
    assert measure.call_args.args[-2:] == ("computed", True)
    assert "computed, seams split" in capsys.readouterr().out


def test_sampled_rss_sees_a_peak_that_is_gone_again():
    import mmap
    from convbench import dask_bench
    pid = os.getpid()
    with dask_bench.sampled_rss([pid], interval=0.001) as peaks:
        before = dask_bench.resident_memory()
        # 64 MiB of new pages, touched, then unmapped.  Not np.ones: malloc
        # may hand back memory that is already resident (the sweep tests
        # raise its mmap threshold and keep freed memory).
        big = mmap.mmap(-1, 64 << 20)
        big.write(b"\1" * (64 << 20))
        time.sleep(0.05)
        big.close()
    assert peaks[pid] - before > 48 << 20


def test_generated_image_is_the_same_whatever_the_chunks_and_source():
    from convbench import dask_bench
    a = dask_bench.generated_image(100, 30).compute(**SYNC)
    b = dask_bench.generated_image(100, (7, 100)).compute(**SYNC)
    c = dask_bench.generated_image(100, (7, 100), "computed").compute(**SYNC)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert a.shape == (1, 1, 100, 100) and a.dtype == np.float32
    # Any region read from the store is that region of the whole image.
    store = dask_bench.GeneratedImage(100)
    np.testing.assert_array_equal(store[13:40, 99:], a[0, 0, 13:40, 99:])
    np.testing.assert_array_equal(store[5:5, :], a[0, 0, 5:5, :])
    with pytest.raises(IndexError):
        store[::2]
    with pytest.raises(ValueError, match="source"):
        dask_bench.generated_image(100, 30, "file")
