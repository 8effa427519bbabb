"""The import graph of graphopt/, passes/ and kernels/ (every import, function-level ones included) has no cycle and
no import against the layer order of docs/architecture.md (the ```layers block: the test and the docs share it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
SOURCES = {"graphopt": ROOT / "graphopt", "graphopt.passes": ROOT / "passes", "graphopt.kernels": ROOT / "kernels"}


def layers() -> list[tuple[str, list[str]]]:
    """``[(layer, [package or module prefix, ...]), ...]``, lowest first, from the ```layers block of the docs."""
    block = re.search(r"```layers\n(.*?)```", ARCHITECTURE.read_text(), re.S)
    assert block, f"{ARCHITECTURE} has no ```layers block"
    rows = [line.split() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    return [(row[0], row[1:]) for row in rows]


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _lazy_exports() -> dict[str, str]:
    """``graphopt``'s PEP 562 exports: ``from graphopt import Graph`` depends on the module that defines Graph."""
    tree = ast.parse((ROOT / "graphopt" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_EXPORTS":
            return ast.literal_eval(node.value)
    return {}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of imports under ``if TYPE_CHECKING:`` (annotations only: never executed, so never a cycle)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    lines.add(sub.lineno)
    return lines


def import_graph() -> dict[str, set[str]]:
    """``{module: {project modules it imports}}`` over every import statement, at any depth."""
    mods = modules()
    exports = _lazy_exports()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        is_package = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    if base == "graphopt" and alias.name in exports:
                        targets.append(exports[alias.name])
                    else:
                        targets.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base)
            for target in targets:
                dep = resolve(target) if target.startswith("graphopt") else None
                if dep and dep != name:
                    deps.add(dep)
        graph[name] = deps
    return graph


def layer_of(module: str, table: list[tuple[str, list[str]]]) -> int:
    best, index = "", -1
    for i, (_, prefixes) in enumerate(table):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best, index = p, i
    return index


def test_every_module_has_a_layer() -> None:
    table = layers()
    assert [m for m in import_graph() if layer_of(m, table) < 0] == []


def upward_imports(graph: dict[str, set[str]], table: list[tuple[str, list[str]]]) -> list[str]:
    return [
        f"{m} ({table[layer_of(m, table)][0]}) imports {d} ({table[layer_of(d, table)][0]})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if layer_of(d, table) > layer_of(m, table)
    ]


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    cycles: list[str] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join([*stack[stack.index(d) :], d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_no_import_against_the_layer_order() -> None:
    assert upward_imports(import_graph(), layers()) == []


def test_no_import_cycle() -> None:
    assert find_cycles(import_graph()) == []


def test_the_checks_catch_a_cycle_and_an_upward_import() -> None:
    """The checks can fail: an IR module that imported the PassManager would be both."""
    graph = import_graph()
    manager, ir = "graphopt.engine.pass_manager", "graphopt.core.ir"
    assert ir in graph[manager]  # the engine does import the IR (function-level imports count too)
    graph[ir] = {*graph[ir], manager}
    assert upward_imports(graph, layers()) == [f"{ir} (core) imports {manager} (engine)"]
    assert any(c.startswith(ir) or f"-> {ir} ->" in c for c in find_cycles(graph))
