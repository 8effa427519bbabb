"""Int8 QDQ quantization of a model: calibrate, place Q/DQ for the target, measure, report.

``quantize_model`` runs on a model that has been through the lossless passes (BatchNorm and constants folded):

1. shape inference types the activations; ``analysis.plan`` picks the nodes and the tensors to measure;
2. ``calibration.collect`` runs onnxruntime over the calibration feeds (or reads the cache) and the chosen method
   turns the statistics into ranges;
   (before it, SmoothQuant: ``smoothquant.smooth`` with per-channel maxima from one more pass;)
3. the per-layer choice (``choice.estimate`` in one pass, ``choice.choose``): static, dynamic int8 or float per layer;
   with ``max_error``, the accuracy guard (``_guard``) demotes the fewest layers, worst first, until the model's output
   error on the calibration set is at most ``max_error``;
4. ``transform.apply`` inserts the Q/DQ pairs and quantized weights; ``dynamic.quantize_dynamic_nodes`` and
   ``embeddings.quantize_embeddings`` take the dynamic layers and the vocabulary tables (target ort, auto choice);
5. the report measures per-layer SQNR (each quantized layer's dequantized output against the float model's), whether
   onnxruntime fused each layer into a QLinear op (read from its optimized graph, target ort), and the model's
   output error and parameter bytes before and after.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from graphopt.core.ir import Model
from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.engine.pass_manager import PassManager
from graphopt.errors import GraphoptError
from graphopt.quantize import analysis, choice, smoothquant, transform
from graphopt.quantize import calibration as calib
from graphopt.quantize.report import LayerReport, QuantReport
from graphopt.tools import runtime
from graphopt.tools.summary import initializer_bytes

logger = logging.getLogger("graphopt.quantize")

FUSED_OPS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearConcat",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearConvTranspose",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
    }
)
"""onnxruntime's integer kernels: a layer whose computation ends up in one of these ran in int8."""

Progress = Callable[[str, int, int | None], None]

PER_CHANNEL_OPSET = 13
"""The first opset whose QuantizeLinear/DequantizeLinear take an ``axis`` (per-channel scales)."""
SMOOTH_ALPHA = 0.5
"""SmoothQuant's default alpha (see benchmarks/RESULTS-quantize.md for the sweep that chose it)."""
SQNR_FLOOR_DB = 10.0
"""Below this output SQNR (a relative error above ~0.32: a third of the output is noise) the int8 model is flagged
and falls back layer by layer (the accuracy guard with the floor's error as its budget); see ``fallback``."""


@dataclass
class QuantizeConfig:
    """How to quantize. ``exclude`` entries match node names exactly; ``exclude_ops`` op types; ``exclude_regex``
    node names by ``re.search``. ``reduce_range`` None means: decide from the CPU (7-bit weights without VNNI)."""

    method: str = "percentile"
    percentile: float = 99.999
    op_types: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    exclude_ops: Sequence[str] = ()
    exclude_regex: Sequence[str] = ()
    per_channel: bool = True
    reduce_range: bool | None = None
    max_error: float | None = None
    cache: str | os.PathLike[str] | bool | None = True
    threads: int | None = None
    upgrade_opset: bool = True
    """Convert a model below opset 13 to opset 13 first (onnx's version converter): per-channel weight scales and
    TensorRT's Q/DQ need it; False keeps the model's opset and one weight scale per tensor."""
    sqnr_floor_db: float = SQNR_FLOOR_DB
    """Warn (naming the worst layers) when the quantized model's output SQNR on the calibration set is below this."""
    fallback: bool = True
    guard_label: str = "--max-error"
    """How reasons and warnings name the accuracy guard's budget (the SQNR fallback runs the guard as the floor)."""
    """Below ``sqnr_floor_db`` (and without ``max_error``), keep the most sensitive layers float until the output SQNR
    reaches the floor (as ``max_error`` would, with the floor's relative error), and say so; False: write the int8
    model as it is, with the warning only."""
    smooth_alpha: float | None = SMOOTH_ALPHA
    """SmoothQuant's migration strength for MatMul/Gemm with constant weights (None: no smoothing)."""
    smooth_mode: str = "mul"
    """``fold``: smooth only where the scales fold exactly into the producer; ``mul``: elsewhere insert a Mul."""
    layer_min_db: float = 40.0
    """Per-layer budget of the automatic choice: a layer whose own int8 SQNR estimate is below it is not static."""
    choice: str = "auto"
    """``auto``: per layer static int8, dynamic int8 or float from its estimated error; ``static``: every planned
    layer static int8 (the behaviour before the per-layer choice)."""

    @classmethod
    def of(cls, value: QuantizeConfig | Mapping[str, Any] | None) -> QuantizeConfig:
        if value is None:
            return cls()
        if isinstance(value, QuantizeConfig):
            return value
        unknown = sorted(set(value) - set(cls.__dataclass_fields__))
        if unknown:
            raise GraphoptError(f"unknown quantization option {unknown[0]!r}")
        return cls(**value)

    def selection(self, extra_names: Iterable[str] = ()) -> analysis.Selection:
        return analysis.Selection(
            op_types=frozenset(self.op_types) if self.op_types is not None else None,
            exclude_names=frozenset(self.exclude) | frozenset(extra_names),
            exclude_ops=frozenset(self.exclude_ops),
            exclude_regex=tuple(self.exclude_regex),
        )


