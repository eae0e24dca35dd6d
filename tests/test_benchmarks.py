"""The asv suite in benchmarks/: discovery, parameter grids, tracked shapes.

Nothing here times anything: the checks are about the suite's structure
(what asv would enumerate and record), plus one tiny setup + call.
"""

from __future__ import annotations

import inspect
import math
import os

import numpy as np
import pytest

import kernels
from kernels import accuracy
from convbench import workloads

from benchmarks import bench_conv, bench_ops, common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: benchmarks the documentation names (docs/benchmarks.md): a rename must
#: update the docs and this list together.
DOCUMENTED = [
    "bench_conv.Conv2dKernelSize.time_conv2d",
    "bench_conv.Conv2dKernelSize.track_error_bound_units",
    "bench_conv.Conv2dWorkloads.time_conv2d",
    "bench_conv.Conv2dWorkloadsError.track_error_bound_units",
    "bench_conv.Conv2dScratch.peakmem_conv2d",
    "bench_conv.Crossover.track_crossover_direct_fft",
    "bench_conv.Crossover.track_crossover_im2col_fft",
    "bench_conv.Crossover.track_crossover_im2col_direct",
    "bench_conv.Crossover.track_crossover_direct_winograd_channels",
    "bench_ops.PoolingWorkloads.time_pool",
    "bench_ops.PoolingBackwardWorkloads.time_pool_backward",
    "bench_ops.TransposedWorkloads.time_conv_transpose2d",
    "bench_ops.Conv2dBackwardWorkloads.time_conv2d_backward",
]


@pytest.fixture(scope="module")
def discovered():
    discovery = pytest.importorskip("asv_runner.discovery")
    return {b.name: b for b in discovery.disc_benchmarks(
        os.path.join(ROOT, "benchmarks"))}


def test_asv_discovers_every_documented_benchmark(discovered):
    missing = [name for name in DOCUMENTED if name not in discovered]
    assert not missing, f"asv does not discover {missing}"


def test_parameter_grids_are_consistent(discovered):
    for name, bench in discovered.items():
        params, names = bench.params, bench.param_names
        assert len(params) == len(names), name
        for values in params:
            assert values, f"{name}: an empty parameter list"
            # asv keys results by repr(value): duplicates would collide.
            assert len(set(map(repr, values))) == len(values), name


def test_every_backend_and_contender_is_in_the_grids():
    assert bench_conv.Conv2dWorkloads.params[1] == list(kernels.BACKENDS)
    contenders = bench_conv.Conv2dWorkloads.params[0]
    for name in list(kernels.ALGORITHMS) + ["auto", "scipy-direct",
                                             "scipy-fft", "torch"]:
        assert name in contenders


def test_every_named_workload_has_benchmarked_layers():
    layers = common.representative_layers()
    for name in workloads.WORKLOADS:
        mine = [k for k in layers if k.startswith(name + ": ")]
        assert 1 <= len(mine) <= 2, (name, mine)
    for key, case in layers.items():
        workload = key.split(": ")[0]
        cases = workloads.WORKLOADS[workload].build()
        assert case in cases
        smallest = min(map(workloads.case_flops, cases))
        assert (workloads.case_flops(case) <= 1e10
                or workloads.case_flops(case) == smallest)


def test_workload_ops_cover_pooling_and_transposed_layers():
    ops = bench_ops.workload_ops(bench_ops.POOL_OPS)
    transposed = bench_ops.workload_ops(("conv_transpose2d",))
    for name, wl in workloads.WORKLOADS.items():
        kinds = {op.op for op in wl.other_ops()}
        if kinds & set(bench_ops.POOL_OPS):
            assert any(k.startswith(name + ": ") for k in ops), name
        if "conv_transpose2d" in kinds:
            assert any(k.startswith(name + ": ") for k in transposed), name
    assert all(op.op == "conv_transpose2d" for op in transposed.values())


def test_crossover_sweeps_are_well_formed():
    built = set(kernels.ALGORITHMS)
    for name, (a, b, x_shape, k_out, sizes) in \
            bench_conv.Crossover.KERNEL_SWEEPS.items():
        assert name == f"{a}_{b}"
        assert {a, b} <= built and a != b
        assert len(x_shape) == 4 and k_out >= 1
        assert list(sizes) == sorted(set(sizes)) and len(sizes) >= 5
        method = getattr(bench_conv.Crossover, f"track_crossover_{name}")
        assert method.unit == "kernel size"
    channels = bench_conv.Crossover.WINOGRAD_CHANNELS
    assert list(channels) == sorted(set(channels)) and len(channels) >= 5
    method = bench_conv.Crossover.track_crossover_direct_winograd_channels
    assert method.unit == "channels"


def test_track_units():
    assert bench_conv.Conv2dWorkloadsError.track_error_bound_units.unit == \
        "bound units"
    assert bench_conv.Conv2dKernelSize.track_error_bound_units.unit == \
        "bound units"


def test_spread_picks_first_and_last():
    assert common._spread(5, 2) == [0, 4]
    assert common._spread(1, 2) == [0]
    assert common._spread(5, 1) == [0]
    assert common._spread(5, 3) == [0, 2, 4]


def test_unusable_backend_is_skipped(monkeypatch):
    common._backend_unusable.cache_clear()
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    try:
        with pytest.raises(NotImplementedError):
            common.require_backend("cuda")
        common.require_backend("cpu")
    finally:
        common._backend_unusable.cache_clear()


