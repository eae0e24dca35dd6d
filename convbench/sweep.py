"""Time every algorithm and peer on a list of convolution problems.

For each problem (a :class:`convbench.workloads.ConvCase`) the sweep

1. builds seeded random data;
2. warms every contender up with one untimed call (Numba compilation,
   FFT planning, thread-pool start) and measures that call's error against
   :func:`reference.conv2d` in units of the documented forward error bound
   (:func:`kernels.accuracy.error_in_bound_units`);
3. times the contenders interleaved, ``repeats`` rounds, each round in
   a new seeded order (:func:`convbench.timing.interleaved_times`), so
   that a burst of noise on a shared machine hits every contender alike
   and no contender always follows the same one; the median is reported.

Contenders are the algorithms of ``kernels`` (called through the public
``kernels.conv2d``, so validation is included, as a user would see it) and
peers: ``scipy-direct`` / ``scipy-fft`` (``scipy.signal.correlate`` summed
over channel planes, the obvious SciPy way to do a multi-channel layer)
and ``torch`` (``torch.nn.functional.conv2d``).  A configuration an
algorithm cannot do is reported as ``n/a``; a SciPy peer whose estimated
time per call is above ``peer_time_limit`` is ``skipped``, and so is any
contender whose call takes more than ``time_limit`` seconds (compilation
excluded) while another contender of the same case ran in less (see
:func:`_prepare`): huge layers stay affordable.

The float64 reference is slow (SciPy's direct correlation, about 0.1 G
multiply-adds per second), so the check covers ``check_batch`` images and,
when that is still too slow, the first output rows (and columns) that fit
in ``check_macs``; the checked region is recorded with the result.

A KeyboardInterrupt stops the sweep; what was measured is kept (contenders
timed fewer than ``repeats`` times are marked ``partial``).
"""

from __future__ import annotations

import math
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

import kernels
from kernels import accuracy
from kernels._dispatch import ConvSpec
from kernels._dispatch import unsupported_reason as _kernel_unsupported
from kernels.geometry import conv_output_size, same_padding

from . import ops
from .crossover import find_crossovers
from .problems import Problem, parse_problem
from .timing import interleaved_times, make_inputs, time_call
from .workloads import ConvCase, fits_conv_case, problem_case

__all__ = ["PEERS", "SweepConfig", "Measurement", "SweepResult", "run_sweep",
           "make_runner", "NotApplicable", "Skipped", "ReferenceCheck", "bound_kind",
           "make_data", "time_call", "format_table", "format_crossovers", "flops",
           "kernel_series", "format_winners"]

PEERS = ("scipy-direct", "scipy-fft", "scipy-oa", "torch")

#: Accuracy model used to express a peer's error in bound units.
_PEER_BOUND_KIND = {"scipy-direct": "direct", "scipy-fft": "fft",
                    "scipy-oa": "fft", "torch": "direct"}


# The statuses of a contender that did not run (shared with convbench.ops).
NotApplicable = ops.NotApplicable
Skipped = ops.Skipped


@dataclass
class SweepConfig:
    """Options of a sweep (see ``convbench sweep --help``)."""

    algorithms: tuple = ()
    peers: tuple = ("scipy-direct", "scipy-fft", "torch")
    dtype: str = "float32"
    repeats: int = 5
    check: bool = True
    check_batch: int = 1          # images checked; 0 = all
    check_macs: float = 1.5e8     # reference budget per case (multiply-adds)
    peer_time_limit: float = 2.0  # seconds per call, estimated, SciPy peers
    # Seconds per call: a contender slower than this (compilation excluded)
    # while another contender of the case ran faster is "skipped", untimed.
    time_limit: float = math.inf
    seed: int = 0
    progress: bool = True
    # glibc malloc keeps freed memory (machine.keep_freed_memory): peers'
    # large temporaries are not page-faulted afresh on every call.
    keep_freed_memory: bool = True
    backend: str = "cpu"          # kernels' backend of the algorithms
    # Also time every contender that ran in its own worker process
    # (convbench.isolated), alternated call by call, ``repeats`` rounds.
    isolated: bool = False


@dataclass
class Measurement:
    """One contender on one case."""

    case: str
    x_shape: tuple
    w_shape: tuple
    stride: int
    padding: object
    groups: int
    contender: str
    peer: bool
    status: str                      # "ok", "n/a", "skipped", "error"
    reason: str | None = None
    times_s: list = field(default_factory=list)
    median_s: float | None = None
    gflops: float | None = None
    error_units: float | None = None
    error_constant: float | None = None
    checked: dict | None = None      # region of the output that was checked
    partial: bool = False
    chose: str | None = None         # algorithm picked by "auto"
    # Seconds of the warm-up call (the faster of two when the first was
    # over the time limit: compilation excluded), or the estimate that got
    # the contender skipped.
    warmup_s: float | None = None
    # ``SweepConfig.isolated``: the contender alone in a worker process.
    isolated_times_s: list = field(default_factory=list)
    isolated_median_s: float | None = None
    isolated_reason: str | None = None   # why it has no isolated times
    # The op and its descriptor (convbench.problems); conv2d cases of the
    # kernel-size and network sweeps have no descriptor.
    op: str = "conv2d"
    problem: str | None = None
    count: int = 1                   # layers of a network sharing it
    rate: float | None = None        # GFLOP/s (convolutions) or GB/s
    rate_unit: str = "GFLOP/s"
    copy_fraction: float | None = None   # GB/s over np.copyto's (pooling)
    not_checked: str | None = None   # why the error was not measured

    def quartiles_s(self, isolated=False):
        """(first, third) quartile of the timed repeats, or None."""
        times = self.isolated_times_s if isolated else self.times_s
        if len(times) < 2:
            return None
        q = statistics.quantiles(times, n=4, method="inclusive")
        return q[0], q[2]

    @property
    def kernel_size(self):
        if self.w_shape is None:
            return None
        kh, kw = self.w_shape[-2:]
        return kh if kh == kw else (kh, kw)


