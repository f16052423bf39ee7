"""Reductions over the sequence axis: the reduce exit, and the materialized exit.

Delta math. A sum over positions is linear: a mutant's result is ``y0 + sum_{j reached} D[m, j]``
(divided by the length for a mean), so each mutant sums its probe's deltas over the positions it
reaches (:func:`yuzu_onnx.emit.reach.sum_over_reach`) and the result is per mutant
(GlobalAveragePool, ReduceMean, ReduceSum; the ``reduce-exit`` rule).

Max, min, log-sum-exp and softmax over positions are not linear in the deltas and need every
position of every mutant: their input is materialized and the node runs per mutant (the
``exit`` rule of :mod:`yuzu_onnx.rules.materialized`; planned, so no warning: it is what a
profile head needs).

The reduced axes may also include unit axes, never the batch or other non-unit axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..emit.context import EmitContext
from ..emit.reach import add_to_reference, delta_rows, one_mutant_per_probe, sum_over_reach, sum_over_window
from ..ops import attr, prod
from ..plan import MutState, NodePlan, SeqState
from .base import Decline, Rule
from .common import shape_text
from .materialized import EXIT

if TYPE_CHECKING:
    from ..analyze import Analysis

FAMILY = "reduce-exit"
#: Linear reductions: summed from deltas.
LINEAR = ("GlobalAveragePool", "ReduceMean", "ReduceSum")
#: Reductions that need each mutant's whole input.
NONLINEAR = ("GlobalMaxPool", "ReduceMax", "ReduceMin", "ReduceLogSumExp", "Softmax", "LogSoftmax")


def decline(reason: str) -> Decline:
    return Decline(FAMILY, reason)


def check_reduction(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> NodePlan | Decline:
    """An op over the whole sequence axis (plus unit axes)."""
    x = node.input[0]
    if dep != [x]:
        return decline(f"its parameter input {next(n for n in dep if n != x)!r} depends on the sequence")
    outputs = [o for o in node.output if o]
    if len(outputs) != 1:
        return decline(f"it has {len(outputs)} outputs")
    st: SeqState = a.plan.states[x]
    rank = len(st.dims) + 1
    unit = {ax for ax in range(1, rank) if st.dims[ax - 1] == 1}
    op = node.op_type
    if op.startswith("Global"):
        axes = set(range(2, rank))
    elif op in ("Softmax", "LogSoftmax"):
        default = -1 if a.opset() >= 13 else 1
        axis = attr(node, "axis", default) % rank
        if a.opset() < 13 and axis != rank - 1:
            return decline(f"before opset 13 it normalizes over the flattened axes {axis}.. together")
        axes = {axis}
    else:
        raw = attr(node, "axes")
        if raw is None and len(node.input) > 1 and node.input[1]:
            raw = a.const(node.input[1])
            if raw is None:
                return decline(f"its axes {node.input[1]!r} are not constant")
        if raw is None:
            return decline("it reduces every axis, the batch axis included")
        axes = {int(a_) % rank for a_ in np.asarray(raw).ravel()}
    if 0 in axes:
        return decline("it reduces over the batch axis")
    if st.seq_axis not in axes:
        return decline(f"it works over axes {sorted(axes)} of {x!r} {shape_text(st.dims)}, not the sequence axis "
                       f"{st.seq_axis} (an op over channels at each position: the position-local family's case)")
    if not axes <= unit | {st.seq_axis}:
        return decline(f"it reduces axes {sorted(axes - unit - {st.seq_axis})} of {x!r} {shape_text(st.dims)} "
                       "besides the sequence axis")
    a.plan.states[node.output[0]] = MutState()
    if op in LINEAR:
        return NodePlan(node, REDUCE_EXIT, width=st.support.max_width)
    return NodePlan(node, EXIT, materialize=[x], width=st.support.max_width,
                    note="an op over all positions: each mutant's input is materialized")


def reduce_flops(a: "Analysis", np_: NodePlan, per_sequence: int) -> tuple[int, int]:
    """Each mutant adds its reach: ``S x sum_j width_j x (elements per position)``, also the floor."""
    src = a.plan.states[np_.node.input[0]]
    work = int(a.plan.subs * src.support.widths.sum()) * prod(src.dims) // max(src.dims[src.seq_axis - 1], 1)
    return work, work


def emit_reduce_exit(ctx: EmitContext, np_: NodePlan) -> None:
    b = ctx.b
    node = np_.node
    x, out = node.input[0], node.output[0]
    st = ctx.seq(x)
    rest = [d for i, d in enumerate(st.dims, start=1) if i != st.seq_axis]
    width = int(np.prod(rest, dtype=np.int64))
    if one_mutant_per_probe(ctx, st):
        delta = sum_over_window(ctx, x)  # (N*c, S*T, C)
    else:
        rows, count = delta_rows(ctx, x)  # (N, L, R, C)
        delta = sum_over_reach(ctx, st, rows, width, count)  # (N, M, C)
    if node.op_type != "ReduceSum":
        full = ctx.plan.states[x]  # a mean over the tensor's real length, not a tile's window
        delta = b.op("Div", [delta, b.const(np.array(float(full.dims[full.seq_axis - 1])))], "mean_delta")
    ctx.mut[out] = add_to_reference(ctx, delta, out, ctx.plan.infos[out].shape[1:])


REDUCE_EXIT = Rule("reduce-exit", "reduce exit", "mutant", reduce_flops, emit_reduce_exit)
RULES = (REDUCE_EXIT,)
CHECKS = {op: check_reduction for op in LINEAR + NONLINEAR}
