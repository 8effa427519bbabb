"""winograd: lower 3x3 stride-1 convolutions to Winograd F(m x m, 3 x 3) in standard ONNX ops, where it is faster.

A lowered Conv becomes:

    Pad (the Conv's pads, plus bottom/right rows so whole tiles cover the output)
    -> Conv, grouped per input channel, stride m, kernels B^T[i] (x) B^T[j]   input transform: C*n^2 channels
    -> Reshape/Transpose to [n^2, N*tiles, C]
    -> MatMul with U = G w G^T, precomputed offline for all n^2 transform points   [n^2, C, K]
    -> MatMul with A^T (x) A^T                                                     output transform: [m^2, ...]
    -> Transpose/Reshape to [N, K*m^2, tiles_h, tiles_w] -> DepthToSpace(m, CRD)
    -> Slice (crop to the output size) -> Add bias

Eligible: Conv in the standard domain, 2D, 3x3 constant float32 weight, stride 1, dilation 1, group 1, explicit pads
(or VALID), with or without bias, static C/H/W (the batch may be symbolic), opset >= 13.

``mode=auto`` (part of -O3 for target ort) times the original Conv and F(2,3)/F(4,3)/F(6,3) for each layer's exact
shape in onnxruntime at ``threads`` threads and keeps a lowering only if it is at least 5% faster; decisions are
cached per shape, threads, CPU model and onnxruntime version. Forced modes (F2, F4, F6) skip timing. Every lowering
is checked numerically against the original layer; one over the tile size's tolerance stays a Conv. For target
tensorrt, auto does nothing (TensorRT picks its own Winograd kernels); a forced mode still emits standard ops only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphopt.core import onnx_io
from graphopt.core.ir import STANDARD_DOMAINS, Graph, Model, Node, Value, constant_array
from graphopt.core.tensors import Tensor
from graphopt.engine.passes_api import ModelPass, Option, PassContext, register_pass
from graphopt.patterns import model_has_quantizer, reaches_quantizer

TILES = (2, 4, 6)
TOLERANCE = {2: 1e-5, 4: 5e-5, 6: 5e-4}
"""Max |lowered - conv| / max |conv| per tile size on random inputs (F(4,3) error is tens of times a direct conv's)."""
MIN_GAIN = 1.05
MIN_GAIN_MODEL = 1.02
"""A lowering must make the layer 5% faster, and the lowered layers together the whole model 2% faster."""
PROBE_BYTES = 8 << 20
"""A layer is timed and checked at a spatial size whose largest activation (input or output, float32) fits in this;
larger layers are probed on a centre crop of the same shape class (the lowering's intermediates are up to 4x that)."""
MIN_PROBE_SIDE = 8
MODEL_BUDGET_MB = 256
"""``mode=auto`` times the whole model only if its activations (static shapes, at the timing batch) fit in this many
MB; a larger model is left as it is, with a warning (pass option ``budget_mb``)."""
CACHE_MAX_BYTES = 16 << 20
"""A cache file larger than this is not read (treated as damaged and rewritten)."""

log = logging.getLogger("graphopt")


def _models_ms(protos: list[onnx.ModelProto], threads: int, batch: int, runs: int = 15) -> list[float]:
    """Median ms per run of each model, run in turn (A, B, C, A, ...) on the same random inputs."""
    from graphopt.tools import runtime

    sessions = [runtime.session(p, threads=threads) for p in protos]
    feeds = runtime.make_inputs(sessions[0], batch=batch)
    return [r.median_ms for r in runtime.measure_latency(sessions, feeds, warmup=2, runs=runs)]


def eligible(node: Node) -> dict[str, Any] | None:
    """The shape facts of a Conv this pass can lower, or None."""
    return _eligibility(node)[0]


def _eligibility(node: Node) -> tuple[dict[str, Any] | None, str | None]:
    if node.op_type != "Conv" or node.domain not in STANDARD_DOMAINS or len(node.inputs) < 2:
        return None, None
    x, w = node.inputs[0], constant_array(node.inputs[1])
    kernel = node.attr("kernel_shape")
    if w is None:
        shape = node.inputs[1].shape if node.inputs[1] is not None else None
        is3x3 = list(kernel or [])[-2:] == [3, 3] or (shape is not None and len(shape) == 4 and shape[2:] == (3, 3))
        return None, "weight not a constant" if is3x3 else None
    if w.ndim != 4 or w.shape[2:] != (3, 3):
        return None, None
    if w.dtype != np.float32:
        return None, "weight not float32"
    if x is None:
        return None, "no input"
    if int(node.attr("group", 1)) != 1:
        return None, "grouped"
    if any(int(s) != 1 for s in (node.attr("strides") or [1, 1])):
        return None, "stride not 1"
    if any(int(d) != 1 for d in (node.attr("dilations") or [1, 1])):
        return None, "dilated"
    auto_pad = node.attr("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        return None, f"auto_pad {auto_pad}"
    pads = [int(p) for p in (node.attr("pads") or [0, 0, 0, 0])] if auto_pad == "NOTSET" else [0, 0, 0, 0]
    if len(pads) != 4 or x.shape is None or len(x.shape) != 4:
        return None, "input rank unknown" if x.shape is None else "input not 4-D"
    c, h, wd = x.shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in (h, wd)):
        return None, "spatial size not static"
    if not (isinstance(c, int) and c > 0) or c != w.shape[1]:
        return None, "channels not static"
    bias = constant_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if len(node.inputs) > 2 and node.inputs[2] is not None and bias is None:
        return None, "bias not a constant"
    h_out, w_out = h + pads[0] + pads[2] - 2, wd + pads[1] + pads[3] - 2
    if h_out < 1 or w_out < 1:
        return None, "output empty"
    facts = {"C": c, "K": int(w.shape[0]), "H": h, "W": wd, "pads": pads, "h_out": h_out, "w_out": w_out, "bias": bias}
    return facts, None


# --------------------------------------------------------------------------------------------------------------------
# the lowering
# --------------------------------------------------------------------------------------------------------------------
def lowering_nodes(facts: dict[str, Any], w: np.ndarray, m: int, x: str, y: str, prefix: str):
    """ONNX nodes and initializers computing Conv ``x`` -> ``y`` with F(m, 3)."""
    from graphopt.kernels import winograd as wk

    at, _, bt = wk.matrices(m, 3)
    n = m + 2
    c, k = facts["C"], facts["K"]
    top, left, bottom, right = facts["pads"]
    th, tw = -(-facts["h_out"] // m), -(-facts["w_out"] // m)
    extra_h = th * m + 2 - (facts["H"] + top + bottom)
    extra_w = tw * m + 2 - (facts["W"] + left + right)
    kernel = np.einsum("ai,bj->abij", bt, bt).reshape(n * n, 1, n, n).astype(np.float32)
    u = wk.weight_transform(w, m).reshape(n * n, c, k).transpose(0, 2, 1).astype(np.float32)  # [n^2, K, C]
    # ConvTranspose weight [K*n^2, 1, m, m]: input channel k*n^2 + (i*n + j) adds A^T[:, i] A^T[:, j]^T to its tile
    out_w = np.einsum("ai,bj->ijab", at, at).reshape(n * n, 1, m, m)
    out_w = np.tile(out_w, (k, 1, 1, 1)).astype(np.float32)

    def name(s: str) -> str:
        return f"{prefix}/{s}"

    def const(arr: np.ndarray, label: str) -> str:
        inits.append(numpy_helper.from_array(arr, name(label)))
        return name(label)

    def shape(label: str, *dims: int) -> str:
        return const(np.array(dims, np.int64), label)

    inits: list[onnx.TensorProto] = []
    nodes = [
        # every channel of every image is one single-channel image for the input transform, which also pads
        helper.make_node(
            "Reshape",
            [x, shape("images_shape", -1, 1, facts["H"], facts["W"])],
            [name("images")],
            name=name("Reshape0"),
        ),
        helper.make_node(
            "Conv",
            [name("images"), const(kernel, "input_transform")],
            [name("v")],
            name=name("InputTransform"),
            strides=[m, m],
            kernel_shape=[n, n],
            pads=[top, left, bottom + extra_h, right + extra_w],
        ),
        # [N*C, n^2, th, tw] -> [n^2, C, N*tiles]
        helper.make_node(
            "Reshape", [name("v"), shape("shape1", -1, c, n * n, th * tw)], [name("v1")], name=name("Reshape1")
        ),
        helper.make_node("Transpose", [name("v1")], [name("v2")], name=name("Transpose1"), perm=[2, 1, 0, 3]),
        helper.make_node("Reshape", [name("v2"), shape("shape2", n * n, c, -1)], [name("v3")], name=name("Reshape2")),
        # one [K, C] x [C, N*tiles] product per transform point
        helper.make_node("MatMul", [const(u, "U"), name("v3")], [name("mm")], name=name("MatMul")),
        # [n^2, K, N, tiles] -> [N, K*n^2, th, tw]; a ConvTranspose per output channel (kernel = stride = m) applies
        # A^T . A, lays the m x m tiles out in place and adds the bias
        helper.make_node(
            "Reshape", [name("mm"), shape("shape3", n * n, k, -1, th * tw)], [name("mm2")], name=name("Reshape3")
        ),
        helper.make_node("Transpose", [name("mm2")], [name("mm3")], name=name("Transpose2"), perm=[2, 1, 0, 3]),
        helper.make_node(
            "Reshape", [name("mm3"), shape("shape4", -1, k * n * n, th, tw)], [name("mm4")], name=name("Reshape4")
        ),
    ]
    bias = facts["bias"] if facts["bias"] is not None else np.zeros(k, np.float32)
    nodes.append(
        helper.make_node(
            "ConvTranspose",
            [name("mm4"), const(out_w, "output_transform"), const(bias.astype(np.float32), "bias")],
            [name("tiles")],
            name=name("OutputTransform"),
            group=k,
            strides=[m, m],
            kernel_shape=[m, m],
        )
    )
    last = name("tiles")
    if extra_h or extra_w:
        starts, ends = shape("starts", 0, 0), shape("ends", facts["h_out"], facts["w_out"])
        nodes.append(
            helper.make_node("Slice", [last, starts, ends, shape("axes", 2, 3)], [name("cropped")], name=name("Crop"))
        )
        last = name("cropped")
    nodes.append(helper.make_node("Identity", [last], [y], name=name("Out")))
    return nodes, inits


def _layer_model(facts: dict[str, Any], w: np.ndarray, m: int | None, batch: int) -> onnx.ModelProto:
    """A model of just this layer: the original Conv (m None) or its F(m, 3) lowering."""
    shape = [batch, facts["C"], facts["H"], facts["W"]]
    inits = [numpy_helper.from_array(w, "w")]
    if m is None:
        ins = ["x", "w"]
        if facts["bias"] is not None:
            inits.append(numpy_helper.from_array(facts["bias"].astype(np.float32), "b"))
            ins.append("b")
        nodes = [helper.make_node("Conv", ins, ["y"], pads=facts["pads"], kernel_shape=[3, 3])]
    else:
        nodes, more = lowering_nodes(facts, w, m, "x", "y", "wino")
        inits += more
    graph = helper.make_graph(
        nodes,
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def probe_facts(facts: dict[str, Any], batch: int) -> tuple[dict[str, Any] | None, str]:
    """The layer's facts at the size it is timed and checked at: the layer itself when its largest activation fits in
    ``PROBE_BYTES``, else the same layer on a smaller map (same aspect, same pads), with a note saying so; None (and
    why) when even a ``MIN_PROBE_SIDE`` map would not fit."""
    h, w = facts["H"], facts["W"]
    per_pixel = 4 * max(batch, 1) * max(facts["C"], facts["K"])
    if per_pixel * h * w <= PROBE_BYTES:
        return facts, ""
    scale = math.sqrt(PROBE_BYTES / (per_pixel * h * w))
    ph, pw = min(h, max(MIN_PROBE_SIDE, int(h * scale))), min(w, max(MIN_PROBE_SIDE, int(w * scale)))
    size = f"{facts['C']}x{h}x{w}->{facts['K']}"
    if per_pixel * ph * pw > PROBE_BYTES:
        return None, f"not lowered: {size} is too large to time even at {ph}x{pw} (over {PROBE_BYTES >> 20} MB)"
    pads = facts["pads"]
    h_out, w_out = ph + pads[0] + pads[2] - 2, pw + pads[1] + pads[3] - 2
    probe = {**facts, "H": ph, "W": pw, "h_out": h_out, "w_out": w_out}
    return probe, f"timed and checked at {ph}x{pw} instead of {h}x{w} (activations over {PROBE_BYTES >> 20} MB)"


def _random_input(facts: dict[str, Any], batch: int, seed: int) -> np.ndarray:
    shape = (batch, facts["C"], facts["H"], facts["W"])
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def layer_error(facts: dict[str, Any], w: np.ndarray, m: int, batch: int = 1, seed: int = 0) -> float:
    """max |F(m) - Conv| / max |Conv| of this layer on a random input, in onnxruntime (float32 throughout)."""
    from graphopt.tools import runtime

    x = _random_input(facts, batch, seed)
    ref = runtime.session(_layer_model(facts, w, None, batch), optimization="disabled").run(None, {"x": x})[0]
    got = runtime.session(_layer_model(facts, w, m, batch)).run(None, {"x": x})[0]
    del x
    err = float(np.max(np.abs(np.subtract(got, ref, out=got))))
    return err / max(float(np.max(np.abs(ref))), 1e-30)


def time_layer(
    facts: dict[str, Any],
    w: np.ndarray,
    candidates: list[int | None],
    threads: int,
    batch: int = 1,
    runs: int = 15,
    rounds: int = 3,
) -> dict[int | None, float]:
    """Median seconds per run of each candidate (None: the Conv) over ``runs * rounds`` runs taken in turn (A, B, C,
    A, ...), onnxruntime at ``threads``: the same interleaved timer the whole-model check uses."""
    from graphopt.tools import runtime

    x = _random_input(facts, batch, 0)
    sessions = [runtime.session(_layer_model(facts, w, m, batch), threads=threads) for m in candidates]
    results = runtime.measure_latency(sessions, {"x": x}, warmup=3, runs=runs * rounds)
    return {m: r.median_ms / 1000 for m, r in zip(candidates, results, strict=True)}


# --------------------------------------------------------------------------------------------------------------------
# decisions and their cache
# --------------------------------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_path() -> Path:
    from graphopt.tools.summary import cache_dir

    return cache_dir() / "winograd.json"


def cache_key(facts: dict[str, Any], threads: int, batch: int) -> str:
    import onnxruntime

    bias = "b" if facts["bias"] is not None else "nb"
    raw = (
        f"{cpu_model()}|ort {onnxruntime.__version__}|t{threads}|n{batch}|{facts['C']}x{facts['H']}x{facts['W']}"
        f"->{facts['K']}|pads {facts['pads']}|{bias}"
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:24] + " " + raw


_warned: set[str] = set()


def _warn_once(path: Path, what: str, then: str = "ignoring it and rewriting it") -> None:
    """One warning line per cache file and process."""
    if str(path) not in _warned:
        _warned.add(str(path))
        log.warning("graphopt: warning: winograd cache %s %s; %s", path, what, then)


def _valid_entry(entry: Any) -> bool:
    """A cache entry as ``decide`` writes it: a known tile (or None), positive finite times (the chosen tile's among
    them) and errors."""

    def ms(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x > 0

    if not isinstance(entry, dict):
        return False
    tile, times, errors = entry.get("tile"), entry.get("ms"), entry.get("error")
    if tile is not None and (isinstance(tile, bool) or tile not in TILES):
        return False
    if not ms(entry.get("conv_ms")) or not isinstance(times, dict) or not isinstance(errors, dict):
        return False
    if not all(isinstance(k, str) and ms(v) for k, v in times.items()):
        return False
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in errors.values()):
        return False
    return tile is None or f"F{tile}" in times


def _read_cache(path: Path) -> dict[str, Any]:
    """The cached decisions. A missing file is an empty cache; a damaged one (not a regular file, unreadable, too
    large, not JSON, not an object, entries of the wrong form) is a cache miss for what it got wrong, with one warning
    naming the file; the next write replaces it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as e:
        _warn_once(path, f"cannot be read ({e.strerror or e})")
        return {}
    if not stat.S_ISREG(st.st_mode):
        _warn_once(path, "is not a regular file", "ignoring it (decisions are not cached)")
        return {}
    if st.st_size > CACHE_MAX_BYTES:
        _warn_once(path, f"is {st.st_size} bytes (more than {CACHE_MAX_BYTES >> 20} MB)")
        return {}
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(CACHE_MAX_BYTES + 1).decode("utf-8"))
    except OSError as e:
        _warn_once(path, f"cannot be read ({e.strerror or e})")
        return {}
    except (ValueError, RecursionError):
        _warn_once(path, "is not valid JSON (truncated or edited?)")
        return {}
    if not isinstance(data, dict):
        _warn_once(path, f"holds a JSON {type(data).__name__}, not an object of decisions")
        return {}
    good = {k: v for k, v in data.items() if _valid_entry(v)}
    if len(good) != len(data):
        _warn_once(path, f"has {len(data) - len(good)} malformed entries (wrong types, or zero, negative or NaN times)")
    return good


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    """Replace the cache file atomically (a temporary file in the same folder, then a rename); a cache that cannot be
    written (read-only folder, a directory in the file's place) is skipped."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() or (path.exists() and not path.is_file()):
            _warn_once(path, "is not a regular file", "ignoring it (decisions are not cached)")
            return
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        tmp = None
    except (OSError, ValueError):
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def decide(
    facts: dict[str, Any],
    w: np.ndarray,
    mode: str,
    threads: int,
    batch: int,
    cache: dict[str, Any],
) -> tuple[int | None, dict[str, Any]]:
    """The tile size to use for this layer (None: keep the Conv) and what was measured. A layer larger than
    ``PROBE_BYTES`` is measured at a smaller map (``info["probe"]`` says so) or, if even that is too large, kept."""
    probe, note = probe_facts(facts, batch)
    if probe is None:
        return None, {"skipped": note}
    extra = {"probe": note} if note else {}
    if mode in ("F2", "F4", "F6"):
        m = int(mode[1])
        err = layer_error(probe, w, m, batch)
        return (m if err <= TOLERANCE[m] else None), {"forced": m, "error": err, **extra}
    key = cache_key(facts, threads, batch)
    entry = cache.get(key)
    if entry is not None:
        tile = entry.get("tile")
        # the cache says what is faster; whether a tile is accurate enough is checked again, never taken from a file
        if tile is None or layer_error(probe, w, tile, batch) <= TOLERANCE[tile]:
            return tile, {**entry, "cached": True}
    errors = {m: layer_error(probe, w, m, batch) for m in TILES}
    ok = [m for m in TILES if errors[m] <= TOLERANCE[m]]
    times = time_layer(probe, w, [None, *ok], threads, batch) if ok else {None: 0.0}
    best = min(ok, key=lambda m: times[m]) if ok else None
    tile = best if best is not None and times[None] >= MIN_GAIN * times[best] else None
    entry = {
        "tile": tile,
        "conv_ms": times[None] * 1000,
        "ms": {f"F{m}": times[m] * 1000 for m in ok},
        "error": {f"F{m}": errors[m] for m in TILES},
        **extra,
    }
    if ok:
        cache[key] = entry
    return tile, entry


def activation_bytes(graph: Graph, batch: int) -> int:
    """Bytes of the graph's inputs and node outputs whose shapes are known (a symbolic dim counts as ``batch``):
    what onnxruntime may hold at once, at most."""
    total = 0
    seen: set[int] = set()
    for v in (*graph.inputs, *(o for n in graph for o in n.outputs)):
        if v is None or id(v) in seen or v.shape is None or v.const is not None:
            continue
        seen.add(id(v))
        n = 1
        for d in v.shape:
            n *= d if isinstance(d, int) and d >= 0 else max(batch, 1)
        total += n * max(_itemsize(v.dtype), 1)
    return total


def _itemsize(dtype: int | None) -> int:
    try:
        return int(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dtype)).itemsize) if dtype else 4
    except (KeyError, TypeError, ValueError):
        return 4


# --------------------------------------------------------------------------------------------------------------------
# the pass
# --------------------------------------------------------------------------------------------------------------------
def lower(graph: Graph, node: Node, facts: dict[str, Any], m: int) -> None:
    """Replace ``node`` by its F(m, 3) lowering, in place."""
    w = constant_array(node.inputs[1])
    prefix = graph.unique_name(f"{node.name or 'Conv'}/winograd_F{m}")
    nodes, inits = lowering_nodes(facts, w, m, "__x__", "__y__", prefix)  # type: ignore[arg-type]
    x, y = node.inputs[0], node.outputs[0]
    values: dict[str, Value] = {"__x__": x}  # type: ignore[dict-item]
    for t in inits:
        values[t.name] = graph.make_constant(Tensor.from_numpy(numpy_helper.to_array(t)), t.name)
    anchor = node
    for proto in nodes:
        outs = []
        for o in proto.output:
            v = Value(graph.unique_name(o)) if o != "__y__" else Value(graph.unique_name(f"{prefix}/out"))
            values[o] = v
            outs.append(v)
        attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        new = Node(
            proto.op_type, [values[i] for i in proto.input], attrs, outputs=outs, name=graph.unique_name(proto.name)
        )
        graph.insert_after(anchor, new)
        anchor = new
    out = values["__y__"]
    out.dtype, out.shape = y.dtype, y.shape  # type: ignore[union-attr]
    graph.replace_all_uses_with(y, out)  # type: ignore[arg-type]
    graph.remove(node)


@register_pass(
    "winograd",
    description="lower 3x3 stride-1 Convs to Winograd F(m,3) in standard ops where measured faster (-O3, target ort)",
    options={
        "mode": Option(
            str, "auto", "auto: time each layer; F2/F4/F6: force; off", choices=("auto", "off", "F2", "F4", "F6")
        ),
        "threads": Option(int, 1, "onnxruntime threads to time with (the deployment's thread count)"),
        "batch": Option(int, 1, "batch size to time with"),
        "cache": Option(bool, True, "reuse and record decisions in the per-user cache"),
        "budget_mb": Option(int, MODEL_BUDGET_MB, "auto: largest model (its activations, in MB) timed as a whole"),
    },
    # optimize(winograd=..., winograd_threads=...) override mode and threads for the run; winograd_decisions is a list
    # the caller may pass to watch each layer's decision as it is made (the CLI's progress bar)
    context_options=("winograd", "winograd_threads", "winograd_decisions"),
)
class Winograd(ModelPass):
    lossless = False
    once = True  # once per optimize call: the fixed point must not time the kept layers again

    def run_model(self, model: Model, ctx: PassContext) -> bool:
        from graphopt.core.shape_inference import infer_shapes

        graph = model.graph
        mode = ctx.options.get("winograd", self.options["mode"])
        if mode == "off":
            ctx.count("not run: --winograd off")
            return False
        if mode == "auto" and ctx.target == "tensorrt":
            ctx.count("not run: target tensorrt (its own Winograd kernels)")
            return False
        if (ctx.model.opset("") or 0) < 13:
            ctx.count("not run: opset below 13")
            return False
        infer_shapes(ctx.model)
        if mode == "auto":
            size = activation_bytes(graph, self.options["batch"])
            if size > self.options["budget_mb"] << 20:
                ctx.logger.warning(
                    "graphopt: warning: winograd: the model's activations (%d MB) exceed the %d MB it may time "
                    "(winograd{budget_mb=N}); layers left as Conv",
                    size >> 20,
                    self.options["budget_mb"],
                )
                ctx.count("kept (model too large to time)")
                return False
        path = cache_path()
        cache = _read_cache(path) if self.options["cache"] else {}
        threads = int(ctx.options.get("winograd_threads", self.options["threads"]))
        decisions = ctx.options.get("winograd_decisions")
        decisions = [] if decisions is None else decisions
        ctx.results["winograd"] = {"layers": decisions, "model_ms": {}}  # the pass's result: PassReport.results
        chosen: list[tuple[str, int, float]] = []  # node name, tile, per-layer speed-up
        quantized = model_has_quantizer(ctx)
        for node in list(graph):
            facts, why_not = _eligibility(node)
            if facts is None:
                if why_not is not None:  # a 3x3 Conv it cannot lower: the pass table says why
                    ctx.count(f"not eligible: {why_not}")
                continue
            if quantized and reaches_quantizer(node.outputs, graph, graph, ctx.model):
                ctx.count("kept (output feeds a QuantizeLinear)")  # its rounding would flip int8 steps
                continue
            w = constant_array(node.inputs[1])
            tile, info = decide(facts, w, mode, threads, self.options["batch"], cache)  # type: ignore[arg-type]
            if "skipped" in info:
                ctx.logger.warning("graphopt: warning: winograd: layer %s %s", node.name, info["skipped"])
                ctx.count("kept (too large to time)")
            elif "probe" in info:
                ctx.logger.info("winograd: layer %s %s", node.name, info["probe"])
                ctx.count("timed at a reduced size")
            decisions.append(
                {
                    "layer": node.name,
                    "shape": f"{facts['C']}x{facts['H']}x{facts['W']}->{facts['K']}",
                    **info,
                    "tile": tile,
                }
            )
            if tile is not None:
                gain = info.get("conv_ms", 1.0) / info["ms"][f"F{tile}"] if "ms" in info else 1.0
                chosen.append((node.name, tile, gain))
        if self.options["cache"] and mode == "auto":
            _write_cache(path, cache)
        if not chosen:
            if decisions:
                ctx.count("kept", len(decisions))
            return False
        if mode != "auto":
            self._apply(graph, chosen, ctx)
            return True
        # A layer that wins alone can lose in the model (onnxruntime fuses a Conv with its activation and keeps
        # blocked layouts between Convs): keep the lowering only if the whole model is faster.
        before = ctx.model.to_onnx()
        subsets = [chosen]
        strong = [c for c in chosen if c[2] >= 1.25]
        if strong and len(strong) < len(chosen):
            subsets.append(strong)
        trials = []
        for subset in subsets:
            trial = onnx_io.from_proto(before)
            infer_shapes(trial)
            self._apply(trial.graph, subset, None)
            trials.append(trial.to_onnx())
        try:
            times = _models_ms([before, *trials], threads, self.options["batch"])
        except Exception as exc:  # noqa: BLE001 - a model onnxruntime cannot time stays as it is
            ctx.logger.warning("winograd: cannot time the model in onnxruntime (%s); layers left as Conv", exc)
            return False
        ctx.results["winograd"]["model_ms"] = {"original": times[0]} | {
            f"{len(sub)} lowered": t for sub, t in zip(subsets, times[1:], strict=True)
        }
        best, best_ms = None, times[0]
        for subset, ms in zip(subsets, times[1:], strict=True):
            if ms * MIN_GAIN_MODEL <= best_ms:
                best, best_ms = subset, ms
        if best is None:
            ctx.count("kept (model not faster)", len(decisions))
            for d in decisions:
                d["tile"] = None
            return False
        self._apply(graph, best, ctx)
        return True

    @staticmethod
    def _apply(graph: Graph, chosen: list[tuple[str, int, float]], ctx: PassContext | None) -> None:
        tiles = {name: tile for name, tile, _ in chosen}
        for node in list(graph):
            if node.name in tiles:
                facts = eligible(node)
                if facts is not None:
                    lower(graph, node, facts, tiles[node.name])
                    if ctx is not None:
                        ctx.count(f"F{tiles[node.name]}")
