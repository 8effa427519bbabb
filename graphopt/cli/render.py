"""What the command line prints: progress bars, the pass table, the pruning, quantization and Winograd tables, and
warnings in graphopt's one-line format. Rendering only: nothing here changes a model."""

from __future__ import annotations

import os
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from graphopt.engine.pass_manager import PassReport, PassStats
from graphopt.tools.summary import (
    abbreviate_names,
    human_bytes,
    human_count,
    plural,
)


class _Console(Console):
    def on_broken_pipe(self) -> None:  # rich would exit 1 itself; main() handles it like every other broken pipe
        raise BrokenPipeError


def _stdout() -> Console:
    """A console for results: the terminal's width (``COLUMNS`` when set, as rich reads it), or, piped without
    ``COLUMNS``, wide enough not to cut tables."""
    console = _Console()
    if not console.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit():
        console = _Console(width=200)
    return console


# --------------------------------------------------------------------------------------------------------------------
# optimize
# --------------------------------------------------------------------------------------------------------------------
class _CountColumn(ProgressColumn):
    """``3/8`` for steps, ``1.2 MB/4.0 MB`` for bytes (a task with ``unit="bytes"`` or a ``saving`` task), nothing
    while the total is unknown (no ``0/None``)."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        if task.fields.get("unit") == "bytes" or task.description.startswith(("saving", "loading")):
            return Text(f"{human_bytes(task.completed)}/{human_bytes(task.total)}")
        return Text(f"{task.completed:.0f}/{task.total:.0f}")


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        _CountColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not enabled,
    )


def _render(report: PassReport, summary: dict[str, Any]) -> None:
    console = _stdout()
    _print_report(console, report, summary)
    if "winograd" in summary:
        _print_winograd(console, summary["winograd"])
    for pruned in report.pruning:
        _print_pruning(console, pruned)
    if report.quantization is not None:
        _print_quantization(console, report.quantization)
    if "precision" in summary:
        _print_precision(console, summary["precision"], summary)


def _print_pruning(console: Console, r: Any) -> None:
    def pair(a: Any, b: Any) -> str:
        return "-" if a is None else (str(a) if a == b else f"{a} -> {b}")

    columns = [("layer", "left"), ("op", "left"), ("in ch", "right"), ("out ch", "right"), ("params", "right")]
    columns.append(("MACs", "right"))
    if r.mode != "channels":
        columns.append(("sparsity", "right"))
    rows: list[list[str | Text]] = []
    for layer in r.layers:
        row: list[str | Text] = [
            layer.name,
            layer.op_type,
            pair(*layer.in_channels),
            pair(*layer.out_channels),
            pair(*(human_count(p) for p in layer.params)),
            pair(*(human_count(m) if m is not None else None for m in layer.macs)),
        ]
        if r.mode != "channels":
            row.append("-" if layer.sparsity is None else f"{layer.sparsity:.0%}")
        rows.append(row)
    table, _ = _fit_table(console, f"pruning ({r.mode})", columns, rows, droppable=("op", "params"))
    console.print(table)
    lines = []
    if r.mode == "channels":
        blocked_n = sum(r.blocked.values())
        unchanged = r.groups - r.groups_pruned - blocked_n
        why = [f"{v} blocked by {k}" for k, v in sorted(r.blocked.items())]
        if unchanged > 0:
            why.append(f"{unchanged} left whole: rounded to --prune-multiple, no channel would go")
        lines.append(f"pruning: {r.groups_pruned} of {plural(r.groups, 'channel group')} pruned")
        lines += [f"  {w}" for w in why]
        if r.folded:
            lines.append(
                f"  {plural(r.folded, 'reader')} took the removed channels' constant signal ({r.carrier_readers} "
                f"through a carrier channel, in {plural(r.carriers, 'group')})"
            )
        ratio = r.macs_before / r.macs_after if r.macs_after else float("inf")
        lines.append(f"  MACs {human_count(r.macs_before)} -> {human_count(r.macs_after)} ({ratio:.2f}x fewer)")
    else:
        lines.append(f"pruning ({r.mode}):")
    lines.append(f"  parameters {human_bytes(r.param_bytes_before)} -> {human_bytes(r.param_bytes_after)}")
    if getattr(r, "sparse_stored", None) is not None:
        lines.append(
            f"  sparse initializers: {r.sparse_stored} of {plural(r.sparse_weights, 'pruned weight')} stored sparse"
        )
    if r.latency_ms:
        a, b = r.latency_ms
        lines.append(f"  latency {a:.2f} ms -> {b:.2f} ms ({a / b:.2f}x; 1 thread, median, interleaved)")
    if r.note:
        lines.append(f"note: {r.note}")
    _print_lines(console, lines)


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _fit_table(
    console: Console,
    title: str,
    columns: list[tuple[str, str]],
    rows: list[list[str | Text]],
    droppable: tuple[str, ...] = (),
) -> tuple[Table, list[str]]:
    """A table whose first column holds names, made to fit the console: the ``droppable`` columns go first (in that
    order) while the names would get fewer than 24 characters, then the names lose their middle (never their end,
    which tells layers apart). Returns the table and the dropped column names."""

    def cell_len(x: str | Text) -> int:
        return x.cell_len if isinstance(x, Text) else len(x)

    keep = list(range(len(columns)))
    widths = [max([len(columns[i][0]), *(cell_len(r[i]) for r in rows)]) for i in range(len(columns))]

    def room() -> int:  # characters left for the names: the width minus borders and padding and the other columns
        return console.width - (3 * len(keep) + 1) - sum(widths[i] for i in keep[1:])

    dropped = []
    for name in droppable:
        if room() >= min(24, widths[0]):
            break
        i = next(k for k, (c, _) in enumerate(columns) if c == name)
        if i in keep:
            keep.remove(i)
            dropped.append(name)
    name_width = max(12, room())
    names = abbreviate_names([r[0].plain if isinstance(r[0], Text) else r[0] for r in rows], name_width)
    table = Table(title=title, title_justify="left")
    for i in keep:
        table.add_column(columns[i][0], justify=columns[i][1], overflow="fold")  # type: ignore[arg-type]
    for name, r in zip(names, rows, strict=True):
        others = [r[i] for i in keep[1:]]
        table.add_row(escape(name), *(c if isinstance(c, Text) else escape(c) for c in others))
    return table, dropped


def _print_lines(console: Console, lines: list[str]) -> None:
    for line in lines:
        console.print(line, highlight=False, markup=False)


def _print_quantization(console: Console, q: Any) -> None:
    columns = [
        ("layer", "left"),
        ("op", "left"),
        ("in scale", "right"),
        ("weight scale", "right"),
        ("out scale", "right"),
        ("relu", "left"),
        ("SQNR dB", "right"),
    ]
    alone = any(layer.alone_sqnr_db is not None for layer in q.layers)
    if alone:
        columns.append(("alone dB", "right"))
    if q.target == "ort":
        columns.append(("runs as", "left"))
    modes = any(getattr(layer, "mode", None) for layer in q.layers)
    if modes:
        columns.insert(2, ("mode", "left"))
    rows: list[list[str | Text]] = []
    for layer in q.layers:
        w = layer.weight_scale
        row: list[str | Text] = [
            layer.name,
            layer.op_type,
            _fmt(layer.input_scale),
            "-" if w is None else (f"{w[0]:.3g}" if w[0] == w[1] else f"{w[0]:.3g}..{w[1]:.3g}"),
            _fmt(layer.output_scale),
            layer.absorbed or "",
            _fmt(layer.sqnr_db, ".1f"),
        ]
        if modes:
            row.insert(2, layer.mode or "static")
        if alone:
            row.append(_fmt(layer.alone_sqnr_db, ".1f"))
        if q.target == "ort":
            row.append(layer.fused_as or (Text("float", style="yellow") if layer.fused is False else "?"))
        rows.append(row)
    if q.bits == 4:  # weight-only blocks: no activation scales, no fused ReLU; the weight scales are per block
        keep = [i for i, (c, _) in enumerate(columns) if c not in ("in scale", "weight scale", "out scale", "relu")]
        columns = [columns[i] for i in keep]
        rows = [[r[i] for i in keep] for r in rows]
    table, dropped = _fit_table(
        console,
        f"int{q.bits} quantization (target {q.target})",
        columns,
        rows,
        droppable=("in scale", "out scale", "weight scale", "relu"),
    )
    console.print(table)
    source = f"{plural(q.batches, 'calibration batch', 'calibration batches')}{', from cache' if q.cached else ''}"
    method = q.method + (f" {q.percentile:g}" if q.method == "percentile" else "")
    fused = f", {q.fused_count} run as integer kernels" if q.target == "ort" else ""
    if q.method == "dynamic":
        dynamic = sum(1 for layer in q.layers if getattr(layer, "mode", None) == "dynamic")
        tables = sum(1 for layer in q.layers if (getattr(layer, "mode", None) or "").endswith("table"))
        ranges = (
            f"  dynamic: {plural(dynamic, 'layer')} with activations quantized at run time (no calibration), "
            f"{plural(tables, 'embedding table')} int8; error measured on {plural(q.batches, 'batch', 'batches')}"
        )
    else:
        ranges = f"  ranges: {method} from {source}"
        if getattr(q, "method_reason", None):  # the percentile method's check kept the min-max ranges
            ranges += f"; {q.method_reason}"
    lines = [
        f"int{q.bits}: {plural(len(q.layers), 'layer')} quantized{fused}",
        ranges,
        f"  output error {q.error_rel:.4g} relative (SQNR {q.sqnr_db:.1f} dB), max abs {q.error_max_abs:.4g}",
        f"  parameters {human_bytes(q.param_bytes_before)} -> {human_bytes(q.param_bytes_after)} "
        "(the quantizer's input -> its output)",
        f"  weights: {q.reduce_range_reason}",
    ]
    speedup = getattr(q, "speedup", None)
    if speedup is not None:
        lines.insert(3, f"  speed: {speedup:.2f}x fp32 under onnxruntime (1 thread, first calibration batch)")
    measured_at = getattr(q, "measured_at", None)
    if measured_at:  # the output error is not the outputs' (a selection op comes after the quantized layers)
        lines.insert(3, f"  (output error measured at {measured_at})")
    part = getattr(q, "error_part", None)
    if part:  # one part's own error is the worst: pooled, the rest's energy would hide it
        pooled = getattr(q, "pooled_sqnr_db", None)
        whole = "" if pooled is None else f"; pooled over all: SQNR {pooled:.1f} dB"
        lines.insert(3, f"  (worst part: {part}{whole})")
    if q.bits == 4:
        lines = _int4_lines(q, fused)
    if dropped:
        lines.append(f"  (not shown at this width: {', '.join(dropped)}; see --json or --report)")
    choices = getattr(q, "choices", None) or []
    if choices:
        counts: dict[str, int] = {}
        for c in choices:
            counts[c.mode] = counts.get(c.mode, 0) + 1
        summary = ", ".join(f"{n} {mode}" for mode, n in counts.items())
        lines.append(f"per-layer choice: {summary} (each layer's reason: --json 'choices' or --report)")
    fused_floats = getattr(q, "float_fused", None) or {}
    if fused_floats:
        runs = ", ".join(f"{name} as {op}" for name, op in fused_floats.items())
        lines.append(
            f"  {plural(len(fused_floats), 'float layer')} onnxruntime runs on integers all the same (DequantizeLinear "
            f"on each input, QuantizeLinear on the output): {runs}"
        )
    smoothed = getattr(q, "smoothed", None) or []
    if smoothed:
        folds = sum(1 for sm in smoothed if sm.fold != "Mul")
        lines.append(
            f"SmoothQuant alpha {q.smooth_alpha:g}: {plural(len(smoothed), 'activation')} smoothed "
            f"({folds} folded into their producer, {len(smoothed) - folds} by an inserted Mul)"
        )
    if q.kept_float:
        names = [f"{k} (runs as {fused_floats[k]})" if k in fused_floats else k for k in q.kept_float]
        lines.append(f"kept float by the accuracy guard (--max-error or the SQNR floor): {', '.join(names)}")
    if q.opset_upgraded:
        a, b = q.opset_upgraded
        why = "blocked int4 DequantizeLinear (target tensorrt) needs it" if q.bits == 4 else "for per-channel Q/DQ"
        lines.append(f"opset {a} -> {b} (onnx's version converter): {why}")
    _print_lines(console, lines)


def _int4_lines(q: Any, fused: str) -> list[str]:
    """What int4 did: the method (RTN or GPTQ), blocks, layers by bits, where the errors were measured."""
    bits: dict[str, int] = {}
    for layer in q.layers:
        bits[layer.mode or "?"] = bits.get(layer.mode or "?", 0) + 1
    method = (
        f"GPTQ (error-compensating rounding on {plural(q.batches, 'calibration batch', 'calibration batches')})"
        if q.method == "gptq"
        else "RTN (round to nearest)"
    )
    lines = [
        f"int4: {plural(len(q.layers), 'layer')} quantized ({', '.join(f'{n} {m}' for m, n in bits.items())}){fused}",
        f"  weights: {method}, {q.reduce_range_reason}",
    ]
    if q.batches:
        lines.append(
            f"  output error {q.error_rel:.4g} relative (SQNR {q.sqnr_db:.1f} dB), max abs {q.error_max_abs:.4g} "
            f"on {plural(q.batches, 'calibration batch', 'calibration batches')}"
        )
    else:
        lines.append("  output error not measured (no calibration data); each layer's error is on its weights")
    lines.append(
        f"  parameters {human_bytes(q.param_bytes_before)} -> {human_bytes(q.param_bytes_after)} "
        "(the quantizer's input -> its output)"
    )
    return lines


def _print_precision(console: Console, p: dict[str, Any], summary: dict[str, Any]) -> None:
    """The half-precision conversion: what was converted, what stayed fp32 and why, error, size, latency."""
    kept = p["kept_fp32"]
    if kept and len(kept) <= 30:
        rows: list[list[str | Text]] = [[k["name"], k["op_type"], k["why"]] for k in kept]
        columns = [("kept fp32", "left"), ("op", "left"), ("why", "left")]
        table, _ = _fit_table(console, f"{p['precision']}: nodes kept fp32", columns, rows, droppable=("op",))
        console.print(table)
    elif kept:  # many: one row per reason and op type (every node is in --json and --report)
        groups: dict[tuple[str, str], list[str]] = {}
        for k in kept:
            groups.setdefault((k["why"].split(":")[0], k["op_type"]), []).append(k["name"])
        rows = [[names[0], op, why, str(len(names))] for (why, op), names in groups.items()]
        columns = [("first node", "left"), ("op", "left"), ("why", "left"), ("nodes", "right")]
        title = f"{p['precision']}: {len(kept)} nodes kept fp32, by reason and op (all in --json)"
        table, _ = _fit_table(console, title, columns, rows, droppable=("op",))
        console.print(table)
    err = p["output_error_rel"]
    lines = [
        f"{p['precision']}: {p['converted_nodes']} of {plural(p['float_nodes'], 'float node')} converted, "
        f"{len(kept)} kept fp32 (kernels {p['kernels']}, target {p['target']})",
        "  kept fp32: " + (", ".join(f"{n} {why}" for why, n in p["kept_fp32_by_reason"].items()) or "none"),
        f"  weights: {p['weights_half']} stored {p['precision']}, {p['weights_fp32']} fp32; "
        f"Casts: {p['casts_added']} added, {p['casts_removed']} removed as redundant",
        "  output error vs fp32: "
        + (
            "not measured (onnxruntime cannot run it)"
            if err is None
            else f"{err:.4g} relative, max abs {p['output_error_max_abs']:.4g}, min cosine {p['output_cosine_min']:.6f}"
        )
        + f" on {plural(p['calibration_batches'], 'batch', 'batches')}"
        + (" of random data" if p["random_data"] else ""),
        *([f"  (output error measured at {p['output_measured_at']})"] if p.get("output_measured_at") else []),
        f"  parameters {human_bytes(p['param_bytes_before'])} -> {human_bytes(p['param_bytes_after'])}; "
        f"file {human_bytes(summary['bytes_before'])} -> {human_bytes(summary['bytes_after'])}",
    ]
    if p["latency_ms"]:
        a, b = p["latency_ms"]
        # a speed-up like int8's line (higher is faster), not a time ratio
        lines.append(f"  onnxruntime CPU latency {a:.2f} ms -> {b:.2f} ms (speed: {a / b:.2f}x fp32; median)")
    if p["target"] == "tensorrt":
        v = p["tensorrt_violations"]
        lines.append(f"  TensorRT rule checker: {len(v)} violations" + (f" (first: {v[0]})" if v else ""))
    _print_lines(console, lines)


def _winograd_result(w: dict[str, Any]) -> str:
    """The winograd pass's per-layer decisions in one cell: 'F4 x6, Conv x2' and why nothing was kept."""
    layers = w.get("layers", [])
    if not layers:
        return "no eligible 3x3 layer"
    tiles: dict[str, int] = {}
    for d in layers:
        key = f"F{d['tile']}" if d.get("tile") else "Conv"
        tiles[key] = tiles.get(key, 0) + 1
    text = ", ".join(f"{k} x{v}" for k, v in sorted(tiles.items()))
    ms = w.get("model_ms") or {}
    if ms and "Conv" in tiles and len(tiles) == 1 and any(d.get("ms") for d in layers):
        text += " (lowered model not faster)"
    return text


