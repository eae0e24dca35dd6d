"""Figures of ``convbench report``: matplotlib, Agg, no pyplot state.

Every figure is a fresh :class:`matplotlib.figure.Figure` drawn on its own
Agg canvas and saved as PNG, so nothing leaks from one figure into the next
(no pyplot current figure, no rcParams changes).  One colour and one marker
per contender, the same in every figure (:func:`color_of`,
:func:`marker_of`); peers (SciPy, torch) are drawn dashed or hatched; time
axes are logarithmic; every title ends with the workload, dtype, repeats
and date line that :func:`subtitle` makes.

The functions take plain data (:class:`Series` for one x axis: a kernel
size sweep or the layers of a network) and a path, and return the path.
"""

from __future__ import annotations

import math
import zlib

__all__ = ["COLORS", "MARKERS", "color_of", "marker_of", "is_peer",
           "Series", "subtitle", "plot_time", "plot_layer_bars",
           "plot_gflops", "plot_error", "plot_asv"]

#: One colour per contender, kept across every figure of a report
#: (matplotlib's tab10 order: the colours most readers know).
COLORS = {
    "direct": "#1f77b4",        # blue
    "im2col": "#ff7f0e",        # orange
    "winograd": "#2ca02c",      # green
    "fft": "#d62728",           # red
    "auto": "#111111",          # black
    "scipy-direct": "#9467bd",  # purple
    "scipy-fft": "#8c564b",     # brown
    "torch": "#e377c2",         # pink
    "scipy-oa": "#7f7f7f",      # grey
    "kernels": "#17becf",       # cyan: pooling's one contender
}

#: One marker per contender (the figures stay readable in grey print).
MARKERS = {"direct": "o", "im2col": "s", "winograd": "^", "fft": "D",
           "auto": "*", "scipy-direct": "v", "scipy-fft": "<", "torch": "P",
           "scipy-oa": ">", "kernels": "h"}

_EXTRA_COLORS = ("#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a",
                 "#ff9896", "#c5b0d5", "#c49c94")

PEER_NAMES = ("scipy-direct", "scipy-fft", "scipy-oa", "torch")


def color_of(name):
    """The colour of contender ``name``: fixed for the known contenders, a
    hash of the name (the same in every figure and run) for others."""
    if name in COLORS:
        return COLORS[name]
    return _EXTRA_COLORS[zlib.crc32(name.encode()) % len(_EXTRA_COLORS)]


def marker_of(name):
    return MARKERS.get(name, "x")


def is_peer(name):
    return name in PEER_NAMES


def _linestyle(name):
    return "--" if is_peer(name) else "-"


class Series:
    """Values of every contender along one x axis.

    Parameters
    ----------
    x : list
        Kernel sizes (numbers) or layer labels (str).
    values : dict
        contender -> list of float or None (missing), one per x.
    """

    def __init__(self, x, values):
        self.x = list(x)
        self.values = {k: list(v) for k, v in values.items()}

    @property
    def categorical(self):
        return any(isinstance(v, str) for v in self.x)

    def positions(self):
        return list(range(len(self.x))) if self.categorical else self.x


def subtitle(workload, dtype, repeats, date):
    """The line every figure title ends with."""
    return f"{workload} · {dtype} · {repeats} repeats (median) · {date}"


# --------------------------------------------------------------------------
# Figure plumbing
# --------------------------------------------------------------------------

def _figure(width=8.0, height=4.8):
    # The Agg canvas directly: no pyplot, no backend switch, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    fig.savefig(path, dpi=110)
    return path


def _plain_log_axis(axis):
    """Log axis labelled 0.5, 1, 2, 10 ... instead of 10^x."""
    from matplotlib import ticker

    def fmt(value, _pos):
        if value <= 0:
            return ""
        if value >= 1:
            return f"{value:,.0f}" if value >= 1e4 else f"{value:.4g}"
        return f"{value:.3g}"
    axis.set_major_formatter(ticker.FuncFormatter(fmt))
    axis.set_minor_formatter(ticker.FuncFormatter(
        lambda v, p: fmt(v, p) if _label_minor(axis, v) else ""))


