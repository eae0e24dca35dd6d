"""Helpers shared by the test modules: error bounds, configurations, strategies.

Accuracy is always judged with the documented bound of
:mod:`kernels.accuracy`::

    |y - y_ref| <= c[algorithm, dtype] * u * (|x| * |w| + |bias|) + tiny

with ``y_ref`` and the scale ``|x| * |w| + |bias|`` both computed by
``reference`` in float64 (the bias enters the scale like a tap whose input
is one).  Identities between two computed results (``lhs == rhs``) are
checked against the sum of the bounds of both sides.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import kernels
import reference
from kernels import _dispatch
from kernels.accuracy import error_bound, error_in_bound_units, unit_roundoff

ALL_ALGORITHMS = kernels.ALGORITHMS
DTYPES = (np.float32, np.float64)
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


# "name:package:directory": a backend outside this package to test instead
# of the built-in ones (tests/test_backend_contract.py writes one).
EXTRA_BACKEND_VAR = "CONVBENCH_TEST_BACKEND"


def _register_extra_backend():
    import os
    import sys
    spec = os.environ.get(EXTRA_BACKEND_VAR)
    if not spec:
        return None
    name, package, directory = spec.split(":", 2)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    if name not in _dispatch.backends():
        _dispatch.register_backend(name, package)
    return name


_EXTRA_BACKEND = _register_extra_backend()


# Comma-separated backends to run the backend-parametrised suites on,
# e.g. "cpu,cuda" on a GPU machine (benchmarks/cuda_device.py sets it).
BACKENDS_VAR = "CONVBENCH_TEST_BACKENDS"


def _usable(backend):
    if backend != "cuda":
        return True
    from cuda_support import CUDA_USABLE, SIMULATED
    # The simulator runs a 256-thread block in about a second: the whole
    # property suite would take hours, so there the tests/test_cuda_*.py
    # files (tiny shapes, every op and algorithm) stand for it.
    return CUDA_USABLE and not SIMULATED


def backends_under_test():
    """Backends the backend-parametrised suites run on.

    ``$CONVBENCH_TEST_BACKEND`` (one out-of-tree backend) or
    ``$CONVBENCH_TEST_BACKENDS`` (a list) when set; else the backends of
    ``kernels.BACKENDS`` with at least one algorithm built that can run
    here at full speed (CUDA: on a GPU, not in the simulator).
    """
    import os
    if _EXTRA_BACKEND is not None:
        return (_EXTRA_BACKEND,)
    chosen = os.environ.get(BACKENDS_VAR)
    if chosen:
        return tuple(b.strip() for b in chosen.split(",") if b.strip())
    return tuple(b for b in kernels.BACKENDS
                 if kernels.built_algorithms(b) and _usable(b))


class BackendUnderTest:
    """``kernels``' public functions with ``backend=`` bound to the backend
    under test; the ``backend`` fixture (conftest.py) sets :attr:`backend`.

    ``api.conv2d(x, w, ...)`` is ``kernels.conv2d(x, w, ...,
    backend=api.backend)``; an explicit ``backend=`` in the call wins.
    """

    def __init__(self, backend="cpu"):
        self.backend = backend

    def __getattr__(self, name):
        function = getattr(kernels, name)
        if callable(function) and "backend" in inspect.signature(function).parameters:
            return functools.partial(function, backend=self.backend)
        return function


api = BackendUnderTest()


def conv_function(nsp):
    """``kernels.conv1d`` or ``kernels.conv2d`` on the backend under test."""
    return {1: api.conv1d, 2: api.conv2d}[nsp]


def reference_function(nsp):
    """``reference.conv1d`` or ``reference.conv2d``."""
    return {1: reference.conv1d, 2: reference.conv2d}[nsp]


# --------------------------------------------------------------------------
# Which algorithm supports what
# --------------------------------------------------------------------------

def _as_tuple(value, nsp):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * nsp


def padding_pairs(padding, kernel, dilation=1, stride=1):
    """Per-axis ``(lo, hi)`` of an int, tuple, ``"valid"`` or ``"same"``."""
    nsp = len(kernel)
    dilation = _as_tuple(dilation, nsp)
    if padding == "valid":
        return [(0, 0)] * nsp
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in _as_tuple(padding, nsp)]


def normalised_config(nsp, x_shape, w_shape, stride=1, padding=0, dilation=1,
                      groups=1, padding_mode="zeros"):
    """The 2-D problem the front-end hands to an algorithm (its contract).

    Returns ``(x_shape, w_shape, stride, padding, dilation, groups)`` as
    ``kernels._dispatch.ConvSpec.from_config`` takes them: batched NCHW
    shapes, ``(top, bottom, left, right)`` zero padding (reflect, replicate
    and circular padding already applied), 1-D as 2-D with a height of one.
    """
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if len(x_shape) == nsp + 1:
        x_shape = (1,) + x_shape
    stride, dilation = _as_tuple(stride, nsp), _as_tuple(dilation, nsp)
    pads = padding_pairs(padding, w_shape[2:], dilation, stride)
    if padding_mode != "zeros" and any(lo or hi for lo, hi in pads):
        x_shape = x_shape[:2] + tuple(n + lo + hi for n, (lo, hi)
                                      in zip(x_shape[2:], pads))
        pads = [(0, 0)] * nsp
    if nsp == 1:
        return (x_shape[:2] + (1,) + x_shape[2:], w_shape[:2] + (1,) + w_shape[2:],
                (1,) + stride, (0, 0) + pads[0], (1,) + dilation, groups)
    return (x_shape, w_shape, stride, pads[0] + pads[1], dilation, groups)


def unsupported_reason(algorithm, nsp, x_shape, w_shape, stride=1, padding=0,
                       dilation=1, groups=1, padding_mode="zeros"):
    """None when ``algorithm`` computes this public-API problem, else why not."""
    spec = _dispatch.ConvSpec.from_config(*normalised_config(
        nsp, x_shape, w_shape, stride, padding, dilation, groups, padding_mode))
    return _dispatch.unsupported_reason("conv2d", api.backend, algorithm, spec)


def supports(algorithm, nsp, x_shape, w_shape, **conv_kwargs):
    """True when ``algorithm`` can compute the problem (for ``assume``)."""
    return unsupported_reason(algorithm, nsp, x_shape, w_shape, **conv_kwargs) is None


def scipy_style_supported(algorithm, in1_shape, in2_shape, mode="full"):
    """Whether ``kernels.correlate/convolve(in1, in2, mode, method=algorithm)``
    is computable: the front-end correlates the larger input (in ``valid``
    mode) with the smaller, padded as ``mode`` says."""
    a = tuple(in1_shape) if len(in1_shape) == 2 else (1,) + tuple(in1_shape)
    b = tuple(in2_shape) if len(in2_shape) == 2 else (1,) + tuple(in2_shape)
    if mode == "valid" and not all(p >= q for p, q in zip(a, b)):
        a, b = b, a
    pads = {"full": lambda n2: (n2 - 1, n2 - 1), "valid": lambda n2: (0, 0),
            "same": lambda n2: (n2 - 1 - (n2 - 1) // 2, (n2 - 1) // 2)}[mode]
    spec = _dispatch.ConvSpec.from_config((1, 1) + a, (1, 1) + b, (1, 1),
                                          pads(b[0]) + pads(b[1]), (1, 1), 1)
    return _dispatch.unsupported_reason("conv2d", api.backend, algorithm,
                                        spec) is None


# --------------------------------------------------------------------------
# Bounds and assertions
# --------------------------------------------------------------------------

def abs_scale(x, w, bias=None, **conv_kwargs):
    """``|x| * |w| + |bias|`` in float64: the scale of the error bound."""
    ref = reference_function(np.ndim(w) - 2)
    b = None if bias is None else np.abs(bias)
    return ref(np.abs(x), np.abs(w), b, **conv_kwargs)


def _describe(arrays, conv_kwargs):
    parts = [f"{name}: shape {np.shape(a)} dtype {getattr(a, 'dtype', type(a))}"
             for name, a in arrays.items() if a is not None]
    parts += [f"{k}={v!r}" for k, v in conv_kwargs.items()]
    return "; ".join(parts)


def assert_close_within(actual, expected, tolerance, what):
    """``|actual - expected| <= tolerance`` elementwise, with a useful message."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (
        f"{what}: shape {actual.shape} != expected {expected.shape}")
    err = np.abs(actual - expected)
    excess = err - tolerance
    if actual.size and not (excess <= 0).all():
        bad = np.unravel_index(np.nanargmax(np.where(np.isnan(excess), np.inf, excess)),
                               excess.shape)
        raise AssertionError(
            f"{what}: {int((~(excess <= 0)).sum())} of {actual.size} elements "
            f"outside the tolerance; worst at {bad}: got {actual[bad]!r}, "
            f"expected {expected[bad]!r}, |diff| {err[bad]:.3e} > tolerance "
            f"{tolerance[bad] if np.ndim(tolerance) else tolerance:.3e}")


