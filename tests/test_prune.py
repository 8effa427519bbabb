"""Pruning: channel groups, the zero-channel invariant, real exports, weight sparsity, 2:4, the CLI, and composing
with quantization."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.errors import GraphoptError
from graphopt.prune import analysis as pr
from graphopt.prune import prune_channels, prune_weights
from graphopt.quantize import output_error, quantize_model
from graphopt.tools import runtime
from tests.test_quantize import KINDS, _feeds, _Net

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _outputs(model, feeds):
    sess = runtime.session(model)
    return [sess.run(None, f) for f in feeds]


def _zero_channels(proto: onnx.ModelProto, ratio: float, seed: int) -> onnx.ModelProto:
    """The model with, in every prunable group, the channels ``prune_channels(ratio, multiple=1)`` removes set to zero
    in the producers' weights (randomly chosen channels; the others keep non-zero weights)."""
    model = from_proto(proto)
    infer_shapes(model)
    analysis = pr.analyse(model.graph)
    rng = np.random.default_rng(seed)
    zero: dict[str, list[tuple[int, np.ndarray]]] = {}
    for root in {analysis.find(g) for g in range(len(analysis.groups))}:
        grp = analysis.groups[root]
        if grp.blocked or not grp.producers:
            continue
        n_remove = grp.size - max(1, math.ceil(grp.size * (1 - ratio)))
        rows = rng.choice(grp.size, size=n_remove, replace=False)
        for p in grp.producers:
            axis = 0 if p.op_type == "Conv" or int(p.attr("transB", 0)) else 1
            zero.setdefault(p.inputs[1].name, []).append((axis, rows))
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for init in out.graph.initializer:
        for axis, rows in zero.get(init.name, []):
            arr = numpy_helper.to_array(init).copy()
            index = [slice(None)] * arr.ndim
            index[axis] = rows
            arr[tuple(index)] = 0
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
    st.integers(2, 10),
    st.integers(4, 9),
    st.sampled_from([0.25, 0.5, 0.75]),
    st.integers(0, 2**31 - 1),
)
def test_removing_channels_whose_weights_are_zero_changes_nothing(kinds, channels, size, ratio, seed) -> None:
    """The zero-channel invariant, on random conv nets with residual Adds, Concats, depthwise convs and pools."""
    folded = graphopt.optimize(_Net(np.random.default_rng(seed), channels, size).model(kinds), level=2)
    zeroed = _zero_channels(folded, ratio, seed)
    model = from_proto(zeroed)
    try:
        report = prune_channels(model, ratio, multiple=1)
    except GraphoptError as exc:
        assert "nothing to prune" in str(exc)
        return
    pruned = model.to_onnx()
    onnx.checker.check_model(pruned)
    feeds = _feeds(2, size, seed % 1000, batch=2)
    want, got = _outputs(zeroed, feeds), _outputs(pruned, feeds)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(b[0], a[0], rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(a[0]).max())))
    if report.groups_pruned:
        assert report.macs_after < report.macs_before
        assert report.param_bytes_after < report.param_bytes_before or report.folded


def test_residual_groups_prune_together_and_concat_maps_by_offset() -> None:
    proto = graphopt.optimize(_Net(np.random.default_rng(1), 8, 6).model(["residual", "concat"]), level=2)
    model = from_proto(proto)
    infer_shapes(model)
    a = pr.analyse(model.graph)
    adds = [n for n in model.graph if n.op_type == "Add"]
    # both inputs of the residual Add are in one group
    roots = [set(a.roots(v).tolist()) for v in adds[0].inputs]
    assert roots[0] == roots[1] and len(roots[0]) == 1
    concat = next(n for n in model.graph if n.op_type == "Concat")
    layout = a.roots(concat.outputs[0])
    assert len(set(layout[:8].tolist())) == 1 and len(set(layout[8:].tolist())) == 1 and layout[0] != layout[8]
    report = prune_channels(model, 0.5, multiple=2)
    assert report.groups_pruned >= 2
    out = model.to_onnx()
    feeds = _feeds(2, 6)
    assert np.all(np.isfinite(_outputs(out, feeds)[0][0]))


