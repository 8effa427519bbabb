"""Pattern rewrites: describe a small subgraph, a condition and a replacement; register rules as a pass.

    from graphopt.patterns import Op, Opt, Var, Const, Rule, RuleSet

    # x * 2  ->  x + x
    double = Rule(
        "mul2-to-add",
        Op("Mul", Var("x"), Const("two", where=lambda a: a.size == 1 and a.item() == 2), commutative=True),
        replace=lambda m, b: b.op("Add", m["x"], m["x"]),
    )
    # a pattern: Relu or LeakyRelu after a Conv with or without a bias (m["b"] is None when absent)
    act = Op(("Relu", "LeakyRelu"), Op("Conv", Var("x"), Const("w"), Opt(Const("b")), name="conv"), name="act")
    rules = RuleSet([double]) + other_rules  # rule sets join with +
    rules.register("my-rules")  # now a pass: graphopt.optimize(model, passes="my-rules")

A pattern is a tree of elements:

* :class:`Op` -- a node: one op type or alternatives (``Op(("Relu", "LeakyRelu"), ...)``, ``"com.microsoft::Gelu"`` for
  another domain), attribute conditions, a node predicate, and input patterns. Its inputs are positional:
  :class:`Opt` (the input may be omitted, an empty name in the middle or missing at the end), :class:`Absent` (must
  be omitted), and a last :class:`Rest` (or ``...``) for the remaining inputs of a variadic op (Concat, Sum). Without a
  Rest, a node with more (non-empty) inputs than the pattern lists does not match.
* :class:`Var` -- any value; :class:`Const` -- a constant value, optionally with a condition on its data.
* ``a | b`` (:class:`Or`) -- the first alternative that matches.

A name given to an element binds what it matched (a Value for Var and Const, the Node for Op, a tuple of Values for
Rest, None for an omitted Opt), and a name used twice must match the same thing. The root Op's outputs are what the
replacement replaces; every inner Op's outputs must be read only inside the match and not be graph outputs, unless the
Op says ``shared=True`` (then it is kept for its other readers). ``commutative=True`` also tries a two-input Op's
inputs swapped.

``condition(m)`` may veto a match, with a reason: ``return m.decline("pads not zero")`` or ``raise Decline(...)``
(plain False counts as "condition false"). ``replace(m, b)`` builds the new nodes with ``b.op(...)``, ``b.copy(node,
inputs=..., attrs=..., drop=...)`` and ``b.const(...)`` and returns the value that replaces the root's output (or a
list, one per root output; None or ``m.decline(...)`` to skip the match). The new nodes go just before the root;
matched nodes nobody reads any more are removed, with the initializers only they read. Rules with a higher
``priority`` are tried first at each node; a rule with ``opsets=(lo, hi)`` (inclusive, None for open; or a dict by
domain) is tried only on models whose opset lies in the range. The rewriter counts firings per rule
(``PassStats.counts``) and declines per rule and reason (``PassStats.declines``; each declined node once);
as a pass of the PassManager it also runs inside If/Loop/Scan bodies and function bodies. Conditions read shapes and
types through :meth:`Match.shape` / :meth:`Match.dtype` (:func:`shape_of`, :func:`dtype_of`).

The rewriter terminates on any rule set: a sweep visits only the nodes that were there when it began, a replacement
that would trade the matched nodes for equivalent ones is declined, and rules that keep firing past ``MAX_SWEEPS``
sweeps or ``FIRINGS_PER_NODE`` firings per node raise :class:`RewriteLimitError` naming them. An exception in a
rule's own code is raised as :class:`RuleError` naming the rule (``GRAPHOPT_DEBUG=1``: the original exception).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphopt.core.ir import STANDARD_DOMAINS, Attribute, Graph, Node, Value
from graphopt.core.tensors import Tensor
from graphopt.engine.passes_api import Pass, PassContext, debug_enabled, register_pass
from graphopt.errors import PassError

STANDARD = STANDARD_DOMAINS


class PatternError(PassError):
    """A malformed pattern or rule, reported when it is built or registered."""


class RuleError(PassError):
    """A rule's own code (``condition``, ``replace``, a ``where`` or attribute predicate) raised, or its replacement
    was malformed; the message names the rule. The original exception is the ``__cause__`` (``GRAPHOPT_DEBUG=1``
    lets it propagate unwrapped, with its traceback)."""


class RewriteLimitError(PassError):
    """Rules kept firing past the rewriter's caps (sweeps, or firings relative to the graph's size): a rule set that
    does not terminate, typically a replacement that re-creates its own pattern. The message names the rules."""


class Decline(Exception):  # noqa: N818 - raised by a rule's code to decline a match, not an error
    """Raised by a rule's ``condition`` or ``replace`` to leave a match alone; the reason is counted per rule."""

    def __init__(self, reason: str = "declined") -> None:
        super().__init__(reason)
        self.reason = str(reason) or "declined"


