"""Canonical forms the other ONNX simplifiers reach (issue 16: -O2 against onnxsim, onnxslim, onnxoptimizer and
onnxruntime's basic level), written as pattern rules (:mod:`graphopt.patterns`).

**fuse-gemm** -- ``Add(MatMul(A, B), C)`` -> ``Gemm(A, B, C)`` when Gemm computes exactly the same thing:

* A and B are both 2D (the shapes the rule relies on come from :meth:`Match.shape`, or, when that is unknown, from
  a Reshape with a constant two-element target shape or a Flatten, whose output is 2D whatever its input; MatMul of
  2D inputs is Gemm's product, no batch dimensions, no 1D promotion);
* C broadcasts *unidirectionally* to the product's shape (M, N): rank <= 2, every dim (right-aligned) a known 1 or
  equal to the product's known dim, so the Add's output is exactly (M, N) and Gemm's C rule accepts it;
* the element type is float or double (Gemm's onnxruntime CPU kernels; integer Gemm needs opset 11 and has none),
  and the model's opset is at least 7 (Gemm's unidirectional broadcast of C);
* the MatMul's output is read only by the Add (the rewriter's rule for inner nodes), and C is not that output.

The rule runs inside If/Loop/Scan bodies like every rule pass. It comes before fuse-parallel-matmul in -O2 (inside
the ``canonicalize`` pass, after cleanup and cse, when Flatten/Reshape targets are constants and A's shape is known):
N parallel MatMul + Add pairs become N Gemm nodes (N fewer nodes) where the parallel fusion would leave one MatMul,
a Split and N Adds.

The other families (each a pass of its own, all of them together the ``canonicalize`` pass of -O2), each rule's
safety argument in its docstring: **push-transposes** (Transpose below elementwise ops, Reduce and Shape of a
Transpose), **sub-const-to-add**, **merge-reshapes**, **merge-concats**, **fold-conv-input-scale**,
**drop-zero-rnn-states**, **mul-reciprocal-to-div**. This module holds canonicalize and the rule families it is
made of (the one module that holds several registered passes: they are canonicalize's parts). merge-const-chains,
not in -O2 (it reassociates float additions), has its own module. ``benchmarks/o2_gaps.py`` shows, per corpus model,
the op counts -O2 leaves above the best other simplifier.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from graphopt.core.ir import Node, Value
from graphopt.patterns import Const, Declined, Match, Op, Opt, Rule, RuleSet, Var

from .numpy_eval import fill_of

GEMM_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE})


def _shape(m: Match, name: str) -> tuple | None:
    """The shape of a bound value, or -- when shape inference left it unknown -- the rank-2 shape a Reshape with a
    constant two-element target or a Flatten always produces (dims unknown: None), which is all Gemm's A needs."""
    s = m.shape(name)
    if s is not None:
        return s
    v = m.value(name)
    p = v.producer if v is not None else None
    if p is None or p.domain not in ("", "ai.onnx"):
        return None
    if p.op_type == "Flatten":
        return (None, None)
    if p.op_type == "Reshape" and len(p.inputs) >= 2 and p.inputs[1] is not None:
        t = p.inputs[1].constant()
        if t is not None and tuple(t.dims) == (2,):
            return (None, None)
    return None


def _gemm_condition(m: Match) -> object:
    mm = m.node("mm")
    c = m.value("c")
    if c is not None and c.producer is mm:
        return m.decline("bias is the product itself")
    # MatMul's and Add's type constraints make A, B and C one type in a valid model: one known type decides
    types = {m.dtype(x) for x in ("a", "b", "c")} - {None}
    if len(types) != 1 or not types <= GEMM_TYPES:
        return m.decline("element type not float/double (or unknown)")
    sa, sb, sc = _shape(m, "a"), _shape(m, "b"), m.shape("c")
    if sa is None or sb is None or len(sa) != 2 or len(sb) != 2:
        return m.decline("A or B not known to be 2D")
    if sc is None or len(sc) > 2:
        return m.decline("bias rank unknown or above 2")
    out = (sa[0], sb[1])
    for dc, do in zip(reversed(sc), reversed(out), strict=False):
        if not isinstance(dc, int):
            return m.decline("bias dim unknown")
        if dc != 1 and not (isinstance(do, int) and dc == do):
            return m.decline("bias does not broadcast unidirectionally to (M, N)")
    return True


def _gemm_replace(m: Match, b) -> object:
    """Gemm(A, B, C); a constant C of shape (1, N) read only here becomes the vector (N,), the usual bias form (the
    same unidirectional broadcast, so the same sums)."""
    c = m["c"]
    t = c.constant() if c is not None else None
    if t is not None and len(t.dims) == 2 and t.dims[0] == 1 and c.single_user() is not None:
        c = b.const(t.numpy().reshape(-1), "bias")
    return b.op("Gemm", m["a"], m["b"], c)


fuse_gemm = Rule(
    "matmul-add-to-gemm",
    Op("Add", Op("MatMul", Var("a"), Var("b"), name="mm"), Var("c"), commutative=True),
    _gemm_replace,
    condition=_gemm_condition,
    opsets=(7, None),
    exact=False,  # Gemm adds the bias in another order than MatMul then Add
)

FUSE_GEMM = RuleSet([fuse_gemm])
FUSE_GEMM.register(
    "fuse-gemm",
    description="Add(MatMul(A, B), C) -> Gemm(A, B, C) for 2D float A, B and a bias C "
    "that broadcasts unidirectionally to the product",
)


# --------------------------------------------------------------------------------------------------------------------
# push-transposes
# --------------------------------------------------------------------------------------------------------------------
BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min")
"""Elementwise ops with a constant operand a Transpose moves past (the constant is transposed the inverse way)."""
UNARY = (
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Neg",
    "Abs",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Elu",
    "Selu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Softsign",
    "Erf",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Not",
    "Cast",
)
"""Elementwise ops of one input and one output a Transpose moves past unchanged."""


def _perm(m: Match) -> list[int] | None:
    perm = m.node("t").attr("perm")
    if perm is None:
        return None
    perm = [int(p) for p in perm]
    return perm if sorted(perm) == list(range(len(perm))) else None


def _transposed_const(m: Match) -> object:
    """The constant C' with ``Transpose(C', perm) == C`` broadcast the same way (None: C itself, a single element), or
    a decline; C must not broadcast the Transpose's output up (then the Transpose would move to a larger tensor)."""
    perm = _perm(m)
    if perm is None:
        return m.decline("Transpose without a valid perm")
    c = m.const("c")
    n = len(perm)
    if c.ndim > n:
        return m.decline("constant of higher rank than the Transpose")
    if c.size == 1:
        return None  # broadcasts the same either way: the constant stays
    ts = m.shape("t")
    full = (1,) * (n - c.ndim) + tuple(c.shape)
    for k, d in enumerate(full):
        if d != 1 and not (ts is not None and len(ts) == n and isinstance(ts[k], int) and ts[k] == d):
            return m.decline("constant may broadcast the tensor up")
    inv = np.argsort(perm)
    return np.ascontiguousarray(np.transpose(c.reshape(full), inv))


