"""Int4 weight-only quantization (graphopt.quantize.int4): blocks, MatMulNBits and blocked DequantizeLinear, GPTQ.

The exact tests run the quantized model under onnxruntime and compare it with numpy computing the same product with
the same dequantized weights (MatMulNBits at accuracy_level 0, i.e. float activations; the tensorrt form with
onnxruntime's graph optimizations off, since onnxruntime would otherwise fuse DequantizeLinear+MatMul into its own
int8-activation kernel).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from graphopt.cli import main
from graphopt.core.onnx_io import from_proto
from graphopt.errors import GraphoptError
from graphopt.quantize.int4 import (
    Blocks,
    hessian,
    pack,
    quantize_gptq,
    quantize_rtn,
    quantize_weights,
    reference_matmul,
)
from graphopt.tools import runtime


def _model(
    k: int, n: int, rng: np.random.Generator, *, gemm: bool = False, batch: tuple[int, ...] = (3,), opset: int = 17
) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray | None]:
    """x (batch..., K) @ W (K, N) [+ bias]: a MatMul, or a Gemm with transB=1 and a bias."""
    w = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if gemm else None
    if gemm:
        node = helper.make_node("Gemm", ["x", "W", "C"], ["y"], transB=1, name="layer")
        inits = [numpy_helper.from_array(np.ascontiguousarray(w.T), "W"), numpy_helper.from_array(bias, "C")]
        batch = batch[-1:]
    else:
        node = helper.make_node("MatMul", ["x", "W"], ["y"], name="layer")
        inits = [numpy_helper.from_array(w, "W")]
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*batch, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*batch, n])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), w, bias


def _run(proto: onnx.ModelProto, x: np.ndarray, optimization: str = "all") -> np.ndarray:
    sess = runtime.session(proto, optimization=optimization)
    return sess.run(None, {"x": x})[0]


def _check_exact(proto, w, bias, target, block, symmetric, rng, batch=(3,), bits8=()):
    model = from_proto(proto)
    result = quantize_weights(
        model, target, {"block_size": block, "symmetric": symmetric, "accuracy_level": 0, "bits8": bits8}
    )
    out = model.to_onnx()
    onnx.checker.check_model(out)
    ops = [n.op_type for n in out.graph.node]
    assert ops == (["MatMulNBits"] if target == "ort" else ["DequantizeLinear", proto.graph.node[0].op_type])
    bits = result.layers[0].bits
    blk = quantize_rtn(w, bits, block, symmetric)
    x = rng.standard_normal((*batch, w.shape[0])).astype(np.float32)
    got = _run(out, x, "all" if target == "ort" else "disabled")
    want = reference_matmul(x, blk, bias)
    scale = np.abs(x).sum(-1, keepdims=True) * np.abs(blk.dequantize()).max() + 1
    assert np.all(np.abs(got - want) <= 1e-5 * scale), np.abs(got - want).max()
    return out


# --------------------------------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("symmetric", [False, True])
def test_rtn_codes_are_in_range_and_round_to_nearest(symmetric) -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((100, 7)).astype(np.float32)
    blk = quantize_rtn(w, 4, 32, symmetric)
    assert blk.q.shape == (7, 4, 32) and blk.q.max() <= 15 and blk.scales.shape == (7, 4)
    assert (blk.zero_points is None) == symmetric
    deq = blk.dequantize()
    assert deq.shape == w.shape
    # every value is within half a step of its block's grid (no clipping: the grid covers the block's range)
    step = np.repeat(blk.scales.T, 32, axis=0)[:100]
    assert np.all(np.abs(deq - w) <= step / 2 + 1e-6)
    # and no other code of the grid is nearer
    zp = np.repeat(blk.zp().T, 32, axis=0)[:100].astype(np.float32)
    codes = np.rint(w / step + zp)
    assert np.array_equal(np.clip(codes, 0, 15), np.repeat(blk.q.transpose(1, 2, 0).reshape(-1, 7), 1, 0)[:100])


def test_pack_puts_the_first_value_in_the_low_nibble() -> None:
    assert pack(np.array([[1, 2, 15, 0, 7]], np.uint8), 4).tolist() == [[0x21, 0x0F, 0x07]]
    assert pack(np.array([[200, 3]], np.uint8), 8).tolist() == [[200, 3]]


def test_zero_blocks_and_constant_blocks_are_exact() -> None:
    w = np.zeros((64, 3), np.float32)
    w[32:, 1] = 0.5
    blk = quantize_rtn(w, 4, 32, False)
    assert np.array_equal(blk.dequantize(), w)


# --------------------------------------------------------------------------------------------------------------------
# the emitted graphs under onnxruntime
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["ort", "tensorrt"])
@pytest.mark.parametrize("gemm", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
def test_quantized_layer_equals_numpy_with_the_same_weights(target, gemm, symmetric) -> None:
    rng = np.random.default_rng(2)
    proto, w, bias = _model(80, 24, rng, gemm=gemm)  # K=80: a partial last block
    out = _check_exact(proto, w, bias, target, 32, symmetric, rng)
    if target == "tensorrt":
        assert out.opset_import[0].version >= 21


def test_bits8_layers_become_8_bit_matmulnbits() -> None:
    rng = np.random.default_rng(3)
    proto, w, _ = _model(64, 16, rng)
    out = _check_exact(proto, w, None, "ort", 32, False, rng, bits8=("^lay",))
    attrs = {a.name: a.i for a in out.graph.node[0].attribute}
    assert attrs["bits"] == 8 and attrs["K"] == 64 and attrs["N"] == 16 and attrs["block_size"] == 32


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(1, 150),
    n=st.integers(1, 40),
    block=st.sampled_from([16, 32, 64, 128]),
    symmetric=st.booleans(),
    batch=st.sampled_from([(1,), (4,), (2, 3)]),
    target=st.sampled_from(["ort", "tensorrt"]),
    seed=st.integers(0, 2**16),
)
def test_random_matmuls_equal_numpy_under_onnxruntime(k, n, block, symmetric, batch, target, seed) -> None:
    rng = np.random.default_rng(seed)
    proto, w, _ = _model(k, n, rng, batch=batch)
    _check_exact(proto, w, None, target, block, symmetric, rng, batch=batch)


def test_accuracy_level_4_stays_close_and_shared_weights_are_quantized_once() -> None:
    rng = np.random.default_rng(4)
    k, n = 64, 32
    w = rng.standard_normal((k, k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("MatMul", ["h", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, k])],
        [numpy_helper.from_array(w, "W")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = from_proto(proto)
    quantize_weights(model, "tensorrt", {"block_size": 32})
    out = model.to_onnx()
    assert [n.op_type for n in out.graph.node].count("DequantizeLinear") == 1
    assert "W" not in {i.name for i in out.graph.initializer}  # the float weight is gone
    model = from_proto(proto)
    quantize_weights(model, "ort", {"block_size": 32})
    out = model.to_onnx()
    assert {a.name: a.i for a in out.graph.node[0].attribute}["accuracy_level"] == 4
    x = rng.standard_normal((2, k)).astype(np.float32)
    blk = quantize_rtn(w, 4, 32, False)
    want = reference_matmul(reference_matmul(x, blk), blk)
    got = _run(out, x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.02  # int8 activations: close, not exact
    del n


def test_nothing_quantizable_and_bad_options_are_errors() -> None:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "z"], ["y"])],
        "g",
        [helper.make_tensor_value_info(v, TensorProto.FLOAT, [2, 2]) for v in "xz"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(GraphoptError, match="nothing to quantize"):
        quantize_weights(model)
    with pytest.raises(GraphoptError, match="power of two"):
        quantize_weights(model, config={"block_size": 24})
    with pytest.raises(GraphoptError, match="unknown int4 method"):
        quantize_weights(model, config={"method": "awq"})


# --------------------------------------------------------------------------------------------------------------------
# GPTQ
# --------------------------------------------------------------------------------------------------------------------
def _correlated(rng: np.random.Generator, k: int):  # noqa: ANN202 - a sampler
    """A sampler of activation rows (n, K) with correlated inputs, some much larger than others (as in real
    activations): the setting where GPTQ's error feedback beats rounding each weight alone."""
    mix = rng.standard_normal((k, k)) / np.sqrt(k)
    scale = np.exp(rng.standard_normal(k))

    def sample(rows: int) -> np.ndarray:
        return ((rng.standard_normal((rows, k)) @ mix) * scale).astype(np.float32)

    return sample


