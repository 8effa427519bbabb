"""eliminate-noop and merge-consecutive: remove ops that do nothing, and fuse chains that collapse into one op.

Every rule proves its no-op from constants and known shapes; where a shape or an attribute is unknown, the node stays.
Only standard-domain ops are touched, and the model's default-domain opset decides where axes, pads and slice bounds
live (attributes in old opsets, inputs in newer ones).
"""

from __future__ import annotations

import numpy as np
import onnx

from graphopt.core.ir import Graph, Node, Value
from graphopt.core.shape_inference import infer_shapes
from graphopt.core.tensors import Tensor
from graphopt.engine.passes_api import PassContext, register_pass
from graphopt.patterns import Builder, Match, Op, Rule, Var, rewrite

from .dims import dims_of

STANDARD = frozenset({"", "ai.onnx"})
INT_MAX_LIKE = 2**31 - 1
"""Slice ends at or above this mean "to the end" in every exporter's output."""


# --------------------------------------------------------------------------------------------------------------------
# small readers
# --------------------------------------------------------------------------------------------------------------------
def _input(node: Node, i: int) -> Value | None:
    return node.inputs[i] if i < len(node.inputs) else None


def _ints(v: Value | None) -> list[int] | None:
    """A constant integer tensor as a flat list, or None."""
    if v is None:
        return None
    t = v.constant()
    if t is None or t.dtype not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
        return None
    return [int(i) for i in t.numpy().reshape(-1)]


