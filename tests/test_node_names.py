"""Every option that names nodes (``--prune-protect``, ``--prune-layer``, ``--precision-keep``, ``--int8-layer``; the
int8 exclusions are in tests/test_int8_exclusions.py) refuses a value that selects no node: one line naming the model
file, the option, the value and the nearest names, exit 2, nothing written; the same GraphoptError from the API. A
misspelt protection would otherwise prune, convert or 4-bit the very layer it was meant to keep
(``graphopt.tools.names.check_node_names``)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

import graphopt
from graphopt.cli import main
from graphopt.core.onnx_io import from_proto
from graphopt.errors import GraphoptError
from graphopt.prune import prune_channels, prune_weights
from graphopt.quantize.precision import convert_precision
from tests.conftest import matmul_mlp

CNN = Path(__file__).resolve().parents[1] / "fixtures" / "cnn.onnx"


def _cli(capsys, tmp_path: Path, *flags: str, src: Path = CNN) -> tuple[int, str, Path]:
    out = tmp_path / "out.onnx"
    code = main(["optimize", str(src), "-o", str(out), *flags])
    return code, capsys.readouterr().err.strip(), out


PRUNE = ["--prune-channels", "0.5", "--prune-multiple", "1", "--prune-bench", "0", "-q"]


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--prune-protect", "stem/conv"], "--prune-protect 'stem/conv' matches no node name (nearest: 'stem/Conv'"),
        (["--prune-protect", "block1\\.0/.*Cnv"], "--prune-protect 'block1\\\\.0/.*Cnv' matches no node name"),
        (["--prune-layer", "stem/conv=0.3"], "--prune-layer 'stem/conv' matches no layer (nearest: 'stem/Conv'"),
        (["--prune-layer", "stem/Relu=0.3"], "--prune-layer 'stem/Relu' matches no layer (nearest: 'stem/Conv'"),
    ],
    ids=["protect-name", "protect-regex", "layer", "layer-not-a-layer"],
)
def test_cli_pruning_refuses_names_that_select_nothing(tmp_path, capsys, flags, needle) -> None:
    code, err, out = _cli(capsys, tmp_path, *PRUNE, *flags)
    assert code == 2 and not out.exists(), err
    (line,) = err.splitlines()
    assert line.startswith(f"graphopt: error: {CNN}: ") and needle in line, line


def test_cli_weight_pruning_refuses_a_protect_that_selects_nothing(tmp_path, capsys) -> None:
    code, err, out = _cli(capsys, tmp_path, "--prune-weights", "0.5", "--prune-protect", "head/Gem", "-q")
    assert code == 2 and not out.exists(), err
    assert "--prune-protect 'head/Gem' matches no node name (nearest: 'head/Gemm'" in err


def test_cli_protect_of_a_node_the_passes_removed_is_told_apart(tmp_path, capsys) -> None:
    code, err, out = _cli(capsys, tmp_path, *PRUNE, "--prune-protect", "stem/BatchNormalization")
    assert code == 2 and not out.exists()
    assert "--prune-protect 'stem/BatchNormalization' names a node the optimization passes removed" in err, err


def test_unnamed_nodes_are_not_nodes_the_passes_removed() -> None:
    """The nodes of a file without node names are named after the passes (``<op>_node``): the empty name they had is
    no removed node's, so a pattern matching only it matches no node name."""
    for values in ([".^"], ["^$"]):
        with pytest.raises(GraphoptError, match=r"--prune-protect '.{2}' matches no node name"):
            graphopt.optimize(matmul_mlp(("", "", "")), prune_weights=0.5, prune_options={"protect": values})


def test_a_protect_that_matches_protects() -> None:
    """The name the user meant keeps its layer whole; without it the layer is pruned (what a typo did before)."""

    def out_channels(protect: list[str]) -> int:
        model = graphopt.optimize(CNN)
        prune_channels(model, 0.5, multiple=1, protect=protect)
        conv = next(n for n in model.graph if n.name == "block1.0/Conv")
        return conv.inputs[1].shape[0]

    assert out_channels([]) < 16 == out_channels(["block1.0/Conv"]) == out_channels([r"block1\.0/C.*"])


