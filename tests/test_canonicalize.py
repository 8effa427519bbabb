"""passes/canonicalize.py (issue 16: -O2 against the other simplifiers): each rule on a hand-made model, the cases
it must leave alone, inside subgraph bodies, and random graphs through onnxruntime before and after."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.engine.passes_api import level_pipeline
from graphopt.testing import assert_models_close

F, D = TensorProto.FLOAT, TensorProto.DOUBLE
NP = {F: np.float32, D: np.float64}


def _model(nodes, inits, x_shape, opset=17, dtype=F, inputs=None):
    ins = inputs or [helper.make_tensor_value_info("x", dtype, list(x_shape))]
    g = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", dtype, None)], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _gemm(model: onnx.ModelProto, passes="fuse-gemm"):
    report: list = []
    out = graphopt.optimize(model, passes=passes, report=report)
    return out, report[0].stats[0]


def _matmul_add(m, k, n, bias_shape, *, dtype=F, swap=False, seed=0, x_shape=None, opset=17):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)).astype(NP[dtype])
    c = rng.standard_normal(bias_shape).astype(NP[dtype])
    add_in = ["c", "p"] if swap else ["p", "c"]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Add", add_in, ["y"])]
    return _model(nodes, [_init("w", w), _init("c", c)], x_shape or (m, k), opset=opset, dtype=dtype)


def test_matmul_add_becomes_gemm():
    model = _matmul_add(4, 5, 3, (3,))
    out, stats = _gemm(model)
    assert _ops(out) == ["Gemm"]
    assert stats.counts == {"matmul-add-to-gemm": 1}
    assert_models_close(model, out)


@pytest.mark.parametrize(
    "x_shape, bias_shape, reason",
    [
        ((2, 4, 5), (3,), "A or B not known to be 2D"),  # batched MatMul: not Gemm's product
        ((4, 5), (2, 4, 3), "bias rank unknown or above 2"),  # the Add broadcasts the product up
        ((1, 5), (4, 3), "bias does not broadcast unidirectionally to (M, N)"),  # Add output (4, 3), Gemm's (1, 3)
        ((4, 5), (4, 1), None),  # (M, 1) broadcasts: fused
    ],
)
def test_gemm_only_where_exact(x_shape, bias_shape, reason):
    model = _matmul_add(x_shape[-2], 5, 3, bias_shape, x_shape=x_shape)
    out, stats = _gemm(model)
    if reason is None:
        assert _ops(out) == ["Gemm"]
    else:
        assert _ops(out) == ["MatMul", "Add"]
        assert stats.declines["matmul-add-to-gemm"] == {reason: 1}
    assert_models_close(model, out)


def test_gemm_integer_and_old_opset_left_alone():
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [4, 5])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Add", ["p", "c"], ["y"])]
    g = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
                          [_init("w", np.ones((5, 3), np.int64)), _init("c", np.ones(3, np.int64))])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    out, stats = _gemm(model)
    assert _ops(out) == ["MatMul", "Add"]
    assert "element type" in next(iter(stats.declines["matmul-add-to-gemm"]))
    out6, _ = _gemm(_matmul_add(4, 5, 3, (3,), opset=6))
    assert _ops(out6) == ["MatMul", "Add"]


def test_gemm_product_read_elsewhere_or_as_bias_left_alone():
    w = _init("w", np.ones((5, 5), np.float32))
    shared = _model([helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Add", ["p", "c"], ["q"]),
                     helper.make_node("Mul", ["p", "q"], ["y"])], [w, _init("c", np.ones(5, np.float32))], (4, 5))
    assert _ops(_gemm(shared)[0]) == ["MatMul", "Add", "Mul"]
    twice = _model([helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Add", ["p", "p"], ["y"])], [w],
                   (4, 5))
    out, _ = _gemm(twice)
    assert _ops(out) == ["MatMul", "Add"]
    assert_models_close(twice, out)


def test_gemm_after_reshape_of_unknown_shape():
    """A Reshape to a two-element constant shape is 2D whatever shape inference knows (ppocrv4-cls's classifier head:
    GlobalAveragePool -> Reshape [-1, C] -> MatMul -> Add)."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),  # a shape inference cannot resolve statically
        helper.make_node("Reshape", ["x", "s"], ["x2"]),
        helper.make_node("Reshape", ["x2", "t"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["p"]),
        helper.make_node("Add", ["c", "p"], ["y"]),
    ]
    inits = [_init("t", np.array([-1, 6], np.int64)), _init("w", rng.standard_normal((6, 2)).astype(np.float32)),
             _init("c", rng.standard_normal(2).astype(np.float32))]
    model = _model(nodes, inits, ("n", 6, 1, 1))
    out, stats = _gemm(model)
    assert "Gemm" in _ops(out) and "MatMul" not in _ops(out), stats
    assert_models_close(model, out, shapes={"x": (3, 6, 1, 1)})


