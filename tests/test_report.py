"""``convbench report``: files written, figures, errors, interrupts, asv.

The sweeps here are tiny (12x12 images, 1 repeat) and their clock is
replaced (``convbench.sweep.time_call``), so the tests check what the report
does with times, not the times; the figure tests use synthetic
measurements with known crossovers.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from convbench import cli, machine, plots, report, sweep

pytest.importorskip("matplotlib")

TINY = ["report", "--shape", "1,1,12,12,1", "--kernels", "3:7:2", "--quick",
        "--repeats", "1", "--no-progress"]


@pytest.fixture
def fast(monkeypatch):
    """Constant clock and machine rates: no timing, no 1024^3 sgemm."""
    monkeypatch.setattr(sweep, "time_call", lambda fn: 1e-3)
    monkeypatch.setattr(machine, "sgemm_gflops", lambda: 50.0)
    monkeypatch.setattr(machine, "copy_bandwidth_gbs", lambda: 10.0)


def _measurement(case, name, median, w=3, x=(1, 1, 16, 16), k_out=1,
                 chose=None, status="ok", error=1.0, constant=None):
    m = sweep.Measurement(case, x, (k_out, x[1], w, w), 1, w // 2, 1, name,
                          plots.is_peer(name), status)
    if status == "ok":
        m.times_s = [median]
        m.median_s = median
        m.gflops = 2.0 * w * w * 256 / median / 1e9
        m.error_units = error
    m.error_constant = constant if constant is not None else (
        None if plots.is_peer(name) or name == "auto" else 100.0)
    m.chose = chose
    return m


def _synthetic_kernel_sweep():
    """direct grows with k, fft stays flat: fft overtakes direct at k=7."""
    ms = []
    for k in (3, 5, 7, 9, 11):
        ms.append(_measurement(f"k={k}", "direct", 1e-4 * k * k, w=k))
        ms.append(_measurement(f"k={k}", "fft", 4e-3, w=k, constant=40.0))
        ms.append(_measurement(f"k={k}", "scipy-fft", 6e-3, w=k))
        ms.append(_measurement(f"k={k}", "auto", min(1e-4 * k * k, 4e-3), w=k,
                               chose="direct" if k < 7 else "fft"))
    return ms


def _synthetic_layer_sweep():
    ms = []
    for i, (c, hw) in enumerate(((8, 16), (16, 8))):
        label = f"{c}@{hw}x{hw}"
        x = (2, c, hw, hw)
        ms.append(_measurement(label, "direct", 1e-3, x=x, k_out=c))
        ms.append(_measurement(label, "im2col", 2e-3, x=x, k_out=c))
        ms.append(_measurement(label, "torch", 1.5e-3, x=x, k_out=c))
        # auto picks im2col on the second layer: 2x slower than direct.
        ms.append(_measurement(label, "auto", 1e-3 if i == 0 else 2e-3, x=x,
                               k_out=c, chose="direct" if i == 0 else "im2col"))
    return ms


def _data(name, measurements, interrupted=False):
    result = sweep.SweepResult({"dtype": "float32", "repeats": 1}, [],
                               measurements, interrupted)
    d = result.to_dict()
    d["report"] = {"workload": name, "description": "synthetic",
                   "date": "2026-01-01 00:00"}
    return report.sweep_data(d)


# --------------------------------------------------------------------------
# The whole command on a tiny sweep
# --------------------------------------------------------------------------

def test_tiny_report_writes_markdown_html_figures_and_json(tmp_path, fast,
                                                           capsys):
    out = tmp_path / "rep"
    assert cli.main(TINY + ["--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    pngs = sorted(out.glob("*.png"))
    # One kernel series: time, GFLOP/s and error figures.
    assert [p.name.rsplit("-", 1)[1] for p in pngs] == [
        "error.png", "gflops.png", "time.png"]
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({p.name})" in md
    saved = list(out.glob("sweep-*.json"))
    assert len(saved) == 1
    data = json.loads(saved[0].read_text())
    assert data["schema"] == report.SCHEMA and not data["interrupted"]
    assert data["machine"]["sgemm_1024_gflops"] == 50.0
    assert data["machine"]["copy_gbs"] == 10.0
    assert {r["contender"] for r in data["results"]} >= {"auto", "direct"}
    assert "float32 · 1 repeats (median)" in md
    assert re.search(r"copy 64 MiB\s+10.0 GB/s", md)
    assert "by `convbench report --quick --out " in md
    assert "Interrupted" not in md
    err = capsys.readouterr().err
    assert "step 1/3: machine" in err and "step 3/3: writing" in err


def test_isolated_report_shows_both_times(tmp_path, fast, monkeypatch):
    """--isolated reaches the sweep: the saved JSON holds each contender's
    isolated times and the report's tables show them."""
    seen = {}

    def fake_worker_times(names, cases, rounds, **options):
        from convbench.isolated import WorkerTimes
        seen["options"] = options
        return WorkerTimes({n: [2e-3] * rounds for n in names},
                           {n: None for n in names})

    import convbench.isolated
    monkeypatch.setattr(convbench.isolated, "worker_times", fake_worker_times)
    out = tmp_path / "rep"
    assert cli.main(TINY + ["--out", str(out), "--isolated"]) == 0
    assert seen["options"]["isolated"] is True
    data = json.loads(next(out.glob("sweep-*.json")).read_text())
    ok = [r for r in data["results"] if r["status"] == "ok"]
    assert ok and all(r["isolated_times_s"] == [2e-3] for r in ok)
    assert "isolated ms" in (out / "report.md").read_text()


