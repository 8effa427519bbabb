"""The pass table of `graphopt optimize`: it fits the console's width (dropping the less important columns at 80),
never breaks a pass name, and shows the rules that fired with at most the top declined reasons (--json has all)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from graphopt.cli.render import _pass_result, _print_report
from graphopt.engine.pass_manager import PassReport, PassStats

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _report() -> tuple[PassReport, dict]:
    noop = PassStats(
        "eliminate-noop",
        seconds=0.001,
        runs=1,
        changed=True,
        nodes_delta=-2,
        counts={"noop-dropout": 1, "noop-identity": 1, "noop-flatten": 0},
        declines={"noop-flatten": {"input not of rank 2 or axis not 1": 1}},
    )
    steps = [PassStats("dce", runs=1), noop, PassStats("dedup-initializers", runs=1)]
    stats = [
        PassStats("fold-constants", runs=2),
        PassStats("cleanup", runs=1, changed=True, nodes_delta=-2, steps=steps),
    ]
    report = PassReport(stats=stats, iterations=2, nodes_before=22, nodes_after=20)
    summary = {
        "input": "model.onnx",
        "output": "m.onnx",
        "stages": [{"stage": "passes", "nodes_before": 22, "nodes_after": 20}],
        "level": 2,
        "nodes_written": 20,
        "bytes_before": 1000,
        "bytes_after": 900,
        "timing": {"load": 0.01},
    }
    return report, summary


def _table(width: int) -> list[str]:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    _print_report(console, *_report())
    return console.export_text().splitlines()


def test_at_80_columns_less_important_columns_go_and_pass_names_stay_whole() -> None:
    lines = _table(80)
    header = next(line for line in lines if "pass" in line and "result" in line)
    assert "ms" not in header.split() and "runs" not in header and "nodes +/-" in header
    assert all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    assert "cleanup/dedup-initializers" in text  # not folded into 'cleanup/dedup-ini' + 'tializers'
    assert "cleanup/eliminate-noop" in text


def test_a_wide_console_keeps_every_column() -> None:
    header = next(line for line in _table(160) if "pass" in line and "result" in line)
    assert all(c in header for c in ("runs", "changed", "nodes +/-", "ms"))


def test_result_shows_fired_rules_and_the_top_declined_reasons_only() -> None:
    noop = _report()[0].stats[1].steps[1]
    assert _pass_result(noop) == (
        "noop-dropout x1, noop-identity x1; not fired: noop-flatten: input not of rank 2 or axis not 1 x1"
    )
    many = PassStats(
        "p",
        counts={"a": 3},
        declines={"a": {"r1": 1, "r2": 5, "r3": 2}, "b": {"q": 1}, "c": {"q": 4, "s": 1}},
    )
    assert _pass_result(many) == "a x3 (declined: r2 x5, r3 x2, +1 more); not fired: c: q x4, b: q x1, +1 more"
    assert "x0" not in _pass_result(many)


def test_piped_output_honours_columns(tmp_path: Path) -> None:
    env = dict(os.environ, COLUMNS="100")
    out = subprocess.run(
        [sys.executable, "-m", "graphopt", "optimize", str(FIXTURES / "cnn.onnx"), "-o", str(tmp_path / "o.onnx")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert max(len(line) for line in out.stdout.splitlines()) <= 100
    env.pop("COLUMNS")
    js = subprocess.run(
        [sys.executable, "-m", "graphopt", "optimize", str(FIXTURES / "cnn.onnx"), "-o", str(tmp_path / "o.onnx"),
         "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    steps = [st for p in json.loads(js.stdout)["passes"] for st in p["steps"] if st["name"] == "eliminate-noop"]
    assert steps[0]["declines"] == {"noop-flatten": {"input not of rank 2 or axis not 1": 1}}  # all of it in --json
