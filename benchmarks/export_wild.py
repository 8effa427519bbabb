"""Random-weight exports of architectures no wheel ships (issue 16): the ``"export"`` entries of benchmarks/corpus.py.

    pip install -r benchmarks/requirements-exports.txt     # torch 2.13.0 CPU must already be installed
    python benchmarks/corpus.py export [--only NAME,..]     # or: python benchmarks/export_wild.py [--only NAME,..]

Each recipe builds an architecture from its package (torchvision, timm, ultralytics from its yaml, transformers from a
config class) with random, seeded weights: nothing is downloaded (``weights=None``, ``pretrained=False``, ultralytics'
``DetectionModel("yolov8n.yaml")``). As in benchmarks/export_models.py (whose ``randomize_norms`` this reuses), every
BatchNorm/LayerNorm scale and shift is drawn at random and the BatchNorm statistics are calibrated on random batches,
so the numerics are not trivial. The model goes to ``benchmarks/models/exports/NAME/model.onnx`` with an
``export.json`` beside it (recipe, package versions, sha256): ``corpus.is_cached`` accepts the file only when that
record matches the entry's pins. Each file is checked with ``onnx.checker`` and against torch in onnxruntime on the
entry's own inputs (``corpus.feeds``).

Only the architectures are used; the ONNX files are made here and not redistributed (ultralytics is AGPL-3.0).

torchvision's PyPI wheel for Linux is built against CUDA torch: with the CPU torch its C++ ops do not load and
``import torchvision`` fails on ``torchvision::nms``. ``_torchvision`` then defines that op (and ``qnms``) with a plain
torch greedy NMS, which the exporter maps to ONNX NonMaxSuppression through torchvision's own symbolic.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import export_models  # noqa: E402

SEED = export_models.SEED


@dataclass
class Recipe:
    """What to export: the module (one tensor or a tuple out), the calibration module for the BatchNorm statistics,
    input names and dynamic axes, the exporter and its opset."""

    module: Any
    calib: Any  # export_models.Built whose module's norms are randomized/calibrated (shares the export module's)
    input_names: list[str]
    output_names: list[str]
    opset: int
    exporter: str = "torchscript"  # or "dynamo"
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    config: str = ""


_TV_LIB: list[Any] = []  # keeps the torch.library.Library of the shim alive


def _nms(dets: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy non-maximum suppression, as torchvision's CPU kernel: indices by decreasing score."""
    import torch

    order = torch.argsort(scores, descending=True, stable=True)
    boxes = dets[order]
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        suppressed |= inter / (areas[i] + areas - inter) > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]


def _has_ops() -> bool:  # a def, not a lambda: torchvision's batched_nms is scripted when traced
    return True


def _torchvision() -> Any:
    """``import torchvision``; when its C++ ops cannot load (the CUDA wheel beside CPU torch), define nms first."""
    import torch

    if not _TV_LIB:
        try:
            import torchvision.extension as ext  # loads _C when it can
        except RuntimeError:
            ext = None
        if ext is None or not ext._has_ops():
            for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
                del sys.modules[mod]  # a half-done import
            lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.impl("nms", _nms, "CPU")
            _TV_LIB.append(lib)
            import torchvision.extension as ext

            ext._has_ops = _has_ops  # nms only: the recipes here use no other torchvision op
        else:
            _TV_LIB.append(None)
    import torchvision

    return torchvision


def _image_built(module: Any, size: int) -> export_models.Built:
    """A Built for ``export_models.randomize_norms``: ``module(pixel_values=...)`` at ``size``."""
    return export_models.Built(module, "", image_size=size)


def _wrap(fn: Callable[..., Any]) -> Any:
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self, owner: torch.nn.Module) -> None:
            super().__init__()
            self.owner = owner

        def forward(self, pixel_values: torch.Tensor) -> Any:
            return fn(self.owner, pixel_values)

    return Wrapped


# ------------------------------------------------------------------------------------------------------------ recipes


def ssdlite320() -> Recipe:
    tv = _torchvision()
    net = tv.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    # the calibration pass: backbone + head in train mode (the detector's own train-mode forward wants targets)
    calib = _wrap(lambda o, x: o.head(list(o.backbone(x).values()))["cls_logits"])(net)
    module = _wrap(lambda o, x: tuple(o(x)[0].values()))(net)  # batch 1: boxes, scores, labels
    return Recipe(
        module,
        _image_built(calib, 320),
        ["images"],
        ["boxes", "scores", "labels"],
        opset=17,
        dynamic={"images": {2: "height", 3: "width"}, "boxes": {0: "n"}, "scores": {0: "n"}, "labels": {0: "n"}},
        config="torchvision ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)",
    )


