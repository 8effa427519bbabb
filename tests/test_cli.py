"""The graphopt command: results, summaries, and one-line errors with exit code 2 for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from graphopt.cli import main
from graphopt.engine.passes_api import level_pipeline


def _model(dead: bool = True) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], np.arange(4, dtype=np.float32))
    nodes = [helper.make_node("Add", ["x", "w"], ["y"], name="add")]
    if dead:
        nodes.append(helper.make_node("Neg", ["x"], ["unused"], name="dead"))
    graph = helper.make_graph(nodes, "g", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    p = tmp_path / "m.onnx"
    onnx.save(_model(), str(p))
    return p


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("graphopt: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_optimize_writes_output_and_summary(model_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o.onnx"
    code, stdout, _ = _run(capsys, "optimize", str(model_path), "-o", str(out), "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["nodes_before"] == 2 and summary["nodes_after"] == 1
    assert [p["name"] for p in summary["passes"]] == [p.name for p in level_pipeline(2)]
    optimized = onnx.load(str(out))
    onnx.checker.check_model(optimized)
    assert [n.name for n in optimized.graph.node] == ["add"]
    assert optimized.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_optimize_table_and_quiet(model_path: Path, tmp_path: Path, capsys) -> None:
    code, stdout, _ = _run(capsys, "optimize", str(model_path), "-o", str(tmp_path / "o.onnx"))
    assert code == 0 and "cleanup" in stdout and "nodes 2 -> 1" in stdout
    code, stdout, err = _run(capsys, "optimize", str(model_path), "-o", str(tmp_path / "o.onnx"), "-q")
    assert code == 0 and stdout == "" and err == ""


def test_level_zero_changes_nothing(model_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o.onnx"
    assert _run(capsys, "optimize", str(model_path), "-o", str(out), "-O0", "-q")[0] == 0
    assert onnx.load(str(out)) == onnx.load(str(model_path))


def test_missing_file(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "optimize", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx"))
    _assert_user_error(code, err, "nope.onnx", "no such file")
    assert not (tmp_path / "o.onnx").exists()


def test_not_onnx(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "notes.onnx"
    bad.write_text("this is not a model\n" * 10)
    code, _, err = _run(capsys, "optimize", str(bad), "-o", str(tmp_path / "o.onnx"))
    _assert_user_error(code, err, "notes.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_truncated_file(model_path: Path, tmp_path: Path, capsys) -> None:
    data = model_path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) * 2 // 3])
    code, _, err = _run(capsys, "inspect", str(cut))
    _assert_user_error(code, err, "cut.onnx")
    code, _, err = _run(capsys, "optimize", str(cut), "-o", str(tmp_path / "o.onnx"))
    _assert_user_error(code, err, "cut.onnx")
    assert not (tmp_path / "o.onnx").exists()


def test_empty_file(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    code, _, err = _run(capsys, "optimize", str(empty), "-o", str(tmp_path / "o.onnx"))
    _assert_user_error(code, err, "empty")


def test_checker_rejection_and_no_check(tmp_path: Path, capsys) -> None:
    model = _model(dead=False)
    model.graph.node[0].input[1] = "undefined_tensor"  # reads a value nothing defines
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model.SerializeToString())
    code, _, err = _run(capsys, "optimize", str(bad), "-o", str(tmp_path / "o.onnx"))
    _assert_user_error(code, err, "bad.onnx", "checker", "--no-check")
    assert not (tmp_path / "o.onnx").exists()
    # --no-check goes past the checker, but a graph no pass can work on (here: an undefined input) is still refused
    code, _, err = _run(capsys, "optimize", str(bad), "-o", str(tmp_path / "o.onnx"), "--no-check", "-q")
    _assert_user_error(code, err, "bad.onnx", "invalid model", "undefined_tensor")
    assert not (tmp_path / "o.onnx").exists()
    # what the checker rejects but graphopt can repair (nodes out of topological order) goes on with --no-check
    model = _model(dead=False)
    model.graph.node[0].output[0] = "t"
    model.graph.node.insert(0, helper.make_node("Relu", ["t"], ["y"], name="relu"))
    bad.write_bytes(model.SerializeToString())
    code, _, err = _run(capsys, "optimize", str(bad), "-o", str(tmp_path / "o.onnx"))
    _assert_user_error(code, err, "bad.onnx", "checker")
    code, _, _ = _run(capsys, "optimize", str(bad), "-o", str(tmp_path / "o.onnx"), "--no-check", "-q")
    assert code == 0 and (tmp_path / "o.onnx").exists()
    onnx.checker.check_model(onnx.load(str(tmp_path / "o.onnx")))


def test_unknown_pass_suggests_nearest(model_path: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "optimize", str(model_path), "-o", str(tmp_path / "o.onnx"), "--passes", "dcee")
    _assert_user_error(code, err, "'dcee'", "did you mean 'dce'")
    assert not (tmp_path / "o.onnx").exists()


def test_bad_pass_option(model_path: Path, tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "optimize", str(model_path), "-o", str(tmp_path / "o.onnx"), "--passes", "dce{x=1}")
    _assert_user_error(code, err, "dce", "'x'")


def test_unwritable_output(model_path: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (tmp_path / "no" / "such" / "dir" / "o.onnx", blocker / "o.onnx", tmp_path):
        code, _, err = _run(capsys, "optimize", str(model_path), "-o", str(target))
        _assert_user_error(code, err)
    assert _leftovers(tmp_path) == []


def test_never_overwrites_input_without_in_place(model_path: Path, capsys) -> None:
    before = model_path.read_bytes()
    code, _, err = _run(capsys, "optimize", str(model_path), "-o", str(model_path))
    _assert_user_error(code, err, "--in-place")
    assert model_path.read_bytes() == before
    code, _, err = _run(capsys, "optimize", str(model_path))
    _assert_user_error(code, err, "-o")
    code, _, _ = _run(capsys, "optimize", str(model_path), "--in-place", "-q")
    assert code == 0
    assert len(onnx.load(str(model_path)).graph.node) == 1
    assert _leftovers(model_path.parent) == []


def test_external_data_escape_is_a_user_error(tmp_path: Path, capsys) -> None:
    model = _model(dead=False)
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../../etc/passwd")
    path = tmp_path / "evil.onnx"
    path.write_bytes(model.SerializeToString())
    code, _, err = _run(capsys, "optimize", str(path), "-o", str(tmp_path / "o.onnx"), "--no-check")
    _assert_user_error(code, err, "leaves the model folder")
    code, _, err = _run(capsys, "inspect", str(path))
    _assert_user_error(code, err)


def test_bad_level_is_a_usage_error(model_path: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["optimize", str(model_path), "-o", str(tmp_path / "o.onnx"), "-O7"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "-O" in err


def test_inspect(model_path: Path, capsys) -> None:
    code, out, _ = _run(capsys, "inspect", str(model_path), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["opsets"] == {"ai.onnx": 17}
    assert info["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert info["ops"] == {"Add": 1, "Neg": 1}
    assert info["parameters"] == 4 and info["parameter_bytes"] == 16
    code, out, _ = _run(capsys, "inspect", str(model_path))
    assert code == 0 and "batch" in out and "Add" in out


def test_inspect_counts_subgraphs(tmp_path: Path, capsys) -> None:
    then = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])],
    )
    other = helper.make_graph(
        [helper.make_node("Abs", ["x"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)
    g = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    p = tmp_path / "if.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    code, out, _ = _run(capsys, "inspect", str(p), "--json")
    info = json.loads(out)
    assert info["subgraphs"] == {"If": 2} and info["ops"] == {"If": 1, "Neg": 1, "Abs": 1}


def test_passes_lists_registry(capsys) -> None:
    code, out, _ = _run(capsys, "passes", "--json")
    assert code == 0
    assert any(p["name"] == "dce" and p["description"] for p in json.loads(out))


def test_console_script_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "graphopt", "optimize", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.onnx")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"graphopt: error: {tmp_path / 'missing.onnx'}: no such file"]
