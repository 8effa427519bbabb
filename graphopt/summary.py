"""Facts about a model for people and scripts: opsets, inputs/outputs, op histogram, parameters, subgraphs."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from graphopt.ir import Graph, Model, Value
from graphopt.tensors import Tensor, dtype_name


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
            ops[f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type] += 1
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
