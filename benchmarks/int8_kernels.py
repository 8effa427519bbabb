"""fp32 against int8 per convolution kind under onnxruntime at 1 thread (issue 16): the measurement behind
``graphopt.quantize.choice.CONV_SPEED``, the per-layer speed rule that keeps a convolution float where its int8 form
is slower.

Each case is a chain of three convolutions as CNN backbones have them, ``1x1 (C->C) -> X -> 1x1 (C->C)`` with a Relu
after each, where X is the convolution kind under test (depthwise kxk, a dense 3x3, a 1x1, an image stem with 3 input
channels first in the chain). Three graphs per case, each run under onnxruntime's full optimization (QDQ fusion into
QLinearConv, NCHWc layouts for float):

* ``fp32``: the float chain;
* ``int8``: every convolution static int8 in QDQ form (uint8 activations per tensor, int8 weights per channel, int32
  bias), as ``--quantize int8`` writes it;
* ``island``: the same with X kept float (it reads the int8 output of the layer before it through a
  DequantizeLinear; the layer after it quantizes its float output): what the speed rule writes.

The columns: the medians in microseconds, ``int8/fp32`` (the chain's speed-up, inverted) and ``island/int8`` (below
1.0: keeping X float makes the int8 chain faster, Q/DQ included). Rounds interleave the three sessions, the median of
per-round medians is reported (the machine is shared).

    python benchmarks/int8_kernels.py [--rounds 5] [--runs 30] [--only depthwise]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

# (label, kind, channels, H, W, kernel, stride): shapes from ppocrv4-cls, ppocrv6-tiny-det, picodet, mtcnn
CASES = [
    ("dw3x3 16c 24x96", "depthwise", 16, 24, 96, 3, 1),
    ("dw3x3 32c 128x96", "depthwise", 32, 128, 96, 3, 1),
    ("dw3x3 64c 32x24", "depthwise", 64, 32, 24, 3, 1),
    ("dw3x3 160c 16x12", "depthwise", 160, 16, 12, 3, 1),
    ("dw3x3 96c 40x40", "depthwise", 96, 40, 40, 3, 1),
    ("dw3x3/2 64c 64x48", "depthwise", 64, 64, 48, 3, 2),
    ("dw5x5 96c 3x96", "depthwise", 96, 3, 96, 5, 1),
    ("dw5x5 208c 2x96", "depthwise", 208, 2, 96, 5, 1),
    ("dw5x5 48c 6x96", "depthwise", 48, 6, 96, 5, 1),
    ("dw5x5 128c 3x80", "depthwise", 128, 3, 80, 5, 1),
    ("dw3x3 64c 2x40", "depthwise", 64, 2, 40, 3, 1),
    ("dw5x5 256c 6x160", "depthwise", 256, 6, 160, 5, 1),
    ("dw5x5 512c 3x160", "depthwise", 512, 3, 160, 5, 1),
    ("dw5x5 88c 3x96", "depthwise", 88, 3, 96, 5, 1),
    ("dw3x3 88c 24x48", "depthwise", 88, 24, 48, 3, 1),
    ("dw3x3 96c 24x48", "depthwise", 96, 24, 48, 3, 1),
    ("dw3x3 104c 24x48", "depthwise", 104, 24, 48, 3, 1),
    ("dw3x3 40c 24x48", "depthwise", 40, 24, 48, 3, 1),
    ("dw3x3 200c 12x24", "depthwise", 200, 12, 24, 3, 1),
    ("dw5x5 256c 4x4", "depthwise", 256, 4, 4, 5, 1),
    ("dw5x5 64c 64x48", "depthwise", 64, 64, 48, 5, 1),
    ("dw5x5 128c 20x20", "depthwise", 128, 20, 20, 5, 1),
    # stride (2, 1): PP-LCNet text classifiers and recognizers halve the height only (ppocrv4-cls's Conv.2/7/13/38)
    ("dw3x3/(2,1) 8c 24x96", "depthwise", 8, 24, 96, 3, (2, 1)),
    ("dw3x3/(2,1) 24c 12x96", "depthwise", 24, 12, 96, 3, (2, 1)),
    ("dw3x3/(2,1) 32c 6x96", "depthwise", 32, 6, 96, 3, (2, 1)),
    ("dw5x5/(2,1) 104c 3x96", "depthwise", 104, 3, 96, 5, (2, 1)),
    ("dw3x3/(2,1) 64c 24x160", "depthwise", 64, 24, 160, 3, (2, 1)),
    ("dw5x5/(2,1) 256c 6x160", "depthwise", 256, 6, 160, 5, (2, 1)),
    ("dw5x5/2 104c 3x96", "depthwise", 104, 3, 96, 5, 2),
    ("dw3x3/(2,1) 32c 40x80", "depthwise", 32, 40, 80, 3, (2, 1)),  # ppocrv5-cls-op14's Conv.3/7/11/23
    ("dw3x3/(2,1) 128c 10x80", "depthwise", 128, 10, 80, 3, (2, 1)),
    ("dw5x5/(2,1) 256c 5x80", "depthwise", 256, 5, 80, 5, (2, 1)),
    ("dw5x5/(2,1) 200c 3x96", "depthwise", 200, 3, 96, 5, (2, 1)),
    ("dw5x5/(2,1) 48c 6x96", "depthwise", 48, 6, 96, 5, (2, 1)),
    ("dw5x5/2 64c 8x64", "depthwise", 64, 8, 64, 5, 2),
    ("dw3x3/2 32c 6x96", "depthwise", 32, 6, 96, 3, 2),
    ("dw3x3/2 16c 48x48", "depthwise", 16, 48, 48, 3, 2),
    ("dw3x3/2 32c 24x24", "depthwise", 32, 24, 24, 3, 2),
    ("dw3x3/2 96c 16x16", "depthwise", 96, 16, 16, 3, 2),
    ("dense3x3 32c 64x48", "dense", 32, 64, 48, 3, 1),
    ("dense3x3 64c 32x24", "dense", 64, 32, 24, 3, 1),
    ("1x1 64c 32x24", "pointwise", 64, 32, 24, 1, 1),
    ("stem3x3 3->16 128x96", "stem", 16, 128, 96, 3, 2),
    ("stem3x3 3->32 48x48", "stem", 32, 48, 48, 3, 1),
    ("stem3x3/2 3->8 48x192", "stem", 8, 48, 192, 3, 2),
    ("stem3x3/2 3->16 80x160", "stem", 16, 80, 160, 3, 2),
    ("maxpool3x3/2 16c 192x256", "maxpool", 16, 192, 256, 3, 2),
    ("maxpool3x3/2 32c 24x96", "maxpool", 32, 24, 96, 3, 2),
    ("maxpool2x2/2 32c 46x46", "maxpool", 32, 46, 46, 2, 2),
]


def _conv(nodes, inits, x, name, cin, cout, k, stride, group, rng, *, quant, sx, relu=True, float_weight=False):
    """One convolution (+ Relu) reading ``x``; with ``quant`` its input is Q/DQ'd with scale ``sx`` and its weight
    and bias dequantized per channel (int8 / int32), as graphopt's static int8 writes it; with ``float_weight`` too,
    only its input is Q/DQ'd (a float layer reading a static layer's int8 output). Returns the output name."""
    w = (rng.standard_normal((cout, cin // group, k, k)) * (2.0 / (cin // group * k * k)) ** 0.5).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    pads = [k // 2] * 4
    xin, win, bin_ = x, f"{name}_w", f"{name}_b"
    if quant and float_weight:
        inits += [
            numpy_helper.from_array(np.array(sx, np.float32), f"{name}_sx"),
            numpy_helper.from_array(np.array(0, np.uint8), f"{name}_zx"),
            numpy_helper.from_array(w, win),
            numpy_helper.from_array(b, bin_),
            numpy_helper.from_array(np.full(cin, sx, np.float32), f"{name}_sxc"),
            numpy_helper.from_array(np.zeros(cin, np.uint8), f"{name}_zxc"),
        ]
        # the float layer reads its input through a per-axis DequantizeLinear (equal scales): the form graphopt
        # writes (qdq_rules.keep_float_layers) so that onnxruntime does not quantize its weight itself
        nodes += [
            helper.make_node("QuantizeLinear", [x, f"{name}_sx", f"{name}_zx"], [f"{name}_xq"]),
            helper.make_node("DequantizeLinear", [f"{name}_xq", f"{name}_sxc", f"{name}_zxc"], [f"{name}_xd"], axis=1),
        ]
        xin = f"{name}_xd"
    elif quant:
        sw = np.abs(w).reshape(cout, -1).max(axis=1) / 127.0
        inits += [
            numpy_helper.from_array(np.array(sx, np.float32), f"{name}_sx"),
            numpy_helper.from_array(np.array(0, np.uint8), f"{name}_zx"),
            numpy_helper.from_array(np.rint(w / sw[:, None, None, None]).astype(np.int8), f"{name}_wq"),
            numpy_helper.from_array(sw.astype(np.float32), f"{name}_sw"),
            numpy_helper.from_array(np.zeros(cout, np.int8), f"{name}_zw"),
            numpy_helper.from_array(np.rint(b / (sx * sw)).astype(np.int32), f"{name}_bq"),
            numpy_helper.from_array((sx * sw).astype(np.float32), f"{name}_sb"),
            numpy_helper.from_array(np.zeros(cout, np.int32), f"{name}_zb"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", [x, f"{name}_sx", f"{name}_zx"], [f"{name}_xq"]),
            helper.make_node("DequantizeLinear", [f"{name}_xq", f"{name}_sx", f"{name}_zx"], [f"{name}_xd"]),
            helper.make_node("DequantizeLinear", [f"{name}_wq", f"{name}_sw", f"{name}_zw"], [win], axis=0),
            helper.make_node("DequantizeLinear", [f"{name}_bq", f"{name}_sb", f"{name}_zb"], [bin_], axis=0),
        ]
        xin = f"{name}_xd"
    else:
        inits += [numpy_helper.from_array(w, win), numpy_helper.from_array(b, bin_)]
    nodes.append(
        helper.make_node(
            "Conv",
            [xin, win, bin_],
            [f"{name}_y"],
            kernel_shape=[k, k],
            pads=pads,
            strides=_strides(stride),
            group=group,
        )
    )
    if not relu:
        return f"{name}_y"
    nodes.append(helper.make_node("Relu", [f"{name}_y"], [f"{name}_r"]))
    return f"{name}_r"


def _strides(stride) -> list[int]:
    """A case's stride: one int for both axes, or (height, width)."""
    return list(stride) if isinstance(stride, tuple) else [stride] * 2


