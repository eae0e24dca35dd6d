"""The convolution and pooling problems of a PyTorch model.

:func:`collect_problems` runs one forward pass of a ``torch.nn.Module``
on zeros of a given input shape, with forward hooks on its convolution
and pooling modules, and turns each call into a
:class:`convbench.problems.Problem` (what ``convbench sweep
--torch-model`` runs)::

    >>> layers = collect_problems("torchvision.models:resnet50",
    ...                           (1, 3, 224, 224))      # doctest: +SKIP
    >>> print(format_layers(layers))                     # doctest: +SKIP

What is recorded, per call:

=========================  ====================  ==========================
module                     op                    skipped when
=========================  ====================  ==========================
``nn.Conv1d``              ``conv1d``            ``padding_mode != "zeros"``
``nn.Conv2d``              ``conv2d``            ``padding_mode != "zeros"``
``nn.ConvTranspose1d``     ``conv_transpose1d``
``nn.ConvTranspose2d``     ``conv_transpose2d``
``nn.MaxPool2d``           ``max_pool2d``        ``ceil_mode=True``
``nn.AvgPool2d``           ``avg_pool2d``        ``ceil_mode=True``,
                                                 ``count_include_pad=False``,
                                                 ``divisor_override``
``nn.AdaptiveAvgPool2d``   ``global_avg_pool2d`` an output size other
                                                 than 1 x 1
=========================  ====================  ==========================

Other convolution and pooling modules (3-D ones, 1-D pooling, adaptive
max pooling, LP pooling, ...) are listed in :attr:`ModelLayers.skipped`
with the reason, as is a call whose problem :func:`~convbench.problems.problem`
rejects or whose problem would not give the output shape PyTorch gave;
none of them stops the collection.

Only modules are seen: a ``torch.nn.functional.conv2d`` call inside some
module's ``forward`` is not recorded.  The bias of a convolution is
ignored: the harness benchmarks the convolution itself, and a bias add is
a cheap element-wise pass that every implementation does the same way.

torch (and the package of the model, e.g. torchvision) is imported only
when a function here needs it; the rest of convbench runs without it.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass, field, replace

from convbench.problems import ProblemError, distinct_problems, problem

__all__ = ["ModelError", "ModelLayers", "load_callable", "collect_problems",
           "format_layers"]

#: pip names of import names whose package is called differently or that a
#: user is likely to miss; other missing modules get a generic hint.
_INSTALL_HINTS = {
    "torch": "pip install torch",
    "torchvision": "pip install torchvision",
    "torchaudio": "pip install torchaudio",
    "timm": "pip install timm",
    "transformers": "pip install transformers",
}


class ModelError(ValueError):
    """A model that cannot be loaded or run: a malformed spec, a missing
    package or attribute, a callable that does not build an
    ``nn.Module``, a forward pass that fails."""


@dataclass
class ModelLayers:
    """What one forward pass of a model called.

    Attributes
    ----------
    problems : list of Problem
        The distinct problems in first-call order; ``label`` is the
        qualified name of the first module that made the call (e.g.
        ``"layer1.0.conv2"``), ``count`` the number of calls.
    calls : int
        Every hooked call of a convolution or pooling module, collected
        or skipped (``sum(p.count for p in problems)`` plus the skipped
        calls).
    skipped : list of (str, str, str)
        ``(module name, type name, reason)`` of the modules, or calls,
        the harness cannot run, once per distinct entry.
    model : str
        A description of the model and of its input.
    """

    problems: list = field(default_factory=list)
    calls: int = 0
    skipped: list = field(default_factory=list)
    model: str = ""


class _Skip(Exception):
    """A hooked call that becomes no problem; the message is the reason."""


# --------------------------------------------------------------------------
# Imports and specs
# --------------------------------------------------------------------------

def _install_hint(missing):
    """What to install for the missing module ``missing`` (dotted)."""
    top = (missing or "").split(".")[0]
    if top in _INSTALL_HINTS:
        return _INSTALL_HINTS[top]
    return (f"install the package that provides {top!r}, or run from the "
            f"directory that holds it")


def _import_torch():
    """``torch``, or a :class:`ModelError` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise ModelError(f"reading a PyTorch model needs torch, which cannot "
                         f"be imported ({exc}); {_install_hint('torch')}"
                         ) from None
    return torch


