"""Calibration feeds from text (graphopt.quantize.calibration_feeds) with a tokenizer the caller builds: a real
``tokenizers.Tokenizer`` (word-level, built here: nothing is downloaded) and plain callables."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphopt
from graphopt.errors import GraphoptError
from graphopt.quantize import calibration_feeds

WORDS = ["[PAD]", "[UNK]", "the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away"]


def _tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    return tok


def _model(seq: int | str = "s", batch: int | str = "b", mask_dtype: int = TensorProto.INT64, types: bool = True):
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((len(WORDS), 16)).astype(np.float32), "vocab"),
        numpy_helper.from_array(rng.standard_normal((2, 16)).astype(np.float32), "types"),
        numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "W"),
    ]
    nodes = [
        helper.make_node("Gather", ["vocab", "input_ids"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "axes"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["em"]),
    ]
    inits.append(numpy_helper.from_array(np.array([2], np.int64), "axes"))
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq]),
        helper.make_tensor_value_info("attention_mask", mask_dtype, [batch, seq]),
    ]
    last = "em"
    if types:
        nodes += [
            helper.make_node("Gather", ["types", "token_type_ids"], ["t"]),
            helper.make_node("Add", [last, "t"], ["et"]),
        ]
        inputs.append(helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, [batch, seq]))
        last = "et"
    nodes.append(helper.make_node("MatMul", [last, "W"], ["y"], name="proj"))
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, seq, 8])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


TEXTS = ["the cat sat on a mat", "a dog ran far away", "the dog sat", "cat"]


def test_tokenizers_tokenizer_batches_pad_and_mask():
    feeds = calibration_feeds(TEXTS, _tokenizer(), _model(), batch_size=2)
    assert len(feeds) == 2 and set(feeds[0]) == {"input_ids", "attention_mask", "token_type_ids"}
    ids, mask = feeds[1]["input_ids"], feeds[1]["attention_mask"]
    assert ids.shape == (2, 3) and ids.dtype == np.int64
    assert ids.tolist() == [[2, 8, 4], [3, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert not feeds[0]["token_type_ids"].any()
    # one text per feed by default, truncated to max_length
    feeds = calibration_feeds(TEXTS, _tokenizer(), _model(), max_length=4)
    assert [f["input_ids"].shape for f in feeds] == [(1, 4), (1, 4), (1, 3), (1, 1)]


def test_static_shapes_and_callables(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(seq=8, batch=2, types=False), path)
    feeds = calibration_feeds(TEXTS, _tokenizer(), path)  # the model's static batch 2 and length 8
    assert [f["input_ids"].shape for f in feeds] == [(2, 8), (2, 8)] and set(feeds[0]) == {
        "input_ids",
        "attention_mask",
    }
    with pytest.raises(GraphoptError, match="batches of 2"):
        calibration_feeds(TEXTS[:3], _tokenizer(), path)

    def words(texts):  # any callable: name -> one sequence per text
        return {"ids": [[WORDS.index(w) for w in t.split()] for t in texts]}

    feeds = calibration_feeds(TEXTS, words, _model(types=False), batch_size=4)
    assert feeds[0]["input_ids"][3].tolist() == [3, 0, 0, 0, 0, 0]
    assert feeds[0]["attention_mask"][3].tolist() == [1, 0, 0, 0, 0, 0]  # no mask given: 1 on the tokens


def test_errors_are_one_line():
    def other(texts):
        return {"words": [[2, 3]] * len(texts)}

    with pytest.raises(GraphoptError, match="nothing for the model's input 'input_ids'"):
        calibration_feeds(TEXTS, other, _model(types=False))
    with pytest.raises(GraphoptError, match="float \\(an additive mask\\?\\)"):
        calibration_feeds(TEXTS, _tokenizer(), _model(mask_dtype=TensorProto.FLOAT, types=False))
    with pytest.raises(GraphoptError, match="list of strings"):
        calibration_feeds("the cat", _tokenizer(), _model())
    with pytest.raises(GraphoptError, match="empty"):
        calibration_feeds([], _tokenizer(), _model())
    with pytest.raises(GraphoptError, match="not a mapping"):
        calibration_feeds(TEXTS, lambda texts: [1, 2], _model())


def test_feeds_calibrate_int8():
    feeds = calibration_feeds(TEXTS, _tokenizer(), _model())
    report: list = []
    graphopt.optimize(_model(), quantize="int8", calibration=feeds, quantize_options={"cache": False}, report=report)
    q = report[0].quantization
    assert q.batches == len(TEXTS) and any(layer.name == "proj" for layer in q.layers)
