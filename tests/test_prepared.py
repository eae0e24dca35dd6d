"""The front end's prepared runners (:func:`kernels._conv._prepared`).

A problem called again runs its kernel's prepared form (the contract's
``Kernel.prepare``), kept while "auto"'s thresholds and the tunables in
force stay the same objects.  Checked here: the prepared form computes
what the kernel's ``run`` computes (the same bits, within the reference
bound), it is made once per problem, and a change of tunables, of
thresholds or of the requested Winograd tile reaches the next call.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import kernels
from kernels import _conv, _dispatch
from kernels import winograd as public_winograd
from kernels.cpu import _pointwise, _tuning
from kernels.cpu import winograd as cpu_winograd
from helpers import assert_within_bound

# (name, x shape, w shape, stride, padding, algorithm): each kernel path
# with a prepared form.
PROBLEMS = [
    ("lanes product", (1, 256, 14, 14), (64, 256, 1, 1), 1, 0, "im2col"),
    ("lanes product, strided", (1, 256, 14, 14), (64, 256, 1, 1), 2, 0,
     "im2col"),
    ("panel GEMM, 1x1", (2, 16, 9, 9), (24, 16, 1, 1), 1, 0, "im2col"),
    ("im2col, 3x3", (1, 8, 10, 10), (12, 8, 3, 3), 1, 1, "im2col"),
    ("direct, channel tile", (1, 16, 28, 28), (32, 16, 3, 3), 1, 1,
     "direct"),
    ("direct, pixel tile", (1, 8, 7, 7), (10, 8, 3, 3), 1, 1, "direct"),
    ("winograd, streamed", (1, 32, 14, 14), (32, 32, 3, 3), 1, 1,
     "winograd"),
    ("winograd, cached", (1, 8, 30, 30), (8, 8, 3, 3), 1, 1, "winograd"),
    ("auto", (1, 64, 14, 14), (64, 64, 3, 3), 1, 1, "auto"),
]


def problem(x_shape, w_shape, seed=0, dtype=np.float32, bias=True):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


def kept_runners():
    """The prepared runners the front end keeps: with its plans, and by
    problem for other callers of run_conv2d."""
    return [plan.prepared[0] for plan in _conv._PLANS.values()
            if plan.prepared[0] is not None] + list(_conv._PREPARED.values())


def count_prepares(monkeypatch, algorithm):
    """A list that grows by one each time ``algorithm``'s CPU kernel is
    prepared."""
    calls = []
    kernel = _dispatch.load("conv2d", "cpu", algorithm)

    def spy(spec):
        calls.append(spec)
        return kernel.prepare(spec)

    monkeypatch.setitem(_dispatch._loaded, ("conv2d", "cpu", algorithm),
                        dataclasses.replace(kernel, prepare=spy))
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,x_shape,w_shape,stride,padding,algorithm",
                         PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_prepared_runner_computes_what_run_computes(
        monkeypatch, name, x_shape, w_shape, stride, padding, algorithm,
        dtype):
    x, w, b = problem(x_shape, w_shape, dtype=dtype)
    x_before, w_before = x.copy(), w.copy()
    kwargs = dict(stride=stride, padding=padding, algorithm=algorithm)
    monkeypatch.setattr(_conv, "_PREPARE", False)
    y_run = kernels.conv2d(x, w, b, **kwargs)
    monkeypatch.setattr(_conv, "_PREPARE", True)
    # twice: the first call prepares, the second runs what was kept
    y_first = kernels.conv2d(x, w, b, **kwargs)
    y_kept = kernels.conv2d(x, w, b, **kwargs)
    assert kept_runners(), "nothing was prepared"
    np.testing.assert_array_equal(y_first, y_run)
    np.testing.assert_array_equal(y_kept, y_run)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(w, w_before)
    assert y_kept.dtype == x.dtype and y_kept.flags.c_contiguous
    resolved = (kernels.choose_algorithm(x.shape, w.shape, stride=stride,
                                         padding=padding)
                if algorithm == "auto" else algorithm)
    assert_within_bound(resolved, y_kept, x, w, b, stride=stride,
                        padding=padding)


def test_a_problem_is_prepared_once(monkeypatch):
    calls = count_prepares(monkeypatch, "im2col")
    x, w, b = problem((1, 256, 14, 14), (64, 256, 1, 1))
    for _ in range(3):
        kernels.conv2d(x, w, b, algorithm="im2col")
    assert len(calls) == 1
    # a second problem gets its own runner; the first keeps its own
    kernels.conv2d(x[:, :, :7], w, b, algorithm="im2col")
    kernels.conv2d(x, w, b, algorithm="im2col")
    assert len(calls) == 2


def test_new_tunables_reach_the_next_call(monkeypatch):
    calls = count_prepares(monkeypatch, "im2col")
    x, w, b = problem((1, 256, 14, 14), (64, 256, 1, 1))
    kernels.conv2d(x, w, b, algorithm="im2col")
    taken = []
    real = _pointwise.prepare
    monkeypatch.setattr(_pointwise, "prepare",
                        lambda spec: taken.append(spec) or real(spec))
    # The lanes product off: the prepared runner must not be kept.
    with _tuning.override(im2col=_tuning.Im2colTuning(
            channel_lanes_min_depth=0)):
        y_panel = kernels.conv2d(x, w, b, algorithm="im2col")
    assert len(calls) == 2 and not taken
    kernels.conv2d(x, w, b, algorithm="im2col")
    assert len(calls) == 3 and len(taken) == 1
    # both products give the same bits (see kernels.cpu._pointwise)
    np.testing.assert_array_equal(
        y_panel, kernels.conv2d(x, w, b, algorithm="im2col"))


def test_new_thresholds_reach_the_next_call(monkeypatch, tmp_path):
    from kernels._calibration import save_thresholds
    from kernels._choose import default_thresholds, machine_key
    direct_calls = count_prepares(monkeypatch, "direct")
    im2col_calls = count_prepares(monkeypatch, "im2col")
    # a fully connected layer: im2col or direct by direct_max_macs_fc
    x, w, b = problem((32, 256, 1, 1), (512, 256, 1, 1))
    path = tmp_path / "cal.json"
    monkeypatch.setenv("CONVBENCH_CALIBRATION", str(path))
    table = default_thresholds("cpu")
    save_thresholds("cpu", dict(table, direct_max_macs_fc=0),
                    machine_key("cpu"))
    y_im2col = kernels.conv2d(x, w, b)
    kernels.conv2d(x, w, b)
    assert (len(im2col_calls), len(direct_calls)) == (1, 0)
    save_thresholds("cpu", dict(table, direct_max_macs_fc=1e15),
                    machine_key("cpu"))
    y_direct = kernels.conv2d(x, w, b)
    assert (len(im2col_calls), len(direct_calls)) == (1, 1)
    np.testing.assert_array_equal(
        y_direct, kernels.conv2d(x, w, b, algorithm="direct"))
    np.testing.assert_array_equal(
        y_im2col, kernels.conv2d(x, w, b, algorithm="im2col"))


def test_a_requested_tile_reaches_a_prepared_winograd_call():
    x, w, b = problem((1, 32, 14, 14), (32, 32, 3, 3))
    kwargs = dict(padding=1, algorithm="winograd")
    y_default = kernels.conv2d(x, w, b, **kwargs)
    kernels.conv2d(x, w, b, **kwargs)
    default = cpu_winograd.tile_for_problem((3, 3), (14, 14), 1, (32, 32))
    other = 2 if default.m_h == 4 else 4
    with public_winograd.use_tile(other):
        y_other = kernels.conv2d(x, w, b, **kwargs)
        expected = cpu_winograd.conv2d(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1),
                                       1)
    np.testing.assert_array_equal(y_other, expected)
    assert not np.array_equal(y_other, y_default)
    np.testing.assert_array_equal(kernels.conv2d(x, w, b, **kwargs),
                                  y_default)


def test_a_non_finite_input_still_goes_to_direct():
    x, w, b = problem((1, 32, 14, 14), (32, 32, 3, 3))
    kernels.conv2d(x, w, b, padding=1, algorithm="winograd")
    x[0, 3, 5, 6] = np.nan
    y = kernels.conv2d(x, w, b, padding=1, algorithm="winograd")
    np.testing.assert_array_equal(
        y, kernels.conv2d(x, w, b, padding=1, algorithm="direct"))
    assert_within_bound("direct", y, x, w, b, padding=1)
