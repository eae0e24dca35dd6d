"""The CUDA backend on a real GPU: tests, then timings against the model.

A prepared script for the few minutes an NVIDIA GPU (an H200) is lent::

    python benchmarks/cuda_device.py --quick --json cuda_device.json
    python benchmarks/cuda_device.py --json cuda_device.json     # all cases
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/cuda_device.py --dry-run

1. ``python -m pytest tests -k cuda -q -x`` on the GPU (the simulator
   variable removed), unless ``--skip-tests`` or ``--dry-run``.
2. Every op and algorithm of the CUDA backend on the workloads of the
   roofline model (:func:`convbench.cuda_report.model_workloads`):
   ``conv2d`` by direct, im2col, winograd and fft on ResNet-50's 3x3
   layers and VGG-16's layers at batch 32 and the single-channel 2048^2
   image with kernels 3..63; ``conv_transpose2d`` (direct, im2col) and
   ``conv2d_weight_grad`` (im2col) on ResNet-50's stride-1 3x3 layers;
   ``max_pool2d`` 3x3 / 2 of ResNet-50's conv1 output.  Each is timed
   with CUDA events (``--warmup`` calls, the first of which compiles, then
   ``--repeats`` calls; median, min and max), next to
   ``torch.nn.functional`` on the same device tensors
   (``cudnn.benchmark = True``, TF32 off for matmul and cuDNN).  Inputs
   are torch CUDA tensors passed through ``__cuda_array_interface__`` (or
   numba device arrays when torch has no CUDA), so no host copy is
   timed; the entry points allocate their output (numba's allocator,
   deallocation deferred while timing) and that allocation is inside the
   time.
3. Per case: measured time, torch's, the model's roofline time on this
   GPU (H100 numbers when the name says H100, else H200) and the fraction
   of it reached (bound / measured), effective GFLOP/s (2 MACs / time),
   for pooling GB/s against HBM, and the relative max error against
   torch.  A case that fails prints its error and the run goes on.
   ``--json`` writes everything, with the test summary.

``--dry-run`` runs one tiny case per op (works in numba's simulator,
``NUMBA_ENABLE_CUDASIM=1``, with torch on the CPU as the reference) so
that the script itself can be checked without a GPU.  ``--quick`` takes a
subset of the layers and fewer repeats (about 2-3 minutes on an H200,
not counting kernel compilation).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from convbench import cuda_report as cr  # noqa: E402
from kernels._dispatch import ConvSpec, TransposeSpec  # noqa: E402

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
CONV_ALGORITHMS = ("direct", "im2col", "winograd", "fft")


# --------------------------------------------------------------------------
# Step 1: the test suite on the GPU
# --------------------------------------------------------------------------

def run_tests(timeout):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    cmd = [sys.executable, "-m", "pytest", "tests", "-k", "cuda", "-q", "-x"]
    print(f"$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
        out = out if isinstance(out, str) else out.decode(errors="replace")
    seconds = time.perf_counter() - start
    tail = "\n".join(out.splitlines()[-25:])
    print(tail)
    print(f"# tests: exit {rc} in {seconds:.0f} s\n", flush=True)
    return {"command": " ".join(cmd), "returncode": rc, "seconds": seconds,
            "tail": tail}


# --------------------------------------------------------------------------
# Arrays and clocks
# --------------------------------------------------------------------------

class Env:
    """numba.cuda, torch (CUDA when available) and the device's roofline."""

    def __init__(self, dtype):
        from kernels.cuda._runtime import cuda
        self.cuda = cuda
        self.dtype = np.dtype(dtype)
        try:
            import torch
            import torch.nn.functional as F
        except ImportError:
            torch = F = None
        self.torch, self.F = torch, F
        self.torch_cuda = (torch is not None and not SIMULATOR
                           and torch.cuda.is_available())
        if self.torch_cuda:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.device_name = "simulator"
        if not SIMULATOR:
            dev = cuda.get_current_device()
            name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
            self.device_name = f"{name} (cc {dev.compute_capability[0]}." \
                               f"{dev.compute_capability[1]})"
        self.model_device = "H100" if "H100" in self.device_name else "H200"

    def tdtype(self):
        return {np.dtype(np.float32): self.torch.float32,
                np.dtype(np.float64): self.torch.float64}[self.dtype]

    def arrays(self, rng, *shapes):
        """For each shape: (array for our kernels, torch tensor or None)."""
        out = []
        for shape in shapes:
            host = rng.standard_normal(shape).astype(self.dtype)
            if self.torch_cuda:
                # One view of the tensor's memory, made once: passing the
                # tensor itself would re-read its interface (and sync its
                # stream) inside every timed call.
                t = self.torch.as_tensor(host, device="cuda")
                out.append((self.cuda.as_cuda_array(t), t))
            else:
                t = self.torch.from_numpy(host) if self.torch else None
                out.append((self.cuda.to_device(host), t))
        return out

    def as_torch(self, a):
        """Our result as a torch tensor on the reference's device."""
        if self.torch_cuda:
            return self.torch.as_tensor(a, device="cuda")
        host = a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)
        return self.torch.from_numpy(np.ascontiguousarray(host))

    def time(self, fn, warmup, repeats, budget, torch_side=False):
        """Median, min, max milliseconds of ``fn()`` (device time)."""
        first = None
        for i in range(warmup):
            t0 = time.perf_counter()
            fn()
            self.sync(torch_side)
            if i == warmup - 1:
                first = time.perf_counter() - t0
        if first is not None and first * repeats > budget:
            repeats = max(3, int(budget / max(first, 1e-9)))
        times = []
        with self.cuda.defer_cleanup():
            for _ in range(repeats):
                times.append(self._one(fn, torch_side))
        return {"median_ms": statistics.median(times), "min_ms": min(times),
                "max_ms": max(times), "repeats": len(times)}

    def sync(self, torch_side):
        if torch_side and self.torch_cuda:
            self.torch.cuda.synchronize()
        else:
            self.cuda.synchronize()

    def _one(self, fn, torch_side):
        if SIMULATOR:
            t0 = time.perf_counter()
            fn()
            self.sync(torch_side)
            return 1e3 * (time.perf_counter() - t0)
        if torch_side:
            start = self.torch.cuda.Event(enable_timing=True)
            end = self.torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        start, end = self.cuda.event(), self.cuda.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return self.cuda.event_elapsed_time(start, end)


