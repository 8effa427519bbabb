"""The IR's own behaviour: use-def chains, the node list, replace_all_uses_with, sort, check, scopes."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt import Graph, IRError, Model, Node, Value
from graphopt.core.tensors import Tensor


def _chain(n: int = 3) -> tuple[Graph, Value, list[Node]]:
    x = Value("x", TensorProto.FLOAT, [2])
    g = Graph([x], name="g")
    nodes, prev = [], x
    for i in range(n):
        node = g.append(Node("Neg", [prev], name=f"n{i}"))
        nodes.append(node)
        prev = node.output
    g.outputs.append(prev)
    return g, x, nodes


def test_use_def_chains_follow_edits() -> None:
    g, x, (a, b, c) = _chain()
    assert a.output.producer is a and list(x.uses) == [(a, 0)]
    assert a.output.users() == [b]
    b.set_input(0, x)
    assert set(x.uses) == {(a, 0), (b, 0)} and not a.output.uses
    b.replace_input(x, a.output)
    assert list(a.output.uses) == [(b, 0)] and list(x.uses) == [(a, 0)]
    add = Node("Add", [x, x])
    assert set(x.uses) == {(a, 0), (add, 0), (add, 1)}
    add.set_inputs([a.output])
    assert (add, 0) in a.output.uses and (add, 1) not in x.uses and (add, 0) not in x.uses
    add.detach()
    assert (add, 0) not in a.output.uses
    g.check()


def test_value_with_a_producer_cannot_get_another() -> None:
    v = Node("Neg", [Value("x")]).output
    with pytest.raises(IRError, match="already has a producer"):
        Node("Abs", [], outputs=[v])


def test_insert_remove_and_order() -> None:
    g, x, (a, b, c) = _chain()
    mid = g.insert_after(a, Node("Abs", [a.output], name="mid"))
    first = g.insert_before(a, Node("Relu", [x], name="first"))
    assert [n.name for n in g] == ["first", "n0", "mid", "n1", "n2"]
    assert len(g) == 5 and mid.prev is a and mid.next is b
    g.remove(first)
    assert [n.name for n in g] == ["n0", "mid", "n1", "n2"] and not any(u is first for u, _ in x.uses)
    with pytest.raises(IRError, match="still used"):
        g.remove(a)
    with pytest.raises(IRError, match="graph output"):
        g.remove(c)
    with pytest.raises(IRError, match="already in a graph"):
        g.append(b)
    with pytest.raises(IRError, match="not in this graph"):
        g.insert_after(first, Node("Neg", [x]))
    g.remove(mid)
    g.check()


def test_iteration_survives_removal_and_insertion() -> None:
    g, x, nodes = _chain(6)
    seen = []
    for node in g:
        seen.append(node.name)
        if node.name == "n1":
            # remove the next node (and re-wire its reader), and insert one after the current
            nxt = node.next
            assert nxt is not None
            g.replace_all_uses_with(nxt.output, node.output)
            g.remove(nxt)
            g.insert_after(node, Node("Abs", [node.output], name="inserted"))
    assert seen == ["n0", "n1", "inserted", "n3", "n4", "n5"]
    back = [n.name for n in g.reversed()]
    assert back == ["n5", "n4", "n3", "inserted", "n1", "n0"]
    g.check()


def test_replace_all_uses_with_keeps_output_names() -> None:
    g, x, (a, b, c) = _chain()
    old_name = c.output.name
    new = g.append(Node("Abs", [b.output], name="new"))
    g.replace_all_uses_with(c.output, new.output)
    assert g.outputs == [new.output] and new.output.name == old_name and c.output.name != old_name
    g.remove(c)
    g.check()


def test_replace_output_by_graph_input_inserts_identity() -> None:
    x = Value("x", TensorProto.FLOAT, [2])
    g = Graph([x])
    node = g.append(Node("Neg", [x]))
    node.output.name = "y"
    g.outputs.append(node.output)
    g.replace_all_uses_with(node.output, x)
    assert g.outputs[0].name == "y" and g.outputs[0].producer is not None
    assert g.outputs[0].producer.op_type == "Identity" and g.outputs[0].producer.inputs[0] is x
    g.remove(node)
    g.check()


def test_replace_uses_of_a_graph_input_that_is_also_an_output_keeps_the_input() -> None:
    # Inserting a node after an input (Q/DQ, Cast) must not rename the input nor re-point the output that is the input.
    x = Value("x", TensorProto.FLOAT, [2])
    g = Graph([x])
    reader = g.append(Node("Neg", [x], name="reader"))
    g.outputs.extend([x, reader.output])
    neg = g.append(Node("Abs", [x], name="abs"))
    g.replace_all_uses_with(x, neg.output, exclude=[neg])
    assert x.name == "x" and g.outputs[0] is x and reader.inputs[0] is neg.output
    g.sort()
    g.check()


def test_replace_all_uses_with_exclude_inserts_after_a_value() -> None:
    g, x, (a, b, c) = _chain()
    two = g.make_constant(Tensor.from_numpy(np.float32(2)), "two")
    mul = g.insert_after(a, Node("Mul", [a.output, two]))
    g.replace_all_uses_with(a.output, mul.output, exclude=[mul])
    assert mul.inputs[0] is a.output and b.inputs[0] is mul.output
    g.check()


def test_unique_names_and_constants() -> None:
    g, x, _ = _chain()
    assert g.unique_name("x") != "x"
    names = {g.unique_name("w") for _ in range(5)}
    assert len(names) == 5
    t = Tensor.from_numpy(np.arange(3, dtype=np.float32))
    c = g.make_constant(t, "w")
    assert c.constant() is t and c.name in g.initializers
    with pytest.raises(IRError, match="no data"):
        g.add_initializer(Value("bad"))
    const_node = g.append(Node("Constant", [], {"value": t}))
    assert const_node.output.constant() is t
    assert x.constant() is None


def test_overridable_initializer_is_not_a_constant() -> None:
    w = onnx.numpy_helper.from_array(np.ones(2, np.float32), "w")
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("x", "w")]
    nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
    for ir_version, constant in ((8, False), (3, True)):
        graph = helper.make_graph(nodes, "g", inputs, out, [w])
        model = graphopt.load(
            helper.make_model(graph, ir_version=ir_version, opset_imports=[helper.make_opsetid("", 9)])
        )
        assert (model.graph.initializers["w"].constant() is not None) is constant


@st.composite
def dags(draw):
    n = draw(st.integers(1, 25))
    edges = [draw(st.lists(st.integers(0, i), max_size=3)) if i else [] for i in range(n)]
    return n, edges


@settings(max_examples=60, deadline=None)
@given(dags(), st.randoms(use_true_random=False))
def test_sort_restores_topological_order(dag, rnd: random.Random) -> None:
    n, edges = dag
    x = Value("x")
    nodes: list[Node] = []
    for i in range(n):
        ins = [x] + [nodes[j].output for j in edges[i] if j < i]
        nodes.append(Node("Sum", ins, name=f"n{i}"))
    g = Graph([x], [nodes[-1].output])
    shuffled = nodes[:]
    rnd.shuffle(shuffled)
    for node in shuffled:
        g.append(node)
    g.sort()
    pos = {node: i for i, node in enumerate(g)}
    for node in g:
        for v in node.inputs:
            if v is not None and v.producer is not None:
                assert pos[v.producer] < pos[node]
    order = list(g)
    g.sort()
    assert list(g) == order, "sorting a sorted graph must not move anything"
    g.check()


def test_sort_reports_cycles() -> None:
    x = Value("x")
    a = Node("Add", [x, x])
    b = Node("Neg", [a.output])
    a.set_input(1, b.output)
    g = Graph([x], [b.output])
    g.append(a)
    g.append(b)
    with pytest.raises(IRError, match="cycle"):
        g.sort()


def test_check_catches_use_before_definition_and_undefined_values() -> None:
    g, x, (a, b, c) = _chain()
    g.remove(c, safe=False)
    g.insert_before(a, c)  # c reads b's output before b runs
    with pytest.raises(IRError):
        g.check()
    g2, x2, (a2, _, _) = _chain()
    a2.set_input(0, Value("nowhere"))
    with pytest.raises(IRError):
        g2.check()


def _if_model() -> onnx.ModelProto:
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["xw", "xw"], ["t"])], "then", [], [helper.make_tensor_value_info("t", 1, [2])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["xw"], ["e"])], "else", [], [helper.make_tensor_value_info("e", 1, [2])]
    )
    nodes = [
        helper.make_node("Neg", ["x"], ["xw"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", 1, [2]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", 1, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_subgraphs_read_outer_values() -> None:
    model = graphopt.load(_if_model())
    g = model.graph
    neg, if_node = list(g)
    xw = neg.output
    inner_users = {n.op_type for n, _ in xw.uses}
    assert inner_users == {"Mul", "Neg"}, "uses from inside subgraphs are recorded on the outer value"
    subs = list(g.subgraphs())
    assert len(subs) == 2 and all(s.parent is g and s.root is g for s in subs)
    assert sorted(n.op_type for n in g.all_nodes()) == ["If", "Mul", "Neg", "Neg"]
    assert g.node_count() == 4 and g.node_count(recursive=False) == 2
    for s in subs:
        s.check()  # outer values are visible
    g.check()
    with pytest.raises(IRError, match="still used"):
        g.remove(neg)
    # a subgraph node reading a value that nothing defines is an error
    subs[0].nodes[0].set_input(0, Value("ghost"))
    with pytest.raises(IRError):
        g.check()


def test_model_opsets_and_functions() -> None:
    g = Graph()
    m = Model(g, {"": 17, "com.example": 1})
    assert m.opset() == 17 and m.opset("ai.onnx") == 17 and m.opset("com.example") == 1 and m.opset("x") is None
    body = Graph([Value("a")])
    node = body.append(Node("Neg", [body.inputs[0]]))
    body.outputs.append(node.output)
    f = graphopt.Function("com.example", "negate", body)
    m.functions[f.key] = f
    assert [gr is body for gr in m.graphs()] == [False, True]
    assert f.key == ("com.example", "negate", "")


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64, np.bool_]
)
def test_proto_tensors_decode_like_onnx(dtype) -> None:
    """Tensors wrapped from a proto decode raw_data straight to numpy (and keep small arrays); the result must be what
    onnx's own decoder gives, for raw_data and for typed fields, and a raw_data of the wrong size is still an error."""
    rng = np.random.default_rng(0)
    arr = (rng.standard_normal((3, 5)) * 50).astype(dtype)
    raw = numpy_helper.from_array(arr, "t")
    typed = helper.make_tensor("t", raw.data_type, arr.shape, arr.flatten().tolist())
    for proto in (raw, typed):
        t = Tensor.from_proto(proto)
        got = t.numpy()
        assert got.dtype == arr.dtype and not got.flags.writeable
        np.testing.assert_array_equal(got, numpy_helper.to_array(proto))
        assert t.numpy() is got  # decoded once
    short = onnx.TensorProto()
    short.CopyFrom(raw)
    short.raw_data = raw.raw_data[:-1]
    with pytest.raises(ValueError):
        Tensor.from_proto(short).numpy()


