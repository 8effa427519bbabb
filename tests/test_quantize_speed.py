"""The int8 model's measured speed against fp32 (target ort): in the report, the --json summary, the CLI summary
line and the HTML report, and a warning when it is below ``driver.SLOW_SPEEDUP``. Pass/fail never depends on the
figure itself: the warning path is forced through the threshold constant."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx

import graphopt
from graphopt.core.onnx_io import from_proto
from graphopt.quantize import driver, quantize_model
from graphopt.quantize.choice import Choice
from graphopt.quantize.report import QuantReport

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SLOW = "x the speed of fp32 under onnxruntime"


def _feeds(n: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(n)]


def _quantize(target: str = "ort", **config) -> QuantReport:
    proto = graphopt.optimize(onnx.load(FIXTURES / "cnn.onnx"), level=2)
    return quantize_model(from_proto(proto), _feeds(), target, {"cache": False, **config})


def test_speedup_is_measured_once_on_the_kept_model_and_warns_below_the_threshold(monkeypatch) -> None:
    calls = []
    real = driver._speedup

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "_speedup", counted)
    monkeypatch.setattr(driver, "SLOW_SPEEDUP", math.inf)  # any measured figure is below: the warning must fire
    report = _quantize()  # percentile: two pipelines (clip check), one measurement of the model kept
    assert len(calls) == 1
    assert report.speedup is not None and report.speedup > 0 and math.isfinite(report.speedup)
    notes = [w for w in report.warnings if SLOW in w]
    assert len(notes) == 1 and f"{report.speedup:.2f}x" in notes[0] and "1 thread" in notes[0]
    monkeypatch.setattr(driver, "SLOW_SPEEDUP", 0.0)
    report = _quantize(method="minmax")  # one pipeline: measured in _finish
    assert len(calls) == 2 and report.speedup is not None
    assert not any(SLOW in w for w in report.warnings)


def test_speed_measurement_can_be_turned_off_and_is_not_made_for_tensorrt(monkeypatch) -> None:
    monkeypatch.setattr(driver, "_speedup", lambda *a, **k: (_ for _ in ()).throw(AssertionError("measured")))
    report = _quantize(measure_speed=False)
    assert report.speedup is None and "speed" not in report.seconds
    assert _quantize("tensorrt").speedup is None


def test_speed_note_names_the_layers_kept_float() -> None:
    report = QuantReport("ort", "percentile", 99.999, 1, False, None, False, "", True)
    assert driver.speed_note(report) is None  # not measured: no note
    report.speedup = 1.5
    assert driver.speed_note(report) is None
    report.speedup = 0.79
    report.choices = [Choice("a", "MatMul", "float", "x"), Choice("b", "MatMul", "static", "y")]
    report.kept_float = ["c"]
    note = driver.speed_note(report)
    assert note is not None and "0.79x the speed of fp32" in note and "2 layers kept float" in note
    assert "\n" not in note


def test_cli_json_summary_and_html_carry_the_speedup(tmp_path, capsys) -> None:
    from graphopt.cli import main

    out, html = tmp_path / "q.onnx", tmp_path / "r.html"
    args = ["optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--quantize", "int8", "--calib-cache", "off"]
    args += ["--calib-random", "2"]
    assert main([*args, "--json"]) == 0
    q = json.loads(capsys.readouterr().out)["quantization"]
    assert isinstance(q["speedup"], float) and q["speedup"] > 0  # a real onnxruntime run of both models
    assert main([*args, "--report", str(html)]) == 0
    printed = capsys.readouterr().out
    assert "x fp32 under onnxruntime (1 thread" in printed
    assert "fp32 under onnxruntime (1 thread" in html.read_text()
