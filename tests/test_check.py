"""convbench.check and the ``convbench check`` / ``sweep --problems`` CLI.

``run_check`` holds every algorithm to the float64 reference in units of
its documented bound (:mod:`kernels.accuracy`); a bound lowered on
purpose must turn ``passed`` into ``failed`` (the check can fail), and the
CLI must say so in its exit code and summary line.
"""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

import kernels
from kernels import accuracy
from convbench import cli
from convbench.check import (STATUSES, CheckResult, exit_code, format_check,
                             run_check, summary_line)
from convbench.problems import parse_problem, read_problems

ALGORITHMS = ["direct", "im2col", "winograd", "fft", "auto"]

PROBLEMS = [
    "conv2d n2 c4 h9 w8 k6 r3 p1 g2 name=conv",
    "conv2d n1 c2 h9 w9 k2 r3 s2 p1x0 name=asym",           # ops.Reference
    "conv_transpose2d n1 c4 h5 w6 k4 r3 s2 p1 name=tconv",
    "max_pool2d n2 c3 h9 w8 r3 s2 p1 name=pool",
    "conv2d_backward_weights n2 c4 h9 w8 k6 r3 s1 p1 g2 name=wgrad",
]


def _problems(lines=PROBLEMS):
    return [parse_problem(line) for line in lines]


def _counts(results):
    return {s: sum(r.status == s for r in results) for s in STATUSES}


def _summary_counts(line):
    """{status: count} read back from a summary line."""
    found = dict((word.rstrip("s") if word.startswith("error") else word,
                  int(n)) for n, word in re.findall(r"(\d+) (\w+)", line))
    return found


@pytest.fixture(scope="module")
def results():
    return run_check(_problems(), ALGORITHMS)


def test_every_algorithm_passes_or_is_unsupported(results):
    # Pooling runs its one contender; the convolutions every algorithm.
    expected = []
    for p in _problems():
        names = ["kernels"] if p.op == "max_pool2d" else ALGORITHMS
        expected += [(p.label, name) for name in names]
    assert [(r.label, r.algorithm) for r in results] == expected
    for r in results:
        assert r.status in ("passed", "unsupported"), r
        if r.status == "passed":
            assert r.units is not None and r.constant is not None
            assert r.units <= r.constant
            assert r.excess is not None and r.excess <= 1
            assert r.checked
        else:
            assert r.reason
            assert r.units is None
    assert exit_code(results) == 0
    # direct computes everything.
    assert all(r.status == "passed" for r in results
               if r.algorithm in ("direct", "kernels", "auto"))


def test_results_name_their_problem(results):
    by_label = {p.label: p for p in _problems()}
    for r in results:
        assert parse_problem(r.problem) == by_label[r.label]


def test_bounds_are_the_documented_ones(results):
    for r in results:
        if r.status != "passed":
            continue
        if r.algorithm == "kernels":         # max pooling is exact
            assert (r.units, r.constant) == (0.0, 0.0)
        elif r.algorithm == "auto":
            assert r.constant == accuracy.error_constant(r.model, "float32")
            if r.chose is not None:
                assert r.model == r.chose
        else:
            assert r.model == r.algorithm
            assert r.constant == accuracy.error_constant(r.algorithm,
                                                         "float32")


def test_winograd_on_a_strided_transposed_problem_is_unsupported(results):
    (r,) = [r for r in results
            if r.label == "tconv" and r.algorithm == "winograd"]
    assert r.status == "unsupported"
    assert "stride" in r.reason
    assert r.units is None and r.excess is None


def test_summary_line_counts_the_statuses(results):
    line = summary_line(results)
    counts = _counts(results)
    assert _summary_counts(line) == counts
    assert sum(counts.values()) == len(results)
    assert counts["unsupported"] >= 1 and counts["passed"] >= 1
    # One result of each status: "1 error", not "1 errors".
    one_each = [CheckResult("l", "conv2d n1 c1 h3 w3 k1 r1", "direct", s)
                for s in STATUSES]
    assert summary_line(one_each) == ("1 passed, 1 failed, 1 unsupported, "
                                      "1 unchecked, 1 error")
    text = format_check(results)
    assert text.splitlines()[-1] == line
    for r in results:
        assert r.label in text


