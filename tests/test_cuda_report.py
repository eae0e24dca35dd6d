"""``convbench cuda-report``: the info-log parser, the occupancy
arithmetic, the roofline model, module discovery and the CLI.

Everything but the compilation test runs without numba-cuda; that one
compiles the GEMM core for real in a subprocess with
``NUMBA_ENABLE_CUDASIM`` removed (numba's simulator has no compile_ptx).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from convbench import cli
from convbench import cuda_report as cr
from kernels._dispatch import ConvSpec

from conftest import REPO_ROOT

HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None

# Captured from nvJitLink (CUDA 13) linking numba-cuda 0.30's PTX of the
# float32 GEMM core (kernels/cuda/_gemm.py), mangled names shortened.
LOG_SM90 = (
    "ptxas info    : 0 bytes gmem\n"
    "ptxas info    : Compiling entry function '_ZN7kernels4cuda5_gemm4gemmE' "
    "for 'sm_90'\n"
    "ptxas info    : Function properties for _ZN7kernels4cuda5_gemm4gemmE\n"
    "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes "
    "spill loads\n"
    "ptxas info    : Used 71 registers, used 1 barriers\n"
    "ptxas info    : Compile time = 64.841 ms\n"
    "info    : 8 bytes gmem\n"
    "info    : Function properties for '_ZN7kernels4cuda5_gemm4gemmE':\n"
    "info    : used 71 registers, used 1 barriers, 0 stack, 9216 bytes smem, "
    "824 bytes cmem[0], 0 bytes lmem\n\x00")
LOG_SM80 = (
    "ptxas info    : 0 bytes gmem\n"
    "ptxas info    : Compiling entry function '_ZN7kernels4cuda5_gemm4gemmE' "
    "for 'sm_80'\n"
    "ptxas info    : Function properties for _ZN7kernels4cuda5_gemm4gemmE\n"
    "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes "
    "spill loads\n"
    "ptxas info    : Used 98 registers, used 1 barriers, 648 bytes cmem[0]\n"
    "ptxas info    : Compile time = 35.192 ms\n"
    "info    : 8 bytes gmem\n"
    "info    : Function properties for '_ZN7kernels4cuda5_gemm4gemmE':\n"
    "info    : used 98 registers, used 1 barriers, 0 stack, 16384 bytes smem, "
    "648 bytes cmem[0], 0 bytes lmem\n\x00")


# --------------------------------------------------------------------------
# Info log
# --------------------------------------------------------------------------

def test_parse_info_log_sm90():
    info = cr.parse_info_log(LOG_SM90)
    assert info == {"function": "_ZN7kernels4cuda5_gemm4gemmE",
                    "registers": 71, "barriers": 1, "stack": 0,
                    "spill_stores": 0, "spill_loads": 0, "smem": 9216,
                    "lmem": 0}


def test_parse_info_log_sm80():
    info = cr.parse_info_log(LOG_SM80)
    assert (info["registers"], info["smem"], info["spill_stores"]) == (98, 16384, 0)


def test_parse_info_log_spills():
    log = LOG_SM90.replace(
        "0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads",
        "40 bytes stack frame, 36 bytes spill stores, 28 bytes spill loads")
    info = cr.parse_info_log(log)
    assert (info["stack"], info["spill_stores"], info["spill_loads"]) == (40, 36, 28)


def test_parse_info_log_missing_fields_are_none():
    assert cr.parse_info_log("nothing here")["registers"] is None


def test_row_removes_reserved_smem_on_sm90_only():
    entry = cr_entry(threads=256)
    r90 = cr._row("_gemm", entry, "float32", "sm_90", cr.parse_info_log(LOG_SM90))
    r80 = cr._row("_gemm", entry, "float32", "sm_80",
                  dict(cr.parse_info_log(LOG_SM90), smem=8192))
    assert r90["smem_static"] == r80["smem_static"] == 8192
    assert r90["blocks"] == 3 and r90["limiter"] == "registers"


def cr_entry(threads, dynamic=None):
    from types import SimpleNamespace
    return SimpleNamespace(name="k", threads=threads, note="",
                           dynamic_shared=dynamic)


# --------------------------------------------------------------------------
# Occupancy, by hand
# --------------------------------------------------------------------------

def test_occupancy_register_limited():
    # 71 regs -> ceil(71*32/256)*256 = 2304 per warp; 65536 // 2304 = 28
    # warps; 8 warps per block -> 3 blocks -> 24 of 64 warps.
    occ = cr.occupancy("sm_90", 71, 256, 8192)
    assert (occ["blocks"], occ["warps"], occ["occupancy"]) == (3, 24, 0.375)
    assert occ["limiter"] == "registers"


def test_occupancy_smem_limited():
    # 48 KiB + 1 KiB reserved per block: 228 // 49 = 4 blocks on sm_90,
    # 164 // 49 = 3 on sm_80; registers allow 16, threads 16.
    occ = cr.occupancy("sm_90", 32, 128, 48 * 1024)
    assert (occ["blocks"], occ["warps"], occ["limiter"]) == (4, 16, "smem")
    assert occ["occupancy"] == 0.25
    occ = cr.occupancy("sm_80", 32, 128, 48 * 1024)
    assert (occ["blocks"], occ["warps"], occ["limiter"]) == (3, 12, "smem")


def test_occupancy_thread_limited():
    # 1024 threads: 2 blocks fill 2048 threads; 16 regs would allow 4.
    occ = cr.occupancy("sm_90", 16, 1024)
    assert (occ["blocks"], occ["warps"], occ["occupancy"]) == (2, 64, 1.0)
    assert occ["limiter"] == "threads"


def test_occupancy_block_limited_and_ties():
    occ = cr.occupancy("sm_90", 16, 32)
    assert (occ["blocks"], occ["warps"], occ["limiter"]) == (32, 32, "blocks")
    # 32 regs x 1024 threads: registers and threads both allow 2.
    assert cr.occupancy("sm_80", 32, 1024)["limiter"] == "registers+threads"


def test_occupancy_cannot_launch():
    assert cr.occupancy("sm_90", 128, 1024)["blocks"] == 0   # 128 KiB regs
    assert cr.occupancy("sm_80", 64, 128, 200 * 1024)["blocks"] == 0


def test_check_failures_lists_spills_and_low_occupancy():
    good = {"spill_stores": 0, "spill_loads": 0, "blocks": 3,
            "occupancy": 0.375, "limiter": "registers"}
    spill = dict(good, spill_stores=8)
    low = dict(good, blocks=1, occupancy=0.125)
    err = {"error": "compile_ptx failed: TypingError: x"}
    bad = cr.check_failures([good, spill, low, err])
    assert [r for r, _ in bad] == [spill, low, err]
    assert "spills" in bad[0][1] and "12.5 %" in bad[1][1]


# --------------------------------------------------------------------------
# Roofline model
# --------------------------------------------------------------------------

def _spec(x_shape, w_shape, stride=1, pad=1, groups=1):
    return ConvSpec.from_config(x_shape, w_shape, (stride, stride),
                                (pad,) * 4, (1, 1), groups, np.float32)


def test_model_direct_flops_are_two_macs():
    rows = [r for r in cr.model_rows() if r["algorithm"] == "direct"]
    assert len(rows) == 7 + 9 + 5   # ResNet-50 3x3, VGG-16, single-channel
    for r in rows:
        assert r["flops"] == 2 * r["macs"]
    spec = _spec((2, 3, 9, 11), (4, 3, 3, 3))
    assert cr.model_conv(spec, "direct")["flops"] == 2 * spec.macs


@pytest.mark.parametrize("m, factor", [(2, 36 / 16), (4, 144 / 36)])
def test_model_winograd_gemm_multiplies_shrink_by_tile_factor(m, factor):
    # F(m, 3): alpha^2 = (m + 2)^2 multiplies per m^2 outputs instead of
    # 9 m^2: direct / Winograd = 9 m^2 / (m + 2)^2 (2.25 and 4).
    spec = _spec((2, 16, 8, 8), (24, 16, 3, 3))       # 8 = 2*4 = 4*2 outputs
    row = cr.model_conv(spec, "winograd", winograd_tile=m)
    assert row["gemm_macs"] * factor == pytest.approx(spec.macs, rel=0, abs=0)
    assert row["detail"].startswith(f"F({m}x{m},3x3)")


def test_model_winograd_not_for_stride_two():
    row = cr.model_conv(_spec((1, 8, 16, 16), (8, 8, 3, 3), stride=2),
                        "winograd")
    assert row["flops"] is None and "stride" in row["note"]


def test_model_im2col_counts_tile_padding():
    bm, bn, bk = cr._gemm_tiles()
    full = _spec((1, bk, 8, 8), (bm, bk, 1, 1), pad=0)        # N = 64 = BN
    assert cr.model_conv(full, "im2col")["flops"] == 2 * full.macs
    single = _spec((1, 1, 64, 64), (1, 1, 3, 3))
    row = cr.model_conv(single, "im2col")
    # M = 1 -> BM rows, K = 9 -> the next multiple of BK, N = 4096 exact.
    assert row["flops"] == 2 * bm * (64 * 64) * (-(-9 // bk) * bk)


def test_model_fft_tile_is_a_power_of_two_and_counts_transforms():
    # 9 output channels > few_channel_max_k: the contraction is the GEMM
    spec = _spec((1, 1, 64, 64), (9, 1, 3, 3))
    row = cr.model_conv(spec, "fft", fft_tile=64)
    # one 64x64 tile would give 62 outputs: 2x2 tiles of 62 for 64 outputs.
    tiles = 4
    transforms = (tiles + 9 + 9 * tiles) * 2.5 * 64 * 64 * np.log2(64 * 64)
    bm, bn, bk = cr._gemm_tiles()
    gemm = 8 * 64 * 33 * bm * bn * bk
    assert row["flops"] == pytest.approx(transforms + gemm)
    assert "GEMM" in row["detail"]
    auto = cr.model_conv(spec, "fft")
    t = int(auto["detail"].split()[1].split("x")[0])
    assert t & (t - 1) == 0


def test_model_fft_few_channels_contract_elementwise_without_padding():
    """Single channel: 8 real FLOPs per complex multiply-add, nothing
    executed for padding, X and W read and Y written once."""
    spec = _spec((2, 1, 64, 64), (3, 1, 3, 3))
    row = cr.model_conv(spec, "fft", fft_tile=64)
    tiles, bins, elt = 2 * 4, 64 * 33, 4
    transforms = (tiles + 3 + 3 * tiles) * 2.5 * 64 * 64 * np.log2(64 * 64)
    macs = bins * tiles * 3 * 1
    assert "elementwise" in row["detail"] and row["gemm_macs"] == macs
    assert row["flops"] == pytest.approx(transforms + 8 * macs)
    assert row["useful_flops"] == row["flops"]     # no padding waste
    s_x, s_w, s_y = (2 * elt * bins * v for v in (tiles, 3, 3 * tiles))
    x_b, w_b, y_b = elt * 2 * 64 * 64, elt * 27, elt * 2 * 3 * 64 * 64
    # transforms write X, W and read Y; the contraction reads X, W, writes Y
    assert row["bytes"] == x_b + w_b + y_b + 2 * (s_x + s_w + s_y)
    # the single-2048 workload: no padding waste in any fft row
    for r in cr.model_rows():
        if r["workload"] == "single-2048" and r["algorithm"] == "fft":
            assert "elementwise" in r["detail"]
            assert r["useful_flops"] == r["flops"]


def test_model_pooling_is_bandwidth():
    (row,) = [r for r in cr.model_rows() if r["op"] == "max_pool2d"]
    assert row["x_shape"] == [32, 64, 112, 112] and row["out_hw"] == [56, 56]
    assert row["bytes"] == 4 * 32 * 64 * (112 * 112 + 56 * 56)
    for dev in cr.DEVICES:
        assert row[f"bound_{dev.name}"] == "memory"
        assert row[f"t_{dev.name}_us"] == pytest.approx(
            1e6 * row["bytes"] / dev.bandwidth)


def test_model_roofline_time_is_the_larger_term():
    for r in cr.model_rows():
        if r.get("flops") is None or r["op"] != "conv2d":
            continue
        for dev in cr.DEVICES:
            t = max(r["flops"] / dev.peak_fp32, r["bytes"] / dev.bandwidth)
            assert r[f"t_{dev.name}_us"] == pytest.approx(1e6 * t)


def test_model_table_prints_every_workload():
    text = cr.format_model_table(cr.model_rows())
    for name in ("resnet50-3x3 b32", "vgg16 b32", "single-2048",
                 "resnet50-maxpool b32"):
        assert f"## {name}" in text
    assert "n/a: Winograd computes stride-1" in text


# --------------------------------------------------------------------------
# Discovery and errors
# --------------------------------------------------------------------------

def test_discovery_reports_a_module_that_fails_to_import(tmp_path, monkeypatch):
    pkg = tmp_path / "fakecudapkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text("REPORT = ['entry-a', 'entry-b']\n")
    (pkg / "plain.py").write_text("X = 1\n")
    (pkg / "broken.py").write_text("raise ImportError('no such thing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = cr.discover_entries("fakecudapkg")
    assert found[0][0] == "broken" and found[0][1] is None
    assert "ImportError: no such thing" in found[0][2]
    assert [(m, e) for m, e, _ in found[1:]] == [("good", "entry-a"),
                                                 ("good", "entry-b")]


def test_missing_numba_cuda_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba_cuda"
                        else real(name, *a))
    with pytest.raises(RuntimeError, match=r"pip install 'convbench\[cuda\]'"):
        cr.compile_report(("sm_90",), ("float32",))


@pytest.mark.parametrize("argv, message", [
    (["--arch", "sm_70"], "unknown architecture 'sm_70'"),
    (["--arch", ""], "no architecture given"),
    (["--dtype", "float16"], "unknown dtype 'float16'"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["cuda-report"] + argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "choose from" in err


def test_cli_model_json(tmp_path, capsys):
    out = tmp_path / "model.json"
    assert cli.main(["cuda-report", "--model", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "roofline model" in text and "H200 us" in text
    data = json.loads(out.read_text())
    algorithms = {r["algorithm"] for r in data["model"]}
    assert algorithms == {"direct", "im2col", "winograd", "fft", "-"}
    assert "kernels" not in data          # --model alone compiles nothing


# --------------------------------------------------------------------------
# Compilation of the GEMM core (real numba-cuda, no simulator)
# --------------------------------------------------------------------------

@pytest.mark.skipif(not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed "
                    "(pip install 'convbench[cuda]')")
def test_cli_compiles_the_gemm_core(tmp_path):
    """With NUMBA_ENABLE_CUDASIM set, the report compiles in a subprocess
    without it; the GEMM core compiles without spills at >= 25 %."""
    out = tmp_path / "report.json"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "convbench", "cuda-report", "--arch",
         "sm_80,sm_90", "--dtype", "float32,float64", "--check", "--json",
         str(out), "--modules", "_gemm"], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True,
        timeout=300)
    rows = [r for r in json.loads(out.read_text())["kernels"]
            if r["module"] == "_gemm"]
    assert len(rows) == 4, proc.stdout + proc.stderr
    for r in rows:
        assert "error" not in r, r
        assert 32 <= r["registers"] <= 255
        assert r["spill_stores"] == r["spill_loads"] == 0
        bm, bn, bk = cr._gemm_tiles()     # two slabs of A and of B
        elt = 4 if r["dtype"] == "float32" else 8
        assert r["smem_static"] == 2 * bk * (bm + bn) * elt
        assert r["threads"] == 256 and r["occupancy"] >= 0.25
    assert "_gemm" in proc.stdout and "batched_matmul" in proc.stdout
    # --check fails only for other modules' kernels, never for _gemm's
    if proc.returncode != 0:
        assert "_gemm." not in proc.stdout.split("check failed")[-1]
    assert proc.returncode in (0, 1), proc.stderr
