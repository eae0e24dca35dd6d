"""Whole networks as a network calls them: ``convbench network``.

A per-layer sweep times each distinct layer on its own and sums medians;
a network calls its layers one after another, so worker wake-ups between
different layers, ``auto``'s choice on every call and the interference of
two libraries' thread pools all count.  :func:`compare_network` times
every convolution of a network (repeats included, forward order) as one
call, for ``kernels`` (one algorithm, "auto" by default) and torch, in
three settings, each with rounds alternating the two:

``isolated``       each library in its own worker process, importing only
                   itself (:mod:`convbench.isolated`);
``kernels-first``  both in one process, ``import kernels`` first;
``torch-first``    both in one process, ``import torch`` first (the order
                   a user comparing the two usually writes).

The settings run at once, round by round
(:func:`convbench.isolated.settings_times`; one after the other until
stop 48, when this VM's speed moved between them: ``auto``'s pass took
32-48 ms in one run and 57-71 ms an hour later), so that a slow phase of
the machine hits every setting alike.

It also runs the network's sequence with each algorithm (each in its own
worker process, kernels only), times every call inside it, and sums, over
the network, the fastest algorithm's median per call: the "per-layer
best" a perfect ``auto`` would approach, measured as the network runs.
The network's own algorithm runs in the same alternation, so that
:meth:`NetworkComparison.whole_over_best` compares the two round by
round.  So does torch, in a worker of its own, so that
:meth:`NetworkComparison.by_kind` can say where the whole pass is won
and lost: each kind of layer (kernel size and stride: ResNet-50's 7x7/2
stem, 1x1, 3x3 /1 and /2, 1x1/2 downsampling) summed over its calls.

Every worker keeps glibc malloc's freed memory by default, as ``convbench
sweep`` does (:func:`convbench.machine.keep_freed_memory`): without it a
layer's large output is mapped afresh and page-faulted on every call.
VGG-16 at batch 8 (isolated workers, 3 rounds, two runs each, Xeon VM,
2026-12-05): kernels 444-480 ms and torch 789-891 kept, against kernels
502-913 and torch 993-1083 with malloc's defaults, which
``keep_freed_memory=False`` (``--malloc-default``) restores.

A network also works between its convolutions (normalisation,
activation), and a library whose threads fall asleep then pays for
waking them at its next call.  ``between="relu"`` makes each call a
convolution followed by a NumPy ReLU on its output, the same NumPy code
for every contender (:func:`convbench._worker.followed_by_relu`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from . import workloads
from .isolated import Worker, settings_times
from .timing import repeat_order

__all__ = ["NetworkComparison", "compare_network", "format_comparison",
           "SETTINGS", "CONTROL_SETTINGS"]

#: (entries, bytes) of the weight cache while every algorithm runs the
#: whole network (see _per_layer).
PER_LAYER_WEIGHT_CACHE = (4096, 4 << 30)

#: setting -> (isolated, import order)
SETTINGS = {
    "isolated": (True, ()),
    "kernels-first": (False, ("kernels", "torch")),
    "torch-first": (False, ("torch", "kernels")),
}

#: Settings asked for by name only: ``kernels-first-again`` is
#: ``kernels-first`` in a worker of its own, a control that differs in
#: nothing but the process.  Its ratio beside ``kernels-first``'s is the
#: spread two identical settings show in one run: a difference between the
#: import orders no larger than that is the harness's noise.
CONTROL_SETTINGS = {
    "kernels-first-again": SETTINGS["kernels-first"],
}

_SETTING_OPTIONS = {**SETTINGS, **CONTROL_SETTINGS}


@dataclass
class NetworkComparison:
    network: str
    batch: int
    algorithm: str
    layers: int
    distinct: int
    rounds: int
    dtype: str
    times: dict = field(default_factory=dict)   # setting -> {name: [s]}
    status: dict = field(default_factory=dict)  # setting -> {name: reason}
    per_layer: dict = field(default_factory=dict)  # label -> {alg: median s}
    counts: dict = field(default_factory=dict)     # label -> calls it stands for (1)
    # name -> one row per round of _per_layer: seconds (None: not run) of
    # each call inside the sequence; the algorithms, ``algorithm`` and
    # the peer ("torch").
    sequence_rounds: dict = field(default_factory=dict)
    # kind of layer of each call of the sequence, in forward order
    call_kinds: list = field(default_factory=list)
    # what each call does after its convolution (convbench._worker.BETWEEN)
    between: str = "none"
    # workers kept glibc malloc's freed memory (machine.keep_freed_memory)
    keep_freed_memory: bool = True

    def ratios(self, setting, peer="torch"):
        """Per round: peer's time / ours (above 1: ours is faster)."""
        t = self.times.get(setting, {})
        ours, theirs = t.get(self.algorithm), t.get(peer)
        if not ours or not theirs:
            return []
        return [p / o for o, p in zip(ours, theirs)]

    def best_sum(self):
        """Seconds of the network at each layer's fastest algorithm."""
        return sum(self.counts[label] * min(times.values())
                   for label, times in self.per_layer.items() if times)

    def whole_over_best(self):
        """Per round of the per-layer timing: the whole network through
        ``algorithm`` over the sum of each call's fastest algorithm, both
        timed in that round (so a slow phase of the machine hits both)."""
        whole = self.sequence_rounds.get(self.algorithm)
        others = [rows for name, rows in self.sequence_rounds.items()
                  if name in self.per_layer_algorithms()]
        if not whole or not others:
            return []
        ratios = []
        for r, row in enumerate(whole):
            if any(s is None for s in row):
                return []          # the algorithm cannot run the network
            fastest = [min((rows[r][i] for rows in others
                            if rows[r][i] is not None), default=None)
                       for i in range(len(row))]
            if None in fastest:
                continue
            ratios.append(sum(row) / sum(fastest))
        return ratios

    def per_layer_algorithms(self):
        """The algorithms timed per layer (not the network's own)."""
        return {a for times in self.per_layer.values() for a in times}

    def by_kind(self, peer="torch"):
        """{kind: (calls, our seconds, peer's seconds)}: per kind of layer
        (:func:`layer_kind`), the sum over its calls of each call's median
        inside the sequence, for ``algorithm`` and ``peer``, in forward
        order of first appearance; {} when either did not run every call.
        """
        ours = self.sequence_rounds.get(self.algorithm)
        theirs = self.sequence_rounds.get(peer)
        if not ours or not theirs or not self.call_kinds:
            return {}
        kinds = {}
        for i, kind in enumerate(self.call_kinds):
            o = [row[i] for row in ours if row[i] is not None]
            t = [row[i] for row in theirs if row[i] is not None]
            if len(o) < len(ours) or len(t) < len(theirs):
                return {}
            calls, o_sum, t_sum = kinds.get(kind, (0, 0.0, 0.0))
            kinds[kind] = (calls + 1, o_sum + statistics.median(o),
                           t_sum + statistics.median(t))
        return kinds

    def call_medians(self, name):
        """Per call of the sequence, in forward order: the median of
        ``name``'s seconds inside the sequence over the rounds of the
        per-layer timing (None where it did not run in every round)."""
        rows = self.sequence_rounds.get(name) or []
        if not rows:
            return []
        return [None if any(row[i] is None for row in rows)
                else statistics.median(row[i] for row in rows)
                for i in range(len(rows[0]))]