class Declined:
    """What :meth:`Match.decline` returns: false, with the reason the rule left the match alone."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = str(reason) or "declined"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Declined({self.reason!r})"


CONDITION_FALSE = "condition false"
REPLACE_NONE = "replace returned None"
NO_GAIN = "no gain (equivalent nodes)"
FEEDS_QUANTIZER = "output feeds a QuantizeLinear: float rounding would flip int8 steps"
"""Why a rule declared ``exact=False`` left a match alone (see :func:`reaches_quantizer`)."""

QUANTIZERS = frozenset({"QuantizeLinear", "DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM"})
"""Ops that round a float input to integer steps (ai.onnx and com.microsoft): a last-bit change in their float input
may move an output by a whole step, which the dequantized graph after it carries on and amplifies."""
_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def has_quantizer(graph: Graph) -> bool:
    """Whether ``graph`` or a graph nested in it holds a quantizer (:data:`QUANTIZERS`)."""
    return any(n.op_type in QUANTIZERS for n in graph.all_nodes())


def _quantizes_inside(node: Node, functions: Mapping[tuple[str, str], bool]) -> bool:
    """Whether ``node`` rounds to integer steps itself or inside: a quantizer, an If/Loop/Scan whose bodies hold one
    (a value it reads may reach it there), or a call of a model-local function whose body holds one."""
    if node.op_type in QUANTIZERS:
        return True
    if functions.get((node.domain or "", node.op_type)):
        return True
    return any(has_quantizer(g) for g in node.subgraphs())


def _functions_with_quantizer(model: Any) -> dict[tuple[str, str], bool]:
    functions = getattr(model, "functions", None) or {}
    return {(key[0] or "", key[1]): has_quantizer(f.graph) for key, f in functions.items()}


def reaches_quantizer(
    values: Iterable[Value | None], graph: Graph, main: Graph | None = None, model: Any = None
) -> bool:
    """Whether a change in the last bits of ``values`` (computed in ``graph``) can reach a quantizer's input: followed
    forward through every node whose output is a float (or of unknown type): value-preserving ops (Reshape, Transpose,
    Identity...) and arithmetic alike, since an Add or a MatMul carries a rounding difference on to the QuantizeLinear
    after it. An output of a graph other than ``main`` (the model's graph; None: ``graph``'s outermost graph), that is
    of an If/Loop/Scan body or a function body, counts as reaching one: its readers outside are not followed. A node
    holding a quantizer inside (an If/Loop/Scan body, or the body of ``model``'s function it calls) counts as one."""
    functions = _functions_with_quantizer(model)
    if main is None:
        main = graph
        while main.parent is not None:
            main = main.parent
    seen: set[int] = set()
    todo = [v for v in values if v is not None]
    while todo:
        v = todo.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        g = v.producer.graph if v.producer is not None and v.producer.graph is not None else graph
        if g is not main and g.is_output(v):
            return True
        for node, _ in v.uses:
            if _quantizes_inside(node, functions):
                return True
            for out in node.outputs:
                if out is not None and (out.dtype is None or out.dtype in _FLOAT_TYPES):
                    todo.append(out)
    return False


def model_has_quantizer(ctx: PassContext) -> bool:
    """Whether the model of ``ctx`` (its graph, the bodies in it, its functions) holds a quantizer."""
    model = ctx.model
    return has_quantizer(model.graph) or any(has_quantizer(f.graph) for f in model.functions.values())


MAX_SWEEPS = 32
"""Sweeps over a graph before the rewriter gives up with a RewriteLimitError (a sweep that fires nothing ends it)."""
FIRINGS_PER_NODE = 8
"""Total firings allowed per node of the graph (plus ``FIRINGS_SLACK``) before a RewriteLimitError."""
FIRINGS_SLACK = 256


# --------------------------------------------------------------------------------------------------------------------
# shapes and types: the one accessor conditions use
# --------------------------------------------------------------------------------------------------------------------
def shape_of(v: Value | None) -> tuple[int | str | None, ...] | None:
    """The shape a rule may rely on: a constant's own dims, else the value's recorded shape; None when unknown.

    Every condition reads shapes through here (or :meth:`Match.shape`), so what counts as trustworthy shape
    information is decided in one place."""
    if v is None:
        return None
    t = v.constant()
    if t is not None:
        return tuple(t.dims)
    return v.shape


def dtype_of(v: Value | None) -> int | None:
    """The element type a rule may rely on (ONNX ``TensorProto`` enum), or None when unknown."""
    if v is None:
        return None
    t = v.constant()
    if t is not None:
        return t.dtype
    return v.dtype


# --------------------------------------------------------------------------------------------------------------------
# pattern elements
# --------------------------------------------------------------------------------------------------------------------
class Pattern:
    """Base class of pattern elements; ``a | b`` matches either (the first that matches)."""

    name: str | None = None

    def __or__(self, other: Pattern) -> Or:
        return Or(self, other)

    def names(self) -> Iterator[str]:
        """Every name this element and its inputs bind."""
        if self.name:
            yield self.name


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


class Opt(Pattern):
    """An input that may be omitted (an empty input name, or missing at the end); when present it must match
    ``pattern`` (default: any value). When omitted, every name inside binds None."""

    def __init__(self, pattern: Pattern | None = None) -> None:
        if pattern is not None and not isinstance(pattern, Pattern) or isinstance(pattern, Opt | Absent | Rest):
            raise PatternError(f"Opt takes one pattern (Var, Const, Op or an alternative), got {pattern!r}")
        self.pattern = pattern if pattern is not None else Var()

    def names(self) -> Iterator[str]:
        yield from self.pattern.names()

    def __repr__(self) -> str:
        return f"Opt({self.pattern!r})"


class Absent(Pattern):
    """An input that must be omitted (an empty name, or missing at the end)."""

    def __repr__(self) -> str:
        return "Absent()"


class Rest(Pattern):
    """The last input pattern of an Op: all remaining inputs (at least ``min``), each matching ``pattern``; without a
    pattern any value, omitted ones included. ``name`` binds the tuple of those inputs. ``...`` is ``Rest()``."""

    def __init__(self, pattern: Pattern | None = None, *, name: str | None = None, min: int = 0) -> None:  # noqa: A002
        if pattern is not None and (not isinstance(pattern, Pattern) or isinstance(pattern, Rest | Absent)):
            raise PatternError(f"Rest takes one pattern (Var, Const, Op, Opt or an alternative), got {pattern!r}")
        if not isinstance(min, int) or min < 0:
            raise PatternError(f"Rest(min=...) must be a non-negative int, got {min!r}")
        self.pattern, self.name, self.min = pattern, name, min

    def names(self) -> Iterator[str]:
        if self.name:
            yield self.name
        if self.pattern is not None:
            yield from self.pattern.names()

    def __repr__(self) -> str:
        return f"Rest({self.pattern!r})" if self.pattern is not None else "Rest()"


class Or(Pattern):
    """Alternatives: the first that matches (``a | b`` builds one). At the root of a rule, all must be Ops."""

    def __init__(self, *alternatives: Pattern) -> None:
        flat: list[Pattern] = []
        for a in alternatives:
            if not isinstance(a, Pattern) or isinstance(a, Rest):
                raise PatternError(f"an alternative must be a Var, Const, Op, Opt or Absent, got {a!r}")
            flat.extend(a.alternatives if isinstance(a, Or) else [a])
        if len(flat) < 2:
            raise PatternError("Or needs at least two alternatives")
        self.alternatives = tuple(flat)

    def names(self) -> Iterator[str]:
        for a in self.alternatives:
            yield from a.names()

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.alternatives))


