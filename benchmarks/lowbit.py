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
import json
import os
import statistics
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


# --------------------------------------------------------------------------------------------------------------------
# shared
# --------------------------------------------------------------------------------------------------------------------
def file_bytes(path: Path) -> int:
    """The model file plus its external data files."""
    import onnx

    total = path.stat().st_size
    proto = onnx.load(str(path), load_external_data=False)
    files = set()
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                files.add(e.value)
    return total + sum((path.parent / f).stat().st_size for f in files)


def graphopt_int4(src: Path, dst: Path, feeds: list[dict] | None, level: int = 2, **options) -> float:
    """``graphopt optimize -O{level} --quantize int4`` through the API; seconds."""
    import graphopt

    t0 = time.perf_counter()
    model = graphopt.load(src)
    graphopt.optimize(model, level=level, quantize="int4", quantize_options=options, calibration=feeds)
    dst.parent.mkdir(parents=True, exist_ok=True)
    graphopt.save(model, dst)
    return time.perf_counter() - t0


def ort_int4(
    src: Path, dst: Path, block_size: int, gather: bool, accuracy_level: int | None = 4, symmetric: bool = False
) -> float:
    """onnxruntime's MatMulNBitsQuantizer (its default RTN algorithm), MatMul (and Gather) weights; seconds."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    t0 = time.perf_counter()
    ops = ("MatMul", "Gather") if gather else ("MatMul",)
    q = MatMulNBitsQuantizer(
        onnx.load(str(src)),
        block_size=block_size,
        is_symmetric=symmetric,
        accuracy_level=accuracy_level,
        op_types_to_quantize=ops,
    )
    q.process()
    dst.parent.mkdir(parents=True, exist_ok=True)
    for f in dst.parent.glob(dst.name + "*"):
        f.unlink()
    q.model.save_model_to_file(str(dst), use_external_data_format=q.model.model.ByteSize() > 1.9e9)
    secs = time.perf_counter() - t0
    fix_reduce_axes(dst)
    return secs


REDUCE_AXES_INPUT = {
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSumExp",
    "ReduceSumSquare",
    "ReduceLogSum",
}
"""Reductions whose ``axes`` became an input at opset 18."""


def fix_reduce_axes(path: Path) -> int:
    """onnxruntime's quantizer, when it quantizes Gathers to int4, raises an opset-17 model's opset to 21 without
    converting its ops ("the generated model may not be a valid model"): a Llama's RMSNorm ReduceMean keeps its
    ``axes`` attribute and the model does not load. Move ``axes`` to an input (what the opset-18 op takes); the
    number of nodes changed."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    if next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0) < 18:
        return 0
    changed = 0
    for node in proto.graph.node:
        axes = [a for a in node.attribute if a.name == "axes"]
        if node.op_type in REDUCE_AXES_INPUT and axes:
            name = f"{node.name or node.output[0]}_axes"
            proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(axes[0].ints, np.int64), name))
            node.attribute.remove(axes[0])
            node.input.append(name)
            changed += 1
    if changed:
        onnx.save(proto, str(path))
    return changed


def session(path: Path, threads: int = 2):  # noqa: ANN201
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def interleaved_latency(sessions: dict[str, object], feed: dict, runs: int, repeat: int) -> dict[str, float]:
    """Median over ``repeat`` rounds of the median of ``runs`` runs, the rounds interleaving the models (ms)."""
    for s in sessions.values():
        s.run(None, feed)  # type: ignore[attr-defined]
    rounds: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeat):
        for name, s in sessions.items():
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                s.run(None, feed)  # type: ignore[attr-defined]
                times.append(time.perf_counter() - t0)
            rounds[name].append(statistics.median(times))
    return {k: 1000 * statistics.median(v) for k, v in rounds.items()}


