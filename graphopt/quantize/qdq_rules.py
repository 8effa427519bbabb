"""A checker for TensorRT's explicit-quantization rules on QDQ graphs (no GPU needed).

The rules, from TensorRT's documentation on explicit quantization (Q/DQ networks), as graph properties:

1. standard ONNX ops only: no custom domains, no QLinear*/ConvInteger/MatMulInteger forms;
2. int8 quantization is symmetric: every QuantizeLinear/DequantizeLinear zero point is int8 and zero, every scale a
   positive finite constant;
3. per-axis scales only on weights: a per-axis DequantizeLinear reads a constant and feeds the weight input of a
   Conv/ConvTranspose/Gemm/MatMul along that op's output-channel axis; activations are per tensor;
4. Q/DQ come in pairs: a QuantizeLinear output is read only by DequantizeLinears with the same scale and zero point,
   and a DequantizeLinear reads either such a QuantizeLinear or an int8 constant (pre-quantized weights);
5. a quantized Conv/ConvTranspose/Gemm/MatMul has both its data and its weight input dequantized (not just one);
6. biases stay float: no DequantizeLinear (and no int32) on the bias input;
7. on a residual Add joining a conv branch and a skip connection, the conv-branch input is not quantized (TensorRT
   fuses the Add into the convolution and wants the skip input quantized);
8. per-axis Q/DQ needs opset 13 or later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Model, Node, Value, constant_array, weight_axes
from graphopt.core.tensors import Tensor
from graphopt.quantize.analysis import RELU_LIKE

LINEAR = ("Conv", "ConvTranspose", "Gemm", "MatMul")
INTEGER_FORMS = ("QLinear", "ConvInteger", "MatMulInteger", "QGemm", "DynamicQuantize")

Report = Callable[[int, Node, str], None]
MayQuantize = Callable[[Node], bool]
"""``analysis.Plan.may_quantize``: False for a node the user excluded, which a layout rule leaves as it is."""


def _anything(_: Node) -> bool:
    return True


@dataclass(frozen=True)
class Violation:
    rule: int
    node: str
    message: str

    def __str__(self) -> str:
        return f"rule {self.rule}: {self.node}: {self.message}"


def _weight_axis(node: Node) -> int | None:
    axes = weight_axes(node)
    return axes[0] if axes is not None else None


def _dq_producer(v: Value | None) -> Node | None:
    p = v.producer if v is not None else None
    return p if p is not None and p.op_type == "DequantizeLinear" else None


def _from_linear(v: Value | None) -> bool:
    p = v.producer if v is not None else None
    return p is not None and p.op_type in LINEAR


def check_tensorrt(model: Model | onnx.ModelProto) -> list[Violation]:
    """Every place ``model`` breaks TensorRT's Q/DQ rules (an empty list: it follows them)."""
    if isinstance(model, onnx.ModelProto):
        from graphopt.core.onnx_io import from_proto

        model = from_proto(model)
    found: list[Violation] = []
    opset = model.opset("") or 0
    for graph in model.graphs():
        _check_graph(graph, opset, found)
    return found


def _check_graph(graph: Graph, opset: int, found: list[Violation]) -> None:
    def bad(rule: int, node: Node, message: str) -> None:
        found.append(Violation(rule, node.name or node.op_type, message))

    for n in graph:
        if n.domain not in STANDARD_DOMAINS or n.op_type.startswith(INTEGER_FORMS):
            bad(1, n, f"{n.domain + '.' if n.domain else ''}{n.op_type} is not a standard ONNX op TensorRT can parse")
            continue
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            _check_qdq(n, opset, bad)
        if n.op_type in LINEAR:
            _check_linear(n, bad)
        if n.op_type == "Add" and len(n.inputs) == 2:
            a, b = n.inputs
            for mine, other in ((a, b), (b, a)):
                dq = _dq_producer(mine)
                if dq is None:
                    continue
                q = dq.inputs[0].producer if dq.inputs[0] is not None else None
                if (
                    q is not None
                    and q.op_type == "QuantizeLinear"
                    and _from_linear(q.inputs[0])
                    and not (_from_linear(other) or (_dq_producer(other) is not None))
                ):
                    bad(7, n, "the conv-branch input of a residual Add is quantized; quantize the skip input instead")


