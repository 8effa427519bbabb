"""The widened pattern API (issue 15): optional, omitted and variadic inputs, op alternatives, node capture,
``b.copy``, declines with counted reasons, opset bounds, rule sets, the shape accessor; the README's example rules;
and random graphs rewritten by rules built with these features, equal under onnxruntime."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.cli import main
from graphopt.core.onnx_io import from_proto
from graphopt.engine.passes_api import PassContext, register_pass
from graphopt.patterns import (
    Absent,
    Const,
    Decline,
    Op,
    Opt,
    Or,
    PatternError,
    Rest,
    Rule,
    RuleError,
    RuleSet,
    Var,
    dtype_of,
    match,
    register_rules,
    rewrite,
    shape_of,
)
from graphopt.testing import assert_models_close

F = TensorProto.FLOAT
README = Path(__file__).resolve().parents[1] / "README.md"


pytestmark = pytest.mark.usefixtures("pass_registry")  # passes registered here are forgotten after each test


def _model(nodes, inits=(), outputs=("y",), shape=(1, 3, 4, 4), opset=17, inputs=("x",), domains=()):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, F, list(shape)) for n in inputs],
        [helper.make_tensor_value_info(o, F, None) for o in outputs],
        list(inits),
    )
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(g, opset_imports=opsets, ir_version=8)


def _init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _run(passes: str, model: onnx.ModelProto):
    report: list = []
    out = graphopt.optimize(model, passes=passes, report=report)
    return out, report[0]


def _ops(model) -> list[str]:
    graph = model.graph
    return [n.op_type for n in (graph.node if isinstance(model, onnx.ModelProto) else graph)]


def _x(shape=(1, 3, 4, 4), seed=0) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _weights(seed=0, k=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, 3, k, k)).astype(np.float32), rng.standard_normal(3).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------------
# optional, omitted and variadic inputs
# --------------------------------------------------------------------------------------------------------------------
def _scale_conv(m, b):
    s = m.const("s")
    if s.size != 1 or s.ndim > m.rank("w"):
        return m.decline("not a scalar")
    k = s.reshape(())
    bias = None if m["b"] is None else m.const("b") * k
    return b.copy(m.node("conv"), inputs={1: m.const("w") * k, 2: bias})


CONV_MUL = Rule(
    "conv-mul",
    Op("Mul", Op("Conv", Var("x"), Const("w"), Opt(Const("b")), name="conv"), Const("s"), commutative=True),
    replace=_scale_conv,
)


def _conv_mul_model(bias: bool, scale, mul_first: bool = False, name: str = "conv1") -> onnx.ModelProto:
    w, b = _weights()
    inits = [_init("w", w), _init("s", np.asarray(scale, np.float32))] + ([_init("b", b)] if bias else [])
    conv = helper.make_node("Conv", ["x", "w", *(["b"] if bias else [])], ["c"], name=name, pads=[0, 0, 0, 0])
    mul = helper.make_node("Mul", ["s", "c"] if mul_first else ["c", "s"], ["y"], name="mul")
    return _model([conv, mul], inits)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("mul_first", [False, True])
def test_conv_with_or_without_a_bias_matches_an_opt_input(bias: bool, mul_first: bool) -> None:
    register_rules("test-conv-mul", [CONV_MUL])
    model = _conv_mul_model(bias, 2.5, mul_first)
    out, report = _run("test-conv-mul", model)
    assert _ops(out) == ["Conv"] and report.stats[0].counts == {"conv-mul": 1}
    conv = out.graph.node[0]
    assert conv.name == "conv1" and len(conv.input) == (3 if bias else 2)  # b.copy keeps the name; no bias added
    assert [a.name for a in conv.attribute] == ["pads"]
    assert {i.name for i in out.graph.initializer} == set(conv.input[1:])  # the old weights went with the old Conv
    assert_models_close(model, out, inputs=_x(), rtol=1e-5, atol=1e-5)


def test_omitted_optional_inputs_in_the_middle_and_absent() -> None:
    hi = _init("hi", np.float32(0.5))
    lo = _init("lo", np.float32(-0.5))
    clip_max = _model([helper.make_node("Clip", ["x", "", "hi"], ["y"])], [hi])
    clip_both = _model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [hi, lo])
    clip_none = _model([helper.make_node("Clip", ["x"], ["y"])])
    seen: list[tuple] = []

    def record(m, b):
        seen.append((m["lo"] is None, m["hi"] is None))
        return None

    register_rules("test-clip-opt", [Rule("clip", Op("Clip", Var("x"), Opt(Const("lo")), Opt(Const("hi"))), record)])
    for model in (clip_max, clip_both, clip_none):
        _run("test-clip-opt", model)
    assert seen == [(True, False), (False, False), (True, True)]

    to_min = Rule("clip-max", Op("Clip", Var("x"), Absent(), Const("hi")), lambda m, b: b.op("Min", m["x"], m["hi"]))
    register_rules("test-clip-min", [to_min])
    out, report = _run("test-clip-min,dce", clip_max)
    assert _ops(out) == ["Min"] and report.stats[0].counts == {"clip-max": 1}
    assert_models_close(clip_max, out, inputs=_x())
    assert _ops(_run("test-clip-min", clip_both)[0]) == ["Clip"]  # min given: Absent() refuses it
    assert _ops(_run("test-clip-min", clip_none)[0]) == ["Clip"]  # hi missing: Const() needs it


def _sum_model(n: int) -> onnx.ModelProto:
    ins = [f"x{i}" for i in range(n)]
    return _model([helper.make_node("Sum", ins, ["y"])], inputs=ins, shape=(2, 3))


def _sum_to_adds(m, b):
    acc = m["a"]
    for v in m["rest"]:
        acc = b.op("Add", acc, v)
    return acc


def test_variadic_tail_binds_a_tuple_and_without_it_extra_inputs_do_not_match() -> None:
    register_rules(
        "test-sum",
        [Rule("sum-adds", Op("Sum", Var("a"), Rest(Var(), name="rest", min=1)), _sum_to_adds)],
    )
    for n, fires in ((1, False), (2, True), (4, True)):
        model = _sum_model(n)
        out, report = _run("test-sum", model)
        assert _ops(out) == (["Add"] * (n - 1) if fires else ["Sum"]), n
        feeds = {f"x{i}": np.full((2, 3), i + 0.5, np.float32) for i in range(n)}
        assert_models_close(model, out, inputs=feeds)
    register_rules("test-sum2", [Rule("sum2", Op("Sum", Var("a"), Var("b")), lambda m, b: b.op("Add", m["a"], m["b"]))])
    assert _ops(_run("test-sum2", _sum_model(3))[0]) == ["Sum"]  # three inputs, two listed, no Rest
    assert _ops(_run("test-sum2", _sum_model(2))[0]) == ["Add"]
    ellipsis = Op("Concat", Var("first"), ...)
    assert isinstance(ellipsis.rest, Rest) and ellipsis.rest.pattern is None


# --------------------------------------------------------------------------------------------------------------------
# alternatives, domains, attribute predicates, captured nodes
# --------------------------------------------------------------------------------------------------------------------
NONNEG_ALPHA = {"alpha": lambda a: a is None or a >= 0}


def _relu_after(inner) -> Rule:
    return Rule("relu-after", Op("Relu", inner), replace=lambda m, b: b.op("Relu", m["x"]))


@pytest.mark.parametrize(
    "inner",
    [
        Op(("Relu", "LeakyRelu"), Var("x"), attrs=NONNEG_ALPHA),
        Op("Relu", Var("x")) | Op("LeakyRelu", Var("x"), attrs=NONNEG_ALPHA),
    ],
    ids=["tuple", "or"],
)
@pytest.mark.parametrize(
    "first,alpha,fires",
    [("Relu", None, True), ("LeakyRelu", 0.1, True), ("LeakyRelu", -0.5, False), ("Neg", None, False)],
)
def test_op_type_alternatives_and_attribute_predicates(inner, first, alpha, fires) -> None:
    register_rules("test-relu-after", [_relu_after(inner)])
    attrs = {"alpha": alpha} if alpha is not None else {}
    model = _model([helper.make_node(first, ["x"], ["a"], **attrs), helper.make_node("Relu", ["a"], ["y"])])
    out, report = _run("test-relu-after,dce", model)
    assert _ops(out) == (["Relu"] if fires else [first, "Relu"])
    assert_models_close(model, out, inputs=_x())


def test_root_alternatives_and_domain_qualified_op_types() -> None:
    gelu = helper.make_node("Gelu", ["x"], ["a"], domain="com.microsoft")
    model = _model([gelu, helper.make_node("Relu", ["a"], ["y"])], domains=("com.microsoft",))
    ir = from_proto(model)
    node = next(iter(ir.graph))
    ctx = PassContext(model=ir)
    assert match(Rule("r", Op("com.microsoft::Gelu", Var()), lambda m, b: None), node, ir.graph, ctx)
    assert match(Rule("r", Op(("Erf", "com.microsoft::Gelu"), Var()), lambda m, b: None), node, ir.graph, ctx)
    assert match(Rule("r", Op("Gelu", Var(), domain="com.microsoft"), lambda m, b: None), node, ir.graph, ctx)
    assert not match(Rule("r", Op("Gelu", Var()), lambda m, b: None), node, ir.graph, ctx)  # standard Gelu only
    root_or = Rule("r", Op("Abs", Var("x")) | Op("com.microsoft::Gelu", Var("x"), name="g"), lambda m, b: None)
    assert root_or.op_types == {"Abs", "Gelu"}
    m = match(root_or, node, ir.graph, ctx)
    assert m is not None and m.node("g") is node and m.value("x") is node.inputs[0]
    with pytest.raises(PatternError, match="root must be an Op"):
        Rule("r", Op("Abs", Var()) | Var(), lambda m, b: None)
    assert isinstance(Op("A") | Op("B") | Op("C"), Or) and len((Op("A") | Op("B") | Op("C")).alternatives) == 3


def test_inner_alternatives_backtrack_to_the_next_one() -> None:
    rule = Rule("neg-neg", RANDOM_RULES[4].pattern, lambda m, b: m["x"])
    register_rules("test-inner-or", [rule])
    for chain in (["Neg", "Neg"], ["Neg", "Identity", "Neg"]):
        values = ["x", *(f"v{i}" for i in range(len(chain) - 1)), "y"]
        nodes = [helper.make_node(op, [values[i]], [values[i + 1]]) for i, op in enumerate(chain)]
        model = _model(nodes)
        out, report = _run("test-inner-or,dce", model)
        assert report.stats[0].counts == {"neg-neg": 1} and _ops(out) == ["Identity"], chain
        assert_models_close(model, out, inputs=_x())


def test_where_on_a_node_and_typed_accessors() -> None:
    model = from_proto(_conv_mul_model(True, 2.0))
    conv, mul = list(model.graph)
    ctx = PassContext(model=model)
    pattern = Op(
        "Mul",
        Op("Conv", Var("x"), Const("w"), Opt(Const("b")), name="conv", where=lambda n: n.name == "conv1"),
        Var("s"),
    )
    m = match(Rule("r", pattern, lambda m, b: None), mul, model.graph, ctx)
    assert m is not None and m.node("conv") is conv and m["s"] is mul.inputs[1]
    assert m.shape("w") == (3, 3, 1, 1) and m.static_shape("x") == (1, 3, 4, 4) and m.rank("b") == 1
    assert m.dtype("x") == F and m.shape("conv") == conv.output.shape and m.opset() == 17
    assert shape_of(conv.inputs[1]) == (3, 3, 1, 1) and dtype_of(conv.inputs[1]) == F and shape_of(None) is None
    assert m.get("nothing", 7) == 7
    with pytest.raises(KeyError):
        m.node("x")
    with pytest.raises(KeyError):
        m.value("conv")
    other = Op("Mul", Op("Conv", Var(), Var(), Opt(), where=lambda n: n.name == "other"), Var())
    assert match(Rule("r", other, lambda m, b: None), mul, model.graph, ctx) is None


# --------------------------------------------------------------------------------------------------------------------
# b.copy
# --------------------------------------------------------------------------------------------------------------------
def test_copy_keeps_name_domain_and_other_attributes_and_edits_the_rest() -> None:
    node = helper.make_node("LeakyRelu", ["x"], ["y"], name="act", alpha=0.2, doc_string="kept")
    model = _model([node])

    def to_relu6ish(m, b):
        return b.copy(m.node("a"), attrs={"alpha": 0.3})

    register_rules(
        "test-copy",
        [Rule("copy", Op("LeakyRelu", Var("x"), name="a", attrs={"alpha": lambda a: a != 0.3}), to_relu6ish)],
    )
    out, report = _run("test-copy", model)
    (n,) = out.graph.node
    assert (n.name, n.op_type, n.doc_string) == ("act", "LeakyRelu", "kept")
    assert helper.get_attribute_value(n.attribute[0]) == pytest.approx(0.3) and out.graph.output[0].name == "y"

    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="c", pads=[1, 1, 1, 1], strides=[1, 1], group=1)
    w, b = _weights(k=3)
    model = _model([conv], [_init("w", w), _init("b", b)])
    register_rules(
        "test-copy2",
        [
            Rule(
                "drop-bias",
                Op("Conv", Var("x"), Var("w"), Const("b", where=lambda a: True), name="c"),
                lambda m, b: b.copy(
                    m.node("c"), inputs=[m["x"], m["w"]], drop=["strides"], attrs={"dilations": [1, 1]}
                ),
            )
        ],
    )
    out, _ = _run("test-copy2", model)
    (n,) = out.graph.node
    assert list(n.input) == ["x", "w"] and sorted(a.name for a in n.attribute) == ["dilations", "group", "pads"]
    assert [i.name for i in out.graph.initializer] == ["w"]  # the bias only the old Conv read is gone
    x = _x()
    want = _ort(model, x) - b.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(_ort(out, x), want, rtol=1e-5, atol=1e-5)


def test_copy_can_change_the_op_type_and_add_an_input() -> None:
    """MatMul + constant bias -> Gemm (as fold-conv-bn does): the copy keeps the MatMul's name."""
    rng = np.random.default_rng(1)
    w, c = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="mm"), helper.make_node("Add", ["a", "c"], ["y"])]
    model = _model(nodes, [_init("w", w), _init("c", c)], shape=(2, 3))
    rule = Rule(
        "matmul-add",
        Op(
            "Add",
            Op("MatMul", Var("x", where=lambda v: len(shape_of(v) or ()) == 2), Const("w"), name="mm"),
            Const("c"),
        ),
        lambda m, b: b.copy(m.node("mm"), op_type="Gemm", inputs={2: m["c"]}),
    )
    register_rules("test-gemm", [rule])
    out, report = _run("test-gemm", model)
    assert [(n.op_type, n.name) for n in out.graph.node] == [("Gemm", "mm")] and report.stats[0].counts
    assert_models_close(model, out, inputs=_x((2, 3)), rtol=1e-5, atol=1e-5)