# --------------------------------------------------------------------------------------------------------------------
# (b) the real-weight text model
# --------------------------------------------------------------------------------------------------------------------
def text_bench(runs: int, repeat: int) -> list[dict]:
    import textmodel

    paths = textmodel.fetch()
    spec = textmodel.TEXT_MODELS["paraphrase-minilm-l3"]
    src = paths["paraphrase-minilm-l3"]
    tok = paths["tokenizer"]
    calib = textmodel.feeds(spec, textmodel.CALIBRATION, tok, batch=1)
    out = BIG / "text"
    variants: list[tuple[str, Path, float]] = [("fp32", src, 0.0)]
    for block in (32, 128):
        for method in ("rtn", "gptq"):
            for emb in (4, 8):
                dst = out / f"graphopt-{method}-b{block}-emb{emb}.onnx"
                secs = graphopt_int4(
                    src, dst, calib if method == "gptq" else None, method=method, block_size=block, embeddings=emb
                )
                variants.append((f"graphopt {method.upper()} b{block}, emb int{emb}", dst, secs))
        dst = out / f"graphopt-rtn-b{block}-sym-emb4.onnx"
        secs = graphopt_int4(src, dst, None, block_size=block, symmetric=True, embeddings=4)
        variants.append((f"graphopt RTN b{block} symmetric, emb int4", dst, secs))
        dst = out / f"graphopt-rtn-b{block}-acc0-emb4.onnx"
        secs = graphopt_int4(src, dst, None, block_size=block, embeddings=4, accuracy_level=0)
        variants.append((f"graphopt RTN b{block} accuracy_level 0, emb int4", dst, secs))
        dst = out / f"graphopt-rtn-b{block}-noemb.onnx"
        secs = graphopt_int4(src, dst, None, block_size=block)
        variants.append((f"graphopt RTN b{block}, emb fp32", dst, secs))
        for gather in (True, False):
            dst = out / f"ort-b{block}{'-gather' if gather else ''}.onnx"
            secs = ort_int4(src, dst, block, gather)
            variants.append((f"onnxruntime MatMulNBitsQuantizer b{block}{', Gather' if gather else ''}", dst, secs))
    fp32_size = file_bytes(src)
    sessions = {name: session(path) for name, path, _ in variants}
    ref = textmodel.embed(sessions["fp32"], spec, textmodel.HELD_OUT, tok)
    feed = textmodel.feeds(spec, textmodel.HELD_OUT[:8], tok)[0]
    lat = interleaved_latency(sessions, feed, runs, repeat)
    rows = []
    for name, path, secs in variants:
        emb = textmodel.embed(sessions[name], spec, textmodel.HELD_OUT, tok)
        rep = textmodel.cosine_report(ref, emb)
        size = file_bytes(path)
        rows.append(
            {"variant": name, "bytes": size, "ratio": size / fp32_size, "seconds": secs, "latency_ms": lat[name], **rep}
        )
        print(
            f"{name:55s} {size / 1e6:7.2f} MB {size / fp32_size:5.3f}x cos {rep['cosine_mean']:.4f} "
            f"min {rep['cosine_min']:.4f} retr {rep['retrieval']:.3f} {lat[name]:.2f} ms {secs:.1f} s",
            flush=True,
        )
    return rows


# --------------------------------------------------------------------------------------------------------------------
# (a) the LLM
# --------------------------------------------------------------------------------------------------------------------
LLM_VARIANTS = {
    # name: (tool, options)
    "graphopt-rtn-b32": ("graphopt", {"method": "rtn", "block_size": 32, "embeddings": 4}),
    "graphopt-gptq-b32": ("graphopt", {"method": "gptq", "block_size": 32, "embeddings": 4}),
    "graphopt-rtn-b32-head8": ("graphopt", {"method": "rtn", "block_size": 32, "embeddings": 4, "bits8": ["lm_head"]}),
    "graphopt-rtn-b128": ("graphopt", {"method": "rtn", "block_size": 128, "embeddings": 4}),
    "graphopt-rtn-b32-acc0": ("graphopt", {"method": "rtn", "block_size": 32, "embeddings": 4, "accuracy_level": 0}),
    "ort-b32": ("ort", {"block_size": 32}),
    "ort-b128": ("ort", {"block_size": 128}),
}
CALIB = 128
"""Decode steps the GPTQ Hessians are measured on (one token each: 128 rows per layer input)."""
PROMPTS = 16
LEVEL = int(os.environ.get("LOWBIT_LEVEL", "0"))
"""The graphopt -O level run before int4 on the LLM (0: none; -O2 fuses q/k/v and gate/up into wider MatMuls, which
materialises the fused float weights in memory before they are quantized)."""


