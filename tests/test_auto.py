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
    # repick: what choose_algorithm picks now for each case's shapes.
    again = autocheck.auto_rows(result, repick=True)
    assert [r.pick for r in again] == [kernels.choose_algorithm(
        (1, 1, 8, 8), (1, 1, 3, 3), padding=(1, 1, 1, 1))] * 3
    assert all(r.auto_s is None for r in again)


def test_autocheck_isolated_judges_on_the_contenders_timed_alone():
    # In process, fft's huge call slowed winograd (timed after it); alone,
    # winograd is the fastest and auto's pick is right.
    ms = [_m("a", "direct", 2.0), _m("a", "winograd", 5.0),
          _m("a", "auto", 0.9, chose="winograd"),
          _m("b", "direct", 1.0), _m("b", "fft", 1.5),
          _m("b", "auto", 1.0, chose="direct")]
    for m, alone in zip(ms, (2.1, 1.0, 1.05)):
        m.isolated_median_s = alone
    result = sweep.SweepResult(config={}, cases=[], measurements=ms)
    in_process = autocheck.auto_rows(result)
    assert in_process[0].fastest == "direct" and not in_process[0].within
    alone = autocheck.auto_rows(result, isolated=True)
    assert (alone[0].fastest, alone[0].ratio, alone[0].within) == (
        "winograd", 1.0, True)
    assert alone[0].auto_ratio == pytest.approx(1.05)
    assert alone[0].note == ""
    # case b has no isolated times: in-process medians, and it says so
    assert (alone[1].fastest, alone[1].ratio) == ("direct", 1.0)
    assert "in-process" in alone[1].note


# --------------------------------------------------------------------------
# The cost model, given thresholds (no timing)
# --------------------------------------------------------------------------

from kernels._choose import NEUTRAL_THRESHOLDS, _model_choice, fft_min_area  # noqa: E402
from kernels._dispatch import ConvSpec  # noqa: E402

ALL = ["direct", "im2col", "winograd", "fft"]

#: Thresholds of these tests (the CPU defaults' kind of values, fixed here
#: so that the tests follow the rules, not the machine's measurements).
T = {"direct_max_macs": 2.0e6, "direct_max_macs_fc": 2.6e5,
     "direct_max_macs_pointwise": 2.0e6, "fft_1d_area_factor": 0.4,
     "fft_1d_area_factor_single": 0.4,
     "fft_min_area_single": 200, "fft_min_area_few": 120,
     "fft_min_area_multi": 49, "winograd_min_channels": 16,
     "winograd_min_channels_5x5": 8, "winograd_min_pixels": 196,
     "winograd_min_positions": 0,
     "winograd_min_macs": float("inf"),
     "winograd_deep_min_positions": float("inf"),
     "winograd_mid_min_positions": float("inf"),
     "winograd_narrow_min_positions": 1568, "im2col_min_out_channels": 8,
     "im2col_max_area": 1, "im2col_min_depth_strided": 2304,
     "im2col_min_positions_strided": 0, "im2col_serial_max_macs": 1.6e7}