def test_gptq_beats_rtn_on_held_out_activations() -> None:
    rng = np.random.default_rng(5)
    k, n = 128, 48
    w = rng.standard_normal((k, n)).astype(np.float32)
    sample = _correlated(rng, k)
    x, held = sample(512), sample(256)
    ref = held @ w
    rtn = quantize_rtn(w, 4, 32, False)
    gptq = quantize_gptq(w, hessian(x), 4, 32, False)
    assert isinstance(gptq, Blocks) and gptq.q.max() <= 15

    def err(b: Blocks) -> float:
        return float(np.linalg.norm(held @ b.dequantize() - ref) / np.linalg.norm(ref))

    assert err(gptq) < 0.9 * err(rtn), (err(gptq), err(rtn))


def test_gptq_driver_uses_calibration_activations() -> None:
    rng = np.random.default_rng(7)
    proto, w, _ = _model(96, 32, rng)
    sample = _correlated(rng, 96)
    feeds = [{"x": sample(3)} for _ in range(40)]
    model = from_proto(proto)
    with pytest.raises(GraphoptError, match="calibration"):
        quantize_weights(from_proto(proto), "ort", {"method": "gptq"})
    result = quantize_weights(model, "ort", {"method": "gptq", "accuracy_level": 0}, feeds)
    out = model.to_onnx()
    rtn_model = from_proto(proto)
    rtn = quantize_weights(rtn_model, "ort", {"accuracy_level": 0}, feeds)
    assert result.layers[0].error < rtn.layers[0].error
    held = [sample(3) for _ in range(20)]
    ref = np.concatenate([x @ w for x in held])

    def error(proto: onnx.ModelProto) -> float:
        got = np.concatenate([_run(proto, x) for x in held])
        return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))

    assert error(out) < error(rtn_model.to_onnx())


