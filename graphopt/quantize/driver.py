"""Int8 QDQ quantization of a model: calibrate, place Q/DQ for the target, measure, report.

``quantize_model`` runs on a model that has been through the lossless passes (BatchNorm and constants folded), as a
pipeline of stages over one ``_State``, each with one job:

1. ``_prepare``: the opset upgrade (per-channel Q/DQ needs 13), shape inference, ``analysis.plan`` (the nodes to
   quantize, the tensors to measure), the weight options (per channel, reduce range);
2. ``_smooth_activations``: SmoothQuant (``smoothquant.smooth`` with per-channel maxima from one more pass);
3. ``_calibrate``: ``calibration.collect`` runs onnxruntime over the calibration feeds (or reads the cache) and the
   chosen method turns the statistics into ranges;
4. ``_start_report``: the report's header and the float model's outputs (the reference of every error), or, where a
   selection op (NonMaxSuppression, TopK, ArgMax...) comes between the layers and the outputs, the tensors that feed
   it (``measured_points``, decided in ``_prepare``, which keeps the layers after it float);
5. ``_choose``: the per-layer choice (``choice.estimate`` in one pass, ``choice.choose``): static, dynamic int8 or
   float per layer, and per Concat one shared scale or float (``choice.concat_choices``, from the ranges);
   ``_run_guard`` (with ``max_error``): the accuracy guard (``_guard``) demotes the fewest layers, worst first, until
   the model's output error on the calibration set is at most ``max_error``;
6. ``_apply_choices``: the choices into the options (and smoothing again for the static layers alone if needed);
7. ``_rewrite``: ``transform.apply`` inserts the Q/DQ pairs and quantized weights; ``dynamic.quantize_dynamic_nodes``
   and ``embeddings.quantize_embeddings`` take the dynamic layers and the vocabulary tables (target ort, auto choice);
8. ``_measure``: per-layer SQNR (each quantized layer's dequantized output against the float model's), whether
   onnxruntime fused each layer into a QLinear op (read from its optimized graph, target ort), and the model's
   output error (the worst of the error pooled over the measured tensors and each part's own, ``output_parts``: each
   measured tensor, each Concat input's slice of one) and parameter bytes before and after;
9. ``_sqnr_fallback`` when the output SQNR is below the floor (the guard with the floor's error), else ``_finish``
   (the warnings).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from graphopt.core.ir import Model
from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.engine.pass_manager import PassManager
from graphopt.errors import GraphoptError
from graphopt.quantize import analysis, choice, smoothquant, transform
from graphopt.quantize import calibration as calib
from graphopt.quantize.report import LayerReport, QuantReport
from graphopt.tools import runtime
from graphopt.tools.summary import initializer_bytes, plural

logger = logging.getLogger("graphopt.quantize")

FUSED_OPS = frozenset(
    {
        "QLinearConv",
        "QLinearMatMul",
        "QGemm",
        "QLinearAdd",
        "QLinearMul",
        "QLinearConcat",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearConvTranspose",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
    }
)
"""onnxruntime's integer kernels: a layer whose computation ends up in one of these ran in int8."""

Progress = Callable[[str, int, int | None], None]

PER_CHANNEL_OPSET = 13
"""The first opset whose QuantizeLinear/DequantizeLinear take an ``axis`` (per-channel scales)."""
SMOOTH_ALPHA = 0.5
"""SmoothQuant's default alpha (see benchmarks/RESULTS-quantize.md for the sweep that chose it)."""
HEADROOM = 0.5
"""Default ``QuantizeConfig.headroom`` (issue 16: orinet and PP-LCNet's classifier on held-out images)."""
SLOW_SPEEDUP = 1.0
"""Target ort: an int8 model measured slower than this (fp32 time over int8 time) gets a warning."""
BODY_ONLY_REFUSE_SPEEDUP = 0.9
"""Target ort: an int8 model whose only quantizable layers sit in If/Loop/Scan bodies is refused when measured slower
than this; between it and :data:`SLOW_SPEEDUP` it is written with the warning. The margin keeps the exit code from
following the noise of one timing (chars2vec-en300 measured 0.28x-0.88x across runs on a shared 2-core machine)."""
SQNR_FLOOR_DB = 10.0
"""Below this output SQNR (a relative error above ~0.32: a third of the output is noise) the int8 model is flagged
and falls back layer by layer (the accuracy guard with the floor's error as its budget); see ``fallback``."""


@dataclass
class QuantizeConfig:
    """How to quantize. ``exclude`` entries match node names exactly; ``exclude_ops`` op types; ``exclude_regex``
    node names by ``re.search``. ``reduce_range`` None means: decide from the CPU (7-bit weights without VNNI)."""

    method: str = "percentile"
    percentile: float = 99.999
    headroom: float = HEADROOM
    """A tensor calibration saw few values of (at most ``few_values`` over all batches: pooled features, a classifier's
    fully connected layers) gets its range widened by this fraction at both ends (``calibration.widened``): its
    largest values on new inputs exceed the few calibrated ones. 0 keeps the calibrated ranges as they are."""
    few_values: int = calib.FEW_VALUES
    op_types: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    exclude_ops: Sequence[str] = ()
    exclude_regex: Sequence[str] = ()
    kept_float: Sequence[str] = ()
    """Node names the quantizer keeps float on its own (the layers after a selection op): no layers of the plan, but
    not the user's exclusions, which also bind the layout rules (``analysis.Plan.may_quantize``)."""
    per_channel: bool = True
    reduce_range: bool | None = None
    max_error: float | None = None
    cache: str | os.PathLike[str] | bool | None = True
    threads: int | None = None
    upgrade_opset: bool = True
    """Convert a model below opset 13 to opset 13 first (onnx's version converter): per-channel weight scales and
    TensorRT's Q/DQ need it; False keeps the model's opset and one weight scale per tensor."""
    sqnr_floor_db: float = SQNR_FLOOR_DB
    """Warn (naming the worst layers) when the quantized model's output SQNR on the calibration set is below this."""
    fallback: bool = True
    """Below ``sqnr_floor_db`` (and without ``max_error``), keep the most damaging layers float until the output SQNR
    reaches the floor (a bisection over the layers ranked by their estimated error, within ``fallback_runs`` and
    ``fallback_time``), and say so; False: write the int8 model as it is, with the warning only."""
    fallback_runs: int = 24
    """The SQNR floor's search: at most this many candidate models, each one run over the calibration set (all the
    demotable layers float, then rounds of bisection, each about log2(steps) runs and one layer found needed). Was 12,
    one round over a few dozen steps: on ppocrv5-det-op11 (9.7 dB all-int8) the search ran out with 23 layers float,
    where 24 runs find 2 (Conv.2, Conv.3) for the same 10.7 dB, in the same 13 s of the whole run (the search stops
    when a round finds no shorter set, well before the bound)."""
    fallback_time: float | None = None
    """... and, when set, at most this many times the plain quantize's time (with the percentile method's check,
    ``clip_check``, each of its two runs has this budget). None (the default): no time limit, so that the layers kept
    float, and the file written, depend on the model and the calibration data only, never on how loaded the machine
    is (a time limit of 2x made the kept set differ between runs of the same command under load); the run count
    above bounds the search."""
    guard_label: str = "--max-error"
    """How reasons and warnings name the accuracy guard's budget."""
    clip_check: bool = True
    """``percentile``: also quantize with the full (min to max) ranges and keep the model whose output error on the
    calibration set is lower (models up to :data:`CLIP_CHECK_MAX_BYTES` of weights); see ``_clipped_or_full``."""
    smooth_alpha: float | None = SMOOTH_ALPHA
    """SmoothQuant's migration strength for MatMul/Gemm with constant weights (None: no smoothing)."""
    measure_speed: bool = True
    """Target ort: time the final int8 model against the float one (1 thread, first calibration batch, a few runs)
    into ``QuantReport.speedup``, with a warning below :data:`SLOW_SPEEDUP`; False skips it (the accuracy guard's
    own measurement is still reported when it was made on the final model)."""
    smooth_mode: str = "mul"
    """``fold``: smooth only where the scales fold exactly into the producer; ``mul``: elsewhere insert a Mul."""
    layer_min_db: float = 40.0
    """Per-layer budget of the automatic choice: a layer whose own int8 SQNR estimate is below it is not static."""
    choice: str = "auto"
    """``auto``: per layer static int8, dynamic int8 or float from its estimated error; ``static``: every planned
    layer static int8 (the behaviour before the per-layer choice)."""

    @classmethod
    def of(cls, value: QuantizeConfig | Mapping[str, Any] | None) -> QuantizeConfig:
        if value is None:
            return cls()
        if isinstance(value, QuantizeConfig):
            return value
        unknown = sorted(set(value) - set(cls.__dataclass_fields__))
        if unknown:
            raise GraphoptError(f"unknown quantization option {unknown[0]!r}")
        return cls(**value)

    def selection(self, extra_names: Iterable[str] = ()) -> analysis.Selection:
        return analysis.Selection(
            op_types=frozenset(self.op_types) if self.op_types is not None else None,
            exclude_names=frozenset(self.exclude),
            exclude_ops=frozenset(self.exclude_ops),
            exclude_regex=tuple(self.exclude_regex),
            kept=frozenset(self.kept_float) | frozenset(extra_names),
        )


