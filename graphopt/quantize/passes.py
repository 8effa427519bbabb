"""The ``quantize-int8`` pass: quantization as a step of a pipeline (``--passes ...,quantize-int8``). It is a lossy
one-shot model pass: it runs once, after which its report is ``PassReport.results["quantize-int8"]``.
``graphopt optimize --quantize`` and ``optimize(quantize=...)`` call the same driver after the pipeline instead.
The ``precision`` pass (fp16/bf16) works the same way (``--precision`` calls its driver after the pipeline)."""

from __future__ import annotations

from collections.abc import Mapping

from graphopt.core.ir import Model
from graphopt.engine.passes_api import ModelPass, Option, PassContext, PassResult, register_pass
from graphopt.errors import PassError


@register_pass(
    "quantize-int8",
    description="int8 QDQ quantization for the context's target, calibrated on ctx.options['calibration'] "
    "(feed dicts) or on calib_random random samples",
    options={
        "method": Option(str, "percentile", "calibration method", choices=("minmax", "percentile", "entropy")),
        "percentile": Option(float, 99.999, "central share kept by the percentile method"),
        "calib_random": Option(int, 0, "calibrate on this many random samples when no data is given (smoke tests)"),
    },
)
class QuantizeInt8(ModelPass):
    lossless = False
    once = True

    def run_model(self, model: Model, ctx: PassContext) -> bool | PassResult:
        from graphopt.quantize import calibration
        from graphopt.quantize.analysis import is_quantized
        from graphopt.quantize.driver import quantize_model

        if is_quantized(model.graph):
            return False  # a model with Q/DQ already is left alone
        feeds = ctx.options.get("calibration")
        if feeds is None and self.options["calib_random"] > 0:
            feeds = calibration.random_feeds(model, self.options["calib_random"])
        if feeds is None:
            raise PassError("quantize-int8 needs calibration data: optimize(..., calibration=[...]) or calib_random=N")
        config = {"method": self.options["method"], "percentile": self.options["percentile"]}
        extra = ctx.options.get("quantize_options") or {}
        config.update(extra if isinstance(extra, Mapping) else vars(extra))  # a dict or a QuantizeConfig
        report = quantize_model(model, feeds, ctx.target, config)
        ctx.count("layers", len(report.layers))
        return PassResult(True, report)


@register_pass(
    "quantize-int8-dynamic",
    description="dynamic int8 (target ort): MatMul/Gemm with constant weights get int8 weights per output channel "
    "and activations quantized at run time; embedding tables int8 per row; no calibration",
)
class QuantizeInt8Dynamic(ModelPass):
    lossless = False
    once = True

    def run_model(self, model: Model, ctx: PassContext) -> bool | PassResult:
        from graphopt.quantize.dynamic import already_quantized
        from graphopt.quantize.dynamic_driver import quantize_model_dynamic

        if already_quantized(model.graph):
            return False  # a quantized model is left alone
        extra = ctx.options.get("quantize_options")
        report = quantize_model_dynamic(model, ctx.target, extra, feeds=ctx.options.get("calibration"))
        ctx.count("layers", len(report.layers))
        return PassResult(True, report)


@register_pass(
    "precision",
    description="fp16/bf16 conversion for the context's target; nodes that overflow on ctx.options['calibration'] "
    "(or on random inputs, with a warning) stay fp32",
    options={
        "precision": Option(str, "fp16", "half type", choices=("fp16", "bf16")),
        "keep_io_types": Option(bool, True, "keep float32 graph inputs and outputs"),
        "kernels": Option(str, "auto", "auto: (ort) no CPU half kernel keeps a node fp32", choices=("auto", "all")),
    },
)
class Precision(ModelPass):
    lossless = False
    once = True

    def run_model(self, model: Model, ctx: PassContext) -> bool | PassResult:
        from graphopt.quantize.precision import convert_precision

        config = {key: self.options[key] for key in ("precision", "keep_io_types", "kernels")}
        report = convert_precision(model, ctx.options.get("calibration"), ctx.target, config)
        ctx.count("converted", report.converted)
        ctx.count("kept_fp32", len(report.kept))
        return PassResult(report.converted > 0 or report.weights_half > 0, report)
