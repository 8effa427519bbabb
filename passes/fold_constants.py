"""fold-constants: compute, once and offline, what a model would compute from constants on every run.

What folds:

* a node of a standard domain whose inputs are all constants (initializers, Constant nodes, or values folded earlier
  in the same run), evaluated by onnxruntime with its graph optimizations off, so the folded numbers are the ones the
  runtime would have produced; ops onnxruntime cannot run fall back to the onnx reference evaluator;
* shape arithmetic on dynamic models: ``Shape``/``Size`` of a value whose dims are static, and ``Gather``/``Slice`` of
  a ``Shape`` that pick only static dims. Symbolic dims stay symbolic;
* ``If`` with a constant condition: the taken branch is inlined;
* ``Constant`` nodes become initializers.

What does not: random ops, Quantize/DequantizeLinear (their pattern is the quantized model's contract), ops of unknown
domains, nodes with subgraphs, nodes in function bodies that refer to the function's attributes, and any value whose
folded tensor would be larger than the constants it comes from (``size_cap``): folding ``Tile``, ``Expand`` or
``ConstantOfShape`` would otherwise bloat the file. On top of the per-tensor cap, the bytes a run adds (new constants
minus the constants it frees) stay under ``max_growth`` of the graph's constant bytes.

Small against the model, a tensor over the per-tensor cap still folds (a detector's anchor grid: an Expand/Tile/Concat
chain of a few KB of coordinates that would otherwise be recomputed on every run): the bytes all such tensors add over
the pass's runs on one model stay within ``max_growth`` of the graph's constant bytes, and within three quarters of
the bytes the model has shed since the pass first saw it (its constants plus an estimate of its node records: names,
doc strings, metadata; the estimate is within a few percent of the file), so they never make the file written larger
than the one read. That headroom comes from the other passes (dce, cse, strip-debug-info...), so in ``-O2`` such
tensors fold on a later run of the fixed point.

All constant nodes of one graph are evaluated in a single onnxruntime session: one model holding the foldable
subgraph, with every value it computes as an output.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx

from graphopt.core.ir import ONNX_DOMAINS, RANDOM_OPS, Graph, Model, Node, Value
from graphopt.core.shape_inference import INLINE_BYTES, declare_output, declared_output, infer_shapes
from graphopt.core.tensors import PLAIN_RAW_TYPES, Tensor, elem_type_of
from graphopt.engine.passes_api import Option, Pass, PassContext, register_pass

from . import numpy_eval
from .dims import dims_of

logger = logging.getLogger("graphopt")

STANDARD_DOMAINS = ONNX_DOMAINS  # ops the ONNX standard defines (onnxruntime evaluates them)
NEVER_FOLD = RANDOM_OPS | frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        # sequences and optionals are not tensors; the IR keeps constants as tensors only
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceInsert",
        "SequenceErase",
        "SplitToSequence",
        "Optional",
        "OptionalGetElement",
        "OptionalHasElement",
    }
)
SMALL_BYTES = numpy_eval.SMALL_BYTES  # 256
"""A folded tensor this small (a shape, an axis list, a scalar) is always worth it: it replaces at least one node."""


def _is_standard(node: Node) -> bool:
    return node.domain in STANDARD_DOMAINS


def _foldable_op(node: Node) -> bool:
    if not _is_standard(node) or node.op_type in NEVER_FOLD or node.op_type == "Constant":
        return False
    return all(not a.ref_attr_name and a.type not in _GRAPH_TYPES for a in node.attrs.values())


_GRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


# --------------------------------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------------------------------
def _fold_shapes(graph: Graph, ctx: PassContext) -> dict[Value, np.ndarray]:
    """Values computable from static dims alone: Shape, Size, and Gather/Slice of a partly static Shape."""
    known: dict[Value, np.ndarray] = {}
    opset = ctx.opset("") or 1
    for node in graph:
        if not _is_standard(node) or node.op_type not in ("Shape", "Size", "Gather", "Slice"):
            continue
        out = node.outputs[0]
        if out is None:
            continue
        if node.op_type == "Size":
            x = node.inputs[0]
            if x is not None and x.shape is not None and all(isinstance(d, int) for d in x.shape):
                known[out] = np.array(int(np.prod(x.shape, dtype=np.int64)), dtype=np.int64)
            continue
        found = dims_of(out, opset)
        if found is None:
            continue
        y, positions, shape = found
        dims = [y.shape[i] for i in positions]  # type: ignore[index]
        if all(isinstance(d, int) for d in dims):
            known[out] = np.array(dims, dtype=np.int64).reshape(shape)
    return known


# --------------------------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------------------------
def _const_value(v: Value) -> Tensor | None:
    return v.constant()


def _cone(graph: Graph, known: dict[Value, np.ndarray]) -> list[Node]:
    """Nodes (in order) whose every input is constant, directly or through earlier nodes of the cone."""
    computable: set[Value] = set(known)
    cone: list[Node] = []
    for node in graph:
        if not _foldable_op(node):
            continue
        if any(out is not None and out in known for out in node.outputs):
            continue  # shape arithmetic already knows it
        if all(v is None or v in computable or _const_value(v) is not None for v in node.inputs):
            cone.append(node)
            computable.update(out for out in node.outputs if out is not None)
    return cone


FEED_BYTES = 1 << 20
"""Leaf constants larger than this are fed to the evaluation session as inputs (numpy views, no protobuf copy)."""
_FEEDABLE = PLAIN_RAW_TYPES  # numeric types whose bytes numpy reads as they are


def _eval_model(
    cone: list[Node], known: dict[Value, np.ndarray], ctx: PassContext, inline_bytes: int = FEED_BYTES
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The cone as a model, and the feeds to run it with. Leaf constants up to ``inline_bytes`` are initializers;
    larger ones (of the types numpy and onnxruntime share) are typed graph inputs, fed as numpy arrays, so that
    weights are not copied into a protobuf, serialized and parsed again. Below ``FEED_BYTES`` (shape inference), every
    larger leaf is a typed input and nothing is fed."""
    from graphopt.core.onnx_io import Exporter  # node protos without a whole model

    exporter = Exporter()
    gp = onnx.GraphProto(name="fold")
    produced = {out for n in cone for out in n.outputs if out is not None}
    leaves: dict[str, onnx.TensorProto | None] = {}
    feeds: dict[str, np.ndarray] = {}
    for node in cone:
        exporter.node(node, gp.node.add())
        for v in node.inputs:
            if v is None or v in produced or v.name in leaves:
                continue
            if v in known:
                leaves[v.name] = onnx.numpy_helper.from_array(known[v], v.name)
                continue
            t = _const_value(v)
            assert t is not None
            if t.nbytes > inline_bytes and (t.dtype in _FEEDABLE or inline_bytes < FEED_BYTES):
                info = gp.input.add(name=v.name)
                info.type.tensor_type.elem_type = t.dtype
                info.type.tensor_type.shape.SetInParent()
                for d in t.dims:
                    info.type.tensor_type.shape.dim.add().dim_value = d
                leaves[v.name] = None
                if inline_bytes >= FEED_BYTES:
                    feeds[v.name or ""] = t.numpy()
            else:
                leaves[v.name] = t.to_proto(v.name)
    gp.initializer.extend(t for t in leaves.values() if t is not None)
    for v in produced:
        gp.output.add().name = v.name
    opsets = [onnx.helper.make_opsetid(d, ver) for d, ver in ctx.model.opset_imports.items()]
    model = onnx.helper.make_model(gp, opset_imports=opsets, ir_version=max(ctx.model.ir_version, 4))
    return model, feeds