def _choice(x, w, stride=1, groups=1, t=T, cands=ALL, same=True):
    kh, kw = w[2:]
    pad = (kh // 2, kh // 2, kw // 2, kw // 2) if same else (0, 0, 0, 0)
    spec = ConvSpec.from_config(x, w, (stride, stride), pad, (1, 1), groups)
    return _model_choice(cands, spec, t)


def test_fft_area_depends_on_the_channels():
    assert fft_min_area(1, 1, T) == 200
    assert fft_min_area(4, 4, T) == 120
    assert fft_min_area(64, 64, T) == 49
    assert fft_min_area(128, 256, T) == 49              # held beyond
    # Linear in log2(C*K) between the measured points.
    assert fft_min_area(2, 2, T) == pytest.approx(160)
    assert fft_min_area(16, 16, T) == pytest.approx((120 + 49) / 2)
    assert fft_min_area(3, 16, T) == fft_min_area(16, 3, T)
    assert math.isinf(fft_min_area(4, 4, NEUTRAL_THRESHOLDS))


def test_few_channels_stay_direct_where_one_area_sent_them_to_fft():
    # C = K = 4 at 128^2: direct was 2.4-3.2x faster than FFT from k = 7.
    assert _choice((1, 4, 128, 128), (4, 4, 7, 7)) == "direct"
    assert _choice((1, 4, 128, 128), (4, 4, 11, 11)) == "fft"     # 121
    # One channel: direct up to k = 13 (169), FFT from 15 (225).
    assert _choice((1, 1, 1024, 1024), (1, 1, 13, 13)) == "direct"
    assert _choice((1, 1, 1024, 1024), (1, 1, 31, 31)) == "fft"
    # 1-D, H = 1: the area is the kernel length.
    assert _choice((1, 1, 1, 10**6), (1, 1, 1, 63)) == "direct"
    assert _choice((1, 1, 1, 10**6), (1, 1, 1, 255)) == "fft"


def test_single_channel_fft_needs_larger_kernels_on_smaller_images():
    # Area threshold 200 at 1024^2 and above; x1.45 at 512^2, x2.92 at
    # 256^2 and below (measured crossovers: k = 15, 17, 25).
    assert _choice((1, 1, 2048, 2048), (1, 1, 15, 15)) == "fft"
    assert _choice((1, 1, 1024, 1024), (1, 1, 15, 15)) == "fft"
    assert _choice((1, 1, 512, 512), (1, 1, 15, 15)) == "direct"
    assert _choice((1, 1, 512, 512), (1, 1, 19, 19)) == "fft"
    assert _choice((1, 1, 256, 256), (1, 1, 23, 23)) == "direct"
    assert _choice((1, 1, 256, 256), (1, 1, 25, 25)) == "fft"
    from kernels._choose import single_channel_size_factor
    factors = [single_channel_size_factor(1 << e) for e in range(12, 24)]
    assert factors == sorted(factors, reverse=True)
    assert factors[-1] == factors[8] == 1.0          # 2^20 and above


def test_many_channels_go_to_fft_from_the_multi_area():
    x = (1, 64, 56, 56)
    assert _choice(x, (64, 64, 7, 7)) == "fft"          # 49 >= 49
    # 5x5 with many channels: Winograd (F(m, 5)), not FFT or direct.
    assert _choice(x, (64, 64, 5, 5)) == "winograd"
    assert _choice(x, (64, 64, 5, 5), cands=["direct", "im2col", "fft"]) \
        == "direct"
    # Depthwise (groups = C): each group is one channel.
    assert _choice((1, 64, 56, 56), (64, 1, 7, 7), groups=64) == "direct"


def test_fully_connected_layers_count_the_whole_batch():
    # SE blocks: 1x1 convs on 1x1 maps, batch 32.
    assert _choice((32, 256, 1, 1), (16, 256, 1, 1)) == "direct"  # 1.3e5
    assert _choice((32, 2048, 1, 1), (128, 2048, 1, 1)) == "im2col"
    assert _choice((1, 1024, 1, 1), (128, 1024, 1, 1)) == "direct"
    # A 5x5 kernel on a 5x5 map (LeNet's C5) is not: per image it is small.
    assert _choice((64, 16, 5, 5), (120, 16, 5, 5), same=False) == "direct"


def test_a_large_fully_connected_layer_is_a_gemm_not_serial():
    # SE-ResNet-50's fc1 at batch 32: 32 positions (< one BLAS piece) but
    # a fully connected layer, run as one GEMM over the batch.
    # (Shapes scaled so the batch's multiply-adds pass T's serial limit.)
    assert 32 * 4096 * 256 > T["im2col_serial_max_macs"]
    assert _choice((32, 4096, 1, 1), (256, 4096, 1, 1), same=False) == "im2col"
    assert _choice((32, 256, 1, 1), (4096, 256, 1, 1), same=False) == "im2col"


def test_a_large_1x1_whose_gemm_is_one_piece_runs_direct():
    # 49 output positions and 32 output channels: one BLAS piece.
    assert 49 * 32 * 16384 > T["im2col_serial_max_macs"]
    assert _choice((1, 16384, 7, 7), (32, 16384, 1, 1)) == "direct"
    # 49 positions but 1024 or 160 output channels: the GEMM is split by
    # its rows, on every thread.
    assert _choice((1, 1024, 7, 7), (1024, 1024, 1, 1)) == "im2col"
    assert _choice((1, 960, 7, 7), (160, 960, 1, 1)) == "im2col"
    assert _choice((4, 1024, 7, 7), (1024, 1024, 1, 1)) == "im2col"


def test_a_1x1_with_few_output_channels_is_still_a_gemm():
    # U-Net's last layer: 64 -> 2 at 388^2.
    assert _choice((1, 64, 388, 388), (2, 64, 1, 1)) == "im2col"
    # ... but not a 3x3 with few output channels, nor one input channel.
    assert _choice((1, 64, 388, 388), (2, 64, 3, 3)) == "direct"
    assert _choice((1, 1, 388, 388), (1, 1, 1, 1)) == "direct"


def test_one_input_channel_runs_direct():
    # U-Net's first layer: level since direct's column runs (no rule).
    assert _choice((1, 1, 572, 572), (64, 1, 3, 3)) == "direct"
    assert _choice((1, 1, 572, 572), (32, 1, 3, 3)) == "direct"
    assert _choice((64, 1, 32, 32), (64, 1, 3, 3)) == "direct"
    assert _choice((1, 1, 572, 572), (64, 1, 7, 7)) == "direct"


def test_winograd_with_few_output_channels_needs_many_positions():
    # K just above the threshold (16 here, 64 in the CPU defaults): batch
    # 1 at 28^2 (784 positions) stays direct, 56^2 (3136) goes to Winograd.
    assert _choice((1, 16, 28, 28), (16, 16, 3, 3)) == "direct"
    assert _choice((1, 16, 56, 56), (16, 16, 3, 3)) == "winograd"
    # Twice the threshold: Winograd on the small batch too.
    assert _choice((1, 32, 56, 56), (32, 32, 3, 3)) == "winograd"


def test_winograd_needs_as_many_input_channels():
    # Jet images: 32 -> 64 (T's threshold is 16, so 8 -> 16 here).
    assert _choice((512, 8, 33, 33), (16, 8, 3, 3)) == "direct"
    assert _choice((512, 16, 33, 33), (16, 16, 3, 3)) == "winograd"


def test_pointwise_layers_have_their_own_direct_limit():
    # 1x1 at 14^2: 192 -> 64 is 2.4e6 multiply-adds.
    t = dict(T, direct_max_macs=2e7, direct_max_macs_pointwise=1e6)
    assert _choice((1, 192, 14, 14), (64, 192, 1, 1), t=t) == "im2col"
    assert _choice((1, 32, 14, 14), (64, 32, 1, 1), t=t) == "direct"
    # a 3x3 layer of as many multiply-adds keeps the general limit
    assert _choice((1, 24, 14, 14), (64, 24, 3, 3), t=t) == "direct"
    t = dict(T, direct_max_macs=1e6, direct_max_macs_pointwise=2e7)
    assert _choice((1, 192, 14, 14), (64, 192, 1, 1), t=t) == "direct"
    # a table without the pointwise limit uses the general one
    from kernels._choose import _complete
    old = dict(T)
    del old["direct_max_macs_pointwise"]
    assert _complete(old)["direct_max_macs_pointwise"] == T["direct_max_macs"]


def test_winograd_needs_half_the_input_channels_on_large_images():
    # Jet images' 32 -> 64 at 64^2 (8 -> 16 under T): 4096 pixels and more
    # let half the input channels through, not 56^2; 3x3 only, and never
    # fewer than half.
    from kernels._choose import WINOGRAD_HALF_CHANNELS_MIN_PIXELS as big
    assert big == 64 * 64
    assert _choice((256, 8, 64, 64), (16, 8, 3, 3)) == "winograd"
    assert _choice((256, 8, 56, 56), (16, 8, 3, 3)) == "direct"
    assert _choice((256, 7, 64, 64), (16, 7, 3, 3)) == "direct"
    assert _choice((256, 8, 16, 256), (16, 8, 3, 3)) == "winograd"


def test_one_dimensional_problems_reach_fft_at_a_shorter_kernel():
    t = dict(T, fft_min_area_few=150, fft_min_area_multi=49)
    area_2d = fft_min_area(3, 16, t)
    assert 63 < area_2d                                # 2-D: direct at 63
    assert _choice((4, 3, 1, 10**5), (16, 3, 1, 63), t=t, same=False) == "fft"
    assert _choice((4, 3, 1, 10**5), (16, 3, 1, 15), t=t, same=False) \
        == "direct"
    # A 2-D kernel of the same area on an image stays direct.
    assert _choice((4, 3, 256, 256), (16, 3, 7, 9), t=t) == "direct"


def test_one_dimensional_fft_follows_the_channels_and_the_signal_length():
    """Multi-channel 1-D problems: the FFT threshold falls with C*K past
    the 2-D one's last point and rises on short signals (the crossovers
    of ONE_D_FFT_CHANNEL_FACTORS, measured with the CPU defaults: 49
    there is 37)."""
    from kernels._choose import (ONE_D_FFT_CHANNEL_FACTORS,
                                 ONE_D_FFT_FIXED_SAMPLES, one_d_fft_factor)
    t = dict(T, fft_min_area_multi=37, fft_min_area_few=173)

    def pick(c, k, length, n=1):
        return _choice((n, c, 1, length), (c, c, 1, k), t=t)

    # 64 channels: direct at k = 15 on any length measured (0.40-0.88x
    # FFT's speed there), FFT at k = 31 from 4096 samples, not at 1024
    assert [pick(64, 15, n) for n in (1024, 4096, 16384)] == ["direct"] * 3
    assert pick(64, 31, 1024) == "direct"
    assert pick(64, 31, 4096) == pick(64, 31, 16384) == "fft"
    # 256 channels: FFT from k = 9 at 4096 samples (1.17x), not k = 5
    assert pick(256, 9, 4096) == "fft" and pick(256, 5, 4096) == "direct"
    # 128 channels at k = 9: FFT on one long signal (1.13x), not on a
    # batch of as many samples (0.86x, 0.92x)
    assert pick(128, 9, 16384) == "fft"
    assert pick(128, 9, 4096, n=4) == pick(128, 9, 1024, n=16) == "direct"
    # The factor: falling in C*K (held at the ends), rising as signals
    # shorten, 1 + ONE_D_FFT_FIXED_SAMPLES / (L sqrt(N))
    long_signal = 10**12
    by_channels = [one_d_fft_factor(c, c, 1, long_signal)
                   for c in (64, 128, 256, 512)]
    assert by_channels == sorted(by_channels, reverse=True)
    assert one_d_fft_factor(3, 16, 1, long_signal) == pytest.approx(
        ONE_D_FFT_CHANNEL_FACTORS[0][1])
    assert one_d_fft_factor(1024, 1024, 1, long_signal) == pytest.approx(
        ONE_D_FFT_CHANNEL_FACTORS[-1][1])
    base = one_d_fft_factor(64, 64, 1, long_signal)
    assert one_d_fft_factor(64, 64, 1, ONE_D_FFT_FIXED_SAMPLES) == \
        pytest.approx(2 * base)
    assert one_d_fft_factor(64, 64, 4, ONE_D_FFT_FIXED_SAMPLES // 2) == \
        pytest.approx(2 * base)
    # 2-D problems and single channels are left as they were
    assert _choice((1, 64, 56, 56), (64, 64, 7, 7), t=t) == "fft"


def test_winograd_needs_enough_pixels_per_image_and_over_the_batch():
    # The Zen 3's calibrated rules: 7^2 maps qualify per image, but a
    # call needs 196 output positions over the batch (the tuple GEMMs'
    # columns): C = K = 512 at 7^2 ran direct 1.5x faster at batch 1,
    # winograd 1.4x faster at batch 4.
    t = {**T, "winograd_min_pixels": 49, "winograd_min_positions": 196}
    w = (512, 512, 3, 3)
    assert _choice((1, 512, 7, 7), w, t=t) == "direct"        # 49 positions
    assert _choice((4, 512, 7, 7), w, t=t) == "winograd"      # 196
    assert _choice((1, 512, 10, 10), w, t=t) == "direct"      # 100
    assert _choice((4, 256, 12, 12), (256, 256, 3, 3), t=t) == "winograd"
    # Positions are outputs: without padding 14^2 gives 12^2 = 144.
    assert _choice((1, 512, 14, 14), w, t=t, same=False) == "direct"
    assert _choice((1, 512, 14, 14), w, t=t) == "winograd"
    # Either limit alone holds Winograd back.
    assert _choice((8, 512, 7, 7), w, t={**t, "winograd_min_pixels": 196}) \
        == "direct"


def test_deep_layers_go_to_winograd_from_their_own_positions():
    """C and K >= 256 (WINOGRAD_DEEP_MIN_CHANNELS), 3x3: Winograd from
    ``winograd_deep_min_positions`` output positions over the batch on
    maps of any size (the Xeon VM's 196: 512@7^2 at batch 4, 256@14^2 at
    batch 1), whatever the pixel and position limits of other layers."""
    t = {**T, "winograd_min_pixels": 441, "winograd_min_positions": 576,
         "winograd_deep_min_positions": 196}
    w512, w256 = (512, 512, 3, 3), (256, 256, 3, 3)
    assert _choice((4, 512, 7, 7), w512, t=T) == "direct"        # rule off
    assert _choice((4, 512, 7, 7), w512, t=t) == "winograd"      # 196
    assert _choice((2, 512, 7, 7), w512, t=t) == "direct"        # 98
    assert _choice((1, 256, 14, 14), w256, t=t) == "winograd"
    assert _choice((1, 256, 14, 14), w256, t=t, same=False) == "direct"  # 144
    # Not deep: 128 channels, or 256 -> 128, or a 5x5 kernel.
    assert _choice((4, 128, 7, 7), (128, 128, 3, 3), t=t) == "direct"
    assert _choice((4, 256, 7, 7), (128, 256, 3, 3), t=t) == "direct"
    assert _choice((4, 512, 7, 7), (512, 512, 5, 5), t=t) != "winograd"


def test_5x5_layers_have_their_own_channel_limit():
    """``winograd_min_channels_5x5`` applies to 5x5 layers as
    ``winograd_min_channels`` to 3x3 ones (both the floor and the narrow
    rule's twice-as-many), whatever the 3x3 limit is."""
    t = {**T, "winograd_min_channels": 64, "winograd_min_channels_5x5": 32,
         "winograd_min_pixels": 49, "winograd_min_positions": 128}
    assert _choice((1, 32, 56, 56), (64, 32, 5, 5), t=t) == "winograd"
    assert _choice((1, 32, 56, 56), (64, 32, 3, 3), t=t) == "direct"
    assert _choice((1, 16, 56, 56), (64, 16, 5, 5), t=t) == "direct"
    # K under twice the limit needs the narrow rule's positions.
    assert _choice((1, 32, 28, 28), (32, 32, 5, 5), t=t) == "direct"   # 784
    assert _choice((1, 32, 28, 28), (64, 32, 5, 5), t=t) == "winograd"
    # The AVX-512 defaults' kind: 128 for both; the 3x3 limit lowered (a
    # calibration) leaves 5x5 layers where they were.
    t = {**t, "winograd_min_channels_5x5": 128}
    for c in (32, 64):
        assert _choice((1, c, 56, 56), (c, c, 5, 5), t=t) == "direct"
    assert _choice((1, 128, 28, 28), (256, 128, 5, 5), t=t) == "winograd"
    assert _choice((1, 64, 56, 56), (64, 64, 3, 3), t=t) == "winograd"


def test_narrow_layers_go_to_winograd_from_their_own_positions():
    """K at least ``winograd_min_channels`` but under twice it: Winograd
    from ``winograd_narrow_min_positions`` output positions over the batch
    (the Xeon VM's default 416, 1568 on AVX2 and in tables before it)."""
    t = {**T, "winograd_min_channels": 128, "winograd_min_pixels": 49,
         "winograd_min_positions": 128, "winograd_min_macs": 4e8,
         "winograd_mid_min_positions": 1792,
         "winograd_narrow_min_positions": 416}
    w128 = (128, 128, 3, 3)
    assert _choice((1, 128, 28, 28), w128, t=t) == "winograd"   # 784
    assert _choice((1, 128, 21, 21), w128, t=t) == "winograd"   # 441
    assert _choice((2, 128, 14, 14), w128, t=t) == "direct"     # 392
    assert _choice((1, 128, 28, 28), w128, t={
        **t, "winograd_narrow_min_positions": 1568}) == "direct"
    # Twice the channel limit needs no more than winograd_min_positions.
    assert _choice((2, 128, 14, 14), (256, 128, 3, 3), t=t) == "winograd"
    # Under the channel limit the rule does not apply.
    assert _choice((1, 96, 28, 28), (96, 96, 3, 3), t=t) == "direct"


def test_mid_layers_go_to_winograd_below_the_channel_limit():
    """C and K >= 64 (WINOGRAD_MID_MIN_CHANNELS), 3x3 or 5x5: Winograd
    from ``winograd_mid_min_positions`` output positions over the batch,
    on maps of ``winograd_min_pixels``, whatever ``winograd_min_channels``
    says (the Xeon VM's defaults: 128 channels, 1792 positions)."""
    t = {**T, "winograd_min_channels": 128, "winograd_min_pixels": 49,
         "winograd_min_positions": 128, "winograd_min_macs": 4e8,
         "winograd_mid_min_positions": 1792}
    w64 = (64, 64, 3, 3)
    assert _choice((1, 64, 56, 56), w64, t={**t, "winograd_mid_min_positions":
                                            float("inf")}) == "direct"
    assert _choice((1, 64, 56, 56), w64, t=t) == "winograd"     # 3136
    assert _choice((2, 64, 32, 32), w64, t=t) == "winograd"     # 2048
    assert _choice((2, 64, 28, 28), w64, t=t) == "direct"       # 1568
    assert _choice((1, 64, 56, 56), (128, 64, 3, 3), t=t) == "winograd"
    assert _choice((1, 128, 56, 56), (64, 128, 3, 3), t=t) == "winograd"
    assert _choice((1, 64, 28, 28), (128, 64, 3, 3), t=t) == "direct"
    assert _choice((2, 64, 32, 32), (64, 64, 5, 5), t=t) == "winograd"
    # Fewer channels on either side, groups, or a map under the pixel
    # limit: not by this rule.  (Strided layers have no Winograd
    # candidate.)
    assert _choice((4, 32, 64, 64), (64, 32, 3, 3), t=t) == "direct"
    assert _choice((4, 64, 64, 64), (32, 64, 3, 3), t=t) == "direct"
    assert _choice((4, 64, 56, 56), (64, 32, 3, 3), groups=2, t=t) \
        != "winograd"
    assert _choice((16, 64, 14, 14), w64, t={**t, "winograd_min_pixels":
                                             441}) == "direct"
    # 7x7 has no Winograd tile here.
    assert _choice((1, 64, 56, 56), (64, 64, 7, 7), t=t) != "winograd"


def test_large_layers_go_to_winograd_below_the_size_limits():
    # The Xeon VM's calibrated size limits (1764 pixels, 1936 positions)
    # with the multiply-add rule: VGG-16's 512@28^2 (1.85e9 multiply-adds
    # at batch 1) ran Winograd 1.27x faster, 1.50x at batch 8.
    sizes = {**T, "winograd_min_channels": 128, "winograd_min_pixels": 1764,
             "winograd_min_positions": 1936}
    t = {**sizes, "winograd_min_macs": 1e9}
    w512 = (512, 512, 3, 3)
    assert _choice((1, 512, 28, 28), w512, t=sizes) == "direct"
    assert _choice((1, 512, 28, 28), w512, t=t) == "winograd"      # 1.85e9
    assert _choice((8, 512, 28, 28), w512, t=t) == "winograd"
    assert _choice((1, 512, 14, 14), w512, t=t) == "direct"        # 4.6e8
    assert _choice((8, 512, 14, 14), w512, t=t) == "winograd"      # 3.7e9
    # 7^2 maps stay out whatever the work (F(4,3) computes 8^2 there) ...
    assert _choice((16, 512, 7, 7), w512, t=t) == "direct"         # 1.85e9
    # ... and so do layers the channel limit keeps out.
    assert _choice((4, 64, 112, 112), (64, 64, 3, 3), t=t) == "direct"


def test_the_work_rule_counts_real_outputs_and_bounds_filter_bytes():
    # The Xeon VM's rule since the tuple GEMMs run the panel tile: 4e8
    # multiply-adds over the batch, weighted by the share of F(4,3)'s
    # outputs that are real, with at most 3072 filter elements (12 KiB of
    # float32) a position.
    from kernels._choose import (
        WINOGRAD_MACS_MAX_FILTER_ELEMENTS_PER_POSITION as bound, _tiled_macs)
    t = {**T, "winograd_min_channels": 128, "winograd_min_pixels": 1764,
         "winograd_min_positions": 1936, "winograd_min_macs": 4e8}
    w128, w256, w512 = ((c, c, 3, 3) for c in (128, 256, 512))
    assert _choice((4, 128, 28, 28), w128, t=t) == "winograd"     # 4.6e8
    assert _choice((2, 128, 28, 28), w128, t=t) == "direct"       # 2.3e8
    assert _choice((1, 256, 28, 28), w256, t=t) == "winograd"     # 4.6e8
    # 14^2 is covered by 16^2 of F(4,3)'s outputs: 4.6e8 counts 3.5e8 ...
    assert _tiled_macs(4.6e8, 14, 14, 3) == pytest.approx(4.6e8 * 196 / 256)
    assert _tiled_macs(4.6e8, 28, 28, 3) == 4.6e8
    assert _choice((4, 256, 14, 14), w256, t=t) == "direct"
    assert _choice((8, 256, 14, 14), w256, t=t) == "winograd"
    # ... and more filter elements a position keep a layer out: 512@14^2
    # at batch 2 (6144), at batch 4 (3072) in.
    assert bound == 3072
    assert _choice((2, 512, 14, 14), w512, t=t) == "direct"
    assert _choice((4, 512, 14, 14), w512, t=t) == "winograd"
    assert _choice((1, 512, 28, 28), w512, t=t) == "winograd"
    # Counted in elements: the choice does not depend on the dtype (it is
    # memoised without it).
    spec64 = ConvSpec.from_config((4, 512, 14, 14), w512, (1, 1),
                                  (1, 1, 1, 1), (1, 1), 1, np.float64)
    assert _model_choice(ALL, spec64, t) == "winograd"


def test_neutral_thresholds_run_direct():
    assert _choice((1, 64, 56, 56), (64, 64, 7, 7),
                   t=NEUTRAL_THRESHOLDS) == "direct"
    assert _choice((32, 2048, 1, 1), (128, 2048, 1, 1),
                   t=NEUTRAL_THRESHOLDS) == "direct"


def test_a_backend_table_without_the_new_rules_keeps_its_meaning():
    from kernels._choose import _complete
    old = {"direct_max_macs": 1e7, "fft_min_area_single": 289,
           "fft_min_area_multi": 25, "winograd_min_channels": 16,
           "winograd_min_pixels": 64, "im2col_min_out_channels": 8,
           "im2col_max_area": 49}
    t = _complete(old)
    assert set(t) == set(NEUTRAL_THRESHOLDS)
    assert t["direct_max_macs_fc"] == 1e7
    assert t["winograd_min_channels_5x5"] == 8     # half the 3x3 limit
    assert math.isinf(t["im2col_serial_max_macs"])
    assert fft_min_area(1, 1, t) == 289 and fft_min_area(64, 64, t) == 25
    assert 25 < fft_min_area(4, 4, t) < 289


def test_deep_strided_layers_go_to_im2col():
    # Winograd takes no stride: the front end leaves it out of the
    # candidates of a strided layer.
    strided = ["direct", "im2col", "fft"]
    # Reduction C * 9 >= 2304: ResNet-50's downsampling 3x3 layers.
    assert _choice((1, 256, 28, 28), (256, 256, 3, 3), stride=2,
                   cands=strided) == "im2col"
    assert _choice((1, 512, 14, 14), (512, 512, 3, 3), stride=2,
                   cands=strided) == "im2col"
    # Shallower, or not strided, or without im2col: as before.
    assert _choice((1, 128, 56, 56), (128, 128, 3, 3), stride=2,
                   cands=strided) == "direct"
    assert _choice((1, 512, 7, 7), (512, 512, 3, 3), stride=1) == "direct"
    assert _choice((1, 256, 28, 28), (256, 256, 3, 3), stride=2,
                   cands=["direct", "fft"]) == "direct"
    # The neutral table (a backend that never measured it) keeps direct.
    t = dict(T, im2col_min_depth_strided=float("inf"))
    assert _choice((1, 512, 14, 14), (512, 512, 3, 3), stride=2,
                   t=t, cands=strided) == "direct"
    # Through the public chooser with the CPU defaults: im2col where the
    # CPU has a position floor of 0 (AVX2), direct on AVX-512 (next test).
    from kernels.cpu._tuning import host_vector_bits
    expected = "direct" if host_vector_bits() == 512 else "im2col"
    assert kernels.choose_algorithm((1, 256, 56, 56), (256, 256, 3, 3),
                                    stride=(2, 2), padding=1) == expected


def test_strided_layers_with_few_positions_stay_direct():
    # im2col_min_positions_strided: with the pixel tile, direct kept the
    # lead on the Xeon VM's stride-2 3x3 layers with fewer than 392 output
    # positions (N Ho Wo).
    strided = ["direct", "im2col", "fft"]
    t = dict(T, im2col_min_depth_strided=576, im2col_min_positions_strided=392)
    w512 = (512, 512, 3, 3)
    assert _choice((1, 512, 14, 14), w512, stride=2, t=t,
                   cands=strided) == "direct"                   # 49
    assert _choice((4, 512, 14, 14), w512, stride=2, t=t,
                   cands=strided) == "direct"                   # 196
    assert _choice((8, 512, 14, 14), w512, stride=2, t=t,
                   cands=strided) == "im2col"                   # 392
    assert _choice((1, 256, 28, 28), (256, 256, 3, 3), stride=2, t=t,
                   cands=strided) == "direct"                   # 196
    assert _choice((1, 128, 56, 56), (128, 128, 3, 3), stride=2, t=t,
                   cands=strided) == "im2col"                   # 784
    # The floor counts outputs: 2 x 28^2 gives 2 x 14^2 with padding 1,
    # 2 x 13^2 = 338 without.
    assert _choice((2, 256, 28, 28), (256, 256, 3, 3), stride=2, t=t,
                   cands=strided) == "im2col"
    assert _choice((2, 256, 28, 28), (256, 256, 3, 3), stride=2, t=t,
                   cands=strided, same=False) == "direct"
    # The CPU default: no strided im2col on AVX-512, where direct's channel
    # tile runs strided layers; no floor on AVX2 (on the Zen 3 im2col won
    # at 196 positions).
    from kernels.cpu._tuning import host_vector_bits
    from kernels._choose import default_thresholds
    floor = default_thresholds()["im2col_min_positions_strided"]
    assert floor == (float("inf") if host_vector_bits() == 512 else 0)


def test_strided_kernels_larger_than_3x3_need_the_wide_floor():
    # im2col_min_depth_strided is calibrated on 3x3 layers; 5x5 and 7x7
    # strided layers go to im2col only from IM2COL_STRIDED_WIDE_MIN_CHANNELS.
    from kernels._choose import IM2COL_STRIDED_WIDE_MIN_CHANNELS as floor
    strided = ["direct", "im2col", "fft"]
    t = dict(T, im2col_min_depth_strided=576)
    assert _choice((1, 64, 56, 56), (64, 64, 3, 3), stride=2, t=t,
                   cands=strided) == "im2col"
    assert _choice((1, 32, 56, 56), (32, 32, 3, 3), stride=2, t=t,
                   cands=strided) == "direct"
    assert 64 < floor <= 128
    assert _choice((1, 64, 56, 56), (64, 64, 5, 5), stride=2, t=t,
                   cands=strided) == "direct"
    assert _choice((1, 128, 56, 56), (128, 128, 5, 5), stride=2, t=t,
                   cands=strided) == "im2col"
    assert _choice((1, 64, 56, 56), (64, 64, 7, 7), stride=2, t=t,
                   cands=strided) == "direct"
    assert _choice((1, 128, 56, 56), (128, 128, 7, 7), stride=2, t=t,
                   cands=strided) == "im2col"
    # The stem (C = 3, 7x7/2) stays direct.
    assert _choice((1, 3, 224, 224), (64, 3, 7, 7), stride=2, t=t,
                   cands=strided) == "direct"


def test_default_thresholds_have_every_rule():
    from kernels._choose import default_thresholds
    assert set(default_thresholds("cpu")) == set(NEUTRAL_THRESHOLDS) == set(T)


def test_a_format_2_calibration_file_is_ignored_with_a_warning(
        monkeypatch, tmp_path):
    from kernels._calibration import CalibrationWarning
    from kernels._choose import default_thresholds, machine_key, thresholds
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"format": 2, "backends": {"cpu": {
        "machine": machine_key("cpu"),
        "thresholds": {"fft_min_area_multi": 1}, "meta": {}}}}))
    monkeypatch.setenv("CONVBENCH_CALIBRATION", str(path))
    with pytest.warns(CalibrationWarning, match="format-3"):
        assert thresholds("cpu") == default_thresholds("cpu")


