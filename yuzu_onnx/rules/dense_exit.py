"""Dense exit: a Flatten/Reshape over the whole sequence followed by a dense layer
(Gemm/MatMul with a constant weight), after which every tensor is per mutant.

Delta math. With the flattened input ``x = vec(R + D)`` and weight ``W``, a mutant's output is
``y0 + W^T vec(D)``, and ``vec(D)`` is zero outside the mutant's reach, so

    ``delta_y[m] = sum_{j reached by m} W_j^T D[m, j]``,

with ``W_j`` the rows of ``W`` that read position ``j``. In probe form this is one batched MatMul
of every probe's per-position deltas with ``W_j`` (``(N, L, P, C) @ (L, C, H)``), then each mutant
sums its positions' rows (:func:`yuzu_onnx.emit.reach.sum_over_reach`). The flatten itself is
deferred (``flat`` form): its dense layer reads the probe tensor directly.

A weight holding NaN or inf would turn the zero deltas it meets into NaN (``0 * inf``), so such
a layer runs on the materialized mutants instead, exactly as naive ISM.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from ..emit.context import EmitContext
from ..emit.materialize import materialize
from ..emit.reach import add_to_reference, delta_rows, sum_over_reach
from ..errors import InternalError
from ..ops import attr, prod
from ..plan import ConversionWarning, FlatState, MutState, NodePlan, SeqState
from .base import Decline, Rule, no_flops, probe_positions
from .common import shape_text

if TYPE_CHECKING:
    from ..analyze import Analysis

FAMILY = "dense-exit"


def decline(reason: str) -> Decline:
    return Decline(FAMILY, reason)


# ----------------------------------------------------------------------------- checks


def check_flatten(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> NodePlan | Decline:
    """A flatten of a whole probe tensor, feeding only dense layers: deferred to them."""
    x = node.input[0]
    st: SeqState = a.plan.states[x]
    out = node.output[0]
    out_shape = a.shape(out)
    if dep != [x]:
        return decline("its target shape depends on the sequence")
    if out_shape is None or None in out_shape[1:]:
        return decline(f"the shape of its output {out!r} is not known statically ({shape_text(out_shape)})")
    if len(out_shape) != 2 or out_shape[1] != prod(st.dims):
        return decline(f"it is not a flatten of each sequence's {shape_text(st.dims)} into one axis "
                       f"(output {shape_text(out_shape[1:])})")
    if node.op_type == "Flatten" and attr(node, "axis", 1) != 1:
        return decline(f"it flattens from axis {attr(node, 'axis', 1)}, not 1")
    if out in a.output_names:
        return decline(f"its output {out!r} is a graph output (only a flatten into dense layers is deferred)")
    users = a.consumers.get(out, [])
    for user in users:
        why = dense_decline(a, user, out)
        if why is not None:
            return decline(f"a flatten is deferred only into dense layers, and its consumer "
                           f"{user.op_type} {user.name or user.output[0]!r} {why}")
    if not users:
        return decline(f"its output {out!r} has no consumer")
    a.plan.states[out] = FlatState(x)
    return NodePlan(node, FLATTEN, width=st.support.max_width)


def dense_decline(a: "Analysis", node: onnx.NodeProto, flat: str) -> str | None:
    """Why ``node`` is not a dense layer reading ``flat`` (``None`` when it is)."""
    if node.op_type not in ("Gemm", "MatMul"):
        return "is not Gemm or MatMul"
    if not node.input or node.input[0] != flat or flat in node.input[1:]:
        return f"does not read {flat!r} as its first input only"
    if node.op_type == "Gemm" and attr(node, "transA", 0) != 0:
        return "transposes its input (transA)"
    if node.input[1] not in a.inits:
        return f"has the non-constant weight {node.input[1]!r}"
    w = a.shape(node.input[1])
    if node.op_type == "MatMul" and (w is None or len(w) != 2):
        return f"has a weight of shape {shape_text(w)}, not 2-D"
    computed = [n for n in node.input[2:] if n and n not in a.inits]
    if computed:
        return f"has the non-constant bias {computed[0]!r}"
    return None


def check_dense(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> NodePlan:
    """The dense layer after a deferred flatten (accepted by :func:`check_flatten`)."""
    if [type(a.plan.states[n]) for n in dep] != [FlatState] or dep != [node.input[0]]:
        raise InternalError(f"{node.op_type} node {node.name or node.output[0]!r} reads a deferred flatten "
                            f"but is not the dense layer the flatten was planned for (inputs {list(node.input)})")
    a.plan.states[node.output[0]] = MutState()
    return NodePlan(node, DENSE_EXIT)


# ----------------------------------------------------------------------------- FLOPs


def dense_flops(a: "Analysis", np_: NodePlan, per_sequence: int) -> tuple[int, int]:
    """Every probe's deltas times the weight (``P x per_sequence``); the floor is each mutant's
    positions only."""
    states = a.plan.states
    source = states[np_.node.input[0]].source
    src = states[source]
    per_position = per_sequence // max(src.dims[src.seq_axis - 1], 1)
    return probe_positions(a, source) * per_position, int(a.plan.subs * src.support.widths.sum()) * per_position


# ----------------------------------------------------------------------------- emit


def emit_dense_exit(ctx: EmitContext, np_: NodePlan) -> None:
    b = ctx.b
    node = np_.node
    source = ctx.state(node.input[0]).source
    st = ctx.seq(source)
    if _non_finite_weight(ctx, node):
        _dense_on_mutants(ctx, node, source)
        return
    if ctx.tiling is not None:
        _dense_on_tiles(ctx, node, source)
        return
    rows, count = delta_rows(ctx, source)  # (N, L, R, C): R = P, or P + 1 with the reference row
    weight, hidden = _per_position_weight(ctx, node, st)  # (L, C, H)
    y = b.op("MatMul", [rows, weight], "dense_pos")  # (N, L, R, H)
    delta = sum_over_reach(ctx, st, y, hidden, count)  # (N, M, H)
    full = b.op("Add", [delta, ctx.ref_broadcast(node.output[0])], "dense_mut")
    ctx.mut[node.output[0]] = b.reshape(full, [-1, hidden], "dense_mut")


def _dense_on_tiles(ctx: EmitContext, node, source: str) -> None:
    """Tiled dense exit: each tile multiplies its window's deltas by the weight rows of its
    window's positions (zero rows out of range), then each mutant sums its reach."""
    from ..emit.tiles import positions
    b = ctx.b
    st = ctx.seq(source)
    width = st.dims[st.seq_axis - 1]
    weight, hidden, before = _padded_weight(ctx, node, source)
    index = positions(ctx, source, 0, width - 1)
    if before:
        index = b.op("Add", [index, b.const(np.array(before, dtype=np.int64), dtype=np.int64)], "dense_w_index")
    rows_w = b.op("Gather", [weight, index], "dense_w_tiles", axis=0)  # (c, W, C, H)
    rows, p = delta_rows(ctx, source)  # (N*c, W, P, C): tiles carry no reference row
    ct = ctx.tiling.per_chunk
    split = b.reshape(rows, [-1, ct, width, p, int(np.prod(st.dims)) // width], "dense_split")
    y = b.op("MatMul", [split, rows_w], "dense_pos")  # (N, c, W, P, H)
    y = b.reshape(y, [-1, width, p, hidden], "dense_rows")
    delta = sum_over_reach(ctx, st, y, hidden, p)  # (N*c, S*T, H)
    ctx.mut[node.output[0]] = add_to_reference(ctx, delta, node.output[0], [hidden])


def _padded_weight(ctx: EmitContext, node, source: str) -> tuple[str, int, int]:
    """``(weight, H, before)``: the dense weight as ``(L, C, H)`` rows per position, padded with
    zero rows so that every window position any tile of any group reads exists (position ``p``
    at row ``p + before``). Emitted once, outside the Loops (one copy for all groups)."""
    key = ("dense_w", node.output[0])
    if key not in ctx.cache:
        b, full = ctx.b, ctx.plan.states[source]
        length = full.dims[full.seq_axis - 1]
        spans = [group.reads(source, 0, group.states[source].dims[full.seq_axis - 1] - 1)
                 for group in ctx.plan.tiling.groups]
        before = max(0, -min(low for low, _ in spans))
        after = max(0, max(high for _, high in spans) - (length - 1))
        with b.into(ctx.outer_nodes):  # the weight rearranged once per call, outside the Loops
            weight, hidden = _per_position_weight(ctx, node, full)  # (L, C, H)
            if before or after:
                weight = b.op("Pad", [weight, b.ints([before, 0, 0, after, 0, 0])], "dense_w_pad")
        ctx.cache[key] = (weight, hidden, before)
    return ctx.cache[key]


def _non_finite_weight(ctx: EmitContext, node) -> bool:
    weight = next(t for t in ctx.plan.model.graph.initializer if t.name == node.input[1])
    bad = int((~np.isfinite(numpy_helper.to_array(weight))).sum())
    if bad:
        warnings.warn(f"{node.op_type} node {node.name!r}: its weight {node.input[1]!r} holds {bad} NaN or "
                      "infinite values; the layer runs exactly on materialized mutants (slow) so that they "
                      "reach the outputs as in naive ISM", ConversionWarning, stacklevel=2)
    return bad > 0


def _dense_on_mutants(ctx: EmitContext, node, source: str) -> None:
    """The dense layer on every mutant's flattened input ``(N*M, prod(dims))``; the deferred
    flatten is row-major over ``dims``, as a Reshape of the materialized tensor is."""
    b, st = ctx.b, ctx.seq(source)
    flat = b.reshape(materialize(ctx, source), [-1, int(np.prod(st.dims, dtype=np.int64))], "dense_flat")
    out = b.fresh(f"mut_{node.op_type.lower()}")
    b.clone(node, [flat, *node.input[1:]], [out], "mut")
    ctx.mut[node.output[0]] = out


def _per_position_weight(ctx: EmitContext, node, st: SeqState) -> tuple[str, int]:
    """The dense weight as ``(L, C, H)``, rearranged in-graph from the original initializer
    (ONNX Runtime folds it once at session start; the file does not store a second copy)."""
    b = ctx.b
    shape = ctx.plan.infos[node.input[1]].shape
    weight = node.input[1]
    trans = node.op_type == "Gemm" and attr(node, "transB", 0)
    hidden = int(shape[0] if trans else shape[1])
    if trans:
        weight = b.transpose(weight, [1, 0], "dense_w")
    alpha = attr(node, "alpha", 1.0) if node.op_type == "Gemm" else 1.0
    if alpha != 1.0:
        weight = b.op("Mul", [weight, b.const(np.array(alpha))], "dense_w")
    rank = len(st.dims)
    weight = b.reshape(weight, [*st.dims, hidden], "dense_w")
    others = [ax for ax in range(rank) if ax != st.seq_axis - 1]
    weight = b.transpose(weight, [st.seq_axis - 1] + others + [rank], "dense_w")
    length = st.dims[st.seq_axis - 1]
    return b.reshape(weight, [length, -1, hidden], "dense_w"), hidden


FLATTEN = Rule("flatten", "flatten (into dense)", "flat", no_flops, None)
DENSE_EXIT = Rule("dense-exit", "dense exit", "mutant", dense_flops, emit_dense_exit)
RULES = (FLATTEN, DENSE_EXIT)
CHECKS = {"Flatten": check_flatten, "Reshape": check_flatten}
#: Checks for nodes whose inputs are deferred flattens (``flat`` form).
FLAT_CHECKS = {"Gemm": check_dense, "MatMul": check_dense}
