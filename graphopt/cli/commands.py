"""The commands: ``optimize`` (parser -> request -> :func:`graphopt.api.run_request` -> render), ``inspect``,
``diff``, ``report``, ``passes``; and the output rules they share (never an overwritten input, no half-written
output)."""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from graphopt.api import OptimizeRequest, RunHooks, run_request
from graphopt.cli.messages import (
    Silent,
    _jsonable,
    _printed_warnings,
    _quantize_progress,
    _Recorded,
    _step,
    _warn,
)
from graphopt.cli.parser import optimize_request
from graphopt.core.ir import Model
from graphopt.core.onnx_io import (
    check,
    check_targets,
    external_data_files,
    load,
    require_file,
    run_or_defer,
    save,
    target_identity,
    wants_external_data,
)
from graphopt.core.tensors import same_file
from graphopt.engine.pass_manager import PassReport
from graphopt.engine.passes_api import list_passes
from graphopt.errors import GraphoptError
from graphopt.tools.diagnose import checker_rejection, output_folder_problem
from graphopt.tools.summary import (
    human_bytes,
    op_histogram,
    plural,
    shape_str,
    summarize,
    unmatched_hint,
)

_TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


# --------------------------------------------------------------------------------------------------------------------
# diff
# --------------------------------------------------------------------------------------------------------------------
def cmd_diff(args: argparse.Namespace) -> int:
    from graphopt.tools.compare import diff

    a, b = Path(args.a), Path(args.b)
    found = diff(load(a), load(b), rtol=args.rtol, atol=args.atol, max_differences=max(1, args.max))
    if args.json:
        rows = [
            {"kind": d.kind, "path": d.path, "what": d.what, "a": _jsonable(d.a), "b": _jsonable(d.b)} for d in found
        ]
        print(json.dumps({"equal": not found, "total": found.total, "differences": rows}, indent=2))
    elif not found:
        print(f"{a} and {b}: graphs are equal")
    else:
        count = plural(found.total, "difference")
        shown = (
            f"{count}; the first {len(found)} shown, --max {found.total} shows all"
            if found.total > len(found)
            else count
        )
        print(f"{a} and {b} differ ({shown}):")
        for d in found:
            print(f"  {d}")
    return 1 if found else 0


def load_checked(path: Path, *, run_checker: bool) -> Model:
    """Read a model file (a regular file only), run the ONNX checker (unless told not to), and lift it into the IR."""
    require_file(path)  # before the checker, which would block on a FIFO or read /dev/zero forever
    if run_checker:
        try:
            check(path)  # the checker reads the file itself: ~5x faster than checking the parsed proto
        except GraphoptError as rejected:
            raise checker_rejection(path, rejected) from None  # an unreadable file: say why first
    return load(path)


def _output_path(args: argparse.Namespace) -> Path:
    """The output path, refused early (before any work) if it is the input without --in-place, or names something
    that is not a regular file. Files the input model reads are checked once it is loaded (see check_targets)."""
    src = Path(args.input)
    if not args.output and not args.in_place:
        raise GraphoptError("no output file: give -o OUT (or --in-place to overwrite the input)")
    out = Path(args.output) if args.output else src
    writable_target(args.output or str(src), "-o", "output")
    if not args.in_place and same_file(src, out):
        raise GraphoptError(f"{out}: output would overwrite the input; pass --in-place to allow it")
    return out


def writable_target(given: str, flag: str, what: str) -> None:
    """Refuse, before any work, a file the command would write but cannot: ``-`` (graphopt writes no model or page
    to stdout, and a file named ``-`` is a trap), a directory name, a folder that is missing, not a folder or not
    writable, or an existing non-regular file (a device, a FIFO, a directory). Every file a run writes goes through
    this, so a run that would fail to write any of them writes none. ``given`` is the argument as typed: ``./-``
    names a file called ``-`` (as a Path it would print as ``-``)."""
    if given == "-":
        raise GraphoptError(
            f"{flag} -: graphopt does not write the {what} to stdout; give a file name (./- for a file named '-')"
        )
    path = Path(given)
    if path.name in ("", ".", ".."):
        raise GraphoptError(f"{path}: {what} is a directory")
    problem = output_folder_problem(path, what)  # a missing or unwritable folder, or a path component that is a file
    if problem:
        raise GraphoptError(problem)
    target_identity(path, what)


