"""The int8 speed rule for convolutions (choice.speed_choices, CONV_SPEED) and the float-layer guard against
onnxruntime's WeightBiasQuantization (qdq_rules.keep_float_layers), on small graphs under real onnxruntime. No timing:
the decision is tested given the table; the rewrite by equivalence."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.quantize import choice
from graphopt.quantize.qdq_rules import keep_float_layers

RNG = np.random.default_rng(0)


def _dw_chain(
    h: int, w: int, c: int = 16, k: int = 5, reader: str = "Conv", strides: tuple[int, int] = (1, 1)
) -> onnx.ModelProto:
    """1x1 conv -> depthwise kxk conv (``strides``) -> reader (a 1x1 Conv, or a hard swish) on a 1 x c x h x w
    input."""
    inits = [
        numpy_helper.from_array(RNG.standard_normal((c, c, 1, 1)).astype(np.float32), "w0"),
        numpy_helper.from_array(RNG.standard_normal((c, 1, k, k)).astype(np.float32), "w1"),
        numpy_helper.from_array(RNG.standard_normal((c, c, 1, 1)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"], name="pw0"),
        helper.make_node(
            "Conv", ["a", "w1"], ["b"], name="dw", group=c, kernel_shape=[k, k], pads=[k // 2] * 4, strides=strides
        ),
        helper.make_node("Relu", ["b"], ["br"], name="relu"),
    ]
    if reader == "Conv":
        nodes.append(helper.make_node("Conv", ["br", "w2"], ["y"], name="pw1"))
    else:
        nodes += [
            helper.make_node("HardSigmoid", ["br"], ["s"], name="hsig", alpha=1 / 6, beta=0.5),
            helper.make_node("Mul", ["br", "s"], ["y"], name="hmul"),
        ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _static(model) -> dict[str, choice.Choice]:
    return {n.name: choice.Choice(n.name, n.op_type, "static", "t") for n in model.graph if n.op_type == "Conv"}


def _model(proto):
    m = from_proto(proto)
    infer_shapes(m)
    return m


def test_conv_kind_by_shape():
    kinds = {n.name: choice.conv_kind(n) for n in _model(_dw_chain(3, 96)).graph}
    assert kinds == {"pw0": None, "dw": "depthwise-flat", "relu": None, "pw1": None}
    big = _model(_dw_chain(6, 160, c=256))
    assert choice.conv_kind(next(n for n in big.graph if n.name == "dw")) == "depthwise-flat-large"
    square = _model(_dw_chain(24, 24))
    assert choice.conv_kind(next(n for n in square.graph if n.name == "dw")) == "depthwise"


def _dw_kind(h: int, w: int, c: int, k: int, strides: tuple[int, int]) -> str | None:
    m = _model(_dw_chain(h, w, c=c, k=k, strides=strides))
    return choice.conv_kind(next(n for n in m.graph if n.name == "dw"))


def test_conv_kind_strided_shapes():
    """The strided kinds of benchmarks/int8_kernels.py's cases (ppocrv4-cls's and ppocrv5-cls's layers)."""
    assert _dw_kind(24, 96, 8, 3, (2, 1)) == "depthwise-uneven-strided"  # 8 x 12 x 96 out
    assert _dw_kind(40, 80, 32, 3, (2, 1)) == "depthwise-uneven-strided-large"  # 32 x 20 x 80 = 51200 out
    assert _dw_kind(3, 96, 104, 5, (2, 1)) == "depthwise-flat-strided"  # 104 x 2 x 96: ppocrv4-cls's Conv.38
    assert _dw_kind(5, 80, 256, 5, (2, 1)) == "depthwise-flat-strided-large"  # 256 x 3 x 80 = 61440 out
    assert _dw_kind(3, 96, 104, 5, (2, 2)) == "depthwise-flat-strided"  # 104 x 2 x 48
    assert _dw_kind(48, 48, 16, 3, (2, 2)) == "depthwise-strided"  # equal strides, not flat
    assert _dw_kind(3, 96, 104, 5, (1, 1)) == "depthwise-flat"


def test_speed_rule_floats_small_strided_depthwise_by_context():
    for h, w, c, k in ((3, 96, 104, 5), (24, 96, 8, 3)):  # flat-strided, uneven-strided
        m = _model(_dw_chain(h, w, c=c, k=k, reader="HardSwish", strides=(2, 1)))
        out = choice.speed_choices(m.graph, _static(m))
        assert set(out) == {"dw"} and "strided" in out["dw"].reason, (h, w, c, k)
    # uneven-strided read by an int8 convolution: 0.98 in the table, kept int8
    m = _model(_dw_chain(24, 96, 8, 3, reader="Conv", strides=(2, 1)))
    assert choice.speed_choices(m.graph, _static(m)) == {}
    # ppocrv5-cls-op14's sizes: the -large kinds stay int8 in either context
    for h, w, c, k in ((40, 80, 32, 3), (5, 80, 256, 5)):
        m = _model(_dw_chain(h, w, c=c, k=k, reader="HardSwish", strides=(2, 1)))
        assert choice.speed_choices(m.graph, _static(m)) == {}, (h, w, c, k)


