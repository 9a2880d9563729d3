"""The package's layering holds: a lower part never imports an upper one, siblings never import
each other, and no circle of imports exists between modules.

Reads every module's imports with ``ast`` (function-local and ``TYPE_CHECKING`` imports count
too: a circle that only works because an import is deferred is still a circle). The layers are
drawn in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import livecommerce

PACKAGE = Path(livecommerce.__file__).parent

LAYERS: dict[str, int] = {
    "core": 0,
    "store": 1,
    "realtime": 2,
    "fulfillment": 2,
    "web": 3,
    "ops": 4,
}
"""Subpackage -> layer. A module may import its own subpackage or any LOWER layer."""


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str) -> set[str]:
    """Every livecommerce module ``path`` imports (resolved to a module, not a name)."""
    known = modules()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports a module; ``from mod import name`` the module.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]  # fmt: skip
        for target in targets:
            if target.startswith("livecommerce"):
                while target not in known and "." in target:
                    target = target.rpartition(".")[0]
                if target in known and target != name:
                    found.add(target)
    return found


def part_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def graph() -> dict[str, set[str]]:
    return {name: imports_of(path, name) for name, path in modules().items()}


def layering_violations(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for src, targets in edges.items():
        src_part = part_of(src)
        for dst in sorted(targets):
            dst_part = part_of(dst)
            if src_part is None or dst_part is None or src_part == dst_part:
                continue
            if LAYERS[dst_part] >= LAYERS[src_part]:
                out.append(f"{src} ({src_part}, layer {LAYERS[src_part]}) imports {dst} "
                           f"({dst_part}, layer {LAYERS[dst_part]})")  # fmt: skip
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), plus self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_lives_in_a_part() -> None:
    """Only the package's own ``__init__``/``__main__`` sit at the top; everything else is in a
    subpackage that has a layer."""
    stray = [n for n in modules() if n not in ("livecommerce", "livecommerce.__main__")
             and part_of(n) is None]  # fmt: skip
    assert stray == []


def test_lower_parts_never_import_upper_ones() -> None:
    assert layering_violations(graph()) == []


def test_no_import_circles() -> None:
    assert cycles(graph()) == []


def test_the_checks_catch_what_they_guard() -> None:
    """The checkers themselves, on a made-up graph: an upward import, a sibling import and a
    circle are each reported (so a passing run above means something)."""
    edges = {
        "livecommerce.store.inventory": {"livecommerce.realtime.gateway"},
        "livecommerce.realtime.gateway": {"livecommerce.fulfillment.relay"},
        "livecommerce.fulfillment.relay": {"livecommerce.store.inventory"},
        "livecommerce.web.hostapi": {"livecommerce.store.keys"},
    }
    found = layering_violations(edges)
    assert any("store.inventory (store, layer 1) imports" in v for v in found)
    assert any("realtime.gateway (realtime, layer 2) imports livecommerce.fulfillment" in v
               for v in found)  # fmt: skip
    assert not any(v.startswith("livecommerce.web.hostapi") for v in found)
    assert cycles(edges) == [sorted(list(edges)[:3])]


@pytest.mark.parametrize("part", sorted(LAYERS))
def test_each_part_says_what_it_may_import(part: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / part / "__init__.py").read_text()))
    assert doc and "import" in doc, f"livecommerce/{part}/__init__.py needs its docstring"
