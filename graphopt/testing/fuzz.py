"""A fuzz harness for graphopt: deterministic mutants of the fixtures and an oracle that runs each one through the CLI
and the Python API in bounded subprocesses.

:func:`make_mutant` builds mutant ``index`` of ``seed`` (byte-level: bit flips, truncation, insertion, deletion,
splices; protobuf-level: dims, data types, raw_data length, attributes, op types, names, opsets, external data,
value_info shapes that lie, sparse initializers, subgraph bodies, huge generated shapes, non-UTF-8 names).
:func:`run_mutant` writes it to a private temporary folder and runs ``graphopt optimize`` at -O2 and -O3, with
``--quantize int8 --calib-random 2``, and ``graphopt.load``/``optimize``/``save`` from a child script; each child has
a timeout, an address-space limit, and its peak RSS is measured. The outcome of each run is a :class:`Run` whose
``verdict`` is ``ok``, ``clean-error`` or one of :data:`NON_FAILURES`, or else a failure (:func:`Run.failed`).

Used by ``tests/test_fuzz.py`` (a fixed seed under a time budget) and ``benchmarks/fuzz.py`` (longer runs).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx.numpy_helper
from onnx import TensorProto, helper

REPO = Path(__file__).resolve().parents[2]
FIXTURES = [
    "fixtures/cnn.onnx",
    "fixtures/control_flow.onnx",
    "fixtures/dynamic.onnx",
    "fixtures/transformer.onnx",
    "fixtures/real/concatnet.ts.onnx",
    "fixtures/real/vit.ts.onnx",
    "fixtures/real/bert.ts.onnx",
]
MODEL = "model.onnx"
BAIT = b"GRAPHOPT-FUZZ-BAIT-OUTSIDE-THE-MODEL-FOLDER!".ljust(64, b"#")
# Non-failures besides ok and clean-error: the input was already rejected by onnxruntime (or the checker), so what
# graphopt wrote cannot be held to a reference; or the original could not be run, so outputs were not compared.
NON_FAILURES = {"ok", "clean-error", "ok-input-invalid", "ok-unverified"}


# --------------------------------------------------------------------------------------------------------- mutator


@dataclass
class Mutant:
    seed: int
    index: int
    fixture: str
    mutations: list[str]
    model: bytes
    # other files beside the model (external data) and in the working directory (bait for reads outside the folder)
    files: dict[str, bytes] = field(default_factory=dict)
    cwd_files: dict[str, bytes] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.seed}:{self.index} {Path(self.fixture).name} [{'; '.join(self.mutations)}]"


def _fixture_bytes(fixture: str, cache: dict[str, bytes] = {}) -> bytes:  # noqa: B006 - deliberate memo
    if fixture not in cache:
        cache[fixture] = (REPO / fixture).read_bytes()
    return cache[fixture]


def _interesting_int(rng: random.Random) -> int:
    return rng.choice([0, 1, -1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, -(2**31), 2**32, 2**40, 2**62, -(2**63), 10**9])


# ---- byte level


def _bit_flip(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    b = bytearray(data)
    n = rng.choice([1, 1, 2, 4, 8, 32])
    for _ in range(n):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b), f"bitflip x{n}"


def _truncate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    cut = rng.choice([rng.randrange(len(data)), len(data) - rng.randrange(1, 64), rng.randrange(64)])
    cut = max(0, min(cut, len(data) - 1))
    return data[:cut], f"truncate@{cut}"


def _insert(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    i = rng.randrange(len(data) + 1)
    blob = bytes(rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)]) for _ in range(rng.choice([1, 2, 8, 100])))
    return data[:i] + blob + data[i:], f"insert {len(blob)}B@{i}"


def _delete(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    i = rng.randrange(len(data))
    n = rng.choice([1, 2, 8, 100, 1000])
    return data[:i] + data[i + n :], f"delete {n}B@{i}"


def _splice(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    other_name = rng.choice(FIXTURES)
    other = _fixture_bytes(other_name)
    i, j = rng.randrange(len(data)), rng.randrange(len(other))
    return data[:i] + other[j:], f"splice {i}+{Path(other_name).name}[{j}:]"


def _duplicate_range(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    i = rng.randrange(len(data))
    n = rng.choice([4, 16, 256])
    return data[:i] + data[i : i + n] * 2 + data[i + n :], f"duplicate {n}B@{i}"


BYTE_MUTATORS = [_bit_flip, _truncate, _insert, _delete, _splice, _duplicate_range]


# ---- protobuf level: each takes (rng, ModelProto, Mutant) and mutates the proto in place, returning a description


def _graphs(g: onnx.GraphProto) -> list[onnx.GraphProto]:
    out = [g]
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out += _graphs(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    out += _graphs(sub)
    return out


def _pick_graph(rng: random.Random, m: onnx.ModelProto) -> onnx.GraphProto:
    return rng.choice(_graphs(m.graph))


def _value_infos(g: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    return [*g.input, *g.output, *g.value_info]


def _m_dims(rng, m, mut):
    g = _pick_graph(rng, m)
    if g.initializer and rng.random() < 0.5:
        t = rng.choice(g.initializer)
        if not t.dims:
            t.dims.append(_interesting_int(rng))
        else:
            k = rng.randrange(len(t.dims))
            t.dims[k] = _interesting_int(rng)
        return f"initializer {t.name} dims -> {list(t.dims)}"
    vis = [v for v in _value_infos(g) if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")]
    if not vis:
        return None
    v = rng.choice(vis)
    dims = v.type.tensor_type.shape.dim
    if not dims:
        dims.add().dim_value = _interesting_int(rng) & 0x7FFFFFFF
        return f"{v.name} gains a dim"
    d = rng.choice(dims)
    choice = rng.random()
    if choice < 0.4:
        d.dim_value = rng.choice([0, 1, 5, 4096, 2**31 - 1])
    elif choice < 0.7:
        d.dim_param = rng.choice(["N", "batch", "", "x y"])
    else:
        del dims[rng.randrange(len(dims))]
    return f"{v.name} shape -> {[x.dim_value or x.dim_param for x in dims]}"


_TYPES = [t for t in TensorProto.DataType.values() if t != TensorProto.UNDEFINED] + [0, 99]


def _m_dtype(rng, m, mut):
    g = _pick_graph(rng, m)
    new = rng.choice(_TYPES)
    if g.initializer and rng.random() < 0.5:
        t = rng.choice(g.initializer)
        t.data_type = new
        return f"initializer {t.name} data_type -> {new}"
    vis = [v for v in _value_infos(g) if v.type.HasField("tensor_type")]
    if not vis:
        return None
    v = rng.choice(vis)
    v.type.tensor_type.elem_type = new
    return f"{v.name} elem_type -> {new}"


def _m_raw_data(rng, m, mut):
    inits = [t for g in _graphs(m.graph) for t in g.initializer if t.HasField("raw_data")]
    consts = [
        a.t for g in _graphs(m.graph) for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
    ]
    pool = inits + [t for t in consts if t.HasField("raw_data")]
    if not pool:
        return None
    t = rng.choice(pool)
    n = len(t.raw_data)
    how = rng.choice(["short", "long", "empty", "odd"])
    if how == "short":
        t.raw_data = t.raw_data[: rng.randrange(n + 1)]
    elif how == "long":
        t.raw_data = t.raw_data + bytes(rng.choice([1, 4, 1000, 100000]))
    elif how == "empty":
        t.raw_data = b""
    else:
        t.raw_data = t.raw_data + b"\x01"
    return f"raw_data of {t.name or 'constant'} {how} ({n} -> {len(t.raw_data)} B)"


def _m_attribute(rng, m, mut):
    g = _pick_graph(rng, m)
    nodes = [n for n in g.node if n.attribute]
    if not nodes:
        return None
    n = rng.choice(nodes)
    a = rng.choice(n.attribute)
    how = rng.choice(["value", "value", "type", "remove", "add", "duplicate"])
    if how == "value":
        if a.type == onnx.AttributeProto.INT:
            a.i = _interesting_int(rng)
        elif a.type == onnx.AttributeProto.INTS:
            if a.ints and rng.random() < 0.7:
                a.ints[rng.randrange(len(a.ints))] = _interesting_int(rng)
            else:
                a.ints.append(_interesting_int(rng))
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30])
        elif a.type == onnx.AttributeProto.STRING:
            a.s = rng.choice([b"", b"NOTSET", b"\xff\xfe", b"SAME_UPPER", b"bogus"])
        elif a.type == onnx.AttributeProto.TENSOR:
            a.t.dims.append(_interesting_int(rng) & 0xFFFF)
        else:
            a.type = onnx.AttributeProto.INT
            a.i = 3
        return f"{n.op_type} {a.name} value changed"
    if how == "type":
        a.type = rng.choice([t for t in onnx.AttributeProto.AttributeType.values() if t != a.type])
        return f"{n.op_type} {a.name} type -> {a.type}"
    if how == "remove":
        n.attribute.remove(a)
        return f"{n.op_type} {a.name} removed"
    if how == "add":
        n.attribute.append(helper.make_attribute(rng.choice(["axis", "bogus", "perm", "to"]), _interesting_int(rng)))
        return f"{n.op_type} gains attribute"
    n.attribute.append(copy.deepcopy(a))
    return f"{n.op_type} {a.name} duplicated"


_OPS = [
    "Relu", "Add", "Mul", "Sub", "Div", "MatMul", "Gemm", "Conv", "Identity", "Transpose", "Reshape", "Concat",
    "Softmax", "Gather", "Shape", "Cast", "Squeeze", "Unsqueeze", "Expand", "Tile", "ConstantOfShape", "Range",
    "ReduceSum", "Slice", "Split", "Where", "Pow", "Sqrt", "BatchNormalization", "LayerNormalization", "Flatten",
    "QuantizeLinear", "DequantizeLinear", "Loop", "If", "Dropout", "Neg", "NoSuchOp",
]  # fmt: skip


def _m_op_type(rng, m, mut):
    g = _pick_graph(rng, m)
    if not g.node:
        return None
    n = rng.choice(g.node)
    old = n.op_type
    if rng.random() < 0.85:
        n.op_type = rng.choice(_OPS)
        return f"op {n.name or old}: {old} -> {n.op_type}"
    n.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "bogus.domain", "ai.onnx"])
    return f"op {n.name or old} domain -> {n.domain}"


def _m_names(rng, m, mut):
    g = _pick_graph(rng, m)
    if not g.node:
        return None
    how = rng.choice(["swap-inputs", "drop-input", "dup-output", "rename-output", "output-is-input", "no-outputs",
                      "extra-input", "empty-name", "remove-node"])  # fmt: skip
    n = rng.choice(g.node)
    if how == "swap-inputs" and len(n.input) >= 2:
        i, j = rng.sample(range(len(n.input)), 2)
        n.input[i], n.input[j] = n.input[j], n.input[i]
    elif how == "drop-input" and n.input:
        del n.input[rng.randrange(len(n.input))]
    elif how == "dup-output" and len(g.node) >= 2 and n.output:
        other = rng.choice(g.node)
        if other.output:
            other.output[0] = n.output[0]
    elif how == "rename-output" and g.output:
        rng.choice(g.output).name = rng.choice(["nonexistent", n.input[0] if n.input else "x"])
    elif how == "output-is-input" and g.input:
        g.output.append(copy.deepcopy(rng.choice(g.input)))
    elif how == "no-outputs":
        del g.output[:]
    elif how == "extra-input" and n.input:
        g.input.append(helper.make_tensor_value_info(n.input[0], TensorProto.FLOAT, None))
    elif how == "empty-name" and n.input:
        n.input[rng.randrange(len(n.input))] = ""
    elif how == "remove-node":
        g.node.remove(n)
    else:
        return None
    return f"names: {how} at {n.op_type}"


def _m_opset(rng, m, mut):
    how = rng.choice(["version", "version", "remove", "add", "ir"])
    if how == "version":
        o = rng.choice(m.opset_import)
        o.version = rng.choice([1, 6, 7, 9, 11, 13, 15, 18, 19, 20, 21, 22, 23, 30, 1000, -1])
        return f"opset {o.domain or 'ai.onnx'} -> {o.version}"
    if how == "remove":
        o = rng.choice(m.opset_import)
        m.opset_import.remove(o)
        return f"opset {o.domain or 'ai.onnx'} removed"
    if how == "add":
        m.opset_import.append(helper.make_opsetid(rng.choice(["", "com.microsoft", "x.y"]), rng.choice([1, 99])))
        return "opset import added"
    m.ir_version = rng.choice([1, 3, 4, 7, 9, 10, 11, 12, 99])
    return f"ir_version -> {m.ir_version}"


def _externalize(rng, m, mut, location="model.onnx.data"):
    """Move the larger initializers to ``location`` (beside the model) and return the moved tensors."""
    inits = [t for t in m.graph.initializer if t.HasField("raw_data") and len(t.raw_data) >= 64]
    if not inits:
        return []
    moved = rng.sample(inits, min(len(inits), rng.choice([1, 3, 100])))
    blob = bytearray(mut.files.get(location, b""))
    for t in moved:
        off = len(blob)
        blob += t.raw_data
        blob += bytes((-len(blob)) % 64)
        entries = {"location": location, "offset": str(off), "length": str(len(t.raw_data))}
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in entries.items():
            e = t.external_data.add()
            e.key, e.value = k, v
    mut.files[location] = bytes(blob)
    return moved


def _set_entry(t: TensorProto, key: str, value: str | None) -> None:
    for e in list(t.external_data):
        if e.key == key:
            t.external_data.remove(e)
    if value is not None:
        e = t.external_data.add()
        e.key, e.value = key, value


def _m_external(rng, m, mut):
    moved = _externalize(rng, m, mut)
    if not moved:
        return None
    t = rng.choice(moved)
    how = rng.choice(["valid", "valid", "offset", "length", "location", "location", "bait-cwd", "bait-parent",
                      "missing-file", "no-location", "checksum", "truncated-file"])  # fmt: skip
    if how == "offset":
        offsets = ["0x0", "1e3", "-5", "abc", "", " 0", "99999999999", "18446744073709551616"]
        _set_entry(t, "offset", rng.choice(offsets))
    elif how == "length":
        _set_entry(t, "length", rng.choice(["0", "-1", "1e3", "0x10", "99999999999", "3"]))
    elif how == "location":
        places = ["/etc/hostname", "../outside.bin", "model.onnx", ".", "sub/../model.onnx.data", "x" * 300,
                  "/dev/zero", "", "model.onnx.data\x00"]  # fmt: skip
        _set_entry(t, "location", rng.choice(places))
    elif how == "bait-cwd":
        # a file that exists only in the working directory: reading it means resolving against the CWD
        _set_entry(t, "location", "bait.bin")
        mut.cwd_files["bait.bin"] = BAIT * (len(mut.files["model.onnx.data"]) // len(BAIT) + 1)
    elif how == "bait-parent":
        _set_entry(t, "location", "../bait.bin")
    elif how == "missing-file":
        _set_entry(t, "location", "missing.data")
    elif how == "no-location":
        _set_entry(t, "location", None)
    elif how == "checksum":
        _set_entry(t, "checksum", "deadbeef")
    elif how == "truncated-file":
        data = mut.files["model.onnx.data"]
        mut.files["model.onnx.data"] = data[: rng.randrange(len(data))]
    return f"external data ({len(moved)} tensors) {how} on {t.name}"


_SHAPE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand", "MatMul", "Concat"}


def _m_value_info_lie(rng, m, mut):
    g = m.graph
    outs = [o for n in g.node for o in n.output if o]
    if not outs:
        return None
    produced = set(outs)
    # half the time, lie about a value whose shape a rewrite would rely on (the data input of a shape-changing op)
    shaped = [n.input[0] for n in g.node if n.op_type in _SHAPE_OPS and n.input and n.input[0] in produced]
    name = rng.choice(shaped if shaped and rng.random() < 0.5 else outs)
    shapes = {v.name: v for v in g.value_info}
    if name not in shapes:
        inferred = {}
        with contextlib.suppress(Exception):
            inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
        if name not in inferred:
            g.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [rng.randint(1, 4)] * 2))
            return f"value_info for {name} invented"
        g.value_info.append(inferred[name])
        shapes[name] = g.value_info[-1]
    v = shapes[name]
    dims = v.type.tensor_type.shape.dim
    how = rng.choice(["reverse", "swap-type", "drop-dim", "static", "as-target", "as-target"])
    inits = {t.name: t for t in g.initializer}
    targets = [
        [int(x) for x in onnx.numpy_helper.to_array(inits[n.input[1]]).reshape(-1)]
        for n in g.node
        if n.op_type == "Reshape" and n.input[0] == name and len(n.input) > 1 and n.input[1] in inits
    ]
    if how == "as-target" and targets:
        # claim that the input of a Reshape already has the Reshape's target shape (a no-op reshape, if believed)
        del dims[:]
        for x in targets[0]:
            dims.add().dim_value = x if x > 0 else 1
    elif how in ("reverse", "as-target") and len(dims) >= 2:
        vals = [(d.dim_value, d.dim_param) for d in dims][::-1]
        for d, (dv, dp) in zip(dims, vals, strict=True):
            if dp:
                d.dim_param = dp
            else:
                d.dim_value = dv
    elif how == "swap-type":
        v.type.tensor_type.elem_type = rng.choice([TensorProto.FLOAT16, TensorProto.INT64, TensorProto.DOUBLE])
    elif how == "drop-dim" and dims:
        del dims[rng.randrange(len(dims))]
    else:
        for d in dims:
            d.dim_value = rng.choice([1, 2, 3, 7])
    return f"value_info for {name} lies ({how})"


def _m_sparse(rng, m, mut):
    import numpy as np
    from onnx import numpy_helper

    inits = [
        t
        for t in m.graph.initializer
        if t.dims and len(t.dims) <= 2 and t.data_type == TensorProto.FLOAT and t.data_location != TensorProto.EXTERNAL
    ]
    if not inits:
        return None
    t = rng.choice(inits)
    arr = numpy_helper.to_array(t).copy()
    flat = arr.reshape(-1)
    flat[::2] = 0
    idx = np.nonzero(flat)[0].astype(np.int64)
    values = numpy_helper.from_array(flat[idx].astype(np.float32), t.name)
    indices = numpy_helper.from_array(idx, t.name + "_indices")
    how = rng.choice(["valid", "valid", "bad-index", "bad-dims", "external-cwd", "dup-name"])
    if how == "bad-index" and idx.size:
        indices = numpy_helper.from_array(idx + rng.choice([1, 10**6, -(10**6)]), t.name + "_indices")
    sp = helper.make_sparse_tensor(values, indices, list(arr.shape) if how != "bad-dims" else [1, 2, 3])
    if how == "external-cwd":
        raw = sp.values.raw_data
        sp.values.ClearField("raw_data")
        sp.values.data_location = TensorProto.EXTERNAL
        for k, v in {"location": "bait.bin", "offset": "0", "length": str(len(raw))}.items():
            e = sp.values.external_data.add()
            e.key, e.value = k, v
        mut.cwd_files["bait.bin"] = BAIT * (len(raw) // len(BAIT) + 1)
    if how != "dup-name":
        m.graph.initializer.remove(t)
    m.graph.sparse_initializer.append(sp)
    return f"sparse initializer {t.name} ({how})"


def _m_subgraph(rng, m, mut):
    subs = _graphs(m.graph)[1:]
    if not subs:
        return None
    g = rng.choice(subs)
    how = rng.choice(["op", "names", "empty", "output"])
    if how == "op" and g.node:
        n = rng.choice(g.node)
        n.op_type = rng.choice(_OPS)
    elif how == "names" and g.node:
        n = rng.choice(g.node)
        if n.input:
            n.input[0] = rng.choice(["", "undefined_outer", n.input[-1]])
    elif how == "empty":
        del g.node[:]
    elif how == "output" and g.output:
        g.output.append(copy.deepcopy(g.output[0]))
    else:
        return None
    return f"subgraph {g.name}: {how}"


def _m_huge(rng, m, mut):
    """Append a generator of a huge tensor (ConstantOfShape/Expand/Tile/Range) feeding a new graph output."""
    g = m.graph
    n = rng.choice([2**28, 2**31, 10**10, 2**40])
    op = rng.choice(["ConstantOfShape", "Expand", "Tile", "Range"])
    name = f"fuzz_huge_{op}"
    shape = helper.make_tensor(name + "_shape", TensorProto.INT64, [2], [n // 1024, 1024])
    one = helper.make_tensor(name + "_one", TensorProto.FLOAT, [1, 1], [1.0])
    g.initializer.extend([shape, one])
    if op == "ConstantOfShape":
        node = helper.make_node(op, [shape.name], [name])
    elif op in ("Expand", "Tile"):
        node = helper.make_node(op, [one.name, shape.name], [name])
    else:
        lim = helper.make_tensor(name + "_lim", TensorProto.FLOAT, [], [float(n)])
        zero = helper.make_tensor(name + "_zero", TensorProto.FLOAT, [], [0.0])
        step = helper.make_tensor(name + "_step", TensorProto.FLOAT, [], [1.0])
        g.initializer.extend([lim, zero, step])
        node = helper.make_node(op, [zero.name, lim.name, step.name], [name])
    red = helper.make_node("ReduceSum", [name], [name + "_sum"], keepdims=0)
    g.node.extend([node, red])
    g.output.append(helper.make_tensor_value_info(name + "_sum", TensorProto.FLOAT, []))  # typed: the checker accepts
    return f"huge {op} of {n} elements"


def _m_zero_dim(rng, m, mut):
    g = m.graph
    if not g.input:
        return None
    v = rng.choice(g.input)
    dims = v.type.tensor_type.shape.dim
    if not dims:
        return None
    d = rng.choice(dims)
    d.dim_value = 0
    return f"input {v.name} gets a 0-sized dim"


PROTO_MUTATORS: list[Callable] = [
    _m_dims, _m_dtype, _m_raw_data, _m_attribute, _m_op_type, _m_names, _m_opset, _m_external, _m_external,
    _m_value_info_lie, _m_value_info_lie, _m_sparse, _m_subgraph, _m_huge, _m_zero_dim,
]  # fmt: skip


def _non_utf8_name(rng: random.Random, m: onnx.ModelProto, data: bytes) -> tuple[bytes, str] | None:
    """Replace one byte of a node or value name in the serialized model by 0xFF (same length, so still parseable)."""
    names = [n.name for n in m.graph.node if n.name] + [o for n in m.graph.node for o in n.output if len(o) > 1]
    if not names:
        return None
    name = rng.choice(names).encode()
    i = data.find(b"\n" + bytes([len(name)]) + name) if len(name) < 128 else -1
    if i < 0:
        i = data.find(name)
        if i < 0:
            return None
    else:
        i += 2
    b = bytearray(data)
    b[i] = 0xFF
    return bytes(b), f"non-UTF-8 name {name[:30]!r}"


def make_mutant(seed: int, index: int, fixtures: list[str] | None = None) -> Mutant:
    """Mutant ``index`` of ``seed``: the same arguments always give the same bytes."""
    rng = random.Random(f"graphopt-fuzz:{seed}:{index}")
    fixture = rng.choice(fixtures or FIXTURES)
    data = _fixture_bytes(fixture)
    mut = Mutant(seed, index, fixture, [], data)
    kind = rng.random()
    if kind < 0.3:
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            if not data:
                break
            data, what = rng.choice(BYTE_MUTATORS)(rng, data)
            mut.mutations.append(what)
        mut.model = data
        return mut
    m = onnx.load_from_string(data)
    utf8 = kind > 0.95
    for _ in range(rng.choice([1, 1, 1, 2])):
        for _attempt in range(10):
            mutator = rng.choice(PROTO_MUTATORS)
            try:
                what = mutator(rng, m, mut)
            except Exception:  # a mutator that cannot apply to this model (deterministically): try another
                what = None
            if what:
                mut.mutations.append(what)
                break
    data = m.SerializeToString()
    if utf8:
        done = _non_utf8_name(rng, m, data)
        if done:
            data = done[0]
            mut.mutations.append(done[1])
    mut.model = data
    return mut


# ---------------------------------------------------------------------------------------------------------- oracle


@dataclass
class Limits:
    timeout: float = 60.0  # seconds per child
    address_space: int = 4 << 30  # RLIMIT_AS of each child
    peak_rss: int = 1 << 30  # a run whose peak RSS exceeds this fails (graphopt needs ~250 MB on these fixtures)


@dataclass
class Run:
    command: str  # O2, O3, quant, api
    argv: list[str]
    verdict: str = "?"
    returncode: int | None = None
    seconds: float = 0.0
    peak_rss: int = 0
    stderr: str = ""
    detail: str = ""

    def failed(self) -> bool:
        return self.verdict not in NON_FAILURES

    @property
    def first_line(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        if "Traceback (most recent call last)" in self.stderr:
            after = self.stderr.rsplit("Traceback (most recent call last)", 1)[1].splitlines()
            exc = [ln for ln in after if ln.strip() and not ln[0].isspace() and not ln.startswith(":")]
            if exc:
                return exc[-1][:200]
        return (self.detail or (lines[0] if lines else ""))[:200]

    def signature(self) -> str:
        """Verdict, exception type and innermost graphopt frame: the key failures are deduplicated by."""
        if self.verdict != "traceback":  # no figures in the key: one memory blow-up is one signature whatever its size
            return f"{self.verdict} [{self.command}] {self.detail if self.verdict == 'signal' else ''}".strip()
        exc = self.first_line.split(":")[0].rsplit(".", 1)[-1]
        frames = re.findall(r'File "([^"]+)", line \d+, in (\S+)', self.stderr)
        own = [(f, fn) for f, fn in frames if re.search(r"/(graphopt|passes|kernels)/", f) and "site-packages" not in f]
        where = f"{'/'.join(Path(own[-1][0]).parts[-2:])}:{own[-1][1]}" if own else "(no graphopt frame)"
        return f"traceback {exc} at {where}"


@dataclass
class Result:
    mutant: Mutant
    runs: list[Run]
    reference: str = ""  # how the original mutant fared under onnxruntime

    @property
    def failures(self) -> list[Run]:
        return [r for r in self.runs if r.failed()]


COMMANDS = {
    "O2": ["-O2"],
    "O3": ["-O3"],
    "quant": ["--quantize", "int8", "--calib-random", "2"],
}

API_SCRIPT = textwrap.dedent(
    """
    import sys
    import graphopt
    from graphopt.errors import GraphoptError
    try:
        model = graphopt.load(sys.argv[1])
        model = graphopt.optimize(model, level=2)
        graphopt.save(model, sys.argv[2])
    except GraphoptError as e:
        print(f"graphopt: error: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        sys.exit(2)
    """
)

VERIFY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import onnx, onnxruntime as ort
    job = json.load(open(sys.argv[1]))
    out = open(sys.argv[2], "a")
    def say(**kw):
        out.write(json.dumps(kw) + "\\n"); out.flush()
    ort.set_default_logger_severity(4)
    def session(path):
        so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1; so.log_severity_level = 4
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
             "tensor(bool)": np.bool_, "tensor(int16)": np.int16}
    def random_ops(path):
        m = onnx.load(path, load_external_data=False)
        ops = set()
        def walk(g):
            for n in g.node:
                ops.add(n.op_type if n.op_type != "Dropout" or len(n.input) < 3 else "RandomDropout")
                for a in n.attribute:
                    if a.type == onnx.AttributeProto.GRAPH: walk(a.g)
                    for s in a.graphs: walk(s)
        walk(m.graph)
        return any(o.startswith("Random") or o in ("Multinomial", "Bernoulli") for o in ops)
    feeds = ref = None
    rand = job.get("random", False)
    for item in job["items"]:
        key = item["key"]
        if item.get("skip"):
            continue
        try:
            if key == "ref":
                try:
                    onnx.checker.check_model(item["path"])
                    say(key="checker", ok=True)
                except Exception as e:
                    say(key="checker", ok=False, why=str(e).splitlines()[0][:150] if str(e) else type(e).__name__)
                try:
                    s = session(item["path"])
                except Exception as e:
                    say(key=key, status="no-session", why=str(e).splitlines()[0][:150]); continue
                rng = np.random.default_rng(job["seed"])
                feeds = {}
                for i in s.get_inputs():
                    shape = [d if isinstance(d, int) and d >= 0 else 1 for d in i.shape]
                    if i.type not in TYPES or int(np.prod(shape)) > 10**7:
                        feeds = None; break
                    t = TYPES[i.type]
                    if t is np.bool_:
                        feeds[i.name] = rng.random(shape) < 0.5
                    elif np.issubdtype(t, np.integer):
                        feeds[i.name] = rng.integers(0, 3, shape).astype(t)
                    else:
                        feeds[i.name] = rng.standard_normal(shape).astype(t)
                if feeds is None:
                    say(key=key, status="session-only", why="inputs cannot be generated"); continue
                np.savez(job["feeds"], **feeds)
                say(key=key, status="session-only", why="running")
                try:
                    res = s.run(None, feeds)
                except Exception as e:
                    say(key=key, status="run-failed", why=str(e).splitlines()[0][:150]); continue
                ref = {o.name: r for o, r in zip(s.get_outputs(), res)}
                np.savez(job["ref"], **{f"o{k}": v for k, v in enumerate(res)})
                json.dump([o.name for o in s.get_outputs()], open(job["ref"] + ".names", "w"))
                rand = random_ops(item["path"])
                say(key=key, status="ran", random=rand)
                continue
            if feeds is None and job.get("have_ref"):
                f = np.load(job["feeds"]); feeds = {k: f[k] for k in f.files}
                r = np.load(job["ref"]); names = json.load(open(job["ref"] + ".names"))
                ref = {n: r[f"o{k}"] for k, n in enumerate(names)}
            try:
                onnx.checker.check_model(item["path"])
            except Exception as e:
                say(key=key, verdict="rejected-checker", why=str(e).splitlines()[0][:150] if str(e) else ""); continue
            try:
                s = session(item["path"])
            except Exception as e:
                say(key=key, verdict="rejected-ort", why=str(e).splitlines()[0][:150]); continue
            if ref is None:
                say(key=key, verdict="session-ok"); continue
            try:
                res = s.run(None, feeds)
            except Exception as e:
                say(key=key, verdict="rejected-ort-run", why=str(e).splitlines()[0][:150]); continue
            if item["tol"] is None or rand:
                say(key=key, verdict="ok"); continue
            got = {o.name: r for o, r in zip(s.get_outputs(), res)}
            why = ""
            if list(got) != list(ref):
                why = f"outputs {list(got)} != {list(ref)}"
            for n in ref:
                if why: break
                a, b = ref[n], got[n]
                if a.shape != b.shape or a.dtype != b.dtype:
                    why = f"{n}: {b.dtype}{list(b.shape)} != {a.dtype}{list(a.shape)}"
                elif a.dtype.kind in "fc":
                    rtol, atol, rel = item["tol"]
                    fin = np.isfinite(a)
                    scale = float(np.abs(a[fin]).max()) if fin.any() else 0.0
                    if not np.allclose(b, a, rtol=rtol, atol=atol + rel * scale, equal_nan=True):
                        d = np.abs(b.astype(np.float64) - a.astype(np.float64))
                        why = f"{n}: max abs diff {np.nanmax(d) if d.size else 0:.3g} (scale {scale:.3g})"
                elif not np.array_equal(a, b):
                    why = f"{n}: values differ"
            say(key=key, verdict="differs" if why else "ok", why=why)
        except Exception as e:
            say(key=key, verdict="verifier-error", why=f"{type(e).__name__}: {e}"[:150])
    """
)

