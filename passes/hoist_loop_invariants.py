"""hoist-loop-invariants: loop-invariant code motion out of ONNX ``Loop`` bodies.

A body node is invariant when every value it reads is the same at every iteration: a value of an outer scope, an
initializer or a Constant of the body, a loop-carried value the body passes through unchanged (body output k is body
input k itself), or an output of another invariant node. Invariant nodes move to the Loop's graph, just before the
Loop, and run once instead of once per iteration: an autoregressive decoder that projects the encoder's features at
every step (slanet-en's attention) computes them once.

The moved values reach the body through new loop-carried slots that pass them through: one more Loop input (the
value), body input, body output (that body input itself) and Loop output (read by nobody). Not through implicit reads
of the outer value from the body: onnxruntime 1.2x aborted on a body that read a DequantizeLinear -> Reshape ->
Transpose chain of the outer graph that way once the model was quantized, and a loop-carried value is what the
exporters write themselves.

Exact: a moved node computes the same op on the same inputs, once. Left alone:

* a Loop that might run zero times (a moved node would then run where the original ran nothing, and a node can fail
  at run time): the trip count must be absent or a constant >= 1, and the initial condition absent or a constant true;
* Constant nodes (a moved node that reads one gets a copy of it in the outer graph), random ops and Dropout (each run
  draws new numbers), nodes with subgraphs, nodes of other domains than the standard one (graphopt does not know what
  they do), Identity nodes (free; eliminate-noop removes them, and an Identity is what keeps a moved value that is
  also a body output in place, so moving it again would never end);
* a node whose outputs have no known tensor type after shape inference: the new body input needs one.

Memory: a moved value stays alive for the whole loop instead of for part of one iteration. It was computed at every
iteration, so the peak memory of the Loop grows by at most the moved values themselves; the pass sets no size limit.
Scan bodies are not touched (a Scan with no iterations would run a moved node too, and its length is rarely
constant).
"""

from __future__ import annotations

from graphopt.core.ir import RANDOM_OPS, STANDARD_DOMAINS, Attribute, Graph, Model, Node, Value
from graphopt.core.shape_inference import infer_shapes
from graphopt.engine.passes_api import Pass, PassContext, register_pass

from .readers import input_at

NEVER_HOISTED = RANDOM_OPS | frozenset({"Constant", "Identity", "Dropout"})
"""Op types that stay in the body (see the module doc)."""


@register_pass(
    "hoist-loop-invariants",
    description="move Loop body nodes that compute the same thing at every iteration out of the loop (runs >= once)",
)
class HoistLoopInvariants(Pass):
    def prepare(self, model: Model, ctx: PassContext) -> None:
        # the new body inputs need the types of the moved values; inference only for models with a Loop
        if any(_is_loop(n) for g in model.graphs() for n in g):
            infer_shapes(model)

    def run(self, graph: Graph, ctx: PassContext) -> bool:
        changed = False
        for node in list(graph):
            if _is_loop(node) and node.graph is graph:
                moved = hoist(node)
                if moved:
                    ctx.count("hoisted-nodes", moved)
                    changed = True
                dropped = drop_dead_slots(node)
                if dropped:
                    ctx.count("dropped-slots", dropped)
                    changed = True
        return changed


def _is_loop(node: Node) -> bool:
    return node.op_type == "Loop" and node.domain in STANDARD_DOMAINS


def runs_at_least_once(loop: Node) -> bool:
    """Whether the Loop provably runs its body at least once: trip count absent or a constant >= 1, and initial
    condition absent or a constant true."""
    trip, cond = input_at(loop, 0), input_at(loop, 1)
    if trip is not None:
        t = trip.constant()
        if t is None or t.numpy().size != 1 or int(t.numpy().reshape(-1)[0]) < 1:
            return False
    if cond is not None:
        c = cond.constant()
        if c is None or c.numpy().size != 1 or not bool(c.numpy().reshape(-1)[0]):
            return False
    return True


def _body(loop: Node) -> Graph | None:
    a = loop.attrs.get("body")
    return a.value if a is not None and isinstance(a.value, Graph) else None


