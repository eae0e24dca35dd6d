"""convbench.problems: the Problem of every op and the problem-file format.

Shapes are held to the float64 reference (``reference/``, which never
imports ``kernels``) run on zeros of the problem's arrays, and to
``torch.nn.functional`` where torch is installed; descriptors to the
round trip ``parse_problem(p.descriptor()) == p``; mistakes to the field
and the ``file:line`` they name.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import reference
from convbench.problems import (CONV_OPS, ONE_D_OPS, OPS, POOL_OPS,
                                TRANSPOSED_OPS, ProblemError, as_op,
                                distinct_problems, format_problems,
                                parse_problem, problem, read_problems,
                                with_directions)

# --------------------------------------------------------------------------
# Random valid problems of every op
# --------------------------------------------------------------------------

_LABELS = st.from_regex(r"[A-Za-z0-9_.\-]{0,10}", fullmatch=True)


def _pair_or_int(draw, low, high, one_d):
    """An int, or (2-D only) an (h, w) pair of ints."""
    if one_d or draw(st.booleans()):
        return draw(st.integers(low, high))
    return (draw(st.integers(low, high)), draw(st.integers(low, high)))


def _as_pair(value):
    return tuple(value) if isinstance(value, tuple) else (value, value)


@st.composite
def problems(draw, ops=OPS):
    """A valid :class:`Problem` of one of ``ops`` built with ``problem()``
    from drawn fields.  The draws mostly respect the rules (groups divide
    the channels, the input holds the window, ...), so that few are
    rejected; the rest are filtered out with ``assume``."""
    op = draw(st.sampled_from(ops))
    one_d = op in ONE_D_OPS
    fields = dict(n=draw(st.integers(1, 3)))
    if op in CONV_OPS:
        g = draw(st.sampled_from([1, 1, 2, 3]))
        fields.update(groups=g, c=g * draw(st.integers(1, 3)),
                      k=g * draw(st.integers(1, 3)))
    else:
        fields["c"] = draw(st.integers(1, 5))
    if op == "global_avg_pool2d":
        fields.update(h=draw(st.integers(1, 9)), w=draw(st.integers(1, 9)))
    else:
        kernel = _pair_or_int(draw, 1, 4, one_d)
        fields["kernel"] = kernel
        stride = None
        if draw(st.booleans()):
            stride = fields["stride"] = _pair_or_int(draw, 1, 3, one_d)
        dilation = 1
        if not op.startswith("avg") and draw(st.booleans()):
            dilation = fields["dilation"] = _pair_or_int(draw, 1, 2, one_d)
        pad = (0, 0)
        if (op in CONV_OPS and op not in TRANSPOSED_OPS
                and stride in (None, 1, (1, 1)) and draw(st.booleans())):
            fields["padding"] = draw(st.sampled_from(["same", "valid"]))
        elif draw(st.booleans()):
            half = min(_as_pair(kernel)) // 2 if op in POOL_OPS else 2
            fields["padding"] = _pair_or_int(draw, 0, half, one_d)
            pad = _as_pair(fields["padding"])
        if op in TRANSPOSED_OPS and draw(st.booleans()):
            fields["output_padding"] = _pair_or_int(draw, 0, 1, one_d)
        # An input the (dilated) window fits in, give or take one.
        sizes = [draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p - 1),
                                  d * (k - 1) + 8))
                 for k, d, p in zip(_as_pair(kernel), _as_pair(dilation),
                                    pad)]
        fields["w"] = sizes[1]
        if not one_d:
            fields["h"] = sizes[0]
    fields["label"] = draw(_LABELS)
    fields["count"] = draw(st.integers(1, 4))
    try:
        return problem(op, **fields)
    except ProblemError:
        assume(False)


def _same(a, b):
    """Equal as problems and in label and count (which == ignores)."""
    return a == b and (a.label, a.count) == (b.label, b.count)


@pytest.mark.parametrize("op", OPS)
@settings(deadline=None)
@given(data=st.data())
def test_descriptor_round_trips(op, data):
    p = data.draw(problems(ops=(op,)), label="problem")
    back = parse_problem(p.descriptor())
    assert back == p
    assert back.label == p.label
    assert back.count == p.count
    # Every field, not only what == compares.
    assert (back.op, back.n, back.c, back.h, back.w, back.k, back.kernel,
            back.stride, back.padding, back.dilation, back.groups,
            back.output_padding) == (p.op, p.n, p.c, p.h, p.w, p.k,
                                     p.kernel, p.stride, p.padding,
                                     p.dilation, p.groups, p.output_padding)


@pytest.mark.parametrize("op", OPS)
def test_the_strategy_reaches_every_op(op):
    # A round trip of one fixed problem per op, so that an op the random
    # draws reject every time would still be covered.
    p = {
        "conv1d": problem("conv1d", n=2, c=4, w=9, k=6, kernel=3, stride=2,
                          padding=1, groups=2, label="a.b", count=3),
        "conv_transpose1d": problem("conv_transpose1d", n=2, c=4, w=9, k=6,
                                    kernel=3, stride=2, padding=1,
                                    output_padding=1, groups=2),
        "global_avg_pool2d": problem("global_avg_pool2d", n=2, c=4, h=7,
                                     w=5),
    }.get(op)
    if p is None:
        fields = dict(n=2, c=4, h=9, w=8, kernel=3, stride=2, padding=1)
        if op in CONV_OPS:
            fields.update(k=6, groups=2)
        if op in TRANSPOSED_OPS:
            fields.update(output_padding=(1, 0))
        p = problem(op, label="x_1", count=2, **fields)
    assert _same(parse_problem(p.descriptor()), p)


# --------------------------------------------------------------------------
# Shapes and amounts against the reference
# --------------------------------------------------------------------------

def _forward_op(op):
    """The forward op whose output ``forward_out_shape`` describes."""
    if op.startswith("conv2d_backward"):
        return "conv2d"
    return op[:-len("_backward")] if op.endswith("_backward") else op


def _reference_forward(p):
    """The float64 reference's forward output of ``p`` on zeros."""
    x = np.zeros(p.x_shape)
    op = _forward_op(p.op)
    if op == "global_avg_pool2d":
        return reference.global_avg_pool2d(x)
    if p.one_d:
        one = (lambda pair: pair[1])
        padding = p.padding if isinstance(p.padding, str) else p.padding[1]
    else:
        one = tuple
        padding = p.padding if isinstance(p.padding, str) else tuple(p.padding)
    stride, dilation = one(p.stride), one(p.dilation)
    if op in ("max_pool2d", "avg_pool2d"):
        if op == "max_pool2d":
            return reference.max_pool2d(x, p.kernel, p.stride, padding,
                                        p.dilation)
        return reference.avg_pool2d(x, p.kernel, p.stride, padding)
    w = np.zeros(p.w_shape)
    if op in TRANSPOSED_OPS:
        return getattr(reference, op)(x, w, None, stride, padding,
                                      one(p.output_padding), p.groups,
                                      dilation)
    return getattr(reference, op)(x, w, None, stride, padding, dilation,
                                  p.groups)


