"""Hypothesis strategies for random valid ONNX models, for property tests of passes and tools.

    from hypothesis import given
    from graphopt.testing.strategies import models

    @given(models())
    def test_my_pass_keeps_outputs(model):
        graphopt.testing.assert_models_close(model, graphopt.optimize(model, passes="my-pass"))

Every model passes the ONNX checker and runs in onnxruntime: shapes are tracked while the graph is drawn, so each
op gets operands it accepts. Inputs are float32 ``[batch, d1, d2]`` with a symbolic batch dim (or static, with
``symbolic=False``); nodes are drawn from unary and binary elementwise ops (binary with another value or a constant
that broadcasts), Transpose, MatMul with a constant weight, Softmax, Concat and Identity. Node and value names are
unique. Requires hypothesis: ``pip install 'graphopt[testing]'``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

try:
    from hypothesis import strategies as st
except ImportError as exc:  # hypothesis is a test dependency, not a runtime one
    raise ImportError(
        "graphopt.testing.strategies needs hypothesis, which graphopt does not install by default: "
        "pip install 'graphopt[testing]' (or pip install hypothesis)"
    ) from exc

UNARY = ("Relu", "Neg", "Abs", "Sigmoid", "Tanh", "Identity")
BINARY = ("Add", "Mul", "Sub", "Max", "Min")


@st.composite
def models(
    draw: st.DrawFn,
    max_nodes: int = 12,
    max_inputs: int = 2,
    opsets: tuple[int, ...] = (13, 17, 18),
    symbolic: bool = True,
) -> onnx.ModelProto:
    """A random valid model: 1..``max_inputs`` inputs, 1..``max_nodes`` nodes, one or two outputs."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    opset = draw(st.sampled_from(opsets))
    batch: Any = "batch" if symbolic else draw(st.integers(1, 3))
    d1, d2 = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    n_inputs = draw(st.integers(1, max_inputs))
    shape_of: dict[str, list[Any]] = {}
    inputs = []
    for i in range(n_inputs):
        shape_of[f"x{i}"] = [batch, d1, d2]
        inputs.append(helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [batch, d1, d2]))
    values = list(shape_of)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(shape: list[int]) -> str:
        name = f"c{len(inits)}"
        inits.append(numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name))
        return name

    for i in range(draw(st.integers(1, max_nodes))):
        out = f"v{i}"
        a = draw(st.sampled_from(values))
        shape = shape_of[a]
        kind = draw(st.sampled_from(["unary", "binary", "binary_const", "transpose", "matmul", "softmax", "concat"]))
        if kind == "unary":
            nodes.append(helper.make_node(draw(st.sampled_from(UNARY)), [a], [out], name=f"n{i}"))
            shape_of[out] = shape
        elif kind in ("binary", "binary_const"):
            same = [v for v in values if shape_of[v] == shape]
            other = draw(st.sampled_from(same)) if kind == "binary" else const([int(shape[-1])])
            nodes.append(helper.make_node(draw(st.sampled_from(BINARY)), [a, other], [out], name=f"n{i}"))
            shape_of[out] = shape
        elif kind == "transpose":
            perm = [0, *draw(st.permutations([1, 2]))]
            nodes.append(helper.make_node("Transpose", [a], [out], name=f"n{i}", perm=perm))
            shape_of[out] = [shape[p] for p in perm]
        elif kind == "matmul":
            n = draw(st.integers(1, 5))
            nodes.append(helper.make_node("MatMul", [a, const([int(shape[-1]), n])], [out], name=f"n{i}"))
            shape_of[out] = [*shape[:-1], n]
        elif kind == "softmax":
            nodes.append(helper.make_node("Softmax", [a], [out], name=f"n{i}", axis=-1))
            shape_of[out] = shape
        else:
            same = [v for v in values if shape_of[v][:-1] == shape[:-1]]
            b = draw(st.sampled_from(same))
            nodes.append(helper.make_node("Concat", [a, b], [out], name=f"n{i}", axis=-1))
            shape_of[out] = [*shape[:-1], int(shape[-1]) + int(shape_of[b][-1])]
        values.append(out)
    produced = [f"v{i}" for i in range(len(nodes))]
    outs = [produced[-1]]
    if len(produced) > 1 and draw(st.booleans()):
        outs.insert(0, draw(st.sampled_from(produced[:-1])))
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape_of[o]) for o in outs]
    graph = helper.make_graph(nodes, "random", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def feeds(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float inputs for a model from :func:`models` (symbolic dims get ``batch``)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in i.type.tensor_type.shape.dim]
        out[i.name] = rng.standard_normal(dims).astype(np.float32)
    return out
