"""Constant tensor data that is decoded only when a pass asks for it.

A :class:`Tensor` built from an ONNX ``TensorProto`` keeps a reference to that proto and decodes it on demand; one whose
bytes live in an external data file reads them through a read-only memory map of that file, so a 2 GB model is never
held twice in memory. Passes that compute new constants build tensors from numpy arrays; a large one is written at
once to the run's spill file and held as a read-only memory map of it (see "Bigger than memory" in
docs/architecture.md), so that no pass keeps gigabytes of new weights in anonymous memory until the save.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import errno
import functools
import hashlib
import logging
import math
import mmap
import os
import re
import stat
import sys
import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from graphopt.errors import ExternalDataError, GraphoptError, TensorDataError

# Element types whose in-memory layout is one fixed-size numpy item per element (so raw bytes can be viewed directly).
PACKED_4BIT = {
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


PLAIN_RAW_TYPES = frozenset(
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


def open_regular(
    path: Path, what: str, error: type[GraphoptError] = ExternalDataError, *, nofollow: bool = False
) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only and return the descriptor and its status, refusing anything but a regular file.

    The file is opened without blocking (a FIFO would wait forever for a writer) and its type is checked on the open
    descriptor, so a name swapped between a check and the open cannot slip a FIFO or a device through. ``what`` names
    the file in the one-line error (``error`` is its class). ``nofollow`` refuses a symlink in the last component (for
    a path already resolved: a link put there after the check would not be followed out of the folder).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if nofollow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as e:
        raise error(f"{what}: {_os_reason(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what}: {file_kind(st.st_mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def file_kind(mode: int) -> str:
    """A short description of a non-regular file type (for error messages)."""
    for test, name in (
        (stat.S_ISDIR, "is a directory"),
        (stat.S_ISFIFO, "is a FIFO"),
        (stat.S_ISCHR, "is a character device"),
        (stat.S_ISBLK, "is a block device"),
        (stat.S_ISSOCK, "is a socket"),
    ):
        if test(mode):
            return name
    return "is a special file"


def _os_reason(e: Exception) -> str:
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, OSError) and e.strerror:
        return f"cannot open ({e.strerror})"
    return f"cannot open ({e})"


class ExternalFile:
    """One file a model reads (an external data file, or the model file itself), memory-mapped read-only for the
    whole life of the model.

    Mapping at load time keeps the file's bytes reachable even if a later save replaces the file on disk. ``identity``
    is the (st_dev, st_ino) of the file that was opened: saving compares output paths against it, not by spelling.
    """

    def __init__(
        self,
        path: Path,
        what: str | None = None,
        error: type[GraphoptError] = ExternalDataError,
        *,
        nofollow: bool = False,
    ) -> None:
        self.path = path
        fd, st = open_regular(path, what or str(path), error, nofollow=nofollow)
        try:
            self.size = st.st_size
            self.identity = (st.st_dev, st.st_ino)
            self.map: mmap.mmap | None = None
            if self.size:
                self.map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def view(self, offset: int, length: int, tensor_name: str | None = None) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            whose = f"tensor {tensor_name!r}: " if tensor_name is not None else ""
            raise ExternalDataError(
                f"{whose}external data range [{offset}, {offset + length}) is outside {self.path} ({self.size} bytes)"
            )
        if length == 0:
            return memoryview(b"")
        assert self.map is not None
        return memoryview(self.map)[offset : offset + length]

    def drop(self, offset: int, length: int) -> None:
        """Drop a range from the resident set (see :func:`_drop_pages`)."""
        _drop_pages(self.map, offset, length)

    def copy_source(self, sources: CopySources) -> tuple[int, int] | None:
        """A descriptor reading the very bytes that are mapped (and the offset of this file's byte 0 in it), for the
        kernel to copy from; None if the path now names another file (say, replaced by an in-place save)."""
        return sources.reopen(self)


# --------------------------------------------------------------------------------------------------------------------
# bigger than memory: the spill file and the resident set
# --------------------------------------------------------------------------------------------------------------------
logger = logging.getLogger("graphopt")

_PAGE = mmap.PAGESIZE
_ALIGN = max(mmap.ALLOCATIONGRANULARITY, 4096)  # spill offsets must be valid mmap offsets


def _env_bytes(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw)
    except ValueError:
        return default
    return value if value >= 0 else default


SPILL_BYTES = _env_bytes("GRAPHOPT_SPILL_BYTES", 4 << 20)
"""A tensor a pass makes (``Tensor.from_numpy``) of at least this many bytes goes to the spill file at once; 0 turns
spilling off. The environment variable ``GRAPHOPT_SPILL_BYTES`` sets it."""
RESIDENT_BYTES = _env_bytes("GRAPHOPT_RESIDENT_BYTES", 512 << 20)
"""Most bytes of memory-mapped tensor data that views handed out by ``numpy()`` keep in the process's resident set
before the least recently used ranges are dropped (the page cache keeps them; the next read faults them back in).
``GRAPHOPT_RESIDENT_BYTES`` sets it."""
_TRACK_BYTES = 256 << 10  # smaller mapped tensors are not tracked: they cannot add up to much before a release
_BLOCK_BYTES = 16 << 20  # the unit in which spilled and saved data is converted, copied and dropped


def _drop_pages(m: mmap.mmap | None, offset: int, length: int) -> None:
    """Drop a range of a read-only shared file mapping from the resident set (``MADV_DONTNEED``). The data is not lost:
    the pages stay in the page cache and the next read maps them again, so this is safe even while views are in use."""
    if m is None or length <= 0 or not hasattr(m, "madvise"):
        return
    start = offset - offset % _PAGE
    end = min(offset + length, len(m))
    if end <= start:
        return
    with contextlib.suppress(ValueError, OSError):  # a closed map, or a platform without it: only a hint
        m.madvise(mmap.MADV_DONTNEED, start, end - start)


class _ResidentSet:
    """The memory-mapped files whose tensors ``numpy()`` handed out, and the ranges read most recently.

    Reading a mapped weight makes its pages part of the process's resident set until they are unmapped, and the kernel
    only unmaps clean file pages under memory pressure: a pass that reads every weight of a 26 GB model once would
    otherwise "use" 26 GB. Past :data:`RESIDENT_BYTES` of recently read ranges, the oldest ones are dropped; whenever a
    large tensor is spilled (its inputs are read by then) and when a save starts, every mapped file is dropped whole
    (which also catches pages read again through views handed out earlier)."""

    def __init__(self) -> None:
        self.recent: collections.OrderedDict[tuple[int, int], tuple[weakref.ref[Any], int, int]] = (
            collections.OrderedDict()
        )
        self.total = 0
        self.files: weakref.WeakSet[Any] = weakref.WeakSet()
        self.lock = threading.Lock()

    def note(self, file: Any, offset: int, length: int) -> None:
        if length < _TRACK_BYTES:
            return
        key = (id(file), offset)
        with self.lock:
            self.files.add(file)
            if key in self.recent:
                self.recent.move_to_end(key)
                return
            self.recent[key] = (weakref.ref(file), offset, length)
            self.total += length
            while self.total > RESIDENT_BYTES and len(self.recent) > 1:
                ref, start, size = self.recent.popitem(last=False)[1]
                self.total -= size
                file = ref()
                if file is not None:
                    file.drop(start, size)

    def release(self) -> None:
        with self.lock:
            self.recent.clear()
            self.total = 0
            for file in list(self.files):
                if file.map is not None:
                    _drop_pages(file.map, 0, len(file.map))  # the whole map (a range's alignment slack too)


_resident = _ResidentSet()


def release_mapped() -> None:
    """Drop every mapped tensor range read so far from the resident set (a hint; the data stays readable)."""
    _resident.release()


class SpillFile:
    """The file large tensors made during a run are written to: one per process, in the temporary folder (``TMPDIR``).

    It is created without a name (``O_TMPFILE``, or created and unlinked at once where that is missing), so it
    disappears with the process however that ends (normal exit, an exception, SIGTERM, SIGKILL): there is never a
    file to clean up. Each tensor is appended at an aligned offset and mapped read-only on its own; when a spilled
    tensor's map is freed, its range is punched out of the file (disk and page cache given back) where the system
    allows it."""

    def __init__(self, folder: str | None = None) -> None:
        self.folder = folder or tempfile.gettempdir()
        self.file = tempfile.TemporaryFile(dir=self.folder, prefix=".graphopt-spill-")  # noqa: SIM115 - kept open
        _more_descriptors()  # each mapped range holds a descriptor (Python's mmap keeps a duplicate)
        self.fd = self.file.fileno()
        atexit.register(self.file.close)  # (the maps hold their own descriptors; this only silences a ResourceWarning)
        self.end = 0
        self.lock = threading.Lock()
        self.path = Path(self.folder) / "<graphopt spill file>"

    def append(self, array: np.ndarray, dtype: np.dtype) -> MappedRange:
        """Write ``array`` converted to ``dtype`` in C order, block by block, and map it."""
        length = int(array.size) * dtype.itemsize
        with self.lock:
            offset = self.end
            self.end += -(-length // _ALIGN) * _ALIGN
        try:
            pos = offset
            for chunk in _c_order_chunks(array, dtype):
                pos += _pwrite_all(self.fd, chunk, pos)
            if pos - offset != length:
                raise OSError(errno.EIO, f"wrote {pos - offset} of {length} bytes")
            free = functools.partial(self.punch, offset, length)
            return MappedRange(self, offset, length, spilled=True, on_free=free)
        except BaseException:
            self.punch(offset, length)
            raise

    def punch(self, offset: int, length: int) -> None:
        """Give back the disk space (and page cache) of a range nothing reads any more."""
        _punch_hole(self.fd, offset, -(-length // _ALIGN) * _ALIGN)


def _more_descriptors() -> None:
    """Raise the soft limit on open files towards the hard one (at most 65536): a model with thousands of spilled
    tensors needs a descriptor per map. Where that fails, a map that cannot be made leaves its tensor in memory."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 1 << 16 if hard == resource.RLIM_INFINITY else min(hard, 1 << 16)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass


class MappedRange:
    """A read-only map of one range of a file graphopt keeps open: a spilled tensor's bytes in the spill file, or a
    saved tensor's in the external data file a save wrote (the ``ExternalFile`` interface: ``path``, ``size``,
    ``map``, ``view``, ``drop``, ``copy_source``). ``on_free`` runs when the map is freed, that is when the tensor and
    every array viewing it are gone (the spill file punches the range out then)."""

    def __init__(self, source: Any, offset: int, length: int, *, spilled: bool = False, on_free: Any = None) -> None:
        self.source = source  # has ``fd`` and ``path``; kept open while this range is
        self.offset = offset
        self.size = length
        self.path = source.path
        self.identity = None
        self.spilled = spilled
        start = offset - offset % _ALIGN
        self.delta = offset - start
        self.map: mmap.mmap | None = None
        if length:
            self.map = mmap.mmap(source.fd, self.delta + length, access=mmap.ACCESS_READ, offset=start)
            if on_free is not None:
                weakref.finalize(self.map, on_free)
        elif on_free is not None:
            on_free()

    def view(self, offset: int, length: int, tensor_name: str | None = None) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ExternalDataError(f"mapped range [{offset}, {offset + length}) is outside its {self.size} bytes")
        if length == 0:
            return memoryview(b"")
        assert self.map is not None
        return memoryview(self.map)[self.delta + offset : self.delta + offset + length]

    def drop(self, offset: int, length: int) -> None:
        _drop_pages(self.map, self.delta + offset, length)

    def copy_source(self, sources: CopySources) -> tuple[int, int] | None:
        return self.source.fd, self.offset


class HeldFile:
    """A descriptor shared by the ranges mapped from it (``MappedRange.source``), closed when the last one goes."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        weakref.finalize(self, os.close, fd)


_spill: SpillFile | None = None
_spill_failed = False
_spill_lock = threading.Lock()


def spill_file() -> SpillFile | None:
    """The process's spill file (created on first use); None if it cannot be created or a write to it failed (then
    large tensors stay in memory, after one warning: spilling never makes a run fail)."""
    global _spill
    if not hasattr(os, "pwrite"):  # Windows: no positioned writes; tensors stay in memory
        return None
    with _spill_lock:
        if _spill is None and not _spill_failed:
            try:
                _spill = SpillFile()
            except OSError as e:
                _spill_broken(tempfile.gettempdir(), e)
        return None if _spill_failed else _spill


def _spill_broken(folder: str, e: OSError) -> None:
    global _spill_failed
    if not _spill_failed:
        logger.warning(
            "cannot write the spill file in %s (%s): large new tensors stay in memory (set TMPDIR to another folder)",
            folder,
            e.strerror or e,
        )
    _spill_failed = True


def spillable(elem_type: int, nbytes: int) -> bool:
    """Whether a tensor of this type and size made by a pass goes to the spill file: large, with a raw layout that is
    numpy's (not strings, not packed 4-bit types)."""
    excluded = elem_type in PACKED_4BIT or elem_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED)
    return 0 < SPILL_BYTES <= nbytes and not excluded


def _c_order_chunks(array: np.ndarray, dtype: np.dtype) -> Iterator[memoryview]:
    """The bytes of ``array`` converted to ``dtype`` in C order, in chunks of about ``_BLOCK_BYTES``: views of the
    array itself when it already is that, else blocks of leading-axis rows converted into one reused buffer (a
    transposed weight is copied in tiles, so that it never exists twice and its reads stay cache-friendly)."""
    if array.dtype == dtype and array.flags.c_contiguous:
        flat = array.reshape(-1).view(np.uint8)
        for start in range(0, flat.size, _BLOCK_BYTES):
            yield memoryview(flat[start : start + _BLOCK_BYTES])
        return
    if array.ndim == 0:
        yield memoryview(np.array(array, dtype=dtype).reshape(-1).view(np.uint8))
        return
    row_bytes = math.prod(array.shape[1:]) * dtype.itemsize
    if row_bytes > _BLOCK_BYTES and array.ndim > 1:
        for i in range(array.shape[0]):
            yield from _c_order_chunks(array[i], dtype)
        return
    rows = max(1, _BLOCK_BYTES // max(row_bytes, 1))
    buf = np.empty((min(rows, array.shape[0]), *array.shape[1:]), dtype=dtype)
    for start in range(0, array.shape[0], rows):
        src = array[start : start + rows]
        dst = buf[: src.shape[0]]
        _copy_tiled(dst, src)
        yield memoryview(dst.reshape(-1).view(np.uint8))


_TILE = 128


def _copy_tiled(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` (with astype's casting); when the source's last axis is not its fastest one (a transpose),
    column tiles at a time, which keeps the strided reads in cache (several times faster for big weights)."""
    if src.ndim >= 2 and abs(src.strides[-1]) > abs(src.strides[-2]) and src.shape[-1] > _TILE:
        for j in range(0, src.shape[-1], _TILE):
            np.copyto(dst[..., j : j + _TILE], src[..., j : j + _TILE], casting="unsafe")
    else:
        np.copyto(dst, src, casting="unsafe")


def _pwrite_all(fd: int, data: memoryview, offset: int) -> int:
    view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        done += n
    return done


_libc: Any = None


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """``fallocate(PUNCH_HOLE | KEEP_SIZE)`` on Linux; elsewhere (or on a file system without it) nothing."""
    global _libc
    if length <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
        _libc.fallocate(fd, 0x01 | 0x02, offset, length)  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
    except (OSError, AttributeError, TypeError, ValueError):
        pass


class CopySources:
    """Descriptors that a save copies mapped tensor data from with ``copy_file_range`` (the bytes go from file to file
    in the kernel, never through the process's memory). A model file or external data file is opened again by path,
    once per save, and used only if it is the very file that was mapped (same device, inode and size); the spill
    file's own descriptor is used as is. Closed when the save ends."""

    def __init__(self) -> None:
        self.fds: dict[int, tuple[int, int] | None] = {}
        self.kernel_copy = hasattr(os, "copy_file_range")

    def reopen(self, file: ExternalFile) -> tuple[int, int] | None:
        key = id(file)
        if key not in self.fds:
            self.fds[key] = None
            flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
            try:
                fd = os.open(file.path, flags)
            except (OSError, ValueError):
                return None
            try:
                st = os.fstat(fd)
            except OSError:
                os.close(fd)
                return None
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != file.identity or st.st_size != file.size:
                os.close(fd)
                return None
            self.fds[key] = (fd, 0)
        return self.fds[key]

    def close(self) -> None:
        for entry in self.fds.values():
            if entry is not None:
                with contextlib.suppress(OSError):
                    os.close(entry[0])
        self.fds.clear()

    def __enter__(self) -> CopySources:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.ETXTBSY, errno.EPERM}


def _kernel_copy(src: int, offset: int, length: int, dst: int) -> int:
    """Copy ``length`` bytes at ``offset`` of ``src`` to the current position of ``dst`` in the kernel; the bytes
    copied (fewer when the file systems cannot: the caller writes the rest itself)."""
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src, dst, length - done, offset + done)
        except OSError as e:
            if e.errno in _NO_KERNEL_COPY:
                return done
            raise
        if n <= 0:
            return done
        done += n
    return done


def text(s: str | bytes) -> str:
    """A proto string field as str: protobuf hands back bytes for a value that is not UTF-8; those bytes are kept
    with ``surrogateescape`` so that writing the string back restores them exactly (see ``onnx_io``)."""
    return s if isinstance(s, str) else s.decode("utf-8", "surrogateescape")


def encode_varint(n: int) -> bytes:
    """Protobuf's base-128 varint encoding of a non-negative int."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def put_str(msg: Any, field: str, value: str) -> None:
    """``msg.field = value`` for a proto string field, also for a str holding bytes that were not UTF-8 (kept by
    :func:`text` as surrogates): protobuf refuses to set those, so they are merged in as wire bytes, as loaded."""
    try:
        setattr(msg, field, value)
    except UnicodeEncodeError:
        msg.MergeFromString(_string_field(msg, field, value))


def extend_str(msg: Any, field: str, values: Any) -> None:
    """``msg.field.extend(values)`` for a repeated string field, with :func:`put_str`'s handling of non-UTF-8 text."""
    values = list(values)
    target = getattr(msg, field)
    try:
        target.extend(values)
    except UnicodeEncodeError:
        for v in values:
            try:
                target.append(v)
            except UnicodeEncodeError:
                msg.MergeFromString(_string_field(msg, field, v))


def _string_field(msg: Any, field: str, value: str) -> bytes:
    number = msg.DESCRIPTOR.fields_by_name[field].number
    data = value.encode("utf-8", "surrogateescape")
    return encode_varint((number << 3) | 2) + encode_varint(len(data)) + data


def resolve_external_location(base_dir: Path, location: str | bytes, tensor_name: str) -> Path:
    """The absolute path of an external data file, refusing any location that leaves ``base_dir``.

    The one resolver for every external reference of a model (dense and sparse tensors, initializers of any graph,
    tensor attributes, function bodies). Absolute paths, ``..`` components and symlinks that point out of the model's
    folder are all refused, and so is anything but a regular file: a model file must never make graphopt read
    outside its folder.
    """
    location = text(location)
    if not location:
        raise ExternalDataError(f"tensor {tensor_name!r} has external data without a location")
    if "\0" in location:
        raise ExternalDataError(f"tensor {tensor_name!r}: external data location {location!r} holds a NUL byte")
    loc = Path(location)
    if loc.is_absolute() or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise ExternalDataError(f"tensor {tensor_name!r}: external data location {location!r} is an absolute path")
    if ".." in loc.parts or ".." in Path(location.replace("\\", "/")).parts:
        raise ExternalDataError(f"tensor {tensor_name!r}: external data location {location!r} leaves the model folder")
    try:
        base = base_dir.resolve()
        full = (base / loc).resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a symlink loop, a name too long
        raise ExternalDataError(f"tensor {tensor_name!r}: external data location {location!r}: {e}") from None
    if full != base and base not in full.parents:
        raise ExternalDataError(
            f"tensor {tensor_name!r}: external data location {location!r} resolves outside the model folder"
        )
    try:
        st = full.stat()
    except (OSError, ValueError):
        raise ExternalDataError(f"tensor {tensor_name!r}: external data file {base / loc} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise ExternalDataError(
            f"tensor {tensor_name!r}: external data file {base / loc} {file_kind(st.st_mode)}, not a regular file"
        )
    return full


_DECIMAL = re.compile(r"[0-9]+")


def _external_int(info: dict[str, str], key: str, tensor_name: str, path: Path) -> int | None:
    """The ``offset`` or ``length`` of an external reference: None if absent, else a base-10 non-negative integer."""
    if key not in info:
        return None
    raw = info[key]
    if not _DECIMAL.fullmatch(raw):
        raise ExternalDataError(
            f"tensor {tensor_name!r}: external data {key} {raw!r} for {path} is not a non-negative base-10 integer"
        )
    return int(raw)


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
        """A tensor holding ``array`` (copied once, in C order, then frozen). ``dtype`` overrides the ONNX element type.

        ``copy=False`` adopts an array the caller just made and will not touch again (it is frozen in place; an array
        that is not C-contiguous is copied). A tensor of :data:`SPILL_BYTES` or more is not kept in memory: its bytes
        are written (converted and reordered block by block, never as a second full copy) to the run's spill file
        and the tensor reads them through a read-only memory map, as it would an external data file.
        """
        arr = array if isinstance(array, np.ndarray) else np.array(array)
        target = None
        if dtype is None:
            dtype = elem_type_of(arr.dtype)
        elif dtype not in (onnx.TensorProto.STRING,) and arr.dtype != np_dtype(dtype):
            target = np_dtype(dtype)
        if spillable(dtype, int(arr.size) * (target or arr.dtype).itemsize):
            spilled = cls.spilled(arr, dtype, target or arr.dtype)
            if spilled is not None:
                return spilled
        if target is not None:
            arr = arr.astype(target, order="C")
        elif copy or not arr.flags.c_contiguous:
            arr = np.array(arr, copy=True, order="C")
        arr.flags.writeable = False
        return cls(dtype, arr.shape, array=arr)

    @classmethod
    def spilled(cls, array: np.ndarray, dtype: int, np_type: np.dtype) -> Tensor | None:
        """A tensor whose bytes (``array`` as ``np_type``, C order) are written to the spill file now and mapped from
        it; None when there is no spill file (the caller keeps the data in memory). Reading the source is done by
        then: the mapped ranges read so far are dropped from the resident set (:func:`release_mapped`)."""
        spill = spill_file()
        if spill is None:
            return None
        try:
            segment = spill.append(array, np.dtype(np_type))
        except OSError as e:
            _spill_broken(spill.folder, e)
            return None
        release_mapped()
        ref = ExternalRef(segment, 0, segment.size, "", inline=True)
        return cls(dtype, array.shape, external=ref)

    @classmethod
    def from_proto(
        cls,
        proto: onnx.TensorProto,
        base_dir: Path | None = None,
        files: dict[Path, ExternalFile] | None = None,
    ) -> Tensor:
        """Wrap a TensorProto without copying its data. External data is resolved against ``base_dir`` (through
        :func:`resolve_external_location`); data whose size does not fit the type and shape is refused."""
        external = None
        if base_dir is not None and proto.data_location == onnx.TensorProto.EXTERNAL:
            external = _external_ref(proto, base_dir, files)
        elif proto.data_location != onnx.TensorProto.EXTERNAL:
            _check_data_size(proto)
        return cls(
            proto.data_type,
            tuple(proto.dims),
            proto=proto,
            external=external,
            doc_string=text(proto.doc_string),
            metadata_props={text(p.key): text(p.value) for p in proto.metadata_props} if proto.metadata_props else None,
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

    @property
    def is_spilled(self) -> bool:
        """Whether the data lives in the run's spill file (a large tensor a pass made)."""
        return self._external is not None and getattr(self._external.file, "spilled", False)

    def _mapped_view(self) -> memoryview:
        ref = self._external
        assert ref is not None
        _resident.note(ref.file, ref.offset, ref.length)
        return ref.file.view(ref.offset, ref.length)

    def raw_view(self) -> memoryview | None:
        """The tensor's raw little-endian bytes as a zero-copy view, when its backing allows one (not strings or
        4-bit types, and not data held in a proto's typed fields)."""
        if self._external is not None:
            return self._mapped_view()
        if self._array is not None and self.dtype != onnx.TensorProto.STRING and self.dtype not in PACKED_4BIT:
            arr = np.ascontiguousarray(self._array)
            return memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else memoryview(b"")
        return None

    def numpy(self) -> np.ndarray:
        """The data as a read-only numpy array (a zero-copy view for external data)."""
        if self._array is not None:
            return self._array
        if self._external is not None:
            buf = self._mapped_view()
            if self.dtype in PACKED_4BIT:
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
            raw = proto.raw_data if self.dtype in PLAIN_RAW_TYPES and proto.HasField("raw_data") else None
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
        if self.dtype in PACKED_4BIT:
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
            put_str(out, "name", name)
            return out
        if self._external is not None:
            out = self.header(name)
            out.raw_data = bytes(self._mapped_view())
            return out
        if self.dtype == onnx.TensorProto.STRING or self.dtype in PACKED_4BIT:
            out = numpy_helper.from_array(self._array, "")  # type: ignore[arg-type]
        else:
            arr = np.ascontiguousarray(self._array)
            out = onnx.TensorProto(data_type=self.dtype, dims=self.dims, raw_data=arr.tobytes())
        put_str(out, "name", name)
        self._put_info(out)
        return out

    def mapped_length(self) -> int | None:
        """The length of the raw bytes when they sit in a memory-mapped file (a model, external data or spill file);
        None for data in memory or in a proto."""
        return self._external.length if self._external is not None else None

    def write_to(self, f: Any, sources: CopySources) -> int:
        """Write the raw bytes (as :meth:`raw_bytes`) to the binary file ``f`` at its position; return their count.

        Bytes in a mapped file are copied file to file by the kernel (``copy_file_range``) where it can, else in
        blocks whose pages are dropped from the resident set once written: saving a model never makes its weights
        resident. ``sources`` holds the descriptors opened for the save."""
        ref = self._external
        if ref is None:
            raw = self.raw_bytes()
            f.write(raw)
            return len(raw)
        done = 0
        source = ref.file.copy_source(sources) if sources.kernel_copy and ref.length else None
        if source is not None:
            f.flush()
            done = _kernel_copy(source[0], source[1] + ref.offset, ref.length, f.fileno())
        if done < ref.length:
            view = ref.file.view(ref.offset, ref.length)
            for start in range(done, ref.length, _BLOCK_BYTES):
                f.write(view[start : start + _BLOCK_BYTES])
                ref.file.drop(ref.offset + start, min(_BLOCK_BYTES, ref.length - start))
        return ref.length

    def move_to(self, source: HeldFile, offset: int) -> None:
        """Read a spilled tensor's bytes from now on at ``offset`` of ``source``, the external data file a save has
        just written them to: its range of the spill file is given back (once no array views it), so a saved model
        does not hold its new weights twice on disk."""
        ref = self._external
        assert ref is not None and self.is_spilled
        self._external = ExternalRef(MappedRange(source, offset, ref.length), 0, ref.length, "", inline=True)

    def header(self, name: str) -> onnx.TensorProto:
        """A TensorProto with this tensor's name, type, dims, doc string and metadata, but no data.

        Data mapped from the model file keeps the proto it was loaded with (minus raw_data), so every other field comes
        back exactly as it was.
        """
        if self._external is not None and self._external.inline and self._proto is not None:
            out = onnx.TensorProto()
            out.CopyFrom(self._proto)
            put_str(out, "name", name)
            return out
        out = onnx.TensorProto(data_type=self.dtype, dims=self.dims)
        put_str(out, "name", name)
        self._put_info(out)
        return out

    def _put_info(self, out: onnx.TensorProto) -> None:
        """Write the doc string and metadata into ``out`` (text that was not UTF-8 goes back as its bytes)."""
        if self.doc_string:
            put_str(out, "doc_string", self.doc_string)
        for k, v in self.metadata_props.items():
            entry = out.metadata_props.add()
            put_str(entry, "key", k)
            put_str(entry, "value", v)

    def __repr__(self) -> str:
        where = "array" if self._array is not None else "proto"
        if self._external is not None:
            where = "spilled" if self.is_spilled else "external" if not self._external.inline else "mapped"
        return f"Tensor({dtype_name(self.dtype)}{list(self.dims)}, {where})"


class SparseTensor(Tensor):
    """A sparse initializer or attribute (ONNX SparseTensorProto): a Tensor whose ``numpy()`` is the dense array.

    Passes see it as any other constant (``numpy``, ``to_proto`` give the dense data); the file keeps it sparse
    (``to_sparse_proto``). Its values and indices are Tensors built by :meth:`Tensor.from_proto`, so external data
    goes through the one resolver with the model folder's rules. ``nbytes`` is the stored size (values + indices).
    """

    __slots__ = ("_sparse", "values", "indices")

    def __init__(
        self,
        proto: onnx.SparseTensorProto,
        base_dir: Path | None = None,
        files: dict[Path, ExternalFile] | None = None,
    ) -> None:
        super().__init__(proto.values.data_type, tuple(proto.dims))
        self._sparse = proto
        self.values = Tensor.from_proto(proto.values, base_dir, files)
        self.indices = Tensor.from_proto(proto.indices, base_dir, files)
        self._check_layout()
        if base_dir is not None or not self.indices.is_external:
            self._linear_indices()  # indices out of range: refused at load, not when a pass first reads the data

    def _where(self) -> str:
        return f"sparse tensor {text(self._sparse.values.name)!r}"

    def _check_layout(self) -> None:
        dims, vdims, idims = self.dims, self.values.dims, self.indices.dims
        if any(d < 0 for d in dims):
            raise TensorDataError(f"{self._where()} has a negative dimension in its shape {list(dims)}")
        if len(vdims) != 1:
            raise TensorDataError(f"{self._where()}: values must be 1-D, got shape {list(vdims)}")
        nnz = vdims[0]
        if not (idims == (nnz,) or (len(idims) == 2 and idims[0] == nnz and idims[1] == len(dims))):
            raise TensorDataError(
                f"{self._where()}: indices of shape {list(idims)} do not fit {nnz} values of a {len(dims)}-D tensor"
            )
        if self.indices.dtype not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            raise TensorDataError(f"{self._where()}: indices must be int64, got {dtype_name(self.indices.dtype)}")

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.indices.nbytes

    @property
    def dense_nbytes(self) -> int | None:
        """Bytes of the dense array ``numpy()`` makes."""
        return _expected_nbytes(self.dtype, self.dims)

    @property
    def is_external(self) -> bool:
        return False

    def _linear_indices(self) -> np.ndarray:
        idx = self.indices.numpy().astype(np.int64, copy=False)
        dims = self.dims
        if idx.ndim == 2:
            if idx.size and (idx.min() < 0 or np.any(idx >= np.asarray(dims, dtype=np.int64))):
                raise TensorDataError(f"{self._where()}: an index is out of range for its shape {list(dims)}")
            idx = np.ravel_multi_index(tuple(idx.T), dims) if idx.size else idx.reshape(-1)
        elif idx.size and (idx.min() < 0 or idx.max() >= math.prod(dims)):
            raise TensorDataError(f"{self._where()}: an index is out of range for its shape {list(dims)}")
        return idx

    def numpy(self) -> np.ndarray:
        if self._decoded is not None:
            return self._decoded
        values = self.values.numpy()
        idx = self._linear_indices()
        dense = np.zeros(math.prod(self.dims), dtype=values.dtype)
        dense[idx] = values
        dense = dense.reshape(self.dims)
        dense.flags.writeable = False
        if dense.nbytes <= _DECODED_CACHE_BYTES:
            self._decoded = dense
        return dense

    def raw_view(self) -> memoryview | None:
        return None

    def raw_bytes(self) -> bytes | memoryview:
        arr = self.numpy()
        if self.dtype in PACKED_4BIT:
            return numpy_helper.from_array(arr, "").raw_data
        return np.ascontiguousarray(arr).tobytes()

    def digest(self, limit: int | None = None) -> bytes:
        """A hash of the sparse encoding (never densified); personalized, so it never equals a dense tensor's."""
        cached = self.digests.get(limit)
        if cached is not None:
            return cached
        h = hashlib.blake2b(digest_size=16, person=b"graphopt-sparse")
        parts = [repr((self.dtype, self.dims, self.values.dims, self.indices.dims, self.indices.dtype)).encode()]
        for t in (self.values, self.indices):
            parts.append(t.raw_bytes() if t.dtype != onnx.TensorProto.STRING else repr(t.numpy().tolist()).encode())
        data = b"".join(bytes(p) for p in parts)
        h.update(memoryview(data)[:limit] if limit is not None else data)
        self.digests[limit] = digest = h.digest()
        return digest

    def to_proto(self, name: str) -> onnx.TensorProto:
        """The dense data as a TensorProto (what a pass evaluating this constant needs)."""
        arr = self.numpy()
        if self.dtype == onnx.TensorProto.STRING or self.dtype in PACKED_4BIT:
            out = numpy_helper.from_array(arr, "")
        else:
            out = onnx.TensorProto(data_type=self.dtype, dims=self.dims, raw_data=arr.tobytes())
        put_str(out, "name", name)
        return out

    def to_sparse_proto(self, name: str | None = None) -> onnx.SparseTensorProto:
        """The SparseTensorProto to write: as loaded (renamed if ``name`` differs), with any external values or
        indices read in, since their location is relative to the model's folder, not the output's."""
        proto = self._sparse
        inline = not self.values.is_external and not self.indices.is_external
        if inline and (name is None or proto.values.name == name):
            return proto
        out = onnx.SparseTensorProto()
        out.CopyFrom(proto)
        if not inline:
            out.values.CopyFrom(self.values.to_proto(self.values._proto.name if self.values._proto else ""))
            out.indices.CopyFrom(self.indices.to_proto(self.indices._proto.name if self.indices._proto else ""))
        if name is not None:
            put_str(out.values, "name", name)
        return out

    def __repr__(self) -> str:
        return f"SparseTensor({dtype_name(self.dtype)}{list(self.dims)}, {self.values.dims[0]} values)"


def _external_ref(proto: onnx.TensorProto, base_dir: Path, files: dict[Path, ExternalFile] | None) -> ExternalRef:
    name = text(proto.name)
    info = {text(e.key): text(e.value) for e in proto.external_data}
    path = resolve_external_location(base_dir, info.get("location", ""), name)
    if files is None:
        files = {}
    if path not in files:
        files[path] = ExternalFile(path, f"tensor {name!r}: external data file {path}", nofollow=True)
    file = files[path]
    offset = _external_int(info, "offset", name, path) or 0
    length = _external_int(info, "length", name, path)
    if length is None:
        length = max(file.size - offset, 0)
    file.view(offset, length, name)  # range check now, not at first use
    expected = _expected_nbytes(proto.data_type, tuple(proto.dims))
    if expected is not None and expected != length:
        raise ExternalDataError(
            f"tensor {name!r}: external data length {length} in {path} does not match its shape ({expected} bytes)"
        )
    return ExternalRef(file, offset, length, info.get("location", ""))


_T = onnx.TensorProto
_TYPED_FIELD = {
    _T.FLOAT: ("float_data", 1),
    _T.COMPLEX64: ("float_data", 2),
    _T.DOUBLE: ("double_data", 1),
    _T.COMPLEX128: ("double_data", 2),
    _T.INT64: ("int64_data", 1),
    _T.UINT32: ("uint64_data", 1),
    _T.UINT64: ("uint64_data", 1),
    _T.INT32: ("int32_data", 1),
    _T.INT16: ("int32_data", 1),
    _T.INT8: ("int32_data", 1),
    _T.UINT16: ("int32_data", 1),
    _T.UINT8: ("int32_data", 1),
    _T.BOOL: ("int32_data", 1),
    _T.FLOAT16: ("int32_data", 1),
    _T.BFLOAT16: ("int32_data", 1),
    _T.STRING: ("string_data", 1),
}
"""Element types whose typed data field holds a fixed number of entries per element (packed 4-bit and 8-bit float
types are left to onnx's decoder)."""


def _check_data_size(proto: onnx.TensorProto) -> None:
    """Refuse inline data of the wrong size for the tensor's type and shape (onnxruntime refuses it at load).

    ``raw_data`` must hold exactly the bytes the shape needs (not fewer, and not more: the extra bytes would be read
    by nothing and the model would still not run); a typed field exactly one entry (two for complex) per element.
    """
    dims = tuple(proto.dims)
    if any(d < 0 for d in dims):
        raise TensorDataError(f"tensor {text(proto.name)!r} has a negative dimension in its shape {list(dims)}")
    if proto.HasField("raw_data"):
        expected = _expected_nbytes(proto.data_type, dims)
        if expected is not None:
            got = len(proto.raw_data)
            if got != expected:
                raise TensorDataError(
                    f"tensor {text(proto.name)!r} has {got} bytes of raw_data, its shape {list(dims)} needs {expected}"
                )
        return
    field = _TYPED_FIELD.get(proto.data_type)
    if field is None:
        return
    got = len(getattr(proto, field[0]))
    expected = math.prod(dims) * field[1]
    if got != expected:
        raise TensorDataError(
            f"tensor {text(proto.name)!r} has {got} entries in {field[0]}, its shape {list(dims)} needs {expected}"
        )


def _expected_nbytes(elem_type: int, dims: tuple[int, ...]) -> int | None:
    """Bytes of a dense tensor of that type and shape, or None for strings and unknown types."""
    if elem_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    count = math.prod(dims)
    if elem_type in PACKED_4BIT:
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
