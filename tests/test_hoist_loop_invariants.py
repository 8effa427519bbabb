"""hoist-loop-invariants: random Loop models keep their outputs bit for bit under onnxruntime, what must stay in the
body stays, pass-through body outputs survive the other passes and save/load, and slanet-en (the real decoder in a
Loop the pass was written for) keeps its outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.ir import Graph, IRError, Node, Value
from graphopt.core.onnx_io import from_proto, to_proto
from tests.conftest import ort_run

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
ROOT = Path(__file__).resolve().parent.parent
SHAPE = (2, 3)


def _model(body_nodes, body_inits, loop_inputs, carried, scans, *, main_inits=(), main_nodes=(), opset=17, unread=()):
    """A model: x [2,3], y [3,3] -> Loop(loop_inputs) -> every Loop output is a graph output (but the final values
    of the carried slots numbered in ``unread``).

    ``carried``: (body input name, body output name, type) per loop-carried value; ``scans``: body output names."""
    body_in = [helper.make_tensor_value_info("iter", I64, []), helper.make_tensor_value_info("cond_in", B, [])]
    body_in += [helper.make_tensor_value_info(name, t, list(SHAPE)) for name, _, t in carried]
    body_out = [helper.make_tensor_value_info("cond_out", B, [])]
    body_out += [helper.make_tensor_value_info(out, t, list(SHAPE)) for _, out, t in carried]
    body_out += [helper.make_tensor_value_info(s, F, list(SHAPE)) for s in scans]
    body = helper.make_graph(body_nodes, "body", body_in, body_out, list(body_inits))
    outs = [f"final_{i}" for i in range(len(carried))] + [f"scan_{i}" for i in range(len(scans))]
    loop = helper.make_node("Loop", loop_inputs, outs, body=body)
    graph = helper.make_graph(
        [*main_nodes, loop],
        "g",
        [helper.make_tensor_value_info("x", F, list(SHAPE)), helper.make_tensor_value_info("y", F, [3, 3])],
        [
            helper.make_tensor_value_info(f"final_{i}", t, list(SHAPE))
            for i, (_, _, t) in enumerate(carried)
            if i not in unread
        ]
        + [helper.make_tensor_value_info(f"scan_{i}", F, [None, *SHAPE]) for i in range(len(scans))],
        list(main_inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal(SHAPE).astype(np.float32), "y": rng.standard_normal((3, 3)).astype(np.float32)}


def _body(model: onnx.ModelProto) -> onnx.GraphProto:
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    return loop.attribute[0].g


def _same(a: onnx.ModelProto, b: onnx.ModelProto, feeds) -> None:
    for x, y in zip(ort_run(a, feeds), ort_run(b, feeds), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


UNARY = ["Relu", "Neg", "Tanh", "Sigmoid", "Abs"]
BINARY = ["Add", "Mul", "Sub", "Max"]


@st.composite
def loop_models(draw):
    """A Loop whose body mixes invariant chains (outer values, body constants, pass-through carried values) with
    variant ones (the state, the iteration number); a trip count and condition that do or do not prove one run; scan
    outputs that may be invariant; optionally an inner Loop reading the outer body's values."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    main_inits: list[onnx.TensorProto] = []
    counter = iter(range(1000))

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    # trip count and condition
    trip_kind = draw(st.sampled_from(["const", "const", "zero", "absent", "input"]))
    cond_kind = draw(st.sampled_from(["absent", "absent", "true", "false", "input"]))
    if trip_kind == "absent" and cond_kind == "absent":
        cond_kind = "true"  # no trip count and no condition: the loop never ends (the body's condition is ignored)
    trip = ""
    main_nodes: list[onnx.NodeProto] = []
    if trip_kind in ("const", "zero"):
        main_inits.append(
            numpy_helper.from_array(np.array(draw(st.integers(1, 3)) if trip_kind == "const" else 0), "M")
        )
        trip = "M"
    elif trip_kind == "input":  # computed from x: not a constant
        main_nodes.append(
            helper.make_node("Constant", [], ["three"], value=numpy_helper.from_array(np.array(3.0, np.float32)))
        )
        main_nodes.append(helper.make_node("ReduceMax", ["x"], ["xmax"], keepdims=0))
        main_nodes.append(helper.make_node("Less", ["xmax", "three"], ["xless"]))
        main_nodes.append(helper.make_node("Cast", ["xless"], ["M"], to=I64))
        trip = "M"
    cond = ""
    if cond_kind in ("true", "false"):
        main_inits.append(numpy_helper.from_array(np.array(cond_kind == "true"), "C"))
        cond = "C"
    elif cond_kind == "input":
        main_nodes.append(helper.make_node("ReduceMin", ["x"], ["xmin"], keepdims=0))
        main_nodes.append(
            helper.make_node("Constant", [], ["big"], value=numpy_helper.from_array(np.array(5.0, np.float32)))
        )
        main_nodes.append(helper.make_node("Less", ["xmin", "big"], ["C"]))
        cond = "C"
    runs = trip_kind not in ("zero", "input") and cond_kind not in ("false", "input")

    # values: invariant ones (outer x/y, a pass-through carried value, body constants) and variant ones
    carried = [("s_in", "s_out", F)]
    loop_inputs = [trip, cond, "x"]
    invariant = ["x"]
    if draw(st.booleans()):
        init = "y_sq" if draw(st.booleans()) else "x"
        if init == "y_sq":
            main_nodes.append(helper.make_node("Mul", ["x", "x"], ["y_sq"]))
        carried.append(("p_in", "p_in", F))  # passed through unchanged
        loop_inputs.append(init)
        invariant.append("p_in")
    nodes.append(helper.make_node("Cast", ["iter"], ["iter_s"], to=F))
    inits.append(numpy_helper.from_array(np.full(SHAPE, 0.5, np.float32), "half"))
    nodes.append(helper.make_node("Add", ["iter_s", "half"], ["iter_f"]))  # [2,3], one value per iteration
    variant = ["s_in", "iter_f"]
    if draw(st.booleans()):
        name = fresh("k")
        inits.append(numpy_helper.from_array(rng.standard_normal(SHAPE).astype(np.float32), name))
        invariant.append(name)
    if draw(st.booleans()):
        name = fresh("c")
        value = numpy_helper.from_array(rng.standard_normal(SHAPE).astype(np.float32))
        nodes.append(helper.make_node("Constant", [], [name], value=value))
        invariant.append(name)
    matmul_weight = None
    if draw(st.booleans()):
        matmul_weight = fresh("w")
        inits.append(numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), matmul_weight))
    expect_moved: list[str] = []  # outputs of the invariant nodes generated
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["unary", "binary", "matmul", "outer-matmul"]))
        use_invariant = draw(st.booleans())
        pool = invariant if use_invariant else variant
        a = draw(st.sampled_from(pool))
        out = fresh("v")
        if kind == "unary":
            nodes.append(helper.make_node(draw(st.sampled_from(UNARY)), [a], [out]))
            ins = [a]
        elif kind == "binary":
            b = draw(st.sampled_from(invariant + variant if not use_invariant else invariant))
            nodes.append(helper.make_node(draw(st.sampled_from(BINARY)), [a, b], [out]))
            ins = [a, b]
        elif kind == "matmul" and matmul_weight is not None:
            nodes.append(helper.make_node("MatMul", [a, matmul_weight], [out]))
            ins = [a]
        else:
            nodes.append(helper.make_node("MatMul", [a, "y"], [out]))  # y: an outer graph input
            ins = [a]
        if all(v in invariant for v in ins):
            invariant.append(out)
            expect_moved.append(out)
        else:
            variant.append(out)
    # the state: s_out reads a variant value and an arbitrary one, so every value may reach an output
    nodes.append(
        helper.make_node("Add", [draw(st.sampled_from(variant)), draw(st.sampled_from(variant + invariant))], ["s_out"])
    )
    if draw(st.booleans()):  # an inner Loop (2 runs) reads values of the outer body
        inner_read = draw(st.sampled_from(invariant + variant))
        t_name = fresh("t")
        inner_body = helper.make_graph(
            [
                helper.make_node(
                    "Neg", [inner_read], ["in_neg"]
                ),  # invariant in the inner loop, whatever it is outside
                helper.make_node("Add", ["in_s", "in_neg"], ["in_s_out"]),
                helper.make_node("Identity", ["in_cond"], ["in_cond_out"]),
            ],
            "inner",
            [
                helper.make_tensor_value_info("in_iter", I64, []),
                helper.make_tensor_value_info("in_cond", B, []),
                helper.make_tensor_value_info("in_s", F, list(SHAPE)),
            ],
            [
                helper.make_tensor_value_info("in_cond_out", B, []),
                helper.make_tensor_value_info("in_s_out", F, list(SHAPE)),
            ],
        )
        inits.append(numpy_helper.from_array(np.array(2, np.int64), t_name))
        inner_out = fresh("inner")
        nodes.append(helper.make_node("Loop", [t_name, "", "s_in"], [inner_out], body=inner_body))
        variant.append(inner_out)
    scans = []
    for _ in range(draw(st.integers(0, 2))):
        scans.append(draw(st.sampled_from(invariant[1:] + variant) if len(invariant) > 1 else st.sampled_from(variant)))
    if trip_kind == "absent":  # no trip count: the body's condition ends the loop after the third run (iter < 2)
        inits.append(numpy_helper.from_array(np.array(2, np.int64), "two"))
        nodes.append(helper.make_node("Less", ["iter", "two"], ["cond_out"]))
    else:
        nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    scan_names = []
    for s in scans:  # a scan output of a value that is already a body output would be listed twice: an Identity
        name = fresh("scan")
        nodes.append(helper.make_node("Identity", [s], [name]))
        scan_names.append(name)
    model = _model(nodes, inits, loop_inputs, carried, scan_names, main_inits=main_inits, main_nodes=main_nodes)
    return model, runs, expect_moved, draw(st.integers(0, 2**16))


