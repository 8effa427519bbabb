"""Int8 QDQ quantization: graphopt against onnxruntime's ``quantize_static``, side by side, one run.

    python benchmarks/export_models.py --only resnet50 --exporter torchscript   # -> benchmarks/models/resnet50.ts.onnx
    python benchmarks/quantize.py [--models resnet50.ts,...] [--calib 8] [--held 32] [--runs 30] [--repeat 5]
                                  [--threads 1] [--out benchmarks/RESULTS-quantize.md]

For each model: the fp32 original, onnxruntime's ``quantize_static`` (QDQ, per-channel int8 weights, uint8
activations, MinMax, after its ``quant_pre_process`` shape-inference step) and graphopt (``-O2`` then int8 for target
ort, with its default percentile calibration and with minmax like quantize_static), all calibrated on the same
``--calib`` random samples. Reported: quantization seconds, output error (relative L2 over all outputs, on the
calibration samples and on ``--held`` held-out samples), how many Conv/MatMul/Gemm nodes onnxruntime turned into
integer kernels, file size, and onnxruntime latency (its optimizations on, ``--threads`` intra-op threads): the median
of ``--runs`` runs per round, the rounds interleaving the models, and the median over ``--repeat`` rounds; speed-ups
are ratios of those medians to fp32.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import graphopt  # noqa: E402
from graphopt.quantize import FUSED_OPS, output_error, quantize_model  # noqa: E402
from graphopt.tools import runtime  # noqa: E402

MODELS = HERE / "models"


def feeds_for(path: Path, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    sess = runtime.session(path, optimization="disabled")
    return [runtime.make_inputs(sess, seed=seed + i, batch=1) for i in range(n)]


def ort_quantize_static(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        quantize_static(
            str(pre),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    return time.perf_counter() - t0


def graphopt_quantize(
    src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], method: str = "percentile"
) -> tuple[float, object]:
    t0 = time.perf_counter()
    model = graphopt.optimize(src, level=2)
    report = quantize_model(model, feeds, "ort", {"cache": False, "method": method})
    graphopt.save(model, dst)
    return time.perf_counter() - t0, report


def fused_share(path: Path) -> str:
    """Of the model's Conv/ConvTranspose/MatMul/Gemm nodes, how many onnxruntime ran as integer kernels."""
    import onnxruntime as ort

    model = onnx.load(path, load_external_data=False)
    linear = sum(1 for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm"))
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = os.path.join(tmp, "o.onnx")
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        opt = onnx.load(so.optimized_model_filepath, load_external_data=False)
    fused = sum(
        1
        for n in opt.graph.node
        if n.op_type in FUSED_OPS
        and n.op_type
        not in ("QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearAveragePool", "QLinearGlobalAveragePool")
    )
    float_left = sum(
        1
        for n in opt.graph.node
        if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedGemm", "FusedMatMul")
    )
    return f"{fused}/{linear} int8, {float_left} float"


def latency(paths: dict[str, Path], feeds: dict[str, np.ndarray], runs: int, repeat: int, threads: int) -> dict:
    sessions = {k: runtime.session(p, threads=threads) for k, p in paths.items()}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, feeds)
    rounds: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(repeat):
        for k, s in sessions.items():  # interleaved: each round runs every model
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feeds)
                times.append(time.perf_counter() - t0)
            rounds[k].append(statistics.median(times))
    return {k: statistics.median(v) for k, v in rounds.items()}