def _segmentation(builder: str) -> Recipe:
    tv = _torchvision()
    net = getattr(tv.models.segmentation, builder)(weights=None, weights_backbone=None, num_classes=21)
    module = _wrap(lambda o, x: o(x)["out"])(net)
    return Recipe(
        module,
        _image_built(module, 128),
        ["input"],
        ["out"],
        opset=17,
        dynamic={"input": {2: "height", 3: "width"}, "out": {2: "height", 3: "width"}},
        config=f"torchvision {builder}(weights=None, weights_backbone=None, num_classes=21)",
    )


def deeplabv3() -> Recipe:
    return _segmentation("deeplabv3_mobilenet_v3_large")


def lraspp() -> Recipe:
    return _segmentation("lraspp_mobilenet_v3_large")


def _timm(name: str, opset: int, exporter: str, size: int = 224) -> Recipe:
    _torchvision()
    import timm

    net = timm.create_model(name, pretrained=False, num_classes=1000)
    module = _wrap(lambda o, x: o(x))(net)
    dynamic = {"input": {0: "batch"}, "logits": {0: "batch"}}
    return Recipe(
        module,
        _image_built(module, size),
        ["input"],
        ["logits"],
        opset=opset,
        exporter=exporter,
        dynamic=dynamic,
        config=f"timm create_model({name!r}, pretrained=False)",
    )


def efficientnet_b0() -> Recipe:
    return _timm("efficientnet_b0", 17, "torchscript")


def convnext_atto() -> Recipe:
    return _timm("convnext_atto", 20, "dynamo")


def mobilevit_xxs() -> Recipe:
    return _timm("mobilevit_xxs", 19, "dynamo", size=256)


def yolov8n() -> Recipe:
    _torchvision()
    from ultralytics.nn.tasks import DetectionModel

    net = DetectionModel("yolov8n.yaml", ch=3, nc=80, verbose=False)
    calib = _wrap(lambda o, x: o(x))(net)  # train mode: the raw head outputs (ignored)
    detect = net.model[-1]
    detect.export, detect.format = True, "onnx"  # as ultralytics' exporter: one [1, 84, anchors] output

    def forward(o: Any, x: Any) -> Any:
        return o(x)

    module = _wrap(forward)(net)
    recipe = Recipe(
        module,
        _image_built(calib, 320),
        ["images"],
        ["output0"],
        opset=19,
        config="ultralytics DetectionModel('yolov8n.yaml', nc=80), Conv+BN fused as its exporter does",
    )
    recipe.fuse = True  # type: ignore[attr-defined]
    return recipe


def _causal_lm(config: Any, cls: Any, opset: int, exporter: str, text: str) -> Recipe:
    import torch

    net = cls(config)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids, use_cache=False).logits

    module = Logits()
    built = export_models.Built(module, "", vocab_size=config.vocab_size, max_seq=64)
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    return Recipe(module, built, ["input_ids"], ["logits"], opset, exporter, dynamic, text)


def gpt2() -> Recipe:
    import transformers as tf

    kw = dict(vocab_size=50257, n_positions=256, n_embd=128, n_layer=4, n_head=4)
    config = tf.GPT2Config(**kw, attn_implementation="eager")
    shown = ", ".join(f"{k}={v}" for k, v in kw.items())
    return _causal_lm(config, tf.GPT2LMHeadModel, 18, "dynamo", f"transformers GPT2LMHeadModel({shown})")


