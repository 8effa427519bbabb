"""Weight pruning: structured channel pruning that removes channels from the graph, and unstructured / 2:4 sparsity.

**prune-channels** builds channel dependency groups over the main graph (NCHW activations, channel axis 1; 2D Gemm
activations, axis 1). Every tensor that carries channels gets a layout: for each of its channels, the group and the
index in that group it comes from. A Conv (group 1) or Gemm starts a new group with its output channels; elementwise
unary ops, pooling and BatchNormalization pass the layout on; a depthwise Conv ties its output to its input; Concat
lays its inputs' layouts end to end and Split cuts them; Add/Sub/Mul/Div/Max/Min merge the groups of their inputs
(union-find: residual blocks and squeeze-excitation gates prune together) and slice per-channel constants along; a
Flatten of ``[N, C, 1, 1]`` keeps the layout. Everything else blocks the groups it reads (never a wrong graph), and so
do graph inputs and outputs and protected layers.

Kept channels are chosen per group by the L1 (or L2) norm of the producers' weights summed over the group, rounded
up to a multiple (default 8). Removing a channel physically slices every weight, bias, BatchNorm parameter and
per-channel constant of the group, and the input axis of each Conv/Gemm that reads it.

**What a removed channel still produced is kept.** A removed channel is replaced by what it computes when its
producers' weights are zero: its bias, carried through the group's per-channel ops. That signal does not depend on
the input, so one onnxruntime run of the model with those weights zeroed gives it exactly; its effect on each reading
Conv (a convolution of it with the removed input channels' weights, padding borders included) or Gemm becomes a bias
(when it is the same at every position) or a constant added after that layer. So removing channels whose weights are
all zero leaves the outputs unchanged, up to float rounding.

**prune-weights** zeroes the smallest weights of Conv/ConvTranspose/Gemm/MatMul (global or per-layer magnitude), or
keeps the 2 largest of every 4 consecutive input-channel weights (``2:4``, for sparse tensor cores). Shapes do not
change: onnxruntime has no sparse kernels, so this makes a model more compressible, not faster on CPU.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from graphopt.errors import GraphoptError
from graphopt.ir import STANDARD_DOMAINS, Graph, Node, Value, constant_array, weight_axes
from graphopt.passes_api import Option, Pass, PassContext, register_pass
from graphopt.tensors import Tensor

from .union_find import UnionFind

UNARY = frozenset(
    {
        "Relu",
        "Clip",
        "Sigmoid",
        "Tanh",
        "LeakyRelu",
        "HardSigmoid",
        "HardSwish",
        "Elu",
        "Selu",
        "Softplus",
        "Softsign",
        "Identity",
        "Dropout",
        "Erf",
        "Neg",
        "Abs",
        "Exp",
        "Sqrt",
        "Gelu",
        "Mish",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "LpPool",
        "GlobalLpPool",
        "Cast",
    }
)
"""Ops that map each channel to the same channel, input-independently of other channels (extra inputs constant)."""
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min"})
NORM = frozenset({"BatchNormalization", "InstanceNormalization"})


# --------------------------------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Group:
    size: int
    producers: list[Node] = field(default_factory=list)
    """Conv (group 1) and Gemm nodes whose output channels are this group's channels."""
    blocked: str | None = None
    """Why the group cannot be pruned (None: it can)."""


class Analysis:
    """Channel layouts of the tensors of one graph and the dependency groups behind them."""

    def __init__(self) -> None:
        self.groups: list[Group] = []
        self.sets: UnionFind[int] = UnionFind()
        self.layout: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        """id(Value) -> (group per channel, index in the group per channel)."""
        self.values: dict[int, Value] = {}

    # groups ------------------------------------------------------------------------------------------------------
    def new_group(self, size: int, producer: Node | None = None, blocked: str | None = None) -> int:
        self.groups.append(Group(size, [producer] if producer is not None else [], blocked))
        self.sets.add(len(self.groups) - 1)
        return len(self.groups) - 1

    def find(self, g: int) -> int:
        return self.sets.find(g)

    def union(self, a: int, b: int) -> None:
        joined = self.sets.union(a, b)
        if joined is not None:  # the kept root's Group takes the absorbed one's producers and blocking reason
            ga, gb = self.groups[joined[0]], self.groups[joined[1]]
            ga.producers += gb.producers
            ga.blocked = ga.blocked or gb.blocked

    def group(self, g: int) -> Group:
        return self.groups[self.find(g)]

    # layouts -------------------------------------------------------------------------------------------------------
    def set(self, v: Value, groups: np.ndarray, index: np.ndarray) -> None:
        self.layout[id(v)] = (groups, index)
        self.values[id(v)] = v

    def simple(self, v: Value, g: int, n: int) -> None:
        self.set(v, np.full(n, g), np.arange(n))

    def of(self, v: Value | None) -> tuple[np.ndarray, np.ndarray] | None:
        return self.layout.get(id(v)) if v is not None else None

    def block(self, v: Value | None, why: str) -> None:
        lay = self.of(v)
        if lay is None:
            return
        for g in set(lay[0].tolist()):
            grp = self.group(g)
            grp.blocked = grp.blocked or why

    def roots(self, v: Value) -> np.ndarray:
        groups, _ = self.layout[id(v)]
        return np.array([self.find(int(g)) for g in groups], dtype=np.int64)


