"""eliminate-noop and merge-consecutive: remove ops that do nothing, and fuse chains that collapse into one op.

Every rule proves its no-op from constants and known shapes; where a shape or an attribute is unknown, the node stays.
Only standard-domain ops are touched, and the model's default-domain opset decides where axes, pads and slice bounds
live (attributes in old opsets, inputs in newer ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from graphopt.core.ir import Graph, Node, Value
from graphopt.core.shape_inference import infer_shapes
from graphopt.engine.passes_api import PassContext, register_pass
from graphopt.patterns import STANDARD, Builder, Const, Declined, Match, Op, Or, Rule, RuleSet, Var

from .dims import dims_of

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


def bypass(graph: Graph, node: Node, src: Value) -> bool:
    """Make readers of ``node``'s first output read ``src`` instead; return False when that cannot help.

    When the output is a graph output and ``src`` cannot take its name (a graph input, an initializer, a value from an
    outer scope, or another output), replacing it would only trade this node for an Identity: leave it.
    """
    out = node.outputs[0]
    if out is None or out is src:
        return False
    if graph.is_output(out):
        renameable = src.producer is not None and src.producer.graph is graph and not graph.is_output(src)
        if not renameable:
            return False
        if src.dtype is not None and out.dtype is not None and src.dtype != out.dtype:
            return False
    graph.replace_all_uses_with(out, src)
    if not out.uses and not graph.is_output(out):
        graph.remove(node)
    return True


# --------------------------------------------------------------------------------------------------------------------
# eliminate-noop: the proofs
# --------------------------------------------------------------------------------------------------------------------
def _dropout_is_inference(node: Node, opset: int) -> bool:
    if (
        len(node.outputs) > 1
        and node.outputs[1] is not None
        and (node.outputs[1].uses or (node.graph is not None and node.graph.is_output(node.outputs[1])))
    ):
        return False
    if opset < 7:
        return node.attr("is_test", 0) == 1
    if opset >= 12:
        mode = _input(node, 2)
        if mode is not None:
            t = mode.constant()
            return t is not None and not bool(t.numpy().reshape(-1)[0])
    return True


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


def _neutral_decline(m: Match) -> Declined | bool:
    """Why ``x op c`` (c all neutral) is not x: the types differ, or broadcasting c would change x's shape."""
    x, c = m.value("x"), m.value("c")
    assert x is not None and c is not None
    t = c.constant()
    assert t is not None
    if x.shape is None or x.dtype is None:
        return m.decline("input shape or type unknown")
    if t.dtype != x.dtype:
        return m.decline("constant's type differs")
    if len(t.dims) > len(x.shape):
        return m.decline("broadcast adds dims")  # broadcasting would add leading dims
    # each dim of the constant must be 1 or provably equal to x's dim there, or x would be broadcast bigger
    if any(d != 1 and x.shape[len(x.shape) - len(t.dims) + i] != d for i, d in enumerate(t.dims)):
        return m.decline("broadcast grows x")
    return True


def _all_equal(value: Any) -> Callable[[np.ndarray], bool]:
    # the first element decides most cases without a pass over the data
    return lambda a: 0 < a.size <= 1 << 20 and bool(a.flat[0] == value) and bool(np.all(a == value))


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


# --------------------------------------------------------------------------------------------------------------------
# eliminate-noop: the rules
# --------------------------------------------------------------------------------------------------------------------
def _pass_through(m: Match, b: Builder) -> list[Value | None] | Declined:
    """The root's first output becomes x (its other outputs are unread: the conditions check that).

    A graph output that x cannot take the name of (x is a graph input, an initializer, an outer value or another
    output) is kept by an Identity instead: the plainest no-op (the rewriter declines trading an Identity for one)."""
    root, x = m.root, m.value("x")
    out = root.outputs[0]
    assert x is not None
    if out is not None and m.graph.is_output(out) and x.dtype is not None and out.dtype is not None:
        renameable = x.producer is not None and x.producer.graph is m.graph and not m.graph.is_output(x)
        if renameable and x.dtype != out.dtype:
            return m.decline("graph output's type differs")
    if any(m.graph.is_output(o) for o in root.outputs[1:]):
        return m.decline("another output is a graph output")
    return [x, *[None] * (len(root.outputs) - 1)]