def _static(shape: tuple | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _axes(node: Node, ctx: PassContext, since: int) -> list[int] | None:
    """Axes of Squeeze/Unsqueeze/ReduceX: an input from opset ``since``, an attribute before."""
    if (ctx.opset("") or 1) >= since:
        return _ints(_input(node, 1)) if _input(node, 1) is not None else None
    axes = node.attr("axes")
    return list(axes) if axes is not None else None


def _is_output(graph: Graph, v: Value) -> bool:
    return any(o is v for o in graph.outputs)


def bypass(graph: Graph, node: Node, src: Value) -> bool:
    """Make readers of ``node``'s first output read ``src`` instead; return False when that cannot help.

    When the output is a graph output and ``src`` cannot take its name (a graph input, an initializer, a value from an
    outer scope, or another output), replacing it would only trade this node for an Identity: leave it.
    """
    out = node.outputs[0]
    if out is None or out is src:
        return False
    if _is_output(graph, out):
        renameable = src.producer is not None and src.producer.graph is graph and not _is_output(graph, src)
        if not renameable:
            return False
        if src.dtype is not None and out.dtype is not None and src.dtype != out.dtype:
            return False
    graph.replace_all_uses_with(out, src)
    if not out.uses and not _is_output(graph, out):
        graph.remove(node)
    return True


# --------------------------------------------------------------------------------------------------------------------
# eliminate-noop
# --------------------------------------------------------------------------------------------------------------------
def _noop_source(node: Node, ctx: PassContext) -> Value | None:
    """The input whose value ``node`` passes through unchanged, or None."""
    op = node.op_type
    x = _input(node, 0)
    if x is None:
        return None
    out = node.outputs[0]
    if out is None:
        return None
    opset = ctx.opset("") or 1
    if op == "Identity":
        return x
    if op == "Dropout":
        return x if _dropout_is_inference(node, opset) else None
    if op == "Cast":
        return x if x.dtype is not None and x.dtype == node.attr("to") else None
    if op == "CastLike":
        like = _input(node, 1)
        return x if like is not None and x.dtype is not None and x.dtype == like.dtype else None
    if op == "Reshape":
        return x if _reshape_is_noop(node, x, opset) else None
    if op == "Expand":
        return x if _expand_is_noop(x, _ints(_input(node, 1))) else None
    if op == "Transpose":
        perm = node.attr("perm")
        rank = len(x.shape) if x.shape is not None else None
        if perm is None:
            return x if rank is not None and rank <= 1 else None
        return x if list(perm) == list(range(len(perm))) else None
    if op == "Pad":
        pads = _ints(_input(node, 1)) if opset >= 11 else node.attr("pads")
        return x if pads is not None and all(p == 0 for p in pads) else None
    if op == "Slice":
        return x if _slice_is_full(node, x, opset) else None
    if op == "Concat":
        return x if len(node.inputs) == 1 else None
    if op == "Split":
        return x if len(node.outputs) == 1 else None
    if op in ("Squeeze", "Unsqueeze"):
        since = 13
        axes = _axes(node, ctx, since)
        return x if axes == [] else None
    if op in _NEUTRAL:
        return _neutral_operand(node)
    return None


def _dropout_is_inference(node: Node, opset: int) -> bool:
    if len(node.outputs) > 1 and node.outputs[1] is not None and (node.outputs[1].uses or _is_graph_output(node, 1)):
        return False
    if opset < 7:
        return node.attr("is_test", 0) == 1
    if opset >= 12:
        mode = _input(node, 2)
        if mode is not None:
            t = mode.constant()
            return t is not None and not bool(t.numpy().reshape(-1)[0])
    return True


def _is_graph_output(node: Node, i: int) -> bool:
    out = node.outputs[i]
    return node.graph is not None and out is not None and _is_output(node.graph, out)


def _reshape_is_noop(node: Node, x: Value, opset: int) -> bool:
    """True when the target shape provably equals x's shape, symbolic dims included.

    Each entry must be a copy of the same position (0, or x's own dim read back through Shape), or the same static
    size; one -1 is allowed, since with every other dim equal and the element count unchanged it can only be the
    remaining dim.
    """
    if x.shape is None:
        return False
    shape = _ints(_input(node, 1))
    if shape is None:
        shape = _own_shape_entries(node, x, opset)
    if shape is None or len(shape) != len(x.shape):
        return False
    allowzero = node.attr("allowzero", 0)
    free = 0
    for s, d in zip(shape, x.shape, strict=True):
        if s == 0 and not allowzero:
            continue
        if s == _SAME:
            continue
        if s == _UNKNOWN:
            return False
        if s == -1:
            free += 1
            continue
        if not isinstance(d, int) or s != d:
            return False
    return free <= 1


_SAME = -(2**62)
"""Marks a target entry that provably equals x's own dim at the same position."""
_UNKNOWN = -(2**62) + 1
"""Marks a target entry whose value is not known at compile time."""


def _own_shape_entries(node: Node, x: Value, opset: int) -> list[int] | None:
    """The target of Reshape(x, Concat(pieces)), with entries that copy x's dim at the same position marked _SAME.

    A piece is a constant, or a vector of dims read back through Shape (see :func:`dims.dims_of`).
    Such a dim is x's own at position p when y is x and i == p, or when both are the same named symbolic dim (ONNX
    gives one name one value across a model). Other scalar pieces become _UNKNOWN; anything else gives None.
    """
    shape_val = _input(node, 1)
    concat = shape_val.producer if shape_val is not None else None
    if concat is None or concat.op_type != "Concat" or concat.domain not in STANDARD or x.shape is None:
        return None
    entries: list[int] = []
    for piece in concat.inputs:
        if piece is None:
            return None
        const = _ints(piece)
        if const is not None:
            entries.extend(const)
            continue
        found = dims_of(piece, opset)
        source = (found[0], found[1]) if found is not None and len(found[2]) == 1 else None
        if source is None:
            if piece.shape != (1,):
                return None
            entries.append(_UNKNOWN)
            continue
        y, idx = source
        for i in idx:
            p = len(entries)
            d = y.shape[i] if y.shape is not None else None
            same = (y is x and i == p) or (
                isinstance(d, str) and p < len(x.shape) and x.shape[p] == d and not d.startswith("unk__")
            )
            entries.append(_SAME if same else d if isinstance(d, int) else _UNKNOWN)
    return entries


def static_reshape_target(node: Node, x: Value, opset: int) -> list[int] | None:
    """A constant target equivalent to a Reshape's computed one, using 0 (copy) and -1 (infer); None if unproven.

    Entries that copy x's own dim become 0 (only without allowzero). A single unknown entry becomes -1 when every
    other entry is a positive constant: the element count fixes it then (a copied dim could be 0, leaving -1 open).
    """
    if _ints(_input(node, 1)) is not None or node.attr("allowzero", 0):
        return None
    entries = _own_shape_entries(node, x, opset)
    if entries is None:
        return None
    unknown = entries.count(_UNKNOWN)
    if unknown == 0:
        return [0 if e == _SAME else e for e in entries]
    if unknown == 1 and all(e > 0 or e == _UNKNOWN for e in entries):
        return [-1 if e == _UNKNOWN else e for e in entries]
    return None


def _expand_is_noop(x: Value, shape: list[int] | None) -> bool:
    if shape is None or x.shape is None or len(shape) > len(x.shape):
        return False
    tail = x.shape[len(x.shape) - len(shape) :]
    return all(s == 1 or (isinstance(d, int) and s == d) for s, d in zip(shape, tail, strict=True))


def _slice_is_full(node: Node, x: Value, opset: int) -> bool:
    if x.shape is None:
        return False
    rank = len(x.shape)
    if opset >= 10:
        starts, ends = _ints(_input(node, 1)), _ints(_input(node, 2))
        axes = _ints(_input(node, 3)) if _input(node, 3) is not None else None
        steps = _ints(_input(node, 4)) if _input(node, 4) is not None else None
        if _input(node, 3) is not None and axes is None or _input(node, 4) is not None and steps is None:
            return False
    else:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    if starts is None or ends is None:
        return False
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = list(steps) if steps is not None else [1] * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)):
        return False
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step != 1 or not -rank <= axis < rank:
            return False
        dim = x.shape[axis]
        if start != 0 and not (isinstance(dim, int) and start <= -dim):
            return False
        if end < INT_MAX_LIKE and not (isinstance(dim, int) and end >= dim):
            return False
    return True


