"""fuse-gelu: the exact GELU written out in elementwise ops becomes one Gelu node.

Exporters (PaddlePaddle's paddle2onnx, torch below opset 20) write ``gelu(x) = 0.5 * x * (1 + erf(x / sqrt(2)))``
as five nodes: ``Div(x, sqrt2)`` (or ``Mul(x, 1/sqrt2)``) -> ``Erf`` -> ``Add 1`` -> ``Mul x`` -> ``Mul 0.5``, the
0.5 applied last, to x first, or to ``1 + erf`` (every Mul and the Add in either input order). They become one node:

* the ONNX ``Gelu`` (``approximate="none"``) when the model imports opset 20 or later;
* below opset 20, for target ort, onnxruntime's ``com.microsoft`` ``Gelu`` contrib op (the kernel onnxruntime's own
  GeluFusion builds from the same five nodes in a float graph; the ``com.microsoft`` opset is imported); target
  tensorrt keeps the five nodes.

Why a pass does it rather than onnxruntime: onnxruntime fuses the pattern only where the Div and the first Mul read
the same value. In a QDQ graph each reader of a DequantizeLinear gets its own copy, so the float island stayed five
kernels (3.6 ms of ppocrv6-tiny-det's 22.6 ms); and at -O2 fold-conv-bn/fold-conv-input-scale would move the trailing
0.5 into the next Conv, which stops the fp32 fusion as well. So the pass runs before those (first in -O2 after
fold-constants).

The Gelu kernel does not round as the five nodes do (up to a few float32 ulps apart), so the rules are not ``exact``
(see :class:`graphopt.patterns.Rule`): a GELU whose output reaches a QuantizeLinear (a model quantized already, QDQ)
is left alone, since there a last-bit difference flips whole int8 steps (smart-turn v3.2's eight GELUs moved its logits
by 7.7e-4 relative). graphopt's own int8 drivers run the pipeline on the float model before quantizing, so their
GELUs are fused.

Only float32 (both Gelu kernels of onnxruntime's CPU provider are float only), constants of one element equal to
sqrt(2) / 1/sqrt(2) within float32 rounding, 0.5 and 1.0 exactly, none of rank above x's (which would broadcast x up),
and intermediate values read only inside the pattern (the rule engine checks that) and not graph outputs.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from graphopt.core.ir import Graph, Model
from graphopt.core.shape_inference import infer_shapes
from graphopt.engine.passes_api import Pass, PassContext, register_pass
from graphopt.patterns import Builder, Const, Match, Op, Rule, RuleSet, Var

MS_DOMAIN = "com.microsoft"
_SQRT2 = math.sqrt(2.0)
_F32_EPS = float(np.finfo(np.float32).eps)


def _scalar(a: np.ndarray) -> float | None:
    if a.size != 1 or a.dtype != np.float32:
        return None
    return float(a.reshape(-1)[0])


def _near(a: np.ndarray, want: float) -> bool:
    """One float32 element within float32 rounding of ``want`` (half an ulp on either side, rounded up to one)."""
    v = _scalar(a)
    return v is not None and abs(v - want) <= _F32_EPS * abs(want)


def _exactly(want: float):
    return lambda a: _scalar(a) == want


def _pattern(variant: int) -> Op:
    """The five-node exact GELU; ``variant`` says where the 0.5 sits: 0 last, 1 on x first, 2 on (1 + erf)."""
    scaled = Op("Div", Var("x"), Const("c_sqrt2", where=lambda a: _near(a, _SQRT2))) | Op(
        "Mul", Var("x"), Const("c_rsqrt2", where=lambda a: _near(a, 1.0 / _SQRT2)), commutative=True
    )
    p = Op("Add", Op("Erf", scaled), Const("c_one", where=_exactly(1.0)), commutative=True)
    half = Const("c_half", where=_exactly(0.5))
    if variant == 0:
        return Op("Mul", Op("Mul", Var("x"), p, commutative=True), half, commutative=True)
    if variant == 1:
        return Op("Mul", Op("Mul", Var("x"), half, commutative=True), p, commutative=True)
    return Op("Mul", Var("x"), Op("Mul", p, half, commutative=True), commutative=True)


def _condition(m: Match) -> object:
    if m.dtype("x") != onnx.TensorProto.FLOAT:
        return m.decline("x not float32 (or its type unknown)")
    rank = m.rank("x")
    for name in ("c_sqrt2", "c_rsqrt2", "c_one", "c_half"):
        if name in m.bindings and m.get(name) is not None:
            nd = m.const(name).ndim
            if nd > 0 and (rank is None or nd > rank):
                return m.decline("a constant may broadcast x up (x's rank unknown or lower)")
    opset = m.opset("") or 0
    if opset < 20 and m.ctx.target != "ort":
        return m.decline("opset below 20 and target not ort (no standard Gelu)")
    return True


def _replace(m: Match, b: Builder) -> object:
    if (m.opset("") or 0) >= 20:
        return b.op("Gelu", m["x"], approximate="none")
    have = m.ctx.model.opset_imports.get(MS_DOMAIN)
    if have is None:
        m.ctx.model.opset_imports[MS_DOMAIN] = 1
    return b.op("Gelu", m["x"], domain=MS_DOMAIN)


RULES = RuleSet(
    [
        Rule(f"gelu-erf-{where}", _pattern(i), _replace, condition=_condition, exact=False)
        for i, where in enumerate(("half-last", "half-on-x", "half-on-erf"))
    ]  # fmt: skip
)


@register_pass(
    "fuse-gelu",
    description="the exact GELU written out (x/sqrt2 -> Erf -> +1 -> *x -> *0.5, any order) -> one Gelu node "
    "(ONNX Gelu at opset >= 20, else com.microsoft Gelu for target ort)",
)
class FuseGelu(Pass):
    def prepare(self, model: Model, ctx: PassContext) -> None:
        # the rule needs x's type (and rank, for constants of rank >= 1): inference once per run, only when an Erf's
        # input lacks them
        if any(n.op_type == "Erf" and n.inputs and n.inputs[0] is not None and n.inputs[0].shape is None
               or n.op_type == "Erf" and n.inputs and n.inputs[0] is not None and n.inputs[0].dtype is None
               for n in model.graph.all_nodes()):  # fmt: skip
            infer_shapes(model)

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        return RULES.rewrite(graph, ctx)
