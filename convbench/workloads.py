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
problems used throughout the project's benchmarks.  Each is a
:class:`Workload`: its conv2d layers as :class:`ConvCase` (what ``convbench
sweep --workload`` and asv run today, repeated problems merged), its FLOPs
summed over those layers, a one-line provenance, and, optionally, its other
layers (max / average / global average pooling, transposed convolutions) as
:class:`OpCase` records (swept as problems of their own op: ``--op``).  Besides the CNN
workloads there are scientific ones (U-Net for microscopy, MobileNet, SE
blocks, jet images, 1-D detector series run as 2-D with H = 1, astronomical
PSF convolution, microscopy deconvolution); the largest images (4096²) are
single-channel at batch 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from typing import Callable

from kernels.geometry import (conv_output_size, conv_params,
                              conv_transpose_output_size, pool_output_size,
                              same_padding)

__all__ = ["Layer", "ConvCase", "OpCase", "Workload", "NETWORKS",
           "PUBLISHED_PARAMS", "WORKLOADS", "param_count", "conv_layers",
           "workload", "kernel_sweep", "case_flops", "distinct_cases",
           "layer_cases", "unet", "mobilenet_v1", "mobilenet_v2",
           "se_blocks", "jet_images", "timeseries_1d", "psf_astro",
           "deconv_microscopy"]