@contextmanager
def _clean_exit_on(*signums: int) -> Iterator[None]:
    """Turn these signals into an exception while the block (the save) runs, so that ``save`` removes its temporary
    files, then exit with 128 + the signal number, as a process killed by it would report. The exception waits for
    the end of the save's critical sections (creating a temporary file, the final renames, the cleanup). SIGINT
    becomes the usual KeyboardInterrupt (exit 130), with the same care."""

    class Terminated(BaseException):
        pass

    def handler(signum: int, frame: Any) -> None:
        def stop() -> None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise Terminated(signum)

        run_or_defer(stop)

    previous = {}
    for signum in signums:
        with suppress(ValueError, OSError):  # not the main thread: leave signals alone
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    except Terminated as e:
        name = signal.Signals(e.args[0]).name
        print(f"graphopt: terminated by {name} while saving; no temporary file left behind", file=sys.stderr)
        raise SystemExit(128 + e.args[0]) from None
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def cmd_optimize(args: argparse.Namespace) -> int:
    src = Path(args.input)
    out = _output_path(args)
    if args.report:
        page = Path(args.report)
        # a regular file or nothing (never a device, FIFO or directory) in a folder graphopt can write to
        writable_target(args.report, "--report", "report")
        for model_path, role in ((src, "input"), (out, "output")):
            if page.resolve() == model_path.resolve() or same_file(page, model_path):
                raise GraphoptError(f"{page}: --report would overwrite the {role} model")
    request = optimize_request(args)
    if args.passes and args.level is not None and not args.quiet:
        _warn(f"-O{args.level} is ignored: --passes gives the pipeline")
    if args.strict and not args.verify and not args.quiet:
        print("graphopt: note: --strict turns --verify on", file=sys.stderr)
    pipeline = request.pipeline()  # resolved before loading, so a misspelt pass name fails fast
    progress: Any = Silent()  # --json and --quiet print no table and show no progress: they never import rich
    if not (args.quiet or args.json):
        from rich.console import Console

        from graphopt.cli.render import _progress

        err = Console(stderr=True)
        if err.is_terminal:
            progress = _progress(err, True)
    show = not isinstance(progress, Silent)

    times: dict[str, float] = {}
    nodes: dict[str, int] = {}
    float_reasons: list[dict[str, str]] = []
    in_size = _file_size(src)
    with progress:
        with timed(times, "load"), _step(progress, f"loading {src.name} ({human_bytes(in_size)})"):
            model = load_checked(src, run_checker=not args.no_check)
        data_before = _data_files(model, src)  # before the save, which may replace them (--in-place)
        ops_before = op_histogram(model)
        external = {"auto": None, "yes": True, "no": False}[args.external_data]
        data_path = out.parent / f"{out.name}.data" if wants_external_data(model, external) else None
        check_targets(model, out, data_path)  # fail now, not after optimizing; save checks again
        if args.report:
            check_targets(model, Path(args.report), None)  # nor may the report replace the input's data
            if data_path is not None and Path(args.report).resolve() == data_path.resolve():
                raise GraphoptError(f"{args.report}: --report would overwrite the output's external data")

        task = progress.add_task("optimizing", total=len(pipeline))

        def on_pass(name: str, index: int, total: int) -> None:
            progress.update(task, description=f"pass {name}", completed=index)

        def on_layer_decided(decision: dict[str, Any]) -> None:  # winograd autotuning, layer by layer
            done = len(request.options["winograd_decisions"])
            progress.update(task, description=f"pass winograd: {plural(done, 'layer')} decided")
            progress.refresh()  # a layer takes a while to time; show each one, not the next 10 Hz tick

        if show and any(p.name == "winograd" for p in pipeline):
            request.options["winograd_decisions"] = _Recorded(on_layer_decided)  # the pass appends each decision

        @contextmanager
        def stage(name: str) -> Iterator[None]:
            if name == "passes":
                with timed(times, "optimize"):
                    yield
                progress.remove_task(task)
            elif name == "precision":
                _warn_unmatched(model, args, "precision")
                with timed(times, "precision"), _printed_warnings("quantize", False):
                    yield
            elif name == "prune":
                with timed(times, "prune"), _step(progress, "pruning"), _printed_warnings("prune", args.quiet):
                    yield
            else:
                _warn_unmatched(model, args, "quantize")
                float_reasons.extend(_float_reasons(model, args))
                with timed(times, "quantize"), _printed_warnings("quantize", False):
                    yield
            nodes[name] = model.graph.node_count()

        report = run_request(model, request, RunHooks(on_pass, stage, _quantize_progress(progress)))

        with timed(times, "save"):
            save_task = progress.add_task(f"saving {out.name}", total=None)
            with _clean_exit_on(*_TERMINATING_SIGNALS):
                data_written = save(
                    model,
                    out,
                    external_data=external,
                    size_threshold=args.size_threshold,
                    progress=lambda done, total: progress.update(save_task, completed=done, total=total),
                )
            progress.remove_task(save_task)

    data_after = {} if data_written is None else {_shown(data_written, out): _file_size(data_written)}
    files = (in_size, data_before, data_after)
    summary = _summary(args, request, report, model, times, nodes, float_reasons, ops_before, files, out)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        from graphopt.cli.render import _render

        _render(report, summary)
    if args.report:
        from graphopt.tools.report import write_report

        write_report(summary, Path(args.report))
        if not (args.quiet or args.json):
            print(f"graphopt: report written to {args.report}", file=sys.stderr)
    return 0


