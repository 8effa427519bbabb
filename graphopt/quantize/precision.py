"""Half precision (fp16 / bf16): convert a model's weights and activations, keeping the nodes that cannot take it in
fp32, with the fewest Casts, and measure the result.

``convert_precision`` works on a model that has been through the lossless passes:

1. types: shape inference types every tensor; a node touching an untyped tensor stays fp32;
2. ranges: onnxruntime runs the fp32 model on the calibration feeds (random valid inputs when none are given, with a
   warning) and records each float tensor's largest magnitude and whether it was finite;
3. the plan: each node that reads or writes float32 is converted unless a reason keeps it fp32, in this order: named
   by the user, its op in the block list (:data:`DEFAULT_BLOCK_OPS` plus/minus the user's), a custom domain, a
   subgraph (If/Loop/Scan bodies are left fp32, and so is every outer value they read), shape arithmetic (float math
   on Shape/Size results), a tensor out of the half type's range (a calibrated activation above ``range_limit`` times
   the type's largest finite value or not finite, or a constant with values that overflow or flush to zero), for
   target ``ort`` with ``kernels="auto"`` no half kernel in this onnxruntime's CPU provider (probed once per op and
   signature: onnxruntime would cast the node back to fp32 at load, or refuse the model for bf16), and finally
   "cheaper in fp32": a node whose conversion adds Casts (target ort: adds no fewer than it saves) goes back;
4. the rewrite: a converted node's float inputs and outputs become half (inputs the op's schema types as float only,
   such as Resize's scales, stay float32); one Cast per tensor and dtype joins the two regions; weights are stored in
   half when every reader takes half or when they are large (``min_weight_elements``; fp32 readers then read them
   through a Cast that onnxruntime folds at load); graph inputs and outputs keep their dtype (``keep_io_types``);
5. :func:`fold_cast_chains` removes redundant Cast chains exactly (Cast A->B->C becomes A->C, or nothing when C is A,
   only when A->B loses nothing);
6. the report: the nodes kept fp32 and why, the output error against fp32 on the feeds, parameter bytes, the latency
   ratio under onnxruntime CPU and, for target tensorrt, the TensorRT checker's findings.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.ir import Model
from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.errors import GraphoptError
from graphopt.tools.names import NameOption, check_node_names, main_graph_only

logger = logging.getLogger("graphopt.quantize")

FLOAT = TensorProto.FLOAT
HALF_TYPES = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
TYPE_NAME = {TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}
HALF_MAX = {"fp16": 65504.0, "bf16": 3.3895313892515355e38}
HALF_TINY = {"fp16": 2.0**-24, "bf16": 2.0**-133}
HALF_EPS = {"fp16": 2.0**-11, "bf16": 2.0**-8}
"""Largest finite value, smallest positive (subnormal) value and unit roundoff of each half type."""

DEFAULT_BLOCK_OPS = frozenset(
    {
        # sums or products of many terms: the accumulator overflows or loses the small terms in half
        "ReduceSum", "ReduceSumSquare", "ReduceMean", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
        "ReduceProd", "CumSum",
        # exponentials and powers: the range of the result is the range of the input exponentiated
        "Exp", "Log", "Pow", "Softplus", "LogSoftmax",
        # normalization statistics over large extents (variance of wide activations)
        "InstanceNormalization", "GroupNormalization", "MeanVarianceNormalization", "LpNormalization",
        # index, shape and coordinate math, where a rounding moves a result by a whole step
        "Range", "TopK", "NonMaxSuppression", "RoiAlign", "Resize", "Upsample", "GridSample", "EyeLike",
        # random generators (their dtype attribute and their statistics)
        "RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike", "Multinomial", "Bernoulli",
    }
)  # fmt: skip
"""Op types kept fp32 unless the user allows them (``allow_ops``): ops whose results overflow or lose range in half.

Written for graphopt; onnxconverter-common's and onnxruntime's float16 converters block ML-domain ops, TopK,
NonMaxSuppression, RoiAlign, Resize, Range, CumSum, Min, Max and Upsample (Min/Max for onnxruntime kernels, which
graphopt probes instead). Custom domains and control flow are kept fp32 by their own rules."""

CONTROL_FLOW = frozenset({"If", "Loop", "Scan", "SequenceMap"})
SHAPE_SOURCES = frozenset({"Shape", "Size"})
MIN_WEIGHT_ELEMENTS = 1024
SHAPE_CONST_ELEMENTS = 16
RANGE_LIMIT = 1.0

LOSSLESS = {
    TensorProto.FLOAT16: {TensorProto.FLOAT, TensorProto.DOUBLE},
    TensorProto.BFLOAT16: {TensorProto.FLOAT, TensorProto.DOUBLE},
    TensorProto.FLOAT: {TensorProto.DOUBLE},
    TensorProto.BOOL: {
        TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT8,
        TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32, TensorProto.UINT32,
        TensorProto.INT64, TensorProto.UINT64,
    },
    TensorProto.INT8: {
        TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT16, TensorProto.INT32,
        TensorProto.INT64,
    },
    TensorProto.UINT8: {
        TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT16, TensorProto.UINT16,
        TensorProto.INT32, TensorProto.UINT32, TensorProto.INT64, TensorProto.UINT64,
    },
    TensorProto.INT16: {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT32, TensorProto.INT64},
    TensorProto.UINT16: {
        TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT32, TensorProto.UINT32, TensorProto.INT64,
    },
    TensorProto.INT32: {TensorProto.DOUBLE, TensorProto.INT64},
    TensorProto.UINT32: {TensorProto.DOUBLE, TensorProto.INT64, TensorProto.UINT64},
}  # fmt: skip
"""Casts A -> B that are exact for every value of A (so Cast A->B->C equals Cast A->C)."""


@dataclass
class PrecisionConfig:
    """How to convert. ``block_ops`` adds op types to :data:`DEFAULT_BLOCK_OPS`, ``allow_ops`` removes them;
    ``block_nodes`` keeps nodes fp32 by name. ``kernels``: ``auto`` keeps fp32 (target ort) the nodes onnxruntime's
    CPU provider has no half kernel for, ``all`` converts them regardless (for another execution provider)."""

    precision: str = "fp16"
    keep_io_types: bool = True
    block_ops: Sequence[str] = ()
    allow_ops: Sequence[str] = ()
    block_nodes: Sequence[str] = ()
    kernels: str = "auto"
    range_limit: float = RANGE_LIMIT
    """A calibrated activation above this share of the half type's largest value keeps its nodes fp32."""
    min_weight_elements: int = MIN_WEIGHT_ELEMENTS
    """Weights with fp32 readers are still stored in half (read through a Cast) from this many elements."""
    threads: int | None = None
    latency_runs: int = 20
    """Time fp32 and the result under onnxruntime CPU over this many interleaved runs (0: skip)."""

    @classmethod
    def of(cls, value: PrecisionConfig | Mapping[str, Any] | str | None) -> PrecisionConfig:
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls(precision=value)
        if isinstance(value, PrecisionConfig):
            return value
        unknown = sorted(set(value) - set(cls.__dataclass_fields__))
        if unknown:
            raise GraphoptError(f"unknown precision option {unknown[0]!r}")
        return cls(**value)

    def blocked_ops(self) -> frozenset[str]:
        return (DEFAULT_BLOCK_OPS | frozenset(self.block_ops)) - frozenset(self.allow_ops)


