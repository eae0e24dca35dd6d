"""FFT (weight transform included) vs scipy.signal.fftconvolve, 1024^2, odd k 9..63.

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/fft_vs_fftconvolve.py``.
A script, not an asv class: it prints issue 3's table from one process,
contenders interleaved, median of 7 repeats.
"""
import time, numpy as np, scipy.signal, scipy.fft
import kernels, threadpoolctl
from kernels.cpu import fft as kfft



def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 1024)).astype(np.float32)
    x4 = x[None, None]
    print("BLAS", [(d["internal_api"], d.get("architecture"), d["num_threads"]) for d in threadpoolctl.threadpool_info()])
    ratios1, ratios2 = [], []
    print(f"{'k':>3} {'ours ms':>8} {'scipy1 ms':>9} {'scipy2 ms':>9} {'x1':>6} {'x2':>6}")
    for k in range(9, 64, 2):
        w = rng.standard_normal((k, k)).astype(np.float32)
        wf = w[::-1, ::-1].copy()          # convolve(x, wf) == correlate(x, w)
        w4 = w[None, None]
        pad = (k - 1) // 2
        def ours():
            kfft.clear_caches()            # the kernel transform is timed too
            return kernels.conv2d(x4, w4, padding=pad, algorithm="fft")
        def sc1():
            return scipy.signal.fftconvolve(x, wf, mode="same")
        def sc2():
            with scipy.fft.set_workers(2):
                return scipy.signal.fftconvolve(x, wf, mode="same")
        fs = [ours, sc1, sc2]
        for f in fs: f()                   # plans, compilation
        times = {f: [] for f in fs}
        for r in range(7):
            for f in fs[r % 3:] + fs[:r % 3]:
                t0 = time.perf_counter(); f(); times[f].append(time.perf_counter() - t0)
        t = [np.median(times[f]) * 1e3 for f in fs]
        ratios1.append(t[1] / t[0]); ratios2.append(t[2] / t[0])
        print(f"{k:3d} {t[0]:8.2f} {t[1]:9.2f} {t[2]:9.2f} {t[1]/t[0]:6.2f} {t[2]/t[0]:6.2f}")
    print(f"min ratio vs fftconvolve 1 worker {min(ratios1):.2f}, 2 workers {min(ratios2):.2f}; "
          f"median {np.median(ratios1):.2f} / {np.median(ratios2):.2f}")


if __name__ == "__main__":
    main()
