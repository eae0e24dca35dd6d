"""Public convolution functions: validate once, normalise, dispatch.

``conv1d``/``conv2d`` follow ``torch.nn.functional.conv1d/conv2d`` (plus
``padding_mode`` of ``torch.nn.Conv2d``); ``correlate``/``convolve``
follow ``scipy.signal.correlate/convolve`` for 1-D and 2-D inputs.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from . import _arrays, _dispatch
from ._choose import choose_for_spec, thresholds_key
from ._dispatch import ConvSpec, check_backend
from ._validation import (ALGORITHMS, FLOAT_DTYPES, MIXING_ALGORITHMS,
                          PADDING_MODES,
                          check_algorithm, check_choice, check_groups,
                          check_ndim, check_same_dtype, int_tuple,
                          normalise_padding)
from ._weight_cache import transformed_weights

NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_padding_mode(spatial, pads, padding_mode):
    """torch's limits on the padding of reflect/replicate/circular."""
    for axis, ((lo, hi), n) in enumerate(zip(pads, spatial)):
        if padding_mode == "reflect" and max(lo, hi) >= n:
            raise ValueError(
                f"padding_mode='reflect' needs padding ({max(lo, hi)}) smaller "
                f"than the input size ({n}) along spatial axis {axis}")
        if padding_mode == "circular" and max(lo, hi) > n:
            raise ValueError(
                f"padding_mode='circular' needs padding ({max(lo, hi)}) at most "
                f"the input size ({n}) along spatial axis {axis}")
        if padding_mode == "replicate" and n == 0 and max(lo, hi) > 0:
            raise ValueError("padding_mode='replicate' needs a non-empty input")


def _apply_padding_mode(x, pads, padding_mode, backend):
    """Pad x's spatial axes for reflect/replicate/circular, as torch does."""
    if _arrays.is_device_array(x):
        if len(pads) == 1:          # (N, C, L) through a unit height
            n, c, length = x.shape
            x4 = _arrays.reshape(x, (n, c, 1, length))
            y = _arrays.device_op(backend, "pad", x4, ((0, 0), tuple(pads[0])),
                                  padding_mode)
            return _arrays.reshape(y, (n, c, y.shape[3]))
        return _arrays.device_op(backend, "pad", x, tuple(map(tuple, pads)),
                                 padding_mode)
    width = [(0, 0), (0, 0)] + [tuple(p) for p in pads]
    return np.pad(x, width, mode=NUMPY_PAD_MODE[padding_mode])


class ConvArgs(NamedTuple):
    """A validated convolution call, before its padding mode is applied.

    ``x`` is batched (``unbatched`` says whether the caller's was not);
    ``pads`` holds one ``(lo, hi)`` pair per spatial axis.  A named tuple:
    a frozen dataclass took 3 us to build, on every call.
    """

    x: object
    w: object
    bias: object
    stride: tuple
    dilation: tuple
    pads: list
    groups: int
    padding_mode: str
    algorithm: str
    backend: str
    unbatched: bool
    dtype: np.dtype


