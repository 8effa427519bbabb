"""A Concat of far-apart ranges (a YOLO head's boxes in pixels and sigmoid class scores): int8 must not round the
narrow input away under one shared scale (``choice.CONCAT_MIN_LEVELS``), and the output error must not hide a dead
slice behind the rest's energy (``driver.output_parts``). Small graphs, real onnxruntime, held-out feeds."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.quantize import choice, driver
from graphopt.tools import runtime

N = 64  # anchors: an 8x8 feature map


def _head(gain: float, *, transpose: bool = True) -> onnx.ModelProto:
    """A YOLO-like head: x [1, 3, 8, 8] -> Conv + Relu (8 channels) -> a box Conv (4 channels, Relu, times ``gain``:
    pixels) and a class Conv (2 channels, Sigmoid: scores in 0..1) -> Reshape each to [1, C, 64] -> Concat on axis 1
    -> [1, 6, 64], Transposed to [1, 64, 6] as the graph output (``transpose``), or the output itself."""
    rng = np.random.default_rng(0)
    wf = (rng.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32)
    wb = (np.abs(rng.standard_normal((4, 8, 1, 1))) * 0.3 * gain).astype(np.float32)
    wc = (rng.standard_normal((2, 8, 1, 1)) * 0.8).astype(np.float32)
    bc = np.array([-0.5, 0.5], np.float32)
    inits = [
        numpy_helper.from_array(a, n)
        for a, n in (
            (wf, "wf"),
            (wb, "wb"),
            (wc, "wc"),
            (bc, "bc"),
            (np.array([1, 4, N], np.int64), "sb"),
            (np.array([1, 2, N], np.int64), "sc"),
        )
    ]
    nodes = [
        helper.make_node("Conv", ["x", "wf"], ["f"], name="conv_f", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["f"], ["fr"], name="relu_f"),
        helper.make_node("Conv", ["fr", "wb"], ["b"], name="conv_box"),
        helper.make_node("Relu", ["b"], ["br"], name="relu_box"),
        helper.make_node("Reshape", ["br", "sb"], ["boxes"], name="reshape_box"),
        helper.make_node("Conv", ["fr", "wc", "bc"], ["c"], name="conv_cls"),
        helper.make_node("Sigmoid", ["c"], ["cs"], name="sigmoid_cls"),
        helper.make_node("Reshape", ["cs", "sc"], ["scores"], name="reshape_cls"),
        helper.make_node("Concat", ["boxes", "scores"], ["cat"], name="head_concat", axis=1),
    ]
    if transpose:
        nodes.append(helper.make_node("Transpose", ["cat"], ["y"], name="head_transpose", perm=[0, 2, 1]))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N, 6])
    else:
        nodes[-1].output[0] = "y"
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, N])
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])], [out], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _quantize(model: onnx.ModelProto, target: str = "ort", **options: object) -> tuple[onnx.ModelProto, object]:
    report: list = []
    q = graphopt.optimize(
        model,
        quantize="int8",
        target=target,
        calibration=_feeds(100, 4),
        quantize_options={"cache": False, "measure_speed": False, **options},
        report=report,
    )
    return q, report[0].quantization


def _slices(model: onnx.ModelProto, quantized: onnx.ModelProto, transpose: bool = True) -> tuple[float, float]:
    """Held-out SQNR (dB) of the boxes' slice and of the scores' slice of the output, over 8 unseen feeds."""
    feeds = _feeds(0, 8)
    ref_s, q_s = runtime.session(model), runtime.session(quantized)
    ref = np.stack([ref_s.run(None, f)[0] for f in feeds])
    got = np.stack([q_s.run(None, f)[0] for f in feeds])
    if transpose:  # [8, 1, 64, 6] -> [8, 1, 6, 64]
        ref, got = ref.transpose(0, 1, 3, 2), got.transpose(0, 1, 3, 2)

    def sqnr(a: np.ndarray, b: np.ndarray) -> float:
        a, b = a.astype(np.float64), b.astype(np.float64)
        return float(10 * np.log10(np.sum(a**2) / max(np.sum((a - b) ** 2), 1e-30)))

    return sqnr(ref[:, :, :4], got[:, :, :4]), sqnr(ref[:, :, 4:], got[:, :, 4:])


def _choice(report: object, name: str) -> choice.Choice:
    return {c.name: c for c in report.choices}[name]  # type: ignore[attr-defined]


def test_yolo_head_keeps_the_scores() -> None:
    """Boxes up to ~hundreds of pixels and scores in 0..1 through one Concat, then a Transpose to the output: one
    shared scale would leave the scores under one level. The Concat is kept float and says why; the held-out scores
    keep their precision. Kept static (the rule off), the scores are gone: what the rule prevents."""
    model = _head(300.0)
    q, rep = _quantize(model)
    cat = _choice(rep, "head_concat")
    assert cat.mode == "float", cat.reason
    assert "levels" in cat.reason and "differ" in cat.reason and "input 2" in cat.reason, cat.reason
    boxes, scores = _slices(model, q)
    assert boxes > 30.0 and scores > 30.0, (boxes, scores)
    assert not [la.name for la in rep.layers if la.name == "head_concat"]  # no int8 Concat


def test_yolo_head_without_the_rule_loses_the_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule off (and the floor's fallback off): the Concat shares one scale, the scores' slice is near 0 dB on
    held-out feeds, and the reported output error is the scores' slice's (through the Transpose), not the pooled
    figure the boxes' energy makes."""
    monkeypatch.setattr(choice, "CONCAT_MIN_LEVELS", 0)
    model = _head(300.0)
    q, rep = _quantize(model, fallback=False)
    assert _choice(rep, "head_concat").mode == "static"
    boxes, scores = _slices(model, q)
    assert scores < 10.0 < boxes, (boxes, scores)
    assert rep.sqnr_db < 10.0, rep.sqnr_db
    assert rep.error_part is not None and "y[:, :, 4:6]" in rep.error_part, rep.error_part
    assert rep.pooled_sqnr_db is not None and rep.pooled_sqnr_db > 25.0, rep.pooled_sqnr_db