def _split_spec(spec):
    """``(module, attribute)`` of ``"MODULE:CALLABLE"``, checked."""
    if not isinstance(spec, str):
        raise ModelError(f"a model spec is a string 'MODULE:CALLABLE', got "
                         f"{spec!r}")
    text = spec.strip()
    if ":" not in text:
        hint = ""
        if "." in text:
            module, _, name = text.rpartition(".")
            hint = f" (did you mean '{module}:{name}'?)"
        raise ModelError(f"model spec {spec!r} has no ':'; write it as "
                         f"'MODULE:CALLABLE', e.g. "
                         f"'torchvision.models:resnet50'{hint}")
    module, _, attribute = text.partition(":")
    module, attribute = module.strip(), attribute.strip()
    for part, what in ((module, "module"), (attribute, "callable")):
        if not part:
            raise ModelError(f"model spec {spec!r} has an empty {what} name; "
                             f"write it as 'MODULE:CALLABLE'")
        if not all(word.isidentifier() for word in part.split(".")):
            raise ModelError(f"model spec {spec!r}: {part!r} is not a dotted "
                             f"Python name; write it as 'MODULE:CALLABLE'")
    return module, attribute


def _import_module(name, spec):
    """Import ``name`` for ``spec``, with a :class:`ModelError` that says
    whether the module itself or one of its imports is missing."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or name
        # The spec's own module (or a package above it) is missing, or
        # something it imports: the fix differs, so the message does.
        if name == missing or name.startswith(missing + "."):
            raise ModelError(f"model spec {spec!r}: no module named "
                             f"{missing!r}; check the spelling, or "
                             f"{_install_hint(missing)}") from None
        raise ModelError(f"model spec {spec!r}: importing {name!r} needs "
                         f"{missing!r}, which is not installed; "
                         f"{_install_hint(missing)}") from None
    except Exception as exc:
        raise ModelError(f"model spec {spec!r}: importing {name!r} failed: "
                         f"{type(exc).__name__}: {exc}") from exc


def load_callable(spec):
    """The object named by ``"MODULE:CALLABLE"``.

    ``CALLABLE`` may be dotted (``"pkg.mod:Class.build"``); the module is
    imported, nothing is called.

    Parameters
    ----------
    spec : str
        E.g. ``"torchvision.models:resnet50"``.

    Returns
    -------
    callable

    Raises
    ------
    ModelError
        Naming the spec: no ``':'`` or an empty part, a module that does
        not exist or whose import fails (saying what to ``pip install``
        when the package is known), an attribute that does not exist, an
        attribute that is not callable.
    """
    module_name, attribute = _split_spec(spec)
    obj = _import_module(module_name, spec)
    walked = module_name
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"model spec {spec!r}: {walked!r} has no "
                             f"attribute {part!r}")
        obj = getattr(obj, part)
        walked += (":" if walked == module_name else ".") + part
    if not callable(obj):
        raise ModelError(f"model spec {spec!r}: {attribute!r} is a "
                         f"{type(obj).__name__}, not a callable")
    return obj


def _build_model(spec_or_module, torch):
    """``(module, description, owned)``: ``owned`` when the model was built
    here, so that it may be changed in place."""
    nn = torch.nn
    if isinstance(spec_or_module, nn.Module):
        return spec_or_module, type(spec_or_module).__name__, False
    if not isinstance(spec_or_module, str):
        raise ModelError(f"a model is an nn.Module or a 'MODULE:CALLABLE' "
                         f"string, got {type(spec_or_module).__name__}")
    spec = spec_or_module
    target = load_callable(spec)
    if isinstance(target, nn.Module):
        # "mymodels:net" may name a module instance rather than a factory.
        return target, f"{spec.strip()} ({type(target).__name__})", False
    try:
        model = target()
    except ModuleNotFoundError as exc:
        raise ModelError(f"model spec {spec!r}: calling it needs "
                         f"{exc.name!r}, which is not installed; "
                         f"{_install_hint(exc.name)}") from None
    except Exception as exc:
        raise ModelError(f"model spec {spec!r}: calling it with no arguments "
                         f"failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"model spec {spec!r}: calling it returned a "
                         f"{type(model).__name__}, not a torch.nn.Module")
    return model, f"{spec.strip()} ({type(model).__name__})", True


# --------------------------------------------------------------------------
# Which modules
# --------------------------------------------------------------------------

def _handled_types(nn):
    """The module types that become problems, most specific first."""
    return (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Conv1d, nn.Conv2d,
            nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _unsupported_types(nn):
    """``(type, reason)`` of conv and pooling modules not in the kernels,
    specific before general (a subclass before its base)."""
    from torch.nn.modules import conv, pooling

    pairs = [
        ("ConvTranspose3d", "3-D transposed convolution: not in kernels"),
        ("Conv3d", "3-D convolution: not in kernels"),
        ("MaxPool1d", "1-D max pooling: not in kernels"),
        ("MaxPool3d", "3-D max pooling: not in kernels"),
        ("AvgPool1d", "1-D average pooling: not in kernels"),
        ("AvgPool3d", "3-D average pooling: not in kernels"),
        ("AdaptiveAvgPool1d", "1-D adaptive average pooling: not in kernels"),
        ("AdaptiveAvgPool3d", "3-D adaptive average pooling: not in kernels"),
        ("FractionalMaxPool2d", "fractional max pooling: not in kernels"),
        ("FractionalMaxPool3d", "fractional max pooling: not in kernels"),
    ]
    found = [(getattr(nn, name), reason) for name, reason in pairs
             if hasattr(nn, name)]
    # The private bases catch the rest of each family (and future members)
    # without listing them; getattr because their names are not API.
    for module, name, reason in (
            (pooling, "_AdaptiveMaxPoolNd", "adaptive max pooling: not in "
                                            "kernels"),
            (pooling, "_LPPoolNd", "power-average (LP) pooling: not in "
                                   "kernels"),
            (pooling, "_MaxUnpoolNd", "max unpooling: not in kernels"),
            (pooling, "_MaxPoolNd", "this max pooling: not in kernels"),
            (pooling, "_AvgPoolNd", "this average pooling: not in kernels"),
            (pooling, "_AdaptiveAvgPoolNd", "this adaptive average pooling: "
                                            "not in kernels"),
            (conv, "_ConvNd", "this convolution: not in kernels")):
        base = getattr(module, name, None)
        if isinstance(base, type):
            found.append((base, reason))
    return found


def _hook_targets(model, nn):
    """``(name, module, reason)`` of every conv and pooling module:
    ``reason`` is None for a handled one, else why it is skipped.

    Only these get hooks: a hook on every module would also touch
    containers and scripted submodules, which need none.
    """
    handled = _handled_types(nn)
    unsupported = _unsupported_types(nn)
    targets = []
    for name, module in model.named_modules():
        if isinstance(module, handled):
            targets.append((name, module, None))
            continue
        for kind, reason in unsupported:
            if isinstance(module, kind):
                targets.append((name, module, reason))
                break
    return targets


# --------------------------------------------------------------------------
# One call -> one problem
# --------------------------------------------------------------------------

def _batched(shape, spatial):
    """``shape`` with the batch axis; PyTorch also takes unbatched
    ``(C, ...)`` input, which is one sample."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == spatial + 1:
        return (1,) + shape
    if len(shape) != spatial + 2:
        raise _Skip(f"input of shape {shape} is not (N, C, "
                    f"{'L' if spatial == 1 else 'H, W'})")
    return shape


