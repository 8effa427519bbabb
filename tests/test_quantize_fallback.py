"""The SQNR floor's fallback: a bisection over the layers ranked by their estimated error, within a budget of model
runs (counted here, not timed), that keeps the fewest layers float it finds and says when the budget ran out."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphopt.core.onnx_io import from_proto
from graphopt.quantize import driver, output_error, quantize_model
from graphopt.tools import runtime

HARMLESS = 6


def _chain() -> onnx.ModelProto:
    """``HARMLESS`` 1x1 convs, a depthwise conv whose channels are four decades apart and the 1x1 conv that undoes
    it (at opset 12, kept: one weight scale per tensor, so int8 ruins the pair), then ``HARMLESS`` more 1x1 convs."""
    rng = np.random.default_rng(0)
    spread = (10.0 ** rng.uniform(-2, 2, 8)).astype(np.float32)
    inits, nodes, x = [], [], "x"

    def conv(name: str, w: np.ndarray, **attrs) -> None:
        nonlocal x
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}_w"))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w"], [f"{name}_y"], name=name, **attrs))
        x = f"{name}_y"

    for i in range(HARMLESS):
        conv(f"pre{i}", rng.standard_normal((8, 8, 1, 1)) / math.sqrt(8))
    conv("spread_dw", rng.standard_normal((8, 1, 3, 3)) * spread[:, None, None, None], group=8, pads=[1, 1, 1, 1])
    conv("spread_pw", rng.standard_normal((8, 8, 1, 1)) / spread[None, :, None, None])
    for i in range(HARMLESS):
        conv(f"post{i}", rng.standard_normal((8, 8, 1, 1)) / math.sqrt(8))
    nodes.append(helper.make_node("Identity", [x], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((1, 8, 8, 8)).astype(np.float32)} for _ in range(3)]


CONFIG = {"cache": False, "upgrade_opset": False, "method": "minmax"}


def _quantize(monkeypatch, **config):
    """The quantized model, its report, and how many candidate models the fallback built and ran."""
    built = []
    real = driver._with_modes
    monkeypatch.setattr(driver, "_with_modes", lambda *a, **k: built.append(a[5]) or real(*a, **k))
    model = from_proto(_chain())
    report = quantize_model(model, _feeds(), "ort", {**CONFIG, **config})
    return model, report, len(built)


def _error(model) -> float:
    ref = [runtime.session(_chain()).run(None, f) for f in _feeds()]
    got = [runtime.session(model.to_onnx()).run(None, f) for f in _feeds()]
    return output_error(ref, got)[0]


def test_the_floor_is_met_by_bisection_in_a_logarithmic_number_of_model_runs(monkeypatch) -> None:
    plain = quantize_model(from_proto(_chain()), _feeds(), "ort", {**CONFIG, "fallback": False})
    assert plain.sqnr_db < 10.0  # the pair ruins the all-int8 model
    model, report, runs = _quantize(monkeypatch, fallback_time=None)
    steps = 2 * HARMLESS + 2
    # one run with every step taken, then bisection (a round per layer found needed): not one run per layer
    assert runs <= 1 + 2 * math.ceil(math.log2(steps)) < steps, runs
    assert report.sqnr_db >= 10.0 and _error(model) <= 10 ** (-10 / 20) * 1.0001
    # the fewest layers: the damaging pointwise conv (and at most its partner), the harmless ones stay int8
    assert "spread_pw" in report.kept_float and len(report.kept_float) <= 2, report.kept_float
    assert sum(1 for layer in report.layers if layer.name.startswith(("pre", "post"))) == 2 * HARMLESS
    assert not any("budget" in w for w in report.warnings)
    assert any("most damaging layers demoted" in w and "spread_pw" in w for w in report.warnings)
    assert report.seconds.get("fallback", 0) > 0


@pytest.mark.parametrize("runs_budget", [2, 3])
def test_out_of_budget_keeps_the_best_model_found_that_meets_the_floor_and_says_so(monkeypatch, runs_budget) -> None:
    model, report, runs = _quantize(monkeypatch, fallback_runs=runs_budget, fallback_time=None)
    assert runs == runs_budget
    # the model written meets the floor: more layers float than needed, and the warning says why and names the worst
    assert report.sqnr_db >= 10.0 and _error(model) <= 10 ** (-10 / 20) * 1.0001
    assert "spread_pw" in report.kept_float and len(report.kept_float) > 2
    out = [w for w in report.warnings if "ran out of its budget" in w]
    assert len(out) == 1 and f"{runs} model runs" in out[0] and "spread_pw" in out[0].split("worst layers")[1], out


def test_a_time_budget_spent_on_the_first_run_writes_the_all_int8_model_and_says_so(monkeypatch) -> None:
    # the first candidate (every demotable layer float) leaves nothing int8; no time for more
    model, report, runs = _quantize(monkeypatch, fallback_time=0.0)
    assert runs == 1 and not report.kept_float and report.sqnr_db < 10.0
    out = [w for w in report.warnings if "ran out of its budget" in w]
    assert len(out) == 1 and "all-int8 model is written" in out[0] and "spread_pw" in out[0], out
    assert any("below 10 dB" in w for w in report.warnings)


def test_no_fallback_when_the_floor_cannot_be_met_by_demotions(monkeypatch) -> None:
    # a floor no int8 layer meets: only the all-float model does, so the all-int8 one is written, with the warning
    # naming the worst layers
    model, report, runs = _quantize(monkeypatch, sqnr_floor_db=400.0, fallback_time=None)
    assert runs <= 2 * (1 + math.ceil(math.log2(2 * HARMLESS + 2)))  # two rounds of bisection: no shorter set
    assert not report.kept_float and report.sqnr_db < 400.0
    assert any("below 400 dB" in w for w in report.warnings)
    assert any("only an all-float model meets" in w for w in report.warnings)
    assert {layer.name for layer in report.layers} >= {"pre0", "spread_pw", "post0"}


def test_an_abandoned_fallback_leaves_the_plain_models_choices_for_the_later_stages(monkeypatch) -> None:
    """When the floor's re-quantization fails, the plain model is written back, and the stages after it (the speed
    stage's body-float retry quantizes again from ``st.chosen``) must see that model's choices and layers, not the
    abandoned attempt's demotions."""
    from graphopt.errors import GraphoptError

    calls = []
    real_rewrite, real_finish = driver._rewrite, driver._finish

    def rewrite(st) -> None:
        calls.append(1)
        if len(calls) == 2:  # the fallback's re-quantization (the first call wrote the plain model)
            raise GraphoptError("nothing to quantize: (injected)")
        real_rewrite(st)

    seen = {}

    def finish(st):
        seen["modes"] = {k: c.mode for k, c in st.chosen.items()}
        seen["layers"] = [la.name for la in st.layers]
        seen["excluded"] = list(st.excluded)
        return real_finish(st)

    monkeypatch.setattr(driver, "_rewrite", rewrite)
    monkeypatch.setattr(driver, "_finish", finish)
    report = quantize_model(from_proto(_chain()), _feeds(), "ort", {**CONFIG, "fallback_time": None})
    assert len(calls) == 2
    assert any("the all-int8 model is written" in w for w in report.warnings)
    assert set(seen["modes"].values()) <= {"static"}, seen["modes"]  # the plain model's, none demoted
    assert seen["excluded"] == []
    assert seen["layers"] == [la.name for la in report.layers]


