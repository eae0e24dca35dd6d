"""Direct convolution (kernels/cpu/direct.py): its stages and internal paths.

The packing stages are checked against their defining identities (the
packed element of tap ``(c, i, j)`` and output ``(oh, ow)`` is the
zero-padded input ``x_pad[n, c, oh*sh + i*dh, ow*sw + j*dw]``, built here
with ``np.pad``).  Whole convolutions are compared with ``reference.conv2d``
(float64) under the documented bound ``error_bound("direct", ...)``; the
asymmetric ``(top, bottom, left, right)`` zero padding of the module
contract is applied with ``np.pad`` before a valid reference convolution.
The shapes are chosen to reach each path of the kernel: channel blocks of
4, 3, 2 and 1 filters, output grids smaller than, equal to and spanning
several tiles, long 1-D rows packed in pieces, strides (polyphase planes),
the serial and the parallel driver, NaN/Inf propagation.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_within_bound

from kernels.cpu import _direct_packing, _tuning, direct
from kernels.geometry import conv_output_size

DTYPES = (np.float32, np.float64)
over_dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def random_problem(rng, x_shape, w_shape, dtype, bias=True):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


def zero_pad(x, padding):
    top, bottom, left, right = padding
    return np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)])


def check_direct(x, w, bias, stride=(1, 1), padding=(0, 0, 0, 0),
                 dilation=(1, 1), groups=1):
    """Run direct.conv2d and hold it to the reference and the bound.

    The reference sees the input zero-padded by ``np.pad`` and no padding,
    which is the definition of the (asymmetric) zero padding.  NaN must be
    exactly where the reference has NaN (see helpers.assert_within_bound).
    """
    x_before, w_before = x.copy(), w.copy()
    y = direct.conv2d(x, w, bias, stride, padding, dilation, groups)
    assert np.array_equal(x, x_before, equal_nan=True), "x was modified"
    assert np.array_equal(w, w_before, equal_nan=True), "w was modified"
    assert y.flags.c_contiguous and y.dtype == x.dtype
    assert_within_bound("direct", y, zero_pad(x, padding), w, bias,
                        stride=stride, padding=0, dilation=dilation,
                        groups=groups)
    return y


def packed_geometry(x_shape, w_shape, stride, padding, dilation):
    _, _, h, wd = x_shape
    _, _, kh, kw = w_shape
    pt, pb, pl, pr = padding
    ho = conv_output_size(h, kh, stride[0], (pt, pb), dilation[0])
    wo = conv_output_size(wd, kw, stride[1], (pl, pr), dilation[1])
    return (ho, wo) + direct.packed_geometry(ho, wo, kh, kw, *stride, *dilation)


# --------------------------------------------------------------------------
# Stage 1: packing
# --------------------------------------------------------------------------

PACK_CASES = [
    # x shape, w shape, stride, padding, dilation
    ((2, 3, 7, 9), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    ((1, 2, 8, 11), (2, 2, 3, 2), (2, 3), (0, 2, 3, 1), (1, 2)),
    ((1, 1, 10, 10), (1, 1, 2, 3), (3, 2), (2, 0, 0, 2), (2, 1)),
    ((1, 2, 1, 40), (3, 2, 1, 5), (1, 2), (0, 0, 4, 3), (1, 3)),
    ((2, 1, 5, 5), (1, 1, 5, 5), (1, 1), (3, 3, 3, 3), (1, 1)),   # all padding rows
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", PACK_CASES)
def test_packed_taps_read_the_padded_input(x_shape, w_shape, stride, padding,
                                           dilation):
    """packed[image + tap_offsets[c, i, j] + oh*Wq + ow] is the padded input
    at (oh*sh + i*dh, ow*sw + j*dw) for every tap and output pixel."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    n_img, c_total, _, _ = x_shape
    _, cg, kh, kw = w_shape
    sh, sw = stride
    dh, dw = dilation
    ho, wo, hq, wq = packed_geometry(x_shape, w_shape, stride, padding, dilation)
    tail = 5
    packed = direct.pack_input(x, padding[0], padding[2], sh, sw, hq, wq, tail)
    sample = c_total * sh * sw * hq * wq
    assert packed.shape == (n_img * sample + tail,)
    assert (packed[n_img * sample:] == 0).all()
    offsets = direct.tap_offsets(cg, kh, kw, sh, sw, dh, dw, hq, wq)
    channel = sh * sw * hq * wq
    xp = zero_pad(x, padding)
    for n in range(n_img):
        for c in range(c_total):
            for i in range(kh):
                for j in range(kw):
                    tap = offsets[((c % cg) * kh + i) * kw + j]
                    base = n * sample + (c - c % cg) * channel + tap
                    got = np.array([[packed[base + oh * wq + ow] for ow in range(wo)]
                                    for oh in range(ho)])
                    want = xp[n, c, i * dh:i * dh + (ho - 1) * sh + 1:sh,
                              j * dw:j * dw + (wo - 1) * sw + 1:sw]
                    np.testing.assert_array_equal(got, want)