def _size_args(x_shape, spatial):
    """``problem`` keywords n, c, h, w of an input shape."""
    if spatial == 1:
        n, c, w = x_shape
        return dict(n=n, c=c, w=w)
    n, c, h, w = x_shape
    return dict(n=n, c=c, h=h, w=w)


def _conv_problem(module, x_shape, op, spatial):
    if module.padding_mode != "zeros":
        raise _Skip(f"padding_mode={module.padding_mode!r}: the kernels pad "
                    f"with zeros only")
    return problem(op, **_size_args(x_shape, spatial), k=module.out_channels,
                   kernel=tuple(module.kernel_size),
                   stride=tuple(module.stride),
                   padding=(module.padding if isinstance(module.padding, str)
                            else tuple(module.padding)),
                   dilation=tuple(module.dilation), groups=module.groups)


def _transposed_problem(module, x_shape, out_shape, op, spatial):
    if module.padding_mode != "zeros":
        raise _Skip(f"padding_mode={module.padding_mode!r}: the kernels pad "
                    f"with zeros only")
    # A call with output_size=... overrides the module's output_padding;
    # the hook cannot see that argument, but the output shape tells it.
    output_padding = []
    for n, out, k, s, p, d in zip(x_shape[2:], out_shape[2:],
                                  module.kernel_size, module.stride,
                                  module.padding, module.dilation):
        output_padding.append(out - ((n - 1) * s - 2 * p + d * (k - 1) + 1))
    return problem(op, **_size_args(x_shape, spatial),
                   k=module.out_channels, kernel=tuple(module.kernel_size),
                   stride=tuple(module.stride), padding=tuple(module.padding),
                   dilation=tuple(module.dilation), groups=module.groups,
                   output_padding=tuple(output_padding))


