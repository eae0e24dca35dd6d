"""A repeated call compiles nothing.

Numba compiles a kernel the first time it sees a combination of argument
types; the same types again must find the compiled kernel.  A kernel that
is re-typed on every call (``numba.literally`` on an argument does that:
each call types the function once with the plain type before it finds the
literal specialisation) costs tens of milliseconds per call without any
test of results noticing.  The Numba compile events tell.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba.core import event

import kernels
from kernels.cpu import winograd as cpu_winograd


def _compiled_during(call):
    """The functions Numba compiled while ``call()`` ran."""
    with event.install_recorder("numba:compile") as recorder:
        call()
    return sorted({e.data["dispatcher"].py_func.__qualname__
                   for _, e in recorder.buffer if e.is_start})


def _assert_second_call_compiles_nothing(call):
    call()                                  # compiles, or loads the cache
    assert _compiled_during(call) == []


def _problem(rng, dtype, c=8, k=6, hw=(13, 11), kernel=(3, 3), n=2):
    x = rng.standard_normal((n, c, *hw)).astype(dtype)
    w = rng.standard_normal((k, c, *kernel)).astype(dtype)
    return x, w, rng.standard_normal(k).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algorithm", kernels.ALGORITHMS)
def test_conv2d(algorithm, dtype):
    x, w, b = _problem(np.random.default_rng(0), dtype)
    _assert_second_call_compiles_nothing(
        lambda: kernels.conv2d(x, w, b, padding=1, algorithm=algorithm))


@pytest.mark.parametrize("path", ["fused", "staged"])
@pytest.mark.parametrize("m", [2, 4, 6])
def test_winograd_tiles_and_paths(m, path):
    """Every tile code (F(2,3), F(4,3) unrolled; F(6,3) generic) on both
    paths of the Winograd kernel."""
    x, w, b = _problem(np.random.default_rng(1), np.float32)
    tile = cpu_winograd.tile_for((3, 3), m)
    transformed = cpu_winograd.transform_weights(w, tile)
    _assert_second_call_compiles_nothing(
        lambda: cpu_winograd.conv2d_transformed(x, transformed, b,
                                                (1, 1, 1, 1), path=path))


@pytest.mark.parametrize("algorithm", kernels.ALGORITHMS)
def test_conv_transpose2d_and_backward(algorithm):
    rng = np.random.default_rng(2)
    x, w, _ = _problem(rng, np.float32)
    wt = np.ascontiguousarray(w.transpose(1, 0, 2, 3))
    g = rng.standard_normal((2, 6, 13, 11)).astype(np.float32)

    def calls():
        for op, args in [(kernels.conv_transpose2d, (x, wt)),
                         (kernels.conv2d_backward, (g, x, w))]:
            try:
                op(*args, padding=1, algorithm=algorithm)
            except kernels.UnsupportedConfiguration:
                pass                # e.g. winograd for the filter gradient

    _assert_second_call_compiles_nothing(calls)


def test_pooling_and_signals():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 12, 10)).astype(np.float32)
    g = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    a, v = rng.standard_normal(300), rng.standard_normal(17)

    def calls():
        kernels.max_pool2d(x, 2)
        kernels.avg_pool2d(x, 2)
        kernels.global_avg_pool2d(x)
        kernels.max_pool2d_backward(g, x, 2)
        kernels.avg_pool2d_backward(g, x, 2)
        kernels.conv1d(x[:, :, 0], x[:1, :, 0, :3])
        kernels.correlate(a, v, mode="same")
        kernels.convolve(a, v)

    _assert_second_call_compiles_nothing(calls)
