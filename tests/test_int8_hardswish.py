"""Squeeze-excitation gates ``a * HardSigmoid(b)`` as QLinearMul where the gate's Mul is quantized (float where
it is excluded), hard-swish outputs quantized before a float reader, and the integer-clip form of hard-sigmoid
(target ort, ``transform._integer_hard_sigmoids``; off by default, ``Options.integer_clip_hard_sigmoid``).

Where ``beta / alpha`` is a whole number of the input's steps (the input's scale made so), ``HardSigmoid(x)`` is a
uint8 Clip of ``x``'s integers read back with zero point ``z - n``: exact. Checked under onnxruntime on every uint8
code of the input against the float op; the fallbacks (a coarse input, a range above the clip's lower bound, opset 11)
keep the QLinearAdd form; whole nets run the gate (and the Clip, when asked for) as integer kernels.
"""

from __future__ import annotations

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
from graphopt.quantize.transform import (
    CLIP_MIN_STEPS,
    _insert_qdq,
    _integer_hard_sigmoids,
    clips_read_integers,
)
from graphopt.tools import runtime
from tests.conftest import ran_ops


def _island(op: str, alpha: float, beta: float, px: Params, py: Params, opset: int = 17):
    """x -> Q/DQ -> op -> Q/DQ -> y rewritten by ``_integer_hard_sigmoids`` with the integer-clip form allowed;
    returns the model, x's parameters after the rewrite, and the ops written."""
    attrs = {"alpha": alpha, "beta": beta} if op == "HardSigmoid" else {}
    graph = helper.make_graph(
        [
            helper.make_node(op, ["x"], ["y"], name="act", **attrs),
            helper.make_node("Identity", ["y"], ["out"], name="read"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [256])],  # y itself is no graph output
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [256])],
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))
    g = model.graph
    x, y = g.inputs[0], next(n for n in g if n.op_type == "Identity").inputs[0]
    params = {id(x): px, id(y): py}
    clips: list = []
    quantized = _integer_hard_sigmoids(g, params, [x, y], None, clips)
    ops = [n.op_type for n in g]
    for v in quantized:
        _insert_qdq(g, v, params[id(v)])
    clips_read_integers(clips)
    return model.to_onnx(), params[id(x)], ops


def _dq(q: np.ndarray, p: Params) -> np.ndarray:
    return ((q.astype(np.float64) - p.zero_point) * np.float32(p.scale)).astype(np.float32)


def _q(x: np.ndarray, p: Params) -> np.ndarray:
    return np.clip(np.rint(x / np.float32(p.scale)) + p.zero_point, 0, 255)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["HardSigmoid", "HardSwish"]),
    st.sampled_from([1.0 / 6.0, 0.2, 0.1]),
    st.floats(0.004, 3.0 / CLIP_MIN_STEPS),
    st.integers(0, 255),
)
def test_clip_form_is_the_op_on_every_code(op, alpha, sx, zx) -> None:
    beta = 0.5
    if op == "HardSwish":
        alpha = 1.0 / 6.0
    shift = beta / (alpha if op == "HardSwish" else float(np.float32(alpha)))  # the attribute is a float32
    steps = int(np.floor(shift / sx * (1 + 1e-6)))
    fits = steps >= CLIP_MIN_STEPS and zx - steps >= 0
    top = (255 - zx) * sx * 1.1  # above x's largest value after the rewrite (its scale coarsened by at most 1/12)
    py = Params(1.0 / 255.0, 0, False) if op == "HardSigmoid" else Params.for_range(-0.375, max(top, 3.0), False)
    model, px, ops = _island(op, alpha, beta, Params(sx, zx, False), py)
    assert ("Clip" in ops) == fits and ("Add" in ops) != fits, ops
    if fits:
        assert px.zero_point == zx and px.scale == pytest.approx(shift / steps, rel=1e-12)
        assert sx * (1 - 1e-6) <= px.scale <= sx * (1 + 1.0 / steps)  # coarser by at most one step in `steps`
    x = _dq(np.arange(256), px)  # every value the quantized input can take, at its (new) parameters
    hs = np.clip(alpha * x.astype(np.float64) + beta, 0.0, 1.0)
    want = hs if op == "HardSigmoid" else x * hs
    for level in ("all", "disabled"):
        got = runtime.session(model, optimization=level).run(None, {"x": x})[0]
        if op == "HardSigmoid" and fits:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # exact: no rounding at all
        elif op == "HardSigmoid":
            assert np.all(np.abs(got - want) <= 0.5 / 255.0 + 1e-6), level  # the QLinearAdd form: the 1/255 grid
        elif fits:
            exact = _dq(_q(want, py), py)  # the float op, then the output's quantization
            assert np.all(np.abs(got - exact) <= py.scale * 1.001), level
            frac = np.abs(want / np.float32(py.scale)) % 1.0
            assert np.all((got == exact) | (np.abs(frac - 0.5) < 1e-3)), level  # off by one code at ties only
        else:
            tol = np.abs(x) * 0.5 / 255.0 + py.scale * 1.001 + 1e-6
            assert np.all(np.abs(got - want) <= tol + py.scale), level