def _run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from graphopt.tools.runtime import quiet_onnxruntime

    ort = quiet_onnxruntime()  # its default logger too: no [E:onnxruntime...] lines when a fold is declined

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = sess.get_outputs()
    names = [o.name for o in outs]
    results = dict(zip(names, sess.run(names, feeds), strict=True))
    # onnxruntime hands some element types back as another numpy type (float8 as uint8): keep only arrays whose type
    # is the one the session declares, so a result is right even where shape inference gave the value no type.
    return {o.name: results[o.name] for o in outs if _same_type(results[o.name], o.type)}


_ORT_TYPE_NAMES = {f"tensor({name.lower()})": value for name, value in onnx.TensorProto.DataType.items()}


def _same_type(array: Any, declared: str) -> bool:
    if not isinstance(array, np.ndarray):
        return False
    try:
        return elem_type_of(array.dtype) == _ORT_TYPE_NAMES.get(declared)
    except (KeyError, TypeError, ValueError):
        return False


def _run_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    names = [o.name for o in model.graph.output]
    results = ReferenceEvaluator(model).run(names, feeds)
    return dict(zip(names, results, strict=True))


class _Limits:
    """The most bytes each cone value may take, known before anything is evaluated: what the size guard accepts for
    it (``SMALL_BYTES``, or ``cap`` times the bytes of the constants it is computed from) or for a cone value computed
    from it, whichever is more (a Tile that an Add with a big weight reads may be as big as that Add's result)."""

    def __init__(self, cone: list[Node], known: dict[Value, np.ndarray], cap: float, allowance: int = 0) -> None:
        self._args = (cone, known, cap)
        self.allowance = allowance  # bytes a value over the cap may take (see _Plan.choose)
        self.limit: dict[Value, int] = {}

    def _compute(self) -> None:
        cone, known, cap = self._args
        sources: dict[Value, frozenset[Value]] = {}
        for node in cone:
            src: set[Value] = set()
            for v in node.inputs:
                if v is None or v in known:
                    continue
                src |= sources.get(v, {v})
            frozen = frozenset(src)
            for out in node.outputs:
                if out is not None:
                    sources[out] = frozen
        cache: dict[frozenset[Value], int] = {}

        def own(v: Value) -> int:
            total = cache.get(sources[v])
            if total is None:
                total = sum(t.nbytes for t in map(_const_value, sources[v]) if t is not None)
                cache[sources[v]] = total
            return max(SMALL_BYTES, int(cap * total), self.allowance)

        in_cone = set(cone)
        for node in reversed(cone):
            for out in node.outputs:
                if out is None:
                    continue
                readers = [u.outputs for u, _ in out.uses if u in in_cone]
                self.limit[out] = max([own(out), *(self.limit.get(o, 0) for outs in readers for o in outs if o)])

    def node(self, node: Node) -> int:
        if not self.limit:
            self._compute()  # on first use: most cones are small shape arithmetic that never asks
        return min(self.limit[v] for v in node.outputs if v is not None)


