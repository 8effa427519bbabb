"""IR and I/O, the bottom layer: the in-memory graph (:mod:`~graphopt.core.ir`), tensors and their lazy or mapped data
(:mod:`~graphopt.core.tensors`, :mod:`~graphopt.core.mapped`), ONNX load/save with external data
(:mod:`~graphopt.core.onnx_io`), shape inference that trusts only what onnxruntime checks
(:mod:`~graphopt.core.shape_inference`) and the onnx-graphsurgeon bridge (:mod:`~graphopt.core.gs`).
Nothing here imports from any other graphopt layer."""

from graphopt.core import onnx_io as _onnx_io  # noqa: F401 - installs Model.to_onnx before any IR object is made