def test_copy_of_an_identical_node_is_no_gain_and_a_node_with_subgraphs_is_refused() -> None:
    register_rules("test-same", [Rule("same", Op("Relu", Var("x"), name="r"), lambda m, b: b.copy(m.node("r")))])
    out, report = _run(
        "test-same", _model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])])
    )
    assert _ops(out) == ["Relu", "Neg"] and report.stats[0].declines == {"same": {"no gain (equivalent nodes)": 1}}
    branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["b"])], "t", [], [helper.make_tensor_value_info("b", F, None)]
    )
    if_node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch, name="if")
    g = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=_init("cv", np.array(True))), if_node],
        "g",
        [helper.make_tensor_value_info("x", F, [2])],
        [helper.make_tensor_value_info("y", F, None)],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    register_rules("test-copy-if", [Rule("copy-if", Op("If", Var(), name="i"), lambda m, b: b.copy(m.node("i")))])
    with pytest.raises(RuleError, match="'copy-if'.*holds subgraphs"):
        graphopt.optimize(model, passes="test-copy-if")


# --------------------------------------------------------------------------------------------------------------------
# declines with reasons, counted; the CLI shows them
# --------------------------------------------------------------------------------------------------------------------
def _raise_decline(m):
    raise Decline("raised reason")


