"""graphopt: a graph-level compiler for ONNX models.

Load a model into graphopt's IR, rewrite it with passes, and save it again::

    import graphopt
    model = graphopt.optimize("model.onnx", level=2)
    graphopt.save(model, "model.opt.onnx")
"""

from graphopt.api import optimize
from graphopt.compare import Difference, GraphDiff, diff
from graphopt.errors import ExternalDataError, GraphoptError, IRError, ModelLoadError, PassError
from graphopt.gs import from_graphsurgeon, to_graphsurgeon
from graphopt.ir import Attribute, Function, Graph, Model, Node, Value
from graphopt.onnx_io import check, from_proto, load, save, to_proto
from graphopt.pass_manager import PassManager, PassReport, PassStats
from graphopt.passes_api import Option, Pass, PassContext, get_pass, list_passes, register_pass
from graphopt.tensors import Tensor

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
