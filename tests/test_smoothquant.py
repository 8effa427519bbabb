"""SmoothQuant (graphopt.quantize.smoothquant) and the per-layer choice (graphopt.quantize.choice).

The smoothed float model must compute what the original computes (checked under onnxruntime, before any
quantization), the fold must go into the producer only where that is exact, and the per-layer estimates must pick
float for a layer whose activation int8 cannot hold.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.core.shape_inference import infer_shapes
from graphopt.quantize import QuantizeConfig, analysis, choice, quantize_model, smoothquant
from graphopt.quantize import calibration as calib
from graphopt.tools import runtime


def _ln_matmul(k: int, n: int, seed: int, residual: bool, gelu: bool = False, two: bool = False) -> onnx.ModelProto:
    """x -> LayerNorm -> MatMul(W) (+ another MatMul reading the same LN output when ``two``), with an outlier channel
    in gamma; ``residual``: the LN output is also added to the MatMul's output (a post-LN residual reads it)."""
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 1.5, k).astype(np.float32)
    gamma[rng.integers(k)] *= 30.0  # an outlier channel
    beta = rng.normal(0, 0.5, k).astype(np.float32)
    w = rng.normal(0, 0.2, (k, n)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (k, n)).astype(np.float32)
    inits = [
        numpy_helper.from_array(gamma, "gamma"),
        numpy_helper.from_array(beta, "beta"),
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(w2, "W2"),
        numpy_helper.from_array(rng.normal(0, 0.2, (n, k)).astype(np.float32), "Wr"),
    ]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"], axis=-1, name="ln")]
    src = "h"
    if gelu:
        nodes.append(helper.make_node("Sigmoid", ["h"], ["sg"], name="sig"))
        nodes.append(helper.make_node("Mul", ["h", "sg"], ["g"], name="silu"))
        src = "g"
    nodes.append(helper.make_node("MatMul", [src, "W"], ["y"], name="mm"))
    out = "y"
    if two:
        nodes.append(helper.make_node("MatMul", [src, "W2"], ["y2"], name="mm2"))
        nodes.append(helper.make_node("Add", ["y", "y2"], ["y3"], name="sum"))
        out = "y3"
    if residual:
        nodes.append(helper.make_node("MatMul", [out, "Wr"], ["back"], name="mm_back"))
        nodes.append(helper.make_node("Add", ["back", src], ["z"], name="res"))
        out = "z"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 5, k])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds(k: int, count: int = 3, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (2, 5, k)).astype(np.float32)} for _ in range(count)]


def _smoothed(proto: onnx.ModelProto, feeds, alpha: float, mode: str):
    model = from_proto(proto)
    infer_shapes(model)
    groups = smoothquant.candidates(model.graph)
    absmax = calib.channel_absmax(model, list(groups), feeds)
    done = smoothquant.smooth(model.graph, absmax, alpha, mode=mode)
    return model, done


def _run(proto: onnx.ModelProto, feeds) -> list[np.ndarray]:
    sess = runtime.session(proto, optimization="disabled")
    return [sess.run(None, f)[0] for f in feeds]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.sampled_from([4, 8, 16]),
    n=st.sampled_from([3, 8]),
    seed=st.integers(0, 10_000),
    alpha=st.floats(0.0, 1.0),
    residual=st.booleans(),
    gelu=st.booleans(),
    two=st.booleans(),
    mode=st.sampled_from(smoothquant.MODES),
)
def test_smoothed_float_model_equals_the_original_under_onnxruntime(k, n, seed, alpha, residual, gelu, two, mode):
    proto = _ln_matmul(k, n, seed, residual, gelu, two)
    feeds = _feeds(k, seed=seed)
    model, done = _smoothed(proto, feeds, alpha, mode)
    before, after = _run(proto, feeds), _run(model.to_onnx(), feeds)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-4 * float(np.abs(a).max()))
    folded = [d.fold for d in done]
    if residual or gelu:
        # the LN (or SiLU) output has another reader (the residual Add) or no foldable producer: never folded
        assert all(not f.startswith("LayerNormalization") for f in folded)
        on_src = [d.fold for d in done if d.activation in ("h", "g")]
        assert on_src in ([], ["Mul"]) and (mode == "mul" or on_src == [])
        # the MatMul after the first one reads an output nothing else reads: that fold is exact
        assert all(f in ("Mul", "MatMul mm") for f in folded)
    else:
        # every reader of the LN output is a smoothed MatMul: the scales went into gamma and beta, no Mul added
        assert all(f == "LayerNormalization ln" for f in folded)
        assert not any(node.op_type == "Mul" for node in model.graph)
        if two and done:
            assert sorted(done[0].layers) == ["mm", "mm2"]  # one scale for both readers


