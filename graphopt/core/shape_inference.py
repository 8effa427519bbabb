"""Types and shapes the passes can rely on: derived by ONNX shape inference from the graph inputs and the initializers.

Exported models usually list types only for graph inputs and outputs. Passes that need an intermediate value's dtype or
shape (Cast to the same type, Reshape to the same shape, Shape of a static tensor...) call :func:`infer_shapes` first.

Annotations are not trusted. onnxruntime enforces a graph input's element type, rank and static dims (and a graph
output's element type), and computes everything else itself: a ``value_info`` entry, a graph output's shape or an
initializer's listing that lies is only warned about, and the model still runs. So before any pass decides anything,
:func:`trust_types` (run once per graph by the PassManager, and by :func:`infer_shapes`) sets every such annotation
aside: the value becomes untyped (an initializer takes the type of its data, a graph output keeps its element type),
and passes that need its type get it from :func:`infer_shapes`, which derives it from the graph inputs and the
initializers alone. On save, a listing is written as the file had it unless inference proved it false (then the
inferred type is written); a graph output that a pass replaced is listed as the file declared it
(:func:`restore_interface`), in the main graph and in bodies (onnxruntime shapes the empty scan output of a Loop
that runs zero times from its body output's type).

Shape inference runs on a skeleton of the model: large initializers and large Constant values are passed as
external-data stubs that carry their type and dims but no bytes, so a BERT-sized model is not serialized for it.
Small initializers keep their data, which lets ONNX's data propagation resolve shapes computed from constants. The
skeleton carries no value_info and no output types: inference starts from the graph inputs and the initializers alone.
ONNX's data propagation spends time and memory linear in the length of any 1-D tensor of static size (it tracks each
element as a possible dim), so large 1-D inputs and initializers enter the skeleton with a placeholder symbolic dim
that is read back as the number, and a model that computes a long 1-D value is inferred without data propagation.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Iterator

import onnx

from graphopt.core.ir import Graph, Model, Value

INLINE_BYTES = 4096
"""Initializers up to this size keep their data in the skeleton (shape constants, axes); larger ones are stubs."""
LONG_1D = 4096
"""1-D inputs and initializers longer than this get a placeholder dim in the skeleton (see the module doc)."""
_PLACEHOLDER = "graphopt__static_"
_PLACEHOLDER_RE = re.compile(rf"^{_PLACEHOLDER}(\d+)$")

logger = logging.getLogger("graphopt")


# --------------------------------------------------------------------------------------------------------------------
# the skeleton
# --------------------------------------------------------------------------------------------------------------------
def _skeleton(model: Model) -> onnx.ModelProto:
    from graphopt.core.onnx_io import Exporter, stub_tensor

    mp = onnx.ModelProto()
    Exporter(stub_bytes=INLINE_BYTES).model(model, mp, initializers=False)  # large Constant values too are stubs
    gp = mp.graph
    # Inference starts from the inputs and initializers: no annotation of the file (value_info, output types), in any
    # graph, takes part. Large 1-D tensors get a placeholder dim (data propagation is linear in their length).
    deep = next(iter(model.graph.subgraphs()), None) is not None
    for g in _all_graph_protos(gp, deep):
        del g.value_info[:]
        for out in g.output:
            out.ClearField("type")
    inputs = {v.name for v in model.graph.inputs}
    for name, v in model.graph.initializers.items():
        t = v.const
        assert t is not None
        if t.nbytes <= INLINE_BYTES and not t.is_external:
            gp.initializer.append(t.to_proto(name))
        elif len(t.dims) == 1 and t.dims[0] > LONG_1D:
            if name not in inputs:  # as an input of the same type: an initializer's dims cannot be a placeholder
                tt = gp.input.add(name=name).type.tensor_type
                tt.elem_type = t.dtype
                tt.shape.dim.add().dim_param = f"{_PLACEHOLDER}{t.dims[0]}"
        else:
            stub_tensor(gp.initializer.add(), t, name)
    mp.ir_version = max(mp.ir_version, 4)  # initializers need not be inputs, inputs need not be initializers
    return mp


def _placeholder_dims(tp: onnx.TypeProto) -> None:
    if tp.WhichOneof("value") != "tensor_type" or not tp.tensor_type.HasField("shape"):
        return
    dims = tp.tensor_type.shape.dim
    if len(dims) == 1 and dims[0].HasField("dim_value") and dims[0].dim_value > LONG_1D:
        dims[0].dim_param = f"{_PLACEHOLDER}{dims[0].dim_value}"


def _all_graph_protos(gp: onnx.GraphProto, deep: bool = True) -> Iterator[onnx.GraphProto]:
    """The graph and (when ``deep``: the caller knows there are some) its subgraphs."""
    yield gp
    if not deep:
        return
    for np_ in gp.node:
        if np_.attribute:
            for sub in _sub_protos(list(np_.attribute)):
                yield from _all_graph_protos(sub)


def _run(model: Model) -> onnx.GraphProto | None:
    deep = next(iter(model.graph.subgraphs()), None) is not None
    skeleton = _skeleton(model)
    _elementwise_as_identity(skeleton.graph, deep)
    inferred = infer_proto(skeleton, deep=deep)
    # ops ONNX does not type (com.microsoft, some ai.onnx.ml) stop inference at their outputs: type those from their
    # inputs and infer again from there, until no such op gets a new type (each round types at least one more output)
    for _ in range(MAX_CUSTOM_ROUNDS):
        if inferred is None or not _type_custom_ops(skeleton.graph, inferred, deep):
            break
        again = infer_proto(skeleton, deep=deep)
        if again is None:
            break
        inferred = again
    return inferred


# --------------------------------------------------------------------------------------------------------------------
# ops ONNX shape inference does not know
# --------------------------------------------------------------------------------------------------------------------
MAX_CUSTOM_ROUNDS = 4
"""Inference runs after the first that type the outputs of ops ONNX does not know (a chain of such ops needs one
each; a longer chain stays partly untyped, which is safe)."""


def _known_types(gp: onnx.GraphProto) -> dict[str, onnx.TypeProto]:
    types: dict[str, onnx.TypeProto] = {}
    for t in gp.initializer:
        tp = onnx.TypeProto()
        tp.tensor_type.elem_type = t.data_type
        tp.tensor_type.shape.SetInParent()
        for d in t.dims:
            tp.tensor_type.shape.dim.add().dim_value = d
        types[t.name] = tp
    for vi in [*gp.input, *gp.value_info, *gp.output]:
        if vi.HasField("type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type
    return types


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _rnn_like(node: onnx.NodeProto, types: dict[str, onnx.TypeProto]) -> list[onnx.TypeProto | None] | None:
    """com.microsoft DynamicQuantizeLSTM: the outputs of ONNX LSTM with layout 0 (onnxruntime's schema infers them
    with ONNX's RNN rule): X is ``[seq, batch, input]``; Y is ``[seq, num_directions, batch, hidden]``, Y_h and Y_c
    ``[num_directions, batch, hidden]``, all of X's element type. None when X's rank-3 shape or hidden_size is not
    known."""
    x = types.get(node.input[0]) if node.input else None
    hidden = _attr(node, "hidden_size")
    if x is None or not x.tensor_type.HasField("shape") or len(x.tensor_type.shape.dim) != 3 or not hidden:
        return None
    direction = _attr(node, "direction", b"forward")
    directions = 2 if direction in (b"bidirectional", "bidirectional") else 1
    seq, batch, _ = x.tensor_type.shape.dim

    def make(dims: list[onnx.TensorShapeProto.Dimension | int]) -> onnx.TypeProto:
        tp = onnx.TypeProto()
        tp.tensor_type.elem_type = x.tensor_type.elem_type
        tp.tensor_type.shape.SetInParent()
        for d in dims:
            if isinstance(d, int):
                tp.tensor_type.shape.dim.add().dim_value = d
            else:
                tp.tensor_type.shape.dim.add().CopyFrom(d)
        return tp

    state = make([directions, batch, hidden])
    return [make([seq, directions, batch, hidden]), state, state]


def _scaler(node: onnx.NodeProto, types: dict[str, onnx.TypeProto]) -> list[onnx.TypeProto | None] | None:
    """ai.onnx.ml Scaler: ``Y = (X - offset) * scale`` is always float, of X's shape (ONNX's schema says so but has no
    inference function; onnxruntime's kernel allocates Y with X's shape)."""
    x = types.get(node.input[0]) if node.input else None
    if x is None or x.WhichOneof("value") != "tensor_type":
        return None
    tp = onnx.TypeProto()
    tp.tensor_type.CopyFrom(x.tensor_type)
    tp.tensor_type.elem_type = onnx.TensorProto.FLOAT
    return [tp]


def _same_as_input(node: onnx.NodeProto, types: dict[str, onnx.TypeProto]) -> list[onnx.TypeProto | None] | None:
    """com.microsoft Gelu: elementwise, Y has X's type and shape (onnxruntime's kernel allocates Y like X)."""
    x = types.get(node.input[0]) if node.input else None
    if x is None or x.WhichOneof("value") != "tensor_type":
        return None
    tp = onnx.TypeProto()
    tp.CopyFrom(x)
    return [tp]


CUSTOM_RULES = {
    ("com.microsoft", "DynamicQuantizeLSTM"): _rnn_like,
    ("ai.onnx.ml", "Scaler"): _scaler,
    ("com.microsoft", "Gelu"): _same_as_input,
    # onnxruntime's QOperator ops (quantize_static, QOperator format) of one input X (X, X_scale, X_zero_point,
    # Y_scale, Y_zero_point): one type T for X and Y, Y of X's shape (onnxruntime's schemas infer them so)
    ("com.microsoft", "QLinearSigmoid"): _same_as_input,
    ("com.microsoft", "QLinearLeakyRelu"): _same_as_input,
    ("com.microsoft", "QLinearSoftmax"): _same_as_input,
}
"""Shape rules for ops that ONNX shape inference leaves untyped and onnxruntime runs, by (domain, op type):
``rule(node, known types)`` gives each output's type (None: unknown). Each rule states what onnxruntime computes."""