def conv_problem(nsp, x, w, bias, stride, padding, dilation, groups,
                 padding_mode, algorithm, backend):
    """Validate and normalise the arguments of ``conv1d``/``conv2d``."""
    layout = "(N, C, L)" if nsp == 1 else "(N, C, H, W)"
    wlayout = "(K, C // groups, k)" if nsp == 1 else "(K, C // groups, kH, kW)"
    backend = check_backend(backend)
    x = _arrays.as_input("x", x, backend)
    w = _arrays.as_input("w", w, backend)
    if bias is not None:
        bias = _arrays.as_input("bias", bias, backend)
    dtype = check_same_dtype(x=x, w=w, bias=bias)
    check_ndim("x", x, (nsp + 1, nsp + 2), layout)
    check_ndim("w", w, (nsp + 2,), wlayout)
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    algorithm = check_algorithm(algorithm)
    groups = check_groups(groups)

    unbatched = x.ndim == nsp + 1
    if unbatched:
        x = _arrays.reshape(x, (1,) + tuple(x.shape))
    n, c = x.shape[:2]
    k, c_per_group = w.shape[:2]
    kernel = w.shape[2:]
    if c % groups:
        raise ValueError(f"groups ({groups}) must divide the input channels "
                         f"x.shape[1] ({c})")
    if k % groups:
        raise ValueError(f"groups ({groups}) must divide the output channels "
                         f"w.shape[0] ({k})")
    if c_per_group * groups != c:
        raise ValueError(
            f"w.shape[1] ({c_per_group}) times groups ({groups}) must equal the "
            f"input channels x.shape[1] ({c}); expected w.shape[1] == "
            f"{c // groups}")
    if min(kernel) < 1:
        raise ValueError(f"kernel sizes must be >= 1, got w.shape {w.shape}")
    if bias is not None and bias.shape != (k,):
        raise ValueError(f"bias must have shape ({k},) (one per output channel), "
                         f"got {bias.shape}")
    stride = int_tuple("stride", stride, nsp, 1)
    dilation = int_tuple("dilation", dilation, nsp, 1)
    pads = normalise_padding(padding, nsp, kernel, dilation, stride)

    for axis, (size, kk, d, (lo, hi)) in enumerate(zip(x.shape[2:], kernel, dilation, pads)):
        k_eff = d * (kk - 1) + 1        # effective_kernel_size, checked above
        if k_eff > size + lo + hi:
            raise ValueError(
                f"kernel size along spatial axis {axis} (dilated: {k_eff}) is "
                f"larger than the padded input ({size} + {lo} + {hi} = "
                f"{size + lo + hi}); use a smaller kernel or more padding")
    if padding_mode != "zeros" and any(lo or hi for lo, hi in pads):
        check_padding_mode(x.shape[2:], pads, padding_mode)
    return ConvArgs(x, w, bias, stride, dilation, pads, groups,
                       padding_mode, algorithm, backend, unbatched, dtype)


# Validated calls, by everything their validation read: a network calls
# each layer with the same shapes again and again, and conv_problem took
# 20 of the 34 us of a tiny conv2d call (torch's whole call: 8 us).
_PLANS = {}
_MAX_PLANS = 1024
_NATIVE_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _exact(value):
    """``value`` if it is a plain int or str, or a tuple of plain ints;
    else None.  (``True == 1`` and ``1.0 == 1`` hash alike: a key holding
    them would let a bool or float past the validation that rejects it.)"""
    kind = type(value)
    if kind is int or kind is str:
        return value
    if kind is tuple and all(type(v) is int for v in value):
        return value
    return None


def _plan_key(nsp, x, w, bias, stride, padding, dilation, groups,
              padding_mode, algorithm, backend):
    """The key of a call whose validation depends on nothing but shapes,
    native float dtypes and plain arguments, or None (validate it)."""
    if type(x) is not np.ndarray or type(w) is not np.ndarray:
        return None
    if bias is not None and (type(bias) is not np.ndarray
                             or bias.dtype not in _NATIVE_FLOATS):
        return None
    if x.dtype not in _NATIVE_FLOATS or w.dtype not in _NATIVE_FLOATS:
        return None
    args = (stride, padding, dilation, groups, padding_mode, algorithm,
            backend)
    plain = tuple(_exact(v) for v in args)
    if None in plain:
        return None
    return (nsp, x.shape, x.dtype, w.shape, w.dtype,
            None if bias is None else (bias.shape, bias.dtype)) + plain


class _Crop(NamedTuple):
    """A problem over the kernel taps that meet the input
    (:attr:`ConvSpec.live_taps`)."""

    taps: tuple             # (first, last) live tap along H, then W
    spec: ConvSpec          # the problem over the live taps

    def take(self, w):
        """The live taps of ``w``, C-contiguous and read-only."""
        (h0, h1), (w0, w1) = self.taps
        live = np.array(w[:, :, h0:h1 + 1, w0:w1 + 1], order="C")
        live.setflags(write=False)
        return live


class _Plan(NamedTuple):
    """What :func:`_conv` derives from a validated call's arguments."""

    unbatched: bool
    mode_pads: list         # padding filled by padding_mode first, or None
    padding_mode: str
    spec: ConvSpec          # the 2-D problem the kernels see
    algorithm: str
    backend: str
    crop: object = None     # a _Crop, or None: every tap meets the input
    prepared: object = None  # [the spec's _Prepared or None] (run_conv2d)