TOLERANCE = {"O2": (1e-3, 1e-4, 0.0), "api": (1e-3, 1e-4, 0.0), "O3": (1e-3, 1e-4, 1e-3), "quant": None}


def _limit(address_space: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return preexec


_HWM_WRAPPER = textwrap.dedent(
    """
    import atexit, os, sys
    def _hwm():
        with open("/proc/self/status") as f:
            kb = next((line.split()[1] for line in f if line.startswith("VmHWM:")), None)
        if kb:
            with open(os.environ["GRAPHOPT_FUZZ_HWM"], "w") as out:
                out.write(kb)
    atexit.register(_hwm)
    kind, what = sys.argv[1], sys.argv[2]
    del sys.argv[1:3]
    if kind == "-m":
        import runpy
        runpy.run_module(what, run_name="__main__", alter_sys=True)
    else:
        sys.argv[0] = "-c"
        exec(compile(what, "<string>", "exec"), {"__name__": "__main__"})
    """
)
"""Runs a ``python -m MOD`` or ``python -c CODE`` child and writes its own peak RSS (VmHWM) at exit: the child's
ru_maxrss would start at the parent's RSS (Linux carries it across fork and exec), which inside a large pytest
process is far above the bound."""


def run_child(argv: list[str], *, cwd: Path, env: dict[str, str], limits: Limits, log: Path) -> tuple:
    """Run ``argv`` under the limits; return (returncode or -signal or None on timeout, seconds, peak RSS, stderr)."""
    hwm = log.with_suffix(".hwm")
    hwm.unlink(missing_ok=True)
    if len(argv) > 2 and argv[0] == sys.executable and argv[1] in ("-m", "-c"):
        argv = [sys.executable, "-c", _HWM_WRAPPER, *argv[1:]]
        env = {**env, "GRAPHOPT_FUZZ_HWM": str(hwm)}
    start = time.monotonic()
    with open(log, "wb") as err, open(os.devnull, "wb") as null:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=null, stderr=err,
            preexec_fn=_limit(limits.address_space), start_new_session=True,
        )  # fmt: skip
        status = usage = None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > limits.timeout:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                status = None
                break
            time.sleep(0.02)
        proc.returncode = 0  # reaped by wait4; keep Popen from waiting again
    seconds = time.monotonic() - start
    rc = None if status is None else os.waitstatus_to_exitcode(status)
    try:  # the child's own figure; without it (killed, or not a Python child) the kernel's, which may be too high
        peak = int(hwm.read_text()) * 1024
    except (OSError, ValueError):
        peak = usage.ru_maxrss * 1024
    return rc, seconds, peak, log.read_text(errors="replace")