def _push_binary(left: bool):
    def replace(m: Match, b) -> object:
        c = _transposed_const(m)
        if isinstance(c, Declined):
            return c
        node = m.node("op")
        x, cv = m["x"], (m["c"] if c is None else b.const(c, "transposed"))
        y = b.copy(node, inputs=[x, cv] if left else [cv, x])
        return b.op("Transpose", y, perm=_perm(m))

    return replace


def _push_unary(m: Match, b) -> object:
    perm = _perm(m)
    if perm is None:
        return m.decline("Transpose without a valid perm")
    y = b.copy(m.node("op"), inputs={0: m["x"]})
    return b.op("Transpose", y, perm=perm)


_T = {"perm": lambda p: p is not None}
_CLIP_BOUND = Opt(Const(where=lambda a: a.size == 1))

PUSH_TRANSPOSES = RuleSet(
    [
        Rule(
            "transpose-through-binary",
            Op(BINARY, Op("Transpose", Var("x"), name="t", attrs=_T), Const("c"), name="op"),
            _push_binary(left=True),
        ),
        Rule(
            "transpose-through-binary-right",
            Op(BINARY, Const("c"), Op("Transpose", Var("x"), name="t", attrs=_T), name="op"),
            _push_binary(left=False),
        ),
        Rule(
            "transpose-through-unary",
            Op(UNARY, Op("Transpose", Var("x"), name="t", attrs=_T), name="op"),
            _push_unary,
        ),
        Rule(
            "transpose-through-clip",
            Op("Clip", Op("Transpose", Var("x"), name="t", attrs=_T), _CLIP_BOUND, _CLIP_BOUND, name="op"),
            _push_unary,
        ),
    ]
)


# --------------------------------------------------------------------------------------------------------------------
# sub-const-to-add
# --------------------------------------------------------------------------------------------------------------------
FLOATS = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16})

SUB_TO_ADD = RuleSet(
    [
        Rule(
            "sub-const-to-add",
            Op("Sub", Var("x"), Const("c"), name="op"),
            lambda m, b: b.op("Add", m["x"], -m.const("c")),
            condition=lambda m: m.dtype("c") in FLOATS or m.decline("not a float constant"),
        )
    ]
)
SUB_TO_ADD.register(
    "sub-const-to-add",
    description="x - C -> x + (-C) for a float constant C (bit-exact in IEEE arithmetic), so the constant folds into a "
    "Conv/Gemm bias and Add chains like any other",
)


# --------------------------------------------------------------------------------------------------------------------
# merge-reshapes
# --------------------------------------------------------------------------------------------------------------------
def _target(m: Match, node: str = "r") -> list[int] | None:
    """A Reshape's constant target shape, or None (computed, or holding a 0 that copies an input dim)."""
    n = m.node(node)
    t = n.inputs[1].constant() if len(n.inputs) > 1 and n.inputs[1] is not None else None
    if t is None:
        return None
    s = [int(d) for d in t.numpy().reshape(-1)]
    return None if 0 in s and not n.attr("allowzero", 0) else s


def _axes(m: Match, node: str) -> list[int] | None | Declined:
    """Squeeze/Unsqueeze axes (attribute before opset 13, constant input after); None when not given."""
    n = m.node(node)
    if len(n.inputs) > 1 and n.inputs[1] is not None:
        t = n.inputs[1].constant()
        return m.decline("axes not constant") if t is None else [int(a) for a in t.numpy().reshape(-1)]
    a = n.attr("axes")
    return None if a is None else [int(x) for x in a]


def _reshape_of_shape_op(m: Match, b) -> object:
    """Reshape(Squeeze|Unsqueeze|Flatten(y), S) -> Reshape(y, S): those ops only relabel the shape (row-major order
    kept), and a target without 0 entries does not read the intermediate shape."""
    if _target(m) is None:
        return m.decline("target computed or copies an input dim (0)")
    return b.copy(m.node("r"), inputs={0: m["y"]})


def _shape_op_of_reshape(m: Match, b) -> object:
    """Unsqueeze(Reshape(y, S), axes) -> Reshape(y, S with 1 inserted at axes); Squeeze(Reshape(y, S), axes) ->
    Reshape(y, S without axes), when S says 1 (not -1) at every squeezed axis."""
    s = _target(m)
    if s is None or 0 in s:
        return m.decline("target computed or holds 0")
    axes = _axes(m, "op")
    if isinstance(axes, Declined):
        return axes
    op = m.node("op").op_type
    if op == "Unsqueeze":
        if not axes:
            return m.decline("no axes")
        rank = len(s) + len(axes)
        norm = sorted(a + rank if a < 0 else a for a in axes)
        if len(set(norm)) != len(norm) or not all(0 <= a < rank for a in norm):
            return m.decline("invalid axes")
        it = iter(s)
        new = [1 if k in norm else next(it) for k in range(rank)]
    else:
        if axes is None:
            return m.decline("Squeeze without axes")
        norm = {a + len(s) if a < 0 else a for a in axes}
        if not all(0 <= a < len(s) and s[a] == 1 for a in norm):
            return m.decline("squeezed dim not a literal 1")
        new = [d for k, d in enumerate(s) if k not in norm]
    return b.copy(m.node("r"), inputs={1: np.array(new, dtype=np.int64)})


def _same_shape(m: Match) -> object:
    """Reshape(x, Shape(z)) is x when x and z have one shape: every dim known and equal (ints, or the same symbol of
    graphopt's own shape inference), and the Shape takes every dim (no start/end)."""
    shape = m.node("shape")
    if shape.attr("start") is not None or shape.attr("end") is not None:
        return m.decline("Shape with start/end")
    sx, sz = m.shape("x"), m.shape("z")
    if sx is None or sz is None or any(d is None for d in sx) or tuple(sx) != tuple(sz):
        return m.decline("shapes not known to be equal")
    return True


def _moves_unit_dims_only(shape: tuple | None, perm: list[int] | None) -> bool:
    """Whether Transpose(perm) of a tensor of ``shape`` only moves dims that are a literal 1: the other dims keep
    their order, so the elements keep their row-major order and the Transpose is a Reshape (a symbolic dim may be
    anything, so it counts as not 1)."""
    if shape is None or perm is None or sorted(perm) != list(range(len(shape))):
        return False
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


