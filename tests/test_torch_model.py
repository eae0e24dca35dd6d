"""Tests of :mod:`convbench.torch_model`: a model's problems from one
forward pass.

Every collected problem is checked against what PyTorch did: its input
shape against the input the module got, its ``forward_out_shape``
against the output the module gave (recorded by the test's own hooks),
and against ``torch.nn.functional`` run on zeros of the problem's shapes
with the problem's parameters.
"""

from __future__ import annotations

import sys
import types

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from convbench.problems import Problem, problem  # noqa: E402
from convbench.torch_model import (ModelError, ModelLayers,  # noqa: E402
                                   collect_problems, format_layers,
                                   load_callable)

HANDLED = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d,
           nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

class Block(nn.Module):
    """Two identical 8 -> 8 3x3 convolutions: one problem, count 2."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + x)


class Tiny(nn.Module):
    """A ResNet-like stem, one residual block, an upsampling and a head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1,
                                            bias=False),
                                  nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(Block())
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.head = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.head(self.up(self.layer1(self.pool(self.stem(x)))))


def make_tiny():
    return Tiny()


class WithConv3d(nn.Module):
    """A Conv3d (skipped) before a Conv2d (still collected)."""

    def __init__(self):
        super().__init__()
        self.conv3d = nn.Conv3d(2, 2, 3, padding=1)
        self.conv2d = nn.Conv2d(8, 4, 1)

    def forward(self, x):                      # x: (N, 2, 4, H, W)
        y = self.conv3d(x)
        return self.conv2d(y.reshape(y.shape[0], -1, *y.shape[3:]))


class Signal(nn.Module):
    """1-D convolutions: strided, 'same' with dilation, transposed."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv1d(4, 6, 5, stride=2, padding=2)
        self.same = nn.Conv1d(6, 6, 4, padding="same", dilation=2, groups=3)
        self.up = nn.ConvTranspose1d(6, 2, 3, stride=2, padding=1,
                                     output_padding=1)

    def forward(self, x):
        return self.up(self.same(self.down(x)))


class Shared(nn.Module):
    """One module called three times: three calls, one problem."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(self.conv(x)))


class CeilAvg(nn.Module):
    """An AvgPool2d with ceil_mode=True (skipped) between convolutions."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.pool = nn.AvgPool2d(2, ceil_mode=True)
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv2(self.pool(self.conv1(x)))


class Failing(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        self.conv(x)
        raise RuntimeError("boom in forward")


# --------------------------------------------------------------------------
# Checking problems against PyTorch
# --------------------------------------------------------------------------

def _record_calls(model, input_shape):
    """``(module name, module, input shape, output shape)`` of every call of
    a handled module, from the test's own hooks (batched shapes)."""
    calls = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, HANDLED):
            def hook(mod, args, out, name=name):
                out = out[0] if isinstance(out, tuple) else out
                calls.append((name, mod, tuple(args[0].shape),
                              tuple(out.shape)))
            handles.append(module.register_forward_hook(hook))
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return calls


def _functional_out_shape(p: Problem):
    """The output shape of ``p`` run by torch.nn.functional on zeros."""
    x = torch.zeros(p.x_shape)
    if p.one_d:
        stride, dilation = p.stride[1], p.dilation[1]
        padding = p.padding if isinstance(p.padding, str) else p.padding[1]
        w = torch.zeros(p.w_shape)
        if p.op == "conv1d":
            return tuple(F.conv1d(x, w, None, stride, padding, dilation,
                                  p.groups).shape)
        return tuple(F.conv_transpose1d(x, w, None, stride, padding,
                                        p.output_padding[1], p.groups,
                                        dilation).shape)
    if p.op == "conv2d":
        return tuple(F.conv2d(x, torch.zeros(p.w_shape), None, p.stride,
                              p.padding, p.dilation, p.groups).shape)
    if p.op == "conv_transpose2d":
        return tuple(F.conv_transpose2d(x, torch.zeros(p.w_shape), None,
                                        p.stride, p.padding,
                                        p.output_padding, p.groups,
                                        p.dilation).shape)
    if p.op == "max_pool2d":
        return tuple(F.max_pool2d(x, p.kernel, p.stride, p.padding,
                                  p.dilation).shape)
    if p.op == "avg_pool2d":
        return tuple(F.avg_pool2d(x, p.kernel, p.stride, p.padding).shape)
    assert p.op == "global_avg_pool2d"
    return tuple(F.adaptive_avg_pool2d(x, 1).shape)


