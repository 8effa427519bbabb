"""ort-avoid-fusions: write the graph so that onnxruntime does not replace it with a fused kernel measured slower.

onnxruntime's CPU graph optimizer (level EXTENDED and above, the default) fuses an ``Add`` of two same-shaped 3-D
tensors feeding ``LayerNormalization`` (also a decomposed LayerNormalization, after its own LayerNormFusion) into
com.microsoft ``SkipLayerNormalization``. In onnxruntime 1.32 that CPU kernel is several times slower than the two
ops it replaces (one Add + LayerNormalization of [1,64,384] at one thread: 140.6 us fused, 27.6 us not;
``benchmarks/ort_fusions.py`` measures it). The fusion matches ``Add`` only (skip_layer_norm_fusion.cc: ops of type
"Add", opsets 7/13/14); ``Sum`` of two inputs of the same shape computes the same thing bit for bit and is not
matched, so the Add is written as a Sum and onnxruntime runs what the graph says.

This is an emission step for target ``ort``, not part of any level: :func:`graphopt.api.run_request` runs it last,
after the pipeline and every lossy driver, so no pass of graphopt's sees the Sum again (none rewrites Sum to Add
anyway). Target ``tensorrt`` keeps the Add, and so does ``optimize(..., keep_ort_fusions=True)`` (a before/after
comparison: ``benchmarks/ort_fusions.py``). It rewrites only an Add that onnxruntime's SkipLayerNormFusion would
have taken: float32 or float16 inputs both 3-D of the same shape (each dim the same number or the same
symbol), its only reader a LayerNormalization (at input 0) or the head of a decomposed one (ReduceMean over the last
axis and Sub(x, mean) feeding a Div), and not a graph output. Anything else is left alone.
"""

from __future__ import annotations

import os
import tempfile

import onnx

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Model, Node, Value
from graphopt.core.onnx_io import save
from graphopt.core.shape_inference import infer_shapes
from graphopt.engine.passes_api import ModelPass, PassContext, register_pass

from .readers import axes_of

AS_SUM = "add-as-sum"
"""The counter of Adds written as Sum (the pass table's result column)."""

_FUSED_DTYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
"""Element types whose fused kernel was measured slower than Sum + LayerNormalization on onnxruntime's CPU provider
(float16 runs both through Casts to float: [1,64,384] 136.9 us fused, 29.6 us as Sum; bfloat16 is not taken)."""


@register_pass(
    "ort-avoid-fusions",
    description="target ort: write an Add feeding LayerNormalization as Sum, so onnxruntime does not fuse it into "
    "its slower SkipLayerNormalization kernel (run last by optimize for target ort)",
    context_options=("keep_ort_fusions",),
)
class OrtAvoidFusions(ModelPass):
    """A model pass: which Adds onnxruntime fuses is asked of onnxruntime once for the whole model."""

    def run_model(self, model: Model, ctx: PassContext) -> bool:
        if ctx.target != "ort" or ctx.options.get("keep_ort_fusions") or (ctx.opset("") or 1) < 8:
            return False  # Sum broadcasts like Add from opset 8 on (the inputs here have one shape anyway)
        if not any(n.op_type in ("LayerNormalization", "ReduceMean") for g in model.graphs() for n in g):
            return False
        infer_shapes(model)
        in_functions = {id(g) for f in model.functions.values() for g in (f.graph, *f.graph.subgraphs())}
        found = []
        for g in model.graphs():
            for node in g:
                names = layer_norm_outputs(node, g, ctx)
                if names:
                    found.append((node, g, names))
        if not found:
            return False
        fused = fused_by_onnxruntime(model)
        changed = False
        for node, g, names in found:
            if fused is not None and id(g) not in in_functions:
                take = bool(names & fused)  # onnxruntime said which (function bodies it inlines under new names)
            else:
                take = _same_3d(node.inputs[0].shape, node.inputs[1].shape) and all(  # type: ignore[union-attr]
                    v.dtype in _FUSED_DTYPES for v in node.inputs  # type: ignore[union-attr]
                )  # from the shapes alone, only a known float32/float16 (a Sum kernel onnxruntime's CPU has)
            if take:
                node.op_type = "Sum"
                node.domain = ""
                ctx.count(AS_SUM)
                changed = True
        return changed


