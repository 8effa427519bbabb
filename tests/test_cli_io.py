"""The command line's input and output edges a new user hit (walkthrough of 2026-12-02): every file a run writes is
checked before any work, ``-`` is not a file name, no abbreviated options, calibration paths that say what they found,
``optimize(calibration=DIR)``, sizes that count external data, and a guess for a missing subcommand or an unknown
option. Each error is one line ``graphopt: error: ...``, exit 2, nothing written."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

import graphopt
from graphopt.cli import build_parser, main
from graphopt.errors import GraphoptError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CNN = FIXTURES / "cnn.onnx"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # usage errors exit from argparse
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the run gets as far as optimizing: the errors here must come before any work."""
    import graphopt.cli.commands as commands

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run optimized the model before finding the problem")

    monkeypatch.setattr(commands, "run_request", refuse)


@contextlib.contextmanager
def _unwritable(folder: Path) -> Iterator[Path]:
    """A folder no file can be created in, even by root: chattr +i as root (root ignores permission bits), mode 555
    otherwise. Skips when neither works (no chattr, a file system without the flag)."""
    folder.mkdir()
    immutable = False
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot make an unwritable folder as root (no chattr +i here)")
        immutable = True
    else:
        folder.chmod(0o555)
    try:
        try:
            (folder / "probe").write_bytes(b"")
        except OSError:
            pass
        else:
            pytest.skip("the folder stayed writable")
        yield folder
    finally:
        if immutable:
            subprocess.run([shutil.which("chattr") or "chattr", "-i", str(folder)], check=False)
        else:
            folder.chmod(0o755)


@pytest.fixture
def ro(tmp_path: Path) -> Iterator[Path]:
    with _unwritable(tmp_path / "ro") as folder:
        yield folder


# A folder that exists but where nothing can be created, on any Linux, whoever runs the tests: /proc.
PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not (PROC / "self").is_dir(), reason="no /proc")


# --------------------------------------------------------------------------------------------------------------------
# 1, 2: every output path is checked for writability before any work
# --------------------------------------------------------------------------------------------------------------------
def test_unwritable_output_folder_fails_before_any_work(ro: Path, no_work: None, capsys) -> None:
    out = ro / "x.onnx"
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(out), "--quantize", "int8-dynamic")
    _one_line_error(code, err, str(out), "cannot write", f"in {ro}")
    assert list(ro.iterdir()) == []


@needs_proc
def test_output_in_a_folder_nothing_can_be_created_in(no_work: None, capsys) -> None:
    out = PROC / "graphopt-test.onnx"
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(out))
    _one_line_error(code, err, str(out), "cannot write the output in /proc")


def test_unwritable_report_folder_writes_no_model(ro: Path, tmp_path: Path, no_work: None, capsys) -> None:
    out, page = tmp_path / "y.onnx", ro / "r.html"
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(out), "--report", str(page))
    _one_line_error(code, err, str(page), "cannot write the report")
    assert not out.exists()


@needs_proc
def test_report_in_a_folder_nothing_can_be_created_in_writes_no_model(tmp_path: Path, no_work: None, capsys) -> None:
    out, page = tmp_path / "y.onnx", PROC / "graphopt-test.html"
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(out), "--report", str(page))
    _one_line_error(code, err, str(page), "cannot write the report in /proc")
    assert not out.exists()


def test_the_writability_probe_leaves_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "y.onnx"
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(out), "--report", str(tmp_path / "r.html"), "-q")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "y.onnx"]


