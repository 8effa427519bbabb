"""merge-const-chains: ``(x + c1) + c2`` -> ``x + (c1 + c2)`` and ``(x * c1) * c2`` -> ``x * (c1 * c2)``.

Opt-in, not in -O2: it reassociates float arithmetic (the result differs from the chain by a rounding or two), and
-O2 leaves a chain of constant Adds bit-exact.
"""

from __future__ import annotations

import numpy as np

from graphopt.patterns import Const, Match, Op, Rule, RuleSet, Var

from .canonicalize import FLOATS


def _merge_chain(m: Match, b) -> object:
    """(x + c1) + c2 -> x + (c1 + c2) and (x * c1) * c2 -> x * (c1 * c2) for float constants: the output's shape is
    the broadcast of x, c1 and c2 either way; the folded constant is computed in float64 and cast back, and may not
    be larger than the larger of the two (no broadcast blow-up) nor overflow. Reassociation: the result differs
    from the chain by a rounding or two, as folding a BatchNormalization does."""
    if m.dtype("c1") not in FLOATS or m.dtype("c2") not in FLOATS:
        return m.decline("not float constants")
    c1, c2 = m.const("c1"), m.const("c2")
    rx = m.rank("x")
    if rx is None or max(c1.ndim, c2.ndim) > rx:
        return m.decline("a constant may raise x's rank (or x's rank unknown)")
    op = m.node("outer").op_type
    with np.errstate(all="ignore"):
        wide = c1.astype(np.float64) + c2 if op == "Add" else c1.astype(np.float64) * c2
        folded = wide.astype(c1.dtype)
    if folded.size > max(c1.size, c2.size):
        return m.decline("the folded constant would be larger")
    if not np.isfinite(folded).all():
        return m.decline("the folded constant is not finite")
    return b.op(op, m["x"], folded)


MERGE_CONST_CHAINS = RuleSet(
    [
        Rule(
            f"{op.lower()}-const-chain",
            Op(op, Op(op, Var("x"), Const("c1"), commutative=True), Const("c2"), commutative=True, name="outer"),
            _merge_chain,
            exact=False,  # c1 + c2 (c1 * c2) rounded once: a reassociation
        )
        for op in ("Add", "Mul")
    ]
)
MERGE_CONST_CHAINS.register(
    "merge-const-chains",
    description="(x + c1) + c2 -> x + (c1 + c2) and (x * c1) * c2 -> x * (c1 * c2) for float constants",
)
