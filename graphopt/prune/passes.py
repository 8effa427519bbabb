"""The ``prune-channels`` and ``prune-weights`` passes: pruning as a step of a pipeline. They are lossy one-shot model
passes (run once per ``optimize`` call, never again in a fixed-point sweep); each returns its PruneReport, which lands
in ``PassReport.results[pass name]``. ``--prune-channels`` / ``--prune-weights`` call the same driver functions after
the pipeline instead."""

from __future__ import annotations

from graphopt.core.ir import Model
from graphopt.engine.passes_api import ModelPass, Option, PassContext, PassResult, register_pass


class _PruneOnce(ModelPass):
    """A pruning pass: a lossy one-shot model pass (a fixed-point pipeline must not prune the pruned model again); its
    PruneReport is its result (``PassReport.results[name]``)."""

    lossless = False
    once = True

    def run_model(self, model: Model, ctx: PassContext) -> PassResult:
        return PassResult(True, self.prune(ctx))

    def prune(self, ctx: PassContext) -> object:
        raise NotImplementedError


@register_pass(
    "prune-channels",
    description="remove a share of the channels of every prunable channel group (structured; shapes shrink)",
    options={
        "ratio": Option(float, 0.5, "share of each group's channels to remove, in [0, 1)"),
        "multiple": Option(int, 8, "round kept channels up to this multiple"),
        "importance": Option(str, "l1", "channel importance", choices=("l1", "l2")),
        "borders": Option(str, "exact", "what removed channels still produce", choices=("exact", "bias")),
    },
)
class PruneChannels(_PruneOnce):
    def prune(self, ctx: PassContext) -> object:
        from graphopt.prune.driver import prune_channels

        report = prune_channels(ctx.model, **self.options)
        ctx.count("groups pruned", report.groups_pruned)
        return report


@register_pass(
    "prune-weights",
    description="zero the smallest weights (unstructured) or keep 2 of every 4 (mode=2:4); shapes do not change",
    options={
        "ratio": Option(float, 0.5, "share of weights to zero (unstructured), in [0, 1)"),
        "mode": Option(str, "unstructured", "sparsity pattern", choices=("unstructured", "2:4")),
        "scope": Option(str, "global", "ratio over all layers or per layer", choices=("global", "layer")),
    },
)
class PruneWeights(_PruneOnce):
    def prune(self, ctx: PassContext) -> object:
        from graphopt.prune.driver import prune_weights

        opts = self.options
        return prune_weights(ctx.model, opts["ratio"], mode=opts["mode"], scope=opts["scope"])