# --------------------------------------------------------------------------------------------------------------------
# 3: '-' is not a file name for what graphopt writes
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["optimize", str(CNN), "-o", "-"], "-o -"),
        (["optimize", str(CNN), "-o", "y.onnx", "--report", "-"], "--report -"),
        (["report", "r.json", "-o", "-"], "-o -"),
    ],
)
def test_dash_as_an_output_is_an_error(argv: list[str], flag: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.json").write_text("{}")
    code, _, err = _run(capsys, *argv)
    _one_line_error(code, err, flag, "stdout")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_dot_slash_dash_is_a_file_named_dash(tmp_path: Path, monkeypatch, capsys) -> None:
    """The error's own advice works: ./- writes a file called '-' (Path('./-') prints as '-', the raw text does not)."""
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", "./-", "-q")
    assert code == 0, err
    assert (tmp_path / "-").is_file()


def test_probe_errors_are_one_line(tmp_path: Path, capsys) -> None:
    """An output path whose name is too long for the file system is a one-line error, not an OSError traceback."""
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / ("c" * 300) / "x.onnx"))
    _one_line_error(code, err, "cannot write the output")


# --------------------------------------------------------------------------------------------------------------------
# 4: no abbreviated options; an unknown option gets the nearest name or the option whose value it is
# --------------------------------------------------------------------------------------------------------------------
def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_no_parser_takes_abbreviations() -> None:
    parsers = list(_parsers(build_parser()))
    assert len(parsers) == 7  # graphopt and its six commands
    assert all(p.allow_abbrev is False for p in parsers)


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--quantize", "int8", "--calib-dat", "calib"], ["--calib-dat", "did you mean --calib-data?"]),
        (["--quantize", "int8", "--int8"], ["unrecognized arguments: --int8", "did you mean --quantize int8?"]),
        (["--fp16"], ["unrecognized arguments: --fp16", "did you mean --precision fp16?"]),
        (["--quantise", "int8"], ["did you mean --quantize?"]),
    ],
)
def test_abbreviated_or_unknown_option(extra: list[str], needles: list[str], tmp_path: Path, capsys) -> None:
    (tmp_path / "calib").mkdir()
    out = tmp_path / "z.onnx"
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(out), *extra)
    line = _one_line_error(code, err, *needles)
    assert "graphopt optimize --help" in line
    assert not out.exists()


def test_unknown_option_of_another_command(capsys) -> None:
    code, _, err = _run(capsys, "bench", str(CNN), "--run", "3")
    _one_line_error(code, err, "--run 3", "did you mean --runs?", "graphopt bench --help")


# --------------------------------------------------------------------------------------------------------------------
# 5, 6: calibration data: what is wrong with the path, and the same directory reader from Python
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def calib(tmp_path: Path) -> Path:
    folder = tmp_path / "calib"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.savez(folder / f"{i}.npz", input=rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    return folder


def test_calib_data_naming_a_file_says_so(calib: Path, tmp_path: Path, no_work: None, capsys) -> None:
    f = calib / "0.npz"
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8",
                        "--calib-data", str(f))  # fmt: skip
    line = _one_line_error(code, err, str(f), "a file, not a directory", "directory of .npz files")
    assert "not found" not in line


@pytest.mark.parametrize(
    ("files", "found"),
    [
        (["0.npy", "1.npy", "2.npy"], "found 3 .npy files"),
        (["a.png", "b.jpg", "c.png"], "found 2 .png files, 1 .jpg file"),
        ([], "it is empty"),
    ],
)
def test_calib_data_without_npz_says_what_it_found(
    files: list[str], found: str, tmp_path: Path, no_work: None, capsys
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in files:
        (folder / name).write_bytes(b"x")
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8",
                        "--calib-data", str(folder))  # fmt: skip
    _one_line_error(code, err, str(folder), "no .npz calibration files", found)


def _int8(calibration: object) -> onnx.ModelProto:
    model = graphopt.optimize(
        onnx.load(str(CNN)), quantize="int8", calibration=calibration, quantize_options={"cache": False}
    )
    assert isinstance(model, onnx.ModelProto)
    return model


def test_api_calibration_takes_a_directory_like_calib_data(calib: Path) -> None:
    feeds = [dict(np.load(f)) for f in sorted(calib.glob("*.npz"))]
    expected = _int8(feeds).SerializeToString()
    assert _int8(str(calib)).SerializeToString() == expected
    assert _int8(calib).SerializeToString() == expected  # os.PathLike


