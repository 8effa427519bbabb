"""decompose-prelu: for target ort, PRelu is written as Add(Relu(x), Mul(Min(x, 0), slope)) (LeakyRelu for one slope)
in the emission step; the result is bit-equal under onnxruntime (signs of zero aside), and anything it cannot prove
safe is left alone."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ort_run
from graphopt.passes import decompose_prelu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import graphopt

RNG = np.random.default_rng(0)
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-38, -1e-38, 3e38, -3e38], np.float32)


def prelu_model(
    x_shape: list, slope: np.ndarray | None, *, dtype: int = T.FLOAT, conv: bool = False, opset: int = 13
) -> onnx.ModelProto:
    """y = PRelu(x, slope) (slope an initializer, or a graph input when None), after a 1x1 Conv when ``conv``."""
    inits, inputs = [], [h.make_tensor_value_info("x", dtype, x_shape)]
    nodes, a = [], "x"
    if conv:
        c = x_shape[1]
        inits.append(nh.from_array(RNG.standard_normal((c, c, 1, 1)).astype(np.float32), "w"))
        nodes.append(h.make_node("Conv", ["x", "w"], ["a"]))
        a = "a"
    if slope is None:
        inputs.append(h.make_tensor_value_info("s", dtype, [x_shape[-1]]))
    else:
        inits.append(nh.from_array(slope, "s"))
    nodes.append(h.make_node("PRelu", [a, "s"], ["y"], name="act"))
    g = h.make_graph(nodes, "g", inputs, [h.make_tensor_value_info("y", dtype, x_shape)], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", opset)])


def ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def ort_default(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """Outputs with onnxruntime's default optimizations (its Conv + activation fusions included), 1 thread."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-equal but for signs of zero (-0.0 == 0.0) and NaN payloads."""
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def with_specials(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=min(flat.size, len(SPECIALS)), replace=False)
    flat[idx] = SPECIALS[: len(idx)]
    return x


@st.composite
def cases(draw):
    rank = draw(st.integers(1, 4))
    x_shape = draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank))
    k = draw(st.integers(0, rank))  # slope rank
    s_shape = [d if draw(st.booleans()) else 1 for d in x_shape[rank - k :]]
    uniform = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return x_shape, s_shape, uniform, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_equivalent_under_onnxruntime(case):
    x_shape, s_shape, uniform, seed = case
    rng = np.random.default_rng(seed)
    slope = np.full(s_shape, np.float32(rng.uniform(-2, 2)), np.float32) if uniform else None
    if slope is None:
        slope = rng.uniform(-2, 2, s_shape).astype(np.float32)
        slope.reshape(-1)[:1] = 0.0  # a zero slope too (0 * -inf is NaN in PRelu as well)
    model = prelu_model(x_shape, slope)
    x = with_specials(rng.standard_normal(x_shape).astype(np.float32) * 3, rng)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(decompose_prelu, "SMALL", 0)  # small shapes are kept as PRelu by default: test the rewrite
        report: list = []
        out = graphopt.optimize(model, passes="decompose-prelu", report=report)
    got = ops(out)
    assert "PRelu" not in got
    one_slope = slope.size > 0 and bool(np.all(slope == slope.reshape(-1)[0]))
    assert got["LeakyRelu" if one_slope else "Min"] == 1
    ref = ort_run(model, {"x": x})[0]
    for run in (ort_run, ort_default):
        assert same(ref, run(out, {"x": x})[0])


def test_conv_then_prelu_equivalent_with_onnxruntime_fusions():
    """After a Conv (onnxruntime fuses Conv + LeakyRelu, and lays the Conv out in NCHWc): same outputs, both forms."""
    x = with_specials(RNG.standard_normal((1, 8, 16, 16)).astype(np.float32), RNG)
    for slope in (RNG.uniform(-1, 1, (8, 1, 1)).astype(np.float32), np.full((1, 8, 1, 1), 0.3, np.float32)):
        model = prelu_model([1, 8, 16, 16], slope, conv=True)
        out = graphopt.optimize(model, level=3)
        assert "PRelu" not in ops(out)
        assert same(ort_default(model, {"x": x})[0], ort_default(out, {"x": x})[0])


