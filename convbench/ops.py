"""Every op of ``kernels`` as the harness runs it: data, contenders,
reference and rate of one :class:`convbench.problems.Problem`.

One driver serves ``convbench sweep --op`` / ``--problems`` /
``--torch-model`` and ``convbench check``:

* :func:`make_data`: the seeded arrays of a problem (``x``, ``w``,
  ``grad_out`` as the op needs them);
* :func:`make_runner`: a zero-argument callable per contender: an
  algorithm of ``kernels`` (``"auto"`` included) through the public
  function a user calls, the contender ``"kernels"`` for pooling (which
  has no ``algorithm=``), and the peers ``torch`` (every op; the backward
  directions through the functions autograd calls, with the forward's
  saved state prepared beforehand, as autograd has it), ``scipy-direct``,
  ``scipy-fft`` and ``scipy-oa`` (``scipy.signal.correlate`` and
  ``oaconvolve`` on single-channel 1-D and 2-D convolutions);
* :class:`Reference`: the float64 result and its error scale from
  ``reference/``, and each contender's error in units of its bound;
* :func:`rate`: GFLOP/s for the convolutions (``2 x`` the multiply-adds
  of the direct method, whatever the algorithm), GB/s for pooling (each
  input and output element moved once) and its fraction of this
  machine's measured copy bandwidth.

Error bounds: the convolutions use :mod:`kernels.accuracy` (a peer is
held to the model of the algorithm it resembles: ``direct`` for torch and
``scipy-direct``, ``fft`` for ``scipy-fft`` and ``scipy-oa``; ``auto`` to
the algorithm it picked where ``kernels.choose_algorithm`` tells it, else
to the one of the applicable algorithms whose bound it meets best).
Pooling uses the bounds documented in :mod:`kernels._pooling` (max
pooling exact; average pooling ``kH kW + 1`` against ``avg_pool(|x|)``).
Their backward passes sum at most ``kH kW`` contributions per input:
:data:`POOL_BACKWARD_CONSTANTS` (derived from the summation bound, not
fitted: docs/performance.md section H lists what was observed).
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

import kernels
from kernels import accuracy

from . import peer_runners
from .problems import CONV_OPS, POOL_OPS, TRANSPOSED_OPS
from .timing import seeded_normal

__all__ = ["PEERS", "POOL_CONTENDER", "NotApplicable", "Skipped",
           "algorithms_for", "peers_for", "make_data", "make_runner",
           "peer_spec", "worker_case", "array_shapes",
           "chosen_algorithm", "Reference", "rate", "copy_bandwidth",
           "POOL_BACKWARD_CONSTANTS"]

PEERS = ("scipy-direct", "scipy-fft", "scipy-oa", "torch")
#: The one contender of ``kernels`` for an op without ``algorithm=``.
POOL_CONTENDER = "kernels"
#: c of ``|gx - gx_ref| <= c u route(|grad_out|)``: a sum of at most kH kW
#: contributions (kH kW - 1 additions); average pooling's share adds a
#: division (and float32's rounded reciprocal).
POOL_BACKWARD_CONSTANTS = {"max_pool2d_backward": lambda area: float(area),
                           "avg_pool2d_backward": lambda area: area + 2.0}
_PEER_MODEL = {"torch": "direct", "scipy-direct": "direct", "scipy-fft": "fft",
               "scipy-oa": "fft"}


class NotApplicable(Exception):
    """The contender cannot run this problem (status ``n/a``)."""


class Skipped(Exception):
    """The contender could run this problem but would take too long."""


# --------------------------------------------------------------------------
# Contenders
# --------------------------------------------------------------------------

def algorithms_for(op, backend="cpu"):
    """Contenders of ``kernels`` for ``op`` (besides ``"auto"``)."""
    if op in POOL_OPS:
        return (POOL_CONTENDER,)
    return tuple(kernels.built_algorithms(backend))


def _scipy_applies(p):
    """None when the SciPy peers can compute ``p`` (one input and one
    output channel, stride and dilation 1), else why not."""
    if p.op not in ("conv1d", "conv2d"):
        return f"SciPy has no {p.op}"
    if (p.c, p.k, p.groups) != (1, 1, 1):
        return "SciPy peers run single-channel problems (c = k = 1) here"
    if p.stride != (1, 1) or p.dilation != (1, 1):
        return "SciPy's correlate has no stride or dilation"
    return None


def peers_for(p):
    """The peers that apply to problem ``p`` (torch: every op)."""
    if _scipy_applies(p) is None:
        return ("scipy-direct", "scipy-fft", "scipy-oa", "torch")
    return ("torch",)


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def make_data(p, dtype=np.float32, seed=0):
    """Seeded standard-normal arrays of problem ``p``: a dict with ``x``
    (every op), ``w`` (convolutions) and ``grad_out`` (backward ops)."""
    names, shapes = zip(*array_shapes(p))
    return dict(zip(names, seeded_normal(*shapes, dtype=dtype, seed=seed)))


def array_shapes(p):
    """``[(name, shape), ...]`` of problem ``p``'s arrays, in the order
    they are drawn."""
    shapes = [("x", p.x_shape)]
    if p.w_shape is not None:
        shapes.append(("w", p.w_shape))
    if "backward" in p.op:
        shapes.append(("grad_out", p.forward_out_shape))
    return shapes


def worker_case(p):
    """Problem ``p`` as a timing worker's case (:mod:`convbench._worker`):
    its descriptor, its arrays' shapes, and each peer's
    :func:`peer_spec` (the reason instead, where it cannot run ``p``), so
    that a torch worker needs neither ``kernels`` nor this module."""
    peers = {}
    for name in PEERS:
        try:
            peers[name] = {"spec": peer_spec(p, name)}
        except NotApplicable as exc:
            peers[name] = {"reason": str(exc)}
    return {"problem": p.descriptor(), "label": p.label or p.short,
            "arrays": [[name, list(shape)] for name, shape in array_shapes(p)],
            "peers": peers}


# --------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------

def _padding_arg(p):
    """``padding`` as the public functions take it."""
    if isinstance(p.padding, str):
        return p.padding
    return p.padding[1] if p.one_d else tuple(p.padding)


def _geometry(p):
    """(stride, padding, dilation) arguments of the public functions."""
    if p.one_d:
        return p.stride[1], _padding_arg(p), p.dilation[1]
    return tuple(p.stride), _padding_arg(p), tuple(p.dilation)


def _conv2d_config(p):
    """``kernels.choose_algorithm``'s arguments of a (1-D as 2-D)
    convolution."""
    (pt, pb), (pl, pr) = p.pads()
    x4 = (p.n, p.c, p.h, p.w)
    w4 = (p.k, p.c // p.groups) + tuple(p.kernel)
    return (x4, w4, tuple(p.stride), (pt, pb, pl, pr), tuple(p.dilation),
            p.groups)


def chosen_algorithm(p, dtype, backend="cpu"):
    """The algorithm ``"auto"`` runs on ``p``, where ``kernels`` says it
    (the forward convolutions), else None."""
    if p.op not in ("conv1d", "conv2d"):
        return None
    return kernels.choose_algorithm(*_conv2d_config(p), dtype=dtype,
                                    backend=backend)


def _unsupported(p, name, backend):
    """Why ``kernels`` cannot run algorithm ``name`` on forward ``p``."""
    from kernels._dispatch import ConvSpec, unsupported_reason
    if p.op not in ("conv1d", "conv2d") or name == "auto":
        return None
    x4, w4, stride, pads, dilation, groups = _conv2d_config(p)
    return unsupported_reason("conv2d", backend, name, ConvSpec.from_config(
        x4, w4, stride, pads, dilation, groups))


def _max_pool_indices(p, x):
    """The forward's argmax (what autograd saves for the backward)."""
    _, indices = kernels.max_pool2d(x, p.kernel, p.stride, p.pads()[0][0],
                                    p.dilation, return_indices=True)
    return indices


def _kernels_runner(p, data, name, backend):
    op, x = p.op, data["x"]
    stride, padding, dilation = _geometry(p)
    algo = dict(algorithm=name, backend=backend)
    if op in ("conv1d", "conv2d"):
        fn = getattr(kernels, op)
        w = data["w"]
        return lambda: fn(x, w, None, stride, padding, dilation, p.groups,
                          **algo)
    if op in TRANSPOSED_OPS:
        fn = getattr(kernels, op)
        w = data["w"]
        out_pad = p.output_padding[1] if p.one_d else tuple(p.output_padding)
        return lambda: fn(x, w, None, stride, padding, out_pad, p.groups,
                          dilation, **algo)
    if op.startswith("conv2d_backward"):
        w, gy = data["w"], data["grad_out"]
        grads = "x" if op.endswith("data") else "w"
        index = 0 if grads == "x" else 1
        return lambda: kernels.conv2d_backward(
            gy, x, w, stride, padding, dilation, p.groups, grads=grads,
            **algo)[index]
    pads = p.pads()[0][0], p.pads()[1][0]
    if op == "global_avg_pool2d":
        return lambda: kernels.global_avg_pool2d(x, backend=backend)
    if op == "max_pool2d":
        return lambda: kernels.max_pool2d(x, p.kernel, p.stride, pads,
                                          p.dilation, backend=backend)
    if op == "avg_pool2d":
        return lambda: kernels.avg_pool2d(x, p.kernel, p.stride, pads,
                                          backend=backend)
    gy = data["grad_out"]
    if op == "max_pool2d_backward":
        indices = _max_pool_indices(p, x)
        return lambda: kernels.max_pool2d_backward(
            gy, x, p.kernel, p.stride, pads, p.dilation, backend=backend,
            indices=indices)
    if op == "avg_pool2d_backward":
        return lambda: kernels.avg_pool2d_backward(gy, x, p.kernel, p.stride,
                                                   pads, backend=backend)
    raise NotApplicable(f"no kernels runner for {op}")  # pragma: no cover


