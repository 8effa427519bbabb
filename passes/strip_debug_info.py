"""strip-debug-info: drop exporters' debug annotations on nodes, values and graphs (model metadata stays)."""

from __future__ import annotations

from graphopt.core.ir import Graph
from graphopt.engine.passes_api import PassContext, register_pass


@register_pass(
    "strip-debug-info",
    description="drop exporters' debug annotations on nodes, values and graphs (model metadata stays)",
    annotations_only=True,
)
def strip_debug_info(graph: Graph, ctx: PassContext) -> bool:
    # Not a pattern rule: it changes annotations only; no node is matched or replaced.
    if ctx.options.get("keep_debug_info"):
        return False  # optimize(keep_debug_info=True) / --keep-debug-info
    changed = bool(graph.metadata_props)
    graph.metadata_props = {}
    for node in graph:
        if node.doc_string or node.metadata_props:
            node.doc_string = ""
            node.metadata_props = {}
            changed = True
    # Graph inputs and outputs keep their doc strings: they document the model's interface.
    for v in [*graph.inputs, *graph.outputs, *graph.value_info, *graph.initializers.values()]:
        if v.metadata_props:
            v.metadata_props = {}
            changed = True
        if v.doc_string and not v.is_graph_input(graph) and not v.is_graph_output(graph):
            v.doc_string = ""
            changed = True
    return changed
