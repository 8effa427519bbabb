"""int8 for onnxruntime: an image stem stays float (``choice.is_image_stem``), and a MaxPool after float data stays
float (``qdq_rules.float_pools_stay_float``: its QuantizeLinear per-axis, which onnxruntime's QDQPropagationTransformer
does not move up into a uint8 NCHW MaxPool), checked on onnxruntime's own optimized graph."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.quantize import choice, quantize_model
from graphopt.quantize.qdq_rules import float_pools_stay_float
from graphopt.tools import runtime

CONFIG = {"cache": False, "fallback": False, "measure_speed": False}


def _stem_net(seed: int = 0, opset: int = 13, nhwc: bool = False) -> onnx.ModelProto:
    """[Transpose from NHWC ->] Conv 3->8 -> PRelu -> MaxPool 2x2 -> Conv 8->16 -> Relu -> Conv 16->8: a face-detector
    stem (mtcnn)."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []

    def const(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    nodes = []
    x = "input"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [
        helper.make_node(
            "Conv", [x, const("w0", rng.standard_normal((8, 3, 3, 3)) * 0.5), const("b0", rng.normal(size=8))], ["c0"]
        ),
        helper.make_node("PRelu", ["c0", const("slope", rng.uniform(-0.5, 0.5, (8, 1, 1)))], ["p0"]),
        helper.make_node("MaxPool", ["p0"], ["m0"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node(
            "Conv",
            ["m0", const("w1", rng.standard_normal((16, 8, 3, 3)) * 0.3), const("b1", rng.normal(size=16))],
            ["c1"],
        ),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", const("w2", rng.standard_normal((8, 16, 1, 1)) * 0.3)], ["out"]),
    ]
    shape = [1, 30, 22, 3] if nhwc else [1, 3, 30, 22]
    graph = helper.make_graph(
        nodes,
        "stem",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, None, None])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _feeds(nhwc: bool = False, n: int = 3) -> list[dict]:
    rng = np.random.default_rng(7)
    shape = (1, 30, 22, 3) if nhwc else (1, 3, 30, 22)
    return [{"input": rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(n)]


def _optimized(model: onnx.ModelProto, tmp_path) -> list[onnx.NodeProto]:
    path = str(tmp_path / "optimized.onnx")
    runtime.session(model, optimized_path=path)
    return list(onnx.load(path).graph.node)


def _quantize(proto: onnx.ModelProto, feeds: list[dict], **config):
    model = from_proto(proto)
    report = quantize_model(model, feeds, "ort", {**CONFIG, **config, "upgrade_opset": False})
    return model.to_onnx(), report


def test_the_stem_stays_float_and_its_maxpool_runs_float_in_onnxruntime(tmp_path) -> None:
    for nhwc in (False, True):
        proto = _stem_net(nhwc=nhwc)
        q, report = _quantize(proto, _feeds(nhwc))
        modes = {c.name: (c.mode, c.reason) for c in report.choices}
        stem = next(n.name for n in q.graph.node if n.op_type == "Conv" and "w0" in n.input)
        assert modes[stem] == ("float", choice.STEM_REASON)
        assert sum(1 for m, _ in modes.values() if m == "static") == 2  # the two convolutions after it
        nodes = _optimized(q, tmp_path)
        producers = {o: n for n in nodes for o in n.output}
        (pool,) = [n for n in nodes if n.op_type in ("MaxPool", "NhwcMaxPool")]
        assert pool.op_type == "MaxPool"
        before = producers.get(pool.input[0])
        assert before is None or before.op_type not in ("QuantizeLinear", "DequantizeLinear"), before.op_type
        assert any(n.op_type == "QLinearConv" for n in nodes)  # the layers after the pool run on integers


def test_per_axis_quantize_after_the_pool_gives_the_same_integers() -> None:
    proto = _stem_net()
    q, report = _quantize(proto, _feeds())
    (pq,) = [n for n in q.graph.node if n.op_type == "QuantizeLinear" and any(a.name == "axis" for a in n.attribute)]
    inits = {i.name: i for i in q.graph.initializer}
    # the same model with that QuantizeLinear per tensor again (what onnxruntime would move up)
    per_tensor = onnx.ModelProto()
    per_tensor.CopyFrom(q)
    for n in per_tensor.graph.node:
        if n.name == pq.name:
            del n.attribute[:]
            for k, suffix in ((1, "_pt_scale"), (2, "_pt_zp")):
                a = numpy_helper.to_array(inits[n.input[k]])
                assert np.all(a == a.reshape(-1)[0])  # one value repeated
                per_tensor.graph.initializer.append(numpy_helper.from_array(a.reshape(-1)[0], n.input[k] + suffix))
                n.input[k] += suffix
    for f in _feeds():
        a = runtime.session(q, optimization="disabled").run(None, f)[0]
        b = runtime.session(per_tensor, optimization="disabled").run(None, f)[0]
        np.testing.assert_array_equal(a, b)
        ref = runtime.session(proto).run(None, f)[0]
        got = runtime.session(q).run(None, f)[0]  # onnxruntime's optimizations on: within the reported error
        assert np.abs(got - ref).max() <= 2 * report.error_max_abs + 1e-6


def test_left_alone_where_the_pool_reads_integers_or_the_opset_is_old() -> None:
    proto = _stem_net()
    # choice static: the stem is int8, the MaxPool sits between Q/DQ pairs: no per-axis QuantizeLinear
    q, _ = _quantize(proto, _feeds(), choice="static")
    assert not any(n.op_type == "QuantizeLinear" and any(a.name == "axis" for a in n.attribute) for n in q.graph.node)
    # below opset 13 there is no per-axis QuantizeLinear
    assert float_pools_stay_float(from_proto(_stem_net()).graph, 12) == 0


def _convs(pool: bool, pre: bool = False) -> list:
    """[Conv 3->3 1x1 ->] Conv 3->4 -> Relu [-> MaxPool] -> Conv 4->4: the Conv nodes, in order."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w3"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "w4"),
        numpy_helper.from_array(rng.standard_normal((3, 3, 1, 1)).astype(np.float32), "wpre"),
    ]
    nodes = [helper.make_node("Conv", ["input", "wpre"], ["x"])] if pre else []
    nodes += [helper.make_node("Conv", ["x" if pre else "input", "w3"], ["a"]), helper.make_node("Relu", ["a"], ["r"])]
    if pool:
        nodes.append(helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("Conv", ["p" if pool else "r", "w4"], ["out"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        inits,
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    return [n for n in model.graph if n.op_type == "Conv"]


def test_an_image_stem_reads_the_input_and_reaches_a_max_pool() -> None:
    stem, after = _convs(pool=True)
    assert choice.is_image_stem(stem)  # Conv -> Relu -> MaxPool, reading the graph input
    assert not choice.is_image_stem(after)  # 4 input channels, after the pool
    stem, _ = _convs(pool=False)
    assert not choice.is_image_stem(stem)  # no MaxPool after it: int8 (see choice.is_image_stem)
    first, pooled, _ = _convs(pool=True, pre=True)
    assert not choice.is_image_stem(pooled)  # 3 channels and pooled, but it reads another conv, not the input
    assert not choice.is_image_stem(first)  # reads the input, but a Conv reads it, not a MaxPool


def _hgnet_stem(seed: int = 0, variant: str = "", c: int = 16) -> onnx.ModelProto:
    """PP-HGNet's stem block (PaddleOCR v5/v6 detectors): Conv 3->c 3x3 stride 2 -> Relu -> {MaxPool 2x2 stride 1,
    Conv c->c/2 2x2 -> Relu -> Conv c/2->c 2x2 -> Relu} -> Concat -> Conv 2c->c 3x3 stride 2 -> Relu -> Conv c->16 1x1.
    ``variant``: ``no-pool`` (the pool branch a third Conv), ``read-elsewhere`` (a branch's Relu also a graph output),
    ``extra-input`` (the Concat also reads another Conv of the input), ``two-readers`` (a second Conv reads the
    Concat)."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []

    def const(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    def conv(name: str, x: str, cout: int, cin: int, k: int, out: str, **attrs: object) -> onnx.NodeProto:
        w = const(f"w_{name}", rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k))
        b = const(f"b_{name}", rng.normal(size=cout) * 0.1)
        return helper.make_node("Conv", [x, w, b], [out], name=name, **attrs)

    same2 = {"kernel_shape": [2, 2], "pads": [0, 0, 1, 1]}
    pool = (
        conv("pool", "r0", c, c, 2, "p0", **same2)
        if variant == "no-pool"
        else helper.make_node("MaxPool", ["r0"], ["p0"], name="pool", **same2)
    )
    inputs = ["p0", "r2", "s0"] if variant == "extra-input" else ["p0", "r2"]
    cin = c * len(inputs)
    nodes = [
        conv("stem", "input", c, 3, 3, "c0", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
        pool,
        conv("branch_a", "r0", c // 2, c, 2, "c1", **same2),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        conv("branch_b", "r1", c, c // 2, 2, "c2", **same2),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Concat", inputs, ["cat"], name="concat", axis=1),
        conv("close", "cat", c, cin, 3, "c3", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"], name="relu3"),
        conv("after", "r3", 16, c, 1, "out"),
    ]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16, None, None])]
    if variant == "read-elsewhere":
        outputs.append(helper.make_tensor_value_info("r1", TensorProto.FLOAT, [1, c // 2, None, None]))
    if variant == "extra-input":
        nodes.insert(0, conv("side_in", "input", c, 3, 3, "s0", strides=[2, 2], pads=[1, 1, 1, 1]))
    if variant == "two-readers":
        nodes.append(conv("other", "cat", 4, cin, 1, "side"))
        outputs.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 4, None, None]))
    graph = helper.make_graph(
        nodes, "hgstem", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 24])], outputs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def _hgnet_feeds(n: int = 3) -> list[dict]:
    rng = np.random.default_rng(3)
    return [{"input": rng.uniform(-1, 1, (1, 3, 32, 24)).astype(np.float32)} for _ in range(n)]


def test_a_stem_block_is_the_stem_its_branches_their_concat_and_the_conv_reading_it() -> None:
    g = from_proto(_hgnet_stem()).graph
    by = {n.name: n for n in g}
    assert [n.name for n in choice.stem_block(by["stem"])] == ["stem", "branch_a", "branch_b", "concat", "close"]
    assert not choice.is_image_stem(by["stem"])  # its output has two readers: not the pooled-stem rule's
    for name in ("branch_a", "close", "after"):
        assert choice.stem_block(by[name]) == []  # not reading the graph input / 8 channels
    for variant in ("no-pool", "read-elsewhere", "extra-input", "two-readers"):
        stem = next(n for n in from_proto(_hgnet_stem(variant=variant)).graph if n.name == "stem")
        assert choice.stem_block(stem) == [], variant
    # a 24-channel stem (48-channel Concat) is off onnxruntime's NCHWc block: int8 is faster there
    stem = next(n for n in from_proto(_hgnet_stem(c=24)).graph if n.name == "stem")
    assert choice.stem_block(stem) == []


def test_a_stem_block_stays_float_and_runs_in_float_layout_in_onnxruntime(tmp_path) -> None:
    proto = _hgnet_stem()
    feeds = _hgnet_feeds()
    q, report = _quantize(proto, feeds)
    modes = {c.name: (c.mode, c.reason) for c in report.choices}
    for name in ("stem", "branch_a", "branch_b", "concat", "close"):
        assert modes[name] == ("float", choice.STEM_BLOCK_REASON), name
    assert modes["after"][0] == "static"
    nodes = _optimized(q, tmp_path)
    producers = {o: n for n in nodes for o in n.output}
    ops = [n.op_type for n in nodes]
    # one QuantizeLinear, after the closing Conv; the Concat and MaxPool float (no QLinearConcat, no NHWC pool)
    assert ops.count("QuantizeLinear") == 1 and "QLinearConcat" not in ops and "MaxPool" in ops, ops
    assert ops.count("QLinearConv") == 1  # "after" alone runs on integers
    (first_q,) = [n for n in nodes if n.op_type == "QuantizeLinear"]
    before = producers[first_q.input[0]]
    while before.op_type in ("ReorderOutput", "Relu"):  # onnxruntime's NCHWc reorder back to NCHW
        before = producers[before.input[0]]
    assert before.op_type == "Conv" and before.domain in ("", "com.microsoft.nchwc"), before
    for f in feeds:  # within the reported error of the float model
        ref = runtime.session(proto).run(None, f)[0]
        got = runtime.session(q).run(None, f)[0]
        assert np.abs(got - ref).max() <= 2 * report.error_max_abs + 1e-6


def test_a_stem_block_allows_at_most_three_activation_ops_after_the_stem() -> None:
    """As the docstring (and the pooled stem's rule) says: the stem's output passes through at most three activation
    or affine ops before the branches; a fourth is no stem block (it was taken, the chain's end unchecked)."""
    for ops, expected in ((1, True), (3, True), (4, False)):
        proto = _hgnet_stem()
        nodes = list(proto.graph.node)
        i = next(k for k, n in enumerate(nodes) if n.name == "relu0")
        chain, prev = [], "c0"
        for j in range(ops):
            out = "r0" if j == ops - 1 else f"act{j}"
            chain.append(helper.make_node("Relu", [prev], [out], name=f"act{j}"))
            prev = out
        nodes[i : i + 1] = chain
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
        stem = next(n for n in from_proto(proto).graph if n.name == "stem")
        assert bool(choice.stem_block(stem)) == expected, ops
