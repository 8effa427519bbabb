"""Installed import names: only graphopt.* — the passes/ and kernels/ folders map to graphopt.passes/.kernels."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import importlib.util, graphopt, graphopt.passes, graphopt.kernels;"
    "assert importlib.util.find_spec('passes') is None, 'plain passes importable';"
    "assert importlib.util.find_spec('kernels') is None, 'plain kernels importable';"
    "assert 'dce' in graphopt.list_passes();"
    "print(graphopt.passes.__file__)"
)


def _probe(cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_current_install_exposes_only_graphopt_names(tmp_path: Path) -> None:
    # Run outside the checkout so the repository folder itself is not on sys.path.
    where = _probe(tmp_path)
    assert where.endswith(str(Path("passes") / "__init__.py"))


@pytest.mark.slow
def test_wheel_contains_only_graphopt_and_imports(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("graphopt-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"graphopt", next(t for t in tops if t.endswith(".dist-info"))}
    assert "graphopt/passes/__init__.py" in names and "graphopt/kernels/__init__.py" in names
    assert "graphopt/passes/cleanup.py" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta  # the SPDX string, not the deprecated table
    assert 'Requires-Dist: hypothesis>=6.100; extra == "testing"' in meta
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    import os

    env = dict(os.environ, PYTHONPATH=str(target))
    where = _probe(tmp_path, env)
    assert where.startswith(str(target)), where


def test_plain_optimize_does_not_import_numba(tmp_path: Path) -> None:
    """numba is for calibration and Winograd; importing it costs ~0.15 s that `graphopt optimize -O2` must not pay."""
    probe = (
        "import sys, graphopt.cli;"
        f"rc = graphopt.cli.main(['optimize', {str(ROOT / 'fixtures' / 'cnn.onnx')!r}, '-o', "
        f"{str(tmp_path / 'out.onnx')!r}, '--quiet']);"
        "assert rc == 0, rc;"
        "assert 'numba' not in sys.modules, 'numba imported'"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_pyproject_license_and_extras() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"  # a table is deprecated by setuptools
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in project["build-system"]["requires"])
    assert any(r.startswith("hypothesis") for r in project["project"]["optional-dependencies"]["testing"])