def test_by_default_the_search_has_no_clock_so_a_loaded_machine_writes_the_same_model(monkeypatch) -> None:
    # every candidate run of the search takes 1000 s by the clock (a machine so loaded that any time budget is spent
    # after the first run); the default config bounds the search by its count of runs only: same kept set, same file
    quiet_model, quiet, quiet_runs = _quantize(monkeypatch)
    real_clock, real_error, late = driver.time.perf_counter, driver._FloorSearch.error, [0.0]

    def slow_error(self, taken):
        late[0] += 1000.0
        return real_error(self, taken)

    monkeypatch.setattr(driver.time, "perf_counter", lambda: real_clock() + late[0])
    monkeypatch.setattr(driver._FloorSearch, "error", slow_error)
    loaded_model, loaded, loaded_runs = _quantize(monkeypatch)
    assert quiet.kept_float and loaded.kept_float == quiet.kept_float and loaded_runs == quiet_runs > 1
    assert not any("budget" in w for w in loaded.warnings), loaded.warnings
    assert loaded_model.to_onnx().SerializeToString() == quiet_model.to_onnx().SerializeToString()
    # a time limit asked for (the API's fallback_time) ends the same search after its first run, and says so
    _, timed, timed_runs = _quantize(monkeypatch, fallback_time=2.0)
    assert timed_runs == 1 and any("ran out of its budget" in w and "2x the plain" in w for w in timed.warnings)


@pytest.mark.parametrize("runs_budget", [24, 3])
def test_the_floor_search_progress_has_its_run_bound_as_total_and_ends_full(runs_budget) -> None:
    """The search's progress bar moves (slanet-en showed ~40 s of an empty bar): each step is a model run out of at
    most ``fallback_runs``, and the bar ends full also when the search stops before its bound."""
    calls: list[tuple[str, int, int | None]] = []
    quantize_model(
        from_proto(_chain()),
        _feeds(),
        "ort",
        {**CONFIG, "fallback_runs": runs_budget},
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    floor = [(done, total) for stage, done, total in calls if stage == "SQNR floor"]
    assert floor and all(total == runs_budget and 0 <= done <= total for done, total in floor), floor
    assert [done for done, _ in floor] == sorted(done for done, _ in floor)  # never backwards
    assert floor[0][0] == 0 and floor[-1][0] == runs_budget
