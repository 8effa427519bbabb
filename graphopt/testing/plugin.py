"""pytest plugin (entry point ``pytest11``), active wherever graphopt is installed.

Fixtures: ``assert_graphs_equal`` and ``assert_models_close`` (the functions of :mod:`graphopt.testing`), and
``graph_diff`` (:func:`graphopt.diff`). And ``assert a == b`` on two ONNX ModelProtos or graphopt Models explains a
failure with the structural difference instead of a protobuf dump.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def assert_graphs_equal() -> Any:
    from graphopt.testing import assert_graphs_equal as fn

    return fn


@pytest.fixture
def assert_models_close() -> Any:
    from graphopt.testing import assert_models_close as fn

    return fn


@pytest.fixture
def graph_diff() -> Any:
    from graphopt.tools.compare import diff

    return diff


def _is_model(x: Any) -> bool:
    cls = type(x)
    return (cls.__module__.startswith("onnx") and cls.__name__ == "ModelProto") or (
        cls.__module__ == "graphopt.core.ir" and cls.__name__ == "Model"
    )


def pytest_assertrepr_compare(config: Any, op: str, left: Any, right: Any) -> list[str] | None:
    if op != "==" or not (_is_model(left) and _is_model(right)):
        return None
    from graphopt.tools.compare import diff

    found = diff(left, right, max_differences=10)
    if not found:
        return ["models are structurally equal but not ==: they differ in names, node order or metadata"]
    return ["models differ structurally:", *(f"  {d}" for d in found)]