# --------------------------------------------------------------------------------------------------------------------
# CPU
# --------------------------------------------------------------------------------------------------------------------
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_vnni(cpuinfo: str | None = None) -> tuple[bool | None, str]:
    """Whether the CPU has VNNI int8 dot products (and which flag says so); None when it cannot be told."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None, "CPU flags unknown"
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            found = [f for f in VNNI_FLAGS if f in flags]
            return (True, found[0]) if found else (False, "no VNNI")
    return None, "CPU flags unknown"


def choose_reduce_range(config: QuantizeConfig, target: str) -> tuple[bool, str]:
    if target != "ort":
        return False, "target tensorrt: full int8 weights"
    if config.reduce_range is not None:
        return config.reduce_range, "set by the user"
    vnni, flag = cpu_vnni()
    if vnni:
        return False, f"CPU has VNNI ({flag}): full-range int8 weights"
    if vnni is None:
        return True, f"{flag}: 7-bit weights to avoid u8s8 saturation"
    return True, "CPU has no VNNI: 7-bit weights so u8s8 products cannot saturate"


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------
def _run(
    proto: onnx.ModelProto,
    feeds: Sequence[Mapping[str, np.ndarray]],
    names: Sequence[str] | None = None,
    optimization: str = "all",
    threads: int | None = None,
    sources: Sequence[str] | None = None,
) -> list[list[np.ndarray]]:
    sess = runtime.session(proto, threads=threads, optimization=optimization)
    return [runtime.run(sess, names, f, calib.sample_name(sources, i)) for i, f in enumerate(feeds)]


@dataclass(frozen=True)
class Part:
    """A part of a measured tensor whose error counts on its own (:func:`output_parts`): the ``index``-th measured
    tensor, ``[start:stop]`` along ``axis`` (``axis`` None: the whole tensor)."""

    index: int
    axis: int | None
    start: int
    stop: int
    label: str


LAYOUT_KEEPING = frozenset(
    {"Identity", "Cast", "Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "Neg", "Abs", "Exp", "HardSigmoid", "Erf"}
)
"""Elementwise ops of one input: an element keeps its place, so a Concat input's slice is the same slice after them
(Transpose too, with its axis permuted: :func:`output_parts`)."""


def output_parts(model: Model, measured: Measured | None) -> tuple[Part, ...]:
    """The parts of the measured tensors (the graph's outputs, or ``measured``'s points) whose error counts on its own
    in :func:`output_error`: each measured tensor when there are several, and each input's slice of one produced by a
    Concat (through elementwise ops and Transposes, :data:`LAYOUT_KEEPING`) when the Concat's axis and its inputs'
    sizes along it are known. A YOLO head's output ``[1, 4 + classes, anchors]`` joins boxes in pixels and scores in
    0..1: pooled over the tensor, the boxes' energy hides scores that int8 rounded to zero (the scores' slice, 0 dB,
    then sets the output error)."""
    graph = model.graph
    names = [v.name for v in graph.outputs] if measured is None else [t for _, _, t, _ in measured.points]
    producers = {o.name: n for n in graph for o in n.outputs if o is not None}
    parts: list[Part] = []
    for index, name in enumerate(names):
        if len(names) > 1:
            parts.append(Part(index, None, 0, 0, name))
        chain: list[Any] = []
        p = producers.get(name)
        while p is not None and (p.op_type in LAYOUT_KEEPING or p.op_type == "Transpose") and p.inputs:
            chain.append(p)
            src = p.inputs[0]
            p = producers.get(src.name) if src is not None else None
        if p is None or p.op_type != "Concat" or not p.outputs or p.outputs[0] is None:
            continue
        shape = p.outputs[0].shape
        if shape is None:
            continue
        axis = int(p.attr("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        sizes = [
            v.shape[axis] if v is not None and v.shape is not None and len(v.shape) == len(shape) else None
            for v in p.inputs
        ]
        if len(sizes) < 2 or not all(isinstance(d, int) for d in sizes):
            continue
        for t in reversed(chain):  # the Concat's axis as the measured tensor holds it
            if t.op_type == "Transpose":
                perm = list(t.attr("perm", None) or reversed(range(len(shape))))
                axis = perm.index(axis)
        start = 0
        for k, size in enumerate(sizes):
            if size:
                label = f"{name}[{':, ' * axis}{start}:{start + size}] (input {k + 1} of Concat {p.name})"
                parts.append(Part(index, axis, start, start + size, label))
            start += size
    return tuple(parts)


def output_error(
    reference: Sequence[Sequence[np.ndarray]],
    other: Sequence[Sequence[np.ndarray]],
    parts: Sequence[Part] = (),
) -> tuple[float, float]:
    """Relative L2 error (||other - ref|| / ||ref|| over all float outputs and batches) and the max abs error. With
    ``parts`` (:func:`output_parts`), the worst of that and each part's own relative error (pooled over the batches;
    a part whose reference is all zeros does not count): a part with little of the energy cannot hide behind the
    rest."""
    return _errors(reference, other, parts)[:2]


def _errors(
    reference: Sequence[Sequence[np.ndarray]], other: Sequence[Sequence[np.ndarray]], parts: Sequence[Part]
) -> tuple[float, float, float, str | None]:
    """:func:`output_error`'s two figures, then the relative error pooled over every measured tensor and the label of
    the part that sets the first figure (None: the pooled figure is the worst)."""
    signal = noise = 0.0
    max_abs = 0.0
    part_signal = [0.0] * len(parts)
    part_noise = [0.0] * len(parts)
    for ref_batch, got_batch in zip(reference, other, strict=True):
        for i, (a, b) in enumerate(zip(ref_batch, got_batch, strict=True)):
            a, b = np.asarray(a), np.asarray(b)
            if a.dtype.kind != "f":
                continue
            d = b.astype(np.float64) - a.astype(np.float64)
            signal += float(np.sum(np.square(a, dtype=np.float64)))
            noise += float(np.sum(np.square(d)))
            if d.size:
                max_abs = max(max_abs, float(np.max(np.abs(d))))
            for k, part in enumerate(parts):
                if part.index != i:
                    continue
                if part.axis is None:
                    ra, rd = a, d
                elif part.axis < a.ndim and a.shape == d.shape and part.stop <= a.shape[part.axis]:
                    cut = (slice(None),) * part.axis + (slice(part.start, part.stop),)
                    ra, rd = a[cut], d[cut]
                else:
                    continue
                part_signal[k] += float(np.sum(np.square(ra, dtype=np.float64)))
                part_noise[k] += float(np.sum(np.square(rd)))
    rel = math.sqrt(noise / signal) if signal > 0 else (0.0 if noise == 0 else float("inf"))
    worst, label = rel, None
    for k, part in enumerate(parts):
        if part_signal[k] > 0:
            r = math.sqrt(part_noise[k] / part_signal[k])
            if r > worst:
                worst, label = r, part.label
    return worst, max_abs, rel, label


def sqnr_db(rel_error: float) -> float:
    return float("inf") if rel_error == 0 else -20.0 * math.log10(rel_error)


# --------------------------------------------------------------------------------------------------------------------
# where the output error is measured: before the discontinuous selection ops
# --------------------------------------------------------------------------------------------------------------------
SELECTION_ORDER = ("NonMaxSuppression", "TopK", "ArgMax", "ArgMin", "NonZero", "Compress")
SELECTION_OPS = frozenset(SELECTION_ORDER)
"""Ops whose result jumps when their float input moves a little (a box score crossing a threshold or another box's,
a ranking changing): what depends on them (the indices, the data they gather, an If that holds one) is not a
continuous function of the quantized layers' outputs, so the output error is measured at the tensors that feed them."""
KEPT_FLOAT_AFTER = " (the layers after it stay float)"
"""The clause of :attr:`Measured.what` that is the int8 driver's (it keeps the selected part float); half precision
converts that part too and drops it."""
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
"""Ops that read only their input's shape: walking back from an integer input of the selection stops there."""
FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)


@dataclass(frozen=True)
class Measured:
    """Where the quantizer measures the model's output error (:func:`measured_points`): the main graph's tensors read
    at ``points``, looked up by the consumer's name in each quantized model (which may read the tensor after a Q/DQ
    pair); ``what`` says it in words, ``selections`` names the selection ops."""

    points: tuple[tuple[str, int, str, int], ...]
    """``(consumer, slot, tensor, elem_type)``: the consumer's explicit input ``slot`` (-1: a graph output or a
    name an If/Loop body reads) is ``tensor`` in the float model."""
    what: str
    selections: tuple[str, ...]
    selected: frozenset[str] = frozenset()
    """The names of the nodes in the selected part (and in their If/Loop bodies): no error is measured after them."""


def _implicit_inputs(node: onnx.NodeProto) -> list[str]:
    """The outer-scope names an If/Loop/Scan node's bodies read (recursively), in order."""
    out: dict[str, None] = {}

    def walk(g: onnx.GraphProto, bound: set[str]) -> None:
        bound = bound | {i.name for i in g.input} | {t.name for t in g.initializer}
        for n in g.node:
            for name in n.input:
                if name and name not in bound:
                    out[name] = None
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g, bound)
            bound |= set(n.output)

    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            walk(a.g, set())
        elif a.type == onnx.AttributeProto.GRAPHS:
            for g in a.graphs:
                walk(g, set())
    return list(out)


def _body_nodes(node: onnx.NodeProto) -> Iterator[onnx.NodeProto]:
    """The nodes of ``node``'s If/Loop/Scan bodies, nested ones too."""
    for a in node.attribute:
        for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for n in g.node:
                yield n
                yield from _body_nodes(n)


def _holds_selection(node: onnx.NodeProto) -> tuple[str, str] | None:
    """The first selection op in ``node`` or its bodies: its op type and how to name it, or None."""
    if node.op_type in SELECTION_OPS:
        return node.op_type, f"{node.op_type} '{node.name}'"
    for a in node.attribute:
        for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for n in g.node:
                found = _holds_selection(n)
                if found:
                    return found[0], f"{found[1]} inside {node.op_type} '{node.name}'"
    return None


def measured_points(proto: onnx.ModelProto, types: Mapping[str, int] | None = None) -> Measured | None:
    """Where to measure the output error of ``proto`` quantized: None (its outputs) unless a selection op
    (:data:`SELECTION_OPS`, also inside an If/Loop body) that reads data computed in float (which quantization error
    can reach: not an ArgMax of token ids) sits between its inputs and some of its outputs.

    Then the main graph splits in two: the selected part (every tensor computed from a selection op's outputs, or by an
    If/Loop that holds one in its bodies and returns integers alone, as an If around a NonMaxSuppression does) and the
    continuous rest. The error is measured at the continuous float tensors the selected part reads (the scores and
    boxes that NonMaxSuppression, TopK or a threshold's NonZero take, the data a Gather picks with their indices, the
    values an If holding a NonMaxSuppression reads), walking back through the integer/bool tensors it reads (a
    Greater's float input, not a Shape's), and at the outputs outside the selected part. A Loop with float outputs (a
    greedy decoder whose ArgMax picks the next step's token) is measured at those outputs: its inputs alone would hide
    every body layer's error. The driver keeps the layers of the selected part float (their error would not be
    measured). A model without selection ops is measured at its outputs, as before. ``types``: the
    element types of the main graph's tensors (the driver's shape inference's; onnx's when None)."""
    if types is None:
        proto = onnx.shape_inference.infer_shapes(proto)
    g = proto.graph
    types = dict(types or {})  # the element types (``proto``'s value_info where not given)
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    producer: dict[str, onnx.NodeProto] = {}
    selected: set[str] = set()
    region: list[tuple[onnx.NodeProto, list[str]]] = []
    selections: list[tuple[str, str]] = []
    tainted = {i.name for i in g.input}  # computed from the inputs' data (not only their shapes)
    noisy: set[str] = set()  # ... through a float computation: what quantization error can reach
    for n in g.node:
        reads = [*n.input, *_implicit_inputs(n)]
        if n.op_type not in SHAPE_ONLY_OPS and any(name in tainted for name in reads):
            tainted.update(n.output)
            from_noise = any(name in noisy for name in reads)
            noisy.update(o for o in n.output if o and (from_noise or types.get(o) in FLOAT_TYPES))
        held = _holds_selection(n) if any(name in noisy for name in reads) else None
        if (
            held
            and n.op_type not in SELECTION_OPS
            and any(types.get(o, 0) in FLOAT_TYPES or not types.get(o) for o in n.output if o)
        ):
            held = None  # a body's selection counts when the node returns indices alone (a decoder Loop: its outputs)
        if held or any(name in selected for name in reads):
            selected.update(o for o in n.output if o)
            region.append((n, reads))
            if held:
                selections.append(held)
        for o in n.output:
            producer[o] = n
    if not selections:
        return None
    points: dict[str, tuple[str, int]] = {}  # tensor -> the consumer and slot it is read at

    def reach(name: str, consumer: str, slot: int) -> None:
        if name in selected or name in points or name not in noisy:
            return  # the selection's own tensors; or no quantization error reaches it (constants, shapes, inputs)
        p = producer[name]
        elem = types.get(name)
        if elem in FLOAT_TYPES:
            points[name] = (consumer, slot)
        elif p.op_type not in SHAPE_ONLY_OPS:  # an integer/bool tensor computed from data: walk back
            points[name] = ("", -1)  # visited, dropped below
            reads = [*p.input, *_implicit_inputs(p)]
            for i, x in enumerate(reads):
                reach(x, p.name, i if i < len(p.input) else -1)

    for n, reads in region:
        for i, name in enumerate(reads):
            reach(name, n.name, i if i < len(n.input) else -1)
    floats = [(c, i, t, types[t]) for t, (c, i) in points.items() if types.get(t) in FLOAT_TYPES]
    outputs = [o.name for o in g.output if o.name not in selected and types.get(o.name) in FLOAT_TYPES]
    floats += [("", -1, o, types[o]) for o in outputs if o not in points]
    if not floats:
        return None
    kinds: dict[str, list[str]] = {}
    for op_type, label in selections:
        kinds.setdefault(op_type, []).append(label)
    named = ", ".join(
        labels[0] + (f" (and {len(labels) - 1} more)" if len(labels) > 1 else "")
        for _, labels in sorted(kinds.items(), key=lambda kv: SELECTION_ORDER.index(kv[0]))
    )
    feeding = len(floats) - sum(1 for o in outputs if o not in points)
    what = (
        f"the {feeding} tensor{'s' if feeding != 1 else ''} that feed{'' if feeding != 1 else 's'} {named}, before the "
        f"selection{KEPT_FLOAT_AFTER}"
    )
    if outputs:
        what += f", and the outputs {', '.join(outputs[:3])}{' ...' if len(outputs) > 3 else ''}"
    nodes = {n.name for n, _ in region if n.name}
    nodes |= {b.name for n, _ in region for b in _body_nodes(n) if b.name}
    return Measured(tuple(floats), what, tuple(label for _, label in selections), frozenset(nodes))


