"""Pattern rewrites: describe a small subgraph, a condition and a replacement; register rules as a pass.

    from graphopt.patterns import Op, Var, Const, Rule, register_rules

    # x * 2  ->  x + x
    double = Rule(
        "mul2-to-add",
        Op("Mul", Var("x"), Const("two", where=lambda a: a.size == 1 and a.item() == 2), commutative=True),
        replace=lambda m, b: b.op("Add", m["x"], m["x"]),
    )
    register_rules("my-rules", [double])   # now a pass: graphopt.optimize(model, passes="my-rules")

A pattern is a tree of :class:`Op` (a node: op type, domain, attribute conditions, input patterns), :class:`Var` (any
value) and :class:`Const` (a constant value, optionally with a condition on its data). A name given to a Var, Const or
Op binds what it matched, and a Var name used twice must match the same value. The root Op's outputs are what the
replacement replaces; every inner Op's outputs must be read only inside the match and not be graph outputs, unless the
Op says ``shared=True`` (then it is kept for its other readers). ``commutative=True`` also tries a two-input Op's
inputs swapped.

``condition(m)`` may veto a match; ``replace(m, b)`` builds the new nodes with ``b.op(...)`` / ``b.const(...)`` and
returns the value that replaces the root's output (or a list, one per root output; or None to skip the match). The new
nodes go just before the root; matched nodes nobody reads any more are removed. Rules with a higher ``priority`` are
tried first at each node. The rewriter reports how often each rule fired (``PassStats.counts``) and, as a pass of the
PassManager, it also runs inside If/Loop/Scan bodies and function bodies.

The rewriter terminates on any rule set: a sweep visits only the nodes that were there when it began, a replacement
that would trade the matched nodes for equivalent ones is declined, and rules that keep firing past ``MAX_SWEEPS``
sweeps or ``FIRINGS_PER_NODE`` firings per node raise :class:`RewriteLimitError` naming them. An exception in a
rule's own code is raised as :class:`RuleError` naming the rule (``GRAPHOPT_DEBUG=1``: the original exception).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphopt.errors import PassError
from graphopt.ir import Graph, Node, Value
from graphopt.passes_api import Pass, PassContext, debug_enabled, register_pass
from graphopt.tensors import Tensor

STANDARD = frozenset({"", "ai.onnx"})


class PatternError(PassError):
    """A malformed pattern or rule, reported when it is built or registered."""


class RuleError(PassError):
    """A rule's own code (``condition``, ``replace``, a ``where`` or attribute predicate) raised, or its replacement
    was malformed; the message names the rule. The original exception is the ``__cause__`` (``GRAPHOPT_DEBUG=1``
    lets it propagate unwrapped, with its traceback)."""


class RewriteLimitError(PassError):
    """Rules kept firing past the rewriter's caps (sweeps, or firings relative to the graph's size): a rule set that
    does not terminate, typically a replacement that re-creates its own pattern. The message names the rules."""


MAX_SWEEPS = 32
"""Sweeps over a graph before the rewriter gives up with a RewriteLimitError (a sweep that fires nothing ends it)."""
FIRINGS_PER_NODE = 8
"""Total firings allowed per node of the graph (plus ``FIRINGS_SLACK``) before a RewriteLimitError."""
FIRINGS_SLACK = 256


class Pattern:
    """Base class of pattern elements."""

    name: str | None = None


@dataclass(eq=False)
class Var(Pattern):
    """Any value (a graph input, a constant, a node output); ``where(value)`` may restrict it."""

    name: str | None = None
    where: Callable[[Value], bool] | None = None


@dataclass(eq=False)
class Const(Pattern):
    """A constant value: an initializer or a Constant node's output. ``value`` must equal its data (broadcast
    comparison); ``where(array)`` gets the data as a numpy array."""

    name: str | None = None
    value: Any = None
    where: Callable[[np.ndarray], bool] | None = None


class Op(Pattern):
    """A node: ``Op(op_type, *inputs, domain="", attrs=None, name=None, commutative=False, shared=False)``.

    ``attrs`` maps attribute names to a required value or to a predicate ``f(value_or_None) -> bool`` (None when the
    node does not set it). ``outputs`` is the node's output count (default: any).
    """

    def __init__(
        self,
        op_type: str,
        *inputs: Pattern,
        domain: str = "",
        attrs: Mapping[str, Any] | None = None,
        name: str | None = None,
        commutative: bool = False,
        shared: bool = False,
        outputs: int | None = None,
    ) -> None:
        if not isinstance(op_type, str) or not op_type:
            raise PatternError(f"Op needs an op type string, got {op_type!r}")
        for i, x in enumerate(inputs):
            if not isinstance(x, Pattern):
                raise PatternError(f"Op({op_type!r}) input #{i} is {x!r}; use Var(), Const() or Op()")
        if attrs is not None and not all(isinstance(k, str) for k in attrs):
            raise PatternError(f"Op({op_type!r}) attrs must be keyed by attribute name")
        self.op_type, self.inputs, self.domain = op_type, tuple(inputs), domain
        self.attrs = dict(attrs or {})
        self.name, self.commutative, self.shared, self.outputs = name, commutative, shared, outputs
        if commutative and len(inputs) != 2:
            raise PatternError(f"Op({op_type!r}, commutative=True) needs exactly two inputs")

    def __repr__(self) -> str:
        return f"Op({self.op_type!r}, {', '.join(map(repr, self.inputs))})"


@dataclass
class Match:
    """A match of a rule: ``m[name]`` is the bound Value (Var, Const) or Node (Op); ``m.const(name)`` the data."""

    graph: Graph
    root: Node
    ctx: PassContext
    bindings: dict[str, Value | Node] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    shared: set[int] = field(default_factory=set)

    def __getitem__(self, name: str) -> Any:
        return self.bindings[name]

    def __contains__(self, name: str) -> bool:
        return name in self.bindings

    def const(self, name: str) -> np.ndarray:
        v = self.bindings[name]
        t = v.constant() if isinstance(v, Value) else None
        if t is None:
            raise KeyError(f"{name!r} is not bound to a constant")
        return t.numpy()


class Builder:
    """Makes the replacement's nodes; they are inserted just before the matched root."""

    def __init__(self, graph: Graph, root: Node) -> None:
        self.graph, self.root = graph, root
        self.created: list[Node] = []

    def const(self, array: Any, name: str = "const") -> Value:
        return self.graph.make_constant(Tensor.from_numpy(np.asarray(array)), f"{self.root.name or 'rewrite'}_{name}")

    def op(
        self, op_type: str, *inputs: Value | np.ndarray | None, domain: str = "", outputs: int = 1, **attrs: Any
    ) -> Any:
        """A new node; numpy arrays among ``inputs`` become constants. Returns its output (a tuple if several)."""
        values = [self.const(x) if isinstance(x, np.ndarray | np.generic) else x for x in inputs]
        base = f"{self.root.name or op_type}_{op_type}"
        node = Node(op_type, values, attrs, num_outputs=outputs, domain=domain, name=self.graph.unique_name(base))
        for i, out in enumerate(node.outputs):
            assert out is not None
            out.name = self.graph.unique_name(f"{node.name}_out{i}")
        self.graph.insert_before(self.root, node)
        self.created.append(node)
        return node.output if outputs == 1 else tuple(node.outputs)


