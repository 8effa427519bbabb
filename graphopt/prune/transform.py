"""Pruning's graph edits: removing the chosen channels (slicing weights, biases, BatchNorm parameters and readers'
input axes, and folding what removed channels still produced into their readers), and unstructured / 2:4 weight
masks. The channel groups come from :mod:`graphopt.prune.analysis`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Node, Value, constant_array, weight_axes
from graphopt.core.tensors import Tensor
from graphopt.errors import GraphoptError
from graphopt.prune.analysis import BINARY, NORM, Analysis, Plan, kept_positions, per_channel


# --------------------------------------------------------------------------------------------------------------------
# removing channels
# --------------------------------------------------------------------------------------------------------------------
def _newconstant_array(graph: Graph, old: Value, arr: np.ndarray, dtype: np.dtype) -> Value:
    return graph.make_constant(Tensor.from_numpy(np.ascontiguousarray(arr.astype(dtype))), f"{old.name}_pruned")


def _slice_input(graph: Graph, n: Node, i: int, mask: np.ndarray, axis: int) -> None:
    v = n.inputs[i]
    arr = constant_array(v)
    if v is None or arr is None:
        return
    n.set_input(i, _newconstant_array(graph, v, np.compress(mask, arr, axis=axis), arr.dtype))


@dataclass
class Signal:
    """What the removed channels of one Conv/Gemm input carry, measured by the probe: per channel position of the
    input that the probe zeroed, its value (at the centre for a map) and whether it is the same everywhere."""

    positions: np.ndarray
    values: np.ndarray
    constant: np.ndarray

    def at(self, pos: int) -> tuple[float, bool]:
        i = int(np.searchsorted(self.positions, pos))
        if i >= len(self.positions) or self.positions[i] != pos:
            raise KeyError(pos)  # the probe zeroed every position removed or made a carrier; defensive
        return float(self.values[i]), bool(self.constant[i])


def measured(arr: np.ndarray, positions: np.ndarray) -> Signal:
    """A Signal from a probe output ``arr`` (batch of one dropped: ``[channels, *spatial]``) at ``positions``."""
    values = np.zeros(len(positions))
    constant = np.zeros(len(positions), dtype=bool)
    for k, p in enumerate(positions):
        m = np.asarray(arr[p], dtype=np.float64).reshape(-1)
        if m.size == 0:
            constant[k] = True
            continue
        values[k] = m[m.size // 2]
        scale = max(1.0, float(np.abs(m).max())) if np.isfinite(m).all() else np.inf
        constant[k] = bool(np.isfinite(scale) and np.abs(m - m[0]).max() <= 1e-6 * scale)
        if constant[k]:
            values[k] = m[0]
    return Signal(np.asarray(positions, dtype=np.int64), values, constant)


def same_at_both_sizes(signals: dict[int, Signal], other: dict[int, Signal]) -> None:
    """Mark as varying (not constant) what the probe at another input size measured differently."""
    for key, sig in signals.items():
        o = other.get(key)
        if o is None or len(o.values) != len(sig.values):
            sig.constant[:] = False
            continue
        scale = np.maximum(1.0, np.abs(sig.values))
        sig.constant &= o.constant & (np.abs(sig.values - o.values) <= 1e-5 * scale)


def padded(n: Node) -> bool:
    """A Conv whose zero padding makes a constant input's contribution differ at the border."""
    if str(n.attr("auto_pad", "NOTSET")) in ("SAME_UPPER", "SAME_LOWER"):
        return True
    return any(int(p) != 0 for p in (n.attr("pads") or []))


BORDER_FALLBACK = "removed channels that vary across the map (a padded depthwise Conv or pool on their path)"
NO_CARRIER = "no removed channel non-zero at every padded reader to carry the border"


