"""Exits from probe form to per-mutant tensors, for ops that mix all positions linearly.

- Dense exit (Flatten/Reshape then Gemm/MatMul): ``delta_y[m] = sum_j W_j . D[m, j]``.
- Reduce exit (GlobalAveragePool, ReduceMean/ReduceSum over the sequence axis):
  ``delta_y[m] = sum_j D[m, j]`` (divided by the length for means).

Both sum, for each mutant, its contributions at the positions it reaches: the probe-form
deltas are laid out as rows ``j*P + p`` and each mutant gathers its rows (a table of
``M x (positions reached)`` entries) and sums them. The result is materialized (``R + delta``
for every mutant) and the rest of the network runs per mutant.

Non-finite values: ``R + delta`` is only as exact as ``delta``. A reference value of +-inf that
a mutant leaves unchanged has delta 0 (not ``inf - inf = NaN``), so it stays inf as in naive
ISM. A dense weight holding inf (or NaN) would turn the zero deltas it meets into NaN
(``0 * inf``), so such a layer runs on the materialized mutants instead, exactly as naive ISM.
"""

from __future__ import annotations

import warnings

import numpy as np
from onnx import numpy_helper

from ..analyze import ConversionWarning, NodePlan, SeqState
from ..ops import attr
from .context import EmitContext
from .materialize import materialize
from .probes import reprobe


def emit_dense_exit(ctx: EmitContext, np_: NodePlan) -> None:
    b = ctx.b
    node = np_.node
    source = ctx.state(node.input[0]).source
    st = ctx.seq(source)
    if _non_finite_weight(ctx, node):
        _dense_on_mutants(ctx, node, source)
        return
    rows = _delta_rows(ctx, source)  # (N, L, P, C)
    weight, hidden = _per_position_weight(ctx, node, st)  # (L, C, H)
    y = b.op("MatMul", [rows, weight], "dense_pos")  # (N, L, P, H)
    delta = _sum_over_reach(ctx, st, y, hidden)  # (N, M, H)
    full = b.op("Add", [delta, ctx.ref_broadcast(node.output[0])], "dense_mut")
    ctx.mut[node.output[0]] = b.reshape(full, [-1, hidden], "dense_mut")


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


def emit_reduce_exit(ctx: EmitContext, np_: NodePlan) -> None:
    b = ctx.b
    node = np_.node
    x, out = node.input[0], node.output[0]
    st = ctx.seq(x)
    rest = [d for i, d in enumerate(st.dims, start=1) if i != st.seq_axis]
    width = int(np.prod(rest, dtype=np.int64))
    rows = _delta_rows(ctx, x)  # (N, L, P, C)
    delta = _sum_over_reach(ctx, st, rows, width)  # (N, M, C)
    if node.op_type != "ReduceSum":
        delta = b.op("Div", [delta, b.const(np.array(float(st.dims[st.seq_axis - 1])))], "mean_delta")
    out_dims = ctx.plan.infos[out].shape[1:]
    delta = b.reshape(delta, [0, -1, *out_dims], "reduce_delta")
    full = b.op("Add", [delta, ctx.ref_broadcast(out)], "reduce_mut")
    ctx.mut[out] = b.reshape(full, [-1, *out_dims], "reduce_mut")


def _delta_rows(ctx: EmitContext, name: str) -> str:
    """Deltas of a probe tensor laid out ``(N, L, P, C)`` (other axes flattened into ``C``)."""
    b = ctx.b
    st = ctx.seq(name)
    p = st.probes
    probes, ref = ctx.unfold(reprobe(ctx, name, p), name, p), ctx.ref_broadcast(name)
    delta = b.op("Sub", [probes, ref], "exit_delta")
    if ctx.plan.non_finite_weights:
        # Equal values have delta 0, also where both are +-inf (inf - inf would be NaN). Only
        # non-finite weights give +-inf activations from validated finite inputs; elsewhere the
        # two extra passes over the largest tensor are skipped (ONNX Runtime's Where also held
        # 256 MB more on DeepSEA).
        delta = b.op("Where", [b.op("Equal", [probes, ref], "exit_same"), b.const(np.array(0.0)), delta],
                     "exit_delta")
    others = [ax + 1 for ax in range(1, len(st.dims) + 1) if ax != st.seq_axis]
    moved = b.transpose(delta, [0, 1 + st.seq_axis, 1] + others, "exit_t")
    length = st.dims[st.seq_axis - 1]
    return b.reshape(moved, [0, length, p, -1], "exit_rows")


def _sum_over_reach(ctx: EmitContext, st: SeqState, per_position: str, width: int) -> str:
    """``(N, L, P, W)`` per-position contributions -> ``(N, M, W)`` summed over each mutant's reach."""
    b, plan = ctx.b, ctx.plan
    p = st.probes
    length = st.dims[st.seq_axis - 1]
    rows = b.reshape(per_position, [0, length * p, width], "exit_rows")
    rows = b.op("Pad", [rows, b.ints([0, 0, 0, 0, 1, 0])], "exit_rows")  # zero row at L*P
    picked = b.gather(rows, _contribution_table(st, plan.subs, plan.mutants, p), axis=1, hint="exit_g")
    return b.op("ReduceSum", [picked, b.ints([2])], "exit_delta", keepdims=0)


def _per_position_weight(ctx: EmitContext, node, st: SeqState) -> tuple[str, int]:
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
    rank = len(st.dims)
    weight = b.reshape(weight, [*st.dims, hidden], "dense_w")
    others = [ax for ax in range(rank) if ax != st.seq_axis - 1]
    weight = b.transpose(weight, [st.seq_axis - 1] + others + [rank], "dense_w")
    length = st.dims[st.seq_axis - 1]
    return b.reshape(weight, [length, -1, hidden], "dense_w"), hidden


def _contribution_table(st, subs: int, mutants: int, probes: int) -> np.ndarray:
    """``(M, R)`` rows of the ``(L*P + 1, W)`` product each mutant sums (``L*P`` = zero row)."""
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
