"""Calibration: run a model on sample inputs and record the range of its activations.

``collect`` runs the model once per feed dict in onnxruntime, with the tensors to calibrate added as graph outputs,
and streams every batch into per-tensor statistics (min, max and a histogram kept by the Numba kernels in
``graphopt.kernels.histogram``); no batch is kept after it is counted. ``Stats.range`` turns those statistics into a
range with one of three methods: ``minmax``, ``percentile`` (the central P % of the values) or ``entropy``
(TensorRT's KL-divergence threshold).

A cache keyed by the model's bytes, the tensor names and the data makes a second run on the same model and data skip
inference: the statistics (not the ranges) are cached, so changing the method reuses them too.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx

from graphopt.core.ir import Model
from graphopt.errors import GraphoptError

logger = logging.getLogger("graphopt.quantize.calibration")


def _kernels() -> ModuleType:
    """The Numba histogram kernels, imported on first use: importing numba costs ~0.15 s, which a plain
    ``graphopt optimize`` (no calibration) should not pay."""
    from graphopt.kernels import histogram

    return histogram


METHODS = ("minmax", "percentile", "entropy")
BINS = 2048
CACHE_VERSION = 1

Feed = Mapping[str, np.ndarray]
Progress = Callable[[int, int | None], None]


@dataclass
class Stats:
    """What calibration saw of one tensor: its extremes and a histogram over ``[-bound, bound]``."""

    min: float
    max: float
    bound: float
    hist: np.ndarray

    @classmethod
    def empty(cls, bins: int = BINS) -> Stats:
        return cls(float("inf"), float("-inf"), 0.0, np.zeros(bins, dtype=np.int64))

    def add(self, x: np.ndarray) -> None:
        flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
        lo, hi, mag, n = _kernels().tensor_stats(flat)
        if n == 0:
            return
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        if mag > self.bound:
            # grow with headroom so that slowly rising maxima do not rebin on every batch
            new = mag if self.bound == 0.0 else max(mag, self.bound * 1.25)
            if self.hist.any():
                self.hist = _kernels().rebin(self.hist, self.bound, new)
            self.bound = new
        _kernels().histogram_add(self.hist, flat, self.bound)

    @property
    def seen(self) -> bool:
        return self.min <= self.max

    @property
    def count(self) -> int:
        """How many (finite) values calibration saw of this tensor, over all batches."""
        return int(self.hist.sum())

    def range(self, method: str = "minmax", percentile: float = 99.999, symmetric: bool = False) -> tuple[float, float]:
        """The calibrated ``(low, high)`` of this tensor under ``method``.

        ``symmetric`` says the tensor will be quantized to signed int8 around zero; the entropy method then has 128
        levels for ``|x|``; an asymmetric uint8 quantization of a tensor that is never negative has 255.
        """
        if not self.seen:
            return 0.0, 0.0
        if method == "minmax":
            return self.min, self.max
        if method == "percentile":
            lo, hi = _kernels().percentile_range(self.hist.astype(np.float64), self.bound, percentile)
            return max(lo, self.min), min(hi, self.max)
        if method == "entropy":
            levels = 255 if not symmetric and self.min >= 0.0 else 128
            t = _kernels().kl_threshold(_kernels().fold_abs(self.hist.astype(np.float64)), self.bound, levels)
            return max(-t, self.min), min(t, self.max)
        raise GraphoptError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")


# --------------------------------------------------------------------------------------------------------------------
# calibration data
# --------------------------------------------------------------------------------------------------------------------
MAX_ARRAY_BYTES = 2**30
"""Largest calibration array read (declared in its .npy header): one batch of one input, 1 GiB."""


def load_dir(path: str | os.PathLike[str], model: Model | None = None) -> list[tuple[Path, dict[str, np.ndarray]]]:
    """The feed dicts in a directory of ``.npz`` files (sorted by name), one file per batch, with their files.

    Each file's .npy headers are read first: an array the model cannot take (not one of its inputs, another dtype,
    rank or static dim) or larger than :data:`MAX_ARRAY_BYTES` is refused before any of its data is read; pickled
    objects are refused; a damaged file (truncated, bad CRC, not a zip) and NaN or Inf values are one-line errors
    naming the file.
    """
    files = npz_files(path)
    feeds = []
    for f in files:
        feed = _load_npz(f, model)
        if model is not None:
            check_feed(model, feed, str(f))
        feeds.append((f, feed))
    return feeds


def npz_files(path: str | os.PathLike[str]) -> list[Path]:
    """The ``.npz`` files of a calibration directory, sorted by name (read nothing yet). One-line errors say what is
    there instead: a file rather than a directory, nothing at all, or files of other kinds (``found 3 .npy files``)."""
    folder = Path(path)
    try:
        is_dir, exists, is_file = folder.is_dir(), folder.exists(), folder.is_file()
    except (OSError, ValueError) as e:  # a name too long for the file system, a NUL byte
        raise GraphoptError(
            f"{folder}: cannot read the calibration data directory ({getattr(e, 'strerror', None) or e})"
        ) from None
    if not is_dir:
        if exists:
            kind = "a file" if is_file else "a special file (device, FIFO or socket)"
            raise GraphoptError(
                f"{folder}: {kind}, not a directory; calibration data is a directory of .npz files (one feed dict "
                "per file)"
            )
        raise GraphoptError(f"{folder}: calibration data directory not found")
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise GraphoptError(f"{folder}: cannot read the calibration data directory ({e.strerror or e})") from None
    files = [f for f in entries if f.name.endswith(".npz") and not f.is_dir()]
    if not files:
        raise GraphoptError(f"{folder}: no .npz calibration files in the directory ({_found(entries)})")
    return files


def _found(entries: list[Path]) -> str:
    """What a folder holds, by kind: 'found 3 .npy files, 1 folder', or 'it is empty'."""
    from collections import Counter

    kinds = Counter("folder" if e.is_dir() else (e.suffix.lower() or "no-extension") for e in entries)
    if not kinds:
        return "it is empty"
    parts = []
    for kind, n in kinds.most_common(4):
        label = "folder" if kind == "folder" else f"{kind} file"
        parts.append(f"{n} {label}{'' if n == 1 else 's'}")
    more = len(kinds) - 4
    return "found " + ", ".join(parts) + (f" and {more} other kind{'' if more == 1 else 's'}" if more > 0 else "")


def _load_npz(f: Path, model: Model | None) -> dict[str, np.ndarray]:
    import zipfile
    import zlib

    if not f.is_file():
        raise GraphoptError(f"{f}: not a regular file")
    try:
        with zipfile.ZipFile(f) as zf:
            members = zf.infolist()
            if not members:
                raise GraphoptError(f"{f}: an empty .npz file (no arrays)")
            for info in members:
                _check_member(f, zf, info, model)
            out = {}
            for info in members:
                with zf.open(info) as stream:
                    arr = np.lib.format.read_array(stream, allow_pickle=False)
                out[info.filename[: -len(".npy")]] = arr
            return out
    except GraphoptError:
        raise
    except zipfile.BadZipFile as exc:
        what = "not a .npz file (a .npz is a zip of .npy arrays)" if "not a zip" in str(exc) else f"damaged ({exc})"
        raise GraphoptError(f"{f}: {what}") from None
    except (OSError, ValueError, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GraphoptError(f"{f}: not a readable .npz file ({first})") from None


def _check_member(f: Path, zf: Any, info: Any, model: Model | None) -> None:
    """Refuse, from its header alone, an array of a .npz that is not a plain array the model's inputs can take."""
    name = info.filename
    if not name.endswith(".npy") or info.is_dir():
        raise GraphoptError(f"{f}: holds {name!r}, which is not a .npy array")
    key = name[: -len(".npy")]
    with zf.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise GraphoptError(f"{f}: array {key!r} holds Python objects (pickles are not loaded)")
    if model is not None:
        _check_header_fits(f, key, shape, dtype, model)
    count = math.prod(shape)
    if count * dtype.itemsize > MAX_ARRAY_BYTES:
        raise GraphoptError(
            f"{f}: array {key!r} declares shape {list(shape)} ({count * dtype.itemsize / 2**30:.3g} GiB), over the "
            f"{MAX_ARRAY_BYTES / 2**30:g} GiB limit of one calibration batch"
        )