def _transpose_of_reshape(m: Match, b) -> object:
    """Transpose(Reshape(y, S), perm) -> Reshape(y, T) when the Transpose moves only dims of size 1: T is the
    Transpose's output shape, its known dims as they are and at most one unknown dim as -1 (the element count fixes
    it). No known dim may be 0 (-1 would be ambiguous)."""
    t = m.node("t")
    perm = t.attr("perm")
    shape = m.shape("r")
    perm = list(perm) if perm is not None else (list(range(len(shape)))[::-1] if shape is not None else None)
    if not _moves_unit_dims_only(shape, perm):
        return m.decline("moves a dim that is not 1 (or shape unknown)")
    out = [shape[p] for p in perm]  # type: ignore[index]
    unknown = [i for i, d in enumerate(out) if not isinstance(d, int)]
    if len(unknown) > 1 or 0 in out:
        return m.decline("more than one unknown dim, or an empty one")
    target = [-1 if i in unknown else d for i, d in enumerate(out)]
    return b.copy(m.node("r"), inputs={0: m["y"], 1: np.array(target, dtype=np.int64)}, drop=("allowzero",))


def _reshape_of_unit_transpose(m: Match, b) -> object:
    """Reshape(Transpose(x, perm), S) -> Reshape(x, S) when the Transpose moves only dims of size 1 (a relabeling of
    the shape, row-major order kept) and S does not copy a dim of the Transpose's output (no 0)."""
    if _target(m) is None or 0 in (_target(m) or []):
        return m.decline("target computed or holds 0")
    perm = m.node("t").attr("perm")
    shape = m.shape("x")
    perm = list(perm) if perm is not None else (list(range(len(shape)))[::-1] if shape is not None else None)
    if not _moves_unit_dims_only(shape, perm):
        return m.decline("moves a dim that is not 1 (or shape unknown)")
    return b.copy(m.node("r"), inputs={0: m["x"]})


ELEMENTWISE = frozenset(
    {
        *UNARY,
        *BINARY,
        "Gelu",
        "Mish",
        "ThresholdedRelu",
        "Celu",
        "Sin",
        "Cos",
        "Tan",
        "Asin",
        "Acos",
        "Atan",
        "Sinh",
        "Cosh",
        "Asinh",
        "Acosh",
        "Atanh",
        "IsNaN",
        "IsInf",
        "Clip",
        "Mod",
        "And",
        "Or",
        "Xor",
        "Equal",
        "Less",
        "Greater",
        "LessOrEqual",
        "GreaterOrEqual",
        "Sum",
        "Mean",
        "Where",
    }
)
"""Ops that compute each output element from the elements at the same position of their inputs (numpy broadcasting,
no axis, no reduction), whatever the inputs' shape: the ops a Reshape pair can be lifted off."""
MAX_ELEMENTWISE_DAG = 64
"""Most elementwise nodes the Reshape-pair rule walks through (a bound on its cost per Reshape)."""


def _elementwise_dag(m: Match, y: Value) -> tuple[Node, list[Node], int] | Declined:
    """Walk up from ``y`` through elementwise nodes of this graph whose every input is another value of the walk or a
    single-element constant, to one opening Reshape: (the Reshape, the elementwise nodes, the highest rank of their
    constants), or a decline."""
    graph = m.graph
    opening: Node | None = None
    dag: list[Node] = []
    seen: set[Value] = set()
    const_rank = 0
    stack = [y]
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        p = v.producer
        if p is None or p.graph is not graph or p.domain not in ("", "ai.onnx"):
            return m.decline("an input of the elementwise ops is neither computed here nor a one-element constant")
        if p.op_type == "Reshape":
            if opening is not None and opening is not p:
                return m.decline("more than one opening Reshape")
            opening = p
            continue
        if p.op_type not in ELEMENTWISE or len(p.outputs) != 1:
            return m.decline("reads a node that is not elementwise")
        if len(dag) >= MAX_ELEMENTWISE_DAG:
            return m.decline("too many elementwise nodes")
        dag.append(p)
        for x in p.inputs:
            if x is None:
                continue  # Clip's omitted bounds
            t = x.constant()
            if t is not None:
                if t.size != 1:
                    return m.decline("a constant that is not a single element (it may broadcast)")
                const_rank = max(const_rank, len(t.dims))
                continue
            stack.append(x)
    if opening is None:
        return m.decline("no opening Reshape")
    return opening, dag, const_rank


def _reshape_pair(m: Match, b) -> object:
    """Reshape(f(Reshape(x, S)), T) -> f(x), where f is a DAG of elementwise nodes (``ELEMENTWISE``) whose other
    inputs are single-element constants, and T provably is x's shape (GPT-2's GELU between its two Gemms).

    Why it is exact: a Reshape keeps the elements in row-major order; every value of the DAG has the opening Reshape's
    output shape (all of its non-constant inputs do, and a one-element constant of rank <= x's rank broadcasts to any
    shape without changing it), so f computes element k of its output from element k of each input, whatever the
    shape; run on x, it gives the same elements in the same order, in x's shape. T is x's shape when it has x's rank,
    no 0 and, at every position, x's known dim, except at most one -1 (the element count then fixes that dim: the
    other dims are positive). The values between the two Reshapes must be read only inside the DAG (and not be graph
    outputs): the nodes are rebuilt on x (new values, so shape inference types them afresh) and the old ones, left
    unread, go with dce."""
    r2 = m.node("r")
    out = r2.outputs[0]
    if out is None or (not out.uses and not out.is_graph_output(m.graph)):
        return m.decline("unread")
    target = _target(m)
    if target is None or 0 in target or target.count(-1) > 1:
        return m.decline("target computed, or holds 0 or several -1")
    found = _elementwise_dag(m, m.value("y"))
    if isinstance(found, Declined):
        return found
    opening, dag, const_rank = found
    x = opening.inputs[0]
    sx = m.shape(x)
    if x is None or sx is None or len(sx) != len(target):
        return m.decline("the first Reshape's input shape unknown or of another rank")
    if any(t != -1 and not (isinstance(d, int) and d == t) for t, d in zip(target, sx, strict=True)):
        return m.decline("target not provably the first Reshape's input shape")
    if const_rank > len(sx):
        return m.decline("a constant of higher rank than the first Reshape's input")
    members = set(dag) | {r2}
    for node in [opening, *dag]:
        v = node.outputs[0]
        if v is None or v.is_graph_output(m.graph) or any(u not in members for u, _ in v.uses):
            return m.decline("a value between the Reshapes is read elsewhere or is a graph output")
    # rebuild the DAG on x, each node after the ones it reads
    new = {opening.outputs[0]: x}
    in_dag = set(dag)

    def emit(node: Node) -> None:
        if node.outputs[0] in new:
            return
        for v in node.inputs:
            if v is not None and v.producer in in_dag:
                emit(v.producer)
        new[node.outputs[0]] = b.copy(node, inputs=[new.get(v, v) if v is not None else None for v in node.inputs])

    for node in dag:
        emit(node)
    return new[m.value("y")]