def layer_kind(case):
    """``"3x3/2"``: a convolution's kernel size and stride (``"1x1/1"``,
    ``"7x7/2"``; the stride of the first axis when they differ)."""
    kh, kw = case.w_shape[2:]
    stride = case.stride if isinstance(case.stride, int) else case.stride[0]
    return f"{kh}x{kw}/{stride}"


def compare_network(name, batch=1, rounds=5, algorithm="auto",
                    algorithms=("direct", "im2col", "winograd", "fft"),
                    dtype="float32", settings=tuple(SETTINGS), per_layer=True,
                    progress=None, between="none", keep_freed_memory=True):
    """Time network ``name`` through ``kernels`` and torch (see module doc).

    ``progress(text)`` is called before each step.  ``keep_freed_memory``:
    every worker keeps glibc malloc's freed memory (see module doc).
    """
    every = workloads.layer_cases(workloads.NETWORKS[name], batch)
    distinct = workloads.conv_layers(name, batch)     # for the count only
    result = NetworkComparison(name, batch, algorithm, len(every),
                               len(distinct), rounds, dtype, between=between,
                               keep_freed_memory=keep_freed_memory)
    settings = list(settings)
    if settings:
        if progress:
            progress(f"{name} batch {batch}: {', '.join(settings)}, "
                     f"interleaved")
        measured = settings_times(
            [algorithm, "torch"], every, rounds,
            [dict(isolated=_SETTING_OPTIONS[s][0],
                  import_order=_SETTING_OPTIONS[s][1]) for s in settings],
            sequence=True, dtype=dtype, between=between,
            keep_freed_memory=keep_freed_memory)
        for setting, times in zip(settings, measured):
            result.times[setting] = times.times
            result.status[setting] = times.status
    if per_layer:
        if progress:
            progress(f"{name} batch {batch}: every algorithm per layer")
        (result.per_layer, result.counts,
         result.sequence_rounds) = _per_layer(every, algorithms, rounds,
                                              dtype, whole=algorithm,
                                              peer="torch", between=between,
                                              keep_freed_memory=keep_freed_memory)
        result.call_kinds = [layer_kind(c) for c in every]
    return result


