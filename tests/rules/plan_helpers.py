"""Helpers of the plan-level rule tests: build a small model with :class:`builders.Net`, run
the load, canonicalize and analyze passes (no emit, no ONNX Runtime session) and look at one
node's plan."""

from __future__ import annotations

import warnings

import numpy as np

from builders import Net
from yuzu_onnx.convert import plan_conversion
from yuzu_onnx.plan import NodePlan, Plan, SeqState


def plan_of(net: Net, out: str, length: int = 20, *, channels: int = 4, layout: str = "NCL",
            inputs: dict | None = None, **options) -> Plan:
    """Plan of the model ``x -> ... -> out`` built in ``net`` (output named ``y``), warnings
    silenced (tests that check warnings catch them themselves), over the region asked for
    (not trimmed to the positions that reach ``out``: supports are compared in its numbering)."""
    shape = ["N", channels, length] if layout == "NCL" else ["N", length, channels]
    model = net.model({"x": shape, **(inputs or {})}, {"y": out})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return plan_conversion(model, **{"trim": False, **options})


def node(plan: Plan, name: str) -> NodePlan:
    """The plan of the node called ``name`` (``Net`` names nodes ``<Op>_<i>``)."""
    return next(n for n in plan.nodes if n.node.name == name)


def node_of(plan: Plan, output: str) -> NodePlan:
    """The plan of the node writing tensor ``output``."""
    return next(n for n in plan.nodes if output in n.node.output)


def state(plan: Plan, tensor: str) -> SeqState:
    st = plan.states[tensor]
    assert isinstance(st, SeqState), (tensor, st)
    return st


def reasons(np_: NodePlan) -> str:
    """All decline reasons of a node, joined."""
    return " | ".join(f"{d.family}: {d.reason}" for d in np_.declines)


def interval(st: SeqState) -> list[tuple[int, int]]:
    """Support as ``(lo, hi)`` per position, ``(-1, -1)`` where no mutation reaches."""
    return [(int(lo), int(hi)) if lo <= hi else (-1, -1) for lo, hi in zip(st.support.lo, st.support.hi)]


def window_support(length: int, out_length: int, stride: int, pad: int, kernel: int, dilation: int = 1,
                   start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Expected support of a 1-D window over the input, written independently of the
    converter: output ``j`` reads inputs ``j*stride - pad + t*dilation``."""
    end = length if end is None else end
    out = []
    for j in range(out_length):
        taps = [j * stride - pad + t * dilation for t in range(kernel)]
        hit = [i - start for i in taps if 0 <= i < length and start <= i < end]
        out.append((min(hit), max(hit)) if hit else (-1, -1))
    return out


__all__ = ["plan_of", "node", "node_of", "state", "reasons", "interval", "window_support", "np"]
