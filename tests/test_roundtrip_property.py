"""Property: any model graphopt loads comes back field for field, and onnxruntime computes the same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import graphopt

UNARY = ["Relu", "Neg", "Abs", "Sigmoid", "Tanh", "Exp"]
BINARY = ["Add", "Mul", "Sub", "Max", "Min"]
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)


@st.composite
def random_models(draw: st.DrawFn) -> onnx.ModelProto:
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n_inputs = draw(st.integers(1, 3))
    dims = ["batch", 3]
    inputs = [helper.make_tensor_value_info(f"in{i}", TensorProto.FLOAT, dims) for i in range(n_inputs)]
    values = [f"in{i}" for i in range(n_inputs)]
    shape_of = {v: dims for v in values}  # the true shape of every value, so that declared types are right
    inits, nodes, value_info = [], [], []
    for i in range(draw(st.integers(0, 3))):
        name = f"w{i}"
        inits.append(onnx.numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), name))
        values.append(name)
        shape_of[name] = [3]
    for i in range(draw(st.integers(1, 12))):
        out = f"v{i}"
        if draw(st.booleans()):
            op = draw(st.sampled_from(UNARY))
            a = draw(st.sampled_from(values))
            node = helper.make_node(op, [a], [out], name=f"n{i}")
            shape_of[out] = shape_of[a]
        else:
            op = draw(st.sampled_from(BINARY))
            a, b = draw(st.sampled_from(values)), draw(st.sampled_from(values))
            node = helper.make_node(op, [a, b], [out], name=draw(st.sampled_from([f"n{i}", ""])))
            shape_of[out] = max(shape_of[a], shape_of[b], key=len)
        if draw(st.booleans()):
            node.doc_string = draw(texts)
        if draw(st.booleans()):
            node.domain = ""  # explicitly present, empty
        if draw(st.booleans()):
            node.metadata_props.add(key="k", value=draw(texts))
        nodes.append(node)
        values.append(out)
        if draw(st.booleans()):
            true = shape_of[out]
            declared = draw(st.sampled_from([true, None, [None] * len(true), [*true[:-1], None]]))
            value_info.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, declared))
    if draw(st.booleans()):  # an If whose branches read outer values
        outer = draw(st.sampled_from(values))
        then = helper.make_graph(
            [helper.make_node("Neg", [outer], ["t_out"])],
            "then",
            [],
            [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)],
        )
        other = helper.make_graph(
            [helper.make_node("Relu", [outer], ["e_out"])],
            "else",
            [],
            [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)],
        )
        inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
        nodes.append(helper.make_node("If", ["cond"], ["if_out"], then_branch=then, else_branch=other, name="if"))
        values.append("if_out")
    functions = []
    if draw(st.booleans()):  # a model-local function, called once
        body = [helper.make_node("Mul", ["a", "a"], ["sq"]), helper.make_node("Add", ["sq", "a"], ["r"])]
        functions.append(
            helper.make_function(
                "local", "SquarePlus", ["a"], ["r"], body, [helper.make_opsetid("", 17)], doc_string=draw(texts)
            )
        )
        nodes.append(helper.make_node("SquarePlus", [values[-1]], ["fn_out"], domain="local", name="call"))
        values.append("fn_out")
    n_out = draw(st.integers(1, 3))
    outs = list(dict.fromkeys(values[-n_out:]))
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    graph = helper.make_graph(nodes, draw(texts), inputs, outputs, inits, doc_string=draw(texts), value_info=value_info)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("local", 1)] if functions else [])
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=8,
        functions=functions,
        producer_name=draw(texts),
        doc_string=draw(texts),
    )
    for key in draw(st.lists(texts, max_size=2, unique=True)):  # the checker rejects duplicate keys
        model.metadata_props.add(key=key, value=draw(texts))
    return model


def _run(model: onnx.ModelProto, feeds: dict) -> list:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}})


@settings(max_examples=150, deadline=None)
@given(random_models(), st.booleans())
def test_random_models_round_trip(model: onnx.ModelProto, cond: bool) -> None:
    original = model.SerializeToString()
    ir = graphopt.load(model)
    back = graphopt.to_proto(ir)
    assert model.SerializeToString() == original
    assert back == model
    assert back.SerializeToString() == original
    for g in ir.graphs():
        g.check()
    rng = np.random.default_rng(1)
    feeds = {f"in{i}": rng.standard_normal((2, 3)).astype(np.float32) for i in range(3)}
    feeds["cond"] = np.array(cond)
    for a, b in zip(_run(model, feeds), _run(back, feeds), strict=True):
        np.testing.assert_array_equal(a, b)