def test_gemm_inside_if_branch():
    rng = np.random.default_rng(2)
    body_nodes = [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Add", ["p", "c"], ["o"])]
    branch = helper.make_graph(body_nodes, "then", [], [helper.make_tensor_value_info("o", F, [4, 3])])
    other = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["o2"])], "else", [],
                              [helper.make_tensor_value_info("o2", F, [4, 3])])
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)]
    inputs = [helper.make_tensor_value_info("x", F, [4, 5]),
              helper.make_tensor_value_info("cond", TensorProto.BOOL, [])]
    inits = [_init("w", rng.standard_normal((5, 3)).astype(np.float32)),
             _init("c", rng.standard_normal(3).astype(np.float32))]
    model = _model(nodes, inits, None, inputs=inputs)
    out, stats = _gemm(model)
    bodies = {a.name: [n.op_type for n in a.g.node] for a in out.graph.node[0].attribute}
    assert bodies == {"then_branch": ["Gemm"], "else_branch": ["MatMul"]}, stats
    x = rng.standard_normal((4, 5)).astype(np.float32)
    for c in (True, False):
        assert_models_close(model, out, {"x": x, "cond": np.array(c)})


def test_fuse_gemm_is_in_o2_before_parallel_fusion():
    names = [p.name for p in level_pipeline(2)]
    assert names.index("canonicalize") < names.index("fuse-parallel-matmul")
    # two parallel Linear layers: two Gemms (2 nodes), not MatMul + Split + 2 Adds
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["p1"]), helper.make_node("Add", ["p1", "c1"], ["a"]),
             helper.make_node("MatMul", ["x", "w2"], ["p2"]), helper.make_node("Add", ["p2", "c2"], ["b"]),
             helper.make_node("Concat", ["a", "b"], ["y"], axis=1)]
    inits = [_init(n, rng.standard_normal(s).astype(np.float32)) for n, s in
             (("w1", (5, 3)), ("c1", (3,)), ("w2", (5, 2)), ("c2", (2,)))]
    model = _model(nodes, inits, (4, 5))
    out = graphopt.optimize(model, level=2)
    assert sorted(_ops(out)) == ["Concat", "Gemm", "Gemm"]
    assert_models_close(model, out)