DECLINING = [
    Rule("by-decline", Op("Neg", Var("x"), name="n"), lambda m, b: m["x"], condition=lambda m: m.decline("negative")),
    Rule("by-raise", Op("Neg", Var("x")), lambda m, b: m["x"], condition=_raise_decline, priority=1),
    Rule("by-false", Op("Neg", Var("x")), lambda m, b: m["x"], condition=lambda m: False, priority=2),
    Rule("by-none", Op("Neg", Var("x")), lambda m, b: None, priority=3),
    Rule(
        "by-replace",
        Op("Neg", Var("x")),
        lambda m, b: m.decline("in replace") if b.op("Abs", m["x"]) else None,
        priority=4,
    ),
]


def test_declines_are_counted_per_rule_and_reason_once_per_node() -> None:
    register_rules("test-decline", DECLINING)
    nodes = [
        helper.make_node("Neg", ["x"], ["a"]),
        helper.make_node("Neg", ["a"], ["b"]),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    out, report = _run("test-decline", _model(nodes))
    stats = report.stats[0]
    assert stats.counts == {} and not stats.changed and _ops(out) == ["Neg", "Neg", "Relu"]  # the Abs went too
    assert stats.declines == {
        "by-decline": {"negative": 2},
        "by-raise": {"raised reason": 2},
        "by-false": {"condition false": 2},
        "by-none": {"replace returned None": 2},
        "by-replace": {"in replace": 2},
    }
    assert "by-raise x0 (declined: raised reason x2)" in stats.details()
    assert report.to_dict()["passes"][0]["declines"] == stats.declines


def test_declines_of_a_later_sweep_are_not_counted_twice() -> None:
    # the first Neg pair fires (sweep 1), so a second sweep runs; the declined Relu is seen in both sweeps
    rules = [
        Rule("neg-neg", Op("Neg", Op("Neg", Var("x"))), lambda m, b: m["x"]),
        Rule("keep-relu", Op("Relu", Var("x")), lambda m, b: None, condition=lambda m: m.decline("kept")),
    ]
    model = from_proto(
        _model(
            [
                helper.make_node("Neg", ["x"], ["a"]),
                helper.make_node("Neg", ["a"], ["b"]),
                helper.make_node("Relu", ["b"], ["y"]),
            ]
        )
    )
    counts: dict = {}
    declines: dict = {}
    assert rewrite(model.graph, rules, PassContext(model=model), counts, declines)
    assert counts == {"neg-neg": 1} and declines == {"keep-relu": {"kept": 1}}


def test_a_node_declined_in_every_fixed_point_iteration_counts_once() -> None:
    from graphopt.engine.pass_manager import PassManager

    register_rules("test-keep", [Rule("keep-relu", Op("Relu", Var("x")), lambda m, b: m.decline("kept"))])
    register_rules("test-nn", [Rule("nn", Op("Neg", Op("Neg", Var("x"))), lambda m, b: m["x"])])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Neg", ["r"], ["a"]),
        helper.make_node("Neg", ["a"], ["y"]),
    ]
    model = from_proto(_model(nodes))
    report = PassManager("test-keep,test-nn", fixed_point=True).run(model)
    keep = report.stats[0]
    assert report.iterations == 2 and keep.runs == 2  # test-nn changed the model, so test-keep ran again
    assert keep.declines == {"keep-relu": {"kept": 1}}


