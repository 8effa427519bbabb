"""The onnxruntime adapter: sessions, random inputs that honour dtypes and symbolic dims, output comparison, and
interleaved latency measurement. ``graphopt bench``, the benchmarks and the tests use it."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from graphopt.errors import GraphoptError

SYMBOLIC_DEFAULT = 16
"""Size given to symbolic dims other than the first (the first, usually the batch, gets ``batch``)."""

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def _source(model: Any) -> bytes | str:
    from graphopt.core.ir import Model

    if isinstance(model, Model):
        model = model.to_onnx()
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString()
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if not path.is_file():
            raise GraphoptError(f"{path}: no such file")
        return str(path)
    raise TypeError(f"cannot make a session from {type(model).__name__}")


def add_outputs(proto: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """``proto`` (changed in place) with the tensors ``names`` as extra graph outputs, for reading intermediate
    values in a run; names that are outputs already are skipped. The outputs declare no type: onnxruntime takes the
    one it infers (a float16 or integer tensor declared float would not load)."""
    have = {o.name for o in proto.graph.output}
    for name in dict.fromkeys(names):
        if name not in have:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return proto


ORT_LOG_SEVERITY = 4
"""onnxruntime log severity graphopt uses (4: fatal only): its ``[E:onnxruntime...]`` lines would otherwise turn a
one-line error into several; graphopt reports what went wrong itself."""


def quiet_onnxruntime() -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(ORT_LOG_SEVERITY)  # the logger of session creation and of the environment
    return ort


def session(
    model: Any, threads: int | None = None, optimization: str = "all", *, optimized_path: str | None = None
) -> Any:
    """An onnxruntime CPU session for a path, ModelProto or Model. ``optimization``: all, extended, basic or
    disabled; ``optimized_path``: where onnxruntime writes the graph it optimized. Every session graphopt creates
    comes from here, so onnxruntime logs nothing below fatal and its load errors become one line."""
    ort = quiet_onnxruntime()
    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[optimization]
    so.log_severity_level = ORT_LOG_SEVERITY
    if optimized_path is not None:
        so.optimized_model_filepath = optimized_path
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    src = _source(model)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types; the user needs one line
        where = src if isinstance(src, str) else "the model"
        raise GraphoptError(f"{where}: onnxruntime cannot load it: {ort_reason(exc)}") from None


def ort_reason(exc: BaseException, limit: int = 300) -> str:
    """onnxruntime's error message as one short line: its ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT :`` prefix
    and the C++ signatures it quotes dropped, whitespace collapsed, cut at ``limit`` characters."""
    import re

    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ", "", text)
    running = r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' Status Message: "
    text = re.sub(running, r"\1 node '\2': ", text)
    text = re.sub(r"/onnxruntime_src/\S+ \S+ onnxruntime::[^)]*\)[^ ]* ", "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run(sess: Any, names: Sequence[str] | None, feed: Mapping[str, Any], where: str) -> list[Any]:
    """``sess.run`` whose failure (onnxruntime rejecting the data at run time: an index past a table, shapes that do
    not broadcast) is a one-line GraphoptError naming ``where``, the data's origin."""
    try:
        return sess.run(list(names) if names is not None else None, dict(feed))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types; the user needs one line
        raise GraphoptError(f"{where}: onnxruntime rejects this input: {ort_reason(exc)}") from None


MAX_RANDOM_INPUT_BYTES = 1 << 30
"""The largest random input make_inputs draws (in float64): a declared dim of 2**31 must be an error, not an
allocation of terabytes."""


def make_inputs(
    sess: Any, shapes: Mapping[str, Sequence[int]] | None = None, seed: int = 0, batch: int = 1, int_high: int = 2
) -> dict[str, np.ndarray]:
    """Random inputs for a session: normal floats, ints in [0, int_high), random bools.

    Ints stay small by default (0 and 1) because integer inputs are usually ids, masks or indices, and those index
    tables (BERT's token_type_ids index a 2-row table).

    A symbolic dim gets the same size everywhere it appears: ``batch`` when it is an input's first dim, else
    ``SYMBOLIC_DEFAULT``. ``shapes`` overrides whole inputs by name.
    """
    shapes = dict(shapes or {})
    names = [i.name for i in sess.get_inputs()]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise GraphoptError(f"--shape names {unknown[0]!r}, which is not an input (inputs: {', '.join(names)})")
    rng = np.random.default_rng(seed)
    sizes: dict[str, int] = {}
    feeds: dict[str, np.ndarray] = {}
    for i in sess.get_inputs():
        dtype = _ORT_TYPES.get(i.type)
        if dtype is None:
            raise GraphoptError(f"input {i.name!r} has type {i.type}, which graphopt cannot generate")
        if i.name in shapes:
            dims = list(shapes[i.name])
            _check_shape(i.name, dims, i.shape)
        else:
            dims = []
            for k, d in enumerate(i.shape):
                if isinstance(d, int) and d >= 0:
                    dims.append(d)
                elif isinstance(d, str) and d:
                    dims.append(sizes.setdefault(d, batch if k == 0 else SYMBOLIC_DEFAULT))
                else:
                    dims.append(batch if k == 0 else SYMBOLIC_DEFAULT)
        count = int(np.prod(dims, dtype=object)) if dims else 1
        if count * 8 > MAX_RANDOM_INPUT_BYTES:  # drawn in float64 first
            size = "x".join(map(str, dims))
            raise GraphoptError(
                f"input {i.name!r}: a random input of shape {size} would take {count * 8 / 2**30:.3g} GiB "
                f"(the bound is {MAX_RANDOM_INPUT_BYTES >> 30} GiB): give real data or a smaller shape"
            )
        if np.issubdtype(dtype, np.floating):
            feeds[i.name] = rng.standard_normal(dims).astype(dtype)
        elif dtype is np.bool_:
            feeds[i.name] = rng.random(dims) < 0.5
        else:
            feeds[i.name] = rng.integers(0, int_high, dims).astype(dtype)
    return feeds


