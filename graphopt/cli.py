"""The ``graphopt`` command: optimize, inspect, bench, passes.

User errors (bad files, bad options) print one line ``graphopt: error: ...`` on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from graphopt import __version__, bench
from graphopt.api import OptimizeRequest, RunHooks, run_request, timed
from graphopt.diagnose import checker_rejection, output_folder_problem
from graphopt.errors import GraphoptError, VerificationError
from graphopt.ir import Model
from graphopt.onnx_io import (
    check,
    check_targets,
    load,
    require_file,
    run_or_defer,
    save,
    target_identity,
    wants_external_data,
)
from graphopt.pass_manager import PassReport
from graphopt.passes_api import TARGETS, list_passes
from graphopt.summary import (
    abbreviate_names,
    human_bytes,
    human_count,
    op_histogram,
    plural,
    shape_str,
    summarize,
    unmatched_hint,
)
from graphopt.tensors import same_file

EXIT_USER_ERROR = 2
_TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


class _Console(Console):
    def on_broken_pipe(self) -> None:  # rich would exit 1 itself; main() handles it like every other broken pipe
        raise BrokenPipeError


def _stdout() -> Console:
    """A console for results: the terminal's width, or wide enough not to cut tables when piped to a file."""
    console = _Console()
    if not console.is_terminal:
        console = _Console(width=200)
    return console


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(EXIT_USER_ERROR, f"graphopt: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless its help already says it or it has none worth showing) and keeps the
    examples epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


EXAMPLES = """examples:
  graphopt optimize model.onnx -o model.opt.onnx                 # -O2: lossless cleanup to a fixed point
  graphopt optimize model.onnx -o model.o3.onnx -O3 --threads 4  # also Winograd where it is measured faster
  graphopt optimize model.onnx -o out.onnx --passes "fold-constants,cse,dce" --verify
  graphopt optimize model.onnx -o model.int8.onnx --quantize int8 --calib-data calib/ --report report.html
  graphopt optimize model.onnx -o model.pruned.onnx --prune-channels 0.5
  graphopt report result.json -o report.html    # result.json: what optimize --json printed
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="graphopt",
        description="A graph-level compiler for ONNX models.",
        epilog=EXAMPLES,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"graphopt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    opt = sub.add_parser(
        "optimize", help="optimize a model and write the result", epilog=EXAMPLES, formatter_class=_HelpFormatter
    )
    opt.add_argument("input", metavar="IN", help="the ONNX model to optimize")
    opt.add_argument("-o", "--output", metavar="OUT", help="where to write the optimized model")
    opt.add_argument(
        "-O",
        dest="level",
        type=int,
        choices=range(4),
        default=None,
        metavar="0..3",
        help="optimization level: -O0 nothing, -O1 cleanup, -O2 lossless, -O3 also lowerings (default 2; "
        "not with --passes)",
    )
    opt.add_argument(
        "--passes", metavar="PIPELINE", help="run these passes instead of a level: 'a,b{key=value},c'"
    )
    opt.add_argument("--target", choices=TARGETS, default="ort", help="the runtime the model is for (default ort)")
    opt.add_argument("--no-check", action="store_true", help="go on even if the ONNX checker rejects the model")
    opt.add_argument(
        "--keep-debug-info",
        action="store_true",
        help="keep exporters' per-node doc strings and metadata (-O2 and -O3 drop them; model metadata always stays)",
    )
    opt.add_argument("--in-place", action="store_true", help="overwrite the input file (needed if -o names it)")
    opt.add_argument(
        "--external-data",
        choices=("auto", "yes", "no"),
        default="auto",
        help="write tensors to a .data file beside the output (auto: if the input had one or >2 GB)",
    )
    opt.add_argument(
        "--size-threshold",
        type=int,
        default=1024,
        metavar="BYTES",
        help="smallest tensor written to external data (default 1024)",
    )
    opt.add_argument(
        "--fixed-point",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="repeat the pipeline until nothing changes (default: on for -O2 and -O3)",
    )
    opt.add_argument(
        "--verify",
        action="store_true",
        help="check each pass under onnxruntime on generated inputs; undo (and name) a pass that changes the outputs",
    )
    opt.add_argument(
        "--strict", action="store_true", help="verify, and stop with exit code 1 instead of undoing (turns --verify on)"
    )
    opt.add_argument(
        "--winograd",
        choices=("auto", "off", "F2", "F4", "F6"),
        default=None,
        help="3x3 Conv lowering (-O3): auto times each layer (default at -O3, target ort); F2/F4/F6 force; off",
    )
    opt.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="onnxruntime threads the model will run with (Winograd timing; default 1)",
    )
    _prune_flags(opt)
    _quantize_flags(opt)
    _output_flags(opt)

    ins = sub.add_parser(
        "inspect",
        help="show opsets, inputs/outputs, op counts, parameters and subgraphs",
        formatter_class=_HelpFormatter,
    )
    ins.add_argument("input", metavar="IN", help="the ONNX model to inspect")
    ins.add_argument("--json", action="store_true", help="print JSON instead of tables")

    bench.add_parser(sub)

    dif = sub.add_parser(
        "diff",
        help="compare two models structurally (names and node order ignored); exit 1 if they differ",
        formatter_class=_HelpFormatter,
    )
    dif.add_argument("a", help="the first model")
    dif.add_argument("b", help="the second model")
    dif.add_argument(
        "--rtol", type=float, default=None, metavar="R", help="compare constants within this relative tolerance"
    )
    dif.add_argument(
        "--atol", type=float, default=None, metavar="A", help="compare constants within this absolute tolerance"
    )
    dif.add_argument(
        "--max", type=int, default=20, metavar="N", help="report at most this many differences (default 20)"
    )
    dif.add_argument("--json", action="store_true", help="print the differences as JSON")

    rep = sub.add_parser(
        "report",
        help="write the HTML report of an optimize run from its --json output",
        formatter_class=_HelpFormatter,
    )
    rep.add_argument("result", metavar="RESULT.json", help="what graphopt optimize --json printed ('-': stdin)")
    rep.add_argument("-o", "--output", metavar="OUT.html", required=True, help="where to write the HTML page")

    pas = sub.add_parser("passes", help="list the registered passes and their options", formatter_class=_HelpFormatter)
    pas.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _prune_flags(opt: argparse.ArgumentParser) -> None:
    p = opt.add_argument_group("pruning (after the optimization level's passes, before quantization)")
    p.add_argument("--prune-channels", type=float, metavar="RATIO", help="remove this share of each group's channels")
    p.add_argument(
        "--prune-layer",
        action="append",
        default=[],
        metavar="NAME=RATIO",
        help="another ratio for the group of this producer layer (repeatable)",
    )
    p.add_argument(
        "--prune-multiple", type=int, default=8, metavar="N", help="round kept channels up to a multiple (default 8)"
    )
    p.add_argument("--prune-importance", choices=("l1", "l2"), default="l1", help="channel importance (default l1)")
    p.add_argument(
        "--prune-borders",
        choices=("exact", "bias"),
        default="exact",
        help="what removed channels still produce: exact (a constant map after padded readers where the border "
        "differs) or bias (interior value into the bias only: smaller, approximate at borders)",
    )
    p.add_argument(
        "--prune-protect", action="append", default=[], metavar="NAME|REGEX", help="never prune this layer (repeatable)"
    )
    p.add_argument(
        "--prune-weights", metavar="RATIO|2:4", help="zero this share of the weights by magnitude, or keep 2 of every 4"
    )
    p.add_argument(
        "--prune-scope",
        choices=("global", "layer"),
        default="global",
        help="--prune-weights ratio over all or per layer",
    )
    p.add_argument("--sparse-initializers", action="store_true", help="store pruned weights as sparse initializers")
    p.add_argument(
        "--prune-bench",
        type=int,
        default=20,
        metavar="RUNS",
        help="time the model before and after pruning, interleaved, 1 thread (default 20 runs; 0: skip)",
    )


def _quantize_flags(opt: argparse.ArgumentParser) -> None:
    q = opt.add_argument_group("quantization (after the optimization level's passes)")
    q.add_argument("--quantize", choices=("int8",), help="quantize to int8 QDQ for --target")
    q.add_argument("--calib-data", metavar="DIR", help="calibration data: .npz files, each one feed dict by input name")
    q.add_argument(
        "--calib-random", type=int, metavar="N", help="calibrate on N random samples (smoke tests: poor ranges)"
    )
    q.add_argument(
        "--calib-method",
        choices=("minmax", "percentile", "entropy"),
        default="percentile",
        help="how ranges come from the calibration data (default percentile)",
    )
    q.add_argument(
        "--percentile", type=float, default=99.999, metavar="P", help="central share kept by --calib-method percentile"
    )
    q.add_argument(
        "--calib-cache",
        metavar="FILE|off",
        help="calibration cache file (default: one per model and data in ~/.cache/graphopt/calibration)",
    )
    q.add_argument("--exclude", action="append", default=[], metavar="NAME", help="keep this node float (repeatable)")
    q.add_argument(
        "--exclude-op", action="append", default=[], metavar="OP", help="keep this op type float (repeatable)"
    )
    q.add_argument(
        "--exclude-regex",
        action="append",
        default=[],
        metavar="RX",
        help="keep nodes whose name matches (re.search; repeatable)",
    )
    q.add_argument(
        "--quantize-ops", metavar="OP,OP", help="comma-separated op types to quantize instead of the default"
    )
    q.add_argument(
        "--max-error",
        type=float,
        metavar="E",
        help="keep the most sensitive layers float until the output's relative error on the calibration set is <= E",
    )
    q.add_argument(
        "--reduce-range",
        choices=("auto", "on", "off"),
        default="auto",
        help="7-bit weights for CPUs without VNNI (auto: detect the CPU; target ort)",
    )


def _output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument(
        "--report",
        metavar="FILE.html",
        help="also write a self-contained HTML report (pass table, op histogram, quantization, pruning, Winograd)",
    )


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Option combinations argparse cannot express: usage errors (exit 2, pointing at --help)."""
    if args.command != "optimize":
        return
    sub = _Parser(prog="graphopt optimize")
    if args.passes is not None and not args.passes.strip(" ,"):
        sub.error("--passes needs at least one pass name (leave it out to run the -O level)")
    if args.report is not None and not args.report:
        sub.error("--report needs a file name")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `graphopt`: the help, like pip
        parser.print_help()
        return 0
    _check_usage(parser, args)
    err = Console(stderr=True)
    try:
        if args.command == "report":
            return cmd_report(args)
        if args.command == "optimize":
            return cmd_optimize(args, err)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "bench":
            return bench.cmd_bench(args, _stdout())
        if args.command == "diff":
            return cmd_diff(args)
        return cmd_passes(args)
    except VerificationError as e:
        print(f"graphopt: verification failed: {e}", file=sys.stderr)
        return 1
    except GraphoptError as e:
        print(f"graphopt: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("graphopt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _broken_pipe()


EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a C tool killed by writing to a closed pipe (``graphopt ... | head``)."""


def _broken_pipe() -> int:
    """The reader of stdout went away: stop quietly, as Unix tools do. stdout is pointed at /dev/null so that
    Python's final flush at exit does not raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


# --------------------------------------------------------------------------------------------------------------------
# diff
# --------------------------------------------------------------------------------------------------------------------
def cmd_diff(args: argparse.Namespace) -> int:
    from graphopt.compare import diff

    a, b = Path(args.a), Path(args.b)
    found = diff(load(a), load(b), rtol=args.rtol, atol=args.atol, max_differences=max(1, args.max))
    if args.json:
        rows = [{"path": d.path, "what": d.what, "a": _jsonable(d.a), "b": _jsonable(d.b)} for d in found]
        print(json.dumps({"equal": not found, "differences": rows}, indent=2))
    elif not found:
        print(f"{a} and {b}: graphs are equal")
    else:
        more = "+" if len(found) >= args.max else ""
        print(f"{a} and {b} differ ({len(found)}{more} difference{'' if len(found) == 1 and not more else 's'}):")
        for d in found:
            print(f"  {d}")
    return 1 if found else 0


def _jsonable(x: object) -> object:
    return x if isinstance(x, str | int | float | bool | type(None)) else repr(x)


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


@contextmanager
def _step(progress: Progress, text: str) -> Iterator[None]:
    task = progress.add_task(text, total=None)
    try:
        yield
    finally:
        progress.remove_task(task)


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
    if out.name in ("", ".", ".."):
        raise GraphoptError(f"{out}: output is a directory")
    problem = output_folder_problem(out)  # a missing folder, or a path component that is a file
    if problem:
        raise GraphoptError(problem)
    target_identity(out, "output")
    if not args.in_place and same_file(src, out):
        raise GraphoptError(f"{out}: output would overwrite the input; pass --in-place to allow it")
    return out


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


def optimize_request(args: argparse.Namespace) -> OptimizeRequest:
    """The flags as an OptimizeRequest, validated (flag errors surface before any loading). Calibration data is read
    once the model is loaded (a folder is matched against its inputs), so the request carries a function for it."""
    if args.threads < 1:
        raise GraphoptError(f"--threads must be at least 1, got {args.threads}")
    quant_config = _quantize_config(args)
    prune = _prune_request(args)
    options: dict[str, Any] = {"winograd_threads": args.threads}
    if args.winograd is not None:
        options["winograd"] = args.winograd
    return OptimizeRequest(
        level=2 if args.level is None else args.level,
        passes=args.passes or None,
        target=args.target,
        fixed_point=args.fixed_point,
        verify=args.verify,
        strict=args.strict,
        keep_debug_info=args.keep_debug_info,
        quantize=args.quantize,
        calibration=None if quant_config is None else (lambda model: _calibration(args, model)),
        quantize_options=quant_config,
        prune_channels=None if prune is None else prune["channels"],
        prune_weights=None if prune is None else prune["weights"],
        prune_options=None if prune is None else prune["options"],
        prune_bench=args.prune_bench if prune is not None else 0,
        options=options,
    ).validate(spell=lambda name: "--" + name.replace("_", "-"))


def cmd_optimize(args: argparse.Namespace, err: Console) -> int:
    src = Path(args.input)
    out = _output_path(args)
    if args.report:
        page = Path(args.report)
        problem = output_folder_problem(page)
        if problem:
            raise GraphoptError(problem)
        target_identity(page, "report")  # a regular file or nothing: never a device, FIFO or directory
        for model_path, role in ((src, "input"), (out, "output")):
            if page.resolve() == model_path.resolve() or same_file(page, model_path):
                raise GraphoptError(f"{page}: --report would overwrite the {role} model")
    request = optimize_request(args)
    if args.passes and args.level is not None and not args.quiet:
        _warn(f"-O{args.level} is ignored: --passes gives the pipeline")
    if args.strict and not args.verify and not args.quiet:
        print("graphopt: note: --strict turns --verify on", file=sys.stderr)
    pipeline = request.pipeline()  # resolved before loading, so a misspelt pass name fails fast
    show = not (args.quiet or args.json) and err.is_terminal

    times: dict[str, float] = {}
    nodes: dict[str, int] = {}
    float_reasons: list[dict[str, str]] = []
    in_size = _file_size(src)
    with _progress(err, show) as progress:
        with timed(times, "load"), _step(progress, f"loading {src.name} ({human_bytes(in_size)})"):
            model = load_checked(src, run_checker=not args.no_check)
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
            elif name == "prune":
                _warn_unmatched(model, args, "prune")
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
                save(
                    model,
                    out,
                    external_data=external,
                    size_threshold=args.size_threshold,
                    progress=lambda done, total: progress.update(save_task, completed=done, total=total),
                )
            progress.remove_task(save_task)

    summary = _summary(args, request, report, model, times, nodes, float_reasons, ops_before, in_size, out)
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        _render(report, summary)
    if args.report:
        from graphopt.report import write_report

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
    in_size: int,
    out: Path,
) -> dict[str, Any]:
    """The run as one dict: what --json prints and --report renders."""
    summary = {
        "input": str(args.input),
        "output": str(out),
        "level": None if args.passes else request.level,
        "target": args.target,
        "bytes_before": in_size,
        "bytes_after": _file_size(out),
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
            {"layer": name, "why": "--max-error: among the most sensitive layers"}
            for name in report.quantization.kept_float
        ]
        stages.append(("int8", nodes_pruned, summary["nodes_written"]))
    summary["stages"] = [{"stage": n, "nodes_before": a, "nodes_after": b} for n, a, b in stages]
    winograd = report.results.get("winograd")
    if winograd and winograd["layers"]:
        summary["winograd"] = {"layers": list(winograd["layers"]), "model_ms": winograd["model_ms"]}
    return summary


def _render(report: PassReport, summary: dict[str, Any]) -> None:
    console = _stdout()
    _print_report(console, report, summary)
    if "winograd" in summary:
        _print_winograd(console, summary["winograd"])
    for pruned in report.pruning:
        _print_pruning(console, pruned)
    if report.quantization is not None:
        _print_quantization(console, report.quantization)


class _Recorded(list):
    """A list that calls ``on_append(item)`` after each append: the winograd pass appends each layer's decision to
    ``ctx.options["winograd_decisions"]`` as it is made, which drives the progress bar without a hook in the pass."""

    def __init__(self, on_append: Any) -> None:
        super().__init__()
        self.on_append = on_append

    def append(self, item: Any) -> None:
        super().append(item)
        self.on_append(item)


def _warn_unmatched(model: Model, args: argparse.Namespace, stage: str) -> None:
    """One warning per name, op type or pattern that selects nothing in the model (it would be silently ignored),
    with the nearest valid names."""
    if args.quiet:
        return
    names = {n.name for n in model.graph if n.name}
    ops = {n.op_type for n in model.graph}
    problems: list[str] = []
    if stage == "prune":
        layers = {n.name for n in model.graph if n.name and n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")}
        for item in args.prune_layer:
            name = item.rpartition("=")[0]
            if name not in layers:
                problems.append(f"--prune-layer {name!r} matches no layer" + unmatched_hint(name, layers, "layers"))
    else:
        for name in args.exclude:
            if name not in names:
                problems.append(f"--exclude {name!r} matches no node" + unmatched_hint(name, names, "node names"))
        for op in args.exclude_op:
            if op not in ops:
                problems.append(f"--exclude-op {op!r} matches no node" + unmatched_hint(op, ops, "op types"))
        for rx in args.exclude_regex:
            if not any(re.search(rx, n) for n in names):
                problems.append(f"--exclude-regex {rx!r} matches no node name" + unmatched_hint(rx, names, "names"))
        for op in (o.strip() for o in (args.quantize_ops or "").split(",")):
            if op and op not in ops:
                problems.append(f"--quantize-ops {op!r} matches no node" + unmatched_hint(op, ops, "op types"))
    for p in problems:
        _warn(p)


def _warn(text: str) -> None:
    """``graphopt: warning: ...`` on stderr: one line in a pipe or a log, wrapped between words on a terminal (never
    inside a name or a number)."""
    line = f"graphopt: warning: {text}"
    if sys.stderr.isatty():
        import shutil
        import textwrap

        width = shutil.get_terminal_size().columns
        line = textwrap.fill(line, width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
    print(line, file=sys.stderr)


def _float_reasons(model: Model, args: argparse.Namespace) -> list[dict[str, str]]:
    """The nodes the exclusion flags keep float, and which flag did (for the report)."""
    found = []
    for n in model.graph:
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
    from graphopt.report import write_report

    src = args.result
    try:
        text = sys.stdin.read() if src == "-" else Path(src).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise GraphoptError(f"{src}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as e:
        raise GraphoptError(f"{src}: not JSON ({e.msg}, line {e.lineno}); give what optimize --json printed") from None
    if not isinstance(summary, dict) or "passes" not in summary:
        raise GraphoptError(f"{src}: not the output of graphopt optimize --json (no \"passes\")")
    write_report(summary, Path(args.output))
    return 0


def _prune_request(args: argparse.Namespace) -> dict[str, Any] | None:
    """What the pruning flags ask for (None: no pruning); bad values fail before anything is loaded."""
    if args.prune_channels is None and args.prune_weights is None:
        if args.prune_layer or args.prune_protect:
            raise GraphoptError("--prune-layer and --prune-protect need --prune-channels or --prune-weights")
        return None
    if args.prune_channels is not None and not 0 <= args.prune_channels < 1:
        raise GraphoptError(f"--prune-channels must be in [0, 1), got {args.prune_channels}")
    weights: float | str | None = args.prune_weights
    if weights is not None and weights != "2:4":
        try:
            weights = float(weights)
        except ValueError:
            raise GraphoptError(f"--prune-weights takes a ratio in [0, 1) or 2:4, got {args.prune_weights!r}") from None
        if not 0 <= weights < 1:
            raise GraphoptError(f"--prune-weights must be in [0, 1) or 2:4, got {args.prune_weights}")
    layer_ratios = {}
    for item in args.prune_layer:
        name, sep, value = item.rpartition("=")
        try:
            ratio = float(value)
        except ValueError:
            ratio = -1.0
        if not sep or not name or not 0 <= ratio < 1:
            raise GraphoptError(f"--prune-layer {item!r}: expected NAME=RATIO with a ratio in [0, 1)")
        layer_ratios[name] = ratio
    for rx in args.prune_protect:
        try:
            re.compile(rx)
        except re.error as exc:
            raise GraphoptError(f"--prune-protect {rx!r}: {exc}") from None
    if args.prune_multiple < 1:
        raise GraphoptError(f"--prune-multiple must be at least 1, got {args.prune_multiple}")
    return {
        "channels": args.prune_channels,
        "weights": weights,
        "options": {
            "multiple": args.prune_multiple,
            "importance": args.prune_importance,
            "protect": list(args.prune_protect),
            "layer_ratios": layer_ratios,
            "borders": args.prune_borders,
            "scope": args.prune_scope,
            "sparse": args.sparse_initializers,
        },
    }


@contextmanager
def _printed_warnings(stage: str, quiet: bool) -> Iterator[None]:
    """Collect the warnings the stage's loggers emit and print each once, in graphopt's format, after the stage:
    pruning's unless ``quiet``; quantization's always (a model that is likely unusable is never written silently)."""
    import logging

    from graphopt.prune import driver as prune
    from graphopt.quantize import calibration
    from graphopt.quantize import driver as quantize

    loggers = (prune.logger,) if stage == "prune" else (quantize.logger, calibration.logger)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING if stage != "prune" else logging.NOTSET)
    handler.emit = records.append  # type: ignore[method-assign]
    for log in loggers:
        log.addHandler(handler)
        if stage != "prune":
            log.propagate = False
    try:
        yield
    finally:
        for log in loggers:
            log.removeHandler(handler)
            log.propagate = True
        for r in records:
            if not quiet:
                print(f"graphopt: warning: {r.getMessage()}", file=sys.stderr)


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
                f"  {plural(r.folded, 'reader')} took the removed channels' constant signal ({r.border_maps} as maps)"
            )
        ratio = r.macs_before / r.macs_after if r.macs_after else float("inf")
        lines.append(f"  MACs {human_count(r.macs_before)} -> {human_count(r.macs_after)} ({ratio:.2f}x fewer)")
    else:
        lines.append(f"pruning ({r.mode}):")
    lines.append(f"  parameters {human_bytes(r.param_bytes_before)} -> {human_bytes(r.param_bytes_after)}")
    if r.latency_ms:
        a, b = r.latency_ms
        lines.append(f"  latency {a:.2f} ms -> {b:.2f} ms ({a / b:.2f}x; 1 thread, median, interleaved)")
    if r.note:
        lines.append(f"note: {r.note}")
    _print_lines(console, lines)


def _quantize_config(args: argparse.Namespace) -> Any:
    """The QuantizeConfig the flags ask for (None without --quantize); flag errors surface before any loading."""
    calib_flags = [
        f
        for f, v in (
            ("--calib-data", args.calib_data),
            ("--calib-random", args.calib_random),
            ("--max-error", args.max_error),
            ("--quantize-ops", args.quantize_ops),
        )
        if v is not None
    ]
    if not args.quantize:
        if calib_flags:
            raise GraphoptError(f"{calib_flags[0]} needs --quantize int8")
        return None
    from graphopt.quantize import QuantizeConfig  # here, not at the top: it brings in numba for calibration

    if args.calib_data and args.calib_random is not None:
        raise GraphoptError("give either --calib-data DIR or --calib-random N, not both")
    if not args.calib_data and args.calib_random is None:
        raise GraphoptError(
            "--quantize needs calibration data: --calib-data DIR (or --calib-random N for a smoke test)"
        )
    if args.calib_random is not None and args.calib_random < 1:
        raise GraphoptError(f"--calib-random must be at least 1, got {args.calib_random}")
    if args.max_error is not None and not args.max_error > 0:
        raise GraphoptError(f"--max-error must be positive, got {args.max_error}")
    if not 0 < args.percentile <= 100:
        raise GraphoptError(f"--percentile must be in (0, 100], got {args.percentile}")
    for rx in args.exclude_regex:
        try:
            re.compile(rx)
        except re.error as exc:
            raise GraphoptError(f"--exclude-regex {rx!r}: {exc}") from None
    if args.calib_data:
        folder = Path(args.calib_data)
        if not folder.is_dir():
            raise GraphoptError(f"{folder}: calibration data directory not found")
    cache: Any = True
    if args.calib_cache:
        cache = False if args.calib_cache == "off" else args.calib_cache
    return QuantizeConfig(
        method=args.calib_method,
        percentile=args.percentile,
        op_types=[o.strip() for o in args.quantize_ops.split(",") if o.strip()] if args.quantize_ops else None,
        exclude=list(args.exclude),
        exclude_ops=list(args.exclude_op),
        exclude_regex=list(args.exclude_regex),
        reduce_range={"auto": None, "on": True, "off": False}[args.reduce_range],
        max_error=args.max_error,
        cache=cache,
    )


def _calibration(args: argparse.Namespace, model: Model) -> tuple[list[dict[str, Any]], list[str]]:
    """The calibration feeds the flags name (a folder matched against the model's inputs, or random samples) and
    where each came from."""
    import warnings

    from graphopt.quantize import calibration

    if args.calib_data:
        named = calibration.load_dir(args.calib_data, model)
        return [feed for _, feed in named], [str(path) for path, _ in named]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feeds = calibration.random_feeds(model, args.calib_random)
    for w in caught:
        if not args.quiet:
            print(f"graphopt: warning: {w.message}", file=sys.stderr)
    return feeds, [f"random calibration sample #{i}" for i in range(len(feeds))]


def _quantize_progress(progress: Progress) -> Any:
    """A quantization progress hook that shows each stage (calibration, sensitivity...) as a task."""
    tasks: dict[str, Any] = {}

    def on_progress(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)
        if total is not None and done >= total:
            progress.remove_task(tasks.pop(stage))

    return on_progress


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
        if alone:
            row.append(_fmt(layer.alone_sqnr_db, ".1f"))
        if q.target == "ort":
            row.append(layer.fused_as or (Text("float", style="yellow") if layer.fused is False else "?"))
        rows.append(row)
    table, dropped = _fit_table(
        console,
        f"int8 quantization (target {q.target})",
        columns,
        rows,
        droppable=("in scale", "out scale", "weight scale", "relu"),
    )
    console.print(table)
    source = f"{plural(q.batches, 'calibration batch', 'calibration batches')}{', from cache' if q.cached else ''}"
    method = q.method + (f" {q.percentile:g}" if q.method == "percentile" else "")
    fused = f", {q.fused_count} run as integer kernels" if q.target == "ort" else ""
    lines = [
        f"int8: {plural(len(q.layers), 'layer')} quantized{fused}",
        f"  ranges: {method} from {source}",
        f"  output error {q.error_rel:.4g} relative (SQNR {q.sqnr_db:.1f} dB), max abs {q.error_max_abs:.4g}",
        f"  parameters {human_bytes(q.param_bytes_before)} -> {human_bytes(q.param_bytes_after)}",
        f"  weights: {q.reduce_range_reason}",
    ]
    if dropped:
        lines.append(f"  (not shown at this width: {', '.join(dropped)}; see --json or --report)")
    if q.kept_float:
        lines.append(f"kept float by --max-error: {', '.join(q.kept_float)}")
    if q.opset_upgraded:
        a, b = q.opset_upgraded
        lines.append(f"opset {a} -> {b} (onnx's version converter) for per-channel Q/DQ")
    _print_lines(console, lines)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


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


def _print_report(console: Console, report: PassReport, summary: dict[str, Any]) -> None:
    table = Table(title="passes", title_justify="left")
    table.add_column("pass", overflow="fold")
    table.add_column("runs", justify="right")
    table.add_column("changed")
    table.add_column("nodes +/-", justify="right")
    table.add_column("ms", justify="right")
    details = any(s.counts or s.declines for s in report.stats) or "winograd" in summary
    if details:
        table.add_column("result", overflow="fold")
    skipped = []
    for s in report.stats:
        if s.runs == 0:  # an identical pass ran before it and nothing changed since: it had nothing to do
            skipped.append(s.name)
            continue
        row = [
            escape(s.name),
            str(s.runs),
            "yes" if s.changed else "no",
            f"{s.nodes_delta:+d}" if s.nodes_delta else "0",
            f"{s.seconds * 1000:.1f}",
        ]
        if details:
            if s.name == "winograd" and "winograd" in summary:
                row.append(escape(_winograd_result(summary["winograd"])))
            elif s.name == "winograd" and s.counts == {"kept": 0}:
                row.append("no eligible 3x3 layer")
            else:
                row.append(escape(s.details()))
        table.add_row(*row)
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
    console.print(
        f"  size {human_bytes(summary['bytes_before'])} -> {human_bytes(summary['bytes_after'])}",
        highlight=False,
        markup=False,
    )
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


# --------------------------------------------------------------------------------------------------------------------
# inspect and passes
# --------------------------------------------------------------------------------------------------------------------
def cmd_inspect(args: argparse.Namespace) -> int:
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
    table = Table(title="registered passes", title_justify="left")
    table.add_column("pass")
    table.add_column("description")
    table.add_column("options")
    for row in rows:
        opts = ", ".join(f"{k}: {o['type']} = {o['default']}" for k, o in row["options"].items())
        table.add_row(row["name"], escape(row["description"] + ("" if row["lossless"] else " (lossy)")), escape(opts))
    _stdout().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