# --------------------------------------------------------------------------
# Cases: (op, algorithm, label, model row, setup -> (ours, torch's))
# --------------------------------------------------------------------------

def _conv_spec(x_shape, w_shape, stride, pad, groups, dtype):
    return ConvSpec.from_config(x_shape, w_shape, (stride, stride),
                                (pad,) * 4, (1, 1), groups, dtype)


def conv_case(env, workload, label, spec, algorithm, stride, pad):
    from kernels import _dispatch
    kernel = _dispatch.find("conv2d", "cuda", algorithm)
    model = cr.model_conv(spec, algorithm, workload, label, env.dtype)

    def setup(rng):
        if kernel is None:
            raise NotImplementedError(f"conv2d/{algorithm} is not built for cuda")
        reason = kernel.reason(spec)
        if reason:
            raise NotImplementedError(reason)
        (x, xt), (w, wt) = env.arrays(rng, spec.x_shape, spec.w_shape)
        ours = lambda: kernel.run(spec, x, w, None)  # noqa: E731
        ref = lambda: env.F.conv2d(xt, wt, stride=stride, padding=pad,  # noqa: E731
                                   groups=spec.groups)
        return ours, ref
    return ("conv2d", algorithm, workload, label, model, setup)


def transposed_case(env, workload, label, x_shape, c_out, algorithm):
    """conv_transpose2d of a 3x3 / stride 1 / padding 1 layer."""
    from kernels import _dispatch
    n, c_in, h, w = x_shape
    spec = TransposeSpec(tuple(x_shape), (c_in, c_out, 3, 3), (1, 1), (1, 1),
                         (h, w), (1, 1), 1, env.dtype)
    kernel = _dispatch.find("conv_transpose2d", "cuda", algorithm)
    fwd = _conv_spec((n, c_out, h, w), (c_in, c_out, 3, 3), 1, 1, 1, env.dtype)
    model = cr.model_conv(fwd, "direct", workload, label, env.dtype)

    def setup(rng):
        if kernel is None:
            raise NotImplementedError(
                f"conv_transpose2d/{algorithm} is not built for cuda")
        reason = kernel.reason(spec)
        if reason:
            raise NotImplementedError(reason)
        (x, xt), (wgt, wt) = env.arrays(rng, spec.x_shape, spec.w_shape)
        ours = lambda: kernel.run(spec, x, wgt, None)  # noqa: E731
        ref = lambda: env.F.conv_transpose2d(xt, wt, padding=1)  # noqa: E731
        return ours, ref
    return ("conv_transpose2d", algorithm, workload, label, model, setup)


