"""Small helpers shared by the rule families' checks."""

from __future__ import annotations

from typing import Sequence


def shape_text(dims: Sequence[int | None] | None) -> str:
    """``(64, 1000)``-style text of a shape for decline reasons; ``?`` for unknown dims."""
    if dims is None:
        return "(unknown)"
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def tensor_label(node) -> str:
    """How a reason names a node: its name, or its first output when it has none."""
    return repr(node.name or node.output[0])