def _max_pool_problem(module, x_shape):
    if module.ceil_mode:
        raise _Skip("ceil_mode is not in the problem format")
    # return_indices only adds a second output: the pooling is the same.
    return problem("max_pool2d", **_size_args(x_shape, 2),
                   kernel=module.kernel_size,
                   stride=module.stride or module.kernel_size,
                   padding=module.padding, dilation=module.dilation)


def _avg_pool_problem(module, x_shape):
    if module.ceil_mode:
        raise _Skip("ceil_mode is not in the problem format")
    if not module.count_include_pad:
        raise _Skip("count_include_pad=False is not in the problem format "
                    "(the kernels divide by the full window)")
    if module.divisor_override is not None:
        raise _Skip("divisor_override is not in the problem format")
    return problem("avg_pool2d", **_size_args(x_shape, 2),
                   kernel=module.kernel_size,
                   stride=module.stride or module.kernel_size,
                   padding=module.padding)


def _global_pool_problem(module, x_shape):
    size = module.output_size
    if not isinstance(size, (tuple, list)):
        size = (size, size)
    # None keeps that axis's input size.
    size = tuple(x if s is None else s for s, x in zip(size, x_shape[2:]))
    if size != (1, 1):
        raise _Skip(f"adaptive average pooling to {size[0]}x{size[1]}: only "
                    f"1x1 (global average pooling) is in kernels")
    return problem("global_avg_pool2d", **_size_args(x_shape, 2))


def _problem_of_call(module, x_shape, out_shape, nn):
    """The :class:`Problem` of one call of a handled module, with batched
    shapes; raises :class:`_Skip` or ``ProblemError``."""
    if isinstance(module, nn.ConvTranspose1d):
        return _transposed_problem(module, x_shape, out_shape,
                                   "conv_transpose1d", 1)
    if isinstance(module, nn.ConvTranspose2d):
        return _transposed_problem(module, x_shape, out_shape,
                                   "conv_transpose2d", 2)
    if isinstance(module, nn.Conv1d):
        return _conv_problem(module, x_shape, "conv1d", 1)
    if isinstance(module, nn.Conv2d):
        return _conv_problem(module, x_shape, "conv2d", 2)
    if isinstance(module, nn.MaxPool2d):
        return _max_pool_problem(module, x_shape)
    if isinstance(module, nn.AvgPool2d):
        return _avg_pool_problem(module, x_shape)
    return _global_pool_problem(module, x_shape)


def _spatial_dims(module, nn):
    return 1 if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)) else 2


def _first_tensor(value, torch):
    """The tensor of a hook's input or output (pooling with
    ``return_indices`` returns a pair)."""
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    return value if isinstance(value, torch.Tensor) else None


def _label(name, module):
    """A label a problem file can hold: no whitespace, no ``#``."""
    text = name or type(module).__name__
    return "".join("_" if ch.isspace() or ch == "#" else ch for ch in text)


def _record(call, nn):
    """``(problem, None)`` or ``(None, reason)`` of one recorded call."""
    name, module, unsupported, x, out = call
    if unsupported is not None:
        return None, unsupported
    if x is None or out is None:
        return None, "could not see the input or output tensor of the call"
    spatial = _spatial_dims(module, nn)
    try:
        x_shape = _batched(x, spatial)
        out_shape = _batched(out, spatial)
        made = _problem_of_call(module, x_shape, out_shape, nn)
    except (_Skip, ProblemError) as exc:
        return None, str(exc)
    # A problem that would not reproduce the call is worse than none.
    if made.forward_out_shape != out_shape:
        return None, (f"the problem gives output {made.forward_out_shape}, "
                      f"PyTorch gave {out_shape}")
    return replace(made, label=_label(name, module)), None


# --------------------------------------------------------------------------
# The forward pass
# --------------------------------------------------------------------------

def _check_input_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ModelError(f"input_shape must be a sequence of sizes, got "
                         f"{input_shape!r}") from None
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool)
                            and s >= 1 for s in shape):
        raise ModelError(f"input_shape must be positive integers, e.g. "
                         f"(1, 3, 224, 224), got {input_shape!r}")
    return shape


def _torch_dtype(dtype, torch):
    name = getattr(dtype, "name", None) or str(dtype)
    name = name.replace("torch.", "")
    if name not in ("float32", "float64"):
        raise ModelError(f"dtype must be float32 or float64, got {dtype!r}")
    return getattr(torch, name)


