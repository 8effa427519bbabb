"""What quantization did: per layer (scales, SQNR, whether onnxruntime fused it) and for the model (output error,
bytes, calibration). Plain data: the CLI renders it, ``--json`` and ``--report`` serialize ``to_dict()``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from graphopt.quantize.choice import Choice
from graphopt.quantize.smoothquant import Smoothed


@dataclass
class LayerReport:
    name: str
    op_type: str
    input_scale: float | None
    weight_scale: tuple[float, float] | None
    output_scale: float | None
    absorbed: str | None
    sqnr_db: float | None = None
    alone_sqnr_db: float | None = None
    """Sensitivity (automatic choice or ``max_error``): the model's output SQNR with this layer alone in int8 where the
    accuracy guard measured it (at most a dozen layers to rank), else the layer's own int8 SQNR estimate."""
    fused: bool | None = None
    fused_as: str | None = None
    mode: str | None = None
    """How the layer was quantized: None or ``"static"`` (calibrated Q/DQ), ``"static-float-output"`` (calibrated
    int8 inputs, float output), ``"dynamic"`` (int8 weights, activations quantized at run time), ``"int8 table"`` /
    ``"int4 table"`` (a quantized embedding table read by a Gather)."""
    note: str | None = None
    """Why it got that form, or what form it took (one short phrase)."""


@dataclass
class QuantReport:
    target: str
    method: str
    percentile: float
    batches: int
    cached: bool
    cache_file: str | None
    reduce_range: bool
    reduce_range_reason: str
    per_channel: bool
    layers: list[LayerReport] = field(default_factory=list)
    method_reason: str | None = None
    """Why ``method`` is not the one asked for (the percentile method's check kept the min-max ranges), else None."""
    kept_float: list[str] = field(default_factory=list)
    """Layers left float by ``max_error`` (worst first)."""
    float_fused: dict[str, str] = field(default_factory=dict)
    """Target ort: the layers the quantizer left float (the per-layer choice's, the accuracy guard's) that onnxruntime
    runs as an integer op all the same (name -> ``QLinearAdd``, ``QLinearMul``, ``QLinearConcat``): an Add, Mul or
    Concat between a DequantizeLinear on each input and a QuantizeLinear on its output, which onnxruntime's QDQ
    fusion takes (``qdq_rules.runs_as_integer``, and onnxruntime's optimized graph agreeing). No float island."""
    opset_upgraded: tuple[int, int] | None = None
    """(from, to) when the model's opset was converted before quantizing."""
    warnings: list[str] = field(default_factory=list)
    """What the user must know about the result (also logged as warnings): a poor output SQNR, a kept opset."""
    error_rel: float = float("nan")
    error_max_abs: float = float("nan")
    sqnr_db: float = float("nan")
    error_part: str | None = None
    """The part of the measured tensors whose own error sets ``error_rel``/``sqnr_db`` (one of several outputs, or a
    Concat input's slice of one: ``driver.output_parts``); None when the error pooled over everything is the worst."""
    pooled_sqnr_db: float | None = None
    """With ``error_part``: the SQNR pooled over every measured tensor (what the energy of the rest makes of it)."""
    measured_at: str | None = None
    """Where ``error_rel``/``sqnr_db`` are measured when not at the model's outputs: before the selection ops
    (NonMaxSuppression, TopK, ...) that come between the quantized layers and the outputs
    (``driver.measured_points``)."""
    param_bytes_before: int = 0
    param_bytes_after: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    speedup: float | None = None
    """Target ort: fp32 time over int8 time under onnxruntime at 1 thread on the first calibration batch (medians of
    interleaved runs); None when not measured (``QuantizeConfig.measure_speed`` off, another target)."""
    bits: int = 8
    """8: int8 QDQ; 4: weight-only int4 blocks (:mod:`graphopt.quantize.int4`)."""
    smoothed: list[Smoothed] = field(default_factory=list)
    """SmoothQuant: the activations smoothed before calibration and where their scales were folded."""
    smooth_alpha: float | None = None
    choices: list[Choice] = field(default_factory=list)
    """The automatic per-layer choice: every estimated layer's mode (static, static-float-output, dynamic, float)
    and why."""

    @property
    def fused_count(self) -> int:
        return sum(1 for layer in self.layers if layer.fused)

    def to_dict(self) -> dict[str, Any]:
        def clean(x: Any) -> Any:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        return {
            "target": self.target,
            "bits": self.bits,
            "method": self.method,
            "percentile": self.percentile if self.method == "percentile" else None,
            "method_reason": self.method_reason,
            "calibration_batches": self.batches,
            "calibration_cached": self.cached,
            "calibration_cache": self.cache_file,
            "reduce_range": self.reduce_range,
            "reduce_range_reason": self.reduce_range_reason,
            "per_channel": self.per_channel,
            "output_error_rel": clean(self.error_rel),
            "output_error_max_abs": clean(self.error_max_abs),
            "output_sqnr_db": clean(self.sqnr_db),
            "output_measured_at": self.measured_at,
            "output_error_part": self.error_part,
            "output_pooled_sqnr_db": clean(self.pooled_sqnr_db) if self.pooled_sqnr_db is not None else None,
            "param_bytes_before": self.param_bytes_before,
            "param_bytes_after": self.param_bytes_after,
            "speedup": None if self.speedup is None else round(self.speedup, 3),
            "kept_float": self.kept_float,
            "float_fused": self.float_fused,
            "opset_upgraded": list(self.opset_upgraded) if self.opset_upgraded else None,
            "warnings": self.warnings,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "layers": [{k: clean(v) for k, v in vars(layer).items()} for layer in self.layers],
            "smooth_alpha": self.smooth_alpha,
            "smoothed": [vars(s) for s in self.smoothed],
            "choices": [vars(c) for c in self.choices],
        }