@dataclass
class KeptNode:
    name: str
    op_type: str
    why: str


@dataclass
class PrecisionReport:
    precision: str
    target: str
    kernels: str
    keep_io_types: bool
    batches: int
    random_data: bool
    converted: int = 0
    """Nodes whose computation runs in half."""
    float_nodes: int = 0
    """Nodes that read or write float32 in the model before (the candidates)."""
    kept: list[KeptNode] = field(default_factory=list)
    weights_half: int = 0
    weights_float: int = 0
    casts_added: int = 0
    casts_removed: int = 0
    error_rel: float = float("nan")
    error_max_abs: float = float("nan")
    cosine_min: float = float("nan")
    measured_at: str | None = None
    """Where the output error was measured when not at the outputs (a selection op such as TopK or NonMaxSuppression
    reads the converted layers' results: ``driver.measured_points``)."""
    param_bytes_before: int = 0
    param_bytes_after: int = 0
    latency_ms: tuple[float, float] | None = None
    tensorrt_violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def kept_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for k in self.kept:
            key = k.why.split(":")[0]
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        def clean(x: Any) -> Any:
            return None if isinstance(x, float) and not math.isfinite(x) else x

        return {
            "precision": self.precision,
            "target": self.target,
            "kernels": self.kernels,
            "keep_io_types": self.keep_io_types,
            "calibration_batches": self.batches,
            "random_data": self.random_data,
            "float_nodes": self.float_nodes,
            "converted_nodes": self.converted,
            "kept_fp32": [vars(k) for k in self.kept],
            "kept_fp32_by_reason": self.kept_by_reason(),
            "weights_half": self.weights_half,
            "weights_fp32": self.weights_float,
            "casts_added": self.casts_added,
            "casts_removed": self.casts_removed,
            "output_error_rel": clean(self.error_rel),
            "output_error_max_abs": clean(self.error_max_abs),
            "output_cosine_min": clean(self.cosine_min),
            "output_measured_at": self.measured_at,
            "param_bytes_before": self.param_bytes_before,
            "param_bytes_after": self.param_bytes_after,
            "latency_ms": list(self.latency_ms) if self.latency_ms else None,
            "tensorrt_violations": self.tensorrt_violations,
            "warnings": self.warnings,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


# --------------------------------------------------------------------------------------------------------------------
# half arrays
# --------------------------------------------------------------------------------------------------------------------
def to_half_array(a: np.ndarray, elem: int) -> np.ndarray:
    """``a`` rounded to the half type (round to nearest even): float16, or bfloat16 as ml_dtypes' bfloat16."""
    if elem == TensorProto.FLOAT16:
        return np.asarray(a, dtype=np.float32).astype(np.float16)
    import ml_dtypes

    return np.asarray(a, dtype=np.float32).astype(ml_dtypes.bfloat16)


def half_tensor(a: np.ndarray, elem: int, name: str) -> TensorProto:
    h = to_half_array(a, elem)
    t = TensorProto()
    t.name = name
    t.data_type = elem
    t.dims.extend(h.shape)
    t.raw_data = np.ascontiguousarray(h).view(np.uint16).tobytes()
    return t


def range_problem(a: np.ndarray, precision: str) -> str | None:
    """Why the float array ``a`` cannot be stored in the half type (overflow, or nonzero values flushed to 0)."""
    a = np.asarray(a, dtype=np.float32)
    finite = a[np.isfinite(a)]
    if finite.size and float(np.max(np.abs(finite))) > HALF_MAX[precision]:
        return f"values up to {float(np.max(np.abs(finite))):.3g} overflow {precision}"
    nz = np.abs(finite[finite != 0])
    if nz.size and float(np.min(nz)) < HALF_TINY[precision] / 2:
        # a flushed element's error (under half the smallest subnormal) matters when it is above the rounding error
        # of the tensor's largest element: an epsilon of 1e-12 vanishes, a few tiny weights among large ones do not
        largest = float(np.max(nz))
        if HALF_TINY[precision] / 2 > largest * HALF_EPS[precision]:
            return f"values down to {float(np.min(nz)):.3g} flush to 0 in {precision}"
    return None


# --------------------------------------------------------------------------------------------------------------------
# graph facts
# --------------------------------------------------------------------------------------------------------------------
def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs read from the enclosing scopes."""
    out: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for g in graphs:
            defined = {i.name for i in g.input} | {t.name for t in g.initializer}
            used: set[str] = set()
            for n in g.node:
                used.update(x for x in n.input if x)
                used |= _subgraph_reads(n)
                defined.update(x for x in n.output if x)
            used.update(o.name for o in g.output)
            out |= used - defined
    return out


def _subgraph_output_names(node: onnx.NodeProto) -> set[str]:
    """Names that a node's subgraphs (at any depth) list as their outputs."""
    out: set[str] = set()
    for attr in node.attribute:
        for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            out.update(o.name for o in g.output)
            for n in g.node:
                out |= _subgraph_output_names(n)
    return out


def _rename_outer_reads(node: onnx.NodeProto, renames: Mapping[str, str]) -> None:
    """Point a node's subgraphs' reads of outer names at their new names (a name a body defines itself shadows the
    outer one and is left alone)."""
    for attr in node.attribute:
        for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            defined = {i.name for i in g.input} | {t.name for t in g.initializer}
            defined |= {x for n in g.node for x in n.output if x}
            local = {k: v for k, v in renames.items() if k not in defined}
            if not local:
                continue
            for n in g.node:
                for i, x in enumerate(n.input):
                    if x in local:
                        n.input[i] = local[x]
                _rename_outer_reads(n, local)


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _schema(node: onnx.NodeProto, opsets: Mapping[str, int]) -> Any:
    domain = node.domain if node.domain not in ("ai.onnx",) else ""
    try:
        return onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), domain)
    except Exception:  # noqa: BLE001 - unknown op or domain: no schema
        return None


