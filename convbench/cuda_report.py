"""``convbench cuda-report``: what each CUDA kernel costs, and what it could reach.

Two reports, neither needs a GPU.

**Compilation report** (default).  Every kernel that a module of
:mod:`kernels.cuda` lists in its module-level ``REPORT`` (a list of
:class:`kernels.cuda._runtime.ReportEntry`) is compiled the way numba
compiles it for a launch -- ``numba.cuda.compile_ptx(py_func, signature,
cc=...)`` -- and the PTX is assembled to a cubin for each architecture by
nvJitLink (``cuda.core.Linker`` with ``verbose=True``).  Its info log gives
registers per thread, spill stores and loads, stack frame and static shared
memory; with the entry's threads per block and dynamic shared memory this
gives the occupancy on each architecture::

    blocks/SM = min(registers, shared memory, threads, blocks limits)
    registers:  floor(floor(65536 / (ceil(regs * 32 / 256) * 256)) / warps per block)
    shared:     floor(smem per SM / (static + dynamic + 1 KiB reserved))
    threads:    floor(max threads per SM / (warps per block * 32))
    blocks:     32 per SM (16 on sm_86, 24 on sm_89)
    occupancy = blocks * warps per block / max warps per SM

(the CUDA occupancy calculator's rules: registers are allocated per warp
in units of 256, at most 255 per thread; 1 KiB of shared memory is
reserved per block on sm_80 and later; the shared-memory limit is the
largest carve-out, 164 KiB per SM on sm_80 and 228 KiB on sm_90).  The
factor that gives the minimum is named ("registers", "smem", "threads",
"blocks"; several when they tie).  Example: 71 registers x 256 threads
on sm_90 take ceil(71*32/256)*256 = 2304 registers per warp, 28 warps fit
in 65536, i.e. 3 blocks of 8 warps: 24 of 64 warps, 37.5 %.

On sm_90 the linker's ``smem`` figure already includes the 1 KiB reserved
per block whenever the kernel uses shared memory (measured: a kernel with
400 bytes of shared arrays reports 400 on sm_80 and 1424 on sm_90); the
table's "static smem" is the kernel's own (the reserved KiB taken off),
and the occupancy adds the reserved KiB once, on every architecture.

One PTX per kernel and dtype is compiled, for the lowest requested
architecture, and assembled for each architecture (PTX is forward
compatible; the GEMM core gives the same 71 registers on sm_90 from
compute_80 or compute_90 PTX).  This halves the time: numba's typing and
NVVM take about 1 s per kernel, assembling 0.1 s.  Nothing is cached on
disk.  Kernels compile in parallel processes (``--jobs``, default the
usable CPUs up to 8).  ``numba.cuda.compile_ptx`` does not exist in numba's CUDA
simulator, so when ``NUMBA_ENABLE_CUDASIM`` is set the compilation runs in
a subprocess without it.  A module of :mod:`kernels.cuda` that fails to
import, or a kernel that fails to compile, is a row with its error.

``--check`` exits with status 1 when any kernel spills (spill stores or
loads > 0), cannot be launched (0 blocks per SM) or reaches an occupancy
below 25 % on some architecture, and lists them.

**Roofline model** (``--model``).  :func:`model_rows` estimates, per
workload layer and algorithm, the arithmetic each CUDA algorithm executes,
the DRAM traffic at the launch configuration of
:mod:`kernels.cuda._tuning`, and the roofline time on an H100 SXM and an
H200 (:data:`DEVICES`).  Workloads (:func:`model_workloads`): ResNet-50's
3x3 convolutions at batch 32, VGG-16's convolutions at batch 32 (distinct
layers, :func:`convbench.workloads.conv_layers`), one 2048x2048 image with
one filter and kernels 3, 7, 15, 31, 63 ("same" padding), and max pooling
3x3 / 2 (padding 1) of ResNet-50's conv1 output at batch 32.

Assumptions, per algorithm (``elt`` = bytes per element):

* Every GEMM runs on the core of :mod:`kernels.cuda._gemm`, block tile
  ``BM x BN`` (``GEMM.block_m x block_n``), ``BK`` deep.  It executes
  whole tiles: executed FLOPs are ``2 ceil(M/BM)BM ceil(N/BN)BN
  ceil(K/BK)BK`` per problem (zero rows are multiplied too), which is what
  the time bound uses; "useful" FLOPs are ``2 M N K``.
* GEMM traffic: the grid walks the column tiles of one row tile before the
  next, so A's ``BM x K`` slab is re-used from L2 and A is read once; B
  (``K x N``) is re-read once per row tile, ``ceil(M/BM)`` times, unless
  it fits in half the L2 (25 MB of the 50 MB on both GPUs), then once; C
  is written once.
* direct: ``2 MACs`` FLOPs; compulsory traffic only (x, w and y once, the
  window re-use from L1/shared memory).  An upper bound on what a direct
  kernel can reach.
* im2col (implicit GEMM, the patch matrix never stored): per group
  ``M = K/G``, ``N = N Ho Wo``, ``K = C/G kH kW``; B's DRAM bytes are those
  of x (the ``kH kW`` overlap of the gathered columns hits in L1/L2), so x
  is read ``ceil(M/BM)`` times unless it fits in half the L2.
* winograd: the tile of :func:`kernels._winograd_math.tile_for` (F(4,3) for
  3x3).  Transforms as dense matrix products (``B^T d B``, ``G g G^T``,
  ``A^T m A``, no zeros skipped: an upper bound), the tuple GEMMs
  (``alpha^2 G`` problems of ``M = K/G``, ``N = tiles``, ``K = C/G``), and
  the unfused pipeline's traffic: x read, V, U and the products written
  and read back, y written.
* fft: overlap-save tiles of ``t x t`` (power of two: the larger of the
  kernels' own per-axis choice, :func:`kernels.cuda._fft_tiles.choose_tile`;
  ``fft_tile="best"`` models the fastest power of two instead), real transforms at ``2.5 n log2 n`` FLOPs
  for ``n = t^2`` (half of a complex one's ``5 n log2 n``), input, weight
  and inverse output transforms, the per-frequency contraction (``t (t/2
  + 1)`` bins, 8 real FLOPs per complex multiply-add) the way the kernel
  runs it: with few channels per group (``K/G`` and ``C'/G`` within
  :class:`kernels.cuda._tuning.FFTTuning`'s ``few_channel_max_k`` /
  ``_c``, :func:`fft_few_channel`) elementwise, no padding, X and W read
  and Y written once (the limit of its loads, about one per FMA, is not
  priced); else complex GEMMs on the GEMM core; stride by polyphase
  (``s^2`` phases as channels, phase kernel ``ceil(k/s)``); traffic: x,
  the three spectra written and read, y.
* pooling: bytes of x read and y written once; the compares are not the
  bound.

Time = max(FLOPs / peak, bytes / bandwidth); the bound is the larger term.
Peaks are the vendor's non-tensor vector rates (fp32 67 TFLOP/s on both,
fp64 34); a real kernel reaches a fraction of them.

Examples
--------
::

    convbench cuda-report                        # sm_80 and sm_90, float32
    convbench cuda-report --arch sm_90 --dtype float32,float64 --check
    convbench cuda-report --model --json model.json
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pkgutil
import re
import subprocess
import sys
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["ARCHS", "ArchLimits", "DEVICES", "Device", "parse_info_log",
           "occupancy", "discover_entries", "compile_report",
           "format_compile_table", "check_failures", "model_workloads",
           "model_conv", "model_pool", "model_rows", "format_model_table",
           "parse_archs", "parse_dtypes", "run"]

INSTALL_HINT = "pip install 'convbench[cuda]'"


# --------------------------------------------------------------------------
# Architectures: the per-SM limits occupancy depends on
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ArchLimits:
    """Per-SM resources of a compute capability (CUDA programming guide,
    "Technical Specifications per Compute Capability")."""

    name: str
    cc: tuple
    smem_per_sm: int            # largest shared-memory carve-out, bytes
    max_threads: int = 2048
    max_blocks: int = 32
    regs_per_sm: int = 65536
    max_regs_per_thread: int = 255
    reg_unit: int = 256         # registers are allocated per warp in these
    reserved_smem: int = 1024   # per block, by the driver
    smem_reported_with_reserved: bool = False   # linker's smem includes it

    @property
    def max_warps(self):
        return self.max_threads // 32


KIB = 1024
ARCHS = {
    "sm_80": ArchLimits("sm_80", (8, 0), 164 * KIB),
    "sm_86": ArchLimits("sm_86", (8, 6), 100 * KIB, max_threads=1536,
                        max_blocks=16),
    "sm_89": ArchLimits("sm_89", (8, 9), 100 * KIB, max_threads=1536,
                        max_blocks=24),
    "sm_90": ArchLimits("sm_90", (9, 0), 228 * KIB,
                        smem_reported_with_reserved=True),
}
DEFAULT_ARCHS = ("sm_80", "sm_90")
DTYPES = ("float32", "float64")


def parse_archs(text):
    """``"sm_80,sm_90"`` -> tuple of names; ValueError names the known ones."""
    names = [t.strip().lower() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ValueError("no architecture given; choose from "
                         + ", ".join(ARCHS))
    for n in names:
        if n not in ARCHS:
            raise ValueError(f"unknown architecture {n!r}; choose from "
                             f"{', '.join(ARCHS)} (comma-separated, e.g. "
                             f"sm_80,sm_90)")
    return tuple(dict.fromkeys(names))


def parse_dtypes(text):
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ValueError("no dtype given; choose from float32, float64")
    for n in names:
        if n not in DTYPES:
            raise ValueError(f"unknown dtype {n!r}; choose from "
                             f"{', '.join(DTYPES)}")
    return tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------
# The linker's info log
# --------------------------------------------------------------------------

_RE_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_RE_PTXAS_USED = re.compile(r"ptxas info\s*:\s*Used (\d+) registers"
                            r"(?:, used (\d+) barriers)?")
_RE_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                       r"(\d+) bytes spill loads")
_RE_LINK_USED = re.compile(
    r"^info\s*:\s*used (\d+) registers, used (\d+) barriers, (\d+) stack, "
    r"(\d+) bytes smem, .*?(\d+) bytes lmem", re.M)
_RE_PTXAS_SMEM = re.compile(r"ptxas info\s*:\s*Used \d+ registers.*?"
                            r"(\d+) bytes smem")


def parse_info_log(log):
    """Resource usage of the (one) entry function in a linker info log.

    Returns a dict: ``function`` (mangled name or None), ``registers``,
    ``barriers``, ``stack`` (bytes stack frame), ``spill_stores``,
    ``spill_loads``, ``smem`` (static shared bytes as reported: on sm_90
    with the reserved KiB), ``lmem``.  Values the log lacks are None.
    ptxas's lines ("ptxas info : Used 71 registers, used 1 barriers",
    "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads") come
    first; nvJitLink's summary ("info : used 71 registers, used 1 barriers,
    0 stack, 9216 bytes smem, ..., 0 bytes lmem") is the final word on
    registers and gives the shared memory, which numba's PTX leaves to the
    link.
    """
    log = log.replace("\x00", "")
    out = dict(function=None, registers=None, barriers=None, stack=None,
               spill_stores=None, spill_loads=None, smem=None, lmem=None)
    m = _RE_ENTRY.search(log)
    if m:
        out["function"] = m.group(1)
    m = _RE_PTXAS_USED.search(log)
    if m:
        out["registers"] = int(m.group(1))
        if m.group(2) is not None:
            out["barriers"] = int(m.group(2))
    m = _RE_PTXAS_SMEM.search(log)
    if m:
        out["smem"] = int(m.group(1))
    m = _RE_FRAME.search(log)
    if m:
        out["stack"], out["spill_stores"], out["spill_loads"] = map(int, m.groups())
    m = _RE_LINK_USED.search(log)
    if m:
        regs, _barriers, stack, smem, lmem = map(int, m.groups())
        out["registers"] = regs
        out["smem"] = smem
        out["lmem"] = lmem
        if out["stack"] is None:
            out["stack"] = stack
    return out


# --------------------------------------------------------------------------
# Occupancy
# --------------------------------------------------------------------------

def occupancy(arch, registers, threads, smem_per_block=0):
    """Active blocks and warps per SM of a kernel on ``arch``.

    Parameters
    ----------
    arch : str or ArchLimits
    registers : int
        Registers per thread (ptxas).
    threads : int
        Threads per block.
    smem_per_block : int
        The kernel's static plus dynamic shared memory, bytes, *without*
        the KiB the driver reserves per block (added here).

    Returns
    -------
    dict
        ``blocks``, ``warps``, ``max_warps``, ``occupancy`` (fraction),
        ``limiter`` (the factor(s) giving the minimum, "+"-joined), and
        ``limits``: blocks per SM allowed by each factor.
    """
    a = ARCHS[arch] if isinstance(arch, str) else arch
    warps_per_block = -(-int(threads) // 32)
    regs = max(1, int(registers))
    if regs > a.max_regs_per_thread:
        limit_regs = 0
    else:
        regs_per_warp = -(-regs * 32 // a.reg_unit) * a.reg_unit
        limit_regs = (a.regs_per_sm // regs_per_warp) // warps_per_block
    smem = int(smem_per_block) + a.reserved_smem
    limit_smem = a.smem_per_sm // smem
    limit_threads = a.max_threads // (warps_per_block * 32)
    limits = {"registers": limit_regs, "smem": limit_smem,
              "threads": limit_threads, "blocks": a.max_blocks}
    blocks = min(limits.values())
    limiter = "+".join(k for k, v in limits.items() if v == blocks)
    warps = blocks * warps_per_block
    return {"blocks": blocks, "warps": warps, "max_warps": a.max_warps,
            "occupancy": warps / a.max_warps, "limiter": limiter,
            "limits": limits}


# --------------------------------------------------------------------------
# Discovery and compilation
# --------------------------------------------------------------------------

def _require_numba_cuda():
    import importlib.util
    if importlib.util.find_spec("numba_cuda") is None:
        raise RuntimeError(
            "convbench cuda-report compiles the CUDA kernels and needs "
            f"numba-cuda, which is not installed; install it with "
            f"{INSTALL_HINT}")


def _simulator_on():
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def discover_entries(package="kernels.cuda", modules=None):
    """``[(module, entry_or_None, error_or_None)]`` over the ``*.py``
    modules of ``package`` (:mod:`kernels.cuda`) that define ``REPORT``
    (imported in name order; only those named in ``modules`` when given);
    a module that fails to import gives one row with the error."""
    prefix = package
    package = importlib.import_module(package)
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__),
                       key=lambda i: i.name):
        if info.ispkg or (modules and info.name not in modules):
            continue
        name = f"{prefix}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # reported, not raised
            found.append((info.name, None,
                          f"import failed: {type(exc).__name__}: {exc}"))
            continue
        for entry in getattr(module, "REPORT", None) or ():
            found.append((info.name, entry, None))
    return found


def _ptx(entry, dtype, cc):
    from numba import cuda
    dispatcher = entry.kernel(np.dtype(dtype))
    func = getattr(dispatcher, "py_func", dispatcher)
    ptx, _ = cuda.compile_ptx(func, tuple(entry.signature(np.dtype(dtype))),
                              cc=cc)
    return ptx


def _link_log(ptx, arch):
    from cuda.core import Linker, LinkerOptions, ObjectCode
    linker = Linker(ObjectCode.from_ptx(ptx.encode()),
                    options=LinkerOptions(arch=arch, verbose=True))
    linker.link("cubin")
    return linker.get_info_log()


def _row(module, entry, dtype, arch, info=None, error=None):
    row = {"module": module,
           "kernel": entry.name if entry is not None else "-",
           "dtype": dtype, "arch": arch,
           "threads": entry.threads if entry is not None else None,
           "note": entry.note if entry is not None else ""}
    if error is not None:
        row["error"] = error
        return row
    a = ARCHS[arch]
    smem = info["smem"] or 0
    if a.smem_reported_with_reserved and smem >= a.reserved_smem:
        smem -= a.reserved_smem
    dynamic = 0
    if entry.dynamic_shared is not None:
        dynamic = int(entry.dynamic_shared(np.dtype(dtype)) or 0)
    occ = occupancy(a, info["registers"] or 0, entry.threads, smem + dynamic)
    row.update(registers=info["registers"], spill_stores=info["spill_stores"],
               spill_loads=info["spill_loads"], stack=info["stack"],
               smem_static=smem, smem_reported=info["smem"],
               smem_dynamic=dynamic, lmem=info["lmem"], **occ)
    return row


def _compile_entry(module, entry, dtype, archs):
    """Rows of one kernel in one dtype, one per architecture."""
    lowest = min(ARCHS[a].cc for a in archs)
    try:
        ptx = _ptx(entry, dtype, lowest)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        return [_row(module, entry, dtype, arch, error=(
            f"compile_ptx failed: {type(exc).__name__}: {first}"))
            for arch in archs]
    rows = []
    for arch in archs:
        try:
            info = parse_info_log(_link_log(ptx, arch))
        except Exception as exc:
            rows.append(_row(module, entry, dtype, arch, error=(
                f"link failed: {type(exc).__name__}: {exc}")))
            continue
        rows.append(_row(module, entry, dtype, arch, info))
    return rows


_WORKER_ENTRIES = None


def _pool_task(index, dtype, archs, modules=None):
    global _WORKER_ENTRIES
    if _WORKER_ENTRIES is None:
        _WORKER_ENTRIES = discover_entries(modules=modules)
    module, entry, _ = _WORKER_ENTRIES[index]
    return _compile_entry(module, entry, dtype, archs)


def default_jobs():
    """Processes compiling at once: the CPUs this process may use, <= 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _compile_here(archs, dtypes, jobs=1, modules=None):
    entries = discover_entries(modules=modules)
    tasks = [(i, d) for i, (_, e, _) in enumerate(entries) if e is not None
             for d in dtypes]
    results = {}
    if jobs > 1 and len(tasks) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        try:
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(min(jobs, len(tasks)), mp_context=ctx) as ex:
                futures = {t: ex.submit(_pool_task, t[0], t[1], archs, modules)
                           for t in tasks}
                results = {t: f.result() for t, f in futures.items()}
        except Exception:   # no fork, a broken pool: compile here instead
            results = {}
    rows = []
    for i, (module, entry, error) in enumerate(entries):
        if entry is None:
            rows.append(_row(module, None, "-", "-", error=error))
            continue
        for dtype in dtypes:
            got = results.get((i, dtype))
            rows += got if got is not None else _compile_entry(
                module, entry, dtype, archs)
    return rows


