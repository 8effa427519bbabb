"""graphopt: a graph-level compiler for ONNX models.

Load a model into graphopt's IR, rewrite it with passes, and save it again::

    import graphopt
    model = graphopt.optimize("model.onnx", level=2)
    graphopt.save(model, "model.opt.onnx")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graphopt._lazy import lazy_exports

# Names are imported on first use (PEP 562): `import graphopt` alone, as the pytest plugin's entry point does in every
# pytest session of the environment, costs no onnx, numpy or onnxruntime import.
_EXPORTS = {
    "optimize": "graphopt.api",
    "Difference": "graphopt.tools.compare",
    "GraphDiff": "graphopt.tools.compare",
    "diff": "graphopt.tools.compare",
    "ExternalDataError": "graphopt.errors",
    "GraphoptError": "graphopt.errors",
    "IRError": "graphopt.errors",
    "ModelLoadError": "graphopt.errors",
    "PassError": "graphopt.errors",
    "from_graphsurgeon": "graphopt.core.gs",
    "to_graphsurgeon": "graphopt.core.gs",
    "Attribute": "graphopt.core.ir",
    "Function": "graphopt.core.ir",
    "Graph": "graphopt.core.ir",
    "Model": "graphopt.core.ir",
    "Node": "graphopt.core.ir",
    "Value": "graphopt.core.ir",
    "check": "graphopt.core.onnx_io",
    "from_proto": "graphopt.core.onnx_io",
    "load": "graphopt.core.onnx_io",
    "save": "graphopt.core.onnx_io",
    "to_proto": "graphopt.core.onnx_io",
    "PassManager": "graphopt.engine.pass_manager",
    "PassReport": "graphopt.engine.pass_manager",
    "PassStats": "graphopt.engine.pass_manager",
    "ModelPass": "graphopt.engine.passes_api",
    "Option": "graphopt.engine.passes_api",
    "Pass": "graphopt.engine.passes_api",
    "PassContext": "graphopt.engine.passes_api",
    "PassResult": "graphopt.engine.passes_api",
    "get_pass": "graphopt.engine.passes_api",
    "list_passes": "graphopt.engine.passes_api",
    "register_pass": "graphopt.engine.passes_api",
    "Tensor": "graphopt.core.tensors",
}

if TYPE_CHECKING:
    from graphopt.api import optimize
    from graphopt.core.gs import from_graphsurgeon, to_graphsurgeon
    from graphopt.core.ir import Attribute, Function, Graph, Model, Node, Value
    from graphopt.core.onnx_io import check, from_proto, load, save, to_proto
    from graphopt.core.tensors import Tensor
    from graphopt.engine.pass_manager import PassManager, PassReport, PassStats
    from graphopt.engine.passes_api import (
        ModelPass,
        Option,
        Pass,
        PassContext,
        PassResult,
        get_pass,
        list_passes,
        register_pass,
    )
    from graphopt.errors import ExternalDataError, GraphoptError, IRError, ModelLoadError, PassError
    from graphopt.tools.compare import Difference, GraphDiff, diff


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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
    "ModelPass",
    "Node",
    "Option",
    "Pass",
    "PassContext",
    "PassError",
    "PassManager",
    "PassResult",
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
