"""im2col + GEMM convolution (kernels/cpu/im2col.py) and the thread-pool guard.

Every result is compared with ``reference.conv2d`` (float64) under the
documented bound ``kernels.accuracy.error_bound("im2col", ...)``.  Asymmetric
zero padding is checked through the identity "zero-padding x then a valid
convolution", with the padding done by ``np.pad``.  The chunking plan is
checked for its defining property (every output position computed exactly
once within the scratch limit), the gather stage against a patch matrix
built with ``np.pad`` and slicing, and the memory bound with ``tracemalloc``
(which sees NumPy's allocations).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
import reference
from kernels import _threads
from kernels._dispatch import ConvSpec
from kernels.accuracy import error_bound
from kernels.cpu import _panel_gemm, _tuning, im2col

REPO_ROOT = Path(__file__).resolve().parent.parent
DTYPES = (np.float32, np.float64)
over_dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def packing(from_images):
    """im2col's GEMM packs its panels from the images (stride 1, the
    default) or multiplies gathered patches: both paths on demand."""
    return _tuning.override(im2col=dict(pack_from_image=from_images))


PACKINGS = pytest.mark.parametrize("from_images", [True, False],
                                   ids=["from-images", "gathered"])


@contextlib.contextmanager
def scratch_limit(nbytes):
    previous = im2col.set_scratch_limit(nbytes)
    try:
        yield
    finally:
        im2col.set_scratch_limit(previous)


def random_problem(rng, x_shape, w_shape, dtype, bias=True):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


def reference_and_scale(x, w, bias, stride, padding, dilation, groups):
    """(y_ref, |x| * |w| + |bias|) in float64 for (top, bottom, left, right)
    zero padding, via np.pad and a valid reference convolution."""
    top, bottom, left, right = padding
    width = [(0, 0), (0, 0), (top, bottom), (left, right)]
    xp = np.pad(x.astype(np.float64), width)
    kw = dict(stride=stride, padding=0, dilation=dilation, groups=groups)
    y_ref = reference.conv2d(xp, w.astype(np.float64),
                             None if bias is None else bias.astype(np.float64), **kw)
    scale = reference.conv2d(np.abs(xp), np.abs(w.astype(np.float64)),
                             None if bias is None else np.abs(bias.astype(np.float64)),
                             **kw)
    return y_ref, scale


def check_conv(x, w, bias, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1),
               groups=1):
    """im2col.conv2d within the documented bound of the reference; contract."""
    x_before, w_before = x.copy(), w.copy()
    y = im2col.conv2d(x, w, bias, stride, padding, dilation, groups)
    np.testing.assert_array_equal(x, x_before)   # inputs never modified
    np.testing.assert_array_equal(w, w_before)
    y_ref, scale = reference_and_scale(x, w, bias, stride, padding, dilation, groups)
    assert y.shape == y_ref.shape
    assert y.dtype == x.dtype
    assert y.flags.c_contiguous
    err = np.abs(y.astype(np.float64) - y_ref)
    allowed = error_bound("im2col", x.dtype, scale)
    worst = np.unravel_index(np.argmax(err - allowed), err.shape)
    assert (err <= allowed).all(), (
        f"error {err[worst]:.3g} > bound {allowed[worst]:.3g} at {worst}; "
        f"x {x.shape} w {w.shape} stride {stride} padding {padding} "
        f"dilation {dilation} groups {groups} dtype {x.dtype}")
    return y


def naive_patches(x, n0, n1, p0, p1, kh, kw, stride, padding, dilation, wo):
    """The patch matrix from np.pad and slicing (independent of the kernel)."""
    sh, sw = stride
    top, bottom, left, right = padding
    dh, dw = dilation
    xp = np.pad(x, [(0, 0), (0, 0), (top, bottom), (left, right)])
    c = x.shape[1]
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    rows = []
    for ch in range(c):
        for i in range(kh):
            for j in range(kw):
                tap = xp[n0:n1, ch, i * dh::sh, j * dw::sw][:, :ho, :wo]
                rows.append(tap.reshape(n1 - n0, ho * wo)[:, p0:p1].ravel())
    return np.array(rows)


# --------------------------------------------------------------------------
# Configurations against the reference
# --------------------------------------------------------------------------

CASES = {
    # name: (x_shape, w_shape, stride, padding, dilation, groups)
    "3x3 pad 1": ((2, 3, 9, 10), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "groups 2": ((2, 4, 8, 7), (6, 2, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
    "depthwise": ((2, 5, 8, 8), (10, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 5),
    "stride 2": ((2, 3, 11, 9), (4, 3, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "stride (3, 2)": ((1, 2, 13, 12), (3, 2, 4, 3), (3, 2), (0, 0, 0, 0), (1, 1), 1),
    "dilation (2, 3)": ((2, 2, 12, 13), (3, 2, 3, 3), (1, 1), (2, 2, 3, 3), (2, 3), 1),
    "stride and dilation": ((1, 3, 15, 14), (2, 3, 3, 2), (2, 3), (1, 0, 2, 1), (2, 2), 1),
    "asymmetric padding": ((2, 3, 7, 8), (4, 3, 3, 4), (1, 1), (0, 2, 3, 1), (1, 1), 1),
    "padding wider than kernel": ((1, 2, 4, 5), (3, 2, 2, 2), (1, 1), (3, 1, 0, 4), (1, 1), 1),
    "kernel covers input": ((2, 2, 5, 4), (3, 2, 5, 4), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "7x7 stride 2 pad 3": ((1, 3, 16, 16), (4, 3, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),
    # 1x1 on maps below Im2colTuning.merge_below_positions (512): images
    # merged into one GEMM; at or above it: x itself is the patch matrix.
    "1x1 pointwise": ((3, 6, 5, 7), (4, 6, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "1x1 pointwise groups": ((2, 6, 5, 4), (9, 2, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 3),
    "1x1 fully connected": ((9, 6, 1, 1), (4, 6, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "1x1 pointwise large map": ((2, 6, 24, 23), (4, 6, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "1x1 pointwise large map groups": ((2, 6, 23, 24), (9, 2, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 3),
    "1x1 stride 2": ((2, 4, 7, 6), (3, 4, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    "1x1 padded": ((2, 4, 5, 6), (3, 4, 1, 1), (1, 1), (1, 0, 0, 2), (1, 1), 1),
    "1-D (H=1)": ((2, 3, 1, 301), (4, 3, 1, 17), (1, 1), (0, 0, 8, 8), (1, 1), 1),
    "1-D strided dilated": ((1, 2, 1, 400), (3, 2, 1, 9), (1, 3), (0, 0, 5, 2), (1, 4), 1),
    "1-D single channel long kernel": ((1, 1, 1, 2000), (2, 1, 1, 63), (1, 1), (0, 0, 31, 31), (1, 1), 1),
}


@PACKINGS
@over_dtypes
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_matches_reference(case, bias, dtype, from_images):
    x_shape, w_shape, stride, padding, dilation, groups = CASES[case]
    x, w, b = random_problem(np.random.default_rng(len(case)), x_shape, w_shape,
                             dtype, bias)
    with packing(from_images):
        check_conv(x, w, b, stride, padding, dilation, groups)


@settings(deadline=None)
@given(data=st.data())
def test_packing_from_the_images_gives_the_gathered_bits(data):
    """At stride 1 the GEMM's jobs copy their panels from the (padded)
    images instead of a gathered patch matrix: the same panels, so the
    same bits, on one image, on images merged into one GEMM (runs across
    image boundaries), 1x1 layers (rows a plane apart) and any padding,
    dilation and groups; within the bound of the reference."""
    draw = data.draw
    groups, c, k, kh, kw, dh, dw, _, _ = _draw_layer(draw, 4, 3)
    pads = tuple(draw(st.integers(0, 3), label=f"pad{i}") for i in range(4))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[1]), 30),
             label="H")
    wd = draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[2] - pads[3]), 40),
              label="W")
    n = draw(st.integers(1, 4), label="N")
    dtype = draw(st.sampled_from(DTYPES), label="dtype")
    x, w, b = random_problem(np.random.default_rng(draw(st.integers(0, 2**32 - 1),
                                                        label="seed")),
                             (n, c, h, wd), (k, c // groups, kh, kw), dtype,
                             draw(st.booleans(), label="bias"))
    if draw(st.booleans(), label="read-only x"):
        x.setflags(write=False)
    args = ((1, 1), pads, (dh, dw), groups)
    with packing(True):
        packed = check_conv(x, w, b, *args)
    with packing(False):
        gathered = im2col.conv2d(x, w, b, *args)
    np.testing.assert_array_equal(packed, gathered)


def _draw_layer(draw, max_k_per_group, max_dilation):
    """(groups, C, K, kH, kW, dh, dw, sh, sw) of a random layer."""
    groups = draw(st.integers(1, 3), label="groups")
    c = groups * draw(st.integers(1, 3), label="C/groups")
    k = groups * draw(st.integers(1, max_k_per_group), label="K/groups")
    kh, kw = draw(st.integers(1, 4), label="kH"), draw(st.integers(1, 4), label="kW")
    dh = draw(st.integers(1, max_dilation), label="dh")
    dw = draw(st.integers(1, max_dilation), label="dw")
    sh, sw = draw(st.integers(1, 3), label="sh"), draw(st.integers(1, 3), label="sw")
    return groups, c, k, kh, kw, dh, dw, sh, sw


def _window_problem(draw):
    """An unpadded convolution and a window of its output rows and
    columns, with the input window those outputs read."""
    groups, c, k, kh, kw, dh, dw, sh, sw = _draw_layer(draw, 9, 2)
    h = draw(st.integers(dh * (kh - 1) + 1, 30), label="H")
    wd = draw(st.integers(dw * (kw - 1) + 1, 40), label="W")
    n = draw(st.integers(1, 3), label="N")
    ho = (h - dh * (kh - 1) - 1) // sh + 1
    wo = (wd - dw * (kw - 1) - 1) // sw + 1
    r0 = draw(st.integers(0, ho - 1), label="r0")
    r1 = draw(st.integers(r0 + 1, ho), label="r1")
    c0 = draw(st.integers(0, wo - 1), label="c0")
    c1 = draw(st.integers(c0 + 1, wo), label="c1")
    dtype = draw(st.sampled_from(DTYPES), label="dtype")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    x, w, b = random_problem(np.random.default_rng(seed), (n, c, h, wd),
                             (k, c // groups, kh, kw), dtype, draw(st.booleans()))
    window = x[:, :, r0 * sh:(r1 - 1) * sh + dh * (kh - 1) + 1,
               c0 * sw:(c1 - 1) * sw + dw * (kw - 1) + 1]
    return x, w, b, (sh, sw), (dh, dw), groups, window, (r0, r1, c0, c1)


@settings(deadline=None)
@given(data=st.data())
def test_a_window_of_the_image_gives_the_same_bits(data):
    """Each output is one multiply-add chain in a fixed order, wherever it
    lies in the GEMM: im2col on the input window of some output rows and
    columns equals those outputs of the whole image bit for bit (what a
    Dask block needs), whatever the chunking of either call."""
    x, w, b, stride, dilation, groups, window, (r0, r1, c0, c1) = \
        _window_problem(data.draw)
    limit = data.draw(st.sampled_from([None, 4096, 1 << 20]), label="limit")
    args = (stride, (0, 0, 0, 0), dilation, groups)
    with packing(data.draw(st.booleans(), label="whole from images")):
        whole = im2col.conv2d(x, w, b, *args)
    with (scratch_limit(limit) if limit else contextlib.nullcontext()), \
            packing(data.draw(st.booleans(), label="window from images")):
        part = im2col.conv2d(np.ascontiguousarray(window), w, b, *args)
    np.testing.assert_array_equal(part, whole[:, :, r0:r1, c0:c1])


@pytest.mark.parametrize("shape,w_shape", [
    ((4, 16, 15, 17), (13, 16, 3, 3)),       # images apart (cache-sized chunks)
    ((8, 32, 7, 7), (64, 32, 3, 3)),         # images merged into one GEMM
    ((3, 24, 20, 20), (40, 24, 1, 1)),       # 1x1
])
def test_results_do_not_depend_on_the_thread_count_or_the_chunks(shape, w_shape):
    import numba
    x, w, b = random_problem(np.random.default_rng(12), shape, w_shape,
                             np.float32)
    args = ((1, 1), (1, 1, 1, 1) if w_shape[2] == 3 else (0, 0, 0, 0),
            (1, 1), 1)
    expected = check_conv(x, w, b, *args)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one_thread = im2col.conv2d(x, w, b, *args)
    finally:
        numba.set_num_threads(before)
    with scratch_limit(5000):                # a few columns per chunk
        small_chunks = im2col.conv2d(x, w, b, *args)
    np.testing.assert_array_equal(one_thread, expected)
    np.testing.assert_array_equal(small_chunks, expected)


@settings(deadline=None)
@given(data=st.data())
def test_random_configurations(data):
    """Random shapes, strides, dilations, asymmetric padding, groups and
    scratch limits (down to a single output column per chunk)."""
    draw = data.draw
    groups, c, k, kh, kw, dh, dw, sh, sw = _draw_layer(draw, 3, 3)
    pads = tuple(draw(st.integers(0, 4), label=f"pad{i}") for i in range(4))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[1]), 12), label="H")
    wd = draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[2] - pads[3]), 12), label="W")
    n = draw(st.integers(1, 4), label="N")
    dtype = draw(st.sampled_from(DTYPES), label="dtype")
    limit = draw(st.integers(1, 64 * 1024), label="scratch limit")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    x, w, b = random_problem(np.random.default_rng(seed), (n, c, h, wd),
                             (k, c // groups, kh, kw), dtype, draw(st.booleans()))
    with scratch_limit(limit), packing(draw(st.booleans(), label="from images")):
        check_conv(x, w, b, (sh, sw), pads, (dh, dw), groups)


# --------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------

def chunk_positions(chunks, n_images, positions):
    """Count how often each (image, position) is covered."""
    hits = np.zeros((n_images, positions), dtype=int)
    for n0, n1, p0, p1 in chunks:
        hits[n0:n1, p0:p1] += 1
    return hits


@settings(deadline=None)
@given(n=st.integers(1, 9), positions=st.integers(1, 300),
       column_bytes=st.integers(1, 4000), extra=st.integers(0, 4000),
       limit=st.integers(1, 10**6), merge_below=st.integers(1, 400),
       target=st.integers(1, 10**6), min_columns=st.integers(1, 600))
def test_plan_covers_every_output_once_within_limit(n, positions, column_bytes,
                                                     extra, limit, merge_below,
                                                     target, min_columns):
    merged_bytes = column_bytes + extra
    chunks = im2col.plan_chunks(n, positions, column_bytes, merged_bytes, limit,
                                merge_below, target, min_columns)
    assert (chunk_positions(chunks, n, positions) == 1).all()
    for n0, n1, p0, p1 in chunks:
        if n1 - n0 > 1:   # merged: whole images, patch + GEMM result in limit
            assert (p0, p1) == (0, positions)
            assert positions < merge_below
            assert (n1 - n0) * positions * merged_bytes <= limit
        else:             # at least one column, else within the limit
            assert (p1 - p0) == 1 or (p1 - p0) * column_bytes <= limit


@over_dtypes
def test_chunks_not_aligned_to_rows(dtype):
    """Chunk boundaries fall inside output rows and do not divide Ho."""
    x, w, b = random_problem(np.random.default_rng(1), (2, 3, 9, 11), (4, 3, 3, 3), dtype)
    column = 3 * 9 * np.dtype(dtype).itemsize
    limit = 7 * column                  # 7 positions a chunk; Wo = 11, Ho*Wo = 99
    chunks = im2col.plan_chunks(2, 99, column, column + 4 * x.itemsize, limit)
    assert len(chunks) > 20
    assert any(p0 % 11 for _, _, p0, _ in chunks)
    with scratch_limit(limit):
        check_conv(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1)


@over_dtypes
def test_merged_image_chunks(dtype):
    """Several small images per GEMM, with a last chunk of fewer images."""
    n, c, k = 5, 4, 6
    x, w, b = random_problem(np.random.default_rng(2), (n, c, 5, 6), (k, 2, 3, 3), dtype)
    item = np.dtype(dtype).itemsize
    merged_column = (c * 9 + k) * item
    limit = 2 * 30 * merged_column      # two whole images (30 positions) a chunk
    chunks = im2col.plan_chunks(n, 30, c * 9 * item, merged_column, limit)
    assert max(n1 - n0 for n0, n1, _, _ in chunks) == 2
    assert min(n1 - n0 for n0, n1, _, _ in chunks) == 1
    with scratch_limit(limit):
        check_conv(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 2)


@over_dtypes
def test_cache_sized_chunks(dtype):
    """The preferred (cache-sized) chunk, not the limit, splits the work."""
    x, w, b = random_problem(np.random.default_rng(11), (3, 4, 8, 9), (5, 4, 3, 2),
                             dtype)
    item = np.dtype(dtype).itemsize
    with _tuning.override(im2col=dict(cache_target_bytes=2000,
                                      min_gemm_columns=5)):
        chunks = im2col.plan_chunks(3, 8 * 9, 4 * 6 * item, (4 * 6 + 5) * item,
                                    im2col.get_scratch_limit())
        assert len(chunks) > 6
        check_conv(x, w, b, (1, 1), (1, 1, 0, 1), (1, 1), 1)


def test_one_column_per_chunk():
    """A limit below one patch column still works (one column a chunk)."""
    x, w, b = random_problem(np.random.default_rng(3), (2, 2, 4, 5), (3, 2, 2, 3),
                             np.float64)
    with scratch_limit(1):
        check_conv(x, w, b, (1, 2), (1, 0, 1, 1), (1, 1), 1)


def test_1d_long_signal_is_chunked():
    """Ho = 1: chunks run along the row, so the scratch stays bounded."""
    x, w, b = random_problem(np.random.default_rng(4), (1, 2, 1, 5000), (3, 2, 1, 31),
                             np.float32)
    limit = 2 * 31 * 4 * 500
    chunks = im2col.plan_chunks(1, 5000, 2 * 31 * 4, 2 * 31 * 4 + 12, limit)
    assert len(chunks) >= 10
    with scratch_limit(limit):
        check_conv(x, w, b, (1, 1), (0, 0, 15, 15), (1, 1), 1)


@over_dtypes
@pytest.mark.parametrize("stride,padding,dilation", [
    ((1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 3), (0, 2, 3, 1), (2, 1)),
    ((1, 2), (4, 0, 0, 5), (1, 3)),
])
def test_gather_matches_padded_slices(stride, padding, dilation, dtype):
    """The gather stage alone, on a range of positions of a range of images."""
    x = np.random.default_rng(7).standard_normal((3, 2, 9, 10)).astype(dtype)
    kh, kw = 3, 2
    ho = (9 + padding[0] + padding[1] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (10 + padding[2] + padding[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    for n0, n1, p0, p1 in [(0, 3, 0, ho * wo), (1, 2, 3, ho * wo - 2), (2, 3, 0, 1)]:
        expected = naive_patches(x, n0, n1, p0, p1, kh, kw, stride, padding,
                                 dilation, wo)
        for gather in (im2col.fill_patches, im2col.fill_patches_serial):
            got = np.full(expected.shape, np.nan, dtype=dtype)
            gather(x, n0, n1, p0, p1, kh, kw, *stride, padding[0], padding[2],
                   *dilation, wo, got)
            np.testing.assert_array_equal(got, expected)
        rows, cols = expected.shape
        buffer = np.full(_panel_gemm.buffer_size(rows, cols, dtype), np.nan,
                         dtype=dtype)
        im2col.fill_panels(x, n0, n1, p0, p1, kh, kw, *stride, padding[0],
                           padding[2], *dilation, wo, buffer, rows,
                           _panel_gemm.panel_width(dtype))
        np.testing.assert_array_equal(from_panels(buffer, rows, cols), expected)


def test_a_gather_compiled_for_another_panel_width_raises():
    x = np.zeros((1, 1, 4, 4), np.float32)
    buffer = np.zeros(_panel_gemm.buffer_size(9, 4, np.float32), np.float32)
    with pytest.raises(ValueError, match="stale compiled gather"):
        im2col.fill_panels(x, 0, 1, 0, 4, 3, 3, 1, 1, 0, 0, 1, 1, 2, buffer,
                           9, _panel_gemm.panel_width(np.float32) + 1)


def from_panels(buffer, rows, cols):
    """The (rows, cols) matrix held in panels (layout of fill_panels)."""
    panel = _panel_gemm.panel_width(buffer.dtype)
    n_panels = -(-cols // panel)
    blocks = buffer[:n_panels * rows * panel].reshape(n_panels, rows, panel)
    return np.concatenate(list(blocks), axis=1)[:, :cols]


# --------------------------------------------------------------------------
# Memory bound
# --------------------------------------------------------------------------

def test_scratch_memory_is_bounded():
    """Peak NumPy allocation stays below limit + output + slack, where the
    whole patch matrix would be 38x the limit."""
    x = np.random.default_rng(8).standard_normal((1, 3, 256, 256)).astype(np.float32)
    w = np.random.default_rng(9).standard_normal((4, 3, 7, 7)).astype(np.float32)
    limit = 1 << 20
    full_patch_matrix = 3 * 49 * 256 * 256 * 4
    assert full_patch_matrix > 30 * limit
    output = 4 * 256 * 256 * 4
    slack = 256 * 1024
    im2col.conv2d(x, w, None, (1, 1), (3, 3, 3, 3), (1, 1), 1)   # compile
    with scratch_limit(limit):
        tracemalloc.start()
        try:
            y = im2col.conv2d(x, w, None, (1, 1), (3, 3, 3, 3), (1, 1), 1)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert y.shape == (1, 4, 256, 256)
    assert peak < limit + output + slack, f"peak {peak} bytes"


def test_small_map_1x1_scratch_is_bounded():
    """1x1 layers on small maps run as one GEMM over the batch only when
    its copies of x and y fit the limit; otherwise image by image."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 8, 7, 7)).astype(np.float32)
    w = rng.standard_normal((64, 8, 1, 1)).astype(np.float32)
    limit = 1 << 18
    output = 64 * 64 * 49 * 4
    assert x.nbytes + output > 3 * limit
    slack = 256 * 1024
    args = (None, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    merged = im2col.conv2d(x, w, *args)             # compile; merged path
    with scratch_limit(limit):
        tracemalloc.start()
        try:
            y = im2col.conv2d(x, w, *args)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < limit + output + slack, f"peak {peak} bytes"
    check_conv(x, w, None)
    np.testing.assert_array_equal(y, merged)   # chunking changes no bit


# --------------------------------------------------------------------------
# Non-finite values and the scratch-limit settings
# --------------------------------------------------------------------------

@over_dtypes
def test_nan_and_inf_propagate_like_the_reference(dtype):
    x, w, b = random_problem(np.random.default_rng(10), (1, 2, 8, 9), (3, 2, 3, 3), dtype)
    x[0, 0, 2, 3] = np.nan
    x[0, 1, 6, 7] = np.inf
    args = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    y = im2col.conv2d(x, w, b, *args)
    y_ref, _ = reference_and_scale(x, w, b, *args)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(y_ref))
    assert np.isnan(y).any() and np.isfinite(y).any()


