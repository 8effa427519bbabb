"""Where -O2 leaves more nodes than the best anchor (issue 16): op histograms of graphopt -O2 against the anchor.

    python benchmarks/o2_gaps.py                      # every model where _results.json shows a gap
    python benchmarks/o2_gaps.py --only khmersm,deepcut --anchor onnxsim

For each model: graphopt -O2 (in process) and the anchor with the fewest nodes in ``_results.json`` (or ``--anchor``),
then the per-op-type node counts that differ (subgraph bodies included), graphopt minus anchor.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
import wild  # noqa: E402

import graphopt  # noqa: E402

ANCHORS = ("onnxsim", "onnxslim", "onnxoptimizer", "ort-basic")


def histogram(model: onnx.ModelProto) -> Counter:
    hist: Counter = Counter()

    def walk(g: onnx.GraphProto) -> None:
        for node in g.node:
            hist[(node.domain + "::" if node.domain not in ("", "ai.onnx") else "") + node.op_type] += 1
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sub in a.graphs:
                        walk(sub)

    walk(model.graph)
    return hist


def best_anchor(result: dict) -> tuple[str, int] | None:
    best = None
    for tool in ANCHORS:
        s = result.get(f"anchor:{tool}") or {}
        if s.get("verdict") == "ok" and s.get("nodes") is not None and (best is None or s["nodes"] < best[1]):
            best = (tool, s["nodes"])
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated model names (default: every model with a gap in the results)")
    ap.add_argument("--anchor", choices=ANCHORS, help="compare with this anchor (default: the best in the results)")
    ap.add_argument("--results", default=str(corpus.CACHE / "_results.json"))
    args = ap.parse_args(argv)
    results = json.loads(Path(args.results).read_text()) if Path(args.results).exists() else {}
    if args.only:
        names = args.only.split(",")
    else:
        names = [
            n for n, r in results.items()
            if (r.get("o2") or {}).get("nodes") and best_anchor(r) and r["o2"]["nodes"] > best_anchor(r)[1]
        ]
    entries = {e["name"]: e for e in corpus.select()}
    total: Counter = Counter()
    for name in names:
        entry = entries[name]
        src = corpus.model_path(entry)
        tool = args.anchor or (best_anchor(results.get(name, {})) or ("onnxsim", 0))[0]
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "anchor.onnx"
            wild._anchor(tool, src, out)
            anchor = histogram(onnx.load(str(out), load_external_data=False))
        model = graphopt.load(src)
        graphopt.optimize(model, level=2)
        mine = histogram(_proto(model))
        diff = {op: mine[op] - anchor[op] for op in sorted(set(mine) | set(anchor)) if mine[op] != anchor[op]}
        total.update({op: d for op, d in diff.items() if d > 0})
        print(f"{name}: graphopt {sum(mine.values())} vs {tool} {sum(anchor.values())}: "
              + ", ".join(f"{op} {d:+d}" for op, d in diff.items()))
    print("ops graphopt keeps more of, summed over the models:", dict(total.most_common()))
    return 0


def _proto(model) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        graphopt.save(model, path)
        return onnx.load(str(path), load_external_data=False)


if __name__ == "__main__":
    raise SystemExit(main())