_NEUTRAL = {"Add": 0, "Sub": 0, "Mul": 1, "Div": 1, "And": True, "Or": False}


def _neutral_operand(node: Node) -> Value | None:
    """x for ``x + 0``, ``x - 0``, ``x * 1``, ``x / 1``, ``x and True``, ``x or False`` (either side where commutative),
    when broadcasting changes nothing."""
    if len(node.inputs) != 2 or node.inputs[0] is None or node.inputs[1] is None:
        return None
    neutral = _NEUTRAL[node.op_type]
    sides = [(0, 1), (1, 0)] if node.op_type in ("Add", "Mul", "And", "Or") else [(0, 1)]
    for keep, const_side in sides:
        x, c = node.inputs[keep], node.inputs[const_side]
        assert x is not None and c is not None
        t = c.constant()
        if t is None or x.shape is None or x.dtype is None or t.dtype != x.dtype:
            continue
        if len(t.dims) > len(x.shape):
            continue  # broadcasting would add leading dims
        # each dim of the constant must be 1 or provably equal to x's dim there, or x would be broadcast bigger
        if any(d != 1 and x.shape[len(x.shape) - len(t.dims) + i] != d for i, d in enumerate(t.dims)):
            continue
        if t.size <= 1 << 20 and bool(np.all(t.numpy() == neutral)):
            return x
    return None


_TYPED_DECISIONS = frozenset(
    {"Cast", "CastLike", "Reshape", "Expand", "Slice", "Transpose", "Squeeze", "Unsqueeze", "Shape", "Size", "MatMul"}
)
"""Ops whose rewrite in cleanup (or in fold-conv-bn after it) depends on the types of their inputs."""


