"""The body-float retry (issue 16, slanet-en): an int8 model measured slower than fp32 whose If/Loop bodies hold int8
layers is quantized once more with those layers float, and the faster of the two is kept unless it is less accurate.
The speed figure is stubbed (``driver._speedup``, graphopt's own timing function) so that the outcome never depends on
the machine; the models run under onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.errors import GraphoptError
from graphopt.quantize import driver, output_error, quantize_model
from graphopt.tools import runtime

BODY = {"body_matmul_h", "body_add"}  # body_matmul_x reads an outer-scope value: never planned


def _model(loop: bool = True, main: bool = True) -> onnx.ModelProto:
    """x -> MatMul (main graph) -> an RNN as a Loop: h <- Tanh(MatMul(h, w) + MatMul(xm, u)), three steps."""
    rng = np.random.default_rng(0)
    v = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "v")
    w = numpy_helper.from_array((0.5 * rng.standard_normal((8, 8))).astype(np.float32), "w")
    u = numpy_helper.from_array((0.5 * rng.standard_normal((8, 8))).astype(np.float32), "u")
    trip = numpy_helper.from_array(np.array(3, np.int64), "trip")
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["h_in", "w"], ["hw"], name="body_matmul_h"),
            helper.make_node("MatMul", ["xm", "u"], ["xu"], name="body_matmul_x"),
            helper.make_node("Add", ["hw", "xu"], ["s"], name="body_add"),
            helper.make_node("Tanh", ["s"], ["h_out"], name="body_tanh"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [2, 8]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [2, 8]),
        ],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "v"], ["xm"], name="main_matmul")
        if main
        else helper.make_node("Relu", ["x"], ["xm"], name="main_relu")
    ]
    if loop:
        nodes.append(helper.make_node("Loop", ["trip", "", "h0"], ["h"], body=body, name="loop"))
    else:
        nodes.append(helper.make_node("Add", ["xm", "h0"], ["h"], name="main_add"))
    graph = helper.make_graph(
        nodes,
        "loop",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
            helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, 8]),
        ],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 8])],
        ([v] if main else []) + ([w, u, trip] if loop else []),
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        {"x": rng.standard_normal((2, 8)).astype(np.float32), "h0": rng.standard_normal((2, 8)).astype(np.float32)}
        for _ in range(3)
    ]


def _body_q(proto: onnx.ModelProto) -> int:
    return sum(n.op_type == "QuantizeLinear" for g in _subgraphs(proto.graph) for n in g.node)


def _subgraphs(g: onnx.GraphProto):
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield a.g
                yield from _subgraphs(a.g)


def _stub_speed(monkeypatch, slow: float, fast: float) -> list[float]:
    """``_speedup`` stubbed: ``slow`` for a model with int8 in its bodies, ``fast`` for one without."""
    calls: list[float] = []

    def speed(fp32, quantized, feed, runs=5):
        assert runtime.session(quantized).run(None, feed)  # the timed model runs under onnxruntime
        figure = slow if _body_q(quantized) else fast
        calls.append(figure)
        return figure

    monkeypatch.setattr(driver, "_speedup", speed)
    return calls


def _quantize(proto: onnx.ModelProto, **config):
    model = from_proto(proto)
    report = quantize_model(model, _feeds(), "ort", {"cache": False, **config})
    return model.to_onnx(), report


@pytest.mark.parametrize("method", ["minmax", "percentile"])  # one pipeline; the clip check's two, then the kept one
def test_a_slow_model_is_quantized_again_with_its_loop_body_float(monkeypatch, method) -> None:
    calls = _stub_speed(monkeypatch, slow=0.6, fast=0.9)
    proto = _model()
    q, report = _quantize(proto, method=method)
    assert calls == [0.6, 0.9]  # one extra measurement, of the retry
    assert report.speedup == 0.9
    assert _body_q(q) == 0 and not any(n.op_type == "MatMul" for n in q.graph.node)  # main graph still int8
    reasons = {c.name: (c.mode, c.reason) for c in report.choices}
    for name in BODY:
        assert reasons[name] == ("float", "float (inside a Loop body: the int8 model was slower than fp32)")
    assert [(la.name, la.mode in ("static", "dynamic", None)) for la in report.layers] == [("main_matmul", True)]
    retry = [w for w in report.warnings if "quantized again with them float" in w]
    assert len(retry) == 1 and "0.60x" in retry[0] and "0.90x" in retry[0] and ": kept" in retry[0]
    assert any("x the speed of fp32 under onnxruntime" in w for w in report.warnings)  # still below 1.0: warned
    assert report.seconds["body-float"] > 0
    ref = [runtime.session(proto).run(None, f) for f in _feeds()]
    got = [runtime.session(q).run(None, f) for f in _feeds()]
    rel, _ = output_error(ref, got)
    assert abs(driver.sqnr_db(rel) - report.sqnr_db) < 0.5  # the report describes the model written


def test_no_retry_when_int8_is_not_slower_or_nothing_is_in_a_body(monkeypatch) -> None:
    calls = _stub_speed(monkeypatch, slow=1.2, fast=2.0)
    q, report = _quantize(_model(), method="minmax")
    assert calls == [1.2] and _body_q(q) > 0 and "body-float" not in report.seconds
    assert not any("quantized again" in w for w in report.warnings)
    calls = _stub_speed(monkeypatch, slow=0.5, fast=0.5)
    q, report = _quantize(_model(loop=False), method="minmax")
    assert calls == [0.5] and "body-float" not in report.seconds
    assert any("x the speed of fp32" in w for w in report.warnings)


def test_no_retry_without_a_speed_measurement(monkeypatch) -> None:
    calls = _stub_speed(monkeypatch, slow=0.5, fast=0.9)
    q, report = _quantize(_model(), measure_speed=False)
    assert calls == [] and _body_q(q) > 0 and report.speedup is None


@pytest.mark.parametrize("floor", [0.0, 1000.0])
def test_the_retry_is_kept_only_if_its_sqnr_meets_the_floor_or_is_not_worse(monkeypatch, floor) -> None:
    """The retry's measured SQNR set 3 dB below the first model's (``_measure`` wrapped): above the floor it is kept;
    below the floor (and worse than the first model) the first model is written back, with its report."""
    _stub_speed(monkeypatch, slow=0.6, fast=0.9)
    real = driver._measure
    first: list[float] = []

    def measure(st):
        real(st)
        if _body_q(st.model.to_onnx()):
            first.append(st.report.sqnr_db)
        else:  # the retry's model
            st.report.sqnr_db = first[0] - 3.0

    monkeypatch.setattr(driver, "_measure", measure)
    q, report = _quantize(_model(), method="minmax", sqnr_floor_db=floor, fallback=False)
    note = next(w for w in report.warnings if "quantized again with them float" in w)
    if floor == 0.0:
        assert report.speedup == 0.9 and _body_q(q) == 0 and ": kept" in note
    else:
        assert report.speedup == 0.6 and _body_q(q) > 0 and "first model is kept (less accurate)" in note
        assert {la.name for la in report.layers} >= BODY and report.sqnr_db == first[0]
        modes = {c.name: c.mode for c in report.choices}
        assert all(modes.get(name, "static") == "static" for name in BODY)


def test_the_retry_is_not_kept_when_it_is_not_faster(monkeypatch) -> None:
    calls = _stub_speed(monkeypatch, slow=0.6, fast=0.5)
    q, report = _quantize(_model(), method="minmax")
    assert calls == [0.6, 0.5] and report.speedup == 0.6 and _body_q(q) > 0
    assert any("first model is kept (not faster)" in w for w in report.warnings)
    assert "body-float" in report.seconds


def test_with_the_accuracy_guard_the_retry_runs_once_on_the_final_model(monkeypatch) -> None:
    """``--max-error``: the guard's candidate models are not retried (one extra measurement in all), and the retry is
    kept only within the budget (here met by both)."""
    calls = _stub_speed(monkeypatch, slow=0.6, fast=0.9)
    q, report = _quantize(_model(), method="minmax", max_error=0.5)
    assert calls == [0.6, 0.9] and report.speedup == 0.9 and _body_q(q) == 0
    assert report.error_rel <= 0.5


@pytest.mark.parametrize("method", ["minmax", "percentile"])  # one pipeline; the clip check's two, then the kept one
def test_when_only_body_layers_are_quantizable_a_slower_int8_model_is_refused(monkeypatch, method) -> None:
    """Every quantizable layer is inside the Loop body (chars2vec-en300: an LSTM exported as a Loop, int8 at 0.54x
    fp32): the retry leaves nothing to quantize, and the slower, lossier int8 model is not written: a GraphoptError
    ("nothing to quantize", as for a model with no quantizable layer) says what was measured and how to force it."""
    calls = _stub_speed(monkeypatch, slow=0.6, fast=0.9)
    with pytest.raises(GraphoptError) as info:
        _quantize(_model(main=False), method=method)
    assert calls == [0.6]  # the retry had no model to time
    message = str(info.value)
    assert message.startswith("nothing to quantize: the only quantizable layers (Add x1, MatMul x1) are inside a Loop")
    assert (
        "0.60x the speed of fp32" in message and "output SQNR of" in message and "no int8 model is written" in message
    )
    assert "--quantize-ops Add,MatMul" in message and "calibration measured none" not in message
    assert "\n" not in message
    monkeypatch.setattr(driver, "_speedup", lambda *a, **k: 0.6)
    with pytest.raises(GraphoptError, match="the only quantizable layers outside the exclusions .* inside a Loop"):
        _quantize(_model(), method=method, exclude=["main_matmul"])


def test_a_body_only_int8_model_within_the_margin_is_written_with_the_warning(monkeypatch) -> None:
    """Measured slower than fp32 but not below driver.BODY_ONLY_REFUSE_SPEEDUP (0.9): one timing's noise must not
    decide between exit 0 and exit 2, so the model is written with the slow-model warning, as before the refusal."""
    calls = _stub_speed(monkeypatch, slow=0.95, fast=0.9)
    q, report = _quantize(_model(main=False), method="minmax")
    assert calls == [0.95] and _body_q(q) > 0 and report.speedup == 0.95
    assert any("0.95x the speed of fp32" in w for w in report.warnings)


def test_a_slower_int8_model_is_not_refused_when_int8_is_not_slower(monkeypatch) -> None:
    calls = _stub_speed(monkeypatch, slow=1.1, fast=0.9)
    q, report = _quantize(_model(main=False), method="minmax")
    assert calls == [1.1] and _body_q(q) > 0 and not any("quantized again" in w for w in report.warnings)


@pytest.mark.parametrize("config", [{"op_types": ["MatMul", "Add"]}, {"measure_speed": False}])
def test_body_only_int8_is_written_when_the_user_asks_for_it(monkeypatch, config) -> None:
    """The op types to quantize named (``--quantize-ops``): the user asked for those layers, and the int8 model is
    written with the note, as before; without the speed measurement there is no retry and nothing to refuse."""
    calls = _stub_speed(monkeypatch, slow=0.6, fast=0.9)
    q, report = _quantize(_model(main=False), method="minmax", **config)
    assert _body_q(q) > 0 and {la.name for la in report.layers} >= BODY
    if "op_types" in config:
        assert calls == [0.6] and report.speedup == 0.6
        note = next(w for w in report.warnings if "quantized again with them float" in w)
        assert "nothing would be left int8 (the op types to quantize, MatMul,Add, select none outside it)" in note
        assert note.endswith(": the first model is kept") and "calibration measured none" not in note
    else:
        assert calls == [] and report.speedup is None


def test_when_the_layers_outside_the_body_are_kept_float_the_first_model_stands(monkeypatch) -> None:
    """slanet-en on random calibration: the SQNR floor keeps every layer outside the Loop body float, so the retry has
    nothing left int8; that is no body-only model (its other layers are float by choice): the first model is written,
    and the note says why in words (not "calibration measured none of the quantizable layers' inputs")."""
    calls = _stub_speed(monkeypatch, slow=0.6, fast=0.9)
    real = driver._choose

    def choose(st):  # the layer outside the body kept float, as slanet-en's floor keeps its layers
        real(st)
        st.chosen["main_matmul"] = driver.choice.Choice("main_matmul", "MatMul", "float", "kept float (test)")

    monkeypatch.setattr(driver, "_choose", choose)
    q, report = _quantize(_model(), method="minmax")
    assert {c.name: c.mode for c in report.choices}["main_matmul"] == "float"
    assert calls == [0.6] and report.speedup == 0.6 and _body_q(q) > 0
    note = next(w for w in report.warnings if "quantized again with them float" in w)
    assert "nothing would be left int8 (every quantizable layer outside it is kept float)" in note
    assert note.endswith(": the first model is kept")


def test_cli_refuses_a_slower_body_only_int8_model(monkeypatch, tmp_path, capsys) -> None:
    """The CLI: one line, exit 2, no traceback, no output file; --quantize-ops naming the op types writes it."""
    from graphopt.cli import main

    _stub_speed(monkeypatch, slow=0.6, fast=0.9)
    src, out = tmp_path / "loop.onnx", tmp_path / "q.onnx"
    onnx.save(_model(main=False), src)
    # -O0: -O2 moves the body's loop-invariant MatMul out of the Loop, where it is a layer outside the body
    base = ["optimize", str(src), "-o", str(out), "-O0", "--quantize", "int8", "--calib-random", "2"]
    base += ["--calib-cache", "off"]
    code = main([*base, "--calib-method", "minmax"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "calibrating on random data" not in line]
    assert code == 2 and not out.exists()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: nothing to quantize: the only quantizable layers")
    assert "Traceback" not in err
    code = main([*base, "--calib-method", "minmax", "--quantize-ops", "MatMul,Add"])
    err = capsys.readouterr().err
    assert code == 0 and out.exists() and _body_q(onnx.load(out)) > 0
    assert "quantized again with them float: nothing would be left int8" in err


def test_api_optimize_raises_for_a_slower_body_only_int8_model(monkeypatch) -> None:
    import graphopt

    _stub_speed(monkeypatch, slow=0.6, fast=0.9)
    proto = _model(main=False)
    with pytest.raises(GraphoptError, match="the only quantizable layers .* are inside a Loop body"):
        graphopt.optimize(proto, level=0, quantize="int8", calibration=_feeds(), quantize_options={"cache": False})
    assert proto == _model(main=False)  # the caller's proto is untouched


def test_clip_check_floor_note_describes_the_model_the_retry_kept(monkeypatch) -> None:
    """Percentile with the clip check: the sub-run wrote the floor's note before the kept model was timed and retried;
    a kept retry changes the SQNR, so the note (and the layers it names) must be the written model's, once."""
    _stub_speed(monkeypatch, slow=0.6, fast=0.9)
    q, report = _quantize(_model(), method="percentile", sqnr_floor_db=1000.0, fallback=False)
    assert report.speedup == 0.9 and _body_q(q) == 0
    floor = [w for w in report.warnings if "below 1000 dB" in w]
    assert len(floor) == 1
    assert f"SQNR is {report.sqnr_db:.1f} dB" in floor[0]
    assert not any(name in floor[0] for name in BODY)  # the body layers are float now: not among the worst


def test_nothing_to_quantize_says_when_the_layer_choice_kept_every_layer_float(monkeypatch) -> None:
    """Every planned layer chosen float: the refusal names the choice, not a calibration that measured nothing."""
    real = driver._choose

    def choose(st):
        real(st)
        for name, c in list(st.chosen.items()):
            st.chosen[name] = driver.choice.Choice(name, c.op_type, "float", "kept float (test)")

    monkeypatch.setattr(driver, "_choose", choose)
    with pytest.raises(GraphoptError, match=r"^nothing to quantize: every quantizable layer \(2\) is kept float by"):
        _quantize(_model(loop=False), method="minmax", measure_speed=False)
