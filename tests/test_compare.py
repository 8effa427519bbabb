"""graphopt.diff / assert_graphs_equal / assert_models_close and `graphopt diff`.

Properties: a model and any renaming plus topological reordering of it compare equal; a single changed attribute,
constant value, op type or edge compares different, with a message that names the changed node.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

import graphopt
from graphopt.testing import assert_graphs_equal, assert_models_close
from graphopt.testing.strategies import feeds, models
from graphopt.tools.compare import _Hasher

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _renamed_and_shuffled(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Every value and node renamed, nodes in another topological order."""
    rnd = random.Random(seed)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    names: dict[str, str] = {}

    def new(name: str) -> str:
        if name and name not in names:
            names[name] = f"r{rnd.randrange(10**9)}_{len(names)}"
        return names.get(name, name)

    for v in [*g.input, *g.output, *g.value_info]:
        v.name = new(v.name)
    for t in g.initializer:
        t.name = new(t.name)
    for n in g.node:
        n.name = f"node{rnd.randrange(10**9)}"
        n.input[:] = [new(x) for x in n.input]
        n.output[:] = [new(x) for x in n.output]
    # a random topological order
    ready = {i.name for i in g.input} | {t.name for t in g.initializer}
    pending = list(g.node)
    order = []
    while pending:
        choices = [n for n in pending if all(x in ready for x in n.input)]
        pick = rnd.choice(choices)
        pending.remove(pick)
        order.append(pick)
        ready.update(pick.output)
    copies = [onnx.NodeProto() for _ in order]
    for c, n in zip(copies, order, strict=True):
        c.CopyFrom(n)
    del g.node[:]
    g.node.extend(copies)
    return m


@settings(max_examples=80, deadline=None)
@given(models(), st.integers(0, 2**16))
def test_renamed_and_reordered_models_are_equal(model, seed) -> None:
    other = _renamed_and_shuffled(model, seed)
    onnx.checker.check_model(other)
    assert not graphopt.diff(model, other)
    assert_graphs_equal(model, other)


def _mutate(model: onnx.ModelProto, kind: str, data) -> tuple[onnx.ModelProto, str] | None:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    nodes = list(g.node)
    if kind == "attribute":
        cands = [n for n in nodes if n.op_type in ("Transpose", "Softmax")]
        if not cands:
            return None
        n = data.draw(st.sampled_from(cands))
        if n.op_type == "Transpose":
            n.attribute[0].ints[:] = [0, *reversed(list(n.attribute[0].ints)[1:])]  # the other perm
        else:
            n.attribute[0].i = 1
        return m, n.name
    if kind == "constant":
        if not g.initializer:
            return None
        t = data.draw(st.sampled_from(list(g.initializer)))
        arr = numpy_helper.to_array(t).copy()
        arr.reshape(-1)[data.draw(st.integers(0, arr.size - 1))] += 1.0
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        users = [n.name for n in nodes if t.name in n.input]
        return m, users[0]
    if kind == "op":
        swaps = {"Relu": "Neg", "Neg": "Abs", "Abs": "Relu", "Sigmoid": "Tanh", "Tanh": "Sigmoid", "Add": "Mul",
                 "Mul": "Sub", "Sub": "Add", "Max": "Min", "Min": "Max"}  # fmt: skip
        cands = [n for n in nodes if n.op_type in swaps]
        if not cands:
            return None
        n = data.draw(st.sampled_from(cands))
        n.op_type = swaps[n.op_type]
        return m, n.name
    # edge: point one input of a node at another earlier value of the same type and of different structure (a
    # structurally identical twin, say a second Transpose of the same input, would leave the graph isomorphic)
    inferred = onnx.shape_inference.infer_shapes(m)
    types = {v.name: v.type for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    ir = graphopt.load(model)
    hasher = _Hasher(ir.graph)
    values = {v.name: v for n in ir.graph for v in n.outputs if v is not None} | {v.name: v for v in ir.graph.inputs}
    structure = {name: hasher.value(v) for name, v in values.items()}
    for i, n in enumerate(nodes):
        for k, x in enumerate(n.input):
            if x not in types:
                continue
            earlier = [i_.name for i_ in g.input] + [o for p in nodes[:i] for o in p.output]
            alts = [
                e
                for e in earlier
                if e != x and e in types and types[e] == types[x] and structure.get(e) != structure.get(x)
            ]
            if alts:
                n.input[k] = data.draw(st.sampled_from(alts))
                return m, n.name
    return None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(models(max_inputs=2), st.sampled_from(["attribute", "constant", "op", "edge"]), st.data())
def test_single_changes_are_found_and_named(model, kind, data) -> None:
    mutated = _mutate(model, kind, data)
    assume(mutated is not None)
    other, changed_node = mutated  # type: ignore[misc]
    found = graphopt.diff(model, other)
    assert found, f"{kind} change of {changed_node} not found"
    with pytest.raises(AssertionError) as err:
        assert_graphs_equal(model, other, max_differences=50)
    assert changed_node in str(err.value) or "no output depends on" in str(err.value)
    what = {"attribute": "attribute", "constant": "constant value", "op": "different op"}.get(kind)
    if what is not None and "no output depends on" not in str(err.value):
        assert what in str(err.value)


def test_constants_within_tolerance() -> None:
    x = helper.make_tensor_value_info("x", 1, [3])
    y = helper.make_tensor_value_info("y", 1, [3])

    def model(c):
        g = helper.make_graph(
            [helper.make_node("Add", ["x", "c"], ["y"])], "g", [x], [y], [numpy_helper.from_array(c, "c")]
        )
        return helper.make_model(g)

    a, b = model(np.array([1, 2, 3], np.float32)), model(np.array([1, 2, 3.0001], np.float32))
    with pytest.raises(AssertionError, match=r"constant value at \[2\]"):
        assert_graphs_equal(a, b)
    assert_graphs_equal(a, b, rtol=1e-3)


def test_subgraphs_and_fixtures_compare() -> None:
    for path in sorted(FIXTURES.glob("*.onnx")):
        assert_graphs_equal(path, onnx.load(str(path)))
        assert_graphs_equal(graphopt.load(path), path)
    flow = FIXTURES / "control_flow.onnx"
    opt = graphopt.optimize(onnx.load(str(flow)), level=2)
    found = graphopt.diff(flow, opt)
    # -O2 drops the Loop body's Identity that passed the condition through (a body output may be a body input: its
    # outputs go by position), the first difference on the way from the graph output: the diff names the path into
    # the body
    assert found and "attribute 'body' output #0 'cond_out'" in str(found) and "input 'cond_in'" in str(found)


def test_assert_models_close_reports_each_output() -> None:
    path = FIXTURES / "cnn.onnx"
    assert_models_close(path, graphopt.optimize(onnx.load(str(path)), level=2), rtol=1e-4, atol=1e-5)
    model = onnx.load(str(path))
    broken = onnx.load(str(path))
    t = broken.graph.initializer[0]
    arr = numpy_helper.to_array(t) * 1.5
    t.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), t.name))
    with pytest.raises(AssertionError, match="max abs error"):
        assert_models_close(model, broken)


