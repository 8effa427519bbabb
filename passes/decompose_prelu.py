"""decompose-prelu: target ort: write PRelu as ``Add(Relu(x), Mul(Min(x, 0), slope))``, or LeakyRelu for one slope.

onnxruntime 1.32's CPU PRelu kernel is several times slower than the elementwise ops that compute the same thing (one
thread, float32: [1,10,94,126] with slope [1,10,1,1] 511 us against 68-75 us; [1,64,56,56] 926 against 110 us;
[64,512] with slope [512] 34 against 26 us; ``benchmarks/prelu.py`` measures it). The decomposition is exact:

* x >= 0: ``Relu(x) = x``, ``Min(x, 0) = 0`` (or -0), so the result is ``x + slope * 0 = x`` (slope finite);
* x < 0: ``Relu(x) = 0``, so the result is ``0 + slope * x``, PRelu's ``x * slope``;
* +inf gives +inf, -inf gives slope * -inf, NaN gives NaN, as PRelu. Only the sign of a zero may differ
  (``x - Relu(x)`` is not used: it is NaN at +inf).

A slope that is not finite (0 * inf is NaN) leaves the node alone. A slope whose elements are all equal is
``LeakyRelu(alpha=slope)`` (the same float32 value: PRelu is ``x * slope`` below zero, LeakyRelu ``alpha * x``), one
kernel onnxruntime also fuses into a preceding Conv.

Only float32 x and slope (onnxruntime's CPU PRelu is float only; float16 and others are left alone), a constant slope
(an initializer or Constant) that is unidirectionally broadcastable to x as PRelu defines it -- rank at most x's,
each of its dims 1 or equal to x's known dim -- so that ``Mul(Min(x, 0), slope)`` has x's shape; x's shape must be
known to the rank. Opset 8 or later (Min broadcasts from opset 8). Function bodies (no initializers) are left alone.

It runs for target ``ort`` only (TensorRT has a native PRelu) as part of the emission step
(:func:`graphopt.api.run_request` runs it with ``ort-avoid-fusions`` after the pipeline and the quantizer): the
quantizer sees PRelu. A PRelu with one slope per channel between two quantized tensors it writes on integers itself
(``graphopt.quantize.transform._integer_prelus``: ``Max(Q(x), Q(slope * x))``, the product a depthwise 1x1
QLinearConv; several times faster than this pass's form between DequantizeLinear and QuantizeLinear, whose Mul by a
channel vector onnxruntime runs slowly in its NHWC layout); the PRelus it leaves float -- an image stem's (the Conv
before it kept float), one read by a float op, one whose slopes are some above 1 and some below, one whose slope
is no channel's (a dense layer's rank-2 output, mtcnn-rnet/onet's; an elementwise or last-axis slope), any at
opset 12 -- this pass rewrites (where it applies: 2048 elements per sample and more). Decomposing before
quantization instead (the quantizer then sees Relu/Min/Mul/Add) measured the same on the MTCNN models at one
thread before the integer form existed (int8 ms, every PRelu decomposed before / after quantizing: pnet 1.012/1.019,
rnet 0.076/0.073, onet 0.295/0.299) and quantized rnet's dense layer differently, so the quantizer's view is kept.
A PRelu whose x has no inferred
shape (after a com.microsoft DynamicQuantizeMatMul, say) stays. The context option ``keep_prelu`` turns the pass off
(before/after comparisons). The four-node form is written only where the run asks for speed: ``-O3``, and runs that
quantize or change precision; ``-O2`` writes LeakyRelu where it can and keeps the other PRelus (``prelu_same_size``,
:data:`KEPT_SAME_SIZE`).
"""

from __future__ import annotations

import numpy as np
import onnx

from graphopt.core.ir import Graph, Model, Node, Value
from graphopt.core.shape_inference import infer_shapes
from graphopt.core.tensors import Tensor
from graphopt.engine.passes_api import ModelPass, PassContext, register_pass

DECOMPOSED = "prelu-decomposed"
"""The counter of PRelus written as Relu/Min/Mul/Add (the pass table's result column)."""
AS_LEAKY = "prelu-as-leakyrelu"
"""The counter of PRelus with one slope written as LeakyRelu."""
KEPT_SAME_SIZE = "prelu-kept-at-O2"
"""The counter of PRelus left alone because the run did not ask for speed (context option ``prelu_same_size``, set
by the emission step below -O3 without a quantize/precision driver): four nodes for one would make the -O2 graph
larger than its input (mtcnn-pnet 13 -> 22 nodes, 28.8 -> 29.5 KB), and -O2, the cleanup level, should not leave a
graph larger than it found it. The LeakyRelu form (one node for one) is taken at every level. A caller's
``prelu_same_size=True`` also keeps them at -O3; below -O3 the step sets it whatever the caller said."""
KEPT_SMALL = "prelu-kept-small"
"""The counter of PRelus left alone because they are smaller than :data:`SMALL`."""

