"""Rewrites exact in real arithmetic only (``Rule(exact=False)``: fuse-gelu, fold-conv-bn, matmul-add-to-gemm...)
leave a subgraph alone when its output reaches a QuantizeLinear, where a last-bit difference of the fused kernel flips
whole int8 steps (smart-turn v3.2: -O2 moved the logits by 7.7e-4 relative through eight fused GELUs). -O2 on such a
QDQ graph must give bit-identical outputs under onnxruntime; the same rewrites still fire in a float graph (or where the
output is read only by float ops after the last QuantizeLinear)."""

from __future__ import annotations

import functools
import math
from collections import Counter

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.onnx_io import from_proto
from graphopt.patterns import FEEDS_QUANTIZER, Op, PatternError, Rule, Var, reaches_quantizer
from graphopt.testing.strategies import feeds, models
from tests.test_gelu import _gelu_nodes
from tests.test_gelu import _run as gelu_run

SHAPE = ["n", 64, 96]
IN_SCALE = 2.0**-24  # the GELU reads DequantizeLinear(int32): fine enough that its input can sit anywhere
OUT_STEP = 1 / 64


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], *, optimize: bool = True) -> list[np.ndarray]:
    """test_gelu's single-thread onnxruntime run, with onnxruntime's optimizations on by default here."""
    return gelu_run(model, feeds, optimize=optimize)


def _q(name: str, scale: float, zero: np.ndarray | None = None) -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
        numpy_helper.from_array(np.array(0, np.int8) if zero is None else zero, f"{name}_z"),
    ]