def test_graph_output_and_protected_layers_are_never_pruned() -> None:
    proto = graphopt.optimize(_Net(np.random.default_rng(2), 8, 6).model(["conv_relu", "conv_relu"]), level=2)
    names = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    model = from_proto(proto)
    report = prune_channels(model, 0.5, multiple=1, protect=[names[1]])
    convs = {n.name: n for n in model.graph if n.op_type == "Conv"}
    assert convs[names[1]].inputs[1].constant().dims[0] == 8  # protected
    assert convs[names[0]].inputs[1].constant().dims[0] == 4 + report.carriers  # the next conv is padded: a carrier
    assert report.blocked.get("protected layer") == 1 and report.blocked.get("graph output") == 1
    gemm = next(n for n in model.graph if n.op_type == "Gemm")
    assert gemm.outputs[0].shape[-1] == 5  # the logits keep their size


def test_unknown_op_blocks_its_group() -> None:
    """A channel-mixing op the analysis does not understand (Softmax over channels) blocks the group it reads."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Softmax", ["c"], ["s"], axis=1, name="softmax"),
            helper.make_node("Conv", ["s", "w2"], ["y"], name="conv2"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [w, w2],
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(GraphoptError, match="nothing to prune.*read by Softmax"):
        prune_channels(model, 0.5, multiple=1)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_zero_one_is_an_error(ratio) -> None:
    model = from_proto(onnx.load(FIXTURES / "cnn.onnx"))
    with pytest.raises(GraphoptError, match=r"\[0, 1\)"):
        prune_channels(model, ratio)
    with pytest.raises(GraphoptError, match=r"\[0, 1\)"):
        prune_weights(model, ratio)


def test_protect_that_matches_nothing_is_an_error() -> None:
    """A misspelt protection would prune the layer meant to be kept (more in tests/test_node_names.py)."""
    model = graphopt.optimize(FIXTURES / "cnn.onnx")
    with pytest.raises(GraphoptError, match="--prune-protect 'no-such-layer' matches no node name"):
        prune_channels(model, 0.5, multiple=1, protect=["no-such-layer"])


# --------------------------------------------------------------------------------------------------------------------
# real exports: MACs and parameters shrink, the model stays valid and close
# --------------------------------------------------------------------------------------------------------------------
REAL = {
    "resnet50.ts.onnx": 2.0,
    "resnet50.dynamo.onnx": 2.0,
    "mobilenetv2.ts.onnx": 1.6,  # groups through padded depthwise convs stay whole (exact borders)
    "concatnet.ts.onnx": 2.0,
    "efficientnet.ts.onnx": 1.3,
    "vgg.ts.onnx": 2.0,
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_exports_lose_macs_and_stay_valid(name: str) -> None:
    path = FIXTURES / "real" / name
    with np.load(FIXTURES / "real" / f"{name.split('.')[0]}.io.npz") as data:
        feeds = [{k: data[k] for k in data.files if k != "output"}]
    model = graphopt.optimize(path, level=2)
    report = prune_channels(model, 0.5, multiple=1)
    out = model.to_onnx()
    onnx.checker.check_model(out)
    assert report.macs_before / report.macs_after >= REAL[name]
    got = _outputs(out, feeds)[0][0]
    assert got.shape == data_shape(path, feeds) and np.all(np.isfinite(got))
    for layer in report.layers:
        assert layer.params[1] <= layer.params[0]


def data_shape(path: Path, feeds) -> tuple[int, ...]:
    return _outputs(onnx.load(path), feeds)[0][0].shape


def test_prune_then_quantize_runs() -> None:
    path = FIXTURES / "real" / "resnet18.ts.onnx"
    with np.load(FIXTURES / "real" / "resnet18.io.npz") as data:
        feeds = [{k: data[k] for k in data.files if k != "output"}]
    model = graphopt.optimize(path, level=2)
    prune_channels(model, 0.5, multiple=1)
    pruned = model.to_onnx()
    report = quantize_model(model, feeds, "ort", {"cache": False})
    assert report.layers and report.fused_count == len(report.layers)
    quantized = model.to_onnx()
    err, _ = output_error(_outputs(pruned, feeds), _outputs(quantized, feeds))
    assert err < 0.2


# --------------------------------------------------------------------------------------------------------------------
# weight sparsity
# --------------------------------------------------------------------------------------------------------------------
def test_unstructured_sparsity_reaches_the_ratio_and_keeps_shapes() -> None:
    model = graphopt.optimize(FIXTURES / "real" / "resnet18.ts.onnx", level=2)
    shapes = {n.name: n.inputs[1].constant().dims for n in model.graph if n.op_type in ("Conv", "Gemm")}
    report = prune_weights(model, 0.6)
    total = zero = 0
    for n in model.graph:
        if n.op_type in ("Conv", "Gemm"):
            w = n.inputs[1].constant().numpy()
            assert w.shape == shapes[n.name]
            total += w.size
            zero += int((w == 0).sum())
    assert abs(zero / total - 0.6) < 0.01
    assert all(layer.sparsity is not None for layer in report.layers)
    assert "not faster" in report.note
    layered = graphopt.optimize(FIXTURES / "real" / "resnet18.ts.onnx", level=2)
    per_layer = prune_weights(layered, 0.6, scope="layer")
    assert all(abs(layer.sparsity - 0.6) < 0.02 for layer in per_layer.layers if layer.params[0] > 100)


def test_two_four_keeps_the_two_largest_of_every_four_input_channels() -> None:
    model = graphopt.optimize(FIXTURES / "real" / "resnet18.ts.onnx", level=2)
    before = {n.name: n.inputs[1].constant().numpy() for n in model.graph if n.op_type == "Conv"}
    prune_weights(model, mode="2:4")
    for n in model.graph:
        if n.op_type != "Conv" or before[n.name].shape[1] % 4:
            continue
        w, orig = n.inputs[1].constant().numpy(), before[n.name]
        blocks = np.moveaxis(w, 1, -1).reshape(*w.shape[:1], *w.shape[2:], -1, 4)
        assert np.all((blocks != 0).sum(axis=-1) <= 2)
        kept = np.moveaxis(np.abs(orig), 1, -1).reshape(blocks.shape)
        # what was dropped is never larger than what was kept in the same block
        dropped = np.where(blocks == 0, kept, 0).max(axis=-1)
        smallest_kept = np.where(blocks != 0, kept, np.inf).min(axis=-1)
        assert np.all(dropped <= smallest_kept)


def test_sparse_initializers_load_and_run(tmp_path) -> None:
    model = graphopt.optimize(FIXTURES / "cnn.onnx", level=2)
    dense = model.to_onnx()
    prune_weights(model, 0.7, sparse=True)
    out = tmp_path / "sparse.onnx"
    graphopt.save(model, out)
    loaded = onnx.load(out)
    assert len(loaded.graph.sparse_initializer) > 0
    feeds = _feeds(2, 32)
    assert np.all(np.isfinite(_outputs(str(out), feeds)[0][0]))
    assert out.stat().st_size < len(dense.SerializeToString())


def _pruned_file(tmp_path: Path, name: str, ratio: float, scope: str, sparse: bool) -> tuple[Path, object]:
    model = graphopt.optimize(FIXTURES / "cnn.onnx", level=2)
    report = prune_weights(model, ratio, scope=scope, sparse=sparse)
    out = tmp_path / f"{name}.onnx"
    graphopt.save(model, out)
    return out, report


@pytest.mark.parametrize("ratio, scope", [(0.5, "layer"), (0.7, "global"), (0.9, "layer")])
def test_a_weight_is_stored_sparse_only_where_that_is_smaller_and_runs_the_same(tmp_path, ratio, scope) -> None:
    """A sparse initializer keeps an int64 index per value: a float32 weight with 1/2 of its values left is 1.5x its
    dense size (mtcnn-onet pruned 0.5 went from 1.5 MB to 2.2 MB). Only the weights that are smaller sparse are
    stored so; the file is never larger than the dense one and computes the same under onnxruntime."""
    dense_file, _ = _pruned_file(tmp_path, "dense", ratio, scope, sparse=False)
    sparse_file, report = _pruned_file(tmp_path, "sparse", ratio, scope, sparse=True)
    stored = onnx.load(sparse_file).graph.sparse_initializer
    assert report.sparse_stored == len(stored) and report.sparse_weights >= len(stored)
    assert report.to_dict()["sparse_stored"] == len(stored)
    for sp in stored:  # each one smaller than its dense form
        values, indices = numpy_helper.to_array(sp.values), numpy_helper.to_array(sp.indices)
        assert values.nbytes + indices.nbytes < math.prod(sp.dims) * values.itemsize
    names = {sp.values.name for sp in stored}
    for t in onnx.load(dense_file).graph.initializer:  # each pruned weight left dense: not smaller sparse
        if t.name.endswith("_sparse") and t.name not in names:
            arr = numpy_helper.to_array(t)
            assert np.count_nonzero(arr) * (arr.itemsize + 8) >= arr.nbytes, t.name
    if ratio == 0.5:
        assert not stored and "stay dense" in report.note  # every layer half zeros: dense is smaller
    if ratio == 0.9:
        assert len(stored) == report.sparse_weights > 0
    assert sparse_file.stat().st_size <= dense_file.stat().st_size
    feeds = _feeds(2, 32)
    for a, b in zip(_outputs(str(dense_file), feeds), _outputs(str(sparse_file), feeds), strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------------
def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from graphopt.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_prunes_channels_reports_and_composes_with_quantization(tmp_path, capsys) -> None:
    out = tmp_path / "p.onnx"
    src = FIXTURES / "real" / "resnet18.ts.onnx"
    code, stdout, _ = _cli(
        capsys,
        "optimize",
        str(src),
        "-o",
        str(out),
        "--prune-channels",
        "0.5",
        "--prune-multiple",
        "1",
        "--prune-bench",
        "0",
        "--quantize",
        "int8",
        "--calib-random",
        "2",
        "--calib-cache",
        "off",
        "--json",
    )
    assert code == 0 and out.is_file()
    summary = json.loads(stdout)
    p = summary["pruning"][0]
    assert p["mode"] == "channels" and p["macs_after"] < p["macs_before"] / 2
    assert summary["quantization"]["layers"]
    runtime.session(out).run(None, runtime.make_inputs(runtime.session(out)))


def _optimize_cnn(capsys, out: Path, *extra: str) -> tuple[int, str, str]:
    """``graphopt optimize fixtures/cnn.onnx -o OUT`` plus ``extra``."""
    return _cli(capsys, "optimize", str(FIXTURES / "cnn.onnx"), "-o", str(out), *extra)


def test_cli_two_four_prints_the_sparsity_note(tmp_path, capsys) -> None:
    code, stdout, _ = _optimize_cnn(capsys, tmp_path / "s.onnx", "--prune-weights", "2:4", "--prune-bench", "0")
    assert code == 0 and "sparsity" in stdout and "not faster" in stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prune-channels", "1.0"], "--prune-channels must be in [0, 1)"),
        (["--prune-channels", "-0.5"], "--prune-channels must be in [0, 1)"),
        (["--prune-weights", "3:4"], "--prune-weights takes a ratio"),
        (["--prune-weights", "1"], "--prune-weights must be in [0, 1)"),
        (["--prune-layer", "stem/Conv=2", "--prune-channels", "0.5"], "NAME=RATIO"),
        (["--prune-protect", "stem/Conv"], "need --prune-channels or --prune-weights"),
        (["--prune-channels", "0.5", "--prune-multiple", "0"], "at least 1"),
    ],
)
def test_cli_bad_pruning_arguments_exit_2_and_write_nothing(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "p.onnx"
    code, _, err = _optimize_cnn(capsys, out, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_protect_that_matches_nothing_is_an_error(tmp_path, capsys) -> None:
    code, _, err = _optimize_cnn(
        capsys,
        tmp_path / "p.onnx",
        "--prune-channels",
        "0.5",
        "--prune-protect",
        "nothing-like-this",
        "--prune-bench",
        "0",
    )
    assert code == 2 and "--prune-protect 'nothing-like-this' matches no node name" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "p.onnx").exists()


def test_bias_borders_add_no_carrier_and_stay_close_inside() -> None:
    """The exact default puts padded readers' border correction in carrier channels; --prune-borders bias does not
    (approximate at the borders). Neither adds a node: the graph keeps its ops, only shapes shrink."""
    proto = graphopt.optimize(_Net(np.random.default_rng(3), 8, 8).model(["conv_relu", "residual"]), level=2)
    exact, approx = from_proto(proto), from_proto(proto)
    r_exact = prune_channels(exact, 0.5, multiple=1)
    r_bias = prune_channels(approx, 0.5, multiple=1, borders="bias")
    assert r_exact.carrier_readers > 0 and r_exact.carriers > 0 and r_bias.carrier_readers == r_bias.carriers == 0
    assert r_bias.param_bytes_after <= r_exact.param_bytes_after < r_exact.param_bytes_before
    ops = sorted(n.op_type for n in proto.graph.node)
    assert sorted(n.op_type for n in exact.graph) == sorted(n.op_type for n in approx.graph) == ops
    feeds = _feeds(1, 8)
    assert np.all(np.isfinite(_outputs(approx.to_onnx(), feeds)[0][0]))


def test_prune_passes_run_in_a_pipeline() -> None:
    proto = _Net(np.random.default_rng(4), 8, 6).model(["conv_relu", "residual"])
    report: list = []
    out = graphopt.optimize(
        proto,
        passes="cleanup,fold-conv-bn,prune-channels{ratio=0.5,multiple=1},prune-weights{mode=2:4},cleanup",
        fixed_point=True,
        report=report,
    )
    convs = [n for n in out.graph.node if n.op_type == "Conv"]
    dims = {tuple(numpy_helper.to_array(i).shape) for i in out.graph.initializer}
    once = from_proto(graphopt.optimize(proto, passes="cleanup,fold-conv-bn"))
    prune_channels(once, 0.5, multiple=1)
    want = {tuple(t.dims) for t in once.to_onnx().graph.initializer}
    assert {d for d in dims if len(d) == 4} == {d for d in want if len(d) == 4}  # pruned once, not to a fixed point
    assert convs and {s.name for s in report[0].stats} >= {"prune-channels", "prune-weights"}
    assert np.all(np.isfinite(_outputs(out, _feeds(1, 6))[0][0]))


def test_a_tensor_read_inside_a_subgraph_is_never_pruned() -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2")
    then = helper.make_graph(
        [helper.make_node("Relu", ["c"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
    )
    other = helper.make_graph(
        [helper.make_node("Neg", ["c"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Conv", ["c", "w2"], ["y"], name="conv2"),
            helper.make_node("If", ["flag"], ["z"], then_branch=then, else_branch=other, name="if"),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, None),
        ],
        [w, w2],
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(GraphoptError, match="read inside a subgraph"):
        prune_channels(model, 0.5, multiple=1)


# --------------------------------------------------------------------------------------------------------------------
# issue 16: exact borders at every input size, never larger, never slower, inputs the model takes
# --------------------------------------------------------------------------------------------------------------------
def _fpn(channels: int = 16, stride: int = 32) -> onnx.ModelProto:
    """A feature-pyramid-like net with dynamic H and W that only runs when they are multiples of ``stride``: the 3x3
    padded convs (border effects) feed a pooled branch that is resized back and added."""
    rng = np.random.default_rng(0)

    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32) * 0.3

    inits = [
        numpy_helper.from_array(w(channels, 3, 3, 3), "w1"),
        numpy_helper.from_array(np.abs(w(channels)) + 0.1, "b1"),
        numpy_helper.from_array(w(channels, channels, 3, 3), "w2"),
        numpy_helper.from_array(np.abs(w(channels)) + 0.1, "b2"),
        numpy_helper.from_array(w(4, channels, 3, 3), "w3"),
        numpy_helper.from_array(np.array([1, 1, stride, stride], np.float32), "scales"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1, 1, 1, 1], name="conv3"),
        helper.make_node("AveragePool", ["c3"], ["p"], kernel_shape=[stride] * 2, strides=[stride] * 2, name="pool"),
        helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="nearest", name="resize"),
        helper.make_node("Add", ["c3", "u"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "fpn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "h", "w"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _zeroed_and_pruned(proto: onnx.ModelProto, ratio: float = 0.5, **opts) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    zeroed = _zero_channels(proto, ratio, seed=0)
    model = from_proto(zeroed)
    report = prune_channels(model, ratio, multiple=1, **opts)
    assert report.groups_pruned > 0
    assert report.param_bytes_after < report.param_bytes_before
    return zeroed, model.to_onnx()


def _assert_same(zeroed: onnx.ModelProto, pruned: onnx.ModelProto, feeds: dict) -> None:
    want = runtime.session(zeroed).run(None, feeds)
    got = runtime.session(pruned).run(None, feeds)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(a).max())))


def test_probe_uses_sizes_the_model_takes_and_borders_stay_exact_at_every_size() -> None:
    """Issue 16: the probe ran at the default size 16, which a net wanting multiples of 32 refuses; and the exact
    border correction was a constant map of the probe's size. Now the probe finds a size the model runs (256 for a net
    that wants multiples of 64) and the correction lives in a carrier channel's weights: exact at other sizes too,
    with no node added."""
    from graphopt.prune.driver import sample_inputs

    with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own error: the default size does not run
        runtime.session(_fpn()).run(None, runtime.make_inputs(runtime.session(_fpn())))
    assert sample_inputs(from_proto(_fpn(stride=64)))["x"].shape == (1, 3, 256, 256)
    proto = _fpn()
    zeroed, pruned = _zeroed_and_pruned(proto)
    assert sorted(n.op_type for n in pruned.graph.node) == sorted(n.op_type for n in proto.graph.node)
    rng = np.random.default_rng(1)
    for h, w in ((32, 32), (64, 96)):
        _assert_same(zeroed, pruned, {"x": rng.standard_normal((1, 3, h, w)).astype(np.float32)})


def test_wild_models_with_dynamic_sizes_keep_the_zero_channel_invariant() -> None:
    """The two corpus models whose border maps broke the pruned model on other sizes (issue 16): the zero-channel
    invariant on their valid inputs, which differ from the probe's size."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("wild_corpus", FIXTURES.parent / "benchmarks" / "corpus.py")
    corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpus)
    for name in ("aecmos-a", "ppocrv4-cls-op11"):
        src = FIXTURES / "wild" / f"{name}.onnx"
        folded = graphopt.optimize(onnx.load(src), level=2)
        zeroed, pruned = _zeroed_and_pruned(folded, 0.3)
        _assert_same(zeroed, pruned, corpus.feeds(corpus.BY_NAME[name], seed=0, path=src))


