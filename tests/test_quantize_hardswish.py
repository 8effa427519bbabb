"""HardSigmoid and HardSwish between quantized tensors run as onnxruntime integer kernels (target ort).

``transform._integer_hard_sigmoids`` writes ``HardSigmoid(x)`` as an Add of ``beta/alpha`` whose uint8 output
saturates at the clip's bounds, read back with the scale 1/255, and ``HardSwish(x)`` as ``x`` times that: onnxruntime
fuses them into QLinearAdd and QLinearMul. The island is checked under onnxruntime (fused and unfused) against numpy
on every uint8 code of the input, and whole nets against their float model.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.ir import Graph, Value
from graphopt.core.onnx_io import from_proto
from graphopt.quantize import output_error, quantize_model
from graphopt.quantize.analysis import Params, hard_swish_idioms
from graphopt.quantize.transform import _insert_qdq, _integer_hard_sigmoids
from graphopt.tools import runtime


def _hard_sigmoid(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return np.clip(alpha * x + beta, 0.0, 1.0)


def _island(op: str, alpha: float, beta: float, px: Params, py: Params) -> onnx.ModelProto:
    """x -> Q/DQ(px) -> op -> Q/DQ(py) -> y, the op rewritten by ``_integer_hard_sigmoids``."""
    attrs = {"alpha": alpha, "beta": beta} if op == "HardSigmoid" else {}
    node = helper.make_node(op, ["x"], ["y"], name="act", **attrs)
    graph = helper.make_graph(
        [node, helper.make_node("Identity", ["y"], ["out"], name="read")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [256])],  # y itself is no graph output
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [256])],
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    g: Graph = model.graph
    x: Value = g.inputs[0]
    y: Value = next(n for n in g if n.op_type == "Identity").inputs[0]
    params = {id(x): px, id(y): py}
    quantized = _integer_hard_sigmoids(g, params, [x, y])
    assert not any(n.op_type == op for n in g), "the op was not rewritten"
    for v in quantized:
        _insert_qdq(g, v, params[id(v)])
    return model.to_onnx()


def _dq(q: np.ndarray, p: Params) -> np.ndarray:
    return ((q.astype(np.float64) - p.zero_point) * np.float32(p.scale)).astype(np.float32)


def _q(x: np.ndarray, p: Params) -> np.ndarray:
    return np.clip(np.rint(x / np.float32(p.scale)) + p.zero_point, 0, 255)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["HardSigmoid", "HardSwish"]),
    st.floats(0.02, 2.0),
    st.floats(-3.0, 3.0),
    st.floats(0.005, 0.2),
    st.integers(0, 255),
)
def test_island_is_the_op_rounded_to_a_step_of_1_over_255(op, alpha, beta, sx, zx) -> None:
    if op == "HardSwish":
        alpha, beta = 1.0 / 6.0, 0.5
    px = Params(sx, zx, False)
    codes = np.arange(256)
    x = _dq(codes, px)  # every value the quantized input can take
    hs = _hard_sigmoid(x.astype(np.float64), alpha, beta)
    if op == "HardSigmoid":
        py = Params(1.0 / 255.0, 0, False)
        want = hs
        tol = 0.5 / 255.0 + 1e-6
    else:
        want = x * hs
        lo, hi = min(want.min(), 0.0), max(want.max(), 0.0)
        py = Params.for_range(lo, hi, False)
        # the HardSigmoid factor rounded (half a step of 1/255 times |x|), then the output's own rounding
        tol = np.abs(x) * 0.5 / 255.0 + py.scale * 1.001 + 1e-6
    model = _island(op, alpha, beta, px, py)
    for level in ("all", "disabled"):
        got = runtime.session(model, optimization=level).run(None, {"x": x})[0]
        exact = _dq(_q(want, py), py)  # the op computed in float, then quantized as the float island would
        assert np.all(np.abs(got - exact) <= tol + py.scale * (op == "HardSigmoid")), (level, np.abs(got - exact).max())
        assert np.all(np.abs(got - want) <= tol + py.scale), level


def _hardswish_net(seed: int, opset: int = 17) -> onnx.ModelProto:
    """Conv -> HardSwish -> depthwise Conv -> HardSwish, a squeeze-excitation gate (GlobalAveragePool, Conv,
    HardSigmoid, Mul), a 1x1 Conv: the PP-LCNet / MobileNetV3 block."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name))
        return name

    c = 8
    nodes.append(
        helper.make_node(
            "Conv",
            ["input", const("w0", rng.standard_normal((c, 3, 3, 3)) * 0.4), const("b0", rng.standard_normal(c) * 0.1)],
            ["c0"],
            pads=[1] * 4,
        )
    )
    nodes.append(helper.make_node("HardSwish", ["c0"], ["h0"]))
    nodes.append(
        helper.make_node(
            "Conv",
            ["h0", const("w1", rng.standard_normal((c, 1, 3, 3)) * 0.4), const("b1", rng.standard_normal(c) * 0.1)],
            ["c1"],
            pads=[1] * 4,
            group=c,
        )
    )
    nodes.append(helper.make_node("HardSwish", ["c1"], ["h1"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["h1"], ["g"]))
    nodes.append(
        helper.make_node(
            "Conv",
            ["g", const("w2", rng.standard_normal((c, c, 1, 1)) * 0.4), const("b2", rng.standard_normal(c) * 0.1)],
            ["s"],
        )
    )
    nodes.append(helper.make_node("HardSigmoid", ["s"], ["gate"], alpha=1.0 / 6.0, beta=0.5))
    nodes.append(helper.make_node("Mul", ["h1", "gate"], ["se"]))
    nodes.append(helper.make_node("Conv", ["se", const("w3", rng.standard_normal((4, c, 1, 1)) * 0.4)], ["out"]))
    graph = helper.make_graph(
        nodes,
        "hswish",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 12, 12])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _fused_ops(model: onnx.ModelProto, tmp_path) -> list[str]:
    path = str(tmp_path / "optimized.onnx")
    runtime.session(model, optimized_path=path)
    return [n.op_type for n in onnx.load(path).graph.node]