def _allows(schema: Any, formals: Sequence[Any], index: int, half: str) -> bool:
    """Whether the schema lets input/output ``index`` be the half type ``half`` (``tensor(float16)``)."""
    if not formals:
        return False
    i = index if index < len(formals) else len(formals) - 1
    formal = formals[i]
    if index >= len(formals) and formal.option != onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return False
    for c in schema.type_constraints:
        if c.type_param_str == formal.type_str:
            return half in c.allowed_type_strs
    return formal.type_str == half


def _lift_constants(graph: onnx.GraphProto) -> None:
    """Float Constant nodes become initializers (the same values), so weights are handled in one place."""
    keep = []
    for n in graph.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.attribute) == 1:
            a = n.attribute[0]
            if a.name == "value" and a.t.data_type == FLOAT:
                t = TensorProto()
                t.CopyFrom(a.t)
                t.name = n.output[0]
                graph.initializer.append(t)
                continue
        keep.append(n)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


# --------------------------------------------------------------------------------------------------------------------
# onnxruntime kernels
# --------------------------------------------------------------------------------------------------------------------
_ELEM_OF_NP = {
    "float32": FLOAT, "float16": TensorProto.FLOAT16, "float64": TensorProto.DOUBLE, "int64": TensorProto.INT64,
    "int32": TensorProto.INT32, "int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "bool": TensorProto.BOOL,
    "int16": TensorProto.INT16, "uint16": TensorProto.UINT16,
}  # fmt: skip
_KERNEL_CACHE: dict[tuple[Any, ...], bool] = {}


