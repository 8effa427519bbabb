"""graphopt's built-in passes, one module per pass family. Importing this package registers them."""

from . import cleanup  # noqa: F401
from . import fold_constants  # noqa: F401

__all__ = ["cleanup", "fold_constants"]