def test_api_calibration_directory_reaches_the_quantize_pass_in_a_pipeline(calib: Path) -> None:
    """A directory given as calibration feeds the quantize-int8 pass of a pipeline too, as a list does (the pass
    said 'needs calibration data' when the directory became a reader the passes never called)."""
    feeds = [dict(np.load(f)) for f in sorted(calib.glob("*.npz"))]

    def run(calibration: object) -> bytes:
        model = graphopt.optimize(onnx.load(str(CNN)), passes="cleanup,quantize-int8{method=minmax}",
                                  calibration=calibration)  # fmt: skip
        assert isinstance(model, onnx.ModelProto)
        return model.SerializeToString()

    assert run(calib) == run(feeds)


@pytest.mark.parametrize(
    ("calibration", "needle"),
    [
        (3, "got int"),
        (b"calib", "got bytes"),
        ({"input": np.zeros((1, 3, 32, 32), np.float32)}, "a single dict; pass a list of feed dicts"),
        ([np.zeros((1, 3, 32, 32), np.float32)], "item #0 is of type ndarray, not a feed dict"),
        ("no/such/dir", "calibration data directory not found"),
    ],
)
def test_api_calibration_of_another_type_names_the_accepted_forms(calibration: object, needle: str) -> None:
    with pytest.raises(GraphoptError, match=None) as exc:
        graphopt.optimize(str(CNN), quantize="int8", calibration=calibration)
    assert needle in str(exc.value)
    if "dir" not in needle:
        assert "a directory of .npz files (str or os.PathLike)" in str(exc.value)


def test_api_calibration_file_path(calib: Path) -> None:
    with pytest.raises(GraphoptError, match="a file, not a directory"):
        graphopt.optimize(str(CNN), quantize="int8", calibration=calib / "0.npz")