def weight_grad_case(env, workload, label, spec, pad):
    from kernels import _dispatch
    kernel = _dispatch.find("conv2d_weight_grad", "cuda", "im2col")
    model = cr.model_conv(spec, "direct", workload, label, env.dtype)

    def setup(rng):
        if kernel is None:
            raise NotImplementedError("conv2d_weight_grad is not built for cuda")
        reason = kernel.reason(spec)
        if reason:
            raise NotImplementedError(reason)
        (g, gt), (x, xt) = env.arrays(rng, spec.out_shape, spec.x_shape)
        ours = lambda: kernel.run(spec, g, x)  # noqa: E731
        import torch.nn.grad as tgrad
        ref = lambda: tgrad.conv2d_weight(xt, spec.w_shape, gt,  # noqa: E731
                                          stride=spec.stride[0], padding=pad,
                                          groups=spec.groups)
        return ours, ref
    return ("conv2d_weight_grad", "im2col", workload, label, model, setup)


def pool_case(env, workload, case):
    from kernels import _dispatch
    from kernels._pooling import pool_spec
    shape = case.x_shape
    spec = pool_spec(2, np.broadcast_to(np.float32(0), shape), case.kernel,
                      case.stride, case.padding, (1, 1), False)
    kernel = _dispatch.find("max_pool2d", "cuda")
    model = cr.model_pool(case, workload, env.dtype)

    def setup(rng):
        if kernel is None:
            raise NotImplementedError("max_pool2d is not built for cuda")
        ((x, xt),) = env.arrays(rng, shape)
        planes = x.reshape((spec.n_planes,) + spec.in_hw)
        ours = lambda: kernel.run(spec, planes)  # noqa: E731
        ref = lambda: env.F.max_pool2d(xt, case.kernel, case.stride,  # noqa: E731
                                       case.padding)
        return ours, ref
    return ("max_pool2d", "-", workload, case.label, model, setup)


QUICK_LAYERS = {
    "resnet50": ("layer1.0.conv2", "layer2.0.conv2", "layer3.1.conv2",
                 "layer4.1.conv2"),
    "vgg16": ("conv1_2", "conv3_2", "conv5_1"),
    "single": ("k=3", "k=15", "k=63"),
}


