"""Lifting ONNX protobuf into the IR and lowering it back, losslessly; loading and saving files.

Every ModelProto/GraphProto/NodeProto/FunctionProto field the IR does not model is copied into that object's ``extra``
proto on import and merged back on export, so fields this module has never heard of survive a round-trip too.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError, Message

from graphopt.core.ir import Attribute, Function, Graph, Model, Node, Value, gc_paused, install_exporter
from graphopt.core.mapped import Scanned, scan
from graphopt.core.tensors import (
    CopySources,
    ExternalFile,
    ExternalRef,
    HeldFile,
    SparseTensor,
    Tensor,
    _expected_nbytes,
    encode_varint,
    extend_str,
    file_kind,
    put_str,
    release_mapped,
    same_file,
    text,
)
from graphopt.errors import ExternalDataError, GraphoptError, ModelLoadError, TensorDataError

_A = onnx.AttributeProto
PROTOBUF_LIMIT = 2**31 - 1
"""Protobuf cannot serialize or parse a message of 2 GiB or more; bigger models must use external data."""
AUTO_EXTERNAL_BYTES = 1_800_000_000
"""Above this many bytes of inline tensor data, ``save`` writes external data unless told otherwise."""

_MODEL_FIELDS = frozenset(
    {
        "ir_version",
        "opset_import",
        "producer_name",
        "producer_version",
        "domain",
        "model_version",
        "doc_string",
        "graph",
        "metadata_props",
        "training_info",
        "functions",
    }
)
_GRAPH_FIELDS = frozenset(
    {
        "node",
        "name",
        "initializer",
        "sparse_initializer",
        "doc_string",
        "input",
        "output",
        "value_info",
        "metadata_props",
    }
)
_NODE_FIELDS = frozenset(
    {"input", "output", "name", "op_type", "domain", "overload", "attribute", "doc_string", "metadata_props"}
)
_FUNCTION_FIELDS = frozenset(
    {
        "name",
        "input",
        "output",
        "attribute",
        "attribute_proto",
        "node",
        "doc_string",
        "opset_import",
        "domain",
        "overload",
        "value_info",
        "metadata_props",
    }
)


def _leftover(proto: Message, modeled: frozenset[str]) -> Any:
    """A proto of the same type holding the fields of ``proto`` the IR does not model (None if there are none)."""
    rest = None
    for field, value in proto.ListFields():
        # A modeled scalar that is present but holds its default (proto2 presence, e.g. ``domain: ""``) is kept
        # here too: the IR cannot tell it from an absent field, but the round-trip must.
        default = _modeled_default(field, modeled)
        if default is _ALWAYS_MODELED or (default is not _UNMODELED and value != default):
            continue
        if rest is None:
            rest = type(proto)()
        target = getattr(rest, field.name)
        if field.is_repeated:
            target.extend(value)
        elif field.type == field.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(rest, field.name, value)
    return rest


_ALWAYS_MODELED, _UNMODELED = object(), object()
_FIELD_KINDS: dict[tuple[Any, frozenset[str]], Any] = {}


def _modeled_default(field: Any, modeled: frozenset[str]) -> Any:
    """How ``_leftover`` treats a field: always modeled (repeated and message fields the IR holds), not modeled, or
    modeled unless it holds this default value. Cached per field descriptor: every node of a model asks."""
    key = (field, modeled)
    kind = _FIELD_KINDS.get(key)
    if kind is None:
        if field.name not in modeled:
            kind = _UNMODELED
        elif field.is_repeated or field.type == field.TYPE_MESSAGE:
            kind = _ALWAYS_MODELED
        else:
            kind = field.default_value
        _FIELD_KINDS[key] = kind
    return kind


def _opsets(entries: Iterable[onnx.OperatorSetIdProto]) -> dict[str, int]:
    return {text(op.domain): op.version for op in entries}


def _default_domain_unset(entries: Iterable[onnx.OperatorSetIdProto]) -> bool:
    """Whether the default-domain entry leaves ``domain`` unset (older exporters do) rather than set to ''."""
    return any(not op.domain and not op.HasField("domain") for op in entries)


def _put_opsets(target: Any, opsets: dict[str, int], default_domain_unset: bool) -> None:
    for op_domain, version in opsets.items():
        entry = target.add(version=version)
        if op_domain or not default_domain_unset:
            put_str(entry, "domain", op_domain)


def _props(entries: Iterable[onnx.StringStringEntryProto]) -> dict[str, str]:
    return {text(e.key): text(e.value) for e in entries}


def _put_props(target: Any, props: dict[str, str]) -> None:
    for k, v in props.items():
        try:
            target.add(key=k, value=v)
        except UnicodeEncodeError:
            entry = target.add()
            put_str(entry, "key", k)
            put_str(entry, "value", v)


# --------------------------------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------------------------------
class _Importer:
    """Builds IR objects from protos, resolving names through nested scopes."""

    def __init__(self, base_dir: Path | None, mapped: Scanned | None = None) -> None:
        self.base_dir = base_dir
        self.files: dict[Path, ExternalFile] = {}
        self.typed: set[int] = set()
        self.mapped = mapped  # raw_data cut out of the main graph's initializers, to view in the mapped file

    def tensor(self, proto: onnx.TensorProto) -> Tensor:
        return Tensor.from_proto(proto, self.base_dir, self.files)

    def sparse(self, proto: onnx.SparseTensorProto) -> SparseTensor:
        return SparseTensor(proto, self.base_dir, self.files)

    def main_initializer(self, proto: onnx.TensorProto) -> Tensor:
        span = self.mapped.ranges.get(text(proto.name)) if self.mapped is not None else None
        if span is None or proto.HasField("raw_data"):  # not cut out (say, a second initializer of the same name)
            return self.tensor(proto)
        assert self.mapped is not None
        offset, length = span
        dims = tuple(proto.dims)
        expected = _expected_nbytes(proto.data_type, dims)
        if expected != length:
            raise TensorDataError(
                f"tensor {text(proto.name)!r} has {length} bytes of raw_data, its shape {list(dims)} needs {expected}"
            )
        ref = ExternalRef(self.mapped.file, offset, length, "", inline=True)
        return Tensor(
            proto.data_type,
            dims,
            proto=proto,  # every field but raw_data, to write back as it was
            external=ref,
            doc_string=text(proto.doc_string),
            metadata_props=_props(proto.metadata_props),
        )

    def value_from_info(self, info: onnx.ValueInfoProto, graph: Graph, kind: str, value: Value | None = None) -> Value:
        """Give a value the type in ``info``. A value can be listed more than once (say as a graph output and in
        value_info) with different types: the first listing types the value, a differing later one is kept verbatim
        in ``graph.info_overrides`` so that export can write each listing as it was."""
        v = value if value is not None else Value(text(info.name))
        if id(v) in self.typed:
            again = onnx.ValueInfoProto()
            fill_value_info(again, v)
            if again != info:
                graph.info_overrides[(kind, v)] = (info, v.type_proto)
            return v
        self.typed.add(id(v))
        if info.HasField("type"):
            v.set_type_proto(info.type)
        v.doc_string = text(info.doc_string)
        v.metadata_props = _props(info.metadata_props)
        return v

    def graph(self, gp: onnx.GraphProto, outer: list[dict[str, Value]], *, main: bool = False) -> Graph:
        graph = Graph(name=text(gp.name), doc_string=text(gp.doc_string))
        graph.metadata_props = _props(gp.metadata_props)
        graph.extra = _leftover(gp, _GRAPH_FIELDS)
        scope: dict[str, Value] = {}
        scopes = [scope, *outer]

        def lookup(name: str) -> Value:
            for s in scopes:
                v = s.get(name)
                if v is not None:
                    return v
            v = Value(name)  # undefined: kept as a dangling value so the name survives
            scope[name] = v
            return v

        for info in gp.input:
            v = self.value_from_info(info, graph, "input")
            scope[v.name] = v  # type: ignore[index]
            graph.inputs.append(v)
        for tp in gp.initializer:
            name = text(tp.name)
            v = scope.get(name)
            if v is None:
                v = Value(name)
                scope[name] = v
            v.const = self.main_initializer(tp) if main else self.tensor(tp)
            if not v.has_type:
                v._dtype, v._shape = v.const.dtype, v.const.dims  # noqa: SLF001 - plain facts of the data
            graph.initializers[name] = v
        for sp in gp.sparse_initializer:
            name = text(sp.values.name)
            v = scope.get(name) or Value(name)
            scope[name] = v
            v.const = self.sparse(sp)
            if not v.has_type:
                v._dtype, v._shape = v.const.dtype, v.const.dims  # noqa: SLF001 - plain facts of the data
            graph.sparse_initializers[name] = v
        # Two phases: register every node output first, so that names resolve even if nodes are out of order.
        nodes: list[tuple[onnx.NodeProto, Node]] = []
        for np_ in gp.node:
            outs = [Value(text(name)) if name else None for name in np_.output]
            node = Node(
                text(np_.op_type),
                (),
                outputs=outs,
                domain=text(np_.domain),
                name=text(np_.name),
                overload=text(np_.overload),
                doc_string=text(np_.doc_string),
            )
            if np_.metadata_props:
                node.metadata_props = _props(np_.metadata_props)
            node.extra = _leftover(np_, _NODE_FIELDS)
            for v in outs:
                if v is not None:
                    scope[v.name] = v  # type: ignore[index]
            nodes.append((np_, node))
        for np_, node in nodes:
            node.set_inputs(lookup(text(name)) if name else None for name in np_.input)
            for ap in np_.attribute:
                attr = self.attribute(ap, scopes)
                node.attrs[attr.name] = attr
            for g in node.subgraphs():
                g.owner = node
            graph.append(node)
        for info in gp.value_info:
            name = text(info.name)
            v = scope.get(name)
            if v is None:
                v = Value(name)
                scope[name] = v
            self.value_from_info(info, graph, "value_info", v)
            graph.value_info.append(v)
        for info in gp.output:
            v = lookup(text(info.name))
            self.value_from_info(info, graph, "output", v)
            graph.outputs.append(v)
        return graph

    def attribute(self, ap: onnx.AttributeProto, scopes: list[dict[str, Value]]) -> Attribute:
        kind = ap.type or _untyped_kind(ap)
        if ap.ref_attr_name:
            value: Any = None
        elif kind == _A.FLOAT:
            value = ap.f
        elif kind == _A.INT:
            value = ap.i
        elif kind == _A.STRING:
            value = _decode(ap.s)
        elif kind == _A.TENSOR:
            value = self.tensor(ap.t)
        elif kind == _A.GRAPH:
            value = self.graph(ap.g, scopes)
        elif kind == _A.SPARSE_TENSOR:
            value = self.sparse(ap.sparse_tensor)
        elif kind == _A.TYPE_PROTO:
            value = ap.tp
        elif kind == _A.FLOATS:
            value = list(ap.floats)
        elif kind == _A.INTS:
            value = list(ap.ints)
        elif kind == _A.STRINGS:
            value = [_decode(s) for s in ap.strings]
        elif kind == _A.TENSORS:
            value = [self.tensor(t) for t in ap.tensors]
        elif kind == _A.GRAPHS:
            value = [self.graph(g, scopes) for g in ap.graphs]
        elif kind == _A.SPARSE_TENSORS:
            value = [self.sparse(sp) for sp in ap.sparse_tensors]
        elif kind == _A.TYPE_PROTOS:
            value = list(ap.type_protos)
        else:
            value = None
        attr = Attribute(
            text(ap.name), value, kind, ref_attr_name=text(ap.ref_attr_name), doc_string=text(ap.doc_string)
        )
        attr.untyped = ap.type == 0
        return attr

    def function(self, fp: onnx.FunctionProto) -> Function:
        # A function body is imported as a graph whose inputs and outputs are the formal parameters (untyped).
        gp = onnx.GraphProto()
        for names, target in ((fp.input, gp.input), (fp.output, gp.output)):
            for name in names:
                put_str(target.add(), "name", text(name))
        gp.node.extend(fp.node)
        gp.value_info.extend(fp.value_info)
        func = Function(text(fp.domain), text(fp.name), self.graph(gp, []), overload=text(fp.overload))
        func.attributes = [text(a) for a in fp.attribute]
        func.attribute_defaults = {ap.name: self.attribute(ap, []) for ap in fp.attribute_proto}
        func.opset_imports = _opsets(fp.opset_import)
        func.default_domain_unset = _default_domain_unset(fp.opset_import)
        func.doc_string = text(fp.doc_string)
        func.metadata_props = _props(fp.metadata_props)
        func.extra = _leftover(fp, _FUNCTION_FIELDS)
        return func


def _decode(s: bytes) -> str | bytes:
    try:
        return s.decode("utf-8")
    except UnicodeDecodeError:
        return s


def _untyped_kind(ap: onnx.AttributeProto) -> int:
    """The kind of an attribute whose ``type`` field is unset (very old models): the field that holds a value."""
    for field, kind in (
        ("floats", _A.FLOATS),
        ("ints", _A.INTS),
        ("strings", _A.STRINGS),
        ("tensors", _A.TENSORS),
        ("graphs", _A.GRAPHS),
    ):
        if len(getattr(ap, field)):
            return kind
    for field, kind in (("t", _A.TENSOR), ("g", _A.GRAPH), ("sparse_tensor", _A.SPARSE_TENSOR), ("tp", _A.TYPE_PROTO)):
        if ap.HasField(field):
            return kind
    if ap.s:
        return _A.STRING
    if ap.f:
        return _A.FLOAT
    return _A.INT


def from_proto(
    proto: onnx.ModelProto, base_dir: str | os.PathLike[str] | None = None, *, mapped: Scanned | None = None
) -> Model:
    """Lift a ModelProto into the IR without copying tensor data. ``base_dir`` resolves external data; ``mapped``
    holds the main graph's initializer data that :func:`graphopt.core.mapped.scan` cut out of ``proto``."""
    importer = _Importer(Path(base_dir) if base_dir is not None else None, mapped)
    with gc_paused():
        graph = importer.graph(proto.graph, [], main=True)
    if proto.ir_version >= 4:
        for v in graph.inputs:
            v.overridable = v.const is not None
    model = Model(graph, _opsets(proto.opset_import), ir_version=proto.ir_version)
    model.default_domain_unset = _default_domain_unset(proto.opset_import)
    model.producer_name = text(proto.producer_name)
    model.producer_version = text(proto.producer_version)
    model.domain = text(proto.domain)
    model.model_version = proto.model_version
    model.doc_string = text(proto.doc_string)
    model.metadata_props = _props(proto.metadata_props)
    model.training_info = list(proto.training_info)
    with gc_paused():
        for fp in proto.functions:
            f = importer.function(fp)
            model.functions[f.key] = f
    model.extra = _leftover(proto, _MODEL_FIELDS)
    model.external_files = importer.files
    return model


