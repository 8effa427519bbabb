"""Round-trip benchmarks for graphopt's IR: speed against plain onnx, peak memory on a >2 GB model, linearity.

    python benchmarks/roundtrip.py [--repeat 5] [--skip-2gb] [--out benchmarks/RESULTS-roundtrip.md]

1. A 400 MB model (inline weights): graphopt.load + graphopt.save vs onnx.load + onnx.save, interleaved, medians.
2. A 2.1 GB model with external data: load + save in a child process; its peak RSS against the weights' size.
3. Synthetic chains of 12.5k..100k nodes: load + save time per node (linear time means a flat column).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from rich.console import Console
from rich.table import Table

import graphopt

OPSET = [helper.make_opsetid("", 17)]


def weights_model(n_tensors: int, elems: int) -> onnx.ModelProto:
    """n_tensors float32 weights of ``elems`` each, summed into the output (so every tensor is live)."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []
    prev = "x"
    for i in range(n_tensors):
        inits.append(onnx.numpy_helper.from_array(rng.standard_normal(elems, dtype=np.float32), f"w{i}"))
        nodes.append(helper.make_node("ReduceSum", [f"w{i}"], [f"s{i}"], keepdims=0, name=f"sum{i}"))
        nodes.append(helper.make_node("Add", [prev, f"s{i}"], [f"a{i}"], name=f"add{i}"))
        prev = f"a{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    graph = helper.make_graph(
        nodes,
        "weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        inits,
    )
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def chain_model(n_nodes: int) -> onnx.ModelProto:
    """A chain of n_nodes elementwise ops with small attributes, like the body of an exported network."""
    nodes = []
    prev = "x"
    for i in range(n_nodes):
        op = ("Relu", "Neg", "Abs", "Sigmoid")[i % 4]
        nodes.append(helper.make_node(op, [prev], [f"v{i}"], name=f"n{i}"))
        prev = f"v{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["batch", 8])],
    )
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def onnx_roundtrip(src: str, dst: str) -> None:
    onnx.save(onnx.load(src), dst)


def graphopt_roundtrip(src: str, dst: str) -> None:
    graphopt.save(graphopt.load(src), dst)


def bench_speed(folder: Path, repeat: int) -> dict:
    src = folder / "w400.onnx"
    onnx.save(weights_model(100, 1_000_000), str(src))  # 100 x 4 MB = 400 MB
    size = src.stat().st_size
    a, b = [], []
    for _ in range(repeat):  # interleave A/B so machine noise hits both alike
        a.append(timed(lambda: onnx_roundtrip(str(src), str(folder / "a.onnx"))))
        b.append(timed(lambda: graphopt_roundtrip(str(src), str(folder / "b.onnx"))))
    assert onnx.load(str(folder / "b.onnx")) == onnx.load(str(src))
    return {"bytes": size, "onnx": statistics.median(a), "graphopt": statistics.median(b)}


# VmHWM (peak resident set of this process image) rather than ru_maxrss, which Linux carries over from the parent
# across exec and would report the benchmark's own peak.
PEAK = "int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) * 1024"
CHILD = f"""
import sys, graphopt
m = graphopt.load(sys.argv[1]); graphopt.save(m, sys.argv[2])
print({PEAK})
"""
BASELINE_CHILD = f"import graphopt; print({PEAK})"


def bench_memory(folder: Path) -> dict:
    """Peak RSS of load + save of a 2.1 GB external-data model, in a fresh process."""
    src_dir = folder / "big"
    src_dir.mkdir()
    n_tensors, elems = 7, 300 * 1024 * 1024 // 4
    inits, nodes = [], []
    offset = 0
    with open(src_dir / "weights.bin", "wb") as f:
        for i in range(n_tensors):
            arr = np.full(elems, i, dtype=np.float32)
            f.write(arr.tobytes())
            t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[elems])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", "weights.bin"), ("offset", str(offset)), ("length", str(arr.nbytes))):
                t.external_data.add(key=k, value=v)
            inits.append(t)
            offset += arr.nbytes
            nodes.append(helper.make_node("ReduceSum", [f"w{i}"], [f"s{i}"], keepdims=0))
    del arr
    graph = helper.make_graph(
        nodes,
        "big",
        [],
        [helper.make_tensor_value_info(f"s{i}", TensorProto.FLOAT, []) for i in range(n_tensors)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=OPSET, ir_version=8), str(src_dir / "model.onnx"))
    out_dir = folder / "big_out"
    out_dir.mkdir()
    t0 = time.perf_counter()
    peak = int(
        subprocess.check_output(
            [sys.executable, "-c", CHILD, str(src_dir / "model.onnx"), str(out_dir / "model.onnx")]
        ).strip()
    )
    seconds = time.perf_counter() - t0
    base = int(subprocess.check_output([sys.executable, "-c", BASELINE_CHILD]).strip())
    return {"weights": offset, "peak_rss": peak, "import_rss": base, "seconds": seconds}


