"""The ``graphopt`` command: optimize, inspect, bench, passes.

User errors (bad files, bad options) print one line ``graphopt: error: ...`` on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from graphopt import __version__, bench
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
from graphopt.pass_manager import PassManager, PassReport
from graphopt.passes_api import TARGETS, PassContext, as_passes, get_pass, level_pipeline, list_passes
from graphopt.summary import human_bytes, shape_str, summarize
from graphopt.tensors import same_file

EXIT_USER_ERROR = 2
_TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name))


def _stdout() -> Console:
    """A console for results: the terminal's width, or wide enough not to cut tables when piped to a file."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    return console


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(EXIT_USER_ERROR, f"graphopt: error: {message} (see graphopt {self.prog.split()[-1]} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="graphopt", description="A graph-level compiler for ONNX models.")
    parser.add_argument("--version", action="version", version=f"graphopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    opt = sub.add_parser("optimize", help="optimize a model and write the result")
    opt.add_argument("input", help="the ONNX model to optimize")
    opt.add_argument("-o", "--output", help="where to write the optimized model")
    opt.add_argument(
        "-O",
        dest="level",
        type=int,
        choices=range(4),
        default=2,
        metavar="0..3",
        help="optimization level: -O0 nothing, -O1 cleanup, -O2 lossless, -O3 also lowerings (default 2)",
    )
    opt.add_argument("--passes", help="run these passes instead of a level: 'a,b{key=value},c'")
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
    opt.add_argument("--strict", action="store_true", help="with --verify: stop with exit code 1 instead of undoing")
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
        help="onnxruntime threads the model will run with (Winograd timing; default 1)",
    )
    _prune_flags(opt)
    _quantize_flags(opt)
    _output_flags(opt)

    ins = sub.add_parser("inspect", help="show opsets, inputs/outputs, op counts, parameters and subgraphs")
    ins.add_argument("input", help="the ONNX model to inspect")
    ins.add_argument("--json", action="store_true", help="print JSON instead of tables")

    bench.add_parser(sub)

    dif = sub.add_parser(
        "diff", help="compare two models structurally (names and node order ignored); exit 1 if they differ"
    )
    dif.add_argument("a", help="the first model")
    dif.add_argument("b", help="the second model")
    dif.add_argument("--rtol", type=float, default=None, help="compare constants within this relative tolerance")
    dif.add_argument("--atol", type=float, default=None, help="compare constants within this absolute tolerance")
    dif.add_argument("--max", type=int, default=20, help="report at most this many differences (default 20)")
    dif.add_argument("--json", action="store_true", help="print the differences as JSON")

    pas = sub.add_parser("passes", help="list the registered passes and their options")
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
    p.add_argument("--prune-multiple", type=int, default=8, help="round kept channels up to a multiple (default 8)")
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
    q.add_argument("--percentile", type=float, default=99.999, help="central share kept by --calib-method percentile")
    q.add_argument(
        "--calib-cache",
        metavar="FILE|off",
        help="calibration cache file (default: one per model and data in ~/.cache/graphopt/calibration)",
    )
    q.add_argument("--exclude", action="append", default=[], metavar="NAME", help="keep this node float (repeatable)")
    q.add_argument("--exclude-op", action="append", default=[], metavar="OP", help="keep this op type float")
    q.add_argument("--exclude-regex", action="append", default=[], metavar="RX", help="keep nodes whose name matches")
    q.add_argument("--quantize-ops", metavar="OPS", help="comma-separated op types to quantize instead of the default")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    err = Console(stderr=True)
    try:
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
        print(f"{a} and {b} differ ({len(found)}{'+' if len(found) >= args.max else ''} differences):")
        for d in found:
            print(f"  {d}")
    return 1 if found else 0


def _jsonable(x: object) -> object:
    return x if isinstance(x, str | int | float | bool | type(None)) else repr(x)


# --------------------------------------------------------------------------------------------------------------------
# optimize
# --------------------------------------------------------------------------------------------------------------------
def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
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
        check(path)  # the checker reads the file itself: ~5x faster than checking the parsed proto
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


def cmd_optimize(args: argparse.Namespace, err: Console) -> int:
    src = Path(args.input)
    out = _output_path(args)
    if args.threads < 1:
        raise GraphoptError(f"--threads must be at least 1, got {args.threads}")
    quant_config = _quantize_config(args)
    prune_request = _prune_request(args)
    # Resolve the pipeline before loading, so a misspelt pass name fails fast.
    pipeline = as_passes(args.passes) if args.passes else level_pipeline(args.level)
    if args.winograd not in (None, "off") and not any(p.name == "winograd" for p in pipeline):
        pipeline.append(get_pass("winograd")())  # a forced or explicit mode runs at any level
    fixed_point = args.fixed_point if args.fixed_point is not None else (not args.passes and args.level >= 2)
    show = not (args.quiet or args.json) and err.is_terminal

    times: dict[str, float] = {}
    in_size = _file_size(src)
    with _progress(err, show) as progress:
        t0 = time.perf_counter()
        with _step(progress, f"loading {src.name} ({human_bytes(in_size)})"):
            model = load_checked(src, run_checker=not args.no_check)
        times["load"] = time.perf_counter() - t0
        external = {"auto": None, "yes": True, "no": False}[args.external_data]
        data_path = out.parent / f"{out.name}.data" if wants_external_data(model, external) else None
        check_targets(model, out, data_path)  # fail now, not after optimizing; save checks again

        task = progress.add_task("optimizing", total=len(pipeline))

        def on_pass(name: str, index: int, total: int) -> None:
            progress.update(task, description=f"pass {name}", completed=index)

        t0 = time.perf_counter()
        options: dict[str, Any] = {"winograd_threads": args.threads, "keep_debug_info": args.keep_debug_info}
        if args.winograd is not None:
            options["winograd"] = args.winograd
        ctx = PassContext(model=model, target=args.target, options=options)
        manager = PassManager(
            pipeline, fixed_point=fixed_point, progress=on_pass, verify=args.verify, strict=args.strict
        )
        report = manager.run(model, ctx)
        progress.remove_task(task)
        times["optimize"] = time.perf_counter() - t0

        if prune_request is not None:
            t0 = time.perf_counter()
            with _step(progress, "pruning"):
                report.pruning = _prune(model, prune_request, args)
            times["prune"] = time.perf_counter() - t0

        if quant_config is not None:
            t0 = time.perf_counter()
            report.quantization = _quantize(args, model, quant_config, progress, err)
            times["quantize"] = time.perf_counter() - t0

        t0 = time.perf_counter()
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
        times["save"] = time.perf_counter() - t0

    summary = {
        "input": str(src),
        "output": str(out),
        "level": None if args.passes else args.level,
        "target": args.target,
        "bytes_before": in_size,
        "bytes_after": _file_size(out),
        "timing": {k: round(v, 4) for k, v in times.items()},
        **report.to_dict(),
    }
    if report.pruning:
        summary["pruning"] = [r.to_dict() for r in report.pruning]
    if report.quantization is not None:
        summary["quantization"] = report.quantization.to_dict()
    if args.json:
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        _print_report(_stdout(), report, summary)
        for pruned in report.pruning:
            _print_pruning(_stdout(), pruned)
        if report.quantization is not None:
            _print_quantization(_stdout(), report.quantization)
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


def _prune(model: Model, request: dict[str, Any], args: argparse.Namespace) -> list[Any]:
    import logging

    from graphopt import prune

    before = model.to_onnx() if args.prune_bench > 0 else None
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    prune.logger.addHandler(handler)
    try:
        reports = prune.run_pruning(model, request["channels"], request["weights"], request["options"])
    finally:
        prune.logger.removeHandler(handler)
    for r in records:
        if not args.quiet:
            print(f"graphopt: warning: {r.getMessage()}", file=sys.stderr)
    if before is not None and reports:
        latency = prune.measure(before, model.to_onnx(), runs=args.prune_bench)
        reports[-1].latency_ms = latency
    return reports


def _print_pruning(console: Console, r: Any) -> None:
    def pair(a: Any, b: Any) -> str:
        return "-" if a is None else (str(a) if a == b else f"{a} -> {b}")

    table = Table(title=f"pruning ({r.mode})", title_justify="left")
    for col in ("layer", "op", "in ch", "out ch", "params", "MACs"):
        table.add_column(col, justify="left" if col in ("layer", "op") else "right")
    if r.mode != "channels":
        table.add_column("sparsity", justify="right")
    for layer in r.layers:
        row = [
            escape(layer.name),
            layer.op_type,
            pair(*layer.in_channels),
            pair(*layer.out_channels),
            pair(*layer.params),
            pair(*(f"{m / 1e6:.1f}M" if m is not None else None for m in layer.macs)),
        ]
        if r.mode != "channels":
            row.append("-" if layer.sparsity is None else f"{layer.sparsity:.0%}")
        table.add_row(*row)
    console.print(table)
    parts = []
    if r.mode == "channels":
        blocked = ", ".join(f"{k} {v}" for k, v in sorted(r.blocked.items())) or "none"
        parts.append(f"{r.groups_pruned} of {r.groups} channel groups pruned (blocked: {blocked})")
        if r.folded:
            parts.append(f"{r.folded} readers took the removed channels' constant signal ({r.border_maps} as maps)")
        ratio = r.macs_before / r.macs_after if r.macs_after else float("inf")
        parts.append(f"MACs {r.macs_before / 1e9:.3f} G -> {r.macs_after / 1e9:.3f} G ({ratio:.2f}x fewer)")
    parts.append(f"parameters {human_bytes(r.param_bytes_before)} -> {human_bytes(r.param_bytes_after)}")
    if r.latency_ms:
        a, b = r.latency_ms
        parts.append(f"latency {a:.2f} ms -> {b:.2f} ms ({a / b:.2f}x; 1 thread, median, interleaved)")
    console.print("; ".join(parts), highlight=False, markup=False)
    if r.note:
        console.print(f"note: {r.note}", highlight=False, markup=False)


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


def _quantize(args: argparse.Namespace, model: Model, config: Any, progress: Progress, err: Console) -> Any:
    import warnings

    from graphopt import calibration
    from graphopt.quantize import quantize_model

    if args.calib_data:
        named = calibration.load_dir(args.calib_data)
        for path, feed in named:
            calibration.check_feed(model, feed, str(path))
        feeds = [feed for _, feed in named]
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            feeds = calibration.random_feeds(model, args.calib_random)
        for w in caught:
            if not args.quiet:
                err.print(f"graphopt: warning: {w.message}", highlight=False, markup=False)
    tasks: dict[str, Any] = {}

    def on_progress(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    try:
        return quantize_model(model, feeds, args.target, config, progress=on_progress)
    finally:
        for task in tasks.values():
            progress.remove_task(task)


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _print_quantization(console: Console, q: Any) -> None:
    table = Table(title=f"int8 quantization (target {q.target})", title_justify="left")
    for col in ("layer", "op", "in scale", "weight scale", "out scale", "relu", "SQNR dB"):
        table.add_column(col, justify="right" if "scale" in col or "dB" in col else "left")
    alone = any(layer.alone_sqnr_db is not None for layer in q.layers)
    if alone:
        table.add_column("alone dB", justify="right")
    if q.target == "ort":
        table.add_column("runs as")
    for layer in q.layers:
        w = layer.weight_scale
        row = [
            escape(layer.name),
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
            row.append(layer.fused_as or ("[yellow]float[/]" if layer.fused is False else "?"))
        table.add_row(*row)
    console.print(table)
    source = f"{q.batches} calibration batch(es){', from cache' if q.cached else ''}"
    method = q.method + (f" {q.percentile:g}" if q.method == "percentile" else "")
    fused = f", {q.fused_count} run as integer kernels" if q.target == "ort" else ""
    console.print(
        f"int8: {len(q.layers)} layers quantized{fused}; {method} ranges from {source}; output error "
        f"{q.error_rel:.4g} relative (SQNR {q.sqnr_db:.1f} dB), max abs {q.error_max_abs:.4g}; parameters "
        f"{human_bytes(q.param_bytes_before)} -> {human_bytes(q.param_bytes_after)}; weights: {q.reduce_range_reason}",
        highlight=False,
        markup=False,
    )
    if q.kept_float:
        console.print(f"kept float by --max-error: {', '.join(q.kept_float)}", highlight=False, markup=False)


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _print_report(console: Console, report: PassReport, summary: dict[str, Any]) -> None:
    table = Table(title="passes", title_justify="left")
    table.add_column("pass")
    table.add_column("runs", justify="right")
    table.add_column("changed")
    table.add_column("nodes before", justify="right")
    table.add_column("nodes after", justify="right")
    table.add_column("ms", justify="right")
    details = any(s.counts for s in report.stats)
    if details:
        table.add_column("fired")
    for s in report.stats:
        row = [
            escape(s.name),
            str(s.runs),
            "yes" if s.changed else "no",
            str(s.nodes_before),
            str(s.nodes_after),
            f"{s.seconds * 1000:.1f}",
        ]
        if details:
            row.append(escape(", ".join(f"{k} x{v}" for k, v in sorted(s.counts.items()))))
        table.add_row(*row)
    if report.stats:
        console.print(table)
    sec = summary["timing"]
    console.print(
        f"{summary['input']} -> {summary['output']}: nodes {report.nodes_before} -> {report.nodes_after}, "
        f"size {human_bytes(summary['bytes_before'])} -> {human_bytes(summary['bytes_after'])}, "
        f"{report.iterations} iteration(s); load {sec['load']:.2f}s, optimize {sec['optimize']:.2f}s, "
        f"save {sec['save']:.2f}s",
        highlight=False,
        markup=False,
    )
    if report.verified or report.unverifiable:
        undone = f"; undone: {', '.join(report.reverted)}" if report.reverted else "; every pass kept the outputs"
        note = report.unverifiable or f"{report.verified} pass run(s) checked{undone}"
        console.print(f"verify: {note} ({report.verify_seconds:.2f}s)", highlight=False, markup=False)


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