def _check_header_fits(f: Path, key: str, shape: tuple[int, ...], dtype: np.dtype, model: Model) -> None:
    inputs = {v.name: v for v in model.graph.inputs if v.const is None}
    v = inputs.get(key)
    if v is None:
        raise GraphoptError(f"{f}: {key!r} is not an input of the model (inputs: {', '.join(sorted(inputs))})")
    want = _NP_OF_ELEM.get(v.dtype or 0)
    if want is not None and dtype != np.dtype(want):
        raise GraphoptError(f"{f}: input {key!r} has dtype {dtype}, the model expects {np.dtype(want).name}")
    if v.shape is None:
        return
    if len(shape) != len(v.shape) or any(
        isinstance(d, int) and d >= 0 and d != got for got, d in zip(shape, v.shape, strict=False)
    ):
        raise GraphoptError(f"{f}: input {key!r} has shape {_dims(shape)}, the model expects {_dims(v.shape)}")


PROBE_SIZES = (16, 32, 64, 128, 224, 256, 320, 640)
"""Sizes tried, in order, for an input's symbolic dims (other than the batch) when random calibration data is made:
the first the model runs on is used. A feature-pyramid detector needs H and W multiples of 32 (16 fails), a
recognizer a minimum width, and so on."""


def random_feeds(
    model: Model,
    n: int,
    seed: int = 0,
    batch: int = 1,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """``n`` random feed dicts for smoke tests (normal floats, small ints).

    ``shapes`` (the user's ``--calib-shape``) fixes whole inputs; the model's static dims are kept; symbolic dims get
    the first of ``PROBE_SIZES`` the model runs on (one onnxruntime run per size tried), the same size for every dim
    of the same name, so that a detector with dynamic height and width is calibrated on a size it accepts."""
    from graphopt.tools import runtime

    if not model.graph.outputs:
        raise GraphoptError("nothing to calibrate: the model has no outputs")
    warnings.warn(
        "calibrating on random data: the ranges will not match real inputs, so accuracy will be poor",
        stacklevel=2,
    )
    sess = runtime.session(model, optimization="disabled")
    fixed = dict(shapes or {})
    try:
        runtime.make_inputs(sess, fixed, seed=seed, batch=batch)  # the user's shapes against the model's, first
    except GraphoptError as exc:
        raise GraphoptError(str(exc).replace("--shape", "--calib-shape", 1)) from None
    symbolic = [
        i for i in sess.get_inputs() if i.name not in fixed and any(not _static(d) for d in list(i.shape or [])[1:])
    ]
    chosen = fixed
    if symbolic:
        first_error = None
        for size in PROBE_SIZES:
            trial = dict(fixed)
            for i in symbolic:
                trial[i.name] = [
                    (d if _static(d) else batch if k == 0 else size) for k, d in enumerate(list(i.shape or []))
                ]
            probe = runtime.make_inputs(sess, trial, seed=seed, batch=batch)
            try:
                sess.run(None, probe)
            except Exception as exc:  # noqa: BLE001 - onnxruntime rejects this size: try the next one
                first_error = first_error or exc
                logger.info("random calibration inputs with symbolic dims of %d: onnxruntime fails (%s)", size, exc)
                continue
            chosen = trial
            if size != PROBE_SIZES[0]:
                logger.info("random calibration inputs: symbolic dims set to %d (smaller sizes fail)", size)
            break
    return [runtime.make_inputs(sess, chosen, seed=seed + i, batch=batch) for i in range(n)]


def _static(d: object) -> bool:
    return isinstance(d, int) and d >= 0


_NP_OF_ELEM = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.BOOL: np.bool_,
}


