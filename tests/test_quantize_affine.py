"""A scalar-constant Mul/Add chain ``u = A * h + B`` before a quantized Conv input runs as no kernel (target ort).

``transform._affine_in_params`` quantizes ``h`` so that its integers, read back with ``u``'s parameters, are ``u``'s
(``B`` rounded to the grid, the rounding put back into the Conv's bias). Checked under onnxruntime (optimized and not)
against the float chain on random inputs, and on a PP-LCNet block (learnable affine blocks after HardSwish) whose
quantized model onnxruntime runs without a float Mul, Add or HardSigmoid.
"""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.onnx_io import from_proto
from graphopt.quantize import analysis, driver, output_error, quantize_model, transform
from graphopt.quantize.analysis import Params
from graphopt.quantize.transform import _affine_in_params, _insert_qdq
from graphopt.tools import runtime


def _chain_model(ops: list[tuple[str, float]], pads: int, cin: int, seed: int) -> onnx.ModelProto:
    """x -> Relu -> h -> the ops' chain -> u -> depthwise-or-full Conv (pads) -> y."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((rng.standard_normal((3, cin, 3, 3)) * 0.5).astype(np.float32), "w"),
        numpy_helper.from_array((rng.standard_normal(3) * 0.1).astype(np.float32), "bias"),
    ]
    nodes, prev = [helper.make_node("Relu", ["x"], ["h"])], "h"
    for i, (op, k) in enumerate(ops):
        inits.append(numpy_helper.from_array(np.array([k], np.float32), f"k{i}"))
        nodes.append(helper.make_node(op, [prev, f"k{i}"] if i % 2 else [f"k{i}", prev], [f"a{i}"]))
        prev = f"a{i}"
    nodes.append(helper.make_node("Conv", [prev, "w", "bias"], ["y"], pads=[pads] * 4))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, 7, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _affine(ops: list[tuple[str, float]]) -> tuple[float, float]:
    a, b = 1.0, 0.0
    for op, k in ops:
        a, b = (a * k, b * k) if op == "Mul" else (a, b + k)
    return a, b


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example([("Mul", 0.2)], False, 0.0, 604)  # u / s_u rounds to exactly 187.5 in float32 (188), h / s_h to 187.49998
@given(
    st.lists(st.tuples(st.sampled_from(["Mul", "Add"]), st.floats(0.2, 3.0)), min_size=1, max_size=3),
    st.booleans(),
    st.floats(-2.0, 2.0),
    st.integers(0, 2**16),
)
def test_chain_is_read_through_the_parameters_within_a_step(ops, padded, sign_b, seed) -> None:
    ops = [(op, k * (np.sign(sign_b) or 1.0) if op == "Add" else k) for op, k in ops]
    cin = 2
    proto = _chain_model(ops, int(padded), cin, seed)
    model = from_proto(proto)
    g = model.graph
    u = next(n for n in g if n.op_type == "Conv").inputs[0]
    a, b = _affine(ops)
    x = (np.random.default_rng(seed).standard_normal((1, cin, 7, 7)) * 2).astype(np.float32)
    h = np.maximum(x, 0.0).astype(np.float64)
    pu = Params.for_range(min(b, (a * h + b).min()), max(b, (a * h + b).max()), False)  # u's calibrated range
    params = {id(u): pu}
    read_as: dict[str, Params] = {}
    quantized = _affine_in_params(g, params, [u], read_as)
    if not 0 <= pu.zero_point + round(b / pu.scale) <= 255:
        assert quantized == [u] and not read_as  # B off the grid's range: left alone
        return
    assert [n.op_type for n in g] == ["Relu", "Conv"]
    (v,) = quantized
    assert v.name == "h" and read_as == {"h": pu}
    for q in quantized:
        _insert_qdq(g, q, params[id(q)], read_as.get(q.name))
    rewritten = model.to_onnx()
    want = runtime.session(proto, optimization="disabled").run(None, {"x": x})[0].astype(np.float64)
    w = numpy_helper.to_array(proto.graph.initializer[0]).astype(np.float64)
    # each input within half a step of u, plus the rounding of B put back: interior within sum|W| * s_u / 2; a padded
    # border also sees the shift of its padded taps, at most half a step each
    per_channel = np.abs(w).reshape(3, -1).sum(axis=1).reshape(1, 3, 1, 1)
    tol = per_channel * pu.scale * (1.0 if padded else 0.5) * 1.0001 + 1e-4
    # the rewrite is Q(u - delta) read back plus delta: the reference graph computes that in those steps
    delta = b - pu.scale * round(b / pu.scale)
    ref = _shifted_reference(proto, pu, delta)
    exact, codes_u = runtime.session(_with_output(ref, "r1"), optimization="disabled").run(None, {"x": x})
    q_name = next(n.output[0] for n in rewritten.graph.node if n.op_type == "QuantizeLinear")
    codes_h = runtime.session(_with_output(rewritten, q_name), optimization="disabled").run(None, {"x": x})[1]
    # the integers are Q(u - delta)'s but where (A * h + B - delta) / s_u lies at a half step: the rewrite rounds
    # h / (s_u / A), the reference the float chain's own float32 u, and each may break such a tie its own way (seen:
    # 11 of 3.9M codes, all within 1.4e-5 of a half step, the rewrite's nearer the exact value in 8). A flip must be
    # one code, at a tie (1e-3 of a step bounds the float32 rounding of the chain and of the two divisions)
    flips = codes_h.astype(np.int64) - codes_u.astype(np.int64)
    t = (a * h + b - delta) / pu.scale + pu.zero_point
    at_tie = np.abs(np.abs(t - np.floor(t)) - 0.5) <= 1e-3
    assert np.all(np.abs(flips) <= 1) and np.all(at_tie[flips != 0]), (flips[flips != 0], t[flips != 0])
    exact = exact + np.float32(pu.scale) * _conv_no_bias(flips.astype(np.float64), w, int(padded))
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1)) if padded else (slice(None),) * 4
    for level in ("all", "disabled"):
        got = runtime.session(rewritten, optimization=level).run(None, {"x": x})[0]
        assert np.all(np.abs(got - want) <= tol), (level, np.abs(got - want).max(), tol.min())
        np.testing.assert_allclose(got[inner], exact[inner], rtol=1e-4, atol=1e-4)


def _with_output(proto: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """``proto`` with ``name`` (a uint8 tensor) also a graph output."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    out.graph.output.append(helper.make_tensor_value_info(name, TensorProto.UINT8, None))
    return out


