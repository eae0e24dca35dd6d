"""``algorithm="auto"``: pick the algorithm expected to be fastest.

The choice is a public function, :func:`choose_algorithm`, so that it can
be inspected and tested on its own (as ``scipy.signal.choose_conv_method``).
Without ``measure`` it uses a cost model whose thresholds come from the
calibration file written by ``convbench calibrate`` when one exists (see
:mod:`kernels._calibration`), else from defaults measured on the
development machine.  It only ever returns an algorithm that is built for
the backend and supports the configuration.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from . import _dispatch
from ._validation import check_backend

# Defaults, overridden by a calibration file (kernels/_calibration.py).
DEFAULT_THRESHOLDS = {
    # Below this many multiply-adds per image the fast algorithms' set-up
    # costs more than they save: use direct.
    "direct_max_macs": 2.0e6,
    # Smallest kernel area (kH * kW) from which FFT beats the GEMM-based
    # algorithms for single-channel (C = K = 1) and multi-channel problems.
    # Single channel 1024^2 (convbench sweep, 2 cores): fft beats direct
    # from k = 17 on (Zen 4, since fft runs few-channel problems as tasks;
    # k = 15 a tie, 3.8 vs 3.9 ms; k = 21 before).
    "fft_min_area_single": 289,
    # C = K = 64 at 56^2: fft beats direct and torch from k = 7 on.
    "fft_min_area_multi": 49,
    # Winograd for 3x3 stride-1 layers with at least this many channels ...
    "winograd_min_channels": 16,
    # ... on images of at least this many pixels (H * W).  ResNet-50's 3x3
    # layers at batch 4 (two machines): Winograd beat im2col at 56^2 and
    # 28^2 and lost at 14^2 (0.84x) and 7^2 (0.42x), where a few tiles per
    # image meet a large transformed filter.
    "winograd_min_pixels": 400,
    # im2col only when each group has at least this many output channels ...
    "im2col_min_out_channels": 8,
    # ... and kernels of at most this area (kH * kW); larger ones run
    # direct.  Zen 4, 2 threads, once im2col no longer let OpenBLAS spin
    # and direct read its weights in place: direct beat im2col at every
    # k >= 3 (C = K = 16..256 at 14^2..64^2, 1.2-4.7x; ResNet-50's 3x3
    # layers 1.2-2.1x, conv1 7x7/2 1.8x), im2col won the 1x1 layers (a
    # plain GEMM, 1.1-1.5x).
    "im2col_max_area": 1,
}


def _thresholds():
    try:
        from ._calibration import load_thresholds
    except ImportError:  # pragma: no cover - module always present
        return dict(DEFAULT_THRESHOLDS)
    return load_thresholds(DEFAULT_THRESHOLDS)


def candidates(x_shape, w_shape, stride, padding, dilation, groups,
               backend="cpu"):
    """Built algorithms that support this configuration, in ALGORITHMS order."""
    out = []
    for algorithm in _dispatch.built_algorithms(backend):
        if _dispatch.unsupported_reason(algorithm, backend, x_shape, w_shape,
                                        stride, padding, dilation,
                                        groups) is None:
            out.append(algorithm)
    return out


def _model_choice(cands, x_shape, w_shape, stride, groups, t):
    n, c, h, w = x_shape
    k, cg, kh, kw = w_shape
    area = kh * kw
    macs = float(k) * cg * area * (h // stride[0]) * (w // stride[1])
    single = c == 1 and k == 1
    # FFT splits a strided convolution into sh*sw stride-1 ones whose
    # kernels are that much smaller: judge it by that phase kernel (ResNet
    # conv1, 7x7/2: fft 2.1 ms against direct's 0.78).
    phase_area = area / (stride[0] * stride[1])
    if "fft" in cands and phase_area >= (t["fft_min_area_single"] if single
                                         else t["fft_min_area_multi"]):
        return "fft"
    if macs <= t["direct_max_macs"] and "direct" in cands:
        return "direct"
    if ("winograd" in cands and kh == kw == 3 and groups == 1
            and min(c, k) >= t["winograd_min_channels"]
            and h * w >= t["winograd_min_pixels"]):
        return "winograd"
    # With few output channels the GEMM degenerates to matrix-vector
    # products, which the direct kernel's register tiles beat by 10x or more
    # (single-channel 1024^2 sweep: direct 3-35 ms, im2col 100-7000 ms).
    if ("im2col" in cands and k // groups >= t["im2col_min_out_channels"]
            and cg * area >= 8 and area <= t["im2col_max_area"]):
        return "im2col"
    return "direct" if "direct" in cands else cands[0]


def _time_candidates(cands, x_shape, w_shape, stride, padding, dilation,
                     groups, dtype, backend, repeats=3):
    from ._conv import ConvSpec, run_conv2d
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    spec = ConvSpec(tuple(x_shape), tuple(w_shape), tuple(stride),
                    tuple(padding), tuple(dilation), int(groups), np.dtype(dtype))
    times = {}
    for algorithm in cands:
        run_conv2d(spec, x, w, None, algorithm, backend)  # compile, plan
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            run_conv2d(spec, x, w, None, algorithm, backend)
            best = min(best, time.perf_counter() - t0)
        times[algorithm] = best
    return times


def choose_algorithm(x_shape, w_shape, stride=(1, 1), padding=(0, 0, 0, 0),
                     dilation=(1, 1), groups=1, dtype=np.float32,
                     backend="cpu", measure=False):
    """Choose the algorithm for a normalised 2-D convolution problem.

    Parameters
    ----------
    x_shape : (N, C, H, W)
    w_shape : (K, C // groups, kH, kW)
    stride, dilation : (sh, sw), (dh, dw)
    padding : (top, bottom, left, right) zero padding
    groups : int
    dtype : float32 or float64
    backend : {"cpu", "cuda"}
    measure : bool
        If True, run every candidate on random data of these shapes and
        return ``(best, times)`` with ``times`` a dict of seconds (best of
        three after a warm-up), like ``scipy.signal.choose_conv_method``.

    Returns
    -------
    algorithm : str, or (str, dict) with ``measure=True``
        Always built for ``backend`` and able to compute the problem.
    """
    check_backend(backend)
    problem = (tuple(int(v) for v in x_shape), tuple(int(v) for v in w_shape),
               tuple(stride), tuple(padding), tuple(dilation), int(groups),
               backend)
    if measure:
        cands = _candidates_or_raise(*problem)
        times = _time_candidates(cands, *problem[:6], dtype, backend)
        return min(times, key=times.get), times
    thresholds = tuple(sorted(_thresholds().items()))
    return _cached_choice(problem, thresholds)


def _candidates_or_raise(x_shape, w_shape, stride, padding, dilation, groups,
                         backend):
    cands = candidates(x_shape, w_shape, stride, padding, dilation, groups,
                       backend)
    if not cands:
        raise NotImplementedError(
            f"no algorithm built for backend {backend!r} supports this "
            f"configuration (built: {_dispatch.built_algorithms(backend)})")
    return cands


@functools.lru_cache(maxsize=4096)
def _cached_choice(problem, thresholds):
    """The model's choice for a problem under given thresholds, memoised:
    "auto" asks on every call, and a layer's shapes repeat."""
    x_shape, w_shape, stride, _, _, groups, _ = problem
    cands = _candidates_or_raise(*problem)
    return _model_choice(cands, x_shape, w_shape, stride, groups,
                         dict(thresholds))