def check_feed(model: Model, feed: Feed, where: str) -> None:
    """Raise a one-line GraphoptError when ``feed`` does not fit the model's inputs (names, dtypes, static dims)."""
    inputs = [v for v in model.graph.inputs if v.const is None]
    names = {v.name for v in inputs}
    unknown = sorted(set(feed) - names)
    if unknown:
        raise GraphoptError(
            f"{where}: {unknown[0]!r} is not an input of the model (inputs: {', '.join(sorted(names))})"
        )
    for v in inputs:
        if v.name not in feed:
            raise GraphoptError(f"{where}: input {v.name!r} is missing")
        arr = np.asarray(feed[v.name])
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = "NaN" if np.isnan(arr).any() else "Inf"
            raise GraphoptError(f"{where}: input {v.name!r} contains {bad}: calibration data must be finite")
        want = _NP_OF_ELEM.get(v.dtype or 0)
        if want is not None and arr.dtype != np.dtype(want):
            raise GraphoptError(
                f"{where}: input {v.name!r} has dtype {arr.dtype}, the model expects {np.dtype(want).name}"
            )
        if v.shape is not None:
            if arr.ndim != len(v.shape):
                raise GraphoptError(
                    f"{where}: input {v.name!r} has shape {_dims(arr.shape)}, the model expects rank {len(v.shape)}"
                )
            for got, d in zip(arr.shape, v.shape, strict=True):
                if isinstance(d, int) and d >= 0 and d != got:
                    raise GraphoptError(
                        f"{where}: input {v.name!r} has shape {_dims(arr.shape)}, the model expects {_dims(v.shape)}"
                    )