def test_value_relations_and_weight_axes() -> None:
    from graphopt.core.ir import ONNX_DOMAINS, STANDARD_DOMAINS, weight_axes
    from graphopt.core.tensors import Tensor

    x, w = Value("x"), Value("w", const=Tensor.from_numpy(np.ones((4, 3), np.float32)))
    g = Graph(inputs=[x], initializers=[w])
    mm = g.append(Node("MatMul", [x, w]))
    h = mm.outputs[0]
    relu = g.append(Node("Relu", [h]))
    g.outputs.append(relu.outputs[0])
    assert x.is_graph_input() and x.is_graph_input(g) and not w.is_graph_input() and w.is_initializer()
    assert relu.outputs[0].is_graph_output() and not h.is_graph_output() and not h.is_initializer()
    assert h.single_user() is relu and w.single_user() is mm
    g.outputs.append(h)  # an output is seen by the caller too: not single-user any more
    assert h.is_graph_output() and h.single_user() is None
    add = g.append(Node("Add", [x, x]))
    assert x.single_user() is None and len(x.users()) == 2 and add.outputs[0].single_user() is None
    assert weight_axes(mm) == (1, 0) and weight_axes(relu) is None
    assert weight_axes(Node("Conv", [x, w])) == (0, 1)
    assert weight_axes(Node("ConvTranspose", [x, w])) == (1, 0)
    assert weight_axes(Node("Gemm", [x, w], {"transB": 1})) == (0, 1)
    assert weight_axes(Node("Gemm", [x, w])) == (1, 0)
    assert weight_axes(Node("MatMul", [x, w]), rank=3) == (2, 1)
    assert weight_axes(Node("Conv", [x, w], domain="com.example")) is None
    assert "ai.onnx" in STANDARD_DOMAINS and "ai.onnx.ml" in ONNX_DOMAINS - STANDARD_DOMAINS
    with pytest.raises(graphopt.IRError, match="name the graph"):
        x.is_graph_output()
