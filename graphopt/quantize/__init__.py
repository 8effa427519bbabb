"""The lossy conversions (int8 static and dynamic, int4 weight-only, fp16/bf16), in one package whose modules follow
the data path:

* :mod:`~graphopt.quantize.analysis` picks the nodes to quantize and the activations to measure (``plan``);
* :mod:`~graphopt.quantize.smoothquant` moves activation outliers into MatMul/Gemm weights, exactly, before that;
* :mod:`~graphopt.quantize.calibration` measures their ranges under onnxruntime (and caches the statistics);
* :mod:`~graphopt.quantize.choice` estimates each layer's int8 error in one pass and picks static, dynamic or float;
* :mod:`~graphopt.quantize.transform` quantizes weights and inserts the Q/DQ pairs (``apply``);
* :mod:`~graphopt.quantize.qdq_rules` checks a QDQ model against TensorRT's placement rules;
* :mod:`~graphopt.quantize.smoothquant` migrates activation outliers into the weights before calibration, and
  :mod:`~graphopt.quantize.choice` picks each layer's form (static, dynamic or float) from its estimated error;
* :mod:`~graphopt.quantize.driver` runs the whole of it on a model (``quantize_model``), measuring the result;
* :mod:`~graphopt.quantize.embeddings` stores Gather-read vocabulary tables in int8/int4 (``quantize_embeddings``);
* :mod:`~graphopt.quantize.dynamic` rewrites MatMul/Gemm to dynamic int8 (``quantize_dynamic_nodes``) and
  :mod:`~graphopt.quantize.dynamic_driver` runs ``--quantize int8-dynamic`` on a model
  (``quantize_model_dynamic``); :mod:`~graphopt.quantize.text` makes calibration feeds from strings and a tokenizer;
* :mod:`~graphopt.quantize.int4` is int4 weight-only (``quantize_model_int4``: MatMulNBits for ort, blocked int4
  DequantizeLinear for tensorrt; RTN or GPTQ);
* :mod:`~graphopt.quantize.report` is what it returns; :mod:`~graphopt.quantize.passes` registers ``quantize-int8``;
* :mod:`~graphopt.quantize.precision` converts to fp16/bf16 (``convert_precision``; pass ``precision``): the other
  lossy mode, measured and reported the same way (nodes kept fp32 and why, error, bytes, latency).

Dependencies point one way: analysis <- transform <- driver <- passes; nothing here imports the API or the CLI.
Names are loaded on first use, so that registering the pass costs no calibration import.
"""

from __future__ import annotations

from graphopt._lazy import lazy_exports

_EXPORTS = {
    "FUSED_OPS": ".driver",
    "QuantizeConfig": ".driver",
    "choose_reduce_range": ".driver",
    "cpu_vnni": ".driver",
    "logger": ".driver",
    "output_error": ".driver",
    "quantize_model": ".driver",
    "sqnr_db": ".driver",
    "quantize_embeddings": ".embeddings",
    "quantize_dynamic_nodes": ".dynamic",
    "quantize_model_dynamic": ".dynamic_driver",
    "calibration_feeds": ".text",
    "LayerReport": ".report",
    "PrecisionConfig": ".precision",
    "PrecisionReport": ".precision",
    "convert_precision": ".precision",
    "QuantReport": ".report",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