@dataclass
class SweepResult:
    config: dict
    cases: list
    measurements: list
    interrupted: bool = False
    machine: dict | None = None

    def crossovers(self):
        """Crossovers along each kernel-size series of the cases."""
        out = []
        for key, sizes, times in kernel_series(self.measurements):
            for c in find_crossovers(sizes, times):
                out.append({"series": key, "slower": c.slower,
                            "faster": c.faster, "kernel_size": c.size})
        return out

    def to_dict(self):
        return {
            "schema": "convbench.sweep/1",
            "config": self.config,
            "interrupted": self.interrupted,
            "cases": [_case_dict(c) for c in self.cases],
            "results": [asdict(m) for m in self.measurements],
            "crossovers": self.crossovers(),
            "machine": self.machine,
        }


def _case_dict(case):
    if isinstance(case, Problem):
        return {"label": case.label, "op": case.op,
                "problem": case.descriptor(), "count": case.count}
    return case._asdict()


# --------------------------------------------------------------------------
# Problem geometry
# --------------------------------------------------------------------------

def zero_padding(case):
    """(top, bottom, left, right) zero padding of a case."""
    kh, kw = case.w_shape[2:]
    if case.padding == "valid":
        return (0, 0, 0, 0)
    if case.padding == "same":
        return same_padding(kh) + same_padding(kw)
    p = int(case.padding)
    return (p, p, p, p)


def output_shape(case):
    n, _, h, w = case.x_shape
    k, _, kh, kw = case.w_shape
    pt, pb, pl, pr = zero_padding(case)
    s = case.stride
    return (n, k, conv_output_size(h, kh, s, (pt, pb)),
            conv_output_size(w, kw, s, (pl, pr)))


def flops(case):
    """2 N K (C/g) kH kW Ho Wo: the multiply-adds of a direct convolution."""
    n, k, ho, wo = output_shape(case)
    _, cg, kh, kw = case.w_shape
    return 2.0 * n * k * cg * kh * kw * ho * wo


def _stride1_macs(case, batch, rows=None, cols=None):
    """Multiply-adds of the stride-1 'valid' correlation that SciPy (and the
    reference) compute before subsampling, over ``batch`` images."""
    _, _, h, w = case.x_shape
    k, cg, kh, kw = case.w_shape
    pt, pb, pl, pr = zero_padding(case)
    full_rows = conv_output_size(h, kh, 1, (pt, pb))
    full_cols = conv_output_size(w, kw, 1, (pl, pr))
    r = full_rows if rows is None else min(full_rows, (rows - 1) * case.stride + 1)
    c = full_cols if cols is None else min(full_cols, (cols - 1) * case.stride + 1)
    return float(batch) * k * cg * kh * kw * r * c


def _fits(case):
    """None, or why the kernel does not fit in the padded input."""
    _, _, h, w = case.x_shape
    _, _, kh, kw = case.w_shape
    pt, pb, pl, pr = zero_padding(case)
    if kh > h + pt + pb or kw > w + pl + pr:
        return (f"kernel {kh}x{kw} is larger than the padded input "
                f"{h + pt + pb}x{w + pl + pr}")
    return None


# --------------------------------------------------------------------------
# Contenders
# --------------------------------------------------------------------------

def unsupported_reason(name, backend, *config):
    """None when ``kernels`` can run algorithm ``name`` on ``backend`` for
    the normalised ``config``, else why not."""
    return _kernel_unsupported("conv2d", backend, name,
                               ConvSpec.from_config(*config))


def _algorithm_runner(name, case, x, w, dtype, backend):
    """Zero-argument callable running ``kernels.conv2d`` with ``name``."""
    stride2 = (case.stride, case.stride)
    pads = zero_padding(case)
    config = (case.x_shape, case.w_shape, stride2, pads, (1, 1), case.groups)
    chose = None
    if name == "auto":
        chose = kernels.choose_algorithm(*config, dtype=dtype, backend=backend)
    else:
        reason = unsupported_reason(name, backend, *config)
        if reason is not None:
            raise NotApplicable(reason)

    def run():
        return kernels.conv2d(x, w, stride=case.stride, padding=case.padding,
                              groups=case.groups, algorithm=name,
                              backend=backend)
    return run, chose


_DIRECT_RATE = {}


def scipy_direct_rate(dtype):
    """Multiply-adds per second of scipy.signal.correlate(method='direct')
    on this machine (measured once per dtype and process)."""
    key = np.dtype(dtype).name
    if key not in _DIRECT_RATE:
        import scipy.signal
        a, b = make_inputs((96, 96), (7, 7), dtype, seed=1)
        scipy.signal.correlate(a, b, mode="valid", method="direct")
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            scipy.signal.correlate(a, b, mode="valid", method="direct")
            times.append(time.perf_counter() - t0)
        _DIRECT_RATE[key] = 90 * 90 * 49 / max(min(times), 1e-9)
    return _DIRECT_RATE[key]