def _dims(shape: Sequence[object]) -> str:
    """A shape in the command line's own format (``--shape input=1x3x224x224``), data and model alike."""
    return "x".join("?" if d is None else str(d) for d in shape)


# --------------------------------------------------------------------------------------------------------------------
# collection
# --------------------------------------------------------------------------------------------------------------------
def _digest(proto: onnx.ModelProto, names: Sequence[str], feeds: Sequence[Feed]) -> str:
    h = hashlib.sha256()
    h.update(f"graphopt-calibration-{CACHE_VERSION}-{BINS}".encode())
    h.update(proto.SerializeToString(deterministic=True))
    h.update("\0".join(names).encode())
    for feed in feeds:
        for key in sorted(feed):
            arr = np.ascontiguousarray(feed[key])
            h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
            h.update(arr.reshape(-1).view(np.uint8) if arr.size else b"")  # memoryview.cast refuses 0-sized dims
    return h.hexdigest()


def sample_name(sources: Sequence[str] | None, i: int) -> str:
    """How errors name calibration feed ``i``: its file when known."""
    return sources[i] if sources is not None and i < len(sources) else f"calibration sample #{i}"


def default_cache_dir() -> Path:
    from graphopt.tools.summary import cache_dir

    return cache_dir() / "calibration"


_CACHE_FIELDS = ("key", "names", "min", "max", "bound", "hist")


