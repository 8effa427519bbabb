"""Quantized embedding tables (graphopt.quantize.embeddings): every form against numpy on the same quantized table
(bit-exact) and against the float table (bounded error), under onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.errors import GraphoptError
from graphopt.quantize.embeddings import (
    dequantize_table,
    quantize_embeddings,
    quantize_table,
    quantize_table_asymmetric,
)

ROWS, WIDTH = 1100, 64  # 70400 values: above the default minimum size


def _model(opset: int = 17, tied: bool = False, small: bool = True, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    table = (rng.standard_normal((ROWS, WIDTH)) * rng.uniform(0.01, 1.0, (ROWS, 1))).astype(np.float32)
    table[7] = 0.0  # an all-zero row
    inits = [numpy_helper.from_array(table, "word_embeddings")]
    nodes = [helper.make_node("Gather", ["word_embeddings", "ids"], ["rows"], name="word_gather")]
    outputs = [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["b", "s", WIDTH])]
    if small:
        inits.append(numpy_helper.from_array(rng.standard_normal((2, WIDTH)).astype(np.float32), "token_type"))
        nodes.append(helper.make_node("Gather", ["token_type", "tt"], ["types"], name="type_gather"))
        outputs.append(helper.make_tensor_value_info("types", TensorProto.FLOAT, ["b", "s", WIDTH]))
    if tied:
        nodes.append(helper.make_node("MatMul", ["rows", "word_embeddings_t"], ["logits"], name="lm_head"))
        nodes.insert(0, helper.make_node("Transpose", ["word_embeddings"], ["word_embeddings_t"], name="tie"))
        outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s", ROWS]))
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])]
    if small:
        inputs.append(helper.make_tensor_value_info("tt", TensorProto.INT64, ["b", "s"]))
    graph = helper.make_graph(nodes, "emb", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset >= 21 else 8
    return model


def _run(proto: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def _feeds() -> dict:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, ROWS, (3, 9)).astype(np.int64)
    ids[0, :3] = [7, ROWS - 1, -1]  # the zero row, the last row, a negative index
    return {"ids": ids, "tt": rng.integers(0, 2, (3, 9)).astype(np.int64)}


def _table(proto: onnx.ModelProto) -> np.ndarray:
    return next(numpy_helper.to_array(i) for i in proto.graph.initializer if i.name == "word_embeddings")


@pytest.mark.parametrize(
    ("bits", "block", "target", "opset", "form", "min_sqnr"),
    [
        (8, None, "ort", 17, "Gather", 38.0),
        (8, 32, "ort", 17, "GatherBlockQuantized", 38.0),
        (4, None, "ort", 17, "GatherBlockQuantized", 15.0),
        (4, 16, "ort", 17, "GatherBlockQuantized", 15.0),
        (8, None, "tensorrt", 13, "DequantizeLinear", 38.0),
        (8, 32, "tensorrt", 21, "DequantizeLinear", 38.0),
        (4, 32, "tensorrt", 21, "DequantizeLinear", 15.0),
    ],
)
def test_quantized_table_is_exact_and_close(bits, block, target, opset, form, min_sqnr):
    proto = _model(opset)
    table = _table(proto)
    feeds = _feeds()
    ref_float = _run(proto, feeds)
    model = from_proto(proto)
    reports = quantize_embeddings(model, bits=bits, block_size=block, target=target)
    out = model.to_onnx()
    onnx.checker.check_model(out)
    got = _run(out, feeds)
    # one report, for the big table only; the 2-row token-type table stays float and bit-identical
    assert [r.name for r in reports] == ["word_gather"]
    assert reports[0].mode == f"int{bits} table"
    assert reports[0].sqnr_db is not None and reports[0].sqnr_db > min_sqnr
    np.testing.assert_array_equal(got[1], ref_float[1])
    assert form in {n.op_type for n in out.graph.node}
    assert "word_embeddings" not in {i.name for i in out.graph.initializer}  # the float table is gone
    # exact: numpy's gather of the same quantized table
    if form == "GatherBlockQuantized":  # blocks with a zero point each, as onnxruntime's own quantizer makes them
        q, scale, zp = quantize_table_asymmetric(table, bits, block or 32)
    else:
        (q, scale), zp = quantize_table(table, bits, block if (block or bits == 8) else 32), None
    if bits == 8 and block is None:
        assert scale.shape == (ROWS, 1)
    expected = dequantize_table(q, scale, zp)[feeds["ids"]]
    np.testing.assert_array_equal(got[0], expected)
    # close to float: relative error per the bits
    rel = np.linalg.norm(got[0] - ref_float[0]) / np.linalg.norm(ref_float[0])
    assert rel < (0.01 if bits == 8 else 0.15)
    # size: the table's bytes shrink to about a quarter (an eighth for 4 bits), plus scales
    before = sum(numpy_helper.to_array(i).nbytes for i in proto.graph.initializer)
    after = sum(len(i.raw_data) or numpy_helper.to_array(i).nbytes for i in out.graph.initializer)
    assert after < before * (0.3 if bits == 8 else 0.2)


def test_tied_and_small_tables_stay_float(caplog):
    proto = _model(tied=True)
    model = from_proto(proto)
    with caplog.at_level("WARNING", logger="graphopt.quantize"):
        reports = quantize_embeddings(model)
    assert reports == []
    assert "word_embeddings: kept float" in caplog.text
    out = model.to_onnx()
    feeds = _feeds()
    for a, b in zip(_run(proto, feeds), _run(out, feeds), strict=True):
        np.testing.assert_array_equal(a, b)
    # a lower minimum size takes the small token-type table too
    model = from_proto(_model())
    assert sorted(r.name for r in quantize_embeddings(model, min_elements=2)) == ["type_gather", "word_gather"]


def test_tensorrt_needs_the_opset_and_bad_arguments_fail():
    model = from_proto(_model(opset=17))
    assert quantize_embeddings(model, bits=4, target="tensorrt") == []  # blocked DQ needs opset 21: kept float
    assert "DequantizeLinear" not in {n.op_type for n in model.graph}
    for kwargs in ({"bits": 3}, {"block_size": 24}, {"block_size": 8}, {"target": "tpu"}):
        with pytest.raises(GraphoptError):
            quantize_embeddings(from_proto(_model()), **kwargs)


def test_quantize_table_rounding():
    table = np.array([[1.0, -0.5, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    q, scale = quantize_table(table)
    assert q.dtype == np.int8 and q[0, 0] == 127 and q[0, 1] == -64 and scale[1, 0] == 1.0
    assert np.all(q[1] == 0)
    q4, s4 = quantize_table(np.linspace(-1, 1, 32, dtype=np.float32)[None], bits=4, block_size=16)
    assert s4.shape == (1, 2) and q4.min() >= -8 and q4.max() <= 7


def test_asymmetric_blocks_halve_the_step_of_one_sided_blocks():
    """GatherBlockQuantized's blocks carry a zero point (as onnxruntime's own quantizer makes them): a block whose
    values all lie on one side of 0 uses all 16 levels for its range instead of half of them."""
    rng = np.random.default_rng(0)
    table = rng.uniform(0.0, 1.0, (64, 64)).astype(np.float32)
    table[1::2] -= 1.0  # odd rows one-sided below 0, even rows above
    u, scale, zp = quantize_table_asymmetric(table, 4, 32)
    assert u.dtype == np.uint8 and u.max() <= 15 and zp.max() <= 15 and scale.shape == zp.shape == (64, 2)
    asym = dequantize_table(u, scale, zp)
    assert np.abs(asym - table).max() <= scale.max() / 2 + 1e-6  # round to nearest: half a step at most
    q, s = quantize_table(table, 4, 32)
    sym = dequantize_table(q, s)

    def sqnr(x):
        return 10 * np.log10(np.square(table).sum() / np.square(x - table).sum())

    assert sqnr(asym) > sqnr(sym) + 5.0
