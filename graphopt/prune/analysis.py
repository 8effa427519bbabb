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
the input, so one onnxruntime run of the model with those weights zeroed (on inputs the model takes) gives it; at
each reading Gemm or unpadded Conv it is a constant whose effect goes into the bias. At a padded Conv its effect
differs at the border, and the border effect of a constant channel is itself a convolution of a constant map with
zero padding: one removed channel per group stays as a *carrier* (producer weights zeroed, so a constant), and the
padded readers' weights for it take the other removed channels' weights scaled by their constants. Exact at every
input size and no node added; a group where that cannot hold (a removed channel that varies across the map, as
after a padded depthwise Conv) is left whole. So removing channels whose weights are all zero leaves the outputs
unchanged, up to float rounding.

**prune-weights** zeroes the smallest weights of Conv/ConvTranspose/Gemm/MatMul (global or per-layer magnitude), or
keeps the 2 largest of every 4 consecutive input-channel weights (``2:4``, for sparse tensor cores). Shapes do not
change: onnxruntime has no sparse kernels, so this makes a model more compressible, not faster on CPU.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Node, Value, constant_array
from graphopt.passes.union_find import UnionFind

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
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "PRelu"})
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
        self.layers: dict[str, np.ndarray] = {}
        """Conv/Gemm name -> the groups of its output channels: its own (a Conv of group 1, a Gemm), its input's (a
        depthwise Conv: its channels are pruned with the groups they come from), a blocked one (a grouped Conv)."""

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


def channels_of(v: Value | None) -> int | None:
    """The channel count (axis 1) of an activation of rank >= 2 with a static channel dim."""
    if v is None or v.shape is None or len(v.shape) < 2:
        return None
    c = v.shape[1]
    return c if isinstance(c, int) and c > 0 else None


def _spatial_ones(v: Value | None) -> bool:
    return v is not None and v.shape is not None and all(isinstance(d, int) and d == 1 for d in v.shape[2:])