def plan_carriers(
    graph: Graph,
    a: Analysis,
    plans: dict[int, Plan],
    signals: dict[int, Signal],
    borders: str = "exact",
) -> tuple[dict[int, np.ndarray], dict[int, int], dict[int, str]]:
    """Final kept masks, carrier channels and the groups left whole (with why), from the probe's ``signals``.

    A removed channel carries a constant at each reader (its bias through the group's per-channel ops). At a Conv
    without padding, or a Gemm, that constant's contribution is the same at every position: it goes into the bias.
    At a padded Conv it differs at the border: the contribution of a constant map with zero padding is itself a
    convolution of a constant map, so one removed channel of the group is kept as a *carrier* (its producer weights
    zeroed: a constant channel) and the reader's weights for it take the other removed channels' weights scaled by
    their constants. Exact at every input size, one channel per group, no node added. A group whose removed
    channels are not constant maps at some reader (a padded depthwise Conv between), or where no removed channel is
    non-zero at every reader that needs the carrier, is left whole."""
    probe_keep = {r: p.probe_mask() for r, p in plans.items()}
    dropped: dict[int, str] = {}
    need: dict[int, list[tuple[Value, np.ndarray]]] = {}
    for n in graph:
        if not is_reader(n):
            continue
        x = n.inputs[0]
        mask = kept_positions(a, x, probe_keep)
        sig = signals.get(id(x))
        if mask is None or sig is None:
            continue
        roots = a.roots(x)
        w = constant_array(n.inputs[1])
        for p in np.flatnonzero(~mask):
            value, constant = sig.at(int(p))
            root = int(roots[p])
            if not constant and borders == "exact":
                dropped.setdefault(root, BORDER_FALLBACK)
            border = n.op_type == "Conv" and borders == "exact" and padded(n) and value != 0 and np.any(w[:, p])
            if border and not any(v is x for v, _ in need.get(root, [])):
                need.setdefault(root, []).append((x, mask))
    keep: dict[int, np.ndarray] = {}
    carriers: dict[int, int] = {}
    for root, plan in plans.items():
        if root in dropped:
            continue
        readers = need.get(root)
        if not readers:
            keep[root] = plan.mask()
            continue
        best, best_score = None, 0.0
        for c in plan.candidates():
            score = np.inf
            for x, mask in readers:
                roots, index, sig = a.roots(x), a.of(x)[1], signals[id(x)]  # type: ignore[index]
                mine = np.flatnonzero((roots == root) & ~mask)
                scale = max(abs(sig.at(int(p))[0]) for p in mine)
                vals = [abs(sig.at(int(p))[0]) for p in mine if index[p] == c]
                score = min(score, max(vals) / scale if vals and scale > 0 else 0.0)
            if np.isfinite(score) and score > best_score:
                best, best_score = c, score
        if best is None or best_score < 1e-3:
            dropped[root] = NO_CARRIER
            continue
        mask = plan.mask(carrier=best)
        if mask.all():
            dropped[root] = NO_CARRIER
            continue
        keep[root] = mask
        carriers[root] = best
    return keep, carriers, dropped


def is_reader(n: Node) -> bool:
    """A Conv (not grouped) or Gemm: its input channels are summed, so removed ones must be folded."""
    return n.op_type == "Gemm" or (n.op_type == "Conv" and int(n.attr("group", 1)) == 1)


