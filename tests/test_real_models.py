"""-O1/-O2 on real exported architectures (fixtures/real: tiny configs of transformers ResNet, MobileNetV2,
EfficientNet, ConvNeXt, ViT, BERT and two plain-torch nets, from both torch exporters).

Each optimized model must reproduce torch's own output (stored beside the model, computed at a batch and sequence
length other than the traced ones, so the symbolic dims are exercised), keep standard-domain ops only, not grow, and
leave no more nodes than the best of onnxsim, onnxslim, onnxoptimizer and onnxruntime's basic level did on the same
file (``ANCHOR_BEST``, measured with ``benchmarks/anchors.py --models fixtures/real/...``; regenerate both together).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import graphopt

REAL = Path(__file__).resolve().parent.parent / "fixtures" / "real"
MODELS = sorted(REAL.glob("*.onnx"))

# Fewest nodes any anchor left (onnxsim 0.8.1, onnxslim 0.1.98, onnxoptimizer, onnxruntime 1.32 basic).
ANCHOR_BEST = {
    "bert.dynamo.onnx": 108,
    "bert.ts.onnx": 133,
    "concatnet.dynamo.onnx": 84,
    "concatnet.ts.onnx": 84,
    "convnext.dynamo.onnx": 84,
    "convnext.ts.onnx": 84,
    "efficientnet.dynamo.onnx": 104,
    "efficientnet.ts.onnx": 104,
    "mobilenetv2.dynamo.onnx": 101,
    "mobilenetv2.ts.onnx": 101,
    "resnet18.dynamo.onnx": 29,
    "resnet18.ts.onnx": 29,
    "resnet50.dynamo.onnx": 38,
    "resnet50.ts.onnx": 38,
    "vgg.dynamo.onnx": 27,
    "vgg.ts.onnx": 27,
    "vit.dynamo.onnx": 80,
    "vit.ts.onnx": 103,
}


def _io(path: Path) -> dict[str, np.ndarray]:
    with np.load(REAL / f"{path.name.split('.')[0]}.io.npz") as data:
        return {k: data[k] for k in data.files}


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]


def test_every_model_has_a_recorded_anchor_count() -> None:
    assert MODELS and sorted(ANCHOR_BEST) == [p.name for p in MODELS]


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_optimized_real_model_matches_torch(path: Path, level: int) -> None:
    io = _io(path)
    model = onnx.load(str(path))
    out = graphopt.optimize(model, level=level)
    onnx.checker.check_model(out)
    np.testing.assert_allclose(_run(out, io), io["output"], rtol=1e-4, atol=2e-5)
    # standard ops only, but for onnxruntime's Gelu that fuse-gelu writes for target ort below opset 20
    ort_gelu = ("com.microsoft", "Gelu")
    assert all(n.domain in ("", "ai.onnx") or (n.domain, n.op_type) == ort_gelu for n in out.graph.node)
    assert out.ByteSize() <= model.ByteSize()
    assert len(out.graph.node) <= len(model.graph.node)
    if level == 2:
        assert len(out.graph.node) <= ANCHOR_BEST[path.name]
