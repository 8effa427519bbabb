"""Bigger than memory: large tensors that passes make go to the run's spill file at once and are read through a
read-only map; mapped data that passes read is dropped from the resident set; save copies mapped data file to file.

The peak-RSS checks run in a subprocess (``/proc/self/clear_refs`` resets the high-water mark after the warm-up, then
``VmHWM`` is the peak of the measured part) and compare against the same run with spilling off, so they would fail if
the mechanism stopped streaming. Models are tens of MB.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import graphopt
from graphopt.core import tensors
from graphopt.core.tensors import Tensor
from tests.conftest import ort_run

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bigmodel_bench", ROOT / "benchmarks" / "bigmodel.py")
assert _spec is not None and _spec.loader is not None
bigmodel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bigmodel)

LINUX = sys.platform.startswith("linux")


@pytest.fixture
def spill_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tensors, "SPILL_BYTES", 64 << 10)


def _run(script: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )


# --------------------------------------------------------------------------------------------------------------------
# the spilled tensor
# --------------------------------------------------------------------------------------------------------------------
def _cases() -> list[tuple[str, np.ndarray, int | None, np.ndarray]]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 384)).astype(np.float32)
    cube = rng.standard_normal((32, 48, 40)).astype(np.float32)
    return [
        ("C-contiguous", w, None, w),
        ("transposed view", w.T, None, np.ascontiguousarray(w.T)),
        ("permuted 3-D view", cube.transpose(2, 0, 1), None, np.ascontiguousarray(cube.transpose(2, 0, 1))),
        ("strided 1-D", w.reshape(-1)[::3], None, w.reshape(-1)[::3].copy()),
        ("float64 to float32", w.astype(np.float64), onnx.TensorProto.FLOAT, w),
        ("int64", (w * 100).astype(np.int64), None, (w * 100).astype(np.int64)),
        ("bool", w > 0, None, w > 0),
        ("float16 transposed", w.astype(np.float16).T, None, np.ascontiguousarray(w.astype(np.float16).T)),
        ("bfloat16", w.astype(ml_dtypes.bfloat16), None, w.astype(ml_dtypes.bfloat16)),
        ("uint8 packed", rng.integers(0, 255, (512, 300), dtype=np.uint8), None, None),  # int4 blocks in MatMulNBits
    ]


@pytest.mark.parametrize("copy", [True, False])
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_a_large_tensor_is_spilled_and_reads_back_exactly(spill_small: None, case: tuple, copy: bool) -> None:
    _, array, dtype, expected = case
    if expected is None:
        expected = array.copy()
    plain = Tensor(onnx.helper.np_dtype_to_tensor_dtype(expected.dtype), expected.shape, array=expected)
    t = Tensor.from_numpy(array, dtype, copy=copy)
    assert t.is_spilled and not t.is_external, t
    got = t.numpy()
    assert got.dtype == expected.dtype and got.shape == expected.shape and got.flags.c_contiguous
    assert not got.flags.writeable
    np.testing.assert_array_equal(got, expected)
    assert bytes(t.raw_bytes()) == expected.tobytes()
    assert t.digest() == plain.digest()  # CSE sees the same constant whether it was spilled or not
    assert t.to_proto("n") == plain.to_proto("n")


def test_small_string_and_packed_4bit_tensors_stay_in_memory(spill_small: None) -> None:
    assert not Tensor.from_numpy(np.zeros(1000, np.float32)).is_spilled  # 4 KB
    big_int4 = np.zeros(200_000, np.int8)
    assert not Tensor.from_numpy(big_int4, onnx.TensorProto.INT4).is_spilled
    strings = np.array(["x" * 100] * 2000, dtype=object)
    assert not Tensor.from_numpy(strings, onnx.TensorProto.STRING).is_spilled


def test_spilling_off_keeps_arrays_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tensors, "SPILL_BYTES", 0)
    t = Tensor.from_numpy(np.ones((512, 512), np.float32).T)
    assert not t.is_spilled and t.numpy().flags.c_contiguous


def test_a_spill_file_that_cannot_be_written_leaves_tensors_in_memory(
    spill_small: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(*args: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tensors, "_pwrite_all", full)
    monkeypatch.setattr(tensors, "_spill_failed", False)
    w = np.arange(100_000, dtype=np.float32).reshape(200, 500)
    with caplog.at_level("WARNING", logger="graphopt"):
        a = Tensor.from_numpy(w.T)
        b = Tensor.from_numpy(w + 1)
    assert not a.is_spilled and not b.is_spilled
    np.testing.assert_array_equal(a.numpy(), w.T)
    np.testing.assert_array_equal(b.numpy(), w + 1)
    warnings = [r.getMessage() for r in caplog.records if "spill file" in r.getMessage()]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], warnings


@pytest.mark.skipif(not LINUX, reason="hole punching and /proc are Linux's")
def test_the_range_of_a_dropped_spilled_tensor_is_given_back(spill_small: None) -> None:
    import gc

    t = Tensor.from_numpy(np.ones((1024, 1024), np.float32))  # 4 MB
    spill = tensors.spill_file()
    assert spill is not None

    def allocated() -> int:
        return os.fstat(spill.fd).st_blocks * 512

    before = allocated()
    assert before >= 4 << 20
    view = t.numpy()
    del t
    gc.collect()
    assert allocated() == before  # an array still views the data: the range stays
    assert float(view.sum()) == 1024 * 1024
    del view
    gc.collect()
    assert allocated() <= before - (4 << 20)


# --------------------------------------------------------------------------------------------------------------------
# whole runs: identical output, nothing left behind
# --------------------------------------------------------------------------------------------------------------------
def test_streamed_and_in_memory_runs_save_byte_identical_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in" / "m.onnx"
    bigmodel.generate(src, dim=256, layers=6, transposed=3)  # 6 weights of 256 KB, 3 read through a Transpose
    x = np.random.default_rng(3).standard_normal((2, 256)).astype(np.float32)
    files: dict[tuple[int, bool], dict[str, bytes]] = {}
    for threshold in (0, 64 << 10):
        monkeypatch.setattr(tensors, "SPILL_BYTES", threshold)
        model = graphopt.optimize(src)
        folded = [v.const for name, v in model.graph.initializers.items() if name.endswith("_folded")]
        assert len(folded) == 3 and all(t.is_spilled == bool(threshold) for t in folded)
        for external in (False, True):
            out = tmp_path / f"o{threshold}{external}" / "m.onnx"
            out.parent.mkdir()
            graphopt.save(model, out, external_data=external)
            files[threshold, external] = {p.name: p.read_bytes() for p in out.parent.iterdir()}
            np.testing.assert_allclose(
                ort_run(onnx.load(out), {"x": x})[0], ort_run(onnx.load(src), {"x": x})[0], rtol=1e-4, atol=1e-5
            )
    for external in (False, True):
        assert files[0, external] == files[64 << 10, external]
    weights = {t.name: numpy_helper.to_array(t, str(src.parent)) for t in onnx.load(src).graph.initializer}
    saved = onnx.load(tmp_path / f"o{64 << 10}True" / "m.onnx")
    for t in saved.graph.initializer:
        arr = numpy_helper.to_array(t, str(tmp_path / f"o{64 << 10}True"))
        base = t.name.removesuffix("_t_folded")
        np.testing.assert_array_equal(arr, weights[base].T if t.name.endswith("_folded") else weights[base])


@pytest.mark.skipif(not LINUX, reason="hole punching is Linux's")
def test_saving_moves_spilled_tensors_into_the_output_data_file(tmp_path: Path, spill_small: None) -> None:
    """A save with external data copies each spilled tensor into the output's data file and from then on reads it
    there: its spill range is given back. Saving again (over the same output, or elsewhere) still writes the same
    bytes, also after the first output is deleted."""
    import gc

    src = tmp_path / "in" / "m.onnx"
    bigmodel.generate(src, dim=256, layers=4, transposed=4)
    model = graphopt.optimize(src)
    consts = [v.const for v in model.graph.initializers.values()]
    assert len(consts) == 4 and all(t.is_spilled for t in consts)
    expected = [t.numpy().copy() for t in consts]
    gc.collect()
    spill = tensors.spill_file()
    assert spill is not None
    held = os.fstat(spill.fd).st_blocks * 512
    first = tmp_path / "a" / "m.onnx"
    first.parent.mkdir()
    graphopt.save(model, first, external_data=True)
    gc.collect()
    assert not any(t.is_spilled for t in consts)
    assert os.fstat(spill.fd).st_blocks * 512 <= held - 4 * 256 * 256 * 4
    for t, want in zip(consts, expected, strict=True):
        np.testing.assert_array_equal(t.numpy(), want)
    graphopt.save(model, first, external_data=True)  # over the file the tensors now read
    again = tmp_path / "b" / "m.onnx"
    again.parent.mkdir()
    (first.parent / "m.onnx.data").unlink()
    graphopt.save(model, again, external_data=True)
    for t, want in zip(consts, expected, strict=True):
        np.testing.assert_array_equal(t.numpy(), want)
    saved = onnx.load(again)
    for t, want in zip(saved.graph.initializer, expected, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(t, str(again.parent)), want)


_SPILL_AND_WAIT = """
import os, sys, time
import numpy as np
from graphopt.core.tensors import Tensor, spill_file
kept = [Tensor.from_numpy(np.full((512, 512), i, np.float32).T) for i in range(4)]
assert all(t.is_spilled for t in kept)
folder = os.environ["TMPDIR"]
assert os.listdir(folder) == [], os.listdir(folder)  # the spill file has no name, even while in use
link = os.readlink(f"/proc/self/fd/{spill_file().fd}")
assert link.startswith(folder) and link.endswith("(deleted)"), link
print("ready", flush=True)
mode = sys.argv[1]
if mode == "fail":
    raise RuntimeError("a pass failed")
