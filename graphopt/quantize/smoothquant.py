"""SmoothQuant: move activation outliers into the weights before static int8, exactly, in the float model.

A MatMul ``Y = X @ W`` equals ``(X / s) @ (diag(s) W)`` for any positive per-input-channel ``s``. With
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` (``max|X_j|`` measured on the calibration data, ``max|W_j|`` over the
weight's row j) the channels that carry outliers are divided down and their weight rows scaled up, so one per-tensor
activation scale wastes fewer levels on a few channels (Xiao et al., 2022).

The division by ``s`` is folded offline into whatever produces ``X``, only where that is exact:

* a LayerNormalization over the last axis (gamma and beta divided by ``s``);
* a MatMul/Gemm with a constant weight (its output columns and bias divided by ``s``), or such a MatMul followed by
  a bias Add;

and only when every reader of ``X`` is one of the smoothed MatMuls (they then all get the same ``s``, computed over
all their weights), and ``X`` is not a graph output. Where the producer cannot take the fold (a residual Add also
reads a LayerNorm's output, a GELU produces ``X``), ``X / s`` is an explicit ``Mul`` by a constant inserted in front
of the smoothed MatMuls (``mode="mul"``), or the MatMul is left alone (``mode="fold"``). Either way the smoothed float
model computes the same function as the original (up to float rounding), which the tests check under onnxruntime.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Node, Value, constant_array
from graphopt.core.tensors import Tensor
from graphopt.quantize.analysis import FLOAT, SHARE

MODES = ("fold", "mul")
SCALE_LIMIT = 1e4
"""Smoothing scales are clipped to [1/SCALE_LIMIT, SCALE_LIMIT] so that no weight row or activation channel is pushed
out of float32's comfortable range by a channel that calibration saw (nearly) empty."""


@dataclass
class Smoothed:
    """One smoothed activation: the MatMuls that read it, where ``1/s`` went, and the range of ``s``."""

    activation: str
    layers: list[str]
    fold: str
    """``LayerNormalization <name>``, ``MatMul <name>``, ``Gemm <name>``, or ``Mul`` (an inserted Mul)."""
    scale_min: float
    scale_max: float


def _weight_rows(node: Node) -> tuple[np.ndarray, int] | None:
    """The constant weight of a MatMul/Gemm that multiplies its activation input 0, and the weight axis indexed by the
    activation's last (input-channel) axis; None when the node is not such a layer."""
    if node.domain not in STANDARD_DOMAINS or node.op_type not in ("MatMul", "Gemm") or len(node.inputs) < 2:
        return None
    x, w = node.inputs[0], node.inputs[1]
    if x is None or x.const is not None or x.dtype != FLOAT:
        return None
    data = constant_array(w)
    if data is None or data.dtype != np.float32 or data.ndim != 2:
        return None
    if node.op_type == "Gemm":
        if int(node.attr("transA", 0)):
            return None
        return data, 1 if int(node.attr("transB", 0)) else 0
    return data, 0


def candidates(graph: Graph, allowed: set[str] | None = None) -> dict[str, list[Node]]:
    """Smoothable layers grouped by the activation they read: MatMul/Gemm of the main graph with a constant 2-D float
    weight (``allowed``: node names to consider, None for all)."""
    groups: dict[str, list[Node]] = {}
    for n in graph:
        if allowed is not None and n.name not in allowed:
            continue
        if _weight_rows(n) is None:
            continue
        x = n.inputs[0]
        assert x is not None and x.name is not None
        groups.setdefault(x.name, []).append(n)
    return groups