def _qdq_gelu(*, between: str = "", quantize_out: bool = True, opset: int = 14, **gelu) -> onnx.ModelProto:
    """xi (int32) -> DequantizeLinear -> erf GELU -> [between] -> QuantizeLinear -> DequantizeLinear -> y
    (``quantize_out`` False: the GELU's output is y, float). ``between``: "" nothing, "Reshape", "Transpose",
    "Identity", or "Add" (a float residual add of the GELU's input)."""
    mk = helper.make_node
    nodes, inits = _gelu_nodes("d", "g", **gelu)
    nodes = [mk("DequantizeLinear", ["xi", "qi_s", "qi_z"], ["d"]), *nodes]
    inits += _q("qi", IN_SCALE, np.array(0, np.int32)) + _q("qo", OUT_STEP)
    last = "g"
    if between == "Reshape":
        inits.append(numpy_helper.from_array(np.array([-1, 96], np.int64), "shape"))
        nodes.append(mk("Reshape", ["g", "shape"], ["b"]))
        last = "b"
    elif between in ("Transpose", "Identity"):
        nodes.append(mk(between, ["g"], ["b"], **({"perm": [0, 2, 1]} if between == "Transpose" else {})))
        last = "b"
    elif between == "Add":
        nodes.append(mk("Add", ["g", "d"], ["b"]))
        last = "b"
    if quantize_out:
        nodes += [
            mk("QuantizeLinear", [last, "qo_s", "qo_z"], ["q2"]),
            mk("DequantizeLinear", ["q2", "qo_s", "qo_z"], ["y"]),
        ]
    else:
        nodes.append(mk("Identity", [last], ["y"]))
    g = helper.make_graph(
        nodes, "qdq_gelu", [helper.make_tensor_value_info("xi", TensorProto.INT32, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def _gelu(x: float) -> float:
    return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))


@functools.cache
def _boundary_inputs() -> np.ndarray:
    """Inputs whose GELU lies within a few float32 ulps of a rounding boundary of the output step ((k + 1/2) *
    OUT_STEP): where a last-bit difference moves a whole int8 step. Found by bisection on the exact GELU, then the
    512 int32 codes around each root."""
    codes = []
    for k in range(-10, 127):
        t = (k + 0.5) * OUT_STEP
        if t <= -0.16:  # below the GELU's minimum (-0.17)
            continue
        lo, hi = (-0.75, 0.0) if t < 0 else (0.0, 10.0)
        for _ in range(80):
            mid = (lo + hi) / 2
            if (_gelu(mid) < t) == (t > 0):
                lo = mid
            else:
                hi = mid
        codes.extend(round(lo / IN_SCALE) + np.arange(-256, 256))
    a = np.array(codes, np.int32)
    return np.resize(a, -(-a.size // (64 * 96)) * 64 * 96).reshape(-1, 64, 96)


def _x(seed: int = 0) -> dict[str, np.ndarray]:
    """The boundary inputs and as many random ones (N(0, 2) in input units)."""
    b = _boundary_inputs()
    r = np.random.default_rng(seed).standard_normal(b.shape) * (2 / IN_SCALE)
    return {"xi": np.concatenate([b, r.astype(np.int32)])}


def _declines(report: list, rule: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for stats in report[0].stats:
        for s in [stats, *stats.steps]:
            for reason, n in s.declines.get(rule, {}).items():
                out[reason] = out.get(reason, 0) + n
    return out


def test_fused_gelu_flips_int8_steps_so_the_check_has_teeth() -> None:
    """The premise: fused onto the QDQ graph anyway, the Gelu kernel moves some int8 steps (so the tests below fail
    without the quantizer check)."""
    float_model = _qdq_gelu(quantize_out=False)
    fused = graphopt.optimize(float_model, passes="fuse-gelu")
    assert _ops(fused)["Gelu"] == 1
    # the fused graph with the QuantizeLinear/DequantizeLinear put back after the Gelu
    requant = onnx.ModelProto()
    requant.CopyFrom(fused)
    out = next(n for n in requant.graph.node if n.op_type == "Identity")
    out.output[0] = "g_fused"
    requant.graph.node.extend([
        helper.make_node("QuantizeLinear", ["g_fused", "qo_s", "qo_z"], ["q2"]),
        helper.make_node("DequantizeLinear", ["q2", "qo_s", "qo_z"], ["y"]),
    ])  # fmt: skip
    model = _qdq_gelu()
    x = _x()
    want, got = _run(float_model, x)[0], _run(fused, x)[0]
    assert not np.array_equal(want, got)  # the fused kernel rounds differently...
    want, got = _run(model, x)[0], _run(requant, x)[0]
    assert np.any(want != got)  # ...and moves int8 steps after a QuantizeLinear


@pytest.mark.parametrize("between", ["", "Reshape", "Transpose", "Identity", "Add"])
def test_o2_on_qdq_gelu_is_bit_identical(between: str) -> None:
    model = _qdq_gelu(between=between)
    report: list = []
    out = graphopt.optimize(model, level=2, report=report)
    assert _ops(out)["Erf"] == 1 and _ops(out)["Gelu"] == 0
    assert _declines(report, "gelu-erf-half-last") == {FEEDS_QUANTIZER: 1}
    for seed in range(3):
        x = _x(seed)
        for opt in (True, False):
            assert np.array_equal(_run(model, x, optimize=opt)[0], _run(out, x, optimize=opt)[0])


def test_gelu_read_only_by_float_ops_still_fuses() -> None:
    """A QuantizeLinear upstream does not matter: the GELU's output is the float graph output."""
    model = _qdq_gelu(quantize_out=False)
    out = graphopt.optimize(model, level=2)
    assert _ops(out)["Gelu"] == 1 and _ops(out)["Erf"] == 0
    x = _x()
    np.testing.assert_allclose(_run(out, x)[0], _run(model, x)[0], rtol=1e-5, atol=1e-6)


def test_float_gelu_still_fuses_at_o2() -> None:
    nodes, inits = _gelu_nodes("x", "y")
    g = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64, 96])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    out = graphopt.optimize(model, level=2)
    assert _ops(out) == Counter({"Gelu": 1})


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    half=st.integers(0, 2),
    mul_form=st.booleans(),
    swap=st.integers(0, 15),
    between=st.sampled_from(["", "Reshape", "Transpose", "Identity", "Add"]),
    opset=st.sampled_from([14, 20]),
    seed=st.integers(0, 2**16),
)
def test_o2_on_qdq_gelu_bit_identical_any_form(half, mul_form, swap, between, opset, seed) -> None:
    model = _qdq_gelu(between=between, opset=opset, half=half, mul_form=mul_form, swap=swap)
    out = graphopt.optimize(model, level=2)
    assert _ops(out)["Gelu"] == 0
    x = _x(seed)
    assert np.array_equal(_run(model, x)[0], _run(out, x)[0])


# ---------------------------------------------------------------------------------------------------------------------
# the other rewrites that are exact in real arithmetic only
# ---------------------------------------------------------------------------------------------------------------------
def _conv_bn(quantize_out: bool) -> onnx.ModelProto:
    """x -> Conv (float weight) -> BatchNormalization -> [Q -> DQ] -> y."""
    rng = np.random.default_rng(1)
    mk = helper.make_node
    nodes = [
        mk("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        mk("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"]),
    ]
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in [
        (rng.standard_normal((16, 8, 3, 3)) * 0.3, "w"), (rng.uniform(0.5, 2, 16), "g"), (rng.standard_normal(16), "b"),
        (rng.standard_normal(16), "m"), (rng.uniform(0.5, 2, 16), "v")]]  # fmt: skip
    if quantize_out:
        nodes += [
            mk("QuantizeLinear", ["n", "qo_s", "qo_z"], ["q"]),
            mk("DequantizeLinear", ["q", "qo_s", "qo_z"], ["y"]),
        ]
        inits += _q("qo", 1 / 64)
    else:
        nodes.append(mk("Identity", ["n"], ["y"]))
    g = helper.make_graph(
        nodes, "cbn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 24, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])


def test_conv_bn_before_a_quantizelinear_stays() -> None:
    model = _conv_bn(quantize_out=True)
    report: list = []
    out = graphopt.optimize(model, level=2, report=report)
    assert _ops(out)["BatchNormalization"] == 1
    assert _declines(report, "conv-bn") == {FEEDS_QUANTIZER: 1}
    x = np.random.default_rng(0).standard_normal((1, 8, 24, 24)).astype(np.float32)
    assert np.array_equal(_run(model, {"x": x})[0], _run(out, {"x": x})[0])
    # float: folded as before
    assert _ops(graphopt.optimize(_conv_bn(quantize_out=False), level=2))["BatchNormalization"] == 0


def _matmuls(quantize_out: bool) -> onnx.ModelProto:
    """x -> MatMul(w1) + bias -> [Q/DQ] -> y1 and x -> MatMul(w2) -> [Q/DQ] -> y2 (fuse-gemm, fuse-parallel-matmul)."""
    rng = np.random.default_rng(2)
    mk = helper.make_node
    nodes = [mk("MatMul", ["x", "w1"], ["m1"]), mk("Add", ["m1", "bias"], ["a1"]), mk("MatMul", ["x", "w2"], ["a2"])]
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for s, n in [((48, 32), "w1"), ((48, 32), "w2"), ((32,), "bias")]]  # fmt: skip
    for k in ("1", "2"):
        if quantize_out:
            nodes += [mk("QuantizeLinear", [f"a{k}", "qo_s", "qo_z"], [f"q{k}"]),
                      mk("DequantizeLinear", [f"q{k}", "qo_s", "qo_z"], [f"y{k}"])]  # fmt: skip
        else:
            nodes.append(mk("Identity", [f"a{k}"], [f"y{k}"]))
    if quantize_out:
        inits += _q("qo", 1 / 128)
    g = helper.make_graph(
        nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, 48])],
        [helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, None) for k in "12"], inits,
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])