def assert_within_bound(algorithm, y, x, w, bias=None, y_ref=None, **conv_kwargs):
    """Check a result of ``kernels.conv1d/conv2d`` against ``reference``.

    Checks dtype (that of ``x``), shape, NaN exactly where the reference
    has NaN, equal infinities, and the documented bound elsewhere.
    ``conv_kwargs`` are the keyword arguments of the call (stride, padding,
    dilation, groups, padding_mode); ``algorithm`` names the bound used.
    """
    x_dtype = np.asarray(x).dtype
    context = (f"algorithm={algorithm!r}: "
               f"{_describe({'x': x, 'w': w, 'bias': bias}, conv_kwargs)}")
    assert y.dtype == x_dtype, f"{context}: output dtype {y.dtype} != {x_dtype}"
    if y_ref is None:
        y_ref = reference_function(np.ndim(w) - 2)(x, w, bias, **conv_kwargs)
    assert y.shape == y_ref.shape, f"{context}: shape {y.shape} != {y_ref.shape}"
    nan_ref, nan_y = np.isnan(y_ref), np.isnan(y)
    assert (nan_ref == nan_y).all(), (
        f"{context}: NaN pattern differs from the reference at "
        f"{np.argwhere(nan_ref != nan_y)[:5].tolist()} (first five)")
    inf_ref = np.isinf(y_ref)
    assert (np.isinf(y) == inf_ref).all() and (y[inf_ref] == y_ref[inf_ref]).all(), (
        f"{context}: infinities differ from the reference at "
        f"{np.argwhere(np.isinf(y) != inf_ref)[:5].tolist()} (first five)")
    finite = np.isfinite(y_ref)
    scale = abs_scale(x, w, bias, **conv_kwargs)
    normwise = kernels.accuracy.normwise_scale(x, w)
    bound = error_bound(algorithm, x_dtype, np.where(finite, scale, 0.0), normwise)
    try:
        assert_close_within(np.where(finite, y, 0), np.where(finite, y_ref, 0),
                            bound, context)
    except AssertionError as exc:
        c = error_in_bound_units(algorithm, x_dtype, np.where(finite, y, 0),
                                 np.where(finite, y_ref, 0), np.where(finite, scale, 0),
                                 normwise)
        raise AssertionError(f"{exc}\nobserved error constant c = {c:.1f} "
                             f"(documented: {kernels.accuracy.error_constant(algorithm, x_dtype)})"
                             ) from None


