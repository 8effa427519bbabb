"""eliminate-noop: remove ops that do nothing (Identity, inference Dropout, x + 0, full Slices, ...).

Every rule proves its no-op from constants and known shapes; where a shape or an attribute is unknown, the node stays.
Only standard-domain ops are touched, and the model's default-domain opset decides where axes, pads and slice bounds
live (attributes in old opsets, inputs in newer ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from graphopt.core.ir import Graph, Model, Node, Value
from graphopt.core.shape_inference import infer_shapes
from graphopt.engine.passes_api import Pass, PassContext, register_pass
from graphopt.patterns import STANDARD, Builder, Const, Declined, Match, Op, Or, Rule, RuleSet, Var

from .dims import SAME, UNKNOWN, reshape_entries
from .readers import axes_of, check, input_at, ints

INT_MAX_LIKE = 2**31 - 1
"""Slice ends at or above this mean "to the end" in every exporter's output."""


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
        mode = input_at(node, 2)
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
    shape = ints(input_at(node, 1))
    if shape is None:
        shape = reshape_entries(node, x, opset)
    if shape is None or len(shape) != len(x.shape):
        return False
    allowzero = node.attr("allowzero", 0)
    free = 0
    for s, d in zip(shape, x.shape, strict=True):
        if s == 0 and not allowzero:
            continue
        if s == SAME:
            continue
        if s == UNKNOWN:
            return False
        if s == -1:
            free += 1
            continue
        if not isinstance(d, int) or s != d:
            return False
    return free <= 1


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
        starts, ends = ints(input_at(node, 1)), ints(input_at(node, 2))
        axes = ints(input_at(node, 3)) if input_at(node, 3) is not None else None
        steps = ints(input_at(node, 4)) if input_at(node, 4) is not None else None
        if input_at(node, 3) is not None and axes is None or input_at(node, 4) is not None and steps is None:
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


def _flatten_is_noop(node: Node, x: Value) -> bool:
    """Flatten(x, axis) is x when x has rank 2 and axis is 1 (or -1): the output is ``[d0, d1]`` again."""
    return x.shape is not None and len(x.shape) == 2 and node.attr("axis", 1) in (1, -1)


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
    {"Cast", "CastLike", "Reshape", "Flatten", "Expand", "Slice", "Transpose", "Squeeze", "Unsqueeze", "Shape", "Size"}
    | {"MatMul"}
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

    A graph output that x cannot take the place of (``Graph.can_take_output``: x is an initializer, an outer value,
    another output, or a graph input outside a body matched by position) is kept by an Identity instead: the plainest
    no-op (the rewriter declines trading an Identity for one)."""
    root, x = m.root, m.value("x")
    out = root.outputs[0]
    assert x is not None
    known = out is not None and x.dtype is not None and out.dtype is not None
    if known and m.graph.is_output(out) and m.graph.can_take_output(x, out) and x.dtype != out.dtype:
        return m.decline("graph output's type differs")
    if any(m.graph.is_output(o) for o in root.outputs[1:]):
        return m.decline("another output is a graph output")
    return [x, *[None] * (len(root.outputs) - 1)]


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
    pads = ints(input_at(node, 1)) if (m.opset() or 1) >= 11 else node.attr("pads")
    return pads is not None and all(p == 0 for p in pads)


def _rule(name: str, pattern: Op | Or, reason: str, test: Callable[[Match], bool]) -> Rule:
    return Rule(name, pattern, _pass_through, condition=check(reason, test))


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
            "noop-flatten",  # rank 2 flattened at axis 1 keeps its shape (skl2onnx flattens TopK's indices)
            Op("Flatten", X, name="n"),
            "input not of rank 2 or axis not 1",
            lambda m: _flatten_is_noop(m.node("n"), m.value("x")),  # type: ignore[arg-type]
        ),
        _rule(
            "noop-expand",
            Op("Expand", X, Var("shape")),
            "shape not proven the same",
            lambda m: _expand_is_noop(m.value("x"), ints(m.value("shape"))),  # type: ignore[arg-type]
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
            lambda m: axes_of(m.node("n"), m.ctx, 13) == [],
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
class EliminateNoop(Pass):
    def prepare(self, model: Model, ctx: PassContext) -> None:
        # shape inference once per run, for every graph: a CNN of Conv/BatchNorm/Relu/pooling needs no types, and then
        # the whole inference is skipped
        if any(_needs_types(n) for n in model.graph.all_nodes()):
            infer_shapes(model)

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        # one sweep per run: -O2 repeats its pipeline until nothing changes, so a sweep that only confirms is spared
        return NOOP_RULES.rewrite(graph, ctx, sweeps=1)
