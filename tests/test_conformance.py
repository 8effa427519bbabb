"""-O2 on every ONNX backend test model that onnxruntime runs correctly: the optimized model still gives the expected
outputs (the ones shipped with the case, within the backend tests' own tolerance), with no crash."""

from __future__ import annotations

import numpy as np
import pytest

import graphopt
from tests.backend_cases import backend_cases
from tests.test_roundtrip_backend import _session, run_original_or_skip

CASES = backend_cases()
RTOL, ATOL = 1e-3, 1e-7  # what onnx.backend.test uses


def _close(got: object, exp: object) -> bool:
    if isinstance(exp, list | tuple):
        return isinstance(got, list | tuple) and len(got) == len(exp) and all(map(_close, got, exp))
    if isinstance(exp, dict):
        return isinstance(got, dict) and got.keys() == exp.keys() and all(_close(got[k], exp[k]) for k in exp)
    if exp is None or got is None:
        return exp is got
    g, e = np.asarray(got), np.asarray(exp)
    if g.shape != e.shape:
        return False
    if e.dtype.kind in "fc":
        return bool(np.allclose(g, e, rtol=RTOL, atol=ATOL, equal_nan=True))
    return bool(np.array_equal(g, e))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_o2_keeps_expected_outputs(case) -> None:
    original = case.load_proto()
    feeds, reference = run_original_or_skip(case, original)
    expected = list(case.outputs) if case.outputs is not None else reference
    if not _close(reference, expected):
        pytest.skip("onnxruntime does not reproduce the expected outputs of the original")
    optimized = graphopt.optimize(original, level=2)
    got = _session(optimized).run(None, feeds)
    assert _close(got, expected), "-O2 changed the outputs"
