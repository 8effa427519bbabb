"""Export real architectures with random (seeded) weights to ONNX, for benchmarks and tests. Nothing is downloaded.

    pip install torch==2.13.0 transformers onnxscript
    python benchmarks/export_models.py                       # full size, both exporters, into benchmarks/models/
    python benchmarks/export_models.py --tiny --out fixtures/real   # the small checked-in fixtures
    python benchmarks/export_models.py [--out DIR] [--only resnet50,bert] [--exporter torchscript|dynamo|both]
    python benchmarks/export_models.py --list

Models are ``transformers`` architectures built from their config classes (random init, ``torch.manual_seed(0)``
before each model) plus two plain-torch nets (VGG-style and a Concat-heavy DenseNet/Inception-style net), in eval
mode. Random init leaves BatchNormalization as an identity (mean 0, var 1, scale 1, shift 0) and lets activations
shrink towards zero (or blow up) through deep stacks; so, still seeded, every BatchNorm/LayerNorm scale and shift is
drawn at random and then each BatchNorm's running statistics are calibrated on a few random batches. Numeric checks
on these models therefore see non-trivial normalizations at a sane scale.

Inputs: image models take float ``pixel_values [batch, 3, H, W]`` (dynamic batch) and return logits; BERT takes
int64 ``input_ids``, ``attention_mask``, ``token_type_ids [batch, seq]`` (both dims dynamic) and returns
``last_hidden_state``. Each model is wrapped so the graph has exactly one output.

BatchNormalization stays unfolded in both exporters:

* torchscript (``dynamo=False``, opset 17): exported with ``training=TrainingMode.PRESERVE`` on a model in eval mode,
  which skips the exporter's eval-mode Conv+BN fold while BN keeps ``training_mode=0`` (running statistics), and
  constant folding of everything else stays on.
* dynamo (``dynamo=True``): the exporter's onnxscript optimizer runs as usual, minus its BatchNorm-fusion rewrite
  rules. Opset 18: the exporter builds opset 18 and its down-conversion to 17 fails on Pad and ReduceMean. The
  per-node ``pkg.torch.onnx.stack_trace`` metadata (local file paths) is dropped; the other node metadata stays.

Each file is checked with ``onnx.checker.check_model`` and run in onnxruntime at a batch (and sequence length) other
than the one it was traced with, against the torch model's own output. With ``--tiny`` the same architectures are
built at tiny configs (each file well under 1 MB), an ``<model>.io.npz`` with the check inputs and torch's output is
written beside them, and so is a README.md listing the files.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TS_OPSET = 17
DYNAMO_OPSET = 18
SEED = 0
EXPORTERS = ("torchscript", "dynamo")
SUFFIX = {"torchscript": "ts", "dynamo": "dynamo"}


@dataclass
class Built:
    """A model ready to export: the wrapped module and what its inputs look like."""

    module: Any  # torch.nn.Module returning a single tensor
    config: str  # architecture and config, for --list and the fixtures README
    image_size: int = 224  # image models
    vocab_size: int = 0  # > 0: a BERT-style text model
    max_seq: int = 0


# ----------------------------------------------------------------------------------------------------------- models


def _cfg(cls: type, **kwargs: Any) -> tuple[Any, str]:
    shown = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return cls(**kwargs), f"{cls.__name__}({shown})"


def _image_classifier(model_cls: type, config_cls: type, size: int, **kwargs: Any) -> Built:
    import torch

    config, text = _cfg(config_cls, **kwargs)
    inner = model_cls(config)

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.inner(pixel_values=pixel_values).logits

    return Built(Logits(), f"transformers {model_cls.__name__}, {text}; input {size}x{size}", image_size=size)


def resnet50(tiny: bool) -> Built:
    import transformers as tf

    if tiny:
        kw: dict[str, Any] = dict(hidden_sizes=[16, 32, 64, 128], embedding_size=8, depths=[1, 1, 1, 1], num_labels=10)
        return _image_classifier(tf.ResNetForImageClassification, tf.ResNetConfig, 64, layer_type="bottleneck", **kw)
    kw = dict(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], embedding_size=64, num_labels=1000)
    return _image_classifier(tf.ResNetForImageClassification, tf.ResNetConfig, 224, layer_type="bottleneck", **kw)


def resnet18(tiny: bool) -> Built:
    import transformers as tf

    if tiny:
        kw: dict[str, Any] = dict(hidden_sizes=[8, 16, 32, 64], embedding_size=8, depths=[1, 1, 1, 1], num_labels=10)
        return _image_classifier(tf.ResNetForImageClassification, tf.ResNetConfig, 64, layer_type="basic", **kw)
    kw = dict(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], num_labels=1000)
    return _image_classifier(tf.ResNetForImageClassification, tf.ResNetConfig, 224, layer_type="basic", **kw)


def mobilenetv2(tiny: bool) -> Built:
    import transformers as tf

    cls = tf.MobileNetV2ForImageClassification
    if tiny:
        kw: dict[str, Any] = dict(depth_multiplier=0.15, image_size=64, finegrained_output=False, num_labels=10)
        return _image_classifier(cls, tf.MobileNetV2Config, 64, **kw)
    return _image_classifier(cls, tf.MobileNetV2Config, 224, depth_multiplier=1.0, image_size=224, num_labels=1000)


def efficientnet(tiny: bool) -> Built:
    import transformers as tf

    cls = tf.EfficientNetForImageClassification
    if tiny:
        # hidden_dim must be round_filters(1280) at this width: 320.
        kw: dict[str, Any] = dict(width_coefficient=0.25, depth_coefficient=0.25, image_size=64, hidden_dim=320)
        return _image_classifier(cls, tf.EfficientNetConfig, 64, **kw, dropout_rate=0.2, num_labels=10)
    kw = dict(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, hidden_dim=1280, dropout_rate=0.2)  # B0
    return _image_classifier(cls, tf.EfficientNetConfig, 224, **kw, num_labels=1000)


def convnext(tiny: bool) -> Built:
    import transformers as tf

    cls = tf.ConvNextForImageClassification
    # layer_scale_init_value 0.1 instead of 1e-6: the same graph, but the residual branches are not ~0 at init.
    if tiny:
        kw: dict[str, Any] = dict(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 2, 1], image_size=64)
        return _image_classifier(cls, tf.ConvNextConfig, 64, **kw, layer_scale_init_value=0.1, num_labels=10)
    kw = dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3], image_size=224)  # ConvNeXt-T
    return _image_classifier(cls, tf.ConvNextConfig, 224, **kw, layer_scale_init_value=0.1, num_labels=1000)


def vit(tiny: bool) -> Built:
    import transformers as tf

    cls = tf.ViTForImageClassification
    if tiny:
        kw: dict[str, Any] = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        return _image_classifier(cls, tf.ViTConfig, 32, **kw, image_size=32, patch_size=8, num_labels=10)
    kw = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)  # ViT-B/16
    return _image_classifier(cls, tf.ViTConfig, 224, **kw, image_size=224, patch_size=16, num_labels=1000)


def bert(tiny: bool) -> Built:
    import torch
    import transformers as tf

    if tiny:
        kw: dict[str, Any] = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
        config, text = _cfg(tf.BertConfig, **kw, intermediate_size=64, max_position_embeddings=64)
    else:
        kw = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12)  # BERT-base
        config, text = _cfg(tf.BertConfig, **kw, intermediate_size=3072, max_position_embeddings=512)
    inner = tf.BertModel(config, add_pooling_layer=False)

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    return Built(
        LastHidden(),
        f"transformers BertModel (no pooler), {text}; output last_hidden_state",
        vocab_size=config.vocab_size,
        max_seq=config.max_position_embeddings,
    )


def vgg(tiny: bool) -> Built:
    """VGG-11 layout (8 3x3 convs, ReLU, 5 max-pools, 3 fully connected layers), plain torch, no BatchNorm."""
    import torch
    from torch import nn

    if tiny:
        widths, hidden, classes, size = (8, 16, 32, 64), 32, 10, 32
    else:
        widths, hidden, classes, size = (64, 128, 256, 512), 4096, 1000, 224
    c1, c2, c3, c4 = widths
    layout: list[int | str] = [c1, "M", c2, "M", c3, c3, "M", c4, c4, "M", c4, c4, "M"]
    layers: list[nn.Module] = []
    channels = 3
    for item in layout:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
            channels = int(item)
    side = size // 32

    class VGG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(
                nn.Linear(channels * side * side, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(),
                nn.Linear(hidden, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(),
                nn.Linear(hidden, classes),
            )

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.features(pixel_values), 1))

    text = f"plain torch VGG-11 layout, conv widths {list(widths)}, fc {hidden}-{hidden}-{classes}; input {size}x{size}"
    return Built(VGG(), text, image_size=size)


def concatnet(tiny: bool) -> Built:
    """DenseNet-style dense blocks (BN-ReLU-Conv, Concat per layer) and Inception-style 4-branch blocks (Concat)."""
    import torch
    from torch import nn

    def cbr(cin: int, cout: int, k: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class DenseLayer(nn.Module):
        def __init__(self, cin: int, growth: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.BatchNorm2d(cin),
                nn.ReLU(),
                nn.Conv2d(cin, 4 * growth, 1, bias=False),
                nn.BatchNorm2d(4 * growth),
                nn.ReLU(),
                nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, self.body(x)], 1)

    class Inception(nn.Module):
        def __init__(self, cin: int, b: int) -> None:
            super().__init__()
            self.b1 = cbr(cin, b, 1)
            self.b3 = nn.Sequential(cbr(cin, b, 1), cbr(b, b, 3))
            self.b5 = nn.Sequential(cbr(cin, b // 2, 1), cbr(b // 2, b, 3), cbr(b, b, 3))
            self.pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), cbr(cin, b, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], 1)

    if tiny:
        stem, growth, per_block, classes, size = 8, 4, 3, 10, 32
    else:
        stem, growth, per_block, classes, size = 64, 32, 6, 1000, 224
    mods: list[nn.Module] = [cbr(3, stem, 7 if not tiny else 3), nn.MaxPool2d(3, 2, 1)]
    c = stem
    for stage in range(2):
        for _ in range(per_block):
            mods.append(DenseLayer(c, growth))
            c += growth
        mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)]  # transition
        c //= 2
        b = c // 2 if stage == 0 else c // 4
        mods.append(Inception(c, b))
        c = 4 * b
    mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(c, classes)]
    net = nn.Sequential(*mods)

    class ConcatNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.net(pixel_values)

    text = (
        f"plain torch: stem {stem}, 2 x (dense block of {per_block} layers, growth {growth}; transition; "
        f"4-branch inception block), global avg pool, fc {classes}; input {size}x{size}"
    )
    return Built(ConcatNet(), text, image_size=size)


MODELS: dict[str, Callable[[bool], Built]] = {
    "resnet50": resnet50,
    "resnet18": resnet18,
    "mobilenetv2": mobilenetv2,
    "efficientnet": efficientnet,
    "convnext": convnext,
    "vit": vit,
    "bert": bert,
    "vgg": vgg,
    "concatnet": concatnet,
}


# ------------------------------------------------------------------------------------------------------- weights


def make_inputs(built: Built, batch: int, seq: int, seed: int) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    if built.vocab_size:
        ids = torch.randint(1, built.vocab_size, (batch, seq), generator=gen)
        mask = torch.ones(batch, seq, dtype=torch.long)
        for row in range(1, batch):  # every row but the first ends in padding
            mask[row, seq - min(seq - 1, row * 2) :] = 0
        types = torch.zeros(batch, seq, dtype=torch.long)
        types[:, seq // 2 :] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    size = built.image_size
    return {"pixel_values": torch.randn(batch, 3, size, size, generator=gen)}


def randomize_norms(built: Built) -> None:
    """Draw every BatchNorm/LayerNorm scale and shift, then calibrate BatchNorm running stats on random batches.

    Seeded. The order matters: the statistics are those of the final weights, so activations keep their scale.
    """
    import torch
    from torch import nn

    model = built.module
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.LayerNorm) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bns:
        momenta = [bn.momentum for bn in bns]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batches
        model.train()
        with torch.no_grad():
            for step in range(2):
                model(**make_inputs(built, 8, 16, seed=1000 + step))
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
    model.eval()


def build(name: str, tiny: bool) -> Built:
    import torch

    torch.manual_seed(SEED)
    built = MODELS[name](tiny)
    randomize_norms(built)
    built.module.eval()
    return built


# -------------------------------------------------------------------------------------------------------- export


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Swallow the exporters' warnings and progress prints; the caller shows them only when an export fails."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._export", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _no_batchnorm_fusion() -> Iterator[None]:
    """Run the dynamo exporter's onnxscript optimizer without its Conv/Gemm+BatchNormalization fusion rules."""
    try:
        import onnxscript.rewriter as rewriter
        from onnxscript.rewriter.rules.common import _fuse_batchnorm
    except ImportError:  # another onnxscript layout: export as is, the BN count in the table tells
        yield
        return
    saved = rewriter._DEFAULT_REWRITE_RULES
    fusion = {id(rule) for rule in _fuse_batchnorm.rules}
    rewriter._DEFAULT_REWRITE_RULES = tuple(rule for rule in saved if id(rule) not in fusion)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = saved


