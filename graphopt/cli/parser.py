"""The command line, parsed: the argparse parser of every command, and the translation of ``optimize``'s flags into
an :class:`graphopt.api.OptimizeRequest` (flag syntax checked here; values validated by the request, in flag terms)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from graphopt import __version__
from graphopt.api import OptimizeRequest, dir_calibration
from graphopt.core.ir import Model
from graphopt.engine.passes_api import TARGETS
from graphopt.errors import GraphoptError
from graphopt.tools import bench

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """graphopt's parsers: one-line errors (exit 2), no abbreviated options (``--calib-dat`` is not silently
    ``--calib-data``, ``--int8`` does not complain about ``--int8-layer``), and a guess for an unknown option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(EXIT_USER_ERROR, f"graphopt: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        argv = sys.argv[1:] if args is None else list(args)
        _missing_command(self, argv)
        parsed, extras = self.parse_known_args(argv, namespace)
        if extras:
            sub = self._command_parser(getattr(parsed, "command", None))
            hint = _option_hint(sub or self, extras)
            (sub or self).error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed

    def _command_parser(self, command: str | None) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command]  # type: ignore[no-any-return]
        return None


def _missing_command(parser: _Parser, argv: list[str]) -> None:
    """``graphopt model.onnx -o out.onnx``: the subcommand was left out. When the first word names a file (or an
    .onnx path), say which command line was probably meant rather than only listing the commands."""
    commands = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if not commands or not argv or argv[0].startswith("-") or argv[0] in commands:
        return
    first = argv[0]
    try:
        names_a_file = first.lower().endswith(".onnx") or Path(first).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a model path either
        names_a_file = False
    if names_a_file:
        import shlex

        meant = shlex.join(["graphopt", "optimize", *argv])
        parser.error(f"{first!r} is not a command; to optimize a model the command is: {meant}")


