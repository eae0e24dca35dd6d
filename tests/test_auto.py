"""``algorithm="auto"``: the sweep's time limit, the cost model's rules
given thresholds, calibration's record of what it could not pin down, and
``convbench.autocheck``.

No timing is asserted: clocks and measured times are replaced by
synthetic ones, so every expectation follows from the formulas.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import kernels
from convbench import autocheck, cli, sweep
from convbench.workloads import ConvCase

BUILT = set(kernels.built_algorithms())


# --------------------------------------------------------------------------
# The sweep's time limit (fake clock: each call advances it)
# --------------------------------------------------------------------------

class FakeClock:
    """``warmup_clock`` that advances by the cost of each call run."""

    def __init__(self):
        self.now = 0.0
        self.calls = []           # (name, input rows) of every call

    def __call__(self):
        return self.now


def _costly_runners(monkeypatch, clock, cost):
    """Make every runner advance ``clock`` by ``cost(name, case, call)``
    seconds (``call`` counts the runner's calls from 0)."""
    real = sweep.make_runner

    def make_runner(name, case, x, w, *args, **kwargs):
        run, chose = real(name, case, x, w, *args, **kwargs)
        count = [0]

        def timed():
            clock.calls.append((name, ConvCase(*case).x_shape[2]))
            clock.now += cost(name, ConvCase(*case), count[0])
            count[0] += 1
            return run()
        return timed, chose

    monkeypatch.setattr(sweep, "make_runner", make_runner)
    monkeypatch.setattr(sweep, "warmup_clock", clock)
    monkeypatch.setattr(sweep, "time_call", lambda fn: (fn(), 0.001)[1])


def _sweep(cases, algorithms, limit, repeats=2):
    config = sweep.SweepConfig(algorithms=tuple(algorithms), peers=(),
                               repeats=repeats, check=False, progress=False,
                               time_limit=limit)
    result = sweep.run_sweep(cases, config)
    return {m.contender: m for m in result.measurements}


needs_direct_fft = pytest.mark.skipif(not {"direct", "fft"} <= BUILT,
                                      reason="needs direct and fft")


@needs_direct_fft
def test_a_contender_over_the_time_limit_is_skipped_untimed(monkeypatch):
    clock = FakeClock()
    # direct runs first and takes 10 s per call; fft 0.01 s.
    _costly_runners(monkeypatch, clock,
                    lambda name, case, i: 10.0 if name == "direct" else 0.01)
    case = ConvCase("k=3", (1, 1, 16, 16), (1, 1, 3, 3), 1, 1, 1)
    ms = _sweep([case], ["direct", "fft"], limit=5.0)
    assert ms["direct"].status == "skipped" and not ms["direct"].times_s
    assert "time limit 5 s" in ms["direct"].reason
    assert "fft took" in ms["direct"].reason
    assert ms["fft"].status == "ok" and len(ms["fft"].times_s) == 2
    assert ms["direct"].warmup_s == pytest.approx(10.0)
    # Without a limit nothing is skipped (and the default is no limit).
    assert math.isinf(sweep.SweepConfig().time_limit)
    ms = _sweep([case], ["direct", "fft"], limit=math.inf)
    assert ms["direct"].status == "ok"


@needs_direct_fft
def test_a_slow_first_call_compiling_is_not_a_reason_to_skip(monkeypatch):
    clock = FakeClock()
    # direct's first call "compiles" (10 s), later calls take 0.02 s.
    _costly_runners(monkeypatch, clock,
                    lambda name, case, i: (10.0 if i == 0 else 0.02)
                    if name == "direct" else 0.01)
    case = ConvCase("k=3", (1, 1, 16, 16), (1, 1, 3, 3), 1, 1, 1)
    ms = _sweep([case], ["fft", "direct"], limit=5.0)
    assert ms["direct"].status == "ok" and len(ms["direct"].times_s) == 2
    assert ms["direct"].warmup_s == pytest.approx(0.02)


@needs_direct_fft
def test_nothing_is_skipped_when_no_contender_ran_within_the_limit(
        monkeypatch):
    clock = FakeClock()
    _costly_runners(monkeypatch, clock, lambda name, case, i: 10.0)
    case = ConvCase("k=3", (1, 1, 16, 16), (1, 1, 3, 3), 1, 1, 1)
    ms = _sweep([case], ["direct", "fft"], limit=5.0)
    assert all(m.status == "ok" for m in ms.values())


@needs_direct_fft
def test_a_huge_case_is_judged_on_a_crop_before_its_full_call(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(sweep, "PILOT_MIN_MACS", 0)
    # Cost proportional to the input rows: direct 1 s per row, fft 1 ms.
    _costly_runners(monkeypatch, clock,
                    lambda name, case, i: case.x_shape[2] *
                    (1.0 if name == "direct" else 1e-3))
    case = ConvCase("k=3", (1, 1, 64, 16), (1, 1, 3, 3), 1, 1, 1)
    ms = _sweep([case], ["direct", "fft"], limit=5.0)
    assert ms["direct"].status == "skipped"
    assert "estimated" in ms["direct"].reason
    assert ms["direct"].warmup_s == pytest.approx(64.0, rel=0.1)
    # direct only ever ran on the crop, never on the 64 rows.
    assert ("direct", 64) not in clock.calls
    assert ms["fft"].status == "ok"
    # The measurements keep the order of the contenders.
    assert list(ms) == ["direct", "fft"]


def test_crop_keeps_the_padding_rule_and_reports_its_share():
    x = np.zeros((1, 1, 64, 16), np.float32)
    case = ConvCase("k=3", (1, 1, 64, 16), (1, 1, 3, 3), 1, 1, 1)
    crop, xc, share = sweep._crop(case, x, 1 / 8)
    assert crop.x_shape == (1, 1, 8, 16) and xc.shape == crop.x_shape
    assert share == pytest.approx(8 / 64)
    one_d = ConvCase("1d", (1, 1, 1, 1000), (1, 1, 1, 11), 1, 0, 1)
    crop, xc, share = sweep._crop(one_d, np.zeros((1, 1, 1, 1000)), 0.1)
    assert crop.x_shape[3] == 99 + 11 - 1 and share == pytest.approx(99 / 990)
    batch = ConvCase("b", (8, 1, 4, 4), (1, 1, 3, 3), 1, 1, 1)
    crop, xc, share = sweep._crop(batch, np.zeros((8, 1, 4, 4)), 0.25)
    assert crop.x_shape[0] == 2 and share == 0.25


def test_time_limit_option(monkeypatch, capsys):
    configs = []
    monkeypatch.setattr(sweep, "run_sweep", lambda cases, config: (
        configs.append(config),
        sweep.SweepResult(config={}, cases=list(cases), measurements=[]))[1])
    base = ["sweep", "--shape", "1,1,8,8,1", "--kernels", "3", "--peers",
            "scipy-fft", "--no-progress"]
    assert cli.main(base + ["--time-limit", "2.5"]) == 0
    assert cli.main(base) == 0
    assert configs[0].time_limit == 2.5 and math.isinf(configs[1].time_limit)
    for bad in ("0", "-1", "soon"):
        with pytest.raises(SystemExit) as exc:
            cli.main(base + ["--time-limit", bad])
        assert exc.value.code == 2
        assert "--time-limit" in capsys.readouterr().err


# --------------------------------------------------------------------------
# autocheck
# --------------------------------------------------------------------------

def _m(case, name, median=None, status="ok", chose=None, warmup=None):
    m = sweep.Measurement(case, (1, 1, 8, 8), (1, 1, 3, 3), 1, 1, 1, name,
                          False, status, median_s=median, chose=chose,
                          warmup_s=warmup)
    return m


def test_autocheck_compares_the_pick_with_the_fastest(tmp_path):
    ms = [_m("a", "direct", 1.0), _m("a", "fft", 2.0),
          _m("a", "auto", 1.05, chose="direct"),
          _m("b", "direct", 1.0), _m("b", "fft", 1.2),
          _m("b", "auto", 1.3, chose="fft"),
          _m("c", "direct", status="skipped", warmup=9.0),
          _m("c", "fft", 0.5), _m("c", "auto", 9.5, chose="direct")]
    result = sweep.SweepResult(config={}, cases=[], measurements=ms)
    rows = autocheck.auto_rows(result)
    assert [(r.case, r.fastest, r.pick) for r in rows] == [
        ("a", "direct", "direct"), ("b", "direct", "fft"),
        ("c", "fft", "direct")]
    assert rows[0].ratio == 1.0 and rows[0].within
    assert rows[1].ratio == pytest.approx(1.2) and rows[1].within is False
    assert rows[1].auto_ratio == pytest.approx(1.3)
    assert rows[2].ratio == pytest.approx(18.0) and "lower bound" in rows[2].note
    # The same from the JSON file.
    path = tmp_path / "s.json"
    path.write_text(json.dumps(result.to_dict()))
    assert [r.ratio for r in autocheck.auto_rows(path)] == \
        [r.ratio for r in rows]
    assert autocheck.auto_rows(path, tolerance=0.25)[1].within
    assert "auto's pick" in autocheck.format_rows(rows)
