"""Pruning driver: structured channel pruning and unstructured / 2:4 weight sparsity, with their report.

The graph work is in ``graphopt.passes.prune``; this module validates the request, runs the probe that measures what
removed channels still produced, counts MACs and parameters per layer before and after, and can time the model
before and after in onnxruntime.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from graphopt.core.ir import Model, Node
from graphopt.core.shape_inference import infer_shapes
from graphopt.core.tensors import Tensor
from graphopt.engine.pass_manager import PassManager
from graphopt.errors import GraphoptError
from graphopt.prune import analysis as channel_groups
from graphopt.prune import transform
from graphopt.prune.report import LayerChange, LayerCost, PruneReport
from graphopt.tools.names import NameOption, check_node_names, main_graph_only
from graphopt.tools.summary import initializer_bytes

logger = logging.getLogger("graphopt.prune")

LINEAR = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _check_ratio(ratio: float, what: str) -> None:
    if not (isinstance(ratio, int | float) and 0.0 <= float(ratio) < 1.0):
        raise GraphoptError(f"{what} must be in [0, 1), got {ratio}")


def layer_costs(model: Model, sample: Mapping[str, np.ndarray] | None = None) -> dict[str, LayerCost]:
    """Per Conv/ConvTranspose/Gemm/MatMul with a constant weight: channels, parameters and MACs per batch item.

    Shapes come from shape inference; where it leaves a dim symbolic (exports that compute their padding at run
    time, dynamic sizes), one onnxruntime run on ``sample`` (default: random inputs the model takes) measures them.
    """
    infer_shapes(model)
    layers = []
    for n in model.graph:
        if n.op_type not in LINEAR or len(n.inputs) < 2 or n.inputs[1] is None or n.outputs[0] is None:
            continue
        w = n.inputs[1].constant()
        if w is not None:
            layers.append((n, w))
    shapes = {}
    for n, _ in layers:
        for v in (n.inputs[0], n.outputs[0]):
            if v is not None and v.shape is not None and all(isinstance(d, int) for d in v.shape[1:]):
                shapes[v.name] = tuple(v.shape)
    missing = [v.name for n, _ in layers for v in (n.inputs[0], n.outputs[0]) if v is not None and v.name not in shapes]
    if missing:
        shapes.update(_runtime_shapes(model, missing, sample))
    costs: dict[str, LayerCost] = {}
    for n, w in layers:
        params = w.size + sum(v.constant().size for v in n.inputs[2:] if v is not None and v.constant() is not None)
        xs, ys = shapes.get(n.inputs[0].name), shapes.get(n.outputs[0].name)  # type: ignore[union-attr]
        macs = None
        if n.op_type == "Conv" and ys is not None:
            macs = w.size * math.prod(ys[2:])
        elif n.op_type == "ConvTranspose" and xs is not None:
            macs = w.size * math.prod(xs[2:])
        elif n.op_type in ("Gemm", "MatMul") and ys is not None:
            macs = w.size * (math.prod(ys[1:-1]) if len(ys) > 2 else 1)
        conv = n.op_type in ("Conv", "ConvTranspose")
        cin = xs[1 if conv else -1] if xs and len(xs) >= 2 else None
        cout = ys[1 if conv else -1] if ys and len(ys) >= 2 else None
        costs[n.name] = LayerCost(n.name, n.op_type, cin, cout, params, macs)
    return costs


def _runtime_shapes(
    model: Model, names: Sequence[str], sample: Mapping[str, np.ndarray] | None
) -> dict[str, tuple[int, ...]]:
    from graphopt.tools import runtime

    wanted = list(dict.fromkeys(names))
    proto = runtime.add_outputs(model.to_onnx(), wanted)
    try:
        feeds = dict(sample) if sample is not None else sample_inputs(model)
        sess = runtime.session(proto, optimization="disabled")
        values = sess.run(wanted, feeds)
    except Exception as exc:  # noqa: BLE001 - counting MACs is best effort; the layers just show no MACs
        logger.debug("shape probe failed: %s", exc)
        return {}
    return {name: tuple(np.asarray(v).shape) for name, v in zip(wanted, values, strict=True)}


SAMPLE_SIZES = (224, 256, 320, 512, 640, 128, 64, 32, 16)
"""Sizes tried in turn for the symbolic dims of the inputs: a size models are used at first (the timing must see
the layers' real cost, not per-run overhead), then smaller ones. A feature-pyramid net wants H and W multiples of 32,
a recognizer a minimum width."""


def sample_inputs(
    model: Model | onnx.ModelProto,
    shapes: Mapping[str, Sequence[int]] | None = None,
    feeds: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """One batch-1 input the model runs on, for the probe, the shape count and the timing: ``feeds`` as given (the
    user's or calibration data), else random inputs of the user's ``shapes``, else random inputs with the model's
    symbolic dims set to the first size that onnxruntime runs (the default, then SAMPLE_SIZES)."""
    from graphopt.tools import runtime

    proto = model.to_onnx() if isinstance(model, Model) else model
    try:
        sess = runtime.session(proto, optimization="disabled")
    except GraphoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own refusal, as one line
        raise GraphoptError(f"pruning needs onnxruntime to run the model: {_first_line(exc)}") from None
    if feeds is not None:
        return {k: np.asarray(v) for k, v in feeds.items()}
    if shapes:
        tries: list[dict[str, Sequence[int]] | None] = [dict(shapes)]
    else:
        symbolic = [i for i in sess.get_inputs() if any(not isinstance(d, int) or d < 0 for d in i.shape[1:])]
        tries = [_sized(sess, size) for size in SAMPLE_SIZES] if symbolic else []
        tries.append(None)  # make_inputs' own sizes
    first = ""
    for shape in tries:
        try:
            sample = runtime.make_inputs(sess, shapes=shape, batch=1)
        except GraphoptError as exc:
            if shapes:
                raise GraphoptError(str(exc).replace("--shape", "--prune-shape")) from None
            first = first or str(exc)
            continue
        try:
            sess.run(None, sample)
        except Exception as exc:  # noqa: BLE001 - a size the model cannot take: try the next one
            first = first or _first_line(exc)
            continue
        return sample
    given = " on the given --prune-shape" if shapes else " on random inputs (symbolic dims tried from 16 to 640)"
    raise GraphoptError(
        f"pruning needs one run of the model and onnxruntime cannot run it{given}: {first}; "
        "give valid input shapes with --prune-shape NAME=1x3x640x640"
    )


def _sized(sess: Any, size: int) -> dict[str, list[int]]:
    """Shapes for the inputs with symbolic dims: ``size`` for each, 1 for the batch (a dim first in some input, by
    name: an LSTM's initial state lists the batch second)."""
    inputs = sess.get_inputs()
    batch = {i.shape[0] for i in inputs if i.shape and isinstance(i.shape[0], str)}

    def dim(k: int, d: Any) -> int:
        if isinstance(d, int) and d >= 0:
            return d
        return 1 if k == 0 or (isinstance(d, str) and d in batch) else size

    return {
        i.name: [dim(k, d) for k, d in enumerate(i.shape)]
        for i in inputs
        if any(not isinstance(d, int) or d < 0 for d in i.shape)
    }


def other_sample(model: Model, sample: Mapping[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """A second input the model runs on whose symbolic dims have other sizes than ``sample`` (None: the model has no
    symbolic dim besides the batch, or takes no other size tried). What removed channels carry must not depend on
    the size: a constant that does (a padded depthwise Conv, then a global pool) would be exact at one size only."""
    from graphopt.tools import runtime

    try:
        sess = runtime.session(model.to_onnx(), optimization="disabled")
    except Exception:  # noqa: BLE001 - sample_inputs ran it already
        return None
    symbolic = [i for i in sess.get_inputs() if any(not isinstance(d, int) or d < 0 for d in i.shape[1:])]
    for size in SAMPLE_SIZES if symbolic else ():
        shapes = _sized(sess, size)
        if all(tuple(dims) == np.shape(sample.get(name)) for name, dims in shapes.items()):
            continue
        try:
            feeds = runtime.make_inputs(sess, shapes=shapes, batch=1, seed=1)
            sess.run(None, feeds)
        except Exception:  # noqa: BLE001 - a size the model cannot take: try the next one
            continue
        return feeds
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:300]


def _dim(v: Any, axis: int) -> int | None:
    if v is None or v.shape is None or len(v.shape) < 2:
        return None
    d = v.shape[axis]
    return d if isinstance(d, int) else None


def _changes(before: Mapping[str, LayerCost], after: Mapping[str, LayerCost]) -> list[LayerChange]:
    rows = []
    for name, b in before.items():
        a = after.get(name, b)
        rows.append(
            LayerChange(
                name,
                b.op_type,
                (b.in_channels, a.in_channels),
                (b.out_channels, a.out_channels),
                (b.params, a.params),
                (b.macs, a.macs),
            )
        )
    return rows


def _total(costs: Mapping[str, LayerCost]) -> int:
    return sum(c.macs or 0 for c in costs.values())


def check_names(model: Model, options: Mapping[str, Any], *, before: Collection[str] | None = None) -> None:
    """One GraphoptError for every ``protect`` name or pattern (``--prune-protect``: the name, or a regex matching
    the whole name) and every ``layer_ratios`` layer (``--prune-layer``: a main-graph Conv or Gemm) that selects
    nothing: a misspelt protection would prune the layer meant to be kept (``tools.names.check_node_names``). Pruning
    acts on the main graph only, so a value that selects only nodes inside If/Loop/Scan bodies is an error too (it
    would protect or prune nothing). Whether a named layer's channel group can be pruned is known only from the
    channel analysis: :func:`prune_channels` checks that (:func:`graphopt.prune.analysis.group_ratios`)."""
    model.graph.name_unnamed_nodes()
    main = model.graph

    def layer(n: Node) -> bool:
        return n.graph is main and n.op_type in ("Conv", "Gemm")

    def body_layer(n: Node) -> str | None:
        return outside(n) if n.op_type in ("Conv", "Gemm") else None

    outside = main_graph_only("pruning acts on the main graph only and leaves bodies as they are, so this does nothing")
    check_node_names(
        model,
        [
            NameOption(
                "--prune-protect",
                list(options.get("protect") or ()),
                match="fullmatch",
                nodes=lambda n: n.graph is main,
                outside=outside,
            ),
            NameOption(
                "--prune-layer", list(options.get("layer_ratios") or {}), nodes=layer, what="layer", outside=body_layer
            ),
        ],
        before=before,
    )


def prune_channels(
    model: Model,
    ratio: float,
    *,
    multiple: int = 8,
    importance: str = "l1",
    protect: Sequence[str] = (),
    layer_ratios: Mapping[str, float] | None = None,
    borders: str = "exact",
    shapes: Mapping[str, Sequence[int]] | None = None,
    sample: Mapping[str, np.ndarray] | None = None,
    unpruned: onnx.ModelProto | None = None,
) -> PruneReport:
    """Remove ``ratio`` of the channels of every prunable group of ``model`` (in place); returns the report.

    ``borders``: "exact" keeps what removed channels still produce exactly: into the readers' biases, and at padded
    readers (where a constant's contribution differs at the border) into the weights of one carrier channel per group
    (see :func:`graphopt.prune.transform.plan_carriers`); a group where that is not possible is left whole. "bias"
    folds only the interior value (approximate at the borders of padded readers). The probe runs the model once on
    ``sample`` (a feed dict), else on random inputs of ``shapes``, else on sizes the model takes
    (:func:`sample_inputs`). Never makes the parameters larger: such a result is an error. ``unpruned``: ``model``
    as a ModelProto, when the caller holds one already (what :func:`check_pruned_model` puts back; else made here).
    """
    _check_ratio(ratio, "channel pruning ratio")
    for name, r in (layer_ratios or {}).items():
        _check_ratio(r, f"pruning ratio of {name!r}")
    if multiple < 1:
        raise GraphoptError(f"channel multiple must be at least 1, got {multiple}")
    if borders not in ("exact", "bias"):
        raise GraphoptError(f"borders must be 'exact' or 'bias', got {borders!r}")
    if importance not in ("l1", "l2"):
        raise GraphoptError(f"importance must be l1 or l2, got {importance!r}")
    check_names(model, {"protect": protect, "layer_ratios": layer_ratios})
    report = PruneReport("channels", float(ratio))
    infer_shapes(model)
    graph = model.graph
    analysis = channel_groups.analyse(graph, protect)
    _, problems = channel_groups.group_ratios(analysis, layer_ratios or {})
    if problems:
        where = f"{model.source_path}: " if model.source_path else ""
        raise GraphoptError(where + "; ".join(problems))
    roots = {analysis.find(g) for g in range(len(analysis.groups))}
    candidates = [r for r in roots if analysis.groups[r].producers]
    report.groups = len(candidates)
    for r in candidates:
        why = analysis.groups[r].blocked
        if why:
            report.blocked[why] = report.blocked.get(why, 0) + 1
    prunable = [r for r in candidates if not analysis.groups[r].blocked]
    if not prunable:
        if not candidates and _quantized_weights(graph):
            raise GraphoptError(
                "nothing to prune: the Conv/Gemm/MatMul weights are quantized (read through DequantizeLinear or "
                "by QLinear ops); prune the float model, then quantize"
            )
        raise GraphoptError(f"nothing to prune: no channel group can be pruned safely ({_reasons(report)})")
    plans = channel_groups.plan(analysis, float(ratio), multiple, importance, dict(layer_ratios or {}))
    if sample is None:
        sample = sample_inputs(model, shapes)
    report.sample = dict(sample)
    before = layer_costs(model, sample)
    report.param_bytes_before = initializer_bytes(model)
    keep: dict[int, np.ndarray] = {}
    if plans:
        probe_keep = {r: p.probe_mask() for r, p in plans.items()}
        readers = transform.readers_with_removed_inputs(graph, analysis, probe_keep)
        signals = _probe(model, analysis, probe_keep, readers, sample)
        again = other_sample(model, sample) if readers else None
        if again is not None:
            transform.same_at_both_sizes(signals, _probe(model, analysis, probe_keep, readers, again))
        keep, carriers, dropped = transform.plan_carriers(graph, analysis, plans, signals, borders)
        for why in dropped.values():
            report.blocked[why] = report.blocked.get(why, 0) + 1
        if not keep:
            raise GraphoptError(f"nothing to prune: no channel group can be pruned exactly ({_reasons(report)})")
        report.carriers = len(carriers)
        if unpruned is None:
            unpruned = model.to_onnx()
        report.folded, report.carrier_readers = transform.remove_channels(
            graph, analysis, keep, signals, borders, carriers, opset=model.opset("")
        )
        PassManager("dce,remove-unused").run(model)
        check_pruned_model(model, sample, unpruned)
    report.groups_pruned = len(keep)
    after = layer_costs(model, sample)
    report.layers = _changes(before, after)
    report.macs_before, report.macs_after = _total(before), _total(after)
    report.param_bytes_after = initializer_bytes(model)
    if report.param_bytes_after > report.param_bytes_before:  # defensive: slicing only shrinks, a bias is small
        raise GraphoptError(
            f"pruning would make the parameters larger ({report.param_bytes_before} -> {report.param_bytes_after} "
            "bytes)"
        )
    return report


def check_pruned_model(model: Model, sample: Mapping[str, np.ndarray], unpruned: onnx.ModelProto) -> None:
    """The pruned model must load in onnxruntime and run on ``sample``, whatever else is asked (``--prune-bench 0``
    times nothing): a model that fails here is a bug in graphopt's pruning, not in the user's model, and is never
    written. On failure ``model`` is put back as it was (``unpruned``) and the error says whose model it is."""
    from graphopt.core.onnx_io import from_proto
    from graphopt.tools import runtime

    try:
        runtime.session(model.to_onnx()).run(None, dict(sample))
        return
    except GraphoptError as exc:
        problem = str(exc).replace("the model: onnxruntime cannot load it", "onnxruntime cannot load it")
    except Exception as exc:  # noqa: BLE001 - onnxruntime's refusal to run it, as one line
        problem = f"onnxruntime cannot run it on the probe's input: {runtime.ort_reason(exc)}"
    model.take_contents(from_proto(unpruned))
    raise GraphoptError(
        "graphopt's channel pruning made a model that onnxruntime rejects, a bug in graphopt (the input model is "
        f"fine; please report it): {problem}; the pruned model is not written"
    )


def _quantized_weights(graph: Any) -> bool:
    """Whether the model's layers take quantized weights: a Conv/Gemm/MatMul weight that a DequantizeLinear makes,
    or a QLinearConv/QLinearMatMul/ConvInteger/MatMulInteger (a pre-quantized model: nothing here prunes those)."""
    for n in graph:
        if n.op_type in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"):
            return True
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.inputs) > 1 and n.inputs[1] is not None:
            producer = n.inputs[1].producer
            if producer is not None and producer.op_type == "DequantizeLinear":
                return True
    return False


def _reasons(report: PruneReport) -> str:
    return ", ".join(f"{k} ({v})" for k, v in sorted(report.blocked.items())) or "no Conv or Gemm layers"


def _probe(
    model: Model,
    analysis: channel_groups.Analysis,
    keep: dict[int, np.ndarray],
    readers: list,
    sample: Mapping[str, np.ndarray],
) -> dict[int, transform.Signal]:
    """What the removed channels still carry at each reader: one run with the removed producer weights zeroed."""
    from graphopt.tools import runtime

    if not readers:
        return {}
    zeroed = transform.zeroed_copy(model.graph, analysis, keep)
    proto = model.to_onnx()
    inits = {t.name: t for t in proto.graph.initializer}
    for name, arr in zeroed.items():
        if name not in inits:
            raise GraphoptError(f"weight {name!r} is not an initializer; run -O2 before pruning")
        inits[name].CopyFrom(onnx.numpy_helper.from_array(arr, name))
    runtime.add_outputs(proto, [v.name for v in readers])
    try:
        sess = runtime.session(proto, optimization="disabled")
        values = sess.run([v.name for v in readers], dict(sample))
    except GraphoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime's refusal of the probe, as one line
        raise GraphoptError(f"pruning's probe run failed in onnxruntime: {_first_line(exc)}") from None
    out = {}
    for v, arr in zip(readers, values, strict=True):
        mask = channel_groups.kept_positions(analysis, v, keep)
        out[id(v)] = transform.measured(np.asarray(arr)[0], np.flatnonzero(~mask))  # type: ignore[operator]
    return out


def prune_weights(
    model: Model,
    ratio: float = 0.5,
    *,
    mode: str = "unstructured",
    scope: str = "global",
    protect: Sequence[str] = (),
    sparse: bool = False,
) -> PruneReport:
    """Zero the smallest weights (``mode='unstructured'``, ``ratio`` of them) or keep 2 of every 4 (``'2:4'``)."""
    if mode not in ("unstructured", "2:4"):
        raise GraphoptError(f"weight pruning mode must be 'unstructured' or '2:4', got {mode!r}")
    if mode == "unstructured":
        _check_ratio(ratio, "weight pruning ratio")
    if scope not in ("global", "layer"):
        raise GraphoptError(f"weight pruning scope must be 'global' or 'layer', got {scope!r}")
    check_names(model, {"protect": protect})
    report = PruneReport("weights" if mode == "unstructured" else "2:4", float(ratio) if mode != "2:4" else 0.5)
    rx = [re.compile(p) for p in protect]
    before = layer_costs(model)
    report.param_bytes_before = initializer_bytes(model)
    targets = [
        (n, w)
        for n, w in transform.weight_inputs(model.graph)
        if not any(n.name == p.pattern or p.fullmatch(n.name or "") for p in rx)
    ]
    if not targets:
        raise GraphoptError("nothing to prune: no Conv/ConvTranspose/Gemm/MatMul with a constant float weight")
    shared: dict[int, list[Node]] = {}
    for n, w in targets:
        shared.setdefault(id(w), []).append(n)
    arrays = {id(w): w.constant().numpy() for _, w in targets}  # type: ignore[union-attr]
    unique = list({id(w): w for _, w in targets}.values())
    if mode == "2:4":
        masks = [transform.two_four_mask(arrays[id(w)], shared[id(w)][0]) for w in unique]
    else:
        masks = transform.magnitude_masks([arrays[id(w)] for w in unique], float(ratio), scope)
    sparsity: dict[int, float] = {}
    stored = 0
    for w, mask in zip(unique, masks, strict=True):
        dense = np.where(mask, arrays[id(w)], 0).astype(arrays[id(w)].dtype)
        sparsity[id(w)] = float(1.0 - np.count_nonzero(dense) / max(1, dense.size))
        new = model.graph.make_constant(Tensor.from_numpy(dense), f"{w.name}_sparse")
        for n in shared[id(w)]:
            n.replace_input(w, new)
        if sparse and transform.to_sparse(model.graph, new, dense):
            stored += 1
    if sparse:
        report.sparse_stored, report.sparse_weights = stored, len(unique)
    PassManager("dce").run(model)
    after = layer_costs(model)
    report.layers = _changes(before, after)
    by_node = {n.name: sparsity[id(w)] for n, w in targets}
    for layer in report.layers:
        layer.sparsity = by_node.get(layer.name)
    report.macs_before = report.macs_after = _total(before)
    report.param_bytes_after = initializer_bytes(model)
    if not sparse:
        size = (
            "the file is no smaller either: the zeros are stored like any weight (they compress well under zip; "
            "--sparse-initializers stores a weight sparse where that is smaller, above 2/3 zeros in float32)"
        )
    elif stored < len(unique):
        size = (
            f"{len(unique) - stored} of the {len(unique)} weights stay dense, where sparse would be larger (each value "
            "kept costs an 8-byte index too: float32 needs more than 2/3 zeros)"
        )
    else:
        size = "every pruned weight is stored sparse (smaller than dense)"
    report.note = (
        "unstructured and 2:4 sparsity keep every shape: onnxruntime has no sparse kernels, so the model is not "
        f"faster on CPU; {size}; 2:4 is for TensorRT's sparse tensor cores"
    )
    return report


def measure(
    before: onnx.ModelProto | Model,
    after: onnx.ModelProto | Model,
    runs: int = 20,
    threads: int | None = 1,
    sample: Mapping[str, np.ndarray] | None = None,
) -> tuple[float, float]:
    """Median onnxruntime latency (ms) of the model before and after, interleaved, on the same inputs (``sample``,
    else inputs the model before takes)."""
    from graphopt.tools import runtime

    a = runtime.session(before, threads=threads)
    b = runtime.session(after, threads=threads)
    feeds = dict(sample) if sample is not None else sample_inputs(before)
    la, lb = runtime.measure_latency([a, b], feeds, warmup=3, runs=runs)
    return la.median_ms, lb.median_ms


CHANNEL_OPTIONS = ("multiple", "importance", "protect", "layer_ratios", "borders", "shapes")
WEIGHT_OPTIONS = ("scope", "protect", "sparse")
FASTER = 0.97
"""Channel pruning is kept only when the pruned model's median latency is at most this share of the model's before
(timing noise on a model pruning cannot speed up must not pass as a win)."""
MIN_MAC_GAIN = 0.1
"""Channel pruning that removes less than this share of the model's MACs is refused: it cannot make the model
reliably faster (the layers it thins are not where the time goes)."""


def run_pruning(
    model: Model,
    channels: float | None,
    weights: float | str | None,
    options: Mapping[str, Any],
    *,
    bench: int = 0,
    sample: Mapping[str, np.ndarray] | None = None,
) -> list[PruneReport]:
    """Channel pruning, then weight pruning, as asked; ``weights`` is a ratio or ``"2:4"``.

    With ``bench`` runs, the model is timed before and after (1 thread, interleaved medians; the last report gets
    the latency), and channel pruning that does not make it faster, measured twice, is an error ("nothing to prune":
    the model is put back as it was). So is channel pruning that removes under MIN_MAC_GAIN of the MACs."""
    unknown = sorted(set(options) - set(CHANNEL_OPTIONS) - set(WEIGHT_OPTIONS))
    if unknown:
        raise GraphoptError(f"unknown pruning option {unknown[0]!r}")
    if channels is None and options.get("layer_ratios"):  # weight pruning has no per-layer ratio: it would do nothing
        raise GraphoptError("--prune-layer sets a channel pruning ratio: it needs --prune-channels")
    reports = []
    snapshot = model.to_onnx() if bench > 0 else None
    before_channels = snapshot if snapshot is not None or channels is None else model.to_onnx()
    if channels is not None:
        opts = {k: v for k, v in options.items() if k in CHANNEL_OPTIONS}
        # finds its input after the group check; puts the model back from this run's copy if the result fails to load
        report = prune_channels(model, channels, sample=sample, unpruned=before_channels, **opts)
        sample = report.sample
        reports.append(report)
        if report.macs_before and report.macs_after > (1 - MIN_MAC_GAIN) * report.macs_before:
            if snapshot is None:
                snapshot = before_channels
            from graphopt.core.onnx_io import from_proto

            model.take_contents(from_proto(snapshot))
            gain = 1 - report.macs_after / report.macs_before
            blocked = f"; {_reasons(report)}" if report.blocked else ""
            raise GraphoptError(
                f"nothing to prune: {report.groups_pruned} of {report.groups} channel groups can be pruned{blocked}; "
                f"at {channels:g} that removes only {gain:.1%} of the MACs, too little to make the model faster, so "
                "the model is left as it was"
            )
    if weights is not None:
        opts = {k: v for k, v in options.items() if k in WEIGHT_OPTIONS}
        if weights == "2:4":
            reports.append(prune_weights(model, mode="2:4", **opts))
        else:
            reports.append(prune_weights(model, _ratio(weights), **opts))
    if snapshot is not None and reports:
        if sample is None:
            sample = sample_inputs(snapshot, options.get("shapes"))
        pruned = model.to_onnx()
        before_ms, after_ms = measure(snapshot, pruned, runs=bench, sample=sample)
        if channels is not None and after_ms > FASTER * before_ms:  # once more: a busy machine's stall is transient
            before_ms, after_ms = measure(snapshot, pruned, runs=bench, sample=sample)
        reports[-1].latency_ms = (before_ms, after_ms)
        if channels is not None and after_ms > FASTER * before_ms:
            from graphopt.core.onnx_io import from_proto

            model.take_contents(from_proto(snapshot))
            raise GraphoptError(
                f"nothing to prune: the pruned model is not faster ({before_ms:.3g} ms -> {after_ms:.3g} ms, median "
                f"of {bench} interleaved runs, 1 thread; MACs {reports[0].macs_before} -> {reports[0].macs_after}), "
                "so the model is left as it was (--prune-bench 0 skips this check)"
            )
    return reports


def _ratio(value: float | str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise GraphoptError(f"weight pruning takes a ratio in [0, 1) or '2:4', got {value!r}") from None
