"""Rules that real exporters need: computed Reshape targets made constant, Unsqueeze chains merged, neutral elements
with broadcasting constants (x + zeros[N], x and True), Pad merged into an auto_pad=VALID Conv. Each checked under
onnxruntime at several runtime sizes of the symbolic dims, and each with the cases it must leave alone."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from tests.test_cleanup_passes import _i64, _model, _ops, _same_outputs

F = TensorProto.FLOAT


def _rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _reshape_model(pieces: list[onnx.NodeProto], parts: list[str], inits, inputs, allowzero: int = 0):
    nodes = [
        *pieces,
        helper.make_node("Concat", parts, ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["r"], allowzero=allowzero),
        helper.make_node("Relu", ["r"], ["out"]),
    ]
    return _model(nodes, inputs, [helper.make_tensor_value_info("out", F, None)], inits)


def _dim(src: str, i: int, out: str) -> list[onnx.NodeProto]:
    """out = Unsqueeze(Gather(Shape(src), i), [0]): the way torchscript exports ``x.size(i)``."""
    return [
        helper.make_node("Shape", [src], [f"{out}_s"]),
        helper.make_node("Gather", [f"{out}_s", f"idx{i}"], [f"{out}_g"], axis=0),
        helper.make_node("Unsqueeze", [f"{out}_g", "zero_axis"], [out]),
    ]


IDX = [numpy_helper.from_array(np.array(i, np.int64), f"idx{i}") for i in range(3)] + [_i64("zero_axis", [0])]
XBS8 = helper.make_tensor_value_info("x", F, ["batch", "seq", 8])


def _target(model: onnx.ModelProto) -> list[int] | None:
    inits = {t.name: t for t in model.graph.initializer}
    reshape = next(n for n in model.graph.node if n.op_type == "Reshape")
    t = inits.get(reshape.input[1])
    return None if t is None else numpy_helper.to_array(t).tolist()


def _check(model, out, sizes, x_dims=lambda b, s: (b, s, 8), extra=None) -> None:
    for k, (b, s) in enumerate(sizes):
        feeds = {"x": _rand(*x_dims(b, s), seed=k)}
        if extra:
            feeds.update(extra(b, s))
        _same_outputs(model, out, feeds)


def test_own_dims_become_zero_copies() -> None:
    model = _reshape_model(
        _dim("x", 0, "d0") + _dim("x", 1, "d1"),
        ["d0", "d1", "two", "four"],
        [*IDX, _i64("two", [2]), _i64("four", [4])],
        [XBS8],
    )
    out = graphopt.optimize(model, level=2)
    assert _ops(out) == ["Reshape", "Relu"] and _target(out) == [0, 0, 2, 4]
    _check(model, out, [(1, 3), (5, 2)])


def test_allowzero_targets_become_constant_copies() -> None:
    """With allowzero=1 a copied dim is the same value read literally or as a 0 copy: the target becomes [0, 0, 2, 4]
    and allowzero goes (an empty batch included)."""
    model = _reshape_model(
        _dim("x", 0, "d0") + _dim("x", 1, "d1"),
        ["d0", "d1", "two", "four"],
        [*IDX, _i64("two", [2]), _i64("four", [4])],
        [XBS8],
        allowzero=1,
    )
    out = graphopt.optimize(model, level=2)
    assert _ops(out) == ["Reshape", "Relu"] and _target(out) == [0, 0, 2, 4]
    assert not any(a.name == "allowzero" and a.i for a in out.graph.node[0].attribute)
    _check(model, out, [(1, 3), (5, 2), (0, 3)])


def test_shape_with_start_end_and_slice_pieces() -> None:
    pieces = [
        helper.make_node("Shape", ["x"], ["head"], start=0, end=1),
        helper.make_node("Shape", ["x"], ["full"]),
        helper.make_node("Slice", ["full", "one", "two"], ["mid"]),
    ]
    model = _reshape_model(
        pieces, ["head", "mid", "two", "four"], [_i64("one", [1]), _i64("two", [2]), _i64("four", [4])], [XBS8]
    )
    out = graphopt.optimize(model, level=2)
    assert _ops(out) == ["Reshape", "Relu"] and _target(out) == [0, 0, 2, 4]
    _check(model, out, [(1, 3), (4, 1)])


def test_same_named_dim_of_another_tensor_is_a_copy() -> None:
    y = helper.make_tensor_value_info("y", F, ["batch", 7])
    model = _reshape_model(_dim("y", 0, "b"), ["b", "minus1"], [*IDX, _i64("minus1", [-1])], [XBS8, y])
    out = graphopt.optimize(model, level=2)
    assert _target(out) == [0, -1]
    _check(model, out, [(2, 3), (3, 5)], extra=lambda b, s: {"y": _rand(b, 7)})


def test_single_unknown_entry_becomes_minus_one() -> None:
    x = helper.make_tensor_value_info("x", F, ["n", 4, 8])
    y = helper.make_tensor_value_info("y", F, ["m"])  # unrelated name: only the runtime says m == n
    model = _reshape_model(_dim("y", 0, "b"), ["b", "thirtytwo"], [*IDX, _i64("thirtytwo", [32])], [x, y])
    out = graphopt.optimize(model, level=2)
    assert _target(out) == [-1, 32]
    _check(model, out, [(1, 0), (3, 0)], x_dims=lambda b, s: (b, 4, 8), extra=lambda b, s: {"y": _rand(b)})


@pytest.mark.parametrize(
    "case",
    ["allowzero", "two_unknowns", "unknown_with_copy", "wrong_position"],
)
def test_reshape_targets_left_computed(case: str) -> None:
    x = helper.make_tensor_value_info("x", F, ["n", "k", 8])
    y = helper.make_tensor_value_info("y", F, ["m", "j"])
    inits = [*IDX, _i64("eight", [8]), _i64("two", [2]), _i64("four", [4])]
    if case == "allowzero":  # with allowzero a constant 0 is a real empty dim, which allowzero=0 cannot say
        parts = ["a", "zero_axis", "b", "eight"]  # [n, 0, k, 8]: runs on an empty x only
        model = _reshape_model(_dim("x", 0, "a") + _dim("x", 1, "b"), parts, inits, [x], allowzero=1)
    elif case == "two_unknowns":
        model = _reshape_model(_dim("y", 0, "a") + _dim("y", 1, "b"), ["a", "b", "eight"], inits, [x, y])
    elif case == "unknown_with_copy":  # [n, m*?]: -1 could be ambiguous when n == 0, so stay computed
        model = _reshape_model(_dim("x", 0, "a") + _dim("y", 1, "b"), ["a", "b", "eight"], inits, [x, y])
    else:  # x's dim 1 read into position 0 is not a copy
        model = _reshape_model(_dim("x", 1, "a") + _dim("x", 0, "b"), ["a", "b", "eight"], inits, [x])
    out = graphopt.optimize(model, level=2)
    assert "Concat" in _ops(out) and _target(out) is None
    extra = (lambda b, s: {"y": _rand(b, s)}) if case in ("two_unknowns", "unknown_with_copy") else None
    _check(model, out, [(0, 2), (0, 5)] if case == "allowzero" else [(2, 2), (3, 5)], extra=extra)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_unsqueeze_chains_merge(data) -> None:
    rank = data.draw(st.integers(0, 3))
    n1, n2 = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    mid, out_rank = rank + n1, rank + n1 + n2
    a1 = data.draw(
        st.lists(st.integers(-mid, mid - 1), min_size=n1, max_size=n1).filter(
            lambda a: len({v % mid for v in a}) == len(a)
        )
    )
    a2 = data.draw(
        st.lists(st.integers(-out_rank, out_rank - 1), min_size=n2, max_size=n2).filter(
            lambda a: len({v % out_rank for v in a}) == len(a)
        )
    )
    shape = [2, 3, 4][:rank]
    nodes = [
        helper.make_node("Unsqueeze", ["x", "a1"], ["u1"]),
        helper.make_node("Unsqueeze", ["u1", "a2"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", F, shape)
    model = _model(nodes, [x], [helper.make_tensor_value_info("y", F, None)], [_i64("a1", a1), _i64("a2", a2)])
    out = graphopt.optimize(model, level=2)
    assert _ops(out) == ["Unsqueeze"]
    _same_outputs(model, out, {"x": _rand(*shape)})


def test_unsqueeze_chain_before_opset_13_stays() -> None:
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u1"], axes=[0]),
        helper.make_node("Unsqueeze", ["u1"], ["y"], axes=[0]),
    ]
    x = helper.make_tensor_value_info("x", F, [3])
    model = _model(nodes, [x], [helper.make_tensor_value_info("y", F, None)], opset=11)
    out = graphopt.optimize(model, level=2)
    assert _ops(out) == ["Unsqueeze", "Unsqueeze"]


@pytest.mark.parametrize(
    ("op", "x_shape", "const", "dtype", "removed"),
    [
        ("Add", [2, 3], np.zeros(3), np.float32, True),
        ("Add", [2, 3], np.zeros((2, 1)), np.float32, True),
        ("Add", [2, 1], np.zeros(3), np.float32, False),  # broadcasting makes the output [2, 3]
        ("Add", [2, 3], np.zeros((1, 2, 3)), np.float32, False),  # adds a leading dim
        ("Add", [2, 3], np.array([0, 0, 1e-3]), np.float32, False),
        ("Sub", [2, 3], np.zeros(3), np.float32, True),
        ("Mul", [2, 3], np.ones((2, 3)), np.float32, True),
        ("Div", [2, 3], np.ones(3), np.float32, True),
        ("And", [2, 3], np.ones(3), np.bool_, True),
        ("And", [2, 3], np.array([1, 0, 1]), np.bool_, False),
        ("Or", [2, 3], np.zeros((2, 3)), np.bool_, True),
    ],
)
def test_neutral_constants_with_broadcast(op, x_shape, const, dtype, removed) -> None:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    c = numpy_helper.from_array(np.asarray(const).astype(dtype), "c")
    nodes = [
        helper.make_node(op, ["x", "c"], ["v"]),
        helper.make_node("Not" if dtype is np.bool_ else "Neg", ["v"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", elem, x_shape)
    model = _model(nodes, [x], [helper.make_tensor_value_info("y", elem, None)], [c])
    out = graphopt.optimize(model, level=2)
    assert (op not in _ops(out)) == removed
    rng = np.random.default_rng(0)
    feed = rng.random(x_shape) > 0.5 if dtype is np.bool_ else rng.standard_normal(x_shape).astype(dtype)
    _same_outputs(model, out, {"x": feed})


@pytest.mark.parametrize(("auto_pad", "merged"), [("VALID", True), ("SAME_UPPER", False), ("NOTSET", True)])
def test_pad_merges_into_valid_conv(auto_pad: str, merged: bool) -> None:
    w = numpy_helper.from_array(_rand(4, 3, 3, 3), "w")
    pads = _i64("pads", [0, 0, 0, 0, 0, 0, 1, 1])  # TF-style "same" for stride 2: pad only the end
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"]),
        helper.make_node("Conv", ["p", "w"], ["y"], strides=[2, 2], auto_pad=auto_pad),
    ]
    x = helper.make_tensor_value_info("x", F, ["n", 3, 8, 8])
    model = _model(nodes, [x], [helper.make_tensor_value_info("y", F, None)], [w, pads])
    out = graphopt.optimize(model, level=2)
    assert ("Pad" not in _ops(out)) == merged
    _same_outputs(model, out, {"x": _rand(2, 3, 8, 8)})
