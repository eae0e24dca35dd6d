"""Layer shapes of real networks, and the named benchmark workloads.

Each network is a list of :class:`Layer` records, in forward order, with
the spatial size of the layer's input at the network's usual input size
(224 x 224 for VGG and ResNet, 32 x 32 for LeNet-5).  Summing
:attr:`Layer.params` (convolution and fully connected layers through
:func:`kernels.geometry.conv_params`, a fully connected layer being a 1 x 1
convolution on a 1 x 1 map; batch norm 2 per channel: scale and shift)
reproduces the published parameter counts:

============  ===========  =========================================
network       parameters   source of the layer list
============  ===========  =========================================
lenet5            61,706   LeCun et al. 1998, C3 fully connected
vgg16        138,357,544   Simonyan & Zisserman 2014, configuration D
resnet18      11,689,512   torchvision ``resnet18``
resnet50      25,557,032   torchvision ``resnet50`` (v1.5: stride on
                           the 3 x 3 convolution of each bottleneck)
============  ===========  =========================================

torchvision's ResNets have no bias in their convolutions (each is followed
by batch norm), 1 x 1 "downsample" convolutions without bias plus batch
norm on the first block of each stage, and a fully connected layer with
bias.  Pooling layers have no parameters; they are listed so that the
spatial sizes are traceable.

:func:`conv_layers` turns a network into the distinct convolution problems
that a benchmark should run, and :data:`WORKLOADS` names the fixed sets of
problems used throughout the project's benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from kernels.geometry import conv_output_size, conv_params, pool_output_size

__all__ = ["Layer", "ConvCase", "NETWORKS", "PUBLISHED_PARAMS", "WORKLOADS",
           "param_count", "conv_layers", "workload", "kernel_sweep"]


@dataclass(frozen=True)
class Layer:
    """One layer of a network.

    Attributes
    ----------
    name : str
        Unique within the network, e.g. ``"layer2.0.conv2"``.
    kind : {"conv", "fc", "bn", "pool"}
        A fully connected layer (``"fc"``) is a 1 x 1 convolution on a 1 x 1
        map of ``c_in`` channels; batch norm (``"bn"``) and pooling keep the
        channel count (``c_in == c_out``).
    c_in, c_out : int
    k : int or (kH, kW)
        Kernel (or pooling window) size; 1 for fc and bn.
    stride, padding, groups : int
    bias : bool
        Whether a convolution / fc layer has a bias.
    in_hw : (H, W)
        Spatial size of the layer's input.
    """

    name: str
    kind: str
    c_in: int
    c_out: int
    k: int | tuple = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    bias: bool = True
    in_hw: tuple = (1, 1)

    @property
    def kernel_hw(self):
        return tuple(self.k) if isinstance(self.k, (tuple, list)) else (self.k, self.k)

    @property
    def out_hw(self):
        kh, kw = self.kernel_hw
        h, w = self.in_hw
        if self.kind == "conv":
            return (conv_output_size(h, kh, self.stride, self.padding),
                    conv_output_size(w, kw, self.stride, self.padding))
        if self.kind == "pool":
            return (pool_output_size(h, kh, self.stride, self.padding),
                    pool_output_size(w, kw, self.stride, self.padding))
        return (h, w)

    @property
    def params(self):
        """Learnable parameters (batch norm: scale and shift per channel)."""
        if self.kind in ("conv", "fc"):
            return conv_params(self.c_in, self.c_out, self.k, bias=self.bias,
                               groups=self.groups)
        if self.kind == "bn":
            return 2 * self.c_out
        return 0


class ConvCase(NamedTuple):
    """One 2-D convolution problem to benchmark (padding symmetric, int)."""

    label: str
    x_shape: tuple      # (N, C, H, W)
    w_shape: tuple      # (K, C // groups, kH, kW)
    stride: int
    padding: int
    groups: int


class _Builder:
    """Appends layers while tracking the channel count and spatial size."""

    def __init__(self, channels, hw):
        self.layers = []
        self.channels = channels
        self.hw = tuple(hw)

    def _add(self, layer):
        self.layers.append(layer)
        self.channels = layer.c_out
        self.hw = layer.out_hw
        return layer

    def conv(self, name, c_out, k, stride=1, padding=0, bias=True, groups=1):
        return self._add(Layer(name, "conv", self.channels, c_out, k, stride,
                               padding, groups, bias, self.hw))

    def bn(self, name):
        return self._add(Layer(name, "bn", self.channels, self.channels,
                               bias=False, in_hw=self.hw))

    def pool(self, name, k, stride=None, padding=0):
        stride = k if stride is None else stride
        return self._add(Layer(name, "pool", self.channels, self.channels, k,
                               stride, padding, bias=False, in_hw=self.hw))

    def global_pool(self, name):
        return self.pool(name, self.hw, 1)

    def flatten(self):
        """The next fc layer sees every value of the map as a channel."""
        self.channels *= self.hw[0] * self.hw[1]
        self.hw = (1, 1)

    def fc(self, name, c_out, bias=True):
        return self._add(Layer(name, "fc", self.channels, c_out, 1, bias=bias,
                               in_hw=(1, 1)))


def _lenet5():
    b = _Builder(1, (32, 32))
    b.conv("C1", 6, 5)
    b.pool("S2", 2)
    b.conv("C3", 16, 5)          # every C3 map sees all six S2 maps
    b.pool("S4", 2)
    b.conv("C5", 120, 5)         # 5x5 on a 5x5 map: output 1x1
    b.fc("F6", 84)
    b.fc("output", 10)
    return b.layers


def _vgg16():
    b = _Builder(3, (224, 224))
    stages = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
    for s, (width, depth) in enumerate(stages, start=1):
        for i in range(1, depth + 1):
            b.conv(f"conv{s}_{i}", width, 3, padding=1)
        b.pool(f"pool{s}", 2)
    b.flatten()                   # 512 x 7 x 7 = 25088
    b.fc("fc6", 4096)
    b.fc("fc7", 4096)
    b.fc("fc8", 1000)
    return b.layers


def _resnet_stem(b):
    b.conv("conv1", 64, 7, stride=2, padding=3, bias=False)
    b.bn("bn1")
    b.pool("maxpool", 3, stride=2, padding=1)


def _downsample(b, name, c_in, hw, c_out, stride):
    """1x1 projection shortcut + bn, on the block's input."""
    channels, out_hw = b.channels, b.hw
    b.channels, b.hw = c_in, hw
    b.conv(f"{name}.downsample.0", c_out, 1, stride=stride, bias=False)
    b.bn(f"{name}.downsample.1")
    assert (b.channels, b.hw) == (channels, out_hw)


