"""Winograd lowering: per-layer speed against onnxruntime's Conv, and -O3 against -O2 on whole models.

    python benchmarks/export_models.py --only vgg,resnet18,resnet50 --exporter torchscript
    python benchmarks/winograd.py [--models vgg.ts,resnet18.ts,resnet50.ts] [--runs 30] [--out ...]

Per layer: a model of one 3x3 Conv (bias, pads 1, batch 1) and its F(2,3), F(4,3), F(6,3) lowerings, timed
interleaved in onnxruntime at 1 and 2 threads (median of 3 rounds of 15 runs); ratio = Conv time / lowering time,
and the lowering's max |error| / max |Conv output| on a random input. Whole models: ``-O2`` and ``-O3`` (autotuned at
1 thread, a fresh decision cache) timed interleaved at 1 thread, with the output difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from graphopt.passes import winograd as wp  # noqa: E402

import graphopt  # noqa: E402
from graphopt.tools import runtime  # noqa: E402

MODELS = HERE / "models"
SHAPES = [(128, 28), (256, 14), (64, 56), (128, 56), (256, 28), (512, 14), (64, 112)]


def per_layer(lines: list[str]) -> None:
    lines += [
        "## Per layer (3x3, stride 1, pads 1, bias, batch 1): Conv time / lowering time",
        "",
        "| C = K | H = W | threads | F(2,3) | F(4,3) | F(6,3) | error F2 / F4 / F6 |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c, h in SHAPES:
        rng = np.random.default_rng(0)
        w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        facts = {
            "C": c,
            "K": c,
            "H": h,
            "W": h,
            "pads": [1, 1, 1, 1],
            "h_out": h,
            "w_out": h,
            "bias": rng.standard_normal(c).astype(np.float32),
        }
        errors = " / ".join(f"{wp.layer_error(facts, w, m):.1e}" for m in wp.TILES)
        for threads in (1, 2):
            t = wp.time_layer(facts, w, [None, *wp.TILES], threads)
            row = f"| {c} | {h} | {threads} | " + " | ".join(f"{t[None] / t[m]:.2f}x" for m in wp.TILES)
            lines.append(f"{row} | {errors} |")
            print(lines[-1], flush=True)


def whole_models(names: list[str], runs: int, lines: list[str]) -> None:
    lines += [
        "",
        "## Whole models, 1 thread: -O3 (autotuned) against -O2",
        "",
        "| model | lowered layers | -O2 ms | -O3 ms | speed-up | max abs diff / max abs output | optimize -O3 s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        src = MODELS / f"{name}.onnx"
        o2 = graphopt.optimize(src, level=2).to_onnx()
        report: list = []
        import time

        t0 = time.perf_counter()
        o3 = graphopt.optimize(src, level=3, winograd_threads=1, report=report).to_onnx()
        seconds = time.perf_counter() - t0
        counts = next((s.counts for s in report[0].stats if s.name == "winograd"), {})
        a, b = runtime.session(o2, threads=1), runtime.session(o3, threads=1)
        feeds = runtime.make_inputs(a, batch=1)
        ya, yb = a.run(None, feeds)[0], b.run(None, feeds)[0]
        err = float(np.abs(ya - yb).max() / np.abs(ya).max())
        la, lb = runtime.measure_latency([a, b], feeds, warmup=3, runs=runs)
        lowered = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "-"
        lines.append(
            f"| {name} | {lowered} | {la.median_ms:.2f} | {lb.median_ms:.2f} | {la.median_ms / lb.median_ms:.2f}x | "
            f"{err:.1e} | {seconds:.1f} |"
        )
        print(lines[-1], flush=True)


def kernels(lines: list[str]) -> None:
    """The offline weight transform and the input transform: Numba (parallel) against the C extension (1 thread)."""
    from graphopt.kernels import winograd as wk

    rng = np.random.default_rng(0)
    cases = [
        ("weight transform 512x512x3x3, F(4,3)", lambda b: wk.weight_transform(w512, 4, b)),
        ("input transform 1x256x58x58, F(4,3)", lambda b: wk.input_transform(x256, 4, b)),
        ("output transform 6x6x256x196, F(4,3)", lambda b: wk.output_transform(mm256, 4, 14, 14, b)),
    ]
    w512 = rng.standard_normal((512, 512, 3, 3))
    x256 = rng.standard_normal((1, 256, 58, 58))
    mm256 = rng.standard_normal((6, 6, 256, 196))
    backends = ["numba"] + (["c"] if wk._c_module() is not None else [])
    lines += [
        "",
        "## Kernels (float64; best of 5)",
        "",
        "| kernel | " + " | ".join(backends) + " |",
        "|---|" + "---:|" * len(backends),
    ]
    import time

    for label, fn in cases:
        best = {}
        for b in backends:
            fn(b)
            runs = []
            for _ in range(5):
                t0 = time.perf_counter()
                fn(b)
                runs.append(time.perf_counter() - t0)
            best[b] = min(runs) * 1000
        lines.append(f"| {label} | " + " | ".join(f"{best[b]:.2f} ms" for b in backends) + " |")
        print(lines[-1], flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="vgg.ts,resnet18.ts,resnet50.ts")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", default=str(HERE / "RESULTS-winograd.md"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["GRAPHOPT_CACHE_DIR"] = cache  # fresh decisions: the run measures the autotuning too
        lines = [
            "# Winograd lowering",
            "",
            f"`python benchmarks/winograd.py --models {args.models} --runs {args.runs}`",
            "",
        ]
        per_layer(lines)
        kernels(lines)
        whole_models([m for m in args.models.split(",") if m], args.runs, lines)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