def _measured_for(model: Model) -> Measured | None:
    """:func:`measured_points` of ``model`` (named, shapes inferred); None at once without selection ops."""
    if not any(n.op_type in SELECTION_OPS for n in model.graph.all_nodes()):
        return None
    types = {v.name: v.dtype for n in model.graph for v in n.outputs if v is not None and v.dtype}
    types.update({v.name: v.dtype for v in model.graph.inputs if v.dtype})
    return measured_points(model.to_onnx(), types)


def _measured_outputs(
    proto: onnx.ModelProto, measured: Measured, types: Mapping[str, int] | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``proto`` (the float model or a quantized one) with the tensors at ``measured``'s points as its
    outputs, and their names: what each consumer reads at its slot (after a Q/DQ pair in a quantized model), else the
    float model's tensor. Each output is declared with the float model's element type, or ``proto``'s own from
    ``types`` (an fp16 model reads a float16 tensor there: onnxruntime refuses an output declared otherwise)."""
    out = _copy(proto)
    by_name = {n.name: n for n in out.graph.node if n.name}
    have = {o.name for o in out.graph.output}
    names = []
    for consumer, slot, tensor, elem in measured.points:
        n = by_name.get(consumer)
        name = n.input[slot] if n is not None and 0 <= slot < len(n.input) and n.input[slot] else tensor
        names.append(name)
        if name not in have:
            elem = (types or {}).get(name) or elem
            out.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
            have.add(name)
    return out, names


def _measured_run(
    proto: onnx.ModelProto,
    batches: Sequence[Mapping[str, np.ndarray]],
    measured: Measured | None,
    threads: int | None,
    sources: Sequence[str] | None = None,
    types: Mapping[str, int] | None = None,
) -> list[list[np.ndarray]]:
    """``proto``'s values where the output error is measured (:func:`measured_points`; its outputs when None), per
    batch: the one run every measuring stage makes. ``types``: ``proto``'s element types where they differ from the
    float model's (:func:`_measured_outputs`)."""
    if measured is None:
        return _run(proto, batches, threads=threads, sources=sources)
    exposed, names = _measured_outputs(proto, measured, types)
    return _run(exposed, batches, names, threads=threads, sources=sources)


def _where(measured: Measured | None) -> str:
    """`` (measured at ...)`` for the notes, empty for a model measured at its outputs."""
    return f" (measured at {measured.what})" if measured is not None else ""


# --------------------------------------------------------------------------------------------------------------------
# the entry point: a pipeline of stages over one state
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class _State:
    """What the stages of :func:`quantize_model` share. Each stage reads what the ones before it set and sets its own
    fields; the fields without a default are set by the stage named in their comment."""

    model: Model
    batches: list[dict[str, np.ndarray]]
    target: str
    cfg: QuantizeConfig
    progress: Progress | None
    sources: Sequence[str] | None
    notes: list[str] = field(default_factory=list)
    """Warnings for the user (logged and put in the report at the end)."""
    timings: dict[str, float] = field(default_factory=dict)
    param_bytes_in: int = 0
    """The initializer bytes of the model as the quantizer received it (set by :func:`_pipeline` before any stage:
    the opset upgrade and SmoothQuant add weights, the old ones dropped only by the rewrite's clean-up)."""
    written: set[Path] = field(default_factory=set)
    """The calibration cache files this quantization wrote (shared by the two runs of ``_clipped_or_full``): a cache
    hit on one of them is this run's own statistics read back, not a cache entry that existed before the run."""
    from_cache: bool = False
    """The last calibration's statistics came from a cache entry that existed before this quantization (the report
    says it of the first one, which ``_start_report`` follows)."""
    upgraded: tuple[int, int] | None = None
    measured: Measured | None = None
    """Where the output error is measured (:func:`measured_points`, set by ``_prepare``): None, the outputs."""
    # _prepare
    opset: int = field(init=False)
    selection: analysis.Selection = field(init=False)
    plan: analysis.Plan = field(init=False)
    producers: frozenset[str] = field(init=False)
    """The planned layers that write int8 data (all but the scale-sharing ops): SmoothQuant puts no Mul after them."""
    reduce_range: bool = field(init=False)
    reduce_range_reason: str = field(init=False)
    per_channel: bool = field(init=False)
    options: transform.Options = field(init=False)
    original: onnx.ModelProto = field(init=False)
    """The float model (after the opset upgrade), before smoothing."""
    # _smooth_activations
    smoothed: list[smoothquant.Smoothed] = field(default_factory=list)
    absmax: dict[str, np.ndarray] = field(default_factory=dict)
    base: onnx.ModelProto = field(init=False)
    """The float model the quantized one is measured against layer by layer (smoothed where it was)."""
    # _calibrate
    calibrated: calib.Calibration = field(init=False)
    ranges: dict[str, tuple[float, float]] = field(init=False)
    calibrated_ranges: dict[str, tuple[float, float]] = field(init=False)
    """The ranges as calibrated, before ``headroom``: the per-layer choice judges each layer's own rounding error by
    them (the headroom is a margin for new inputs, and the calibration set would only see its cost)."""
    # _start_report
    report: QuantReport = field(init=False)
    reference: list[list[np.ndarray]] = field(init=False)
    parts: tuple[Part, ...] = ()
    """The parts of the measured tensors whose error counts on its own (:func:`output_parts`, set after
    ``_start_report``)."""
    # _choose and _run_guard
    estimates: dict[str, choice.Estimate] = field(default_factory=dict)
    chosen: dict[str, choice.Choice] = field(default_factory=dict)
    alone: dict[str, float] = field(default_factory=dict)
    """Per layer: the model's output SQNR with it alone in int8 (guard) or its own int8 SQNR estimate."""
    # _apply_choices
    excluded: list[str] = field(default_factory=list)
    # _rewrite
    layers: list[analysis.Layer] = field(default_factory=list)
    extra: list[LayerReport] = field(default_factory=list)
    guard_speed: float | None = None
    """The accuracy guard's speed-up of the plain int8 model, when the final model is that one (no demotion)."""

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0


def quantize_model(
    model: Model,
    feeds: Iterable[Mapping[str, np.ndarray]],
    target: str = "ort",
    config: QuantizeConfig | Mapping[str, Any] | None = None,
    *,
    progress: Progress | None = None,
    sources: Sequence[str] | None = None,
) -> QuantReport:
    """Quantize ``model`` in place to int8 QDQ for ``target`` (``ort`` or ``tensorrt``); returns the report.

    ``sources`` names where each feed came from (its file) in errors."""
    cfg = QuantizeConfig.of(config)
    analysis.check_exclusions(model, cfg)
    batches = _checked_feeds(model, feeds, cfg, sources)
    if cfg.method == "percentile" and cfg.clip_check and initializer_bytes(model) <= CLIP_CHECK_MAX_BYTES:
        return _clipped_or_full(model, batches, target, cfg, progress, sources)  # two runs of the pipeline
    return _pipeline(model, batches, target, cfg, progress, sources).report


def _pipeline(
    model: Model,
    batches: list[dict[str, np.ndarray]],
    target: str,
    cfg: QuantizeConfig,
    progress: Progress | None,
    sources: Sequence[str] | None,
    written: set[Path] | None = None,
) -> _State:
    """The stages of :func:`quantize_model` on checked feeds; the state they leave (its ``report`` is the result).
    ``written``: the calibration cache files an earlier run of the same quantization wrote (updated in place)."""
    st = _State(model, batches, target, cfg, progress, sources, param_bytes_in=initializer_bytes(model))
    if written is not None:
        st.written = written
    _prepare(st)  # opset upgrade, the plan, weight options
    _smooth_activations(st)  # SmoothQuant
    _calibrate(st)  # activation ranges
    _start_report(st)  # the report's header, the float model's outputs
    st.parts = output_parts(st.model, st.measured)  # a Concat's inputs' slices of a measured tensor count alone
    _choose(st)  # per layer: static, dynamic int8 or float
    if cfg.max_error is not None:
        _run_guard(st)  # demote the fewest layers to meet max_error
    _apply_choices(st)  # smooth again for the static layers alone where some are not static
    _rewrite(st)  # Q/DQ pairs, dynamic layers, int8 tables
    _measure(st)  # output error, per-layer SQNR, onnxruntime's fusions
    if st.report.sqnr_db < cfg.sqnr_floor_db and cfg.fallback and cfg.max_error is None:
        _sqnr_fallback(st)
    else:
        _finish(st)
    return st


def _checked_feeds(
    model: Model, feeds: Iterable[Mapping[str, np.ndarray]], cfg: QuantizeConfig, sources: Sequence[str] | None
) -> list[dict[str, np.ndarray]]:
    """The options, the model and the calibration batches checked; the batches as a list."""
    if cfg.method not in calib.METHODS:
        raise GraphoptError(f"unknown calibration method {cfg.method!r} (choose from {', '.join(calib.METHODS)})")
    if not 0.0 < cfg.percentile <= 100.0:
        raise GraphoptError(f"percentile must be in (0, 100], got {cfg.percentile}")
    if not (math.isfinite(cfg.headroom) and cfg.headroom >= 0.0):
        raise GraphoptError(f"headroom must be a finite fraction >= 0, got {cfg.headroom}")
    if isinstance(cfg.few_values, bool) or not isinstance(cfg.few_values, int) or cfg.few_values < 0:
        raise GraphoptError(f"few_values must be a count >= 0, got {cfg.few_values!r}")
    if cfg.max_error is not None and not cfg.max_error > 0:
        raise GraphoptError(f"max error must be positive, got {cfg.max_error}")
    if cfg.choice not in ("auto", "static"):
        raise GraphoptError(f"unknown layer choice {cfg.choice!r} (choose from auto, static)")
    if not model.graph.outputs:
        raise GraphoptError("nothing to quantize: the model has no outputs")
    batches = [dict(f) for f in feeds]
    if not batches:
        raise GraphoptError("no calibration data: the calibration set is empty")
    for i, feed in enumerate(batches):
        calib.check_feed(model, feed, calib.sample_name(sources, i))
    found = analysis.quantized_ops(model.graph)
    if found:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:4])
        raise GraphoptError(
            f"the model is already quantized ({ops}): graphopt does not quantize a quantized model again; "
            "give it the float model"
        )
    return batches