def _summary(
    args: argparse.Namespace,
    request: OptimizeRequest,
    report: PassReport,
    model: Model,
    times: dict[str, float],
    nodes: dict[str, int],
    float_reasons: list[dict[str, str]],
    ops_before: dict[str, int],
    files: tuple[int, dict[str, int], dict[str, int]],
    out: Path,
) -> dict[str, Any]:
    """The run as one dict: what --json prints and --report renders. ``bytes_before``/``bytes_after`` count the model
    file and its external data files (``external_data_before``/``_after``: each data file and its bytes)."""
    in_size, data_before, data_after = files
    summary = {
        "input": str(args.input),
        "output": str(out),
        "level": None if args.passes else request.level,
        "target": args.target,
        "bytes_before": in_size + sum(data_before.values()),
        "bytes_after": _file_size(out) + sum(data_after.values()),
        "external_data_before": data_before,
        "external_data_after": data_after,
        "timing": {k: round(v, 4) for k, v in times.items()},
        **report.to_dict(),
        # the pipeline's own before/after are nodes_before/nodes_after; what was written can differ (pruning, int8)
        "nodes_written": model.graph.node_count(),
        "ops_before": ops_before,
        "ops_after": op_histogram(model),
    }
    nodes_pipeline = nodes.get("passes", report.nodes_after)
    nodes_pruned = nodes.get("prune", nodes_pipeline)
    stages = [("passes", report.nodes_before, nodes_pipeline)]
    if report.pruning:
        summary["pruning"] = [r.to_dict() for r in report.pruning]
        stages.append(("pruning", nodes_pipeline, nodes_pruned))
    if report.quantization is not None:
        summary["quantization"] = report.quantization.to_dict()
        summary["quantization"]["kept_float_why"] = float_reasons + [
            {"layer": name, "why": "demoted by the accuracy guard (--max-error, or the SQNR floor)"}
            for name in report.quantization.kept_float
        ]
        stages.append((f"int{getattr(report.quantization, 'bits', 8)}", nodes_pruned, summary["nodes_written"]))
    precision = report.results.get("precision")
    if precision is not None:
        summary["precision"] = precision.to_dict()
        stages.append((precision.precision, nodes_pruned, summary["nodes_written"]))
    summary["stages"] = [{"stage": n, "nodes_before": a, "nodes_after": b} for n, a, b in stages]
    winograd = report.results.get("winograd")
    if winograd and winograd["layers"]:
        summary["winograd"] = {"layers": list(winograd["layers"]), "model_ms": winograd["model_ms"]}
    return summary


def _warn_unmatched(model: Model, args: argparse.Namespace, stage: str) -> None:
    """One warning per name, op type or pattern that selects nothing in the model (it would be silently ignored),
    with the nearest valid names. (A node name or name pattern that selects nothing is an error, raised by
    ``run_request``: ``tools.names.check_node_names``.) Op types only: the same command line may serve many models."""
    if args.quiet:
        return
    ops = {n.op_type for n in model.graph}
    problems: list[str] = []
    if stage == "precision":
        for flag, chosen in (("--precision-block", args.precision_block), ("--precision-allow", args.precision_allow)):
            for op in chosen:
                if op not in ops:
                    problems.append(f"{flag} {op!r} matches no node" + unmatched_hint(op, ops, "op types"))
    elif stage == "quantize":  # --exclude-op of no op type is an error (run_request); of one the model lacks, a warning
        from graphopt.quantize.analysis import ORT_FORMS, formed_from

        ops = {n.op_type for n in model.graph.all_nodes()}  # If and Loop bodies are quantized too
        for op in args.exclude_op:
            if op not in ops:
                hint = f" ({formed_from(op)})" if op in ORT_FORMS else unmatched_hint(op, ops, "op types")
                problems.append(f"--exclude-op {op!r} matches no node" + hint)
        for op in (o.strip() for o in (args.quantize_ops or "").split(",")):
            if op and op not in ops:
                problems.append(f"--quantize-ops {op!r} matches no node" + unmatched_hint(op, ops, "op types"))
    for p in problems:
        _warn(p)


def _float_reasons(model: Model, args: argparse.Namespace) -> list[dict[str, str]]:
    """The nodes the exclusion flags keep float, and which flag did (for the report)."""
    found = []
    for n in model.graph.all_nodes():
        why = ""
        if n.name in args.exclude:
            why = f"--exclude {n.name}"
        elif n.op_type in args.exclude_op:
            why = f"--exclude-op {n.op_type}"
        else:
            rx = next((r for r in args.exclude_regex if re.search(r, n.name or "")), None)
            why = f"--exclude-regex {rx}" if rx is not None else ""
        if why:
            found.append({"layer": n.name, "op_type": n.op_type, "why": why})
    return found