def _dead_tap_crop(spec, algorithm, backend):
    """A :class:`_Crop` when kernel rows or columns at the kernel's edges
    only ever meet the zero padding (:attr:`ConvSpec.live_taps`), else
    None.  Their products are zeros (the caller checks that the filter is
    finite), so the problem over the live taps has the same outputs: a 9
    x 9 kernel padded by 4 over a one-row image does a ninth of the work.
    A named ``algorithm`` keeps the whole kernel unless it supports both
    problems (its errors do not depend on the crop)."""
    live = spec.live_taps
    if live is None:
        return None
    if algorithm != "auto" and any(
            _dispatch.unsupported_reason("conv2d", backend, algorithm, s)
            is not None for s in (spec, live[1])):
        return None
    return _Crop(*live)


def _plan(nsp, p):
    """The plan of the validated call ``p`` (:class:`ConvArgs`)."""
    pads, x_shape, w_shape = p.pads, tuple(p.x.shape), tuple(p.w.shape)
    mode_pads = None
    if p.padding_mode != "zeros" and any(lo or hi for lo, hi in pads):
        mode_pads = pads
        x_shape = x_shape[:2] + tuple(n + lo + hi
                                      for n, (lo, hi) in zip(x_shape[2:], pads))
        pads = [(0, 0)] * nsp
    if nsp == 1:
        # 1-D is 2-D with a height of one.
        spec = ConvSpec(x_shape[:2] + (1,) + x_shape[2:],
                        w_shape[:2] + (1,) + w_shape[2:], (1,) + p.stride,
                        (0, 0) + pads[0], (1,) + p.dilation, p.groups, p.dtype)
    else:
        spec = ConvSpec(x_shape, w_shape, p.stride, pads[0] + pads[1],
                        p.dilation, p.groups, p.dtype)
    return _Plan(p.unbatched, mode_pads, p.padding_mode, spec, p.algorithm,
                 p.backend, _dead_tap_crop(spec, p.algorithm, p.backend),
                 [None])


def _conv(nsp, x, w, bias, *args):
    key = _plan_key(nsp, x, w, bias, *args)
    plan = _PLANS.get(key) if key is not None else None
    if plan is None:
        p = conv_problem(nsp, x, w, bias, *args)
        x, w, bias, plan = p.x, p.w, p.bias, _plan(nsp, p)
        if key is not None:
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = plan
    elif plan.unbatched:
        x = x.reshape((1,) + x.shape)
    if plan.mode_pads is not None:
        x = _apply_padding_mode(x, plan.mode_pads, plan.padding_mode,
                                plan.backend)
    spec = plan.spec
    if nsp == 1:
        x = _arrays.reshape(x, spec.x_shape)
        w = _arrays.reshape(w, spec.w_shape)
    if plan.crop is not None and type(w) is np.ndarray:
        # The live taps' copy is kept in the weight cache (a stable array
        # for the algorithms' own transforms), with the whole filter's
        # finiteness on record.
        with transformed_weights.watch() as fetched:
            live = transformed_weights.get(w, "live_taps", plan.crop.taps,
                                           plan.crop.take)
        if fetched.finite:
            w, spec = live, plan.crop.spec
    y = run_conv2d(spec, x, w, bias, plan.algorithm, plan.backend,
                   plan.prepared if spec is plan.spec else None)
    if nsp == 1:
        y = _arrays.reshape(y, (y.shape[0], y.shape[1], y.shape[3]))
    return y[0] if plan.unbatched else y


class _Prepared(NamedTuple):
    """A problem's kernel, resolved once (:func:`_prepared`)."""

    token: tuple            # what it was made under (_runner_token)
    algorithm: str          # "auto" resolved
    kernel: object          # the _dispatch.Kernel
    run: object             # run(x, w, bias) for C-contiguous arrays


