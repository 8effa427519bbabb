"""fold-conv-bn: fold inference BatchNormalization and per-channel affine constants into the linear op before them.

In inference a BatchNormalization is a per-channel affine map ``y = a * x + b`` with
``a = gamma / sqrt(var + eps)`` and ``b = beta - a * mean``. After a linear op with weight W and bias c on the same
channel axis it folds exactly: ``W' = W * a`` (scaling each output channel's slice of W) and ``c' = a * c + b``.
The same holds for a constant per-channel ``Mul`` (a) or ``Add`` (b) after a Conv.

Before a Conv, ``Conv(a * x + b)`` with ``a``, ``b`` per input channel is ``Conv_{W'}(x)`` with ``W' = W * a`` along
the input channels and ``c' = c + sum over the window and input channels of W * b``: exact for the scale with any
padding (a scaled zero is zero), for the shift only without padding (the padded zeros are not shifted, so a padded
Conv is left alone). BatchNormalization and constant scalar or per-channel ``Mul``/``Add`` fold that way
(PaddlePaddle's learnable affine blocks ``a * x + b`` after an activation, before a pointwise Conv).

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

from graphopt.core.ir import Graph, Model, Node, Value
from graphopt.core.shape_inference import infer_shapes
from graphopt.core.tensors import Tensor
from graphopt.engine.passes_api import Pass, PassContext, register_pass
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


def _zero_pads(conv: Node) -> bool:
    pads = conv.attr("pads")
    return conv.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID") and not (pads is not None and any(pads))


def _fold_before(
    m: Match, b: Builder, conv: Node, x: Value, lin: _Linear, scale: np.ndarray | None, shift: np.ndarray | None
) -> Value:
    """``Conv(scale * x + shift)`` (``scale``, ``shift``: one value per input channel) as one Conv of ``x``:
    ``W' = W * scale`` along the input channels, ``bias' = bias + sum over input channels and window of W * shift``.

    The shift part is exact only when every window lies inside the input (no padding: the padded zeros are not
    shifted); the scale part is exact with any padding (a scaled zero is zero)."""
    w = lin.weight.astype(np.float64)
    group = int(conv.attr("group", 1))
    cin_g = w.shape[1]

    def per_output(v: np.ndarray) -> np.ndarray:  # [C_in] -> [C_out, C_in/group]: each output's group of inputs
        return v.reshape(group, 1, cin_g).repeat(w.shape[0] // group, axis=1).reshape(w.shape[0], cin_g)

    c = np.zeros(w.shape[0]) if lin.bias is None else lin.bias.astype(np.float64)
    if shift is not None:
        c = c + (w.sum(axis=tuple(range(2, w.ndim))) * per_output(shift)).sum(axis=1)
    if scale is not None:
        w = w * per_output(scale).reshape(w.shape[0], cin_g, *([1] * (w.ndim - 2)))
    with np.errstate(over="ignore", invalid="ignore"):
        new_w, new_c = w.astype(lin.weight.dtype), c.astype(lin.weight.dtype)
    if not (np.isfinite(new_w).all() and np.isfinite(new_c).all()):
        raise Decline("folded weight or bias not finite")  # an infinite weight would meet the padding's zeros
    w_val = conv.inputs[1]
    assert w_val is not None
    return b.copy(
        conv,
        inputs={
            0: x,
            1: _weight_const(w_val, new_w, b, "weight_folded"),
            2: _weight_const(w_val, new_c, b, "bias_folded"),
        },
    )


def _bn_before(m: Match, b: Builder) -> Value:
    """BN -> Conv without padding: Conv(a*x + b) = Conv_{W*a}(x) + Conv_W(b); Conv_W(b) is a per-channel constant."""
    conv, bn = m.node("conv"), m.node("bn")
    if not _zero_pads(conv):
        raise Decline("conv pads (padding zeros are not BN's output)")
    affine = _bn_affine(bn, m.opset() or 1)
    if affine is None:
        raise Decline("not an inference BatchNormalization with constant parameters")
    lin, _ = _linear_of(m, conv)
    if affine[0].shape != (lin.weight.shape[1] * int(conv.attr("group", 1)),):
        raise Decline("channel count differs")
    return _fold_before(m, b, conv, m.value("x"), lin, *affine)


def _affine_before(m: Match, b: Builder) -> Value:
    """A constant Mul (any padding) or Add (no padding) per input channel, or scalar, before a Conv: into its weight
    and bias (see :func:`_fold_before`). PaddlePaddle's learnable affine blocks after an activation are these."""
    conv, op = m.node("conv"), m.node("affine")
    lin, _ = _linear_of(m, conv)
    c = _const(m.value("c"))
    if c is None or c.dtype != lin.weight.dtype:
        raise Decline("constant not of the weight's float type")
    if not np.all(np.isfinite(c)):
        raise Decline("constant not finite")
    rank = lin.weight.ndim
    cin = lin.weight.shape[1] * int(conv.attr("group", 1))
    vec = _channel_vector(c, cin, rank, 1)
    if vec is None:
        raise Decline("not per input channel")
    x = m.value("x")
    if not (c.size == 1 and c.ndim < rank):
        # the constant could broadcast x to more channels or a higher rank: x's inferred shape must rule that out
        shape = x.shape
        if shape is None or len(shape) != rank or (c.size > 1 and shape[1] != cin):
            raise Decline("input shape unknown (the constant might broadcast it)")
    if op.op_type == "Mul":
        return _fold_before(m, b, conv, x, lin, vec, None)
    if not _zero_pads(conv):
        raise Decline("conv pads (padding zeros are not shifted)")
    return _fold_before(m, b, conv, x, lin, None, vec)


