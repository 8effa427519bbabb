"""--verify / optimize(verify=True): a pass that changes the outputs is named, undone, and the run goes on;
--strict stops with exit code 1 and writes nothing; correct passes are kept and the cost is reported."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest

import graphopt
from graphopt.cli import main
from graphopt.errors import VerificationError
from graphopt.testing import assert_models_close
from tests.test_graphsurgeon import _model  # x -> Identity -> Relu -> Identity -> y
from tests.test_passes_infra import install_fake_plugin

BROKEN_PLUGIN = """
from graphopt import Pass

class ReluToNeg(Pass):
    name = "test-relu-to-neg"
    description = "turns Relu into Neg: wrong on purpose"

    def run(self, graph, ctx):
        changed = False
        for node in graph:
            if node.op_type == "Relu":
                node.op_type = "Neg"
                changed = True
        return changed
"""


@pytest.fixture(autouse=True)
def _wrong_pass(pass_registry: None) -> None:
    ns: dict = {}
    exec(BROKEN_PLUGIN, ns)  # noqa: S102 - the same pass the plugin test installs as a package
    graphopt.register_pass("test-relu-to-neg")(ns["ReluToNeg"])


def test_wrong_pass_is_undone_and_named(caplog: pytest.LogCaptureFixture) -> None:
    model = _model()
    report: list = []
    with caplog.at_level(logging.WARNING, logger="graphopt"):
        out = graphopt.optimize(model, passes="test-relu-to-neg,cleanup", verify=True, report=report)
    assert report[0].reverted == ["test-relu-to-neg"]
    assert report[0].verified >= 2 and report[0].verify_seconds > 0
    assert "test-relu-to-neg" in caplog.text
    assert [n.op_type for n in out.graph.node] == ["Relu"]  # cleanup still ran after the undo
    assert_models_close(model, out, rtol=0, atol=0)


def test_strict_raises() -> None:
    with pytest.raises(VerificationError, match="test-relu-to-neg"):
        graphopt.optimize(_model(), passes="test-relu-to-neg", strict=True)


def test_correct_pipeline_is_verified_and_kept() -> None:
    report: list = []
    out = graphopt.optimize(_model(), level=2, verify=True, report=report)
    assert report[0].reverted == [] and report[0].verified >= 1
    assert [n.op_type for n in out.graph.node] == ["Relu"]


def test_cli_verify_and_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "m.onnx"
    onnx.save(_model(), str(src))
    out = tmp_path / "out.onnx"
    assert (
        main(["optimize", str(src), "-o", str(out), "--passes", "test-relu-to-neg,cleanup", "--verify", "--json"]) == 0
    )
    assert '"reverted": [\n      "test-relu-to-neg"' in capsys.readouterr().out
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    assert_models_close(src, out, inputs={"x": x}, rtol=0, atol=0)
    strict_out = tmp_path / "strict.onnx"
    code = main(["optimize", str(src), "-o", str(strict_out), "--passes", "test-relu-to-neg", "--strict", "-q"])
    assert code == 1 and not strict_out.exists()
    assert "test-relu-to-neg" in capsys.readouterr().err


def test_verify_undoes_a_broken_entry_point_plugin(tmp_path: Path) -> None:
    """End to end: a plugin package (entry point ``graphopt.passes``) with a wrong rewrite, run by the CLI."""
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "bad_plugin.py").write_text(BROKEN_PLUGIN)
    install_fake_plugin(tmp_path, "bad_plugin", "swap = bad_plugin:ReluToNeg")
    src, out = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(_model(), str(src))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "graphopt", "optimize", str(src), *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

    done = cli("-o", str(out), "--passes", "test-relu-to-neg,cleanup", "--verify", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verify"]["reverted"] == ["test-relu-to-neg"]
    assert "test-relu-to-neg" in done.stderr  # the warning names it
    assert_models_close(src, out, rtol=0, atol=0)
    strict_out = tmp_path / "strict.onnx"
    stopped = cli("-o", str(strict_out), "--passes", "test-relu-to-neg", "--strict", "-q")
    assert stopped.returncode == 1 and not strict_out.exists() and "test-relu-to-neg" in stopped.stderr
