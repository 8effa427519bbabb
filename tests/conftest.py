"""Shared test helpers: models from ONNX text, onnxruntime runs, and a pass registry that tests leave as they found it.

``model_from_text`` parses the ONNX textual syntax (``onnx.parser``)::

    model_from_text('''<ir_version: 8, opset_import: ["" : 17]>
                       g (float[N] x) => (float[N] y) { y = Relu(x) }''')

Test modules import the helpers (``from tests.conftest import model_from_text, ort_run``); the ``pass_registry``
fixture (``pytestmark = pytest.mark.usefixtures("pass_registry")``) forgets the passes a test registers.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import onnx
import pytest


def model_from_text(text: str, *initializers: onnx.TensorProto) -> onnx.ModelProto:
    """A checked ModelProto from ONNX text (``onnx.parser.parse_model``); ``initializers`` join the graph."""
    import onnx.parser

    model = onnx.parser.parse_model(textwrap.dedent(text))
    model.graph.initializer.extend(initializers)
    onnx.checker.check_model(model)
    return model


def matmul_mlp(names: tuple[str, str, str] = ("fc1", "relu", "fc2"), width: int = 64) -> onnx.ModelProto:
    """x [4, width] -> MatMul -> Relu -> MatMul -> y, seeded normal weights ``w`` and ``w2``; node names ``names``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w, w2 = (numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), n) for n in ("w", "w2"))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name=names[0]),
            helper.make_node("Relu", ["h"], ["r"], name=names[1]),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name=names[2]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, width])],
        [w, w2],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ort_run(model: onnx.ModelProto | Any, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The model's outputs under onnxruntime's CPU provider with graph optimizations off (a graphopt Model is exported
    first), so that the test sees what the graph itself computes."""
    import onnxruntime as ort

    if not isinstance(model, onnx.ModelProto):
        from graphopt.core.onnx_io import to_proto

        model = to_proto(model)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, dict(feeds))


def ran_ops(model: onnx.ModelProto, path: Any) -> list[str]:
    """The op types of the graph onnxruntime (CPU, its default optimizations) runs for ``model``: its optimized model,
    written to ``path`` and read back. What a QDQ model fused into (QLinearConv, QLinearMul, ...)."""
    return [op for op, _ in ran_nodes(model, path)]


def ran_nodes(model: onnx.ModelProto, path: Any) -> list[tuple[str, str]]:
    """``(op type, node name)`` of each node onnxruntime runs for ``model`` (as :func:`ran_ops`). A node it fused
    keeps the name of the op at its centre (``QLinearSigmoid`` named as the Sigmoid was), with a ``_token_N`` suffix
    where a layout transformer rewrote it (``NhwcMaxPool``, ``QLinearConv`` in the channels-last region)."""
    from graphopt.tools import runtime

    runtime.session(model, optimized_path=str(path))
    return [(n.op_type, n.name) for n in onnx.load(str(path)).graph.node]


@pytest.fixture
def pass_registry() -> Iterator[None]:
    """Passes registered during the test are unregistered after it (built-ins and plugins stay)."""
    from graphopt.engine.passes_api import registry_snapshot

    with registry_snapshot():
        yield