def test_cli_table_and_json_show_firings_and_declines(tmp_path: Path, capsys, monkeypatch) -> None:
    register_rules("test-cli-rules", [CONV_MUL])
    monkeypatch.setenv("COLUMNS", "250")
    w, b = _weights()
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c1"], name="conv1"),
        helper.make_node("Mul", ["c1", "s"], ["m1"]),  # fires
        helper.make_node("Conv", ["m1", "w"], ["c2"], name="conv2"),
        helper.make_node("Mul", ["c2", "v"], ["y"]),  # a 5-D "scalar" would add a dim: declined
    ]
    inits = [_init("w", w), _init("b", b), _init("s", np.float32(2.0)), _init("v", np.full((1,) * 5, 3.0, np.float32))]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", F, [1, 1, 3, 4, 4])],
        inits,
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    src = tmp_path / "m.onnx"
    onnx.save(proto, src)
    assert main(["optimize", str(src), "-o", str(tmp_path / "o.onnx"), "--passes", "test-cli-rules"]) == 0
    text = capsys.readouterr().out
    assert "conv-mul x1 (declined: not a scalar x1)" in text, text
    assert main(["optimize", str(src), "-o", str(tmp_path / "o2.onnx"), "--passes", "test-cli-rules", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (stats,) = data["passes"]
    assert stats["counts"] == {"conv-mul": 1} and stats["declines"] == {"conv-mul": {"not a scalar": 1}}
    assert_models_close(proto, onnx.load(tmp_path / "o.onnx"), inputs=_x(), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# opset bounds
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bounds,opset,fires",
    [((13, None), 12, False), ((13, None), 13, True), ((None, 12), 13, False), ((11, 13), 13, True), (None, 7, True)],
)
def test_opset_bounds(bounds, opset, fires) -> None:
    rule = Rule("neg-neg", Op("Neg", Op("Neg", Var("x"))), lambda m, b: m["x"], opsets=bounds, condition=lambda m: True)
    register_rules("test-opset", [rule])
    model = _model([helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])], opset=opset)
    out, report = _run("test-opset", model)
    assert report.stats[0].counts == ({"neg-neg": 1} if fires else {})
    assert report.stats[0].declines == {}  # not applicable is not a decline