def _snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif not p.is_dir():
            out[str(p.relative_to(folder))] = "special"
    return out


def write_mutant(mutant: Mutant, root: Path) -> None:
    """Lay the mutant out under ``root``: in/ (model and its files), work/ (the children's CWD and bait)."""
    (root / "in").mkdir(parents=True)
    (root / "work").mkdir()
    (root / "in" / MODEL).write_bytes(mutant.model)
    for name, data in mutant.files.items():
        (root / "in" / name).write_bytes(data)
    for name, data in mutant.cwd_files.items():
        (root / "work" / name).write_bytes(data)
    (root / "bait.bin").write_bytes(BAIT * 64)


def _contains_bait(folder: Path) -> bool:
    return any(BAIT[:32] in p.read_bytes() for p in folder.rglob("*") if p.is_file())


def run_mutant(
    mutant: Mutant, root: Path, *, limits: Limits | None = None, commands: list[str] | None = None
) -> Result:
    """Run every command on ``mutant`` inside ``root`` (created; the caller removes it) and judge each run."""
    limits = limits or Limits()
    commands = commands or [*COMMANDS, "api"]
    write_mutant(mutant, root)
    for sub in ("home", "cache", "tmp"):
        (root / sub).mkdir()
    env = dict(os.environ)
    env.update(
        HOME=str(root / "home"), TMPDIR=str(root / "tmp"), XDG_CACHE_HOME=str(root / "cache"),
        GRAPHOPT_CACHE_DIR=str(root / "cache" / "graphopt"), OMP_NUM_THREADS="1", PYTHONHASHSEED="0",
        PYTHONDONTWRITEBYTECODE="1",
    )  # fmt: skip
    env.pop("PYTHONWARNINGS", None)
    src = root / "in" / MODEL
    before_in, before_work = _snapshot(root / "in"), _snapshot(root / "work")
    runs: list[Run] = []
    for cmd in commands:
        out_dir = root / f"out_{cmd}"
        out_dir.mkdir()
        out = out_dir / MODEL
        if cmd == "api":
            argv = [sys.executable, "-c", API_SCRIPT, str(src), str(out)]
        else:
            argv = [sys.executable, "-m", "graphopt", "optimize", str(src), "-o", str(out), *COMMANDS[cmd]]
        run = Run(cmd, argv)
        rc, run.seconds, run.peak_rss, run.stderr = run_child(
            argv, cwd=root / "work", env=env, limits=limits, log=root / f"stderr_{cmd}.txt"
        )
        run.returncode = rc
        lines = run.stderr.rstrip("\n").split("\n") if run.stderr.strip() else []
        left = sorted(p.name for p in out_dir.iterdir())
        if rc is None:
            run.verdict, run.detail = "timeout", f"killed after {limits.timeout:.0f} s"
        elif rc < 0:
            run.verdict, run.detail = "signal", f"signal {-rc} ({signal.Signals(-rc).name})"
        elif "Traceback (most recent call last)" in run.stderr:
            run.verdict = "traceback"
        elif run.peak_rss > limits.peak_rss:
            run.verdict, run.detail = "memory", f"peak RSS {run.peak_rss >> 20} MB"
        elif _snapshot(root / "in") != before_in:
            run.verdict, run.detail = "input-modified", "the input folder changed"
        elif _snapshot(root / "work") != before_work:
            run.verdict, run.detail = "stray-file", "files written to the working directory"
        elif rc == 2:
            # one error line, last; graphopt's own one-line warnings may come before it (e.g. --calib-random's)
            errors = [ln for ln in lines if not ln.startswith("graphopt: warning: ")]
            ok = len(errors) == 1 and errors[0].startswith("graphopt: error:") and lines[-1] == errors[0]
            run.verdict = "clean-error" if ok else "messy-error"
            run.detail = "" if ok else f"{len(lines)} stderr lines"
            if ok and left:
                run.verdict, run.detail = "half-written", f"left {left} after exit 2"
        elif rc != 0:
            run.verdict, run.detail = "exit-code", f"exit {rc}"
            if left:
                run.verdict, run.detail = "half-written", f"left {left} after exit {rc}"
        elif not out.is_file() or any(n.endswith(".tmp") for n in left):
            run.verdict, run.detail = "half-written", f"exit 0 but output folder holds {left}"
        elif _contains_bait(out_dir):
            run.verdict, run.detail = "read-outside", "bait bytes from outside the model folder in the output"
        else:
            run.verdict = "pending"  # exit 0: judged by the verifier below
        runs.append(run)
    reference = _verify(mutant, root, runs, limits, env)
    return Result(mutant, runs, reference)


