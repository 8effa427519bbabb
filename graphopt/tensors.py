"""Constant tensor data that is decoded only when a pass asks for it.

A :class:`Tensor` built from an ONNX ``TensorProto`` keeps a reference to that proto and decodes it on demand; one whose
bytes live in an external data file reads them through a read-only memory map of that file, so a 2 GB model is never
held twice in memory. Passes that compute new constants build tensors from numpy arrays.
"""

from __future__ import annotations

import functools
import hashlib
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from graphopt.errors import ExternalDataError

# Element types whose in-memory layout is one fixed-size numpy item per element (so raw bytes can be viewed directly).
_PACKED_4BIT = {
    t
    for t in (
        getattr(onnx.TensorProto, "INT4", None),
        getattr(onnx.TensorProto, "UINT4", None),
        getattr(onnx.TensorProto, "FLOAT4E2M1", None),
        getattr(onnx.TensorProto, "INT2", None),
        getattr(onnx.TensorProto, "UINT2", None),
    )
    if t is not None
}


@functools.cache
def np_dtype(elem_type: int) -> np.dtype:
    """The numpy dtype of an ONNX element type (ml_dtypes types for bfloat16 and float8)."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


_PLAIN_RAW = frozenset(
    {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.DOUBLE,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.INT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.INT32,
        onnx.TensorProto.INT64,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.UINT32,
        onnx.TensorProto.UINT64,
        onnx.TensorProto.BOOL,
    }
)
"""Element types whose raw_data is exactly numpy's little-endian layout of the tensor."""

_DECODED_CACHE_BYTES = 1 << 16


def elem_type_of(dtype: np.dtype | type) -> int:
    """The ONNX element type of a numpy dtype."""
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def dtype_name(elem_type: int | None) -> str:
    """A short readable name for an ONNX element type (``float32``, ``int64``, ``bfloat16``...)."""
    if elem_type is None:
        return "?"
    if elem_type == onnx.TensorProto.STRING:
        return "string"
    try:
        return np_dtype(elem_type).name
    except (KeyError, TypeError, ValueError):
        try:
            return onnx.helper.tensor_dtype_to_string(elem_type).replace("TensorProto.", "").lower()
        except (KeyError, ValueError):
            return f"type{elem_type}"