def test_matmuls_before_a_quantizelinear_stay() -> None:
    model = _matmuls(quantize_out=True)
    report: list = []
    out = graphopt.optimize(model, level=2, report=report)
    assert _ops(out)["Gemm"] == 0 and _ops(out)["MatMul"] == 2 and _ops(out)["Split"] == 0
    assert _declines(report, "matmul-add-to-gemm") == {FEEDS_QUANTIZER: 1}
    assert _declines(report, "fuse-parallel-matmul") == {FEEDS_QUANTIZER: 2}
    x = np.random.default_rng(0).standard_normal((16, 48)).astype(np.float32)
    for a, b in zip(_run(model, {"x": x}), _run(out, {"x": x}), strict=True):
        assert np.array_equal(a, b)
    flt = _ops(graphopt.optimize(_matmuls(quantize_out=False), level=2))
    assert flt["Split"] == 1 or flt["Gemm"] == 1  # float: one of the two rewrites still fires


def test_reaches_quantizer_stops_at_integer_values() -> None:
    """A Cast to int64 (say, a shape computed from the data) ends the float path: nothing reaches the Q after it."""
    mk = helper.make_node
    nodes = [mk("Relu", ["x"], ["r"]), mk("Cast", ["r"], ["i"], to=TensorProto.INT64), mk("Cast", ["i"], ["f"], to=1),
             mk("QuantizeLinear", ["f", "s", "z"], ["y"])]  # fmt: skip
    g = helper.make_graph(
        nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [4])],
        [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "z")],
    )  # fmt: skip
    m = from_proto(helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)]))
    from graphopt.core.shape_inference import infer_shapes

    infer_shapes(m)
    by = {n.op_type + n.outputs[0].name: n for n in m.graph}
    assert not reaches_quantizer(by["Relur"].outputs, m.graph)
    assert reaches_quantizer(by["Castf"].outputs, m.graph)