Replacement = Callable[[Match, Builder], Value | Sequence[Value] | None]


@dataclass(eq=False)
class Rule:
    """A named rewrite: pattern (root Op), optional condition, replacement builder and priority."""

    name: str
    pattern: Op
    replace: Replacement
    condition: Callable[[Match], bool] | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, Op):
            raise PatternError(f"rule {self.name!r}: the pattern's root must be an Op, got {self.pattern!r}")
        if not callable(self.replace):
            raise PatternError(f"rule {self.name!r}: replace must be a function (match, builder) -> value")
        if self.condition is not None and not callable(self.condition):
            raise PatternError(f"rule {self.name!r}: condition must be a function (match) -> bool")


# --------------------------------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------------------------------
def _match_value(p: Pattern, v: Value | None, m: Match, graph: Graph) -> bool:
    if v is None:
        return False
    if isinstance(p, Op):
        node = v.producer
        if node is None or node.graph is not graph or not _match_node(p, node, m, graph):
            return False
        if p.shared:
            m.shared.add(id(node))
        return True  # whether an inner node's outputs stay private is checked once the whole match is known
    if isinstance(p, Const):
        t = v.constant()
        if t is None:
            return False
        if p.value is not None or p.where is not None:
            arr = t.numpy()
            if p.value is not None and not _equal(arr, p.value):
                return False
            if p.where is not None and not p.where(arr):
                return False
    elif isinstance(p, Var):
        if p.where is not None and not p.where(v):
            return False
    else:
        raise TypeError(f"not a pattern element: {p!r}")
    return _bind(p.name, v, m)


