"""SmoothQuant / per-layer choice / accuracy guard on the real-weight text models of ``textmodel.py``.

    python benchmarks/textmodel.py calib /tmp/calib                      # 16 calibration sentences as .npz feeds
    python benchmarks/int8_choice.py paraphrase-minilm-l3 /tmp/calib /tmp/q.onnx --quantize int8 [graphopt flags]

Runs ``graphopt optimize MODEL -o OUT --calib-data DIR FLAGS`` (timed), then compares OUT with the fp32 model on the
48 held-out sentences: mean and minimum cosine of the sentence embeddings to fp32, paraphrase retrieval, speed-up at
1 thread (interleaved medians of ``--runs`` rounds over 8 held-out sentences, one per run) and file size ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from textmodel import HELD_OUT, TEXT_MODELS, cosine_report, embed, feeds, fetch  # noqa: E402


def _session(path: str):
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.inter_op_num_threads = 1
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=sorted(TEXT_MODELS))
    ap.add_argument("calib")
    ap.add_argument("out")
    ap.add_argument("--runs", type=int, default=9)
    args, flags = ap.parse_known_args()
    paths = fetch()
    spec = TEXT_MODELS[args.model]
    src = str(paths[args.model])
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "graphopt", "optimize", src, "-o", args.out, "--calib-data", args.calib, "-q", *flags]
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode:
        raise SystemExit(done.stderr)
    s0, s1 = _session(src), _session(args.out)
    batch = 1 if spec.seq_len else None
    rep = cosine_report(
        embed(s0, spec, HELD_OUT, paths["tokenizer"], batch), embed(s1, spec, HELD_OUT, paths["tokenizer"], batch)
    )
    sample = feeds(spec, HELD_OUT[:8], paths["tokenizer"], batch=1)
    ta, tb = [], []
    for _ in range(args.runs):
        for sess, acc in ((s0, ta), (s1, tb)):
            t0 = time.perf_counter()
            for x in sample:
                sess.run(None, x)
            acc.append(time.perf_counter() - t0)
    size = os.path.getsize(args.out) / os.path.getsize(src)
    print(
        f"{args.model} {' '.join(flags)}: cosine {rep['cosine_mean']:.4f} (min {rep['cosine_min']:.4f}), retrieval "
        f"{rep['retrieval']:.3f} (fp32 {rep['retrieval_fp32']:.3f}), speed-up {np.median(ta) / np.median(tb):.2f}x, "
        f"size {size:.3f}x, {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
