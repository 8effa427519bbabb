"""eliminate-noop, merge-consecutive, cse, dedup-initializers, remove-unused and cleanup: random chains under
onnxruntime (outputs identical), plus the cases each rule must leave alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from tests.conftest import ort_run
from tests.test_fixtures import graphopt_feeds as session_feeds

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _model(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=(), functions=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset), *[helper.make_opsetid(d, v) for d, v in extra_opsets]]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8, functions=list(functions))


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _i64(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _same_outputs(a: onnx.ModelProto, b: onnx.ModelProto, feeds) -> None:
    for x, y in zip(ort_run(a, feeds), ort_run(b, feeds), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------------------------------------------------
# random layout chains
# --------------------------------------------------------------------------------------------------------------------
@st.composite
def layout_chains(draw):
    """x [2,3,4] through random Transpose/Reshape/Squeeze/Unsqueeze/Identity/Cast/Dropout/Pad/Slice/Expand/Mul ops.

    The parameters are drawn so that some ops are no-ops and others are not. The current shape is tracked so that every
    op is valid.
    """
    opset = draw(st.sampled_from([11, 13, 17]))
    shape = [2, 3, 4]
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    cur = "x"
    for i in range(draw(st.integers(1, 8))):
        out = f"v{i}"
        kind = draw(
            st.sampled_from(
                ["transpose", "reshape", "squeeze", "identity", "cast", "dropout", "pad", "slice", "expand", "mul"]
            )
        )
        rank = len(shape)
        if kind == "transpose":
            perm = draw(st.permutations(list(range(rank))))
            nodes.append(helper.make_node("Transpose", [cur], [out], perm=list(perm)))
            shape = [shape[p] for p in perm]
        elif kind == "reshape":
            choice = draw(st.sampled_from(["same", "flat", "zero", "minus1"]))
            target = {"same": shape, "flat": [int(np.prod(shape))], "zero": [0] * rank, "minus1": [*shape[:-1], -1]}[
                choice
            ]
            inits.append(_i64(f"{out}_shape", target))
            nodes.append(helper.make_node("Reshape", [cur, f"{out}_shape"], [out]))
            shape = [int(np.prod(shape))] if choice == "flat" else shape
        elif kind == "squeeze":
            axis = draw(st.integers(0, rank))
            if opset >= 13:
                inits.append(_i64(f"{out}_axes", [axis]))
                nodes.append(helper.make_node("Unsqueeze", [cur, f"{out}_axes"], [f"{out}_u"]))
                nodes.append(helper.make_node("Squeeze", [f"{out}_u", f"{out}_axes"], [out]))
            else:
                nodes.append(helper.make_node("Unsqueeze", [cur], [f"{out}_u"], axes=[axis]))
                nodes.append(helper.make_node("Squeeze", [f"{out}_u"], [out], axes=[axis]))
        elif kind == "identity":
            nodes.append(helper.make_node("Identity", [cur], [out]))
        elif kind == "cast":
            to = draw(st.sampled_from([TensorProto.FLOAT, TensorProto.DOUBLE]))
            nodes.append(helper.make_node("Cast", [cur], [f"{out}_c"], to=to))
            nodes.append(helper.make_node("Cast", [f"{out}_c"], [out], to=TensorProto.FLOAT))
        elif kind == "dropout":
            nodes.append(helper.make_node("Dropout", [cur], [out]))
        elif kind == "pad":
            pads = [draw(st.sampled_from([0, 0, 1])) for _ in range(2 * rank)]
            inits.append(_i64(f"{out}_pads", pads))
            nodes.append(helper.make_node("Pad", [cur, f"{out}_pads"], [out]))
            shape = [d + pads[j] + pads[j + rank] for j, d in enumerate(shape)]
        elif kind == "slice":
            axis = draw(st.integers(0, rank - 1))
            start = draw(st.sampled_from([0, 0, 1]))
            end = draw(st.sampled_from([shape[axis], 2**63 - 1, 2**31 - 1, max(shape[axis] - 1, 1)]))
            inits += [_i64(f"{out}_s", [start]), _i64(f"{out}_e", [end]), _i64(f"{out}_a", [axis])]
            nodes.append(helper.make_node("Slice", [cur, f"{out}_s", f"{out}_e", f"{out}_a"], [out]))
            shape = shape[:]
            shape[axis] = len(range(shape[axis])[start : min(end, shape[axis])])
            if shape[axis] == 0:
                return None
        elif kind == "expand":
            target = [draw(st.sampled_from([1, d])) for d in shape]
            inits.append(_i64(f"{out}_shape", target))
            nodes.append(helper.make_node("Expand", [cur, f"{out}_shape"], [out]))
        else:
            value = draw(st.sampled_from([1.0, 1.0, 2.0]))
            inits.append(numpy_helper.from_array(np.array([value], np.float32), f"{out}_k"))
            nodes.append(helper.make_node(draw(st.sampled_from(["Mul", "Div"])), [cur, f"{out}_k"], [out]))
        cur = out
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, shape)],
        inits,
        opset=opset,
    )
    return model


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(layout_chains(), st.sampled_from(["cleanup", "eliminate-noop,dce", "merge-consecutive,dce", "cleanup,cse"]))
def test_random_layout_chains_keep_outputs(model, passes: str) -> None:
    if model is None:
        return
    onnx.checker.check_model(model)
    out = graphopt.optimize(model, passes=passes, fixed_point=True)
    onnx.checker.check_model(out, full_check=True)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)}
    _same_outputs(model, out, feeds)
    assert len(out.graph.node) <= len(model.graph.node)
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    if passes == "cleanup":
        ops = _ops(out)
        assert "Identity" not in ops or len(ops) == 1 and out.graph.output[0].name != "x"
        assert "Dropout" not in ops


# --------------------------------------------------------------------------------------------------------------------
# eliminate-noop: rewrite and leave-alone cases
# --------------------------------------------------------------------------------------------------------------------
def _x(shape=(2, 3)):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))


def _y(shape=(2, 3), name="y"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def test_input_that_is_directly_an_output_keeps_its_identity() -> None:
    model = _model([helper.make_node("Identity", ["x"], ["y"])], [_x()], [_y()])
    out = graphopt.optimize(model, level=2)
    assert _ops(out) == ["Identity"] and out.graph.output[0].name == "y"


def test_identity_in_if_branch_returning_outer_value_is_kept_valid() -> None:
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [], [_y(name="t")])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_y(name="e")])
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)]
    model = _model(nodes, [_x(), helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [_y()])
    out = graphopt.optimize(model, level=2)
    onnx.checker.check_model(out)
    x = np.ones((2, 3), np.float32)
    for c in (True, False):
        _same_outputs(model, out, {"x": x, "c": np.array(c)})


def test_dropout_in_training_mode_or_with_used_mask_stays() -> None:
    ratio = numpy_helper.from_array(np.array(0.5, np.float32), "ratio")
    train = numpy_helper.from_array(np.array(True), "train")
    nodes = [
        helper.make_node("Dropout", ["x", "ratio", "train"], ["d1"]),
        helper.make_node("Dropout", ["d1"], ["d2", "mask"]),
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["d2", "maskf"], ["y"]),
    ]
    model = _model(nodes, [_x()], [_y()], [ratio, train])
    assert _ops(graphopt.optimize(model, passes="eliminate-noop")).count("Dropout") == 2


def test_noops_that_are_not() -> None:
    shape = _i64("shape", [3, 2])
    pads = _i64("pads", [0, 1, 0, 0])
    two = numpy_helper.from_array(np.array([[2.0], [2.0]], np.float32), "two")
    ones = numpy_helper.from_array(np.ones((2, 2, 3), np.float32), "ones")
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),  # [2,3] -> [3,2]: real
        helper.make_node("Reshape", ["r", "shape"], ["r2"]),  # [3,2] -> [3,2]: no-op
        helper.make_node("Transpose", ["r2"], ["t"], perm=[1, 0]),
        helper.make_node("Pad", ["t", "pads"], ["p"]),  # real
        helper.make_node("Mul", ["x", "ones"], ["m"]),  # ones broadcasts x to [2,2,3]: real
        helper.make_node("Mul", ["x", "two"], ["m2"]),  # 2: real
    ]
    outs = [_y((2, 4), "p"), _y((2, 2, 3), "m"), _y((2, 3), "m2")]
    model = _model(nodes, [_x()], outs, [shape, pads, two, ones])
    out = graphopt.optimize(model, passes="eliminate-noop,dce")
    assert _ops(out) == ["Reshape", "Transpose", "Pad", "Mul", "Mul"]
    _same_outputs(model, out, {"x": np.arange(6, dtype=np.float32).reshape(2, 3)})


def test_cast_to_other_type_and_custom_domain_stay() -> None:
    nodes = [
        helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT16),
        helper.make_node("Cast", ["c"], ["c2"], to=TensorProto.FLOAT),
        helper.make_node("Identity", ["c2"], ["i"], domain="my.ops"),
        helper.make_node("Relu", ["i"], ["y"]),
    ]
    model = _model(nodes, [_x()], [_y()], extra_opsets=[("my.ops", 1)])
    assert _ops(graphopt.optimize(model, passes="cleanup")) == ["Cast", "Cast", "Identity", "Relu"]


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_squeeze_unsqueeze_pairs_by_opset(opset: int) -> None:
    if opset >= 13:
        nodes = [
            helper.make_node("Unsqueeze", ["x", "axes"], ["u"]),
            helper.make_node("Squeeze", ["u", "axes"], ["s"]),
            helper.make_node("Relu", ["s"], ["y"]),
        ]
        inits = [_i64("axes", [1])]
    else:
        nodes = [
            helper.make_node("Unsqueeze", ["x"], ["u"], axes=[1]),
            helper.make_node("Squeeze", ["u"], ["s"], axes=[1]),
            helper.make_node("Relu", ["s"], ["y"]),
        ]
        inits = []
    model = _model(nodes, [_x()], [_y()], inits, opset=opset)
    out = graphopt.optimize(model, passes="cleanup")
    assert _ops(out) == ["Relu"]
    _same_outputs(model, out, {"x": np.ones((2, 3), np.float32)})


def test_transposes_that_cancel_and_compose() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    nodes = [
        helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 2, 0]),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[2, 0, 1]),  # cancels t1
        helper.make_node("Transpose", ["t2"], ["t3"], perm=[0, 2, 1]),
        helper.make_node("Transpose", ["t3"], ["y"], perm=[1, 0, 2]),  # composes with t3
    ]
    model = _model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2, 3])])
    out = graphopt.optimize(model, passes="cleanup")
    assert _ops(out) == ["Transpose"]
    _same_outputs(model, out, {"x": np.arange(24, dtype=np.float32).reshape(2, 3, 4)})


# --------------------------------------------------------------------------------------------------------------------
# cse, dedup-initializers, remove-unused
# --------------------------------------------------------------------------------------------------------------------
@st.composite
def duplicated_graphs(draw):
    """Random expressions where some subexpressions are written twice (with equal but distinct constants)."""
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    nodes, inits = [], []
    pool = ["x"]
    for i in range(draw(st.integers(2, 10))):
        op = draw(st.sampled_from(["Add", "Mul", "Relu", "Neg", "AddK", "Softmax"]))
        a = draw(st.sampled_from(pool))
        b = draw(st.sampled_from(pool))
        copies = draw(st.sampled_from([1, 2]))
        for c in range(copies):
            out = f"v{i}_{c}"
            if op in ("Add", "Mul"):
                nodes.append(helper.make_node(op, [a, b], [out]))
            elif op == "AddK":
                k = f"k{i}_{c}"
                inits.append(numpy_helper.from_array(np.full((3,), float(i), np.float32), k))
                nodes.append(helper.make_node("Add", [a, k], [out]))
            elif op == "Softmax":
                nodes.append(helper.make_node("Softmax", [a], [out], axis=draw(st.sampled_from([0, 1]))))
            else:
                nodes.append(helper.make_node(op, [a], [out]))
            pool.append(out)
    del rng
    outs = sorted(set(draw(st.lists(st.sampled_from(pool[1:]), min_size=1, max_size=3))))
    return _model(nodes, [_x((2, 3))], [_y((2, 3), o) for o in outs], inits)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(duplicated_graphs())
def test_cse_random_duplicates(model) -> None:
    out = graphopt.optimize(model, passes="cse,dedup-initializers,dce", fixed_point=True)
    onnx.checker.check_model(out)
    _same_outputs(model, out, {"x": np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)})
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    outputs = {o.name for o in out.graph.output}
    keys = [
        (n.op_type, tuple(n.input), tuple(a.SerializeToString() for a in n.attribute))
        for n in out.graph.node
        if not set(n.output) <= outputs  # two graph outputs computed alike stay two nodes (no Identity churn)
    ]
    non_identity = [k for k in keys if k[0] != "Identity"]
    assert len(non_identity) == len(set(non_identity)), "two nodes still compute the same thing"
    datas = [(i.data_type, tuple(i.dims), i.raw_data) for i in out.graph.initializer]
    assert len(datas) == len(set(datas)), "equal initializers remain"


def test_cse_leaves_random_ops_and_custom_ops() -> None:
    nodes = [
        helper.make_node("RandomNormalLike", ["x"], ["r1"]),
        helper.make_node("RandomNormalLike", ["x"], ["r2"]),
        helper.make_node("Op", ["x"], ["c1"], domain="my.ops"),
        helper.make_node("Op", ["x"], ["c2"], domain="my.ops"),
        helper.make_node("Sum", ["r1", "r2", "c1", "c2"], ["y"]),
    ]
    model = _model(nodes, [_x()], [_y()], extra_opsets=[("my.ops", 1)])
    assert len(graphopt.optimize(model, passes="cse").graph.node) == 5


def test_remove_unused_opsets_and_functions() -> None:
    used = helper.make_function(
        "fn.used",
        "F",
        ["a"],
        ["b"],
        [helper.make_node("G", ["a"], ["b"], domain="fn.inner")],
        [helper.make_opsetid("", 17), helper.make_opsetid("fn.inner", 1)],
    )
    inner = helper.make_function(
        "fn.inner", "G", ["a"], ["b"], [helper.make_node("Neg", ["a"], ["b"])], [helper.make_opsetid("", 17)]
    )
    unused = helper.make_function(
        "fn.unused", "H", ["a"], ["b"], [helper.make_node("Abs", ["a"], ["b"])], [helper.make_opsetid("", 17)]
    )
    nodes = [helper.make_node("F", ["x"], ["y"], domain="fn.used")]
    extra = [("fn.used", 1), ("fn.inner", 1), ("fn.unused", 1), ("never.used", 1)]
    model = _model(nodes, [_x()], [_y()], extra_opsets=extra, functions=[used, inner, unused])
    out = graphopt.optimize(model, passes="cleanup")
    assert sorted(f.name for f in out.functions) == ["F", "G"]
    assert sorted(o.domain for o in out.opset_import) == ["", "fn.inner", "fn.used"]
    onnx.checker.check_model(out)
    _same_outputs(model, out, {"x": np.ones((2, 3), np.float32)})


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.onnx")), ids=lambda p: p.name)
def test_fixtures_under_o2(path: Path) -> None:
    model = onnx.load(str(path))
    out = graphopt.optimize(model, level=2)
    onnx.checker.check_model(out, full_check=True)
    assert len(out.graph.node) <= len(model.graph.node)
    feeds = session_feeds(path)
    for a, b in zip(ort_run(model, feeds), ort_run(out, feeds), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 2), min_size=4, max_size=4),
    st.lists(st.integers(0, 1), min_size=4, max_size=4),
    st.sampled_from([0.0, 0.0, 1.5]),
    st.booleans(),
)
def test_zero_pad_merges_into_conv(pad_hw, conv_pads, value, pad_channels) -> None:
    rng = np.random.default_rng(0)
    pads = [0, 1 if pad_channels else 0, pad_hw[0], pad_hw[1], 0, 0, pad_hw[2], pad_hw[3]]
    w = numpy_helper.from_array(rng.standard_normal((4, 3 + (1 if pad_channels else 0), 3, 3)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Pad", ["x", "pads", "value"], ["p"]),
        helper.make_node("Conv", ["p", "w"], ["y"], pads=conv_pads),
    ]
    inits = [_i64("pads", pads), numpy_helper.from_array(np.array(value, np.float32), "value"), w]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])
    model = _model(nodes, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None, None])], inits)
    out = graphopt.optimize(model, passes="cleanup")
    merged = value == 0.0 and not pad_channels
    assert ("Pad" in _ops(out)) != merged or not any(pads)
    _same_outputs(model, out, {"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)})


@pytest.mark.parametrize(("order", "removed"), [([0, 1], True), ([1, 0], False)])
def test_reshape_to_its_own_dynamic_shape(order, removed) -> None:
    idx = _i64("idx", order)
    minus1 = _i64("minus1", [-1])
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "idx"], ["dims"], axis=0),
        helper.make_node("Concat", ["dims", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model(nodes, [x], [y], [idx, minus1])
    out = graphopt.optimize(model, level=2)
    assert (_ops(out) == ["Relu"]) == removed
    for b, s in ((1, 3), (4, 2)):
        _same_outputs(model, out, {"x": np.random.default_rng(b).standard_normal((b, s, 8)).astype(np.float32)})


# --------------------------------------------------------------------------------------------------------------------
# strip-debug-info and value_info of removed values
# --------------------------------------------------------------------------------------------------------------------
def _annotated_model() -> onnx.ModelProto:
    """x -> Relu -> Identity -> y with exporter-style annotations everywhere, a value_info entry for a weight that
    nothing reads, and the user's own model metadata."""
    relu = helper.make_node("Relu", ["x"], ["r"], name="relu", doc_string="File model.py, line 3")
    helper.set_metadata_props(relu, {"pkg.torch.onnx.stack_trace": "model.py:3", "namespace": "net/relu"})
    ident = helper.make_node("Identity", ["r"], ["y"], name="id")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3], doc_string="the image")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3], doc_string="the scores")
    helper.set_metadata_props(x, {"pkg.torch.onnx.original_node_name": "arg0"})
    model = _model([relu, ident], [x], [y], inits=[numpy_helper.from_array(np.ones(3, np.float32), "unused_w")])
    r_info = helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, 3])
    helper.set_metadata_props(r_info, {"pkg.torch.onnx.fx_node": "%relu"})
    w_info = helper.make_tensor_value_info("unused_w", TensorProto.FLOAT, [3])
    model.graph.value_info.extend([r_info, w_info])
    helper.set_metadata_props(model.graph, {"pkg.torch.export.ExportedProgram.graph_signature": "inputs: ..."})
    helper.set_metadata_props(model, {"author": "me", "labels": "cat,dog"})
    return model