# --------------------------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------------------------
TensorWriter = Callable[[Value, onnx.TensorProto], None]


def fill_value_info(info: onnx.ValueInfoProto, v: Value, graph: Graph | None = None, kind: str = "") -> None:
    if graph is not None and graph.info_overrides:
        override = graph.info_overrides.get((kind, v))
        if override is not None and override[1] is v.type_proto and text(override[0].name) == v.name:
            info.CopyFrom(override[0])  # this listing differed from the value's type at load; nothing changed since
            return
    put_str(info, "name", v.name or "")
    tp = v.type_proto
    if tp is not None:
        info.type.CopyFrom(tp)
    elif v.dtype is not None or v.shape is not None:
        tt = info.type.tensor_type
        if v.dtype is not None:
            tt.elem_type = v.dtype
        if v.shape is not None:
            shape = tt.shape
            shape.SetInParent()
            for d in v.shape:
                dim = shape.dim.add()
                if isinstance(d, int):
                    dim.dim_value = d
                elif isinstance(d, str):
                    dim.dim_param = d
    if v.doc_string:
        put_str(info, "doc_string", v.doc_string)
    _put_props(info.metadata_props, v.metadata_props)


class Exporter:
    """Writes IR objects into protos. Tensor data that lives in external files is written inline.

    ``stub_bytes``: tensor attributes (a Constant's value) larger than this are written as external-data stubs that
    carry their type and dims but no bytes, as shape inference's skeleton passes large initializers: exports that
    keep their weights in Constant nodes are then not copied, serialized, parsed and copied back for it."""

    def __init__(self, stub_bytes: int | None = None) -> None:
        self.stub_bytes = stub_bytes

    def graph(self, graph: Graph, gp: onnx.GraphProto, *, initializers: bool = True) -> None:
        if graph.extra is not None:
            gp.MergeFrom(graph.extra)
        put_str(gp, "name", graph.name)
        if graph.doc_string:
            put_str(gp, "doc_string", graph.doc_string)
        _put_props(gp.metadata_props, graph.metadata_props)
        for v in graph.inputs:
            fill_value_info(gp.input.add(), v, graph, "input")
        if initializers:
            for name, v in graph.initializers.items():
                assert v.const is not None
                gp.initializer.append(v.const.to_proto(name))
        for name, v in graph.sparse_initializers.items():
            gp.sparse_initializer.append(_sparse_proto(v.const, name))
        emitted: set[int] = set()
        for node in graph:
            self.node(node, gp.node.add())
        for v in graph.outputs:
            fill_value_info(gp.output.add(), v, graph, "output")
        for v in graph.value_info:
            if id(v) not in emitted and _alive(v, graph):
                fill_value_info(gp.value_info.add(), v, graph, "value_info")
                emitted.add(id(v))
        # Only values the input listed get value_info: types that passes inferred on the way stay in memory (a
        # runtime infers them again), so an optimized file never grows by annotations the original did not have.

    def node(self, node: Node, np_: onnx.NodeProto) -> None:
        if node.extra is not None:
            np_.MergeFrom(node.extra)
        try:
            np_.input.extend(v.name if v is not None else "" for v in node.inputs)  # type: ignore[misc]
            np_.output.extend(v.name if v is not None else "" for v in node.outputs)  # type: ignore[misc]
            if node.name:
                np_.name = node.name
            np_.op_type = node.op_type
            if node.domain:
                np_.domain = node.domain
            if node.overload:
                np_.overload = node.overload
            if node.doc_string:
                np_.doc_string = node.doc_string
        except UnicodeEncodeError:  # a name that was not UTF-8 in the file: write its bytes back as they were
            np_.Clear()
            if node.extra is not None:
                np_.MergeFrom(node.extra)
            extend_str(np_, "input", (v.name if v is not None else "" for v in node.inputs))
            extend_str(np_, "output", (v.name if v is not None else "" for v in node.outputs))
            for field in ("name", "op_type", "domain", "overload", "doc_string"):
                if getattr(node, field) or field == "op_type":
                    put_str(np_, field, getattr(node, field))
        _put_props(np_.metadata_props, node.metadata_props)
        for attr in node.attrs.values():
            self.attribute(attr, np_.attribute.add())

    def attribute(self, attr: Attribute, ap: onnx.AttributeProto) -> None:
        put_str(ap, "name", attr.name)
        if not attr.untyped:
            ap.type = attr.type  # type: ignore[assignment]
        if attr.doc_string:
            put_str(ap, "doc_string", attr.doc_string)
        if attr.ref_attr_name:
            put_str(ap, "ref_attr_name", attr.ref_attr_name)
            return
        kind, value = attr.type, attr.value
        if value is None:
            return
        if kind == _A.FLOAT:
            ap.f = value
        elif kind == _A.INT:
            ap.i = int(value)
        elif kind == _A.STRING:
            ap.s = value.encode("utf-8") if isinstance(value, str) else value
        elif kind == _A.TENSOR:
            if self.stub_bytes is not None and value.nbytes > self.stub_bytes:
                stub_tensor(ap.t, value, _tensor_name(value))
            else:
                ap.t.CopyFrom(value.to_proto(_tensor_name(value)))
        elif kind == _A.GRAPH:
            self.graph(value, ap.g)
        elif kind == _A.SPARSE_TENSOR:
            ap.sparse_tensor.CopyFrom(_sparse_proto(value))
        elif kind == _A.TYPE_PROTO:
            ap.tp.CopyFrom(value)
        elif kind == _A.FLOATS:
            ap.floats.extend(value)
        elif kind == _A.INTS:
            ap.ints.extend(int(x) for x in value)
        elif kind == _A.STRINGS:
            ap.strings.extend(s.encode("utf-8") if isinstance(s, str) else s for s in value)
        elif kind == _A.TENSORS:
            ap.tensors.extend(t.to_proto(_tensor_name(t)) for t in value)
        elif kind == _A.GRAPHS:
            for g in value:
                self.graph(g, ap.graphs.add())
        elif kind == _A.SPARSE_TENSORS:
            ap.sparse_tensors.extend(_sparse_proto(sp) for sp in value)
        elif kind == _A.TYPE_PROTOS:
            ap.type_protos.extend(value)

    def function(self, func: Function, fp: onnx.FunctionProto) -> None:
        if func.extra is not None:
            fp.MergeFrom(func.extra)
        put_str(fp, "name", func.name)
        put_str(fp, "domain", func.domain)
        if func.overload:
            put_str(fp, "overload", func.overload)
        extend_str(fp, "input", (v.name or "" for v in func.graph.inputs))
        extend_str(fp, "output", (v.name or "" for v in func.graph.outputs))
        extend_str(fp, "attribute", func.attributes)
        for attr in func.attribute_defaults.values():
            self.attribute(attr, fp.attribute_proto.add())
        for node in func.graph:
            self.node(node, fp.node.add())
        _put_opsets(fp.opset_import, func.opset_imports, func.default_domain_unset)
        if func.doc_string:
            put_str(fp, "doc_string", func.doc_string)
        for v in func.graph.value_info:
            if _alive(v, func.graph):
                fill_value_info(fp.value_info.add(), v, func.graph, "value_info")
        _put_props(fp.metadata_props, func.metadata_props)

    def model(self, model: Model, mp: onnx.ModelProto, *, initializers: bool = True) -> None:
        if model.extra is not None:
            mp.MergeFrom(model.extra)
        mp.ir_version = model.ir_version
        _put_opsets(mp.opset_import, model.opset_imports, model.default_domain_unset)
        for field in ("producer_name", "producer_version", "domain", "doc_string"):
            if getattr(model, field):
                put_str(mp, field, getattr(model, field))
        if model.model_version:
            mp.model_version = model.model_version
        self.graph(model.graph, mp.graph, initializers=initializers)
        _put_props(mp.metadata_props, model.metadata_props)
        mp.training_info.extend(model.training_info)
        for func in model.functions.values():
            self.function(func, mp.functions.add())


