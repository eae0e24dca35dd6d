"""im2col's 1x1 product with output channels in the lanes
(kernels/cpu/_pointwise.py).

The product sums each output in the panel GEMM's order (the chain over
the input channels from zero, the bias added afterwards), so im2col must
give **the same bits** with it and without it; every test also checks
that it was taken, and the results are held to the float64 reference
under im2col's documented bound (``check_conv``).  It is forced on with
``Im2colTuning.channel_lanes_min_depth = 1`` (off by default on AVX2
machines, from 256 input channels on AVX-512).  Shapes reach: images
whose positions are whole segments and whose last segment overlaps the
one before, a single segment, several images, groups, strides (the
compact copy), channel blocks split into runs of segments, runs of
segments outside the blocks (images larger than the L2 budget),
read-only inputs, one thread and several, float32 and float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels._dispatch import ConvSpec
from kernels.cpu import _pointwise, _tuning, _workspace, im2col

from test_im2col import check_conv, random_problem

DTYPES = (np.float32, np.float64)
over_dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
COLS = _pointwise.COLS


def lanes_product(on):
    """im2col with the product forced on (any depth) or off."""
    return _tuning.override(im2col=dict(channel_lanes_min_depth=1 if on else 0))


def spec_of(x, w, stride, groups):
    return ConvSpec(x.shape, w.shape, stride, (0, 0, 0, 0), (1, 1), groups,
                    x.dtype)


def both_products(x, w, bias, stride=(1, 1), groups=1):
    """(with the product, without it): the first within the reference's
    bound, and the product taken."""
    with lanes_product(True):
        assert _pointwise.applies(spec_of(x, w, stride, groups),
                                  _tuning.current().im2col)
        lanes = check_conv(x, w, bias, stride, groups=groups)
    with lanes_product(False):
        assert not _pointwise.applies(spec_of(x, w, stride, groups),
                                      _tuning.current().im2col)
        panel = im2col.conv2d(x, w, bias, stride, (0, 0, 0, 0), (1, 1), groups)
    return lanes, panel


def block(dtype):
    return _pointwise.block_channels(dtype)


@over_dtypes
@pytest.mark.parametrize("n, c, k, h, w, stride, groups, bias", [
    (1, 64, 2, 7, 7, 1, 1, True),          # 49 positions: last segment overlaps
    (1, 40, 1, 2, 7, 1, 1, False),         # one segment exactly
    (3, 24, 3, 5, 9, 1, 1, True),          # images of 45 positions
    (2, 18, 4, 6, 5, 1, 2, True),          # groups
    (2, 33, 2, 11, 12, 2, 1, True),        # stride 2: compact copy
    (1, 20, 1, 15, 14, 3, 1, False),       # stride 3, 5 x 5 outputs
    (1, 300, 1, 14, 14, 1, 1, True),       # a reduction past a square of lanes
])
def test_lanes_product_gives_the_panel_gemms_bits(dtype, n, c, k, h, w, stride,
                                                  groups, bias):
    """``k`` counts channel blocks per group."""
    kg = k * block(dtype)
    x, wt, b = random_problem(np.random.default_rng(n * c + h),
                              (n, c, h, w), (groups * kg, c // groups, 1, 1),
                              dtype, bias)
    lanes, panel = both_products(x, wt, b, (stride, stride), groups)
    np.testing.assert_array_equal(lanes, panel)


@settings(deadline=None)
@given(data=st.data())
def test_random_layers_give_the_panel_gemms_bits(data):
    draw = data.draw
    dtype = draw(st.sampled_from(DTYPES), label="dtype")
    groups = draw(st.integers(1, 3), label="groups")
    cg = draw(st.integers(1, 40), label="C/groups")
    kg = block(dtype) * draw(st.integers(1, 2), label="blocks")
    s = draw(st.integers(1, 3), label="stride")
    ho = draw(st.integers(1, 9), label="Ho")
    wo = draw(st.integers(max(1, -(-COLS // ho)), 20), label="Wo")
    n = draw(st.integers(1, 3), label="N")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    h = (ho - 1) * s + 1 + draw(st.integers(0, s - 1), label="rows past")
    w = (wo - 1) * s + 1 + draw(st.integers(0, s - 1), label="cols past")
    x, wt, b = random_problem(np.random.default_rng(seed),
                              (n, groups * cg, h, w),
                              (groups * kg, cg, 1, 1), dtype,
                              draw(st.booleans(), label="bias"))
    lanes, panel = both_products(x, wt, b, (s, s), groups)
    np.testing.assert_array_equal(lanes, panel)


@over_dtypes
def test_runs_of_segments_outside_the_blocks(monkeypatch, dtype):
    """Images larger than the run budget are cut into runs of segments,
    the tasks' slowest index: the same bits as the blocks outside."""
    x, wt, b = random_problem(np.random.default_rng(5), (2, 24, 9, 10),
                              (3 * block(dtype), 24, 1, 1), dtype)
    lanes, panel = both_products(x, wt, b)
    monkeypatch.setattr(_pointwise, "_RUN_BYTES", 24 * 30 * x.itemsize)
    runs, _ = both_products(x, wt, b)
    np.testing.assert_array_equal(lanes, panel)
    np.testing.assert_array_equal(runs, panel)


