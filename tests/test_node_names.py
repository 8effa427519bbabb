"""Every option that names nodes (``--prune-protect``, ``--prune-layer``, ``--precision-keep``, ``--int8-layer``; the
int8 exclusions are in tests/test_int8_exclusions.py) refuses a value that selects no node: one line naming the model
file, the option, the value and the nearest names, exit 2, nothing written; the same GraphoptError from the API. A
misspelt protection would otherwise prune, convert or 4-bit the very layer it was meant to keep
(``graphopt.tools.names.check_node_names``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

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


# --------------------------------------------------------------------------------------------------------------------
# names that pass the name check yet would do nothing: a depthwise, grouped or output layer for --prune-layer, a body
# node for --prune-protect / --precision-keep, a com.microsoft op type for --exclude-op
# --------------------------------------------------------------------------------------------------------------------
def _weight(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def _depthwise_net(tmp_path: Path, *, group: int = 8) -> Path:
    """x [1, 4, 12, 12] -> Conv ``c0`` (8 channels, 1x1) -> Relu -> Conv ``dw`` (3x3 unpadded, ``group`` groups: 8 is
    depthwise) -> Relu -> Conv ``c1`` (1x1, 8) -> GlobalAveragePool -> y. The group of c0's channels is prunable and
    exact (no padding on the path); c1's ends at the graph output."""
    rng = np.random.default_rng(0)
    node = helper.make_node
    inits = [
        _weight(rng, "w0", (8, 4, 1, 1)),
        _weight(rng, "wd", (8, 8 // group, 3, 3)),
        _weight(rng, "w1", (8, 8, 1, 1)),
    ]
    inits += [numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), f"b{i}") for i in range(3)]
    graph = helper.make_graph(
        [
            node("Conv", ["x", "w0", "b0"], ["a"], name="c0"),
            node("Relu", ["a"], ["ar"], name="r0"),
            node("Conv", ["ar", "wd", "b1"], ["d"], name="dw", group=group),
            node("Relu", ["d"], ["dr"], name="r1"),
            node("Conv", ["dr", "w1", "b2"], ["e"], name="c1"),
            node("GlobalAveragePool", ["e"], ["y"], name="gap"),
        ],
        "dwnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 1])],
        inits,
    )
    path = tmp_path / f"dw{group}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _channels(path: Path) -> dict[str, int]:
    model = onnx.load(path)
    inits = {t.name: t.dims[0] for t in model.graph.initializer}
    return {n.name: inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv"}


def test_prune_layer_of_a_depthwise_conv_sets_the_ratio_of_its_channels_group(tmp_path, capsys) -> None:
    """A depthwise Conv starts no channel group: its channels are its input's, pruned with the Conv that makes them.
    Naming it prunes that group at its ratio, as naming the producer does (before, it passed the name check and
    pruned at the global ratio)."""
    src = _depthwise_net(tmp_path)
    prune = ["--prune-channels", "0.25", "--prune-multiple", "1", "--prune-bench", "0", "-q"]
    code, err, out = _cli(capsys, tmp_path, *prune, src=src)
    assert code == 0, err
    assert _channels(out) == {"c0": 6, "dw": 6, "c1": 8}  # the global ratio; c1's group ends at the graph output
    code, err, out = _cli(capsys, tmp_path, *prune, "--prune-layer", "dw=0.5", src=src)
    assert code == 0, err
    assert _channels(out) == {"c0": 4, "dw": 4, "c1": 8}
    by_producer = _cli(capsys, tmp_path, *prune, "--prune-layer", "c0=0.5", src=src)[2]
    assert _channels(by_producer) == _channels(out)
    out.unlink()
    code, err, out = _cli(capsys, tmp_path, *prune, "--prune-layer", "c0=0.5", "--prune-layer", "dw=0.25", src=src)
    assert code == 2 and not out.exists(), err
    (line,) = err.splitlines()
    assert line == (
        f"graphopt: error: {src}: --prune-layer 'c0=0.5' and 'dw=0.25': their channels are pruned together (one "
        "channel group), so they take one ratio"
    )


@pytest.mark.parametrize(
    ("group", "flag", "needle"),
    [
        (8, "c1=0.5", "--prune-layer 'c1': its channels are in no group that can be pruned (graph output)"),
        (2, "dw=0.5", "--prune-layer 'dw': its channels are in no group that can be pruned (grouped Conv)"),
    ],
    ids=["graph-output", "grouped-conv"],
)
def test_prune_layer_whose_channels_cannot_be_pruned_is_an_error(tmp_path, capsys, group, flag, needle) -> None:
    """A layer whose channel group is blocked (a graph output reads it; a grouped Conv, not depthwise) would be left
    whole whatever ratio it is given: one line saying why, exit 2, nothing written."""
    src = _depthwise_net(tmp_path, group=group)
    prune = ["--prune-channels", "0.25", "--prune-multiple", "1", "--prune-bench", "0"]
    code, err, out = _cli(capsys, tmp_path, *prune, "--prune-layer", flag, src=src)
    assert code == 2 and not out.exists(), err
    (line,) = err.splitlines()
    assert line == f"graphopt: error: {src}: {needle}"


def test_prune_layer_of_0_for_a_layer_that_stays_whole_is_quiet(tmp_path, capsys) -> None:
    """A ratio of 0 asks for the layer to stay whole: where it stays whole anyway, that is no error."""
    src = _depthwise_net(tmp_path)
    prune = ["--prune-channels", "0.25", "--prune-multiple", "1", "--prune-bench", "0", "-q"]
    code, err, out = _cli(capsys, tmp_path, *prune, "--prune-layer", "c1=0", src=src)
    assert code == 0 and err == "", err
    assert _channels(out) == {"c0": 6, "dw": 6, "c1": 8}


def _loop_net(tmp_path: Path) -> Path:
    """x -> Conv ``conv0`` -> Relu ``relu0`` -> Loop ``loop`` (2 steps; body: Conv ``inner`` -> Relu ``inner_relu``)
    -> Conv ``conv1`` -> y."""
    rng = np.random.default_rng(1)
    node = helper.make_node
    f = TensorProto.FLOAT
    body = helper.make_graph(
        [
            node("Identity", ["cond_in"], ["cond_out"], name="cond"),
            node("Conv", ["h_in", "wi"], ["h_conv"], name="inner", pads=[1] * 4),
            node("Relu", ["h_conv"], ["h_out"], name="inner_relu"),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", f, [1, 8, 8, 8]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", f, [1, 8, 8, 8]),
        ],
    )
    inits = [_weight(rng, "w0", (8, 3, 3, 3)), _weight(rng, "wi", (8, 8, 3, 3)), _weight(rng, "w1", (8, 8, 3, 3))]
    inits.append(numpy_helper.from_array(np.array(2, np.int64), "trip"))
    graph = helper.make_graph(
        [
            node("Conv", ["x", "w0"], ["a"], name="conv0", pads=[1] * 4),
            node("Relu", ["a"], ["ar"], name="relu0"),
            node("Loop", ["trip", "", "ar"], ["l"], body=body, name="loop"),
            node("Conv", ["l", "w1"], ["y"], name="conv1", pads=[1] * 4),
        ],
        "loopnet",
        [helper.make_tensor_value_info("x", f, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", f, [1, 8, 8, 8])],
        inits,
    )
    path = tmp_path / "loop.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (
            ["--prune-weights", "0.5", "--prune-protect", "inner"],
            "--prune-protect 'inner' names a node inside the body of Loop 'loop': pruning acts on the main graph only "
            "and leaves bodies as they are, so this does nothing",
        ),
        (
            ["--prune-weights", "0.5", "--prune-protect", "inner.*"],
            "--prune-protect 'inner.*' matches only nodes inside the body of Loop 'loop': pruning acts on the main",
        ),
        (
            ["--prune-channels", "0.5", "--prune-bench", "0", "--prune-layer", "inner=0.3"],
            "--prune-layer 'inner' names a layer inside the body of Loop 'loop': pruning acts on the main graph",
        ),
        (
            ["--precision", "fp16", "--calib-random", "1", "--precision-keep", "inner_relu"],
            "--precision-keep 'inner_relu' names a node inside the body of Loop 'loop': half precision never converts "
            "If/Loop/Scan bodies (they compute in fp32 already), so this changes nothing",
        ),
    ],
    ids=["protect", "protect-regex", "prune-layer", "precision-keep"],
)
def test_names_of_body_nodes_for_main_graph_stages_are_an_error(tmp_path, capsys, flags, needle) -> None:
    """Pruning and half precision act on the main graph only: a value that selects only If/Loop/Scan body nodes
    passed the name check (body names count for the int8 exclusions) and did nothing. Now one line says so."""
    src = _loop_net(tmp_path)
    code, err, out = _cli(capsys, tmp_path, *flags, "-q", src=src)
    assert code == 2 and not out.exists(), err
    (line,) = err.splitlines()
    assert line.startswith(f"graphopt: error: {src}: {needle}"), line


