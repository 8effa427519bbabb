"""Where graphopt -O2 spends its time on a model: load, each pass, save; next to plain onnx.load + onnx.save.

    python benchmarks/breakdown.py MODEL [MODEL ...] [--runs 12]

Each run loads the model, optimizes it at -O2 and saves it to a temporary file; the first two runs warm up and the
medians of the others are printed in milliseconds (a pass that appears twice in the pipeline is listed twice).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import graphopt  # noqa: E402


def breakdown(src: Path, runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out, plain = Path(tmp) / "out.onnx", Path(tmp) / "plain.onnx"
        for i in range(runs + 2):
            t0 = time.perf_counter()
            model = graphopt.load(src)
            t1 = time.perf_counter()
            report: list = []
            graphopt.optimize(model, level=2, report=report)
            t2 = time.perf_counter()
            graphopt.save(model, out)
            t3 = time.perf_counter()
            onnx.save(onnx.load(str(src)), str(plain))
            t4 = time.perf_counter()
            if i < 2:
                continue
            rows = [("load", t1 - t0), ("passes", t2 - t1), ("save", t3 - t2), ("total", t3 - t0)]
            rows += [(f"  {k}: {s.name}", s.seconds) for k, s in enumerate(report[0].stats)]
            rows.append(("onnx load+save", t4 - t3))
            for key, value in rows:
                samples.setdefault(key, []).append(value)
    return {k: statistics.median(v) * 1000 for k, v in samples.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--runs", type=int, default=12)
    args = ap.parse_args()
    for src in args.models:
        print(src)
        for key, ms in breakdown(src, args.runs).items():
            print(f"  {key:28} {ms:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