def _check_qdq(n: Node, opset: int, report: Report) -> None:
    scale = constant_array(n.inputs[1] if len(n.inputs) > 1 else None)
    zp_v = n.inputs[2] if len(n.inputs) > 2 else None
    zp = constant_array(zp_v)
    if scale is None:
        report(2, n, "scale is not a constant")
    elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        report(2, n, "scale must be positive and finite")
    if zp_v is None:
        # no zero point means uint8 in ONNX: not TensorRT's int8
        report(2, n, "no zero point (uint8 by default); TensorRT needs an int8 zero point of 0")
    elif zp is None:
        report(2, n, "zero point is not a constant")
    else:
        if zp.dtype != np.int8:
            report(2, n, f"zero point is {zp.dtype}; TensorRT quantizes to int8")
        if np.any(zp != 0):
            report(2, n, "zero point is not 0 (TensorRT's int8 quantization is symmetric)")
    per_axis = scale is not None and scale.size > 1
    if per_axis and opset < 13:
        report(8, n, f"per-axis scales need opset 13, the model has {opset}")
    if n.op_type == "QuantizeLinear":
        out = n.outputs[0]
        readers = out.users() if out is not None else []
        if not readers:
            return
        for r in readers:
            if r.op_type != "DequantizeLinear":
                report(4, n, f"QuantizeLinear output read by {r.op_type} {r.name!r}, not a DequantizeLinear")
            elif not _same_params(n, r):
                report(4, n, f"DequantizeLinear {r.name!r} uses other scale/zero point than its QuantizeLinear")
        if per_axis:
            report(3, n, "per-axis QuantizeLinear on an activation; activations are quantized per tensor")
        return
    # DequantizeLinear
    src = n.inputs[0]
    const = constant_array(src)
    if const is not None:
        if const.dtype != np.int8:
            report(6 if const.dtype == np.int32 else 2, n, f"dequantizes a {const.dtype} constant; TensorRT wants int8")
    elif src is None or src.producer is None or src.producer.op_type != "QuantizeLinear":
        report(4, n, "DequantizeLinear does not read a QuantizeLinear or an int8 constant")
    elif per_axis:
        report(3, n, "per-axis DequantizeLinear on an activation; activations are quantized per tensor")
    if per_axis and const is not None:
        axis = int(n.attr("axis", 1))
        for r in n.outputs[0].users() if n.outputs[0] is not None else []:
            want = _weight_axis(r)
            if r.op_type not in LINEAR or r.inputs[1] is not n.outputs[0]:
                report(3, n, f"per-axis weights feed {r.op_type} {r.name!r}, not a weight input")
            elif want is not None and axis % max(const.ndim, 1) != want:
                report(3, n, f"per-axis scales on axis {axis}; {r.op_type} needs its output-channel axis {want}")


def _same_params(q: Node, dq: Node) -> bool:
    for i in (1, 2):
        a = q.inputs[i] if len(q.inputs) > i else None
        b = dq.inputs[i] if len(dq.inputs) > i else None
        if a is b:
            continue
        ca, cb = constant_array(a), constant_array(b)
        if ca is None or cb is None or ca.shape != cb.shape or not np.array_equal(ca, cb):
            return False
    return True


def _check_linear(n: Node, report: Report) -> None:
    ins = n.inputs
    data, weight = ins[0], ins[1] if len(ins) > 1 else None
    dq_data, dq_weight = _dq_producer(data), _dq_producer(weight)
    if (dq_data is None) != (dq_weight is None):
        # an activation-by-activation MatMul may legitimately quantize neither or both; a half-quantized op is a bug
        which = "weight" if dq_weight is None else "data"
        report(5, n, f"data and weight must both be dequantized; the {which} input is float")
    if len(ins) > 2 and ins[2] is not None and n.op_type != "MatMul" and _dq_producer(ins[2]) is not None:
        report(6, n, "the bias is quantized; TensorRT keeps biases float")


# ----------------------------------------------------------------------------------------------------------------------
# onnxruntime: a layer kept float must stay float

ORT_WEIGHT_QUANTIZED = ("Conv", "ConvTranspose", "Gemm")
"""The ops onnxruntime's WeightBiasQuantization transformer (onnxruntime 1.20 on, at the basic optimization level)
quantizes on its own: one whose data input is a DequantizeLinear with a per-tensor scale and whose weight is a float
initializer gets its weight quantized to int8 *per tensor, symmetric* (its bias to int32), and is then fused into a
QLinearConv/QGemm when a QuantizeLinear reads its output. A layer the choice or the accuracy guard keeps float between
Q/DQ pairs would silently run int8 with coarser weights than graphopt's per-channel ones (channels with small weights
round to zero): measured under onnxruntime 1.32, a float depthwise Conv between Q/DQ pairs lost 100 % of its two
smallest channels."""


def _channels(node: Node, w: np.ndarray) -> tuple[int, int] | None:
    """(axis, size) of the channel axis of ``node``'s data input, from its weight; None if not known."""
    if node.op_type == "Conv" and w.ndim >= 3:
        return 1, int(w.shape[1]) * int(node.attr("group", 1))
    if node.op_type == "ConvTranspose" and w.ndim >= 3:
        return 1, int(w.shape[0])
    if node.op_type == "Gemm" and w.ndim == 2:
        k = int(w.shape[1] if int(node.attr("transB", 0)) else w.shape[0])
        return (0 if int(node.attr("transA", 0)) else 1), k
    return None