@pytest.mark.parametrize("threads", [1, 2])
def test_results_do_not_depend_on_the_thread_count(threads):
    """Each thread packs filters into its own part of the scratch."""
    import numba
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip("one thread only")
    x, wt, b = random_problem(np.random.default_rng(8), (2, 48, 8, 9),
                              (4 * block(np.float32), 48, 1, 1), np.float32)
    _, panel = both_products(x, wt, b)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(threads)
        lanes, _ = both_products(x, wt, b)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(lanes, panel)


def test_read_only_input():
    x, wt, b = random_problem(np.random.default_rng(9), (1, 16, 6, 6),
                              (block(np.float32), 16, 1, 1), np.float32)
    x.setflags(write=False)
    wt.setflags(write=False)
    lanes, panel = both_products(x, wt, b)
    np.testing.assert_array_equal(lanes, panel)


def test_where_the_product_applies():
    tuning = _tuning.Im2colTuning(channel_lanes_min_depth=256)
    blk = block(np.float32)

    def applies(x_shape, w_shape, stride=(1, 1), padding=(0, 0, 0, 0),
                groups=1, tuning=tuning):
        spec = ConvSpec(x_shape, w_shape, stride, padding, (1, 1), groups,
                        np.dtype(np.float32))
        return _pointwise.applies(spec, tuning)

    assert applies((1, 256, 7, 7), (2 * blk, 256, 1, 1))
    assert applies((1, 512, 14, 14), (2 * blk, 256, 1, 1), groups=2)
    assert applies((1, 256, 13, 13), (blk, 256, 1, 1), stride=(2, 2))
    assert not applies((1, 255, 7, 7), (blk, 255, 1, 1))        # too shallow
    assert not applies((1, 512, 7, 7), (4 * blk, 128, 1, 1), groups=4)
    assert not applies((1, 256, 7, 7), (blk + 8, 256, 1, 1))    # not whole blocks
    assert not applies((1, 256, 7, 7), (blk, 256, 3, 3))        # not 1x1
    assert not applies((1, 256, 7, 7), (blk, 256, 1, 1), padding=(0, 1, 0, 0))
    assert applies((1, 256, 1, COLS), (blk, 256, 1, 1))          # one segment
    assert not applies((1, 256, 1, COLS - 1), (blk, 256, 1, 1))  # under one
    assert not applies((1, 256, 1, COLS), (blk, 256, 1, 1), stride=(1, 2))
    # a strided layer's compact copy within the scratch limit
    copy = 256 * 7 * 7 * 4
    tight = _tuning.Im2colTuning(channel_lanes_min_depth=256,
                                 scratch_limit=copy)
    assert applies((1, 256, 13, 13), (blk, 256, 1, 1), stride=(2, 2),
                   tuning=tight)
    assert not applies((1, 256, 14, 14), (blk, 256, 1, 1), stride=(2, 2),
                       tuning=_tuning.Im2colTuning(channel_lanes_min_depth=256,
                                                   scratch_limit=copy - 1))
    assert applies((1, 256, 14, 14), (blk, 256, 1, 1),
                   tuning=_tuning.Im2colTuning(channel_lanes_min_depth=256,
                                               scratch_limit=1))
    off = _tuning.Im2colTuning(channel_lanes_min_depth=0)
    assert not applies((1, 4096, 7, 7), (blk, 4096, 1, 1), tuning=off)


def test_task_chunks_split_blocks_only_while_tasks_are_wanted():
    assert _pointwise.task_chunks(1, 16, 4, 2) == 1
    assert _pointwise.task_chunks(1, 2, 224, 2) == 4
    assert _pointwise.task_chunks(1, 1, 3, 2) == 3          # a run per segment
    assert _pointwise.task_chunks(2, 1, 100, 2) == 4