def _fc_layer_choice():
    """``auto``'s pick for a fully connected layer that ``T`` sends to
    im2col and ``T`` with a larger ``direct_max_macs_fc`` keeps direct."""
    return kernels.choose_algorithm((32, 256, 1, 1), (4096, 256, 1, 1))


def _write_calibration(path, table):
    # As another process would: straight to the file, not save_thresholds.
    from kernels._choose import machine_key
    path.write_text(json.dumps({"format": 3, "backends": {"cpu": {
        "machine": machine_key("cpu"), "thresholds": table, "meta": {}}}}))


@pytest.mark.skipif(not {"direct", "im2col"} <= set(BUILT),
                    reason="needs direct and im2col")
def test_a_saved_calibration_decides_the_next_choice(monkeypatch, tmp_path):
    from kernels._calibration import save_thresholds
    from kernels._choose import machine_key
    path = tmp_path / "cal.json"
    monkeypatch.setenv("CONVBENCH_CALIBRATION", str(path))
    save_thresholds("cpu", T, machine_key("cpu"))
    assert _fc_layer_choice() == "im2col"
    save_thresholds("cpu", dict(T, direct_max_macs_fc=1e15), machine_key("cpu"))
    assert _fc_layer_choice() == "direct"


@pytest.mark.skipif(not {"direct", "im2col"} <= set(BUILT),
                    reason="needs direct and im2col")
