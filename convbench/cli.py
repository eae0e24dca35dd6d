"""Command line: ``convbench report | sweep | machine | calibrate | cuda-report``.

Examples
--------
The report (figures, tables, machine) of a quick set of sweeps, in under
three minutes (see :mod:`convbench.report`)::

    convbench report --quick --out report/

Kernel-size sweep of one image, every built algorithm next to SciPy::

    convbench sweep --shape 1,1,512,512,1 --kernels 3:31:4

The distinct convolution layers of ResNet-50 at batch 4::

    convbench sweep --network resnet50 --batch 4 --peers torch

A named workload (see ``convbench sweep --list-workloads``)::

    convbench sweep --workload resnet50-3x3 --json out.json

Registers, spills and occupancy of every CUDA kernel, and the roofline
model (no GPU needed; see :mod:`convbench.cuda_report`)::

    convbench cuda-report --arch sm_80,sm_90 --check
    convbench cuda-report --model --json model.json
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main", "build_parser", "parse_kernels", "parse_shape"]


# --------------------------------------------------------------------------
# Argument types (raise ArgumentTypeError: argparse turns it into a usage
# error naming the option)
# --------------------------------------------------------------------------

def _positive_int(text, what):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what} must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{what} must be >= 1, got {value}")
    return value


def _kernel_token(token):
    """'7' -> (7, 7); '1x31' -> (1, 31)."""
    if "x" in token.lower():
        parts = token.lower().split("x")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise argparse.ArgumentTypeError(
                f"kernel size {token!r} must be K or KHxKW, e.g. 7 or 1x31")
        return (_positive_int(parts[0], "kernel height"),
                _positive_int(parts[1], "kernel width"))
    k = _positive_int(token, "kernel size")
    return (k, k)


def parse_kernels(text):
    """Kernel sizes from ``START:STOP[:STEP]`` (STOP included) or a comma
    list of sizes ``K`` / ``KHxKW``.

    >>> parse_kernels("3:7:2")
    [(3, 3), (5, 5), (7, 7)]
    >>> parse_kernels("3,1x7")
    [(3, 3), (1, 7)]
    """
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("kernel sizes must not be empty")
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise argparse.ArgumentTypeError(
                f"kernel range {text!r} must be START:STOP or START:STOP:STEP, "
                f"e.g. 3:31:2")
        start = _positive_int(parts[0], "kernel range start")
        stop = _positive_int(parts[1], "kernel range stop")
        step = _positive_int(parts[2], "kernel range step") if len(parts) == 3 else 1
        if stop < start:
            raise argparse.ArgumentTypeError(
                f"kernel range {text!r}: stop ({stop}) is smaller than start "
                f"({start})")
        return [(k, k) for k in range(start, stop + 1, step)]
    return [_kernel_token(t.strip()) for t in text.split(",")]


def parse_shape(text):
    """``N,C,H,W,K`` -> tuple of five positive ints."""
    parts = text.split(",")
    if len(parts) != 5:
        raise argparse.ArgumentTypeError(
            f"shape {text!r} must be N,C,H,W,K (batch, input channels, height, "
            f"width, output channels), e.g. 1,1,256,256,1")
    names = ("N", "C", "H", "W", "K")
    return tuple(_positive_int(p.strip(), f"shape {n}") for p, n in zip(parts, names))


def parse_padding(text):
    if text in ("same", "valid"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"padding must be 'same', 'valid' or an integer >= 0, got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"padding must be >= 0, got {value}")
    return value


def _positive_seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"time limit must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(
            f"time limit must be > 0 seconds, got {text!r}")
    return value


def _arch_list(text):
    from .cuda_report import parse_archs
    try:
        return parse_archs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _dtype_list(text):
    from .cuda_report import parse_dtypes
    try:
        return parse_dtypes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _name_list(text):
    return [t.strip() for t in text.split(",") if t.strip()]


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        prog="convbench",
        description="Benchmark and verify convolution algorithms (kernels) "
                    "against SciPy and PyTorch.")
    sub = parser.add_subparsers(
        dest="command", required=True,
        metavar="{report,sweep,check,network,machine,calibrate,cuda-report,"
                "dask}")
    _add_report_parser(sub)

    sw = sub.add_parser(
        "sweep", help="time every algorithm and peer over kernel sizes or "
                      "network layers",
        description="Median time, GFLOP/s and error (in units of the "
                    "documented forward error bound) of every algorithm "
                    "and peer, interleaved, with the crossovers.")
    what = sw.add_mutually_exclusive_group(required=True)
    what.add_argument("--shape", type=parse_shape, metavar="N,C,H,W,K",
                      help="input batch, channels, height, width and output "
                           "channels of a kernel-size sweep")
    what.add_argument("--network", metavar="NAME",
                      help="sweep the distinct conv layers of a network "
                           "(lenet5, vgg16, resnet18, resnet50)")
    what.add_argument("--workload", metavar="NAME",
                      help="a named workload (--list-workloads)")
    what.add_argument("--list-workloads", action="store_true",
                      help="list the named workloads and networks, and exit")
    _add_problem_sources(what)
    sw.add_argument("--kernels", type=parse_kernels, default=None,
                    metavar="START:STOP[:STEP]|K,K,...",
                    help="kernel sizes for --shape (STOP included; "
                         "KHxKW for rectangles); default 3:31:2")
    sw.add_argument("--batch", type=lambda t: _positive_int(t, "batch"),
                    default=1, help="batch size for --network (default 1)")
    sw.add_argument("--algorithms", type=_name_list, default=None,
                    metavar="A,B,...",
                    help="algorithms to run (default: every built one; "
                         "'auto' allowed)")
    sw.add_argument("--peers", type=_name_list, default=None, metavar="P,Q,...",
                    help="peers: scipy-direct, scipy-fft, scipy-oa, torch, "
                         "or 'none' (default: scipy-direct, scipy-fft and "
                         "torch on conv2d sweeps, all four on problems; "
                         "torch only if importable)")
    sw.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    sw.add_argument("--backend", choices=("cpu", "cuda"), default="cpu",
                    help="kernels' backend of the algorithms (default cpu; "
                         "the default --algorithms are those built for it)")
    sw.add_argument("--padding", type=parse_padding, default="same",
                    help="'same' (default), 'valid' or an int, for --shape")
    sw.add_argument("--stride", type=lambda t: _positive_int(t, "stride"),
                    default=None, help="stride for --shape (default 1; "
                                       "pooling: the window)")
    sw.add_argument("--groups", type=lambda t: _positive_int(t, "groups"),
                    default=1, help="groups for --shape (default 1)")
    _add_op_options(sw)
    sw.add_argument("--repeats", type=lambda t: _positive_int(t, "repeats"),
                    default=5, help="timed calls per contender (default 5)")
    sw.add_argument("--no-check", action="store_true",
                    help="skip the accuracy check against the float64 reference")
    sw.add_argument("--check-batch", type=int, default=1, metavar="B",
                    help="images of the batch to check (default 1; 0: all)")
    sw.add_argument("--check-macs", type=float, default=1.5e8,
                    help="multiply-adds the reference may spend per case; the "
                         "check is cropped to the first output rows/columns "
                         "that fit (default 1.5e8, about 2 s)")
    sw.add_argument("--peer-time-limit", type=float, default=2.0, metavar="S",
                    help="skip a SciPy peer whose estimated time per call is "
                         "above S seconds (default 2)")
    sw.add_argument("--time-limit", type=_positive_seconds, default=None,
                    metavar="S",
                    help="skip a contender whose call takes more than S "
                         "seconds (compilation excluded) when another one "
                         "of the same case ran within S (default: no limit)")
    sw.add_argument("--isolated", action="store_true",
                    help="also time every contender alone in its own worker "
                         "process (imports only what it needs), workers "
                         "alternated call by call; the table adds these "
                         "times next to the in-process ones")
    sw.add_argument("--malloc-default", action="store_true",
                    help="leave glibc malloc's thresholds alone (default: "
                         "keep freed memory, so that no contender page-faults "
                         "its temporaries afresh on every call)")
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--json", metavar="PATH",
                    help="write results, crossovers and machine info as JSON")
    sw.add_argument("--no-progress", action="store_true",
                    help="no progress bar on stderr")

    mach = sub.add_parser("machine", help="print what timings depend on (CPU, "
                                          "threads, BLAS, versions, sgemm rate)")
    mach.add_argument("--json", action="store_true", help="print it as JSON")

    cal = sub.add_parser(
        "calibrate", help="measure the crossovers used by algorithm='auto' "
                          "and save them",
        description="Quick sweeps (< 1 min once compiled) that measure the "
                    "thresholds of kernels._choose and write them to the "
                    "calibration file; each threshold is reported as pinned, "
                    "within noise or at an edge of its probe (see "
                    "docs/auto.md).")
    cal.add_argument("--output", metavar="PATH", default=None,
                     help="calibration file (default: $CONVBENCH_CALIBRATION "
                          "or ~/.cache/convbench/calibration.json)")
    cal.add_argument("--dry-run", action="store_true",
                     help="measure and print, do not write")
    cal.add_argument("--no-progress", action="store_true")

    cr = sub.add_parser(
        "cuda-report", help="registers, spills and occupancy of the CUDA "
                            "kernels; the roofline model (no GPU needed)",
        description="Compile every kernel of kernels/cuda (the REPORT list "
                    "of each module) for each architecture and print its "
                    "registers, spills, shared memory and occupancy; with "
                    "--model, the roofline model of each algorithm on "
                    "ResNet-50, VGG-16 and single-channel workloads.")
    cr.add_argument("--arch", type=_arch_list, default=("sm_80", "sm_90"),
                    metavar="sm_80,sm_90",
                    help="architectures (sm_80, sm_86, sm_89, sm_90); "
                         "default sm_80,sm_90")
    cr.add_argument("--dtype", type=_dtype_list, default=("float32",),
                    metavar="float32[,float64]", help="default float32")
    cr.add_argument("--model", action="store_true",
                    help="print the roofline model (skips the compilation "
                         "unless --check is given)")
    cr.add_argument("--check", action="store_true",
                    help="exit 1 if a kernel spills, fails to build or has "
                         "occupancy < 25 %%")
    cr.add_argument("--json", metavar="FILE",
                    help="write every row (kernels, model) as JSON")
    cr.add_argument("--modules", type=lambda t: tuple(m for m in t.split(",") if m),
                    default=None, metavar="direct,_gemm",
                    help="only these modules of kernels/cuda (default: all)")
    cr.add_argument("--jobs", type=lambda t: _positive_int(t, "jobs"),
                    default=None, metavar="N",
                    help="processes compiling at once (default: usable CPUs, "
                         "at most 8)")
    _add_network_parser(sub)
    _add_dask_parser(sub)
    _add_check_parser(sub)
    return parser


def _add_problem_sources(group):
    """--problems and --torch-model (a sweep's or a check's problems)."""
    group.add_argument("--problems", metavar="FILE",
                       help="a problem file: one problem per line, e.g. "
                            "'conv2d n4 c64 h56 w56 k64 r3 s1 p1' (format: "
                            "convbench.problems; the named workloads ship "
                            "in it, convbench/problem_files/)")
    group.add_argument("--torch-model", metavar="MODULE:CALLABLE",
                       help="the conv and pooling layers of a PyTorch model "
                            "(e.g. torchvision.models:resnet18), found by "
                            "one forward pass on zeros of --input-shape")


def _op_list(text):
    from .problems import OPS
    names = _name_list(text)
    if names == ["all"]:
        return "all"
    for name in names:
        if name not in OPS:
            raise argparse.ArgumentTypeError(
                f"unknown op {name!r}; choose from {', '.join(OPS)} or 'all'")
    if not names:
        raise argparse.ArgumentTypeError("give at least one op")
    return names


def _direction_list(text):
    from .problems import DIRECTIONS
    names = _name_list(text)
    for name in names:
        if name not in DIRECTIONS:
            raise argparse.ArgumentTypeError(
                f"unknown direction {name!r}; choose from "
                f"{', '.join(DIRECTIONS)}")
    if not names:
        raise argparse.ArgumentTypeError("give at least one direction")
    return names


def _input_shape(text):
    parts = text.split(",")
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(
            f"input shape {text!r} must be N,C,H,W (or N,C,L), e.g. "
            f"1,3,224,224")
    return tuple(_positive_int(p.strip(), "input shape") for p in parts)


def _add_op_options(parser):
    parser.add_argument(
        "--op", type=_op_list, default=None, metavar="OP[,OP...]|all",
        help="ops to run: conv1d, conv2d, conv_transpose1d, conv_transpose2d, "
             "conv2d_backward_data, conv2d_backward_weights, max_pool2d, "
             "avg_pool2d, global_avg_pool2d, max_pool2d_backward, "
             "avg_pool2d_backward, or all (default: conv2d with --shape, "
             "every op of the layers otherwise); a backward op of a "
             "workload is derived from its forward layers")
    parser.add_argument(
        "--direction", type=_direction_list, default=["fwd"],
        metavar="fwd,bwd_data,bwd_weights",
        help="run each forward layer in these directions (a training "
             "step: all three; pooling has bwd_data only); default fwd")
    parser.add_argument("--input-shape", type=_input_shape, default=None,
                        metavar="N,C,H,W",
                        help="input of --torch-model's forward pass")


def _add_check_parser(sub):
    ck = sub.add_parser(
        "check", help="correctness only: every algorithm on every problem "
                      "against the float64 reference, a status each",
        description="Run every algorithm (and auto) of kernels once on each "
                    "problem and compare with reference/ in units of the "
                    "algorithm's documented error bound: passed, failed "
                    "(with the excess), unsupported (with the reason), "
                    "unchecked (reference over budget) or error; exit 1 on "
                    "any failure or error (oneDNN benchdnn's correctness "
                    "mode).")
    ck.add_argument("workload", nargs="?", metavar="WORKLOAD",
                    help="a named workload or network (see `convbench "
                         "sweep --list-workloads`)")
    src = ck.add_mutually_exclusive_group()
    src.add_argument("--shape", type=parse_shape, metavar="N,C,H,W,K",
                     help="one input; its kernel sizes from --kernels")
    _add_problem_sources(src)
    ck.add_argument("--kernels", type=parse_kernels, default=None,
                    metavar="START:STOP[:STEP]|K,K,...",
                    help="kernel sizes for --shape (default 3)")
    ck.add_argument("--padding", type=parse_padding, default="same",
                    help="padding for --shape (default 'same'; pooling 0)")
    ck.add_argument("--stride", type=lambda t: _positive_int(t, "stride"),
                    default=None, help="stride for --shape")
    ck.add_argument("--groups", type=lambda t: _positive_int(t, "groups"),
                    default=1, help="groups for --shape (default 1)")
    ck.add_argument("--batch", type=lambda t: _positive_int(t, "batch"),
                    default=1, help="batch size of a network (default 1)")
    _add_op_options(ck)
    ck.add_argument("--algorithms", type=_name_list, default=None,
                    metavar="A,B,...",
                    help="algorithms to check (default: every built one "
                         "and auto)")
    ck.add_argument("--backend", choices=("cpu", "cuda"), default="cpu")
    ck.add_argument("--dtype", choices=("float32", "float64"),
                    default="float32")
    ck.add_argument("--check-macs", type=float, default=2e9,
                    help="multiply-adds the reference may spend per "
                         "problem; a conv2d is cropped to the output rows "
                         "that fit, other ops to one image, else the "
                         "problem is 'unchecked' (default 2e9)")
    ck.add_argument("--seed", type=int, default=0)
    ck.add_argument("--json", metavar="PATH",
                    help="write every status as JSON")
    ck.add_argument("--no-progress", action="store_true")


def _add_network_parser(sub):
    from . import workloads
    from ._worker import BETWEEN
    from .network import CONTROL_SETTINGS, SETTINGS
    net = sub.add_parser(
        "network", help="a whole network's conv layers in sequence: kernels "
                        "against torch, in one process and in separate ones",
        description="Time every convolution of a network, in forward order, "
                    "through kernels.conv2d (algorithm=auto by default) and "
                    "torch.nn.functional.conv2d, alternating the two round "
                    "by round: each in its own worker process, and both in "
                    "one process with either import order; then every "
                    "algorithm on each call inside the sequence, summed at "
                    "each call's fastest, and torch beside them, summed by "
                    "kind of layer (see convbench.network).")
    net.add_argument("network", choices=sorted(workloads.NETWORKS),
                     metavar="NETWORK",
                     help=f"one of {', '.join(sorted(workloads.NETWORKS))}")
    net.add_argument("--batch", type=lambda t: _positive_int(t, "batch"),
                     default=1)
    net.add_argument("--rounds", type=lambda t: _positive_int(t, "rounds"),
                     default=5, help="alternating rounds (default 5)")
    net.add_argument("--algorithm", default="auto",
                     help="kernels' algorithm for the whole network "
                          "(default auto)")
    net.add_argument("--settings", type=_name_list, default=list(SETTINGS),
                     metavar="S,...",
                     help=f"any of: {', '.join(SETTINGS)} (default: "
                          f"these three), and {', '.join(CONTROL_SETTINGS)} "
                          f"(kernels-first in a second worker: the spread "
                          f"of two identical settings)")
    net.add_argument("--between", choices=BETWEEN, default="none",
                     help="work after each convolution: relu = a NumPy ReLU "
                          "on its output, the same for kernels and torch "
                          "(a network's threads may fall asleep during it); "
                          "default none")
    net.add_argument("--malloc-default", action="store_true",
                     help="leave glibc malloc's thresholds alone in the "
                          "workers (default: keep freed memory, as sweep "
                          "does, so that no call page-faults a large output "
                          "afresh)")
    net.add_argument("--no-per-layer", action="store_true",
                     help="skip timing every algorithm (and torch) on each "
                          "call inside the sequence")
    net.add_argument("--dtype", choices=("float32", "float64"),
                     default="float32")


def _odd_sizes(text):
    """'5,31' -> [5, 31]: square filters of odd size ('same' padding)."""
    sizes = [_positive_int(t, "kernel size") for t in text.split(",")]
    if any(k % 2 == 0 for k in sizes):
        raise argparse.ArgumentTypeError(
            f"kernel sizes must be odd (centred 'same' filters), got {text!r}")
    return sizes


def _chunk_shape(text):
    """'2048' -> 2048; '1024x16384' -> (1024, 16384)."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        return _positive_int(parts[0], "chunk")
    if len(parts) == 2:
        return (_positive_int(parts[0], "chunk rows"),
                _positive_int(parts[1], "chunk columns"))
    raise argparse.ArgumentTypeError(
        f"chunk {text!r} must be SIDE or ROWSxCOLS, e.g. 2048 or 1024x16384")