def _op_key(entry: str, domain: str) -> tuple[str, str]:
    """(domain, op type) of an op type entry: ``"Relu"`` in ``domain``, or ``"com.microsoft::Gelu"``."""
    if not isinstance(entry, str) or not entry:
        raise PatternError(f"Op needs op type strings, got {entry!r}")
    if "::" in entry:
        dom, _, op = entry.rpartition("::")
        if not op:
            raise PatternError(f"Op type {entry!r} names no op after the domain")
    else:
        dom, op = domain, entry
    return ("" if dom in STANDARD else dom), op


class Op(Pattern):
    """A node: ``Op(op_type, *inputs, domain="", attrs=None, where=None, name=None, commutative=False,
    shared=False, outputs=None)``.

    ``op_type`` is a string or a tuple of alternatives; an entry ``"domain::Type"`` names another domain than
    ``domain`` (the standard domain is ``""``, also written ``"ai.onnx"``). ``inputs`` are patterns, :class:`Opt`,
    :class:`Absent` and a last :class:`Rest` (``...``). ``attrs`` maps attribute names to a required value or to a
    predicate ``f(value_or_None) -> bool`` (None when the node does not set it); ``where(node)`` may restrict the
    node further. ``outputs`` is the node's output count (default: any).
    """

    def __init__(
        self,
        op_type: str | Sequence[str],
        *inputs: Pattern | Any,
        domain: str = "",
        attrs: Mapping[str, Any] | None = None,
        where: Callable[[Node], bool] | None = None,
        name: str | None = None,
        commutative: bool = False,
        shared: bool = False,
        outputs: int | None = None,
    ) -> None:
        entries = [op_type] if isinstance(op_type, str) else list(op_type) if isinstance(op_type, tuple | list) else []
        if not entries:
            raise PatternError(f"Op needs an op type string or a tuple of them, got {op_type!r}")
        self.op_keys = frozenset(_op_key(e, domain) for e in entries)
        self.op_type = entries[0] if len(entries) == 1 else tuple(entries)
        self.op_types = frozenset(op for _, op in self.op_keys)
        label = entries[0] if len(entries) == 1 else "|".join(entries)
        ins: list[Pattern] = []
        for i, x in enumerate(inputs):
            if x is Ellipsis:
                x = Rest()
            if not isinstance(x, Pattern):
                raise PatternError(f"Op({label!r}) input #{i} is {x!r}; use Var(), Const(), Op(), Opt() or Rest()")
            if isinstance(x, Rest) and i != len(inputs) - 1:
                raise PatternError(f"Op({label!r}): Rest (or ...) must be the last input pattern")
            ins.append(x)
        if attrs is not None and not all(isinstance(k, str) for k in attrs):
            raise PatternError(f"Op({label!r}) attrs must be keyed by attribute name")
        if where is not None and not callable(where):
            raise PatternError(f"Op({label!r}) where must be a function (node) -> bool")
        self.rest = ins.pop() if ins and isinstance(ins[-1], Rest) else None
        self.inputs, self.domain = tuple(ins), domain
        self.attrs = dict(attrs or {})
        self.where = where
        self.name, self.commutative, self.shared, self.outputs = name, commutative, shared, outputs
        if commutative and (len(self.inputs) != 2 or self.rest is not None):
            raise PatternError(f"Op({label!r}, commutative=True) needs exactly two inputs")

    def accepts(self, node: Node) -> bool:
        """Whether ``node``'s op type and domain are among this Op's."""
        dom = node.domain or ""
        return (("" if dom in STANDARD else dom), node.op_type) in self.op_keys

    def names(self) -> Iterator[str]:
        if self.name:
            yield self.name
        for p in self.inputs:
            yield from p.names()
        if self.rest is not None:
            yield from self.rest.names()

    def __repr__(self) -> str:
        ins = [*map(repr, self.inputs), *([repr(self.rest)] if self.rest is not None else [])]
        return f"Op({self.op_type!r}, {', '.join(ins)})"


def _root_ops(p: Pattern) -> list[Op]:
    """The Ops a rule's root may be (its alternatives); PatternError if any is not an Op."""
    alts = list(p.alternatives) if isinstance(p, Or) else [p]
    if not alts or not all(isinstance(a, Op) for a in alts):
        return []
    return alts  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------------
