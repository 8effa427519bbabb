"""The checked-in fixtures are what fixtures/make_fixtures.py builds, and they are valid, runnable models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import graphopt

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _maker():
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKER = _maker()


@pytest.mark.parametrize("name", sorted(MAKER.FIXTURES))
def test_fixture_is_up_to_date_and_small(name: str) -> None:
    path = FIXTURES / name
    assert path.exists(), f"run python fixtures/make_fixtures.py to create {name}"
    assert path.read_bytes() == MAKER.FIXTURES[name]().SerializeToString(), f"{name} is stale: regenerate it"
    assert path.stat().st_size < 1_000_000


@pytest.mark.parametrize("name", sorted(MAKER.FIXTURES))
def test_fixture_checks_and_round_trips(name: str, tmp_path: Path) -> None:
    path = FIXTURES / name
    onnx.checker.check_model(str(path), full_check=True)
    out = tmp_path / name
    graphopt.save(graphopt.load(path), out)
    assert onnx.load(str(out)) == onnx.load(str(path))
    feeds = graphopt_feeds(path)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    a = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    b = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def graphopt_feeds(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    model = onnx.load(str(path))
    feeds = {}
    for i in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else 3 for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds
