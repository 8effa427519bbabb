"""graphopt's intermediate representation: Model, Graph, Node, Value, Attribute.

Values are SSA edges: each has at most one producer and knows all its uses, including uses from nodes inside subgraphs
that read it from an outer scope. A Graph keeps its nodes in a doubly linked list, so inserting and removing a node is
O(1), and every edit keeps the order topological as long as the pass inserts a node after the producers of its inputs
(``Graph.sort`` restores the order when a pass cannot). Fields the IR does not model are kept verbatim in ``extra``
protos so that load -> save with no pass loses nothing.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import onnx

from graphopt.core.tensors import Tensor, dtype_name
from graphopt.errors import IRError, ModelLoadError

Dim = int | str | None
"""One dimension: a static size, a symbolic name, or None for unknown."""

_A = onnx.AttributeProto


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while many long-lived IR objects are made or rewired (import, the pass
    pipeline, export).

    Nodes and values reference each other, so every allocation counts toward a collection that would scan the whole,
    growing graph again and again: pausing it makes import about 40% faster on large graphs. Cycles left by removed
    nodes are collected once the collector runs again.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_EXPORTER: Callable[[Model], onnx.ModelProto] | None = None
"""Model -> ModelProto, installed by :mod:`graphopt.core.onnx_io` (dependency inversion: I/O depends on the IR only)."""


def install_exporter(exporter: Callable[[Model], onnx.ModelProto]) -> None:
    global _EXPORTER
    _EXPORTER = exporter


# --------------------------------------------------------------------------------------------------------------------
# Value
# --------------------------------------------------------------------------------------------------------------------
class Value:
    """An SSA value: a named edge with a type, one producer (or none) and its uses.

    ``const`` holds the data of an initializer. ``uses`` maps ``(node, input_index)`` to None, in insertion order.
    dtype and shape are decoded lazily from the ONNX type they were loaded with; setting either drops that type.
    """

    __slots__ = (
        "name",
        "producer",
        "index",
        "uses",
        "const",
        "overridable",
        "doc_string",
        "metadata_props",
        "_type_proto",
        "_dtype",
        "_shape",
        "_decoded",
        "__weakref__",
    )

    def __init__(
        self,
        name: str | None = None,
        dtype: int | None = None,
        shape: Sequence[Dim] | None = None,
        *,
        const: Tensor | None = None,
    ) -> None:
        self.name = name
        self.producer: Node | None = None
        self.index: int = 0
        self.uses: dict[tuple[Node, int], None] = {}
        self.const = const
        self.overridable = False
        """An initializer that is also a graph input (IR version >= 4): callers may feed another value."""
        self.doc_string = ""
        self.metadata_props: dict[str, str] = {}
        self._type_proto: onnx.TypeProto | None = None
        self._dtype = dtype
        self._shape = tuple(shape) if shape is not None else None
        self._decoded = True
        if const is not None and dtype is None and shape is None:
            self._dtype, self._shape = const.dtype, const.dims

    # type ---------------------------------------------------------------------------------------------------------
    def _decode(self) -> None:
        tp = self._type_proto
        self._decoded = True
        if tp is None or tp.WhichOneof("value") != "tensor_type":
            return
        tt = tp.tensor_type
        self._dtype = tt.elem_type or None
        if tt.HasField("shape"):
            dims: list[Dim] = []
            for d in tt.shape.dim:
                kind = d.WhichOneof("value")
                dims.append(d.dim_value if kind == "dim_value" else d.dim_param if kind == "dim_param" else None)
            self._shape = tuple(dims)

    @property
    def dtype(self) -> int | None:
        """ONNX element type (``onnx.TensorProto.FLOAT``...) or None if unknown or not a tensor."""
        if not self._decoded:
            self._decode()
        return self._dtype

    @dtype.setter
    def dtype(self, value: int | None) -> None:
        _ = self.shape
        self._type_proto = None
        self._dtype = value

    @property
    def shape(self) -> tuple[Dim, ...] | None:
        """Dims (int, symbolic str, or None for unknown), or None if the rank is unknown."""
        if not self._decoded:
            self._decode()
        return self._shape

    @shape.setter
    def shape(self, value: Sequence[Dim] | None) -> None:
        _ = self.dtype
        self._type_proto = None
        self._shape = tuple(value) if value is not None else None

    @property
    def type_proto(self) -> onnx.TypeProto | None:
        """The ONNX type this value was loaded with (kept for non-tensor types and denotations), if unchanged."""
        return self._type_proto

    def set_type_proto(self, tp: onnx.TypeProto | None) -> None:
        self._type_proto = tp
        self._dtype = None
        self._shape = None
        self._decoded = tp is None

    @property
    def has_type(self) -> bool:
        return self._type_proto is not None or self._dtype is not None or self._shape is not None

    # graph relations --------------------------------------------------------------------------------------------------
    def users(self) -> list[Node]:
        """The distinct nodes that read this value, in the order the uses were made."""
        return list(dict.fromkeys(node for node, _ in self.uses))

    def is_graph_output(self, graph: Graph | None = None) -> bool:
        """Whether the value is an output of ``graph`` (default: the graph of its producer; a value without a producer
        needs the graph named)."""
        if graph is None:
            if self.producer is None or self.producer.graph is None:
                raise IRError(f"{self!r} has no producer in a graph: name the graph is_graph_output() should look at")
            graph = self.producer.graph
        return graph.is_output(self)

    def is_graph_input(self, graph: Graph | None = None) -> bool:
        """Whether the value is an input of ``graph``; without a graph, whether it is an input of any graph (it has no
        producer and is not a (non-overridable) initializer)."""
        if graph is None:
            return self.producer is None and (self.const is None or self.overridable)
        return graph.is_input(self)

    def is_initializer(self) -> bool:
        """Whether the value is an initializer (its data is ``const``; it may also be an overridable graph input)."""
        return self.const is not None

    def single_user(self) -> Node | None:
        """The one node that reads this value, if exactly one node does (through any number of its inputs) and the
        value is not an output of its graph or of any graph enclosing the reader; otherwise None. A pass that rewrites
        the value's only consumer in place uses this to know nobody else sees the change."""
        users = self.users()
        if len(users) != 1:
            return None
        graph = self.producer.graph if self.producer is not None else users[0].graph
        while graph is not None:
            if graph.is_output(self):
                return None
            graph = graph.parent
        return users[0]

    def constant(self) -> Tensor | None:
        """The value's data if it is a constant: an initializer or the output of a ``Constant`` node with ``value``.

        An initializer that is also a graph input can be overridden by the caller (``overridable``), so it is not a
        constant; in models of IR version < 4 every initializer had to be listed as an input, and stays constant.
        """
        if self.const is not None:
            return None if self.overridable else self.const
        node = self.producer
        if node is not None and node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
            attr = node.attrs.get("value")
            if attr is not None and isinstance(attr.value, Tensor):
                return attr.value
        return None

    def __repr__(self) -> str:
        shape = "?" if self.shape is None else "x".join(str(d) if d is not None else "?" for d in self.shape)
        return f"Value({self.name!r}, {dtype_name(self.dtype)}[{shape}])"


