"""The one orchestration path: an :class:`OptimizeRequest` (validated once) run by :func:`run_request`.

``graphopt.optimize`` and the ``graphopt optimize`` command both build a request and run it: the pipeline of a level
(or the given passes) to a fixed point, then the lossy one-shot drivers outside that loop (pruning, then fp16/bf16
conversion or int8 quantization). A failure in any of them leaves a caller's Model as it was.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import onnx

from graphopt.core.ir import Model
from graphopt.core.onnx_io import from_proto, load, to_proto
from graphopt.engine.pass_manager import PassManager, PassReport, ProgressHook
from graphopt.engine.passes_api import TARGETS, Pass, PassContext, as_passes, context_options, get_pass, level_pipeline
from graphopt.errors import GraphoptError

Calibration = (
    Iterable[Mapping[str, Any]]
    | str
    | os.PathLike[str]
    | Callable[[Model], "tuple[list[dict[str, Any]], list[str] | None]"]
)
"""Feed dicts keyed by input name, a directory of ``.npz`` files (one feed dict each, as ``--calib-data`` reads), or
a function of the loaded model returning the feeds and where each came from (the CLI reads a folder or draws random
samples once the model is loaded)."""

CALIBRATION_FORMS = (
    "a directory of .npz files (str or os.PathLike), an iterable of feed dicts {input name: array}, or a function "
    "of the loaded Model returning (feeds, sources)"
)


def dir_calibration(path: str | os.PathLike[str]) -> Callable[[Model], tuple[list[dict[str, Any]], list[str]]]:
    """Calibration read from a directory of ``.npz`` files once the model is loaded (each file's arrays matched
    against its inputs): what ``--calib-data DIR`` and ``optimize(calibration=DIR)`` both use. The directory is
    checked now (exists, is a directory, holds .npz files), before any work."""
    from graphopt.quantize.calibration import load_dir, npz_files

    npz_files(path)

    def read(model: Model) -> tuple[list[dict[str, Any]], list[str]]:
        named = load_dir(path, model)
        return [feed for _, feed in named], [str(f) for f, _ in named]

    return read


def _calibration_arg(calibration: Any, spell: Callable[[str], str]) -> Any:
    """``calibration`` in one of its accepted forms (a path becomes :func:`dir_calibration`); any other type is a
    GraphoptError naming the forms, never a raw error from deep inside (``dict("calib")``)."""
    if calibration is None or callable(calibration):
        return calibration
    if isinstance(calibration, str | os.PathLike):
        return dir_calibration(calibration)
    if isinstance(calibration, Mapping):
        raise GraphoptError(
            f"{spell('calibration')} is a single dict; pass a list of feed dicts ([feed, ...]), one per sample "
            f"(it must be {CALIBRATION_FORMS})"
        )
    if isinstance(calibration, bytes | bytearray) or not isinstance(calibration, Iterable):
        raise GraphoptError(f"{spell('calibration')} must be {CALIBRATION_FORMS}; got {type(calibration).__name__}")
    return calibration


def _feed_dicts(calibration: Iterable[Any]) -> list[dict[str, Any]]:
    feeds = []
    for i, feed in enumerate(calibration):
        if not isinstance(feed, Mapping):
            raise GraphoptError(
                f"calibration item #{i} is of type {type(feed).__name__}, not a feed dict {{input name: array}}; "
                f"calibration must be {CALIBRATION_FORMS}"
            )
        feeds.append(dict(feed))
    return feeds


def _spell_api(name: str) -> str:
    return name


@dataclass
class OptimizeRequest:
    """Everything one optimization run is asked to do. ``validate`` checks it once, before any model is loaded;
    ``spell`` renders a field's name in the caller's terms (``prune_channels`` for Python, ``--prune-channels`` for
    the CLI), so both front ends share one set of checks and messages."""

    level: int = 2
    passes: Any = None
    """A list or ``"a,b{k=v}"``: replaces the level's pipeline."""
    target: str = "ort"
    fixed_point: bool | None = None
    """Repeat the pipeline until nothing changes (default: on for levels 2 and 3 without ``passes``)."""
    verify: bool = False
    strict: bool = False
    keep_debug_info: bool = False
    quantize: str | None = None
    calibration: Calibration | None = None
    quantize_options: Any = None
    prune_channels: float | None = None
    prune_weights: float | str | None = None
    prune_options: Mapping[str, Any] | None = None
    prune_bench: int = 0
    """Time the model before and after pruning over this many runs (the latency lands in the last PruneReport)."""
    precision: str | None = None
    """``fp16`` or ``bf16``: convert to half precision after the pipeline (report in ``results["precision"]``)."""
    precision_options: Any = None
    """A :class:`graphopt.quantize.precision.PrecisionConfig` or a dict of its fields."""
    options: dict[str, Any] = field(default_factory=dict)
    """Context options the passes read (``ctx.options``), such as ``winograd`` and ``winograd_threads``."""

    def validate(self, spell: Callable[[str], str] = _spell_api) -> OptimizeRequest:
        if self.target not in TARGETS:
            raise GraphoptError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.quantize not in (None, "int8", "int8-dynamic", "int4"):
            raise GraphoptError(f"{spell('quantize')} must be 'int8', 'int8-dynamic' or 'int4', got {self.quantize!r}")
        if self.quantize == "int8-dynamic" and self.target == "tensorrt":
            from graphopt.quantize.dynamic_driver import TENSORRT_MESSAGE

            raise GraphoptError(TENSORRT_MESSAGE)
        if self.precision not in (None, "fp16", "bf16"):
            raise GraphoptError(f"{spell('precision')} must be 'fp16' or 'bf16', got {self.precision!r}")
        if self.precision and self.quantize:
            raise GraphoptError(f"give either {spell('precision')} or {spell('quantize')}, not both")
        self.calibration = _calibration_arg(self.calibration, spell)
        if self.quantize == "int8" and self.calibration is None:
            raise GraphoptError(
                f"{spell('quantize')}='int8' needs calibration data: pass calibration=[{{input name: array}}, ...]"
            )
        if self.prune_channels is not None and not 0 <= self.prune_channels < 1:
            raise GraphoptError(f"{spell('prune_channels')} must be in [0, 1), got {self.prune_channels}")
        weights = self.prune_weights
        if weights is not None and weights != "2:4":
            try:
                weights = float(weights)
            except (TypeError, ValueError):
                raise GraphoptError(
                    f"{spell('prune_weights')} takes a ratio in [0, 1) or 2:4, got {self.prune_weights!r}"
                ) from None
            if not 0 <= weights < 1:
                raise GraphoptError(f"{spell('prune_weights')} must be in [0, 1) or 2:4, got {self.prune_weights}")
            self.prune_weights = weights
        check_context_options(self.options)
        return self

    def pipeline(self) -> list[Pass]:
        """The passes to run: ``passes``, or the level's pipeline; a forced Winograd mode adds the winograd pass."""
        pipeline = as_passes(self.passes) if self.passes is not None else level_pipeline(self.level)
        if self.options.get("winograd") not in (None, "off") and not any(p.name == "winograd" for p in pipeline):
            pipeline.append(get_pass("winograd")())  # a forced or explicit mode runs at any level
        return pipeline

    def wants_fixed_point(self) -> bool:
        return self.fixed_point if self.fixed_point is not None else (self.passes is None and self.level >= 2)