# --------------------------------------------------------------------------------------------------------------------
# CPU
# --------------------------------------------------------------------------------------------------------------------
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_vnni(cpuinfo: str | None = None) -> tuple[bool | None, str]:
    """Whether the CPU has VNNI int8 dot products (and which flag says so); None when it cannot be told."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None, "CPU flags unknown"
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            found = [f for f in VNNI_FLAGS if f in flags]
            return (True, found[0]) if found else (False, "no VNNI")
    return None, "CPU flags unknown"


def choose_reduce_range(config: QuantizeConfig, target: str) -> tuple[bool, str]:
    if target != "ort":
        return False, "target tensorrt: full int8 weights"
    if config.reduce_range is not None:
        return config.reduce_range, "set by the user"
    vnni, flag = cpu_vnni()
    if vnni:
        return False, f"CPU has VNNI ({flag}): full-range int8 weights"
    if vnni is None:
        return True, f"{flag}: 7-bit weights to avoid u8s8 saturation"
    return True, "CPU has no VNNI: 7-bit weights so u8s8 products cannot saturate"


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------
def _run(
    proto: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    names: Sequence[str] | None = None,
    optimization: str = "all",
    threads: int | None = None,
    sources: Sequence[str] | None = None,
) -> list[list[np.ndarray]]:
    sess = runtime.session(proto, threads=threads, optimization=optimization)
    return [runtime.run(sess, names, f, calib.sample_name(sources, i)) for i, f in enumerate(feeds)]


def output_error(
    reference: Sequence[Sequence[np.ndarray]], other: Sequence[Sequence[np.ndarray]]
) -> tuple[float, float]:
    """Relative L2 error (||other - ref|| / ||ref|| over all float outputs and batches) and the max abs error."""
    signal = noise = 0.0
    max_abs = 0.0
    for ref_batch, got_batch in zip(reference, other, strict=True):
        for a, b in zip(ref_batch, got_batch, strict=True):
            a, b = np.asarray(a), np.asarray(b)
            if a.dtype.kind != "f":
                continue
            d = b.astype(np.float64) - a.astype(np.float64)
            signal += float(np.sum(np.square(a, dtype=np.float64)))
            noise += float(np.sum(np.square(d)))
            if d.size:
                max_abs = max(max_abs, float(np.max(np.abs(d))))
    rel = math.sqrt(noise / signal) if signal > 0 else (0.0 if noise == 0 else float("inf"))
    return rel, max_abs


def sqnr_db(rel_error: float) -> float:
    return float("inf") if rel_error == 0 else -20.0 * math.log10(rel_error)


# --------------------------------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------------------------------
def quantize_model(
    model: Model,
    feeds: Iterable[Mapping[str, np.ndarray]],
    target: str = "ort",
    config: QuantizeConfig | Mapping[str, Any] | None = None,
    *,
    progress: Progress | None = None,
    sources: Sequence[str] | None = None,
) -> QuantReport:
    """Quantize ``model`` in place to int8 QDQ for ``target`` (``ort`` or ``tensorrt``); returns the report.

    ``sources`` names where each feed came from (its file) in errors."""
    cfg = QuantizeConfig.of(config)
    if cfg.method not in calib.METHODS:
        raise GraphoptError(f"unknown calibration method {cfg.method!r} (choose from {', '.join(calib.METHODS)})")
    if not 0.0 < cfg.percentile <= 100.0:
        raise GraphoptError(f"percentile must be in (0, 100], got {cfg.percentile}")
    if cfg.max_error is not None and not cfg.max_error > 0:
        raise GraphoptError(f"max error must be positive, got {cfg.max_error}")
    if not model.graph.outputs:
        raise GraphoptError("nothing to quantize: the model has no outputs")
    batches = [dict(f) for f in feeds]
    if not batches:
        raise GraphoptError("no calibration data: the calibration set is empty")
    for i, feed in enumerate(batches):
        calib.check_feed(model, feed, calib.sample_name(sources, i))
    found = analysis.quantized_ops(model.graph)
    if found:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:4])
        raise GraphoptError(
            f"the model is already quantized ({ops}): graphopt does not quantize a quantized model again; "
            "give it the float model"
        )
    opset = model.opset("") or 0
    notes: list[str] = []
    upgraded = None
    if opset < PER_CHANNEL_OPSET and cfg.upgrade_opset and (cfg.per_channel or target == "tensorrt"):
        problem = _upgrade_opset(model, PER_CHANNEL_OPSET)
        if problem is None:
            upgraded = (opset, PER_CHANNEL_OPSET)
            logger.info("opset %d converted to %d for per-channel Q/DQ", opset, PER_CHANNEL_OPSET)
            opset = PER_CHANNEL_OPSET
        else:
            notes.append(f"opset {opset} kept (onnx's version converter failed: {problem})")
    if opset < 10:
        raise GraphoptError(f"nothing to quantize: opset {opset} has no QuantizeLinear (10 or later needed)")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model.graph.name_unnamed_nodes()
    infer_shapes(model)
    selection = cfg.selection()
    the_plan = analysis.plan(model.graph, target, selection)
    if not any(n.op_type not in analysis.SHARE for n in the_plan.nodes):
        half = analysis.float16_layers(model.graph)
        if half:
            raise GraphoptError(
                f"nothing to quantize: the model computes in float16 ({half} Conv/ConvTranspose/Gemm/MatMul layers "
                "take float16 data); int8 quantization starts from float32 layers: give it the float32 model"
            )
        raise GraphoptError(
            f"nothing to quantize: no float {'/'.join(sorted(analysis.LINEAR))} or other quantizable op "
            f"(target {target}) outside the exclusions"
        )
    reduce_range, reason = choose_reduce_range(cfg, target)
    per_channel = cfg.per_channel and opset >= PER_CHANNEL_OPSET
    if cfg.per_channel and opset < PER_CHANNEL_OPSET:
        notes.append(f"opset {opset} has no per-axis QuantizeLinear: weights get one scale per tensor")
    options = transform.Options(per_channel=per_channel, reduce_range=reduce_range)
    original = model.to_onnx()
    timings["plan"] = time.perf_counter() - t0

    smoothed: list[smoothquant.Smoothed] = []
    absmax: dict[str, np.ndarray] = {}
    if cfg.smooth_alpha is not None:
        t0 = time.perf_counter()
        smoothed, absmax = _smooth(model, the_plan, batches, cfg, sources)
        if smoothed:
            infer_shapes(model)
            the_plan = analysis.plan(model.graph, target, selection)
        timings["smooth"] = time.perf_counter() - t0
    base = model.to_onnx() if smoothed else original

    def calibrate() -> tuple[calib.Calibration, dict[str, tuple[float, float]]]:
        t0 = time.perf_counter()
        calibrated = calib.collect(
            model,
            the_plan.tensors,
            batches,
            cache=cfg.cache,
            threads=cfg.threads,
            progress=(lambda done, total: progress("calibrating", done, total)) if progress else None,
            sources=sources,
        )
        timings["calibrate"] = timings.get("calibrate", 0.0) + time.perf_counter() - t0
        return calibrated, calibrated.ranges(cfg.method, cfg.percentile, symmetric=target == "tensorrt")

    calibrated, ranges = calibrate()
    t0 = time.perf_counter()

    report = QuantReport(
        target=target,
        method=cfg.method,
        percentile=cfg.percentile,
        batches=len(batches),
        cached=calibrated.cached,
        cache_file=str(calibrated.cache_file) if calibrated.cache_file else None,
        reduce_range=reduce_range,
        reduce_range_reason=reason,
        per_channel=per_channel,
        param_bytes_before=initializer_bytes(model),
        opset_upgraded=upgraded,
        smoothed=smoothed,
        smooth_alpha=cfg.smooth_alpha if smoothed else None,
    )
    t0 = time.perf_counter()
    reference = _run(original, batches, threads=cfg.threads, sources=sources)
    timings["reference"] = time.perf_counter() - t0

    alone: dict[str, float] = {}
    excluded: list[str] = []
    chosen: dict[str, choice.Choice] = {}
    estimates: dict[str, choice.Estimate] = {}
    producers = {n.name for n in the_plan.nodes if n.name and n.op_type not in analysis.SHARE}
    if cfg.choice not in ("auto", "static"):
        raise GraphoptError(f"unknown layer choice {cfg.choice!r} (choose from auto, static)")
    # target tensorrt has no dynamic int8, and its Q/DQ placement rules are about the whole graph: every planned
    # layer stays static there (the guard may still keep some float)
    auto = cfg.choice == "auto" and target == "ort"
    if auto or cfg.max_error is not None:
        t0 = time.perf_counter()
        estimates = choice.estimate(
            model,
            the_plan,
            ranges,
            batches,
            per_channel=per_channel,
            reduce_range=reduce_range,
            threads=cfg.threads,
            convolutions=cfg.max_error is not None,
        )
        if auto:
            chosen = choice.choose(
                estimates,
                cfg.layer_min_db,
                dynamic=target == "ort",
                target=target,
                graph=model.graph,
                static_ops={
                    n.name for n in the_plan.nodes if n.name not in estimates and n.op_type not in analysis.SHARE
                },
            )
        else:
            chosen = {k: choice.Choice(k, e.op_type, "static", "--layer-choice static") for k, e in estimates.items()}
        for n in the_plan.nodes:
            if n.op_type not in analysis.SHARE and n.name and n.name not in chosen:
                why = KEPT_STATIC if n.graph is model.graph else BODY_STATIC
                chosen[n.name] = choice.Choice(n.name, n.op_type, "static", why)
        alone = {k: e.static_db for k, e in estimates.items()}
        timings["choose"] = time.perf_counter() - t0
    if cfg.max_error is not None:
        t0 = time.perf_counter()
        alpha = cfg.smooth_alpha
        smoothed_for: dict[frozenset[str], onnx.ModelProto] = {}

        def base_for(modes: Mapping[str, str]) -> onnx.ModelProto:
            """The float model each set of modes quantizes: smoothed for its static layers only, as the end does."""
            static = frozenset(k for k, m in modes.items() if m in ("static", "static-float-output"))
            if all(set(sm.layers) <= static for sm in smoothed):
                return base
            if static not in smoothed_for:
                m = from_proto(original)
                infer_shapes(m)
                smoothquant.smooth(
                    m.graph,
                    absmax,
                    float(alpha),
                    mode=cfg.smooth_mode,
                    allowed=set(static),
                    int8_producers=producers,  # type: ignore[arg-type]
                )
                smoothed_for[static] = m.to_onnx()
            return smoothed_for[static]

        chosen, kept, met = _guard(
            base_for,
            target,
            selection,
            ranges,
            options,
            batches,
            reference,
            cfg,
            original,
            chosen,
            estimates,
            alone,
            plain_seconds=sum(timings.values()),
            dynamic=cfg.choice == "auto" and target == "ort",
            reduce_range=reduce_range,
            progress=progress,
        )
        report.kept_float = kept
        if not met:
            notes.append(
                f"{cfg.guard_label} {cfg.max_error:g} not reached by the layers the guard may demote (with a plain "
                f"int8 model >= {GUARD_MIN_SPEEDUP:g}x faster than fp32, at most {choice.FLOAT_MAC_SHARE:.0%} of the "
                "multiply-adds go float); the closest model is written"
            )
        timings["sensitivity"] = time.perf_counter() - t0
    if chosen:
        t0 = time.perf_counter()
        excluded = [c.name for c in chosen.values() if c.mode in ("float", "dynamic")]
        options.float_outputs = frozenset(c.name for c in chosen.values() if c.mode == "static-float-output")
        report.choices = list(chosen.values())
        static = {c.name for c in chosen.values() if c.mode in ("static", "static-float-output")}
        if any(not set(sm.layers) <= static for sm in smoothed):
            # smoothing only serves static layers (a dynamic one quantizes its input at run time, a float one not at
            # all): smooth again from the original model, for the static layers alone, and recalibrate
            model.take_contents(from_proto(original))
            infer_shapes(model)
            alpha = float(cfg.smooth_alpha)  # type: ignore[arg-type]
            smoothed = smoothquant.smooth(
                model.graph, absmax, alpha, mode=cfg.smooth_mode, allowed=static, int8_producers=producers
            )
            infer_shapes(model)
            the_plan = analysis.plan(model.graph, target, selection)
            base = model.to_onnx()
            calibrated, ranges = calibrate()
            report.smoothed = smoothed
            report.smooth_alpha = cfg.smooth_alpha if smoothed else None
        timings["choose"] = timings.get("choose", 0.0) + time.perf_counter() - t0

    t0 = time.perf_counter()
    final_plan = analysis.plan(model.graph, target, cfg.selection(excluded)) if excluded else the_plan
    layers = transform.apply(model.graph, final_plan, ranges, opset, options)
    extra: list[LayerReport] = []
    if chosen and target == "ort":
        extra = _dynamic_and_tables(
            model, {c.name: c.reason for c in chosen.values() if c.mode == "dynamic"}, cfg, reduce_range, batches
        )
    PassManager("dce,remove-unused").run(model, target=target)  # the float weights nothing reads any more
    timings["insert"] = time.perf_counter() - t0
    if not layers and not any(x.mode for x in extra):
        raise GraphoptError("nothing to quantize: calibration measured none of the quantizable layers' inputs")

    t0 = time.perf_counter()
    quantized = model.to_onnx()
    got = _run(quantized, batches, threads=cfg.threads)
    report.error_rel, report.error_max_abs = output_error(reference, got)
    report.sqnr_db = sqnr_db(report.error_rel)
    report.param_bytes_after = initializer_bytes(model)
    layer_sqnr = _layer_sqnr(base, quantized, layers, batches, cfg.threads)
    fused: dict[str, str] | None = {}
    if target == "ort":
        try:
            fused = _fused_layers(quantized, layers)
        except Exception as exc:  # noqa: BLE001 - the report then says "unknown" rather than failing the run
            logger.warning("could not read onnxruntime's optimized graph: %s", exc)
            fused = None
    for layer in layers:
        f = fused.get(layer.name) if fused is not None else None
        report.layers.append(
            LayerReport(
                name=layer.name,
                op_type=layer.op_type,
                input_scale=layer.input_scale,
                weight_scale=layer.weight_scale,
                output_scale=layer.output_scale,
                absorbed=layer.absorbed,
                sqnr_db=layer_sqnr.get(layer.name),
                alone_sqnr_db=alone.get(layer.name),
                fused=None if target != "ort" or fused is None else f is not None,
                fused_as=f,
                mode=chosen[layer.name].mode if layer.name in chosen else "static",
                note=chosen[layer.name].reason if layer.name in chosen else None,
            )
        )
    report.layers.extend(extra)
    timings["measure"] = time.perf_counter() - t0
    report.seconds = timings
    if report.sqnr_db < cfg.sqnr_floor_db and cfg.fallback and cfg.max_error is None:
        # the whole-int8 model is unusable: fall back layer by layer, the most sensitive first, until the output's
        # relative error is the floor's (the --max-error search with that bound)
        limit = 10.0 ** (-cfg.sqnr_floor_db / 20.0)
        logger.info("output SQNR %.1f dB: keeping the most sensitive layers float", report.sqnr_db)
        all_int8 = report.sqnr_db
        model.take_contents(from_proto(original))
        label = f"the SQNR floor of {cfg.sqnr_floor_db:g} dB (a relative error of)"
        retry = QuantizeConfig(**{**cfg.__dict__, "max_error": limit, "fallback": False, "guard_label": label})
        try:
            report = quantize_model(model, batches, target, retry, progress=progress, sources=sources)
        except GraphoptError:
            # only an all-float model meets the floor: write the all-int8 one, with the warning naming the worst layers
            model.take_contents(from_proto(original))
            retry = QuantizeConfig(**{**cfg.__dict__, "fallback": False})
            report = quantize_model(model, batches, target, retry, progress=progress, sources=sources)
            for note in notes:
                logger.warning("%s", note)
            report.warnings = list(dict.fromkeys(notes + report.warnings))  # the retry repeats the opset notes
            report.opset_upgraded = upgraded
            return report
        report.warnings = list(dict.fromkeys(notes + report.warnings))  # the retry repeats the opset notes
        demoted = [f"{c.name} ({c.mode})" for c in report.choices if c.reason.startswith(label)]
        report.warnings.insert(
            len(notes),
            f"the all-int8 model's output SQNR was {all_int8:.1f} dB on the calibration set, below "
            f"{cfg.sqnr_floor_db:g} dB: {len(demoted)} most damaging layers demoted "
            f"({', '.join(demoted[:3])}{', ...' if len(demoted) > 3 else ''}), output SQNR now {report.sqnr_db:.1f} dB",
        )
        for note in report.warnings[: len(notes) + 1]:
            logger.warning("%s", note)
        report.opset_upgraded = upgraded
        return report
    if report.sqnr_db < cfg.sqnr_floor_db:
        rated = sorted((x.sqnr_db, x.name) for x in report.layers if x.sqnr_db is not None and x.sqnr_db == x.sqnr_db)
        worst = ", ".join(f"{name} ({db:.1f} dB)" for db, name in rated[:3]) or "no per-layer figures"
        notes.append(
            f"the int8 model's output SQNR is {report.sqnr_db:.1f} dB on the calibration set (relative error "
            f"{report.error_rel:.3g}), below {cfg.sqnr_floor_db:g} dB: it may be unusable; worst layers: {worst} "
            "(keep them float with --exclude, or use --max-error)"
        )
    for note in notes:
        logger.warning("%s", note)
    report.warnings = notes
    return report


def _dynamic_and_tables(
    model: Model,
    reasons: Mapping[str, str],
    cfg: QuantizeConfig,
    reduce_range: bool,
    batches: Sequence[Mapping[str, np.ndarray]] = (),
) -> list[LayerReport]:
    """The automatic choice's other forms: dynamic int8 for the MatMul/Gemm layers it named (per token where it
    pays on ``batches``: ``dynamic.measured_forms``), int8 rows for the embedding tables (Gather-read vocabulary
    tables that the selection allows)."""
    from graphopt.quantize.dynamic import measured_forms, quantize_dynamic_nodes
    from graphopt.quantize.embeddings import quantize_embeddings

    nodes = [n for n in model.graph if n.name in reasons]
    out = []
    if nodes:
        sample = list(batches)[: choice.MAX_BATCHES]
        forms = measured_forms(model, nodes, sample, per_channel=cfg.per_channel, threads=cfg.threads)
        out = quantize_dynamic_nodes(model, nodes, per_channel=cfg.per_channel, reduce_range=reduce_range, forms=forms)
    for layer in out:
        if layer.mode == "dynamic" and layer.name in reasons:
            layer.note = reasons[layer.name]
    if cfg.choice == "auto" and (cfg.op_types is None or "Gather" in cfg.op_types):
        out += quantize_embeddings(model, skip=_tables_excluded(model, cfg))
    return out


def _tables_excluded(model: Model, cfg: QuantizeConfig) -> set[str]:
    """The Gathers the selection (--exclude, --exclude-op, --exclude-regex) keeps float: their tables stay float."""
    selection = cfg.selection()
    return {n.name for n in model.graph if n.op_type == "Gather" and not selection.allows(n, "ort")}


def _smooth(
    model: Model,
    the_plan: analysis.Plan,
    batches: Sequence[Mapping[str, np.ndarray]],
    cfg: QuantizeConfig,
    sources: Sequence[str] | None,
) -> tuple[list[smoothquant.Smoothed], dict[str, np.ndarray]]:
    """SmoothQuant on the planned MatMul/Gemm layers: per-channel activation maxima in one pass, then the scales."""
    alpha = float(cfg.smooth_alpha)  # type: ignore[arg-type]
    if not 0.0 <= alpha <= 1.0:
        raise GraphoptError(f"smoothing alpha must be in [0, 1], got {alpha}")
    groups = smoothquant.candidates(model.graph, {n.name for n in the_plan.nodes if n.name})
    _producers = {n.name for n in the_plan.nodes if n.name and n.op_type not in analysis.SHARE}
    if not groups:
        return [], {}
    absmax = calib.channel_absmax(model, list(groups), batches, threads=cfg.threads, sources=sources)
    return smoothquant.smooth(model.graph, absmax, alpha, mode=cfg.smooth_mode, int8_producers=_producers), absmax


def _upgrade_opset(model: Model, version: int) -> str | None:
    """Convert ``model`` in place to ``version`` of the default opset with onnx's version converter; the reason it
    could not (the model is then untouched), or None."""
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model.to_onnx(), version)
        onnx.checker.check_model(converted)
        lifted = from_proto(converted)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; the caller falls back and says why
        text = str(exc).strip()
        return text.splitlines()[0][:200] if text else type(exc).__name__
    model.take_contents(lifted)
    return None


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _layer_sqnr(
    base: onnx.ModelProto,
    quantized: onnx.ModelProto,
    layers: Sequence[analysis.Layer],
    batches: Sequence[Mapping[str, np.ndarray]],
    threads: int | None,
) -> dict[str, float]:
    """Per layer: SQNR of its (dequantized) output in the quantized model against the float model's, in dB."""
    pairs = [(layer.name, layer.output, layer.dequantized) for layer in layers if layer.output and layer.dequantized]
    # tensors inside If/Loop bodies are threaded out as outputs (a Loop's stacks every iteration's value)
    ref_proto, ref_names = calib.expose(_copy(base), [p[1] for p in pairs])
    q_proto, q_names = calib.expose(_copy(quantized), [p[2] for p in pairs])
    pairs = [p for p in pairs if p[1] in ref_names and p[2] in q_names]
    if not pairs:
        return {}
    try:
        ref = _run(ref_proto, batches, [ref_names[p[1]] for p in pairs], optimization="basic", threads=threads)
        got = _run(q_proto, batches, [q_names[p[2]] for p in pairs], optimization="disabled", threads=threads)
    except GraphoptError as exc:
        logger.warning("no per-layer SQNR: onnxruntime cannot read the layers' outputs (%s)", exc)
        return {}
    out: dict[str, float] = {}
    for k, (name, _, _) in enumerate(pairs):
        rel, _ = output_error([[b[k]] for b in ref], [[b[k]] for b in got])
        out[name] = sqnr_db(rel)
    return out