def llama() -> Recipe:
    import transformers as tf

    kw = dict(
        vocab_size=32000,
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    config = tf.LlamaConfig(**kw, attn_implementation="eager")
    shown = ", ".join(f"{k}={v}" for k, v in kw.items())
    return _causal_lm(config, tf.LlamaForCausalLM, 21, "dynamo", f"transformers LlamaForCausalLM({shown}), GQA")


RECIPES: dict[str, Callable[[], Recipe]] = {
    "ssdlite320_mobilenet_v3_large": ssdlite320,
    "deeplabv3_mobilenet_v3_large": deeplabv3,
    "lraspp_mobilenet_v3_large": lraspp,
    "timm-efficientnet_b0": efficientnet_b0,
    "timm-convnext_atto": convnext_atto,
    "timm-mobilevit_xxs": mobilevit_xxs,
    "yolov8n": yolov8n,
    "gpt2": gpt2,
    "llama-gqa": llama,
}


# ------------------------------------------------------------------------------------------------------------- export


def versions(entry: dict) -> dict[str, str]:
    """The installed versions of the packages the entry pins (``requires``)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in entry["requires"]:
        try:
            out[package] = version(package).split("+")[0]
        except PackageNotFoundError:
            out[package] = "missing"
    return out


def build(entry: dict) -> Recipe:
    import torch

    _torchvision()  # timm, ultralytics and transformers import torchvision
    torch.manual_seed(SEED)
    recipe = RECIPES[entry["export"]]()
    export_models.randomize_norms(recipe.calib)
    recipe.module.eval()
    if getattr(recipe, "fuse", False):
        recipe.module.owner.fuse(verbose=False)
    return recipe


def _export(recipe: Recipe, example: tuple, path: Path) -> None:
    import torch

    with torch.no_grad(), export_models._quiet():
        if recipe.exporter == "torchscript":
            torch.onnx.export(
                recipe.module,
                example,
                str(path),
                input_names=recipe.input_names,
                output_names=recipe.output_names,
                dynamic_axes=recipe.dynamic or None,
                opset_version=recipe.opset,
                do_constant_folding=True,
                dynamo=False,
            )
            return
        dims: dict[str, Any] = {}
        shapes: dict[str, dict[int, Any]] = {}
        traced = []
        for name, x in zip(recipe.input_names, example, strict=True):
            shapes[name] = {}
            for axis, dim in recipe.dynamic.get(name, {}).items():
                shapes[name][axis] = dims.setdefault(dim, torch.export.Dim(dim, min=1, max=1024))
                if x.shape[axis] == 1:  # torch.export specializes a dynamic dim traced at size 1
                    x = torch.cat([x, x], axis)
            traced.append(x)
        example = tuple(traced)
        program = torch.onnx.export(
            recipe.module,
            example,
            input_names=recipe.input_names,
            output_names=recipe.output_names,
            dynamic_shapes=tuple(shapes[n] for n in recipe.input_names),  # positional: forward's names differ
            opset_version=recipe.opset,
            dynamo=True,
            optimize=True,
        )
        program.save(str(path), external_data=False)
    export_models._drop_stack_traces(path)


# ------------------------------------------------------------------------------------------------------------ derive
# Entries with "base": a real corpus model (pinned sha256) turned into another form by onnxruntime's own tools, for the
# forms no wheel was found to ship (issue 16): static QDQ and QOperator models (quantize_static, calibrated on the base
# model's real inputs where the corpus has them, else on its noise feeds, seeds 100-107) and fp16 weights
# (onnxruntime.transformers.float16, inputs and outputs kept float32). "quant_pre_process" first runs onnxruntime's
# recommended pre-processing (symbolic shapes, basic optimizations: BatchNorm folded, Constant nodes to initializers).
DERIVE: dict[str, dict[str, Any]] = {
    "ort-qdq": {"format": "QDQ", "per_channel": False, "pre": False},
    "ort-qdq-pc-pre": {"format": "QDQ", "per_channel": True, "pre": True},
    "ort-qoperator": {"format": "QOperator", "per_channel": False, "pre": False},
    "ort-fp16": {"float16": True},
    # no wheel found ships a model with Scan: scikit-learn estimators whose skl2onnx converters emit one (pairwise
    # distances), fitted on the diabetes data the scikit-learn wheel ships (442 patients x 10 standardized features)
    "skl2onnx-knn": {"sklearn": "knn"},
    "skl2onnx-gpr": {"sklearn": "gpr"},
}


def _sklearn(kind: str, tmp: Path, opset: int) -> tuple[str, Callable[[dict], list]]:
    import numpy as np
    import onnx
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.neighbors import KNeighborsRegressor

    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    kernel = ConstantKernel() * RBF(length_scale=0.1) + WhiteKernel()
    est = KNeighborsRegressor(n_neighbors=5) if kind == "knn" else GaussianProcessRegressor(kernel, normalize_y=True)
    est.fit(x, y)
    onnx.save(to_onnx(est, x[:1], target_opset=opset), str(tmp))
    return f"{type(est).__name__} fitted on sklearn.datasets.load_diabetes, to_onnx(target_opset={opset})", (
        lambda feeds: [est.predict(next(iter(feeds.values()))).reshape(-1, 1)]
    )


def _toposort(graph: Any) -> None:
    """Order ``graph.node`` so that every node comes after the producers of its inputs (stable otherwise)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    nodes, order = list(graph.node), []
    while nodes:
        rest = []
        for n in nodes:
            if all(x in ready for x in n.input):
                order.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(nodes):
            raise RuntimeError("the graph has a cycle or an input nothing produces")
        nodes = rest
    graph.ClearField("node")
    graph.node.extend(order)


def _calibration(base: dict, n: int = 8) -> list[dict]:
    import corpus

    if "real" in base:
        return corpus.real_feeds(base, "calib", n)
    return [corpus.feeds(base, seed=100 + i) for i in range(n)]


def derive(entry: dict, tmp: Path) -> tuple[str, Callable[[dict], list] | None]:
    """Write the model of a DERIVE entry to ``tmp``; returns the config string for export.json and, for the models
    without a base, the reference it is checked against (the base model under onnxruntime otherwise)."""
    import corpus
    import onnx

    how = DERIVE[entry["export"]]
    if "sklearn" in how:
        return _sklearn(how["sklearn"], tmp, entry["opset"])
    base = corpus.BY_NAME[entry["base"]]
    src = corpus.model_path(base)
    if not corpus.is_cached(base) and corpus.fetch([base]):
        raise RuntimeError(f"{entry['name']}: its base model {base['name']} could not be fetched")
    if how.get("float16"):
        from onnxruntime.transformers.float16 import convert_float_to_float16

        m = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        _toposort(m.graph)  # the converter appends the input Casts after their readers
        onnx.save(m, str(tmp))
        return f"{base['name']}: onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)", None
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, feeds: list[dict]) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    calib = _calibration(base)
    model_in = src
    if how["pre"]:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        model_in = tmp.with_name("pre.onnx")
        quant_pre_process(str(src), str(model_in))
    with export_models._quiet():
        quantize_static(
            str(model_in),
            str(tmp),
            Reader(calib),
            quant_format=getattr(QuantFormat, how["format"]),
            per_channel=how["per_channel"],
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    if model_in != src:
        model_in.unlink()
    kind = "real" if "real" in base else "noise"
    return (
        f"{base['name']}: {'quant_pre_process + ' if how['pre'] else ''}quantize_static({how['format']}, "
        f"per_channel={how['per_channel']}, U8 activations, S8 weights, MinMax on {len(calib)} {kind} inputs)"
    ), None


def export_entry(entry: dict, path: Path) -> dict:
    """Build, export to ``path`` (with export.json beside it), check against torch; returns the record.
    A derived entry ("base") is made from its base model instead and checked against it (SQNR printed)."""
    import corpus
    import numpy as np
    import onnx
    import onnxruntime as ort

    found = versions(entry)
    wrong = {p: (v, entry["requires"][p]) for p, v in found.items() if v != entry["requires"][p]}
    if wrong:
        got = ", ".join(f"{p} {v} (pinned {want})" for p, (v, want) in wrong.items())
        raise RuntimeError(f"{entry['name']}: {got}; pip install -r benchmarks/requirements-exports.txt")
    if entry["export"] in DERIVE:
        return _finish_derived(entry, path)
    import torch

    t0 = time.perf_counter()
    recipe = build(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    # trace at the entry's input sizes (the torchscript exporter keeps the example's shapes where no axis is dynamic)
    example = tuple(_example(entry))
    _export(recipe, example, tmp)
    seconds = time.perf_counter() - t0
    onnx.checker.check_model(str(tmp))
    feeds = corpus.feeds(entry, seed=1, path=tmp)
    with torch.no_grad():
        ref = recipe.module(*(torch.from_numpy(feeds[n]) for n in recipe.input_names))
    refs = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    got = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"]).run(None, feeds)
    diffs = []
    for r, g in zip(refs, got, strict=True):
        if r.shape != g.shape:
            raise RuntimeError(f"{entry['name']}: onnxruntime output shape {g.shape} != torch {r.shape}")
        diffs.append(float(np.abs(r.astype(np.float64) - g).max()) if r.size else 0.0)
        scale = float(np.abs(r).max()) if r.size else 0.0
        if diffs[-1] > 1e-3 * max(1.0, scale):
            print(f"WARNING: {entry['name']}: onnxruntime differs from torch by {diffs[-1]:.3g} (|out| {scale:.3g})")
    tmp.replace(path)
    return _record(entry, path, found, seconds, {"max_abs_vs_torch": max(diffs)}, recipe.config)


def _finish_derived(entry: dict, path: Path) -> dict:
    import corpus
    import numpy as np
    import onnx
    import onnxruntime as ort

    found = versions(entry)
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    config, reference = derive(entry, tmp)
    seconds = time.perf_counter() - t0
    onnx.checker.check_model(str(tmp))
    feeds = corpus.feeds(entry, seed=1, path=tmp)
    options = ort.SessionOptions()
    options.log_severity_level = 3

    def run(p: Path) -> list:
        return ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]).run(None, feeds)

    if reference is None:
        reference = lambda _: run(corpus.model_path(corpus.BY_NAME[entry["base"]]))  # noqa: E731
    sqnr = []
    for r, g in zip(reference(feeds), run(tmp), strict=True):
        r, g = r.astype(np.float64), g.astype(np.float64)
        noise = float(np.sum((r - g) ** 2))
        sqnr.append(round(float(10 * np.log10(np.sum(r**2) / noise)), 1) if noise > 0 else float("inf"))
    tmp.replace(path)
    return _record(entry, path, found, seconds, {"sqnr_db_vs_reference": sqnr}, config)


