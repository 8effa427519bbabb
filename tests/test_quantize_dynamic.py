"""Dynamic int8 (graphopt.quantize.dynamic, --quantize int8-dynamic): every form against the float model under
onnxruntime within the rounding bound of int8 weights and run-time uint8 activations; the driver, API and CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.errors import GraphoptError
from graphopt.quantize.dynamic import (
    FORMS,
    dynamic_candidates,
    measured_forms,
    quantize_dynamic_nodes,
    quantize_weight,
)


def _run(proto: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _linear_model(op: str, k: int, n: int, rank: int, seed: int, trans_b: bool, bias: str, alpha: float, beta: float):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k) if trans_b else (k, n)) * rng.uniform(0.01, 2.0, (1, 1))).astype(np.float32)
    inits = [numpy_helper.from_array(w, "W")]
    x_shape = ["b", k] if op == "Gemm" or rank == 2 else ["b", "s", k] if rank == 3 else [2, "b", "s", k]
    if op == "Gemm":
        inputs = ["x", "W"]
        attrs = {"transB": int(trans_b), "alpha": alpha, "beta": beta}
        if bias != "none":
            shape = {"vector": (n,), "row": (1, n), "scalar": (1,)}[bias]
            inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), "C"))
            inputs.append("C")
        node = helper.make_node("Gemm", inputs, ["y"], name="layer", **attrs)
        out_shape = ["b", n]
    else:
        node = helper.make_node("MatMul", ["x", "W"], ["y"], name="layer")
        out_shape = [*x_shape[:-1], n]
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, w.T if trans_b else w


def _bound(x: np.ndarray, w: np.ndarray, alpha: float, per_channel: bool) -> np.ndarray:
    """Per output element, the largest error int8 weights (round to nearest) and uint8 run-time activations (one
    step, allowing for the zero point's rounding) can make: sum_k |x| dw/2 + |w| dx + dx dw/2, times |alpha|."""
    _, scale = quantize_weight(w, per_channel)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    dx = (hi - lo) / 255.0
    ax = np.abs(x.reshape(-1, x.shape[-1])).astype(np.float64)
    b = ax @ np.broadcast_to(scale / 2.0, w.shape).astype(np.float64) + dx * np.abs(w).sum(0) + dx * w.shape[0] * scale
    return abs(alpha) * b.reshape(*x.shape[:-1], w.shape[1])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    op=st.sampled_from(["MatMul", "Gemm"]),
    k=st.integers(1, 40),
    n=st.integers(1, 24),
    rank=st.integers(2, 4),
    seed=st.integers(0, 2**16),
    trans_b=st.booleans(),
    bias=st.sampled_from(["none", "vector", "row", "scalar"]),
    alpha=st.sampled_from([1.0, 0.5, -2.0]),
    beta=st.sampled_from([1.0, 0.25]),
    form=st.sampled_from(sorted(FORMS)),
    per_channel=st.booleans(),
    offset=st.sampled_from([0.0, 3.0, -1.5]),
)
def test_dynamic_matches_float_within_the_rounding_bound(
    op, k, n, rank, seed, trans_b, bias, alpha, beta, form, per_channel, offset
):
    if op == "MatMul":
        trans_b, bias, alpha, beta = False, "none", 1.0, 1.0
    proto, w = _linear_model(op, k, n, rank, seed, trans_b, bias, alpha, beta)
    rng = np.random.default_rng(seed + 1)
    shape = (3, k) if op == "Gemm" or rank == 2 else (2, 3, k) if rank == 3 else (2, 2, 3, k)
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 5.0) + offset).astype(np.float32)
    (ref,) = _run(proto, {"x": x})
    model = from_proto(proto)
    infer_shapes(model)
    nodes = dynamic_candidates(model.graph)
    assert [n_.name for n_ in nodes] == ["layer"]
    (layer,) = quantize_dynamic_nodes(model, nodes, per_channel=per_channel, form=form)
    assert layer.mode == "dynamic" and layer.name == "layer"
    out = model.to_onnx()
    onnx.checker.check_model(out)
    assert not any(n_.op_type in ("MatMul", "Gemm") for n_ in out.graph.node)
    (got,) = _run(out, {"x": x})
    assert got.shape == ref.shape
    # (per token: int8 per row, half a step of amax/127, within 1.01 of the per-tensor uint8 step)
    bound = 1.01 * _bound(x, w, alpha, per_channel)
    slack = 1e-4 * (np.abs(ref) + 1.0)
    assert np.all(np.abs(got - ref) <= bound + slack), float(np.max(np.abs(got - ref) - bound))