# --------------------------------------------------------------------------------------------------------------------
# Attribute
# --------------------------------------------------------------------------------------------------------------------
def constant_array(v: Value | None) -> Any:
    """``v``'s data as a numpy array when it is a constant (see :meth:`Value.constant`), else None."""
    t = v.constant() if v is not None else None
    return None if t is None else t.numpy()


class Attribute:
    """A typed node attribute. ``value`` is a Python value: int, float, str, Tensor, Graph, or a list of those.

    ``ref_attr_name`` is set (and ``value`` is None) inside function bodies where the attribute refers to one of the
    function's own attributes. Strings that are not UTF-8 stay bytes.
    """

    __slots__ = ("name", "type", "value", "ref_attr_name", "doc_string", "untyped")

    def __init__(
        self,
        name: str,
        value: Any,
        type: int | None = None,  # noqa: A002 - mirrors AttributeProto.type
        *,
        ref_attr_name: str = "",
        doc_string: str = "",
    ) -> None:
        self.name = name
        self.value = value
        self.type = type if type is not None else _infer_attr_type(value)
        self.ref_attr_name = ref_attr_name
        self.doc_string = doc_string
        self.untyped = False

    def __repr__(self) -> str:
        if self.ref_attr_name:
            return f"Attribute({self.name}=@{self.ref_attr_name})"
        return f"Attribute({self.name}={self.value!r})"


def _infer_attr_type(value: Any) -> int:
    if isinstance(value, bool | int):
        return _A.INT
    if isinstance(value, float):
        return _A.FLOAT
    if isinstance(value, str | bytes):
        return _A.STRING
    if isinstance(value, Tensor):
        return _A.TENSOR
    if isinstance(value, Graph):
        return _A.GRAPH
    if isinstance(value, onnx.SparseTensorProto):
        return _A.SPARSE_TENSOR
    if isinstance(value, onnx.TypeProto):
        return _A.TYPE_PROTO
    if isinstance(value, list | tuple):
        if not value:
            raise IRError("cannot infer the type of an empty list attribute; pass type= explicitly")
        single = _infer_attr_type(value[0])
        if single == _A.INT and any(isinstance(v, float) for v in value):
            single = _A.FLOAT
        return {
            _A.INT: _A.INTS,
            _A.FLOAT: _A.FLOATS,
            _A.STRING: _A.STRINGS,
            _A.TENSOR: _A.TENSORS,
            _A.GRAPH: _A.GRAPHS,
            _A.SPARSE_TENSOR: _A.SPARSE_TENSORS,
            _A.TYPE_PROTO: _A.TYPE_PROTOS,
        }[single]
    raise IRError(f"cannot infer an ONNX attribute type for {type(value).__name__}")


# --------------------------------------------------------------------------------------------------------------------
# Node
# --------------------------------------------------------------------------------------------------------------------
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
"""The names of the default ONNX operator domain (``""`` and its alias ``"ai.onnx"``)."""
ONNX_DOMAINS = STANDARD_DOMAINS | {"ai.onnx.ml"}
"""Every domain whose operators the ONNX standard defines (the default domain and ``ai.onnx.ml``)."""
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
"""The ONNX ops that draw random numbers: a pass never folds, merges or moves them (each run draws anew)."""


def weight_axes(node: Node, rank: int = 2) -> tuple[int, int] | None:
    """``(output-channel axis, input-channel axis)`` of the weight (input 1) of a Conv, ConvTranspose, Gemm or MatMul
    node (a MatMul weight of rank ``rank``: its last two axes); None for other ops. The single source of this layout
    for folding, pruning, quantization and the TensorRT placement rules."""
    if node.domain not in STANDARD_DOMAINS:
        return None
    op = node.op_type
    if op == "Conv":
        return 0, 1
    if op == "ConvTranspose":
        return 1, 0
    if op == "Gemm":
        return (0, 1) if int(node.attr("transB", 0)) else (1, 0)
    if op == "MatMul":
        return rank - 1, rank - 2
    return None


_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})
"""The standard ops with graph attributes; other domains may have any."""