def test_a_calibration_rewritten_elsewhere_is_seen_after_the_recheck_time(
        monkeypatch, tmp_path):
    from kernels import _calibration
    path = tmp_path / "cal.json"
    monkeypatch.setenv("CONVBENCH_CALIBRATION", str(path))
    _write_calibration(path, T)
    assert _fc_layer_choice() == "im2col"
    _write_calibration(path, dict(T, direct_max_macs_fc=1e15))
    later = _calibration.time.monotonic() + _calibration.RECHECK_SECONDS + 1
    monkeypatch.setattr(_calibration.time, "monotonic", lambda: later)
    assert _fc_layer_choice() == "direct"
    # A new path is read at once, whatever the time.
    other = tmp_path / "other.json"
    _write_calibration(other, T)
    monkeypatch.setenv("CONVBENCH_CALIBRATION", str(other))
    assert _fc_layer_choice() == "im2col"


# --------------------------------------------------------------------------
# Calibration: what it could not pin down (synthetic times)
# --------------------------------------------------------------------------

def test_resolve_tells_a_clear_crossover_from_noise():
    from convbench.calibrate import resolve
    sizes = [1, 2, 3, 4]
    # fast overtakes slow at 3, by 2x on either side: pinned.
    at, status, _ = resolve(sizes, [1, 2, 4, 8], [4, 4, 2, 4])
    assert (at, status) == (3, "pinned")
    # 5 % on either side of the crossover: within noise.
    at, status, why = resolve(sizes, [1, 1, 1, 1], [1.5, 1.05, 0.95, 0.5])
    assert (at, status) == (3, "within noise") and "within 10%" in why
    # Clear in the medians, but repeat 2 puts it elsewhere.
    slow_r = [[1, 1], [2, 2], [4, 4], [8, 8]]
    fast_r = [[4, 4], [4, 1], [2, 2], [4, 4]]
    at, status, why = resolve(sizes, [1, 2, 4, 8], [4, 4, 2, 4], slow_r, fast_r)
    assert status == "within noise" and "moved" in why
    # One contender wins throughout: an edge, or noise if close at the end.
    assert resolve(sizes, [1, 1, 1, 1], [2, 2, 2, 2])[:2] == (None, "edge")
    assert resolve(sizes, [1, 1, 1, 1], [2, 2, 2, 1.05])[:2] == \
        (None, "within noise")