def _channels(v: Value | None) -> int | None:
    """The channel count (axis 1) of an activation of rank >= 2 with a static channel dim."""
    if v is None or v.shape is None or len(v.shape) < 2:
        return None
    c = v.shape[1]
    return c if isinstance(c, int) and c > 0 else None


def _spatial_ones(v: Value | None) -> bool:
    return v is not None and v.shape is not None and all(isinstance(d, int) and d == 1 for d in v.shape[2:])


def _per_channel(c: np.ndarray, channels: int, rank: int) -> str | None:
    """How a constant broadcasts on the channel axis of a rank-``rank`` activation: 'channel', 'none', or None."""
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    if shape[0] != 1:
        return None
    if shape[1] == channels and channels > 1:
        return "channel"
    return "none" if shape[1] == 1 else None


def analyse(graph: Graph, protect: Sequence[str] = ()) -> Analysis:
    """Channel layouts and dependency groups of ``graph`` (shapes must be inferred)."""
    a = Analysis()
    patterns = [re.compile(p) for p in protect]

    def protected(n: Node) -> bool:
        """A protected layer: its name is one of ``protect`` or matches one of them as a whole regex."""
        name = n.name or ""
        return name in protect or any(p.fullmatch(name) for p in patterns)

    for v in graph.inputs:
        c = _channels(v)
        if c is not None and v.const is None:
            a.simple(v, a.new_group(c, blocked="graph input"), c)
    for n in graph:
        _visit(a, n, protected)
    for v in graph.outputs:
        a.block(v, "graph output")
    for n in graph.all_nodes():
        if n.graph is not graph:  # an If/Loop/Scan body reading a main-graph tensor expects all its channels
            for v in n.inputs:
                a.block(v, "read inside a subgraph")
    return a


