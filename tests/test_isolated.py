"""Worker processes of convbench.isolated and the network comparison."""

import statistics
import sys

import pytest

from convbench import isolated
from convbench.isolated import Worker, WorkerError, worker_times
from convbench.network import compare_network, format_comparison
from convbench.workloads import ConvCase

CASES = [ConvCase("a", (1, 2, 8, 8), (3, 2, 3, 3), 1, "same", 1),
         ConvCase("b", (1, 2, 9, 9), (2, 2, 3, 3), 2, 1, 1)]


def test_each_contender_times_every_round_in_its_own_process():
    result = worker_times(["direct", "im2col"], CASES, 3, isolated=True,
                          sequence=True)
    assert result.status == {"direct": None, "im2col": None}
    assert {n: len(t) for n, t in result.times.items()} == {"direct": 3,
                                                            "im2col": 3}
    assert all(s > 0 for t in result.times.values() for s in t)
    assert set(result.summary()) == {"direct", "im2col"}


def test_a_peer_worker_never_imports_kernels():
    torch = pytest.importorskip("torch")  # noqa: F841
    with Worker(["torch"], CASES) as worker:
        assert worker.status == {"torch": None}
        where = worker.imported(["torch", "kernels", "numba"])
    assert where["torch"] is not None
    assert where["kernels"] is None and where["numba"] is None


@pytest.mark.parametrize("order", [("torch", "kernels"), ("kernels", "torch")])
def test_one_process_imports_in_the_order_asked(order):
    pytest.importorskip("torch")
    with Worker(["direct", "torch"], CASES, import_order=order) as worker:
        where = worker.imported(["torch", "kernels"])
    assert where[order[0]] < where[order[1]]


def test_a_case_an_algorithm_cannot_run_gets_no_times():
    cases = [CASES[0], ConvCase("k9", (1, 1, 12, 12), (1, 1, 9, 9), 1, 0, 1)]
    with Worker(["winograd"], cases) as worker:
        assert worker.status == {"winograd": None}        # runs case 0
        assert worker.case_status["winograd"][0] is None
        assert "UnsupportedConfiguration" in worker.case_status["winograd"][1]
        assert worker.time("winograd", 1) == []
        assert worker.time("winograd", None) == []      # not the whole sequence
        assert len(worker.time("winograd", 0, calls=2)) == 2
        # Inside the sequence: per call, a time for case 0 and none for
        # case 1, which the sequence skips.
        rows = worker.time("winograd", None, calls=2, per_case=True)
        assert len(rows) == 2
        assert all(row[0] > 0 and row[1] is None for row in rows)


def test_a_job_can_bound_the_weight_cache():
    from convbench._worker import _Job
    from kernels._weight_cache import transformed_weights
    before = transformed_weights.max_entries, transformed_weights.max_bytes
    try:
        _Job({"contenders": ["direct"], "cases": [list(CASES[0])],
              "dtype": "float32", "seed": 0, "warmup": 0,
              "weight_cache": [7, 12345]})
        assert (transformed_weights.max_entries,
                transformed_weights.max_bytes) == (7, 12345)
    finally:
        transformed_weights.max_entries, transformed_weights.max_bytes = before


def test_unknown_contender_is_reported_not_raised():
    result = worker_times(["direct", "no-such"], CASES, 2, isolated=True)
    assert result.status["direct"] is None
    assert "no-such" in result.status["no-such"]
    assert "no-such" not in result.times


