"""int8 on the kinds of model found in the wild (issue 16): dynamic spatial dims, old opsets, If/Loop bodies, fp16
and pre-quantized models. Each test builds a small model that has the property of the corpus model that failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.cli import main
from graphopt.tools import runtime


def _cli(capsys, *argv: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = main(list(argv))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return rc, err


def _fpn_model(path: Path) -> Path:
    """A feature-pyramid block with dynamic H and W: Conv, a 32x downsampling MaxPool, Resize back up, Add. Only H and
    W multiples of 32 run (16 makes the pool's output empty), as for the PP-OCR text detectors."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    scales = numpy_helper.from_array(np.array([1, 1, 32, 32], np.float32), "scales")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[32, 32], strides=[32, 32], name="pool"),
        helper.make_node("Resize", ["p", "", "scales"], ["r"], mode="nearest", name="up"),
        helper.make_node("Add", ["c", "r"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "fpn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "H", "W"])],
        [w, scales],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
def test_random_calibration_finds_a_size_a_dynamic_spatial_detector_accepts(tmp_path, capsys, target) -> None:
    src = _fpn_model(tmp_path / "fpn.onnx")
    out = tmp_path / "q.onnx"
    rc, err = _cli(
        capsys, "optimize", str(src), "-o", str(out), "--quantize", "int8", "--calib-random", "2",
        "--calib-cache", "off", "--target", target,
    )  # fmt: skip
    assert rc == 0, err
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 96)).astype(np.float32)
    (y,) = runtime.session(str(out)).run(None, {"x": x})
    assert y.shape == (1, 4, 64, 96) and np.isfinite(y).all()


def test_calib_shape_gives_the_random_calibration_inputs_their_shape(tmp_path, capsys) -> None:
    src = _fpn_model(tmp_path / "fpn.onnx")
    out = tmp_path / "q.onnx"
    base = ["optimize", str(src), "-o", str(out), "-q", "--quantize", "int8", "--calib-cache", "off"]
    rc, err = _cli(capsys, *base, "--calib-random", "1", "--calib-shape", "x=1x3x64x64")
    assert rc == 0, err
    # a size the model cannot run is onnxruntime's reason, on one line
    out.unlink()
    rc, err = _cli(capsys, *base, "--calib-random", "1", "--calib-shape", "x=1x3x48x48")
    assert rc == 2 and len(err) == 1 and err[0].startswith("graphopt: error:") and not out.exists(), err
    # a shape the model's declared dims rule out, and --calib-shape without random calibration
    rc, err = _cli(capsys, *base, "--calib-random", "1", "--calib-shape", "x=1x4x64x64")
    assert rc == 2 and err == [err[0]] and "--calib-shape x=1x4x64x64" in err[0], err
    rc, err = _cli(capsys, *base, "--calib-data", str(tmp_path), "--calib-shape", "x=1x3x64x64")
    assert rc == 2 and len(err) == 1 and "--calib-shape needs --calib-random" in err[0], err
    rc, err = _cli(capsys, *base, "--calib-random", "1", "--calib-shape", "x=1x3xAx64")
    assert rc == 2 and len(err) == 1 and "--calib-shape" in err[0], err