_SHRINKING = frozenset({"NonZero", "Compress", "Unique", "TopK"})
"""Ops whose output size inference cannot tell but that never exceed their input (NonZero: rank int64s an element)."""


def _bounded(cone: list[Node], leaves: dict[Value, np.ndarray], limits: _Limits, ctx: PassContext) -> list[Node]:
    """The nodes of ``cone`` whose outputs provably fit the size guard, from shapes ONNX inference gives before any
    evaluation (leaf constants are passed by type only, small ones and already computed values with their data); a
    node whose output size stays unknown, or that reads one that was dropped, is dropped."""
    from graphopt.core.shape_inference import infer_proto

    model, _ = _eval_model(cone, leaves, ctx, inline_bytes=INLINE_BYTES)
    inferred = infer_proto(model, deep=False)  # foldable nodes have no subgraphs
    types = {vi.name: vi.type for vi in inferred.value_info} if inferred is not None else {}
    types.update((vi.name, vi.type) for vi in (inferred.output if inferred is not None else []))
    kept: list[Node] = []
    dropped: set[Value] = set()
    for node in cone:
        if any(v is not None and v in dropped for v in node.inputs) or not _fits_before(node, types, limits):
            dropped.update(out for out in node.outputs if out is not None)
            continue
        kept.append(node)
    return kept


