"""Layout costs of onnxruntime's CPU kernels that an int8 graph meets (issue 16): the same op on the same data in NCHW
and in the NHWC layout onnxruntime's NHWC transformer gives the quantized region, uint8 and float, one graph per case,
1 thread, median of interleaved runs. Run: ``python benchmarks/int8_layout.py`` (about a minute).

Each case is one node (plus the DequantizeLinear a variant needs) on a constant-free input; the kernel onnxruntime
picks is printed from its optimized graph, so a case that the optimizer rewrote is visible."""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphopt.tools import runtime

F, U8 = TensorProto.FLOAT, TensorProto.UINT8


def _model(nodes, inputs, output, inits=(), opset=13, ms=False, out_type=None) -> onnx.ModelProto:
    dtype = out_type or inputs[0].type.tensor_type.elem_type
    graph = helper.make_graph(nodes, "case", inputs, [helper.make_tensor_value_info(output, dtype, None)], list(inits))
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    return helper.make_model(graph, opset_imports=ops)


def _info(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def _maxpool(shape, dtype, nhwc=False):
    n = helper.make_node(
        "NhwcMaxPool" if nhwc else "MaxPool",
        ["x"],
        ["y"],
        kernel_shape=[2, 2],
        strides=[2, 2],
        **({"domain": "com.microsoft"} if nhwc else {}),
    )
    return _model([n], [_info("x", dtype, shape)], "y", ms=nhwc)


def _mul(xs, ss):
    return _model([helper.make_node("Mul", ["x", "s"], ["y"])], [_info("x", F, xs), _info("s", F, ss)], "y")


def _qmul(xs, ss):
    """QLinearMul of uint8 tensors (what a quantized per-channel gate Mul becomes)."""
    params = (("sa", 0.05, np.float32), ("za", 128, np.uint8), ("sb", 0.004, np.float32), ("zb", 0, np.uint8))
    params += (("sc", 0.05, np.float32), ("zc", 128, np.uint8))
    inits = [numpy_helper.from_array(np.asarray(v, t), k) for k, v, t in params]
    n = helper.make_node("QLinearMul", ["x", "sa", "za", "s", "sb", "zb", "sc", "zc"], ["y"], domain="com.microsoft")
    return _model([n], [_info("x", U8, xs), _info("s", U8, ss)], "y", inits, ms=True)


def _dq_scaled(xs, c, axis):
    """DequantizeLinear of uint8 x with a per-axis scale computed at run time (the Mul by a per-channel gate folded
    into the scale)."""
    inits = [numpy_helper.from_array(np.full(c, 128, np.uint8), "zp")]
    n = helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["y"], axis=axis)
    return _model([n], [_info("x", U8, xs), _info("s", F, [c])], "y", inits, out_type=F)


def _reduce_mean(shape, axes):
    n = helper.make_node("ReduceMean", ["x"], ["y"], axes=axes, keepdims=1)
    return _model([n], [_info("x", F, shape)], "y")


def _resize(shape, dtype, scales):
    inits = [numpy_helper.from_array(np.asarray(scales, np.float32), "scales")]
    n = helper.make_node(
        "Resize",
        ["x", "", "scales"],
        ["y"],
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )
    return _model([n], [_info("x", dtype, shape)], "y", inits)


def _tile_upsample(shape6, reps, dtype):
    """A nearest upsample written channels-last as qdq_rules.nearest_upsamples_as_tiles does: ``[N, H, 1, W, 1, C]``
    tiled by ``reps``, reshaped to ``[N, H*fh, W*fw, C]``."""
    n, h, _, w, _, c = shape6
    inits = [
        numpy_helper.from_array(np.asarray(reps, np.int64), "reps"),
        numpy_helper.from_array(np.asarray([n, h * reps[2], w * reps[4], c], np.int64), "shape"),
    ]
    nodes = [helper.make_node("Tile", ["x", "reps"], ["t"]), helper.make_node("Reshape", ["t", "shape"], ["y"])]
    return _model(nodes, [_info("x", dtype, shape6)], "y", inits)


def _gelu_island(shape):
    """uint8 -> DequantizeLinear -> com.microsoft Gelu -> QuantizeLinear: a GELU kept float between quantized
    convolutions."""
    inits = [numpy_helper.from_array(np.asarray(0.05, np.float32), "s"), numpy_helper.from_array(np.uint8(128), "z")]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "s", "z"], ["d"]),
        helper.make_node("Gelu", ["d"], ["g"], domain="com.microsoft"),
        helper.make_node("QuantizeLinear", ["g", "s", "z"], ["y"]),
    ]
    return _model(nodes, [_info("x", U8, shape)], "y", inits, ms=True)


def _lookup(shape):
    """uint8 -> Cast -> Gather from a 256-entry uint8 table: an elementwise function of quantized values on
    integers (onnxruntime has no integer GELU)."""
    inits = [numpy_helper.from_array(np.arange(256, dtype=np.uint8)[::-1].copy(), "table")]
    nodes = [
        helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT32),
        helper.make_node("Gather", ["table", "i"], ["y"], axis=0),
    ]
    return _model(nodes, [_info("x", U8, shape)], "y", inits)