def test_report_counts_and_keep_prelu():
    model = prelu_model(["N", 16, 32, 32], RNG.uniform(-1, 1, (16, 1, 1)).astype(np.float32))
    report: list = []
    out = graphopt.optimize(model, level=3, report=report)
    assert ops(out)["Min"] == 1 and "PRelu" not in ops(out)
    row = next(s for s in report[0].stats if s.name == "decompose-prelu")
    assert row.changed and row.counts.get(decompose_prelu.DECOMPOSED) == 1
    small = prelu_model([1, 4, 8, 8], np.linspace(-1, 1, 4, dtype=np.float32).reshape(4, 1, 1))
    two = onnx.compose.merge_models(model, onnx.compose.add_prefix(small, "b_"), io_map=[])
    graphopt.optimize(two, level=3, report=(report := []))
    row = next(s for s in report[0].stats if s.name == "decompose-prelu")
    assert row.counts == {decompose_prelu.DECOMPOSED: 1, decompose_prelu.KEPT_SMALL: 1}
    kept = graphopt.optimize(model, level=3, keep_prelu=True, report=(report := []))
    assert ops(kept)["PRelu"] == 1
    assert all(s.name != "decompose-prelu" for s in report[0].stats)


@pytest.mark.parametrize(
    "x_shape, slope, kw",
    [
        ([1, 16, 32, 32], np.full((16, 1, 1), 0.5, np.float32), {"target": "tensorrt"}),
        ([1, 16, 32, 32], np.array([np.inf] + [0.5] * 15, np.float32).reshape(16, 1, 1), {}),
        ([1, 16, 32, 32], np.array([np.nan] * 16, np.float32).reshape(16, 1, 1), {}),
        ([1, 16, 32, 32], None, {}),  # slope not a constant
        ([1, 16, "H", "W"], np.linspace(-1, 1, 48, dtype=np.float32).reshape(3, 16, 1, 1)[:1].repeat(3, 0), {}),
        ([1, 16, "H", 4], np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 4).repeat(5, 0), {}),  # [5,4] vs H
        ([1, "C", 64, 64], np.linspace(-1, 1, 16, dtype=np.float32).reshape(16, 1, 1), {}),  # C unknown
        ([1, 4, 8, 8], np.linspace(-1, 1, 4, dtype=np.float32).reshape(4, 1, 1), {}),  # small: PRelu is faster
    ],
    ids=["tensorrt", "inf-slope", "nan-slope", "slope-input", "slope-rank-above-x", "slope-dim-vs-symbol",
         "unknown-channel", "small"],
)  # fmt: skip
def test_left_alone(x_shape, slope, kw):
    model = prelu_model(x_shape, slope)
    out = graphopt.optimize(model, **kw)
    assert ops(out)["PRelu"] == 1 and "Min" not in ops(out) and "LeakyRelu" not in ops(out)


def test_float16_left_alone():
    model = prelu_model([1, 16, 32, 32], RNG.uniform(-1, 1, (16, 1, 1)).astype(np.float16), dtype=T.FLOAT16)
    assert ops(graphopt.optimize(model))["PRelu"] == 1


def test_function_body_left_alone():
    """A PRelu inside a model-local function (no initializers there) stays; the one in the main graph is rewritten."""
    slope = RNG.uniform(-1, 1, (16, 1, 1)).astype(np.float32)
    fn = onnx.helper.make_function(
        "local", "act", ["x", "s"], ["y"], [h.make_node("PRelu", ["x", "s"], ["y"])], [h.make_opsetid("", 13)]
    )
    g = h.make_graph(
        [h.make_node("act", ["x", "s"], ["a"], domain="local"), h.make_node("PRelu", ["a", "s"], ["y"])],
        "g",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 16, 32, 32])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [nh.from_array(slope, "s")],
    )
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 13), h.make_opsetid("local", 1)], functions=[fn])
    out = graphopt.optimize(model, passes="decompose-prelu")
    assert ops(out)["PRelu"] == 0 and [n.op_type for n in out.functions[0].node] == ["PRelu"]
    x = RNG.standard_normal((1, 16, 32, 32)).astype(np.float32)
    assert same(ort_run(model, {"x": x})[0], ort_run(out, {"x": x})[0])