def test_coarse_input_keeps_the_qlinearadd_form() -> None:
    """Fewer than CLIP_MIN_STEPS input steps in the shift: the scale would coarsen too much, so it is left alone."""
    px = Params(3.0 / (CLIP_MIN_STEPS - 1) - 1e-3, 128, False)
    _, after, ops = _island("HardSwish", 1.0 / 6.0, 0.5, px, Params(0.05, 40, False))
    assert "Clip" not in ops and "Add" in ops and after == px


@pytest.fixture
def clip_form(monkeypatch):
    """The driver's transform options with the integer-clip form on."""
    import functools

    from graphopt.quantize import transform

    monkeypatch.setattr(transform, "Options", functools.partial(transform.Options, integer_clip_hard_sigmoid=True))


def test_opset_11_keeps_the_qlinearadd_form(tmp_path, clip_form) -> None:
    """Clip on uint8 is opset 12: an opset-11 model quantized for ort (upgraded to 13 for per-channel weights) gets
    the Clip form; with per-channel off it stays at 11 and keeps QLinearAdd."""
    proto = _se_net(0, opset=11, hard_swish_op=False)
    rng = np.random.default_rng(1)
    feeds = [{"input": rng.standard_normal((1, 3, 12, 16)).astype(np.float32) * 2} for _ in range(4)]
    model = from_proto(graphopt.optimize(proto, level=2))
    quantize_model(model, feeds, "ort", {"cache": False, "per_channel": False})
    out = model.to_onnx()
    opset = next(o.version for o in out.opset_import if o.domain in ("", "ai.onnx"))
    ops = [n.op_type for n in out.graph.node]
    assert opset < 12 and "Clip" not in ops and "Add" in ops, (opset, ops)
    runtime.session(out)


def _se_net(seed: int, opset: int = 17, hard_swish_op: bool = True) -> onnx.ModelProto:
    """Conv -> hard-swish -> depthwise Conv -> hard-swish -> squeeze-excitation (GlobalAveragePool, Conv, Relu, Conv,
    HardSigmoid(0.2, 0.5), Mul by the [1,C,1,1] gate) -> 1x1 Conv: the PP-LCNet block. ``hard_swish_op``: the
    HardSwish op (opset 14), else PaddlePaddle's x * Clip(x + 3, 0, 6) / 6."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def hswish(x, y):
        if hard_swish_op:
            nodes.append(helper.make_node("HardSwish", [x], [y]))
            return
        clip_in = [f"{y}_a", const(f"{y}_0", 0.0), const(f"{y}_6", 6.0)] if opset >= 11 else [f"{y}_a"]
        clip_attrs = {} if opset >= 11 else {"min": 0.0, "max": 6.0}
        nodes.extend(
            [
                helper.make_node("Add", [x, const(f"{y}_3", 3.0)], [f"{y}_a"]),
                helper.make_node("Clip", clip_in, [f"{y}_c"], **clip_attrs),
                helper.make_node("Mul", [x, f"{y}_c"], [f"{y}_m"]),
                helper.make_node("Div", [f"{y}_m", const(f"{y}_six", 6.0)], [y]),
            ]
        )

    c = 16
    nodes.append(
        helper.make_node(
            "Conv",
            ["input", const("w0", rng.standard_normal((c, 3, 3, 3)) * 0.5), const("b0", rng.standard_normal(c) * 0.3)],
            ["c0"],
            pads=[1] * 4,
        )
    )
    hswish("c0", "h0")
    nodes.append(
        helper.make_node(
            "Conv",
            ["h0", const("w1", rng.standard_normal((c, 1, 3, 3)) * 0.5), const("b1", rng.standard_normal(c) * 0.3)],
            ["c1"],
            pads=[1] * 4,
            group=c,
        )
    )
    hswish("c1", "h1")
    nodes += [
        helper.make_node("GlobalAveragePool", ["h1"], ["g"]),
        helper.make_node("Conv", ["g", const("w2", rng.standard_normal((4, c, 1, 1)) * 0.5)], ["s0"]),
        helper.make_node("Relu", ["s0"], ["s1"]),
        helper.make_node(
            "Conv", ["s1", const("w3", rng.standard_normal((c, 4, 1, 1)) * 0.8), const("b3", np.ones(c))], ["s"]
        ),
        helper.make_node("HardSigmoid", ["s"], ["gate"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["h1", "gate"], ["se"]),
        helper.make_node("Conv", ["se", const("w4", rng.standard_normal((8, c, 1, 1)) * 0.4)], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "se",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 12, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 12, 16])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _fused(model: onnx.ModelProto, tmp_path) -> list[str]:
    return ran_ops(model, tmp_path / "optimized.onnx")


def _se_block(tmp_path, opset, hard_swish_op, hsig):
    proto = _se_net(2, opset, hard_swish_op)
    rng = np.random.default_rng(3)
    feeds = [{"input": (rng.standard_normal((1, 3, 12, 16)) * 2).astype(np.float32)} for _ in range(4)]
    model = from_proto(graphopt.optimize(proto, level=2))
    report = quantize_model(model, feeds, "ort", {"cache": False, "choice": "static"})
    quantized = model.to_onnx()
    fused = _fused(quantized, tmp_path)
    other = "QLinearAdd" if hsig == "Clip" else "Clip"
    assert fused.count("QLinearMul") == 3 and fused.count(hsig) == 3, fused  # 2 hard-swish + the gate
    assert not {"Mul", "HardSigmoid", "Add", "Div", other} & set(fused), fused
    assert fused.count("DequantizeLinear") <= 1 and fused.count("QuantizeLinear") <= 1, fused  # the ends only
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(quantized).run(None, f) for f in feeds]
    rel = output_error(ref, got)[0]
    assert rel < 0.05 and abs(rel - report.error_rel) < 1e-6


@pytest.mark.parametrize("opset,hard_swish_op", [(17, True), (11, False)])
def test_se_block_runs_the_gate_as_qlinearmul(tmp_path, opset, hard_swish_op) -> None:
    """The gate's Mul quantized: the gate is QLinearMul, each hard-sigmoid a QLinearAdd, no float island left."""
    _se_block(tmp_path, opset, hard_swish_op, "QLinearAdd")


