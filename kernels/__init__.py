"""graphopt's kernel layer (Numba and C), imported as ``graphopt.kernels``.

* ``histogram``: calibration statistics for quantization (streaming min/max and histograms, percentile and
  entropy/KL thresholds), in Numba.

Winograd transforms and the reference convolution arrive with the Winograd lowering.
"""

from . import histogram

__all__ = ["histogram"]
