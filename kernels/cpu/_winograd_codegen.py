"""Writes :mod:`kernels.cpu._winograd_unrolled`: the Winograd transforms
of the common tiles as straight-line Numba code.

The generic transforms of :mod:`kernels.cpu.winograd` run as passes of
unit-stride vector loops, one pass per nonzero matrix entry, each reading
and writing its accumulator in memory: on ResNet-50's 3x3 layers they
took as long as the tuple GEMMs, or longer.  Unrolled, one tile's alpha^2
inputs and its partial sums stay in registers, the zero entries of the
matrices vanish, the entries +-1 become additions and subtractions, and
the vector loop runs over the channels of the tile.

What the generated code must respect, so that LLVM vectorizes it:

* every vector loop starts at 0 and indexes 1-D views of the channel run
  (``row[c]``), never ``array[i, c0 + c]``: a start LLVM cannot prove
  non-negative keeps Numba's wrap-around for negative indices, and the
  loop then gathers element by element;
* the loop stores into one scratch array of literal shape (its offsets are
  constants), and a second simple loop copies the scratch to its
  destination: stores to alpha^2 planes of V or M at run-time distances
  need more run-time alias checks than LLVM's vectorizer allows.

The output transform's scratch holds a tile's m x m outputs with channels
fastest; y wants each channel's m pixels of a row side by side.  Each row
of the tile goes to y as one short vector a channel
(:func:`kernels.cpu._simd.store_columns`: lanes x lanes squares transposed
in registers, the bias added on the way).  The former scalar copy of each
output into a row buffer, then row by row into y, took 40 % of the
transform: F(4,3), one thread, ~51 against 24-31 cycles a tile and
channel at 64@56^2, 128@28^2 and 256@14^2 (docs/performance.md section
AR).

Each sum is evaluated in the order of the generic kernels (first along the
tile's rows with the ``w`` matrix, then along its columns with the ``h``
one, terms in index order), so the results are bitwise those of the
generic code.

Run ``python -m kernels.cpu._winograd_codegen`` after changing the
transforms or the list of tiles; ``tests/test_winograd.py`` fails while
the file differs from what this module writes.
"""

from __future__ import annotations

import pathlib

from .._winograd_math import cook_toom

__all__ = ["UNROLLED_TILES", "CHANNEL_RUN", "generate", "main"]

# (m, r) of the square tiles F(m x m, r x r) that get unrolled transforms:
# the 3x3 tiles that ResNet-style layers use (tile_for_problem).
UNROLLED_TILES = ((2, 3), (4, 3))

# Channels per vector loop: the literal width of the scratch.
CHANNEL_RUN = 64

TARGET = pathlib.Path(__file__).with_name("_winograd_unrolled.py")


def _sum(coefs, names, coef_name):
    """Source of sum_j coefs[j] * names[j] in index order: zero terms left
    out, +-1 as addition and subtraction, other entries read from the
    matrix's local ``coef_name(j)``."""
    terms = []
    for j, (c, name) in enumerate(zip(coefs, names)):
        if c == 0:
            continue
        if c == 1:
            terms.append(("+", name))
        elif c == -1:
            terms.append(("-", name))
        else:
            terms.append(("+", f"{coef_name(j)} * {name}"))
    if not terms:
        return "zero"
    first_sign, first = terms[0]
    text = first if first_sign == "+" else f"-{first}"
    for sign, term in terms[1:]:
        text += f" {sign} {term}"
    return text


def _coefficient_locals(matrix, name):
    """Lines loading the entries of ``matrix`` that are not 0 or +-1."""
    lines = []
    for i, row in enumerate(matrix):
        for j, c in enumerate(row):
            if c not in (0, 1, -1):
                lines.append(f"    {name}{i}_{j} = {name}[{i}, {j}]")
    return lines


def _channel_run_loads(names, indexes, indent):
    """Lines viewing the run of channels ``c0:c0 + w`` at each index (an
    array and its leading indices: ``"x0[col + 1, "``) as ``name_`` and,
    inside the vector loop over ``c``, loading its element ``name``."""
    pad = " " * indent
    lines = [f"{pad}{name}_ = {index}c0:c0 + w]"
             for name, index in zip(names, indexes)]
    lines.append(f"{pad}for c in range(w):")
    lines += [f"{pad}    {name} = {name}_[c]" for name in names]
    return lines


def _nested_transform(matrix, name, prefix, store, indent):
    """Lines of ``matrix @ D @ matrix^T`` for the alpha x alpha grid D of
    locals ``{prefix}{i}_{j}`` (alpha: the matrix's columns; its entries
    other than 0 and +-1 are the locals ``{name}{row}_{column}``): along
    rows first (``h{i}_{b}``), then along columns; element (a', b) is
    written by the line ``store(a', b, expr)``."""
    pad = " " * indent
    coef = lambda row: (lambda j: f"{name}{row}_{j}")  # noqa: E731
    alpha, out = len(matrix[0]), len(matrix)
    lines = []
    for i in range(alpha):
        for b in range(out):
            expr = _sum(matrix[b], [f"{prefix}{i}_{j}" for j in range(alpha)],
                        coef(b))
            lines.append(f"{pad}h{i}_{b} = {expr}")
    for ap in range(out):
        for b in range(out):
            expr = _sum(matrix[ap], [f"h{i}_{b}" for i in range(alpha)],
                        coef(ap))
            lines.append(f"{pad}{store(ap, b, expr)}")
    return lines


