"""Quantized embedding tables: a Gather that reads rows of a large float initializer (a vocabulary table) reads them
from an int8 (or int4) copy of the table instead, so the file keeps a quarter (an eighth) of the table's bytes.

The forms, chosen by measurement under onnxruntime 1.32 (1 thread, a 30522 x 384 table, 16 x 24 token ids):

=====================================================  ======  ==================================================
form                                                   time    used for
=====================================================  ======  ==================================================
float Gather                                           24 us   (before)
Gather(int8 table) + Gather(row scales) + Cast + Mul   49 us   target ort, 8 bits, one scale per row (default)
com.microsoft GatherBlockQuantized, uint8, 8 bits      62 us   target ort, 8 bits with ``block_size`` (128; 121 us
                                                               at 16)
com.microsoft GatherBlockQuantized, uint8, 4 bits      159 us  target ort, 4 bits (two values per byte, block 32;
                                                               the int4-typed table runs at 1150 us)
Gather -> DequantizeLinear (blocked, opset 21)         269 us  (not used: slower than Gather + Mul)
DequantizeLinear(whole table) -> Gather                6.8 ms  target tensorrt only (standard ops with constant
                                                               scales; onnxruntime dequantizes the whole table)
=====================================================  ======  ==================================================

Every form computes exactly ``(q[ids] - zp[ids]) * scale[ids]`` in float32 (the tests compare it bit for bit with
numpy on the same quantized table). The per-row form and the TensorRT forms are symmetric (``absmax / 127``, or
``absmax / 7`` for 4 bits, no zero point). The GatherBlockQuantized form carries a zero point per block, as
onnxruntime's own quantizer makes it: each block's codes span its [min, max] (stretched to include 0), which halves
the step of a block whose values lie on one side of 0. On the 1.1B Llama of ``benchmarks/lowbit.py`` the symmetric
4-bit table left next-token logits 2% further from fp32 than onnxruntime's quantizer.

A table is quantized when every reader is a Gather on axis 0 and it holds at least ``min_elements`` values (smaller
tables, such as token-type embeddings, stay float); a table also read by anything else (a tied output projection)
stays float, since a second, int8 copy would grow the file.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import numpy as np
import onnx

from graphopt.core.ir import STANDARD_DOMAINS, Graph, Model, Node, Value
from graphopt.core.tensors import Tensor
from graphopt.errors import GraphoptError
from graphopt.quantize.report import LayerReport
from graphopt.quantize.transform import prepend_dequantize

logger = logging.getLogger("graphopt.quantize")
FLOAT = onnx.TensorProto.FLOAT

MIN_ELEMENTS = 1 << 16
"""Tables with fewer values stay float (they weigh under 256 KiB; the rewrite would only add nodes)."""
MS_DOMAIN = "com.microsoft"
DEFAULT_INT4_BLOCK = 32
BLOCKED_DQ_OPSET = 21
"""The first opset whose DequantizeLinear takes ``block_size`` (and int4 data)."""
PER_AXIS_DQ_OPSET = 13


def _sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum(np.square(got.astype(np.float64) - ref.astype(np.float64))))
    signal = float(np.sum(np.square(ref.astype(np.float64))))
    if noise == 0:
        return float("inf")
    return 10.0 * float(np.log10(signal / noise)) if signal > 0 else float("-inf")


def _blocks(table: np.ndarray, block: int | None) -> np.ndarray:
    """A (rows, width) table as float64 blocks of shape (rows, ceil(width / block), block), the last one padded
    with zeros (``block`` None: one block per row; a table of width 0: one empty block)."""
    if table.ndim != 2:
        raise GraphoptError(f"an embedding table must have rank 2, got shape {table.shape}")
    rows, width = table.shape
    block = width if block is None else block
    nblocks = -(-width // block) if width else 1
    data = table.astype(np.float64)
    pad = nblocks * block - width
    if pad:
        data = np.pad(data, ((0, 0), (0, pad)))
    return data.reshape(rows, nblocks, block)


def quantize_table(table: np.ndarray, bits: int = 8, block_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric quantization of a (rows, width) float table: ``(q, scale)`` with ``q`` int8 (values in [-127, 127],
    or [-8, 7] for 4 bits) and ``scale`` float32 of shape (rows, 1) per row or (rows, ceil(width / block_size)).
    ``q * scale`` (the scale repeated over each block) is the dequantized table."""
    qmax = 127.0 if bits == 8 else 7.0
    qmin = -127.0 if bits == 8 else -8.0
    blocks = _blocks(table, block_size)
    rows, nblocks, block = blocks.shape
    width = table.shape[1]
    absmax = np.max(np.abs(blocks), axis=2) if block else np.zeros((rows, nblocks))
    scale = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)
    q = np.clip(np.rint(blocks / scale.astype(np.float64)[:, :, None]), qmin, qmax).astype(np.int8)
    return q.reshape(rows, nblocks * block)[:, :width], scale


