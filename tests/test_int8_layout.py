"""int8 for onnxruntime: the layout onnxruntime runs a quantized classifier's tail in (transform's
``_quantize_before_moves`` and qdq_rules' ``channels_last_tails``), checked on onnxruntime's own optimized graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.quantize import output_error, quantize_model
from graphopt.quantize.qdq_rules import channels_last_tails
from graphopt.tools import runtime


def _tail_net(seed: int, batch: int = 1, flatten: bool = False) -> onnx.ModelProto:
    """Conv -> hard-swish (x * HardSigmoid(x)) -> MaxPool 2x2 -> GlobalAveragePool -> Reshape/Flatten -> Gemm:
    the tail of a PaddleOCR LCNet classifier."""
    rng = np.random.default_rng(seed)

    def const(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    inits: list[onnx.TensorProto] = []
    nodes = [
        helper.make_node(
            "Conv", ["input", const("w0", rng.standard_normal((16, 3, 3, 3)) * 0.5)], ["c0"], pads=[1] * 4
        ),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node(
            "Conv",
            ["r0", const("w1", rng.standard_normal((24, 16, 1, 1)) * 0.4), const("b1", rng.normal(size=24))],
            ["x"],
        ),
        helper.make_node("HardSigmoid", ["x"], ["g"], alpha=1.0 / 6.0, beta=0.5),
        helper.make_node("Mul", ["x", "g"], ["h"]),
        helper.make_node("MaxPool", ["h"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["gap"]),
    ]
    if flatten:
        nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    else:
        inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["gap", "shape"], ["flat"]))
    nodes.append(
        helper.make_node(
            "Gemm",
            ["flat", const("wf", rng.standard_normal((5, 24)) * 0.3), const("bf", rng.normal(size=5))],
            ["out"],
            transB=1,
        )
    )
    graph = helper.make_graph(
        nodes,
        "tail",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 24])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def _quantized(proto: onnx.ModelProto, feeds: list[dict]) -> tuple[onnx.ModelProto, float]:
    model = from_proto(proto)
    report = quantize_model(model, feeds, "ort", {"cache": False, "choice": "static", "fallback": False})
    return model.to_onnx(), report.error_rel


def _optimized(model: onnx.ModelProto, tmp_path) -> list[onnx.NodeProto]:
    path = str(tmp_path / "optimized.onnx")
    runtime.session(model, optimized_path=path)
    return list(onnx.load(path).graph.node)


def _feeds(seed: int, batch: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((batch, 3, 8, 24)).astype(np.float32)} for _ in range(4)]


@pytest.mark.parametrize("flatten", [False, True])
def test_quantized_tail_runs_channels_last_with_nhwc_maxpool(tmp_path, flatten) -> None:
    proto = _tail_net(0, flatten=flatten)
    feeds = _feeds(1)
    quantized, rel = _quantized(proto, feeds)
    written = [n.op_type for n in quantized.graph.node]
    assert "HardSigmoid" not in written  # the hard-swish before the MaxPool runs on integers
    ran = _optimized(quantized, tmp_path)
    ops = [n.op_type for n in ran]
    # onnxruntime 1.32 left this MaxPool in NCHW as a uint8 MaxPool (a scalar loop) and the tail's Transposes in place
    assert "NhwcMaxPool" in ops and "MaxPool" not in ops, ops
    assert "Transpose" not in ops[ops.index("NhwcMaxPool") :], ops
    gap = [n for n in ran if n.op_type == "QLinearGlobalAveragePool"]
    assert gap and all(a.i == 1 for n in gap for a in n.attribute if a.name == "channels_last"), gap
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(quantized).run(None, f) for f in feeds]
    measured = output_error(ref, got)[0]
    assert measured < 0.05 and abs(measured - rel) < 1e-6  # the written model is the one the quantizer measured


def _without_tail_transposes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the Transposes channels_last_tails wrote bypassed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for t in [n for n in g.node if n.op_type == "Transpose" and n.name.endswith("_nhwc")]:
        for n in g.node:
            for i, name in enumerate(n.input):
                if name == t.output[0]:
                    n.input[i] = t.input[0]
        g.node.remove(t)
    return out


@pytest.mark.parametrize("batch", [1, 3])
def test_channels_last_transpose_changes_no_output_bit(batch) -> None:
    proto = _tail_net(2, batch=batch)
    feeds = _feeds(3, batch)
    quantized, _ = _quantized(proto, feeds)
    plain = _without_tail_transposes(quantized)
    assert len(plain.graph.node) == len(quantized.graph.node) - 1
    for f in _feeds(4, batch):
        a = runtime.session(quantized).run(None, f)[0]
        b = runtime.session(plain).run(None, f)[0]
        np.testing.assert_array_equal(a, b)


def _reshape_net(shape: list[int], dims: tuple[int, int, int, int], allowzero: int = 0) -> onnx.ModelProto:
    s = numpy_helper.from_array(np.asarray(shape, np.int64), "shape")
    sc = numpy_helper.from_array(np.asarray(0.1, np.float32), "sc")
    zp = numpy_helper.from_array(np.asarray(128, np.uint8), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "sc", "zp"], ["d"]),
        helper.make_node("Reshape", ["d", "shape"], ["y"], **({"allowzero": allowzero} if allowzero else {})),
    ]
    graph = helper.make_graph(
        nodes,
        "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [s, sc, zp],
    )
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]))


@pytest.mark.parametrize(
    "shape,dims,allowzero,want",
    [
        ([0, -1], (2, 6, 1, 1), 0, 1),
        ([2, 6], (2, 6, 1, 1), 0, 1),
        ([-1], (1, 6, 1, 1), 0, 1),
        ([0, 0, 1, 1], (2, 6, 1, 1), 0, 0),  # copies dim 1: C before, 1 after a transpose
        ([2, 6], (2, 6, 1, 1), 1, 0),
        ([2, 12], (2, 6, 2, 1), 0, 0),  # spatial dims not 1: the order of the elements would change
    ],
)
def test_channels_last_tails_only_where_the_reshape_reads_the_same_elements(shape, dims, allowzero, want) -> None:
    proto = _reshape_net(shape, dims, allowzero)
    model = from_proto(proto)
    assert channels_last_tails(model.graph) == want
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    a = runtime.session(proto).run(None, {"x": x})[0]
    b = runtime.session(model.to_onnx()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(a, b)


def _se_net(opset: int, axes: list[int]) -> onnx.ModelProto:
    """Conv -> squeeze-excitation (ReduceMean over H, W -> Conv -> Relu -> Conv -> HardSigmoid) -> x * gate -> Conv."""
    rng = np.random.default_rng(5)
    inits: list[onnx.TensorProto] = []

    def const(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    if opset >= 18:
        inits.append(numpy_helper.from_array(np.asarray(axes, np.int64), "axes"))
        mean = helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1)
    else:
        mean = helper.make_node("ReduceMean", ["x"], ["m"], axes=axes, keepdims=1)
    nodes = [
        helper.make_node("Conv", ["input", const("w0", rng.standard_normal((8, 3, 3, 3)) * 0.5)], ["x"], pads=[1] * 4),
        mean,
        helper.make_node("Conv", ["m", const("w1", rng.standard_normal((4, 8, 1, 1)) * 0.5)], ["s1"]),
        helper.make_node("Relu", ["s1"], ["r1"]),
        helper.make_node("Conv", ["r1", const("w2", rng.standard_normal((8, 4, 1, 1)) * 0.5)], ["s2"]),
        helper.make_node("HardSigmoid", ["s2"], ["gate"], alpha=1.0 / 6.0, beta=0.5),
        helper.make_node("Mul", ["x", "gate"], ["se"]),
        helper.make_node("Conv", ["se", const("w3", rng.standard_normal((4, 8, 1, 1)) * 0.4)], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "se",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 12, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 12, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("opset,axes", [(13, [2, 3]), (13, [-1, -2]), (18, [2, 3])])
def test_spatial_reduce_mean_between_qdq_runs_as_qlinear_global_average_pool(tmp_path, opset, axes) -> None:
    proto = _se_net(opset, axes)
    rng = np.random.default_rng(6)
    feeds = [{"input": rng.standard_normal((1, 3, 12, 16)).astype(np.float32)} for _ in range(4)]
    quantized, rel = _quantized(proto, feeds)
    assert "ReduceMean" not in [n.op_type for n in quantized.graph.node]
    ops = [n.op_type for n in _optimized(quantized, tmp_path)]
    # onnxruntime 1.32 kept it a float ReduceMean, run over axes [1, 2] of the channels-last tensor
    assert "QLinearGlobalAveragePool" in ops and "ReduceMean" not in ops, ops
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(quantized).run(None, f) for f in feeds]
    measured = output_error(ref, got)[0]
    assert measured < 0.05 and abs(measured - rel) < 1e-6


def test_reduce_mean_over_part_of_the_spatial_axes_stays() -> None:
    proto = _se_net(13, [2])
    rng = np.random.default_rng(7)
    feeds = [{"input": rng.standard_normal((1, 3, 12, 16)).astype(np.float32)} for _ in range(4)]
    quantized, _ = _quantized(proto, feeds)
    assert "ReduceMean" in [n.op_type for n in quantized.graph.node]


@pytest.mark.parametrize("axis,want", [(1, 1), (0, 1), (2, 0), (3, 0)])
def test_channels_last_tails_takes_a_flatten_only_at_axis_0_or_1(axis, want) -> None:
    """Flatten at axis 2 of [N, C, 1, 1] gives [N*C, 1]: read through the Transpose it would be [N, C]; left alone."""
    sc = numpy_helper.from_array(np.asarray(0.1, np.float32), "sc")
    zp = numpy_helper.from_array(np.asarray(128, np.uint8), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "sc", "zp"], ["d"]),
        helper.make_node("Flatten", ["d"], ["y"], axis=axis),
    ]
    graph = helper.make_graph(
        nodes,
        "f",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [sc, zp],
    )
    proto = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]))
    model = from_proto(proto)
    assert channels_last_tails(model.graph) == want
    x = np.random.default_rng(1).standard_normal((2, 6, 1, 1)).astype(np.float32)
    a = runtime.session(proto).run(None, {"x": x})[0]
    b = runtime.session(model.to_onnx()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(a, b)


def test_a_reduce_mean_without_keepdims_stays() -> None:
    """keepdims=0 drops the spatial axes; GlobalAveragePool keeps them: not the same output shape, left alone."""
    from graphopt.quantize.qdq_rules import reduce_means_as_pools

    sc = numpy_helper.from_array(np.asarray(0.1, np.float32), "sc")
    zp = numpy_helper.from_array(np.asarray(128, np.uint8), "zp")
    for keepdims, want in ((0, 0), (1, 1)):
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "sc", "zp"], ["d"]),
            helper.make_node("ReduceMean", ["d"], ["m"], axes=[2, 3], keepdims=keepdims),
            helper.make_node("QuantizeLinear", ["m", "sc", "zp"], ["y"]),
        ]
        graph = helper.make_graph(
            nodes,
            "m",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 5])],
            [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
            [sc, zp],
        )
        proto = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
        model = from_proto(proto)
        assert reduce_means_as_pools(model.graph) == want