def test_pack_input_holds_every_input_element_once_plus_zeros():
    """A stride-1 packing is the zero-padded input itself (cropped to the
    rows and columns the outputs use)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    padding = (1, 2, 3, 0)
    ho, wo, hq, wq = packed_geometry(x.shape, (1, 3, 3, 3), (1, 1), padding, (1, 1))
    packed = direct.pack_input(x, padding[0], padding[2], 1, 1, hq, wq, 0)
    expected = zero_pad(x, padding)[:, :, :hq, :wq]
    np.testing.assert_array_equal(packed.reshape(expected.shape), expected)


def _polyphase_reference(x, pad_top, pad_left, sh, sw, hq, wq):
    """pack_input's layout from its definition: out[n, c, ph, pw, i, j] =
    x[n, c, i*sh + ph - pad_top, j*sw + pw - pad_left], zero outside x."""
    n_img, c_total, h, w = x.shape
    out = np.zeros((n_img, c_total, sh, sw, hq, wq), x.dtype)
    for ph in range(sh):
        for pw in range(sw):
            for i in range(hq):
                r = i * sh + ph - pad_top
                if not 0 <= r < h:
                    continue
                for j in range(wq):
                    col = j * sw + pw - pad_left
                    if 0 <= col < w:
                        out[:, :, ph, pw, i, j] = x[:, :, r, col]
    return out.reshape(-1)


@pytest.mark.parametrize("sh, sw", [(1, 1), (2, 2), (1, 2), (2, 1), (3, 3),
                                    (2, 3)])
@pytest.mark.parametrize("pad_top, pad_left", [(0, 0), (1, 1), (2, 3)])
@pytest.mark.parametrize("h, w, hq, wq", [(7, 9, 5, 6), (6, 8, 4, 4),
                                          (3, 5, 6, 9), (9, 30, 3, 2)])
@pytest.mark.parametrize("planes", [(2, 35), (1, 1)])
def test_pack_input_fills_every_element_by_its_definition(
        sh, sw, pad_top, pad_left, h, w, hq, wq, planes):
    """Every packed element, padding and phases past the input included:
    70 planes (whole planes per task, both column phases of stride 2 in
    one loop, several tasks) and a single plane (runs of rows)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(planes + (h, w)).astype(np.float32)
    packed = direct.pack_input(x, pad_top, pad_left, sh, sw, hq, wq, 3)
    want = _polyphase_reference(x, pad_top, pad_left, sh, sw, hq, wq)
    np.testing.assert_array_equal(packed[:want.size], want)
    assert (packed[want.size:] == 0).all()


def test_pack_input_long_rows_are_packed_in_pieces():
    """Rows longer than one packing piece (1-D signals) are filled piecewise."""
    n = 2 * _direct_packing._PACK_PIECE + 123
    x = np.arange(n, dtype=np.float64).reshape(1, 1, 1, n)
    for sw, left in ((1, 7), (2, 3), (3, 0)):
        ho, wo, hq, wq = packed_geometry((1, 1, 1, n), (1, 1, 1, 5), (1, sw),
                                         (0, 0, left, 2), (1, 2))
        packed = direct.pack_input(x, 0, left, 1, sw, hq, wq, 0)
        xp = np.pad(x[0, 0, 0], (left, 2 + sw * wq))
        for pw in range(sw):
            np.testing.assert_array_equal(packed[pw * wq:(pw + 1) * wq],
                                          xp[pw::sw][:wq])