def _option_hint(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """'; did you mean ...?' for the first unknown option: the nearest option name (difflib), or an option whose
    value it is (``--fp16``: ``--precision fp16``, ``--int8``: ``--quantize int8``)."""
    import difflib

    values: dict[str, str] = {}
    for action in parser._actions:
        if action.option_strings and action.choices is not None and not isinstance(action.choices, range):
            for choice in action.choices:
                values.setdefault(f"--{choice}", f"{action.option_strings[-1]} {choice}")
    names = [o for o in parser._option_string_actions if o.startswith("--")]
    for word in extras:
        if not word.startswith("--"):
            continue
        flag = word.split("=", 1)[0]
        if flag.lower() in values:
            return f"; did you mean {values[flag.lower()]}?"
        close = difflib.get_close_matches(flag, names, n=1, cutoff=0.6)
        if close:
            return f"; did you mean {close[0]}?"
    return ""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (unless its help already says it or it has none worth showing) and keeps the
    examples epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == [] or default == argparse.SUPPRESS  # 0 is shown
        if "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


EXAMPLES = """examples:
  graphopt optimize model.onnx -o model.opt.onnx                 # -O2: lossless cleanup to a fixed point
  graphopt optimize model.onnx -o model.o3.onnx -O3 --threads 4  # also Winograd where it is measured faster
  graphopt optimize model.onnx -o out.onnx --passes "fold-constants,cse,dce" --verify
  graphopt optimize model.onnx -o model.int8.onnx --quantize int8 --calib-data calib/ --report report.html
  graphopt optimize model.onnx -o model.dq.onnx --quantize int8-dynamic       # no calibration data needed
  graphopt optimize llm.onnx -o llm.int4.onnx --quantize int4                 # MatMul/Gemm weights in 4 bits
  graphopt optimize model.onnx -o model.pruned.onnx --prune-channels 0.5
  graphopt optimize model.onnx -o model.fp16.onnx --precision fp16 --calib-data calib/
  graphopt report result.json -o report.html    # result.json: what optimize --json printed
  graphopt diff model.onnx model.opt.onnx       # compare two models: what was removed, added or changed
  graphopt bench model.onnx model.opt.onnx      # time two models interleaved and compare their outputs
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
        "optimize",
        help="optimize a model and write the result",
        usage="%(prog)s IN -o OUT [options]\n       %(prog)s IN --in-place [options]",
        epilog=EXAMPLES,
        formatter_class=_HelpFormatter,
    )
    opt.add_argument("input", metavar="IN", help="the ONNX model to optimize")
    opt.add_argument(
        "-o", "--output", metavar="OUT", help="where to write the optimized model (required, unless --in-place)"
    )
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
    opt.add_argument("--passes", metavar="PIPELINE", help="run these passes instead of a level: 'a,b{key=value},c'")
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
    _precision_flags(opt)
    _output_flags(opt)

    ins = sub.add_parser(
        "inspect",
        help="show opsets, inputs/outputs, op counts, parameters and subgraphs",
        formatter_class=_HelpFormatter,
    )
    ins.add_argument("input", metavar="IN", help="the ONNX model to inspect")
    ins.add_argument("--json", action="store_true", help="print JSON instead of tables")

    bench.add_parser(sub, formatter_class=_HelpFormatter)  # shows the defaults

    dif = sub.add_parser(
        "diff",
        help="compare two models structurally (names and node order ignored); exit 1 if they differ",
        description="List what differs between models A and B, names and node order ignored: for each graph output\n"
        "where the graphs first diverge on the way up, then node by node what was removed (only in A), added\n"
        "(only in B) or changed (attributes, inputs, constants), and the initializers only one side has.\n"
        "Exit 0 if equal, 1 if not.",
        formatter_class=_HelpFormatter,
    )
    dif.add_argument("a", metavar="A", help="the first model (say the original); 'only in A' means removed")
    dif.add_argument("b", metavar="B", help="the second model (say the optimized one); 'only in B' means added")
    dif.add_argument(
        "--rtol", type=float, default=None, metavar="R", help="compare constants within this relative tolerance"
    )
    dif.add_argument(
        "--atol", type=float, default=None, metavar="A", help="compare constants within this absolute tolerance"
    )
    dif.add_argument(
        "--max",
        type=int,
        default=20,
        metavar="N",
        help="show at most this many differences; the header counts them all (default 20)",
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
        help="another --prune-channels ratio for the channel group of this Conv/Gemm (repeatable)",
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
        "--prune-shape",
        action="append",
        default=[],
        metavar="NAME=1x3x640x640",
        help="an input shape the model takes, for pruning's probe run and timing (repeatable; default: the model's "
        "sizes, symbolic dims tried up to 640; the first --calib-data or calibration sample when given)",
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
    q.add_argument(
        "--quantize",
        choices=("int8", "int8-dynamic", "int4"),
        help="int8: calibrated QDQ for --target; int8-dynamic: int8 weights, activations quantized at run time, "
        "no calibration (target ort); int4: MatMul/Gemm weights in blocked int4 (MatMulNBits for ort)",
    )
    q.add_argument(
        "--int4-method", choices=("rtn", "gptq"), default="rtn", help="int4: round to nearest, or GPTQ (calibrated)"
    )
    q.add_argument(
        "--block-size", type=int, default=32, metavar="B", help="int4: values per scale along K (default 32)"
    )
    q.add_argument("--symmetric", action="store_true", help="int4: no zero points")
    q.add_argument(
        "--accuracy-level",
        type=int,
        choices=(0, 1, 2, 3, 4),
        help="int4 target ort: MatMulNBits accuracy_level; 4: int8 activations (default: 4)",
    )
    q.add_argument(
        "--int8-layer", action="append", default=[], metavar="RX", help="int4: 8-bit for nodes matching (repeatable)"
    )
    q.add_argument(
        "--layer-error-budget",
        type=float,
        metavar="E",
        help="int4: 8-bit for layers whose relative output error at 4 bits is above E",
    )
    q.add_argument(
        "--quantize-embeddings", type=int, choices=(4, 8), metavar="BITS", help="int4: also embeddings (Gather tables)"
    )
    q.add_argument("--calib-data", metavar="DIR", help="calibration data: .npz files, each one feed dict by input name")
    q.add_argument(
        "--calib-random", type=int, metavar="N", help="calibrate on N random samples (smoke tests: poor ranges)"
    )
    q.add_argument(
        "--calib-shape",
        action="append",
        default=[],
        metavar="NAME=1x3x640x640",
        help="an input's shape for --calib-random (repeatable; default: the model's dims, and for its dynamic dims "
        "the first size from 16 up the model runs on)",
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
    q.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="NAME",
        help="keep this node float: no int8 rule rewrites it and onnxruntime runs it as its float op (repeatable)",
    )
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
        "--smooth-alpha",
        metavar="A|off",
        help="SmoothQuant migration strength in [0, 1] for MatMul/Gemm before static int8 (default 0.5; off: none)",
    )
    q.add_argument(
        "--smooth-mode",
        choices=("fold", "mul"),
        default="mul",
        help="fold: smooth only where the scales fold exactly into the producer; mul: also elsewhere, inserting a Mul",
    )
    q.add_argument(
        "--layer-choice",
        choices=("auto", "static"),
        default="auto",
        help="auto: per layer static int8, dynamic int8 or float by its estimated error; static: all static",
    )
    q.add_argument(
        "--reduce-range",
        choices=("auto", "on", "off"),
        default="auto",
        help="7-bit weights for CPUs without VNNI (auto: detect the CPU; target ort)",
    )


def _precision_flags(opt: argparse.ArgumentParser) -> None:
    p = opt.add_argument_group("half precision (after the optimization level's passes; --calib-data for the ranges)")
    p.add_argument(
        "--precision",
        choices=("fp16", "bf16"),
        help="convert weights and activations to half precision; nodes that overflow stay fp32",
    )
    p.add_argument(
        "--keep-io-types",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep float32 graph inputs and outputs (--no-keep-io-types converts them too)",
    )
    p.add_argument(
        "--precision-block", action="append", default=[], metavar="OP", help="also keep this op type fp32 (repeatable)"
    )
    p.add_argument(
        "--precision-allow",
        action="append",
        default=[],
        metavar="OP",
        help="convert this op type although the default block list keeps it fp32 (repeatable)",
    )
    p.add_argument(
        "--precision-keep", action="append", default=[], metavar="NAME", help="keep this node fp32 (repeatable)"
    )
    p.add_argument(
        "--precision-kernels",
        choices=("auto", "all"),
        default="auto",
        help="auto: with --target ort keep fp32 the nodes onnxruntime's CPU provider has no half kernel for; "
        "all: convert them anyway (for another execution provider)",
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


def optimize_request(args: argparse.Namespace) -> OptimizeRequest:
    """The flags as an OptimizeRequest, validated (flag errors surface before any loading). Calibration data is read
    once the model is loaded (a folder is matched against its inputs), so the request carries a function for it."""
    if args.threads < 1:
        raise GraphoptError(f"--threads must be at least 1, got {args.threads}")
    quant_config = _quantize_config(args)
    precision = _precision_config(args)
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
        calibration=None
        if (
            quant_config is None
            and not _precision_data(args)
            and not (prune is not None and args.calib_data)
            and not _pass_calibration(args)
        )
        or (args.quantize in ("int4", "int8-dynamic") and not args.calib_data and args.calib_random is None)
        else (lambda model: _calibration(args, model)),
        quantize_options=quant_config,
        prune_channels=None if prune is None else prune["channels"],
        prune_weights=None if prune is None else prune["weights"],
        prune_options=None if prune is None else prune["options"],
        prune_bench=args.prune_bench if prune is not None else 0,
        precision=args.precision,
        precision_options=precision,
        options=options,
    ).validate(spell=lambda name: "--" + name.replace("_", "-"))


def _prune_request(args: argparse.Namespace) -> dict[str, Any] | None:
    """What the pruning flags ask for (None: no pruning); bad values fail before anything is loaded."""
    if args.prune_channels is None and args.prune_weights is None:
        if args.prune_layer or args.prune_protect or args.prune_shape:
            raise GraphoptError(
                "--prune-layer, --prune-protect and --prune-shape need --prune-channels or --prune-weights"
            )
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
    shapes = {}
    for spec in args.prune_shape:
        name, sep, dims = spec.partition("=")
        try:
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            sep = ""
        if not sep or not name or not dims or any(d < 0 for d in shapes.get(name, (-1,))):
            raise GraphoptError(f"--prune-shape {spec!r}: expected NAME=1x3x640x640")
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
            **({"shapes": shapes} if shapes else {}),
        },
    }


INT4_FLAGS = (
    "--int4-method",
    "--block-size",
    "--symmetric",
    "--accuracy-level",
    "--int8-layer",
    "--layer-error-budget",
    "--quantize-embeddings",
)


def _flags_given(args: argparse.Namespace) -> dict[str, bool]:
    """Which of the lossy modes' flags the command line set (to a value other than its default)."""
    return {
        "--calib-data": bool(args.calib_data),
        "--calib-random": args.calib_random is not None,
        "--calib-shape": bool(args.calib_shape),
        "--calib-method": args.calib_method != "percentile",
        "--percentile": args.percentile != 99.999,
        "--calib-cache": args.calib_cache is not None,
        "--exclude": bool(args.exclude),
        "--exclude-op": bool(args.exclude_op),
        "--exclude-regex": bool(args.exclude_regex),
        "--quantize-ops": args.quantize_ops is not None,
        "--max-error": args.max_error is not None,
        "--smooth-alpha": args.smooth_alpha is not None,
        "--smooth-mode": args.smooth_mode != "mul",
        "--layer-choice": args.layer_choice != "auto",
        "--reduce-range": args.reduce_range != "auto",
        "--int4-method": args.int4_method != "rtn",
        "--block-size": args.block_size != 32,
        "--symmetric": args.symmetric,
        "--accuracy-level": args.accuracy_level is not None,
        "--int8-layer": bool(args.int8_layer),
        "--layer-error-budget": args.layer_error_budget is not None,
        "--quantize-embeddings": args.quantize_embeddings is not None,
    }


def _mode_flags(args: argparse.Namespace) -> dict[str, bool]:
    """Reject a flag that the chosen mode (--quantize int8 / int8-dynamic / int4, --precision) would ignore, and bad
    calibration flags (which every mode takes); returns which flags were given."""
    given = _flags_given(args)
    calib = {"--calib-data", "--calib-random", "--calib-shape"}
    int4 = set(INT4_FLAGS)
    allowed = {
        "int8": set(given) - int4,
        "int8-dynamic": calib | {"--exclude", "--exclude-op", "--exclude-regex", "--quantize-ops", "--reduce-range"},
        "int4": calib | int4 | {"--exclude", "--exclude-regex"},
        "precision": calib,
    }
    mode = args.quantize or ("precision" if args.precision else None)
    if mode is None:
        return given
    if args.calib_data and args.calib_random is not None:
        raise GraphoptError("give either --calib-data DIR or --calib-random N, not both")
    if args.calib_random is not None and args.calib_random < 1:
        raise GraphoptError(f"--calib-random must be at least 1, got {args.calib_random}")
    if args.calib_shape and args.calib_random is None:
        raise GraphoptError("--calib-shape needs --calib-random (with --calib-data the shapes are the data's)")
    if args.calib_data:
        from graphopt.quantize.calibration import npz_files

        npz_files(args.calib_data)  # a file, a missing folder or one without .npz files: now, not after the passes
    for flag, on in given.items():
        if on and flag not in allowed[mode]:
            what = f"--precision {args.precision}" if mode == "precision" else f"--quantize {mode}"
            raise GraphoptError(f"{flag} does not apply to {what}")
    return given


_CALIB_FLAG_USERS = {  # what each calibration flag serves, for its error without --quantize
    "--calib-data": "--quantize (int8, int8-dynamic, int4), --precision, --prune-channels or the quantize-int8 pass",
    "--calib-random": "--quantize (int8, int8-dynamic, int4), --precision or the quantize-int8 pass",
    "--calib-shape": "--calib-random with --quantize or --precision",
    "--quantize-ops": "--quantize int8 or int8-dynamic",
}


def _pass_calibration(args: argparse.Namespace) -> bool:
    """``--passes`` runs the quantize-int8 pass and the command line gives it data (``--calib-data`` or
    ``--calib-random``, nothing else of the quantizer's flags): the pass reads it as optimize(calibration=...) would."""
    names = {p.split("{")[0].strip() for p in re.split(r",(?![^{]*\})", args.passes or "")}
    return "quantize-int8" in names and bool(args.calib_data or args.calib_random is not None)


def _quantize_config(args: argparse.Namespace) -> Any:
    """The QuantizeConfig the flags ask for (None without --quantize); flag errors surface before any loading."""
    if args.precision and args.quantize:
        raise GraphoptError("give either --precision or --quantize, not both")
    given = _mode_flags(args)
    calib_flags = [
        f
        for f, v in (
            ("--calib-data", args.calib_data),
            ("--calib-random", args.calib_random),
            ("--max-error", args.max_error),
            ("--quantize-ops", args.quantize_ops),
            ("--calib-shape", args.calib_shape or None),
            ("--smooth-alpha", args.smooth_alpha),
        )
        if v is not None
    ]
    if not args.quantize:
        probe_data = args.prune_channels is not None and calib_flags == ["--calib-data"]  # pruning's probe sizes
        if (
            calib_flags
            and not probe_data
            and not _pass_calibration(args)
            and not (args.precision and calib_flags[0] in ("--calib-data", "--calib-random"))
        ):
            raise GraphoptError(f"{calib_flags[0]} needs {_CALIB_FLAG_USERS.get(calib_flags[0], '--quantize int8')}")
        int4_only = [f for f in INT4_FLAGS if given[f]]
        if int4_only:
            raise GraphoptError(f"{int4_only[0]} needs --quantize int4")
        return None
    if args.quantize == "int4":
        return _int4_config(args)
    from graphopt.quantize import QuantizeConfig  # here, not at the top: it brings in numba for calibration

    if not args.calib_data and args.calib_random is None and args.quantize == "int8":
        raise GraphoptError(
            "--quantize needs calibration data: --calib-data DIR (or --calib-random N for a smoke test)"
        )
    if args.max_error is not None and not args.max_error > 0:
        raise GraphoptError(f"--max-error must be positive, got {args.max_error}")
    if not 0 < args.percentile <= 100:
        raise GraphoptError(f"--percentile must be in (0, 100], got {args.percentile}")
    smooth_alpha = _smooth_alpha(args.smooth_alpha)
    for rx in args.exclude_regex:
        try:
            re.compile(rx)
        except re.error as exc:
            raise GraphoptError(f"--exclude-regex {rx!r}: {exc}") from None
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
        smooth_alpha=smooth_alpha,
        smooth_mode=args.smooth_mode,
        choice=args.layer_choice,
    )


