"""Int8 QDQ quantization: placement for onnxruntime and TensorRT, weights and biases, the report, max-error.

Random conv nets (hypothesis) are quantized for both targets and run in onnxruntime against the float model; for
target ort every Conv must run as an integer kernel, for target tensorrt the graph must pass the TensorRT rule checker.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.onnx_io import from_proto
from graphopt.errors import GraphoptError
from graphopt.quantize import QuantizeConfig, choice, choose_reduce_range, cpu_vnni, output_error, quantize_model
from graphopt.quantize.qdq_rules import check_tensorrt
from graphopt.tools import runtime


# --------------------------------------------------------------------------------------------------------------------
# random conv nets
# --------------------------------------------------------------------------------------------------------------------
class _Net:
    def __init__(self, rng: np.random.Generator, channels: int, size: int, opset: int = 17) -> None:
        self.rng, self.c, self.size, self.opset = rng, channels, size, opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.k = 0

    def name(self, base: str) -> str:
        self.k += 1
        return f"{base}{self.k}"

    def const(self, arr: np.ndarray, base: str) -> str:
        n = self.name(base)
        self.inits.append(numpy_helper.from_array(arr.astype(np.float32), n))
        return n

    def node(self, op: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(f"{op.lower()}_out")
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 3, bias: bool = True, group: int = 1) -> str:
        w = self.rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)
        ins = [x, self.const(w, "w")]
        if bias:
            ins.append(self.const(self.rng.standard_normal(cout) * 0.1, "b"))
        return self.node("Conv", ins, pads=[k // 2] * 4, group=group)

    def block(self, kind: str, x: str) -> str:
        c = self.c
        if kind == "conv_relu":
            return self.node("Relu", [self.conv(x, c, c)])
        if kind == "conv_clip":
            lo, hi = self.const(np.array(0.0), "lo"), self.const(np.array(6.0), "hi")
            return self.node("Clip", [self.conv(x, c, c), lo, hi])
        if kind == "residual":
            y = self.node("Relu", [self.conv(x, c, c)])
            y = self.conv(y, c, c)
            return self.node("Relu", [self.node("Add", [y, x])])
        if kind == "concat":
            a = self.node("Relu", [self.conv(x, c, c, k=1)])
            b = self.node("Relu", [self.conv(x, c, c)])
            return self.conv(self.node("Concat", [a, b], axis=1), 2 * c, c, k=1)
        if kind == "depthwise":
            return self.node("Relu", [self.conv(x, c, c, group=c)])
        if kind == "pool":
            return self.node("MaxPool", [x], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        raise AssertionError(kind)

    def model(self, kinds: list[str], classes: int = 5) -> onnx.ModelProto:
        x = self.node("Relu", [self.conv("input", 3, self.c)])
        for kind in kinds:
            x = self.block(kind, x)
        x = self.node("Flatten", [self.node("GlobalAveragePool", [x])])
        w = self.const(self.rng.standard_normal((classes, self.c)) / np.sqrt(self.c), "fc_w")
        b = self.const(self.rng.standard_normal(classes) * 0.1, "fc_b")
        out = self.node("Gemm", [x, w, b], transB=1)
        self.nodes.append(helper.make_node("Identity", [out], ["logits"], name="out"))
        graph = helper.make_graph(
            self.nodes,
            "net",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, self.size, self.size])],
            [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


KINDS = ("conv_relu", "conv_clip", "residual", "concat", "depthwise", "pool")


def _feeds(n: int, size: int, seed: int = 0, batch: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((batch, 3, size, size)).astype(np.float32)} for _ in range(n)]


def _quantized(proto: onnx.ModelProto, feeds, target: str, **config):
    model = graphopt.optimize(proto, level=2, target=target)
    ir = from_proto(model)
    report = quantize_model(ir, feeds, target, {"cache": False, "measure_speed": False, **config})
    return ir.to_onnx(), report


def _error(a: onnx.ModelProto, b: onnx.ModelProto, feeds) -> float:
    sa, sb = runtime.session(a), runtime.session(b)
    return output_error([sa.run(None, f) for f in feeds], [sb.run(None, f) for f in feeds])[0]


nets = st.tuples(
    st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
    st.integers(2, 8),
    st.integers(5, 9),
    st.integers(0, 2**31 - 1),
)


def _quantize_random_net(net, target: str):
    """Build the drawn net, quantize it for ``target`` and check it runs close to the float model."""
    kinds, channels, size, seed = net
    proto = _Net(np.random.default_rng(seed), channels, size).model(kinds)
    feeds = _feeds(4, size, seed % 1000)
    quantized, report = _quantized(proto, feeds, target)
    assert _error(proto, quantized, feeds) < 0.1
    return quantized, report


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets)
def test_random_conv_nets_for_ort_run_close_and_every_conv_is_an_integer_kernel(net) -> None:
    quantized, report = _quantize_random_net(net, "ort")
    convs = [layer for layer in report.layers if layer.op_type == "Conv"]
    stems = [c.name for c in report.choices if c.reason == choice.STEM_REASON]  # a pooled 3-channel stem stays float
    assert len(stems) <= 1 and (convs or stems)
    assert all(layer.fused_as == "QLinearConv" for layer in convs), [(layer.name, layer.fused_as) for layer in convs]
    producers = {o: n for n in quantized.graph.node for o in n.output}
    relus = [n for n in quantized.graph.node if n.op_type == "Relu"]
    # every Relu follows a quantized op and is absorbed into its uint8 output (but the float stem's, float too)
    assert all(n.input[0] in producers and producers[n.input[0]].name in stems for n in relus), relus
    # standard ops, but for the layers the automatic choice made dynamic int8 (onnxruntime's DynamicQuantizeMatMul)
    dynamic = {layer.name for layer in report.layers if layer.mode == "dynamic"}
    assert all(n.domain in ("", "ai.onnx") or any(n.name.startswith(d) for d in dynamic) for n in quantized.graph.node)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets)
def test_random_conv_nets_for_tensorrt_follow_its_rules_and_run_close(net) -> None:
    quantized, report = _quantize_random_net(net, "tensorrt")
    assert check_tensorrt(quantized) == []
    zps = [
        numpy_helper.to_array(i)
        for i in quantized.graph.initializer
        if i.name.endswith("zero_point") or "_zero_point_" in i.name
    ]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    assert all(layer.op_type in ("Conv", "Gemm") for layer in report.layers)


def test_ort_and_quantize_static_agree_on_the_same_placement() -> None:
    """Our ort placement quantizes the same tensors as onnxruntime's quantize_static on a residual net."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    proto = _Net(np.random.default_rng(1), 4, 8).model(["residual", "concat", "pool"])
    folded = graphopt.optimize(proto, level=2)
    feeds = _feeds(4, 8)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        onnx.save(folded, src)
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
        theirs = onnx.load(dst)
    # quantize_static's own ranges (min to max, no headroom): the errors compare on the calibration feeds themselves
    ours, _ = _quantized(folded, feeds, "ort", method="minmax", headroom=0.0)
    a = _error(proto, theirs, feeds)
    b = _error(proto, ours, feeds)
    assert b <= a * 1.1 + 1e-4
    count = lambda m: sum(1 for n in m.graph.node if n.op_type == "QuantizeLinear")  # noqa: E731
    assert count(ours) == count(theirs)