def _add_dask_parser(sub):
    dk = sub.add_parser(
        "dask", help="kernels.dask on a LocalCluster: megapixels per second "
                     "of filters over an image larger than memory",
        description="Time single-channel filters (algorithm=auto, 'same' "
                    "padding) over a SIZE^2 float32 image generated chunk by "
                    "chunk on a distributed.LocalCluster of 1 and of WORKERS "
                    "one-thread worker processes, against the in-memory "
                    "kernel on a REFERENCE^2 image; scaling efficiency and "
                    "each worker's peak memory (see convbench.dask_bench). "
                    "Needs the 'dask' extra.")
    dk.add_argument("--kernels", type=_odd_sizes, default=[5, 31],
                    metavar="K,K,...", help="filter sizes (default 5,31)")
    dk.add_argument("--size", type=lambda t: _positive_int(t, "size"),
                    default=16384, help="image side (default 16384)")
    dk.add_argument("--chunk", type=_chunk_shape, default=2048,
                    metavar="SIDE|ROWSxCOLS",
                    help="chunk side, or rows x columns (default 2048)")
    dk.add_argument("--workers", type=lambda t: _positive_int(t, "workers"),
                    default=2, help="worker processes (default 2)")
    dk.add_argument("--reference", type=lambda t: _positive_int(t, "reference"),
                    default=4096, help="in-memory image side (default 4096)")
    dk.add_argument("--rounds", type=lambda t: _positive_int(t, "rounds"),
                    default=3, help="timed runs per setting (default 3)")
    dk.add_argument("--worker-saturation", type=float, default=None,
                    metavar="F",
                    help="the scheduler's worker-saturation: root tasks "
                         "(chunk generations) per worker thread ahead of "
                         "need (default: Dask's, 1.1)")
    dk.add_argument("--source", choices=("stored", "computed"),
                    default="stored",
                    help="stored: the image is read chunk by chunk from an "
                         "array-like (dask.array.from_array), as from a file "
                         "or Zarr store, and halos straight from it; "
                         "computed: each chunk is a task's result "
                         "(map_blocks), halos are cut from the neighbours "
                         "(default stored)")
    dk.add_argument("--split-seams", action="store_true",
                    help="kernels.dask.conv2d(..., split_seams=True): the "
                         "outputs that read across a chunk boundary become "
                         "thin chunks of their own, so no block waits for "
                         "its neighbour's chunk (less memory for a computed "
                         "image)")
    dk.add_argument("--json", metavar="PATH", help="also write the results")


