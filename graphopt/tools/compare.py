"""Structural comparison of two models, modulo value names, node names and node order.

Two graphs are equal when there is a one-to-one correspondence of their nodes that preserves op type, domain,
attributes, constants and edges. In an ONNX graph every value is either a graph input (matched by position), a
constant (matched by dtype, dims and data), an outer-scope value (matched through the correspondence of the enclosing
graphs) or an output of a node (matched by output index and by the node's own match). So the correspondence is found
by walking both graphs together from their outputs: a value's match fixes its producer's match, and a node matches when
its op, domain and attributes agree and its inputs match in order. Each pair is compared once (memoised), so the walk
is linear in the graph size. Nodes no output depends on are matched afterwards by a canonical hash of their structure
(a Merkle hash over the same facts), which also makes the comparison independent of node order.

:func:`diff` first reports, for each graph output, the first place on the way up where the graphs diverge (the walk
does not descend below a differing node). It then aligns the two graphs node by node to say what changed: nodes found
only in A (removed) or only in B (added), aligned nodes whose attributes or inputs changed, and initializers found only
on one side. The alignment seeds on structurally identical nodes (equal Merkle hashes) of the same name, nodes of one
op with the same name, the walk's matches and the other identical nodes, then spreads from each aligned pair to the
producers of its inputs (stepping over up to eight nodes of one side, say a BatchNormalization -O2 folded or a
QuantizeLinear/DequantizeLinear pair int8 added, to find the producer of the same op on the other) and to the readers
of its outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections import Counter, deque
from collections.abc import Iterator
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
    kind: str = "diverges"
    """``diverges`` (the first difference on the way up from a graph output), ``removed`` (only in A), ``added``
    (only in B) or ``changed`` (an aligned node or initializer that differs)."""

    def __str__(self) -> str:
        if self.kind in ("removed", "added"):
            return f"{self.path}: {self.what}: {_short(self.a if self.kind == 'removed' else self.b, 240)}"
        if self.kind == "changed" and (self.a is None) != (self.b is None):
            detail = f": {_short(self.a if self.a is not None else self.b, 120)}"
        else:
            detail = f": {_short(self.a)} != {_short(self.b)}" if self.a is not None or self.b is not None else ""
        hops = self.path.split(" <- ")
        path = " <- ".join([hops[0], "...", *hops[-3:]]) if len(hops) > 5 else self.path
        return f"{path}: {self.what}{detail}"


@dataclass
class GraphDiff:
    """The result of :func:`diff`: empty when the graphs are equal. ``total`` counts every difference found, also
    those beyond ``max_differences`` that ``differences`` leaves out."""

    differences: list[Difference] = field(default_factory=list)
    total: int = 0

    def __post_init__(self) -> None:
        self.total = max(self.total, len(self.differences))

    def __bool__(self) -> bool:  # the graphs differ (also when max_differences=0 kept no difference)
        return self.total > 0

    def __len__(self) -> int:
        return len(self.differences)

    def __iter__(self):
        return iter(self.differences)

    def __str__(self) -> str:
        if not self.differences:
            return f"graphs differ ({self.total} differences, none kept)" if self.total else "graphs are equal"
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
        self.pairs: list[tuple[Node, Node]] = []  # node pairs the walk found locally equal
        self.local_failed: set[tuple[int, int]] = set()  # node pairs the walk reported a local difference of
        self.total = 0
        self.kind = "diverges"  # what report() calls a difference: "changed" while the alignment reports

    def report(self, path: str, what: str, a: Any = None, b: Any = None, kind: str | None = None) -> bool:
        self.total += 1
        if len(self.out) < self.max:
            self.out.append(Difference(path, what, a, b, kind or self.kind))
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
            self.pairs.append((na, nb))
            self.nodes[key] = True
            for i, (xa, xb) in enumerate(zip(na.inputs, nb.inputs, strict=True)):
                ok &= self.value(xa, xb, f"{here} input #{i}", ga, gb)
            self.nodes[key] = ok
        else:
            self.local_failed.add(key)
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
        """The walk from the outputs; where it finds a difference, the node-by-node alignment after it."""
        saved, self.kind = self.kind, "diverges"
        try:
            before = self.total
            ok = self._walk(ga, gb, path)
            if not ok or self.total > before:
                self.kind = "changed"
                _Aligner(self, ga, gb, path).run()
                ok = False
        finally:
            self.kind = saved
        return ok

    def _walk(self, ga: Graph, gb: Graph, path: str) -> bool:
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


_STEP_OVER = 8  # how many nodes of one side the alignment steps over to find the other side's producer


def _content(v: Value) -> Any:
    """A constant's data as a key (dtype, dims, digest): equal for the same data under any name; None if not one."""
    t = v.const
    return (t.dtype, t.dims, t.digest()) if isinstance(t, Tensor) else None