def test_strided_depthwise_kept_float_end_to_end():
    """quantize_model on a 5x5 (2, 1) depthwise over a flat map before a hard swish: the layer is written float (a
    Conv with a float weight in the quantized model) and the model's outputs stay close to fp32 under onnxruntime."""
    from graphopt.quantize import output_error, quantize_model
    from graphopt.tools import runtime

    proto = _dw_chain(3, 96, c=104, k=5, reader="HardSwish", strides=(2, 1))
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.uniform(0, 1, (1, 104, 3, 96)).astype(np.float32)} for _ in range(3)]
    m = from_proto(proto)
    report = quantize_model(m, feeds[:2], "ort", {"cache": False})
    q = m.to_onnx()
    assert any("depthwise-flat-strided" in c.reason for c in report.choices if c.name == "dw"), report.choices
    inits = {t.name for t in q.graph.initializer}
    dw = [n for n in q.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i == 104 for a in n.attribute)]
    assert len(dw) == 1 and dw[0].input[1] in inits  # a float weight, read directly: the conv is float
    pw = [n for n in q.graph.node if n.op_type == "Conv" and n is not dw[0]]
    assert pw and all(n.input[1] not in inits for n in pw)  # the 1x1 conv stays int8 (its weight dequantized)
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(q).run(None, f) for f in feeds]
    assert output_error(ref, got)[0] < 0.05


def test_speed_rule_floats_flat_depthwise_before_float_reader():
    m = _model(_dw_chain(3, 96, reader="HardSwish"))
    out = choice.speed_choices(m.graph, _static(m))
    assert set(out) == {"dw"} and out["dw"].mode == "float"
    assert "depthwise-flat" in out["dw"].reason and "float-reader" in out["dw"].reason


def test_speed_rule_keeps_int8_chain_and_follows_the_table():
    m = _model(_dw_chain(3, 96, reader="Conv"))
    assert choice.speed_choices(m.graph, _static(m)) == {}  # int8-chain: 0.98, not below the threshold
    forced = {("depthwise-flat", "int8-chain"): 0.5}
    assert set(choice.speed_choices(m.graph, _static(m), table=forced)) == {"dw"}
    # a reader kept float makes the context float-reader
    chosen = _static(m)
    chosen["pw1"] = choice.Choice("pw1", "Conv", "float", "t")
    assert set(choice.speed_choices(m.graph, chosen)) == {"dw"}


def test_speed_rule_uses_feed_shapes_for_symbolic_dims():
    proto = _dw_chain(3, 96, reader="HardSwish")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    m = _model(proto)
    assert choice.speed_choices(m.graph, _static(m)) == {}  # spatial dims unknown: not flat
    shapes = choice.feed_shapes(m, {"x": np.zeros((1, 16, 3, 96), np.float32)})
    assert shapes == {"b": (1, 16, 3, 96)}
    assert set(choice.speed_choices(m.graph, _static(m), shapes=shapes)) == {"dw"}


def _float_conv_between_qdq() -> onnx.ModelProto:
    """Q -> DQ -> float depthwise Conv -> Relu -> Q -> DQ, channels with weights 1e-3..1 apart."""
    w = (RNG.standard_normal((8, 1, 3, 3)) * np.logspace(-3, 0, 8)[:, None, None, None]).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
        numpy_helper.from_array(np.array(0.002, np.float32), "s2"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.zeros(8, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="dq"),
        helper.make_node("Conv", ["d", "w", "b"], ["c"], name="conv", group=8, kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s2", "z"], ["q2"]),
        helper.make_node("DequantizeLinear", ["q2", "s2", "z"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _run(proto: onnx.ModelProto, x: np.ndarray, level) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_keep_float_layers_stops_onnxruntime_quantizing_a_float_conv():
    x = RNG.standard_normal((1, 8, 16, 16)).astype(np.float32)
    proto = _float_conv_between_qdq()
    plain = _run(proto, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    # the trap: onnxruntime quantizes the float weight per tensor by itself (its small channels round to zero)
    assert not np.array_equal(_run(proto, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL), plain)
    m = from_proto(proto)
    assert keep_float_layers(m.graph, 13) == 1
    conv = next(n for n in m.graph if n.name == "conv")
    dq = conv.inputs[0].producer
    assert dq.op_type == "DequantizeLinear" and int(dq.attr("axis")) == 1
    assert sum(n.op_type == "DequantizeLinear" for n in m.graph) == 2  # the per-tensor one, now unread, is gone
    fixed = m.to_onnx()
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        np.testing.assert_array_equal(_run(fixed, x, level), plain)
    assert keep_float_layers(from_proto(proto).graph, 12) == 0  # per-axis DequantizeLinear needs opset 13


def test_keep_float_layers_copies_an_outer_dequantize_read_in_a_body():
    """A float Conv in an If branch reading a value quantized in the main graph: the per-axis copy goes next to the
    outer DequantizeLinear (inserting it into the body crashed quantize_model)."""
    from onnx import TensorProto

    from graphopt.quantize import output_error, quantize_model
    from graphopt.tools import runtime

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.5).astype(np.float32), "w0"),
        numpy_helper.from_array((rng.standard_normal((4, 4, 1, 1)) * 0.5).astype(np.float32), "w1"),
    ]

    def branch(name):
        y = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 4, 8, 8])
        return helper.make_graph([helper.make_node("Conv", ["c1", "w1"], [y.name], name=f"{name}_conv")], name, [], [y])

    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1] * 4, name="conv0"),
        helper.make_node("Relu", ["c0"], ["c1"], name="relu"),
        helper.make_node("If", ["c"], ["y"], then_branch=branch("a"), else_branch=branch("b"), name="if"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32), "c": np.array(i % 2 == 0)} for i in range(2)]
    m = from_proto(proto)
    cfg = {"cache": False, "choice": "static", "fallback": False, "exclude": ["a_conv", "b_conv"]}
    quantize_model(m, feeds, "ort", cfg)
    q = m.to_onnx()
    for body in (q.graph.node[-1].attribute[0].g, q.graph.node[-1].attribute[1].g):
        (conv,) = body.node
        dq = next(n for n in q.graph.node if conv.input[0] in n.output)
        assert dq.op_type == "DequantizeLinear" and any(a.name == "axis" for a in dq.attribute)
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(q).run(None, f) for f in feeds]
    assert output_error(ref, got)[0] < 0.05
