"""Shape and Size of a sequence-dependent tensor: reference values.

Delta math: none. A mutation changes a tensor's values, never its shape, so ``Shape(t)`` and
``Size(t)`` of a probe-form tensor equal those of the reference tensor, which the original graph
computes once: the node is planned as the reference (ChromBPNet's TorchScript export crops the
bias model by the accessibility model's length this way; most such chains fold at
canonicalization, see :mod:`yuzu_onnx.canonicalize`).

Only the batch size differs: the reference holds ``N`` sequences, the probes ``N*P`` and the
materialized mutants ``N*M``. A value holding ``N`` may therefore only shape tensors that carry
the batch axis (bpnet-lite's zero control tracks, ``ConstantOfShape([N, 2, L])``); those become
per-sequence tensors (``plan.side``) that are repeated over probes and mutants like side inputs.
Where a value holding ``N`` would reach a node that also reads the sequence (a Reshape target,
an Expand shape), that node would see ``N`` instead of its own batch: the check declines, naming
the node, and the Shape runs on materialized mutants as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..ops import attr
from ..plan import NodePlan, SeqState
from .base import Decline
from .common import tensor_label
from .reference import REFERENCE

if TYPE_CHECKING:
    from ..analyze import Analysis

FAMILY = "static-shape"


def decline(reason: str) -> Decline:
    return Decline(FAMILY, reason)


def selected_axes(node: onnx.NodeProto, rank: int) -> range:
    """Axes whose sizes a Shape node returns (``start``/``end`` from opset 15; Size: all)."""
    if node.op_type == "Size":
        return range(rank)
    start, end = int(attr(node, "start", 0)), int(attr(node, "end", rank))
    start, end = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
    return range(max(0, min(start, rank)), max(0, min(end, rank)))


def value_dependent(a: "Analysis") -> set[str]:
    """Tensors whose values depend on the sequence's values: everything computed from the
    sequence input except through Shape and Size."""
    dependent = {a.plan.seq.name}
    for node in a.graph.node:
        if node.op_type not in ("Shape", "Size") and any(n in dependent for n in node.input):
            dependent.update(o for o in node.output if o)
    return dependent


def _drops_batch(a: "Analysis", node: onnx.NodeProto) -> bool:
    """A Gather or Slice of a shape vector that keeps none of its first entry (the batch size)."""
    if node.op_type == "Gather" and int(attr(node, "axis", 0)) == 0:
        index, size = a.const(node.input[1]), (a.shape(node.input[0]) or [None])[0]
        if index is None or size is None:
            return False
        return not (np.asarray(index).ravel() % size == 0).any()  # entry 0, also written -size
    if node.op_type == "Slice" and len(node.input) >= 3:
        starts, axes = a.const(node.input[1]), a.const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        steps = a.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
        return (starts is not None and np.asarray(starts).size == 1 and int(np.asarray(starts).ravel()[0]) >= 1
                and (axes is None or int(np.asarray(axes).ravel()[0]) == 0)
                and (steps is None or int(np.asarray(steps).ravel()[0]) > 0))
    return False


def batch_leak(a: "Analysis", node: onnx.NodeProto) -> str | None:
    """Follow the values holding the batch size from ``node``'s output through the nodes that
    do not read the sequence; say where one reaches a node that does, else None. Tensors
    whose first axis is the batch (a symbolic first dim) carry it as an axis, not a value; a
    Shape or Size of one holds it again."""
    dependent = value_dependent(a)
    holds = {node.output[0]}  # values that hold N
    carries: set[str] = set()  # tensors whose first axis is the batch
    after = False
    for other in a.graph.node:
        if other is node:
            after = True
            continue
        if not after:
            continue
        read = [n for n in other.input if n in holds]
        if other.op_type in ("Shape", "Size") and other.input and other.input[0] in carries:
            holds.add(other.output[0])
            continue
        if not read:
            if any(n in carries for n in other.input):
                carries.update(o for o in other.output if o and (a.shape(o) or [1])[:1] == [None])
            continue
        if any(n in dependent for n in other.input):
            return (f"its value holds the batch size and reaches {other.op_type} node {tensor_label(other)} "
                    f"(through {read[0]!r}), which also reads the sequence: it would see the sequences' batch, "
                    "not the probes' or mutants'")
        if _drops_batch(a, other):
            continue
        for out in other.output:
            if not out:
                continue
            shape = a.shape(out)
            if shape and shape[0] is None and other.op_type not in ("Shape", "Size"):
                carries.add(out)
            else:
                holds.add(out)
    return None


def check_shape(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> NodePlan | Decline:
    """Shape or Size of a probe-form tensor: the reference computes it (its value is the same
    for every mutant); a value holding the batch size makes later tensors per-sequence."""
    x = node.input[0]
    st: SeqState = a.plan.states[x]
    rank = len(st.dims) + 1
    if 0 in selected_axes(node, rank):
        leak = batch_leak(a, node)
        if leak is not None:
            return decline(leak)
        a.plan.side.add(node.output[0])
    return NodePlan(node, REFERENCE, note="a shape: the same for every mutant, computed once by the original graph")


RULES: tuple = ()  # the node is planned as the reference
CHECKS = {"Shape": check_shape, "Size": check_shape}
