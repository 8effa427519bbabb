"""Help strings say the defaults plainly, name the positionals, and the examples cover the common tasks."""

from __future__ import annotations

import subprocess
import sys


def _help(*argv: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "graphopt", *argv, "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return " ".join(out.stdout.split())


def test_optimize_help_states_defaults_and_the_output_flag() -> None:
    text = _help("optimize")
    assert text.startswith("usage: graphopt optimize IN -o OUT [options] graphopt optimize IN --in-place [options]")
    assert "(required, unless --in-place)" in text
    assert "accuracy_level; 4: int8 activations (default: 4)" in text
    assert "inserting a Mul (default: mul)" in text and "Mul (default)" not in text
    assert "static: all static (default: auto)" in text and "error (default);" not in text


def test_top_level_examples_cover_int4_dynamic_int8_and_comparing_models() -> None:
    text = _help()
    for example in ("--quantize int4", "--quantize int8-dynamic", "graphopt diff model.onnx model.opt.onnx"):
        assert example in text, example


def test_bench_and_diff_help() -> None:
    bench = _help("bench")
    assert "seed of the random inputs (default: 0)" in bench and "optimization level (default: all)" in bench
    diff = _help("diff")
    assert "usage: graphopt diff" in diff and diff.split("usage:")[1].split("List")[0].strip().endswith("A B")
    assert "A the first model" in diff and "B the second model" in diff and "removed (only in A)" in diff


def test_pass_descriptions_read_plainly() -> None:
    import graphopt

    desc = graphopt.list_passes()["drop-zero-rnn-states"].description
    assert "all zeros" in desc and "(the default)" not in desc
