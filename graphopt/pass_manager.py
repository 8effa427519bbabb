"""Running pipelines of passes: recursion into subgraphs, fixed points, statistics, IR verification."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from graphopt.errors import PassError
from graphopt.ir import Graph, Model
from graphopt.passes_api import TARGETS, Pass, PassContext, as_passes


@dataclass
class PassStats:
    """What one pass did over a whole run (summed over iterations and subgraphs)."""

    name: str
    seconds: float = 0.0
    nodes_before: int = 0
    nodes_after: int = 0
    changed: bool = False
    runs: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """What the pass counted through ``ctx.count`` (rule firings of pattern passes)."""


@dataclass
class PassReport:
    """Per-pass statistics of a PassManager run, in pipeline order."""

    stats: list[PassStats] = field(default_factory=list)
    iterations: int = 0
    nodes_before: int = 0
    nodes_after: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.stats)

    def to_dict(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "seconds": round(self.seconds, 6),
            "passes": [asdict(s) | {"seconds": round(s.seconds, 6)} for s in self.stats],
        }


ProgressHook = Callable[[str, int, int], None]
"""Called as ``hook(pass_name, index, total)`` before each pass runs."""


class PassManager:
    """Runs a pipeline over a model.

    ``passes`` is a list (names, Pass instances or classes, registered functions) or a string ``"a,b{k=v},c"``.
    With ``fixed_point`` the pipeline repeats until no pass changes anything (at most ``max_iterations`` times).
    ``check_ir`` verifies the IR's invariants after every pass, which catches broken passes early (tests use it).
    """

    def __init__(
        self,
        passes: Any,
        *,
        fixed_point: bool = False,
        max_iterations: int = 10,
        check_ir: bool = False,
        progress: ProgressHook | None = None,
    ) -> None:
        self.passes: list[Pass] = as_passes(passes)
        self.fixed_point = fixed_point
        self.max_iterations = max(1, max_iterations)
        self.check_ir = check_ir
        self.progress = progress

    def run(self, model: Model, ctx: PassContext | None = None, *, target: str = "ort") -> PassReport:
        if ctx is None:
            ctx = PassContext(model=model, target=target)
        if ctx.target not in TARGETS:
            raise PassError(f"unknown target {ctx.target!r}; choose one of {', '.join(TARGETS)}")
        report = PassReport(stats=[PassStats(p.name) for p in self.passes])
        report.nodes_before = current = _count(model)
        start = time.perf_counter()
        # A pass that changed nothing on a graph finds nothing on that same graph again: until some pass changes the
        # model, a pass (same class and options) that last came back empty-handed is skipped.
        version = 0
        idle_at: dict[tuple[type, str], int] = {}
        for _ in range(self.max_iterations if self.fixed_point else 1):
            report.iterations += 1
            changed_any = False
            for i, (p, stats) in enumerate(zip(self.passes, report.stats, strict=True)):
                key = (type(p), repr(p))
                if idle_at.get(key) == version:
                    continue
                if self.progress:
                    self.progress(p.name, i, len(self.passes))
                t0 = time.perf_counter()
                ctx.counters = stats.counts
                changed = self.run_pass(p, model, ctx)
                stats.seconds += time.perf_counter() - t0
                after = _count(model) if changed else current
                if stats.runs == 0:
                    stats.nodes_before = current
                stats.nodes_after = after
                current = after
                stats.runs += 1
                stats.changed |= changed
                changed_any |= changed
                if changed:
                    version += 1
                else:
                    idle_at[key] = version
                if self.check_ir:
                    for g in _graphs(model):
                        g.check()
            if not changed_any:
                break
        report.seconds = time.perf_counter() - start
        report.nodes_after = _count(model)
        return report

    @staticmethod
    def run_pass(p: Pass, model: Model, ctx: PassContext) -> bool:
        """Run one pass on the main graph and, for recursive passes, on every subgraph and function body."""
        changed = bool(p.run(model.graph, ctx))
        if not p.recursive:
            return changed
        # Subgraphs are collected after the main graph ran, so those the pass removed are not visited.
        for g in list(model.graph.subgraphs()):
            changed |= bool(p.run(g, ctx))
        for func in model.functions.values():
            for g in (func.graph, *func.graph.subgraphs()):
                changed |= bool(p.run(g, ctx))
        return changed


def _graphs(model: Model) -> Iterator[Graph]:
    yield model.graph
    for f in model.functions.values():
        yield f.graph


def _count(model: Model) -> int:
    return model.graph.node_count()