def hoist(loop: Node) -> int:
    """Move the invariant nodes of ``loop``'s body before it; return how many moved (0: the graph is unchanged)."""
    body = _body(loop)
    outer = loop.graph
    if body is None or outer is None or body.owner is not loop:
        return 0
    carried = len(loop.inputs) - 2
    scans = len(loop.outputs) - carried
    if carried < 0 or scans < 0 or len(body.inputs) != 2 + carried or len(body.outputs) != 1 + carried + scans:
        return 0  # not a well-formed Loop: leave it
    if not runs_at_least_once(loop):
        return 0

    # the invariant values of the body (by id) -> the outer value to read instead (None: the body's own constant)
    invariant: dict[int, Value | None] = {}
    for k in range(2, 2 + carried):
        v, init = body.inputs[k], loop.inputs[k]
        if body.outputs[k - 1] is v and init is not None:
            invariant[id(v)] = init
    for v in body.initializers.values():
        invariant[id(v)] = None

    def invariant_input(v: Value) -> bool:
        if id(v) in invariant:
            return True
        if body.is_input(v) or v.name in body.sparse_initializers:
            return False
        p = v.producer
        if p is None:
            return True  # an input or initializer of an outer graph
        if p.graph is body:
            return p.op_type == "Constant" and p.domain in STANDARD_DOMAINS and not p.inputs
        return True  # computed in an outer graph

    moving: list[Node] = []
    for node in body:
        if not _movable(node):
            continue
        if all(v is None or invariant_input(v) for v in node.inputs):
            moving.append(node)
            for out in node.outputs:
                if out is not None:
                    invariant[id(out)] = out
    if not moving:
        return 0

    moved = set(moving)
    copies: dict[int, Value] = {}  # body constants the moved nodes read -> their copy in the outer graph

    def outside(v: Value) -> Value:
        """What a moved node reads in the outer graph instead of ``v``."""
        got = invariant.get(id(v))
        if got is not None:
            return got  # a pass-through loop-carried value's initial value, or a moved node's output (itself)
        if not body.is_initializer(v) and (v.producer is None or v.producer.graph is not body):
            return v  # a value of an outer scope
        copy = copies.get(id(v))
        if copy is None:
            if body.is_initializer(v):
                assert v.const is not None
                copy = outer.make_constant(v.const, name=v.name or "const")
                copy.dtype, copy.shape = v.dtype, v.shape
            else:  # a Constant node of the body
                const = v.producer
                assert const is not None
                attrs = {k: Attribute(k, a.value, a.type) for k, a in const.attrs.items()}
                clone = Node("Constant", [], attrs, domain=const.domain, name=outer.unique_name("Constant"))
                outer.insert_before(loop, clone)
                copy = clone.output
                copy.dtype, copy.shape = v.dtype, v.shape
            copies[id(v)] = copy
        return copy

    for node in moving:
        body.take(node)
        for i, v in enumerate(node.inputs):
            if v is not None:
                w = outside(v)
                if w is not v:
                    node.set_input(i, w)
        outer.insert_before(loop, node)

    # the moved values the body still reads (nodes that stay, nested subgraphs, body outputs) get a slot each
    for node in moving:
        for out in node.outputs:
            if out is None:
                continue
            readers = [(n, i) for n, i in out.uses if n not in moved]
            if not readers and not body.is_output(out):
                continue
            inner = _add_slot(loop, body, out)
            for n, i in readers:
                n.set_input(i, inner)
            for p in [p for p, o in enumerate(body.outputs) if o is out]:
                ident = Node("Identity", [inner], name=body.unique_name(f"{out.name}_hoisted_identity"))
                body.append(ident)
                ident.output.dtype, ident.output.shape = out.dtype, out.shape
                body.outputs[p] = ident.output
    return len(moving)


def _movable(node: Node) -> bool:
    if node.domain not in STANDARD_DOMAINS or node.op_type in NEVER_HOISTED:
        return False
    if next(iter(node.subgraphs()), None) is not None:
        return False
    # a new body input needs a type: only nodes whose outputs are tensors of a known element type
    return all(out is None or out.dtype is not None for out in node.outputs)


def _add_slot(loop: Node, body: Graph, value: Value) -> Value:
    """A new loop-carried slot that passes ``value`` (of the Loop's graph) through the body; returns the body input
    that holds it."""
    outer = loop.graph
    assert outer is not None
    carried = len(loop.inputs) - 2
    inner = Value(body.unique_name(f"{value.name}_invariant"), value.dtype, value.shape)
    loop.insert_input(len(loop.inputs), value)
    body.inputs.append(inner)
    body.outputs.insert(1 + carried, inner)
    final = loop.insert_output(carried, Value(outer.unique_name(f"{value.name}_final"), value.dtype, value.shape))
    assert final.producer is loop
    return inner


def drop_dead_slots(loop: Node) -> int:
    """Remove the loop-carried slots of ``loop`` that nothing reads: the body never reads the body input (its own
    body output aside) and nobody reads the Loop's output. Such a slot cannot change any result, and its initial value
    (a weight a moved node read, say) is no longer kept alive by the Loop. Returns how many went."""
    body = _body(loop)
    outer = loop.graph
    if body is None or outer is None:
        return 0
    dropped = 0
    again = True
    while again:
        again = False
        carried = len(loop.inputs) - 2
        if carried < 0 or len(body.inputs) != 2 + carried or len(body.outputs) < 1 + carried:
            return dropped
        if len(loop.outputs) != len(body.outputs) - 1:
            return dropped
        for j in reversed(range(carried)):
            inner, final = body.inputs[2 + j], loop.outputs[j]
            if inner.uses or any(o is inner for p, o in enumerate(body.outputs) if p != 1 + j):
                continue
            if final is not None and (final.uses or outer.is_output(final)):
                continue
            loop.remove_output(j)
            del body.outputs[1 + j]
            del body.inputs[2 + j]
            loop.set_inputs([v for i, v in enumerate(loop.inputs) if i != 2 + j])
            dropped += 1
            again = True
    return dropped