class Node:
    """An operator application. Inputs are Values or None (an omitted optional input); outputs likewise.

    Create a node with input Values and a number of outputs; its outputs get unique names when it is added to a graph.
    Change its inputs only through :meth:`set_input` / :meth:`replace_input` so that use lists stay right.
    """

    __slots__ = (
        "op_type",
        "domain",
        "name",
        "overload",
        "attrs",
        "doc_string",
        "metadata_props",
        "extra",
        "graph",
        "_inputs",
        "_outputs",
        "_prev",
        "_next",
        "__weakref__",
    )

    def __init__(
        self,
        op_type: str,
        inputs: Iterable[Value | None] = (),
        attrs: dict[str, Any] | None = None,
        *,
        num_outputs: int = 1,
        outputs: Sequence[Value | None] | None = None,
        domain: str = "",
        name: str = "",
        overload: str = "",
        doc_string: str = "",
    ) -> None:
        self.op_type = op_type
        self.domain = domain
        self.name = name
        self.overload = overload
        self.doc_string = doc_string
        self.metadata_props: dict[str, str] = {}
        self.extra: onnx.NodeProto | None = None
        self.graph: Graph | None = None
        self._prev: Node | None = None
        self._next: Node | None = None
        self.attrs: dict[str, Attribute] = {}
        for key, val in (attrs or {}).items():
            self.attrs[key] = val if isinstance(val, Attribute) else Attribute(key, val)
        self._inputs: list[Value | None] = []
        for i, v in enumerate(inputs):
            self._inputs.append(v)
            if v is not None:
                v.uses[(self, i)] = None
        if outputs is None:
            outputs = [Value() for _ in range(num_outputs)]
        self._outputs: list[Value | None] = list(outputs)
        for i, out in enumerate(self._outputs):
            if out is None:
                continue
            if out.producer is not None:
                raise IRError(f"value {out.name!r} already has a producer")
            out.producer, out.index = self, i

    # inputs and outputs ---------------------------------------------------------------------------------------------
    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return tuple(self._inputs)

    @property
    def outputs(self) -> tuple[Value | None, ...]:
        return tuple(self._outputs)

    @property
    def output(self) -> Value:
        """The first output (most ops have exactly one)."""
        out = self._outputs[0]
        assert out is not None
        return out

    def set_input(self, index: int, value: Value | None) -> None:
        """Make input ``index`` read ``value`` (None omits it); appends when ``index`` equals the input count."""
        if index == len(self._inputs):
            self._inputs.append(None)
        old = self._inputs[index]
        if old is not None:
            old.uses.pop((self, index), None)
        self._inputs[index] = value
        if value is not None:
            value.uses[(self, index)] = None

    def insert_input(self, index: int, value: Value | None) -> None:
        """Insert an input at ``index`` (the inputs after it move up by one; their uses follow)."""
        values = list(self._inputs)
        values.insert(index, value)
        self.set_inputs(values)

    def insert_output(self, index: int, value: Value | None = None) -> Value:
        """Insert a new output at ``index`` (a new Value unless one without a producer is given) and return it; the
        outputs after it move up by one (their readers are unaffected: a use names the reader's input index). A node
        already in a graph names the new output at once."""
        out = Value() if value is None else value
        if out.producer is not None:
            raise IRError(f"value {out.name!r} already has a producer")
        self._outputs.insert(index, out)
        for i, o in enumerate(self._outputs):
            if o is not None:
                o.producer, o.index = self, i
        if self.graph is not None:
            self.graph._name_outputs(self)
        return out

    def remove_output(self, index: int) -> None:
        """Remove output ``index``, which nobody may read; the outputs after it move down by one."""
        out = self._outputs[index]
        if out is not None:
            if out.uses:
                raise IRError(f"cannot remove output {out.name!r} of {self}: it is still read")
            if self.graph is not None and self.graph.is_output(out):
                raise IRError(f"cannot remove output {out.name!r} of {self}: it is a graph output")
            out.producer = None
        del self._outputs[index]
        for i, o in enumerate(self._outputs):
            if o is not None:
                o.index = i

    def replace_input(self, old: Value, new: Value | None) -> None:
        """Make every input that reads ``old`` read ``new``."""
        for i, v in enumerate(self._inputs):
            if v is old:
                self.set_input(i, new)

    def set_inputs(self, values: Iterable[Value | None]) -> None:
        """Replace all inputs at once."""
        self._detach_own_inputs()
        self._inputs = []
        for i, v in enumerate(values):
            self._inputs.append(v)
            if v is not None:
                v.uses[(self, i)] = None

    def _detach_own_inputs(self) -> None:
        for i, v in enumerate(self._inputs):
            if v is not None:
                v.uses.pop((self, i), None)

    def detach(self) -> None:
        """Drop this node's uses of its inputs, and those of every node in its subgraphs."""
        self._detach_own_inputs()
        for g in self.subgraphs():
            for n in g.all_nodes():
                n._detach_own_inputs()

    # attributes -----------------------------------------------------------------------------------------------------
    def attr(self, name: str, default: Any = None) -> Any:
        """An attribute's value, or ``default`` when the node does not set it."""
        a = self.attrs.get(name)
        return default if a is None else a.value

    def set_attr(self, name: str, value: Any, type: int | None = None) -> None:  # noqa: A002
        self.attrs[name] = Attribute(name, value, type)

    def subgraphs(self) -> Iterator[Graph]:
        """The graphs held by this node's attributes (If branches, Loop and Scan bodies...)."""
        if self.domain in STANDARD_DOMAINS and self.op_type not in _SUBGRAPH_OPS:
            return iter(())  # the hot path: passes ask every node, and standard ops without bodies have none
        return self._graph_attributes()

    def _graph_attributes(self) -> Iterator[Graph]:
        for a in self.attrs.values():
            if a.type == _A.GRAPH and a.value is not None:
                yield a.value
            elif a.type == _A.GRAPHS and a.value:
                yield from a.value

    # order --------------------------------------------------------------------------------------------------------
    @property
    def next(self) -> Node | None:
        return self._next if self._next is not None and self._next.graph is not None else None

    @property
    def prev(self) -> Node | None:
        return self._prev if self._prev is not None and self._prev.graph is not None else None

    def __repr__(self) -> str:
        ins = ", ".join(v.name or "?" if v is not None else "" for v in self._inputs)
        outs = ", ".join(v.name or "?" if v is not None else "" for v in self._outputs)
        op = f"{self.domain}::{self.op_type}" if self.domain else self.op_type
        return f"Node({self.name or '<unnamed>'}: {op}({ins}) -> {outs})"


