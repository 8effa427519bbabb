"""int8 for onnxruntime: a PRelu with one slope per channel between quantized tensors runs on integers
(``transform._integer_prelus``): ``Max(Q_y(x), Q_y(slope * x))`` with the product a depthwise 1x1 QLinearConv (``Min``
where every slope is at least 1); a slope some channels above 1 and some below, one value, or no channel's stays float.

Checked under onnxruntime on every uint8 code of the input against the float island it replaces (DQ -> PRelu -> Q):
the same integers, off by one code only where the product lands on a rounding tie; whole nets keep onnxruntime's
channels-last region around the form and the float island's accuracy.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.onnx_io import from_proto
from graphopt.quantize import output_error, quantize_model
from graphopt.quantize.analysis import Params
from graphopt.quantize.transform import _insert_qdq, _integer_prelus, prelu_channel_slope
from graphopt.tools import runtime
from tests.conftest import ran_nodes

CONFIG = {"cache": False, "fallback": False, "measure_speed": False, "choice": "static"}


def _island(slope: np.ndarray, shape: list[int], px: Params, py: Params, rewrite: bool = True):
    """x -> Q/DQ(px) -> PRelu(slope) -> Q/DQ(py) -> Identity -> out (the float island), written on integers by
    ``_integer_prelus`` when ``rewrite``; returns the model and the op types of its graph."""
    graph = helper.make_graph(
        [
            helper.make_node("PRelu", ["x", "slope"], ["y"], name="act"),
            helper.make_node("Identity", ["y"], ["out"], name="read"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)],  # y itself is no graph output
        [numpy_helper.from_array(slope.astype(np.float32), "slope")],
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    g = model.graph
    x, y = g.inputs[0], next(n for n in g if n.op_type == "Identity").inputs[0]
    _insert_qdq(g, x, px)
    _insert_qdq(g, y, py)
    if rewrite:
        _integer_prelus(g)
    return model.to_onnx(), [n.op_type for n in g]


def _codes(px: Params, shape: list[int]) -> np.ndarray:
    """Every uint8 code of the input, dequantized, in every channel (the last axes hold 256 values or more)."""
    per = int(np.prod(shape[2:]))
    codes = np.resize(np.arange(256), per).astype(np.float64)
    x = (codes - px.zero_point) * np.float32(px.scale)
    return np.broadcast_to(x.reshape(1, 1, *shape[2:]), shape).astype(np.float32).copy()


SLOPES = {
    "at most 1": st.floats(-1.5, 1.0),
    "at least 1": st.floats(1.0, 3.0),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(SLOPES)),
    st.integers(2, 6),
    st.sampled_from([[16, 16], [256]]),
    st.data(),
)
def test_the_integer_form_is_the_float_island_on_every_code(kind, channels, spatial, data) -> None:
    slope = np.array(data.draw(st.lists(SLOPES[kind], min_size=channels, max_size=channels)), np.float32)
    if np.all(slope == slope[0]):
        slope[0] = 0.5 if kind == "at most 1" else 2.0  # one value for every channel is LeakyRelu's, not this form's
        slope[-1] = 0.25 if kind == "at most 1" else 1.5
    px = Params(data.draw(st.floats(0.002, 0.5)), data.draw(st.integers(0, 255)), False)
    shared = data.draw(st.booleans())
    py = px if shared else Params(data.draw(st.floats(0.002, 0.5)), data.draw(st.integers(0, 255)), False)
    shape = [1, channels, *spatial]
    model, ops = _island(slope.reshape(channels, *([1] * len(spatial))), shape, px, py)
    op = "Max" if kind == "at most 1" else "Min"
    assert "PRelu" not in ops and op in ops and ops.count("Conv") == 1, ops
    same = (np.float32(py.scale), py.zero_point) == (np.float32(px.scale), px.zero_point)
    assert ops.count("QuantizeLinear") == (2 if same else 3), ops  # the input requantized only where py differs
    reference, _ = _island(slope.reshape(channels, *([1] * len(spatial))), shape, px, py, rewrite=False)
    x = _codes(px, shape)
    want = runtime.session(reference, optimization="disabled").run(None, {"x": x})[0]
    # the product's real value in output steps: a rounding tie may go either way in float32
    xs = x.astype(np.float64) * slope.astype(np.float64).reshape(1, channels, *([1] * len(spatial)))
    frac = np.abs(xs / np.float32(py.scale)) % 1.0
    for level in ("all", "disabled"):
        got = runtime.session(model, optimization=level).run(None, {"x": x})[0]
        steps = np.rint((got.astype(np.float64) - want) / np.float32(py.scale))
        assert np.all(np.abs(steps) <= 1), level
        assert np.all((steps == 0) | (np.abs(frac - 0.5) < 1e-3)), level  # off by one code at ties only


@pytest.mark.parametrize(
    "slope,expected",
    [
        (np.array([0.25, -0.5, 0.0, 1.0]), "Max"),  # at most 1: negative and zero slopes included
        (np.array([1.0, 1.5, 2.0, 3.0]), "Min"),  # at least 1
        (np.array([0.25, -0.5, 1.25, 0.5]), "PRelu"),  # one channel above 1, others below: neither
        (np.full(4, 0.25), "PRelu"),  # one value: LeakyRelu's (decompose-prelu writes it)
    ],
)
def test_max_min_or_left_alone_by_the_slopes(slope, expected) -> None:
    px, py = Params(0.05, 128, False), Params(0.03, 60, False)
    _, ops = _island(slope.astype(np.float32).reshape(4, 1, 1), [1, 4, 8, 8], px, py)
    assert expected in ops and ("PRelu" in ops) == (expected == "PRelu"), ops
    assert ("Conv" in ops) == (expected != "PRelu"), ops


@pytest.mark.parametrize(
    "slope_shape,x_shape",
    [
        ((8,), [1, 4, 8, 8]),  # along the last axis: no channel's
        ((4, 8, 8), [1, 4, 8, 8]),  # elementwise
        ((4,), [2, 4]),  # a dense layer's output: no Conv reads rank 2
    ],
)
def test_a_slope_of_no_channel_is_left_alone(slope_shape, x_shape) -> None:
    rng = np.random.default_rng(0)
    slope = rng.uniform(-0.5, 0.5, slope_shape).astype(np.float32)
    _, ops = _island(slope, x_shape, Params(0.05, 128, False), Params(0.03, 60, False))
    assert "PRelu" in ops and "Max" not in ops and "Conv" not in ops, ops


def test_prelu_channel_slope_reads_the_channel_axis() -> None:
    for shape in ((1, 4, 1, 1), (4, 1, 1)):
        proto = helper.make_model(
            helper.make_graph(
                [helper.make_node("PRelu", ["x", "s"], ["y"])],
                "g",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
                [numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(shape) / 4, "s")],
            ),
            opset_imports=[helper.make_opsetid("", 13)],
        )
        node = next(iter(from_proto(proto).graph))
        np.testing.assert_array_equal(prelu_channel_slope(node), np.arange(4) / 4)


def _prelu_net(slope: np.ndarray, seed: int = 0) -> onnx.ModelProto:
    """Conv 4->C -> PRelu -> MaxPool -> Conv C->C -> PRelu -> Conv C->4 (mtcnn's pattern), NCHW."""
    rng = np.random.default_rng(seed)
    c = slope.size
    inits: list[onnx.TensorProto] = []

    def const(name: str, a) -> str:
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    s = const("slope", slope.reshape(c, 1, 1))
    nodes = [
        helper.make_node(
            "Conv", ["input", const("w0", rng.normal(size=(c, 4, 3, 3)) * 0.4), const("b0", rng.normal(size=c))], ["c0"]
        ),  # noqa: E501
        helper.make_node("PRelu", ["c0", s], ["p0"], name="prelu0"),
        helper.make_node("MaxPool", ["p0"], ["m0"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node(
            "Conv",
            ["m0", const("w1", rng.normal(size=(c, c, 3, 3)) * 0.2), const("b1", rng.normal(size=c))],
            ["c1"],
            pads=[1] * 4,
        ),  # noqa: E501
        helper.make_node("PRelu", ["c1", s], ["p1"], name="prelu1"),
        helper.make_node("Conv", ["p1", const("w2", rng.normal(size=(4, c, 1, 1)) * 0.3)], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "prelu_net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 26, 26])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 12, 12])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def _feeds(n: int = 4, seed: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.uniform(-1, 1, (1, 4, 26, 26)).astype(np.float32)} for _ in range(n)]


@pytest.fixture
def float_prelu(monkeypatch):
    """The driver's transform options with the integer PRelu off (the float island, for comparison)."""
    from graphopt.quantize import transform

    monkeypatch.setattr(transform, "Options", functools.partial(transform.Options, integer_prelu=False))


def _quantized(proto: onnx.ModelProto, target: str = "ort", **config) -> onnx.ModelProto:
    model = from_proto(proto)
    quantize_model(model, _feeds(), target, {**CONFIG, **config})
    return model.to_onnx()


SLOPE = np.array([0.25, -0.5, 0.0, 0.75, -0.1, 0.6, 1.0, 0.05], np.float32)


def test_a_prelu_net_runs_on_integers_in_the_channels_last_region(tmp_path) -> None:
    """Both PRelus (the first before a MaxPool) run as a depthwise QLinearConv and a uint8 Max; onnxruntime keeps
    one NHWC region from the first QLinearConv to the last (no Transpose, no float op in between, the MaxPool
    NhwcMaxPool)."""
    proto = _prelu_net(SLOPE)
    quantized = _quantized(proto)
    assert not any(n.op_type == "PRelu" for n in quantized.graph.node)
    ran = [op for op, _ in ran_nodes(quantized, tmp_path / "optimized.onnx")]
    assert ran.count("QLinearConv") == 5 and ran.count("Max") == 2, ran  # 3 layers + 2 slopes
    first = ran.index("QLinearConv")
    last = len(ran) - 1 - ran[::-1].index("QLinearConv")
    inside = ran[first : last + 1]
    assert set(inside) <= {"QLinearConv", "Max", "NhwcMaxPool", "DequantizeLinear", "QuantizeLinear"}, inside
    assert "NhwcMaxPool" in inside and "Transpose" not in inside, inside
    feeds = _feeds(6, seed=11)
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(quantized).run(None, f) for f in feeds]
    assert output_error(ref, got)[0] < 0.05


def test_the_integer_form_keeps_the_float_islands_accuracy(monkeypatch) -> None:
    """The same calibration with the float island (integer_prelu off) and with the integer form: the same integers
    but for rounding ties, so the outputs agree far inside int8's own error."""
    proto = _prelu_net(SLOPE, seed=2)
    integer = _quantized(proto)
    from graphopt.quantize import transform

    monkeypatch.setattr(transform, "Options", functools.partial(transform.Options, integer_prelu=False))
    island = _quantized(proto)
    assert sum(n.op_type == "PRelu" for n in island.graph.node) == 2
    feeds = _feeds(6, seed=12)
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    a = [runtime.session(integer).run(None, f) for f in feeds]
    b = [runtime.session(island).run(None, f) for f in feeds]
    between, to_fp32 = output_error(b, a)[0], output_error(ref, b)[0]
    assert between < 0.1 * to_fp32, (between, to_fp32)
    assert output_error(ref, a)[0] < 1.1 * to_fp32


def test_mixed_slopes_stay_float(tmp_path) -> None:
    """A slope above 1 in one channel and below in the others: the PRelus stay float islands (no Max, no Min)."""
    slope = SLOPE.copy()
    slope[3] = 1.25
    quantized = _quantized(_prelu_net(slope))
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("PRelu") == 2 and "Max" not in ops and "Min" not in ops, ops


def test_an_excluded_prelu_stays_float() -> None:
    quantized = _quantized(_prelu_net(SLOPE), exclude=["prelu1"])
    names = [n.name for n in quantized.graph.node if n.op_type in ("PRelu", "Conv") and "prelu" in n.name]
    assert names == ["prelu0_slope_Conv", "prelu1"], names  # (excluded_stay_float guards prelu1 with a Max of its own)


def test_opset_12_keeps_the_float_island() -> None:
    """The slope weights need a per-axis DequantizeLinear (opset 13): a model left at opset 12 (per-tensor weights,
    no upgrade) keeps the float PRelu; per channel (upgraded to 13) it runs on integers."""
    proto = _prelu_net(SLOPE)
    proto.opset_import[0].version = 12
    kept = _quantized(proto, per_channel=False, upgrade_opset=False)
    assert next(o.version for o in kept.opset_import if o.domain in ("", "ai.onnx")) == 12
    ops = [n.op_type for n in kept.graph.node]
    assert ops.count("PRelu") == 2 and "Max" not in ops, ops
    runtime.session(kept)
    upgraded = _quantized(proto)
    assert [n.op_type for n in upgraded.graph.node].count("Max") == 2


def test_tensorrt_keeps_prelu() -> None:
    """TensorRT has a PRelu of its own, and its Q/DQ rules have no uint8 Max: the target's graph keeps PRelu."""
    quantized = _quantized(_prelu_net(SLOPE), target="tensorrt")
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("PRelu") == 2 and "Max" not in ops, ops


def test_optimize_int8_writes_no_float_prelu_island() -> None:
    """Through graphopt.optimize: the first Conv is an image stem the speed rule keeps float, with its PRelu and
    MaxPool (the emission step's decompose-prelu writes that PRelu); the second PRelu, between Q/DQ pairs, runs on
    integers: no float island left for decompose-prelu there."""
    out = graphopt.optimize(_prelu_net(SLOPE), quantize="int8", calibration=_feeds())
    ops = [n.op_type for n in out.graph.node]
    assert "PRelu" not in ops and ops.count("Min") == 1 and ops.count("Max") == 1, ops
