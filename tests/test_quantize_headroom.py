"""Headroom on the ranges of tensors calibration saw few values of (issue 16): pooled features and fully connected
activations get their calibrated range widened, so that new inputs whose strongest features exceed the few calibrated
values are not clipped there. Small graphs, real onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.errors import GraphoptError
from graphopt.quantize import calibration as calib
from graphopt.quantize.driver import output_error, quantize_model
from graphopt.tools import runtime


def _pooled() -> onnx.ModelProto:
    """x [1, 8, 64, 64] (32768 values a feed) -> Neg n -> Neg m -> GlobalAveragePool p [1, 8, 1, 1] (8 values) ->
    Relu r: three maps, then the pooled features."""
    graph = helper.make_graph(
        [
            helper.make_node("Neg", ["x"], ["n"]),
            helper.make_node("Neg", ["n"], ["m"]),
            helper.make_node("GlobalAveragePool", ["m"], ["p"]),
            helper.make_node("Relu", ["p"], ["r"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 64, 64])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 8, 1, 1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_headroom_widens_only_the_tensors_seen_few_times() -> None:
    rng = np.random.default_rng(0)
    feeds = [{"x": (rng.standard_normal((1, 8, 64, 64)) + rng.standard_normal((1, 8, 1, 1))).astype(np.float32)}]
    feeds.append({"x": -feeds[0]["x"]})  # p takes both signs
    c = calib.collect(from_proto(_pooled()), ["x", "n", "m", "p", "r"], feeds, cache=False)
    assert c.stats["x"].count == 2 * 8 * 64 * 64 and c.stats["p"].count == 16
    plain = c.ranges("minmax")
    wide = c.ranges("minmax", headroom=0.5)
    assert wide["x"] == plain["x"]  # 65536 values: the calibrated range stands
    lo, hi = plain["p"]
    assert lo < 0 < hi and wide["p"] == pytest.approx((1.5 * lo, 1.5 * hi))
    assert plain["r"][0] == 0.0 and wide["r"] == pytest.approx((0.0, 1.5 * plain["r"][1]))  # from 0 stays from 0
    assert c.ranges("minmax", headroom=0.5, few=8) == plain  # 16 values > few: no headroom
    assert calib.widened(0.5, 2.0, 0.5) == (0.5, 3.0)  # a range above zero keeps its low end


def test_no_headroom_when_every_tensor_is_small() -> None:
    """A model whose tensors are all small (oskut-scads: a word segmenter on 32x21 inputs, where widening 435 of its
    1039 tensors cost 28 dB on held-out inputs): no tensor is sparse next to the others, nothing is widened; the
    pooled features are once the maps around them are FEW_FRACTION times larger."""
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 8, 4, 4)).astype(np.float32)} for _ in range(2)]
    c = calib.collect(from_proto(_pooled_of(4)), ["x", "n", "m", "p", "r"], feeds, cache=False)
    assert all(s.count <= calib.FEW_VALUES for s in c.stats.values())  # every tensor "few" by count alone
    assert c.ranges("minmax", headroom=0.5) == c.ranges("minmax")


def _pooled_of(side: int) -> onnx.ModelProto:
    model = _pooled()
    for v in (*model.graph.input,):
        v.type.tensor_type.shape.dim[2].dim_value = side
        v.type.tensor_type.shape.dim[3].dim_value = side
    return model


def _classifier(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv 1x1 -> Relu -> three 1x1 MaxPools -> GlobalAveragePool -> Flatten -> Gemm -> Relu -> Gemm: a classifier's
    head, whose pooled features and hidden layer calibration sees a few hundred values of."""
    w1 = rng.standard_normal((32, 16, 1, 1)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((64, 32)).astype(np.float32) * 0.3
    w3 = rng.standard_normal((4, 64)).astype(np.float32) * 0.3
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"]),
        helper.make_node("Relu", ["c"], ["cr0"]),
        # more maps than head tensors, as in a real classifier (the pooled features are sparse next to them); 1x1
        # max pools add maps and no rounding
        *[helper.make_node("MaxPool", [f"cr{i}"], [f"cr{i + 1}"], kernel_shape=[1, 1]) for i in range(3)],
        helper.make_node("GlobalAveragePool", ["cr3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w2"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w3"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _quantized(proto: onnx.ModelProto, feeds, **config):
    model = from_proto(proto)
    report = quantize_model(model, feeds, "ort", {"cache": False, "measure_speed": False, **config})
    return model.to_onnx(), report


def _error(a: onnx.ModelProto, b: onnx.ModelProto, feeds) -> float:
    sa, sb = runtime.session(a), runtime.session(b)
    return output_error([sa.run(None, f) for f in feeds], [sb.run(None, f) for f in feeds])[0]


def test_headroom_keeps_new_inputs_strongest_features_from_clipping() -> None:
    rng = np.random.default_rng(3)
    proto = _classifier(rng)

    def feed(gain: float) -> dict[str, np.ndarray]:
        # per-channel offsets: each input excites some features more than others, as images do
        x = rng.standard_normal((1, 16, 32, 32)) + 2.0 * rng.standard_normal((1, 16, 1, 1))
        return {"x": (gain * x).astype(np.float32)}

    calibration = [feed(1.0) for _ in range(4)]
    held_out = [feed(1.3) for _ in range(4)]  # stronger than any calibration input
    tight, tight_report = _quantized(proto, calibration, headroom=0.0)
    wide, wide_report = _quantized(proto, calibration)  # the default headroom
    modes = lambda r: {la.name: la.mode for la in r.layers}  # noqa: E731
    assert modes(wide_report) == modes(tight_report)  # the per-layer choice judges by the calibrated ranges
    assert sum(la.mode == "static" for la in wide_report.layers) >= 2
    assert _error(proto, wide, held_out) < 0.7 * _error(proto, tight, held_out)


@pytest.mark.parametrize(
    ("option", "value"), [("headroom", -0.1), ("headroom", float("nan")), ("few_values", -1), ("few_values", 2.5)]
)
def test_bad_headroom_options_are_refused(option: str, value: object) -> None:
    feeds = [{"x": np.ones((1, 8, 64, 64), np.float32)}]
    with pytest.raises(GraphoptError, match=option):
        quantize_model(from_proto(_pooled()), feeds, "ort", {"cache": False, option: value})
