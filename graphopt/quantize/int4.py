"""Int4 (and int8) weight-only quantization of MatMul/Gemm weights in blocks along K.

Each float MatMul whose B is a constant 2-D initializer (K, N), and each Gemm with a constant B (``transA=0``,
``alpha=1``, a bias of N values or none), gets its weight quantized in blocks of ``block_size`` consecutive values of
one output column along K (``scale`` per block, and a ``zero_point`` per block unless symmetric):

* target ``ort``: the node becomes onnxruntime's ``com.microsoft.MatMulNBits`` (weights packed two 4-bit values a
  byte, low nibble first, in (N, K/block, block/2); scales (N, K/block); packed uint8 zero points; the Gemm bias as its
  ``bias`` input; ``accuracy_level`` 4 (int8 activations, onnxruntime's VNNI kernel) by default);
* target ``tensorrt``: an opset-21 blocked ``DequantizeLinear`` (int4 weights, or uint4 with uint4 zero points, block
  along K) feeding the original MatMul/Gemm (the model's opset is converted to 21 first).

Methods: ``rtn`` (round to nearest, vectorised numpy over all blocks of a weight) and ``gptq`` (Frantar et al. 2022:
each weight's rows are quantized in order along K and the rounding error of each row is spread over the rows not yet
quantized through the inverse Hessian ``H = 2 X^T X / n`` of the layer's input activations X, measured on
calibration data under onnxruntime; blocks of 128 rows with lazy batch updates; the per-block scales are taken from
the already-updated rows, as in the paper's grouped variant). Layers named by ``bits8`` (regexes), and layers whose
own relative output error at 4 bits exceeds ``layer_error_budget`` (measured on the calibration activations, or on
the weights without calibration), are quantized to 8 bits instead (MatMulNBits bits=8 / int8 DequantizeLinear).

Memory: weights are quantized one at a time from the (memory-mapped) input; each new tensor is adopted without a copy
(``Tensor.from_numpy(..., copy=False)``) and the float weight is dropped from the graph as soon as no node reads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from graphopt.core.ir import Graph, Model, Node, Value
from graphopt.core.tensors import Tensor
from graphopt.errors import GraphoptError
from graphopt.quantize.analysis import check_exclusions

logger = logging.getLogger("graphopt.quantize")

FLOAT = onnx.TensorProto.FLOAT
MS_DOMAIN = "com.microsoft"
BLOCKED_DQ_OPSET = 21
"""The first opset whose DequantizeLinear takes a ``block_size`` (and int4/uint4 inputs)."""
METHODS = ("rtn", "gptq")
GPTQ_BLOCK = 128
"""Rows of a weight quantized between two lazy updates of the rest of the weight (GPTQ's batch size B)."""
MAX_CALIB_ROWS = 4096
"""At most this many activation rows (tokens) per layer input enter a GPTQ Hessian."""


@dataclass
class Int4Config:
    """How to quantize weights to 4 bits. ``exclude``/``exclude_regex`` keep nodes float (exact names, re.search);
    ``bits8`` regexes pick nodes quantized to 8 bits. ``accuracy_level`` None: 4 (int8 activations) on target ort."""

    method: str = "rtn"
    block_size: int = 32
    symmetric: bool = False
    accuracy_level: int | None = None
    exclude: Sequence[str] = ()
    exclude_regex: Sequence[str] = ()
    bits8: Sequence[str] = ()
    layer_error_budget: float | None = None
    """A layer whose relative output error at 4 bits is above this is quantized to 8 bits."""
    percdamp: float | None = None
    """GPTQ's dampening: this share of the Hessian's mean diagonal is added to its diagonal (None: auto_percdamp)."""
    embeddings: int | None = None
    """Quantize float Gather tables (embeddings) to this many bits (8 or 4) too; None leaves them float."""
    threads: int | None = None

    @classmethod
    def of(cls, value: Int4Config | Mapping[str, Any] | None) -> Int4Config:
        if value is None:
            return cls()
        if isinstance(value, Int4Config):
            return value
        unknown = sorted(set(value) - set(cls.__dataclass_fields__))
        if unknown:
            raise GraphoptError(f"unknown int4 quantization option {unknown[0]!r}")
        return cls(**value)

    def check(self) -> None:
        if self.method not in METHODS:
            raise GraphoptError(f"unknown int4 method {self.method!r} (choose from {', '.join(METHODS)})")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise GraphoptError(f"block size must be a power of two >= 16, got {self.block_size}")
        if self.accuracy_level not in (None, 0, 1, 2, 3, 4):
            raise GraphoptError(f"accuracy level must be 0..4, got {self.accuracy_level}")
        if self.layer_error_budget is not None and not self.layer_error_budget > 0:
            raise GraphoptError(f"layer error budget must be positive, got {self.layer_error_budget}")
        if self.embeddings not in (None, 4, 8):
            raise GraphoptError(f"embeddings take 4 or 8 bits, got {self.embeddings}")
        for rx in (*self.exclude_regex, *self.bits8):
            try:
                re.compile(rx)
            except re.error as exc:
                raise GraphoptError(f"bad regex {rx!r}: {exc}") from None


# --------------------------------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Blocks:
    """A (K, N) weight quantized in blocks along K: ``q`` (N, blocks, block_size) unsigned codes in [0, 2^bits)
    (K padded with zeros to whole blocks), ``scales`` (N, blocks) float32, ``zero_points`` (N, blocks) uint8 codes
    (None: symmetric, the zero point is 2^(bits-1)). Value = (code - zero_point) * scale."""

    q: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    k: int
    bits: int

    @property
    def block_size(self) -> int:
        return int(self.q.shape[2])

    def zp(self) -> np.ndarray:
        if self.zero_points is not None:
            return self.zero_points
        return np.full(self.scales.shape, 1 << (self.bits - 1), dtype=np.uint8)

    def dequantize(self) -> np.ndarray:
        """The (K, N) float32 weight these blocks stand for."""
        n, nb, bs = self.q.shape
        w = (self.q.astype(np.float32) - self.zp()[:, :, None].astype(np.float32)) * self.scales[:, :, None]
        return np.ascontiguousarray(w.reshape(n, nb * bs)[:, : self.k].T)


def block_params(lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Scales (float32) and zero-point codes (uint8, None if symmetric) for blocks with minimum ``lo`` and maximum
    ``hi``. Symmetric: the smallest positive scale that puts both extremes in [-2^(b-1), 2^(b-1)-1]; asymmetric: the
    range [min(lo, 0), max(hi, 0)] over the 2^b codes, the zero point its rounded code of 0."""
    qmax = (1 << bits) - 1
    half = 1 << (bits - 1)
    if symmetric:
        scale = np.maximum(np.maximum(hi, 0) / (half - 1), np.maximum(-lo, 0) / half).astype(np.float32)
        scale[scale == 0] = 1.0
        return scale, None
    lo = np.minimum(lo, 0).astype(np.float32)
    hi = np.maximum(hi, 0).astype(np.float32)
    scale = ((hi - lo) / qmax).astype(np.float32)
    scale[scale == 0] = 1.0
    zp = np.clip(np.rint(-lo / scale), 0, qmax).astype(np.uint8)
    return scale, zp


def quantize_rtn(w: np.ndarray, bits: int = 4, block_size: int = 32, symmetric: bool = False) -> Blocks:
    """Round-to-nearest blocked quantization of a (K, N) weight (any float dtype; read once, block by block)."""
    k, n = w.shape
    nb = -(-k // block_size)
    wt = np.zeros((n, nb * block_size), dtype=np.float32)
    wt[:, :k] = w.T
    wt = wt.reshape(n, nb, block_size)
    scales, zp = block_params(wt.min(axis=2), wt.max(axis=2), bits, symmetric)
    zcode = zp if zp is not None else np.uint8(1 << (bits - 1))
    zf = np.asarray(zcode, dtype=np.float32)
    zf = zf[:, :, None] if zf.ndim else zf
    np.divide(wt, scales[:, :, None], out=wt)
    np.rint(wt, out=wt)
    wt += zf
    np.clip(wt, 0, (1 << bits) - 1, out=wt)
    return Blocks(wt.astype(np.uint8), scales, zp, k, bits)


def quantize_gptq(
    w: np.ndarray,
    hessian: np.ndarray,
    bits: int = 4,
    block_size: int = 32,
    symmetric: bool = False,
    percdamp: float = 0.01,
    hinv: np.ndarray | None = None,
) -> Blocks:
    """GPTQ of a (K, N) weight given the layer's input Hessian (K, K) (or its prepared ``hinv``, see
    :func:`gptq_hinv`). Rows along K are quantized in order; blocks of ``block_size`` rows get their scale from the
    rows as updated so far."""
    k, n = w.shape
    if hinv is None:
        hinv = gptq_hinv(hessian, percdamp)
    dead = np.diag(hinv) == 0
    wk = np.array(w, dtype=np.float64, copy=True)
    wk[dead] = 0.0
    nb = -(-k // block_size)
    q = np.zeros((n, nb * block_size), dtype=np.uint8)
    scales = np.zeros((n, nb), dtype=np.float32)
    zps = None if symmetric else np.zeros((n, nb), dtype=np.uint8)
    qmax = (1 << bits) - 1
    step = max(GPTQ_BLOCK, block_size)
    scale = zcode = None
    for i1 in range(0, k, step):
        i2 = min(i1 + step, k)
        w1 = wk[i1:i2]  # a view: updated in place
        err = np.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            r = i1 + i
            if r % block_size == 0:
                grp = w1[i : i + block_size]
                scale, zp = block_params(grp.min(axis=0), grp.max(axis=0), bits, symmetric)
                zcode = zp if zp is not None else np.full(n, 1 << (bits - 1), dtype=np.uint8)
                scales[:, r // block_size] = scale
                if zps is not None:
                    zps[:, r // block_size] = zcode
            assert scale is not None and zcode is not None
            row = w1[i]
            code = np.clip(np.rint(row / scale) + zcode, 0, qmax)
            q[:, r] = code
            deq = (code - zcode) * scale
            e = (row - deq) / h1[i, i]
            w1[i:] -= np.outer(h1[i, i:], e)
            err[i] = e
        if i2 < k:
            wk[i2:] -= hinv[i1:i2, i2:].T @ err
    return Blocks(q.reshape(n, nb, block_size), scales, zps, k, bits)


def gptq_hinv(hessian: np.ndarray, percdamp: float = 0.01) -> np.ndarray:
    """The upper Cholesky factor U of the dampened inverse Hessian (H^-1 = U^T U, GPTQ's ``Hinv``); rows of dead
    inputs (never nonzero) get a zero diagonal so that their weights are zeroed.

    With J the reversal permutation, chol(J H J) = L gives H = R R^T with R = J L J upper triangular, so
    H^-1 = R^-T R^-1 and U = R^-1: one Cholesky and one triangular inverse instead of an inverse and two Choleskys."""
    h = np.array(hessian, dtype=np.float64, copy=True)
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h[np.diag_indices_from(h)] += percdamp * float(np.mean(np.diag(h)))
    for _ in range(5):
        try:
            low = np.linalg.cholesky(h[::-1, ::-1])
            break
        except np.linalg.LinAlgError:
            h[np.diag_indices_from(h)] += percdamp * float(np.mean(np.diag(h)))
    else:
        raise GraphoptError("GPTQ: the calibration Hessian is not positive definite even after dampening")
    r = np.ascontiguousarray(low[::-1, ::-1])  # upper triangular, H = R R^T
    upper = _upper_inverse(r)
    upper[dead, :] = 0.0
    upper[:, dead] = 0.0
    return upper


def _upper_inverse(r: np.ndarray) -> np.ndarray:
    """The inverse of an upper-triangular matrix, by blocks (back substitution on 128-row panels)."""
    n = len(r)
    out = np.zeros_like(r)
    step = 128
    for j in range(((n - 1) // step) * step, -1, -step):
        e = min(j + step, n)
        d = np.linalg.inv(r[j:e, j:e])
        d = np.triu(d)
        out[j:e, j:e] = d
        if e < n:
            # X[j:e, e:] = -D R[j:e, e:] X[e:, e:]
            out[j:e, e:] = -d @ (r[j:e, e:] @ out[e:, e:])
    return out


def auto_percdamp(k: int, rows: int) -> float:
    """GPTQ's dampening when not given: K / rows, between 0.01 and 1. With few calibration rows for the width the
    Hessian is a poor estimate and the plain 1% overfits: on paraphrase-MiniLM-L3 with 215 calibration tokens,
    percdamp 0.01 made 4 of 8 layers worse than RTN on held-out sentences, 0.1 one, 1.0 none (RESULTS-lowbit.md)."""
    return float(min(1.0, max(0.01, k / max(rows, 1))))


def hessian(x: np.ndarray) -> np.ndarray:
    """2 X^T X / n of activation rows (n, K), in float64."""
    x = np.asarray(x, dtype=np.float64)
    return (2.0 / max(len(x), 1)) * (x.T @ x)


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned codes along the last axis: 4-bit pairs into bytes (first value in the low nibble)."""
    codes = np.asarray(codes, dtype=np.uint8)
    if bits == 8:
        return np.ascontiguousarray(codes)
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros((*codes.shape[:-1], 1), np.uint8)], axis=-1)
    return np.ascontiguousarray(codes[..., 0::2] | (codes[..., 1::2] << 4))