def test_exit_code_is_one_on_failure_or_error():
    def result(status):
        return CheckResult("l", "conv2d n1 c1 h3 w3 k1 r1", "direct", status)
    assert exit_code([result("passed"), result("unsupported"),
                      result("unchecked")]) == 0
    assert exit_code([result("passed"), result("failed")]) == 1
    assert exit_code([result("error")]) == 1
    assert exit_code([]) == 0


def test_excess_is_units_over_the_constant():
    r = CheckResult("l", "d", "direct", "passed", units=3.0, constant=12.0)
    assert r.excess == 0.25
    assert CheckResult("l", "d", "kernels", "passed", units=0.0,
                       constant=0.0).excess == 0.0
    assert CheckResult("l", "d", "kernels", "failed", units=1e-9,
                       constant=0.0).excess == float("inf")
    assert CheckResult("l", "d", "direct", "unsupported").excess is None


# --------------------------------------------------------------------------
# A bound lowered on purpose: the check fails
# --------------------------------------------------------------------------

@pytest.fixture
def tiny_direct_bound(monkeypatch):
    monkeypatch.setitem(accuracy.ERROR_CONSTANTS["direct"], "float32", 1e-6)


def test_a_lowered_bound_fails(tiny_direct_bound):
    problems = _problems([PROBLEMS[0], PROBLEMS[1], PROBLEMS[2]])
    results = run_check(problems, ["direct", "fft"])
    direct = [r for r in results if r.algorithm == "direct"]
    assert [r.status for r in direct] == ["failed"] * 3
    for r in direct:
        assert r.constant == 1e-6
        assert r.excess > 1
        assert r.units > 1e-6
        assert "bound" in r.reason
    # fft keeps its bound.
    assert all(r.status == "passed" for r in results if r.algorithm == "fft")
    assert exit_code(results) == 1
    counts = _summary_counts(summary_line(results))
    assert (counts["passed"], counts["failed"]) == (3, 3)


@pytest.fixture
def problem_file(tmp_path):
    path = tmp_path / "layers.txt"
    path.write_text("# two small layers\n"
                    "conv2d n1 c4 h8 w8 k4 r3 p1 name=first\n"
                    "conv2d n1 c2 h7 w9 k2 r3 s2 p1x0 name=second\n")
    return path


def test_cli_check_fails_with_a_lowered_bound(tiny_direct_bound,
                                             problem_file, capsys):
    code = cli.main(["check", "--problems", str(problem_file),
                     "--algorithms", "direct", "--no-progress"])
    assert code == 1
    out = capsys.readouterr().out
    assert "0 passed, 2 failed, 0 unsupported, 0 unchecked, 0 errors" in out
    assert re.search(r"^first\s+direct\s+FAILED", out, re.M)
    assert "first direct failed:" in out


def test_cli_check_passes(problem_file, tmp_path, capsys):
    out_json = tmp_path / "check.json"
    code = cli.main(["check", "--problems", str(problem_file),
                     "--algorithms", "direct,auto", "--no-progress",
                     "--json", str(out_json)])
    assert code == 0
    out = capsys.readouterr().out
    assert "4 passed, 0 failed, 0 unsupported, 0 unchecked, 0 errors" in out
    data = json.loads(out_json.read_text())
    assert data["summary"] == ("4 passed, 0 failed, 0 unsupported, "
                               "0 unchecked, 0 errors")
    assert [(r["label"], r["algorithm"], r["status"])
            for r in data["results"]] == [
        ("first", "direct", "passed"), ("first", "auto", "passed"),
        ("second", "direct", "passed"), ("second", "auto", "passed")]


# --------------------------------------------------------------------------
# Reference budget
# --------------------------------------------------------------------------