def test_o2_strips_debug_annotations_and_keeps_model_metadata():
    model = _annotated_model()
    out = graphopt.optimize(model)
    g = out.graph
    assert [n.op_type for n in g.node] == ["Relu"]
    assert not g.node[0].metadata_props and not g.node[0].doc_string
    assert not g.metadata_props
    assert not g.input[0].metadata_props and g.input[0].doc_string == "the image"
    assert g.output[0].doc_string == "the scores"
    assert {p.key: p.value for p in out.metadata_props} == {"author": "me", "labels": "cat,dog"}
    # the removed initializer's value_info goes with it; nothing keeps "r" (renamed away by Identity removal)
    assert "unused_w" not in {v.name for v in g.value_info}
    assert not any(v.metadata_props for v in g.value_info)
    _same_outputs(model, out, {"x": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)})


def test_keep_debug_info_keeps_annotations(tmp_path):
    model = _annotated_model()
    out = graphopt.optimize(model, keep_debug_info=True)
    assert {p.key for p in out.graph.node[0].metadata_props} == {"pkg.torch.onnx.stack_trace", "namespace"}
    assert out.graph.node[0].doc_string == "File model.py, line 3"
    assert out.graph.metadata_props and out.graph.input[0].metadata_props
    src, dst = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(model, src)
    from graphopt.cli import main

    assert main(["optimize", str(src), "-o", str(dst), "--keep-debug-info", "-q"]) == 0
    assert onnx.load(dst).graph.node[0].metadata_props
    assert main(["optimize", str(src), "-o", str(dst), "-q"]) == 0
    assert not onnx.load(dst).graph.node[0].metadata_props


