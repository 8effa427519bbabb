"""dedup-initializers: store each constant once.

Equal initializers are found by dtype and dims first, then a hash of a prefix, then of all their bytes, so that the
common case (no two weights alike) costs no hashing of big tensors. Constant nodes with equal values are merged too.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from graphopt.core.ir import Graph, Node, Value
from graphopt.core.tensors import Tensor
from graphopt.engine.passes_api import PassContext, register_pass

from .cse import STANDARD, attr_key
from .readers import bypass


@register_pass("dedup-initializers", description="keep one copy of initializers and Constants with equal data")
def dedup_initializers(graph: Graph, ctx: PassContext) -> bool:
    # Not a pattern rule: it compares every initializer and Constant of the graph with every other (grouped by type,
    # dims and digests); equal constants are not related by any edge a pattern could follow.
    groups: dict[tuple[Any, ...], list[Value]] = defaultdict(list)
    for v in graph.initializers.values():
        t = v.const
        if t is not None and not v.overridable and not v.is_graph_input(graph) and not v.is_graph_output(graph):
            groups[(t.dtype, t.dims)].append(v)
    changed = False
    for candidates in groups.values():
        if len(candidates) < 2:
            continue
        by_prefix: dict[bytes, list[Value]] = defaultdict(list)
        for v in candidates:
            by_prefix[v.const.digest(4096)].append(v)  # type: ignore[arg-type]
        for same_prefix in by_prefix.values():
            if len(same_prefix) < 2:
                continue
            first_of: dict[bytes, Value] = {}
            for v in same_prefix:
                full = v.const.digest()  # type: ignore[arg-type]
                keep = first_of.setdefault(full, v)
                if keep is v or not _equal(keep.const, v.const):  # type: ignore[arg-type]
                    continue
                graph.replace_all_uses_with(v, keep)
                del graph.initializers[v.name]  # type: ignore[arg-type]
                changed = True
    # Constant nodes with equal values: cse keys them by content, but skips Constant itself; merge here.
    seen: dict[Any, Node] = {}
    for node in graph:
        if node.op_type != "Constant" or node.domain not in STANDARD or len(node.attrs) != 1:
            continue
        ((name, attr),) = node.attrs.items()
        if attr.ref_attr_name:
            continue
        key = (name, attr_key(attr))
        first = seen.setdefault(key, node)
        if first is not node and bypass(graph, node, first.output):
            changed = True
    return changed


def _equal(a: Tensor, b: Tensor) -> bool:
    if a.dtype != b.dtype or a.dims != b.dims:
        return False
    return np.array_equal(np.frombuffer(a.raw_bytes(), np.uint8), np.frombuffer(b.raw_bytes(), np.uint8))
