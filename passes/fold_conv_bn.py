"""fold-conv-bn: fold inference BatchNormalization and per-channel affine constants into the linear op before them.

In inference a BatchNormalization is a per-channel affine map ``y = a * x + b`` with
``a = gamma / sqrt(var + eps)`` and ``b = beta - a * mean``. After a linear op with weight W and bias c on the same
channel axis it folds exactly: ``W' = W * a`` (scaling each output channel's slice of W) and ``c' = a * c + b``.
The same holds for a constant per-channel ``Mul`` (a) or ``Add`` (b) after a Conv.

Handled producers and where their output channels sit in the weight:

* Conv (1D/2D/3D, any group, depthwise too): W is ``[C_out, C_in/g, k...]``, channel axis 0;
* ConvTranspose: W is ``[C_in, C_out/g, k...]``; output channel ``j*C_out/g + o`` is ``W[group j's rows, o]``;
* Gemm (2D output, channel axis 1): the weight's output axis is 1, or 0 with ``transB``; alpha and beta are folded
  into the new weight and bias;
* MatMul with a constant 2D weight ``[K, N]`` and a 2D output (BatchNormalization's channel axis 1 is then N).

All arithmetic is done offline in float64 and cast back to the weight's dtype; nothing is left in the graph but new
weight and bias initializers (fresh names: a weight shared with another node is never changed in place). A fold
happens only when every tensor is a constant, the intermediate value has no other reader and is not a graph output,
and the shapes prove the per-channel broadcast; otherwise the graph is left alone.
"""

from __future__ import annotations

import numpy as np
import onnx

from graphopt.core.ir import Graph, Node, Value
from graphopt.core.tensors import Tensor
from graphopt.engine.passes_api import PassContext, register_pass
from graphopt.patterns import Builder, Const, Decline, Match, Op, Opt, Rule, RuleSet, Var

FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)


def _const(v: Value | None) -> np.ndarray | None:
    if v is None:
        return None
    t = v.constant()
    if t is None or t.dtype not in FLOATS:
        return None
    return t.numpy()