# --------------------------------------------------------------------------
# Whole convolution: the kernel's paths
# --------------------------------------------------------------------------

@over_dtypes
@pytest.mark.parametrize("k_total", [1, 2, 3, 4, 5, 6, 7, 9])
def test_channel_blocks_of_every_size(k_total, dtype):
    """K = 4q + r: blocks of 4 filters and a last block of 1, 2 or 3."""
    rng = np.random.default_rng(k_total)
    x, w, b = random_problem(rng, (2, 3, 9, 10), (k_total, 3, 3, 3), dtype)
    check_direct(x, w, b, padding=(1, 1, 1, 1))


@over_dtypes
@pytest.mark.parametrize("groups, c_total, k_total",
                         [(2, 4, 6), (3, 6, 9), (2, 2, 10), (4, 4, 4), (5, 5, 15)])
def test_groups_with_block_remainders(groups, c_total, k_total, dtype):
    """Groups whose filter count leaves a partial block (the last block of a
    group must not take the next group's filters), depthwise included."""
    rng = np.random.default_rng(groups * 100 + k_total)
    x, w, b = random_problem(rng, (2, c_total, 7, 8),
                             (k_total, c_total // groups, 3, 2), dtype)
    check_direct(x, w, b, padding=(0, 1, 2, 0), groups=groups)


@over_dtypes
@pytest.mark.parametrize("ho, wo", [(1, 1), (1, 3), (3, 2), (2, 17), (5, 40),
                                    (1, 200), (9, 70)])
def test_output_grids_smaller_than_equal_to_and_over_a_tile(ho, wo, dtype):
    """Virtual output grids (Ho x Wq) below, at and above the tile width,
    rows spanning tiles, tiles spanning rows."""
    rng = np.random.default_rng(ho * 1000 + wo)
    kh, kw = 3, 4
    x, w, b = random_problem(rng, (1, 2, ho + kh - 1, wo + kw - 1), (5, 2, kh, kw), dtype)
    y = check_direct(x, w, b)
    assert y.shape == (1, 5, ho, wo)


@over_dtypes
def test_output_grid_of_exactly_whole_tiles(dtype):
    width = direct.tile_columns(dtype)
    rng = np.random.default_rng(3)
    # Wq = Wo + kW - 1 = width and Ho = 2: the grid is two whole tiles
    x, w, b = random_problem(rng, (1, 3, 4, width), (4, 3, 3, 3), dtype)
    check_direct(x, w, b)


@over_dtypes
@pytest.mark.parametrize("padding", [(0, 0, 0, 0), (2, 0, 0, 0), (0, 0, 0, 3),
                                     (1, 2, 3, 0), (4, 4, 4, 4), (0, 5, 6, 0)])
def test_edges_and_interior_with_asymmetric_padding(padding, dtype):
    """Padding larger than the kernel makes whole output rows/columns of
    zeros (bias only); asymmetric padding shifts the windows."""
    rng = np.random.default_rng(sum(padding))
    x, w, b = random_problem(rng, (2, 3, 6, 7), (6, 3, 3, 3), dtype)
    check_direct(x, w, b, padding=padding)


@over_dtypes
@pytest.mark.parametrize("stride, dilation", [((2, 2), (1, 1)), ((1, 3), (1, 1)),
                                              ((3, 1), (2, 1)), ((2, 2), (2, 3)),
                                              ((4, 5), (1, 1)), ((2, 3), (3, 2))])
def test_strides_use_polyphase_planes(stride, dilation, dtype):
    """Strides (one plane per phase) with dilations, including a stride
    larger than the kernel (skipped input columns) and unused last rows."""
    rng = np.random.default_rng(stride[0] * 10 + stride[1])
    x, w, b = random_problem(rng, (2, 4, 13, 17), (6, 2, 3, 2), dtype)
    check_direct(x, w, b, stride=stride, padding=(1, 0, 2, 1),
                 dilation=dilation, groups=2)


@over_dtypes
@pytest.mark.parametrize("length, k, stride, dilation",
                         [(1000, 31, 1, 1), (2 * 16384 + 77, 63, 1, 1),
                          (5000, 7, 3, 2), (40, 40, 1, 1), (3, 1, 2, 1)])
def test_one_dimensional_signals(length, k, stride, dilation, dtype):
    """H = kH = 1, as conv1d reaches the kernel; long rows packed in pieces."""
    rng = np.random.default_rng(length)
    x, w, b = random_problem(rng, (1, 2, 1, length), (3, 2, 1, k), dtype)
    check_direct(x, w, b, stride=(1, stride), padding=(0, 0, 5, 2),
                 dilation=(1, dilation))


@over_dtypes
def test_without_bias(dtype):
    rng = np.random.default_rng(4)
    x, w, _ = random_problem(rng, (2, 3, 8, 8), (5, 3, 3, 3), dtype, bias=False)
    check_direct(x, w, None, padding=(1, 1, 1, 1))


@over_dtypes
def test_long_reduction(dtype):
    """R = C/groups*kH*kW in the thousands (accumulation error grows with R)."""
    rng = np.random.default_rng(5)
    x, w, b = random_problem(rng, (1, 300, 5, 5), (3, 300, 3, 3), dtype)
    check_direct(x, w, b, padding=(1, 1, 1, 1))


# --------------------------------------------------------------------------
# Serial and parallel drivers, thread-count independence
# --------------------------------------------------------------------------

def _driver_args(x, w, b, stride, padding, dilation, groups):
    bias = b if b is not None else np.zeros(1, x.dtype)
    ho, wo, _, _ = packed_geometry(x.shape, w.shape, stride, padding, dilation)
    return (x, w, bias, b is not None, *stride, *dilation, padding[0],
            padding[2], ho, wo, groups)


@over_dtypes
def test_serial_and_parallel_drivers_agree_bitwise(dtype):
    rng = np.random.default_rng(6)
    x, w, b = random_problem(rng, (3, 4, 11, 12), (10, 2, 3, 3), dtype)
    args = _driver_args(x, w, b, (1, 2), (1, 0, 2, 1), (2, 1), 2)
    serial = direct.run_driver(direct._direct_serial, *args)
    parallel = direct.run_driver(direct._direct_parallel, *args)
    np.testing.assert_array_equal(serial, parallel)
    assert_within_bound("direct", parallel, zero_pad(x, (1, 0, 2, 1)), w, b,
                        stride=(1, 2), padding=0, dilation=(2, 1), groups=2)


def test_small_problems_take_the_serial_driver_and_large_the_parallel():
    rng = np.random.default_rng(7)
    small = random_problem(rng, (1, 1, 8, 8), (2, 1, 3, 3), np.float32)
    large = random_problem(rng, (2, 16, 40, 40), (16, 16, 3, 3), np.float32)
    for (x, w, b), serial in ((small, True), (large, False)):
        macs = np.prod(w.shape) * x.shape[0] * (x.shape[2] - 2) * (x.shape[3] - 2)
        assert (macs <= _tuning.current().direct.serial_max_macs) == serial
        check_direct(x, w, b)


@over_dtypes
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups", [
    ((1, 16, 5, 5), (120, 16, 5, 5), (1, 1), (0, 0, 0, 0), 1),   # LeNet C5
    ((2, 6, 4, 5), (6, 3, 3, 3), (1, 1), (1, 0, 0, 1), 2),
    ((3, 4, 6, 6), (9, 4, 3, 2), (2, 3), (0, 1, 1, 0), 1),
    ((1, 2, 1, 9), (5, 2, 1, 3), (1, 2), (0, 0, 2, 2), 1),
])
def test_tiny_output_planes_take_narrow_tiles_and_match(dtype, x_shape,
                                                        w_shape, stride,
                                                        padding, groups):
    # Virtual outputs per image (Ho x packed width) fit in one vector: the
    # kernel runs one-vector tiles.
    rng = np.random.default_rng(11)
    x, w, b = random_problem(rng, x_shape, w_shape, dtype)
    check_direct(x, w, b, stride=stride, padding=padding, groups=groups)


