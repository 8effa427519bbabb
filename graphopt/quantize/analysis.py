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

import functools
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Model, Node, Value, constant_array

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
    """What to quantize: op types (None: the target's default) minus the user's excluded node names, op types and
    regexes, and minus ``kept``: the layers the quantizer itself keeps float (the per-layer choice's float and dynamic
    layers, the layers after a selection op). Only the user's exclusions (:meth:`excludes`) bind the layout rules
    (:meth:`Plan.may_quantize`); ``kept`` names are merely no layers of the plan."""

    op_types: frozenset[str] | None = None
    exclude_names: frozenset[str] = frozenset()
    exclude_ops: frozenset[str] = frozenset()
    exclude_regex: tuple[str, ...] = ()
    kept: frozenset[str] = frozenset()

    def allows(self, node: Node, target: str) -> bool:
        ops = self.op_types if self.op_types is not None else DEFAULT_OPS[target]
        if node.domain not in STANDARD_DOMAINS or node.op_type not in ops:
            return False
        return not self.excludes(node) and node.name not in self.kept

    def excludes(self, node: Node) -> bool:
        """Whether the user's ``--exclude``, ``--exclude-op`` or ``--exclude-regex`` names ``node``."""
        if node.op_type in self.exclude_ops or node.name in self.exclude_names:
            return True
        return any(re.search(rx, node.name or "") for rx in self.exclude_regex)


ORT_FORMS = {
    "QLinearConv": "Conv",
    "QLinearMatMul": "MatMul",
    "ConvInteger": "Conv",
    "MatMulInteger": "MatMul",
    "QGemm": "Gemm",
    "QLinearAdd": "Add",
    "QLinearMul": "Mul",
    "QLinearConcat": "Concat",
    "QLinearSigmoid": "Sigmoid",
    "QLinearLeakyRelu": "LeakyRelu",
    "QLinearSoftmax": "Softmax",
    "QLinearAveragePool": "AveragePool",
    "QLinearGlobalAveragePool": "GlobalAveragePool",
    "QLinearReduceMean": "ReduceMean",
    "QLinearWhere": "Where",
    "FusedConv": "Conv",
    "NhwcFusedConv": "Conv",
    "FusedGemm": "Gemm",
    "FusedMatMul": "MatMul",
    "TransposeMatMul": "MatMul",
    "MatMulIntegerToFloat": "MatMul",
    "DynamicQuantizeMatMul": "MatMul",
}
"""Op types onnxruntime forms itself when it loads a model (its QDQ fusions of DequantizeLinear -> op ->
QuantizeLinear, its activation fusions), by the ONNX op they are formed from: an ``--exclude-op`` of one names no
node graphopt sees (a quantized model's QLinearAdd is graphopt's Add between Q/DQ pairs); excluding the ONNX op keeps
those layers float."""


def formed_from(op: str) -> str:
    """What to exclude instead of ``op``, an op type onnxruntime forms or a com.microsoft one (one phrase)."""
    src = ORT_FORMS.get(op)
    if src is not None:
        return f"onnxruntime forms it when it loads the model, from {src}: to keep those float, --exclude-op {src}"
    return "graphopt quantizes ONNX ops only, so excluding it keeps nothing float: exclude the ONNX ops it stands for"


