"""The module tree of graphopt/, passes/ and kernels/, and the line counts of the largest modules and functions
(issue 15's closing note).

    python benchmarks/module_stats.py [--modules 8] [--functions 5]
"""

from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", type=int, default=8)
    ap.add_argument("--functions", type=int, default=5)
    args = ap.parse_args(argv)
    files = sorted(p for d in ("graphopt", "passes", "kernels") for p in (ROOT / d).rglob("*.py"))
    tree: dict[str, list[str]] = defaultdict(list)
    modules, functions = [], []
    for path in files:
        rel = path.relative_to(ROOT)
        tree[str(rel.parent)].append(rel.stem)
        text = path.read_text()
        modules.append((len(text.splitlines()), str(rel)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.name}"))  # type: ignore[operator]
    print(f"{len(files)} modules")
    for folder, names in sorted(tree.items()):
        print(f"  {folder}/ ({len(names)}): {', '.join(names)}")
    print("largest modules:", ", ".join(f"{p} {n}" for n, p in sorted(modules, reverse=True)[: args.modules]))
    print("largest functions:", ", ".join(f"{f} {n}" for n, f in sorted(functions, reverse=True)[: args.functions]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
