"""The user's int8 exclusions (``--exclude``, ``--exclude-op``, ``--exclude-regex``) keep a node float everywhere:
no layout rule of target ort rewrites it or quantizes around it on its own (``analysis.Plan.may_quantize``), and
onnxruntime does not fuse it with its quantized neighbours (``qdq_rules.excluded_stay_float``). Checked on what
onnxruntime runs (its optimized graph, ``tests.conftest.ran_nodes``): the excluded node is there under its own name,
as its float op reading float data, while without the exclusion the same model runs it on integers. Also: a
HardSigmoid/HardSwish whose output is a graph output stays the float op and the output stays float; nothing changes
when nothing is excluded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.quantize import quantize_model
from graphopt.quantize.analysis import Selection, plan
from graphopt.tools import runtime
from tests.conftest import matmul_mlp, ran_nodes

F = TensorProto.FLOAT
C = 8
INTEGER_PREFIXES = ("QLinear", "Nhwc", "QGemm", "ConvInteger", "MatMulInteger")


def _conv(rng, name: str, x: str, y: str, cin: int = C, cout: int = C):
    w = numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), f"{name}_w")
    return helper.make_node("Conv", [x, w.name], [y], name=name, pads=[1] * 4), w


def _middle(kind: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes between ``a`` (and ``a2``), two quantized Conv outputs, and ``b``, which a quantized Conv reads."""
    node = helper.make_node
    hs = {"alpha": 1.0 / 6.0, "beta": 0.5}
    if kind == "hardsigmoid-gate":  # a squeeze-excitation-like gate a2 * HardSigmoid(a)
        return [node("HardSigmoid", ["a"], ["h"], name="X", **hs), node("Mul", ["a2", "h"], ["b"], name="gate")], []
    if kind == "hardswish":
        return [node("HardSwish", ["a"], ["b"], name="X")], []
    if kind == "hard-swish-mul":  # x * HardSigmoid(x), the Mul excluded
        return [node("HardSigmoid", ["a"], ["h"], name="hs", **hs), node("Mul", ["a", "h"], ["b"], name="X")], []
    if kind == "hard-swish-hardsigmoid":  # x * HardSigmoid(x), the HardSigmoid excluded
        return [node("HardSigmoid", ["a"], ["h"], name="X", **hs), node("Mul", ["a", "h"], ["b"], name="m")], []
    if kind == "silu-sigmoid":  # x * Sigmoid(x), the Sigmoid excluded: its reader stays float too
        return [node("Sigmoid", ["a"], ["h"], name="X"), node("Mul", ["a", "h"], ["b"], name="m")], []
    if kind == "silu-mul":
        return [node("Sigmoid", ["a"], ["h"], name="s"), node("Mul", ["a", "h"], ["b"], name="X")], []
    if kind in ("LeakyRelu", "Sigmoid", "Softmax"):
        attrs = {"alpha": 0.1} if kind == "LeakyRelu" else {"axis": 1} if kind == "Softmax" else {}
        return [node(kind, ["a"], ["b"], name="X", **attrs)], []
    if kind == "MaxPool":
        return [node("MaxPool", ["a"], ["b"], name="X", kernel_shape=[3, 3], pads=[1] * 4)], []
    if kind == "Resize":  # a nearest x2 upsample (the Tile rule's case), pooled back to the Conv's size
        scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
        return [
            node("Resize", ["a", "", "scales"], ["r"], name="X", mode="nearest"),
            node("MaxPool", ["r"], ["b"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        ], [scales]
    if kind in ("Add", "Mul"):
        return [node(kind, ["a", "a2"], ["b"], name="X")], []
    if kind == "Concat":
        w = numpy_helper.from_array(np.full((C, 2 * C, 1, 1), 0.1, np.float32), "cat_w")
        return [
            node("Concat", ["a", "a2"], ["cat"], name="X", axis=1),
            node("Conv", ["cat", "cat_w"], ["b"], name="cc"),
        ], [w]
    if kind == "residual-gate-add":  # x + x * HardSigmoid(mean(x)): the residual-gate rule's Add excluded
        return [
            node("GlobalAveragePool", ["a"], ["p"], name="gap"),
            node("HardSigmoid", ["p"], ["g"], name="hsg", alpha=0.2, beta=0.5),
            node("Mul", ["a", "g"], ["m"], name="gm"),
            node("Add", ["a", "m"], ["b"], name="X"),
        ], []
    raise KeyError(kind)


def _model(kind: str, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    c0, w0 = _conv(rng, "conv0", "input", "a", 3)
    c0b, w0b = _conv(rng, "conv0b", "input", "a2", 3)
    middle, inits = _middle(kind)
    c1, w1 = _conv(rng, "conv1", "b", "out")
    nodes = [c0, c0b, *middle, c1]
    if not any("a2" in n.input for n in middle):
        nodes.remove(c0b)
    graph = helper.make_graph(
        nodes,
        kind,
        [helper.make_tensor_value_info("input", F, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("out", F, [1, C, 16, 16])],
        [w0, w0b, w1, *inits] if c0b in nodes else [w0, w1, *inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _feeds(seed: int = 1, n: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


CONFIG = {"cache": False, "choice": "static", "measure_speed": False, "fallback": False}


def _quantize(proto: onnx.ModelProto, **exclusions) -> onnx.ModelProto:
    model = from_proto(proto)
    quantize_model(model, _feeds(), "ort", {**CONFIG, **exclusions})
    return model.to_onnx()


def _integer(op: str) -> bool:
    return op.startswith(INTEGER_PREFIXES)


def _ran(model: onnx.ModelProto, path) -> onnx.GraphProto:
    ran_nodes(model, path)
    return onnx.load(str(path)).graph


def _reads_integers(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    """Whether onnxruntime's node reads integers: its data input comes from a QuantizeLinear or an integer op."""
    makers = {o: n for n in graph.node for o in n.output}
    maker = makers.get(node.input[0]) if node.input else None
    return maker is not None and (maker.op_type == "QuantizeLinear" or _integer(maker.op_type))


def _float_under(graph: onnx.GraphProto, name: str, op: str) -> bool:
    """Whether onnxruntime runs ``name`` as the float ``op`` and nothing named after it on integers."""
    named = [n for n in graph.node if n.name == name or n.name.startswith(f"{name}_")]
    if any(_integer(n.op_type) for n in named):
        return False
    mine = [n for n in named if n.name == name and n.op_type == op]
    return len(mine) == 1 and not _reads_integers(graph, mine[0])


def _error(proto: onnx.ModelProto, quantized: onnx.ModelProto) -> float:
    ref = np.concatenate([runtime.session(proto).run(None, f)[0].ravel() for f in _feeds(9)])
    got = np.concatenate([runtime.session(quantized).run(None, f)[0].ravel() for f in _feeds(9)])
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


# (kind, the op the excluded node X is, other nodes that stay float with it)
CASES = [
    ("hardsigmoid-gate", "HardSigmoid", []),
    ("hardswish", "HardSwish", []),
    ("hard-swish-mul", "Mul", [("hs", "HardSigmoid")]),
    ("hard-swish-hardsigmoid", "HardSigmoid", [("m", "Mul")]),
    ("silu-sigmoid", "Sigmoid", [("m", "Mul")]),
    ("silu-mul", "Mul", []),
    ("LeakyRelu", "LeakyRelu", []),
    ("Sigmoid", "Sigmoid", []),
    ("Softmax", "Softmax", []),
    ("MaxPool", "MaxPool", []),
    ("Resize", "Resize", []),
    ("Add", "Add", []),
    ("Mul", "Mul", []),
    ("Concat", "Concat", []),
    ("residual-gate-add", "Add", []),
]


@pytest.mark.parametrize(("kind", "op", "with_it"), CASES, ids=[c[0] for c in CASES])
def test_an_excluded_node_runs_float(tmp_path, kind, op, with_it) -> None:
    """Without the exclusion onnxruntime runs X on integers (a QLinear op, a uint8 MaxPool, graphopt's integer
    hard-sigmoid, the Tile upsample, ...); with ``exclude=["X"]`` it runs X as its float op on float data (and the
    nodes that make one activation with it: a SiLU's Mul when its Sigmoid is excluded), and the output stays close
    to fp32."""
    proto = _model(kind)
    plain = _quantize(proto)
    ran = _ran(plain, tmp_path / "plain.onnx")
    assert not _float_under(ran, "X", op), [(n.op_type, n.name) for n in ran.node]  # the case is not vacuous
    assert not any(n.op_type == "Max" for n in plain.graph.node)  # nothing excluded: no float copies

    excluded = _quantize(proto, exclude=["X"])
    ran = _ran(excluded, tmp_path / "excluded.onnx")
    ops = [(n.op_type, n.name) for n in ran.node]
    if op == "HardSwish":  # onnxruntime runs a float HardSwish as HardSigmoid and Mul of its own (no names)
        assert not any(n.name.startswith("X") and _integer(n.op_type) for n in ran.node), ops
        assert [o for o, _ in ops if o in ("HardSigmoid", "Mul")] == ["HardSigmoid", "Mul"], ops
    else:
        assert _float_under(ran, "X", op), ops
    for name, other in with_it:
        assert _float_under(ran, name, other), ops
    assert sum(_integer(o) for o, _ in ops) >= 2, ops  # the Convs around X stay integer
    assert _error(proto, excluded) < 0.06


@pytest.mark.parametrize(
    "flag", [["--exclude", "X"], ["--exclude-regex", "^X$"], ["--exclude-op", "LeakyRelu"]], ids=lambda f: f[0]
)
def test_cli_exclusions_run_float(tmp_path, capsys, flag) -> None:
    """The CLI's three flags, on a LeakyRelu (fused into QLinearLeakyRelu without them): it runs float."""
    from graphopt.cli import main

    src = tmp_path / "m.onnx"
    proto = _model("LeakyRelu")
    onnx.save(proto, src)
    out = tmp_path / "q.onnx"
    args = ["optimize", str(src), "--quantize", "int8", "--calib-random", "4", "--calib-cache", "off", "-o", str(out)]
    assert main([*args, "--json", *flag]) in (0, None)
    report = json.loads(capsys.readouterr().out)
    assert report["quantization"] is not None
    written = onnx.load(out)
    ran = _ran(written, tmp_path / "ran.onnx")
    assert _float_under(ran, "X", "LeakyRelu"), [(n.op_type, n.name) for n in ran.node]
    assert _error(proto, written) < 0.1


def test_readers_of_an_excluded_sigmoid_are_not_planned() -> None:
    """A SiLU's Mul whose Sigmoid the user excluded is neither a gate nor a layer of the plan (as a layer it would
    quantize the Sigmoid's output); the excluded nodes are the plan's, and only those ``may_quantize`` refuses."""
    model = from_proto(_model("silu-sigmoid"))
    infer_shapes(model)
    free = plan(model.graph, "ort", Selection())
    assert "m" in {n.name for n in free.gates} and not free.excluded
    p = plan(model.graph, "ort", Selection(exclude_names=frozenset({"X"})))
    assert "m" not in {n.name for n in p.nodes} | {n.name for n in p.gates}
    assert [n.name for n in p.excluded] == ["X"]
    assert [n.name for n in model.graph if not p.may_quantize(n)] == ["X"]
    kept = plan(model.graph, "ort", Selection(kept=frozenset({"X"})))  # the quantizer's own float layers
    assert not kept.excluded and all(kept.may_quantize(n) for n in model.graph)


def _output_model(op: str, reader: bool) -> onnx.ModelProto:
    """input -> Conv -> op -> y (a graph output), and with ``reader`` a Conv reading y too."""
    rng = np.random.default_rng(4)
    c0, w0 = _conv(rng, "conv0", "input", "a", 3)
    attrs = {"alpha": 1.0 / 6.0, "beta": 0.5} if op == "HardSigmoid" else {}
    nodes, inits = [c0, helper.make_node(op, ["a"], ["y"], name="act", **attrs)], [w0]
    outs = [helper.make_tensor_value_info("y", F, [1, C, 16, 16])]
    if reader:
        c1, w1 = _conv(rng, "conv1", "y", "out")
        nodes.append(c1)
        inits.append(w1)
        outs.append(helper.make_tensor_value_info("out", F, [1, C, 16, 16]))
    graph = helper.make_graph(nodes, "out", [helper.make_tensor_value_info("input", F, [1, 3, 16, 16])], outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["HardSigmoid", "HardSwish"])
@pytest.mark.parametrize("reader", [False, True], ids=["alone", "read-by-conv"])
def test_a_hard_sigmoid_graph_output_stays_the_float_op(tmp_path, op, reader) -> None:
    """A HardSigmoid/HardSwish whose output is a graph output is not rewritten into graphopt's integer form (its
    output would be the 1/255 grid of the QLinearAdd's DequantizeLinear): the float op runs, and the output stays a
    float tensor close to fp32."""
    proto = _output_model(op, reader)
    q = _quantize(proto)
    assert [o.type.tensor_type.elem_type for o in q.graph.output] == [F] * len(q.graph.output)
    assert any(n.op_type == op and n.name == "act" for n in q.graph.node)
    assert not any(n.name.startswith("act_") for n in q.graph.node)  # no act_Add / act_Mul / act_Quantize
    ran = _ran(q, tmp_path / "ran.onnx")
    assert not any(_integer(n.op_type) and n.name.startswith("act") for n in ran.node)
    for f in _feeds(5, 2):
        ref = runtime.session(proto).run(None, f)
        got = runtime.session(q).run(None, f)
        assert got[0].dtype == np.float32
        assert np.linalg.norm(got[0] - ref[0]) / np.linalg.norm(ref[0]) < 0.05


UNARY = {
    "LeakyRelu": {"alpha": 0.1},
    "Sigmoid": {},
    "HardSigmoid": {"alpha": 0.2, "beta": 0.5},
    "Softmax": {"axis": 1},
    "MaxPool": {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
    "Relu": {},
}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(sorted(UNARY)), min_size=2, max_size=4),
    st.data(),
)
def test_random_chains_keep_the_excluded_nodes_float(tmp_path_factory, ops, data) -> None:
    """Conv -> a chain of activations and pools (each also a Conv's input where ``conv_after`` says) -> Conv, a random
    subset of the chain excluded by name: each excluded node runs as its float op on float data under onnxruntime,
    and the output stays close to fp32."""
    rng = np.random.default_rng(len(ops))
    c0, w0 = _conv(rng, "conv0", "input", "v0", 3)
    nodes, inits = [c0], [w0]
    for i, op in enumerate(ops):
        nodes.append(helper.make_node(op, [f"v{i}"], [f"u{i}"], name=f"n{i}", **UNARY[op]))
        if data.draw(st.booleans(), label=f"conv_after_{i}"):
            c, w = _conv(rng, f"conv{i + 1}", f"u{i}", f"v{i + 1}")
            nodes.append(c)
            inits.append(w)
        else:
            nodes.append(helper.make_node("Identity", [f"u{i}"], [f"v{i + 1}"], name=f"id{i}"))
    last, wl = _conv(rng, "last", f"v{len(ops)}", "out")
    graph = helper.make_graph(
        [*nodes, last],
        "chain",
        [helper.make_tensor_value_info("input", F, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("out", F, [1, C, 16, 16])],
        [*inits, wl],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    chosen = data.draw(st.sets(st.integers(0, len(ops) - 1), min_size=1), label="excluded")
    names = [f"n{i}" for i in sorted(chosen)]
    q = _quantize(proto, exclude=names)
    ran = _ran(q, tmp_path_factory.mktemp("ran") / "ran.onnx")
    for i in sorted(chosen):
        assert _float_under(ran, f"n{i}", ops[i]), (ops, names, [(n.op_type, n.name) for n in ran.node])
    assert _error(proto, q) < 0.1


# --------------------------------------------------------------------------------------------------------------------
# an exclusion that selects nothing is an error (analysis.check_exclusions), never a quiet int8 layer
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exclusions", "needles"),
    [
        ({"exclude": ["x"]}, ["--exclude 'x' matches no node (nearest: 'X'"]),
        ({"exclude": ["X", "conv9"]}, ["--exclude 'conv9' matches no node (nearest: 'conv1', 'conv0'"]),
        ({"exclude_regex": ["^Y$"]}, ["--exclude-regex '^Y$' matches no node name"]),
        ({"exclude_ops": ["LeakyRelux"]}, ["--exclude-op 'LeakyRelux' is no op type (nearest: 'LeakyRelu')"]),
    ],
    ids=["name", "one-of-two", "regex", "op"],
)
def test_an_exclusion_that_selects_nothing_is_an_error(exclusions, needles) -> None:
    from graphopt.errors import GraphoptError

    with pytest.raises(GraphoptError) as e:
        _quantize(_model("LeakyRelu"), **exclusions)
    assert all(n in str(e.value) for n in needles), str(e.value)
    assert "'X' matches" not in str(e.value) and "\n" not in str(e.value)


def test_a_valid_op_type_the_model_lacks_is_no_error() -> None:
    """One command line over many models: ``exclude_ops=["Softmax"]`` on a model without one quantizes it (the CLI
    warns); only an op type no schema has is a typo."""
    q = _quantize(_model("LeakyRelu"), exclude_ops=["Softmax"])
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)


@pytest.mark.parametrize("mode", ["int8", "int8-dynamic", "int4"])
def test_the_api_refuses_an_exclusion_that_names_no_node(mode) -> None:
    """``graphopt.optimize`` with each quantization mode: a GraphoptError naming the unknown name, the model left as
    it was (a Model passed in is restored)."""
    import graphopt
    from graphopt.errors import GraphoptError

    rng = np.random.default_rng(0)
    proto = matmul_mlp(("fc", "relu", "fc2"), 32)
    feeds = [{"x": rng.standard_normal((4, 32)).astype(np.float32)}]
    options = {"exclude": ["fc1"]} if mode == "int4" else {"exclude": ["fc1"], "cache": False}
    with pytest.raises(GraphoptError, match=r"--exclude 'fc1' matches no node \(nearest: 'fc', 'fc2'\)"):
        graphopt.optimize(proto, quantize=mode, calibration=feeds, quantize_options=options)
    kept = graphopt.optimize(proto, quantize=mode, calibration=feeds, quantize_options={**options, "exclude": ["fc"]})
    fc = next(n for n in kept.graph.node if n.name == "fc")
    assert fc.op_type == "MatMul" and fc.input[1] == "w"  # excluded: float, its float weight
    assert any(n.name.startswith("fc2") and n.op_type != "MatMul" or n.op_type == "DequantizeLinear"
               for n in kept.graph.node)  # fmt: skip
    # the other layer was quantized


def test_a_misspelt_exclusion_stops_before_pruning_runs() -> None:
    """With pruning and int8 in one request, the exclusion is checked right after the passes: no prune stage runs
    (nor its calibration read) before the error."""
    from contextlib import contextmanager

    from graphopt.api import OptimizeRequest, RunHooks, run_request
    from graphopt.errors import GraphoptError

    stages: list[str] = []

    @contextmanager
    def stage(name):
        stages.append(name)
        yield

    rng = np.random.default_rng(0)
    model = from_proto(_model("hardswish"))
    feeds = [{"input": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}]
    request = OptimizeRequest(
        level=2, quantize="int8", calibration=feeds, quantize_options={"exclude": ["no_such_conv"], "cache": False},
        prune_channels=0.3,
    )  # fmt: skip
    with pytest.raises(GraphoptError, match="--exclude 'no_such_conv' matches no node"):
        run_request(model, request, RunHooks(stage=stage))
    assert stages == ["passes"], stages


def _loop_model() -> onnx.ModelProto:
    """x -> Conv -> a Loop (two steps) whose body runs a Conv ``inner`` on the carried value."""
    rng = np.random.default_rng(3)
    c0, w0 = _conv(rng, "conv0", "input", "a", 3)
    inner, wi = _conv(rng, "inner", "h_in", "h_conv")
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="cond"),
            inner,
            helper.make_node("Relu", ["h_conv"], ["h_out"], name="inner_relu"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", F, [1, C, 16, 16]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", F, [1, C, 16, 16]),
        ],
    )
    trip = numpy_helper.from_array(np.array(2, np.int64), "trip")
    graph = helper.make_graph(
        [c0, helper.make_node("Loop", ["trip", "", "a"], ["out"], body=body, name="loop")],
        "loop",
        [helper.make_tensor_value_info("input", F, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("out", F, [1, C, 16, 16])],
        [w0, wi, trip],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _body(model: onnx.ModelProto) -> onnx.GraphProto:
    return next(a.g for n in model.graph.node if n.op_type == "Loop" for a in n.attribute if a.name == "body")


def test_a_node_inside_a_loop_body_can_be_excluded() -> None:
    """Body nodes are quantized like the main graph's, so their names are names to exclude (not unknown ones); a
    misspelt one is an error with the body's names as the nearest."""
    from graphopt.errors import GraphoptError

    proto = _loop_model()
    plain = _body(_quantize(proto))
    assert any(n.op_type == "DequantizeLinear" for n in plain.node)  # without the exclusion the body's Conv is int8
    body = _body(_quantize(proto, exclude=["inner"]))
    made = {o: n for n in body.node for o in n.output}
    conv = next(n for n in body.node if n.name == "inner")
    assert conv.op_type == "Conv"
    assert not any(made[i].op_type == "DequantizeLinear" for i in conv.input if i in made)  # float weight, float data
    with pytest.raises(GraphoptError, match=r"--exclude 'iner' matches no node \(nearest: 'inner'"):
        _quantize(proto, exclude=["iner"])


def test_the_cli_refuses_an_unknown_exclusion(tmp_path, capsys) -> None:
    """One line naming the model file and each unknown name with its nearest valid names, exit 2, nothing written;
    a name the -O2 passes folded away (a BatchNormalization into its Conv) is told apart from a typo."""
    from graphopt.cli import main

    src = tmp_path / "m.onnx"
    onnx.save(_model("LeakyRelu"), src)
    out = tmp_path / "q.onnx"
    args = ["optimize", str(src), "--quantize", "int8", "--calib-random", "1", "--calib-cache", "off", "-o", str(out)]
    assert main([*args, "--exclude", "X", "--exclude", "conv_1", "--exclude-regex", "^Y"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"graphopt: error: {src}: --exclude 'conv_1' matches no node (nearest: 'conv1'")
    assert "--exclude-regex '^Y' matches no node name" in lines[0] and "--exclude 'X'" not in lines[0]
    assert not out.exists()

    cnn = Path(__file__).resolve().parents[1] / "fixtures" / "cnn.onnx"
    args[1] = str(cnn)
    assert main([*args, "--exclude", "stem/BatchNormalization"]) == 2
    line = capsys.readouterr().err.strip()
    assert "--exclude 'stem/BatchNormalization' names a node the optimization passes removed" in line, line
    assert not out.exists()
    assert main([*args, "-O0", "--exclude", "stem/BatchNormalization", "-q"]) == 0  # -O0 keeps it: excluded
    assert out.exists()
