"""Winograd: Cook-Toom matrices, the Numba kernels, the ONNX lowering, autotuning decisions, -O3 and the CLI."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest
from graphopt.kernels import winograd as wk
from graphopt.passes import winograd as wp
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.core.onnx_io import from_proto
from graphopt.tools import runtime


@pytest.mark.parametrize("m", [2, 3, 4, 5, 6])
def test_cook_toom_reproduces_direct_correlation_exactly_in_1d(m: int) -> None:
    at, g, bt = wk.cook_toom(m, 3)
    n = m + 2
    rng = np.random.default_rng(m)
    for _ in range(5):
        d = [Fraction(int(x)) for x in rng.integers(-9, 9, n)]
        w = [Fraction(int(x)) for x in rng.integers(-9, 9, 3)]
        gw = [sum(g[i][k] * w[k] for k in range(3)) for i in range(n)]
        bd = [sum(bt[i][k] * d[k] for k in range(n)) for i in range(n)]
        y = [sum(at[i][j] * gw[j] * bd[j] for j in range(n)) for i in range(m)]
        assert y == [sum(w[k] * d[i + k] for k in range(3)) for i in range(m)]  # exact rational arithmetic


def test_cook_toom_gives_the_textbook_f23_and_integer_input_transforms() -> None:
    _, _, bt = wk.cook_toom(2, 3)
    textbook = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    ours = [[int(x) for x in row] for row in bt]
    assert all(r == t or r == [-v for v in t] for r, t in zip(ours, textbook, strict=True))  # rows up to sign
    for m in (2, 4, 6):
        assert all(x.denominator == 1 for row in wk.cook_toom(m, 3)[2] for x in row)


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from([2, 4, 6]),
    st.integers(1, 2),
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(3, 13),
    st.integers(3, 13),
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
)
def test_numba_winograd_conv_matches_numpy_direct_conv(m, batch, c, k, h, w, pads) -> None:
    rng = np.random.default_rng(h * 31 + w)
    x = rng.standard_normal((batch, c, h, w))
    wt = rng.standard_normal((k, c, 3, 3))
    want = wk.direct_conv(x, wt, pads)
    got = wk.reference_conv(x, wt, m, pads)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("m", [2, 4, 6])
def test_numba_weight_transform_matches_numpy(m: int) -> None:
    w = np.random.default_rng(0).standard_normal((5, 7, 3, 3))
    np.testing.assert_allclose(wk.weight_transform(w, m), wk.weight_transform_numpy(w, m), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------------
# the ONNX lowering
# --------------------------------------------------------------------------------------------------------------------
def _conv_model(c: int, k: int, h: int, w: int, pads, bias: bool, seed: int = 0, relu: bool = True):
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32), "w")]
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), "b"))
        ins.append("b")
    nodes = [helper.make_node("Conv", ins, ["c"], pads=list(pads), kernel_shape=[3, 3], name="conv")]
    nodes.append(helper.make_node("Relu" if relu else "Identity", ["c"], ["y"], name="act"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", k, "h_out", "w_out"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(["F2", "F4", "F6"]),
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(3, 15),
    st.integers(3, 15),
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
    st.booleans(),
)
def test_forced_lowering_matches_the_conv_for_any_size_padding_and_batch(mode, c, k, h, w, pads, bias) -> None:
    proto = _conv_model(c, k, h, w, pads, bias)
    out = graphopt.optimize(proto, passes="winograd", winograd=mode, winograd_threads=1)
    ops = {n.op_type for n in out.graph.node}
    m = int(mode[1])
    x = np.random.default_rng(1).standard_normal((3, c, h, w)).astype(np.float32)  # batch 3: symbolic batch works
    ref = runtime.session(proto).run(None, {"x": x})[0]
    got = runtime.session(out).run(None, {"x": x})[0]
    if "Conv" in ops and "ConvTranspose" not in ops:
        pytest.skip("lowering declined")  # a layer over the tolerance stays a Conv; checked below
    assert all(n.domain in ("", "ai.onnx") for n in out.graph.node)
    scale = max(1.0, float(np.abs(ref).max()))
    assert np.abs(got - ref).max() <= wp.TOLERANCE[m] * scale * 4, (mode, np.abs(got - ref).max())


def test_lowering_over_tolerance_stays_a_conv(monkeypatch) -> None:
    monkeypatch.setitem(wp.TOLERANCE, 6, 0.0)
    proto = _conv_model(4, 4, 8, 8, (1, 1, 1, 1), True)
    out = graphopt.optimize(proto, passes="winograd", winograd="F6")
    assert [n.op_type for n in out.graph.node if n.op_type in ("Conv", "ConvTranspose")] == ["Conv"]


def test_ineligible_convs_are_left_alone() -> None:
    proto = _conv_model(4, 4, 8, 8, (1, 1, 1, 1), True)
    strided = onnx.ModelProto()
    strided.CopyFrom(proto)
    strided.graph.node[0].attribute.append(helper.make_attribute("strides", [2, 2]))
    out = graphopt.optimize(strided, passes="winograd", winograd="F4")
    assert [n.op_type for n in out.graph.node] == ["Conv", "Relu"]


def test_auto_keeps_a_lowering_only_when_the_model_gets_faster(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path))
    proto = _conv_model(16, 16, 12, 12, (1, 1, 1, 1), True)
    report: list = []
    out = graphopt.optimize(proto, passes="winograd", winograd="auto", report=report)
    cache = json.loads((tmp_path / "winograd.json").read_text())
    (entry,) = cache.values()
    assert set(entry["error"]) == {"F2", "F4", "F6"} and entry["conv_ms"] > 0
    lowered = any(n.op_type == "ConvTranspose" for n in out.graph.node)
    counts = report[0].stats[0].counts
    assert lowered == any(k.startswith("F") for k in counts)
    # a second run reads the cache instead of timing
    out2 = graphopt.optimize(proto, passes="winograd", winograd="auto")
    assert len(json.loads((tmp_path / "winograd.json").read_text())) == 1
    assert isinstance(out2, onnx.ModelProto)


def test_tensorrt_auto_does_nothing_and_forced_mode_emits_standard_ops() -> None:
    proto = _conv_model(4, 8, 9, 9, (1, 1, 1, 1), False)
    out = graphopt.optimize(proto, passes="winograd", target="tensorrt")
    assert [n.op_type for n in out.graph.node] == ["Conv", "Relu"]
    out = graphopt.optimize(proto, passes="winograd", target="tensorrt", winograd="F2")
    assert all(n.domain in ("", "ai.onnx") for n in out.graph.node)
    assert "ConvTranspose" in {n.op_type for n in out.graph.node}


def test_o3_includes_winograd_and_cli_forces_a_tile(tmp_path, capsys) -> None:
    from graphopt.cli import main

    assert "winograd" in [p.name for p in graphopt.engine.passes_api.level_pipeline(3)]
    src = tmp_path / "conv.onnx"
    onnx.save(_conv_model(8, 8, 10, 10, (1, 1, 1, 1), True), src)
    out = tmp_path / "out.onnx"
    assert main(["optimize", str(src), "-o", str(out), "-O2", "--winograd", "F4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert any(s["name"] == "winograd" and s["changed"] for s in summary["passes"])
    model = from_proto(onnx.load(out))
    assert any(n.op_type == "ConvTranspose" for n in model.graph)
    assert main(["optimize", str(src), "-o", str(out), "--threads", "0"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["optimize", str(src), "-o", str(out), "--winograd", "F5"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------------------------------------------------
# the C transforms
# --------------------------------------------------------------------------------------------------------------------
def test_c_transforms_are_built_where_a_compiler_exists() -> None:
    import shutil
    import sysconfig
    from pathlib import Path

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the Numba kernels stand in")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        pytest.skip("no Python headers on this machine: the Numba kernels stand in")
    assert wk._c_module() is not None


@pytest.mark.skipif(wk._c_module() is None, reason="graphopt.kernels._ctransforms not built")
@pytest.mark.parametrize("m", [2, 4, 6])
def test_c_transforms_agree_with_numpy_and_numba(m: int) -> None:
    rng = np.random.default_rng(m)
    w = rng.standard_normal((6, 5, 3, 3))
    np.testing.assert_allclose(wk.weight_transform(w, m, "c"), wk.weight_transform_numpy(w, m), rtol=1e-12, atol=1e-12)
    n = m + 2
    x = rng.standard_normal((2, 5, 2 * m + 2, 3 * m + 2))
    at, _, bt = wk.matrices(m, 3)
    v_c, v_nb = wk.input_transform(x, m, "c"), wk.input_transform(x, m, "numba")
    # numpy: every tile, explicitly
    tiles = [x[b, :, ty * m : ty * m + n, tx * m : tx * m + n] for b in range(2) for ty in range(2) for tx in range(3)]
    v_np = np.stack([np.einsum("iq,cqr,jr->ijc", bt, d, bt) for d in tiles], axis=-1)
    np.testing.assert_allclose(v_c, v_np, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v_nb, v_np, rtol=1e-12, atol=1e-12)
    mm = rng.standard_normal((n, n, 4, 2 * 6))
    y_c, y_nb = wk.output_transform(mm, m, 2, 3, "c"), wk.output_transform(mm, m, 2, 3, "numba")
    # [K, i, (b, ty, tx), p] -> [b, K, ty, i, tx, p]
    y_np = np.einsum("iq,qjkt,pj->kitp", at, mm, at).reshape(4, m, 2, 2, 3, m).transpose(2, 0, 3, 1, 4, 5)
    np.testing.assert_allclose(y_c, y_np.reshape(2, 4, 2 * m, 3 * m), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y_nb, y_c, rtol=1e-12, atol=1e-12)
    xin = rng.standard_normal((1, 3, 7, 10))
    wt = rng.standard_normal((4, 3, 3, 3))
    np.testing.assert_allclose(wk.reference_conv(xin, wt, m, backend="c"), wk.direct_conv(xin, wt), atol=1e-10)


def test_c_transforms_reject_bad_buffers() -> None:
    mod = wk._c_module()
    if mod is None:
        pytest.skip("not built")
    with pytest.raises(TypeError, match="float64"):
        mod.weight_transform(np.zeros((2, 2, 3, 3), np.float32), np.zeros((4, 3)), np.zeros((4, 4, 2, 2)))
    with pytest.raises(ValueError, match="shapes"):
        mod.weight_transform(np.zeros((2, 2, 3, 3)), np.zeros((4, 3)), np.zeros((4, 4, 3, 2)))


def test_pass_table_says_why_winograd_did_nothing_on_dynamic_spatial_dims(tmp_path) -> None:
    """A model whose H and W are symbolic: every 3x3 Conv is ineligible, and the pass's counts and the table say why
    (they used to show a bare 'no' with no reason)."""
    from graphopt.cli.render import _winograd_idle

    model = onnx.load(str(Path(__file__).resolve().parent.parent / "fixtures" / "cnn.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    del model.graph.value_info[:]
    report: list = []
    graphopt.optimize(model, passes="winograd", report=report)
    (stats,) = [st for st in report[0].stats if st.name == "winograd"]
    assert not stats.changed
    assert stats.counts.get("not eligible: spatial size not static", 0) >= 3, stats.counts
    assert _winograd_idle(stats.counts).startswith("no eligible 3x3 Conv: spatial size not static x")
    assert _winograd_idle({}) == "no 3x3 Conv"
    old = onnx.load(str(Path(__file__).resolve().parent.parent / "fixtures" / "cnn.onnx"))
    old.opset_import[0].version = 12
    report = []
    graphopt.optimize(old, passes="winograd", report=report)
    assert _winograd_idle(report[0].stats[0].counts) == "not run: opset below 13"
