"""The ``graphopt`` command: optimize, inspect, bench, diff, report, passes. :mod:`~graphopt.cli.parser` reads the
command line, :mod:`~graphopt.cli.commands` runs it, :mod:`~graphopt.cli.render` prints it.

User errors (bad files, bad options) print one line ``graphopt: error: ...`` on stderr and exit with code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from graphopt.cli.commands import cmd_diff, cmd_inspect, cmd_optimize, cmd_passes, cmd_report, load_checked
from graphopt.cli.parser import EXIT_USER_ERROR, _check_usage, build_parser
from graphopt.errors import GraphoptError, VerificationError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `graphopt`: the help, like pip
        parser.print_help()
        return 0
    _check_usage(parser, args)
    try:
        if args.command == "report":
            return cmd_report(args)
        if args.command == "optimize":
            return cmd_optimize(args)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "bench":
            from graphopt.cli.render import _stdout
            from graphopt.tools import bench

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


__all__ = ["EXIT_BROKEN_PIPE", "EXIT_USER_ERROR", "build_parser", "load_checked", "main"]