# Resolved kernels and their prepared runners, by (spec, algorithm,
# backend): "auto"'s choice, the kernel's lookup and the kernel's own
# planning (block shapes, workspace sizes, tiles) done once per problem
# and tunables.  ResNet-50 at batch 1 (Xeon VM, 2 threads): the Python
# between a call's launches, with caches cold after the kernels before
# it, took 80-320 us a call, gaps that outlast the OpenMP workers' spin;
# kept, a pass ran 1.015-1.027x faster (docs/performance.md section AX).
_PREPARED = {}
_MAX_PREPARED = 1024


def _runner_token(backend):
    """What a prepared runner depends on besides its problem: "auto"'s
    thresholds and the backend's tunables in force (each the same object
    while nothing changed) and the thread count that fixes block shapes."""
    tuning = _dispatch.backend_tuning(backend)
    current = getattr(tuning, "current", None)
    threads = getattr(tuning, "block_shape_threads", None)
    return (thresholds_key(backend),
            None if current is None else current(),
            None if threads is None else threads())


def _same_token(a, b):
    return a[0] is b[0] and a[1] is b[1] and a[2] == b[2]


# Whether run_conv2d keeps prepared runners; False for comparisons (each
# call then resolves "auto", looks the kernel up and calls its ``run``).
_PREPARE = True


def _prepared(spec, algorithm, backend, slot=None):
    """The :class:`_Prepared` of a problem under the tunables in force:
    kept, or resolved (raising what the dispatch raises) and kept; in
    ``slot`` (a one-item list a front end keeps with its plan: no lookup
    by spec) where given, else in :data:`_PREPARED`."""
    token = _runner_token(backend)
    if slot is not None:
        entry = slot[0]
    else:
        key = (spec, algorithm, backend)
        entry = _PREPARED.get(key)
    if (entry is not None and _same_token(entry.token, token)
            and _dispatch.find("conv2d", backend, entry.algorithm)
            is entry.kernel):
        return entry
    entry = _resolved(spec, algorithm, backend, prepare=True)._replace(
        token=token)
    if slot is not None:
        slot[0] = entry
        return entry
    if len(_PREPARED) >= _MAX_PREPARED:
        _PREPARED.clear()
    _PREPARED[key] = entry
    return entry


def _resolved(spec, algorithm, backend, prepare=False):
    """A :class:`_Prepared` made afresh (no token): the kernel's prepared
    runner where ``prepare`` and it has one, else its ``run``."""
    if algorithm == "auto":
        resolved = choose_for_spec(spec, backend)
        kernel = _dispatch.load("conv2d", backend, resolved)
    else:
        resolved = algorithm
        kernel = _dispatch.require_supported("conv2d", backend, algorithm,
                                             spec)
    run = kernel.prepare(spec) if prepare and kernel.prepare else None
    if run is None:
        run = functools.partial(kernel.run, spec)
    return _Prepared(None, resolved, kernel, run)


def run_conv2d(spec, x, w, bias, algorithm, backend, slot=None):
    """Dispatch a validated problem; x and w may be any views.

    Resolves ``"auto"``, answers empty problems, makes the arrays
    contiguous and sends non-finite input of the tile-mixing algorithms
    to ``direct`` (their transforms would spread NaN to every output of a
    tile).  The kernel runs in its prepared form (:func:`_prepared`; kept
    in ``slot`` where given).
    """
    entry = (_prepared(spec, algorithm, backend, slot) if _PREPARE
             else _resolved(spec, algorithm, backend))
    if spec.is_empty():
        return _arrays.filled(spec.out_shape, spec.dtype, bias, like=x)
    x = _arrays.contiguous(x)
    w = _arrays.contiguous(w)
    bias = _arrays.contiguous(bias)
    if entry.algorithm not in MIXING_ALGORITHMS:
        return entry.run(x, w, bias)
    # Their transforms would spread NaN/Inf to every output of a tile: such
    # input goes to direct.  A kernel that packs x anyway checks it there
    # (a pass over x from memory saved: 0.55 ms of a 3.5 ms Winograd call
    # on 64@56^2 x 4, caches cold); the others' x is checked here.  The
    # filter is checked after the run, where the weight cache has its
    # finiteness on record (a pass over the filter saved on every call); a
    # non-finite filter (rare) costs one run more.
    with transformed_weights.watch() as fetched:
        y = run_if_finite(entry.kernel, entry.run, x, w, bias)
    if y is not None and (fetched.finite if fetched.fetched
                          else _arrays.all_finite(w)):
        return y
    return _dispatch.load("conv2d", backend, "direct").run(spec, x, w, bias)