def build_cases(env, quick, batch, ops):
    cases = []
    for workload, items in cr.model_workloads(batch):
        for case in items:
            if isinstance(case, cr.PoolCase):
                if "max_pool2d" in ops:
                    cases.append(pool_case(env, workload, case))
                continue
            family = workload.split("-")[0].split()[0]
            if quick and not any(case.label.startswith(q)
                                 for q in QUICK_LAYERS.get(family, ())):
                continue
            spec = _conv_spec(case.x_shape, case.w_shape, case.stride,
                              case.padding, case.groups, env.dtype)
            if "conv2d" in ops:
                for a in CONV_ALGORITHMS:
                    cases.append(conv_case(env, workload, case.label, spec, a,
                                           case.stride, case.padding))
            if family == "resnet50" and case.stride == 1:
                if "conv_transpose2d" in ops:
                    for a in ("direct", "im2col"):
                        cases.append(transposed_case(
                            env, workload, case.label, case.x_shape,
                            case.w_shape[0], a))
                if "conv2d_weight_grad" in ops:
                    cases.append(weight_grad_case(env, workload, case.label,
                                                  spec, case.padding))
    return cases


def dry_run_cases(env, ops):
    """One tiny case per op (edge tiles included), for the simulator."""
    cases = []
    spec = _conv_spec((2, 3, 9, 10), (4, 3, 3, 3), 1, 1, 1, env.dtype)
    if "conv2d" in ops:
        for a in CONV_ALGORITHMS:
            cases.append(conv_case(env, "dry-run", "2x3x9x10 k3", spec, a, 1, 1))
    if "conv_transpose2d" in ops:
        for a in ("direct", "im2col"):
            cases.append(transposed_case(env, "dry-run", "1x3x6x7 k3",
                                         (1, 3, 6, 7), 2, a))
    if "conv2d_weight_grad" in ops:
        cases.append(weight_grad_case(env, "dry-run", "2x3x9x10 k3", spec, 1))
    if "max_pool2d" in ops:
        cases.append(pool_case(env, "dry-run", cr.PoolCase(
            "1x2x9x9 3x3/2", (1, 2, 9, 9), (3, 3), (2, 2), (1, 1))))
    return cases


# --------------------------------------------------------------------------
# Running and printing
# --------------------------------------------------------------------------

def relative_error(env, ours, ref):
    y = env.as_torch(ours).double()
    r = ref.double()
    if tuple(y.shape) != tuple(r.shape):
        y = y.reshape(r.shape)
    scale = float(r.abs().max()) or 1.0
    return float((y - r).abs().max()) / scale


def run_case(env, case, args, rng):
    op, algorithm, workload, label, model, setup = case
    result = {"op": op, "algorithm": algorithm, "workload": workload,
              "layer": label, "model": model}
    dev = env.model_device
    bound_us = model.get(f"t_{dev}_us") if model else None
    result["bound_us"] = bound_us
    try:
        ours, ref = setup(rng)
    except NotImplementedError as exc:
        result["skipped"] = str(exc)
        return result
    try:
        result["ours"] = env.time(ours, args.warmup, args.repeats, args.budget)
        if env.torch is not None:
            result["error_vs_torch"] = relative_error(env, ours(), ref())
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc(limit=-6)
    if env.torch is not None and not args.no_torch:
        try:
            result["torch"] = env.time(ref, args.warmup, args.repeats,
                                       args.budget, torch_side=True)
        except Exception as exc:
            result["torch_error"] = f"{type(exc).__name__}: {exc}"
    t = result.get("ours", {}).get("median_ms")
    if t:
        if bound_us:
            result["fraction_of_bound"] = bound_us / (1e3 * t)
        if model.get("macs"):
            result["gflops"] = 2 * model["macs"] / (1e6 * t)
        if op == "max_pool2d":
            result["gbytes_per_s"] = model["bytes"] / (1e6 * t)
    return result


def _ms(d):
    if not d:
        return "-"
    return f"{d['median_ms']:.3f} ({d['min_ms']:.3f}-{d['max_ms']:.3f})"


