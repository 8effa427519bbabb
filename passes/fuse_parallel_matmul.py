"""fuse-parallel-matmul: MatMuls that read the same activation with constant weights become one MatMul and a Split.

Attention layers project one input three times (query, key, value): ``x @ Wq``, ``x @ Wk``, ``x @ Wv``. Since
``x @ [Wq | Wk | Wv]`` computes exactly those columns side by side, the three become one wider MatMul whose output a
Split cuts back into the three original values (each output column is the same dot product as before, so results match
within float rounding). One bigger GEMM also runs faster than three small ones.

A MatMul joins a group only when its weight is a constant 2D ``[K, N]`` initializer read by no other node (so no data
is duplicated), in a floating dtype, with the same K and dtype as the rest of the group. The output's last axis is N
for any activation rank, so the Split is always on axis -1. Groups form per activation Value inside one graph.
"""

from __future__ import annotations

import numpy as np
import onnx

from graphopt.core.ir import Graph, Node, Value
from graphopt.core.tensors import Tensor
from graphopt.engine.passes_api import PassContext, register_pass
from graphopt.patterns import FEEDS_QUANTIZER, STANDARD, model_has_quantizer, reaches_quantizer

from .dce import drop_unused_initializers

FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def _weight(node: Node) -> Tensor | None:
    """The MatMul's constant 2D weight when it may be merged: read by this node only."""
    if node.op_type != "MatMul" or node.domain not in STANDARD or len(node.inputs) != 2:
        return None
    w = node.inputs[1]
    t = w.constant() if w is not None else None
    if w is None or t is None or len(t.dims) != 2 or t.dtype not in FLOATS or len(w.uses) != 1:
        return None
    return t


def _groups(graph: Graph) -> list[list[Node]]:
    by_input: dict[tuple[int, int, int], list[Node]] = {}
    for node in graph:
        t = _weight(node)
        x = node.inputs[0] if t is not None else None
        if t is None or x is None:
            continue
        by_input.setdefault((id(x), t.dims[0], t.dtype), []).append(node)
    return [nodes for nodes in by_input.values() if len(nodes) >= 2]


def _fuse(graph: Graph, nodes: list[Node], opset: int) -> None:
    weights = [_weight(n) for n in nodes]
    arrays = [w.numpy() for w in weights if w is not None]
    widths = [a.shape[1] for a in arrays]
    x = nodes[0].inputs[0]
    assert x is not None
    first = nodes[0]
    stacked = graph.make_constant(
        Tensor.from_numpy(np.concatenate(arrays, axis=1), weights[0].dtype, copy=False),  # type: ignore[union-attr]
        f"{first.inputs[1].name}_fused",  # type: ignore[union-attr]
    )
    matmul = Node("MatMul", [x, stacked], name=graph.unique_name(f"{first.name or 'matmul'}_fused"))
    matmul.output.name = graph.unique_name(f"{matmul.name}_output")
    if x.dtype is not None and x.shape:
        # [*lead, K] @ [K, sum N] -> [*lead, sum N]: typed here, so that no new shape inference run is needed
        matmul.output.dtype, matmul.output.shape = x.dtype, (*x.shape[:-1], sum(widths))
    graph.insert_before(first, matmul)
    split_attrs = {"axis": -1}
    split_inputs: list[Value | None] = [matmul.output]
    if opset >= 13:
        split_inputs.append(graph.make_constant(Tensor.from_numpy(np.array(widths, dtype=np.int64)), "split_sizes"))
    else:
        split_attrs["split"] = widths  # type: ignore[assignment]
    split = Node(
        "Split", split_inputs, split_attrs, num_outputs=len(nodes), name=graph.unique_name(f"{matmul.name}_split")
    )
    for out, node in zip(split.outputs, nodes, strict=True):
        assert out is not None
        out.name = graph.unique_name(f"{node.output.name}_part")
    graph.insert_after(matmul, split)
    for out, node in zip(split.outputs, nodes, strict=True):
        assert out is not None
        old = node.output
        if old.has_type:
            out.dtype, out.shape = old.dtype, old.shape
        graph.replace_all_uses_with(old, out)
        graph.remove(node)


@register_pass(
    "fuse-parallel-matmul",
    description="MatMuls of one activation with constant weights (e.g. attention Q/K/V) become one MatMul and a Split",
)
def fuse_parallel_matmul(graph: Graph, ctx: PassContext) -> bool:
    # Not a pattern rule: the group is the readers of one activation (a fan-out of any size), not a tree rooted at one
    # node, and the replacement replaces the outputs of several roots at once.
    opset = ctx.opset("") or 1
    groups = _groups(graph)
    if groups and model_has_quantizer(ctx):
        # one wider MatMul need not round each column as the narrow ones did (onnxruntime may block or thread it
        # otherwise), and a last-bit difference before a QuantizeLinear flips int8 steps: such a MatMul stays
        kept = [
            [n for n in nodes if not reaches_quantizer(n.outputs, graph, ctx.model.graph, ctx.model)]
            for nodes in groups
        ]
        left = sum(len(a) - len(b) for a, b in zip(groups, kept, strict=True))
        if left:
            per = ctx.declines.setdefault("fuse-parallel-matmul", {})
            per[FEEDS_QUANTIZER] = per.get(FEEDS_QUANTIZER, 0) + left
        groups = [nodes for nodes in kept if len(nodes) >= 2]
    stacked = [n.inputs[1] for nodes in groups for n in nodes]
    for nodes in groups:
        _fuse(graph, nodes, opset)
    drop_unused_initializers(graph, ctx, stacked)  # their data now lives in the fused weights
    return bool(groups)
