"""Calibration feeds from text: a list of strings, a tokenizer the caller passes in (nothing is downloaded), and the
model whose inputs the feeds must fit.

    from tokenizers import Tokenizer
    tok = Tokenizer.from_file("tokenizer.json")
    feeds = graphopt.quantize.calibration_feeds(sentences, tok, "model.onnx")
    graphopt.optimize("model.onnx", quantize="int8", calibration=feeds)

The tokenizer may be a ``tokenizers.Tokenizer`` (``encode_batch``), a ``transformers`` tokenizer, or any callable
that takes a list of strings and returns a mapping of name -> one sequence per string (lists or arrays). Its outputs
are matched to the model's inputs by name (``input_ids``/``ids``, ``attention_mask``/``mask``,
``token_type_ids``/``segment_ids``); ``position_ids`` the tokenizer does not give count 0..n-1, missing
``token_type_ids`` are zeros and a missing mask is 1 on the tokens, 0 on the padding. Sequences are truncated to
``max_length`` (or the model's static sequence length) and padded (pad id 0, mask 0) to the longest in the batch, or
to the static length. A callable that returns arrays keyed by the model's own input names (a float additive mask,
say) is passed through as it is, cast to the inputs' dtypes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from graphopt.core.ir import Model
from graphopt.core.tensors import np_dtype
from graphopt.errors import GraphoptError

ALIASES = {
    "ids": ("input_ids", "ids", "input", "token_ids", "tokens"),
    "mask": ("attention_mask", "mask", "input_mask"),
    "types": ("token_type_ids", "segment_ids", "type_ids", "token_types"),
}


def _load(model: Any) -> Model:
    from graphopt.core.onnx_io import from_proto, load

    if isinstance(model, Model):
        return model
    if isinstance(model, onnx.ModelProto):
        return from_proto(model)
    if isinstance(model, str | os.PathLike):
        return load(model)
    raise GraphoptError(f"calibration_feeds needs a model (path, ModelProto or Model), got {type(model).__name__}")


def _kind(name: str) -> str | None:
    low = name.lower()
    for kind, names in ALIASES.items():
        if low in names or any(low.endswith("/" + n) or low.endswith("." + n) for n in names):
            return kind
    return None


def _encode(tokenizer: Any, texts: list[str]) -> dict[str, list[list[int]]]:
    """The tokenizer's outputs for ``texts``: name -> one sequence per text."""
    if hasattr(tokenizer, "encode_batch") and hasattr(tokenizer, "get_vocab_size"):  # tokenizers.Tokenizer
        enc = tokenizer.encode_batch(texts)
        return {
            "input_ids": [list(e.ids) for e in enc],
            "attention_mask": [list(e.attention_mask) for e in enc],
            "token_type_ids": [list(e.type_ids) for e in enc],
        }
    if not callable(tokenizer):
        raise GraphoptError(
            "the tokenizer must be a tokenizers.Tokenizer or a callable taking a list of strings and returning "
            f"name -> sequences, got {type(tokenizer).__name__}"
        )
    out = tokenizer(texts)
    if not isinstance(out, Mapping):
        out = getattr(out, "data", out)  # transformers' BatchEncoding is a Mapping; keep older ones working
    if not isinstance(out, Mapping) or not out:
        raise GraphoptError(f"the tokenizer returned {type(out).__name__}, not a mapping of name -> sequences")
    result: dict[str, Any] = {}
    for name, rows in out.items():
        arr = rows if isinstance(rows, np.ndarray) else None
        if arr is not None and arr.ndim >= 2 and arr.shape[0] == len(texts):
            result[str(name)] = arr
            continue
        if not isinstance(rows, Sequence | np.ndarray) or len(rows) != len(texts):
            raise GraphoptError(
                f"the tokenizer's {name!r} has {len(rows) if hasattr(rows, '__len__') else 'no'} rows for "
                f"{len(texts)} texts"
            )
        result[str(name)] = [list(np.asarray(r).reshape(-1)) for r in rows]
    return result


def _pad(rows: list[list[int]], length: int, value: int) -> np.ndarray:
    out = np.full((len(rows), length), value, dtype=np.int64)
    for i, r in enumerate(rows):
        r = r[:length]
        out[i, : len(r)] = r
    return out


def calibration_feeds(
    texts: Sequence[str],
    tokenizer: Callable[..., Any] | Any,
    model: str | os.PathLike[str] | onnx.ModelProto | Model,
    *,
    batch_size: int = 1,
    max_length: int = 128,
    pad_id: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Feed dicts for ``model`` from ``texts``, ``batch_size`` texts per feed, for ``optimize(..., calibration=...)``
    or as ``.npz`` files for ``--calib-data`` (``np.savez(f"calib/{i}.npz", **feed)``). See the module doc."""
    from graphopt.quantize.calibration import check_feed

    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise GraphoptError("calibration_feeds takes a list of strings")
    if not texts:
        raise GraphoptError("no calibration data: the list of texts is empty")
    if batch_size < 1 or max_length < 1:
        raise GraphoptError(f"batch_size and max_length must be at least 1, got {batch_size} and {max_length}")
    m = _load(model)
    inputs = [v for v in m.graph.inputs if v.const is None]
    static_batch = static_len = None
    for v in inputs:
        shape = v.shape or ()
        if len(shape) >= 2 and isinstance(shape[0], int):
            static_batch = shape[0]
        if len(shape) >= 2 and isinstance(shape[-1], int) and _kind(v.name or "") in ("ids", "mask", "types"):
            static_len = shape[-1]
    if static_batch is not None:
        batch_size = static_batch
        if len(texts) % batch_size:
            raise GraphoptError(f"the model takes batches of {batch_size}: give a multiple of {batch_size} texts")
    feeds = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        encoded = _encode(tokenizer, chunk)
        lengths = [len(r) for r in next(iter(encoded.values()))] if encoded else [0]
        length = static_len or min(max_length, max(lengths))
        feed: dict[str, np.ndarray] = {}
        by_kind = {k: name for name in encoded for k in [_kind(name)] if k is not None}
        for v in inputs:
            name = v.name or ""
            dtype = np_dtype(v.dtype) if v.dtype else np.dtype(np.int64)
            ready = False
            if name in encoded or _kind(name) in by_kind:
                rows = encoded[name if name in encoded else by_kind[_kind(name)]]  # type: ignore[index]
                ready = isinstance(rows, np.ndarray)
                arr = rows if ready else _pad(rows, length, pad_id if _kind(name) == "ids" else 0)
            elif _kind(name) == "mask" and "ids" in by_kind and not isinstance(encoded[by_kind["ids"]], np.ndarray):
                arr = _pad([[1] * len(r) for r in encoded[by_kind["ids"]]], length, 0)  # 1 on tokens, 0 on padding
            elif _kind(name) == "types":
                arr = np.zeros((len(chunk), length), dtype=np.int64)
            elif "position" in name.lower():
                arr = np.broadcast_to(np.arange(length, dtype=np.int64), (len(chunk), length))
            else:
                raise GraphoptError(
                    f"the tokenizer gives {', '.join(sorted(encoded))}, nothing for the model's input {name!r}: "
                    "pass a callable returning it by that name"
                )
            if _kind(name) == "mask" and dtype.kind == "f" and not ready:
                raise GraphoptError(
                    f"the model's mask input {name!r} is float (an additive mask?): pass a callable tokenizer "
                    "that returns it ready to feed"
                )
            feed[name] = np.ascontiguousarray(arr, dtype=dtype)
        check_feed(m, feed, f"text batch #{start // batch_size} ({chunk[0][:40]!r}...)")
        feeds.append(feed)
    return feeds
