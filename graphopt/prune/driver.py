"""Pruning driver: structured channel pruning and unstructured / 2:4 weight sparsity, with their report.

The graph work is in ``graphopt.passes.prune``; this module validates the request, runs the probe that measures what
removed channels still produced, counts MACs and parameters per layer before and after, and can time the model
before and after in onnxruntime.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
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
from graphopt.tools.summary import initializer_bytes

logger = logging.getLogger("graphopt.prune")

LINEAR = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _check_ratio(ratio: float, what: str) -> None:
    if not (isinstance(ratio, int | float) and 0.0 <= float(ratio) < 1.0):
        raise GraphoptError(f"{what} must be in [0, 1), got {ratio}")


def layer_costs(model: Model) -> dict[str, LayerCost]:
    """Per Conv/ConvTranspose/Gemm/MatMul with a constant weight: channels, parameters and MACs per batch item.

    Shapes come from shape inference; where it leaves a dim symbolic (exports that compute their padding at run
    time), one onnxruntime run at batch 1 measures them.
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
        shapes.update(_runtime_shapes(model, missing))
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


def _runtime_shapes(model: Model, names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    from graphopt.tools import runtime

    wanted = list(dict.fromkeys(names))
    proto = runtime.add_outputs(model.to_onnx(), wanted)
    try:
        sess = runtime.session(proto, optimization="disabled")
        values = sess.run(wanted, runtime.make_inputs(sess, batch=1))
    except Exception as exc:  # noqa: BLE001 - counting MACs is best effort; the layers just show no MACs
        logger.debug("shape probe failed: %s", exc)
        return {}
    return {name: tuple(np.asarray(v).shape) for name, v in zip(wanted, values, strict=True)}


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


def _unmatched(model: Model, protect: Sequence[str]) -> list[str]:
    names = [n.name or "" for n in model.graph]
    out = []
    for p in protect:
        try:
            rx = re.compile(p)
        except re.error as exc:
            raise GraphoptError(f"protect pattern {p!r}: {exc}") from None
        if not any(name == p or rx.fullmatch(name) for name in names):
            out.append(p)
    return out


def prune_channels(
    model: Model,
    ratio: float,
    *,
    multiple: int = 8,
    importance: str = "l1",
    protect: Sequence[str] = (),
    layer_ratios: Mapping[str, float] | None = None,
    borders: str = "exact",
) -> PruneReport:
    """Remove ``ratio`` of the channels of every prunable group of ``model`` (in place); returns the report.

    ``borders``: "exact" keeps what removed channels still produce exactly, adding a constant map after a padded
    reader whose border differs; "bias" folds only the interior value into the bias (no maps; approximate at the
    borders of padded readers).
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
    model.graph.name_unnamed_nodes()
    report = PruneReport("channels", float(ratio), unmatched_protect=_unmatched(model, protect))
    for p in report.unmatched_protect:
        logger.warning("protect pattern %r matches no node", p)
    before = layer_costs(model)
    report.param_bytes_before = initializer_bytes(model)
    graph = model.graph
    analysis = channel_groups.analyse(graph, protect)
    roots = {analysis.find(g) for g in range(len(analysis.groups))}
    candidates = [r for r in roots if analysis.groups[r].producers]
    report.groups = len(candidates)
    for r in candidates:
        why = analysis.groups[r].blocked
        if why:
            report.blocked[why] = report.blocked.get(why, 0) + 1
    prunable = [r for r in candidates if not analysis.groups[r].blocked]
    if not prunable:
        reasons = ", ".join(f"{k} ({v})" for k, v in sorted(report.blocked.items())) or "no Conv or Gemm layers"
        raise GraphoptError(f"nothing to prune: no channel group can be pruned safely ({reasons})")
    keep = channel_groups.choose(analysis, float(ratio), multiple, importance, dict(layer_ratios or {}))
    report.groups_pruned = len(keep)
    if keep:
        readers = transform.readers_with_removed_inputs(graph, analysis, keep)
        signals = _probe(model, analysis, keep, readers)
        report.folded = sum(1 for s in signals.values() if np.any(s))
        report.border_maps = transform.remove_channels(graph, analysis, keep, signals, borders)
        PassManager("dce,remove-unused").run(model)
    after = layer_costs(model)
    report.layers = _changes(before, after)
    report.macs_before, report.macs_after = _total(before), _total(after)
    report.param_bytes_after = initializer_bytes(model)
    return report


def _probe(
    model: Model, analysis: channel_groups.Analysis, keep: dict[int, np.ndarray], readers: list
) -> dict[int, np.ndarray]:
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
    sess = runtime.session(proto, optimization="disabled")
    feeds = runtime.make_inputs(sess, batch=1)
    values = sess.run([v.name for v in readers], feeds)
    out = {}
    for v, arr in zip(readers, values, strict=True):
        mask = channel_groups.kept_positions(analysis, v, keep)
        out[id(v)] = np.asarray(arr)[0][~mask].astype(np.float64)  # type: ignore[operator]
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
    model.graph.name_unnamed_nodes()
    report = PruneReport("weights" if mode == "unstructured" else "2:4", float(ratio) if mode != "2:4" else 0.5)
    report.unmatched_protect = _unmatched(model, protect)
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
    for w, mask in zip(unique, masks, strict=True):
        dense = np.where(mask, arrays[id(w)], 0).astype(arrays[id(w)].dtype)
        sparsity[id(w)] = float(1.0 - np.count_nonzero(dense) / max(1, dense.size))
        new = model.graph.make_constant(Tensor.from_numpy(dense), f"{w.name}_sparse")
        for n in shared[id(w)]:
            n.replace_input(w, new)
        if sparse:
            transform.to_sparse(model.graph, new, dense)
    PassManager("dce").run(model)
    after = layer_costs(model)
    report.layers = _changes(before, after)
    by_node = {n.name: sparsity[id(w)] for n, w in targets}
    for layer in report.layers:
        layer.sparsity = by_node.get(layer.name)
    report.macs_before = report.macs_after = _total(before)
    report.param_bytes_after = initializer_bytes(model)
    report.note = (
        "unstructured and 2:4 sparsity keep every shape: onnxruntime has no sparse kernels, so the model is not "
        "faster on CPU (it compresses better; 2:4 is for TensorRT's sparse tensor cores)"
    )
    return report


def measure(
    before: onnx.ModelProto | Model, after: onnx.ModelProto | Model, runs: int = 20, threads: int | None = 1
) -> tuple[float, float]:
    """Median onnxruntime latency (ms) of the model before and after, interleaved, on the same random inputs."""
    from graphopt.tools import runtime

    a = runtime.session(before, threads=threads)
    b = runtime.session(after, threads=threads)
    feeds = runtime.make_inputs(a, batch=1)
    la, lb = runtime.measure_latency([a, b], feeds, warmup=3, runs=runs)
    return la.median_ms, lb.median_ms


CHANNEL_OPTIONS = ("multiple", "importance", "protect", "layer_ratios", "borders")
WEIGHT_OPTIONS = ("scope", "protect", "sparse")


def run_pruning(
    model: Model, channels: float | None, weights: float | str | None, options: Mapping[str, Any]
) -> list[PruneReport]:
    """Channel pruning, then weight pruning, as asked; ``weights`` is a ratio or ``"2:4"``."""
    unknown = sorted(set(options) - set(CHANNEL_OPTIONS) - set(WEIGHT_OPTIONS))
    if unknown:
        raise GraphoptError(f"unknown pruning option {unknown[0]!r}")
    reports = []
    if channels is not None:
        reports.append(prune_channels(model, channels, **{k: v for k, v in options.items() if k in CHANNEL_OPTIONS}))
    if weights is not None:
        opts = {k: v for k, v in options.items() if k in WEIGHT_OPTIONS}
        if weights == "2:4":
            reports.append(prune_weights(model, mode="2:4", **opts))
        else:
            reports.append(prune_weights(model, _ratio(weights), **opts))
    return reports


def _ratio(value: float | str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise GraphoptError(f"weight pruning takes a ratio in [0, 1) or '2:4', got {value!r}") from None