_BIAS = st.sampled_from(["n", "1n", "mn", "m1", "1", "", "11", "2mn", "k"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(1, 4), k=st.integers(1, 5), n=st.integers(1, 4), bias=_BIAS, swap=st.booleans(),
       double=st.booleans(), batched=st.booleans(), seed=st.integers(0, 2**16))
def test_random_matmul_add_equal_under_onnxruntime(m, k, n, bias, swap, double, batched, seed):
    dims = {"n": n, "m": m, "1": 1, "2": 2, "k": k}
    shape = tuple(dims[c] for c in bias)
    x_shape = (2, m, k) if batched else (m, k)
    try:  # only models onnxruntime itself accepts (a bias of k columns broadcasts only when k == n or 1)
        np.broadcast_shapes(x_shape[:-1] + (n,), shape)
    except ValueError:
        return
    model = _matmul_add(m, k, n, shape, dtype=D if double else F, swap=swap, seed=seed, x_shape=x_shape)
    out, stats = _gemm(model)
    fused = "Gemm" in _ops(out)
    out_shape = np.broadcast_shapes(x_shape[:-1] + (n,), shape)
    assert fused == (not batched and len(shape) <= 2 and out_shape == (m, n)), (x_shape, shape, stats.declines)
    assert_models_close(model, out, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# push-transposes, sub-const-to-add
# --------------------------------------------------------------------------------------------------------------------
def test_nhwc_batchnorm_between_transposes_folds_into_the_conv():
    """opennsfw-torch (tf2onnx): Conv -> Transpose to NHWC -> Add, Sub, Mul, Add with (1, 1, 1, C) constants ->
    Relu -> Transpose back. -O2 moves the first Transpose down until it meets the second; the constants fold into the
    Conv."""
    rng = np.random.default_rng(4)
    ch = 4
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
        helper.make_node("Add", ["t", "b0"], ["a0"]),
        helper.make_node("Sub", ["a0", "mean"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["m"]),
        helper.make_node("Add", ["m", "beta"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r"]),
        helper.make_node("Transpose", ["r"], ["y"], perm=[0, 3, 1, 2]),
    ]
    vec = {n: rng.standard_normal((1, 1, 1, ch)).astype(np.float32) for n in ("b0", "mean", "scale", "beta")}
    inits = [_init("w", rng.standard_normal((ch, 3, 3, 3)).astype(np.float32))] + [_init(n, a) for n, a in vec.items()]
    model = _model(nodes, inits, (1, 3, 8, 8))
    report: list = []
    out = graphopt.optimize(model, level=2, report=report)
    assert _ops(out) == ["Conv", "Relu"]
    stats = {s.name: s for s in report[0].stats}
    assert stats["canonicalize"].counts["transpose-through-binary"] == 4
    assert stats["canonicalize"].counts["sub-const-to-add"] == 1
    assert_models_close(model, out, rtol=1e-4, atol=1e-5)


def test_push_transposes_leaves_broadcasting_up_and_shared_transposes_alone():
    big = _init("c", np.ones((1, 3, 4, 5), np.float32))  # the Add output is larger than the Transpose's
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), helper.make_node("Add", ["t", "c"], ["y"])]
    up = _model(nodes, [big], (1, 5, 1, 1))
    out, stats = _gemm(up, "push-transposes")
    assert _ops(out) == ["Transpose", "Add"]
    assert stats.declines["transpose-through-binary"] == {"constant may broadcast the tensor up": 1}
    shared = _model([helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]), helper.make_node("Relu", ["t"], ["r"]),
                     helper.make_node("Add", ["r", "t"], ["y"])], [], (3, 2))
    out, _ = _gemm(shared, "push-transposes")
    assert _ops(out) == ["Transpose", "Relu", "Add"]


def test_sub_const_to_add_is_bit_exact_and_float_only():
    rng = np.random.default_rng(5)
    c = _init("c", rng.standard_normal(3).astype(np.float32))
    model = _model([helper.make_node("Sub", ["x", "c"], ["y"])], [c], (2, 3))
    out, stats = _gemm(model, "sub-const-to-add")
    assert _ops(out) == ["Add"] and stats.counts == {"sub-const-to-add": 1}
    assert_models_close(model, out, rtol=0, atol=0)
    x = helper.make_tensor_value_info("x", TensorProto.INT32, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, None)
    c = _init("c", np.ones(3, np.int32))
    g = helper.make_graph([helper.make_node("Sub", ["x", "c"], ["y"])], "g", [x], [y], [c])
    out, _ = _gemm(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), "sub-const-to-add")
    assert _ops(out) == ["Sub"]


_UNARY_OPS = ["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp", ("LeakyRelu", {"alpha": 0.3}), ("Clip", {})]


