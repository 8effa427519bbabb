"""Fuzz graphopt for longer than CI does: mutants of the fixtures through optimize -O2/-O3, --quantize int8 and the
Python API (the harness is graphopt.testing.fuzz; tests/test_fuzz.py runs a short fixed-seed slice of it).

    python benchmarks/fuzz.py --count 500 --seed 1 --seconds 1200 --jobs 1 --keep /tmp/fuzz-failures
    python benchmarks/fuzz.py --seed 1 --index 37 --keep /tmp/fuzz-repro     # rerun one mutant and keep its folder

Prints a table of verdicts per command and the deduplicated failure signatures (exception type and innermost
graphopt frame), each with one reproducer; failing mutants are copied to --keep (default ./fuzz-failures).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from graphopt.testing.fuzz import Limits, Result, format_failure, reproduce_command, run_campaign

AREAS = [
    ("I/O", ("onnx_io.py", "mapped.py", "tensors.py", "read-outside", "half-written", "input-modified", "stray-file")),
    ("fold/shape", ("fold_constants", "shape_inference", "numpy_eval", "memory")),
    ("engine/winograd/dims", ("patterns.py", "winograd", "dims.py", "pass_manager.py", "rewrite")),
    ("calibration/quantize", ("calibration.py", "quantize", "qdq", "bench.py", "[quant]")),
]


def area(signature: str) -> str:
    for name, keys in AREAS:
        if any(k in signature for k in keys):
            return name
    return "other"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=100, help="mutants to run (indices start..start+count-1)")
    p.add_argument("--start", type=int, default=0, help="first mutant index")
    p.add_argument("--index", type=int, action="append", help="run only this mutant (repeatable)")
    p.add_argument("--seconds", type=float, default=None, help="stop starting new mutants after this many seconds")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=120.0, help="per child process (default 120)")
    p.add_argument("--rss-mb", type=int, default=1024, help="peak RSS bound per child (default 1024)")
    p.add_argument("--as-mb", type=int, default=4096, help="address-space limit per child (default 4096)")
    p.add_argument("--commands", default="O2,O3,quant,api")
    p.add_argument("--keep", type=Path, default=Path("fuzz-failures"), help="folder for failing mutants")
    p.add_argument("--keep-all", action="store_true", help="keep every mutant's folder, not only failing ones")
    p.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = p.parse_args(argv)
    # SIGTERM/SIGHUP end the run like Ctrl-C: the running mutants finish and their temporary folders are removed
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(128 + 15))

    limits = Limits(timeout=args.timeout, address_space=args.as_mb << 20, peak_rss=args.rss_mb << 20)
    commands = args.commands.split(",")
    indices = args.index or list(range(args.start, args.start + args.count))
    verbose = args.verbose or bool(args.index)
    args.keep.mkdir(parents=True, exist_ok=True)
    if args.keep_all or args.index:
        (args.keep / ".keep-all").touch()
    start = time.monotonic()
    count = 0

    def show(r: Result) -> None:
        nonlocal count
        count += 1
        if verbose or r.failures:
            print(f"[{count}] {r.mutant.label[:160]}  (reference: {r.reference})", flush=True)
            for run in r.runs:
                if verbose or run.failed():
                    mark = "FAIL" if run.failed() else "    "
                    print(f"   {mark} {run.command:5} {run.verdict:16} {run.seconds:5.1f}s "
                          f"{run.peak_rss >> 20:5d}MB {run.first_line[:140]}", flush=True)  # fmt: skip

    results = run_campaign(
        args.seed, indices, jobs=args.jobs, seconds=args.seconds, limits=limits, keep=args.keep, commands=commands,
        on_result=show,
    )  # fmt: skip
    (args.keep / ".keep-all").unlink(missing_ok=True)
    elapsed = time.monotonic() - start

    table: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        for run in r.runs:
            table[run.verdict][run.command] += 1
    print(f"\n{len(results)} mutants (seed {args.seed}) in {elapsed:.0f} s, {args.jobs} job(s)")
    print(f"{'verdict':18}" + "".join(f"{c:>7}" for c in commands))
    for verdict in sorted(table, key=lambda v: (v not in ("ok", "clean-error"), v)):
        print(f"{verdict:18}" + "".join(f"{table[verdict][c]:7d}" for c in commands))

    signatures: dict[str, list[tuple[Result, object]]] = defaultdict(list)
    for r in results:
        for run in r.failures:
            signatures[run.signature()].append((r, run))
    print(f"\n{len(signatures)} distinct failure signature(s):")
    for sig, hits in sorted(signatures.items(), key=lambda kv: -len(kv[1])):
        r, run = hits[0]
        print(f"- [{area(sig + ' [' + run.command + ']')}] {sig}  x{len(hits)}")
        print(f"    e.g. {format_failure(r, run)[:300]}")
        print(f"    repro: {reproduce_command(r)}")
    return 1 if signatures else 0


if __name__ == "__main__":
    sys.exit(main())
