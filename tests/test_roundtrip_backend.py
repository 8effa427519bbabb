"""Load -> save with no pass must be lossless on every ONNX backend test model, and compute exactly the same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import graphopt
from tests.backend_cases import backend_cases

CASES = backend_cases()


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 4
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _feeds(sess: ort.InferenceSession, inputs: tuple) -> dict:
    names = [i.name for i in sess.get_inputs()]
    return {n: v for n, v in zip(names, inputs, strict=False) if v is not None}


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(float16)": np.float16,
}


def _random_feeds(sess: ort.InferenceSession) -> dict:
    rng = np.random.default_rng(0)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = rng.standard_normal(shape).astype(_ORT_TYPES[i.type])
    return feeds


def run_original_or_skip(case, original: onnx.ModelProto) -> tuple[dict, list]:
    """The feeds for a backend case and onnxruntime's outputs on the original; skips the test if it cannot run."""
    try:
        sess = _session(original)
        feeds = _feeds(sess, case.inputs) if case.inputs is not None else _random_feeds(sess)
        return feeds, sess.run(None, feeds)
    except Exception:  # noqa: BLE001 - onnxruntime cannot run this original; nothing to compare
        pytest.skip("onnxruntime does not run the original model")


def _same(a: object, b: object) -> bool:
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if a is None or b is None:
        return a is b
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def test_case_count() -> None:
    # The issue names these sets; make sure none silently disappeared (e.g. a loader change).
    kinds = {c.kind for c in CASES}
    assert kinds == {"node", "simple", "pytorch-converted", "pytorch-operator", "light"}
    assert len(CASES) > 1600


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_roundtrip_is_lossless_and_runs_identically(case, tmp_path) -> None:
    original = case.load_proto()
    before = original.SerializeToString()
    model = graphopt.load(case.path if case.path else original)
    out = tmp_path / "model.onnx"
    graphopt.save(model, out)
    saved = onnx.load(str(out))
    assert original.SerializeToString() == before, "loading must not modify the caller's ModelProto"
    assert saved == original, "round-trip changed the protobuf"
    assert graphopt.to_proto(model) == original

    feeds, expected = run_original_or_skip(case, original)
    got = _session(str(out)).run(None, feeds)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert _same(g, e), f"output {i} differs after round-trip"
