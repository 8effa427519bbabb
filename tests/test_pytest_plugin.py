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
    # in a subprocess: an in-process run imports graphopt again and then drops those modules from sys.modules, which
    # leaves two copies of its classes and pass registry for the tests that run after this one
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*models differ structurally:*", "*different op*"])


def test_failed_assertion_shows_the_callers_line_not_the_helpers_source(pytester) -> None:
    pytester.makepyfile(
        f"""
        import onnx
        from graphopt.testing import assert_graphs_equal, assert_models_close

        CNN = {str(FIXTURES / "cnn.onnx")!r}

        def test_graphs():
            b = onnx.load(CNN)
            b.graph.node[0].op_type = "Neg"
            assert_graphs_equal(CNN, b)

        def test_models():
            b = onnx.load(CNN)
            w = b.graph.initializer[0]
            w.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(w) * 0 + 1, w.name))
            assert_models_close(CNN, b)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    text = result.stdout.str()
    assert "assert_graphs_equal(CNN, b)" in text and "assert_models_close(CNN, b)" in text  # the callers' lines
    assert "graphs differ:" in text and "models differ beyond" in text
    for helper_line in ("found = diff(", "raise AssertionError(_graph_message(found))", "raise AssertionError(\"\\n"):
        assert helper_line not in text, helper_line


def test_plugin_entry_point_does_not_import_onnx_at_startup() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, importlib.metadata as md;"
        "(ep,) = [e for e in md.entry_points(group='pytest11') if e.name == 'graphopt'];"
        "ep.load();"
        "heavy = [m for m in ('onnx', 'onnxruntime', 'numpy', 'numba', 'rich') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_strategies_without_hypothesis_say_how_to_get_it() -> None:
    import subprocess
    import sys

    probe = "import sys; sys.modules['hypothesis'] = None; import graphopt.testing.strategies"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "ImportError: graphopt.testing.strategies needs hypothesis" in proc.stderr
    assert "pip install 'graphopt[testing]'" in proc.stderr
