"""The benchmark harness: crossovers, CLI, sweeps, reports, workloads.

Timings are never asserted (they depend on the machine); what is tested is
the bookkeeping around them, with the clock replaced where it matters, and
the correctness of every output (the algorithms' and the peers') against
the float64 reference in units of the documented error bound.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels import accuracy
from convbench import cli, crossover as xo, sweep, timing, workloads
from convbench.workloads import ConvCase


# --------------------------------------------------------------------------
# Crossover detection on synthetic curves
# --------------------------------------------------------------------------

SIZES = list(range(3, 32, 2))          # 3, 5, ..., 31


def test_crossover_of_quadratic_against_constant():
    # A costs k^2, B a constant 200: B is faster exactly when k^2 > 200,
    # i.e. from k = 15 (15^2 = 225; 13^2 = 169).
    times_a = [k * k for k in SIZES]
    times_b = [200.0] * len(SIZES)
    assert xo.crossover(SIZES, times_a, times_b) == 15


def test_crossover_is_none_when_b_never_takes_over():
    times_a = [1.0] * len(SIZES)
    times_b = [2.0 + k for k in SIZES]
    assert xo.crossover(SIZES, times_a, times_b) is None


def test_crossover_is_first_size_when_b_is_always_faster():
    times_a = [10.0 + k for k in SIZES]
    times_b = [1.0] * len(SIZES)
    assert xo.crossover(SIZES, times_a, times_b) == SIZES[0]


def test_crossover_between_first_two_sizes_is_found():
    # B slower only at the first size: the crossover is the second size.
    times_a = [1.0] * 6
    times_b = [1.5, 0.4, 0.2, 0.2, 0.2, 0.2]
    assert xo.crossover(SIZES[:6], times_a, times_b) == SIZES[1]


def test_noisy_point_after_the_crossover_does_not_move_it():
    times_a = [k * k for k in SIZES]
    times_b = [200.0] * len(SIZES)
    clean = xo.crossover(SIZES, times_a, times_b)
    noisy = list(times_b)
    noisy[SIZES.index(23)] = 1e6         # one spike, B "slower" at k = 23
    assert xo.crossover(SIZES, times_a, noisy) == clean == 15


def test_noisy_point_before_the_crossover_does_not_create_one_early():
    times_a = [k * k for k in SIZES]
    times_b = [200.0] * len(SIZES)
    noisy = list(times_b)
    noisy[SIZES.index(7)] = 1e-6         # one dip, B "faster" at k = 7
    assert xo.crossover(SIZES, times_a, noisy) == 15


def test_noisy_last_point_does_not_hide_the_crossover():
    times_a = [k * k for k in SIZES]
    times_b = [200.0] * len(SIZES)
    times_b[-1] = 1e6
    assert xo.crossover(SIZES, times_a, times_b) == 15


def test_noisy_last_point_does_not_fake_a_crossover():
    times_a = [1.0] * len(SIZES)
    times_b = [2.0] * len(SIZES)
    times_b[-1] = 0.1
    assert xo.crossover(SIZES, times_a, times_b) is None


def test_missing_points_are_ignored():
    times_a = [k * k for k in SIZES]
    times_b = [200.0] * len(SIZES)
    times_b[SIZES.index(17)] = None
    times_a[SIZES.index(21)] = math.nan
    assert xo.crossover(SIZES, times_a, times_b) == 15


def test_crossover_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="equal lengths"):
        xo.crossover([3, 5], [1.0], [1.0, 2.0])


@settings(deadline=None)
@given(data=st.data())
def test_one_outlier_away_from_the_crossover_never_moves_it(data):
    n = data.draw(st.integers(6, 14), label="n")
    c = data.draw(st.integers(1, n - 3), label="crossover index")
    slow_ratio = data.draw(st.floats(1.05, 10.0), label="ratio before")
    fast_ratio = data.draw(st.floats(0.05, 0.95), label="ratio after")
    ratios = [slow_ratio if i < c else fast_ratio for i in range(n)]
    far = [j for j in range(n) if j not in (c - 2, c - 1, c, c + 1)]
    j = data.draw(st.sampled_from(far), label="outlier index")
    # The outlier lands on the other side of 1.
    ratios[j] = data.draw(st.floats(0.01, 0.99) if ratios[j] > 1
                          else st.floats(1.01, 100.0), label="outlier")
    sizes = list(range(1, 2 * n, 2))
    times_a = [1.0] * n
    assert xo.crossover(sizes, times_a, ratios) == sizes[c]


def test_find_crossovers_reports_each_overtaking_once():
    times = {
        "direct": [k * k for k in SIZES],        # cheap for small kernels
        "fft": [200.0] * len(SIZES),             # flat
        "im2col": [5.0 * k for k in SIZES],      # linear
    }
    found = {(c.slower, c.faster): c.size for c in xo.find_crossovers(SIZES, times)}
    # direct (k^2) vs im2col (5k): im2col faster when k > 5 -> from 7.
    # im2col (5k) vs fft (200): fft faster when 5k > 200, k > 40: never.
    assert found == {("direct", "fft"): 15, ("direct", "im2col"): 7}


# --------------------------------------------------------------------------
# Command-line parsing
# --------------------------------------------------------------------------

def test_kernel_range_includes_stop():
    assert cli.parse_kernels("3:31:2") == [(k, k) for k in range(3, 32, 2)]
    assert cli.parse_kernels("3:6") == [(3, 3), (4, 4), (5, 5), (6, 6)]


def test_kernel_list_and_rectangles():
    assert cli.parse_kernels("3, 5,1x7") == [(3, 3), (5, 5), (1, 7)]


@pytest.mark.parametrize("spec, message", [
    ("31:3:2", "stop (3) is smaller than start (31)"),
    ("0:5", "kernel range start must be >= 1"),
    ("3:9:0", "kernel range step must be >= 1"),
    ("a:9", "kernel range start must be an integer, got 'a'"),
    ("3:5:7:9", "START:STOP or START:STOP:STEP"),
    ("3,x", "kernel size 'x' must be K or KHxKW"),
    ("3x", "kernel size '3x' must be K or KHxKW"),
    ("3,2.5", "kernel size must be an integer, got '2.5'"),
    ("3xa", "kernel width must be an integer, got 'a'"),
])
def test_bad_kernel_specs_are_argparse_errors(spec, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["sweep", "--shape", "1,1,16,16,1", "--kernels", spec])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--kernels" in err and message in err


@pytest.mark.parametrize("argv, message", [
    (["--shape", "1,1,16,16"], "must be N,C,H,W,K"),
    (["--shape", "1,0,16,16,1"], "shape C must be >= 1"),
    (["--shape", "1,1,16,16,1", "--padding", "full"], "padding must be 'same'"),
    (["--shape", "1,1,16,16,1", "--stride", "2"], "'same' needs --stride 1"),
    (["--shape", "1,3,16,16,1", "--groups", "2"], "must divide C"),
    (["--shape", "1,1,16,16,1", "--algorithms", "magic"], "unknown algorithm"),
    (["--shape", "1,1,16,16,1", "--peers", "matlab"], "unknown peer"),
    (["--network", "alexnet"], "unknown network"),
    (["--workload", "nope"], "unknown workload"),
    (["--network", "lenet5", "--kernels", "3"], "only with --shape"),
    ([], "one of the arguments"),
])
def test_bad_sweep_arguments_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["sweep"] + argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------
# End-to-end sweep
# --------------------------------------------------------------------------

def _run_main(argv):
    return cli.main(argv)


def test_tiny_sweep_writes_complete_json(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    code = _run_main(["sweep", "--shape", "1,1,16,16,1", "--kernels", "3:5:2",
                      "--repeats", "1", "--peers", "scipy-direct,scipy-fft",
                      "--no-progress", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert {"schema", "config", "cases", "results", "crossovers", "machine",
            "interrupted"} <= set(data)
    assert data["interrupted"] is False
    machine = data["machine"]
    assert {"cpu_model", "numba", "blas", "env", "versions",
            "sgemm_1024_gflops"} <= set(machine)
    assert machine["sgemm_1024_gflops"] > 0
    assert "OPENBLAS_CORETYPE" in machine["env"]

    contenders = list(kernels.built_algorithms()) + ["scipy-direct", "scipy-fft"]
    by_key = {(r["case"], r["contender"]): r for r in data["results"]}
    assert set(by_key) == {(f"k={k}", c) for k in (3, 5) for c in contenders}
    for (case, name), r in by_key.items():
        if r["status"] == "n/a":
            assert r["reason"]
            continue
        assert r["status"] == "ok", r
        k = int(case[2:])
        # 'same' padding on 16x16: 16x16 outputs, k*k multiply-adds each.
        assert r["gflops"] == pytest.approx(2 * k * k * 16 * 16 / r["median_s"] / 1e9)
        assert len(r["times_s"]) == 1 and not r["partial"]
        # Every contender, peers included, within the documented bound of
        # the algorithm it resembles.
        constant = accuracy.error_constant(sweep.bound_kind(name), np.float32)
        assert 0 <= r["error_units"] <= constant, r
        if not r["peer"]:
            assert r["error_constant"] == constant
    stdout = capsys.readouterr().out
    assert "k=3" in stdout and "k=5" in stdout and "speedup" in stdout


def test_isolated_sweep_times_every_contender_in_its_own_worker(tmp_path,
                                                                capsys):
    """--isolated: each contender that ran in-process is timed again alone
    in a worker, the table shows both times with their quartiles, and the
    JSON keeps the isolated times."""
    out = tmp_path / "sweep.json"
    code = _run_main(["sweep", "--shape", "1,2,12,12,2", "--kernels", "3",
                      "--algorithms", "direct,im2col", "--peers", "scipy-fft",
                      "--repeats", "3", "--no-check", "--isolated",
                      "--no-progress", "--json", str(out)])
    assert code == 0
    results = json.loads(out.read_text())["results"]
    assert {r["contender"] for r in results} == {"direct", "im2col",
                                                 "scipy-fft"}
    for r in results:
        assert len(r["isolated_times_s"]) == 3, r
        assert r["isolated_median_s"] == pytest.approx(
            statistics.median(r["isolated_times_s"]))
        assert all(t > 0 for t in r["isolated_times_s"])
    stdout = capsys.readouterr().out
    assert "isolated ms" in stdout and "iso speedup" in stdout
    assert "q1-q3" in stdout


def test_sweep_table_shows_quartiles_and_no_isolated_columns_by_default():
    m = sweep.Measurement("k=3", (1, 1, 8, 8), (1, 1, 3, 3), 1, "same", 1,
                          "direct", False, "ok", times_s=[1e-3, 2e-3, 3e-3,
                                                          4e-3, 5e-3],
                          median_s=3e-3)
    q1, q3 = m.quartiles_s()
    assert (q1, q3) == pytest.approx((2e-3, 4e-3))
    table = sweep.format_table(sweep.SweepResult({}, [], [m]))
    assert "2-4" in table and "isolated" not in table
    m.isolated_times_s = [1e-3, 1e-3]
    m.isolated_median_s = 1e-3
    assert "isolated ms" in sweep.format_table(sweep.SweepResult({}, [], [m]))


def test_network_sweep_runs_every_distinct_lenet_layer(capsys):
    first_built = kernels.built_algorithms()[:1]
    code = _run_main(["sweep", "--network", "lenet5", "--batch", "2",
                      "--repeats", "1", "--peers", "scipy-fft", "--no-check",
                      "--algorithms", ",".join(first_built), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    for label in ("C1", "C3", "C5"):
        assert f"\n{label} " in out


@pytest.mark.parametrize("stride, padding, groups", [(2, 1, 1), (1, 0, 2),
                                                     (2, 2, 2)])
@pytest.mark.parametrize("peer", ["scipy-direct", "scipy-fft", "torch"])
def test_peers_match_the_reference(peer, stride, padding, groups):
    if peer == "torch":
        pytest.importorskip("torch")
    case = ConvCase("t", (2, 4, 11, 9), (6, 4 // groups, 3, 2), stride, padding,
                    groups)
    x, w = sweep.make_data(case, np.float64, seed=3)
    run, _ = sweep.make_runner(peer, case, x, w)
    y = run()
    assert y.shape == sweep.output_shape(case)
    check = sweep.ReferenceCheck(case, x, w, check_batch=0)
    assert check.region["fraction"] == 1.0
    units = check.error_units(sweep.bound_kind(peer), np.float64, y)
    assert units <= accuracy.error_constant(sweep.bound_kind(peer), np.float64)


def test_reference_check_crops_to_its_budget():
    case = ConvCase("big", (3, 2, 64, 64), (2, 2, 5, 5), 1, "same", 1)
    x, w = sweep.make_data(case, np.float32)
    check = sweep.ReferenceCheck(case, x, w, check_batch=1, check_macs=2e4)
    assert check.batch == 1
    assert check.rows < 64
    # The cropped reference equals the same region of the full one.
    import reference
    full = reference.conv2d(x[:1].astype(np.float64), w.astype(np.float64),
                            padding="same")
    np.testing.assert_allclose(check.y, full[:, :, :check.rows, :check.cols],
                               rtol=1e-12, atol=1e-12)


def test_slow_scipy_peer_is_skipped_with_a_reason():
    case = ConvCase("k=31", (1, 1, 512, 512), (1, 1, 31, 31), 1, "same", 1)
    x, w = sweep.make_data(case)
    with pytest.raises(sweep.Skipped, match="estimated .* s per call"):
        sweep.make_runner("scipy-direct", case, x, w, peer_time_limit=0.01)


def test_unsupported_algorithm_is_not_applicable():
    if "winograd" not in kernels.built_algorithms():
        pytest.skip("winograd not built")
    case = ConvCase("s2", (1, 2, 16, 16), (2, 2, 3, 3), 2, 1, 1)
    x, w = sweep.make_data(case)
    with pytest.raises(sweep.NotApplicable):
        sweep.make_runner("winograd", case, x, w)


# --------------------------------------------------------------------------
# Interruption
# --------------------------------------------------------------------------

def test_keyboard_interrupt_keeps_partial_results(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_time_call(fn):
        calls.append(fn)
        if len(calls) == 2:
            raise KeyboardInterrupt
        fn()
        return 0.001

    monkeypatch.setattr(sweep, "time_call", fake_time_call)
    out = tmp_path / "partial.json"
    code = _run_main(["sweep", "--shape", "1,1,16,16,1", "--kernels", "3:7:2",
                      "--repeats", "3", "--peers", "scipy-fft", "--no-check",
                      "--no-progress", "--json", str(out)])
    assert code == 130
    assert len(calls) == 2
    data = json.loads(out.read_text())
    assert data["interrupted"] is True
    timed = [r for r in data["results"] if r["times_s"]]
    assert len(timed) == 1
    assert timed[0]["times_s"] == [0.001]
    assert timed[0]["partial"] is True and timed[0]["median_s"] == 0.001
    assert all(r["case"] == "k=3" for r in data["results"])
    assert "interrupted" in capsys.readouterr().out


# --------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------

def _measurement(case, name, peer, median=None, status="ok", reason=None):
    m = sweep.Measurement(case, (1, 1, 8, 8), (1, 1, 3, 3), 1, "same", 1, name,
                          peer, status, reason)
    if median is not None:
        m.times_s = [median]
        m.median_s = median
        m.gflops = 1.0
        m.error_units = 1.5
        m.error_constant = None if peer else 64.0
    return m


def test_table_shows_speedup_against_fastest_peer_and_reasons():
    ms = [_measurement("k=3", "im2col", False, 0.001),
          _measurement("k=3", "winograd", False, status="n/a",
                       reason="needs stride 1"),
          _measurement("k=3", "scipy-fft", True, 0.002),
          _measurement("k=3", "scipy-direct", True, 0.004)]
    result = sweep.SweepResult(config={}, cases=[], measurements=ms)
    lines = sweep.format_table(result).splitlines()
    header = lines[0].split()
    assert header[:3] == ["case", "contender", "time"]
    # The case label is printed on its first row only.
    row = {(line.split()[1] if line.startswith("k=3") else line.split()[0]): line
           for line in lines[2:6]}
    assert row["im2col"].endswith("2.00x")       # 0.002 / 0.001
    assert row["scipy-fft"].endswith("1.00x")
    assert row["scipy-direct"].endswith("0.50x")
    assert "n/a [1]" in row["winograd"]
    assert any(line.startswith("[1] winograd n/a (k=3): needs stride 1")
               for line in lines)
    # Right-aligned numeric columns end at the same position.
    ends = {len(row[n]) for n in ("im2col", "scipy-fft", "scipy-direct")}
    assert len(ends) == 1


def test_table_groups_one_rule_over_cases_and_flags_errors_over_bound():
    ms = []
    for k in (9, 11):
        ms.append(_measurement(f"k={k}", "winograd", False, status="n/a",
                               reason=f"kernel sizes 1 to 7, got {k}x{k}"))
        bad = _measurement(f"k={k}", "fft", False, 0.001)
        bad.error_units = 300.0 if k == 11 else 2.0
        bad.error_constant = 256.0
        ms.append(bad)
    result = sweep.SweepResult(config={}, cases=[], measurements=ms)
    text = sweep.format_table(result)
    assert "[1] winograd n/a (2 cases: k=9, k=11): kernel sizes 1 to 7, got 9x9" in text
    assert "[2]" not in text
    flagged = [line for line in text.splitlines() if " ! " in line or line.endswith("!")]
    assert len(flagged) == 1 and "300 !" in flagged[0]


def test_crossovers_are_printed_under_the_table():
    ms = []
    for k in (3, 5, 7, 9, 11):
        for name, t in (("im2col", k * k), ("fft", 40.0)):
            m = _measurement(f"k={k}", name, False, t)
            m.w_shape = (1, 1, k, k)
            ms.append(m)
    result = sweep.SweepResult(config={}, cases=[], measurements=ms)
    text = sweep.format_crossovers(result)
    assert "fft beats im2col from k=7 on" in text       # 7^2 = 49 > 40
    assert "fastest: k=3 im2col, k=5 im2col, k=7 fft" in text
    assert result.crossovers()[0]["kernel_size"] == 7


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------

@pytest.mark.parametrize("network, published", [
    ("lenet5", 61_706), ("vgg16", 138_357_544), ("resnet18", 11_689_512),
    ("resnet50", 25_557_032)])
def test_param_counts_are_the_published_ones(network, published):
    assert workloads.param_count(network) == published


@pytest.mark.parametrize("network, convs", [("resnet18", 17 + 3),
                                            ("resnet50", 49 + 4),
                                            ("vgg16", 13), ("lenet5", 3)])
def test_networks_have_their_published_number_of_conv_layers(network, convs):
    # ResNet-n has n - 1 convolutions on the main path plus one downsample
    # projection per stage after the first (ResNet-50: one per stage).
    layers = workloads.NETWORKS[network]
    assert sum(layer.kind == "conv" for layer in layers) == convs


def test_spatial_sizes_follow_the_published_architectures():
    vgg = {layer.name: layer for layer in workloads.NETWORKS["vgg16"]}
    assert vgg["conv5_3"].in_hw == (14, 14)
    assert vgg["fc6"].c_in == 512 * 7 * 7
    lenet = {layer.name: layer for layer in workloads.NETWORKS["lenet5"]}
    assert lenet["C5"].in_hw == (5, 5) and lenet["C5"].out_hw == (1, 1)
    for net in ("resnet18", "resnet50"):
        convs = [layer for layer in workloads.NETWORKS[net] if layer.kind == "conv"]
        assert convs[0].out_hw == (112, 112)
        assert convs[-1].out_hw == (7, 7)          # 224 / 32


def test_conv_layers_are_distinct_and_batched():
    cases = workloads.conv_layers("resnet50", batch=4)
    keys = [c[1:] for c in cases]
    assert len(keys) == len(set(keys))
    assert all(c.x_shape[0] == 4 for c in cases)
    # Every conv layer is one of the cases.
    convs = [layer for layer in workloads.NETWORKS["resnet50"] if layer.kind == "conv"]
    assert {((4, layer.c_in) + layer.in_hw, layer.stride) for layer in convs} == \
        {(c.x_shape, c.stride) for c in cases}
    # The named 3x3 workload is made of ResNet-50's own layers.
    problems = {c[1:] for c in cases}
    for c in workloads.workload("resnet50-3x3"):
        assert c[1:] in problems


def test_named_workloads_build():
    for name in workloads.WORKLOADS:
        cases = workloads.workload(name)
        assert cases
        for c in cases:
            assert len(c.x_shape) == 4 and len(c.w_shape) == 4
    labels = [c.label for c in workloads.workload("resnet50-3x3")]
    assert labels == ["64@56x56", "128@28x28", "256@14x14", "512@7x7"]


# --------------------------------------------------------------------------
# Machine info, calibration, entry points
# --------------------------------------------------------------------------

def test_machine_info_without_measurement():
    from convbench.machine import format_machine_info, machine_info
    info = machine_info(measure=False)
    assert info["numba"]["num_threads"] >= 1
    assert "sgemm_1024_gflops" not in info
    assert "BLAS" in format_machine_info(info)


@pytest.mark.parametrize("first", ["kernels", "torch"])
def test_machine_info_records_the_import_order(first):
    """The machine block says whether an OpenMP runtime was loaded before
    kernels (torch imported first) and where the BLAS pieces run."""
    pytest.importorskip("torch")
    second = "torch" if first == "kernels" else "kernels"
    code = (f"import {first}, {second}, json\n"
            "from convbench.machine import machine_info, format_machine_info\n"
            "info = machine_info(measure=False)\n"
            "print(json.dumps(info['openmp']))\n"
            "print(format_machine_info(info))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True, timeout=300).stdout
    openmp = json.loads(out.splitlines()[0])
    if openmp["threading_layer"] != "omp":
        pytest.skip("Numba's threading layer is not OpenMP")
    assert openmp["openmp_loaded_before_kernels"] is (first == "torch")
    line = next(x for x in out.splitlines() if x.startswith("OpenMP"))
    assert ("loaded before kernels" in line) is (first == "torch")
    assert "BLAS pieces" in line


def test_calibrate_writes_thresholds_that_auto_reads(tmp_path, monkeypatch):
    from convbench import calibrate as cal
    from kernels._choose import default_thresholds
    from kernels._choose import thresholds as thresholds_in_force

    built = kernels.built_algorithms()

    def synthetic_times(cases, algorithms, progress):
        # fft flat; every other algorithm grows with kernel area and
        # channels: crossovers are known from the formulas.
        out = {}
        for a in algorithms:
            row = []
            for c in cases:
                k_out, cg, kh, kw = c.w_shape
                area = kh * kw * cg * k_out
                row.append(50.0 if a == "fft" else float(area))
            out[a] = row
        return out

    monkeypatch.setattr(cal, "_times", synthetic_times)
    path = tmp_path / "cal.json"
    thresholds = cal.calibrate(path=path, progress=False, log=lambda *a: None)
    if "fft" in built and len(built) > 1:
        # single channel: area k^2 > 50 from k = 9 (7^2 = 49).
        assert thresholds["fft_min_area_single"] == 81
    monkeypatch.setenv("CONVBENCH_CALIBRATION", str(path))
    assert thresholds_in_force("cpu") == thresholds
    assert set(thresholds) == set(default_thresholds("cpu"))
    # What it did not measure is not in the file: the package's defaults
    # apply to it, whatever they become.
    import json
    written = json.loads(path.read_text())["backends"]["cpu"]["thresholds"]
    for name in ("im2col_min_out_channels", "winograd_min_macs",
                 "winograd_deep_min_positions", "winograd_mid_min_positions",
                 "winograd_narrow_min_positions",
                 "winograd_min_channels_5x5", "im2col_min_positions_strided"):
        assert name not in written


def test_thresholds_a_calibration_did_not_measure_follow_the_defaults(
        monkeypatch, tmp_path):
    # Files written before 2026-12-04 stored the defaults of the day for
    # thresholds they did not measure; their meta says so.
    from kernels._calibration import save_thresholds
    from kernels._choose import default_thresholds, machine_key, thresholds
    path = _calibrated(monkeypatch, tmp_path, "")
    default = default_thresholds("cpu")
    old = {"winograd_min_macs": 123.0, "direct_max_macs": 7.0}
    meta = {"thresholds": {
        "winograd_min_macs": {"value": 123.0, "status": "default"},
        "direct_max_macs": {"value": 7.0, "status": "pinned"}}}
    save_thresholds("cpu", old, machine_key("cpu"), meta, path=path)
    assert thresholds("cpu")["winograd_min_macs"] == default["winograd_min_macs"]
    assert thresholds("cpu")["direct_max_macs"] == 7.0


def test_calibrated_winograd_pixels_is_the_measured_crossover(monkeypatch):
    from convbench import calibrate as cal

    def synthetic_times(cases, algorithms, progress):
        # im2col costs H*W; winograd a set-up of 500 plus half of that:
        # winograd is faster from H*W > 1000 on, i.e. from 42^2 = 1764.
        out = {}
        for a in algorithms:
            pixels = [c.x_shape[2] * c.x_shape[3] for c in cases]
            out[a] = [500 + p / 2 if a == "winograd" else float(p)
                      for p in pixels]
        return out

    monkeypatch.setattr(cal, "_times", synthetic_times)
    report = []
    assert cal._winograd_pixels(["im2col", "winograd"], 9, False,
                                report)[0] == 42 * 42
    assert report[0]["crossover_pixels"] == 42 * 42


def test_winograd_is_calibrated_against_the_fallback_auto_would_use():
    from convbench import calibrate as cal
    built = ["direct", "im2col", "winograd", "fft"]
    assert cal._winograd_rivals(built, im2col_max_area=9) == ["im2col"]
    assert cal._winograd_rivals(built, im2col_max_area=1) == ["direct"]
    assert cal._winograd_rivals(["im2col", "winograd"], 1) == ["im2col"]


def test_calibrated_pointwise_limit_is_between_the_last_direct_win_and_the_first_im2col_win(
        monkeypatch):
    from convbench import calibrate as cal

    def synthetic_times(cases, algorithms, progress):
        # im2col pays a fixed 1e6 "multiply-adds" of set-up, direct none
        # but twice the cost per multiply-add: im2col wins above 1e6.
        out = {}
        for a in algorithms:
            macs = [196 * c.w_shape[0] * c.w_shape[1] for c in cases]
            out[a] = [2.0 * m if a == "direct" else 1e6 + m for m in macs]
        return out

    monkeypatch.setattr(cal, "_times", synthetic_times)
    report = []
    value, status = cal._direct_macs_pointwise(["direct", "im2col"], False,
                                               report)
    # C = K = 64 (8.0e5 multiply-adds) is direct's last win, 96 (1.8e6)
    # im2col's first: the geometric mean of the two.
    assert value == pytest.approx((196 * 64 ** 2 * 196 * 96 ** 2) ** 0.5)
    assert report[0]["crossover_macs"] == 196 * 96 ** 2
    assert status == "pinned"


def test_calibrated_1d_factor_is_the_crossover_length_over_the_2d_area(
        monkeypatch):
    from convbench import calibrate as cal

    def synthetic_times(cases, algorithms, progress):
        # direct costs the kernel length, fft a flat 100: fft from k = 127
        # (95 < 100 < 127), the threshold halfway, 111 taps.
        out = {}
        for a in algorithms:
            out[a] = [100.0 if a == "fft" else float(c.w_shape[3])
                      for c in cases]
        return out

    monkeypatch.setattr(cal, "_times", synthetic_times)
    report = []
    factor, status = cal._fft_1d_factor(
        ["direct", "fft"], (1, 1, 1, 10 ** 6), 1,
        (31, 47, 63, 95, 127, 191, 255, 383), 200, False, report)
    assert factor == pytest.approx(111 / 200, abs=1e-3)
    assert report[0]["crossover_kernel"] == 127 and status == "pinned"
    # the model: a 1-D problem's FFT area is the 2-D one times the factor,
    # the single-channel factor for one channel, the other for more
    from kernels._choose import NEUTRAL_THRESHOLDS, _model_choice
    from kernels._dispatch import ConvSpec
    t = dict(NEUTRAL_THRESHOLDS, fft_min_area_single=200,
             fft_min_area_few=200, fft_min_area_multi=200,
             fft_1d_area_factor_single=factor, fft_1d_area_factor=0.2)

    def pick(c, k):
        spec = ConvSpec.from_config((1, c, 1, 10 ** 5), (c, c, 1, k),
                                    (1, 1), (0, 0, 0, 0), (1, 1), 1)
        return _model_choice(["direct", "fft"], spec, t)

    assert pick(1, 127) == "fft" and pick(1, 95) == "direct"
    assert pick(3, 47) == "fft" and pick(3, 31) == "direct"


@pytest.mark.parametrize("direct_from, expected", [(3, 1), (5, 9), (1, 0),
                                                   (None, 196)])
def test_calibrated_im2col_area_is_the_last_kernel_im2col_wins(
        monkeypatch, direct_from, expected):
    from convbench import calibrate as cal

    def synthetic_times(cases, algorithms, progress):
        # direct takes over from kernel size direct_from (never if None).
        out = {}
        for a in algorithms:
            row = []
            for c in cases:
                k = c.w_shape[2]
                faster = direct_from is not None and k >= direct_from
                row.append(1.0 if (a == "direct") == faster else 2.0)
            out[a] = row
        return out

    monkeypatch.setattr(cal, "_times", synthetic_times)
    report = []
    assert cal._im2col_area(["direct", "im2col"], False, report)[0] == expected
    assert report[0]["crossover_kernel"] == direct_from


def test_auto_leaves_winograd_to_large_images(monkeypatch, tmp_path):
    from kernels._choose import default_thresholds
    DEFAULT_THRESHOLDS = default_thresholds("cpu")
    monkeypatch.setenv("CONVBENCH_CALIBRATION", str(tmp_path / "none.json"))
    if not {"winograd", "im2col"} <= set(kernels.built_algorithms()):
        pytest.skip("needs winograd and im2col")
    pad = (1, 1, 1, 1)
    side = int(DEFAULT_THRESHOLDS["winograd_min_pixels"] ** 0.5)
    big, small = side + 2, side - 2
    # channels wide enough for the channel rules at any batch
    c = 2 * DEFAULT_THRESHOLDS["winograd_min_channels"]
    assert kernels.choose_algorithm((4, c, big, big), (c, c, 3, 3),
                                    padding=pad) == "winograd"
    fallback = ("im2col" if DEFAULT_THRESHOLDS["im2col_max_area"] >= 9
                else "direct")
    assert kernels.choose_algorithm((4, c, small, small), (c, c, 3, 3),
                                    padding=pad) == fallback


def test_auto_gives_im2col_the_kernels_up_to_its_area(monkeypatch, tmp_path):
    from kernels._choose import default_thresholds
    DEFAULT_THRESHOLDS = default_thresholds("cpu")
    monkeypatch.setenv("CONVBENCH_CALIBRATION", str(tmp_path / "none.json"))
    if not {"direct", "im2col"} <= set(kernels.built_algorithms()):
        pytest.skip("needs direct and im2col")
    limit = DEFAULT_THRESHOLDS["im2col_max_area"]
    for k in (1, 3, 5):
        pad = (k // 2,) * 4
        choice = kernels.choose_algorithm((1, 256, 14, 14), (256, 256, k, k),
                                          padding=pad)
        if k * k <= limit:
            assert choice == "im2col"
        else:
            assert choice in ("direct", "winograd", "fft") and choice != "im2col"


def test_auto_judges_fft_on_a_strided_problem_by_its_phase_kernel(
        monkeypatch, tmp_path):
    from kernels._choose import default_thresholds
    DEFAULT_THRESHOLDS = default_thresholds("cpu")
    monkeypatch.setenv("CONVBENCH_CALIBRATION", str(tmp_path / "none.json"))
    if "fft" not in kernels.built_algorithms():
        pytest.skip("needs fft")
    k = int(np.ceil(DEFAULT_THRESHOLDS["fft_min_area_multi"] ** 0.5)) | 1
    x, w = (1, 64, 56, 56), (64, 64, k, k)
    pad = (k // 2,) * 4
    assert kernels.choose_algorithm(x, w, padding=pad) == "fft"
    # Stride 2: four phases with kernels of a quarter of the area.
    assert kernels.choose_algorithm(x, w, stride=(2, 2), padding=pad) != "fft"
    big = 2 * k + 1
    assert kernels.choose_algorithm(x, (64, 64, big, big), stride=(2, 2),
                                    padding=(big // 2,) * 4) == "fft"


def test_python_dash_m_lists_workloads():
    proc = subprocess.run([sys.executable, "-m", "convbench", "sweep",
                           "--list-workloads"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "resnet50-3x3" in proc.stdout and "25,557,032" in proc.stdout


def test_repeat_orders_are_permutations_that_vary_the_predecessors():
    names = ["direct", "im2col", "winograd", "fft", "auto", "torch"]
    orders = [timing.repeat_order(names, r) for r in range(9)]
    assert all(sorted(o) == sorted(names) for o in orders)
    assert orders == [timing.repeat_order(names, r) for r in range(9)]  # seeded
    predecessors = {o[o.index("auto") - 1] for o in orders if o[0] != "auto"}
    assert len(predecessors) > 1


# --------------------------------------------------------------------------
# Timing helper and seeded data (convbench.timing)
# --------------------------------------------------------------------------

def _recording_contenders(names, log):
    """Fake contenders: each appends its name to ``log`` and returns a
    'time' that says which call of it this was (1.0, 2.0, ...)."""
    def make(name):
        def run():
            log.append(name)
            return float(log.count(name))
        return run
    return {name: make(name) for name in names}


def _timed_orders(log, names, warmup, repeats):
    timed = log[warmup * len(names):]
    assert len(timed) == repeats * len(names)
    return [tuple(timed[i:i + len(names)]) for i in range(0, len(timed), len(names))]


def test_interleaved_times_visits_everyone_once_per_repeat_in_seeded_orders():
    names = ["a", "b", "c", "d", "e"]
    log = []
    times = timing.interleaved_times(_recording_contenders(names, log), 8,
                                     seed=3, warmup=2, timer=lambda fn: fn())
    # Warm-up first: each contender twice in a row, in the dict's order.
    assert log[:10] == [n for n in names for _ in range(2)]
    orders = _timed_orders(log, names, 2, 8)
    assert all(sorted(o) == names for o in orders)     # each once per repeat
    assert orders == [tuple(timing.repeat_order(names, r, 3)) for r in range(8)]
    assert len(set(orders)) > 1                          # orders vary
    # Each contender's times, one per repeat, in repeat order (the two
    # warm-up calls were not timed: its timed calls are its 3rd to 10th).
    assert times == {n: [float(i) for i in range(3, 11)] for n in names}

    # Reproducible from the seed; another seed, other orders.
    again = []
    timing.interleaved_times(_recording_contenders(names, again), 8, seed=3,
                             warmup=2, timer=lambda fn: fn())
    assert again == log
    other = []
    timing.interleaved_times(_recording_contenders(names, other), 8, seed=4,
                             warmup=2, timer=lambda fn: fn())
    assert _timed_orders(other, names, 2, 8) != orders


def test_interleaved_times_uses_the_clock_and_keeps_times_of_an_interrupt():
    ticks = iter(range(100))
    calls = []

    def clock():
        return float(next(ticks))

    def stop():
        calls.append("stop")
        if len(calls) == 2:
            raise KeyboardInterrupt

    kept = {}
    with pytest.raises(KeyboardInterrupt):
        timing.interleaved_times({"stop": stop, "go": lambda: None}, 5,
                                 warmup=0, clock=clock, times=kept)
    # One clock tick per clock() call: each completed call took 1 "second".
    assert sum(len(v) for v in kept.values()) >= 1
    assert all(t == 1.0 for v in kept.values() for t in v)
    assert len(kept["stop"]) == 1
    with pytest.raises(TypeError):
        timing.interleaved_times({}, 1, clock=clock, timer=lambda fn: 0.0)


def test_sweep_times_through_the_helper_in_its_former_orders():
    # The sweep's orders before the shared helper: default_rng(repeat)'s
    # permutation; the helper with the sweep's seed must give the same.
    names = ["direct", "im2col", "winograd", "fft", "auto"]
    log = []
    runners = _recording_contenders(names, log)
    measurements = {n: sweep.Measurement("k=3", (1, 1, 8, 8), (1, 1, 3, 3), 1,
                                         "same", 1, n, False, "pending")
                    for n in names}

    class Progress:
        updates = 0

        def set_postfix_str(self, text):
            pass

        def update(self, n):
            Progress.updates += n

    sweep._time_round_robin(runners, measurements, 4, Progress(), "k=3")
    expected = []
    for r in range(4):
        order = list(names)
        np.random.default_rng(r).shuffle(order)
        expected.append(tuple(order))
    assert _timed_orders(log, names, 0, 4) == expected
    assert Progress.updates == 4 * len(names)
    assert all(len(m.times_s) == 4 and all(t >= 0 for t in m.times_s)
               for m in measurements.values())


def test_summary_median_and_spread_on_known_times():
    s = timing.summarize([4.0, 1.0, 3.0, 2.0])
    assert (s.n, s.median, s.min, s.max) == (4, 2.5, 1.0, 4.0)
    assert s.q1 == pytest.approx(1.75) and s.q3 == pytest.approx(3.25)
    assert s.spread == pytest.approx(3.0) and s.iqr == pytest.approx(1.5)
    s = timing.summarize([5, 1, 3])
    assert (s.median, s.q1, s.q3, s.spread, s.iqr) == (3, 2, 4, 4, 2)
    one = timing.summarize([0.25])
    assert (one.median, one.min, one.max, one.q1, one.q3) == (0.25,) * 5
    data = np.random.default_rng(5).random(11)
    s = timing.summarize(data)
    assert [s.q1, s.median, s.q3] == pytest.approx(
        np.percentile(data, [25, 50, 75]))
    assert timing.summarize_all({"a": [1, 3]})["a"].median == 2
    with pytest.raises(ValueError):
        timing.summarize([])


def test_seeded_inputs_keep_the_values_of_every_seed():
    x_shape, w_shape = (2, 3, 5, 4), (4, 3, 2, 2)
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(11)
        x_old = rng.standard_normal(x_shape).astype(dtype)
        w_old = rng.standard_normal(w_shape).astype(dtype)
        x, w = timing.make_inputs(x_shape, w_shape, dtype, seed=11)
        assert x.dtype == dtype and x.flags.c_contiguous
        np.testing.assert_array_equal(x, x_old)
        np.testing.assert_array_equal(w, w_old)
        xs, ws = sweep.make_data(ConvCase("t", x_shape, w_shape, 1, 0, 1),
                                 dtype, seed=11)
        np.testing.assert_array_equal(xs, x_old)
        np.testing.assert_array_equal(ws, w_old)
    rng = np.random.default_rng(2)
    a_old = rng.standard_normal(7, np.float32)
    b_old = rng.standard_normal((2, 3), np.float32)
    a, b = timing.seeded_normal(7, (2, 3), dtype=np.float32, seed=2,
                                draw_dtype=np.float32)
    np.testing.assert_array_equal(a, a_old)
    np.testing.assert_array_equal(b, b_old)


def test_sweep_backend_reaches_the_algorithm_check(monkeypatch):
    seen = []

    def fake_reason(name, backend, *config):
        seen.append(backend)
        return "not on this backend"

    monkeypatch.setattr(sweep, "unsupported_reason", fake_reason)
    case = ConvCase("t", (1, 1, 8, 8), (1, 1, 3, 3), 1, 1, 1)
    x, w = sweep.make_data(case)
    with pytest.raises(sweep.NotApplicable):
        sweep.make_runner("direct", case, x, w, backend="cuda")
    with pytest.raises(sweep.NotApplicable):
        sweep.make_runner("direct", case, x, w)
    assert seen == ["cuda", "cpu"]
    assert sweep.SweepConfig().backend == "cpu"


def test_cli_backend_goes_into_the_sweep_config(monkeypatch, capsys):
    configs = []

    def fake_run_sweep(cases, config):
        configs.append(config)
        return sweep.SweepResult(config={}, cases=list(cases), measurements=[])

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    base = ["sweep", "--shape", "1,1,8,8,1", "--kernels", "3", "--peers",
            "scipy-fft", "--no-progress"]
    assert _run_main(base) == 0
    assert _run_main(base + ["--backend", "cuda"]) == 0
    assert [c.backend for c in configs] == ["cpu", "cuda"]
    # The default algorithms are those built for the backend.
    assert configs[0].algorithms == tuple(kernels.built_algorithms())
    assert configs[1].algorithms == tuple(kernels.built_algorithms("cuda"))


def test_auto_follows_a_rewritten_calibration_file(monkeypatch, tmp_path):
    # Thresholds and choices are cached; a new file must still be seen.
    from kernels._calibration import save_thresholds as save
    from kernels._choose import machine_key
    if not {"direct", "im2col"} <= set(kernels.built_algorithms()):
        pytest.skip("needs direct and im2col")

    def save_thresholds(thresholds, path):
        save("cpu", thresholds, machine_key("cpu"), path=path)

    path = tmp_path / "cal.json"
    monkeypatch.setenv("CONVBENCH_CALIBRATION", str(path))
    problem = ((1, 64, 28, 28), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1))
    big = {"direct_max_macs": 0, "winograd_min_channels": 10**6}
    save_thresholds({**big, "im2col_max_area": 9}, path=path)
    assert kernels.choose_algorithm(*problem) == "im2col"
    save_thresholds({**big, "im2col_max_area": 1, "fft_min_area_multi": 10**6},
                    path=path)
    assert kernels.choose_algorithm(*problem) == "direct"


def test_keep_freed_memory_stops_fresh_mappings_of_large_temporaries():
    # A 64 MiB temporary made and freed in a loop: above glibc's largest
    # dynamic mmap threshold (32 MiB), so by default it is mapped and
    # page-faulted afresh every time (544 faults with transparent huge
    # pages on the development VM, 16384 without); with the fixed
    # thresholds it is recycled.
    resource = pytest.importorskip("resource")
    from convbench import machine
    if not machine.keep_freed_memory():
        pytest.skip("no glibc mallopt")
    assert machine.malloc_state().startswith("freed memory kept")
    assert machine.machine_info(measure=False)["malloc"] == machine.malloc_state()

    def churn():
        a = np.ones(1 << 24, np.float32)      # 64 MiB, written
        return float(a[-1])

    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        churn()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
    assert faults < 50, f"{faults:.0f} page faults per 64 MiB temporary"


# --------------------------------------------------------------------------
# The calibration file: keyed by backend and machine, never fatal
# --------------------------------------------------------------------------

def _calibrated(monkeypatch, tmp_path, text):
    path = tmp_path / "cal.json"
    path.write_text(text)
    monkeypatch.setenv("CONVBENCH_CALIBRATION", str(path))
    return path


@pytest.mark.parametrize("text", ["{not json", "[1, 2]",
                                  '{"thresholds": {"direct_max_macs": 0}}',
                                  '{"format": 2, "backends": {"cpu": 7}}'])
def test_a_corrupt_or_old_calibration_file_warns_once_and_uses_defaults(
        monkeypatch, tmp_path, text):
    import warnings
    from kernels._calibration import CalibrationWarning
    from kernels._choose import default_thresholds, thresholds
    _calibrated(monkeypatch, tmp_path, text)
    x = np.ones((1, 2, 8, 8), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert thresholds("cpu") == default_thresholds("cpu")
        kernels.conv2d(x, w)                    # never raises
        kernels.conv2d(x, w)
    ours = [c for c in caught if issubclass(c.category, CalibrationWarning)]
    assert len(ours) == 1, [str(c.message) for c in caught]
    assert "convbench calibrate" in str(ours[0].message)


def test_a_calibration_from_another_machine_is_ignored(monkeypatch, tmp_path):
    import warnings
    from kernels._calibration import CalibrationWarning, save_thresholds
    from kernels._choose import default_thresholds, machine_key, thresholds
    path = _calibrated(monkeypatch, tmp_path, "")
    other = dict(machine_key("cpu"), cpu="some other CPU")
    save_thresholds("cpu", {"direct_max_macs": 1.0}, other, path=path)
    with pytest.warns(CalibrationWarning, match="another machine"):
        assert thresholds("cpu") == default_thresholds("cpu")
    save_thresholds("cpu", {"direct_max_macs": 1.0}, machine_key("cpu"),
                    path=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        assert thresholds("cpu")["direct_max_macs"] == 1.0


def test_the_cpu_machine_key_tells_simd_and_model_apart(monkeypatch,
                                                         tmp_path):
    # A virtual machine names a Zen 3 and a Zen 4 alike ("AMD EPYC"); the
    # key also holds the family, model number and widest SIMD, so that one
    # machine's calibration is not applied on the other.
    from kernels._calibration import CalibrationWarning, save_thresholds
    from kernels._choose import default_thresholds, machine_key, thresholds
    from kernels.cpu import _tuning
    key = _tuning.machine_key()
    assert {"cpu_family", "cpu_model", "simd"} <= set(key)
    if _tuning._cpuinfo():
        assert key["simd"] in ("avx512f", "avx2", "sse4_2", None)
    path = _calibrated(monkeypatch, tmp_path, "")
    other = dict(machine_key("cpu"),
                 simd="avx2" if key["simd"] == "avx512f" else "avx512f")
    save_thresholds("cpu", {"direct_max_macs": 1.0}, other, path=path)
    with pytest.warns(CalibrationWarning, match="another machine"):
        assert thresholds("cpu") == default_thresholds("cpu")


def test_calibration_entries_are_kept_per_backend(monkeypatch, tmp_path):
    import json
    from kernels._calibration import save_thresholds
    from kernels._choose import machine_key, thresholds
    path = _calibrated(monkeypatch, tmp_path, "")
    path.unlink()
    save_thresholds("cuda", {"direct_max_macs": 5.0}, {"gpu": "x"}, path=path)
    save_thresholds("cpu", {"direct_max_macs": 7.0}, machine_key("cpu"),
                    path=path)
    table = json.loads(path.read_text())["backends"]
    assert set(table) == {"cpu", "cuda"}
    assert thresholds("cpu")["direct_max_macs"] == 7.0