def _basic_block(b, name, width, stride):
    c_in, hw = b.channels, b.hw
    b.conv(f"{name}.conv1", width, 3, stride=stride, padding=1, bias=False)
    b.bn(f"{name}.bn1")
    b.conv(f"{name}.conv2", width, 3, padding=1, bias=False)
    b.bn(f"{name}.bn2")
    if stride != 1 or c_in != width:
        _downsample(b, name, c_in, hw, width, stride)


def _bottleneck(b, name, width, stride):
    c_in, hw = b.channels, b.hw
    b.conv(f"{name}.conv1", width, 1, bias=False)
    b.bn(f"{name}.bn1")
    b.conv(f"{name}.conv2", width, 3, stride=stride, padding=1, bias=False)
    b.bn(f"{name}.bn2")
    b.conv(f"{name}.conv3", 4 * width, 1, bias=False)
    b.bn(f"{name}.bn3")
    if stride != 1 or c_in != 4 * width:
        _downsample(b, name, c_in, hw, 4 * width, stride)


def _resnet(block, depths):
    b = _Builder(3, (224, 224))
    _resnet_stem(b)
    for stage, (width, depth) in enumerate(zip((64, 128, 256, 512), depths),
                                           start=1):
        for i in range(depth):
            stride = 2 if (i == 0 and stage > 1) else 1
            block(b, f"layer{stage}.{i}", width, stride)
    b.global_pool("avgpool")
    b.fc("fc", 1000)
    return b.layers


