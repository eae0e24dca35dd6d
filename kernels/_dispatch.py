"""The backend contract: problem records, and one loader for every operation.

The public functions validate and normalise their arguments once into a
problem record (:class:`ConvSpec`, :class:`TransposeSpec`,
:class:`PoolSpec`), then ask :func:`load` for the kernel of an operation
on a backend (and, where there are several, an algorithm) and call it.

A backend is one package, ``kernels/<backend>/`` for the built-in ones
(``register_backend`` adds others).  Where each kernel lives is fixed by
:data:`MODULES`, so that "is it built?" never needs a GPU or an import
of the rest::

    (op, algorithm)                      module of the backend package
    ("conv2d", "direct")                 direct.py
    ("conv2d", "im2col")                 im2col.py
    ("conv2d", "winograd")               winograd.py
    ("conv2d", "fft")                    fft.py
    ("conv_transpose2d", "direct")       transposed.py
    ("conv_transpose2d", "im2col")       transposed.py
    ("conv_transpose2d_filters", None)   transposed.py
    ("conv2d_weight_grad", "im2col")     backward.py
    ("max_pool2d", None) ... (the pooling ops of POOLING_OPS)   pooling.py
    ("winograd_transform_weights", "winograd"),
    ("conv2d_pretransformed", "winograd")                       winograd.py
    ("device_array_ops", None)           arrays.py (backends that take
                                         device arrays, see kernels._arrays)

**The contract.**  A module exports ``KERNELS``, a dict from each
``(op, algorithm)`` it implements to a :class:`Kernel`: ``run``, the entry
point, and optionally ``unsupported_reason(spec)``, None when ``run`` can
compute the problem, else one sentence naming the rule it breaks.  Every
entry point takes the problem record first, then the arrays, which are
C-contiguous, of one dtype (float32 or float64), non-empty (the front
ends answer empty problems themselves) and never modified::

    conv2d                run(spec: ConvSpec, x, w, bias) -> y (N, K, Ho, Wo)
    conv_transpose2d      run(spec: TransposeSpec, x, w, bias) -> y
    conv2d_weight_grad    run(spec: ConvSpec, grad_out, x) -> grad_w (K, C/G, kH, kW)
    conv_transpose2d_filters  run(w, groups) -> the forward filters of a
                          transposed weight (C_in, Co, kH, kW): (G Co, C_in/G,
                          kH, kW), channels swapped per group, flipped
    max_pool2d            run(spec: PoolSpec, x) -> y              (planes)
    max_pool2d_with_indices  run(spec, x) -> (y, int64 indices)
    max_pool2d_backward   run(spec, grad_out, x) -> grad_x
    max_pool2d_backward_indices  run(spec, grad_out, indices) -> grad_x
    avg_pool2d            run(spec, x, div_h, div_w) -> y
    avg_pool2d_backward   run(spec, grad_out, div_h, div_w) -> grad_x
    global_avg_pool2d     run(spec, x) -> y

Winograd's own ops: ``winograd_transform_weights`` is ``run(w, tile,
groups) -> TransformedWeights`` (no problem yet) and
``conv2d_pretransformed`` ``run(spec, x, transformed, bias)``;
``winograd_clear_workspace`` ``run()`` frees the calling thread's scratch.

``bias`` may be None.  Pooling arrays are ``(P, H, W)`` planes (``P = N
C``); ``div_h``/``div_w`` are float64 per-output-row/column divisor
factors.  The result is a new array of the input's dtype.  Results must
not depend on the thread count.

Backend-neutral mathematics (output sizes, Winograd transforms, FFT tiling)
lives once in ``kernels/`` and is imported by the backends; nothing in
``kernels/`` outside a backend folder imports a backend except through
:func:`load`.  See ``docs/design.md``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import geometry
from ._validation import (ALGORITHMS, BACKENDS,
                          UnsupportedConfiguration)

__all__ = ["ConvSpec", "TransposeSpec", "PoolSpec", "Kernel", "NonFiniteInput",
           "MODULES",
           "POOLING_OPS", "load", "find", "is_built", "built_algorithms",
           "unsupported_reason", "require_supported", "backends",
           "register_backend", "unregister_backend", "check_backend",
           "reload_registry", "backend_tuning", "import_error"]


# --------------------------------------------------------------------------
# Problem records
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvSpec:
    """A validated, normalised 2-D convolution problem (1-D has H = 1)."""

    x_shape: tuple      # (N, C, H, W)
    w_shape: tuple      # (K, C // groups, kH, kW)
    stride: tuple       # (sh, sw)
    padding: tuple      # (top, bottom, left, right) of zeros, after padding_mode
    dilation: tuple     # (dh, dw)
    groups: int
    dtype: np.dtype

    @functools.cached_property
    def out_hw(self):
        """(Ho, Wo), :func:`kernels.geometry.conv_output_size`'s formula.

        Inline for a record's validated ints (the checked function took 7
        of a tiny call's ~60 us); an impossible record still gets its
        ``ValueError``.
        """
        out = []
        for n, k, s, lo, hi, d in zip(self.x_shape[2:], self.w_shape[2:],
                                      self.stride, self.padding[::2],
                                      self.padding[1::2], self.dilation):
            k_eff = d * (k - 1) + 1
            if n + lo + hi < k_eff or min(k, s, d) < 1 or min(lo, hi) < 0:
                # The checked function, for its error.
                out.append(geometry.conv_output_size(n, k, s, (lo, hi), d))
            else:
                out.append((n + lo + hi - k_eff) // s + 1)
        return tuple(out)

    @property
    def out_shape(self):
        return (self.x_shape[0], self.w_shape[0]) + self.out_hw

    @property
    def macs(self):
        """Multiply-adds of the whole problem."""
        _, cg, kh, kw = self.w_shape
        return (self.x_shape[0] * self.w_shape[0] * cg * kh * kw
                * self.out_hw[0] * self.out_hw[1])

    def is_empty(self):
        return self.x_shape[0] == 0 or self.x_shape[1] == 0 or 0 in self.out_hw

    def config(self):
        """``(x_shape, w_shape, stride, padding, dilation, groups)``."""
        return (self.x_shape, self.w_shape, self.stride, self.padding,
                self.dilation, self.groups)

    @functools.cached_property
    def live_taps(self):
        """``(taps, spec)`` when leading or trailing kernel rows or columns
        only ever meet the zero padding, else None: ``taps`` the (first,
        last) live tap along H and along W (:func:`kernels.geometry.
        live_taps`), ``spec`` the problem over them, with that much less
        padding and the same outputs wherever the filter is finite (the
        left-out products are zeros times weights; 0 * Inf is NaN).  A
        9 x 9 kernel padded by 4 over a one-row image: a 1 x 9 kernel."""
        if self.is_empty():
            return None
        taps, padding, kernel = [], [], []
        for axis in range(2):
            n, k = self.x_shape[2 + axis], self.w_shape[2 + axis]
            lo, hi = self.padding[2 * axis], self.padding[2 * axis + 1]
            d = self.dilation[axis]
            live = geometry.live_taps(n, k, self.stride[axis], (lo, hi), d)
            if live is None:                # every output is the bias
                return None
            first, last = live
            # (a tap the stride skips may leave less padding than that)
            if lo < first * d:
                first = 0
            if hi < (k - 1 - last) * d:
                last = k - 1
            taps.append((first, last))
            padding += [lo - first * d, hi - (k - 1 - last) * d]
            kernel.append(last - first + 1)
        if tuple(kernel) == self.w_shape[2:]:
            return None
        spec = ConvSpec(self.x_shape, self.w_shape[:2] + tuple(kernel),
                        self.stride, tuple(padding), self.dilation,
                        self.groups, self.dtype)
        return (tuple(taps), spec) if spec.out_hw == self.out_hw else None

    @classmethod
    def from_config(cls, x_shape, w_shape, stride=(1, 1), padding=(0, 0, 0, 0),
                    dilation=(1, 1), groups=1, dtype=np.float32):
        """A record from plain tuples (normalised 2-D form)."""
        return cls(tuple(int(v) for v in x_shape), tuple(int(v) for v in w_shape),
                   tuple(int(v) for v in stride), tuple(int(v) for v in padding),
                   tuple(int(v) for v in dilation), int(groups), np.dtype(dtype))


@dataclass(frozen=True)
class TransposeSpec:
    """A validated transposed-convolution problem in 2-D form."""

    x_shape: tuple      # (N, C_in, H, W)
    w_shape: tuple      # (C_in, C_out // groups, kH, kW)
    stride: tuple       # (sh, sw)
    pad_lo: tuple       # (ph, pw): crop at the top / left of the full output
    out_hw: tuple       # (Ho, Wo)
    dilation: tuple     # (dh, dw)
    groups: int
    dtype: np.dtype

    @property
    def out_shape(self):
        return (self.x_shape[0], self.w_shape[1] * self.groups) + self.out_hw

    def macs(self):
        n, c_in, h, w = self.x_shape
        return n * c_in * self.w_shape[1] * self.w_shape[2] * self.w_shape[3] * h * w

    def is_empty(self):
        return self.x_shape[0] == 0 or self.x_shape[1] == 0

    def forward_problem(self):
        """The stride-1 forward correlation this problem equals.

        Returns ``(upsampled_hw, crop, spec)``: the size of the
        zero-upsampled input, the ``(top, bottom, left, right)`` rows and
        columns to drop from it (where the equivalent padding is
        negative), and the :class:`ConvSpec` of the forward problem.
        """
        n, c_in, h, w = self.x_shape
        _, c_out_g, kh, kw = self.w_shape
        crop, pads, sizes = [], [], []
        for size, k, s, lo, out, d in zip((h, w), (kh, kw), self.stride,
                                          self.pad_lo, self.out_hw,
                                          self.dilation):
            up = (size - 1) * s + 1
            k_eff = geometry.effective_kernel_size(k, d)
            pad_lo = k_eff - 1 - lo
            pad_hi = out - up - pad_lo + k_eff - 1
            crop_lo, crop_hi = max(0, -pad_lo), max(0, -pad_hi)
            crop += [crop_lo, crop_hi]
            pads += [max(0, pad_lo), max(0, pad_hi)]
            sizes.append(up - crop_lo - crop_hi)
        x_shape = (n, c_in, sizes[0], sizes[1])
        w_shape = (c_out_g * self.groups, c_in // self.groups, kh, kw)
        spec = ConvSpec(x_shape, w_shape, (1, 1), tuple(pads),
                        tuple(self.dilation), self.groups, self.dtype)
        return ((h - 1) * self.stride[0] + 1, (w - 1) * self.stride[1] + 1), \
            tuple(crop), spec


@dataclass(frozen=True)
class PoolSpec:
    """A validated pooling problem as 2-D planes (1-D has H = 1)."""

    nsp: int             # spatial dimensions of the public call (1 or 2)
    lead_shape: tuple    # x.shape without the spatial axes: (N, C) or (C,)
    in_hw: tuple         # (H, W)
    kernel: tuple        # (kh, kw)
    stride: tuple        # (sh, sw)
    padding: tuple       # (ph, pw), each side
    dilation: tuple      # (dh, dw)
    out_hw: tuple        # (Ho, Wo)

    @property
    def n_planes(self):
        return int(np.prod(self.lead_shape, dtype=np.int64))

    @property
    def out_shape(self):
        """Shape of the public output (1-D: without the H axis)."""
        return self.lead_shape + self.out_hw[2 - self.nsp:]

    @property
    def in_shape(self):
        return self.lead_shape + self.in_hw[2 - self.nsp:]

    def geometry(self):
        """kh, kw, sh, sw, ph, pw, dh, dw."""
        return self.kernel + self.stride + self.padding + self.dilation


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------

_BACKEND_PACKAGES = {name: f"kernels.{name}" for name in BACKENDS}


def backends():
    """Names of the registered backends (built-in ones first)."""
    return tuple(_BACKEND_PACKAGES)


def check_backend(backend):
    if not isinstance(backend, str) or backend not in _BACKEND_PACKAGES:
        raise ValueError(
            f"backend must be one of "
            f"{', '.join(repr(b) for b in _BACKEND_PACKAGES)}; got {backend!r}")
    return backend


def register_backend(name, package):
    """Add a backend: ``package`` (an importable name) holds its modules.

    For backends outside this package (and the test that checks the
    contract).  Its kernels are found through :data:`MODULES` like the
    built-in ones'; ``package._tuning`` may give ``AUTO_THRESHOLDS``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"backend name must be an identifier, got {name!r}")
    if name in BACKENDS:
        raise ValueError(f"backend {name!r} is built in")
    _BACKEND_PACKAGES[name] = str(package)
    reload_registry()


