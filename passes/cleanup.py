"""cleanup: the cheap clean-up passes as one pipeline step (what -O1 runs, and -O2 around its heavier passes)."""

from __future__ import annotations

from graphopt.engine.passes_api import PipelinePass, register_pass


@register_pass(
    "cleanup",
    description="dce, eliminate-noop, merge-consecutive, dedup-initializers, dce, remove-unused in one pass",
)
class Cleanup(PipelinePass):
    """A pipeline pass: each step runs as a pass of its own (graph steps on every graph and subgraph, remove-unused
    once on the model) and keeps its own statistics (``PassStats.steps``: the pass table, the summary, ``--json``)."""

    steps = ("dce", "eliminate-noop", "merge-consecutive", "dedup-initializers", "dce", "remove-unused")