# --------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------

def _symmetric_pads(p):
    """Per-axis symmetric padding for torch, or NotApplicable."""
    (pt, pb), (pl, pr) = p.pads()
    if pt != pb or pl != pr:
        raise NotApplicable(f"torch pads both sides alike; this problem pads "
                            f"({pt}, {pb}), ({pl}, {pr})")
    return pl if p.one_d else (pt, pl)


def peer_spec(p, name):
    """The plain description of problem ``p`` that peer ``name`` runs
    (:mod:`convbench.peer_runners`; JSON-able, for timing workers).

    Raises
    ------
    NotApplicable
        The peer cannot compute ``p``: SciPy on channels, strides or
        other ops; torch on uneven padding it cannot express.
    """
    spec = {"op": p.op, "one_d": p.one_d, "n": p.n, "h": p.h, "w": p.w,
            "kernel": list(p.kernel), "stride": list(p.stride),
            "dilation": list(p.dilation), "groups": p.groups,
            "output_padding": list(p.output_padding),
            "pads": [list(pair) for pair in p.pads()],
            "out_shape": list(p.forward_out_shape)}
    if name == "torch":
        # torch's padding='same' puts an even kernel's extra row and
        # column on the high side, as kernels.geometry.same_padding does.
        forward = p.op in ("conv1d", "conv2d") and isinstance(p.padding, str)
        pads = p.padding if forward else _symmetric_pads(p)
        spec["padding"] = pads if isinstance(pads, str) else (
            [0, pads] if p.one_d else list(pads))
        return spec
    why = _scipy_applies(p)
    if why is not None:
        raise NotApplicable(why)
    return spec


def _torch_runner(p, data):
    spec = peer_spec(p, "torch")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise NotApplicable("torch is not installed (pip install torch)") \
            from None
    return peer_runners.torch_runner(spec, data)


