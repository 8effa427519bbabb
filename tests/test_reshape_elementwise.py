"""merge-reshapes' reshape-pair-around-elementwise rule (issue 16, GPT-2's GELU between two Gemms): a Reshape, a DAG of
elementwise ops whose other inputs are one-element constants, and a Reshape back to the first one's input shape lose
both Reshapes; random DAGs through onnxruntime before and after, and the cases it must leave alone."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.testing import assert_models_close

RULE = "reshape-pair-around-elementwise"
F = TensorProto.FLOAT


def _model(nodes, inits, x_shape, outputs=("y",), opset=17):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F, list(x_shape))],
        [helper.make_tensor_value_info(o, F, None) for o in outputs],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _run(model):
    report: list = []
    out = graphopt.optimize(model, passes=["merge-reshapes", "dce"], report=report)
    return out, report[0].stats[0]  # a ModelProto given, a ModelProto back


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _feeds(shape, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _gelu_tanh(src: str, out: str) -> list:
    """GPT-2's tanh GELU: 0.5 x (1 + tanh(0.79788 (x + 0.044715 x^3)))."""
    mk = helper.make_node
    return [
        mk("Mul", [src, "half"], ["g0"]),
        mk("Pow", [src, "three"], ["g1"]),
        mk("Mul", ["g1", "k"], ["g2"]),
        mk("Add", [src, "g2"], ["g3"]),
        mk("Mul", ["g3", "s"], ["g4"]),
        mk("Tanh", ["g4"], ["g5"]),
        mk("Add", ["g5", "one"], ["g6"]),
        mk("Mul", ["g0", "g6"], [out]),
    ]


GELU_CONSTS = {
    "half": np.float32(0.5),
    "three": np.float32(3.0),
    "k": np.float32(0.044715),
    "s": np.float32(0.7978846),
    "one": np.array([1.0], np.float32),  # rank 1: still one element, no higher rank than x
}


def _pair_model(x_shape, first, second, *, extra_nodes=(), outputs=("y",), consts=None, ops=None):
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["r1"])]
    nodes += ops if ops is not None else _gelu_tanh("r1", "e")
    nodes += [helper.make_node("Reshape", ["e", "s2"], ["y"]), *extra_nodes]
    inits = {**(GELU_CONSTS if consts is None else consts), "s1": np.array(first, np.int64)}
    inits["s2"] = np.array(second, np.int64)
    return _model(nodes, inits, x_shape, outputs)


def test_gelu_between_reshapes_loses_both_reshapes():
    model = _pair_model(["n", 8], [-1, 2, 4], [-1, 8])
    out, stats = _run(model)
    assert "Reshape" not in _ops(out)
    assert len(out.graph.node) == 8
    assert stats.counts == {RULE: 1}
    assert_models_close(model, out, _feeds((6, 8)))


def test_computed_first_target_and_static_shape():
    """The first target computed from the input (GPT-2's Concat of Shape dims), the second a constant of x's dims."""
    mk = helper.make_node
    nodes = [
        mk("Shape", ["x"], ["sh"]),
        mk("Slice", ["sh", "zero", "one_i"], ["d0"]),
        mk("Concat", ["d0", "tail"], ["s1"], axis=0),
        mk("Reshape", ["x", "s1"], ["r1"]),
        *_gelu_tanh("r1", "e"),
        mk("Reshape", ["e", "s2"], ["y"]),
    ]
    inits = {
        **GELU_CONSTS,
        "zero": np.array([0], np.int64),
        "one_i": np.array([1], np.int64),
        "tail": np.array([3, 4], np.int64),
        "s2": np.array([5, 12], np.int64),
    }
    model = _model(nodes, inits, [5, 12])
    out, stats = _run(model)
    assert "Reshape" not in _ops(out) and stats.counts == {RULE: 1}
    assert_models_close(model, out, _feeds((5, 12)))


def _declined(model, reason, feeds):
    out, stats = _run(model)
    assert _ops(out).count("Reshape") == 2
    assert stats.declines.get(RULE, {}).get(reason) == 1, stats.declines
    assert_models_close(model, out, feeds)


def test_declines_an_intermediate_read_outside():
    extra = [helper.make_node("ReduceSum", ["g3"], ["z"], keepdims=0)]
    model = _pair_model(["n", 8], [-1, 2, 4], [-1, 8], extra_nodes=extra, outputs=("y", "z"))
    _declined(model, "a value between the Reshapes is read elsewhere or is a graph output", _feeds((6, 8)))


def test_declines_an_intermediate_graph_output():
    model = _pair_model(["n", 8], [-1, 2, 4], [-1, 8], outputs=("y", "g5"))
    _declined(model, "a value between the Reshapes is read elsewhere or is a graph output", _feeds((6, 8)))