def unregister_backend(name):
    """Remove a backend added by :func:`register_backend`."""
    if name in BACKENDS:
        raise ValueError(f"backend {name!r} is built in")
    _BACKEND_PACKAGES.pop(name, None)
    reload_registry()


def backend_tuning(backend):
    """The backend's ``_tuning`` module, or None when it has none."""
    try:
        return _tunings[backend]
    except (KeyError, TypeError):
        pass
    name = f"{_BACKEND_PACKAGES[check_backend(backend)]}._tuning"
    tuning = importlib.import_module(name) if _find(name) else None
    _tunings[backend] = tuning
    return tuning


# backend -> its _tuning module or None: "auto" asks on every call, and
# ``import_module`` after a kernel took ~30 us of a ResNet-50 call at
# batch 1 (docs/performance.md, section AH).
_tunings = {}


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Kernel:
    """An entry point and its applicability rule (see the module docstring).

    ``checks_finite_input``: ``run`` itself raises :class:`NonFiniteInput`,
    before it returns anything, when its input ``x`` holds NaN or Inf (it
    sees every element while packing it), so that the front end need not
    pass over ``x`` first (see :func:`kernels._conv.run_conv2d`).  Such a
    kernel may raise it for a non-finite filter too, when it reads the
    filter itself instead of through the weight cache (CPU Winograd's
    streamed path); the front end then also runs direct.

    ``prepare``: optional; ``prepare(spec)`` returns ``run``'s work for
    that one problem as a callable ``(x, w, bias) -> y`` (or None: no
    prepared form), with whatever ``run`` would work out from the shapes
    and the tunables in force done once.  The front end keeps it while
    the tunables and ``"auto"``'s thresholds stay the same objects
    (:func:`kernels._conv.run_conv2d`): a network calls each layer's
    shapes again and again, and between its kernels' launches the
    planning in Python ran with caches cold.
    """

    run: Callable
    unsupported_reason: Optional[Callable] = None
    checks_finite_input: bool = False
    prepare: Optional[Callable] = None

    def reason(self, spec):
        """None when ``run`` can compute ``spec``, else why not."""
        if self.unsupported_reason is None:
            return None
        return self.unsupported_reason(spec)