def ort_has_kernel(
    node: onnx.NodeProto, in_types: Sequence[int | None], out_types: Sequence[int | None], opsets: Mapping[str, int]
) -> bool:
    """Whether onnxruntime's CPU provider runs ``node`` with these input/output types natively: a one-node model is
    loaded with optimizations off and must neither fail nor get Casts inserted around it."""
    key = (
        node.op_type,
        node.domain,
        opsets.get(node.domain or "", 0),
        tuple(in_types),
        tuple(out_types),
        tuple(sorted((a.name, a.SerializeToString()) for a in node.attribute if a.name in ("to", "stash_type"))),
    )
    if key in _KERNEL_CACHE:
        return _KERNEL_CACHE[key]
    from graphopt.tools import runtime

    ins, outs = [], []
    names_in = []
    for i, t in enumerate(in_types):
        if t is None:
            names_in.append("")
            continue
        names_in.append(f"i{i}")
        ins.append(helper.make_tensor_value_info(f"i{i}", t, None))
    names_out = []
    for i, t in enumerate(out_types):
        names_out.append(f"o{i}" if t is not None else "")
        if t is not None:
            outs.append(helper.make_tensor_value_info(f"o{i}", t, None))
    probe = helper.make_node(node.op_type, names_in, names_out, domain=node.domain)
    probe.attribute.extend(node.attribute)
    graph = helper.make_graph([probe], "probe", ins, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = 8
    ok = False
    with tempfile.TemporaryDirectory(prefix="graphopt-") as tmp:
        path = os.path.join(tmp, "probe.onnx")
        try:
            runtime.session(model, optimization="disabled", optimized_path=path)
            optimized = onnx.load(path)
            ok = all(n.op_type != "Cast" for n in optimized.graph.node) or node.op_type == "Cast"
            if node.op_type == "Cast":
                ok = sum(n.op_type == "Cast" for n in optimized.graph.node) == 1
        except Exception:  # noqa: BLE001 - any failure means: no kernel
            ok = False
    _KERNEL_CACHE[key] = ok
    return ok


# --------------------------------------------------------------------------------------------------------------------
# ranges
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class _Range:
    max_abs: float = 0.0
    finite: bool = True


def _measure_ranges(
    proto: onnx.ModelProto,
    names: Sequence[str],
    feeds: Sequence[Mapping[str, np.ndarray]],
    threads: int | None,
    typed: frozenset[str] = frozenset(),
    chunk: int = 96,
) -> tuple[dict[str, _Range], dict[str, int]]:
    """Largest magnitude and finiteness of each named tensor over the feeds (fp32 model, onnxruntime), and the element
    type onnxruntime gave each (for the tensors shape inference could not type)."""
    from graphopt.tools import runtime

    out = {n: _Range() for n in names}
    names = list(names)
    seen: dict[str, int] = {}
    for start in range(0, len(names), chunk):
        part = names[start : start + chunk]
        probe = onnx.ModelProto()
        probe.CopyFrom(proto)
        have = {o.name for o in probe.graph.output}
        for n in part:
            if n not in have:
                probe.graph.output.append(onnx.ValueInfoProto(name=n))  # onnxruntime types it
        try:
            sess = runtime.session(probe, threads=threads, optimization="basic")
        except GraphoptError:  # an untyped tensor onnxruntime cannot return (a sequence...): measure the typed ones
            part = [n for n in part if n in typed]
            del probe.graph.output[len(proto.graph.output) :]
            for n in part:
                if n not in have:
                    probe.graph.output.append(helper.make_tensor_value_info(n, FLOAT, None))
            sess = runtime.session(probe, threads=threads, optimization="basic")
        for i, feed in enumerate(feeds):
            values = runtime.run(sess, part, feed, f"calibration sample #{i}")
            for n, v in zip(part, values, strict=True):
                v = np.asarray(v)
                seen.setdefault(n, _ELEM_OF_NP.get(v.dtype.name, 0))
                if v.dtype.kind != "f" or not v.size:
                    continue
                r = out[n]
                fin = np.isfinite(v)
                if not fin.all():
                    r.finite = False
                    v = v[fin]
                if v.size:
                    r.max_abs = max(r.max_abs, float(np.max(np.abs(v))))
            del values
    return out, seen


# --------------------------------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    half_nodes: set[int]
    kept: dict[int, str]
    in_half: dict[tuple[int, int], bool]
    out_half: dict[tuple[int, int], bool]
    bad_const: dict[str, str] = field(default_factory=dict)
    """Constants that cannot be stored in half, and why."""


def _plan(
    graph: onnx.GraphProto,
    types: Mapping[str, int | None],
    ranges: Mapping[str, _Range],
    cfg: PrecisionConfig,
    target: str,
    opsets: Mapping[str, int],
) -> tuple[list[int], _Plan]:
    half = HALF_TYPES[cfg.precision]
    half_str = f"tensor({TYPE_NAME[half]})"
    blocked_ops = cfg.blocked_ops()
    blocked_names = set(cfg.block_nodes)
    inits = {t.name: t for t in graph.initializer}
    limit = HALF_MAX[cfg.precision] * cfg.range_limit
    outer_reads: set[str] = set()
    for n in graph.node:
        outer_reads |= _subgraph_reads(n)

    # constants out of the half range, checked once
    bad_const: dict[str, str] = {}
    for name, t in inits.items():
        if t.data_type == FLOAT:
            problem = range_problem(numpy_helper.to_array(t), cfg.precision)
            if problem:
                bad_const[name] = problem

    # shape arithmetic: float tensors computed only from Shape/Size results and constants
    shape_vals: set[str] = set()
    for n in graph.node:
        if n.op_type in SHAPE_SOURCES:
            shape_vals.update(o for o in n.output if o)
            continue
        if n.op_type == "ConstantOfShape":  # a fill of data, not arithmetic on the shape
            continue
        ins = [x for x in n.input if x]
        small = [x in inits and int(np.prod(inits[x].dims)) <= SHAPE_CONST_ELEMENTS for x in ins]
        fed = all(x in shape_vals or c for x, c in zip(ins, small, strict=True))
        if ins and fed and any(x in shape_vals for x in ins):
            shape_vals.update(o for o in n.output if o)

    candidates: list[int] = []
    kept: dict[int, str] = {}
    in_half: dict[tuple[int, int], bool] = {}
    out_half: dict[tuple[int, int], bool] = {}
    for k, n in enumerate(graph.node):
        ins = list(n.input)
        outs = list(n.output)
        floats_in = [i for i, x in enumerate(ins) if x and types.get(x) == FLOAT]
        floats_out = [i for i, x in enumerate(outs) if x and types.get(x) == FLOAT]
        unknown = [x for x in ins + outs if x and types.get(x) is None]
        if not floats_in and not floats_out and not unknown:
            continue
        candidates.append(k)
        why = ""
        schema = _schema(n, opsets)
        if n.name in blocked_names:
            why = "named by the user"
        elif n.op_type in blocked_ops:
            why = f"block list: {n.op_type}"
        elif n.domain not in ("", "ai.onnx"):
            why = f"custom domain: {n.domain}"
        elif n.op_type == "Constant":
            why = "constant: a Constant node kept as written"
        elif _has_subgraph(n) or n.op_type in CONTROL_FLOW:
            why = "control flow: its subgraphs are left fp32"
        elif unknown:
            why = f"type unknown: {unknown[0]}"
        elif schema is None:
            why = "no schema: for this opset"
        elif any(outs[i] in shape_vals for i in floats_out):
            why = "shape math: float arithmetic on Shape results"
        if not why:
            for x in [ins[i] for i in floats_in] + [outs[i] for i in floats_out]:
                if x in bad_const:
                    why = f"constant out of range: {x}: {bad_const[x]}"
                    break
                r = ranges.get(x)
                if r is not None and not r.finite:
                    why = f"overflow: {x} is not finite in fp32"
                    break
                if r is not None and r.max_abs > limit:
                    why = f"overflow: {x} reaches {r.max_abs:.3g} > {limit:.6g} ({cfg.precision})"
                    break
                if x in outer_reads and x not in inits:  # a weight gets its own fp32 copy for the subgraph
                    why = f"read by a subgraph: {x}"
                    break
        if not why:
            ih = {i: _allows(schema, schema.inputs, i, half_str) for i in floats_in}
            oh = {i: _allows(schema, schema.outputs, i, half_str) for i in floats_out}
            if not any(ih.values()) and not any(oh.values()):
                why = f"no {TYPE_NAME[half]} in the schema: at opset {opsets.get(n.domain or '', 0)}"
            else:
                for i, v in ih.items():
                    in_half[(k, i)] = v
                for i, v in oh.items():
                    out_half[(k, i)] = v
                if target == "ort" and cfg.kernels == "auto":
                    in_t = [(half if ih.get(i) else types.get(x)) if x else None for i, x in enumerate(ins)]
                    out_t = [(half if oh.get(i) else types.get(x)) if x else None for i, x in enumerate(outs)]
                    if n.op_type == "Cast":
                        out_t = [half if oh.get(0) else types.get(outs[0])]
                    if not ort_has_kernel(_with_cast_to(n, half if oh.get(0) else None), in_t, out_t, opsets):
                        why = f"no {TYPE_NAME[half]} kernel: in onnxruntime's CPU provider (it would cast back to fp32)"
        if why:
            kept[k] = why
    plan = _Plan({k for k in candidates if k not in kept}, kept, in_half, out_half, bad_const)
    _fewer_casts(graph, types, plan, tie_reverts=target == "ort" and cfg.kernels == "auto")
    return candidates, plan


def _with_cast_to(n: onnx.NodeProto, half: int | None) -> onnx.NodeProto:
    if n.op_type != "Cast" or half is None:
        return n
    m = onnx.NodeProto()
    m.CopyFrom(n)
    for a in m.attribute:
        if a.name == "to":
            a.i = half
    return m


def _fewer_casts(graph: onnx.GraphProto, types: Mapping[str, int | None], plan: _Plan, tie_reverts: bool) -> None:
    """Put back in fp32 each converted node whose conversion costs more Casts on activations than it saves (target
    ort: no fewer), until none does. Weights do not count: onnxruntime folds their Casts at load."""
    inits = {t.name for t in graph.initializer}
    producer: dict[str, tuple[int, int]] = {}
    readers: dict[str, list[tuple[int, int]]] = {}
    for k, n in enumerate(graph.node):
        for i, x in enumerate(n.output):
            if x:
                producer[x] = (k, i)
        for i, x in enumerate(n.input):
            if x and types.get(x) == FLOAT and x not in inits:
                readers.setdefault(x, []).append((k, i))
    graph_outputs = {o.name for o in graph.output}

    def home(x: str, half_nodes: set[int]) -> bool:
        p = producer.get(x)
        return p is not None and p[0] in half_nodes and plan.out_half.get(p, False)

    def casts(x: str, half_nodes: set[int]) -> int:
        h = home(x, half_nodes)
        wants = {k in half_nodes and plan.in_half.get((k, i), False) for k, i in readers.get(x, [])}
        if x in graph_outputs:
            wants.add(False)
        return len(wants - {h})

    changed = True
    while changed:
        changed = False
        for k in sorted(plan.half_nodes):
            n = graph.node[k]
            touched = [x for x in list(n.input) + list(n.output) if x and types.get(x) == FLOAT and x not in inits]
            touched = list(dict.fromkeys(touched))
            with_it = sum(casts(x, plan.half_nodes) for x in touched)
            without = plan.half_nodes - {k}
            without_it = sum(casts(x, without) for x in touched)
            if without_it < with_it or (tie_reverts and without_it == with_it):
                plan.half_nodes = without
                plan.kept[k] = "cheaper in fp32: converting it would add Casts" + (
                    "" if without_it < with_it else " and onnxruntime gains nothing from it"
                )
                changed = True


# --------------------------------------------------------------------------------------------------------------------
# the rewrite
# --------------------------------------------------------------------------------------------------------------------
def _rewrite(
    proto: onnx.ModelProto, types: Mapping[str, int | None], plan: _Plan, cfg: PrecisionConfig, bad_const: set[str]
) -> tuple[int, int, int]:
    """Apply the plan to ``proto`` in place; returns (Casts added, weights stored half, weights left fp32)."""
    graph = proto.graph
    half = HALF_TYPES[cfg.precision]
    inits = {t.name: t for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input if i.name not in inits}
    graph_outputs = {o.name for o in graph.output}
    used_names = {x for n in graph.node for x in list(n.input) + list(n.output)} | set(inits) | graph_inputs
    suffix = "fp16" if cfg.precision == "fp16" else "bf16"
    graph_inputs_all = {i.name for i in graph.input}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in used_names:
            name, k = f"{base}_{k}", k + 1
        used_names.add(name)
        return name

    # which dtype each float32 tensor lives in, and which each reader wants
    producer: dict[str, tuple[int, int]] = {}
    for k, n in enumerate(graph.node):
        for i, x in enumerate(n.output):
            if x:
                producer[x] = (k, i)
    uses: dict[str, list[tuple[int, int, bool]]] = {}
    for k, n in enumerate(graph.node):
        for i, x in enumerate(n.input):
            if x and types.get(x) == FLOAT:
                uses.setdefault(x, []).append((k, i, k in plan.half_nodes and plan.in_half.get((k, i), False)))
    subgraph_readers = set()
    for n in graph.node:
        subgraph_readers |= _subgraph_reads(n)

    new_nodes: list[tuple[int, onnx.NodeProto]] = []  # (insert before node index, node); -1: at the start
    casts = 0
    weights_half = weights_float = 0
    renames: dict[tuple[int, int], str] = {}

    def cast(src: str, to: int, dst: str, where: int) -> None:
        nonlocal casts
        new_nodes.append((where, helper.make_node("Cast", [src], [dst], name=fresh(f"{dst}_cast"), to=to)))
        casts += 1

    # weights only subgraphs read: stored in half too when large, the bodies reading an fp32 Cast of them
    sub_outputs = set().union(*(_subgraph_output_names(n) for n in graph.node))
    sub_renames: dict[str, str] = {}
    for x in subgraph_readers:
        t = inits.get(x)
        if t is not None and t.data_type == FLOAT and x not in uses:
            uses[x] = []
    for x, readers in uses.items():
        wants_half = [r for r in readers if r[2]]
        wants_float = [r for r in readers if not r[2]]
        if x in inits:
            t = inits[x]
            big = int(np.prod(t.dims)) >= cfg.min_weight_elements and x not in bad_const
            in_bodies = x in subgraph_readers
            if (
                ((wants_half and not wants_float and not in_bodies) or big)
                and x not in sub_outputs
                and x not in graph_outputs
                and x not in graph_inputs_all
            ):
                arr = numpy_helper.to_array(t)
                t.CopyFrom(half_tensor(arr, half, x))
                weights_half += 1
                if wants_float or in_bodies:
                    up = fresh(f"{x}_fp32")
                    cast(x, FLOAT, up, -1)
                    for k, i, _ in wants_float:
                        renames[(k, i)] = up
                    if in_bodies:
                        sub_renames[x] = up
            else:
                weights_float += 1
                if wants_half:
                    down = fresh(f"{x}_{suffix}")
                    cast(x, half, down, -1)
                    for k, i, _ in wants_half:
                        renames[(k, i)] = down
            continue
        p = producer.get(x)
        lives_half = p is not None and p[0] in plan.half_nodes and plan.out_half.get(p, False)
        if x in graph_inputs and not cfg.keep_io_types and x not in subgraph_readers:
            lives_half = True  # the input itself becomes half
        other = wants_float if lives_half else wants_half
        if other:
            name = fresh(f"{x}_{'fp32' if lives_half else suffix}")
            where = -1 if p is None else p[0] + 1
            cast(x, FLOAT if lives_half else half, name, where)
            for k, i, _ in other:
                renames[(k, i)] = name

    for (k, i), name in renames.items():
        graph.node[k].input[i] = name
    if sub_renames:
        for n in graph.node:
            _rename_outer_reads(n, sub_renames)

    # converted nodes: half outputs, Cast targets; graph outputs keep (or change) their dtype
    out_half_names: set[str] = set()
    for k in plan.half_nodes:
        n = graph.node[k]
        for i, x in enumerate(n.output):
            if x and plan.out_half.get((k, i), False):
                out_half_names.add(x)
        if n.op_type == "Cast" and plan.out_half.get((k, 0), False):
            for a in n.attribute:
                if a.name == "to":
                    a.i = half
        if n.op_type == "ConstantOfShape" and plan.out_half.get((k, 0), False):
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(half_tensor(numpy_helper.to_array(a.t), half, a.t.name))
            if not any(a.name == "value" for a in n.attribute):  # the default is a float32 zero
                n.attribute.append(helper.make_attribute("value", half_tensor(np.zeros(1, np.float32), half, "value")))
    for o in graph.output:
        if types.get(o.name) != FLOAT:
            continue
        p = producer.get(o.name)
        is_half = o.name in out_half_names
        want_half = not cfg.keep_io_types
        if is_half != want_half and p is not None:
            inner = fresh(f"{o.name}_{suffix if is_half else 'fp32'}")
            node = graph.node[p[0]]
            node.output[p[1]] = inner
            for m in [*graph.node, *(c for _, c in new_nodes)]:  # other readers read the producer's tensor
                for j, y in enumerate(m.input):
                    if y == o.name:
                        m.input[j] = inner
            cast(inner, half if want_half else FLOAT, o.name, p[0] + 1)
        if want_half and (p is not None or (o.name in graph_inputs and o.name not in subgraph_readers)):
            o.type.tensor_type.elem_type = half
    if not cfg.keep_io_types:
        for i in graph.input:
            if i.name in graph_inputs and types.get(i.name) == FLOAT and i.name not in subgraph_readers:
                i.type.tensor_type.elem_type = half

    # value_info: drop float types that changed (onnxruntime re-infers them)
    keep_vi = [v for v in graph.value_info if types.get(v.name) != FLOAT]
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)

    # splice the Casts in: each right after its source's producer (or at the start)
    by_pos: dict[int, list[onnx.NodeProto]] = {}
    for where, node in new_nodes:
        by_pos.setdefault(where, []).append(node)
    # a Cast placed at k + 1 reads the output of node k: emit it right after node k
    final: list[onnx.NodeProto] = list(by_pos.get(-1, []))
    for k, n in enumerate(graph.node):
        final.append(n)
        final.extend(by_pos.get(k + 1, []))
    del graph.node[:]
    graph.node.extend(final)
    return casts, weights_half, weights_float