def test_declines_the_opening_reshape_read_outside():
    extra = [helper.make_node("Neg", ["r1"], ["z"])]
    model = _pair_model(["n", 8], [-1, 2, 4], [-1, 8], extra_nodes=extra, outputs=("y", "z"))
    _declined(model, "a value between the Reshapes is read elsewhere or is a graph output", _feeds((6, 8)))


def test_declines_a_shape_not_provably_equal():
    # x's second dim is symbolic: [-1, 8] may be x's shape or not
    model = _pair_model([4, "m"], [2, 2, -1], [-1, 8])
    _declined(model, "target not provably the first Reshape's input shape", _feeds((4, 8)))
    # another rank
    model = _pair_model(["n", 8], [-1, 2, 4], [-1, 4, 2])
    _declined(model, "the first Reshape's input shape unknown or of another rank", _feeds((6, 8)))


def test_declines_a_broadcasting_constant():
    consts = {**GELU_CONSTS, "one": np.ones((2, 4), np.float32)}  # not one element: broadcasts per position
    model = _pair_model(["n", 8], [-1, 2, 4], [-1, 8], consts=consts)
    _declined(model, "a constant that is not a single element (it may broadcast)", _feeds((6, 8)))


def test_declines_a_one_element_constant_of_higher_rank_than_x():
    consts = {**GELU_CONSTS, "one": np.ones((1, 1, 1), np.float32)}  # fine on [n, 2, 4]; would raise x's rank
    model = _pair_model(["n", 8], [-1, 2, 4], [-1, 8], consts=consts)
    _declined(model, "a constant of higher rank than the first Reshape's input", _feeds((6, 8)))


def test_declines_a_non_elementwise_node():
    ops = [helper.make_node("Softmax", ["r1"], ["e"], axis=-1)]
    model = _pair_model(["n", 8], [-1, 2, 4], [-1, 8], ops=ops, consts={})
    _declined(model, "reads a node that is not elementwise", _feeds((6, 8)))


# --------------------------------------------------------------------------------------------------------------------
# random DAGs under onnxruntime
# --------------------------------------------------------------------------------------------------------------------
UNARY = ("Tanh", "Sigmoid", "Abs", "Neg", "Relu", "Erf", "Softsign")
BINARY = ("Add", "Sub", "Mul", "Max", "Min")


@st.composite
def _cases(draw):
    rank = draw(st.integers(1, 3))
    x_shape = [draw(st.sampled_from([1, 2, 3, 4])) for _ in range(rank)]
    size = int(np.prod(x_shape))
    first = draw(st.sampled_from([[size], [1, size], [size, 1], [-1], [1, -1, 1]]))
    # the second target: x's shape, maybe one entry as -1 (or, now and then, a shape that is not x's)
    second = list(x_shape)
    if draw(st.booleans()):
        second[draw(st.integers(0, rank - 1))] = -1
    wrong = draw(st.integers(0, 5)) == 0 and rank > 1 and x_shape[0] != x_shape[-1]
    if wrong:
        second = [x_shape[-1], *x_shape[1:-1], x_shape[0]]
    nodes, consts, values = [], {}, ["r1"]
    for i in range(draw(st.integers(1, 6))):
        out = f"v{i}"
        kind = draw(st.sampled_from(["unary", "const", "const_left", "pair"]))
        a = values[-1]  # each node reads the one before it: no dead branch reads the values in between
        if kind == "unary":
            nodes.append(helper.make_node(draw(st.sampled_from(UNARY)), [a], [out]))
        elif kind == "pair":
            b = draw(st.sampled_from(values))
            nodes.append(helper.make_node(draw(st.sampled_from(BINARY)), [a, b], [out]))
        else:
            c_rank = draw(st.integers(0, rank))
            c = np.full((1,) * c_rank, draw(st.floats(-2, 2, width=32)), np.float32)
            consts[f"c{i}"] = c
            ins = [a, f"c{i}"] if kind == "const" else [f"c{i}", a]
            nodes.append(helper.make_node(draw(st.sampled_from(BINARY)), ins, [out]))
        values.append(out)
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["r1"]),
        *nodes,
        helper.make_node("Reshape", [values[-1], "s2"], ["y"]),
    ]
    consts["s1"], consts["s2"] = np.array(first, np.int64), np.array(second, np.int64)
    return _model(nodes, consts, x_shape), x_shape, wrong


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_cases(), seed=st.integers(0, 3))
def test_random_elementwise_dags_between_reshapes_stay_equivalent(case, seed):
    model, x_shape, wrong = case
    out, stats = _run(model)
    assert_models_close(model, out, _feeds(x_shape, seed))
    # every value of these DAGs is read only inside it and every constant is one element of rank <= x's: the pair
    # goes exactly when the second target is x's shape
    assert (stats.counts.get(RULE, 0) == 1) == (not wrong), (stats.counts, stats.declines)
    if not wrong:
        assert "Reshape" not in _ops(out)
