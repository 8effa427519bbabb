"""int8 for onnxruntime: a nearest Resize by whole factors next to the quantized region runs as a channels-last Tile
(qdq_rules' ``nearest_upsamples_as_tiles``), bit-identical to the Resize under onnxruntime."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.quantize import output_error, quantize_model
from graphopt.quantize.qdq_rules import nearest_upsamples_as_tiles
from graphopt.tools import runtime

MODES = ["half_pixel", "pytorch_half_pixel", "asymmetric", "tf_half_pixel_for_nn", "align_corners"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
FACTORS = [(2, 2), (3, 1), (1, 4), (3, 5)]


def _resize_net(
    mode: str,
    nearest: str,
    factors: tuple[int, int],
    dims: list,
    *,
    side: str = "input",
    zp_type: int = TensorProto.UINT8,
    opset: int = 13,
) -> onnx.ModelProto:
    """x -> [Q -> DQ] -> Resize -> [Q -> DQ] -> y: ``side="input"`` quantizes the Resize's input only (a float value
    leaves it), ``"output"`` its output only (a Relu feeds it), ``"both"`` both."""
    fh, fw = factors
    zp = 0 if zp_type == TensorProto.INT8 else 128
    inits = [
        numpy_helper.from_array(np.asarray(0.05, np.float32), "sc"),
        numpy_helper.from_array(np.asarray(zp, np.int8 if zp_type == TensorProto.INT8 else np.uint8), "zp"),
        numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
        numpy_helper.from_array(np.asarray([1, 1, fh, fw], np.float32), "scales"),
    ]
    nodes = []
    src = "x"
    if side in ("input", "both"):
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "sc", "zp"], ["xd"]),
        ]
        src = "xd"
    else:
        nodes.append(helper.make_node("Relu", ["x"], ["xr"]))
        src = "xr"
    resized = "r" if side != "input" else "y"
    nodes.append(
        helper.make_node(
            "Resize",
            [src, "roi", "scales"],
            [resized],
            mode="nearest",
            coordinate_transformation_mode=mode,
            nearest_mode=nearest,
        )
    )
    if side != "input":
        nodes += [
            helper.make_node("QuantizeLinear", ["r", "sc", "zp"], ["rq"]),
            helper.make_node("DequantizeLinear", ["rq", "sc", "zp"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes,
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)


def _rewritten(proto: onnx.ModelProto, opset: int = 13) -> tuple[onnx.ModelProto, int]:
    model = from_proto(proto)
    count = nearest_upsamples_as_tiles(model.graph, opset)
    return model.to_onnx(), count


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return runtime.session(proto, threads=1).run(None, {"x": x})[0]


@pytest.mark.parametrize("mode,nearest", list(itertools.product(MODES, NEAREST)))
def test_rewritten_exactly_where_onnxruntime_copies_whole_pixels(mode, nearest) -> None:
    """For every coordinate and rounding mode and each factor pair: the rule takes the Resize if and only if
    onnxruntime's Resize output is the input with each pixel repeated (on odd sizes, where clamping shows), and the
    Tile form then gives the same bits."""
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 7)).astype(np.float32) * 3
    for factors in FACTORS:
        proto = _resize_net(mode, nearest, factors, [1, 3, 5, 7])
        written, count = _rewritten(proto)
        ref = _run(proto, x)
        xd = _run(_resize_net(mode, nearest, (1, 1), [1, 3, 5, 7]), x)  # Q/DQ of x, "resized" by 1
        copies = ref.shape == (1, 3, 5 * factors[0], 7 * factors[1]) and np.array_equal(
            ref, np.repeat(np.repeat(xd, factors[0], axis=2), factors[1], axis=3)
        )
        assert count == int(copies), (factors, count, copies)
        if count:
            assert "Resize" not in [n.op_type for n in written.graph.node]
            np.testing.assert_array_equal(_run(written, x), ref)


@pytest.mark.parametrize("side", ["input", "output", "both"])
@pytest.mark.parametrize("zp_type", [TensorProto.UINT8, TensorProto.INT8])
@pytest.mark.parametrize("opset", [11, 13, 17])
def test_tile_form_is_bit_identical_with_dynamic_dims(side, zp_type, opset) -> None:
    """Dims not known (the target shape comes from Shape): the same bits as the Resize for several input sizes."""
    proto = _resize_net("asymmetric", "floor", (2, 3), ["n", 4, "h", "w"], side=side, zp_type=zp_type, opset=opset)
    written, count = _rewritten(proto, opset)
    assert count == 1
    ops = [n.op_type for n in written.graph.node]
    assert "Resize" not in ops and "Tile" in ops and "Shape" in ops
    rng = np.random.default_rng(1)
    for shape in [(1, 4, 3, 5), (2, 4, 6, 1), (1, 4, 17, 9)]:
        x = rng.standard_normal(shape).astype(np.float32) * 4
        np.testing.assert_array_equal(_run(written, x), _run(proto, x))


def test_static_dims_give_a_constant_target_shape() -> None:
    proto = _resize_net("half_pixel", "round_prefer_floor", (2, 2), [1, 4, 6, 5], side="both")
    written, count = _rewritten(proto)
    ops = [n.op_type for n in written.graph.node]
    assert count == 1 and "Shape" not in ops, ops
    x = np.random.default_rng(2).standard_normal((1, 4, 6, 5)).astype(np.float32)
    np.testing.assert_array_equal(_run(written, x), _run(proto, x))


def _edit(proto: onnx.ModelProto, **changes) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    node = next(n for n in out.graph.node if n.op_type == "Resize")
    for key, value in changes.items():
        if key == "scales":
            for t in out.graph.initializer:
                if t.name == "scales":
                    t.CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), "scales"))
        elif key == "mode":
            for a in node.attribute:
                if a.name == "mode":
                    a.s = value.encode()
    return out


@pytest.mark.parametrize(
    "changes",
    [
        {"mode": "linear"},  # interpolates
        {"scales": [1, 2, 2, 2]},  # scales the channels
        {"scales": [1, 1, 2.5, 2]},  # not a whole factor
        {"scales": [1, 1, 1, 1]},  # nothing to repeat
    ],
)
def test_left_alone(changes) -> None:
    proto = _edit(_resize_net("asymmetric", "floor", (2, 2), [1, 3, 4, 4], side="both"), **changes)
    assert _rewritten(proto)[1] == 0


def test_float_on_both_sides_is_left_alone() -> None:
    """Neither a DequantizeLinear before nor QuantizeLinears after: not in the quantized region, no Transposes to
    cancel against."""
    proto = _resize_net("asymmetric", "floor", (2, 2), [1, 3, 4, 4], side="output")
    plain = onnx.ModelProto()
    plain.CopyFrom(proto)
    keep = [n for n in plain.graph.node if n.op_type in ("Relu", "Resize")]
    keep[-1].output[0] = "y"
    del plain.graph.node[:]
    plain.graph.node.extend(keep)
    assert _rewritten(plain)[1] == 0


def _fpn_net(seed: int) -> onnx.ModelProto:
    """Conv -> Relu -> Conv (stride 2) -> Relu -> nearest x2 Resize -> Add (skip) -> Conv: a detector's FPN step."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = [
        numpy_helper.from_array(np.zeros(0, np.float32), "roi"),
        numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), "scales"),
    ]

    def const(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    nodes = [
        helper.make_node(
            "Conv", ["input", const("w0", rng.standard_normal((16, 3, 3, 3)) * 0.5)], ["c0"], pads=[1] * 4
        ),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node(
            "Conv", ["r0", const("w1", rng.standard_normal((16, 16, 3, 3)) * 0.2)], ["c1"], pads=[1] * 4, strides=[2, 2]
        ),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node(
            "Resize",
            ["r1", "roi", "scales"],
            ["up"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        helper.make_node("Add", ["up", "r0"], ["s"]),
        helper.make_node("Conv", ["s", const("w2", rng.standard_normal((8, 16, 3, 3)) * 0.2)], ["out"], pads=[1] * 4),
    ]
    graph = helper.make_graph(
        nodes,
        "fpn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model


def test_quantized_upsample_runs_as_an_integer_tile_between_the_nhwc_convolutions(tmp_path) -> None:
    proto = _fpn_net(3)
    rng = np.random.default_rng(4)
    feeds = [{"input": rng.standard_normal((1, 3, 16, 12)).astype(np.float32)} for _ in range(4)]
    model = from_proto(proto)
    report = quantize_model(model, feeds, "ort", {"cache": False, "choice": "static", "fallback": False})
    quantized = model.to_onnx()
    assert "Resize" not in [n.op_type for n in quantized.graph.node]
    path = str(tmp_path / "optimized.onnx")
    runtime.session(quantized, optimized_path=path)
    ran = onnx.load(path).graph
    ops = [n.op_type for n in ran.node]
    made = {o: n for n in ran.node for o in n.output}
    tiles = [n for n in ran.node if n.op_type == "Tile"]
    # onnxruntime 1.32 ran the Resize channels-last through its per-element nearest loop
    assert tiles and "Resize" not in ops, ops
    assert all(made[t.input[0]].op_type != "DequantizeLinear" for t in tiles), ops  # on the integers
    assert ops.count("Transpose") <= 2, ops  # the Tile's own Transposes cancelled against the NHWC transformer's
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(quantized).run(None, f) for f in feeds]
    measured = output_error(ref, got)[0]
    assert measured < 0.05 and abs(measured - report.error_rel) < 1e-6


def _without_zero_points(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for n in out.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            del n.input[2:]
    return out


@pytest.mark.parametrize("side", ["input", "output"])
def test_a_q_or_dq_without_zero_point_is_left_alone(side) -> None:
    """Without a zero point the integer type is not the uint8 a new QuantizeLinear would write by default (int8 data
    read by a zero-point-less DequantizeLinear, a reader's ``output_dtype``): the rule leaves such a Resize alone."""
    proto = _without_zero_points(_resize_net("asymmetric", "floor", (2, 2), [1, 3, 4, 4], side=side))
    if side == "input":  # int8 integers: the DequantizeLinear reads an int8 initializer
        q = next(n for n in proto.graph.node if n.op_type == "QuantizeLinear")
        proto.graph.node.remove(q)
        proto.graph.initializer.append(
            numpy_helper.from_array(np.arange(-24, 24, dtype=np.int8).reshape(1, 3, 4, 4), "xq")
        )
    assert _rewritten(proto)[1] == 0


def test_antialias_is_left_alone() -> None:
    """onnxruntime refuses nearest with antialias (opset 18): the rule must not turn that model into one it runs."""
    proto = _resize_net("asymmetric", "floor", (2, 2), [1, 3, 4, 4], side="both", opset=18)
    next(n for n in proto.graph.node if n.op_type == "Resize").attribute.append(helper.make_attribute("antialias", 1))
    assert _rewritten(proto, 18)[1] == 0


def test_an_empty_dynamic_dim_stays_empty() -> None:
    """A dynamic width of 0: the Reshape's target holds 0 there (allowzero), not the input's dim in its place."""
    proto = _resize_net("asymmetric", "floor", (2, 2), ["n", 4, "h", "w"], side="both", opset=14)
    written, count = _rewritten(proto, 14)
    assert count == 1
    x = np.zeros((1, 4, 3, 0), np.float32)
    assert _run(written, x).shape == _run(proto, x).shape == (1, 4, 6, 0)