# matches and the builder
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Match:
    """A match of a rule: ``m[name]`` is what the name bound (a Value for Var/Const, the Node for an Op, a tuple for
    Rest, None for an omitted Opt); ``m.node(name)``, ``m.value(name)``, ``m.const(name)`` read it typed."""

    graph: Graph
    root: Node
    ctx: PassContext
    bindings: dict[str, Any] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    shared: set[int] = field(default_factory=set)
    declined: str | None = None
    """Why the rule left this match alone (set when its condition or replacement declined)."""

    def __getitem__(self, name: str) -> Any:
        return self.bindings[name]

    def __contains__(self, name: str) -> bool:
        return name in self.bindings

    def get(self, name: str, default: Any = None) -> Any:
        """What ``name`` bound, or ``default`` when it bound nothing (or None: an omitted Opt)."""
        x = self.bindings.get(name)
        return default if x is None else x

    def node(self, name: str) -> Node:
        """The node an ``Op(..., name=name)`` matched."""
        x = self.bindings[name]
        if not isinstance(x, Node):
            raise KeyError(f"{name!r} is not bound to a node (an Op's name)")
        return x

    def value(self, name: str) -> Value | None:
        """The value a Var or Const named ``name`` matched (None for an omitted Opt)."""
        x = self.bindings[name]
        if x is not None and not isinstance(x, Value):
            raise KeyError(f"{name!r} is not bound to a value")
        return x

    def const(self, name: str) -> np.ndarray:
        v = self.bindings[name]
        t = v.constant() if isinstance(v, Value) else None
        if t is None:
            raise KeyError(f"{name!r} is not bound to a constant")
        return t.numpy()

    def _value_of(self, x: str | Value | None) -> Value | None:
        if isinstance(x, str):
            x = self.bindings[x]
            if isinstance(x, Node):
                x = x.outputs[0] if x.outputs else None
        return x

    def shape(self, x: str | Value | None) -> tuple[int | str | None, ...] | None:
        """The shape of a bound value (a name, or a Value; an Op's name means its first output), via
        :func:`shape_of`; None when unknown."""
        return shape_of(self._value_of(x))

    def static_shape(self, x: str | Value | None) -> tuple[int, ...] | None:
        """The shape when every dim is a known int, else None."""
        s = self.shape(x)
        return s if s is not None and all(isinstance(d, int) for d in s) else None  # type: ignore[return-value]

    def rank(self, x: str | Value | None) -> int | None:
        s = self.shape(x)
        return None if s is None else len(s)

    def dtype(self, x: str | Value | None) -> int | None:
        """The element type of a bound value, via :func:`dtype_of`; None when unknown."""
        return dtype_of(self._value_of(x))

    def opset(self, domain: str = "") -> int | None:
        """The opset the model imports for ``domain``."""
        return self.ctx.opset(domain)

    def decline(self, reason: str) -> Declined:
        """Leave this match alone for ``reason`` (counted per rule): ``return m.decline("pads not zero")`` from a
        condition or a replacement."""
        self.declined = str(reason) or "declined"
        return Declined(self.declined)