def _fits_before(node: Node, types: dict[str, onnx.TypeProto], limits: _Limits) -> bool:
    limit = limits.node(node)
    if node.op_type in _SHRINKING:
        x = node.inputs[0] if node.inputs else None
        tp = types.get(x.name or "") if x is not None else None
        t = x.constant() if x is not None else None
        dims = list(t.dims) if t is not None else _static_dims(tp)
        if dims is None:
            return False
        return math.prod(dims) * max(len(dims), 1) * 8 <= limit
    for out in node.outputs:
        if out is None:
            continue
        tp = types.get(out.name or "")
        dims = _static_dims(tp)
        if dims is None or tp is None:
            return False
        itemsize = _ITEMSIZE.get(tp.tensor_type.elem_type, 8)
        if math.prod(dims) * itemsize > limit:
            return False
    return True


def _static_dims(tp: onnx.TypeProto | None) -> list[int] | None:
    if tp is None or tp.WhichOneof("value") != "tensor_type" or not tp.tensor_type.HasField("shape"):
        return None
    dims = tp.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return [d.dim_value for d in dims]


_ITEMSIZE = {
    onnx.TensorProto.BOOL: 1,
    onnx.TensorProto.INT8: 1,
    onnx.TensorProto.UINT8: 1,
    onnx.TensorProto.FLOAT16: 2,
    onnx.TensorProto.BFLOAT16: 2,
    onnx.TensorProto.INT16: 2,
    onnx.TensorProto.UINT16: 2,
    onnx.TensorProto.FLOAT: 4,
    onnx.TensorProto.INT32: 4,
    onnx.TensorProto.UINT32: 4,
}
"""Bytes per element by ONNX type; 8 for any other (a bound: complex128 and strings excepted, never folded big)."""


def _evaluate(
    cone: list[Node], known: dict[Value, np.ndarray], ctx: PassContext, cap: float = 1.0, allowance: int = 0
) -> dict[Value, np.ndarray]:
    """Values of the cone's outputs, never computing one the size guard would reject: integer and data-movement nodes
    in numpy (each output's size known before it is computed), the rest in one onnxruntime session once ONNX shape
    inference has proved their sizes; node by node when that fails."""
    if not cone:
        return {}
    limits = _Limits(cone, known, cap, allowance)
    exact = numpy_eval.evaluate_partial(cone, known, limits.node)
    rest = [n for n in cone if any(out is not None and out not in exact for out in n.outputs)]
    if not rest:  # small integer / data-movement arithmetic: no onnxruntime session needed
        return _collect(cone, {v.name: a for v, a in exact.items() if v.name})
    leaves = {**known, **exact}
    rest = _bounded(rest, leaves, limits, ctx)
    values: dict[Value, np.ndarray] = {**_collect(cone, {v.name: a for v, a in exact.items() if v.name})}
    if not rest:
        return values
    try:
        values.update(_collect(rest, _run_ort(*_eval_model(rest, leaves, ctx))))
        return values
    except Exception as exc:  # noqa: BLE001 - a failing batch is retried node by node below
        logger.debug("fold-constants: batch evaluation failed (%s); evaluating node by node", exc)
    values = {**leaves}
    for node in rest:
        if any(v is not None and v not in values and _const_value(v) is None for v in node.inputs):
            continue  # an input failed to evaluate
        model, feeds = _eval_model([node], values, ctx)
        by_name: dict[str, np.ndarray] | None = None
        for runner in (_run_ort, _run_reference):
            try:
                by_name = runner(model, feeds)
                break
            except Exception as exc:  # noqa: BLE001 - the node is left alone
                logger.debug("fold-constants: cannot evaluate %s with %s: %s", node, runner.__name__, exc)
        if by_name is not None:
            values.update(_collect([node], by_name))
    return {v: a for v, a in values.items() if v not in known}