class _Head(Node):
    """The sentinel of a graph's circular node list; never visible to users."""

    def __init__(self) -> None:  # noqa: D107 - sentinel
        self._prev = self._next = self  # type: ignore[assignment]
        self.graph = None


# --------------------------------------------------------------------------------------------------------------------
# Graph
# --------------------------------------------------------------------------------------------------------------------
class Graph:
    """A graph: inputs, initializers, nodes in topological order, outputs.

    Iterating a graph yields its nodes in order. It is safe to remove the current node (or later nodes) while
    iterating. A subgraph knows the node that owns it (``owner``), so name lookup and ``unique_name`` see outer scopes.
    """

    def __init__(
        self,
        inputs: Iterable[Value] = (),
        outputs: Iterable[Value] = (),
        nodes: Iterable[Node] = (),
        initializers: Iterable[Value] = (),
        *,
        name: str = "",
        doc_string: str = "",
    ) -> None:
        self.name = name
        self.doc_string = doc_string
        self.metadata_props: dict[str, str] = {}
        self.extra: onnx.GraphProto | None = None
        self.inputs: list[Value] = list(inputs)
        self.outputs: list[Value] = list(outputs)
        self.initializers: dict[str, Value] = {}
        self.sparse_initializers: dict[str, Value] = {}
        self.value_info: list[Value] = []
        """Values listed in the ONNX value_info at load, in order (exported again while they are in use)."""
        self.info_overrides: dict[tuple[str, Value], tuple[onnx.ValueInfoProto, onnx.TypeProto | None]] = {}
        """Listings of a value (as "input", "output" or "value_info") whose ONNX type differed from the value's own
        at load; written back as they were while the value's type stays unchanged."""
        self.owner: Node | None = None
        self._head = _Head()
        self._count = 0
        self._names: set[str] | None = None
        self._counter = itertools.count()
        for v in initializers:
            self.add_initializer(v)
        for node in nodes:
            self.append(node)

    # iteration ----------------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        # A removed node keeps its _next link, so iteration continues correctly when the loop body removes the
        # current node (or later ones); nodes inserted after the current node are visited.
        head = self._head
        node = head._next
        while node is not head:
            assert node is not None
            if node.graph is self:
                yield node
            node = node._next

    def __len__(self) -> int:
        return self._count

    @property
    def nodes(self) -> list[Node]:
        return list(self)

    def reversed(self) -> Iterator[Node]:
        """Nodes from last to first; removing the current node while iterating is safe."""
        head = self._head
        node = head._prev
        while node is not head:
            assert node is not None
            if node.graph is self:
                yield node
            node = node._prev

    def all_nodes(self) -> Iterator[Node]:
        """Every node of this graph and, depth first, of its subgraphs."""
        for node in self:
            yield node
            if node.domain not in STANDARD_DOMAINS or node.op_type in _SUBGRAPH_OPS:  # Node.subgraphs' test, inlined
                for g in node._graph_attributes():
                    yield from g.all_nodes()

    def subgraphs(self) -> Iterator[Graph]:
        """Every subgraph nested in this graph, depth first (not including this graph)."""
        for node in self:  # every pass asks this of the whole model: Node.subgraphs' test inlined (half the time)
            if node.domain not in STANDARD_DOMAINS or node.op_type in _SUBGRAPH_OPS:
                for g in node._graph_attributes():
                    yield g
                    yield from g.subgraphs()

    def node_count(self, recursive: bool = True) -> int:
        return sum(1 for _ in self.all_nodes()) if recursive else self._count

    @property
    def parent(self) -> Graph | None:
        """The graph that holds the node owning this subgraph, or None for a top-level graph."""
        return self.owner.graph if self.owner is not None else None

    @property
    def root(self) -> Graph:
        g = self
        while g.parent is not None:
            g = g.parent
        return g

    # editing ------------------------------------------------------------------------------------------------------
    def _link(self, node: Node, after: Node) -> None:
        if node.graph is not None:
            raise IRError(f"{node} is already in a graph; remove it first")
        node.graph = self
        nxt = after._next
        assert nxt is not None
        node._prev, node._next = after, nxt
        after._next = node
        nxt._prev = node
        self._count += 1
        self._name_outputs(node)

    def _name_outputs(self, node: Node) -> None:
        for out in node._outputs:
            if out is not None and not out.name:
                out.name = self.unique_name(f"{node.op_type}_out" if not node.name else f"{node.name}_out")

    def append(self, node: Node) -> Node:
        """Add ``node`` at the end."""
        self._link(node, self._head._prev)  # type: ignore[arg-type]
        return node

    def insert_before(self, anchor: Node, node: Node) -> Node:
        """Add ``node`` just before ``anchor``."""
        self._check_member(anchor)
        self._link(node, anchor._prev)  # type: ignore[arg-type]
        return node

    def insert_after(self, anchor: Node, node: Node) -> Node:
        """Add ``node`` just after ``anchor``."""
        self._check_member(anchor)
        self._link(node, anchor)
        return node

    def _check_member(self, node: Node) -> None:
        if node.graph is not self:
            raise IRError(f"{node} is not in this graph")

    def remove(self, node: Node, *, safe: bool = True) -> None:
        """Take ``node`` out of the graph and drop its uses of its inputs.

        With ``safe`` (the default) the node's outputs must have no uses and must not be graph outputs.
        """
        self._check_member(node)
        if safe:
            for out in node._outputs:
                if out is None:
                    continue
                if out.uses:
                    raise IRError(f"cannot remove {node}: output {out.name!r} is still used")
                if self.is_output(out):
                    raise IRError(f"cannot remove {node}: output {out.name!r} is a graph output")
        node.detach()
        self._unlink(node)

    def take(self, node: Node) -> Node:
        """Take ``node`` out of this graph keeping its inputs' uses, to insert it into another graph (inlining)."""
        self._check_member(node)
        self._unlink(node)
        return node

    def _unlink(self, node: Node) -> None:
        # unlink but keep node._next so that an iterator standing on this node can continue
        prv, nxt = node._prev, node._next
        assert prv is not None and nxt is not None
        prv._next = nxt
        nxt._prev = prv
        node.graph = None
        self._count -= 1

    def replace_all_uses_with(self, old: Value, new: Value, *, exclude: Iterable[Node] = ()) -> None:
        """Make every reader of ``old`` read ``new``, in this graph, its subgraphs, and graph outputs.

        Readers in ``exclude`` keep reading ``old``: that is how a node is inserted after a value
        (``y = Node("Mul", [x, two])``, then ``replace_all_uses_with(x, y.output, exclude=[y])``).
        If ``old`` is an output of this graph, ``new`` takes its place there and also its name, so output names
        never change; when ``new`` cannot be renamed (it is a graph input, initializer or already an output, or comes
        from an outer scope), an Identity node keeps the old name instead. In a body whose outputs are matched by
        position (:attr:`outputs_by_position`), an input of the body takes the output's place as it is. A graph input
        that is also a graph output stays that output: only its readers move to ``new``.
        """
        if old is new:
            return
        skip = {id(n) for n in exclude}
        for node, i in list(old.uses):
            if id(node) not in skip:
                node.set_input(i, new)
        if not self.is_output(old):
            return
        if self.is_input(old):
            # A graph input that is also a graph output: the output *is* the input, its name is the model's
            # interface, and no value computed from it may take that name. The output keeps reading the input.
            return
        if self.can_take_output(new, old) and self.is_input(new):
            # a body matched by position (can_take_output says so): the input itself becomes the output, names as
            # they are (the original model's Loop bodies do the same for values they pass through)
            self.outputs = [new if o is old else o for o in self.outputs]
        elif self.can_take_output(new, old):
            old_name = old.name
            old.name = self.unique_name(f"{old_name}_replaced")
            new.name = old_name
            self._copy_output_type(old, new)
            self.outputs = [new if o is old else o for o in self.outputs]
        else:
            ident = Node("Identity", [new], outputs=[Value()], name=self.unique_name(f"{old.name}_identity"))
            out = ident.output
            out.name = old.name
            old.name = self.unique_name(f"{out.name}_replaced")
            self._copy_output_type(old, out)
            self.append(ident)
            self.outputs = [out if o is old else o for o in self.outputs]

    @staticmethod
    def _copy_output_type(src: Value, dst: Value) -> None:
        if src.type_proto is not None:
            dst.set_type_proto(src.type_proto)
        elif src.has_type and not dst.has_type:
            dst.dtype, dst.shape = src.dtype, src.shape
        dst.doc_string = dst.doc_string or src.doc_string

    def add_initializer(self, value: Value) -> Value:
        """Register a constant Value (its ``const`` set) as an initializer of this graph; names it if needed."""
        if value.const is None:
            raise IRError(f"initializer {value.name!r} has no data")
        if not value.name:
            value.name = self.unique_name("const")
        self.initializers[value.name] = value
        return value

    def make_constant(self, tensor: Tensor, name: str = "const") -> Value:
        """A new initializer Value holding ``tensor``."""
        return self.add_initializer(Value(self.unique_name(name), const=tensor))

    # interface tests ------------------------------------------------------------------------------------------------
    @property
    def outputs_by_position(self) -> bool:
        """Whether this graph's outputs are matched by position, not by name: the body of a standard If, Loop, Scan or
        SequenceMap. Its outputs' names are no interface, so an output may be one of the graph's own inputs (a Loop's
        loop-carried value passed through unchanged)."""
        owner = self.owner
        return owner is not None and owner.domain in STANDARD_DOMAINS and owner.op_type in _SUBGRAPH_OPS

    def can_take_output(self, new: Value, old: Value | None = None) -> bool:
        """Whether ``new`` can take the place of one of this graph's outputs (``old``, if known) without an Identity
        node: it is computed by a node of this graph (it takes the output's name) or, in a body whose outputs are
        matched by position, it is an input of this graph; and it is not an output already (a graph lists each output
        once). Never an input in a Scan body (onnxruntime's Scan gives wrong values, or refuses to run, when a state
        output is the body's input itself: skl2onnx's pairwise distances pass their state through an Identity); not
        an input for a Loop body's scan output declared with dims the input is not known to have
        (:meth:`_scan_dims_lost`)."""
        if self.is_output(new):
            return False
        if new.producer is not None and new.producer.graph is self:
            return True
        return (
            self.outputs_by_position
            and self.is_input(new)
            and self.owner.op_type != "Scan"
            and not self._scan_dims_lost(old, new)
        )

    def _scan_dims_lost(self, old: Value | None, new: Value) -> bool:
        """Whether listing the body input ``new`` as the Loop body's scan output ``old`` would lose the rank or a
        static dim the file declared for ``old``: onnxruntime gives a Loop that runs zero times an empty scan output
        shaped from that declaration ((0, 2, 3); (0, 0, 0) for ["h", "w"]; (0,) without one), and an input listed as
        an output has the input's type."""
        owner = self.owner
        if old is None or owner is None or owner.op_type != "Loop" or owner.domain not in STANDARD_DOMAINS:
            return False
        index = next((i for i, o in enumerate(self.outputs) if o is old), None)
        if index is None or index < len(owner.inputs) - 1:  # the condition and the carried values: not stacked
            return False
        listing = self.info_overrides.get(("output", old))  # the file's type, if inference set it aside
        if listing is None:  # a value that took the output's place and name after it was set aside: its listing
            listing = next(
                (o for (kind, _), o in self.info_overrides.items() if kind == "output" and o[0].name == old.name),
                None,
            )
        if listing is not None:
            stated = Value()
            stated.set_type_proto(listing[0].type)
            declared = stated.shape
        else:
            declared = old.shape
        if not declared:
            return False
        known = new.shape
        if known is None or len(known) != len(declared):
            return True
        return any(isinstance(d, int) and k != d for d, k in zip(declared, known, strict=True))

    def is_output(self, v: Value | None) -> bool:
        """Whether ``v`` is one of this graph's outputs (the one test: ``Value.is_graph_output`` asks this)."""
        return v is not None and any(o is v for o in self.outputs)

    def is_input(self, v: Value | None) -> bool:
        """Whether ``v`` is one of this graph's inputs (the one test: ``Value.is_graph_input`` asks this)."""
        return v is not None and any(i is v for i in self.inputs)

    def is_initializer(self, v: Value | None) -> bool:
        """Whether ``v`` is one of this graph's initializers."""
        return v is not None and v.is_initializer() and v.name is not None and self.initializers.get(v.name) is v

    # names --------------------------------------------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        """A value/node name not used anywhere in the root graph and its subgraphs."""
        root = self.root
        if root._names is None:
            root._names = root._collect_names()
        names = root._names
        name = base
        while name in names:
            name = f"{base}_{next(root._counter)}"
        names.add(name)
        return name

    def name_unnamed_nodes(self) -> None:
        """Give every unnamed node of this graph a unique name (``<op>_node``): tools that select, report or
        rebuild nodes by name need one."""
        for node in self:
            if not node.name:
                node.name = self.unique_name(f"{node.op_type}_node")

    def _collect_names(self) -> set[str]:
        names: set[str] = set()
        graphs = [self, *self.subgraphs()]
        for g in graphs:
            names.update(v.name for v in g.inputs if v.name)
            names.update(g.initializers)
            names.update(g.sparse_initializers)
            for node in g:
                if node.name:
                    names.add(node.name)
                names.update(v.name for v in node._outputs if v is not None and v.name)
        return names

    # order --------------------------------------------------------------------------------------------------------
    def sort(self) -> None:
        """Reorder nodes topologically, keeping the current order wherever it is already valid (stable Kahn)."""
        nodes = list(self)
        position = {node: i for i, node in enumerate(nodes)}
        deps: dict[Node, set[Node]] = {}
        for node in nodes:
            producers: set[Node] = set()
            for v in read_values(node):
                p = producer_in(v, self)
                if p is not None and p is not node:
                    producers.add(p)
            deps[node] = producers
        users: dict[Node, list[Node]] = {n: [] for n in nodes}
        for node, ps in deps.items():
            for p in ps:
                users[p].append(node)
        import heapq

        pending = {n: len(ps) for n, ps in deps.items()}
        ready = [position[n] for n in nodes if pending[n] == 0]
        heapq.heapify(ready)
        order: list[Node] = []
        while ready:
            node = nodes[heapq.heappop(ready)]
            order.append(node)
            for u in users[node]:
                pending[u] -= 1
                if pending[u] == 0:
                    heapq.heappush(ready, position[u])
        if len(order) != len(nodes):
            stuck = [n for n in nodes if pending[n] > 0][:3]
            raise IRError(f"graph has a cycle through {', '.join(_label(n) for n in stuck)}")
        head = self._head
        prev: Node = head
        for node in order:
            prev._next = node
            node._prev = prev
            prev = node
        prev._next = head
        head._prev = prev

    # checks -------------------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Verify the IR's invariants (use lists, producers, order, scoping); raise IRError on the first violation.

        Called on a subgraph, every value defined in its enclosing graphs counts as visible.
        """
        visible: set[int] = set()
        outer = self.parent
        while outer is not None:
            visible.update(id(v) for v in outer.inputs)
            visible.update(id(v) for v in outer.initializers.values())
            visible.update(id(v) for v in outer.sparse_initializers.values())
            for node in outer:
                visible.update(id(v) for v in node.outputs if v is not None)
            outer = outer.parent
        _check_graph(self, visible)

    def __repr__(self) -> str:
        return f"Graph({self.name!r}, {len(self.inputs)} inputs, {self._count} nodes, {len(self.outputs)} outputs)"


def read_values(node: Node) -> Iterator[Value]:
    """Values a node reads: its inputs and the outer-scope values its subgraphs read."""
    for v in node._inputs:
        if v is not None:
            yield v
    for g in node.subgraphs():
        for inner in g.all_nodes():
            for v in inner._inputs:
                if v is not None:
                    yield v
        yield from g.outputs


def producer_in(value: Value, graph: Graph) -> Node | None:
    """The node of ``graph`` that produces ``value``, directly or through a subgraph it owns; else None."""
    p = value.producer
    while p is not None and p.graph is not None and p.graph is not graph:
        p = p.graph.owner
    return p if p is not None and p.graph is graph else None


def _check_graph(graph: Graph, visible: set[int]) -> None:
    scope = set(visible)
    for v in graph.inputs:
        scope.add(id(v))
    for v in graph.initializers.values():
        if v.const is None:
            raise IRError(f"initializer {v.name!r} has no data")
        scope.add(id(v))
    scope.update(id(v) for v in graph.sparse_initializers.values())
    count = 0
    for node in graph:
        count += 1
        for i, v in enumerate(node._inputs):
            if v is None:
                continue
            if (node, i) not in v.uses:
                raise IRError(f"{node} reads {v.name!r} at input {i} but the value does not list that use")
            if id(v) not in scope:
                if v.producer is not None:
                    raise IRError(f"{node} reads {v.name!r} before it is produced (order is not topological)")
                raise IRError(f"{node} reads {v.name!r}, which nothing defines in scope")
        for g in node.subgraphs():
            if g.owner is not node:
                raise IRError(f"subgraph {g.name!r} of {node} does not name its owner")
            _check_graph(g, scope)
        for i, out in enumerate(node._outputs):
            if out is None:
                continue
            if out.producer is not node or out.index != i:
                raise IRError(f"output {out.name!r} of {node} does not name its producer")
            for user, j in out.uses:
                if user._inputs[j] is not out:
                    raise IRError(f"{out.name!r} lists a stale use by {user} at input {j}")
            scope.add(id(out))
    if count != graph._count:
        raise IRError(f"graph {graph.name!r} counts {graph._count} nodes but holds {count}")


# --------------------------------------------------------------------------------------------------------------------
# Function and Model
# --------------------------------------------------------------------------------------------------------------------
class Function:
    """A model-local function: its body is a Graph whose inputs and outputs are the formal parameters."""

    def __init__(self, domain: str, name: str, graph: Graph, *, overload: str = "") -> None:
        self.domain = domain
        self.name = name
        self.overload = overload
        self.graph = graph
        self.attributes: list[str] = []
        self.attribute_defaults: dict[str, Attribute] = {}
        self.opset_imports: dict[str, int] = {}
        self.default_domain_unset = False
        self.doc_string = ""
        self.metadata_props: dict[str, str] = {}
        self.extra: onnx.FunctionProto | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.domain, self.name, self.overload)

    def __repr__(self) -> str:
        return f"Function({self.domain}::{self.name}, {len(self.graph)} nodes)"


class Model:
    """A model: the main graph, opset imports per domain, functions, metadata and every other ModelProto field."""

    def __init__(self, graph: Graph, opset_imports: dict[str, int] | None = None, *, ir_version: int = 10) -> None:
        self.graph = graph
        # None: a new model at the default opset; an empty dict (a file that imports none) stays empty
        self.opset_imports: dict[str, int] = dict(opset_imports) if opset_imports is not None else {"": 21}
        self.default_domain_unset = False
        """The loaded default-domain opset entry left ``domain`` unset; kept so a round-trip is byte-faithful."""
        self.ir_version = ir_version
        self.producer_name = ""
        self.producer_version = ""
        self.domain = ""
        self.model_version = 0
        self.doc_string = ""
        self.metadata_props: dict[str, str] = {}
        self.functions: dict[tuple[str, str, str], Function] = {}
        self.training_info: list[onnx.TrainingInfoProto] = []
        self.extra: onnx.ModelProto | None = None
        self.source_path: str | None = None
        """The file the model was loaded from, if any (external data is resolved against its folder)."""
        self.external_files: dict[Any, Any] = {}

    def opset(self, domain: str = "") -> int | None:
        """The opset version the model imports for ``domain`` ('' and 'ai.onnx' are the same domain)."""
        if domain == "ai.onnx":
            domain = ""
        return self.opset_imports.get(domain, self.opset_imports.get("ai.onnx") if domain == "" else None)

    def pins_initializers(self, graph: Graph) -> bool:
        """Whether ``graph``'s initializers must stay even when nothing reads them: training info refers to the main
        graph's initializers by name (the one place a pass that drops unread initializers asks)."""
        return bool(self.training_info) and graph is self.graph

    def graphs(self) -> Iterator[Graph]:
        """The main graph, its subgraphs, and every function body with its subgraphs."""
        yield self.graph
        yield from self.graph.subgraphs()
        for f in self.functions.values():
            yield f.graph
            yield from f.graph.subgraphs()

    def take_contents(self, other: Model) -> None:
        """Become ``other`` in place (graph, opsets, functions, metadata...), keeping where this model came from.

        For whole-model rewrites that build a new Model (graphsurgeon passes, undoing a pass under --verify): callers
        that hold this Model object see the new contents, and the source file and its memory maps stay attached.
        """
        source, files = self.source_path, self.external_files
        self.__dict__.update(other.__dict__)
        self.source_path, self.external_files = source, {**files, **other.external_files}

    def to_onnx(self) -> onnx.ModelProto:
        """The model as a self-contained ModelProto (external data is read in): :func:`graphopt.core.onnx_io.to_proto`,
        which the I/O module installs here when it is imported (``graphopt.core`` imports it first), so that the IR does
        not import its own exporter."""
        if _EXPORTER is None:
            raise IRError("no ONNX exporter installed: import graphopt.core.onnx_io")
        return _EXPORTER(self)

    def __repr__(self) -> str:
        ops = ", ".join(f"{d or 'ai.onnx'}:{v}" for d, v in self.opset_imports.items())
        return f"Model({self.graph!r}, opsets {ops})"