def _equal(arr: np.ndarray, value: Any) -> bool:
    try:
        return bool(np.all(arr == np.asarray(value)))
    except ValueError:
        return False


def _bind(name: str | None, x: Value | Node, m: Match) -> bool:
    if name is None:
        return True
    bound = m.bindings.get(name)
    if bound is None:
        m.bindings[name] = x
        return True
    return bound is x


def _match_node(p: Op, node: Node, m: Match, graph: Graph) -> bool:
    domains = STANDARD if p.domain in STANDARD else {p.domain}
    if node.op_type != p.op_type or (node.domain or "") not in domains:
        return False
    if p.outputs is not None and len(node.outputs) != p.outputs:
        return False
    if len(node.inputs) != len(p.inputs):
        return False
    for key, want in p.attrs.items():
        have = node.attr(key)
        if callable(want):
            if not want(have):
                return False
        elif have != want and not (isinstance(have, list | tuple) and list(have) == list(want or [])):
            return False
    if node in m.nodes:
        return False
    orders = [list(range(len(p.inputs)))]
    if p.commutative:
        orders.append([1, 0])
    for order in orders:
        saved = (dict(m.bindings), list(m.nodes), set(m.shared))
        m.nodes.append(node)
        if all(_match_value(p.inputs[k], node.inputs[i], m, graph) for k, i in enumerate(order)) and _bind(
            p.name, node, m
        ):
            return True
        m.bindings, m.nodes, m.shared = dict(saved[0]), list(saved[1]), set(saved[2])
    return False


def match(rule: Rule, node: Node, graph: Graph, ctx: PassContext) -> Match | None:
    """The match of ``rule`` rooted at ``node``, or None. An exception from the rule's own code (a ``where`` or
    attribute predicate, ``condition``) is raised as a RuleError naming the rule."""
    m = Match(graph, node, ctx)
    with _rule_code(rule, "pattern predicate"):
        if not _match_node(rule.pattern, node, m, graph):
            return None
    if not _inner_outputs_private(m, graph):
        return None
    if rule.condition is not None:
        with _rule_code(rule, "condition"):
            if not rule.condition(m):
                return None
    return m


@contextmanager
def _rule_code(rule: Rule, what: str) -> Iterator[None]:
    """Run user code of ``rule``: its exceptions become one RuleError naming the rule (unless GRAPHOPT_DEBUG)."""
    try:
        yield
    except PassError:
        raise
    except Exception as e:
        if debug_enabled():
            raise
        detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise RuleError(
            f"pattern rule {rule.name!r}: its {what} raised {type(e).__name__}{': ' + detail if detail else ''}"
        ) from e


def _inner_outputs_private(m: Match, graph: Graph) -> bool:
    """Inner nodes (not shared) may be read only by matched nodes: checked once the whole match is known."""
    members = {id(n) for n in m.nodes}
    for node in m.nodes:
        if node is m.root or id(node) in m.shared:
            continue
        for out in node.outputs:
            if out is None:
                continue
            if any(o is out for o in graph.outputs) or any(id(u) not in members for u, _ in out.uses):
                return False
    return True