def test_scratch_limit_setting():
    previous = im2col.get_scratch_limit()
    assert im2col.set_scratch_limit(12345) == previous
    assert im2col.get_scratch_limit() == 12345
    im2col.set_scratch_limit(previous)
    for bad, error in [(0, ValueError), (-5, ValueError), (1.5, TypeError),
                       (True, TypeError), ("64M", TypeError)]:
        with pytest.raises(error):
            im2col.set_scratch_limit(bad)
    assert im2col.get_scratch_limit() == previous


@pytest.mark.parametrize("text,nbytes", [
    ("67108864", 67108864), ("64M", 64 << 20), ("64MiB", 64 << 20),
    ("2k", 2048), ("1G", 1 << 30), (" 512 ", 512)])
def test_parse_scratch_env(text, nbytes):
    assert _tuning.parse_nbytes(text) == nbytes


def test_parse_scratch_env_rejects_garbage():
    with pytest.raises(ValueError, match=im2col.SCRATCH_ENV_VAR):
        _tuning.parse_nbytes("lots")


def run_fresh_python(code, env_changes):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT")}
    env.update(env_changes)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_scratch_env_var_read_at_import():
    out = run_fresh_python("""
        from kernels.cpu import im2col
        print(im2col.get_scratch_limit())
        """, {im2col.SCRATCH_ENV_VAR: "3M"})
    assert int(out) == 3 << 20


