"""fuse-gelu under onnxruntime: the written-out exact GELU (every placement of the 0.5, Div by sqrt(2) or Mul by
1/sqrt(2), the inputs of each Mul/Add either way round) becomes one Gelu node with the same outputs; wrong constants,
intermediate values read elsewhere and target tensorrt below opset 20 are left alone; an -O2 run keeps the 0.5 out of
the next Conv; the int8 graph onnxruntime optimizes runs one Gelu kernel per GELU."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SQRT2 = np.float32(math.sqrt(2.0))


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, optimize: bool = False) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _c(name: str, value: float, shape: tuple[int, ...] = ()) -> onnx.TensorProto:
    return numpy_helper.from_array(np.full(shape, value, np.float32), name)


Nodes = tuple[list[onnx.NodeProto], list[onnx.TensorProto]]


def _gelu_nodes(
    x: str, out: str, *, half: int = 0, mul_form: bool = False, swap: int = 0, consts: dict[str, float] | None = None
) -> Nodes:
    """The five-node erf GELU of ``x`` into ``out``: ``half`` 0 applies the 0.5 last, 1 to x first, 2 to
    (1 + erf); ``mul_form`` writes x * (1/sqrt2) instead of x / sqrt2; ``swap`` bits swap the inputs of the scaling
    Mul (1), the Add (2), the two Muls (4, 8)."""
    k = {"r": float(SQRT2), "one": 1.0, "half": 0.5, **(consts or {})}
    if mul_form and "r" not in (consts or {}):
        k["r"] = float(np.float32(1.0 / math.sqrt(2.0)))
    inits = [_c("k_r", k["r"]), _c("k_one", k["one"]), _c("k_half", k["half"])]

    def pair(a: str, b: str, bit: int) -> list[str]:
        return [b, a] if swap & bit else [a, b]

    mk = helper.make_node
    nodes = [
        mk("Mul", pair(x, "k_r", 1), ["g_s"]) if mul_form else mk("Div", [x, "k_r"], ["g_s"]),
        helper.make_node("Erf", ["g_s"], ["g_e"]),
        helper.make_node("Add", pair("g_e", "k_one", 2), ["g_p"]),
    ]
    if half == 0:
        nodes += [mk("Mul", pair(x, "g_p", 4), ["g_m"]), mk("Mul", pair("g_m", "k_half", 8), [out])]
    elif half == 1:
        nodes += [mk("Mul", pair(x, "k_half", 4), ["g_m"]), mk("Mul", pair("g_m", "g_p", 8), [out])]
    else:
        nodes += [mk("Mul", pair("g_p", "k_half", 4), ["g_m"]), mk("Mul", pair(x, "g_m", 8), [out])]
    return nodes, inits


def _model(shape: list[int], opset: int = 14, **kw) -> onnx.ModelProto:
    nodes, inits = _gelu_nodes("x", "y", **kw)
    g = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter((n.domain or "", n.op_type) for n in model.graph.node)


def _x(shape: list[int], seed: int = 0) -> np.ndarray:
    return np.asarray(np.random.default_rng(seed).standard_normal(shape) * 3, dtype=np.float32)


@SETTINGS
@given(
    shape=st.lists(st.integers(1, 5), min_size=0, max_size=4),
    half=st.integers(0, 2),
    mul_form=st.booleans(),
    swap=st.integers(0, 15),
    opset=st.sampled_from([11, 14, 20]),
)
def test_gelu_variants_become_one_node(shape: list[int], half: int, mul_form: bool, swap: int, opset: int) -> None:
    model = _model(shape, opset, half=half, mul_form=mul_form, swap=swap)
    out = graphopt.optimize(model, passes="fuse-gelu")
    ops = _ops(out)
    assert sum(ops.values()) == 1
    if opset >= 20:
        assert ops[("", "Gelu")] == 1
        assert helper.get_attribute_value(out.graph.node[0].attribute[0]) == b"none"
    else:
        assert ops[("com.microsoft", "Gelu")] == 1
        assert any(o.domain == "com.microsoft" for o in out.opset_import)
    x = _x(shape, seed=swap)
    want, got = _run(model, {"x": x})[0], _run(out, {"x": x})[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "consts",
    [{"r": 1.41}, {"r": 2.0}, {"one": 0.999}, {"half": 0.25}, {"half": 0.5000001}, {"r": float(SQRT2 * 1.001)}],
)
def test_wrong_constants_left_alone(consts: dict[str, float]) -> None:
    model = _model([2, 3], consts=consts)
    out = graphopt.optimize(model, passes="fuse-gelu")
    assert _ops(out)[("", "Erf")] == 1 and len(out.graph.node) == 5


def test_sqrt2_within_float32_rounding_matches() -> None:
    # one float32 ulp off sqrt(2) is within rounding of the exact value: still the GELU
    r = float(np.nextafter(SQRT2, np.float32(2)))
    out = graphopt.optimize(_model([4], consts={"r": r}), passes="fuse-gelu")
    assert len(out.graph.node) == 1


@pytest.mark.parametrize("inner", ["g_s", "g_e", "g_p", "g_m"])
def test_extra_reader_left_alone(inner: str) -> None:
    nodes, inits = _gelu_nodes("x", "y")
    nodes.append(helper.make_node("Neg", [inner], ["z"]))
    g = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        inits,
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    out = graphopt.optimize(model, passes="fuse-gelu")
    assert _ops(out)[("", "Erf")] == 1 and not any(n.op_type == "Gelu" for n in out.graph.node)


def test_intermediate_graph_output_left_alone() -> None:
    nodes, inits = _gelu_nodes("x", "y")
    g = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("g_e", TensorProto.FLOAT, None)],
        inits,
    )  # fmt: skip
    out = graphopt.optimize(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), passes="fuse-gelu")
    assert not any(n.op_type == "Gelu" for n in out.graph.node)


def test_constant_that_broadcasts_x_up_left_alone() -> None:
    nodes, _ = _gelu_nodes("x", "y")
    inits = [_c("k_r", float(SQRT2), (1, 1)), _c("k_one", 1.0), _c("k_half", 0.5)]
    g = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    out = graphopt.optimize(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]), passes="fuse-gelu")
    assert len(out.graph.node) == 5


def test_double_left_alone() -> None:
    model = _model([2, 2])
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    out = graphopt.optimize(model, passes="fuse-gelu")
    assert len(out.graph.node) == 5


def test_tensorrt_below_opset_20_left_alone_and_at_20_standard_op() -> None:
    out = graphopt.optimize(_model([2, 3], 17), passes="fuse-gelu", target="tensorrt")
    assert len(out.graph.node) == 5
    out = graphopt.optimize(_model([2, 3], 20), passes="fuse-gelu", target="tensorrt")
    assert _ops(out) == Counter({("", "Gelu"): 1})


def _conv_gelu_conv(opset: int = 14) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    nodes, inits = _gelu_nodes("a", "b")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]), *nodes,
             helper.make_node("Conv", ["b", "w2", "b2"], ["y"])]  # fmt: skip
    inits += [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.3, "w2"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "b2"),
    ]
    g = helper.make_graph(
        nodes, "cgc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits,
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_o2_fuses_before_the_half_folds_into_the_next_conv() -> None:
    model = _conv_gelu_conv()
    report: list = []
    out = graphopt.optimize(model, report=report)
    assert _ops(out) == Counter({("", "Conv"): 2, ("com.microsoft", "Gelu"): 1})
    x = _x([1, 3, 16, 16])
    np.testing.assert_allclose(_run(out, {"x": x})[0], _run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    # target tensorrt at opset 14: the five nodes stay (the 0.5 may still fold into the Conv)
    trt = graphopt.optimize(model, target="tensorrt")
    assert not any(n.op_type == "Gelu" for n in trt.graph.node)


def test_int8_graph_runs_one_gelu_kernel_per_gelu(tmp_path) -> None:
    model = _conv_gelu_conv()
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    out = graphopt.optimize(
        model, quantize="int8", calibration=calib,
        quantize_options={"cache": False, "measure_speed": False},
    )  # fmt: skip
    ops = _ops(out)
    assert ops[("com.microsoft", "Gelu")] == 1 and ops[("", "Erf")] == 0
    # the Gelu stays float between quantized convolutions: one DequantizeLinear in, a QuantizeLinear out (its output
    # is typed by graphopt's shape rule for com.microsoft Gelu, so the Conv reading it is a candidate)
    prod = {o: n for n in out.graph.node for o in n.output}
    gelu = next(n for n in out.graph.node if n.op_type == "Gelu")
    assert prod[gelu.input[0]].op_type == "DequantizeLinear"
    assert [n.op_type for n in out.graph.node if gelu.output[0] in n.input] == ["QuantizeLinear"]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(out.SerializeToString(), so, providers=["CPUExecutionProvider"])
    opt = onnx.load(str(tmp_path / "opt.onnx"))
    kinds = Counter(n.op_type for n in opt.graph.node)
    assert kinds["Gelu"] == 1 and kinds["Erf"] == 0 and kinds["Div"] == 0 and kinds["QLinearConv"] == 2
    x = calib[0]["x"]
    want, got = _run(model, {"x": x})[0], _run(out, {"x": x})[0]
    sqnr = 10 * np.log10(np.sum(want**2) / np.sum((want - got) ** 2))
    assert sqnr > 20