def test_calibration_meta_records_the_thresholds_it_could_not_pin(
        monkeypatch, tmp_path):
    from convbench import calibrate as cal

    def synthetic_times(cases, algorithms, progress):
        # Every rival of fft costs 1; fft costs 2 except on the 4-channel
        # probe, where it is 1.02 from k = 11 on (within noise).  Other
        # probes: every algorithm 1 (no crossover: an edge, within noise).
        out = cal._Times()
        for a in algorithms:
            row = []
            for c in cases:
                few = c.x_shape[1] == 4
                k = c.w_shape[2]
                if a != "fft":
                    row.append(1.0)
                elif few:
                    row.append(0.98 if k >= 11 else 1.02)
                else:
                    row.append(0.5 if k >= 13 else 2.0)
            out[a] = row
        out.repeats = {a: [[v] * 5 for v in row] for a, row in out.items()}
        return out

    monkeypatch.setattr(cal, "_times", synthetic_times)
    lines = []
    path = tmp_path / "cal.json"
    cal.calibrate(path=path, progress=False, log=lines.append)
    meta = json.loads(path.read_text())["backends"]["cpu"]["meta"]
    table = meta["thresholds"]
    if "fft" in BUILT and "direct" in BUILT:
        assert table["fft_min_area_single"]["status"] == "pinned"
        assert table["fft_min_area_single"]["value"] == (11 ** 2 + 13 ** 2) // 2
        assert table["fft_min_area_few"]["status"] == "within noise"
        assert "fft_min_area_few" in meta["unresolved"]
        assert "fft_min_area_single" not in meta["unresolved"]
    assert table["im2col_min_out_channels"]["status"] == "default"
    text = "\n".join(lines)
    assert "not pinned down" in text and "fft_min_area_few" in text
    if "fft" in BUILT and "direct" in BUILT:
        # within noise by the ratios, one crossover in every repeat: the
        # measured value replaces the default
        assert table["fft_min_area_few"]["value"] == (7 ** 2 + 11 ** 2) // 2
        assert meta["sweeps"]["fft_min_area_few"][-1]["value_range"] == [85, 85]