def _collect(cone: list[Node], by_name: dict[str, np.ndarray]) -> dict[Value, np.ndarray]:
    """The evaluated arrays that can become tensors of the value's own element type."""
    out: dict[Value, np.ndarray] = {}
    for node in cone:
        for v in node.outputs:
            array = by_name.get(v.name) if v is not None else None
            if v is None or not isinstance(array, np.ndarray) or array.dtype.kind not in "biufc":
                continue
            try:
                elem = elem_type_of(array.dtype)
            except (KeyError, TypeError, ValueError):
                continue
            if v.dtype is not None and v.dtype != elem:
                continue  # e.g. bfloat16 or float8 come back widened: keep the node
            out[v] = array
    return out


# --------------------------------------------------------------------------------------------------------------------
# choosing what to materialise
# --------------------------------------------------------------------------------------------------------------------
class _Plan:
    """Which computed values become constants, under the per-tensor cap and the growth budget."""

    def __init__(self, graph: Graph, cone: list[Node], values: dict[Value, np.ndarray]) -> None:
        self.graph = graph
        self.values = values
        self.cone = [n for n in cone if all(o is None or o in values for o in n.outputs)]
        self.in_cone = set(self.cone)
        self.outputs = set(graph.outputs)
        # bytes of the leaf constants each value is computed from (counted once per leaf)
        self.sources: dict[Value, set[Value]] = {}
        for node in self.cone:
            src: set[Value] = set()
            for v in node.inputs:
                if v is None:
                    continue
                src |= self.sources.get(v, set()) if v in values else {v}
            for out in node.outputs:
                if out is not None:
                    self.sources[out] = src

    def _source_bytes(self, v: Value) -> int:
        total = 0
        for s in self.sources[v]:
            t = _const_value(s)
            total += t.nbytes if t is not None else 0
        return total

    def fits(self, v: Value, cap: float) -> bool:
        nbytes = self.values[v].nbytes
        return nbytes <= SMALL_BYTES or nbytes <= cap * self._source_bytes(v)

    def frontier(self, kept: set[Node]) -> list[Value]:
        """Computed values read by a node that stays (outside the cone, or kept) or by the graph's outputs."""
        folded = self.in_cone - kept
        need: dict[Value, None] = {}
        for node in self.cone:
            if node not in folded:
                continue
            for v in node.outputs:
                if v is None:
                    continue
                if v in self.outputs or any(u not in folded for u, _ in v.uses):
                    need[v] = None
        return list(need)

    def growth(self, kept: set[Node], frontier: list[Value]) -> int:
        folded = self.in_cone - kept
        added = sum(self.values[v].nbytes for v in frontier)
        freed = 0
        leaves = {s for v in frontier for s in self.sources[v]}
        for leaf in leaves:
            t = _const_value(leaf)
            if t is None or leaf.producer is not None and leaf.producer.op_type == "Constant":
                continue
            owned = self.graph.initializers.get(leaf.name or "") is leaf and leaf not in self.outputs
            if owned and all(u in folded for u, _ in leaf.uses):
                freed += t.nbytes
        return added - freed

    def choose(self, cap: float, budget: int, allowance: int = 0) -> tuple[set[Node], list[Value], int]:
        """The nodes kept, the values materialised, and the bytes of those over the per-tensor cap: tensors over the
        cap fold, in frontier order, while their bytes together fit ``allowance``; when the run's growth exceeds the
        budget they are the first to go back (largest first), then the largest others."""
        kept: set[Node] = set()
        allowed: set[Value] = set()
        refused: set[Value] = set()
        waived = 0
        while True:
            frontier = self.frontier(kept)
            too_big = []
            for v in frontier:
                if v in allowed or self.fits(v, cap):
                    continue
                nbytes = self.values[v].nbytes
                if v not in refused and waived + nbytes <= allowance:
                    allowed.add(v)
                    waived += nbytes
                    continue
                too_big.append(v)
            if not too_big and self.growth(kept, frontier) > budget:
                # drop the tensors over the cap first, then the largest others, until the run fits the budget
                over = [v for v in frontier if v in allowed]
                large = over or [v for v in frontier if self.values[v].nbytes > SMALL_BYTES]
                if not large:
                    return kept, frontier, sum(self.values[v].nbytes for v in frontier if v in allowed)
                drop = max(large, key=lambda v: self.values[v].nbytes)
                if drop in allowed:
                    allowed.discard(drop)
                    refused.add(drop)
                    waived -= self.values[drop].nbytes
                too_big = [drop]
            if not too_big:
                return kept, frontier, sum(self.values[v].nbytes for v in frontier if v in allowed)
            for v in too_big:
                assert v is not None
                producer = v.producer
                assert producer is not None
                kept.add(producer)