def test_a_padded_depthwise_conv_between_leaves_the_group_whole_with_the_reason() -> None:
    """A removed channel with a non-zero constant through a padded depthwise conv varies at the border: no carrier
    can hold that exactly, so that group stays whole and says why."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.full(8, 0.5, np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "wd"),
        numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Conv", ["c1", "wd"], ["d"], pads=[1, 1, 1, 1], group=8, name="dw"),
        helper.make_node("Conv", ["d", "w2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "dw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(GraphoptError, match="nothing to prune.*vary across the map"):
        prune_channels(model, 0.5, multiple=1)
    approx = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert prune_channels(approx, 0.5, multiple=1, borders="bias").groups_pruned == 1


def test_a_file_listing_of_the_old_channel_count_is_not_written_back() -> None:
    """A value listed twice in the file (paddle2onnx does) kept its second listing verbatim; after pruning, that
    listing's old channel count made onnxruntime refuse the model ("Incompatible dimensions")."""
    proto = _fpn()
    proto.graph.value_info.extend(
        [
            helper.make_tensor_value_info("r1", TensorProto.FLOAT, [1, 16, "h", "w"]),
            helper.make_tensor_value_info("r1", TensorProto.FLOAT, [1, 16, "h2", "w2"]),
        ]
    )
    zeroed, pruned = _zeroed_and_pruned(proto)
    onnx.shape_inference.infer_shapes(pruned, strict_mode=True)
    _assert_same(zeroed, pruned, {"x": np.ones((1, 3, 64, 32), np.float32)})