@dataclass(frozen=True)
class Layer:
    """One layer of a network.

    Attributes
    ----------
    name : str
        Unique within the network, e.g. ``"layer2.0.conv2"``.
    kind : {"conv", "convT", "fc", "bn", "pool", "avgpool"}
        A fully connected layer (``"fc"``) is a 1 x 1 convolution on a 1 x 1
        map of ``c_in`` channels; ``"convT"`` is a transposed convolution
        (``c_in -> c_out``, output size by
        :func:`kernels.geometry.conv_transpose_output_size`); batch norm
        (``"bn"``), max pooling (``"pool"``) and average pooling
        (``"avgpool"``) keep the channel count (``c_in == c_out``).
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
        if self.kind == "convT":
            return (conv_transpose_output_size(h, kh, self.stride, self.padding),
                    conv_transpose_output_size(w, kw, self.stride, self.padding))
        if self.kind in ("pool", "avgpool"):
            return (pool_output_size(h, kh, self.stride, self.padding),
                    pool_output_size(w, kw, self.stride, self.padding))
        return (h, w)

    @property
    def params(self):
        """Learnable parameters (batch norm: scale and shift per channel)."""
        if self.kind in ("conv", "convT", "fc"):
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

    def avgpool(self, name, k, stride=None, padding=0):
        stride = k if stride is None else stride
        return self._add(Layer(name, "avgpool", self.channels, self.channels,
                               k, stride, padding, bias=False, in_hw=self.hw))

    def global_avgpool(self, name):
        return self.avgpool(name, self.hw, 1)

    def conv_t(self, name, c_out, k, stride=1, padding=0, bias=True):
        return self._add(Layer(name, "convT", self.channels, c_out, k, stride,
                               padding, 1, bias, self.hw))

    def concat(self, channels):
        """Concatenate a (cropped) skip connection of ``channels`` maps."""
        self.channels += channels

    def flatten(self):
        """The next fc layer sees every value of the map as a channel."""
        self.channels *= self.hw[0] * self.hw[1]
        self.hw = (1, 1)

    def fc(self, name, c_out, bias=True):
        return self._add(Layer(name, "fc", self.channels, c_out, 1, bias=bias,
                               in_hw=(1, 1)))


def _lenet5():
    b = _Builder(1, (32, 32))
    # S2 and S4 add their 2x2 inputs and scale the sum by a trainable
    # coefficient (LeCun et al. 1998, section II.B): an average pool.
    b.conv("C1", 6, 5)
    b.avgpool("S2", 2)
    b.conv("C3", 16, 5)          # every C3 map sees all six S2 maps
    b.avgpool("S4", 2)
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
    b.global_avgpool("avgpool")  # torchvision: AdaptiveAvgPool2d(1)
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


def layer_cases(layers, batch=1):
    """Every convolution of ``layers`` (repeats included) as a ConvCase.

    ``"fc"`` layers are not included (the benchmarks are of convolutions;
    a fully connected layer is a GEMM).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    cases = []
    for layer in layers:
        if layer.kind != "conv":
            continue
        kh, kw = layer.kernel_hw
        cases.append(ConvCase(layer.name, (batch, layer.c_in) + tuple(layer.in_hw),
                              (layer.c_out, layer.c_in // layer.groups, kh, kw),
                              layer.stride, layer.padding, layer.groups))
    return cases


def distinct_cases(cases):
    """Merge cases of the same problem, in first-seen order.

    Cases with the same input shape, weight shape, stride, padding and
    groups are one problem; its label names the first such case and how
    many cases share it (``"layer1.0.conv2 (x6)"``).
    """
    seen = {}
    for case in cases:
        key = tuple(case[1:])
        if key in seen:
            seen[key][1] += 1
        else:
            seen[key] = [case.label, 1]
    return [ConvCase(first if count == 1 else f"{first} (x{count})", *key)
            for key, (first, count) in seen.items()]


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
    return distinct_cases(layer_cases(_network(name), batch))


def case_flops(case):
    """2 N K (C/g) kH kW Ho Wo of a ConvCase (the multiply-adds of a direct
    convolution, times two); padding an int, ``"same"`` or ``"valid"``."""
    n, _, h, w = case.x_shape
    k, cg, kh, kw = case.w_shape
    if case.padding == "same":
        ph, pw = same_padding(kh), same_padding(kw)
    elif case.padding == "valid":
        ph = pw = 0
    else:
        ph = pw = int(case.padding)
    ho = conv_output_size(h, kh, case.stride, ph)
    wo = conv_output_size(w, kw, case.stride, pw)
    return 2 * n * k * cg * kh * kw * ho * wo


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


# --------------------------------------------------------------------------
# Layers other than conv2d, and the workload record
# --------------------------------------------------------------------------

class OpCase(NamedTuple):
    """A layer of a workload that is not a conv2d (swept through
    :func:`workload_problems` as a problem of its op).

    ``op`` is the name of the ``kernels`` function that computes it:
    ``"max_pool2d"``, ``"avg_pool2d"``, ``"global_avg_pool2d"`` or
    ``"conv_transpose2d"``.  ``w_shape`` is PyTorch's transposed weight
    ``(C_in, C_out, kH, kW)`` for ``conv_transpose2d``, else ``None``;
    ``kernel`` the window (or kernel) size.  ``flops``: 2 N C_in C_out kH kW
    H W for a transposed convolution (the multiply-adds of the convolution
    it is the adjoint of, times two), one operation per window element and
    output value for pooling.
    """

    label: str
    op: str
    x_shape: tuple       # (N, C, H, W)
    w_shape: tuple | None
    kernel: tuple        # (kH, kW)
    stride: int
    padding: int
    out_shape: tuple     # (N, C_out, Ho, Wo)
    flops: int


_POOL_OP = {"pool": "max_pool2d", "avgpool": "avg_pool2d"}


def layer_ops(layers, batch=1):
    """The transposed convolutions and pooling layers of ``layers``."""
    ops = []
    for layer in layers:
        if layer.kind not in ("convT", "pool", "avgpool"):
            continue
        kh, kw = layer.kernel_hw
        h, w = layer.in_hw
        ho, wo = layer.out_hw
        x_shape = (batch, layer.c_in, h, w)
        out_shape = (batch, layer.c_out, ho, wo)
        if layer.kind == "convT":
            ops.append(OpCase(layer.name, "conv_transpose2d", x_shape,
                              (layer.c_in, layer.c_out, kh, kw), (kh, kw),
                              layer.stride, layer.padding, out_shape,
                              2 * batch * layer.c_in * layer.c_out * kh * kw * h * w))
            continue
        op = _POOL_OP[layer.kind]
        if layer.kind == "avgpool" and (ho, wo) == (1, 1) and (kh, kw) == (h, w):
            op = "global_avg_pool2d"
        ops.append(OpCase(layer.name, op, x_shape, None, (kh, kw),
                          layer.stride, layer.padding, out_shape,
                          batch * layer.c_in * kh * kw * ho * wo))
    return ops


@dataclass(frozen=True)
class Workload:
    """A named workload: its conv2d layers, other layers, and provenance.

    ``layers()`` returns every conv2d of the workload as a
    :class:`ConvCase`, repeats included, and :attr:`flops` is summed over
    them; ``build()`` merges repeated problems (:func:`distinct_cases`),
    and is what ``convbench sweep --workload`` and the asv benchmarks run.
    ``other_ops()`` returns the layers that are not a conv2d (pooling,
    transposed convolutions, global average pooling) as :class:`OpCase`:
    :func:`workload_problems` turns both into problems of every op (what
    ``convbench sweep --workload`` runs by default); the other ops are not
    in :attr:`flops`.

    For backward compatibility a Workload unpacks (and indexes) as the
    former ``(description, build)`` pair.
    """

    description: str
    layers: Callable
    provenance: str = ""
    other_ops: Callable = lambda: []

    def build(self):
        return distinct_cases(self.layers())

    @property
    def flops(self):
        """Sum of 2 N K (C/g) kH kW Ho Wo over the conv2d layers."""
        return sum(case_flops(c) for c in self.layers())

    @property
    def other_flops(self):
        return sum(op.flops for op in self.other_ops())

    def __iter__(self):
        return iter((self.description, self.build))

    def __getitem__(self, i):
        return (self.description, self.build)[i]

    def __len__(self):
        return 2


# --------------------------------------------------------------------------
# Scientific and mobile workloads
# --------------------------------------------------------------------------

def _net(builder_fn, batch, **kw):
    """(conv cases with repeats, other ops) of a Layer list builder."""
    layers = builder_fn(**kw)
    return layer_cases(layers, batch), layer_ops(layers, batch)


def unet_layers(tile=572, in_channels=1, classes=2, base=64, depth=4,
                padding=0):
    """Ronneberger et al. 2015's U-Net as a Layer list.

    ``padding=0`` is the original ("valid" 3x3 convolutions, 572² -> 388²,
    skip connections cropped); ``padding=1`` the common "same" variant
    (output = input size; ``tile`` must be divisible by ``2**depth``).
    """
    b = _Builder(in_channels, (tile, tile))
    skips = []
    width = base
    for level in range(depth + 1):
        b.conv(f"down{level}.conv1", width, 3, padding=padding)
        b.conv(f"down{level}.conv2", width, 3, padding=padding)
        if level < depth:
            skips.append(b.channels)
            b.pool(f"down{level}.pool", 2)
            width *= 2
    for level in reversed(range(depth)):
        width //= 2
        b.conv_t(f"up{level}.upconv", width, 2, stride=2)
        b.concat(skips[level])
        b.conv(f"up{level}.conv1", width, 3, padding=padding)
        b.conv(f"up{level}.conv2", width, 3, padding=padding)
    b.conv("out", classes, 1)
    return b.layers


def unet(tile=572, batch=1, **kw):
    """(conv cases, other ops) of U-Net (see :func:`unet_layers`)."""
    return _net(unet_layers, batch, tile=tile, **kw)


def _separable(b, name, c_out, stride):
    """Depthwise 3x3 (groups = C) + bn, then pointwise 1x1 + bn."""
    b.conv(f"{name}.dw", b.channels, 3, stride=stride, padding=1, bias=False,
           groups=b.channels)
    b.bn(f"{name}.dw.bn")
    b.conv(f"{name}.pw", c_out, 1, bias=False)
    b.bn(f"{name}.pw.bn")


def mobilenet_v1_layers(size=224, alpha=1.0):
    """MobileNet-v1 (Howard et al. 2017, Table 1), width multiplier alpha."""
    def c(n):
        return max(8, int(n * alpha))
    b = _Builder(3, (size, size))
    b.conv("conv1", c(32), 3, stride=2, padding=1, bias=False)
    b.bn("conv1.bn")
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + \
        [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for i, (width, stride) in enumerate(plan, start=1):
        _separable(b, f"sep{i}", c(width), stride)
    b.global_avgpool("avgpool")
    b.fc("fc", 1000)
    return b.layers


def mobilenet_v2_layers(size=224):
    """MobileNet-v2 (Sandler et al. 2018, Table 2): inverted residuals,
    1x1 expansion (t), depthwise 3x3 (groups = C), 1x1 projection."""
    b = _Builder(3, (size, size))
    b.conv("conv1", 32, 3, stride=2, padding=1, bias=False)
    b.bn("conv1.bn")
    plan = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
            (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    for s_i, (t, width, n, stride) in enumerate(plan, start=1):
        for i in range(n):
            name = f"block{s_i}.{i}"
            hidden = b.channels * t
            if t != 1:
                b.conv(f"{name}.expand", hidden, 1, bias=False)
                b.bn(f"{name}.expand.bn")
            b.conv(f"{name}.dw", hidden, 3, stride=stride if i == 0 else 1,
                   padding=1, bias=False, groups=hidden)
            b.bn(f"{name}.dw.bn")
            b.conv(f"{name}.project", width, 1, bias=False)
            b.bn(f"{name}.project.bn")
    b.conv("conv_last", 1280, 1, bias=False)
    b.bn("conv_last.bn")
    b.global_avgpool("avgpool")
    b.fc("fc", 1000)
    return b.layers


def se_layers(stages=((256, 56, 3), (512, 28, 4), (1024, 14, 6), (2048, 7, 3)),
              reduction=16):
    """The squeeze-and-excitation blocks of SE-ResNet-50 (Hu et al. 2018):
    per block, global average pooling of the C x H x W bottleneck output,
    1x1 conv C -> C/r, ReLU, 1x1 conv C/r -> C, sigmoid, channel scale.
    ``stages``: (C, H = W, blocks)."""
    layers = []
    for s_i, (c, hw, blocks) in enumerate(stages, start=1):
        for i in range(blocks):
            name = f"layer{s_i}.{i}.se"
            b = _Builder(c, (hw, hw))
            b.global_avgpool(f"{name}.squeeze")
            b.conv(f"{name}.fc1", c // reduction, 1)
            b.conv(f"{name}.fc2", c, 1)
            layers += b.layers
    return layers


def _kernel_cases(prefix, x_shape, k_out, kernels, padding):
    """One case per kernel size; 1-D when H == 1 (kernel 1 x k)."""
    n, c, h, w = x_shape
    cases = []
    for k in kernels:
        kh = 1 if h == 1 else k
        pad = {"same": k // 2, "valid": 0}[padding]
        cases.append(ConvCase(f"{prefix} k={k}", x_shape, (k_out, c, kh, k),
                              1, pad, 1))
    return cases


def jet_images():
    """Calorimeter jet images: first and second layers of a jet-tagging CNN.

    25x25 x 1 channel (de Oliveira et al. 2016), 33x33 x 3 channels
    (Komiske et al. 2017), 64x64 x 2 channels (upper end of the range);
    32 then 64 filters, 3x3 and 5x5 kernels, 'same' padding, batch 1024 /
    512 / 256 (no input or output above 256 MiB in float32)."""
    cases = []
    for hw, c, batch in ((25, 1, 1024), (33, 3, 512), (64, 2, 256)):
        tag = f"{c}@{hw}x{hw} b{batch}"
        cases += _kernel_cases(f"{tag} conv1", (batch, c, hw, hw), 32, (3, 5),
                               "same")
        cases += _kernel_cases(f"{tag} conv2", (batch, 32, hw, hw), 64, (3,),
                               "same")
    return cases


def timeseries_1d():
    """1-D detector time series, run as 2-D with H = 1 and 1 x k kernels
    ('valid' padding: padding would pad H too).  10^6 samples x 1 channel
    (one filter, batch 1), 10^5 x 3 channels -> 16 (batch 4), 10^4 x 3
    -> 16 (batch 32); kernels 3, 15, 63, 255."""
    ks = (3, 15, 63, 255)
    return (_kernel_cases("1@1e6 b1", (1, 1, 1, 10**6), 1, ks, "valid")
            + _kernel_cases("3@1e5 b4", (4, 3, 1, 10**5), 16, ks, "valid")
            + _kernel_cases("3@1e4 b32", (32, 3, 1, 10**4), 16, ks, "valid"))


def psf_astro(sizes=(2048, 4096), kernels=(15, 31, 63, 127)):
    """Single-channel CCD images convolved with a PSF, 'same' padding,
    batch 1 (a 4096² float32 image is 64 MiB)."""
    cases = []
    for hw in sizes:
        cases += _kernel_cases(f"{hw}x{hw}", (1, 1, hw, hw), 1, kernels,
                               "same")
    return cases


def deconv_microscopy(plan=((512, (3, 7, 15, 31, 63)), (1024, (3, 15, 63)),
                            (2048, (3, 15, 63)), (4096, (3, 15, 63)))):
    """Single-channel microscope frames filtered by a PSF (one of the two
    convolutions of a Richardson-Lucy iteration), 'same' padding, batch 1."""
    cases = []
    for hw, kernels in plan:
        cases += _kernel_cases(f"{hw}x{hw}", (1, 1, hw, hw), 1, kernels,
                               "same")
    return cases


def _split(pair_fn):
    """Workload fields (layers, other_ops) of a (cases, ops) builder."""
    return dict(layers=lambda: pair_fn()[0], other_ops=lambda: pair_fn()[1])


#: The named workloads: name -> :class:`Workload` (unpacks as
#: ``(description, build)``).  ``convbench sweep --workload NAME`` runs
#: ``build()``: the distinct conv2d problems of the workload; the other
#: layers (``other_ops()``: pooling, transposed convolutions, global
#: average pooling) run as problems of their op (``--op``).
WORKLOADS = {
    "resnet50-3x3": Workload(
        "ResNet-50's 3x3 stride-1 layers at batch 4: 64@56², 128@28², "
        "256@14², 512@7²",
        lambda: _resnet50_3x3(batch=4),
        "He et al. 2016, torchvision resnet50"),
    "single-channel-1024": Workload(
        "one 1024x1024 image, one filter, 'same' padding, kernels 3..31",
        lambda: kernel_sweep((1, 1, 1024, 1024), 1, range(3, 32, 4)),
        "synthetic kernel-size sweep"),
    "c64-56": Workload(
        "C = K = 64 at 56x56, batch 1, 'same' padding, kernels 1..11",
        lambda: kernel_sweep((1, 64, 56, 56), 64, (1, 3, 5, 7, 9, 11)),
        "synthetic kernel-size sweep (ResNet stage-1 width)"),
    "lenet5": Workload(
        "LeNet-5's convolutions at batch 64 (small layers)",
        lambda: layer_cases(NETWORKS["lenet5"], batch=64),
        "LeCun et al. 1998",
        lambda: layer_ops(NETWORKS["lenet5"], batch=64)),
    "unet-572": Workload(
        "U-Net, original: 1 channel 572² -> 388², 'valid' 3x3 convs, "
        "64..1024 channels, batch 1: 3x3 + 1x1 convs, maxpool 2x2, up-conv "
        "2x2/2",
        **_split(lambda: unet(572, batch=1)),
        provenance="Ronneberger et al. 2015 (MICCAI), Fig. 1"),
    "unet-256-b4": Workload(
        "U-Net, 'same'-padded variant: 1 channel 256² tiles, batch 4, "
        "64..1024 channels: 3x3 + 1x1 convs, maxpool, up-conv",
        **_split(lambda: unet(256, batch=4, padding=1)),
        provenance="Ronneberger et al. 2015, padded 3x3 convs as in most "
                   "microscopy re-implementations"),
    "mobilenet-v1": Workload(
        "MobileNet-v1 224², batch 1: depthwise 3x3 (groups = C) + 1x1 "
        "pointwise pairs (and global avgpool; fc omitted)",
        **_split(lambda: _net(mobilenet_v1_layers, 1)),
        provenance="Howard et al. 2017, Table 1"),
    "mobilenet-v2": Workload(
        "MobileNet-v2 224², batch 1: 1x1 expand, depthwise 3x3, 1x1 "
        "project (and global avgpool; fc omitted)",
        **_split(lambda: _net(mobilenet_v2_layers, 1)),
        provenance="Sandler et al. 2018, Table 2"),
    "se-resnet50": Workload(
        "squeeze-and-excitation blocks of SE-ResNet-50, batch 32, r = 16: "
        "two 1x1 convs on 1x1 maps per block (and global avgpool)",
        **_split(lambda: _net(se_layers, 32)),
        provenance="Hu et al. 2018 (SENet), SE-ResNet-50"),
    "jet-images": Workload(
        "calorimeter jet images 25², 33², 64², 1-3 channels, batch "
        "256-1024, 3x3 and 5x5 kernels",
        jet_images,
        "de Oliveira et al. 2016 (25² jet images); Komiske et al. 2017 "
        "(33², 3 channels)"),
    "timeseries-1d": Workload(
        "1-D detector signals 10^4-10^6 samples, 1-3 channels, kernels "
        "3..255, run as 2-D with H = 1 ('valid')",
        timeseries_1d,
        "1-D CNN / matched-filter front ends on detector waveforms; sizes "
        "from issue 11"),
    "psf-astro": Workload(
        "astronomical images 2048² and 4096², 1 channel, batch 1, PSF "
        "kernels 15..127, 'same'",
        psf_astro,
        "PSF convolution / matching of CCD frames (Alard & Lupton 1998); "
        "2k/4k CCD sizes"),
    "deconv-microscopy": Workload(
        "microscopy frames 512²-4096², 1 channel, batch 1, kernels 3..63, "
        "'same'",
        deconv_microscopy,
        "Richardson-Lucy deconvolution (Richardson 1972, Lucy 1974) of "
        "camera frames"),
}


def workload(name):
    """The cases of the named workload (see :data:`WORKLOADS`)."""
    try:
        return WORKLOADS[name].build()
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: "
                         f"{', '.join(sorted(WORKLOADS))}") from None


def _shape_range(cases):
    """'N1-4 C1-1024 28²-572² k1-3' of a list of ConvCases."""
    def span(values, fmt=str):
        lo, hi = min(values), max(values)
        return fmt(lo) if lo == hi else f"{fmt(lo)}-{fmt(hi)}"

    def hw(v):
        h, w = v
        return f"{h}²" if h == w else f"{h}x{w}"
    ns = [c.x_shape[0] for c in cases]
    cs = [c.x_shape[1] for c in cases]
    sizes = sorted({tuple(c.x_shape[2:]) for c in cases},
                   key=lambda s: (s[0] * s[1], s))
    ks = [max(c.w_shape[2:]) for c in cases]
    size = hw(sizes[0]) if len(sizes) == 1 else f"{hw(sizes[0])}-{hw(sizes[-1])}"
    return f"N{span(ns)} C{span(cs)} {size} k{span(ks)}"


def workload_table():
    """Rows (name, conv layers, distinct, other ops, shapes, GFLOP,
    provenance) of every named workload."""
    rows = []
    for name, wl in WORKLOADS.items():
        layers = wl.layers()
        others = wl.other_ops()
        rows.append((name, len(layers), len(distinct_cases(layers)),
                     len(others), _shape_range(layers), wl.flops / 1e9,
                     wl.provenance))
    return rows


# --------------------------------------------------------------------------
# Workloads and networks as problems (convbench.problems), DeepBench
# --------------------------------------------------------------------------

def op_problem(op):
    """The :class:`convbench.problems.Problem` of an :class:`OpCase`.

    Parameters
    ----------
    op : OpCase
        A ``max_pool2d``, ``avg_pool2d``, ``global_avg_pool2d`` or
        ``conv_transpose2d`` layer (``w_shape`` in PyTorch's transposed
        layout ``(C_in, C_out, kH, kW)``).

    Returns
    -------
    Problem
        With the layer's label (spaces as ``_``) and count 1.
    """
    from .problems import problem

    n, c, h, w = op.x_shape
    label = op.label.replace(" ", "_")
    if op.op == "global_avg_pool2d":
        return problem(op.op, n=n, c=c, h=h, w=w, label=label)
    if op.op == "conv_transpose2d":
        return problem(op.op, n=n, c=c, h=h, w=w, k=op.w_shape[1],
                       kernel=tuple(op.kernel), stride=op.stride,
                       padding=op.padding, label=label)
    if op.op in ("max_pool2d", "avg_pool2d"):
        return problem(op.op, n=n, c=c, h=h, w=w, kernel=tuple(op.kernel),
                       stride=op.stride, padding=op.padding, label=label)
    raise ValueError(f"no problem for op {op.op!r} of {op.label!r}")


def _workload(name):
    """The :class:`Workload` called ``name`` (ValueError naming the known
    ones otherwise)."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: "
                         f"{', '.join(sorted(WORKLOADS))}") from None


def workload_problems(name, ops="all"):
    """The distinct problems of a named workload.

    Parameters
    ----------
    name : str
        A key of :data:`WORKLOADS`.
    ops : {"all", "conv2d"}
        ``"all"``: the conv2d layers, then the other layers
        (``other_ops()``: pooling, global average pooling, transposed
        convolutions); ``"conv2d"``: the conv2d layers only.

    Returns
    -------
    list of Problem
        Equal problems merged in first-seen order, ``count`` the number of
        layers that share one (:func:`convbench.problems.distinct_problems`).

    Raises
    ------
    ValueError
        An unknown workload or ``ops`` value.
    """
    from .problems import distinct_problems, from_conv_case

    if ops not in ("all", "conv2d"):
        raise ValueError(f"ops must be 'all' or 'conv2d', got {ops!r}")
    wl = _workload(name)
    found = [from_conv_case(case) for case in wl.build()]
    if ops == "all":
        found += [op_problem(op) for op in wl.other_ops()]
    return distinct_problems(found)


def network_problems(name, batch=1):
    """The distinct problems of a network of :data:`NETWORKS`.

    Convolutions, transposed convolutions and pooling layers, in forward
    order; fully connected and batch-norm layers are skipped.

    Parameters
    ----------
    name : str
        A key of :data:`NETWORKS`.
    batch : int
        Batch size N.

    Returns
    -------
    list of Problem
        Equal problems merged in first-seen order (counts summed).
    """
    from .problems import distinct_problems, from_conv_case

    found = []
    for layer in _network(name):
        if layer.kind == "conv":
            found += [from_conv_case(c) for c in layer_cases([layer], batch)]
        else:
            found += [op_problem(op) for op in layer_ops([layer], batch)]
    return distinct_problems(found)


def fits_conv_case(p):
    """Whether a conv2d Problem can be a :class:`ConvCase`: one stride,
    no dilation, and symmetric padding equal on both axes or a rule
    (``"same"``, ``"valid"``).  Such problems run on the sweep's conv2d
    path (SciPy's multi-channel peers, cropped reference checks,
    time-limit pilots)."""
    if p.op != "conv2d" or p.dilation != (1, 1) or p.stride[0] != p.stride[1]:
        return False
    return isinstance(p.padding, str) or p.padding[0] == p.padding[1]


def problem_case(p, label=None):
    """The :class:`ConvCase` of a conv2d Problem (see :func:`fits_conv_case`),
    labelled ``label`` (default: the problem's).

    Raises
    ------
    ValueError
        The problem does not fit a ConvCase.
    """
    if not fits_conv_case(p):
        raise ValueError(f"not a ConvCase (one stride, one padding, no "
                         f"dilation): {p.descriptor()}")
    padding = p.padding if isinstance(p.padding, str) else p.padding[0]
    return ConvCase(p.label if label is None else label, tuple(p.x_shape),
                    tuple(p.w_shape), p.stride[0], padding, p.groups)


def deepbench_train():
    """DeepBench's training-set convolutions as ConvCases, repeats included.

    Read from the shipped problem file ``deepbench-train.txt`` (see its
    header for the source and the tuple order): each problem ``count``
    times.  Every problem of the file fits a ConvCase; one that did not
    would be left out (and the tests would notice).
    """
    from .problem_files import path
    from .problems import read_problems

    cases = []
    for p in read_problems(path("deepbench-train")):
        if fits_conv_case(p):
            cases += [problem_case(p)] * p.count
    return cases


WORKLOADS["deepbench-train"] = Workload(
    "Baidu DeepBench's training-set convolutions (94, 90 distinct): "
    "spectrogram-like 161x700 .. 10x42 inputs with 5x20 / 5x10 / 5x5 "
    "kernels, image layers 7²-224² with 1x1 / 3x3 / 5x5 / 7x7 kernels; "
    "C 1-2048, batch 4-32",
    deepbench_train,
    "baidu-research/DeepBench code/kernels/conv_problems.h training_set "
    "(commit da81ba78)")

__all__ += ["op_problem", "workload_problems", "network_problems",
            "fits_conv_case", "problem_case", "deepbench_train"]