class ExternalFile:
    """One external data file of a model, memory-mapped read-only for the whole life of the model.

    Mapping at load time keeps the file's bytes reachable even if a later save replaces the file on disk.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.map: mmap.mmap | None = None
        if self.size:
            with open(path, "rb") as f:
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def view(self, offset: int, length: int) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ExternalDataError(
                f"external data range [{offset}, {offset + length}) is outside {self.path} ({self.size} bytes)"
            )
        if length == 0:
            return memoryview(b"")
        assert self.map is not None
        return memoryview(self.map)[offset : offset + length]


def resolve_external_location(base_dir: Path, location: str, tensor_name: str) -> Path:
    """The absolute path of an external data file, refusing any location that leaves ``base_dir``.

    Absolute paths, ``..`` components and symlinks that point out of the model's folder are all refused: a model file
    must never make graphopt read outside its folder.
    """
    if not location:
        raise ExternalDataError(f"tensor {tensor_name!r} has external data without a location")
    loc = Path(location)
    if loc.is_absolute() or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise ExternalDataError(f"tensor {tensor_name!r}: external data location {location!r} is an absolute path")
    if ".." in loc.parts or ".." in Path(location.replace("\\", "/")).parts:
        raise ExternalDataError(f"tensor {tensor_name!r}: external data location {location!r} leaves the model folder")
    base = base_dir.resolve()
    full = (base / loc).resolve()
    if full != base and base not in full.parents:
        raise ExternalDataError(
            f"tensor {tensor_name!r}: external data location {location!r} resolves outside the model folder"
        )
    if not full.is_file():
        raise ExternalDataError(f"tensor {tensor_name!r}: external data file {base / loc} does not exist")
    return full


@dataclass(frozen=True)
class ExternalRef:
    """Where a tensor's bytes sit in a memory-mapped file: an external data file, or (``inline``) the raw_data of an
    initializer inside the model file itself, mapped at load instead of copied."""

    file: ExternalFile
    offset: int
    length: int
    location: str
    inline: bool = False


class Tensor:
    """Constant data with a dtype (ONNX element type) and static dims.

    Exactly one backing is set: ``_proto`` (an ONNX TensorProto, decoded lazily), ``_external`` (bytes in a
    memory-mapped file) or ``_array`` (a numpy array a pass made). ``numpy()`` returns a read-only array.
    """

    __slots__ = (
        "dtype",
        "dims",
        "_proto",
        "_array",
        "_external",
        "_decoded",
        "doc_string",
        "metadata_props",
        "digests",
    )

    def __init__(
        self,
        dtype: int,
        dims: tuple[int, ...],
        *,
        proto: onnx.TensorProto | None = None,
        array: np.ndarray | None = None,
        external: ExternalRef | None = None,
        doc_string: str = "",
        metadata_props: dict[str, str] | None = None,
    ) -> None:
        self.dtype = dtype
        self.dims = tuple(map(int, dims))
        self._proto = proto
        self._array = array
        self._external = external
        self._decoded: np.ndarray | None = None  # a small proto-backed tensor's array, decoded once
        self.doc_string = doc_string
        self.metadata_props = metadata_props or {}
        self.digests: dict[
            int | None, bytes
        ] = {}  # content hashes by prefix length, filled by the passes that use them

    # construction -----------------------------------------------------------------------------------------------
    @classmethod
    def from_numpy(
        cls, array: np.ndarray | np.generic | float | int, dtype: int | None = None, *, copy: bool = True
    ) -> Tensor:
        """A tensor holding ``array`` (copied once, then frozen). ``dtype`` overrides the ONNX element type.

        ``copy=False`` adopts an array the caller just made and will not touch again (it is frozen in place).
        """
        arr = np.array(array, copy=copy) if isinstance(array, np.ndarray) else np.array(array)
        if dtype is None:
            dtype = elem_type_of(arr.dtype)
        elif dtype not in (onnx.TensorProto.STRING,) and arr.dtype != np_dtype(dtype):
            arr = arr.astype(np_dtype(dtype))
        arr.flags.writeable = False
        return cls(dtype, arr.shape, array=arr)

    @classmethod
    def from_proto(
        cls,
        proto: onnx.TensorProto,
        base_dir: Path | None = None,
        files: dict[Path, ExternalFile] | None = None,
    ) -> Tensor:
        """Wrap a TensorProto without copying its data. External data is resolved against ``base_dir``."""
        external = None
        if base_dir is not None and proto.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in proto.external_data}
            path = resolve_external_location(base_dir, info.get("location", ""), proto.name)
            if files is None:
                files = {}
            if path not in files:
                files[path] = ExternalFile(path)
            file = files[path]
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else file.size - offset
            external = ExternalRef(file, offset, length, info.get("location", ""))
            expected = _expected_nbytes(proto.data_type, tuple(proto.dims))
            if expected is not None and expected != length:
                raise ExternalDataError(
                    f"tensor {proto.name!r}: external data length {length} does not match its shape ({expected} bytes)"
                )
            file.view(offset, length)  # range check now, not at first use
        return cls(
            proto.data_type,
            tuple(proto.dims),
            proto=proto,
            external=external,
            doc_string=proto.doc_string,
            metadata_props={p.key: p.value for p in proto.metadata_props} if proto.metadata_props else None,
        )

    # data -------------------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.dims

    @property
    def size(self) -> int:
        return math.prod(self.dims)

    @property
    def nbytes(self) -> int:
        """Bytes the data takes in memory (for strings: the sum of their lengths)."""
        if self._external is not None:
            return self._external.length
        n = _expected_nbytes(self.dtype, self.dims)
        if n is not None:
            return n
        if self._array is not None:
            return int(sum(len(s) for s in self._array.reshape(-1)))
        assert self._proto is not None
        return int(sum(len(s) for s in self._proto.string_data))

    @property
    def is_external(self) -> bool:
        """Whether the data lives in an external data file (inline data mapped from the model file is not)."""
        return self._external is not None and not self._external.inline

    def raw_view(self) -> memoryview | None:
        """The tensor's raw little-endian bytes as a zero-copy view, when its backing allows one (not strings or
        4-bit types, and not data held in a proto's typed fields)."""
        if self._external is not None:
            return self._external.file.view(self._external.offset, self._external.length)
        if self._array is not None and self.dtype != onnx.TensorProto.STRING and self.dtype not in _PACKED_4BIT:
            arr = np.ascontiguousarray(self._array)
            return memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
        return None

    def numpy(self) -> np.ndarray:
        """The data as a read-only numpy array (a zero-copy view for external data)."""
        if self._array is not None:
            return self._array
        if self._external is not None:
            buf = self._external.file.view(self._external.offset, self._external.length)
            if self.dtype in _PACKED_4BIT:
                proto = onnx.TensorProto(data_type=self.dtype, dims=self.dims, raw_data=bytes(buf))
                arr = numpy_helper.to_array(proto)
            else:
                arr = np.frombuffer(buf, dtype=np_dtype(self.dtype)).reshape(self.dims)
        else:
            assert self._proto is not None
            if self._decoded is not None:
                return self._decoded
            proto = self._proto
            if proto.data_location == onnx.TensorProto.EXTERNAL:
                raise ExternalDataError(f"tensor {proto.name!r} has external data that was not loaded")
            raw = proto.raw_data if self.dtype in _PLAIN_RAW and proto.HasField("raw_data") else None
            if raw is not None and len(raw) == _expected_nbytes(self.dtype, self.dims):
                arr = np.frombuffer(raw, dtype=np_dtype(self.dtype)).reshape(self.dims)  # raw_data came as a copy
            else:
                arr = numpy_helper.to_array(proto)
            if arr.nbytes <= _DECODED_CACHE_BYTES:
                self._decoded = arr  # passes read small constants (BN parameters, shapes, axes) again and again
        arr.flags.writeable = False
        return arr

    def digest(self, limit: int | None = None) -> bytes:
        """A 16-byte hash of the data (of its first ``limit`` bytes), cached on the tensor: its data never changes."""
        cached = self.digests.get(limit)
        if cached is not None:
            return cached
        data = self.raw_bytes() if self.dtype != onnx.TensorProto.STRING else repr(self.numpy().tolist()).encode()
        view = memoryview(data)
        if limit is not None:
            view = view[:limit]
        self.digests[limit] = digest = hashlib.blake2b(view, digest_size=16).digest()
        return digest

    def raw_bytes(self) -> bytes | memoryview:
        """The little-endian bytes ONNX stores for this tensor (not for strings); a zero-copy view where possible."""
        view = self.raw_view()
        if view is not None:
            return view
        if self._proto is not None and self._proto.HasField("raw_data"):
            return self._proto.raw_data
        if self.dtype in _PACKED_4BIT:
            return numpy_helper.from_array(self.numpy(), "").raw_data
        return np.ascontiguousarray(self.numpy()).tobytes()

    def to_proto(self, name: str) -> onnx.TensorProto:
        """A self-contained TensorProto named ``name`` (external data is read in).

        The original proto is returned as is, without a copy, when it already has that name and inline data.
        """
        proto = self._proto
        if proto is not None and self._external is None:
            if proto.name == name:
                return proto
            out = onnx.TensorProto()
            out.CopyFrom(proto)
            out.name = name
            return out
        if self._external is not None:
            out = self.header(name)
            out.raw_data = bytes(self._external.file.view(self._external.offset, self._external.length))
            return out
        if self.dtype == onnx.TensorProto.STRING or self.dtype in _PACKED_4BIT:
            out = numpy_helper.from_array(self._array, name)  # type: ignore[arg-type]
        else:
            arr = np.ascontiguousarray(self._array)
            out = onnx.TensorProto(name=name, data_type=self.dtype, dims=self.dims, raw_data=arr.tobytes())
        if self.doc_string:
            out.doc_string = self.doc_string
        for k, v in self.metadata_props.items():
            out.metadata_props.add(key=k, value=v)
        return out

    def header(self, name: str) -> onnx.TensorProto:
        """A TensorProto with this tensor's name, type, dims, doc string and metadata, but no data.

        Data mapped from the model file keeps the proto it was loaded with (minus raw_data), so every other field comes
        back exactly as it was.
        """
        if self._external is not None and self._external.inline and self._proto is not None:
            out = onnx.TensorProto()
            out.CopyFrom(self._proto)
            out.name = name
            return out
        out = onnx.TensorProto(name=name, data_type=self.dtype, dims=self.dims)
        if self.doc_string:
            out.doc_string = self.doc_string
        for k, v in self.metadata_props.items():
            out.metadata_props.add(key=k, value=v)
        return out

    def __repr__(self) -> str:
        where = "external" if self._external else ("array" if self._array is not None else "proto")
        return f"Tensor({dtype_name(self.dtype)}{list(self.dims)}, {where})"


