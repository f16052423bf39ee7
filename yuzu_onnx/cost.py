"""A rough time model for choosing probe counts (CPU-like constants; only ratios matter)."""

from __future__ import annotations

import math

#: Sustained dense FLOP rate of Conv/MatMul kernels (FLOP/s).
FLOP_RATE = 150e9
#: Seconds per element written by a memory-bound op (elementwise, select).
ELEMENT_SECONDS = 1e-9
#: Seconds per element moved by a transpose or gather.
MOVE_SECONDS = 1e-9
#: Seconds per element written by a masked reprobe (a broadcasting Where, slow on ONNX Runtime CPU).
MASK_SECONDS = 2.5e-9
#: Seconds per element of an im2col buffer (ONNX Runtime's CPU Conv builds one per probe).
IM2COL_SECONDS = 0.2e-9


def probe_candidates(current: int, need: int) -> list[int]:
    """Probe counts worth considering for ``need`` slots: exactly ``need`` (gather reprobe) and
    the smallest multiple of ``current`` above it (masked reprobe)."""
    need = max(need, 1)
    return sorted({need, current * math.ceil(need / current)})


def round_probes(current: int, need: int) -> int:
    """Probes to use for ``need`` slots: a multiple of ``current`` (cheap masked reprobe) when
    that costs at most 10% more, else exactly ``need``."""
    need = max(need, 1)
    multiple = current * math.ceil(need / current)
    return multiple if multiple <= 1.1 * need else need


def reprobe_seconds(current: int, target: int, elements: int) -> float:
    """Time to change ``current`` -> ``target`` probes of a tensor with ``elements`` per probe."""
    if target == current:
        return 0.0
    if target % current == 0:
        return MASK_SECONDS * target * elements
    return MOVE_SECONDS * (current + 2 * target) * elements


def conv_seconds(probes: int, flops_per_probe: int, buffer_per_probe: int = 0) -> float:
    """Conv time: its FLOPs plus writing its im2col (or per-tap) buffer."""
    return probes * (flops_per_probe / FLOP_RATE + IM2COL_SECONDS * buffer_per_probe)


def elementwise_seconds(probes: int, elements: int) -> float:
    return ELEMENT_SECONDS * probes * elements