@dataclass
class RunHooks:
    """How a front end watches a run: ``progress(pass, index, total)`` before each pass, ``stage(name)`` a context
    around each stage (``"passes"``, ``"prune"``, ``"quantize"``), ``quantize_progress(stage, done, total)``."""

    progress: ProgressHook | None = None
    stage: Callable[[str], AbstractContextManager[Any]] | None = None
    quantize_progress: Callable[[str, int, int | None], None] | None = None
    logger: logging.Logger | None = None


def run_request(
    model: Model, request: OptimizeRequest, hooks: RunHooks | None = None, *, restore_on_error: bool = False
) -> PassReport:
    """Run a validated request on ``model`` in place: the pipeline, then pruning, then half precision or quantization.

    With ``restore_on_error`` the model is snapshot first and put back as it was if anything raises (the snapshot is
    the model serialized once: about as long as one ``to_proto``)."""
    hooks = hooks or RunHooks()

    def stage(name: str) -> AbstractContextManager[Any]:
        return hooks.stage(name) if hooks.stage is not None else nullcontext()

    pipeline = request.pipeline()
    options = dict(request.options)
    feeds: list[dict[str, Any]] | None = None
    sources: list[str] | None = None
    if request.calibration is not None and not callable(request.calibration):
        feeds = _feed_dicts(request.calibration)  # read once; the quantize-int8 pass sees it too
        options["calibration"] = feeds
    elif callable(request.calibration) and any(p.name == "quantize-int8" for p in pipeline):
        feeds, sources = request.calibration(model)  # a directory (or reader): the pass in the pipeline needs it now
        options["calibration"] = feeds
    if request.quantize_options is not None:
        options["quantize_options"] = request.quantize_options
    options["keep_debug_info"] = request.keep_debug_info
    ctx = PassContext(model=model, target=request.target, options=options)
    if hooks.logger is not None:
        ctx.logger = hooks.logger
    snapshot = to_proto(model) if restore_on_error else None
    # the names the user saw: an option naming a node the passes removed is told from a typo (tools.names)
    lossy = request.quantize or request.precision or {request.prune_channels, request.prune_weights} != {None}
    names_before = {n.name for n in model.graph.all_nodes()} if lossy else None
    try:
        manager = PassManager(
            pipeline,
            fixed_point=request.wants_fixed_point(),
            progress=hooks.progress,
            verify=request.verify,
            strict=request.strict,
        )
        with stage("passes"):
            report = manager.run(model, ctx)
        report.context = ctx
        if request.quantize:  # before pruning or calibration runs: a misspelt name costs nothing
            from graphopt.quantize.analysis import check_exclusions

            check_exclusions(model, request.quantize_options, before=names_before)
        if request.prune_channels is not None or request.prune_weights is not None:
            from graphopt.prune.driver import check_names, run_pruning

            check_names(model, request.prune_options or {}, before=names_before)  # before calibration data is read
            with stage("prune"):
                if feeds is None and callable(request.calibration) and request.prune_channels is not None:
                    feeds, sources = request.calibration(model)  # the user's data: sizes the model takes
                report.pruning = run_pruning(
                    model,
                    request.prune_channels,
                    request.prune_weights,
                    request.prune_options or {},
                    bench=request.prune_bench,
                    sample=feeds[0] if feeds else None,  # the calibration data's first sample: sizes the model takes
                )
        if request.precision:
            from graphopt.quantize.precision import PrecisionConfig, check_names, convert_precision

            config = PrecisionConfig.of(request.precision_options)
            config.precision = request.precision
            check_names(model, config, before=names_before)  # before calibration data is read
            with stage("precision"):
                if feeds is None and request.calibration is not None:
                    feeds, sources = request.calibration(model)  # type: ignore[misc,operator]
                report.results["precision"] = convert_precision(model, feeds, request.target, config, sources=sources)
        if request.quantize == "int4":
            from graphopt.quantize.int4 import quantize_model_int4

            with stage("quantize"):
                if feeds is None and request.calibration is not None:
                    feeds, sources = request.calibration(model)  # type: ignore[misc,operator]
                report.quantization = quantize_model_int4(
                    model, feeds, request.target, request.quantize_options, progress=hooks.quantize_progress
                )
        elif request.quantize == "int8-dynamic":
            from graphopt.quantize.dynamic_driver import quantize_model_dynamic

            with stage("quantize"):
                if feeds is None and request.calibration is not None:
                    feeds, sources = request.calibration(model)  # type: ignore[misc,operator]
                report.quantization = quantize_model_dynamic(
                    model, request.target, request.quantize_options, feeds=feeds, sources=sources
                )
        elif request.quantize:
            from graphopt.quantize.driver import quantize_model

            with stage("quantize"):
                if feeds is None:
                    feeds, sources = request.calibration(model)  # type: ignore[misc,operator]
                report.quantization = quantize_model(
                    model,
                    feeds,  # type: ignore[arg-type]
                    request.target,
                    request.quantize_options,
                    progress=hooks.quantize_progress,
                    sources=sources,
                )
        if request.target == "ort" and (pipeline or request.quantize or request.precision or report.pruning):
            speed = bool(request.quantize or request.precision or request.level >= 3)
            _emit_for_ort(model, ctx, report, speed=speed)
    except BaseException:
        if snapshot is not None:
            model.take_contents(from_proto(snapshot))
        raise
    return report


