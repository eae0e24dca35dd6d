"""kernels.geometry: formulas against brute-force enumeration and PyTorch."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from kernels import geometry

sizes = st.integers(0, 40)
kernels_ = st.integers(1, 9)
strides = st.integers(1, 5)
dilations = st.integers(1, 4)
pads = st.integers(0, 6)


def windows_by_enumeration(n, k, stride, lo, hi, dilation):
    """Number of window positions s i (i = 0, 1, ...) whose taps s i + d j
    all lie in the padded input [0, n + lo + hi)."""
    padded = n + lo + hi
    count, start = 0, 0
    while start + dilation * (k - 1) < padded:
        count += 1
        start += stride
    return count


@given(n=st.integers(1, 40), k=kernels_, stride=strides, lo=pads, hi=pads,
       dilation=dilations)
def test_live_taps_are_those_that_meet_the_input(n, k, stride, lo, hi,
                                                 dilation):
    count = windows_by_enumeration(n, k, stride, lo, hi, dilation)
    assume(count > 0)
    # tap j of window i reads input position s i + d j - lo
    meeting = [j for j in range(k)
               if any(0 <= stride * i + dilation * j - lo < n
                      for i in range(count))]
    expected = (meeting[0], meeting[-1]) if meeting else None
    assert geometry.live_taps(n, k, stride, (lo, hi), dilation) == expected
    if lo == hi:
        assert geometry.live_taps(n, k, stride, lo, dilation) == expected


@given(n=sizes, k=kernels_, stride=strides, lo=pads, hi=pads, dilation=dilations)
def test_conv_output_size_counts_the_windows(n, k, stride, lo, hi, dilation):
    count = windows_by_enumeration(n, k, stride, lo, hi, dilation)
    if count == 0:
        with pytest.raises(ValueError, match="larger than the padded input"):
            geometry.conv_output_size(n, k, stride, (lo, hi), dilation)
        return
    assert geometry.conv_output_size(n, k, stride, (lo, hi), dilation) == count
    if lo == hi:
        assert geometry.conv_output_size(n, k, stride, lo, dilation) == count


@given(n=sizes, k=kernels_, stride=strides, lo=pads, hi=pads, dilation=dilations)
def test_conv_spec_out_hw_counts_the_windows(n, k, stride, lo, hi, dilation):
    """The problem record computes its output size inline (the front ends
    ask on every call); it must count the same windows, along either
    axis, and refuse an impossible record as the checked formula does."""
    import numpy as np
    from kernels._dispatch import ConvSpec
    count = windows_by_enumeration(n, k, stride, lo, hi, dilation)
    for axis in (0, 1):
        shape, kernel = [7, 7], [1, 1]
        shape[axis], kernel[axis] = n, k
        stride2, dilation2, padding = [1, 1], [1, 1], [0, 0, 0, 0]
        stride2[axis], dilation2[axis] = stride, dilation
        padding[2 * axis:2 * axis + 2] = lo, hi
        spec = ConvSpec((1, 1, *shape), (1, 1, *kernel), tuple(stride2),
                        tuple(padding), tuple(dilation2), 1,
                        np.dtype(np.float32))
        if count == 0:
            with pytest.raises(ValueError, match="larger than the padded input"):
                spec.out_hw
        else:
            assert spec.out_hw[axis] == count and spec.out_hw[1 - axis] == 7


@given(n=st.integers(1, 30), k=kernels_, stride=strides, lo=pads, hi=pads,
       dilation=dilations, output_padding=st.integers(0, 4))
def test_conv_transpose_output_size_is_the_extent_of_the_scatter(n, k, stride, lo, hi,
                                                                 dilation, output_padding):
    """Input i scatters to s i + d j (j < k); the full result spans the
    largest such index + 1; padding crops lo and hi, output_padding adds."""
    assume(output_padding < stride or output_padding < dilation)
    extent = max(stride * i + dilation * j for i in range(n) for j in range(k)) + 1
    expected = extent - lo - hi + output_padding
    if expected < 1:
        with pytest.raises(ValueError):
            geometry.conv_transpose_output_size(n, k, stride, (lo, hi), output_padding,
                                                dilation)
        return
    size = geometry.conv_transpose_output_size(n, k, stride, (lo, hi), output_padding,
                                               dilation)
    assert size == expected
    if output_padding < stride:
        # A convolution with the same arguments maps that size back to n
        # (the output_padding extra elements are floored away by the stride).
        assert geometry.conv_output_size(size, k, stride, (lo, hi), dilation) == n


def pool_windows_by_enumeration(n, k, stride, padding, dilation, ceil_mode):
    """Windows start at s i - p in the input.  The first always exists; in
    floor mode window i must end inside the padded input; in ceil mode it
    exists while the previous one ended before the padded end, and must
    start inside the input or the left padding (PyTorch's rule)."""
    padded, k_eff = n + 2 * padding, dilation * (k - 1) + 1
    count = 1
    while True:
        i = count
        if ceil_mode:
            exists = stride * (i - 1) + k_eff < padded and stride * i - padding < n
        else:
            exists = stride * i + k_eff <= padded
        if not exists:
            return count
        count += 1


@given(n=st.integers(1, 40), k=kernels_, stride=st.one_of(st.none(), strides),
       padding=st.integers(0, 4), dilation=dilations, ceil_mode=st.booleans())
def test_pool_output_size_counts_the_windows(n, k, stride, padding, dilation, ceil_mode):
    s = k if stride is None else stride
    assume(padding <= k // 2)
    # ceil mode keeps a window that overhangs the end by up to s - 1
    assume(dilation * (k - 1) + 1 <= n + 2 * padding + (s - 1 if ceil_mode else 0))
    assert geometry.pool_output_size(n, k, stride, padding, dilation, ceil_mode) == \
        pool_windows_by_enumeration(n, k, s, padding, dilation, ceil_mode)


def test_pool_output_size_ceil_mode_examples():
    # n=5, k=2, s=2, p=1: windows start at -1, 1, 3 (floor: 3); ceil mode
    # would add one at 5, which starts in the right padding: dropped.
    assert geometry.pool_output_size(5, 2, 2, 1, ceil_mode=False) == 3
    assert geometry.pool_output_size(5, 2, 2, 1, ceil_mode=True) == 3
    # n=6, k=3, s=2: windows at 0, 2 fit; ceil mode adds the one at 4,
    # which overhangs the end by one.
    assert geometry.pool_output_size(6, 3, 2, 0, ceil_mode=False) == 2
    assert geometry.pool_output_size(6, 3, 2, 0, ceil_mode=True) == 3


@given(k=kernels_, dilation=dilations, n=st.integers(1, 30))
def test_same_padding_keeps_the_size_and_puts_the_extra_element_high(k, dilation, n):
    lo, hi = geometry.same_padding(k, dilation)
    assert lo + hi == dilation * (k - 1)
    assert hi - lo in (0, 1)
    assume(n + lo + hi >= dilation * (k - 1) + 1)
    assert geometry.conv_output_size(n, k, 1, (lo, hi), dilation) == n


def receptive_field_by_enumeration(layers):
    """Extent of the input indices feeding output 0 of a layer stack."""
    indices = {0}
    for k, s, d in reversed([tuple(layer) + (1,) * (3 - len(layer)) for layer in layers]):
        indices = {s * i + d * j for i in indices for j in range(k)}
    return max(indices) - min(indices) + 1


@given(layers=st.lists(st.tuples(kernels_, strides, dilations), min_size=0, max_size=5))
def test_receptive_field_matches_enumeration(layers):
    assert geometry.receptive_field(layers) == receptive_field_by_enumeration(layers)
    assert geometry.receptive_field([layer[:2] for layer in layers]) == \
        receptive_field_by_enumeration([layer[:2] for layer in layers])


@given(c_in=st.integers(1, 64), c_out=st.integers(1, 64), k=st.integers(1, 7),
       bias=st.booleans(), groups=st.integers(1, 8))
def test_conv_params_counts_each_weight_once(c_in, c_out, k, bias, groups):
    assume(c_in % groups == 0 and c_out % groups == 0)
    # every output channel sees c_in / groups channels through k*k taps
    per_output = sum(1 for _ in range(c_in // groups) for _ in range(k * k))
    expected = c_out * per_output + (c_out if bias else 0)
    assert geometry.conv_params(c_in, c_out, k, bias, groups) == expected
    assert geometry.conv_params(c_in, c_out, (k, k), bias, groups) == expected


@given(c_in=st.integers(1, 16), c_out=st.integers(1, 16), kh=st.integers(1, 5),
       kw=st.integers(1, 5), kd=st.integers(1, 3), bias=st.booleans())
def test_conv_params_of_rectangular_and_3d_kernels(c_in, c_out, kh, kw, kd, bias):
    b = c_out if bias else 0
    assert geometry.conv_params(c_in, c_out, (kh, kw), bias) == c_out * c_in * kh * kw + b
    assert geometry.conv_params(c_in, c_out, (kd, kh, kw), bias) == \
        c_out * c_in * kd * kh * kw + b
    assert geometry.conv_params(c_in, c_out, (kw,), bias) == c_out * c_in * kw + b


def test_docstring_examples():
    failures, tried = doctest.testmod(geometry, verbose=False)
    assert tried > 0 and failures == 0


# --------------------------------------------------------------------------
# Against PyTorch (when installed)
# --------------------------------------------------------------------------

@given(n=st.integers(1, 30), k=kernels_, stride=strides, padding=pads, dilation=dilations,
       two_d=st.booleans())
def test_conv_output_size_matches_torch(n, k, stride, padding, dilation, two_d):
    torch = pytest.importorskip("torch")
    assume(dilation * (k - 1) + 1 <= n + 2 * padding)
    f = torch.nn.functional.conv2d if two_d else torch.nn.functional.conv1d
    spatial = (n, n + 1) if two_d else (n + 1,)
    kernel = (k, k) if two_d else (k,)
    x, w = torch.zeros((1, 1) + spatial), torch.zeros((1, 1) + kernel)
    expected = f(x, w, stride=stride, padding=padding, dilation=dilation).shape[2:]
    got = tuple(geometry.conv_output_size(m, k, stride, padding, dilation) for m in spatial)
    assert got == tuple(expected)


@given(n=st.integers(1, 20), k=kernels_, stride=strides, padding=pads, dilation=dilations,
       output_padding=st.integers(0, 4))
def test_conv_transpose_output_size_matches_torch(n, k, stride, padding, dilation,
                                                  output_padding):
    torch = pytest.importorskip("torch")
    assume(output_padding < stride or output_padding < dilation)
    x, w = torch.zeros((1, 1, n)), torch.zeros((1, 1, k))
    try:
        expected = torch.nn.functional.conv_transpose1d(
            x, w, stride=stride, padding=padding, output_padding=output_padding,
            dilation=dilation).shape[2]
    except RuntimeError:
        with pytest.raises(ValueError):
            geometry.conv_transpose_output_size(n, k, stride, padding, output_padding, dilation)
        return
    assert geometry.conv_transpose_output_size(n, k, stride, padding, output_padding,
                                               dilation) == expected


@given(n=st.integers(1, 30), k=kernels_, stride=st.one_of(st.none(), strides),
       padding=st.integers(0, 4), dilation=dilations, ceil_mode=st.booleans())
def test_pool_output_size_matches_torch(n, k, stride, padding, dilation, ceil_mode):
    torch = pytest.importorskip("torch")
    s = k if stride is None else stride
    assume(padding <= k // 2)
    assume(dilation * (k - 1) + 1 <= n + 2 * padding + (s - 1 if ceil_mode else 0))
    x = torch.zeros((1, 1, n))
    expected = torch.nn.functional.max_pool1d(
        x, k, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode).shape[2]
    assert geometry.pool_output_size(n, k, stride, padding, dilation, ceil_mode) == expected
    if dilation == 1:
        expected_avg = torch.nn.functional.avg_pool1d(
            x, k, stride=stride, padding=padding, ceil_mode=ceil_mode).shape[2]
        assert geometry.pool_output_size(n, k, stride, padding, 1, ceil_mode) == expected_avg


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@given(k=kernels_, dilation=dilations, n=st.integers(1, 20))
def test_same_padding_matches_torch(k, dilation, n):
    torch = pytest.importorskip("torch")
    lo, hi = geometry.same_padding(k, dilation)
    assume(n + lo + hi >= dilation * (k - 1) + 1)
    gen = torch.Generator().manual_seed(k * 100 + dilation * 10 + n)
    x = torch.randn((1, 1, n), generator=gen, dtype=torch.float64)
    w = torch.randn((1, 1, k), generator=gen, dtype=torch.float64)
    same = torch.nn.functional.conv1d(x, w, padding="same", dilation=dilation)
    explicit = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (lo, hi)), w,
                                          dilation=dilation)
    assert torch.equal(same, explicit)


@given(c_in=st.integers(1, 16), c_out=st.integers(1, 16), k=st.integers(1, 5),
       bias=st.booleans(), groups=st.integers(1, 4))
def test_conv_params_matches_torch(c_in, c_out, k, bias, groups):
    torch = pytest.importorskip("torch")
    assume(c_in % groups == 0 and c_out % groups == 0)
    layer = torch.nn.Conv2d(c_in, c_out, k, bias=bias, groups=groups, device="meta")
    assert geometry.conv_params(c_in, c_out, k, bias, groups) == \
        sum(p.numel() for p in layer.parameters())


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------

@pytest.mark.parametrize("call, exc, match", [
    (lambda: geometry.conv_output_size(3, 5), ValueError, "larger than the padded input"),
    (lambda: geometry.conv_output_size(3, 2, dilation=3), ValueError, "dilated size 4"),
    (lambda: geometry.conv_output_size(8, 3, stride=0), ValueError, "stride"),
    (lambda: geometry.conv_output_size(8, 3, padding=-1), ValueError, "padding"),
    (lambda: geometry.conv_output_size(8, 3, padding=(1, 2, 3)), ValueError, "padding"),
    (lambda: geometry.conv_output_size(8, 0), ValueError, r"\bk\b"),
    (lambda: geometry.conv_output_size(-1, 3), ValueError, r"\bn\b"),
    (lambda: geometry.conv_output_size(8.0, 3), TypeError, r"\bn\b"),
    (lambda: geometry.conv_output_size(8, 3, stride=True), TypeError, "stride"),
    (lambda: geometry.conv_output_size(8, 3, dilation=0), ValueError, "dilation"),
    (lambda: geometry.conv_transpose_output_size(4, 3, stride=2, output_padding=2),
     ValueError, "output_padding"),
    (lambda: geometry.conv_transpose_output_size(1, 1, padding=1), ValueError, "not positive"),
    (lambda: geometry.pool_output_size(8, 3, padding=2), ValueError, "half the kernel"),
    (lambda: geometry.pool_output_size(1, 5, padding=1), ValueError, "larger than the padded"),
    (lambda: geometry.receptive_field([(3,)]), ValueError, "each layer"),
    (lambda: geometry.receptive_field([(3, 0)]), ValueError, "stride"),
    (lambda: geometry.conv_params(6, 4, 3, groups=4), ValueError, "groups"),
    (lambda: geometry.conv_params(0, 4, 3), ValueError, "c_in"),
    (lambda: geometry.effective_kernel_size(3, 0), ValueError, "dilation"),
])
def test_bad_arguments_are_rejected_naming_the_argument(call, exc, match):
    """Each bad call raises ``exc`` with a message naming the argument."""
    with pytest.raises(exc, match=match):
        call()


@given(k=kernels_, dilation=dilations)
def test_effective_kernel_size_is_the_span_of_the_taps(k, dilation):
    taps = [dilation * j for j in range(k)]
    assert geometry.effective_kernel_size(k, dilation) == max(taps) - min(taps) + 1