def _fused_layers(quantized: onnx.ModelProto, layers: Sequence[analysis.Layer]) -> dict[str, str]:
    """Which layers onnxruntime turned into integer kernels: layer name -> the op it became.

    onnxruntime's QDQ fusions keep the fused node's name; its optimized graph is read back from a file it writes.
    """
    with tempfile.TemporaryDirectory(prefix="graphopt-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        runtime.session(quantized, optimization="extended", optimized_path=path)
        optimized = onnx.load(path, load_external_data=False)
    nodes = list(_all_nodes(optimized.graph))  # If/Loop bodies too
    by_name = {n.name: n.op_type for n in nodes}
    result = {}
    for layer in layers:
        op = by_name.get(layer.name)
        if op in FUSED_OPS:
            result[layer.name] = op
        elif op is None:
            # some fusions rename: look for an integer node that writes the layer's output
            for n in nodes:
                if n.op_type in FUSED_OPS and layer.name and n.name.startswith(layer.name):
                    result[layer.name] = n.op_type
                    break
    return result


def _all_nodes(g: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for n in g.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)


def _with_modes(
    base: onnx.ModelProto,
    target: str,
    selection: analysis.Selection,
    ranges: Mapping[str, tuple[float, float]],
    options: transform.Options,
    modes: Mapping[str, str],
    cfg: QuantizeConfig,
    reduce_range: bool,
    tables: bool = True,
) -> onnx.ModelProto:
    """A quantized copy of ``base`` with each layer in its mode (static, static-float-output, dynamic or float);
    ``tables``: embedding tables int8 too, as the final model has them."""
    from graphopt.quantize.dynamic import quantize_dynamic_nodes
    from graphopt.quantize.embeddings import quantize_embeddings

    model = from_proto(base)
    infer_shapes(model)
    off = frozenset(k for k, m in modes.items() if m in ("float", "dynamic"))
    sel = analysis.Selection(
        selection.op_types, selection.exclude_names | off, selection.exclude_ops, selection.exclude_regex
    )
    the_plan = analysis.plan(model.graph, target, sel)
    outs = frozenset(k for k, m in modes.items() if m == "static-float-output")
    opts = transform.Options(options.per_channel, options.reduce_range, outs)
    transform.apply(model.graph, the_plan, ranges, model.opset("") or 0, opts)
    if target == "ort":
        dyn = [n for n in model.graph if modes.get(n.name or "") == "dynamic"]
        if dyn:
            quantize_dynamic_nodes(model, dyn, per_channel=cfg.per_channel, reduce_range=reduce_range)
        if tables and cfg.choice == "auto" and (cfg.op_types is None or "Gather" in cfg.op_types):
            quantize_embeddings(model, skip=_tables_excluded(model, cfg))  # as the written model has them
    return model.to_onnx()


KEPT_STATIC = "static int8 (convolution, pooling or Concat: kept static)"
BODY_STATIC = "static int8 (inside an If/Loop body: not estimated, and the accuracy guard does not demote it)"
GUARD_MIN_SPEEDUP = 1.5
"""The accuracy guard keeps a model that was at least this much faster than fp32 (plain int8) above it."""


def _speedup(fp32: onnx.ModelProto, quantized: onnx.ModelProto, feed: Mapping[str, np.ndarray], runs: int = 5) -> float:
    """fp32 time over int8 time at 1 thread: medians of ``runs`` interleaved runs on ``feed`` (after a warm-up)."""
    a = runtime.session(fp32, threads=1, optimization="all")
    b = runtime.session(quantized, threads=1, optimization="all")
    ta, tb = [], []
    for sess, acc in ((a, ta), (b, tb)):
        runtime.run(sess, None, feed, "calibration")
        del acc
    for _ in range(runs):
        for sess, acc in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            runtime.run(sess, None, feed, "calibration")
            acc.append(time.perf_counter() - t0)
    return float(np.median(ta) / max(np.median(tb), 1e-9))


def _guard(
    base_for: Callable[[Mapping[str, str]], onnx.ModelProto],
    target: str,
    selection: analysis.Selection,
    ranges: Mapping[str, tuple[float, float]],
    options: transform.Options,
    batches: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[Sequence[np.ndarray]],
    cfg: QuantizeConfig,
    original: onnx.ModelProto,
    chosen: Mapping[str, choice.Choice],
    estimates: Mapping[str, choice.Estimate],
    measured_alone: dict[str, float],
    *,
    plain_seconds: float,
    dynamic: bool,
    reduce_range: bool,
    progress: Progress | None,
) -> tuple[dict[str, choice.Choice], list[str], bool]:
    """The accuracy guard of ``max_error``: demote the fewest layers (worst estimate first: static to dynamic where
    dynamic int8 can take the layer, else to float; then dynamic to float) until the output error on the calibration
    set is at most ``max_error``. Each step costs one run of the model over the calibration set, and the number of
    steps grows with the logarithm of the layer count (doubling, then bisection), never with the layer count.

    When the plain int8 model runs at least :data:`GUARD_MIN_SPEEDUP` times faster than the float one (measured:
    interleaved medians at 1 thread on the first calibration batch), float demotions stop at
    :data:`choice.FLOAT_MAC_SHARE` of the estimated layers' multiply-adds, so that the result keeps most of int8's
    speed; returns the new choices, the layers the guard made float, and whether the
    budget was met. With the exact ranking, ``measured_alone`` receives each ranked layer's model output SQNR with
    it alone in int8. The exact ranking (one run per layer) is used only when those runs cost no more than
    1.5 ``plain_seconds`` (the quantization's own time so far) plus a second."""
    limit = float(cfg.max_error)  # type: ignore[arg-type]
    modes0 = {k: c.mode for k, c in chosen.items()}
    runs = 0
    plain = _with_modes(base_for(modes0), target, selection, ranges, options, modes0, cfg, reduce_range)
    steps: list[tuple[str, str]] = []

    def modes_at(k: int) -> dict[str, str]:
        modes = dict(modes0)
        for name, mode in steps[:k]:
            modes[name] = mode
        return modes

    def error_at(k: int) -> float:
        nonlocal runs
        runs += 1
        if progress:
            progress("accuracy guard", runs, None)
        proto = (
            plain
            if k == 0
            else _with_modes(base_for(modes_at(k)), target, selection, ranges, options, modes_at(k), cfg, reduce_range)
        )
        rel, _ = output_error(reference, _run(proto, batches, threads=cfg.threads))
        logger.info("accuracy guard: %d demotions, output error %.3g", k, rel)
        return rel

    def result(k: int, met: bool) -> tuple[dict[str, choice.Choice], list[str], bool]:
        out = dict(chosen)
        kept = []
        for name, mode in steps[:k]:
            old = chosen[name]
            out[name] = choice.Choice(name, old.op_type, mode, f"{cfg.guard_label} {limit:g}: {old.mode} -> {mode}")
        for name, mode in modes_at(k).items():
            if mode == "float" and modes0.get(name) != "float":
                kept.append(name)
        return out, kept, met

    t0 = time.perf_counter()
    if error_at(0) <= limit:
        return result(0, True)
    eval_seconds = time.perf_counter() - t0
    speed = _speedup(original, plain, batches[0]) if target == "ort" else None
    # the speed budget binds only when the plain int8 model is fast enough to lose it
    budgeted = speed is not None and speed >= GUARD_MIN_SPEEDUP
    steps[:] = choice.demotions(chosen, estimates, dynamic=dynamic, budget=budgeted)
    candidates = list(dict.fromkeys(k for k, _ in steps))
    rank: dict[str, float] | None = None
    if 1 < len(candidates) <= choice.EXACT_RANKING_MAX and len(candidates) * eval_seconds <= 1.5 * plain_seconds + 1:
        # few layers: rank them by the output error with each one alone in its mode (one run each), output-aware
        rank = {}
        for k in candidates:
            one = {**{j: "float" for j in modes0}, k: modes0[k]}
            proto = _with_modes(base_for(one), target, selection, ranges, options, one, cfg, reduce_range)
            rank[k] = -output_error(reference, _run(proto, batches, threads=cfg.threads))[0]
            measured_alone[k] = sqnr_db(-rank[k])
        steps[:] = choice.demotions(chosen, estimates, dynamic=dynamic, budget=budgeted, rank=rank)

    if not steps:
        return result(0, False)
    lo, hi = 0, 1
    while error_at(hi) > limit:
        if hi == len(steps):
            return result(hi, False)
        lo, hi = hi, min(len(steps), hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if error_at(mid) <= limit:
            hi = mid
        else:
            lo = mid
    return result(hi, True)
