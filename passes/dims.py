"""Which dims of which tensor a shape-arithmetic value holds, read through Shape, Gather, Slice and Unsqueeze.

Exporters compute shapes at run time: ``Shape(x)``, then ``Gather``/``Slice`` to pick dims, ``Unsqueeze`` to make
a scalar a vector, ``Concat`` to assemble a target. :func:`dims_of` follows such a chain back to the tensor whose
dims it reads. fold-constants uses it to fold picks of static dims; merge-consecutive uses it to see that a computed
Reshape target copies dims of the input (:func:`static_reshape_target`), eliminate-noop that a Reshape keeps them all.
"""

from __future__ import annotations

import numpy as np
import onnx

from graphopt.core.ir import Node, Value
from graphopt.patterns import STANDARD

MAX_DEPTH = 64
"""Ops followed back from a value before giving up: real shape arithmetic is a handful deep, and the bound keeps a
long (or, under --no-check, cyclic) chain from exhausting the stack."""


_INTS = (onnx.TensorProto.INT64, onnx.TensorProto.INT32)


def const_ints(v: Value | None) -> np.ndarray | None:
    """The value as an int64 array, if it is an int32/int64 constant."""
    t = v.constant() if v is not None else None
    if t is None or t.dtype not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
        return None
    return t.numpy().astype(np.int64)


def _int_list(v: Value | None) -> list[int] | None:
    a = const_ints(v)
    return None if a is None else [int(i) for i in a.reshape(-1)]


def dims_of(
    v: Value | None, opset: int, _depth: int = 0, narrowed: list[bool] | None = None
) -> tuple[Value, list[int], tuple[int, ...]] | None:
    """``(y, positions, shape)`` when ``v`` holds the dims of ``y`` at ``positions``, laid out as ``shape`` (``()``
    for a scalar, ``(k,)`` for a vector); None when ``v`` is anything else, a pick cannot be resolved, or the chain is
    more than ``MAX_DEPTH`` ops deep.

    With a ``narrowed`` list the chain may pass Casts to int64 and int32 (tf2onnx casts shapes to int32 and back): a
    Cast to int32 of int64 values appends True to it, since a dim of 2**31 or more would not survive it; the caller
    decides what that costs. Without the list, Casts end the chain."""
    p = v.producer if v is not None else None
    if p is None or p.domain not in STANDARD or _depth >= MAX_DEPTH:
        return None
    if p.op_type == "Cast" and narrowed is not None and p.attr("to") in _INTS:
        src = dims_of(p.inputs[0] if p.inputs else None, opset, _depth + 1, narrowed)
        if src is not None and p.attr("to") == onnx.TensorProto.INT32 and p.inputs[0].dtype != onnx.TensorProto.INT32:
            narrowed.append(True)
        return src
    if p.op_type == "Shape":
        y = p.inputs[0] if p.inputs else None
        if y is None or y.shape is None:
            return None
        rank = len(y.shape)
        start, end = p.attr("start", 0), p.attr("end", rank)
        start = min(max(start + rank if start < 0 else start, 0), rank)
        end = min(max(end + rank if end < 0 else end, 0), rank)
        positions = list(range(start, end))
        return y, positions, (len(positions),)
    if p.op_type == "Gather":
        return _gather(p, opset, _depth + 1, narrowed)
    if p.op_type == "Slice":
        return _slice(p, opset, _depth + 1, narrowed)
    if p.op_type == "Unsqueeze":  # a picked scalar made a one-element vector
        axes = const_ints(p.inputs[1] if len(p.inputs) > 1 else None) if opset >= 13 else p.attr("axes")
        src = dims_of(p.inputs[0], opset, _depth + 1, narrowed)
        if axes is None or [int(a) for a in np.asarray(axes).reshape(-1)] not in ([0], [-1]) or src is None:
            return None
        y, positions, shape = src
        return (y, positions, (1,)) if shape == () else None
    return None


def _vector(v: Value | None, opset: int, depth: int, narrowed: list[bool] | None) -> tuple[Value, list[int]] | None:
    found = dims_of(v, opset, depth, narrowed)
    if found is None or len(found[2]) != 1:
        return None
    return found[0], found[1]


def _gather(
    node: Node, opset: int, depth: int, narrowed: list[bool] | None
) -> tuple[Value, list[int], tuple[int, ...]] | None:
    src = _vector(node.inputs[0], opset, depth, narrowed)
    idx = const_ints(node.inputs[1] if len(node.inputs) > 1 else None)
    if node.attr("axis", 0) != 0 or src is None or idx is None:
        return None
    y, positions = src
    n = len(positions)
    if np.any(idx < -n) or np.any(idx >= n):
        return None
    return y, [positions[int(i)] for i in idx.reshape(-1)], tuple(idx.shape)


