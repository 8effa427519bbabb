"""A disjoint-set forest (union-find) over hashable keys, for passes that group values which must change together
(prune-channels' channel groups, quantization's shared scales)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class UnionFind(Generic[K]):
    def __init__(self) -> None:
        self.parent: dict[K, K] = {}

    def add(self, k: K) -> None:
        self.parent.setdefault(k, k)

    def __contains__(self, k: object) -> bool:
        return k in self.parent

    def find(self, k: K) -> K:
        parent = self.parent
        while parent[k] != k:
            parent[k] = parent[parent[k]]  # path halving
            k = parent[k]
        return k

    def union(self, a: K, b: K) -> tuple[K, K] | None:
        """Join the sets of ``a`` and ``b`` (adding them if new): ``(kept root, absorbed root)``, or None when they
        were one set already."""
        self.add(a)
        self.add(b)
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        self.parent[rb] = ra
        return ra, rb

    def sets(self) -> dict[K, list[K]]:
        """Every set, keyed by its root, members in insertion order."""
        out: dict[K, list[K]] = {}
        for k in self.parent:
            out.setdefault(self.find(k), []).append(k)
        return out