def _needs_types(node: Node) -> bool:
    """Whether a decision about ``node`` would read a type that no value carries yet."""
    if node.domain not in STANDARD:
        return False
    untyped = any(v is not None and not v.has_type and v.constant() is None for v in node.inputs)
    if node.op_type in _TYPED_DECISIONS:
        return untyped
    if node.op_type in _NEUTRAL:
        return untyped and any(v is not None and v.constant() is not None for v in node.inputs)
    return False


@register_pass("eliminate-noop", description="remove Identity, inference Dropout and ops that provably change nothing")
def eliminate_noop(graph: Graph, ctx: PassContext) -> bool:
    if graph is ctx.model.graph and any(_needs_types(n) for n in graph.all_nodes()):
        infer_shapes(ctx.model)  # a CNN of Conv/BatchNorm/Relu/pooling needs no types: skip the whole inference
    changed = False
    for node in graph:
        if node.domain not in STANDARD:
            continue
        src = _noop_source(node, ctx)
        if src is None:
            continue
        if bypass(graph, node, src):
            changed = True
        else:
            changed |= _as_identity(graph, node, src)
    return changed


def _as_identity(graph: Graph, node: Node, src: Value) -> bool:
    """A no-op that must stay (it names a graph output) becomes the plainest no-op: an Identity."""
    if node.op_type == "Identity" or any(o is not None and _is_output(graph, o) for o in node.outputs[1:]):
        return False
    ident = graph.insert_after(node, Node("Identity", [src], name=node.name))
    graph.replace_all_uses_with(node.outputs[0], ident.output)  # type: ignore[arg-type]
    graph.remove(node)
    return True


# --------------------------------------------------------------------------------------------------------------------
# merge-consecutive
# --------------------------------------------------------------------------------------------------------------------
def _producer(v: Value | None, graph: Graph, op: str) -> Node | None:
    if v is None or v.producer is None or v.producer.graph is not graph:
        return None
    p = v.producer
    return p if p.op_type == op and p.domain in STANDARD else None


def _merge(node: Node, graph: Graph, ctx: PassContext) -> bool:
    op = node.op_type
    if op == "Reshape":
        x = _input(node, 0)
        target = static_reshape_target(node, x, ctx.opset("") or 1) if x is not None else None
        if target is not None:
            name = f"{node.name or 'reshape'}_shape"
            node.set_input(1, graph.make_constant(Tensor.from_numpy(np.array(target, dtype=np.int64)), name))
            return True
        first = _producer(x, graph, "Reshape")
        shape = _ints(_input(node, 1))
        if first is None or shape is None or (0 in shape and not node.attr("allowzero", 0)):
            return False
        node.set_input(0, first.inputs[0])
        return True
    if op == "Conv":
        return _pad_into_conv(node, graph, ctx)
    if op == "Unsqueeze" and _merge_unsqueezes(node, graph, ctx):
        return True
    if op in ("Squeeze", "Unsqueeze"):
        other = "Unsqueeze" if op == "Squeeze" else "Squeeze"
        first = _producer(_input(node, 0), graph, other)
        if first is None:
            return False
        a1, a2 = _axes(first, ctx, 13), _axes(node, ctx, 13)
        if not a1 or a1 != a2:
            return False
        x = first.inputs[0]
        return x is not None and bypass(graph, node, x)
    return False


def _merge_unsqueezes(node: Node, graph: Graph, ctx: PassContext) -> bool:
    """Unsqueeze(Unsqueeze(x, a1), a2) becomes one Unsqueeze of x with the axes both insert (opset >= 13)."""
    first = _producer(_input(node, 0), graph, "Unsqueeze")
    if first is None or (ctx.opset("") or 1) < 13:
        return False
    x = first.inputs[0]
    a1, a2 = _axes(first, ctx, 13), _axes(node, ctx, 13)
    if x is None or x.shape is None or not a1 or not a2:
        return False
    mid_rank = len(x.shape) + len(a1)
    out_rank = mid_rank + len(a2)
    a1 = sorted(a % mid_rank for a in a1)
    a2 = sorted(a % out_rank for a in a2)
    kept = [p for p in range(out_rank) if p not in a2]  # output positions holding the intermediate's dims, in order
    axes = sorted(a2 + [kept[a] for a in a1])
    if len(set(axes)) != len(axes):
        return False
    node.set_input(0, x)
    node.set_input(
        1, graph.make_constant(Tensor.from_numpy(np.array(axes, dtype=np.int64)), f"{node.name or 'unsqueeze'}_axes")
    )
    return True