class _Aligner:
    """The node-by-node alignment of two graphs the walk found different: what was removed, added or changed."""

    def __init__(self, c: _Comparer, ga: Graph, gb: Graph, path: str) -> None:
        self.c, self.ga, self.gb, self.path = c, ga, gb, path
        self.a2b: dict[int, Node] = {}
        self.b2a: dict[int, Node] = {}
        self.queue: deque[tuple[Node, Node]] = deque()
        self.inputs_a = {id(v): i for i, v in enumerate(ga.inputs)}
        self.inputs_b = {id(v): i for i, v in enumerate(gb.inputs)}
        self.consts_done: set[int] = set()  # initializers already accounted for (compared at a slot, or reported)
        self.consts_a = {id(v) for v in ga.initializers.values()}
        self.consts_b = {id(v) for v in gb.initializers.values()}

    # --------------------------------------------------------------------------------------------------- matching
    def run(self) -> None:
        nodes_a, nodes_b = list(self.ga), list(self.gb)
        ha, hb = _Hasher(self.ga), _Hasher(self.gb)
        same: dict[bytes, list[Node]] = {}
        for nb in nodes_b:  # structurally identical nodes (the same node over the same inputs)
            same.setdefault(hb.node(nb), []).append(nb)
        for na in nodes_a:  # first the twins that also have the same name
            for nb in same.get(ha.node(na), ()):
                if nb.name == na.name and id(nb) not in self.b2a:
                    self._pair(na, nb)
                    break
        named_a = Counter(n.name for n in nodes_a if n.name)
        named_b = Counter(n.name for n in nodes_b if n.name)
        by_name = {n.name: n for n in nodes_b if n.name and named_b[n.name] == 1}
        for na in nodes_a:  # then nodes of one op with one name (a model against its optimized self keeps them)
            nb = by_name.get(na.name) if na.name and named_a[na.name] == 1 else None
            if nb is not None and _same_op(na, nb):
                self._pair(na, nb)
        for na, nb in self.c.pairs:  # then the walk's matches
            if na.graph is self.ga and nb.graph is self.gb:
                self._pair(na, nb)
        for na in nodes_a:  # then the other twins, in order
            twins = [nb for nb in same.get(ha.node(na), ()) if id(nb) not in self.b2a]
            if twins and id(na) not in self.a2b:
                self._pair(na, twins[0])
        for oa, ob in zip(self.ga.outputs, self.gb.outputs, strict=False):
            self._align_values(oa, ob)
        while self.queue:  # spread: the producers of aligned inputs, then the readers of aligned outputs
            na, nb = self.queue.popleft()
            for xa, xb in zip(na.inputs, nb.inputs, strict=False):
                self._align_values(xa, xb)
            for oa, ob in zip(na.outputs, nb.outputs, strict=False):
                if oa is not None and ob is not None:
                    self._align_readers(oa, ob)
        self._report(nodes_a, nodes_b)

    def _pair(self, na: Node, nb: Node) -> None:
        if id(na) in self.a2b or id(nb) in self.b2a:
            return
        self.a2b[id(na)], self.b2a[id(nb)] = nb, na
        self.queue.append((na, nb))

    def _prod_a(self, v: Value | None) -> Node | None:
        return v.producer if v is not None and v.producer is not None and v.producer.graph is self.ga else None

    def _prod_b(self, v: Value | None) -> Node | None:
        return v.producer if v is not None and v.producer is not None and v.producer.graph is self.gb else None

    def _align_values(self, va: Value | None, vb: Value | None) -> None:
        pa, pb = self._prod_a(va), self._prod_b(vb)
        if pa is None or pb is None or id(pa) in self.a2b or id(pb) in self.b2a:
            return
        if _same_op(pa, pb):
            self._pair(pa, pb)
            return
        found_a = self._step_over(pa, pb, self._prod_a, self.a2b)  # pa and the nodes above it removed?
        found_b = self._step_over(pb, pa, self._prod_b, self.b2a)  # or pb and those above it added?
        if found_a is not None and (found_b is None or found_a[1] <= found_b[1]):
            self._pair(found_a[0], pb)
        elif found_b is not None:
            self._pair(pa, found_b[0])

    @staticmethod
    def _step_over(start: Node, like: Node, prod: Any, matched: dict[int, Node]) -> tuple[Node, int] | None:
        """The first node of ``like``'s op up the chain of first inputs from ``start`` through unaligned nodes."""
        node = start
        for depth in range(1, _STEP_OVER + 1):
            node = prod(node.inputs[0]) if node.inputs else None
            if node is None or id(node) in matched:
                return None
            if _same_op(node, like):
                return node, depth
        return None

    def _align_readers(self, oa: Value, ob: Value) -> None:
        def groups(v: Value, g: Graph, matched: dict[int, Node]) -> dict[tuple[str, str, int], list[Node]]:
            out: dict[tuple[str, str, int], list[Node]] = {}
            for user, slot in v.uses:
                if user.graph is g and id(user) not in matched:
                    out.setdefault((user.domain or "ai.onnx", user.op_type, slot), []).append(user)
            return out

        ua, ub = groups(oa, self.ga, self.a2b), groups(ob, self.gb, self.b2a)
        for key, readers in ua.items():
            others = ub.get(key)
            if len(readers) == 1 and others is not None and len(others) == 1:
                self._pair(readers[0], others[0])

    # -------------------------------------------------------------------------------------------------- reporting
    def _report(self, nodes_a: list[Node], nodes_b: list[Node]) -> None:
        for na in nodes_a:
            nb = self.a2b.get(id(na))
            if nb is None:
                self._one_sided(na, self.ga, self.b2a, "removed")
            else:
                self._compare(na, nb)
        for nb in nodes_b:
            if id(nb) not in self.b2a:
                self._one_sided(nb, self.gb, self.a2b, "added")
        self._initializers()

    def _one_sided(self, node: Node, g: Graph, others: dict[int, Node], kind: str) -> None:
        side = "A" if kind == "removed" else "B"
        label = _node_label(node)
        if not node.name:  # where it is, for an unnamed node
            label += f" reading {self._describe(node.inputs[0] if node.inputs else None, g)}"
        own = []  # its initializers that only nodes of this side read
        own_consts = self.consts_a if g is self.ga else self.consts_b
        for v in dict.fromkeys(x for x in node.inputs if x is not None and x.const is not None and id(x) in own_consts):
            if id(v) in self.consts_done:
                continue  # named with an earlier one-sided node that reads it too
            if all(u.graph is not g or (id(u) not in self.a2b and id(u) not in self.b2a) for u, _ in v.uses):
                own.append(v.name)
                self.consts_done.add(id(v))
        if own:
            label += " with initializer" + ("s " if len(own) > 1 else " ") + ", ".join(map(repr, own))
        what = f"{kind} (only in {side})"
        self.c.report(self.path, what, label if kind == "removed" else None, label if kind == "added" else None, kind)

    def _compare(self, na: Node, nb: Node) -> None:
        c, key = self.c, (id(na), id(nb))
        label = _node_label(na) + (f" (in B {nb.name!r})" if nb.name != na.name else "")
        here = f"{self.path} node {label}"
        if key not in c.nodes:  # not visited by the walk: compare the node itself
            if len(na.outputs) != len(nb.outputs):
                c.report(here, "number of outputs", len(na.outputs), len(nb.outputs))
            for name in sorted(set(na.attrs) | set(nb.attrs)):
                if name not in nb.attrs or name not in na.attrs:
                    side, attr = ("A", na.attrs[name]) if name in na.attrs else ("B", nb.attrs[name])
                    c.report(here, f"attribute {name}={_short(attr.value, 40)} set only in {side}")
                else:
                    c.attribute(na.attrs[name], nb.attrs[name], f"{here} attribute {name!r}", self.ga, self.gb)
        for i in range(max(len(na.inputs), len(nb.inputs))):
            va = na.inputs[i] if i < len(na.inputs) else None
            vb = nb.inputs[i] if i < len(nb.inputs) else None
            if va is None and vb is None:
                continue
            const_a = va is not None and id(va) in self.consts_a and id(va) not in self.inputs_a
            const_b = vb is not None and id(vb) in self.consts_b and id(vb) not in self.inputs_b
            if const_a and const_b:
                self.consts_done.update((id(va), id(vb)))
            if (id(va), id(vb)) in c.values or key in c.nodes and key not in c.local_failed:
                continue  # the walk compared these inputs
            if va is None or vb is None:
                self.consts_done.add(id(va if vb is None else vb))  # this line reports the initializer
                side = "A" if vb is None else "B"
                c.report(f"{here} input #{i}", f"input given only in {side}", *self._describe_pair(va, vb))
            elif const_a and const_b:
                c.tensor(va.const, vb.const, f"{here} input #{i} {va.name!r}")
            elif not self._explained(va, vb):
                c.report(f"{here} input #{i}", "reads another value", *self._describe_pair(va, vb))

    def _describe_pair(self, va: Value | None, vb: Value | None) -> tuple[str | None, str | None]:
        return (
            self._describe(va, self.ga) if va is not None else None,
            self._describe(vb, self.gb) if vb is not None else None,
        )

    def _describe(self, v: Value | None, g: Graph) -> str:
        if v is None:
            return "nothing"
        for i, x in enumerate(g.inputs):
            if x is v:
                return f"graph input #{i} {v.name!r}"
        if g.initializers.get(v.name or "") is v:
            return f"initializer {v.name!r} {_type(v)}"
        if v.producer is not None and v.producer.graph is g:
            return f"output #{v.index} of {_node_label(v.producer)}"
        return f"outer-scope value {v.name!r}"

    def _explained(self, va: Value, vb: Value) -> bool:
        """Whether ``va`` and ``vb`` are one value once the unaligned nodes above them (removed or added) are
        stepped over."""
        chain_a = self._chain(va, self._prod_a, self.a2b)
        chain_b = self._chain(vb, self._prod_b, self.b2a)
        return any(self._corresponds(x, y) for x in chain_a for y in chain_b)

    @staticmethod
    def _chain(v: Value, prod: Any, matched: dict[int, Node]) -> list[Value]:
        out = [v]
        for _ in range(_STEP_OVER):
            p = prod(out[-1])
            if p is None or id(p) in matched or not p.inputs or p.inputs[0] is None:
                break
            out.append(p.inputs[0])
        return out

    def _corresponds(self, x: Value, y: Value) -> bool:
        ix, iy = self.inputs_a.get(id(x)), self.inputs_b.get(id(y))
        if ix is not None or iy is not None:
            return ix == iy
        px, py = self._prod_a(x), self._prod_b(y)
        if px is not None or py is not None:
            return px is not None and self.a2b.get(id(px)) is py and x.index == y.index
        if isinstance(x.const, Tensor) and isinstance(y.const, Tensor):
            return _content(x) == _content(y)
        return x.name == y.name

    def _initializers(self) -> None:
        rest_a = [v for v in self.ga.initializers.values() if id(v) not in self.consts_done]
        rest_b = [v for v in self.gb.initializers.values() if id(v) not in self.consts_done]
        if not rest_a and not rest_b:
            return
        pool: dict[Any, list[Value]] = {}
        for v in rest_b:
            pool.setdefault(_content(v), []).append(v)
        left_a = []
        for v in rest_a:  # the same data under another name: not a difference
            key = _content(v)
            twins = pool.get(key) if key is not None else None
            if twins:
                twins.pop(0)
            else:
                left_a.append(v)
        left_b = [v for vs in pool.values() for v in vs]
        names_b = {v.name: v for v in left_b}
        for v in left_a:
            other = names_b.pop(v.name, None)
            if other is not None:
                self.c.tensor(v.const, other.const, f"{self.path} initializer {v.name!r}")
            else:
                self.c.report(
                    self.path, "initializer removed (only in A)", self._init_label(v, self.ga), None, "removed"
                )
        for v in names_b.values():
            self.c.report(self.path, "initializer added (only in B)", None, self._init_label(v, self.gb), "added")

    @staticmethod
    def _init_label(v: Value, g: Graph) -> str:
        readers = [u for u in v.users() if u.graph is g]
        read = f"read by {', '.join(_node_label(u) for u in readers[:3])}" if readers else "read by no node"
        return f"{v.name!r} {_type(v)} ({read})"


def _same_op(a: Node, b: Node) -> bool:
    return a.op_type == b.op_type and (a.domain or "ai.onnx") == (b.domain or "ai.onnx")


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
    nodes = sum(1 for m in (ma, mb) for g in m.graphs() for _ in g)
    with _recursion_limit(1000 + 4 * nodes):  # the walk recurses value -> node -> value: ~3 frames per node of depth
        _compare_models(c, ma, mb)
    return GraphDiff(c.out, c.total)


@contextlib.contextmanager
def _recursion_limit(limit: int) -> Iterator[None]:
    """Python's recursion limit raised to ``limit`` for the walk (a 330-node chain that differs near its inputs hit
    the default 1000 with a RecursionError traceback), then put back."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(max(before, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def _compare_models(c: _Comparer, ma: Model, mb: Model) -> None:
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
