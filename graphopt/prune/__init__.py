"""Pruning, in one package whose modules follow the data path:

* :mod:`~graphopt.prune.analysis` builds the channel dependency groups and chooses the channels to keep;
* :mod:`~graphopt.prune.transform` removes channels (folding what they still produced) and masks weights;
* :mod:`~graphopt.prune.driver` runs it on a model (``prune_channels``, ``prune_weights``, ``run_pruning``), with the
  probe that measures removed channels' signal and the before/after costs;
* :mod:`~graphopt.prune.report` is what it returns; :mod:`~graphopt.prune.passes` registers the two pruning passes.

Dependencies point one way: analysis <- transform <- driver <- passes; nothing here imports the API or the CLI.
"""

from __future__ import annotations

from graphopt._lazy import lazy_exports

_EXPORTS = {
    "layer_costs": ".driver",
    "logger": ".driver",
    "measure": ".driver",
    "prune_channels": ".driver",
    "prune_weights": ".driver",
    "run_pruning": ".driver",
    "LayerChange": ".report",
    "LayerCost": ".report",
    "PruneReport": ".report",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