NETWORKS = {
    "lenet5": _lenet5(),
    "vgg16": _vgg16(),
    "resnet18": _resnet(_basic_block, (2, 2, 2, 2)),
    "resnet50": _resnet(_bottleneck, (3, 4, 6, 3)),
}

#: Published parameter counts (for the tests and the README).
PUBLISHED_PARAMS = {
    "lenet5": 61_706,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
}


def _network(name):
    try:
        return NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; known: "
                         f"{', '.join(sorted(NETWORKS))}") from None


def param_count(name):
    """Learnable parameters of network ``name`` (sum of its layers')."""
    return sum(layer.params for layer in _network(name))


def conv_layers(name, batch=1):
    """The distinct convolution problems of a network.

    Layers with the same input shape, weight shape, stride, padding and
    groups are one problem; its label names the first such layer and how
    many layers share it (``"layer1.0.conv2 (x6)"``).

    Returns
    -------
    list of :class:`ConvCase`
        ``(label, x_shape, w_shape, stride, padding, groups)`` in forward
        order, ``x_shape = (batch, C, H, W)``.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    seen = {}
    for layer in _network(name):
        if layer.kind != "conv":
            continue
        kh, kw = layer.kernel_hw
        key = ((batch, layer.c_in) + tuple(layer.in_hw),
               (layer.c_out, layer.c_in // layer.groups, kh, kw),
               layer.stride, layer.padding, layer.groups)
        if key in seen:
            seen[key][1] += 1
        else:
            seen[key] = [layer.name, 1]
    cases = []
    for (x_shape, w_shape, stride, padding, groups), (first, count) in seen.items():
        label = first if count == 1 else f"{first} (x{count})"
        cases.append(ConvCase(label, x_shape, w_shape, stride, padding, groups))
    return cases


def kernel_sweep(x_shape, k_out, kernels, padding="same", stride=1, groups=1):
    """Cases of one input shape over kernel sizes ``kernels`` (ints).

    ``padding="same"`` uses ``k // 2`` (exactly "same" for odd kernels at
    stride 1), ``"valid"`` zero, an int that value.
    """
    n, c, h, w = x_shape
    cases = []
    for k in kernels:
        pad = {"same": k // 2, "valid": 0}.get(padding, padding)
        cases.append(ConvCase(f"k={k}", (n, c, h, w), (k_out, c // groups, k, k),
                              stride, pad, groups))
    return cases


def _resnet50_3x3(batch=4):
    """ResNet-50's stride-1 3x3 convolutions, one per stage."""
    return [ConvCase(f"{c}@{hw}x{hw}", (batch, c, hw, hw), (c, c, 3, 3), 1, 1, 1)
            for c, hw in ((64, 56), (128, 28), (256, 14), (512, 7))]


#: The named workloads: name -> (description, function returning cases).
WORKLOADS = {
    "resnet50-3x3": (
        "ResNet-50's 3x3 stride-1 layers at batch 4: 64@56², 128@28², "
        "256@14², 512@7²",
        lambda: _resnet50_3x3(batch=4)),
    "single-channel-1024": (
        "one 1024x1024 image, one filter, 'same' padding, kernels 3..31",
        lambda: kernel_sweep((1, 1, 1024, 1024), 1, range(3, 32, 4))),
    "c64-56": (
        "C = K = 64 at 56x56, batch 1, 'same' padding, kernels 1..11",
        lambda: kernel_sweep((1, 64, 56, 56), 64, (1, 3, 5, 7, 9, 11))),
    "lenet5": (
        "LeNet-5's convolutions at batch 64 (small layers)",
        lambda: conv_layers("lenet5", batch=64)),
}


def workload(name):
    """The cases of the named workload (see :data:`WORKLOADS`)."""
    try:
        return WORKLOADS[name][1]()
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: "
                         f"{', '.join(sorted(WORKLOADS))}") from None
