"""Structural comparison of two models, modulo value names, node names and node order.

Two graphs are equal when there is a one-to-one correspondence of their nodes that preserves op type, domain,
attributes, constants and edges. In an ONNX graph every value is either a graph input (matched by position), a
constant (matched by dtype, dims and data), an outer-scope value (matched through the correspondence of the enclosing
graphs) or an output of a node (matched by output index and by the node's own match). So the correspondence is found
by walking both graphs together from their outputs: a value's match fixes its producer's match, and a node matches when
its op, domain and attributes agree and its inputs match in order. Each pair is compared once (memoised), so the walk
is linear in the graph size. Nodes no output depends on are matched afterwards by a canonical hash of their structure
(a Merkle hash over the same facts), which also makes the comparison independent of node order.

:func:`diff` returns every difference it finds (below a differing node it does not descend further), each with the
path from a graph output to where it differs; :func:`first_difference_message` renders the first one.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from graphopt.core.ir import STANDARD_DOMAINS, Attribute, Graph, Model, Node, Value, producer_in, read_values
from graphopt.core.tensors import Tensor, dtype_name

ModelLike = str | os.PathLike[str] | onnx.ModelProto | Model


@dataclass
class Difference:
    """One place where the graphs differ: ``path`` leads from a graph output (or the graph) to it."""

    path: str
    what: str
    a: Any = None
    b: Any = None

    def __str__(self) -> str:
        detail = f": {_short(self.a)} != {_short(self.b)}" if self.a is not None or self.b is not None else ""
        hops = self.path.split(" <- ")
        path = " <- ".join([hops[0], "...", *hops[-3:]]) if len(hops) > 5 else self.path
        return f"{path}: {self.what}{detail}"


@dataclass
class GraphDiff:
    """The result of :func:`diff`: empty when the graphs are equal."""

    differences: list[Difference] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.differences)

    def __len__(self) -> int:
        return len(self.differences)

    def __iter__(self):
        return iter(self.differences)

    def __str__(self) -> str:
        if not self.differences:
            return "graphs are equal"
        return "\n".join(str(d) for d in self.differences)


def _short(x: Any, limit: int = 80) -> str:
    text = repr(x) if not isinstance(x, str) else x
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_model(m: ModelLike) -> Model:
    from graphopt.core.onnx_io import from_proto, load

    if isinstance(m, Model):
        return m
    if isinstance(m, onnx.ModelProto):
        return from_proto(m)
    return load(m)


def _node_label(node: Node) -> str:
    dom = f"{node.domain}::" if node.domain not in STANDARD_DOMAINS else ""
    return f"{dom}{node.op_type} {node.name!r}" if node.name else f"{dom}{node.op_type}"


class _Comparer:
    def __init__(self, rtol: float | None, atol: float | None, max_differences: int) -> None:
        self.rtol, self.atol = rtol, atol
        self.max = max_differences
        self.out: list[Difference] = []
        self.values: dict[tuple[int, int], bool] = {}
        self.nodes: dict[tuple[int, int], bool] = {}
        self.matched_a: set[int] = set()
        self.matched_b: set[int] = set()

    def report(self, path: str, what: str, a: Any = None, b: Any = None) -> bool:
        if len(self.out) < self.max:
            self.out.append(Difference(path, what, a, b))
        return False

    # ----------------------------------------------------------------------------------------------------- values
    def value(self, va: Value | None, vb: Value | None, path: str, ga: Graph, gb: Graph) -> bool:
        if va is None or vb is None:
            if va is None and vb is None:
                return True
            given = f"A ({va.name!r})" if va is not None else f"B ({vb.name!r})"  # type: ignore[union-attr]
            return self.report(path, f"optional input given only in {given}")
        key = (id(va), id(vb))
        if key in self.values:
            return self.values[key]
        self.values[key] = True  # provisional: graphs are acyclic, so a revisit is only through a shared value
        ok = self._value(va, vb, path, ga, gb)
        self.values[key] = ok
        return ok

    def _value(self, va: Value, vb: Value, path: str, ga: Graph, gb: Graph) -> bool:
        ka, kb = self._kind(va, ga), self._kind(vb, gb)
        if ka[0] != kb[0]:
            return self.report(path, "different kinds of value", f"{ka[0]} {va.name!r}", f"{kb[0]} {vb.name!r}")
        kind = ka[0]
        if kind == "input":
            if ka[1] != kb[1]:
                return self.report(path, "different graph inputs", f"input #{ka[1]}", f"input #{kb[1]}")
            return True  # input types are compared with the graph signature
        if kind == "const":
            return self.tensor(va.const, vb.const, path)  # type: ignore[arg-type]
        if kind == "outer":  # read from an enclosing graph: compare it there
            da, db = _defining_graph(va, ga), _defining_graph(vb, gb)
            if da is None or db is None:
                return va.name == vb.name or self.report(path, "different undefined values", va.name, vb.name)
            return self.value(va, vb, f"{path} (outer scope)", da, db)
        if kind == "node":
            pa, pb = va.producer, vb.producer
            assert pa is not None and pb is not None
            if not self.node(pa, pb, path, ga, gb):
                return False
            if va.index != vb.index:
                return self.report(path, f"different outputs of {_node_label(pa)}", f"#{va.index}", f"#{vb.index}")
            return True
        if va.name != vb.name:  # undefined values (a dangling read): only their names identify them
            return self.report(path, "different undefined values", va.name, vb.name)
        return True

    @staticmethod
    def _kind(v: Value, g: Graph) -> tuple[str, int]:
        for i, x in enumerate(g.inputs):
            if x is v:
                return ("input", i)
        if v.const is not None:
            return ("const", 0)
        if v.producer is not None:
            return ("node", 0) if v.producer.graph is g else ("outer", 0)
        return ("outer", 0) if g.parent is not None and v.name else ("undefined", 0)

    def tensor(self, a: Tensor | Any, b: Tensor | Any, path: str) -> bool:
        if not isinstance(a, Tensor) or not isinstance(b, Tensor):
            same = type(a) is type(b) and a.to_proto("") == b.to_proto("")  # sparse tensors
            return same or self.report(path, "different sparse constants")
        if a.dtype != b.dtype:
            return self.report(path, "constant dtype", dtype_name(a.dtype), dtype_name(b.dtype))
        if a.dims != b.dims:
            return self.report(path, "constant shape", list(a.dims), list(b.dims))
        if a is b:
            return True
        x, y = a.numpy(), b.numpy()
        if self.rtol is None and self.atol is None or x.dtype.kind not in "fc":
            same = np.array_equal(x, y, equal_nan=x.dtype.kind in "fc")
        else:
            same = np.allclose(x, y, rtol=self.rtol or 0.0, atol=self.atol or 0.0, equal_nan=True)
        if same:
            return True
        if x.size and x.dtype.kind in "fciub":
            idx = np.unravel_index(int(np.argmax(x != y)), x.shape) if x.shape else ()
            where = f" at {list(map(int, idx))}" if x.shape else ""
            return self.report(path, f"constant value{where}", x[idx].item(), y[idx].item())
        return self.report(path, "constant value")

    # ------------------------------------------------------------------------------------------------------ nodes
    def node(self, na: Node, nb: Node, path: str, ga: Graph, gb: Graph) -> bool:
        key = (id(na), id(nb))
        if key in self.nodes:
            return self.nodes[key]
        if id(na) in self.matched_a or id(nb) in self.matched_b:
            return self.report(path, "a node matched to two different nodes", _node_label(na), _node_label(nb))
        here = f"{path} <- {_node_label(na)}"
        ok = self._node_local(na, nb, here, ga, gb)
        if ok:
            self.matched_a.add(id(na))
            self.matched_b.add(id(nb))
            self.nodes[key] = True
            for i, (xa, xb) in enumerate(zip(na.inputs, nb.inputs, strict=True)):
                ok &= self.value(xa, xb, f"{here} input #{i}", ga, gb)
            self.nodes[key] = ok
        else:
            self.nodes[key] = False
        return ok

    def _node_local(self, na: Node, nb: Node, here: str, ga: Graph, gb: Graph) -> bool:
        if (na.domain or "ai.onnx") != (nb.domain or "ai.onnx") or na.op_type != nb.op_type:
            return self.report(here, "different op", _node_label(na), _node_label(nb))
        if len(na.inputs) != len(nb.inputs):
            return self.report(here, "number of inputs", len(na.inputs), len(nb.inputs))
        if len(na.outputs) != len(nb.outputs):
            return self.report(here, "number of outputs", len(na.outputs), len(nb.outputs))
        if [o is None for o in na.outputs] != [o is None for o in nb.outputs]:
            return self.report(here, "different optional outputs")
        names_a, names_b = set(na.attrs), set(nb.attrs)
        if names_a != names_b:
            extra = sorted(names_a ^ names_b)
            side, attr = ("A", na.attrs[extra[0]]) if extra[0] in names_a else ("B", nb.attrs[extra[0]])
            return self.report(here, f"attribute {extra[0]}={_short(attr.value, 40)} set only in {side}")
        ok = True
        for name in sorted(names_a):
            ok &= self.attribute(na.attrs[name], nb.attrs[name], f"{here} attribute {name!r}", ga, gb)
        return ok

    def attribute(self, a: Attribute, b: Attribute, path: str, ga: Graph, gb: Graph) -> bool:
        if a.ref_attr_name or b.ref_attr_name:
            return a.ref_attr_name == b.ref_attr_name or self.report(
                path, "attribute reference", a.ref_attr_name, b.ref_attr_name
            )
        if a.type != b.type:
            return self.report(path, "attribute type", a.type, b.type)
        va, vb = a.value, b.value
        if isinstance(va, Graph) and isinstance(vb, Graph):
            return self.graph(va, vb, path)
        if isinstance(va, Tensor):
            return self.tensor(va, vb, path)
        if isinstance(va, list) and va and isinstance(va[0], Graph | Tensor):
            if len(va) != len(vb):
                return self.report(path, "number of items", len(va), len(vb))
            ok = True
            for i, (x, y) in enumerate(zip(va, vb, strict=True)):
                ok &= self.graph(x, y, f"{path}[{i}]") if isinstance(x, Graph) else self.tensor(x, y, f"{path}[{i}]")
            return ok
        tolerant = self.rtol is not None or self.atol is not None
        floats = isinstance(va, float) and isinstance(vb, float)
        if tolerant and floats and np.isclose(va, vb, rtol=self.rtol or 0.0, atol=self.atol or 0.0):
            return True
        if va != vb and not (isinstance(va, float) and isinstance(vb, float) and np.isnan(va) and np.isnan(vb)):
            return self.report(path, "attribute value", va, vb)
        return True

    # ----------------------------------------------------------------------------------------------------- graphs
    def graph(self, ga: Graph, gb: Graph, path: str) -> bool:
        ok = True
        if len(ga.inputs) != len(gb.inputs):
            return self.report(path, "number of graph inputs", len(ga.inputs), len(gb.inputs))
        if len(ga.outputs) != len(gb.outputs):
            return self.report(path, "number of graph outputs", len(ga.outputs), len(gb.outputs))
        for i, (xa, xb) in enumerate(zip(ga.inputs, gb.inputs, strict=True)):
            if (xa.dtype, xa.shape) != (xb.dtype, xb.shape):
                ok = self.report(f"{path} input #{i} {xa.name!r}", "input type", _type(xa), _type(xb))
        for i, (oa, ob) in enumerate(zip(ga.outputs, gb.outputs, strict=True)):
            ok &= self.value(oa, ob, f"{path} output #{i} {oa.name!r}", ga, gb)
        ok &= self._unreached(ga, gb, path)
        return ok

    def _unreached(self, ga: Graph, gb: Graph, path: str) -> bool:
        """Nodes no output reads: compare them as multisets of canonical hashes."""
        live_a, live_b = _live(ga), _live(gb)
        rest_a = [n for n in ga if id(n) not in live_a]
        rest_b = [n for n in gb if id(n) not in live_b]
        if not rest_a and not rest_b:
            return True
        ha, hb = _Hasher(ga), _Hasher(gb)
        ca = Counter(ha.node(n) for n in rest_a)
        cb = Counter(hb.node(n) for n in rest_b)
        if ca == cb:
            return True
        only_a = [n for n in rest_a if ca[ha.node(n)] > cb.get(ha.node(n), 0)]
        only_b = [n for n in rest_b if cb[hb.node(n)] > ca.get(hb.node(n), 0)]
        what = "nodes no output depends on differ"
        return self.report(path, what, [_node_label(n) for n in only_a[:3]], [_node_label(n) for n in only_b[:3]])


def _live(g: Graph) -> set[int]:
    """ids of the nodes of ``g`` that some output of ``g`` depends on (reads by subgraphs included)."""
    live: set[int] = set()
    stack = list(g.outputs)
    while stack:
        v = stack.pop()
        p = producer_in(v, g) if v is not None else None
        if p is None or id(p) in live:
            continue
        live.add(id(p))
        stack.extend(read_values(p))
    return live


def _defining_graph(v: Value, g: Graph) -> Graph | None:
    """The enclosing graph of ``g`` where ``v`` is an input, an initializer or a node output."""
    outer = g.parent
    while outer is not None:
        if (v.producer is not None and v.producer.graph is outer) or any(x is v for x in outer.inputs):
            return outer
        if outer.initializers.get(v.name) is v:
            return outer
        outer = outer.parent
    return None


def _type(v: Value) -> str:
    return f"{dtype_name(v.dtype) if v.dtype else '?'}{list(v.shape) if v.shape is not None else ''}"


class _Hasher:
    """Canonical Merkle hashes of values and nodes in one graph: names and order do not enter."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.memo: dict[int, bytes] = {}
        self.inputs = {id(v): i for i, v in enumerate(graph.inputs)}

    def value(self, v: Value | None) -> bytes:
        if v is None:
            return b"none"
        if id(v) in self.memo:
            return self.memo[id(v)]
        if id(v) in self.inputs:
            h = _h("input", self.inputs[id(v)])
        elif isinstance(v.const, Tensor):
            t = v.const
            h = _h("const", t.dtype, t.dims, t.digest())
        elif v.producer is not None and v.producer.graph is self.graph:
            h = _h("out", v.index, self.node(v.producer))
        else:
            h = _h("outer", v.name)
        self.memo[id(v)] = h
        return h

    def node(self, n: Node) -> bytes:
        key = -id(n)
        if key in self.memo:
            return self.memo[key]
        attrs = []
        for name in sorted(n.attrs):
            a = n.attrs[name]
            val = a.value
            if isinstance(val, Graph):
                val = _graph_hash(val)
            elif isinstance(val, Tensor):
                val = (val.dtype, val.dims, val.digest())
            elif isinstance(val, list):
                val = [_graph_hash(x) if isinstance(x, Graph) else x for x in val]
            attrs.append((name, a.type, repr(val), a.ref_attr_name))
        h = _h("node", n.domain or "ai.onnx", n.op_type, attrs, [self.value(i) for i in n.inputs], len(n.outputs))
        self.memo[key] = h
        return h