# --------------------------------------------------------------------------
# Thread-pool guard (kernels/_threads.py), in fresh processes
# --------------------------------------------------------------------------

_NUMBA_FIRST = """
    import numpy as np
    from numba import njit, prange
    @njit(parallel=True)
    def touch(a):
        for i in prange(a.size):
            a[i] += 1
    touch(np.zeros(8))
"""

_TORCH_FIRST = """
    import torch
    torch.ones(2) + 1
"""

_REPORT = """
    import os
    import kernels
    from kernels import _threads
    d = _threads.describe()
    print(os.environ.get("OMP_WAIT_POLICY"), d["threading_layer"],
          d["prange_beside_blas_is_safe"])
"""


def _has_torch():
    try:
        import importlib.util
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


@pytest.mark.parametrize("prelude,env,safe", [
    ("", {}, True),                                        # package default
    ("", {"OMP_WAIT_POLICY": "ACTIVE"}, False),            # user asked to spin
    ("", {"OMP_WAIT_POLICY": "passive"}, True),
    (_NUMBA_FIRST, {}, False),                             # runtime loaded first
    (_NUMBA_FIRST, {"OMP_WAIT_POLICY": "PASSIVE"}, True),
    pytest.param(_TORCH_FIRST, {}, False, marks=pytest.mark.skipif(
        not _has_torch(), reason="torch not installed")),
], ids=["default", "active", "passive-lowercase", "numba-first",
        "numba-first-passive", "torch-first"])