def _scipy_runner(method, case, x, w, limit):
    """scipy.signal.correlate over every (n, k, c) plane, summed over c."""
    import scipy.signal
    n, k, ho, wo = output_shape(case)
    _, cg, _, _ = case.w_shape
    pt, pb, pl, pr = zero_padding(case)
    s = case.stride
    k_per_group = k // case.groups
    planes = n * k * cg

    def plane_sum(xp, i, j):
        g = j // k_per_group
        acc = None
        for c in range(cg):
            if method == "oa":
                z = scipy.signal.oaconvolve(xp[i, g * cg + c],
                                            w[j, c, ::-1, ::-1], mode="valid")
            else:
                z = scipy.signal.correlate(xp[i, g * cg + c], w[j, c],
                                           mode="valid", method=method)
            if acc is None:
                acc = z
            else:
                acc += z
        return acc[::s, ::s]

    def pad(x):
        if any((pt, pb, pl, pr)):
            return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        return x

    def run():
        xp = pad(x)
        y = np.empty((n, k, ho, wo), dtype=x.dtype)
        for i in range(n):
            for j in range(k):
                y[i, j] = plane_sum(xp, i, j)
        return y

    if method == "direct":
        estimate = _stride1_macs(case, n) / scipy_direct_rate(x.dtype)
    else:
        xp = pad(x[:1])
        plane_sum(xp, 0, 0)
        t0 = time.perf_counter()
        plane_sum(xp, 0, 0)
        estimate = n * k * (time.perf_counter() - t0)
    if estimate > limit:
        raise Skipped(f"estimated {estimate:.3g} s per call > peer time "
                      f"limit {limit:g} s ({planes} plane{'s' if planes > 1 else ''})")
    return run


def _torch_runner(case, x, w):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise NotApplicable("torch is not installed (pip install torch)") from None
    pt, pb, pl, pr = zero_padding(case)
    xt = torch.from_numpy(x)
    wt = torch.from_numpy(w)
    symmetric = pt == pb and pl == pr

    def run():
        with torch.no_grad():
            if symmetric:
                y = F.conv2d(xt, wt, stride=case.stride, padding=(pt, pl),
                             groups=case.groups)
            else:
                y = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wt, stride=case.stride,
                             groups=case.groups)
        return y.numpy()
    return run


def make_runner(name, case, x, w, peer_time_limit=math.inf, backend="cpu"):
    """A zero-argument callable computing ``case`` on ``(x, w)`` with ``name``.

    Parameters
    ----------
    name : str
        An algorithm of ``kernels`` (or ``"auto"``) or one of :data:`PEERS`.
    case : :class:`convbench.workloads.ConvCase`
    x, w : ndarray
        C-contiguous data of the case's shapes, one float dtype.
    peer_time_limit : float
        Seconds: a SciPy peer estimated to take longer per call is skipped.
    backend : {"cpu", "cuda"}
        ``kernels``' backend of an algorithm (peers ignore it).

    Returns
    -------
    run : callable
        ``run()`` returns the (N, K, Ho, Wo) output; not yet called (the
        first call compiles / plans).
    chose : str or None
        For ``"auto"``, the algorithm it picks.

    Raises
    ------
    NotApplicable
        The contender cannot compute the case (unsupported configuration,
        torch missing).
    Skipped
        A SciPy peer would take longer than ``peer_time_limit``.
    """
    case = ConvCase(*case)
    if name == "scipy-direct":
        return _scipy_runner("direct", case, x, w, peer_time_limit), None
    if name == "scipy-fft":
        return _scipy_runner("fft", case, x, w, peer_time_limit), None
    if name == "scipy-oa":
        return _scipy_runner("oa", case, x, w, peer_time_limit), None
    if name == "torch":
        return _torch_runner(case, x, w), None
    return _algorithm_runner(name, case, x, w, x.dtype, backend)


# --------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------

