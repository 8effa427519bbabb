"""The one-call entry point: ``graphopt.optimize``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import onnx

from graphopt.errors import GraphoptError
from graphopt.ir import Model
from graphopt.onnx_io import from_proto, load, to_proto
from graphopt.pass_manager import PassManager, PassReport, ProgressHook
from graphopt.passes_api import PassContext, as_passes, level_pipeline


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
    calibration: Iterable[Mapping[str, Any]] | None = None,
    quantize_options: Any = None,
    prune_channels: float | None = None,
    prune_weights: float | str | None = None,
    prune_options: Mapping[str, Any] | None = None,
    keep_debug_info: bool = False,
    **options: Any,
) -> onnx.ModelProto | Model:
    """Optimize a model and return it.

    ``model`` may be a path, an ``onnx.ModelProto`` or a graphopt Model. Given a ModelProto the result is a new
    ModelProto (the caller's proto is never modified); otherwise it is a Model (a Model passed in is changed in place).
    ``passes`` (a list or ``"a,b{k=v}"``) replaces the pipeline of ``level``. ``fixed_point`` repeats the pipeline
    until nothing changes (default: on for levels 2 and 3). Extra keyword ``options`` reach passes through
    ``ctx.options``. Pass a list as ``report`` to receive the run's PassReport.

    ``keep_debug_info=True`` makes ``strip-debug-info`` a no-op (levels 2 and 3 drop exporters' per-node doc strings and
    metadata; the model's own metadata always stays).

    ``verify=True`` checks every pass that changed the model under onnxruntime on generated inputs against the model
    before it; a pass that moved the outputs is undone with a warning (``strict=True``: raise VerificationError).

    ``quantize="int8"`` quantizes the result to QDQ int8 for ``target`` after the pipeline, calibrated on
    ``calibration`` (an iterable of feed dicts keyed by input name); ``quantize_options`` is a
    :class:`graphopt.quantize.QuantizeConfig` or a dict of its fields (method, exclude, max_error, ...). The
    quantization report is ``report[0].quantization``.

    ``prune_channels=0.5`` removes half of the channels of every prunable group after the pipeline (before any
    quantization); ``prune_weights=0.5`` or ``"2:4"`` zeroes weights. ``prune_options`` go to
    :func:`graphopt.prune.prune_channels` (multiple, importance, protect, layer_ratios) and
    :func:`graphopt.prune.prune_weights` (scope, protect, sparse). Their reports are ``report[0].pruning``.
    """
    if quantize not in (None, "int8"):
        raise GraphoptError(f"quantize must be 'int8', got {quantize!r}")
    if quantize and calibration is None:
        raise GraphoptError("quantize='int8' needs calibration data: pass calibration=[{input name: array}, ...]")
    is_proto = isinstance(model, onnx.ModelProto)
    ir = from_proto(model) if is_proto else load(model)
    pipeline = as_passes(passes) if passes is not None else level_pipeline(level)
    if fixed_point is None:
        fixed_point = passes is None and level >= 2
    if calibration is not None:
        calibration = [dict(feed) for feed in calibration]  # read once; the quantize-int8 pass sees it too
        options = {**options, "calibration": calibration}
    if quantize_options is not None:
        options = {**options, "quantize_options": quantize_options}
    ctx = PassContext(model=ir, target=target, options={**options, "keep_debug_info": keep_debug_info})
    if logger is not None:
        ctx.logger = logger
    manager = PassManager(pipeline, fixed_point=fixed_point, progress=progress, verify=verify, strict=strict)
    result = manager.run(ir, ctx)
    if prune_channels is not None or prune_weights is not None:
        from graphopt.prune import run_pruning

        result.pruning = run_pruning(ir, prune_channels, prune_weights, prune_options or {})
    if quantize:
        from graphopt.quantize import quantize_model

        result.quantization = quantize_model(ir, calibration, target, quantize_options)  # type: ignore[arg-type]
    if report is not None:
        report.append(result)
    return to_proto(ir) if is_proto else ir