def test_rule_exact_must_be_bool_or_function() -> None:
    with pytest.raises(PatternError, match="exact"):
        Rule("r", Op("Relu", Var("x")), lambda m, b: m["x"], exact="no")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------------
# random graphs with every output quantized: -O2 must keep them bit for bit
# ---------------------------------------------------------------------------------------------------------------------
def _quantize_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every output y of ``model`` becomes DequantizeLinear(QuantizeLinear(y)) (a fine int8 step, so that a last-bit
    change anywhere upstream is likely to flip one)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    g.initializer.extend(_q("qo", 1 / 128))
    for o in g.output:
        name = o.name
        for n in g.node:
            n.output[:] = [f"{name}_f" if v == name else v for v in n.output]
            n.input[:] = [f"{name}_f" if v == name else v for v in n.input]
        g.node.extend([
            helper.make_node("QuantizeLinear", [f"{name}_f", "qo_s", "qo_z"], [f"{name}_q"]),
            helper.make_node("DequantizeLinear", [f"{name}_q", "qo_s", "qo_z"], [name]),
        ])  # fmt: skip
        o.type.tensor_type.ClearField("shape")
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models(max_nodes=14))
def test_o2_on_random_graphs_with_quantized_outputs_is_bit_identical(model) -> None:
    """graphopt.testing's random graphs (elementwise ops, Transpose, MatMul, Softmax, Concat) rarely hold a rewrite
    that is not exact (this passes without the quantizer check too): it guards the rewrites that stay allowed."""
    model = _quantize_outputs(model)
    out = graphopt.optimize(model, level=2)
    x = feeds(model, batch=3)
    for opt in (True, False):
        for a, b in zip(_run(model, x, optimize=opt), _run(out, x, optimize=opt), strict=True):
            assert np.array_equal(a, b)


def _q_in_a_function(m: onnx.ModelProto) -> onnx.ModelProto:
    """The model's last QuantizeLinear -> DequantizeLinear pair as a call of a model-local function QDQ(x)."""
    g = m.graph
    q = next(n for n in g.node if n.op_type == "QuantizeLinear")
    dq = next(n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
    body = [
        helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(np.array(1 / 64, np.float32))),
        helper.make_node("Constant", [], ["z"], value=numpy_helper.from_array(np.array(0, np.int8))),
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]),
    ]
    m.functions.append(helper.make_function("local", "QDQ", ["x"], ["y"], body, [helper.make_opsetid("", 14)]))
    nodes = [n for n in g.node if n is not q and n is not dq]
    nodes.append(helper.make_node("QDQ", [q.input[0]], [dq.output[0]], domain="local"))
    del g.node[:]
    g.node.extend(nodes)
    m.opset_import.append(helper.make_opsetid("local", 1))
    return m


def test_a_quantizer_inside_a_called_function_is_seen() -> None:
    """The GELU's output reaches a QuantizeLinear inside a model-local function it calls: the walk must look into the
    function (it treated the call as a float op: -O2 fused the GELU and flipped 18 int8 steps)."""
    m = _q_in_a_function(_qdq_gelu())
    out = graphopt.optimize(m, level=2)
    assert isinstance(out, onnx.ModelProto)
    assert "Gelu" not in {n.op_type for n in out.graph.node}
    x = _x()
    assert np.array_equal(_run(m, x)[0], _run(out, x)[0])
