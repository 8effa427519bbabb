"""Whole-process wall time of the command lines: `graphopt optimize` against the `onnxsim` and `onnxslim` CLIs.

    pip install onnxsim onnxslim                       # a CLI that is not installed is reported and skipped
    python benchmarks/cli_wall.py MODEL [MODEL ...] [--rounds 5]

Each round runs every tool once as a new process (interpreter start, imports, load, optimize, save), the tools in an
order that rotates every round; the median per tool is printed with graphopt's ratio to the faster of the two others.
This is what a user waits for at the shell; `anchors.py` times load + optimize + save inside one process instead.
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


def commands(model: Path, out: Path) -> dict[str, list[str]]:
    return {
        "graphopt": ["graphopt", "optimize", str(model), "-o", str(out / "graphopt.onnx"), "-q"],
        "onnxsim": ["onnxsim", str(model), str(out / "onnxsim.onnx")],
        "onnxslim": ["onnxslim", str(model), str(out / "onnxslim.onnx")],
    }


def wall_times(model: Path, rounds: int) -> dict[str, float | str]:
    """Median seconds per tool, or the reason a tool has no time."""
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(model, Path(tmp))
        result: dict[str, float | str] = {t: "not installed" for t, c in cmds.items() if shutil.which(c[0]) is None}
        names = [t for t in cmds if t not in result]
        times: dict[str, list[float]] = {t: [] for t in names}
        for r in range(rounds):
            for tool in names[r % len(names) :] + names[: r % len(names)]:
                if tool in result:
                    continue
                t0 = time.perf_counter()
                proc = subprocess.run(cmds[tool], capture_output=True, text=True)
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
    args = ap.parse_args()
    missing = [m for m in args.models if not m.is_file()]
    if missing:
        print(f"cli_wall.py: {missing[0]}: no such file", file=sys.stderr)
        return 2
    for model in args.models:
        res = wall_times(model, args.rounds)
        cells = [f"{t} {v:.2f} s" if isinstance(v, float) else f"{t} {v}" for t, v in res.items()]
        others = [v for t, v in res.items() if t != "graphopt" and isinstance(v, float)]
        g = res.get("graphopt")
        ratio = f"  ratio {g / min(others):.2f}" if isinstance(g, float) and others else ""
        print(f"{model.name}: {', '.join(cells)}{ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