def bound(algorithm, dtype, scale, normwise=None):
    """The documented bound for a float64 scale array.

    ``normwise``: scale of the whole computed correlation for FFT/Winograd
    (see ``kernels.accuracy.normwise_scale``).
    """
    return error_bound(algorithm, dtype, scale, normwise)


def u(dtype):
    """Unit roundoff of ``dtype``."""
    return unit_roundoff(dtype)


def random_array(rng, shape, dtype):
    """Standard normal values, rounded to ``dtype``."""
    return rng.standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------
# Hypothesis strategies
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ConvProblem:
    """A random, valid ``conv1d``/``conv2d`` problem (shapes, arguments, seed)."""

    nsp: int
    x_shape: tuple
    w_shape: tuple
    has_bias: bool
    stride: tuple
    padding: object
    dilation: tuple
    groups: int
    padding_mode: str
    seed: int

    @property
    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding,
                    dilation=self.dilation, groups=self.groups,
                    padding_mode=self.padding_mode)

    def arrays(self, dtype):
        """``(x, w, bias)`` of ``dtype`` from the problem's seed."""
        rng = np.random.default_rng(self.seed)
        x = random_array(rng, self.x_shape, dtype)
        w = random_array(rng, self.w_shape, dtype)
        bias = random_array(rng, (self.w_shape[0],), dtype) if self.has_bias else None
        return x, w, bias

    def supported_by(self, algorithm):
        return supports(algorithm, self.nsp, self.x_shape, self.w_shape, **self.kwargs)

    def run(self, algorithm, x, w, bias):
        return conv_function(self.nsp)(x, w, bias, algorithm=algorithm, **self.kwargs)