def _verify(mutant: Mutant, root: Path, runs: list[Run], limits: Limits, env: dict[str, str]) -> str:
    """Check the outputs of the exit-0 runs with the checker and onnxruntime, against the mutant's own outputs."""
    pending = [r for r in runs if r.verdict == "pending"]
    if not pending:
        return "not needed"
    items = [{"key": "ref", "path": str(root / "in" / MODEL)}] + [
        {"key": r.command, "path": str(root / f"out_{r.command}" / MODEL), "tol": TOLERANCE[r.command]} for r in pending
    ]
    job = {"seed": mutant.index, "feeds": str(root / "feeds.npz"), "ref": str(root / "ref.npz"), "items": items}
    results: dict[str, dict] = {}
    log = root / "verify.jsonl"
    while True:
        (root / "job.json").write_text(json.dumps(job))
        rc, _, _, stderr = run_child(
            [sys.executable, "-c", VERIFY_SCRIPT, str(root / "job.json"), str(log)],
            cwd=root / "work", env=env, limits=limits, log=root / "verify_stderr.txt",
        )  # fmt: skip
        results = {}
        for line in log.read_text().splitlines():
            d = json.loads(line)
            results[d["key"]] = d
        todo = [it for it in job["items"] if not it.get("skip") and it["key"] not in results]
        if rc == 0 or not todo:
            break
        # the verifier died on todo[0] (onnxruntime crashed, hung or ran out of memory): record it and go on
        why = "timeout" if rc is None else f"exit {rc}"
        results[todo[0]["key"]] = {"key": todo[0]["key"], "status": "crash", "verdict": "ort-crash", "why": why}
        log.write_text("".join(json.dumps(v) + "\n" for v in results.values()))
        for it in job["items"]:
            it["skip"] = it["key"] in results
        job["have_ref"] = results.get("ref", {}).get("status") == "ran"
        job["random"] = results.get("ref", {}).get("random", False)
    ref = results.get("ref", {})
    ran = ref.get("status") == "ran"
    session_ok = ref.get("status") in ("ran", "session-only")
    input_valid = results.get("checker", {}).get("ok", False)
    for r in pending:
        d = results.get(r.command, {"verdict": "verifier-error", "why": "no result"})
        v, why = d["verdict"], d.get("why", "")
        if v == "session-ok":
            v = "ok-unverified" if not ran else "ok"
        if v == "ok" and not ran:
            v = "ok-unverified"
        if v == "rejected-checker" and not input_valid:
            v = "ok-input-invalid"
        if v in ("rejected-ort", "rejected-ort-run", "ort-crash") and not (ran if v != "rejected-ort" else session_ok):
            v = "ok-input-invalid"
        r.verdict, r.detail = v, why
    return f"{ref.get('status', 'crash')}{'' if input_valid else ' (checker rejects input)'}"