# --------------------------------------------------------------------------------------------------------------------
# validation of a loaded model (what the ONNX checker would reject and passes rely on)
# --------------------------------------------------------------------------------------------------------------------
class InvalidModelError(ModelLoadError):
    """The model's graph breaks a rule every pass relies on (a cycle, an undefined input, a name written twice, an
    unknown standard op, a missing or mistyped attribute, a bad opset). Raised before any pass runs; the ONNX checker
    rejects these too, so only ``--no-check`` or the Python API get this far."""


def validate(model: Model) -> None:
    """Refuse, with one InvalidModelError naming the first problem, a model whose graphs no pass may assume well
    formed; repair what is harmless (nodes listed out of topological order are sorted). Iterative throughout, so a
    graph of any depth is checked in bounded stack."""
    where = f"{model.source_path}: " if model.source_path else ""
    problem = _model_problem(model)
    if problem:
        raise InvalidModelError(f"{where}invalid model: {problem}")


def _model_problem(model: Model) -> str:
    for domain, version in model.opset_imports.items():
        if not isinstance(version, int) or version <= 0:
            return f"opset import of domain {domain or 'ai.onnx'!r} has version {version} (must be >= 1)"
    default = model.opset("")
    checker = _SchemaChecker(default)
    # graphs to check, with the ids of the values visible to them from enclosing graphs
    stack: list[tuple[Graph, frozenset[int], bool]] = [(model.graph, frozenset(), True)]
    for f in model.functions.values():
        stack.append((f.graph, frozenset(), False))
    while stack:
        graph, outer, standard = stack.pop()
        problem, inner = _graph_problem(graph, outer, checker if standard else None)
        if problem:
            return problem
        stack.extend((g, vis, standard) for g, vis in inner)
    return ""