@settings(max_examples=30, deadline=None)
@given(models())
def test_optimized_random_models_stay_close(model) -> None:
    assert_models_close(model, graphopt.optimize(model, level=2), inputs=feeds(model), rtol=1e-5, atol=1e-5)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "graphopt", *args], capture_output=True, text=True, timeout=120)


def test_cli_diff_exit_codes(tmp_path: Path) -> None:
    path = FIXTURES / "transformer.onnx"
    same = _cli("diff", str(path), str(path))
    assert same.returncode == 0 and "equal" in same.stdout
    opt = tmp_path / "opt.onnx"
    graphopt.save(graphopt.optimize(str(path), level=2), opt)
    changed = _cli("diff", str(path), str(opt))
    assert changed.returncode == 1 and "different op" in changed.stdout
    missing = _cli("diff", str(path), str(tmp_path / "nope.onnx"))
    assert missing.returncode == 2 and "nope.onnx" in missing.stderr and "Traceback" not in missing.stderr


# -------------------------------------------------------------------------------------------------------------------
# the node-by-node alignment after the walk: every change, not only the first divergence on each path
# -------------------------------------------------------------------------------------------------------------------
def test_diff_lists_everything_o2_changed_in_the_cnn() -> None:
    path = FIXTURES / "cnn.onnx"
    opt = graphopt.optimize(onnx.load(str(path)), level=2)
    found = graphopt.diff(path, opt, max_differences=100)
    assert found.total == len(found)
    kinds = [d.kind for d in found]
    assert kinds[0] == "diverges"  # the walk's first difference stays first: assert_graphs_equal's message
    removed = sorted(str(d.a).split(" ")[0] for d in found if d.kind == "removed" and d.what.startswith("removed"))
    assert removed == ["BatchNormalization"] * 5 + ["Dropout", "Identity"], removed
    assert not [d for d in found if d.kind == "added" and d.what.startswith("added")]  # -O2 added no node
    text = str(found)
    assert "'unused.weight'" in text and "initializer removed (only in A)" in text
    assert "'stem.bn.scale', 'stem.bn.bias', 'stem.bn.mean', 'stem.bn.var'" in text  # the BN's own initializers
    folded = [d for d in found if d.kind == "changed" and "Conv" in d.path]
    assert sum("constant value" in d.what for d in folded) == 5  # every Conv's weight changed
    assert sum("input given only in B" in d.what for d in folded) == 5  # and gained a bias
    assert "BatchNormalization_bias_folded" not in [d.b for d in found if "initializer added" in d.what]
    bounded = graphopt.diff(path, opt, max_differences=3)
    assert len(bounded) == 3 and bounded.total == found.total
    assert [str(d) for d in bounded] == [str(d) for d in found.differences[:3]]