# --------------------------------------------------------------------------------------------------------------------
# per-channel affine maps
# --------------------------------------------------------------------------------------------------------------------
def _bn_affine(bn: Node, opset: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) of an inference BatchNormalization, or None when it is not one we can fold."""
    if len(bn.inputs) != 5 or any(o is not None and o.uses for o in bn.outputs[1:]):
        return None
    if opset < 9 and bn.attr("spatial", 1) != 1:
        return None
    if bn.attr("training_mode", 0) != 0 or bn.attr("is_test", 1) != 1:
        return None
    params = [_const(v) for v in bn.inputs[1:]]
    if any(p is None or p.ndim != 1 for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64) for p in params)  # type: ignore[union-attr]
    if not (gamma.shape == beta.shape == mean.shape == var.shape):
        return None
    eps = float(bn.attr("epsilon", 1e-5))
    a = gamma / np.sqrt(var + eps)
    return a, beta - a * mean


def _channel_vector(c: np.ndarray, channels: int, rank: int, axis: int) -> np.ndarray | None:
    """A constant that broadcasts onto ``axis`` of a rank-``rank`` tensor as one value per channel, flattened.

    Returns None when it would broadcast along any other axis or change the output's rank.
    """
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    for i, d in enumerate(shape):
        if i != axis and d != 1:
            return None
    n = shape[axis]
    if n not in (1, channels):
        return None
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (channels,)).copy()


# --------------------------------------------------------------------------------------------------------------------
# linear producers
# --------------------------------------------------------------------------------------------------------------------
class _Linear:
    """A producer whose output channels scale and shift by editing its weight and bias."""

    def __init__(self, node: Node, weight: np.ndarray, bias: np.ndarray | None, channels: int, axis: int) -> None:
        self.node, self.weight, self.bias, self.channels, self.out_axis = node, weight, bias, channels, axis

    def scaled_weight(self, a: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """W scaled per output channel: each product is taken in float64 and rounded once to ``dtype``.

        One ufunc call computes in float64 through numpy's small internal buffers and casts as it writes, so a big
        weight is never widened whole and is read only once.
        """
        w = self.weight
        node = self.node
        if node.op_type == "ConvTranspose":
            group = int(node.attr("group", 1))
            cin, per_group = w.shape[0], w.shape[1]
            w = w.reshape(group, cin // group, per_group, *w.shape[2:])
            scale = a.reshape(group, 1, per_group, *([1] * (w.ndim - 3)))
        else:
            shape = [1] * w.ndim
            shape[self.out_axis] = self.channels
            scale = a.reshape(shape)
        out = np.empty(w.shape, dtype)
        np.multiply(w, scale, out=out, dtype=np.float64, casting="unsafe")
        return out.reshape(self.weight.shape)

    def shifted_bias(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        c = np.zeros(self.channels) if self.bias is None else self.bias.astype(np.float64)
        return a * c + b


def _linear(node: Node, opset: int) -> tuple[_Linear, int] | None:
    """The producer as a _Linear, and the channel axis of its output, or None when it is not foldable."""
    op = node.op_type
    ins = node.inputs
    if op in ("Conv", "ConvTranspose"):
        w = _const(ins[1] if len(ins) > 1 else None)
        if w is None or w.ndim < 3:
            return None
        bias = _const(ins[2]) if len(ins) > 2 and ins[2] is not None else None
        if len(ins) > 2 and ins[2] is not None and bias is None:
            return None
        if op == "Conv":
            channels = w.shape[0]
        else:
            group = int(node.attr("group", 1))
            if w.shape[0] % group:
                return None
            channels = w.shape[1] * group
        if bias is not None and bias.shape != (channels,):
            return None
        return _Linear(node, w, bias, channels, 0), 1
    if op == "Gemm":
        w = _const(ins[1] if len(ins) > 1 else None)
        if w is None or w.ndim != 2 or node.attr("transA", 0):
            return None
        trans_b = int(node.attr("transB", 0))
        alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
        channels = w.shape[0] if trans_b else w.shape[1]
        bias = None
        if len(ins) > 2 and ins[2] is not None:
            c = _const(ins[2])
            if c is None:
                return None
            vec = _channel_vector(c, channels, 2, 1)
            if vec is None:
                return None
            bias = vec * beta
        # alpha goes into the weight and beta into the bias: y = (alpha W) x + beta C
        lin = _Linear(node, (w.astype(np.float64) * alpha).astype(w.dtype), bias, channels, 0 if trans_b else 1)
        return lin, 1
    if op == "MatMul":
        w = _const(ins[1] if len(ins) > 1 else None)
        x = ins[0]
        if w is None or w.ndim != 2 or x is None or x.shape is None or len(x.shape) != 2:
            return None
        return _Linear(node, w, None, w.shape[1], 1), 1
    return None


def _weight_const(w_val: Value, array: np.ndarray, b: Builder, name: str) -> Value:
    """A new initializer holding ``array`` in the ONNX type of the weight ``w_val``."""
    dtype = w_val.constant().dtype  # type: ignore[union-attr]
    return b.const(Tensor.from_numpy(array, dtype, copy=False), name)


# --------------------------------------------------------------------------------------------------------------------
# the rules
# --------------------------------------------------------------------------------------------------------------------
def _linear_of(m: Match, node: Node) -> tuple[_Linear, int]:
    found = _linear(node, m.opset() or 1)
    if found is None:
        raise Decline("weight or bias not a foldable constant")
    return found


def _fold_into_producer(m: Match, b: Builder, lin: _Linear, a: np.ndarray, bb: np.ndarray | None) -> list[Value | None]:
    """The producer, copied with W * a and bias a * c + b, replaces the follower's output."""
    node = lin.node
    w_val = node.inputs[1]
    assert w_val is not None
    new_w = _weight_const(w_val, lin.scaled_weight(a, lin.weight.dtype), b, "weight_folded")
    bias = lin.shifted_bias(a, bb if bb is not None else np.zeros(lin.channels)).astype(lin.weight.dtype)
    new_b = _weight_const(w_val, bias, b, "bias_folded")
    attrs = {"alpha": 1.0, "beta": 1.0} if node.op_type == "Gemm" else None
    # MatMul has no bias: it becomes Gemm, which has one (2D input, weight [K, N])
    op_type = "Gemm" if node.op_type == "MatMul" else None
    out = b.copy(node, inputs={1: new_w, 2: new_b}, attrs=attrs, op_type=op_type)
    return [out, *[None] * (len(m.root.outputs) - 1)]