def remove_channels(
    graph: Graph,
    a: Analysis,
    keep: dict[int, np.ndarray],
    signals: dict[int, Signal],
    borders: str = "exact",
    carriers: dict[int, int] | None = None,
    opset: int | None = None,
) -> tuple[int, int]:
    """Slice every tensor of the kept groups and fold what removed channels still produce into their readers.

    ``signals`` maps id(Value) of each Conv/Gemm input with removed channels to what the probe measured there;
    ``carriers`` maps a group root to its carrier channel (kept, producer weights zeroed). ``borders="bias"`` folds
    the interior value of padded readers into the bias (approximate at the border) instead of the carrier. Returns
    (readers that took the removed channels' signal, of those through a carrier's weights). ``opset``: the model's
    default-domain opset (how a Split takes its sizes; None: 13 or later)."""
    carriers = carriers or {}
    for root, c in carriers.items():  # the carrier: a constant channel, as in the probe
        for p in a.groups[root].producers:
            w = constant_array(p.inputs[1]).copy()  # type: ignore[union-attr]
            index = [slice(None)] * w.ndim
            index[weight_axes(p)[0]] = c  # type: ignore[index, call-overload]
            w[tuple(index)] = 0
            p.set_input(1, graph.make_constant(Tensor.from_numpy(w), f"{p.inputs[1].name}_carrier"))  # type: ignore[union-attr]
    folded = via_carrier = 0
    for n in list(graph):
        op = n.op_type
        ins = n.inputs
        if op in ("Conv", "Gemm"):
            x = ins[0]
            in_mask = kept_positions(a, x, keep) if x is not None else None
            out_mask = kept_positions(a, n.outputs[0], keep) if n.outputs[0] is not None else None
            depthwise = op == "Conv" and int(n.attr("group", 1)) > 1
            if in_mask is not None and not depthwise:
                how = _fold_removed_input(graph, a, n, in_mask, signals.get(id(x)), borders, carriers)
                folded += how > 0
                via_carrier += how == 2
                w_axis = weight_axes(n)[1]  # type: ignore[index]
                _slice_input(graph, n, 1, in_mask, w_axis)
            if out_mask is not None:
                ins = n.inputs  # folding may have given the node a bias
                w_axis = weight_axes(n)[0]  # type: ignore[index]
                _slice_input(graph, n, 1, out_mask, w_axis)
                if len(ins) > 2 and ins[2] is not None:
                    b = constant_array(n.inputs[2])
                    if b is not None and b.ndim == 1 and b.shape[0] == len(out_mask):
                        _slice_input(graph, n, 2, out_mask, 0)
                    elif b is not None and b.ndim == 2 and b.shape[-1] == len(out_mask):
                        _slice_input(graph, n, 2, out_mask, 1)
                if depthwise:
                    n.set_attr("group", int(out_mask.sum()))
        elif op in NORM or op in BINARY:
            out = n.outputs[0]
            mask = kept_positions(a, out, keep) if out is not None else None
            if mask is None:
                continue
            for i in range(len(ins)):
                c = constant_array(ins[i])
                if c is None:
                    continue
                if op in NORM:
                    _slice_input(graph, n, i, mask, 0)
                elif per_channel(c, len(mask), len(out.shape)) == "channel":  # type: ignore[arg-type]
                    _slice_input(graph, n, i, mask, c.ndim - len(out.shape) + 1)  # type: ignore[arg-type]
        elif op == "Split":
            _resize_split(graph, a, n, keep, opset)
    for v in a.values.values():
        mask = kept_positions(a, v, keep)
        if mask is not None and v.shape is not None:
            v.shape = (v.shape[0], int(mask.sum()), *v.shape[2:])
            for kind in ("value_info", "output", "input"):  # the file's own listing of the old size must not be kept
                graph.info_overrides.pop((kind, v), None)
    return folded, via_carrier


def _resize_split(graph: Graph, a: Analysis, n: Node, keep: dict[int, np.ndarray], opset: int | None) -> None:
    """Give a Split that cuts tracked channels (the analysis laid its outputs out on axis 1) its pruned sizes. A Split
    the analysis does not track (another axis, after a Reshape, unknown sizes) is left as it is: its input's groups
    are blocked, so none of its channels is removed. Sizes the Split did not spell out (an equal split, opset 18's
    ``num_outputs``) are written out: the pruned parts need not be equal."""
    outs = [o for o in n.outputs if o is not None]
    if a.of(n.inputs[0]) is None or len(outs) != len(n.outputs) or any(a.of(o) is None for o in outs):
        return
    masks = [kept_positions(a, o, keep) for o in outs]
    if all(m is None for m in masks):
        return
    sizes = [int(m.sum()) if m is not None else len(a.of(o)[0]) for o, m in zip(outs, masks, strict=True)]  # type: ignore[index]
    ins = n.inputs
    if len(ins) > 1 and ins[1] is not None:
        n.set_input(1, graph.make_constant(Tensor.from_numpy(np.array(sizes, np.int64)), "split_pruned"))
    elif n.attr("split") is not None or (opset is not None and opset < 13):
        n.set_attr("split", sizes)
    else:
        n.attrs.pop("num_outputs", None)
        split = graph.make_constant(Tensor.from_numpy(np.array(sizes, np.int64)), "split_pruned")
        n.set_inputs([ins[0], split])


