"""graphopt's built-in passes, one module per pass family. Importing this package registers them."""

from . import cleanup, cse, fold_bn, fold_constants, fuse_matmul, prune, quantize, simplify, winograd

__all__ = ["cleanup", "cse", "fold_bn", "fold_constants", "fuse_matmul", "prune", "quantize", "simplify", "winograd"]