def compile_report(archs=DEFAULT_ARCHS, dtypes=("float32",), jobs=None,
                   modules=None):
    """Rows (dicts) of the compilation report; see the module docstring.

    Raises RuntimeError naming ``pip install 'convbench[cuda]'`` when
    numba-cuda is missing.  Under ``NUMBA_ENABLE_CUDASIM`` the work runs
    in a subprocess without that variable.  ``jobs`` processes compile at
    once (default :func:`default_jobs`); ``modules`` restricts the report
    to those modules of :mod:`kernels.cuda` (names without the package).
    """
    jobs = default_jobs() if jobs is None else max(1, int(jobs))
    archs = parse_archs(",".join(archs))
    dtypes = parse_dtypes(",".join(dtypes))
    _require_numba_cuda()
    modules = tuple(modules) if modules else None
    if not _simulator_on():
        return _compile_here(archs, dtypes, jobs, modules)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run(
        [sys.executable, "-m", "convbench.cuda_report", "--worker",
         ",".join(archs), ",".join(dtypes), str(jobs),
         ",".join(modules or ())],
        env=env, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the compilation subprocess failed (exit "
                           f"{proc.returncode}):\n{proc.stderr[-4000:]}")
    marker = "CUDA_REPORT_JSON "
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(marker):
            return json.loads(line[len(marker):])
    raise RuntimeError("the compilation subprocess printed no result:\n"
                       + proc.stdout[-2000:] + proc.stderr[-2000:])


def check_failures(rows, min_occupancy=0.25):
    """``[(row, reason)]`` for rows that spill, cannot launch, fall below
    ``min_occupancy`` or failed to build."""
    bad = []
    for r in rows:
        if "error" in r:
            bad.append((r, r["error"]))
            continue
        why = []
        if (r["spill_stores"] or 0) > 0 or (r["spill_loads"] or 0) > 0:
            why.append(f"spills {r['spill_stores']} B stores / "
                       f"{r['spill_loads']} B loads")
        if r["blocks"] == 0:
            why.append(f"cannot launch ({r['limiter']} limit)")
        elif r["occupancy"] < min_occupancy:
            why.append(f"occupancy {100 * r['occupancy']:.1f} % < "
                       f"{100 * min_occupancy:.0f} % ({r['limiter']})")
        if why:
            bad.append((r, "; ".join(why)))
    return bad


def _table(header, rows, align=None):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows
              else len(str(h)) for i, h in enumerate(header)]
    align = align or ["<"] * len(header)
    fmt = "  ".join(f"{{:{a}{w}}}" for a, w in zip(align, widths))
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*(str(c) for c in r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def format_compile_table(rows):
    """The compilation report as a text table (errors listed below it)."""
    header = ("module", "kernel", "dtype", "arch", "regs", "spill st/ld B",
              "stack B", "smem static", "smem dyn", "threads", "blocks/SM",
              "warps/SM", "occupancy", "limited by")
    body, errors = [], []
    for r in rows:
        if "error" in r:
            errors.append(f"  {r['module']}.{r['kernel']} {r['dtype']} "
                          f"{r['arch']}: {r['error']}")
            continue
        body.append((r["module"], r["kernel"], r["dtype"], r["arch"],
                     r["registers"], f"{r['spill_stores']}/{r['spill_loads']}",
                     r["stack"], r["smem_static"], r["smem_dynamic"],
                     r["threads"], r["blocks"],
                     f"{r['warps']}/{r['max_warps']}",
                     f"{100 * r['occupancy']:.1f} %", r["limiter"]))
    align = ["<"] * 4 + [">"] * 9 + ["<"]
    text = _table(header, body, align)
    if errors:
        text += "\n\nnot compiled:\n" + "\n".join(errors)
    return text


# --------------------------------------------------------------------------
# Roofline model
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Device:
    """A GPU's roofline: vector (non-tensor) peaks, HBM bandwidth, L2."""

    name: str
    peak_fp32: float    # FLOP/s
    peak_fp64: float
    bandwidth: float    # bytes/s
    l2_bytes: int

    def peak(self, dtype):
        return self.peak_fp64 if np.dtype(dtype) == np.float64 else self.peak_fp32


DEVICES = (
    Device("H100", 67e12, 34e12, 3.35e12, 50 * 2**20),
    Device("H200", 67e12, 34e12, 4.8e12, 50 * 2**20),
)
L2_SHARE = 0.5      # of the L2 an operand may use to be re-read from it


def model_workloads(batch=32):
    """``[(workload name, [ConvCase or PoolCase])]`` of the model."""
    from . import workloads as wl
    resnet = [c for c in wl.conv_layers("resnet50", batch=batch)
              if c.w_shape[2:] == (3, 3)]
    vgg = wl.conv_layers("vgg16", batch=batch)
    single = wl.kernel_sweep((1, 1, 2048, 2048), 1, (3, 7, 15, 31, 63))
    pool = [PoolCase("maxpool 3x3/2 conv1 out", (batch, 64, 112, 112),
                     (3, 3), (2, 2), (1, 1))]
    return [(f"resnet50-3x3 b{batch}", resnet), (f"vgg16 b{batch}", vgg),
            ("single-2048", single), (f"resnet50-maxpool b{batch}", pool)]


@dataclass(frozen=True)
class PoolCase:
    label: str
    x_shape: tuple
    kernel: tuple
    stride: tuple
    padding: tuple

    @property
    def out_hw(self):
        from kernels.geometry import pool_output_size
        return tuple(pool_output_size(n, k, s, p) for n, k, s, p in
                     zip(self.x_shape[2:], self.kernel, self.stride,
                         self.padding))


def case_spec(case, dtype="float32"):
    """The :class:`kernels._dispatch.ConvSpec` of a ConvCase."""
    from kernels._dispatch import ConvSpec
    p = case.padding
    return ConvSpec.from_config(case.x_shape, case.w_shape,
                                (case.stride,) * 2, (p, p, p, p), (1, 1),
                                case.groups, dtype)


def _gemm_tiles():
    from kernels.cuda._tuning import GEMM
    return GEMM.block_m, GEMM.block_n, GEMM.block_k


def _pad(n, b):
    return -(-n // b) * b


def gemm_cost(batch, m, n, k, elt, l2_bytes, complex_=False):
    """FLOPs (executed, useful) and DRAM bytes of ``batch`` GEMMs of
    ``M x K`` times ``K x N`` on the GEMM core (see the module docstring).
    ``complex_``: complex operands, 8 real FLOPs per multiply-add."""
    bm, bn, bk = _gemm_tiles()
    per = 8 if complex_ else 2
    ce = 2 * elt if complex_ else elt
    executed = per * batch * _pad(m, bm) * _pad(n, bn) * _pad(k, bk)
    useful = per * batch * m * n * k
    b_item = k * n * ce
    passes = 1 if b_item <= L2_SHARE * l2_bytes else -(-m // bm)
    traffic = batch * (m * k * ce + b_item * passes + m * n * ce)
    return executed, useful, traffic, passes


def _finish(row, dtype):
    flops, nbytes = row["flops"], row["bytes"]
    row["intensity"] = flops / nbytes if nbytes else None
    for dev in DEVICES:
        t_c = flops / dev.peak(dtype)
        t_m = nbytes / dev.bandwidth
        row[f"t_{dev.name}_us"] = 1e6 * max(t_c, t_m)
        row[f"bound_{dev.name}"] = "compute" if t_c >= t_m else "memory"
    return row


def _conv_base(workload, case, spec, algorithm, dtype):
    return {"workload": workload, "layer": case.label, "op": "conv2d",
            "algorithm": algorithm, "dtype": str(np.dtype(dtype)),
            "x_shape": list(spec.x_shape), "w_shape": list(spec.w_shape),
            "stride": spec.stride[0], "padding": spec.padding[0],
            "groups": spec.groups, "macs": spec.macs}


def _rfft2_flops(t):
    n = t * t
    return 2.5 * n * math.log2(n)


def fft_few_channel(kg, cgp, tuning=None):
    """Whether :mod:`kernels.cuda.fft` contracts elementwise (its
    ``few_channel`` rule, :class:`kernels.cuda._tuning.FFTTuning`):
    ``kg`` outputs and ``cgp`` phase-split input channels per group."""
    if tuning is None:
        from kernels.cuda._tuning import FFT as tuning
    return kg <= tuning.few_channel_max_k and cgp <= tuning.few_channel_max_c


def _fft_cost(spec, t, elt, l2_bytes):
    """(flops, useful, bytes, detail, contraction complex MACs) of FFT
    convolution with t x t tiles."""
    n, c, h, w = spec.x_shape
    k_out, cg, kh, kw = spec.w_shape
    g = spec.groups
    sh, sw = spec.stride
    ho, wo = spec.out_hw
    kq = (-(-kh // sh), -(-kw // sw))
    if t <= max(kq) - 1:
        return None
    phases = sh * sw
    cgp = cg * phases
    tiles = (-(-ho // (t - kq[0] + 1))) * (-(-wo // (t - kq[1] + 1)))
    bins = t * (t // 2 + 1)
    f_in = n * c * phases * tiles * _rfft2_flops(t)
    f_w = k_out * cgp * _rfft2_flops(t)
    f_out = n * k_out * tiles * _rfft2_flops(t)
    ce = 2 * elt
    s_x = n * c * phases * tiles * bins * ce
    s_w = k_out * cgp * bins * ce
    s_y = n * k_out * tiles * bins * ce
    if fft_few_channel(k_out // g, cgp):
        # elementwise complex multiply-adds, no tile padding; reads X and
        # W, writes Y once
        g_useful = 8 * bins * n * tiles * k_out * cgp
        g_exec, g_bytes, passes = g_useful, s_x + s_w + s_y, 1
        contraction = "elementwise"
    else:
        g_exec, g_useful, g_bytes, passes = gemm_cost(
            bins * g, k_out // g, n * tiles, cgp, elt, l2_bytes, complex_=True)
        contraction = "GEMM"
    x_b = n * c * h * w * elt
    w_b = k_out * cg * kh * kw * elt
    y_b = n * k_out * ho * wo * elt
    # transforms: x in, X out; w in, W out; Y in, y out.  GEMM: its own
    # traffic over the spectra (reads X, W; writes Y).
    nbytes = x_b + s_x + w_b + s_w + g_bytes + s_y + y_b
    flops = f_in + f_w + f_out + g_exec
    detail = (f"tile {t}x{t}, {tiles} tiles/img, {bins} bins, {contraction}"
              + (f", {phases} phases" if phases > 1 else "")
              + (f", B x{passes}" if passes > 1 else ""))
    return flops, f_in + f_w + f_out + g_useful, nbytes, detail, g_useful // 8


def model_conv(spec, algorithm, workload="", label="", dtype=None,
               winograd_tile=None, fft_tile=None, device=None):
    """Model row (dict) of one convolution by one algorithm.

    ``spec`` a ConvSpec; ``winograd_tile`` an output tile m for
    :func:`kernels._winograd_math.tile_for` (default: its default);
    ``fft_tile`` a transform length (default: the kernels' choice;
    ``"best"``: the power of two with the smallest modelled H200 time).
    Keys: ``flops`` (executed), ``useful_flops``, ``gemm_macs`` (the
    GEMM part's useful multiply-adds, where there is one; for fft the
    per-frequency contraction's complex ones, GEMM or elementwise), ``bytes``,
    ``intensity``, ``t_<device>_us``, ``bound_<device>``, ``detail``;
    ``flops`` None and ``note`` the reason when the algorithm does not
    apply.
    """
    dtype = np.dtype(dtype or spec.dtype)
    elt = dtype.itemsize
    l2 = (device or DEVICES[-1]).l2_bytes
    case = type("C", (), {"label": label})
    row = _conv_base(workload, case, spec, algorithm, dtype)
    n, c, h, w = spec.x_shape
    k_out, cg, kh, kw = spec.w_shape
    g = spec.groups
    ho, wo = spec.out_hw
    x_b = n * c * h * w * elt
    w_b = k_out * cg * kh * kw * elt
    y_b = n * k_out * ho * wo * elt
    row["useful_flops"] = 2 * spec.macs
    row["note"] = ""
    if algorithm == "direct":
        row.update(flops=2 * spec.macs, bytes=x_b + w_b + y_b,
                   gemm_macs=None, detail="compulsory traffic")
    elif algorithm == "im2col":
        bm, bn, bk = _gemm_tiles()
        m, nn, kk = k_out // g, n * ho * wo, cg * kh * kw
        executed = 2 * g * _pad(m, bm) * _pad(nn, bn) * _pad(kk, bk)
        x_group = x_b // g
        passes = 1 if x_group <= L2_SHARE * l2 else -(-m // bm)
        row.update(flops=executed, bytes=w_b + x_b * passes + y_b,
                   gemm_macs=spec.macs,
                   detail=f"GEMM {m}x{nn}x{kk}"
                          + (f" x{g} groups" if g > 1 else "")
                          + (f", x read x{passes}" if passes > 1 else ""))
    elif algorithm == "winograd":
        from kernels import _winograd_math as wm
        reason = wm.unsupported_reason(spec.x_shape, spec.w_shape,
                                       spec.stride, spec.padding,
                                       spec.dilation, spec.groups)
        if reason is None:
            try:
                tile = wm.tile_for((kh, kw), winograd_tile)
            except ValueError as exc:
                reason = str(exc)
        if reason is not None:
            row.update(flops=None, bytes=None, gemm_macs=None, detail="",
                       note=reason)
            return row
        ah, aw = tile.alpha_h, tile.alpha_w
        th, tw = wm.tile_counts((ho, wo), tile)
        tiles = n * th * tw
        f_in = c * tiles * 2 * ah * aw * (ah + aw)
        f_w = k_out * cg * 2 * ah * (kh * kw + kw * aw)
        f_out = k_out * tiles * 2 * tile.m_h * aw * (ah + tile.m_w)
        g_exec, g_useful, g_bytes, passes = gemm_cost(
            ah * aw * g, k_out // g, tiles, cg, elt, l2)
        v_b = ah * aw * c * tiles * elt
        u_b = ah * aw * k_out * cg * elt
        m_b = ah * aw * k_out * tiles * elt
        row.update(flops=f_in + f_w + f_out + g_exec,
                   useful_flops=f_in + f_w + f_out + g_useful,
                   bytes=x_b + v_b + w_b + u_b + g_bytes + m_b + y_b,
                   gemm_macs=g_useful // 2,
                   detail=f"F({tile.m_h}x{tile.m_w},{kh}x{kw}), "
                          f"{th * tw} tiles/img"
                          + (f", V x{passes}" if passes > 1 else ""))
    elif algorithm == "fft":
        if spec.dilation != (1, 1):
            row.update(flops=None, bytes=None, gemm_macs=None, detail="",
                       note="dilation is not modelled for fft")
            return row
        kq = max(-(-kh // spec.stride[0]), -(-kw // spec.stride[1]))
        span = max(ho, wo) + kq - 1
        if fft_tile is None:
            # The kernels' own rule (square tiles modelled: the larger axis).
            from kernels.cuda._fft_tiles import choose_tile
            fft_tile = max(choose_tile(spec.x_shape, spec.w_shape, spec.stride,
                                       spec.padding, spec.dilation))
        candidates = []
        t = 4
        while t < 2 * max(span, 4):
            if t > kq - 1 and (fft_tile == "best" or t == fft_tile):
                candidates.append(t)
            t *= 2
        best = None
        for t in candidates:
            cost = _fft_cost(spec, t, elt, l2)
            if cost is None:
                continue
            flops, useful, nbytes, detail, gmacs = cost
            dev = DEVICES[-1]
            time_ = max(flops / dev.peak(dtype), nbytes / dev.bandwidth)
            if best is None or time_ < best[0]:
                best = (time_, flops, useful, nbytes, detail, gmacs)
        if best is None:
            row.update(flops=None, bytes=None, gemm_macs=None, detail="",
                       note=f"no power-of-two tile fits (fft_tile={fft_tile})")
            return row
        _, flops, useful, nbytes, detail, gmacs = best
        row.update(flops=flops, useful_flops=useful, bytes=nbytes,
                   gemm_macs=gmacs, detail=detail)
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    return _finish(row, dtype)


def model_pool(case, workload="", dtype="float32"):
    """Model row of max pooling: pure bandwidth (x read, y written once)."""
    dtype = np.dtype(dtype)
    n, c, h, w = case.x_shape
    ho, wo = case.out_hw
    outputs = n * c * ho * wo
    row = {"workload": workload, "layer": case.label, "op": "max_pool2d",
           "algorithm": "-", "dtype": str(dtype), "x_shape": list(case.x_shape),
           "kernel": list(case.kernel), "stride": case.stride[0],
           "padding": case.padding[0], "out_hw": [ho, wo],
           "flops": outputs * (case.kernel[0] * case.kernel[1] - 1),
           "useful_flops": None, "gemm_macs": None,
           "bytes": (n * c * h * w + outputs) * dtype.itemsize,
           "detail": "compares; bound by bytes", "note": ""}
    row = _finish(row, dtype)
    for dev in DEVICES:   # compares are not FLOPs at the FMA rate
        row[f"t_{dev.name}_us"] = 1e6 * row["bytes"] / dev.bandwidth
        row[f"bound_{dev.name}"] = "memory"
    return row


ALGORITHMS = ("direct", "im2col", "winograd", "fft")


def model_rows(dtype="float32", batch=32, algorithms=ALGORITHMS):
    """Every model row: each workload layer by each algorithm, then pooling.

    The fastest algorithm of a layer on the H200 model gets ``best=True``.
    """
    rows = []
    for name, cases in model_workloads(batch):
        for case in cases:
            if isinstance(case, PoolCase):
                rows.append(model_pool(case, name, dtype))
                continue
            spec = case_spec(case, dtype)
            layer_rows = [model_conv(spec, a, name, case.label, dtype)
                          for a in algorithms]
            times = [r.get("t_H200_us") for r in layer_rows]
            finite = [t for t in times if t is not None]
            for r in layer_rows:
                r["best"] = bool(finite) and r.get("t_H200_us") == min(finite)
            rows.extend(layer_rows)
    return rows


def _si(v, unit="", digits=3):
    if v is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.{digits}g}{prefix}{unit}"
    return f"{v:.{digits}g}{unit}"


def _us(v):
    if v is None:
        return "-"
    return f"{v:,.1f}" if v < 1e4 else f"{v:,.0f}"


def format_model_table(rows):
    """The model rows as a text table (one per workload)."""
    header = ("layer", "alg", "GFLOP exec", "useful %", "MB", "FLOP/B",
              "H100 us", "bound", "H200 us", "bound", "detail")
    align = ["<", "<"] + [">"] * 8 + ["<"]
    out, current, body = [], None, []

    def flush():
        if body:
            out.append(f"## {current}\n" + _table(header, body, align))

    for r in rows:
        if r["workload"] != current:
            flush()
            current, body = r["workload"], []
        if r.get("flops") is None:
            body.append((r["layer"], r["algorithm"], "-", "-", "-", "-", "-",
                         "", "-", "", f"n/a: {r['note']}"))
            continue
        useful = r.get("useful_flops")
        body.append((
            r["layer"], r["algorithm"] + ("*" if r.get("best") else ""),
            f"{r['flops'] / 1e9:.3g}",
            "-" if useful is None else f"{100 * useful / r['flops']:.0f}",
            f"{r['bytes'] / 1e6:,.1f}", f"{r['intensity']:.3g}",
            _us(r["t_H100_us"]), r["bound_H100"][:3],
            _us(r["t_H200_us"]), r["bound_H200"][:3], r["detail"]))
    flush()
    dev = ", ".join(f"{d.name}: {d.peak_fp32 / 1e12:.0f} TFLOP/s fp32 "
                    f"({d.peak_fp64 / 1e12:.0f} fp64), "
                    f"{d.bandwidth / 1e12:.2f} TB/s" for d in DEVICES)
    bm, bn, bk = _gemm_tiles()
    legend = (f"# roofline model ({dev}; GEMM core {bm}x{bn}x{bk}, operands "
              f"re-read from L2 up to {L2_SHARE * DEVICES[0].l2_bytes / 2**20:.0f}"
              f" MiB).\n# useful = share of executed FLOPs that are not tile "
              f"padding; * = fastest on the H200 model; bound com(pute)/mem(ory).")
    return legend + "\n" + "\n\n".join(out)


# --------------------------------------------------------------------------
# The subcommand
# --------------------------------------------------------------------------

def run(args):
    """``convbench cuda-report`` with parsed arguments; returns the exit code."""
    archs = args.arch
    dtypes = args.dtype
    result = {"archs": list(archs), "dtypes": list(dtypes)}
    status = 0
    if args.model:
        rows = []
        for dtype in dtypes:
            rows += model_rows(dtype)
        result["model"] = rows
        result["devices"] = [asdict(d) for d in DEVICES]
        print(format_model_table(rows))
    if not args.model or args.check:
        try:
            rows = compile_report(archs, dtypes, getattr(args, "jobs", None),
                                  getattr(args, "modules", None))
        except RuntimeError as exc:
            print(f"convbench cuda-report: {exc}", file=sys.stderr)
            return 2
        result["kernels"] = rows
        if args.model:
            print()
        print(f"# kernels of kernels/cuda compiled for {', '.join(archs)}, "
              f"{', '.join(dtypes)}")
        print(format_compile_table(rows))
        if args.check:
            bad = check_failures(rows)
            result["check_failures"] = [
                {"module": r["module"], "kernel": r["kernel"],
                 "dtype": r["dtype"], "arch": r["arch"], "reason": why}
                for r, why in bad]
            if bad:
                print(f"\ncheck failed: {len(bad)} kernel build(s) spill, "
                      f"fail or reach < 25 % occupancy:")
                for r, why in bad:
                    print(f"  {r['module']}.{r['kernel']} {r['dtype']} "
                          f"{r['arch']}: {why}")
                status = 1
            else:
                print("\ncheck passed: no spills, every occupancy >= 25 %")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"\nwrote {args.json}")
    return status


def _worker(argv):
    """Subprocess side of :func:`compile_report` (no simulator here)."""
    archs, dtypes = parse_archs(argv[0]), parse_dtypes(argv[1])
    modules = tuple(m for m in argv[3].split(",") if m) if len(argv) > 3 else ()
    rows = _compile_here(archs, dtypes, int(argv[2]) if len(argv) > 2 else 1,
                         modules or None)
    sys.stdout.write("\nCUDA_REPORT_JSON " + json.dumps(rows) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--worker":
        sys.exit(_worker(sys.argv[2:]))
    from .cli import main
    sys.exit(main(["cuda-report"] + sys.argv[1:]))