def test_winograd_probes_use_the_im2col_area_as_it_will_be_applied(
        monkeypatch):
    # im2col_max_area measured 9 but within noise, its repeats straddling
    # the default: the default is written, and the Winograd probes must
    # be run against the fallback that default implies.
    from convbench import calibrate as cal
    from kernels._choose import default_thresholds
    default = default_thresholds("cpu")["im2col_max_area"]

    def noisy_area(built, progress, report):
        report.append({"status": "within noise", "why": "",
                       "value_range": [min(default, 0), max(default, 9) + 1]})
        return 9 if default != 9 else 25, "within noise"

    seen = []
    monkeypatch.setattr(cal, "_im2col_area", noisy_area)
    monkeypatch.setattr(cal, "_winograd_channels",
                        lambda built, area, p, r: seen.append(area) or (64, "edge"))
    monkeypatch.setattr(cal, "_winograd_pixels",
                        lambda built, area, p, r: seen.append(area) or (196, "edge"))
    monkeypatch.setattr(cal, "_winograd_positions",
                        lambda built, area, pixels, p, r:
                        seen.append((area, pixels)) or (196, "edge"))
    monkeypatch.setattr(cal, "_times", lambda cases, algorithms, progress: {
        a: [1.0] * len(cases) for a in algorithms})
    cal.measure_thresholds(progress=False, log=lambda *a: None)
    if "winograd" in BUILT and "im2col" in BUILT:
        # The positions probe runs on maps the measured pixel limit admits.
        assert seen == [default, default, (default, 196)]


