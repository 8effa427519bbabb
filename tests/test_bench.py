"""graphopt bench and the runtime adapter behind it, with real onnxruntime sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.cli import main
from graphopt.tools.runtime import compare_outputs, make_inputs, session


def _model(scale: float = 2.0) -> onnx.ModelProto:
    k = numpy_helper.from_array(np.array(scale, np.float32), "k")
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["xs"]),
        helper.make_node("Cast", ["ids"], ["idf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["idf"], ["s"], keepdims=0),
        helper.make_node("Add", ["xs", "s"], ["y"]),
        helper.make_node("Identity", ["flag"], ["f"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"]),
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("flag", TensorProto.BOOL, [2]),
    ]
    outputs = [helper.make_tensor_value_info("y", 1, ["batch", "seq"]), helper.make_tensor_value_info("f", 9, [2])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, [k])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(_model(2.0), str(a))
    onnx.save(_model(2.5), str(b))
    return a, b


def test_make_inputs_honours_dtypes_and_symbolic_dims(two) -> None:
    sess = session(two[0])
    feeds = make_inputs(sess, batch=3)
    assert feeds["x"].dtype == np.float32 and feeds["ids"].dtype == np.int64 and feeds["flag"].dtype == np.bool_
    assert feeds["x"].shape == feeds["ids"].shape == (3, 16)  # the same symbolic dims get the same sizes
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() < 2
    feeds = make_inputs(sess, {"x": (2, 5), "ids": (2, 5)})
    assert feeds["x"].shape == (2, 5)


def test_compare_outputs() -> None:
    a = [np.array([1.0, 2.0, np.nan], np.float32), np.array([1, 2])]
    b = [np.array([1.0, 2.5, np.nan], np.float32), np.array([1, 3])]
    d = compare_outputs(a, b)
    assert d[0]["max_abs"] == pytest.approx(0.5) and d[0]["max_rel"] == pytest.approx(0.25)
    assert d[1]["max_abs"] == float("inf")
    assert compare_outputs(a, a)[0] == {"max_abs": 0.0, "max_rel": 0.0}


def test_bench_two_models_json(two, capsys) -> None:
    a, b = two
    assert main(["bench", str(a), str(b), "--runs", "3", "--warmup", "1", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["path"] for m in out["models"]] == [str(a), str(b)]
    assert all(m["median_ms"] > 0 and m["p90_ms"] >= m["median_ms"] >= m["min_ms"] for m in out["models"])
    y = next(o for o in out["outputs"] if o["name"] == "y")
    assert y["max_abs"] > 0  # 2.0 vs 2.5: the difference is reported
    assert next(o for o in out["outputs"] if o["name"] == "f")["max_abs"] == 0
    assert out["speedup"] > 0
    assert main(["bench", str(a), str(a), "--runs", "2", "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert all(o["max_abs"] == 0 for o in same["outputs"])


def test_bench_table(two, capsys) -> None:
    assert main(["bench", str(two[0]), "--runs", "2", "--warmup", "0"]) == 0
    assert "median ms" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--shape", "nope=1x2"], "'nope', which is not an input"),
        (["--shape", "x:1x2"], "bad --shape"),
        (["--runs", "0"], "--runs"),
    ],
)
def test_bench_bad_arguments(two, capsys, argv, needle) -> None:
    assert main(["bench", str(two[0]), *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bench_bad_files(tmp_path: Path, capsys) -> None:
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert main(["bench", str(junk)]) == 2
    err = capsys.readouterr().err
    assert "junk.onnx" in err and "onnxruntime cannot load it" in err and len(err.strip().splitlines()) == 1
