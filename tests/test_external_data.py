"""External data: lazy memory-mapped loading, saving beside the output, and refusing locations outside the folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.errors import ExternalDataError, GraphoptError


def _external_model(folder: Path, arrays: dict[str, np.ndarray], location: str = "weights.bin") -> Path:
    """A model computing sum over inputs + each weight, with its weights in ``folder/location``."""
    folder.mkdir(parents=True, exist_ok=True)
    inits = []
    offset = 0
    with open(folder / location, "wb") as f:
        for name, arr in arrays.items():
            data = np.ascontiguousarray(arr).tobytes()
            f.write(data)
            t = onnx.TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(arr.dtype), dims=arr.shape)
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", location), ("offset", str(offset)), ("length", str(len(data)))):
                t.external_data.add(key=k, value=v)
            inits.append(t)
            offset += len(data)
    names = list(arrays)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    nodes = [helper.make_node("Add", ["x", names[0]], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_external_tensors_are_memory_mapped_and_round_trip(tmp_path: Path) -> None:
    w = np.arange(4, dtype=np.float32)
    big = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    src = _external_model(tmp_path / "in", {"w": w, "big": big})
    model = graphopt.load(src)
    t = model.graph.initializers["big"].const
    assert t.is_external
    arr = t.numpy()
    assert not arr.flags.writeable and not arr.flags.owndata  # a view on the mapped file, not a copy
    np.testing.assert_array_equal(arr, big)

    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    graphopt.save(model, out)  # loaded with external data -> saved with external data by default
    assert (out.parent / "m.onnx.data").exists()
    saved = onnx.load(str(out), load_external_data=False)
    assert saved.graph.initializer[1].data_location == TensorProto.EXTERNAL
    onnx.load_external_data_for_model(saved, str(out.parent))
    np.testing.assert_array_equal(numpy_helper.to_array(saved.graph.initializer[1]), big)
    feeds = {"x": np.ones(4, np.float32)}
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_array_equal(got, w + 1)


def test_save_inline_and_back(tmp_path: Path) -> None:
    src = _external_model(tmp_path / "in", {"w": np.arange(4, dtype=np.float32)})
    model = graphopt.load(src)
    out = tmp_path / "inline.onnx"
    graphopt.save(model, out, external_data=False)
    saved = onnx.load(str(out), load_external_data=False)
    assert saved.graph.initializer[0].data_location == TensorProto.DEFAULT
    np.testing.assert_array_equal(numpy_helper.to_array(saved.graph.initializer[0]), np.arange(4, dtype=np.float32))
    proto = graphopt.to_proto(model)  # to_onnx inlines external data: a self-contained proto
    assert proto.graph.initializer[0].HasField("raw_data")


def test_in_place_save_keeps_reading_old_data(tmp_path: Path) -> None:
    """Saving over the file the model was mapped from must not corrupt tensors still in memory."""
    w = np.arange(4, dtype=np.float32)
    src = _external_model(tmp_path, {"w": w}, location="model.onnx.data")
    model = graphopt.load(src)
    graphopt.save(model, src)
    graphopt.save(model, src)
    np.testing.assert_array_equal(model.graph.initializers["w"].const.numpy(), w)
    out = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"x": np.zeros(4, np.float32)})
    np.testing.assert_array_equal(out[0], w)


@pytest.mark.parametrize(
    "location",
    ["../outside.bin", "/etc/hostname", "sub/../../outside.bin"],
)
def test_location_escaping_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\0" * 16)
    folder = tmp_path / "model"
    path = _external_model(folder, {"w": np.zeros(4, np.float32)})
    proto = onnx.load(str(path), load_external_data=False)
    proto.graph.initializer[0].external_data[0].value = location
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ExternalDataError, match="outside|absolute|leaves"):
        graphopt.load(path)


def test_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(4, np.float32).tobytes())
    folder = tmp_path / "model"
    path = _external_model(folder, {"w": np.zeros(4, np.float32)})
    os.remove(folder / "weights.bin")
    os.symlink(secret, folder / "weights.bin")
    with pytest.raises(ExternalDataError, match="outside the model folder"):
        graphopt.load(path)


def test_out_of_range_and_missing_data(tmp_path: Path) -> None:
    path = _external_model(tmp_path, {"w": np.zeros(4, np.float32)})
    proto = onnx.load(str(path), load_external_data=False)
    proto.graph.initializer[0].external_data[1].value = "8"  # offset 8 + 16 bytes > 16-byte file
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ExternalDataError, match="outside"):
        graphopt.load(path)
    os.remove(tmp_path / "weights.bin")
    with pytest.raises(ExternalDataError, match="does not exist"):
        graphopt.load(path)


def test_save_refuses_location_outside_output_folder(tmp_path: Path) -> None:
    model = graphopt.load(_external_model(tmp_path / "in", {"w": np.zeros(4, np.float32)}))
    with pytest.raises(ExternalDataError):
        graphopt.save(model, tmp_path / "o.onnx", external_data=True, location="../x.data")
    assert not (tmp_path / "o.onnx").exists()


def test_unwritable_folder_leaves_nothing(tmp_path: Path) -> None:
    model = graphopt.load(_external_model(tmp_path / "in", {"w": np.zeros(4, np.float32)}))
    with pytest.raises(GraphoptError, match="does not exist"):
        graphopt.save(model, tmp_path / "missing" / "o.onnx")


@pytest.mark.slow
def test_model_over_2gb_round_trips_bytes_exactly(tmp_path: Path) -> None:
    """A >2 GB model (external data) is loaded lazily and saved with every tensor's bytes unchanged."""
    n = 300 * 1024 * 1024 // 4  # 300 MB per tensor, 7 tensors = 2.1 GB
    arrays = {}
    for i in range(7):
        a = np.empty(n, dtype=np.float32)
        a[:] = np.float32(i)
        a[:: 1 << 16] = np.arange(a[:: 1 << 16].size, dtype=np.float32) * (i + 1)  # not constant: catches mixups
        arrays[f"w{i}"] = a
    src = _external_model(tmp_path / "in", {"head": np.zeros(4, np.float32), **arrays})
    del arrays, a
    model = graphopt.load(src)
    total = sum(v.const.nbytes for v in model.graph.initializers.values())
    assert total > 2**31
    with pytest.raises(GraphoptError, match="over 2 GB"):
        graphopt.save(model, tmp_path / "inline.onnx", external_data=False)
    assert not (tmp_path / "inline.onnx").exists()
    out = tmp_path / "out" / "big.onnx"
    out.parent.mkdir()
    graphopt.save(model, out)
    again = graphopt.load(out)
    for name, v in model.graph.initializers.items():
        a, b = v.const.numpy(), again.graph.initializers[name].const.numpy()
        assert a.shape == b.shape and a.dtype == b.dtype
        assert (
            a.tobytes() == b.tobytes() if a.nbytes < 1 << 20 else np.array_equal(a.view(np.uint32), b.view(np.uint32))
        )


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_saved_files_get_ordinary_permissions(tmp_path: Path) -> None:
    """The temporary file that becomes the output is private while written; the result follows the umask like any
    file a tool writes (onnx.save's would), for the model and its external data."""
    src = _external_model(tmp_path / "in", {"w": np.arange(2048, dtype=np.float32)})
    out = tmp_path / "out.onnx"
    old = os.umask(0o027)
    try:
        graphopt.save(graphopt.load(src), out, external_data=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "out.onnx.data").stat().st_mode) == 0o640