def cmd_report(args: argparse.Namespace) -> int:
    from graphopt.tools.report import write_report

    src = args.result
    expected = "graphopt report expects the JSON that graphopt optimize --json printed"
    writable_target(args.output, "-o", "report")  # before reading stdin, which may never end
    if src != "-" and same_file(Path(src), Path(args.output)):
        raise GraphoptError(f"{args.output}: the report would overwrite its input {src}")
    try:
        text = sys.stdin.read() if src == "-" else Path(src).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        what = "an ONNX model" if str(src).endswith(".onnx") else "binary data"
        raise GraphoptError(f"{src}: not JSON ({what}, not text); {expected}") from None
    except OSError as e:
        raise GraphoptError(f"{src}: cannot read: {e.strerror or e}") from None
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as e:
        raise GraphoptError(f"{src}: not JSON ({e.msg}, line {e.lineno}); give what optimize --json printed") from None
    if not isinstance(summary, dict) or "passes" not in summary:
        raise GraphoptError(f'{src}: not the output of graphopt optimize --json (no "passes")')
    write_report(summary, Path(args.output))
    return 0


def _data_files(model: Model, src: Path) -> dict[str, int]:
    """The external data files the loaded model reads (its model file left out), each with its size in bytes, named
    as the user would: relative to the model's folder as given on the command line."""
    found = {}
    for f in external_data_files(model):
        path = Path(f.path)
        try:
            found[_shown(path, src)] = path.stat().st_size
        except OSError:
            continue
    return found


def _shown(path: Path, beside: Path) -> str:
    """``path`` (a data file) spelled from the folder of ``beside`` (its model) as given: out/o.onnx.data, not the
    absolute path save and load resolve it to."""
    import os

    folder = beside.parent
    try:
        rel = os.path.relpath(path.resolve(), folder.resolve())
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else str(folder / rel)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --------------------------------------------------------------------------------------------------------------------
# inspect and passes
# --------------------------------------------------------------------------------------------------------------------
def cmd_inspect(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from graphopt.cli.render import _stdout

    path = Path(args.input)
    model = load_checked(path, run_checker=False)
    info = summarize(model)
    if args.json:
        print(json.dumps({"file": str(path), "bytes": _file_size(path), **info.to_dict()}, indent=2))
        return 0
    console = _stdout()
    opsets = ", ".join(f"{d} {v}" for d, v in info.opsets.items())
    console.print(
        f"[bold]{escape(str(path))}[/] ({human_bytes(_file_size(path))}), IR version {info.ir_version}, "
        f"producer {info.producer or '?'}, opsets: {opsets}",
        highlight=False,
    )
    io = Table(title="inputs and outputs", title_justify="left")
    for col in ("kind", "name", "dtype", "shape"):
        io.add_column(col)
    for kind, values in (("input", info.inputs), ("output", info.outputs)):
        for v in values:
            io.add_row(kind, escape(v["name"]), v["dtype"], escape(shape_str(v["shape"])))
    console.print(io)
    ops = Table(title=f"ops ({info.nodes} nodes, subgraphs included)", title_justify="left")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, n in info.ops.items():
        ops.add_row(escape(op), str(n))
    console.print(ops)
    console.print(
        f"parameters: {info.parameters:,} in {info.initializers} initializers, "
        f"{human_bytes(info.parameter_bytes)} ({human_bytes(info.external_bytes)} external)",
        highlight=False,
    )
    subs = ", ".join(f"{n} in {op}" for op, n in info.subgraphs.items()) or "none"
    console.print(f"subgraphs: {subs}; functions: {', '.join(info.functions) or 'none'}", highlight=False, markup=False)
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    registered = list_passes()
    rows = [
        {
            "name": name,
            "description": cls.description,
            "lossless": cls.lossless,
            "options": {
                key: {"type": opt.type.__name__, "default": opt.default, "help": opt.help}
                for key, opt in cls.options_spec.items()
            },
        }
        for name, cls in registered.items()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.markup import escape
    from rich.table import Table

    from graphopt.cli.render import _stdout

    table = Table(title="registered passes", title_justify="left")
    table.add_column("pass")
    table.add_column("description")
    table.add_column("options")
    for row in rows:
        opts = ", ".join(f"{k}: {o['type']} = {o['default']}" for k, o in row["options"].items())
        table.add_row(row["name"], escape(row["description"] + ("" if row["lossless"] else " (lossy)")), escape(opts))
    _stdout().print(table)
    return 0


@contextmanager
def timed(times: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds the block took to ``times[name]`` (the per-stage timing of the summary)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0