def _input_function(m, r):
    """Source of input_block_m{m}_r{r}."""
    _, _, BT = cook_toom(m, r)
    a = len(BT)
    run = CHANNEL_RUN
    name = f"input_block_m{m}_r{r}"
    lines = [
        "@njit(cache=True)",
        f"def {name}(xp, n, ti0, nr, tj0, ns, bt, v, t0, row_stride):",
        f'    """Input transform of F({m}x{m}, {r}x{r}) for a block of nr x ns',
        "    tiles of image n: :func:`input_block_passes` with",
        '    B^T = ``bt``, unrolled (same arguments, same results)."""',
        "    nc = xp.shape[3]",
        "    zero = np.zeros(1, xp.dtype)[0]",
        f"    buf = np.empty(({a * a}, {run}), xp.dtype)",
    ]
    lines += _coefficient_locals(BT, "bt")
    lines += [
        "    for rr in range(nr):",
        "        ti = ti0 + rr",
    ]
    lines += [f"        x{i} = xp[n, ti * {m} + {i}]" for i in range(a)]
    lines += [
        "        for s in range(ns):",
        f"            col = (tj0 + s) * {m}",
        "            t = t0 + rr * row_stride + s",
        f"            for c0 in range(0, nc, {run}):",
        f"                w = min({run}, nc - c0)",
    ]
    lines += _channel_run_loads(
        [f"d{i}_{l}" for i in range(a) for l in range(a)],
        [f"x{i}[col + {l}, " for i in range(a) for l in range(a)], 16)
    lines += _nested_transform(
        BT, "bt", "d",
        lambda ap, b, expr: f"buf[{ap * a + b}, c] = {expr}", 20)
    lines += [
        f"                for p in range({a * a}):",
        "                    dst = v[p, t, c0:c0 + w]",
        "                    src = buf[p]",
        "                    for c in range(w):",
        "                        dst[c] = src[c]",
    ]
    return name, lines


def _output_function(m, r):
    """Source of output_block_m{m}_r{r}."""
    AT, _, _ = cook_toom(m, r)
    a = len(AT[0])
    run = CHANNEL_RUN
    name = f"output_block_m{m}_r{r}"
    lines = [
        "@njit(cache=True)",
        f"def {name}(mm, t0, row_stride, n, ti0, nr, tj0, ns, at, bias, k0, y):",
        f'    """Output transform of F({m}x{m}, {r}x{r}) for a block of nr x ns',
        "    tiles into y[n, k0 + k]: :func:`output_block_passes`",
        '    with A^T = ``at``, unrolled (same results)."""',
        "    Ho, Wo = y.shape[2], y.shape[3]",
        "    nk = mm.shape[2]",
        "    has_bias = bias.shape[0] > 0",
        f"    buf = np.empty(({m * m}, {run}), mm.dtype)",
        "    # bias or zeros: the sums get + 0 without a bias, as in the passes",
        "    shifts = np.zeros(nk, mm.dtype)",
        "    if has_bias:",
        "        shifts[:] = bias[k0:k0 + nk]",
        "    yf = y.reshape(y.size)",
        "    plane = Ho * Wo",
        "    tail = nk - nk % lanes(mm)",
        f"    col0 = tj0 * {m}",
    ]
    lines += _coefficient_locals(AT, "at")
    lines += [
        "    for rr in range(nr):",
        "        ti = ti0 + rr",
        f"        rows = min({m}, Ho - ti * {m})",
        "        for s in range(ns):",
        "            t = t0 + rr * row_stride + s",
        f"            col = col0 + s * {m}",
        f"            count = min({m}, Wo - col)",
        f"            for c0 in range(0, nk, {run}):",
        f"                w = min({run}, nk - c0)",
    ]
    lines += _channel_run_loads(
        [f"m{i}_{j}" for i in range(a) for j in range(a)],
        [f"mm[{i * a + j}, t, " for i in range(a) for j in range(a)], 16)
    lines += _nested_transform(
        AT, "at", "m",
        lambda ap, b, expr: f"buf[{ap * m + b}, c] = {expr}", 20)
    # The tile's rows to y: each channel's m pixels of a row as one short
    # vector (lanes channels at a time, transposed in registers); channels
    # past the last whole vector one by one.
    lines += [
        "                whole = min(w, tail - c0)",
        "                for ap in range(rows):",
        f"                    d0 = (((n * y.shape[1] + k0 + c0) * Ho + ti * {m} + ap)",
        "                          * Wo + col)",
        "                    for q0 in range(0, whole, lanes(mm)):",
        f"                        store_columns_{m}(buf, ap * {m}, q0, shifts,",
        "                                         c0 + q0, yf,",
        "                                         d0 + q0 * plane, plane, count)",
        "                    for q in range(max(whole, 0), w):",
        "                        for b in range(count):",
        f"                            yf[d0 + q * plane + b] = (buf[ap * {m} + b, q]",
        "                                                      + shifts[c0 + q])",
    ]
    return name, lines