BROADCAST_AS_ADD = {("com.microsoft", "QLinearAdd"), ("com.microsoft", "QLinearMul")}
"""onnxruntime's QOperator QLinearAdd and QLinearMul (A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale[,
C_zero_point]): one type T for A, B and C, C of the multidirectional broadcast of A's and B's shapes (onnxruntime's
schema infers them so); inferred as an ONNX Add of A and B, which gives that type and shape."""


def _elementwise_as_identity(skeleton: onnx.GraphProto, deep: bool) -> None:
    """Infer each op whose rule is :func:`_same_as_input` as an ONNX Identity (the type it gives), and each op of
    :data:`BROADCAST_AS_ADD` as an Add: one inference run then types everything after it, where a chain of them
    (ppocrv6-tiny-det has 13 Gelus in a row, a QOperator model dozens of QLinearMul/QLinearAdd) would need a round
    each and leave what follows the fourth untyped."""
    for g in _all_graph_protos(skeleton, deep):
        for node in g.node:
            if len(node.output) != 1:
                continue
            key = (node.domain, node.op_type)
            if CUSTOM_RULES.get(key) is _same_as_input and node.input:
                node.op_type, node.domain = "Identity", ""
                del node.input[1:]
                del node.attribute[:]
            elif key in BROADCAST_AS_ADD and len(node.input) >= 4 and node.input[0] and node.input[3]:
                a, b = node.input[0], node.input[3]
                node.op_type, node.domain = "Add", ""
                del node.input[:]
                node.input.extend([a, b])
                del node.attribute[:]