def _read_cache(path: Path, key: str, names: Sequence[str]) -> dict[str, Stats] | None:
    """The cached statistics, or None on a miss: another model or data (silently), or a file that is not a cache
    this version wrote (damaged, truncated, edited: a warning naming the file; the caller then rewrites it)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files") or not set(_CACHE_FIELDS) <= set(data.files):
                raise ValueError("not a calibration cache")
            fields = {k: data[k] for k in _CACHE_FIELDS}
    except Exception as exc:  # noqa: BLE001 - np.load raises many types on a damaged file; any is a miss
        why = "not a .npz file" if "pickle" in str(exc) else _first(exc)
        logger.warning("%s: calibration cache unreadable (%s); recalibrating and rewriting it", path, why)
        return None
    problem = _cache_problem(fields)
    if problem is not None:
        logger.warning("%s: calibration cache invalid (%s); recalibrating and rewriting it", path, problem)
        return None
    if str(fields["key"]) != key or [str(n) for n in fields["names"]] != list(names):
        return None  # the cache of other data or another model: a plain miss
    lows, highs, bounds, hists = fields["min"], fields["max"], fields["bound"], fields["hist"]
    return {
        n: Stats(float(lows[i]), float(highs[i]), float(bounds[i]), hists[i].astype(np.int64))
        for i, n in enumerate(names)
    }


def _cache_problem(f: dict[str, np.ndarray]) -> str | None:
    """What is wrong with the arrays of a cache file, or None when they are what :func:`_write_cache` writes."""
    if f["key"].dtype.kind != "U" or f["key"].ndim != 0:
        return "key is not a string"
    names = f["names"]
    if names.ndim != 1 or (names.size and names.dtype.kind != "U"):
        return "names are not a list of strings"
    n = names.shape[0]
    for k in ("min", "max", "bound"):
        if f[k].dtype.kind != "f" or f[k].shape != (n,):
            return f"{k} is not {n} floats"
    if f["hist"].dtype.kind not in "iu" or f["hist"].shape != (n, BINS):
        return f"hist is not {n}x{BINS} integers"
    if not (np.isfinite(f["bound"]).all() and (f["bound"] >= 0).all() and (f["hist"] >= 0).all()):
        return "negative or non-finite counts or bounds"
    seen = f["min"] <= f["max"]
    if np.isnan(f["min"][seen]).any() or np.isnan(f["max"][seen]).any():
        return "NaN extremes"
    return None


def _first(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def _write_cache(path: Path, key: str, stats: dict[str, Stats]) -> None:
    """Write the cache atomically: a temporary file in the same folder, renamed over ``path``."""
    import tempfile

    names = list(stats)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez_compressed(
                out,
                key=np.array(key),
                names=np.array(names, dtype=str),
                min=np.array([stats[n].min for n in names], dtype=np.float64),
                max=np.array([stats[n].max for n in names], dtype=np.float64),
                bound=np.array([stats[n].bound for n in names], dtype=np.float64),
                hist=np.stack([stats[n].hist for n in names]) if names else np.zeros((0, BINS), np.int64),
            )
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


FEW_VALUES = 16384
"""A tensor calibration saw at most this many values of (over all batches: a pooled feature vector or a fully
connected layer's activations over a few images) has its range estimated from too few samples: see :func:`widened`."""

FEW_FRACTION = 256
"""... but only when it is also this many times smaller than the model's median calibrated tensor: a classifier head
after its convolution maps (orinet's hidden layer: 1024 values against a median of 819200), not a model whose every
tensor is small (oskut-scads, a Thai word segmenter on 32x21 inputs: all 1039 tensors hold 128-1.2M values, median
19200; widening 435 of them by half cost 28 dB on held-out inputs, 35.7 -> 7.1 dB, as the SQNR floor's fallback no
longer fired)."""


@dataclass
class Calibration:
    """The statistics of each calibrated tensor, and whether they came from the cache."""

    stats: dict[str, Stats]
    batches: int
    cached: bool
    cache_file: Path | None

    def ranges(
        self,
        method: str = "minmax",
        percentile: float = 99.999,
        symmetric: bool = False,
        headroom: float = 0.0,
        few: int = FEW_VALUES,
    ) -> dict[str, tuple[float, float]]:
        """Each seen tensor's range under ``method``; a tensor calibration saw at most ``few`` values of in all, and
        at most 1/:data:`FEW_FRACTION` of the model's median tensor, gets its range widened by ``headroom`` (both ends
        scaled by ``1 + headroom``, see :func:`widened`)."""
        if method not in METHODS:
            raise GraphoptError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")
        seen = [s.count for s in self.stats.values() if s.seen]
        typical = float(np.median(seen)) if seen else 0.0
        out = {}
        for name, s in self.stats.items():
            if s.seen:
                lo, hi = s.range(method, percentile, symmetric)
                sparse = s.count <= few and s.count * FEW_FRACTION <= typical
                out[name] = widened(lo, hi, headroom) if headroom > 0.0 and sparse else (lo, hi)
        return out


def widened(lo: float, hi: float, headroom: float) -> tuple[float, float]:
    """``(lo, hi)`` with both ends moved away from zero by the fraction ``headroom`` (a range from 0 stays from 0).

    The largest of a few hundred values (a classifier's pooled features or its hidden fully connected layer, over 4
    calibration images) underestimates the largest a new input gives: on held-out images such tensors exceed their
    calibrated maximum by 15 % to 80 % (orinet's hidden layer, PP-LCNet's pooled features), and clipping exactly the
    strongest features costs the output more than the coarser steps cost: with a headroom of 0.5 orinet's SQNR on
    held-out images goes from 14 dB to 32 dB (4 images; 19 to 28 dB over 16), issue 16."""
    return lo * (1.0 + headroom) if lo < 0.0 else lo, hi * (1.0 + headroom) if hi > 0.0 else hi


def expose(proto: onnx.ModelProto, names: Sequence[str]) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``proto`` (changed in place) with the float tensors ``names`` readable after a run: tensor name -> the graph
    output that carries it.

    A main-graph tensor becomes a graph output. A tensor inside an If branch or a Loop body is threaded out: a Loop
    body gets it as an extra scan output (the Loop's output stacks its value of every iteration), an If branch as an
    extra output (the other branch outputs an empty float tensor, so only the branch taken contributes); nested
    bodies repeat this at every level. Scan bodies and other subgraphs are not threaded: their tensors are left out
    of the result (a layer there stays float)."""
    used = _all_names(proto.graph)
    counter = iter(range(1 << 30))

    def fresh(base: str) -> str:
        name = base
        while name in used:
            name = f"{base}_{next(counter)}"
        used.add(name)
        return name

    wanted = set(names)

    def walk(g: onnx.GraphProto, top: bool) -> dict[str, str]:
        """Expose the wanted names defined in ``g`` and below as outputs of ``g``: name -> output name in ``g``."""
        found: dict[str, str] = {}
        local = [o for n in g.node for o in n.output if o] + [i.name for i in g.input]
        for name in local:
            if name in wanted and name not in found:
                found[name] = name
        for node in list(g.node):
            bodies = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
            if not bodies:
                continue
            if node.op_type == "Loop" and node.domain in ("", "ai.onnx") and "body" in bodies:
                inner = walk(bodies["body"], False)
                inner = {k: v for k, v in inner.items() if k not in found}
                for name, carried in inner.items():
                    value = onnx.helper.make_tensor_value_info(carried, onnx.TensorProto.FLOAT, None)
                    bodies["body"].output.append(value)
                    out = fresh(f"{name}_calibration")
                    node.output.append(out)
                    found[name] = out
            elif node.op_type == "If" and node.domain in ("", "ai.onnx") and "then_branch" in bodies:
                then_found = walk(bodies["then_branch"], False)
                else_found = walk(bodies["else_branch"], False)
                order = [k for k in dict.fromkeys([*then_found, *else_found]) if k not in found]
                for branch, got in ((bodies["then_branch"], then_found), (bodies["else_branch"], else_found)):
                    for name in order:
                        if name in got:
                            src = got[name]
                        else:
                            src = fresh(f"{name}_calibration_empty")
                            empty = onnx.helper.make_tensor(src, onnx.TensorProto.FLOAT, [0], [])
                            branch.node.append(onnx.helper.make_node("Constant", [], [src], value=empty))
                        branch.output.append(onnx.helper.make_tensor_value_info(src, onnx.TensorProto.FLOAT, None))
                for name in order:
                    out = fresh(f"{name}_calibration")
                    node.output.append(out)
                    found[name] = out
        if top:
            have = {o.name for o in g.output}
            for out in found.values():
                if out not in have:
                    g.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
                    have.add(out)
        return found

    return proto, walk(proto.graph, True)


def _all_names(g: onnx.GraphProto) -> set[str]:
    names = {i.name for i in g.input} | {t.name for t in g.initializer} | {o.name for o in g.output}
    for n in g.node:
        names.update(n.output)
        names.update(n.input)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                names |= _all_names(a.g)
            for sub in a.graphs:
                names |= _all_names(sub)
    return names


def collect(
    model: Model,
    names: Sequence[str],
    feeds: Iterable[Feed],
    *,
    cache: str | os.PathLike[str] | bool | None = True,
    progress: Progress | None = None,
    threads: int | None = None,
    sources: Sequence[str] | None = None,
) -> Calibration:
    """Run ``model`` on every feed dict and gather the statistics of the tensors ``names``.

    ``cache``: True for the per-user cache directory, a path for that file, False/None for no cache. ``sources``
    names where each feed came from (its file), for the error when onnxruntime rejects one.
    """
    from graphopt.tools import runtime

    batches = list(feeds)
    if not batches:
        raise GraphoptError("no calibration data: the calibration set is empty")
    proto, carried = expose(model.to_onnx(), list(dict.fromkeys(names)))
    names = [n for n in dict.fromkeys(names) if n in carried]  # a tensor that cannot be read stays unmeasured
    read = [carried[n] for n in names]
    cache_file: Path | None = None
    if cache:
        key = _digest(proto, names, batches)
        cache_file = Path(cache) if not isinstance(cache, bool) else default_cache_dir() / f"{key[:32]}.npz"
        hit = _read_cache(cache_file, key, names) if cache_file.is_file() else None
        if hit is not None:
            return Calibration(hit, len(batches), True, cache_file)
    sess = None
    if any(carried[n] != n for n in names):
        # tensors threaded out of If/Loop bodies: if onnxruntime cannot run that (a scan output whose shape varies
        # between iterations, say), calibrate the main graph only and leave the bodies float
        try:
            sess = runtime.session(proto, threads=threads, optimization="basic")
            runtime.run(sess, read, batches[0], sample_name(sources, 0))
        except GraphoptError as exc:
            logger.warning("subgraph bodies stay float: onnxruntime cannot read their tensors (%s)", _first(exc))
            names = [n for n in names if carried[n] == n]
            proto, carried = expose(model.to_onnx(), names)
            read = [carried[n] for n in names]
            sess = None
    if sess is None:
        sess = runtime.session(proto, threads=threads, optimization="basic")
    stats = {n: Stats.empty() for n in names}
    if progress is not None:
        progress(0, len(batches))
    for i, feed in enumerate(batches):
        outputs = runtime.run(sess, read, feed, sample_name(sources, i)) if names else []
        for name, value in zip(names, outputs, strict=True):
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size:
                stats[name].add(value)
        del outputs
        if progress is not None:
            progress(i + 1, len(batches))
    if cache_file is not None:
        try:
            _write_cache(cache_file, key, stats)
        except OSError as exc:
            logger.warning("%s: calibration cache not written (%s)", cache_file, _first(exc))
    return Calibration(stats, len(batches), False, cache_file)


def channel_absmax(
    model: Model,
    names: Sequence[str],
    feeds: Iterable[Feed],
    *,
    threads: int | None = None,
    sources: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Per-channel statistics for SmoothQuant: the max of ``|x|`` over every axis but the last, per tensor in
    ``names``, over all ``feeds`` (one onnxruntime pass; tensors that are not float or never produced are left out)."""
    from graphopt.tools import runtime

    names = list(dict.fromkeys(names))
    if not names:
        return {}
    proto = runtime.add_outputs(model.to_onnx(), names)
    sess = runtime.session(proto, threads=threads, optimization="basic")
    out: dict[str, np.ndarray] = {}
    for i, feed in enumerate(feeds):
        values = runtime.run(sess, names, feed, sample_name(sources, i))
        for name, value in zip(names, values, strict=True):
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.ndim == 0 or value.size == 0:
                continue
            m = np.max(np.abs(value.reshape(-1, value.shape[-1])), axis=0).astype(np.float64)
            prev = out.get(name)
            out[name] = m if prev is None or prev.shape != m.shape else np.maximum(prev, m)
        del values
    return out