def export(built: Built, path: Path, exporter: str) -> None:
    import torch

    model = built.module
    text = bool(built.vocab_size)
    example = make_inputs(built, batch=2, seq=16 if text else 1, seed=SEED)
    names = list(example)
    out_name = "last_hidden_state" if text else "logits"
    args = tuple(example.values())
    with torch.no_grad(), _quiet():
        if exporter == "torchscript":
            axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "seq"} if text else {0: "batch"} for n in names}
            axes[out_name] = {0: "batch", 1: "seq"} if text else {0: "batch"}
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=names,
                output_names=[out_name],
                dynamic_axes=axes,
                opset_version=TS_OPSET,
                training=torch.onnx.TrainingMode.PRESERVE,  # no eval-mode Conv+BN fold; the model is in eval mode
                do_constant_folding=True,
                dynamo=False,
            )
        else:
            batch = torch.export.Dim("batch", min=1, max=1024)
            if text:
                seq = torch.export.Dim("seq", min=1, max=built.max_seq)
                shapes: dict[str, dict[int, Any]] = {n: {0: batch, 1: seq} for n in names}
            else:
                shapes = {n: {0: batch} for n in names}
            with _no_batchnorm_fusion():
                program = torch.onnx.export(
                    model,
                    args,
                    input_names=names,
                    output_names=[out_name],
                    dynamic_shapes=shapes,
                    opset_version=DYNAMO_OPSET,
                    dynamo=True,
                    optimize=True,
                )
            program.save(str(path), external_data=False)
    if exporter == "dynamo":
        _drop_stack_traces(path)