def _per_layer(every, algorithms, rounds, dtype, whole=None, peer=None,
               between="none", keep_freed_memory=True):
    """({label: {algorithm: median s}}, {label: 1}, {name: rows}): every
    algorithm on every convolution of the network (``every``, in forward
    order), each call timed inside a run of the whole sequence with that
    algorithm (a layer it cannot run is skipped), each algorithm in its
    own worker (kernels only), the workers alternated in seeded orders,
    one sequence each per round; ``whole`` (the network's own algorithm,
    e.g. "auto") runs in the same alternation, for
    :meth:`NetworkComparison.whole_over_best`; so does ``peer`` ("torch",
    in a worker that imports only it), for :meth:`NetworkComparison.by_kind`.
    ``rows``: per name, one row per round of each call's seconds (None:
    not run).

    Timing each distinct layer on its own, call by call with a pipe round
    trip between calls (stop 26 and before), made every call wake the
    sleeping thread pool and start from cold caches, which a network
    does not: on the Zen 3 VM ResNet-50's per-layer best summed to 156 ms
    that way, against 88-111 ms for the whole network through ``auto``.
    Run on every layer it can run, Winograd's transformed filters would
    evict one another from the weight cache (32 entries, 256 MiB), and
    FFT's spectra would evict Winograd's in a shared worker (ResNet-50's
    3x3 layers at 14^2 and 7^2 took 24-60 ms that run in 2.4-5.6 ms when
    cached), which an ``auto`` that used each algorithm only where it is
    fastest would not see; so each worker's cache holds
    ``PER_LAYER_WEIGHT_CACHE``, and the per-layer best assumes every
    filter's transform stays cached."""
    names = list(algorithms) + ([whole] if whole and whole not in algorithms
                                else []) + ([peer] if peer else [])
    rows = {}
    workers = {}
    try:
        for a in names:
            workers[a] = Worker([a], every, dtype=dtype, between=between,
                                keep_freed_memory=keep_freed_memory,
                                weight_cache=(None if a == peer
                                              else PER_LAYER_WEIGHT_CACHE))
        ready = [a for a, w in workers.items() if w.status[a] is None]
        for r in range(rounds):
            for a in repeat_order(ready, r):
                (row,) = workers[a].time(a, None, 1, per_case=True)
                rows.setdefault(a, []).append(row)
    finally:
        for w in workers.values():
            w.close()
    medians = {}
    for i, case in enumerate(every):
        medians[case.label] = {
            a: statistics.median(s) for a in algorithms
            if (s := [row[i] for row in rows.get(a, []) if row[i] is not None])}
    return medians, {c.label: 1 for c in every}, rows


