"""The pass infrastructure: registry, options, pipelines, plugins, the PassManager, optimize(), and dce."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import graphopt
from graphopt import Graph, Option, Pass, PassContext, PassError, PassManager
from graphopt.core.ir import Node
from graphopt.engine import passes_api
from tests.conftest import model_from_text, ort_run

OPSET = [helper.make_opsetid("", 17)]
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


pytestmark = pytest.mark.usefixtures("pass_registry")  # passes registered here are forgotten after each test


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort_run(model, {"x": x})


def _model(dead: bool = True) -> onnx.ModelProto:
    w = onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    unused = onnx.numpy_helper.from_array(np.ones(3, np.float32), "unused")
    nodes = [helper.make_node("Add", ["x", "w"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    if dead:
        nodes += [helper.make_node("Neg", ["x"], ["dead1"]), helper.make_node("Abs", ["dead1"], ["dead2"])]
        nodes.append(helper.make_node("Custom", ["x"], ["custom_out"], domain="my.ops"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [w, unused],
    )
    opsets = [*OPSET, helper.make_opsetid("my.ops", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


# --------------------------------------------------------------------------------------------------------------------
# registry, options, pipelines
# --------------------------------------------------------------------------------------------------------------------
def test_register_function_and_class_passes() -> None:
    @graphopt.register_pass("test-fn", description="a test pass", options={"k": Option(int, 3, "k")})
    def fn(graph: Graph, ctx: PassContext, k: int) -> bool:
        ctx.options["seen_k"] = k
        return False

    @graphopt.register_pass("test-cls")
    class Cls(Pass):
        description = "class pass"
        options_spec = {"mode": Option(str, "a", choices=("a", "b")), "on": Option(bool, False)}

        def run(self, graph: Graph, ctx: PassContext) -> bool:
            return False

    passes = graphopt.list_passes()
    assert passes["test-fn"].description == "a test pass" and passes["test-cls"] is Cls
    p = passes_api.parse_pipeline("test-fn{k=7}, test-cls{mode=b,on=yes}")
    assert p[0].options == {"k": 7} and p[1].options == {"mode": "b", "on": True}
    assert repr(p[0]) == "test-fn{k=7}"
    ctx_opts: dict = {}
    model = graphopt.load(_model())
    PassManager(p).run(model, PassContext(model=model, options=ctx_opts))
    assert ctx_opts["seen_k"] == 7
    # the same function can be given directly once registered
    assert type(passes_api.as_passes([fn])[0]).name == "test-fn"


def test_registry_errors() -> None:
    @graphopt.register_pass("test-dup")
    def dup(graph: Graph, ctx: PassContext) -> bool:
        return False

    with pytest.raises(PassError, match="already registered"):

        @graphopt.register_pass("test-dup")
        def dup2(graph: Graph, ctx: PassContext) -> bool:
            return False

    with pytest.raises(PassError, match="invalid pass name"):
        graphopt.register_pass("Bad Name")
    with pytest.raises(PassError, match=r"did you mean 'test-dup'"):
        graphopt.get_pass("test-dpu")
    with pytest.raises(PassError, match="not a registered pass"):
        passes_api.as_passes([lambda g, c: False])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dce{nope=1}", "has no option 'nope'"),
        ("test-opt{k=abc}", "expects int"),
        ("test-opt{mode=z}", "must be one of"),
        ("test-opt{k}", "expected key=value"),
        ("test-opt{k=1", "malformed pipeline"),
        ("no-such-pass", "unknown pass"),
    ],
)
def test_pipeline_errors(spec: str, message: str) -> None:
    @graphopt.register_pass("test-opt", options={"k": Option(int, 1), "mode": Option(str, "a", choices=("a", "b"))})
    def opt(graph: Graph, ctx: PassContext, k: int, mode: str) -> bool:
        return False

    with pytest.raises(PassError, match=message):
        passes_api.parse_pipeline(spec)


def test_levels_name_pipelines() -> None:
    assert passes_api.level_pipeline(0) == []
    names = [p.name for p in passes_api.level_pipeline(2)]
    assert "cleanup" in names and "fold-constants" in names and "cse" in names
    with pytest.raises(PassError, match="optimization level"):
        passes_api.level_pipeline(7)


def install_fake_plugin(folder: Path, dist: str, entry: str) -> None:
    """Make ``folder`` (to be put on sys.path) hold an installed distribution ``dist`` whose ``graphopt.passes``
    entry point is ``entry`` ("name = module:object")."""
    info = folder / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[graphopt.passes]\n{entry}\n")


def test_plugin_pass_from_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_graphopt_plugin.py").write_text(
        textwrap.dedent(
            """
            from graphopt import Pass

            class Plugged(Pass):
                name = "test-plugged"
                description = "from a plugin"

                def run(self, graph, ctx):
                    return False
            """
        )
    )
    install_fake_plugin(tmp_path, "my_graphopt_plugin", "plugged = my_graphopt_plugin:Plugged")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(passes_api, "_PLUGINS_LOADED", False)
    try:
        passes = graphopt.list_passes()
        assert passes["test-plugged"].description == "from a plugin"
    finally:
        sys.modules.pop("my_graphopt_plugin", None)


def test_broken_plugin_warns_and_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_plugin(tmp_path, "broken_plugin", "broken = no_such_module_xyz:Pass")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(passes_api, "_PLUGINS_LOADED", False)
    with pytest.warns(UserWarning, match="could not load pass plugin 'broken'"):
        assert "dce" in graphopt.list_passes()


# --------------------------------------------------------------------------------------------------------------------
# the PassManager
# --------------------------------------------------------------------------------------------------------------------
def test_statistics_and_fixed_point() -> None:
    calls = []

    @graphopt.register_pass("test-remove-one")
    def remove_one(graph: Graph, ctx: PassContext) -> bool:
        """Remove one dead node per run, so that a fixed point needs several iterations."""
        calls.append(1)
        outputs = set(graph.outputs)
        for node in graph.reversed():
            if node.domain == "" and not any(o.uses or o in outputs for o in node.outputs if o is not None):
                graph.remove(node)
                return True
        return False

    model = graphopt.load(_model())
    report = PassManager("test-remove-one", fixed_point=True).run(model)
    assert report.iterations == 3 and len(calls) == 3  # two removals, then one run that changes nothing
    (stats,) = report.stats
    assert stats.runs == 3 and stats.changed and stats.nodes_before == 5 and stats.nodes_after == 3
    assert stats.seconds >= 0 and report.nodes_before == 5 and report.nodes_after == 3
    assert report.to_dict()["passes"][0]["name"] == "test-remove-one"
    calls.clear()
    report = PassManager("test-remove-one", fixed_point=True, max_iterations=1).run(graphopt.load(_model()))
    assert report.iterations == 1 and len(calls) == 1


def test_recursive_passes_visit_subgraphs_and_functions() -> None:
    seen: list[str] = []

    @graphopt.register_pass("test-visit")
    def visit(graph: Graph, ctx: PassContext) -> bool:
        seen.append(graph.name)
        return False

    @graphopt.register_pass("test-visit-top", recursive=False)
    def visit_top(graph: Graph, ctx: PassContext) -> bool:
        seen.append("top:" + graph.name)
        return False

    then_g = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["t"])], "then", [], [helper.make_tensor_value_info("t", 1, [2])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["e"])], "else", [], [helper.make_tensor_value_info("e", 1, [2])]
    )
    func = helper.make_function("my.fn", "F", ["a"], ["b"], [helper.make_node("Neg", ["a"], ["b"])], OPSET)
    nodes = [
        helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
        helper.make_node("F", ["y"], ["z"], domain="my.fn"),
    ]
    graph = helper.make_graph(
        nodes,
        "main",
        [helper.make_tensor_value_info("x", 1, [2]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", 1, [2])],
    )
    model = helper.make_model(
        graph, opset_imports=[*OPSET, helper.make_opsetid("my.fn", 1)], ir_version=8, functions=[func]
    )
    PassManager(["test-visit", "test-visit-top"]).run(graphopt.load(model))
    # function bodies have no graph name of their own; the fourth visit is the body of F
    assert sorted(seen[:3]) == ["else", "main", "then"] and len(seen) == 5 and seen[4:] == ["top:main"]


def test_check_ir_catches_a_broken_pass() -> None:
    @graphopt.register_pass("test-break")
    def break_graph(graph: Graph, ctx: PassContext) -> bool:
        first = next(iter(graph))
        last = list(graph)[-1]
        graph.remove(first, safe=False)  # its readers now read a value nothing produces
        del last
        return True

    model = graphopt.load(_model(dead=False))
    with pytest.raises(graphopt.IRError):
        PassManager("test-break", check_ir=True).run(model)
    with pytest.raises(PassError, match="unknown target"):
        PassManager("dce").run(graphopt.load(_model()), target="gpu")


# --------------------------------------------------------------------------------------------------------------------
# optimize() and dce
# --------------------------------------------------------------------------------------------------------------------
def test_optimize_never_mutates_the_callers_proto(tmp_path: Path) -> None:
    proto = _model()
    before = proto.SerializeToString()
    out = graphopt.optimize(proto, level=1)
    assert isinstance(out, onnx.ModelProto) and out is not proto
    assert proto.SerializeToString() == before
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    assert isinstance(graphopt.optimize(path, level=0), graphopt.Model)
    reports: list = []
    graphopt.optimize(proto, passes="dce", report=reports)
    assert reports and reports[0].stats[0].name == "dce"


def test_dce_removes_dead_code_and_keeps_custom_ops_and_outputs() -> None:
    proto = _model()
    out = graphopt.optimize(proto, passes="dce")
    ops = [n.op_type for n in out.graph.node]
    assert ops == ["Add", "Relu", "Custom"], "dead standard ops go, the unknown custom op stays"
    assert [i.name for i in out.graph.initializer] == ["w"]
    assert [o.name for o in out.graph.output] == ["y"]
    no_custom = _model()
    del no_custom.graph.node[4]
    del no_custom.opset_import[1]
    optimized = graphopt.optimize(no_custom, passes="dce")
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(_run(optimized, x)[0], _run(no_custom, x)[0])


def test_dce_keeps_initializers_when_training_info_is_present() -> None:
    proto = _model(dead=False)
    proto.training_info.add()
    out = graphopt.optimize(proto, passes="dce")
    assert {i.name for i in out.graph.initializer} == {"w", "unused"}


def test_node_constructor_and_pass_context_opsets() -> None:
    model = graphopt.load(_model())
    ctx = PassContext(model=model)
    assert ctx.opset() == 17 and ctx.opsets["my.ops"] == 1
    node = Node("Neg", [model.graph.inputs[0]])
    model.graph.append(node)
    assert node.output.name  # named on insertion


def test_conftest_helpers_build_and_run_text_models() -> None:
    model = model_from_text(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N] x) => (float[N] y) { t = Identity(x)
            y = Relu(t) }"""
    )
    x = np.array([-1.0, 2.0], np.float32)
    out = graphopt.optimize(model, level=2)
    assert [n.op_type for n in out.graph.node] == ["Relu"]
    np.testing.assert_array_equal(ort_run(out, {"x": x})[0], [0.0, 2.0])