def _drop_stack_traces(path: Path) -> None:
    """Drop the dynamo exporter's per-node Python stack traces: they name this machine's file paths (the files would
    differ from one checkout to the next) and are a third of a small model's bytes. The other node metadata stays."""
    import onnx

    model = onnx.load(str(path))
    key = "pkg.torch.onnx.stack_trace"
    for node in [*model.graph.node, *(n for f in model.functions for n in f.node)]:
        kept = [p for p in node.metadata_props if p.key != key]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
    onnx.save(model, str(path))


def check(built: Built, path: Path) -> tuple[float, float, dict[str, Any], Any]:
    """check_model, then onnxruntime at batch 3 (and another seq) against torch; returns (max abs diff, max abs)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch

    onnx.checker.check_model(str(path))
    feeds = make_inputs(built, batch=3, seq=11 if built.vocab_size else 1, seed=SEED + 7)
    with torch.no_grad():
        ref = built.module(**feeds).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    np_feeds = {k: v.numpy() for k, v in feeds.items()}
    (got,) = sess.run(None, np_feeds)
    if got.shape != ref.shape:
        raise RuntimeError(f"onnxruntime output shape {got.shape} != torch {ref.shape}")
    return float(np.abs(got - ref).max()), float(np.abs(ref).max()), np_feeds, ref


@dataclass
class Row:
    model: str
    exporter: str
    file: str
    opset: int
    nodes: int
    bn: int
    mb: float
    seconds: float
    diff: float
    scale: float


def stats(path: Path) -> tuple[int, int, int]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    return opset, len(m.graph.node), sum(n.op_type == "BatchNormalization" for n in m.graph.node)


def run_one(name: str, exporter: str, out: Path, tiny: bool) -> Row | None:
    import numpy as np

    path = out / f"{name}.{SUFFIX[exporter]}.onnx"
    try:
        built = build(name, tiny)
        t0 = time.perf_counter()
        export(built, path, exporter)
        seconds = time.perf_counter() - t0
        diff, scale, feeds, ref = check(built, path)
    except Exception as exc:  # noqa: BLE001 - one failing export must not stop the others
        first = next((line for line in str(exc).splitlines() if line.strip()), repr(exc))
        print(f"WARNING: {name}: {exporter} export failed: {type(exc).__name__}: {first[:200]}", flush=True)
        path.unlink(missing_ok=True)
        return None
    if tiny:
        np.savez(out / f"{name}.io.npz", **feeds, output=ref)
    if diff > 1e-3 * max(1.0, scale):
        print(f"WARNING: {path.name}: onnxruntime differs from torch by {diff:.3g} (output scale {scale:.3g})")
    opset, nodes, bn = stats(path)
    row = Row(name, exporter, path.name, opset, nodes, bn, path.stat().st_size / 1e6, seconds, diff, scale)
    print(
        f"{row.file}: opset {opset}, {nodes} nodes, {bn} BatchNormalization, {row.mb:.2f} MB, export {seconds:.1f} s, "
        f"max |ort - torch| {diff:.2g} (|out| <= {scale:.2g})",
        flush=True,
    )
    return row


def table(rows: list[Row]) -> str:
    lines = [
        "| model | exporter | file | opset | nodes | BatchNormalization | MB | export s | max abs diff vs torch |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.exporter} | {r.file} | {r.opset} | {r.nodes} | {r.bn} | {r.mb:.2f} | {r.seconds:.1f} "
            f"| {r.diff:.1e} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ fixtures


def write_readme(out: Path) -> None:
    """The fixtures README: every file in ``out``, from what is on disk, and each model's tiny config."""
    files = sorted(out.glob("*.onnx"))
    lines = [
        "# Real-model fixtures",
        "",
        "Real architectures at tiny configs, random seeded weights (`torch.manual_seed(0)`; BatchNorm running stats",
        "calibrated on random batches, BatchNorm/LayerNorm scale and shift drawn at random), exported by",
        "`benchmarks/export_models.py --tiny`, so tests can run on graphs as the real exporters write them without",
        "torch installed. Do not edit them by hand.",
        "",
        f"- `*.ts.onnx`: the torchscript exporter (`torch.onnx.export(..., dynamo=False)`), opset {TS_OPSET},"
        " `training=TrainingMode.PRESERVE` so BatchNormalization stays unfolded (eval-mode semantics,"
        " `training_mode=0`).",
        f"- `*.dynamo.onnx`: the dynamo exporter (`dynamo=True`), opset {DYNAMO_OPSET}, its onnxscript optimizer"
        " run without the BatchNorm-fusion rules.",
        "- `*.io.npz`: the check inputs (batch 3; BERT seq 11, with padding in the attention mask) under the"
        " graph's input names and torch's output under `output`; onnxruntime matches it to ~1e-6.",
        "",
        "Image models: input `pixel_values` float32 `[batch, 3, H, W]`, output `logits [batch, classes]`; BERT: inputs"
        " `input_ids`, `attention_mask`, `token_type_ids` int64 `[batch, seq]`, output `last_hidden_state"
        " [batch, seq, hidden]`. `batch` (and `seq`) are symbolic dims.",
        "",
        f"Generated with {_versions()}.",
        "",
        "| file | nodes | BatchNormalization | KB |",
        "|---|---:|---:|---:|",
    ]
    for f in files:
        _, nodes, bn = stats(f)
        lines.append(f"| `{f.name}` | {nodes} | {bn} | {f.stat().st_size / 1024:.0f} |")
    lines += ["", "| model | architecture and config |", "|---|---|"]
    for name in MODELS:
        if any(f.name.startswith(name + ".") for f in files):
            lines.append(f"| {name} | {build_config_text(name, True)} |")
    lines += [
        "",
        "Regenerate (needs `pip install torch==2.13.0 transformers onnxscript`; prints a table and checks each file",
        "with the ONNX checker and onnxruntime):",
        "",
        "```bash",
        "python benchmarks/export_models.py --tiny --out fixtures/real",
        "```",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("torch", "transformers", "onnxscript", "onnx", "onnxruntime"):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{package} {version(package)}")
    return ", ".join(found)


def build_config_text(name: str, tiny: bool) -> str:
    import torch

    torch.manual_seed(SEED)
    return MODELS[name](tiny).config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/models/)")
    parser.add_argument("--only", default="", help="comma-separated model names (default all): " + ", ".join(MODELS))
    parser.add_argument("--exporter", choices=(*EXPORTERS, "both"), default="both")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (the fixtures/real files)")
    parser.add_argument("--list", action="store_true", help="list the models and their configs, export nothing")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    if args.list:
        for name in names:
            print(f"{name}: {build_config_text(name, args.tiny)}")
        return 0
    out: Path = args.out or HERE / "models"
    out.mkdir(parents=True, exist_ok=True)
    exporters = EXPORTERS if args.exporter == "both" else (args.exporter,)
    t0 = time.perf_counter()
    rows = [row for name in names for exporter in exporters if (row := run_one(name, exporter, out, args.tiny))]
    print()
    print(table(rows))
    failed = len(names) * len(exporters) - len(rows)
    print(f"\n{len(rows)} exported, {failed} failed, {time.perf_counter() - t0:.0f} s in all (build, export, check)")
    if args.tiny:
        write_readme(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
