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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphopt.errors import PassError
from graphopt.ir import Graph, Node, Value
from graphopt.passes_api import Pass, PassContext, register_pass
from graphopt.tensors import Tensor

STANDARD = frozenset({"", "ai.onnx"})


class PatternError(PassError):
    """A malformed pattern or rule, reported when it is built or registered."""


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
    """The match of ``rule`` rooted at ``node``, or None."""
    m = Match(graph, node, ctx)
    if not _match_node(rule.pattern, node, m, graph):
        return None
    if not _inner_outputs_private(m, graph):
        return None
    if rule.condition is not None and not rule.condition(m):
        return None
    return m


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
    """Build the replacement of a match and splice it in; False (graph untouched) if the builder declines."""
    b = Builder(m.graph, m.root)
    result = rule.replace(m, b)
    if result is None:
        for node in reversed(b.created):
            m.graph.remove(node)
        return False
    new = [result] if isinstance(result, Value) else list(result)
    outs = list(m.root.outputs)
    if len(new) != len(outs):
        raise ValueError(f"rule {rule.name!r} returned {len(new)} values for {len(outs)} outputs of {m.root.op_type}")
    if all(v is None or v is o for v, o in zip(new, outs, strict=True)):
        for node in reversed(b.created):  # the root's own outputs: nothing to replace, so nothing changed
            m.graph.remove(node)
        return False
    for old, value in zip(outs, new, strict=True):
        if old is not None and value is not None and old is not value:
            m.graph.replace_all_uses_with(old, value)
    # m.nodes is in match order (each node before the inputs it matched), so readers go before what they read
    for node in m.nodes:
        if node.graph is m.graph and all(o is None or (not o.uses and o not in m.graph.outputs) for o in node.outputs):
            m.graph.remove(node)
    return True


def rewrite(graph: Graph, rules: Iterable[Rule], ctx: PassContext, counts: dict[str, int] | None = None) -> bool:
    """Apply ``rules`` over ``graph`` until none fires (at most 10 sweeps); count firings per rule in ``counts``."""
    ordered = sorted(rules, key=lambda r: -r.priority)
    by_op: dict[str, list[Rule]] = {}
    for r in ordered:
        by_op.setdefault(r.pattern.op_type, []).append(r)
    changed = False
    for _ in range(10):
        fired = False
        for node in graph:
            if node.graph is not graph:
                continue
            for r in by_op.get(node.op_type, ()):
                m = match(r, node, graph, ctx)
                if m is not None and apply(r, m):
                    fired = True
                    if counts is not None:
                        counts[r.name] = counts.get(r.name, 0) + 1
                    break
        changed |= fired
        if not fired:
            break
    return changed


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
            return rewrite(graph, self.rules, ctx, ctx.counters)

    RulePass.__name__ = f"RulePass_{name.replace('-', '_')}"
    RulePass.description = description or f"pattern rules: {', '.join(names)}"
    RulePass.lossless = lossless
    register_pass(name, replace=replace, lossless=lossless)(RulePass)
    return RulePass