def _prepare(model, owned, dtype, torch):
    """The model in ``dtype``: a cast of a caller's model works on a copy,
    so that the caller's weights keep their dtype."""
    tensors = list(model.parameters()) + list(model.buffers())
    floats = [t for t in tensors if t.is_floating_point()]
    if any(t.dtype != dtype for t in floats):
        if not owned:
            model = copy.deepcopy(model)
        model = model.to(dtype)
    device = tensors[0].device if tensors else torch.device("cpu")
    return model, device


def _run_hooked(model, x, torch, description):
    """Run ``model(x)`` and return the ``(name, module, reason, input
    shape, output shape)`` of each call of a conv or pooling module
    (``reason``: why it is skipped, None for a handled module)."""
    nn = torch.nn
    calls = []
    handles = []

    def hook_for(name, reason):
        def hook(module, args, kwargs, output):
            inp = _first_tensor(args, torch) if args else None
            if inp is None:
                inp = _first_tensor(kwargs.get("input"), torch)
            out = _first_tensor(output, torch)
            calls.append((name, module, reason,
                          None if inp is None else tuple(inp.shape),
                          None if out is None else tuple(out.shape)))
        return hook

    training = {module: module.training for module in model.modules()}
    try:
        for name, module, reason in _hook_targets(model, nn):
            handles.append(module.register_forward_hook(
                hook_for(name, reason), with_kwargs=True))
        model.eval()
        with torch.no_grad():
            model(x)
    except Exception as exc:
        raise ModelError(f"the forward pass of {description} on zeros of "
                         f"shape {tuple(x.shape)} failed: "
                         f"{type(exc).__name__}: {exc}") from exc
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in training.items():
            module.training = mode
    return calls


def collect_problems(spec_or_module, input_shape, *, dtype="float32"):
    """The convolution and pooling problems of one forward pass of a model.

    The model runs once, in eval mode and under ``torch.no_grad()``, on
    ``torch.zeros(input_shape)``; each call of a handled module (see the
    module docstring) becomes a problem built from the input shape it got
    and its arguments; the bias of a convolution is ignored (the harness
    benchmarks the convolution).  The hooks are removed, and each
    module's training flag restored, afterwards, also on error.

    Parameters
    ----------
    spec_or_module : str or torch.nn.Module
        ``"MODULE:CALLABLE"`` (see :func:`load_callable`; the callable is
        called with no arguments and must return an ``nn.Module``, or the
        name is an ``nn.Module`` itself), or a module.
    input_shape : sequence of int
        E.g. ``(1, 3, 224, 224)``.
    dtype : {"float32", "float64"}
        Of the input; a model in another dtype is cast (a module passed
        in is copied first, never changed).

    Returns
    -------
    ModelLayers

    Raises
    ------
    ModelError
        torch or the model's package cannot be imported (saying what to
        install), the spec is malformed or names nothing, the callable
        does not return an ``nn.Module``, the input shape or dtype is
        invalid, or the forward pass fails.
    """
    torch = _import_torch()
    shape = _check_input_shape(input_shape)
    torch_dtype = _torch_dtype(dtype, torch)
    model, description, owned = _build_model(spec_or_module, torch)
    model, device = _prepare(model, owned, torch_dtype, torch)
    description += f", input {shape} {torch_dtype}".replace("torch.", "")
    x = torch.zeros(shape, dtype=torch_dtype, device=device)
    calls = _run_hooked(model, x, torch, description)

    made, skipped = [], []
    for call in calls:
        found, reason = _record(call, torch.nn)
        if found is not None:
            made.append(found)
            continue
        entry = (_label(call[0], call[1]), type(call[1]).__name__, reason)
        if entry not in skipped:
            skipped.append(entry)
    return ModelLayers(problems=distinct_problems(made), calls=len(calls),
                       skipped=skipped, model=description)


# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------

def format_layers(layers):
    """A short table of a :class:`ModelLayers`: one line per distinct
    problem (count, label, descriptor), the skipped modules with their
    reasons, and a summary line ``"N calls, M distinct problems, S
    skipped"``."""
    lines = [f"model: {layers.model}"] if layers.model else []
    width = max([len(p.label) for p in layers.problems] + [5])
    if layers.problems:
        lines.append(f"{'count':>5}  {'label':<{width}}  problem")
    for p in layers.problems:
        lines.append(f"{p.count:>5}  {p.label:<{width}}  "
                     f"{p.descriptor(meta=False)}")
    if layers.skipped:
        lines.append("skipped:")
    for name, type_name, reason in layers.skipped:
        lines.append(f"  {name} ({type_name}): {reason}")
    lines.append(f"{layers.calls} calls, {len(layers.problems)} distinct "
                 f"problems, {len(layers.skipped)} skipped")
    return "\n".join(lines)