def quantize_table_asymmetric(
    table: np.ndarray, bits: int, block_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blocked quantization with a zero point per block (onnxruntime's GatherBlockQuantized form): ``(u, scale, zp)``,
    ``u`` and ``zp`` uint8 in [0, 2**bits - 1], the range of each block stretched to include 0 (as onnxruntime's own
    quantizer does). ``(u - zp) * scale`` is the dequantized table: a block's codes cover its own [min, max]
    instead of [-absmax, absmax], which halves the step of a block whose values lean to one side."""
    levels = float((1 << bits) - 1)
    blocks = _blocks(table, block_size)
    rows, nblocks, _ = blocks.shape
    width = table.shape[1]
    lo = np.minimum(blocks.min(axis=2), 0.0)
    hi = np.maximum(blocks.max(axis=2), 0.0)
    scale = ((hi - lo) / levels).astype(np.float32)
    empty = scale == 0
    scale = np.where(empty, np.float32(1.0), scale)
    s64 = scale.astype(np.float64)
    zp = np.where(empty, 1 << (bits - 1), np.clip(np.rint(-lo / s64), 0, levels)).astype(np.uint8)
    u = np.clip(np.rint(blocks / s64[:, :, None]) + zp[:, :, None], 0, levels).astype(np.uint8)
    return u.reshape(rows, nblocks * block_size)[:, :width], scale, zp


def dequantize_table(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None) -> np.ndarray:
    """``(q - zero_point) * scale`` in float32, scale and zero point repeated over their block: the table every form
    reads (no zero point: symmetric)."""
    rows, width = q.shape
    block = -(-width // scale.shape[1])
    full = np.repeat(scale, block, axis=1)[:, :width]
    codes = q.astype(np.float32)
    if zero_point is not None:
        codes = codes - np.repeat(zero_point, block, axis=1)[:, :width].astype(np.float32)
    return codes * full


def _table_gathers(graph: Graph, min_elements: int) -> tuple[dict[int, tuple[Value, list[Node]]], list[str]]:
    """Float initializer tables read only by axis-0 Gathers: id(table) -> (table, gathers); and why others stayed
    float."""
    found: dict[int, tuple[Value, list[Node]]] = {}
    skipped: list[str] = []
    for node in graph:
        if node.op_type != "Gather" or node.domain not in STANDARD_DOMAINS or not node.inputs:
            continue
        table = node.inputs[0]
        if table is None or id(table) in found or not graph.is_initializer(table) or table.overridable:
            continue
        t = table.const
        if t is None or t.dtype != onnx.TensorProto.FLOAT or len(t.dims) != 2 or t.size < min_elements:
            continue
        readers = [user for user, idx in table.uses]
        bad = [
            u
            for u, idx in table.uses
            if idx != 0
            or u.op_type != "Gather"
            or u.domain not in STANDARD_DOMAINS
            or u.graph is not graph
            or int(u.attr("axis", 0)) not in (0, -2)
        ]
        if bad or graph.is_output(table):
            what = bad[0].op_type if bad else "a graph output"
            skipped.append(f"{table.name}: kept float (also read by {what}; an int8 copy would grow the file)")
            continue
        found[id(table)] = (table, readers)
    return found, skipped


def quantize_embeddings(
    model: Model,
    *,
    bits: int = 8,
    block_size: int | None = None,
    target: str = "ort",
    min_elements: int = MIN_ELEMENTS,
    skip: Collection[str] = (),
) -> list[LayerReport]:
    """Rewrite every Gather over a float table of at least ``min_elements`` values (main graph) to read an int8
    (``bits=8``) or int4 (``bits=4``) copy; returns one LayerReport per rewritten Gather (``mode`` ``"int8 table"``
    or ``"int4 table"``, ``sqnr_db`` the whole table's dequantized SQNR). ``block_size`` None means one scale per
    row for 8 bits and 32 columns for 4 bits; onnxruntime's blocked gather needs a power of two >= 16 dividing the
    width. A table read by a Gather named in ``skip`` stays float. Tables that cannot take the requested form stay
    float, with a warning saying why."""
    if bits not in (4, 8):
        raise GraphoptError(f"embedding tables are quantized to 4 or 8 bits, got {bits}")
    if target not in ("ort", "tensorrt"):
        raise GraphoptError(f"unknown target {target!r} for quantized embeddings")
    if block_size is None and bits == 4:
        block_size = DEFAULT_INT4_BLOCK
    if block_size is not None and (block_size < 16 or block_size & (block_size - 1)):
        raise GraphoptError(f"embedding block size must be a power of two >= 16, got {block_size}")
    graph = model.graph
    opset = model.opset("") or 0
    tables, skipped = _table_gathers(graph, min_elements)
    need = PER_AXIS_DQ_OPSET if block_size is None else BLOCKED_DQ_OPSET
    reports: list[LayerReport] = []
    for table, gathers in tables.values():
        if any(g.name in skip for g in gathers):
            continue
        names = [g.name or table.name or "Gather" for g in gathers]
        data = table.const.numpy()  # type: ignore[union-attr]
        rows, width = data.shape
        if target == "tensorrt" and opset < need:
            skipped.append(f"{table.name}: kept float (target tensorrt needs opset {need} for this DequantizeLinear)")
            continue
        if target == "ort" and block_size is not None and width % block_size:
            skipped.append(f"{table.name}: kept float (width {width} is not a multiple of block size {block_size})")
            continue
        zp = None
        if target == "ort" and block_size is not None:
            q, scale, zp = quantize_table_asymmetric(data, bits, block_size)
        else:
            q, scale = quantize_table(data, bits, block_size)
        sqnr = _sqnr_db(data, dequantize_table(q, scale, zp))
        base = table.name or "table"
        if target == "tensorrt":
            forms = _dq_table(graph, base, q, scale, bits, block_size)
            for g in gathers:
                g.set_input(0, forms)
            how = "DequantizeLinear -> Gather"
        elif block_size is None:
            qv = graph.make_constant(Tensor.from_numpy(q, copy=False), f"{base}_int8")
            sv = graph.make_constant(Tensor.from_numpy(scale, copy=False), f"{base}_row_scale")
            for g in gathers:
                _gather_mul(graph, g, qv, sv)
            how = "Gather int8 * row scale"
        else:
            model.opset_imports.setdefault(MS_DOMAIN, 1)
            qv = graph.make_constant(Tensor.from_numpy(_pack(q, bits), copy=False), f"{base}_uint{bits}")
            sv = graph.make_constant(Tensor.from_numpy(scale, copy=False), f"{base}_block_scale")
            zv = graph.make_constant(Tensor.from_numpy(_pack(zp, bits), copy=False), f"{base}_zero_point")  # type: ignore[arg-type]
            for g in gathers:
                _gather_block_quantized(graph, g, qv, sv, zv, bits, block_size)
            how = "GatherBlockQuantized"
        if not table.uses:
            graph.initializers.pop(table.name, None)  # type: ignore[arg-type]
        for name in names:
            reports.append(
                LayerReport(
                    name=name,
                    op_type="Gather",
                    input_scale=None,
                    weight_scale=(float(scale.min()), float(scale.max())),
                    output_scale=None,
                    absorbed=None,
                    sqnr_db=sqnr,
                    fused=True if target == "ort" else None,
                    fused_as=how if target == "ort" else None,
                    mode=f"int{bits} table",
                    note=f"{rows}x{width} table, "
                    + ("one scale per row" if block_size is None else f"blocks of {block_size}")
                    + f", {how}",
                )
            )
    for reason in skipped:
        logger.warning("%s", reason)
    return reports


def _take_listings(graph: Graph, old: Value, new: Value) -> None:
    """``new`` stands for ``old``: the file's listings of ``old`` (a graph output's stated type) are written for it."""
    for kind in ("output", "value_info"):
        listing = graph.info_overrides.pop((kind, old), None)
        if listing is not None:
            graph.info_overrides[(kind, new)] = listing


def _pack(u: np.ndarray, bits: int) -> np.ndarray:
    """GatherBlockQuantized's uint8 layout (codes and zero points alike): 4-bit values two per byte along the last
    axis, low nibble first (an odd count padded with 0)."""
    if bits == 8:
        return np.ascontiguousarray(u, dtype=np.uint8)
    if u.shape[1] % 2:
        u = np.pad(u, ((0, 0), (0, 1)))
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)


def _replace(graph: Graph, old: Node, nodes: list[Node], out: Value) -> None:
    """``nodes`` inserted after ``old`` in order, then ``out`` stands for ``old``'s output (:func:`_stand_in`)."""
    anchor = old
    for n in nodes:
        graph.insert_after(anchor, n)
        anchor = n
    _stand_in(graph, old, out)


def _stand_in(graph: Graph, old: Node, out: Value) -> None:
    """``out`` replaces ``old``'s (first) output for every reader and in the file's listings, and ``old`` is removed;
    ``out`` takes the old output's name (reports and --exclude still find the layer), the old value a ``_float``
    one, unless ``out`` is a graph output."""
    old_out = old.outputs[0]
    assert old_out is not None
    name = old_out.name
    _take_listings(graph, old_out, out)
    graph.replace_all_uses_with(old_out, out)
    graph.remove(old, safe=False)
    if not graph.is_output(out) and name and out.name != name:
        old_out.name = graph.unique_name(f"{name}_float")
        out.name = name


def _gather_mul(graph: Graph, g: Node, qv: Value, sv: Value) -> None:
    ids = g.inputs[1]
    base = g.name or "gather"
    gq = Value(graph.unique_name(f"{base}_int8_rows"))
    gs = Value(graph.unique_name(f"{base}_row_scales"))
    gf = Value(graph.unique_name(f"{base}_rows_float"))
    old = g.outputs[0]
    out = Value(graph.unique_name(f"{base}_dequantized"), FLOAT, old.shape if old is not None else None)
    nodes = [
        Node("Gather", [qv, ids], {"axis": 0}, outputs=[gq], name=graph.unique_name(f"{base}_int8")),
        Node("Gather", [sv, ids], {"axis": 0}, outputs=[gs], name=graph.unique_name(f"{base}_scale")),
        Node("Cast", [gq], {"to": onnx.TensorProto.FLOAT}, outputs=[gf], name=graph.unique_name(f"{base}_cast")),
        # the Mul writes the rows: it takes the Gather's name (reports and --exclude still find the layer)
        Node("Mul", [gf, gs], outputs=[out], name=g.name or graph.unique_name(f"{base}_mul")),
    ]
    _replace(graph, g, nodes, out)


def _gather_block_quantized(graph: Graph, g: Node, qv: Value, sv: Value, zv: Value, bits: int, block: int) -> None:
    base = g.name or "gather"
    old = g.outputs[0]
    out = Value(graph.unique_name(f"{base}_dequantized"), FLOAT, old.shape if old is not None else None)
    node = Node(
        "GatherBlockQuantized",
        [qv, g.inputs[1], sv, zv],
        {"bits": bits, "block_size": block, "gather_axis": 0, "quantize_axis": 1},
        outputs=[out],
        domain=MS_DOMAIN,
        name=g.name or graph.unique_name(f"{base}_quantized"),
    )
    _replace(graph, g, [node], out)


def _dq_table(graph: Graph, base: str, q: np.ndarray, scale: np.ndarray, bits: int, block: int | None) -> Value:
    """The table as DequantizeLinear of constants (standard ops, constant scales: TensorRT's form)."""
    if bits == 4:
        import ml_dtypes

        qt = Tensor.from_numpy(q.astype(ml_dtypes.int4), onnx.TensorProto.INT4)
    else:
        qt = Tensor.from_numpy(q, copy=False)
    qv = graph.make_constant(qt, f"{base}_int{bits}")
    if block is None:
        sv = graph.make_constant(Tensor.from_numpy(scale.reshape(-1), copy=False), f"{base}_row_scale")
        attrs = {"axis": 0}
    else:
        sv = graph.make_constant(Tensor.from_numpy(scale, copy=False), f"{base}_block_scale")
        attrs = {"axis": 1, "block_size": block}
    return prepend_dequantize(graph, base, [qv, sv], attrs, q.shape)