def fold_cast_chains(graph: onnx.GraphProto, types: Mapping[str, int | None] | None = None) -> int:
    """Remove redundant Casts exactly: Cast(A->B) then Cast(B->C) reads A directly when A->B loses nothing (and is
    dropped when C is A); a Cast to its input's own type is dropped. Returns how many Casts went. Graph outputs keep
    their names."""
    elem: dict[str, int] = {}
    for v in list(graph.input) + list(graph.value_info) + list(graph.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
            elem[v.name] = v.type.tensor_type.elem_type
    for t in graph.initializer:
        elem[t.name] = t.data_type
    if types:
        for k, v in types.items():
            elem.setdefault(k, v)  # type: ignore[arg-type]
    producer: dict[str, onnx.NodeProto] = {}
    for n in graph.node:
        if n.op_type == "Cast":
            to = next((a.i for a in n.attribute if a.name == "to"), None)
            if to is not None:
                elem[n.output[0]] = to
        for x in n.output:
            if x:
                producer[x] = n
    outputs = {o.name for o in graph.output}
    removed = 0
    changed = True
    while changed:
        changed = False
        replace: dict[str, str] = {}
        for n in graph.node:
            if n.op_type != "Cast" or n.domain not in ("", "ai.onnx"):
                continue
            to = next((a.i for a in n.attribute if a.name == "to"), None)
            src = n.input[0]
            a = elem.get(src)
            if to is not None and a == to and n.output[0] not in outputs:
                replace[n.output[0]] = src  # a no-op Cast
                continue
            p = producer.get(src)
            if p is None or p.op_type != "Cast" or p.domain not in ("", "ai.onnx"):
                continue
            t0 = elem.get(p.input[0])
            t1 = next((x.i for x in p.attribute if x.name == "to"), None)
            if t0 is None or t1 is None or to is None or t1 not in LOSSLESS.get(t0, set()):
                continue
            if t0 == to and n.output[0] not in outputs:
                replace[n.output[0]] = p.input[0]
            else:
                n.input[0] = p.input[0]
                changed = True
        if replace:
            changed = True

            for n in graph.node:
                for i, x in enumerate(n.input):
                    while x in replace:
                        x = replace[x]
                    n.input[i] = x
        # drop Casts nobody reads
        read = {x for n in graph.node for x in n.input} | outputs
        read |= set().union(*(_subgraph_reads(n) for n in graph.node))
        keep = [n for n in graph.node if not (n.op_type == "Cast" and n.output[0] not in read)]
        if len(keep) != len(graph.node):
            removed += len(graph.node) - len(keep)
            del graph.node[:]
            graph.node.extend(keep)
            producer = {x: n for n in graph.node for x in n.output if x}
            changed = True
    return removed


# --------------------------------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------------------------------
def _float_types(model: Model) -> dict[str, int | None]:
    types: dict[str, int | None] = {}
    for n in model.graph:
        for v in list(n.inputs) + list(n.outputs):
            if v is not None:
                types[v.name] = v.dtype
    for v in list(model.graph.inputs) + list(model.graph.outputs):
        types[v.name] = v.dtype
    return types


def _elem_types(proto: onnx.ModelProto) -> dict[str, int]:
    """The element types of ``proto``'s main-graph tensors (onnx's shape inference; a converted model's value_info
    lacks the ones that changed)."""
    try:
        g = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # noqa: BLE001 - the tensors it cannot type keep the float model's
        g = proto.graph
    out = {t.name: t.data_type for t in g.initializer}
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            out[vi.name] = vi.type.tensor_type.elem_type
    return out


def _cast_feed(feed: Mapping[str, np.ndarray], proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    want = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
    out = {}
    for k, v in feed.items():
        if want.get(k) == TensorProto.FLOAT16:
            v = np.asarray(v).astype(np.float16)
        elif want.get(k) == TensorProto.BFLOAT16:
            v = to_half_array(v, TensorProto.BFLOAT16)
        out[k] = v
    return out


def check_names(model: Model, config: PrecisionConfig, *, before: Collection[str] | None = None) -> None:
    """One GraphoptError for every ``block_nodes`` name (``--precision-keep``) that is no main-graph node's: a misspelt
    name would quietly convert the node meant to stay fp32 (``tools.names.check_node_names``), and a node inside an
    If/Loop/Scan body computes in fp32 already (bodies are not converted), so naming one changes nothing."""
    model.graph.name_unnamed_nodes()
    main = model.graph
    option = NameOption(
        "--precision-keep",
        list(config.block_nodes),
        nodes=lambda n: n.graph is main,
        outside=main_graph_only(
            "half precision never converts If/Loop/Scan bodies (they compute in fp32 already), so this changes nothing"
        ),
    )
    check_node_names(model, [option], before=before)


def convert_precision(
    model: Model,
    feeds: Iterable[Mapping[str, np.ndarray]] | None = None,
    target: str = "ort",
    config: PrecisionConfig | Mapping[str, Any] | str | None = None,
    *,
    sources: Sequence[str] | None = None,
) -> PrecisionReport:
    """Convert ``model`` in place to fp16 or bf16 (``config.precision``) for ``target``; returns the report.

    ``feeds``: calibration feed dicts for the overflow check and the error measurement (None: 4 random valid
    samples, with a warning)."""
    from graphopt.quantize import calibration as calib
    from graphopt.quantize.driver import KEPT_FLOAT_AFTER, _measured_for, _measured_run, output_error
    from graphopt.tools import runtime
    from graphopt.tools.summary import initializer_bytes

    cfg = PrecisionConfig.of(config)
    if cfg.precision not in HALF_TYPES:
        raise GraphoptError(f"unknown precision {cfg.precision!r} (choose from {', '.join(HALF_TYPES)})")
    if cfg.kernels not in ("auto", "all"):
        raise GraphoptError(f"kernels must be 'auto' or 'all', got {cfg.kernels!r}")
    if not cfg.range_limit > 0:
        raise GraphoptError(f"range limit must be positive, got {cfg.range_limit}")
    if not model.graph.outputs:
        raise GraphoptError("nothing to convert: the model has no outputs")
    check_names(model, cfg)
    notes: list[str] = []
    random_data = feeds is None
    if feeds is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batches = calib.random_feeds(model, 4)
        notes.append(
            "no calibration data: the overflow check ran on 4 random valid inputs, which may miss the ranges of real "
            "data (give --calib-data)"
        )
    else:
        batches = [dict(f) for f in feeds]
        if not batches:
            raise GraphoptError("no calibration data: the calibration set is empty")
        for i, feed in enumerate(batches):
            calib.check_feed(model, feed, calib.sample_name(sources, i))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model.graph.name_unnamed_nodes()
    infer_shapes(model)
    types = _float_types(model)
    base = model.to_onnx()
    at = _measured_for(model)  # before a selection op (TopK, NonMaxSuppression...): its outputs jump on a near-tie
    report = PrecisionReport(
        precision=cfg.precision,
        target=target,
        kernels=cfg.kernels,
        keep_io_types=cfg.keep_io_types,
        batches=len(batches),
        random_data=random_data,
        param_bytes_before=initializer_bytes(model),
    )
    proto = onnx.ModelProto()
    proto.CopyFrom(base)
    _lift_constants(proto.graph)
    for t in proto.graph.initializer:
        types[t.name] = t.data_type
    opsets = {o.domain or "": o.version for o in proto.opset_import}
    timings["types"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    inits = {t.name for t in proto.graph.initializer}
    measured = [x for x, t in types.items() if t in (FLOAT, None) and x and x not in inits]
    typed = frozenset(x for x in measured if types.get(x) == FLOAT)
    ranges, seen = _measure_ranges(base, measured, batches, cfg.threads, typed)
    for x, t in seen.items():
        if types.get(x) is None and t:
            types[x] = t
    timings["ranges"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    candidates, the_plan = _plan(proto.graph, types, ranges, cfg, target, opsets)
    report.float_nodes = len(candidates)
    report.casts_added, report.weights_half, report.weights_float = _rewrite(
        proto, types, the_plan, cfg, set(the_plan.bad_const)
    )
    report.casts_removed = fold_cast_chains(proto.graph)
    report.converted = len(the_plan.half_nodes)
    report.kept = [
        KeptNode(proto_node_name(base.graph.node[k], k), base.graph.node[k].op_type, why)
        for k, why in sorted(the_plan.kept.items())
    ]
    try:
        if _passes_checker(base):  # the checker judges the result only if it accepts the model given
            onnx.checker.check_model(proto)
        converted = from_proto(proto)
    except Exception as exc:  # noqa: BLE001 - a bug here must not write a broken model
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GraphoptError(f"the {cfg.precision} conversion produced an invalid model: {first}") from None
    timings["convert"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref_sess = runtime.session(base, threads=cfg.threads)
    try:
        new_sess = runtime.session(proto, threads=cfg.threads)
    except GraphoptError as exc:
        new_sess = None
        notes.append(f"onnxruntime (CPU) cannot run the {cfg.precision} model: {exc}")
    if at is not None:  # the float model's values there (its outputs when the fp16 model's run fails below)
        ref = _measured_run(base, batches, at, cfg.threads, sources)
    else:
        ref = [runtime.run(ref_sess, None, f, f"calibration sample #{i}") for i, f in enumerate(batches)]
    if new_sess is not None:
        got = None
        if at is not None:
            half_feeds = [_cast_feed(f, proto) for f in batches]
            try:  # declared with the fp16 model's own element types (float16 where the selection reads half)
                got = _measured_run(proto, half_feeds, at, cfg.threads, sources, _elem_types(proto))
                report.measured_at = at.what.replace(KEPT_FLOAT_AFTER, "")  # the selected part is converted too
            except GraphoptError as exc:
                notes.append(f"the output error is measured at the outputs: the {cfg.precision} model's tensors "
                             f"before the selection could not be read ({str(exc).splitlines()[0]})")  # fmt: skip
                ref = [runtime.run(ref_sess, None, f, f"calibration sample #{i}") for i, f in enumerate(batches)]
        if got is None:
            got = [runtime.run(new_sess, None, _cast_feed(f, proto), f"calibration sample #{i}")
                   for i, f in enumerate(batches)]  # fmt: skip
        got = [[np.asarray(v, dtype=np.float32) if np.asarray(v).dtype.kind == "f" else v for v in values]
               for values in got]  # fmt: skip
        report.error_rel, report.error_max_abs = output_error(ref, got)
        report.cosine_min = _cosine_min(ref, got)
        if not math.isfinite(report.error_rel):
            notes.append(f"the {cfg.precision} model's outputs are not finite on the calibration data")
        if cfg.latency_runs > 0:
            feed = batches[0]
            a, b = runtime.measure_latency([ref_sess, _Feeding(new_sess, proto)], feed, warmup=3, runs=cfg.latency_runs)
            report.latency_ms = (a.median_ms, b.median_ms)
            if b.median_ms > 1.5 * a.median_ms:
                notes.append(
                    f"the {cfg.precision} model runs {b.median_ms / a.median_ms:.1f}x slower than fp32 under "
                    "onnxruntime CPU (Casts or missing half kernels)"
                )
    timings["measure"] = time.perf_counter() - t0
    if target == "tensorrt":
        from graphopt.quantize.qdq_rules import check_tensorrt

        report.tensorrt_violations = [str(v) for v in check_tensorrt(converted)]
        if report.tensorrt_violations:
            notes.append(f"TensorRT rule checker: {len(report.tensorrt_violations)} violations, first: "
                         f"{report.tensorrt_violations[0]}")  # fmt: skip
    model.take_contents(converted)
    report.param_bytes_after = initializer_bytes(model)
    report.seconds = timings
    for note in notes:
        logger.warning("%s", note)
    report.warnings = notes
    return report


def _passes_checker(proto: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(proto)
    except Exception:  # noqa: BLE001 - any rejection
        return False
    return True


class _Feeding:
    """A session that casts fp32 feeds to its own input dtypes (a model whose inputs were converted)."""

    def __init__(self, sess: Any, proto: onnx.ModelProto) -> None:
        self.sess, self.proto = sess, proto

    def run(self, names: Any, feed: Mapping[str, np.ndarray]) -> Any:
        return self.sess.run(names, _cast_feed(feed, self.proto))


def proto_node_name(n: onnx.NodeProto, k: int) -> str:
    return n.name or f"{n.op_type}#{k}"


def _cosine_min(ref: Sequence[Sequence[Any]], got: Sequence[Sequence[Any]]) -> float:
    worst = 1.0
    for rb, gb in zip(ref, got, strict=True):
        for a, b in zip(rb, gb, strict=True):
            a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
            if a.dtype.kind != "f" or not a.size:
                continue
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            if na == 0 and nb == 0:
                continue
            c = float(a @ b / (na * nb)) if na and nb else 0.0
            worst = min(worst, c if math.isfinite(c) else -1.0)
    return worst