STUB_LOCATION = "graphopt-shape-inference-stub"


def stub_tensor(out: onnx.TensorProto, t: Tensor, name: str) -> None:
    """``out`` as a data-less stand-in for ``t``: its name, type and dims, its data "external" at a location that
    does not exist (for shape inference, which reads types and dims, never such data)."""
    put_str(out, "name", name)
    out.data_type = t.dtype
    out.dims.extend(t.dims)
    out.data_location = onnx.TensorProto.EXTERNAL
    entry = out.external_data.add()
    entry.key, entry.value = "location", STUB_LOCATION


def _tensor_name(t: Tensor) -> str:
    return text(t._proto.name) if t._proto is not None else ""  # noqa: SLF001 - keep the attribute tensor's own name


def _sparse_proto(value: Any, name: str | None = None) -> onnx.SparseTensorProto:
    """The SparseTensorProto to write for a sparse initializer or attribute (a raw proto a pass set is kept)."""
    if isinstance(value, SparseTensor):
        return value.to_sparse_proto(name)
    if name is not None and value.values.name != name:
        out = onnx.SparseTensorProto()
        out.CopyFrom(value)
        put_str(out.values, "name", name)
        return out
    return value


def _alive(v: Value, graph: Graph) -> bool:
    """Whether a value listed in value_info is still worth an entry: it is still computed, stored or read.

    A node output goes with its node, an initializer's listing with the initializer (unless something still reads
    it); other listings (graph inputs, outer-scope names, names the file listed without defining) stay as loaded.
    """
    if v.producer is not None:
        return v.producer.graph is not None
    if v.const is not None:
        return graph.initializers.get(v.name) is v or bool(v.uses)
    return True