def test_hard_swish_net_runs_hard_swish_and_the_gate_as_integer_kernels(tmp_path) -> None:
    proto = _hardswish_net(0)
    rng = np.random.default_rng(1)
    feeds = [{"input": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(4)]
    model = from_proto(graphopt.optimize(proto, level=2))
    report = quantize_model(model, feeds, "ort", {"cache": False, "choice": "static"})
    quantized = model.to_onnx()
    ops = [n.op_type for n in quantized.graph.node]
    assert "HardSwish" not in ops and "HardSigmoid" not in ops
    fused = _fused_ops(quantized, tmp_path)
    assert fused.count("QLinearMul") >= 3 and fused.count("QLinearAdd") >= 3, fused  # 2 HardSwish + the gate's Mul
    assert "HardSigmoid" not in fused and "Mul" not in fused, fused
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(quantized).run(None, f) for f in feeds]
    rel = output_error(ref, got)[0]
    assert rel < 0.05 and abs(rel - report.error_rel) < 1e-6


@pytest.mark.parametrize("seed,percentile", [(3, 99.0), (4, 99.9), (5, 90.0)])
def test_percentile_keeps_whichever_ranges_give_the_lower_output_error(seed, percentile) -> None:
    """The percentile method's check: the written model is the better of the clipped and the full ranges."""
    proto = graphopt.optimize(_hardswish_net(seed), level=2)
    rng = np.random.default_rng(seed)
    feeds = [{"input": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(4)]
    feeds[0]["input"][0, :, 3, 3] = 9.0  # one outlier pixel: the tails the percentile cuts
    errors = {}
    cfg = {"cache": False, "percentile": percentile, "choice": "static", "fallback": False}
    for method in ("percentile", "minmax"):
        m = from_proto(proto)
        errors[method] = quantize_model(m, feeds, "ort", {**cfg, "method": method, "clip_check": False})
    assert errors["percentile"].error_rel != errors["minmax"].error_rel  # the ranges differ
    model = from_proto(proto)
    report = quantize_model(model, feeds, "ort", cfg)
    best = min(errors, key=lambda k: (errors[k].error_rel, k != "percentile"))
    assert report.method == best
    assert report.error_rel == errors[best].error_rel
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(model.to_onnx()).run(None, f) for f in feeds]
    assert abs(output_error(ref, got)[0] - report.error_rel) < 1e-6  # the written model is the one measured