def _label_minor(axis, value):
    """Label minor ticks 2 and 5 when the axis spans under two decades,
    2, 3, 5 and 7 under one (else a short axis has one label or none)."""
    lo, hi = axis.get_view_interval()
    if lo <= 0 or hi / lo > 100:
        return False
    labelled = (2.0, 3.0, 5.0, 7.0) if hi / lo <= 10 else (2.0, 5.0)
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return round(mantissa, 6) in labelled


def _legend_outside(ax, handles=None, labels=None, title=None):
    kw = {} if handles is None else {"handles": handles, "labels": labels}
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              fontsize="small", title=title, title_fontsize="small",
              frameon=False, **kw)


def _x_axis(ax, series, xlabel):
    if series.categorical:
        ax.set_xticks(range(len(series.x)))
        ax.set_xticklabels(series.x, rotation=30 if len(series.x) > 4 else 0,
                           ha="right" if len(series.x) > 4 else "center",
                           fontsize="small")
        ax.set_xlim(-0.6, len(series.x) - 0.4)
    else:
        ax.set_xticks(series.x)
        ax.set_xticklabels([str(v) for v in series.x])
    ax.set_xlabel(xlabel)


def _points(series, name, scale=1.0):
    xs, ys = [], []
    for x, v in zip(series.positions(), series.values[name]):
        if v is not None and math.isfinite(v) and v > 0:
            xs.append(x)
            ys.append(v * scale)
    return xs, ys


def _draw_lines(ax, series, scale=1.0, lines=True):
    """One line (or marker set) per contender; returns what was drawn.

    Peers and auto have hollow markers.  On a categorical axis (layers)
    the markers are drawn without lines and dodged sideways, one slot per
    contender, so that equal values do not hide each other.
    """
    names = [n for n in series.values if _points(series, n)[0]]
    dodge = 0.7 / max(1, len(names)) if series.categorical else 0.0
    for j, name in enumerate(names):
        xs, ys = _points(series, name, scale)
        xs = [x + (j - (len(names) - 1) / 2) * dodge for x in xs]
        style = _linestyle(name) if lines and name != "auto" else "none"
        hollow = name == "auto" or is_peer(name)
        ax.plot(xs, ys, color=color_of(name), marker=marker_of(name),
                linestyle=style, linewidth=1.6,
                markersize=9 if name == "auto" else 6,
                markerfacecolor="none" if hollow else color_of(name),
                markeredgewidth=1.3, label=name,
                zorder=3 if name == "auto" else 2)
    return names


def _legend_title(series):
    if series.categorical:
        return "filled: kernels\nhollow: peers"
    return "solid: kernels\ndashed: peers"


# --------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------

def plot_time(path, series, crossovers, title, sub, xlabel="kernel size k "
              "(k x k filter)"):
    """Time per call vs kernel size, log time axis, crossovers marked.

    ``crossovers``: list of (slower, faster, size); each size gets a
    vertical dotted line and one label listing what overtakes what there,
    and the overtaking curve a ring at that size.  "auto" (if present) is
    drawn as markers only.
    """
    fig = _figure()
    ax = fig.subplots()
    _draw_lines(ax, series, scale=1e3)
    ax.set_yscale("log")
    if crossovers:
        # Head room: the crossover labels sit above the curves.
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 6)
    _plain_log_axis(ax.yaxis)
    ax.set_ylabel("time per call (ms, log scale)")
    _x_axis(ax, series, xlabel)
    by_size = {}
    for slower, faster, size in crossovers:
        by_size.setdefault(size, []).append((slower, faster))
    pos = dict(zip(series.x, series.positions()))
    for size, pairs in sorted(by_size.items()):
        if size not in pos:
            continue
        x = pos[size]
        ax.axvline(x, color="0.35", linestyle=":", linewidth=1.2, zorder=1)
        text = "\n".join(f"{f} < {s}" for s, f in pairs)
        ax.annotate(f"k={size}:\n{text}", xy=(x, 1.0),
                    xycoords=("data", "axes fraction"), xytext=(3, -3),
                    textcoords="offset points", ha="left", va="top",
                    fontsize="x-small", color="0.15",
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.6",
                              alpha=0.85))
        for _, faster in pairs:
            t = series.values.get(faster, [None] * len(series.x))[
                series.x.index(size)]
            if t:
                ax.plot([x], [t * 1e3], marker="o", markersize=13,
                        markerfacecolor="none", markeredgecolor=color_of(faster),
                        markeredgewidth=1.5, linestyle="none", zorder=4)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="y", alpha=0.12)
    ax.set_title(f"{title}\n{sub}", fontsize="medium")
    handles, labels = ax.get_legend_handles_labels()
    if by_size:
        from matplotlib.lines import Line2D
        handles.append(Line2D([], [], color="0.35", linestyle=":"))
        labels.append("crossover (B < A:\nB faster from k on)")
    _legend_outside(ax, handles, labels, title=_legend_title(series))
    return _save(fig, path)


