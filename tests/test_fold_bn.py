"""fold-conv-bn under onnxruntime (its own optimizations off, so it cannot fold BN for us): random convolutions,
transposed convolutions, Gemm and MatMul followed by BatchNormalization or per-channel Mul/Add, BN before an unpadded
Conv, and the cases that must be left alone."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _bn_params(rng: np.random.Generator, c: int, prefix: str = "bn") -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), f"{prefix}_gamma"),
        numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), f"{prefix}_beta"),
        numpy_helper.from_array(rng.standard_normal(c).astype(np.float32) * 0.1, f"{prefix}_mean"),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, c).astype(np.float32), f"{prefix}_var"),
    ]


def _bn(inp: str, out: str, prefix: str = "bn", eps: float = 1e-5) -> onnx.NodeProto:
    names = [f"{prefix}_{p}" for p in ("gamma", "beta", "mean", "var")]
    return helper.make_node("BatchNormalization", [inp, *names], [out], epsilon=eps)


def _check(
    model: onnx.ModelProto, x: np.ndarray, gone: tuple[str, ...], passes: str = "fold-conv-bn,dce"
) -> onnx.ModelProto:
    onnx.checker.check_model(model)
    out = graphopt.optimize(model, passes=passes)
    onnx.checker.check_model(out)
    ops = [n.op_type for n in out.graph.node]
    for op in gone:
        assert op not in ops, ops
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    np.testing.assert_allclose(_run(out, x), _run(model, x), rtol=1e-4, atol=1e-4)
    return out


def _model(nodes, x_shape, inits, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    inferred = onnx.shape_inference.infer_shapes(model)  # fills in the output's shape for the checker
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    return model


@st.composite
def convs(draw, transpose: bool = False):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dims = draw(st.integers(1, 3))
    group = draw(st.sampled_from([1, 2, 4]))
    cin = group * draw(st.integers(1, 3))
    cout = group * draw(st.integers(1, 3))
    if draw(st.booleans()) and not transpose:  # depthwise
        group, cin, cout = 4, 4, 4 * draw(st.integers(1, 2))
    k = [draw(st.integers(1, 3)) for _ in range(dims)]
    attrs = {
        "group": group,
        "kernel_shape": k,
        "strides": [draw(st.integers(1, 2)) for _ in range(dims)],
        "pads": [draw(st.integers(0, 1)) for _ in range(2 * dims)],
    }
    if not transpose:
        attrs["dilations"] = [draw(st.integers(1, 2)) for _ in range(dims)]
    w_shape = [cin, cout // group, *k] if transpose else [cout, cin // group, *k]
    inits = [numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32), "w")]
    ins = ["x", "w"]
    if draw(st.booleans()):
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
        ins.append("b")
    x_shape = [draw(st.integers(1, 2)), cin, *[draw(st.integers(5, 7)) for _ in range(dims)]]
    x = rng.standard_normal(x_shape).astype(np.float32)
    node = helper.make_node("ConvTranspose" if transpose else "Conv", ins, ["c"], **attrs)
    return node, inits, x, cout, rng, dims


@SETTINGS
@given(convs(), st.booleans())
def test_conv_then_bn(case, eps_big: bool) -> None:
    node, inits, x, cout, rng, _ = case
    model = _model([node, _bn("c", "y", eps=0.1 if eps_big else 1e-5)], x.shape, inits + _bn_params(rng, cout))
    _check(model, x, ("BatchNormalization",))


@SETTINGS
@given(convs(transpose=True))
def test_conv_transpose_then_bn(case) -> None:
    node, inits, x, cout, rng, _ = case
    model = _model([node, _bn("c", "y")], x.shape, inits + _bn_params(rng, cout))
    _check(model, x, ("BatchNormalization",))


@SETTINGS
@given(convs(), st.sampled_from(["channel", "scalar", "full-rank"]), st.booleans())
def test_conv_then_per_channel_mul_add(case, form: str, const_first: bool) -> None:
    node, inits, x, cout, rng, dims = case
    shape = {"channel": [cout] + [1] * dims, "scalar": [], "full-rank": [1, cout] + [1] * dims}[form]
    inits = inits + [
        numpy_helper.from_array(rng.uniform(0.5, 2, shape).astype(np.float32), "s"),
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "t"),
    ]
    mul = helper.make_node("Mul", ["s", "c"] if const_first else ["c", "s"], ["m"])
    add = helper.make_node("Add", ["m", "t"], ["y"])
    _check(_model([node, mul, add], x.shape, inits), x, ("Mul", "Add"))


@SETTINGS
@given(st.integers(0, 1000), st.booleans(), st.floats(0.5, 2.0), st.floats(0.0, 1.5), st.booleans())
def test_gemm_and_matmul_then_bn(seed: int, trans_b: bool, alpha: float, beta: float, matmul: bool) -> None:
    rng = np.random.default_rng(seed)
    k, n = 5, 6
    x = rng.standard_normal((3, k)).astype(np.float32)
    w = rng.standard_normal((n, k) if trans_b and not matmul else (k, n)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b")]
    if matmul:
        node = helper.make_node("MatMul", ["x", "w"], ["c"])
    else:
        node = helper.make_node("Gemm", ["x", "w", "b"], ["c"], transB=int(trans_b), alpha=alpha, beta=beta)
    model = _model([node, _bn("c", "y")], x.shape, inits + _bn_params(rng, n))
    _check(model, x, ("BatchNormalization",))


@SETTINGS
@given(convs())
def test_bn_before_unpadded_conv(case) -> None:
    node, inits, x, cout, rng, dims = case
    cin = x.shape[1]
    for a in node.attribute:
        if a.name == "pads":
            a.ints[:] = [0] * len(a.ints)
    bn = _bn("x", "xn")
    node.input[0] = "xn"
    node.output[0] = "y"
    model = _model([bn, node], x.shape, inits + _bn_params(rng, cin))
    _check(model, x, ("BatchNormalization",))


def test_left_alone() -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    # 1. the conv output is read twice
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), _bn("c", "b"), helper.make_node("Add", ["b", "c"], ["y"])]
    out = _check(_model(nodes, x.shape, [w, *_bn_params(rng, 4)]), x, ())
    assert "BatchNormalization" in [n.op_type for n in out.graph.node]
    # 2. BN before a padded conv: zero padding would see the shifted values
    nodes = [_bn("x", "xn"), helper.make_node("Conv", ["xn", "w"], ["y"], pads=[1, 1, 1, 1])]
    out = _check(_model(nodes, x.shape, [w, *_bn_params(rng, 3)]), x, ())
    assert "BatchNormalization" in [n.op_type for n in out.graph.node]
    # 3. a non-constant BN scale
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "c"], ["y"])]
    out = _check(_model(nodes, x.shape, [w]), x, ())
    assert [n.op_type for n in out.graph.node] == ["Conv", "Mul"]
    # 4. a Mul that broadcasts along a spatial axis
    s = numpy_helper.from_array(rng.standard_normal((1, 1, 4, 1)).astype(np.float32), "s")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "s"], ["y"])]
    out = _check(_model(nodes, x.shape, [w, s]), x, ())
    assert [n.op_type for n in out.graph.node] == ["Conv", "Mul"]


def test_rank3_matmul_is_left_alone() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)
    w = numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["c"]), _bn("c", "y")]
    out = _check(_model(nodes, x.shape, [w, *_bn_params(rng, 4)]), x, ())
    assert "BatchNormalization" in [n.op_type for n in out.graph.node]


def test_shared_weight_is_not_changed_in_place() -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 3, 1, 1)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"]),
        _bn("c1", "b1"),
        helper.make_node("Conv", ["b1", "w"], ["y"]),  # the same weight, without BN
    ]
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    _check(_model(nodes, x.shape, [w, *_bn_params(rng, 3)]), x, ("BatchNormalization",))


def test_fold_drops_the_initializers_it_disconnects() -> None:
    # fold-conv-bn removes the old weight and the BN parameters itself (so -O2 needs no extra cleanup round), but a
    # weight another node still reads, and an initializer that was unused before the pass, stay.
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array(rng.standard_normal((3, 3, 1, 1)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((3, 3, 1, 1)).astype(np.float32), "w2")
    spare = numpy_helper.from_array(np.ones(2, np.float32), "spare")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"]),
        _bn("c1", "b1", "bn1"),
        helper.make_node("Conv", ["b1", "w2"], ["c2"]),
        _bn("c2", "b2", "bn2"),
        helper.make_node("Conv", ["b2", "w2"], ["y"]),  # reads w2 as it was
    ]
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    model = _model(nodes, x.shape, [w1, w2, spare, *_bn_params(rng, 3, "bn1"), *_bn_params(rng, 3, "bn2")])
    out = graphopt.optimize(model, passes="fold-conv-bn")
    names = {t.name for t in out.graph.initializer}
    assert "BatchNormalization" not in [n.op_type for n in out.graph.node]
    assert not any(n.startswith(("bn1_", "bn2_")) for n in names), names
    assert "w1" not in names and {"w2", "spare"} <= names, names
    np.testing.assert_allclose(_run(out, x), _run(model, x), rtol=1e-4, atol=1e-4)


def test_pass_table_names_the_rules_and_why_they_declined() -> None:
    """Conv -> BN fires conv-bn; BN -> padded Conv is declined by bn-conv because of the pads; a Mul that broadcasts
    along a spatial axis is declined by conv-affine."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 3, 3, 3)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((3, 3, 1, 1)).astype(np.float32), "w2")
    s = numpy_helper.from_array(rng.standard_normal((1, 1, 6, 1)).astype(np.float32), "s")
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    nodes = [
        _bn("x", "xn", "in"),
        helper.make_node("Conv", ["xn", "w"], ["c"], pads=[1, 1, 1, 1]),
        _bn("c", "b"),
        helper.make_node("Conv", ["b", "w2"], ["c2"]),
        helper.make_node("Mul", ["c2", "s"], ["y"]),
    ]
    model = _model(nodes, x.shape, [w, w2, s, *_bn_params(rng, 3, "in"), *_bn_params(rng, 3)])
    report: list = []
    out = graphopt.optimize(model, passes="fold-conv-bn,dce", report=report)
    np.testing.assert_allclose(_run(out, x), _run(model, x), rtol=1e-4, atol=1e-4)
    assert [n.op_type for n in out.graph.node] == ["BatchNormalization", "Conv", "Conv", "Mul"]
    (stats,) = [st for st in report[0].stats if st.name == "fold-conv-bn"]
    assert stats.counts == {"conv-bn": 1}
    assert stats.declines["bn-conv"] == {"conv pads (padding zeros are not BN's output)": 1}
    assert stats.declines["conv-affine"] == {"not per output channel": 1}


