"""What the command line prints without rich: warnings in graphopt's one-line format, the warnings a stage's loggers
emit, and a silent stand-in for the progress display. ``--json`` and ``--quiet`` runs print nothing else, so they never
import rich (:mod:`~graphopt.cli.render` does, for tables and progress bars)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _jsonable(x: object) -> object:
    return x if isinstance(x, str | int | float | bool | type(None)) else repr(x)


class Silent:
    """The progress display of a run that shows none (``--json``, ``--quiet``, or stderr not a terminal): the calls
    rich's ``Progress`` gets, doing nothing."""

    def __enter__(self) -> Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, **fields: Any) -> int:
        return 0

    def update(self, task: int, **fields: Any) -> None:
        return None

    def remove_task(self, task: int) -> None:
        return None

    def refresh(self) -> None:
        return None


@contextmanager
def _step(progress: Any, text: str) -> Iterator[None]:
    task = progress.add_task(text, total=None)
    try:
        yield
    finally:
        progress.remove_task(task)


def _quantize_progress(progress: Any) -> Any:
    """A quantization progress hook that shows each stage (calibration, sensitivity...) as a task."""
    tasks: dict[str, Any] = {}

    def on_progress(stage: str, done: int, total: int | None) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)
        if total is not None and done >= total:
            progress.remove_task(tasks.pop(stage))

    return on_progress


class _Recorded(list):
    """A list that calls ``on_append(item)`` after each append: the winograd pass appends each layer's decision to
    ``ctx.options["winograd_decisions"]`` as it is made, which drives the progress bar without a hook in the pass."""

    def __init__(self, on_append: Any) -> None:
        super().__init__()
        self.on_append = on_append

    def append(self, item: Any) -> None:
        super().append(item)
        self.on_append(item)


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