def _calib_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    from graphopt.tools.runtime import parse_shape

    try:
        return dict(parse_shape(s) for s in specs)
    except GraphoptError as exc:
        raise GraphoptError(str(exc).replace("--shape", "--calib-shape", 1)) from None


def _int4_config(args: argparse.Namespace) -> Any:
    """The Int4Config the flags ask for; calibration data is optional (rtn) or needed (gptq)."""
    from graphopt.quantize.int4 import Int4Config

    if args.int4_method == "gptq" and not args.calib_data and args.calib_random is None:
        raise GraphoptError("--int4-method gptq needs calibration data: --calib-data DIR (or --calib-random N)")
    cfg = Int4Config(
        method=args.int4_method,
        block_size=args.block_size,
        symmetric=args.symmetric,
        accuracy_level=args.accuracy_level,
        exclude=list(args.exclude),
        exclude_regex=list(args.exclude_regex),
        bits8=list(args.int8_layer),
        layer_error_budget=args.layer_error_budget,
        embeddings=args.quantize_embeddings,
    )
    cfg.check()
    return cfg


def _precision_data(args: argparse.Namespace) -> bool:
    return bool(args.precision) and (bool(args.calib_data) or args.calib_random is not None)


def _precision_config(args: argparse.Namespace) -> Any:
    """The PrecisionConfig the flags ask for (None without --precision); flag errors surface before any loading."""
    flags = [
        f
        for f, v in (
            ("--precision-block", args.precision_block),
            ("--precision-allow", args.precision_allow),
            ("--precision-keep", args.precision_keep),
            ("--no-keep-io-types", not args.keep_io_types),
            ("--precision-kernels", args.precision_kernels != "auto"),
        )
        if v
    ]
    if not args.precision:
        if flags:
            raise GraphoptError(f"{flags[0]} needs --precision fp16 or bf16")
        return None
    from graphopt.quantize.precision import PrecisionConfig

    return PrecisionConfig(
        precision=args.precision,
        keep_io_types=args.keep_io_types,
        block_ops=list(args.precision_block),
        allow_ops=list(args.precision_allow),
        block_nodes=list(args.precision_keep),
        kernels=args.precision_kernels,
        threads=args.threads,
    )


def _smooth_alpha(text: str | None) -> float | None:
    """``--smooth-alpha``: a number in [0, 1], or ``off``; unset gives the default."""
    from graphopt.quantize.driver import SMOOTH_ALPHA

    if text is None:
        return SMOOTH_ALPHA
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        alpha = float(text)
    except ValueError:
        alpha = float("nan")
    if not 0.0 <= alpha <= 1.0:
        raise GraphoptError(f"--smooth-alpha must be a number in [0, 1] or 'off', got {text!r}")
    return alpha


def _calibration(args: argparse.Namespace, model: Model) -> tuple[list[dict[str, Any]], list[str]]:
    """The calibration feeds the flags name (a folder matched against the model's inputs, or random samples) and
    where each came from."""
    import warnings

    from graphopt.quantize import calibration

    if args.calib_data:
        return dir_calibration(args.calib_data)(model)  # the same reader as optimize(calibration=DIR)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feeds = calibration.random_feeds(model, args.calib_random, shapes=_calib_shapes(args.calib_shape))
    for w in caught:
        if not args.quiet:
            print(f"graphopt: warning: {w.message}", file=sys.stderr)
    return feeds, [f"random calibration sample #{i}" for i in range(len(feeds))]