def _span(values, scale=1.0, spec=".3g"):
    if not values:
        return "-"
    med = statistics.median(values) * scale
    return (f"{format(med, spec)} ({format(min(values) * scale, spec)}-"
            f"{format(max(values) * scale, spec)})")


def _aligned(rows, indent=""):
    """Lines of ``rows`` (tuples of cells, the header first), each column
    padded to its widest cell."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(str(v).ljust(w) for v, w in zip(r, widths))
            for r in rows]


def format_comparison(c):
    """Plain-text table of a :class:`NetworkComparison`."""
    lines = [f"# {c.network}, batch {c.batch}, {c.dtype}: {c.layers} conv "
             f"layers ({c.distinct} distinct) called in forward order; "
             f"{c.rounds} rounds alternating kernels (algorithm="
             f"{c.algorithm!r}) and torch; median (min-max over rounds)"
             + ("; each call followed by a NumPy ReLU on its output"
                if c.between == "relu" else "")
             + ("" if c.keep_freed_memory
                else "; glibc malloc's defaults (freed memory not kept)")]
    header = ("setting", f"kernels ms", "torch ms", "torch / kernels")
    rows = []
    for setting, times in c.times.items():
        ours = times.get(c.algorithm, [])
        theirs = times.get("torch", [])
        rows.append((setting, _span(ours, 1e3), _span(theirs, 1e3),
                     _span(c.ratios(setting), spec=".2f")))
    lines += _aligned([header] + rows)
    for setting, status in c.status.items():
        for name, reason in status.items():
            if reason is not None:
                lines.append(f"{name} did not run ({setting}): {reason}")
    lines.append("torch / kernels above 1: kernels is faster; the ratio is "
                 "taken per round (same round, adjacent calls)")
    if c.per_layer:
        best = c.best_sum()
        lines.append(f"sum over the network of each call's fastest algorithm, "
                     f"timed inside the sequence (each algorithm in its own "
                     f"worker, kernels only): {best * 1e3:.3g} ms")
        whole = c.sequence_rounds.get(c.algorithm) or []
        totals = [sum(row) for row in whole if None not in row]
        if totals:
            lines.append(f"  {c.algorithm} whole network in the same rounds: "
                         f"{_span(totals, 1e3)} ms; / per-layer best, per "
                         f"round: {_span(c.whole_over_best(), spec='.2f')}")
        kinds = c.by_kind()
        if kinds:
            lines.append(f"by kind of layer, each call's median inside the "
                         f"sequence summed over the kind's calls ({c.algorithm} "
                         f"and torch each in its own worker, same rounds):")
            table = [("kind", "calls", f"{c.algorithm} ms", "torch ms",
                      f"torch / {c.algorithm}")]
            for kind, (calls, o, t) in kinds.items():
                table.append((kind, str(calls), f"{o * 1e3:.3g}",
                              f"{t * 1e3:.3g}", f"{t / o:.2f}"))
            o_all = sum(o for _, o, _ in kinds.values())
            t_all = sum(t for _, _, t in kinds.values())
            table.append(("all", str(len(c.call_kinds)), f"{o_all * 1e3:.3g}",
                          f"{t_all * 1e3:.3g}", f"{t_all / o_all:.2f}"))
            lines += _aligned(table, indent="  ")
        lines.append("per call inside the sequence (median ms of each "
                     "algorithm; * fastest; then the network's own "
                     f"{c.algorithm} and torch, and torch / {c.algorithm}):")
        ours = c.call_medians(c.algorithm)
        theirs = c.call_medians("torch")
        for i, (label, times) in enumerate(c.per_layer.items()):
            if not times:
                continue
            fastest = min(times, key=times.get)
            cells = ", ".join(f"{a} {t * 1e3:.3g}{'*' if a == fastest else ''}"
                              for a, t in times.items())
            if i < min(len(ours), len(theirs)) and ours[i] and theirs[i]:
                cells += (f" | {c.algorithm} {ours[i] * 1e3:.3g}, torch "
                          f"{theirs[i] * 1e3:.3g} ({theirs[i] / ours[i]:.2f})")
            lines.append(f"  {label}: {cells}")
    return "\n".join(lines)
