"""The named workloads of convbench.workloads (issue 11)."""

import subprocess
import sys

import numpy as np
import pytest

from convbench import sweep, workloads
from kernels import accuracy
from kernels.geometry import conv_output_size

NEW = ("unet-572", "unet-256-b4", "mobilenet-v1", "mobilenet-v2",
       "se-resnet50", "jet-images", "timeseries-1d", "psf-astro",
       "deconv-microscopy")


def _flops(case):
    """2 N K (C/g) kH kW Ho Wo, computed independently of the module."""
    n, c, h, w = case.x_shape
    k, cg, kh, kw = case.w_shape
    assert cg * case.groups == c
    if case.padding == "same":
        ho, wo = h, w
    else:
        p = 0 if case.padding == "valid" else case.padding
        ho = (h + 2 * p - kh) // case.stride + 1
        wo = (w + 2 * p - kw) // case.stride + 1
    return 2 * n * k * (c // case.groups) * kh * kw * ho * wo


@pytest.mark.parametrize("name", workloads.WORKLOADS)
def test_flops_are_the_sum_over_layers(name):
    wl = workloads.WORKLOADS[name]
    assert wl.flops == sum(_flops(c) for c in wl.layers())
    assert wl.flops > 0 and wl.provenance


@pytest.mark.parametrize("name", workloads.WORKLOADS)
def test_shapes_are_valid(name):
    wl = workloads.WORKLOADS[name]
    for c in wl.layers():
        n, ch, h, w = c.x_shape
        k, cg, kh, kw = c.w_shape
        assert min(n, ch, h, w, k, cg, kh, kw) >= 1
        assert ch % c.groups == 0 and k % c.groups == 0
        assert cg == ch // c.groups
        assert isinstance(c.padding, int)     # cuda_report reads it as int
        assert conv_output_size(h, kh, c.stride, c.padding) >= 1
        assert conv_output_size(w, kw, c.stride, c.padding) >= 1
        # Inputs and outputs are at most 256 MiB each in float32.
        out = sweep.output_shape(c)
        assert 4 * n * ch * h * w <= 2**28
        assert 4 * out[0] * out[1] * out[2] * out[3] <= 2**28
    for op in wl.other_ops():
        assert op.out_shape[2] >= 1 and op.out_shape[3] >= 1
    # The sweep runs the distinct problems; nothing is lost by merging.
    assert {c[1:] for c in wl.build()} == {c[1:] for c in wl.layers()}
    # Backward compatible (description, build) pair.
    description, build = wl
    assert description == wl[0] and build() == wl.build()


def test_unet_follows_the_paper():
    layers = workloads.unet_layers()
    convs = [layer for layer in layers if layer.kind == "conv"]
    assert len(convs) == 23 - 4                # 23 conv layers incl. 4 up-convs
    assert convs[-1].out_hw == (388, 388) and convs[-1].c_out == 2
    assert max(layer.c_out for layer in convs) == 1024
    bottom = [layer for layer in convs if layer.name.startswith("down4")]
    assert bottom[-1].out_hw == (28, 28)
    ups = [op for op in workloads.unet()[1] if op.op == "conv_transpose2d"]
    assert [op.out_shape[2] for op in ups] == [56, 104, 200, 392]
    pools = [op for op in workloads.unet()[1] if op.op == "max_pool2d"]
    assert [op.out_shape[2] for op in pools] == [284, 140, 68, 32]
    same = workloads.unet_layers(256, padding=1)
    assert same[-1].out_hw == (256, 256)


@pytest.mark.parametrize("name, published_macs", [("mobilenet-v1", 569e6),
                                                  ("mobilenet-v2", 300e6)])
def test_mobilenet_multiply_adds_are_the_published_ones(name, published_macs):
    # The papers count the fc layer too (1024 x 1000 and 1280 x 1000).
    fc = {"mobilenet-v1": 1024 * 1000, "mobilenet-v2": 1280 * 1000}[name]
    macs = workloads.WORKLOADS[name].flops / 2 + fc
    assert macs == pytest.approx(published_macs, rel=0.01)
    dw = [c for c in workloads.WORKLOADS[name].layers() if c.groups > 1]
    assert dw and all(c.groups == c.x_shape[1] and c.w_shape[1:] == (1, 3, 3)
                      for c in dw)


def test_se_blocks_reduce_by_16():
    cases = workloads.WORKLOADS["se-resnet50"].layers()
    assert len(cases) == 2 * (3 + 4 + 6 + 3)
    for fc1, fc2 in zip(cases[::2], cases[1::2]):
        c = fc1.x_shape[1]
        assert fc1.x_shape[2:] == (1, 1) and fc1.w_shape == (c // 16, c, 1, 1)
        assert fc2.w_shape == (c, c // 16, 1, 1)
    ops = workloads.WORKLOADS["se-resnet50"].other_ops()
    assert {op.op for op in ops} == {"global_avg_pool2d"}


def test_one_d_workload_is_2d_with_h_1():
    for c in workloads.WORKLOADS["timeseries-1d"].layers():
        assert c.x_shape[2] == 1 and c.w_shape[2] == 1 and c.padding == 0


def test_largest_images_have_batch_1():
    for name in ("psf-astro", "deconv-microscopy"):
        for c in workloads.WORKLOADS[name].layers():
            assert c.x_shape[0] == 1 and c.x_shape[1] == 1


def test_list_workloads_prints_every_workload():
    proc = subprocess.run([sys.executable, "-m", "convbench", "sweep",
                           "--list-workloads"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.split("descriptions:")[0]
    for name, wl in workloads.WORKLOADS.items():
        row = [line for line in table.splitlines()
               if line.split()[:1] == [name]]
        assert len(row) == 1, name
        assert f"{wl.flops / 1e9:.3f}" in row[0] and wl.provenance in row[0]


@pytest.mark.parametrize("cases", [
    workloads.psf_astro(sizes=(48,), kernels=(15,)),
    [c._replace(x_shape=(1, 1, 1, 300)) for c in
     workloads.timeseries_1d()[:2]],
    workloads.unet(44, batch=1, base=2, depth=2)[0][:3],
], ids=["psf-astro", "timeseries-1d", "unet"])
def test_quick_sweep_on_shrunken_scientific_workloads(cases):
    config = sweep.SweepConfig(algorithms=("direct", "fft"),
                               peers=("scipy-direct",), repeats=1,
                               progress=False)
    result = sweep.run_sweep(cases, config)
    ok = [m for m in result.measurements if m.status == "ok"]
    assert ok
    for m in ok:     # within the documented bound, as in test_convbench
        constant = accuracy.error_constant(sweep.bound_kind(m.contender),
                                           np.float32)
        assert 0 <= m.error_units <= constant, m
    assert {m.case for m in ok} == {c.label for c in cases}