def _record(entry: dict, path: Path, found: dict, seconds: float, check: dict, config: str) -> dict:
    import corpus
    import onnx

    sha = corpus.sha256_file(path)
    m = onnx.load(str(path))
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    record = {
        "recipe": entry["export"],
        "requires": found,
        "sha256": sha,
        "bytes": path.stat().st_size,
        "opset": opset,
        "nodes": len(m.graph.node),
        "export_s": round(seconds, 1),
        **check,
        "config": config,
    }
    (path.parent / "export.json").write_text(json.dumps(record, indent=1) + "\n")
    if sha != entry.get("sha256"):
        print(f"note: {entry['name']}: sha256 {sha[:12]} differs from the entry's {str(entry.get('sha256'))[:12]}")
    if opset != entry["opset"]:
        print(f"WARNING: {entry['name']}: opset {opset}, the entry says {entry['opset']}")
    return record


def _example(entry: dict) -> list[Any]:
    """The example inputs the exporter traces with: the entry's own spec (seed 0), in the entry's input order."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    out = []
    for shape, gen, *args in entry["inputs"].values():
        if gen == "ids":
            out.append(torch.from_numpy(rng.integers(args[0], args[1], size=shape)).to(torch.long))
        elif gen == "uniform":
            out.append(torch.from_numpy(rng.uniform(args[0], args[1], size=shape).astype(np.float32)))
        else:
            out.append(torch.from_numpy((rng.standard_normal(size=shape) * (args[0] if args else 1)).astype("f4")))
    return out


def export_all(entries: list[dict]) -> list[str]:
    """Export the entries not already cached; returns the names that failed (a message printed for each)."""
    import corpus

    failed = []
    for e in entries:
        if corpus.is_cached(e):
            print(f"  cached  {e['name']}")
            continue
        try:
            rec = export_entry(e, corpus.model_path(e))
        except Exception as exc:  # noqa: BLE001 - one failing export must not stop the others
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), repr(exc))
            print(f"  FAILED  {e['name']}: {type(exc).__name__}: {first[:300]}", file=sys.stderr)
            failed.append(e["name"])
            continue
        check = (
            f"SQNR vs {e.get('base', 'scikit-learn')} {rec['sqnr_db_vs_reference']} dB"
            if "sqnr_db_vs_reference" in rec
            else f"max |ort - torch| {rec['max_abs_vs_torch']:.2g}"
        )
        print(
            f"  exported {e['name']}: opset {rec['opset']}, {rec['nodes']} nodes, {rec['bytes'] / 1e6:.1f} MB, "
            f"{rec['export_s']:.0f} s, {check}, sha256 {rec['sha256']}",
            flush=True,
        )
    return failed


def main(argv: list[str] | None = None) -> int:
    import corpus

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", help="comma-separated entry names (default: every export entry)")
    a = ap.parse_args(argv)
    entries = [e for e in corpus.select(a.only) if "export" in e]
    failed = export_all(entries)
    print(f"{len(entries) - len(failed)}/{len(entries)} exports in {corpus.EXPORTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