def _type_custom_ops(skeleton: onnx.GraphProto, inferred: onnx.GraphProto, deep: bool) -> bool:
    """Add to ``skeleton`` the value_info that :data:`CUSTOM_RULES` give for outputs ``inferred`` left untyped; True
    if any was added."""
    added = False
    for sg, ig in zip(_all_graph_protos(skeleton, deep), _all_graph_protos(inferred, deep), strict=False):
        types: dict[str, onnx.TypeProto] | None = None
        for node in ig.node:
            rule = CUSTOM_RULES.get((node.domain, node.op_type))
            if rule is None:
                continue
            if types is None:
                types = _known_types(ig)
            if all(not o or o in types for o in node.output):
                continue
            found = rule(node, types) or []
            for name, tp in zip(node.output, found, strict=False):
                if name and tp is not None and name not in types:
                    sg.value_info.add(name=name).type.CopyFrom(tp)
                    types[name] = tp
                    added = True
    return added


def infer_proto(model: onnx.ModelProto, deep: bool = True) -> onnx.GraphProto | None:
    """ONNX shape inference of a model whose large constants are typed inputs or stubs; the inferred graph, or None
    when inference fails. Long 1-D inputs get placeholder dims for the run (see the module doc); changes ``model``.
    ``deep=False`` says the model has no subgraphs.

    A first run goes without data propagation (shapes computed from constants and from Shape). A second one, with
    it, follows only when the first left a value without a static shape and computed no long 1-D value (data
    propagation would track each of its elements).
    """
    placeholders = False
    for vi in model.graph.input:
        _placeholder_dims(vi.type)
        dims = vi.type.tensor_type.shape.dim
        placeholders |= len(dims) == 1 and dims[0].dim_param.startswith(_PLACEHOLDER)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=False)
        if _needs_data_propagation(inferred.graph, deep):
            inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - inference is best effort; the passes are safe without it
        logger.debug("shape inference failed: %s", exc)
        return None
    if placeholders:
        for g in _all_graph_protos(inferred.graph, deep):
            for vi in [*g.value_info, *g.output, *g.input]:
                _numbers_back(vi.type)
    return inferred.graph