def test_tiny_workload_layer_runs_and_tracks_error():
    layer = "lenet5: C5"
    bench = bench_conv.Conv2dWorkloads()
    bench.setup("direct", "cpu", layer)
    bench.time_conv2d("direct", "cpu", layer)
    check = bench_conv.Conv2dWorkloadsError()
    check.setup("direct", "cpu", layer)
    error = check.track_error_bound_units("direct", "cpu", layer)
    # within direct's documented constant (error units are u |x| |w|)
    bound = accuracy.error_constant("direct", np.float32)
    assert math.isfinite(error) and 0 <= error <= bound


def test_slow_contender_is_skipped():
    with pytest.raises(NotImplementedError, match="limit"):
        common.skip_if_slow(lambda: sum(range(10**5)), limit=0.0)
    common.skip_if_slow(lambda: None, limit=1.0)


def test_benchmark_methods_take_the_declared_parameters(discovered):
    for name, bench in discovered.items():
        sig = inspect.signature(bench.func)
        n = len(sig.parameters)
        expected = len(bench.param_names)
        # setup_cache users receive the cache first
        assert n in (expected, expected + 1), (name, n, expected)


def test_no_benchmark_method_raises_not_implemented(discovered):
    # asv 0.6 reports NotImplementedError as "skipped" only from setup;
    # from the timed/tracked method itself it is a failure (exit status 2).
    for name, bench in discovered.items():
        source = inspect.getsource(bench.func)
        assert "raise NotImplementedError" not in source, name


def test_layer_table_times_each_contender_in_every_setting(capsys):
    from benchmarks import layer_table
    layer_table.main(["--rounds", "1", "--workload", "lenet5", "--layers", "0",
                      "--contenders", "direct,im2col"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("## C1: x (64, 1, 32, 32)")
    settings = [label for label, _ in layer_table.SETTINGS]
    assert [line.split("  ")[1].strip() for line in lines[1:4]] == settings
    for line in lines[1:4]:
        assert "direct " in line and "im2col " in line
    assert lines[4].startswith("  torch first / kernels first, per round: ")
    assert "direct " in lines[4] and "im2col " in lines[4]


def test_layer_table_control_adds_a_second_kernels_first_worker(capsys):
    from benchmarks import layer_table
    layer_table.main(["--rounds", "1", "--workload", "lenet5", "--layers", "0",
                      "--contenders", "direct", "--control"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.strip() for line in lines[1:5]]
    assert rows[3].startswith("kernels first again direct ")
    assert lines[5].startswith("  torch first / kernels first, per round: ")
    assert lines[6].startswith(
        "  kernels first again / kernels first, per round: direct ")


def test_layer_table_order_ratios_pair_the_two_settings_round_by_round():
    from benchmarks import layer_table
    from convbench.isolated import WorkerTimes
    first = WorkerTimes(times={"direct": [1.0, 2.0, 4.0], "torch": [1.0]})
    then = WorkerTimes(times={"direct": [1.1, 1.0, 4.4], "torch": [0.5]})
    times = {"isolated": WorkerTimes(), "kernels first": first,
             "torch first": then}
    ratios = layer_table.order_ratios(times)
    assert ratios["direct"] == pytest.approx([1.1, 0.5, 1.1])
    assert ratios["torch"] == pytest.approx([0.5])
    line = layer_table.format_ratios(ratios)
    assert "direct 1.10 (0.50-1.10)" in line and "torch 0.50 (0.50-0.50)" in line


def test_layer_table_rows_give_the_peer_over_each_contender():
    from benchmarks import layer_table
    row = layer_table.format_row("isolated",
                                 {"winograd": (2e-3, 1.5e-3, 1.4),
                                  "torch": (3e-3, 2.4e-3, None)})
    assert "winograd 2.00 (1.50, min 1.60, round 1.40)" in row
    assert row.rstrip().endswith("torch 3.00")


def test_layer_table_rows_pair_the_peer_with_each_contender_per_round():
    # Round by round torch/winograd is 3, 1, 4, 1, 3 (median 3), while
    # the medians alone give 8 / 3.
    from benchmarks import layer_table
    from convbench.isolated import WorkerTimes
    t = WorkerTimes(times={"winograd": [1.0, 4.0, 2.0, 8.0, 3.0],
                           "torch": [3.0, 4.0, 8.0, 8.0, 9.0]})
    [(label, stats)] = layer_table.layer_rows({"kernels first": t})
    assert label == "kernels first"
    assert stats["winograd"] == pytest.approx((3.0, 1.0, 3.0))
    assert stats["torch"] == (8.0, 3.0, None)


def test_import_order_tracks_pair_the_two_orders_round_by_round(monkeypatch):
    pytest.importorskip("torch")
    from benchmarks import bench_threads
    from convbench import isolated

    def fake_settings_times(names, cases, rounds, settings, **options):
        assert [s["import_order"] for s in settings] == [
            ("kernels", "torch"), ("torch", "kernels")]
        kf = {"direct": [1.0, 2.0, 3.0], "torch": [2.0, 2.0, 2.0]}
        tf = {"direct": [1.5, 1.0, 3.3], "torch": [2.0, 4.0, 4.0]}
        return [isolated.WorkerTimes(times=t) for t in (kf, tf)]

    monkeypatch.setattr(isolated, "settings_times", fake_settings_times)
    bench = bench_threads.TrackImportOrder()
    results = bench.setup_cache()
    args = (results, "torch-first", "64@56", "direct")
    bench.setup(*args)
    assert bench.track_ms(*args) == pytest.approx(1500.0)   # ms
    assert bench.track_speed_vs_torch(*args) == pytest.approx(4.0 / 1.5)
    assert bench.track_over_other_order(*args) == pytest.approx(1.1)
    args = (results, "kernels-first", "64@56", "direct")
    bench.setup(*args)
    assert bench.track_over_other_order(*args) == pytest.approx(1 / 1.1)
    with pytest.raises(NotImplementedError):
        bench.setup(results, "kernels-first", "64@56", "winograd")