def test_floor_fallback_sees_the_dead_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule off, the fallback on: the scores' slice below the SQNR floor makes the fallback keep layers float
    until the scores come back (pooled, the output would look fine and nothing would be demoted)."""
    monkeypatch.setattr(choice, "CONCAT_MIN_LEVELS", 0)
    model = _head(300.0)
    q, rep = _quantize(model)
    _, scores = _slices(model, q)
    assert scores > 15.0, scores
    assert rep.sqnr_db >= driver.SQNR_FLOOR_DB, rep.sqnr_db


def test_max_error_counts_the_worst_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """--max-error 0.05 with the rule off: the guard's error is the scores' slice's, so it demotes until that slice
    is within 5 %."""
    monkeypatch.setattr(choice, "CONCAT_MIN_LEVELS", 0)
    model = _head(300.0)
    q, rep = _quantize(model, max_error=0.05)
    _, scores = _slices(model, q)
    assert rep.error_rel <= 0.05 and scores > 20.0, (rep.error_rel, scores)


def test_concat_straight_to_the_output() -> None:
    """The same head without the Transpose: the Concat's output is the graph output (float either way) and the
    parts are the Concat's inputs' slices on axis 1."""
    model = _head(300.0, transpose=False)
    q, rep = _quantize(model)
    assert _choice(rep, "head_concat").mode == "float"
    boxes, scores = _slices(model, q, transpose=False)
    assert scores > 30.0, scores
    m = from_proto(model)
    infer_shapes(m)
    parts = driver.output_parts(m, None)
    assert [(p.axis, p.start, p.stop) for p in parts] == [(1, 0, 4), (1, 4, 6)]


def test_parts_through_transpose() -> None:
    """The Concat's axis 1 is the output's axis 2 after Transpose [0, 2, 1]."""
    m = from_proto(_head(1.0))
    infer_shapes(m)
    parts = driver.output_parts(m, None)
    assert [(p.index, p.axis, p.start, p.stop) for p in parts] == [(0, 2, 0, 4), (0, 2, 4, 6)]
    assert "head_concat" in parts[1].label


def test_tensorrt_keeps_the_scores() -> None:
    """Target tensorrt quantizes no Concat (Q/DQ on the inputs of Conv/MatMul/Gemm and residual Adds only): no shared
    scale, the scores keep their precision."""
    model = _head(300.0)
    q, _ = _quantize(model, target="tensorrt")
    _, scores = _slices(model, q)
    assert scores > 30.0, scores


def test_fpn_concat_of_close_ranges_stays_static() -> None:
    """Boxes and scores within a few times of each other (gain 0.2): the Concat keeps one shared scale (the rule does
    not fire where no input is crushed)."""
    _, rep = _quantize(_head(0.2))
    cat = _choice(rep, "head_concat")
    assert cat.mode == "static" and "levels" not in cat.reason, cat.reason


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gain=st.floats(min_value=1.0, max_value=3000.0))
def test_small_branch_survives_any_gain(gain: float) -> None:
    """Whatever the ratio of the two branches' ranges, the small branch's held-out SQNR after int8 stays >= 20 dB
    (one shared scale gives it 255/ratio levels: at a ratio of 8, 32 levels, ~30 dB; beyond, the Concat is float)."""
    model = _head(gain)
    q, _ = _quantize(model)
    _, scores = _slices(model, q)
    assert scores >= 20.0, (gain, scores)


def test_static_choice_is_caught_by_the_floor() -> None:
    """--layer-choice static quantizes every planned layer, this Concat with one shared scale too (the levels rule is
    the automatic choice's); the scores' slice then sets the output error, and the SQNR floor's fallback brings it
    back."""
    model = _head(300.0)
    q, rep = _quantize(model, choice="static")
    _, scores = _slices(model, q)
    assert scores > 15.0, scores
    assert rep.sqnr_db >= driver.SQNR_FLOOR_DB and rep.kept_float, (rep.sqnr_db, rep.kept_float)
