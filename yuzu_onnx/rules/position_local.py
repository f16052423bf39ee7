"""Position-local rules: ops over the non-sequence axes of each position (normalizations,
softmax and reductions over channels).

Delta math. Output position ``j`` is ``g`` of the input's values at position ``j`` only (the
vector over the channel axes), so a mutant changes output ``j`` iff it changes input ``j``: the
support is unchanged, and since each probe is a hybrid sequence (at ``j`` it equals one mutant,
or the reference), ``g`` on the probes is ``g`` of each mutant at every position. The original
node runs on the probes unchanged (:func:`yuzu_onnx.emit.probes.clone_on_probes`).

Covered (the axes an op works over must exclude the batch and the sequence axis):

- ``LayerNormalization``, ``RMSNormalization`` (normalized axes ``axis..rank-1``), with scale and
  bias that do not depend on the sequence and carry no batch axis;
- ``Softmax``, ``LogSoftmax``, ``Hardmax`` over a channel axis (before opset 13: over the
  flattened axes ``axis..``, all after the sequence axis);
- ``LpNormalization`` over a channel axis, ``MeanVarianceNormalization`` over channel axes;
- ``ReduceMean/Sum/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare`` over channel axes
  (``keepdims`` 0 or 1: the output drops or keeps the axes and the sequence axis moves down
  when an earlier axis is dropped), ``ArgMax``/``ArgMin`` over a channel axis.

Declined with the reason: an op over the sequence axis (reductions over the length are the
reduce exit's, :mod:`yuzu_onnx.rules.reduce_exit`), over the batch axis, and
``InstanceNormalization``/``GroupNormalization``, which normalize each channel over the length.

Tiled form: the output keeps its input's window and tile-local support (out-of-range window
positions hold whatever ``g`` gives there; every op reading across positions replaces them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..emit.probes import clone_on_probes
from ..errors import InternalError
from ..ops import attr
from ..plan import NodePlan, SeqState
from .base import Decline, Rule, probe_flops
from .common import shape_text

if TYPE_CHECKING:
    from ..analyze import Analysis
    from ..tile_geometry import TileGeometry

FAMILY = "position-local"

#: Reductions (``axes`` attribute before opset 18, except ReduceSum's input from 13; input after).
REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
#: Ops over one axis, keeping (or with keepdims=0 dropping) it.
ARG = ("ArgMax", "ArgMin")
#: Ops over one axis that keep the shape (opset 13 on; before, over the flattened trailing axes).
SOFTMAX = ("Softmax", "LogSoftmax", "Hardmax")
#: Normalizations over the trailing axes ``axis..rank-1``.
TRAILING_NORMS = ("LayerNormalization", "RMSNormalization")
#: Normalizations over the length, never position-local.
OVER_LENGTH = ("InstanceNormalization", "GroupNormalization")


def decline(reason: str) -> Decline:
    return Decline(FAMILY, reason)


def _axes(a: "Analysis", node: onnx.NodeProto, rank: int) -> tuple[set[int], bool] | str:
    """The axes the op works over (non-negative) and whether the output keeps them, or why
    they cannot be told."""
    op = node.op_type
    if op in REDUCTIONS:
        raw = attr(node, "axes")
        if raw is None and len(node.input) > 1 and node.input[1]:
            raw = a.const(node.input[1])
            if raw is None:
                return f"its axes {node.input[1]!r} are not constant"
        keep = bool(attr(node, "keepdims", 1))
        if raw is None or np.asarray(raw).size == 0:
            if attr(node, "noop_with_empty_axes", 0):
                return set(), keep
            return "it reduces every axis, the batch and sequence axes included"
        return {int(v) % rank for v in np.asarray(raw).ravel()}, keep
    if op in ARG:
        return {int(attr(node, "axis", 0)) % rank}, bool(attr(node, "keepdims", 1))
    if op in SOFTMAX:
        if a.opset() >= 13:
            return {int(attr(node, "axis", -1)) % rank}, True
        return set(range(int(attr(node, "axis", 1)) % rank, rank)), True
    if op in TRAILING_NORMS:
        return set(range(int(attr(node, "axis", -1)) % rank, rank)), True
    if op == "LpNormalization":
        return {int(attr(node, "axis", -1)) % rank}, True
    if op == "MeanVarianceNormalization":
        return {int(v) % rank for v in (attr(node, "axes") or [0, 2, 3])}, True
    raise InternalError(f"the position-local check was registered for {op}, which it does not know")


def check_position_local(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> NodePlan | Decline:
    """An op over channel axes of each position: the support and the window are unchanged."""
    op = node.op_type
    x = node.input[0]
    st: SeqState = a.plan.states[x]
    if op in OVER_LENGTH:
        return decline(f"{op} normalizes each channel over the spatial axes, the sequence axis included "
                       "(its statistics mix every position)")
    if dep != [x]:
        return decline(f"its parameter input {next(n for n in dep if n != x)!r} depends on the sequence")
    outputs = [o for o in node.output if o]
    if len(outputs) != 1:
        return decline(f"it has {len(outputs)} outputs (only the normalized output is accelerated, not its "
                       "saved statistics)")
    rank = len(st.dims) + 1
    found = _axes(a, node, rank)
    if isinstance(found, str):
        return decline(found)
    axes, keep = found
    if 0 in axes:
        return decline(f"it works over the batch axis (axes {sorted(axes)})")
    if st.seq_axis in axes:
        return decline(f"it works over axes {sorted(axes)} of {x!r} {shape_text(st.dims)}, which include the "
                       f"sequence axis {st.seq_axis} (position j would read other positions)")
    for name in node.input[1:]:
        if name and name in a.plan.side:
            return decline(f"its parameter {name!r} is a per-sequence tensor (it carries the batch axis)")
    if op in REDUCTIONS + ARG and not keep:
        dims = tuple(d for ax, d in enumerate(st.dims, start=1) if ax not in axes)
        seq_axis = st.seq_axis - sum(1 for ax in axes if ax < st.seq_axis)
    elif op in REDUCTIONS + ARG:
        dims = tuple(1 if ax in axes else d for ax, d in enumerate(st.dims, start=1))
        seq_axis = st.seq_axis
    else:
        dims, seq_axis = st.dims, st.seq_axis
    out_shape = a.shape(node.output[0])
    if out_shape is not None and list(out_shape[1:]) != list(dims):
        return decline(f"its output should be {shape_text(dims)} by this rule's reading of the op, but shape "
                       f"inference says {shape_text(out_shape[1:])}")
    a.plan.states[node.output[0]] = a.seq_state(st.support, seq_axis, dims)
    return NodePlan(node, POSITION_LOCAL, width=st.support.max_width)


def tile_position_local(t: "TileGeometry", np_: NodePlan) -> Decline | None:
    """Tiled form: the output keeps the input's window and tile-local support."""
    x = np_.node.input[0]
    t.record(np_.node.output[0], t.states[x].support, t.windows[x])
    return None


POSITION_LOCAL = Rule("position-local", "probe position-local", "probe", probe_flops, clone_on_probes,
                      tile=tile_position_local)
RULES = (POSITION_LOCAL,)
CHECKS = {op: check_position_local
          for op in REDUCTIONS + ARG + SOFTMAX + TRAILING_NORMS + OVER_LENGTH
          + ("LpNormalization", "MeanVarianceNormalization")}