def _needs_data_propagation(gp: onnx.GraphProto, deep: bool) -> bool:
    """Whether a value lacks a static shape (data propagation may find it) and none is a long 1-D tensor."""
    incomplete = False
    for g in _all_graph_protos(gp, deep):
        static = set()
        for vi in [*g.value_info, *g.output]:
            tt = vi.type.tensor_type
            if not tt.HasField("shape"):
                continue
            dims = tt.shape.dim
            if len(dims) == 1 and dims[0].dim_value > LONG_1D:
                return False
            if all(d.HasField("dim_value") for d in dims):
                static.add(vi.name)
        incomplete = incomplete or any(o and o not in static for n in g.node for o in n.output)
    return incomplete


def _numbers_back(tp: onnx.TypeProto) -> None:
    if tp.WhichOneof("value") != "tensor_type" or not tp.tensor_type.HasField("shape"):
        return
    for d in tp.tensor_type.shape.dim:
        if d.HasField("dim_param"):
            found = _PLACEHOLDER_RE.match(d.dim_param)
            if found:
                d.dim_value = int(found.group(1))


def _types(gp: onnx.GraphProto) -> dict[str, onnx.TypeProto]:
    types = {vi.name: vi.type for vi in gp.value_info}
    types.update((vi.name, vi.type) for vi in gp.output if vi.HasField("type"))
    return types


def _pairs(graph: Graph, gp: onnx.GraphProto) -> Iterator[tuple[Graph, onnx.GraphProto]]:
    """The graph and each of its subgraphs with the proto the skeleton made of it."""
    yield graph, gp
    for node, np_ in zip(graph, gp.node, strict=True):
        bodies = list(node.subgraphs())
        if not bodies:
            continue
        subs = [ap for ap in np_.attribute if ap.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)]
        for sub, sp in zip(bodies, _sub_protos(subs), strict=True):
            yield from _pairs(sub, sp)


def _apply(graph: Graph, gp: onnx.GraphProto) -> int:
    count = 0
    for g, p in _pairs(graph, gp):
        types = _types(p)
        for node in g:
            for out in node.outputs:
                # untyped, or a graph output whose stated shape was set aside by trust_types
                if out is None or (out.has_type and out.shape is not None) or out.name not in types:
                    continue
                found = types[out.name]
                _set_type(out, found)
                count += 1
                for kind in ("value_info", "output"):
                    override = g.info_overrides.get((kind, out))
                    if override is not None and _contradicts(override[0].type, found):
                        del g.info_overrides[(kind, out)]  # the file's listing is false: write what inference proves
    return count


def _sub_protos(attrs: list[onnx.AttributeProto]) -> list[onnx.GraphProto]:
    out: list[onnx.GraphProto] = []
    for ap in attrs:
        if ap.type == onnx.AttributeProto.GRAPH:
            out.append(ap.g)
        elif ap.type == onnx.AttributeProto.GRAPHS:
            out.extend(ap.graphs)
    return out


def _set_type(v: Value, tp: onnx.TypeProto) -> None:
    if tp.WhichOneof("value") != "tensor_type" or not tp.tensor_type.elem_type:
        return
    tt = tp.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in tt.shape.dim]
    v.dtype, v.shape = tt.elem_type, shape


# --------------------------------------------------------------------------------------------------------------------
# trusting annotations
# --------------------------------------------------------------------------------------------------------------------
_TRUSTED: weakref.WeakKeyDictionary[Graph, bool] = weakref.WeakKeyDictionary()
"""Main graphs whose annotations :func:`trust_types` has already set aside (a graph reloaded by --verify is new)."""
_DECLARED: weakref.WeakKeyDictionary[Graph, dict[str, onnx.ValueInfoProto]] = weakref.WeakKeyDictionary()
"""Per graph (main graph and bodies), its outputs' listings as the file states them: the main graph's are the model's
interface, a body's are what onnxruntime takes an empty scan output's shape from (a Loop that runs zero times)."""


