"""Int4 weight-only quantization: graphopt against onnxruntime's ``MatMulNBitsQuantizer``, side by side.

    python benchmarks/lowbit.py export            # the random-weight 1.1B Llama (run under flock bigmem.lock)
    python benchmarks/lowbit.py llm [--runs 10] [--repeat 3]
    python benchmarks/lowbit.py text
    python benchmarks/lowbit.py all                # both, then RESULTS-lowbit.md

(a) A decoder-only LLM from ``transformers`` (Llama architecture, TinyLlama's shape: hidden 2048, 22 layers,
intermediate 5632, vocab 32000, 32 heads, 4 KV heads: 1.1B parameters) with random weights (seeded, nothing
downloaded), exported with the legacy TorchScript exporter (``dynamo=False``: it traces the KV-cache wrapper below
without graph breaks) for one decode step: batch 1, one new token, past length 128 (KV-cache inputs and outputs),
static shapes, external data, under ``/work/big/int4/`` (``LOWBIT_DIR``). Reported: file size, onnxruntime CPU
latency of the decode step at 2 threads (the median of ``--runs`` runs per round, rounds interleaving the models,
median over ``--repeat`` rounds) and next-token logits against fp32 over random prompts (top-1 agreement, max and mean
absolute error), for graphopt RTN, graphopt's calibrated method and onnxruntime's quantizer.

(b) The real-weight text model of ``benchmarks/textmodel.py`` (paraphrase-MiniLM-L3-v2): cosine of the 48 held-out
sentence embeddings to fp32 and paraphrase retrieval, file size against fp32.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

BIG = Path(os.environ.get("LOWBIT_DIR", "/work/big/int4"))
LLM = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
}
PAST = 128


def llama_config(**overrides: int):  # noqa: ANN201 - a transformers LlamaConfig
    from transformers import LlamaConfig

    return LlamaConfig(**{**LLM, **overrides})


def export_llm(out: Path, overrides: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Export a random-weight Llama decode step (batch 1, 1 token, past ``PAST``) to ``out`` with external data."""
    import torch
    from transformers import LlamaForCausalLM
    from transformers.cache_utils import DynamicCache

    cfg = llama_config(**(overrides or {}))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    layers = cfg.num_hidden_layers
    heads_kv = cfg.num_key_value_heads
    head_dim = cfg.hidden_size // cfg.num_attention_heads

    class DecodeStep(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, position_ids, *past):  # noqa: ANN001, ANN202
            cache = DynamicCache(config=cfg)
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.m(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            res = [out.logits]
            for layer in out.past_key_values.layers:
                res += [layer.keys, layer.values]
            return tuple(res)

    ids = torch.zeros((1, 1), dtype=torch.int64)
    mask = torch.ones((1, PAST + 1), dtype=torch.int64)
    pos = torch.tensor([[PAST]])
    past = [torch.zeros(1, heads_kv, PAST, head_dim) for _ in range(2 * layers)]
    names = ["input_ids", "attention_mask", "position_ids"]
    names += [f"past_{k}_{i}" for i in range(layers) for k in ("key", "value")]
    outs = ["logits"] + [f"present_{k}_{i}" for i in range(layers) for k in ("key", "value")]
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            DecodeStep(model),
            (ids, mask, pos, *past),
            str(out),
            input_names=names,
            output_names=outs,
            opset_version=17,
            dynamo=False,
        )
    del model
    import onnx

    proto = onnx.load(str(out))  # the exporter writes one file per tensor above 2 GB: gather them into one
    for f in out.parent.iterdir():
        if f != out:
            f.unlink()
    onnx.save(proto, str(out), save_as_external_data=True, location=out.name + ".data", size_threshold=1024)
    return out


def llm_feeds(path: Path, n: int, seed: int) -> list[dict[str, np.ndarray]]:
    """``n`` random decode-step inputs: a random token at position PAST and a random KV cache (as a prompt's would
    look: unit-variance keys and values)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    rng = np.random.default_rng(seed)
    vocab = LLM["vocab_size"]
    feeds = []
    for _ in range(n):
        feed: dict[str, np.ndarray] = {}
        for inp in proto.graph.input:
            shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
            if inp.name == "input_ids":
                feed[inp.name] = rng.integers(0, vocab, size=shape, dtype=np.int64)
            elif inp.name == "attention_mask":
                feed[inp.name] = np.ones(shape, dtype=np.int64)
            elif inp.name == "position_ids":
                feed[inp.name] = np.full(shape, PAST, dtype=np.int64)
            else:
                feed[inp.name] = rng.standard_normal(shape).astype(np.float32)
        feeds.append(feed)
    return feeds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("export", "llm", "text", "all"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer Llama for a smoke test")
    args = ap.parse_args(argv)
    if args.what == "export":
        t0 = time.perf_counter()
        path = export_llm(BIG / "fp32" / "model.onnx", {"num_hidden_layers": 2} if args.tiny else None)
        print(f"exported {path} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
