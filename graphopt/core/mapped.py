"""Load a model file without copying its weights: the initializers' raw_data stays in a read-only memory map.

Parsing a ModelProto copies every byte of every weight into protobuf-owned memory, and that copy is most of the cost
of loading a big model. Here the file is memory-mapped and walked at the protobuf wire level, only as deep as needed:
the top-level ModelProto fields, the main GraphProto's fields, and each initializer TensorProto. An initializer whose
data is a plain ``raw_data`` field gets that field cut out of the bytes handed to protobuf; its byte range in the file
is remembered instead, and the Tensor is built on a view of the map. Everything else (nodes, value infos, functions,
tensors with typed data fields or unusual fields) is parsed by protobuf as usual.

Anything unexpected in the wire data makes :func:`scan` return None, and the caller parses the file the ordinary way
(which then reports the problem properly).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

import onnx

from graphopt.core.tensors import PACKED_4BIT, ExternalFile, encode_varint, text
from graphopt.errors import ModelLoadError

MIN_MAPPED_BYTES = 1024
"""Smaller raw_data stays in the proto: a view is not worth it, and small constants are read often."""

_MODEL_GRAPH = 7
_GRAPH_INITIALIZER = 5
_TENSOR_RAW_DATA = 9
_INITIALIZER_KEY = bytes([(_GRAPH_INITIALIZER << 3) | 2])
# TensorProto fields that may sit beside a mapped raw_data: dims, data_type, name, doc_string, metadata_props.
_TENSOR_PLAIN_FIELDS = frozenset({1, 2, 8, 12, 16})
_NOT_MAPPABLE = frozenset({onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED}) | PACKED_4BIT


class _Malformed(Exception):
    pass


def _varint(buf: mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: mmap.mmap, start: int, end: int) -> list[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, payload start, payload end) for each field in [start, end).

    Keys and lengths below 128 (one byte) are by far the most common and are decoded inline: this loop runs once per
    node, value info and initializer field of the model, and is most of the cost of a scan.
    """
    out = []
    append = out.append
    pos = start
    while pos < end:
        field_start = pos
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos, end)
        wire = key & 7
        if wire == 2:
            if pos >= end:
                raise _Malformed
            length = buf[pos]
            if length < 0x80:
                payload = pos + 1
            else:
                length, payload = _varint(buf, pos, end)
            pos = payload + length
        elif wire == 0:
            _, pos = _varint(buf, pos, end)
            payload = pos
        elif wire == 1:
            payload, pos = pos, pos + 8
        elif wire == 5:
            payload, pos = pos, pos + 4
        else:
            raise _Malformed  # groups (wire types 3, 4) never appear in ONNX files
        if pos > end:
            raise _Malformed
        append((key >> 3, wire, field_start, payload, pos))
    return out


@dataclass
class Scanned:
    """The model bytes with mapped raw_data cut out, and where each cut tensor's data sits in the mapped file."""

    stripped: bytes
    ranges: dict[str, tuple[int, int]]  # initializer name -> (offset, length) in the file
    file: ExternalFile


def _tensor(buf: mmap.mmap, start: int, end: int) -> tuple[bytes, str, int, int] | None:
    """A TensorProto's bytes without raw_data, its name, and the raw_data range, or None to keep it whole."""
    name = ""
    raw: tuple[int, int, int] | None = None
    dtype = 0
    for number, wire, field_start, payload, field_end in _fields(buf, start, end):
        if number == _TENSOR_RAW_DATA and wire == 2:
            if raw is not None:
                return None  # raw_data given twice (protobuf keeps the last): leave such a tensor to protobuf
            raw = (field_start, payload, field_end)
        elif number not in _TENSOR_PLAIN_FIELDS:
            return None
        elif number == 8 and wire == 2:
            name = text(bytes(buf[payload:field_end]))  # as the importer names it (non-UTF-8 bytes kept)
        elif number == 2 and wire == 0:
            dtype, _ = _varint(buf, field_start + 1, field_end)
    if raw is None or raw[2] - raw[1] < MIN_MAPPED_BYTES or not name or dtype in _NOT_MAPPABLE:
        return None
    field_start, payload, field_end = raw
    return buf[start:field_start] + buf[field_end:end], name, payload, field_end - payload


def scan(source: Path | ExternalFile) -> Scanned | None:
    """Map ``source`` (a path, or a file already mapped) and cut the main graph's raw_data initializers out of it;
    None when that is not possible."""
    if isinstance(source, ExternalFile):
        file = source
    else:
        try:
            file = ExternalFile(source, str(source), ModelLoadError)
        except ModelLoadError:
            return None
    if file.map is None:
        return None
    try:
        found = _scan(file.map)
    except _Malformed:
        return None
    if found is None:
        return None
    stripped, ranges = found
    return Scanned(stripped, ranges, file)


def _scan(buf: mmap.mmap) -> tuple[bytes, dict[str, tuple[int, int]]] | None:
    """The file's bytes with the cut tensors' raw_data left out, and the cuts; None (before copying anything) when
    there is nothing to cut, as in exports that keep their weights in Constant nodes."""
    top = _fields(buf, 0, len(buf))
    graphs = [f for f in top if f[0] == _MODEL_GRAPH and f[1] == 2]
    if len(graphs) != 1:
        return None  # no graph, or several that protobuf would merge: parse it the ordinary way
    _, _, _, payload, graph_end = graphs[0]
    ranges: dict[str, tuple[int, int]] = {}
    cuts: list[tuple[int, int, bytes]] = []
    for g_number, g_wire, g_start, g_payload, g_end in _fields(buf, payload, graph_end):
        if g_number != _GRAPH_INITIALIZER or g_wire != 2:
            continue
        cut = _tensor(buf, g_payload, g_end)
        if cut is None or cut[1] in ranges:
            continue
        kept, name, offset, length = cut
        ranges[name] = (offset, length)
        cuts.append((g_start, g_end, kept))
    if not ranges:
        return None  # nothing worth mapping
    view = memoryview(buf)  # slices of it are joined below without an intermediate copy each
    graph: list[bytes | memoryview] = []
    pieces: list[bytes | memoryview] = []
    try:
        copied = payload  # fields from here to the current cut are copied as they are, in one piece
        for g_start, g_end, kept in cuts:
            graph += [view[copied:g_start], _INITIALIZER_KEY, encode_varint(len(kept)), kept]
            copied = g_end
        graph.append(view[copied:graph_end])
        for number, wire, field_start, _, field_end in top:
            if number == _MODEL_GRAPH and wire == 2:
                pieces += [encode_varint((_MODEL_GRAPH << 3) | 2), encode_varint(sum(len(p) for p in graph)), *graph]
            else:
                pieces.append(view[field_start:field_end])
        stripped = b"".join(pieces)
    finally:
        for piece in (*graph, *pieces):
            if isinstance(piece, memoryview):
                piece.release()
        view.release()  # the map can be closed later: no buffer of it stays exported
    return stripped, ranges