# --------------------------------------------------------------------------------------------------------------------
# weights, biases, reduce range
# --------------------------------------------------------------------------------------------------------------------
def test_bias_that_would_overflow_int32_widens_the_weight_scale() -> None:
    net = _Net(np.random.default_rng(0), 2, 5)
    proto = net.model(["conv_relu"])
    # a huge bias on a tiny-input conv: bias / (s_x * s_w) would not fit in int32
    for init in proto.graph.initializer:
        if init.name.startswith("b"):
            init.CopyFrom(numpy_helper.from_array(np.array([3e5, -2e5], dtype=np.float32), init.name))
    feeds = [{"input": (f["input"] * 1e-3).astype(np.float32)} for f in _feeds(3, 5)]
    quantized, _ = _quantized(proto, feeds, "ort")
    for init in quantized.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.int32:
            assert np.abs(arr.astype(np.int64)).max() <= 2**31 - 1
    ref = runtime.session(proto).run(None, feeds[0])[0]
    got = runtime.session(quantized).run(None, feeds[0])[0]
    assert np.all(np.isfinite(got)) and np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


def test_weights_are_symmetric_per_channel_int8_on_the_output_channel_axis() -> None:
    proto = _Net(np.random.default_rng(3), 4, 6).model(["conv_relu"])
    quantized, _ = _quantized(proto, _feeds(2, 6), "ort")
    model = from_proto(quantized)
    convs = [n for n in model.graph if n.op_type == "Conv"]
    for conv in convs:
        dq = conv.inputs[1].producer
        assert dq.op_type == "DequantizeLinear" and dq.attr("axis") == 0
        q = dq.inputs[0].constant().numpy()
        scale = dq.inputs[1].constant().numpy()
        assert q.dtype == np.int8 and scale.shape == (q.shape[0],)
        assert np.abs(q).max() == 127  # each channel's largest weight uses the full range
        bias_dq = conv.inputs[2].producer
        assert bias_dq.op_type == "DequantizeLinear" and bias_dq.inputs[0].constant().dtype == TensorProto.INT32