@pytest.mark.parametrize("nbytes", [1, 63, 64, 1000, 1 << 20, (1 << 20) + 24])
def test_workspace_buffers_start_on_a_cache_line(nbytes):
    space = _workspace.Workspace()
    a = space.get("a", (nbytes,), np.uint8)
    assert a.ctypes.data % _workspace.ALIGNMENT == 0
    b = space.get("a", (nbytes // 8 + 1,), np.float64)     # grown or reused
    assert b.ctypes.data % _workspace.ALIGNMENT == 0
    b[...] = 1.5
    assert (space.get("a", b.shape, np.float64) == 1.5).all()


@over_dtypes
@pytest.mark.parametrize("p_lo, p_hi", [(0, 14), (3, 61), (40, 90), (76, 90)])
def test_a_runs_prefetch_asks_for_every_line_of_its_planes(monkeypatch, dtype,
                                                           p_lo, p_hi):
    """Before a run from memory, its pixels are asked for plane after
    plane: every cache line of each plane's range, nothing outside it."""
    hw, plane0, planes = 90, 2, 3
    asked = []
    monkeypatch.setattr(_pointwise, "prefetch_at",
                        lambda a, i: asked.append(i))
    x = np.ones(6 * hw, dtype)
    _pointwise._prefetch_planes.py_func(x, p_lo, p_hi, plane0, planes, hw)
    line = 64 // x.itemsize
    for c in range(plane0, plane0 + planes):
        seen = [i for i in asked if c * hw <= i < (c + 1) * hw]
        assert set(seen) <= set(range(c * hw + p_lo, c * hw + p_hi))
        # every run of `line` pixels holds a request: no line is skipped
        gaps = np.diff(sorted(seen + [c * hw + p_lo - 1, c * hw + p_hi]))
        assert gaps.max() <= line
    assert all(plane0 * hw <= i < (plane0 + planes) * hw for i in asked)
    # planes one after the other, each in address order
    assert asked == sorted(asked)


@pytest.mark.parametrize("runs, out, filters", [
    (False, False, False), (True, False, False), (False, True, False),
    (False, False, True), (True, True, True)])
@pytest.mark.parametrize("groups", [1, 2])
def test_prefetches_change_no_bits(monkeypatch, runs, out, filters, groups):
    """Asking for a run's lines, the next outputs and the next task's
    filters changes no result."""
    dtype = np.float32
    x, wt, b = random_problem(np.random.default_rng(7), (2, 24, 9, 10),
                              (2 * groups * block(dtype), 24 // groups, 1, 1),
                              dtype)
    _, panel = both_products(x, wt, b, groups=groups)
    monkeypatch.setattr(_pointwise, "_RUN_BYTES", 24 * 30 * x.itemsize)
    monkeypatch.setattr(_pointwise, "_PREFETCH_RUNS", runs)
    monkeypatch.setattr(_pointwise, "_PREFETCH_OUT", out)
    monkeypatch.setattr(_pointwise, "_PREFETCH_FILTERS", filters)
    lanes, _ = both_products(x, wt, b, groups=groups)
    np.testing.assert_array_equal(lanes, panel)


@pytest.mark.parametrize("chunks_outer", [False, True])
@pytest.mark.parametrize("groups, blocks, chunks", [
    (1, 16, 1), (1, 4, 3), (2, 3, 2), (3, 1, 4)])
def test_a_task_asks_for_the_filters_the_next_task_packs(chunks_outer, groups,
                                                         blocks, chunks):
    """The lines asked for cover exactly the rows of filters the next task
    packs (``pack_block`` of its group's block), none where that task
    packs the same block or there is no next task; and the tasks cover
    every (group, block, run) once."""
    cg, width, line = 40, 32, 16
    kg = blocks * width
    n_tasks = groups * blocks * chunks
    coords = [_pointwise._task_coords.py_func(t, chunks_outer, groups,
                                              blocks, chunks)
              for t in range(n_tasks)]
    assert sorted(coords) == [(g, b, c) for g in range(groups)
                              for b in range(blocks) for c in range(chunks)]
    for task in range(n_tasks):
        first, lines = _pointwise._next_filters.py_func(
            task, *coords[task][:2], n_tasks, chunks_outer, groups, blocks,
            chunks, kg, cg, width, line)
        if task + 1 == n_tasks or coords[task + 1][:2] == coords[task][:2]:
            assert lines == 0
            continue
        g1, b1, _ = coords[task + 1]
        rows = g1 * blocks + b1          # pack_block's block of the filters
        packed = np.arange(rows * width * cg, (rows + 1) * width * cg)
        asked = first + line * np.arange(lines)
        assert asked[0] == packed[0]
        assert asked[-1] <= packed[-1] < asked[-1] + line