SMALL = 2048
"""A PRelu on fewer elements per sample than this (x's shape, a symbolic leading batch dim counted as 1) is left
alone: there the four kernels' fixed cost outweighs PRelu's slow loop (1 thread: [1,128,3,3] 7.4 us PRelu, 8.5 us
decomposed; [1,128] 5.2 vs 6.4 us; [1,48,9,9] 9.0 vs 9.1 us; [1,28,22,22] 16.9 vs 13.2 us). Any other symbolic dim
(an image's height or width) counts as large. LeakyRelu, one kernel, is taken at any size (never measured slower)."""


@register_pass(
    "decompose-prelu",
    description="target ort: write PRelu as Add(Relu(x), Mul(Min(x, 0), slope)) (LeakyRelu for one slope), "
    "exact and several times faster than onnxruntime's CPU PRelu kernel (run last by optimize for target ort)",
    context_options=("keep_prelu", "prelu_same_size"),
)
class DecomposePRelu(ModelPass):
    """A model pass: shapes are inferred once for the whole model."""

    def run_model(self, model: Model, ctx: PassContext) -> bool:
        if ctx.target != "ort" or ctx.options.get("keep_prelu") or (ctx.opset("") or 1) < 8:
            return False
        if not any(n.op_type == "PRelu" and n.domain in ("", "ai.onnx") for g in model.graphs() for n in g):
            return False
        infer_shapes(model)
        in_functions = {id(g) for f in model.functions.values() for g in (f.graph, *f.graph.subgraphs())}
        changed = False
        for g in model.graphs():
            if id(g) in in_functions:
                continue
            for node in list(g):
                slope = prelu_slope(node)
                if slope is None:
                    continue
                if slope.size > 0 and bool(np.all(slope == slope.reshape(-1)[0])):
                    _as_leaky_relu(node, float(slope.reshape(-1)[0]))
                    ctx.count(AS_LEAKY)
                elif ctx.options.get("prelu_same_size"):
                    ctx.count(KEPT_SAME_SIZE)  # four nodes for one: only where the run asked for speed (-O3, int8)
                    continue
                elif _per_sample(node.inputs[0].shape) < SMALL:  # type: ignore[union-attr]
                    ctx.count(KEPT_SMALL)
                    continue
                else:
                    _decompose(node, g)
                    ctx.count(DECOMPOSED)
                changed = True
        return changed


def prelu_slope(node: Node) -> np.ndarray | None:
    """The slope of a PRelu this pass may rewrite (float32, constant, finite, unidirectionally broadcastable to x's
    known shape, output not feeding anything of another shape), else None."""
    if node.op_type != "PRelu" or node.domain not in ("", "ai.onnx"):
        return None
    if len(node.inputs) != 2 or len(node.outputs) != 1 or node.outputs[0] is None:
        return None
    x, s = node.inputs
    if x is None or s is None or x.dtype != onnx.TensorProto.FLOAT:
        return None
    c = s.constant()
    if c is None or c.dtype != onnx.TensorProto.FLOAT:
        return None
    slope = c.numpy()
    if not np.all(np.isfinite(slope)):
        return None
    shape = x.shape
    if shape is None or slope.ndim > len(shape):
        return None
    for sd, xd in zip(reversed(slope.shape), reversed(shape), strict=False):
        if sd != 1 and not (isinstance(xd, int) and xd == sd):
            return None  # not provably broadcastable to x alone: Mul might broadcast x up where PRelu fails
    return slope


def _per_sample(shape: tuple) -> float:
    """Elements of x per sample: a symbolic leading dim counts as 1, any other symbolic dim as unbounded."""
    n = 1.0
    for i, d in enumerate(shape):
        if isinstance(d, int):
            n *= d
        elif i > 0:
            return float("inf")
    return n


def _as_leaky_relu(node: Node, alpha: float) -> None:
    x, s = node.inputs
    node.set_inputs([x])
    node.op_type = "LeakyRelu"
    node.attrs.clear()
    node.set_attr("alpha", alpha, onnx.AttributeProto.FLOAT)
    g = node.graph
    if g is None or s is None or s.users() or s.is_graph_input(g) or s.is_graph_output(g):
        return  # still read, or part of the graph's interface: it stays
    if g.is_initializer(s):
        del g.initializers[s.name]  # type: ignore[arg-type]  # nothing runs after the emission step to drop it


def _decompose(node: Node, g: Graph) -> None:
    x, s = node.inputs
    assert x is not None and s is not None
    base = node.name or "prelu"
    zero = g.make_constant(Tensor.from_numpy(np.zeros((), np.float32)), f"{base}_zero")

    def add(op: str, inputs: list[Value]) -> Value:
        n = Node(op, inputs, name=g.unique_name(f"{base}_{op.lower()}"))
        g.insert_before(node, n)
        out = n.output
        out.dtype, out.shape = x.dtype, x.shape  # Relu/Min keep x's shape; slope broadcasts to it (checked)
        return out

    pos = add("Relu", [x])
    neg = add("Min", [x, zero])
    scaled = add("Mul", [neg, s])
    node.op_type = "Add"
    node.attrs.clear()
    node.set_inputs([pos, scaled])