# --------------------------------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Layer:
    """A node whose constant weight is quantized: ``weight`` the initializer, ``trans`` whether it is stored (N, K)
    (Gemm transB=1), ``bias`` a constant of N values (Gemm's C), ``input`` the activation it reads."""

    node: Node
    weight: Value
    trans: bool
    bias: np.ndarray | None
    input: Value
    k: int
    n: int
    bits: int = 4
    error: float | None = None


def find_layers(graph: Graph, cfg: Int4Config) -> list[Layer]:
    """The MatMul/Gemm nodes of the main graph whose weight can be quantized (float32, constant, 2-D)."""
    names = set(cfg.exclude)
    out = []
    for node in graph:
        if node.op_type not in ("MatMul", "Gemm") or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
            continue
        if node.name in names or any(re.search(rx, node.name) for rx in cfg.exclude_regex):
            continue
        a, b = node.inputs[0], node.inputs[1]
        if a is None or b is None or b.const is None or b.overridable or not graph.is_initializer(b):
            continue
        if b.const.dtype != FLOAT or len(b.const.dims) != 2 or 0 in b.const.dims:
            continue
        bias = None
        trans = False
        if node.op_type == "Gemm":
            if node.attr("transA", 0) or float(node.attr("alpha", 1.0)) != 1.0:
                continue
            trans = bool(node.attr("transB", 0))
            c = node.inputs[2] if len(node.inputs) > 2 else None
            if c is not None:
                n_out = b.const.dims[0 if trans else 1]
                if c.const is None or c.const.size != n_out or float(node.attr("beta", 1.0)) != 1.0:
                    continue
                if c.const.dtype != FLOAT or len(c.const.dims) > 2:
                    continue
                bias = np.asarray(c.const.numpy(), dtype=np.float32).reshape(-1)
        k, n = b.const.dims[::-1] if trans else b.const.dims
        out.append(Layer(node, b, trans, bias, a, int(k), int(n)))
    return out


