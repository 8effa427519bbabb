"""Exact numpy evaluation of the small constant subgraphs exporters leave behind (shape and padding arithmetic).

fold-constants evaluates constant subgraphs in one onnxruntime session; creating that session costs milliseconds, more
than the arithmetic itself on the few-element integer tensors that exporters compute pads and shapes with. This
module evaluates a cone directly in numpy when every node is one it computes bit-exactly like onnxruntime: data
movement on any dtype (Identity, Reshape, Transpose, Concat, Slice, Gather, Squeeze, Unsqueeze, ConstantOfShape,
Shape), integer/bool arithmetic and comparisons (Add, Sub, Mul, Neg, Abs, Equal, Less, Greater, Not, And, Or, Where,
Range), float32/float64 Add, Sub, Mul, Div, Neg, Abs and comparisons (IEEE-754 rounds each of them exactly, in numpy
as in onnxruntime), and Cast between integers, bools, float32 and float64 (float to integer only when every value is
finite and its truncation fits the target). Anything else (float16, other float math, an op of opset < 7 with its
``broadcast`` attribute) is not evaluated here and the caller uses onnxruntime as before.

Every node's output size is computed from its inputs' shapes (and, for ConstantOfShape and Range, their values) before
the node runs: a node whose output would exceed ``MAX_ELEMENTS``, or the byte limit the caller gives, is not run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from graphopt.core.ir import STANDARD_DOMAINS, Node, Value
from graphopt.core.tensors import Tensor, np_dtype

SMALL_BYTES = 256
"""Outputs this small are always allowed (fold-constants' own floor): the caller's limit is not asked."""
MAX_ELEMENTS = 1 << 16
"""Arithmetic on bigger tensors goes to onnxruntime."""
DATA_MOVEMENT = frozenset({"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Slice", "Gather"})
"""Ops that only move elements (exact on any dtype): evaluated at any size the caller's limit allows, so that a large
weight is transposed or reshaped in numpy rather than through an onnxruntime session."""

Env = dict[Value, np.ndarray]


def _ints(a: np.ndarray) -> list[int]:
    return [int(x) for x in np.asarray(a).reshape(-1)]


def _in(node: Node, env: Env, i: int) -> np.ndarray | None:
    if i >= len(node.inputs) or node.inputs[i] is None:
        return None
    return env[node.inputs[i]]  # type: ignore[index]


def _reshape(node: Node, env: Env) -> np.ndarray:
    x, shape = env[node.inputs[0]], _ints(_in(node, env, 1))  # type: ignore[index, arg-type]
    if not int(node.attr("allowzero", 0)):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _slice(node: Node, env: Env) -> np.ndarray:
    x = env[node.inputs[0]]  # type: ignore[index]
    starts, ends = _ints(_in(node, env, 1)), _ints(_in(node, env, 2))  # type: ignore[arg-type]
    axes_a, steps_a = _in(node, env, 3), _in(node, env, 4)
    axes = _ints(axes_a) if axes_a is not None else list(range(len(starts)))
    steps = _ints(steps_a) if steps_a is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        if st == 0:
            raise ValueError("Slice step 0")
        if (st < 0 and e >= 1 << 62) or (st > 0 and e <= -(1 << 62)):
            raise ValueError("an end sentinel against the step: onnxruntime's handling differs from the spec")
        d = x.shape[a % x.ndim]
        s, e = (s + d if s < 0 else s), (e + d if e < 0 else e)
        # ONNX clamps differently from Python for negative steps: start into [0, d-1], end into [-1, d-1]
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
            index[a % x.ndim] = slice(s, e, st)
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
            index[a % x.ndim] = slice(s, None if e < 0 else e, st)
    return x[tuple(index)]


def _axes(node: Node, env: Env) -> list[int] | None:
    a = _in(node, env, 1)
    if a is not None:
        return _ints(a)
    attr = node.attr("axes")
    return list(attr) if attr is not None else None


def _unsqueeze(node: Node, env: Env) -> np.ndarray:
    x = env[node.inputs[0]]  # type: ignore[index]
    axes = _axes(node, env) or []
    rank = x.ndim + len(axes)
    out = x
    for a in sorted(a % rank for a in axes):
        out = np.expand_dims(out, a)
    return out


def _squeeze(node: Node, env: Env) -> np.ndarray:
    x = env[node.inputs[0]]  # type: ignore[index]
    axes = _axes(node, env)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))


def fill_of(node: Node) -> np.ndarray:
    """The fill of a ConstantOfShape node, flattened (its ``value``; absent: a float32 0, as the spec says)."""
    value = node.attr("value")
    return value.numpy().reshape(-1) if isinstance(value, Tensor) else np.zeros(1, np.float32)


def _constant_of_shape(node: Node, env: Env) -> np.ndarray:
    shape = _ints(env[node.inputs[0]])  # type: ignore[index]
    fill = fill_of(node)
    return np.full(shape, fill[0], dtype=fill.dtype)


def _shape(node: Node, env: Env) -> np.ndarray:
    dims = list(env[node.inputs[0]].shape)  # type: ignore[index]
    start, end = node.attr("start", 0), node.attr("end")
    return np.array(dims[start:end] if end is not None else dims[start:], dtype=np.int64)


EXACT_FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
"""Float types whose +, -, *, / and conversions numpy computes as onnxruntime's CPU kernels do: one IEEE-754
operation each, rounded to nearest (float16 and bfloat16 go through wider types, differently in each)."""


def _exact(dtype: np.dtype, floats: bool) -> bool:
    return dtype.kind in "iub" or (floats and dtype in EXACT_FLOATS)


def _cast(node: Node, env: Env) -> np.ndarray:
    x = env[node.inputs[0]]  # type: ignore[index]
    to = np.dtype(np_dtype(int(node.attr("to"))))
    if not (_exact(x.dtype, True) and _exact(to, True)):
        raise ValueError("only casts between integers, bools, float32 and float64 are evaluated in numpy")
    if to.kind == "f" and x.dtype == np.uint64:
        raise ValueError("uint64 to float: compilers round it in more than one instruction; onnxruntime decides")
    if x.dtype.kind == "f" and to.kind == "b":
        raise ValueError("float to bool goes to onnxruntime")
    if x.dtype.kind == "f" and to.kind in "iu":
        # C's float-to-integer conversion truncates; out of range (or NaN, inf) it is undefined: leave it to onnxruntime
        if not np.all(np.isfinite(x)):
            raise ValueError("a non-finite float cast to an integer")
        t = np.trunc(x)
        bits = to.itemsize * 8
        low, high = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1)) if to.kind == "i" else (0.0, 2.0**bits)
        if t.size and (t.min() < low or t.max() >= high):
            raise ValueError("a float cast to an integer type it does not fit")
    if x.dtype == np.float64 and to == np.float32:
        finite = x[np.isfinite(x)]
        if finite.size and np.abs(finite).max() > np.finfo(np.float32).max:
            raise ValueError("a float64 beyond float32's range: the conversion is undefined in C")
    return x.astype(to)


def _elementwise(
    fn: Callable[..., np.ndarray], floats: bool = True, ints: bool = True
) -> Callable[[Node, Env], np.ndarray]:
    """An elementwise op with ONNX (numpy) broadcasting: on integers and bools if ``ints``, on float32/float64 if
    ``floats``."""

    def run(node: Node, env: Env) -> np.ndarray:
        if node.attrs:
            raise ValueError("an opset < 7 op with broadcast/axis attributes: onnxruntime handles it")
        args = [env[v] for v in node.inputs if v is not None]
        kinds_ok = all(_exact(a.dtype, floats) and (ints or a.dtype.kind == "f") for a in args)
        if not kinds_ok or len({a.dtype for a in args}) != 1:
            raise ValueError("this arithmetic goes to onnxruntime")
        with np.errstate(all="ignore"):  # inf and NaN as IEEE-754 says (and onnxruntime gives), without warnings
            out = fn(*args)
        return out.astype(args[0].dtype) if out.dtype.kind != "b" else out

    return run


def _where(node: Node, env: Env) -> np.ndarray:
    c, x, y = (env[v] for v in node.inputs)  # type: ignore[index]
    return np.where(c, x, y)


def _range(node: Node, env: Env) -> np.ndarray:
    start, limit, delta = (env[v] for v in node.inputs)  # type: ignore[index]
    if start.dtype.kind != "i":
        raise ValueError("float Range goes to onnxruntime")
    return np.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


OPS: dict[str, Callable[[Node, Env], np.ndarray]] = {
    "Identity": lambda n, env: env[n.inputs[0]],  # type: ignore[index]
    "Reshape": _reshape,
    "Transpose": lambda n, env: np.transpose(env[n.inputs[0]], n.attr("perm")),  # type: ignore[index]
    "Concat": lambda n, env: np.concatenate([env[v] for v in n.inputs if v is not None], axis=int(n.attr("axis"))),
    "Slice": _slice,
    "Gather": lambda n, env: np.take(env[n.inputs[0]], env[n.inputs[1]], axis=int(n.attr("axis", 0))),  # type: ignore[index]
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "ConstantOfShape": _constant_of_shape,
    "Shape": _shape,
    "Cast": _cast,
    "Add": _elementwise(np.add),
    "Sub": _elementwise(np.subtract),
    "Mul": _elementwise(np.multiply),
    "Div": _elementwise(np.divide, ints=False),  # C's integer division truncates, numpy's floors
    "Neg": _elementwise(np.negative),
    "Abs": _elementwise(np.abs),
    "Equal": _elementwise(np.equal),
    "Less": _elementwise(np.less),
    "Greater": _elementwise(np.greater),
    "Not": _elementwise(np.logical_not, floats=False),
    "And": _elementwise(np.logical_and, floats=False),
    "Or": _elementwise(np.logical_or, floats=False),
    "Where": _where,
    "Range": _range,
}


def _elements(node: Node, env: Env) -> int | None:
    """How many elements ``node``'s output will have, from its inputs alone (None: cannot tell, do not run it)."""
    op = node.op_type
    ins = [env[v] for v in node.inputs if v is not None]
    if not ins:
        return None
    x = ins[0]
    if op in ("Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Cast", "Neg", "Abs", "Not", "Slice"):
        return x.size  # same elements (a Slice takes at most all of them)
    if op == "Concat":
        return sum(a.size for a in ins)
    if op == "Gather":
        if len(ins) < 2 or x.ndim == 0:
            return None
        axis = int(node.attr("axis", 0)) % x.ndim
        return (x.size // x.shape[axis] if x.shape[axis] else 0) * ins[1].size
    if op == "ConstantOfShape":
        dims = _ints(x)
        return math.prod(dims) if all(d >= 0 for d in dims) else None
    if op == "Shape":
        return x.ndim
    if op == "Range":
        if len(ins) != 3 or any(a.size != 1 for a in ins) or x.dtype.kind != "i":
            return None
        start, limit, delta = (int(a.reshape(-1)[0]) for a in ins)
        return max(-((start - limit) // delta), 0) if delta else None
    try:
        return math.prod(np.broadcast_shapes(*(a.shape for a in ins)))  # elementwise ops, Where
    except ValueError:
        return None


def _itemsize(node: Node, env: Env) -> int:
    """Bytes per element of ``node``'s output: its data input's for data movement, 8 (the most) otherwise."""
    if node.op_type in DATA_MOVEMENT and node.inputs and node.inputs[0] is not None:
        return env[node.inputs[0]].dtype.itemsize
    return 8


def evaluate_partial(cone: list[Node], leaves: Env, limit: Callable[[Node], int] | None = None) -> Env:
    """The outputs of the nodes of ``cone`` this module evaluates exactly, in order; other nodes (and those that read
    them) are skipped. A node runs only when its output has at most ``limit(node)`` bytes and (but for data movement,
    given a limit) at most ``MAX_ELEMENTS`` elements, both known before it runs.

    ``leaves`` holds the values of the cone's non-constant inputs (folded shapes); constants are read from the IR.
    """
    env: Env = dict(leaves)
    produced: Env = {}
    for node in cone:
        if node.op_type not in OPS or node.domain not in STANDARD_DOMAINS or len(node.outputs) != 1:
            continue
        if node.op_type == "Slice" and len(node.inputs) < 3:
            continue  # opset < 10 Slice (attributes): onnxruntime handles it
        most = None if node.op_type in DATA_MOVEMENT and limit is not None else MAX_ELEMENTS
        ready = True
        for v in node.inputs:
            if v is not None and v not in env:
                t = v.constant()
                if t is None or (most is not None and t.size > most):
                    ready = False
                    break
                env[v] = t.numpy()
        if not ready:
            continue
        elements = _elements(node, env)
        if elements is None or (most is not None and elements > most):
            continue
        size = elements * _itemsize(node, env)
        if limit is not None and size > SMALL_BYTES and size > limit(node):
            continue
        try:
            out = np.asarray(OPS[node.op_type](node, env))
        except (ValueError, IndexError, TypeError, KeyError, OverflowError, MemoryError):
            continue
        if most is not None and out.size > most:
            continue
        env[node.outputs[0]] = produced[node.outputs[0]] = out  # type: ignore[index]
    return produced


def evaluate(cone: list[Node], leaves: Env, limit: Callable[[Node], int] | None = None) -> Env | None:
    """The cone's outputs computed in numpy, or None if any node is not one this module evaluates exactly."""
    produced = evaluate_partial(cone, leaves, limit)
    return produced if len(produced) == len(cone) else None
