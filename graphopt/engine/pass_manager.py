"""Running pipelines of passes: recursion into subgraphs, fixed points, statistics, IR checks, and numeric
verification of each pass under onnxruntime (undoing a pass that changed the outputs)."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

from graphopt.core.ir import Graph, Model, gc_paused, validate
from graphopt.core.shape_inference import restore_interface
from graphopt.engine.passes_api import (
    TARGETS,
    Pass,
    PassContext,
    PipelinePass,
    as_passes,
    debug_enabled,
    run_on_model,
)
from graphopt.errors import GraphoptError, PassError, VerificationError


class PassFailedError(PassError):
    """A pass raised an unexpected exception (an internal error, or a model it did not expect). The message names the
    pass and the exception; the exception itself is the ``__cause__``. With ``GRAPHOPT_DEBUG=1`` the exception
    propagates unwrapped (the CLI then prints its full traceback)."""


class DeclineCounts(dict[str, dict[str, int]]):
    """Matches a pass's pattern rules declined: ``{rule: {reason: count}}``. It remembers (weakly) which nodes it
    counted, so that a node declined again in a later sweep or a later run of the pass counts once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: weakref.WeakKeyDictionary[Any, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


@dataclass
class PassStats:
    """What one pass did over a whole run (summed over iterations and subgraphs)."""

    name: str
    seconds: float = 0.0
    nodes_before: int = 0
    nodes_after: int = 0
    nodes_delta: int = 0
    """Nodes this pass added (positive) or removed (negative), summed over its own runs."""
    changed: bool = False
    runs: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """What the pass counted through ``ctx.count`` (rule firings of pattern passes)."""
    declines: dict[str, dict[str, int]] = field(default_factory=DeclineCounts)
    """Matches its pattern rules declined, per rule and reason (each declined node counted once)."""
    steps: list[PassStats] = field(default_factory=list)
    """A pipeline pass's steps (``cleanup``: dce, eliminate-noop, ...), each with its own statistics, in order."""

    def details(self) -> str:
        """Counts and rule declines in one compact line: ``rule x3 (declined: pads not zero x2), other x1``."""
        parts = []
        for key in sorted(set(self.counts) | set(self.declines)):
            part = f"{key} x{self.counts.get(key, 0)}"
            why = self.declines.get(key)
            if why:
                part += f" (declined: {', '.join(f'{r} x{n}' for r, n in sorted(why.items()))})"
            parts.append(part)
        return ", ".join(parts)


@dataclass
class PassReport:
    """Per-pass statistics of a PassManager run, in pipeline order."""

    stats: list[PassStats] = field(default_factory=list)
    iterations: int = 0
    nodes_before: int = 0
    nodes_after: int = 0
    seconds: float = 0.0
    verify_seconds: float = 0.0
    """Time spent checking passes numerically (``verify=True``)."""
    verified: int = 0
    """Pass runs whose result was checked against the model before them."""
    reverted: list[str] = field(default_factory=list)
    """Passes whose change was undone because the outputs moved (one entry per undone run)."""
    unverifiable: str = ""
    """Why verification could not run (onnxruntime cannot run the model), if so."""
    quantization: Any = None
    """The QuantReport when ``optimize`` quantized the model after the pipeline."""
    pruning: list[Any] = field(default_factory=list)
    """The PruneReports when ``optimize`` pruned the model after the pipeline (channels, then weights)."""
    results: dict[str, Any] = field(default_factory=dict)
    """What the passes returned, by pass name (``ctx.results``): the winograd decisions, a model pass's report..."""

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.stats)

    def to_dict(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "seconds": round(self.seconds, 6),
            "verify": {
                "seconds": round(self.verify_seconds, 6),
                "checked": self.verified,
                "reverted": list(self.reverted),
                "unverifiable": self.unverifiable,
            },
            "passes": [asdict(s) | {"seconds": round(s.seconds, 6)} for s in self.stats],
        }


logger = logging.getLogger("graphopt")

ProgressHook = Callable[[str, int, int], None]
"""Called as ``hook(pass_name, index, total)`` before each pass runs."""


