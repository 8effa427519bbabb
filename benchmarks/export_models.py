"""Export real architectures with random weights to ONNX, for the benchmarks. Nothing is downloaded.

    pip install torch==2.13.0 transformers onnxscript
    python benchmarks/export_models.py [--out benchmarks/models] [--only resnet50,bert] [--exporter torchscript|dynamo]

Models come from ``transformers`` config classes (random init, seeded) in eval mode. The torchscript exporter runs
with ``do_constant_folding=False`` so BatchNormalization stays unfolded, as in many exported models in the wild. Image
models take ``pixel_values [batch, 3, 224, 224]``; BERT takes int64 ``input_ids``, ``attention_mask`` and
``token_type_ids [batch, seq]``; both dims dynamic.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _image_models() -> dict[str, Callable[[], object]]:
    import transformers as tf

    return {
        "resnet50": lambda: tf.ResNetModel(tf.ResNetConfig()),
        "resnet18": lambda: tf.ResNetModel(
            tf.ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512])
        ),
        "mobilenetv2": lambda: tf.MobileNetV2Model(tf.MobileNetV2Config()),
        "efficientnet": lambda: tf.EfficientNetModel(tf.EfficientNetConfig()),
        "convnext": lambda: tf.ConvNextModel(tf.ConvNextConfig()),
        "vit": lambda: tf.ViTModel(tf.ViTConfig(), add_pooling_layer=False),
    }


MODELS = ["resnet50", "resnet18", "mobilenetv2", "efficientnet", "convnext", "vit", "bert"]


def export(name: str, out_dir: Path, exporter: str) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    path = out_dir / f"{name}.{'ts' if exporter == 'torchscript' else 'dynamo'}.onnx"
    if name == "bert":
        inner = tf.BertModel(tf.BertConfig(), add_pooling_layer=False).eval()

        class Wrap(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: D102
                return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]

        args = (torch.ones(1, 128, dtype=torch.long),) * 3
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes = {n: {0: "batch", 1: "seq"} for n in names}
    else:
        inner = _image_models()[name]().eval()

        class Wrap(torch.nn.Module):  # type: ignore[no-redef]
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, pixel_values):  # noqa: D102
                return self.inner(pixel_values=pixel_values)[0]

        args = (torch.randn(1, 3, 224, 224),)
        names = ["pixel_values"]
        axes = {"pixel_values": {0: "batch"}}
    model = Wrap().eval()
    axes["output"] = {0: "batch"}
    with torch.no_grad():
        if exporter == "torchscript":
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=names,
                output_names=["output"],
                dynamic_axes=axes,
                opset_version=17,
                do_constant_folding=False,
                dynamo=False,
            )
        else:
            shapes = {n: {0: torch.export.Dim("batch")} for n in names}
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=names,
                output_names=["output"],
                dynamic_shapes=shapes,
                opset_version=18,
                dynamo=True,
                external_data=False,
            )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "models")
    parser.add_argument("--only", default=",".join(MODELS), help="comma-separated names: " + ", ".join(MODELS))
    parser.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import onnx

    for name in args.only.split(","):
        t0 = time.perf_counter()
        try:
            path = export(name.strip(), args.out, args.exporter)
        except Exception as exc:  # noqa: BLE001 - one failing export should not stop the others
            print(f"{name}: {args.exporter} export failed: {str(exc).splitlines()[0] if str(exc) else exc!r}")
            continue
        m = onnx.load(str(path), load_external_data=False)
        bn = sum(n.op_type == "BatchNormalization" for n in m.graph.node)
        size = path.stat().st_size / 1e6
        print(
            f"{path.name}: {len(m.graph.node)} nodes, {bn} BatchNormalization, {size:.1f} MB, "
            f"{time.perf_counter() - t0:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