# The smallest square map the pixel limit admits whose side F(4,3)'s 4 x 4
# tiles cover without waste (21^2 for 441 pixels would compute 24^2).
@pytest.mark.parametrize("min_pixels, side", [(49, 8), (144, 12), (150, 16),
                                              (196, 16), (441, 24)])
def test_the_positions_probe_runs_where_the_pixel_limit_admits_winograd(
        monkeypatch, min_pixels, side):
    from convbench import calibrate as cal
    probed = []

    def synthetic_times(cases, algorithms, progress):
        probed.extend(c.x_shape for c in cases)
        out = cal._Times({a: [1.0 if a != "winograd" else
                              (2.0 if c.x_shape[0] < 4 else 0.5)
                              for c in cases] for a in algorithms})
        out.repeats = {a: [[v] * 5 for v in row] for a, row in out.items()}
        return out

    monkeypatch.setattr(cal, "_times", synthetic_times)
    report = []
    value, status = cal._winograd_positions(["direct", "winograd"], 1,
                                            min_pixels, False, report)
    assert {shape[2:] for shape in probed} == {(side, side)}
    assert [shape[0] for shape in probed] == [1, 2, 4, 8, 16]
    # Winograd wins from batch 4: the limit lies between 2 and 4 maps.
    assert 2 * side * side < value <= 4 * side * side
    assert status == "pinned" and report[-1]["crossover_positions"] == value