MERGE_RESHAPES = RuleSet(
    [
        Rule(
            "transpose-of-reshape",
            Op("Transpose", Op("Reshape", Var("y"), Var(), name="r"), name="t"),
            _transpose_of_reshape,
        ),
        Rule(
            "reshape-of-unit-transpose",
            Op("Reshape", Op("Transpose", Var("x"), name="t"), Const(), name="r"),
            _reshape_of_unit_transpose,
        ),
        Rule(
            "reshape-to-own-shape",
            Op("Reshape", Var("x"), Op("Shape", Var("z"), name="shape", shared=True), name="r"),
            lambda m, b: m["x"],
            condition=_same_shape,
        ),
        Rule(
            "reshape-of-squeeze-unsqueeze-flatten",
            Op("Reshape", Op(("Squeeze", "Unsqueeze", "Flatten"), Var("y"), ..., name="op"), Const(), name="r"),
            _reshape_of_shape_op,
        ),
        Rule(
            "squeeze-unsqueeze-of-reshape",
            Op(("Squeeze", "Unsqueeze"), Op("Reshape", Var("y"), Const(), name="r"), ..., name="op"),
            _shape_op_of_reshape,
        ),
        Rule(
            "reshape-pair-around-elementwise",
            Op("Reshape", Var("y"), Const(), name="r"),
            _reshape_pair,
        ),
    ]
)
MERGE_RESHAPES.register(
    "merge-reshapes",
    description="Reshape after Squeeze/Unsqueeze/Flatten, Squeeze/Unsqueeze after a Reshape with a constant "
    "target, and a Transpose that moves only dims of size 1 next to a Reshape, become one Reshape; a Reshape pair "
    "around elementwise ops with one-element constants goes when the second restores the first's input shape",
)


# --------------------------------------------------------------------------------------------------------------------
# merge-concats
# --------------------------------------------------------------------------------------------------------------------
def _flatten_concat(m: Match, b) -> object:
    """Concat(a, Concat(b, c), d) along one axis -> Concat(a, b, c, d): an inner Concat read only by this one (and not a
    graph output) with the same axis attribute (all inputs of a Concat have one rank, so the same value means the
    same axis) is spliced in; it is left unread and dce removes it."""
    root = m.node("cat")
    axis = root.attr("axis")
    graph = m.graph
    inputs, spliced = [], False
    for v in root.inputs:
        p = v.producer if v is not None else None
        if (
            p is not None
            and p.op_type == "Concat"
            and p.domain in ("", "ai.onnx")
            and p.graph is graph
            and axis is not None
            and p.attr("axis") == axis
            and all(u is root for u in v.users())
            and not v.is_graph_output(graph)
        ):
            inputs.extend(p.inputs)
            spliced = True
        else:
            inputs.append(v)
    if not spliced:
        return m.decline("no inner Concat on the same axis read only here")
    return b.copy(root, inputs=inputs)


_ADD_NEUTRAL = {np.dtype(np.float32): -0.0, np.dtype(np.float64): -0.0, np.dtype(np.int32): 0, np.dtype(np.int64): 0}
"""Element types an Add of padded pieces handles, with the element x + z == x for every x (float: -0.0, which keeps
+0.0, -0.0 and infinities; round-to-nearest never rounds an exact sum). Not NaN: the Add quiets a signaling NaN,
which the Concat copies bit for bit, so pieces holding a NaN are left alone."""
EXPAND_CONCAT_GROWTH = 4096
"""Most bytes concat-of-expands may add to the constants (the padded pieces hold the zeros of the others)."""


def _expanded_pieces(m: Match) -> list[tuple[np.ndarray, tuple[int, ...], bool]] | Declined:
    """Each Concat input as (constant, shape it broadcasts to, whether an Expand made it); a decline when an input is
    neither a constant nor an Expand of two constants read only by this Concat."""
    root, graph = m.node("cat"), m.graph
    pieces = []
    for v in root.inputs:
        if v is None:
            return m.decline("empty input")
        t = v.constant()
        if t is not None:
            a = t.numpy()
            pieces.append((a, tuple(a.shape), False))
            continue
        p = v.producer
        if (
            p is None
            or p.op_type != "Expand"
            or p.domain not in ("", "ai.onnx")
            or p.graph is not graph
            or len(p.inputs) != 2
            or v.is_graph_output(graph)
            or any(u is not root for u in v.users())
        ):
            return m.decline("an input is neither a constant nor an Expand read only here")
        c, s = (x.constant() if x is not None else None for x in p.inputs)
        if c is None or s is None:
            return m.decline("an Expand of a computed tensor or shape")
        a, shape = c.numpy(), [int(d) for d in s.numpy().reshape(-1)]
        try:
            pieces.append((a, tuple(np.broadcast_shapes(a.shape, tuple(shape))), True))
        except ValueError:
            return m.decline("an Expand whose shape does not broadcast")
    return pieces