def _graph_problem(
    graph: Graph, outer: frozenset[int], checker: _SchemaChecker | None
) -> tuple[str, list[tuple[Graph, frozenset[int]]]]:
    label = f"graph {graph.name!r}" if graph.owner is not None else "the graph"
    defined: dict[str, str] = {}
    for v in graph.inputs:
        if v.name in defined:
            return f"{label} has two inputs named {v.name!r}", []
        defined[v.name or ""] = "a graph input"
    for name in (*graph.initializers, *graph.sparse_initializers):
        defined.setdefault(name, "an initializer")
    scope = set(outer)
    scope.update(id(v) for v in graph.inputs)
    scope.update(id(v) for v in graph.initializers.values())
    scope.update(id(v) for v in graph.sparse_initializers.values())
    produced: set[int] = set()
    for node in graph:
        for out in node._outputs:
            if out is None or not out.name:
                continue
            earlier = defined.get(out.name)
            if earlier is not None:
                what = "another node's output" if earlier == "a node output" else earlier
                return f"{_label(node)} writes {out.name!r}, which is already {what}", []
            defined[out.name] = "a node output"
            produced.add(id(out))
    everything = scope | produced
    out_of_order = False
    inner: list[tuple[Graph, frozenset[int]]] = []
    for node in graph:
        own = {id(o) for o in node._outputs if o is not None}
        for v in read_values(node):  # its inputs and what its subgraphs read from outside
            if id(v) in own:
                return f"{_label(node)} reads its own output {v.name!r} (a cycle)", []
            if id(v) not in scope and id(v) in produced:
                out_of_order = True  # produced by a later node: sorted below, unless that is a cycle
        for v in node._inputs:
            if v is not None and id(v) not in everything:
                return f"{_label(node)} reads {v.name!r}, which no node, graph input or initializer defines", []
        if checker is not None:
            problem = checker.problem(node)
            if problem:
                return problem, []
        for g in node.subgraphs():
            inner.append((g, frozenset(everything)))
        scope.update(own)
    for v in graph.outputs:
        if v is not None and id(v) not in everything:
            return f"{label} output {v.name!r} is not produced by any node, graph input or initializer", []
    if out_of_order:
        try:
            graph.sort()
        except IRError as e:
            return str(e).replace("graph has a cycle through", f"{label} has a cycle through"), []
    return "", inner