def _emit_for_ort(model: Model, ctx: PassContext, report: PassReport, *, speed: bool = True) -> None:
    """The last step of every run for target ort (after the pipeline and the lossy drivers, so nothing rewrites it
    again): ``decompose-prelu`` writes PRelu as ops onnxruntime runs faster, ``ort-avoid-fusions`` writes the graph so
    that onnxruntime does not fuse it into kernels measured slower (docs/architecture.md, "Emission for a target").
    Without ``speed`` (below -O3 and no quantize/precision driver) decompose-prelu writes no four-node form: -O2 adds
    no nodes for a PRelu. Each one's row joins the pass table only when it changed or counted something."""
    ctx.options["prelu_same_size"] = not speed or bool(ctx.options.get("prelu_same_size"))
    step = PassManager([get_pass("decompose-prelu")(), get_pass("ort-avoid-fusions")()]).run(model, ctx)
    rows = [s for s in step.stats if s.changed or s.counts]  # a PRelu kept at -O2 says so (prelu-kept-at-O2)
    if rows:
        report.stats.extend(rows)
        report.seconds += step.seconds


def optimize(
    model: str | os.PathLike[str] | onnx.ModelProto | Model,
    level: int = 2,
    passes: Any = None,
    target: str = "ort",
    *,
    fixed_point: bool | None = None,
    verify: bool = False,
    strict: bool = False,
    report: list[PassReport] | None = None,
    progress: ProgressHook | None = None,
    logger: logging.Logger | None = None,
    quantize: str | None = None,
    calibration: Iterable[Mapping[str, Any]] | str | os.PathLike[str] | None = None,
    quantize_options: Any = None,
    prune_channels: float | None = None,
    prune_weights: float | str | None = None,
    prune_options: Mapping[str, Any] | None = None,
    keep_debug_info: bool = False,
    precision: str | None = None,
    precision_options: Any = None,
    **options: Any,
) -> onnx.ModelProto | Model:
    """Optimize a model and return it.

    ``model`` may be a path, an ``onnx.ModelProto`` or a graphopt Model. Given a ModelProto the result is a new
    ModelProto (the caller's proto is never modified); otherwise it is a Model (a Model passed in is changed in place,
    and left as it was if a pass or driver fails). ``passes`` (a list or ``"a,b{k=v}"``) replaces the pipeline of
    ``level``. ``fixed_point`` repeats the pipeline until nothing changes (default: on for levels 2 and 3). Extra
    keyword ``options`` are the context options passes declare (``winograd``, ``winograd_threads``); they reach passes
    through ``ctx.options``; any other keyword is a TypeError naming the nearest valid one. Pass a list as ``report``
    to receive the run's PassReport.

    ``keep_debug_info=True`` makes ``strip-debug-info`` a no-op (levels 2 and 3 drop exporters' per-node doc strings and
    metadata; the model's own metadata always stays).

    ``verify=True`` checks every pass that changed the model under onnxruntime on generated inputs against the model
    before it; a pass that moved the outputs is undone with a warning (``strict=True``: raise VerificationError).

    ``quantize="int8"`` quantizes the result to QDQ int8 for ``target`` after the pipeline, calibrated on
    ``calibration``: an iterable of feed dicts keyed by input name, or a directory of ``.npz`` files (a str or
    os.PathLike, read as ``--calib-data`` reads it); any other type is a GraphoptError. ``quantize_options`` is a
    :class:`graphopt.quantize.QuantizeConfig` or a dict of its fields (method, exclude, max_error, ...). The
    quantization report is ``report[0].quantization``. ``quantize="int4"`` quantizes MatMul/Gemm weights to blocked
    int4 instead (:mod:`graphopt.quantize.int4`; ``quantize_options`` an ``Int4Config`` or a dict of its fields:
    method rtn/gptq, block_size, symmetric, bits8, ...; ``calibration`` optional for rtn).
    ``quantize="int8-dynamic"`` needs no calibration: int8
    weights per output channel and activations quantized at run time for every MatMul/Gemm with a constant weight,
    embedding tables int8 per row (target ort only); ``calibration``, if given, is where its error is measured.

    ``prune_channels=0.5`` removes half of the channels of every prunable group after the pipeline (before any
    quantization); ``prune_weights=0.5`` or ``"2:4"`` zeroes weights. ``prune_options`` go to
    :func:`graphopt.prune.prune_channels` (multiple, importance, protect, layer_ratios) and
    :func:`graphopt.prune.prune_weights` (scope, protect, sparse). Their reports are ``report[0].pruning``.

    ``precision="fp16"`` or ``"bf16"`` converts the result to half precision after the pipeline (nodes that overflow
    on ``calibration``, or on random inputs when none is given, stay fp32); ``precision_options`` is a
    :class:`graphopt.quantize.precision.PrecisionConfig` or a dict of its fields (keep_io_types, block_ops, allow_ops,
    block_nodes, kernels). The report is ``report[0].results["precision"]``.
    """
    request = OptimizeRequest(
        level=level,
        passes=passes,
        target=target,
        fixed_point=fixed_point,
        verify=verify,
        strict=strict,
        keep_debug_info=keep_debug_info,
        quantize=quantize,
        calibration=calibration,
        quantize_options=quantize_options,
        prune_channels=prune_channels,
        prune_weights=prune_weights,
        prune_options=prune_options,
        precision=precision,
        precision_options=precision_options,
        options=dict(options),
    ).validate()
    is_proto = isinstance(model, onnx.ModelProto)
    given = isinstance(model, Model)
    ir = from_proto(model) if is_proto else load(model)
    result = run_request(ir, request, RunHooks(progress=progress, logger=logger), restore_on_error=given)
    if report is not None:
        report.append(result)
    return to_proto(ir) if is_proto else ir


def check_context_options(options: Mapping[str, Any]) -> None:
    """Every extra keyword of ``optimize`` must be a context option some registered pass declares: a misspelt
    ``quantise=`` or ``levle=`` is a TypeError naming the nearest valid keyword, never a silent plain run."""
    if not options:
        return
    known = context_options(plugins=False)  # the CLI always sets winograd_threads: no plugin scan for a built-in key
    if any(key not in known for key in options):
        known = context_options()
    for key in options:
        if key in known:
            continue
        valid = sorted(set(_PARAMETERS) | set(known))
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f" (valid: {', '.join(valid)})"
        raise TypeError(f"optimize() got an unexpected keyword argument {key!r}{hint}")


_PARAMETERS = tuple(p for p in inspect.signature(optimize).parameters if p not in ("model", "options"))