def test_int8_cli_on_a_prelu_model(tmp_path):
    """The int8 path: quantized with PRelu as the quantizer sees it, decomposed last; runs and stays close."""
    slope = RNG.uniform(-0.5, 0.5, (1, 8, 1, 1)).astype(np.float32)
    src, out, calib = tmp_path / "m.onnx", tmp_path / "q.onnx", tmp_path / "calib"
    onnx.save(prelu_model([1, 8, 32, 32], slope, conv=True), src)
    calib.mkdir()
    for i in range(4):
        np.savez(calib / f"{i}.npz", x=RNG.standard_normal((1, 8, 32, 32)).astype(np.float32))
    cmd = [sys.executable, "-m", "graphopt", "optimize", str(src), "-o", str(out), "--quantize", "int8"]
    r = subprocess.run([*cmd, "--calib-data", str(calib), "--calib-cache", "off"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "decompose-prelu" in r.stdout + r.stderr
    q = onnx.load(out)
    assert "PRelu" not in ops(q) and ops(q)["QuantizeLinear"] >= 1 and ops(q)["Min"] == 1
    x = RNG.standard_normal((1, 8, 32, 32)).astype(np.float32)
    ref, got = ort_default(onnx.load(src), {"x": x})[0], ort_default(q, {"x": x})[0]
    assert np.linalg.norm(got - ref) < 0.05 * np.linalg.norm(ref)  # int8 clips the calibration's outliers


def test_int8_of_an_already_decomposed_model():
    """A file graphopt wrote for target ort (PRelu decomposed) quantizes: the quantizer sees Relu/Min/Mul/Add."""
    slope = RNG.uniform(-0.5, 0.5, (1, 8, 1, 1)).astype(np.float32)
    model = prelu_model([1, 8, 32, 32], slope, conv=True)
    fp32 = graphopt.optimize(model, level=3)
    assert ops(fp32)["Min"] == 1 and "PRelu" not in ops(fp32)
    calibration = [{"x": RNG.standard_normal((1, 8, 32, 32)).astype(np.float32)} for _ in range(4)]
    q = graphopt.optimize(fp32, quantize="int8", calibration=calibration)
    assert ops(q)["QuantizeLinear"] >= 1
    x = RNG.standard_normal((1, 8, 32, 32)).astype(np.float32)
    ref, got = ort_default(model, {"x": x})[0], ort_default(q, {"x": x})[0]
    assert np.linalg.norm(got - ref) < 0.05 * np.linalg.norm(ref)  # int8 clips the calibration's outliers


WILD = Path(__file__).resolve().parent.parent / "benchmarks" / "models" / "wild"


@pytest.mark.parametrize("name", ["mtcnn-pnet", "mtcnn-rnet", "mtcnn-onet"])
def test_real_mtcnn(name):
    sys.path.insert(0, str(WILD.parent.parent))
    import corpus

    entry = corpus.BY_NAME[name]
    src = corpus.model_path(entry)
    if not src.exists():
        pytest.skip("wild corpus not fetched")
    model = onnx.load(str(src))
    out = graphopt.optimize(model, level=3)
    assert ops(out)["PRelu"] < ops(model)["PRelu"]
    feeds = corpus.feeds(entry, seed=0, path=src)
    for a, b in zip(ort_default(model, feeds), ort_default(out, feeds), strict=True):
        assert same(a, b)  # bit for bit (signs of zero aside), as the pass claims


def test_opset_7_left_alone():
    """Min broadcasts from opset 8 on: an older model keeps PRelu."""
    model = prelu_model([1, 16, 32, 32], RNG.uniform(-1, 1, (16, 1, 1)).astype(np.float32), opset=7)
    assert ops(graphopt.optimize(model, passes="decompose-prelu"))["PRelu"] == 1


def test_o2_adds_no_node():
    """-O2 writes no more than it reads: a PRelu with several slopes stays (counted), one slope becomes LeakyRelu (one
    node for one); -O3 and int8 runs decompose it."""
    several = prelu_model([1, 16, 32, 32], RNG.uniform(-1, 1, (16, 1, 1)).astype(np.float32))
    report: list = []
    out = graphopt.optimize(several, report=report)
    assert ops(out)["PRelu"] == 1 and len(out.graph.node) <= len(several.graph.node)
    row = next(s for s in report[0].stats if s.name == "decompose-prelu")
    assert row.counts == {decompose_prelu.KEPT_SAME_SIZE: 1} and not row.changed
    one = prelu_model([1, 16, 32, 32], np.full((16, 1, 1), 0.25, np.float32))
    leaky = graphopt.optimize(one)
    assert ops(leaky)["LeakyRelu"] == 1
    assert not leaky.graph.initializer  # the slope nothing reads any more is not written
    assert "PRelu" not in ops(graphopt.optimize(several, level=3))


@pytest.mark.parametrize("role", ["output", "input"])
def test_leaky_relu_keeps_a_slope_that_is_part_of_the_graph_interface(role):
    """A one-value slope that is also a graph output (or an input with a default) stays: the file must still load."""
    slope = np.full((16, 1, 1), 0.25, np.float32)
    model = prelu_model([1, 16, 32, 32], slope)
    if role == "output":
        model.graph.output.append(h.make_tensor_value_info("s", T.FLOAT, [16, 1, 1]))
    else:
        model.ir_version = 8  # an initializer listed as an input: an overridable default (not a constant)
        model.graph.input.append(h.make_tensor_value_info("s", T.FLOAT, [16, 1, 1]))
    out = graphopt.optimize(model)
    x = RNG.standard_normal((1, 16, 32, 32)).astype(np.float32)
    got = ort_default(out, {"x": x})  # loads and runs
    assert same(ort_default(model, {"x": x})[0], got[0])
    assert "s" in {i.name for i in out.graph.initializer}