def _weight(layer: Layer) -> np.ndarray:
    """The (K, N) float32 weight (a view of the mapped data when it is stored so)."""
    arr = layer.weight.const.numpy()  # type: ignore[union-attr]
    return arr.T if layer.trans else arr


@dataclass
class LayerResult:
    name: str
    op_type: str
    k: int
    n: int
    bits: int
    block_size: int
    error: float
    """Relative L2 error of the layer's output (on the calibration activations, or of the weight itself)."""
    flagged: bool = False
    """Put at 8 bits by the error budget."""


@dataclass
class Int4Result:
    layers: list[LayerResult] = field(default_factory=list)
    embeddings: list[Any] = field(default_factory=list)
    """The embedding tables' LayerReports."""
    opset_upgraded: tuple[int, int] | None = None
    accuracy_level: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def _rel_error(w: np.ndarray, deq: np.ndarray, x: np.ndarray | None) -> float:
    if x is not None:
        ref = x @ w
        den = float(np.linalg.norm(ref))
        return float(np.linalg.norm(x @ (deq - w)) / den) if den else 0.0
    den = float(np.linalg.norm(w))
    return float(np.linalg.norm(deq - w) / den) if den else 0.0


def _emit_ort(graph: Graph, layer: Layer, blk: Blocks, accuracy_level: int) -> Node:
    node = layer.node
    base = layer.weight.name or "w"
    packed = pack(blk.q, blk.bits)
    q_val = graph.make_constant(Tensor.from_numpy(packed, copy=False), f"{base}_Q{blk.bits}")
    s_val = graph.make_constant(Tensor.from_numpy(blk.scales, copy=False), f"{base}_scales")
    inputs: list[Value | None] = [node.inputs[0], q_val, s_val]  # read now: an earlier rewrite may have renewed it
    if blk.zero_points is not None:
        zp = pack(blk.zero_points, blk.bits)
        inputs.append(graph.make_constant(Tensor.from_numpy(zp, copy=False), f"{base}_zp"))
    if layer.bias is not None:
        while len(inputs) < 5:
            inputs.append(None)
        inputs.append(graph.make_constant(Tensor.from_numpy(layer.bias.copy(), copy=False), f"{base}_bias"))
    attrs = {"K": layer.k, "N": layer.n, "bits": blk.bits, "block_size": blk.block_size}
    if accuracy_level:
        attrs["accuracy_level"] = accuracy_level
    return Node("MatMulNBits", inputs, attrs, domain=MS_DOMAIN, name=node.name)


