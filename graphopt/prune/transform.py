"""Pruning's graph edits: removing the chosen channels (slicing weights, biases, BatchNorm parameters and readers'
input axes, and folding what removed channels still produced into their readers), and unstructured / 2:4 weight
masks. The channel groups come from :mod:`graphopt.prune.analysis`."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import onnx

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Node, Value, constant_array, weight_axes
from graphopt.core.tensors import Tensor
from graphopt.errors import GraphoptError
from graphopt.prune.analysis import BINARY, NORM, Analysis, channels_of, kept_positions, per_channel


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


def remove_channels(
    graph: Graph,
    a: Analysis,
    keep: dict[int, np.ndarray],
    removed_values: dict[int, np.ndarray],
    borders: str = "exact",
) -> int:
    """Slice every tensor of the kept groups and fold ``removed_values`` into the readers of removed channels.

    ``removed_values`` maps id(Value) of each Conv/Gemm input with removed channels to that input's removed channels
    as computed with the producers' removed weights zeroed, shape ``[removed, *spatial]`` (batch of one dropped).
    ``borders="exact"`` adds the whole contribution map after a reader whose padding makes its border differ;
    ``"bias"`` folds only the interior value into the bias (smaller, approximate at the borders). Returns the number
    of maps added.
    """
    maps = 0
    for n in list(graph):
        op = n.op_type
        ins = n.inputs
        if op in ("Conv", "Gemm"):
            x = ins[0]
            in_mask = kept_positions(a, x, keep) if x is not None else None
            out_mask = kept_positions(a, n.outputs[0], keep) if n.outputs[0] is not None else None
            depthwise = op == "Conv" and int(n.attr("group", 1)) > 1
            if in_mask is not None and not depthwise:
                maps += _fold_removed_input(graph, a, n, in_mask, out_mask, removed_values.get(id(x)), borders)  # type: ignore[arg-type]
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
            sizes = []
            for o in n.outputs:
                mask = kept_positions(a, o, keep) if o is not None else None
                sizes.append(int(mask.sum()) if mask is not None else channels_of(o))
            if len(ins) > 1 and ins[1] is not None:
                n.set_input(1, graph.make_constant(Tensor.from_numpy(np.array(sizes, np.int64)), "split_pruned"))
            elif n.attr("split") is not None:
                n.set_attr("split", sizes)
    for v in a.values.values():
        mask = kept_positions(a, v, keep)
        if mask is not None and v.shape is not None:
            v.shape = (v.shape[0], int(mask.sum()), *v.shape[2:])
    return maps


def _fold_removed_input(
    graph: Graph,
    analysis: Analysis,
    n: Node,
    in_mask: np.ndarray,
    out_mask: np.ndarray | None,
    signal: np.ndarray | None,
    borders: str = "exact",
) -> int:
    """Add what the removed input channels of Conv/Gemm ``n`` contributed to its output: to its bias, or after it
    (returns 1 when it added a map after the layer)."""
    if signal is None or not np.any(signal):
        return 0
    removed = ~in_mask
    w = constant_array(n.inputs[1]).astype(np.float64)  # type: ignore[union-attr]
    if n.op_type == "Gemm":
        rows = w[removed] if not int(n.attr("transB", 0)) else w[:, removed].T
        extra = float(n.attr("alpha", 1.0)) * (signal.reshape(-1).astype(np.float64) @ rows)
        _add_bias(graph, n, extra, float(n.attr("beta", 1.0)))
        return 0
    contribution = _conv_of(n, signal, w[:, removed])  # [Cout, *spatial_out]
    flat = contribution.reshape(contribution.shape[0], -1)
    if np.allclose(flat, flat[:, :1], rtol=1e-6, atol=1e-7 * max(1.0, float(np.abs(flat).max()))):
        _add_bias(graph, n, flat.mean(axis=1), 1.0)
        return 0
    if borders == "bias":
        centre = tuple(d // 2 for d in contribution.shape[1:])
        _add_bias(graph, n, contribution[(slice(None), *centre)], 1.0)
        return 0
    # padding makes the border differ: add the whole map after the layer (its own kept output channels only)
    out = n.outputs[0]
    assert out is not None
    if out_mask is not None:
        contribution = contribution[out_mask]
    layout = analysis.of(out)
    cval = graph.make_constant(
        Tensor.from_numpy(contribution.astype(np.float32)), f"{n.name or 'conv'}_removed_channels"
    )
    added = Value(graph.unique_name(f"{out.name}_plus_removed"), out.dtype)
    node = Node("Add", [out, cval], outputs=[added], name=graph.unique_name(f"{n.name or 'conv'}_removed_channels_Add"))
    graph.insert_after(n, node)
    graph.replace_all_uses_with(out, added, exclude=[node])
    if layout is not None:
        analysis.set(added, *layout)  # readers later in the walk see the same channels through the Add
    return 1


def _add_bias(graph: Graph, n: Node, extra: np.ndarray, beta: float) -> None:
    ins = n.inputs
    bias_v = ins[2] if len(ins) > 2 else None
    b = constant_array(bias_v)
    if bias_v is not None and b is None:
        raise GraphoptError(f"{n.name}: bias is not a constant")  # analysis only keeps constant biases; defensive
    base = np.zeros(len(extra)) if b is None else np.broadcast_to(b.astype(np.float64), (len(extra),))
    new = base + np.asarray(extra) / beta
    v = graph.make_constant(Tensor.from_numpy(new.astype(np.float32)), f"{n.name or n.op_type}_bias_folded")
    if len(ins) > 2:
        n.set_input(2, v)
    else:
        n.set_inputs([*ins, v])


def _conv_of(n: Node, signal: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Conv ``n`` (its pads, strides, dilations; no bias) of ``signal`` [Cin', *spatial] with ``w``, in onnxruntime."""
    from graphopt.tools import runtime

    attrs = {
        k: n.attr(k) for k in ("pads", "strides", "dilations", "auto_pad", "kernel_shape") if n.attr(k) is not None
    }
    x = signal[None].astype(np.float32)
    node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
    graph = onnx.helper.make_graph(
        [node],
        "contribution",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w.astype(np.float32), "w")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    return runtime.session(model, optimization="disabled").run(None, {"x": x})[0][0]


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


def to_sparse(graph: Graph, value: Value, dense: np.ndarray) -> None:
    """Store ``value`` (an initializer) as a sparse initializer (COO, linear indices)."""
    from graphopt.core.tensors import SparseTensor

    flat = dense.reshape(-1)
    idx = np.flatnonzero(flat).astype(np.int64)
    values = onnx.numpy_helper.from_array(flat[idx], value.name)
    indices = onnx.numpy_helper.from_array(idx, f"{value.name}_indices")
    sparse = onnx.helper.make_sparse_tensor(values, indices, list(dense.shape))
    graph.initializers.pop(value.name, None)
    value.const = SparseTensor(sparse)
    graph.sparse_initializers[value.name] = value