def test_layer_error_budget_puts_the_worst_layer_at_8_bits() -> None:
    rng = np.random.default_rng(8)
    proto, w, _ = _model(64, 16, rng)
    model = from_proto(proto)
    result = quantize_weights(model, "ort", {"layer_error_budget": 0.01})
    assert result.layers[0].bits == 8 and result.layers[0].flagged and result.layers[0].error < 0.01


# --------------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------------
def _save(tmp_path, rng) -> str:
    proto, _, _ = _model(64, 32, rng, gemm=True)
    path = tmp_path / "m.onnx"
    onnx.save(proto, path)
    return str(path)


def test_cli_int4_writes_matmulnbits(tmp_path, capsys) -> None:
    src = _save(tmp_path, np.random.default_rng(9))
    out = tmp_path / "q.onnx"
    code = main(["optimize", src, "-o", str(out), "--quantize", "int4", "--block-size", "16", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    q = summary["quantization"]
    assert q["bits"] == 4 and q["layers"][0]["fused_as"] == "MatMulNBits 4-bit"
    node = onnx.load(out).graph.node[0]
    assert node.op_type == "MatMulNBits" and {a.name: a.i for a in node.attribute}["block_size"] == 16
    code = main(
        [
            "optimize",
            src,
            "-o",
            str(tmp_path / "g.onnx"),
            "--quantize",
            "int4",
            "--int4-method",
            "gptq",
            "--calib-random",
            "4",
            "--target",
            "tensorrt",
            "-q",
        ]
    )
    assert code == 0
    assert [n.op_type for n in onnx.load(tmp_path / "g.onnx").graph.node] == ["DequantizeLinear", "Gemm"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--int4-method", "gptq"], "needs calibration data"),
        (["--block-size", "24"], "power of two"),
        (["--int8-layer", "("], "bad regex"),
        (["--layer-error-budget", "0"], "must be positive"),
    ],
)
def test_cli_int4_bad_options_are_one_line_errors(tmp_path, capsys, flags, message) -> None:
    src = _save(tmp_path, np.random.default_rng(10))
    out = tmp_path / "q.onnx"
    code = main(["optimize", src, "-o", str(out), "--quantize", "int4", *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_large_models_reach_onnxruntime_through_a_temporary_file(monkeypatch) -> None:
    import graphopt.quantize.int4 as int4

    rng = np.random.default_rng(11)
    proto, _, _ = _model(64, 16, rng)
    feeds = [{"x": rng.standard_normal((3, 64)).astype(np.float32)} for _ in range(4)]
    want = int4.collect_activations(from_proto(proto), ["x"], feeds)["x"]
    monkeypatch.setattr(int4, "IN_MEMORY_LIMIT", 0)
    got = int4.collect_activations(from_proto(proto), ["x"], feeds)["x"]
    assert got.shape == (12, 64) and np.array_equal(got, want)