def coverage(names: list[str], n_calib: int, runs: int, threads: int) -> list[str]:
    """Quantize every model for both targets; whether it runs, its error, what got fused, TensorRT rule violations."""
    from graphopt.quantize.qdq_rules import check_tensorrt

    rows = [
        "| model | target | layers | int8 kernels (ort) | TensorRT rule violations | rel. error (held-out) "
        "| quantize s | fp32 ms | int8 ms | speed-up |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        src = MODELS / f"{name}.onnx"
        calib = feeds_for(src, n_calib, seed=0)
        held = feeds_for(src, n_calib, seed=1000)
        fp32 = runtime.session(src)
        ref = [fp32.run(None, f) for f in held]
        for target in ("ort", "tensorrt"):
            with tempfile.TemporaryDirectory() as tmp:
                dst = Path(tmp) / "q.onnx"
                t0 = time.perf_counter()
                try:
                    model = graphopt.optimize(src, level=2, target=target)  # -O2 for the runtime it is for
                    report = quantize_model(model, calib, target, {"cache": False})
                    graphopt.save(model, dst)
                except graphopt.GraphoptError as exc:
                    rows.append(f"| {name} | {target} | - | failed: {exc} | | | | | | |")
                    print(f"{name:24} {target:8} FAILED {exc}", flush=True)
                    continue
                seconds = time.perf_counter() - t0
                sess = runtime.session(dst)
                err = output_error(ref, [sess.run(None, f) for f in held])[0]
                kernels = fused_share(dst) if target == "ort" else "-"
                violations = len(check_tensorrt(onnx.load(dst))) if target == "tensorrt" else "-"
                lat = latency({"fp32": src, "int8": dst}, calib[0], runs, 3, threads) if target == "ort" else None
                ms = (
                    f"{lat['fp32'] * 1000:.2f} | {lat['int8'] * 1000:.2f} | {lat['fp32'] / lat['int8']:.2f}x"
                    if lat
                    else "- | - | -"
                )
                rows.append(
                    f"| {name} | {target} | {len(report.layers)} | {kernels} | {violations} | {err:.4f} | "
                    f"{seconds:.1f} | {ms} |"
                )
                print(rows[-1], flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50.ts")
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--held", type=int, default=32)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--coverage",
        default="",
        help="comma-separated models (or 'all' in benchmarks/models) to quantize for both targets and run",
    )
    ap.add_argument("--out", default=str(HERE / "RESULTS-quantize.md"))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        src = MODELS / f"{name}.onnx"
        if not src.is_file():
            print(f"{src}: missing; run benchmarks/export_models.py first", file=sys.stderr)
            return 2
        calib = feeds_for(src, args.calib, seed=0)
        held = feeds_for(src, args.held, seed=1000)
        with tempfile.TemporaryDirectory() as tmp:
            paths = {"fp32": src}
            seconds: dict[str, float | None] = {"fp32": None}
            paths["quantize_static"] = Path(tmp) / "ort.onnx"
            seconds["quantize_static"] = ort_quantize_static(src, paths["quantize_static"], calib)
            reports = {}
            for method in ("percentile", "minmax"):
                key = f"graphopt {method}"
                paths[key] = Path(tmp) / f"graphopt-{method}.onnx"
                seconds[key], reports[key] = graphopt_quantize(src, paths[key], calib, method)
            outs = {}
            for k, p in paths.items():
                sess = runtime.session(p)
                outs[k] = ([sess.run(None, f) for f in calib], [sess.run(None, f) for f in held])
            lat = latency(paths, calib[0], args.runs, args.repeat, args.threads)
            for k, p in paths.items():
                err_c = output_error(outs["fp32"][0], outs[k][0])[0]
                err_h = output_error(outs["fp32"][1], outs[k][1])[0]
                rows.append(
                    {
                        "model": name,
                        "tool": k,
                        "seconds": seconds[k],
                        "err_calib": err_c,
                        "err_held": err_h,
                        "int8": fused_share(p) if k != "fp32" else "-",
                        "mb": p.stat().st_size / 1e6,
                        "ms": lat[k] * 1000,
                        "speedup": lat["fp32"] / lat[k],
                    }
                )
                r = rows[-1]
                print(
                    f"{name:16} {k:20} quantize {r['seconds'] or 0:6.2f}s  err calib {err_c:.4f} held {err_h:.4f}  "
                    f"{r['int8']:>22}  {r['mb']:7.1f} MB  {r['ms']:8.2f} ms  x{r['speedup']:.2f}",
                    flush=True,
                )
            for key, report in reports.items():
                print(
                    f"  {key}: {report.fused_count}/{len(report.layers)} quantized layers run as integer kernels; "
                    f"{report.reduce_range_reason}"
                )
    lines = [
        "# Int8 quantization: graphopt vs onnxruntime quantize_static",
        "",
        f"`python benchmarks/quantize.py --models {args.models} --calib {args.calib} --held {args.held} "
        f"--runs {args.runs} "
        f"--repeat {args.repeat} --threads {args.threads}"
        + (f" --coverage {args.coverage}`" if args.coverage else "`"),
        "",
        f"Calibration: {args.calib} random samples (seed 0); held-out: {args.held} more (seed 1000). Error: "
        "relative L2 of the outputs against fp32. Latency: onnxruntime CPU, all optimizations, "
        f"{args.threads} thread(s), median of {args.runs} runs per round, median of {args.repeat} interleaved rounds.",
        "",
        "| model | tool | quantize s | rel. error (calib) | rel. error (held-out) | Conv/MatMul/Gemm | MB | ms "
        "| speed-up vs fp32 |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        secs = f"{r['seconds']:.2f}" if r["seconds"] is not None else "-"
        lines.append(
            f"| {r['model']} | {r['tool']} | {secs} | {r['err_calib']:.4f} | {r['err_held']:.4f} | {r['int8']} | "
            f"{r['mb']:.1f} | {r['ms']:.2f} | {r['speedup']:.2f}x |"
        )
    if args.coverage:
        names = (
            sorted(p.name[: -len(".onnx")] for p in MODELS.glob("*.onnx"))
            if args.coverage == "all"
            else args.coverage.split(",")
        )
        lines += [
            "",
            "## Every benchmark model, both targets",
            "",
            f"`--coverage {args.coverage}`: -O2 then int8 (default percentile calibration) on {args.calib} random "
            f"samples; error on {args.calib} held-out samples; latency (target ort only) median of {args.runs} runs "
            f"x 3 interleaved rounds at {args.threads} thread(s).",
            "",
            *coverage(names, args.calib, args.runs, args.threads),
        ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