def _check_against_torch(layers, model, input_shape):
    """Each collected problem matches PyTorch, and every call of a module
    that was not skipped is one of the problems' calls."""
    for p in layers.problems:
        assert p.forward_out_shape == _functional_out_shape(p), p
    skipped = {name for name, _, _ in layers.skipped}
    seen = {}
    for name, module, x_shape, out_shape in _record_calls(model, input_shape):
        if name in skipped:
            continue
        matches = [p for p in layers.problems
                   if p.x_shape == x_shape and p.forward_out_shape == out_shape
                   and _op_matches(p.op, module)]
        assert len(matches) == 1, (name, x_shape, out_shape)
        seen[matches[0]] = seen.get(matches[0], 0) + 1
    assert seen == {p: p.count for p in layers.problems}


def _op_matches(op, module):
    types_of = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d,
                "conv_transpose1d": nn.ConvTranspose1d,
                "conv_transpose2d": nn.ConvTranspose2d,
                "max_pool2d": nn.MaxPool2d, "avg_pool2d": nn.AvgPool2d,
                "global_avg_pool2d": nn.AdaptiveAvgPool2d}
    return type(module) is types_of[op]


def _all_hooks_removed(model):
    return all(not m._forward_hooks for m in model.modules())


# --------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------

def test_tiny_model_problems_labels_and_counts():
    model = Tiny()
    layers = collect_problems(model, (2, 3, 32, 32))
    assert isinstance(layers, ModelLayers)
    expected = [
        (problem("conv2d", n=2, c=3, h=32, w=32, k=8, kernel=3, stride=2,
                 padding=1), "stem.0", 1),
        (problem("max_pool2d", n=2, c=8, h=16, w=16, kernel=3, stride=2,
                 padding=1), "pool", 1),
        (problem("conv2d", n=2, c=8, h=8, w=8, k=8, kernel=3, padding=1),
         "layer1.0.conv1", 2),
        (problem("conv_transpose2d", n=2, c=8, h=8, w=8, k=4, kernel=2,
                 stride=2), "up", 1),
        (problem("global_avg_pool2d", n=2, c=4, h=16, w=16), "head", 1),
    ]
    assert [(p, p.label, p.count) for p in layers.problems] == expected
    assert layers.calls == 6
    assert layers.skipped == []
    assert "Tiny" in layers.model and "(2, 3, 32, 32)" in layers.model
    _check_against_torch(layers, model, (2, 3, 32, 32))
    assert _all_hooks_removed(model)


def test_module_called_several_times_counts_each_call():
    model = Shared()
    layers = collect_problems(model, (1, 4, 6, 6))
    assert layers.calls == 3
    [p] = layers.problems
    assert (p.count, p.label, p.op) == (3, "conv", "conv2d")
    _check_against_torch(layers, model, (1, 4, 6, 6))


def test_conv1d_model():
    model = Signal()
    layers = collect_problems(model, (3, 4, 50))
    down, same, up = layers.problems
    assert down == problem("conv1d", n=3, c=4, w=50, k=6, kernel=5, stride=2,
                           padding=2)
    assert down.x_shape == (3, 4, 50) and down.forward_out_shape == (3, 6, 25)
    assert same.padding == "same" and same.dilation == (1, 2)
    assert same.groups == 3 and "psame" in same.descriptor()
    assert up.op == "conv_transpose1d" and up.output_padding == (0, 1)
    assert up.forward_out_shape == (3, 2, 50)
    _check_against_torch(layers, model, (3, 4, 50))


def test_same_padding_conv2d_even_kernel():
    model = nn.Sequential(nn.Conv2d(2, 3, 4, padding="same", dilation=2))
    layers = collect_problems(model, (1, 2, 9, 7))
    [p] = layers.problems
    assert p.padding == "same" and p.label == "0"
    assert p.forward_out_shape == (1, 3, 9, 7)
    _check_against_torch(layers, model, (1, 2, 9, 7))