def _concat_of_expands(m: Match, b) -> object:
    """Concat(Expand(c1, s1), Expand(c2, s2), ...) along axis k, of constants (an input may be a constant itself) ->
    Add(p1, p2, ...) (a chain, or one Add for two inputs): p_i is c_i (left-padded with 1s to the output's rank,
    materialised along k if it broadcasts there) placed at its offset along k in a tensor of the concatenated length,
    the neutral element z elsewhere (-0.0 for floats, 0 for integers). At every output position exactly one p_i holds
    the Expand's element (its other dims broadcast as Expand would) and the others hold z, and x + z == x exactly in
    any order, so each element is the Concat's. When some dim stays 1 after the Adds broadcast (every piece broadcasts
    along it), one Expand to the output's shape follows. Taken only when it saves nodes, for float32/float64/int32/
    int64 pieces, and when the padded constants add at most ``EXPAND_CONCAT_GROWTH`` bytes (a detector's anchor grid:
    two Expands of 80 values and a Concat become one Add of two 160-value constants, not a 51 KB grid)."""
    root = m.node("cat")
    pieces = _expanded_pieces(m)
    if isinstance(pieces, Declined):
        return pieces
    expands = len({id(v.producer) for v, (_, _, e) in zip(root.inputs, pieces, strict=True) if e and v is not None})
    if len(pieces) < 2 or not expands:
        return m.decline("not a Concat of Expands")
    dtype = pieces[0][0].dtype
    if dtype not in _ADD_NEUTRAL or any(a.dtype != dtype for a, _, _ in pieces):
        return m.decline("element type")
    if dtype.kind == "f" and any(np.isnan(a).any() for a, _, _ in pieces):
        return m.decline("a NaN (an Add quiets a signaling one: other bits)")
    rank = len(pieces[0][1])
    axis = root.attr("axis")
    if axis is None or rank == 0 or not -rank <= axis < rank or any(len(o) != rank for _, o, _ in pieces):
        return m.decline("axis or ranks")
    k = axis % rank
    out = list(pieces[0][1])
    if any(o[:k] + o[k + 1 :] != tuple(out[:k] + out[k + 1 :]) for _, o, _ in pieces):
        return m.decline("shapes differ off the axis")
    out[k] = sum(o[k] for _, o, _ in pieces)
    padded, off = [], 0
    for a, o, _ in pieces:
        base = a.reshape((1,) * (rank - a.ndim) + a.shape)
        if base.shape[k] != o[k]:
            base = np.broadcast_to(base, base.shape[:k] + (o[k],) + base.shape[k + 1 :])
        p = np.full(base.shape[:k] + (out[k],) + base.shape[k + 1 :], _ADD_NEUTRAL[dtype], dtype=dtype)
        index = (slice(None),) * k + (slice(off, off + o[k]),)
        p[index] = base
        padded.append(p)
        off += o[k]
    summed = np.broadcast_shapes(*(p.shape for p in padded))
    expand = list(summed) != out
    if len(padded) - 1 + expand >= expands + 1:
        return m.decline("no fewer nodes")
    growth = sum(p.nbytes for p in padded) - sum(a.nbytes for a, _, _ in pieces)
    if growth > EXPAND_CONCAT_GROWTH:
        return m.decline("padded constants too large")
    y = b.const(padded[0], "piece")
    for p in padded[1:]:
        y = b.op("Add", y, b.const(p, "piece"))
    if expand:
        y = b.op("Expand", y, b.const(np.array(out, dtype=np.int64), "shape"))
    return y


MERGE_CONCATS = RuleSet(
    [
        Rule("concat-of-concat", Op("Concat", ..., name="cat"), _flatten_concat),
        Rule("concat-of-expands", Op("Concat", ..., name="cat"), _concat_of_expands, opsets=(8, None)),
    ]
)
MERGE_CONCATS.register(
    "merge-concats",
    description="a Concat of Concats along the same axis becomes one Concat; a Concat of Expands of constants an "
    "Add of the pieces padded with zeros",
)


# --------------------------------------------------------------------------------------------------------------------
# fold-conv-input-scale
# --------------------------------------------------------------------------------------------------------------------
def _fold_input_scale(m: Match, b) -> object:
    """Conv(Mul(x, s), W, B) -> Conv(x, W * s, B) for a single-element finite constant s (a GELU's 0.5 before the
    next convolution). Padding is zeros either way (0 * s == 0) and every output is a sum of W * x products, each
    scaled by s once; W * s must stay finite so that no zero padding meets an infinite weight."""
    s = m.const("s")
    w = m.const("w")
    # the Mul must not raise x's rank: a Conv input has rank >= 3, so a scale of rank <= 2 never does
    rank = m.rank("x")
    if s.size != 1 or s.ndim > (rank if rank is not None else 2):
        return m.decline("not a single-element scale of at most the input's rank")
    if s.dtype != w.dtype or not np.issubdtype(w.dtype, np.floating):
        return m.decline("scale and weight not one float type")
    k = s.reshape(())
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = (w * k).astype(w.dtype)
    if not (np.isfinite(k) and np.isfinite(scaled).all()):
        return m.decline("scale or scaled weight not finite")
    return b.copy(m.node("conv"), inputs={0: m["x"], 1: scaled})


FOLD_CONV_INPUT_SCALE = RuleSet(
    [
        Rule(
            "conv-input-scale",
            Op("Conv", Op("Mul", Var("x"), Const("s"), commutative=True), Const("w"), Opt(Const()), name="conv"),
            _fold_input_scale,
            exact=False,  # w * s rounded once, where the Mul rounded each input
        )
    ]
)
FOLD_CONV_INPUT_SCALE.register(
    "fold-conv-input-scale",
    description="Conv(x * s) -> Conv(x) with the weight scaled by s, for a single-element constant s",
    lossless=True,
)


# --------------------------------------------------------------------------------------------------------------------
# mul-reciprocal-to-div
# --------------------------------------------------------------------------------------------------------------------
def _reciprocal_ok(m: Match) -> object:
    if m.dtype("x") not in FLOATS and m.dtype("y") not in FLOATS:
        return m.decline("not a float type (or unknown)")
    one = m.get("one")
    if one is not None:
        c = m.const("one")
        ry = m.rank("y")
        if c.ndim > 0 and (ry is None or c.ndim > ry):
            return m.decline("the 1 may broadcast y up")
    return True


MUL_RECIPROCAL = RuleSet(
    [
        Rule(
            "mul-reciprocal-to-div",
            Op(
                "Mul",
                Var("x"),
                Op("Div", Const("one", where=lambda a: a.size == 1 and float(a.reshape(-1)[0]) == 1.0), Var("y"))
                | Op("Reciprocal", Var("y")),
                commutative=True,
            ),
            lambda m, b: b.op("Div", m["x"], m["y"]),
            condition=_reciprocal_ok,
            exact=False,  # one rounding instead of two
        )
    ]
)
MUL_RECIPROCAL.register(
    "mul-reciprocal-to-div",
    description="x * (1 / y) and x * Reciprocal(y) -> x / y (one rounding instead of two; RMSNorm in T5)",
)


# --------------------------------------------------------------------------------------------------------------------
# push-transposes, continued: a Reduce that drops the Transpose's reordering
# --------------------------------------------------------------------------------------------------------------------
REDUCE = (
    "ReduceMax",
    "ReduceMin",
    "ReduceMean",
    "ReduceSum",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
)


