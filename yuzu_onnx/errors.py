"""Exception types raised by yuzu-onnx.

Every error a user can trigger derives from :class:`YuzuError`, so callers (and the CLI) can
catch one type and print a single clear line.
"""


class YuzuError(Exception):
    """Base class of all errors raised deliberately by yuzu-onnx."""


class ModelLoadError(YuzuError):
    """The model file is missing, unreadable, not ONNX, or fails the checker."""


class UnsupportedModelError(YuzuError):
    """The model cannot be converted at all (for example, no sequence-like input)."""


class InputValidationError(YuzuError):
    """An input array does not fit the model (shape, dtype, one-hot-ness, region)."""


class MemoryBudgetError(YuzuError):
    """Running the converted model on one sequence would exceed the memory budget."""