# --------------------------------------------------------------------------------------------------------------------
# rewriting
# --------------------------------------------------------------------------------------------------------------------
def _materialise(graph: Graph, v: Value, array: np.ndarray) -> Value:
    base = v.name or "folded"
    # a result of this run, or a view of a constant (numpy data movement, say a Transpose of a mapped weight): adopted
    # when contiguous, else copied in C order; a large one goes to the spill file in blocks, never copied whole
    tensor = Tensor.from_numpy(array, copy=False)
    const = graph.make_constant(tensor, name=f"{base}_folded" if not base.endswith("_folded") else base)
    graph.replace_all_uses_with(v, const)
    return const


def _forget_stale_shapes(consts: list[Value]) -> None:
    """Untype the values downstream of new constants whose inferred shapes are not static, so that the next run's
    shape inference types them again: a constant where a computed value was (a Resize's sizes, a Reshape's shape)
    can make their shapes static, and ``infer_shapes`` only types untyped values. Values with static shapes stay
    typed and end the walk (what they feed cannot change through them); untyped ones do not."""
    seen: set[Value] = set()
    stack = list(consts)
    while stack:
        for node, _ in stack.pop().uses:
            for out in node.outputs:
                if out is None or out in seen:
                    continue
                seen.add(out)
                if out.has_type and out.shape is not None and all(isinstance(d, int) for d in out.shape):
                    continue
                out.set_type_proto(None)
                stack.append(out)


def _remove_dead(graph: Graph, nodes: Iterable[Node]) -> int:
    removed = 0
    outputs = set(graph.outputs)
    for node in reversed(list(nodes)):
        if node.graph is not graph:
            continue
        if any(o is not None and (o.uses or o in outputs) for o in node.outputs):
            continue
        graph.remove(node)
        removed += 1
    return removed


def _constants_to_initializers(graph: Graph) -> bool:
    """Constant nodes become initializers named as their output (those folding left unread go).

    Not a pattern rule: it is the last step of the evaluation (after folding, which reads Constant nodes as constants),
    and the initializer keeps the Constant output's own name, where a rule's ``b.const`` names a new constant."""
    changed = False
    for node in graph:
        if node.op_type != "Constant" or not _is_standard(node):
            continue
        out = node.outputs[0]
        if out is None:
            continue
        if not out.uses and not graph.is_output(out):
            graph.remove(node)  # read only by nodes folded away: no initializer to make
            changed = True
            continue
        tensor = _constant_attr_tensor(node)
        if tensor is None:
            continue
        if graph.is_output(out):
            continue  # an initializer as a graph output would need an Identity: no gain
        const = graph.make_constant(tensor, name=out.name or "const")
        graph.replace_all_uses_with(out, const)
        graph.remove(node)
        changed = True
    return changed


def _constant_attr_tensor(node: Node) -> Tensor | None:
    if len(node.attrs) != 1:
        return None
    ((key, attr),) = node.attrs.items()
    if attr.ref_attr_name:
        return None
    if key == "value" and isinstance(attr.value, Tensor):
        return attr.value if attr.value.dtype != onnx.TensorProto.STRING else None
    scalars = {
        "value_float": np.float32,
        "value_floats": np.float32,
        "value_int": np.int64,
        "value_ints": np.int64,
    }
    if key in scalars:
        return Tensor.from_numpy(np.array(attr.value, dtype=scalars[key]))
    return None