def run_if_finite(kernel, run, x, *args):
    """``run(x, *args)``, or None when ``x`` holds NaN or Inf: found by
    the kernel itself where it says so (``checks_finite_input``), else by a
    pass over ``x`` first."""
    if not (kernel.checks_finite_input or _arrays.all_finite(x)):
        return None
    try:
        return run(x, *args)
    except _dispatch.NonFiniteInput:
        return None



_CONV_DOC = """{dim}-D convolution (cross-correlation) of a batch, as ``torch.nn.functional.conv{nd}d``.

    Parameters
    ----------
    x : ndarray, shape {xshape}
        Input, float32 or float64; an unbatched {xunb} is accepted too.
    w : ndarray, shape {wshape}
        Filters, same dtype as ``x``.
    bias : ndarray, shape (K,), optional
    stride, dilation : int or tuple of {nd} ints, >= 1
    padding : int, tuple of {nd} ints, ``"valid"`` or ``"same"``
        Zero padding on both sides of each spatial axis. ``"same"`` (stride
        1 only) pads ``d (k - 1)`` in total, the extra element of an even
        kernel on the high side, as PyTorch.
    groups : int
        Divides C and K; input channels ``g C/groups ... (g+1) C/groups - 1``
        feed output channels ``g K/groups ... (g+1) K/groups - 1``.
    padding_mode : {{"zeros", "reflect", "replicate", "circular"}}
        As ``torch.nn.Conv{nd}d``: how the padding is filled.
    algorithm : {{"auto", "direct", "im2col", "winograd", "fft"}}
        ``"auto"`` resolves through :func:`kernels.choose_algorithm`.
    backend : {{"cpu", "cuda"}}

    Returns
    -------
    y : ndarray, shape {yshape}, dtype of ``x``

    Raises
    ------
    TypeError
        Integer, complex or mixed dtypes; non-integer stride/padding/dilation.
    ValueError
        Wrong ndim, channel/groups mismatch, kernel larger than the padded
        input, stride/dilation < 1, negative padding, ``"same"`` with stride.
    UnsupportedConfiguration
        ``algorithm`` cannot do this configuration (e.g. Winograd with stride 2).

    Notes
    -----
    ``y[n, k, i] = bias[k] + sum_{{c, j}} x_pad[n, g C/groups + c, s i + d j] w[k, c, j]``
    along each spatial axis, with ``g = k // (K / groups)``; output size
    ``floor((L + p_lo + p_hi - d (k - 1) - 1) / s) + 1``
    (:func:`kernels.geometry.conv_output_size`).

    Examples
    --------
    >>> import numpy as np, kernels
    >>> x = np.ones({ex_x}, dtype=np.float32)
    >>> w = np.ones({ex_w}, dtype=np.float32)
    >>> kernels.conv{nd}d(x, w, padding=1).shape
    {ex_y}
"""


def conv1d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", algorithm="auto", backend="cpu"):
    return _conv(1, x, w, bias, stride, padding, dilation, groups,
                 padding_mode, algorithm, backend)


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros", algorithm="auto", backend="cpu"):
    return _conv(2, x, w, bias, stride, padding, dilation, groups,
                 padding_mode, algorithm, backend)


conv1d.__doc__ = _CONV_DOC.format(
    dim="1", nd=1, xshape="(N, C, L)", xunb="(C, L)",
    wshape="(K, C // groups, k)", yshape="(N, K, L_out)",
    ex_x="(1, 2, 8)", ex_w="(4, 2, 3)", ex_y="(1, 4, 8)")
conv2d.__doc__ = _CONV_DOC.format(
    dim="2", nd=2, xshape="(N, C, H, W)", xunb="(C, H, W)",
    wshape="(K, C // groups, kH, kW)", yshape="(N, K, H_out, W_out)",
    ex_x="(1, 2, 8, 8)", ex_w="(4, 2, 3, 3)", ex_y="(1, 4, 8, 8)")