def test_opset_bounds_on_other_domains_and_bad_bounds() -> None:
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])]
    for domains, bound, fires in (
        ((), (1, None), False),
        (("com.microsoft",), (1, None), True),
        (("com.microsoft",), (2, None), False),
    ):
        rule = Rule(
            "nn", Op("Neg", Op("Neg", Var("x"))), lambda m, b: m["x"], opsets={"": (13, None), "com.microsoft": bound}
        )
        register_rules("test-dom", [rule], replace=True)
        _, report = _run("test-dom", _model(nodes, domains=domains))
        assert bool(report.stats[0].counts) == fires, (domains, bound)
    for bad in ((14, 13), (0, None), ("13", None), (13,), {"": 13}):
        with pytest.raises(PatternError, match="opsets"):
            Rule("r", Op("Neg", Var()), lambda m, b: None, opsets=bad)


# --------------------------------------------------------------------------------------------------------------------
# rule sets
# --------------------------------------------------------------------------------------------------------------------
def test_rule_sets_compose_with_plus_and_register() -> None:
    a = Rule("a", Op("Neg", Op("Neg", Var("x"))), lambda m, b: m["x"])
    b_ = Rule("b", Op("Abs", Op("Abs", Var("x"), name="i", shared=True)), lambda m, b: m["i"].output)
    c = Rule("c", Op("Relu", Op("Relu", Var("x"), name="i", shared=True)), lambda m, b: m["i"].output)
    rs = a + b_
    assert isinstance(rs, RuleSet) and [r.name for r in rs] == ["a", "b"]
    assert (
        [r.name for r in rs + c]
        == [r.name for r in rs + [c]]
        == [r.name for r in [a, b_] + RuleSet([c])]
        == ["a", "b", "c"]
    )
    assert [r.name for r in [c] + a] == ["c", "a"] and len(rs) == 2 and rs[1] is b_
    with pytest.raises(PatternError, match="unique"):
        rs + a
    with pytest.raises(PatternError, match="Rule objects"):
        RuleSet([a, "b"])
    cls = (rs + c).register("test-ruleset")
    assert graphopt.list_passes()["test-ruleset"] is cls
    nodes = [
        helper.make_node(op, [i], [o])
        for op, i, o in (("Neg", "x", "a"), ("Neg", "a", "b"), ("Abs", "b", "c"), ("Abs", "c", "y"))
    ]
    model = _model(nodes)
    out, report = _run("test-ruleset,dce", model)
    assert _ops(out) == ["Abs"] and report.stats[0].counts == {"a": 1, "b": 1}
    assert_models_close(model, out, inputs=_x())


