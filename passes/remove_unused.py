"""remove-unused: opset imports of domains nothing uses, and model-local functions nothing calls."""

from __future__ import annotations

from graphopt.core.ir import Model
from graphopt.engine.passes_api import ModelPass, PassContext, register_pass


@register_pass(
    "remove-unused", description="drop opset imports of domains nothing uses and model-local functions nothing calls"
)
class RemoveUnused(ModelPass):
    """A model pass: it edits the model (opset imports, functions), not the nodes of a graph (so no pattern rule)."""

    def run_model(self, model: Model, ctx: PassContext) -> bool:
        return remove_unused(model)


def remove_unused(model: Model) -> bool:
    """Drop model-local functions nothing calls and opset imports of domains nothing uses; True if any went."""
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


def _called_functions(model: Model) -> set[tuple[str, str, str]]:
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