def _conv_no_bias(x: np.ndarray, w: np.ndarray, pads: int) -> np.ndarray:
    """The Conv (stride 1, no group, no bias) of ``x`` with ``w``, zero padded by ``pads`` on each side."""
    x = np.pad(x, ((0, 0), (0, 0), (pads, pads), (pads, pads)))
    k = w.shape[-1]
    oh, ow = x.shape[2] - k + 1, x.shape[3] - k + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nchw,oc->nohw", x[:, :, i : i + oh, j : j + ow], w[:, :, i, j])
    return out


def _shifted_reference(proto: onnx.ModelProto, pu: Params, delta: float) -> onnx.ModelProto:
    """``proto`` with ``Q(u - delta)`` dequantized, plus ``delta``, as the Conv's input."""
    ref = onnx.ModelProto()
    ref.CopyFrom(proto)
    g = ref.graph
    conv = next(n for n in g.node if n.op_type == "Conv")
    u = conv.input[0]
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(delta, np.float32), "delta"),
            numpy_helper.from_array(np.array(pu.scale, np.float32), "su"),
            numpy_helper.from_array(np.array(pu.zero_point, np.uint8), "zu"),
        ]
    )
    steps = [
        helper.make_node("Sub", [u, "delta"], ["r0"]),
        helper.make_node("QuantizeLinear", ["r0", "su", "zu"], ["r1"]),
        helper.make_node("DequantizeLinear", ["r1", "su", "zu"], ["r2"]),
        helper.make_node("Add", ["r2", "delta"], ["r3"]),
    ]
    conv.input[0] = "r3"
    nodes = list(g.node)
    i = nodes.index(conv)
    del g.node[:]
    g.node.extend(nodes[:i] + steps + nodes[i:])
    return ref


def test_chain_is_left_alone_when_not_provably_an_affine_read() -> None:
    """A negative scale (a Q scale must be positive), an intermediate read twice, and a chain read by a non-Conv."""
    for ops, extra in [([("Mul", -0.5), ("Add", 0.1)], None), ([("Mul", 0.5), ("Add", 0.1)], "a0")]:
        proto = _chain_model(ops, 1, 2, 0)
        if extra:
            proto.graph.output.append(helper.make_tensor_value_info(extra, TensorProto.FLOAT, None))
        model = from_proto(proto)
        u = next(n for n in model.graph if n.op_type == "Conv").inputs[0]
        params = {id(u): Params(0.01, 100, False)}
        read_as: dict[str, Params] = {}
        assert _affine_in_params(model.graph, params, [u], read_as) == [u] and not read_as
        assert [n.op_type for n in model.graph] == ["Relu", *[op for op, _ in ops], "Conv"]
    proto = _chain_model([("Mul", 0.5)], 0, 2, 0)
    proto.graph.node.append(helper.make_node("Relu", ["a0"], ["r"]))
    proto.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    model = from_proto(proto)
    u = next(n for n in model.graph if n.op_type == "Conv").inputs[0]
    assert _affine_in_params(model.graph, {id(u): Params(0.01, 100, False)}, [u], {}) == [u]