def test_rule_set_rewrite_inside_a_pass_of_ones_own_counts_in_its_stats() -> None:
    rules = RuleSet(
        [
            Rule("nn", Op("Neg", Op("Neg", Var("x"))), lambda m, b: m["x"]),
            Rule("keep", Op("Relu", Var()), lambda m, b: None),
        ]
    )

    @register_pass("test-own-pass")
    def own(graph, ctx):
        return rules.rewrite(graph, ctx)

    nodes = [
        helper.make_node("Neg", ["x"], ["a"]),
        helper.make_node("Neg", ["a"], ["b"]),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    _, report = _run("test-own-pass", _model(nodes))
    assert report.stats[0].counts == {"nn": 1} and report.stats[0].declines == {"keep": {"replace returned None": 1}}


def test_malformed_new_elements_are_refused() -> None:
    with pytest.raises(PatternError, match="last"):
        Op("Concat", Rest(), Var())
    with pytest.raises(PatternError, match="last"):
        Op("Concat", ..., Var())
    with pytest.raises(PatternError, match="two inputs"):
        Op("Add", Var(), Rest(), commutative=True)
    with pytest.raises(PatternError, match="op type"):
        Op((), Var())
    with pytest.raises(PatternError, match="Opt takes"):
        Opt(Opt(Var()))
    with pytest.raises(PatternError, match="min"):
        Rest(min=-1)
    with pytest.raises(PatternError, match="alternative"):
        Var() | Rest()


def test_a_declined_replacement_leaves_no_constants_behind() -> None:
    def builds_then_declines(m, b):
        b.op("Add", m["x"], np.ones((2, 3), np.float32))
        raise Decline("changed my mind")

    model = from_proto(_model([helper.make_node("Relu", ["x"], ["y"])], shape=(2, 3)))
    declines: dict = {}
    assert not rewrite(
        model.graph, [Rule("r", Op("Relu", Var("x")), builds_then_declines)], PassContext(model=model), None, declines
    )
    assert declines == {"r": {"changed my mind": 1}} and not model.graph.initializers and len(model.graph) == 1


# --------------------------------------------------------------------------------------------------------------------
# the README's example rules do what the README says
# --------------------------------------------------------------------------------------------------------------------
def test_readme_pattern_rules_on_conv_and_activation_models(tmp_path: Path, monkeypatch) -> None:
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if "conv_mul" in b)
    monkeypatch.chdir(tmp_path)
    w, b = _weights()
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], name="nobias"),
        helper.make_node("Mul", ["c1", "s"], ["m1"]),
        helper.make_node("Conv", ["m1", "w", "b"], ["c2"], name="withbias"),
        helper.make_node("Mul", ["s", "c2"], ["m2"]),
        helper.make_node("LeakyRelu", ["m2"], ["l"], alpha=0.1),
        helper.make_node("Relu", ["l"], ["r"]),
        helper.make_node("Mul", ["r", "v"], ["y"]),  # not after a Conv: untouched
    ]
    model = _model(
        nodes, [_init("w", w), _init("b", b), _init("s", np.float32(1.5)), _init("v", np.float32(2.0))], opset=13
    )
    onnx.save(model, "model.onnx")
    ns: dict = {}
    exec(block, ns)  # noqa: S102 - the README's own example
    assert _ops(ns["model"]) == ["Conv", "Conv", "Relu", "Mul"]
    assert [n.name for n in ns["model"].graph][:2] == ["nobias", "withbias"]
    graphopt.save(ns["model"], "out.onnx")
    assert_models_close(model, onnx.load("out.onnx"), inputs=_x(), rtol=1e-5, atol=1e-5)
    onnx.save(
        _model(
            nodes, [_init("w", w), _init("b", b), _init("s", np.float32(1.5)), _init("v", np.float32(2.0))], opset=10
        ),
        "old.onnx",
    )
    old = graphopt.optimize("old.onnx", passes="my-rules,dce")
    assert _ops(old).count("Mul") == 3  # conv-mul is bounded to opset 11+


