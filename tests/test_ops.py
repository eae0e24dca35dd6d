"""convbench.ops: data, contenders, reference and rate of every op.

Every contender ``make_runner`` builds (the algorithms of ``kernels``,
``auto``, pooling's ``kernels`` and the peers) is held to the float64
reference of ``reference/`` in units of its documented bound; the
reference's check is shown not to be vacuous by corrupting a correct
result; shapes and rates are compared with values worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

import kernels
from kernels import accuracy
from convbench import ops
from convbench.problems import CONV_OPS, OPS, POOL_OPS, parse_problem

# One small problem per op: groups 2, stride 2, padding 1 for the
# convolutions; a 3x3 window, stride 2, padding 1 for pooling.
PROBLEMS = {
    "conv1d": "conv1d n2 c4 w9 k6 r3 s2 p1 g2",
    "conv2d": "conv2d n2 c4 h9 w8 k6 r3 s2 p1 g2",
    "conv_transpose1d": "conv_transpose1d n2 c4 w9 k6 r3 s2 p1 g2",
    "conv_transpose2d": "conv_transpose2d n2 c4 h9 w8 k6 r3 s2 p1 g2",
    "conv2d_backward_data": "conv2d_backward_data n2 c4 h9 w8 k6 r3 s2 p1 g2",
    "conv2d_backward_weights":
        "conv2d_backward_weights n2 c4 h9 w8 k6 r3 s2 p1 g2",
    "max_pool2d": "max_pool2d n2 c4 h9 w8 r3 s2 p1",
    "avg_pool2d": "avg_pool2d n2 c4 h9 w8 r3 s2 p1",
    "global_avg_pool2d": "global_avg_pool2d n2 c4 h9 w8",
    "max_pool2d_backward": "max_pool2d_backward n2 c4 h9 w8 r3 s2 p1",
    "avg_pool2d_backward": "avg_pool2d_backward n2 c4 h9 w8 r3 s2 p1",
}
assert set(PROBLEMS) == set(OPS)

# More problems for the contender test: stride 1 (Winograd's), a dilated
# one, and single-channel ones (where the SciPy peers apply).
EXTRA = [
    "conv2d n2 c4 h9 w8 k6 r3 s1 p1 g2",
    "conv1d n2 c4 w9 k6 r3 s1 p1 g2",
    "conv_transpose2d n2 c4 h6 w5 k6 r3 s1 p1 g2",
    "conv2d_backward_data n2 c4 h9 w8 k6 r3 s1 p1 g2",
    "conv2d_backward_weights n1 c2 h7 w6 k2 r3 s1 p1",
    "conv2d n1 c2 h9 w9 k2 r3 s1 p2 d2",
    "conv2d n2 c1 h9 w8 k1 r3 p1",
    "conv1d n2 c1 w12 k1 r4 pvalid",
    "conv2d n1 c2 h8 w8 k2 r3x4 psame",
    "max_pool2d n1 c2 h9 w9 r3x2 s1x2 p1 d2",
]

DTYPES = [np.float32, np.float64]


def _contenders(p):
    ours = list(ops.algorithms_for(p.op))
    if p.op not in POOL_OPS:
        ours.append("auto")
    return ours + list(ops.peers_for(p))


def _reference_shape(p):
    """The shape the op's result has: the forward output, the input's
    (data gradient) or the weight's (weight gradient)."""
    if p.op == "conv2d_backward_data" or p.op.endswith("pool2d_backward"):
        return p.x_shape
    if p.op == "conv2d_backward_weights":
        return p.w_shape
    return p.forward_out_shape


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("line", list(PROBLEMS.values()) + EXTRA)
def test_every_contender_is_within_its_bound(line, dtype):
    p = parse_problem(line)
    data = ops.make_data(p, dtype, seed=5)
    ref = ops.Reference(p, data, check_batch=0)
    assert ref.skipped is None
    assert ref.y.shape == _reference_shape(p)
    ran = []
    for name in _contenders(p):
        try:
            run, chose = ops.make_runner(name, p, data)
            y = run()
        except (ops.NotApplicable, kernels.UnsupportedConfiguration):
            continue
        y = np.asarray(y)
        assert y.shape == ref.y.shape, name
        assert y.dtype == np.dtype(dtype), name
        units, constant, model = ref.error_units(name, dtype, y, chose)
        assert units is not None and constant is not None, name
        assert 0 <= units <= constant, (name, chose, model, units, constant)
        if name == "auto" and chose is not None:
            assert model == chose
        ran.append(name)
    # The contender of kernels always runs: pooling's one, or direct.
    assert ("kernels" if p.op in POOL_OPS else "direct") in ran, ran
    if p.op not in POOL_OPS:
        assert "auto" in ran