def apply(rule: Rule, m: Match) -> bool:
    """Build the replacement of a match and splice it in; False (graph untouched) if the builder declines, or if the
    replacement would only trade the matched nodes for equivalent ones (same ops, domains, attributes and inputs)."""
    b = Builder(m.graph, m.root)
    with _rule_code(rule, "replace"):
        result = rule.replace(m, b)

    def decline() -> bool:
        for node in reversed(b.created):
            if node.graph is m.graph:
                m.graph.remove(node)
        return False

    if result is None:
        return decline()
    new = [result] if isinstance(result, Value) else list(result) if isinstance(result, list | tuple) else None
    outs = list(m.root.outputs)
    if new is None or not all(v is None or isinstance(v, Value) for v in new):
        decline()
        raise RuleError(f"pattern rule {rule.name!r}: replace returned {type(result).__name__}, not a Value or a list")
    if len(new) != len(outs):
        decline()
        raise RuleError(
            f"pattern rule {rule.name!r} returned {len(new)} values for {len(outs)} outputs of {m.root.op_type}"
        )
    if all(v is None or v is o for v, o in zip(new, outs, strict=True)):
        return decline()  # the root's own outputs: nothing to replace, so nothing changed
    if _equivalent_trade(m, b.created, new, outs):
        return decline()
    for old, value in zip(outs, new, strict=True):
        if old is not None and value is not None and old is not value:
            m.graph.replace_all_uses_with(old, value)
    # m.nodes is in match order (each node before the inputs it matched), so readers go before what they read
    for node in m.nodes:
        if node.graph is m.graph and all(o is None or (not o.uses and o not in m.graph.outputs) for o in node.outputs):
            m.graph.remove(node)
    return True


def _equivalent_trade(m: Match, created: list[Node], new: list[Value | None], outs: list[Value | None]) -> bool:
    """Whether splicing in the replacement would leave the graph as it was up to names: the nodes it adds (the
    builder's, plus the Identity that keeps a graph output's name when the new value cannot take it) are equivalent,
    one for one, to the matched nodes it removes."""
    graph = m.graph
    if len(created) > len(m.nodes):
        return False  # more nodes than the match could remove: not a one-for-one trade (and no deep signatures)
    added: list[tuple[Any, ...]] = []
    created_set = set(created)
    for old, value in zip(outs, new, strict=True):
        if old is None or value is None or old is value or not any(o is old for o in graph.outputs):
            continue
        renameable = (
            value.producer is not None and value.producer.graph is graph and not any(o is value for o in graph.outputs)
        )
        if not renameable:
            added.append(("Identity", "", (), (_value_sig(value, created_set),)))
    added.extend(_node_sig(n, created_set) for n in created)
    if not added:
        return False
    # the matched nodes that would go: the root, and inner nodes only matched nodes (or the root's readers) read
    replaced = {id(o) for o, v in zip(outs, new, strict=True) if o is not None and v is not None and o is not v}
    if any(o is not None and id(o) not in replaced for o in m.root.outputs if o is not None and o.uses):
        return False
    kept_values = {id(v) for v in new if v is not None}
    for n in created:
        kept_values.update(id(v) for v in n.inputs if v is not None)
    removed: list[Node] = []
    members = set(m.nodes)
    for node in m.nodes:
        if node is m.root:
            removed.append(node)
            continue
        if id(node) in m.shared or any(o is not None and id(o) in kept_values for o in node.outputs):
            continue
        if all(o is None or all(u in members for u, _ in o.uses) for o in node.outputs):
            removed.append(node)
    removed_set = set(removed)
    gone = sorted(repr(_node_sig(n, removed_set)) for n in removed)
    return gone == sorted(repr(sig) for sig in added)


def _node_sig(node: Node, group: set[Node]) -> tuple[Any, ...]:
    attrs = tuple(sorted((k, _attr_sig(a.value)) for k, a in node.attrs.items()))
    return (node.op_type, node.domain or "", attrs, tuple(_value_sig(v, group) for v in node.inputs))


def _value_sig(v: Value | None, group: set[Node]) -> Any:
    if v is None:
        return None
    if v.producer is not None and v.producer in group:
        return ("out", _node_sig(v.producer, group), v.index)
    t = v.constant() if v.producer is None else None
    if t is not None and 0 < t.size <= 1024:
        arr = t.numpy()
        return ("const", str(arr.dtype), arr.shape, arr.tobytes())
    return ("value", id(v))