def _check(reason: str, test: Callable[[Match], bool]) -> Callable[[Match], Declined | bool]:
    """A condition that declines with ``reason`` when ``test`` is false."""
    return lambda m: True if test(m) else m.decline(reason)


def _cast_same(m: Match) -> bool:
    x = m.value("x")
    assert x is not None
    if x.dtype is None:
        return False
    like = m.get("like")
    return x.dtype == (like.dtype if like is not None else m.node("n").attr("to"))


def _transpose_identity(m: Match) -> bool:
    perm = m.node("n").attr("perm")
    if perm is None:
        rank = m.rank("x")
        return rank is not None and rank <= 1
    return list(perm) == list(range(len(perm)))


def _pad_zero(m: Match) -> bool:
    node = m.node("n")
    pads = _ints(_input(node, 1)) if (m.opset() or 1) >= 11 else node.attr("pads")
    return pads is not None and all(p == 0 for p in pads)


def _rule(name: str, pattern: Op | Or, reason: str, test: Callable[[Match], bool]) -> Rule:
    return Rule(name, pattern, _pass_through, condition=_check(reason, test))


X = Var("x")
_SQ = ("Squeeze", "Unsqueeze")
NOOP_RULES = RuleSet(
    [
        Rule("noop-identity", Op("Identity", X), _pass_through),
        _rule(
            "noop-dropout",
            Op("Dropout", X, ..., name="n"),
            "not inference (or mask read)",
            lambda m: _dropout_is_inference(m.node("n"), m.opset() or 1),
        ),
        _rule(
            "noop-cast",
            Op("Cast", X, name="n") | Op("CastLike", X, Var("like"), name="n"),
            "type changes or unknown",
            _cast_same,
        ),
        _rule(
            "noop-reshape",
            Op("Reshape", X, Var(), name="n"),
            "shape not proven the same",
            lambda m: _reshape_is_noop(m.node("n"), m.value("x"), m.opset() or 1),  # type: ignore[arg-type]
        ),
        _rule(
            "noop-expand",
            Op("Expand", X, Var("shape")),
            "shape not proven the same",
            lambda m: _expand_is_noop(m.value("x"), _ints(m.value("shape"))),  # type: ignore[arg-type]
        ),
        _rule(
            "noop-transpose",
            Op("Transpose", X, name="n", attrs={"perm": lambda p: p is None or list(p) == list(range(len(p)))}),
            "no perm and rank unknown or above 1",
            _transpose_identity,
        ),
        _rule("noop-pad", Op("Pad", X, ..., name="n"), "pads not constant zeros", _pad_zero),
        _rule(
            "noop-slice",
            Op("Slice", X, ..., name="n"),
            "not proven to take everything",
            lambda m: _slice_is_full(m.node("n"), m.value("x"), m.opset() or 1),  # type: ignore[arg-type]
        ),
        Rule("noop-concat", Op("Concat", X), _pass_through),
        Rule("noop-split", Op("Split", X, ..., outputs=1), _pass_through),
        _rule(
            "noop-squeeze",  # empty axes: an input from opset 13, an attribute before
            Op(_SQ, X, Const(where=lambda a: a.size == 0), name="n")
            | Op(_SQ, X, name="n", attrs={"axes": lambda a: a is not None and len(a) == 0}),
            "axes not where this opset reads them",
            lambda m: _axes(m.node("n"), m.ctx, 13) == [],
        ),
        Rule(
            "noop-neutral",
            Op("Add", X, Const("c", where=_all_equal(0)), commutative=True)
            | Op("Sub", X, Const("c", where=_all_equal(0)))
            | Op("Mul", X, Const("c", where=_all_equal(1)), commutative=True)
            | Op("Div", X, Const("c", where=_all_equal(1)))
            | Op("And", X, Const("c", where=_all_equal(True)), commutative=True)
            | Op("Or", X, Const("c", where=_all_equal(False)), commutative=True),
            _pass_through,
            condition=_neutral_decline,
        ),
    ]
)
"""eliminate-noop: x + 0, x * 1, Identity, inference Dropout, ... each become x (one rule per kind of no-op)."""