def test_transposed_over_budget_is_unchecked():
    (r,) = run_check(_problems(["conv_transpose2d n1 c4 h5 w6 k4 r3 s2 p1"]),
                     ["direct"], check_macs=10)
    assert r.status == "unchecked"
    assert "check-macs" in r.reason
    assert r.units is None
    assert exit_code([r]) == 0


def test_dilated_conv2d_over_budget_is_unchecked():
    # Not the cropping path (dilation): the reference is all or nothing.
    (r,) = run_check(_problems(["conv2d n1 c2 h9 w9 k2 r3 p2 d2"]),
                     ["direct"], check_macs=10)
    assert r.status == "unchecked"


def test_conv2d_over_budget_is_cropped():
    p = parse_problem("conv2d n2 c4 h9 w8 k6 r3 p1 g2")
    (r,) = run_check([p], ["direct"], check_macs=10)
    assert r.status == "passed"
    assert r.units <= r.constant
    # A crop of the output: fewer rows than the 9 x 8 of each image.
    assert "%" in r.checked
    fraction = int(re.search(r"\((\d+)%\)", r.checked).group(1))
    assert fraction < 100
    (full,) = run_check([p], ["direct"])
    assert "(100%)" in full.checked


# --------------------------------------------------------------------------
# CLI errors
# --------------------------------------------------------------------------

def _cli_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_check_without_problems_is_an_error(capsys):
    err = _cli_error(["check"], capsys)
    assert "--problems" in err and "--shape" in err


def test_check_on_a_missing_file(tmp_path, capsys):
    missing = tmp_path / "absent.txt"
    err = _cli_error(["check", "--problems", str(missing)], capsys)
    assert "--problems" in err and str(missing) in err


def test_check_on_a_malformed_file_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.txt"
    path.write_text("conv2d n1 c4 h8 w8 k4 r3\n\nconv2d n1 c4 h8 w8 k4 r3 g3\n")
    err = _cli_error(["check", "--problems", str(path)], capsys)
    assert f"{path}:3" in err
    assert "'g'" in err


def test_check_with_an_unknown_op(problem_file, capsys):
    err = _cli_error(["check", "--problems", str(problem_file), "--op",
                      "conv9d"], capsys)
    assert "--op" in err and "conv9d" in err


def test_check_with_an_op_not_in_the_file(problem_file, capsys):
    err = _cli_error(["check", "--problems", str(problem_file), "--op",
                      "avg_pool2d"], capsys)
    assert "--op" in err and "avg_pool2d" in err


def test_check_with_an_unknown_algorithm(problem_file, capsys):
    err = _cli_error(["check", "--problems", str(problem_file),
                      "--algorithms", "bogus"], capsys)
    assert "--algorithms" in err and "bogus" in err


def test_check_with_an_unknown_direction(problem_file, capsys):
    err = _cli_error(["check", "--problems", str(problem_file),
                      "--direction", "sideways"], capsys)
    assert "--direction" in err and "sideways" in err


# --------------------------------------------------------------------------
# convbench sweep on problem files
# --------------------------------------------------------------------------

TINY = ("conv2d n1 c4 h8 w8 k4 r3 p1 name=convA\n"
        "max_pool2d n1 c4 h8 w8 r3 s2 p1 name=poolB\n"
        "conv_transpose2d n1 c4 h5 w5 k4 r3 s2 p1 name=tconvC\n")

SWEEP = ["--repeats", "1", "--no-progress", "--no-check", "--peers", "none",
         "--algorithms", "direct"]


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """A sweep of TINY (stdout, JSON, the problems): run once."""
    folder = tmp_path_factory.mktemp("sweep")
    path = folder / "tiny.txt"
    path.write_text(TINY)
    out_json = folder / "sweep.json"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(["sweep", "--problems", str(path), "--json",
                         str(out_json)] + SWEEP)
    return code, buffer.getvalue(), json.loads(out_json.read_text()), \
        read_problems(path)