HEADER = '''"""Unrolled Winograd transforms of the common tiles.

GENERATED by ``python -m kernels.cpu._winograd_codegen``; do not edit.
Why and how: :mod:`kernels.cpu._winograd_codegen`.
"""

import numpy as np
from numba import njit
from numba.extending import overload

from ._simd import lanes, store_columns
from ._winograd_blocks import input_block_passes, output_block_passes

{column_stores}
'''

# The dispatch by tile: the tile's code is the length of a tuple ``tag``,
# part of its Numba type.  A kernel is then compiled per tile code and
# links that tile's transforms only, and a call finds its compiled kernel
# by the arguments' types.  (``numba.literally`` on an int did the first
# but re-typed the kernel on every call, ~35 ms a call.)
_DISPATCH = '''{def_line}
    """:func:`{generic}`, or the unrolled transform of the tile whose
    code is ``len(tag)`` (:data:`UNROLLED_TILES`; 0: the generic passes).
    For Numba-compiled callers: the choice is made when they are typed."""
    raise NotImplementedError("{name} is called from compiled code only")


@overload({name})
{overload_line}
    code = len(tag)
{branches}
    else:
{impl_line}
{generic_call}
    return {name}_impl'''


def _wrapped(head, args, indent, tail=""):
    """``head(args)tail`` at ``indent`` spaces, the arguments wrapped under
    the opening parenthesis to stay within 79 columns."""
    pad = " " * indent
    lines, line = [], f"{pad}{head}("
    for i, arg in enumerate(args):
        text = arg + (", " if i < len(args) - 1 else f"){tail}")
        if len(line) + len(text.rstrip()) > 79:
            lines.append(line.rstrip())
            line = " " * (indent + len(head) + 1)
        line += text
    return "\n".join(lines + [line])


_INPUT_ARGS = ("xp, n, ti0, nr, tj0, ns, bt_h, bt_w, m_h, m_w, half, v, t0, "
               "row_stride")
_OUTPUT_ARGS = ("mm, t0, row_stride, n, ti0, nr, tj0, ns, at_h, at_w, bias, "
                "k0, half, line, y")


def _dispatch_function(name, args, generic, unrolled_args):
    """Source of the dispatch ``name``: the unrolled function of the tile
    whose code is ``len(tag)``, called with ``unrolled_args``, or
    ``generic`` called with ``args`` for code 0."""
    args, unrolled_args = args.split(", "), unrolled_args.split(", ")
    params = ["tag"] + args
    impl = _wrapped(f"def {name}_impl", params, 8, ":")
    branches = []
    for code, (m, r) in enumerate(UNROLLED_TILES, start=1):
        keyword = "if" if code == 1 else "elif"
        branches += [f"    {keyword} code == {code}:", impl,
                     _wrapped(f"{name}_m{m}_r{r}", unrolled_args, 12)]
    return _DISPATCH.format(
        name=name, generic=generic, branches="\n".join(branches),
        def_line=_wrapped(f"def {name}", params, 0, ":"),
        overload_line=_wrapped(f"def _{name}_of_tile", params, 0, ":"),
        impl_line=impl, generic_call=_wrapped(generic, args, 12))


def _dispatch_functions():
    """Sources of input_block and output_block."""
    return [
        _dispatch_function("input_block", _INPUT_ARGS, "input_block_passes",
                           "xp, n, ti0, nr, tj0, ns, bt_h, v, t0, row_stride"),
        _dispatch_function("output_block", _OUTPUT_ARGS, "output_block_passes",
                           "mm, t0, row_stride, n, ti0, nr, tj0, ns, at_h, "
                           "bias, k0, y"),
    ]


def generate():
    """The source of :mod:`kernels.cpu._winograd_unrolled`."""
    chunks = []
    names = ["UNROLLED_TILES", "input_block", "output_block"]
    for m, r in UNROLLED_TILES:
        for make in (_input_function, _output_function):
            name, lines = make(m, r)
            names.append(name)
            chunks.append("\n".join(lines))
    table = ["# (m, r) of square tiles F(m x m, r x r) -> their code in the dispatch.",
             "UNROLLED_TILES = {"]
    table += [f"    ({m}, {r}): {i + 1}," for i, (m, r) in enumerate(UNROLLED_TILES)]
    table.append("}")
    exports = "__all__ = [\n" + "".join(f'    "{n}",\n' for n in names) + "]"
    stores = "\n".join(f"store_columns_{m} = store_columns({m})"
                       for m in sorted({m for m, _ in UNROLLED_TILES}))
    header = HEADER.replace("{column_stores}", "# A tile's output rows, a short "
                            "vector per channel (see _simd.store_columns).\n"
                            + stores + "\n")
    return (header + exports + "\n\n" + "\n".join(table) + "\n\n\n"
            + "\n\n\n".join(_dispatch_functions() + chunks) + "\n")


def main():
    TARGET.write_text(generate())
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