def test_winograd_runs_where_it_applies():
    # The contender test above would pass with Winograd always n/a; on a
    # stride-1 3x3 conv2d it runs.
    p = parse_problem("conv2d n2 c4 h9 w8 k6 r3 s1 p1 g2")
    data = ops.make_data(p, np.float32, seed=1)
    run, _ = ops.make_runner("winograd", p, data)
    ref = ops.Reference(p, data, check_batch=0)
    units, constant, model = ref.error_units("winograd", np.float32, run())
    assert model == "winograd"
    assert units <= constant == accuracy.error_constant("winograd",
                                                        np.float32)


def test_peers_are_held_to_the_model_they_resemble():
    # Module docstring: torch and scipy-direct to direct's bound,
    # scipy-fft and scipy-oa to fft's.
    p = parse_problem("conv2d n1 c1 h9 w8 k1 r3 p1")
    data = ops.make_data(p, np.float32, seed=2)
    ref = ops.Reference(p, data, check_batch=0)
    models = {"scipy-direct": "direct", "scipy-fft": "fft",
              "scipy-oa": "fft", "torch": "direct"}
    for name, model in models.items():
        if name == "torch":
            pytest.importorskip("torch")
        run, _ = ops.make_runner(name, p, data)
        units, constant, got = ref.error_units(name, np.float32, run())
        assert got == model
        assert constant == accuracy.error_constant(model, np.float32)
        assert units <= constant


# --------------------------------------------------------------------------
# The check is not vacuous
# --------------------------------------------------------------------------

def _name(p):
    return ops.POOL_CONTENDER if p.op in POOL_OPS else "direct"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_a_corrupted_entry_exceeds_the_bound(op, dtype):
    p = parse_problem(PROBLEMS[op])
    data = ops.make_data(p, dtype, seed=3)
    ref = ops.Reference(p, data, check_batch=0)
    name = _name(p)
    good = ref.y.astype(dtype)          # correct up to one rounding
    units, constant, _ = ref.error_units(name, dtype, good)
    assert units <= max(constant, 1.0)
    # 1000 u x scale added to the entry of largest scale.
    u = np.finfo(dtype).eps / 2
    index = np.unravel_index(np.argmax(ref.abs), ref.abs.shape)
    assert ref.abs[index] > 0
    bad = good.copy()
    bad[index] += dtype(1000 * u * ref.abs[index])
    units, constant, _ = ref.error_units(name, dtype, bad)
    assert units > constant, (units, constant)
    assert units == pytest.approx(1000, rel=0.01, abs=2)


@pytest.mark.parametrize("op", OPS)
def test_two_swapped_entries_exceed_the_bound(op):
    p = parse_problem(PROBLEMS[op])
    data = ops.make_data(p, np.float32, seed=4)
    ref = ops.Reference(p, data, check_batch=0)
    good = ref.y.astype(np.float32)
    flat = good.reshape(-1)
    i, j = int(np.argmax(flat)), int(np.argmin(flat))
    assert flat[i] != flat[j]
    bad = good.copy().reshape(-1)
    bad[i], bad[j] = flat[j], flat[i]
    units, constant, _ = ref.error_units(_name(p), np.float32,
                                         bad.reshape(good.shape))
    assert units > constant


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_max_pooling_is_exact(dtype):
    p = parse_problem(PROBLEMS["max_pool2d"])
    data = ops.make_data(p, dtype, seed=6)
    ref = ops.Reference(p, data, check_batch=0)
    run, _ = ops.make_runner(ops.POOL_CONTENDER, p, data)
    y = run()
    units, constant, model = ref.error_units(ops.POOL_CONTENDER, dtype, y)
    assert (units, constant, model) == (0.0, 0.0, None)
    # Any change of one entry, even by one ulp, is an error.
    for index in [(0, 0, 0, 0), (1, 3, 4, 3), (0, 2, 1, 2)]:
        bad = y.copy()
        bad[index] = np.nextafter(bad[index], dtype(np.inf))
        units, constant, _ = ref.error_units(ops.POOL_CONTENDER, dtype, bad)
        assert units > constant == 0.0


def test_only_the_checked_images_are_compared():
    # check_batch=1 compares the first image only; an error in it is found.
    p = parse_problem(PROBLEMS["conv2d"])
    data = ops.make_data(p, np.float64, seed=1)
    ref = ops.Reference(p, data, check_batch=1)
    assert ref.batch == 1 and ref.region["fraction"] == 0.5
    full = ops.Reference(p, data, check_batch=0).y
    bad = full.copy()
    bad[0, 0, 0, 0] += 1.0
    assert ref.error_units("direct", np.float64, bad)[0] > 128
    # The weight gradient sums over the batch: always every image.
    w = parse_problem(PROBLEMS["conv2d_backward_weights"])
    assert ops.Reference(w, ops.make_data(w), check_batch=1).batch == 2


