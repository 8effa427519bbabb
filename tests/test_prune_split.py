"""Channel pruning around ops it does not track exactly (the sweep's problem 2): a Split after a Reshape (a YOLO11
attention block) or on another axis must be left as it is and block what it reads; a Split of the channel axis that
does not spell out its sizes gets them written out; and whatever the pruning made must load in onnxruntime (even
with ``--prune-bench 0``), or the error says it is graphopt's model, not the input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.errors import GraphoptError
from graphopt.prune import analysis as pr
from graphopt.prune import driver, transform
from tests.test_prune import _assert_same, _cli, _zero_channels, _zeroed_and_pruned


def _w(rng, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _attention(split_axis_sizes=(4, 4, 4)) -> onnx.ModelProto:
    """conv1 (16) -> qkv conv (24) -> Reshape [1, 2, 12, 64] -> Split axis 2 [4, 4, 4] (constant) -> q*k+v ->
    Reshape [1, 8, 8, 8] -> conv3: YOLO11's attn/Split, where the old transform wrote the sizes of axis 1 (2 heads)
    into the Split and onnxruntime refused the model (sum of 'split' 6 vs the split dimension 12)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(_w(rng, 16, 3, 3, 3), "w1"),
        numpy_helper.from_array(_w(rng, 16), "b1"),
        numpy_helper.from_array(_w(rng, 24, 16, 1, 1), "wqkv"),
        numpy_helper.from_array(_w(rng, 24), "bqkv"),
        numpy_helper.from_array(np.array([1, 2, 12, 64], np.int64), "heads"),
        numpy_helper.from_array(np.array(split_axis_sizes, np.int64), "qkv_sizes"),
        numpy_helper.from_array(np.array([1, 8, 8, 8], np.int64), "back"),
        numpy_helper.from_array(_w(rng, 4, 8, 3, 3), "w3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "wqkv", "bqkv"], ["qkv"], name="qkv"),
        helper.make_node("Reshape", ["qkv", "heads"], ["h"], name="attn/Reshape"),
        helper.make_node("Split", ["h", "qkv_sizes"], ["q", "k", "v"], axis=2, name="attn/Split"),
        helper.make_node("Mul", ["q", "k"], ["qk"], name="attn/Mul"),
        helper.make_node("Add", ["qk", "v"], ["a"], name="attn/Add"),
        helper.make_node("Reshape", ["a", "back"], ["a4"], name="attn/Reshape_1"),
        helper.make_node("Conv", ["a4", "w3"], ["y"], pads=[1, 1, 1, 1], name="conv3"),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _groups(proto: onnx.ModelProto) -> dict[str, str | None]:
    """Producer name -> why its group is blocked (None: prunable)."""
    model = from_proto(proto)
    infer_shapes(model)
    a = pr.analyse(model.graph)
    return {
        p.name: a.groups[r].blocked for r in {a.find(g) for g in range(len(a.groups))} for p in a.groups[r].producers
    }


def test_split_after_a_reshape_is_left_alone_and_blocks_its_group() -> None:
    proto = _attention()
    assert _groups(proto) == {"conv1": None, "qkv": "read by Reshape", "conv3": "graph output"}
    zeroed, pruned = _zeroed_and_pruned(proto)
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    sizes = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}[split.input[1]]
    assert sizes.tolist() == [4, 4, 4]
    w1 = next(t for t in pruned.graph.initializer if tuple(t.dims)[1:] == (3, 3, 3))
    assert w1.dims[0] == 8  # conv1's group pruned: 16 -> 8
    _assert_same(zeroed, pruned, {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)})


