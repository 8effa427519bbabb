"""The HTML report of an ``optimize`` run: one self-contained page (inline CSS and SVG charts drawn here, no script,
nothing fetched from the network) built from the summary that ``graphopt optimize --json`` prints.

Sections appear only when the run has their data: passes, nodes and size, op histogram, quantization (int8 static or
dynamic, int4: SQNR per layer, worst first; every layer's mode, the reason and its measured error), half precision
(fp16/bf16: every node kept fp32 and why), channel pruning per layer, Winograd decisions with their timings.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from graphopt.errors import GraphoptError
from graphopt.tools.summary import abbreviate_names, human_bytes, human_count, plural

# colours: before / after, and the SQNR scale
GREY, BLUE, GREEN, AMBER, RED = "#b8c0cc", "#3b6fd8", "#2f9e5b", "#e0a020", "#d64545"
WIDTH = 960  # the SVG charts' user units; they scale to the page width

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1d2433; background: #f4f6fa; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 28px 48px; }
header h1 { font-size: 22px; margin: 0 0 2px; }
header .sub { color: #5b6578; font-size: 13px; word-break: break-all; }
section { background: #fff; border: 1px solid #e2e6ee; border-radius: 10px; padding: 16px 20px; margin: 16px 0; }
section h2 { font-size: 16px; margin: 0 0 10px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 12px; margin-top: 16px; }
.card { background: #fff; border: 1px solid #e2e6ee; border-radius: 10px; padding: 12px 16px; }
.card .k { color: #5b6578; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 19px; font-weight: 600; margin-top: 2px; }
.card .d { font-size: 12px; color: #5b6578; }
.good { color: #2f9e5b; } .bad { color: #d64545; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef1f6; vertical-align: top; }
th { color: #5b6578; font-weight: 600; font-size: 12px; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { white-space: nowrap; }
td code { overflow-wrap: anywhere; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.legend { font-size: 12px; color: #5b6578; margin: 4px 0 6px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; }
.note { color: #5b6578; font-size: 12px; margin: 6px 0 0; }
.warn { color: #b4232a; font-size: 13px; margin: 6px 0; }
svg { display: block; width: 100%; height: auto; }
svg text { font: 13px system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; fill: #1d2433; }
svg .muted { fill: #5b6578; }
"""