def _visit(a: Analysis, n: Node, protected: object) -> None:  # noqa: C901 - one case per op family
    op = n.op_type
    ins = n.inputs
    outs = n.outputs
    if n.domain not in STANDARD_DOMAINS or any(True for _ in n.subgraphs()):
        for v in ins:
            a.block(v, f"read by {op}")
        return
    if op == "Conv":
        x, w = ins[0], ins[1] if len(ins) > 1 else None
        wc = constant_array(w)
        cout = _channels(outs[0])
        if wc is None or cout is None or x is None:
            a.block(x, "Conv with a non-constant weight")
            return
        group = int(n.attr("group", 1))
        cin = _channels(x)
        if group == 1:
            g = a.new_group(cout, n, blocked="protected layer" if protected(n) else None)  # type: ignore[operator]
            a.simple(outs[0], g, cout)
        elif cin is not None and group == cin == cout and wc.shape[1] == 1 and a.of(x) is not None:
            groups, index = a.of(x)  # type: ignore[misc]
            a.set(outs[0], groups.copy(), index.copy())  # depthwise: channel c of the output is channel c of x
            if protected(n):  # type: ignore[operator]
                a.block(x, "protected layer")
        else:
            a.block(x, "grouped Conv")
            a.simple(outs[0], a.new_group(cout, blocked="grouped Conv"), cout)
        return
    if op == "Gemm":
        x, w = ins[0], ins[1]
        if constant_array(w) is None or int(n.attr("transA", 0)) or x is None or x.shape is None or len(x.shape) != 2:
            a.block(x, "Gemm this pass cannot slice")
            return
        cout = _channels(outs[0])
        if cout is not None:
            a.simple(outs[0], a.new_group(cout, n, blocked="protected layer" if protected(n) else None), cout)  # type: ignore[operator]
        return
    tracked = [v for v in ins if a.of(v) is not None]
    if not tracked:
        return
    if op in UNARY or op in NORM:
        x = ins[0]
        extra_ok = all(v is None or v.constant() is not None for v in ins[1:])
        if op in NORM:
            c = _channels(x)
            params = [constant_array(v) for v in ins[1:]]
            extra_ok = all(p is not None and p.ndim == 1 and p.shape[0] == c for p in params)
            if op == "BatchNormalization" and any(o is not None and o.uses for o in outs[1:]):
                extra_ok = False
        if (
            a.of(x) is None
            or not extra_ok
            or outs[0] is None
            or _channels(outs[0]) != _channels(x)
            or any(v is not x and a.of(v) is not None for v in ins[1:])
        ):
            for v in tracked:
                a.block(v, f"read by {op}")
            return
        if op in ("AveragePool", "LpPool", "MaxPool") and int(n.attr("ceil_mode", 0)):
            a.block(x, f"{op} with ceil_mode")  # its border windows mix padding in per position
            return
        a.set(outs[0], *a.of(x))  # type: ignore[misc]
        return
    if op in BINARY and len(ins) == 2 and outs[0] is not None:
        out_c = _channels(outs[0])
        rank = len(outs[0].shape) if outs[0].shape is not None else None
        acts = [v for v in ins if v is not None and v.constant() is None]
        ok = rank is not None and out_c is not None
        for v in ins:
            c = constant_array(v)
            if c is not None:
                ok = ok and _per_channel(c, out_c, rank) is not None  # type: ignore[arg-type]
            elif a.of(v) is None or _channels(v) != out_c:
                ok = False
        if not ok:
            for v in tracked:
                a.block(v, f"read by {op}")
            return
        first = a.of(acts[0])
        for other in acts[1:]:
            lay = a.of(other)
            if first is None or lay is None or len(lay[0]) != len(first[0]):
                ok = False
                break
            # merge position by position: both inputs must carry the same channel at each position
            for g1, i1, g2, i2 in zip(first[0], first[1], lay[0], lay[1], strict=True):
                if i1 != i2 or a.group(int(g1)).size != a.group(int(g2)).size:
                    ok = False
                    break
                a.union(int(g1), int(g2))
        if not ok or first is None:
            for v in tracked:
                a.block(v, f"read by {op}")
            return
        a.set(outs[0], *first)
        return
    if op == "Concat" and int(n.attr("axis", 0)) in (1, -((len(outs[0].shape) if outs[0].shape else 0) - 1)):
        parts = []
        for v in ins:
            lay = a.of(v)
            c = _channels(v)
            if lay is None:
                if c is None:
                    for t in tracked:
                        a.block(t, "Concat of an input with unknown channels")
                    return
                lay = (np.full(c, a.new_group(c, blocked="untracked Concat input")), np.arange(c))
            parts.append(lay)
        a.set(outs[0], np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        return
    if op == "Flatten" and int(n.attr("axis", 1)) == 1 and _spatial_ones(ins[0]) and a.of(ins[0]) is not None:
        a.set(outs[0], *a.of(ins[0]))  # type: ignore[misc]
        return
    if op == "Split" and int(n.attr("axis", 0)) == 1 and a.of(ins[0]) is not None:
        groups, index = a.of(ins[0])  # type: ignore[misc]
        sizes = [_channels(o) for o in outs]
        if all(s is not None for s in sizes) and sum(sizes) == len(groups):  # type: ignore[arg-type]
            start = 0
            for o, s in zip(outs, sizes, strict=True):
                a.set(o, groups[start : start + s], index[start : start + s])  # type: ignore[arg-type, operator]
                start += s  # type: ignore[operator]
            return
    for v in tracked:
        a.block(v, f"read by {op}")


# --------------------------------------------------------------------------------------------------------------------
# choosing channels
# --------------------------------------------------------------------------------------------------------------------
def _producer_rows(n: Node) -> np.ndarray:
    """The producer's weight as [output channel, everything else]."""
    w = constant_array(n.inputs[1]).astype(np.float64)  # type: ignore[union-attr]
    if n.op_type == "Gemm" and not int(n.attr("transB", 0)):
        w = w.T
    return w.reshape(w.shape[0], -1)


def choose(
    a: Analysis,
    ratio: float,
    multiple: int = 8,
    importance: str = "l1",
    layer_ratios: dict[str, float] | None = None,
) -> dict[int, np.ndarray]:
    """Per prunable group root: a boolean mask of the channels to keep."""
    keep: dict[int, np.ndarray] = {}
    layer_ratios = layer_ratios or {}
    for root in sorted({a.find(g) for g in range(len(a.groups))}):
        grp = a.groups[root]
        if grp.blocked or not grp.producers:
            continue
        r = ratio
        for p in grp.producers:
            if p.name in layer_ratios:
                r = layer_ratios[p.name]
        score = np.zeros(grp.size)
        for p in grp.producers:
            rows = _producer_rows(p)
            if rows.shape[0] != grp.size:
                break
            score += np.abs(rows).sum(axis=1) if importance == "l1" else np.sqrt(np.square(rows).sum(axis=1))
        else:
            n_keep = max(1, math.ceil(grp.size * (1.0 - r)))
            if multiple > 1:
                n_keep = min(grp.size, max(multiple, math.ceil(n_keep / multiple) * multiple))
            if n_keep >= grp.size:
                continue
            order = np.argsort(-score, kind="stable")
            mask = np.zeros(grp.size, dtype=bool)
            mask[order[:n_keep]] = True
            keep[root] = mask
    return keep


def kept_positions(a: Analysis, v: Value, keep: dict[int, np.ndarray]) -> np.ndarray | None:
    """Boolean mask over ``v``'s channels (None when none of its channels is removed)."""
    lay = a.of(v)
    if lay is None:
        return None
    roots = a.roots(v)
    mask = np.ones(len(roots), dtype=bool)
    for p, (g, i) in enumerate(zip(roots, lay[1], strict=True)):
        m = keep.get(int(g))
        if m is not None:
            mask[p] = m[int(i)]
    return None if mask.all() else mask


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
                elif _per_channel(c, len(mask), len(out.shape)) == "channel":  # type: ignore[arg-type]
                    _slice_input(graph, n, i, mask, c.ndim - len(out.shape) + 1)  # type: ignore[arg-type]
        elif op == "Split":
            sizes = []
            for o in n.outputs:
                mask = kept_positions(a, o, keep) if o is not None else None
                sizes.append(int(mask.sum()) if mask is not None else _channels(o))
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
    from graphopt import runtime

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
    from graphopt.tensors import SparseTensor

    flat = dense.reshape(-1)
    idx = np.flatnonzero(flat).astype(np.int64)
    values = onnx.numpy_helper.from_array(flat[idx], value.name)
    indices = onnx.numpy_helper.from_array(idx, f"{value.name}_indices")
    sparse = onnx.helper.make_sparse_tensor(values, indices, list(dense.shape))
    graph.initializers.pop(value.name, None)
    value.const = SparseTensor(sparse)
    graph.sparse_initializers[value.name] = value


# --------------------------------------------------------------------------------------------------------------------
# as registered passes (for pipelines); ``--prune-channels`` / ``--prune-weights`` call the same functions
# --------------------------------------------------------------------------------------------------------------------
class _PruneOnce(Pass):
    """A pruning pass: the main graph only, once per ``optimize`` call (a fixed-point pipeline must not prune the
    pruned model again); its report is appended to ``ctx.options["pruning_reports"]``."""

    recursive = False
    lossless = False

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        key = f"_{self.name}_done"
        if graph is not ctx.model.graph or ctx.options.get(key):
            return False
        ctx.options[key] = True
        report = self.prune(ctx)
        ctx.options.setdefault("pruning_reports", []).append(report)
        return True

    def prune(self, ctx: PassContext) -> object:
        raise NotImplementedError


@register_pass(
    "prune-channels",
    description="remove a share of the channels of every prunable channel group (structured; shapes shrink)",
    options={
        "ratio": Option(float, 0.5, "share of each group's channels to remove, in [0, 1)"),
        "multiple": Option(int, 8, "round kept channels up to this multiple"),
        "importance": Option(str, "l1", "channel importance", choices=("l1", "l2")),
        "borders": Option(str, "exact", "what removed channels still produce", choices=("exact", "bias")),
    },
)
class PruneChannels(_PruneOnce):
    def prune(self, ctx: PassContext) -> object:
        from graphopt.prune import prune_channels

        report = prune_channels(ctx.model, **self.options)
        ctx.count("groups pruned", report.groups_pruned)
        return report


@register_pass(
    "prune-weights",
    description="zero the smallest weights (unstructured) or keep 2 of every 4 (mode=2:4); shapes do not change",
    options={
        "ratio": Option(float, 0.5, "share of weights to zero (unstructured), in [0, 1)"),
        "mode": Option(str, "unstructured", "sparsity pattern", choices=("unstructured", "2:4")),
        "scope": Option(str, "global", "ratio over all layers or per layer", choices=("global", "layer")),
    },
)
class PruneWeights(_PruneOnce):
    def prune(self, ctx: PassContext) -> object:
        from graphopt.prune import prune_weights

        opts = self.options
        return prune_weights(ctx.model, opts["ratio"], mode=opts["mode"], scope=opts["scope"])