@pytest.mark.parametrize(
    ("keyword", "nearest"),
    [("quantise", "quantize"), ("prune_channel", "prune_channels"), ("levle", "level"), ("verfy", "verify")],
)
def test_optimize_rejects_unknown_keywords_naming_the_nearest(keyword: str, nearest: str) -> None:
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{keyword}'; did you mean '{nearest}'"):
        graphopt.optimize(_model(), **{keyword: 1})
    graphopt.optimize(_model(), passes="dce", winograd="off", winograd_threads=1)  # declared context options pass


def test_a_failing_pass_names_the_passes_before_it_and_leaves_the_model_unchanged(monkeypatch) -> None:
    from graphopt.engine.pass_manager import PassFailedError

    monkeypatch.delenv("GRAPHOPT_DEBUG", raising=False)

    @graphopt.register_pass("test-boom")
    def boom(graph: Graph, ctx: PassContext) -> bool:
        graph.remove(graph.nodes[-1], safe=False)  # half a rewrite, then a crash
        raise ValueError("deliberate")

    model = graphopt.from_proto(_model())
    before = graphopt.to_proto(model).SerializeToString()
    with pytest.raises(PassFailedError, match=r"pass 'test-boom' failed \(after dce, strip-debug-info\): ValueError"):
        graphopt.optimize(model, passes="dce,strip-debug-info,test-boom")
    assert graphopt.to_proto(model).SerializeToString() == before
    with pytest.raises(PassFailedError, match=r"pass 'test-boom' failed \(the first pass\)"):
        graphopt.optimize(model, passes="test-boom")
    assert graphopt.to_proto(model).SerializeToString() == before