# ------------------------------------------------------------------------------------------------------- campaigns


def run_one(seed: int, index: int, *, limits: Limits | None = None, keep: Path | None = None,
            commands: list[str] | None = None) -> Result:  # fmt: skip
    """Build and run one mutant in a fresh temporary folder; copy the folder to ``keep`` (if given) and remove it."""
    mutant = make_mutant(seed, index)
    tmp = Path(tempfile.mkdtemp(prefix=f"graphopt-fuzz-{seed}-{index}-"))
    try:
        result = run_mutant(mutant, tmp / "m", limits=limits, commands=commands)
        if keep is not None and (result.failures or keep_all(keep)):
            dest = keep / f"{seed}-{index}"
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(tmp / "m", dest, symlinks=True)
            (dest / "mutant.txt").write_text(
                f"{mutant.label}\nreference: {result.reference}\n"
                + "".join(f"{r.command}: {r.verdict} {r.detail} :: {r.first_line}\n" for r in result.runs)
            )
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def keep_all(keep: Path) -> bool:
    return (keep / ".keep-all").exists()


def format_failure(result: Result, run: Run) -> str:
    return (
        f"seed {result.mutant.seed} index {result.mutant.index} {Path(result.mutant.fixture).name} "
        f"[{'; '.join(result.mutant.mutations)[:120]}] {run.command}: {run.verdict}: {run.first_line}"
    )