def format_line(r, env):
    head = f"{r['op']:<18} {r['algorithm']:<8} {r['workload'][:18]:<18} " \
           f"{r['layer'][:22]:<22}"
    if "skipped" in r:
        return f"{head} skipped: {r['skipped']}"
    if "error" in r:
        return f"{head} ERROR {r['error']}"
    ours, ref = r.get("ours"), r.get("torch")
    ratio = (f"{ours['median_ms'] / ref['median_ms']:.2f}x"
             if ours and ref else "-")
    bound = f"{r['bound_us']:.1f}" if r.get("bound_us") else "-"
    frac = (f"{100 * r['fraction_of_bound']:.0f} %"
            if r.get("fraction_of_bound") else "-")
    rate = (f"{r['gbytes_per_s']:.0f} GB/s of "
            f"{cr.DEVICES[-1 if env.model_device == 'H200' else 0].bandwidth / 1e9:.0f}"
            if r.get("gbytes_per_s") else
            f"{r['gflops']:.0f} GFLOP/s" if r.get("gflops") else "")
    err = (f"err {r['error_vs_torch']:.1e}"
           if r.get("error_vs_torch") is not None else "")
    return (f"{head} {_ms(ours):>28} torch {_ms(ref):>28} {ratio:>7}  "
            f"bound {bound:>9} us  {frac:>6}  {rate}  {err}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="a subset of the layers, 5 repeats")
    p.add_argument("--dry-run", action="store_true",
                   help="one tiny case per op; no tests (simulator-safe)")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--test-timeout", type=float, default=300)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--ops", default="conv2d,conv_transpose2d,"
                   "conv2d_weight_grad,max_pool2d")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed calls first (the first compiles)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls (default 10, 5 with --quick)")
    p.add_argument("--budget", type=float, default=3.0,
                   help="seconds of timed calls per contender at most "
                        "(fewer repeats, at least 3, for slow cases)")
    p.add_argument("--no-torch", action="store_true",
                   help="do not time torch (still used to check results)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.dry_run else (5 if args.quick else 10)
    if args.dry_run:
        args.warmup = min(args.warmup, 1)
    ops = set(t.strip() for t in args.ops.split(",") if t.strip())

    report = {"argv": sys.argv, "dtype": args.dtype, "simulator": SIMULATOR}
    if not (args.dry_run or args.skip_tests):
        report["tests"] = run_tests(args.test_timeout)
        if report["tests"]["returncode"] != 0:
            print("# tests failed; timing anyway (results of failing kernels "
                  "are flagged by their error against torch)\n", flush=True)

    env = Env(args.dtype)
    import numba
    import numba_cuda
    report["device"] = env.device_name
    report["model_device"] = env.model_device
    report["versions"] = {"numba": numba.__version__,
                          "numba_cuda": getattr(numba_cuda, "__version__", "?"),
                          "torch": getattr(env.torch, "__version__", None),
                          "cudnn": (env.torch.backends.cudnn.version()
                                    if env.torch_cuda else None)}
    print(f"# device: {env.device_name}; model: {env.model_device} roofline; "
          f"{args.dtype}; torch on {'cuda' if env.torch_cuda else 'cpu'}; "
          f"times in ms, median (min-max) of {args.repeats}", flush=True)
    cases = (dry_run_cases(env, ops) if args.dry_run
             else build_cases(env, args.quick, args.batch, ops))
    rng = np.random.default_rng(args.seed)
    results = []
    start = time.perf_counter()
    for case in cases:
        try:
            r = run_case(env, case, args, rng)
        except Exception as exc:  # keep going whatever happens
            r = {"op": case[0], "algorithm": case[1], "workload": case[2],
                 "layer": case[3], "error": f"{type(exc).__name__}: {exc}"}
        results.append(r)
        print(format_line(r, env), flush=True)
    report["results"] = results
    report["seconds"] = time.perf_counter() - start
    failed = [r for r in results if "error" in r]
    print(f"\n# {len(results)} cases in {report['seconds']:.0f} s; "
          f"{len(failed)} errors, "
          f"{sum('skipped' in r for r in results)} skipped")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"# wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