def test_value_info_of_dead_initializer_is_dropped_at_save():
    model = _annotated_model()
    out = graphopt.optimize(model, level=1, keep_debug_info=True)
    names = {v.name for v in out.graph.value_info}
    assert "unused_w" not in names and not any(t.name == "unused_w" for t in out.graph.initializer)
    # without any pass, every listing survives the round trip, even one naming a tensor nothing defines
    model.graph.value_info.append(helper.make_tensor_value_info("ghost", TensorProto.FLOAT, [1]))
    same = graphopt.optimize(model, level=0)
    assert [v.name for v in same.graph.value_info] == ["r", "unused_w", "ghost"]


# --------------------------------------------------------------------------------------------------------------------
# the pattern rules of eliminate-noop and merge-consecutive: random neutral arithmetic, Pad into Conv, the pass table
# --------------------------------------------------------------------------------------------------------------------
_NEUTRAL_OF = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0}
_CONST_SHAPES = [(), (1,), (4,), (3, 1), (1, 3, 4), (2, 1, 1, 1)]


@st.composite
def neutral_chains(draw):
    """x [2,3,4] through random x op c (c neutral or not, of a shape that may broadcast x bigger), one-input Concats,
    one-output Splits, and a bool branch through And/Or. Returns the model and how many arithmetic ops must stay."""
    nodes, inits, cur, shape, keep = [], [], "x", (2, 3, 4), 0
    for i in range(draw(st.integers(1, 6))):
        out = f"t{i}"
        kind = draw(st.sampled_from(["Add", "Sub", "Mul", "Div", "Concat", "Split"]))
        if kind == "Concat":
            nodes.append(helper.make_node("Concat", [cur], [out], axis=draw(st.integers(0, len(shape) - 1))))
        elif kind == "Split":
            nodes.append(helper.make_node("Split", [cur], [out], axis=draw(st.integers(0, len(shape) - 1))))
        else:
            cshape = draw(st.sampled_from(_CONST_SHAPES))
            value = draw(st.sampled_from([_NEUTRAL_OF[kind], _NEUTRAL_OF[kind], 2.0]))
            inits.append(numpy_helper.from_array(np.full(cshape, value, np.float32), f"{out}_c"))
            ins = [cur, f"{out}_c"]
            if kind in ("Add", "Mul") and draw(st.booleans()):
                ins.reverse()  # the constant first: either side is neutral for a commutative op
            nodes.append(helper.make_node(kind, ins, [out]))
            grown = tuple(np.broadcast_shapes(shape, cshape))
            keep += value != _NEUTRAL_OF[kind] or grown != shape
            shape = grown
        cur = out
    flag = draw(st.sampled_from([True, False]))
    bool_op = draw(st.sampled_from(["And", "Or"]))
    inits.append(numpy_helper.from_array(np.full((4,), flag), "flag"))
    nodes += [helper.make_node("Greater", ["x", "zero"], ["b"]), helper.make_node(bool_op, ["b", "flag"], ["bo"])]
    inits.append(numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    keep_bool = flag != (bool_op == "And")  # x and True, x or False are x
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [
            helper.make_tensor_value_info(cur, TensorProto.FLOAT, list(shape)),
            helper.make_tensor_value_info("bo", TensorProto.BOOL, [2, 3, 4]),
        ],
        inits,
        opset=13,
    )
    return model, keep, keep_bool


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(neutral_chains())
def test_random_neutral_ops_go_and_broadcasting_ones_stay(case) -> None:
    model, keep, keep_bool = case
    onnx.checker.check_model(model)
    out = graphopt.optimize(model, passes="cleanup")
    onnx.checker.check_model(out, full_check=True)
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)}
    _same_outputs(model, out, feeds)
    ops = _ops(out)
    assert sum(op in _NEUTRAL_OF for op in ops) == keep, ops
    assert ("And" in ops or "Or" in ops) == keep_bool, ops
    assert "Concat" not in ops and "Split" not in ops