# --------------------------------------------------------------------------------------------------------------------
# 7: sizes count the external data files, and the data file written is named
# --------------------------------------------------------------------------------------------------------------------
def test_sizes_count_external_data_on_both_sides(tmp_path: Path, capsys) -> None:
    (tmp_path / "ext").mkdir()
    (tmp_path / "out").mkdir()
    src, out = tmp_path / "ext" / "m.onnx", tmp_path / "out" / "o.onnx"
    onnx.save(onnx.load(str(CNN)), str(src), save_as_external_data=True, location="m.onnx.data", size_threshold=256)
    src_data, out_data = tmp_path / "ext" / "m.onnx.data", tmp_path / "out" / "o.onnx.data"
    code, stdout, err = _run(capsys, "optimize", str(src), "-o", str(out), "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert out_data.stat().st_size > 10_000
    assert summary["bytes_before"] == src.stat().st_size + src_data.stat().st_size
    assert summary["bytes_after"] == out.stat().st_size + out_data.stat().st_size
    assert summary["external_data_before"] == {str(src_data): src_data.stat().st_size}
    assert summary["external_data_after"] == {str(out_data): out_data.stat().st_size}

    from graphopt.tools.summary import human_bytes

    code, stdout, err = _run(capsys, "optimize", str(src), "-o", str(out))
    assert code == 0, err
    size = f"size {human_bytes(summary['bytes_before'])} -> {human_bytes(summary['bytes_after'])} (with external data)"
    assert size in stdout
    assert f"data {src_data} {human_bytes(src_data.stat().st_size)} -> {out_data}" in stdout

    inline = tmp_path / "out" / "inline.onnx"  # no data file written: none named, and the size is the one file's
    code, stdout, err = _run(capsys, "optimize", str(src), "-o", str(inline), "--external-data", "no", "--json")
    summary = json.loads(stdout)
    assert summary["bytes_after"] == inline.stat().st_size and summary["external_data_after"] == {}
    assert not (tmp_path / "out" / "inline.onnx.data").exists()


def test_sizes_without_external_data_are_the_files(tmp_path: Path, capsys) -> None:
    out = tmp_path / "o.onnx"
    code, stdout, err = _run(capsys, "optimize", str(CNN), "-o", str(out), "--json")
    summary = json.loads(stdout)
    assert summary["bytes_before"] == CNN.stat().st_size and summary["bytes_after"] == out.stat().st_size
    assert summary["external_data_before"] == summary["external_data_after"] == {}
    code, stdout, err = _run(capsys, "optimize", str(CNN), "-o", str(out))
    assert "external data" not in stdout and "\n  data " not in stdout


# --------------------------------------------------------------------------------------------------------------------
# 8: a forgotten subcommand, and report given a model
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("first", [str(CNN), "cnn.onnx", "Model.ONNX"])
def test_forgotten_subcommand_suggests_optimize(first: str, capsys) -> None:
    code, _, err = _run(capsys, first, "-o", "z.onnx")
    _one_line_error(code, err, f"{first!r} is not a command", f"graphopt optimize {first} -o z.onnx")


def test_unknown_command_still_lists_the_commands(capsys) -> None:
    code, _, err = _run(capsys, "optimise", "m.onnx")
    _one_line_error(code, err, "invalid choice: 'optimise'", "'optimize'")


def test_report_of_a_model_says_what_it_expects(tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    proc = subprocess.run(
        [sys.executable, "-m", "graphopt", "report", str(CNN), "-o", str(page)], capture_output=True, text=True
    )
    _one_line_error(proc.returncode, proc.stderr, str(CNN), "an ONNX model", "optimize --json")
    assert "codec" not in proc.stderr and not page.exists()


@pytest.mark.parametrize(
    "extra",
    [["-O2"], ["--quantize", "int8", "--calib-random", "2"], ["--quantize", "int8-dynamic"], ["--precision", "fp16"]],
)
def test_external_data_auto_follows_the_input_file(extra: list[str], tmp_path: Path, capsys) -> None:
    """--external-data auto writes a data file when the input had one, for every pipeline: quantization and fp16
    replace every weight by a new array, and their output was written self-contained (the flag looked at the
    tensors, not at the file the model came from)."""
    src = tmp_path / "in" / "cnn.onnx"
    src.parent.mkdir()
    onnx.save(onnx.load(CNN), src, save_as_external_data=True, location="cnn.data",
              size_threshold=0)  # fmt: skip
    out = tmp_path / "out.onnx"
    code, _, err = _run(capsys, "optimize", str(src), "-o", str(out), "-q", *extra)
    assert code == 0, err
    assert (tmp_path / "out.onnx.data").is_file()
    assert any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(out, load_external_data=False).graph.initializer
    )
    code, _, err = _run(
        capsys, "optimize", str(src), "-o", str(tmp_path / "inline.onnx"), "-q", "--external-data", "no", *extra
    )
    assert code == 0 and not (tmp_path / "inline.onnx.data").exists()


def test_report_never_overwrites_its_json(tmp_path: Path, capsys) -> None:
    """graphopt report r.json -o r.json replaced the JSON with the page (an overwritten input)."""
    src = tmp_path / "r.json"
    src.write_text('{"passes": []}')
    code, _, err = _run(capsys, "report", str(src), "-o", str(src))
    _one_line_error(code, err, "would overwrite its input")
    assert src.read_text() == '{"passes": []}'


def test_cli_calibration_reaches_the_quantize_pass_in_passes(calib: Path, tmp_path: Path, capsys) -> None:
    """--passes with the quantize-int8 pass takes --calib-data (or --calib-random) as the API's calibration=: it was
    refused ('--calib-data needs --quantize ...'), and without it the error spoke of optimize(..., calibration=)."""
    out = tmp_path / "q.onnx"
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(out), "-q", "--passes",
                        "cleanup,quantize-int8{method=minmax}", "--calib-data", str(calib))  # fmt: skip
    assert code == 0, err
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(out).graph.node}
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "p.onnx"), "--passes", "cleanup",
                        "--calib-data", str(calib))  # fmt: skip
    _one_line_error(code, err, "--calib-data needs", "the quantize-int8 pass")