def _scalar_params(node: Node) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A QuantizeLinear's or DequantizeLinear's constant one-element scale and zero point (None without a zero
    point); None when either is not such a constant."""
    scale = constant_array(node.inputs[1] if len(node.inputs) > 1 else None)
    zv = node.inputs[2] if len(node.inputs) > 2 else None
    zp = constant_array(zv) if zv is not None else None
    if scale is None or scale.size != 1 or (zv is not None and (zp is None or zp.size != 1)):
        return None
    return scale, zp


def _repeated(graph: Graph, a: np.ndarray, size: int, name: str) -> Value:
    """A new constant of ``graph``: the one-element ``a`` repeated ``size`` times, its dtype kept (a per-axis scale
    or zero point that quantizes exactly as the per-tensor one)."""
    return graph.make_constant(Tensor.from_numpy(np.full(size, a.reshape(()), a.dtype)), name)


def keep_float_layers(graph: Graph, opset: int) -> int:
    """Make every float Conv/ConvTranspose/Gemm of ``graph`` (and its subgraphs) that reads a per-tensor
    DequantizeLinear read a per-axis copy of it instead (the same scale and zero point repeated along the data's
    channel axis: bit-identical), which onnxruntime's WeightBiasQuantization does not take (see
    :data:`ORT_WEIGHT_QUANTIZED`); returns the number of layers changed. Per-axis DequantizeLinear needs opset 13:
    below it nothing changes. For target ort only (TensorRT wants activations per tensor)."""
    if opset < 13:
        return 0
    changed = 0
    copies: dict[tuple[int, int, int], Value] = {}
    for body in (graph, *graph.subgraphs()):
        for n in list(body):
            if n.op_type not in ORT_WEIGHT_QUANTIZED or n.domain not in ("", "ai.onnx") or len(n.inputs) < 2:
                continue
            x, wv = n.inputs[0], n.inputs[1]
            dq = x.producer if x is not None else None
            w = constant_array(wv) if wv is not None and wv.producer is None else None
            if dq is None or dq.op_type != "DequantizeLinear" or w is None or w.dtype != np.float32:
                continue
            g = dq.graph  # the copy goes next to the DequantizeLinear: a body's Conv may read an outer one
            if g is None:
                continue
            found = _scalar_params(dq)
            if found is None:
                continue
            scale, zp = found
            where = _channels(n, w)
            if where is None or where[1] < 1:
                continue
            axis, size = where
            key = (id(dq), axis, size)
            if key not in copies:
                base = dq.name or "dq"
                ins = [dq.inputs[0], _repeated(g, scale, size, f"{base}_per_axis_scale")]
                if zp is not None:
                    ins.append(_repeated(g, zp, size, f"{base}_per_axis_zero_point"))
                name = g.unique_name(f"{x.name}_per_axis")  # type: ignore[union-attr]
                out = Value(name, x.dtype, x.shape) if x.shape is not None else Value(name)  # type: ignore[union-attr]
                copy = Node(
                    "DequantizeLinear", ins, {"axis": axis}, outputs=[out], name=g.unique_name(f"{base}_per_axis")
                )
                g.insert_after(dq, copy)
                copies[key] = out
            n.set_input(0, copies[key])
            changed += 1
            y = dq.outputs[0]
            if y is not None and not y.users() and not y.is_graph_output(g):
                g.remove(dq)  # every reader took a per-axis copy
    return changed


# ----------------------------------------------------------------------------------------------------------------------
# onnxruntime: keep a quantized tail channels-last


def channels_last_tails(graph: Graph, may: MayQuantize = _anything) -> int:
    """Read every ``[N, C, 1, 1]`` value that a DequantizeLinear makes and a Reshape or Flatten (to ``[N, C]``) reads
    through a Transpose to ``[N, 1, 1, C]``: the same elements in the same order, so the Reshape's output is
    unchanged; returns the number of Transposes written. For target ort only.

    onnxruntime's NHWC transformer runs each QLinearConv channels-last between two Transposes and its transpose
    optimizer pushes the one after it down through the ops that follow, but only towards a Transpose it can cancel
    against (onnx_transpose_optimization's ``outputs_leading_to_transpose``). A classifier's tail after its last
    convolution (hard-swish, MaxPool, GlobalAveragePool, Reshape, Gemm) has none: it runs in NCHW, where a uint8
    MaxPool is a scalar loop (ppocrv4-cls, onnxruntime 1.32: 115 us for a [1, 200, 2, 96] 2x2 pool, against 4 us as
    NhwcMaxPool). With this Transpose written after the pooled value the pushed Transpose cancels against it and the
    whole tail runs channels-last (QLinearAdd/QLinearMul, NhwcMaxPool, QLinearGlobalAveragePool with channels_last).
    A Reshape whose shape has a 0 (copy a dimension) past the first entry, or an ``allowzero`` one, is left alone, as
    is a Flatten whose axis is not 0 or 1, and one the user excluded (``may``)."""
    written = 0
    for body in (graph, *graph.subgraphs()):
        for n in list(body):
            if n.domain not in STANDARD_DOMAINS or n.op_type not in ("Reshape", "Flatten") or not n.inputs:
                continue
            if not may(n):
                continue
            x = n.inputs[0]
            dq = x.producer if x is not None else None
            if x is None or dq is None or dq.op_type != "DequantizeLinear" or dq.graph is not body:
                continue
            shape = x.shape
            if shape is None or len(shape) != 4 or shape[2] != 1 or shape[3] != 1:
                continue
            if n.op_type == "Flatten":
                if int(n.attr("axis", 1)) not in (0, 1):
                    continue
            else:
                target = constant_array(n.inputs[1]) if len(n.inputs) > 1 else None
                if target is None or int(n.attr("allowzero", 0)) or np.any(target.reshape(-1)[1:] == 0):
                    continue
            out = Value(body.unique_name(f"{x.name}_channels_last"), x.dtype, (shape[0], 1, 1, shape[1]))
            t = Node("Transpose", [x], {"perm": [0, 2, 3, 1]}, outputs=[out], name=body.unique_name(f"{n.name}_nhwc"))
            body.insert_before(n, t)
            n.set_input(0, out)
            written += 1
    return written


def _reduce_axes(node: Node) -> list[int] | None:
    """A ReduceMean's axes (attribute before opset 18, a constant input from 18), None when not known."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        a = constant_array(node.inputs[1])
        return None if a is None else [int(v) for v in a.reshape(-1)]
    axes = node.attr("axes")
    return None if axes is None else [int(v) for v in axes]


def reduce_means_as_pools(graph: Graph, may: MayQuantize = _anything) -> int:
    """Write every ReduceMean over all spatial axes (``axes = [2, ..., rank-1]``, ``keepdims = 1``) that reads a
    per-tensor DequantizeLinear and is read by QuantizeLinears only as the GlobalAveragePool it computes (the same
    mean of the same values); returns the number rewritten. For target ort only.

    onnxruntime has no integer ReduceMean: between Q/DQ pairs it stays a float ReduceMean, and inside the NHWC
    transformer's channels-last region it is rewritten to reduce axes ``[1, 2]`` of ``[N, H, W, C]``, a strided
    reduction six times slower than the NCHW one (a squeeze-excitation's mean in ppocrv6-tiny-det, onnxruntime 1.32:
    351 us for [1, 128, 96, 32] against 53 us in the fp32 model). DQ -> GlobalAveragePool -> Q is fused into
    QLinearGlobalAveragePool, which runs channels-last (31 us): an integer sum of the same uint8 values, rescaled once,
    so the result differs from Q(mean(DQ(x))) only where float rounding of the mean crosses half a step. Not a
    ReduceMean the user excluded (``may``)."""
    written = 0
    for body in (graph, *graph.subgraphs()):
        for n in list(body):
            if n.domain not in STANDARD_DOMAINS or n.op_type != "ReduceMean" or not n.inputs or not n.outputs:
                continue
            if not may(n):
                continue
            x, y = n.inputs[0], n.outputs[0]
            dq = x.producer if x is not None else None
            if x is None or y is None or dq is None or dq.op_type != "DequantizeLinear" or x.shape is None:
                continue
            scale = constant_array(dq.inputs[1] if len(dq.inputs) > 1 else None)
            if scale is None or scale.size != 1 or len(x.shape) < 3 or int(n.attr("keepdims", 1)) != 1:
                continue
            axes = _reduce_axes(n)
            rank = len(x.shape)
            if axes is None or sorted(a % rank for a in axes) != list(range(2, rank)):
                continue
            readers = y.users()
            if not readers or y.is_graph_output(body) or any(r.op_type != "QuantizeLinear" for r in readers):
                continue
            n.set_inputs([x])  # the axes input (opset 18) goes; the ReduceMean's name and output stay
            n.op_type = "GlobalAveragePool"
            n.attrs.clear()
            written += 1
    return written


# ----------------------------------------------------------------------------------------------------------------------
# onnxruntime: a float MaxPool stays float

PROPAGATED = frozenset({"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice"})
"""The ops onnxruntime's QDQPropagationTransformer moves a QuantizeLinear up through (qdq_propagation.cc,
``CanNodePropagate``), inserting a Q/DQ pair before each, while the QuantizeLinear has a constant scalar scale."""


def float_pools_stay_float(graph: Graph, opset: int) -> int:
    """Write every QuantizeLinear that onnxruntime would move up through a MaxPool into float data as a per-axis one
    (the same scale and zero point repeated along axis 1: the same integers); returns the number rewritten. For
    target ort only, from opset 13 (per-axis QuantizeLinear).

    A MaxPool whose input is float (after a convolution the quantizer kept float, an image stem say) and whose output
    is quantized is written float with the QuantizeLinear after it. onnxruntime's QDQPropagationTransformer moves a
    per-tensor QuantizeLinear up over it (``Q(MaxPool(x)) = MaxPool(Q(x))``), and the uint8 MaxPool it then runs
    sits outside the NHWC transformer's channels-last region, where onnxruntime 1.32's generic uint8 MaxPool is a
    scalar loop: 361 us for mtcnn-pnet's [1, 10, 126, 94] 2x2 pool against 34 us float (37 us as NhwcMaxPool). The
    transformer takes only a QuantizeLinear with a constant scalar scale and zero point (its
    ``QOrDQNodeHasConstantScalarScaleAndZeroPoint``), so a per-axis one stays where it is and the MaxPool runs float.
    Only where the chain of :data:`PROPAGATED` ops above the QuantizeLinear holds a MaxPool and starts at something
    other than a DequantizeLinear (a MaxPool between Q/DQ pairs runs on integers anyway), and the channel count
    (axis 1 of the QuantizeLinear's input) is known."""
    if opset < 13:
        return 0
    written = 0
    for body in (graph, *graph.subgraphs()):
        for q in list(body):
            if q.op_type != "QuantizeLinear" or q.domain not in STANDARD_DOMAINS or len(q.inputs) < 2:
                continue
            if q.attr("axis") is not None or q.attr("block_size") is not None:
                continue
            x, found = q.inputs[0], _scalar_params(q)
            if x is None or found is None:
                continue
            scale, zp = found
            shape = x.shape
            if shape is None or len(shape) < 3 or not isinstance(shape[1], int) or shape[1] < 1:
                continue
            pool, v = False, x
            while v is not None and v.producer is not None and v.producer.op_type in PROPAGATED:
                p = v.producer
                pool = pool or p.op_type == "MaxPool"
                v = p.inputs[0] if p.inputs else None
            start = v.producer if v is not None else None
            if not pool or (start is not None and start.op_type == "DequantizeLinear"):
                continue
            size = int(shape[1])
            base = q.name or "q"
            q.set_input(1, _repeated(body, scale, size, f"{base}_axis"))
            if zp is not None:
                q.set_input(2, _repeated(body, zp, size, f"{base}_zp_axis"))
            q.set_attr("axis", 1)
            written += 1
    return written


# ----------------------------------------------------------------------------------------------------------------------
# onnxruntime: a nearest upsample by whole factors runs as a channels-last Tile

MAX_UPSAMPLE = 32
"""The largest whole upsampling factor :func:`nearest_upsamples_as_tiles` takes."""
_CHECKED_LENGTH = 8192
"""Input rows (columns) over which a Resize's nearest-pixel mapping is checked when the dim is not static."""


def _source_pixels(mode: str, nearest: str, factor: int, length: int, static: bool) -> np.ndarray | None:
    """The input pixel onnxruntime's nearest Resize (upsample.h, float32 arithmetic) reads for each of the
    ``factor * length`` output pixels of an axis scaled by ``factor``; None for a mode it does not model
    (tf_crop_and_resize, half_pixel_symmetric), and for align_corners unless ``length`` is the static dim (its
    mapping depends on the length)."""
    o = np.arange(factor * length, dtype=np.float32)
    s = np.float32(factor)
    if mode in ("half_pixel", "pytorch_half_pixel"):  # pytorch_half_pixel: the same for an output longer than 1
        x = (o + np.float32(0.5)) / s - np.float32(0.5)
    elif mode == "align_corners" and static:
        x = o * np.float32(length - 1) / np.float32(factor * length - 1)
    elif mode == "asymmetric":
        x = o / s
    elif mode == "tf_half_pixel_for_nn":
        x = (o + np.float32(0.5)) / s
    else:
        return None
    if nearest == "round_prefer_floor":
        r = np.where(x == np.trunc(x) + np.float32(0.5), np.floor(x), np.sign(x) * np.floor(np.abs(x) + 0.5))
    elif nearest == "round_prefer_ceil":
        r = np.sign(x) * np.floor(np.abs(x) + 0.5)  # std::round: halves away from zero
    elif nearest == "floor":
        r = np.floor(x)
    elif nearest == "ceil":
        r = np.ceil(x)
    else:
        return None
    return np.clip(r, 0, length - 1).astype(np.int64)


def _whole_factors(node: Node, opset: int) -> tuple[int, int] | None:
    """``(fh, fw)`` when ``node`` is a 4-D nearest Resize by the constant scales ``[1, 1, fh, fw]`` (whole numbers,
    not both 1) whose every output pixel copies input pixel ``(h // fh, w // fw)`` under onnxruntime; else None."""
    if opset < 11 or node.domain not in STANDARD_DOMAINS or len(node.inputs) < 3 or not node.outputs:
        return None
    if node.attr("mode", "nearest") not in ("nearest", b"nearest") or node.attr("axes") is not None:
        return None
    policy = node.attr("keep_aspect_ratio_policy", "stretch")
    if node.attr("antialias", 0) != 0 or policy not in ("stretch", b"stretch"):
        return None  # onnxruntime refuses both with nearest scales: the rewrite would run a model it does not
    if len(node.inputs) > 3 and node.inputs[3] is not None:
        return None  # sizes
    scales = constant_array(node.inputs[2])
    if scales is None or scales.shape != (4,) or not np.all(np.isfinite(scales)):
        return None
    whole = np.round(scales)
    if not np.array_equal(scales, whole) or whole[0] != 1 or whole[1] != 1:
        return None
    fh, fw = int(whole[2]), int(whole[3])
    if not (1 <= fh <= MAX_UPSAMPLE and 1 <= fw <= MAX_UPSAMPLE) or fh * fw == 1:
        return None
    mode = node.attr("coordinate_transformation_mode", "half_pixel")
    nearest = node.attr("nearest_mode", "round_prefer_floor")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    nearest = nearest.decode() if isinstance(nearest, bytes) else nearest
    x = node.inputs[0]
    shape = x.shape if x is not None else None
    if shape is not None and len(shape) != 4:
        return None
    for axis, f in ((2, fh), (3, fw)):
        if f == 1:
            continue  # onnxruntime copies an axis with scale 1 one to one
        dim = shape[axis] if shape is not None else None
        static = isinstance(dim, int) and dim > 0
        length = int(dim) if static else _CHECKED_LENGTH  # type: ignore[arg-type]
        src = _source_pixels(str(mode), str(nearest), f, length, static)
        if src is None or not np.array_equal(src, np.arange(f * length) // f):
            return None
    return fh, fw


def nearest_upsamples_as_tiles(graph: Graph, opset: int, may: MayQuantize = _anything) -> int:
    """Write every nearest Resize by whole factors (scales ``[1, 1, fh, fw]``) next to the quantized region (its
    input a per-tensor DequantizeLinear, or every reader a QuantizeLinear with the same scalar parameters) as the
    same copy in channels-last order: Transpose to ``[N, H, W, C]``, Unsqueeze to ``[N, H, 1, W, 1, C]``, Tile by
    ``[1, 1, fh, 1, fw, 1]``, Reshape to ``[N, H*fh, W*fw, C]``, Transpose back; returns the number rewritten. For
    target ort only, from opset 11 (Resize with scales).

    onnxruntime's transpose optimizer pushes the NHWC transformer's Transposes through a Resize (its CPU handler
    takes NCHW <-> NHWC), and its nearest kernel has a fast path only for NCHW scales ``[1, 1, 2, 2]``: channels-last
    each output element is gathered one at a time (ppocrv6-tiny-det, onnxruntime 1.32, 1 thread: 696 us for a uint8
    [1, 64, 48, 64] x2 upsample, 1300 us for its six Resizes against 438 us in the fp32 model). Written this way the
    Transposes cancel against the NHWC transformer's and the Tile copies whole channel vectors on uint8 (the Q/DQ
    pair written around it, with the input's or the readers' parameters, makes onnxruntime drop the Q/DQ: a Tile
    between them is data movement, Q(DQ(q)) = q). The copy is exact: :func:`_whole_factors` checks, in onnxruntime's
    float32 arithmetic, that every output pixel reads input pixel ``(h // fh, w // fw)`` under the node's coordinate
    and rounding modes (every row of a static dim; for a dynamic dim the first 8192, and the mapping is assumed to
    go on so beyond). The target shape is a constant for static
    dims, else ``Shape * [1, 1, fh, fw]`` gathered to NHWC order (of the integer input when there is one, so that no
    DequantizeLinear is run just for its shape). Not a Resize the user excluded (``may``)."""
    if opset < 11:
        return 0
    written = 0
    for body in (graph, *graph.subgraphs()):
        for n in list(body):
            if n.op_type != "Resize" or n.graph is not body or not may(n):
                continue
            factors = _whole_factors(n, opset)
            if factors is None:
                continue
            x, y = n.inputs[0], n.outputs[0]
            if x is None or y is None:
                continue
            dq = x.producer
            params: tuple[Value, ...] | None = None
            if dq is not None and dq.op_type == "DequantizeLinear" and _eight_bit_params(dq):
                params = (dq.inputs[1], dq.inputs[2])  # type: ignore[assignment]
            readers = y.users()
            if params is None:
                if not readers or y.is_graph_output(body):
                    continue
                if any(r.op_type != "QuantizeLinear" or r.graph is not body for r in readers):
                    continue  # a reader in an If/Loop body may hold its parameters there, out of this graph's scope
                first = readers[0]
                if not _eight_bit_params(first) or any(not _same_params(first, r) for r in readers[1:]):
                    continue
                params = (first.inputs[1], first.inputs[2])  # type: ignore[assignment]
            _tile_upsample(body, n, factors, params, opset)
            written += 1
    return written


def _eight_bit_params(node: Node) -> bool:
    """Whether the Q/DQ ``node`` has a one-element constant scale and a one-element uint8 or int8 zero point (and no
    attribute that changes its integer type): a QuantizeLinear given them writes the same integers. Without a zero
    point its integer type is uint8 by default or another one by ``output_dtype`` (opset 21), or the input's."""
    sp = _scalar_params(node)
    if sp is None or sp[1] is None or sp[1].dtype not in (np.uint8, np.int8):
        return False
    return all(a in ("axis",) for a in node.attrs)


def _tile_upsample(body: Graph, n: Node, factors: tuple[int, int], params: tuple[Value, ...], opset: int) -> None:
    """Replace the Resize ``n`` by the channels-last Tile of :func:`nearest_upsamples_as_tiles`."""
    fh, fw = factors
    x, y = n.inputs[0], n.outputs[0]
    assert x is not None and y is not None
    base = n.name or "resize"

    def const(a: np.ndarray, name: str) -> Value:
        return body.make_constant(Tensor.from_numpy(a), f"{base}_{name}")

    def node(op: str, ins: list[Value], name: str, **attrs: object) -> Value:
        out = Value(body.unique_name(f"{base}_{name}"))
        body.insert_before(n, Node(op, ins, attrs or None, outputs=[out], name=body.unique_name(f"{base}_{name}")))
        return out

    def integers(v: Value, name: str) -> Value:  # Q/DQ with the same parameters: Q(DQ(q)) = q
        return node("DequantizeLinear", [node("QuantizeLinear", [v, *params], f"{name}_q"), *params], f"{name}_dq")

    nhwc = node("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])
    if opset >= 13:
        six = node("Unsqueeze", [nhwc, const(np.array([2, 4], np.int64), "axes")], "unsqueeze")
    else:
        six = node("Unsqueeze", [nhwc], "unsqueeze", axes=[2, 4])
    tiled = node("Tile", [integers(six, "unsqueezed"), const(np.array([1, 1, fh, 1, fw, 1], np.int64), "reps")], "tile")
    shape = x.shape
    if shape is not None and len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape):
        n_, c, h, w = (int(d) for d in shape)  # type: ignore[arg-type]
        target = const(np.array([n_, h * fh, w * fw, c], np.int64), "shape")
    else:
        dq = x.producer
        src = dq.inputs[0] if dq is not None and dq.op_type == "DequantizeLinear" and dq.inputs[0] is not None else x
        dims = node("Shape", [src], "dims")
        scaled = node("Mul", [dims, const(np.array([1, 1, fh, fw], np.int64), "factors")], "scaled")
        target = node("Gather", [scaled, const(np.array([0, 2, 3, 1], np.int64), "order")], "nhwc_dims", axis=0)
    # allowzero: a dynamic dim that is 0 is 0 in the target too (not "copy the input's dim")
    flat = node("Reshape", [integers(tiled, "tiled"), target], "reshape", **({"allowzero": 1} if opset >= 14 else {}))
    if x.dtype is not None:
        # onnxruntime's inference does not carry the rank through a computed target shape, and its transpose
        # optimizer stops at a value of unknown rank (the NHWC Transposes stayed on both sides of a QLinearAdd
        # after this Reshape); listed, the rank is known. Static dims listed as such, the others left unnamed.
        dims = shape if shape is not None and len(shape) == 4 else (None, None, None, None)
        flat.dtype = x.dtype
        flat.shape = (
            dims[0] if isinstance(dims[0], int) else None,
            dims[2] * fh if isinstance(dims[2], int) else None,  # type: ignore[operator]
            dims[3] * fw if isinstance(dims[3], int) else None,  # type: ignore[operator]
            dims[1] if isinstance(dims[1], int) else None,
        )
        body.value_info.append(flat)
    out = node("Transpose", [flat], "nchw", perm=[0, 3, 1, 2])
    body.replace_all_uses_with(y, out)
    body.remove(n)


# ----------------------------------------------------------------------------------------------------------------------
# onnxruntime: a residual gate x + x * g is one Mul x * (1 + g)

GATES = ("HardSigmoid", "Sigmoid")
"""Ops whose output lies in [0, 1]: a gate ``g`` from one gives ``1 + g`` in [1, 2], where no cancellation occurs."""


def _broadcasts_into(small: tuple | None, big: tuple | None) -> bool:
    """Whether a value of shape ``small`` broadcasts to ``big`` (same rank, each dim 1 or ``big``'s) with fewer
    elements, so that ``big`` is the shape of an elementwise result of the two."""
    if small is None or big is None or len(small) != len(big) or len(big) < 2:
        return False
    if any(not (d == 1 or d == b) for d, b in zip(small, big, strict=True)):
        return False
    return any(d == 1 and b != 1 for d, b in zip(small, big, strict=True))


def residual_gates_as_one_mul(graph: Graph, may: MayQuantize = _anything) -> int:
    """Write every float ``Add(x, Mul(x, g))`` where ``x`` is a DequantizeLinear's output, ``g`` a HardSigmoid's or
    Sigmoid's (in [0, 1]) that broadcasts into ``x`` with fewer elements and the Mul's output read only by the Add as
    ``Mul(x, Add(g, 1))``; returns the number rewritten. For target ort only.

    A squeeze-excitation with a residual (PaddleOCR's RSE-FPN layers: ``x + x * hardsigmoid(...)``) kept float reads
    ``x`` twice, and onnxruntime gives each reader its own DequantizeLinear (EnsureUniqueDQForNodeUnit): a second pass
    over the full tensor, then a full-tensor float Add (ppocrv6-tiny-det, onnxruntime 1.32, 1 thread: eight such
    layers, 8 DequantizeLinear and 8 Adds, about 0.5 ms of 16.5). ``x * (1 + g)`` is the same value up to float
    rounding: with ``1 + g`` in [1, 2] the two differ by at most a few units in the last place of the result, far
    below the int8 step the QuantizeLinear after it rounds to. Not where the user excluded the Add or the Mul
    (``may``)."""
    written = 0
    for body in (graph, *graph.subgraphs()):
        for add in list(body):
            if (
                add.op_type != "Add"
                or add.domain not in STANDARD_DOMAINS
                or len(add.inputs) != 2
                or add.graph is not body
            ):
                continue
            y = add.outputs[0]
            for x, m in (add.inputs, add.inputs[::-1]):
                mul = m.producer if m is not None else None
                if x is None or m is None or y is None or mul is None or mul.op_type != "Mul" or mul.graph is not body:
                    continue
                if mul.domain not in STANDARD_DOMAINS or len(mul.inputs) != 2 or x not in mul.inputs:
                    continue
                if not (may(add) and may(mul)):
                    continue
                if m.users() != [add] or m.is_graph_output(body):
                    continue
                dq = x.producer
                if dq is None or dq.op_type != "DequantizeLinear" or x.dtype not in (1, 10):  # float, float16
                    continue
                gi = 1 if mul.inputs[0] is x else 0
                g = mul.inputs[gi]
                gp = g.producer if g is not None else None
                if g is None or gp is None or gp.op_type not in GATES or gp.domain not in STANDARD_DOMAINS:
                    continue
                if g.dtype != x.dtype or not _broadcasts_into(g.shape, x.shape):
                    continue
                one = body.make_constant(
                    Tensor.from_numpy(np.ones((), np.float32 if x.dtype == 1 else np.float16)), f"{mul.name}_one"
                )
                plus = Value(body.unique_name(f"{g.name}_plus_one"), g.dtype, g.shape)
                body.insert_before(mul, Node("Add", [g, one], outputs=[plus], name=body.unique_name(f"{mul.name}_1g")))
                mul.set_input(gi, plus)
                body.replace_all_uses_with(y, m)
                body.remove(add)
                written += 1
                break
    return written


# ----------------------------------------------------------------------------------------------------------------------
# onnxruntime: a node the user excluded runs float

KEEPS_FLOAT = "Max"
"""The op of the copies :func:`excluded_stay_float` writes: ``Max`` of one input is that input, bit for bit, and
onnxruntime 1.32 neither eliminates it, nor fuses it with a DequantizeLinear or QuantizeLinear, nor moves a
QuantizeLinear through it (it is no op of :data:`PROPAGATED`)."""


PASSED_THROUGH = PROPAGATED | {"Identity", "Dropout"}
"""Ops between a Q/DQ and an excluded node that onnxruntime removes (Identity, inference Dropout) or moves the Q/DQ
across (:data:`PROPAGATED`): the excluded node is next to the Q/DQ for its fusions all the same."""


ORT_FUSES_FLOAT = {"Add": "QLinearAdd", "Mul": "QLinearMul", "Concat": "QLinearConcat"}
"""The ops onnxruntime's QDQ transformers turn into an integer op when they sit between a DequantizeLinear on each
input and a QuantizeLinear on the output, whatever graphopt planned for them (:func:`runs_as_integer`)."""


def runs_as_integer(node: Node) -> str | None:
    """The integer op onnxruntime runs ``node`` as (``QLinearAdd``, ``QLinearMul``, ``QLinearConcat``), read from the
    graph's structure: an Add, Mul or Concat each of whose inputs a per-tensor DequantizeLinear makes and
    whose output only a per-tensor QuantizeLinear reads (not a graph output), one integer type throughout. None
    otherwise: a node the quantizer left float is then really float. (An excluded node reads a :data:`KEEPS_FLOAT`
    copy, no DequantizeLinear, so it is never one.)"""
    op = ORT_FUSES_FLOAT.get(node.op_type)
    body = node.graph
    if op is None or node.domain not in STANDARD_DOMAINS or body is None or len(node.outputs) != 1:
        return None
    y = node.outputs[0]
    if y is None or body.is_output(y) or len(y.uses) != 1:
        return None
    q, i = next(iter(y.uses))
    params = _scalar_params(q) if q.op_type == "QuantizeLinear" and i == 0 else None
    if params is None:
        return None
    types = {_integer_type(params)}
    for v in node.inputs:
        p = v.producer if v is not None else None
        params = _scalar_params(p) if p is not None and p.op_type == "DequantizeLinear" else None
        if params is None:
            return None  # a float input (a float layer's output, a float constant): onnxruntime fuses nothing
        types.add(_integer_type(params))
    return op if len(types) == 1 else None


def _integer_type(params: tuple[np.ndarray, np.ndarray | None]) -> str:
    """The integer type of a QuantizeLinear/DequantizeLinear given its :func:`_scalar_params`: its zero point's,
    uint8 without one."""
    return "uint8" if params[1] is None else str(params[1].dtype)


def _from_dequantize(v: Value | None) -> bool:
    """Whether ``v`` is a per-tensor DequantizeLinear's output of activations, directly or through
    :data:`PASSED_THROUGH` ops (their data input)."""
    seen = 0
    while v is not None and v.producer is not None and seen < 64:
        p = v.producer
        if p.op_type == "DequantizeLinear":
            return constant_array(p.inputs[0]) is None and _scalar_params(p) is not None
        if p.op_type not in PASSED_THROUGH or p.domain not in STANDARD_DOMAINS or not p.inputs:
            return False
        v, seen = p.inputs[0], seen + 1
    return False


def _to_quantize(v: Value | None, body: Graph) -> bool:
    """Whether a QuantizeLinear reads ``v``, directly or through :data:`PASSED_THROUGH` ops or Relu/Clip (which
    onnxruntime drops before a QuantizeLinear whose clamp makes them redundant), by their data input."""
    todo, seen = [v], 0
    while todo and seen < 256:
        v = todo.pop()
        seen += 1
        for r, i in v.uses if v is not None else []:
            if r.op_type == "QuantizeLinear" and i == 0:
                return True
            if (r.op_type in PASSED_THROUGH or r.op_type in RELU_LIKE) and r.domain in STANDARD_DOMAINS and i == 0:
                todo.extend(r.outputs)
    return False


def excluded_stay_float(graph: Graph, excluded: Sequence[Node]) -> int:
    """Keep onnxruntime from running the ``excluded`` nodes (the user's ``--exclude``, ``--exclude-op``,
    ``--exclude-regex``) on integers; returns the number of copies written. For target ort only.

    graphopt plans no excluded node and no layout rule rewrites one (``analysis.Plan.may_quantize``), but an excluded
    op between quantized neighbours reads a DequantizeLinear and is read by a QuantizeLinear, and onnxruntime's QDQ
    transformers fuse any such DQ -> op -> Q they recognise whatever graphopt planned: an Add or Mul into QLinearAdd
    or QLinearMul, a Sigmoid, LeakyRelu or Softmax into its QLinear op, a Concat into QLinearConcat, a MaxPool,
    Resize or Reshape into the same op on uint8 (measured, onnxruntime 1.32). So each activation input of an excluded
    node that a per-tensor DequantizeLinear makes is read through a :data:`KEEPS_FLOAT` copy (its DequantizeLinear
    then has no QDQ group with the node), and so is each output of an excluded data-movement op or MaxPool
    (:data:`PROPAGATED`) or Relu/Clip that a QuantizeLinear reads (onnxruntime would move that QuantizeLinear up
    over the op, or drop the Relu/Clip its clamp makes redundant);
    "makes" and "reads" through the ops onnxruntime removes or moves Q/DQ across (:data:`PASSED_THROUGH`). The
    values are the same; the price is one float copy of each such tensor. Conv/ConvTranspose/Gemm inputs are left to
    :func:`keep_float_layers` (their per-axis DequantizeLinear already stops the fusion)."""
    written = 0
    for n in excluded:
        body = n.graph
        if body is None or n.domain not in STANDARD_DOMAINS or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, v in enumerate(n.inputs):
            if v is None or v.const is not None or not _from_dequantize(v):
                continue  # not from activations' DequantizeLinear (a weight's, or a per-axis one: no fusion takes it)
            out = Value(body.unique_name(f"{v.name}_float"), v.dtype, v.shape)
            body.insert_before(n, Node(KEEPS_FLOAT, [v], outputs=[out], name=body.unique_name(f"{n.name}_float_in")))
            n.set_input(i, out)
            written += 1
        if n.op_type not in PROPAGATED and n.op_type not in RELU_LIKE:
            continue
        for y in n.outputs:
            if y is None or body.is_output(y) or not _to_quantize(y, body):
                continue
            out = Value(body.unique_name(f"{y.name}_float"), y.dtype, y.shape)
            body.replace_all_uses_with(y, out)
            body.insert_after(n, Node(KEEPS_FLOAT, [y], outputs=[out], name=body.unique_name(f"{n.name}_float_out")))
            written += 1
    return written
