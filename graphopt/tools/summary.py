"""Facts about a model for people and scripts: opsets, inputs/outputs, op histogram, parameters, subgraphs."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Model, Value
from graphopt.core.tensors import Tensor, dtype_name


@dataclass
class ModelSummary:
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    nodes: int
    ops: dict[str, int]
    parameters: int
    parameter_bytes: int
    initializers: int
    external_bytes: int
    subgraphs: dict[str, int] = field(default_factory=dict)
    functions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_value(v: Value) -> dict[str, Any]:
    shape = None if v.shape is None else [d if d is not None else "?" for d in v.shape]
    return {"name": v.name, "dtype": dtype_name(v.dtype), "shape": shape}


def shape_str(shape: list[Any] | None) -> str:
    return "unknown rank" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def summarize(model: Model) -> ModelSummary:
    ops: Counter[str] = Counter()
    subgraphs: Counter[str] = Counter()
    params = param_bytes = external = n_inits = 0
    seen: set[int] = set()

    def count_tensor(t: Tensor) -> None:
        nonlocal params, param_bytes, external
        if id(t) in seen:
            return
        seen.add(id(t))
        params += t.size
        param_bytes += t.nbytes
        if t.is_external:
            external += t.nbytes

    graphs: list[Graph] = [model.graph, *model.graph.subgraphs()]
    for g in graphs:
        for v in g.initializers.values():
            n_inits += 1
            if isinstance(v.const, Tensor):
                count_tensor(v.const)
        for node in g:
            ops[f"{node.domain}::{node.op_type}" if node.domain not in STANDARD_DOMAINS else node.op_type] += 1
            for sub in node.subgraphs():
                subgraphs[node.op_type] += 1
                del sub
            t = node.attr("value") if node.op_type == "Constant" else None
            if isinstance(t, Tensor):
                count_tensor(t)
    return ModelSummary(
        ir_version=model.ir_version,
        producer=" ".join(x for x in (model.producer_name, model.producer_version) if x),
        opsets={(d or "ai.onnx"): v for d, v in model.opset_imports.items()},
        inputs=[describe_value(v) for v in model.graph.inputs if v.name not in model.graph.initializers],
        outputs=[describe_value(v) for v in model.graph.outputs],
        nodes=sum(ops.values()),
        ops=dict(ops.most_common()),
        parameters=params,
        parameter_bytes=param_bytes,
        initializers=n_inits,
        external_bytes=external,
        subgraphs=dict(subgraphs),
        functions=[f"{f.domain}::{f.name}" for f in model.functions.values()],
    )


def cache_dir() -> Path:
    """graphopt's per-user cache folder: ``$GRAPHOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphopt``, else
    ``~/.cache/graphopt``."""
    own = os.environ.get("GRAPHOPT_CACHE_DIR")
    if own:
        return Path(own)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "graphopt"


def initializer_bytes(model: Model) -> int:
    """Bytes of every initializer, dense and sparse, in the main graph and its subgraphs."""
    total = 0
    for g in model.graphs():
        for v in (*g.initializers.values(), *g.sparse_initializers.values()):
            if v.const is not None:
                total += v.const.nbytes
    return total


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def op_histogram(model: Model) -> dict[str, int]:
    """How many nodes of each op type the model has (subgraphs included), most common first."""
    ops: Counter[str] = Counter()
    for node in model.graph.all_nodes():
        ops[f"{node.domain}::{node.op_type}" if node.domain not in STANDARD_DOMAINS else node.op_type] += 1
    return dict(ops.most_common())


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 layer``, ``2 layers`` (``many`` for irregular plurals)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def human_count(n: float | None, unit: str = "") -> str:
    """A count with an SI prefix that never rounds a small non-zero count to 0: 1.8G, 120M, 37.6K, 864."""
    if n is None:
        return "-"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.3g}{prefix}{unit}" if value < 100 else f"{value:.0f}{prefix}{unit}"
    return f"{n:.0f}{unit}"


def middle_ellipsis(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters by removing its middle: the start and the end of a layer name are the
    parts that tell layers apart (``/encoder/layer.11/attention/dense/MatMul`` -> ``/encoder/…/dense/MatMul``)."""
    if width < 3 or len(text) <= width:
        return text
    head = (width - 1) // 2
    tail = width - 1 - head
    return text[:head] + "…" + text[-tail:]


def nearest(name: str, candidates: list[str] | set[str], n: int = 3) -> list[str]:
    """The candidates closest to ``name`` (difflib), best first; case is ignored."""
    import difflib

    pool = sorted(candidates)
    lowered = {c.lower(): c for c in pool}
    found = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[f] for f in found]


def unmatched_hint(name: str, candidates: list[str] | set[str], what: str) -> str:
    """`` (nearest: 'a', 'b')`` or `` (the model's {what}: 'x', 'y', ...)`` for a warning about ``name``."""
    near = nearest(name, candidates)
    if near:
        return " (nearest: " + ", ".join(repr(c) for c in near) + ")"
    pool = sorted(candidates)
    if not pool:
        return f" (the model has no {what})"
    shown = ", ".join(repr(c) for c in pool[:5]) + (", ..." if len(pool) > 5 else "")
    return f" (the model's {what}: {shown})"


def abbreviate_names(names: list[str], width: int) -> list[str]:
    """Names cut to ``width`` characters so that they stay apart: in a name that is too long, the path segments that
    most names share (``/inner/resnet/encoder/``, ``/convolution/``) become ``…`` first, keeping the segments that
    tell layers apart and the last one; what is still too long loses its middle."""
    split = [n.split("/") for n in names]
    counts: Counter[str] = Counter(seg for segs in split for seg in set(segs) if seg)
    boring = {seg for seg, c in counts.items() if len(names) >= 3 and c >= 0.8 * len(names)}
    out = []
    for name, segs in zip(names, split, strict=True):
        if len(name) > width and len(segs) > 2:
            kept: list[str] = []
            for i, seg in enumerate(segs):
                if seg in boring and 0 < i < len(segs) - 1:
                    if not kept or kept[-1] != "…":
                        kept.append("…")
                else:
                    kept.append(seg)
            name = "/".join(kept)
        out.append(middle_ellipsis(name, width))
    return out
