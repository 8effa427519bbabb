"""graphopt: a graph-level compiler for ONNX models.

Load a model into graphopt's IR, rewrite it with passes, and save it again::

    import graphopt
    model = graphopt.optimize("model.onnx", level=2)
    graphopt.save(model, "model.opt.onnx")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are imported on first use (PEP 562): `import graphopt` alone, as the pytest plugin's entry point does in every
# pytest session of the environment, costs no onnx, numpy or onnxruntime import.
_EXPORTS = {
    "optimize": "graphopt.api",
    "Difference": "graphopt.compare",
    "GraphDiff": "graphopt.compare",
    "diff": "graphopt.compare",
    "ExternalDataError": "graphopt.errors",
    "GraphoptError": "graphopt.errors",
    "IRError": "graphopt.errors",
    "ModelLoadError": "graphopt.errors",
    "PassError": "graphopt.errors",
    "from_graphsurgeon": "graphopt.gs",
    "to_graphsurgeon": "graphopt.gs",
    "Attribute": "graphopt.ir",
    "Function": "graphopt.ir",
    "Graph": "graphopt.ir",
    "Model": "graphopt.ir",
    "Node": "graphopt.ir",
    "Value": "graphopt.ir",
    "check": "graphopt.onnx_io",
    "from_proto": "graphopt.onnx_io",
    "load": "graphopt.onnx_io",
    "save": "graphopt.onnx_io",
    "to_proto": "graphopt.onnx_io",
    "PassManager": "graphopt.pass_manager",
    "PassReport": "graphopt.pass_manager",
    "PassStats": "graphopt.pass_manager",
    "Option": "graphopt.passes_api",
    "Pass": "graphopt.passes_api",
    "PassContext": "graphopt.passes_api",
    "get_pass": "graphopt.passes_api",
    "list_passes": "graphopt.passes_api",
    "register_pass": "graphopt.passes_api",
    "Tensor": "graphopt.tensors",
}

if TYPE_CHECKING:
    from graphopt.api import optimize
    from graphopt.compare import Difference, GraphDiff, diff
    from graphopt.errors import ExternalDataError, GraphoptError, IRError, ModelLoadError, PassError
    from graphopt.gs import from_graphsurgeon, to_graphsurgeon
    from graphopt.ir import Attribute, Function, Graph, Model, Node, Value
    from graphopt.onnx_io import check, from_proto, load, save, to_proto
    from graphopt.pass_manager import PassManager, PassReport, PassStats
    from graphopt.passes_api import Option, Pass, PassContext, get_pass, list_passes, register_pass
    from graphopt.tensors import Tensor


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'graphopt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    "Attribute",
    "Difference",
    "GraphDiff",
    "ExternalDataError",
    "Function",
    "Graph",
    "GraphoptError",
    "IRError",
    "Model",
    "ModelLoadError",
    "Node",
    "Option",
    "Pass",
    "PassContext",
    "PassError",
    "PassManager",
    "PassReport",
    "PassStats",
    "Tensor",
    "Value",
    "check",
    "diff",
    "from_graphsurgeon",
    "from_proto",
    "get_pass",
    "list_passes",
    "load",
    "optimize",
    "register_pass",
    "save",
    "to_graphsurgeon",
    "to_proto",
]