@settings(max_examples=80, deadline=None)
@given(loop_models())
def test_random_loops_keep_outputs_bit_for_bit(case) -> None:
    model, runs, expect_moved, seed = case
    out = graphopt.optimize(model, passes="hoist-loop-invariants")
    onnx.checker.check_model(out)
    feeds = _feeds(seed)
    _same(model, out, feeds)
    outside = {o for n in out.graph.node for o in n.output}
    if not runs:  # the loop might run zero times: nothing leaves it (an inner Loop that runs may give its body some)
        assert [n.op_type for n in out.graph.node] == [n.op_type for n in model.graph.node]
    else:  # every invariant node generated left the loop
        assert set(expect_moved) <= outside
        assert not set(expect_moved) & {o for n in _body(out).node for o in n.output}
    # the whole -O2 pipeline too, with the pass in it: shapes included (a Loop that runs zero times gives an empty
    # scan output whose shape onnxruntime takes from the body output's declared type; see the test below)
    _same(model, graphopt.optimize(model, level=2), feeds)


def _zero_trip_model(trip_input: bool) -> onnx.ModelProto:
    """An outer Loop that runs zero times (trip count a graph input fed 0, or a constant 0) whose body's scan output
    ``rows``, declared [2, 3], is an Identity of an inner Loop's scan output: a Reshape to a shape fed at run time,
    whose shape neither ONNX nor onnxruntime can infer. Only the declared type gives the empty output its shape."""
    inner = helper.make_graph(
        [
            helper.make_node("Identity", ["ic_in"], ["ic_out"]),
            helper.make_node("Cast", ["j"], ["jf"], to=F),
            helper.make_node("Add", ["x", "jf"], ["xj"]),
            helper.make_node("Reshape", ["xj", "s"], ["row"]),
        ],
        "inner",
        [helper.make_tensor_value_info("j", I64, []), helper.make_tensor_value_info("ic_in", B, [])],
        [helper.make_tensor_value_info("ic_out", B, []), helper.make_tensor_value_info("row", F, None)],
    )
    outer = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("Loop", ["two", ""], ["rows0"], body=inner),
            helper.make_node("Identity", ["rows0"], ["rows"]),
        ],
        "outer",
        [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("c_in", B, [])],
        [helper.make_tensor_value_info("c_out", B, []), helper.make_tensor_value_info("rows", F, [2, 3])],
        [numpy_helper.from_array(np.array(2, np.int64), "two")],
    )
    inputs = [helper.make_tensor_value_info("x", F, [3]), helper.make_tensor_value_info("s", I64, ["k"])]
    inits = []
    if trip_input:
        inputs.append(helper.make_tensor_value_info("M", I64, []))
    else:
        inits.append(numpy_helper.from_array(np.array(0, np.int64), "M"))
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", ""], ["out"], body=outer)],
        "g",
        inputs,
        [helper.make_tensor_value_info("out", F, ["a", "b", "c"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("trip_input", [True, False], ids=["trip-fed", "trip-constant"])
def test_a_loop_that_runs_zero_times_keeps_its_scan_outputs_shape(trip_input) -> None:
    """eliminate-noop removes the Identity before the body output; the inner Loop's output takes its place and its
    name, and the body output is listed as the file declared it (``restore_interface``), not with the inferred type
    (no shape: onnxruntime then gives (0,))."""
    model = _zero_trip_model(trip_input)
    feeds = {"x": np.arange(3, dtype=np.float32), "s": np.array([3], np.int64)}
    if trip_input:
        feeds["M"] = np.array(0, np.int64)
    (before,) = ort_run(model, feeds)
    assert before.shape == (0, 2, 3)
    for options in ({"level": 2}, {"passes": "eliminate-noop"}):
        out = graphopt.optimize(model, **options)
        assert not any(n.op_type == "Identity" and n.output[0] == "rows" for n in _body(out).node)  # it did remove it
        (after,) = ort_run(out, feeds)
        assert after.shape == before.shape and after.dtype == before.dtype, options


@pytest.mark.parametrize("declared", [list(SHAPE), ["h", "w"]], ids=["declared-static", "declared-symbolic"])
@pytest.mark.parametrize("input_shape", [None, list(SHAPE)], ids=["input-untyped", "input-typed"])
def test_a_scan_output_a_body_input_takes_keeps_its_declared_shape(input_shape, declared) -> None:
    """The sibling: a scan output that is an Identity of a body input (the carried value as it enters the step).
    The input may take the output's place only if it is known to have the dims the output declares: an input listed
    as an output has the input's type, and onnxruntime shapes the empty scan output of zero runs from it
    (``Graph.can_take_output``). Otherwise the Identity stays. A declared rank counts even with no static dim:
    declared ["h", "w"], onnxruntime gives (0, 0, 0), and (0,) from an untyped input."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["v_in", "one"], ["v_out"]),
            helper.make_node("Identity", ["v_in"], ["s"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("iter", I64, []),
            helper.make_tensor_value_info("cond_in", B, []),
            helper.make_tensor_value_info("v_in", F, input_shape),
        ],
        [
            helper.make_tensor_value_info("cond_out", B, []),
            helper.make_tensor_value_info("v_out", F, None),
            helper.make_tensor_value_info("s", F, declared),
        ],
        [numpy_helper.from_array(np.array(1, np.float32), "one")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["final", "scan"], body=body)],
        "g",
        [helper.make_tensor_value_info("M", I64, []), helper.make_tensor_value_info("x", F, ["p", "q"])],
        [
            helper.make_tensor_value_info("final", F, ["p", "q"]),
            helper.make_tensor_value_info("scan", F, ["a", "b", "c"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for trips in (0, 2):
        feeds = {"M": np.array(trips, np.int64), "x": np.ones(SHAPE, np.float32)}
        for options in ({"level": 2}, {"passes": "eliminate-noop"}):
            out = graphopt.optimize(model, **options)
            _same(model, out, feeds)
    identities = [n for n in _body(graphopt.optimize(model)).node if n.op_type == "Identity"]
    assert len(identities) == (1 if input_shape is None else 0)  # known dims: the input takes the output's place


def _constant_if_model(body_shape, else_shape) -> onnx.ModelProto:
    """A Loop whose body's scan output ``r`` (declared ``body_shape``) is an If on a constant true condition; both
    branches Reshape x to a shape fed at run time, the then branch declaring its output [2, 3], the else branch
    ``else_shape``. onnxruntime types ``r`` from the branches' declarations, so a Loop run zero times gives
    (0, 2, 3) only through them."""
    then = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["t"])], "then", [], [helper.make_tensor_value_info("t", F, [2, 3])]
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e0"]), helper.make_node("Reshape", ["e0", "s"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", F, else_shape)],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("If", ["flag"], ["r"], then_branch=then, else_branch=other),
        ],
        "body",
        [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("c_in", B, [])],
        [helper.make_tensor_value_info("c_out", B, []), helper.make_tensor_value_info("r", F, body_shape)],
        [numpy_helper.from_array(np.array(True), "flag")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", ""], ["out"], body=body)],
        "g",
        [
            helper.make_tensor_value_info("M", I64, []),
            helper.make_tensor_value_info("x", F, [6]),
            helper.make_tensor_value_info("s", I64, ["k"]),
        ],
        [helper.make_tensor_value_info("out", F, ["a", "b", "c"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("body_shape", "else_shape", "inlined"),
    [(None, [2, 3], True), ([2, 3], [2, 3], True), (None, None, False), (None, [3, 2], False)],
    ids=["body-untyped", "body-declared", "else-untyped", "else-differs"],
)
def test_an_inlined_constant_if_keeps_the_scan_outputs_shape(body_shape, else_shape, inlined) -> None:
    """fold-constants replaces an If on a constant condition by its branch: a body output the If gave keeps the type
    the branch declared (``_inline_constant_ifs`` carries the listing over), else a Loop run zero times gives (0,)
    where the model gives (0, 2, 3). When the branch not taken lists it otherwise the If output's type came from both
    branches: the If stays."""
    model = _constant_if_model(body_shape, else_shape)
    for trips in (0, 2):
        feeds = {"M": np.array(trips, np.int64), "x": np.arange(6, dtype=np.float32), "s": np.array([2, 3], np.int64)}
        (before,) = ort_run(model, feeds)
        assert before.shape == (trips, 2, 3) or (trips == 0 and not inlined), before.shape
        for options in ({"level": 2}, {"level": 3}, {"passes": "fold-constants"}):
            out = graphopt.optimize(model, **options)
            assert any(n.op_type == "If" for n in _body(out).node) != inlined, options
            (after,) = ort_run(out, feeds)
            assert after.shape == before.shape and np.array_equal(after, before), (options, trips)


@pytest.mark.parametrize("input_shape", [None, ["p", "q"]], ids=["input-untyped", "input-symbolic"])
def test_a_scan_output_an_inlined_if_passes_a_body_input_to_keeps_its_declared_shape(input_shape) -> None:
    """The If's then branch passes the body input ``v`` through (an Identity); the body declares the If's output
    [2, 3]. fold-constants inlines the If (the Identity's output takes the output's place and name), then
    eliminate-noop would let ``v`` take it: the file's listing, set aside on the If's output, still counts for the
    value that took its name (``Graph._scan_dims_lost``), else a Loop run zero times gives (0,) or (0, 0, 0)."""
    then = helper.make_graph([helper.make_node("Identity", ["v"], ["t"])], "then", [], [])
    then.output.append(helper.make_tensor_value_info("t", F, [2, 3]))
    other = helper.make_graph([helper.make_node("Neg", ["v"], ["e"])], "else", [], [])
    other.output.append(helper.make_tensor_value_info("e", F, [2, 3]))
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["c_in"], ["c_out"]),
            helper.make_node("Add", ["v", "v"], ["v_out"]),
            helper.make_node("If", ["flag"], ["r"], then_branch=then, else_branch=other),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", I64, []),
            helper.make_tensor_value_info("c_in", B, []),
            helper.make_tensor_value_info("v", F, input_shape),
        ],
        [
            helper.make_tensor_value_info("c_out", B, []),
            helper.make_tensor_value_info("v_out", F, input_shape),
            helper.make_tensor_value_info("r", F, [2, 3]),
        ],
        [numpy_helper.from_array(np.array(True), "flag")],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["final", "out"], body=body)],
        "g",
        [helper.make_tensor_value_info("M", I64, []), helper.make_tensor_value_info("x", F, ["a", "b"])],
        [helper.make_tensor_value_info("final", F, None), helper.make_tensor_value_info("out", F, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for trips in (0, 2):
        feeds = {"M": np.array(trips, np.int64), "x": np.ones(SHAPE, np.float32)}
        assert ort_run(model, feeds)[1].shape == (trips, *SHAPE)
        for options in ({"level": 2}, {"passes": "fold-constants,eliminate-noop"}):
            out = graphopt.optimize(model, **options)
            assert not any(n.op_type == "If" for n in _body(out).node), options  # it did inline it
            _same(model, out, feeds)


def _simple(trip=None, cond=None, op="MatMul", attrs=None, domain="", extra_nodes=(), opset=17):
    """x -> Loop: s_out = s + op(x, y) (op reads only outer values: invariant)."""
    main_inits = []
    ins = ["", ""]
    if trip is not None:
        main_inits.append(numpy_helper.from_array(np.array(trip, np.int64), "M"))
        ins[0] = "M"
    if cond is not None:
        main_inits.append(numpy_helper.from_array(np.array(cond), "C"))
        ins[1] = "C"
    nodes = [
        *extra_nodes,
        helper.make_node(op, ["x", "y"] if op == "MatMul" else [], ["inv"], domain=domain, **(attrs or {})),
        helper.make_node("Add", ["s_in", "inv"], ["s_out"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    return _model(nodes, [], [ins[0], ins[1], "x"], [("s_in", "s_out", F)], [], main_inits=main_inits, opset=opset)


def _hoisted(model: onnx.ModelProto) -> bool:
    out = graphopt.optimize(model, passes="hoist-loop-invariants")
    return len(out.graph.node) > len(model.graph.node)


def test_hoists_when_the_loop_provably_runs() -> None:
    for trip, cond in [(3, None), (1, True), (5, True)]:
        model = _simple(trip, cond)
        assert _hoisted(model), (trip, cond)
        _same(model, graphopt.optimize(model, passes="hoist-loop-invariants"), _feeds(0))


@pytest.mark.parametrize(("trip", "cond"), [(0, None), (0, True), (3, False), (-1, None)])
def test_no_hoisting_when_the_loop_may_not_run(trip, cond) -> None:
    assert not _hoisted(_simple(trip, cond))


def test_no_hoisting_with_an_unknown_trip_count_or_condition() -> None:
    for unknown in ("M", "C"):
        model = _simple(3, True)
        graph = model.graph
        init = next(t for t in graph.initializer if t.name == unknown)
        graph.initializer.remove(init)  # now a graph input the caller feeds
        kind = I64 if unknown == "M" else B
        graph.input.append(helper.make_tensor_value_info(unknown, kind, []))
        assert not _hoisted(model), unknown


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("RandomNormal", {"shape": list(SHAPE)}),
        ("RandomUniform", {"shape": list(SHAPE)}),
    ],
)
def test_random_ops_stay(op, attrs) -> None:
    model = _simple(3, None, op=op, attrs=attrs)
    out = graphopt.optimize(model, passes="hoist-loop-invariants")
    assert op in [n.op_type for n in _body(out).node]


def test_dropout_and_random_like_stay() -> None:
    for op in ("Dropout", "RandomNormalLike", "Multinomial"):
        extra = [helper.make_node(op, ["x"], ["inv0"])]
        nodes = [
            *extra,
            helper.make_node("Add", ["s_in", "inv0"] if op != "Multinomial" else ["s_in", "s_in"], ["s_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ]
        model = _model(
            nodes,
            [],
            ["M", "", "x"],
            [("s_in", "s_out", F)],
            [],
            main_inits=[numpy_helper.from_array(np.array(2), "M")],
        )
        out = graphopt.optimize(model, passes="hoist-loop-invariants")
        assert op in [n.op_type for n in _body(out).node], op


def test_subgraph_nodes_and_custom_domains_stay() -> None:
    branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["b_out"])], "branch", [], [helper.make_tensor_value_info("b_out", F, None)]
    )
    then, other = (
        branch,
        helper.make_graph(
            [helper.make_node("Abs", ["x"], ["e_out"])], "other", [], [helper.make_tensor_value_info("e_out", F, None)]
        ),
    )
    nodes = [
        helper.make_node("Constant", [], ["flag"], value=numpy_helper.from_array(np.array(True))),
        helper.make_node("If", ["flag"], ["inv"], then_branch=then, else_branch=other),
        helper.make_node("Add", ["s_in", "inv"], ["s_out"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    model = _model(
        nodes, [], ["M", "", "x"], [("s_in", "s_out", F)], [], main_inits=[numpy_helper.from_array(np.array(2), "M")]
    )
    out = graphopt.optimize(model, passes="hoist-loop-invariants")
    assert "If" in [n.op_type for n in _body(out).node]
    _same(model, out, _feeds(1))
    # a custom-domain node with invariant inputs: graphopt does not know what it does (not run: no such kernel)
    custom = _simple(3, None, op="MatMul")
    body = _body(custom)
    body.node[0].domain = "custom.test"
    custom.opset_import.append(helper.make_opsetid("custom.test", 1))
    out = graphopt.optimize(custom, passes="hoist-loop-invariants")
    assert [n.domain for n in _body(out).node][0] == "custom.test"
    assert len(out.graph.node) == len(custom.graph.node)


def test_hoisted_values_reach_the_body_through_pass_through_slots() -> None:
    model = _simple(3, None)
    out = graphopt.optimize(model, passes="hoist-loop-invariants")
    loop = out.graph.node[-1]
    body = _body(out)
    assert [n.op_type for n in out.graph.node] == ["MatMul", "Loop"]
    assert len(loop.input) == 4 and loop.input[3] == out.graph.node[0].output[0]  # a new loop-carried input
    assert body.output[2].name == body.input[3].name  # its body output is the body input itself
    assert len(loop.output) == 2 and loop.output[1] not in [o.name for o in out.graph.output]
    assert not any(n.op_type == "MatMul" for n in body.node)  # and no implicit outer read of the hoisted value


def test_round_trip_keeps_pass_through_outputs(tmp_path) -> None:
    model = _simple(3, None)
    out = graphopt.optimize(model, passes="hoist-loop-invariants")
    path = tmp_path / "hoisted.onnx"
    onnx.save(out, path)
    again = graphopt.load(str(path))
    graphopt.save(again, str(tmp_path / "again.onnx"))
    reloaded = onnx.load(tmp_path / "again.onnx")
    onnx.checker.check_model(reloaded)
    assert [o.name for o in _body(reloaded).output] == [o.name for o in _body(out).output]
    assert _body(reloaded).output[2].name == _body(reloaded).input[3].name
    _same(model, reloaded, _feeds(2))
    # and the whole -O2 pipeline again on the hoisted model: the pass-through slot survives cleanup and friends
    twice = graphopt.optimize(out, level=2)
    body = _body(twice)
    assert any(o.name == i.name for o, i in zip(body.output[1:], body.input[2:], strict=False))
    _same(model, twice, _feeds(2))


def test_dead_slots_go_and_the_weights_with_them() -> None:
    """A weight the body only passes through (as paddle2onnx exports do) and reads in a hoisted node: the slot goes
    once nothing reads it, so the weight's Transpose folds at -O2 without keeping both copies."""
    w = numpy_helper.from_array(np.arange(9, dtype=np.float32).reshape(3, 3), "W")
    nodes = [
        helper.make_node("Transpose", ["w_in"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["s_in", "wt"], ["prod"]),
        helper.make_node("Tanh", ["prod"], ["s_out"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    model = _model(
        nodes,
        [],
        ["M", "", "x", "W"],
        [("s_in", "s_out", F), ("w_in", "w_in", F)],
        [],
        main_inits=[numpy_helper.from_array(np.array(4), "M"), w],
        unread=(1,),
    )
    out = graphopt.optimize(model, level=2)
    loop = next(n for n in out.graph.node if n.op_type == "Loop")
    assert "W" not in loop.input and "Transpose" not in [n.op_type for n in out.graph.node]
    assert [n.op_type for n in _body(out).node] == ["MatMul", "Tanh"]
    _same(model, out, _feeds(3))


def test_body_output_pass_through_after_cancelled_squeeze() -> None:
    """merge-consecutive cancels Squeeze(Unsqueeze(s)) on a body output: the body input takes the output's place
    (outputs of a Loop body go by position), which makes the slot a pass-through; in the main graph the Identity rule
    is unchanged."""
    axes = numpy_helper.from_array(np.array([0], np.int64), "ax")
    nodes = [
        helper.make_node("Unsqueeze", ["p_in", "ax"], ["u"]),
        helper.make_node("Squeeze", ["u", "ax"], ["p_out"]),
        helper.make_node("MatMul", ["p_in", "y"], ["inv"]),
        helper.make_node("Add", ["s_in", "inv"], ["s_out"]),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    model = _model(
        nodes,
        [axes],
        ["M", "", "x", "x"],
        [("s_in", "s_out", F), ("p_in", "p_out", F)],
        [],
        main_inits=[numpy_helper.from_array(np.array(3), "M")],
    )
    cleaned = graphopt.optimize(model, passes="merge-consecutive")
    body = _body(cleaned)
    assert body.output[2].name == "p_in" and [n.op_type for n in body.node] == ["MatMul", "Add", "Identity"]
    _same(model, cleaned, _feeds(4))
    out = graphopt.optimize(model, level=2)
    assert "MatMul" in [n.op_type for n in out.graph.node] and "MatMul" not in [n.op_type for n in _body(out).node]
    _same(model, out, _feeds(4))


def test_node_output_insertion_and_removal() -> None:
    g = Graph()
    a = Value("a", F, (2,))
    g.inputs.append(a)
    node = g.append(Node("Split", [a], num_outputs=2))
    first, second = node.outputs
    mid = node.insert_output(1)
    assert node.outputs == (first, mid, second) and (mid.index, second.index) == (1, 2) and mid.name
    neg = g.append(Node("Neg", [second]))
    node.remove_output(1)
    assert node.outputs == (first, second) and second.index == 1 and mid.producer is None
    with pytest.raises(IRError):
        node.remove_output(1)  # read by Neg
    node.insert_input(0, None)
    assert node.inputs == (None, a) and (node, 1) in a.uses and (node, 0) not in a.uses
    g.outputs.append(neg.output)
    g.check()


def test_can_take_output_only_positions_in_bodies() -> None:
    model = from_proto(_simple(3, None))
    body = next(model.graph.subgraphs())
    assert body.outputs_by_position and not model.graph.outputs_by_position
    s_in = body.inputs[2]
    assert body.can_take_output(s_in)  # a body input may be a body output
    assert not model.graph.can_take_output(model.graph.inputs[0])  # a main-graph output keeps its name
    assert not body.can_take_output(body.inputs[1]) or not body.is_output(body.inputs[1])
    assert to_proto(model)


def _corpus():
    spec = importlib.util.spec_from_file_location("wild_corpus_hoist", ROOT / "benchmarks" / "corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_slanet_en_keeps_its_outputs(tmp_path) -> None:
    corpus = _corpus()
    entry = next(e for e in corpus.select() if e["name"] == "slanet-en")
    path = corpus.model_path(entry)
    if not path.exists():
        pytest.skip(f"{path} not in the corpus cache")
    from graphopt.engine.passes_api import LEVELS
    from graphopt.tools.runtime import session

    without = [p for p in LEVELS[2] if p != "hoist-loop-invariants"]
    assert len(without) == len(LEVELS[2]) - 1
    out_path = tmp_path / "slanet-o2.onnx"
    graphopt.save(graphopt.optimize(str(path), level=2), str(out_path))
    optimized = onnx.load(out_path)
    plain = graphopt.optimize(onnx.load(path), passes=without)
    assert len(_body(optimized).node) < len(_body(plain).node)  # the encoder's projection left the loop
    feeds = corpus.feeds(entry, path=path)
    ref = session(str(path), threads=1).run(None, feeds)
    got = session(str(out_path), threads=1).run(None, feeds)
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
