"""What a timing depends on: CPU, threads, BLAS, environment, versions.

:func:`machine_info` gathers it as a JSON-ready dict (stored with every
sweep's results), :func:`format_machine_info` prints it.  The measured
single-precision GEMM rate (a 1024^3 float32 matmul) is the machine's
practical peak for the GEMM-based algorithms, so GFLOP/s figures can be
read as a fraction of it; the measured copy bandwidth (a 64 MiB array
copied) is the practical peak of memory-bound operations such as pooling.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from importlib import metadata

import numpy as np

from .timing import seeded_normal

__all__ = ["machine_info", "format_machine_info", "sgemm_gflops",
           "copy_bandwidth_gbs", "blas_summary", "keep_freed_memory",
           "malloc_state"]

#: Environment variables that change the speed of the kernels or of BLAS.
ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
            "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS",
            "KMP_BLOCKTIME", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
            "NUMBA_THREADING_LAYER", "CONVBENCH_CALIBRATION")

_PACKAGES = ("numpy", "scipy", "numba", "llvmlite", "pyfftw", "threadpoolctl",
             "torch", "convbench")


def cpu_model():
    """The CPU's marketing name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count()


def numba_info():
    """Numba's thread count and threading layer (if already chosen)."""
    import numba
    info = {"num_threads": numba.get_num_threads(),
            "threading_layer_config": numba.config.THREADING_LAYER}
    try:
        info["threading_layer"] = numba.threading_layer()
    except ValueError:
        # Chosen lazily at the first parallel launch.
        info["threading_layer"] = None
    return info


def openmp_info():
    """How this process's OpenMP runtime came to be and what the package
    does about it (kernels._threads, kernels.cpu._blas): whether an OpenMP
    runtime (e.g. torch's libgomp) was loaded before ``import kernels``,
    the wait policy that runtime read, and whether BLAS pieces run in the
    OpenMP team (any import order) or on Python threads."""
    from kernels import _threads
    from kernels.cpu import _blas
    info = dict(_threads.describe())
    info["blas_pieces_in_openmp_team"] = _blas.gemm_in_openmp()
    return info


