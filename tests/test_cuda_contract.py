"""The CUDA backend through the public API: every op and algorithm.

Runs on a GPU, or in numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
which ``.ci/run`` sets for its CUDA step); skipped without numba-cuda.
The shapes are tiny (the simulator runs a 256-thread block in about a
second) but chosen so that every front-end path is taken: 1-D and 2-D,
unbatched, stride, dilation, groups, padding modes, float32 and float64,
device arrays in and out, strided device views, empty batches, non-finite
input, and the errors.  Results are compared with ``reference/`` in units
of each algorithm's documented bound, or, for pooling, with the CPU
backend (itself checked against ``reference/``) bit for bit.

The per-module files ``tests/test_cuda_<module>.py`` test the stages and
edge tiles of each kernel; ``tests/test_cuda_report.py`` the compilation
report, whose ``--check`` gate (no spills, occupancy >= 25 %) ``.ci/run``
runs as a command.  Without a GPU and without the simulator the runtime errors are
checked in a subprocess (``test_errors_without_a_device``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kernels
import reference
from cuda_support import requires_cuda
from helpers import assert_within_bound, kernel_shapes_run, normalised_config

DTYPES = (np.float32, np.float64)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _device(a):
    from numba import cuda
    return cuda.to_device(np.ascontiguousarray(a))


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


# --------------------------------------------------------------------------
# Without CUDA: import and error behaviour (always run)
# --------------------------------------------------------------------------

def _run_python(code, env_changes, prelude=""):
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    source = textwrap.dedent(prelude) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", source],
                          cwd=os.path.dirname(os.path.dirname(__file__)),
                          env=env, capture_output=True, text=True, timeout=300)


def test_import_kernels_never_imports_cuda():
    result = _run_python("""
        import sys, numpy as np, kernels
        kernels.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)))
        kernels.max_pool2d(np.ones((1, 1, 4, 4)), 2)
        loaded = [m for m in sys.modules
                  if m.startswith(("numba.cuda", "numba_cuda", "kernels.cuda."))]
        print("LOADED", loaded)
        """, {})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED []" in result.stdout, result.stdout


_BLOCK_NUMBA_CUDA = """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.startswith(("numba_cuda", "numba.cuda", "_numba_cuda")):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None
    sys.meta_path.insert(0, Block())