def test_api_pruning_refuses_names_that_select_nothing() -> None:
    model = graphopt.optimize(CNN)
    with pytest.raises(GraphoptError, match=r"--prune-protect 'stem/conv' matches no node name \(nearest: 'stem/Conv'"):
        prune_channels(model, 0.5, multiple=1, protect=["stem/conv"])
    with pytest.raises(GraphoptError, match=r"--prune-layer 'stem/Cnv' matches no layer \(nearest: 'stem/Conv'"):
        prune_channels(model, 0.5, multiple=1, layer_ratios={"stem/Cnv": 0.2})
    with pytest.raises(GraphoptError, match=r"--prune-protect '\(': "):
        prune_weights(model, 0.5, protect=["("])
    with pytest.raises(GraphoptError, match=r"--prune-protect 'head/Gem' matches no node name"):
        prune_weights(model, 0.5, protect=["head/Gem"])
    proto = onnx.load(CNN)
    with pytest.raises(GraphoptError, match=r"--prune-protect 'stem/conv' matches no node name"):
        graphopt.optimize(proto, prune_channels=0.5, prune_options={"protect": ["stem/conv"], "multiple": 1})
    given = from_proto(proto)
    nodes = [n.name for n in given.graph]
    with pytest.raises(GraphoptError, match="'stem/BatchNormalization' names a node the optimization passes removed"):
        graphopt.optimize(given, prune_weights=0.5, prune_options={"protect": ["stem/BatchNormalization"]})
    assert [n.name for n in given.graph] == nodes  # a Model passed in is left as it was


# --------------------------------------------------------------------------------------------------------------------
# --precision-keep
# --------------------------------------------------------------------------------------------------------------------
def test_cli_precision_keep_that_selects_nothing_is_an_error(tmp_path, capsys) -> None:
    flags = ["--precision", "fp16", "--calib-random", "2", "--precision-keep", "head/gemm", "-q"]
    code, err, out = _cli(capsys, tmp_path, *flags)
    assert code == 2 and not out.exists(), err
    (line,) = err.splitlines()
    needle = "--precision-keep 'head/gemm' matches no node (nearest: 'head/Gemm'"
    assert line.startswith(f"graphopt: error: {CNN}: {needle}"), line
    code, err, out = _cli(capsys, tmp_path, *flags[:-2], "head/Gemm", "-q")
    assert code == 0, err
    gemm = next(n for n in onnx.load(out).graph.node if n.name == "head/Gemm")
    inits = {t.name: t.data_type for t in onnx.load(out).graph.initializer}
    assert inits[gemm.input[1]] == TensorProto.FLOAT  # kept fp32: its weight too


def test_api_precision_keep_that_selects_nothing_is_an_error() -> None:
    model = graphopt.optimize(CNN)
    with pytest.raises(GraphoptError, match=r"--precision-keep 'head/gemm' matches no node \(nearest: 'head/Gemm'"):
        convert_precision(model, None, "ort", {"block_nodes": ["head/gemm"], "latency_runs": 0})
    with pytest.raises(GraphoptError, match=r"--precision-keep 'head/gemm' matches no node"):
        graphopt.optimize(CNN, precision="fp16", precision_options={"block_nodes": ["head/gemm"]})


# --------------------------------------------------------------------------------------------------------------------
# --int8-layer (int4)
# --------------------------------------------------------------------------------------------------------------------
def _mlp(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.onnx"
    onnx.save(matmul_mlp(), path)
    return path


def test_int8_layer_that_selects_nothing_is_an_error(tmp_path, capsys) -> None:
    src = _mlp(tmp_path)
    code, err, out = _cli(capsys, tmp_path, "--quantize", "int4", "--int8-layer", "^fc3$", "-q", src=src)
    assert code == 2 and not out.exists(), err
    assert err.startswith(f"graphopt: error: {src}: --int8-layer '^fc3$' matches no node name"), err
    with pytest.raises(GraphoptError, match=r"--int8-layer '\^fc3\$' matches no node name"):
        graphopt.optimize(from_proto(onnx.load(src)), quantize="int4", quantize_options={"bits8": ["^fc3$"]})
    code, err, out = _cli(capsys, tmp_path, "--quantize", "int4", "--int8-layer", "^fc2$", "-q", src=src)
    assert code == 0, err
