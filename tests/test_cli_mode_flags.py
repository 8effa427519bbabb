"""A flag the chosen lossy mode would ignore is a one-line error, not a silent no-op (found when the int8, int4 and
precision modes were merged: each branch checked only its own flags)."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphopt.cli import main

CNN = Path(__file__).resolve().parents[1] / "fixtures" / "cnn.onnx"


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--quantize", "int4", "--smooth-alpha", "0.3"], "--smooth-alpha does not apply to --quantize int4"),
        (["--quantize", "int4", "--max-error", "0.1"], "--max-error does not apply to --quantize int4"),
        (["--quantize", "int4", "--exclude-op", "Gemm"], "--exclude-op does not apply to --quantize int4"),
        (["--quantize", "int4", "--calib-shape", "x=1x3x32x32"], "--calib-shape needs --calib-random"),
        (["--quantize", "int8", "--calib-random", "2", "--block-size", "64"], "--block-size does not apply"),
        (["--quantize", "int8-dynamic", "--quantize-embeddings", "4"], "--quantize-embeddings does not apply"),
        (["--quantize", "int8-dynamic", "--smooth-alpha", "0.3"], "--smooth-alpha does not apply"),
        (["--int4-method", "gptq"], "--int4-method needs --quantize int4"),
        (["--precision", "fp16", "--calib-random", "2", "--max-error", "0.1"], "--max-error does not apply"),
        (["--precision", "fp16", "--exclude", "x"], "--exclude does not apply to --precision fp16"),
        (["--precision", "fp16", "--quantize", "int8"], "give either --precision or --quantize, not both"),
        # the calibration flags every mode takes are checked in one place
        (["--precision", "fp16", "--calib-random", "0"], "--calib-random must be at least 1"),
        (["--quantize", "int4", "--calib-data", "/nonexistent/calib"], "calibration data directory not found"),
        (["--quantize", "int8-dynamic", "--calib-data", ".", "--calib-random", "2"], "not both"),
        (["--quantize", "int8", "--calib-data", "/nonexistent/calib"], "calibration data directory not found"),
    ],
)
def test_a_flag_the_mode_ignores_is_refused(tmp_path, capsys, flags, needle) -> None:
    out = tmp_path / "out.onnx"
    rc = main(["optimize", str(CNN), "-o", str(out), "-q", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("graphopt: error:") and needle in err[0], err
    assert not out.exists()