def _add_report_parser(sub):
    rep = sub.add_parser(
        "report", help="sweeps -> report.md, self-contained report.html and "
                       "PNG figures",
        description="Run the sweeps a report needs (or read saved ones) and "
                    "write DIR/report.md, a self-contained DIR/report.html, "
                    "the figures as PNG and the sweeps as JSON.  Without "
                    "WORKLOAD: a single-channel kernel sweep, ResNet-50's "
                    "3x3 layers and jet images (--quick: fewer repeats, "
                    "under 3 minutes on 2 cores).")
    rep.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                     help="named workloads to sweep at full size (see "
                          "`convbench sweep --list-workloads`)")
    rep.add_argument("--quick", action="store_true",
                     help="5 repeats, cheaper checks (without WORKLOAD: the "
                          "quick set, under 3 minutes on 2 cores)")
    rep.add_argument("--out", default="report", metavar="DIR",
                     help="output directory (default ./report; created; "
                          "checked for writing before anything is measured)")
    rep.add_argument("--shape", type=parse_shape, metavar="N,C,H,W,K",
                     help="add a kernel-size sweep of this input (padding "
                          "k//2, stride 1)")
    rep.add_argument("--kernels", type=parse_kernels, default=None,
                     metavar="START:STOP[:STEP]|K,K,...",
                     help="kernel sizes of --shape (default 3:31:4)")
    rep.add_argument("--backend", choices=("cpu", "cuda"), default="cpu",
                     help="kernels' backend of the algorithms (default cpu)")
    rep.add_argument("--dtype", choices=("float32", "float64"),
                     default="float32")
    rep.add_argument("--repeats", type=lambda t: _positive_int(t, "repeats"),
                     default=None,
                     help="timed calls per contender (default 5 with --quick, "
                          "else 9)")
    rep.add_argument("--from-json", nargs="+", action="extend", default=[],
                     metavar="SWEEP.json",
                     help="redraw saved sweeps (`convbench sweep --json`, or "
                          "the sweep-*.json a report wrote) instead of "
                          "measuring")
    rep.add_argument("--from-asv", metavar="DIR",
                     help="add asv results along commits (asv's results "
                          "directory, e.g. .asv/results); alone: only that")
    rep.add_argument("--asv-bench", metavar="REGEX", default=None,
                     help="time_ benchmarks of --from-asv to plot (regex on "
                          "the name; default: the first 4 matching "
                          "'time_conv2d$'); every track_crossover* is plotted")
    rep.add_argument("--problems", metavar="FILE",
                     help="add a sweep of the problems of FILE (every op; "
                          "format: convbench.problems)")
    _add_op_options(rep)
    rep.add_argument("--isolated", action="store_true",
                     help="also time every contender alone in its own "
                          "worker process (the tables add those times)")
    rep.add_argument("--no-progress", action="store_true",
                     help="no progress bar on stderr (the step lines stay)")
    return rep


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