def per_channel(c: np.ndarray, channels: int, rank: int) -> str | None:
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
        c = channels_of(v)
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
        cout = channels_of(outs[0])
        if wc is None or cout is None or x is None:
            a.block(x, "Conv with a non-constant weight")
            return
        group = int(n.attr("group", 1))
        cin = channels_of(x)
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
        if n.name:
            a.layers[n.name] = a.of(outs[0])[0]  # type: ignore[index]
        return
    if op == "Gemm":
        x, w = ins[0], ins[1]
        if constant_array(w) is None or int(n.attr("transA", 0)) or x is None or x.shape is None or len(x.shape) != 2:
            a.block(x, "Gemm this pass cannot slice")
            return
        cout = channels_of(outs[0])
        if cout is not None:
            a.simple(outs[0], a.new_group(cout, n, blocked="protected layer" if protected(n) else None), cout)  # type: ignore[operator]
            if n.name:
                a.layers[n.name] = a.of(outs[0])[0]  # type: ignore[index]
        return
    tracked = [v for v in ins if a.of(v) is not None]
    if not tracked:
        return
    if op in UNARY or op in NORM:
        x = ins[0]
        extra_ok = all(v is None or v.constant() is not None for v in ins[1:])
        if op in NORM:
            c = channels_of(x)
            params = [constant_array(v) for v in ins[1:]]
            extra_ok = all(p is not None and p.ndim == 1 and p.shape[0] == c for p in params)
        # BatchNorm's running stats, Dropout's mask, MaxPool's indices (which number the channels): untracked tensors
        # whose size is the channels'
        if any(o is not None and (o.uses or o.is_graph_output()) for o in outs[1:]):
            extra_ok = False
        if (
            a.of(x) is None
            or not extra_ok
            or outs[0] is None
            or channels_of(outs[0]) != channels_of(x)
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
        out_c = channels_of(outs[0])
        rank = len(outs[0].shape) if outs[0].shape is not None else None
        acts = [v for v in ins if v is not None and v.constant() is None]
        ok = rank is not None and out_c is not None
        for v in ins:
            c = constant_array(v)
            if c is not None:
                ok = ok and per_channel(c, out_c, rank) is not None  # type: ignore[arg-type]
            elif a.of(v) is None or channels_of(v) != out_c:
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
            c = channels_of(v)
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
        sizes = [channels_of(o) for o in outs]
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


@dataclass
class Plan:
    """One group's channels by importance: the ``real`` most important must stay, ``total`` (rounded up to the
    multiple) are kept. The rounding slack lets a carrier channel (see ``transform.plan_carriers``) take the place of
    the last kept one without growing the group."""

    order: np.ndarray
    real: int
    total: int
    multiple: int = 1

    def _top(self, k: int) -> np.ndarray:
        mask = np.zeros(len(self.order), dtype=bool)
        mask[self.order[:k]] = True
        return mask

    def probe_mask(self) -> np.ndarray:
        """The channels the probe keeps: the spare (the last of ``total``) is measured as removed, so that a carrier
        can take its place. The spare is beyond ``real`` (rounding slack) or, with a multiple above 1, the least
        important real channel: the count stays a multiple. With multiple 1 and no slack a carrier is one more."""
        spare = self.total >= 2 and (self.total - 1 >= max(1, self.real) or self.multiple > 1)
        return self._top(self.total - 1 if spare else self.total)

    def candidates(self) -> list[int]:
        """Channels that can become the carrier: the ones the probe measured as removed, most important first."""
        probe = self.probe_mask()
        return [int(c) for c in self.order if not probe[c]]

    def mask(self, carrier: int | None = None) -> np.ndarray:
        if carrier is None:
            return self._top(self.total)
        mask = self.probe_mask()
        mask[carrier] = True
        return mask


def plan(
    a: Analysis,
    ratio: float,
    multiple: int = 8,
    importance: str = "l1",
    layer_ratios: dict[str, float] | None = None,
) -> dict[int, Plan]:
    """Per prunable group root: its channels by importance and how many to keep. ``layer_ratios`` (Conv/Gemm name ->
    ratio) set the ratio of the groups of the layer's output channels (:func:`group_ratios`)."""
    plans: dict[int, Plan] = {}
    ratios, _ = group_ratios(a, layer_ratios or {})
    for root in sorted({a.find(g) for g in range(len(a.groups))}):
        grp = a.groups[root]
        if grp.blocked or not grp.producers:
            continue
        r = ratios.get(root, ratio)
        score = np.zeros(grp.size)
        for p in grp.producers:
            rows = _producer_rows(p)
            if rows.shape[0] != grp.size:
                break
            score += np.abs(rows).sum(axis=1) if importance == "l1" else np.sqrt(np.square(rows).sum(axis=1))
        else:
            real = max(1, math.ceil(grp.size * (1.0 - r)))
            total = real
            if multiple > 1:
                total = min(grp.size, max(multiple, math.ceil(real / multiple) * multiple))
            if total >= grp.size:
                continue
            plans[root] = Plan(np.argsort(-score, kind="stable"), real, total, multiple)
    return plans


def group_ratios(a: Analysis, layer_ratios: Mapping[str, float]) -> tuple[dict[int, float], list[str]]:
    """The ratio of each group root ``layer_ratios`` (``--prune-layer``: Conv/Gemm name -> ratio) sets, and what is
    wrong with them (one phrase per layer, for an error): a layer the channel analysis does not track (a Conv with a
    non-constant weight, a Gemm it cannot slice), a layer whose channels are in no prunable group (a grouped Conv, a
    group a graph output, an untracked reader or ``--prune-protect`` blocks: a ratio above 0 would prune nothing),
    and two layers whose channels prune together given different ratios. A depthwise Conv's channels are its input's:
    its ratio is that of the groups they come from (the producing Conv's, merged with whatever shares them)."""
    ratios: dict[int, float] = {}
    by: dict[int, str] = {}
    problems = []
    for name, r in layer_ratios.items():
        groups = a.layers.get(name)
        if groups is None:
            if r > 0:
                problems.append(
                    f"--prune-layer {name!r}: a layer this pass cannot slice (not a Conv or Gemm with a "
                    "constant weight and a tracked input), so it prunes nothing"
                )
            continue
        roots = sorted({a.find(int(g)) for g in groups})
        blocked = [a.groups[g].blocked for g in roots if a.groups[g].blocked or not a.groups[g].producers]
        if len(blocked) == len(roots) and r > 0:
            why = next((b for b in blocked if b), "no Conv or Gemm produces its channels")
            problems.append(f"--prune-layer {name!r}: its channels are in no group that can be pruned ({why})")
            continue
        clash = next((g for g in roots if g in ratios and ratios[g] != r), None)
        if clash is not None:
            problems.append(
                f"--prune-layer '{by[clash]}={ratios[clash]:g}' and '{name}={r:g}': their channels are pruned "
                "together (one channel group), so they take one ratio"
            )
            continue
        for g in roots:
            ratios[g], by[g] = r, name
    return ratios, problems


def choose(
    a: Analysis,
    ratio: float,
    multiple: int = 8,
    importance: str = "l1",
    layer_ratios: dict[str, float] | None = None,
) -> dict[int, np.ndarray]:
    """Per prunable group root: a boolean mask of the channels to keep (no carrier)."""
    return {r: p.mask() for r, p in plan(a, ratio, multiple, importance, layer_ratios).items()}


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
