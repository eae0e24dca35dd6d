"""Parameter counts of real networks from ``kernels.geometry.conv_params``.

The layer lists live in ``convbench.workloads.NETWORKS``; this test sums
the parameters itself, from each layer's fields, and compares with the
counts published for the networks (hard-coded here from the literature and
torchvision, not taken from the code under test):

* LeNet-5 (LeCun et al. 1998, C3 connected to all six S2 maps): 61,706
* VGG-16 (configuration D): 138,357,544
* ResNet-18 / ResNet-50 (torchvision, batch norm 2 parameters per
  channel, convolutions and 1x1 downsample convolutions without bias, fc
  with bias): 11,689,512 / 25,557,032
"""

from __future__ import annotations

import pytest

from kernels import geometry

workloads = pytest.importorskip("convbench.workloads")

PUBLISHED = {
    "lenet5": 61_706,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
}


def layer_params(layer):
    """Learnable parameters of one layer spec, from its fields."""
    if layer.kind in ("conv", "fc"):
        # A fully connected layer is a 1x1 convolution on a 1x1 map.
        k = 1 if layer.kind == "fc" else layer.k
        return geometry.conv_params(layer.c_in, layer.c_out, k, bias=layer.bias,
                                    groups=layer.groups)
    if layer.kind == "bn":
        return 2 * layer.c_out          # scale and shift per channel
    assert layer.kind in ("pool", "avgpool"), \
        f"unknown layer kind {layer.kind!r}"
    return 0


@pytest.mark.parametrize("network", sorted(PUBLISHED))
def test_conv_params_summed_over_layers_reproduce_published_counts(network):
    layers = workloads.NETWORKS[network]
    total = sum(layer_params(layer) for layer in layers)
    assert total == PUBLISHED[network], (
        f"{network}: {total:,} parameters from {len(layers)} layers, "
        f"published {PUBLISHED[network]:,}")
    assert workloads.param_count(network) == total


@pytest.mark.parametrize("network", ("resnet18", "resnet50"))
def test_resnet_convolutions_have_no_bias_and_fc_has(network):
    layers = workloads.NETWORKS[network]
    assert all(not layer.bias for layer in layers if layer.kind == "conv")
    assert [layer.bias for layer in layers if layer.kind == "fc"] == [True]


def test_lenet5_layer_shapes():
    layers = {layer.name: layer for layer in workloads.NETWORKS["lenet5"]}
    # C1: 6 @ 5x5 on 1 map; C3: 16 @ 5x5 on all 6; C5: 120 @ 5x5 on 16.
    assert [(layers[n].c_in, layers[n].c_out) for n in ("C1", "C3", "C5", "F6", "output")] \
        == [(1, 6), (6, 16), (16, 120), (120, 84), (84, 10)]
    assert layers["C5"].out_hw == (1, 1)
