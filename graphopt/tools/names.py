"""User-given node names and name patterns checked against a model, for every option that takes them (quantization's
``--exclude``/``--exclude-regex``/``--int8-layer``, pruning's ``--prune-protect``/``--prune-layer``, half precision's
``--precision-keep``): one that selects no node is an error naming the model file, the option, the value and the
nearest names, not a silent no-op (a misspelt protection would prune, quantize or convert the very layer meant to be
kept). On the IR only: the drivers of every lossy mode import it, and it imports none of them."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from graphopt.core.ir import Model, Node
from graphopt.errors import GraphoptError


@dataclass(frozen=True)
class NameOption:
    """One option's values and how they select nodes. ``match``: ``"name"`` (the exact name), ``"search"``
    (``re.search`` in the name) or ``"fullmatch"`` (the exact name, or a regex matching the whole name). ``nodes``
    picks the nodes the option can select (default: every node, If/Loop/Scan bodies included); ``what`` names them in
    the message (``"node"``, ``"layer"``)."""

    flag: str
    values: Sequence[str]
    match: str = "name"
    nodes: Callable[[Node], bool] | None = None
    what: str = "node"

    def selects(self, value: str, name: str) -> bool:
        if self.match == "name":
            return name == value
        if self.match == "search":
            return re.search(value, name) is not None
        return name == value or re.fullmatch(value, name) is not None


def check_node_names(
    model: Model,
    options: Iterable[NameOption],
    *,
    before: Collection[str] | None = None,
    extra: Sequence[str] = (),
) -> None:
    """Raise one GraphoptError (``FILE: --flag 'value' matches no node (nearest: ...); ...``) naming every value of
    ``options`` that selects no node of ``model``, or is not a valid regex, and the ``extra`` problems a caller found.
    Names are read as they are: a driver that names unnamed nodes (``<op>_node``) does so first. ``before`` (the names
    before the optimization passes) tells a name the passes removed (folded into another node) from a typo."""
    from graphopt.tools.summary import unmatched_hint

    problems = []
    for opt in options:
        if not opt.values:
            continue
        chosen = [n for n in model.graph.all_nodes() if opt.nodes is None or opt.nodes(n)]
        present = {n.name for n in chosen if n.name}
        earlier = set(before or ()) - {n.name for n in model.graph.all_nodes()} - {"", None}  # unnamed: not removed
        pattern = opt.match != "name"
        label = f"{opt.what} name" if pattern else opt.what
        for value in opt.values:
            if pattern:
                try:
                    re.compile(value)
                except re.error as exc:
                    problems.append(f"{opt.flag} {value!r}: {exc}")
                    continue
            if any(opt.selects(value, name) for name in present):
                continue
            if any(opt.selects(value, name) for name in earlier):
                what = "names a node" if value in earlier else "matches only nodes"
                problems.append(
                    f"{opt.flag} {value!r} {what} the optimization passes removed (folded into another): name what "
                    "it became, or use -O0"
                )
                continue
            problems.append(f"{opt.flag} {value!r} matches no {label}" + unmatched_hint(value, present, f"{label}s"))
    problems.extend(extra)
    if problems:
        where = f"{model.source_path}: " if model.source_path else ""
        raise GraphoptError(where + "; ".join(problems))