def bench_linear(folder: Path, repeat: int) -> list[dict]:
    rows = []
    for n in (12_500, 25_000, 50_000, 100_000):
        src = folder / f"chain{n}.onnx"
        onnx.save(chain_model(n), str(src))
        times, ref = [], []
        for _ in range(repeat):  # interleaved
            times.append(timed(lambda s=str(src): graphopt_roundtrip(s, str(folder / "c.onnx"))))
            ref.append(timed(lambda s=str(src): onnx_roundtrip(s, str(folder / "c.onnx"))))
        rows.append({"nodes": n, "graphopt": statistics.median(times), "onnx": statistics.median(ref)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-2gb", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-roundtrip.md")))
    args = ap.parse_args()
    console = Console()
    lines = [
        "# Round-trip benchmarks",
        "",
        f"`python benchmarks/roundtrip.py --repeat {args.repeat}` on "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, onnx {onnx.__version__}. Medians.",
        "",
    ]
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        folder = Path(tmp)
        s = bench_speed(folder, args.repeat)
        ratio = s["graphopt"] / s["onnx"]
        t = Table(title="load + save of a 400 MB model (inline weights)")
        for c in ("bytes", "onnx.load+save s", "graphopt.load+save s", "ratio (goal <= 1.5)"):
            t.add_column(c, justify="right")
        t.add_row(f"{s['bytes']:,}", f"{s['onnx']:.3f}", f"{s['graphopt']:.3f}", f"{ratio:.2f}x")
        console.print(t)
        lines += [
            "## 400 MB model: load + save",
            "",
            "| bytes | onnx.load+save (s) | graphopt.load+save (s) | ratio |",
            "|---:|---:|---:|---:|",
            f"| {s['bytes']:,} | {s['onnx']:.3f} | {s['graphopt']:.3f} | {ratio:.2f}x |",
            "",
        ]

        rows = bench_linear(folder, args.repeat)
        t = Table(title="synthetic chains: load + save")
        for c in ("nodes", "graphopt s", "graphopt us/node", "onnx s"):
            t.add_column(c, justify="right")
        lines += [
            "## Linear time: chains of N nodes",
            "",
            "| nodes | graphopt (s) | graphopt (us/node) | onnx (s) |",
            "|---:|---:|---:|---:|",
        ]
        for r in rows:
            per = r["graphopt"] / r["nodes"] * 1e6
            t.add_row(f"{r['nodes']:,}", f"{r['graphopt']:.3f}", f"{per:.2f}", f"{r['onnx']:.3f}")
            lines.append(f"| {r['nodes']:,} | {r['graphopt']:.3f} | {per:.2f} | {r['onnx']:.3f} |")
        console.print(t)
        lines.append("")

        if not args.skip_2gb:
            m = bench_memory(folder)
            ratio = m["peak_rss"] / m["weights"]
            t = Table(title="load + save of a 2.1 GB external-data model (child process)")
            for c in ("weights bytes", "peak RSS", "RSS after import only", "peak / weights (goal < 1.5)", "s"):
                t.add_column(c, justify="right")
            t.add_row(
                f"{m['weights']:,}", f"{m['peak_rss']:,}", f"{m['import_rss']:,}", f"{ratio:.2f}", f"{m['seconds']:.1f}"
            )
            console.print(t)
            lines += [
                "## >2 GB model with external data: peak memory of load + save",
                "",
                "| weights (bytes) | peak RSS (bytes) | RSS of the bare import | peak / weights | seconds |",
                "|---:|---:|---:|---:|---:|",
                f"| {m['weights']:,} | {m['peak_rss']:,} | {m['import_rss']:,} | {ratio:.2f} | {m['seconds']:.1f} |",
                "",
                "Peak RSS counts the pages of the memory-mapped weights that were read while saving.",
                "",
            ]
    Path(args.out).write_text("\n".join(lines))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
