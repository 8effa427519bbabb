"""cleanup: the cheap clean-up passes as one pipeline step (what -O1 runs, and -O2 around its heavier passes)."""

from __future__ import annotations

from graphopt.core.ir import Graph
from graphopt.engine.passes_api import Pass, PassContext, register_pass

from .remove_unused import remove_unused

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