_CONVS = ("Conv", "ConvTranspose")
_W = Const("w", where=lambda a: a.dtype.kind == "f")
_BN_PARAMS = (Var(), Var(), Var(), Var())
RULES = RuleSet(
    [
        Rule(
            "conv-bn",
            Op("BatchNormalization", Op(_CONVS, Var(), _W, Opt(), name="lin"), *_BN_PARAMS, name="bn"),
            _bn_after,
            exact=False,  # the weights rescaled: each product rounds differently
        ),
        Rule(
            "gemm-bn",
            Op("BatchNormalization", Op(("Gemm", "MatMul"), Var(), _W, Opt(), name="lin"), *_BN_PARAMS, name="bn"),
            _bn_after,
            exact=False,  # the weights rescaled: each product rounds differently
        ),
        Rule(
            "conv-affine",  # a constant per-channel Mul or Add after a convolution
            Op(("Mul", "Add"), Op(_CONVS, Var(), _W, Opt(), name="lin"), Const("c"), commutative=True),
            _affine_after,
            exact=False,  # the weights rescaled: each product rounds differently
        ),
        Rule(
            "bn-conv",
            Op("Conv", Op("BatchNormalization", Var("x"), *_BN_PARAMS, name="bn"), _W, Opt(), name="conv"),
            _bn_before,
            exact=False,  # the weights rescaled: each product rounds differently
        ),
        Rule(
            "affine-conv",  # a constant scalar or per-channel Mul or Add before a Conv
            Op(
                "Conv",
                Op(("Mul", "Add"), Var("x"), Const("c"), commutative=True, name="affine"),
                _W,
                Opt(),
                name="conv",
            ),
            _affine_before,
            exact=False,  # the weights rescaled: each product rounds differently
        ),
    ]
)
"""fold-conv-bn's rules; the rewriter drops the old weights and BN parameters that nothing reads any more."""


def _needs_shapes(node: Node) -> bool:
    """Whether affine-conv would need an inferred shape nothing recorded: a Conv reading a Mul/Add of a constant
    that might broadcast the other input, a value of unknown shape."""
    p = node.inputs[0].producer if node.op_type == "Conv" and node.inputs and node.inputs[0] is not None else None
    if p is None or p.op_type not in ("Mul", "Add") or len(p.inputs) != 2:
        return False
    consts = [v.constant() for v in p.inputs if v is not None]
    # a single value of rank below 3 cannot broadcast a Conv's input (rank 3 or more): no shape needed then
    return any(t is not None and (int(np.prod(t.dims)) > 1 or len(t.dims) >= 3) for t in consts) and any(
        v is not None and v.constant() is None and v.shape is None for v in p.inputs
    )


@register_pass(
    "fold-conv-bn",
    description="fold BatchNormalization and per-channel Mul/Add into the Conv, ConvTranspose, Gemm, MatMul before "
    "(or the unpadded Conv after)",
)
class FoldConvBn(Pass):
    def prepare(self, model: Model, ctx: PassContext) -> None:
        # a per-channel Mul/Add before a Conv folds only when x's shape shows it does not broadcast x: inference once
        # per run, and only when such a pair lacks the shape
        if any(_needs_shapes(n) for n in model.graph.all_nodes()):
            infer_shapes(model)

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        # one sweep per run: -O2 repeats its pipeline until nothing changes, so a sweep that only confirms is spared
        return RULES.rewrite(graph, ctx, sweeps=1)
