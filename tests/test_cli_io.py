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