def test_grouped_dilated_rectangular_conv2d():
    model = nn.Sequential(nn.Conv2d(6, 9, (3, 5), stride=(2, 1),
                                    padding=(1, 0), dilation=(1, 2),
                                    groups=3),
                          nn.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 0)))
    layers = collect_problems(model, (2, 6, 11, 13))
    conv, pool = layers.problems
    assert (conv.kernel, conv.stride, conv.padding, conv.dilation,
            conv.groups) == ((3, 5), (2, 1), (1, 0), (1, 2), 3)
    assert pool.op == "avg_pool2d" and pool.kernel == (2, 3)
    _check_against_torch(layers, model, (2, 6, 11, 13))


def test_transposed_call_with_output_size_uses_the_real_output():
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1)

        def forward(self, x):
            return self.up(x, output_size=(16, 16))

    layers = collect_problems(Up(), (1, 4, 8, 8))
    [p] = layers.problems
    # Without output_size the module gives 15 x 15: output_padding 1.
    assert p.output_padding == (1, 1)
    assert p.forward_out_shape == (1, 4, 16, 16)


def test_unbatched_input_is_one_sample():
    layers = collect_problems(nn.Conv2d(3, 5, 3), (3, 8, 8))
    [p] = layers.problems
    assert p.x_shape == (1, 3, 8, 8) and p.forward_out_shape == (1, 5, 6, 6)
    assert p.label == "Conv2d"      # the model itself has no name


def test_float64_casts_a_copy_and_restores_modes():
    model = Tiny()
    model.train()
    before = model.stem[1].running_mean.clone()
    layers = collect_problems(model, (1, 3, 16, 16), dtype="float64")
    assert len(layers.problems) == 5
    assert "float64" in layers.model
    assert model.stem[0].weight.dtype == torch.float32
    assert all(m.training for m in model.modules())
    assert torch.equal(model.stem[1].running_mean, before)


# --------------------------------------------------------------------------
# Skipped modules
# --------------------------------------------------------------------------

def test_conv3d_is_skipped_and_collection_goes_on():
    model = WithConv3d()
    layers = collect_problems(model, (1, 2, 4, 5, 5))
    assert layers.skipped == [("conv3d", "Conv3d",
                               "3-D convolution: not in kernels")]
    [p] = layers.problems
    assert p == problem("conv2d", n=1, c=8, h=5, w=5, k=4, kernel=1)
    assert layers.calls == 2
    assert _all_hooks_removed(model)


def test_avg_pool_ceil_mode_is_skipped():
    model = CeilAvg()
    layers = collect_problems(model, (1, 3, 10, 10))
    assert layers.skipped == [("pool", "AvgPool2d",
                               "ceil_mode is not in the problem format")]
    assert [p.label for p in layers.problems] == ["conv1", "conv2"]
    assert layers.calls == 3
    _check_against_torch(layers, model, (1, 3, 10, 10))


@pytest.mark.parametrize("module, shape, reason", [
    (nn.MaxPool2d(2, ceil_mode=True), (1, 2, 7, 7), "ceil_mode"),
    (nn.AvgPool2d(3, padding=1, count_include_pad=False), (1, 2, 6, 6),
     "count_include_pad=False"),
    (nn.AvgPool2d(2, divisor_override=3), (1, 2, 6, 6), "divisor_override"),
    (nn.AdaptiveAvgPool2d((2, 3)), (1, 2, 6, 6), "2x3"),
    (nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), (1, 2, 6, 6),
     "padding_mode='reflect'"),
    (nn.Conv1d(2, 2, 3, padding=1, padding_mode="circular"), (1, 2, 6),
     "padding_mode='circular'"),
    (nn.MaxPool1d(2), (1, 2, 6), "1-D max pooling"),
    (nn.AvgPool1d(2), (1, 2, 6), "1-D average pooling"),
    (nn.MaxPool3d(2), (1, 2, 4, 4, 4), "3-D max pooling"),
    (nn.AdaptiveMaxPool2d(1), (1, 2, 6, 6), "adaptive max pooling"),
    (nn.LPPool2d(2, 2), (1, 2, 6, 6), "(LP) pooling"),
    (nn.ConvTranspose3d(2, 2, 2), (1, 2, 3, 3, 3),
     "3-D transposed convolution"),
])
def test_unsupported_modules_are_skipped_with_a_reason(module, shape, reason):
    model = nn.Sequential(module)
    layers = collect_problems(model, shape)
    [(name, type_name, text)] = layers.skipped
    assert (name, type_name) == ("0", type(module).__name__)
    assert reason in text
    assert layers.problems == [] and layers.calls == 1
    assert _all_hooks_removed(model)