@st.composite
def _transpose_chains(draw):
    rank = draw(st.integers(2, 4))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=rank, max_size=rank)))
    perm = draw(st.permutations(range(rank)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    tshape = tuple(shape[p] for p in perm)
    nodes = [helper.make_node("Transpose", ["x"], ["v0"], perm=list(perm))]
    inits = []
    for i in range(draw(st.integers(1, 4))):
        src, dst = f"v{i}", f"v{i + 1}"
        if draw(st.booleans()):
            op = draw(st.sampled_from(["Add", "Sub", "Mul", "Div", "Max", "Min"]))
            crank = draw(st.integers(0, rank))
            cshape = tuple(d if draw(st.booleans()) else 1 for d in tshape[rank - crank:])
            c = rng.uniform(0.5, 2.0, cshape).astype(np.float32)
            inits.append(_init(f"c{i}", c))
            ins = [src, f"c{i}"] if draw(st.booleans()) else [f"c{i}", src]
            nodes.append(helper.make_node(op, ins, [dst]))
        else:
            entry = draw(st.sampled_from(_UNARY_OPS))
            op, attrs = entry if isinstance(entry, tuple) else (entry, {})
            ins = [src]
            if op == "Clip":
                inits += [_init(f"lo{i}", np.float32(-0.5)), _init(f"hi{i}", np.float32(0.7))]
                ins += [f"lo{i}", f"hi{i}"]
            nodes.append(helper.make_node(op, ins, [dst], **attrs))
    last = len(nodes) - 1
    back = list(np.argsort(perm)) if draw(st.booleans()) else list(range(rank))
    nodes.append(helper.make_node("Transpose", [f"v{last}"], ["y"], perm=[int(p) for p in back]))
    return _model(nodes, inits, shape), shape


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_transpose_chains())
def test_random_transpose_chains_equal_under_onnxruntime(case):
    model, shape = case
    out, stats = _gemm(model, "push-transposes,sub-const-to-add,cleanup")
    assert len(out.graph.node) <= len(model.graph.node)
    if not stats.declines:  # nothing held a Transpose back: it reached the end (and merged with the last) or cancelled
        assert "Transpose" not in _ops(out)[:-1]
    assert_models_close(model, out, rtol=1e-6, atol=1e-6)
    report: list = []  # -O2 knows every shape: the non-scalar constants move too
    out2 = graphopt.optimize(model, level=2, report=report)
    push = next(s for s in report[0].stats if s.name == "canonicalize")
    if not any(r.startswith("transpose-") for r in push.declines):
        assert "Transpose" not in _ops(out2)[:-1]
    assert_models_close(model, out2, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------------
# reduce-of-transpose, merge-reshapes, merge-concats, fold-conv-input-scale
# --------------------------------------------------------------------------------------------------------------------
def _one(model, passes):
    out, stats = _gemm(model, passes)
    assert_models_close(model, out, rtol=1e-5, atol=1e-6)
    return _ops(out), stats


@pytest.mark.parametrize(
    "perm, axes, keepdims, fused",
    [
        ([0, 2, 3, 1], [1, 2], 0, True),  # dnsmos: NHWC ReduceMax over H, W -> (N, C)
        ([0, 2, 3, 1], [-3, -2], 0, True),
        ([0, 2, 3, 1], [1], 0, False),  # kept (N, W, C) would come out as (N, C, W)
        ([0, 2, 3, 1], [1, 2], 1, False),
        ([3, 2, 1, 0], None, 0, True),  # every axis
    ],
)
@pytest.mark.parametrize("opset", [13, 18])
def test_reduce_of_transpose(perm, axes, keepdims, fused, opset):
    extra = {}
    inputs = ["t"]
    inits = []
    if axes is not None and opset >= 18:
        inputs.append("axes")
        inits.append(_init("axes", np.array(axes, np.int64)))
    elif axes is not None:
        extra["axes"] = axes
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=perm),
             helper.make_node("ReduceMax", inputs, ["y"], keepdims=keepdims, **extra)]
    ops, _ = _one(_model(nodes, inits, (2, 3, 4, 5), opset=opset), "push-transposes")
    assert ops == (["ReduceMax"] if fused else ["Transpose", "ReduceMax"])