ASK_BYTES = 32 << 20
"""Models with at most this many bytes of initializers are shown to onnxruntime (a session that writes the graph it
optimized, in a temporary folder); larger ones are decided from the shapes alone (:func:`_same_3d`). Asking costs
-O2 time in proportion to the weights (about 0.1 s at 21 MB, 0.5 s at 69 MB and 0.7 s at 84 MB: rxnmap-bert's -O2
went 0.78 -> 1.47 s, against the goal of half onnxsim's 3.1 s), while the shape rule's mistakes are cheap: an extra
Sum runs as fast as the Add it replaces (1x128x768 at 1 thread: 24.2 vs 24.1 us), and a missed one is today's speed."""


def fused_by_onnxruntime(model: Model) -> set[str] | None:
    """The outputs of the SkipLayerNormalization nodes onnxruntime builds from ``model`` (CPU, its default level, in
    every subgraph), or None when it was not asked (a large model) or could not say (a model it does not load)."""
    from graphopt.tools import runtime

    total = 0
    for g in model.graphs():
        for v in g.initializers.values():
            total += v.const.nbytes if v.const is not None else 0
    if total > ASK_BYTES:
        return None
    ort = runtime.quiet_onnxruntime()
    try:
        with tempfile.TemporaryDirectory(prefix="graphopt-ort-") as tmp:
            so = ort.SessionOptions()  # its default level (all), as the model will run
            so.log_severity_level = runtime.ORT_LOG_SEVERITY
            so.intra_op_num_threads = 1
            so.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
            # the weights it writes go to a file nobody reads: only the graph is read back
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
            # the graph is written before the kernels are made: no weight needs prepacking for them (gpt2-tiny's
            # session set-up 0.22-0.44 -> 0.16 s, on a busy machine); the graph optimizers are the same
            so.add_session_config_entry("session.disable_prepacking", "1")
            # the model as graphopt saves it (weights copied file to file or written from memory once), not as a
            # ModelProto serialized to bytes: two in-memory copies of every weight (gpt2-tiny: 0.25-0.39 s, the save
            # 0.06 s, on a busy machine)
            given = os.path.join(tmp, "model.onnx")
            save(model, given, external_data=False)
            ort.InferenceSession(given, so, providers=["CPUExecutionProvider"])
            optimized = onnx.load(so.optimized_model_filepath, load_external_data=False)
    except Exception:  # noqa: BLE001 - any failure: decide from the shapes instead
        return None
    names: set[str] = set()
    graphs = [optimized.graph]
    while graphs:
        gp = graphs.pop()
        for n in gp.node:
            if n.op_type == "SkipLayerNormalization" and n.domain == "com.microsoft":
                names.update(o.removeprefix(_CAST_PREFIX) for o in n.output)
            for attr in n.attribute:
                graphs.extend([attr.g] if attr.HasField("g") else [])
                graphs.extend(attr.graphs)
    return names


_CAST_PREFIX = "InsertedPrecisionFreeCast_"
"""onnxruntime runs float16 through float on CPU and renames the values it casts so (the fusion comes after)."""


def layer_norm_outputs(node: Node, graph: Graph, ctx: PassContext) -> set[str]:
    """For an Add onnxruntime's SkipLayerNormFusion may take (two float inputs, read only by a LayerNormalization or
    the head of a decomposed one that its LayerNormFusion builds, not a graph output): the names the fused node's
    output may have (onnxruntime's fused node keeps the LayerNormalization's output). Otherwise empty."""
    if node.op_type != "Add" or node.domain not in STANDARD_DOMAINS:
        return set()
    if len(node.inputs) != 2 or len(node.outputs) != 1 or any(v is None for v in node.inputs):
        return set()
    out = node.outputs[0]
    if out is None or _is_output(out, graph):
        return set()
    # an unknown type is allowed: ONNX shape inference does not type contrib ops' outputs (DynamicQuantizeMatMul
    # in a quantized file read back), and what feeds a LayerNormalization is a float anyway; onnxruntime decides
    if not all(v.dtype in _FUSED_DTYPES or v.dtype is None for v in node.inputs):  # type: ignore[union-attr]
        return set()
    users = out.users()
    if len(users) == 1:
        ln = users[0]
        if (
            ln.op_type == "LayerNormalization"
            and ln.domain in STANDARD_DOMAINS
            and len(out.uses) == 1
            and ln.inputs[0] is out
            and ln.outputs[0] is not None
        ):
            return {ln.outputs[0].name}
        return set()
    names: set[str] = set()
    for div in _decomposed_layer_norm_head(out, users, ctx):
        v = div.outputs[0]
        names.add(v.name)
        for op in ("Mul", "Add"):  # the scale and the bias after the division, when there
            nxt = v.single_user()
            if nxt is None or nxt.op_type != op or nxt.outputs[0] is None:
                break
            v = nxt.outputs[0]
            names.add(v.name)
    return names