def _split_last_axis() -> onnx.ModelProto:
    """conv1 (16) -> conv2 (6) -> Reshape [1, 6, -1] -> Transpose -> Split axis -1 [4, 2]: a detection head's box /
    score split (isbnx, YOLOv10). The Split's outputs have a symbolic dim 1, where the old transform took None for
    their 'channel count' and crashed (TypeError)."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(_w(rng, 16, 3, 3, 3), "w1"),
        numpy_helper.from_array(_w(rng, 16), "b1"),
        numpy_helper.from_array(_w(rng, 6, 16, 1, 1), "w2"),
        numpy_helper.from_array(np.array([1, 6, -1], np.int64), "flat"),
        numpy_helper.from_array(np.array([4, 2], np.int64), "parts"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name="sig1"),
        helper.make_node("Conv", ["s1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Reshape", ["c2", "flat"], ["f"], name="Reshape"),
        helper.make_node("Transpose", ["f"], ["t"], perm=[0, 2, 1], name="Transpose"),
        helper.make_node("Split", ["t", "parts"], ["boxes", "scores"], axis=-1, name="Split"),
    ]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, None, 2]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_split_of_another_axis_with_symbolic_dims_is_left_alone() -> None:
    proto = _split_last_axis()
    assert _groups(proto) == {"conv1": None, "conv2": "read by Reshape"}
    zeroed, pruned = _zeroed_and_pruned(proto)
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    assert numpy_helper.to_array(next(t for t in pruned.graph.initializer if t.name == split.input[1])).tolist() == [
        4,
        2,
    ]
    rng = np.random.default_rng(1)
    for h, w in ((8, 8), (12, 20)):
        _assert_same(zeroed, pruned, {"x": rng.standard_normal((1, 3, h, w)).astype(np.float32)})


def _equal_split(opset: int) -> onnx.ModelProto:
    """conv1 (16) -> Split axis 1 into two halves without sizes (opset 11/13: no 'split'; 18: num_outputs=2) -> one
    conv per half -> Add. Pruning keeps a different count in each half: the sizes must be written out."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(_w(rng, 16, 3, 3, 3), "w1"),
        numpy_helper.from_array(_w(rng, 16), "b1"),
        numpy_helper.from_array(_w(rng, 4, 8, 3, 3), "wa"),
        numpy_helper.from_array(_w(rng, 4, 8, 1, 1), "wb"),
    ]
    split = {"num_outputs": 2} if opset >= 18 else {}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Split", ["c1"], ["l", "r"], axis=1, name="Split", **split),
        helper.make_node("Conv", ["l", "wa"], ["ya"], pads=[1, 1, 1, 1], name="conva"),
        helper.make_node("Conv", ["r", "wb"], ["yb"], name="convb"),
        helper.make_node("Add", ["ya", "yb"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "halves",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 10, 6])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_a_channel_split_without_sizes_gets_the_pruned_sizes(opset: int) -> None:
    zeroed, pruned = _zeroed_and_pruned(_equal_split(opset))
    onnx.checker.check_model(pruned, full_check=True)
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    if opset < 13:
        sizes = next(a.ints for a in split.attribute if a.name == "split")
    else:
        assert not any(a.name == "num_outputs" for a in split.attribute)
        sizes = numpy_helper.to_array(next(t for t in pruned.graph.initializer if t.name == split.input[1]))
    assert len(set(sizes)) == 2, sizes  # the halves kept different counts: an equal split would be wrong
    _assert_same(zeroed, pruned, {"x": np.random.default_rng(1).standard_normal((1, 3, 10, 6)).astype(np.float32)})


def test_a_maxpool_whose_indices_are_read_blocks_its_group() -> None:
    """MaxPool's Indices number the channels (and are not tracked): a group whose channels reach them is not pruned."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(_w(rng, 16, 3, 3, 3), "w1"), numpy_helper.from_array(_w(rng, 4, 16, 1, 1), "w2")]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("MaxPool", ["c1"], ["m", "idx"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Conv", ["m", "w2"], ["y"], name="conv2"),
        helper.make_node("ReduceMax", ["idx"], ["last"], keepdims=0, name="use_idx"),
    ]
    graph = helper.make_graph(
        nodes,
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4]),
            helper.make_tensor_value_info("last", TensorProto.INT64, []),
        ],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert _groups(proto)["conv1"] == "read by MaxPool"
    g = proto.graph  # make_model copied the graph
    g.output[1].CopyFrom(helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 16, 4, 4]))
    del g.node[3]  # the indices a graph output themselves
    assert _groups(proto)["conv1"] == "read by MaxPool"
    g.output[1].CopyFrom(helper.make_tensor_value_info("last", TensorProto.INT64, []))
    g.node.append(helper.make_node("ReduceMax", ["idx"], ["last"], keepdims=0, name="use_idx"))
    del g.node[3], g.output[1], g.node[1].output[1]  # the indices unread: conv1's group prunes
    assert _groups(proto)["conv1"] is None


def _broken_split(monkeypatch) -> None:
    """Put back the bug: a Split of pruned channels keeps its old sizes."""
    monkeypatch.setattr(transform, "_resize_split", lambda *args, **kwargs: None)


def test_a_pruned_model_onnxruntime_rejects_is_graphopts_error_without_timing(monkeypatch) -> None:
    _broken_split(monkeypatch)
    model = from_proto(_zero_channels(_equal_split(13), 0.5, seed=0))  # the halves keep different counts
    before = model.to_onnx().SerializeToString()
    with pytest.raises(GraphoptError, match="a bug in graphopt") as err:
        driver.run_pruning(model, 0.5, None, {"multiple": 1}, bench=0)
    assert "input model is fine" in str(err.value) and "onnxruntime" in str(err.value)
    assert model.to_onnx().SerializeToString() == before


PRUNE_HALF_NO_BENCH = ("--prune-channels", "0.5", "--prune-multiple", "1", "--prune-bench", "0")
"""Half the channels, no multiple, no timing: the load check alone stands between a broken model and the file."""


def test_cli_writes_no_model_onnxruntime_rejects_even_with_prune_bench_0(tmp_path, capsys, monkeypatch) -> None:
    _broken_split(monkeypatch)
    src, out = tmp_path / "halves.onnx", tmp_path / "p.onnx"
    onnx.save(_zero_channels(_equal_split(13), 0.5, seed=0), src)
    code, _, err = _cli(capsys, "optimize", str(src), "-o", str(out), *PRUNE_HALF_NO_BENCH)
    assert code == 2 and "graphopt's channel pruning made a model that onnxruntime rejects" in err, err
    assert not out.exists()


def test_fixed_attention_block_through_the_cli(tmp_path: Path, capsys) -> None:
    src, out = tmp_path / "attn.onnx", tmp_path / "p.onnx"
    onnx.save(_attention(), src)
    code, _, err = _cli(capsys, "optimize", str(src), "-o", str(out), *PRUNE_HALF_NO_BENCH)
    assert code == 0, err
    from graphopt.tools import runtime

    sess = runtime.session(out)
    sess.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})
