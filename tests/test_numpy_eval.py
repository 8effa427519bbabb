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
    if value.dtype.kind == "f":  # bit for bit (-0.0 is not 0.0); a NaN only needs to be a NaN
        bits = np.dtype(f"u{value.dtype.itemsize}")
        nan = np.isnan(value) & np.isnan(want)
        assert np.array_equal(value.view(bits)[~nan], want.view(bits)[~nan]), (op, inputs, value, want)
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


SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.1, 3.0, 1e-40, -1e-45, 1e38, -3e38, float("inf"), float("-inf"), float("nan")]
"""Signed zeros, subnormals, values near overflow, infinities and NaN: where a non-IEEE shortcut would show."""


def _floats(dtype: type) -> st.SearchStrategy[np.ndarray]:
    finite = st.floats(width=32 if dtype is np.float32 else 64, allow_nan=False, allow_infinity=False)
    return st.lists(st.one_of(st.sampled_from(SPECIAL), finite), min_size=1, max_size=10).map(
        lambda x: np.array(x, dtype)
    )


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([np.float32, np.float64]).flatmap(lambda t: st.tuples(_floats(t), _floats(t))),
    st.sampled_from(["Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater"]),
)
def test_float_arithmetic_is_bit_exact(ab, op) -> None:
    a, b = ab
    n = min(len(a), len(b))
    assert _check(op, [a[:n], b[:n]]) == "compared"
    assert _check(op, [a[:n], b[:1]]) == "compared"  # broadcasting
    assert _check(op, [a[:1].reshape(()), b[:n]]) == "compared"  # a scalar, as exporters write them


@settings(max_examples=60, deadline=None)
@given(_floats(np.float32), st.sampled_from(["Neg", "Abs"]))
def test_float_unary_is_bit_exact(a, op) -> None:
    assert _check(op, [a]) == "compared"


EDGES = [127.9, -128.9, 255.5, 256.0, -0.5, 2.5, -2.5, 3e9, -3e9, 2.0**63, -(2.0**63), 1e300]
"""Casts to integers at and past the ends of each integer type."""


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([np.float32, np.float64]).flatmap(
        lambda t: st.lists(st.one_of(st.sampled_from(SPECIAL + EDGES), st.floats(-300, 300)), min_size=1, max_size=6)
        .map(lambda x, t=t: np.array(x, np.float64).astype(t))
    ),
    st.sampled_from([TensorProto.INT64, TensorProto.INT32, TensorProto.INT8, TensorProto.UINT8, TensorProto.FLOAT,
                     TensorProto.DOUBLE, TensorProto.BOOL]),
)
def test_float_cast(a, to) -> None:
    """Float casts are evaluated exactly where C defines them (to an integer: finite and fitting after truncation;
    float64 to float32: within float32's range), and declined elsewhere."""
    target = np.dtype(helper.tensor_dtype_to_np_dtype(to))
    t = np.trunc(a[np.isfinite(a)])
    if target.kind == "f":
        defined = a.dtype == np.float32 or target == np.float64 or not np.any(np.abs(t) > np.finfo(np.float32).max)
    elif target.kind in "iu":
        bits = target.itemsize * 8
        low, high = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1)) if target.kind == "i" else (0.0, 2.0**bits)
        defined = bool(np.all(np.isfinite(a)) and t.min() >= low and t.max() < high)
    else:
        defined = False  # float to bool is left to onnxruntime
    assert _check("Cast", [a], to=to) == ("compared" if defined else "declined")


def test_int_to_float_cast_rounds_like_onnxruntime() -> None:
    big = np.array([2**62 + 1, -(2**53) - 1, 2**31 - 1, 16777217, -16777219, 0], np.int64)
    assert _check("Cast", [big], to=TensorProto.FLOAT) == "compared"
    assert _check("Cast", [big], to=TensorProto.DOUBLE) == "compared"
    assert _check("Cast", [big.astype(np.int32)], to=TensorProto.FLOAT) == "compared"


def _evaluated(op: str, inputs: list[np.ndarray], opset: int = 17, **attrs) -> bool:
    names = [f"i{k}" for k in range(len(inputs))]
    graph = helper.make_graph(
        [helper.make_node(op, names, ["y"], **attrs)],
        "g",
        [],
        [onnx.ValueInfoProto(name="y")],
        [numpy_helper.from_array(a, n) for a, n in zip(inputs, names, strict=True)],
    )
    ir = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))
    return numpy_eval.evaluate(list(ir.graph), {}) is not None


def test_inexact_float_math_is_left_to_onnxruntime() -> None:
    half = np.ones(2, np.float16)
    assert not _evaluated("Add", [half, half])  # float16 rounds through float32 (or not) depending on the kernel
    x = np.array([2.0, 3.0], np.float32)
    assert not _evaluated("Pow", [x, x])
    assert not _evaluated("Div", [np.array([7], np.int64), np.array([-2], np.int64)])  # C truncates, numpy floors
    assert not _evaluated("Cast", [np.array([np.nan], np.float32)], to=TensorProto.INT64)
    assert not _evaluated("Cast", [np.array([3e9], np.float32)], to=TensorProto.INT32)
    assert not _evaluated("Cast", [np.array([1e300], np.float64)], to=TensorProto.FLOAT)
    assert not _evaluated("Add", [x, x[:1]], opset=6, broadcast=1)  # opset < 7: broadcast/axis attributes
    assert _evaluated("Add", [x, x])