def _attr_sig(value: Any) -> Any:
    if isinstance(value, bool | int | float | str | bytes) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, list | tuple) and all(isinstance(x, bool | int | float | str | bytes) for x in value):
        return ("list", tuple(value))
    return ("object", id(value))


def rewrite(graph: Graph, rules: Iterable[Rule], ctx: PassContext, counts: dict[str, int] | None = None) -> bool:
    """Apply ``rules`` over ``graph`` until none fires; count firings per rule in ``counts``.

    A sweep visits the nodes that were in the graph when it began (never the nodes its own firings created; the next
    sweep sees those), tries the rules at each, and a replacement that only trades nodes for equivalent ones is
    declined. Rules still firing after ``MAX_SWEEPS`` sweeps, or after ``FIRINGS_PER_NODE`` firings per node of the
    graph, raise a RewriteLimitError naming them.
    """
    ordered = sorted(rules, key=lambda r: -r.priority)
    by_op: dict[str, list[Rule]] = {}
    for r in ordered:
        by_op.setdefault(r.pattern.op_type, []).append(r)
    if not by_op:
        return False
    changed = False
    budget = FIRINGS_PER_NODE * len(graph) + FIRINGS_SLACK
    total = 0
    recent: deque[dict[str, int]] = deque(maxlen=4)  # firings per rule of the last sweeps, to name the culprits
    for _ in range(MAX_SWEEPS):
        fired: dict[str, int] = {}
        recent.append(fired)
        present = {node for node in graph if node.op_type in by_op}
        if not present:
            break
        for node in graph:
            if node not in present or node.graph is not graph:
                continue
            for r in by_op.get(node.op_type, ()):
                m = match(r, node, graph, ctx)
                if m is not None and apply(r, m):
                    fired[r.name] = fired.get(r.name, 0) + 1
                    if counts is not None:
                        counts[r.name] = counts.get(r.name, 0) + 1
                    total += 1
                    if total > budget:
                        raise _limit(recent, f"{total} firings on a graph of {len(graph)} nodes")
                    break
        changed |= bool(fired)
        if not fired:
            return changed
    if recent and recent[-1]:
        raise _limit(recent, f"{MAX_SWEEPS} sweeps over a graph of {len(graph)} nodes")
    return changed


def _limit(recent: Iterable[dict[str, int]], what: str) -> RewriteLimitError:
    fired: dict[str, int] = {}
    for sweep in recent:
        for name, n in sweep.items():
            fired[name] = fired.get(name, 0) + n
    names = ", ".join(repr(n) for n, _ in sorted(fired.items(), key=lambda kv: -kv[1]))
    rule = "pattern rule" if len(fired) == 1 else "pattern rules"
    return RewriteLimitError(
        f"{rule} {names} did not terminate: still firing after {what} (does a replacement re-create its own pattern?)"
    )


def register_rules(
    name: str, rules: Sequence[Rule], *, description: str = "", replace: bool = False, lossless: bool = True
) -> type[Pass]:
    """Register ``rules`` as one pass called ``name``; returns the pass class."""
    rule_list = list(rules)
    names = [getattr(r, "name", None) for r in rule_list]
    if not rule_list or not all(isinstance(r, Rule) for r in rule_list):
        raise PatternError(f"register_rules({name!r}) needs a non-empty list of Rule objects")
    if len(set(names)) != len(names):
        raise PatternError(f"rule names must be unique within {name!r}: {names}")

    class RulePass(Pass):
        recursive = True
        rules = rule_list

        def run(self, graph: Graph, ctx: PassContext) -> bool:
            try:
                return rewrite(graph, self.rules, ctx, ctx.counters)
            except (RuleError, RewriteLimitError) as e:
                raise type(e)(f"pass {self.name!r}: {e}") from e.__cause__

    RulePass.__name__ = f"RulePass_{name.replace('-', '_')}"
    RulePass.description = description or f"pattern rules: {', '.join(names)}"
    RulePass.lossless = lossless
    register_pass(name, replace=replace, lossless=lossless)(RulePass)
    return RulePass