def test_smoothing_moves_an_outlier_channel_into_the_weight() -> None:
    proto = _ln_matmul(16, 8, 3, residual=False)
    feeds = _feeds(16)
    model, done = _smoothed(proto, feeds, 0.5, "fold")
    assert [d.fold for d in done] == ["LayerNormalization ln"]
    ln = next(n for n in model.graph if n.op_type == "LayerNormalization")
    mm = next(n for n in model.graph if n.name == "mm")
    gamma = ln.inputs[1].constant().numpy()
    old_gamma = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "gamma"))
    # the outlier channel's gamma shrank the most, and the MatMul's row for it grew by the same factor
    ratio = old_gamma / gamma
    j = int(np.argmax(np.abs(old_gamma)))
    assert ratio[j] == pytest.approx(ratio.max())
    w = mm.inputs[1].constant().numpy()
    old_w = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "W"))
    np.testing.assert_allclose(w / old_w, np.repeat(ratio[:, None], w.shape[1], 1), rtol=1e-5)


def test_fold_mode_leaves_a_shared_activation_alone() -> None:
    proto = _ln_matmul(8, 4, 1, residual=True)
    model, done = _smoothed(proto, _feeds(8), 0.5, "fold")
    # the LN output also feeds the residual Add: not smoothed; the MatMul reading mm's private output is
    assert [(d.activation, d.fold) for d in done] == [("y", "MatMul mm")]
    ln = next(n for n in model.graph if n.op_type == "LayerNormalization")
    assert ln.inputs[1].name == "gamma" and not any(n.op_type == "Mul" for n in model.graph)


def test_scales_follow_the_formula_and_ignore_empty_channels() -> None:
    act = np.array([4.0, 0.0, 1.0])
    w = np.array([[1.0, 2.0], [3.0, 0.5], [0.0, 0.0]], dtype=np.float32)  # rows: input channels
    s = smoothquant.scales(act, [(w, 0)], 0.5)
    np.testing.assert_allclose(s, [np.sqrt(4.0) / np.sqrt(2.0), 1.0, 1.0])