def cmd_report(args, parser):
    from .report import run
    return run(args, parser)


def _contenders(args, parser, problems=False):
    """(algorithms, peers) of --algorithms and --peers; ``problems``:
    the cases are Problems (every op: the peers of convbench.ops)."""
    import kernels
    from .ops import PEERS as known_peers
    from .ops import POOL_CONTENDER
    # oaconvolve joins the default peers where the problems may be long
    # 1-D signals; a conv2d sweep keeps its three.
    default_peers = (list(known_peers) if problems
                     else ["scipy-direct", "scipy-fft", "torch"])
    built = kernels.built_algorithms(args.backend)
    if args.algorithms is None:
        algorithms = list(built)
    else:
        algorithms = args.algorithms
        known = set(kernels.ALGORITHMS) | {"auto"}
        if problems:
            known.add(POOL_CONTENDER)
        for a in algorithms:
            if a not in known:
                parser.error(f"argument --algorithms: unknown algorithm {a!r}; "
                             f"choose from {', '.join(sorted(known))}")
        missing = [a for a in algorithms
                   if a not in ("auto", POOL_CONTENDER) and a not in built]
        if missing:
            parser.error(f"argument --algorithms: not built yet: "
                         f"{', '.join(missing)} (built: {', '.join(built)})")
    if args.peers is None:
        peers = [p for p in default_peers if p != "torch"]
        try:
            import torch  # noqa: F401
            peers.append("torch")
        except ImportError:
            pass
    elif args.peers == ["none"]:
        peers = []
    else:
        peers = args.peers
        for p in peers:
            if p not in known_peers:
                parser.error(f"argument --peers: unknown peer {p!r}; choose "
                             f"from {', '.join(known_peers)} or 'none'")
    if not algorithms and not peers:
        parser.error("nothing to run: no algorithms and no peers")
    return algorithms, peers