class PassManager:
    """Runs a pipeline over a model.

    ``passes`` is a list (names, Pass instances or classes, registered functions) or a string ``"a,b{k=v},c"``.
    With ``fixed_point`` the pipeline repeats until no pass changes anything (at most ``max_iterations`` times).
    ``check_ir`` verifies the IR's invariants after every pass, which catches broken passes early (tests use it).
    Before the first pass the model is validated once (:func:`graphopt.core.ir.validate`: no cycles, undefined inputs,
    duplicate names, unknown standard ops...), so passes may rely on a well-formed graph; a pass that raises anything
    but a GraphoptError is reported as a one-line :class:`PassFailedError` naming it.
    """

    def __init__(
        self,
        passes: Any,
        *,
        fixed_point: bool = False,
        max_iterations: int = 10,
        check_ir: bool = False,
        progress: ProgressHook | None = None,
        verify: bool = False,
        strict: bool = False,
        rtol: float = 1e-4,
        atol: float = 1e-5,
    ) -> None:
        self.passes: list[Pass] = as_passes(passes)
        self.verify, self.strict, self.rtol, self.atol = verify or strict, strict, rtol, atol
        self.fixed_point = fixed_point
        self.max_iterations = max(1, max_iterations)
        self.check_ir = check_ir
        self.progress = progress

    def run(self, model: Model, ctx: PassContext | None = None, *, target: str = "ort") -> PassReport:
        with gc_paused():
            return self._run(model, ctx, target)

    def _run(self, model: Model, ctx: PassContext | None, target: str) -> PassReport:
        if ctx is None:
            ctx = PassContext(model=model, target=target)
        if ctx.target not in TARGETS:
            raise PassError(f"unknown target {ctx.target!r}; choose one of {', '.join(TARGETS)}")
        validate(model)  # once, before any pass: no pass has to cope with cycles, undefined inputs, unknown ops...
        report = PassReport(stats=[PassStats(p.name) for p in self.passes], results=ctx.results)
        report.nodes_before = current = _count(model)
        start = time.perf_counter()
        # A pass that changed nothing on a graph finds nothing on that same graph again: until some pass changes the
        # model, a pass (same class and options) that last came back empty-handed is skipped.
        version = 0
        ran: list[str] = []  # the pass runs so far, in order: an error names the passes that ran before it
        idle_at: dict[tuple[type, str], int] = {}
        checker: _Verifier | None = None  # the model's last verified state and its outputs
        for _ in range(self.max_iterations if self.fixed_point else 1):
            report.iterations += 1
            changed_any = False
            for i, (p, stats) in enumerate(zip(self.passes, report.stats, strict=True)):
                key = (type(p), repr(p))
                if idle_at.get(key) == version or (report.iterations > 1 and getattr(p, "once", False)):
                    continue  # nothing new for it since it last ran empty-handed; or a one-shot pass that ran
                if self.progress:
                    self.progress(p.name, i, len(self.passes))
                if self.verify and checker is None and not report.unverifiable:
                    checker = _Verifier.before(model, report)
                t0 = time.perf_counter()
                ctx.counters, ctx.declines = stats.counts, stats.declines
                changed = self.run_pass(p, model, ctx, after=ran, stats=stats)
                ran.append(p.name)
                stats.seconds += time.perf_counter() - t0
                if checker is not None and changed and not checker.after(model, p, report, self):
                    changed = False  # undone: the model is as it was before this pass
                after = _count(model) if changed else current
                if stats.runs == 0:
                    stats.nodes_before = current
                stats.nodes_after = after
                stats.nodes_delta += after - current
                current = after
                stats.runs += 1
                stats.changed |= changed
                if changed and not p.annotations_only:
                    changed_any = True
                    version += 1
                else:
                    idle_at[key] = version
                if self.check_ir:
                    for g in _graphs(model):
                        g.check()
            if not changed_any:
                break
        restore_interface(model)
        report.seconds = time.perf_counter() - start
        report.nodes_after = _count(model)
        return report

    @staticmethod
    def run_pass(
        p: Pass, model: Model, ctx: PassContext, *, after: list[str] | None = None, stats: PassStats | None = None
    ) -> bool:
        """Run one pass on the main graph and, for recursive passes, on every subgraph and function body.

        An exception other than a GraphoptError becomes a one-line PassFailedError naming the pass and the passes that
        ran before it (``after``), as ``pass 'x' failed (after a, b, c): ...`` (unless ``GRAPHOPT_DEBUG`` is set)."""
        try:
            if isinstance(p, PipelinePass):
                return PassManager._run_pipeline(p, model, ctx, stats or PassStats(p.name))
            return PassManager._run_pass(p, model, ctx)
        except GraphoptError:
            raise
        except Exception as e:
            if debug_enabled():
                raise
            where = f" on {model.source_path}" if model.source_path else ""
            detail = " ".join(str(e).split())[:200]
            if isinstance(e, RecursionError | MemoryError):
                detail = f"{detail} (the model is too deep or too large for it)" if detail else "too deep or too large"
            name = f"{p.name}/{e.graphopt_step}" if hasattr(e, "graphopt_step") else p.name
            raise PassFailedError(
                f"pass {name!r} failed{_after(after)}{where}: {type(e).__name__}{': ' + detail if detail else ''} "
                f"(an internal error; GRAPHOPT_DEBUG=1 shows the traceback)"
            ) from e

    @staticmethod
    def _run_pipeline(p: PipelinePass, model: Model, ctx: PassContext, stats: PassStats) -> bool:
        """Each step in order, as a pass of its own: its time, node delta, counts and declines go to its own
        PassStats under ``stats.steps``; a step that raises is named ``pipeline/step``."""
        while len(stats.steps) < len(p.sub_passes):
            stats.steps.append(PassStats(p.sub_passes[len(stats.steps)].name))
        changed_any = False
        current = _count(model)
        try:
            for sub, child in zip(p.sub_passes, stats.steps, strict=True):
                t0 = time.perf_counter()
                ctx.counters, ctx.declines = child.counts, child.declines
                try:
                    changed = PassManager._run_pass(sub, model, ctx)
                except GraphoptError:
                    raise
                except Exception as e:
                    e.graphopt_step = sub.name  # type: ignore[attr-defined] # run_pass names it "pipeline/step"
                    raise
                child.seconds += time.perf_counter() - t0
                after = _count(model) if changed else current
                if child.runs == 0:
                    child.nodes_before = current
                child.nodes_after, child.nodes_delta = after, child.nodes_delta + after - current
                child.runs += 1
                child.changed |= changed
                current = after
                changed_any |= changed
        finally:
            ctx.counters, ctx.declines = stats.counts, stats.declines
        return changed_any

    @staticmethod
    def _run_pass(p: Pass, model: Model, ctx: PassContext) -> bool:
        return run_on_model(p, model, ctx)


