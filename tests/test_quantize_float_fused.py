"""A layer the quantizer leaves float (the per-layer choice's, the accuracy guard's) that sits between a
DequantizeLinear on each input and a QuantizeLinear on its output is no float island under onnxruntime: its QDQ
fusion runs an Add, Mul or Concat there as QLinearAdd, QLinearMul or QLinearConcat. The report says so for those
(``QuantReport.float_fused``: the graph's structure, and onnxruntime's optimized graph agreeing) and only for those."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.cli import main
from graphopt.core.onnx_io import from_proto
from graphopt.quantize import driver
from graphopt.quantize.choice import Choice
from graphopt.quantize.qdq_rules import runs_as_integer
from graphopt.quantize.report import QuantReport


def _cancelling_add(path: Path) -> Path:
    """x -> Conv c1, Conv c2 (about -0.9 times c1's weights) -> Add ``add`` -> Conv c3 -> y. The sum is a tenth of
    each input: int8 at the inputs' scale loses too much, so the per-layer choice keeps the Add float, between the
    int8 Convs."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (-0.9 * w1 + rng.standard_normal(w1.shape).astype(np.float32) * 0.003).astype(np.float32)
    w3 = (rng.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32)
    node = helper.make_node
    graph = helper.make_graph(
        [
            node("Conv", ["x", "w1"], ["a"], name="c1", pads=[1] * 4),
            node("Conv", ["x", "w2"], ["b"], name="c2", pads=[1] * 4),
            node("Add", ["a", "b"], ["s"], name="add"),
            node("Conv", ["s", "w3"], ["y"], name="c3", pads=[1] * 4),
        ],
        "cancel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _ran(path: Path, tmp_path: Path) -> dict[str, str]:
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "ran.onnx")
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return {n.name: n.op_type for n in onnx.load(tmp_path / "ran.onnx").graph.node}


def test_a_float_add_between_qdq_pairs_is_reported_as_the_integer_op_onnxruntime_runs(tmp_path, capsys) -> None:
    src, out, html = _cancelling_add(tmp_path / "m.onnx"), tmp_path / "q.onnx", tmp_path / "r.html"
    args = ["optimize", str(src), "-o", str(out), "--quantize", "int8", "--calib-random", "4", "--calib-cache", "off"]
    assert main([*args, "--json", "--report", str(html)]) == 0
    q = json.loads(capsys.readouterr().out)["quantization"]
    assert {c["name"]: c["mode"] for c in q["choices"]}["add"] == "float"
    assert _ran(out, tmp_path)["add"] == "QLinearAdd"  # what onnxruntime does with it
    assert q["float_fused"] == {"add": "QLinearAdd"}
    assert not any("kept float" in w for w in q["warnings"]), q["warnings"]  # no "float island" in the speed note
    assert "QLinearAdd (DequantizeLinear in, QuantizeLinear out)" in html.read_text()
    assert main([*args, "-q"]) == 0
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "1 float layer onnxruntime runs on integers all the same" in text and "add as QLinearAdd" in text


def _qdq_add(*, float_input: bool = False, second_reader: bool = False, output: bool = False) -> onnx.ModelProto:
    """x -> Q -> DQ (twice) -> Add -> Q -> DQ -> y, variants: one Add input float, the Add's output also read by a
    Relu, the Add's output a graph output."""
    node = helper.make_node
    nodes = [
        node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        node("DequantizeLinear", ["xq", "s", "z"], ["a"]),
        node("QuantizeLinear", ["x2", "s", "z"], ["x2q"]),
        node("DequantizeLinear", ["x2q", "s", "z"], ["b"]),
        node("Add", ["a", "x2" if float_input else "b"], ["sum"], name="add"),
        node("QuantizeLinear", ["sum", "s", "z"], ["sq"]),
        node("DequantizeLinear", ["sq", "s", "z"], ["y"]),
    ]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]
    if second_reader:
        nodes.append(node("Relu", ["sum"], ["r"]))
        outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4]))
    if output:
        outs.append(helper.make_tensor_value_info("sum", TensorProto.FLOAT, [1, 4]))
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "x2")],
        outs,
        [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(3, np.uint8), "z")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("variant", "want"),
    [({}, "QLinearAdd"), ({"float_input": True}, None), ({"second_reader": True}, None), ({"output": True}, None)],
    ids=["qdq", "float-input", "second-reader", "graph-output"],
)
def test_runs_as_integer_reads_the_structure_and_onnxruntime_agrees(tmp_path, variant, want) -> None:
    proto = _qdq_add(**variant)
    add = next(n for n in from_proto(proto).graph if n.name == "add")
    assert runs_as_integer(add) == want
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    assert (_ran(path, tmp_path)["add"] == "QLinearAdd") == (want is not None)


def test_speed_note_counts_no_fused_float_layer_as_a_float_island() -> None:
    report = QuantReport("ort", "percentile", 99.999, 1, False, None, False, "", True)
    report.speedup = 0.79
    report.choices = [Choice("a", "Add", "float", "x"), Choice("b", "MatMul", "float", "y")]
    report.float_fused = {"a": "QLinearAdd"}
    note = driver.speed_note(report)
    assert note is not None and "1 layer kept float (each a float island" in note
    report.float_fused = {"a": "QLinearAdd", "b": "QLinearMul"}
    assert "kept float" not in (driver.speed_note(report) or "")
