"""dce: dead code elimination: nodes whose results nobody reads, and initializers nobody reads."""

from __future__ import annotations

from collections.abc import Iterable

from graphopt.core.ir import Graph, Value
from graphopt.engine.passes_api import PassContext, register_pass

PURE_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
"""Domains whose ops have no side effects. Ops of other domains are never removed: graphopt does not know them."""


@register_pass("dce", description="remove nodes and initializers whose results are never used")
def dead_code_elimination(graph: Graph, ctx: PassContext) -> bool:
    # Not a pattern rule: liveness is a whole-graph analysis (what the graph outputs reach, in reverse order), and a
    # rule replaces a root's outputs by others, while a dead node has no reader to replace.
    changed = False
    for node in list(graph.reversed()):
        if node.domain not in PURE_DOMAINS:
            continue
        if any(out is not None and (out.uses or out.is_graph_output(graph)) for out in node.outputs):
            continue
        graph.remove(node)
        changed = True
    return drop_unused_initializers(graph, ctx) or changed


def drop_unused_initializers(graph: Graph, ctx: PassContext, candidates: Iterable[Value | None] | None = None) -> bool:
    """Remove initializers of ``graph`` (all of them, or those among ``candidates``) that nothing reads and that are
    not graph inputs or outputs. A pass that disconnects weights calls this so that no cleanup round is needed."""
    # Training info refers to main-graph initializers by name; keep them all when it is present.
    if ctx.model.pins_initializers(graph):
        return False
    pool = list(graph.initializers.values()) if candidates is None else [v for v in candidates if v is not None]
    if not pool:
        return False
    changed = False
    for v in pool:
        if v.uses or not graph.is_initializer(v) or v.is_graph_input(graph) or v.is_graph_output(graph):
            continue
        del graph.initializers[v.name]
        changed = True
    return changed