def _scipy_runner(name, p, data, limit):
    """``scipy.signal`` on each image of a single-channel problem."""
    spec = peer_spec(p, name)
    if name == "scipy-direct":
        from .sweep import scipy_direct_rate
        estimate = p.macs / scipy_direct_rate(data["x"].dtype)
        if estimate > limit:
            raise Skipped(f"estimated {estimate:.3g} s per call > peer time "
                          f"limit {limit:g} s")
    return peer_runners.scipy_runner(name, spec, data)


def make_runner(name, p, data, *, backend="cpu", peer_time_limit=math.inf):
    """A zero-argument callable computing problem ``p`` with contender
    ``name`` (an algorithm, ``"auto"``, ``"kernels"`` or a peer).

    Returns ``(run, chose)``: ``chose`` is ``"auto"``'s pick where known.

    Raises
    ------
    NotApplicable
        The contender cannot compute ``p`` (an algorithm the
        configuration rules out, torch missing, SciPy on channels).
    Skipped
        ``scipy-direct`` would take longer than ``peer_time_limit``.
    """
    if name == "torch":
        return _torch_runner(p, data), None
    if name in PEERS:
        return _scipy_runner(name, p, data, peer_time_limit), None
    dtype = data["x"].dtype
    if p.op in POOL_OPS:
        if name != POOL_CONTENDER:
            raise NotApplicable(f"{p.op} has no algorithms: its contender "
                                f"is {POOL_CONTENDER!r}")
        return _kernels_runner(p, data, None, backend), None
    if name == POOL_CONTENDER:
        raise NotApplicable(f"{p.op} is run by its algorithms, not "
                            f"{POOL_CONTENDER!r}")
    reason = _unsupported(p, name, backend)
    if reason is not None:
        raise NotApplicable(reason)
    chose = chosen_algorithm(p, dtype, backend) if name == "auto" else None
    return _kernels_runner(p, data, name, backend), chose


# --------------------------------------------------------------------------
# Reference and error
# --------------------------------------------------------------------------

def _reference_macs(p, batch):
    """Multiply-adds of the float64 reference on ``batch`` images."""
    if p.op in POOL_OPS:
        return 0
    if p.op in ("conv1d", "conv2d"):
        # SciPy's stride-1 correlation before subsampling.
        return p.macs / p.n * batch * p.stride[0] * p.stride[1]
    return p.macs / p.n * batch