def _idiom_net(clip_attrs: bool, div: bool, swap: bool) -> onnx.ModelProto:
    """Conv -> x * Clip(x + 3, 0, 6) / 6 (or * 1/6) -> Conv: an opset-11 PaddlePaddle hard-swish."""
    rng = np.random.default_rng(2)
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.8).astype(np.float32), "w0"),
        numpy_helper.from_array((rng.standard_normal((4, 4, 1, 1)) * 0.5).astype(np.float32), "w1"),
        numpy_helper.from_array(np.array([3.0], np.float32), "three"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
        numpy_helper.from_array(np.array(1.0 / 6.0, np.float32), "sixth"),
    ]
    clip = (
        helper.make_node("Clip", ["a"], ["r"], min=0.0, max=6.0)
        if clip_attrs
        else helper.make_node("Clip", ["a", "zero", "six"], ["r"])
    )
    nodes = [
        helper.make_node("Conv", ["input", "w0"], ["x"], pads=[1] * 4),
        helper.make_node("Add", ["three", "x"] if swap else ["x", "three"], ["a"]),
        clip,
        helper.make_node("Mul", ["r", "x"] if swap else ["x", "r"], ["m"]),
        helper.make_node("Div", ["m", "six"], ["y"]) if div else helper.make_node("Mul", ["m", "sixth"], ["y"]),
        helper.make_node("Conv", ["y", "w1"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "idiom",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 10, 10])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 10, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10 if clip_attrs else 13)])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.booleans(), st.booleans(), st.integers(0, 2**31 - 1))
def test_hard_swish_idiom_becomes_hard_sigmoid_times_x_with_the_same_outputs(clip_attrs, div, swap, seed) -> None:
    proto = _idiom_net(clip_attrs, div, swap)
    model = from_proto(proto)
    assert hard_swish_idioms(model.graph) == 1
    rewritten = model.to_onnx()
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("HardSigmoid") == 1 and "Clip" not in ops and "Div" not in ops and ops.count("Mul") == 1
    x = (np.random.default_rng(seed).standard_normal((1, 3, 10, 10)) * 4).astype(np.float32)
    want = runtime.session(proto).run(None, {"input": x})[0]
    got = runtime.session(rewritten).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_hard_swish_idiom_is_left_alone_when_a_part_has_another_reader() -> None:
    proto = _idiom_net(False, True, False)
    proto.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4, 10, 10]))
    model = from_proto(proto)
    assert hard_swish_idioms(model.graph) == 0


def test_hard_swish_idiom_net_quantizes_to_integer_kernels(tmp_path) -> None:
    proto = _idiom_net(False, True, False)
    rng = np.random.default_rng(3)
    feeds = [{"input": rng.standard_normal((1, 3, 10, 10)).astype(np.float32)} for _ in range(4)]
    model = from_proto(graphopt.optimize(proto, level=2))
    quantize_model(model, feeds, "ort", {"cache": False})  # the automatic layer choice: the Mul is no layer of its own
    fused = _fused_ops(model.to_onnx(), tmp_path)
    assert "QLinearAdd" in fused and "QLinearMul" in fused, fused
    assert not {"Clip", "Div", "Mul", "HardSigmoid"} & set(fused), fused
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(model.to_onnx()).run(None, f) for f in feeds]
    assert output_error(ref, got)[0] < 0.05


@pytest.mark.parametrize("dtype", [TensorProto.DOUBLE, TensorProto.FLOAT16])
def test_hard_swish_idiom_is_left_alone_outside_float32(dtype) -> None:
    """onnxruntime's CPU HardSigmoid is float32 only: a float64 idiom rewritten would not run (and the new values are
    typed float32)."""
    proto = _idiom_net(False, True, False)
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    for init in proto.graph.initializer:
        if init.name in ("three", "zero", "six", "sixth"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np_type), init.name))
    nodes = list(proto.graph.node)
    nodes[1].input[:] = ["xd" if i == "x" else i for i in nodes[1].input]
    nodes[3].input[:] = ["xd" if i == "x" else i for i in nodes[3].input]
    nodes[4].output[:] = ["yd"]
    nodes.insert(1, helper.make_node("Cast", ["x"], ["xd"], to=dtype))
    nodes.insert(6, helper.make_node("Cast", ["yd"], ["y"], to=TensorProto.FLOAT))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    runtime.session(proto)  # the float model runs
    model = from_proto(proto)
    assert hard_swish_idioms(model.graph) == 0
    runtime.session(model.to_onnx())