# --------------------------------------------------------------------------
# SciPy-compatible correlate / convolve
# --------------------------------------------------------------------------

def _valid_swap_needed(shape1, shape2):
    """scipy's rule: in 'valid' mode one input must dominate in every axis."""
    ok1 = all(a >= b for a, b in zip(shape1, shape2))
    ok2 = all(b >= a for a, b in zip(shape1, shape2))
    if not (ok1 or ok2):
        raise ValueError(
            f"for mode='valid', in1 {shape1} must be at least as large as in2 "
            f"{shape2} in every dimension, or in2 at least as large as in1")
    return not ok1


def real_numeric(name, a):
    """``a`` as an ndarray of a real numeric dtype (bool, int, float)."""
    try:
        a = np.asarray(a)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"{name} must be a NumPy array, got "
                        f"{type(a).__name__}") from exc
    if a.dtype.kind == "c":
        raise TypeError(
            f"{name} must be real, got complex dtype {a.dtype}; correlate "
            f"the real and imaginary parts separately, or use "
            f"scipy.signal.correlate/convolve")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must have a real numeric dtype (bool, "
                        f"integer or float), got {a.dtype}")
    return a


def scipy_result_dtype(dtype1, dtype2):
    """The dtype ``correlate``/``convolve`` compute in and return.

    Both bool/integer: float64 (exact while the sums stay below 2**53;
    SciPy returns the integer dtype, rounded, and wraps on overflow).
    Otherwise NumPy's promotion, as SciPy: ``np.result_type(dtype1,
    dtype2)`` (float32 with uint16 -> float32, float32 with int32 ->
    float64), float16 raised to float32; native byte order.
    """
    d1, d2 = np.dtype(dtype1), np.dtype(dtype2)
    if d1.kind in "biu" and d2.kind in "biu":
        return np.dtype(np.float64)
    dtype = np.result_type(d1, d2).newbyteorder("=")
    if dtype.kind == "f" and dtype.itemsize < 4:
        return np.dtype(np.float32)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"in1 and in2 (dtypes {d1} and {d2}) promote to {dtype}; "
            f"correlate/convolve compute in float32 or float64, convert "
            f"with .astype(np.float64)")
    return dtype


def _prepare_scipy_args(in1, in2, mode, method, backend):
    check_backend(backend)
    if not (_arrays.is_device_array(in1) or _arrays.is_device_array(in2)):
        in1, in2 = real_numeric("in1", in1), real_numeric("in2", in2)
        dtype = scipy_result_dtype(in1.dtype, in2.dtype)
        in1, in2 = in1.astype(dtype, copy=False), in2.astype(dtype, copy=False)
    in1 = _arrays.as_input("in1", in1, backend)
    in2 = _arrays.as_input("in2", in2, backend)
    check_same_dtype(in1=in1, in2=in2)
    if in1.ndim != in2.ndim:
        raise ValueError(f"in1 and in2 must have the same number of dimensions, "
                         f"got {in1.ndim} and {in2.ndim}")
    if in1.ndim not in (1, 2):
        raise ValueError(f"in1 and in2 must be 1-D or 2-D, got {in1.ndim}-D")
    check_choice("mode", mode, ("full", "valid", "same"))
    method = check_choice("method", method, ("auto",) + ALGORITHMS)
    if in1.size == 0 or in2.size == 0:
        raise ValueError("in1 and in2 must not be empty")
    return in1, in2, method


def _as_2d(in1, in2):
    """Both inputs as 2-D (a 1-D signal is one row)."""
    if in1.ndim == 2:
        return in1, in2
    return (_arrays.reshape(in1, (1,) + tuple(in1.shape)),
            _arrays.reshape(in2, (1,) + tuple(in2.shape)))


def scipy_pads(in2_shape, mode):
    """(lo, hi) padding per axis of correlate's ``mode`` (in2's shape)."""
    pads = []
    for n2 in in2_shape:
        if mode == "full":
            pads.append((n2 - 1, n2 - 1))
        elif mode == "valid":
            pads.append((0, 0))
        else:  # same: the centre of the full output, scipy's _centered
            hi = (n2 - 1) // 2
            pads.append((n2 - 1 - hi, hi))
    return pads