def _shape_cases(args, parser):
    """The conv2d kernel-size sweep of --shape (ConvCases)."""
    from . import workloads
    n, c, h, w, k = args.shape
    stride = args.stride or 1
    if c % args.groups or k % args.groups:
        parser.error(f"argument --groups: {args.groups} must divide C ({c}) "
                     f"and K ({k})")
    if args.padding == "same" and stride != 1:
        parser.error("argument --padding: 'same' needs --stride 1; give an "
                     "integer padding for strided sweeps")
    kernels = args.kernels or [(k_, k_) for k_ in range(3, 32, 2)]
    cases = []
    for kh, kw in kernels:
        label = f"k={kh}" if kh == kw else f"k={kh}x{kw}"
        cases.append(workloads.ConvCase(label, (n, c, h, w),
                                        (k, c // args.groups, kh, kw),
                                        stride, args.padding, args.groups))
    return cases


def _shape_problems(args, parser, op_names, default_kernels):
    """Problems of every op in ``op_names`` on --shape, one per kernel
    (window) size; 1-D ops need H = 1 and take the kernel's width."""
    from .problems import (CONV_OPS, ONE_D_OPS, ProblemError,
                           TRANSPOSED_OPS, problem)
    n, c, h, w, k = args.shape
    kernels = args.kernels or default_kernels
    out = []
    for op in op_names:
        for kh, kw in kernels:
            fields = dict(n=n, c=c, w=w)
            if op in ONE_D_OPS:
                if h != 1:
                    parser.error(f"argument --shape: {op} is 1-D: give H = 1 "
                                 f"(N,C,1,L,K)")
                kernel = kw
            else:
                fields["h"] = h
                kernel = (kh, kw)
            if op in CONV_OPS:
                fields.update(k=k, groups=args.groups)
            padding = args.padding
            if isinstance(padding, str) and (op not in CONV_OPS
                                             or op in TRANSPOSED_OPS):
                padding = 0            # 'same' / 'valid' are conv rules
            if op != "global_avg_pool2d":
                fields.update(kernel=kernel, stride=args.stride,
                              padding=padding)
            label = f"{op} k={kh}" if kh == kw else f"{op} k={kh}x{kw}"
            try:
                out.append(problem(op, label=label.replace(" ", "_"),
                                   **fields))
            except ProblemError as exc:
                parser.error(f"argument --shape: {op} k={kh}x{kw}: {exc}")
            if op == "global_avg_pool2d":
                break
    return out


def _source_problems(args, parser):
    """The problems of --problems, --torch-model, --network or a workload
    (every op of their layers), and lines describing what was left out."""
    from . import workloads
    from .problems import ProblemError, read_problems
    notes = []
    if getattr(args, "problems", None):
        try:
            return read_problems(args.problems), notes
        except ProblemError as exc:
            parser.error(f"argument --problems: {exc}")
        except OSError as exc:
            parser.error(f"argument --problems: cannot read {args.problems}: "
                         f"{exc.strerror or exc}")
    if getattr(args, "torch_model", None):
        from .torch_model import ModelError, collect_problems, format_layers
        if args.input_shape is None:
            parser.error("argument --torch-model: give the model's input "
                         "with --input-shape N,C,H,W")
        try:
            layers = collect_problems(args.torch_model, args.input_shape)
        except ModelError as exc:
            parser.error(f"argument --torch-model: {exc}")
        notes.append(format_layers(layers))
        if not layers.problems:
            parser.error(f"argument --torch-model: no layer of "
                         f"{args.torch_model} can run here")
        return layers.problems, notes
    # lenet5 is both: --workload means the workload (batch 64), --network
    # the network at --batch.
    if args.network is not None and args.network in workloads.NETWORKS:
        return workloads.network_problems(args.network,
                                          batch=args.batch), notes
    name = args.workload
    if name not in workloads.WORKLOADS:
        known = sorted(set(workloads.WORKLOADS) | set(workloads.NETWORKS))
        parser.error(f"unknown workload or network {name!r}; choose from "
                     f"{', '.join(known)}")
    return workloads.workload_problems(name), notes


def _selected(problems, args, parser):
    """``problems`` restricted to --op and run in every --direction."""
    from .problems import select
    try:
        return select(problems, args.op if isinstance(args.op, list) else None,
                      args.direction)
    except ValueError as exc:
        flag = "--op" if "selection" in str(exc) else "--direction"
        parser.error(f"argument {flag}: {exc}")


def _cases(args, parser):
    """The cases of a sweep: ConvCases where only conv2d forward was asked
    for (--shape, or --op conv2d on a workload or network), else
    Problems of every op; and note lines to print before the table."""
    from . import workloads
    from .problems import OPS
    if args.input_shape is not None and not args.torch_model:
        parser.error("argument --input-shape: only with --torch-model")
    conv2d_only = args.op in (None, ["conv2d"]) and args.direction == ["fwd"]
    if args.shape is not None:
        if conv2d_only:
            return _shape_cases(args, parser), []
        op_names = (["conv2d"] if args.op is None else
                    list(OPS) if args.op == "all" else args.op)
        problems = _shape_problems(args, parser, op_names,
                                   [(k_, k_) for k_ in range(3, 32, 2)])
        return _selected(problems, argparse.Namespace(
            op=None, direction=args.direction), parser)
    if args.kernels is not None:
        parser.error("argument --kernels: only with --shape")
    if args.op == ["conv2d"] and args.direction == ["fwd"] and (
            args.network in workloads.NETWORKS
            or args.workload in workloads.WORKLOADS):
        if args.network is not None:
            return workloads.conv_layers(args.network, batch=args.batch), []
        return workloads.workload(args.workload), []
    if args.network is not None and args.network not in workloads.NETWORKS:
        parser.error(f"argument --network: unknown network {args.network!r}; "
                     f"choose from {', '.join(workloads.NETWORKS)}")
    if args.workload is not None and args.workload not in workloads.WORKLOADS:
        parser.error(f"argument --workload: unknown workload "
                     f"{args.workload!r}; choose from "
                     f"{', '.join(workloads.WORKLOADS)}")
    problems, notes = _source_problems(args, parser)
    problems, more = _selected(problems, args, parser)
    return problems, notes + more


def _list_workloads():
    from . import workloads
    print("workloads (--workload NAME): conv2d layers (distinct problems "
          "swept), other layers (pooling, transposed conv: swept with "
          "--op all, the default, or --op OP), shapes, GFLOP of the conv2d "
          "layers, source")
    rows = workloads.workload_table()
    head = ("name", "convs", "swept", "other", "shapes (N C HxW k)", "GFLOP",
            "source")
    width = [max(len(head[i]), *(len(str(r[i])) for r in rows))
             for i in range(5)]
    print("  " + "  ".join(h.ljust(width[i]) if i < 5 else h
                           for i, h in enumerate(head[:5]))
          + f"  {head[5]:>9}  {head[6]}")
    for r in rows:
        print("  " + "  ".join(str(v).ljust(width[i]) if i in (0, 4)
                               else str(v).rjust(width[i])
                               for i, v in enumerate(r[:5]))
              + f"  {r[5]:>9.3f}  {r[6]}")
    print("descriptions:")
    for name, wl in workloads.WORKLOADS.items():
        print(f"  {name:<22} {wl.description}")
    print("networks (--network NAME --batch N):")
    for name in workloads.NETWORKS:
        print(f"  {name:<22} {len(workloads.conv_layers(name))} distinct conv "
              f"layers, {workloads.param_count(name):,} parameters")
    from . import problem_files
    folder = problem_files.path("lenet5").parent
    print(f"as problem files (--problems FILE; every op of each layer): "
          f"{folder}/NAME.txt for each workload, net-NAME.txt for each "
          f"network at batch 1")


def _header(cases, config):
    from .problems import Problem
    first = cases[0]
    if isinstance(first, Problem):
        ops = sorted({c.op for c in cases}, key=[c.op for c in cases].index)
        return (f"# convbench sweep: {len(cases)} problem(s) of "
                f"{', '.join(ops)}, first {first.descriptor()}, "
                f"{config.dtype}, {config.repeats} repeats (median), "
                f"contenders interleaved; algorithms: "
                f"{', '.join(config.algorithms) or '-'}; peers: "
                f"{', '.join(config.peers) or '-'}")
    return (f"# convbench sweep: {len(cases)} case(s), first x={first.x_shape} "
            f"w={first.w_shape}, {config.dtype}, stride {first.stride}, padding "
            f"{first.padding!r}, {config.repeats} repeats (median), contenders "
            f"interleaved; algorithms: {', '.join(config.algorithms) or '-'}; "
            f"peers: {', '.join(config.peers) or '-'}")


def cmd_sweep(args, parser):
    from . import sweep
    from .machine import blas_summary, machine_info
    if args.list_workloads:
        _list_workloads()
        return 0
    from .problems import Problem
    cases, notes = _cases(args, parser)
    problems = any(isinstance(c, Problem) for c in cases)
    algorithms, peers = _contenders(args, parser, problems)
    for note in notes:
        print(note)
    config = sweep.SweepConfig(
        algorithms=tuple(algorithms), peers=tuple(peers), dtype=args.dtype,
        repeats=args.repeats, check=not args.no_check,
        check_batch=args.check_batch, check_macs=args.check_macs,
        peer_time_limit=args.peer_time_limit, seed=args.seed,
        time_limit=(float("inf") if args.time_limit is None
                    else args.time_limit),
        backend=args.backend,
        progress=not args.no_progress,
        keep_freed_memory=not args.malloc_default,
        isolated=args.isolated)
    print(_header(cases, config), flush=True)
    result = sweep.run_sweep(cases, config)
    try:
        import numba
        threads = f"numba {numba.get_num_threads()} threads"
    except ImportError:  # pragma: no cover - a dependency
        threads = ""
    from .machine import malloc_state
    print(f"# {threads}; BLAS: {blas_summary()}; malloc: {malloc_state()}")
    print(sweep.format_table(result))
    crossovers = sweep.format_crossovers(result)
    if crossovers:
        print()
        print(crossovers)
    if problems:
        print()
        print(sweep.format_winners(result))
    if args.json:
        result.machine = machine_info(measure=True)
        data = result.to_dict()
        data["argv"] = list(sys.argv)
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1, default=str)
        print(f"\nwrote {args.json}")
    if result.interrupted:
        print("interrupted by Ctrl-C: the results above are partial",
              file=sys.stderr)
        return 130
    return 0