def test_a_dead_worker_raises_with_its_stderr(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'boom: no worker here' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(WorkerError, match="(?s)code 3.*boom"):
        Worker(["direct"], CASES, python=str(fake))


def test_network_comparison_on_lenet(monkeypatch):
    pytest.importorskip("torch")
    c = compare_network("lenet5", batch=1, rounds=2,
                        algorithms=("direct", "im2col"),
                        settings=("isolated", "torch-first"))
    assert set(c.times) == {"isolated", "torch-first"}
    assert all(set(t) == {"auto", "torch"} for t in c.times.values())
    assert c.layers == 3 and c.distinct == 3
    for setting in c.times:
        assert len(c.ratios(setting)) == 2
    assert set(c.per_layer) == {"C1", "C3", "C5"}
    assert all(set(t) == {"direct", "im2col"} for t in c.per_layer.values())
    # The per-layer best is the sum of each layer's smallest median.
    assert c.best_sum() == pytest.approx(
        sum(min(t.values()) for t in c.per_layer.values()))
    assert len(c.whole_over_best()) == 2 and all(
        r > 0 for r in c.whole_over_best())
    text = format_comparison(c)
    assert "torch-first" in text and "per-layer best" in text
    assert "auto whole network in the same rounds" in text
    # torch ran the sequence in the same rounds: LeNet-5's three 5x5
    # convolutions are one kind, whose sums are the calls' medians.
    assert len(c.sequence_rounds["torch"]) == 2
    assert c.call_kinds == ["5x5/1"] * 3
    ((kind, (calls, ours, theirs)),) = c.by_kind().items()
    assert (kind, calls) == ("5x5/1", 3)
    for name, total in (("auto", ours), ("torch", theirs)):
        rows = c.sequence_rounds[name]
        assert total == pytest.approx(sum(
            statistics.median(row[i] for row in rows) for i in range(3)))
    assert "by kind of layer" in text and "torch / auto" in text


@pytest.mark.parametrize("keep", [True, False])
def test_network_workers_keep_freed_memory_unless_told(monkeypatch, keep):
    # Every worker of the comparison (settings and per-layer) is started
    # with the flag; the table says when malloc's defaults were kept.
    pytest.importorskip("torch")            # the comparison's peer
    from convbench import network
    seen = []
    real_worker = network.Worker

    def spy_worker(*args, **kwargs):
        seen.append(kwargs.get("keep_freed_memory"))
        return real_worker(*args, **kwargs)

    real_times = network.settings_times

    def spy_times(*args, **kwargs):
        seen.append(kwargs.get("keep_freed_memory"))
        return real_times(*args, **kwargs)

    monkeypatch.setattr(network, "Worker", spy_worker)
    monkeypatch.setattr(network, "settings_times", spy_times)
    c = compare_network("lenet5", batch=1, rounds=1, algorithms=("direct",),
                        settings=("isolated",), keep_freed_memory=keep)
    assert seen and all(flag is keep for flag in seen)
    assert ("freed memory not kept" in format_comparison(c)) is not keep


def test_whole_over_best_takes_each_calls_fastest_in_the_same_round():
    from convbench.network import NetworkComparison
    c = NetworkComparison("net", 1, "auto", 2, 2, 2, "float32")
    c.per_layer = {"a": {"direct": 1.0, "im2col": 2.0},
                   "b": {"direct": 2.0, "im2col": 1.0}}
    c.counts = {"a": 1, "b": 1}
    c.sequence_rounds = {"direct": [[1.0, 2.0], [2.0, 4.0]],
                         "im2col": [[2.0, None], [3.0, 1.0]],
                         "auto": [[1.5, 1.5], [3.0, 3.0]]}
    # Round 0: best 1 + 2 (im2col did not run b); round 1: 2 + 1.
    assert c.whole_over_best() == pytest.approx([3.0 / 3.0, 6.0 / 3.0])


def test_by_kind_sums_each_calls_median_over_the_kinds_calls():
    from convbench.network import NetworkComparison
    c = NetworkComparison("net", 1, "auto", 3, 3, 3, "float32")
    c.call_kinds = ["3x3/1", "1x1/1", "3x3/1"]
    c.sequence_rounds = {"auto": [[1.0, 5.0, 2.0], [3.0, 6.0, 2.0],
                                  [2.0, 7.0, 9.0]],
                         "torch": [[4.0, 1.0, 1.0], [4.0, 2.0, 1.0],
                                   [5.0, 3.0, 1.0]]}
    # 3x3/1: medians 2 + 2 (auto), 4 + 1 (torch); 1x1/1: 6, 2.
    assert c.by_kind() == {"3x3/1": (2, 4.0, 5.0), "1x1/1": (1, 6.0, 2.0)}
    c.sequence_rounds["auto"][1][2] = None     # a call that did not run
    assert c.by_kind() == {}
    assert NetworkComparison("net", 1, "auto", 3, 3, 3, "f").by_kind() == {}


def test_layer_kind_names_kernel_size_and_stride():
    from convbench.network import layer_kind
    from convbench.workloads import conv_layers
    kinds = {layer_kind(c) for c in conv_layers("resnet50")}
    assert kinds == {"7x7/2", "1x1/1", "3x3/1", "3x3/2", "1x1/2"}


def test_followed_by_relu_clips_the_output_in_place():
    import numpy as np
    from convbench._worker import followed_by_relu
    y = np.array([[-1.5, 2.0], [0.5, -0.0]], np.float32)
    out = followed_by_relu(lambda: y)()
    assert out is y and np.array_equal(y, [[0.0, 2.0], [0.5, 0.0]])


def test_followed_by_relu_clips_a_torch_output():
    torch = pytest.importorskip("torch")
    t = torch.tensor([-1.0, 3.0])
    from convbench._worker import followed_by_relu
    assert followed_by_relu(lambda: t)().tolist() == [0.0, 3.0]


def test_a_worker_times_calls_followed_by_relu():
    with Worker(["direct"], CASES, between="relu") as w:
        assert w.status["direct"] is None
        (row,) = w.time("direct", None, 1, per_case=True)
        assert len(row) == 2 and all(t > 0 for t in row)
    with pytest.raises(ValueError, match="between must be one of"):
        Worker(["direct"], CASES, between="gelu")


def test_network_command_says_what_runs_between_calls(capsys):
    pytest.importorskip("torch")
    from convbench.cli import main
    assert main(["network", "lenet5", "--rounds", "1", "--settings",
                 "isolated", "--no-per-layer", "--between", "relu"]) == 0
    out = capsys.readouterr().out
    assert "each call followed by a NumPy ReLU on its output" in out


def test_network_control_setting_is_kernels_first_in_its_own_worker(
        monkeypatch, capsys):
    # Asked for by name, the control runs as kernels-first does (one
    # worker for both, kernels imported first) and gets its own row.
    pytest.importorskip("torch")
    from convbench import network
    from convbench.cli import main
    seen = []
    real_times = network.settings_times

    def spy_times(names, cases, rounds, settings, **kwargs):
        seen.extend(settings)
        return real_times(names, cases, rounds, settings, **kwargs)

    monkeypatch.setattr(network, "settings_times", spy_times)
    assert main(["network", "lenet5", "--rounds", "1", "--settings",
                 "kernels-first,kernels-first-again", "--no-per-layer"]) == 0
    assert seen == [dict(isolated=False, import_order=("kernels", "torch"))] * 2
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines()
            if line.startswith("kernels-first")]
    assert rows == ["kernels-first", "kernels-first-again"]