def test_reduce_range_keeps_weights_within_seven_bits() -> None:
    proto = _Net(np.random.default_rng(3), 4, 6).model(["conv_relu"])
    quantized, report = _quantized(proto, _feeds(2, 6), "ort", reduce_range=True)
    assert report.reduce_range and report.reduce_range_reason == "set by the user"
    int8 = [numpy_helper.to_array(i) for i in quantized.graph.initializer if i.data_type == TensorProto.INT8]
    weights = [w for w in int8 if w.ndim == 4]
    assert weights and max(int(np.abs(w).max()) for w in weights) == 64


def test_cpu_detection_drives_the_reduce_range_choice() -> None:
    assert cpu_vnni("flags\t: fpu avx2 avx512_vnni\n") == (True, "avx512_vnni")
    assert cpu_vnni("flags\t: fpu avx2\n") == (False, "no VNNI")
    assert cpu_vnni("nothing here")[0] is None
    on, reason = choose_reduce_range(QuantizeConfig(), "tensorrt")
    assert not on and "tensorrt" in reason
    vnni, _ = cpu_vnni()
    on, reason = choose_reduce_range(QuantizeConfig(), "ort")
    assert on == (vnni is not True) and reason


# --------------------------------------------------------------------------------------------------------------------
# TensorRT rules
# --------------------------------------------------------------------------------------------------------------------
def test_tensorrt_residual_add_quantizes_the_skip_input_only() -> None:
    proto = _Net(np.random.default_rng(5), 4, 6).model(["residual"])
    quantized, _ = _quantized(proto, _feeds(2, 6), "tensorrt")
    model = from_proto(quantized)
    adds = [n for n in model.graph if n.op_type == "Add"]
    assert len(adds) == 1
    producers = sorted(v.producer.op_type for v in adds[0].inputs)
    assert producers == ["Conv", "DequantizeLinear"]
    # no Q/DQ on any Conv output, no quantized bias
    for n in model.graph:
        if n.op_type == "QuantizeLinear":
            assert (
                n.inputs[0].producer is None
                or n.inputs[0].producer.op_type != "Conv"
                or any(u.op_type == "Conv" for u in n.outputs[0].users()[0].outputs[0].users())
            )
    assert not [i for i in quantized.graph.initializer if i.data_type == TensorProto.INT32]