def _check_region(case, check_batch, check_macs):
    """(batch, rows, cols) of the output checked within the budget."""
    n, _, ho, wo = output_shape(case)
    batch = n if check_batch <= 0 else min(n, check_batch)
    rows, cols = ho, wo
    while rows > 1 and _stride1_macs(case, batch, rows, cols) > check_macs:
        rows = max(1, rows // 2)
    while cols > 1 and _stride1_macs(case, batch, rows, cols) > check_macs:
        cols = max(1, cols // 2)
    return batch, rows, cols


class ReferenceCheck:
    """The float64 reference (and ``|x| * |w|``) of a case, on a region.

    The region is the first ``check_batch`` images (0: all) and, if the
    reference would cost more than ``check_macs`` multiply-adds, the first
    output rows (then columns) that fit; ``region`` describes it.
    :meth:`error_units` measures an output against it.
    """

    def __init__(self, case, x, w, check_batch=1, check_macs=1.5e8):
        import reference
        case = ConvCase(*case)
        self.batch, self.rows, self.cols = _check_region(case, check_batch,
                                                         check_macs)
        _, _, ho, wo = output_shape(case)
        kh, kw = case.w_shape[2:]
        s = case.stride
        pt, pb, pl, pr = zero_padding(case)
        # The outputs [:rows, :cols] read x_pad[:(rows-1)s+kh, :(cols-1)s+kw].
        xp = np.pad(x[:self.batch].astype(np.float64),
                    ((0, 0), (0, 0), (pt, pb), (pl, pr)))
        xp = xp[:, :, :(self.rows - 1) * s + kh, :(self.cols - 1) * s + kw]
        w64 = w.astype(np.float64)
        self.y = reference.conv2d(xp, w64, stride=s, groups=case.groups)
        self.abs = reference.conv2d(np.abs(xp), np.abs(w64), stride=s,
                                    groups=case.groups)
        self.region = {"batch": self.batch, "rows": self.rows, "cols": self.cols,
                       "fraction": self.batch * self.rows * self.cols
                       / (case.x_shape[0] * ho * wo)}

    def error_units(self, bound_kind, dtype, y):
        """max |y - y_ref| / (u |x|*|w|) on the region, with the accuracy
        model of algorithm ``bound_kind`` (see :func:`bound_kind`)."""
        y = y[:self.batch, :, :self.rows, :self.cols]
        return accuracy.error_in_bound_units(bound_kind, dtype, y, self.y,
                                             self.abs)


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------

# time_call (convbench.timing) is the sweep's only clock; it is looked up
# here at every use, so that a test can replace ``sweep.time_call``.

def make_data(case, dtype=np.float32, seed=0):
    """Seeded standard-normal (x, w) of a case's shapes
    (:func:`convbench.timing.make_inputs`)."""
    case = ConvCase(*case)
    return make_inputs(case.x_shape, case.w_shape, dtype, seed)


def bound_kind(name, chose=None):
    """The algorithm whose accuracy model measures contender ``name``
    (a peer: the algorithm it resembles; "auto": the one it chose)."""
    if name in _PEER_BOUND_KIND:
        return _PEER_BOUND_KIND[name]
    return chose if name == "auto" else name


def _spread(quartiles):
    """'q1-q3' in ms, or '-'."""
    if quartiles is None:
        return "-"
    return f"{quartiles[0] * 1e3:.3g}-{quartiles[1] * 1e3:.3g}"


def _isolated_cells(m, best_peer):
    if not m.isolated_median_s:
        return ("-", "-", "-")
    speed = best_peer / m.isolated_median_s if best_peer else None
    return (_fmt(m.isolated_median_s * 1e3, ".4g"),
            _spread(m.quartiles_s(isolated=True)),
            "-" if speed is None else f"{speed:.2f}x")


def _finish(m, case, repeats, itemsize=4):
    if m.times_s:
        m.median_s = statistics.median(m.times_s)
        m.partial = len(m.times_s) < repeats
        m.status = "ok"
        if isinstance(case, Problem):
            m.rate, m.rate_unit, m.copy_fraction = ops.rate(
                case, m.median_s, itemsize)
            if m.rate_unit == "GFLOP/s":
                m.gflops = m.rate
        else:
            m.gflops = (flops(case) / m.median_s / 1e9 if m.median_s > 0
                        else None)
            m.rate = m.gflops


#: The clock of warm-up calls and pilot runs (looked up at each use: tests
#: replace it).  Timed repeats use :func:`time_call`.
warmup_clock = time.perf_counter

#: A case with more multiply-adds than this gets a pilot run on a crop
#: before a contender's full warm-up call, once another contender ran
#: within the time limit: im2col on a single-channel 4096^2 image with a
#: 127^2 kernel would spend minutes on its warm-up call alone.
PILOT_MIN_MACS = 2e9
#: The pilot crop's share of the multiply-adds (at most).
PILOT_FRACTION = 1 / 32


def _timed(run):
    """``(output, seconds)`` of one call of ``run`` on :data:`warmup_clock`."""
    clock = warmup_clock
    t0 = clock()
    y = run()
    return y, clock() - t0


def _crop(case, x, fraction):
    """``(case, x, share)``: ``case`` on the first images, or else the first
    rows (columns when H = 1) of its input, so that the crop has about
    ``fraction`` of its output; ``share`` is the crop's actual share."""
    n, c, h, w = case.x_shape
    _, _, kh, kw = case.w_shape
    if n > 1:
        n2 = max(1, int(n * fraction))
        return case._replace(x_shape=(n2, c, h, w)), x[:n2], n2 / n
    _, _, ho, wo = output_shape(case)
    axis, full, k, pad = ((3, wo, kw, zero_padding(case)[2:]) if h == 1
                          else (2, ho, kh, zero_padding(case)[:2]))
    rows = max(1, int(full * fraction))
    # Input extent giving `rows` outputs with the same padding rule.
    size = max(1, (rows - 1) * case.stride + k - sum(pad))
    size = min(size, case.x_shape[axis])
    shape = list(case.x_shape)
    shape[axis] = size
    crop = case._replace(x_shape=tuple(shape))
    rows = output_shape(crop)[axis]
    if rows < 1:
        return case, x, 1.0
    index = (slice(None),) * axis + (slice(0, size),)
    return crop, np.ascontiguousarray(x[index]), rows / full


def _pilot_estimate(name, case, x, w, config):
    """Seconds per call of ``name`` on ``case`` extrapolated from a crop
    (second call of the crop: compilation excluded), or None when the
    case is too small to crop."""
    crop, xc, share = _crop(case, x, PILOT_FRACTION)
    if share >= 0.5:
        return None
    run, _ = make_runner(name, crop, xc, w, config.peer_time_limit,
                         config.backend)
    run()
    _, seconds = _timed(run)
    return seconds / share


def _slow(name, warm, limit):
    """Why ``name`` is skipped (another contender of the case ran within
    ``limit`` while ``name`` took longer), or None."""
    others = {k: t for k, t in warm.items() if k != name and t is not None}
    if not others or warm.get(name) is None:
        return None
    best = min(others, key=others.get)
    if warm[name] > limit and others[best] <= limit:
        return (f"{warm[name]:.3g} s per call > time limit {limit:g} s "
                f"while {best} took {others[best]:.3g} s")
    return None


def _pilot_estimates(case, x, w, contenders, config):
    """{name: seconds per call extrapolated from a crop} of the contenders
    that can run the crop (none when the limit is infinite or the case
    small)."""
    if math.isinf(config.time_limit) or flops(case) / 2 <= PILOT_MIN_MACS:
        return {}
    estimates = {}
    for name in contenders:
        try:
            chose = (kernels.choose_algorithm(
                case.x_shape, case.w_shape, (case.stride,) * 2,
                zero_padding(case), (1, 1), case.groups, dtype=x.dtype,
                backend=config.backend) if name == "auto" else None)
            # "auto": its pick on the whole case, not the crop's.
            estimate = _pilot_estimate(chose or name, case, x, w, config)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception:  # noqa: BLE001 - the full warm-up will say why
            continue
        if estimate is not None:
            estimates[name] = estimate
    return estimates


def _prepare(case, x, w, contenders, config, ref, progress):
    """Warm up and check every contender.

    With a finite ``config.time_limit`` the warm-up is timed: a contender
    whose warm-up call took longer than the limit gets a second untimed
    call (the first may have compiled), and when that too is over the
    limit while another contender of the case ran within it, the
    contender is ``skipped`` (not timed).  On a case of more than
    :data:`PILOT_MIN_MACS` multiply-adds every contender first runs on a
    crop (:data:`PILOT_FRACTION` of the output, twice: compilation
    excluded); the full warm-ups then go in the order of these estimates,
    and a contender is skipped without its full call when its estimate is
    over twice the limit (a margin for the crop's fixed costs) and another
    contender already ran within the limit.

    Returns ``({name: runner}, {name: Measurement})``: runners of the
    contenders that ran, measurements of all (n/a, skipped, error included)
    in the order of ``contenders``.
    """
    runners = {}
    measurements = {}
    warm = {}            # name -> seconds of its (compiled) warm-up call
    limit = config.time_limit
    if not math.isinf(limit):
        progress.set_postfix_str(f"{case.label} pilot runs")
    estimates = _pilot_estimates(case, x, w, contenders, config)
    order = sorted(contenders, key=lambda n: estimates.get(n, math.inf))
    for name in order:
        peer = name in PEERS
        m = Measurement(case.label, tuple(case.x_shape), tuple(case.w_shape),
                        case.stride, case.padding, case.groups, name, peer,
                        status="pending")
        measurements[name] = m
        progress.set_postfix_str(f"{case.label} {name} warm-up")
        try:
            run, m.chose = make_runner(name, case, x, w, config.peer_time_limit,
                                       config.backend)
            ran = {k: t for k, t in warm.items() if t is not None}
            best = min(ran, key=ran.get, default=None)
            estimate = estimates.get(name)
            if (best is not None and ran[best] <= limit
                    and estimate is not None and estimate > 2 * limit):
                m.warmup_s = estimate
                raise Skipped(
                    f"estimated {estimate:.3g} s per call (from a crop) > "
                    f"time limit {limit:g} s while {best} took "
                    f"{ran[best]:.3g} s")
            y = _warm_up_call(run, m, warm, limit)
        except Exception as exc:  # noqa: BLE001 - a status, see _failed
            _failed(m, exc)
        else:
            runners[name] = run
            kind = bound_kind(name, m.chose)
            if ref is not None:
                m.error_units = ref.error_units(kind, x.dtype, y)
                m.checked = ref.region
                if not peer:       # --no-check: no bound to hold it to
                    m.error_constant = accuracy.error_constant(kind, x.dtype)
        progress.update(1)
    _skip_earlier_slow(runners, measurements, warm, limit)
    runners = {n: runners[n] for n in contenders if n in runners}
    return runners, {n: measurements[n] for n in contenders}


def _warm_up_call(run, m, warm, limit):
    """The output of one untimed warm-up call of ``run`` (compilation,
    planning, thread start) for contender ``m``.

    When the call took more than ``limit`` while another contender of the
    case ran within it, a second call is made (the first may have
    compiled) and the faster counts.  The seconds go to ``warm`` and
    ``m.warmup_s``; :class:`Skipped` when the contender is still over the
    limit (:func:`_slow`).
    """
    name = m.contender
    ran = {k: t for k, t in warm.items() if t is not None}
    best = min(ran, key=ran.get, default=None)
    y, seconds = _timed(run)
    if seconds > limit and best is not None and ran[best] <= limit:
        _, again = _timed(run)
        seconds = min(seconds, again)
    m.warmup_s = warm[name] = seconds
    why = _slow(name, warm, limit)
    if why is not None:
        raise Skipped(why)
    return y


def _failed(m, exc):
    """Record why contender ``m`` did not run: ``n/a`` (it cannot compute
    the case), ``skipped`` (too slow) or ``error`` (any other exception;
    an interrupt is no Exception and goes on up)."""
    if isinstance(exc, (NotApplicable, kernels.UnsupportedConfiguration)):
        m.status, m.reason = "n/a", str(exc)
    elif isinstance(exc, Skipped):
        m.status, m.reason = "skipped", str(exc)
    else:
        m.status, m.reason = "error", f"{type(exc).__name__}: {exc}"


def _skip_earlier_slow(runners, measurements, warm, limit):
    """Skip contenders that ran over the limit before a faster one ran
    (their warm-up may have included compilation: call once more)."""
    if math.isinf(limit):
        return
    for name in list(runners):
        if warm[name] <= limit or _slow(name, warm, limit) is None:
            continue
        _, again = _timed(runners[name])
        warm[name] = measurements[name].warmup_s = min(warm[name], again)
        why = _slow(name, warm, limit)
        if why is not None:
            m = measurements[name]
            m.status, m.reason = "skipped", why
            m.error_units = m.checked = m.error_constant = None
            del runners[name]


#: Seed of the timing orders: repeat r of every case runs the contenders in
#: ``timing.repeat_order(names, r, ORDER_SEED)`` (independent of the data
#: seed, ``SweepConfig.seed``).
ORDER_SEED = 0


def _time_round_robin(runners, measurements, repeats, progress, label):
    """Time ``runners`` interleaved into ``measurements[name].times_s``
    (appended call by call: an interrupt keeps what was measured)."""
    def before(name, r):
        progress.set_postfix_str(f"{label} {name} {r + 1}/{repeats}")

    interleaved_times(
        runners, repeats, seed=ORDER_SEED, warmup=0,   # _prepare warmed up
        timer=time_call,                # looked up now: tests replace it
        times={name: measurements[name].times_s for name in runners},
        disable_gc=True,        # once per case: no collection in a call
        before_call=before, after_call=lambda name, r, s: progress.update(1))


def run_sweep(cases, config):
    """Run ``config``'s contenders on ``cases``.

    Parameters
    ----------
    cases : list of :class:`convbench.workloads.ConvCase`
    config : :class:`SweepConfig`

    Returns
    -------
    SweepResult
        ``interrupted`` is True when a KeyboardInterrupt stopped the sweep;
        measurements taken until then are kept.
    """
    from tqdm import tqdm

    contenders = list(config.algorithms) + list(config.peers)
    if not contenders:
        raise ValueError("nothing to run: no algorithms and no peers")
    if config.keep_freed_memory:
        from .machine import keep_freed_memory
        keep_freed_memory()
    dtype = np.dtype(config.dtype)
    result = SweepResult(config=_config_dict(config), cases=list(cases),
                         measurements=[])
    per_case = len(contenders) * (
        1 + config.repeats * (2 if config.isolated else 1))
    total = len(cases) * per_case
    progress = tqdm(total=total, file=sys.stderr, disable=not config.progress,
                    unit="call", leave=False, dynamic_ncols=True)
    current = {}
    try:
        for index, case in enumerate(cases):
            current = {}
            problem = None
            if isinstance(case, Problem) and fits_conv_case(case):
                problem, case = case, _counted_case(case)
            if isinstance(case, Problem):
                # current is filled contender by contender: an interrupt
                # keeps what was timed.
                _run_problem(case, index, config, progress, current)
                result.measurements.extend(current.values())
                current = {}
                continue
            case = ConvCase(*case)
            misfit = _fits(case)
            if misfit:
                for name in contenders:
                    result.measurements.append(Measurement(
                        case.label, tuple(case.x_shape), tuple(case.w_shape),
                        case.stride, case.padding, case.groups, name,
                        name in PEERS, "n/a", misfit))
                progress.update(per_case)
                continue
            x, w = make_data(case, dtype, config.seed + index)
            progress.set_postfix_str(f"{case.label} reference")
            ref = (ReferenceCheck(case, x, w, config.check_batch,
                                  config.check_macs) if config.check else None)
            runners, current = _prepare(case, x, w, contenders, config, ref,
                                        progress)
            progress.update((len(contenders) - len(runners)) * config.repeats)
            _time_round_robin(runners, current, config.repeats, progress,
                              case.label)
            for m in current.values():
                _finish(m, case, config.repeats)
                if problem is not None:
                    # The JSON names the problem the case came from.
                    m.problem, m.count = problem.descriptor(), problem.count
            if config.isolated:
                _time_isolated(case, index, current, config, progress)
            result.measurements.extend(current.values())
            current = {}
    except KeyboardInterrupt:
        result.interrupted = True
        # Keep what the interrupted case measured: contenders timed at least once.
        for m in current.values():
            if m.times_s:
                case = (parse_problem(m.problem) if m.problem else
                        ConvCase(m.case, m.x_shape, m.w_shape, m.stride,
                                 m.padding, m.groups))
                _finish(m, case, config.repeats, dtype.itemsize)
                result.measurements.append(m)
    finally:
        progress.close()
    return result


def _counted_case(p):
    """The ConvCase of conv2d problem ``p``, labelled as the network
    sweeps label shared layers (``"name (x6)"``)."""
    label = p.label or p.short
    if p.count > 1:
        label += f" (x{p.count})"
    return problem_case(p, label)


def _problem_contenders(p, config):
    """The contenders of ``config`` that apply to problem ``p``: pooling
    runs ``"kernels"`` when any algorithm was asked for; peers that cannot
    compute ``p`` at all are left out (torch stays, as n/a if missing)."""
    ours = [a for a in config.algorithms if a != ops.POOL_CONTENDER]
    if p.op in ops.POOL_OPS:
        ours = [ops.POOL_CONTENDER] if config.algorithms else []
    applicable = ops.peers_for(p)
    return ours + [name for name in config.peers if name in applicable]


def _problem_measurement(p, name):
    w_shape = p.w_shape
    return Measurement(p.label or p.short, tuple(p.x_shape),
                       None if w_shape is None else tuple(w_shape),
                       tuple(p.stride), p.padding, p.groups, name,
                       name in ops.PEERS, status="pending", op=p.op,
                       problem=p.descriptor(), count=p.count)


def _warm_up_problem(p, name, data, config, ref, warm, m):
    """Warm contender ``name`` up on ``p`` and measure its error; returns
    its runner, or None (``m.status`` says why)."""
    try:
        run, m.chose = ops.make_runner(name, p, data, backend=config.backend,
                                       peer_time_limit=config.peer_time_limit)
        y = _warm_up_call(run, m, warm, config.time_limit)
    except Exception as exc:  # noqa: BLE001 - a status, see _failed
        _failed(m, exc)
    else:
        if ref is not None and ref.skipped is None:
            units, constant, model = ref.error_units(name, data["x"].dtype,
                                                     y, m.chose)
            m.error_units = units
            m.checked = ref.region
            if not m.peer:
                m.error_constant = constant
            if name == "auto" and m.chose is None and model is not None:
                m.reason = f"error held to {model}'s bound (its pick is unknown)"
        elif ref is not None:
            m.not_checked = ref.skipped
        return run
    return None


def _run_problem(p, index, config, progress, current):
    """Warm up, check and time every applicable contender on problem
    ``p`` (any op) into ``current`` (name -> Measurement)."""
    contenders = _problem_contenders(p, config)
    per_case = len(config.algorithms) + len(config.peers)
    if not contenders:
        progress.update(per_case * (1 + config.repeats))
        return
    label = p.label or p.short
    dtype = np.dtype(config.dtype)
    data = ops.make_data(p, dtype, config.seed + index)
    progress.set_postfix_str(f"{label} reference")
    ref = (ops.Reference(p, data, config.check_batch, config.check_macs)
           if config.check else None)
    runners, warm = {}, {}
    for name in contenders:
        progress.set_postfix_str(f"{label} {name} warm-up")
        current[name] = m = _problem_measurement(p, name)
        run = _warm_up_problem(p, name, data, config, ref, warm, m)
        if run is not None:
            runners[name] = run
        progress.update(1)
    _skip_earlier_slow(runners, current, warm, config.time_limit)
    progress.update(per_case - len(contenders)
                    + (per_case - len(runners)) * config.repeats)
    _time_round_robin(runners, current, config.repeats, progress, label)
    for m in current.values():
        _finish(m, p, config.repeats, dtype.itemsize)
    if config.isolated:
        progress.update((per_case - len(current)) * config.repeats)
        _time_isolated(p, index, current, config, progress)


def _time_isolated(case, index, measurements, config, progress):
    """Time the contenders that ran in-process again, each alone in a
    worker process (:mod:`convbench.isolated`), alternated call by call."""
    from .isolated import WorkerError, worker_times
    ok = [name for name, m in measurements.items() if m.status == "ok"]
    progress.update((len(measurements) - len(ok)) * config.repeats)
    if not ok:
        return
    progress.set_postfix_str(f"{case.label} isolated workers")
    try:
        timed = worker_times(ok, [case], config.repeats, isolated=True,
                             dtype=config.dtype, seed=config.seed + index,
                             backend=config.backend,
                             keep_freed_memory=config.keep_freed_memory)
    except WorkerError as exc:
        for name in ok:
            measurements[name].isolated_reason = f"worker failed: {exc}"
        progress.update(len(ok) * config.repeats)
        return
    for name in ok:
        m = measurements[name]
        m.isolated_times_s = timed.times.get(name, [])
        if m.isolated_times_s:
            m.isolated_median_s = statistics.median(m.isolated_times_s)
        else:
            m.isolated_reason = timed.status.get(name) or "no times"
    progress.update(len(ok) * config.repeats)


def _config_dict(config):
    d = asdict(config)
    d["algorithms"] = list(config.algorithms)
    d["peers"] = list(config.peers)
    if math.isinf(config.time_limit):
        d["time_limit"] = None          # JSON has no infinity
    return d


# --------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------

def kernel_series(measurements):
    """Group measurements into kernel-size sweeps.

    Yields ``(key, sizes, times)`` for each set of cases that differ only in
    a square kernel size (same input shape, K, stride, groups, padding
    rule), with at least two sizes; ``times`` maps contender -> list of
    median seconds (None where not measured).  "auto" is left out.
    """
    groups = {}
    for m in measurements:
        if m.op != "conv2d":
            continue
        kh, kw = m.w_shape[2:]
        if kh != kw or m.contender == "auto":
            continue
        pad_rule = m.padding if isinstance(m.padding, str) else "int"
        key = (tuple(m.x_shape), m.w_shape[0], m.stride, m.groups, pad_rule)
        groups.setdefault(key, {}).setdefault(m.contender, {})[kh] = (
            m.median_s if m.status == "ok" else None)
    for key, by_contender in groups.items():
        sizes = sorted({k for times in by_contender.values() for k in times})
        if len(sizes) < 2:
            continue
        times = {name: [t.get(k) for k in sizes] for name, t in by_contender.items()}
        label = "x{} K={} stride={} groups={}".format(
            "x".join(map(str, key[0])), key[1], key[2], key[3])
        yield label, sizes, times


def _fmt(value, spec):
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else format(value, spec)


def _reason_template(reason):
    """A reason with its numbers blanked: the same rule at every size."""
    return re.sub(r"\d+(\.\d+)?", "#", reason or "")


def format_table(result):
    """Aligned plain-text table of a sweep, grouped by case.

    A contender that did not run shows its status and a note number; the
    notes under the table give the reason once per rule, with the cases it
    applied to.  An error above the documented bound is marked with ``!``.
    """
    isolated = any(m.isolated_times_s for m in result.measurements)
    units = {m.rate_unit for m in result.measurements if m.status == "ok"}
    mixed = bool(units - {"GFLOP/s"})
    header = ("case", "contender", "time ms", "q1-q3",
              "rate" if mixed else "GFLOP/s", "err units", "bound c",
              "speedup")
    if isolated:
        header += ("isolated ms", "iso q1-q3", "iso speedup")
    rows = []
    notes = {}            # (contender, status, template) -> [reason, cases]
    over_bound = False
    by_case = {}
    for m in result.measurements:
        by_case.setdefault(m.case, []).append(m)
    for label, ms in by_case.items():
        peer_times = [m.median_s for m in ms if m.peer and m.status == "ok"]
        best_peer = min(peer_times) if peer_times else None
        iso_peers = [m.isolated_median_s for m in ms
                     if m.peer and m.isolated_median_s]
        best_iso_peer = min(iso_peers) if iso_peers else None
        first = True
        for m in ms:
            name = m.contender + (f"->{m.chose}" if m.chose else "")
            if m.status != "ok":
                key = (m.contender, m.status, _reason_template(m.reason))
                note = notes.setdefault(key, [m.reason, []])
                note[1].append(label)
                number = list(notes).index(key) + 1
                cells = (f"{m.status} [{number}]",) + ("",) * (len(header) - 3)
            else:
                speed = best_peer / m.median_s if best_peer else None
                ms_txt = _fmt(m.median_s * 1e3, ".4g")
                if m.partial:
                    ms_txt += f" ({len(m.times_s)}x)"
                err_txt = _fmt(m.error_units, ".3g")
                if (m.error_units is not None and m.error_constant is not None
                        and m.error_units > m.error_constant):
                    err_txt += " !"
                    over_bound = True
                cells = (ms_txt, _spread(m.quartiles_s()),
                         _rate_cell(m) if mixed else _fmt(m.gflops, ".3g"),
                         err_txt, _fmt(m.error_constant, "g"),
                         "-" if speed is None else f"{speed:.2f}x")
                if isolated:
                    cells += _isolated_cells(m, best_iso_peer)
            rows.append((label if first else "", name) + cells)
            first = False
    if not rows:
        return "no measurements"
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    left = {0, 1}

    def line(cells):
        return "  ".join(str(c).ljust(wd) if i in left else str(c).rjust(wd)
                         for i, (c, wd) in enumerate(zip(cells, widths))).rstrip()

    out = [line(header), line(["-" * wd for wd in widths])]
    previous = None
    for r in rows:
        if r[0] and previous is not None:
            out.append("")
        out.append(line(r))
        previous = r
    out.append("")
    out.append("time: median of the timed repeats after a warm-up, q1-q3 "
               "their quartiles (ms); speedup: time of the fastest peer / "
               "time (above 1: faster than every peer); err units: max |y - "
               "y_ref| / (u |x|*|w|), to be <= bound c")
    if mixed:
        out.append("rate: GFLOP/s of the direct method's operations "
                   "(convolutions), GB/s of each input and output element "
                   "moved once and its share of np.copyto's bandwidth "
                   "(pooling)")
    if any(m.not_checked for m in result.measurements):
        out.append("err units '-': " + next(m.not_checked for m in
                                           result.measurements
                                           if m.not_checked))
    if isolated:
        out.append("isolated: each contender alone in its own worker process, "
                   "the workers alternated call by call; iso speedup against "
                   "the fastest peer's isolated time")
    if over_bound:
        out.append("! error above the documented bound of kernels.accuracy")
    for number, ((name, status, _), (reason, labels)) in enumerate(notes.items(), 1):
        where = labels[0] if len(labels) == 1 else (
            f"{len(labels)} cases: {', '.join(labels)}")
        out.append(f"[{number}] {name} {status} ({where}): {reason}")
    if result.interrupted:
        out.append("interrupted: partial results (a count in brackets after "
                   "a time is the number of repeats it is the median of)")
    return "\n".join(out)


def format_winners(result):
    """Per case: the fastest contender of ``kernels``, the fastest overall
    and ``auto``'s pick (what a user of ``--torch-model`` or a problem
    file wants to know about each layer)."""
    by_case = {}
    for m in result.measurements:
        by_case.setdefault(m.case, []).append(m)
    lines = ["fastest per problem (median time):"]
    width = max((len(label) for label in by_case), default=0)
    for label, ms in by_case.items():
        ran = [m for m in ms if m.status == "ok" and m.median_s]
        ours = [m for m in ran if not m.peer and m.contender != "auto"]
        if not ran:
            lines.append(f"  {label:<{width}}  nothing ran")
            continue
        best = min(ran, key=lambda m: m.median_s)
        text = f"  {label:<{width}}  fastest {best.contender}"
        if ours:
            mine = min(ours, key=lambda m: m.median_s)
            text += (f"; kernels: {mine.contender} "
                     f"{mine.median_s * 1e3:.3g} ms")
            peers = [m for m in ran if m.peer]
            if peers:
                peer = min(peers, key=lambda m: m.median_s)
                text += (f", {peer.median_s / mine.median_s:.2f}x "
                         f"{peer.contender}")
        auto = next((m for m in ran if m.contender == "auto"), None)
        if auto is not None and auto.chose:
            text += f"; auto picks {auto.chose}"
        lines.append(text)
    return "\n".join(lines)


def _rate_cell(m):
    """'123 GFLOP/s' or '4.5 GB/s (38 % copy)'."""
    if m.rate is None:
        return "-"
    text = f"{m.rate:.3g} {m.rate_unit}"
    if m.copy_fraction is not None:
        text += f" ({m.copy_fraction:.0%} copy)"
    return text


def format_crossovers(result):
    lines = []
    for series, sizes, times in kernel_series(result.measurements):
        found = find_crossovers(sizes, times)
        lines.append(f"crossovers ({series}, kernel sizes "
                     f"{sizes[0]}..{sizes[-1]}):")
        if not found:
            lines.append("  none: the order of the contenders does not change")
        for c in found:
            lines.append(f"  {c.describe()}")
        fastest = []
        for i, k in enumerate(sizes):
            ran = {n: t[i] for n, t in times.items() if t[i] is not None}
            if ran:
                fastest.append(f"k={k} {min(ran, key=ran.get)}")
        lines.append("  fastest: " + ", ".join(fastest))
    return "\n".join(lines)