class Builder:
    """Makes the replacement's nodes; they are inserted just before the matched root."""

    def __init__(self, graph: Graph, root: Node) -> None:
        self.graph, self.root = graph, root
        self.created: list[Node] = []
        self.consts: list[Value] = []
        self.copies: list[tuple[Node, Node]] = []  # (copy, original): the copy takes the name once the original goes

    def const(self, array: Any, name: str = "const") -> Value:
        """A new initializer holding ``array`` (a numpy array or scalar, or a graphopt Tensor)."""
        tensor = array if isinstance(array, Tensor) else Tensor.from_numpy(np.asarray(array))
        v = self.graph.make_constant(tensor, f"{self.root.name or 'rewrite'}_{name}")
        self.consts.append(v)
        return v

    def _value(self, x: Any) -> Value | None:
        if x is None or isinstance(x, Value):
            return x
        if isinstance(x, np.ndarray | np.generic | Tensor):
            return self.const(x)
        raise TypeError(f"a node input must be a Value, None or a numpy array, got {type(x).__name__}")

    def _insert(self, node: Node) -> Any:
        for i, out in enumerate(node.outputs):
            if out is not None:
                out.name = self.graph.unique_name(f"{node.name}_out{i}")
        self.graph.insert_before(self.root, node)
        self.created.append(node)
        return node.output if len(node.outputs) == 1 else tuple(node.outputs)

    def op(
        self, op_type: str, *inputs: Value | np.ndarray | None, domain: str = "", outputs: int = 1, **attrs: Any
    ) -> Any:
        """A new node; numpy arrays among ``inputs`` become constants. Returns its output (a tuple if several)."""
        values = [self._value(x) for x in inputs]
        base = f"{self.root.name or op_type}_{op_type}"
        node = Node(op_type, values, attrs, num_outputs=outputs, domain=domain, name=self.graph.unique_name(base))
        return self._insert(node)

    def copy(
        self,
        node: Node,
        *,
        inputs: Sequence[Any] | Mapping[int, Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
        drop: Iterable[str] = (),
        op_type: str | None = None,
        domain: str | None = None,
    ) -> Any:
        """A new node like ``node`` (op type, domain, attributes, doc string, metadata, output count) with changes:
        ``inputs`` a full list, or ``{index: value}`` edits (None omits an input; numpy arrays become constants);
        ``attrs`` attributes to set; ``drop`` attributes to remove; ``op_type`` / ``domain`` to change. It takes
        ``node``'s name once ``node`` is removed. Returns its output (a tuple if several)."""
        if any(True for _ in node.subgraphs()):
            raise ValueError(f"b.copy cannot copy {node.op_type} node {node.name!r}: it holds subgraphs")
        if isinstance(inputs, Mapping):
            values = list(node.inputs)
            for i, x in inputs.items():
                if not isinstance(i, int) or i < 0:
                    raise ValueError(f"b.copy inputs: {i!r} is not an input index")
                values.extend([None] * (i + 1 - len(values)))
                values[i] = x
        else:
            values = list(node.inputs if inputs is None else inputs)
        ins = [self._value(x) for x in values]
        while ins and ins[-1] is None:
            ins.pop()
        drop = set(drop)
        kept = {k: _clone_attr(a) for k, a in node.attrs.items() if k not in drop and k not in (attrs or {})}
        new = Node(
            op_type or node.op_type,
            ins,
            {**kept, **dict(attrs or {})},
            num_outputs=len(node.outputs),
            domain=node.domain if domain is None else domain,
            name=self.graph.unique_name(f"{node.name or node.op_type}_rewritten"),
            overload=node.overload,
            doc_string=node.doc_string,
        )
        new.metadata_props = dict(node.metadata_props)
        self.copies.append((new, node))
        return self._insert(new)


def _clone_attr(a: Attribute) -> Attribute:
    """A shallow copy of an attribute (as ``copy.copy``, without its generic and slow protocol)."""
    new = Attribute(a.name, a.value, a.type, ref_attr_name=a.ref_attr_name, doc_string=a.doc_string)
    new.untyped = a.untyped
    return new


Replacement = Callable[[Match, Builder], Any]
OpsetRange = tuple[int | None, int | None]


class Rule:
    """A named rewrite: ``Rule(name, pattern, replace, condition=None, priority=0, opsets=None, exact=True)``.

    ``pattern`` is the root Op (or alternatives of Ops). ``opsets`` bounds the default-domain opset
    ``(lo, hi)`` (inclusive; None is open), or maps domains to such ranges; on a model outside them (or that does
    not import a bounded domain) the rule is never tried. ``rule + other`` makes a :class:`RuleSet`.

    ``exact`` says whether the replacement computes the root's outputs bit for bit as the matched nodes did under
    onnxruntime. A rewrite that is exact in real arithmetic only (a fused kernel such as Gelu, constants folded into a
    weight, a reassociation, a sum in another order) says ``exact=False`` (or a function ``(match) -> bool`` when it
    depends on the match); such a match is declined (:data:`FEEDS_QUANTIZER`) when the root's outputs reach a
    quantizer (:func:`reaches_quantizer`), where a last-bit difference becomes whole int8 steps. Checked after
    ``condition``, and only in a model that holds a quantizer."""

    def __init__(
        self,
        name: str,
        pattern: Op | Or,
        replace: Replacement,
        condition: Callable[[Match], Any] | None = None,
        priority: int = 0,
        opsets: OpsetRange | Mapping[str, OpsetRange] | None = None,
        exact: bool | Callable[[Match], bool] = True,
    ) -> None:
        self.name, self.pattern, self.replace = name, pattern, replace
        self.condition, self.priority = condition, priority
        if not isinstance(exact, bool) and not callable(exact):
            raise PatternError(f"rule {name!r}: exact must be a bool or a function (match) -> bool")
        self.exact = exact
        if not isinstance(name, str) or not name:
            raise PatternError(f"a rule needs a name string, got {name!r}")
        self.roots = _root_ops(pattern) if isinstance(pattern, Pattern) else []
        if not self.roots:
            raise PatternError(f"rule {name!r}: the pattern's root must be an Op (or Ops joined by |), got {pattern!r}")
        if not callable(replace):
            raise PatternError(f"rule {name!r}: replace must be a function (match, builder) -> value")
        if condition is not None and not callable(condition):
            raise PatternError(f"rule {name!r}: condition must be a function (match) -> bool")
        self.opsets = _opset_bounds(name, opsets)

    def applies(self, ctx: PassContext) -> bool:
        """Whether the model's opsets are within this rule's bounds."""
        for domain, (lo, hi) in self.opsets.items():
            have = ctx.opset(domain)
            if have is None or (lo is not None and have < lo) or (hi is not None and have > hi):
                return False
        return True

    @property
    def op_types(self) -> frozenset[str]:
        """The op types the root can match (what the rewriter indexes the rule by)."""
        return frozenset().union(*(r.op_types for r in self.roots))

    def __add__(self, other: Rule | Iterable[Rule]) -> RuleSet:
        return RuleSet([self]) + other

    def __radd__(self, other: Iterable[Rule]) -> RuleSet:
        return RuleSet(other) + self

    def __repr__(self) -> str:
        return f"Rule({self.name!r}, {self.pattern!r})"


def _opset_bounds(rule: str, opsets: Any) -> dict[str, OpsetRange]:
    if opsets is None:
        return {}
    items = opsets.items() if isinstance(opsets, Mapping) else [("", opsets)]
    bounds: dict[str, OpsetRange] = {}
    for domain, rng in items:
        ok = isinstance(domain, str) and isinstance(rng, tuple | list) and len(rng) == 2
        ok = ok and all(b is None or (isinstance(b, int) and not isinstance(b, bool) and b >= 1) for b in rng)
        if not ok or (rng[0] is not None and rng[1] is not None and rng[0] > rng[1]):
            raise PatternError(
                f"rule {rule!r}: opsets must be (lo, hi) with ints >= 1 or None, lo <= hi (or a dict of them by "
                f"domain), got {opsets!r}"
            )
        bounds["" if domain in STANDARD else domain] = (rng[0], rng[1])
    return bounds


class RuleSet(Sequence[Rule]):
    """An ordered collection of rules with unique names; ``a + b`` joins rule sets (and rules, lists of rules).

    ``rules.rewrite(graph, ctx)`` applies them (counting into the running pass's statistics);
    ``rules.register("name")`` makes them a pass."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        bad = [r for r in self.rules if not isinstance(r, Rule)]
        if bad:
            raise PatternError(f"a RuleSet holds Rule objects, got {bad[0]!r}")
        names = [r.name for r in self.rules]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise PatternError(f"rule names must be unique within a rule set: {', '.join(map(repr, dups))}")

    def __add__(self, other: Rule | Iterable[Rule]) -> RuleSet:
        return RuleSet([*self.rules, *([other] if isinstance(other, Rule) else other)])

    def __radd__(self, other: Iterable[Rule]) -> RuleSet:
        return RuleSet([*other, *self.rules])

    def __len__(self) -> int:
        return len(self.rules)

    def __getitem__(self, i: Any) -> Any:
        return self.rules[i]

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __repr__(self) -> str:
        return f"RuleSet([{', '.join(r.name for r in self.rules)}])"

    def rewrite(self, graph: Graph, ctx: PassContext, *, sweeps: int | None = None) -> bool:
        """Apply the rules over ``graph`` until none fires, or for at most ``sweeps`` sweeps (see :func:`rewrite`);
        firings go to ``ctx.counters`` and declines to ``ctx.declines``, which the PassManager keeps as the running
        pass's statistics."""
        return rewrite(graph, self.rules, ctx, ctx.counters, sweeps=sweeps)

    def register(self, name: str, *, description: str = "", replace: bool = False, lossless: bool = True) -> type[Pass]:
        """Register these rules as one pass called ``name``; returns the pass class."""
        return register_rules(name, self, description=description, replace=replace, lossless=lossless)


# --------------------------------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------------------------------
def _save(m: Match) -> tuple[int, int]:
    """A mark to undo a failed alternative to: bindings and matched nodes only grow while matching."""
    return len(m.bindings), len(m.nodes)


def _restore(m: Match, saved: tuple[int, int]) -> None:
    n_bindings, n_nodes = saved
    while len(m.bindings) > n_bindings:
        m.bindings.popitem()  # the last bound first: a dict pops in reverse insertion order
    for node in m.nodes[n_nodes:]:
        m.shared.discard(id(node))  # a node is matched once, so only nodes matched since the mark leave
    del m.nodes[n_nodes:]


def _match_input(p: Pattern, v: Value | None, m: Match, graph: Graph) -> bool:
    """Match one input position; ``v`` None is an omitted input."""
    if isinstance(p, Opt):
        if v is None:
            return all(_bind(n, None, m) for n in p.names())
        return _match_input(p.pattern, v, m, graph)
    if isinstance(p, Absent):
        return v is None
    if isinstance(p, Or):
        for alt in p.alternatives:
            saved = _save(m)
            if _match_input(alt, v, m, graph):
                return True
            _restore(m, saved)
        return False
    return _match_value(p, v, m, graph)


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
    elif isinstance(p, Opt | Absent | Or):
        return _match_input(p, v, m, graph)
    else:
        raise TypeError(f"not a pattern element: {p!r}")
    return _bind(p.name, v, m)


def _equal(arr: np.ndarray, value: Any) -> bool:
    try:
        return bool(np.all(arr == np.asarray(value)))
    except ValueError:
        return False


def _bind(name: str | None, x: Any, m: Match) -> bool:
    if name is None:
        return True
    if name not in m.bindings:
        m.bindings[name] = x
        return True
    return m.bindings[name] is x


def _attr_ok(want: Any, have: Any) -> bool:
    if callable(want):
        return bool(want(have))
    if have == want:
        return True
    return isinstance(have, list | tuple) and isinstance(want, list | tuple) and list(have) == list(want)


def _match_node(p: Op, node: Node, m: Match, graph: Graph) -> bool:
    if not p.accepts(node):
        return False
    if p.outputs is not None and len(node.outputs) != p.outputs:
        return False
    ins = list(node.inputs)
    while ins and ins[-1] is None:
        ins.pop()  # trailing omitted inputs are the same as missing ones
    fixed = len(p.inputs)
    if p.rest is None and len(ins) > fixed:
        return False
    if p.rest is not None and len(ins) - fixed < p.rest.min:
        return False
    for key, want in p.attrs.items():
        if not _attr_ok(want, node.attr(key)):
            return False
    if p.where is not None and not p.where(node):
        return False
    if node in m.nodes:
        return False
    n = len(ins)
    for swap in (False, True) if p.commutative else (False,):
        saved = _save(m)
        m.nodes.append(node)
        ok = True
        for k, pk in enumerate(p.inputs):
            i = 1 - k if swap else k  # commutative Ops have exactly two inputs
            if not _match_input(pk, ins[i] if i < n else None, m, graph):
                ok = False
                break
        if ok and _match_rest(p.rest, ins[fixed:], m, graph) and _bind(p.name, node, m):
            return True
        _restore(m, saved)
    return False


def _match_rest(rest: Rest | None, values: list[Value | None], m: Match, graph: Graph) -> bool:
    if rest is None:
        return True
    if rest.pattern is not None and not all(_match_input(rest.pattern, v, m, graph) for v in values):
        return False
    return _bind(rest.name, tuple(values), m)


def _match_root(rule: Rule, node: Node, m: Match) -> bool:
    for root in rule.roots:
        if not root.accepts(node):
            continue
        saved = _save(m)
        if _match_node(root, node, m, m.graph):
            return True
        _restore(m, saved)
    return False


def match(rule: Rule, node: Node, graph: Graph, ctx: PassContext) -> Match | None:
    """The match of ``rule`` rooted at ``node``, or None (also when its condition declines: then
    :func:`match_or_decline` tells why). An exception from the rule's own code (a ``where`` or attribute predicate,
    ``condition``) is raised as a RuleError naming the rule."""
    m = match_or_decline(rule, node, graph, ctx)
    return m if m is not None and m.declined is None else None


def match_or_decline(
    rule: Rule, node: Node, graph: Graph, ctx: PassContext, *, quantized: bool | Callable[[], bool] | None = None
) -> Match | None:
    """Like :func:`match`, but a match the condition declined is returned with ``m.declined`` set to the reason.
    ``quantized`` says whether the model holds a quantizer (or a function that says it; None: look), asked only for
    a match of a rule that is not ``exact``."""
    m = Match(graph, node, ctx)
    try:
        if not _rule_code(rule, "pattern predicate", _match_root, rule, node, m):
            return None
    except Decline:
        return None  # a predicate that declines is a plain mismatch
    if not _inner_outputs_private(m, graph):
        return None
    if rule.condition is not None:
        try:
            ok = _rule_code(rule, "condition", rule.condition, m)
        except Decline as d:
            ok = m.decline(d.reason)
        if not ok:
            m.declined = ok.reason if isinstance(ok, Declined) else m.declined or CONDITION_FALSE
    if m.declined is None and rule.exact is not True:
        if quantized is None:
            quantized = model_has_quantizer(ctx)
        elif callable(quantized):
            quantized = quantized()
        if (
            quantized
            and not _exact_here(rule, m)
            and reaches_quantizer(m.root.outputs, graph, ctx.model.graph, ctx.model)
        ):
            m.decline(FEEDS_QUANTIZER)
    return m


def _exact_here(rule: Rule, m: Match) -> bool:
    if isinstance(rule.exact, bool):
        return rule.exact
    return bool(_rule_code(rule, "exact", rule.exact, m, passing=(PassError,)))


def _rule_code(
    rule: Rule, what: str, fn: Callable[..., Any], *args: Any, passing: tuple[type, ...] = (Decline, PassError)
) -> Any:
    """``fn(*args)``, a rule's own code (its pattern predicates, condition, ``exact`` or ``replace``): an exception
    other than ``passing`` (a Decline for the caller to count, a PassError) becomes the RuleError naming the rule and
    ``what`` raised it, or is re-raised as it is under GRAPHOPT_DEBUG."""
    try:
        return fn(*args)
    except passing:
        raise
    except Exception as e:
        if debug_enabled():
            raise
        raise _rule_error(rule, what, e) from e


def _rule_error(rule: Rule, what: str, e: Exception) -> RuleError:
    """The RuleError naming ``rule`` for an exception its ``what`` raised."""
    detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return RuleError(
        f"pattern rule {rule.name!r}: its {what} raised {type(e).__name__}{': ' + detail if detail else ''}"
    )


def _inner_outputs_private(m: Match, graph: Graph) -> bool:
    """Inner nodes (not shared) may be read only by matched nodes: checked once the whole match is known."""
    members = {id(n) for n in m.nodes}
    for node in m.nodes:
        if node is m.root or id(node) in m.shared:
            continue
        for out in node.outputs:
            if out is None:
                continue
            if out.is_graph_output(graph) or any(id(u) not in members for u, _ in out.uses):
                return False
    return True


def apply(rule: Rule, m: Match) -> bool:
    """Build the replacement of a match and splice it in; False (graph untouched, ``m.declined`` says why) if the
    builder declines, or if the replacement would only trade the matched nodes for equivalent ones (same ops,
    domains, attributes and inputs)."""
    b = Builder(m.graph, m.root)

    def decline(reason: str) -> bool:
        for node in reversed(b.created):
            if node.graph is m.graph:
                m.graph.remove(node)
        _drop_unread_initializers(m, b.consts)
        m.declined = reason
        return False

    try:
        result = _rule_code(rule, "replace", rule.replace, m, b)
    except Decline as d:
        return decline(d.reason)
    except BaseException:  # the RuleError, a PassError, an interrupt: the graph is put back first
        decline("error")
        raise
    if result is None:
        return decline(m.declined or REPLACE_NONE)
    if isinstance(result, Declined):
        return decline(result.reason)
    new = [result] if isinstance(result, Value) else list(result) if isinstance(result, list | tuple) else None
    outs = list(m.root.outputs)
    if new is None or not all(v is None or isinstance(v, Value) for v in new):
        decline("error")
        raise RuleError(f"pattern rule {rule.name!r}: replace returned {type(result).__name__}, not a Value or a list")
    if len(new) != len(outs):
        decline("error")
        raise RuleError(
            f"pattern rule {rule.name!r} returned {len(new)} values for {len(outs)} outputs of {m.root.op_type}"
        )
    if all(v is None or v is o for v, o in zip(new, outs, strict=True)):
        return decline(REPLACE_NONE)  # the root's own outputs: nothing to replace, so nothing changed
    if _equivalent_trade(m, b.created, new, outs):
        return decline(NO_GAIN)
    created = set(b.created)
    for old, value in zip(outs, new, strict=True):
        if old is not None and value is not None and old is not value:
            if value.producer in created and not value.has_type and old.has_type:
                value.dtype, value.shape = old.dtype, old.shape  # the new node computes the same value: same type
            m.graph.replace_all_uses_with(old, value)
    # m.nodes is in match order (each node before the inputs it matched), so readers go before what they read
    freed: list[Value | None] = list(b.consts)
    for node in m.nodes:
        if node.graph is m.graph and all(o is None or (not o.uses and o not in m.graph.outputs) for o in node.outputs):
            freed.extend(node.inputs)
            m.graph.remove(node)
    for copy, original in b.copies:
        if original.graph is None and copy.graph is m.graph and original.name:
            copy.name = original.name  # the copy takes the place of the node it rebuilt
    _drop_unread_initializers(m, freed)
    return True


def _drop_unread_initializers(m: Match, candidates: Iterable[Value | None]) -> None:
    """Initializers of the graph among ``candidates`` that nothing reads any more (and that are not graph inputs or
    outputs) go: the weights of removed nodes and the constants of a declined replacement."""
    graph = m.graph
    if m.ctx.model.pins_initializers(graph):
        return  # training info refers to main-graph initializers by name
    for v in candidates:
        if v is None or v.uses or not graph.is_initializer(v):
            continue
        if not v.is_graph_input(graph) and not v.is_graph_output(graph):
            del graph.initializers[v.name]  # type: ignore[arg-type]


def _equivalent_trade(m: Match, created: list[Node], new: list[Value | None], outs: list[Value | None]) -> bool:
    """Whether splicing in the replacement would leave the graph as it was up to names: the nodes it adds (the
    builder's, plus the Identity that keeps a graph output's name when the new value cannot take it) are equivalent,
    one for one, to the matched nodes it removes."""
    graph = m.graph
    if len(created) > len(m.nodes):
        return False  # more nodes than the match could remove: not a one-for-one trade (and no deep signatures)
    identities: list[Value] = []  # values a graph output's Identity would read
    for old, value in zip(outs, new, strict=True):
        if old is None or value is None or old is value or not old.is_graph_output(graph):
            continue
        if not graph.can_take_output(value, old):
            identities.append(value)
    if not identities and not created:
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
    # cheap first: the same number of nodes of the same op types, before any signature (constants' bytes) is made
    added_ops = sorted([("", "Identity")] * len(identities) + [(n.domain or "", n.op_type) for n in created])
    if added_ops != sorted((n.domain or "", n.op_type) for n in removed):
        return False
    created_set = set(created)
    added = [("Identity", "", (), (_value_sig(v, created_set),)) for v in identities]
    added.extend(_node_sig(n, created_set) for n in created)
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


def rewrite(
    graph: Graph,
    rules: Iterable[Rule],
    ctx: PassContext,
    counts: dict[str, int] | None = None,
    declines: dict[str, dict[str, int]] | None = None,
    sweeps: int | None = None,
) -> bool:
    """Apply ``rules`` over ``graph`` until none fires; count firings per rule in ``counts``, and declines per rule
    and reason in ``declines`` (default ``ctx.declines``; a node a rule declines in several sweeps counts once, and
    in several runs too when ``declines`` is the PassManager's ``DeclineCounts``).

    Rules whose ``opsets`` exclude the model are not tried. A sweep visits the nodes that were in the graph when it
    began (never the nodes its own firings created; the next sweep sees those), tries the rules at each, and a
    replacement that only trades nodes for equivalent ones is declined. Rules still firing after ``MAX_SWEEPS``
    sweeps, or after ``FIRINGS_PER_NODE`` firings per node of the graph, raise a RewriteLimitError naming them.

    ``sweeps`` stops after that many sweeps even if rules still fire: a pass that the PassManager runs to a fixed
    point anyway (the built-in cleanup rules at -O2) spares the sweep that would only confirm nothing fires.
    """
    if declines is None:
        declines = getattr(ctx, "declines", None)
    ordered = sorted((r for r in rules if r.applies(ctx)), key=lambda r: -r.priority)
    by_op: dict[str, list[Rule]] = {}
    for r in ordered:
        for op in sorted(r.op_types):
            by_op.setdefault(op, []).append(r)
    if not by_op:
        return False
    changed = False
    found: list[bool] = []

    def quantized() -> bool:  # looked up once per call, at the first match of a rule that is not exact
        if not found:
            found.append(model_has_quantizer(ctx))  # the rewrites make no quantizer
        return found[0]

    budget = FIRINGS_PER_NODE * len(graph) + FIRINGS_SLACK
    total = 0
    recent: deque[dict[str, int]] = deque(maxlen=4)  # firings per rule of the last sweeps, to name the culprits
    # declines already counted: by the caller's DeclineCounts (across runs of a pass), else in this call
    seen: Any = getattr(declines, "seen", None)
    if seen is None:
        seen = {}
    limit = MAX_SWEEPS if sweeps is None else max(1, min(sweeps, MAX_SWEEPS))
    for _ in range(limit):
        fired: dict[str, int] = {}
        recent.append(fired)
        present = {node for node in graph if node.op_type in by_op}
        if not present:
            break
        for node in graph:
            if node not in present or node.graph is not graph:
                continue
            for r in by_op.get(node.op_type, ()):
                m = match_or_decline(r, node, graph, ctx, quantized=quantized)
                if m is None:
                    continue
                if m.declined is None and apply(r, m):
                    fired[r.name] = fired.get(r.name, 0) + 1
                    if counts is not None:
                        counts[r.name] = counts.get(r.name, 0) + 1
                    total += 1
                    if total > budget:
                        raise _limit(recent, f"{total} firings on a graph of {len(graph)} nodes")
                    break
                reason = m.declined or REPLACE_NONE
                counted = seen.setdefault(node, set())
                if declines is not None and (r.name, reason) not in counted:
                    counted.add((r.name, reason))
                    per_rule = declines.setdefault(r.name, {})
                    per_rule[reason] = per_rule.get(reason, 0) + 1
        changed |= bool(fired)
        if not fired:
            return changed
    if recent and recent[-1] and limit == MAX_SWEEPS:
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


def _caller_module() -> str:
    """The module of the nearest caller outside this one (where ``register`` or ``register_rules`` was called)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return frame.f_globals.get("__name__", __name__) if frame is not None else __name__


def register_rules(
    name: str, rules: Iterable[Rule], *, description: str = "", replace: bool = False, lossless: bool = True
) -> type[Pass]:
    """Register ``rules`` (a list or a :class:`RuleSet`) as one pass called ``name``; returns the pass class. The
    pass counts each rule's firings and declines in its statistics (the pass table of ``graphopt optimize``)."""
    rule_list = list(rules) if isinstance(rules, Iterable) else []
    if not rule_list or not all(isinstance(r, Rule) for r in rule_list):
        raise PatternError(f"register_rules({name!r}) needs a non-empty list of Rule objects")
    names = [r.name for r in rule_list]
    if len(set(names)) != len(names):
        raise PatternError(f"rule names must be unique within {name!r}: {names}")
    rule_set = RuleSet(rule_list)

    class RulePass(Pass):
        recursive = True
        rules = rule_set

        def run(self, graph: Graph, ctx: PassContext) -> bool:
            try:
                return self.rules.rewrite(graph, ctx)
            except (RuleError, RewriteLimitError) as e:
                raise type(e)(f"pass {self.name!r}: {e}") from e.__cause__

    RulePass.__name__ = f"RulePass_{name.replace('-', '_')}"
    RulePass.__module__ = _caller_module()  # the module that registered the rules, not this one
    RulePass.description = description or f"pattern rules: {', '.join(names)}"
    RulePass.lossless = lossless
    register_pass(name, replace=replace, lossless=lossless)(RulePass)
    return RulePass
