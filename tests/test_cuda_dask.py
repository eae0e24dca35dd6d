"""kernels.dask with backend="cuda": each block runs the CUDA kernel.

Tiny shapes (the simulator runs one Python thread per CUDA thread), the
synchronous scheduler; the Dask result equals the in-memory CUDA result
bit for bit for ``direct`` (its reduction order does not depend on where
the block lies) and pooling, and is within the bound for the others.
"""

from __future__ import annotations

import numpy as np
import pytest

from cuda_support import requires_cuda

pytestmark = requires_cuda
pytest.importorskip("numba_cuda")
da = pytest.importorskip("dask.array")
kd = pytest.importorskip("kernels.dask")

import kernels  # noqa: E402
from helpers import assert_within_bound  # noqa: E402

SYNC = {"scheduler": "synchronous"}


def test_conv2d_cuda_blocks_equal_the_in_memory_cuda_result():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 12, 11)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    xd = da.from_array(x, chunks=(1, 2, 5, 4))
    got = kd.conv2d(xd, w, padding=1, algorithm="direct",
                    backend="cuda").compute(**SYNC)
    expected = kernels.conv2d(x, w, padding=1, algorithm="direct",
                              backend="cuda")
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, expected)
    # im2col's GEMM core sums each output in increasing k wherever its
    # tile lies, as the CPU's does: bit for bit too.
    im2col = kd.conv2d(xd, w, padding=1, algorithm="im2col",
                       backend="cuda").compute(**SYNC)
    np.testing.assert_array_equal(
        im2col, kernels.conv2d(x, w, padding=1, algorithm="im2col",
                               backend="cuda"))
    assert_within_bound("im2col", im2col, x, w, padding=1)


def test_pooling_cuda_blocks_equal_the_in_memory_cuda_result():
    x = np.random.default_rng(1).standard_normal((1, 2, 10, 9)).astype(
        np.float32)
    xd = da.from_array(x, chunks=(1, 1, 4, 5))
    for name in ("max_pool2d", "avg_pool2d"):
        got = getattr(kd, name)(xd, 3, stride=2, padding=1,
                                backend="cuda").compute(**SYNC)
        expected = getattr(kernels, name)(x, 3, stride=2, padding=1,
                                          backend="cuda")
        np.testing.assert_array_equal(got, expected)