def _reduce_of_transpose(m: Match, b) -> object:
    """Reduce(Transpose(x, perm), axes, keepdims=0) -> Reduce(x, perm[axes], keepdims=0) when the axes kept come out
    in x's order (the Transpose then only reorders the reduced axes, which the reduction does not see)."""
    perm = _perm(m)
    if perm is None:
        return m.decline("Transpose without a valid perm")
    node = m.node("op")
    if node.attr("keepdims", 1) != 0:
        return m.decline("keepdims")
    if node.attr("noop_with_empty_axes", 0):
        return m.decline("noop_with_empty_axes")
    n = len(perm)
    as_input = len(node.inputs) > 1
    if as_input:
        t = node.inputs[1].constant() if node.inputs[1] is not None else None
        if t is None:
            return m.decline("axes not constant")
        axes = [int(a) for a in t.numpy().reshape(-1)]
    else:
        axes = [int(a) for a in (node.attr("axes") or [])]
    if not axes:  # every axis: the result does not depend on the order
        return b.copy(node, inputs={0: m["x"]})
    norm = [a + n if a < 0 else a for a in axes]
    if not all(0 <= a < n for a in norm) or len(set(norm)) != len(norm):
        return m.decline("invalid axes")
    kept = [perm[k] for k in range(n) if k not in norm]
    if kept != sorted(kept):
        return m.decline("the kept axes are reordered")
    new_axes = sorted(perm[a] for a in norm)
    if as_input:
        return b.copy(node, inputs={0: m["x"], 1: np.array(new_axes, dtype=np.int64)})
    return b.copy(node, inputs={0: m["x"]}, attrs={"axes": new_axes})


REDUCE_OF_TRANSPOSE = Rule(
    "reduce-of-transpose",
    Op(REDUCE, Op("Transpose", Var("x"), name="t", attrs=_T), ..., name="op"),
    _reduce_of_transpose,
    exact=lambda m: m.node("op").op_type in ("ReduceMax", "ReduceMin"),  # the others sum in another order
)


# --------------------------------------------------------------------------------------------------------------------
# drop-zero-rnn-states
# --------------------------------------------------------------------------------------------------------------------
_ZERO_KEEPING = frozenset(
    {"Slice", "Reshape", "Expand", "Unsqueeze", "Squeeze", "Transpose", "Identity", "Flatten", "Cast"}
)
"""Ops whose output is all zeros when their data input (input 0) is."""


def _all_zeros(v, depth: int = 0) -> bool:
    """Whether ``v`` is provably all zeros: a constant of zeros, a ConstantOfShape of 0 (its default), one of the
    data-movement ops of ``_ZERO_KEEPING`` over such a value (Expand of a constant 0), or a Concat of such values."""
    if v is None or depth > 16:
        return False
    t = v.constant()
    if t is not None:
        a = t.numpy()
        return a.dtype.kind in "fiub" and not np.any(a)
    p = v.producer
    if p is None or p.domain not in ("", "ai.onnx"):
        return False
    if p.op_type == "ConstantOfShape":
        a = fill_of(p)
        return a.dtype.kind in "fiub" and not np.any(a)
    if p.op_type in _ZERO_KEEPING and p.inputs and p.outputs[0] is v:
        return _all_zeros(p.inputs[0], depth + 1)
    if p.op_type == "Concat":
        return bool(p.inputs) and all(_all_zeros(x, depth + 1) for x in p.inputs)
    return False


def _drop_zero_states(m: Match, b) -> object:
    """LSTM/GRU/RNN initial_h (input 5) and LSTM initial_c (input 6) that are all zeros are the ops' default when the
    input is omitted (the same for com.microsoft's DynamicQuantizeLSTM: LSTM's inputs, then weight scales): drop them
    (the shape chain computing them, e.g. Shape -> Gather -> Unsqueeze -> Concat -> ConstantOfShape -> Slice, is
    then unread and dce removes it)."""
    node = m.node("rnn")
    slots = (5, 6) if node.op_type in ("LSTM", "DynamicQuantizeLSTM") else (5,)
    ins = node.inputs
    drop = {i: None for i in slots if i < len(ins) and ins[i] is not None and _all_zeros(ins[i])}
    if not drop:
        return m.decline("no all-zero initial state")
    out = b.copy(node, inputs=drop)
    return list(out) if isinstance(out, tuple) else out


DROP_ZERO_RNN_STATES = RuleSet(
    [
        Rule(
            "zero-initial-state",
            Op(("LSTM", "GRU", "RNN", "com.microsoft::DynamicQuantizeLSTM"), ..., name="rnn"),
            _drop_zero_states,
        )
    ]
)
DROP_ZERO_RNN_STATES.register(
    "drop-zero-rnn-states",
    description="omit LSTM/GRU/RNN (and DynamicQuantizeLSTM) initial states that are provably all zeros (zeros "
    "are what the op assumes when a state is left out)",
)


def _shape_of_transpose(m: Match, b) -> object:
    """Shape(Transpose(x, perm)) -> Gather(Shape(x), perm) when x's Shape is already taken elsewhere (cse then merges
    the two Shapes: one node fewer; otherwise the trade gains nothing and the rule leaves it)."""
    perm = _perm(m)
    if perm is None:
        return m.decline("Transpose without a valid perm")
    root = m.node("shape")
    if root.attr("start") is not None or root.attr("end") is not None:
        return m.decline("Shape with start/end")
    x = m.value("x")
    others = [
        u
        for u in x.users()
        if u is not root
        and u.op_type == "Shape"
        and u.domain in ("", "ai.onnx")
        and u.graph is root.graph
        and u.attr("start") is None
        and u.attr("end") is None
    ]
    if not others:
        return m.decline("no other Shape of the input to share")
    return b.op("Gather", b.op("Shape", x), np.array(perm, dtype=np.int64), axis=0)


SHAPE_OF_TRANSPOSE = Rule(
    "shape-of-transpose",
    Op("Shape", Op("Transpose", Var("x"), name="t", attrs=_T), name="shape"),
    _shape_of_transpose,
)


def _push_two(m: Match, b) -> object:
    """op(Transpose(a, p), Transpose(b, p)) -> Transpose(op(a, b), p): with one perm (so one rank) broadcasting
    commutes with the permutation, element by element the same values."""
    perm = _perm(m)
    p2 = m.node("t2").attr("perm")
    if perm is None or p2 is None or [int(x) for x in p2] != perm:
        return m.decline("different perms")
    return b.op("Transpose", b.copy(m.node("op"), inputs=[m["x"], m["x2"]]), perm=perm)


def _push_same(m: Match, b) -> object:
    """op(t, t) for t = Transpose(x, p) -> Transpose(op(x, x), p) (a square: x * x)."""
    if m["again"] is not m.node("t").outputs[0]:
        return m.decline("not the same Transpose twice")
    if _perm(m) is None:
        return m.decline("Transpose without a valid perm")
    return b.op("Transpose", b.copy(m.node("op"), inputs=[m["x"], m["x"]]), perm=_perm(m))