_DECLINED_SHOWN = (
    2  # declined reasons the pass table shows per rule (and for the rules that never fired); --json has all
)


def _top_reasons(reasons: list[tuple[str, int]]) -> str:
    """The most frequent reasons, ``reason xN``, and how many more there are."""
    ranked = sorted(reasons, key=lambda r: (-r[1], r[0]))
    text = ", ".join(f"{r} x{n}" for r, n in ranked[:_DECLINED_SHOWN])
    return text + (f", +{len(ranked) - _DECLINED_SHOWN} more" if len(ranked) > _DECLINED_SHOWN else "")


def _pass_result(s: PassStats) -> str:
    """A pass's rule firings in one cell: the rules that fired with their top declined reasons, then the top reasons of
    the rules that never fired (``noop-dropout x1; not fired: noop-flatten (input not of rank 2... x1)``). The full
    counts and declines are in ``--json`` (``passes[].counts``, ``passes[].declines``)."""
    fired = []
    for rule in sorted(k for k, n in s.counts.items() if n):
        why = s.declines.get(rule)
        fired.append(f"{rule} x{s.counts[rule]}" + (f" (declined: {_top_reasons(list(why.items()))})" if why else ""))
    idle = [(f"{rule}: {r}", n) for rule, why in s.declines.items() if not s.counts.get(rule) for r, n in why.items()]
    text = ", ".join(fired)
    if idle:
        text += ("; " if text else "") + f"not fired: {_top_reasons(idle)}"
    return text