def _fold_removed_input(
    graph: Graph,
    a: Analysis,
    n: Node,
    in_mask: np.ndarray,
    signal: Signal | None,
    borders: str,
    carriers: dict[int, int],
) -> int:
    """Add what the removed input channels of Conv/Gemm ``n`` contributed to its output: to its bias, or (a padded
    Conv) to the weights of the carrier channel of their group. Returns 0 (nothing to add), 1 (bias) or 2 (carrier)."""
    removed = np.flatnonzero(~in_mask)
    if signal is None or not len(removed):
        return 0
    values = np.array([signal.at(int(p))[0] for p in removed])
    if not np.any(values):
        return 0
    w0 = constant_array(n.inputs[1])
    w = w0.astype(np.float64)  # type: ignore[union-attr]
    if n.op_type == "Gemm":
        rows = w[removed] if not int(n.attr("transB", 0)) else w[:, removed].T
        _add_bias(graph, n, float(n.attr("alpha", 1.0)) * (values @ rows), float(n.attr("beta", 1.0)), w0.dtype)
        return 1
    spatial = tuple(range(1, w.ndim - 1))
    if borders == "bias" or not padded(n):
        # no padding: every output window sees the constant whole, so its contribution is the same everywhere
        extra = np.einsum("r,or->o", values, w[:, removed].sum(axis=tuple(s + 1 for s in spatial)))
        _add_bias(graph, n, extra, 1.0, w0.dtype)
        return 1
    x = n.inputs[0]
    roots, lay = a.roots(x), a.of(x)  # type: ignore[arg-type]
    changed = False
    for root in sorted({int(roots[p]) for p in removed}):
        mine = [k for k, p in enumerate(removed) if roots[p] == root and values[k] != 0 and np.any(w[:, p])]
        if not mine:
            continue
        c = carriers[root]  # plan_carriers gave every group a padded reader needs one
        q = next(p for p in np.flatnonzero(in_mask) if roots[p] == root and lay[1][p] == c)  # type: ignore[index]
        t = signal.at(int(q))[0]
        w[:, q] += np.tensordot(values[mine], w[:, removed[mine]], axes=([0], [1])) / t
        changed = True
    if changed:
        n.set_input(1, graph.make_constant(Tensor.from_numpy(w.astype(w0.dtype)), f"{n.inputs[1].name}_folded"))  # type: ignore[union-attr]
    return 2 if changed else 0


def _add_bias(graph: Graph, n: Node, extra: np.ndarray, beta: float, dtype: np.dtype) -> None:
    ins = n.inputs
    bias_v = ins[2] if len(ins) > 2 else None
    b = constant_array(bias_v)
    if bias_v is not None and b is None:
        raise GraphoptError(f"{n.name}: bias is not a constant")  # analysis only keeps constant biases; defensive
    base = np.zeros(len(extra)) if b is None else np.broadcast_to(b.astype(np.float64), (len(extra),))
    new = base + np.asarray(extra) / beta
    dtype = b.dtype if b is not None else dtype
    v = graph.make_constant(Tensor.from_numpy(new.astype(dtype)), f"{n.name or n.op_type}_bias_folded")
    if len(ins) > 2:
        n.set_input(2, v)
    else:
        n.set_inputs([*ins, v])