def _unsqueeze_of_transpose(m: Match, b) -> object:
    """Unsqueeze(Transpose(x, p), axes) -> Transpose(Unsqueeze(x, axes), q): the new size-1 dims stay where they are
    (q[a] = a) and the j-th other position takes x's dim p[j] from where the Unsqueeze of x put it."""
    perm = _perm(m)
    if perm is None:
        return m.decline("Transpose without a valid perm")
    axes = _axes(m, "op")
    if isinstance(axes, Declined):
        return axes
    if not axes:
        return m.decline("no axes")
    r = len(perm) + len(axes)
    norm = sorted(a + r if a < 0 else a for a in axes)
    if len(set(norm)) != len(norm) or not all(0 <= a < r for a in norm):
        return m.decline("invalid axes")
    others = [q for q in range(r) if q not in norm]
    q = list(range(r))
    for j, pos in enumerate(others):
        q[pos] = others[perm[j]]
    return b.op("Transpose", b.copy(m.node("op"), inputs={0: m["x"]}), perm=q)


TWO_AND_UNSQUEEZE = RuleSet(
    [
        Rule(
            "transpose-through-binary-both",
            Op(
                BINARY,
                Op("Transpose", Var("x"), name="t", attrs=_T),
                Op("Transpose", Var("x2"), name="t2", attrs=_T),
                name="op",
            ),
            _push_two,
        ),
        Rule(
            "transpose-through-binary-same",
            Op(BINARY, Op("Transpose", Var("x"), name="t", attrs=_T), Var("again"), name="op"),
            _push_same,
        ),
        Rule(
            "unsqueeze-of-transpose",
            Op("Unsqueeze", Op("Transpose", Var("x"), name="t", attrs=_T), ..., name="op"),
            _unsqueeze_of_transpose,
        ),
    ]
)


# --------------------------------------------------------------------------------------------------------------------
# transpose-into-constants
# --------------------------------------------------------------------------------------------------------------------
MAX_ABSORB_NODES = 32
"""Most nodes transpose-into-constants walks below one Transpose (a bound on its cost)."""
LAYOUT_DEPENDENT = ("Pow", "Max", "Min")
"""Elementwise ops whose onnxruntime result depends on how the inputs broadcast, not only on the two elements: Pow
special-cases a scalar exponent of 2 or 3 (x * x, an ulp off std::pow), Max/Min of a scalar or span pick the other
signed zero or NaN (Max(0.0, -0.0) gives -0.0 or 0.0). transpose-into-constants changes the broadcast pattern, so
it leaves them alone."""