def _listings(graph: Graph) -> dict[int, tuple[Value, list[str]]]:
    """The values of one graph whose type came from the file and that onnxruntime does not check, with the kinds of
    listing ("value_info", "output", "input") they have."""
    out: dict[int, tuple[Value, list[str]]] = {}
    interface = {id(v) for v in graph.inputs}

    def add(kind: str, v: Value) -> None:
        out.setdefault(id(v), (v, []))[1].append(kind)

    for v in graph.value_info:
        if id(v) not in interface and v.type_proto is not None:
            add("value_info", v)
    for v in graph.outputs:
        if id(v) not in interface and v.type_proto is not None:
            add("output", v)
    for v in graph.inputs:
        if v.const is not None and not v.overridable and v.type_proto is not None:
            add("input", v)  # IR < 4 lists every initializer as an input: its data decides its type
    return out


def _contradicts(stated: onnx.TypeProto, found: onnx.TypeProto) -> bool:
    """Whether an annotation states something that inference proves false (an unknown or symbolic dim proves
    nothing)."""
    kind = stated.WhichOneof("value")
    if kind != found.WhichOneof("value"):
        return kind is not None and found.WhichOneof("value") is not None
    if kind != "tensor_type":
        return stated != found
    a, b = stated.tensor_type, found.tensor_type
    if a.elem_type and b.elem_type and a.elem_type != b.elem_type:
        return True
    if not (a.HasField("shape") and b.HasField("shape")):
        return False
    if len(a.shape.dim) != len(b.shape.dim):
        return True
    return any(
        x.HasField("dim_value") and y.HasField("dim_value") and x.dim_value != y.dim_value
        for x, y in zip(a.shape.dim, b.shape.dim, strict=True)
    )


def _data_type(v: Value) -> onnx.TypeProto:
    tp = onnx.TypeProto()
    tt = tp.tensor_type
    tt.elem_type = v.const.dtype  # type: ignore[union-attr]
    tt.shape.SetInParent()
    for d in v.const.dims:  # type: ignore[union-attr]
        tt.shape.dim.add().dim_value = d
    return tp


def _set_aside(graph: Graph, v: Value, kinds: list[str]) -> None:
    """Take the file's type off ``v`` (an initializer keeps the type of its data, a graph output its element type) and
    have export write each of its listings as the file had it, until inference proves the listing false."""
    from graphopt.core.onnx_io import fill_value_info

    stated: dict[str, onnx.ValueInfoProto] = {}
    for kind in kinds:
        override = graph.info_overrides.get((kind, v))
        if override is not None and override[1] is v.type_proto:
            stated[kind] = override[0]  # a second listing that differed from the first at load
        else:
            info = onnx.ValueInfoProto()
            fill_value_info(info, v)
            stated[kind] = info
    own = v.type_proto
    v.set_type_proto(None)
    if v.const is not None:
        v.dtype, v.shape = v.const.dtype, v.const.dims
        data = _data_type(v)
    elif "output" in kinds and own is not None and own.HasField("tensor_type") and own.tensor_type.elem_type:
        v.dtype = own.tensor_type.elem_type  # onnxruntime checks a graph output's element type; its shape it does not
    for kind, info in stated.items():
        if v.const is not None and _contradicts(info.type, data):
            graph.info_overrides.pop((kind, v), None)
        else:
            graph.info_overrides[(kind, v)] = (info, None)
        if kind == "output":
            _DECLARED.setdefault(graph, {})[v.name or ""] = info


def declared_output(graph: Graph, v: Value) -> onnx.ValueInfoProto | None:
    """The listing the file gave ``graph``'s output ``v`` if :func:`trust_types` set it aside (else None: ``v``'s own
    type is what export writes)."""
    override = graph.info_overrides.get(("output", v))
    if override is not None:
        return override[0]
    return _DECLARED.get(graph, {}).get(v.name or "")


