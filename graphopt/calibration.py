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
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx

from graphopt.errors import GraphoptError
from graphopt.ir import Model


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
def load_dir(path: str | os.PathLike[str]) -> list[tuple[Path, dict[str, np.ndarray]]]:
    """The feed dicts in a directory of ``.npz`` files (sorted by name), one file per batch, with their files."""
    folder = Path(path)
    if not folder.is_dir():
        raise GraphoptError(f"{folder}: calibration data directory not found")
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise GraphoptError(f"{folder}: no .npz calibration files in the directory")
    feeds = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as data:
                feeds.append((f, {k: data[k] for k in data.files}))
        except (OSError, ValueError) as exc:
            raise GraphoptError(f"{f}: not a readable .npz file ({exc})") from None
    return feeds


def random_feeds(model: Model, n: int, seed: int = 0, batch: int = 1) -> list[dict[str, np.ndarray]]:
    """``n`` random feed dicts for smoke tests (normal floats, small ints; symbolic dims get sizes)."""
    from graphopt import runtime

    warnings.warn(
        "calibrating on random data: the ranges will not match real inputs, so accuracy will be poor",
        stacklevel=2,
    )
    sess = runtime.session(model, optimization="disabled")
    return [runtime.make_inputs(sess, seed=seed + i, batch=batch) for i in range(n)]


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
            h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def default_cache_dir() -> Path:
    from graphopt.summary import cache_dir

    return cache_dir() / "calibration"


def _read_cache(path: Path, key: str, names: Sequence[str]) -> dict[str, Stats] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            lows, highs, bounds, hists = data["min"], data["max"], data["bound"], data["hist"]
            stored = [str(n) for n in data["names"]]
    except (OSError, KeyError, ValueError):
        return None
    if stored != list(names):
        return None
    return {n: Stats(float(lows[i]), float(highs[i]), float(bounds[i]), hists[i].copy()) for i, n in enumerate(names)}


def _write_cache(path: Path, key: str, stats: dict[str, Stats]) -> None:
    names = list(stats)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        key=np.array(key),
        names=np.array(names),
        min=np.array([stats[n].min for n in names]),
        max=np.array([stats[n].max for n in names]),
        bound=np.array([stats[n].bound for n in names]),
        hist=np.stack([stats[n].hist for n in names]) if names else np.zeros((0, BINS), np.int64),
    )
    os.replace(tmp, path)


@dataclass
class Calibration:
    """The statistics of each calibrated tensor, and whether they came from the cache."""

    stats: dict[str, Stats]
    batches: int
    cached: bool
    cache_file: Path | None

    def ranges(
        self, method: str = "minmax", percentile: float = 99.999, symmetric: bool = False
    ) -> dict[str, tuple[float, float]]:
        if method not in METHODS:
            raise GraphoptError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")
        return {name: s.range(method, percentile, symmetric) for name, s in self.stats.items() if s.seen}


def collect(
    model: Model,
    names: Sequence[str],
    feeds: Iterable[Feed],
    *,
    cache: str | os.PathLike[str] | bool | None = True,
    progress: Progress | None = None,
    threads: int | None = None,
) -> Calibration:
    """Run ``model`` on every feed dict and gather the statistics of the tensors ``names``.

    ``cache``: True for the per-user cache directory, a path for that file, False/None for no cache.
    """
    from graphopt import runtime

    batches = list(feeds)
    if not batches:
        raise GraphoptError("no calibration data: the calibration set is empty")
    names = list(dict.fromkeys(names))
    proto = runtime.add_outputs(model.to_onnx(), names)
    cache_file: Path | None = None
    if cache:
        key = _digest(proto, names, batches)
        cache_file = Path(cache) if not isinstance(cache, bool) else default_cache_dir() / f"{key[:32]}.npz"
        hit = _read_cache(cache_file, key, names) if cache_file.is_file() else None
        if hit is not None:
            return Calibration(hit, len(batches), True, cache_file)
    sess = runtime.session(proto, threads=threads, optimization="basic")
    stats = {n: Stats.empty() for n in names}
    if progress is not None:
        progress(0, len(batches))
    for i, feed in enumerate(batches):
        outputs = sess.run(names, dict(feed)) if names else []
        for name, value in zip(names, outputs, strict=True):
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                stats[name].add(value)
        del outputs
        if progress is not None:
            progress(i + 1, len(batches))
    if cache_file is not None:
        try:
            _write_cache(cache_file, key, stats)
        except OSError as exc:
            warnings.warn(f"{cache_file}: calibration cache not written ({exc})", stacklevel=2)
    return Calibration(stats, len(batches), False, cache_file)