def write_report(summary: dict[str, Any], path: Path) -> None:
    """Write the report of ``summary`` (what ``optimize --json`` prints) to ``path``, atomically."""
    text = render(summary)
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise GraphoptError(f"{path}: report folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report is an ordinary file
        os.replace(tmp, path)
    except OSError as e:
        raise GraphoptError(f"{path}: cannot write the report: {e.strerror or e}") from None


def render(summary: dict[str, Any]) -> str:
    """The report page as a string."""
    parts = [_header(summary), _passes(summary), _ops(summary)]
    if summary.get("quantization"):
        parts.append(_quantization(summary["quantization"]))
    if summary.get("precision"):
        parts.append(_precision(summary["precision"], summary))
    for pruned in summary.get("pruning") or []:
        parts.append(_pruning(pruned))
    if summary.get("winograd"):
        parts.append(_winograd(summary["winograd"]))
    title = f"graphopt report: {Path(str(summary.get('input', 'model'))).name}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(p for p in parts if p)
        + "\n</main>\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------------------------
def _header(s: dict[str, Any]) -> str:
    nodes_before = s.get("nodes_before", 0)
    nodes_after = s.get("nodes_written", s.get("nodes_after", 0))
    size_before, size_after = s.get("bytes_before", 0), s.get("bytes_after", 0)
    timing = s.get("timing") or {}
    level = "--passes" if s.get("level") is None else f"-O{s.get('level')}"
    stages = "; ".join(
        f"{'passes' if st['stage'] == 'passes' else st['stage']} {st['nodes_before']} → {st['nodes_after']}"
        for st in s.get("stages") or []
    )
    cards = [
        _card("nodes", f"{nodes_before} → {nodes_after}", _change(nodes_before, nodes_after), stages),
        _card("size", f"{human_bytes(size_before)} → {human_bytes(size_after)}", _change(size_before, size_after)),
        _card(
            "time",
            f"{sum(timing.values()):.2f} s",
            "",
            ", ".join(f"{k} {v:.2f}s" for k, v in timing.items()),
        ),
        _card("iterations", str(s.get("iterations", 0)), "", f"{level}, target {s.get('target', '?')}"),
    ]
    return (
        f'<header><h1>graphopt report</h1><div class="sub"><code>{escape(str(s.get("input", "?")))}</code> → '
        f"<code>{escape(str(s.get('output', '?')))}</code></div></header>\n"
        f'<div class="cards">{"".join(cards)}</div>'
    )


def _card(key: str, value: str, change: str = "", detail: str = "") -> str:
    value = value.replace(" ", "\u00a0").replace("\u00a0→\u00a0", " → ")  # break at the arrow, not inside a size
    return (
        f'<div class="card"><div class="k">{escape(key)}</div><div class="v">{escape(value)}</div>'
        f'<div class="d">{change}{escape(detail)}</div></div>'
    )


def _change(before: float, after: float) -> str:
    if not before or before == after:
        return ""
    pct = (after - before) / before * 100
    cls = "good" if pct < 0 else "bad"
    return f'<span class="{cls}">{pct:+.0f}%</span> '


def _passes(s: dict[str, Any]) -> str:
    passes = [p for p in s.get("passes") or [] if p.get("runs")]
    if not passes:
        return ""
    results = {"winograd": _winograd_result(s["winograd"])} if s.get("winograd") else {}
    with_result = bool(results) or any(p.get("counts") for p in passes)
    rows = []
    for p in passes:
        delta = p.get("nodes_delta", 0)
        counts = ", ".join(f"{k} ×{v}" for k, v in sorted((p.get("counts") or {}).items()))
        rows.append(
            f'<tr><td><code>{escape(p["name"])}</code></td><td class="n">{p["runs"]}</td>'
            f'<td>{"yes" if p.get("changed") else "no"}</td><td class="n">{f"{delta:+d}" if delta else "0"}</td>'
            f'<td class="n">{p.get("seconds", 0) * 1000:.1f}</td>'
            + (f"<td>{escape(results.get(p['name'], counts))}</td>" if with_result else "")
            + "</tr>"
        )
    skipped = [p["name"] for p in s.get("passes") or [] if not p.get("runs")]
    note = f'<p class="note">not rerun (nothing changed since an identical pass ran): {escape(", ".join(skipped))}</p>'
    chart = _hbars(
        [(p["name"], [p.get("seconds", 0) * 1000], [BLUE]) for p in passes],
        value_text=lambda v: f"{v[0]:.1f} ms",
    )
    return (
        '<section><h2>Passes</h2><table><tr><th>pass</th><th class="n">runs</th><th>changed</th>'
        '<th class="n">nodes ±</th><th class="n">ms</th>'
        + ("<th>result</th>" if with_result else "")
        + "</tr>"
        + "".join(rows)
        + "</table>"
        + (note if skipped else "")
        + '<p class="legend">time per pass (ms)</p>'
        + chart
        + "</section>"
    )


def _winograd_result(w: dict[str, Any]) -> str:
    tiles: dict[str, int] = {}
    for d in w.get("layers") or []:
        key = f"F{d['tile']}" if d.get("tile") else "Conv"
        tiles[key] = tiles.get(key, 0) + 1
    return ", ".join(f"{k} ×{v}" for k, v in sorted(tiles.items())) or "no eligible 3x3 layer"


def _ops(s: dict[str, Any]) -> str:
    before, after = s.get("ops_before") or {}, s.get("ops_after") or {}
    if not before and not after:
        return ""
    ops = sorted(set(before) | set(after), key=lambda op: (-max(before.get(op, 0), after.get(op, 0)), op))
    shown = ops[:30]
    rows = [(op, [before.get(op, 0), after.get(op, 0)], [GREY, BLUE]) for op in shown]
    more = f'<p class="note">and {plural(len(ops) - len(shown), "more op type")}</p>' if len(ops) > len(shown) else ""
    return (
        "<section><h2>Op histogram</h2>"
        + _legend([("before", GREY), ("after (the file written)", BLUE)])
        + _hbars(rows, value_text=lambda v: f"{v[0]} → {v[1]}" if v[0] != v[1] else str(v[0]))
        + more
        + "</section>"
    )


def _quantization(q: dict[str, Any]) -> str:
    layers = q.get("layers") or []
    bits = q.get("bits", 8)
    dynamic = q.get("method") == "dynamic"
    title = "Int4 weight quantization" if bits == 4 else "Int8 dynamic quantization" if dynamic else "Int8 quantization"
    ranked = sorted(layers, key=lambda x: math.inf if x.get("sqnr_db") is None else x["sqnr_db"])
    rows = []
    for layer in ranked:
        db = layer.get("sqnr_db")
        colour = RED if db is not None and db < 20 else AMBER if db is not None and db < 30 else GREEN
        rows.append((layer["name"], [db if db is not None else 0.0], [colour], layer))

    def text(v: list[float], layer: dict[str, Any]) -> str:
        db = layer.get("sqnr_db")
        runs = layer.get("fused_as") or ("float" if layer.get("fused") is False else "")
        return ("n/a" if db is None else f"{db:.1f} dB") + (f" · {runs}" if runs else "")

    chart = _hbars([r[:3] for r in rows], value_text=None, extra=[r[3] for r in rows], text=text, value_w=300)
    err = q.get("output_error_rel")
    sqnr = q.get("output_sqnr_db")
    error = (
        f"output error {'n/a' if err is None else f'{err:.3g}'} relative "
        f"(SQNR {'n/a' if sqnr is None else f'{sqnr:.1f}'} dB)"
        if err is not None or bits != 4
        else "output error not measured (no calibration data)"
    )
    if q.get("output_error_part"):  # one part's own error is the worst: pooled, the rest's energy would hide it
        pooled = q.get("output_pooled_sqnr_db")
        whole = "" if pooled is None else f"; pooled over all: SQNR {pooled:.1f} dB"
        error += f" (worst part: {escape(str(q['output_error_part']))}{whole})"
    batches = plural(q.get("calibration_batches", 0), "calibration batch", "calibration batches")
    if bits == 4:
        how = f"{escape(str(q.get('method', '')).upper())} weights, {escape(str(q.get('reduce_range_reason', '')))}"
    elif dynamic:
        how = f"activations quantized at run time; error measured on {batches}"
    else:
        method = str(q.get("method", "")) + (f" {q['percentile']:g}" if q.get("percentile") else "")
        how = f"{escape(method)} ranges from {batches}"
        if q.get("method_reason"):
            how += f" ({escape(str(q['method_reason']))})"
    modes = _mode_counts(_layer_rows(q))
    facts = (
        f"{plural(len(layers), 'layer')} quantized for {escape(str(q.get('target', '?')))} "
        f"({escape(modes)}); {how}; {error}; parameters "
        f"{human_bytes(q.get('param_bytes_before', 0))} → {human_bytes(q.get('param_bytes_after', 0))} "
        "(the quantizer's input → its output)"
    )
    if q.get("speedup") is not None:
        facts += f"; speed {q['speedup']:.2f}× fp32 under onnxruntime (1 thread, first calibration batch)"
    upgraded = q.get("opset_upgraded")
    if upgraded:
        why = "blocked int4 DequantizeLinear needs it" if bits == 4 else "per-channel Q/DQ needs it"
        facts += f"; opset {upgraded[0]} → {upgraded[1]} ({why})"
    warnings = "".join(f'<p class="warn">warning: {escape(str(w))}</p>' for w in q.get("warnings") or [])
    legend = (
        "SQNR of each layer's output with its int4 weights against float (its own error), worst first"
        if bits == 4
        else "SQNR of each layer's dequantized output against the float model, worst first"
    )
    return (
        f"<section><h2>{title}</h2>"
        f"<p>{facts}</p>"
        + warnings
        + _legend([("≥ 30 dB", GREEN), ("20–30 dB", AMBER), ("< 20 dB", RED)])
        + f'<p class="legend">{legend}</p>'
        + chart
        + _layer_table(q)
        + "</section>"
    )


def _layer_rows(q: dict[str, Any]) -> list[dict[str, Any]]:
    """Every layer the quantizer decided about: its mode, the reason, the errors measured (the --json 'layers',
    'choices' and 'kept_float_why' merged): the quantized layers worst first, then the ones left float."""
    rows: dict[str, dict[str, Any]] = {}
    layers = sorted(q.get("layers") or [], key=lambda x: math.inf if x.get("sqnr_db") is None else x["sqnr_db"])
    for x in layers:
        rows[x["name"]] = {
            "name": x["name"],
            "op": x.get("op_type", ""),
            "mode": x.get("mode") or "static",
            "why": x.get("note") or "",
            "sqnr": x.get("sqnr_db"),
            "alone": x.get("alone_sqnr_db"),
            "runs": x.get("fused_as") or ("float (no integer kernel)" if x.get("fused") is False else ""),
        }
    for c in q.get("choices") or []:
        row = rows.setdefault(
            c["name"], {"name": c["name"], "op": c.get("op_type", ""), "sqnr": None, "alone": None, "runs": ""}
        )
        row["mode"], row["why"] = c.get("mode", ""), c.get("reason", "")
    for f in q.get("kept_float_why") or []:
        row = rows.setdefault(
            f["layer"], {"name": f["layer"], "op": f.get("op_type", ""), "sqnr": None, "alone": None, "runs": ""}
        )
        if row.get("mode") in (None, "float"):
            row["mode"] = "float"
            row["why"] = row.get("why") or f["why"]
    for name, op in (q.get("float_fused") or {}).items():  # left float, yet onnxruntime fuses its Q/DQ neighbours
        if name in rows:
            rows[name]["runs"] = f"{op} (DequantizeLinear in, QuantizeLinear out)"
    return list(rows.values())


def _mode_counts(rows: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["mode"]] = counts.get(r["mode"], 0) + 1
    return ", ".join(f"{n} {mode}" for mode, n in counts.items()) or "no layer"


def _layer_table(q: dict[str, Any]) -> str:
    rows = _layer_rows(q)
    if not rows:
        return ""
    alone = any(r["alone"] is not None for r in rows)
    runs = any(r["runs"] for r in rows)
    head = (
        '<tr><th>layer</th><th>op</th><th>mode</th><th>why</th><th class="n">SQNR dB</th>'
        + ('<th class="n">alone dB</th>' if alone else "")
        + ("<th>runs as</th>" if runs else "")
        + "</tr>"
    )
    body = "".join(
        f"<tr><td><code>{escape(str(r['name']))}</code></td><td>{escape(str(r['op']))}</td>"
        f"<td>{escape(str(r['mode']))}</td><td>{escape(str(r['why']))}</td>"
        f'<td class="n">{_db(r["sqnr"])}</td>'
        + (f'<td class="n">{_db(r["alone"])}</td>' if alone else "")
        + (f"<td>{escape(str(r['runs']))}</td>" if runs else "")
        + "</tr>"
        for r in rows
    )
    legend = (
        "<p class=\"legend\">SQNR: the layer's output in the quantized model against the float model's"
        + ("; alone: the model's output SQNR with the layer alone quantized, or its own estimate" if alone else "")
        + "</p>"
    )
    return f'<h2 style="margin-top:14px">Layers: mode and why</h2>{legend}<table>{head}{body}</table>'


def _precision(p: dict[str, Any], s: dict[str, Any]) -> str:
    """The half-precision conversion: what was converted, each node kept fp32 and why, error, size, latency."""
    half = str(p.get("precision", "half"))
    kept = p.get("kept_fp32") or []
    err = p.get("output_error_rel")
    facts = (
        f"{p.get('converted_nodes', 0)} of {plural(p.get('float_nodes', 0), 'float node')} run in {escape(half)}, "
        f"{len(kept)} kept fp32 (kernels {escape(str(p.get('kernels', '?')))}, target "
        f"{escape(str(p.get('target', '?')))}); weights: {p.get('weights_half', 0)} {escape(half)}, "
        f"{p.get('weights_fp32', 0)} fp32; Casts {p.get('casts_added', 0)} added, {p.get('casts_removed', 0)} "
        "removed; output error "
        + ("not measured" if err is None else f"{err:.3g} relative, min cosine {p.get('output_cosine_min') or 0:.6f}")
        + (f" (measured at {escape(str(p['output_measured_at']))})" if p.get("output_measured_at") else "")
        + f" on {plural(p.get('calibration_batches', 0), 'batch', 'batches')}"
        + (" of random data" if p.get("random_data") else "")
        + f"; parameters {human_bytes(p.get('param_bytes_before', 0))} → {human_bytes(p.get('param_bytes_after', 0))}"
    )
    latency = p.get("latency_ms")
    if latency:
        facts += f"; onnxruntime CPU latency {latency[0]:.2f} ms → {latency[1]:.2f} ms"
    by_reason = p.get("kept_fp32_by_reason") or {}
    reasons = ", ".join(f"{n} {why}" for why, n in by_reason.items())
    body = "".join(
        f"<tr><td><code>{escape(str(k.get('name', '')))}</code></td><td>{escape(str(k.get('op_type', '')))}</td>"
        f"<td>fp32</td><td>{escape(str(k.get('why', '')))}</td></tr>"
        for k in kept
    )
    warnings = "".join(f'<p class="warn">warning: {escape(str(w))}</p>' for w in p.get("warnings") or [])
    return (
        f"<section><h2>{escape(half.upper())} conversion</h2><p>{facts}</p>{warnings}"
        + (f'<p class="legend">kept fp32: {escape(reasons)}</p>' if reasons else "")
        + (
            '<h2 style="margin-top:14px">Nodes kept fp32: mode and why</h2>'
            f"<table><tr><th>node</th><th>op</th><th>mode</th><th>why</th></tr>{body}</table>"
            f'<p class="note">{plural(p.get("converted_nodes", 0), "other float node")} run in {escape(half)}</p>'
            if kept
            else f'<p class="note">every float node runs in {escape(half)}</p>'
        )
        + "</section>"
    )


def _pruning(r: dict[str, Any]) -> str:
    layers = r.get("layers") or []
    if not layers:
        return ""
    mode = str(r.get("mode", ""))
    rows_ch, rows_mac, table = [], [], []
    for x in layers:
        ob, oa = (x.get("out_channels") or [None, None])[:2]
        ib, ia = (x.get("in_channels") or [None, None])[:2]
        mb, ma = (x.get("macs") or [None, None])[:2]
        if ob is not None:
            rows_ch.append((x["name"], [ob, oa if oa is not None else ob], [GREY, BLUE]))
        if mb is not None:
            rows_mac.append((x["name"], [mb, ma if ma is not None else mb], [GREY, BLUE]))
        table.append(
            f"<tr><td><code>{escape(x['name'])}</code></td><td>{escape(str(x.get('op_type', '')))}</td>"
            f'<td class="n">{_pair(ib, ia)}</td><td class="n">{_pair(ob, oa)}</td>'
            f'<td class="n">{_pair(*(human_count(p) for p in x.get("params") or [0, 0]))}</td>'
            f'<td class="n">{_pair(*(None if m is None else human_count(m) for m in (mb, ma)))}</td></tr>'
        )
    facts = []
    if mode == "channels":
        blocked = r.get("blocked") or {}
        left = r.get("groups", 0) - r.get("groups_pruned", 0) - sum(blocked.values())
        why = [f"{v} blocked by {k}" for k, v in sorted(blocked.items())]
        if left > 0:
            why.append(f"{left} left whole by the rounding to --prune-multiple")
        facts.append(
            f"{r.get('groups_pruned', 0)} of {plural(r.get('groups', 0), 'channel group')} pruned"
            + (f" ({'; '.join(why)})" if why else "")
        )
        facts.append(f"MACs {human_count(r.get('macs_before'))} → {human_count(r.get('macs_after'))}")
    facts.append(
        f"parameters {human_bytes(r.get('param_bytes_before', 0))} → {human_bytes(r.get('param_bytes_after', 0))}"
    )
    if r.get("sparse_stored") is not None:
        facts.append(f"{r['sparse_stored']} of {plural(r.get('sparse_weights', 0), 'pruned weight')} stored sparse")
    if r.get("latency_ms_before") and r.get("latency_ms_after"):
        facts.append(f"latency {r['latency_ms_before']:.2f} ms → {r['latency_ms_after']:.2f} ms (1 thread, median)")
    charts = ""
    if mode == "channels":
        charts = (
            _legend([("before", GREY), ("after", BLUE)])
            + '<p class="legend">output channels per layer</p>'
            + _hbars(rows_ch, value_text=lambda v: f"{v[0]} → {v[1]}" if v[0] != v[1] else str(v[0]))
            + '<p class="legend">MACs per layer</p>'
            + _hbars(
                rows_mac,
                value_text=lambda v: (
                    f"{human_count(v[0])} → {human_count(v[1])}" if v[0] != v[1] else human_count(v[0])
                ),
            )
        )
    return (
        f"<section><h2>Pruning ({escape(mode)})</h2><p>{escape('; '.join(facts))}</p>"
        + charts
        + '<table><tr><th>layer</th><th>op</th><th class="n">in ch</th><th class="n">out ch</th>'
        '<th class="n">params</th><th class="n">MACs</th></tr>' + "".join(table) + "</table></section>"
    )


def _pair(a: Any, b: Any) -> str:
    if a is None:
        return "-"
    return escape(str(a) if a == b or b is None else f"{a} → {b}")


def _winograd(w: dict[str, Any]) -> str:
    layers = w.get("layers") or []
    if not layers:
        return ""
    rows, chart_rows = [], []
    for d in layers:
        ms = d.get("ms") or {}
        chosen = f"F{d['tile']}" if d.get("tile") else "Conv"
        how = "forced" if d.get("forced") else ("cached" if d.get("cached") else "timed")
        cells = "".join(f'<td class="n">{_num(ms.get(t))}</td>' for t in ("F2", "F4", "F6"))
        rows.append(
            f"<tr><td><code>{escape(str(d.get('layer')))}</code></td><td>{escape(str(d.get('shape', '')))}</td>"
            f'<td class="n">{_num(d.get("conv_ms"))}</td>{cells}<td>{chosen} ({how})</td></tr>'
        )
        if d.get("conv_ms") is not None and ms:
            best = min(ms, key=lambda k: ms[k])
            colour = GREEN if d.get("tile") else AMBER
            chart_rows.append((str(d.get("layer")), [d["conv_ms"], ms[best]], [GREY, colour], best))
    model = w.get("model_ms") or {}
    model_note = (
        '<p class="note">whole model: ' + escape(", ".join(f"{k} {v:.2f} ms" for k, v in model.items())) + "</p>"
        if model
        else ""
    )
    chart = ""
    if chart_rows:
        chart = _legend(
            [("Conv", GREY), ("best Winograd tile (chosen)", GREEN), ("best tile (not chosen)", AMBER)]
        ) + _hbars(
            [r[:3] for r in chart_rows],
            value_text=None,
            extra=[r[3] for r in chart_rows],
            text=lambda v, best: f"Conv {v[0]:.3g} ms · {best} {v[1]:.3g} ms",
            value_w=220,
        )
    return (
        "<section><h2>Winograd decisions</h2>"
        + chart
        + '<table><tr><th>layer</th><th>CxHxW→K</th><th class="n">Conv ms</th><th class="n">F2 ms</th>'
        '<th class="n">F4 ms</th><th class="n">F6 ms</th><th>chosen</th></tr>'
        + "".join(rows)
        + "</table>"
        + model_note
        + "</section>"
    )


def _db(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


# --------------------------------------------------------------------------------------------------------------------
# SVG
# --------------------------------------------------------------------------------------------------------------------
def _legend(items: Sequence[tuple[str, str]]) -> str:
    return '<p class="legend">' + "".join(f'<i style="background:{c}"></i>{escape(t)}' for t, c in items) + "</p>"


def _hbars(
    rows: Sequence[tuple[str, Sequence[float], Sequence[str]]],
    value_text: Any,
    extra: Sequence[Any] | None = None,
    text: Any = None,
    value_w: int = 170,
) -> str:
    """Horizontal bars, one group per row (several values drawn as thinner bars one under the other), the label at
    the left (its middle cut when long) and the value at the right of the longest bar."""
    if not rows:
        return ""
    label_w = 300
    bar_w = WIDTH - label_w - value_w - 16
    n = max(len(v) for _, v, _ in rows)
    bar_h = 15 if n == 1 else 10
    row_h = n * bar_h + 10
    top = max((max(v) for _, v, _ in rows if v), default=0) or 1
    height = len(rows) * row_h + 6
    labels = abbreviate_names([label for label, _, _ in rows], 42)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="bar chart">']
    for i, ((label, values, colours), short) in enumerate(zip(rows, labels, strict=True)):
        y = 4 + i * row_h
        mid = y + (n * bar_h) / 2 + 4
        out.append(
            f'<text x="{label_w - 8}" y="{mid:.1f}" text-anchor="end"><title>{escape(label)}</title>'
            f"{escape(short)}</text>"
        )
        longest = 0.0
        for k, (v, c) in enumerate(zip(values, colours, strict=False)):
            w = max(0.0, float(v)) / top * bar_w
            longest = max(longest, w)
            out.append(
                f'<rect x="{label_w}" y="{y + k * bar_h:.1f}" width="{max(w, 1.0):.1f}" height="{bar_h - 2}" '
                f'rx="2" fill="{c}"/>'
            )
        caption = text(values, extra[i]) if text is not None and extra is not None else value_text(values)
        out.append(f'<text class="muted" x="{label_w + longest + 6:.1f}" y="{mid:.1f}">{escape(caption)}</text>')
    out.append("</svg>")
    return "".join(out)