def test_result_does_not_depend_on_the_thread_count():
    rng = np.random.default_rng(8)
    x, w, b = random_problem(rng, (2, 8, 30, 30), (12, 8, 3, 3), np.float32)
    args = _driver_args(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = direct.run_driver(direct._direct_parallel, *args)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = direct.run_driver(direct._direct_parallel, *args)
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(one, many)


# --------------------------------------------------------------------------
# Non-finite values
# --------------------------------------------------------------------------

@over_dtypes
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_input_reaches_exactly_its_windows(value, dtype):
    """A NaN/Inf in x is in the output exactly where the reference has it;
    the extra virtual columns that read it (last columns of a row) are
    dropped, never written."""
    rng = np.random.default_rng(9)
    x, w, b = random_problem(rng, (2, 3, 9, 12), (5, 3, 3, 3), dtype)
    x[0, 1, 4, 0] = value           # first column: read by previous row's extras
    x[0, 2, 2, 11] = value          # last column
    x[1, 0, 8, 6] = value           # last row
    check_direct(x, w, b, padding=(0, 1, 0, 2))
    check_direct(x, w, b, stride=(2, 2), padding=(1, 0, 1, 0))


@over_dtypes
def test_infinite_weight_times_padding_zero_is_nan_like_the_reference(dtype):
    rng = np.random.default_rng(10)
    x, w, b = random_problem(rng, (1, 2, 5, 5), (3, 2, 3, 3), dtype)
    w[1, 0, 0, 0] = np.inf
    check_direct(x, w, b, padding=(1, 1, 1, 1))


def test_nan_outputs_in_a_one_dimensional_signal():
    x = np.ones((1, 1, 1, 300), np.float32)
    x[0, 0, 0, 150] = np.nan
    w = np.ones((1, 1, 1, 9), np.float32)
    y = direct.conv2d(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1), 1)[0, 0, 0]
    nan_at = np.flatnonzero(np.isnan(y))
    np.testing.assert_array_equal(nan_at, np.arange(142, 151))
    assert (y[~np.isnan(y)] == 9).all()


