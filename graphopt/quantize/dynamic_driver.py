"""The driver of ``--quantize int8-dynamic``: every MatMul/Gemm with a constant weight to dynamic int8 and every
vocabulary table to int8 rows (:mod:`graphopt.quantize.dynamic` and :mod:`graphopt.quantize.embeddings` do the
rewriting), then the same measurements and report as the static driver.

Kept apart from :mod:`graphopt.quantize.dynamic` so that the static driver can use the dynamic rewrite (its automatic
per-layer choice) without an import cycle: this module sits above the driver, next to the passes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from graphopt.core.ir import Model
from graphopt.errors import GraphoptError
from graphopt.quantize.dynamic import already_quantized, dynamic_candidates, measured_forms, quantize_dynamic_nodes
from graphopt.quantize.embeddings import quantize_embeddings
from graphopt.quantize.report import QuantReport

# --------------------------------------------------------------------------------------------------------------------
# the driver entry: --quantize int8-dynamic
# --------------------------------------------------------------------------------------------------------------------
TENSORRT_MESSAGE = (
    "--quantize int8-dynamic is for target ort: TensorRT has no run-time activation quantization (its int8 needs "
    "calibrated Q/DQ scales); use --quantize int8 with --calib-data for --target tensorrt"
)
MEASURE_SAMPLES = 2
"""Random samples the output error is measured on when no calibration data is given (nothing is calibrated)."""


def quantize_model_dynamic(
    model: Model,
    target: str = "ort",
    config: Any = None,
    *,
    feeds: Iterable[Mapping[str, np.ndarray]] | None = None,
    sources: Sequence[str] | None = None,
    progress: Any = None,
) -> QuantReport:
    """Dynamic int8 of ``model`` in place (target ``ort``): every MatMul/Gemm with a constant 2-D weight that the
    config's selection allows goes dynamic (``quantize_dynamic_nodes``), every Gather-read vocabulary table goes int8
    per row (``quantize_embeddings``); the float weights are dropped. ``feeds`` (optional: nothing is calibrated)
    are where the output error and per-layer SQNR are measured; without them, on random inputs.
    Returns the same QuantReport as the static driver, with ``method="dynamic"`` and each layer's ``mode``."""
    from graphopt.core.shape_inference import infer_shapes
    from graphopt.engine.pass_manager import PassManager
    from graphopt.quantize import analysis, driver
    from graphopt.tools import runtime
    from graphopt.tools.summary import initializer_bytes

    if target == "tensorrt":
        raise GraphoptError(TENSORRT_MESSAGE)
    cfg = driver.QuantizeConfig.of(config)
    if cfg.max_error is not None:
        raise GraphoptError("max error applies to --quantize int8 (calibrated); int8-dynamic has no accuracy search")
    if not model.graph.outputs:
        raise GraphoptError("nothing to quantize: the model has no outputs")
    if already_quantized(model.graph):
        raise GraphoptError("the model is already quantized: it has Q/DQ or integer MatMul nodes")
    analysis.check_exclusions(model, cfg)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model.graph.name_unnamed_nodes()
    infer_shapes(model)
    base = model.to_onnx()
    batches = [dict(f) for f in feeds] if feeds is not None else None
    notes: list[str] = []
    if batches:
        for i, feed in enumerate(batches):
            from graphopt.quantize.calibration import check_feed, sample_name

            check_feed(model, feed, sample_name(sources, i))
    else:
        sess = runtime.session(base, optimization="disabled")
        batches = [runtime.make_inputs(sess, seed=i) for i in range(MEASURE_SAMPLES)]
        sources = [f"random sample #{i}" for i in range(len(batches))]
        notes.append(f"output error measured on {len(batches)} random inputs (no --calib-data given)")
    selection = cfg.selection()
    ops = {"MatMul", "Gemm"} if cfg.op_types is None else set(cfg.op_types) & {"MatMul", "Gemm"}
    nodes = [n for n in dynamic_candidates(model.graph) if n.op_type in ops and selection.allows(n, "ort")]
    want_tables = cfg.op_types is None or "Gather" in cfg.op_types
    skip = {n.name for n in model.graph if n.op_type == "Gather" and not selection.allows(n, "ort")}
    if not nodes and not want_tables:
        raise GraphoptError("nothing to quantize: no MatMul/Gemm with a constant 2-D weight outside the exclusions")
    reduce_range, reason = driver.choose_reduce_range(cfg, "ort")
    timings["plan"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    outputs = {n.name: n.outputs[0].name for n in nodes if n.outputs[0] is not None}
    bytes_before = initializer_bytes(model)
    forms = measured_forms(model, nodes, batches, per_channel=cfg.per_channel, threads=cfg.threads)
    layers = quantize_dynamic_nodes(model, nodes, per_channel=cfg.per_channel, reduce_range=reduce_range, forms=forms)
    if want_tables:
        layers += quantize_embeddings(model, skip=skip)
    if not any(layer.mode for layer in layers):
        raise GraphoptError(
            "nothing to quantize: no MatMul/Gemm with a constant 2-D weight and no embedding table outside the "
            "exclusions"
        )
    PassManager("dce,remove-unused").run(model, target="ort")  # the float weights nothing reads any more
    timings["insert"] = time.perf_counter() - t0

    report = QuantReport(
        target="ort",
        method="dynamic",
        percentile=float("nan"),
        batches=len(batches),
        cached=False,
        cache_file=None,
        reduce_range=reduce_range,
        reduce_range_reason=reason,
        per_channel=cfg.per_channel,
        param_bytes_before=bytes_before,
    )
    t0 = time.perf_counter()
    quantized = model.to_onnx()
    reference = driver._run(base, batches, threads=cfg.threads, sources=sources)
    got = driver._run(quantized, batches, threads=cfg.threads, sources=sources)
    report.error_rel, report.error_max_abs = driver.output_error(reference, got)
    report.sqnr_db = driver.sqnr_db(report.error_rel)
    report.param_bytes_after = initializer_bytes(model)
    done = [layer for layer in layers if layer.mode == "dynamic"]
    probes = [
        analysis.Layer(x.name, x.op_type, output=outputs[x.name], dequantized=outputs[x.name])
        for x in done
        if x.name in outputs
    ]
    per_layer = driver._layer_sqnr(base, quantized, probes, batches, cfg.threads)
    # layers merged into one kernel (merge_parallel) are found in onnxruntime's graph under that kernel's name
    kernel = {x.name: getattr(x, "merged_into", x.name) for x in done}
    kernels = [analysis.Layer(k, "MatMul", output="", dequantized="") for k in dict.fromkeys(kernel.values())]
    try:
        fused: dict[str, str] | None = driver._fused_layers(quantized, kernels)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - the report then says "unknown" rather than failing the run
        driver.logger.warning("could not read onnxruntime's optimized graph: %s", exc)
        fused = None
    for layer in layers:
        if layer.mode == "dynamic":
            layer.sqnr_db = per_layer.get(layer.name, layer.sqnr_db)
            layer.fused_as = fused.get(kernel[layer.name]) if fused is not None else None
            layer.fused = None if fused is None else layer.fused_as is not None
    report.layers = [layer for layer in layers if layer.mode]
    timings["measure"] = time.perf_counter() - t0
    report.seconds = timings
    if report.sqnr_db < cfg.sqnr_floor_db:
        notes.append(
            f"the int8 model's output SQNR is {report.sqnr_db:.1f} dB (relative error {report.error_rel:.3g}), below "
            f"{cfg.sqnr_floor_db:g} dB: it may be unusable (keep layers float with --exclude)"
        )
    for note in notes:
        driver.logger.warning("%s", note)
    report.warnings = notes
    return report
