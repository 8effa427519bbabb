"""The README's Python examples run as written, and do what they say."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import graphopt

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _model() -> onnx.ModelProto:
    """x -> Relu -> Relu -> Identity -> y, plus a dead node."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r1"], name="relu1"),
        helper.make_node("Relu", ["r1"], ["r2"], name="relu2"),
        helper.make_node("Identity", ["r2"], ["y"], name="ident"),
        helper.make_node("Neg", ["x"], ["dead"], name="dead"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(path: str, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pass_registry: None) -> Path:
    monkeypatch.chdir(tmp_path)
    onnx.save(_model(), "model.onnx")
    return tmp_path


def test_readme_has_the_examples() -> None:
    blocks = _blocks()
    assert len(blocks) == 7
    assert "graphopt.load" in blocks[0] and "replace_all_uses_with" in blocks[1] and "register_pass" in blocks[2]
    assert "register_rules" in blocks[3] and "graphsurgeon=True" in blocks[4] and "assert_graphs_equal" in blocks[5]
    assert 'quantize="int8"' in blocks[6]


def test_python_api_example(in_tmp: Path) -> None:
    ns: dict = {}  # the example runs on its own: no name comes from outside (it once used an undefined proto)
    exec(_blocks()[0], ns)  # noqa: S102 - the README's own example
    assert ns["original"].SerializeToString() == onnx.load("model.onnx").SerializeToString()  # "not modified"
    assert isinstance(ns["proto"], onnx.ModelProto)
    optimized = onnx.load("model.opt.onnx")
    assert [n.name for n in optimized.graph.node] == ["relu1", "relu2"]  # -O2 drops the Identity and the dead Neg
    assert [o.name for o in optimized.graph.output] == ["y"]


def test_editing_example(in_tmp: Path) -> None:
    exec(_blocks()[1], {})  # noqa: S102
    edited = onnx.load("edited.onnx")
    onnx.checker.check_model(edited)
    assert [n.op_type for n in edited.graph.node].count("Relu") == 1
    assert edited.graph.output[0].name == "y"  # output names survive both edits
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(_run("edited.onnx", x), 2 * np.maximum(x, 0))


def test_writing_a_pass_example(in_tmp: Path) -> None:
    ns: dict = {}
    exec(_blocks()[2], ns)  # noqa: S102
    assert "drop-identity" in graphopt.list_passes()
    saved = onnx.load("model.noid.onnx")  # the example keeps and saves its result
    assert [n.op_type for n in saved.graph.node] == ["Relu", "Relu"]
    model = graphopt.optimize("model.onnx", passes="drop-identity{keep_outputs=false},dce")
    assert [n.op_type for n in model.graph] == ["Relu", "Relu"]
    assert model.graph.outputs[0].name == "y"
    kept = graphopt.optimize("model.onnx", passes="drop-identity,dce")  # keep_outputs defaults to True
    assert [n.op_type for n in kept.graph] == ["Relu", "Relu", "Identity"]
    with pytest.raises(graphopt.PassError, match="replace=True"):  # running the cell again: the hint the README gives
        exec(_blocks()[2], {})  # noqa: S102
    assert graphopt.register_pass("drop-identity", replace=True)(ns["drop_identity"])  # what the README says works


def test_comparing_graphs_example(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ns: dict = {}
    exec(_blocks()[5], ns)  # noqa: S102
    assert ns["differences"]  # -O2 removed the Identity and the dead Neg
    out = capsys.readouterr().out
    assert "graph" in out and "Identity" in out


def _patterned_model() -> onnx.ModelProto:
    """x -> Relu -> Mul by 1 -> Neg -> Neg -> y"""
    one = onnx.numpy_helper.from_array(np.array(1.0, np.float32), "one")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Mul", ["one", "r"], ["m"], name="mul"),
        helper.make_node("Neg", ["m"], ["n1"], name="neg1"),
        helper.make_node("Neg", ["n1"], ["y"], name="neg2"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [one],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_pattern_rewrite_example(in_tmp: Path) -> None:
    onnx.save(_patterned_model(), "model.onnx")
    ns: dict = {}
    exec(_blocks()[3], ns)  # noqa: S102
    assert [n.op_type for n in ns["model"].graph] == ["Relu"]
    assert ns["model"].graph.outputs[0].name == "y"
    graphopt.save(ns["model"], "out.onnx")
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(_run("out.onnx", x), np.maximum(x, 0))


def test_graphsurgeon_pass_example(in_tmp: Path) -> None:
    ns: dict = {}
    exec(_blocks()[4], ns)  # noqa: S102
    ops = [n.op_type for n in ns["model"].graph]
    assert ops.count("Relu") == 2 and ops.count("Identity") == 1  # the Identity feeding the output stays
    assert len(ns["graph"].nodes) == len(ops)


def test_quantization_example(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(README.parent)  # the example reads fixtures/cnn.onnx
    namespace: dict = {}
    with caplog.at_level(logging.WARNING, logger="graphopt.quantize"):
        exec(_blocks()[6], namespace)
    q = namespace["q"]
    assert q.layers and q.fused_count == len(q.layers) and q.sqnr_db > 20
    # what it prints, the speed warning included, is what the README says it prints
    after = " ".join(README.read_text().split(_blocks()[6], 1)[1].split("```python", 1)[0].split())
    said = re.search(r"It prints `(\d+) layers, (\d+) as integer kernels, output SQNR [\d.]+ dB, [\d.]+x fp32`", after)
    assert said and int(said[1]) == len(q.layers) and int(said[2]) == q.fused_count, after[:300]
    slow = [r.getMessage() for r in caplog.records if "the speed of fp32" in r.getMessage()]
    assert q.speedup is not None and (q.speedup < 1.0) == bool(slow)
    if slow:  # the warning it gives (0.65x to 0.96x on a 2-core machine) is quoted, not hidden
        assert "the int8 model is" in after and "the speed of fp32" in after, (slow, after[:600])


def _parser_options(command: str) -> list[list[str]]:
    from graphopt.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return [a.option_strings for a in sub.choices[command]._actions if a.option_strings and a.dest != "help"]


def test_synopsis_lists_every_option() -> None:
    text = README.read_text()
    synopsis = text.split("## Command line", 1)[1].split("```", 2)[1]
    for command in ("optimize", "diff", "report"):
        options = _parser_options(command)
        missing = [names for names in options if not any(re.search(rf"{n}(?![a-z-])", synopsis) for n in names)]
        assert not missing, f"{command}: {missing}"
    assert "graphopt report RESULT.json -o OUT.html" in synopsis


def test_first_command_writes_outside_the_checkout_and_fast_tests_are_mentioned() -> None:
    text = README.read_text()
    bash = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    first = bash[0]
    assert "graphopt optimize fixtures/cnn.onnx -o /tmp/" in first and "--report /tmp/" in first
    assert 'python -m pytest -q -m "not slow"' in bash[1]


def test_cache_folder_is_documented_and_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from graphopt.tools.summary import cache_dir

    text = " ".join(README.read_text().split())
    assert "`$GRAPHOPT_CACHE_DIR` if set, else `$XDG_CACHE_HOME/graphopt`, else `~/.cache/graphopt`" in text
    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"
    monkeypatch.delenv("GRAPHOPT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "graphopt"


def test_report_screenshot_is_shown() -> None:
    text = README.read_text()
    assert "![graphopt's HTML report of an int8 run](docs/report.png)" in text
    shot = README.parent / "docs" / "report.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size < 200_000


def test_backend_model_count_matches_the_cases() -> None:
    """The README's count of backend models is the number the round-trip tests run over (the 1,635 that onnxruntime
    runs and the 1,617 of the conformance test are counted by running the slow suites: 1,636 passed there includes
    test_case_count)."""
    import sys

    sys.path.insert(0, str(README.parent / "tests"))
    from backend_cases import backend_cases

    text = " ".join(README.read_text().split())
    m = re.search(r"All ([\d,]+) ONNX backend test models round-trip", text)
    assert m and int(m[1].replace(",", "")) == len(backend_cases())


def test_first_command_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    first = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)[0]
    command = first.split("&&", 1)[1].strip().replace("/tmp/", f"{tmp_path}/")
    argv = command.split()
    assert argv[0] == "graphopt"
    result = subprocess.run(
        [sys.executable, "-m", "graphopt", *argv[1:]], cwd=README.parent, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cnn.opt.onnx").exists() and "<svg" in (tmp_path / "cnn.report.html").read_text()
