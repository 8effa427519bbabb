"""onnx-graphsurgeon interop: conversions both ways, and graphsurgeon functions as graphopt passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

import graphopt
from graphopt import Option
from graphopt.testing import assert_graphs_equal, assert_models_close

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


pytestmark = pytest.mark.usefixtures("pass_registry")  # passes registered here are forgotten after each test


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.onnx")), ids=lambda p: p.name)
def test_round_trip_through_graphsurgeon(path: Path) -> None:
    graph = graphopt.to_graphsurgeon(path)
    assert isinstance(graph, gs.Graph)
    back = graphopt.from_graphsurgeon(graph)
    assert_graphs_equal(path, back)
    assert_models_close(path, back, rtol=0, atol=0)


def _model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Identity", ["x"], ["a"], name="id1"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Identity", ["b"], ["y"], name="id2"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_graphsurgeon_function_as_a_pass_with_options() -> None:
    @graphopt.register_pass(
        "gs-scale", graphsurgeon=True, options={"factor": Option(float, 2.0, "multiply the output by this")}
    )
    def scale_output(graph, factor):
        """Multiply the graph's output by a constant (a graphsurgeon script)."""
        out = graph.outputs[0]
        scaled = gs.Variable("scaled", dtype=np.float32)
        const = gs.Constant("k", np.array(factor, np.float32))
        graph.nodes.append(gs.Node("Mul", inputs=[out, const], outputs=[scaled]))
        graph.outputs = [scaled]

    model = _model()
    out = graphopt.optimize(model, passes="gs-scale{factor=3}")
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    got = graphopt.tools.runtime.session(out).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, 3 * np.maximum(x, 0))
    assert "gs-scale" in graphopt.list_passes()


def test_graphsurgeon_pass_that_changes_nothing_leaves_the_model_alone() -> None:
    @graphopt.register_pass("gs-nothing", graphsurgeon=True)
    def nothing(graph):
        return None

    model = _model()
    report: list = []
    out = graphopt.optimize(model, passes="gs-nothing", report=report)
    assert not report[0].changed
    assert out == model  # field for field: not even names changed
