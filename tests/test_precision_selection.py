"""Half precision measures its output error before a selection op (TopK, NonMaxSuppression...), as int8 does: an
fp16 rounding that flips a ranking on a near-tie is not an error of the converted layers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.quantize.driver import KEPT_FLOAT_AFTER, measured_points
from graphopt.quantize.precision import convert_precision

F = TensorProto.FLOAT
K, D, N = 8, 16, 64


def _model(nodes, outputs, inits):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [1, N])], outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _ranked():
    """x @ eye -> Relu -> @ w -> scores -> TopK -> Gather of a table's rows: the K scores differ by 1e-6/mean(x)
    relative (column j of w is 1/N + j*1e-6), which fp16 rounds away: the fp16 scores tie and TopK breaks the ties
    by index, while the fp32 ranking is j descending."""
    rng = np.random.default_rng(0)
    w = np.ones((N, K), np.float32) / N + np.arange(K, dtype=np.float32) * 1e-6
    table = rng.standard_normal((K, D)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "eye"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w"], ["scores"], name="mm"),
        helper.make_node("TopK", ["scores", "k"], ["vals", "idx"], name="topk", axis=-1),
        helper.make_node("Gather", ["table", "idx"], ["picked"], name="pick", axis=0),
    ]
    inits = [
        numpy_helper.from_array(np.eye(N, dtype=np.float32), "eye"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.array([K], np.int64), "k"),
    ]
    proto = _model(nodes, [helper.make_tensor_value_info("picked", F, [1, K, D])], inits)
    feeds = [{"x": np.full((1, N), 1.0, np.float32)}, {"x": np.full((1, N), 2.0, np.float32)}]
    return proto, feeds


def _plain():
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"])]
    w = rng.standard_normal((N, D)).astype(np.float32)
    proto = _model(nodes, [helper.make_tensor_value_info("y", F, None)], [numpy_helper.from_array(w, "w")])
    feeds = [{"x": rng.standard_normal((1, N)).astype(np.float32)} for _ in range(2)]
    return proto, feeds


def _convert(proto, feeds, **cfg):
    model = from_proto(proto)
    cfg.setdefault("latency_runs", 0)
    report = convert_precision(model, feeds, "ort", cfg)
    return model.to_onnx(), report


def _run(proto, feed):
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    want = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    feed = {k: v.astype(np.float16) if want[k] == TensorProto.FLOAT16 else v for k, v in feed.items()}
    return [np.asarray(v, np.float32) for v in sess.run(None, feed)]


def _outputs_error(a, b, feeds):
    ref = np.concatenate([_run(a, f)[0].ravel() for f in feeds])
    got = np.concatenate([_run(b, f)[0].ravel() for f in feeds])
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def _reports_at_the_topk_input(**cfg) -> onnx.ModelProto:
    proto, feeds = _ranked()
    out, report = _convert(proto, feeds, kernels="all", **cfg)
    assert report.converted >= 3  # the MatMuls and the Relu compute in fp16
    # the fp16 model's own outputs are far from fp32's: its TopK ranks the rows another way
    assert _outputs_error(proto, out, feeds) > 0.5
    # ... but the converted layers are close: measured at the scores the TopK reads
    assert report.measured_at is not None and "TopK 'topk'" in report.measured_at
    assert KEPT_FLOAT_AFTER not in report.measured_at  # the int8 driver's clause: fp16 converts that part too
    assert report.to_dict()["output_measured_at"] == report.measured_at
    assert 0 < report.error_rel < 1e-3, report.error_rel
    assert report.cosine_min > 0.999999
    assert not report.warnings
    return out


def _topk_input_type(out: onnx.ModelProto) -> int:
    topk = next(n for n in out.graph.node if n.name == "topk")
    inferred = onnx.shape_inference.infer_shapes(out).graph.value_info
    return {v.name: v.type.tensor_type.elem_type for v in inferred}[topk.input[0]]


@pytest.mark.parametrize("keep_io_types", [True, False])
def test_fp16_measures_before_topk_kept_fp32(keep_io_types):
    out = _reports_at_the_topk_input(keep_io_types=keep_io_types)
    assert _topk_input_type(out) == TensorProto.FLOAT  # TopK is on the block list: it reads a Cast to fp32


def test_fp16_measures_before_topk_converted():
    # the TopK converted: it reads a float16 tensor, so the measured output is declared float16 (onnxruntime
    # refuses one declared float there) and compared in float32
    out = _reports_at_the_topk_input(allow_ops=["TopK"])
    assert _topk_input_type(out) == TensorProto.FLOAT16


def test_no_selection_is_measured_at_the_outputs_as_before():
    proto, feeds = _plain()
    assert measured_points(proto) is None
    out, report = _convert(proto, feeds, kernels="all")
    assert report.measured_at is None and report.to_dict()["output_measured_at"] is None
    # the figure is the outputs' own: the relative L2 error over both batches, in float32 as before
    ref = [_run(proto, f)[0] for f in feeds]
    got = [_run(out, f)[0] for f in feeds]
    noise = sum(float(np.sum(np.square(g - r))) for r, g in zip(ref, got, strict=True))
    signal = sum(float(np.sum(np.square(r, dtype=np.float64))) for r in ref)
    assert report.error_rel > 0
    assert abs(report.error_rel - (noise / signal) ** 0.5) < 1e-6 * report.error_rel + 1e-12


def test_cli_says_where_fp16_error_is_measured(tmp_path):
    proto, _ = _ranked()
    src, out = tmp_path / "ranked.onnx", tmp_path / "ranked.fp16.onnx"
    onnx.save(proto, src)
    args = ["optimize", str(src), "-o", str(out), "--precision", "fp16", "--precision-kernels", "all"]
    args += ["--calib-random", "2"]
    text = subprocess.run([sys.executable, "-m", "graphopt", *args], capture_output=True, text=True)
    assert text.returncode == 0, text.stderr
    assert "(output error measured at the 1 tensor that feeds TopK" in text.stdout + text.stderr
    js = subprocess.run([sys.executable, "-m", "graphopt", *args, "--json"], capture_output=True, text=True)
    assert js.returncode == 0, js.stderr
    p = json.loads(js.stdout)["precision"]
    assert "TopK" in p["output_measured_at"] and p["output_error_rel"] < 1e-2
