"""The pytest11 plugin: fixtures and the explanation of `assert a == b` on models, run in a fresh pytest."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_plugin_fixtures_and_assertion_explanation(pytester) -> None:
    pytester.makepyfile(
        f"""
        import onnx
        import graphopt

        CNN = {str(FIXTURES / "cnn.onnx")!r}

        def test_fixtures(assert_graphs_equal, assert_models_close, graph_diff):
            opt = graphopt.optimize(onnx.load(CNN), level=2)
            assert_graphs_equal(CNN, CNN)
            assert_models_close(CNN, opt, rtol=1e-4, atol=1e-5)
            assert graph_diff(CNN, opt)

        def test_equality_explained():
            a = onnx.load(CNN)
            b = onnx.load(CNN)
            b.graph.node[0].op_type = "Neg" if a.graph.node[0].op_type != "Neg" else "Relu"
            assert a == b
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*models differ structurally:*", "*different op*"])
