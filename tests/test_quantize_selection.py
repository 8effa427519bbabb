"""int8 of a model whose outputs come after a discontinuous selection (TopK, NonMaxSuppression, ArgMax, ...): the
output error (the SQNR floor, its fallback, the accuracy guard) is measured at the tensors that feed the selection,
not at the outputs, which jump when int8 noise flips a ranking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.cli import main
from graphopt.core.onnx_io import from_proto
from graphopt.quantize import quantize_model
from graphopt.quantize.driver import measured_points

K = 48


def _ranked_model(selection: bool = True) -> onnx.ModelProto:
    """x -> Conv -> scores (1x256), Conv -> features (1x256): TopK(scores, K) picks the features (GatherElements)
    in the scores' order, then a MatMul mixes them (a layer after the selection); int8 noise swaps near-tied scores,
    which moves whole features around in the output. ``selection=False``: scores + features, no selection."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w2")
    flat = numpy_helper.from_array(np.array([1, -1], np.int64), "flat")
    k = numpy_helper.from_array(np.array([K], np.int64), "k")
    wk = numpy_helper.from_array(rng.standard_normal((K, 16)).astype(np.float32), "wk")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv_scores", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c1", "flat"], ["scores"], name="flat_scores"),
        helper.make_node("Conv", ["x", "w2"], ["c2"], name="conv_features", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c2", "flat"], ["features"], name="flat_features"),
    ]
    if selection:
        nodes += [
            helper.make_node("TopK", ["scores", "k"], ["top", "idx"], name="topk", axis=1),
            helper.make_node("GatherElements", ["features", "idx"], ["gathered"], name="pick", axis=1),
            helper.make_node("MatMul", ["gathered", "wk"], ["picked"], name="weigh"),  # a layer after the selection
        ]
        outputs = [
            helper.make_tensor_value_info("picked", TensorProto.FLOAT, [1, 16]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, [1, K]),
        ]
    else:
        nodes.append(helper.make_node("Add", ["scores", "features"], ["picked"], name="sum"))
        outputs = [helper.make_tensor_value_info("picked", TensorProto.FLOAT, [1, 256])]
    graph = helper.make_graph(
        nodes,
        "ranked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        outputs,
        [w1, w2, flat, k, wk],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _feeds(n: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 8, 8, 8)).astype(np.float32)} for _ in range(n)]