@functools.cache
def microsoft_op_types() -> frozenset[str]:
    """The op types of onnxruntime's com.microsoft domain (its contrib ops), read from onnxruntime's schemas."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

        return frozenset(s.name for s in ort_c.get_all_operator_schema() if s.domain == "com.microsoft")
    except Exception:  # noqa: BLE001 - a build without the schema list: the ones this module knows
        return frozenset(ORT_FORMS)


def check_exclusions(model: Model, config: Any, *, before: Collection[str] | None = None) -> None:
    """Raise one GraphoptError naming every exclusion of ``config`` (a QuantizeConfig, an Int4Config or a mapping of
    their fields: ``exclude`` names, ``exclude_regex`` patterns, ``exclude_ops`` op types, int4's ``bits8`` patterns)
    that selects no node of ``model``, in its main graph or any body (If and Loop bodies are quantized too): a misspelt
    name would quietly quantize the layer the user meant to keep float (``tools.names.check_node_names``, the check
    of every option taking node names). Names are the ones the quantizer sees: after the optimization passes, the
    main graph's unnamed nodes named ``<op>_node`` (done here, as every driver does first). ``before`` (the names
    before the passes) tells a name the passes removed from a typo. An absent op type is an error only when no ONNX
    schema has it: a valid one may just be absent (one command line over many models; the CLI warns). An absent
    com.microsoft op type (FusedConv, QLinearAdd, ...) is an error saying what to exclude instead
    (:data:`ORT_FORMS`): graphopt quantizes ONNX ops only, and onnxruntime forms those when it loads the model, so
    excluding one could keep nothing float on any model that lacks it."""
    from graphopt.tools.names import NameOption, check_node_names
    from graphopt.tools.summary import unmatched_hint

    def chosen(key: str) -> Sequence[str]:
        return (config.get(key, ()) if isinstance(config, Mapping) else getattr(config, key, ())) or ()

    names, regexes, ops, bits8 = chosen("exclude"), chosen("exclude_regex"), chosen("exclude_ops"), chosen("bits8")
    if not (names or regexes or ops or bits8):
        return
    model.graph.name_unnamed_nodes()
    kinds = {n.op_type for n in model.graph.all_nodes()}
    bad_ops = []
    for op in ops:
        if op in kinds or any(onnx.defs.has(op, d) for d in ("", "ai.onnx.ml")):
            continue
        if op in microsoft_op_types():
            bad_ops.append(f"--exclude-op {op!r} is a com.microsoft op type, no node of this model: " + formed_from(op))
        else:
            bad_ops.append(f"--exclude-op {op!r} is no op type" + unmatched_hint(op, kinds, "op types"))
    options = [
        NameOption("--exclude", names),
        NameOption("--exclude-regex", regexes, match="search"),
        NameOption("--int8-layer", bits8, match="search"),
    ]
    check_node_names(model, options, before=before, extra=bad_ops)


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
    gates: list[Node] = field(default_factory=list)
    """Target ort: the Muls of ``a * Sigmoid(b)`` (SiLU, squeeze-excitation gates; :func:`sigmoid_gate`) that are no
    layer of their own: ``transform`` runs them as QLinearSigmoid + QLinearMul where their inputs are quantized."""
    excluded: list[Node] = field(default_factory=list)
    """The nodes the user's exclusions name (:meth:`Selection.excludes`), in the main graph and its bodies when
    planned. They stay float: no layout rule rewrites them or quantizes around them on its own
    (:meth:`may_quantize`), and target ort keeps onnxruntime from fusing them (``qdq_rules.excluded_stay_float``)."""

    def __post_init__(self) -> None:
        self._excluded = {id(n) for n in self.excluded}

    def may_quantize(self, node: Node | None) -> bool:
        """The one question every layout rule asks before it rewrites ``node``, quantizes its output or input on its
        own, or runs it on integers: False for a node the user excluded. (Nodes made after planning are no user's.)"""
        return node is None or id(node) not in self._excluded


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
    calibration has to measure. Target ort: first rewrites hard-swish idioms in ``graph`` (:func:`hard_swish_idioms`,
    the same function up to float rounding)."""
    selection = selection or Selection()
    if target == "ort":
        # x * Clip(x + 3, 0, 6) / 6 as x * HardSigmoid(x): integer kernels, see there (not where the user excluded
        # one of its nodes)
        hard_swish_idioms(graph, selection)
    everything = [n for n in graph.all_nodes() if _in_quantizable_graph(n, graph)]
    excluded = [n for n in everything if n.domain in STANDARD_DOMAINS and selection.excludes(n)]
    nodes = [n for n in everything if selection.allows(n, target) and _eligible(n, target) and _local(n)]
    gates: list[Node] = []
    if target == "ort":
        # x * HardSigmoid(x) is one hard-swish: transform writes it with integer kernels when x and its output are
        # quantized, as it does the HardSwish op (the Mul alone is not a layer to choose for)
        nodes = [n for n in nodes if not hard_swish_mul(n)]
        # a * Sigmoid(b) likewise: an activation function or a gate, run on integers where its inputs are (see
        # transform._integer_sigmoid_gates); its Sigmoid must not be excluded either
        gates = [n for n in nodes if _gate_allowed(n, selection)]
        nodes = [n for n in nodes if not any(n is g for g in gates)]
        # the Mul of a gate whose Sigmoid the user excluded is part of that activation: it stays float too (as a
        # layer it would quantize the excluded Sigmoid's output, and onnxruntime run the Sigmoid as QLinearSigmoid)
        nodes = [n for n in nodes if not _gate_of_excluded(n, selection)]
    wanted: dict[str, None] = {}
    for n in gates:
        out = n.outputs[0]
        if out is not None and out.dtype == FLOAT:
            wanted[out.name] = None  # type: ignore[index]
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
    return Plan(target, nodes, list(wanted), gates, excluded)


def sigmoid_gate(node: Node) -> tuple[Value, Node] | None:
    """``(a, sigmoid)`` when ``node`` is the Mul of ``a * Sigmoid(b)`` whose Sigmoid output it alone reads (SiLU when
    ``a`` is ``b``; a squeeze-excitation gate when ``b`` is the excitation): float activations, one graph."""
    if node.op_type != "Mul" or node.domain not in STANDARD_DOMAINS or len(node.inputs) != 2 or not node.outputs:
        return None
    if node.outputs[0] is None or node.outputs[0].dtype != FLOAT:
        return None
    for a, h in (node.inputs, reversed(node.inputs)):
        p = h.producer if h is not None else None
        if (
            p is None
            or p.op_type != "Sigmoid"
            or p.domain not in STANDARD_DOMAINS
            or p.graph is not node.graph
            or len(p.inputs) != 1
            or len(h.uses) != 1  # type: ignore[union-attr]
            or (node.graph is not None and node.graph.is_output(h))  # type: ignore[arg-type]
            or h is a
        ):
            continue
        if _is_float_activation(a) and _is_float_activation(p.inputs[0]) and h.dtype == FLOAT:  # type: ignore[union-attr]
            return a, p  # type: ignore[return-value]
    return None


def _gate_allowed(node: Node, selection: Selection) -> bool:
    """A planned Mul that is a :func:`sigmoid_gate` whose Sigmoid the selection does not exclude either."""
    found = sigmoid_gate(node)
    if found is None:
        return False
    return not selection.excludes(found[1]) and found[1].name not in selection.kept


def _gate_of_excluded(node: Node, selection: Selection) -> bool:
    """A Mul that is a :func:`sigmoid_gate` whose Sigmoid the user excluded."""
    found = sigmoid_gate(node)
    return found is not None and selection.excludes(found[1])


def _scalar(v: Value | None) -> float | None:
    """The value of a one-element float constant, else None."""
    c = constant_array(v) if v is not None else None
    return float(c.reshape(-1)[0]) if c is not None and c.size == 1 and c.dtype.kind == "f" else None


def _only_reader(v: Value | None, graph: Graph) -> Node | None:
    """The single node reading ``v`` (in ``graph``), when ``v`` is not a graph output and has exactly one use."""
    if v is None or len(v.uses) != 1 or graph.is_output(v):
        return None
    ((user, _),) = v.uses
    return user if user.graph is graph and user.domain in STANDARD_DOMAINS else None


def _clip_bounds(node: Node) -> tuple[float | None, float | None]:
    if len(node.inputs) > 1 or "min" not in node.attrs and "max" not in node.attrs:
        lo = _scalar(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
        hi = _scalar(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        return lo, hi
    return node.attr("min"), node.attr("max")


def hard_swish_mul(node: Node) -> bool:
    """Whether ``node`` is the Mul of ``x * HardSigmoid(x)`` (a hard-swish), the HardSigmoid read by it alone."""
    if node.op_type != "Mul" or node.domain not in STANDARD_DOMAINS or len(node.inputs) != 2:
        return False
    a, b = node.inputs
    for x, h in ((a, b), (b, a)):
        p = h.producer if h is not None else None
        if (
            p is not None
            and p.op_type == "HardSigmoid"
            and p.domain in STANDARD_DOMAINS
            and p.inputs[0] is x
            and len(h.uses) == 1  # type: ignore[union-attr]
        ):
            return True
    return False


def hard_swish_idioms(graph: Graph, selection: Selection | None = None) -> int:
    """Write ``x * Clip(x + 3, 0, 6) / 6`` (PaddlePaddle's and older torch exports' hard-swish before opset 14) as
    ``x * HardSigmoid(x)`` (alpha 1/6, beta 1/2), in ``graph`` and its If/Loop bodies; returns how many.

    The same function (equal up to float rounding); target ort then runs it as QLinearAdd + QLinearMul (see
    ``transform._integer_hard_sigmoids``) where the four float ops would be an island between DQ and Q. Not where
    ``selection`` excludes one of the four nodes (the user keeps them as they are)."""
    count = 0
    for g in (graph, *graph.subgraphs()):
        for add in list(g):
            if add.op_type != "Add" or add.domain not in STANDARD_DOMAINS or len(add.inputs) != 2:
                continue
            a, b = add.inputs
            x, three = (a, b) if _scalar(b) == 3.0 else (b, a) if _scalar(a) == 3.0 else (None, None)
            if x is None or x.const is not None or constant_array(three).dtype != np.float32:
                # float32 only (Add's operands share the constant's type): onnxruntime's CPU HardSigmoid has no
                # double kernel, and the new values are typed float32
                continue
            clip = _only_reader(add.outputs[0], g)
            if clip is None or clip.op_type != "Clip" or clip.inputs[0] is not add.outputs[0]:
                continue
            lo, hi = _clip_bounds(clip)
            if lo is None or hi is None or float(lo) != 0.0 or float(hi) != 6.0:
                continue
            mul = _only_reader(clip.outputs[0], g)
            if mul is None or mul.op_type != "Mul" or len(mul.inputs) != 2:
                continue
            if {id(v) for v in mul.inputs} != {id(x), id(clip.outputs[0])}:
                continue
            last = _only_reader(mul.outputs[0], g)
            if last is None or len(last.inputs) != 2 or last.inputs[0] is not mul.outputs[0]:
                continue
            k = _scalar(last.inputs[1])
            if k is None or not (
                (last.op_type == "Div" and k == 6.0) or (last.op_type == "Mul" and abs(k * 6.0 - 1.0) < 1e-6)
            ):
                continue
            if selection is not None and any(selection.excludes(n) for n in (add, clip, mul, last)):
                continue
            y = last.outputs[0]
            base = add.name or "hard_swish"
            h = Value(g.unique_name(f"{base}_hard_sigmoid"), FLOAT, x.shape)
            hs = Node(
                "HardSigmoid", [x], {"alpha": 1.0 / 6.0, "beta": 0.5}, outputs=[h], name=g.unique_name(f"{base}_HS")
            )
            out = Value(g.unique_name(f"{base}_hard_swish"), FLOAT, y.shape)
            mm = Node("Mul", [x, h], outputs=[out], name=g.unique_name(f"{base}_Mul"))
            g.insert_before(add, hs)
            g.insert_after(hs, mm)
            name = y.name
            g.replace_all_uses_with(y, out)
            for n in (last, mul, clip, add):
                g.remove(n)
            y.name = g.unique_name(f"{name}_replaced")
            out.name = name
            count += 1
    return count


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