def test_adaptive_pool_to_one_by_none_is_global_on_height_one():
    layers = collect_problems(nn.Sequential(nn.AdaptiveAvgPool2d((1, None))),
                              (1, 2, 5, 1))
    assert [p.op for p in layers.problems] == ["global_avg_pool2d"]


def test_a_rejected_problem_is_skipped_with_the_error_text():
    class EmptyBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.empty = nn.Conv2d(3, 3, 1)
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            self.empty(x[:0])        # PyTorch runs an empty batch
            return self.conv(x)

    layers = collect_problems(EmptyBatch(), (2, 3, 4, 4))
    [(name, type_name, reason)] = layers.skipped
    assert (name, type_name) == ("empty", "Conv2d")
    assert "field 'n'" in reason and ">= 1" in reason
    assert [p.label for p in layers.problems] == ["conv"]


# --------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------

def test_hooks_are_removed_and_the_users_hooks_kept():
    model = Tiny()
    seen = []
    model.stem[0].register_forward_hook(lambda *args: seen.append(1))
    collect_problems(model, (1, 3, 16, 16))
    assert seen == [1]
    assert len(model.stem[0]._forward_hooks) == 1
    assert all(not m._forward_hooks for m in model.modules()
               if m is not model.stem[0])


def test_hooks_are_removed_when_the_forward_pass_fails():
    model = Failing()
    model.train()
    with pytest.raises(ModelError, match="forward pass of Failing.*boom"):
        collect_problems(model, (1, 3, 4, 4))
    assert _all_hooks_removed(model)
    assert model.training


def test_wrong_input_shape_is_a_model_error():
    with pytest.raises(ModelError, match=r"forward pass.*\(1, 5, 8, 8\)"):
        collect_problems(Tiny(), (1, 5, 8, 8))


# --------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------

@pytest.fixture
def fake_models(monkeypatch):
    """A module ``convbench_fake_models`` importable by spec."""
    module = types.ModuleType("convbench_fake_models")
    module.make_tiny = make_tiny
    module.net = Shared()
    module.make_list = lambda: [1, 2]
    module.not_callable = 3

    def broken():
        raise RuntimeError("no weights here")

    module.broken = broken
    module.Factory = types.SimpleNamespace(build=make_tiny)
    monkeypatch.setitem(sys.modules, "convbench_fake_models", module)
    return module


def test_spec_string_builds_the_model(fake_models):
    assert load_callable("convbench_fake_models:make_tiny") is make_tiny
    layers = collect_problems(" convbench_fake_models:make_tiny ",
                              (2, 3, 32, 32))
    assert [p.label for p in layers.problems] == [
        "stem.0", "pool", "layer1.0.conv1", "up", "head"]
    assert layers.model.startswith("convbench_fake_models:make_tiny (Tiny)")


def test_spec_with_dotted_attribute_and_module_instance(fake_models):
    assert load_callable("convbench_fake_models:Factory.build") is make_tiny
    layers = collect_problems("convbench_fake_models:net", (1, 4, 5, 5))
    assert layers.problems[0].count == 3
    assert _all_hooks_removed(fake_models.net)


@pytest.mark.parametrize("spec, message", [
    ("", "no ':'"),
    ("nocolon", "no ':'"),
    ("torchvision.models.resnet50", "did you mean 'torchvision.models:"
                                    "resnet50'"),
    ("collections:", "empty callable name"),
    (":OrderedDict", "empty module name"),
    ("collections:Ordered:Dict", "not a dotted Python name"),
    ("collec tions:OrderedDict", "not a dotted Python name"),
])
def test_malformed_specs(spec, message):
    with pytest.raises(ModelError, match=message) as info:
        load_callable(spec)
    assert repr(spec) in str(info.value)