# --------------------------------------------------------------------------
# Random configurations
# --------------------------------------------------------------------------

@st.composite
def direct_problems(draw):
    groups = draw(st.sampled_from((1, 1, 2, 3)))
    cg, kg = draw(st.integers(1, 4)), draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    if draw(st.booleans()):
        kh = 1                                  # 1-D-like kernels
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, 4)) for _ in range(4))
    h = max(1, dilation[0] * (kh - 1) + 1 - padding[0] - padding[1]) + draw(st.integers(0, 8))
    w = max(1, dilation[1] * (kw - 1) + 1 - padding[2] - padding[3]) + draw(st.integers(0, 40))
    n = draw(st.integers(1, 3))
    return dict(x_shape=(n, cg * groups, h, w), w_shape=(kg * groups, cg, kh, kw),
                stride=stride, padding=padding, dilation=dilation, groups=groups,
                bias=draw(st.booleans()), dtype=draw(st.sampled_from(DTYPES)),
                seed=draw(st.integers(0, 2**32 - 1)))


@settings(deadline=None)
@given(problem=direct_problems())
def test_random_configurations_match_the_reference(problem):
    rng = np.random.default_rng(problem["seed"])
    x, w, b = random_problem(rng, problem["x_shape"], problem["w_shape"],
                             problem["dtype"], problem["bias"])
    check_direct(x, w, b, problem["stride"], problem["padding"],
                 problem["dilation"], problem["groups"])