def test_html_is_self_contained(tmp_path, fast):
    out = tmp_path / "rep"
    assert cli.main(TINY + ["--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    sources = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page)
    assert len(sources) == len(list(out.glob("*.png"))) == 3
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and "<link" not in page
    assert "url(" not in page


def test_from_json_redraws_the_same_tables(tmp_path, fast):
    first = tmp_path / "a"
    assert cli.main(TINY + ["--out", str(first)]) == 0
    saved = next(first.glob("sweep-*.json"))
    second = tmp_path / "b"
    assert cli.main(["report", "--from-json", str(saved), "--out",
                     str(second)]) == 0

    def tables(path):
        return [line for line in path.read_text().splitlines()
                if line.startswith("|")]
    assert tables(first / "report.md") == tables(second / "report.md")
    assert tables(first / "report.md")        # there is a table
    assert (second / saved.name).exists()     # the data travel with it
    assert len(list(second.glob("*.png"))) == 3


# --------------------------------------------------------------------------
# Errors: exit code 2 naming the option, before anything is measured
# --------------------------------------------------------------------------

def _no_measuring(*args, **kwargs):
    raise AssertionError("measured despite a bad argument")


def _bad_json_files(tmp_path):
    (tmp_path / "other.json").write_text(json.dumps({"schema": "convbench.sweep/9",
                                                     "results": []}))
    (tmp_path / "plain.json").write_text(json.dumps({"results": []}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "afile").write_text("")


@pytest.mark.parametrize("argv, message", [
    (["report", "nosuchworkload"],
     r"argument WORKLOAD: unknown workload 'nosuchworkload'; choose from "
     r".*resnet50-3x3"),
    (["report", "--shape", "1,1,16"], r"argument --shape: shape '1,1,16' must "
                                      r"be N,C,H,W,K"),
    (["report", "--out", "{tmp}/afile/sub"],
     r"argument --out: cannot create output directory '.*afile/sub'"),
    (["report", "--from-json", "{tmp}/other.json"],
     r"argument --from-json: .*other.json: schema 'convbench.sweep/9' is not "
     r"supported; this convbench reads 'convbench.sweep/1'"),
    (["report", "--from-json", "{tmp}/plain.json"],
     r"argument --from-json: .*plain.json: no 'schema' field"),
    (["report", "--from-json", "{tmp}/broken.json"],
     r"argument --from-json: .*broken.json: not JSON"),
    (["report", "--from-json", "{tmp}/missing.json"],
     r"argument --from-json: .*missing.json: no such file"),
    (["report", "lenet5", "--from-json", "{tmp}/plain.json"],
     r"argument --from-json: .*cannot be combined"),
    (["report", "--from-asv", "{tmp}/afile"],
     r"argument --from-asv: .*afile: not a directory"),
    (["report", "--from-asv", "{tmp}"], r"argument --from-asv: .*no asv results"),
    (["report", "--kernels", "3:5"], r"argument --kernels: only with --shape"),
])
def test_bad_arguments_are_usage_errors(argv, message, tmp_path, monkeypatch,
                                        capsys):
    _bad_json_files(tmp_path)
    monkeypatch.setattr(report, "measure", _no_measuring)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert re.search(message, capsys.readouterr().err), message


def test_unusable_cuda_backend_is_a_usage_error(tmp_path, monkeypatch, capsys):
    import os
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        pytest.skip("the CUDA simulator makes the backend usable")
    try:
        from numba import cuda
        if cuda.is_available():
            pytest.skip("a GPU is usable here")
    except ImportError:
        pass
    monkeypatch.setattr(report, "measure", _no_measuring)
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", "--backend", "cuda", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "argument --backend: cuda is not usable here" in capsys.readouterr().err


# --------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------

def test_interrupt_writes_a_partial_report(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "sgemm_gflops", lambda: 50.0)
    monkeypatch.setattr(machine, "copy_bandwidth_gbs", lambda: 10.0)
    calls = []

    def interrupting_clock(fn):
        calls.append(fn)
        # The first case has 8 contenders x 1 repeat; stop in the second.
        if len(calls) == 10:
            raise KeyboardInterrupt
        return 1e-3
    monkeypatch.setattr(sweep, "time_call", interrupting_clock)
    out = tmp_path / "rep"
    assert cli.main(TINY + ["--out", str(out)]) == 130
    md = (out / "report.md").read_text()
    first = md.split("\n\n")[1]
    assert first.startswith("**Interrupted (Ctrl-C)")
    data = json.loads(next(out.glob("sweep-*.json")).read_text())
    assert data["interrupted"] is True
    cases = {r["case"] for r in data["results"]}
    assert "k=3" in cases and "k=7" not in cases
    assert "k=3" in md and (out / "report.html").exists()


# --------------------------------------------------------------------------
# Panels, tables, figures (synthetic measurements)
# --------------------------------------------------------------------------

def test_kernel_series_becomes_a_kernel_panel_with_its_crossover():
    data = _data("syn", _synthetic_kernel_sweep())
    [panel] = report.panels(data)
    assert panel.kind == "kernel" and panel.x == [3, 5, 7, 9, 11]
    pairs = {(c.slower, c.faster, c.size) for c in panel.crossovers}
    assert ("direct", "fft", 7) in pairs
    assert not any("auto" in (c.slower, c.faster) for c in panel.crossovers)


def test_few_sizes_or_mixed_shapes_become_layers():
    two_sizes = [m for m in _synthetic_kernel_sweep()
                 if m.case in ("k=3", "k=5")]
    assert report.panels(_data("two", two_sizes))[0].kind == "layers"
    [panel] = report.panels(_data("layers", _synthetic_layer_sweep()))
    assert panel.kind == "layers" and panel.labels == ["8@16x16", "16@8x8"]


def test_one_by_k_kernels_form_a_series():
    ms = []
    for k in (3, 15, 63):
        m = _measurement(f"k={k}", "direct", 1e-3, x=(1, 1, 1, 1000))
        m.w_shape = (1, 1, 1, k)
        ms.append(m)
    [panel] = report.panels(_data("1d", ms))
    assert panel.kind == "kernel" and panel.x == [3, 15, 63]
    assert "1 x k" in panel.xlabel


def test_layer_table_flags_auto_more_than_ten_percent_slower():
    [panel] = report.panels(_data("layers", _synthetic_layer_sweep()))
    header, rows, misses = report.layer_table(panel)
    assert misses == 1
    first, second = (dict(zip(header, r)) for r in rows)
    assert first["fastest algorithm"] == "direct"
    assert first["auto / fastest"] == "1.00"
    assert first["peer / fastest algorithm"] == "1.5x"
    assert second["auto → pick"] == "auto → im2col"
    assert second["auto / fastest"] == "**2.00**"


@pytest.fixture
def figures(monkeypatch):
    """Every figure the report draws, captured before it is saved."""
    drawn = []
    save = plots._save

    def keep(fig, path):
        drawn.append((path.name, fig))
        return save(fig, path)
    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def _contender_colors(fig):
    """contender -> [(colour, linestyle or None)] of its lines, its bars
    (``gid`` = contender) and its legend entries."""
    from matplotlib.colors import to_hex
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_label() in plots.COLORS:
                out.setdefault(line.get_label(), []).append(
                    (to_hex(line.get_color()), line.get_linestyle()))
        for bar in ax.patches:
            name = bar.get_gid()
            if name in plots.COLORS:
                color = bar.get_edgecolor() if plots.is_peer(name) \
                    else bar.get_facecolor()
                out.setdefault(name, []).append((to_hex(color), None))
        legend = ax.get_legend()
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            name = text.get_text()
            if name in plots.COLORS:
                color = (handle.get_color() if hasattr(handle, "get_color")
                         and not hasattr(handle, "get_facecolor")
                         else handle.get_edgecolor())
                out.setdefault(name, []).append((to_hex(color), None))
    return out


def test_every_figure_uses_the_fixed_colour_of_each_contender(tmp_path,
                                                             figures):
    sweeps = [_data("kernels", _synthetic_kernel_sweep()),
              _data("layers", _synthetic_layer_sweep())]
    report.write_report(tmp_path, sweeps, {"sgemm_1024_gflops": 50.0})
    assert len(figures) == 6
    seen = {}
    for name, fig in figures:
        colors = _contender_colors(fig)
        assert colors, f"no contender drawn in {name}"
        for contender, drawn in colors.items():
            for color, style in drawn:
                assert color == plots.COLORS[contender], (name, contender)
                seen.setdefault(contender, set()).add(color)
                if style not in (None, "None", "none") and contender != "auto":
                    dashed = style not in ("-", "solid")
                    assert dashed == plots.is_peer(contender), (name, contender)
    assert {"direct", "fft", "im2col", "scipy-fft", "torch"} <= set(seen)
    assert all(len(c) == 1 for c in seen.values())


def test_unknown_contenders_get_the_same_colour_every_time():
    assert plots.color_of("mystery") == plots.color_of("mystery")
    assert plots.color_of("direct") == plots.COLORS["direct"]


def test_time_figure_marks_the_crossover_and_titles_say_what(tmp_path,
                                                             figures):
    report.write_report(tmp_path, [_data("kernels", _synthetic_kernel_sweep())],
                        {"sgemm_1024_gflops": 50.0})
    figs = dict(figures)
    time_fig = next(f for n, f in figs.items() if n.endswith("time.png"))
    ax = time_fig.axes[0]
    vertical = [tuple(line.get_xdata()) for line in ax.get_lines()
                if len(line.get_xdata()) == 2
                and line.get_xdata()[0] == line.get_xdata()[1]]
    assert vertical == [(7, 7)]
    assert ax.get_yscale() == "log"
    assert any("fft < direct" in t.get_text() for t in ax.texts)
    for name, fig in figures:
        title = fig.axes[0].get_title()
        assert "kernels · float32 · 1 repeats (median) · 2026-01-01" in title
        assert fig.axes[0].get_ylabel() and fig.axes[0].get_xlabel()
    gflops = next(f for n, f in figs.items() if n.endswith("gflops.png"))
    assert any(line.get_ydata()[0] == 50.0 for line in gflops.axes[0].get_lines()
               if len(set(line.get_ydata())) == 1)
    md = (tmp_path / "report.md").read_text()
    assert "fft beats direct from k=7 on" in md


# --------------------------------------------------------------------------
# asv results
# --------------------------------------------------------------------------

def _asv_results(root):
    """Two commits on one machine in asv 0.6's results format (version 2)."""
    machine_dir = root / "box"
    machine_dir.mkdir(parents=True)
    (machine_dir / "machine.json").write_text(json.dumps(
        {"machine": "box", "version": 1}))
    (root / "benchmarks.json").write_text(json.dumps({"version": 2}))
    columns = ["result", "params", "version", "started_at", "duration"]
    pairs = [["'direct->fft'", "'im2col->fft'"]]
    for commit, date, crossover, times in (
            ("bbbbbbbbbbbb", 2_000_000_000_000, [9, None], [2e-3, 3e-3]),
            ("aaaaaaaaaaaa", 1_000_000_000_000, [11, 7], [1e-3, float("nan")])):
        data = {
            "commit_hash": commit, "env_name": "virtualenv-py3.11",
            "date": date, "params": {"machine": "box"}, "python": "3.11",
            "requirements": {}, "env_vars": {}, "result_columns": columns,
            "results": {
                "bench_conv.Crossover.track_crossover": [crossover, pairs,
                                                         "v1", 0, 1.0],
                "bench_conv.Layers.time_conv2d": [
                    times, [["'direct'", "'fft'"]], "v1", 0, 1.0],
                "bench_conv.Layers.time_other": [[1.0], [], "v1", 0, 1.0],
                "bench_conv.Layers.peakmem_conv2d": [[1e6], [], "v1", 0, 1.0],
            },
            "durations": {}, "version": 2}
        (machine_dir / f"{commit[:8]}-virtualenv-py3.11.json").write_text(
            json.dumps(data))
    return root


def test_asv_results_are_read_oldest_commit_first(tmp_path):
    runs = report.read_asv_results(_asv_results(tmp_path / "results"))
    assert [r.commit[:4] for r in runs] == ["aaaa", "bbbb"]
    selected = report.select_asv_benchmarks(runs)
    assert selected == ["bench_conv.Crossover.track_crossover",
                        "bench_conv.Layers.time_conv2d"]
    commits, lines, dropped = report.asv_lines(
        runs, "bench_conv.Crossover.track_crossover")
    assert commits[0].startswith("aaaaaaaa\n2001-09-09")
    assert lines == {"direct->fft": [11.0, 9.0], "im2col->fft": [7.0, None]}
    assert dropped == 0
    _, times, _ = report.asv_lines(runs, "bench_conv.Layers.time_conv2d")
    assert times["direct"] == [1e-3, 2e-3]
    assert math.isnan(times["fft"][0]) and times["fft"][1] == 3e-3
    assert report.select_asv_benchmarks(runs, r"time_other") == [
        "bench_conv.Crossover.track_crossover", "bench_conv.Layers.time_other"]


def test_report_from_asv_alone_plots_the_history(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "measure", _no_measuring)
    root = _asv_results(tmp_path / "results")
    out = tmp_path / "rep"
    assert cli.main(["report", "--from-asv", str(root), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## asv history" in md
    assert "2 asv result files" in md and "2 commits" in md
    names = sorted(p.name for p in out.glob("asv-*.png"))
    assert names == ["asv-bench-conv-crossover-track-crossover.png",
                     "asv-bench-conv-layers-time-conv2d.png"]


def test_report_of_a_problem_file_in_two_directions(tmp_path, fast):
    """`report --problems FILE --direction fwd,bwd_data`: one sweep of
    problems drawn as layers, every op's rows in the tables, what a
    direction cannot run in the sweep's note, and the JSON reads back."""
    problems = tmp_path / "layers.txt"
    problems.write_text("conv2d n1 c2 h8 w8 k2 r3 p1 name=c\n"
                        "max_pool2d n1 c2 h8 w8 r2 name=mp\n"
                        "global_avg_pool2d n1 c2 h4 w4 name=gap\n")
    out = tmp_path / "rep"
    assert cli.main(["report", "--problems", str(problems), "--direction",
                     "fwd,bwd_data", "--repeats", "1", "--quick",
                     "--no-progress", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    for label in ("c", "c:bwd_data", "mp", "mp:bwd_data", "gap"):
        assert f"| {label} |" in text, label
    assert "not run: bwd_data of global_avg_pool2d" in text
    assert "GB/s" in text                       # pooling rates
    saved = next(out.glob("sweep-*.json"))
    ops = {r["op"] for r in json.loads(saved.read_text())["results"]}
    assert ops == {"conv2d", "conv2d_backward_data", "max_pool2d",
                   "max_pool2d_backward", "global_avg_pool2d"}
    again = tmp_path / "again"
    assert cli.main(["report", "--from-json", str(saved), "--out",
                     str(again)]) == 0