def test_guard_candidates_are_written_as_the_final_model(tmp_path) -> None:
    """The accuracy guard and the SQNR floor's search measure ``_with_modes`` candidates: they must get the final
    model's transform options (integer HardSwish, the static-float-output layers), not a positional mix-up of them."""
    from graphopt.core.shape_inference import infer_shapes
    from graphopt.quantize import analysis, driver, transform
    from graphopt.quantize import calibration as calib

    proto = _hardswish_net(0)
    rng = np.random.default_rng(1)
    feeds = [{"input": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(2)]
    model = from_proto(proto)
    model.graph.name_unnamed_nodes()
    infer_shapes(model)
    sel = analysis.Selection()
    the_plan = analysis.plan(model.graph, "ort", sel)
    ranges = calib.collect(model, the_plan.tensors, feeds, cache=False).ranges("minmax", 99.999, symmetric=False)
    layers = [n.name for n in the_plan.nodes if n.op_type not in analysis.SHARE]
    last = [n.name for n in model.graph if n.op_type == "Conv"][-1]
    for modes in ({name: "static" for name in layers}, {name: "static" for name in layers} | {last: "float-out"}):
        modes = {k: "static-float-output" if m == "float-out" else m for k, m in modes.items()}
        out = driver._with_modes(
            model.to_onnx(), "ort", sel, ranges, transform.Options(), modes, driver.QuantizeConfig(), False
        )
        ops = [n.op_type for n in out.graph.node]
        assert "HardSwish" not in ops and "HardSigmoid" not in ops, ops
        writer = next(n for n in out.graph.node if "out" in n.output)
        # the float output: no QuantizeLinear -> DequantizeLinear after the last Conv
        assert (writer.op_type == "Conv") == (modes[last] == "static-float-output"), writer.op_type


def test_percentile_check_logs_the_kept_runs_records_once(caplog) -> None:
    """The percentile check runs the pipeline twice: the kept run's log records (not only its report.warnings: the
    opset conversion, a per-layer SQNR it could not read, ...) are logged once, the other run's not at all."""
    import logging

    proto = _idiom_net(True, True, False)  # opset 10: converted to 13 for per-channel Q/DQ
    rng = np.random.default_rng(3)
    feeds = [{"input": rng.standard_normal((1, 3, 10, 10)).astype(np.float32)} for _ in range(4)]
    model = from_proto(proto)
    with caplog.at_level(logging.INFO, logger="graphopt.quantize"):
        report = quantize_model(model, feeds, "ort", {"cache": False, "choice": "static", "fallback": False})
    assert report.opset_upgraded == (10, 13)
    converted = [r for r in caplog.records if "converted to 13" in r.getMessage()]
    assert len(converted) == 1, [r.getMessage() for r in caplog.records]
    for note in report.warnings:
        assert sum(r.getMessage() == note for r in caplog.records) == 1, note


def test_percentile_check_switch_is_said_and_its_second_run_is_no_cache_hit(tmp_path) -> None:
    """The percentile check's minmax run calibrates the same model on the same data as the percentile run: it reads
    back the cache entry the percentile run had just written. "From cache" is only for an entry that existed before
    the run; the switch to minmax is said with its reason."""
    proto = graphopt.optimize(_hardswish_net(5), level=2)
    rng = np.random.default_rng(5)
    feeds = [{"input": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(4)]
    feeds[0]["input"][0, :, 3, 3] = 9.0  # one outlier pixel: the percentile 90 clips it, minmax wins
    cfg = {"cache": str(tmp_path / "calib.npz"), "percentile": 90.0, "choice": "static", "fallback": False}
    first = quantize_model(from_proto(proto), feeds, "ort", {**cfg, "measure_speed": False})
    assert first.method == "minmax"
    assert not first.cached and not first.to_dict()["calibration_cached"]
    assert first.method_reason and "percentile 90" in first.method_reason
    assert first.to_dict()["method_reason"] == first.method_reason
    again = quantize_model(from_proto(proto), feeds, "ort", {**cfg, "measure_speed": False})
    assert again.cached and again.method == "minmax"  # now the entry existed before the run