class Reference:
    """The float64 reference of problem ``p`` and the scale of its bound,
    on the first ``check_batch`` images (0: all; the weight gradient sums
    over the batch, so it always takes all).

    ``skipped`` is the reason no reference was computed (its cost above
    ``check_macs`` multiply-adds), else None.
    """

    def __init__(self, p, data, check_batch=1, check_macs=1.5e8):
        import reference
        self.p = p
        batch = p.n if check_batch <= 0 or p.op == "conv2d_backward_weights" \
            else min(p.n, check_batch)
        self.batch = batch
        self.region = {"batch": batch, "fraction": batch / p.n}
        self.skipped = None
        cost = _reference_macs(p, batch)
        if cost > check_macs:
            self.skipped = (f"not checked: the reference would spend "
                            f"{cost:.3g} multiply-adds > --check-macs "
                            f"{check_macs:.3g}")
            return
        d = {name: a[:batch].astype(np.float64) if name in ("x", "grad_out")
             else a.astype(np.float64) for name, a in data.items()}
        self.y = self._compute(reference, d, d["x"])
        self.abs = self._compute(reference,
                                 {k: np.abs(v) for k, v in d.items()}, d["x"])

    def _compute(self, reference, d, signed_x):
        """The op on data ``d`` in float64; ``signed_x`` routes max
        pooling's gradient (the scale routes |grad_out| as x routes it)."""
        p = self.p
        stride, padding, dilation = _geometry(p)
        op = p.op
        if op in ("conv1d", "conv2d"):
            return getattr(reference, op)(d["x"], d["w"], None, stride,
                                          padding, dilation, p.groups)
        if op in TRANSPOSED_OPS:
            out_pad = p.output_padding[1] if p.one_d else p.output_padding
            return getattr(reference, op)(d["x"], d["w"], None, stride,
                                          _symmetric_pads(p), out_pad,
                                          p.groups, dilation)
        if op == "conv2d_backward_data":
            return reference.conv2d_input_grad(d["grad_out"], d["x"].shape,
                                               d["w"], stride, p.pads(),
                                               dilation, p.groups)
        if op == "conv2d_backward_weights":
            return reference.conv2d_weight_grad(d["x"], d["grad_out"],
                                                p.kernel, stride, p.pads(),
                                                dilation, p.groups)
        pads = _symmetric_pads(p)
        if op == "global_avg_pool2d":
            return reference.global_avg_pool2d(d["x"])
        if op == "max_pool2d":
            return reference.max_pool2d(d["x"], p.kernel, p.stride, pads,
                                        p.dilation)
        if op == "avg_pool2d":
            return reference.avg_pool2d(d["x"], p.kernel, p.stride, pads)
        if op == "max_pool2d_backward":
            return reference.max_pool2d_backward(d["grad_out"], signed_x,
                                                 p.kernel,
                                                 p.stride, pads, p.dilation)
        return reference.avg_pool2d_backward(d["grad_out"], d["x"].shape,
                                             p.kernel, p.stride, pads)

    def _pool_units(self, dtype, y):
        p = self.p
        area = p.kernel[0] * p.kernel[1]
        if p.op == "max_pool2d":
            constant = 0.0
        elif p.op == "avg_pool2d":
            from kernels._pooling import avg_pool_error_constant
            constant = avg_pool_error_constant(dtype, area)
        elif p.op == "global_avg_pool2d":
            from kernels._pooling import global_avg_pool_error_constant
            constant = global_avg_pool_error_constant(dtype, area)
        else:
            constant = POOL_BACKWARD_CONSTANTS[p.op](area)
        units = accuracy.error_in_bound_units("direct", dtype, y, self.y,
                                              self.abs)
        return units, constant

    def error_units(self, name, dtype, y, chose=None):
        """``(units, constant, model)``: max |y - y_ref| / (u scale) of
        contender ``name``'s output ``y`` on the checked region, the bound
        it is held to and the algorithm whose model gave it (None for
        pooling); None for all three when there is no reference."""
        if self.skipped is not None:
            return None, None, None
        y = np.asarray(y)[:self.batch] if self.p.op != \
            "conv2d_backward_weights" else np.asarray(y)
        if self.p.op in POOL_OPS:
            units, constant = self._pool_units(dtype, y)
            return units, constant, None
        model = _PEER_MODEL.get(name) or (chose if name == "auto" else name)
        if model is not None:
            units = accuracy.error_in_bound_units(model, dtype, y, self.y,
                                                  self.abs)
            return units, accuracy.error_constant(model, dtype), model
        # "auto" without a known pick: the model it meets best.
        best = None
        for algorithm in accuracy.ERROR_CONSTANTS:
            units = accuracy.error_in_bound_units(algorithm, dtype, y, self.y,
                                                  self.abs)
            constant = accuracy.error_constant(algorithm, dtype)
            if best is None or units / constant < best[0] / best[1]:
                best = (units, constant, algorithm)
        return best


# --------------------------------------------------------------------------
# Rates
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def copy_bandwidth():
    """Bytes per second of ``np.copyto`` on 64 MiB float32 arrays (read
    plus write counted), best of five: the pooling rates' yardstick."""
    a = np.ones(16 * 2**20, np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best


def rate(p, seconds, itemsize):
    """``(value, unit, fraction_of_copy)`` of one call of ``seconds``:
    GFLOP/s for convolutions (fraction None), GB/s for pooling with its
    fraction of :func:`copy_bandwidth`."""
    if not seconds or seconds <= 0:
        return None, None, None
    if p.op in CONV_OPS:
        return p.flops / seconds / 1e9, "GFLOP/s", None
    moved = p.bytes_moved(itemsize) / seconds
    return moved / 1e9, "GB/s", moved / copy_bandwidth()

