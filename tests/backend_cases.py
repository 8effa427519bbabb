"""The ONNX backend test models shipped with the installed onnx package, with their inputs, for round-trip tests."""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

KINDS = ("node", "simple", "pytorch-converted", "pytorch-operator", "light")


@dataclass(frozen=True)
class BackendCase:
    name: str
    kind: str
    proto: onnx.ModelProto | None
    path: str | None
    inputs: tuple[Any, ...] | None
    outputs: tuple[Any, ...] | None = None
    """The expected outputs shipped with the case (None for the light models, which ship none)."""

    def load_proto(self) -> onnx.ModelProto:
        return self.proto if self.proto is not None else onnx.load(self.path)  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def backend_cases() -> tuple[BackendCase, ...]:
    from onnx.backend.test.loader import load_model_tests

    cases: list[BackendCase] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind in KINDS:
            for c in load_model_tests(kind=kind):
                if c.model is not None:
                    inputs = tuple(c.data_sets[0][0]) if c.data_sets else None
                    outputs = tuple(c.data_sets[0][1]) if c.data_sets else None
                    cases.append(BackendCase(c.name, kind, c.model, None, inputs, outputs))
                else:
                    path = os.path.join(c.model_dir, "model.onnx")
                    if os.path.exists(path):
                        inputs, outputs = _disk_data(c.model_dir)
                        cases.append(BackendCase(c.name, kind, None, path, inputs, outputs))
    # The "light" models sit as bare files (weights replaced by ConstantOfShape) with no inputs shipped: the tests
    # feed them seeded random inputs.
    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    for path in sorted(glob.glob(os.path.join(light, "*.onnx"))):
        cases.append(BackendCase(os.path.basename(path)[:-5], "light", None, path, None))
    return tuple(cases)


def _read_pbs(folder: str, prefix: str) -> tuple[Any, ...]:
    files = sorted(glob.glob(os.path.join(folder, f"{prefix}_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
    out = []
    for f in files:
        t = onnx.TensorProto()
        with open(f, "rb") as fh:
            t.ParseFromString(fh.read())
        out.append(numpy_helper.to_array(t))
    return tuple(out)


def _disk_data(model_dir: str) -> tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]:
    sets = sorted(glob.glob(os.path.join(model_dir, "test_data_set_*")))
    if sets:
        return _read_pbs(sets[0], "input"), _read_pbs(sets[0], "output")
    npz = sorted(glob.glob(os.path.join(model_dir, "test_data_*.npz")))
    if npz:
        data = np.load(npz[0], encoding="bytes", allow_pickle=True)
        return tuple(data["inputs"]), tuple(data["outputs"])
    return None, None