def _prepare(st: _State) -> None:
    """Upgrade the opset for per-channel Q/DQ where needed, type the activations, plan the layers, choose the weight
    options (per channel, reduce range); keep the float model."""
    cfg, model, target = st.cfg, st.model, st.target
    opset = model.opset("") or 0
    if opset < PER_CHANNEL_OPSET and cfg.upgrade_opset and (cfg.per_channel or target == "tensorrt"):
        problem = _upgrade_opset(model, PER_CHANNEL_OPSET)
        if problem is None:
            st.upgraded = (opset, PER_CHANNEL_OPSET)
            logger.info("opset %d converted to %d for per-channel Q/DQ", opset, PER_CHANNEL_OPSET)
            opset = PER_CHANNEL_OPSET
        else:
            st.notes.append(f"opset {opset} kept (onnx's version converter failed: {problem})")
    if opset < 10:
        raise GraphoptError(f"nothing to quantize: opset {opset} has no QuantizeLinear (10 or later needed)")
    st.opset = opset
    with st.timed("plan"):
        model.graph.name_unnamed_nodes()
        infer_shapes(model)
        st.measured = _measured_for(model)
        if st.measured is not None:  # the layers after a selection stay float: their error is not measured
            cfg = st.cfg = dataclasses.replace(cfg, kept_float=(*cfg.kept_float, *sorted(st.measured.selected)))
        st.selection = cfg.selection()
        st.plan = analysis.plan(model.graph, target, st.selection)
        if not any(n.op_type not in analysis.SHARE for n in st.plan.nodes):
            half = analysis.float16_layers(model.graph)
            if half:
                raise GraphoptError(
                    f"nothing to quantize: the model computes in float16 ({half} Conv/ConvTranspose/Gemm/MatMul "
                    "layers take float16 data); int8 quantization starts from float32 layers: give it the float32 "
                    "model"
                )
            raise GraphoptError(
                f"nothing to quantize: no float {'/'.join(sorted(analysis.LINEAR))} or other quantizable op "
                f"(target {target}) outside the exclusions"
            )
        st.producers = frozenset(n.name for n in st.plan.nodes if n.name and n.op_type not in analysis.SHARE)
        st.reduce_range, st.reduce_range_reason = choose_reduce_range(cfg, target)
        st.per_channel = cfg.per_channel and opset >= PER_CHANNEL_OPSET
        if cfg.per_channel and opset < PER_CHANNEL_OPSET:
            st.notes.append(f"opset {opset} has no per-axis QuantizeLinear: weights get one scale per tensor")
        st.options = transform.Options(per_channel=st.per_channel, reduce_range=st.reduce_range)
        st.original = model.to_onnx()


def _smooth_activations(st: _State) -> None:
    """SmoothQuant (unless off): per-channel activation maxima in one pass, scales folded or as a Mul; re-plan."""
    if st.cfg.smooth_alpha is not None:
        with st.timed("smooth"):
            st.smoothed, st.absmax = _smooth(st.model, st.plan, st.batches, st.cfg, st.sources, st.producers)
            if st.smoothed:
                infer_shapes(st.model)
                st.plan = analysis.plan(st.model.graph, st.target, st.selection)
    st.base = st.model.to_onnx() if st.smoothed else st.original


def _calibrate(st: _State) -> None:
    """Activation statistics over the calibration batches (or the cache), turned into ranges by the method."""
    cfg, progress = st.cfg, st.progress
    with st.timed("calibrate"):
        st.calibrated = calib.collect(
            st.model,
            st.plan.tensors,
            st.batches,
            cache=cfg.cache,
            threads=cfg.threads,
            progress=(lambda done, total: progress("calibrating", done, total)) if progress else None,
            sources=st.sources,
        )
    found = st.calibrated.cache_file
    st.from_cache = st.calibrated.cached and found not in st.written
    if found is not None and not st.calibrated.cached:
        st.written.add(found)
    symmetric = st.target == "tensorrt"
    st.calibrated_ranges = st.calibrated.ranges(cfg.method, cfg.percentile, symmetric=symmetric)
    st.ranges = st.calibrated.ranges(
        cfg.method, cfg.percentile, symmetric=symmetric, headroom=cfg.headroom, few=cfg.few_values
    )


def _start_report(st: _State) -> None:
    """The report's header (what was decided so far) and the float model's outputs, the reference of every error."""
    cfg = st.cfg
    st.report = QuantReport(
        target=st.target,
        method=cfg.method,
        percentile=cfg.percentile,
        batches=len(st.batches),
        cached=st.from_cache,
        cache_file=str(st.calibrated.cache_file) if st.calibrated.cache_file else None,
        reduce_range=st.reduce_range,
        reduce_range_reason=st.reduce_range_reason,
        per_channel=st.per_channel,
        param_bytes_before=st.param_bytes_in,
        opset_upgraded=st.upgraded,
        smoothed=st.smoothed,
        smooth_alpha=cfg.smooth_alpha if st.smoothed else None,
    )
    with st.timed("reference"):
        st.reference = _measured_run(st.original, st.batches, st.measured, cfg.threads, st.sources)
    st.report.measured_at = st.measured.what if st.measured is not None else None


def _choose(st: _State) -> None:
    """The per-layer choice (automatic choice, target ort) or the estimates the accuracy guard ranks by: every planned
    layer gets a mode and a reason. Target tensorrt has no dynamic int8, and its Q/DQ placement rules are about the
    whole graph: every planned layer stays static there (the guard may still keep some float)."""
    cfg, target, model = st.cfg, st.target, st.model
    auto = cfg.choice == "auto" and target == "ort"
    if not (auto or cfg.max_error is not None):
        return
    with st.timed("choose"):
        st.estimates = estimates = choice.estimate(
            model,
            st.plan,
            st.calibrated_ranges,
            st.batches,
            per_channel=st.per_channel,
            reduce_range=st.reduce_range,
            threads=cfg.threads,
            convolutions=cfg.max_error is not None,
        )
        if auto:
            # a Concat whose one shared scale is too coarse for an input stays float (its inputs keep their scales)
            concats = choice.concat_choices([n for n in st.plan.nodes if n.graph is model.graph], st.ranges)
            chosen = choice.choose(
                estimates,
                cfg.layer_min_db,
                dynamic=target == "ort",
                target=target,
                graph=model.graph,
                static_ops={
                    n.name
                    for n in st.plan.nodes
                    if n.name not in estimates
                    and n.op_type not in analysis.SHARE
                    and (n.name not in concats or concats[n.name].mode == "static")
                },
            )
            chosen.update(concats)
        else:
            chosen = {k: choice.Choice(k, e.op_type, "static", "--layer-choice static") for k, e in estimates.items()}
        for n in st.plan.nodes:
            if n.op_type not in analysis.SHARE and n.name and n.name not in chosen:
                why = KEPT_STATIC if n.graph is model.graph else BODY_STATIC
                chosen[n.name] = choice.Choice(n.name, n.op_type, "static", why)
        if auto:  # the speed rule: convolutions onnxruntime runs faster float (choice.CONV_SPEED)
            shapes = choice.feed_shapes(model, st.batches[0] if st.batches else None)
            chosen.update(choice.speed_choices(model.graph, chosen, shapes=shapes))
        st.chosen = chosen
        st.alone = {k: e.static_db for k, e in estimates.items()}


def _smoothed_base(st: _State) -> Callable[[Mapping[str, str]], onnx.ModelProto]:
    """For the guard: the float model each set of modes quantizes, smoothed for its static layers only (as the end
    does); one smoothing per set of static layers."""
    cache: dict[frozenset[str], onnx.ModelProto] = {}

    def base_for(modes: Mapping[str, str]) -> onnx.ModelProto:
        static = frozenset(k for k, m in modes.items() if m in ("static", "static-float-output"))
        if all(set(sm.layers) <= static for sm in st.smoothed):
            return st.base
        if static not in cache:
            m = from_proto(st.original)
            infer_shapes(m)
            smoothquant.smooth(
                m.graph,
                st.absmax,
                float(st.cfg.smooth_alpha),  # type: ignore[arg-type]
                mode=st.cfg.smooth_mode,
                allowed=set(static),
                int8_producers=st.producers,
            )
            cache[static] = m.to_onnx()
        return cache[static]

    return base_for


def _run_guard(st: _State) -> None:
    """The accuracy guard of ``max_error`` (:func:`_guard`): the choices it demoted, the layers it kept float, and a
    note when the budget was not reached."""
    cfg = st.cfg
    before = dict(st.chosen)
    with st.timed("sensitivity"):
        st.chosen, kept, met, speed = _guard(
            _smoothed_base(st),
            st.target,
            st.selection,
            st.ranges,
            st.options,
            st.batches,
            st.reference,
            cfg,
            st.original,
            st.chosen,
            st.estimates,
            st.alone,
            plain_seconds=sum(st.timings.values()),
            measured=st.measured,
            parts=st.parts,
            dynamic=cfg.choice == "auto" and st.target == "ort",
            reduce_range=st.reduce_range,
            progress=st.progress,
        )
        st.report.kept_float = kept
        if speed is not None and all(c.reason == st.chosen[k].reason for k, c in before.items()):
            st.guard_speed = speed  # measured on the plain model, which is the final one: no demotion
        if not met:
            st.notes.append(
                f"{cfg.guard_label} {cfg.max_error:g}{_where(st.measured)} not reached by the layers the guard may "
                f"demote (with a plain int8 model >= {GUARD_MIN_SPEEDUP:g}x faster than fp32, at most "
                f"{choice.FLOAT_MAC_SHARE:.0%} of the "
                "multiply-adds go float); the closest model is written"
            )


def _apply_choices(st: _State) -> None:
    """The choices into the transform's options and the report; where a smoothed layer is no longer static,
    smooth again from the float model for the static layers alone and recalibrate (smoothing serves static layers
    only: a dynamic one quantizes its input at run time, a float one not at all)."""
    if not st.chosen:
        return
    cfg, report = st.cfg, st.report
    with st.timed("choose"):
        chosen = st.chosen.values()
        st.excluded = [c.name for c in chosen if c.mode in ("float", "dynamic")]
        st.options.float_outputs = frozenset(c.name for c in chosen if c.mode == "static-float-output")
        report.choices = list(chosen)
        static = {c.name for c in chosen if c.mode in ("static", "static-float-output")}
        if any(not set(sm.layers) <= static for sm in st.smoothed):
            st.model.take_contents(from_proto(st.original))
            infer_shapes(st.model)
            st.smoothed = smoothquant.smooth(
                st.model.graph,
                st.absmax,
                float(cfg.smooth_alpha),  # type: ignore[arg-type]
                mode=cfg.smooth_mode,
                allowed=static,
                int8_producers=st.producers,
            )
            infer_shapes(st.model)
            st.plan = analysis.plan(st.model.graph, st.target, st.selection)
            st.base = st.model.to_onnx()
            _calibrate(st)
            report.smoothed = st.smoothed
            report.smooth_alpha = cfg.smooth_alpha if st.smoothed else None


