"""Dead code elimination: nodes whose results nobody reads, and initializers nobody reads."""

from __future__ import annotations

from collections.abc import Iterable

from graphopt.core.ir import Graph, Value
from graphopt.engine.passes_api import Pass, PassContext, register_pass

PURE_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
"""Domains whose ops have no side effects. Ops of other domains are never removed: graphopt does not know them."""


@register_pass("dce", description="remove nodes and initializers whose results are never used")
def dead_code_elimination(graph: Graph, ctx: PassContext) -> bool:
    # Not a pattern rule: liveness is a whole-graph analysis (what the graph outputs reach, in reverse order), and a
    # rule replaces a root's outputs by others, while a dead node has no reader to replace.
    outputs = {id(v) for v in graph.outputs}
    changed = False
    for node in list(graph.reversed()):
        if node.domain not in PURE_DOMAINS:
            continue
        if any(out is not None and (out.uses or id(out) in outputs) for out in node.outputs):
            continue
        graph.remove(node)
        changed = True
    return drop_unused_initializers(graph, ctx) or changed


def drop_unused_initializers(graph: Graph, ctx: PassContext, candidates: Iterable[Value | None] | None = None) -> bool:
    """Remove initializers of ``graph`` (all of them, or those among ``candidates``) that nothing reads and that are
    not graph inputs or outputs. A pass that disconnects weights calls this so that no cleanup round is needed."""
    # Training info refers to main-graph initializers by name; keep them all when it is present.
    if ctx.model.training_info and graph is ctx.model.graph:
        return False
    pool = list(graph.initializers.values()) if candidates is None else [v for v in candidates if v is not None]
    if not pool:
        return False
    interface = {id(v) for v in [*graph.inputs, *graph.outputs]}
    changed = False
    for v in pool:
        if v.uses or id(v) in interface or not graph.is_initializer(v):
            continue
        del graph.initializers[v.name]
        changed = True
    return changed


@register_pass(
    "remove-unused",
    description="drop opset imports of domains nothing uses and model-local functions nothing calls",
    recursive=False,
)
def remove_unused(graph: Graph, ctx: PassContext) -> bool:
    # Not a pattern rule: it edits the model (opset imports, functions), not nodes of a graph.
    model = ctx.model
    if graph is not model.graph:
        return False
    called = _called_functions(model)
    changed = False
    for key in [k for k in model.functions if k not in called]:
        del model.functions[key]
        changed = True
    used = {n.domain for g in model.graphs() for n in g.all_nodes()}
    used |= {d for f in model.functions.values() for d in f.opset_imports}
    used |= {f.domain for f in model.functions.values()}
    if model.training_info:
        return changed  # training graphs may use any imported domain; keep the imports as they are
    for domain in list(model.opset_imports):
        if domain not in ("", "ai.onnx") and domain not in used:
            del model.opset_imports[domain]
            changed = True
    return changed


def _called_functions(model) -> set[tuple[str, str, str]]:
    """Functions reachable from the main graph, through calls inside other functions too."""
    funcs = model.functions
    called: set[tuple[str, str, str]] = set()
    stack = [model.graph]
    while stack:
        g = stack.pop()
        for node in g.all_nodes():
            key = (node.domain, node.op_type, node.overload)
            if key in funcs and key not in called:
                called.add(key)
                stack.append(funcs[key].graph)
    return called


CLEANUP_STEPS = ("dce", "eliminate-noop", "merge-consecutive", "dedup-initializers", "dce")


@register_pass(
    "cleanup",
    description="eliminate-noop, merge-consecutive, dedup-initializers, dce, remove-unused in one pass",
)
class Cleanup(Pass):
    def run(self, graph: Graph, ctx: PassContext) -> bool:
        from graphopt.engine.passes_api import get_pass

        changed = False
        for name in CLEANUP_STEPS:
            changed |= bool(get_pass(name)().run(graph, ctx))
        if graph is ctx.model.graph:
            changed |= remove_unused(graph, ctx)
        return changed


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
    interface = {id(v) for v in [*graph.inputs, *graph.outputs]}
    for v in [*graph.inputs, *graph.outputs, *graph.value_info, *graph.initializers.values()]:
        if v.metadata_props:
            v.metadata_props = {}
            changed = True
        if v.doc_string and id(v) not in interface:
            v.doc_string = ""
            changed = True
    return changed