if mode == "wait":
    time.sleep(60)
"""


@pytest.mark.skipif(not LINUX, reason="/proc/self/fd and O_TMPFILE are Linux's")
@pytest.mark.parametrize("mode", ["ok", "fail", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_no_spill_file_is_left_behind(tmp_path: Path, mode: str) -> None:
    if mode == "SIGHUP" and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        pytest.skip("SIGHUP is ignored here (run under nohup): the child inherits that")
    folder = tmp_path / "spill"
    folder.mkdir()
    env = {**os.environ, "TMPDIR": str(folder), "GRAPHOPT_SPILL_BYTES": "65536"}
    arg = mode if mode in ("ok", "fail") else "wait"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SPILL_AND_WAIT, arg],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.communicate()[1]
    if arg == "wait":
        proc.send_signal(getattr(signal, mode))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == {"ok": 0, "fail": 1}.get(mode, -getattr(signal, mode, 0)), err
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(not LINUX, reason="O_TMPFILE is Linux's")
def test_the_cli_streams_folded_weights_and_leaves_no_spill_file(tmp_path: Path) -> None:
    src = tmp_path / "in" / "m.onnx"
    bigmodel.generate(src, dim=256, layers=4, transposed=2)
    folder = tmp_path / "spill"
    folder.mkdir()
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    env = {**os.environ, "TMPDIR": str(folder), "GRAPHOPT_SPILL_BYTES": "65536"}
    cmd = [sys.executable, "-m", "graphopt", "optimize", str(src), "-o", str(out), "-q"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert list(folder.iterdir()) == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx", "m.onnx.data"]
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    np.testing.assert_allclose(
        ort_run(onnx.load(out), {"x": x})[0], ort_run(onnx.load(src), {"x": x})[0], rtol=1e-4, atol=1e-5
    )


# --------------------------------------------------------------------------------------------------------------------
# peak resident memory
# --------------------------------------------------------------------------------------------------------------------
_PEAK = """
import json, re, sys
from pathlib import Path
import numpy as np
import graphopt
from graphopt.core import tensors

