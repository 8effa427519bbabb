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
    the message (``"node"``, ``"layer"``). ``outside``: for a node ``nodes`` leaves out, why the option cannot act on
    it (a phrase such as ``"inside the body of Loop 'l': <what follows>"``, :func:`main_graph_only`), or None: a
    value that selects only such nodes is then an error saying so rather than "matches no node"."""

    flag: str
    values: Sequence[str]
    match: str = "name"
    nodes: Callable[[Node], bool] | None = None
    what: str = "node"
    outside: Callable[[Node], str | None] | None = None

    def selects(self, value: str, name: str) -> bool:
        if self.match == "name":
            return name == value
        if self.match == "search":
            return re.search(value, name) is not None
        return name == value or re.fullmatch(value, name) is not None


def main_graph_only(consequence: str) -> Callable[[Node], str | None]:
    """An ``outside`` for options of a stage that acts on the main graph only (pruning, half precision): a node inside
    an If/Loop/Scan body is one it never changes, so naming only such nodes does nothing."""

    def why(node: Node) -> str | None:
        owner = node.graph.owner if node.graph is not None else None
        while owner is not None and owner.graph is not None and owner.graph.owner is not None:
            owner = owner.graph.owner  # the main-graph node the body belongs to
        if owner is None:
            return None
        return f"inside the body of {owner.op_type} {owner.name!r}: {consequence}"

    return why


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
            if opt.outside is not None:
                hits = [n for n in model.graph.all_nodes() if n.name and n.name not in present]
                hits = [(n, r) for n in hits if opt.selects(value, n.name) and (r := opt.outside(n))]
                if hits:
                    exact = [(n, r) for n, r in hits if n.name == value]
                    what = f"names a {opt.what}" if exact else f"matches only {opt.what}s"
                    problems.append(f"{opt.flag} {value!r} {what} {(exact or hits)[0][1]}")
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