def feed_for(model: onnx.ModelProto, rng, spread: float = 1.0) -> dict:
    """Random inputs for ``model``: uint8 codes, or normal floats times ``spread``."""
    feed = {}
    for i in model.graph.input:
        t = i.type.tensor_type
        shape = [d.dim_value for d in t.shape.dim]
        if t.elem_type == U8:
            feed[i.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            feed[i.name] = (rng.standard_normal(shape) * spread).astype(np.float32)
    return feed


def _kernels(model: onnx.ModelProto) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/o.onnx"
        runtime.session(model, threads=1, optimized_path=path)
        return "+".join(n.op_type for n in onnx.load(path).graph.node)


def time_interleaved(models: list[onnx.ModelProto], rounds: int, feed=None) -> list[float]:
    """Median microseconds per run of each model at 1 thread, the models interleaved round by round; ``feed(model,
    rng)`` makes the inputs (random uint8 codes / normal floats by default)."""
    rng = np.random.default_rng(0)
    sessions = [runtime.session(m, threads=1) for m in models]
    feeds = [(feed or feed_for)(m, rng) for m in models]
    for s, f in zip(sessions, feeds, strict=True):
        for _ in range(5):
            s.run(None, f)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, (s, f) in enumerate(zip(sessions, feeds, strict=True)):
            t0 = time.perf_counter()
            for _ in range(10):
                s.run(None, f)
            times[i].append((time.perf_counter() - t0) / 10 * 1e6)
    return [float(np.median(t)) for t in times]


CASES = {
    "MaxPool 2x2/2 [1,200,2,96]": [
        ("float NCHW", _maxpool([1, 200, 2, 96], F)),
        ("uint8 NCHW", _maxpool([1, 200, 2, 96], U8)),
        ("uint8 NhwcMaxPool", _maxpool([1, 2, 96, 200], U8, nhwc=True)),
    ],
    "Mul by a per-channel gate, C=64, 128x96": [
        ("NCHW [1,64,128,96]*[1,64,1,1]", _mul([1, 64, 128, 96], [1, 64, 1, 1])),
        ("NHWC [1,128,96,64]*[1,1,1,64]", _mul([1, 128, 96, 64], [1, 1, 1, 64])),
        ("NHWC, gate expanded on W [1,1,96,64]", _mul([1, 128, 96, 64], [1, 1, 96, 64])),
        ("QLinearMul NCHW", _qmul([1, 64, 128, 96], [1, 64, 1, 1])),
        ("QLinearMul NHWC", _qmul([1, 128, 96, 64], [1, 1, 1, 64])),
        ("DQ per-axis scale, NCHW axis 1", _dq_scaled([1, 64, 128, 96], 64, 1)),
        ("DQ per-axis scale, NHWC axis 3", _dq_scaled([1, 128, 96, 64], 64, 3)),
    ],
    "Mul by a per-channel gate, C=10, 126x94 (mtcnn-pnet)": [
        ("NCHW [1,10,126,94]*[1,10,1,1]", _mul([1, 10, 126, 94], [1, 10, 1, 1])),
        ("NHWC [1,126,94,10]*[1,1,1,10]", _mul([1, 126, 94, 10], [1, 1, 1, 10])),
        ("QLinearMul NCHW", _qmul([1, 10, 126, 94], [1, 10, 1, 1])),
        ("QLinearMul NHWC", _qmul([1, 126, 94, 10], [1, 1, 1, 10])),
    ],
    "ReduceMean over H, W, C=32, 128x96": [
        ("NCHW axes [2,3]", _reduce_mean([1, 32, 128, 96], [2, 3])),
        ("NHWC axes [1,2]", _reduce_mean([1, 128, 96, 32], [1, 2])),
    ],
    "Resize nearest x2, C=64, 64x48": [
        ("float NCHW", _resize([1, 64, 64, 48], F, [1, 1, 2, 2])),
        ("float NHWC", _resize([1, 64, 48, 64], F, [1, 2, 2, 1])),
        ("uint8 NCHW", _resize([1, 64, 64, 48], U8, [1, 1, 2, 2])),
        ("uint8 NHWC", _resize([1, 64, 48, 64], U8, [1, 2, 2, 1])),
        ("uint8 NHWC as Tile (6-D) + Reshape", _tile_upsample([1, 64, 1, 48, 1, 64], [1, 1, 2, 1, 2, 1], U8)),
        ("float NHWC as Tile (6-D) + Reshape", _tile_upsample([1, 64, 1, 48, 1, 64], [1, 1, 2, 1, 2, 1], F)),
    ],
    "Resize nearest x8, C=16, 16x12 (an FPN's coarsest level)": [
        ("float NHWC", _resize([1, 16, 12, 16], F, [1, 8, 8, 1])),
        ("uint8 NHWC", _resize([1, 16, 12, 16], U8, [1, 8, 8, 1])),
        ("uint8 NHWC as Tile (6-D) + Reshape", _tile_upsample([1, 16, 1, 12, 1, 16], [1, 1, 8, 1, 8, 1], U8)),
    ],
    "GELU on uint8 [1,128,96,64]": [
        ("DQ -> Gelu -> Q (float island)", _gelu_island([1, 128, 96, 64])),
        ("Cast -> Gather (uint8 table)", _lookup([1, 128, 96, 64])),
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    for title, variants in CASES.items():
        print(title)
        ts = time_interleaved([m for _, m in variants], args.rounds)
        for (label, m), t in zip(variants, ts, strict=True):
            print(f"  {label:34s} {t:8.1f} us   ({_kernels(m)})")


if __name__ == "__main__":
    main()