def _slice(
    node: Node, opset: int, depth: int, narrowed: list[bool] | None
) -> tuple[Value, list[int], tuple[int, ...]] | None:
    src = _vector(node.inputs[0], opset, depth, narrowed)
    if src is None:
        return None
    # opset >= 10 takes starts/ends/axes/steps as inputs, before that as attributes
    if opset >= 10:
        ins = list(node.inputs) + [None] * (5 - len(node.inputs))
        starts, ends = const_ints(ins[1]), const_ints(ins[2])
        axes = const_ints(ins[3]) if ins[3] is not None else np.array([0], np.int64)
        steps = const_ints(ins[4]) if ins[4] is not None else np.array([1], np.int64)
    else:
        starts = np.array(node.attr("starts", []), np.int64) if node.attr("starts") is not None else None
        ends = np.array(node.attr("ends", []), np.int64) if node.attr("ends") is not None else None
        axes, steps = np.array(node.attr("axes", [0]), np.int64), np.array([1], np.int64)
    if starts is None or ends is None or axes is None or steps is None:
        return None
    if starts.size != 1 or ends.size != 1 or axes.size != 1 or steps.size != 1 or int(axes[0]) not in (0, -1):
        return None
    if steps[0] == 0:
        return None
    y, positions = src
    picked = positions[slice(int(starts[0]), int(min(ends[0], 2**62)), int(steps[0]))]
    return y, picked, (len(picked),)


# --------------------------------------------------------------------------------------------------------------------
# computed Reshape targets
# --------------------------------------------------------------------------------------------------------------------
SAME = -(2**62)
"""Marks a target entry that provably equals x's own dim at the same position."""
UNKNOWN = -(2**62) + 1
"""Marks a target entry whose value is not known at compile time."""


def reshape_entries(node: Node, x: Value, opset: int) -> list[int] | None:
    """The target of Reshape(x, Concat(pieces)) (or of Reshape(x, piece)), with entries that copy x's dim at the same
    position marked SAME; a Cast to int64 of the target is looked through.

    A piece is a constant, or a vector of dims read back through Shape (see :func:`dims_of`), int32 round trips
    included. Such a dim is x's own at position p when y is x and i == p, or when both are the same named symbolic dim
    (ONNX gives one name one value across a model). Other scalar pieces become UNKNOWN; anything else gives None.

    An int32 round trip wraps a dim of 2**31 or more. Then the entry differs from the dim it reads, and the Reshape
    fails for want of the right element count, provided no other entry is as uncertain and no constant -1 takes up
    the difference (a wrapped -1 is inferred as that very dim). So at most one entry may come through a round trip
    without being a known dim under 2**31, and then no constant entry may be -1: where the original Reshape runs, the
    entries are the dims."""
    shape_val = node.inputs[1] if len(node.inputs) > 1 else None
    target = shape_val.producer if shape_val is not None else None
    if target is not None and target.op_type == "Cast" and target.domain in STANDARD and target.inputs:
        if target.attr("to") != onnx.TensorProto.INT64:
            return None
        shape_val = target.inputs[0]
        target = shape_val.producer if shape_val is not None else None
    if target is None or target.domain not in STANDARD or x.shape is None:
        return None
    pieces = list(target.inputs) if target.op_type == "Concat" else [shape_val]
    entries: list[int] = []
    uncertain = 0
    for piece in pieces:
        if piece is None:
            return None
        const = _int_list(piece)
        if const is not None:
            entries.extend(const)
            continue
        narrowed: list[bool] = []
        found = dims_of(piece, opset, narrowed=narrowed)
        source = (found[0], found[1]) if found is not None and len(found[2]) == 1 else None
        if source is None:
            if piece.shape != (1,) or target.op_type != "Concat":
                return None
            entries.append(UNKNOWN)
            continue
        y, idx = source
        for i in idx:
            p = len(entries)
            d = y.shape[i] if y.shape is not None else None
            if narrowed and not (isinstance(d, int) and d < 2**31):
                uncertain += 1
            same = (y is x and i == p) or (
                isinstance(d, str) and p < len(x.shape) and x.shape[p] == d and not d.startswith("unk__")
            )
            entries.append(SAME if same else d if isinstance(d, int) else UNKNOWN)
    if uncertain > 1 or (uncertain and -1 in entries):
        return None
    return entries


def static_reshape_target(node: Node, x: Value, opset: int) -> list[int] | None:
    """A constant target equivalent to a Reshape's computed one, read with ``allowzero=0`` (0 copies, -1 infers);
    None if unproven. The caller drops ``allowzero`` from the Reshape.

    Entries that copy x's own dim become 0. A single unknown entry becomes -1 when every other entry is a positive
    constant: the element count fixes it then (a copied dim could be 0, leaving -1 open). With ``allowzero=1`` an
    entry is used as it is, 0 included: a copied dim is the same value either way, a positive constant or -1 means the
    same under both readings, and a constant 0 (a literal empty dim, which ``allowzero=0`` cannot say) is declined.
    """
    if _int_list(node.inputs[1] if len(node.inputs) > 1 else None) is not None:
        return None
    entries = reshape_entries(node, x, opset)
    if entries is None or (node.attr("allowzero", 0) and 0 in entries):
        return None
    unknown = entries.count(UNKNOWN)
    if unknown == 0:
        return [0 if e == SAME else e for e in entries]
    if unknown == 1 and all(e > 0 or e == UNKNOWN for e in entries):
        return [-1 if e == UNKNOWN else e for e in entries]
    return None