def _correlate2d(in1, in2, mode, method, backend):
    """scipy.signal.correlate of two 2-D arrays (no swap)."""
    pads = [p for pair in scipy_pads(in2.shape, mode) for p in pair]
    x = _arrays.reshape(in1, (1, 1) + tuple(in1.shape))
    w = _arrays.reshape(in2, (1, 1) + tuple(in2.shape))
    spec = ConvSpec(tuple(x.shape), tuple(w.shape), (1, 1), tuple(pads),
                    (1, 1), 1, in1.dtype)
    return run_conv2d(spec, x, w, None, method, backend)[0, 0]


def correlate(in1, in2, mode="full", method="auto", backend="cpu"):
    """Cross-correlate two 1-D or 2-D arrays, as ``scipy.signal.correlate``.

    Parameters
    ----------
    in1, in2 : array_like
        Same number of dimensions (1 or 2), any real numeric dtype (bool,
        integer, float, either byte order); complex raises ``TypeError``.
        Both bool/integer: computed in float64.  Otherwise computed in
        ``np.result_type(in1, in2)`` as SciPy (float32 with uint16 gives
        float32, float32 with int32 or float64 gives float64; float16 is
        raised to float32).
    mode : {"full", "valid", "same"}
        ``full``: every overlap (size ``n1 + n2 - 1``); ``valid``: only full
        overlaps (one input must be at least as large as the other in every
        axis; if ``in2`` is the larger the result is scipy's, reversed);
        ``same``: the centre of ``full`` with ``in1``'s shape.
    method : {"auto", "direct", "im2col", "winograd", "fft"}
    backend : {"cpu", "cuda"}

    Returns
    -------
    z : ndarray, native float32 or float64 as above.  Unlike SciPy, which
        returns the integer dtype for integer inputs (rounded, wrapping on
        overflow), integer inputs give float64.

    Notes
    -----
    ``z[k] = sum_l in1[l + k - (n2 - 1)] in2[l]`` in full mode (1-D).

    Examples
    --------
    >>> import numpy as np, kernels
    >>> kernels.correlate(np.array([1., 2, 3]), np.array([0., 1, 0.5]))
    array([0.5, 2. , 3.5, 3. , 0. ])
    """
    in1, in2, method = _prepare_scipy_args(in1, in2, mode, method, backend)
    one_d = in1.ndim == 1
    a, b = _as_2d(in1, in2)
    swapped = mode == "valid" and _valid_swap_needed(a.shape, b.shape)
    if swapped:
        a, b = b, a
    z = _correlate2d(a, b, mode, method, backend)
    if swapped:
        z = _arrays.flip2(z)
    return z[0] if one_d else z


def convolve(in1, in2, mode="full", method="auto", backend="cpu"):
    """Convolve two 1-D or 2-D arrays, as ``scipy.signal.convolve``.

    Parameters and modes as :func:`correlate`; ``convolve(a, b)`` equals
    ``correlate(a, b[::-1, ::-1])``, and in ``valid`` mode the inputs are
    swapped when ``in2`` is the larger (convolution commutes).

    Examples
    --------
    >>> import numpy as np, kernels
    >>> kernels.convolve(np.array([1., 2, 3]), np.array([0., 1, 0.5]))
    array([0. , 1. , 2.5, 4. , 1.5])
    """
    in1, in2, method = _prepare_scipy_args(in1, in2, mode, method, backend)
    one_d = in1.ndim == 1
    a, b = _as_2d(in1, in2)
    if mode == "valid" and _valid_swap_needed(a.shape, b.shape):
        a, b = b, a
    z = _correlate2d(a, _arrays.flip2(b), mode, method, backend)
    return z[0] if one_d else z


__all__ = ["conv1d", "conv2d", "correlate", "convolve", "run_conv2d",
           "run_if_finite",
           # for kernels.dask, which validates the same arguments:
           "ConvArgs", "conv_problem", "check_padding_mode", "NUMPY_PAD_MODE",
           "real_numeric", "scipy_result_dtype", "scipy_pads"]