def test_network_command_rejects_unknown_settings(capsys):
    from convbench.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["network", "lenet5", "--settings", "isolated,both"])
    assert exc.value.code == 2
    assert "unknown setting 'both'" in capsys.readouterr().err


# Problems of every op in workers (convbench.ops.worker_case).

def _problems():
    from convbench.problems import parse_problem
    return [parse_problem("max_pool2d_backward n1 c3 h9 w8 r3 s2 p1"),
            parse_problem("conv1d n2 c1 w300 k1 r7 pvalid"),
            parse_problem("conv_transpose2d n1 c4 h5 w5 k2 r2 s2")]


def test_a_peer_worker_runs_problems_of_every_op_without_kernels():
    pytest.importorskip("torch")
    with Worker(["torch", "scipy-oa"], _problems()) as worker:
        assert worker.status == {"torch": None, "scipy-oa": None}
        # SciPy runs the single-channel conv1d only, and says why not else.
        assert worker.case_status["scipy-oa"][1] is None
        assert "SciPy" in worker.case_status["scipy-oa"][0]
        assert all(s is None for s in worker.case_status["torch"])
        assert len(worker.time("torch", 0, calls=2)) == 2
        where = worker.imported(["kernels", "numba", "convbench.ops"])
    assert set(where.values()) == {None}


def test_a_worker_computes_what_the_parent_computes():
    """The worker draws the same data and its runner gives the same
    output: the parent's reference error of the worker's kernel, run
    here from the worker's own functions, is the parent's."""
    pytest.importorskip("torch")
    import numpy as np
    from convbench import _worker, ops
    for p in _problems():
        case = isolated._plain_case(p)
        data = _worker._case_data(case, "float32", 5)
        mine = ops.make_data(p, np.float32, 5)
        assert data.keys() == mine.keys()
        assert all(np.array_equal(data[k], mine[k]) for k in data)
        ours = _worker._runner("direct" if p.k else "kernels", case, data,
                               "cpu")()
        theirs = _worker._runner("torch", case, data, "cpu")()
        ref = ops.Reference(p, mine, check_batch=0)
        for name, y in (("direct", ours), ("torch", theirs)):
            units, constant, _ = ref.error_units(
                name if p.k else "kernels", np.float32, y)
            assert units <= constant