def blas_info():
    """threadpoolctl's view of the loaded BLAS and OpenMP libraries."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - a declared dependency
        return []
    keys = ("user_api", "internal_api", "prefix", "version", "num_threads",
            "threading_layer", "architecture", "filepath")
    return [{k: lib.get(k) for k in keys if k in lib} for lib in threadpool_info()]


def _owner(filepath):
    """'numpy' for .../site-packages/numpy.libs/libopenblas...so."""
    parts = filepath.replace("\\", "/").split("/")
    for part in reversed(parts[:-1]):
        if part.endswith(".libs") or part.endswith("_libs"):
            return part[:-5]
    return ""


def blas_summary(blas=None):
    """One line: 'openblas 0.3.31 SkylakeX, 2 threads (pthreads)'."""
    blas = blas_info() if blas is None else blas
    parts = []
    for lib in blas:
        if lib.get("user_api") != "blas":
            continue
        text = f"{lib.get('internal_api')} {lib.get('version') or ''}".strip()
        owner = _owner(lib.get("filepath") or "")
        if owner:
            text = f"{owner}: {text}"
        if lib.get("architecture"):
            text += f" core={lib['architecture']}"
        text += f", {lib.get('num_threads')} threads"
        if lib.get("threading_layer"):
            text += f" ({lib['threading_layer']})"
        parts.append(text)
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


# glibc mallopt parameters and the values keep_freed_memory() sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEPT_MMAP_THRESHOLD = 2**27
KEPT_TRIM_THRESHOLD = 2**28
_malloc = "default"


def keep_freed_memory():
    """Make glibc's malloc recycle freed blocks of up to 128 MiB.

    Whether a peer's large temporaries (``scipy.signal.fftconvolve`` on a
    1024^2 image: ~10 MB per call) are mapped afresh on every call depends
    on the process's heap history: after importing llvmlite (Numba) or
    torch before the data were made, each such call took 2500-3600 minor
    page faults and ran 1.4-1.6x slower on the development VM; in other
    processes none.  Fixed thresholds (``M_MMAP_THRESHOLD`` 128 MiB,
    ``M_TRIM_THRESHOLD`` 256 MiB) make that deterministic, 0 faults:
    every contender at its best.  For benchmark processes only; the
    package itself never calls it.  Returns False (and changes nothing
    that matters) where there is no glibc.
    """
    global _malloc
    import ctypes
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    ok = (mallopt(_M_MMAP_THRESHOLD, KEPT_MMAP_THRESHOLD) == 1
          and mallopt(_M_TRIM_THRESHOLD, KEPT_TRIM_THRESHOLD) == 1)
    if ok:
        _malloc = (f"freed memory kept (mmap threshold {KEPT_MMAP_THRESHOLD}, "
                   f"trim threshold {KEPT_TRIM_THRESHOLD})")
    return ok


def malloc_state():
    """'default', or what :func:`keep_freed_memory` set."""
    return _malloc


def package_versions():
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def sgemm_gflops(n=1024, repeats=5):
    """GFLOP/s of an n^3 float32 matmul (median of ``repeats``, warmed up)."""
    a, b = seeded_normal((n, n), (n, n), dtype=np.float32, seed=0,
                         draw_dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)  # warm-up: thread pool start, page faults
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    return 2.0 * n ** 3 / statistics.median(times) / 1e9


def copy_bandwidth_gbs(nbytes=2**26, repeats=5):
    """GB/s (10^9 bytes) of copying an ``nbytes`` array, read + write.

    A copy moves ``2 * nbytes`` (one read, one write; the write-allocate
    read of the destination is not counted), so this is the bandwidth a
    streaming kernel such as pooling can reach.  64 MiB is far above the
    last-level cache of the machines this project runs on.  Median of
    ``repeats`` after a warm-up copy (page faults of the destination).
    """
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # warm-up: page faults
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2.0 * src.nbytes / statistics.median(times) / 1e9


def machine_info(measure=True):
    """Everything a timing depends on, as a JSON-ready dict.

    ``measure=False`` skips the GEMM and copy measurements (about 0.1-1 s).
    """
    import kernels  # noqa: F401  (sets OMP_WAIT_POLICY before numba runs)
    info = {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "numba": numba_info(),
        "openmp": openmp_info(),
        "blas": blas_info(),
        "blas_summary": blas_summary(),
        "env": {name: os.environ.get(name) for name in ENV_VARS},
        "malloc": malloc_state(),
        "versions": package_versions(),
    }
    if "torch" in sys.modules:
        info["torch_num_threads"] = sys.modules["torch"].get_num_threads()
    if measure:
        info["sgemm_1024_gflops"] = round(sgemm_gflops(), 2)
        info["copy_gbs"] = round(copy_bandwidth_gbs(), 2)
    return info


def _format_openmp(openmp):
    if not openmp:
        return "not recorded"
    first = ("loaded before kernels (e.g. torch imported first)"
             if openmp["openmp_loaded_before_kernels"]
             else "loaded by kernels")
    policy = openmp["omp_wait_policy_seen_by_runtime"] or "unset (spins)"
    pieces = ("in the OpenMP team" if openmp["blas_pieces_in_openmp_team"]
              else "on Python threads")
    return f"runtime {first}; wait policy {policy}; BLAS pieces {pieces}"


def format_machine_info(info):
    """Aligned 'key: value' lines for the terminal."""
    numba = info["numba"]
    env = ", ".join(f"{k}={v}" for k, v in info["env"].items() if v is not None)
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items()
                         if v is not None)
    rows = [
        ("CPU", f"{info['cpu_model']} ({info['machine']})"),
        ("cores", f"{info['usable_cores']} usable of {info['cpu_count']}"),
        ("numba", f"{numba['num_threads']} threads, threading layer "
                  f"{numba['threading_layer'] or 'not chosen yet'}"
                  f" (config: {numba['threading_layer_config']})"),
        ("BLAS", info["blas_summary"]),
        ("OpenMP", _format_openmp(info.get("openmp"))),
        ("env", env or "(none of the tracked variables set)"),
        ("malloc", info.get("malloc", "default")),
        ("versions", versions),
        ("python", f"{info['python']} on {info['platform']}"),
    ]
    if "torch_num_threads" in info:
        rows.append(("torch threads", str(info["torch_num_threads"])))
    if "sgemm_1024_gflops" in info:
        rows.append(("sgemm 1024^3", f"{info['sgemm_1024_gflops']:.1f} GFLOP/s "
                                     "(float32 matmul, median of 5)"))
    if "copy_gbs" in info:
        rows.append(("copy 64 MiB", f"{info['copy_gbs']:.1f} GB/s (read + write, "
                                    "median of 5)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
