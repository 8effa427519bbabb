"""``a * Sigmoid(b)`` (SiLU, squeeze-excitation gates) between quantized tensors runs as onnxruntime integer kernels
(target ort): ``transform._sigmoid_gates`` quantizes the gate's output and its Sigmoid's output (parameters from
``b``'s: ``[0, sigmoid(max b)]``), so onnxruntime fuses QLinearSigmoid and QLinearMul instead of running
DQ -> Sigmoid -> Mul -> Q in float. Checked under onnxruntime: the kernels it runs (its optimized graph), the island
against numpy on every uint8 code, the whole net's error against what the quantizer reports, and what is left alone.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.quantize import output_error, quantize_model
from graphopt.quantize.analysis import Params, plan
from graphopt.tools import runtime


def _effnet_block(seed: int, silu_reader: bool = False, sigmoid_output: bool = False) -> onnx.ModelProto:
    """Conv -> SiLU -> depthwise Conv -> SiLU -> squeeze-excitation (ReduceMean, Conv, SiLU, Conv, Sigmoid, Mul) ->
    1x1 Conv: EfficientNet's MBConv block as timm exports it (SiLU as ``x * Sigmoid(x)``). ``silu_reader``: the
    first SiLU's Sigmoid output is read by a second node too; ``sigmoid_output``: it is also a graph output."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, arr, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(arr).astype(dtype), name))
        return name

    c, r = 8, 4

    def conv(x, y, w, b, **attrs):
        nodes.append(helper.make_node("Conv", [x, const(f"w_{y}", w * 0.5), const(f"b_{y}", b * 0.1)], [y], **attrs))

    def silu(x, y):
        nodes.append(helper.make_node("Sigmoid", [x], [f"{y}_sig"], name=f"{y}_Sigmoid"))
        nodes.append(helper.make_node("Mul", [x, f"{y}_sig"], [y], name=f"{y}_Mul"))

    conv("input", "c0", rng.standard_normal((c, 3, 3, 3)), rng.standard_normal(c), pads=[1] * 4)
    silu("c0", "s0")
    outputs = []
    if silu_reader:
        nodes.append(helper.make_node("Add", ["s0_sig", "s0_sig"], ["twice"]))
        outputs.append(helper.make_tensor_value_info("twice", TensorProto.FLOAT, [1, c, 12, 12]))
    if sigmoid_output:
        outputs.append(helper.make_tensor_value_info("s0_sig", TensorProto.FLOAT, [1, c, 12, 12]))
    conv("s0", "c1", rng.standard_normal((c, 1, 3, 3)), rng.standard_normal(c), pads=[1] * 4, group=c)
    silu("c1", "s1")
    nodes.append(helper.make_node("ReduceMean", ["s1"], ["m"], axes=[2, 3], keepdims=1))
    conv("m", "e0", rng.standard_normal((r, c, 1, 1)), rng.standard_normal(r))
    silu("e0", "e1")
    conv("e1", "e2", rng.standard_normal((c, r, 1, 1)), rng.standard_normal(c))
    nodes.append(helper.make_node("Sigmoid", ["e2"], ["gate"], name="gate_Sigmoid"))
    nodes.append(helper.make_node("Mul", ["s1", "gate"], ["se"], name="se_Mul"))
    conv("se", "out", rng.standard_normal((4, c, 1, 1)), rng.standard_normal(4))
    graph = helper.make_graph(
        nodes,
        "mbconv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 12, 12]), *outputs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _feeds(seed: int, n: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(n)]


def _fused_ops(model: onnx.ModelProto, tmp_path) -> list[str]:
    path = str(tmp_path / "optimized.onnx")
    runtime.session(model, optimized_path=path)
    return [n.op_type for n in onnx.load(path).graph.node]


def _quantized(proto: onnx.ModelProto, feeds, **cfg):
    model = from_proto(graphopt.optimize(proto, level=2))
    report = quantize_model(model, feeds, "ort", {"cache": False, "fallback": False, **cfg})
    return model.to_onnx(), report


def test_silu_and_gates_are_no_layers_of_their_own() -> None:
    model = from_proto(_effnet_block(0))
    infer_shapes(model)
    p = plan(model.graph, "ort")
    assert sorted(n.name for n in p.gates) == ["e1_Mul", "s0_Mul", "s1_Mul", "se_Mul"]
    assert not any(n.op_type == "Mul" for n in p.nodes)  # the layer choice never sees them
    assert {"s0", "s1", "e1", "se"} <= set(p.tensors)  # their outputs are measured
    assert plan(model.graph, "tensorrt").gates == []


@pytest.mark.parametrize("choice", ["auto", "static"])
def test_mbconv_block_runs_silu_and_the_gate_as_integer_kernels(tmp_path, choice) -> None:
    proto = _effnet_block(1)
    feeds = _feeds(2)
    quantized, report = _quantized(proto, feeds, choice=choice)
    fused = _fused_ops(quantized, tmp_path)
    # every Sigmoid and Mul runs on integers: 4 QLinearSigmoid, 4 QLinearMul (3 SiLU, the gate), no float island;
    # the squeeze-excitation's ReduceMean reads a quantized value: QLinearGlobalAveragePool
    assert fused.count("QLinearSigmoid") == 4 and fused.count("QLinearMul") == 4, fused
    assert not {"Sigmoid", "Mul", "ReduceMean", "QuickGelu"} & set(fused), fused
    assert "QLinearGlobalAveragePool" in fused, fused
    # the error the quantizer reports is the written model's, under onnxruntime
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(quantized).run(None, f) for f in feeds]
    rel = output_error(ref, got)[0]
    assert abs(rel - report.error_rel) < 1e-6
    assert rel < 0.1


