"""Models bigger than memory: graphopt ``-O2`` against onnxsim and onnxslim on a generated multi-GB model.

    flock /work/wt/bigmem.lock python benchmarks/bigmodel.py [--dim 8192] [--layers 12] [--transposed 6]
                                                             [--dir /work/big/big] [--tools graphopt,onnxsim,onnxslim]
                                                             [--rounds 1] [--out benchmarks/RESULTS-bigmodel.md]
    flock /work/wt/bigmem.lock python benchmarks/bigmodel.py --huge      # the 26 GB model, graphopt only
    flock /work/wt/bigmem.lock python benchmarks/bigmodel.py --huge --graphopt-args "--quantize int4"
    ... [--before COMMIT]   # also graphopt as of COMMIT (git archive), as graphopt-before

The model is a chain of ``--layers`` MatMuls with ``dim x dim`` fp32 weights (8192: 256 MiB each, 3.2 GB for 12) in
external data; ``--transposed`` of them read their weight through a Transpose that fold-constants folds. It is
generated straight into its external data file, one block of rows of random numbers at a time: the whole model is
never in memory. ``--huge`` makes it 97 layers, 48 through a Transpose (26.0 GB of weights; about 52 GB of disk
for the model and graphopt's output, which are deleted at the end unless ``--keep``).

Each tool runs in its own process (interleaved over ``--rounds``, after an ``os.sync()`` so that no run pays for
the previous one's writes), with its wall time and peak resident memory (GNU time's ``%M``: the high-water mark of
its RSS, mapped file pages included). The outputs of every optimized model are compared with the input model's
under onnxruntime (one random input; skipped with ``--huge`` or ``--no-check``). The table gives each tool's time
and peak RSS, and their ratios to the weights' size and to graphopt.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DEFAULT_DIR = Path("/work/big/big")
GIB = 1 << 30


# --------------------------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------------------------
def generate(path: Path, dim: int, layers: int, transposed: int, seed: int = 0, block_rows: int = 512) -> int:
    """Write the model to ``path`` with its weights in ``<name>.data`` beside it; return the weights' bytes.

    Layer ``i`` is ``h = MatMul(h, W_i)``, or ``MatMul(h, Transpose(W_i))`` for ``transposed`` of them spread over
    the chain. Weights are uniform in +-sqrt(3/dim) (unit variance through the chain), written block by block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data_name = path.name + ".data"
    rng = np.random.default_rng(seed)
    scale = np.float32(np.sqrt(3.0 / dim))
    every = layers / transposed if transposed else 0
    via_transpose = {int(i * every) for i in range(transposed)} if transposed else set()
    nodes, inits = [], []
    offset = 0
    weight_bytes = dim * dim * 4
    with open(path.parent / data_name, "wb") as f:
        h = "x"
        for i in range(layers):
            name = f"w{i}"
            for r in range(0, dim, block_rows):
                rows = min(block_rows, dim - r)
                block = rng.random((rows, dim), dtype=np.float32)
                block *= 2 * scale
                block -= scale
                f.write(block.tobytes())
            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[dim, dim])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(weight_bytes))):
                t.external_data.add(key=k, value=v)
            inits.append(t)
            offset += weight_bytes
            w = name
            if i in via_transpose:
                w = f"{name}_t"
                nodes.append(helper.make_node("Transpose", [name], [w], name=f"transpose{i}", perm=[1, 0]))
            out = "y" if i == layers - 1 else f"h{i}"
            nodes.append(helper.make_node("MatMul", [h, w], [out], name=f"matmul{i}"))
            h = out
    graph = helper.make_graph(
        nodes,
        "bigmodel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.write_bytes(model.SerializeToString())
    return weight_bytes * layers


# --------------------------------------------------------------------------------------------------------------------
# running the tools
# --------------------------------------------------------------------------------------------------------------------
def tool_command(tool: str, src: Path, dst: Path, extra: list[str] | None = None) -> list[str]:
    if tool in ("graphopt", "graphopt-before"):
        return [
            sys.executable,
            "-m",
            "graphopt",
            "optimize",
            str(src),
            "-o",
            str(dst),
            "-O2",
            "--quiet",
            *(extra or []),
        ]
    if tool == "onnxsim":
        return ["onnxsim", str(src), str(dst), "--save-as-external-data", "--no-certify"]
    if tool == "onnxslim":
        return ["onnxslim", str(src), str(dst), "--save-as-external-data"]
    raise ValueError(tool)


TIME = Path("/usr/bin/time")


def before_tree(commit: str, folder: Path) -> Path:
    """An export of graphopt at ``commit`` (``git archive``, with passes/ and kernels/ placed where the installed
    package has them) to run as ``graphopt-before`` through PYTHONPATH."""
    import tarfile
    import tempfile

    root = HERE.parent
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with tempfile.TemporaryFile() as tar:
        subprocess.run(["git", "-C", str(root), "archive", commit], stdout=tar, check=True)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as archive:
            archive.extractall(folder, filter="data")
    for sub in ("passes", "kernels"):
        shutil.move(folder / sub, folder / "graphopt" / sub)
    for built in (root / "kernels").glob("*.so"):  # the compiled C transforms, as built for this checkout
        shutil.copy(built, folder / "graphopt" / "kernels" / built.name)
    return folder


def run_tool(
    tool: str, src: Path, dst: Path, timeout: float, env: dict[str, str] | None = None, extra: list[str] | None = None
) -> dict:
    """Run one tool in its own process; its wall time and peak RSS (bytes).

    The peak is GNU time's ``%M`` when /usr/bin/time exists, else the child's own rusage: a child started straight
    from this process could inherit this process's high-water mark at exec (Linux carries it over), a child of the
    small ``time`` process cannot."""
    remove_model(dst)
    cmd = tool_command(tool, src, dst, extra)
    report = dst.parent / f".{tool}.time"
    if TIME.exists():
        cmd = [str(TIME), "-o", str(report), "-f", "%M", *cmd]
    os.sync()  # the previous run's writes do not slow this one down
    t0 = time.perf_counter()
    log = dst.parent / f".{tool}.stderr"
    with open(log, "wb") as err_file:  # a file, not a pipe: a chatty tool must not block on a full pipe
        proc = subprocess.Popen(  # in the model's folder: ``python -m`` would import graphopt from the cwd first
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=dst.parent,
        )
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            os.killpg(proc.pid, 9)  # the tool under ``time`` too
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = log.read_text(errors="replace")
    log.unlink()
    ok = proc.returncode == 0 and dst.is_file()
    peak_kib = usage.ru_maxrss  # KiB on Linux
    if report.exists():
        lines = report.read_text().split()
        peak_kib = int(lines[-1]) if lines and lines[-1].isdigit() else peak_kib
        report.unlink()
    return {
        "tool": tool,
        "ok": ok,
        "seconds": seconds,
        "peak_rss": peak_kib * 1024,
        "error": "" if ok else (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200],
        "out_bytes": model_bytes(dst) if ok else 0,
    }


def model_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def remove_model(path: Path) -> None:
    """The model file and every external data file a tool wrote beside it (all named after the model file here)."""
    for p in path.parent.glob(path.name + "*"):
        if p.is_file():
            p.unlink()
    for p in path.parent.glob("*.data"):  # onnxsim/onnxslim name their data after the output's stem
        if p.name.startswith(path.stem) and p.is_file():
            p.unlink()


def check_outputs(src: Path, outs: list[Path], dim: int) -> dict[str, float]:
    """Max abs difference of each optimized model's output against the input model's, under onnxruntime, on one
    random batch (each model in its own session, one at a time)."""
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((2, dim), dtype=np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2

    def run(p: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        y = sess.run(None, {"x": x})[0]
        del sess
        return y

    ref = run(src)
    scale = float(np.abs(ref).max()) or 1.0
    return {str(p): float(np.abs(run(p) - ref).max()) / scale for p in outs}


def spot_check(src: Path, dst: Path, rows: int = 64) -> int:
    """Compare a random block of ``rows`` rows of every input weight with graphopt's output (``wI`` as it was, or
    ``wI_t_folded``: its transpose, whose matching block is a block of columns) through memory maps: cheap on the
    26 GB model, where onnxruntime is not run. Return the number of weights checked; raise on a difference."""
    import onnx

    def where(path: Path) -> dict[str, tuple[Path, int, tuple[int, ...]]]:
        out = {}
        for t in onnx.load(str(path), load_external_data=False).graph.initializer:
            info = {e.key: e.value for e in t.external_data}
            out[t.name] = (path.parent / info["location"], int(info.get("offset", 0)), tuple(t.dims))
        return out

    def block(spec: tuple[Path, int, tuple[int, ...]], rows: slice, cols: slice) -> np.ndarray:
        """A copy of one block, through a map that is closed at once (its pages leave the resident set)."""
        location, offset, dims = spec
        m = np.memmap(location, np.float32, "r", offset, dims)
        out = np.array(m[rows, cols])
        del m
        return out

    given, made = where(src), where(dst)
    rng = np.random.default_rng(0)
    checked = 0
    for name, spec in made.items():
        base = name.removesuffix("_t_folded")
        if base not in given:
            continue
        a = int(rng.integers(0, max(1, spec[2][0] - rows)))
        want = block(given[base], slice(a, a + rows), slice(None))
        if name.endswith("_t_folded"):
            got = block(spec, slice(None), slice(a, a + rows)).T
        else:
            got = block(spec, slice(a, a + rows), slice(None))
        if not np.array_equal(got, want):
            raise AssertionError(f"{dst}: rows {a}..{a + rows} of {base} differ in {name}")
        checked += 1
    return checked


# --------------------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--transposed", type=int, default=6)
    ap.add_argument("--huge", action="store_true", help="97 layers of 8192x8192 (26.0 GB), graphopt only")
    ap.add_argument(
        "--graphopt-args", default="", help="more options for graphopt's run, e.g. '--quantize int4' (one string)"
    )
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    ap.add_argument("--tools", default="graphopt,onnxsim,onnxslim")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--no-check", action="store_true", help="do not compare outputs under onnxruntime")
    ap.add_argument(
        "--before", metavar="COMMIT", help="also run graphopt as of this commit (git archive) as graphopt-before"
    )
    ap.add_argument("--keep", action="store_true", help="keep the generated and optimized models")
    ap.add_argument("--out", type=Path, default=None, help="append the table to this markdown file")
    ap.add_argument("--json", type=Path, default=None, help="write the raw results as JSON")
    args = ap.parse_args(argv)
    if args.huge:
        args.layers, args.transposed = 97, 48
        if args.tools == ap.get_default("tools"):
            args.tools = "graphopt"
        args.no_check = True
    tools = [t for t in args.tools.split(",") if t]
    envs: dict[str, dict[str, str]] = {}
    if args.before:
        tools.insert(1 if tools[:1] == ["graphopt"] else 0, "graphopt-before")
        envs["graphopt-before"] = {"PYTHONPATH": str(before_tree(args.before, args.dir / "before"))}

    args.dir = args.dir.resolve()
    work = args.dir / ("huge" if args.huge else f"d{args.dim}x{args.layers}")
    src = work / "model.onnx"
    need = args.dim * args.dim * 4 * args.layers
    if not (src.is_file() and model_bytes(src) >= need):
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        weights = generate(src, args.dim, args.layers, args.transposed)
        print(f"generated {src} ({weights / 1e9:.2f} GB of weights) in {time.perf_counter() - t0:.1f} s", flush=True)
    weights = need
    results: dict[str, list[dict]] = {t: [] for t in tools}
    try:
        for r in range(args.rounds):
            for tool in tools:
                dst = work / f"{tool}.onnx"
                extra = shlex.split(args.graphopt_args) if tool == "graphopt" else None
                res = run_tool(tool, src, dst, args.timeout, envs.get(tool), extra)
                results[tool].append(res)
                state = "ok" if res["ok"] else f"FAILED: {res['error']}"
                rss = res["peak_rss"] / 1e9
                print(f"round {r + 1} {tool:9s} {res['seconds']:7.1f} s  peak RSS {rss:6.2f} GB  {state}", flush=True)
                if r + 1 < args.rounds or (args.no_check and not args.keep and tool != "graphopt"):
                    remove_model(dst)
        errors: dict[str, float] = {}
        lossy = "--quantize" in args.graphopt_args or "--precision" in args.graphopt_args
        if lossy:
            print("spot check skipped: graphopt's weights are quantized, not copied (--graphopt-args)", flush=True)
        elif results.get("graphopt") and results["graphopt"][-1]["ok"] and (work / "graphopt.onnx").exists():
            print(
                f"spot check: {spot_check(src, work / 'graphopt.onnx')} weights of graphopt's output match", flush=True
            )
        if not args.no_check:
            outs = [work / f"{t}.onnx" for t in tools if results[t] and results[t][-1]["ok"]]
            errors = check_outputs(src, outs, args.dim)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(args.dir / "before", ignore_errors=True)

    table = render(results, weights, errors, args)
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write(table + "\n")
    if args.json:
        args.json.write_text(json.dumps({"weights": weights, "results": results, "errors": errors}, indent=2))
    return 0 if all(r["ok"] for rs in results.values() for r in rs) else 1


def render(results: dict[str, list[dict]], weights: int, errors: dict[str, float], args: argparse.Namespace) -> str:
    ok = {t: [r for r in rs if r["ok"]] for t, rs in results.items()}
    base = ok.get("graphopt") or []
    base_s = statistics.median(r["seconds"] for r in base) if base else None
    lines = [
        f"{args.layers} MatMuls of {args.dim}x{args.dim} fp32 ({args.transposed} through a foldable Transpose), "
        f"{weights / 1e9:.2f} GB of weights in external data; median of {args.rounds} round(s)",
        "",
        "| tool | time (s) | peak RSS (GB) | RSS / weights | time / graphopt | output file (GB) | max rel. error |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for tool, rs in results.items():
        good = ok[tool]
        if not good:
            lines.append(f"| {tool} | failed: {rs[-1]['error'] if rs else '-'} | | | | | |")
            continue
        s = statistics.median(r["seconds"] for r in good)
        rss = statistics.median(r["peak_rss"] for r in good)
        err = errors.get(str(args.dir / ("huge" if args.huge else f"d{args.dim}x{args.layers}") / f"{tool}.onnx"))
        lines.append(
            f"| {tool} | {s:.1f} | {rss / 1e9:.2f} | {rss / weights:.2f}x | "
            f"{s / base_s:.2f}x | {good[-1]['out_bytes'] / 1e9:.2f} | {'-' if err is None else f'{err:.1e}'} |"
            if base_s
            else f"| {tool} | {s:.1f} | {rss / 1e9:.2f} | {rss / weights:.2f}x | - | "
            f"{good[-1]['out_bytes'] / 1e9:.2f} | {'-' if err is None else f'{err:.1e}'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