@pytest.mark.parametrize("op", OPS)
@settings(deadline=None)
@given(data=st.data())
def test_forward_out_shape_is_the_references(op, data):
    p = data.draw(problems(ops=(op,)), label="problem")
    assert p.forward_out_shape == _reference_forward(p).shape


@settings(deadline=None)
@given(p=problems(ops=("conv2d",)))
def test_conv2d_flops_count_every_multiply_add(p):
    n, k, ho, wo = _reference_forward(p).shape
    kh, kw = p.kernel
    expected = 2 * n * k * (p.c // p.groups) * kh * kw * ho * wo
    assert p.flops == expected
    assert p.macs * 2 == expected


@settings(deadline=None)
@given(p=problems(ops=("conv_transpose2d",)))
def test_transposed_macs_are_the_adjoint_convolutions(p):
    # Every input element meets every weight of its group once:
    # N C (K/g) kh kw H W multiply-adds (the direct scatter's count).
    kh, kw = p.kernel
    assert p.macs == p.n * p.c * (p.k // p.groups) * kh * kw * p.h * p.w


_TORCH_CASES = [
    "conv2d n2 c4 h9 w8 k6 r3 s2 p1 g2",
    "conv2d n1 c3 h10 w7 k4 r3x2 s1x2 p2x0 d2x1",
    "conv2d n1 c2 h8 w8 k2 r4 psame",
    "conv1d n2 c4 w11 k2 r5 s2 p2 d2 g2",
    "conv_transpose2d n2 c4 h5 w6 k6 r3 s2 p1 g2 o1",
    "conv_transpose1d n1 c3 w7 k2 r4 s3 p1 o2",
    "max_pool2d n2 c3 h9 w8 r3 s2 p1",
    "max_pool2d n1 c2 h11 w9 r3x2 s2x1 p1x0 d2",
    "avg_pool2d n2 c3 h9 w8 r3 s2 p1",
    "global_avg_pool2d n2 c3 h5 w7",
]


@pytest.mark.parametrize("line", _TORCH_CASES)
def test_forward_out_shape_is_torchs(line):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p = parse_problem(line)
    x = torch.zeros(p.x_shape)
    one = (lambda pair: pair[1]) if p.one_d else tuple
    padding = p.padding if isinstance(p.padding, str) else one(p.padding)
    if p.op == "global_avg_pool2d":
        y = F.adaptive_avg_pool2d(x, 1)
    elif p.op == "max_pool2d":
        y = F.max_pool2d(x, p.kernel, p.stride, padding, p.dilation)
    elif p.op == "avg_pool2d":
        y = F.avg_pool2d(x, p.kernel, p.stride, padding)
    elif p.op in TRANSPOSED_OPS:
        y = getattr(F, p.op)(x, torch.zeros(p.w_shape), None, one(p.stride),
                             padding, one(p.output_padding), p.groups,
                             one(p.dilation))
    else:
        y = getattr(F, p.op)(x, torch.zeros(p.w_shape), None, one(p.stride),
                             padding, one(p.dilation), p.groups)
    assert p.forward_out_shape == tuple(y.shape)


def test_hand_computed_shapes():
    # conv2d: Ho = (9 + 2*1 - 3) // 2 + 1 = 5, Wo = (8 + 2 - 3) // 2 + 1 = 4;
    # weight (K, C/g, kh, kw) = (6, 2, 3, 3);
    # macs = N K (C/g) kh kw Ho Wo = 2*6*2*3*3*5*4 = 4320.
    p = parse_problem("conv2d n2 c4 h9 w8 k6 r3 s2 p1 g2")
    assert p.x_shape == (2, 4, 9, 8)
    assert p.w_shape == (6, 2, 3, 3)
    assert p.forward_out_shape == (2, 6, 5, 4)
    assert p.flops == 2 * 4320
    # conv_transpose2d: (H - 1) s - 2p + (k - 1) + o + 1 = 4*2 - 2 + 2 + 1 + 1
    # = 10 (H = 5, o = 1); W: 5*2 - 2 + 2 + 1 + 1 = 12; weight (C, K/g, k, k).
    t = parse_problem("conv_transpose2d n2 c4 h5 w6 k6 r3 s2 p1 g2 o1")
    assert t.w_shape == (4, 3, 3, 3)
    assert t.forward_out_shape == (2, 6, 10, 12)
    # conv1d: (11 + 4 - 2*(5-1) - 1) // 2 + 1 = 4.
    c = parse_problem("conv1d n2 c4 l11 k2 r5 s2 p2 d2 g2")
    assert c.x_shape == (2, 4, 11) and c.w_shape == (2, 2, 5)
    assert c.forward_out_shape == (2, 2, 4)
    # pooling keeps the channels, stride defaults to the window:
    # (9 - 3) // 3 + 1 = 3, (8 - 3) // 3 + 1 = 2.
    m = parse_problem("max_pool2d n1 c5 h9 w8 r3")
    assert m.stride == (3, 3) and m.w_shape is None and m.k is None
    assert m.forward_out_shape == (1, 5, 3, 2)
    assert m.flops == 0
    # float32: x (1*5*9*8 = 360) and y (1*5*3*2 = 30) moved once.
    assert m.bytes_moved(4) == 4 * (360 + 30)
    # backward: grad_out and x read, grad_x written.
    mb = parse_problem("max_pool2d_backward n1 c5 h9 w8 r3")
    assert mb.bytes_moved(8) == 8 * (30 + 2 * 360)


# --------------------------------------------------------------------------
# Mistakes
# --------------------------------------------------------------------------

def test_bad_line_names_the_file_line_and_field(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("# layers\n"
                    "conv2d n1 c4 h8 w8 k4 r3 p1\n"
                    "conv2d n1 c4 h8 w8 k4 r3 p1 g3\n"
                    "max_pool2d n1 c4 h8 w8 r2\n")
    with pytest.raises(ProblemError) as info:
        read_problems(path)
    exc = info.value
    assert "file.txt:3" in str(exc)
    assert exc.source == f"{path}:3"
    assert exc.field == "g"
    assert "'g'" in str(exc)


@pytest.mark.parametrize("line, field", [
    ("conv3d n1 c4 h8 w8 k4 r3", "op"),                     # unknown op
    ("conv2d n1 c4 h8 w8 k4 r3 d1 conv1d", "op"),           # op not first
    ("conv2d n1 c4 h8 w8 k4 r3 c5", "c"),                   # given twice
    ("conv1d n1 c4 w8 l9 k4 r3", "l"),                      # w and l twice
    ("conv2d n1 c4 h8 w8 k4 r3 name=a name=b", "name"),     # twice
    ("conv2d n1 h8 w8 k4 r3", "c"),                         # missing c
    ("conv2d n1 c4 h8 k4 r3", "w"),                         # missing w
    ("conv2d n1 c4 w8 k4 r3", "h"),                         # missing h
    ("conv2d n1 c4 h8 w8 r3", "k"),                         # missing k
    ("conv2d n1 c4 h8 w8 k4", "r"),                         # missing r
    ("max_pool2d n1 c4 h8 w8", "r"),                        # missing r
    ("conv2d n1 c4.5 h8 w8 k4 r3", "c"),                    # non-integer
    ("conv2d n1 c4 h8 w8 k4 r3 sx", "s"),                   # non-integer
    ("conv2d n1 c4 h8 w8 k4 r3x", "r"),                     # half a pair
    ("conv2d n1 c4 h8 w8 k4 r3 count=two", "count"),        # non-integer
    ("conv2d n1 c0 h8 w8 k4 r3", "c"),                      # zero
    ("conv2d n0 c4 h8 w8 k4 r3", "n"),                      # zero
    ("conv2d n1 c4 h8 w8 k4 r3 s0", "s"),                   # zero
    ("conv2d n1 c4 h8 w8 k4 r3 g0", "g"),                   # zero
    ("conv2d n1 c4 h8 w8 k4 r3 count=0", "count"),          # zero
    ("conv2d n1 c4 h8 w8 k4 r3 g3", "g"),                   # g does not divide
    ("conv2d n1 c6 h8 w8 k4 r3 g3", "g"),                   # g does not divide k
    ("conv2d n1 c4 h8 w8 k4 r3 s2 psame", "p"),             # same + stride 2
    ("conv2d n1 c4 h8 w8 k4 r3 pfull", "p"),                # unknown padding
    ("conv_transpose2d n1 c4 h8 w8 k4 r3 psame", "p"),      # conv rule only
    ("max_pool2d n1 c4 h8 w8 k4 r3", "k"),                  # no k on pooling
    ("conv2d n1 c4 h8 w8 k4 r3 o1", "o"),                   # no o on conv2d
    ("avg_pool2d n1 c4 h8 w8 r3 d2", "d"),                  # no d on avg
    ("conv1d n1 c4 h8 w8 k4 r3", "h"),                      # no h on conv1d
    ("global_avg_pool2d n1 c4 h8 w8 r3", "r"),              # no r on global
    ("max_pool2d n1 c4 h8 w8 r3 g1", "g"),                  # no g on pooling
    ("max_pool2d n1 c4 h8 w8 r3 p2", "p"),                  # 2p > window
    ("avg_pool2d n1 c4 h8 w8 r2x4 p0x3", "p"),              # 2p > window
    ("conv_transpose2d n1 c4 h8 w8 k4 r3 s2 o2", "o"),      # o >= stride
    ("conv2d n1 c4 h3 w3 k4 r5", "r"),                      # kernel > input
    ("conv2d n1 c4 h3 w3 k4 r3 d2", "r"),                   # dilated > input
    ("conv2d n1 c4 h2 w8 k4 r5 p1", "r"),                   # > padded input
    ("max_pool2d n1 c4 h2 w8 r3", "r"),                     # window > input
])
def test_each_mistake_names_its_field(line, field):
    with pytest.raises(ProblemError) as info:
        parse_problem(line, source="layers.txt:7")
    exc = info.value
    assert exc.field == field, str(exc)
    assert exc.source == "layers.txt:7"
    assert str(exc).startswith("layers.txt:7: ")


def test_unknown_field_names_the_token():
    with pytest.raises(ProblemError) as info:
        parse_problem("conv2d n1 c4 h8 w8 k4 r3 x5")
    assert info.value.field in ("x", "x5")
    assert "x5" in str(info.value)
    with pytest.raises(ProblemError) as info:
        parse_problem("conv2d n1 c4 h8 w8 k4 r3 size=3")
    assert info.value.field == "size"


@pytest.mark.parametrize("kwargs, field", [
    (dict(op="max_pool2d", c=4, h=8, w=8, k=4, kernel=3), "k"),
    (dict(op="conv2d", c=4, h=8, w=8, k=4, kernel=3, output_padding=1), "o"),
    (dict(op="avg_pool2d", c=4, h=8, w=8, kernel=3, dilation=2), "d"),
    (dict(op="conv1d", c=4, h=8, w=8, k=4, kernel=3), "h"),
    (dict(op="conv2d", c=4, h=8, w=8, k=4, kernel=3, stride=2,
          padding="same"), "p"),
    (dict(op="conv2d", c=4, h=8, w=8, k=4, kernel=(3, 3, 3)), "r"),
    (dict(op="conv2d", c=4, h=8, w=8.0, k=4, kernel=3), "w"),
    (dict(op="conv2d", c=True, h=8, w=8, k=4, kernel=3), "c"),
    (dict(op="max_pool2d", c=4, h=8, w=8, kernel=3, groups=2), "g"),
    (dict(op="nope", c=4, h=8, w=8, kernel=3), "op"),
])
def test_problem_names_the_field(kwargs, field):
    op = kwargs.pop("op")
    with pytest.raises(ProblemError) as info:
        problem(op, **kwargs)
    assert info.value.field == field, str(info.value)


def test_a_file_with_only_comments_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing here\n\n   \n# conv2d n1 c4 h8 w8 k4 r3\n")
    with pytest.raises(ProblemError) as info:
        read_problems(path)
    assert str(path) in str(info.value)


def test_comments_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# header\n"
                    "\n"
                    "conv2d n1 c4 h8 w8 k4 r3 # s2 is a comment here\n"
                    "   \t\n"
                    "max_pool2d n1 c4 h8 w8 r2#p1\n"
                    "n2 c1 h5 w5 k1 r1\n")          # op defaults to conv2d
    found = read_problems(path)
    assert [p.op for p in found] == ["conv2d", "max_pool2d", "conv2d"]
    assert found[0].stride == (1, 1)
    assert found[1].padding == (0, 0)
    assert found[2].n == 2
    assert parse_problem("  # only a comment") is None
    assert parse_problem("") is None


def test_a_missing_file_is_an_oserror(tmp_path):
    with pytest.raises(OSError):
        read_problems(tmp_path / "absent.txt")


# --------------------------------------------------------------------------
# Sets of problems
# --------------------------------------------------------------------------

def test_distinct_problems_sums_counts_and_keeps_first_labels():
    a1 = parse_problem("conv2d n1 c4 h8 w8 k4 r3 p1 name=first count=2")
    b = parse_problem("max_pool2d n1 c4 h8 w8 r2 name=pool")
    a2 = parse_problem("conv2d n1 c4 h8 w8 k4 r3 p1 name=second count=3")
    a3 = parse_problem("conv2d n1 c4 h8 w8 k4 r3 s1 p1 d1 g1 name=third")
    c = parse_problem("conv2d n1 c4 h8 w8 k4 r3 p0 name=other")
    merged = distinct_problems([a1, b, a2, c, a3])
    assert merged == [a1, b, c]
    assert [m.label for m in merged] == ["first", "pool", "other"]
    assert [m.count for m in merged] == [2 + 3 + 1, 1, 1]
    # The inputs are left as they were.
    assert (a1.count, a2.count) == (2, 3)


@settings(deadline=None)
@given(ps=st.lists(problems(), min_size=1, max_size=6), data=st.data())
def test_distinct_problems_keeps_the_total_count(ps, data):
    # Repeat some problems so that there is something to merge.
    extra = data.draw(st.lists(st.sampled_from(ps), max_size=4))
    everything = ps + extra
    merged = distinct_problems(everything)
    assert sum(p.count for p in merged) == sum(p.count for p in everything)
    assert len(set(merged)) == len(merged)
    assert set(merged) == set(everything)


def test_with_directions():
    conv = parse_problem("conv2d n1 c4 h8 w8 k4 r3 p1 name=c")
    pool = parse_problem("max_pool2d n1 c4 h8 w8 r2 name=m")
    avg = parse_problem("avg_pool2d n1 c4 h8 w8 r2")
    gap = parse_problem("global_avg_pool2d n1 c4 h8 w8")
    out, skipped = with_directions([conv, pool, avg, gap],
                                   ["fwd", "bwd_data", "bwd_weights"])
    assert [p.op for p in out] == [
        "conv2d", "conv2d_backward_data", "conv2d_backward_weights",
        "max_pool2d", "max_pool2d_backward",
        "avg_pool2d", "avg_pool2d_backward",
        "global_avg_pool2d"]
    # The derived problems keep the forward's shapes and count; their
    # labels name the direction (a table groups rows by label).
    for p in out[:3]:
        assert (p.x_shape, p.w_shape, p.forward_out_shape, p.count) == \
            (conv.x_shape, conv.w_shape, conv.forward_out_shape, conv.count)
    assert [p.label for p in out[:5]] == ["c", "c:bwd_data", "c:bwd_weights",
                                          "m", "m:bwd_data"]
    # An unlabelled problem's derived label is its short form, one word.
    assert out[6].label == f"{avg.short}:bwd_data".replace(" ", "_")
    assert (out[5].label, out[7].label) == ("", "")   # forward: as given
    assert [(d, desc.split()[0]) for desc, d, _ in skipped] == [
        ("bwd_weights", "max_pool2d"), ("bwd_weights", "avg_pool2d"),
        ("bwd_data", "global_avg_pool2d"), ("bwd_weights", "global_avg_pool2d")]
    for desc, _, why in skipped:
        assert why
        assert parse_problem(desc).op == desc.split()[0]


def test_with_directions_forward_only_and_one_skip():
    gap = parse_problem("global_avg_pool2d n1 c4 h8 w8")
    out, skipped = with_directions([gap], ["fwd", "bwd_data"])
    assert out == [gap]
    assert len(skipped) == 1
    desc, direction, why = skipped[0]
    assert (parse_problem(desc), direction) == (gap, "bwd_data")
    assert "global_avg_pool2d" in why
    out, skipped = with_directions([gap], ["bwd_data"])
    assert out == [] and len(skipped) == 1


def test_as_op_derives_backward_problems():
    conv = parse_problem("conv2d n2 c4 h8 w8 k6 r3 s2 p1 g2 name=l1 count=3")
    pool = parse_problem("max_pool2d n1 c4 h8 w8 r2")
    for op in ("conv2d_backward_data", "conv2d_backward_weights"):
        (derived,) = as_op([conv, pool], op)
        assert derived.op == op
        assert (derived.x_shape, derived.w_shape, derived.forward_out_shape) \
            == (conv.x_shape, conv.w_shape, conv.forward_out_shape)
        # The label names the direction: forward and backward rows of one
        # layer stay apart in a table.
        direction = "bwd_weights" if op.endswith("weights") else "bwd_data"
        assert (derived.label, derived.count) == (f"l1:{direction}", 3)
    (back,) = as_op([conv, pool], "max_pool2d_backward")
    assert back.op == "max_pool2d_backward"
    assert back.label == pool.short.replace(" ", "_") + ":bwd_data"
    assert back.forward_out_shape == pool.forward_out_shape
    # Problems of the op itself are taken as they are.
    given_ = parse_problem("conv2d_backward_data n1 c2 h5 w5 k2 r3")
    assert as_op([conv, given_], "conv2d_backward_data") == [given_]
    # Nothing to derive from.
    assert as_op([pool], "conv2d_backward_weights") == []
    assert as_op([conv], "avg_pool2d") == []


def test_as_op_derives_conv1d_from_one_row_conv2d():
    rows = [parse_problem("conv2d n2 c4 h1 w16 k6 r1x5 s1x2 p0x2 d1x2 g2 "
                          "name=tcn count=2"),
            parse_problem("conv2d n1 c3 h1 w9 k3 r1x4 psame"),
            parse_problem("conv2d n1 c3 h8 w9 k3 r3"),     # H > 1: not 1-D
            parse_problem("conv2d n1 c3 h1 w9 k3 r1 p0")]
    derived = as_op(rows, "conv1d")
    assert [p.op for p in derived] == ["conv1d"] * 3
    for p, source in zip(derived, [rows[0], rows[1], rows[3]]):
        assert p.x_shape == (source.n, source.c, source.w)
        assert p.w_shape == (source.k, source.c // source.groups,
                             source.kernel[1])
        assert (p.label, p.count) == (source.label, source.count)
        # The same arithmetic: conv1d's output is the 1-row conv2d's.
        n, k, ho, wo = _reference_forward(source).shape
        assert ho == 1
        assert p.forward_out_shape == _reference_forward(p).shape == (n, k, wo)
        assert p.macs == source.macs


def test_as_op_conv1d_is_the_same_computation_when_rows_are_padded():
    source = parse_problem("conv2d n1 c4 h1 w16 k4 r1x3 p1")
    assert source.forward_out_shape == (1, 4, 3, 16)   # (1 + 2 - 1) + 1 rows
    derived = as_op([source], "conv1d")
    # Either the problem is left out (it is no 1-D convolution) or the
    # derived one computes the same number of outputs.
    assert all(p.macs == source.macs for p in derived), \
        [(p.descriptor(), p.macs, source.macs) for p in derived]


# --------------------------------------------------------------------------
# Writing problem files
# --------------------------------------------------------------------------

@settings(deadline=None)
@given(ps=st.lists(problems(), min_size=1, max_size=8),
       header=st.sampled_from([None, "", "one line", "two\nlines # with #"]))
def test_format_problems_reads_back(ps, header, tmp_path_factory):
    path = tmp_path_factory.mktemp("fmt") / "problems.txt"
    text = format_problems(ps, header=header)
    path.write_text(text, encoding="utf-8")
    back = read_problems(path)
    assert back == ps
    assert [(p.label, p.count) for p in back] == \
        [(p.label, p.count) for p in ps]
    for line in (header or "").splitlines():
        assert f"# {line}" in text


def test_format_problems_writes_one_descriptor_per_line():
    ps = [parse_problem("conv2d n1 c4 h8 w8 k4 r3 p1 name=a"),
          parse_problem("max_pool2d n1 c4 h8 w8 r2 count=2")]
    text = format_problems(ps, header="made by a test")
    lines = text.splitlines()
    assert lines[0] == "# made by a test"
    assert [parse_problem(line) for line in lines[1:]] == ps
    assert text.endswith("\n")


@pytest.mark.parametrize("label", ["a b", "tab\there", "x#1"])
def test_a_label_that_would_not_read_back_is_rejected(label):
    # The descriptor is one line of space-separated fields; '#' starts a
    # comment: such a label could not be parsed back.
    with pytest.raises(ProblemError) as info:
        problem("conv2d", c=1, h=4, w=4, k=1, kernel=3, label=label)
    assert info.value.field == "name"