class _SchemaChecker:
    """Standard-domain nodes against their ONNX schemas at the model's opset: the op exists, its required attributes
    are set, its attributes have the declared types, and its input and output counts are within bounds."""

    def __init__(self, opset: int | None) -> None:
        self.opset = opset
        self.schemas: dict[str, _Schema | None] = {}

    def schema(self, op_type: str) -> _Schema | None:
        if op_type not in self.schemas:
            try:
                s = onnx.defs.get_schema(op_type, self.opset or 1, "")
            except (onnx.defs.SchemaError, TypeError, OverflowError):  # an opset or op name the C++ side cannot take
                self.schemas[op_type] = None
            else:  # the schema's properties are rebuilt on every access: read them once per op type
                declared = {name: int(spec.type) for name, spec in s.attributes.items()}
                required = tuple(name for name, spec in s.attributes.items() if spec.required)
                counts = (s.min_input, s.max_input, s.min_output, s.max_output)
                self.schemas[op_type] = _Schema(s.deprecated, declared, required, counts)
        return self.schemas[op_type]

    def problem(self, node: Node) -> str:
        if node.domain not in STANDARD_DOMAINS:
            return ""
        if self.opset is None:
            return f"{_label(node)} is a standard op, but the model imports no opset for the default domain"
        schema = self.schema(node.op_type)
        if schema is None:
            return f"{_label(node)}: {node.op_type!r} is not an op of the default domain at opset {self.opset}"
        if schema.deprecated:
            return f"{_label(node)}: {node.op_type!r} is deprecated at opset {self.opset}"
        for name in schema.required:
            if name not in node.attrs:
                return f"{_label(node)} lacks the required attribute {name!r}"
        for name, attr in node.attrs.items():
            want = schema.declared.get(name)
            if want is None:
                return f"{_label(node)} has attribute {name!r}, which {node.op_type} does not define"
            if not attr.ref_attr_name and int(attr.type) != want:
                names = onnx.AttributeProto.AttributeType.Name
                have = names(int(attr.type)) if attr.type in _ATTR_TYPES else attr.type
                return f"{_label(node)} attribute {name!r} is {have}, {node.op_type} expects {names(want)}"
        min_in, max_in, min_out, max_out = schema.counts
        n_in, n_out = len(node._inputs), len(node._outputs)
        if not min_in <= n_in <= max_in:
            return f"{_label(node)} has {n_in} inputs; {node.op_type} takes {_bounds(min_in, max_in)}"
        if not min_out <= n_out <= max_out:
            return f"{_label(node)} has {n_out} outputs; {node.op_type} makes {_bounds(min_out, max_out)}"
        return ""


class _Schema(NamedTuple):
    deprecated: bool
    declared: dict[str, int]
    required: tuple[str, ...]
    counts: tuple[int, int, int, int]


_ATTR_TYPES = frozenset(onnx.AttributeProto.AttributeType.values())


def _label(node: Node) -> str:
    if node.name:
        return f"node {node.name!r} ({node.op_type})"
    return f"{'an' if node.op_type[:1].lower() in 'aeiou' else 'a'} {node.op_type} node"


def _bounds(low: int, high: int) -> str:
    if low == high:
        return str(low)
    return f"at least {low}" if high >= 2**31 - 1 else f"{low} to {high}"