def test_thread_guard_detects_spinning_openmp(prelude, env, safe):
    out = run_fresh_python(textwrap.dedent(prelude) + textwrap.dedent(_REPORT), env)
    policy, layer, is_safe = out.split()
    if layer != "omp":
        pytest.skip(f"Numba threading layer is {layer!r}: no OpenMP wait policy")
    assert is_safe == str(safe)
    if not prelude and not env:
        assert policy == "PASSIVE"


@pytest.mark.parametrize("env,expected", [
    ({}, str(_threads._SPINCOUNT)),                    # ours, with PASSIVE
    ({"GOMP_SPINCOUNT": "77"}, "77"),                  # the user's value
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "None"),           # the user's policy whole
], ids=["default", "user-spincount", "user-policy"])
def test_import_sets_spin_count_only_with_its_own_policy(env, expected):
    out = run_fresh_python("""
        import os
        import kernels
        print(os.environ.get("GOMP_SPINCOUNT"))
        """, env)
    assert out == expected


def test_force_override_validates():
    with pytest.raises(ValueError):
        _threads.force_prange_beside_blas("yes")
    previous = _threads.force_prange_beside_blas(False)
    try:
        assert _threads.prange_beside_blas_is_safe() is False
    finally:
        _threads.force_prange_beside_blas(previous)