@register_pass("eliminate-noop", description="remove Identity, inference Dropout and ops that provably change nothing")
def eliminate_noop(graph: Graph, ctx: PassContext) -> bool:
    if graph is ctx.model.graph and any(_needs_types(n) for n in graph.all_nodes()):
        infer_shapes(ctx.model)  # a CNN of Conv/BatchNorm/Relu/pooling needs no types: skip the whole inference
    # one sweep per run: -O2 repeats its pipeline until nothing changes, so a sweep that only confirms is spared
    return NOOP_RULES.rewrite(graph, ctx, sweeps=1)


# --------------------------------------------------------------------------------------------------------------------
# merge-consecutive
# --------------------------------------------------------------------------------------------------------------------
def _compose_transposes(m: Match, b: Builder) -> Value:
    p1, p2 = m["first"].attr("perm"), m["second"].attr("perm")
    combined = [p1[j] for j in p2]
    if combined == list(range(len(combined))):
        return m["x"]  # the two cancel
    return b.op("Transpose", m["x"], perm=combined)


def _static_target(m: Match, b: Builder) -> Value | Declined:
    node = m.node("n")
    target = static_reshape_target(node, m.value("x"), m.opset() or 1)  # type: ignore[arg-type]
    if target is None:
        return m.decline("target not proven")
    return b.copy(node, inputs={1: b.const(np.array(target, dtype=np.int64), "shape")})


def _merge_reshapes(m: Match, b: Builder) -> Value | Declined:
    shape = _ints(m.value("shape"))
    node = m.node("second")
    if shape is None:
        return m.decline("shape not an int constant")
    if 0 in shape and not node.attr("allowzero", 0):
        return m.decline("0 copies a dim of the first reshape's output")
    return b.copy(node, inputs={0: m.value("x")})


def _merge_unsqueezes(m: Match, b: Builder) -> Value | Declined:
    """Unsqueeze(Unsqueeze(x, a1), a2) becomes one Unsqueeze of x with the axes both insert (opset >= 13)."""
    first, node = m.node("first"), m.node("second")
    x = m.value("x")
    a1, a2 = _axes(first, m.ctx, 13), _axes(node, m.ctx, 13)
    if x is None or x.shape is None:
        return m.decline("input rank unknown")
    if not a1 or not a2:
        return m.decline("axes not constant")
    mid_rank = len(x.shape) + len(a1)
    out_rank = mid_rank + len(a2)
    a1 = sorted(a % mid_rank for a in a1)
    a2 = sorted(a % out_rank for a in a2)
    kept = [p for p in range(out_rank) if p not in a2]  # output positions holding the intermediate's dims, in order
    axes = sorted(a2 + [kept[a] for a in a1])
    if len(set(axes)) != len(axes):
        return m.decline("axes overlap")
    return b.copy(node, inputs=[x, b.const(np.array(axes, dtype=np.int64), "axes")])


def _cancel_squeeze(m: Match, b: Builder) -> Value | Declined:
    first, node = m.node("first"), m.node("second")
    if first.op_type == node.op_type:
        return m.decline("same op twice")
    a1, a2 = _axes(first, m.ctx, 13), _axes(node, m.ctx, 13)
    if not a1 or a1 != a2:
        return m.decline("axes differ or unknown")
    x, out = m.value("x"), node.outputs[0]
    assert x is not None
    if out is not None and m.graph.is_output(out):
        renameable = x.producer is not None and x.producer.graph is m.graph and not m.graph.is_output(x)
        if not renameable or (x.dtype is not None and out.dtype is not None and x.dtype != out.dtype):
            return m.decline("graph output would need an Identity")
    return x


