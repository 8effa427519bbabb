"""merge-consecutive: fuse chains that collapse into one op (or none): Transpose pairs, Reshape chains, Unsqueeze
pairs, Squeeze/Unsqueeze pairs that cancel, an Unsqueeze into the constant an Expand broadcasts, a Transpose into the
ConstantOfShape it permutes, a zero Pad into the Conv after it, computed Reshape targets to constants.

Only standard-domain ops are touched, and the model's default-domain opset decides where axes and pads live.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphopt.core.ir import Graph, Node, Value
from graphopt.engine.passes_api import PassContext, register_pass
from graphopt.patterns import Builder, Const, Declined, Match, Op, Rule, RuleSet, Var

from .dims import static_reshape_target
from .numpy_eval import fill_of
from .readers import axes_of, check, input_at, ints

_SQ = ("Squeeze", "Unsqueeze")


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
    drop = ("allowzero",) if node.attr("allowzero", 0) else ()  # the target reads 0 as a copy (allowzero=0)
    out = b.copy(node, inputs={1: b.const(np.array(target, dtype=np.int64), "shape")}, drop=drop)
    shape = _target_shape(target, m.value("x"), node.output)
    if shape is not None:
        # typed from the constant target: the Reshape's old type may hold ONNX's made-up dims (unk__) where the
        # target is now known, and shape inference re-types only untyped values
        out.dtype, out.shape = node.output.dtype, shape
    return out


def _target_shape(target: list[int], x: Value | None, old: Value) -> tuple[Any, ...] | None:
    """The output shape of Reshape(x, target) read with allowzero=0: 0 copies x's dim, a positive entry is itself,
    -1 is x's element count over the other entries when the dims that do not cancel (x's copied ones do) are known
    ints, else the dim the old output had there. None when x's rank or the old output's rank is unknown, or the
    counts do not divide."""
    if x is None or x.shape is None or old.shape is None or len(old.shape) != len(target) or len(x.shape) < sum(
        1 for e in target if e == 0
    ):
        return None
    dims: list[Any] = []
    for i, e in enumerate(target):
        if e == 0:
            if i >= len(x.shape) or x.shape[i] is None:
                return None
            dims.append(x.shape[i])
        elif e > 0:
            dims.append(e)
        else:
            dims.append(None)  # -1: filled below
    if -1 in target:
        k = target.index(-1)
        # a copied dim (0) is x's own at that position: it cancels out of the element count
        kept = [d for j, d in enumerate(x.shape) if not (j < len(target) and target[j] == 0)]
        rest = [e for j, e in enumerate(target) if j != k and e != 0]
        if all(isinstance(d, int) for d in kept):
            total, other = int(np.prod(kept, dtype=np.int64)), int(np.prod(rest, dtype=np.int64))
            if other == 0 or total % other:
                return None
            dims[k] = total // other
        else:
            dims[k] = old.shape[k]
    return tuple(dims)


def _merge_reshapes(m: Match, b: Builder) -> Value | Declined:
    """Reshape(Reshape(x, S1), S2) -> Reshape(x, S2): the element count and order are x's either way. S2 must not
    copy a dim of the first Reshape's output: it is a constant without 0, or the second Reshape has ``allowzero=1``
    (every entry literal, computed ones too)."""
    node = m.node("second")
    if not node.attr("allowzero", 0):
        shape = ints(m.value("shape"))
        if shape is None:
            return m.decline("shape not an int constant")
        if 0 in shape:
            return m.decline("0 copies a dim of the first reshape's output")
    return b.copy(node, inputs={0: m.value("x")})


def _merge_unsqueezes(m: Match, b: Builder) -> Value | Declined:
    """Unsqueeze(Unsqueeze(x, a1), a2) becomes one Unsqueeze of x with the axes both insert (opset >= 13)."""
    first, node = m.node("first"), m.node("second")
    x = m.value("x")
    a1, a2 = axes_of(first, m.ctx, 13), axes_of(node, m.ctx, 13)
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


def _transpose_of_filled(m: Match, b: Builder) -> Value | Declined:
    """Transpose(ConstantOfShape(s), perm) -> ConstantOfShape(s[perm]): every element holds the same value, so
    permuting the axes only permutes the shape (skl2onnx's Gaussian-process kernels transpose a zeros tensor)."""
    shape, perm = ints(m.value("s")), m.node("n").attr("perm")
    if shape is None or any(d < 0 for d in shape):
        return m.decline("shape not a non-negative int constant")
    if sorted(perm) != list(range(len(shape))):
        return m.decline("perm does not match the shape's rank")
    target = np.array([shape[p] for p in perm], dtype=np.int64)
    return b.copy(m.node("fill"), inputs={0: b.const(target, "shape")})


def _plus_zero_fill(node: Node) -> np.ndarray | None:
    """The fill of a ConstantOfShape whose every element is +0 (absent value: float 0), else None."""
    fill = fill_of(node)
    if fill.size != 1 or fill.dtype.kind not in "fiu" or fill[0] != 0 or np.signbit(fill[0]):
        return None
    return fill


def _matmul_of_zero_fills(m: Match, b: Builder) -> Value | Declined:
    """MatMul(ConstantOfShape(Concat(n..., [k])), Z) -> ConstantOfShape(Concat(n..., [c])) when Z is a [k, c] matrix of
    +0s (a ConstantOfShape of a constant shape, or a constant) of the fill's type and the fill is +0: every product is
    +0 * +0 and every sum of them +0 (an empty sum, k = 0, too), so the product is the [n, c] matrix of +0s. Both
    operands are matrices (the Concat makes two dims) and the inner dims are the same constant, so the MatMul was
    valid; NaN or Inf cannot occur. skl2onnx's Gaussian-process White kernel multiplies two such zero matrices."""
    fa, cat, z = m.node("fa"), m.node("cat"), m.value("z")
    za = _plus_zero_fill(fa)
    zp = z.producer if z is not None else None
    const = z.constant() if z is not None else None
    if const is not None:
        arr = const.numpy()
        zb = arr.reshape(-1)[:1] if arr.ndim == 2 and not np.any(arr) and not np.any(np.signbit(arr)) else None
        sb = list(arr.shape) if zb is not None else None
    elif zp is not None and zp.op_type == "ConstantOfShape" and zp.domain in ("", "ai.onnx"):
        zb, sb = _plus_zero_fill(zp), ints(zp.inputs[0] if zp.inputs else None)
    else:
        return m.decline("right operand not a zero matrix")
    if za is None or zb is None or za.dtype != zb.dtype:
        return m.decline("fills not +0 of one type")
    if sb is None or len(sb) != 2 or any(d < 0 for d in sb):
        return m.decline("right shape not a constant matrix shape")
    if cat.attr("axis") != 0 or len(cat.inputs) < 2:
        return m.decline("left shape not a Concat on axis 0")
    lengths = [m.static_shape(v) for v in cat.inputs]
    if any(s is None or len(s) != 1 for s in lengths) or sum(s[0] for s in lengths) != 2:  # type: ignore[index]
        return m.decline("left shape not of length 2")
    inner = ints(cat.inputs[-1])
    if inner is None or len(inner) != 1 or inner[0] != sb[0]:
        return m.decline("inner dims not the same constant")
    shape = b.copy(cat, inputs={len(cat.inputs) - 1: np.array([sb[1]], dtype=np.int64)})
    return b.copy(fa, inputs={0: shape})


def _unsqueeze_of_expand(m: Match, b: Builder) -> Value | Declined:
    """Unsqueeze(Expand(c, s), axes) -> Expand(c', s') for a constant c and shape s: Expand broadcasts numpy's way
    (right-aligned), so c and s are first padded on the left with 1s to the output's rank, then both get a 1 at each
    new axis; broadcasting 1 against 1 gives 1 there, every other dim is as before, and the elements keep their order.
    c' holds c's data (no larger), s' grows by one entry per axis, and the Unsqueeze is gone."""
    node = m.node("n")
    c, shape = m.const("c"), ints(m.value("s"))
    if shape is None or any(d < 0 for d in shape):
        return m.decline("shape not a non-negative int constant")
    axes = axes_of(node, m.ctx, 13)
    if not axes:
        return m.decline("axes not constant")
    try:
        out = np.broadcast_shapes(c.shape, tuple(shape))
    except ValueError:
        return m.decline("shape does not broadcast")
    rank = len(out) + len(axes)
    norm = sorted(a % rank for a in axes if -rank <= a < rank)
    if len(norm) != len(axes) or len(set(norm)) != len(norm):
        return m.decline("invalid axes")
    base = c.reshape((1,) * (len(out) - c.ndim) + c.shape)
    target, want = [1] * (len(out) - len(shape)) + list(shape), list(out)
    for a in norm:  # ascending: each insert lands where the Unsqueeze puts its 1
        base = np.expand_dims(base, a)
        target.insert(a, 1)
        want.insert(a, 1)
    if np.broadcast_shapes(base.shape, tuple(target)) != tuple(want):  # by the argument above, never
        return m.decline("shapes disagree")
    return b.copy(
        m.node("expand"),
        inputs=[b.const(np.ascontiguousarray(base), "unsqueezed"), b.const(np.array(target, np.int64))],
    )


def _unsqueeze_of_concat(m: Match, b: Builder) -> Value | Declined:
    """Unsqueeze(Concat(x1, x2, ..., axis=k), axes) -> Concat(x1', x2', ..., axis=k') where every x_i is a constant
    (x_i' = the constant with the new 1s, the same data) or the output of a Reshape read only by this Concat whose
    target is a constant without a 0 that copies a dim (x_i' = that Reshape with the 1s inserted in its target: a
    Reshape to shape t then an Unsqueeze is one Reshape to t with 1s, the same elements in the same order). The new
    1s are not on the concatenated dim, which sits at k' (the output position of input dim k), and the Unsqueeze is
    gone."""
    node, cat = m.node("n"), m.node("cat")
    graph = m.graph
    axes = axes_of(node, m.ctx, 13)
    if not axes:
        return m.decline("axes not constant")
    axis = cat.attr("axis")
    first = cat.inputs[0] if cat.inputs else None
    rank = len(first.shape) if first is not None and first.shape is not None else None
    for v in cat.inputs:  # all inputs of a Concat have one rank: a constant's, or a Reshape target's length
        t = v.constant() if v is not None else None
        target = ints(input_at(v.producer, 1)) if v is not None and v.producer is not None else None
        if t is not None:
            rank = len(t.dims)
        elif target is not None and v.producer.op_type == "Reshape":  # type: ignore[union-attr]
            rank = len(target)
    if rank is None or axis is None or not -rank <= axis < rank:
        return m.decline("rank unknown")
    out_rank = rank + len(axes)
    norm = sorted(a % out_rank for a in axes if -out_rank <= a < out_rank)
    if len(norm) != len(axes) or len(set(norm)) != len(norm):
        return m.decline("invalid axes")
    kept = [p for p in range(out_rank) if p not in norm]
    plans: list[tuple[str, Any]] = []
    for v in cat.inputs:
        t = v.constant() if v is not None else None
        if t is not None:
            plans.append(("const", np.expand_dims(t.numpy(), norm)))
            continue
        p = v.producer if v is not None else None
        if (
            p is None
            or p.op_type != "Reshape"
            or p.domain not in ("", "ai.onnx")
            or p.graph is not graph
            or graph.is_output(v)
            or any(u is not cat for u in v.users())
        ):
            return m.decline("an input is neither a constant nor a Reshape read only here")
        target = ints(input_at(p, 1))
        if target is None or len(target) != rank or (0 in target and not p.attr("allowzero", 0)):
            return m.decline("a Reshape target not constant, of another rank, or copying a dim")
        for a in norm:
            target.insert(a, 1)
        plans.append(("reshape", (p, target)))
    inputs, made = [], {}  # a Reshape read twice by the Concat is rewritten once
    for kind, what in plans:
        if kind == "const":
            inputs.append(b.const(np.ascontiguousarray(what), "unsqueezed"))
            continue
        p, target = what
        if id(p) not in made:
            made[id(p)] = b.copy(p, inputs={1: b.const(np.array(target, dtype=np.int64), "shape")})
        inputs.append(made[id(p)])
    return b.copy(cat, inputs=inputs, attrs={"axis": kept[axis % rank]})


def _cancel_squeeze(m: Match, b: Builder) -> Value | Declined:
    first, node = m.node("first"), m.node("second")
    if first.op_type == node.op_type:
        return m.decline("same op twice")
    a1, a2 = axes_of(first, m.ctx, 13), axes_of(node, m.ctx, 13)
    if not a1 or a1 != a2:
        return m.decline("axes differ or unknown")
    x, out = m.value("x"), node.outputs[0]
    assert x is not None
    if out is not None and m.graph.is_output(out):
        retyped = x.dtype is not None and out.dtype is not None and x.dtype != out.dtype
        if retyped or not m.graph.can_take_output(x, out):
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
        if input_at(pad, 3) is not None:
            return m.decline("pad axes given")  # explicit axes (opset 18): keep it simple
        pads = ints(input_at(pad, 1))
        value = input_at(pad, 2)
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
            condition=check("ranks differ", lambda m: len(m["first"].attr("perm")) == len(m["second"].attr("perm"))),
            replace=_compose_transposes,
        ),
        # a computed target (Concat of constants and dims read through Shape) becomes a constant one
        Rule(
            "reshape-static-target",
            Op("Reshape", Var("x"), Op(("Concat", "Cast"), ..., shared=True), name="n"),
            _static_target,
        ),
        Rule(
            "merge-reshape",
            Op("Reshape", Op("Reshape", Var("x"), Var(), shared=True), Var("shape"), name="second"),
            _merge_reshapes,
        ),
        Rule(
            "merge-unsqueeze",
            Op("Unsqueeze", Op("Unsqueeze", Var("x"), ..., name="first", shared=True), ..., name="second"),
            _merge_unsqueezes,
            opsets=(13, None),
        ),
        Rule(
            "transpose-of-constantofshape",
            Op("Transpose", Op("ConstantOfShape", Const("s"), name="fill"), name="n", attrs=_HAS_PERM),
            _transpose_of_filled,
        ),
        Rule(
            "matmul-of-zero-fills",
            Op(
                "MatMul",
                Op("ConstantOfShape", Op("Concat", ..., name="cat"), name="fa"),
                Var("z"),
                name="n",
            ),
            _matmul_of_zero_fills,
        ),
        # Expand of constants read only here: a detector's anchor grid (Unsqueeze of Expand, then a Concat)
        Rule(
            "unsqueeze-of-expand",
            Op("Unsqueeze", Op("Expand", Const("c"), Const("s"), name="expand"), ..., name="n"),
            _unsqueeze_of_expand,
        ),
        Rule(
            "unsqueeze-of-concat",
            Op("Unsqueeze", Op("Concat", ..., name="cat"), ..., name="n"),
            _unsqueeze_of_concat,
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
            exact=False,  # the Conv reads the unpadded input: onnxruntime may pick another kernel (or fuse Q/DQ)
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