class NonFiniteInput(Exception):
    """Raised by a kernel with ``checks_finite_input`` when ``x`` (or a
    filter it read itself) holds NaN or Inf; the front end then computes
    the problem with ``direct``."""


POOLING_OPS = ("max_pool2d", "max_pool2d_with_indices", "max_pool2d_backward",
               "max_pool2d_backward_indices", "avg_pool2d",
               "avg_pool2d_backward", "global_avg_pool2d")

MODULES = {
    **{("conv2d", a): a for a in ALGORITHMS},
    ("conv_transpose2d", "direct"): "transposed",
    ("conv_transpose2d", "im2col"): "transposed",
    ("conv_transpose2d_filters", None): "transposed",
    ("conv2d_weight_grad", "im2col"): "backward",
    **{(op, None): "pooling" for op in POOLING_OPS},
    ("winograd_transform_weights", "winograd"): "winograd",
    ("conv2d_pretransformed", "winograd"): "winograd",
    ("winograd_clear_workspace", "winograd"): "winograd",
    # Reshaping, padding, flipping ... of device arrays (kernels._arrays).
    ("device_array_ops", None): "arrays",
}

# (op, backend, algorithm) -> Kernel or None; "auto" asks on every call.
_loaded = {}


def reload_registry():
    """Forget which kernels were found: call after changing :data:`MODULES`
    or a backend's files in a running process."""
    _loaded.clear()
    _import_errors.clear()
    _tunings.clear()
    _find.cache_clear()
    importlib.invalidate_caches()     # files added since the last import