def _outlier_net(k: int = 16) -> onnx.ModelProto:
    """x -> MatMul(W1) -> Add(x2) where x2 carries one huge channel: the Add cannot keep int8 (per tensor)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (k, k)).astype(np.float32), "W1")]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["y"], name="mm"),
        helper.make_node("Add", ["y", "skip"], ["z"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k]),
            helper.make_tensor_value_info("skip", TensorProto.FLOAT, [4, k]),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _outlier_feeds(k: int = 16, count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        skip = rng.normal(0, 1, (4, k)).astype(np.float32)
        skip[:, 3] *= 2000.0
        out.append({"x": rng.normal(0, 1, (4, k)).astype(np.float32), "skip": skip})
    return out


def test_choice_keeps_an_add_of_an_outlier_float_and_the_matmul_static() -> None:
    proto, feeds = _outlier_net(), _outlier_feeds()
    model = from_proto(proto)
    infer_shapes(model)
    plan = analysis.plan(model.graph, "ort")
    ranges = calib.collect(model, plan.tensors, feeds, cache=False).ranges("minmax")
    est = choice.estimate(model, plan, ranges, feeds)
    assert set(est) == {"mm", "add"}
    assert est["mm"].static_db > 35 and est["add"].static_db < est["mm"].static_db
    picked = choice.choose(est, min_db=35)
    assert picked["mm"].mode == "static" and picked["add"].mode == "float"
    assert "dB" in picked["add"].reason


def test_auto_choice_in_quantize_model_reports_each_layer_and_beats_all_static() -> None:
    feeds = _outlier_feeds()
    auto, static = from_proto(_outlier_net()), from_proto(_outlier_net())
    r_auto = quantize_model(auto, feeds, config=QuantizeConfig(cache=False, method="minmax", layer_min_db=35))
    r_static = quantize_model(static, feeds, config=QuantizeConfig(cache=False, method="minmax", choice="static"))
    modes = {c.name: c.mode for c in r_auto.choices}
    # mm reads a graph input (not int8 already): static would add its own Q/DQ pair, dynamic int8 is faster there
    # and holds (the cost rule, choice.STATIC_NOT_FASTER)
    assert modes == {"mm": "dynamic", "add": "float"}
    assert r_static.choices == []
    assert r_auto.error_rel < r_static.error_rel
    d = r_auto.to_dict()
    assert {c["name"]: c["mode"] for c in d["choices"]} == modes
    assert all(layer["mode"] == "dynamic" and "dB" in layer["note"] for layer in d["layers"])


def _wide_net(seed: int = 5) -> onnx.ModelProto:
    """Three LayerNorm -> MatMul -> Relu -> MatMul blocks with residuals and outlier channels: a dozen layers."""
    rng = np.random.default_rng(seed)
    k = 16
    nodes, inits, x = [], [], "x"
    for b in range(3):
        gamma = rng.uniform(0.5, 1.5, k).astype(np.float32)
        gamma[b] *= 40.0
        inits += [
            numpy_helper.from_array(gamma, f"g{b}"),
            numpy_helper.from_array(np.zeros(k, np.float32), f"b{b}"),
            numpy_helper.from_array(rng.normal(0, 0.3, (k, 2 * k)).astype(np.float32), f"w{b}a"),
            numpy_helper.from_array(rng.normal(0, 0.3, (2 * k, k)).astype(np.float32), f"w{b}b"),
        ]
        nodes += [
            helper.make_node("LayerNormalization", [x, f"g{b}", f"b{b}"], [f"h{b}"], axis=-1, name=f"ln{b}"),
            helper.make_node("MatMul", [f"h{b}", f"w{b}a"], [f"u{b}"], name=f"up{b}"),
            helper.make_node("Relu", [f"u{b}"], [f"r{b}"], name=f"relu{b}"),
            helper.make_node("MatMul", [f"r{b}", f"w{b}b"], [f"d{b}"], name=f"down{b}"),
            helper.make_node("Add", [f"d{b}", x], [f"y{b}"], name=f"res{b}"),
        ]
        x = f"y{b}"
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, k])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [2, 6, k])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _wide_feeds(count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(2)
    return [{"x": rng.normal(0, 1, (2, 6, 16)).astype(np.float32)} for _ in range(count)]


def test_accuracy_guard_reaches_the_budget_in_a_logarithmic_number_of_runs(monkeypatch) -> None:
    from graphopt.quantize import driver

    feeds = _wide_feeds()
    cfg = {"cache": False, "method": "minmax", "choice": "static", "smooth_alpha": None}
    plain = quantize_model(from_proto(_wide_net()), feeds, config=cfg)
    limit = plain.error_rel / 4
    built = []
    real = driver._with_modes
    monkeypatch.setattr(driver, "_with_modes", lambda *a, **k: built.append(a[5]) or real(*a, **k))
    model = from_proto(_wide_net())
    report = quantize_model(model, feeds, config={**cfg, "max_error": limit})
    assert report.error_rel <= limit and report.kept_float
    demoted = {c.name for c in report.choices if c.mode == "float"}
    assert set(report.kept_float) == demoted and all(
        "--max-error" in c.reason for c in report.choices if c.name in demoted
    )
    # the layers that stay int8 are in the written model, the demoted ones are float MatMul/Add nodes
    assert {layer.name for layer in report.layers}.isdisjoint(demoted)
    estimated = len(report.choices)
    # one plain build, at most one ranking run per layer (<= 12 layers), then doubling and bisection
    assert len(built) <= 1 + estimated + 2 * (estimated.bit_length() + 1)
    _check_runs_close(_wide_net(), model.to_onnx(), feeds, limit)


def _check_runs_close(proto: onnx.ModelProto, quantized: onnx.ModelProto, feeds, limit: float) -> None:
    ref, got = _run(proto, feeds), _run(quantized, feeds)
    signal = sum(float(np.sum(np.square(a.astype(np.float64)))) for a in ref)
    noise = sum(float(np.sum(np.square(b.astype(np.float64) - a))) for a, b in zip(ref, got, strict=True))
    assert np.sqrt(noise / signal) <= limit * 1.0001


def test_cli_smoothing_and_choice_flags(tmp_path, capsys) -> None:
    from graphopt.cli import main

    src = tmp_path / "net.onnx"
    onnx.save(_wide_net(), src)
    calib_dir = tmp_path / "calib"
    calib_dir.mkdir()
    for i, f in enumerate(_wide_feeds()):
        np.savez(calib_dir / f"{i}.npz", **f)
    out = tmp_path / "q.onnx"
    base = ["optimize", str(src), "-o", str(out), "--quantize", "int8", "--calib-data", str(calib_dir)]
    code = main([*base, "--calib-cache", "off", "--smooth-alpha", "1.5"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--smooth-alpha" in err and not out.exists()
    code = main([*base, "--calib-cache", "off", "--smooth-alpha", "0.6", "--json"])
    import json

    q = json.loads(capsys.readouterr().out)["quantization"]
    assert code == 0 and out.exists()
    assert {c["name"] for c in q["choices"]} >= {"up0", "down0", "res0"}
    assert all(c["mode"] in ("static", "static-float-output", "dynamic", "float") and c["reason"] for c in q["choices"])
    code = main([*base, "--calib-cache", "off", "--layer-choice", "static", "--smooth-alpha", "off", "--json"])
    q = json.loads(capsys.readouterr().out)["quantization"]
    assert code == 0 and q["choices"] == [] and q["smoothed"] == []


def test_demotions_go_dynamic_first_worst_first_and_keep_float_work_within_the_budget() -> None:
    est = {
        "mm_big": choice.Estimate("mm_big", "MatMul", 30, 30, 25.0, 33.0, 600.0, True),
        "mm_small": choice.Estimate("mm_small", "MatMul", 30, 30, 28.0, 31.0, 100.0, True),
        "add": choice.Estimate("add", "Add", 30, 30, 20.0, None, 50.0, False),
        "conv": choice.Estimate("conv", "Conv", 30, 30, 35.0, None, 250.0, False),
    }
    chosen = {k: choice.Choice(k, e.op_type, "static", "") for k, e in est.items()}
    steps = choice.demotions(chosen, est, dynamic=True)
    # static -> dynamic for the weighted layers, worst static estimate first; the Add can only go float
    assert steps[:3] == [("add", "float"), ("mm_big", "dynamic"), ("mm_small", "dynamic")]
    total = sum(e.macs for e in est.values())
    floated = sum(est[k].macs for k, mode in steps if mode == "float")
    assert floated <= choice.FLOAT_MAC_SHARE * total  # mm_big (60% of the work) never goes float
    assert ("mm_big", "float") not in steps and ("mm_small", "float") in steps
    unbounded = choice.demotions(chosen, est, dynamic=True, budget=False)
    assert ("mm_big", "float") in unbounded and ("conv", "float") in unbounded
    static_only = choice.demotions(chosen, est, dynamic=False, budget=False)
    assert all(mode == "float" for _, mode in static_only)


def test_parameters_before_are_the_models_as_the_quantizer_got_it_not_the_smoothed_copy() -> None:
    """SmoothQuant writes scaled copies of the weights (the old ones go only with the rewrite's clean-up): the
    report's "parameters before" is the model the quantizer received (mtcnn-onet said 2.6 MB for its 1.5 MB)."""
    from graphopt.tools.summary import initializer_bytes

    model = from_proto(_ln_matmul(16, 8, 1, residual=True, two=True))
    given = initializer_bytes(model)
    report = quantize_model(model, _feeds(16), config=QuantizeConfig(cache=False, choice="static"))
    assert report.smoothed, "the case needs smoothing"
    assert report.param_bytes_before == given
    assert report.to_dict()["param_bytes_before"] == given
