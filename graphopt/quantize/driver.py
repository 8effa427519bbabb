"""Int8 QDQ quantization of a model: calibrate, place Q/DQ for the target, measure, report.

``quantize_model`` runs on a model that has been through the lossless passes (BatchNorm and constants folded):

1. shape inference types the activations; ``analysis.plan`` picks the nodes and the tensors to measure;
2. ``calibration.collect`` runs onnxruntime over the calibration feeds (or reads the cache) and the chosen method
   turns the statistics into ranges;
3. with ``max_error``, each layer's sensitivity is measured (the model's output SQNR with that layer alone in int8)
   and the worst layers stay float until the model's output error on the calibration set is at most ``max_error``;
4. ``transform.apply`` inserts the Q/DQ pairs and quantized weights;
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
from graphopt.quantize import analysis, transform
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
SQNR_FLOOR_DB = 10.0
"""Below this output SQNR (a relative error above ~0.32: a third of the output is noise) the int8 model is flagged
with a warning naming the worst layers; it is still written (the user may have a reason)."""


FALLBACK_PROBED_LAYERS = 32
"""Up to this many layers, the SQNR fallback ranks layers by their sensitivity alone (one run per layer); above, by
the per-layer SQNR of the all-int8 model (no extra run), so that the fallback costs a few runs, not hundreds."""


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
    """Below ``sqnr_floor_db`` (and without ``max_error``), keep the most sensitive layers float until the output SQNR
    reaches the floor (as ``max_error`` would, with the floor's relative error), and say so; False: write the int8
    model as it is, with the warning only."""

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


def _quantized_copy(
    base: onnx.ModelProto,
    target: str,
    selection: analysis.Selection,
    ranges: Mapping[str, tuple[float, float]],
    options: transform.Options,
    only: set[str] | None = None,
) -> tuple[Model, list[analysis.Layer]]:
    model = from_proto(base)
    infer_shapes(model)
    the_plan = analysis.plan(model.graph, target, selection)
    if only is not None:
        keep = [n for n in the_plan.nodes if n.name in only or n.op_type in analysis.SHARE]
        the_plan = analysis.Plan(target, keep, the_plan.tensors)
    layers = transform.apply(model.graph, the_plan, ranges, model.opset("") or 0, options)
    return model, layers


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
    _order: Sequence[str] | None = None,
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
    original = model.to_onnx() if cfg.fallback and cfg.max_error is None else None
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
    base = model.to_onnx()
    timings["plan"] = time.perf_counter() - t0

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
    ranges = calibrated.ranges(cfg.method, cfg.percentile, symmetric=target == "tensorrt")
    timings["calibrate"] = time.perf_counter() - t0

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
    )
    t0 = time.perf_counter()
    reference = _run(base, batches, threads=cfg.threads, sources=sources)
    timings["reference"] = time.perf_counter() - t0

    alone: dict[str, float] = {}
    excluded: list[str] = []
    if cfg.max_error is not None:
        t0 = time.perf_counter()
        alone, excluded = _keep_sensitive_float(
            base, target, selection, ranges, options, batches, reference, cfg, progress, _order
        )
        if _order is not None:
            alone = {}
        report.kept_float = excluded
        timings["sensitivity"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    final_plan = analysis.plan(model.graph, target, cfg.selection(excluded)) if excluded else the_plan
    layers = transform.apply(model.graph, final_plan, ranges, opset, options)
    PassManager("dce,remove-unused").run(model, target=target)  # the float weights nothing reads any more
    timings["insert"] = time.perf_counter() - t0
    if not layers:
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
            )
        )
    timings["measure"] = time.perf_counter() - t0
    report.seconds = timings
    if report.sqnr_db < cfg.sqnr_floor_db and original is not None:
        # the whole-int8 model is unusable: fall back layer by layer, the most sensitive first, until the output's
        # relative error is the floor's (the --max-error search with that bound)
        limit = 10.0 ** (-cfg.sqnr_floor_db / 20.0)
        logger.info("output SQNR %.1f dB: keeping the most sensitive layers float", report.sqnr_db)
        all_int8 = report.sqnr_db
        order = None
        if sum(1 for x in report.layers if x.op_type not in analysis.SHARE) > FALLBACK_PROBED_LAYERS:
            order = _damage_order(original, report.layers)
        model.take_contents(from_proto(original))
        retry = QuantizeConfig(**{**cfg.__dict__, "max_error": limit, "fallback": False})
        try:
            report = quantize_model(model, batches, target, retry, progress=progress, sources=sources, _order=order)
        except GraphoptError:
            # only an all-float model meets the floor: write the all-int8 one, with the warning naming the worst layers
            model.take_contents(from_proto(original))
            retry = QuantizeConfig(**{**cfg.__dict__, "fallback": False})
            report = quantize_model(model, batches, target, retry, progress=progress, sources=sources)
            for note in notes:
                logger.warning("%s", note)
            report.warnings = notes + report.warnings
            report.opset_upgraded = upgraded
            return report
        report.warnings = notes + report.warnings
        report.warnings.insert(
            len(notes),
            f"the all-int8 model's output SQNR was {all_int8:.1f} dB on the calibration set, below "
            f"{cfg.sqnr_floor_db:g} dB: {len(report.kept_float)} most sensitive layers kept float "
            f"({', '.join(report.kept_float[:3])}{', ...' if len(report.kept_float) > 3 else ''}), output SQNR now "
            f"{report.sqnr_db:.1f} dB",
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


def _damage_order(original: onnx.ModelProto, layers: Sequence[analysis.Layer], cap: float = 60.0) -> list[str]:
    """Layers ordered by the SQNR each one loses (its output's SQNR against that of the layers feeding it, capped at
    ``cap`` dB for model inputs), the most damaging first: the per-layer SQNR of the all-int8 model accumulates the
    error of everything upstream, so ranking by it alone would blame the last layers."""
    sqnr = {x.name: x.sqnr_db for x in layers if x.sqnr_db is not None}
    producer = {o: n for n in original.graph.node for o in n.output}

    def feeding(name: str, depth: int = 0) -> float:
        node = producer.get(name)
        if node is None or depth > 4:
            return cap
        if node.name in sqnr:
            return min(cap, sqnr[node.name])
        return min((feeding(i, depth + 1) for i in node.input if i), default=cap)

    nodes = {n.name: n for n in original.graph.node}
    damage = {}
    for name, own in sqnr.items():
        node = nodes.get(name)
        upstream = min((feeding(i) for i in node.input if i), default=cap) if node is not None else cap
        damage[name] = upstream - own
    return sorted(damage, key=lambda n: -damage[n])


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


def _keep_sensitive_float(
    base: onnx.ModelProto,
    target: str,
    selection: analysis.Selection,
    ranges: Mapping[str, tuple[float, float]],
    options: transform.Options,
    batches: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[Sequence[np.ndarray]],
    cfg: QuantizeConfig,
    progress: Progress | None,
    order: Sequence[str] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Sensitivity per layer, then the fewest worst layers to keep float so the output error is <= max_error."""
    probe = from_proto(base)
    infer_shapes(probe)
    names = [n.name for n in analysis.plan(probe.graph, target, selection).nodes if n.op_type not in analysis.SHARE]
    alone: dict[str, float] = {}
    if order is not None:
        # the fallback on a large model: rank by the per-layer SQNR already measured (one run) rather than one run
        # per layer; the worst first, then the rest of the plan
        rank = {name: k for k, name in enumerate(order)}
        names = sorted(names, key=lambda n: rank.get(n, len(rank)))
        alone = {n: -float(len(names) - k) for k, n in enumerate(names)}  # an order, not SQNRs: not reported
    for i, name in enumerate(names if order is None else []):
        if progress:
            progress("sensitivity", i, len(names))
        m, layers = _quantized_copy(base, target, selection, ranges, options, only={name})
        if not layers:
            continue
        rel, _ = output_error(reference, _run(m.to_onnx(), batches, threads=cfg.threads))
        alone[name] = sqnr_db(rel)
    if progress:
        progress("sensitivity", len(names), len(names))
    worst = sorted(alone, key=lambda n: alone[n])

    def error_without(k: int) -> float:
        sel = analysis.Selection(
            selection.op_types,
            selection.exclude_names | frozenset(worst[:k]),
            selection.exclude_ops,
            selection.exclude_regex,
        )
        m, layers = _quantized_copy(base, target, sel, ranges, options)
        if not layers:
            return 0.0
        rel, _ = output_error(reference, _run(m.to_onnx(), batches, threads=cfg.threads))
        logger.info("keeping the %d most sensitive layers float: output error %.3g", k, rel)
        return rel

    limit = float(cfg.max_error)  # type: ignore[arg-type]
    if error_without(0) <= limit:
        return alone, []
    # grow k geometrically until the error is small enough, then bisect down to the smallest such k
    lo, hi = 0, 1
    while hi < len(worst) and error_without(hi) > limit:
        lo, hi = hi, min(len(worst), hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if error_without(mid) <= limit:
            hi = mid
        else:
            lo = mid
    return alone, worst[:hi]
