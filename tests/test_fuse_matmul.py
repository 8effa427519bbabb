"""fuse-parallel-matmul: random groups of MatMuls on one activation under onnxruntime, and what must stay apart."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import graphopt
from tests.conftest import ort_run as _run
from tests.test_cleanup_passes import _model, _ops

F = TensorProto.FLOAT


@st.composite
def matmul_groups(draw):
    """x [*lead, K] read by 1-4 MatMuls with constant [K, N_i] weights; some outputs are graph outputs, some go on
    through Relu; optionally one weight is shared with another node, or one MatMul reads a [K', N] weight."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    k = draw(st.integers(1, 5))
    count = draw(st.integers(1, 4))
    opset = draw(st.sampled_from([11, 13, 18]))
    nodes, inits, outputs = [], [], []
    for i in range(count):
        n = draw(st.integers(1, 6))
        inits.append(numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"]))
        if draw(st.booleans()):
            outputs.append(f"m{i}")
        else:
            nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"]))
            outputs.append(f"r{i}")
    shared = count > 1 and draw(st.booleans())
    if shared:  # w0 also read elsewhere: merging it would duplicate its data, so it stays out
        nodes.append(helper.make_node("Transpose", ["w0"], ["w0t"]))
        outputs.append("w0t")
    x = helper.make_tensor_value_info("x", F, [*lead, k])
    outs = [helper.make_tensor_value_info(o, F, None) for o in outputs]
    model = _model(nodes, [x], outs, inits, opset=opset)
    expected = count - (1 if shared else 0)
    return model, rng.standard_normal((*lead, k)).astype(np.float32), expected


@settings(max_examples=60, deadline=None)
@given(matmul_groups())
def test_parallel_matmuls_fuse_and_keep_outputs(case) -> None:
    model, x, fusable = case
    out = graphopt.optimize(model, passes="fuse-parallel-matmul")
    assert [o.name for o in out.graph.output] == [o.name for o in model.graph.output]
    read = {name for n in out.graph.node for name in n.input}
    assert {t.name for t in out.graph.initializer} <= read  # the fused weights went with their MatMuls
    assert _ops(out).count("MatMul") == len(_ops(model)) - _ops(model).count("Relu") - _ops(model).count(
        "Transpose"
    ) - (fusable - 1 if fusable >= 2 else 0)
    assert ("Split" in _ops(out)) == (fusable >= 2)
    for a, b in zip(_run(model, {"x": x}), _run(out, {"x": x}), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_different_k_or_activation_stay_apart() -> None:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w1"),
    ]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["a"]), helper.make_node("MatMul", ["z", "w1"], ["b"])]
    ins = [helper.make_tensor_value_info(n, F, [2, 4]) for n in ("x", "z")]
    outs = [helper.make_tensor_value_info(n, F, None) for n in ("a", "b")]
    model = _model(nodes, ins, outs, inits)
    assert _ops(graphopt.optimize(model, passes="fuse-parallel-matmul")) == ["MatMul", "MatMul"]


def test_fused_matmul_output_is_typed_as_inference_types_it() -> None:
    """The fused MatMul's output gets its type from the activation's (no new shape inference run is needed); it must
    be the type ONNX shape inference gives."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, n)).astype(np.float32), f"w{n}") for n in (3, 5)]
    nodes = [helper.make_node("MatMul", ["x", f"w{n}"], [f"m{n}"]) for n in (3, 5)]
    x = helper.make_tensor_value_info("x", F, ["batch", 7, 4])
    model = _model(nodes, [x], [helper.make_tensor_value_info(f"m{n}", F, None) for n in (3, 5)], inits, opset=17)
    m = graphopt.load(model)
    graphopt.optimize(m, passes="fuse-parallel-matmul")
    fused = next(n for n in m.graph if n.op_type == "MatMul").output
    assert (fused.dtype, fused.shape) == (F, ("batch", 7, 8))
    inferred = onnx.shape_inference.infer_shapes(graphopt.core.onnx_io.to_proto(m))
    info = next(v for v in inferred.graph.value_info if v.name == fused.name)
    dims = tuple(d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim)
    assert dims == fused.shape
