"""What a ``graphopt optimize -O2`` process imports: only what the run uses. onnxruntime, numba and the lossy drivers
load when a pass or a flag needs them, rich when something is rendered (not for ``--json`` or ``--quiet``): each costs
tens of milliseconds in a command that takes a few hundred on a small model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NEVER_FOR_O2 = ("onnxruntime", "numba", "graphopt.quantize.driver", "graphopt.prune.driver", "graphopt.kernels")


def _loaded(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints a JSON object on its last stdout line."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _probe(argv: list[str]) -> str:
    names = (*NEVER_FOR_O2, "rich")
    return (
        "import json, sys\n"
        "from graphopt.cli import main\n"
        f"rc = main({argv!r})\n"
        f"print(json.dumps({{'rc': rc, 'loaded': [m for m in {names!r} if m in sys.modules]}}))\n"
    )


def _scaled_model(path: Path) -> None:
    """y = x * (a / b) + (a - b) * a: float scalar arithmetic on constants, as exporters leave for normalisation."""
    consts = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("a", 0.7), ("b", 3.0))]
    nodes = [
        helper.make_node("Div", ["a", "b"], ["ab"]),
        helper.make_node("Sub", ["a", "b"], ["d"]),
        helper.make_node("Mul", ["d", "a"], ["da"]),
        helper.make_node("Mul", ["x", "ab"], ["xs"]),
        helper.make_node("Add", ["xs", "da"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        consts,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_importing_the_cli_loads_no_runtime_renderer_or_driver() -> None:
    names = (*NEVER_FOR_O2, "rich")
    got = _loaded(f"import json, sys, graphopt.cli; print(json.dumps([m for m in {names!r} if m in sys.modules]))")
    assert got == []


def test_o2_json_run_folds_float_constants_without_onnxruntime_or_rich(tmp_path: Path) -> None:
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    _scaled_model(src)
    got = _loaded(_probe(["optimize", "-O2", str(src), "-o", str(out), "--json"]))
    assert got == {"rc": 0, "loaded": []}
    folded = onnx.load(str(out))
    assert [n.op_type for n in folded.graph.node] == ["Mul", "Add"]  # Div, Sub and the constant Mul were folded
    # the folded numbers are onnxruntime's own (the pass's numpy evaluation is bit-exact for these ops)
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    want = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    have = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(want.view(np.uint32), have.view(np.uint32))


def test_quiet_run_loads_no_rich_and_the_table_still_renders(tmp_path: Path) -> None:
    src, out = tmp_path / "m.onnx", tmp_path / "o.onnx"
    _scaled_model(src)
    assert _loaded(_probe(["optimize", "-O2", str(src), "-o", str(out), "--quiet"])) == {"rc": 0, "loaded": []}
    r = subprocess.run(
        [sys.executable, "-m", "graphopt", "optimize", "-O2", str(src), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "fold-constants" in r.stdout  # the pass table, rendered by rich


def test_shape_inference_skeleton_carries_no_constant_weights() -> None:
    """Exports that keep their weights in Constant nodes (Paddle's) are not serialized whole for shape inference:
    a large Constant value enters the skeleton as a stub with its type and dims, and inference still types its
    readers."""
    from graphopt.core.onnx_io import from_proto
    from graphopt.core.shape_inference import _skeleton, infer_shapes

    w = numpy_helper.from_array(np.ones((256, 64), np.float32), "w")
    nodes = [helper.make_node("Constant", [], ["wc"], value=w), helper.make_node("MatMul", ["x", "wc"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert _skeleton(model).ByteSize() < 1024  # the 64 KB weight is not in it
    infer_shapes(model)
    y = next(n for n in model.graph if n.op_type == "MatMul").outputs[0]
    assert y.shape == (3, 64) and y.dtype == TensorProto.FLOAT
