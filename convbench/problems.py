"""Problems of every op, and the problem-file format.

A :class:`Problem` is one call of one ``kernels`` op on one set of
shapes: what ``convbench sweep --op``, ``--problems FILE``,
``--torch-model`` and ``convbench check`` run.  Its compact descriptor,
modelled on oneDNN benchdnn's, is one line a user can write by hand::

    conv2d n4 c64 h56 w56 k64 r3 s1 p1 d1 g1 name=layer1.0.conv2
    max_pool2d n1 c64 h112 w112 r3 s2 p1
    conv1d n32 c3 w10000 k16 r15 pvalid
    conv_transpose2d n1 c512 h28 w28 k256 r2 s2
    global_avg_pool2d n1 c2048 h7 w7 count=1

The first word is the op (default ``conv2d`` when the line starts with a
field).  Fields are a letter and a value, in any order:

====  =======================================================  =========
key   meaning                                                  default
====  =======================================================  =========
n     batch                                                    1
c     input channels                                           required
h, w  input height and width (1-D ops: ``w`` or ``l``, h = 1)  h 1-D: 1
k     output channels (convolutions)                           required
r     kernel / window size, ``3`` or ``3x5`` (kH x kW)         required
s     stride, ``2`` or ``2x1``                                 conv 1,
                                                               pool r
p     padding per side, ``1``, ``1x0``, ``same`` or ``valid``  0
d     dilation                                                 1
g     groups                                                   1
o     output padding (transposed convolutions)                 0
====  =======================================================  =========

plus ``name=LABEL`` (no spaces) and ``count=N`` (how many layers of a
network share the problem).  ``#`` starts a comment; blank lines are
skipped.  ``conv2d_backward_data`` and ``conv2d_backward_weights`` take
the fields of the forward ``conv2d`` problem; ``max_pool2d_backward`` and
``avg_pool2d_backward`` those of the forward pooling; a transposed
convolution's ``c`` is its input channels and ``k`` its output channels
(weight ``(c, k / g, kH, kW)``, as PyTorch's).

:func:`read_problems` names the file, line and field of any mistake
(:class:`ProblemError`); :meth:`Problem.descriptor` writes a problem back
in this format (``parse_problem(p.descriptor()) == p``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from kernels.geometry import (conv_output_size, conv_transpose_output_size,
                              pool_output_size, same_padding)

__all__ = ["OPS", "CONV_OPS", "POOL_OPS", "ONE_D_OPS", "Problem",
           "ProblemError", "problem", "parse_problem", "read_problems",
           "format_problems", "distinct_problems", "from_conv_case",
           "DIRECTIONS", "with_directions", "as_op", "select"]

#: Every op the harness runs, in the order of ``convbench sweep --op``.
OPS = ("conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d",
       "conv2d_backward_data", "conv2d_backward_weights", "max_pool2d",
       "avg_pool2d", "global_avg_pool2d", "max_pool2d_backward",
       "avg_pool2d_backward")
#: Ops with filters (``k`` output channels, ``g`` groups, an ``algorithm=``).
CONV_OPS = ("conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d",
            "conv2d_backward_data", "conv2d_backward_weights")
TRANSPOSED_OPS = ("conv_transpose1d", "conv_transpose2d")
POOL_OPS = ("max_pool2d", "avg_pool2d", "global_avg_pool2d",
            "max_pool2d_backward", "avg_pool2d_backward")
ONE_D_OPS = ("conv1d", "conv_transpose1d")

_PAIR_FIELDS = {"r": "kernel", "s": "stride", "p": "padding", "d": "dilation",
                "o": "output_padding"}
_INT_FIELDS = {"n": "n", "c": "c", "h": "h", "w": "w", "l": "w", "k": "k",
               "g": "groups"}
_FIELD_NAMES = {"n": "batch", "c": "input channels", "h": "height",
                "w": "width", "l": "length", "k": "output channels",
                "r": "kernel size", "s": "stride", "p": "padding",
                "d": "dilation", "g": "groups", "o": "output padding",
                "name": "name", "count": "count"}
#: Which fields each kind of op accepts (besides name and count).
_ACCEPTS = {
    "conv": set("nchwkrspdg"), "transposed": set("nchwkrspdgo"),
    "pool": set("nchwrspd"), "avg": set("nchwrsp"), "global": set("nchw"),
}


def _kind(op):
    if op in TRANSPOSED_OPS:
        return "transposed"
    if op in CONV_OPS:
        return "conv"
    if op == "global_avg_pool2d":
        return "global"
    return "avg" if op.startswith("avg") else "pool"


class ProblemError(ValueError):
    """A problem descriptor that cannot be read: which field, and why.

    ``source`` names the file and line (``"layers.txt:3"``) when the
    descriptor came from a file.
    """

    def __init__(self, message, field=None, source=None):
        self.field = field
        self.source = source
        self.message = message
        where = f"{source}: " if source else ""
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}{what}{message}")


@dataclass(frozen=True)
class Problem:
    """One op on one set of shapes (build with :func:`problem`).

    Pairs are ``(height, width)``; a 1-D op has ``h == 1``, ``kernel[0]
    == stride[0] == dilation[0] == 1`` and ``padding[0] == 0``.
    ``padding`` is a pair of per-side paddings, or ``"same"`` /
    ``"valid"`` (convolutions).  ``k`` is None for pooling.
    """

    op: str
    n: int
    c: int
    h: int
    w: int
    k: int | None
    kernel: tuple
    stride: tuple
    padding: object
    dilation: tuple = (1, 1)
    groups: int = 1
    output_padding: tuple = (0, 0)
    label: str = field(default="", compare=False)
    count: int = field(default=1, compare=False)

    # ---------------------------------------------------------------- shapes
    @property
    def one_d(self):
        return self.op in ONE_D_OPS

    @property
    def x_shape(self):
        """Shape of the op's first array input (the forward input; for
        the backward ops, the forward input ``x``)."""
        if self.one_d:
            return (self.n, self.c, self.w)
        return (self.n, self.c, self.h, self.w)

    @property
    def w_shape(self):
        """Filter shape, PyTorch's layout; None for pooling."""
        if self.k is None:
            return None
        kh, kw = self.kernel
        if self.op in TRANSPOSED_OPS:
            shape = (self.c, self.k // self.groups, kh, kw)
        else:
            shape = (self.k, self.c // self.groups, kh, kw)
        return shape[:2] + (kw,) if self.one_d else shape

    def pads(self):
        """Per-side zero padding ``((top, bottom), (left, right))``."""
        if self.padding == "valid":
            return ((0, 0), (0, 0))
        if self.padding == "same":
            return tuple(same_padding(k, d) for k, d in zip(self.kernel,
                                                             self.dilation))
        return tuple((p, p) for p in self.padding)

    @property
    def forward_out_hw(self):
        """Spatial size of the forward op's output."""
        kind = _kind(self.op)
        if kind == "global":
            return (1, 1)
        size = []
        for n, k, s, pads, d, op in zip((self.h, self.w), self.kernel,
                                        self.stride, self.pads(),
                                        self.dilation, self.output_padding):
            if kind == "transposed":
                size.append(conv_transpose_output_size(n, k, s, pads, op, d))
            elif kind == "conv":
                size.append(conv_output_size(n, k, s, pads, d))
            else:
                size.append(pool_output_size(n, k, s, pads[0], d))
        return tuple(size)

    @property
    def forward_out_shape(self):
        """(N, C_out, Ho, Wo) of the forward op (1-D: (N, C_out, Lo))."""
        channels = self.c if self.k is None else self.k
        ho, wo = self.forward_out_hw
        if self.one_d:
            return (self.n, channels, wo)
        return (self.n, channels, ho, wo)

    # --------------------------------------------------------------- amounts
    @property
    def macs(self):
        """Multiply-adds of the direct computation (convolutions: of the
        forward convolution; a transposed one: of the convolution it is
        the adjoint of; the backward directions: as many as forward)."""
        if self.k is None:
            return 0
        kh, kw = self.kernel
        if self.op in TRANSPOSED_OPS:
            return (self.n * self.c * (self.k // self.groups) * kh * kw
                    * self.h * self.w)
        ho, wo = self.forward_out_hw
        return self.n * self.k * (self.c // self.groups) * kh * kw * ho * wo

    @property
    def flops(self):
        return 2.0 * self.macs

    def bytes_moved(self, itemsize):
        """Bytes a pooling op must read and write at least (each input and
        output element once; backward: ``grad_out`` and ``x`` read,
        ``grad_x`` written)."""
        x = self.n * self.c * self.h * self.w
        ho, wo = self.forward_out_hw
        y = self.n * self.c * ho * wo
        if self.op.endswith("_backward"):
            return itemsize * (y + 2 * x)
        return itemsize * (x + y)

    # ------------------------------------------------------------ descriptor
    def descriptor(self, meta=True):
        """The problem as one line of a problem file (``meta``: with its
        ``name=`` and ``count=``)."""
        kind = _kind(self.op)
        parts = [self.op, f"n{self.n}", f"c{self.c}"]
        if not self.one_d:
            parts.append(f"h{self.h}")
        parts.append(f"w{self.w}")
        if self.k is not None:
            parts.append(f"k{self.k}")
        if kind != "global":
            parts.append("r" + _pair_text(self.kernel, self.one_d))
            parts.append("s" + _pair_text(self.stride, self.one_d))
            parts.append("p" + (self.padding if isinstance(self.padding, str)
                                else _pair_text(self.padding, self.one_d)))
        if kind in ("conv", "transposed", "pool"):
            parts.append("d" + _pair_text(self.dilation, self.one_d))
        if self.k is not None:
            parts.append(f"g{self.groups}")
        if kind == "transposed":
            parts.append("o" + _pair_text(self.output_padding, self.one_d))
        if meta and self.label:
            parts.append(f"name={self.label}")
        if meta and self.count != 1:
            parts.append(f"count={self.count}")
        return " ".join(parts)

    def __str__(self):
        return self.descriptor()

    @property
    def short(self):
        """A compact summary for tables: ``conv2d 4x64@56x56 k64 r3 s1``."""
        hw = f"{self.w}" if self.one_d else f"{self.h}x{self.w}"
        text = f"{self.op} {self.n}x{self.c}@{hw}"
        if self.k is not None:
            text += f" k{self.k}"
        if _kind(self.op) != "global":
            text += (f" r{_pair_text(self.kernel, self.one_d)}"
                     f" s{_pair_text(self.stride, self.one_d)}")
        return text


def _pair_text(pair, one_d):
    if one_d:
        return str(pair[1])
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


# --------------------------------------------------------------------------
# Building and checking
# --------------------------------------------------------------------------

def _positive(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProblemError(f"must be an integer, got {value!r}", name)
    if value < minimum:
        raise ProblemError(f"must be >= {minimum}, got {value}", name)
    return value


def _pair(name, value, one_d, minimum, default):
    """An int or (a, b) pair as ``(h, w)``; 1-D: ``(default, v)``."""
    if isinstance(value, (tuple, list)):
        if one_d:
            if len(value) != 1:
                raise ProblemError(f"a 1-D op takes one value, got {value!r}",
                                   name)
            value = value[0]
        elif len(value) != 2:
            raise ProblemError(f"must be one value or two (HxW), got "
                               f"{value!r}", name)
        else:
            return tuple(_positive(name, v, minimum) for v in value)
    v = _positive(name, value, minimum)
    return (default, v) if one_d else (v, v)


def problem(op="conv2d", *, n=1, c, h=None, w, k=None, kernel=None,
            stride=None, padding=0, dilation=1, groups=1, output_padding=0,
            label="", count=1):
    """A validated :class:`Problem`.

    Raises
    ------
    ProblemError
        Naming the field: an unknown op, a missing or non-positive size,
        a field the op does not take, groups that do not divide the
        channels, a kernel larger than the padded input, ...
    """
    if op not in OPS:
        raise ProblemError(f"unknown op {op!r}; choose from {', '.join(OPS)}",
                           "op")
    kind = _kind(op)
    one_d = op in ONE_D_OPS
    n = _positive("n", n)
    c = _positive("c", c)
    w = _positive("w", w)
    if one_d:
        if h not in (None, 1):
            raise ProblemError(f"{op} is 1-D: give its length as w (or l), "
                               f"not h", "h")
        h = 1
    elif h is None:
        raise ProblemError(f"{op} needs the input height", "h")
    h = _positive("h", h)
    if kind in ("conv", "transposed"):
        if k is None:
            raise ProblemError(f"{op} needs the output channels", "k")
        k = _positive("k", k)
        groups = _positive("g", groups)
        if c % groups or k % groups:
            raise ProblemError(f"groups ({groups}) must divide the input "
                               f"channels ({c}) and the output channels "
                               f"({k})", "g")
    else:
        if k is not None:
            raise ProblemError(f"{op} has no output channels (pooling keeps "
                               f"c)", "k")
        if groups != 1:
            raise ProblemError(f"{op} has no groups", "g")
    if kind == "global":
        for name, value, default in (("r", kernel, None), ("s", stride, None),
                                     ("p", padding, 0), ("d", dilation, 1)):
            if value != default:
                raise ProblemError(f"{op} takes no {_FIELD_NAMES[name]}",
                                   name)
        kernel = stride = (h, w)
        padding = (0, 0)
        dilation = (1, 1)
    else:
        if kernel is None:
            raise ProblemError(f"{op} needs the kernel size", "r")
        kernel = _pair("r", kernel, one_d, 1, 1)
        if stride is None:
            stride = kernel if kind in ("pool", "avg") else 1
        stride = _pair("s", stride, one_d, 1, 1)
        dilation = _pair("d", dilation, one_d, 1, 1)
        if kind == "avg" and dilation != (1, 1):
            raise ProblemError(f"{op} takes no dilation", "d")
        if isinstance(padding, str):
            if padding not in ("same", "valid") or kind not in ("conv",):
                allowed = ("an integer, HxW, 'same' or 'valid'"
                           if kind == "conv" else "an integer or HxW")
                raise ProblemError(f"padding of {op} must be {allowed}, got "
                                   f"{padding!r}", "p")
            if padding == "same" and stride != (1, 1):
                raise ProblemError("'same' padding needs stride 1", "p")
        else:
            padding = _pair("p", padding, one_d, 0, 0)
            if kind in ("pool", "avg"):
                for p, kk in zip(padding, kernel):
                    if 2 * p > kk:
                        raise ProblemError(
                            f"pooling padding ({p}) must be at most half the "
                            f"window ({kk})", "p")
    output_padding = _pair("o", output_padding, one_d, 0, 0)
    if kind != "transposed" and output_padding != (0, 0):
        raise ProblemError(f"{op} takes no output padding", "o")
    if kind == "transposed":
        for o, s, d in zip(output_padding, stride, dilation):
            if o >= max(s, d):
                raise ProblemError(f"output padding ({o}) must be smaller than "
                                   f"the stride or the dilation", "o")
    count = _positive("count", count)
    label = str(label)
    if any(ch.isspace() for ch in label) or "#" in label:
        raise ProblemError(f"a label has no spaces or '#' (it must read back "
                           f"from one line), got {label!r}", "name")
    made = Problem(op, n, c, h, w, k, tuple(kernel), tuple(stride), padding,
                   tuple(dilation), groups, tuple(output_padding), label,
                   count)
    try:
        out = made.forward_out_hw
    except ValueError as exc:
        raise ProblemError(str(exc), "r") from None
    if min(out) < 1:
        raise ProblemError(f"the output would be empty ({out})", "r")
    return made


# --------------------------------------------------------------------------
# Descriptors and files
# --------------------------------------------------------------------------

def _int_value(key, text):
    try:
        return int(text)
    except ValueError:
        raise ProblemError(f"{_FIELD_NAMES.get(key, key)} must be an integer, "
                           f"got {text!r}", key) from None


def _pair_value(key, text):
    if key == "p" and text in ("same", "valid"):
        return text
    parts = text.split("x")
    if len(parts) > 2 or not all(parts):
        raise ProblemError(f"{_FIELD_NAMES[key]} must be N or HxW, got "
                           f"{text!r}", key)
    values = tuple(_int_value(key, p) for p in parts)
    return values[0] if len(values) == 1 else values


def parse_problem(line, source=None):
    """The :class:`Problem` of one descriptor line (comment allowed).

    Returns None for a blank or comment-only line.  ``source`` (e.g.
    ``"file.txt:3"``) is added to the error message.
    """
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    tokens = text.split()
    op = "conv2d"
    if tokens[0] in OPS:
        op = tokens.pop(0)
    elif (re.match(r"[a-z_]{3,}", tokens[0]) and "=" not in tokens[0]
          and tokens[0] not in ("psame", "pvalid")):
        raise ProblemError(f"unknown op {tokens[0]!r}; choose from "
                           f"{', '.join(OPS)}", "op", source)
    kwargs = {}
    seen = set()
    accepted = _ACCEPTS[_kind(op)] | ({"l"} if op in ONE_D_OPS else set())
    try:
        for token in tokens:
            if "=" in token:
                key, value = token.split("=", 1)
                if key == "name":
                    kwargs["label"] = value
                elif key == "count":
                    kwargs["count"] = _int_value("count", value)
                else:
                    raise ProblemError(f"unknown keyword {key!r} (name= and "
                                       f"count= are the keywords)", key)
                if key in seen:
                    raise ProblemError("given twice", key)
                seen.add(key)
                continue
            key, value = token[0], token[1:]
            if token in OPS:
                raise ProblemError(f"the op ({token}) must be the first word",
                                   "op")
            if key not in _INT_FIELDS and key not in _PAIR_FIELDS:
                raise ProblemError(
                    f"unknown field {token!r}; fields are a letter and a "
                    f"value: n c h w k r s p d g o (e.g. r3, s2, p1, psame)",
                    token)
            if not value:
                raise ProblemError("has no value", key)
            if key not in accepted:
                raise ProblemError(f"{op} takes no {_FIELD_NAMES[key]}", key)
            canonical = "w" if key == "l" else key
            if canonical in seen:
                raise ProblemError("given twice", key)
            seen.add(canonical)
            if key in _PAIR_FIELDS:
                kwargs[_PAIR_FIELDS[key]] = _pair_value(key, value)
            else:
                kwargs[_INT_FIELDS[key]] = _int_value(key, value)
        for required in ("c", "w"):
            if required not in kwargs:
                raise ProblemError(f"{op} needs {_FIELD_NAMES[required]} "
                                   f"({required}N)", required)
        return problem(op, **kwargs)
    except ProblemError as exc:
        raise ProblemError(exc.message, exc.field, source) from None


def read_problems(path):
    """Every problem of a problem file, in order.

    Raises
    ------
    ProblemError
        Naming ``path:line`` and the field of the first bad line.
    OSError
        The file cannot be read.
    """
    problems = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            parsed = parse_problem(line, source=f"{path}:{number}")
            if parsed is not None:
                problems.append(parsed)
    if not problems:
        raise ProblemError("no problems in the file (one per line; '#' "
                           "starts a comment)", source=str(path))
    return problems


def format_problems(problems, header=None):
    """Problem-file text of ``problems`` (one descriptor per line)."""
    lines = [f"# {line}" for line in (header or "").splitlines()]
    lines += [p.descriptor() for p in problems]
    return "\n".join(lines) + "\n"


def distinct_problems(problems):
    """Merge equal problems in first-seen order, summing their counts; the
    first one's label is kept."""
    merged = {}
    for p in problems:
        if p in merged:
            first = merged[p]
            merged[p] = replace(first, count=first.count + p.count)
        else:
            merged[p] = p
    return list(merged.values())


def from_conv_case(case):
    """The conv2d :class:`Problem` of a :class:`convbench.workloads.ConvCase`."""
    n, c, h, w = case.x_shape
    k, _, kh, kw = case.w_shape
    label, count = case.label, 1
    found = re.fullmatch(r"(.*) \(x(\d+)\)", label)
    if found:
        label, count = found.group(1), int(found.group(2))
    padding = case.padding
    return problem("conv2d", n=n, c=c, h=h, w=w, k=k, kernel=(kh, kw),
                   stride=case.stride, padding=padding, groups=case.groups,
                   label=label.replace(" ", "_"), count=count)


# --------------------------------------------------------------------------
# Ops and directions of a set of problems
# --------------------------------------------------------------------------

#: ``--direction`` names: a training step's three products per layer.
DIRECTIONS = ("fwd", "bwd_data", "bwd_weights")
_BACKWARD = {("conv2d", "bwd_data"): "conv2d_backward_data",
             ("conv2d", "bwd_weights"): "conv2d_backward_weights",
             ("max_pool2d", "bwd_data"): "max_pool2d_backward",
             ("avg_pool2d", "bwd_data"): "avg_pool2d_backward"}
#: The forward op a derived op is taken from.
SOURCE_OP = {"conv2d_backward_data": "conv2d",
             "conv2d_backward_weights": "conv2d",
             "max_pool2d_backward": "max_pool2d",
             "avg_pool2d_backward": "avg_pool2d", "conv1d": "conv2d"}


def with_directions(problems, directions):
    """Each forward problem in every direction of ``directions`` that has
    an op (conv2d: all three; max / average pooling: ``bwd_data``);
    returns ``(problems, skipped)`` where ``skipped`` lists
    ``(descriptor, direction, reason)`` for the rest."""
    out, skipped = [], []
    for p in problems:
        for direction in directions:
            if direction == "fwd":
                out.append(p)
                continue
            op = _BACKWARD.get((p.op, direction))
            if op is None:
                skipped.append((p.descriptor(), direction,
                                f"kernels has no {direction} of {p.op}"))
                continue
            # The label names the direction: a table groups by label.
            label = f"{p.label or p.short}:{direction}"
            out.append(replace(p, op=op, label=label.replace(" ", "_")))
    return out, skipped


def as_op(problems, op):
    """The problems of ``op`` among ``problems``, or derived from their
    forward op (``conv2d_backward_*`` from conv2d, pooling backward from
    its forward, ``conv1d`` from conv2d problems with H = 1)."""
    direct = [p for p in problems if p.op == op]
    if direct or op not in SOURCE_OP:
        return direct
    source = [p for p in problems if p.op == SOURCE_OP[op]]
    if op == "conv1d":
        return [problem("conv1d", n=p.n, c=p.c, w=p.w, k=p.k,
                        kernel=p.kernel[1], stride=p.stride[1],
                        padding=(p.padding if isinstance(p.padding, str)
                                 else p.padding[1]),
                        dilation=p.dilation[1], groups=p.groups,
                        label=p.label, count=p.count)
                # Padded rows would add output rows a conv1d has not.
                for p in source if p.h == 1 and p.kernel[0] == 1
                and p.pads()[0] == (0, 0)]
    # As with_directions does: the label names the direction (a table
    # groups rows by label, and both ops may run in one sweep).
    direction = "bwd_weights" if op.endswith("weights") else "bwd_data"
    return [replace(p, op=op, label=f"{p.label or p.short}:{direction}"
                    .replace(" ", "_")) for p in source]


def select(problems, ops=None, directions=("fwd",)):
    """``problems`` restricted to ``ops`` (None: all) and run in every
    direction of ``directions``.

    Returns ``(problems, notes)``: ``notes`` are lines naming what a
    direction could not run.

    Raises
    ------
    ValueError
        An op with no problem in the selection, or nothing left to run.
    """
    if ops is not None:
        chosen = []
        for op in ops:
            found = as_op(problems, op)
            if not found:
                present = ", ".join(sorted({p.op for p in problems}))
                raise ValueError(f"no {op} problem in the selection (ops "
                                 f"there: {present})")
            chosen += found
        problems = chosen
    problems, skipped = with_directions(problems, directions)
    notes = [f"not run: {d} of {desc}: {why}" for desc, d, why in skipped]
    if not problems:
        why = f" ({skipped[0][2]})" if skipped else ""
        raise ValueError(f"nothing to run in direction(s) "
                         f"{', '.join(directions)}{why}")
    return problems, notes
