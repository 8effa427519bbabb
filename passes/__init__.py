"""graphopt's built-in lossless passes, one module per pass family. Importing this package registers them.

The lossy one-shot passes (pruning, quantization) live with their drivers in ``graphopt.prune`` and
``graphopt.quantize``; ``graphopt.engine.passes_api.BUILTIN_PASS_MODULES`` names them all.
"""

from . import canonicalize, cleanup, cse, fold_bn, fold_constants, fuse_matmul, simplify, winograd

__all__ = ["canonicalize", "cleanup", "cse", "fold_bn", "fold_constants", "fuse_matmul", "simplify", "winograd"]
