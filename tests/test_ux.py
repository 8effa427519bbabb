"""What a careful user of the command line trips over: summaries that must describe the file written, inputs that must
not be silently ignored, messages that must say the real reason, and help that must be usable (issue 19)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from graphopt.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CNN = FIXTURES / "cnn.onnx"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: "), err
    return lines[0]


def _cli(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "graphopt", *argv], capture_output=True, text=True, timeout=120, cwd=cwd
    )


# --------------------------------------------------------------------------------------------------------------------
# summaries that describe what was done and written
# --------------------------------------------------------------------------------------------------------------------
def test_quantize_summary_reports_the_written_model(tmp_path: Path, capsys) -> None:
    out = tmp_path / "q.onnx"
    args = ["optimize", str(CNN), "-o", str(out), "--quantize", "int8", "--calib-random", "2", "--calib-cache", "off"]
    code, stdout, err = _run(capsys, *args, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    written = onnx.load(str(out))
    assert summary["nodes_written"] == len(written.graph.node) > summary["nodes_after"]  # Q/DQ pairs were added
    assert summary["bytes_after"] == out.stat().st_size
    assert [s["stage"] for s in summary["stages"]] == ["passes", "int8"]
    assert summary["stages"][-1]["nodes_after"] == len(written.graph.node)
    assert sum(summary["ops_after"].values()) == len(written.graph.node)
    assert "QuantizeLinear" in summary["ops_after"] and "QuantizeLinear" not in summary["ops_before"]
    text = _run(capsys, *args)[1]
    assert f"nodes {summary['nodes_before']} -> {len(written.graph.node)} (" in text
    assert f"; int8 {summary['nodes_after']} -> {len(written.graph.node)})" in text


def test_pass_rows_say_what_each_pass_did(tmp_path: Path, capsys) -> None:
    code, out, _ = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "o.onnx"), "--json")
    assert code == 0
    summary = json.loads(out)
    passes = summary["passes"]
    # each row's node change is the pass's own; together they are the pipeline's
    assert sum(p["nodes_delta"] for p in passes) == summary["nodes_after"] - summary["nodes_before"]
    for p in passes:
        if not p["changed"]:
            assert p["nodes_delta"] == 0, p
    assert any(p["nodes_delta"] < 0 for p in passes)


def test_a_pass_that_did_not_run_has_no_row(tmp_path: Path, capsys) -> None:
    # on an optimized model the second dce is skipped: the first found nothing and nothing changed since
    assert _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "o.onnx"))[0] == 0
    argv = ["optimize", str(tmp_path / "o.onnx"), "-o", str(tmp_path / "p.onnx"), "--passes", "dce,dce"]
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("│ dce")]
    assert len(rows) == 1, out
    assert "not rerun" in out and "dce" in out.split("not rerun")[1]


def test_winograd_decisions_per_layer(tmp_path: Path, capsys) -> None:
    code, out, _ = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "o.onnx"), "--winograd", "F2", "--json")
    assert code == 0
    w = json.loads(out)["winograd"]
    assert len(w["layers"]) == 3  # the fixture's three 3x3 stride-1 convs
    assert all(d["layer"] and d["shape"] and d["tile"] == 2 and d["forced"] == 2 for d in w["layers"])
    code, out, _ = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "o.onnx"), "--winograd", "F2")
    assert "F2 x3" in out  # the pass row's result
    assert "winograd (per layer)" in out and "stem/Conv" in out and "F2 (forced)" in out


def test_pruning_macs_and_groups_are_all_accounted_for(tmp_path: Path, capsys) -> None:
    argv = ["optimize", str(CNN), "-o", str(tmp_path / "p.onnx"), "--prune-channels", "0.5", "--prune-bench", "0"]
    code, out, _ = _run(capsys, *argv, "--json")
    assert code == 0
    pruned = json.loads(out)["pruning"][0]
    code, out, _ = _run(capsys, *argv)
    assert "0.0M" not in out and "0.000 G" not in out
    assert re.search(r"\d(\.\d+)?K -> \d", out)  # small layers in thousands, not 0.0M
    m = re.search(r"(\d+) of (\d+) channel groups? pruned\n((?:  .*\n)*)", out)
    assert m, out
    done, total = int(m[1]), int(m[2])
    explained = sum(int(n) for n in re.findall(r"^  (\d+) (?:blocked by|left whole)", m[3], flags=re.M))
    assert done + explained == total == pruned["groups"]


def test_human_count_never_prints_zero_for_a_small_count() -> None:
    from graphopt.tools.summary import human_count, middle_ellipsis, plural

    assert human_count(864) == "864" and human_count(37_632) == "37.6K" and human_count(1_800_000_000) == "1.8G"
    assert human_count(120_400_000) == "120M"
    assert plural(1, "layer") == "1 layer" and plural(2, "layer") == "2 layers"
    name = "/encoder/layer.11/attention/output/dense/MatMul"
    short = middle_ellipsis(name, 24)
    assert len(short) == 24 and short.startswith("/encoder/la") and short.endswith("dense/MatMul") and "…" in short


# --------------------------------------------------------------------------------------------------------------------
# inputs that would be silently ignored
# --------------------------------------------------------------------------------------------------------------------
def test_quantize_selection_that_selects_nothing_warns(tmp_path: Path, capsys) -> None:
    """A valid op type the model lacks (--exclude-op, --quantize-ops) is a warning: the same command line may serve
    many models. A misspelt exclusion is an error (tests/test_int8_exclusions.py)."""
    quant = ["--quantize", "int8", "--calib-random", "1", "--calib-cache", "off", "--json"]
    bad = ["--exclude-op", "Softmax", "--quantize-ops", "Conv,Foo"]
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "q.onnx"), *quant, *bad)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "matches no" in line]
    assert len(warnings) == 2 and all(w.startswith("graphopt: warning: ") for w in warnings), err
    for needle in (
        "--exclude-op 'Softmax' matches no node (the model's op types: ",
        "--quantize-ops 'Foo' matches no node (the model's op types: 'Add', 'Conv'",
    ):
        assert sum(needle in w for w in warnings) == 1, needle
    bad = ["--exclude", "stem/Conx", "--exclude-op", "Gemmm", "--exclude-regex", "zzz.*"]
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "q2.onnx"), *quant, *bad)
    assert code == 2 and not (tmp_path / "q2.onnx").exists()
    (line,) = err.strip().splitlines()
    for needle in (
        f"graphopt: error: {CNN}: --exclude 'stem/Conx' matches no node (nearest: 'stem/Conv'",
        "--exclude-op 'Gemmm' is no op type (nearest: 'Gemm')",
        "--exclude-regex 'zzz.*' matches no node name (the model's node names: ",
    ):
        assert needle in line, (needle, line)


def test_prune_layer_that_matches_nothing_is_an_error(tmp_path: Path, capsys) -> None:
    argv = ["optimize", str(CNN), "-o", str(tmp_path / "p.onnx"), "--prune-channels", "0.5", "--prune-bench", "0"]
    code, _, err = _run(capsys, *argv, "--prune-layer", "stem/conv=0.3")
    assert code == 2 and not (tmp_path / "p.onnx").exists()
    assert f"graphopt: error: {CNN}: --prune-layer 'stem/conv' matches no layer (nearest: 'stem/Conv'" in err
    code, _, err = _run(capsys, *argv, "--prune-layer", "stem/Conv=0.3")
    assert "matches no" not in err  # a name that exists is quiet


def test_matching_selections_do_not_warn(tmp_path: Path, capsys) -> None:
    quant = ["--quantize", "int8", "--calib-random", "1", "--calib-cache", "off", "--json"]
    code, out, err = _run(
        capsys, "optimize", str(CNN), "-o", str(tmp_path / "q.onnx"), *quant,
        "--exclude", "head/Gemm", "--exclude-op", "Add", "--exclude-regex", "^dw\\.", "--quantize-ops", "Conv,Gemm,Add",
    )  # fmt: skip
    assert code == 0, err
    assert "matches no" not in err
    why = {d["layer"]: d["why"] for d in json.loads(out)["quantization"]["kept_float_why"]}
    assert why["head/Gemm"] == "--exclude head/Gemm" and why["block1/Add"] == "--exclude-op Add"
    assert why["dw.depthwise/Conv"] == "--exclude-regex ^dw\\."


def test_empty_passes_is_a_usage_error(tmp_path: Path, capsys) -> None:
    line = _usage_error(capsys, "optimize", str(CNN), "-o", str(tmp_path / "o.onnx"), "--passes", "")
    assert "--passes needs at least one pass name" in line and line.endswith("(see graphopt optimize --help)")
    assert not (tmp_path / "o.onnx").exists()


def test_level_with_passes_is_said_to_be_ignored(tmp_path: Path, capsys) -> None:
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "o.onnx"), "--passes", "dce", "-O3")
    assert code == 0
    assert "graphopt: warning: -O3 is ignored: --passes gives the pipeline" in err
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "o.onnx"), "--passes", "dce")
    assert "ignored" not in err


def test_strict_says_it_turns_verify_on(tmp_path: Path, capsys) -> None:
    code, out, err = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "o.onnx"), "--strict", "--json")
    assert code == 0
    assert "graphopt: note: --strict turns --verify on" in err
    assert json.loads(out)["verify"]["checked"] > 0  # and it did
    code, _, err = _run(capsys, "optimize", str(CNN), "-o", str(tmp_path / "o.onnx"), "--strict", "--verify")
    assert "note" not in err


# --------------------------------------------------------------------------------------------------------------------
# usage messages and help
# --------------------------------------------------------------------------------------------------------------------
def test_usage_errors_point_at_the_right_help() -> None:
    top = _cli("frobnicate")
    assert top.returncode == 2 and top.stderr.strip().endswith("(see graphopt --help)"), top.stderr
    assert "graphopt graphopt" not in top.stderr
    sub = _cli("optimize")
    assert sub.returncode == 2 and sub.stderr.strip().endswith("(see graphopt optimize --help)"), sub.stderr


def test_bare_graphopt_prints_help() -> None:
    result = _cli()
    assert result.returncode == 0
    assert result.stdout.startswith("usage: graphopt") and "optimize" in result.stdout and "examples:" in result.stdout
    assert result.stderr == ""


def test_help_shows_defaults_metavars_and_examples() -> None:
    text = _cli("optimize", "--help").stdout
    flat = " ".join(text.split())
    assert "--percentile P" in text and "(default: 99.999)" in flat
    assert "--prune-multiple N" in text and "PRUNE_MULTIPLE" not in text
    assert "(default: percentile)" in flat or "(default percentile)" in flat
    assert "examples:" in text and "--report report.html" in text
    assert "--keep-debug-info" in text
    assert "(repeatable)" in " ".join(_cli("bench", "--help").stdout.split()).split("--shape")[-1]
    assert "metavar" not in text.lower() and "%(default)" not in text


# --------------------------------------------------------------------------------------------------------------------
# messages that say the real reason
# --------------------------------------------------------------------------------------------------------------------
def _one_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, _, err = _run(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: ") and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("content", "reason"), [(b"", "file is empty"), (b"hello\n", "not a valid ONNX model")])
def test_unreadable_file_says_why_first(tmp_path: Path, content: bytes, reason: str, capsys) -> None:
    src = tmp_path / "bad.onnx"
    src.write_bytes(content)
    for extra in ([], ["--no-check"]):
        line = _one_error(capsys, "optimize", str(src), "-o", str(tmp_path / "o.onnx"), *extra)
        assert reason in line and str(src) in line and "--no-check" not in line and "checker" not in line
    assert not (tmp_path / "o.onnx").exists()


def test_external_data_outside_the_folder_is_refused_without_no_check_advice(tmp_path: Path, capsys) -> None:
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="../outside.bin")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    g = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [w],
    )
    src = tmp_path / "evil.onnx"
    src.write_bytes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    line = _one_error(capsys, "optimize", str(src), "-o", str(tmp_path / "o.onnx"))
    assert "leaves the model folder" in line and str(src) in line and "--no-check" not in line


def test_output_under_a_file_says_the_component_is_a_file(tmp_path: Path, capsys) -> None:
    line = _one_error(capsys, "optimize", str(CNN), "-o", str(CNN / "x.onnx"))
    assert f"{CNN} is a file, not a folder" in line
    line = _one_error(capsys, "optimize", str(CNN), "-o", str(tmp_path / "nope" / "x.onnx"))
    assert f"output folder {tmp_path / 'nope'} does not exist" in line


def test_diff_says_what_is_set_where(tmp_path: Path, capsys) -> None:
    from onnx import TensorProto, helper

    def model(attrs: dict) -> Path:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
        g = helper.make_graph([helper.make_node("LeakyRelu", ["x"], ["y"], **attrs)], "g", [x], [y])
        path = tmp_path / f"m{len(attrs)}.onnx"
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    a, b = model({}), model({"alpha": 0.5})
    code, out, _ = _run(capsys, "diff", str(a), str(b))
    assert code == 1
    assert "(1 difference):" in out
    assert "attribute alpha=0.5 set only in B" in out and "False" not in out and "True" not in out


def test_calibration_shape_message_uses_one_format(tmp_path: Path, capsys) -> None:
    import numpy as np

    calib = tmp_path / "calib"
    calib.mkdir()
    np.savez(calib / "0.npz", input=np.zeros((1, 3, 64, 64), np.float32))
    argv = ["optimize", str(CNN), "-o", str(tmp_path / "q.onnx"), "--quantize", "int8", "--calib-data", str(calib)]
    line = _one_error(capsys, *argv)
    assert re.search(r"has shape 1x3x64x64, the model expects \w+x3x32x32$", line), line


# --------------------------------------------------------------------------------------------------------------------
# display on an 80-column terminal
# --------------------------------------------------------------------------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _terminal_run(*argv: str) -> tuple[str, str]:
    import os

    env = dict(os.environ, FORCE_COLOR="1", COLUMNS="80", LINES="50", TERM="xterm")
    result = subprocess.run(
        [sys.executable, "-m", "graphopt", *argv], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    return ANSI.sub("", result.stdout), ANSI.sub("", result.stderr)


def test_tables_fit_80_columns_and_keep_the_ends_of_names(tmp_path: Path) -> None:
    bert = FIXTURES / "real" / "bert.ts.onnx"
    quant = ["--quantize", "int8", "--calib-random", "1", "--calib-cache", "off"]
    out, err = _terminal_run("optimize", str(bert), "-o", str(tmp_path / "b.onnx"), *quant)
    lines = out.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, "\n".join(x for x in lines if len(x.rstrip()) > 80)
    assert "QLinea…" not in out and "fold-consta…" not in out  # no column cut at its end
    assert "QLinearMatMul" in out and "fold-constants" in out
    rows = [line for line in lines if line.startswith("│ /")]
    assert rows and all(re.search(r"(MatMul|Add|Mul)(_\d+|_fused)? +│", r) for r in rows)  # names keep their end
    assert "0/None" not in err  # load and save progress with no known total show no count


def test_abbreviate_names_keeps_what_tells_layers_apart() -> None:
    from graphopt.tools.summary import abbreviate_names

    names = [f"/inner/resnet/encoder/stages.{s}/layers.0/layer.{k}/convolution/Conv" for s in (0, 1) for k in (0, 1)]
    short = abbreviate_names([*names, "/inner/classifier/Gemm"], 34)
    assert all(len(n) <= 34 for n in short)
    assert len(set(short)) == len(short)  # still apart
    assert short[0] == "/…/stages.0/…/layer.0/…/Conv" and short[-1] == "/inner/classifier/Gemm"


def test_warnings_wrap_between_words_on_a_terminal_and_stay_one_line_in_a_pipe(tmp_path: Path) -> None:
    import os
    import pty

    argv = [sys.executable, "-m", "graphopt", "optimize", str(CNN), "-o", str(tmp_path / "o.onnx")]
    argv += ["--quantize", "int8", "--calib-random", "1", "--calib-cache", "off", "--exclude-op", "Softmax"]
    piped = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    (one,) = [line for line in piped.stderr.splitlines() if "warning: --exclude-op" in line]
    assert len(one) > 60
    primary, secondary = pty.openpty()
    try:
        env = dict(os.environ, COLUMNS="60")
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=secondary, timeout=120, env=env)
        assert proc.returncode == 0
        os.close(secondary)
        chunks = []
        while True:
            try:
                data = os.read(primary, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(primary)
    # each printed line comes after the progress bar's "erase line" and ends with CRLF
    lines = [ANSI.sub("", seg.split("\x1b[2K")[-1]) for seg in b"".join(chunks).decode().split("\r\n")]
    start = next(i for i, line in enumerate(lines) if line.startswith("graphopt: warning: --exclude-op"))
    wrapped = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        wrapped.append(line)
    assert len(wrapped) > 1 and all(len(line) <= 60 for line in wrapped)
    assert " ".join(line.strip() for line in wrapped) == one  # cut between words only


def test_winograd_autotuning_shows_per_layer_progress(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, FORCE_COLOR="1", COLUMNS="100", TERM="xterm")
    argv = ["optimize", str(CNN), "-o", str(tmp_path / "o.onnx"), "--winograd", "F2"]
    result = subprocess.run(
        [sys.executable, "-m", "graphopt", *argv], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    err = ANSI.sub("", result.stderr)
    for k in (1, 2, 3):  # the fixture's three eligible layers, one update each as the pass decides them
        assert f"pass winograd: {k} layer{'s' if k > 1 else ''} decided" in err
    assert "F2 x3" in ANSI.sub("", result.stdout)  # and the summary still has the decisions