def _rewrite(st: _State) -> None:
    """Insert the Q/DQ pairs and int8 weights of the static layers; quantize the dynamic layers and the embedding
    tables (target ort, automatic choice); drop the float weights nothing reads any more."""
    cfg, model, target = st.cfg, st.model, st.target
    with st.timed("insert"):
        final_plan = analysis.plan(model.graph, target, cfg.selection(st.excluded)) if st.excluded else st.plan
        st.layers = transform.apply(model.graph, final_plan, st.ranges, st.opset, st.options)
        if st.chosen and target == "ort":
            dynamic = {c.name: c.reason for c in st.chosen.values() if c.mode == "dynamic"}
            st.extra = _dynamic_and_tables(model, dynamic, cfg, st.reduce_range, st.batches)
        PassManager("dce,remove-unused").run(model, target=target)
    if not st.layers and not any(x.mode for x in st.extra):
        planned = {n.name for n in st.plan.nodes if n.op_type not in analysis.SHARE}
        if planned and planned <= {c.name for c in st.chosen.values() if c.mode == "float"}:
            raise GraphoptError(
                f"nothing to quantize: every quantizable layer ({len(planned)}) is kept float by the per-layer "
                "choice or the accuracy guard"
            )
        raise GraphoptError("nothing to quantize: calibration measured none of the quantizable layers' inputs")


def _measure(st: _State) -> None:
    """The quantized model's output error on the calibration set, each layer's SQNR against the float model's, and
    (target ort) which layers onnxruntime fused into integer kernels; the per-layer rows of the report."""
    report, target, chosen = st.report, st.target, st.chosen
    with st.timed("measure"):
        quantized = st.model.to_onnx()
        got = _measured_run(quantized, st.batches, st.measured, st.cfg.threads)
        report.error_rel, report.error_max_abs, pooled, report.error_part = _errors(st.reference, got, st.parts)
        report.sqnr_db = sqnr_db(report.error_rel)
        report.pooled_sqnr_db = sqnr_db(pooled) if report.error_part else None
        report.param_bytes_after = initializer_bytes(st.model)
        layer_sqnr = _layer_sqnr(st.base, quantized, st.layers, st.batches, st.cfg.threads)
        fused: dict[str, str] | None = {}
        if target == "ort":
            try:
                fused = _fused_layers(quantized, st.layers)
            except Exception as exc:  # noqa: BLE001 - the report then says "unknown" rather than failing the run
                logger.warning("could not read onnxruntime's optimized graph: %s", exc)
                fused = None
        for layer in st.layers:
            f = fused.get(layer.name) if fused is not None else None
            report.layers.append(
                LayerReport(
                    name=layer.name,
                    op_type=layer.op_type,
                    input_scale=layer.input_scale,
                    weight_scale=layer.weight_scale,
                    output_scale=layer.output_scale,
                    absorbed=layer.absorbed,
                    sqnr_db=layer_sqnr.get(layer.name),
                    alone_sqnr_db=st.alone.get(layer.name),
                    fused=None if target != "ort" or fused is None else f is not None,
                    fused_as=f,
                    mode=chosen[layer.name].mode if layer.name in chosen else "static",
                    note=chosen[layer.name].reason if layer.name in chosen else None,
                )
            )
        report.layers.extend(st.extra)
    report.seconds = st.timings


def _finish(st: _State) -> QuantReport:
    """Flag an output SQNR below the floor (naming the worst layers), log the notes, put them in the report."""
    report, cfg = st.report, st.cfg
    if st.target == "ort":
        _speed_stage(st, cfg.measure_speed)  # before the floor's note: a body-float retry may change the SQNR
    note = _floor_note(st)
    if note:
        st.notes.append(note)
    for note in st.notes:
        logger.warning("%s", note)
    report.warnings = st.notes
    return report


def _floor_note(st: _State) -> str | None:
    """The warning for an output SQNR below the floor, naming the worst layers (None: at or above the floor)."""
    report, cfg = st.report, st.cfg
    if not report.sqnr_db < cfg.sqnr_floor_db:
        return None
    rated = sorted((x.sqnr_db, x.name) for x in report.layers if x.sqnr_db is not None and x.sqnr_db == x.sqnr_db)
    worst = ", ".join(f"{name} ({db:.1f} dB)" for db, name in rated[:3]) or "no per-layer figures"
    return (
        f"the int8 model's output SQNR{_where(st.measured)} is {report.sqnr_db:.1f} dB on the calibration set "
        "(relative error "
        f"{report.error_rel:.3g}), below {cfg.sqnr_floor_db:g} dB: it may be unusable; worst layers: {worst} "
        "(keep them float with --exclude, or use --max-error)"
    )


def _sqnr_fallback(st: _State) -> QuantReport:
    """The whole-int8 model is below the SQNR floor: keep the layers that do the damage float, within a budget.

    The layers are ranked by their estimated int8 error (``choice.estimate``, convolutions included: one pass) into
    the guard's demotion steps (``choice.demotions``: static to dynamic where it can, then to float); then one model
    run with every step taken (all the layers the guard may demote, float) and rounds of bisection between none (the
    plain model: below the floor) and all (at the floor) for the fewest steps that reach the floor's relative error
    (``_FloorSearch.search``). Each candidate costs one model run over the calibration set; the search stops at
    ``fallback_runs`` candidates (or, when set, at ``fallback_time`` times the plain quantize's time), and then keeps
    the smallest set of steps found that meets the floor, with a warning that names the worst layers and says the
    budget ran out.
    When even all steps taken stay below the floor (or would leave nothing quantized), the all-int8 model is written
    with the warning naming the worst layers."""
    cfg, report = st.cfg, st.report
    limit = 10.0 ** (-cfg.sqnr_floor_db / 20.0)
    all_int8 = report.sqnr_db
    plain_seconds = sum(st.timings.values())
    start = time.perf_counter()
    # the final rewrite and measurement are part of the budget: the search ends that much earlier
    final_seconds = st.timings.get("insert", 0.0) + st.timings.get("measure", 0.0)
    seconds = max(cfg.fallback_time * plain_seconds - final_seconds, FALLBACK_MIN_SECONDS) if cfg.fallback_time else 0.0
    deadline = start + seconds if cfg.fallback_time is not None else math.inf
    logger.info("output SQNR %.1f dB: keeping the most damaging layers float", all_int8)
    search = _FloorSearch(st, limit)
    with st.timed("fallback"):
        if st.progress:
            st.progress(FLOOR_STAGE, 0, search.bound)  # the bar shows while the layers are ranked
        steps = search.rank()
        taken, out_of_budget = search.search(steps, deadline)
        if st.progress and search.runs < search.bound:
            st.progress(FLOOR_STAGE, search.bound, search.bound)  # the search ended before its bound
    if taken is None:
        if steps:
            st.notes.append(
                f"keeping every layer the SQNR floor's search may demote float ({len(steps)} steps) still leaves an "
                f"output SQNR of {sqnr_db(search.errors[len(steps)]):.1f} dB: the error is not in those layers; "
                "the all-int8 model is written"
            )
        return _finish(st)

    def budget_note() -> str:
        worst = ", ".join(
            f"{name} ({search.estimates[name].static_db:.1f} dB alone{', needed' if name in search.needed else ''})"
            if name in search.estimates
            else f"{name} (needed)"
            for name in search.worst(steps, 3)
        )
        bound = f"at most {cfg.fallback_runs} runs"
        if cfg.fallback_time is not None:
            bound += f" and {cfg.fallback_time:g}x the plain quantize's {plain_seconds:.1f} s"
        return (
            f"the SQNR floor's layer search ran out of its budget ({search.runs} model runs in "
            f"{time.perf_counter() - start:.1f} s; {bound}); the worst layers: {worst or 'none estimated'}"
        )

    label = f"the SQNR floor of {cfg.sqnr_floor_db:g} dB (a relative error of)"
    chosen = dict(search.chosen)
    for name, mode in search.modes(taken).items():
        old = search.chosen[name]
        if mode != old.mode:
            chosen[name] = choice.Choice(name, old.op_type, mode, f"{label} {limit:g}: {old.mode} -> {mode}")
    kept = list(dict.fromkeys(n for n, _ in taken if chosen[n].mode == "float" and search.chosen[n].mode != "float"))
    # quantize again from the float model with those modes (the plain model is kept if nothing would stay int8)
    plain_proto, plain_layers, plain_choices = st.model.to_onnx(), report.layers, report.choices
    plain_state = _stage_fields(st)
    _restore_float(st)
    st.chosen, st.estimates = chosen, search.estimates
    st.alone = {name: e.static_db for name, e in search.estimates.items()}
    report.layers, report.kept_float = [], kept
    try:
        _apply_choices(st)
        _rewrite(st)
    except GraphoptError:
        st.model.take_contents(from_proto(plain_proto))
        report.layers, report.choices, report.kept_float = plain_layers, plain_choices, []
        _set_stage_fields(st, plain_state)  # the later stages (the body-float retry) start from the plain model's
        if out_of_budget:
            st.notes.append(
                f"{budget_note()}: no model found that meets the floor with a layer left int8 (every layer it may "
                "demote float); the all-int8 model is written"
            )
        else:
            st.notes.append("only an all-float model meets the SQNR floor: the all-int8 model is written")
        return _finish(st)
    _measure(st)
    demoted = [f"{c.name} ({c.mode})" for c in report.choices if c.reason.startswith(label)]
    st.notes.append(
        f"the all-int8 model's output SQNR{_where(st.measured)} was {all_int8:.1f} dB on the calibration set, below "
        f"{cfg.sqnr_floor_db:g} dB: {len(demoted)} most damaging layers demoted "
        f"({', '.join(demoted[:3])}{', ...' if len(demoted) > 3 else ''}), output SQNR now {report.sqnr_db:.1f} dB"
    )
    if out_of_budget:
        st.notes.append(f"{budget_note()}: {len(kept)} layers kept float, perhaps more than needed")
    return _finish(st)


def speed_note(report: QuantReport) -> str | None:
    """The warning for an int8 model measured slower than :data:`SLOW_SPEEDUP` times fp32 (None otherwise): the
    figure, how it was measured, and what the model keeps outside integer kernels."""
    if report.speedup is None or not report.speedup < SLOW_SPEEDUP:
        return None
    floats = ({c.name for c in report.choices if c.mode == "float"} | set(report.kept_float)) - set(report.float_fused)
    unfused = sum(1 for layer in report.layers if layer.fused is False)
    why = [f"{plural(len(floats), 'layer')} kept float (each a float island between Q/DQ pairs)"] if floats else []
    if unfused:
        why.append(f"{unfused} of {len(report.layers)} quantized layers not fused into integer kernels")
    why.append("Q/DQ per-op overhead")
    return (
        f"the int8 model is {report.speedup:.2f}x the speed of fp32 under onnxruntime (1 thread, on the first "
        f"calibration batch): {', '.join(why)}; consider --quantize-ops for the heavy layers only, or keeping fp32"
    )


