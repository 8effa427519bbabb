"""Assertions for tests that compare models: structurally (:func:`assert_graphs_equal`) or numerically under
onnxruntime (:func:`assert_models_close`). Both accept paths, ModelProtos and graphopt Models. Hypothesis strategies
for random valid models are in :mod:`graphopt.testing.strategies`; the pytest plugin in
:mod:`graphopt.testing.plugin` provides both assertions as fixtures."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when used: the pytest plugin imports this package in every pytest session
    import numpy as np

    from graphopt.tools.compare import GraphDiff, ModelLike


def assert_graphs_equal(
    a: ModelLike, b: ModelLike, *, rtol: float | None = None, atol: float | None = None, max_differences: int = 5
) -> None:
    """Fail unless the models are structurally equal modulo value names, node names and node order.

    Op types, domains, attributes, constants (exactly, or within ``rtol``/``atol``), subgraphs, opsets and functions
    are compared. The message names the first difference by its path from a graph output.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this function's source
    from graphopt.tools.compare import diff

    found = diff(a, b, rtol=rtol, atol=atol, max_differences=max_differences)
    if found:
        raise AssertionError(_graph_message(found))


def _graph_message(found: GraphDiff) -> str:
    lines = [f"graphs differ: {found.differences[0]}"]
    lines += [f"  also: {d}" for d in found.differences[1:]]
    return "\n".join(lines)


@dataclass
class OutputError:
    """How far one output of ``b`` is from ``a``'s over the runs of :func:`assert_models_close`."""

    name: str
    max_abs: float
    max_rel: float
    ok: bool


def assert_models_close(
    a: ModelLike,
    b: ModelLike,
    inputs: Mapping[str, np.ndarray] | Iterable[Mapping[str, np.ndarray]] | None = None,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    n: int = 3,
    seed: int = 0,
    shapes: Mapping[str, Any] | None = None,
) -> list[OutputError]:
    """Run both models under onnxruntime on the same inputs and fail if an output differs beyond
    ``|b - a| <= atol + rtol * |a|``. Outputs are matched by position and must have equal names and shapes.

    ``inputs``: one feed dict, several, or None to generate ``n`` random feeds (dtypes and symbolic dims honoured;
    ``shapes`` fixes whole inputs). Returns the per-output errors (max over the feeds) when the models are close.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this function's source
    import numpy as np

    from graphopt.tools.runtime import make_inputs, output_error, session

    sa, sb = session(a, optimization="disabled"), session(b, optimization="disabled")
    names_a = [o.name for o in sa.get_outputs()]
    names_b = [o.name for o in sb.get_outputs()]
    if len(names_a) != len(names_b):
        raise AssertionError(f"models have {len(names_a)} and {len(names_b)} outputs")
    if isinstance(inputs, Mapping):
        feeds = [dict(inputs)]
    elif inputs is not None:
        feeds = [dict(f) for f in inputs]
    else:
        feeds = [make_inputs(sa, shapes, seed=seed + k) for k in range(n)]
    errors = {name: [0.0, 0.0, True] for name in names_a}
    problems: list[str] = []
    for feed in feeds:
        ya = sa.run(None, feed)
        yb = sb.run(None, {i.name: feed[i.name] for i in sb.get_inputs()})
        for name, name_b, x, y in zip(names_a, names_b, ya, yb, strict=True):
            x, y = np.asarray(x), np.asarray(y)
            if name != name_b or x.shape != y.shape or x.dtype != y.dtype:
                problems.append(
                    f"output #{names_a.index(name)}: {name!r} {x.dtype}{list(x.shape)} vs "
                    f"{name_b!r} {y.dtype}{list(y.shape)}"
                )
                errors[name][2] = False
                continue
            abs_err, rel_err, close = output_error(x, y, rtol, atol)
            entry = errors[name]
            entry[0], entry[1] = max(entry[0], abs_err), max(entry[1], rel_err)
            if not close:
                entry[2] = False
    report = [OutputError(name, e[0], e[1], bool(e[2])) for name, e in errors.items()]
    bad = [r for r in report if not r.ok]
    if bad or problems:
        sets = f"{len(feeds)} input set{'' if len(feeds) == 1 else 's'}"
        lines = [f"models differ beyond rtol={rtol}, atol={atol} over {sets}:"]
        lines += [f"  {p}" for p in dict.fromkeys(problems)]
        lines += [f"  {r.name}: max abs error {r.max_abs:.3g}, max rel error {r.max_rel:.3g}" for r in bad]
        raise AssertionError("\n".join(lines))
    return report


def __getattr__(name: str) -> Any:
    if name == "diff":
        from graphopt.tools.compare import diff

        return diff
    raise AttributeError(f"module 'graphopt.testing' has no attribute {name!r}")


__all__ = ["OutputError", "assert_graphs_equal", "assert_models_close", "diff"]