def test_integer_gates_cost_little_accuracy_against_float_gates() -> None:
    """The same block with the gates kept float (the transform's option off): the integer form's output error on
    held-out feeds stays within a small margin of the float gates' (its only new rounding is the Sigmoid's output,
    a step of at most 1/255, and the SiLU output before the gate)."""
    from graphopt.quantize import driver

    proto = _effnet_block(3)
    feeds, held = _feeds(4), _feeds(5, 6)
    ref = [runtime.session(proto).run(None, f) for f in held]
    errs = {}
    for gates in (True, False):
        model = from_proto(graphopt.optimize(proto, level=2))
        old = driver.transform.Options.__dataclass_fields__["integer_sigmoid_gates"].default
        driver.transform.Options.__dataclass_fields__["integer_sigmoid_gates"].default = gates
        try:
            quantize_model(model, feeds, "ort", {"cache": False, "fallback": False, "choice": "static"})
        finally:
            driver.transform.Options.__dataclass_fields__["integer_sigmoid_gates"].default = old
        got = [runtime.session(model.to_onnx()).run(None, f) for f in held]
        errs[gates] = output_error(ref, got)[0]
    assert errs[True] < 0.1 and errs[True] <= errs[False] * 1.5 + 0.005, errs


def _silu_island(px: Params, py: Params) -> onnx.ModelProto:
    """x -> Q/DQ(px) -> x * Sigmoid(x) -> Q/DQ(py), written by graphopt's transform (a Conv before and after so that
    the plan quantizes both ends)."""
    ident = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "one")
    nodes = [
        helper.make_node("Conv", ["input", "one"], ["x"]),
        helper.make_node("Sigmoid", ["x"], ["h"]),
        helper.make_node("Mul", ["x", "h"], ["y"]),
        helper.make_node("Conv", ["y", "one"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "silu",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 1, 256])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, 1, 256])],
        [ident],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _dq(q: np.ndarray, p: Params) -> np.ndarray:
    return ((q.astype(np.float64) - p.zero_point) * np.float32(p.scale)).astype(np.float32)


@pytest.mark.parametrize("lo,hi", [(-6.0, 6.0), (-0.5, 9.0), (-12.0, 1.0)])
def test_silu_island_is_silu_with_its_sigmoid_rounded_to_its_grid(tmp_path, lo, hi) -> None:
    """Every uint8 code of the input through the written graph under onnxruntime (fused: QLinearSigmoid and
    QLinearMul; and unfused, the graph as written) against numpy: the SiLU of the dequantized input with the Sigmoid
    rounded to a step of ``sigmoid(max) / 255``, then the output's rounding."""
    from graphopt.quantize.analysis import plan as make_plan
    from graphopt.quantize.transform import apply

    proto = _silu_island(Params(1.0, 0, False), Params(1.0, 0, False))
    model = from_proto(proto)
    infer_shapes(model)
    px = Params.for_range(lo, hi, False)
    x = _dq(np.arange(256), px)
    silu = x.astype(np.float64) / (1.0 + np.exp(-x.astype(np.float64)))
    ranges = {"input": (lo, hi), "x": (lo, hi), "y": (float(silu.min()), float(silu.max())), "out": (-1.0, 1.0)}
    ranges["out"] = ranges["y"]
    apply(model.graph, make_plan(model.graph, "ort"), ranges, 17)
    written = model.to_onnx()
    assert _fused_ops(written, tmp_path).count("QLinearSigmoid") == 1
    py = Params.for_range(*ranges["y"], False)
    sig_hi = 1.0 / (1.0 + np.exp(-float(x.max())))
    step = sig_hi / 255.0
    for level in ("all", "disabled"):
        got = runtime.session(written, optimization=level).run(None, {"input": x.reshape(1, 1, 1, 256)})[0].ravel()
        # the Sigmoid's rounding (half a step, times |x|), then the output's own (half a step; a step in all)
        tol = np.abs(x) * step * 0.5 + py.scale * 1.001 + 1e-6
        assert np.all(np.abs(got - silu) <= tol), (level, np.abs(got - silu).max())


@pytest.mark.parametrize("case", ["reader", "graph-output", "exclude-op", "exclude-name"])
def test_gates_left_alone(case) -> None:
    """A Sigmoid read by another node too, or that is a graph output, makes no gate (its Mul stays an ordinary layer
    for the choice); nor does a Sigmoid or a Mul the user excludes (the excluded Mul stays a float Mul)."""
    from graphopt.quantize.analysis import Selection

    proto = _effnet_block(6, silu_reader=case == "reader", sigmoid_output=case == "graph-output")
    sel = Selection()
    if case == "exclude-op":
        sel = Selection(exclude_ops=frozenset({"Sigmoid"}))
    if case == "exclude-name":
        sel = Selection(exclude_names=frozenset({"s1_Mul"}))
    model = from_proto(proto)
    infer_shapes(model)
    p = plan(model.graph, "ort", sel)
    names = {n.name for n in p.gates}
    if case in ("reader", "graph-output"):
        assert "s0_Mul" not in names and {"s1_Mul", "se_Mul", "e1_Mul"} <= names
        assert "s0_Mul" in {n.name for n in p.nodes}
    elif case == "exclude-op":
        assert not names
    else:
        assert "s1_Mul" not in names and "s1_Mul" not in {n.name for n in p.nodes}
        cfg = {"exclude": ["s1_Mul"]}
        quantized, report = _quantized(proto, _feeds(7), **cfg)
        assert "s1_Mul" in {n.name for n in quantized.graph.node if n.op_type == "Mul"}
        ref = [runtime.session(proto).run(None, f) for f in _feeds(7)]
        got = [runtime.session(quantized).run(None, f) for f in _feeds(7)]
        assert abs(output_error(ref, got)[0] - report.error_rel) < 1e-6
