"""The real reason a file cannot be used, for messages that would otherwise lead with a symptom (a checker complaint
about a file that is not ONNX at all, a missing 'folder' that is a file)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from graphopt.errors import GraphoptError


def checker_rejection(path: Path, rejected: GraphoptError) -> GraphoptError:
    """What to report when the ONNX checker rejected ``path``: if graphopt cannot read the file either (empty, not
    ONNX, truncated, external data outside the model's folder), that reason, which ``--no-check`` would not get past;
    otherwise the checker's own message."""
    from graphopt.core.onnx_io import load

    try:
        load(path)
    except GraphoptError as e:
        text = str(e)
        return type(e)(text if text.startswith(str(path)) else f"{path}: {text}")
    return rejected


def output_folder_problem(out: Path, what: str = "output") -> str | None:
    """Why ``out`` cannot be created in its folder (None: it can): a component that is a file, a folder that does not
    exist, or a folder graphopt cannot create files in (read-only, immutable, no permission: found by creating and
    removing a temporary file there, since permission bits say nothing to root or on a read-only mount). Called
    before any work, so that a run that cannot write its result fails in a second, not after the optimization."""
    try:
        return _output_folder_problem(out, what)
    except (OSError, ValueError) as e:  # a name too long for the file system, a NUL byte...
        return f"{out}: cannot write the {what} there ({getattr(e, 'strerror', None) or e})"


def _output_folder_problem(out: Path, what: str) -> str | None:
    import os
    import tempfile

    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        for part in (folder, *folder.parents):
            if part.exists() and not part.is_dir():
                return f"{out}: {part} is a file, not a folder"
        return f"{out}: {what} folder {folder} does not exist"
    with _signals_held():  # a SIGTERM between creating the probe and removing it must not leave it behind
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=folder)
        except (OSError, ValueError) as e:
            return f"{out}: cannot write the {what} in {folder} ({getattr(e, 'strerror', None) or e})"
        os.close(fd)
        try:
            os.unlink(probe)
        except OSError as e:  # an append-only folder (chattr +a) takes new files but lets none be removed or replaced
            return (
                f"{out}: cannot write the {what} in {folder} (files there cannot be removed or replaced: "
                f"{e.strerror or e})"
            )
    return None


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM, SIGHUP and SIGINT held back (blocked, delivered when the block ends) where the platform can."""
    import signal

    held = {getattr(signal, n) for n in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, n)}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