def to_proto(model: Model) -> onnx.ModelProto:
    """The model as a self-contained ModelProto; external tensor data is read in."""
    mp = onnx.ModelProto()
    with gc_paused():
        Exporter().model(model, mp)
    return mp


# --------------------------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------------------------
def load(source: str | os.PathLike[str] | bytes | onnx.ModelProto | Model) -> Model:
    """Load a model from a path, serialized bytes, a ModelProto, or return a Model as is.

    A ModelProto is never modified; tensors refer to its data lazily. From a path, the file and its external data are
    memory-mapped and weights stay views of them (see :mod:`graphopt.core.mapped`): while the model is in use, the files
    must not be truncated or rewritten in place (graphopt's own ``save`` always writes a new file and renames it, so
    saving over the source is safe; ``onnx.save`` to the same path is not).
    """
    if isinstance(source, Model):
        return source
    if isinstance(source, onnx.ModelProto):
        return from_proto(source)
    if isinstance(source, bytes):
        return from_proto(_parse(source, "<bytes>"))
    path = Path(os.fspath(source))
    file = _open_model_file(path)
    scanned = scan(file)
    try:
        if scanned is not None:
            model = from_proto(_parse(scanned.stripped, str(path)), base_dir=path.parent, mapped=scanned)
        else:
            model = from_proto(_parse(file.map[:] if file.map is not None else b"", str(path)), base_dir=path.parent)
    except TensorDataError as e:
        raise TensorDataError(f"{path}: {e}") from None
    model.source_path = str(path)
    model.external_files = {path: file, **model.external_files}  # every file the model reads, the model file first
    return model


