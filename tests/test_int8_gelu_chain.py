"""Shape inference through a chain of com.microsoft Gelus (ops ONNX does not type): every value after them is typed,
so the int8 layout rules that need a rank (qdq_rules.reduce_means_as_pools) still apply after the fifth Gelu."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.quantize import quantize_model
from graphopt.tools import runtime


def _gelu_chain(blocks: int, dims: list) -> onnx.ModelProto:
    """``blocks`` times Conv 1x1 -> com.microsoft Gelu, then a squeeze-excitation (ReduceMean over H, W -> Conv ->
    HardSigmoid) that gates the last Gelu's output, then a Conv."""
    rng = np.random.default_rng(blocks)
    inits: list[onnx.TensorProto] = []

    def const(name: str, a: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(a, np.float32), name))
        return name

    nodes, x = [], "input"
    for i in range(blocks):
        nodes.append(
            helper.make_node("Conv", [x, const(f"w{i}", rng.standard_normal((8, 3 if i == 0 else 8, 1, 1)))], [f"c{i}"])
        )
        nodes.append(helper.make_node("Gelu", [f"c{i}"], [f"g{i}"], domain="com.microsoft"))
        x = f"g{i}"
    nodes += [
        helper.make_node("ReduceMean", [x], ["m"], axes=[2, 3], keepdims=1),
        helper.make_node("Conv", ["m", const("ws", rng.standard_normal((8, 8, 1, 1)) * 0.5)], ["s"]),
        helper.make_node("HardSigmoid", ["s"], ["gate"], alpha=1.0 / 6.0, beta=0.5),
        helper.make_node("Mul", [x, "gate"], ["se"]),
        helper.make_node("Conv", ["se", const("wo", rng.standard_normal((4, 8, 1, 1)))], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "gelus",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    )


@pytest.mark.parametrize("dims", [[1, 3, 6, 5], ["n", 3, "h", "w"]])
def test_every_value_after_a_long_gelu_chain_is_typed(dims) -> None:
    proto = _gelu_chain(7, dims)
    model = from_proto(proto)
    infer_shapes(model)
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 5)).astype(np.float32)
    names = [v.name for n in model.graph for v in n.outputs if v is not None]
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names)
    got = dict(zip([o.name for o in probe.graph.output], runtime.session(probe).run(None, {"input": x}), strict=True))
    for n in model.graph:
        v = n.outputs[0]
        assert v.shape is not None and len(v.shape) == got[v.name].ndim, (n.op_type, v.name, v.shape)
        for d, real in zip(v.shape, got[v.name].shape, strict=True):
            assert not isinstance(d, int) or d == real, (v.name, v.shape, got[v.name].shape)
        if n.op_type == "Gelu":  # the same dims as its input, symbolic ones included
            assert v.shape == n.inputs[0].shape


def test_reduce_mean_after_many_gelus_runs_as_a_pool() -> None:
    proto = _gelu_chain(6, ["n", 3, "h", "w"])
    rng = np.random.default_rng(1)
    feeds = [{"input": rng.standard_normal((1, 3, 6, 5)).astype(np.float32)} for _ in range(4)]
    model = from_proto(proto)
    quantize_model(model, feeds, "ort", {"cache": False, "choice": "static", "fallback": False})
    ops = [n.op_type for n in model.to_onnx().graph.node]
    # the fifth Gelu and what follows it were untyped: the ReduceMean stayed (onnxruntime ran it over axes [1, 2]
    # of the channels-last tensor)
    assert "ReduceMean" not in ops and "GlobalAveragePool" in ops, ops
