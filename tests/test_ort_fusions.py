"""ort-avoid-fusions: for target ort, an Add that onnxruntime would fuse with the LayerNormalization it feeds into its
(slower, on CPU) SkipLayerNormalization is written as Sum, last, after every pipeline and driver."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ort_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import graphopt

RNG = np.random.default_rng(0)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def residual_ln(
    s: int,
    d: int,
    *,
    eps: float = 1e-12,
    decomposed: bool = False,
    batch: int | str = 1,
    seq: int | str | None = None,
    skip_shape: list | None = None,
    extra_reader: bool = False,
    op: str = "Add",
    dtype: int = T.FLOAT,
) -> onnx.ModelProto:
    """x + y -> LayerNormalization (or its decomposed form: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul,
    Add) over the last axis, at opset 17."""
    x_shape = [batch, seq if seq is not None else s, d]
    inits = [nh.from_array(_f32(d), "gamma"), nh.from_array(_f32(d), "beta")]
    nodes = [h.make_node(op, ["x", "y"], ["r"])]
    if decomposed:
        inits += [nh.from_array(np.array(2.0, np.float32), "two"), nh.from_array(np.array(eps, np.float32), "eps")]
        nodes += [
            h.make_node("ReduceMean", ["r"], ["mean"], axes=[-1]),
            h.make_node("Sub", ["r", "mean"], ["xc"]),
            h.make_node("Pow", ["xc", "two"], ["sq"]),
            h.make_node("ReduceMean", ["sq"], ["var"], axes=[-1]),
            h.make_node("Add", ["var", "eps"], ["ve"]),
            h.make_node("Sqrt", ["ve"], ["sd"]),
            h.make_node("Div", ["xc", "sd"], ["nx"]),
            h.make_node("Mul", ["nx", "gamma"], ["sc"]),
            h.make_node("Add", ["sc", "beta"], ["ln"]),
        ]
    else:
        nodes.append(h.make_node("LayerNormalization", ["r", "gamma", "beta"], ["ln"], axis=-1, epsilon=eps))
    nodes.append(h.make_node("Relu", ["ln"], ["out"]))  # onnxruntime's fusions take no graph output
    outputs = [h.make_tensor_value_info("out", T.FLOAT, x_shape)]
    if extra_reader:
        nodes.append(h.make_node("Neg", ["r"], ["other"]))
        outputs.append(h.make_tensor_value_info("other", T.FLOAT, x_shape))
    g = h.make_graph(
        nodes,
        "g",
        [
            h.make_tensor_value_info("x", T.FLOAT, x_shape),
            h.make_tensor_value_info("y", T.FLOAT, skip_shape or x_shape),
        ],
        outputs,
        inits,
    )
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    if dtype == T.FLOAT16:
        for v in [*model.graph.input, *model.graph.output]:
            v.type.tensor_type.elem_type = T.FLOAT16
        for i in model.graph.initializer:
            i.CopyFrom(nh.from_array(nh.to_array(i).astype(np.float16), i.name))
    return model


def ort_ops(model: onnx.ModelProto, tmp_path, name: str = "opt.onnx") -> Counter:
    """The op types of the graph onnxruntime runs (CPU, default level: its fusions applied)."""
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / name)
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def ort_default(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def feeds_for(model: onnx.ModelProto, s: int, d: int) -> dict:
    shapes = {
        i.name: [x.dim_value or (s if j == 1 else 1) for j, x in enumerate(i.type.tensor_type.shape.dim)]
        for i in model.graph.input
    }
    dtype = np.float16 if model.graph.input[0].type.tensor_type.elem_type == T.FLOAT16 else np.float32
    return {k: _f32(*v).astype(dtype) for k, v in shapes.items()}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    s=st.integers(1, 24),
    d=st.sampled_from([8, 32, 96]),
    eps=st.sampled_from([1e-12, 1e-5, 1e-3]),
    decomposed=st.booleans(),
    batch=st.sampled_from([1, 2, "batch"]),
    symbolic_seq=st.booleans(),
    half=st.booleans(),
)
def test_equivalent_and_unfused_under_onnxruntime(tmp_path, s, d, eps, decomposed, batch, symbolic_seq, half):
    dtype = T.FLOAT16 if half else T.FLOAT
    model = residual_ln(
        s, d, eps=eps, decomposed=decomposed, batch=batch, seq="seq" if symbolic_seq else None, dtype=dtype
    )
    # exactly what onnxruntime fuses is rewritten (it does not fuse a decomposed one whose eps is 0, in float16 too)
    fused = ort_ops(model, tmp_path)["SkipLayerNormalization"]
    assert fused == 1 or (decomposed and np.float16(eps) == 0 if half else eps == 0)
    report: list = []
    out = graphopt.optimize(model, report=report)
    assert ops(out)["Sum"] == fused  # (-O2 may drop an Add of a zero eps as a no-op)
    assert "SkipLayerNormalization" not in ort_ops(out, tmp_path, "out.onnx")
    stats = {st.name: st for st in report[0].stats}
    if fused:
        assert stats["ort-avoid-fusions"].counts == {"add-as-sum": 1}
    f = feeds_for(model, s, d)
    for got, want in zip(ort_run(out, f), ort_run(model, f), strict=True):
        np.testing.assert_array_equal(got, want)  # Sum of two same-shaped inputs is Add, bit for bit
    for got, want in zip(ort_default(out, f), ort_default(model, f), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4 if not half else 1e-2, atol=1e-4 if not half else 1e-2)


def test_target_tensorrt_and_keep_ort_fusions_keep_the_add(tmp_path):
    model = residual_ln(16, 64)
    for kwargs in ({"target": "tensorrt"}, {"keep_ort_fusions": True}):
        report: list = []
        out = graphopt.optimize(model, report=report, **kwargs)
        assert ops(out)["Sum"] == 0
        assert ort_ops(out, tmp_path)["SkipLayerNormalization"] == 1
        assert "ort-avoid-fusions" not in {st.name for st in report[0].stats}  # no row when it did nothing


@pytest.mark.parametrize("level", [1, 2, 3])
def test_every_level(tmp_path, level):
    out = graphopt.optimize(residual_ln(8, 32), level=level)
    assert ops(out)["Sum"] == 1
    assert "SkipLayerNormalization" not in ort_ops(out, tmp_path)


def test_level_0_is_a_plain_round_trip():
    assert ops(graphopt.optimize(residual_ln(8, 32), level=0))["Sum"] == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"skip_shape": [32]},  # broadcast: not the 3-D + 3-D Add the fused kernel takes
        {"skip_shape": [1, 1, 32]},
        {"extra_reader": True},  # the Add's output is read elsewhere too
        {"skip_shape": [8, 32]},
        {"batch": 2, "skip_shape": [1, 8, 32]},
        {"seq": "seq", "skip_shape": [1, "seq2", 32]},  # two symbols: not known to be the same
        {"op": "Sum"},  # already a Sum
        {"decomposed": True, "eps": 0.0},  # onnxruntime's LayerNormFusion wants an eps above zero
        {"decomposed": True, "eps": 1e-12, "dtype": T.FLOAT16},  # ... and 1e-12 is zero in float16
    ],
)
def test_what_onnxruntime_would_not_fuse_is_left_alone(tmp_path, kwargs):
    model = residual_ln(8, 32, **kwargs)
    out = graphopt.optimize(model)
    assert [n.op_type for n in out.graph.node if "r" in n.output] == [kwargs.get("op", "Add")]
    assert ops(out)["Sum"] == ops(model)["Sum"]
    if kwargs.get("op") != "Sum" and not kwargs.get("extra_reader"):
        assert "SkipLayerNormalization" not in ort_ops(model, tmp_path)


@pytest.mark.parametrize("op", ["Add", "Sum"])
def test_add_or_sum_feeding_something_else_is_untouched(op):
    g = h.make_graph(
        [h.make_node(op, ["x", "y"], ["r"]), h.make_node("Softmax", ["r"], ["out"], axis=-1)],
        "g",
        [h.make_tensor_value_info(n, T.FLOAT, [1, 8, 32]) for n in ("x", "y")],
        [h.make_tensor_value_info("out", T.FLOAT, [1, 8, 32])],
    )
    for target in ("ort", "tensorrt"):
        out = graphopt.optimize(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), target=target)
        assert ops(out) == Counter({op: 1, "Softmax": 1})  # no pass turns a Sum into an Add either


def minilm_block(s: int = 8, d: int = 64) -> onnx.ModelProto:
    """One BERT layer's tail as exports write it: x @ W + b, + residual, LayerNormalization, then the FFN and its
    residual LayerNormalization, each MatMul with a constant weight."""
    inits = [
        nh.from_array(_f32(d, d) * 0.1, "w1"),
        nh.from_array(_f32(d), "b1"),
        nh.from_array(_f32(d), "g1"),
        nh.from_array(_f32(d), "be1"),
        nh.from_array(_f32(d, 4 * d) * 0.1, "w2"),
        nh.from_array(_f32(4 * d), "b2"),
        nh.from_array(_f32(4 * d, d) * 0.1, "w3"),
        nh.from_array(_f32(d), "b3"),
        nh.from_array(_f32(d), "g2"),
        nh.from_array(_f32(d), "be2"),
    ]
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["m1"]),
        h.make_node("Add", ["m1", "b1"], ["a1"]),
        h.make_node("Add", ["a1", "x"], ["r1"]),
        h.make_node("LayerNormalization", ["r1", "g1", "be1"], ["ln1"], axis=-1, epsilon=1e-12),
        h.make_node("MatMul", ["ln1", "w2"], ["m2"]),
        h.make_node("Add", ["m2", "b2"], ["a2"]),
        h.make_node("Relu", ["a2"], ["h2"]),
        h.make_node("MatMul", ["h2", "w3"], ["m3"]),
        h.make_node("Add", ["m3", "b3"], ["a3"]),
        h.make_node("Add", ["a3", "ln1"], ["r2"]),
        h.make_node("LayerNormalization", ["r2", "g2", "be2"], ["ln2"], axis=-1, epsilon=1e-12),
        h.make_node("Relu", ["ln2"], ["out"]),
    ]
    g = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, [1, s, d])],
        [h.make_tensor_value_info("out", T.FLOAT, None)],
        inits,
    )
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def test_int8_dynamic_keeps_the_sums(tmp_path):
    model = minilm_block()
    assert ort_ops(model, tmp_path)["SkipLayerNormalization"] == 2
    report: list = []
    out = graphopt.optimize(model, quantize="int8-dynamic", report=report)
    assert report[0].quantization is not None
    assert ops(out)["Sum"] == 2
    assert "SkipLayerNormalization" not in ort_ops(out, tmp_path)
    assert report[0].stats[-1].name == "ort-avoid-fusions"  # the last step: nothing ran after it
    f = {"x": _f32(1, 8, 64)}
    kept = graphopt.optimize(model, quantize="int8-dynamic", keep_ort_fusions=True)
    assert ops(kept)["Sum"] == 0
    np.testing.assert_array_equal(ort_run(out, f)[0], ort_run(kept, f)[0])


def test_a_quantized_file_read_back_keeps_every_sum(tmp_path):
    """The Adds of a quantized model written to a file and optimized again read contrib ops' outputs, which shape
    inference leaves untyped: onnxruntime still fuses them all, so all are written as Sum (the quantize driver's
    speed figure times its model this way; only the first Add, ahead of every DynamicQuantizeMatMul, was taken)."""
    from graphopt.core.onnx_io import from_proto
    from graphopt.engine.pass_manager import PassManager

    kept = graphopt.optimize(minilm_block(), quantize="int8-dynamic", keep_ort_fusions=True)
    assert ops(kept)["DynamicQuantizeMatMul"] and ort_ops(kept, tmp_path)["SkipLayerNormalization"] == 2
    model = from_proto(kept)
    assert PassManager("ort-avoid-fusions").run(model, target="ort").changed
    out = model.to_onnx()
    assert ops(out)["Sum"] == 2
    assert "SkipLayerNormalization" not in ort_ops(out, tmp_path, "again.onnx")


def test_cli_writes_the_sum(tmp_path):
    from graphopt.cli import main

    src, dst = tmp_path / "m.onnx", tmp_path / "o.onnx"
    onnx.save(residual_ln(8, 32), src)
    assert main(["optimize", str(src), "-o", str(dst), "-q"]) == 0
    assert ops(onnx.load(dst))["Sum"] == 1


@pytest.mark.parametrize(
    "kwargs", [{"quantize": "int8"}, {"quantize": "int4"}, {"precision": "fp16"}], ids=["int8", "int4", "fp16"]
)
def test_every_lossy_mode_ends_with_the_step(tmp_path, kwargs):
    model = minilm_block()
    calibration = [{"x": _f32(1, 8, 64)} for _ in range(4)]
    report: list = []
    out = graphopt.optimize(model, report=report, calibration=calibration, **kwargs)
    assert report[0].stats[-1].name == "ort-avoid-fusions"
    assert ops(out)["Sum"] == 2
    assert "SkipLayerNormalization" not in ort_ops(out, tmp_path)


def reshaped_residual_ln() -> onnx.ModelProto:
    """The residual reaches the Add through Reshape(y, Shape(x)), a shape onnxruntime's inference does not know."""
    model = residual_ln(8, 32, seq="seq")
    g = model.graph
    g.node.insert(0, h.make_node("Shape", ["x"], ["xs"]))
    g.node.insert(1, h.make_node("Reshape", ["y", "xs"], ["y2"]))
    g.node[2].input[1] = "y2"
    return model


def test_onnxruntime_decides_which_adds(tmp_path, monkeypatch):
    from graphopt.passes import ort_avoid_fusions

    for model in (reshaped_residual_ln(), residual_ln(8, 32, skip_shape=[1, 1, 32])):
        fused = ort_ops(graphopt.optimize(model, keep_ort_fusions=True), tmp_path)["SkipLayerNormalization"]
        assert ops(graphopt.optimize(model))["Sum"] == fused  # asked of onnxruntime: exactly what it fuses
    assert ops(graphopt.optimize(residual_ln(8, 32)))["Sum"] == 1
    monkeypatch.setattr(ort_avoid_fusions, "ASK_BYTES", -1)  # too large to ask: decided from the shapes
    assert ops(graphopt.optimize(residual_ln(8, 32)))["Sum"] == 1
    assert ops(graphopt.optimize(residual_ln(8, 32, skip_shape=[32])))["Sum"] == 0