def _check_problems(args, parser):
    """The problems of ``convbench check``'s arguments (every op)."""
    from . import workloads
    from .problems import OPS
    if args.input_shape is not None and not args.torch_model:
        parser.error("argument --input-shape: only with --torch-model")
    sources = [bool(args.workload), args.shape is not None,
               bool(args.problems), bool(args.torch_model)]
    if sum(sources) != 1:
        parser.error("give one of: WORKLOAD, --shape, --problems, "
                     "--torch-model")
    if args.shape is not None:
        op_names = (["conv2d"] if args.op is None else
                    list(OPS) if args.op == "all" else args.op)
        problems = _shape_problems(args, parser, op_names, [(3, 3)])
        return _selected(problems, argparse.Namespace(
            op=None, direction=args.direction), parser)
    if args.kernels is not None:
        parser.error("argument --kernels: only with --shape")
    name = args.workload
    # A name that is both (lenet5) is the workload.
    args.network = (name if name in workloads.NETWORKS
                    and name not in workloads.WORKLOADS else None)
    problems, notes = _source_problems(args, parser)
    problems, more = _selected(problems, args, parser)
    return problems, notes + more


def cmd_check(args, parser):
    import kernels
    from .check import exit_code, format_check, run_check, write_json
    problems, notes = _check_problems(args, parser)
    built = kernels.built_algorithms(args.backend)
    algorithms = args.algorithms or list(built) + ["auto"]
    known = set(kernels.ALGORITHMS) | {"auto", "kernels"}
    for a in algorithms:
        if a not in known:
            parser.error(f"argument --algorithms: unknown algorithm {a!r}; "
                         f"choose from {', '.join(sorted(known))}")
        if a in kernels.ALGORITHMS and a not in built:
            parser.error(f"argument --algorithms: {a} is not built for "
                         f"backend {args.backend} (built: "
                         f"{', '.join(built)})")
    for note in notes:
        print(note)
    print(f"# convbench check: {len(problems)} problem(s), {args.dtype}, "
          f"backend {args.backend}, algorithms {', '.join(algorithms)}",
          flush=True)
    progress = (None if args.no_progress else
                lambda text: print(f"... {text}", file=sys.stderr, flush=True))
    results = run_check(problems, algorithms, backend=args.backend,
                        dtype=args.dtype, seed=args.seed,
                        check_macs=args.check_macs, progress=progress)
    print(format_check(results))
    if args.json:
        write_json(results, args.json)
        print(f"wrote {args.json}")
    return exit_code(results)