def test_pruning_that_is_not_faster_is_refused_and_the_model_left_as_it_was(monkeypatch) -> None:
    """The decision only (timing is the runtime's): a pruned model whose median latency is not below the model's
    before is an exit-2 'nothing to prune' and the model comes back unchanged."""
    from graphopt.prune import driver

    timings: list[tuple[float, float]] = []

    def measure(*args, **kwargs):
        return timings.pop(0)

    monkeypatch.setattr(driver, "measure", measure)
    model = graphopt.optimize(FIXTURES / "cnn.onnx")
    before = model.to_onnx().SerializeToString()
    timings[:] = [(1.0, 1.0), (1.0, 0.98)]  # not faster, twice
    with pytest.raises(GraphoptError, match="nothing to prune: the pruned model is not faster"):
        driver.run_pruning(model, 0.5, None, {"multiple": 8}, bench=5)
    assert model.to_onnx().SerializeToString() == before and not timings
    timings[:] = [(1.0, 2.0), (1.0, 0.5)]  # a stall in the first measurement: the second decides
    reports = driver.run_pruning(model, 0.5, None, {"multiple": 8}, bench=5)
    assert reports[0].latency_ms == (1.0, 0.5) and reports[0].param_bytes_after < reports[0].param_bytes_before


def test_cli_prune_shape_feeds_the_probe_and_bad_shapes_exit_2(tmp_path, capsys) -> None:
    src = tmp_path / "fpn.onnx"
    onnx.save(_fpn(), src)
    out = tmp_path / "p.onnx"
    base = ["optimize", str(src), "-o", str(out), "--prune-channels", "0.5", "--prune-multiple", "1", "--prune-bench"]
    code, _, err = _cli(capsys, *base, "0", "--prune-shape", "x=1x3x48x48", "-q")
    assert code == 2 and err.count("\n") == 1 and "graphopt: error:" in err and "--prune-shape" in err
    assert not out.exists()
    code, _, err = _cli(capsys, *base, "0", "--prune-shape", "x=1x3xAx4", "-q")
    assert code == 2 and "--prune-shape 'x=1x3xAx4'" in err
    code, _, err = _cli(capsys, *base, "0", "--prune-shape", "x=1x3x64x64", "-q")
    assert code == 0 and out.is_file(), err
    runtime.session(out).run(None, {"x": np.ones((1, 3, 96, 32), np.float32)})