def _winograd_idle(counts: dict[str, int]) -> str:
    """Why the winograd pass lowered nothing when no layer got as far as timing: it did not run (opset, target), or
    why each 3x3 Conv was not eligible (``no eligible 3x3 Conv: spatial size not static x5``)."""
    not_run = [k.removeprefix("not run: ") for k in counts if k.startswith("not run: ")]
    if not_run:
        return "not run: " + ", ".join(not_run)
    why = [(k.removeprefix("not eligible: "), n) for k, n in counts.items() if k.startswith("not eligible: ")]
    if why:
        return "no eligible 3x3 Conv: " + ", ".join(f"{r} x{n}" for r, n in sorted(why, key=lambda x: (-x[1], x[0])))
    rest = {k: n for k, n in counts.items() if n}
    return ", ".join(f"{k} x{n}" for k, n in sorted(rest.items())) if rest else "no 3x3 Conv"


def _print_report(console: Console, report: PassReport, summary: dict[str, Any]) -> None:
    details = (
        any(s.counts or s.declines or any(t.counts or t.declines for t in s.steps) for s in report.stats)
        or "winograd" in summary
    )
    rows: list[tuple[list[str], str | None]] = []
    skipped = []

    def cells(s: PassStats, name: str) -> list[str]:
        return [
            name,
            str(s.runs),
            "yes" if s.changed else "no",
            f"{s.nodes_delta:+d}" if s.nodes_delta else "0",
            f"{s.seconds * 1000:.1f}",
        ]

    for s in report.stats:
        if s.runs == 0:  # an identical pass ran before it and nothing changed since: it had nothing to do
            skipped.append(s.name)
            continue
        row = cells(s, s.name)
        if details:
            if s.name == "winograd" and "winograd" in summary:
                row.append(_winograd_result(summary["winograd"]))
            elif s.name == "winograd":
                row.append(_winograd_idle(s.counts))
            else:
                row.append(_pass_result(s))
        rows.append((row, None))
        for step in s.steps:  # a pipeline pass (cleanup): each step's own line
            if step.runs == 0:
                continue
            row = cells(step, f"  {s.name}/{step.name}")
            if details:
                row.append(_pass_result(step))
            rows.append((row, "dim"))
    columns = ["pass", "runs", "changed", "nodes +/-", "ms", *(["result"] if details else [])]
    keep = list(range(len(columns)))
    widths = [max([len(c), *(len(r[i]) for r, _ in rows)]) for i, c in enumerate(columns)]

    def spare() -> int:  # characters the table's width leaves over, besides the result column's own
        used = 3 * len(keep) + 1 + sum(widths[i] for i in keep if columns[i] != "result")
        return console.width - used

    # at narrow widths the less important columns go, in this order, while the result column would get fewer than 32
    # characters (or, without one, while the table does not fit); the pass names never wrap
    for name in ("ms", "runs", "changed"):
        need = min(32, widths[-1]) if details else 0
        if spare() >= need:
            break
        keep.remove(columns.index(name))
    table = Table(title="passes", title_justify="left")
    for i in keep:
        if columns[i] == "pass":
            table.add_column("pass", no_wrap=True, min_width=widths[i])
        elif columns[i] == "result":
            table.add_column("result", overflow="fold")
        else:
            table.add_column(columns[i], justify="left" if columns[i] == "changed" else "right", no_wrap=True)
    for row, style in rows:
        table.add_row(*(escape(row[i]) for i in keep), style=style)
    if report.stats:
        console.print(table)
    if skipped:
        console.print(
            f"not rerun (nothing changed since an identical pass ran): {', '.join(skipped)}",
            highlight=False,
            markup=False,
        )
    sec = summary["timing"]
    # short lines, one fact each: a terminal of 80 columns must not wrap them in the middle of a value
    console.print(f"{summary['input']} -> {summary['output']}", highlight=False, markup=False)
    stages = summary.get("stages", [])
    level = "passes" if summary["level"] is None else f"-O{summary['level']}"
    steps = [
        f"{level if st['stage'] == 'passes' else st['stage']} {st['nodes_before']} -> {st['nodes_after']}"
        for st in stages
    ]
    steps[0] += f" in {plural(report.iterations, 'iteration')}"
    console.print(
        f"  nodes {report.nodes_before} -> {summary['nodes_written']} ({'; '.join(steps)})",
        highlight=False,
        markup=False,
    )
    data_before, data_after = summary.get("external_data_before") or {}, summary.get("external_data_after") or {}
    with_data = " (with external data)" if data_before or data_after else ""
    console.print(
        f"  size {human_bytes(summary['bytes_before'])} -> {human_bytes(summary['bytes_after'])}{with_data}",
        highlight=False,
        markup=False,
    )
    if with_data:
        sides = [", ".join(f"{f} {human_bytes(n)}" for f, n in d.items()) or "none" for d in (data_before, data_after)]
        console.print(f"  data {sides[0]} -> {sides[1]}", highlight=False, markup=False)
    console.print("  time " + ", ".join(f"{k} {v:.2f}s" for k, v in sec.items()), highlight=False, markup=False)
    if report.verified or report.unverifiable:
        undone = f"; undone: {', '.join(report.reverted)}" if report.reverted else "; every pass kept the outputs"
        note = report.unverifiable or f"{plural(report.verified, 'pass run')} checked{undone}"
        console.print(f"verify: {note} ({report.verify_seconds:.2f}s)", highlight=False, markup=False)


def _print_winograd(console: Console, w: dict[str, Any]) -> None:
    """One row per eligible 3x3 layer: its shape, the times measured, and what was chosen."""
    layers = w.get("layers", [])
    if not layers:
        return
    rows: list[list[str | Text]] = []
    for d in layers:
        ms = d.get("ms") or {}
        how = "forced" if d.get("forced") else ("cached" if d.get("cached") else "timed")
        rows.append(
            [
                d.get("layer") or "?",
                d.get("shape", ""),
                _fmt(d.get("conv_ms"), ".2f"),
                *(_fmt(ms.get(t), ".2f") for t in ("F2", "F4", "F6")),
                (f"F{d['tile']}" if d.get("tile") else "Conv") + f" ({how})",
            ]
        )
    columns = [("layer", "left"), ("CxHxW->K", "left"), ("Conv ms", "right")]
    columns += [(f"{t} ms", "right") for t in ("F2", "F4", "F6")] + [("chosen", "left")]
    table, _ = _fit_table(console, "winograd (per layer)", columns, rows, droppable=("CxHxW->K",))
    console.print(table)
    ms = w.get("model_ms") or {}
    if ms:
        parts = ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
        console.print(f"whole model: {parts}", highlight=False, markup=False)