def cmd_machine(args, parser):
    from .machine import format_machine_info, machine_info
    info = machine_info(measure=True)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        print(format_machine_info(info))
    return 0


def cmd_calibrate(args, parser):
    from .calibrate import calibrate
    calibrate(path=args.output, write=not args.dry_run,
              progress=not args.no_progress)
    return 0


def cmd_network(args, parser):
    import kernels
    from .network import (CONTROL_SETTINGS, SETTINGS, compare_network,
                          format_comparison)
    known = [*SETTINGS, *CONTROL_SETTINGS]
    for s in args.settings:
        if s not in known:
            parser.error(f"argument --settings: unknown setting {s!r}; "
                         f"choose from {', '.join(known)}")
    if args.algorithm not in ("auto",) + tuple(kernels.ALGORITHMS):
        parser.error(f"argument --algorithm: unknown algorithm "
                     f"{args.algorithm!r}; choose from auto, "
                     f"{', '.join(kernels.ALGORITHMS)}")
    result = compare_network(
        args.network, batch=args.batch, rounds=args.rounds,
        algorithm=args.algorithm, dtype=args.dtype,
        settings=tuple(args.settings), per_layer=not args.no_per_layer,
        between=args.between, keep_freed_memory=not args.malloc_default,
        progress=lambda text: print(f"... {text}", file=sys.stderr,
                                    flush=True))
    print(format_comparison(result))
    return 0


def cmd_dask(args, parser):
    try:
        import distributed  # noqa: F401
        import psutil  # noqa: F401
    except ImportError:
        parser.error("convbench dask needs Dask: pip install -e '.[dask]'")
    from .dask_bench import run
    return run(args)


def cmd_cuda_report(args, parser):
    from .cuda_report import run
    return run(args)


def main(argv=None):
    """Entry point of the ``convbench`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command = {"report": cmd_report, "sweep": cmd_sweep,
               "network": cmd_network, "machine": cmd_machine,
               "calibrate": cmd_calibrate, "cuda-report": cmd_cuda_report,
               "dask": cmd_dask, "check": cmd_check}
    return command[args.command](args, parser)