def _two_layer_model() -> onnx.ModelProto:
    """ids -> Gather(vocabulary) -> MatMul -> Gelu-ish Mul -> Gemm-like MatMul + Add, and an attention-like MatMul
    of two activations (stays float)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((1200, 64)) * 0.1).astype(np.float32), "vocab"),
        numpy_helper.from_array((rng.standard_normal((64, 96)) * 0.1).astype(np.float32), "W1"),
        numpy_helper.from_array((rng.standard_normal((96, 64)) * 0.1).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gather", ["vocab", "ids"], ["emb"], name="embed"),
        helper.make_node("MatMul", ["emb", "W1"], ["h"], name="ffn1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "W2"], ["h2"], name="ffn2"),
        helper.make_node("Add", ["h2", "b2"], ["y"], name="bias"),
        helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1], name="t"),
        helper.make_node("MatMul", ["y", "yt"], ["scores"], name="scores"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", 64]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["b", "s", "s"]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _ids(seed: int = 3) -> dict:
    return {"ids": np.random.default_rng(seed).integers(0, 1200, (2, 7)).astype(np.int64)}


def test_api_int8_dynamic_needs_no_calibration():
    proto = _two_layer_model()
    report: list = []
    out = graphopt.optimize(proto, quantize="int8-dynamic", report=report)
    q = report[0].quantization
    modes = {layer.name: layer.mode for layer in q.layers}
    assert modes == {"ffn1": "dynamic", "ffn2": "dynamic", "embed": "int8 table"}  # scores stays float
    assert q.method == "dynamic" and q.batches == 2 and any("random inputs" in w for w in q.warnings)
    ops = [n.op_type for n in out.graph.node]
    # ffn1 reads the embeddings: one activation scale per tensor; ffn2 reads a Relu's output, whose tokens have the
    # same spread here (random weights): per token does not pay, one scale per tensor (measured_forms)
    assert ops.count("DynamicQuantizeMatMul") == 2 and ops.count("MatMulIntegerToFloat") == 0
    assert ops.count("MatMul") == 1 and ops.count("Add") == 0  # ffn2's bias is inside its kernel
    runs_as = {layer.name: layer.fused_as for layer in q.layers}
    assert runs_as["ffn1"] == "DynamicQuantizeMatMul" and runs_as["ffn2"] == "DynamicQuantizeMatMul"
    notes = {layer.name: layer.note for layer in q.layers}
    assert "per tensor" in notes["ffn1"] and "one scale per tensor holds" in notes["ffn2"]
    assert "bias folded in" in notes["ffn2"]
    assert q.param_bytes_after < 0.3 * q.param_bytes_before
    ref, got = _run(proto, _ids()), _run(out, _ids())
    for a, b in zip(ref, got, strict=True):
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.03
    # calibration data, when given, is where the error is measured
    report = []
    graphopt.optimize(proto, quantize="int8-dynamic", calibration=[_ids(5)], report=report)
    assert report[0].quantization.batches == 1 and not report[0].quantization.warnings
    # exclusions keep layers float
    report = []
    out = graphopt.optimize(
        proto, quantize="int8-dynamic", quantize_options={"exclude": ["ffn2", "embed"]}, report=report
    )
    assert [layer.name for layer in report[0].quantization.layers] == ["ffn1"]
    assert "vocab" in {i.name for i in out.graph.initializer}


def test_int8_dynamic_refuses_tensorrt_and_max_error():
    with pytest.raises(GraphoptError, match="TensorRT has no run-time activation quantization.*--quantize int8"):
        graphopt.optimize(_two_layer_model(), quantize="int8-dynamic", target="tensorrt")
    with pytest.raises(GraphoptError, match="max error"):
        graphopt.optimize(_two_layer_model(), quantize="int8-dynamic", quantize_options={"max_error": 0.1})


def test_non_candidates_are_reported_float():
    model = from_proto(_two_layer_model())
    infer_shapes(model)
    scores = next(n for n in model.graph if n.name == "scores")
    (layer,) = quantize_dynamic_nodes(model, [scores])
    assert layer.mode is None and "run time" in (layer.note or "")
    with pytest.raises(GraphoptError, match="unknown dynamic int8 form"):
        quantize_dynamic_nodes(model, [], form="fast")


def test_pass_in_a_pipeline():
    report: list = []
    out = graphopt.optimize(_two_layer_model(), passes="cleanup,quantize-int8-dynamic", report=report)
    assert [n.op_type for n in out.graph.node].count("MatMul") == 1  # only the attention-like one stays float
    again = graphopt.optimize(out, passes="quantize-int8-dynamic")
    assert [n.op_type for n in again.graph.node] == [n.op_type for n in out.graph.node]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphopt", *args], capture_output=True, text=True, timeout=120)


def test_cli_int8_dynamic(tmp_path: Path):
    src = tmp_path / "m.onnx"
    onnx.save(_two_layer_model(), src)
    out = tmp_path / "m.int8.onnx"
    r = _cli("optimize", str(src), "-o", str(out), "--quantize", "int8-dynamic", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)["quantization"]
    assert summary["method"] == "dynamic"
    assert {x["name"]: x["mode"] for x in summary["layers"]} == {
        "ffn1": "dynamic",
        "ffn2": "dynamic",
        "embed": "int8 table",
    }
    assert out.stat().st_size < 0.3 * src.stat().st_size
    got = _run(onnx.load(out), _ids())
    ref = _run(_two_layer_model(), _ids())
    assert np.linalg.norm(got[0] - ref[0]) / np.linalg.norm(ref[0]) < 0.03
    # the text summary says which layers went dynamic
    r = _cli("optimize", str(src), "-o", str(tmp_path / "b.onnx"), "--quantize", "int8-dynamic", "--calib-random", "2")
    assert r.returncode == 0, r.stderr
    assert "dynamic: 2 layers with activations quantized at run time" in r.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--target", "tensorrt"], "TensorRT has no run-time activation quantization"),
        (["--max-error", "0.1"], "--max-error does not apply to --quantize int8-dynamic"),
    ],
)
def test_cli_int8_dynamic_errors(tmp_path: Path, flags: list[str], message: str):
    src = tmp_path / "m.onnx"
    onnx.save(_two_layer_model(), src)
    out = tmp_path / "out.onnx"
    r = _cli("optimize", str(src), "-o", str(out), "--quantize", "int8-dynamic", *flags)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error:") and message in lines[0]
    assert not out.exists()


# --------------------------------------------------------------------------------------------------------------------
# the patterns onnxruntime runs fastest: the bias inside the kernel, parallel layers merged, per token where it pays
# --------------------------------------------------------------------------------------------------------------------
def _bias_model(k: int, widths: list[int], rank: int, bias_shape: str, seed: int) -> tuple[onnx.ModelProto, dict]:
    """x -> MatMul(W) [-> Split(widths)] -> Add(bias per part) -> outputs; ``bias_shape`` vector/row/scalar/wide
    (wide: (2, 1, n), which broadcasts the output to a new shape and must not be folded)."""
    rng = np.random.default_rng(seed)
    n = sum(widths)
    inits = [numpy_helper.from_array((rng.standard_normal((k, n)) * 0.3).astype(np.float32), "W")]
    x_shape = ["b", k] if rank == 2 else ["b", "s", k]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="layer")]
    parts = ["y"]
    if len(widths) > 1:
        inits.append(numpy_helper.from_array(np.asarray(widths, np.int64), "sizes"))
        parts = [f"p{i}" for i in range(len(widths))]
        nodes.append(helper.make_node("Split", ["y", "sizes"], parts, axis=-1, name="split"))
    outs = []
    for i, (part, w) in enumerate(zip(parts, widths, strict=True)):
        shape = {"vector": (w,), "row": (1, w), "scalar": (), "wide": (2, 1, w)}[bias_shape]
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), f"b{i}"))
        nodes.append(helper.make_node("Add", [part, f"b{i}"] if i % 2 == 0 else [f"b{i}", part], [f"o{i}"]))
        outs.append(helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal((3, k) if rank == 2 else (2, 3, k)).astype(np.float32)
    return model, {"x": x}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(1, 24),
    widths=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    rank=st.sampled_from([2, 3]),
    bias_shape=st.sampled_from(["vector", "row", "scalar", "wide"]),
    form=st.sampled_from(["dqmatmul", "integertofloat", "integer"]),
    seed=st.integers(0, 2**16),
)
def test_trailing_bias_folds_into_the_kernel(k, widths, rank, bias_shape, form, seed):
    proto, feeds = _bias_model(k, widths, rank, bias_shape, seed)
    ref = _run(proto, feeds)
    model = from_proto(proto)
    infer_shapes(model)
    (layer,) = quantize_dynamic_nodes(model, dynamic_candidates(model.graph), form=form)
    out = model.to_onnx()
    adds = [n for n in out.graph.node if n.op_type == "Add"]
    foldable = bias_shape != "wide" and form != "integer" and (bias_shape != "row" or rank >= 2)
    assert (len(adds) == 0) == foldable, (bias_shape, form, [a.input for a in adds])
    assert ("bias folded in" in (layer.note or "")) == foldable
    got = _run(out, feeds)
    w = numpy_helper.to_array(proto.graph.initializer[0])
    x = feeds["x"]
    bound = 1.01 * _bound(x, w, 1.0, True)
    start = 0
    for r, g, width in zip(ref, got, widths, strict=True):
        assert g.shape == r.shape
        b = np.broadcast_to(bound[..., start : start + width], r.shape)
        assert np.all(np.abs(g - r) <= b + 1e-4 * (np.abs(r) + 1.0))
        start += width


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    op=st.sampled_from(["MatMul", "Gemm"]),
    k=st.integers(1, 24),
    widths=st.lists(st.integers(1, 9), min_size=2, max_size=4),
    seed=st.integers(0, 2**16),
    opset=st.sampled_from([11, 17]),
)
def test_parallel_layers_merge_into_one_kernel_with_the_same_results(op, k, widths, seed, opset):
    """Layers reading the same input (query/key/value) become one DynamicQuantizeMatMul and a Split: per-column
    weight scales and one quantization of the shared input, so every output equals the unmerged kernels' bit for
    bit under onnxruntime."""
    rng = np.random.default_rng(seed)
    inits, nodes, outs = [], [], []
    for i, n in enumerate(widths):
        trans = op == "Gemm" and i % 2 == 1
        w = (rng.standard_normal((n, k) if trans else (k, n)) * rng.uniform(0.05, 2.0)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        inputs = ["x", f"W{i}"]
        attrs = {}
        if op == "Gemm":
            attrs = {"transB": int(trans), "beta": 0.5}
            if i != 1:  # one layer without a bias
                inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), f"C{i}"))
                inputs.append(f"C{i}")
        nodes.append(helper.make_node(op, inputs, [f"y{i}"], name=f"layer{i}", **attrs))
        outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
    x_shape = ["b", k] if op == "Gemm" else ["b", "s", k]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)], outs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 7
    x = (rng.standard_normal((3, k) if op == "Gemm" else (2, 3, k)) * 2.0 + 0.5).astype(np.float32)
    results = {}
    for merge in (False, True):
        model = from_proto(proto)
        infer_shapes(model)
        layers = quantize_dynamic_nodes(model, dynamic_candidates(model.graph), form="dqmatmul", merge=merge)
        assert [layer.name for layer in layers] == [f"layer{i}" for i in range(len(widths))]
        assert all(layer.mode == "dynamic" for layer in layers)
        out = model.to_onnx()
        ops = [n.op_type for n in out.graph.node]
        assert ops.count("DynamicQuantizeMatMul") == (1 if merge else len(widths)) and "Add" not in ops
        assert [o.name for o in out.graph.output] == [f"y{i}" for i in range(len(widths))]
        results[merge] = _run(out, {"x": x})
    for a, b in zip(results[False], results[True], strict=True):
        np.testing.assert_array_equal(a, b)


def _relu_model(k: int = 32, h: int = 64) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array((rng.standard_normal((k, h)) * 0.2).astype(np.float32), "W1"),
        numpy_helper.from_array((rng.standard_normal((h, k)) * 0.2).astype(np.float32), "W2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="up"),
        helper.make_node("Relu", ["h"], ["r"], name="act"),
        helper.make_node("MatMul", ["r", "W2"], ["y"], name="down"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", k])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("outlier", [1.0, 40.0])
def test_per_token_only_where_it_pays(outlier: float):
    """The down-projection after the Relu gets one scale per token only when its input has tokens far larger than
    the rest on the measurement inputs (a CLS-like token 40x the others); otherwise one scale per tensor. Either way
    the model stays within the rounding bound of its form under onnxruntime."""
    proto = _relu_model()
    rng = np.random.default_rng(7)
    feeds = []
    for _ in range(2):
        x = rng.standard_normal((1, 12, 32)).astype(np.float32)
        x[:, 0] *= outlier
        feeds.append({"x": x})
    model = from_proto(proto)
    infer_shapes(model)
    nodes = dynamic_candidates(model.graph)
    forms = measured_forms(model, nodes, feeds)
    assert forms["up"][0] == "dqmatmul"
    assert forms["down"][0] == ("pertoken" if outlier > 1 else "dqmatmul"), forms["down"]
    layers = quantize_dynamic_nodes(model, nodes, forms=forms)
    ops = [n.op_type for n in model.to_onnx().graph.node]
    assert ops.count("MatMulIntegerToFloat") == (1 if outlier > 1 else 0)
    assert "dB" in (layers[1].note or "")
    out = model.to_onnx()
    for feed in feeds:
        (ref,) = _run(proto, feed)
        (got,) = _run(out, feed)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.05


def test_guard_candidates_use_the_measured_dynamic_forms() -> None:
    """The accuracy guard and the SQNR floor's search measure ``driver._with_modes`` candidates: a dynamic layer after
    an activation must take the form ``measured_forms`` gives the written model (here per tensor: the tokens have
    the same spread), not the unmeasured per-token guess, or the guard measures another model than it writes."""
    from graphopt.quantize import analysis, driver, dynamic, transform

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((16, 8)) * 0.3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("MatMul", ["r", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.uniform(-1, 1, (4, 16)).astype(np.float32)} for _ in range(2)]
    model = from_proto(proto)
    infer_shapes(model)
    forms = dynamic.measured_forms(model, [n for n in model.graph if n.name == "mm"], feeds)
    assert forms["mm"][0] == "dqmatmul", forms
    cfg = driver.QuantizeConfig()
    out = driver._with_modes(
        proto, "ort", analysis.Selection(), {}, transform.Options(), {"mm": "dynamic"}, cfg, False, batches=feeds
    )
    assert [n.op_type for n in out.graph.node if n.name == "mm"] == ["DynamicQuantizeMatMul"]