@functools.lru_cache(maxsize=None)
def _find(module_name):
    try:
        return importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        return False


# backend -> the ImportError its modules raised (a toolkit not installed).
_import_errors = {}


def _lookup(op, backend, algorithm):
    key = (op, backend, algorithm)
    if key in _loaded:
        return _loaded[key]
    kernel = None
    place = MODULES.get((op, algorithm))
    if place is not None:
        name = f"{_BACKEND_PACKAGES[backend]}.{place}"
        if _find(name):
            try:
                module = importlib.import_module(name)
            except ImportError as exc:
                # Not usable here (e.g. numba-cuda missing): not built, and
                # load() says why.
                _import_errors[backend] = exc
                return None
            kernel = getattr(module, "KERNELS", {}).get((op, algorithm))
    _loaded[key] = kernel
    return kernel


def import_error(backend):
    """The ImportError that keeps ``backend``'s kernels from loading (its
    toolkit is not installed), or None."""
    return _import_errors.get(backend)


def find(op, backend, algorithm=None):
    """The :class:`Kernel` of ``op`` on ``backend``, or None when not built."""
    return _lookup(op, check_backend(backend), algorithm)


def is_built(op, backend, algorithm=None):
    """True when ``backend`` implements ``op`` (with ``algorithm``)."""
    return find(op, backend, algorithm) is not None


