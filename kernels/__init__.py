"""graphopt's kernel layer (Numba and C): Winograd transforms, calibration histograms, reference convolution.

Imported as ``graphopt.kernels``. The kernels arrive with the passes that use them (quantization calibration and
Winograd lowering); this foundation release ships none yet.
"""

__all__: list[str] = []
