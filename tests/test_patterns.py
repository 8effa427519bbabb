"""The pattern rewrite API: matching (commutative inputs, repeated names, attribute and constant conditions, private
and shared inner values), priorities, conditions, declined replacements, subgraphs, firing counts; and random graphs
under onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.errors import PassError
from graphopt.patterns import Const, Op, PatternError, Rule, Var, register_rules
from graphopt.testing import assert_models_close
from graphopt.testing.strategies import feeds, models

F = TensorProto.FLOAT


pytestmark = pytest.mark.usefixtures("pass_registry")  # passes registered here are forgotten after each test


def _model(nodes, inits=(), outputs=("y",), shape=(2, 3)) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F, list(shape))],
        [helper.make_tensor_value_info(o, F, None) for o in outputs],
        list(inits),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _ops(m: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in m.graph.node]


def _run(passes: str, model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    report: list = []
    out = graphopt.optimize(model, passes=passes, report=report)
    counts: dict[str, int] = {}
    for s in report[0].stats:
        for k, v in s.counts.items():
            counts[k] = counts.get(k, 0) + v
    return out, counts


TWO = Const("two", where=lambda a: a.size == 1 and float(a.reshape(-1)[0]) == 2.0)


@pytest.mark.parametrize("order", [["x", "two"], ["two", "x"]])
def test_commutative_constant_condition_and_counts(order) -> None:
    register_rules(
        "test-mul2",
        [Rule("mul2", Op("Mul", Var("x"), TWO, commutative=True), lambda m, b: b.op("Add", m["x"], m["x"]))],
    )
    two = numpy_helper.from_array(np.array(2, np.float32), "two")
    model = _model([helper.make_node("Mul", order, ["y"])], [two])
    out, counts = _run("test-mul2,dce", model)
    assert _ops(out) == ["Add"] and counts == {"mul2": 1}
    assert_models_close(model, out)


def test_repeated_var_must_be_the_same_value() -> None:
    register_rules(
        "test-square", [Rule("square", Op("Mul", Var("a"), Var("a")), lambda m, b: b.op("Pow", m["a"], np.float32(2)))]
    )
    same = _model([helper.make_node("Mul", ["x", "x"], ["y"])])
    other = _model([helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Mul", ["x", "n"], ["y"])])
    assert _ops(_run("test-square", same)[0]) == ["Pow"]
    assert _ops(_run("test-square", other)[0]) == ["Neg", "Mul"]


def _neg_neg(shared: bool) -> Rule:
    return Rule("neg-neg", Op("Neg", Op("Neg", Var("x"), shared=shared)), lambda m, b: m["x"])


@pytest.mark.parametrize("shared", [False, True])
def test_inner_value_read_elsewhere(shared: bool) -> None:
    register_rules("test-negneg", [_neg_neg(shared)])
    nodes = [
        helper.make_node("Neg", ["x"], ["n1"]),
        helper.make_node("Neg", ["n1"], ["y"]),
        helper.make_node("Relu", ["n1"], ["z"]),
    ]
    model = _model(nodes, outputs=("y", "z"))
    out, counts = _run("test-negneg,dce", model)
    assert counts == ({"neg-neg": 1} if shared else {})
    # shared: the outer Neg goes, and y = x keeps its name through an Identity; private: nothing may change
    assert _ops(out) == (["Neg", "Relu", "Identity"] if shared else ["Neg", "Neg", "Relu"])
    assert [o.name for o in out.graph.output] == ["y", "z"]
    assert_models_close(model, out)


def test_inner_graph_output_is_never_private() -> None:
    register_rules("test-negneg", [_neg_neg(False)])
    model = _model(
        [helper.make_node("Neg", ["x"], ["n1"]), helper.make_node("Neg", ["n1"], ["y"])], outputs=("y", "n1")
    )
    assert _run("test-negneg", model)[1] == {}


def test_priority_condition_attributes_and_declines() -> None:
    calls: list[str] = []

    def low(m, b):
        calls.append("low")
        return b.op("Relu", m["x"])

    def high(m, b):
        calls.append("high")
        return None  # declines: the graph is left alone and the next rule is tried

    register_rules(
        "test-prio",
        [
            Rule("low", Op("Softmax", Var("x"), attrs={"axis": -1}), low, priority=0),
            Rule("high", Op("Softmax", Var("x")), high, priority=5),
            Rule("vetoed", Op("Softmax", Var("x")), low, condition=lambda m: False, priority=9),
        ],
    )
    model = _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)])
    out, counts = _run("test-prio,dce", model)
    assert calls[:2] == ["high", "low"] and counts == {"low": 1} and _ops(out) == ["Relu"]
    other_axis = _model([helper.make_node("Softmax", ["x"], ["y"], axis=0)])
    assert _ops(_run("test-prio,dce", other_axis)[0]) == ["Softmax"]


def test_rules_run_inside_subgraphs() -> None:
    register_rules("test-negneg", [_neg_neg(False)])
    branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"])],
        "then",
        [],
        [helper.make_tensor_value_info("b", F, [2, 3])],
    )
    other = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["c"])], "else", [], [helper.make_tensor_value_info("c", F, [2, 3])]
    )
    g = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)],
        "g",
        [helper.make_tensor_value_info("x", F, [2, 3]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", F, None)],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    out, counts = _run("test-negneg,dce", model)
    assert counts == {"neg-neg": 1}
    then = next(a.g for a in out.graph.node[0].attribute if a.name == "then_branch")
    assert [n.op_type for n in then.node] == ["Identity"]  # the branch output keeps its name
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    for cond in (True, False):
        assert_models_close(model, out, inputs={"x": x, "cond": np.array(cond)})


def test_bad_rules_are_refused_when_built() -> None:
    with pytest.raises(PatternError, match="root must be an Op"):
        Rule("r", Var("x"), lambda m, b: None)  # type: ignore[arg-type]
    with pytest.raises(PatternError, match="two inputs"):
        Op("Sum", Var(), Var(), Var(), commutative=True)
    with pytest.raises(PatternError, match="input #1 is 'x'"):
        Op("Add", Var(), "x")  # type: ignore[arg-type]
    with pytest.raises(PatternError, match="replace must be a function"):
        Rule("r", Op("Relu", Var()), replace="x")  # type: ignore[arg-type]
    with pytest.raises(PatternError, match="unique"):
        register_rules("test-dup", [_neg_neg(False), _neg_neg(True)])
    with pytest.raises(PatternError, match="non-empty list of Rule"):
        register_rules("test-empty", [])
    with pytest.raises(PassError, match="invalid pass name"):
        register_rules("Bad Name", [_neg_neg(False)])


def test_invalid_rule_pass_option_is_a_parse_error() -> None:
    register_rules("test-negneg", [_neg_neg(False)])
    with pytest.raises(PassError, match="has no option 'x'"):
        graphopt.optimize(_model([helper.make_node("Relu", ["x"], ["y"])]), passes="test-negneg{x=1}")


# Random graphs: rules that are exact (Neg(Neg(x)) = x, Relu(Relu(x)) = Relu(x), Transpose pairs) keep every output.
EXACT_RULES = [
    _neg_neg(False),
    Rule("relu-relu", Op("Relu", Op("Relu", Var("x"), name="inner", shared=True)), lambda m, b: m["inner"].output),
    Rule("abs-neg", Op("Abs", Op("Neg", Var("x"))), lambda m, b: b.op("Abs", m["x"])),
]


@settings(max_examples=60, deadline=None)
@given(models(max_nodes=14), st.integers(0, 3))
def test_exact_rules_on_random_graphs_keep_outputs(model, extra_negs) -> None:
    register_rules("test-exact", EXACT_RULES, replace=True)
    g = model.graph
    last = g.output[-1].name  # append Neg pairs and Relu pairs so the rules have work
    for i in range(extra_negs):
        g.node.extend([helper.make_node("Neg", [last], [f"p{i}"]), helper.make_node("Neg", [f"p{i}"], [f"q{i}"])])
        last = f"q{i}"
    if extra_negs:
        g.output[-1].name = last
    out, counts = _run("test-exact,dce", model)
    if extra_negs:
        assert counts.get("neg-neg", 0) >= extra_negs
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    assert_models_close(model, out, inputs=feeds(model), rtol=0, atol=0)


def test_replacement_returning_the_root_itself_is_not_a_change() -> None:
    register_rules("test-self", [Rule("self", Op("Relu", Var("x"), name="r"), lambda m, b: m["r"].output)])
    report: list = []
    graphopt.optimize(_model([helper.make_node("Relu", ["x"], ["y"])]), passes="test-self", report=report)
    assert not report[0].changed and report[0].stats[0].counts == {}
