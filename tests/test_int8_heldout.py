"""Int8 error on held-out inputs (issue 16's comparison with quantize_static): a Concat whose inputs' ranges are far
apart keeps each input's own scale (``choice.concat_choices``), where one shared scale made the narrow input's values
coarse. Small graphs, real onnxruntime, error measured on feeds the calibration did not see."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.quantize import choice
from graphopt.tools import runtime


def _two_branches(gain: float, side: bool = True) -> onnx.ModelProto:
    """x [1, 8, 16, 16] -> Conv a (4 channels) and Conv b (the same, times ``gain``) -> Relu each -> Concat [1, 8, ...]
    -> Conv 1x1 y, whose weights read a's channels ``gain`` times harder than b's; with ``side``, a Conv z also reads
    a's Relu (as a C2f block's next bottleneck reads a residual sum its Concat takes), a second output."""
    rng = np.random.default_rng(0)
    wa = (rng.standard_normal((4, 8, 3, 3)) * 0.2).astype(np.float32)
    wb = (rng.standard_normal((4, 8, 3, 3)) * 0.2 * gain).astype(np.float32)
    wy = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    wy[:, 4:] /= gain
    inits = [numpy_helper.from_array(a, n) for a, n in ((wa, "wa"), (wb, "wb"), (wy, "wy"))]
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="relu_a"),
        helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["br"], name="relu_b"),
        helper.make_node("Concat", ["ar", "br"], ["c"], name="cat", axis=1),
        helper.make_node("Conv", ["c", "wy"], ["y"], name="conv_y"),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])]
    if side:
        inits.append(numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "wz"))
        nodes.append(helper.make_node("Conv", ["ar", "wz"], ["z"], name="conv_z"))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 16, 16]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])], outputs, inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(seed: int, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 8, 16, 16)).astype(np.float32)} for _ in range(n)]


def _sqnr(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    sig = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in ref)
    noise = sum(float(np.sum((r.astype(np.float64) - g) ** 2)) for r, g in zip(ref, got, strict=True))
    return 10.0 * np.log10(sig / noise)


def _quantize(model: onnx.ModelProto, **options: object) -> tuple[onnx.ModelProto, object]:
    report: list = []
    q = graphopt.optimize(
        model,
        quantize="int8",
        calibration=_feeds(100, 4),
        quantize_options={"cache": False, "measure_speed": False, **options},
        report=report,
    )
    return q, report[0].quantization


def _held_out(float_model: onnx.ModelProto, quantized: onnx.ModelProto) -> list[float]:
    """The SQNR of each output over 8 feeds the calibration did not see."""
    feeds = _feeds(0, 8)
    ref_s, q_s = runtime.session(float_model), runtime.session(quantized)
    ref, got = [ref_s.run(None, f) for f in feeds], [q_s.run(None, f) for f in feeds]
    return [_sqnr([r[i] for r in ref], [g[i] for g in got]) for i in range(len(ref[0]))]


def _concat_scales(quantized: onnx.ModelProto) -> list[float]:
    """The scale each input of the Concat is read with (its DequantizeLinear's)."""
    prod = {o: n for n in quantized.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
    (cat,) = [n for n in quantized.graph.node if n.op_type == "Concat"]
    scales = []
    for name in cat.input:
        dq = prod[name]
        assert dq.op_type == "DequantizeLinear"
        scales.append(float(inits[dq.input[1]]))
    return scales


def test_concat_of_far_apart_ranges_keeps_each_input_scale() -> None:
    """Branch b's range is ~20x branch a's: one shared scale leaves a's values ~26 dB coarser than their own, for the
    Concat and for Conv z, which reads them too. The Concat is kept float, a and b are read with their own scales, and
    the held-out SQNR is far above one shared scale's (the choice off)."""
    model = _two_branches(20.0)
    q, rep = _quantize(model)
    cat = {c.name: c for c in rep.choices}["cat"]
    assert cat.mode == "float" and "coarser" in cat.reason
    sa, sb = _concat_scales(q)
    assert sb / sa > 8.0  # each its own: b's step is ~20x a's
    shared, _ = _quantize(model, choice="static")  # every planned layer static: the Concat shares one scale
    s1, s2 = _concat_scales(shared)
    assert s1 == s2
    (own_y, own_z), (shared_y, shared_z) = _held_out(model, q), _held_out(model, shared)
    assert own_z > shared_z + 8.0, (own_z, shared_z)  # z reads a at its own scale (33 against 22 dB)
    assert own_y > shared_y - 1.0, (own_y, shared_y)  # y reads the Concat's output at the union's scale either way


def test_concat_of_close_ranges_shares_one_scale() -> None:
    """Ranges within 2x of each other: the Concat stays static, one scale for its inputs and output (onnxruntime's
    QLinearConcat then copies bytes), and the choice says by how much the shared scale is coarser."""
    q, rep = _quantize(_two_branches(1.2))
    cat = {c.name: c for c in rep.choices}["cat"]
    assert cat.mode == "static" and f"{choice.CONCAT_SHARED_DB:g} at most" in cat.reason
    s1, s2 = _concat_scales(q)
    assert s1 == pytest.approx(s2)


def test_concat_alone_reading_the_narrow_input_shares_one_scale() -> None:
    """Ranges ~20x apart but the Concat alone reads the narrow input and a quantized Conv reads its output: that Conv
    reads the union's scale whatever the Concat does, so the Concat stays static (QLinearConcat copies bytes)."""
    q, rep = _quantize(_two_branches(20.0, side=False))
    assert {c.name: c for c in rep.choices}["cat"].mode == "static"
    s1, s2 = _concat_scales(q)
    assert s1 == pytest.approx(s2)