def quantize_variant(name: str) -> dict:
    """Quantize the exported LLM as ``name`` (in this process; the caller runs it in a subprocess to read its peak
    RSS); returns seconds and peak RSS."""
    import resource

    tool, options = LLM_VARIANTS[name]
    src = BIG / "fp32" / "model.onnx"
    dst = BIG / name / "model.onnx"
    dst.parent.mkdir(parents=True, exist_ok=True)
    for f in dst.parent.iterdir():
        f.unlink()
    if tool == "ort":
        secs = ort_int4(src, dst, options["block_size"], gather=True)
    else:
        import graphopt
        from graphopt.quantize.int4 import quantize_weights

        t0 = time.perf_counter()
        model = graphopt.load(src)
        if LEVEL:
            graphopt.optimize(model, level=LEVEL)
        feeds = llm_feeds(src, CALIB, seed=1000) if options["method"] == "gptq" else None
        quantize_weights(model, "ort", options, feeds)
        graphopt.save(model, dst, external_data=True)
        secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"variant": name, "seconds": secs, "peak_rss": rss}


def llm_bench(names: list[str], runs: int, repeat: int, reference: str = "fp32") -> list[dict]:
    """Size, decode-step latency (2 threads, interleaved) and next-token logits against ``reference`` (fp32, or
    the first variant: a run that stays under 3 GB without the fp32 model) of each variant."""
    src = BIG / "fp32" / "model.onnx"
    prompts = llm_feeds(src, PROMPTS, seed=0)
    fp32_size = file_bytes(src)
    if reference != "fp32":
        names = [n for n in names if n != reference]
    sess = session(src if reference == "fp32" else BIG / reference / "model.onnx")
    ref = [sess.run(["logits"], f)[0][0, -1] for f in prompts]
    sessions = {reference: sess}
    for name in names:
        if (BIG / name / "model.onnx").is_file():
            sessions[name] = session(BIG / name / "model.onnx")
        else:
            print(f"{name}: not quantized (run `lowbit.py quant --variants {name}` first)", flush=True)
    lat = interleaved_latency(sessions, prompts[0], runs, repeat)
    rows = []
    for name, s in sessions.items():
        got = [s.run(["logits"], f)[0][0, -1] for f in prompts]
        d = np.abs(np.stack(got) - np.stack(ref))
        top1 = float(np.mean([np.argmax(a) == np.argmax(b) for a, b in zip(got, ref, strict=True)]))
        path = src if name == "fp32" else BIG / name / "model.onnx"
        base = lat[reference]
        size = file_bytes(path)
        row = {
            "variant": name,
            "bytes": size,
            "ratio": fp32_size / size,
            "latency_ms": lat[name],
            "speedup": base / lat[name],
            "top1": top1,
            "max_abs": float(d.max()),
            "mean_abs": float(d.mean()),
            "logit_std": float(np.std(np.stack(ref))),
        }
        rows.append(row)
        print(
            f"{name:28s} {size / 1e6:8.1f} MB {row['ratio']:5.2f}x smaller {lat[name]:8.1f} ms "
            f"{row['speedup']:5.2f}x top1 {top1:.3f} max {row['max_abs']:.4f} mean {row['mean_abs']:.5f}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("export", "quant", "llm", "text", "all"))
    ap.add_argument("--variants", default=",".join(LLM_VARIANTS), help="LLM variants (comma-separated)")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reference", default="fp32", help="llm: the variant the others are compared with (fp32)")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer Llama for a smoke test")
    args = ap.parse_args(argv)
    if args.what == "export":
        t0 = time.perf_counter()
        path = export_llm(BIG / "fp32" / "model.onnx", {"num_hidden_layers": 2} if args.tiny else None)
        print(f"exported {path} in {time.perf_counter() - t0:.0f} s")
    names = [v for v in args.variants.split(",") if v]
    if args.what == "quant":
        for name in names:
            print(json.dumps(quantize_variant(name)), flush=True)
    if args.what in ("llm", "all"):
        llm_rows = llm_bench(names, args.runs, args.repeat, args.reference)
        (BIG / f"llm-{args.reference}.json").write_text(json.dumps(llm_rows, indent=1))
    if args.what in ("text", "all"):
        text_rows = text_bench(args.runs, args.repeat)
        (BIG / "text.json").write_text(json.dumps(text_rows, indent=1))


if __name__ == "__main__":
    main()
