"""onnx-graphsurgeon interop: convert models both ways, and run graphsurgeon functions as graphopt passes.

    graph = graphopt.to_graphsurgeon("model.onnx")       # an onnx_graphsurgeon.Graph
    model = graphopt.from_graphsurgeon(graph)            # a graphopt Model

    @graphopt.register_pass("fold-my-pattern", graphsurgeon=True)
    def fold_my_pattern(graph, **options):               # graph: onnx_graphsurgeon.Graph, edited in place
        ...                                               # an existing graphsurgeon script, unchanged

A graphsurgeon pass sees the whole model (main graph; graphsurgeon reaches subgraphs itself). After it returns,
graphopt runs graphsurgeon's ``cleanup().toposort()`` and takes the result back only if the model changed.
"""

from __future__ import annotations

from typing import Any

import onnx

from graphopt.core.ir import Model


def _gs() -> Any:
    import onnx_graphsurgeon as gs

    return gs


def to_graphsurgeon(model: Any) -> Any:
    """An ``onnx_graphsurgeon.Graph`` of a path, ModelProto or graphopt Model (external data read in)."""
    from graphopt.core.onnx_io import load, to_proto

    proto = model if isinstance(model, onnx.ModelProto) else to_proto(load(model))
    return _gs().import_onnx(proto)


def from_graphsurgeon(graph: Any) -> Model:
    """A graphopt Model of an ``onnx_graphsurgeon.Graph``."""
    from graphopt.core.onnx_io import from_proto

    return from_proto(_gs().export_onnx(graph))


def run_graphsurgeon(func: Any, model: Model, options: dict[str, Any]) -> bool:
    """Run ``func(gs_graph, **options)`` on ``model``; adopt the result into ``model`` if anything changed."""
    from graphopt.core.onnx_io import from_proto, to_proto

    graph = _gs().import_onnx(to_proto(model))
    # graphsurgeon exports what it imported with its own defaults: compare against its export before the function
    baseline = _gs().export_onnx(graph)
    func(graph, **options)
    graph.cleanup().toposort()
    after = _gs().export_onnx(graph)
    if after.graph == baseline.graph and list(after.functions) == list(baseline.functions):
        return False
    model.take_contents(from_proto(after))
    return True