def test_sweep_prints_a_row_per_problem(tiny_sweep):
    code, out, _, problems = tiny_sweep
    assert code == 0
    table, _, winners = out.partition("fastest per problem")
    assert winners, out
    for p in problems:
        assert re.search(rf"^{p.label}\s+"
                         rf"{'kernels' if p.op == 'max_pool2d' else 'direct'}"
                         rf"\s+\d", table, re.M), (p.label, table)
        assert re.search(rf"^\s+{p.label}\s+fastest", winners, re.M)


def test_sweep_json_has_the_problems(tiny_sweep):
    _, _, data, problems = tiny_sweep
    assert [parse_problem(c["problem"]) for c in data["cases"]] == problems
    assert [c["op"] for c in data["cases"]] == [p.op for p in problems]
    assert [c["label"] for c in data["cases"]] == [p.label for p in problems]
    assert len(data["results"]) == len(problems)
    for r, p in zip(data["results"], problems):
        assert {"op", "problem"} <= set(r)
        assert r["op"] == p.op
        assert r["status"] == "ok"
        assert r["contender"] == ("kernels" if p.op == "max_pool2d"
                                  else "direct")
        assert r["rate_unit"] == ("GB/s" if p.op == "max_pool2d"
                                  else "GFLOP/s")


def test_sweep_json_names_every_results_problem(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY.replace("name=convA", "name=convA count=3"))
    out_json = tmp_path / "sweep.json"
    assert cli.main(["sweep", "--problems", str(path), "--json",
                     str(out_json)] + SWEEP) == 0
    data = json.loads(out_json.read_text())
    problems = read_problems(path)
    assert [(r["problem"] and parse_problem(r["problem"]), r["count"])
            for r in data["results"]] == [(p, p.count) for p in problems]


def test_sweep_in_every_direction(tmp_path, capsys):
    path = tmp_path / "tiny.txt"
    path.write_text("conv2d n1 c4 h8 w8 k4 r3 p1 name=convA\n"
                    "max_pool2d n1 c4 h8 w8 r3 s2 p1 name=poolB\n")
    out_json = tmp_path / "sweep.json"
    code = cli.main(["sweep", "--problems", str(path), "--direction",
                     "fwd,bwd_data,bwd_weights", "--json", str(out_json)]
                    + SWEEP)
    assert code == 0
    out = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert [r["op"] for r in data["results"]] == [
        "conv2d", "conv2d_backward_data", "conv2d_backward_weights",
        "max_pool2d", "max_pool2d_backward"]
    assert all(r["status"] == "ok" for r in data["results"])
    # One table row per op and direction.
    for label in ("convA", "convA:bwd_data", "convA:bwd_weights", "poolB",
                  "poolB:bwd_data"):
        assert re.search(rf"^{re.escape(label)}\s+(direct|kernels)\s", out,
                         re.M), label
    # The direction pooling has not is reported, not run.
    (note,) = [line for line in out.splitlines() if "not run" in line]
    assert "bwd_weights" in note and "max_pool2d" in note
    assert "poolB" in note


def test_sweep_op_conv2d_in_every_direction(tmp_path, capsys):
    # As `sweep --workload resnet50-3x3 --op conv2d --direction ...`, on a
    # tiny file: --op keeps the conv2d layers, each run three ways.
    path = tmp_path / "tiny.txt"
    path.write_text(TINY)
    out_json = tmp_path / "sweep.json"
    code = cli.main(["sweep", "--problems", str(path), "--op", "conv2d",
                     "--direction", "fwd,bwd_data,bwd_weights", "--json",
                     str(out_json)] + SWEEP)
    assert code == 0
    out = capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert [r["op"] for r in data["results"]] == [
        "conv2d", "conv2d_backward_data", "conv2d_backward_weights"]
    assert "not run" not in out
    assert "poolB" not in out and "tconvC" not in out