def scales(act_absmax: np.ndarray, weights: list[tuple[np.ndarray, int]], alpha: float) -> np.ndarray:
    """``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)``, over all weights that read the activation; 1 where either
    maximum is 0 (an unused channel or an all-zero weight row) or not finite."""
    a = np.asarray(act_absmax, dtype=np.float64)
    w = np.zeros_like(a)
    for data, axis in weights:
        other = 1 - axis
        w = np.maximum(w, np.max(np.abs(data.astype(np.float64)), axis=other))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.power(a, alpha) / np.power(w, 1.0 - alpha)
    s = np.where((a > 0) & (w > 0) & np.isfinite(s), s, 1.0)
    return np.clip(s, 1.0 / SCALE_LIMIT, SCALE_LIMIT)


def _only_readers(x: Value, nodes: list[Node], graph: Graph) -> bool:
    ids = {id(n) for n in nodes}
    return all(id(u) in ids for u, _ in x.uses) and not graph.is_output(x) and not x.is_graph_input(graph)


def _const(graph: Graph, data: np.ndarray, base: str | None) -> Value:
    return graph.make_constant(
        Tensor.from_numpy(np.ascontiguousarray(data.astype(np.float32))), f"{base or 'w'}_smooth"
    )


def _fold_into_producer(graph: Graph, x: Value, inv: np.ndarray) -> str | None:
    """Multiply ``x``'s channels (last axis) by ``inv`` inside its producer; what was changed, or None if not exact."""
    p = x.producer
    if (
        p is None
        or p.graph is not graph
        or p.domain not in STANDARD_DOMAINS
        or len(p.outputs) < 1
        or p.outputs[0] is not x
    ):
        return None
    k = inv.shape[0]
    if p.op_type == "LayerNormalization":
        rank = len(x.shape) if x.shape is not None else None
        axis = int(p.attr("axis", -1))
        if rank is None or axis not in (-1, rank - 1) or any(o is not None and o.uses for o in p.outputs[1:]):
            return None
        gamma = constant_array(p.inputs[1])
        beta = constant_array(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2] is not None else None
        if gamma is None or gamma.shape != (k,) or gamma.dtype != np.float32:
            return None
        if len(p.inputs) > 2 and p.inputs[2] is not None and (beta is None or beta.shape != (k,)):
            return None
        p.set_input(1, _const(graph, gamma * inv, p.inputs[1].name))  # type: ignore[union-attr]
        if beta is not None:
            p.set_input(2, _const(graph, beta * inv, p.inputs[2].name))  # type: ignore[union-attr]
        return f"LayerNormalization {p.name}"
    if p.op_type == "Add" and len(p.inputs) == 2:
        # a bias Add after a MatMul whose output nothing else reads
        for bi in (0, 1):
            b, y = p.inputs[bi], p.inputs[1 - bi]
            bias = constant_array(b)
            if bias is None or y is None or bias.dtype != np.float32 or bias.shape[-1:] != (k,):
                continue
            if any(d != 1 for d in bias.shape[:-1]) or (x.shape is not None and len(bias.shape) > len(x.shape)):
                continue
            mm = y.producer
            if mm is None or mm.op_type != "MatMul" or y.single_user() is not p or _weight_cols(mm, k) is None:
                continue
            data = _weight_cols(mm, k)
            assert data is not None
            mm.set_input(1, _const(graph, data * inv[None, :], mm.inputs[1].name))  # type: ignore[union-attr]
            p.set_input(bi, _const(graph, bias * inv, b.name))  # type: ignore[union-attr]
            return f"MatMul {mm.name} + bias {p.name}"
        return None
    if p.op_type == "MatMul":
        data = _weight_cols(p, k)
        if data is None:
            return None
        p.set_input(1, _const(graph, data * inv[None, :], p.inputs[1].name))  # type: ignore[union-attr]
        return f"MatMul {p.name}"
    if p.op_type == "Gemm" and not int(p.attr("transA", 0)):
        w = constant_array(p.inputs[1])
        if w is None or w.ndim != 2 or w.dtype != np.float32:
            return None
        trans = int(p.attr("transB", 0))
        if (w.shape[0] if trans else w.shape[1]) != k:
            return None
        c = constant_array(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2] is not None else None
        if len(p.inputs) > 2 and p.inputs[2] is not None and (c is None or c.shape not in ((k,), (1, k))):
            return None
        p.set_input(1, _const(graph, w * (inv[:, None] if trans else inv[None, :]), p.inputs[1].name))  # type: ignore[union-attr]
        if c is not None:
            p.set_input(2, _const(graph, c * inv.reshape(c.shape), p.inputs[2].name))  # type: ignore[union-attr]
        return f"Gemm {p.name}"
    return None


