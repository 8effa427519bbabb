"""Hardening of int8 quantization, calibration data, bench and the CLI (issue 14) and old-opset quantization
(issue 16): every bad input is one line and exit code 2, every accepted input gives a model onnxruntime runs."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt import runtime
from graphopt.onnx_io import from_proto
from graphopt.quantize import output_error, quantize_model, sqnr_db


def _conv_model(opset: int, depthwise: bool, seed: int = 0, spread: float = 1.0) -> onnx.ModelProto:
    """Two 3x3 Conv + bias + Relu layers at ``opset``; ``spread`` scales the second layer's weight channels apart
    (and a constant Mul scales its output channels back)."""
    rng = np.random.default_rng(seed)
    c = 16
    g = c if depthwise else 1
    w2 = rng.standard_normal((c, c // g, 3, 3)) / 3
    w2 = w2 * np.geomspace(1.0, spread, c).reshape(c, 1, 1, 1)
    inits = [
        numpy_helper.from_array((rng.standard_normal((c, 3, 3, 3)) / 5).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal(c) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array(w2.astype(np.float32), "w2"),
        numpy_helper.from_array((rng.standard_normal(c) * 0.1).astype(np.float32), "b2"),
        numpy_helper.from_array((1.0 / np.geomspace(1.0, spread, c)).reshape(c, 1, 1).astype(np.float32), "unspread"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4, group=g, name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Mul", ["r2", "unspread"], ["y"], name="unspread"),  # every channel counts alike in y
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _quantize(proto: onnx.ModelProto, target: str, **config):
    model = from_proto(proto)
    report = quantize_model(model, _feeds(4, 1), target, {"cache": False, **config})
    return model.to_onnx(), report


def _held_out_sqnr(a: onnx.ModelProto, b: onnx.ModelProto) -> float:
    """SQNR of ``b`` against ``a`` under onnxruntime on inputs calibration never saw."""
    feeds = _feeds(3, 99)
    sa, sb = runtime.session(a), runtime.session(b)
    rel, _ = output_error([sa.run(None, f) for f in feeds], [sb.run(None, f) for f in feeds])
    return sqnr_db(rel)


# --------------------------------------------------------------------------------------------------------------------
# issue 16: opset < 13 with a bias (the per-tensor path crashed), opset upgrade, the SQNR floor
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["ort", "tensorrt"])
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
@pytest.mark.parametrize("opset", [10, 11, 12, 13])
def test_old_opset_conv_with_bias_quantizes_runs_and_stays_close(opset, depthwise, target) -> None:
    proto = _conv_model(opset, depthwise)
    quantized, report = _quantize(proto, target)
    assert report.opset_upgraded == ((opset, 13) if opset < 13 else None)
    assert report.per_channel
    assert {x.name for x in report.layers} == {"conv1", "conv2"}
    assert _held_out_sqnr(proto, quantized) > 25.0
    assert not report.warnings


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
@pytest.mark.parametrize("opset", [10, 11, 12])
def test_old_opset_kept_takes_the_per_tensor_path_with_an_int32_bias_that_agrees(opset, depthwise, target) -> None:
    if opset == 10 and target == "tensorrt":
        pytest.skip("onnxruntime's own bias quantization inserts Round, which opset 10 lacks")
    proto = _conv_model(opset, depthwise)
    quantized, report = _quantize(proto, target, upgrade_opset=False)
    assert report.opset_upgraded is None and not report.per_channel
    assert quantized.opset_import[0].version == opset
    assert any("one scale per tensor" in w for w in report.warnings)
    for n in quantized.graph.node:
        assert "axis" not in {a.name for a in n.attribute} or n.op_type not in ("QuantizeLinear", "DequantizeLinear")
    if target == "ort":  # the bias is int32 with the scale input scale x the one weight scale
        inits = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
        biases = [k for k, v in inits.items() if v.dtype == np.int32 and k.endswith("_quantized")]
        assert len(biases) == 2 and all(inits[k.replace("_quantized", "_scale")].ndim == 0 for k in biases)
    assert _held_out_sqnr(proto, quantized) > 20.0


def test_output_sqnr_below_the_floor_warns_and_names_the_worst_layer() -> None:
    # channels 4 decades apart share one activation scale: the small ones round to zero, and the output's constant
    # Mul makes them count as much as the large ones
    proto = _conv_model(12, True, spread=1e4)
    quantized, report = _quantize(proto, "ort", upgrade_opset=False, method="minmax")
    assert report.sqnr_db < 15.0
    low = [w for w in report.warnings if "below 15 dB" in w]
    assert len(low) == 1 and "conv2" in low[0]
    assert low[0].index("conv2") < low[0].index("conv1")  # worst first
