"""Types and shapes for values that a model does not annotate, from ONNX shape inference.

Exported models usually list types only for graph inputs and outputs. Passes that need an intermediate value's dtype or
shape (Cast to the same type, Reshape to the same shape, Shape of a static tensor...) call :func:`infer_shapes` first.

Shape inference runs on a skeleton of the model: large initializers are passed as external-data stubs that carry their
type and dims but no bytes, so a BERT-sized model is not serialized for it. Small initializers keep their data, which
lets ONNX's data propagation resolve shapes computed from constants. Only values without a type get one; a type the
model states is never replaced.
"""

from __future__ import annotations

import logging
import weakref

import onnx

from graphopt.ir import Graph, Model, Value

INLINE_BYTES = 4096
"""Initializers up to this size keep their data in the skeleton (shape constants, axes); larger ones are stubs."""

logger = logging.getLogger("graphopt")


def _skeleton(model: Model) -> onnx.ModelProto:
    from graphopt.onnx_io import _Exporter  # the exporter is private to onnx_io; this is its one other client

    mp = onnx.ModelProto()
    _Exporter().model(model, mp, initializers=False)
    gp = mp.graph
    for name, v in model.graph.initializers.items():
        t = v.const
        assert t is not None
        if t.nbytes <= INLINE_BYTES and not t.is_external:
            gp.initializer.append(t.to_proto(name))
        else:
            stub = gp.initializer.add()
            stub.name = name
            stub.data_type = t.dtype
            stub.dims.extend(t.dims)
            stub.data_location = onnx.TensorProto.EXTERNAL
            entry = stub.external_data.add()
            entry.key, entry.value = "location", "graphopt-shape-inference-stub"
    return mp


def _types(gp: onnx.GraphProto) -> dict[str, onnx.TypeProto]:
    types = {vi.name: vi.type for vi in gp.value_info}
    types.update((vi.name, vi.type) for vi in gp.output)
    return types


def _apply(graph: Graph, gp: onnx.GraphProto) -> int:
    types = _types(gp)
    count = 0
    for node, np_ in zip(graph, gp.node, strict=True):
        for out in node.outputs:
            if out is not None and not out.has_type and out.name in types:
                _set_type(out, types[out.name])
                count += 1
        bodies = list(node.subgraphs())
        if not bodies:
            continue
        subs = [ap for ap in np_.attribute if ap.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)]
        for sub, ap in zip(bodies, _sub_protos(subs), strict=True):
            count += _apply(sub, ap)
    return count


def _sub_protos(attrs: list[onnx.AttributeProto]) -> list[onnx.GraphProto]:
    out: list[onnx.GraphProto] = []
    for ap in attrs:
        if ap.type == onnx.AttributeProto.GRAPH:
            out.append(ap.g)
        else:
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


def infer_shapes(model: Model) -> int:
    """Give every untyped value in the main graph and its subgraphs the type ONNX shape inference finds.

    Returns the number of values that got a type. Shape inference failing (an op it does not know, a model it rejects)
    is not an error: the values stay untyped and passes that need types leave them alone.
    """
    untyped = _untyped(model)
    if not untyped:
        return 0  # exporters that list every value's type (torch's dynamo exporter) leave nothing to infer
    hopeless = _HOPELESS.get(model)
    if hopeless is not None and all(v in hopeless for v in untyped):
        return 0  # nothing new to type since the last run: it would find what it found then
    skeleton = _skeleton(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - inference is best effort; the passes are safe without it
        logger.debug("shape inference failed: %s", exc)
        _HOPELESS[model] = weakref.WeakSet(untyped)
        return 0
    try:
        return _apply(model.graph, inferred.graph)
    except ValueError:  # inference changed the node list (it never should); keep what we have
        return 0
    finally:
        _HOPELESS[model] = weakref.WeakSet(_untyped(model))


_HOPELESS: weakref.WeakKeyDictionary[Model, weakref.WeakSet[Value]] = weakref.WeakKeyDictionary()
"""Per model, the values the last inference run left untyped; while no other value is untyped, a run is skipped."""


def _untyped(model: Model) -> list[Value]:
    return [out for node in model.graph.all_nodes() for out in node.outputs if out is not None and not out.has_type]
