"""Whole-process wall time of the command lines: `graphopt optimize` against the `onnxsim` and `onnxslim` CLIs.

    pip install onnxsim onnxslim                       # a CLI that is not installed is reported and skipped
    python benchmarks/cli_wall.py MODEL [MODEL ...] [--rounds 5] [--baseline PYTHON]

Each round runs every tool once as a new process (interpreter start, imports, load, optimize, save), the tools in an
order that rotates every round; the median per tool is printed with graphopt's ratio to the faster of the two others.
This is what a user waits for at the shell; `anchors.py` times load + optimize + save inside one process instead.
``--baseline PYTHON`` adds ``PYTHON -m graphopt optimize`` (another checkout's interpreter, e.g. main's venv) as a
tool of its own, interleaved with the rest, and prints this graphopt's time as a fraction of it (an A/B of a change).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def commands(model: Path, out: Path, baseline: str | None = None) -> dict[str, list[str]]:
    cmds = {
        "graphopt": ["graphopt", "optimize", str(model), "-o", str(out / "graphopt.onnx"), "-q"],
        "onnxsim": ["onnxsim", str(model), str(out / "onnxsim.onnx")],
        "onnxslim": ["onnxslim", str(model), str(out / "onnxslim.onnx")],
    }
    if baseline:
        cmds["baseline"] = [baseline, "-m", "graphopt", "optimize", str(model), "-o", str(out / "baseline.onnx"), "-q"]
    return cmds


def wall_times(model: Path, rounds: int, baseline: str | None = None) -> dict[str, float | str]:
    """Median seconds per tool, or the reason a tool has no time."""
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(model.resolve(), Path(tmp), baseline)
        result: dict[str, float | str] = {t: "not installed" for t, c in cmds.items() if shutil.which(c[0]) is None}
        names = [t for t in cmds if t not in result]
        times: dict[str, list[float]] = {t: [] for t in names}
        for r in range(rounds):
            for tool in names[r % len(names) :] + names[: r % len(names)]:
                if tool in result:
                    continue
                t0 = time.perf_counter()
                # run in the temporary folder: `python -m` puts the current folder first on sys.path, and a checkout's
                # own graphopt/ there would shadow the baseline's
                proc = subprocess.run(cmds[tool], capture_output=True, text=True, cwd=tmp)
                if proc.returncode != 0:
                    lines = (proc.stderr or proc.stdout).strip().splitlines()
                    result[tool] = f"failed: {lines[-1][:80] if lines else proc.returncode}"
                    continue
                times[tool].append(time.perf_counter() - t0)
        for tool in names:
            if tool not in result:
                result[tool] = statistics.median(times[tool])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", metavar="PYTHON", help="also time PYTHON -m graphopt (another checkout's venv)")
    args = ap.parse_args()
    missing = [m for m in args.models if not m.is_file()]
    if missing:
        print(f"cli_wall.py: {missing[0]}: no such file", file=sys.stderr)
        return 2
    for model in args.models:
        res = wall_times(model, args.rounds, args.baseline)
        cells = [f"{t} {v:.2f} s" if isinstance(v, float) else f"{t} {v}" for t, v in res.items()]
        others = [v for t, v in res.items() if t in ("onnxsim", "onnxslim") and isinstance(v, float)]
        g, b = res.get("graphopt"), res.get("baseline")
        ratio = f"  ratio {g / min(others):.2f}" if isinstance(g, float) and others else ""
        if isinstance(g, float) and isinstance(b, float):
            ratio += f"  of baseline {g / b:.2f}"
        print(f"{model.name}: {', '.join(cells)}{ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
