"""Pruning: MACs, parameters and onnxruntime latency before and after, on real exports.

    python benchmarks/export_models.py --only resnet50,mobilenetv2,concatnet --exporter torchscript
    python benchmarks/prune.py [--models resnet50.ts,mobilenetv2.ts,concatnet.ts] [--ratio 0.5] [--multiple 8]
                               [--runs 100] [--threads 1] [--out benchmarks/RESULTS-prune.md]

For each model, all after ``-O2``: the dense model; ``prune-channels`` at ``--ratio``; the pruned model quantized
to int8 (target ort, 8 random calibration samples); and 90% unstructured weight sparsity (shapes unchanged). Latency:
onnxruntime CPU, all optimizations, ``--threads`` threads, the variants run in turn (A, B, C, D, A, ...), the
median of ``--runs`` runs each; speed-ups are ratios to the dense model.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import graphopt  # noqa: E402
from graphopt.prune import layer_costs, prune_channels, prune_weights  # noqa: E402
from graphopt.quantize import quantize_model  # noqa: E402
from graphopt.tools import runtime  # noqa: E402
from graphopt.tools.summary import initializer_bytes  # noqa: E402

MODELS = HERE / "models"


def latency(protos: dict, runs: int, threads: int) -> dict[str, float]:
    """Median ms per variant, the variants run in turn (A, B, C, A, B, C, ...) on the same inputs."""
    sessions = {k: runtime.session(p, threads=threads) for k, p in protos.items()}
    feeds = runtime.make_inputs(next(iter(sessions.values())), batch=1)
    results = runtime.measure_latency(list(sessions.values()), feeds, warmup=3, runs=runs)
    return {k: r.median_ms for k, r in zip(sessions, results, strict=True)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50.ts,mobilenetv2.ts,concatnet.ts")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--multiple", type=int, default=8)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "RESULTS-prune.md"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    lines = [
        "# Pruning: MACs, parameters and latency",
        "",
        f"`python benchmarks/prune.py --models {args.models} --ratio {args.ratio} --multiple {args.multiple} "
        f"--runs {args.runs} --threads {args.threads}`",
        "",
        "All variants start from the `-O2` model. Latency: onnxruntime CPU, all optimizations, "
        f"{args.threads} thread(s), median of {args.runs} runs, the variants run in turn (A, B, C, D, A, ...).",
        "",
        "| model | variant | GMACs | MACs ratio | params MB | prune s | ms | speed-up |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    checks: list[str] = []
    for name in [m for m in args.models.split(",") if m]:
        src = MODELS / f"{name}.onnx"
        if not src.is_file():
            print(f"{src}: missing; run benchmarks/export_models.py first", file=sys.stderr)
            return 2
        dense = graphopt.optimize(src, level=2)
        dense_proto = dense.to_onnx()
        dense_macs = sum(c.macs or 0 for c in layer_costs(dense).values())
        rows = {"dense": (dense_proto, dense_macs, initializer_bytes(dense) / 1e6, 0.0)}

        model = graphopt.optimize(src, level=2)
        t0 = time.perf_counter()
        report = prune_channels(model, args.ratio, multiple=args.multiple)
        seconds = time.perf_counter() - t0
        key = f"prune-channels {args.ratio}"
        rows[key] = (model.to_onnx(), report.macs_after, report.param_bytes_after / 1e6, seconds)
        calib = [runtime.make_inputs(runtime.session(rows[key][0]), seed=i) for i in range(8)]
        quantize_model(model, calib, "ort", {"cache": False})
        rows[f"{key} + int8"] = (model.to_onnx(), report.macs_after, initializer_bytes(model) / 1e6, seconds)

        sparse = graphopt.optimize(src, level=2)
        t0 = time.perf_counter()
        sparse_report = prune_weights(sparse, 0.9)
        rows["prune-weights 0.9"] = (
            sparse.to_onnx(),
            dense_macs,
            sparse_report.param_bytes_after / 1e6,
            time.perf_counter() - t0,
        )

        lat = latency({k: v[0] for k, v in rows.items()}, args.runs, args.threads)
        for k, (_, macs, mb, secs) in rows.items():
            line = (
                f"| {name} | {k} | {macs / 1e9:.3f} | {dense_macs / macs:.2f}x | {mb:.1f} | "
                f"{secs:.2f} | {lat[k]:.2f} | {lat['dense'] / lat[k]:.2f}x |"
            )
            lines.append(line)
            print(line, flush=True)
        pruned_mb, pruned_ms = rows[key][2], lat[key]
        checks.append(
            f"- {name}: {report.groups_pruned}/{report.groups} groups pruned ({report.carriers} with a carrier "
            f"channel for {report.carrier_readers} padded readers; left whole: {report.blocked or 'none'}); "
            f"parameters {rows['dense'][2]:.1f} -> {pruned_mb:.1f} MB "
            f"({'not larger' if pruned_mb <= rows['dense'][2] else 'LARGER'}), latency {lat['dense']:.2f} -> "
            f"{pruned_ms:.2f} ms ({'not slower' if pruned_ms <= lat['dense'] else 'SLOWER'})"
        )
        print(checks[-1], flush=True)
    lines += ["", "Channel pruning against the dense model (never larger, never slower):", "", *checks]
    lines += [
        "",
        "Unstructured sparsity zeroes weights without changing any shape; onnxruntime has no sparse kernels, so its "
        "latency stays that of the dense model (the row is there to show it).",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
