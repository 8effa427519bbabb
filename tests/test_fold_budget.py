"""fold-constants' policy for tensors over the per-tensor size cap (issue 16: a detector's anchor grid, an Expand chain
of a few KB that onnxslim folds): they fold in -O2 when their bytes fit both the run's growth budget and the bytes the
model has shed since the pass first saw it, so the file written is never larger than the one read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.testing import assert_models_close

F = TensorProto.FLOAT
N = 16  # the anchor grid: N*N (x, y) pairs, 2 KB of float32 from 128 bytes of constants


def _model(weight: int, doc: int) -> onnx.ModelProto:
    """y = x @ W + anchors, anchors = Concat(Expand(cols), Expand(rows)) reshaped to (1, 2*N*N); ``doc`` bytes of
    exporter doc strings on the nodes (what strip-debug-info sheds), W of ``weight`` x 2*N*N floats."""
    rng = np.random.default_rng(0)
    k = 2 * N * N
    inits = {
        "w": rng.standard_normal((weight, k)).astype(np.float32),
        "cols": (np.arange(N, dtype=np.float32) + 0.5).reshape(1, N),
        "rows": (np.arange(N, dtype=np.float32) + 0.5).reshape(N, 1),
        "grid": np.array([N, N], np.int64),
        "axis": np.array([-1], np.int64),
        "flat": np.array([1, k], np.int64),
    }
    mk = helper.make_node
    nodes = [
        mk("Identity", ["x"], ["xi"]),  # cleanup removes it: the pipeline goes round again
        mk("MatMul", ["xi", "w"], ["p"]),
        mk("Expand", ["cols", "grid"], ["ex"]),
        mk("Expand", ["rows", "grid"], ["ey"]),
        mk("Unsqueeze", ["ex", "axis"], ["ux"]),
        mk("Unsqueeze", ["ey", "axis"], ["uy"]),
        mk("Concat", ["ux", "uy"], ["xy"], axis=-1),
        mk("Reshape", ["xy", "flat"], ["anchors"]),
        mk("Add", ["p", "anchors"], ["y"]),
    ]
    for node in nodes:
        node.doc_string = "x" * (doc // len(nodes))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", F, [1, weight])],
        [helper.make_tensor_value_info("y", F, [1, k])],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _optimize(model: onnx.ModelProto, tmp_path: Path, **kw):
    src, dst = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    report: list = []
    out = graphopt.optimize(str(src), report=report, **kw)
    graphopt.save(out, dst)
    folded = report[0].stats[0]
    assert folded.name == "fold-constants"
    return onnx.load(dst), folded, src.stat().st_size, dst.stat().st_size


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _grid_kept(model: onnx.ModelProto) -> bool:
    """The grid is computed at run time (an Expand chain, or after merge-concats an Add of two padded pieces), not
    stored: no constant but the weight holds as many elements."""
    return all(int(np.prod(t.dims)) < 2 * N * N for t in model.graph.initializer if t.name != "w")


def test_anchor_grid_over_the_cap_folds_when_the_model_has_shed_its_bytes(tmp_path: Path) -> None:
    model = _model(weight=256, doc=8000)  # 512 KB of weights: a 5 KB budget; 8 KB of doc strings shed
    out, stats, size_in, size_out = _optimize(model, tmp_path)
    assert _ops(out) == ["Gemm"]  # the grid folded: MatMul + constant bias, fuse-gemm
    assert stats.counts.get("over-cap-bytes") == 2 * N * N * 4
    assert size_out <= size_in
    assert_models_close(model, out)


def test_anchor_grid_stays_when_the_file_would_grow(tmp_path: Path) -> None:
    """Nothing shed (no doc strings): folding 2 KB from 128 bytes would make the file larger than the input."""
    model = _model(weight=256, doc=0)
    out, stats, size_in, size_out = _optimize(model, tmp_path)
    assert _grid_kept(out) and "over-cap-bytes" not in stats.counts
    assert size_out <= size_in
    assert_models_close(model, out)


def test_anchor_grid_stays_beyond_the_growth_budget(tmp_path: Path) -> None:
    """8 KB shed, but 1% of 64 KB of weights (655 bytes) does not hold the 2 KB grid."""
    model = _model(weight=32, doc=8000)
    out, stats, size_in, size_out = _optimize(model, tmp_path)
    assert _grid_kept(out) and "over-cap-bytes" not in stats.counts
    assert size_out <= size_in
    assert_models_close(model, out)


def test_fold_constants_alone_keeps_the_per_tensor_cap(tmp_path: Path) -> None:
    """Run on its own, the pass has seen the model shed nothing: the cap holds, as before."""
    model = _model(weight=256, doc=8000)
    out, stats, _, _ = _optimize(model, tmp_path, passes="fold-constants")
    assert _grid_kept(out) and "over-cap-bytes" not in stats.counts
    assert_models_close(model, out)
