"""The reference rule: a node none of whose inputs depends on the mutated sequence.

The original graph, which the converted model contains unchanged, computes it once per
sequence (``y0`` and every reference activation ``R``); nothing is emitted for it. Tensors it
derives from the model's other inputs (side inputs) carry the batch axis and are repeated over
probes or mutants where they meet sequence tensors.
"""

from __future__ import annotations

from .base import Rule, no_flops

REFERENCE = Rule("reference", "reference", "reference", no_flops, None)
RULES = (REFERENCE,)
CHECKS: dict = {}