def _pad_into_conv(conv: Node, graph: Graph, ctx: PassContext) -> bool:
    """Pad (constant zeros, spatial dims only) -> Conv becomes a Conv with larger pads: the same zeros, one op."""
    pad = _producer(_input(conv, 0), graph, "Pad")
    if pad is None or pad.attr("mode", "constant") not in ("constant", b"constant"):
        return False
    auto_pad = conv.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", b"NOTSET", "VALID", b"VALID"):
        return False  # SAME_* pads depend on the input size, which the Pad changes
    opset = ctx.opset("") or 1
    if opset >= 11:
        if _input(pad, 3) is not None:
            return False  # explicit axes (opset 18): keep it simple
        pads = _ints(_input(pad, 1))
        value = _input(pad, 2)
        if value is not None:
            t = value.constant()
            if t is None or t.numpy().size != 1 or t.numpy().reshape(-1)[0] != 0:
                return False
    else:
        pads = node_pads = pad.attr("pads")
        pads = list(node_pads) if node_pads is not None else None
        if pad.attr("value", 0.0) != 0.0:
            return False
    w = _input(conv, 1)
    wt = w.constant() if w is not None else None
    if pads is None or wt is None:
        return False
    rank = len(wt.dims)
    if len(pads) != 2 * rank or any(p < 0 for p in pads):
        return False
    if pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
        return False  # padding the batch or channel dims is not a conv padding
    spatial = rank - 2
    valid = auto_pad in ("VALID", b"VALID")  # VALID means no padding: explicit pads then say the same
    old = [0] * (2 * spatial) if valid else list(conv.attr("pads", [0] * (2 * spatial)))
    if valid:
        del conv.attrs["auto_pad"]
    new = [old[i] + pads[2 + i] for i in range(spatial)] + [
        old[spatial + i] + pads[rank + 2 + i] for i in range(spatial)
    ]
    conv.set_attr("pads", new)
    conv.set_input(0, pad.inputs[0])
    return True


def _compose_transposes(m: Match, b: Builder) -> Value:
    p1, p2 = m["first"].attr("perm"), m["second"].attr("perm")
    combined = [p1[j] for j in p2]
    if combined == list(range(len(combined))):
        return m["x"]  # the two cancel
    return b.op("Transpose", m["x"], perm=combined)


_HAS_PERM = {"perm": lambda p: p is not None}
RULES = [
    Rule(
        "transpose-transpose",
        Op(
            "Transpose",
            Op("Transpose", Var("x"), name="first", attrs=_HAS_PERM, shared=True),
            name="second",
            attrs=_HAS_PERM,
        ),
        condition=lambda m: len(m["first"].attr("perm")) == len(m["second"].attr("perm")),
        replace=_compose_transposes,
    ),
]
"""merge-consecutive's rules that are plain patterns, written with the public pattern API."""


@register_pass(
    "merge-consecutive",
    description=(
        "fuse Transpose/Reshape chains and zero Pad into Conv; drop Squeeze/Unsqueeze pairs that cancel; "
        "computed Reshape targets to constants (0 = copy, -1 = infer)"
    ),
)
def merge_consecutive(graph: Graph, ctx: PassContext) -> bool:
    changed = rewrite(graph, RULES, ctx, ctx.counters)
    for node in graph:
        if node.domain in STANDARD and node.op_type in ("Reshape", "Squeeze", "Unsqueeze", "Conv"):
            changed |= _merge(node, graph, ctx)
    return changed