def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024

def reset():
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from the current RSS

def requantize(model, count=None):  # what a weight-only quantizer does: read a weight, make its replacement, drop it
    graph = model.graph
    for name, v in list(graph.initializers.items())[:count]:
        w = v.const.numpy()
        q = (np.rint(w * 64) / 64).astype(np.float32)  # a new array as large as the weight
        const = graph.make_constant(tensors.Tensor.from_numpy(q, copy=False), name=name + "_q")
        graph.replace_all_uses_with(v, const)
        del w, q

src, out, mode = sys.argv[1:4]
warm = graphopt.load(src)  # imports and first-use costs, outside the measured part
requantize(warm, 1) if mode == "quantize" else graphopt.optimize(warm, passes="fold-constants")
graphopt.save(warm, out + ".warm.onnx")
del warm
reset()
base = hwm()
if mode == "quantize":
    model = graphopt.load(src)
    requantize(model)
else:
    model = graphopt.optimize(src, level=2)  # from the path: a Model passed in would be snapshotted for undo
consts = [v.const for v in model.graph.initializers.values()]
spilled = sum(t.is_spilled for t in consts)
graphopt.save(model, out)
moved = sum(isinstance(t._external.file, tensors.MappedRange) and not t.is_spilled for t in consts if t._external)
print(json.dumps({"growth": hwm() - base, "spilled": spilled, "moved": moved}))
"""


def _peak(src: Path, out: Path, mode: str, spill_bytes: int, resident_bytes: int = 4 << 20) -> dict[str, int]:
    env = {"GRAPHOPT_SPILL_BYTES": str(spill_bytes), "GRAPHOPT_RESIDENT_BYTES": str(resident_bytes)}
    done = _run(_PEAK.replace("sys.argv[1:4]", repr([str(src), str(out), mode])), env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not LINUX, reason="VmHWM and clear_refs are Linux's")
def test_peak_rss_stays_bounded_when_many_large_tensors_are_made_one_at_a_time(tmp_path: Path) -> None:
    """The int4 quantizer's pattern (read a weight, make its replacement with ``from_numpy(..., copy=False)``, keep
    no float copy): 40 weights of 1 MB replaced one by one and saved keep the peak near one weight's worth; with
    spilling off the new weights accumulate."""
    src = tmp_path / "in" / "m.onnx"
    bigmodel.generate(src, dim=512, layers=40, transposed=0)  # 40 MB
    streamed = _peak(src, tmp_path / "a.onnx", "quantize", 256 << 10)
    in_memory = _peak(src, tmp_path / "b.onnx", "quantize", 0)
    assert streamed["spilled"] == 40 and in_memory["spilled"] == 0
    assert streamed["moved"] == 40  # saved with external data: they now read the output's data file
    assert in_memory["growth"] > 36 << 20, in_memory  # the 40 MB of new arrays
    assert streamed["growth"] < 12 << 20, streamed
    a = onnx.load(tmp_path / "a.onnx")
    b = onnx.load(tmp_path / "b.onnx")
    for ta, tb in zip(a.graph.initializer, b.graph.initializer, strict=True):
        np.testing.assert_array_equal(
            numpy_helper.to_array(ta, str(tmp_path)), numpy_helper.to_array(tb, str(tmp_path))
        )


@pytest.mark.skipif(not LINUX, reason="VmHWM and clear_refs are Linux's")
def test_folding_transposes_of_large_weights_streams_them_block_by_block(tmp_path: Path) -> None:
    """-O2 folds Transpose(W) of twelve 4 MB weights: each goes to the spill file in blocks, its source pages are
    dropped once read, and the save copies file to file, so the peak stays a few weights above the start; in
    memory, the folded copies add up (48 MB)."""
    src = tmp_path / "in" / "m.onnx"
    bigmodel.generate(src, dim=1024, layers=12, transposed=12)  # 48 MB
    streamed = _peak(src, tmp_path / "a.onnx", "O2", 1 << 20)
    in_memory = _peak(src, tmp_path / "b.onnx", "O2", 0)
    assert streamed["spilled"] == 12 and in_memory["spilled"] == 0
    assert in_memory["growth"] > 44 << 20, in_memory
    assert streamed["growth"] < 20 << 20, streamed
    # the input had a data file, so the output has one too (--external-data auto), each naming its own
    assert (tmp_path / "a.onnx.data").read_bytes() == (tmp_path / "b.onnx.data").read_bytes()
    a = (tmp_path / "a.onnx").read_bytes()
    assert b"a.onnx.data" in a and a.replace(b"a.onnx.data", b"b.onnx.data") == (tmp_path / "b.onnx").read_bytes()


@pytest.mark.parametrize("failure", ["EXDEV", "partial"])
def test_save_falls_back_to_writing_from_the_map_where_the_kernel_cannot_copy(
    tmp_path: Path, spill_small: None, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """copy_file_range refused (another file system) or stopping half way: the rest is written from the map, with the
    same bytes."""
    import errno

    src = tmp_path / "in" / "m.onnx"
    bigmodel.generate(src, dim=256, layers=4, transposed=2)
    model = graphopt.optimize(src)
    ref = tmp_path / "ref" / "m.onnx"
    ref.parent.mkdir()
    graphopt.save(model, ref)
    real = os.copy_file_range
    calls = []

    def refusing(src_fd: int, dst_fd: int, count: int, offset_src: int | None = None, *rest: object) -> int:
        calls.append(count)
        if failure == "EXDEV" or len(calls) % 2 == 0:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(src_fd, dst_fd, count // 3, offset_src)

    monkeypatch.setattr(os, "copy_file_range", refusing)
    for external in (True, False):
        out = tmp_path / f"out{external}" / "m.onnx"
        out.parent.mkdir()
        graphopt.save(model, out, external_data=external)
        np.testing.assert_allclose(
            ort_run(onnx.load(out), {"x": np.ones((1, 256), np.float32)})[0],
            ort_run(onnx.load(ref), {"x": np.ones((1, 256), np.float32)})[0],
        )
        if external:
            assert (out.parent / "m.onnx.data").read_bytes() == (ref.parent / "m.onnx.data").read_bytes()
    assert calls