@pytest.mark.parametrize("opset,hard_swish_op", [(17, True), (11, False)])
def test_se_block_with_the_clip_form(tmp_path, clip_form, opset, hard_swish_op) -> None:
    """The integer-clip form asked for: each hard-sigmoid a uint8 Clip (the opset-11 model is upgraded to 13)."""
    _se_block(tmp_path, opset, hard_swish_op, "Clip")


def _flat_net() -> onnx.ModelProto:
    """1x1 Conv -> hard-swish -> 5x5 depthwise Conv over a 3x96 map (the speed rule keeps it float: a hard-swish
    reads it) -> hard-swish -> 1x1 Conv: ppocrv4-cls's last stages."""
    rng = np.random.default_rng(5)
    c = 24

    def w(name, shape, k=0.4):
        return numpy_helper.from_array((rng.standard_normal(shape) * k).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "w0", "b0"], ["c0"]),
        helper.make_node("HardSwish", ["c0"], ["h0"]),
        helper.make_node("Conv", ["h0", "w1", "b1"], ["c1"], group=c, pads=[2] * 4),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "w2"], ["out"]),
    ]
    inits = [w("w0", (c, 8, 1, 1)), w("b0", (c,), 1.0), w("w1", (c, 1, 5, 5)), w("b1", (c,), 1.0)]
    inits.append(w("w2", (8, c, 1, 1)))
    graph = helper.make_graph(
        nodes,
        "flat",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 3, 96])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 3, 96])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_hard_swish_before_a_float_layer_runs_on_integers(tmp_path) -> None:
    """The depthwise Conv kept float by the speed rule: the hard-swish before it (its input quantized) still runs as
    QLinearAdd + QLinearMul, its output quantized for the float Conv to read, not as two dequantizations of the same
    tensor, HardSigmoid and Mul in float."""
    proto = _flat_net()
    rng = np.random.default_rng(6)
    feeds = [{"input": (rng.standard_normal((1, 8, 3, 96)) * 2).astype(np.float32)} for _ in range(4)]
    model = from_proto(graphopt.optimize(proto, level=2))
    report = quantize_model(model, feeds, "ort", {"cache": False})
    assert [c.mode for c in report.choices if c.op_type == "Conv" and "speed" in c.reason] == ["float"]
    quantized = model.to_onnx()
    fused = _fused(quantized, tmp_path)
    assert fused.count("QLinearMul") == 1 and fused.count("QLinearAdd") == 1, fused  # the first hard-swish
    assert fused.count("HardSigmoid") <= 1 and fused.count("Mul") <= 1, fused  # the second, after the float Conv
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(quantized).run(None, f) for f in feeds]
    assert output_error(ref, got)[0] < 0.05


@pytest.mark.parametrize(
    "exclude", [{"exclude": ["gate_mul"]}, {"exclude_ops": ["Mul"]}, {"exclude_regex": ["^gate_"]}]
)
def test_an_excluded_gate_stays_float(tmp_path, exclude) -> None:
    """The user's exclusion of the gate's Mul is honoured: the gate's HardSigmoid and Mul run float (the hard-swishes,
    HardSwish ops here, stay integer)."""
    proto = _se_net(2, 17, True)
    next(n for n in proto.graph.node if n.op_type == "Mul").name = "gate_mul"
    rng = np.random.default_rng(3)
    feeds = [{"input": (rng.standard_normal((1, 3, 12, 16)) * 2).astype(np.float32)} for _ in range(4)]
    model = from_proto(graphopt.optimize(proto, level=2))
    quantize_model(model, feeds, "ort", {"cache": False, "choice": "static", **exclude})
    fused = _fused(model.to_onnx(), tmp_path)
    assert fused.count("HardSigmoid") == 1 and fused.count("Mul") == 1, fused
    assert fused.count("QLinearMul") == 2, fused  # the two hard-swishes