@pytest.mark.parametrize(
    "first, second, fused",
    [
        (("Reshape", [-1, 20, 1]), ("Unsqueeze", [-3]), True),  # basic-pitch: Reshape -> Unsqueeze -> Reshape
        (("Reshape", [2, 1, 60]), ("Squeeze", [1]), True),
        (("Reshape", [2, -1, 60]), ("Squeeze", [1]), False),  # -1 may not be 1
        (("Reshape", [0, 60]), ("Unsqueeze", [1]), False),  # 0 copies a dim of the input
        (("Unsqueeze", [0]), ("Reshape", [4, 30]), True),
        (("Flatten", None), ("Reshape", [-1, 6, 20]), True),
        (("Unsqueeze", [0]), ("Reshape", [0, 30, 4]), False),
    ],
)
def test_merge_reshapes(first, second, fused):
    inits, nodes, src = [], [], "x"
    for i, (op, arg) in enumerate((first, second)):
        out = "y" if i else "m"
        if op == "Reshape":
            inits.append(_init(f"s{i}", np.array(arg, np.int64)))
            nodes.append(helper.make_node("Reshape", [src, f"s{i}"], [out]))
        elif op == "Flatten":
            nodes.append(helper.make_node("Flatten", [src], [out]))
        else:
            inits.append(_init(f"a{i}", np.array(arg, np.int64)))
            nodes.append(helper.make_node(op, [src, f"a{i}"], [out]))
        src = out
    ops, stats = _one(_model(nodes, inits, (2, 3, 20)), "merge-reshapes")
    assert (ops == ["Reshape"]) == fused, (ops, stats.declines)


def test_merge_concats():
    nodes = [
        helper.make_node("Concat", ["x", "x"], ["a"], axis=1),
        helper.make_node("Concat", ["x", "a"], ["b"], axis=1),
        helper.make_node("Concat", ["x", "x"], ["c"], axis=0),  # another axis: stays
        helper.make_node("Concat", ["a", "x"], ["d"], axis=1),  # 'a' read twice: not spliced into 'b' nor 'd'
        helper.make_node("Concat", ["b", "x", "d"], ["e"], axis=1),
        helper.make_node("Concat", ["e", "e"], ["f"], axis=0),
        helper.make_node("Concat", ["c", "c"], ["y"], axis=0),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [2, 3])],
                          [helper.make_tensor_value_info("y", F, None), helper.make_tensor_value_info("f", F, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    out, stats = _gemm(model, "merge-concats,dce")
    assert_models_close(model, out)
    # b and d (read once, by e, same axis) are spliced into e, c (another axis than e, but y's) into y; a, read by b
    # and d, stays until they are gone; f (axis 0 over e, axis 1) keeps e
    assert _ops(out).count("Concat") <= 4 and stats.counts["concat-of-concat"] >= 2
    inputs = {n.output[0]: list(n.input) for n in out.graph.node}
    assert inputs["y"] == ["x"] * 4


@pytest.mark.parametrize(
    "scale, fused",
    [
        (0.5, True),
        (np.array([[0.3]]), True),
        (np.array([1.0, 2.0, 3.0]).reshape(1, 3, 1, 1), False),  # per channel: not this rule
        (np.inf, False),
        (1e38, False),  # W * s overflows
    ],
)
def test_fold_conv_input_scale(scale, fused):
    big = np.size(scale) == 1 and float(np.ravel(scale)[0]) >= 1e30
    """ppocrv6's GELU: Conv -> x * (1 + erf) * 0.5 -> Conv; the 0.5 goes into the next Conv's weight."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * (1e3 if big else 1)
    nodes = [helper.make_node("Mul", ["s", "x"], ["m"]),
             helper.make_node("Conv", ["m", "w", "b"], ["y"], pads=[1, 1, 1, 1])]
    inits = [_init("s", np.asarray(scale, np.float32)), _init("w", w), _init("b", np.ones(4, np.float32))]
    model = _model(nodes, inits, (1, 3, 5, 5))
    out, stats = _gemm(model, "fold-conv-input-scale")
    assert (_ops(out) == ["Conv"]) == fused, stats.declines
    if not big:
        assert_models_close(model, out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("zero", [True, False])
def test_drop_zero_rnn_states(op, zero):
    """romanizer: Shape -> Gather -> Unsqueeze -> Concat -> ConstantOfShape(0) -> Slice as a GRU's initial_h."""
    rng = np.random.default_rng(7)
    hidden, gates = 3, {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    w = rng.standard_normal((1, gates * hidden, 2)).astype(np.float32)
    r = rng.standard_normal((1, gates * hidden, hidden)).astype(np.float32)
    value = helper.make_tensor("v", F, [1], [0.0 if zero else 0.5])
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i1"], ["bsz"], axis=0),
        helper.make_node("Unsqueeze", ["bsz", "ax0"], ["bsz1"]),
        helper.make_node("Concat", ["two", "bsz1", "hid"], ["shape"], axis=0),
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], value=value),
        helper.make_node("Slice", ["zeros", "st", "en", "ax0"], ["h0"]),
    ]
    state_inputs = ["x", "w", "r", "", "", "h0"] + (["h0"] if op == "LSTM" else [])
    nodes.append(helper.make_node(op, state_inputs, ["y", "yh"], hidden_size=hidden))
    nodes.append(helper.make_node("Identity", ["y"], ["out"]))
    inits = [_init("w", w), _init("r", r), _init("i1", np.array(1, np.int64)), _init("ax0", np.array([0], np.int64)),
             _init("two", np.array([2], np.int64)), _init("hid", np.array([hidden], np.int64)),
             _init("st", np.array([0], np.int64)), _init("en", np.array([1], np.int64))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [5, "b", 2])],
                          [helper.make_tensor_value_info("out", F, None), helper.make_tensor_value_info("yh", F, None)],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    out, stats = _gemm(model, "drop-zero-rnn-states,dce")
    ops = _ops(out)
    assert ("ConstantOfShape" not in ops and "Shape" not in ops) == zero, (ops, stats.declines)
    assert_models_close(model, out, shapes={"x": (5, 2, 2)})