@over_dtypes
@pytest.mark.parametrize("run_taps", [0, 9 * 3, 9 * 7, 1 << 20])
def test_runs_of_column_tiles_give_the_same_bits_as_single_tiles(dtype,
                                                                 run_taps):
    # A task computes a run of consecutive column tiles of one channel
    # block (DirectTuning.run_taps); runs of 1, 3, 7 (not dividing the 9
    # column tiles of a 20x28 output) and all tiles of an image: every
    # output is still one tile's sum in tap order, so the bits agree.
    rng = np.random.default_rng(12)
    x, w, b = random_problem(rng, (3, 1, 20, 28), (10, 1, 3, 3), dtype)
    with _tuning.override(direct=dict(run_taps=0)):
        single = direct.conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)
    with _tuning.override(direct=dict(run_taps=run_taps,
                                      serial_max_macs=0)):
        runs = check_direct(x, w, b, padding=(1, 1, 1, 1))
    np.testing.assert_array_equal(runs, single)


def test_filter_bound_layers_run_all_of_an_image_in_one_task():
    tuning = _tuning.DirectTuning(run_taps=2048, max_run_columns=64,
                                  filter_bound_bytes=1000)
    # filters over the bound, input within it: all 7 column tiles at once
    assert direct.run_columns(2304, 7, 64, tuning, filter_bytes=1001,
                              input_bytes=1000) == 7
    # either side of the bound the other way: runs by taps (2048 // 2304)
    assert direct.run_columns(2304, 7, 64, tuning, filter_bytes=1000,
                              input_bytes=10) == 1
    assert direct.run_columns(2304, 7, 64, tuning, filter_bytes=10**6,
                              input_bytes=1001) == 1


@over_dtypes
@pytest.mark.parametrize("hw", [14, 13, 6])
@pytest.mark.parametrize("long_runs", [False, True])
def test_partial_last_tile_of_each_plane(dtype, hw, long_runs):
    # 3x3 pad 1 on hw^2: hw (hw + 2) virtual outputs per plane; on
    # AVX-512 in float32 (64-lane tiles) the last tile's outputs fit in
    # half a tile on 14^2 (224 = 3 x 64 + 32) and 13^2 (195), not on 6^2
    # (48); other widths end elsewhere.  Channel blocks of 6 and 5 (or 4,
    # 4, 3), two images; runs of one tile or of the whole image.
    rng = np.random.default_rng(hw)
    x, w, b = random_problem(rng, (2, 5, hw, hw), (11, 5, 3, 3), dtype)
    bound = 0 if long_runs else 1 << 40
    with _tuning.override(direct=dict(filter_bound_bytes=bound,
                                      serial_max_macs=0)):
        check_direct(x, w, b, padding=(1, 1, 1, 1))


@pytest.mark.parametrize("remaining", [1, 7, 8, 9, 15, 16, 17, 31, 32, 33,
                                       64, 1000])
def test_tile_vectors_cover_the_remaining_outputs(remaining):
    lanes = 8
    vectors = direct.tile_vectors(False, remaining, lanes)
    assert vectors * lanes >= min(remaining, direct.TILE_VECTORS * lanes)
    assert vectors == (direct.HALF_VECTORS
                       if remaining <= direct.HALF_VECTORS * lanes
                       else direct.TILE_VECTORS)
    assert direct.tile_vectors(True, remaining, lanes) == 1


def test_column_runs_shrink_to_keep_every_thread_busy():
    tuning = _tuning.DirectTuning(run_taps=2048, max_run_columns=64)
    threads = _tuning.block_shape_threads()
    assert direct.run_columns(9, 1000, 64, tuning) == 64
    assert direct.run_columns(576, 1000, 64, tuning) == 3
    assert direct.run_columns(4096, 1000, 64, tuning) == 1
    # one image, one block: runs are cut (halved) until there are four
    # tasks a thread
    run = direct.run_columns(9, 64, 1, tuning)
    assert run == 1 or -(-64 // run) >= 4 * threads
    assert 2 * run > 64 or -(-64 // (2 * run)) < 4 * threads
