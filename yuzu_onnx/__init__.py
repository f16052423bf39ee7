"""yuzu-onnx: rewrite ONNX sequence models into fast, exact in silico saturation mutagenesis."""

__version__ = "0.1.0"

from .plan import ConversionWarning  # noqa: E402
from .attributions import attributions  # noqa: E402
from .convert import convert, plan_conversion  # noqa: E402
from .errors import (InputValidationError, InternalError, MemoryBudgetError, ModelLoadError,  # noqa: E402
                     UnsupportedModelError, YuzuError)
from .oracle import naive_ism  # noqa: E402
from .runtime import run_ism  # noqa: E402
from .session import ISMSession  # noqa: E402

__all__ = [
    "convert", "plan_conversion", "naive_ism", "run_ism", "ISMSession", "attributions", "ConversionWarning",
    "YuzuError", "ModelLoadError", "UnsupportedModelError", "InputValidationError", "MemoryBudgetError",
    "InternalError",
]
