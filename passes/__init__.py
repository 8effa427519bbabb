"""graphopt's built-in lossless passes: each in the module named after it (``fold-conv-bn`` in ``fold_conv_bn.py``);
``canonicalize.py`` holds canonicalize and the rule families it is made of, each also a pass of its own. Helper
modules (``dims``, ``readers``, ``numpy_eval``, ``union_find``) register nothing. Importing this package registers
the passes.

The lossy one-shot passes (pruning, quantization) live with their drivers in ``graphopt.prune`` and
``graphopt.quantize``; ``graphopt.engine.passes_api.BUILTIN_PASS_MODULES`` names them all.
"""

from . import (
    canonicalize,
    cleanup,
    cse,
    dce,
    decompose_prelu,
    dedup_initializers,
    eliminate_noop,
    fold_constants,
    fold_conv_bn,
    fuse_gelu,
    fuse_parallel_matmul,
    hoist_loop_invariants,
    merge_consecutive,
    merge_const_chains,
    ort_avoid_fusions,
    remove_unused,
    strip_debug_info,
    winograd,
)

__all__ = [
    "canonicalize",
    "cleanup",
    "cse",
    "dce",
    "decompose_prelu",
    "dedup_initializers",
    "eliminate_noop",
    "fold_constants",
    "fold_conv_bn",
    "fuse_gelu",
    "fuse_parallel_matmul",
    "hoist_loop_invariants",
    "merge_const_chains",
    "merge_consecutive",
    "ort_avoid_fusions",
    "remove_unused",
    "strip_debug_info",
    "winograd",
]