def _inline_constant_ifs(graph: Graph) -> bool:
    """An If with a constant condition is replaced by the nodes of the branch it takes.

    Not a pattern rule: the replacement moves a subgraph's nodes and initializers into this graph, which a rule's
    builder (new nodes made with ``b.op`` / ``b.copy``) cannot express."""
    changed = False
    for node in graph:
        if node.op_type != "If" or not _is_standard(node) or node.inputs[0] is None:
            continue
        cond = node.inputs[0].constant()
        if cond is None or cond.size != 1:
            continue
        taken = bool(cond.numpy().reshape(-1)[0])
        branch = node.attr("then_branch" if taken else "else_branch")
        if not isinstance(branch, Graph) or branch.inputs or len(branch.outputs) != len(node.outputs):
            continue
        listings = _listings_to_carry(graph, node, branch, node.attr("else_branch" if taken else "then_branch"))
        if listings is None:
            continue
        places = [graph.outputs.index(o) if o is not None and graph.is_output(o) else None for o in node.outputs]
        if branch.initializers or branch.sparse_initializers:
            for name, v in list(branch.initializers.items()):
                del branch.initializers[name]
                v.name = graph.unique_name(name)
                graph.add_initializer(v)
            if branch.sparse_initializers:
                continue
        for inner in list(branch):
            graph.insert_before(node, branch.take(inner))
        for out, result in zip(node.outputs, branch.outputs, strict=True):
            if out is not None:
                graph.replace_all_uses_with(out, result)
        for place, info in zip(places, listings, strict=True):
            if place is not None and info is not None:
                declare_output(graph, graph.outputs[place], info)
        graph.remove(node, safe=False)
        changed = True
    return changed


def _listings_to_carry(graph: Graph, node: Node, branch: Graph, other: Any) -> list[onnx.ValueInfoProto | None] | None:
    """For each output of ``node`` (an If with a constant condition, to be replaced by ``branch``) that is an output of
    ``graph`` (a body; the main graph's outputs are the model's interface) listed with no shape of its own:
    ``branch``'s listing of it, which the If output's type came from (a Loop body's scan output is shaped from it when
    the Loop runs zero times: (0, 2, 3) as the branch declares, (0,) with no shape); None where there is nothing to
    carry. None in all when the branch lists one such output and ``other`` (the branch not taken) does not list it the
    same: onnxruntime typed the If output from both, so the If stays."""
    found: list[onnx.ValueInfoProto | None] = []
    for i, (out, result) in enumerate(zip(node.outputs, branch.outputs, strict=True)):
        info = None
        own = declared_output(graph, out) if out is not None else None
        stated = own.type if own is not None else (out.type_proto if out is not None else None)
        body_output = out is not None and graph.owner is not None and graph.is_output(out)  # the main graph's: kept
        if body_output and not (stated is not None and _states_shape(stated)):
            info = declared_output(branch, result)
            if info is not None:
                same = isinstance(other, Graph) and len(other.outputs) == len(branch.outputs)
                twin = declared_output(other, other.outputs[i]) if same else None
                if twin is None or twin.type != info.type:
                    return None
        found.append(info)
    return found


def _states_shape(tp: onnx.TypeProto) -> bool:
    return tp.HasField("tensor_type") and tp.tensor_type.HasField("shape")


def _graph_bytes(graph: Graph) -> int:
    """An estimate of the bytes a graph takes in its file: its constants' data, and for each node and initializer the
    strings of its record (names, op type, doc string, metadata) plus a few bytes of framing, attributes by size."""
    total = 0
    for name, v in graph.initializers.items():
        total += (v.const.nbytes if v.const is not None else 0) + len(name or "") + 8
    for node in graph:
        total += 8 + len(node.op_type) + len(node.name or "") + len(node.domain or "") + len(node.doc_string or "")
        total += sum(len(v.name or "") + 2 for v in (*node.inputs, *node.outputs) if v is not None)
        total += sum(len(k) + len(str(x)) + 4 for k, x in node.metadata_props.items())
        for key, attr in node.attrs.items():
            total += len(key) + 4 + _attr_bytes(attr.value)
    return total