def _qdq_model(zp_dtype=np.int8, axis_on_activation=False, bias_dq=False, custom=False, quantize_branch=False):
    """A hand-built Conv(+residual Add) QDQ graph with one chosen violation of TensorRT's rules."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, zp_dtype), "zp"),
        numpy_helper.from_array(rng.integers(-127, 127, (2, 2, 1, 1)).astype(np.int8), "wq"),
        numpy_helper.from_array(np.full(2, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(2, np.int8), "wzp"),
        numpy_helper.from_array(np.zeros(2, np.int32), "bq"),
        numpy_helper.from_array(np.full(2, 0.0005, np.float32), "bs"),
        numpy_helper.from_array(np.zeros(2, np.int32), "bzp"),
        numpy_helper.from_array(np.zeros(2, np.float32), "b"),
        numpy_helper.from_array(np.full(2, 0.05, np.float32), "s2"),
        numpy_helper.from_array(np.zeros(2, np.int8), "zp2"),
    ]
    act = ["x", "s2", "zp2"] if axis_on_activation else ["x", "s", "zp"]
    nodes = [
        helper.make_node("QuantizeLinear", act, ["xq"], name="q_x", axis=1),
        helper.make_node("DequantizeLinear", ["xq", *act[1:]], ["xd"], name="dq_x", axis=1),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], name="dq_w", axis=0),
    ]
    if bias_dq:
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "bs", "bzp"], ["bd"], name="dq_b", axis=0))
    nodes.append(helper.make_node("Conv", ["xd", "wd", "bd" if bias_dq else "b"], ["c"], name="conv"))
    branch = "c"
    if quantize_branch:
        nodes += [
            helper.make_node("QuantizeLinear", ["c", "s", "zp"], ["cq"], name="q_c"),
            helper.make_node("DequantizeLinear", ["cq", "s", "zp"], ["cd"], name="dq_c"),
        ]
        branch = "cd"
    nodes.append(helper.make_node("Add", [branch, "x"], ["y"], name="residual"))
    if custom:
        nodes.append(helper.make_node("Gelu", ["y"], ["z"], name="gelu", domain="com.microsoft"))
    out = "z" if custom else "y"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 2, 3, 3])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if custom else [])
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize(
    "kwargs, rule",
    [
        ({}, None),
        ({"zp_dtype": np.uint8}, 2),
        ({"axis_on_activation": True}, 3),
        ({"bias_dq": True}, 6),
        ({"custom": True}, 1),
        ({"quantize_branch": True}, 7),
    ],
)
def test_tensorrt_rule_checker_finds_each_violation(kwargs, rule) -> None:
    found = check_tensorrt(_qdq_model(**kwargs))
    if rule is None:
        assert found == []
    else:
        assert rule in {v.rule for v in found}, found


def test_tensorrt_rule_checker_rejects_onnxruntime_placement() -> None:
    proto = _Net(np.random.default_rng(2), 3, 6).model(["residual"])
    quantized, _ = _quantized(proto, _feeds(2, 6), "ort")
    rules = {v.rule for v in check_tensorrt(quantized)}
    assert 2 in rules and 6 in rules  # uint8 zero points and int32 biases


# --------------------------------------------------------------------------------------------------------------------
# selection, max error, report, cache
# --------------------------------------------------------------------------------------------------------------------
def test_exclusions_keep_layers_float() -> None:
    proto = _Net(np.random.default_rng(4), 4, 6).model(["conv_relu", "residual"])
    folded = graphopt.optimize(proto, level=2)
    conv_names = [n.name for n in folded.graph.node if n.op_type == "Conv"]
    _, report = _quantized(proto, _feeds(2, 6), "ort", exclude=[conv_names[0]], exclude_ops=["Add"])
    names = {layer.name for layer in report.layers}
    assert conv_names[0] not in names and conv_names[1] in names
    assert not any(layer.op_type == "Add" for layer in report.layers)
    with pytest.raises(GraphoptError, match="nothing to quantize"):
        _quantized(proto, _feeds(2, 6), "ort", exclude_regex=[".*"])


def test_max_error_keeps_the_most_sensitive_layers_float_until_the_error_fits() -> None:
    proto = _Net(np.random.default_rng(6), 6, 8).model(["conv_relu", "residual", "concat", "conv_relu"])
    feeds = _feeds(4, 8)
    _, full = _quantized(proto, feeds, "ort")
    limit = full.error_rel / 3
    quantized, report = _quantized(proto, feeds, "ort", max_error=limit)
    assert report.kept_float, "a third of the full error cannot be reached with every layer in int8"
    assert report.error_rel <= limit
    assert _error(proto, quantized, feeds) <= limit
    assert all(layer.alone_sqnr_db is not None for layer in report.layers)
    kept = set(report.kept_float)
    assert not kept & {layer.name for layer in report.layers}


def test_report_has_per_layer_sqnr_scales_and_sizes() -> None:
    proto = _Net(np.random.default_rng(7), 4, 6).model(["residual", "concat"])
    _, report = _quantized(proto, _feeds(3, 6), "ort")
    d = report.to_dict()
    assert d["param_bytes_after"] < d["param_bytes_before"]
    assert 0 < d["output_error_rel"] < 0.1 and d["output_sqnr_db"] > 20
    for layer in d["layers"]:
        assert layer["sqnr_db"] is None or layer["sqnr_db"] > 10
        assert layer["mode"] == "dynamic" or layer["input_scale"] > 0  # dynamic: the scale is found at run time
    assert report.fused_count == len(report.layers)


def test_calibration_cache_skips_inference_on_a_second_run(tmp_path) -> None:
    proto = _Net(np.random.default_rng(8), 4, 6).model(["conv_relu"])
    feeds = _feeds(3, 6)
    cache = tmp_path / "calib.npz"
    q1, r1 = _quantized(proto, feeds, "ort", cache=str(cache))
    assert cache.is_file() and not r1.cached
    q2, r2 = _quantized(proto, feeds, "ort", cache=str(cache))
    assert r2.cached
    assert [i.raw_data for i in q1.graph.initializer] == [i.raw_data for i in q2.graph.initializer]
    _, r3 = _quantized(proto, _feeds(3, 6, seed=9), "ort", cache=str(cache))
    assert not r3.cached  # other data: other key


@pytest.mark.parametrize(
    "feed, message",
    [
        ({"inputx": np.zeros((1, 3, 6, 6), np.float32)}, "'inputx' is not an input"),
        ({}, "input 'input' is missing"),
        ({"input": np.zeros((1, 3, 6, 6), np.float64)}, "dtype float64"),
        ({"input": np.zeros((1, 3, 6), np.float32)}, "rank 4"),
        ({"input": np.zeros((1, 4, 6, 6), np.float32)}, "expects batchx3x6x6"),
    ],
)
def test_calibration_data_that_does_not_fit_the_model_is_a_clear_error(feed, message) -> None:
    proto = _Net(np.random.default_rng(0), 2, 6).model(["conv_relu"])
    model = from_proto(proto)
    with pytest.raises(GraphoptError, match=message):
        quantize_model(model, [feed], "ort", {"cache": False})


def test_nothing_to_quantize_and_empty_calibration_are_errors() -> None:
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(GraphoptError, match="nothing to quantize"):
        quantize_model(model, [{"x": np.zeros((1, 4), np.float32)}], "ort", {"cache": False})
    with pytest.raises(GraphoptError, match="empty"):
        quantize_model(model, [], "ort", {"cache": False})
    with pytest.raises(GraphoptError, match="needs calibration data"):
        graphopt.optimize(helper.make_model(graph), quantize="int8")


def test_optimize_api_quantizes_after_the_lossless_pipeline() -> None:
    proto = _Net(np.random.default_rng(9), 4, 6).model(["residual"])
    report: list = []
    out = graphopt.optimize(
        proto, quantize="int8", calibration=_feeds(2, 6), quantize_options={"cache": False}, report=report
    )
    assert isinstance(out, onnx.ModelProto)
    q = report[0].quantization
    assert q is not None and q.layers and q.fused_count == len(q.layers)
    assert "BatchNormalization" not in {n.op_type for n in out.graph.node}


# --------------------------------------------------------------------------------------------------------------------
# real exports and the shipped fixtures (dynamic dims, subgraphs, transformer blocks)
# --------------------------------------------------------------------------------------------------------------------
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REAL = sorted((FIXTURES / "real").glob("*.onnx"))


def _real_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    with np.load(FIXTURES / "real" / f"{path.name.split('.')[0]}.io.npz") as data:
        feed = {k: data[k] for k in data.files if k != "output"}
    # two calibration batches: the recorded inputs and a shuffled copy along the batch axis
    return [feed, {k: v[::-1].copy() for k, v in feed.items()}]


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_exports_quantize_and_run(path: Path, target: str) -> None:
    feeds = _real_feeds(path)
    proto = onnx.load(path)
    quantized, report = _quantized(proto, feeds, target)
    err = _error(proto, quantized, feeds)
    assert err < 0.5, err  # tiny random-weight nets: int8 noise, not a broken graph (that shows as ~1.0)
    ops = {layer.op_type for layer in report.layers}
    assert ops & {"Conv", "MatMul", "Gemm"}
    if target == "ort":
        assert report.fused_count == len(report.layers)
    else:
        assert check_tensorrt(quantized) == []
    if path.name.startswith(("bert", "vit")):
        assert "MatMul" in ops and not ops & {"LayerNormalization", "Softmax"}
        float_ops = {n.op_type for n in quantized.graph.node}
        assert float_ops & {"LayerNormalization", "ReduceMean", "Softmax"}


@pytest.mark.parametrize("name", ["dynamic.onnx", "control_flow.onnx", "transformer.onnx", "cnn.onnx"])
def test_shipped_fixtures_quantize_for_ort_and_run(name: str) -> None:
    path = FIXTURES / name
    sess = runtime.session(path)
    feeds = [runtime.make_inputs(sess, seed=i) for i in range(3)]
    proto = onnx.load(path)
    quantized, report = _quantized(proto, feeds, "ort")
    assert report.layers and report.fused_count == len(report.layers)
    assert _error(proto, quantized, feeds) < 0.1
    # other sizes of the dynamic dims still run
    other = runtime.make_inputs(sess, seed=7, batch=2)
    assert all(np.all(np.isfinite(o)) for o in runtime.session(quantized).run(None, other) if o.dtype.kind == "f")


def test_average_pool_whose_ceil_mode_adds_windows_stays_float() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Sigmoid", ["x"], ["r2"]),
            helper.make_node("AveragePool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
            helper.make_node("AveragePool", ["r2"], ["z"], kernel_shape=[1, 1], strides=[1, 1], ceil_mode=1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("y", "z")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": np.random.default_rng(0).standard_normal((1, 4, 5, 5)).astype(np.float32)}]
    quantized, report = _quantized(proto, feeds, "ort")
    assert [layer.op_type for layer in report.layers] == ["AveragePool"]  # only the pool where ceil equals floor
    # onnxruntime would fuse DQ -> AveragePool -> Q on its own: the unsafe pool's input is not quantized at all
    pool = next(n for n in quantized.graph.node if n.op_type == "AveragePool" and n.output[0] == "y")
    assert not any(n.op_type == "DequantizeLinear" and pool.input[0] in n.output for n in quantized.graph.node)
    assert _error(proto, quantized, feeds) < 0.02


# --------------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------------
def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from graphopt.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _quantize_cnn(capsys, out: Path, *extra: str) -> tuple[int, str, str]:
    """``graphopt optimize fixtures/cnn.onnx -o OUT --quantize int8`` with no calibration cache, plus ``extra``."""
    args = ["optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--quantize", "int8", "--calib-cache", "off"]
    return _cli(capsys, *args, *extra)


def _calib_dir(tmp_path: Path, feeds) -> Path:
    d = tmp_path / "calib"
    d.mkdir()
    for i, f in enumerate(feeds):
        np.savez(d / f"sample{i}.npz", **f)
    return d


def test_cli_quantizes_with_a_calibration_directory_and_reuses_the_cache(tmp_path, capsys) -> None:
    calib = _calib_dir(tmp_path, _feeds(3, 32))
    out = tmp_path / "q.onnx"
    cache = tmp_path / "cache.npz"
    args = ["optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--quantize", "int8", "--calib-data", str(calib)]
    code, stdout, _ = _cli(capsys, *args, "--calib-cache", str(cache), "--json")
    assert code == 0 and out.is_file()
    summary = json.loads(stdout)
    q = summary["quantization"]
    assert q["target"] == "ort" and q["calibration_batches"] == 3 and not q["calibration_cached"]
    assert q["layers"] and all(layer["fused_as"] for layer in q["layers"])
    assert q["reduce_range_reason"]
    code, stdout, _ = _cli(capsys, *args, "--calib-cache", str(cache))
    assert code == 0 and "from cache" in stdout and "QLinearConv" in stdout


def test_cli_random_calibration_warns(tmp_path, capsys) -> None:
    out = tmp_path / "q.onnx"
    code, _, err = _quantize_cnn(capsys, out, "--calib-random", "2", "--target", "tensorrt")
    assert code == 0 and "random data" in err
    assert check_tensorrt(onnx.load(out)) == []


def _bad_npz(tmp_path: Path, **arrays) -> Path:
    d = tmp_path / "bad"
    d.mkdir()
    np.savez(d / "one.npz", **arrays)
    return d


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda t: ["--calib-data", str(t)], "no .npz calibration files"),
        (lambda t: ["--calib-data", str(t / "missing")], "directory not found"),
        (
            lambda t: ["--calib-data", str(_bad_npz(t, image=np.zeros((1, 3, 32, 32), np.float32)))],
            "one.npz: 'image' is not an input",
        ),
        (
            lambda t: ["--calib-data", str(_bad_npz(t, input=np.zeros((1, 3, 32, 32), np.float64)))],
            "one.npz: input 'input' has dtype float64",
        ),
        (
            lambda t: ["--calib-data", str(_bad_npz(t, input=np.zeros((1, 3, 16, 16), np.float32)))],
            "one.npz: input 'input' has shape",
        ),
        (lambda t: [], "needs calibration data"),
        (lambda t: ["--calib-random", "0"], "at least 1"),
        (lambda t: ["--calib-random", "2", "--max-error", "-1"], "must be positive"),
        (lambda t: ["--calib-random", "2", "--exclude-regex", "("], "--exclude-regex"),
    ],
)
def test_cli_bad_quantization_input_is_a_one_line_error_and_writes_nothing(tmp_path, capsys, make, message) -> None:
    out = tmp_path / "q.onnx"
    code, _, err = _quantize_cnn(capsys, out, *make(tmp_path))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_cli_calibration_flags_without_quantize_and_nothing_quantizable(tmp_path, capsys) -> None:
    out = tmp_path / "q.onnx"
    code, _, err = _cli(capsys, "optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--calib-random", "2")
    assert (
        code == 2
        and "--calib-random needs --quantize (int8, int8-dynamic, int4), --precision or the quantize-int8 pass" in err
        and not out.exists()
    )
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    src = tmp_path / "softmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    code, _, err = _cli(
        capsys,
        "optimize",
        str(src),
        "-o",
        str(out),
        "--quantize",
        "int8",
        "--calib-random",
        "1",
        "--calib-cache",
        "off",
    )
    assert code == 2 and "nothing to quantize" in err and not out.exists()


def test_cli_max_error_reports_the_layers_kept_float(tmp_path, capsys) -> None:
    proto = _Net(np.random.default_rng(6), 6, 8).model(["conv_relu", "residual", "concat", "conv_relu"])
    src = tmp_path / "net.onnx"
    onnx.save(proto, src)
    calib = _calib_dir(tmp_path, _feeds(4, 8))
    base = ["optimize", str(src), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8", "--calib-data", str(calib)]
    code, stdout, _ = _cli(capsys, *base, "--calib-cache", "off", "--json")
    limit = json.loads(stdout)["quantization"]["output_error_rel"] / 3
    code, stdout, _ = _cli(capsys, *base, "--max-error", str(limit), "--calib-cache", "off", "--json")
    q = json.loads(stdout)["quantization"]
    assert code == 0 and q["kept_float"] and q["output_error_rel"] <= limit
    assert all(layer["alone_sqnr_db"] is not None for layer in q["layers"])


def test_quantize_pass_in_a_pipeline_runs_once_and_refuses_quantized_models() -> None:
    proto = _Net(np.random.default_rng(10), 4, 6).model(["residual"])
    report: list = []
    out = graphopt.optimize(
        proto,
        passes="cleanup,fold-conv-bn,quantize-int8{method=minmax},cleanup",
        fixed_point=True,
        calibration=_feeds(2, 6),
        quantize_options={"cache": False},
        report=report,
    )
    stats = {s.name: s for s in report[0].stats}
    assert stats["quantize-int8"].counts["layers"] > 0
    once = sum(1 for n in out.graph.node if n.op_type == "QuantizeLinear")
    again = graphopt.optimize(out, passes="quantize-int8", calibration=_feeds(2, 6))
    assert sum(1 for n in again.graph.node if n.op_type == "QuantizeLinear") == once
    with pytest.raises(GraphoptError, match="already quantized"):
        quantize_model(from_proto(out), _feeds(2, 6), "ort", {"cache": False})
    with pytest.raises(GraphoptError, match="needs calibration data"):
        graphopt.optimize(proto, passes="quantize-int8")


def test_softmax_and_layernorm_stay_float_unless_asked() -> None:
    path = FIXTURES / "real" / "bert.ts.onnx"
    feeds = _real_feeds(path)
    proto = onnx.load(path)
    _, default = _quantized(proto, feeds, "ort")
    assert "Softmax" not in {layer.op_type for layer in default.layers}
    quantized, asked = _quantized(proto, feeds, "ort", op_types=["MatMul", "Softmax"])
    assert {layer.op_type for layer in asked.layers} == {"MatMul", "Softmax"}
    assert _error(proto, quantized, feeds) < 0.5