# --------------------------------------------------------------------------
# The GEMM (kernels/cpu/_panel_gemm.py)
# --------------------------------------------------------------------------

def to_panels(b):
    """(G, D, N) as the 1-D panel buffer the GEMM reads (independent of
    the gather): zero past N."""
    groups, depth, cols = b.shape
    panel = _panel_gemm.panel_width(b.dtype)
    n_panels = -(-cols // panel)
    padded = np.zeros((groups * depth, n_panels * panel), b.dtype)
    padded[:, :cols] = b.reshape(groups * depth, cols)
    return np.ascontiguousarray(
        padded.reshape(groups * depth, n_panels, panel).transpose(1, 0, 2)
    ).reshape(-1)


@settings(deadline=None)
@given(groups=st.integers(1, 3), m=st.integers(1, 15), depth=st.integers(1, 300),
       cols=st.integers(1, 150), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_panel_gemm_is_a_dot_product_in_one_order(groups, m, depth, cols, dtype,
                                                  seed, data):
    """Within the dot product's bound of the float64 product, and each
    output independent of the other rows and columns in the call: a row
    alone, or a window of columns alone, gives the same bits."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((groups, m, depth)).astype(dtype)
    b = rng.standard_normal((groups, depth, cols)).astype(dtype)
    # out as a column slice of a wider array, as im2col writes into y.
    wide = np.full((groups, m, cols + 5), np.nan, dtype)
    out = _panel_gemm.matmul(a, to_panels(b), cols, wide[:, :, 2:cols + 2])
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    scale = np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    u = np.finfo(dtype).eps / 2
    assert (np.abs(out - exact) <= depth * u * scale * (1 + 1e-6)).all()
    assert np.isnan(wide[:, :, :2]).all() and np.isnan(wide[:, :, cols + 2:]).all()
    row = data.draw(st.integers(0, m - 1), label="row")
    one_row = np.empty((groups, 1, cols), dtype)
    _panel_gemm.matmul(np.ascontiguousarray(a[:, row:row + 1]), to_panels(b),
                       cols, one_row)
    np.testing.assert_array_equal(one_row[:, 0], out[:, row])
    c0 = data.draw(st.integers(0, cols - 1), label="c0")
    c1 = data.draw(st.integers(c0 + 1, cols), label="c1")
    window = np.empty((groups, m, c1 - c0), dtype)
    _panel_gemm.matmul(a, to_panels(np.ascontiguousarray(b[:, :, c0:c1])),
                       c1 - c0, window)
    np.testing.assert_array_equal(window, out[:, :, c0:c1])


@settings(deadline=None, max_examples=25)
@given(groups=st.integers(1, 2), m=st.integers(1, 13), depth=st.integers(1, 200),
       cols=st.integers(1, 70), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**32 - 1))
def test_panel_gemm_one_block_path_sums_as_the_blocked_path(
        groups, m, depth, cols, dtype, seed):
    """A reduction of one block goes straight from a one-tile buffer to
    ``out``; cut into 8-step blocks it goes through the job's
    accumulators.  Both must be the same chain of multiply-adds."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((groups, m, depth)).astype(dtype)
    b = to_panels(rng.standard_normal((groups, depth, cols)).astype(dtype))
    one_block = _panel_gemm.matmul(a, b, cols, np.empty((groups, m, cols), dtype))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_panel_gemm, "_MIN_DEPTH_BLOCK", 8)
        patch.setattr(_panel_gemm, "_B_BLOCK_BYTES", 1)
        blocked = _panel_gemm.matmul(a, b, cols, np.empty((groups, m, cols), dtype))
    np.testing.assert_array_equal(one_block, blocked)


@settings(deadline=None, max_examples=40)
@given(groups=st.integers(1, 2), m=st.integers(1, 13), depth=st.integers(1, 40),
       cols=st.integers(1, 70), extra=st.integers(0, 20),
       offset=st.integers(0, 9), small_blocks=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_panel_gemm_from_rows_sums_as_from_panels(groups, m, depth, cols, extra,
                                                  offset, small_blocks, dtype,
                                                  seed):
    """matmul_rows packs B's panels from a row-major matrix (a 1x1
    layer's image: rows ``ld`` apart, a window of columns) inside the
    GEMM's jobs; it must give the bits of matmul over the same B in
    panels, on the one-block and the blocked path, and leave the columns
    of ``out`` outside its slice alone."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((groups, m, depth)).astype(dtype)
    ld = cols + extra
    flat = rng.standard_normal(offset + groups * depth * ld).astype(dtype)
    b = flat[offset:].reshape(groups, depth, ld)[:, :, :cols]
    with pytest.MonkeyPatch.context() as patch:
        if small_blocks:
            patch.setattr(_panel_gemm, "_MIN_DEPTH_BLOCK", 8)
            patch.setattr(_panel_gemm, "_B_BLOCK_BYTES", 1)
        from_panels = _panel_gemm.matmul(a, to_panels(np.ascontiguousarray(b)),
                                         cols, np.empty((groups, m, cols), dtype))
        wide = np.full((groups, m, cols + 3), np.nan, dtype)
        from_rows = _panel_gemm.matmul_rows(a, flat, offset, ld, cols,
                                            wide[:, :, 1:cols + 1])
    np.testing.assert_array_equal(from_rows, from_panels)
    assert np.isnan(wide[:, :, 0]).all() and np.isnan(wide[:, :, cols + 1:]).all()
    np.testing.assert_array_equal(flat[offset:].reshape(groups, depth, ld)[:, :, :cols], b)


@settings(deadline=None, max_examples=60)
@given(data=st.data(), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**32 - 1))
def test_panel_gemm_from_an_image_sums_as_from_panels(data, dtype, seed):
    """matmul_image packs B's panels from an image inside the GEMM's jobs:
    B's element (r, c) at ``src[row(r) + o(c)]``, ``row`` a table or a
    constant step, ``o`` walking output rows of ``width`` columns (images
    ``image_stride`` apart, rows ``pitch`` apart, columns ``step``
    apart) from position ``first``; panels span row and image
    boundaries.  It must give the bits of matmul over the same B (built
    here with NumPy indexing) in panels, on the one-block and the blocked
    path, within the dot product's bound of the float64 product, and
    leave the columns of ``out`` outside its slice alone."""
    draw = data.draw
    rng = np.random.default_rng(seed)
    groups = draw(st.integers(1, 2), label="groups")
    m = draw(st.integers(1, 13), label="M")
    depth = draw(st.integers(1, 40), label="depth")
    images = draw(st.integers(1, 3), label="images")
    rows = draw(st.integers(1, 4), label="rows")
    width = draw(st.integers(1, 40), label="width")
    step = draw(st.integers(1, 2), label="step")
    pitch = width * step + draw(st.integers(0, 5), label="pitch pad")
    image_stride = rows * pitch + draw(st.integers(0, 7), label="image pad")
    positions = rows * width
    first = draw(st.integers(0, images * positions - 1), label="first")
    cols = draw(st.integers(1, images * positions - first), label="cols")
    base = draw(st.integers(0, 9), label="base")
    span = (base + (images - 1) * image_stride + (rows - 1) * pitch
            + (width - 1) * step + 1)
    if draw(st.booleans(), label="row table"):
        row_offsets = rng.integers(0, 3 * span, groups * depth).astype(np.int64)
        row_step, row_of = 0, row_offsets
    else:
        row_step = span + draw(st.integers(0, 5), label="row step pad")
        row_offsets = _panel_gemm.NO_OFFSETS
        row_of = np.arange(groups * depth) * row_step
    src = rng.standard_normal(int(row_of.max()) + span + 2).astype(dtype)
    q = first + np.arange(cols)
    image, p = np.divmod(q, positions)
    ho, wo = np.divmod(p, width)
    col_of = base + image * image_stride + ho * pitch + wo * step
    b = src[row_of[:, None] + col_of[None, :]].reshape(groups, depth, cols)
    a = rng.standard_normal((groups, m, depth)).astype(dtype)
    geom = _panel_gemm.image_geometry(base, first, rows, width, image_stride,
                                      pitch, step, row_step)
    src_before = src.copy()
    with pytest.MonkeyPatch.context() as patch:
        if draw(st.booleans(), label="small blocks"):
            patch.setattr(_panel_gemm, "_MIN_DEPTH_BLOCK", 8)
            patch.setattr(_panel_gemm, "_B_BLOCK_BYTES", 1)
        from_panels = _panel_gemm.matmul(a, to_panels(b), cols,
                                         np.empty((groups, m, cols), dtype))
        wide = np.full((groups, m, cols + 3), np.nan, dtype)
        from_image = _panel_gemm.matmul_image(a, src, row_offsets, geom, cols,
                                              wide[:, :, 1:cols + 1])
    np.testing.assert_array_equal(from_image, from_panels)
    assert np.isnan(wide[:, :, 0]).all() and np.isnan(wide[:, :, cols + 1:]).all()
    np.testing.assert_array_equal(src, src_before)
    exact = np.matmul(a.astype(np.float64), b.astype(np.float64))
    scale = np.matmul(np.abs(a).astype(np.float64), np.abs(b).astype(np.float64))
    u = np.finfo(dtype).eps / 2
    assert (np.abs(from_image - exact) <= depth * u * scale * (1 + 1e-6)).all()


def test_panel_gemm_from_an_image_refuses_what_it_cannot_read():
    a = np.ones((1, 2, 3), np.float32)
    out = np.empty((1, 2, 4), np.float32)
    src = np.ones(64, np.float32)
    geom = _panel_gemm.image_geometry(0, 0, 1, 4, 0, 4, 1)
    with pytest.raises(ValueError, match="src must be float32"):
        _panel_gemm.matmul_image(a, src.astype(np.float64),
                                 np.zeros(3, np.int64), geom, 4, out)
    with pytest.raises(ValueError, match="row_offsets must hold 3"):
        _panel_gemm.matmul_image(a, src, np.zeros(2, np.int64), geom, 4, out)
    with pytest.raises(ValueError, match="image_geometry"):
        _panel_gemm.matmul_image(a, src, np.zeros(3, np.int64), geom[:5], 4,
                                 out)
    _panel_gemm.matmul_image(a, src, np.array([0, 8, 16]), geom, 4, out)
    np.testing.assert_array_equal(out, 3)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("b_weight", [1, 3])
def test_job_split_divides_among_the_threads(threads, b_weight):
    """Jobs: runs of tiles within the block of A, at least the wanted
    count where the problem has it, and a multiple of the threads where
    one exists in the search (prange gives each thread an equal run of
    jobs; 7 jobs on two threads left one with 14 % more work)."""
    depth_block, itemsize = 256, 4
    per_block = _panel_gemm._A_BLOCK_BYTES // (
        depth_block * _panel_gemm.TILE_ROWS * itemsize)
    for groups, n_tiles, panels, cols in [
            (1, 22, 49, 784), (1, 43, 13, 196), (1, 86, 13, 196),
            (1, 342, 4, 49), (1, 86, 4, 49), (1, 171, 13, 196),
            (3, 2, 5, 70), (1, 1, 1, 5), (1, 3, 1, 16), (2, 11, 196, 3136)]:
        t_jobs, p_jobs = _panel_gemm._job_split(
            groups, n_tiles, panels, depth_block, itemsize, threads, cols,
            b_weight)
        assert -(-n_tiles // per_block) <= t_jobs <= n_tiles
        assert 1 <= p_jobs <= panels
        jobs = groups * t_jobs * p_jobs
        per_thread = (_panel_gemm._JOBS_PER_THREAD if b_weight == 1
                      else _panel_gemm._JOBS_PER_THREAD_PACKING)
        wanted = min(per_thread * threads, groups * n_tiles * panels)
        assert jobs >= wanted or (t_jobs == -(-n_tiles // per_block)
                                  and p_jobs == panels)
        divisible = any(
            groups * t * p % threads == 0 and groups * t * p >= wanted
            for t in range(-(-n_tiles // per_block),
                           min(n_tiles, -(-n_tiles // per_block) + wanted) + 1)
            for p in range(1, min(panels, wanted) + 1))
        assert jobs % threads == 0 or not divisible


def test_job_split_packing_b_takes_one_job_a_thread():
    """Jobs that pack B from rows split no further than one a thread
    where that keeps the threads' shares equal: 2048 -> 512 @ 7^2 (86 row
    tiles, one panel) ran 1.13-1.30x faster cold in two runs of tiles
    than in eight, each of which packed all of B.  Jobs reading packed
    panels keep four a thread."""
    depth_block = 128
    assert _panel_gemm._job_split(1, 86, 1, depth_block, 4, 2, 49, 3) == (2, 1)
    assert _panel_gemm._job_split(1, 43, 4, depth_block, 4, 2, 196, 3) == (1, 2)
    assert _panel_gemm._job_split(1, 86, 1, depth_block, 4, 2, 49, 1) == (8, 1)


def test_panel_gemm_from_rows_refuses_rows_that_do_not_hold_b():
    a = np.ones((1, 4, 3), np.float32)
    out = np.empty((1, 4, 5), np.float32)
    with pytest.raises(ValueError, match="rows does not hold 3 rows of 5"):
        _panel_gemm.matmul_rows(a, np.ones(14, np.float32), 0, 5, 5, out)
    with pytest.raises(ValueError, match="rows does not hold"):
        _panel_gemm.matmul_rows(a, np.ones(15, np.float32), 0, 4, 5, out)
    with pytest.raises(ValueError, match="rows does not hold"):
        _panel_gemm.matmul_rows(a, np.ones(15, np.float64), 0, 5, 5, out)
    _panel_gemm.matmul_rows(a, np.ones(15, np.float32), 0, 5, 5, out)
    np.testing.assert_array_equal(out, 3)


@pytest.mark.parametrize("writeable", [True, False])
def test_pointwise_im2col_reads_the_image_in_place_or_gathers(writeable):
    """A 1x1 stride-1 layer multiplies straight from x (x read-only: from
    a copy), or from gathered patches: the reference's result within the
    bound, and x untouched."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 20, 9, 7)).astype(np.float32)
    w = rng.standard_normal((13, 20, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(13).astype(np.float32)
    x.setflags(write=writeable)
    check_conv(x, w, bias)
    # a window of positions of one image (several chunks) reads x at an offset
    with pytest.MonkeyPatch.context() as patch, packing(False):
        patch.setattr(im2col, "plan_chunks", lambda n, positions, *a, **k: [
            im2col.Chunk(i, i + 1, p0, min(positions, p0 + 10))
            for i in range(n) for p0 in range(0, positions, 10)])
        check_conv(x, w, bias)


@pytest.mark.parametrize("shape", [(1, 3, 6, 6), (3, 3, 4, 4)])   # one image; merged images
@pytest.mark.parametrize("kernel", [1, 3])
def test_bias_on_overflowing_sums_gives_nan_and_inf_without_warnings(shape, kernel):
    """inf + (-inf) bias is NaN and a finite bias on an overflowing sum is
    inf, as in torch, with NumPy's error state left alone and no
    RuntimeWarning (only the bias add is NumPy arithmetic)."""
    x = np.full(shape, 3e38, np.float32)
    w = np.ones((2, 3, kernel, kernel), np.float32)
    bias = np.array([-np.inf, 1.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = kernels.conv2d(x, w, bias, algorithm="im2col")
    assert np.isnan(y[:, 0]).all()
    assert np.isposinf(y[:, 1]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, c, k, h, w, groups, with_bias", [
    (1, 64, 256, 56, 56, 1, False),    # one call, many panels
    (1, 2048, 512, 7, 7, 1, True),     # one panel, deep
    (3, 32, 48, 24, 24, 1, True),      # one call per image
    (2, 64, 32, 20, 30, 2, True),      # groups
    (1, 16, 8, 1, 70000, 1, False),    # a long image in chunks
])
def test_pointwise_calls_kept_give_the_general_paths_bits(
        monkeypatch, dtype, n, c, k, h, w, groups, with_bias):
    """A 1x1 layer through its kept GEMM calls (im2col._pointwise_calls)
    equals, bit for bit, the general path that works them out on every
    call (the kept calls switched off)."""
    rng = np.random.default_rng(41)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, 1, 1)).astype(dtype)
    bias = rng.standard_normal(k).astype(dtype) if with_bias else None
    spec = ConvSpec(x.shape, wt.shape, (1, 1), (0, 0, 0, 0), (1, 1), groups,
                    x.dtype)
    tuning = _tuning.current().im2col
    assert im2col._pointwise_calls(spec.x_shape, spec.w_shape, groups, x.dtype,
                                   tuning, _tuning.block_shape_threads())
    kept = im2col._run(spec, x, wt, bias)
    monkeypatch.setattr(im2col, "_pointwise_calls", lambda *args: None)
    np.testing.assert_array_equal(kept, im2col._run(spec, x, wt, bias))


def test_pointwise_calls_leave_merged_images_to_the_general_path():
    """Small images merge into one GEMM whose result is transposed into
    y: no kept calls there."""
    tuning = _tuning.current().im2col
    threads = _tuning.block_shape_threads()
    assert im2col._pointwise_calls((4, 2048, 7, 7), (512, 2048, 1, 1), 1,
                                   np.dtype(np.float32), tuning,
                                   threads) is None
    assert im2col._pointwise_calls((1, 2048, 7, 7), (512, 2048, 1, 1), 1,
                                   np.dtype(np.float32), tuning,
                                   threads) is not None