def test_non_string_spec():
    with pytest.raises(ModelError, match="MODULE:CALLABLE"):
        load_callable(42)
    with pytest.raises(ModelError, match="nn.Module or a 'MODULE:CALLABLE'"):
        collect_problems(42, (1, 3, 8, 8))


def test_missing_module():
    with pytest.raises(ModelError, match="no module named "
                       "'no_such_module_xyz'") as info:
        collect_problems("no_such_module_xyz:f", (1, 3, 8, 8))
    assert "'no_such_module_xyz:f'" in str(info.value)


def test_missing_submodule_of_a_package():
    with pytest.raises(ModelError, match="no module named 'convbench.nope'"):
        load_callable("convbench.nope:f")


def test_missing_attribute():
    with pytest.raises(ModelError, match="'collections' has no attribute "
                       "'no_such_attr'") as info:
        load_callable("collections:no_such_attr")
    assert "'collections:no_such_attr'" in str(info.value)


def test_not_callable(fake_models):
    with pytest.raises(ModelError, match="is a int, not a callable"):
        load_callable("convbench_fake_models:not_callable")


def test_callable_returning_a_non_module(fake_models):
    with pytest.raises(ModelError, match="'collections:OrderedDict'.*"
                       "returned a OrderedDict, not a torch.nn.Module"):
        collect_problems("collections:OrderedDict", (1, 3, 8, 8))
    with pytest.raises(ModelError, match="returned a list"):
        collect_problems("convbench_fake_models:make_list", (1, 3, 8, 8))


def test_callable_that_raises(fake_models):
    with pytest.raises(ModelError, match="calling it with no arguments "
                       "failed: RuntimeError: no weights here"):
        collect_problems("convbench_fake_models:broken", (1, 3, 8, 8))


def test_missing_torchvision_says_what_to_install(monkeypatch):
    # None in sys.modules makes the import fail whether or not it is there.
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.delitem(sys.modules, "torchvision.models", raising=False)
    with pytest.raises(ModelError, match="pip install torchvision") as info:
        collect_problems("torchvision.models:resnet50", (1, 3, 224, 224))
    assert "'torchvision.models:resnet50'" in str(info.value)


def test_module_whose_import_needs_a_missing_package(monkeypatch, tmp_path):
    (tmp_path / "convbench_needs_tv.py").write_text(
        "import torchvision\n\ndef build():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.delitem(sys.modules, "convbench_needs_tv", raising=False)
    with pytest.raises(ModelError, match="importing 'convbench_needs_tv' "
                       "needs 'torchvision'.*pip install torchvision"):
        load_callable("convbench_needs_tv:build")


def test_missing_torch_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ModelError, match="pip install torch"):
        collect_problems("collections:OrderedDict", (1, 3, 8, 8))


@pytest.mark.parametrize("shape", [(), (1, 0, 3), (1, -2), "abc", 5,
                                   (1, 2.0, 3)])
def test_bad_input_shape(shape):
    with pytest.raises(ModelError, match="input_shape"):
        collect_problems(nn.Conv2d(1, 1, 1), shape)


def test_bad_dtype():
    with pytest.raises(ModelError, match="float32 or float64"):
        collect_problems(nn.Conv2d(1, 1, 1), (1, 1, 4, 4), dtype="int32")


# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------

def test_format_layers():
    layers = collect_problems(WithConv3d(), (1, 2, 4, 5, 5))
    text = format_layers(layers)
    lines = text.splitlines()
    assert lines[0].startswith("model: WithConv3d")
    [p] = layers.problems
    assert any(line.split()[:2] == ["1", p.label] and p.descriptor(meta=False) in line
               for line in lines)
    assert "conv3d (Conv3d): 3-D convolution: not in kernels" in text
    assert lines[-1] == "2 calls, 1 distinct problems, 1 skipped"


def test_format_layers_counts():
    text = format_layers(collect_problems(Tiny(), (1, 3, 16, 16)))
    line = next(x for x in text.splitlines() if "layer1.0.conv1" in x)
    assert line.split()[0] == "2"
    assert text.splitlines()[-1] == "6 calls, 5 distinct problems, 0 skipped"
