"""Direct convolution's channel tile (kernels/cpu/_direct_channels.py).

The tile computes each output with the same chain of multiply-adds as
direct's pixel tile, so the two must agree **bit for bit**; both are also
held to the float64 reference under direct's documented bound.  The
channel tile is forced on with
``DirectTuning.channel_tile_max_filter_bytes_per_position``
(it is off by default on AVX2 machines) and every test checks that it was
taken.  Shapes reach: rows that are whole segments and rows whose last
segment overlaps, rows split into column chunks among tasks, groups, dilation, strides, asymmetric padding, bias or
none, tasks of whole planes and of chunks of rows, both task orders
(channel blocks outside rows and rows outside blocks), float32 and
float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from numba import carray, njit
from hypothesis import strategies as st

from helpers import assert_within_bound

from kernels.cpu import _direct_channels as dc
from kernels.cpu import _tuning, direct
from kernels._dispatch import ConvSpec

from test_direct import random_problem, zero_pad

DTYPES = (np.float32, np.float64)
over_dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])

FORCED = dict(channel_tile_max_filter_bytes_per_position=1 << 40,
              serial_max_macs=0)
PIXEL = dict(channel_tile_max_filter_bytes_per_position=0, serial_max_macs=0)
ON = _tuning.DirectTuning(channel_tile_max_filter_bytes_per_position=24 << 10)


def block(dtype):
    return dc.NVEC * dc.lanes_of(np.dtype(dtype).itemsize)


def covers_well(wo):
    """Whether the tile takes rows ``wo`` outputs wide (whole channel
    blocks): rows of whole segments on one SIMD width overlap on another
    (14 is two segments of AVX-512's tile, 14/18 covered on AVX2's)."""
    return dc.tile_applies(wo, block(np.float32), 4)


# Rows of whole segments (one, two) and rows whose last segment overlaps
# another, on this machine's tile.
ROW_WIDTHS = tuple(sorted({dc.COLS, 2 * dc.COLS} | {
    wo for wo in (14, 24, 26, 28, 40, 41, 42, 56) if covers_well(wo)}))


def spec_of(x, w, padding, dilation=(1, 1), groups=1, stride=(1, 1)):
    return ConvSpec(x.shape, w.shape, stride, padding, dilation, groups,
                    x.dtype)


def both_tiles(x, w, b, padding, dilation=(1, 1), groups=1, monkeypatch=None,
               stride=(1, 1)):
    """(channel tile's y, pixel tile's y), checking which tile ran."""
    taken = []
    real_prepare = dc.prepare

    def spy(*args):
        taken.append(True)
        return real_prepare(*args)

    monkeypatch.setattr(dc, "prepare", spy)
    with _tuning.override(direct=FORCED):
        y_channel = direct.conv2d(x, w, b, stride, padding, dilation, groups)
    assert taken, "the channel tile was not taken"
    taken.clear()
    with _tuning.override(direct=PIXEL):
        y_pixel = direct.conv2d(x, w, b, stride, padding, dilation, groups)
    assert not taken, "the pixel tile was not taken"
    return y_channel, y_pixel


def check_channel_tile(x, w, b, padding, dilation=(1, 1), groups=1,
                       monkeypatch=None, stride=(1, 1), order=None):
    """The channel tile against the pixel tile (bits) and the reference
    (bound); ``order`` "rows" or "blocks" forces the task order."""
    x_before, w_before = x.copy(), w.copy()
    if order is not None:
        monkeypatch.setattr(dc, "rows_outer",
                            lambda packed, filters: order == "rows")
    y_channel, y_pixel = both_tiles(x, w, b, padding, dilation, groups,
                                    monkeypatch, stride)
    assert np.array_equal(x, x_before, equal_nan=True)
    assert np.array_equal(w, w_before, equal_nan=True)
    assert y_channel.dtype == x.dtype and y_channel.flags.c_contiguous
    np.testing.assert_array_equal(y_channel, y_pixel)
    assert_within_bound("direct", y_channel, zero_pad(x, padding), w, b,
                        stride=stride, padding=0, dilation=dilation,
                        groups=groups)


# --------------------------------------------------------------------------
# Which layers take it
# --------------------------------------------------------------------------

def test_rule_takes_layers_of_several_taps_only():
    x = np.zeros((1, 64, 56, 56), np.float32)
    w3 = np.zeros((64, 64, 3, 3), np.float32)
    w1 = np.zeros((64, 64, 1, 1), np.float32)
    assert dc.tile_for(spec_of(x, w3, (1, 1, 1, 1)), ON)
    assert not dc.tile_for(spec_of(x, w1, (0, 0, 0, 0)), ON)
    # strided layers too (28 outputs a row) ...
    assert dc.tile_for(spec_of(x, w3, (1, 1, 1, 1), stride=(2, 2)), ON)
    # ... while their rows stay at least COLS wide: the smallest column
    # stride that leaves fewer outputs a row
    sw = next(s for s in range(2, 57) if (56 + 2 - 3) // s + 1 < dc.COLS)
    assert not dc.tile_for(spec_of(x, w3, (1, 1, 1, 1), stride=(1, sw)), ON)
    off = _tuning.DirectTuning(channel_tile_max_filter_bytes_per_position=0)
    assert not dc.tile_for(spec_of(x, w3, (1, 1, 1, 1)), off)


def test_rule_bounds_the_filter_bytes_per_output_position():
    w256 = np.zeros((256, 256, 3, 3), np.float32)     # 2.25 MiB
    w512 = np.zeros((512, 512, 3, 3), np.float32)     # 9 MiB
    # 7 x 28 maps: 196 positions in rows the tile covers on any SIMD width
    one = np.zeros((1, 256, 7, 28), np.float32)       # 196 positions
    one512 = np.zeros((1, 512, 7, 28), np.float32)
    four512 = np.zeros((4, 512, 7, 28), np.float32)   # 784
    assert dc.tile_for(spec_of(one, w256, (1, 1, 1, 1)), ON)        # 12 KiB
    assert not dc.tile_for(spec_of(one512, w512, (1, 1, 1, 1)), ON)  # 48 KiB
    assert dc.tile_for(spec_of(four512, w512, (1, 1, 1, 1)), ON)    # 12 KiB
    # groups divide the filter bytes a position needs
    w_grouped = np.zeros((512, 128, 3, 3), np.float32)
    assert dc.tile_for(spec_of(one512, w_grouped, (1, 1, 1, 1), groups=4),
                       ON)


@pytest.mark.parametrize("wo", range(1, 3 * 14 + 1))
def test_rule_needs_whole_channel_blocks_and_rows_it_covers_well(wo):
    lanes = dc.lanes_of(4)
    kg = dc.NVEC * lanes
    covered = -(-wo // dc.COLS) * dc.COLS
    expected = wo >= dc.COLS and wo / covered >= 0.85
    assert dc.tile_applies(wo, kg, 4) == expected
    assert not dc.tile_applies(wo, kg + lanes, 4) or dc.NVEC == 1


def test_rows_go_outside_the_blocks_where_the_packed_input_is_larger():
    assert dc.rows_outer(2 << 20, 1 << 20)
    assert not dc.rows_outer(1 << 20, 2 << 20)
    assert not dc.rows_outer(1 << 20, 1 << 20)


def test_run_chooses_the_order_by_packed_input_and_filter_bytes(monkeypatch):
    # ResNet's 128@56^2/2: packed input (4 x 128 x 29^2 floats, 1.7 MB)
    # larger than the filters (0.6 MB); VGG's 512@28^2: the reverse.
    seen = []
    real = dc.conv_channels

    def spy(*args):
        seen.append(args[-2])               # blocks_per_task; 0: blocks outer
        return real(*args)

    monkeypatch.setattr(dc, "conv_channels", spy)
    rng = np.random.default_rng(9)
    for x_shape, w_shape, stride, rows in (
            ((1, 128, 56, 56), (128, 128, 3, 3), (2, 2), True),
            ((1, 512, 28, 28), (512, 512, 3, 3), (1, 1), False)):
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        spec = spec_of(x, w, (1, 1, 1, 1), stride=stride)
        dc.run(spec, x, w, None)
        assert (seen.pop() > 0) == rows


@pytest.mark.parametrize("ho", [1, 2, 3, 7, 14, 56])
@pytest.mark.parametrize("other_tasks", [1, 2, 3, 8, 64])
def test_task_rows_cover_every_row_once(ho, other_tasks):
    per = dc.task_rows(ho, other_tasks, 8)
    chunks = -(-ho // per)
    assert 1 <= per <= ho
    assert (chunks - 1) * per < ho <= chunks * per
    if other_tasks >= 8:
        assert per == ho                     # whole planes are enough tasks
    else:
        # no more rows than its share among 8 tasks (rounded up)
        assert per <= -(-ho * other_tasks // 8)


@pytest.mark.parametrize("wo", [dc.COLS, 2 * dc.MIN_TASK_COLS - 1,
                                2 * dc.MIN_TASK_COLS, 1000, 65536])
@pytest.mark.parametrize("other_tasks", [1, 2, 3, 8, 64])
def test_task_cols_split_rows_only_for_want_of_tasks(wo, other_tasks):
    cols = dc.task_cols(wo, other_tasks, 8)
    chunks = max(1, wo // cols)              # as conv_channels cuts a row
    if other_tasks >= 8 or wo < 2 * dc.MIN_TASK_COLS:
        assert cols == wo                    # whole rows
        return
    assert cols % dc.COLS == 0 and dc.MIN_TASK_COLS <= cols <= wo // 2
    # enough tasks with the others, and the last chunk (the rest of the
    # row) no narrower than the others
    assert chunks * other_tasks >= min(8, wo // dc.MIN_TASK_COLS)
    assert wo - (chunks - 1) * cols >= cols


# --------------------------------------------------------------------------
# Same bits as the pixel tile, within the bound of the reference
# --------------------------------------------------------------------------

@over_dtypes
@pytest.mark.parametrize("hw", sorted(set(ROW_WIDTHS) & {
    dc.COLS, 2 * dc.COLS, 26, 41}))
def test_rows_of_whole_and_overlapping_segments(dtype, hw, monkeypatch):
    rng = np.random.default_rng(hw)
    kb = block(dtype)
    x, w, b = random_problem(rng, (2, 5, hw, hw), (2 * kb, 5, 3, 3), dtype)
    check_channel_tile(x, w, b, (1, 1, 1, 1), monkeypatch=monkeypatch)


@over_dtypes
def test_groups_dilation_and_asymmetric_padding(dtype, monkeypatch):
    rng = np.random.default_rng(3)
    kb = block(dtype)
    x, w, b = random_problem(rng, (1, 6, 20, 27), (3 * kb, 2, 3, 2), dtype)
    check_channel_tile(x, w, b, (2, 0, 1, 3), dilation=(2, 3), groups=3,
                       monkeypatch=monkeypatch)


@over_dtypes
def test_without_bias_and_with_a_long_reduction(dtype, monkeypatch):
    rng = np.random.default_rng(4)
    kb = block(dtype)
    # rows of whole segments: 2 COLS outputs (no padding left or right)
    x, w, _ = random_problem(rng, (1, 70, 16, 2 * dc.COLS + 2),
                             (kb, 70, 3, 3), dtype, bias=False)
    check_channel_tile(x, w, None, (1, 1, 0, 0), monkeypatch=monkeypatch)


@over_dtypes
def test_tasks_of_chunks_of_rows_and_of_whole_planes(dtype, monkeypatch):
    rng = np.random.default_rng(5)
    kb = block(dtype)
    # one block, one image: rows are split over tasks; many blocks and
    # images: a task takes a whole plane
    for x_shape, k in (((1, 3, 30, dc.COLS), kb),
                       ((5, 3, 9, dc.COLS), 4 * kb)):
        x, w, b = random_problem(rng, x_shape, (k, 3, 3, 3), dtype)
        check_channel_tile(x, w, b, (0, 0, 1, 1), monkeypatch=monkeypatch)


@over_dtypes
@pytest.mark.parametrize("order", ["rows", "blocks"])
@pytest.mark.parametrize("wo", [2 * dc.MIN_TASK_COLS, 997])
def test_long_rows_split_into_column_chunks(dtype, order, wo, monkeypatch):
    # One image of one row (a 1-D signal) and one channel block: the row
    # is cut into column chunks, the last taking the rest of it (997: its
    # last segment overlaps the one before).
    seen = []
    real = dc.conv_channels

    def spy(*args):
        seen.append(args[-1])               # cols_per_task
        return real(*args)

    monkeypatch.setattr(dc, "conv_channels", spy)
    rng = np.random.default_rng(wo)
    x, w, b = random_problem(rng, (1, 4, 1, wo + 4), (block(dtype), 4, 1, 5),
                             dtype)
    check_channel_tile(x, w, b, (0, 0, 0, 0), order=order,
                       monkeypatch=monkeypatch)
    assert seen and seen[0] < wo


@over_dtypes
@pytest.mark.parametrize("order", ["rows", "blocks"])
@pytest.mark.parametrize("stride", [(2, 2), (2, 1), (1, 3), (3, 2)])
def test_strided_layers_in_either_task_order(dtype, order, stride,
                                             monkeypatch):
    rng = np.random.default_rng(sum(stride))
    kb = block(dtype)
    # rows of 26 outputs (two segments, overlapping) at every stride;
    # three channel blocks, so that a run of blocks can end short of the
    # last
    wo, ho = 26, 5
    x_shape = (2, 4, (ho - 1) * stride[0] + 3 - 2, (wo - 1) * stride[1] + 3 - 2)
    x, w, b = random_problem(rng, x_shape, (3 * kb, 4, 3, 3), dtype)
    check_channel_tile(x, w, b, (1, 1, 1, 1), stride=stride, order=order,
                       monkeypatch=monkeypatch)


@over_dtypes
@pytest.mark.parametrize("threads", [1, 2])
def test_blocks_outside_rows_pack_each_threads_blocks(dtype, threads,
                                                      monkeypatch):
    # Blocks outside rows: each thread packs the block of its task into
    # its own scratch, once for its run of tasks of that block.  Three
    # images of two groups of three blocks: a thread's run crosses
    # blocks and groups (on one thread it passes all six), and with two
    # threads one block's tasks may be split between them.
    import numba
    rng = np.random.default_rng(threads)
    kb = block(dtype)
    x, w, b = random_problem(rng, (3, 8, 6, 28), (6 * kb, 4, 3, 3), dtype)
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        check_channel_tile(x, w, b, (1, 1, 1, 1), groups=2, order="blocks",
                           monkeypatch=monkeypatch)
    finally:
        numba.set_num_threads(previous)


@pytest.mark.parametrize("order", ["rows", "blocks"])
def test_strided_dilated_grouped_layers(order, monkeypatch):
    rng = np.random.default_rng(8)
    kb = block(np.float32)
    # 57 columns: 28 outputs a row at stride 2, dilation 2 (two segments)
    x, w, b = random_problem(rng, (1, 6, 23, 57), (2 * kb, 3, 3, 3),
                             np.float32)
    check_channel_tile(x, w, b, (2, 1, 0, 3), dilation=(2, 2), groups=2,
                       stride=(2, 2), order=order, monkeypatch=monkeypatch)


def test_non_finite_inputs_reach_exactly_their_windows(monkeypatch):
    rng = np.random.default_rng(6)
    kb = block(np.float32)
    x, w, b = random_problem(rng, (1, 4, 10, 28), (kb, 4, 3, 3), np.float32)
    x[0, 1, 4, 13] = np.nan
    x[0, 3, 0, 27] = np.inf
    check_channel_tile(x, w, b, (1, 1, 1, 1), monkeypatch=monkeypatch)


@st.composite
def channel_problems(draw):
    dtype = draw(st.sampled_from(DTYPES))
    groups = draw(st.sampled_from((1, 1, 2)))
    cg = draw(st.integers(1, 5))
    kg = block(dtype) * draw(st.integers(1, 2))
    kh, kw = draw(st.sampled_from(((3, 3), (1, 3), (2, 2), (5, 5), (3, 1))))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.sampled_from((1, 1, 2, 3))),
              draw(st.sampled_from((1, 1, 2, 3))))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(4))
    wo = draw(st.sampled_from(ROW_WIDTHS))
    ho = draw(st.integers(1, 6))
    # the smallest input giving (ho, wo), plus up to stride - 1 columns
    # the last window leaves out
    h = max(1, (ho - 1) * stride[0] + dilation[0] * (kh - 1) + 1
            - padding[0] - padding[1]
            + draw(st.integers(0, stride[0] - 1)))
    w = ((wo - 1) * stride[1] + dilation[1] * (kw - 1) + 1
         - padding[2] - padding[3] + draw(st.integers(0, stride[1] - 1)))
    return dict(x_shape=(draw(st.integers(1, 3)), cg * groups, h, w),
                w_shape=(kg * groups, cg, kh, kw), padding=padding,
                dilation=dilation, stride=stride, groups=groups,
                bias=draw(st.booleans()), dtype=dtype,
                order=draw(st.sampled_from(("rows", "blocks"))),
                split_rows=draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)))


@settings(deadline=None)
@given(problem=channel_problems())
def test_random_configurations_give_the_pixel_tiles_bits(problem):
    with pytest.MonkeyPatch.context() as monkeypatch:
        if problem["split_rows"]:
            # tasks of a single segment's columns where tasks are few
            monkeypatch.setattr(dc, "MIN_TASK_COLS", dc.COLS)
        rng = np.random.default_rng(problem["seed"])
        x, w, b = random_problem(rng, problem["x_shape"], problem["w_shape"],
                                 problem["dtype"], problem["bias"])
        check_channel_tile(x, w, b, problem["padding"], problem["dilation"],
                           problem["groups"], monkeypatch=monkeypatch,
                           stride=problem["stride"], order=problem["order"])


@over_dtypes
@pytest.mark.parametrize("c", [3, 5, 16])
def test_pack_filters_puts_channels_fastest(dtype, c):
    # R = 27, 45, 144 taps: squares transposed in registers and a tail
    rng = np.random.default_rng(7)
    kb = block(dtype)
    w = rng.standard_normal((2 * kb, c, 3, 3)).astype(dtype)
    r_len = c * 9
    packed = dc.pack_filters(w, kb).reshape(2, r_len, kb)
    for b in range(2):
        np.testing.assert_array_equal(
            packed[b], w[b * kb:(b + 1) * kb].reshape(kb, r_len).T)


@njit
def _store_one_tile(sums, y, y0, hw):
    acc_ptr = dc.channel_tile_buffer(y)
    acc = carray(acc_ptr, sums.shape)
    acc[:, :] = sums
    dc.store_tile(acc_ptr, y, y0, hw)


@over_dtypes
@pytest.mark.parametrize("where", ["first", "last"])
def test_store_tile_writes_the_tiles_outputs_and_nothing_else(dtype, where):
    # Each channel's COLS pixels land in its plane; the lanes past COLS of
    # each transposed square (masked) write nothing, even at the end of y.
    kb, hw = block(dtype), 40
    rng = np.random.default_rng(11)
    sums = rng.standard_normal((dc.COLS, kb)).astype(dtype)
    y = np.full(kb * hw, np.nan, dtype)
    y0 = 0 if where == "first" else hw - dc.COLS
    _store_one_tile(sums, y, y0, hw)
    expected = np.full(kb * hw, np.nan, dtype)
    for q in range(kb):
        expected[y0 + q * hw:y0 + q * hw + dc.COLS] = sums[:, q]
    np.testing.assert_array_equal(y, expected)
