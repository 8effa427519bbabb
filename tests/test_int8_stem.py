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