def test_sweep_isolated_times_problems_of_every_op(tmp_path):
    pytest.importorskip("torch")
    import json
    from convbench import cli
    path = tmp_path / "p.txt"
    path.write_text("\n".join(p.descriptor() for p in _problems()) + "\n")
    out = tmp_path / "s.json"
    assert cli.main(["sweep", "--problems", str(path), "--isolated",
                     "--repeats", "2", "--peers", "torch", "--algorithms",
                     "direct", "--no-check", "--no-progress", "--json",
                     str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    timed = [r for r in rows if r["status"] == "ok"]
    assert {r["op"] for r in timed} == {p.op for p in _problems()}
    assert all(len(r["isolated_times_s"]) == 2 for r in timed)


def test_call_medians_and_the_per_call_lines_show_ours_against_torch():
    from convbench.network import NetworkComparison, format_comparison
    c = NetworkComparison("net", 1, "auto", 2, 2, 3, "float32")
    c.per_layer = {"a": {"direct": 1.0}, "b": {"direct": 2.0}}
    c.counts = {"a": 1, "b": 1}
    c.call_kinds = ["3x3/1", "1x1/1"]
    c.sequence_rounds = {"auto": [[1.0, 4.0], [3.0, 8.0], [2.0, 6.0]],
                         "torch": [[4.0, 1.0], [8.0, 1.0], [6.0, None]]}
    assert c.call_medians("auto") == [2.0, 6.0]
    assert c.call_medians("torch") == [6.0, None]
    assert c.call_medians("fft") == []
    lines = format_comparison(c).splitlines()
    (a,) = [line for line in lines if line.startswith("  a:")]
    (b,) = [line for line in lines if line.startswith("  b:")]
    assert a.endswith("| auto 2e+03, torch 6e+03 (3.00)")
    assert "torch" not in b


class _RecordingWorker:
    """Stands in for :class:`convbench.isolated.Worker`: records which
    worker timed which contender, in order, and answers a fixed time."""

    log = []

    def __init__(self, contenders, cases, *, import_order=(), **options):
        self.contenders = list(contenders)
        self.import_order = tuple(import_order)
        self.status = {name: None for name in self.contenders}

    def time(self, name, case=None, calls=1, per_case=False):
        assert name in self.contenders
        self.log.append((self.import_order, name))
        return [float(len(self.log))] * calls

    def close(self):
        pass


def test_settings_run_interleaved_round_by_round(monkeypatch):
    monkeypatch.setattr(isolated, "Worker", _RecordingWorker)
    _RecordingWorker.log = []
    settings = [dict(isolated=False, import_order=("kernels", "torch")),
                dict(isolated=False, import_order=("torch", "kernels")),
                dict(isolated=True)]
    names = ["direct", "im2col", "torch"]
    results = isolated.settings_times(names, CASES, 4, settings)
    log = _RecordingWorker.log
    assert len(log) == 4 * 3 * len(names)
    orders = [s.get("import_order", ()) for s in settings]
    firsts = []
    for r in range(4):
        block = log[r * 9:(r + 1) * 9]          # one round: every setting
        runs = [block[i * 3:(i + 1) * 3] for i in range(3)]
        seen = [run[0][0] for run in runs]
        assert sorted(seen) == sorted(orders)   # each setting once a round
        for run in runs:                        # a setting's calls together
            assert {o for o, _ in run} == {run[0][0]}
            assert sorted(n for _, n in run) == sorted(names)
        firsts.append(seen[0])
    assert len(set(firsts)) > 1                 # the settings' order moves
    for result in results:
        assert {n: len(t) for n, t in result.times.items()} == {
            n: 4 for n in names}
    # each setting's times are its own calls, in round order
    kf = [float(i + 1) for i, (o, n) in enumerate(log)
          if o == orders[0] and n == "direct"]
    assert results[0].times["direct"] == kf


def test_one_setting_keeps_the_contenders_order_of_worker_times(monkeypatch):
    from convbench.timing import repeat_order
    monkeypatch.setattr(isolated, "Worker", _RecordingWorker)
    _RecordingWorker.log = []
    names = ["direct", "im2col", "winograd"]
    worker_times(names, CASES, 3, isolated=True, order_seed=5)
    expected = [n for r in range(3) for n in repeat_order(names, r, 5)]
    assert [n for _, n in _RecordingWorker.log] == expected


def test_per_round_ratios_pair_rounds_and_skip_missing_contenders():
    a = isolated.WorkerTimes(times={"direct": [2.0, 3.0]})
    b = isolated.WorkerTimes(times={"direct": [1.0, 6.0], "im2col": [1.0]})
    assert isolated.per_round_ratios(a, b, "direct") == [2.0, 0.5]
    assert isolated.per_round_ratios(a, b, "im2col") == []


def test_network_settings_run_in_one_interleaved_run(monkeypatch):
    from convbench import network
    calls = []

    def fake_settings_times(names, cases, rounds, settings, **options):
        calls.append([(s["isolated"], tuple(s["import_order"]))
                      for s in settings])
        assert options["sequence"] is True
        return [isolated.WorkerTimes(times={n: [1.0 + i] * rounds
                                            for n in names})
                for i, _ in enumerate(settings)]

    monkeypatch.setattr(network, "settings_times", fake_settings_times)
    c = compare_network("lenet5", rounds=2, per_layer=False,
                        settings=("torch-first", "isolated"))
    assert calls == [[network.SETTINGS["torch-first"],
                      network.SETTINGS["isolated"]]]
    assert c.times["torch-first"]["auto"] == [1.0, 1.0]
    assert c.times["isolated"]["torch"] == [2.0, 2.0]
