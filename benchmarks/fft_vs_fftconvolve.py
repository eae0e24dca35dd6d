"""FFT (weight transform included) vs scipy.signal.fftconvolve, 1024^2, odd k 9..63.

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/fft_vs_fftconvolve.py``.
A script, not an asv class: it prints issue 3's table, contenders
interleaved (each repeat in a new seeded order,
``convbench.timing.interleaved_times``), median of ``--repeats`` repeats
per kernel size.

Where SciPy runs, and its memory.  Whether ``fftconvolve``'s ~10 MB of
temporaries per call (1024^2 image) are mapped afresh on every call
depends on the process's heap history under glibc's malloc: after
importing llvmlite (which Numba, so this package, loads) or torch before
the arrays were made, or after loading them from an ``.npz``, every call
took 2500-3600 minor page faults and ran 1.4-1.6x slower (13-16 ms instead
of 9-10 ms on the Zen 4 VM); in other processes none.  So, by default,
the script first tells malloc to keep freed memory (``mallopt``
M_MMAP_THRESHOLD 128 MiB, M_TRIM_THRESHOLD 256 MiB), which gave 0 faults
per call: SciPy at its best, timed in this process, interleaved with ours.
``--plain`` skips that (SciPy as a user who imports both may see it);
``--child`` runs SciPy in a child process that imports only NumPy and
SciPy (same malloc settings), driven over a pipe call by call: there each
contender's process sleeps while the other runs, which on the 2-vCPU VM
made the next call of our two-thread code 1.5-2x slower (a process that
spun instead of sleeping did not), so it measures both sides after idling.
This package's own calls took 0-100 faults each.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from convbench.machine import (KEPT_MMAP_THRESHOLD, KEPT_TRIM_THRESHOLD,
                               keep_freed_memory)
from convbench.timing import interleaved_times, seeded_normal, summarize

KERNELS = range(9, 64, 2)

# The same thresholds for a child process, through glibc's environment.
_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(KEPT_MMAP_THRESHOLD),
               "MALLOC_TRIM_THRESHOLD_": str(KEPT_TRIM_THRESHOLD)}


_CHILD = r"""
import sys, time, numpy as np, scipy.signal, scipy.fft
data = np.load(sys.argv[1])
x = data["x"]
def run(k, workers):
    wf = data[f"wf{k}"]
    with scipy.fft.set_workers(workers):
        t0 = time.perf_counter()
        scipy.signal.fftconvolve(x, wf, mode="same")
        return time.perf_counter() - t0
for line in sys.stdin:
    k, workers = map(int, line.split())
    print(repr(run(k, workers)), flush=True)
"""


class ChildPeer:
    """fftconvolve in a child process with only NumPy and SciPy."""

    def __init__(self, x, flipped, keep_memory=True):
        self.dir = tempfile.TemporaryDirectory()
        path = os.path.join(self.dir.name, "data.npz")
        np.savez(path, x=x, **{f"wf{k}": w for k, w in flipped.items()})
        env = dict(os.environ, **(_MALLOC_ENV if keep_memory else {}))
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, path],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True,
                                     env=env)

    def time(self, k, workers):
        self.proc.stdin.write(f"{k} {workers}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
        self.dir.cleanup()


class InlinePeer:
    """fftconvolve in this process."""

    def __init__(self, x, flipped, keep_memory=True):
        import scipy.fft
        import scipy.signal
        self.x, self.flipped = x, flipped
        self.fft, self.signal = scipy.fft, scipy.signal

    def time(self, k, workers):
        with self.fft.set_workers(workers):
            t0 = time.perf_counter()
            self.signal.fftconvolve(self.x, self.flipped[k], mode="same")
            return time.perf_counter() - t0

    def close(self):
        pass


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--plain", action="store_true",
                        help="leave malloc's settings alone")
    parser.add_argument("--child", action="store_true",
                        help="time SciPy in a child process")
    args = parser.parse_args(argv)
    if not args.plain and not keep_freed_memory():
        raise SystemExit("mallopt failed (not glibc?): use --plain")

    import kernels
    import threadpoolctl
    from kernels.cpu import fft as kfft

    x, *ws = seeded_normal((1024, 1024), *((k, k) for k in KERNELS),
                           dtype=np.float32, seed=0)
    weights = dict(zip(KERNELS, ws))
    # convolve(x, w[::-1, ::-1]) == correlate(x, w), which conv2d computes.
    flipped = {k: w[::-1, ::-1].copy() for k, w in weights.items()}
    peer = (ChildPeer if args.child else InlinePeer)(
        x, flipped, keep_memory=not args.plain)
    print("BLAS", [(d["internal_api"], d.get("architecture"), d["num_threads"])
                   for d in threadpoolctl.threadpool_info()])
    print("SciPy runs", "in a child process" if args.child
          else "in this process", "with malloc's settings",
          "untouched" if args.plain else "keeping freed memory")
    ratios1, ratios2 = [], []
    print(f"{'k':>3} {'ours ms':>8} {'scipy1 ms':>9} {'scipy2 ms':>9} "
          f"{'x1':>6} {'x2':>6}")
    x4 = x[None, None]
    try:
        for k in KERNELS:
            w4 = weights[k][None, None]
            pad = (k - 1) // 2

            def ours():
                kfft.clear_caches()        # the kernel transform is timed too
                t0 = time.perf_counter()
                kernels.conv2d(x4, w4, padding=pad, algorithm="fft")
                return time.perf_counter() - t0

            # Each contender times itself (the peer maybe in its child);
            # one untimed call each first: plans, compilation.
            contenders = {"ours": ours, "scipy1": lambda: peer.time(k, 1),
                          "scipy2": lambda: peer.time(k, 2)}
            times = interleaved_times(contenders, args.repeats, warmup=1,
                                      timer=lambda fn: fn())
            t = [summarize(ts).median * 1e3 for ts in times.values()]
            ratios1.append(t[1] / t[0])
            ratios2.append(t[2] / t[0])
            print(f"{k:3d} {t[0]:8.2f} {t[1]:9.2f} {t[2]:9.2f} "
                  f"{t[1] / t[0]:6.2f} {t[2] / t[0]:6.2f}", flush=True)
    finally:
        peer.close()
    print(f"min ratio vs fftconvolve 1 worker {min(ratios1):.2f}, "
          f"2 workers {min(ratios2):.2f}; "
          f"median {np.median(ratios1):.2f} / {np.median(ratios2):.2f}")


if __name__ == "__main__":
    main()