def test_drop_zero_lstm_states_from_expand_and_concat():
    """oww-hey-mycroft (tf2onnx): Expand(0.0, [batch, hidden]) -> Unsqueeze -> Concat of two as a bidirectional
    LSTM's initial_h and initial_c."""
    rng = np.random.default_rng(8)
    hidden = 3
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "one", "two"], ["bsz"]),
        helper.make_node("Concat", ["bsz", "hid"], ["shape"], axis=0),
        helper.make_node("Expand", ["zero", "shape"], ["e"]),
        helper.make_node("Unsqueeze", ["e", "ax0"], ["u"]),
        helper.make_node("Concat", ["u", "u"], ["h0"], axis=0),
        helper.make_node("LSTM", ["x", "w", "r", "", "", "h0", "h0"], ["y"], hidden_size=hidden,
                         direction="bidirectional"),
    ]
    inits = [_init("w", rng.standard_normal((2, 4 * hidden, 2)).astype(np.float32)),
             _init("r", rng.standard_normal((2, 4 * hidden, hidden)).astype(np.float32)),
             _init("one", np.array([1], np.int64)), _init("two", np.array([2], np.int64)),
             _init("hid", np.array([hidden], np.int64)), _init("zero", np.array(0.0, np.float32)),
             _init("ax0", np.array([0], np.int64))]
    model = _model(nodes, inits, (4, "b", 2))
    out, stats = _gemm(model, "drop-zero-rnn-states,dce")
    assert _ops(out) == ["LSTM"], stats.declines
    assert_models_close(model, out, shapes={"x": (4, 3, 2)})