def plot_layer_bars(path, series, picks, title, sub):
    """Per-layer grouped bars of time relative to the fastest peer.

    ``series.values`` holds times in seconds; each layer's bars are divided
    by the fastest peer's time on that layer (or, where no peer ran, by the
    fastest contender's, and the layer's label gets a ``*``).  Peers are
    hatched.  ``picks`` maps layer -> the algorithm "auto" chose: a black
    star sits on that algorithm's bar.
    """
    from matplotlib.transforms import offset_copy
    names = [k for k, v in series.values.items()
             if any(t is not None and t > 0 for t in v)]
    n = len(series.x)
    fig = _figure(width=min(22.0, max(8.0, 1.25 * n + 3)), height=5.0)
    ax = fig.subplots()
    width = 0.84 / max(1, len(names))
    above = offset_copy(ax.transData, fig=fig, y=7, units="points")
    below = offset_copy(ax.transData, fig=fig, y=-7, units="points")
    labels, ratios = [], []
    for i, layer in enumerate(series.x):
        times = {k: v[i] for k, v in series.values.items()
                 if v[i] is not None and v[i] > 0}
        peers = [t for k, t in times.items() if is_peer(k)]
        base = min(peers) if peers else (min(times.values()) if times else None)
        labels.append(layer if peers or not times else f"{layer} *")
        for j, name in enumerate(names):
            t = times.get(name)
            if t is None or base is None:
                continue
            x = i - 0.42 + (j + 0.5) * width
            # Bars grow from 1 (the fastest peer): down = faster.
            ax.bar(x, t / base - 1.0, width=width * 0.92, bottom=1.0,
                   color=color_of(name), edgecolor="white" if not is_peer(name)
                   else color_of(name),
                   hatch="///" if is_peer(name) else None,
                   fill=not is_peer(name), linewidth=0.8, zorder=2, gid=name)
            # A cap at the bar's end: a bar at 1 (the fastest peer itself)
            # has no height but still shows.
            ax.plot([x - width * 0.46, x + width * 0.46], [t / base] * 2,
                    color=color_of(name), linewidth=2.5, solid_capstyle="butt",
                    zorder=3)
            ratios.append(t / base)
            if picks.get(layer) == name:
                ax.plot([x], [t / base], marker="*", color="black",
                        markersize=11, linestyle="none", zorder=4,
                        transform=above if t >= base else below)
    ax.set_yscale("log")
    if ratios:
        ax.set_ylim(min(min(ratios), 1.0) / 1.6, max(max(ratios), 1.0) * 1.6)
    _plain_log_axis(ax.yaxis)
    ax.axhline(1.0, color="0.2", linewidth=1.0, linestyle="-", zorder=1)
    ax.set_ylabel("time / fastest peer's time (log)\n< 1: faster than every peer")
    ax.set_xticks(range(n))
    long = max((len(s) for s in labels), default=0) > 10 or n > 6
    ax.set_xticklabels(labels, rotation=25 if long else 0,
                       ha="right" if long else "center", fontsize="small")
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("layer (* no peer ran: relative to the fastest contender)"
                  if any(label.endswith(" *") for label in labels) else "layer")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    handles = [Patch(facecolor=color_of(k) if not is_peer(k) else "none",
                     edgecolor=color_of(k), hatch="///" if is_peer(k) else None,
                     label=k) for k in names]
    handles.append(Line2D([], [], marker="*", color="black", linestyle="none",
                          markersize=11, label="auto's pick"))
    _legend_outside(ax, handles, [h.get_label() for h in handles],
                    title="solid: kernels\nhatched: peers")
    ax.set_title(f"{title}\n{sub}", fontsize="medium")
    return _save(fig, path)


