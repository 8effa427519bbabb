"""-O2 against the best of the other simplifiers on real models (issue 16): the mechanisms that closed the last node
gaps, each with a small model built here (or a fixtures/wild model) and checked under onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.shape_inference import infer_shapes
from tests.conftest import ort_run

F = TensorProto.FLOAT


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


# --------------------------------------------------------------------------------------------------------------------
# voicefilter-embedder-int8: com.microsoft DynamicQuantizeLSTM gets a shape rule
# --------------------------------------------------------------------------------------------------------------------
def _quantized_lstm_model(hidden: int = 3, feat: int = 4, seq: int = 5) -> onnx.ModelProto:
    """x [batch, seq, feat] -> Transpose -> DynamicQuantizeLSTM -> Transpose -> Reshape(Concat of its dims read back
    through Shape/Slice/Mul), the way onnxruntime's quantizer leaves a torch LSTM."""
    rng = np.random.default_rng(0)
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    inits = [
        numpy_helper.from_array(rng.integers(-20, 20, (1, feat, 4 * hidden)).astype(np.int8), "W"),
        numpy_helper.from_array(rng.integers(-20, 20, (1, hidden, 4 * hidden)).astype(np.int8), "R"),
        numpy_helper.from_array(rng.standard_normal((1, 8 * hidden)).astype(np.float32), "B"),
        numpy_helper.from_array(np.array([0.02], np.float32), "ws"),
        numpy_helper.from_array(np.array([0], np.int8), "wz"),
        numpy_helper.from_array(np.array([0.03], np.float32), "rs"),
        i64("s0", [0]), i64("s1", [1]), i64("s2", [2]), i64("s3", [3]), i64("s4", [4]),
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node(
            "DynamicQuantizeLSTM", ["xt", "W", "R", "B", "", "", "", "", "ws", "wz", "rs", "wz"], ["y"],
            domain="com.microsoft", hidden_size=hidden, direction="forward",
        ),
        helper.make_node("Shape", ["y"], ["shape"]),
        helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1, 3]),
        helper.make_node("Slice", ["shape", "s0", "s1"], ["d0"]),
        helper.make_node("Slice", ["shape", "s2", "s3"], ["d1"]),  # y's dim 2 is yt's dim 1
        helper.make_node("Slice", ["shape", "s1", "s2"], ["d2"]),
        helper.make_node("Slice", ["shape", "s3", "s4"], ["d3"]),
        helper.make_node("Mul", ["d2", "d3"], ["d23"]),
        helper.make_node("Concat", ["d0", "d1", "d23"], ["target"], axis=0),
        helper.make_node("Reshape", ["yt", "target"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", F, ["batch", seq, feat])],
        [helper.make_tensor_value_info("out", F, None)], inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    return model


def test_dynamic_quantize_lstm_outputs_are_typed() -> None:
    model = graphopt.load(_quantized_lstm_model())
    infer_shapes(model)
    lstm = next(n for n in model.graph if n.op_type == "DynamicQuantizeLSTM")
    assert lstm.outputs[0].dtype == F and lstm.outputs[0].shape == (5, 1, "batch", 3)
    reshape = next(n for n in model.graph if n.op_type == "Reshape")
    assert reshape.inputs[0].shape == (5, "batch", 1, 3)  # ONNX inference goes on after it


def test_shape_chains_after_dynamic_quantize_lstm_fold() -> None:
    proto = _quantized_lstm_model()
    out = graphopt.optimize(proto, level=2)
    assert _ops(out) == ["Transpose", "DynamicQuantizeLSTM", "Transpose", "Reshape"], _ops(out)
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 5, 4)).astype(np.float32)
        want, got = ort_run(proto, {"x": x})[0], ort_run(out, {"x": x})[0]
        assert want.shape == got.shape == (5, batch, 3)
        np.testing.assert_array_equal(got, want)