class SparseTensor:
    """A sparse initializer (ONNX SparseTensorProto), kept as loaded; ``numpy()`` gives the dense array."""

    __slots__ = ("_proto",)

    def __init__(self, proto: onnx.SparseTensorProto) -> None:
        self._proto = proto

    @property
    def dtype(self) -> int:
        return self._proto.values.data_type

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self._proto.dims)

    @property
    def size(self) -> int:
        """Elements of the dense tensor."""
        return math.prod(self.dims)

    @property
    def nbytes(self) -> int:
        return Tensor.from_proto(self._proto.values).nbytes + Tensor.from_proto(self._proto.indices).nbytes

    is_external = False

    def numpy(self) -> np.ndarray:
        values = numpy_helper.to_array(self._proto.values)
        indices = numpy_helper.to_array(self._proto.indices)
        dense = np.zeros(int(np.prod(self.dims)), dtype=values.dtype)
        if indices.ndim == 2:  # coordinate form: one row of indices per value
            indices = np.ravel_multi_index(tuple(indices.T), self.dims) if indices.size else indices.reshape(-1)
        dense[indices] = values
        return dense.reshape(self.dims)

    def to_proto(self, name: str) -> onnx.SparseTensorProto:
        if self._proto.values.name == name:
            return self._proto
        out = onnx.SparseTensorProto()
        out.CopyFrom(self._proto)
        out.values.name = name
        return out


def _expected_nbytes(elem_type: int, dims: tuple[int, ...]) -> int | None:
    """Bytes of a dense tensor of that type and shape, or None for strings and unknown types."""
    if elem_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    count = math.prod(dims)
    if elem_type in _PACKED_4BIT:
        bits = 2 if elem_type in (getattr(onnx.TensorProto, "INT2", -1), getattr(onnx.TensorProto, "UINT2", -1)) else 4
        return (count * bits + 7) // 8
    try:
        return count * np_dtype(elem_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None


def same_file(a: Path, b: Path) -> bool:
    """True if both paths exist and name the same file."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