BODY_FLOAT = "float (inside {owner} body: the int8 model was slower than fp32)"
"""The reason of a layer in an If/Loop body that the body-float retry (:func:`_body_float_retry`) kept float."""


def _speed_stage(st: _State, measure: bool) -> None:
    """Target ort: the int8 model's speed-up over fp32 (the accuracy guard's figure when it was made on this model,
    else measured when ``measure``); below :data:`SLOW_SPEEDUP`, the body-float retry; the slow-model warning."""
    report = st.report
    if report.speedup is None:
        report.speedup = st.guard_speed
    if report.speedup is None and measure:
        with st.timed("speed"):
            report.speedup = _speedup(st.original, st.model.to_onnx(), st.batches[0])
    if measure:
        _body_float_retry(st)
    report.float_fused = _float_fused(st)
    note = speed_note(report)
    if note:
        st.notes.append(note)


def _float_fused(st: _State) -> dict[str, str]:
    """The float layers of the report (the per-layer choice's, the accuracy guard's) that onnxruntime runs as an
    integer op: the graph's structure says so (``qdq_rules.runs_as_integer``) and onnxruntime's optimized graph has
    that op under the layer's name (one session, only when the structure names some)."""
    from graphopt.quantize.qdq_rules import runs_as_integer

    report = st.report
    floats = {c.name for c in report.choices if c.mode == "float"} | set(report.kept_float)
    found = {}
    for n in st.model.graph.all_nodes():
        op = runs_as_integer(n) if n.name in floats else None
        if op is not None:
            found[n.name] = op
    if not found:
        return {}
    try:
        ran = _ort_node_ops(st.model.to_onnx())
    except Exception as exc:  # noqa: BLE001 - unread: no claim
        logger.warning("could not read onnxruntime's optimized graph: %s", exc)
        return {}
    return {name: op for name, op in found.items() if ran.get(name) == op}


def _ort_node_ops(quantized: onnx.ModelProto) -> dict[str, str]:
    """Node name -> op type in onnxruntime's optimized graph of ``quantized`` (If/Loop bodies too)."""
    return {n.name: n.op_type for n in _ort_nodes(quantized)}


def _ort_nodes(quantized: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of onnxruntime's optimized graph of ``quantized`` (extended level, If/Loop bodies too), read back
    from the file it writes."""
    with tempfile.TemporaryDirectory(prefix="graphopt-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        runtime.session(quantized, optimization="extended", optimized_path=path)
        optimized = onnx.load(path, load_external_data=False)
    return list(_all_nodes(optimized.graph))


def _body_layers(st: _State) -> dict[str, str]:
    """The quantized layers of ``st.model`` inside If/Loop/Scan bodies: name -> the op type owning the body."""
    quantized = {layer.name for layer in st.layers if layer.name}
    return {
        n.name: g.owner.op_type
        for g in st.model.graph.subgraphs()
        if g.owner is not None
        for n in g
        if n.name in quantized
    }


def _with_article(op_type: str) -> str:
    """``"an If"``, ``"a Loop"``: an op type named in a sentence."""
    return f"{'an' if op_type[0] in 'AEIOU' else 'a'} {op_type}"


def _body_float_retry(st: _State) -> None:
    """The int8 model measured slower than fp32 and it has layers inside If/Loop bodies in int8: quantize once more
    from the same float model and ranges (no new calibration) with those layers float, time that model the same way,
    and keep it when it is faster and its output SQNR is not below the floor or not worse than the first model's (and,
    with ``max_error``, its error within the budget or not worse). A decoder run step by step in a Loop pays a
    QuantizeLinear/DequantizeLinear per layer and step for a small product (slanet-en: 0.80x fp32): the layer choice
    does not estimate body layers, so the measured speed decides. Costs one quantize and one speed measurement,
    reported under ``seconds["body-float"]``.

    When every quantizable layer is inside the bodies (an LSTM exported as a Loop: chars2vec-en300 at 0.54x fp32),
    the retry leaves nothing to quantize: a :class:`GraphoptError` says so (no int8 model is slower and lossier than
    the float one), unless the user chose the op types to quantize (``op_types``, ``--quantize-ops``), which keeps the
    first model with the note."""
    report, cfg = st.report, st.cfg
    if report.speedup is None or not report.speedup < SLOW_SPEEDUP:
        return
    body = _body_layers(st)
    if not body:
        return
    start, timings = time.perf_counter(), dict(st.timings)
    owners = sorted(set(body.values()))
    where = " or ".join(_with_article(o) for o in owners)
    logger.info(
        "int8 model at %.2fx fp32: quantizing again with %d %s-body layers float",
        report.speedup,
        len(body),
        "/".join(owners),
    )
    first = dataclasses.replace(report)  # shallow: the retry gives the report new lists, these stay the first's
    first_proto = st.model.to_onnx()
    _restore_float(st)
    main = st.model.graph
    chosen = dict(st.chosen)
    share_in_bodies = []
    for n in st.plan.nodes:
        if not n.name:
            continue
        if n.graph is not main:
            owner = n.graph.owner.op_type if n.graph.owner is not None else "control-flow"
            if n.op_type in analysis.SHARE:
                share_in_bodies.append(n.name)  # scale-sharing ops in the body: float with their neighbours
            else:
                chosen[n.name] = choice.Choice(
                    n.name, n.op_type, "float", BODY_FLOAT.format(owner=_with_article(owner))
                )
        elif n.op_type not in analysis.SHARE and n.name not in chosen:
            why = KEPT_STATIC if st.chosen else "--layer-choice static"
            chosen[n.name] = choice.Choice(n.name, n.op_type, "static", why)
    # the quantizable layers outside the bodies (scale-sharing ops quantize only with a neighbour)
    outside = [n.name for n in st.plan.nodes if n.graph is main and n.name and n.op_type not in analysis.SHARE]
    st.chosen = chosen
    report.layers = []
    speed: float | None = None
    failed = ""
    try:
        _apply_choices(st)
        st.excluded = [*st.excluded, *share_in_bodies]
        _rewrite(st)
        _measure(st)
        speed = _speedup(st.original, st.model.to_onnx(), st.batches[0])
    except GraphoptError as exc:  # nothing left to quantize outside the bodies, say: the first model stands
        failed = str(exc)
    if speed is None and not outside and cfg.op_types is None and first.speedup < BODY_ONLY_REFUSE_SPEEDUP:  # type: ignore[operator]
        # every quantizable layer is in a body: the choice is between this slower, lossier int8 model and none
        excluded = bool(cfg.exclude or cfg.exclude_ops or cfg.exclude_regex)
        raise GraphoptError(_only_body_message(first, body, where, excluded=excluded))
    sqnr_ok = report.sqnr_db >= cfg.sqnr_floor_db or report.sqnr_db >= first.sqnr_db
    error_ok = cfg.max_error is None or report.error_rel <= cfg.max_error or report.error_rel <= first.error_rel
    keep = speed is not None and speed > first.speedup and sqnr_ok and error_ok  # type: ignore[operator]
    if speed is not None:
        figure = f"{speed:.2f}x, output SQNR {report.sqnr_db:.1f} dB against {first.sqnr_db:.1f} dB"
    elif not outside:  # the user's op types select only body layers: they asked for them
        ops = ",".join(cfg.op_types or ())
        figure = f"nothing would be left int8 (the op types to quantize, {ops}, select none outside it)"
    elif all(chosen[name].mode == "float" for name in outside):
        figure = "nothing would be left int8 (every quantizable layer outside it is kept float)"
    else:
        figure = f"no model ({failed})"
    if keep:
        report.speedup = speed
        outcome = "kept"
    else:
        st.model.take_contents(from_proto(first_proto))
        for f in dataclasses.fields(report):
            if f.name not in ("seconds", "warnings"):  # the same dict and list as the state's
                setattr(report, f.name, getattr(first, f.name))
        outcome = "the first model is kept"
        if speed is not None:
            outcome += " (not faster)" if sqnr_ok and error_ok else " (less accurate)"
    st.notes.append(
        f"the int8 model was {first.speedup:.2f}x the speed of fp32 with {len(body)} layers inside {where} body in "
        f"int8; quantized again with them float: {figure}: {outcome}"
    )
    st.timings.clear()
    st.timings.update(timings)
    st.timings["body-float"] = time.perf_counter() - start


def _only_body_message(first: QuantReport, body: Mapping[str, str], where: str, *, excluded: bool) -> str:
    """The error when every quantizable layer is inside If/Loop bodies and int8 made the model slower than fp32: what
    was measured, and how to quantize those layers anyway."""
    counts = collections.Counter(layer.op_type for layer in first.layers if layer.name in body)
    types = sorted(counts)
    layers = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return (
        f"nothing to quantize: the only quantizable layers{' outside the exclusions' if excluded else ''} ({layers}) "
        f"are inside {where} body, "
        f"and int8 there made the model {first.speedup:.2f}x the speed of fp32 under onnxruntime (1 thread, first "
        f"calibration batch) with an output SQNR of {first.sqnr_db:.1f} dB: no int8 model is written; to quantize "
        f"them anyway, name their op types (--quantize-ops {','.join(types)}; the API's op_types)"
    )


_SHARED_FIELDS = frozenset({"model", "batches", "target", "cfg", "progress", "sources", "notes", "timings", "report"})
"""The :class:`_State` fields that are not one attempt's: :func:`_stage_fields` leaves them out."""


def _stage_fields(st: _State) -> dict[str, Any]:
    """What the stages set for one quantized model (the choices, plan, ranges, smoothing, layers and transform
    options), to put back with :func:`_set_stage_fields` when a later attempt is abandoned. Each stage assigns new
    objects to these fields, except the transform options it changes in place: those are copied."""
    saved = {f.name: getattr(st, f.name) for f in dataclasses.fields(st) if f.name not in _SHARED_FIELDS}
    saved["options"] = dataclasses.replace(st.options)
    return saved


def _set_stage_fields(st: _State, saved: Mapping[str, Any]) -> None:
    for name, value in saved.items():
        setattr(st, name, value)


def _restore_float(st: _State) -> None:
    """``st.model`` back to the float model the ranges were calibrated on (smoothed where it was), planned again."""
    st.model.take_contents(from_proto(st.base))
    infer_shapes(st.model)
    st.plan = analysis.plan(st.model.graph, st.target, st.selection)


FLOOR_STAGE = "SQNR floor"
"""The progress stage of the SQNR floor's search: one step per candidate model run, ``fallback_runs`` in all at most."""