def read_proto(path: Path) -> onnx.ModelProto:
    """Read and parse a model file without loading external data; one-line errors for the usual failures."""
    file = _open_model_file(path)
    return _parse(file.map[:] if file.map is not None else b"", str(path))


def _open_model_file(path: Path) -> ExternalFile:
    """Map a model file (a regular file only: a FIFO, a device or a directory is refused, never read)."""
    require_file(path)
    return ExternalFile(path, str(path), ModelLoadError)


def require_file(path: Path) -> None:
    """Raise the one-line ModelLoadError unless ``path`` names an existing regular file (a FIFO would block, a device
    such as /dev/zero never ends; a name too long or a symlink loop is an error, not a traceback)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: no such file") from None
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: cannot open ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelLoadError(f"{path}: is a directory, not an ONNX file")
    if not stat.S_ISREG(st.st_mode):
        raise ModelLoadError(f"{path}: {file_kind(st.st_mode)}, not a regular file")


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError(f"{where}: file is empty, not an ONNX model")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelLoadError(
            f"{where}: not a valid ONNX model (protobuf parse failed: {e}); truncated or wrong file?"
        ) from None
    if not proto.HasField("graph") or proto.ir_version <= 0:
        raise ModelLoadError(f"{where}: parses as protobuf but is not an ONNX model (no graph or ir_version)")
    return proto


def check(source: str | os.PathLike[str] | onnx.ModelProto, where: str | None = None) -> None:
    """Run the ONNX checker; raise ModelLoadError with its first line on failure."""
    try:
        onnx.checker.check_model(source if isinstance(source, onnx.ModelProto) else os.fspath(source))
    except Exception as e:  # noqa: BLE001 - ValidationError, InferenceError, ValueError...: the user needs one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        name = where or (os.fspath(source) if not isinstance(source, onnx.ModelProto) else "<model>")
        raise ModelLoadError(
            f"{name}: rejected by the ONNX checker: {first} (use --no-check to go on anyway)"
        ) from None


_varint = encode_varint

_GRAPH_TAG = _varint((7 << 3) | 2)  # ModelProto.graph, length-delimited
_INIT_TAG = _varint((5 << 3) | 2)  # GraphProto.initializer, length-delimited


def save(
    model: Model,
    path: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
    location: str | None = None,
    size_threshold: int = 1024,
    progress: Callable[[int, int], None] | None = None,
) -> Path | None:
    """Write ``model`` to ``path`` atomically (a temporary file in the same folder, then a rename). Returns the
    external data file written beside it, or None when the model went into the one file.

    ``external_data``: True writes tensors of ``size_threshold`` bytes or more to ``location`` (default
    ``<file name>.data``, relative to the output folder); None (default) does so when the model was loaded with
    external data or its tensors would not fit in a protobuf. Initializers are serialized one at a time straight into
    the file, so saving never holds a second copy of the weights. ``progress(done, total)`` is called with tensor bytes.
    """
    out = Path(os.fspath(path))
    folder = out.parent if str(out.parent) else Path(".")
    try:
        folder_ok = folder.is_dir()
    except (OSError, ValueError) as e:
        raise GraphoptError(f"{out}: cannot write ({getattr(e, 'strerror', None) or e})") from None
    if not folder_ok:
        raise GraphoptError(f"{out}: output folder {folder} does not exist")
    inits = list(model.graph.initializers.items())
    inits_bytes = {name: v.const.nbytes for name, v in inits if v.const is not None}
    total = sum(inits_bytes.values())
    external_data = wants_external_data(model, external_data)
    if location is None:
        location = out.name + ".data"
    data_path = None
    if external_data:
        _check_location(location, out)
        data_path = folder / location
    check_targets(model, out, data_path)

    temps: list[Path] = []
    release_mapped()  # what the passes read is not needed resident for the save
    sources = CopySources()
    try:
        data_tmp: Path | None = None
        stubs: dict[str, onnx.TensorProto] = {}
        done = 0
        if external_data:
            data_tmp, fd = _temp_beside(folder / location, temps)
            offset = 0
            held: HeldFile | None = None
            with os.fdopen(fd, "wb") as f:
                for name, v in inits:
                    t = v.const
                    assert t is not None
                    if t.nbytes < size_threshold or t.dtype == onnx.TensorProto.STRING:
                        continue
                    pad = (-offset) % 64  # align each tensor so that memory maps give aligned views
                    if pad:
                        f.write(b"\0" * pad)
                        offset += pad
                    length = t.write_to(f, sources)  # mapped data: copied file to file, never made resident
                    if t.is_spilled:  # a tensor a pass made moves into the output's data file
                        f.flush()
                        held = held or HeldFile(os.dup(f.fileno()), folder / location)
                        with contextlib.suppress(OSError, ValueError):  # no mmap there: it stays in the spill file
                            t.move_to(held, offset)
                    stub = onnx.TensorProto(data_type=t.dtype, dims=t.dims)
                    put_str(stub, "name", name)
                    stub.data_location = onnx.TensorProto.EXTERNAL
                    for key, val in (("location", location), ("offset", str(offset)), ("length", str(length))):
                        stub.external_data.add(key=key, value=val)
                    if t.doc_string:
                        put_str(stub, "doc_string", t.doc_string)
                    _put_props(stub.metadata_props, t.metadata_props)
                    stubs[name] = stub
                    offset += length
                    done += t.nbytes
                    if progress:
                        progress(done, total)
        mp = onnx.ModelProto()
        with gc_paused():
            Exporter().model(model, mp, initializers=False)
        pieces = [_tensor_piece(name, v.const, stubs.get(name)) for name, v in inits]  # type: ignore[arg-type]
        sizes = [piece.size for piece in pieces]
        graph_body = mp.graph.SerializeToString()
        mp.ClearField("graph")
        head = mp.SerializeToString()
        graph_len = len(graph_body) + sum(len(_INIT_TAG) + len(_varint(s)) + s for s in sizes)
        if not external_data and len(head) + graph_len > PROTOBUF_LIMIT:
            raise GraphoptError(
                f"{out}: the model is over 2 GB, which protobuf cannot hold; save it with external data"
            )
        model_tmp, fd = _temp_beside(out, temps)
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            f.write(_GRAPH_TAG)
            f.write(_varint(graph_len))
            f.write(graph_body)
            for (name, _), piece in zip(inits, pieces, strict=True):
                f.write(_INIT_TAG)
                f.write(_varint(piece.size))
                piece.write(f, sources)
                if name not in stubs:
                    done += inits_bytes.get(name, 0)
                    if progress:
                        progress(done, total)
        with critical_section():  # the renames happen together or not at all, whatever signal comes
            check_targets(model, out, data_path)  # again: nothing may have taken those names meanwhile
            if data_tmp is not None:
                os.replace(data_tmp, folder / location)
            _drop_old_output(out, model)
            os.replace(model_tmp, out)
            temps.clear()
        return data_path
    except PermissionError as e:
        raise GraphoptError(f"{out}: cannot write ({e.strerror or e})") from None
    except OSError as e:
        raise GraphoptError(f"{out}: cannot write ({e.strerror or e})") from None
    finally:
        sources.close()
        with critical_section():  # a second signal must not cut the cleanup short
            for t in temps:
                with contextlib.suppress(OSError):  # an append-only folder keeps them: the error above is the news
                    t.unlink(missing_ok=True)


def external_data_files(model: Model) -> list[Any]:
    """The external data files ``model`` was loaded with (:class:`ExternalFile`, with ``path`` and ``identity``): the
    files it reads other than its model file, told apart by device and inode."""
    source = model.external_files.get(Path(model.source_path)) if model.source_path else None
    own = getattr(source, "identity", None)
    return [
        f
        for f in model.external_files.values()
        if f is not source and (own is None or getattr(f, "identity", None) != own)
    ]


def wants_external_data(model: Model, external_data: bool | None) -> bool:
    """Whether ``save`` writes external data: as asked, or (None) when the model was loaded with external data or its
    tensors would not fit in a protobuf. "Loaded with external data" is the file's, not the tensors': a quantizer or
    fp16 conversion replaces every weight by a new array, and its output still gets a data file like the input had."""
    if external_data is not None:
        return external_data
    if external_data_files(model):
        return True
    consts = [v.const for v in model.graph.initializers.values() if v.const is not None]
    return any(t.is_external for t in consts) or sum(t.nbytes for t in consts) > AUTO_EXTERNAL_BYTES


class _Piece:
    """One initializer as the bytes of a TensorProto: a whole proto, or a small header proto followed by the
    raw_data field written straight from the tensor's memory (a numpy array) or copied from the file it is mapped
    from (:meth:`Tensor.write_to`), never copied in memory."""

    __slots__ = ("proto", "head", "view", "tensor", "size")

    def __init__(
        self,
        proto: onnx.TensorProto | None,
        head: bytes = b"",
        view: memoryview | None = None,
        tensor: Tensor | None = None,
        length: int = 0,
    ) -> None:
        self.proto, self.head, self.view, self.tensor = proto, head, view, tensor
        if proto is not None:
            self.size = proto.ByteSize()
        else:
            self.size = len(head) + (len(view) if view is not None else length)

    def write(self, f: Any, sources: CopySources) -> None:
        if self.proto is not None:
            f.write(self.proto.SerializeToString())
            return
        f.write(self.head)
        if self.view is not None:
            f.write(self.view)
        else:
            assert self.tensor is not None
            self.tensor.write_to(f, sources)


_RAW_DATA_TAG = _varint((9 << 3) | 2)  # TensorProto.raw_data, length-delimited


def _tensor_piece(name: str, t: Tensor, stub: onnx.TensorProto | None) -> _Piece:
    if stub is not None:
        return _Piece(stub)
    length = t.mapped_length()
    if length is not None:
        head = t.header(name).SerializeToString()
        return _Piece(None, head + _RAW_DATA_TAG + _varint(length), tensor=t, length=length)
    view = t.raw_view()
    if view is None:
        return _Piece(t.to_proto(name))
    head = t.header(name).SerializeToString()
    return _Piece(None, head + _RAW_DATA_TAG + _varint(len(view)), view)


def _drop_old_output(out: Path, model: Model) -> None:
    """Unlink a previous output before renaming the new file over its name.

    Renaming over an existing file makes ext4 (auto_da_alloc) flush the new file's data first, which costs more than
    the write itself on small models. Unlinking first avoids that; the old output is being replaced anyway. The
    model's own source file is never unlinked: an in-place save keeps the atomic rename.
    """
    source = model.source_path
    if not out.is_file() or (source and same_file(out, Path(source))):
        return
    with contextlib.suppress(OSError):
        out.unlink()


_critical_depth = 0
_deferred: list[Callable[[], None]] = []


@contextlib.contextmanager
def critical_section() -> Iterator[None]:
    """A stretch of ``save`` that must not be cut by a signal handler that raises: creating a temporary file and
    recording it for cleanup, the renames that put the output in place, the cleanup itself. A handler installed with
    :func:`run_or_defer` (the CLI's SIGTERM/SIGHUP/SIGINT handler) waits until the outermost section is over."""
    global _critical_depth
    _critical_depth += 1
    try:
        yield
    finally:
        _critical_depth -= 1
        if _critical_depth == 0 and _deferred:
            actions = list(_deferred)
            _deferred.clear()
            for action in actions:
                action()


def run_or_defer(action: Callable[[], None]) -> None:
    """Run ``action`` now, or at the end of the current :func:`critical_section` (for signal handlers)."""
    if _critical_depth:
        _deferred.append(action)
    else:
        action()


def _temp_beside(target: Path, temps: list[Path]) -> tuple[Path, int]:
    """A new empty file next to ``target`` and its open descriptor; its path is added to ``temps`` at once.

    The file is written through this descriptor, never reopened with truncation: ext4 treats truncate-then-write as
    a file being replaced and flushes it to disk on close, which makes the write, and a later unlink, cost more.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_BINARY", 0)
    names = tempfile._get_candidate_names()  # noqa: SLF001 - mkstemp's own random names
    for _ in range(1000):
        path = target.parent / f".{target.name}.{next(names)}.tmp"
        with critical_section():
            try:
                fd = os.open(path, flags, 0o666)  # the umask applies, as to any ordinary output file
            except FileExistsError:
                continue
            temps.append(path)
        return path, fd
    raise FileExistsError(f"no free temporary name beside {target}")


def _check_location(location: str, out: Path) -> None:
    loc = Path(location)
    if loc.is_absolute() or ".." in loc.parts or len(loc.parts) != 1:
        raise ExternalDataError(f"external data location {location!r} must be a plain file name in the output folder")
    if location == out.name:
        raise ExternalDataError(f"{out}: external data location {location!r} is the model file itself")


def check_targets(model: Model, out: Path, data: Path | None) -> None:
    """Refuse to write ``out`` (and the external data file ``data``) where that would destroy something.

    Each may be new or an existing regular file; anything else that exists (a directory, a FIFO, a device such as
    /dev/null, a socket) is refused, since the write renames a new file over the name. Neither may be a file the
    loaded ``model`` reads (its model file or any of its external data files, compared by device and inode, so
    symlinks, hard links and other spellings count), with one exception, an in-place save: when ``out`` is the model's
    own source file, ``data`` may replace the source's external data (the model keeps reading the old bytes through
    its memory maps until it is gone) but never the source model file itself.
    """
    reads = {f.identity: f.path for f in model.external_files.values() if getattr(f, "identity", None)}
    source = model.external_files.get(Path(model.source_path)) if model.source_path else None
    source_id = getattr(source, "identity", None)
    out_id = target_identity(out, "output")
    if out_id is not None and out_id in reads and out_id != source_id:
        raise GraphoptError(f"{out}: {_is_input(out, reads[out_id])}; writing there would destroy the input")
    if data is None:
        return
    data_id = target_identity(data, "external data file")
    if data_id is not None and data_id in reads:
        in_place = source_id is not None and out_id == source_id
        if not in_place or data_id == source_id:
            raise GraphoptError(
                f"{out}: its external data file {data} {_is_input(data, reads[data_id])}; writing there would "
                "destroy the input"
            )


def _is_input(path: Path, known: Path) -> str:
    same = os.path.abspath(path) == os.path.abspath(known)
    return "is a file the input model reads" if same else f"is {known}, a file the input model reads"


def target_identity(path: Path, what: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of an existing regular file at ``path`` (symlinks followed), None if nothing is there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise GraphoptError(f"{path}: cannot write the {what} ({getattr(e, 'strerror', None) or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise GraphoptError(
            f"{path}: the {what} {file_kind(st.st_mode)}, not a regular file; graphopt only replaces regular files"
        )
    return (st.st_dev, st.st_ino)


install_exporter(to_proto)  # Model.to_onnx()
