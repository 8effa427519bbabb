"""Small readers the local rewrite passes share: constant inputs, axes by opset, and bypassing a node."""

from __future__ import annotations

from collections.abc import Callable

import onnx

from graphopt.core.ir import Graph, Node, Value
from graphopt.engine.passes_api import PassContext
from graphopt.patterns import Declined, Match


def input_at(node: Node, i: int) -> Value | None:
    return node.inputs[i] if i < len(node.inputs) else None


def ints(v: Value | None) -> list[int] | None:
    """A constant integer tensor as a flat list, or None."""
    if v is None:
        return None
    t = v.constant()
    if t is None or t.dtype not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
        return None
    return [int(i) for i in t.numpy().reshape(-1)]


def axes_of(node: Node, ctx: PassContext, since: int) -> list[int] | None:
    """Axes of Squeeze/Unsqueeze/ReduceX: an input from opset ``since``, an attribute before."""
    if (ctx.opset("") or 1) >= since:
        return ints(input_at(node, 1)) if input_at(node, 1) is not None else None
    axes = node.attr("axes")
    return list(axes) if axes is not None else None


def bypass(graph: Graph, node: Node, src: Value) -> bool:
    """Make readers of ``node``'s first output read ``src`` instead; return False when that cannot help.

    When the output is a graph output and ``src`` cannot take its place (``Graph.can_take_output``: an initializer, a
    value from an outer scope, another output, or a graph input outside a body matched by position), replacing it would
    only trade this node for an Identity: leave it.
    """
    out = node.outputs[0]
    if out is None or out is src:
        return False
    if graph.is_output(out):
        if not graph.can_take_output(src, out):
            return False
        if src.dtype is not None and out.dtype is not None and src.dtype != out.dtype:
            return False
    graph.replace_all_uses_with(out, src)
    if not out.uses and not graph.is_output(out):
        graph.remove(node)
    return True


def check(reason: str, test: Callable[[Match], bool]) -> Callable[[Match], Declined | bool]:
    """A rule condition that declines with ``reason`` when ``test`` is false."""
    return lambda m: True if test(m) else m.decline(reason)