def zeroed_copy(graph: Graph, a: Analysis, keep: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """Per producer weight name: the weight with its removed output channels set to zero (for the probe run)."""
    out: dict[str, np.ndarray] = {}
    for root, mask in keep.items():
        for p in a.groups[root].producers:
            w = constant_array(p.inputs[1]).copy()  # type: ignore[union-attr]
            axis = weight_axes(p)[0]  # type: ignore[index]
            index = [slice(None)] * w.ndim
            index[axis] = ~mask  # type: ignore[call-overload]
            w[tuple(index)] = 0
            out[p.inputs[1].name] = w  # type: ignore[union-attr]
    return out


def readers_with_removed_inputs(graph: Graph, a: Analysis, keep: dict[int, np.ndarray]) -> list[Value]:
    """Inputs of Conv (group 1) and Gemm nodes that lose channels: their removed channels must be folded."""
    seen: dict[int, Value] = {}
    for n in graph:
        if n.op_type in ("Conv", "Gemm") and not (n.op_type == "Conv" and int(n.attr("group", 1)) > 1):
            x = n.inputs[0]
            if x is not None and kept_positions(a, x, keep) is not None:
                seen[id(x)] = x
    return list(seen.values())


# --------------------------------------------------------------------------------------------------------------------
# unstructured and 2:4
# --------------------------------------------------------------------------------------------------------------------
PRUNABLE_WEIGHTS = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def weight_inputs(graph: Graph) -> list[tuple[Node, Value]]:
    found = []
    for n in graph:
        if n.op_type in PRUNABLE_WEIGHTS and n.domain in STANDARD_DOMAINS and len(n.inputs) > 1:
            w = n.inputs[1]
            c = constant_array(w)
            if w is not None and c is not None and c.dtype.kind == "f" and c.ndim >= 2:
                found.append((n, w))
    return found


def two_four_mask(w: np.ndarray, node: Node) -> np.ndarray:
    """Keep the 2 largest of every 4 consecutive weights along the input-channel axis."""
    axes = weight_axes(node, w.ndim)
    axis = axes[1] if axes is not None else w.ndim - 2
    moved = np.moveaxis(np.abs(w), axis, -1)
    k = moved.shape[-1]
    pad = (-k) % 4
    padded = np.concatenate([moved, np.full((*moved.shape[:-1], pad), -1.0)], axis=-1) if pad else moved
    blocks = padded.reshape(*padded.shape[:-1], -1, 4)
    order = np.argsort(-blocks, axis=-1, kind="stable")
    keep = np.zeros_like(blocks, dtype=bool)
    np.put_along_axis(keep, order[..., :2], True, axis=-1)
    keep = keep.reshape(padded.shape)[..., :k]
    return np.moveaxis(keep, -1, axis)


def magnitude_masks(weights: Iterable[np.ndarray], ratio: float, scope: str) -> list[np.ndarray]:
    """Masks keeping the largest ``1 - ratio`` of the weights, per layer or over all layers (global)."""
    weights = list(weights)
    if scope == "layer":
        masks = []
        for w in weights:
            n_drop = int(math.floor(w.size * ratio))
            if n_drop == 0:
                masks.append(np.ones(w.shape, dtype=bool))
                continue
            threshold = np.partition(np.abs(w).reshape(-1), n_drop - 1)[n_drop - 1]
            masks.append(np.abs(w) > threshold)
        return masks
    flat = np.concatenate([np.abs(w).reshape(-1) for w in weights])
    n_drop = int(math.floor(flat.size * ratio))
    if n_drop == 0:
        return [np.ones(w.shape, dtype=bool) for w in weights]
    threshold = np.partition(flat, n_drop - 1)[n_drop - 1]
    return [np.abs(w) > threshold for w in weights]


SPARSE_INDEX_BYTES = 8
"""Bytes of one index of an ONNX sparse tensor as graphopt writes it (COO, one int64 linear index per value)."""


def sparse_nbytes(dense: np.ndarray) -> int:
    """Bytes of ``dense`` stored as an ONNX sparse tensor: the non-zero values and their int64 linear indices."""
    nnz = int(np.count_nonzero(dense))
    return nnz * (dense.dtype.itemsize + SPARSE_INDEX_BYTES)


def to_sparse(graph: Graph, value: Value, dense: np.ndarray) -> bool:
    """Store ``value`` (an initializer) as a sparse initializer (COO, linear indices) when that is smaller than
    dense: each value kept costs its index too (8 bytes), so a float32 weight needs more than 2/3 zeros. Returns
    whether it was stored sparse (False: left dense)."""
    from graphopt.core.tensors import SparseTensor

    if sparse_nbytes(dense) >= dense.nbytes:
        return False
    flat = dense.reshape(-1)
    idx = np.flatnonzero(flat).astype(np.int64)
    values = onnx.numpy_helper.from_array(flat[idx], value.name)
    indices = onnx.numpy_helper.from_array(idx, f"{value.name}_indices")
    sparse = onnx.helper.make_sparse_tensor(values, indices, list(dense.shape))
    graph.initializers.pop(value.name, None)
    value.const = SparseTensor(sparse)
    graph.sparse_initializers[value.name] = value
    return True
