"""``graphopt bench MODEL [OTHER]``: onnxruntime latency of one model, or of two compared on the same inputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphopt.core.onnx_io import require_file
from graphopt.errors import GraphoptError
from graphopt.tools.runtime import compare_outputs, make_inputs, measure_latency, parse_shape, run, session

if TYPE_CHECKING:
    from rich.console import Console


def add_parser(sub: Any, **kwargs: Any) -> None:
    """The ``bench`` subcommand's flags; ``kwargs`` go to ``add_parser`` (the CLI's help formatter)."""
    p = sub.add_parser(
        "bench", help="measure onnxruntime latency; with two models, compare outputs and speed", **kwargs
    )
    p.add_argument("model", help="the ONNX model to time")
    p.add_argument("other", nargs="?", help="a second model (e.g. the optimized one) timed interleaved with the first")
    p.add_argument("--runs", type=int, default=50, help="timed runs per model (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    p.add_argument(
        "--shape", action="append", default=[], metavar="NAME=1x3x224x224", help="an input's shape (repeatable)"
    )
    p.add_argument("--batch", type=int, default=1, help="size of symbolic first dims (default 1)")
    p.add_argument(
        "--ort-opt", choices=("all", "basic", "disabled"), default="all", help="onnxruntime graph optimization level"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, Progress, TextColumn  # only here: the parser imports this module every run

    if args.runs < 1 or args.warmup < 0:
        raise GraphoptError("--runs must be at least 1 and --warmup at least 0")
    shapes = dict(parse_shape(s) for s in args.shape)
    paths = [args.model] + ([args.other] if args.other else [])
    for p in paths:
        require_file(Path(p))  # a regular file: onnxruntime would block on a FIFO or read a device forever
    sessions = [session(p, threads=args.threads, optimization=args.ort_opt) for p in paths]
    for p, sess in zip(paths, sessions, strict=True):
        if not sess.get_outputs():
            raise GraphoptError(f"{p}: the model has no outputs: nothing to time")
    feeds = make_inputs(sessions[0], shapes, seed=args.seed, batch=args.batch)
    for p, sess in zip(paths, sessions, strict=True):  # a first run: the inputs onnxruntime rejects are one line
        run(sess, None, feeds, f"{p} (inputs {', '.join(f'{k}={_dims(v.shape)}' for k, v in feeds.items())})")
    result: dict[str, Any] = {"threads": args.threads, "ort_optimization": args.ort_opt, "runs": args.runs}
    result["inputs"] = {k: list(v.shape) for k, v in feeds.items()}
    if len(sessions) == 2:
        a_in = [i.name for i in sessions[0].get_inputs()]
        b_in = [i.name for i in sessions[1].get_inputs()]
        if sorted(a_in) != sorted(b_in):
            raise GraphoptError(f"{args.other}: its inputs {b_in} differ from {args.model}'s {a_in}")
        outs_a, outs_b = sessions[0].run(None, feeds), sessions[1].run(None, feeds)
        if len(outs_a) != len(outs_b):
            raise GraphoptError(f"{args.other}: {len(outs_b)} outputs, but {args.model} has {len(outs_a)}")
        names = [o.name for o in sessions[0].get_outputs()]
        result["outputs"] = [{"name": n, **d} for n, d in zip(names, compare_outputs(outs_a, outs_b), strict=True)]
    show = not args.quiet and not args.json and console.is_terminal
    with Progress(
        TextColumn("timing"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=console,
        transient=True,
        disable=not show,
    ) as progress:
        task = progress.add_task("timing", total=args.runs)
        stats = measure_latency(
            sessions,
            feeds,
            warmup=args.warmup,
            runs=args.runs,
            progress=lambda done, total: progress.update(task, completed=done),
        )
    result["models"] = [{"path": p, **s.to_dict()} for p, s in zip(paths, stats, strict=True)]
    if len(stats) == 2:
        result["speedup"] = round(stats[0].median_ms / stats[1].median_ms, 4)
    if args.json:
        print(json.dumps(result, indent=2))
    elif not args.quiet:
        _print(console, result)
    return 0


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _print(console: Console, result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"onnxruntime latency ({result['runs']} runs, optimization {result['ort_optimization']})")
    for col in ("model", "median ms", "p90 ms", "mean ms", "min ms"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for m in result["models"]:
        table.add_row(
            m["path"], f"{m['median_ms']:.3f}", f"{m['p90_ms']:.3f}", f"{m['mean_ms']:.3f}", f"{m['min_ms']:.3f}"
        )
    console.print(table)
    if "outputs" in result:
        diff = Table(title="output difference (second vs first)")
        for col in ("output", "max abs", "max rel"):
            diff.add_column(col, justify="left" if col == "output" else "right")
        for o in result["outputs"]:
            diff.add_row(o["name"], f"{o['max_abs']:.3g}", f"{o['max_rel']:.3g}")
        console.print(diff)
        console.print(f"speed ratio (median first / median second, interleaved): {result['speedup']:.3f}x")
