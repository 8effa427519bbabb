"""What the command line and the HTML report say about a lossy mode: per layer the mode, the reason and the measured
error (the same facts as --json), a title that fits the mode (int8, int4, fp16), int4's own summary wording, and its
warnings on the terminal."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CNN = FIXTURES / "cnn.onnx"


def _mlp(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((128, 32)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])],
        [w1, w2],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _section(page: str, title: str) -> str:
    assert f"<h2>{title}</h2>" in page, title
    return page.split(f"<h2>{title}</h2>")[1].split("</section>")[0]


def test_int8_report_shows_every_layers_mode_reason_and_error_as_json_does(tmp_path, capsys) -> None:
    html = tmp_path / "r.html"
    rc, out, _ = _run(
        capsys, "optimize", str(CNN), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8", "--calib-random", "2",
        "--calib-cache", "off", "--exclude-op", "Gemm", "--report", str(html), "--json",
    )  # fmt: skip
    assert rc == 0
    q = json.loads(out)["quantization"]
    section = _section(html.read_text(), "Int8 quantization")
    table = section.split("Layers: mode and why")[1]
    for layer in q["layers"]:
        row = table.split(f"<code>{escape(layer['name'])}</code>")[1].split("</tr>")[0]
        assert f"<td>{escape(layer['mode'] or 'static')}</td>" in row and escape(layer["note"]) in row
        assert f"{layer['sqnr_db']:.1f}" in row
    gemm = table.split("<code>head/Gemm</code>")[1].split("</tr>")[0]
    assert "<td>float</td>" in gemm and "--exclude-op Gemm" in gemm


def test_int4_report_and_terminal_say_what_int4_did(tmp_path, capsys) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    html = tmp_path / "r.html"
    rc, out, err = _run(
        capsys, "optimize", str(model), "-o", str(tmp_path / "q.onnx"), "--quantize", "int4", "--int4-method", "gptq",
        "--calib-random", "2", "--block-size", "16", "--int8-layer", "fc2", "--report", str(html),
    )  # fmt: skip
    assert rc == 0
    # the summary in int4's words: the method, the blocks, the layers by bits; no int8 ranges
    assert "int4: 2 layers quantized (1 int4, 1 int8)" in out and "GPTQ" in out and "blocks of 16 along K" in out
    assert "ranges:" not in out and "per-channel" not in out
    section = _section(html.read_text(), "Int4 weight quantization")
    assert "Int8 quantization" not in html.read_text()
    fc1 = section.split("<code>fc1</code>")[1].split("</tr>")[0]
    fc2 = section.split("<code>fc2</code>")[1].split("</tr>")[0]
    assert "<td>int4</td>" in fc1 and "GPTQ, blocks of 16 along K" in fc1
    assert "<td>int8</td>" in fc2 and "--int8-layer" in fc2


def test_int4_warnings_reach_the_terminal_as_int8s_do(tmp_path, capsys) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    rc, out, err = _run(
        capsys, "optimize", str(model), "-o", str(tmp_path / "q.onnx"), "--quantize", "int4",
        "--layer-error-budget", "0.001",
    )  # fmt: skip
    assert rc == 0
    lines = [line for line in err.splitlines() if "8-bit by the layer error budget" in line]
    assert lines == ["graphopt: warning: 8-bit by the layer error budget: fc1, fc2"], err
    assert "output error not measured (no calibration data)" in out and "nan" not in out
    assert "int4: 2 layers quantized (2 int8)" in out


@pytest.mark.parametrize("target", ["tensorrt"])
def test_int4_opset_upgrade_says_why_in_int4_words(tmp_path, capsys, target) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    rc, out, _ = _run(
        capsys, "optimize", str(model), "-o", str(tmp_path / "q.onnx"), "--quantize", "int4", "--target", target
    )
    assert rc == 0
    assert "opset 17 -> 21 (onnx's version converter): blocked int4 DequantizeLinear (target tensorrt) needs it" in out


def test_precision_report_has_its_own_section_with_each_kept_node_and_why(tmp_path, capsys) -> None:
    html = tmp_path / "r.html"
    rc, out, _ = _run(
        capsys, "optimize", str(CNN), "-o", str(tmp_path / "h.onnx"), "--precision", "fp16", "--report", str(html),
        "--json",
    )  # fmt: skip
    assert rc == 0
    p = json.loads(out)["precision"]
    page = html.read_text()
    section = _section(page, "FP16 conversion")
    assert "Int8 quantization" not in page and p["kept_fp32"]
    assert f"{p['converted_nodes']} of {p['float_nodes']} float nodes run in fp16" in section
    for k in p["kept_fp32"]:
        row = section.split(f"<code>{escape(k['name'])}</code>")[1].split("</tr>")[0]
        assert "<td>fp32</td>" in row and escape(k["why"]) in row


def test_dynamic_int8_report_is_titled_for_its_mode(tmp_path, capsys) -> None:
    model = _mlp(tmp_path / "mlp.onnx")
    html = tmp_path / "r.html"
    rc, out, _ = _run(
        capsys, "optimize", str(model), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8-dynamic",
        "--calib-random", "2", "--report", str(html), "--json",
    )  # fmt: skip
    assert rc == 0
    section = _section(html.read_text(), "Int8 dynamic quantization")
    for layer in json.loads(out)["quantization"]["layers"]:
        row = section.split(f"<code>{escape(layer['name'])}</code>")[1].split("</tr>")[0]
        assert f"<td>{layer['mode']}</td>" in row and escape(layer["note"]) in row