def _check_shape(name: str, dims: Sequence[int], declared: Sequence[Any] | None) -> None:
    """A ``--shape`` for input ``name`` that the model's declared shape rules out is a one-line error."""
    spec = "x".join(str(d) for d in dims)
    if any(d < 0 for d in dims):
        raise GraphoptError(f"--shape {name}={spec}: dims must be non-negative")
    if declared is None:
        return
    model_dims = "x".join(str(d) if isinstance(d, int) and d >= 0 else str(d or "?") for d in declared)
    if len(dims) != len(declared) or any(
        isinstance(d, int) and d >= 0 and d != got for got, d in zip(dims, declared, strict=False)
    ):
        raise GraphoptError(
            f"--shape {name}={spec} conflicts with the model's declared shape of {name!r}: {model_dims or 'a scalar'}"
        )


def output_error(reference: Any, other: Any, rtol: float = 0.0, atol: float = 0.0) -> tuple[float, float, bool]:
    """Max absolute and relative error of ``other`` against ``reference``, and whether every element satisfies
    ``|other - reference| <= atol + rtol * |reference|``. NaN against NaN and equal infinities count as equal; a
    shape mismatch, or any difference in a non-float output, is an infinite error."""
    a, b = np.asarray(reference), np.asarray(other)
    if a.shape != b.shape:
        return float("inf"), float("inf"), False
    if a.dtype.kind not in "fc":
        same = bool(np.array_equal(a, b))
        return (0.0, 0.0, True) if same else (float("inf"), float("inf"), False)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    equal = (np.isnan(a64) & np.isnan(b64)) | (a64 == b64)
    with np.errstate(invalid="ignore"):  # inf - inf; equal infinities are masked as equal just above
        diff = np.where(equal, 0.0, np.abs(a64 - b64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = np.abs(np.nan_to_num(a64))
    close = bool(np.all(diff <= atol + rtol * scale))
    rel = diff / np.maximum(scale, 1e-12)
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), close


def compare_outputs(reference: Sequence[Any], other: Sequence[Any]) -> list[dict[str, float]]:
    """Per output: max absolute and max relative error of ``other`` against ``reference``."""
    result = []
    for ref, got in zip(reference, other, strict=True):
        max_abs, max_rel, _ = output_error(ref, got)
        result.append({"max_abs": max_abs, "max_rel": max_rel})
    return result


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def measure_latency(
    sessions: Sequence[Any], feeds: Mapping[str, np.ndarray], *, warmup: int = 5, runs: int = 50, progress: Any = None
) -> list[Latency]:
    """Time each session ``runs`` times, interleaved (A, B, A, B...) so that machine noise hits all alike."""
    for s in sessions:
        for _ in range(warmup):
            s.run(None, dict(feeds))
    times: list[list[float]] = [[] for _ in sessions]
    for r in range(runs):
        for k, s in enumerate(sessions):
            t0 = time.perf_counter()
            s.run(None, dict(feeds))
            times[k].append((time.perf_counter() - t0) * 1000)
        if progress is not None:
            progress(r + 1, runs)
    out = []
    for ts in times:
        ordered = sorted(ts)
        p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
        out.append(Latency(statistics.median(ts), p90, statistics.fmean(ts), ordered[0], len(ts)))
    return out


def parse_shape(spec: str) -> tuple[str, tuple[int, ...]]:
    """``name=1x3x224x224`` -> ("name", (1, 3, 224, 224))."""
    name, sep, dims = spec.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, tuple(int(d) for d in dims.lower().split("x")) if dims else ()
    except ValueError:
        raise GraphoptError(f"bad --shape {spec!r}: expected name=1x3x224x224") from None