class _FloorSearch:
    """The SQNR floor's search (see :func:`_sqnr_fallback`): the ranked demotion steps, and the fewest of them (a
    prefix) that bring the output error to ``limit``, one model run per candidate."""

    def __init__(self, st: _State, limit: float) -> None:
        self.st, self.limit = st, limit
        self.runs = 0
        self.bound = max(1, st.cfg.fallback_runs)
        """The most model runs the search makes (the first, every step taken, is always run)."""
        self.estimates: dict[str, choice.Estimate] = {}
        self.chosen: dict[str, choice.Choice] = {}
        self.errors: dict[int, float] = {}
        self.needed: list[str] = []
        """The layers the search found needed (float or dynamic) to meet the floor, in the order found."""

    def rank(self) -> list[tuple[str, str]]:
        """Every planned layer's estimate (one pass over the float model), the first pass's choices (static for
        every layer where there was no choice), and the demotion steps, worst estimate first."""
        st = self.st
        model = from_proto(st.base)
        infer_shapes(model)
        the_plan = analysis.plan(model.graph, st.target, st.selection)
        self.estimates = choice.estimate(
            model,
            the_plan,
            st.ranges,
            st.batches,
            per_channel=st.per_channel,
            reduce_range=st.reduce_range,
            threads=st.cfg.threads,
            convolutions=True,
        )
        self.chosen = dict(st.chosen)
        for n in the_plan.nodes:
            if n.op_type not in analysis.SHARE and n.name and n.name not in self.chosen:
                why = "--layer-choice static" if n.name in self.estimates else KEPT_STATIC
                why = why if n.graph is model.graph else BODY_STATIC
                self.chosen[n.name] = choice.Choice(n.name, n.op_type, "static", why)
        dynamic = st.cfg.choice == "auto" and st.target == "ort"
        return choice.demotions(self.chosen, self.estimates, dynamic=dynamic, budget=False)

    def modes(self, taken: Sequence[tuple[str, str]]) -> dict[str, str]:
        """Every layer's mode with the steps ``taken`` (in any order: a float step wins over a dynamic one)."""
        modes = {name: c.mode for name, c in self.chosen.items()}
        for name, mode in taken:
            if modes[name] != "float":
                modes[name] = mode
        return modes

    def error(self, taken: Sequence[tuple[str, str]]) -> float:
        """The output error with the steps ``taken``: one quantized model, one run over the calibration set."""
        st = self.st
        modes = self.modes(taken)
        self.runs += 1
        if st.progress:  # the run count's bound as the total: the bar moves (the search often ends before it)
            st.progress(FLOOR_STAGE, self.runs, self.bound)
        base = _smoothed_base(st)(modes)
        proto = _with_modes(
            base, st.target, st.selection, st.ranges, st.options, modes, st.cfg, st.reduce_range, batches=st.batches
        )
        got = _measured_run(proto, st.batches, st.measured, st.cfg.threads)
        rel, _ = output_error(st.reference, got, st.parts)
        logger.info("SQNR floor: %d steps taken, output error %.3g", len(taken), rel)
        self.errors[len(taken)] = rel
        return rel

    def search(self, steps: Sequence[tuple[str, str]], deadline: float) -> tuple[list[tuple[str, str]] | None, bool]:
        """The fewest steps found that meet the floor (None: not even all of them do) and whether the budget ran out.

        Every step taken is run first (it bounds the search: no step, the plain model, is below the floor). Then
        rounds of bisection over the ranked steps: each finds the shortest prefix that meets the floor; its last step
        is needed (the prefix without it does not meet the floor), so it moves to the front, with the ones found
        before; the next round first tries those needed steps alone, and bisects the rest of the prefix if they do not
        suffice. A few damaging layers ranked late by their estimates (as where one layer's error is amplified by a
        decoder loop) cost a round each, not one run per layer; a round that finds no shorter set ends the search (most
        steps are needed). At the budget, the shortest set found so far."""
        if not steps:
            return None, False
        t0 = time.perf_counter()
        if self.error(steps) > self.limit:
            return None, False
        per_run = time.perf_counter() - t0
        order, best = list(steps), list(steps)
        needed = 0  # order[:needed]: the steps found needed, in front
        lo, hi = 0, len(order)  # order[:lo] is below the floor (the plain model at first), order[:hi] meets it
        rounds, before = 0, hi
        while True:
            while hi - lo > 1:
                if self.runs >= self.st.cfg.fallback_runs or time.perf_counter() + per_run > deadline:
                    return best, True
                mid = needed if lo < needed else (lo + hi) // 2  # a round starts with the needed steps alone
                if self.error(order[:mid]) <= self.limit:
                    hi, best = mid, order[:mid]
                else:
                    lo = mid
            rounds += 1
            if hi - 1 <= needed or (rounds > 1 and hi == before):
                # order[:hi] is the needed steps and one more, or the round found no shorter set (most steps are
                # needed): stop
                return best, False
            before = hi
            order = order[:needed] + [order[hi - 1]] + order[needed : hi - 1] + order[hi:]
            needed += 1
            self.needed = [name for name, _ in order[:needed]]
            lo = needed - 1  # the needed steps before this one, alone, were below the floor

    def worst(self, steps: Sequence[tuple[str, str]], count: int) -> list[str]:
        """The layers found needed, then the worst by estimate."""
        return list(dict.fromkeys(self.needed + [name for name, _ in steps if name in self.estimates]))[:count]


CLIP_CHECK_MAX_BYTES = 64 * 2**20
"""Largest model (weight bytes) the percentile method quantizes twice to check its clipping (``_clipped_or_full``)."""


def _clipped_or_full(
    model: Model,
    batches: list[dict[str, np.ndarray]],
    target: str,
    cfg: QuantizeConfig,
    progress: Progress | None,
    sources: Sequence[str] | None,
) -> QuantReport:
    """The percentile method, checked: the model quantized with the percentile ranges and with the full ranges (min to
    max), each through the whole pipeline (layer choice, accuracy guard, SQNR fallback); the one with the lower
    output error on the calibration set is kept (the percentile one on a tie).

    Cutting the tails trades coarser steps for every value against clipping the few beyond. Per tensor the rounding
    error looks the larger cost, but a clipped tail errs with one sign and that bias adds up through convolutions and
    pooling: on hard-swish nets (PP-LCNet, MobileNetV3) the full ranges give the output up to 9 dB more SQNR, while
    elsewhere the clipped ones win. Measuring the whole model settles it."""
    original = model.to_onnx()
    runs: list[tuple[float, bool, _State, list[logging.LogRecord]]] = []
    held: list[logging.LogRecord] = []
    written: set[Path] = set()  # the minmax run calibrates the same model on the same data: its cache hit is ours

    def hold(record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        held.append(record)  # each run's own records (its notes, a missing per-layer SQNR, ...): the kept run's
        return False  # are logged once it is known, the other run's not at all

    # a filter on the driver's own logger: what other modules log (a damaged calibration cache, say) still shows
    logger.addFilter(hold)
    try:
        for method in ("percentile", "minmax"):
            m = from_proto(original)
            # the kept model alone is timed (below), unless the guard's measurement came with it
            sub = QuantizeConfig(**{**cfg.__dict__, "method": method, "clip_check": False, "measure_speed": False})
            start = len(held)
            sub_state = _pipeline(m, batches, target, sub, progress, sources, written)
            runs.append((sub_state.report.error_rel, method != "percentile", sub_state, held[start:]))
    finally:
        logger.removeFilter(hold)
    errors = {("minmax" if r[1] else "percentile"): r[0] for r in runs}
    _, full, st, records = min(runs, key=lambda r: (r[0], r[1]))
    report = st.report
    known = len(st.notes)
    if target == "ort" and report.speedup is None and cfg.measure_speed:
        # the kept model timed (and quantized again with its If/Loop body layers float, where that pays), here only
        stale = _floor_note(st)
        _speed_stage(st, True)
        if stale is not None and stale in st.notes[:known] and _floor_note(st) != stale:
            # a kept retry changed the SQNR: the floor's note of the sub-run described the first model
            st.notes.remove(stale)  # report.warnings is st.notes
            known -= 1
            records = [r for r in records if r.getMessage() != stale]
            fresh = _floor_note(st)
            if fresh:
                st.notes.append(fresh)
    for record in records:
        logger.handle(record)
    for note in st.notes[known:]:
        logger.warning("%s", note)
    model.take_contents(st.model)
    if full:
        report.method = "minmax"  # the JSON report says which ranges the written model has
        report.method_reason = (
            f"switched from percentile {cfg.percentile:g}: its clipped ranges gave a larger output error on the "
            f"calibration set ({errors['percentile']:.3g} against {errors['minmax']:.3g} relative)"
        )
        logger.info(
            "calibration: min-to-max ranges kept, the percentile ones gave the output error %.3g against %.3g",
            errors["percentile"],
            errors["minmax"],
        )
    return report


def _dynamic_and_tables(
    model: Model,
    reasons: Mapping[str, str],
    cfg: QuantizeConfig,
    reduce_range: bool,
    batches: Sequence[Mapping[str, np.ndarray]] = (),
) -> list[LayerReport]:
    """The automatic choice's other forms: dynamic int8 for the MatMul/Gemm layers it named (per token where it
    pays on ``batches``: ``dynamic.measured_forms``), int8 rows for the embedding tables (Gather-read vocabulary
    tables that the selection allows)."""
    from graphopt.quantize.dynamic import measured_forms, quantize_dynamic_nodes
    from graphopt.quantize.embeddings import quantize_embeddings

    nodes = [n for n in model.graph if n.name in reasons]
    out = []
    if nodes:
        sample = list(batches)[: choice.MAX_BATCHES]
        forms = measured_forms(model, nodes, sample, per_channel=cfg.per_channel, threads=cfg.threads)
        out = quantize_dynamic_nodes(model, nodes, per_channel=cfg.per_channel, reduce_range=reduce_range, forms=forms)
    for layer in out:
        if layer.mode == "dynamic" and layer.name in reasons:
            layer.note = reasons[layer.name]
    if cfg.choice == "auto" and (cfg.op_types is None or "Gather" in cfg.op_types):
        out += quantize_embeddings(model, skip=_tables_excluded(model, cfg))
    return out


def _tables_excluded(model: Model, cfg: QuantizeConfig) -> set[str]:
    """The Gathers the selection (--exclude, --exclude-op, --exclude-regex) keeps float: their tables stay float."""
    selection = cfg.selection()
    return {n.name for n in model.graph if n.op_type == "Gather" and not selection.allows(n, "ort")}


def _smooth(
    model: Model,
    the_plan: analysis.Plan,
    batches: Sequence[Mapping[str, np.ndarray]],
    cfg: QuantizeConfig,
    sources: Sequence[str] | None,
    producers: frozenset[str],
) -> tuple[list[smoothquant.Smoothed], dict[str, np.ndarray]]:
    """SmoothQuant on the planned MatMul/Gemm layers: per-channel activation maxima in one pass, then the scales."""
    alpha = float(cfg.smooth_alpha)  # type: ignore[arg-type]
    if not 0.0 <= alpha <= 1.0:
        raise GraphoptError(f"smoothing alpha must be in [0, 1], got {alpha}")
    groups = smoothquant.candidates(model.graph, {n.name for n in the_plan.nodes if n.name})
    if not groups:
        return [], {}
    absmax = calib.channel_absmax(model, list(groups), batches, threads=cfg.threads, sources=sources)
    return smoothquant.smooth(model.graph, absmax, alpha, mode=cfg.smooth_mode, int8_producers=producers), absmax


def _upgrade_opset(model: Model, version: int) -> str | None:
    """Convert ``model`` in place to ``version`` of the default opset with onnx's version converter; the reason it
    could not (the model is then untouched), or None."""
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model.to_onnx(), version)
        onnx.checker.check_model(converted)
        lifted = from_proto(converted)
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; the caller falls back and says why
        text = str(exc).strip()
        return text.splitlines()[0][:200] if text else type(exc).__name__
    model.take_contents(lifted)
    return None


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _layer_sqnr(
    base: onnx.ModelProto,
    quantized: onnx.ModelProto,
    layers: Sequence[analysis.Layer],
    batches: Sequence[Mapping[str, np.ndarray]],
    threads: int | None,
) -> dict[str, float]:
    """Per layer: SQNR of its (dequantized) output in the quantized model against the float model's, in dB."""
    pairs = [(layer.name, layer.output, layer.dequantized) for layer in layers if layer.output and layer.dequantized]
    # tensors inside If/Loop bodies are threaded out as outputs (a Loop's stacks every iteration's value)
    ref_proto, ref_names = calib.expose(_copy(base), [p[1] for p in pairs])
    q_proto, q_names = calib.expose(_copy(quantized), [p[2] for p in pairs])
    pairs = [p for p in pairs if p[1] in ref_names and p[2] in q_names]
    if not pairs:
        return {}
    try:
        ref = _run(ref_proto, batches, [ref_names[p[1]] for p in pairs], optimization="basic", threads=threads)
        got = _run(q_proto, batches, [q_names[p[2]] for p in pairs], optimization="disabled", threads=threads)
    except GraphoptError as exc:
        logger.warning("no per-layer SQNR: onnxruntime cannot read the layers' outputs (%s)", exc)
        return {}
    out: dict[str, float] = {}
    for k, (name, _, _) in enumerate(pairs):
        rel, _ = output_error([[b[k]] for b in ref], [[b[k]] for b in got])
        out[name] = sqnr_db(rel)
    return out


