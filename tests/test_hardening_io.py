"""Issue 14, input and output: regular files only, outputs that never replace a file the input reads, temporary files
removed on SIGTERM/SIGHUP, every external reference through one resolver (no read outside the model's folder, checked
under strace), strict external offsets and lengths, tensor data sizes, non-UTF-8 names, sparse initializers as
constants. Each case runs with the checker on and with --no-check, and ends in exit 0 with a correct model or exit 2
with one line."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.cli import main
from graphopt.errors import ExternalDataError, GraphoptError, ModelLoadError

N = 8


def _cli(*argv: str | Path, cwd: Path | None = None, timeout: float = 60) -> tuple[int, str]:
    p = subprocess.run(
        [sys.executable, "-m", "graphopt", *map(str, argv)], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
    return p.returncode, p.stderr


def _inproc(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code  # type: ignore[assignment]
    return code, capsys.readouterr().err


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _add_model(inits: list[TensorProto], n: int = N, sparse: list[onnx.SparseTensorProto] = ()) -> onnx.ModelProto:
    """y = x + the first initializer (dense or sparse)."""
    first = inits[0].name if inits else sparse[0].values.name
    g = helper.make_graph(
        [helper.make_node("Add", ["x", first], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        inits,
        sparse_initializer=list(sparse),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _externalize(t: TensorProto, folder: Path, location: str, offset: str | None = None) -> TensorProto:
    """Move ``t``'s raw_data to the end of ``folder/location`` and point ``t`` at it."""
    data = t.raw_data
    with open(folder / location, "ab") as f:
        start = f.tell()
        f.write(data)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset or str(start)), ("length", str(len(data)))):
        t.external_data.add(key=key, value=value)
    return t


def _external_model(folder: Path, name: str = "A.onnx", location: str = "A.onnx.data", n: int = N) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    w = _externalize(numpy_helper.from_array(np.arange(n, dtype=np.float32), "w"), folder, location)
    path = folder / name
    path.write_bytes(_add_model([w], n).SerializeToString())
    return path


def _run_ort(path: Path | bytes, n: int = N) -> np.ndarray:
    src = str(path) if isinstance(path, Path) else path
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.linspace(-1, 1, n, dtype=np.float32)})[0]


def _snapshot(*paths: Path) -> list[tuple[int, int, bytes]]:
    return [(os.stat(p).st_ino, os.stat(p).st_mode, p.read_bytes()) for p in paths]


# --------------------------------------------------------------------------------------------------------------------
# 1. outputs that exist and are not regular files
# --------------------------------------------------------------------------------------------------------------------
def _special(kind: str, path: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    elif kind == "chardev":  # a private /dev/null (1, 3): the real one must never be put at risk by a test
        if os.geteuid() != 0:
            pytest.skip("mknod of a character device needs root")
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    elif kind == "socket":
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()


@pytest.mark.parametrize("kind", ["fifo", "dir", "chardev", "socket"])
@pytest.mark.parametrize("which", ["model", "data"])
def test_output_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, which: str
) -> None:
    src = tmp_path / "in" / "m.onnx"
    src.parent.mkdir()
    src.write_bytes(_add_model([numpy_helper.from_array(np.ones(N, np.float32), "w")]).SerializeToString())
    out = tmp_path / "o.onnx"
    target = out if which == "model" else tmp_path / "o.onnx.data"
    _special(kind, target)
    mode = os.lstat(target).st_mode
    for extra in ([], ["--no-check"]):
        code, err = _inproc(capsys, "optimize", src, "-o", out, "--external-data", "yes", *extra)
        _one_line_error(code, err, str(target), "not a regular file")
        assert os.lstat(target).st_mode == mode  # still the FIFO / device / directory / socket
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    model = graphopt.load(src)
    with pytest.raises(GraphoptError, match="not a regular file"):
        graphopt.save(model, out, external_data=True)
    assert os.lstat(target).st_mode == mode