def _tiny(nodes, inits) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_diff_aligns_unnamed_nodes_past_removed_and_added_ones() -> None:
    w1 = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w2 = numpy_helper.from_array(np.full((4, 4), 2.0, np.float32), "w_other_name")
    a = _tiny(
        [
            helper.make_node("Identity", ["x"], ["i"]),
            helper.make_node("MatMul", ["i", "w"], ["mm"]),
            helper.make_node("Relu", ["mm"], ["r"]),
            helper.make_node("Softmax", ["r"], ["y"], axis=-1),
        ],
        [w1],
    )
    b = _tiny(
        [
            helper.make_node("MatMul", ["x", "w_other_name"], ["mm"]),
            helper.make_node("Relu", ["mm"], ["r"]),
            helper.make_node("Neg", ["r"], ["n"]),
            helper.make_node("Softmax", ["n"], ["y"], axis=0),
        ],
        [w2],
    )
    found = graphopt.diff(a, b)
    lines = [str(d) for d in found]
    assert len(lines) == 4, lines
    assert "attribute value: -1 != 0" in lines[0]  # the walk: Softmax's axis
    assert any(d.kind == "removed" and str(d.a).startswith("Identity reading graph input #0") for d in found)
    assert any(d.kind == "added" and str(d.b).startswith("Neg reading output #0 of Relu") for d in found)
    assert any(d.kind == "changed" and "MatMul input #1" in d.path and "constant value" in d.what for d in found)


@settings(max_examples=60, deadline=None)
@given(models(), st.data())
def test_an_inserted_identity_is_the_only_node_added_or_removed(model, data) -> None:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name for t in g.initializer}
    slots = [(i, k) for i, n in enumerate(g.node) for k, x in enumerate(n.input) if x and x not in inits]
    assume(slots)
    i, k = data.draw(st.sampled_from(slots))
    node = g.node[i]
    g.node.insert(i, helper.make_node("Identity", [node.input[k]], ["inserted_identity_out"], name="inserted"))
    g.node[i + 1].input[k] = "inserted_identity_out"
    found = graphopt.diff(model, m, max_differences=100)
    assert found.total == len(found)
    assert [d.kind for d in found if d.kind != "diverges"] == ["added"], str(found)
    # an Identity: the inserted one, or, when it follows another Identity, either of the two (the graphs are the same
    # either way round)
    assert str(found.differences[-1].b).startswith("Identity")
    back = graphopt.diff(m, model, max_differences=100)  # the other way round: one Identity removed
    assert [d.kind for d in back if d.kind != "diverges"] == ["removed"], str(back)
    assert str(back.differences[-1].a).startswith("Identity")


def test_cli_diff_counts_and_bounds_the_differences(tmp_path: Path) -> None:
    path = FIXTURES / "cnn.onnx"
    opt = tmp_path / "opt.onnx"
    graphopt.save(graphopt.optimize(str(path), level=2), opt)
    full = _cli("diff", str(path), str(opt), "--max", "100")
    assert full.returncode == 1
    assert full.stdout.count("removed (only in A): BatchNormalization") == 5, full.stdout
    assert "removed (only in A): Dropout 'head/Dropout'" in full.stdout
    assert "removed (only in A): Identity 'dw/Identity'" in full.stdout
    total = len(full.stdout.splitlines()) - 1
    short = _cli("diff", str(path), str(opt), "--max", "2")
    assert f"({total} differences; the first 2 shown, --max {total} shows all):" in short.stdout
    assert len(short.stdout.splitlines()) == 3


def test_diff_of_a_deep_chain_that_differs_near_its_inputs() -> None:
    """The walk recurses value -> node -> value from the outputs: a 1200-node chain whose first difference sits next
    to its input raised RecursionError (a traceback from `graphopt diff`) past ~330 nodes of depth."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], "x"
    for i in range(400):
        inits += [numpy_helper.from_array(np.full([1], 1.0 + i * 1e-3, np.float32), f"a{i}")]
        nodes += [helper.make_node("Mul", [x, f"a{i}"], [f"m{i}"]), helper.make_node("Relu", [f"m{i}"], [f"r{i}"]),
                  helper.make_node("Identity", [f"r{i}"], [f"i{i}"])]  # fmt: skip
        x = f"i{i}"
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 16])], inits)  # fmt: skip
    a = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    b = onnx.ModelProto()
    b.CopyFrom(a)
    b.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.full([1], 2.0, np.float32), "a0"))
    d = graphopt.diff(a, b)
    assert d.total == 1 and "constant value at [0]: 1.0 != 2.0" in str(d)


def test_an_initializer_shared_by_removed_nodes_is_named_once() -> None:
    """Two removed Muls read one initializer: the diff names it with the first, not on every node (smart-turn's diff
    named one initializer about 8 times)."""
    from onnx import TensorProto, helper, numpy_helper

    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "y"))
    k = numpy_helper.from_array(np.array([1.0], np.float32), "k")
    nodes = [helper.make_node("Mul", ["x", "k"], ["a"]), helper.make_node("Mul", ["a", "k"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])]  # fmt: skip
    a = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [k]), opset_imports=[helper.make_opsetid("", 17)])
    b = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    text = str(graphopt.diff(a, b))
    assert text.count("removed (only in A): Mul") == 2 and text.count("'k'") == 1, text
