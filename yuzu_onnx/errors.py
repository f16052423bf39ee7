"""Exception types raised by yuzu-onnx.

Two kinds, kept apart so that a bug never reads like the user's mistake:

- :class:`YuzuError` and its subclasses: problems with the user's model, input or request.
  Callers (and the CLI) catch this one type and print a single clear line.
- :class:`InternalError`: a bug in yuzu-onnx itself (a rule broke an invariant, an emitted
  graph fails the ONNX checker). It says so and asks for a report; it is never raised for a
  model that is merely unsupported (those fall back to exact computation or get a
  :class:`UnsupportedModelError`).
"""

class YuzuError(Exception):
    """Base class of all errors raised deliberately by yuzu-onnx for bad input."""


class ModelLoadError(YuzuError):
    """The model file is missing, unreadable, not ONNX, or fails the checker."""


class UnsupportedModelError(YuzuError):
    """The model cannot be converted at all (for example, no sequence-like input)."""


class InputValidationError(YuzuError):
    """An input array does not fit the model (shape, dtype, one-hot-ness, region)."""


class MemoryBudgetError(YuzuError):
    """Running the converted model on one sequence would exceed the memory budget."""


class InternalError(RuntimeError):
    """A bug in yuzu-onnx: an invariant of the converter does not hold.

    The message starts with ``internal error`` and ends by asking for a report with the model
    (or the smallest model that shows it), so that it is never mistaken for a limitation of
    the user's model.
    """

    def __init__(self, message: str):
        super().__init__(f"internal error (a bug in yuzu-onnx, not in your model): {message}. "
                         "Please report it on the yuzu-onnx issue tracker with the model (or a small one that shows it) "
                         "and the command you ran")