def test_a_reference_over_budget_is_skipped():
    p = parse_problem(PROBLEMS["conv2d"])
    data = ops.make_data(p)
    ref = ops.Reference(p, data, check_batch=0, check_macs=10)
    assert ref.skipped and "check-macs" in ref.skipped
    assert ref.error_units("direct", np.float32, np.zeros(p.forward_out_shape)) \
        == (None, None, None)


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

# Worked out by hand from the descriptors above:
#   conv2d n2 c4 h9 w8 k6 r3 s2 p1 g2: x (2, 4, 9, 8), w (K, C/g, 3, 3) =
#   (6, 2, 3, 3), out Ho = (9 + 2 - 3) // 2 + 1 = 5, Wo = (8 + 2 - 3) // 2
#   + 1 = 4;  conv1d: Lo = (9 + 2 - 3) // 2 + 1 = 5;
#   transposed: w (C, K/g, 3, 3) = (4, 3, 3, 3);
#   pooling 3x3 s2 p1: 5 x 4 as conv2d's.
SHAPES = {
    "conv1d": {"x": (2, 4, 9), "w": (6, 2, 3)},
    "conv2d": {"x": (2, 4, 9, 8), "w": (6, 2, 3, 3)},
    "conv_transpose1d": {"x": (2, 4, 9), "w": (4, 3, 3)},
    "conv_transpose2d": {"x": (2, 4, 9, 8), "w": (4, 3, 3, 3)},
    "conv2d_backward_data": {"x": (2, 4, 9, 8), "w": (6, 2, 3, 3),
                             "grad_out": (2, 6, 5, 4)},
    "conv2d_backward_weights": {"x": (2, 4, 9, 8), "w": (6, 2, 3, 3),
                                "grad_out": (2, 6, 5, 4)},
    "max_pool2d": {"x": (2, 4, 9, 8)},
    "avg_pool2d": {"x": (2, 4, 9, 8)},
    "global_avg_pool2d": {"x": (2, 4, 9, 8)},
    "max_pool2d_backward": {"x": (2, 4, 9, 8), "grad_out": (2, 4, 5, 4)},
    "avg_pool2d_backward": {"x": (2, 4, 9, 8), "grad_out": (2, 4, 5, 4)},
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", OPS)
def test_make_data_shapes(op, dtype):
    data = ops.make_data(parse_problem(PROBLEMS[op]), dtype, seed=0)
    assert {k: v.shape for k, v in data.items()} == SHAPES[op]
    for a in data.values():
        assert a.dtype == np.dtype(dtype)
        assert np.all(np.isfinite(a))


@pytest.mark.parametrize("op", ["conv2d", "max_pool2d_backward",
                                "conv_transpose1d"])
def test_make_data_is_seeded(op):
    p = parse_problem(PROBLEMS[op])
    a, b, c = (ops.make_data(p, np.float32, seed=s) for s in (7, 7, 8))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])
        # Standard normal: the values spread (not zeros or constants).
        assert a[name].std() > 0.3
    # Arrays of one problem are different draws.
    names = list(a)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            x, y = a[names[i]].ravel(), a[names[j]].ravel()
            m = min(x.size, y.size)
            assert not np.array_equal(x[:m], y[:m])


# --------------------------------------------------------------------------
# Rates
# --------------------------------------------------------------------------

def test_conv_rate_is_gflops():
    p = parse_problem(PROBLEMS["conv2d"])
    # 2 N K (C/g) kh kw Ho Wo = 2*2*6*2*3*3*5*4 = 8640 flops.
    assert p.flops == 8640
    value, unit, fraction = ops.rate(p, 1e-6, 4)
    assert unit == "GFLOP/s" and fraction is None
    assert value == pytest.approx(8640 / 1e-6 / 1e9)
    assert value == pytest.approx(p.flops / 1e-6 / 1e9)
    t = parse_problem(PROBLEMS["conv_transpose2d"])
    value, unit, _ = ops.rate(t, 2e-3, 8)
    assert unit == "GFLOP/s"
    assert value == pytest.approx(t.flops / 2e-3 / 1e9)


@pytest.mark.parametrize("op", [o for o in POOL_OPS])
def test_pool_rate_is_bandwidth(op):
    p = parse_problem(PROBLEMS[op])
    # float32: x 2*4*9*8 = 576 elements, y 2*4*5*4 = 160 (global: 8);
    # backward reads grad_out and x and writes grad_x.
    y = 8 if op == "global_avg_pool2d" else 160
    moved = 4 * ((y + 2 * 576) if op.endswith("_backward") else (576 + y))
    assert p.bytes_moved(4) == moved
    seconds = moved / 1e9                   # 1 GB/s
    value, unit, fraction = ops.rate(p, seconds, 4)
    assert unit == "GB/s"
    assert value == pytest.approx(1.0)
    assert 0 < fraction < 10
    assert fraction == pytest.approx(1e9 / ops.copy_bandwidth())