# --------------------------------------------------------------------------
# Rates and errors
# --------------------------------------------------------------------------

def plot_gflops(path, series, sgemm, title, sub, xlabel):
    """Achieved GFLOP/s (direct-convolution FLOPs / time) per contender,
    log axis, with the machine's measured sgemm rate as a reference line."""
    fig = _figure()
    ax = fig.subplots()
    _draw_lines(ax, series, lines=not series.categorical)
    legend_title = _legend_title(series)
    if sgemm:
        ax.axhline(sgemm, color="black", linestyle=(0, (1, 1)), linewidth=1.4,
                   label=f"sgemm 1024³\n{sgemm:.0f} GFLOP/s\n(this machine)")
    ax.set_yscale("log")
    _plain_log_axis(ax.yaxis)
    ax.set_ylabel("GFLOP/s (2·N·K·C·kH·kW·Ho·Wo / time, log)")
    _x_axis(ax, series, xlabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(f"{title}\n{sub}", fontsize="medium")
    _legend_outside(ax, title=legend_title)
    return _save(fig, path)


def plot_error(path, series, constants, title, sub, xlabel, floor=1e-2):
    """Error in bound units per algorithm, with each algorithm's bound c as
    a dashed line in its colour (log axis; zeros drawn at ``floor``)."""
    fig = _figure()
    ax = fig.subplots()
    floored = Series(series.x, {k: [None if v is None else max(v, floor)
                                    for v in vals]
                                for k, vals in series.values.items()})
    _draw_lines(ax, floored, lines=not series.categorical)
    by_c = {}
    for name, c in constants.items():
        if c:
            by_c.setdefault(c, []).append(name)
    for c, names in sorted(by_c.items(), reverse=True):
        for i, name in enumerate(names):
            # Equal constants: alternate dash phases so both colours show.
            ax.axhline(c, color=color_of(name), linestyle=(4 * i, (4, 4)),
                       linewidth=1.4, label=f"c = {c:g} ({name})")
    ax.set_yscale("log")
    if by_c:
        low, high = ax.get_ylim()
        ax.set_ylim(low, max(high, 2.5 * max(by_c)))
    _plain_log_axis(ax.yaxis)
    ax.set_ylabel("max error / (u·(|x|⋆|w|)) (bound units, log)")
    _x_axis(ax, series, xlabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(f"{title}\n{sub}", fontsize="medium")
    _legend_outside(ax, title="markers: measured\ndashed: bound c of\n"
                              "the same colour")
    return _save(fig, path)


# --------------------------------------------------------------------------
# asv history
# --------------------------------------------------------------------------

def plot_asv(path, commits, lines, title, ylabel, log, scale=1.0,
             integer=False):
    """Values of one asv benchmark along commits.

    ``commits``: list of x tick labels (short hash and date), oldest first;
    ``lines``: label -> list of float or None, one per commit, multiplied
    by ``scale`` (1e3: seconds to ms); ``integer``: whole-number y ticks
    (kernel sizes).
    """
    from matplotlib import ticker
    fig = _figure(width=max(8.0, 0.55 * len(commits) + 4))
    ax = fig.subplots()
    xs = list(range(len(commits)))
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
    markers = "osD^v<>PXh"
    for i, (label, values) in enumerate(lines.items()):
        pts = [(x, v) for x, v in zip(xs, values)
               if v is not None and math.isfinite(v) and (v > 0 or not log)]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] * scale for p in pts],
                color=palette[i % len(palette)],
                marker=markers[(i // len(palette)) % len(markers)],
                linewidth=1.4, markersize=5, label=label)
    if log:
        ax.set_yscale("log")
        _plain_log_axis(ax.yaxis)
    elif integer:
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_xticks(xs)
    ax.set_xticklabels(commits, rotation=30 if len(commits) > 3 else 0,
                       ha="right" if len(commits) > 3 else "center",
                       fontsize="small")
    ax.set_xlim(-0.5, len(commits) - 0.5)
    ax.set_xlabel("commit (oldest first)")
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title, fontsize="medium")
    if ax.get_legend_handles_labels()[0]:
        _legend_outside(ax, title="parameters")
    return _save(fig, path)