def built_algorithms(backend="cpu", op="conv2d"):
    """The algorithms of ``kernels.ALGORITHMS`` built for ``op`` on ``backend``."""
    return tuple(a for a in ALGORITHMS if is_built(op, backend, a))


def load(op, backend, algorithm=None):
    """The :class:`Kernel` of ``op`` on ``backend`` (with ``algorithm``).

    Raises ``NotImplementedError`` naming what is built when it is not.
    """
    kernel = _lookup(op, check_backend(backend), algorithm)
    if kernel is None and backend in _import_errors:
        raise _import_errors[backend]
    if kernel is None:
        place = MODULES.get((op, algorithm))
        where = (f"no {place}.py in {_BACKEND_PACKAGES[backend]} with it"
                 if place else "no such kernel")
        if algorithm is None:
            raise NotImplementedError(
                f"{op} is not built for backend {backend!r} ({where})")
        built = ", ".join(built_algorithms(backend, op)) or "none"
        raise NotImplementedError(
            f"{op} with algorithm {algorithm!r} is not built for backend "
            f"{backend!r} ({where}); built algorithms for {op}: {built}")
    return kernel


def unsupported_reason(op, backend, algorithm, spec):
    """None when ``algorithm`` computes ``spec`` on ``backend``, else why not."""
    return load(op, backend, algorithm).reason(spec)


def require_supported(op, backend, algorithm, spec):
    """The :class:`Kernel`, or :class:`UnsupportedConfiguration` when it
    cannot compute ``spec`` (``NotImplementedError`` when not built)."""
    kernel = load(op, backend, algorithm)
    reason = kernel.reason(spec)
    if reason is not None:
        raise UnsupportedConfiguration(
            f"algorithm={algorithm!r} cannot compute this configuration: "
            f"{reason}; use algorithm='auto' or one of "
            f"{', '.join(repr(a) for a in ALGORITHMS)}")
    return kernel