class _Verifier:
    """Checks each pass: the model's outputs after it against before it, on generated inputs, under onnxruntime.

    It holds the last verified state (a snapshot and its outputs): a pass that changes nothing leaves it valid, and a
    pass that passes the check makes its result the new state, so each model state is serialized and run once.
    """

    FEEDS = 2

    def __init__(self, snapshot: onnx.ModelProto, feeds: list[dict[str, Any]], expected: list[list[Any]]) -> None:
        self.snapshot, self.feeds, self.expected = snapshot, feeds, expected

    @classmethod
    def before(cls, model: Model, report: PassReport) -> _Verifier | None:
        from graphopt.core.onnx_io import to_proto
        from graphopt.tools.runtime import make_inputs, session

        t0 = time.perf_counter()
        try:
            snapshot = to_proto(model)
            sess = session(snapshot, optimization="disabled")
            feeds = [make_inputs(sess, seed=k, batch=2) for k in range(cls.FEEDS)]
            expected = [sess.run(None, f) for f in feeds]
        except Exception as e:  # noqa: BLE001 - any model onnxruntime cannot run makes verification impossible
            report.unverifiable = f"onnxruntime cannot run the model: {str(e).splitlines()[0][:200]}"
            logger.warning("graphopt: --verify is off for this model: %s", report.unverifiable)
            return None
        finally:
            report.verify_seconds += time.perf_counter() - t0
        return cls(snapshot, feeds, expected)

    def after(self, model: Model, p: Pass, report: PassReport, pm: PassManager) -> bool:
        """True if the pass kept the outputs; otherwise undo it (or raise with ``strict``)."""
        from graphopt.core.onnx_io import from_proto, to_proto
        from graphopt.tools.runtime import session

        t0 = time.perf_counter()
        problem = ""
        try:
            snapshot = to_proto(model)
            sess = session(snapshot, optimization="disabled")
            outputs = [sess.run(None, feed) for feed in self.feeds]
            names = [o.name for o in sess.get_outputs()]
            for want, got in zip(self.expected, outputs, strict=True):
                problem = problem or _mismatch(want, got, names, pm.rtol, pm.atol)
        except Exception as e:  # noqa: BLE001 - a pass that leaves a model onnxruntime rejects failed verification
            problem = f"onnxruntime rejects the result: {str(e).splitlines()[0][:200]}"
        report.verified += 1
        if not problem:
            self.snapshot, self.expected = snapshot, outputs
        if problem:
            report.reverted.append(p.name)
            if pm.strict:
                report.verify_seconds += time.perf_counter() - t0
                raise VerificationError(f"pass {p.name!r} changed the model's outputs: {problem}")
            logger.warning("graphopt: pass %r changed the model's outputs (%s); undoing it", p.name, problem)
            model.take_contents(from_proto(self.snapshot))
        report.verify_seconds += time.perf_counter() - t0
        return not problem


def _mismatch(want: list[Any], got: list[Any], names: list[str], rtol: float, atol: float) -> str:
    import numpy as np

    from graphopt.tools.runtime import output_error

    if len(want) != len(got):
        return f"{len(want)} outputs became {len(got)}"
    for name, a, b in zip(names, want, got, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"output {name!r} {a.dtype}{list(a.shape)} became {b.dtype}{list(b.shape)}"
        max_abs, _, close = output_error(a, b, rtol, atol)
        if not close:
            return (
                f"output {name!r} differs by up to {max_abs:.3g}"
                if a.dtype.kind in "fc"
                else f"output {name!r} differs"
            )
    return ""


def _after(ran: list[str] | None, shown: int = 6) -> str:
    """`` (after a, b, c)``: the passes that ran before a failing one (the last ``shown`` of them)."""
    if not ran:
        return " (the first pass)" if ran is not None else ""
    names = ran[-shown:]
    more = f"{len(ran) - shown} more, " if len(ran) > shown else ""
    return f" (after {more}{', '.join(names)})"


def _graphs(model: Model) -> Iterator[Graph]:
    yield model.graph
    for f in model.functions.values():
        yield f.graph


def _count(model: Model) -> int:
    return model.graph.node_count()