def _reshape_groups(xs: tuple[int, ...], ys: tuple[int, ...]) -> list[tuple[range, range]] | None:
    """Runs of a Reshape's input dims and output dims with equal products, in order (a 1 of the output alone with no
    input dims; a 1 of the input joins the run it sits in); None for a 1 of the input alone or a 0."""
    if 0 in xs or 0 in ys:
        return None
    groups, i, j = [], 0, 0
    while i < len(xs) or j < len(ys):
        if j < len(ys) and ys[j] == 1 and not (i < len(xs) and xs[i] == 1):
            groups.append((range(i, i), range(j, j + 1)))
            j += 1
            continue
        if i >= len(xs) or j >= len(ys):
            return None
        i0, j0, pi, pj = i, j, xs[i], ys[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                if i >= len(xs):
                    return None
                pi, i = pi * xs[i], i + 1
            else:
                if j >= len(ys):
                    return None
                pj, j = pj * ys[j], j + 1
        groups.append((range(i0, i), range(j0, j)))
    return groups


def _reshape_perm(xs: tuple[int, ...], ys: tuple[int, ...], perm: list[int]) -> list[int] | None:
    """q with Transpose(Reshape(x, ys), perm) == Reshape(Transpose(x, q), [ys[p] for p in perm]), or None: the perm
    must move every run of output dims (see _reshape_groups) as one block in its own order, so the elements of a run
    stay together and in order; q moves the input dims of the runs the same way."""
    groups = _reshape_groups(xs, ys)
    if groups is None:
        return None
    of = {j: g for g, (_, yr) in enumerate(groups) for j in yr}
    q: list[int] = []
    pos = 0
    while pos < len(perm):
        xr, yr = groups[of[perm[pos]]]
        if list(perm[pos : pos + len(yr)]) != list(yr):
            return None
        q.extend(xr)
        pos += len(yr)
    return q if sorted(q) == list(range(len(xs))) else None


def _absorb(v: Value, perm: list[int], reader: Node, seen: list[int]) -> tuple | None:
    """A plan computing Transpose(v, perm) with no Transpose node, or None: v a constant (transposed when the plan is
    built, so a declined plan copies no weight), or the output, read once and by ``reader`` only, of a Concat (each
    input absorbs perm, the axis moves with it), a Reshape of a static shape (see _reshape_perm), or an elementwise op
    of BINARY/UNARY, not LAYOUT_DEPENDENT (each input absorbs perm; a constant of lower rank is first padded with 1s on
    the left, as broadcasting reads it). Returns (plan, shape of v)."""
    t = v.constant()
    if t is not None:
        a = t.numpy()
        return (("const", a, perm), a.shape) if a.ndim == len(perm) else None  # transposed when built, not before
    node = v.producer
    graph = reader.graph
    if (
        node is None
        or node.graph is not graph
        or node.domain not in ("", "ai.onnx")
        or len(node.outputs) != 1
        or v.is_graph_output(graph)
        or any(u is not reader for u in v.users())
        or len(v.uses) != 1  # read twice (Mul(k, k)): the tree would be built twice, more nodes than before
    ):
        return None
    seen[0] += 1
    if seen[0] > MAX_ABSORB_NODES:
        return None
    rank = len(perm)
    if node.op_type == "Concat":
        axis = node.attr("axis")
        if axis is None or not -rank <= axis < rank or not node.inputs:
            return None
        parts = [_absorb(x, perm, node, seen) if x is not None else None for x in node.inputs]
        if any(p is None or len(p[1]) != rank for p in parts):
            return None
        k = axis % rank
        shape = list(parts[0][1])  # type: ignore[index]
        shape[k] = sum(p[1][k] for p in parts)  # type: ignore[index]
        return ("concat", node, [p[0] for p in parts], perm.index(k)), tuple(shape)  # type: ignore[index]
    if node.op_type == "Reshape" and len(node.inputs) == 2:
        target = node.inputs[1].constant() if node.inputs[1] is not None else None
        x = node.inputs[0]
        if target is None or x is None:
            return None
        xs = _static_shape_of(x)
        if xs is None:
            return None
        ys = _reshaped(xs, [int(d) for d in target.numpy().reshape(-1)], node.attr("allowzero", 0))
        if ys is None or len(ys) != rank:
            return None
        q = _reshape_perm(xs, ys, perm)
        inner = _absorb(x, q, node, seen) if q is not None else None
        if inner is None or tuple(inner[1]) != xs:
            return None
        return ("reshape", node, inner[0], [ys[p] for p in perm]), ys
    if node.op_type in BINARY + UNARY and node.op_type not in ("Cast", *LAYOUT_DEPENDENT):
        parts = []
        for x in node.inputs:
            if x is None:
                return None
            c = x.constant()
            if c is not None and len(c.dims) < rank:  # broadcasting pads it on the left
                a = c.numpy()
                a = a.reshape((1,) * (rank - a.ndim) + a.shape)
                parts.append((("const", a, perm), a.shape))
                continue
            part = _absorb(x, perm, node, seen)
            if part is None or len(part[1]) != rank:
                return None
            parts.append(part)
        try:
            shape = tuple(np.broadcast_shapes(*(p[1] for p in parts)))
        except ValueError:
            return None
        return ("elementwise", node, [p[0] for p in parts]), shape
    return None


def _static_shape_of(v: Value, budget: list[int] | None = None) -> tuple[int, ...] | None:
    """v's static shape: a constant's dims, computed through Concat, Reshape and elementwise ops of such values (at
    most ``MAX_ABSORB_NODES`` nodes visited in all), or the shape inference recorded."""
    budget = [MAX_ABSORB_NODES] if budget is None else budget
    t = v.constant()
    if t is not None:
        return tuple(int(d) for d in t.dims)
    node = v.producer
    if node is not None and node.domain in ("", "ai.onnx") and budget[0] > 0:
        budget[0] -= 1
        ins = [_static_shape_of(x, budget) if x is not None else None for x in node.inputs]
        if node.op_type == "Concat" and ins and all(i is not None for i in ins):
            axis, rank = node.attr("axis"), len(ins[0])  # type: ignore[arg-type]
            if axis is not None and -rank <= axis < rank and all(len(i) == rank for i in ins):  # type: ignore[arg-type]
                out = list(ins[0])  # type: ignore[arg-type]
                out[axis % rank] = sum(i[axis % rank] for i in ins)  # type: ignore[index]
                return tuple(out)
        if node.op_type == "Reshape" and len(ins) == 2 and ins[0] is not None and node.inputs[1] is not None:
            target = node.inputs[1].constant()
            if target is not None:
                ys = _reshaped(ins[0], [int(d) for d in target.numpy().reshape(-1)], node.attr("allowzero", 0))
                if ys is not None:
                    return ys
        if node.op_type in BINARY + UNARY and ins and all(i is not None for i in ins):
            try:
                return tuple(np.broadcast_shapes(*ins))  # type: ignore[arg-type]
            except ValueError:
                return None
    shape = v.shape
    if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return tuple(shape)  # type: ignore[arg-type]


def _reshaped(xs: tuple[int, ...], target: list[int], allowzero: int) -> tuple[int, ...] | None:
    """The output shape of Reshape(x of shape xs, target), or None when it is not valid."""
    out = [xs[i] if d == 0 and not allowzero and i < len(xs) else d for i, d in enumerate(target)]
    if any(d < -1 for d in out) or out.count(-1) > 1:
        return None
    total = int(np.prod(xs))
    if -1 in out:
        rest = int(np.prod([d for d in out if d != -1]))
        if rest == 0 or total % rest:
            return None
        out[out.index(-1)] = total // rest
    return tuple(out) if int(np.prod(out)) == total else None


def _build_absorbed(plan: tuple, b) -> Value:
    kind = plan[0]
    if kind == "const":  # transposed only now: a plan that is declined never copies a weight
        return b.const(np.ascontiguousarray(np.transpose(plan[1], plan[2])), "transposed")
    if kind == "concat":
        _, node, parts, axis = plan
        return b.copy(node, inputs=[_build_absorbed(p, b) for p in parts], attrs={"axis": axis})
    if kind == "reshape":
        _, node, inner, shape = plan
        return b.copy(node, inputs=[_build_absorbed(inner, b), np.array(shape, dtype=np.int64)], drop=("allowzero",))
    _, node, parts = plan
    return b.copy(node, inputs=[_build_absorbed(p, b) for p in parts])


def _transpose_into_constants(m: Match, b) -> object:
    """Transpose(f(constants), perm) -> f'(transposed constants), no Transpose: f is a tree of Concat, Reshape and
    elementwise ops, each read only by the next, over constants (what fold-constants leaves when the result is too
    large to store, a detector's anchor grid). A permutation commutes with elementwise ops (each input permuted the
    same way, a constant of lower rank first padded with 1s as broadcasting pads it), a Concat's axis moves with it,
    and a Reshape whose output dims the perm moves in whole runs of equal product (input dims to output dims) is the
    same Reshape of its input permuted run by run. Every leaf is a constant, transposed here (the same bytes); a tree
    with any other leaf is left alone, so the rewrite never adds a node."""
    perm = _perm(m)
    if perm is None:
        return m.decline("Transpose without a valid perm")
    x = m.node("t").inputs[0]
    plan = _absorb(x, perm, m.node("t"), [0]) if x is not None else None
    if plan is None:
        return m.decline("not a tree of Concat/Reshape/elementwise ops over constants")
    if plan[0][0] == "const":
        return m.decline("a Transpose of a constant (fold-constants' job)")
    return _build_absorbed(plan[0], b)


TRANSPOSE_INTO_CONSTANTS = Rule(
    "transpose-into-constants",
    Op("Transpose", Var("x"), name="t", attrs=_T),
    _transpose_into_constants,
)


PUSH_TRANSPOSES = (
    PUSH_TRANSPOSES + REDUCE_OF_TRANSPOSE + SHAPE_OF_TRANSPOSE + TWO_AND_UNSQUEEZE + TRANSPOSE_INTO_CONSTANTS
)
PUSH_TRANSPOSES.register(
    "push-transposes",
    description="move a Transpose below elementwise ops (unary, or binary with a constant, transposed the inverse way) "
    "so that Transpose pairs meet and cancel (merge-consecutive) and per-channel constants reach the Conv before them",
)


# --------------------------------------------------------------------------------------------------------------------
# canonicalize: every family above as one pass (what -O2 runs, after cse and before fuse-parallel-matmul)
# --------------------------------------------------------------------------------------------------------------------
CANONICALIZE = (
    PUSH_TRANSPOSES
    + SUB_TO_ADD
    + MERGE_RESHAPES
    + MERGE_CONCATS
    + FOLD_CONV_INPUT_SCALE
    + DROP_ZERO_RNN_STATES
    + MUL_RECIPROCAL
    + FUSE_GEMM
)
CANONICALIZE.register(
    "canonicalize",
    description="push-transposes, sub-const-to-add, merge-reshapes, merge-concats, fold-conv-input-scale, "
    "drop-zero-rnn-states, mul-reciprocal-to-div and fuse-gemm in one pass",
)