# --------------------------------------------------------------------------------------------------------------------
# random graphs: rules built with the new features keep every output under onnxruntime
# --------------------------------------------------------------------------------------------------------------------
def _max_to_min(m, b):
    return b.op("Min", m["x"], m["hi"])


RANDOM_RULES = RuleSet(
    [
        CONV_MUL,
        _relu_after(Op(("Relu", "LeakyRelu"), Var("x"), attrs=NONNEG_ALPHA)),
        Rule("clip-max", Op("Clip", Var("x"), Absent(), Const("hi")), _max_to_min, opsets=(11, None)),
        Rule("sum-adds", Op("Sum", Var("a"), Rest(Var(), name="rest", min=1)), _sum_to_adds),
        Rule(
            "neg-neg",
            Op("Neg", Op("Neg", Var("x")) | Op("Identity", Op("Neg", Var("x")))),
            lambda m, b: m["x"],
        ),
    ]
)


@st.composite
def random_models(draw) -> onnx.ModelProto:
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = ["x"]
    nodes, inits = [], []
    for i in range(draw(st.integers(1, 10))):
        kind = draw(
            st.sampled_from(
                ["conv", "conv", "mul", "mul", "relu", "relu", "leaky", "clip", "sum", "neg", "neg", "identity"]
            )
        )
        src = values[-1] if draw(st.booleans()) else draw(st.sampled_from(values))
        if kind == "mul" and draw(st.integers(0, 3)):  # most Muls read a Conv, most Relus an activation: work for rules
            src = next((n.output[0] for n in reversed(nodes) if n.op_type == "Conv"), src)
        if kind in ("neg", "identity") and draw(st.booleans()):
            src = next((n.output[0] for n in reversed(nodes) if n.op_type in ("Neg", "Identity")), src)
        if kind == "relu" and draw(st.booleans()):
            src = next((n.output[0] for n in reversed(nodes) if n.op_type in ("Relu", "LeakyRelu")), src)
        out = f"v{i}"
        if kind == "conv":
            k = draw(st.sampled_from([1, 3]))
            inits.append(_init(f"w{i}", rng.standard_normal((3, 3, k, k)).astype(np.float32)))
            ins = [src, f"w{i}"]
            if draw(st.booleans()):
                inits.append(_init(f"b{i}", rng.standard_normal(3).astype(np.float32)))
                ins.append(f"b{i}")
            nodes.append(helper.make_node("Conv", ins, [out], pads=[k // 2] * 4, name=f"conv{i}"))
        elif kind == "mul":
            shape = draw(st.sampled_from([(), (1,), (1, 3, 1, 1)]))
            inits.append(_init(f"s{i}", rng.uniform(-2, 2, shape).astype(np.float32)))
            pair = [src, f"s{i}"] if draw(st.booleans()) else [f"s{i}", src]
            nodes.append(helper.make_node("Mul", pair, [out]))
        elif kind in ("relu", "neg", "identity"):
            nodes.append(helper.make_node(kind.capitalize(), [src], [out]))
        elif kind == "leaky":
            nodes.append(helper.make_node("LeakyRelu", [src], [out], alpha=draw(st.sampled_from([0.1, -0.3, 0.0]))))
        elif kind == "clip":
            inits.append(_init(f"h{i}", np.float32(draw(st.sampled_from([0.0, 0.5])))))
            nodes.append(helper.make_node("Clip", [src, "", f"h{i}"], [out]))
        else:
            extra = draw(st.lists(st.sampled_from(values), min_size=0, max_size=3))
            nodes.append(helper.make_node("Sum", [src, *extra], [out]))
        values.append(out)
    outs = [values[-1], *draw(st.lists(st.sampled_from(values[1:-1] or values[-1:]), max_size=2, unique=True))]
    outs = list(dict.fromkeys(outs))
    return _model(nodes, inits, outputs=outs, opset=draw(st.sampled_from([11, 13, 17])))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_models(), st.integers(0, 3))
def test_random_graphs_keep_their_outputs_under_the_new_rules(model, seed) -> None:
    RANDOM_RULES.register("test-random-rules", replace=True)
    out, report = _run("test-random-rules,dce", model)
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    assert_models_close(model, out, inputs=_x(seed=seed), rtol=1e-4, atol=1e-4)
    fired = report.stats[0].counts
    ops = _ops(model)
    if "Clip" in ops:
        assert fired.get("clip-max", 0) >= 1