def test_a_main_graph_name_next_to_body_names_still_works(tmp_path, capsys) -> None:
    """A regex matching main-graph nodes as well as body nodes selects the main-graph ones: no error."""
    src = _loop_net(tmp_path)
    code, err, _ = _cli(capsys, tmp_path, "--prune-weights", "0.5", "--prune-protect", "conv0|inner", "-q", src=src)
    assert code == 0, err
    code, err, _ = _cli(capsys, tmp_path, "--precision", "fp16", "--precision-keep", "conv1", "-q", src=src)
    assert code == 0, err


@pytest.mark.parametrize(
    ("op", "needle"),
    [
        (
            "QLinearAdd",
            "--exclude-op 'QLinearAdd' is a com.microsoft op type, no node of this model: onnxruntime forms it when it "
            "loads the model, from Add: to keep those float, --exclude-op Add",
        ),
        ("FusedConv", "--exclude-op 'FusedConv' is a com.microsoft op type, no node of this model: onnxruntime forms"),
        # onnxruntime forms these from DequantizeLinear -> MatMul (a float output; a DynamicQuantizeLinear's input)
        (
            "MatMulIntegerToFloat",
            "--exclude-op 'MatMulIntegerToFloat' is a com.microsoft op type, no node of this model: onnxruntime forms "
            "it when it loads the model, from MatMul: to keep those float, --exclude-op MatMul",
        ),
        (
            "DynamicQuantizeMatMul",
            "--exclude-op 'DynamicQuantizeMatMul' is a com.microsoft op type, no node of this "
            "model: onnxruntime forms it when it loads the model, from MatMul",
        ),
        (
            "QuickGelu",
            "--exclude-op 'QuickGelu' is a com.microsoft op type, no node of this model: graphopt quantizes ONNX ops "
            "only, so excluding it keeps nothing float: exclude the ONNX ops it stands for",
        ),
    ],
)
def test_exclude_op_of_a_microsoft_op_type_says_what_to_exclude(tmp_path, capsys, op, needle) -> None:
    """graphopt quantizes ONNX ops; onnxruntime forms QLinearAdd, FusedConv, ... itself when it loads the model. An
    --exclude-op of such a type can keep nothing float in a model without it: an error naming the ONNX op to exclude
    (it was "is no op type", with nearest names)."""
    flags = ["--quantize", "int8", "--calib-random", "1", "--calib-cache", "off", "-q", "--exclude-op", op]
    code, err, out = _cli(capsys, tmp_path, *flags)
    assert code == 2 and not out.exists(), err
    (line,) = err.splitlines()
    assert line.startswith(f"graphopt: error: {CNN}: {needle}"), line


