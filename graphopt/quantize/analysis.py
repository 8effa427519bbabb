"""QDQ placement: which tensors get QuantizeLinear/DequantizeLinear pairs, and the graph edits that put them there.

Work is split in two so that calibration sits in between:

* :func:`plan` picks the nodes to quantize (by op type and the user's exclusions) and lists the float activations
  whose ranges calibration must measure;
* :func:`apply` takes those ranges, quantizes weights (symmetric int8, per channel) and biases (int32, target ort),
  and inserts one Q/DQ pair per quantized activation, read by all of that activation's consumers.

Placement per target:

* ``ort``: asymmetric uint8 activations, Q/DQ on the inputs and outputs of Conv/ConvTranspose/MatMul/Gemm/Add/Mul/
  Concat/pooling so that onnxruntime fuses them into QLinear ops; a Relu (or Clip from 0) right after such an op is
  absorbed into the output's quantization (range from 0, so the uint8 clamp is the Relu); scale-sharing ops
  (Reshape, Transpose, ... MaxPool, Pad) get their input's parameters on their output so onnxruntime can run them on
  the quantized data; Concat inputs and output share one scale.
* ``tensorrt``: TensorRT's explicit-quantization rules: symmetric int8 (zero point 0), Q/DQ on the activation and
  weight inputs of Conv/ConvTranspose/Gemm/MatMul and never on their outputs, the skip input of a residual Add
  quantized and the conv-branch input left float, bias kept float, standard ops only.

Nodes inside If branches and Loop bodies are quantized like the main graph's (calibration threads their tensors out,
see ``calibration.expose``); Scan bodies stay float, and so does a body node whose activations come from an outer
scope. A node whose inputs were not measured (an unknown dtype, say) is left float rather than quantized with a
guessed range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Node, Value

FLOAT = onnx.TensorProto.FLOAT
INT32_MAX = 2**31 - 1

LINEAR = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
BINARY = frozenset({"Add", "Mul"})
POOL = frozenset({"AveragePool", "GlobalAveragePool"})
SHARE = frozenset(
    {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather", "Split", "Resize", "MaxPool", "Pad"}
)
RELU_LIKE = frozenset({"Relu", "Clip"})

DEFAULT_OPS = {
    "ort": LINEAR | BINARY | POOL | SHARE | {"Concat"},
    "tensorrt": LINEAR | {"Add"},
}
"""The op types quantized by default; Softmax, LayerNormalization and others stay float unless asked."""


@dataclass
class Selection:
    """What to quantize: op types (None: the target's default) minus excluded node names, op types and regexes."""

    op_types: frozenset[str] | None = None
    exclude_names: frozenset[str] = frozenset()
    exclude_ops: frozenset[str] = frozenset()
    exclude_regex: tuple[str, ...] = ()

    def allows(self, node: Node, target: str) -> bool:
        ops = self.op_types if self.op_types is not None else DEFAULT_OPS[target]
        if node.domain not in STANDARD_DOMAINS or node.op_type not in ops or node.op_type in self.exclude_ops:
            return False
        if node.name in self.exclude_names:
            return False
        return not any(re.search(rx, node.name or "") for rx in self.exclude_regex)


@dataclass
class Params:
    """Quantization parameters of one activation: scale, zero point and the integer type."""

    scale: float
    zero_point: int
    signed: bool

    @classmethod
    def for_range(cls, lo: float, hi: float, symmetric: bool) -> Params:
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        if symmetric:
            m = max(-lo, hi)
            return cls(m / 127.0 if m > 0 else 1.0, 0, True)
        if hi - lo <= 0:
            return cls(1.0, 0, False)
        scale = (hi - lo) / 255.0
        zp = int(np.clip(round(-lo / scale), 0, 255))
        return cls(scale, zp, False)


@dataclass
class Layer:
    """One quantized node, for the report."""

    name: str
    op_type: str
    input_scale: float | None = None
    weight_scale: tuple[float, float] | None = None
    output_scale: float | None = None
    absorbed: str | None = None
    output: str | None = None
    """Name of the float tensor this layer's quantized output stands for (for per-layer SQNR)."""
    dequantized: str | None = None
    """Name of the DequantizeLinear output that carries ``output`` in the quantized graph."""
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    target: str
    nodes: list[Node]
    tensors: list[str]
    """Activations whose ranges calibration must measure."""


def _is_float_activation(v: Value | None) -> bool:
    return v is not None and v.const is None and v.dtype == FLOAT


def activation_inputs(node: Node) -> list[int]:
    """Indices of the inputs of ``node`` that carry data to quantize as activations (weights and biases excluded)."""
    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        return [0]
    if op == "Gemm":
        return [i for i in (0, 1) if _is_float_activation(node.inputs[i])]
    if op in SHARE:
        return [0]
    return [i for i, v in enumerate(node.inputs) if _is_float_activation(v)]


def _eligible(node: Node, target: str) -> bool:
    """Whether the node's shape of inputs is one this module knows how to quantize."""
    ins = node.inputs
    op = node.op_type
    if any(v is not None and v.dtype not in (FLOAT, None) and i in activation_inputs(node) for i, v in enumerate(ins)):
        return False
    if op in ("Conv", "ConvTranspose"):
        w = ins[1] if len(ins) > 1 else None
        return _is_float_activation(ins[0]) and w is not None and w.constant() is not None and w.dtype == FLOAT
    if op == "MatMul":
        if not _is_float_activation(ins[0]):
            return False
        return _is_float_activation(ins[1]) or (ins[1].constant() is not None and ins[1].dtype == FLOAT)
    if op == "Gemm":
        b = ins[1]
        return _is_float_activation(ins[0]) and (
            _is_float_activation(b) or (b.constant() is not None and b.dtype == FLOAT)
        )
    if op in BINARY:
        return len(ins) == 2 and all(_is_float_activation(v) for v in ins)
    if op in SHARE:
        return _is_float_activation(ins[0])
    if op == "AveragePool" and int(node.attr("ceil_mode", 0)):
        return ceil_is_floor(node)
    return any(_is_float_activation(v) for v in ins)


def ceil_is_floor(node: Node) -> bool:
    """Whether an AveragePool's ``ceil_mode=1`` gives the same windows as floor mode (static shapes prove it).

    onnxruntime's QLinearAveragePool computes wrong values for windows that ceil mode adds past the input's edge
    (onnxruntime 1.32: relative errors of 0.4 to 1.0), so such a pool stays float.
    """
    x = node.inputs[0]
    shape = x.shape if x is not None else None
    kernel = list(node.attr("kernel_shape", []) or [])
    if shape is None or not kernel or len(shape) != len(kernel) + 2:
        return False
    strides = list(node.attr("strides", None) or [1] * len(kernel))
    pads = list(node.attr("pads", None) or [0] * (2 * len(kernel)))
    dilations = list(node.attr("dilations", None) or [1] * len(kernel))
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return False
    for i, k in enumerate(kernel):
        d = shape[2 + i]
        if not isinstance(d, int):
            return False
        span = d + pads[i] + pads[i + len(kernel)] - (k - 1) * dilations[i] - 1
        if span < 0 or span % strides[i]:
            return False
    return True


def _local(node: Node) -> bool:
    """Whether the activations ``node`` would quantize are defined in its own graph (a Q/DQ pair is inserted where
    the value is made; a body's reads of outer-scope values are left alone)."""
    g = node.graph
    for i in activation_inputs(node):
        v = node.inputs[i]
        if v is None or v.const is not None:
            continue
        if not ((v.producer is not None and v.producer.graph is g) or (g is not None and g.is_input(v))):
            return False
    return True


def plan(graph: Graph, target: str, selection: Selection | None = None) -> Plan:
    """The nodes to quantize, in the main graph and in If/Loop bodies (Scan bodies stay float), and the activations
    calibration has to measure."""
    selection = selection or Selection()
    nodes = [n for n in graph.all_nodes() if _in_quantizable_graph(n, graph)]
    nodes = [n for n in nodes if selection.allows(n, target) and _eligible(n, target) and _local(n)]
    wanted: dict[str, None] = {}
    for n in nodes:
        for i in activation_inputs(n):
            v = n.inputs[i]
            if _is_float_activation(v):
                wanted[v.name] = None  # type: ignore[union-attr]
        if target == "ort":
            for out in n.outputs:
                if out is not None and out.dtype == FLOAT:
                    wanted[out.name] = None  # type: ignore[index]
                    for user in out.users():
                        if user.op_type in RELU_LIKE and user.output.dtype == FLOAT:
                            wanted[user.output.name] = None  # type: ignore[index]
    if target == "tensorrt":
        for n in graph.all_nodes():
            if not _in_quantizable_graph(n, graph) or not _local(n):
                continue
            if n.op_type == "Add" and n.domain in STANDARD_DOMAINS and selection.allows(n, target):
                for v in n.inputs:
                    if _is_float_activation(v):
                        wanted[v.name] = None  # type: ignore[index]
    return Plan(target, nodes, list(wanted))


def _in_quantizable_graph(node: Node, main: Graph) -> bool:
    """Whether ``node`` sits in ``main`` or in bodies of If/Loop nodes only (the calibration can read those)."""
    g = node.graph
    while g is not None and g is not main:
        owner = g.owner
        if owner is None or owner.op_type not in ("If", "Loop") or owner.domain not in STANDARD_DOMAINS:
            return False
        g = owner.graph
    return g is main


QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QGemm"}
)
"""Ops that mean a model is quantized already (with the QLinear*, *Integer* and DynamicQuantize* families, any
domain: onnxruntime's com.microsoft contrib ops included)."""


def quantized_ops(graph: Graph) -> dict[str, int]:
    """The quantized ops of ``graph`` and its subgraphs: op type -> count (empty for a float model)."""
    found: dict[str, int] = {}
    for n in graph.all_nodes():
        op = n.op_type
        if op in QUANTIZED_OPS or op.startswith(("QLinear", "DynamicQuantize")) or "Integer" in op:
            found[op] = found.get(op, 0) + 1
    return found


def is_quantized(graph: Graph) -> bool:
    return bool(quantized_ops(graph))


def float16_layers(graph: Graph) -> int:
    """How many Conv/ConvTranspose/MatMul/Gemm nodes compute in float16 (their data input is float16)."""
    f16 = onnx.TensorProto.FLOAT16
    return sum(1 for n in graph.all_nodes() if n.op_type in LINEAR and n.inputs and n.inputs[0] is not None
               and n.inputs[0].dtype == f16)  # fmt: skip