def _attr_bytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.nbytes + 8
    if isinstance(value, Graph):
        return _graph_bytes(value)
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(_attr_bytes(x) for x in value)
    return 8


def _reads_shapes(model) -> bool:
    return any(n.op_type in ("Shape", "Size") for n in model.graph.all_nodes())


@register_pass(
    "fold-constants",
    description="evaluate constant subgraphs and static shape arithmetic offline, with a size guard",
    options={
        "size_cap": Option(float, 1.0, "largest folded tensor, as a multiple of the bytes of the constants it uses"),
        "max_growth": Option(float, 0.01, "most bytes a run may add, as a fraction of the graph's constant bytes"),
    },
)
class FoldConstants(Pass):
    """Not a pattern rule: evaluation is a whole-graph analysis (the cone of constant values, one onnxruntime session
    for all of it, a byte budget chosen over the whole frontier); its two local steps say why they are not rules."""

    _waived: tuple[Any, int] = (None, 0)
    """(a weak reference to the model, the bytes over the per-tensor cap folded in it so far): across the runs of one
    PassManager pipeline, the same pass object sees the same model."""
    _start: tuple[Any, int] = (None, 0)
    """(a weak reference to the model, its estimated bytes when this pass first ran on it)."""

    def prepare(self, model: Model, ctx: PassContext) -> None:
        if _reads_shapes(model):
            infer_shapes(model)  # only shape arithmetic needs inferred types; evaluated values carry their own
        if self._start[0] is None or self._start[0]() is not model:
            ref = weakref.ref(model)
            self._start, self._waived = (ref, _graph_bytes(model.graph)), (ref, 0)

    def _allowance(self, graph: Graph, ctx: PassContext, budget: int) -> int:
        """Bytes that tensors over the per-tensor cap may add in this run: what is left of the growth budget after the
        earlier runs' such tensors, and no more than three quarters of what the model has shed since this pass first saw
        it, by the estimate of ``_graph_bytes`` (main graph only: a subgraph's constants are not the model's bulk)."""
        if graph is not ctx.model.graph or self._start[0] is None or self._start[0]() is not ctx.model:
            return 0
        shed = self._start[1] - _graph_bytes(graph)
        return max(0, min(budget - self._waived[1], shed * 3 // 4))  # the estimate is within a few % of the file

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        if any(graph.root is f.graph for f in ctx.model.functions.values()):
            return False  # a FunctionProto has no initializers to hold folded tensors
        changed = _inline_constant_ifs(graph)
        known = _fold_shapes(graph, ctx)
        cone = _cone(graph, known)
        total = sum(v.const.nbytes for v in graph.initializers.values() if v.const is not None)
        budget = int(self.options["max_growth"] * total)
        allowance = self._allowance(graph, ctx, budget) if cone else 0
        values = _evaluate(cone, known, ctx, self.options["size_cap"], allowance)
        values.update(known)
        shape_nodes = [v.producer for v in known if v.producer is not None]
        plan = _Plan(graph, cone + shape_nodes, values)
        _, frontier, waived = plan.choose(self.options["size_cap"], budget, allowance)
        if waived:
            self._waived = (self._waived[0], self._waived[1] + waived)
            ctx.count("over-cap-bytes", waived)
        consts = [_materialise(graph, v, values[v]) for v in frontier]
        _forget_stale_shapes(consts)
        removed = _remove_dead(graph, [n for n in graph if n in plan.in_cone])
        changed |= bool(frontier) or removed > 0
        changed |= _constants_to_initializers(graph)
        return changed