@SETTINGS
@given(
    convs(),
    st.sampled_from(["channel", "scalar", "scalar-1d", "full-rank"]),
    st.sampled_from(["Mul", "Add", "Mul-Add", "Add-Mul"]),
    st.booleans(),
    st.booleans(),
)
def test_affine_before_conv(case, form: str, ops: str, const_first: bool, padded: bool) -> None:
    """a * x + b (PaddlePaddle's learnable affine block) before a Conv folds into its weight and bias: the Mul with any
    padding, the Add only when the Conv has none (padded zeros are not shifted); a padded Conv keeps its Add."""
    node, inits, x, cout, rng, dims = case
    cin = x.shape[1]
    pads = next(a for a in node.attribute if a.name == "pads")
    pads.ints[:] = [int(padded)] * len(pads.ints)
    shape = {"channel": [cin] + [1] * dims, "scalar": [], "scalar-1d": [1], "full-rank": [1, cin] + [1] * dims}[form]
    inits = inits + [
        numpy_helper.from_array(rng.uniform(-2, 2, shape).astype(np.float32), "s"),
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "t"),
    ]
    nodes, prev = [], "x"
    for i, op in enumerate(ops.split("-")):
        c = "s" if op == "Mul" else "t"
        nodes.append(helper.make_node(op, [c, prev] if const_first else [prev, c], [f"a{i}"]))
        prev = f"a{i}"
    node.input[0] = prev
    node.output[0] = "y"
    # a run folds the op next to the Conv, the next run the one before it (as -O2's repeated sweeps do)
    out = _check(_model([*nodes, node], x.shape, inits), x, (), "fold-conv-bn,fold-conv-bn,dce")
    left = [n.op_type for n in out.graph.node if n.op_type != "Conv"]
    # padded: the Mul next to the Conv folds, the Add stays, and a Mul before that Add stays too
    expected = {"Mul": [], "Add": ["Add"], "Mul-Add": ["Mul", "Add"], "Add-Mul": ["Add"]}[ops] if padded else []
    assert left == expected, left


def test_affine_before_conv_left_alone() -> None:
    """A constant that broadcasts x to more channels, one along a spatial axis, a non-finite one, and an Add before a
    padded Conv stay."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((2, 3, 1, 1)).astype(np.float32), "w")
    x1 = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    for c, x, attrs in [
        (rng.standard_normal((3, 1, 1)), x1, {}),  # x has 1 channel: the Mul broadcasts it to 3
        (rng.standard_normal((1, 1, 4, 1)), x1.repeat(3, axis=1), {}),  # per row
        (np.array([np.inf]), x1.repeat(3, axis=1), {}),
        (np.array(0.5), x1.repeat(3, axis=1), {"pads": [1, 1, 1, 1], "op": "Add"}),
    ]:
        op = attrs.pop("op", "Mul")
        inits = [w, numpy_helper.from_array(np.asarray(c, np.float32), "c")]
        nodes = [helper.make_node(op, ["x", "c"], ["a"]), helper.make_node("Conv", ["a", "w"], ["y"], **attrs)]
        out = _check(_model(nodes, x.shape, inits), x, ())
        assert [n.op_type for n in out.graph.node] == [op, "Conv"]