def test_symlink_to_a_regular_file_is_still_a_valid_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.onnx"
    src.write_bytes(_add_model([numpy_helper.from_array(np.ones(N, np.float32), "w")]).SerializeToString())
    (tmp_path / "old.onnx").write_bytes(b"old")
    os.symlink("old.onnx", tmp_path / "link.onnx")
    code, err = _inproc(capsys, "optimize", src, "-o", tmp_path / "link.onnx", "-q")
    assert code == 0, err
    np.testing.assert_array_equal(_run_ort(tmp_path / "link.onnx"), _run_ort(src))


# --------------------------------------------------------------------------------------------------------------------
# 2. outputs that are files the input reads
# --------------------------------------------------------------------------------------------------------------------
def test_output_data_file_would_be_the_input_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-o m --external-data yes on an input named m.data: the data file would replace the input."""
    src = tmp_path / "m.data"
    src.write_bytes(_add_model([numpy_helper.from_array(np.ones(N, np.float32), "w")]).SerializeToString())
    before = _snapshot(src)
    for extra in ([], ["--no-check"]):
        code, err = _inproc(capsys, "optimize", src, "-o", tmp_path / "m", "--external-data", "yes", *extra)
        _one_line_error(code, err, str(src), "input model reads")
    assert _snapshot(src) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.data"]


@pytest.mark.parametrize(
    "spell",
    ["plain", "dotted", "symlink", "hardlink"],
)
def test_output_whose_data_file_is_the_input_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spell: str
) -> None:
    """-o B.onnx when the input keeps its weights in B.onnx.data, however the output is spelt."""
    src = _external_model(tmp_path / "d", "A.onnx", "B.onnx.data")
    folder = tmp_path / "d"
    out = {
        "plain": folder / "B.onnx",
        "dotted": tmp_path / "d" / ".." / "d" / "." / "B.onnx",
        "symlink": tmp_path / "elsewhere" / "B.onnx",  # its data file B.onnx.data is a symlink to the input's
        "hardlink": tmp_path / "elsewhere" / "B.onnx",
    }[spell]
    if spell in ("symlink", "hardlink"):
        out.parent.mkdir()
        (os.symlink if spell == "symlink" else os.link)(folder / "B.onnx.data", out.parent / "B.onnx.data")
    before = _snapshot(src, folder / "B.onnx.data")
    code, err = _inproc(capsys, "optimize", src, "-o", out, "-O0", "--no-check")  # the checker refuses hard links
    _one_line_error(code, err, "B.onnx.data", "input model reads")
    assert _snapshot(src, folder / "B.onnx.data") == before
    assert not out.exists()
    with pytest.raises(GraphoptError, match="input model reads"):
        graphopt.save(graphopt.load(src), out)
    assert _snapshot(src, folder / "B.onnx.data") == before


@pytest.mark.parametrize("spell", ["plain", "symlink", "hardlink", "relative"])
def test_output_that_is_the_input_data_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, spell: str
) -> None:
    """-o A.onnx.data (the input's weights), also through a symlink, a hard link or a relative spelling."""
    src = _external_model(tmp_path, "A.onnx", "A.onnx.data")
    data = tmp_path / "A.onnx.data"
    out = data
    if spell == "symlink":
        os.symlink("A.onnx.data", tmp_path / "link")
        out = tmp_path / "link"
    elif spell == "hardlink":
        os.link(data, tmp_path / "hard")
        out = tmp_path / "hard"
    elif spell == "relative":
        monkeypatch.chdir(tmp_path)
        out = Path("./A.onnx.data")
    before = _snapshot(src, data)
    for extra in ([], ["--no-check"]):
        code, err = _inproc(capsys, "optimize", src, "-o", out, "-O0", *extra)
        # (the checker itself refuses external data with several hard links)
        _one_line_error(code, err, "hard links" if spell == "hardlink" and not extra else "input model reads")
    assert _snapshot(src, data) == before
    with pytest.raises(GraphoptError, match="input model reads"):
        graphopt.save(graphopt.load(src), out, external_data=False)
    assert _snapshot(src, data) == before
    np.testing.assert_array_equal(
        _run_ort(src), np.linspace(-1, 1, N, dtype=np.float32) + np.arange(N, dtype=np.float32)
    )


def test_in_place_rewrites_the_input_and_its_data_while_they_are_mapped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--in-place writes new files and renames them: the loaded model keeps reading the old bytes through its maps
    while the new data file (another layout: a folded-away tensor, aligned offsets) takes the old one's name."""
    n = 4096
    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal(n).astype(np.float32), "b": rng.standard_normal(n).astype(np.float32)}
    inits = [_externalize(numpy_helper.from_array(arr, k), tmp_path, "m.onnx.data") for k, arr in arrays.items()]
    g = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["ab"]), helper.make_node("Mul", ["x", "ab"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        inits,
    )
    src = tmp_path / "m.onnx"
    src.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString())
    expected = _run_ort(src, n)
    old_data = os.stat(tmp_path / "m.onnx.data").st_ino
    code, err = _inproc(capsys, "optimize", src, "--in-place", "-q", "--external-data", "yes", "--size-threshold", "0")
    assert code == 0, err
    assert os.stat(tmp_path / "m.onnx.data").st_ino != old_data  # a new file, renamed over the old name
    np.testing.assert_allclose(_run_ort(src, n), expected, rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    # The Python API: saving over the model's own source twice, the model still reading its first files' bytes.
    model = graphopt.load(src)
    graphopt.optimize(model, level=2)
    graphopt.save(model, src)
    graphopt.save(model, src, external_data=False)
    np.testing.assert_allclose(_run_ort(src, n), expected, rtol=1e-6)


def test_external_data_location_equal_to_the_model_file_is_refused(tmp_path: Path) -> None:
    model = graphopt.load(_external_model(tmp_path / "in"))
    with pytest.raises(ExternalDataError, match="model file itself"):
        graphopt.save(model, tmp_path / "o.onnx", external_data=True, location="o.onnx")
    assert list(tmp_path.iterdir()) == [tmp_path / "in"]


# --------------------------------------------------------------------------------------------------------------------
# 3. SIGTERM and SIGHUP during a save
# --------------------------------------------------------------------------------------------------------------------
_SLOW_SAVE = """
import sys, time
from graphopt.core import tensors
write_to = tensors.Tensor.write_to
def slow(self, *args):  # the save streams one tensor at a time; slow each one down so that the signal lands mid-save
    time.sleep(0.05)
    return write_to(self, *args)
tensors.Tensor.write_to = slow
from graphopt.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_terminating_signal_during_save_removes_temporary_files(tmp_path: Path, signame: str) -> None:
    rng = np.random.default_rng(0)
    n = 64 * 1024  # 80 tensors of 256 KB: a 20 MB save, slowed to ~4 s
    inits = [numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), f"w{i}") for i in range(80)]
    src = tmp_path / "in" / "m.onnx"
    src.parent.mkdir()
    src.write_bytes(_add_model(inits, n).SerializeToString())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cmd = [sys.executable, "-c", _SLOW_SAVE, "optimize", str(src), "-o", str(out_dir / "o.onnx"), "-O0", "-q"]
    proc = subprocess.Popen([*cmd, "--external-data", "yes", "--no-check"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in out_dir.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the save never started"
        time.sleep(0.005)
    time.sleep(0.1)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    signum = getattr(signal, signame)
    assert proc.returncode == 128 + signum, err
    line = (
        "interrupted" if signame == "SIGINT" else f"terminated by {signame} while saving; no temporary file left behind"
    )
    assert err.strip().splitlines() == [f"graphopt: {line}"], err
    assert list(out_dir.iterdir()) == []  # no .o.onnx.*.tmp, no .o.onnx.data.*.tmp, no output


@pytest.mark.slow
def test_sigterm_during_a_real_large_save(tmp_path: Path) -> None:
    """The same without any slowing down: 256 MB of external weights (memory-mapped at load), SIGTERM as soon as the
    first temporary file appears."""
    n = 8 * 1024 * 1024  # 8 tensors of 32 MB
    folder = tmp_path / "in"
    folder.mkdir()
    inits = []
    for i in range(8):
        t = numpy_helper.from_array(np.full(n, i, np.float32), f"w{i}")
        inits.append(_externalize(t, folder, "m.onnx.data"))
    src = folder / "m.onnx"
    src.write_bytes(_add_model(inits, n).SerializeToString())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cmd = [sys.executable, "-m", "graphopt", "optimize", str(src), "-o", str(out_dir / "o.onnx"), "-O0", "-q"]
    proc = subprocess.Popen([*cmd, "--no-check", "--external-data", "yes"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.endswith(".tmp") for p in out_dir.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the save ended before it could be signalled"
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert list(out_dir.iterdir()) == []


# --------------------------------------------------------------------------------------------------------------------
# 4. inputs that are not regular files
# --------------------------------------------------------------------------------------------------------------------
def _commands(path: Path, tmp_path: Path) -> list[list[str | Path]]:
    return [
        ["optimize", path, "-o", tmp_path / "o.onnx"],
        ["optimize", path, "-o", tmp_path / "o.onnx", "--no-check"],
        ["inspect", path],
        ["diff", path, path],
        ["bench", path, "--runs", "1"],
    ]


def test_fifo_input_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "in.onnx"
    os.mkfifo(fifo)
    for argv in _commands(fifo, tmp_path):
        code, err = _cli(*argv, timeout=60)  # before the fix: blocked forever waiting for a writer
        _one_line_error(code, err, str(fifo), "FIFO")


@pytest.mark.parametrize("case", ["dev_zero", "long_name", "directory", "symlink_loop"])
def test_non_regular_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    if case == "dev_zero":
        if not Path("/dev/zero").exists():
            pytest.skip("no /dev/zero")
        path, needle = Path("/dev/zero"), "character device"
    elif case == "long_name":
        path, needle = tmp_path / ("x" * 300 + ".onnx"), "name too long"
    elif case == "directory":
        path, needle = tmp_path, "directory"
    else:
        os.symlink("loop", tmp_path / "loop")
        path, needle = tmp_path / "loop", "symbolic links"
    for argv in _commands(path, tmp_path):
        code, err = _inproc(capsys, *argv)
        _one_line_error(code, err, needle)
    with pytest.raises(ModelLoadError):
        graphopt.load(path)


def test_long_output_name_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.onnx"
    src.write_bytes(_add_model([numpy_helper.from_array(np.ones(N, np.float32), "w")]).SerializeToString())
    code, err = _inproc(capsys, "optimize", src, "-o", tmp_path / ("y" * 300))
    _one_line_error(code, err, "name too long")


@pytest.mark.parametrize("kind", ["fifo", "dir", "chardev"])
def test_external_data_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    src = _external_model(tmp_path, "m.onnx", "w.bin")
    (tmp_path / "w.bin").unlink()
    _special(kind, tmp_path / "w.bin")
    code, err = _cli("optimize", src, "-o", tmp_path / "o.onnx", "--no-check", timeout=60)
    _one_line_error(code, err, "w.bin", "not a regular file")


# --------------------------------------------------------------------------------------------------------------------
# 5. every external reference goes through the one resolver
# --------------------------------------------------------------------------------------------------------------------
def _every_kind_of_reference(folder: Path, sparse_external: bool = True) -> Path:
    """A model with external data in a dense initializer, a sparse initializer (values and indices), a subgraph
    initializer, a Constant's tensor and sparse tensor attributes, and a function body: six files. The ONNX checker
    refuses external sparse data: ``sparse_external=False`` keeps those inline."""
    folder.mkdir(parents=True, exist_ok=True)

    def ext(arr: np.ndarray, name: str, location: str) -> TensorProto:
        t = numpy_helper.from_array(arr, name)
        return t if location == "sparse.bin" and not sparse_external else _externalize(t, folder, location)

    w = ext(np.arange(N, dtype=np.float32), "w", "dense.bin")
    sparse = helper.make_sparse_tensor(
        ext(np.array([5, 6], np.float32), "s", "sparse.bin"), ext(np.array([1, 3], np.int64), "s_i", "sparse.bin"), [N]
    )
    then_g = helper.make_graph(
        [helper.make_node("Add", ["t0", "b"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [N])],
        [ext(np.full(N, 2, np.float32), "b", "sub.bin")],
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["t0"], ["e"])], "else", [], [helper.make_tensor_value_info("e", 1, [N])]
    )
    attr_sparse = helper.make_sparse_tensor(
        ext(np.array([7], np.float32), "sv", "attr.bin" if sparse_external else "sparse.bin"),
        ext(np.array([2], np.int64), "si", "attr.bin" if sparse_external else "sparse.bin"),
        [N],
    )
    func = helper.make_function(
        "local",
        "AddFour",
        ["a"],
        ["o"],
        [
            helper.make_node("Constant", [], ["k"], value=ext(np.full(N, 4, np.float32), "fv", "func.bin")),
            helper.make_node("Add", ["a", "k"], ["o"]),
        ],
        [helper.make_opsetid("", 17)],
    )
    nodes = [
        helper.make_node("Add", ["x", "w"], ["a1"]),
        helper.make_node("Add", ["a1", "s"], ["a2"]),
        helper.make_node("Constant", [], ["c"], value=ext(np.full(N, 3, np.float32), "cv", "attr.bin")),
        helper.make_node("Constant", [], ["cs"], sparse_value=attr_sparse),
        helper.make_node("Add", ["a2", "c"], ["a3"]),
        helper.make_node("Add", ["a3", "cs"], ["t0"]),
        helper.make_node("ReduceSum", ["x"], ["r"], keepdims=0),
        helper.make_node("Greater", ["r", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["a4"], then_branch=then_g, else_branch=else_g),
        helper.make_node("AddFour", ["a4"], ["y"], domain="local"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N])],
        [w, numpy_helper.from_array(np.array(0, np.float32), "zero")],
        sparse_initializer=[sparse],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    model = helper.make_model(g, opset_imports=opsets, ir_version=8, functions=[func])
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    return folder / "model.onnx"


def _decoys(model_dir: Path, cwd: Path) -> None:
    """Files of the same names, with other contents, in the working directory: what a CWD-relative lookup would read."""
    for f in model_dir.glob("*.bin"):
        (cwd / f.name).write_bytes(b"\x7f" * f.stat().st_size)


def test_sparse_external_data_resolves_in_the_model_folder_not_the_cwd(tmp_path: Path) -> None:
    model_dir, cwd = tmp_path / "m", tmp_path / "cwd"
    src = _every_kind_of_reference(model_dir)
    cwd.mkdir()
    _decoys(model_dir, cwd)
    expected = _run_ort(src)  # onnxruntime resolves against the model's folder
    for level in ("-O0", "-O2"):
        out = tmp_path / f"o{level}.onnx"
        code, err = _cli("optimize", src, "-o", out, level, "-q", "--no-check", cwd=cwd)
        assert code == 0, err
        np.testing.assert_array_equal(_run_ort(out), expected)
    # With the sparse values' file only in the CWD, the model folder's rule refuses it (before: read from the CWD).
    (model_dir / "sparse.bin").rename(cwd / "sparse.bin")
    code, err = _cli("optimize", src, "-o", tmp_path / "x.onnx", "--no-check", cwd=cwd)
    _one_line_error(code, err, "sparse.bin", "does not exist")
    assert not (tmp_path / "x.onnx").exists()


def test_sparse_attribute_and_initializer_external_data_follow_the_folder_rules(tmp_path: Path) -> None:
    src = _every_kind_of_reference(tmp_path / "m")
    proto = onnx.load(str(src), load_external_data=False)
    proto.graph.node[3].attribute[0].sparse_tensor.indices.external_data[0].value = "../outside.bin"
    (tmp_path / "outside.bin").write_bytes(np.array([2], np.int64).tobytes())
    src.write_bytes(proto.SerializeToString())
    with pytest.raises(ExternalDataError, match="leaves the model folder"):
        graphopt.load(src)


def _allowed_prefixes(extra: list[Path]) -> list[str]:
    """Where a run may open files: the interpreter, its libraries and site-packages, graphopt's own source, the
    system's libraries and configuration, pseudo-filesystems, and the folders given (model and output)."""
    import graphopt.kernels
    import graphopt.passes

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(p for p in sysconfig.get_paths().values() if p)
    paths.update(p for p in sys.path if p and Path(p).is_dir() and Path(p).resolve() != Path.cwd().resolve())
    for mod in (graphopt, graphopt.passes, graphopt.kernels):
        paths.add(str(Path(mod.__file__).resolve().parent))
    paths.update(("/usr/", "/lib/", "/lib64/", "/etc/", "/proc/", "/sys/", "/dev/"))
    paths.update(str(p) for p in extra)
    return [str(Path(p).resolve()) + "/" if not p.endswith("/") else p for p in paths]


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
@pytest.mark.parametrize("checker", [False, True])
def test_no_file_opened_outside_the_model_and_output_folders(tmp_path: Path, checker: bool) -> None:
    """Run graphopt from another working directory (holding decoys of every data file) under strace: every open
    must be in the model's folder, the output folder, or the interpreter's and the system's paths. With the checker
    on, the model keeps its sparse data inline (the checker refuses external sparse data)."""
    model_dir, out_dir, cwd = tmp_path / "model", tmp_path / "out", tmp_path / "cwd"
    src = _every_kind_of_reference(model_dir, sparse_external=not checker)
    out_dir.mkdir()
    cwd.mkdir()
    _decoys(model_dir, cwd)
    trace = tmp_path / "trace.txt"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    # -P: the interpreter does not put the working directory on sys.path (python -m would list it for imports).
    cmd = [sys.executable, "-P", "-m", "graphopt", "optimize", "../model/model.onnx", "-o", "../out/o.onnx"]
    p = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=openat,open",
            "-o",
            str(trace),
            *cmd,
            "-q",
            *([] if checker else ["--no-check"]),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if p.returncode != 0 and "ptrace" in p.stderr:
        pytest.skip(f"strace cannot trace here: {p.stderr.strip()}")
    assert p.returncode == 0, p.stderr
    allowed = _allowed_prefixes([model_dir, out_dir])
    opened = []
    for line in trace.read_text().splitlines():
        m = re.search(r'open(?:at)?\((?:AT_FDCWD|\d+), "([^"]*)"', line) or re.search(r'open\("([^"]*)"', line)
        if m:
            opened.append(os.path.normpath(os.path.join(cwd, m.group(1))))  # relative names are the CWD's
    assert any(o.startswith(str(model_dir.resolve())) for o in opened)  # the trace did see the model being read
    outside = sorted({o for o in opened if not any((o + "/").startswith(a) for a in allowed)})
    assert outside == [], outside
    assert not any(o.startswith(str(cwd.resolve())) for o in opened)
    np.testing.assert_array_equal(_run_ort(out_dir / "o.onnx"), _run_ort(src))


# --------------------------------------------------------------------------------------------------------------------
# 6. external offset and length
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("offset", "length", "needle"),
    [
        ("0x0", "32", "offset '0x0'"),
        ("1e3", "32", "offset '1e3'"),
        ("-5", "32", "offset '-5'"),
        ("abc", "32", "offset 'abc'"),
        ("", "32", "offset ''"),
        (" 5", "32", "offset ' 5'"),
        ("\u0663", "32", "offset"),  # an Arabic-Indic digit: int() takes it, the format does not
        ("0", "0x20", "length '0x20'"),
        ("0", "-32", "length '-32'"),
        ("0", "32 ", "length '32 '"),
        ("16", "32", "outside"),  # offset + length beyond the end of the 32-byte file
        ("40", "32", "outside"),
    ],
)
def test_external_offset_and_length_must_be_decimal_and_in_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], offset: str, length: str, needle: str
) -> None:
    src = _external_model(tmp_path, "m.onnx", "w.bin")
    proto = onnx.load(str(src), load_external_data=False)
    entries = {e.key: e for e in proto.graph.initializer[0].external_data}
    entries["offset"].value, entries["length"].value = offset, length
    src.write_bytes(proto.SerializeToString())
    with pytest.raises(ExternalDataError, match=re.escape(needle)):
        graphopt.load(src)
    code, err = _inproc(capsys, "optimize", src, "-o", tmp_path / "o.onnx", "--no-check")
    _one_line_error(code, err, "'w'", "w.bin", needle)


