"""cse: compute each thing once.

Two nodes compute the same thing when they have the same op, domain and attributes (compared by value, tensors by
content) and read the same values; constant inputs count as the same when their data is equal. One linear pass in
graph order with a hash table: the first node stays and the later one's readers move to it.

Random ops, nodes with subgraphs and ops of domains graphopt does not know are never merged: a custom op may have
side effects or state. Equal initializers and Constant nodes are dedup-initializers' work.
"""

from __future__ import annotations

from typing import Any

import onnx

from graphopt.core.ir import RANDOM_OPS, Attribute, Graph, Node, Value
from graphopt.core.tensors import Tensor
from graphopt.engine.passes_api import PassContext, register_pass

STANDARD = frozenset({"", "ai.onnx", "ai.onnx.ml"})
NONDETERMINISTIC = RANDOM_OPS
_GRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def _tensor_key(t: Tensor) -> tuple[Any, ...]:
    return ("tensor", t.dtype, t.dims, t.digest())


def attr_key(a: Attribute) -> Any:
    v = a.value
    if isinstance(v, Tensor):
        return _tensor_key(v)
    if isinstance(v, list | tuple):
        return (a.type, tuple(_tensor_key(x) if isinstance(x, Tensor) else x for x in v))
    return (a.type, v)


class _Keys:
    """Canonical keys for values: constants by content (small ones; big ones by identity), others by identity."""

    SMALL = 4096

    def __init__(self) -> None:
        self._cache: dict[int, Any] = {}

    def value(self, v: Value | None) -> Any:
        if v is None:
            return None
        key = self._cache.get(id(v))
        if key is None:
            t = v.constant()
            key = _tensor_key(t) if t is not None and t.nbytes <= self.SMALL else ("value", id(v))
            self._cache[id(v)] = key
        return key


def _mergeable(node: Node) -> bool:
    if node.domain not in STANDARD or node.op_type in NONDETERMINISTIC or node.op_type == "Constant":
        return False
    return not any(a.type in _GRAPH_TYPES or a.ref_attr_name for a in node.attrs.values())


def _node_key(node: Node, keys: _Keys) -> Any | None:
    try:
        attrs = tuple(sorted((name, attr_key(a)) for name, a in node.attrs.items()))
        hash(attrs)
    except TypeError:
        return None
    return (node.op_type, node.domain, node.overload, len(node.outputs), tuple(map(keys.value, node.inputs)), attrs)


def _rough_key(node: Node) -> tuple[Any, ...]:
    """Equal for any two nodes whose full keys are equal, and cheap: small constants by type and dims only, other
    inputs by identity, no attributes. Most nodes of a network have a rough key of their own and need no full key."""
    parts: list[Any] = [node.op_type, node.domain, node.overload, len(node.outputs)]
    for v in node.inputs:
        if v is None:
            parts.append(None)
            continue
        t = v.constant()
        parts.append((t.dtype, t.dims) if t is not None and t.nbytes <= _Keys.SMALL else id(v))
    return tuple(parts)


@register_pass("cse", description="merge nodes that compute the same thing from the same inputs")
def common_subexpression_elimination(graph: Graph, ctx: PassContext) -> bool:
    # Not a pattern rule: two equal nodes may sit anywhere in the graph (a pattern is a tree rooted at one node), and
    # finding them is one hash table over the whole graph in order.
    keys = _Keys()
    full: dict[int, Any] = {}  # id(node) -> full key, computed when a rough key repeats
    groups: dict[tuple[Any, ...], list[Node]] = {}
    changed = False
    for node in graph:
        if not _mergeable(node):
            continue
        rough = _rough_key(node)
        group = groups.get(rough)
        if group is None:
            groups[rough] = [node]
            continue
        key = _node_key(node, keys)
        if key is None:
            continue
        first = None
        for other in group:
            if id(other) not in full:
                full[id(other)] = _node_key(other, keys)
            if full[id(other)] == key:
                first = other
                break
        if first is None:
            full[id(node)] = key
            group.append(node)
            continue
        pairs = list(zip(first.outputs, node.outputs, strict=True))
        if any(graph.is_output(b) and (a is None or graph.is_output(a)) for a, b in pairs):
            continue  # both are graph outputs: merging would only add an Identity
        for a, b in pairs:
            if b is not None and a is not None:
                graph.replace_all_uses_with(b, a)
        if not any(b is not None and (b.uses or graph.is_output(b)) for _, b in pairs):
            graph.remove(node)
        changed = True
    return changed