def _sqnr(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    noise = sum(float(np.sum((g.astype(np.float64) - r) ** 2)) for r, g in zip(ref, got, strict=True))
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in ref)
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def _values(model: onnx.ModelProto, names: list[str], feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """The tensors ``names`` of ``model`` (graph outputs added where needed) per feed, under onnxruntime."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in have)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [sess.run(names, f) for f in feeds]


def _reader(model: onnx.ModelProto, node: str, slot: int) -> str:
    return next(n for n in model.graph.node if n.name == node).input[slot]


def test_measured_points_are_the_selection_inputs() -> None:
    m = _ranked_model()
    measured = measured_points(m)
    assert measured is not None
    assert {t for _, _, t, _ in measured.points} == {"scores", "features"}
    assert "TopK 'topk'" in measured.what
    assert measured_points(_ranked_model(selection=False)) is None  # no selection: the outputs, as before


def test_argmax_of_input_ids_is_not_a_selection() -> None:
    # an ArgMax over the model's own integer input (token ids) carries no quantization error: outputs as before
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [
        helper.make_node("ArgMax", ["ids"], ["pos"], name="argmax", axis=1, keepdims=0),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        helper.make_node("Gather", ["y", "pos"], ["picked"], name="pick", axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "ids",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 4]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4]),
        ],
        [helper.make_tensor_value_info("picked", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    assert measured_points(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])) is None


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
def test_ranking_flip_does_not_demote_the_layers(target: str) -> None:
    float_model = _ranked_model()
    feeds = _feeds()
    model = from_proto(float_model)
    report = quantize_model(model, feeds, target=target, config={"measure_speed": False})
    quantized = model.to_onnx()

    # the outputs after TopK are discontinuous: the int8 model's ranking differs, its picked features are far off
    ref_out = [v[0] for v in _values(float_model, ["picked"], feeds)]
    got_out = [v[0] for v in _values(quantized, ["picked"], feeds)]
    assert _sqnr(ref_out, got_out) < 10.0  # at the outputs the floor would fail (and demote every layer)

    # measured where the continuous part ends: the scores and features that TopK and GatherElements read
    assert report.measured_at is not None and "TopK 'topk'" in report.measured_at
    assert report.to_dict()["output_measured_at"] == report.measured_at
    names = [_reader(quantized, "topk", 0), _reader(quantized, "pick", 0)]
    ref = _values(float_model, ["scores", "features"], feeds)
    got = _values(quantized, names, feeds)
    pooled = _sqnr([a for b in ref for a in b], [a for b in got for a in b])
    # the reported figure is the worst of the pooled one and each measured tensor's own (driver.output_parts)
    each = [_sqnr([b[i] for b in ref], [b[i] for b in got]) for i in range(2)]
    expected = min([pooled, *each])
    assert report.sqnr_db > 20.0
    assert report.sqnr_db == pytest.approx(expected, abs=0.5)
    # nothing demoted: both convolutions stay int8, no floor warning; the Mul after the selection stays float (its
    # error would not be measured)
    assert {layer.name for layer in report.layers} >= {"conv_scores", "conv_features"}
    assert "weigh" not in {layer.name for layer in report.layers}
    assert not report.kept_float
    assert all(c.mode != "float" for c in report.choices)
    assert not any("SQNR" in w for w in report.warnings)


def test_without_selection_the_outputs_are_measured() -> None:
    float_model = _ranked_model(selection=False)
    feeds = _feeds()
    model = from_proto(float_model)
    report = quantize_model(model, feeds, target="ort", config={"measure_speed": False})
    assert report.measured_at is None and report.to_dict()["output_measured_at"] is None
    ref = [v[0] for v in _values(float_model, ["picked"], feeds)]
    got = [v[0] for v in _values(model.to_onnx(), ["picked"], feeds)]
    assert report.sqnr_db == pytest.approx(_sqnr(ref, got), abs=0.5)


def test_floor_warning_says_where_it_measured() -> None:
    # a floor above what int8 reaches: the warning names the measured tensors (the fallback is off)
    model = from_proto(_ranked_model())
    report = quantize_model(
        model, _feeds(), target="tensorrt", config={"measure_speed": False, "sqnr_floor_db": 200.0, "fallback": False}
    )
    note = next(w for w in report.warnings if "output SQNR" in w)
    assert "measured at the 2 tensors that feed TopK 'topk'" in note


def _if_model(float_output: bool) -> onnx.ModelProto:
    """Conv -> boxes/scores; an If (on a graph input flag) whose else branch runs NonMaxSuppression on them and returns
    the kept indices (or, ``float_output``, the scores reduced: a float result computed next to the selection)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((5, 3, 1, 1)).astype(np.float32), "w")
    split = numpy_helper.from_array(np.array([4, 1], np.int64), "split")
    perm_nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),  # 1x5x1xN
        helper.make_node("Squeeze", ["c", "axes2"], ["c3"], name="sq"),  # 1x5xN
        helper.make_node("Split", ["c3", "split"], ["b4", "s1"], name="split", axis=1),
        helper.make_node("Transpose", ["b4"], ["boxes"], name="tr", perm=[0, 2, 1]),  # 1xNx4
    ]
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes2")
    if float_output:
        body_nodes = [
            helper.make_node("NonMaxSuppression", ["boxes", "s1"], ["sel"], name="nms"),
            helper.make_node("ReduceSum", ["s1"], ["kept"], name="total", keepdims=0),
        ]
        out_type = TensorProto.FLOAT
    else:
        body_nodes = [helper.make_node("NonMaxSuppression", ["boxes", "s1"], ["kept"], name="nms")]
        out_type = TensorProto.INT64
    else_branch = helper.make_graph(body_nodes, "else", [], [helper.make_tensor_value_info("kept", out_type, None)])
    empty = helper.make_tensor("empty", out_type, [0], [])
    then_branch = helper.make_graph(
        [helper.make_node("Constant", [], ["none"], value=empty)],
        "then",
        [],
        [helper.make_tensor_value_info("none", out_type, None)],
    )
    nodes = [
        *perm_nodes,
        helper.make_node("If", ["flag"], ["out"], name="maybe_nms", then_branch=then_branch, else_branch=else_branch),
    ]
    graph = helper.make_graph(
        nodes,
        "nms",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 16]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("out", out_type, None)],
        [w, split, axes],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_if_around_nms_is_a_selection_and_a_float_result_is_not() -> None:
    measured = measured_points(_if_model(float_output=False))
    assert measured is not None
    assert "NonMaxSuppression 'nms' inside If 'maybe_nms'" in measured.what
    assert {t for _, _, t, _ in measured.points} == {"boxes", "s1"}  # what the If's body reads from outside
    # an If (or a decoder Loop) returning float data is measured at its outputs, as before
    assert measured_points(_if_model(float_output=True)) is None


def test_cli_json_says_where_it_measured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:

    src, out = tmp_path / "ranked.onnx", tmp_path / "ranked.int8.onnx"
    onnx.save(_ranked_model(), src)
    rc = main(["optimize", str(src), "--quantize", "int8", "--calib-random", "4", "-o", str(out), "--json"])
    assert rc in (0, None)
    q = json.loads(capsys.readouterr().out)["quantization"]
    assert "TopK 'topk'" in q["output_measured_at"]
    assert q["output_sqnr_db"] > 20.0 and not q["kept_float"]
    assert {la["name"] for la in q["layers"]} >= {"conv_scores", "conv_features"}


def test_max_error_guard_measures_before_the_selection() -> None:
    # --max-error 0.05: met by the all-int8 model at the scores/features (about 0.01), never at the ranked outputs
    model = from_proto(_ranked_model())
    report = quantize_model(model, _feeds(), target="ort", config={"measure_speed": False, "max_error": 0.05})
    assert report.measured_at is not None
    assert report.error_rel <= 0.05
    assert not report.kept_float and all(c.mode != "float" for c in report.choices)
    assert not any("not reached" in w for w in report.warnings)