def test_a_threshold_within_noise_keeps_a_default_its_repeats_straddle():
    from convbench.calibrate import applied
    report = {
        # crossovers 196, 441, 784 by repeat: a default of 196 is inside
        "winograd_min_pixels": [{"status": "within noise",
                                 "value_range": [196, 784]}],
        # all repeats below the default: measured
        "direct_max_macs_pointwise": [{"status": "within noise",
                                       "value_range": [1e5, 6e5]}],
        "fft_min_area_single": [{"status": "pinned",
                                 "value_range": [145, 145]}],
    }
    measured = {"winograd_min_pixels": 441, "direct_max_macs_pointwise": 4e5,
                "fft_min_area_single": 145}
    defaults = {"winograd_min_pixels": 196, "direct_max_macs_pointwise": 5e6,
                "fft_min_area_single": 197}
    assert applied(measured, report, defaults) == {
        "direct_max_macs_pointwise": 4e5, "fft_min_area_single": 145}


def test_choose_algorithm_takes_conv2ds_padding_forms():
    x, w = (1, 8, 32, 32), (8, 8, 4, 5)
    top, bottom = kernels.geometry.same_padding(4)
    left, right = kernels.geometry.same_padding(5)
    four = (top, bottom, left, right)
    # The padding each form stands for, then the choice it leads to.
    from kernels._choose import _four_sided
    assert _four_sided("same", w, (1, 1), (1, 1)) == four == (1, 2, 2, 2)
    assert _four_sided(3, w, (1, 1), (1, 1)) == (3, 3, 3, 3)
    assert _four_sided((2, 1), w, (2, 2), (1, 1)) == (2, 2, 1, 1)
    assert _four_sided([0, 1, 2, 3], w, (1, 1), (1, 1)) == (0, 1, 2, 3)
    assert kernels.choose_algorithm(x, w, padding="same") == \
        kernels.choose_algorithm(x, w, padding=four)
    assert kernels.choose_algorithm(x, w, padding=(2, 1)) == \
        kernels.choose_algorithm(x, w, padding=(2, 2, 1, 1))
    assert kernels.choose_algorithm(x, w, padding="valid") == \
        kernels.choose_algorithm(x, w, padding=(0, 0, 0, 0))
    with pytest.raises(ValueError, match="padding.*top, bottom, left, right"):
        kernels.choose_algorithm(x, w, padding=(1, 2, 3))
    with pytest.raises(ValueError, match="'valid', 'same'"):
        kernels.choose_algorithm(x, w, padding="full")


def test_choose_algorithm_takes_int_stride_and_dilation():
    # As conv2d takes them: an int stands for the same value on both axes.
    x, w = (1, 128, 28, 28), (128, 128, 3, 3)
    for stride, dilation in ((2, 1), (1, 2), (2, 2)):
        assert kernels.choose_algorithm(x, w, stride=stride, padding=1,
                                        dilation=dilation) == \
            kernels.choose_algorithm(x, w, stride=(stride, stride), padding=1,
                                     dilation=(dilation, dilation))
    with pytest.raises(ValueError, match="stride"):
        kernels.choose_algorithm(x, w, stride=0)
    with pytest.raises(ValueError, match="dilation"):
        kernels.choose_algorithm(x, w, dilation=(1, 0))
