"""Exceptions graphopt raises for problems the user can fix (bad files, bad options, bad pass names)."""

from __future__ import annotations


class GraphoptError(Exception):
    """A problem with the user's input. The CLI prints its message on one line and exits with code 2."""


class ModelLoadError(GraphoptError):
    """The file is missing, is not ONNX, is truncated, or the checker rejects it."""


class TensorDataError(ModelLoadError, ValueError):
    """A tensor's data does not fit its type and shape (raw_data or a typed field of the wrong size, a sparse tensor
    whose indices do not fit its shape). onnxruntime refuses such a model, so graphopt does too."""


class ExternalDataError(GraphoptError):
    """External tensor data is missing, out of range, or points outside the model's folder."""


class PassError(GraphoptError):
    """An unknown pass name, a malformed pipeline string or an invalid pass option."""


class VerificationError(GraphoptError):
    """``--strict`` verification found a pass that changed the model's outputs. The CLI exits with code 1."""


class IRError(Exception):
    """An edit that would break the IR's invariants (a programming error in a pass, not a user error)."""