@pytest.mark.parametrize("same", [True, False])
def test_reshape_to_own_shape(same):
    """ppocrv6-small-rec: Reshape(Mul(s, c), Shape(s)) is the Mul."""
    nodes = [
        helper.make_node("Mul", ["x", "c"], ["m"]),
        helper.make_node("Shape", ["x" if same else "z"], ["s"]),
        helper.make_node("Reshape", ["m", "s"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", F, ["n", 3, "w"]),
              helper.make_tensor_value_info("z", F, ["w", 3, "n"])]
    model = _model(nodes, [_init("c", np.float32(2.0))], None, inputs=inputs)
    report: list = []
    out = graphopt.optimize(model, level=2, report=report)
    assert ("Reshape" not in _ops(out)) == same
    assert_models_close(model, out, shapes={"x": (2, 3, 2), "z": (2, 3, 2)})


def test_drop_zero_states_of_dynamic_quantize_lstm():
    """voicefilter-embedder-int8: Expand(0.0, Concat(...)) -> Slice as com.microsoft DynamicQuantizeLSTM states."""
    rng = np.random.default_rng(9)
    hidden = 3
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], start=1, end=2),
        helper.make_node("Concat", ["one", "s", "hid"], ["shape"], axis=0),
        helper.make_node("Expand", ["zero", "shape"], ["h0"]),
        helper.make_node("DynamicQuantizeLSTM", ["x", "w", "r", "", "", "h0", "h0", "", "ws", "wz", "rs", "rz"],
                         ["y"], domain="com.microsoft", hidden_size=hidden),
    ]
    inits = [_init("w", rng.integers(-100, 100, (1, 2, 4 * hidden)).astype(np.int8)),
             _init("r", rng.integers(-100, 100, (1, hidden, 4 * hidden)).astype(np.int8)),
             _init("ws", np.array([0.01], np.float32)), _init("wz", np.array([0], np.int8)),
             _init("rs", np.array([0.01], np.float32)), _init("rz", np.array([0], np.int8)),
             _init("one", np.array([1], np.int64)), _init("hid", np.array([hidden], np.int64)),
             _init("zero", np.array(0.0, np.float32))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [4, "b", 2])],
                          [helper.make_tensor_value_info("y", F, None)], inits)
    model = helper.make_model(g, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                               helper.make_opsetid("com.microsoft", 1)])
    out, stats = _gemm(model, "drop-zero-rnn-states,dce")
    assert _ops(out) == ["DynamicQuantizeLSTM"], stats.declines
    assert_models_close(model, out, shapes={"x": (4, 3, 2)})


