"""Dense exit: a Flatten/Reshape followed by Gemm/MatMul over a probe tensor.

``delta_y[m] = sum_j W_j . D[m, j]`` over the positions ``j`` that mutant ``m`` reaches. Each
position's probes are multiplied by that position's weight slice in one broadcast MatMul,
then each mutant's contributions are gathered and summed. The result is materialized
(``R + delta`` for every mutant) and the rest of the network runs per mutant.
"""

from __future__ import annotations

import numpy as np

from ..analyze import NodePlan
from ..ops import attr
from .context import EmitContext
from .probes import reprobe


def emit_dense_exit(ctx: EmitContext, np_: NodePlan) -> None:
    b, plan = ctx.b, ctx.plan
    node = np_.node
    source = ctx.state(node.input[0]).source
    st = ctx.seq(source)
    p = st.probes
    z = b.op("Sub", [ctx.unfold(reprobe(ctx, source, p), source, p), ctx.ref_broadcast(source)], "dense_delta_in")
    seq_ax = st.seq_axis
    chan_ax = 3 - seq_ax
    length = st.dims[seq_ax - 1]
    weight, hidden = _per_position_weight(ctx, node, st.dims, seq_ax)  # (L, C, H)
    zt = b.transpose(z, [0, 1 + seq_ax, 1, 1 + chan_ax], "dense_t")  # (N, L, P, C)
    y = b.op("MatMul", [zt, weight], "dense_pos")  # (N, L, P, H)
    rows = b.reshape(y, [0, length * p, hidden], "dense_rows")
    rows = b.op("Pad", [rows, b.ints([0, 0, 0, 0, 1, 0])], "dense_rows")  # zero row at L*P
    picked = b.gather(rows, _contribution_table(st, plan.subs, plan.mutants, p), axis=1, hint="dense_g")
    delta = b.op("ReduceSum", [picked, b.ints([2])], "dense_delta", keepdims=0)  # (N, M, H)
    ref_b = ctx.ref_broadcast(node.output[0])
    full = b.op("Add", [delta, ref_b], "dense_mut")
    ctx.mut[node.output[0]] = b.reshape(full, [-1, hidden], "dense_mut")


def _per_position_weight(ctx: EmitContext, node, dims, seq_ax: int) -> tuple[str, int]:
    """The dense weight as ``(L, C, H)``, rearranged in-graph from the original initializer
    (ONNX Runtime folds it once at session start; the file does not store a second copy)."""
    b = ctx.b
    shape = next(t.dims for t in ctx.plan.model.graph.initializer if t.name == node.input[1])
    weight = node.input[1]
    trans = node.op_type == "Gemm" and attr(node, "transB", 0)
    hidden = int(shape[0] if trans else shape[1])
    if trans:
        weight = b.transpose(weight, [1, 0], "dense_w")
    alpha = attr(node, "alpha", 1.0) if node.op_type == "Gemm" else 1.0
    if alpha != 1.0:
        weight = b.op("Mul", [weight, b.const(np.array(alpha))], "dense_w")
    weight = b.reshape(weight, [*dims, hidden], "dense_w")
    if seq_ax == 2:
        weight = b.transpose(weight, [1, 0, 2], "dense_w")
    return weight, hidden


def _contribution_table(st, subs: int, mutants: int, probes: int) -> np.ndarray:
    """``(M, R)`` rows of the ``(L*P + 1, H)`` product each mutant sums (``L*P`` = zero row)."""
    m, j = st.support.mutant_position_pairs(subs)
    length = st.dims[st.seq_axis - 1]
    counts = np.bincount(m, minlength=mutants)
    width = max(int(counts.max(initial=0)), 1)
    order = np.lexsort((j, m))
    m, j = m[order], j[order]
    rank = np.arange(m.size) - np.repeat(np.cumsum(counts) - counts, counts)
    table = np.full((mutants, width), length * probes, dtype=np.int64)
    table[m, rank] = j * probes + m % probes
    return table
