"""fold-constants' numpy evaluator gives exactly what onnxruntime gives, op by op, on random small tensors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from graphopt.passes import numpy_eval
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto

INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def _check(op: str, inputs: list[np.ndarray], opset: int = 17, **attrs) -> str:
    """'compared', 'declined' (numpy_eval left it to onnxruntime) or 'rejected' (onnxruntime refuses the node)."""
    names = [f"i{k}" for k in range(len(inputs))]
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], **attrs)],
        "g",
        [],
        [onnx.ValueInfoProto(name="y")],  # untyped: onnxruntime infers it
        [numpy_helper.from_array(a, n) for a, n in zip(inputs, names, strict=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        want = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {})[0]
    except Exception:  # noqa: BLE001 - onnxruntime rejects the node: nothing to compare
        return "rejected"
    ir = from_proto(model)
    node = next(iter(ir.graph))
    got = numpy_eval.evaluate([node], {})
    if got is None:
        return "declined"  # onnxruntime evaluates it instead, which is always right
    (value,) = got.values()
    assert value.dtype == want.dtype and value.shape == want.shape, (op, value, want)
    np.testing.assert_array_equal(value, want)
    return "compared"


small = st.integers(-6, 6)
ints = st.lists(st.integers(-50, 50), min_size=1, max_size=12).map(lambda x: np.array(x, np.int64))


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.lists(st.sampled_from([-9, -5, -1, 0, 1, 2, 4, 9, INT_MAX, INT_MIN]), min_size=2, max_size=2),
    st.sampled_from([1, 2, -1, -2]),
    st.sampled_from([0, 1, -1]),
)
def test_slice(rows, cols, bounds, step, axis) -> None:
    x = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
    _check("Slice", [x, np.array([bounds[0]]), np.array([bounds[1]]), np.array([axis]), np.array([step])])


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([[0, -1], [-1, 0], [2, 0, -1], [0, 0, 0], [-1], [3, -1]]), st.booleans())
def test_reshape(shape, allowzero) -> None:
    x = np.arange(24, dtype=np.int64).reshape(2, 3, 4)
    _check("Reshape", [x, np.array(shape, np.int64)], opset=14, allowzero=int(allowzero))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-4, 3), min_size=1, max_size=4), st.sampled_from([0, 1, -1]))
def test_gather(indices, axis) -> None:
    _check("Gather", [np.arange(12, dtype=np.float32).reshape(4, 3) * 0.5, np.array(indices, np.int64)], axis=axis)


@settings(max_examples=60, deadline=None)
@given(ints, ints, st.sampled_from(["Add", "Sub", "Mul", "Equal", "Less", "Greater"]))
def test_integer_arithmetic(a, b, op) -> None:
    n = min(len(a), len(b))
    _check(op, [a[:n], b[:n]])
    _check(op, [a[:n], b[:1]])  # broadcasting


@settings(max_examples=40, deadline=None)
@given(ints, st.sampled_from([TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL, TensorProto.FLOAT]))
def test_cast(a, to) -> None:
    _check("Cast", [a], to=to)


def test_data_movement_ops() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    results = [
        _check("Transpose", [x], perm=[2, 0, 1]),
        _check("Transpose", [x]),
        _check("Concat", [x, x], axis=-1),
        _check("Unsqueeze", [x, np.array([0, -1], np.int64)]),
        _check("Unsqueeze", [x], opset=11, axes=[1]),
        _check("Squeeze", [x[:1], np.array([0], np.int64)]),
        _check("Shape", [x], opset=15, start=1, end=-1),
        _check("Identity", [x]),
        _check("ConstantOfShape", [np.array([2, 3], np.int64)]),
        _check("ConstantOfShape", [np.array([2, 3], np.int64)], value=numpy_helper.from_array(np.array([7], np.int64))),
        _check("Where", [np.array([True, False]), np.array([1, 2], np.int64), np.array([3, 4], np.int64)]),
        _check("Range", [np.array(1, np.int64), np.array(9, np.int64), np.array(3, np.int64)]),
        _check("Range", [np.array(5, np.int64), np.array(-3, np.int64), np.array(-2, np.int64)]),
        _check("Slice", [x, np.array([1]), np.array([-1]), np.array([2]), np.array([1])]),
        _check("Add", [np.arange(3, dtype=np.int64), np.array([5], np.int64)]),
    ]
    assert results == ["compared"] * len(results)


def test_float_arithmetic_is_left_to_onnxruntime() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones(2, np.float32), n) for n in ("a", "b")],
    )
    ir = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert numpy_eval.evaluate(list(ir.graph), {}) is None