def _graph_hash(g: Graph) -> bytes:
    hasher = _Hasher(g)
    return _h("graph", [hasher.value(o) for o in g.outputs], sorted(hasher.node(n) for n in g))


def _h(*parts: Any) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()


def diff(
    a: ModelLike,
    b: ModelLike,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    max_differences: int = 20,
) -> GraphDiff:
    """Every structural difference between two models (paths, ModelProtos or graphopt Models), up to
    ``max_differences``. Names and node order do not matter; constants compare exactly unless ``rtol``/``atol``
    are given. Model-local functions are compared by name, body for body."""
    ma, mb = _as_model(a), _as_model(b)
    c = _Comparer(rtol, atol, max_differences)
    c.graph(ma.graph, mb.graph, "graph")
    opsets_a = {d or "ai.onnx": v for d, v in ma.opset_imports.items()}
    opsets_b = {d or "ai.onnx": v for d, v in mb.opset_imports.items()}
    for dom in sorted(set(opsets_a) | set(opsets_b)):
        if opsets_a.get(dom) != opsets_b.get(dom):
            c.report("model", f"opset of domain {dom!r}", opsets_a.get(dom), opsets_b.get(dom))
    for key in sorted(set(ma.functions) | set(mb.functions)):
        fa, fb = ma.functions.get(key), mb.functions.get(key)
        label = f"function {key[0]}::{key[1]}"
        if fa is None or fb is None:
            c.report(label, f"defined only in {'A' if fa is not None else 'B'}")
            continue
        c.graph(fa.graph, fb.graph, label)
    return GraphDiff(c.out)