def _pad_into_conv(m: Match, b: Builder) -> Value | Declined:
    """Pad (constant zeros, spatial dims only) -> Conv becomes a Conv with larger pads: the same zeros, one op."""
    pad, conv = m.node("pad"), m.node("conv")
    if pad.attr("mode", "constant") not in ("constant", b"constant"):
        return m.decline("pad mode not constant")
    auto_pad = conv.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", b"NOTSET", "VALID", b"VALID"):
        return m.decline("auto_pad SAME")  # SAME_* pads depend on the input size, which the Pad changes
    if (m.opset() or 1) >= 11:
        if _input(pad, 3) is not None:
            return m.decline("pad axes given")  # explicit axes (opset 18): keep it simple
        pads = _ints(_input(pad, 1))
        value = _input(pad, 2)
        if value is not None:
            t = value.constant()
            if t is None or t.numpy().size != 1 or t.numpy().reshape(-1)[0] != 0:
                return m.decline("pad value not zero")
    else:
        node_pads = pad.attr("pads")
        pads = list(node_pads) if node_pads is not None else None
        if pad.attr("value", 0.0) != 0.0:
            return m.decline("pad value not zero")
    wt = m.value("w").constant()  # type: ignore[union-attr]
    assert wt is not None
    if pads is None:
        return m.decline("pads not constant")
    rank = len(wt.dims)
    if len(pads) != 2 * rank or any(p < 0 for p in pads):
        return m.decline("pads negative or of another rank")
    if pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
        return m.decline("pads batch or channel dims")  # not a conv padding
    spatial = rank - 2
    valid = auto_pad in ("VALID", b"VALID")  # VALID means no padding: explicit pads then say the same
    old = [0] * (2 * spatial) if valid else list(conv.attr("pads", [0] * (2 * spatial)))
    new = [old[i] + pads[2 + i] for i in range(spatial)] + [
        old[spatial + i] + pads[rank + 2 + i] for i in range(spatial)
    ]
    return b.copy(conv, inputs={0: m.value("x")}, attrs={"pads": new}, drop=("auto_pad",) if valid else ())


_HAS_PERM = {"perm": lambda p: p is not None}
MERGE_RULES = RuleSet(
    [
        Rule(
            "merge-transpose",
            Op(
                "Transpose",
                Op("Transpose", Var("x"), name="first", attrs=_HAS_PERM, shared=True),
                name="second",
                attrs=_HAS_PERM,
            ),
            condition=_check("ranks differ", lambda m: len(m["first"].attr("perm")) == len(m["second"].attr("perm"))),
            replace=_compose_transposes,
        ),
        # a computed target (Concat of constants and dims read through Shape) becomes a constant one
        Rule(
            "reshape-static-target", Op("Reshape", Var("x"), Op("Concat", ..., shared=True), name="n"), _static_target
        ),
        Rule(
            "merge-reshape",
            Op("Reshape", Op("Reshape", Var("x"), Var(), shared=True), Const("shape"), name="second"),
            _merge_reshapes,
        ),
        Rule(
            "merge-unsqueeze",
            Op("Unsqueeze", Op("Unsqueeze", Var("x"), ..., name="first", shared=True), ..., name="second"),
            _merge_unsqueezes,
            opsets=(13, None),
        ),
        Rule(
            "cancel-squeeze-unsqueeze",
            Op(_SQ, Op(_SQ, Var("x"), ..., name="first", shared=True), ..., name="second"),
            _cancel_squeeze,
        ),
        Rule(
            "pad-into-conv",
            Op("Conv", Op("Pad", Var("x"), ..., name="pad", shared=True), Const("w"), ..., name="conv"),
            _pad_into_conv,
        ),
    ]
)
"""merge-consecutive: pairs of ops that collapse into one (or none)."""


@register_pass(
    "merge-consecutive",
    description=(
        "fuse Transpose/Reshape chains and zero Pad into Conv; drop Squeeze/Unsqueeze pairs that cancel; "
        "computed Reshape targets to constants (0 = copy, -1 = infer)"
    ),
)
def merge_consecutive(graph: Graph, ctx: PassContext) -> bool:
    # one sweep per run: -O2 repeats its pipeline until nothing changes, so a sweep that only confirms is spared
    return MERGE_RULES.rewrite(graph, ctx, sweeps=1)


RULES = NOOP_RULES + MERGE_RULES
"""Every rule of eliminate-noop and merge-consecutive."""