def test_prelu_with_a_per_channel_slope_passes_channels_on() -> None:
    """PRelu (mtcnn's activation) is a per-channel op: its slope is sliced with the group, and the removed
    channels' constant goes through it (the zero-channel invariant, at a padded reader)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.uniform(0.1, 0.5, (16, 1, 1)).astype(np.float32), "slope"),
        numpy_helper.from_array(rng.standard_normal((4, 16, 3, 3)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("PRelu", ["c1", "slope"], ["p"], name="prelu"),
        helper.make_node("Conv", ["p", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "prelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "h", "w"])],
        inits,
    )
    zeroed, pruned = _zeroed_and_pruned(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    slope = next(t for t in pruned.graph.initializer if t.name.startswith("slope"))
    assert tuple(slope.dims) in ((8, 1, 1), (9, 1, 1))  # half the channels, plus a carrier where it has no room
    _assert_same(zeroed, pruned, {"x": np.random.default_rng(1).standard_normal((1, 3, 20, 12)).astype(np.float32)})


def test_pruning_that_removes_almost_no_macs_is_refused_without_timing(tmp_path, capsys) -> None:
    """fixtures/cnn.onnx at 0.3 (multiple 8) can only thin its last conv: 2% of the MACs, which no run makes
    measurably faster. The model is left alone with the reason, deterministically (no timing needed)."""
    out = tmp_path / "p.onnx"
    code, _, err = _optimize_cnn(capsys, out, "--prune-channels", "0.3", "--prune-bench", "0", "-q")
    assert code == 2 and not out.exists()
    assert err.startswith("graphopt: error: nothing to prune: 1 of 4 channel groups") and "only 2.2% of the MACs" in err


def test_a_constant_that_depends_on_the_input_size_is_not_folded() -> None:
    """A removed channel's non-zero constant through a padded depthwise conv and a global pool reaches the Gemm
    reader as one number per channel, but that number depends on H and W (the border's share of the map): folded at
    the probe's size it would be wrong at others. The probe at a second size finds it; the group stays whole."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.full(8, 0.5, np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "wd"),
        numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "wg"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("Conv", ["c1", "wd"], ["d"], pads=[1, 1, 1, 1], group=8, name="dw"),
        helper.make_node("GlobalAveragePool", ["d"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wg"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "gap",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(GraphoptError, match="nothing to prune.*vary across the map"):
        prune_channels(model, 0.5, multiple=1)


def test_a_model_with_nothing_to_prune_says_so_before_any_run() -> None:
    """The group check comes before the probe's search for inputs the model takes: a model nothing can be pruned
    in gets that reason, not the runtime's complaint about random inputs (an LSTM state the sizes did not fit)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 8, 5, 5], np.int64), "shape")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Softmax", ["c"], ["s"], axis=1, name="softmax"),
            helper.make_node("Reshape", ["s", "shape"], ["y"], name="reshape"),  # runs at 5x5 only
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 5, 5])],
        [w, shape],
    )
    model = from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    from graphopt.prune.driver import run_pruning

    with pytest.raises(GraphoptError, match="nothing to prune.*read by Softmax"):
        run_pruning(model, 0.5, None, {})


def test_cli_probe_runs_on_the_calib_data_sizes(tmp_path, capsys) -> None:
    """From the command line, --calib-data feeds pruning's probe (alone or with --quantize): a net that only runs on
    multiples of 36 takes none of the sizes the probe would try, but the data's 72x72 runs."""
    src = tmp_path / "fpn36.onnx"
    onnx.save(_fpn(stride=36), src)
    data = tmp_path / "calib"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.savez(data / f"{i}.npz", x=rng.standard_normal((1, 3, 72, 72)).astype(np.float32))
    out = tmp_path / "p.onnx"
    base = ["optimize", str(src), "-o", str(out), "--prune-channels", "0.5", "--prune-multiple", "1"]
    base += ["--prune-bench", "0", "-q"]
    code, _, err = _cli(capsys, *base)
    assert code == 2 and "--prune-shape" in err and not out.exists()  # without the data: no size it runs on
    code, _, err = _cli(capsys, *base, "--calib-data", str(data))
    assert code == 0 and out.is_file(), err
    (y,) = runtime.session(out).run(None, {"x": np.ones((1, 3, 108, 36), np.float32)})
    assert y.shape == (1, 4, 108, 36)
    code, _, err = _cli(
        capsys, *base, "--calib-data", str(data), "--quantize", "int8", "--calib-cache", "off", "--exclude-op", "Add"
    )
    assert code == 0 and out.is_file(), err


# --------------------------------------------------------------------------------------------------------------------
# float16 models (issue 16: every fp16 model of the corpus stopped with "the model: onnxruntime cannot load it")
# --------------------------------------------------------------------------------------------------------------------
def test_intermediate_outputs_keep_their_own_type() -> None:
    """runtime.add_outputs exposes intermediate tensors for pruning's probe and calibration: a float16 or int64
    tensor declared float would not load."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Neg", ["r"], ["y"]),
    ]
    proto = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    runtime.add_outputs(proto, ["r", "s", "y"])
    y_, r, s = runtime.session(proto).run(None, {"x": np.array([-1, 2], np.float16)})
    assert r.dtype == np.float16 and s.dtype == np.int64 and r.tolist() == [0, 2] and s.tolist() == [2]


def test_float16_model_prunes() -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = graphopt.optimize(_Net(np.random.default_rng(5), 8, 8).model(["conv_relu", "conv_relu"]), level=2)
    model = from_proto(convert_float_to_float16(proto))  # float16 weights, inputs and outputs
    report = prune_channels(model, 0.5, multiple=1)
    assert report.macs_after < report.macs_before
    feeds = {k: v.astype(np.float16) for k, v in _feeds(1, 8)[0].items()}
    (y,) = runtime.session(model.to_onnx()).run(None, feeds)
    assert y.dtype == np.float16 and np.isfinite(y).all()


def test_cli_float16_corpus_model_prunes_as_its_float32_original(tmp_path, capsys) -> None:
    """The corpus' ppocrv5-cls-fp16 and opennsfw-torch-fp16 are float16 conversions of real models (onnxruntime's
    converter, which leaves the graph unsorted: hence --no-check). The same conversion of the CI subset's PP-OCR
    classifier must get the answer its float32 original gets, not a load error of the probe model."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = FIXTURES / "wild" / "ppocrv4-cls-op11.onnx"
    half = tmp_path / "fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(src), keep_io_types=True), half)
    answers = []
    for path in (src, half):
        out = tmp_path / "out.onnx"
        argv = ["optimize", str(path), "-o", str(out), "-O2", "--no-check", "--prune-channels", "0.3"]
        code, _, err = _cli(capsys, *argv, "--prune-bench", "0", "-q")
        answers.append((code, err.strip()))
    assert answers[0][0] == 2 and "nothing to prune" in answers[0][1]
    assert answers[1] == answers[0]


def test_pre_quantized_model_says_its_weights_are_quantized() -> None:
    """A QDQ model's Conv reads its weight through DequantizeLinear: no channel group has constant weights, and the
    reason says why (it said "no Conv or Gemm layers" of a model full of Convs). A model without layers keeps that."""
    from graphopt.prune.driver import run_pruning

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.int8), "wq")
    s = numpy_helper.from_array(np.array(0.1, np.float32), "ws")
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    qdq = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], [w, s]), opset_imports=[helper.make_opsetid("", 17)]
    )
    with pytest.raises(GraphoptError, match="nothing to prune: the Conv/Gemm/MatMul weights are quantized"):
        run_pruning(from_proto(qdq), 0.5, None, {})
    plain = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    with pytest.raises(GraphoptError, match=r"no channel group can be pruned safely \(no Conv or Gemm layers\)"):
        run_pruning(from_proto(plain), 0.5, None, {})
