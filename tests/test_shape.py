"""The package's shape holds (issue 19): no import cycle in core and no core module over 700 lines.

An import cycle counts whether the imports sit at module level or inside functions (a function-level
import only hides a cycle from the interpreter, not from a reader); imports under ``TYPE_CHECKING``
are annotations only and do not count. A submodule importing its own package (``from tokenlean
import __version__``) is not a cycle either: the package imports none of its submodules eagerly.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "core" / "tokenlean"
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    mods = {}
    for path in CORE.rglob("*.py"):
        parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Every core module ``name`` imports, at any depth of the file, outside TYPE_CHECKING blocks."""

    def known(dotted: str) -> str | None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    todo: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                todo.extend(child.orelse)
                continue
            if isinstance(child, ast.Import):
                found.update(m for a in child.names if (m := known(a.name)))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    head = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(head) + (f".{base}" if base else "")
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    target = full if full in mods else known(base)
                    if target:
                        found.add(target)
            todo.append(child)
    return {m for m in found if m != name and not name.startswith(m + ".")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_cycle_in_core() -> None:
    mods = _modules()
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert _cycles(graph) == []


def test_cycle_finder_sees_function_level_imports(tmp_path: Path) -> None:
    # The checker itself must catch the kind of cycle it exists for, and skip TYPE_CHECKING imports.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "x.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.z import Z\n"
        "def f():\n    from pkg.y import g\n    return g\n"
    )
    (tmp_path / "pkg" / "y.py").write_text("from . import x\n")
    (tmp_path / "pkg" / "z.py").write_text("")
    mods = {
        "pkg": tmp_path / "pkg" / "__init__.py",
        **{f"pkg.{m}": tmp_path / "pkg" / f"{m}.py" for m in "xyz"},
    }
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert graph["pkg.x"] == {"pkg.y"} and graph["pkg.y"] == {"pkg.x"}
    assert _cycles(graph) == [["pkg.x", "pkg.y"]]


def test_no_core_module_over_700_lines() -> None:
    long = {
        str(path.relative_to(CORE)): n
        for path in CORE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