def _is_output(value: Value, graph: Graph | None) -> bool:
    while graph is not None:
        if graph.is_output(value):
            return True
        graph = graph.parent
    return False


def _same_3d(sa: tuple | None, sb: tuple | None) -> bool:
    """Both shapes 3-D and the same: each dim the same number or the same symbol (onnxruntime 1.32's CheckFirstAdd,
    checked against it in tests/test_ort_fusions.py: [1,S,D] + [S,D], [1,1,D], [D], or two different symbols are not
    fused). A symbol ONNX shape inference made up for an unknown dim (``unk__N``) is one onnxruntime does not have
    (its dim is unnamed there, and not fused): it counts as unknown."""
    if sa is None or sb is None or len(sa) != 3 or len(sb) != 3:
        return False
    return all(_known(d) and type(d) is type(e) and d == e for d, e in zip(sa, sb, strict=True))


def _known(d: object) -> bool:
    return isinstance(d, int) or (isinstance(d, str) and bool(d) and not d.startswith(_MADE_UP))


_MADE_UP = "unk__"
"""The prefix of the symbols ONNX shape inference gives dims it cannot name (onnx's SymbolTable)."""


def _decomposed_layer_norm_head(x: Value, users: list[Node], ctx: PassContext) -> list[Node]:
    """``x`` read only by ReduceMean(x) over the last axis and one or two Sub(x, mean), one of them divided by
    Sqrt(ReduceMean(Pow(sub, 2)) + eps) with a constant eps above zero: the LayerNormalization onnxruntime's
    LayerNormFusion builds (after which the Add feeds it alone); its Divs. An eps of zero (1e-12 in float16, say)
    is not fused by onnxruntime: left alone."""
    means = [n for n in users if n.op_type == "ReduceMean" and n.domain in STANDARD_DOMAINS]
    subs = [n for n in users if n.op_type == "Sub" and n.domain in STANDARD_DOMAINS]
    if len(means) != 1 or not 1 <= len(subs) <= 2 or len(means) + len(subs) != len(users):
        return []
    mean = means[0]
    if mean.inputs[0] is not x or len(mean.outputs) != 1 or mean.outputs[0] is None or not _last_axis(mean, ctx):
        return []
    if any(s.inputs[0] is not x or s.inputs[1] is not mean.outputs[0] for s in subs):
        return []
    if len(x.uses) != 1 + len(subs):
        return []
    centred = {s.outputs[0] for s in subs}
    divs: list[Node] = []
    for sub in subs:
        for sq in _readers(sub.outputs[0], "Pow", "Mul"):
            if not _squares(sq, sub.outputs[0]):
                continue
            for var in _readers(sq.outputs[0], "ReduceMean"):
                if not _last_axis(var, ctx):
                    continue
                for add in _readers(var.outputs[0], "Add"):
                    if not _positive_constant(add.inputs[1] if add.inputs[0] is var.outputs[0] else add.inputs[0]):
                        continue
                    for sqrt in _readers(add.outputs[0], "Sqrt"):
                        divs += [d for d in _readers(sqrt.outputs[0], "Div") if d.inputs[0] in centred]
    return divs


def _readers(v: Value | None, *ops: str) -> list[Node]:
    if v is None:
        return []
    return [n for n in v.users() if n.op_type in ops and n.domain in STANDARD_DOMAINS and n.outputs[0] is not None]


def _last_axis(node: Node, ctx: PassContext) -> bool:
    axes = axes_of(node, ctx, 18)
    return axes is not None and len(axes) == 1 and axes[0] in (-1, 2)


def _squares(node: Node, v: Value) -> bool:
    """Pow(v, 2) or Mul(v, v)."""
    if node.op_type == "Mul":
        return len(node.inputs) == 2 and node.inputs[0] is v and node.inputs[1] is v
    if len(node.inputs) != 2 or node.inputs[0] is not v or node.inputs[1] is None:
        return False
    e = node.inputs[1].constant()
    return e is not None and e.numpy().size == 1 and float(e.numpy().reshape(-1)[0]) == 2.0


def _positive_constant(v: Value | None) -> bool:
    c = v.constant() if v is not None else None
    return c is not None and c.numpy().size == 1 and float(c.numpy().reshape(-1)[0]) > 0
