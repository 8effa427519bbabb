"""Loading from a path maps the main graph's raw_data initializers instead of copying them (graphopt.core.mapped). The
model must come back field for field, whatever sits beside the weights, and in-place saves must keep working."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.mapped import MIN_MAPPED_BYTES, encode_varint, scan
from graphopt.core.onnx_io import to_proto
from graphopt.errors import ModelLoadError

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)


@st.composite
def weighty_models(draw):
    """Chains of Add with initializers of random size (some above the mapping threshold), dtypes, doc strings and
    metadata, some stored in typed fields instead of raw_data, and an If whose branch has an initializer of the same
    name as one in the main graph (only the main graph's may be mapped)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    inits, nodes = [], []
    cur = "x"
    width = draw(st.sampled_from([4, 300, 700]))
    for i in range(draw(st.integers(1, 5))):
        dtype = draw(st.sampled_from([np.float32, np.float64, np.float16]))
        arr = rng.standard_normal(width).astype(dtype)
        t = numpy_helper.from_array(arr, f"w{i}")
        if draw(st.booleans()) and dtype != np.float16:
            t = helper.make_tensor(f"w{i}", t.data_type, [width], arr.tolist())  # typed field, not raw_data
        if draw(st.booleans()):
            t.doc_string = draw(texts)
        if draw(st.booleans()):
            t.metadata_props.add(key="k", value=draw(texts))
        inits.append(t)
        cast = f"c{i}"
        nodes.append(helper.make_node("Cast", [f"w{i}"], [cast], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Add", [cur, cast], [f"v{i}"]))
        cur = f"v{i}"
    then_init = numpy_helper.from_array(np.full(width, 2.0, np.float32), "w0")  # shadows the main graph's w0
    then_g = helper.make_graph(
        [helper.make_node("Add", [cur, "w0"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", 1, [width])],
        [then_init],
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", [cur], ["e"])], "else", [], [helper.make_tensor_value_info("e", 1, [width])]
    )
    nodes.append(helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", 1, [width]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", 1, [width])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weighty_models())
def test_mapped_load_round_trips_field_for_field(tmp_path: Path, model: onnx.ModelProto) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    scanned = scan(path)
    big_raw = [
        t.name for t in model.graph.initializer if t.HasField("raw_data") and len(t.raw_data) >= MIN_MAPPED_BYTES
    ]
    assert (scanned is not None) == bool(big_raw)
    if scanned is not None:
        assert sorted(scanned.ranges) == sorted(big_raw)
    loaded = graphopt.load(path)
    assert to_proto(loaded) == model
    graphopt.save(loaded, tmp_path / "out.onnx")
    assert onnx.load(str(tmp_path / "out.onnx")) == model


def test_mapped_tensors_are_views_of_the_file(tmp_path: Path) -> None:
    w = np.arange(1024, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", 1, [1024])],
        [helper.make_tensor_value_info("y", 1, [1024])],
        [numpy_helper.from_array(w, "w")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    model = graphopt.load(path)
    t = model.graph.initializers["w"].const
    arr = t.numpy()
    assert not arr.flags.owndata and not arr.flags.writeable and not t.is_external
    np.testing.assert_array_equal(arr, w)


def test_in_place_optimize_of_a_mapped_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Identity", ["a"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", 1, [2, 64])],
        [helper.make_tensor_value_info("y", 1, [2, 64])],
        [numpy_helper.from_array(w, "w")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    model = graphopt.load(path)
    graphopt.optimize(model, level=2)
    graphopt.save(model, path)  # replaces the file the weights are mapped from
    graphopt.save(model, tmp_path / "again.onnx")  # the old mapping still reads the old bytes
    for p in (path, tmp_path / "again.onnx"):
        back = onnx.load(str(p))
        np.testing.assert_array_equal(numpy_helper.to_array(back.graph.initializer[0]), w)


def test_raw_data_of_the_wrong_length_is_a_clear_error(tmp_path: Path) -> None:
    t = numpy_helper.from_array(np.zeros(600, np.float32), "w")
    t.dims[0] = 700
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])], "g", [], [helper.make_tensor_value_info("y", 1, [700])], [t]
    )
    path = tmp_path / "bad.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(ModelLoadError, match="'w' has 2400 bytes of raw_data"):
        graphopt.load(path)


@pytest.mark.parametrize("data", [b"\x0a\xff\xff\xff", b"\xff" * 20, b"not a model at all"])
def test_garbage_falls_back_to_the_ordinary_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(data)
    assert scan(path) is None
    with pytest.raises(ModelLoadError, match="junk.onnx"):
        graphopt.load(path)


def test_duplicate_initializer_names_keep_their_own_data(tmp_path: Path) -> None:
    """An invalid model with two initializers of one name: the importer must not hand the second the first's bytes."""
    a = numpy_helper.from_array(np.zeros(512, np.float32), "w")
    b = numpy_helper.from_array(np.ones(512, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])], "g", [], [helper.make_tensor_value_info("y", 1, [512])], [a, b]
    )
    path = tmp_path / "dup.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    mapped = graphopt.load(path).graph.initializers["w"].const.numpy()
    parsed = graphopt.load(onnx.load(str(path))).graph.initializers["w"].const.numpy()
    np.testing.assert_array_equal(mapped, parsed)


def test_raw_data_given_twice_loads_as_protobuf_reads_it(tmp_path: Path) -> None:
    """Protobuf keeps the last of a repeated scalar field; the scan leaves such a tensor to protobuf rather than
    mapping either copy."""
    first = numpy_helper.from_array(np.zeros(512, np.float32), "w")
    second = numpy_helper.from_array(np.arange(512, dtype=np.float32), "w")
    tensor = first.SerializeToString() + second.SerializeToString()[-(len(second.raw_data) + 3) :]
    assert onnx.TensorProto.FromString(tensor).raw_data == second.raw_data
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])], "g", [], [helper.make_tensor_value_info("y", 1, [512])]
    )
    model = helper.make_model(graph)
    model.ClearField("graph")
    # the initializer's bytes are written as they are (re-serializing would keep one raw_data)
    graph_bytes = graph.SerializeToString() + encode_varint((5 << 3) | 2) + encode_varint(len(tensor)) + tensor
    path = tmp_path / "twice.onnx"
    head = model.SerializeToString() + encode_varint((7 << 3) | 2) + encode_varint(len(graph_bytes))
    path.write_bytes(head + graph_bytes)
    assert onnx.load(str(path)).graph.initializer[0].raw_data == second.raw_data
    loaded = graphopt.load(path).graph.initializers["w"].const.numpy()
    np.testing.assert_array_equal(loaded, np.arange(512, dtype=np.float32))