# --------------------------------------------------------------------------------------------------------------------
# 7. tensor data of the wrong size
# --------------------------------------------------------------------------------------------------------------------
def _wrong_size(where: str, n: int, delta: int) -> onnx.ModelProto:
    t = numpy_helper.from_array(np.ones(n, np.float32), "w")
    t.raw_data = t.raw_data + b"\0" * delta if delta > 0 else t.raw_data[:delta]
    if where == "initializer":
        return _add_model([t], n)
    if where == "typed":
        t.ClearField("raw_data")
        t.float_data.extend([1.0] * (n + delta // 4))
        return _add_model([t], n)
    if where == "constant":
        g = helper.make_graph(
            [helper.make_node("Constant", [], ["w"], value=t), helper.make_node("Add", ["x", "w"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        )
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    # a subgraph initializer
    branch = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["t"])], "b", [], [helper.make_tensor_value_info("t", 1, [n])], [t]
    )
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n]), helper.make_tensor_value_info("c", 9, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("where", ["initializer", "typed", "constant", "subgraph"])
@pytest.mark.parametrize("n", [4, 1024])  # inline, and memory-mapped from the model file
@pytest.mark.parametrize("delta", [4, -4])
def test_tensor_data_of_the_wrong_size_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, n: int, delta: int
) -> None:
    """onnxruntime refuses such a model ("data size does not match"), so exit 0 with a correct model is impossible:
    graphopt refuses it too, at load, with or without the checker (which lets too-long data through)."""
    src = tmp_path / "m.onnx"
    model = _wrong_size(where, n, delta)
    src.write_bytes(model.SerializeToString())
    with pytest.raises(Exception, match="does not match|size mismatch|data size|data field count|too small"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for level in ("-O0", "-O2"):
        code, err = _inproc(capsys, "optimize", src, "-o", tmp_path / "o.onnx", level, "--no-check")
        _one_line_error(code, err, str(src), "'w'", "needs")
    assert not (tmp_path / "o.onnx").exists()
    with pytest.raises(ModelLoadError, match="needs"):
        graphopt.load(src)


# --------------------------------------------------------------------------------------------------------------------
# 8. names that are not UTF-8
# --------------------------------------------------------------------------------------------------------------------
def _non_utf8_model(path: Path, n: int = N) -> None:
    """Node, value, initializer (mapped when n is large) and graph names, doc strings and a tensor's metadata with a
    byte that is not UTF-8."""
    weights = numpy_helper.from_array(np.arange(n, dtype=np.float32), "WEIGHTSX")
    weights.doc_string = "TDOCSTRX"
    weights.metadata_props.add(key="TMETAKYX", value="TMETAVLX")
    g = helper.make_graph(
        [
            helper.make_node("Add", ["x", "WEIGHTSX"], ["VALNAMEX"], name="NODENAMX"),
            helper.make_node("Relu", ["VALNAMEX"], ["y"], doc_string="DOCSTRNX"),
        ],
        "GRAPHNMX",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        [weights],
        value_info=[helper.make_tensor_value_info("VALNAMEX", TensorProto.FLOAT, [n])],
    )
    data = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    for name in (
        b"WEIGHTSX",
        b"VALNAMEX",
        b"NODENAMX",
        b"DOCSTRNX",
        b"GRAPHNMX",
        b"TDOCSTRX",
        b"TMETAKYX",
        b"TMETAVLX",
    ):
        data = data.replace(name, name[:-1] + b"\xff")  # same length: the wire format stays valid
    path.write_bytes(data)


@pytest.mark.parametrize("n", [N, 1024])
def test_non_utf8_names_round_trip_from_python(tmp_path: Path, n: int) -> None:
    src = tmp_path / "m.onnx"
    _non_utf8_model(src, n)
    model = graphopt.load(src)
    assert model.graph.initializers["WEIGHTS\udcff"].const.numpy()[3] == 3
    graphopt.save(model, tmp_path / "o.onnx")
    graphopt.save(model, tmp_path / "ext.onnx", external_data=True, size_threshold=0)  # a stub carries them too
    stub = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False).graph.initializer[0]
    assert (stub.name, stub.doc_string, stub.metadata_props[0].value) == (
        b"WEIGHTS\xff",
        b"TDOCSTR\xff",
        b"TMETAVL\xff",
    )
    original, saved = onnx.ModelProto(), onnx.ModelProto()
    original.ParseFromString(src.read_bytes())
    saved.ParseFromString((tmp_path / "o.onnx").read_bytes())
    assert saved == original  # every name, byte for byte
    assert saved.graph.node[0].output[0] == b"VALNAME\xff"
    assert graphopt.to_proto(graphopt.load(src)) == original


