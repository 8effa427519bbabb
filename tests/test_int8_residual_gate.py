"""int8 for onnxruntime: a float residual gate ``x + x * g`` (g a HardSigmoid/Sigmoid gate, x dequantized) is written
``x * (1 + g)`` (qdq_rules' ``residual_gates_as_one_mul``): the same values up to float rounding, one reader of x."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.quantize.qdq_rules import residual_gates_as_one_mul
from graphopt.tools import runtime
from tests.conftest import ran_ops


def _gate_net(
    x_dims: list, g_dims: list, *, gate: str = "HardSigmoid", swap: bool = False, extra_reader: bool = False
) -> onnx.ModelProto:
    """x -> Q -> DQ -> xd; s -> gate -> g; y = Add(xd, Mul(xd, g)) (operands swapped with ``swap``)."""
    inits = [
        numpy_helper.from_array(np.asarray(0.03, np.float32), "sc"),
        numpy_helper.from_array(np.asarray(128, np.uint8), "zp"),
    ]
    gate_node = (
        helper.make_node("HardSigmoid", ["s"], ["g"], alpha=1.0 / 6.0, beta=0.5)
        if gate == "HardSigmoid"
        else helper.make_node(gate, ["s"], ["g"])
    )
    mul_in = ["g", "xd"] if swap else ["xd", "g"]
    add_in = ["m", "xd"] if swap else ["xd", "m"]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sc", "zp"], ["xd"]),
        gate_node,
        helper.make_node("Mul", mul_in, ["m"]),
        helper.make_node("Add", add_in, ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "gate",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims), helper.make_tensor_value_info("s", 1, g_dims)],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return onnx.shape_inference.infer_shapes(model)


def _rewritten(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    model = from_proto(proto)
    count = residual_gates_as_one_mul(model.graph)
    return model.to_onnx(), count


def _run(proto: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return runtime.session(proto, threads=1).run(None, feed)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 9),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    gate=st.sampled_from(["HardSigmoid", "Sigmoid"]),
    swap=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_one_mul_matches_the_residual_gate_to_float_rounding(n, c, h, w, gate, swap, seed) -> None:
    if h * w == 1:
        h = 2  # the gate must have fewer elements than x
    proto = _gate_net([n, c, h, w], [n, c, 1, 1], gate=gate, swap=swap)
    written, count = _rewritten(proto)
    assert count == 1
    ops = [nd.op_type for nd in written.graph.node]
    assert ops.count("Mul") == 1 and ops.count("Add") == 1  # the Add left is 1 + g on [n, c, 1, 1]
    rng = np.random.default_rng(seed)
    feed = {
        "x": (rng.standard_normal((n, c, h, w)) * 3).astype(np.float32),
        "s": (rng.standard_normal((n, c, 1, 1)) * 4).astype(np.float32),
    }
    ref = _run(proto, feed)[0]
    got = _run(written, feed)[0]
    # x + x*g and x*(1 + g), 1 + g in [1, 2]: within 3 units in the last place of the result
    np.testing.assert_allclose(got, ref, rtol=3 * np.finfo(np.float32).eps, atol=1e-30)


def test_dynamic_dims() -> None:
    proto = _gate_net(["n", 4, "h", "w"], ["n", 4, 1, 1])
    written, count = _rewritten(proto)
    assert count == 1
    rng = np.random.default_rng(3)
    for shape in [(1, 4, 3, 5), (2, 4, 6, 2)]:
        feed = {
            "x": rng.standard_normal(shape).astype(np.float32),
            "s": rng.standard_normal((shape[0], 4, 1, 1)).astype(np.float32),
        }
        np.testing.assert_allclose(_run(written, feed)[0], _run(proto, feed)[0], rtol=3 * np.finfo(np.float32).eps)


@pytest.mark.parametrize(
    "x_dims,g_dims,kwargs",
    [
        ([1, 4, 3, 3], [1, 4, 1, 1], {"gate": "Relu"}),  # unbounded: 1 + g may cancel
        ([1, 4, 3, 3], [1, 4, 1, 1], {"gate": "Tanh"}),  # in [-1, 1]: 1 + g may cancel
        ([1, 4, 3, 3], [1, 4, 1, 1], {"extra_reader": True}),  # x * g is read elsewhere: it stays
        ([1, 4, 1, 1], [1, 4, 3, 3], {}),  # the gate is the bigger operand: Mul(x, 1 + g) would not save a pass
        ([1, 4, 3, 3], [1, 4, 3, 3], {}),  # no broadcast: nothing saved
    ],
)
def test_left_alone(x_dims, g_dims, kwargs) -> None:
    assert _rewritten(_gate_net(x_dims, g_dims, **kwargs))[1] == 0


def test_onnxruntime_dequantizes_x_once(tmp_path) -> None:
    """Before: onnxruntime duplicated the DequantizeLinear for the Mul and the Add (EnsureUniqueDQForNodeUnit)."""
    proto = _gate_net([1, 8, 16, 12], [1, 8, 1, 1])
    written, _ = _rewritten(proto)
    for model, want in ((proto, 2), (written, 1)):
        ops = ran_ops(model, tmp_path / "optimized.onnx")
        assert ops.count("DequantizeLinear") == want, ops
