"""The random-weight exports of the wild corpus (benchmarks/corpus.py ``"export"`` entries, benchmarks/export_wild.py).

The exports need torch and are not built here (CI installs no torch): these tests check the corpus side of the new
source kind, i.e. where the files go (never the real-model cache), when a built file counts as cached (its export.json
must match the entry's recipe and pinned versions), that ``select``/``list`` see both kinds, and that every export
entry is complete (licence, pins in benchmarks/requirements-exports.txt, a recipe export_wild.py knows).
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_spec = importlib.util.spec_from_file_location("wild_corpus_exports", ROOT / "benchmarks" / "corpus.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

EXPORTS = [e for e in corpus.ALL_ENTRIES if "export" in e]


def _recipes(name: str = "RECIPES") -> set[str]:
    """The keys of export_wild.RECIPES (or DERIVE), read from the source (importing it would need torch)."""
    tree = ast.parse((ROOT / "benchmarks" / "export_wild.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == name:
            return {k.value for k in node.value.keys}
    raise AssertionError(f"no {name} in export_wild.py")


def _pins() -> dict[str, str]:
    lines = (ROOT / "benchmarks" / "requirements-exports.txt").read_text().splitlines()
    return dict(ln.split("==") for ln in (x.strip() for x in lines) if ln and not ln.startswith("#"))


def test_export_entries_are_complete_and_pinned():
    assert len(EXPORTS) >= 8
    assert not any("export" in e for e in corpus.ENTRIES)  # ENTRIES: the shipped models only, as before
    recipes, pins = _recipes() | _recipes("DERIVE"), _pins()
    assert {e["package"] for e in EXPORTS} >= {"torchvision", "timm", "ultralytics", "transformers"}
    assert {e["opset"] for e in EXPORTS} >= {19, 20}  # the opsets no wheel in the corpus has
    for e in EXPORTS:
        assert e["export"] in recipes, e["name"]
        assert "not redistributed" in e["licence"], e["name"]
        assert "random weights" in e["licence"] or "derived" in e["features"], e["name"]
        assert e["requires"][e["package"]] == e["version"], e["name"]
        for package, version in e["requires"].items():
            assert package == "torch" and version == "2.13.0" or pins[package] == version, (e["name"], package)
        assert len(e["sha256"]) == 64 and 0 < e["bytes"] < 100e6, e["name"]
        assert e["inputs"] and e["input_note"], e["name"]


def test_derived_entries_cover_the_forms_no_wheel_ships():
    derived = [e for e in EXPORTS if "derived" in e["features"]]
    assert {e["export"] for e in derived} == _recipes("DERIVE")
    for e in derived:
        if "base" in e:  # the real weights of a shipped model, turned into another form: the base's inputs
            base = corpus.BY_NAME[e["base"]]
            assert base in corpus.ENTRIES and e["inputs"] == base["inputs"], e["name"]
            assert base["licence"].split()[0] == e["licence"].split()[0], e["name"]
            assert base.get("real") == e.get("real"), e["name"]
    features = {f for e in corpus.ALL_ENTRIES for f in e["features"]}
    assert features >= {"QDQ", "QOperator", "per-channel", "Scan", "fp16-weights"}


def test_exports_go_to_their_own_cache_not_the_real_model_one():
    for e in EXPORTS:
        path = corpus.model_path(e)
        assert path == corpus.EXPORTS / e["name"] / "model.onnx"
        assert corpus.CACHE not in path.parents
    wheel = corpus.BY_NAME["magika-std-v3"]  # a shipped model keeps its place
    assert corpus.model_path(wheel) == corpus.CACHE / "magika-std-v3" / "model.onnx"


def test_select_sees_both_kinds():
    names = {e["name"] for e in corpus.select(None)}
    assert {e["name"] for e in corpus.ENTRIES} | {e["name"] for e in EXPORTS} == names
    assert [e["name"] for e in corpus.select("ultralytics")] == ["yolov8n-yaml"]
    assert {e["name"] for e in corpus.select("gpt2-tiny,magika-std-v3")} == {"gpt2-tiny", "magika-std-v3"}
    with pytest.raises(SystemExit, match="unknown model"):
        corpus.select("no-such-export")


def test_an_export_is_cached_only_with_a_matching_record(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "EXPORTS", tmp_path)
    entry = corpus.BY_NAME["tv-lraspp-mnv3"]
    path = corpus.model_path(entry)
    assert not corpus.is_cached(entry)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not checked by hash: exports differ from one torch build to the next")
    assert not corpus.is_cached(entry)  # no export.json: not built by export_wild.py
    record = {"recipe": entry["export"], "requires": dict(entry["requires"])}
    (path.parent / "export.json").write_text(json.dumps(record))
    assert corpus.is_cached(entry)
    stale = {**record, "requires": {**entry["requires"], "torchvision": "0.27.0"}}
    (path.parent / "export.json").write_text(json.dumps(stale))
    assert not corpus.is_cached(entry)  # built with other versions: export again
    (path.parent / "export.json").write_text(json.dumps({**record, "recipe": "deeplabv3_mobilenet_v3_large"}))
    assert not corpus.is_cached(entry)


def test_list_counts_the_exports(capsys):
    corpus.main(["list", "--only", "timm,magika-std-v3"])
    out = capsys.readouterr().out
    assert "timm-convnext-atto" in out and "magika-std-v3" in out
    assert "4 models from 2 packages (3 exported here)" in out


# ---------------------------------------------------------------------------------------------------------------------
# fold-constants: shapes that become static mid-run (tv-ssdlite320-mnv3: -O2 left 2036 nodes, a second -O2 1810)


def _resize_to_constant_model():
    """X [1, 3, H, W] resized to 8x8 through sizes = Concat(Abs(Shape(X)[:2]), [8, 8]), then
    ``Y + Range(0, Shape(Y)[1])`` over the channels: the sizes fold only during the run, Shape(Y)[1] only after them
    (ONNX's data propagation stops at Abs, so inference types Y [?, ?, 8, 8] at first)."""
    from onnx import TensorProto, helper

    init = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("two", TensorProto.INT64, [1], [2]),
        helper.make_tensor("hw", TensorProto.INT64, [2], [8, 8]),
        helper.make_tensor("one", TensorProto.INT64, [], [1]),
        helper.make_tensor("channels", TensorProto.INT64, [4], [1, -1, 1, 1]),
        helper.make_tensor("start", TensorProto.INT64, [], [0]),
        helper.make_tensor("step", TensorProto.INT64, [], [1]),
    ]
    nodes = [
        helper.make_node("Shape", ["X"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "two"], ["nc"]),
        helper.make_node("Abs", ["nc"], ["nca"]),
        helper.make_node("Concat", ["nca", "hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["X", "", "", "sizes"], ["Y"], mode="nearest"),
        helper.make_node("Shape", ["Y"], ["t"]),
        helper.make_node("Gather", ["t", "one"], ["c"], axis=0),
        helper.make_node("Range", ["start", "c", "step"], ["r"]),
        helper.make_node("Reshape", ["r", "channels"], ["r4"]),
        helper.make_node("Cast", ["r4"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["Y", "rf"], ["Z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "resize_to_constant",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [1, 3, "h", "w"])],
        init,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fold_constants_refines_shapes_that_become_static_in_the_run(tmp_path):
    import numpy as np
    import onnx

    import graphopt
    from graphopt.tools.runtime import session

    model = _resize_to_constant_model()
    onnx.checker.check_model(model)
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, src)
    onnx.save(graphopt.to_proto(graphopt.optimize(str(src), level=2)), out)
    ops = sorted(n.op_type for n in onnx.load(out).graph.node)
    assert ops == ["Add", "Resize"], ops  # the Range over Shape(Y)[1] folded too: Y is [1, 3, 8, 8] for any H, W
    for h, w in ((5, 7), (16, 12)):
        feeds = {"X": np.random.default_rng(h).standard_normal((1, 3, h, w)).astype(np.float32)}
        (ref,) = session(str(src)).run(None, feeds)
        (got,) = session(str(out)).run(None, feeds)
        np.testing.assert_array_equal(got, ref)


def test_wild_report_says_what_the_run_covers():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import wild
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    shipped = [e["name"] for e in wild.corpus.ENTRIES]
    exported = [e["name"] for e in wild.corpus.EXPORT_ENTRIES if "derived" not in e["features"]]
    derived = [e["name"] for e in wild.corpus.DERIVED_ENTRIES]
    alone = wild.coverage(shipped)[-1]
    # the shipped models have opset 19 (yolo11seg-slider) and static QDQ (smart-turn-v3.2-qdq), not opset 20
    assert alone.startswith(f"{len(shipped)} models from ") and "opset 20" in alone and "opset 19" not in alone
    assert alone.endswith("random-weight exports of torchvision/timm/ultralytics/transformers architectures.")
    assert all(gap in alone.split("Not covered")[1] for gap in ("QOperator", "Scan", "fp16 beyond"))
    assert "QDQ" not in alone.split("Not covered")[1]
    one = wild.coverage(["magika-std-v3"])[-1]
    assert "opsets 19-20" in one and "static QDQ" in one.split("Not covered")[1]
    both = wild.coverage(shipped + exported)[-1]
    assert f"and {len(exported)} random-weight exports of " in both
    assert "opset 19" not in both and "opset 20" not in both and "opsets 19-20" not in both
    every = wild.coverage(shipped + exported + derived)[-1]
    assert f"and {len(derived)} models derived here" in every
    missing = every.split("Not covered by the models of this run: ")[1]
    assert not any(gap in missing for gap in ("QDQ", "QOperator", "Scan", "fp16")), missing


def test_wild_int8_speedup_is_a_median_of_rounds_with_its_range():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import wild
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import numpy as np

    model = ROOT / "fixtures" / "cnn.onnx"
    from graphopt.tools.runtime import session

    i = session(str(model), threads=1).get_inputs()[0]
    feeds = {i.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape])}
    feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
    sp = wild._speedup(model, model, feeds, runs=4, budget_s=0.5)
    assert sp["speedup_min"] <= sp["speedup"] <= sp["speedup_max"]
    rounds, per = (int(x) for x in sp["speed_runs"].split("x"))
    assert rounds == wild.SPEED_ROUNDS and 3 <= per <= 4  # at most `runs` pairs a round, at least 3
    assert 0.5 < sp["speedup"] < 2.0  # the same file against itself
    cell = wild._cell({"verdict": "ok", "err": {}, **sp}, "int8-ort")
    assert cell.endswith(f"x{sp['speedup']:.2f} ({sp['speedup_min']:.2f}-{sp['speedup_max']:.2f})")