def reproduce_command(result: Result) -> str:
    return f"python benchmarks/fuzz.py --seed {result.mutant.seed} --index {result.mutant.index} --keep /tmp/fuzz-repro"


def run_campaign(
    seed: int,
    indices: list[int],
    *,
    jobs: int = 1,
    seconds: float | None = None,
    limits: Limits | None = None,
    keep: Path | None = None,
    commands: list[str] | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run the mutants ``indices`` of ``seed`` with up to ``jobs`` at a time; start no new one after ``seconds``."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    start = time.monotonic()
    results: list[Result] = []
    todo = iter(indices)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: set = set()
        index_of: dict = {}
        while True:
            while len(running) < jobs and (seconds is None or time.monotonic() - start < seconds):
                i = next(todo, None)
                if i is None:
                    break
                future = pool.submit(run_one, seed, i, limits=limits, keep=keep, commands=commands)
                index_of[future] = i
                running.add(future)
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                try:
                    results.append(f.result())
                except Exception as e:  # a bug of the harness itself: report it as a failure, go on with the rest
                    i = index_of[f]
                    run = Run("harness", [], verdict="harness-error", detail=f"{type(e).__name__}: {e}")
                    results.append(Result(Mutant(seed, i, "?", ["(harness error)"], b""), [run]))
                if on_result:
                    on_result(results[-1])
    return sorted(results, key=lambda r: r.mutant.index)