"""


def test_cuda_without_numba_cuda_names_the_extra():
    result = _run_python("""
        import numpy as np, kernels
        for call in (lambda: kernels.conv2d(np.ones((1, 1, 4, 4)),
                                            np.ones((1, 1, 3, 3)), backend="cuda"),
                     lambda: kernels.max_pool2d(np.ones((1, 1, 4, 4)), 2,
                                                backend="cuda")):
            try:
                call()
            except ImportError as exc:
                print("ERROR", exc)
        print("CPU", kernels.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))).sum())
        """, {"NUMBA_ENABLE_CUDASIM": None}, prelude=_BLOCK_NUMBA_CUDA)
    assert result.returncode == 0, result.stderr[-2000:]
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2, result.stdout
    assert all("convbench[cuda]" in e and "numba-cuda" in e for e in errors), errors
    assert "CPU 36.0" in result.stdout


def test_cuda_counts_as_not_built_without_numba_cuda():
    result = _run_python("""
        import kernels
        print("BUILT", kernels.built_algorithms("cuda"))
        """, {"NUMBA_ENABLE_CUDASIM": None}, prelude=_BLOCK_NUMBA_CUDA)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "BUILT ()" in result.stdout


def _error_of_a_cuda_call(exception, prelude=""):
    """What a small ``backend="cuda"`` convolution raises (``exception``)
    in a fresh process without the simulator: the printed message."""
    result = _run_python(f"""
        import numpy as np, kernels
        try:
            kernels.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)),
                           backend="cuda")
        except {exception} as exc:
            print("ERROR", exc)
        """, {"NUMBA_ENABLE_CUDASIM": None}, prelude=prelude)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ERROR" in result.stdout, result.stdout
    return result.stdout


def test_errors_without_a_device():
    pytest.importorskip("numba_cuda")
    probe = _run_python("from numba import cuda; print(cuda.is_available())",
                        {"NUMBA_ENABLE_CUDASIM": None})
    if "True" in probe.stdout:
        pytest.skip("a GPU is present")
    message = _error_of_a_cuda_call("RuntimeError")
    assert "NUMBA_ENABLE_CUDASIM=1" in message and "no CUDA GPU" in message


def test_numpy_without_row_stack_is_named_with_what_to_do():
    # NumPy 2.5 removed np.row_stack, which numba-cuda 0.30.4 overloads:
    # every launch failed on a GPU.  Deleting it stands for NumPy 2.5.
    pytest.importorskip("numba_cuda")
    message = _error_of_a_cuda_call(
        "ImportError", prelude="import numpy as np\ndel np.row_stack\n")
    assert "numpy<2.5" in message


def test_device_arrays_are_refused_by_the_cpu_backend():
    class FakeDevice:
        __cuda_array_interface__ = {"shape": (1, 1, 4, 4), "typestr": "<f4",
                                    "data": (0, False), "version": 3}
    with pytest.raises(TypeError, match="backend='cuda'"):
        kernels.conv2d(FakeDevice(), np.ones((1, 1, 3, 3), np.float32))


# Host views that NumPy calls C-contiguous while a unit axis has an odd
# stride.  On an H200 each failed in numba-cuda (reshape "requires
# copying", or a copy to a device array of shape (1, 1, 0, 1)): an unbatched
# conv2d_backward (x[None]), 1-D im2col (x[:, :, None]) and the flipping
# property test (a flipped unit axis).  The simulator's device arrays are
# NumPy arrays, so these cases pass there whatever the host side does.
UNIT_AXIS_VIEWS = {
    "new leading axis": lambda a: a[None],
    "new middle axis": lambda a: a[:, :, None],
    "flipped unit axis": lambda a: a.reshape(2, 3, 1, 20)[:, :, ::-1],
    "all axes unit, flipped": lambda a: a[:1, :1, :1, :1][::-1, :, ::-1],
}


def _numba_cuda_layout_model():
    """numba-cuda's ``dummyarray`` (the strides and extents behind every
    device array), loaded from its file: the simulator replaces
    ``numba.cuda.cudadrv`` and refuses to import the real one."""
    import importlib.util
    from pathlib import Path
    package = importlib.util.find_spec("numba_cuda")
    if package is None:
        pytest.skip("numba-cuda is not installed")
    path = (Path(package.submodule_search_locations[0])
            / "numba" / "cuda" / "cudadrv" / "dummyarray.py")
    spec = importlib.util.spec_from_file_location("_numba_cuda_dummyarray", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("make_view", UNIT_AXIS_VIEWS.values(),
                         ids=UNIT_AXIS_VIEWS.keys())
def test_host_arrays_reach_the_device_with_usual_strides(make_view):
    Array = _numba_cuda_layout_model().Array     # skips without numba-cuda
    from kernels.cuda._runtime import canonical_host_array

    view = make_view(np.arange(2 * 3 * 4 * 5, dtype=np.float32)
                     .reshape(2, 3, 4, 5))
    assert view.flags.c_contiguous
    host = canonical_host_array(view)
    np.testing.assert_array_equal(host, view)
    assert np.shares_memory(host, view)          # a view, not a copy
    # A new array's strides: the GPU also failed on a flipped unit axis,
    # which numba-cuda's layout model below accepts.
    assert host.strides == np.empty(view.shape, view.dtype).strides
    # numba-cuda's own model of the device array that cuda.to_device makes
    layout = Array.from_desc(0, host.shape, host.strides, host.itemsize)
    assert layout.is_c_contig, host.strides
    assert len(layout.reshape(host.size)[1]) == 1   # reshapes without a copy


# --------------------------------------------------------------------------
# Convolution: every algorithm through the public API
# --------------------------------------------------------------------------

CONV_CASES = [
    # (nsp, x_shape, w_shape, kwargs)
    (2, (2, 3, 7, 6), (4, 3, 3, 3), dict(padding=1)),
    (2, (1, 4, 9, 8), (4, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0),
                                         dilation=(1, 2), groups=2)),
    (2, (1, 2, 6, 6), (3, 2, 3, 3), dict(padding="same", padding_mode="reflect")),
    (2, (2, 1, 5, 7), (2, 1, 3, 3), dict(padding=2, padding_mode="circular")),
    (1, (2, 3, 17), (2, 3, 5), dict(padding=2, stride=2)),
    (1, (1, 2, 11), (2, 2, 3), dict(padding=1, padding_mode="replicate")),
    (2, (1, 3, 8, 8), (5, 3, 1, 1), dict()),
]


def _spec(nsp, x_shape, w_shape, kwargs):
    return kernels._dispatch.ConvSpec.from_config(*normalised_config(
        nsp, x_shape, w_shape, **kwargs))


def _supported(algorithm, nsp, x_shape, w_shape, kwargs):
    return kernels._dispatch.unsupported_reason(
        "conv2d", "cuda", algorithm, _spec(nsp, x_shape, w_shape, kwargs)) is None


# float64 on two cases only: the simulator's time goes to shapes and
# paths (the per-module files run both dtypes through every stage).
CONV_RUNS = [(case, dtype) for case in range(len(CONV_CASES)) for dtype in DTYPES
             if dtype is np.float32 or case in (0, 4)]


@requires_cuda
@pytest.mark.parametrize("algorithm", ("auto",) + kernels.ALGORITHMS)
@pytest.mark.parametrize("case, dtype", CONV_RUNS)
def test_conv_matches_reference(case, algorithm, dtype):
    nsp, x_shape, w_shape, kwargs = CONV_CASES[case]
    if algorithm not in kernels.built_algorithms("cuda") and algorithm != "auto":
        pytest.skip(f"{algorithm} not built for cuda")
    if algorithm != "auto" and not _supported(algorithm, nsp, x_shape, w_shape,
                                              kwargs):
        with pytest.raises(kernels.UnsupportedConfiguration):
            getattr(kernels, f"conv{nsp}d")(
                np.ones(x_shape, dtype), np.ones(w_shape, dtype),
                algorithm=algorithm, backend="cuda", **kwargs)
        return
    rng = _rng(case)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    x0, w0 = x.copy(), w.copy()
    y = getattr(kernels, f"conv{nsp}d")(x, w, bias, algorithm=algorithm,
                                        backend="cuda", **kwargs)
    assert isinstance(y, np.ndarray)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)
    if algorithm == "auto":     # judged by the bound of what auto chose
        algorithm = kernels._choose.choose_for_spec(
            _spec(nsp, x_shape, w_shape, kwargs), "cuda")
    assert_within_bound(algorithm, y, x, w, bias, **kwargs)


@requires_cuda
@pytest.mark.parametrize("algorithm", kernels.ALGORITHMS)
def test_conv_device_arrays_in_device_array_out(algorithm):
    if algorithm not in kernels.built_algorithms("cuda"):
        pytest.skip(f"{algorithm} not built for cuda")
    rng = _rng(1)
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    y = kernels.conv2d(_device(x), _device(w), _device(b), padding=1,
                       algorithm=algorithm, backend="cuda")
    assert not isinstance(y, np.ndarray) and hasattr(y, "copy_to_host")
    assert_within_bound(algorithm, _host(y), x, w, b, padding=1)
    # A strided device view (every other column) gives the same result
    # as the same view on the host.
    xv = _device(x)[:, :, :, ::2]
    y2 = kernels.conv2d(xv, _device(w), None, padding=1, algorithm=algorithm,
                        backend="cuda")
    assert_within_bound(algorithm, _host(y2), x[:, :, :, ::2], w, None,
                        padding=1)


@requires_cuda
@pytest.mark.parametrize("algorithm", ["auto", "direct", "im2col"])
def test_kernel_taps_that_only_meet_padding_are_left_out_on_cuda(
        algorithm, monkeypatch):
    # The front end's live taps (kernels/_conv.py) on the CUDA backend: a
    # 5 x 5 kernel padded by 2 over one row runs as 1 x 5 with host
    # arrays; a NaN in a left-out row, or device arrays, keep the kernel.
    seen = kernel_shapes_run(monkeypatch)
    rng = _rng(5)
    x = rng.standard_normal((1, 3, 1, 17)).astype(np.float32)
    w = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    y = kernels.conv2d(x, w, padding=2, algorithm=algorithm, backend="cuda")
    assert seen == [(1, 5)]
    assert_within_bound("direct", np.asarray(_host(y)), x, w, padding=2)
    y = kernels.conv2d(_device(x), _device(w), padding=2,
                       algorithm=algorithm, backend="cuda")
    assert seen[-1] == (5, 5)
    assert_within_bound("direct", _host(y), x, w, padding=2)
    w[1, 0, 0, 0] = np.nan
    y = np.asarray(_host(kernels.conv2d(x, w, padding=2, algorithm=algorithm,
                                        backend="cuda")))
    assert seen[-1] == (5, 5) and np.isnan(y[0, 1]).all()


@requires_cuda
def test_conv_unbatched_1d_and_padding_mode_on_device():
    rng = _rng(2)
    x = rng.standard_normal((3, 12)).astype(np.float64)
    w = rng.standard_normal((2, 3, 3)).astype(np.float64)
    y = kernels.conv1d(_device(x), _device(w), padding=2,
                       padding_mode="reflect", backend="cuda", algorithm="direct")
    assert tuple(y.shape) == (2, 14)
    assert_within_bound("direct", _host(y), x, w, None, padding=2,
                        padding_mode="reflect")


@requires_cuda
@pytest.mark.parametrize("on_device", [False, True])
def test_conv_empty_batch(on_device):
    x = np.zeros((0, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    b = np.arange(3, dtype=np.float32)
    args = (_device(x), _device(w), _device(b)) if on_device else (x, w, b)
    y = kernels.conv2d(*args, backend="cuda")
    assert tuple(y.shape) == (0, 3, 3, 3)
    assert np.dtype(y.dtype) == np.float32


@requires_cuda
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # simulator: inf * 0
@pytest.mark.parametrize("algorithm", ["winograd", "fft"])
def test_non_finite_input_reaches_only_its_windows(algorithm):
    if algorithm not in kernels.built_algorithms("cuda"):
        pytest.skip(f"{algorithm} not built for cuda")
    rng = _rng(3)
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    x[0, 0, 6, 6] = np.inf
    for arg in (x, _device(x)):
        y = _host(kernels.conv2d(arg, w, padding=1, algorithm=algorithm,
                                 backend="cuda"))
        assert_within_bound("direct", y, x, w, None, padding=1)


@requires_cuda
@pytest.mark.parametrize("mode", ["full", "valid", "same"])
@pytest.mark.parametrize("fn", ["correlate", "convolve"])
def test_scipy_compatible_functions(fn, mode):
    rng = _rng(4)
    a = rng.standard_normal((9, 7))
    b = rng.standard_normal((3, 4))
    z = getattr(kernels, fn)(a, b, mode=mode, backend="cuda")
    z_ref = getattr(reference, fn)(a, b, mode=mode)
    assert z.shape == z_ref.shape
    np.testing.assert_allclose(z, z_ref, rtol=1e-10, atol=1e-10)
    zd = getattr(kernels, fn)(_device(a[0]), _device(b[0]), mode=mode,
                              backend="cuda")
    np.testing.assert_allclose(_host(zd), getattr(reference, fn)(a[0], b[0],
                                                                 mode=mode),
                               rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------
# Transposed convolution and the backward pass
# --------------------------------------------------------------------------

TRANSPOSED_CASES = [
    (2, (2, 4, 4, 5), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    (2, (1, 4, 5, 4), (4, 1, 3, 2), dict(groups=2, dilation=(2, 1))),
    (2, (1, 3, 6, 6), (3, 2, 3, 3), dict(padding=1)),
    (1, (2, 2, 7), (2, 3, 4), dict(stride=3, padding=2)),
]


TRANSPOSED_RUNS = [(case, dtype) for case in range(len(TRANSPOSED_CASES))
                   for dtype in DTYPES if dtype is np.float32 or case == 0]


@requires_cuda
@pytest.mark.parametrize("algorithm", ("auto",) + kernels.ALGORITHMS)
@pytest.mark.parametrize("case, dtype", TRANSPOSED_RUNS)
def test_conv_transpose_matches_reference(case, algorithm, dtype):
    from kernels._choose import transposed_algorithms
    if algorithm != "auto" and algorithm not in transposed_algorithms("cuda"):
        pytest.skip(f"transposed {algorithm} not built for cuda")
    nsp, x_shape, w_shape, kwargs = TRANSPOSED_CASES[case]
    rng = _rng(10 + case)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[1] * kwargs.get("groups", 1)).astype(dtype)
    fn = getattr(kernels, f"conv_transpose{nsp}d")
    try:
        y = fn(x, w, bias, algorithm=algorithm, backend="cuda", **kwargs)
    except kernels.UnsupportedConfiguration:
        assert algorithm in ("winograd", "fft")
        return
    y_ref = getattr(reference, f"conv_transpose{nsp}d")(
        x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64),
        **kwargs)
    scale = getattr(reference, f"conv_transpose{nsp}d")(
        np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
        np.abs(bias).astype(np.float64), **kwargs)
    tol = (kernels.accuracy.error_bound("fft" if algorithm == "auto" else algorithm,
                                        dtype, scale, scale.max()))
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert (np.abs(y - y_ref) <= tol).all(), np.abs(y - y_ref).max()
    yd = fn(_device(x), _device(w), _device(bias), algorithm=algorithm,
            backend="cuda", **kwargs)
    assert (np.abs(_host(yd) - y_ref) <= tol).all()


@requires_cuda
@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("algorithm", ["auto", "im2col", "direct"])
def test_conv2d_backward_matches_the_adjoint_and_reference(algorithm, on_device):
    rng = _rng(20)
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 3))
    kwargs = dict(stride=2, padding=1, dilation=1, groups=2)
    gy = rng.standard_normal(reference.conv2d(x, w, **kwargs).shape)
    args = (_device(gy), _device(x), _device(w)) if on_device else (gy, x, w)
    gx, gw, gb = (_host(a) for a in kernels.conv2d_backward(
        *args, algorithm=algorithm, backend="cuda", **kwargs))
    # <conv2d(x, w), gy> is linear in x and in w: its gradients are exact
    # float64 sums, checked against the reference's transposed convolution
    # and a finite-difference-free identity for gw.
    gx_ref = reference.conv_transpose2d(gy, w, stride=2, padding=1, groups=2,
                                        output_padding=(0, 1))
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-10, atol=1e-10)
    e = np.zeros_like(w)
    for idx in [(0, 0, 0, 0), (5, 1, 2, 1), (3, 0, 1, 2)]:
        e[...] = 0
        e[idx] = 1
        expected = float((reference.conv2d(x, e, **kwargs) * gy).sum())
        assert abs(gw[idx] - expected) <= 1e-10 * max(1, abs(expected))
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-12)


# --------------------------------------------------------------------------
# Pooling: bit for bit with the CPU backend (checked against reference/)
# --------------------------------------------------------------------------

POOL_CASES = [
    (2, (2, 3, 7, 8), dict(kernel_size=3, stride=2, padding=1)),
    (2, (1, 2, 9, 9), dict(kernel_size=(2, 3), stride=(2, 1), ceil_mode=True)),
    (1, (2, 2, 13), dict(kernel_size=4, stride=3, padding=2)),
]


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_pooling_equals_the_cpu_backend(case, dtype):
    nsp, shape, kwargs = POOL_CASES[case]
    rng = _rng(30 + case)
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[3] = np.nan
    max_pool = getattr(kernels, f"max_pool{nsp}d")
    avg_pool = getattr(kernels, f"avg_pool{nsp}d")
    y_cpu, i_cpu = max_pool(x, return_indices=True, **kwargs)
    y, i = max_pool(x, return_indices=True, backend="cuda", **kwargs)
    np.testing.assert_array_equal(y, y_cpu)
    np.testing.assert_array_equal(i, i_cpu)
    yd = max_pool(_device(x), backend="cuda", **kwargs)
    np.testing.assert_array_equal(_host(yd), y_cpu)
    a_cpu = avg_pool(np.nan_to_num(x), **kwargs)
    a = avg_pool(np.nan_to_num(x), backend="cuda", **kwargs)
    a_ref = getattr(reference, f"avg_pool{nsp}d")(np.nan_to_num(x), **kwargs)
    k = np.prod(np.broadcast_to(kwargs["kernel_size"], (nsp,)))
    scale = getattr(reference, f"avg_pool{nsp}d")(np.abs(np.nan_to_num(x)), **kwargs)
    tol = (k + 1) * np.finfo(dtype).eps / 2 * scale + 1e-300
    assert (np.abs(a - a_ref) <= tol).all()
    assert (np.abs(a_cpu - a_ref) <= tol).all()


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_backward_and_global_average(dtype):
    rng = _rng(40)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    kw = dict(kernel_size=3, stride=2, padding=1)
    y, idx = kernels.max_pool2d(x, return_indices=True, **kw)
    g = rng.standard_normal(y.shape).astype(dtype)
    for extra in ({}, {"indices": idx}):
        expect = kernels.max_pool2d_backward(g, x, **kw, **extra)
        got = kernels.max_pool2d_backward(g, x, backend="cuda", **kw, **extra)
        np.testing.assert_allclose(got, expect, rtol=4 * np.finfo(dtype).eps)
    got_dev = kernels.max_pool2d_backward(_device(g), _device(x), backend="cuda",
                                          indices=_device(idx), **kw)
    np.testing.assert_allclose(_host(got_dev), kernels.max_pool2d_backward(
        g, x, indices=idx, **kw), rtol=4 * np.finfo(dtype).eps)
    ga = rng.standard_normal(kernels.avg_pool2d(x, **kw).shape).astype(dtype)
    np.testing.assert_allclose(
        kernels.avg_pool2d_backward(ga, x, backend="cuda", **kw),
        kernels.avg_pool2d_backward(ga, x, **kw),
        rtol=16 * np.finfo(dtype).eps, atol=16 * np.finfo(dtype).eps)
    gap = kernels.global_avg_pool2d(x, backend="cuda")
    np.testing.assert_allclose(gap, reference.global_avg_pool2d(
        x.astype(np.float64)), rtol=4 * np.finfo(dtype).eps)
    gap_d = kernels.global_avg_pool2d(_device(x), backend="cuda")
    assert tuple(gap_d.shape) == (2, 3, 1, 1)


@requires_cuda
def test_pooling_empty_batch_on_device():
    x = _device(np.zeros((0, 2, 5, 5), np.float32))
    y = kernels.max_pool2d(x, 2, backend="cuda")
    assert tuple(y.shape) == (0, 2, 2, 2) and not isinstance(y, np.ndarray)
