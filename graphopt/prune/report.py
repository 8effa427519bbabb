"""What pruning did: per layer (channels, parameters, MACs, sparsity) and for the model. Plain data: the CLI renders it,
``--json`` and ``--report`` serialize ``to_dict()``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LayerCost:
    name: str
    op_type: str
    in_channels: int | None
    out_channels: int | None
    params: int
    macs: int | None


@dataclass
class LayerChange:
    name: str
    op_type: str
    in_channels: tuple[int | None, int | None]
    out_channels: tuple[int | None, int | None]
    params: tuple[int, int]
    macs: tuple[int | None, int | None]
    sparsity: float | None = None


@dataclass
class PruneReport:
    mode: str
    """'channels', 'weights' or '2:4'."""
    ratio: float
    layers: list[LayerChange] = field(default_factory=list)
    groups: int = 0
    groups_pruned: int = 0
    blocked: dict[str, int] = field(default_factory=dict)
    """Why groups could not be pruned, with how many."""
    folded: int = 0
    """Readers of removed channels whose bias or output took what those channels still produced."""
    carrier_readers: int = 0
    """Of those, padded Conv readers (where the contribution differs at the border) that took it in the weights of
    their group's carrier channel (a kept channel whose producer weights are zero: a constant map)."""
    carriers: int = 0
    """Groups that keep a carrier channel."""
    macs_before: int = 0
    macs_after: int = 0
    param_bytes_before: int = 0
    param_bytes_after: int = 0
    latency_ms: tuple[float, float] | None = None
    note: str = ""
    sparse_stored: int | None = None
    """Weight pruning with sparse initializers asked for: how many pruned weights were stored sparse (the others were
    smaller dense); None when not asked."""
    sparse_weights: int = 0
    """... out of this many pruned weights."""
    sample: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    """The input the probe ran on (channel pruning; not serialized): the timing uses it too."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "ratio": self.ratio,
            "groups": self.groups,
            "groups_pruned": self.groups_pruned,
            "blocked": self.blocked,
            "folded_readers": self.folded,
            "carrier_readers": self.carrier_readers,
            "carriers": self.carriers,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "param_bytes_before": self.param_bytes_before,
            "param_bytes_after": self.param_bytes_after,
            "latency_ms_before": self.latency_ms[0] if self.latency_ms else None,
            "latency_ms_after": self.latency_ms[1] if self.latency_ms else None,
            "note": self.note,
            "sparse_stored": self.sparse_stored,
            "sparse_weights": self.sparse_weights if self.sparse_stored is not None else None,
            "layers": [vars(layer) for layer in self.layers],
        }