def test_no_time_no_rate():
    p = parse_problem(PROBLEMS["conv2d"])
    assert ops.rate(p, 0, 4) == (None, None, None)
    assert ops.rate(p, None, 4) == (None, None, None)


# --------------------------------------------------------------------------
# Contenders that cannot run
# --------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "conv2d n1 c2 h9 w8 k1 r3 p1",          # two input channels
    "conv2d n1 c1 h9 w8 k2 r3 p1",          # two output channels
    "conv2d n1 c1 h9 w8 k1 r3 s2 p1",       # strided
    "conv2d n1 c1 h9 w8 k1 r3 p2 d2",       # dilated
    "conv1d n1 c1 w9 k1 r3 s2",             # strided 1-D
    "conv_transpose2d n1 c1 h5 w5 k1 r3",   # no transposed op in SciPy
    "max_pool2d n1 c1 h9 w8 r3",
])
@pytest.mark.parametrize("peer", ["scipy-direct", "scipy-fft", "scipy-oa"])
def test_scipy_peers_are_not_applicable(line, peer):
    p = parse_problem(line)
    assert peer not in ops.peers_for(p)
    with pytest.raises(ops.NotApplicable):
        ops.make_runner(peer, p, ops.make_data(p))


def test_scipy_peers_apply_to_single_channel_problems():
    for line in ["conv2d n2 c1 h9 w8 k1 r3 p1", "conv1d n1 c1 w9 k1 r3"]:
        assert ops.peers_for(parse_problem(line)) == (
            "scipy-direct", "scipy-fft", "scipy-oa", "torch")


@pytest.mark.parametrize("op", CONV_OPS)
def test_kernels_contender_is_for_pooling_only(op):
    p = parse_problem(PROBLEMS[op])
    assert ops.algorithms_for(op) == tuple(kernels.built_algorithms())
    with pytest.raises(ops.NotApplicable):
        ops.make_runner(ops.POOL_CONTENDER, p, ops.make_data(p))


@pytest.mark.parametrize("op", POOL_OPS)
@pytest.mark.parametrize("name", ["direct", "fft", "auto"])
def test_algorithms_are_not_applicable_to_pooling(op, name):
    p = parse_problem(PROBLEMS[op])
    assert ops.algorithms_for(op) == (ops.POOL_CONTENDER,)
    with pytest.raises(ops.NotApplicable):
        ops.make_runner(name, p, ops.make_data(p))


@pytest.mark.parametrize("line", [
    "conv2d_backward_data n1 c2 h8 w8 k2 r4 psame",
    "conv2d_backward_weights n1 c2 h8 w8 k2 r4 psame",
])
def test_torch_backward_is_not_applicable_to_asymmetric_padding(line):
    # torch.nn.grad.conv2d_input/_weight take one padding per axis.
    pytest.importorskip("torch")
    p = parse_problem(line)
    assert p.pads()[0] == (1, 2)        # same_padding(4): total 3, 1 low
    with pytest.raises(ops.NotApplicable, match="pads both sides"):
        ops.make_runner("torch", p, ops.make_data(p))


@pytest.mark.parametrize("line", [
    "conv2d n1 c2 h8 w8 k2 r4 psame",       # pads (1, 2) on both axes
    "conv2d n1 c2 h8 w8 k2 r4x3 psame",     # (1, 2) on H
    "conv2d n1 c2 h8 w8 k2 r3x4 psame",     # uneven on W only
    "conv1d n1 c2 w9 k2 r4 psame",
])
def test_torch_same_padding_with_even_kernels_matches_the_reference(line):
    # torch's padding='same' puts the extra row / column on the high
    # side, as the problem's pads() do: the outputs must agree.
    pytest.importorskip("torch")
    p = parse_problem(line)
    data = ops.make_data(p, np.float64, seed=9)
    run, _ = ops.make_runner("torch", p, data)
    ref = ops.Reference(p, data, check_batch=0)
    units, constant, _ = ref.error_units("torch", np.float64, run())
    assert units <= constant


def test_unsupported_algorithm_is_not_applicable_with_the_reason():
    # Winograd computes stride-1 convolutions only.
    p = parse_problem(PROBLEMS["conv2d"])
    with pytest.raises(ops.NotApplicable, match="stride"):
        ops.make_runner("winograd", p, ops.make_data(p))
