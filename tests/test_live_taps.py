"""Kernel taps that only ever meet the zero padding are left out.

``ConvSpec.live_taps`` gives the problem over the kernel rows and
columns that meet the input; ``conv1d``/``conv2d`` compute it when the
filter is finite (``kernels/_conv.py``).  The outputs are held to the
float64 reference over the whole kernel (not to the same kernel), NaN
and Inf in a left-out tap must still reach every output as in the
reference, and the choice of ``algorithm="auto"`` is the one for the
live taps.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import kernels
from kernels import _dispatch
from kernels._dispatch import ConvSpec

from helpers import (assert_within_bound, kernel_shapes_run, normalised_config,
                     random_array, supports)

CPU_ALGORITHMS = ("auto", "direct", "im2col", "winograd", "fft")


def spec_of(x_shape, w_shape, stride=(1, 1), padding=(0, 0, 0, 0),
            dilation=(1, 1), groups=1):
    return ConvSpec.from_config(x_shape, w_shape, stride, padding, dilation,
                                groups)


def test_a_one_row_image_keeps_the_middle_kernel_row():
    spec = spec_of((1, 32, 1, 100), (32, 32, 9, 9), padding=(4, 4, 4, 4))
    taps, live = spec.live_taps
    assert taps == ((4, 4), (0, 8))
    assert live.w_shape == (32, 32, 1, 9)
    assert live.padding == (0, 0, 4, 4)
    assert live.out_hw == spec.out_hw == (1, 100)


def test_layers_whose_taps_all_meet_the_input_are_left_alone():
    assert spec_of((1, 64, 56, 56), (64, 64, 3, 3),
                   padding=(1, 1, 1, 1)).live_taps is None
    # every tap meets the input at some output, even on a 2 x 2 map
    assert spec_of((1, 8, 2, 2), (8, 8, 3, 3),
                   padding=(1, 1, 1, 1)).live_taps is None
    # no tap meets it: every output is the bias, nothing to crop
    assert spec_of((1, 1, 1, 1), (1, 1, 1, 2), padding=(0, 0, 2, 2),
                   dilation=(1, 3)).live_taps is None


def test_dilated_taps_beyond_a_small_map():
    # ASPP-like: 3 x 3 at dilation 24 on a 16 x 16 map, padding 24: only
    # the centre tap meets the input
    spec = spec_of((1, 8, 16, 16), (8, 8, 3, 3), padding=(24,) * 4,
                   dilation=(24, 24))
    taps, live = spec.live_taps
    assert taps == ((1, 1), (1, 1))
    assert live.w_shape[2:] == (1, 1) and live.padding == (0, 0, 0, 0)


@st.composite
def padded_problems(draw):
    """Small inputs under large, padded, dilated kernels: taps that only
    meet the padding are common."""
    nsp = draw(st.sampled_from((1, 2)))
    dims = []
    for _ in range(nsp):
        n = draw(st.integers(1, 6))
        k = draw(st.integers(1, 7))
        d = draw(st.integers(1, 3))
        lo, hi = draw(st.integers(0, 8)), draw(st.integers(0, 8))
        s = draw(st.integers(1, 3))
        assume(n + lo + hi >= d * (k - 1) + 1)
        dims.append((n, k, d, lo, hi, s))
    groups = draw(st.sampled_from((1, 2)))
    cg, kg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return dict(nsp=nsp, dims=dims, groups=groups, cg=cg, kg=kg,
                batch=draw(st.integers(1, 2)),
                algorithm=draw(st.sampled_from(CPU_ALGORITHMS)),
                dtype=draw(st.sampled_from((np.float32, np.float64))),
                bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)))


def problem_arrays(problem):
    rng = np.random.default_rng(problem["seed"])
    dims, groups = problem["dims"], problem["groups"]
    x = random_array(rng, (problem["batch"], problem["cg"] * groups)
                     + tuple(d[0] for d in dims), problem["dtype"])
    w = random_array(rng, (problem["kg"] * groups, problem["cg"])
                     + tuple(d[1] for d in dims), problem["dtype"])
    b = (random_array(rng, (problem["kg"] * groups,), problem["dtype"])
         if problem["bias"] else None)
    if problem["nsp"] == 1:
        (n, k, d, lo, hi, s), = dims
        kwargs = dict(stride=s, padding=lo if lo == hi else 0, dilation=d,
                      groups=groups)
        if lo != hi:
            x = np.pad(x, ((0, 0), (0, 0), (lo, hi)))
    else:
        kwargs = dict(stride=tuple(d[5] for d in dims),
                      padding=tuple(d[3] for d in dims),
                      dilation=tuple(d[2] for d in dims), groups=groups)
        x = np.pad(x, ((0, 0), (0, 0)) + tuple(
            (0, d[4] - d[3]) if d[4] > d[3] else (0, 0) for d in dims))
    return x, w, b, kwargs


@settings(deadline=None)
@given(problem=padded_problems())
def test_conv_over_the_live_taps_matches_the_reference(problem):
    x, w, b, kwargs = problem_arrays(problem)
    nsp, algorithm = problem["nsp"], problem["algorithm"]
    conv = kernels.conv1d if nsp == 1 else kernels.conv2d
    if algorithm != "auto" and not supports(algorithm, nsp, x.shape, w.shape,
                                            **kwargs):
        with pytest.raises(kernels.UnsupportedConfiguration):
            conv(x, w, b, algorithm=algorithm, **kwargs)
        return
    x_before, w_before = x.copy(), w.copy()
    y = conv(x, w, b, algorithm=algorithm, **kwargs)
    assert np.array_equal(x, x_before) and np.array_equal(w, w_before)
    if algorithm == "auto":
        config = normalised_config(nsp, x.shape, w.shape, **kwargs)
        algorithm = kernels.choose_algorithm(*config, dtype=x.dtype)
    assert_within_bound(algorithm, y, x, w, b, **kwargs)


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col"])
def test_a_non_finite_tap_that_only_meets_padding_still_spreads(
        value, algorithm, monkeypatch):
    # 0 * NaN and 0 * Inf are NaN in the reference: the whole kernel runs
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 1, 40)).astype(np.float32)
    w = rng.standard_normal((8, 4, 5, 5)).astype(np.float32)
    w[3, 1, 0, 2] = value                   # kernel row 0: padding only
    seen = kernel_shapes_run(monkeypatch)
    y = kernels.conv2d(x, w, padding=2, algorithm=algorithm)
    assert seen == [(5, 5)]
    assert np.isnan(y[0, 3]).all()
    assert_within_bound("direct", y, x, w, padding=2)


def test_the_live_taps_are_computed_and_follow_in_place_changes(monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 32, 1, 300)).astype(np.float32)
    w = rng.standard_normal((32, 32, 9, 9)).astype(np.float32)
    seen = kernel_shapes_run(monkeypatch)
    y = kernels.conv2d(x, w, padding=4)
    assert seen == [(1, 9)]
    assert_within_bound("direct", y, x, w, padding=4)
    w[:, :, 4] *= -2.0                      # the live row, changed in place
    y = kernels.conv2d(x, w, padding=4)
    assert_within_bound("direct", y, x, w, padding=4)
    w[0, 0, 0, 0] = np.nan                  # a left-out row, made NaN
    y = kernels.conv2d(x, w, padding=4)
    assert seen[-1] == (9, 9) and np.isnan(y[:, 0]).all()


def test_a_named_algorithm_is_held_to_the_whole_kernel(monkeypatch):
    # Winograd refuses an input smaller than the kernel, though it could
    # compute the live 1 x 3 row: the named algorithm's errors do not
    # depend on the crop.  Direct computes the live row.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 1, 64)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    live = spec_of(x.shape, w.shape, padding=(1, 1, 1, 1)).live_taps[1]
    assert _dispatch.unsupported_reason("conv2d", "cpu", "winograd",
                                        live) is None
    with pytest.raises(kernels.UnsupportedConfiguration, match="at least as large"):
        kernels.conv2d(x, w, padding=1, algorithm="winograd")
    seen = kernel_shapes_run(monkeypatch)
    y = kernels.conv2d(x, w, padding=1, algorithm="direct")
    assert seen == [(1, 3)]
    assert_within_bound("direct", y, x, w, padding=1)


def test_auto_chooses_for_the_live_taps():
    # 9 x 9 padded by 4 over one row of 16384: FFT for the whole kernel's
    # area, direct for its live 1 x 9 row
    x_shape, w_shape = (1, 32, 1, 16384), (32, 32, 9, 9)
    live = spec_of(x_shape, w_shape, padding=(4,) * 4).live_taps[1]
    assert kernels.choose_algorithm(x_shape, w_shape, padding=4) == \
        kernels.choose_algorithm(live.x_shape, live.w_shape,
                                 padding=live.padding)