@st.composite
def padded_convs(draw):
    """Pad (zeros or not, on spatial dims or also on channels) before a Conv (own pads, or auto_pad VALID)."""
    opset = draw(st.sampled_from([11, 13, 18]))
    spatial = [draw(st.integers(0, 2)) for _ in range(4)]  # h_begin, w_begin, h_end, w_end
    channel = draw(st.sampled_from([0, 0, 0, 1]))
    pads = [0, 0, spatial[0], spatial[1], 0, channel, spatial[2], spatial[3]]
    value = draw(st.sampled_from([0.0, 0.0, 1.0]))
    k = draw(st.sampled_from([1, 3]))
    cin = 2 + channel
    attrs = {"strides": [draw(st.sampled_from([1, 2]))] * 2}
    if draw(st.booleans()):
        attrs["auto_pad"] = "VALID"
    else:
        attrs["pads"] = [draw(st.integers(0, 1)) for _ in range(4)]
    rng = np.random.default_rng(draw(st.integers(0, 9)))
    inits = [
        _i64("pads", pads),
        numpy_helper.from_array(np.array(value, np.float32), "value"),
        numpy_helper.from_array(rng.standard_normal((3, cin, k, k)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Pad", ["x", "pads", "value"], ["p"], mode="constant"),
        helper.make_node("Conv", ["p", "w"], ["y"], **attrs),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None, None])],
        inits,
        opset=opset,
    )
    return model, value == 0.0 and channel == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(padded_convs())
