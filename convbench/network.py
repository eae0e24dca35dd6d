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

It also times every algorithm on each distinct layer (one process,
kernels only) and sums, over the network, the fastest algorithm's median
per layer: the "per-layer best" a perfect ``auto`` would approach.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from . import workloads
from .isolated import Worker, worker_times
from .timing import repeat_order

__all__ = ["NetworkComparison", "compare_network", "format_comparison",
           "SETTINGS"]

#: setting -> (isolated, import order)
SETTINGS = {
    "isolated": (True, ()),
    "kernels-first": (False, ("kernels", "torch")),
    "torch-first": (False, ("torch", "kernels")),
}


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
    counts: dict = field(default_factory=dict)     # label -> repeats in net

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


def _count(label):
    """Layers a distinct case stands for ("layer1.0.conv2 (x6)" -> 6)."""
    if label.endswith(")") and " (x" in label:
        return int(label.rsplit(" (x", 1)[1][:-1])
    return 1


def compare_network(name, batch=1, rounds=5, algorithm="auto",
                    algorithms=("direct", "im2col", "winograd", "fft"),
                    dtype="float32", settings=tuple(SETTINGS), per_layer=True,
                    progress=None):
    """Time network ``name`` through ``kernels`` and torch (see module doc).

    ``progress(text)`` is called before each step.
    """
    every = workloads.layer_cases(workloads.NETWORKS[name], batch)
    distinct = workloads.conv_layers(name, batch)
    result = NetworkComparison(name, batch, algorithm, len(every),
                               len(distinct), rounds, dtype)
    for setting in settings:
        isolated, order = SETTINGS[setting]
        if progress:
            progress(f"{name} batch {batch}: {setting}")
        measured = worker_times([algorithm, "torch"], every, rounds,
                                isolated=isolated, sequence=True,
                                import_order=order, dtype=dtype)
        result.times[setting] = measured.times
        result.status[setting] = measured.status
    if per_layer:
        if progress:
            progress(f"{name} batch {batch}: every algorithm per layer")
        result.per_layer, result.counts = _per_layer(distinct, algorithms,
                                                     rounds, dtype)
    return result


def _per_layer(distinct, algorithms, rounds, dtype):
    """({label: {algorithm: median s}}, {label: layers it stands for}):
    every algorithm on every distinct layer, in one worker (kernels only),
    alternated in seeded orders.  All rounds of a layer run before the
    next layer: alternating layers round by round made every Winograd
    and FFT call recompute its filter transform (more layers x algorithms
    than the weight cache's 32 entries, evicted in turn: ResNet-50's
    256@14^2 at batch 1 took 9.5 ms instead of 1.8), which no network
    does, each of its layers having its own filters."""
    times = {c.label: {} for c in distinct}
    with Worker(algorithms, distinct, dtype=dtype) as worker:
        ready = [a for a, reason in worker.status.items() if reason is None]
        for index, case in enumerate(distinct):
            for r in range(rounds):
                for a in repeat_order(ready, r, index):
                    times[case.label].setdefault(a, []).extend(
                        worker.time(a, index))
    medians = {label: {a: statistics.median(by_alg[a]) for a in algorithms
                       if by_alg.get(a)}
               for label, by_alg in times.items()}
    return medians, {c.label: _count(c.label) for c in distinct}


def _span(values, scale=1.0, spec=".3g"):
    if not values:
        return "-"
    med = statistics.median(values) * scale
    return (f"{format(med, spec)} ({format(min(values) * scale, spec)}-"
            f"{format(max(values) * scale, spec)})")


def format_comparison(c):
    """Plain-text table of a :class:`NetworkComparison`."""
    lines = [f"# {c.network}, batch {c.batch}, {c.dtype}: {c.layers} conv "
             f"layers ({c.distinct} distinct) called in forward order; "
             f"{c.rounds} rounds alternating kernels (algorithm="
             f"{c.algorithm!r}) and torch; median (min-max over rounds)"]
    header = ("setting", f"kernels ms", "torch ms", "torch / kernels")
    rows = []
    for setting, times in c.times.items():
        ours = times.get(c.algorithm, [])
        theirs = times.get("torch", [])
        rows.append((setting, _span(ours, 1e3), _span(theirs, 1e3),
                     _span(c.ratios(setting), spec=".2f")))
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(4)]
    for r in [header] + rows:
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    for setting, status in c.status.items():
        for name, reason in status.items():
            if reason is not None:
                lines.append(f"{name} did not run ({setting}): {reason}")
    lines.append("torch / kernels above 1: kernels is faster; the ratio is "
                 "taken per round (same round, adjacent calls)")
    if c.per_layer:
        best = c.best_sum()
        lines.append(f"sum over the network of each layer's fastest algorithm "
                     f"(one process, kernels only): {best * 1e3:.3g} ms")
        for setting, times in c.times.items():
            ours = times.get(c.algorithm)
            if ours and best > 0:
                lines.append(f"  {c.algorithm} whole network / per-layer best "
                             f"({setting}): "
                             f"{statistics.median(ours) / best:.2f}")
        lines.append("per layer (median ms of each algorithm; * fastest):")
        for label, times in c.per_layer.items():
            if not times:
                continue
            fastest = min(times, key=times.get)
            cells = ", ".join(f"{a} {t * 1e3:.3g}{'*' if a == fastest else ''}"
                              for a, t in times.items())
            lines.append(f"  {label}: {cells}")
    return "\n".join(lines)