def test_exclude_op_of_an_onnx_op_the_model_lacks_stays_a_warning(tmp_path, capsys) -> None:
    """A real ONNX op type the model lacks (one command line, many models) is a warning; for one onnxruntime forms
    (QLinearConv) the warning says what to exclude instead."""
    flags = ["--quantize", "int8", "--calib-random", "1", "--calib-cache", "off", "--exclude-op", "QLinearConv"]
    code, err, out = _cli(capsys, tmp_path, *flags, "--exclude-op", "LSTM")
    assert code == 0 and out.exists(), err
    assert (
        "graphopt: warning: --exclude-op 'QLinearConv' matches no node (onnxruntime forms it when it loads the "
        "model, from Conv: to keep those float, --exclude-op Conv)" in err
    ), err
    assert "graphopt: warning: --exclude-op 'LSTM' matches no node" in err


def test_prune_layer_without_channel_pruning_is_an_error(tmp_path, capsys) -> None:
    """--prune-layer sets a channel pruning ratio; with --prune-weights alone it did nothing."""
    code, err, out = _cli(capsys, tmp_path, "--prune-weights", "0.5", "--prune-layer", "stem/Conv=0.3", "-q")
    assert code == 2 and not out.exists(), err
    (line,) = err.splitlines()
    assert line == "graphopt: error: --prune-layer sets a channel pruning ratio: it needs --prune-channels"