def _fused_layers(quantized: onnx.ModelProto, layers: Sequence[analysis.Layer]) -> dict[str, str]:
    """Which layers onnxruntime turned into integer kernels: layer name -> the op it became.

    onnxruntime's QDQ fusions keep the fused node's name; its optimized graph is read back from a file it writes
    (:func:`_ort_nodes`).
    """
    nodes = _ort_nodes(quantized)
    by_name = {n.name: n.op_type for n in nodes}
    result = {}
    for layer in layers:
        op = by_name.get(layer.name)
        if op in FUSED_OPS:
            result[layer.name] = op
        elif op is None:
            # some fusions rename: look for an integer node that writes the layer's output
            for n in nodes:
                if n.op_type in FUSED_OPS and layer.name and n.name.startswith(layer.name):
                    result[layer.name] = n.op_type
                    break
    return result


def _all_nodes(g: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for n in g.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(a.g)


def _with_modes(
    base: onnx.ModelProto,
    target: str,
    selection: analysis.Selection,
    ranges: Mapping[str, tuple[float, float]],
    options: transform.Options,
    modes: Mapping[str, str],
    cfg: QuantizeConfig,
    reduce_range: bool,
    tables: bool = True,
    batches: Sequence[Mapping[str, np.ndarray]] = (),
) -> onnx.ModelProto:
    """A quantized copy of ``base`` with each layer in its mode (static, static-float-output, dynamic or float);
    ``tables``: embedding tables int8 too, as the final model has them; the dynamic layers in the forms
    ``_dynamic_and_tables`` measures on ``batches`` for the final model."""
    from graphopt.quantize.dynamic import measured_forms, quantize_dynamic_nodes
    from graphopt.quantize.embeddings import quantize_embeddings

    model = from_proto(base)
    infer_shapes(model)
    off = frozenset(k for k, m in modes.items() if m in ("float", "dynamic"))
    sel = dataclasses.replace(selection, kept=selection.kept | off)
    the_plan = analysis.plan(model.graph, target, sel)
    outs = frozenset(k for k, m in modes.items() if m == "static-float-output")
    opts = dataclasses.replace(options, float_outputs=outs)  # the candidate is written as the final model is
    transform.apply(model.graph, the_plan, ranges, model.opset("") or 0, opts)
    if target == "ort":
        dyn = [n for n in model.graph if modes.get(n.name or "") == "dynamic"]
        if dyn:
            sample = list(batches)[: choice.MAX_BATCHES]
            forms = measured_forms(model, dyn, sample, per_channel=cfg.per_channel, threads=cfg.threads)
            quantize_dynamic_nodes(model, dyn, per_channel=cfg.per_channel, reduce_range=reduce_range, forms=forms)
        if tables and cfg.choice == "auto" and (cfg.op_types is None or "Gather" in cfg.op_types):
            quantize_embeddings(model, skip=_tables_excluded(model, cfg))  # as the written model has them
    return model.to_onnx()


KEPT_STATIC = "static int8 (convolution, pooling or Concat: kept static)"
BODY_STATIC = "static int8 (inside an If/Loop body: not estimated, and the accuracy guard does not demote it)"
GUARD_MIN_SPEEDUP = 1.5
"""The accuracy guard keeps a model that was at least this much faster than fp32 (plain int8) above it."""
FALLBACK_MIN_SECONDS = 5.0
"""The SQNR floor's search may always take this long (on a small model a plain quantize takes a fraction of a second,
mostly fixed costs)."""


def _speedup(fp32: onnx.ModelProto, quantized: onnx.ModelProto, feed: Mapping[str, np.ndarray], runs: int = 5) -> float:
    """fp32 time over int8 time at 1 thread: medians of ``runs`` interleaved runs on ``feed`` (after a warm-up).
    ``quantized`` is timed as ``api.run_request`` writes it for target ort, after its last step (decompose-prelu and
    ort-avoid-fusions: an Add left for onnxruntime's slow SkipLayerNormalization would make the figure up to a fifth
    too low, a PRelu left for its slow PRelu kernel a third)."""
    emitted = from_proto(quantized)
    if PassManager("decompose-prelu,ort-avoid-fusions").run(emitted, target="ort").changed:
        quantized = emitted.to_onnx()
    a = runtime.session(fp32, threads=1, optimization="all")
    b = runtime.session(quantized, threads=1, optimization="all")
    ta, tb = [], []
    for sess, acc in ((a, ta), (b, tb)):
        runtime.run(sess, None, feed, "calibration")
        del acc
    for _ in range(runs):
        for sess, acc in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            runtime.run(sess, None, feed, "calibration")
            acc.append(time.perf_counter() - t0)
    return float(np.median(ta) / max(np.median(tb), 1e-9))


def _guard(
    base_for: Callable[[Mapping[str, str]], onnx.ModelProto],
    target: str,
    selection: analysis.Selection,
    ranges: Mapping[str, tuple[float, float]],
    options: transform.Options,
    batches: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[Sequence[np.ndarray]],
    cfg: QuantizeConfig,
    original: onnx.ModelProto,
    chosen: Mapping[str, choice.Choice],
    estimates: Mapping[str, choice.Estimate],
    measured_alone: dict[str, float],
    *,
    plain_seconds: float,
    measured: Measured | None = None,
    parts: Sequence[Part] = (),
    dynamic: bool,
    reduce_range: bool,
    progress: Progress | None,
) -> tuple[dict[str, choice.Choice], list[str], bool, float | None]:
    """The accuracy guard of ``max_error``: demote the fewest layers (worst estimate first: static to dynamic where
    dynamic int8 can take the layer, else to float; then dynamic to float) until the output error on the calibration
    set is at most ``max_error``. Each step costs one run of the model over the calibration set, and the number of
    steps grows with the logarithm of the layer count (doubling, then bisection), never with the layer count.

    When the plain int8 model runs at least :data:`GUARD_MIN_SPEEDUP` times faster than the float one (measured:
    interleaved medians at 1 thread on the first calibration batch), float demotions stop at
    :data:`choice.FLOAT_MAC_SHARE` of the estimated layers' multiply-adds, so that the result keeps most of int8's
    speed; returns the new choices, the layers the guard made float, whether the budget was met, and the plain
    model's measured speed-up (None when not measured). With the exact ranking, ``measured_alone`` receives each
    ranked layer's model output SQNR with it alone in int8. The exact ranking (one run per layer) is used only when
    those runs cost no more than 1.5 ``plain_seconds`` (the quantization's own time so far) plus a second."""
    limit = float(cfg.max_error)  # type: ignore[arg-type]
    modes0 = {k: c.mode for k, c in chosen.items()}
    runs = 0
    plain = _with_modes(
        base_for(modes0), target, selection, ranges, options, modes0, cfg, reduce_range, batches=batches
    )
    steps: list[tuple[str, str]] = []

    def modes_at(k: int) -> dict[str, str]:
        modes = dict(modes0)
        for name, mode in steps[:k]:
            modes[name] = mode
        return modes

    def error_at(k: int) -> float:
        nonlocal runs
        runs += 1
        if progress:
            progress("accuracy guard", runs, None)
        proto = (
            plain
            if k == 0
            else _with_modes(
                base_for(modes_at(k)),
                target,
                selection,
                ranges,
                options,
                modes_at(k),
                cfg,
                reduce_range,
                batches=batches,
            )
        )
        rel, _ = output_error(reference, _measured_run(proto, batches, measured, cfg.threads), parts)
        logger.info("accuracy guard: %d demotions, output error %.3g", k, rel)
        return rel

    speed: float | None = None

    def result(k: int, met: bool) -> tuple[dict[str, choice.Choice], list[str], bool, float | None]:
        out = dict(chosen)
        kept = []
        for name, mode in steps[:k]:
            old = chosen[name]
            out[name] = choice.Choice(name, old.op_type, mode, f"{cfg.guard_label} {limit:g}: {old.mode} -> {mode}")
        for name, mode in modes_at(k).items():
            if mode == "float" and modes0.get(name) != "float":
                kept.append(name)
        return out, kept, met, speed

    t0 = time.perf_counter()
    if error_at(0) <= limit:
        return result(0, True)
    eval_seconds = time.perf_counter() - t0
    speed = _speedup(original, plain, batches[0]) if target == "ort" else None
    # the speed budget binds only when the plain int8 model is fast enough to lose it
    budgeted = speed is not None and speed >= GUARD_MIN_SPEEDUP
    steps[:] = choice.demotions(chosen, estimates, dynamic=dynamic, budget=budgeted)
    candidates = list(dict.fromkeys(k for k, _ in steps))
    rank: dict[str, float] | None = None
    if 1 < len(candidates) <= choice.EXACT_RANKING_MAX and len(candidates) * eval_seconds <= 1.5 * plain_seconds + 1:
        # few layers: rank them by the output error with each one alone in its mode (one run each), output-aware
        rank = {}
        for k in candidates:
            one = {**{j: "float" for j in modes0}, k: modes0[k]}
            proto = _with_modes(
                base_for(one), target, selection, ranges, options, one, cfg, reduce_range, batches=batches
            )
            rank[k] = -output_error(reference, _measured_run(proto, batches, measured, cfg.threads), parts)[0]
            measured_alone[k] = sqnr_db(-rank[k])
        steps[:] = choice.demotions(chosen, estimates, dynamic=dynamic, budget=budgeted, rank=rank)

    if not steps:
        return result(0, False)
    lo, hi = 0, 1
    while error_at(hi) > limit:
        if hi == len(steps):
            return result(hi, False)
        lo, hi = hi, min(len(steps), hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if error_at(mid) <= limit:
            hi = mid
        else:
            lo = mid
    return result(hi, True)