@pytest.mark.parametrize("shared", [True, False])
def test_shape_of_transpose(shared):
    """chars2vec: Shape(Transpose(x)) beside Shape(x) -> one Shape(x) and a Gather (after cse)."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2]), helper.make_node("Shape", ["t"], ["s1"])]
    if shared:
        nodes += [helper.make_node("Shape", ["x"], ["s2"]), helper.make_node("Concat", ["s1", "s2"], ["y"], axis=0)]
    else:
        nodes += [helper.make_node("Identity", ["s1"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, ["a", "b", 2])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    out, stats = _gemm(model, "push-transposes,cse,dce")
    ops = _ops(out)
    assert ("Transpose" not in ops and ops.count("Shape") == 1) == shared, (ops, stats.declines)
    assert_models_close(model, out, shapes={"x": (3, 4, 2)})


@pytest.mark.parametrize("form", ["div", "reciprocal", "div-swapped", "not-one", "one-of-higher-rank"])
def test_mul_reciprocal_to_div(form):
    """t5 (RMSNorm): x * (1 / sqrt(var + eps)) -> x / sqrt(var + eps)."""
    one = np.float32(2.0 if form == "not-one" else 1.0)
    if form == "one-of-higher-rank":
        one = np.ones((1, 1, 1), np.float32)
    nodes = [helper.make_node("Sqrt", ["v"], ["s"])]
    if form == "reciprocal":
        nodes.append(helper.make_node("Reciprocal", ["s"], ["r"]))
    else:
        nodes.append(helper.make_node("Div", ["one", "s"], ["r"]))
    nodes.append(helper.make_node("Mul", ["r", "x"] if form == "div-swapped" else ["x", "r"], ["y"]))
    inputs = [helper.make_tensor_value_info("x", F, [2, 4]), helper.make_tensor_value_info("v", F, [2, 1])]
    model = _model(nodes, [_init("one", one)], None, inputs=inputs)
    out, stats = _gemm(model, "mul-reciprocal-to-div")
    fused = form in ("div", "reciprocal", "div-swapped")
    assert (_ops(out) == ["Sqrt", "Div"]) == fused, (_ops(out), stats.declines)
    feeds = {"x": np.random.default_rng(10).standard_normal((2, 4)).astype(np.float32),
             "v": np.array([[0.5], [3.0]], np.float32)}
    assert_models_close(model, out, feeds, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("axes", [[3], [0], [1, 4], [-1]])
def test_dnsmos_transposes_through_squares_pow_max_unsqueeze(axes):
    """dnsmos: Transpose(a) * Transpose(a) + Transpose(b) * Transpose(b) -> Sqrt -> Pow 2 -> Max eps -> Log ->
    Unsqueeze -> Transpose: the Transposes move down past all of it and merge into the last one."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["ta"], perm=[0, 2, 1]),
        helper.make_node("Transpose", ["z"], ["tb"], perm=[0, 2, 1]),
        helper.make_node("Mul", ["ta", "ta"], ["a2"]),
        helper.make_node("Mul", ["tb", "tb"], ["b2"]),
        helper.make_node("Add", ["a2", "b2"], ["s"]),
        helper.make_node("Sqrt", ["s"], ["r"]),
        helper.make_node("Pow", ["r", "two"], ["p"]),
        helper.make_node("Max", ["eps", "p"], ["mx"]),
        helper.make_node("Log", ["mx"], ["l"]),
        helper.make_node("Unsqueeze", ["l", "axes"], ["u"]),
        helper.make_node("Transpose", ["u"], ["y"], perm=[0, 3, 1, 2]),
    ]
    inits = [_init("two", np.float32(2.0)), _init("eps", np.float32(1e-3)), _init("axes", np.array(axes, np.int64))]
    if len(axes) == 2:
        nodes[-1] = helper.make_node("Identity", ["u"], ["y"])
    inputs = [helper.make_tensor_value_info("x", F, [2, 3, 4]), helper.make_tensor_value_info("z", F, [2, 3, 4])]
    model = _model(nodes, inits, None, inputs=inputs)
    out, stats = _gemm(model, "push-transposes,cleanup")
    assert _ops(out).count("Transpose") == 1, (_ops(out), stats.declines)
    assert _ops(out)[-1] in ("Transpose", "Identity") and "Transpose" not in _ops(out)[:-1]
    assert_models_close(model, out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "op, c1, c2, fused",
    [
        ("Mul", np.float32(0.43429446), np.float32(10.0), True),  # basic-pitch: log10 in dB
        ("Add", np.ones((1, 4), np.float32), np.full((1, 4), 2.0, np.float32), True),
        ("Add", np.ones((3, 1), np.float32), np.ones((1, 4), np.float32), False),  # (3, 4) constant: larger
        ("Mul", np.float32(1e30), np.float32(1e30), False),  # overflows
        ("Add", np.ones((1, 1, 4), np.float32), np.float32(1.0), False),  # raises x's rank
    ],
)
def test_merge_const_chains(op, c1, c2, fused):
    nodes = [helper.make_node(op, ["c1", "x"], ["a"]), helper.make_node(op, ["a", "c2"], ["y"])]
    model = _model(nodes, [_init("c1", c1), _init("c2", c2)], (3, 4))
    out = graphopt.optimize(model, passes="merge-const-chains")
    assert (_ops(out) == [op]) == fused, _ops(out)
    assert _ops(graphopt.optimize(model, level=2)) == [op, op]  # -O2 keeps the chain bit-exact
    assert_models_close(model, out, rtol=1e-5, atol=1e-6)
