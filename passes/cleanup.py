"""Dead code elimination: nodes whose results nobody reads, and initializers nobody reads."""

from __future__ import annotations

from graphopt.ir import Graph
from graphopt.passes_api import PassContext, register_pass

PURE_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
"""Domains whose ops have no side effects. Ops of other domains are never removed: graphopt does not know them."""


@register_pass("dce", description="remove nodes and initializers whose results are never used")
def dead_code_elimination(graph: Graph, ctx: PassContext) -> bool:
    outputs = {id(v) for v in graph.outputs}
    changed = False
    for node in list(graph.reversed()):
        if node.domain not in PURE_DOMAINS:
            continue
        if any(out is not None and (out.uses or id(out) in outputs) for out in node.outputs):
            continue
        graph.remove(node)
        changed = True
    # Training info refers to main-graph initializers by name; keep them all when it is present.
    keep_initializers = bool(ctx.model.training_info) and graph is ctx.model.graph
    if not keep_initializers:
        inputs = {id(v) for v in graph.inputs}
        for name, v in list(graph.initializers.items()):
            if not v.uses and id(v) not in outputs and id(v) not in inputs:
                del graph.initializers[name]
                changed = True
    return changed