def _lcnet_block(seed: int) -> onnx.ModelProto:
    """Conv -> HardSwish -> a * x + b -> depthwise 3x3 Conv (padded) -> HardSwish -> a * x + b -> 1x1 Conv: PP-LCNetV3's
    blocks with their learnable affine blocks after the activation."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    c = 8
    nodes.append(
        helper.make_node(
            "Conv",
            ["input", const("w0", rng.standard_normal((c, 3, 3, 3)) * 0.4), const("b0", rng.standard_normal(c) * 0.1)],
            ["c0"],
            pads=[1] * 4,
        )
    )
    nodes.append(helper.make_node("HardSwish", ["c0"], ["h0"]))
    nodes.append(helper.make_node("Mul", [const("a0", [0.7]), "h0"], ["m0"]))
    nodes.append(helper.make_node("Add", ["m0", const("s0", [-0.3])], ["l0"]))
    nodes.append(
        helper.make_node(
            "Conv",
            ["l0", const("w1", rng.standard_normal((c, 1, 3, 3)) * 0.4), const("b1", rng.standard_normal(c) * 0.1)],
            ["c1"],
            pads=[1] * 4,
            group=c,
        )
    )
    nodes.append(helper.make_node("HardSwish", ["c1"], ["h1"]))
    nodes.append(helper.make_node("Mul", ["h1", const("a1", [1.3])], ["m1"]))
    nodes.append(helper.make_node("Add", [const("s1", [0.2]), "m1"], ["l1"]))
    nodes.append(helper.make_node("Conv", ["l1", const("w2", rng.standard_normal((4, c, 1, 1)) * 0.4)], ["out"]))
    graph = helper.make_graph(
        nodes,
        "lcnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 12, 12])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_lcnet_block_runs_without_float_ops(tmp_path) -> None:
    """-O2 folds the affine before the 1x1 Conv into it (affine-conv); the one before the padded depthwise Conv is
    read through the quantization parameters: onnxruntime's optimized model has no float Mul, Add, HardSigmoid or
    Conv, and the error stays within that of the model with the chain run as a float island."""
    proto = _lcnet_block(0)
    o2 = graphopt.optimize(proto, level=2)
    assert [n.op_type for n in o2.graph.node].count("Mul") == 1  # the affine before the depthwise Conv is left
    rng = np.random.default_rng(1)
    feeds = [{"input": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(4)]
    model = from_proto(o2)
    quantize_model(model, feeds, "ort", {"cache": False, "choice": "static", "fallback": False})
    quantized = model.to_onnx()
    path = str(tmp_path / "optimized.onnx")
    runtime.session(quantized, optimized_path=path)
    fused = [n.op_type for n in onnx.load(path).graph.node]
    assert not {"Mul", "Add", "HardSigmoid", "HardSwish", "Conv"} & set(fused), fused
    assert fused.count("QLinearConv") == 3, fused
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(quantized).run(None, f) for f in feeds]
    err = output_error(ref, got)[0]

    # the same model with the chain left a float island (Options(affine_in_params=False))
    from graphopt.core.shape_inference import infer_shapes
    from graphopt.quantize import calibration as calib

    island = from_proto(o2)
    island.graph.name_unnamed_nodes()
    infer_shapes(island)
    sel = analysis.Selection()
    the_plan = analysis.plan(island.graph, "ort", sel)
    ranges = calib.collect(island, the_plan.tensors, feeds, cache=False).ranges("minmax", 99.999, symmetric=False)
    modes = {n.name: "static" for n in the_plan.nodes if n.op_type not in analysis.SHARE}
    options = transform.Options(affine_in_params=False)
    other = driver._with_modes(island.to_onnx(), "ort", sel, ranges, options, modes, driver.QuantizeConfig(), False)
    assert "Mul" in [n.op_type for n in other.graph.node]
    got_island = [runtime.session(other).run(None, f) for f in feeds]
    err_island = output_error(ref, got_island)[0]
    assert err < 0.05 and err < err_island * 1.5 + 1e-3, (err, err_island)


def test_chain_after_a_hard_sigmoid_keeps_its_affine_map() -> None:
    """Conv -> HardSigmoid -> 3 * h - 1.3 -> padded depthwise Conv: the chain read through the parameters must not
    then be dropped by the integer HardSigmoid rewrite (which reads its own integers on the 1/255 grid)."""
    rng = np.random.default_rng(0)
    inits = []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    c = 8
    nodes = [
        helper.make_node(
            "Conv",
            ["input", const("w0", rng.standard_normal((c, 3, 3, 3)) * 0.4), const("b0", rng.standard_normal(c) * 0.1)],
            ["c0"],
            pads=[1] * 4,
        ),
        helper.make_node("HardSigmoid", ["c0"], ["h0"]),
        helper.make_node("Mul", [const("a0", [3.0]), "h0"], ["m0"]),
        helper.make_node("Add", ["m0", const("s0", [-1.3])], ["l0"]),
        helper.make_node(
            "Conv",
            ["l0", const("w1", rng.standard_normal((c, 1, 3, 3)) * 0.4), const("b1", rng.standard_normal(c) * 0.1)],
            ["out"],
            pads=[1] * 4,
            group=c,
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "hsig",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c, 12, 12])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"input": np.random.default_rng(i).standard_normal((1, 3, 12, 12)).astype(np.float32)} for i in range(4)]
    model = from_proto(proto)
    quantize_model(model, feeds, "ort", {"cache": False, "choice": "static", "fallback": False})
    quantized = model.to_onnx()
    ref = [runtime.session(proto).run(None, f) for f in feeds]
    got = [runtime.session(quantized).run(None, f) for f in feeds]
    assert output_error(ref, got)[0] < 0.05