def _int4_tensor(codes: np.ndarray, signed: bool, bits: int) -> Tensor:
    """An INT4/UINT4 (or INT8/UINT8) tensor of ``codes`` (unsigned codes; signed ones are shifted by 2^(bits-1))."""
    shape = codes.shape
    if bits == 8:
        arr = (codes.astype(np.int16) - 128).astype(np.int8) if signed else codes
        return Tensor.from_numpy(np.ascontiguousarray(arr), copy=False)
    flat = codes.reshape(-1)
    if signed:
        flat = (flat.astype(np.int16) - 8).astype(np.uint8) & 0x0F
    packed = pack(flat, 4)
    dtype = onnx.TensorProto.INT4 if signed else onnx.TensorProto.UINT4
    proto = onnx.helper.make_tensor("", dtype, shape, packed.tobytes(), raw=True)
    return Tensor.from_proto(proto)


def _emit_tensorrt(graph: Graph, layer: Layer, blk: Blocks) -> Node:
    """A blocked DequantizeLinear producing the weight in its stored layout, read by the original node."""
    base = layer.weight.name or "w"
    n, nb, bs = blk.q.shape
    codes = blk.q.reshape(n, nb * bs)[:, : layer.k]  # (N, K)
    scales, zp = blk.scales, blk.zero_points  # (N, blocks)
    if not layer.trans:
        codes, scales, zp = codes.T, scales.T, (zp.T if zp is not None else None)
    axis = 1 if layer.trans else 0
    signed = zp is None
    q_val = graph.make_constant(_int4_tensor(np.ascontiguousarray(codes), signed, blk.bits), f"{base}_Q{blk.bits}")
    s_val = graph.make_constant(Tensor.from_numpy(np.ascontiguousarray(scales), copy=False), f"{base}_scale")
    inputs: list[Value | None] = [q_val, s_val]
    if zp is not None:
        inputs.append(graph.make_constant(_int4_tensor(np.ascontiguousarray(zp), False, blk.bits), f"{base}_zp"))
    dq = Node("DequantizeLinear", inputs, {"axis": axis, "block_size": bs}, name=graph.unique_name(f"{base}_dq"))
    dq.output.dtype, dq.output.shape = FLOAT, layer.weight.const.dims  # type: ignore[union-attr]
    return dq


