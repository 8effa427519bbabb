"""graphopt's built-in passes, one module per pass family. Importing this package registers them."""

from . import canonicalize, cleanup, cse, fold_bn, fold_constants, fuse_matmul, prune, quantize, simplify, winograd

__all__ = [
    "canonicalize",
    "cleanup",
    "cse",
    "fold_bn",
    "fold_constants",
    "fuse_matmul",
    "prune",
    "quantize",
    "simplify",
    "winograd",
]