def declare_output(graph: Graph, v: Value, info: onnx.ValueInfoProto) -> None:
    """List ``graph``'s output ``v`` as ``info`` states (renamed to ``v``), as if the file had: for a listing that
    moves with a value from one graph to another (an If branch inlined into a Loop body, whose scan output onnxruntime
    shapes from it when the Loop runs zero times). Set aside like the file's own listings, and restored the same way
    by :func:`restore_interface`."""
    listing = onnx.ValueInfoProto()
    listing.CopyFrom(info)
    listing.name = v.name or ""
    graph.info_overrides[("output", v)] = (listing, None)
    _DECLARED.setdefault(graph, {})[listing.name] = listing


def _every_graph(model: Model) -> Iterator[Graph]:
    yield model.graph
    yield from model.graph.subgraphs()
    for func in model.functions.values():
        yield func.graph
        yield from func.graph.subgraphs()


def trust_types(model: Model) -> int:
    """Set aside every type the file states for a value that onnxruntime computes itself; returns how many.

    Runs once per main graph (later calls return at once) and costs no inference: the values become untyped, so the
    passes that need their types run :func:`infer_shapes`, which derives them from the graph inputs and initializers.
    See the module doc for what is written back on save.
    """
    if _TRUSTED.get(model.graph):
        return 0
    _TRUSTED[model.graph] = True
    count = 0
    for g in _every_graph(model):
        for v, kinds in _listings(g).values():
            _set_aside(g, v, kinds)
            count += 1
    if count:
        _HOPELESS.pop(model, None)
    return count


def restore_interface(model: Model) -> None:
    """After a pipeline: a graph output that a pass replaced by another value (which took its name) is listed again as
    the file declared it, unless what is known of the new value contradicts that. In the main graph that is the
    model's interface; in an If, Loop or Scan body, onnxruntime reads it too: a Loop that runs zero times stacks no
    scan output and takes its shape from the body output's type ((0, 2, 3) as declared, (0,) with no shape)."""
    for graph in (model.graph, *model.graph.subgraphs()):
        declared = _DECLARED.get(graph)
        if declared:
            _restore_outputs(model, graph, declared)


def _restore_outputs(model: Model, graph: Graph, declared: dict[str, onnx.ValueInfoProto]) -> None:
    from graphopt.core.onnx_io import fill_value_info

    for v in graph.outputs:
        info = declared.get(v.name or "")
        if info is None:
            continue
        stated = info.type.tensor_type.elem_type if info.type.HasField("tensor_type") else 0
        if stated and v.dtype and stated != v.dtype and graph.owner is None:  # onnxruntime refuses to load it
            from graphopt.core.ir import InvalidModelError

            raise InvalidModelError(
                f"{model.source_path or 'the model'}: graph output {v.name!r} is declared "
                f"{onnx.TensorProto.DataType.Name(stated).lower()} but its value is "
                f"{onnx.TensorProto.DataType.Name(v.dtype).lower()}"
            )
        if ("output", v) in graph.info_overrides or v in graph.inputs:
            continue
        now = onnx.ValueInfoProto()
        fill_value_info(now, v)
        if v.const is None and not _contradicts(info.type, now.type):
            graph.info_overrides[("output", v)] = (info, v.type_proto)


def infer_shapes(model: Model) -> int:
    """Give every untyped value in the main graph and its subgraphs the type ONNX shape inference finds.

    Sets the file's annotations aside first (:func:`trust_types`). Returns the number of values that got a type. Shape
    inference failing (an op it does not know, a model it rejects) is not an error: the values stay untyped and passes
    that need types leave them alone.
    """
    trust_types(model)
    untyped = _untyped(model)
    if not untyped:
        return 0  # exporters that list every value's type (torch's dynamo exporter) leave nothing to infer
    hopeless = _HOPELESS.get(model)
    if hopeless is not None and all(v in hopeless for v in untyped):
        return 0  # nothing new to type since the last run: it would find what it found then
    inferred = _run(model)
    if inferred is None:
        _HOPELESS[model] = weakref.WeakSet(untyped)
        return 0
    try:
        return _apply(model.graph, inferred)
    except ValueError:  # inference changed the node list (it never should); keep what we have
        return 0
    finally:
        _HOPELESS[model] = weakref.WeakSet(_untyped(model))


_HOPELESS: weakref.WeakKeyDictionary[Model, weakref.WeakSet[Value]] = weakref.WeakKeyDictionary()
"""Per model, the values the last inference run left untyped; while no other value is untyped, a run is skipped."""


def _untyped(model: Model) -> list[Value]:
    return [out for node in model.graph.all_nodes() for out in node.outputs if out is not None and not out.has_type]