def test_random_pad_into_conv(case) -> None:
    model, folds = case
    onnx.checker.check_model(model)
    report: list = []
    out = graphopt.optimize(model, passes="merge-consecutive,dce", report=report)
    onnx.checker.check_model(out, full_check=True)
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 2, 6, 6)).astype(np.float32)}
    for a, b in zip(ort_run(model, feeds), ort_run(out, feeds), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert ("Pad" not in _ops(out)) == folds
    stats = next(s for s in report[0].stats if s.name == "merge-consecutive")
    assert stats.counts.get("pad-into-conv", 0) == int(folds)
    if not folds:  # declined with its reason: the value, or the channel pads
        assert set(stats.declines["pad-into-conv"]) <= {"pad value not zero", "pads batch or channel dims"}


def test_rules_show_firings_and_declines_with_reasons_in_the_pass_table() -> None:
    """x + 0 goes (noop-neutral fires); x + zeros[2,2,3,4] would broadcast x to rank 4: declined, with the reason."""
    model = _model(
        [helper.make_node("Add", ["x", "z3"], ["a"]), helper.make_node("Add", ["a", "z4"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, 3, 4])],
        [
            numpy_helper.from_array(np.zeros((3, 4), np.float32), "z3"),
            numpy_helper.from_array(np.zeros((2, 1, 1, 1), np.float32), "z4"),
        ],
    )
    report: list = []
    out = graphopt.optimize(model, passes="eliminate-noop,dce", report=report)
    assert _ops(out) == ["Add"]
    (stats,) = [s for s in report[0].stats if s.name == "eliminate-noop"]
    assert stats.counts == {"noop-neutral": 1}
    assert stats.declines == {"noop-neutral": {"broadcast adds dims": 1}}


# --------------------------------------------------------------------------------------------------------------------
# Scan bodies: a state output never becomes the body's input itself (onnxruntime's Scan then computes wrong values)
# --------------------------------------------------------------------------------------------------------------------
def _cdist_scan(rows: int, feats: int, states: int, seed: int) -> onnx.ModelProto:
    """skl2onnx's pairwise distances (KNeighbors, GaussianProcess: the corpus' skl-knn-diabetes, skl-gpr-diabetes):
    Scan over the training rows C with X as a state the body passes through an Identity, each step emitting
    ReduceSumSquare(X - c) per row of X; ``states`` such pass-through states."""
    f = TensorProto.FLOAT
    c = np.random.default_rng(seed).standard_normal((rows, feats)).astype(np.float32)
    names = [f"s{i}" for i in range(states)]
    body_nodes = [helper.make_node("Identity", [f"{n}_in"], [f"{n}_out"]) for n in names]
    body_nodes += [
        helper.make_node("Sub", ["s0_in", "c"], ["d"]),
        helper.make_node("ReduceSumSquare", ["d"], ["r"], axes=[1], keepdims=0),
        helper.make_node("Identity", ["r"], ["scan_out"]),
    ]
    body = helper.make_graph(
        body_nodes,
        "body",
        [helper.make_tensor_value_info(f"{n}_in", f, ["n", feats]) for n in names]
        + [helper.make_tensor_value_info("c", f, [feats])],
        [helper.make_tensor_value_info(f"{n}_out", f, ["n", feats]) for n in names]
        + [helper.make_tensor_value_info("scan_out", f, ["n"])],
    )
    outs = [f"{n}_final" for n in names]
    nodes = [
        helper.make_node("Scan", [*["X"] * states, "C"], [*outs, "dists"], body=body, num_scan_inputs=1),
        helper.make_node("Transpose", ["dists"], ["y"], perm=[1, 0]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", f, ["n", feats])],
        [helper.make_tensor_value_info("y", f, None)],
        [numpy_helper.from_array(c, "C")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 6), st.integers(1, 4), st.integers(1, 3), st.integers(1, 4), st.integers(0, 100))
def test_scan_pass_through_states_keep_an_identity(rows, feats, states, n, seed) -> None:
    model = _cdist_scan(rows, feats, states, seed)
    out = graphopt.optimize(model, level=2)
    x = np.random.default_rng(seed + 1).standard_normal((n, feats)).astype(np.float32)
    (want,), (got,) = ort_run(model, {"X": x}), ort_run(out, {"X": x})
    assert got.shape == want.shape == (n, rows)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    scan = next(node for node in out.graph.node if node.op_type == "Scan")
    body = scan.attribute[0].g
    assert not {o.name for o in body.output} & {i.name for i in body.input}


# --------------------------------------------------------------------------------------------------------------------
# skl2onnx models (corpus: skl-knn-diabetes, skl-gpr-diabetes): Flatten of a matrix, Transpose of a filled tensor
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,axis,removed",
    [(["n", 5], 1, True), (["n", 5], -1, True), ([3, 5], None, True), (["n", 5], 0, False), (["n", 5, 2], 1, False)],
)
def test_flatten_of_a_matrix_at_axis_one_goes(shape, axis, removed) -> None:
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("Flatten", ["x"], ["f"], **attrs), helper.make_node("Relu", ["f"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])  # fmt: skip
    out = graphopt.optimize(model, level=2)
    assert ("Flatten" not in _ops(out)) == removed, _ops(out)
    for n in (1, 3):
        x = np.random.default_rng(n).standard_normal([n if d == "n" else d for d in shape]).astype(np.float32)
        _same_outputs(model, out, {"x": x})


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=4), st.randoms(use_true_random=False), st.booleans())
def test_transpose_of_constant_of_shape_permutes_the_shape(dims, rnd, shared) -> None:
    perm = list(range(len(dims)))
    rnd.shuffle(perm)
    value = numpy_helper.from_array(np.array([2.5], np.float32), "v")
    nodes = [
        helper.make_node("ConstantOfShape", ["s"], ["c"], value=value),
        helper.make_node("Transpose", ["c"], ["t"], perm=perm),
        helper.make_node("Add", ["t", "x"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if shared:  # the filled tensor has another reader: the rule leaves it (fold-constants may fold a small one)
        outputs.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, None))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1] * len(dims))
    model = _model(nodes, [x], outputs, [_i64("s", dims)])
    out = graphopt.optimize(model, level=2)
    assert shared or "Transpose" not in _ops(out), (_ops(out), perm)
    _same_outputs(model, out, {"x": np.ones([1] * len(dims), np.float32)})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 4),
    st.integers(0, 3),
    st.integers(0, 4),
    st.sampled_from(["absent", "zero", "negzero", "one", "int"]),
    st.sampled_from(["zero", "negzero", "one"]),
    st.booleans(),
)
def test_matmul_of_zero_fills_becomes_one_fill(n, k, c, left, right, same_k) -> None:
    """MatMul(ConstantOfShape([n, k]), ConstantOfShape([k, c])) of +0 fills is ConstantOfShape([n, c]); -0, nonzero or
    mixed-type fills and unequal inner dims keep the MatMul (skl2onnx's Gaussian-process White kernel). The small right
    fill is folded to a constant first: the rule reads both forms."""
    fills = {"zero": np.array([0.0], np.float32), "negzero": np.array([-0.0], np.float32),
             "one": np.array([1.0], np.float32), "int": np.array([0], np.int32)}  # fmt: skip
    la = {} if left == "absent" else {"value": numpy_helper.from_array(fills[left], "v")}
    kb = k if same_k else k + 1
    nodes = [
        helper.make_node("Shape", ["x"], ["sx"]),
        helper.make_node("Gather", ["sx", "i0"], ["n"]),
        helper.make_node("Concat", ["n", "k"], ["sa"], axis=0),
        helper.make_node("ConstantOfShape", ["sa"], ["a"], **la),
        helper.make_node("ConstantOfShape", ["sb"], ["bm"], value=numpy_helper.from_array(fills[right], "v")),
        helper.make_node("MatMul", ["a", "bm"], ["y"]),
    ]
    inits = [_i64("i0", [0]), _i64("k", [k]), _i64("sb", [kb, c])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT if left != "int" else TensorProto.INT32,
                                                  None)], inits)  # fmt: skip
    safe = left in ("absent", "zero") and (right == "zero" or k == 0 or c == 0)  # an empty right matrix has no -0 or 1
    if left == "int" or not same_k:  # an invalid model: the rule must not make it valid
        out = graphopt.optimize(model, level=2)
        assert "MatMul" in _ops(out)
        return
    out = graphopt.optimize(model, level=2)
    assert ("MatMul" not in _ops(out)) == safe, _ops(out)
    x = np.zeros(n, np.float32)
    (want,), (got,) = ort_run(model, {"x": x}), ort_run(out, {"x": x})
    assert got.shape == want.shape == (n, c) and got.dtype == want.dtype
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    np.testing.assert_array_equal(got, want)