def _min_size(k_eff, lo, hi, padding_mode):
    """Smallest input length for which the problem is valid."""
    size = max(1, k_eff - lo - hi)
    if padding_mode == "reflect":
        size = max(size, max(lo, hi) + 1)
    if padding_mode == "circular":
        size = max(size, max(lo, hi))
    return size


@st.composite
def conv_problems(draw, nsp, *, max_batch=2, max_kernel=5, max_extra=7,
                  groups=True, bias=True, padding_modes=PADDING_MODES,
                  unbatched=True, stride_one=False, paddings=("int", "tuple", "valid", "same")):
    """Valid conv problems covering stride, padding, dilation, groups, bias.

    Half of the examples have stride 1, dilation 1 and inputs at least as
    large as the kernel, so that algorithms restricted to those (Winograd)
    still get many examples.
    """
    n_groups = draw(st.sampled_from((1, 1, 2, 3))) if groups else 1
    c_group, k_group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, max_kernel)) for _ in range(nsp))
    simple = stride_one or draw(st.booleans())
    if simple:
        stride = dilation = (1,) * nsp
    else:
        stride = tuple(draw(st.integers(1, 3)) for _ in range(nsp))
        dilation = tuple(draw(st.integers(1, 3)) for _ in range(nsp))
    kinds = [p for p in paddings if p != "same" or all(s == 1 for s in stride)]
    kind = draw(st.sampled_from(kinds))
    if kind == "int":
        padding = draw(st.integers(0, 3))
    elif kind == "tuple":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(nsp))
    else:
        padding = kind
    mode = draw(st.sampled_from(("zeros",) + tuple(padding_modes)))
    pads = padding_pairs(padding, kernel, dilation, stride)
    spatial = []
    for k, d, (lo, hi) in zip(kernel, dilation, pads):
        smallest = _min_size(d * (k - 1) + 1, lo, hi, mode)
        if simple:
            # at least the kernel, as Winograd needs; tinier inputs (windows
            # that are mostly padding) come from the other half
            smallest = max(smallest, k)
        spatial.append(draw(st.integers(smallest, smallest + max_extra)))
    batch = draw(st.integers(1, max_batch))
    x_shape = (n_groups * c_group,) + tuple(spatial)
    if not (unbatched and draw(st.booleans())):
        x_shape = (batch,) + x_shape
    return ConvProblem(
        nsp=nsp, x_shape=x_shape, w_shape=(n_groups * k_group, c_group) + kernel,
        has_bias=bias and draw(st.booleans()), stride=stride, padding=padding,
        dilation=dilation, groups=n_groups, padding_mode=mode,
        seed=draw(st.integers(0, 2**32 - 1)))


@st.composite
def grouped_conv2d_problems(draw, max_size, max_channels, max_kernel,
                            max_stride, max_padding):
    """(x_shape, w_shape, conv2d kwargs) of a small zero-padded problem.

    ``max_stride`` and ``max_padding`` are (rows, columns) bounds; groups
    1-2, dilation 1-2, batch 1-2, and the dilated kernel fits the padded
    input.  Shared by the transposed-convolution and backward tests.
    """
    groups = draw(st.integers(1, 2))
    c_g = draw(st.integers(1, max_channels))
    k_g = draw(st.integers(1, max_channels))
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = tuple(draw(st.integers(1, m)) for m in max_stride)
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, m)) for m in max_padding)
    size = (draw(st.integers(1, max_size)), draw(st.integers(1, max_size)))
    for n, k, d, p in zip(size, kernel, dilation, padding):
        assume(d * (k - 1) + 1 <= n + 2 * p)
    x_shape = (draw(st.integers(1, 2)), groups * c_g) + size
    w_shape = (groups * k_g, c_g) + kernel
    return x_shape, w_shape, dict(stride=stride, padding=padding,
                                  dilation=dilation, groups=groups)


def kernel_shapes_run(monkeypatch):
    """A list that receives the kernel shape (kH, kW) of every problem
    ``conv1d``/``conv2d`` hand to ``kernels._conv.run_conv2d`` (a spy):
    the live taps' shape where the front end left taps out."""
    from kernels import _conv
    seen = []
    real = _conv.run_conv2d

    def spy(spec, *args):
        seen.append(spec.w_shape[2:])
        return real(spec, *args)

    monkeypatch.setattr(_conv, "run_conv2d", spy)
    return seen
