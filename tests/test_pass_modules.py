"""Where the built-in passes live and how they are put together: each pass in the module named after it, cleanup as
a pipeline of passes with their own statistics, graph passes and model passes apart, one interface test in the IR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

import graphopt
from graphopt.cli import main
from graphopt.core.ir import Graph, Value
from graphopt.core.onnx_io import to_proto
from graphopt.engine.passes_api import ModelPass, Pass, PassContext, PipelinePass, get_pass, list_passes
from tests.conftest import model_from_text, ort_run

ROOT = Path(__file__).resolve().parents[1]


def _defining_module(cls: type[Pass]) -> str:
    func = getattr(cls, "func", None)  # a registered function: its own module, not the engine's wrapper class
    return func.__module__ if func is not None else cls.__module__


def test_every_builtin_pass_lives_in_the_module_named_after_it() -> None:
    from graphopt.passes.canonicalize import CANONICALIZE

    builtin = {n: c for n, c in list_passes().items() if _defining_module(c).startswith("graphopt.passes.")}
    assert {"cleanup", "dce", "eliminate-noop", "fold-conv-bn", "canonicalize", "fuse-gemm"} <= set(builtin)
    parts = set(CANONICALIZE.rules)
    misplaced = []
    for name, cls in builtin.items():
        module = _defining_module(cls)
        if module == "graphopt.passes." + name.replace("-", "_"):
            continue
        # canonicalize.py holds canonicalize and the rule families it is made of (docs/architecture.md says so)
        family = getattr(cls, "rules", None)
        if module == "graphopt.passes.canonicalize" and family is not None and set(family.rules) <= parts:
            continue
        misplaced.append(f"{name} in {module}")
    assert not misplaced, misplaced
    # and every module of passes/ that is named like a pass registers that pass
    for path in sorted((ROOT / "passes").glob("*.py")):
        dashed = path.stem.replace("_", "-")
        if dashed in list_passes():
            assert _defining_module(get_pass(dashed)) == f"graphopt.passes.{path.stem}"


def test_cleanup_is_a_pipeline_whose_steps_keep_their_statistics(tmp_path: Path, capsys) -> None:
    cls = get_pass("cleanup")
    assert issubclass(cls, PipelinePass) and issubclass(get_pass("remove-unused"), ModelPass)
    assert [p.name for p in cls().sub_passes][-1] == "remove-unused"
    out = tmp_path / "o.onnx"
    assert main(["optimize", str(ROOT / "fixtures" / "cnn.onnx"), "-o", str(out), "-O1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (cleanup,) = summary["passes"]
    steps = {s["name"]: s for s in cleanup["steps"]}
    assert [s["name"] for s in cleanup["steps"]] == list(cls.steps)
    noop = steps["eliminate-noop"]
    # the Dropout and the Identity of the fixture: eliminate-noop's own rows, not cleanup's
    assert noop["counts"] == {"noop-dropout": 1, "noop-identity": 1} and noop["nodes_delta"] == -2
    assert cleanup["counts"] == {} and cleanup["nodes_delta"] == sum(s["nodes_delta"] for s in cleanup["steps"])
    assert main(["optimize", str(ROOT / "fixtures" / "cnn.onnx"), "-o", str(out), "-O1"]) == 0
    table = capsys.readouterr().out
    assert "cleanup/eliminate-noop" in table and "noop-dropout x1" in table


IF_MODEL = """
<ir_version: 8, opset_import: ["" : 17, "unused.domain" : 1]>
g (bool c, float[2] x) => (float[2] y) {
    y = If(c) <
        then_branch = t () => (float[2] a) { i = Identity(x)  a = Relu(i) },
        else_branch = e () => (float[2] b) { d = Neg(x)  dead = Abs(x)  b = Identity(d) }
    >
}
"""


def test_cleanup_outside_a_pass_manager_cleans_every_graph_and_the_model_once() -> None:
    proto = model_from_text(IF_MODEL)
    model = graphopt.load(proto)
    assert get_pass("cleanup")().run(model.graph, PassContext(model=model))
    (node,) = model.graph
    assert [n.op_type for n in node.attrs["then_branch"].value] == ["Relu"]
    assert [n.op_type for n in node.attrs["else_branch"].value] == ["Neg"]
    assert "unused.domain" not in model.opset_imports
    result = to_proto(model)
    onnx.checker.check_model(result, full_check=True)
    x = np.array([-1.0, 2.0], np.float32)
    for c in (True, False):
        feeds = {"c": np.array(c), "x": x}
        np.testing.assert_array_equal(ort_run(result, feeds)[0], ort_run(proto, feeds)[0])


def test_value_interface_helpers_and_graph_tests_agree() -> None:
    model = graphopt.load(
        model_from_text(
            """
            <ir_version: 8, opset_import: ["" : 17]>
            g (float[2] x) => (float[2] y, float[2] x2) <float[2] w = {1.0, 2.0}> { y = Add(x, w)  x2 = Identity(x) }
            """
        )
    )
    g: Graph = model.graph
    x, w = g.inputs[0], g.initializers["w"]
    y, x2 = g.outputs
    values: list[Value] = [x, w, y, x2]
    for v in values:
        assert v.is_graph_output(g) == g.is_output(v) == any(o is v for o in g.outputs)
        assert v.is_graph_input(g) == g.is_input(v) == any(i is v for i in g.inputs)
        assert g.is_initializer(v) == (v.is_initializer() and g.initializers.get(v.name) is v)
    assert [v.is_graph_output() for v in (y, x2)] == [True, True] and not x.is_graph_output(g)
    assert w.is_initializer() and g.is_initializer(w) and not y.is_initializer()
    assert not g.is_output(None) and not g.is_input(None) and not g.is_initializer(None)