def test_model_passes_run_once_per_model_and_return_results() -> None:
    """A ModelPass sees the model once (not each subgraph); a ``once`` pass runs in the first fixed-point sweep only
    and its PassResult value lands in ``PassReport.results``; a graph pass's ``prepare`` runs once per pass run."""
    from graphopt.engine.passes_api import ModelPass, PassResult

    calls: list[str] = []

    @graphopt.register_pass("test-model-once")
    class Once(ModelPass):
        once = True

        def run_model(self, model, ctx):
            calls.append("once")
            return PassResult(False, {"nodes": model.graph.node_count()})

    @graphopt.register_pass("test-graph")
    class PerGraph(Pass):
        def prepare(self, model, ctx):
            calls.append("prepare")

        def run(self, graph, ctx):
            calls.append("graph")
            return False

    model = model_from_text(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (bool c, float[2] x) => (float[2] y) {
            y = If(c) <then_branch = t () => (float[2] a) { a = Relu(x) },
                       else_branch = e () => (float[2] b) { b = Neg(x) }>
        }"""
    )
    report: list = []
    graphopt.optimize(model, passes="test-model-once,test-graph,dce", fixed_point=True, report=report)
    assert calls == ["once", "prepare", "graph", "graph", "graph"]  # main graph and both branches
    assert report[0].results["test-model-once"] == {"nodes": 3}


def test_pruning_pass_reports_through_results_not_options() -> None:
    report: list = []
    spec = "prune-channels{ratio=0.5},cleanup"
    graphopt.optimize(FIXTURES / "cnn.onnx", passes=spec, fixed_point=True, report=report)
    pruned = report[0].results["prune-channels"]
    assert pruned.mode == "channels" and pruned.groups_pruned > 0
    stats = {s.name: s for s in report[0].stats}
    assert stats["prune-channels"].runs == 1 and report[0].iterations >= 2  # once, outside the repeated sweeps


def test_pipeline_pass_steps_keep_their_own_statistics(monkeypatch) -> None:
    from graphopt.engine.pass_manager import PassFailedError
    from graphopt.engine.passes_api import PipelinePass

    @graphopt.register_pass("test-count-relu")
    def count_relu(graph: Graph, ctx: PassContext) -> bool:
        ctx.count("relu", sum(n.op_type == "Relu" for n in graph))
        return False

    @graphopt.register_pass("test-pipe")
    class Pipe(PipelinePass):
        steps = ("test-count-relu", "dce", "remove-unused")

    report: list = []
    out = graphopt.optimize(_model(), passes="test-pipe", report=report)
    (stats,) = report[0].stats
    assert [s.name for s in stats.steps] == ["test-count-relu", "dce", "remove-unused"]
    counted, dce, _ = stats.steps
    assert counted.counts == {"relu": 1} and not counted.changed and stats.counts == {}
    assert dce.changed and dce.nodes_delta < 0 and stats.nodes_delta == sum(s.nodes_delta for s in stats.steps)
    assert len(out.graph.node) == len(graphopt.optimize(_model(), passes="dce,remove-unused").graph.node)

    @graphopt.register_pass("test-crash-step")
    def crash(graph: Graph, ctx: PassContext) -> bool:
        raise ValueError("deliberate")

    Pipe.steps = ("dce", "test-crash-step")
    monkeypatch.delenv("GRAPHOPT_DEBUG", raising=False)
    with pytest.raises(PassFailedError, match=r"pass 'test-pipe/test-crash-step' failed \(the first pass\)"):
        graphopt.optimize(_model(), passes="test-pipe")
