"""fp16/bf16 conversion (graphopt.quantize.precision, --precision): exact Cast placement, the block list, the overflow
fallback, io types, Cast-chain folding, subgraphs, the CLI's errors, and random graphs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.quantize.precision import convert_precision, fold_cast_chains
from graphopt.tools import runtime

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _run(proto, feed):
    sess = runtime.session(proto, optimization="disabled")
    want = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    cast = {k: (v.astype(np.float16) if want[k] == TensorProto.FLOAT16 else v) for k, v in feed.items()}
    return sess.run(None, cast)


def _convert(proto, feeds, target="ort", **cfg):
    model = from_proto(proto)
    cfg.setdefault("latency_runs", 0)
    report = convert_precision(model, feeds, target, cfg)
    return model.to_onnx(), report


def _types(proto):
    return {v.name: v.type.tensor_type.elem_type for v in list(proto.graph.input) + list(proto.graph.output)}


def _integer_net():
    """Conv, Relu, MaxPool, Transpose, MatMul, Add, Concat on small integers: every value is exact in fp16."""
    rng = np.random.default_rng(0)
    w = rng.integers(-2, 3, size=(4, 3, 3, 3)).astype(np.float32)
    m = rng.integers(-2, 3, size=(8, 8)).astype(np.float32)
    b = rng.integers(-4, 5, size=(8,)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Transpose", ["p"], ["t"], perm=[0, 1, 3, 2], name="transpose"),
        helper.make_node("MatMul", ["t", "m"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "b"], ["a"], name="add"),
        helper.make_node("Concat", ["a", "p"], ["y"], axis=1, name="concat"),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(m, "m"), numpy_helper.from_array(b, "b")]
    proto = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", F, None)],
        inits,
    )
    feeds = [{"x": rng.integers(-2, 3, size=(1, 3, 16, 16)).astype(np.float32)} for _ in range(2)]
    return proto, feeds


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
def test_representable_values_give_fp32_output_exactly(target):
    proto, feeds = _integer_net()
    out, report = _convert(proto, feeds, target, kernels="all")
    assert report.converted >= 6  # the compute really runs in fp16 (not a vacuous pass)
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("Cast") == 2  # one in, one out: nothing else between the regions
    init_types = {t.name: t.data_type for t in out.graph.initializer}
    assert init_types == {"w": TensorProto.FLOAT16, "m": TensorProto.FLOAT16, "b": TensorProto.FLOAT16}
    for feed in feeds:
        (ref,) = _run(proto, feed)
        (got,) = _run(out, feed)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, ref)
    assert report.error_rel == 0.0
    if target == "tensorrt":
        assert report.tensorrt_violations == []


def test_ort_auto_keeps_compute_fp32_without_kernels_but_stores_weights_half():
    proto, feeds = _integer_net()
    rng = np.random.default_rng(1)
    big = rng.standard_normal((64, 64)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"])]
    proto = _model(
        nodes,
        [helper.make_tensor_value_info("x", F, [2, 64])],
        [helper.make_tensor_value_info("y", F, None)],
        [numpy_helper.from_array(big, "w")],
    )
    feeds = [{"x": rng.standard_normal((2, 64)).astype(np.float32)}]
    out, report = _convert(proto, feeds, "ort", kernels="auto")
    # this onnxruntime build has no fp16 MatMul on CPU (it would insert Casts itself): the MatMul stays fp32 and
    # reads the fp16 weight through one Cast that onnxruntime folds at load
    kept = {k.name: k.why for k in report.kept}
    assert "mm" in kept
    assert {t.name: t.data_type for t in out.graph.initializer} == {"w": TensorProto.FLOAT16}
    assert report.param_bytes_after * 2 == report.param_bytes_before
    (ref,) = _run(proto, feeds[0])
    (got,) = _run(out, feeds[0])
    assert np.abs(got - ref).max() < 0.05 and np.abs(got - ref).max() > 0  # fp16 weights: close, not identical


def test_block_list_defaults_and_user_options():
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Exp", ["r"], ["e"], name="exp"),
        helper.make_node("Neg", ["e"], ["y"], name="neg"),
    ]
    x = helper.make_tensor_value_info("x", F, [4, 4])
    proto = _model(nodes, [x], [helper.make_tensor_value_info("y", F, None)])
    feeds = [{"x": rng.standard_normal((4, 4)).astype(np.float32)}]
    _, report = _convert(proto, feeds, kernels="all")
    kept = {k.name: k.why for k in report.kept}
    assert kept["exp"] == "block list: Exp"
    _, report = _convert(proto, feeds, kernels="all", allow_ops=["Exp"])
    assert "exp" not in {k.name for k in report.kept}
    _, report = _convert(proto, feeds, kernels="all", allow_ops=["Exp"], block_ops=["Neg"], block_nodes=["relu"])
    kept = {k.name: k.why for k in report.kept}
    assert kept["neg"] == "block list: Neg" and kept["relu"] == "named by the user"
    assert kept["exp"].startswith("cheaper in fp32")  # alone between fp32 nodes it would only add two Casts


@pytest.mark.parametrize("scale, reason", [(1e5, "constant out of range: big"), (1e4, "overflow: m reaches")])
def test_overflow_on_calibration_data_stays_fp32(scale, reason):
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Relu", ["x"], ["r0"], name="relu"),
        helper.make_node("Abs", ["r0"], ["r"], name="abs"),
        helper.make_node("Mul", ["r", "big"], ["m"], name="mul"),
        helper.make_node("Transpose", ["m"], ["mt"], name="transpose"),  # onnxruntime has it in fp16: m is stored
        helper.make_node("Div", ["mt", "den"], ["d"], name="div"),
        helper.make_node("Abs", ["d"], ["s"], name="abs2"),
        helper.make_node("Neg", ["s"], ["y"], name="neg"),
    ]
    inits = [numpy_helper.from_array(np.float32(scale), "big"), numpy_helper.from_array(np.float32(1e4), "den")]
    x = helper.make_tensor_value_info("x", F, [8, 8])
    proto = _model(nodes, [x], [helper.make_tensor_value_info("y", F, None)], inits)
    feeds = [{"x": (rng.standard_normal((8, 8)) * 4).astype(np.float32)} for _ in range(3)]
    out, report = _convert(proto, feeds, kernels="all")
    kept = {k.name: k.why for k in report.kept}
    assert kept["mul"].startswith(reason) and kept["transpose"].startswith("overflow: m reaches")
    assert kept["div"].startswith("overflow: mt reaches")
    assert not {"relu", "abs", "abs2", "neg"} & set(kept)  # the regions on either side run in fp16
    for feed in feeds:
        (ref,) = _run(proto, feed)
        (got,) = _run(out, feed)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, ref, atol=2e-3)
    if scale == 1e4:  # the calibrated range is what keeps them: with a limit nothing reaches, they convert
        _, report = _convert(proto, feeds, kernels="all", range_limit=1e9)
        assert not {"mul", "transpose", "div"} & {k.name for k in report.kept}


def test_shape_math_stays_fp32_and_constant_of_shape_converts():
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "one"], ["width"], axis=0, name="gather"),
        helper.make_node("Cast", ["width"], ["wf"], to=F, name="cast"),
        helper.make_node("Sqrt", ["wf"], ["root"], name="sqrt"),
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Div", ["r", "root"], ["d"], name="div"),
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], name="zeros"),  # no value: float32 zeros
        helper.make_node("Add", ["d", "zeros"], ["a"], name="add"),
        helper.make_node("Neg", ["a"], ["y"], name="neg"),
    ]
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    x = helper.make_tensor_value_info("x", F, ["batch", 8])
    proto = _model(nodes, [x], [helper.make_tensor_value_info("y", F, None)], [one])
    feeds = [{"x": rng.standard_normal((3, 8)).astype(np.float32)}]
    out, report = _convert(proto, feeds, kernels="all")
    kept = {k.name: k.why for k in report.kept}
    assert kept["cast"].startswith("shape math") and kept["sqrt"].startswith("shape math")
    assert not {"relu", "div", "zeros", "add", "neg"} & set(kept)
    (ref,) = _run(proto, feeds[0])
    (got,) = _run(out, feeds[0])
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-3)


def test_io_types_kept_or_converted():
    proto, feeds = _integer_net()
    out, _ = _convert(proto, feeds, kernels="all")
    assert set(_types(out).values()) == {F}
    out, report = _convert(proto, feeds, kernels="all", keep_io_types=False)
    assert set(_types(out).values()) == {TensorProto.FLOAT16}
    assert [n.op_type for n in out.graph.node].count("Cast") == 0
    (ref,) = _run(proto, feeds[0])
    (got,) = _run(out, feeds[0])
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got.astype(np.float32), ref)


def test_fold_cast_chains_only_removes_exact_chains():
    H, I8 = TensorProto.FLOAT16, TensorProto.INT8
    nodes = [
        helper.make_node("Cast", ["h"], ["h32"], to=F),  # fp16 -> fp32 -> fp16: identity
        helper.make_node("Cast", ["h32"], ["h16"], to=H),
        helper.make_node("Cast", ["x"], ["x16"], to=H),  # fp32 -> fp16 -> fp32: lossy, kept
        helper.make_node("Cast", ["x16"], ["x32"], to=F),
        helper.make_node("Cast", ["q"], ["q32"], to=F),  # int8 -> fp32 -> fp16: int8 -> fp16
        helper.make_node("Cast", ["q32"], ["q16"], to=H),
        helper.make_node("Cast", ["x"], ["same"], to=F),  # a no-op Cast
        helper.make_node("Add", ["h16", "q16"], ["y1"]),
        helper.make_node("Add", ["x32", "same"], ["y2"]),
    ]
    proto = _model(
        nodes,
        [helper.make_tensor_value_info("h", H, [3]), helper.make_tensor_value_info("x", F, [3])]
        + [helper.make_tensor_value_info("q", I8, [3])],
        [helper.make_tensor_value_info("y1", H, [3]), helper.make_tensor_value_info("y2", F, [3])],
    )
    feed = {
        "h": np.array([1.5, -2.0, 65504], np.float16),
        "x": np.array([0.1, 1e-8, 70000], np.float32),
        "q": np.array([-128, 5, 127], np.int8),
    }
    ref = runtime.session(proto, optimization="disabled").run(None, feed)
    folded = onnx.ModelProto()
    folded.CopyFrom(proto)
    removed = fold_cast_chains(folded.graph)
    casts = [(n.input[0], n.output[0]) for n in folded.graph.node if n.op_type == "Cast"]
    assert removed == 4
    assert ("x", "x16") in casts and ("x16", "x32") in casts and ("q", "q16") in casts and len(casts) == 3
    got = runtime.session(folded, optimization="disabled").run(None, feed)
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert fold_cast_chains(folded.graph) == 0


def test_subgraphs_left_fp32_with_a_reason():
    proto = onnx.load(FIXTURES / "control_flow.onnx")
    model = from_proto(proto)
    report = convert_precision(model, None, "ort", {"kernels": "all", "latency_runs": 0, "min_weight_elements": 1})
    kept = {k.op_type: k.why for k in report.kept}
    assert kept["If"].startswith("control flow") and kept["Loop"].startswith("control flow")
    assert report.random_data and any("random" in w for w in report.warnings)
    assert np.isfinite(report.error_rel) and report.error_rel < 1e-2
    # a weight the Loop body reads is stored in fp16; the body reads an fp32 Cast of it from the outer graph
    out = model.to_onnx()
    halves = {t.name for t in out.graph.initializer if t.data_type == TensorProto.FLOAT16}
    loop = next(n for n in out.graph.node if n.op_type == "Loop")
    body_reads = {x for n in loop.attribute[0].g.node for x in n.input}
    casts = {n.output[0]: n.input[0] for n in out.graph.node if n.op_type == "Cast"}
    assert any(casts.get(x) in halves for x in body_reads)


def test_bf16_runs_under_onnxruntime_cpu():
    proto, feeds = _integer_net()
    out, report = _convert(proto, feeds, precision="bf16", min_weight_elements=1)
    assert np.isfinite(report.error_rel)
    assert any(t.data_type == TensorProto.BFLOAT16 for t in out.graph.initializer)


# --------------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------------
def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "graphopt", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--precision-block", "Exp"], "--precision-block needs --precision fp16 or bf16"),
        (["--precision", "fp16", "--quantize", "int8", "--calib-random", "2"], "not both"),
        (["--precision", "fp16", "--calib-data", "nowhere"], "nowhere: calibration data directory not found"),
        (["--precision", "fp8"], "invalid choice: 'fp8'"),
        (["--no-keep-io-types"], "--no-keep-io-types needs --precision"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, extra, message):
    r = _cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(tmp_path / "out.onnx"), *extra)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error:") and message in lines[0], r.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_cli_op_types_that_select_nothing_are_warned(tmp_path):
    """An op type the model lacks is a warning (one command line over many models); a node name that is no node's
    (--precision-keep) is an error (tests/test_node_names.py)."""
    out = tmp_path / "cnn.fp16.onnx"
    flags = ["--precision", "fp16", "--calib-random", "2", "--precision-block", "Relu"]
    r = _cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), *flags, "--precision-allow", "Rangee", "--json")
    assert r.returncode == 0, r.stderr
    assert "--precision-allow 'Rangee' matches no node" in r.stderr and "'Relu'" not in r.stderr


def test_cli_fp16_end_to_end(tmp_path):
    out = tmp_path / "cnn.fp16.onnx"
    r = _cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--precision", "fp16", "--json", "--target",
             "tensorrt")  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    p = summary["precision"]
    assert p["random_data"] and "random" in r.stderr  # no calibration data: said so
    assert p["converted_nodes"] > 0 and p["tensorrt_violations"] == []
    assert p["param_bytes_after"] < 0.6 * p["param_bytes_before"]
    assert p["output_error_rel"] < 1e-2
    proto = onnx.load(out)
    assert set(_types(proto).values()) == {F}
    runtime.session(proto)


# --------------------------------------------------------------------------------------------------------------------
# random graphs
# --------------------------------------------------------------------------------------------------------------------
UNARY = ["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Exp"]


@st.composite
def graphs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    n = draw(st.integers(1, 6))
    nodes, inits, live = [], [], ["x"]
    for k in range(n):
        kind = draw(st.sampled_from(["unary", "add", "mul", "matmul", "scale"]))
        a = draw(st.sampled_from(live))
        out = f"t{k}"
        if kind == "unary":
            nodes.append(helper.make_node(draw(st.sampled_from(UNARY)), [a], [out], name=f"n{k}"))
        elif kind in ("add", "mul"):
            b = draw(st.sampled_from(live))
            nodes.append(helper.make_node(kind.capitalize(), [a, b], [out], name=f"n{k}"))
        elif kind == "matmul":
            inits.append(numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), f"w{k}"))
            nodes.append(helper.make_node("MatMul", [a, f"w{k}"], [out], name=f"n{k}"))
        else:
            s = draw(st.sampled_from([1e-3, 0.5, 1e3, 1e5]))
            inits.append(numpy_helper.from_array(np.float32(s), f"s{k}"))
            nodes.append(helper.make_node("Mul", [a, f"s{k}"], [out], name=f"n{k}"))
        live.append(out)
    outs = [helper.make_tensor_value_info(live[-1], F, None)]
    if draw(st.booleans()) and len(live) > 2:
        outs.append(helper.make_tensor_value_info(live[1], F, None))
    proto = _model(nodes, [helper.make_tensor_value_info("x", F, [4, 8])], outs, inits)
    feeds = [{"x": rng.standard_normal((4, 8)).astype(np.float32)} for _ in range(2)]
    return proto, feeds


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.sampled_from(["all", "auto"]))
def test_random_graphs_convert_safely(case, kernels):
    proto, feeds = case
    refs = [_run(proto, f) for f in feeds]
    finite = all(np.isfinite(r).all() for rs in refs for r in rs)
    out, report = _convert(proto, feeds, kernels=kernels)
    assert _types(out) == _types(proto)
    again = onnx.ModelProto()
    again.CopyFrom(out)
    assert fold_cast_chains(again.graph) == 0  # no redundant Cast chain left
    for f, rs in zip(feeds, refs, strict=True):
        got = _run(out, f)
        for r, g in zip(rs, got, strict=True):
            if not finite:
                continue
            assert np.isfinite(g).all()
            scale = max(1.0, float(np.abs(r).max()))
            assert float(np.abs(g - r).max()) <= 2e-2 * scale


def test_python_api_and_pass():
    import graphopt
    from graphopt.errors import GraphoptError

    proto, feeds = _integer_net()
    report = []
    out = graphopt.optimize(proto, precision="fp16", calibration=feeds, report=report,
                            precision_options={"kernels": "all", "latency_runs": 0})  # fmt: skip
    p = report[0].results["precision"]
    assert p.converted >= 6 and p.error_rel == 0.0 and isinstance(out, onnx.ModelProto)
    with pytest.raises(GraphoptError, match="precision must be 'fp16' or 'bf16'"):
        graphopt.optimize(proto, precision="fp8")
    with pytest.raises(GraphoptError, match="not both"):
        graphopt.optimize(proto, precision="fp16", quantize="int8", calibration=feeds)
    with pytest.raises(GraphoptError, match="unknown precision option 'keep_io'"):
        graphopt.optimize(proto, precision="fp16", precision_options={"keep_io": False})
    report = []
    graphopt.optimize(proto, passes="precision{precision=bf16,kernels=all}", calibration=feeds, report=report)
    r = report[0].results["precision"]
    assert r.precision == "bf16" and r.converted > 0 and report[0].stats[0].counts["converted"] == r.converted


def test_cli_fp16_latency_line_is_a_speed_up_like_int8s(tmp_path):
    """int8's summary says `speed: 2.12x fp32` (higher is faster); fp16's says the same kind of ratio, not a time
    ratio: the figure is the fp32 time over the fp16 time it prints."""
    import re

    out = tmp_path / "m.fp16.onnx"
    r = _cli("optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), "--precision", "fp16", "--calib-random", "2")
    assert r.returncode == 0, r.stderr
    line = next(line for line in r.stdout.splitlines() if "CPU latency" in line)
    m = re.search(r"latency ([\d.]+) ms -> ([\d.]+) ms \(speed: ([\d.]+)x fp32; median\)", line)
    assert m, line
    a, b, speed = map(float, m.groups())
    # the times are printed to 0.01 ms, the speed-up from the unrounded ones: it lies within the rounding's bounds
    assert (a - 0.005) / (b + 0.005) - 0.005 <= speed <= (a + 0.005) / max(b - 0.005, 1e-9) + 0.005, line