def _produced_by(x: Value, names: Collection[str]) -> bool:
    p = x.producer
    while p is not None and p.op_type in SHARE and p.inputs and p.inputs[0] is not None:
        p = p.inputs[0].producer
    return p is not None and p.name in names


def _weight_cols(node: Node, k: int) -> np.ndarray | None:
    """The constant 2-D float weight of a MatMul whose output has ``k`` channels (columns)."""
    if node.domain not in STANDARD_DOMAINS or len(node.inputs) < 2:
        return None
    data = constant_array(node.inputs[1])
    if data is None or data.dtype != np.float32 or data.ndim != 2 or data.shape[1] != k:
        return None
    return data


def smooth(
    graph: Graph,
    act_absmax: Mapping[str, np.ndarray],
    alpha: float,
    *,
    mode: str = "mul",
    allowed: set[str] | None = None,
    int8_producers: Collection[str] = (),
) -> list[Smoothed]:
    """Smooth the candidate layers of ``graph`` in place with the calibrated per-channel ``act_absmax`` (activation
    name -> max |x| per last-axis channel); returns what was smoothed. Layers whose activation was not measured, or
    whose channel count does not match their weight, are left alone. No Mul goes after an activation produced
    (through scale-sharing ops) by one of ``int8_producers``: its data is int8 already, and a float Mul would only
    cut it off from its reader."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must be in [0, 1], got {alpha}")
    if mode not in MODES:
        raise ValueError(f"smoothing mode must be one of {MODES}, got {mode!r}")
    done: list[Smoothed] = []
    by_name = {}
    for n in graph:
        for v in n.inputs:
            if v is not None and v.name:
                by_name.setdefault(v.name, v)
    for name, nodes in candidates(graph, allowed).items():
        amax = act_absmax.get(name)
        x = by_name.get(name)
        if amax is None or x is None:
            continue
        amax = np.asarray(amax, dtype=np.float64).reshape(-1)
        weights = [_weight_rows(n) for n in nodes]
        if any(w is None or w[0].shape[w[1]] != amax.shape[0] for w in weights):
            continue
        s = scales(amax, weights, alpha)  # type: ignore[arg-type]
        if np.allclose(s, 1.0):
            continue
        inv = (1.0 / s).astype(np.float32)
        fold = _fold_into_producer(graph, x, inv) if _only_readers(x, nodes, graph) else None
        if fold is None:
            if mode != "mul" or _produced_by(x, int8_producers):
                continue
            out = Value(graph.unique_name(f"{name}_smoothed"), FLOAT, x.shape)
            mul = Node(
                "Mul",
                [x, _const(graph, inv, f"{name}_inv_scale")],
                outputs=[out],
                name=graph.unique_name(f"{name}_Smooth"),
            )
            if x.producer is not None and x.producer.graph is graph:
                graph.insert_after(x.producer, mul)
            else:
                graph.insert_before(next(iter(graph)), mul)
            for n in nodes:
                n.set_input(0, out)
            fold = "Mul"
        for n, (data, axis) in zip(nodes, weights, strict=True):  # type: ignore[misc]
            shape = [1, 1]
            shape[axis] = -1
            n.set_input(1, _const(graph, data * s.astype(np.float32).reshape(shape), n.inputs[1].name))  # type: ignore[union-attr]
        done.append(Smoothed(name, [n.name or n.op_type for n in nodes], fold, float(s.min()), float(s.max())))
    return done
