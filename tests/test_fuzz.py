"""The fuzz suite: mutants of the fixtures through ``graphopt optimize`` (-O2, -O3, --quantize int8) and the Python API
must end in exit 0 with a model the checker and onnxruntime accept (and that matches the mutant's own outputs where
onnxruntime ran it), or in exit 2 with one line; never a traceback, a signal, a hang or unbounded memory.

The harness is :mod:`graphopt.testing.fuzz`; ``benchmarks/fuzz.py`` runs it for longer. A failure lists each failing
mutant; rerun one with ``python benchmarks/fuzz.py --seed S --index I --keep DIR`` (DIR gets the mutant's files, the
stderr of each run and the verifier's log).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphopt.testing import fuzz

pytestmark = pytest.mark.fuzz

SEED = 0
COUNT = 40  # mutants per CI run: about a minute with two jobs on a 2-core machine
BUDGET = 90.0  # seconds after which no new mutant starts
CI_LIMITS = fuzz.Limits(timeout=45.0, address_space=4 << 30, peak_rss=1 << 30)


def test_mutants_are_deterministic_and_varied():
    first = [fuzz.make_mutant(SEED, i) for i in range(40)]
    again = [fuzz.make_mutant(SEED, i) for i in range(40)]
    assert [(m.model, m.files, m.cwd_files, m.mutations) for m in first] == [
        (m.model, m.files, m.cwd_files, m.mutations) for m in again
    ]
    assert len({m.model for m in first}) == 40
    assert fuzz.make_mutant(SEED + 1, 0).model != first[0].model
    kinds = {w.split()[0] for m in first for w in m.mutations}
    assert len(kinds) >= 10, kinds
    assert any(m.files for m in first), "no mutant with external data"
    assert all(m.model != fuzz._fixture_bytes(m.fixture) for m in first if m.mutations)


def test_child_limits_timeout_signal_and_memory(tmp_path):
    # Only the hang is timed out short; the other children get a generous limit, since on a loaded 2-core CI machine
    # starting Python and touching 300 MiB can take over a second (a 1 s limit failed CI once that way).
    env = dict(os.environ)
    run = lambda code, timeout=60.0: fuzz.run_child(  # noqa: E731
        [sys.executable, "-c", code], cwd=tmp_path, env=env, limits=fuzz.Limits(timeout=timeout, address_space=1 << 30),
        log=tmp_path / "err.txt",
    )  # fmt: skip
    rc, seconds, _, _ = run("import time; time.sleep(30)", timeout=1.0)
    assert rc is None and seconds < 10
    rc, *_ = run("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert rc == -11
    rc, _, peak, _ = run("b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096])")
    assert rc == 0 and peak >= 300 << 20
    rc, _, peak, err = run("b = bytearray(2 << 30)")
    assert rc == 1 and "MemoryError" in err and peak < 1 << 30


def _pending(root: Path, command: str, model: onnx.ModelProto) -> fuzz.Run:
    (root / f"out_{command}").mkdir()
    onnx.save(model, root / f"out_{command}" / fuzz.MODEL)
    run = fuzz.Run(command, [])
    run.verdict = "pending"
    return run


def _perturbed(model: onnx.ModelProto) -> onnx.ModelProto:
    wrong = onnx.ModelProto()
    wrong.CopyFrom(model)
    t = next(t for t in wrong.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) > 1)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.5 + 0.1, t.name))
    return wrong


def test_oracle_compares_outputs_only_when_onnxruntime_ran_the_mutant(tmp_path):
    original = onnx.load(fuzz.REPO / "fixtures" / "cnn.onnx")
    mutant = fuzz.Mutant(SEED, 0, "fixtures/cnn.onnx", [], original.SerializeToString())
    root = tmp_path / "ran"
    fuzz.write_mutant(mutant, root)
    same, wrong, quant = _pending(root, "O2", original), _pending(root, "api", _perturbed(original)), None
    quant = _pending(root, "quant", _perturbed(original))
    reference = fuzz._verify(mutant, root, [same, wrong, quant], fuzz.Limits(), dict(os.environ))
    assert reference == "ran"
    assert (same.verdict, wrong.verdict, quant.verdict) == ("ok", "differs", "ok"), (wrong.detail, quant.detail)
    assert wrong.failed() and not same.failed()

    # an original that onnxruntime cannot run (an unknown op) gives no reference: the outputs are not compared
    broken = onnx.ModelProto()
    broken.CopyFrom(original)
    broken.graph.node[0].op_type = "NoSuchOp"
    mutant = fuzz.Mutant(SEED, 1, "fixtures/cnn.onnx", ["unknown op"], broken.SerializeToString())
    root = tmp_path / "not-ran"
    fuzz.write_mutant(mutant, root)
    wrong = _pending(root, "O2", _perturbed(original))
    reference = fuzz._verify(mutant, root, [wrong], fuzz.Limits(), dict(os.environ))
    assert reference.startswith("no-session")
    assert wrong.verdict == "ok-unverified" and not wrong.failed()


def test_oracle_end_to_end_on_an_unmutated_fixture_and_cleanup(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(fuzz, "make_mutant", lambda seed, index: fuzz.Mutant(
        seed, index, "fixtures/dynamic.onnx", [], fuzz._fixture_bytes("fixtures/dynamic.onnx")))  # fmt: skip
    result = fuzz.run_one(SEED, 0, limits=CI_LIMITS)
    assert result.reference == "ran"
    assert {r.command: r.verdict for r in result.runs} == {"O2": "ok", "O3": "ok", "quant": "ok", "api": "ok"}
    assert all(0 < r.peak_rss < CI_LIMITS.peak_rss for r in result.runs)
    assert list(tmp_path.iterdir()) == []  # the mutant's folder is gone


@pytest.mark.slow
def test_fuzz_campaign_has_no_failures(tmp_path):
    start = time.monotonic()
    results = fuzz.run_campaign(
        SEED, list(range(COUNT)), jobs=2, seconds=BUDGET, limits=CI_LIMITS, keep=tmp_path / "failures"
    )
    elapsed = time.monotonic() - start
    assert len(results) >= min(COUNT, 8), f"only {len(results)} mutants ran in {elapsed:.0f} s"
    lines = [fuzz.format_failure(r, run) for r in results for run in r.failures]
    repro = f"python benchmarks/fuzz.py --seed S --index I --keep DIR; this run's mutants are in {tmp_path}/failures"
    assert not lines, f"{len(lines)} failing run(s) over {len(results)} mutants (rerun one: {repro}):\n" + "\n".join(
        lines
    )


def test_benchmark_reruns_one_mutant_and_keeps_its_folder(tmp_path):
    script = fuzz.REPO / "benchmarks" / "fuzz.py"
    argv = [
        sys.executable,
        str(script),
        "--seed",
        str(SEED),
        "--index",
        "1",
        "--commands",
        "O2",
        "--keep",
        str(tmp_path),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "clean-error" in done.stdout and "0 distinct failure signature(s)" in done.stdout
    kept = tmp_path / f"{SEED}-1"
    assert (kept / "in" / fuzz.MODEL).read_bytes() == fuzz.make_mutant(SEED, 1).model
    assert "O2: clean-error" in (kept / "mutant.txt").read_text()
    assert not (tmp_path / ".keep-all").exists()