# --------------------------------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------------------------------
def collect_activations(
    model: Model,
    names: Sequence[str],
    feeds: Iterable[Mapping[str, np.ndarray]],
    threads: int | None = None,
    max_rows: int = MAX_CALIB_ROWS,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The rows (n, K) of the float activations ``names`` over the calibration feeds (at most ``max_rows`` each,
    sampled evenly), read from onnxruntime runs of the float model."""
    from graphopt.tools import runtime

    rows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    with _session(model, names, threads) as sess:
        for i, feed in enumerate(feeds):
            outs = runtime.run(sess, list(names), feed, f"calibration sample #{i}")
            for name, arr in zip(names, outs, strict=True):
                arr = np.asarray(arr, dtype=np.float32)
                rows[name].append(arr.reshape(-1, arr.shape[-1]))
    rng = np.random.default_rng(seed)
    out = {}
    for name, parts in rows.items():
        x = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        if len(x) > max_rows:
            x = x[np.sort(rng.choice(len(x), max_rows, replace=False))]
        out[name] = x
    return out


IN_MEMORY_LIMIT = 1 << 29
"""Models with more initializer bytes than this reach onnxruntime through a temporary file with external data
(written one tensor at a time) instead of a serialized copy in memory."""


@contextlib.contextmanager
def _session(model: Model, outputs: Sequence[str], threads: int | None) -> Iterator[Any]:
    """An onnxruntime session of ``model`` with ``outputs`` added as graph outputs."""
    from graphopt.core.onnx_io import save
    from graphopt.tools import runtime
    from graphopt.tools.summary import initializer_bytes

    if initializer_bytes(model) <= IN_MEMORY_LIMIT:
        proto = runtime.add_outputs(model.to_onnx(), list(outputs))
        yield runtime.session(proto, threads=threads, optimization="basic")
        return
    with tempfile.TemporaryDirectory(prefix="graphopt-int4-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        save(model, path, external_data=True)
        proto = onnx.load(path, load_external_data=False)
        onnx.save(runtime.add_outputs(proto, list(outputs)), path)
        del proto
        sess = runtime.session(path, threads=threads, optimization="basic")
        try:
            yield sess
        finally:
            del sess


# --------------------------------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------------------------------
def quantize_weights(
    model: Model,
    target: str = "ort",
    config: Int4Config | Mapping[str, Any] | None = None,
    feeds: Iterable[Mapping[str, np.ndarray]] | None = None,
    *,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> Int4Result:
    """Quantize the MatMul/Gemm weights of ``model`` in place to blocked int4 (see the module docstring)."""
    cfg = Int4Config.of(config)
    cfg.check()
    if target not in ("ort", "tensorrt"):
        raise GraphoptError(f"int4 quantization supports targets ort and tensorrt, got {target!r}")
    result = Int4Result()
    graph = model.graph
    graph.name_unnamed_nodes()
    layers = find_layers(graph, cfg)
    if not layers:
        raise GraphoptError("nothing to quantize: no MatMul/Gemm with a constant float32 2-D weight")
    if target == "tensorrt" and (model.opset("") or 0) < BLOCKED_DQ_OPSET:
        from graphopt.quantize.driver import _upgrade_opset

        before = model.opset("") or 0
        problem = _upgrade_opset(model, BLOCKED_DQ_OPSET)
        if problem is not None:
            raise GraphoptError(
                f"int4 for tensorrt needs opset {BLOCKED_DQ_OPSET}; converting {before} failed: {problem}"
            )
        result.opset_upgraded = (before, BLOCKED_DQ_OPSET)
        graph = model.graph
        layers = find_layers(graph, cfg)
    t0 = time.perf_counter()
    acts: dict[str, np.ndarray] = {}
    if cfg.method == "gptq" or (cfg.layer_error_budget is not None and feeds is not None):
        if feeds is None:
            raise GraphoptError("int4 method gptq needs calibration data")
        batches = [dict(f) for f in feeds]
        if not batches:
            raise GraphoptError("no calibration data: the calibration set is empty")
        names = sorted({layer.input.name for layer in layers if layer.input.name})
        if progress:
            progress("calibrating", 0, len(batches))
        acts = collect_activations(model, names, batches, cfg.threads)
        if progress:
            progress("calibrating", len(batches), len(batches))
    result.seconds["calibrate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    level = cfg.accuracy_level if cfg.accuracy_level is not None else 4
    result.accuracy_level = level if target == "ort" else None
    bits8 = [re.compile(rx) for rx in cfg.bits8]
    done: dict[int, Node | tuple[Value, ...]] = {}
    hinv_cache: tuple[str, np.ndarray] | None = None
    for i, layer in enumerate(layers):
        if progress:
            progress("quantizing", i, len(layers))
        node = layer.node
        x = acts.get(layer.input.name or "")
        x = x if x is not None and len(x) and x.shape[1] == layer.k else None
        w = _weight(layer)
        bits = 8 if any(rx.search(node.name) for rx in bits8) else 4
        hinv = None
        if cfg.method == "gptq" and x is not None:
            key = layer.input.name or ""
            if hinv_cache is None or hinv_cache[0] != key:
                damp = cfg.percdamp if cfg.percdamp is not None else auto_percdamp(layer.k, len(x))
                hinv_cache = (key, gptq_hinv(hessian(x), damp))
            hinv = hinv_cache[1]

        def run(b: int, w: np.ndarray = w, hinv: np.ndarray | None = hinv) -> Blocks:
            if hinv is not None:
                return quantize_gptq(w, None, b, cfg.block_size, cfg.symmetric, hinv=hinv)  # type: ignore[arg-type]
            return quantize_rtn(w, b, cfg.block_size, cfg.symmetric)

        blk = run(bits)
        wf = np.asarray(w, dtype=np.float32)
        err = _rel_error(wf, blk.dequantize(), x)
        flagged = False
        if bits == 4 and cfg.layer_error_budget is not None and err > cfg.layer_error_budget:
            blk = run(8)
            err = _rel_error(wf, blk.dequantize(), x)
            bits, flagged = 8, True
        del wf
        result.layers.append(LayerResult(node.name, node.op_type, layer.k, layer.n, bits, cfg.block_size, err, flagged))
        if target == "ort":
            new = _emit_ort(graph, layer, blk, level)
            graph.insert_before(node, new)
            graph.replace_all_uses_with(node.output, new.output)
            graph.remove(node)
        else:
            key = id(layer.weight)
            dq = done.get(key)
            if dq is None:
                dq = _emit_tensorrt(graph, layer, blk)
                graph.insert_before(node, dq)
                done[key] = dq
            node.set_input(1, dq.output)  # type: ignore[union-attr]
        del blk, w
        weight = layer.weight
        if not weight.uses and not weight.is_graph_output(graph) and weight.name in graph.initializers:
            del graph.initializers[weight.name]  # the float weight goes as soon as nothing reads it
            weight.const = None
    if target == "ort":
        model.opset_imports.setdefault(MS_DOMAIN, 1)
    if progress:
        progress("quantizing", len(layers), len(layers))
    result.seconds["quantize"] = time.perf_counter() - t0
    if cfg.embeddings is not None:
        result.embeddings = _quantize_embeddings(model, cfg.embeddings, target)
    _drop_unused(graph)
    return result


def _quantize_embeddings(model: Model, bits: int, target: str) -> list[Any]:
    """The Gather tables to ``bits`` (:func:`graphopt.quantize.embeddings.quantize_embeddings`); their reports."""
    from graphopt.quantize.embeddings import quantize_embeddings

    return quantize_embeddings(model, bits=bits, target=target)


def _drop_unused(graph: Graph) -> None:
    """Initializers nothing reads any more (Gemm biases moved into MatMulNBits)."""
    for name in [n for n, v in graph.initializers.items() if not v.uses and not v.is_graph_output(graph)]:
        if not any(i is graph.initializers[name] for i in graph.inputs):
            del graph.initializers[name]


def reference_matmul(x: np.ndarray, blk: Blocks, bias: np.ndarray | None = None) -> np.ndarray:
    """What a quantized layer computes, in numpy: x @ dequantized weight (+ bias), in float64 then float32."""
    y = np.asarray(x, dtype=np.float64) @ blk.dequantize().astype(np.float64)
    if bias is not None:
        y = y + bias
    return y.astype(np.float32)


def quantize_model_int4(
    model: Model,
    feeds: Iterable[Mapping[str, np.ndarray]] | None,
    target: str = "ort",
    config: Int4Config | Mapping[str, Any] | None = None,
    *,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> Any:
    """:func:`quantize_weights` with the int8 driver's report (a :class:`QuantReport` with ``bits`` 4): per layer
    its bits and relative output error; with calibration feeds, the model's output error on them under onnxruntime
    (target ort: onnxruntime's kernels; tensorrt: with graph optimizations off, the DequantizeLinear as written)."""
    from graphopt.quantize.driver import _run, output_error, sqnr_db
    from graphopt.quantize.report import LayerReport, QuantReport
    from graphopt.tools.summary import initializer_bytes

    cfg = Int4Config.of(config)
    cfg.check()
    check_exclusions(model, cfg)
    batches = [dict(f) for f in feeds] if feeds is not None else None
    if cfg.method == "gptq" and not batches:
        raise GraphoptError("int4 method gptq needs calibration data (--calib-data DIR or --calib-random N)")
    before = initializer_bytes(model)
    reference = _run(model.to_onnx(), batches, threads=cfg.threads) if batches else None
    result = quantize_weights(model, target, cfg, batches, progress=progress)
    report = QuantReport(
        target=target,
        method=cfg.method,
        percentile=float("nan"),
        batches=len(batches or ()),
        cached=False,
        cache_file=None,
        reduce_range=False,
        reduce_range_reason=(
            f"blocks of {cfg.block_size} along K, {'symmetric' if cfg.symmetric else 'with zero points'}"
            + (f", accuracy_level {result.accuracy_level}" if result.accuracy_level is not None else "")
        ),
        per_channel=True,
        param_bytes_before=before,
        opset_upgraded=result.opset_upgraded,
        bits=4,
    )
    report.seconds = dict(result.seconds)
    report.kept_float = []
    measured = "on the calibration activations" if batches else "on the weights (no calibration data)"
    for lr in result.layers:
        if lr.flagged:
            why = f"8-bit: its int4 error was above the layer error budget {cfg.layer_error_budget:g}"
        elif lr.bits == 8:
            why = "8-bit: named by --int8-layer"
        else:
            why = f"{cfg.method.upper()}, blocks of {lr.block_size} along K"
        report.layers.append(
            LayerReport(
                name=lr.name,
                op_type=lr.op_type,
                input_scale=None,
                weight_scale=None,
                output_scale=None,
                absorbed=None,
                sqnr_db=sqnr_db(lr.error),
                fused=True if target == "ort" else None,
                fused_as=(f"MatMulNBits {lr.bits}-bit" if target == "ort" else None),
                mode=f"int{lr.bits}",
                note=f"{why}; error {lr.error:.3g} relative {measured}",
            )
        )
    report.param_bytes_after = initializer_bytes(model)
    if batches and reference is not None:
        optimization = "all" if target == "ort" else "disabled"
        got = _run(model.to_onnx(), batches, threads=cfg.threads, optimization=optimization)
        report.error_rel, report.error_max_abs = output_error(reference, got)
        report.sqnr_db = sqnr_db(report.error_rel)
    flagged = [lr.name for lr in result.layers if lr.flagged]
    if flagged:
        report.warnings.append(f"8-bit by the layer error budget: {', '.join(flagged)}")
    report.layers.extend(result.embeddings)
    for warning in report.warnings:
        logger.warning("%s", warning)  # the command line prints them as int8's
    return report