def _bn_after(m: Match, b: Builder) -> list[Value | None]:
    lin, _ = _linear_of(m, m.node("lin"))
    affine = _bn_affine(m.node("bn"), m.opset() or 1)
    if affine is None:
        raise Decline("not an inference BatchNormalization with constant parameters")
    if affine[0].shape != (lin.channels,):
        raise Decline("channel count differs")
    return _fold_into_producer(m, b, lin, *affine)


def _affine_after(m: Match, b: Builder) -> list[Value | None]:
    lin, axis = _linear_of(m, m.node("lin"))
    c = _const(m.value("c"))
    if c is None or c.dtype != lin.weight.dtype:
        raise Decline("constant not of the weight's float type")
    vec = _channel_vector(c, lin.channels, lin.weight.ndim, axis)  # a convolution's output has its weight's rank
    if vec is None:
        raise Decline("not per output channel")
    a, bb = (vec, None) if m.root.op_type == "Mul" else (np.ones(lin.channels), vec)
    return _fold_into_producer(m, b, lin, a, bb)


def _bn_before(m: Match, b: Builder) -> Value:
    """BN -> Conv without padding: Conv(a*x + b) = Conv_{W*a}(x) + Conv_W(b); Conv_W(b) is a per-channel constant."""
    conv, bn = m.node("conv"), m.node("bn")
    pads = conv.attr("pads")
    if conv.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or (pads is not None and any(pads)):
        raise Decline("conv pads (padding zeros are not BN's output)")
    affine = _bn_affine(bn, m.opset() or 1)
    if affine is None:
        raise Decline("not an inference BatchNormalization with constant parameters")
    lin, _ = _linear_of(m, conv)
    a, shift_in = affine
    w = lin.weight.astype(np.float64)
    group = int(conv.attr("group", 1))
    cin_g = w.shape[1]
    if a.shape != (cin_g * group,):
        raise Decline("channel count differs")
    in_scale = a.reshape(group, 1, cin_g).repeat(w.shape[0] // group, axis=1).reshape(w.shape[0], cin_g)
    in_shift = shift_in.reshape(group, 1, cin_g).repeat(w.shape[0] // group, axis=1).reshape(w.shape[0], cin_g)
    new_w = w * in_scale.reshape(*in_scale.shape, *([1] * (w.ndim - 2)))
    shift = (w.sum(axis=tuple(range(2, w.ndim))) * in_shift).sum(axis=1)
    c = np.zeros(w.shape[0]) if lin.bias is None else lin.bias.astype(np.float64)
    w_val = conv.inputs[1]
    assert w_val is not None
    return b.copy(
        conv,
        inputs={
            0: m.value("x"),
            1: _weight_const(w_val, new_w.astype(lin.weight.dtype), b, "weight_folded"),
            2: _weight_const(w_val, (c + shift).astype(lin.weight.dtype), b, "bias_folded"),
        },
    )


_CONVS = ("Conv", "ConvTranspose")
_W = Const("w", where=lambda a: a.dtype.kind == "f")
_BN_PARAMS = (Var(), Var(), Var(), Var())
RULES = RuleSet(
    [
        Rule(
            "conv-bn",
            Op("BatchNormalization", Op(_CONVS, Var(), _W, Opt(), name="lin"), *_BN_PARAMS, name="bn"),
            _bn_after,
        ),
        Rule(
            "gemm-bn",
            Op("BatchNormalization", Op(("Gemm", "MatMul"), Var(), _W, Opt(), name="lin"), *_BN_PARAMS, name="bn"),
            _bn_after,
        ),
        Rule(
            "conv-affine",  # a constant per-channel Mul or Add after a convolution
            Op(("Mul", "Add"), Op(_CONVS, Var(), _W, Opt(), name="lin"), Const("c"), commutative=True),
            _affine_after,
        ),
        Rule(
            "bn-conv",
            Op("Conv", Op("BatchNormalization", Var("x"), *_BN_PARAMS, name="bn"), _W, Opt(), name="conv"),
            _bn_before,
        ),
    ]
)
"""fold-conv-bn's rules; the rewriter drops the old weights and BN parameters that nothing reads any more."""


@register_pass(
    "fold-conv-bn", description="fold BatchNormalization and per-channel Mul/Add into Conv, ConvTranspose, Gemm, MatMul"
)
def fold_conv_bn(graph: Graph, ctx: PassContext) -> bool:
    # one sweep per run: -O2 repeats its pipeline until nothing changes, so a sweep that only confirms is spared
    return RULES.rewrite(graph, ctx, sweeps=1)