def test_sweep_op_selects_and_derives(tmp_path, capsys):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY)
    out_json = tmp_path / "sweep.json"
    code = cli.main(["sweep", "--problems", str(path), "--op",
                     "conv2d_backward_data,max_pool2d", "--json",
                     str(out_json)] + SWEEP)
    assert code == 0
    data = json.loads(out_json.read_text())
    assert [r["op"] for r in data["results"]] == ["conv2d_backward_data",
                                                  "max_pool2d"]
    derived = parse_problem(data["results"][0]["problem"])
    conv = read_problems(path)[0]
    assert (derived.x_shape, derived.w_shape) == (conv.x_shape, conv.w_shape)


def test_sweep_problems_with_an_unknown_op_is_an_error(tmp_path, capsys):
    path = tmp_path / "tiny.txt"
    path.write_text(TINY)
    err = _cli_error(["sweep", "--problems", str(path), "--op", "conv9d"]
                     + SWEEP, capsys)
    assert "--op" in err and "conv9d" in err


def test_kernels_knows_every_algorithm_checked():
    # The lists above name algorithms of kernels (a renamed one would
    # otherwise make these tests check nothing).
    assert set(ALGORITHMS) - {"auto"} <= set(kernels.built_algorithms())


def test_keyboard_interrupt_keeps_partial_results_of_problems(tmp_path,
                                                             monkeypatch,
                                                             capsys):
    """Ctrl-C on the generic path (a transposed convolution, then a
    pooling problem): what was timed is kept, marked partial, and the
    exit code is 130."""
    from convbench import sweep
    calls = []

    def fake_time_call(fn):
        calls.append(fn)
        if len(calls) == 3:
            raise KeyboardInterrupt
        fn()
        return 0.002

    monkeypatch.setattr(sweep, "time_call", fake_time_call)
    path = tmp_path / "p.txt"
    path.write_text("conv_transpose2d n1 c2 h4 w4 k2 r2 s2 name=up\n"
                    "max_pool2d n1 c2 h8 w8 r2 name=mp\n")
    out = tmp_path / "partial.json"
    code = cli.main(["sweep", "--problems", str(path), "--repeats", "3",
                     "--algorithms", "direct,im2col", "--peers", "none",
                     "--no-check", "--no-progress", "--json", str(out)])
    assert code == 130
    data = json.loads(out.read_text())
    assert data["interrupted"] is True
    timed = [r for r in data["results"] if r["times_s"]]
    # One call of each of up's two contenders was timed before the third
    # call raised; mp never started.
    assert sorted(len(r["times_s"]) for r in timed) == [1, 1]
    assert all(r["case"] == "up" and r["partial"] for r in timed)
    assert all(r["median_s"] == 0.002 and r["rate_unit"] == "GFLOP/s"
               for r in timed)
    assert "interrupted" in capsys.readouterr().out


@pytest.mark.parametrize("flag, batch", [("--workload", 64), ("--network", 1)])
def test_lenet5_is_the_workload_or_the_network_as_asked(tmp_path, flag, batch):
    """lenet5 names a workload (batch 64) and a network (--batch, 1):
    each flag gets its own."""
    out = tmp_path / "s.json"
    assert cli.main(["sweep", flag, "lenet5", "--op", "avg_pool2d",
                     "--repeats", "1", "--no-check", "--peers", "none",
                     "--no-progress", "--json", str(out)]) == 0
    problems = {r["problem"] for r in json.loads(out.read_text())["results"]}
    assert problems and all(p.split()[1] == f"n{batch}" for p in problems)


def test_default_peers_add_scipy_oa_only_for_problems(tmp_path):
    """A conv2d kernel-size sweep keeps SciPy's correlate peers and torch
    by default; a sweep of problems adds oaconvolve (long 1-D signals)."""
    from convbench import cli as cli_mod
    parser = cli_mod.build_parser()
    args = parser.parse_args(["sweep", "--shape", "1,1,8,8,1"])
    _, peers = cli_mod._contenders(args, parser, problems=False)
    assert "scipy-oa" not in peers
    assert {"scipy-direct", "scipy-fft"} <= set(peers)
    _, peers = cli_mod._contenders(args, parser, problems=True)
    assert {"scipy-direct", "scipy-fft", "scipy-oa"} <= set(peers)