def _qdq(nodes, inits, x, name, sx, zero=0):
    inits += [
        numpy_helper.from_array(np.array(sx, np.float32), f"{name}_s"),
        numpy_helper.from_array(np.array(zero, np.uint8), f"{name}_z"),
    ]
    nodes += [
        helper.make_node("QuantizeLinear", [x, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
        helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_d"]),
    ]
    return f"{name}_d"


def _hard_swish(nodes, x, name):
    nodes += [
        helper.make_node("HardSigmoid", [x], [f"{name}_sig"], alpha=1.0 / 6, beta=0.5),
        helper.make_node("Mul", [x, f"{name}_sig"], [f"{name}_hs"]),
    ]
    return f"{name}_hs"


def _maxpool(nodes, inits, x, k, stride, q, form, then_float, sx):
    """A MaxPool after the first convolution; ``then_float`` (context ``float-producer``): a float hard swish between
    them. Int8 form: the MaxPool reads and writes int8 (Q/DQ around it with one scale, as graphopt writes pooling)."""
    if then_float:
        if q:
            x = _qdq(nodes, inits, x, "pre_o", sx)
        x = _hard_swish(nodes, x, "act")
    if form == "int8":
        x = _qdq(nodes, inits, x, "pool_i", sx)
    nodes.append(
        helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[k, k], strides=[stride] * 2, pads=[k // 2] * 4)
    )
    return _qdq(nodes, inits, "pool", "pool_o", sx) if form == "int8" else "pool"


def _mid(nodes, inits, x, kind, cin, c, k, stride, rng, q, form, then_float, sx):
    group = c if kind == "depthwise" else 1
    kk = 1 if kind == "pointwise" else k
    x = _conv(
        nodes,
        inits,
        x,
        "mid",
        cin,
        c,
        kk,
        stride,
        group,
        rng,
        quant=q,
        sx=sx,
        float_weight=form == "island",
        relu=not then_float,
    )
    if then_float:  # X's reader is a float op (a hard swish, as PaddleOCR has): X's int8 output is dequantized at once
        if q and form == "int8":
            x = _qdq(nodes, inits, x, "mid_o", sx, 128)
        x = _hard_swish(nodes, x, "act")
    return x


def chain(
    kind: str, c: int, h: int, w: int, k: int, stride: int, form: str, then_float: bool = False
) -> onnx.ModelProto:
    """The case's model: ``form`` fp32, int8 or island (see the module's docstring); ``then_float``: X is read by a
    float op (context ``float-reader``), else by the next int8 convolution (context ``int8-chain``)."""
    rng = np.random.default_rng(0)
    nodes: list = []
    inits: list = []
    q = form != "fp32"
    sx = 0.05
    cin = 3 if kind == "stem" else c
    x = "x"
    if kind != "stem":
        x = _conv(nodes, inits, x, "pre", c, c, 1, 1, 1, rng, quant=q, sx=sx)
    if kind == "maxpool":
        x = _maxpool(nodes, inits, x, k, stride, q, form, then_float, sx)
    else:
        x = _mid(nodes, inits, x, kind, cin, c, k, stride, rng, q, form, then_float, sx)
    x = _conv(nodes, inits, x, "post", c, c, 1, 1, 1, rng, quant=q, sx=sx)
    if q:  # the chain's output leaves int8 like a quantized layer's output does
        inits += [
            numpy_helper.from_array(np.array(sx, np.float32), "out_s"),
            numpy_helper.from_array(np.array(0, np.uint8), "out_z"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", [x, "out_s", "out_z"], ["out_q"]),
            helper.make_node("DequantizeLinear", ["out_q", "out_s", "out_z"], ["y"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", [x], ["y"]))
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def measure(case: tuple, rounds: int, runs: int, then_float: bool = False) -> dict[str, float]:
    """Median microseconds per form (median over rounds of each round's median; the forms interleaved)."""
    _, kind, c, h, w, k, stride = case
    sessions = {f: _session(chain(kind, c, h, w, k, stride, f, then_float)) for f in ("fp32", "int8", "island")}
    cin = 3 if kind == "stem" else c
    feed = {"x": np.random.default_rng(1).uniform(0, 4, (1, cin, h, w)).astype(np.float32)}
    for s in sessions.values():
        for _ in range(5):
            s.run(None, feed)
    per: dict[str, list[float]] = {f: [] for f in sessions}
    for _ in range(rounds):
        for f, s in sessions.items():
            t = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feed)
                t.append(time.perf_counter() - t0)
            per[f].append(statistics.median(t) * 1e6)
    return {f: statistics.median(v) for f, v in per.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--only", help="run only the cases of this kind (depthwise, dense, pointwise, stem, maxpool)")
    ap.add_argument("--grep", help="run only the cases whose label contains this")
    args = ap.parse_args(argv)
    print(f"# onnxruntime {ort.__version__}, 1 thread, ORT_ENABLE_ALL; chain 1x1 -> X -> 1x1; median µs")
    print(f"| case | context | fp32 | int8 | island (X float) | int8/fp32 | island/int8 |\n|{' --- |' * 7}")
    for case, then_float in [(c, t) for t in (False, True) for c in CASES]:
        if (
            (args.only and case[1] != args.only)
            or (args.grep and args.grep not in case[0])
            or (then_float and case[1] not in ("depthwise", "stem", "maxpool"))
        ):
            continue
        m = measure(case, args.rounds, args.runs, then_float)
        context = ("float-producer" if case[1] == "maxpool" else "float-reader") if then_float else "int8-chain"
        print(
            f"| {case[0]} | {context} | {m['fp32']:.1f} | {m['int8']:.1f} | {m['island']:.1f} | "
            f"{m['int8'] / m['fp32']:.2f} | {m['island'] / m['int8']:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
