"""Hardening of int8 quantization, calibration data, bench and the CLI (issue 14) and old-opset quantization
(issue 16): every bad input is one line and exit code 2, every accepted input gives a model onnxruntime runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.quantize import output_error, quantize_model, sqnr_db
from graphopt.tools import runtime


def _conv_model(opset: int, depthwise: bool, seed: int = 0, spread: float = 1.0) -> onnx.ModelProto:
    """Two 3x3 Conv + bias + Relu layers at ``opset``; ``spread`` scales the second layer's weight channels apart
    (and a constant Mul scales its output channels back)."""
    rng = np.random.default_rng(seed)
    c = 16
    g = c if depthwise else 1
    w2 = rng.standard_normal((c, c // g, 3, 3)) / 3
    w2 = w2 * np.geomspace(1.0, spread, c).reshape(c, 1, 1, 1)
    inits = [
        numpy_helper.from_array((rng.standard_normal((c, 3, 3, 3)) / 5).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.standard_normal(c) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array(w2.astype(np.float32), "w2"),
        numpy_helper.from_array((rng.standard_normal(c) * 0.1).astype(np.float32), "b2"),
        numpy_helper.from_array((1.0 / np.geomspace(1.0, spread, c)).reshape(c, 1, 1).astype(np.float32), "unspread"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4, group=g, name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Mul", ["r2", "unspread"], ["y"], name="unspread"),  # every channel counts alike in y
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def _feeds(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _quantize(proto: onnx.ModelProto, target: str, **config):
    model = from_proto(proto)
    report = quantize_model(model, _feeds(4, 1), target, {"cache": False, "measure_speed": False, **config})
    return model.to_onnx(), report


def _held_out_sqnr(a: onnx.ModelProto, b: onnx.ModelProto) -> float:
    """SQNR of ``b`` against ``a`` under onnxruntime on inputs calibration never saw."""
    feeds = _feeds(3, 99)
    sa, sb = runtime.session(a), runtime.session(b)
    rel, _ = output_error([sa.run(None, f) for f in feeds], [sb.run(None, f) for f in feeds])
    return sqnr_db(rel)


# --------------------------------------------------------------------------------------------------------------------
# issue 16: opset < 13 with a bias (the per-tensor path crashed), opset upgrade, the SQNR floor
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["ort", "tensorrt"])
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
@pytest.mark.parametrize("opset", [10, 11, 12, 13])
def test_old_opset_conv_with_bias_quantizes_runs_and_stays_close(opset, depthwise, target) -> None:
    proto = _conv_model(opset, depthwise)
    quantized, report = _quantize(proto, target)
    assert report.opset_upgraded == ((opset, 13) if opset < 13 else None)
    assert report.per_channel
    assert {x.name for x in report.layers} == {"conv1", "conv2"}
    assert _held_out_sqnr(proto, quantized) > 25.0
    assert not report.warnings


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
@pytest.mark.parametrize("opset", [10, 11, 12])
def test_old_opset_kept_takes_the_per_tensor_path_with_an_int32_bias_that_agrees(opset, depthwise, target) -> None:
    if opset == 10 and target == "tensorrt":
        pytest.skip("onnxruntime's own bias quantization inserts Round, which opset 10 lacks")
    proto = _conv_model(opset, depthwise)
    quantized, report = _quantize(proto, target, upgrade_opset=False)
    assert report.opset_upgraded is None and not report.per_channel
    assert quantized.opset_import[0].version == opset
    assert any("one scale per tensor" in w for w in report.warnings)
    for n in quantized.graph.node:
        assert "axis" not in {a.name for a in n.attribute} or n.op_type not in ("QuantizeLinear", "DequantizeLinear")
    if target == "ort":  # the bias is int32 with the scale input scale x the one weight scale
        inits = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
        biases = [k for k, v in inits.items() if v.dtype == np.int32 and k.endswith("_quantized")]
        assert len(biases) == 2 and all(inits[k.replace("_quantized", "_scale")].ndim == 0 for k in biases)
    assert _held_out_sqnr(proto, quantized) > 20.0


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
def test_output_sqnr_below_the_floor_warns_and_names_the_worst_layer(target) -> None:
    # channels 4 decades apart share one activation scale: the small ones round to zero, and the output's constant
    # Mul makes them count as much as the large ones
    proto = _conv_model(12, True, spread=1e4)
    quantized, report = _quantize(proto, target, upgrade_opset=False, method="minmax", fallback=False)
    assert report.sqnr_db < 10.0
    low = [w for w in report.warnings if "below 10 dB" in w]
    assert len(low) == 1 and "conv2" in low[0]
    assert low[0].index("conv2") < low[0].index("conv1")  # worst first


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
def test_by_default_an_unusable_int8_model_keeps_its_most_sensitive_layers_float(target) -> None:
    proto = _conv_model(12, True, spread=1e4)
    quantized, report = _quantize(proto, target, upgrade_opset=False, method="minmax")
    assert report.sqnr_db >= 10.0 and report.kept_float and report.layers
    said = [w for w in report.warnings if "all-int8 model's output SQNR" in w]
    assert len(said) == 1 and "demoted" in said[0] and f"{report.kept_float[0]} (float)" in said[0]
    assert _held_out_sqnr(proto, quantized) > 10.0


# --------------------------------------------------------------------------------------------------------------------
# the CLI: calibration data, onnxruntime's run-time rejections, the calibration cache, odd graphs, bench, pipes
# --------------------------------------------------------------------------------------------------------------------
def _main(capsys, *argv: str) -> tuple[int, str, str]:
    from graphopt.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _subprocess(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "graphopt", *argv], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def _one_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def conv_file(tmp_path: Path) -> Path:
    path = tmp_path / "conv.onnx"
    onnx.save(_conv_model(13, False), path)
    return path


def _npy_header_only(shape: tuple[int, ...]) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + b"\0" * 64


def _write_bad(folder: Path, kind: str) -> Path:
    import zipfile

    folder.mkdir()
    path = folder / "batch0.npz"
    good = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    if kind == "huge-header":  # 10^12 elements declared, 64 bytes stored
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", _npy_header_only((1, 3, 10**6, 333334)))
    elif kind == "huge-symbolic":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", _npy_header_only((10**8, 3, 8, 8)))
    elif kind == "truncated":
        np.savez(path, x=good)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "bad-crc":
        np.savez(path, x=good)
        data = bytearray(path.read_bytes())
        data[200] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy-renamed":
        np.save(folder / "a.npy", good)
        (folder / "a.npy").rename(path)
    elif kind == "pickle":
        np.savez(path, x=np.array([{"a": 1}], dtype=object))
    elif kind == "not-npy-member":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.txt", "hello")
    elif kind in ("nan", "inf"):
        good[0, 1, 2, 3] = np.nan if kind == "nan" else -np.inf
        np.savez(path, x=good)
    else:
        raise AssertionError(kind)
    return path


BAD_DATA = {
    "huge-header": "the model expects 1x3x8x8",
    "huge-symbolic": "GiB limit",
    "truncated": "not a .npz file",
    "bad-crc": "Bad CRC-32",
    "empty": "not a .npz file",
    "npy-renamed": "not a .npz file",
    "pickle": "Python objects",
    "not-npy-member": "not a .npy array",
    "nan": "contains NaN",
    "inf": "contains Inf",
}


@pytest.mark.parametrize("kind", list(BAD_DATA))
def test_cli_bad_calibration_file_is_one_line_naming_it(tmp_path, capsys, conv_file, kind) -> None:
    model = conv_file
    if kind == "huge-symbolic":  # a symbolic batch: only the byte bound stops it
        proto = _conv_model(13, False)
        proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
        model = tmp_path / "dyn.onnx"
        onnx.save(proto, model)
    bad = _write_bad(tmp_path / "calib", kind)
    out = tmp_path / "q.onnx"
    code, _, err = _main(
        capsys, "optimize", str(model), "-o", str(out), "--quantize", "int8", "--calib-data", str(bad.parent),
        "--calib-cache", "off",
    )  # fmt: skip
    assert code == 2
    _one_error_line(err, str(bad), BAD_DATA[kind])
    assert not out.exists()


def test_api_refuses_calibration_data_with_nan() -> None:
    from graphopt.errors import GraphoptError

    feeds = _feeds(2, 0)
    feeds[1]["x"][0, 0, 0, 0] = np.nan
    with pytest.raises(GraphoptError, match="calibration sample #1: input 'x' contains NaN"):
        quantize_model(from_proto(_conv_model(13, False)), feeds, "ort", {"cache": False})


def _gather_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["emb", "ids"], ["e"]),
            helper.make_node("MatMul", ["e", "w"], ["h"]),
            helper.make_node("Add", ["h", "other"], ["y"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", 4]),
            helper.make_tensor_value_info("other", TensorProto.FLOAT, ["b2", 4, 8]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4, 8])],
        [
            numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "emb"),
            numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "ids, other, needle",
    [
        ([[1, 2, 3, 50]], (1, 4, 8), "idx=50"),  # past the 10-row vocabulary
        ([[1, 2, 3, 4], [0, 0, 0, 0]], (3, 4, 8), "broadcast"),  # batch 2 against batch 3
    ],
    ids=["vocabulary", "batch"],
)
def test_cli_calibration_feed_onnxruntime_rejects_is_one_line_with_its_reason(tmp_path, capsys, ids, other, needle):
    model = _gather_model(tmp_path / "gather.onnx")
    (tmp_path / "calib").mkdir()
    data = tmp_path / "calib" / "b0.npz"
    rng = np.random.default_rng(0)
    np.savez(data, ids=np.array(ids, np.int64), other=rng.standard_normal(other).astype(np.float32))
    out = tmp_path / "q.onnx"
    argv = ["optimize", str(model), "-o", str(out), "--quantize", "int8", "--calib-data", str(data.parent)]
    argv += ["--calib-cache", "off"]
    if needle == "idx=50":  # a subprocess: onnxruntime's own [E:onnxruntime...] lines would go to the real stderr
        r = _subprocess(*argv)
        code, err = r.returncode, r.stderr
    else:
        code, _, err = _main(capsys, *argv)
    assert code == 2
    _one_error_line(err, str(data), "onnxruntime rejects", needle)
    assert not out.exists()


CACHE_DAMAGE = {
    "list": lambda p: p.write_text("[]"),
    "null": lambda p: p.write_text("null"),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:200]),
    "empty": lambda p: p.write_bytes(b""),
    "key-int": lambda p: _edit_cache(p, key=np.array(5)),
    "names-int": lambda p: _edit_cache(p, names=np.arange(3)),
    "min-strings": lambda p: _edit_cache(p, min=np.array(["a"] * 4)),
    "short-arrays": lambda p: _edit_cache(p, max=np.array([0.0])),
    "hist-shape": lambda p: _edit_cache(p, hist=np.zeros((4, 7), np.int64)),
    "negative-counts": lambda p: _edit_cache(p, hist=-np.ones((4, 2048), np.int64)),
}


def _edit_cache(path: Path, **arrays: np.ndarray) -> None:
    with np.load(path) as data:
        fields = {k: data[k] for k in data.files}
    fields.update(arrays)
    with open(path, "wb") as f:
        np.savez(f, **fields)


@pytest.mark.parametrize("damage", list(CACHE_DAMAGE))
def test_cli_damaged_calibration_cache_is_a_warned_miss_and_is_rewritten(
    tmp_path, capsys, monkeypatch, conv_file, damage
) -> None:
    import json

    from graphopt.quantize import driver

    monkeypatch.setattr(driver, "SLOW_SPEEDUP", 0.0)  # no timing-dependent speed warning: the cache's is the only one

    (tmp_path / "calib").mkdir()
    for i, feed in enumerate(_feeds(2, 3)):
        np.savez(tmp_path / "calib" / f"{i}.npz", **feed)
    cache = tmp_path / "calib.cache.npz"
    argv = ["optimize", str(conv_file), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8", "--json"]
    argv += ["--calib-data", str(tmp_path / "calib"), "--calib-cache", str(cache)]
    code, out, err = _main(capsys, *argv)
    assert code == 0 and not err and cache.is_file()
    good = json.loads(out)["quantization"]
    CACHE_DAMAGE[damage](cache)
    code, out, err = _main(capsys, *argv)
    assert code == 0, err
    warned = [line for line in err.splitlines() if "warning" in line]
    assert len(warned) == 1 and str(cache) in warned[0] and "rewriting" in warned[0], err
    again = json.loads(out)["quantization"]
    assert not again["calibration_cached"] and again["output_error_rel"] == good["output_error_rel"]
    code, out, err = _main(capsys, *argv)  # the rewritten cache is a hit
    assert code == 0 and not err and json.loads(out)["quantization"]["calibration_cached"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _odd_model(kind: str) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1] * 4)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])
    any_y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list("abcd"))
    if kind == "input-is-output":
        graph = helper.make_graph([conv], "g", [x], [x, y], [w, b])
    elif kind == "zero-batch":
        x0 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [0, 3, 8, 8])
        graph = helper.make_graph([conv], "g", [x0], [any_y], [w, b])
    elif kind == "zero-height":
        x0 = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 0, 8])
        graph = helper.make_graph([conv], "g", [x0], [any_y], [w, b])
    elif kind == "no-outputs":
        graph = helper.make_graph([conv], "g", [x], [], [w, b])
    else:
        raise AssertionError(kind)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("target", ["ort", "tensorrt"])
@pytest.mark.parametrize(
    "kind, error",
    [
        ("input-is-output", None),
        ("zero-batch", "nothing to quantize"),
        ("zero-height", "onnxruntime rejects"),
        ("no-outputs", "no outputs"),
    ],
)
def test_cli_quantize_odd_graphs_give_a_correct_model_or_one_line(tmp_path, capsys, kind, error, target) -> None:
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    proto = _odd_model(kind)
    onnx.save(proto, src)
    argv = ["optimize", str(src), "-o", str(out), "--quantize", "int8", "--calib-random", "2", "--target", target]
    argv += ["--calib-cache", "off", "-q"]
    if kind == "no-outputs":  # a subprocess: onnxruntime's own log lines would go to the real stderr
        r = _subprocess(*argv)
        code, err = r.returncode, r.stderr
    else:
        code, _, err = _main(capsys, *argv)
    if error is not None:
        assert code == 2
        _one_error_line(err.replace("graphopt: warning: calibrating on random data", "").strip(), error)
        assert not out.exists()
        return
    assert code == 0, err
    q = onnx.load(out)
    assert [i.name for i in q.graph.input] == ["x"] and [o.name for o in q.graph.output] == ["x", "y"]
    x = np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = runtime.session(proto).run(None, {"x": x})
    got = runtime.session(q).run(None, {"x": x})
    np.testing.assert_array_equal(got[0], x)  # the input passed through stays the exact float input
    assert sqnr_db(output_error([[want[1]]], [[got[1]]])[0]) > 20.0


def _static_model(path: Path, hw: int | str = 32) -> Path:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 4096], np.int64), "s")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1] * 4), helper.make_node("Reshape", ["c", "s"], ["y"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "shape, needle",
    [
        ("input=1x3x64x64", "conflicts with the model's declared shape of 'input': Nx3x32x32"),
        ("input=1x3x32", "conflicts with the model's declared shape of 'input': Nx3x32x32"),
    ],
)
def test_bench_shape_that_conflicts_with_the_model_is_one_line(tmp_path, capsys, shape, needle) -> None:
    model = _static_model(tmp_path / "m.onnx")
    code, _, err = _main(capsys, "bench", str(model), "--shape", shape, "--runs", "1", "--warmup", "0", "-q")
    assert code == 2
    _one_error_line(err, needle)
    code, _, err = _main(capsys, "bench", str(model), "--shape", "input=2x3x32x32", "--runs", "1", "-q")
    assert code == 0, err


def test_bench_inputs_onnxruntime_rejects_at_run_time_are_one_line(tmp_path) -> None:
    model = _static_model(tmp_path / "m.onnx", hw="H")  # the Reshape to (-1, 4096) needs H = 32k
    r = _subprocess("bench", str(model), "--shape", "input=1x3x16x16", "--runs", "1", "--warmup", "0", "-q")
    assert r.returncode == 2
    _one_error_line(r.stderr, str(model), "input=1x3x16x16", "Reshape")


def test_a_model_onnxruntime_cannot_load_is_one_line_without_its_log(tmp_path) -> None:
    # initializers and no nodes: onnxruntime's session init fails and its default logger prints [E:onnxruntime...]
    graph = helper.make_graph(
        [], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])], [],
        [numpy_helper.from_array(np.ones(3, np.float32), "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    r = _subprocess("bench", str(tmp_path / "m.onnx"), "--runs", "1")
    assert r.returncode == 2
    _one_error_line(r.stderr, "m.onnx: onnxruntime cannot load it", "OrtValue indexes")
    assert "/onnxruntime_src/" not in r.stderr  # the C++ file and signature are cut from the reason


@pytest.mark.parametrize(
    "argv",
    [
        ("optimize", "{model}", "-o", "{out}", "--json"),
        ("inspect", "{model}"),
        ("passes", "--json"),
    ],
    ids=["optimize-json", "inspect-table", "passes-json"],
)
def test_closed_stdout_exits_quietly_with_141(tmp_path, conv_file, argv) -> None:
    args = [a.format(model=conv_file, out=tmp_path / "o.onnx") for a in argv]
    p = subprocess.Popen(
        [sys.executable, "-m", "graphopt", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    p.stdout.close()  # the reader is gone before graphopt writes: `graphopt ... | head -c 0`
    err = p.stderr.read()
    assert p.wait(timeout=120) == 141
    assert err == ""


@pytest.mark.parametrize("kind", ["zero-batch", "zero-height"])
def test_calibration_cache_key_of_a_zero_sized_feed_is_no_traceback(tmp_path, capsys, kind) -> None:
    # the cache key hashes every feed: a 0-sized array once failed in memoryview.cast (found by the fuzz campaign)
    src = tmp_path / "m.onnx"
    onnx.save(_odd_model(kind), src)
    argv = ["optimize", str(src), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8", "--calib-random", "2", "-q"]
    code, _, err = _main(capsys, *argv, "--calib-cache", str(tmp_path / "calib.cache"))
    assert code == 2
    _one_error_line(err.replace("graphopt: warning: calibrating on random data", "").strip(), "")


def test_random_calibration_input_of_a_huge_declared_dim_is_one_line(tmp_path, capsys) -> None:
    # a declared dim of 2**31 - 1 once went to numpy as a 1.5 TiB allocation (found by the fuzz campaign)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2147483647, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2147483647, 32])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    src = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), src)
    argv = ["optimize", str(src), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8", "--calib-random", "2", "-q"]
    code, _, err = _main(capsys, *argv, "--calib-cache", "off")
    assert code == 2
    _one_error_line(err, "GiB")