def test_non_utf8_names_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.onnx"
    _non_utf8_model(src)
    expected = _run_ort(src)
    for argv in (["-O0"], ["-O2"], ["-O3"], ["-O2", "--no-check"]):
        out = tmp_path / "o.onnx"
        code, err = _inproc(capsys, "optimize", src, "-o", out, "-q", *argv)
        assert code == 0, err
        np.testing.assert_array_equal(_run_ort(out), expected)
    for argv in (["inspect", src], ["inspect", src, "--json"], ["diff", src, tmp_path / "o.onnx"]):
        code, err = _inproc(capsys, *argv)
        assert code in (0, 1) and "Traceback" not in err, err


# --------------------------------------------------------------------------------------------------------------------
# 9. sparse initializers as constants
# --------------------------------------------------------------------------------------------------------------------
def _sparse_fold_model(coordinates: bool = False) -> onnx.ModelProto:
    values = numpy_helper.from_array(np.array([5, 6], np.float32), "s")
    idx = np.array([[0, 1], [1, 2]], np.int64) if coordinates else np.array([1, 6], np.int64)
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(idx, "s_idx"), [2, 4])
    g = helper.make_graph(
        [helper.make_node("Add", ["s", "w"], ["t"]), helper.make_node("Mul", ["x", "t"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(np.arange(8, dtype=np.float32).reshape(2, 4), "w")],
        sparse_initializer=[sparse],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("coordinates", [False, True])
def test_sparse_initializer_read_by_a_foldable_op(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], coordinates: bool
) -> None:
    src = tmp_path / "m.onnx"
    src.write_bytes(_sparse_fold_model(coordinates).SerializeToString())
    feed = {"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)}

    def run(path: Path) -> np.ndarray:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]

    expected = run(src)
    for level in ("-O1", "-O2", "-O3"):
        out = tmp_path / f"o{level}.onnx"
        code, err = _inproc(capsys, "optimize", src, "-o", out, level, "-q")
        assert code == 0, err
        np.testing.assert_array_equal(run(out), expected)
    folded = onnx.load(str(tmp_path / "o-O2.onnx"))
    assert [n.op_type for n in folded.graph.node] == ["Mul"]  # Add(sparse, dense) became one constant
    model = graphopt.load(src)
    sparse = model.graph.sparse_initializers["s"].const
    dense = np.zeros(8, np.float32)
    dense[[1, 6]] = [5, 6]
    np.testing.assert_array_equal(sparse.numpy(), dense.reshape(2, 4))
    assert graphopt.to_proto(model) == _sparse_fold_model(coordinates)  # still sparse in the file


def test_sparse_indices_out_of_range_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proto = _sparse_fold_model()
    proto.graph.sparse_initializer[0].indices.CopyFrom(numpy_helper.from_array(np.array([1, 8], np.int64), "s_idx"))
    src = tmp_path / "m.onnx"
    src.write_bytes(proto.SerializeToString())
    code, err = _inproc(capsys, "optimize", src, "-o", tmp_path / "o.onnx", "--no-check")
    _one_line_error(code, err, "'s'", "out of range")


def test_report_page_never_replaces_a_file_the_input_reads(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.arange(4096, dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4096])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4096])
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src = tmp_path / "m.onnx"
    onnx.save(model, str(src), save_as_external_data=True, location="m.weights", size_threshold=0)
    before = (tmp_path / "m.weights").read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "graphopt", "optimize", str(src), "-o", str(tmp_path / "o.onnx"),
         "--report", str(tmp_path / "m.weights")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "m.weights" in proc.stderr
    assert (tmp_path / "m.weights").read_bytes() == before
