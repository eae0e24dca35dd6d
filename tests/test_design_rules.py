"""The layering rules of docs/design.md, checked on the source.

* no import cycle among the modules of ``kernels/``;
* backend-neutral modules (``kernels/*.py``) never import a backend
  (``kernels.cpu``, ``kernels.cuda``) — they reach kernels through
  ``kernels._dispatch.load``;
* no module imports another module's underscore name;
* the output-size formula lives in ``kernels/geometry.py`` only.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

KERNELS = Path(__file__).resolve().parent.parent / "kernels"
BACKEND_PACKAGES = ("cpu", "cuda")


def _module_name(path):
    parts = path.relative_to(KERNELS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules():
    return {_module_name(p): p for p in sorted(KERNELS.rglob("*.py"))}


def _resolve(module, node):
    """Absolute names a ``from ... import`` refers to (module or module.name)."""
    package = module.split(".")
    if not _modules()[module].name == "__init__.py":
        package = package[:-1]
    if node.level:
        base = package[:len(package) - node.level + 1]
    else:
        base = []
    target = ".".join(base + ([node.module] if node.module else []))
    return target, [alias.name for alias in node.names]


def _imports(module, path):
    """``(target module, imported names)`` of each import, those inside
    functions included (a deferred import is still a dependency)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out.append(_resolve(module, node))
        elif isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
    return out


def _edges():
    modules = _modules()
    edges = {m: set() for m in modules}
    for module, path in modules.items():
        for target, names in _imports(module, path):
            for name in names:
                if f"{target}.{name}" in modules:
                    edges[module].add(f"{target}.{name}")
            if target in modules and target != module:
                edges[module].add(target)
    return edges


def test_kernels_import_graph_has_no_cycle():
    # The package __init__ re-exports the API: it imports everything and is
    # imported first by Python, so it is not part of a cycle between modules.
    edges = {m: {t for t in ts if t != "kernels"} for m, ts in _edges().items()
             if m != "kernels"}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == "open":
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(
    m for m in _modules() if m.count(".") == 1))
def test_backend_neutral_modules_never_import_a_backend(module):
    backends = {f"kernels.{b}" for b in BACKEND_PACKAGES}
    for target, names in _imports(module, _modules()[module]):
        hits = [target] if any(target == b or target.startswith(b + ".")
                               for b in backends) else []
        hits += [f"{target}.{n}" for n in names if f"{target}.{n}" in backends]
        assert not hits, f"{module} imports {hits}: go through kernels._dispatch"


def test_no_module_imports_another_modules_private_name():
    modules = _modules()
    offenders = []
    for module, path in modules.items():
        for target, names in _imports(module, path):
            for name in names:
                private = name.startswith("_") and not name.startswith("__")
                if private and f"{target}.{name}" not in modules \
                        and target.startswith("kernels"):
                    offenders.append(f"{module}: from {target} import {name}")
    assert not offenders, "\n".join(offenders)


# n + p - d (k - 1) - 1, then // s + 1: the convolution output size.
_OUTPUT_SIZE = re.compile(r"-\s*\w+\s*\*\s*\(\s*\w+\s*-\s*1\s*\)\s*-\s*1\s*\)\s*//")


def test_the_output_size_formula_lives_in_geometry_only():
    found = [f"{p.relative_to(KERNELS.parent)}:{i}"
             for p in sorted(KERNELS.rglob("*.py")) if p.name != "geometry.py"
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if _OUTPUT_SIZE.search(line)]
    assert not found, f"use kernels.geometry.conv_output_size: {found}"
    geometry = (KERNELS / "geometry.py").read_text()
    assert "def conv_output_size" in geometry
