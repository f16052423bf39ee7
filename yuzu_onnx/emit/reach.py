"""Shared machinery of the exits from probe form to per-mutant tensors: each mutant sums its
contributions at the positions it reaches.

The probe-form deltas are laid out as rows ``j*P + p`` (:func:`delta_rows`); each mutant
gathers its rows with a table of ``M x (positions reached)`` entries and sums them
(:func:`sum_over_reach`). Used by the dense exit (after a per-position MatMul with the dense
weight) and the reduce exit (directly).

Non-finite values: ``R + delta`` is only as exact as ``delta``. A reference value of +-inf that
a mutant leaves unchanged has delta 0 (not ``inf - inf = NaN``), so it stays inf as in naive
ISM; the guard costs two passes over the largest tensor, so it is emitted only where the model
has non-finite weights.
"""

from __future__ import annotations

import numpy as np

from ..plan import SeqState
from .context import EmitContext
from .probes import probe_rows


def deltas(ctx: EmitContext, name: str) -> tuple[str, int]:
    """Deltas ``probe - reference`` of a probe tensor, ``(N, R, *dims)``, and ``R``
    (:func:`~yuzu_onnx.emit.probes.probe_rows`; tiled: ``(N*c, P, *window dims)``, zero at window positions outside the
    tensor)."""
    b = ctx.b
    st = ctx.seq(name)
    p = st.probes
    (probes, rows), ref = probe_rows(ctx, name), ctx.ref_broadcast(name)
    delta = b.op("Sub", [probes, ref], "exit_delta")
    if ctx.plan.non_finite_weights:
        # Equal values have delta 0, also where both are +-inf (inf - inf would be NaN). Only
        # non-finite weights give +-inf activations from validated finite inputs; elsewhere the
        # two extra passes over the largest tensor are skipped (ONNX Runtime's Where also held
        # 256 MB more on DeepSEA).
        delta = b.op("Where", [b.op("Equal", [probes, ref], "exit_same"), b.const(np.array(0.0)), delta],
                     "exit_delta")
    if ctx.tiling is not None:
        # positions of a window outside the tensor hold no delta (whatever was computed there)
        from .tiles import zero_out_of_range
        folded = b.reshape(delta, [-1, *st.dims], "exit_delta")
        delta = b.reshape(zero_out_of_range(ctx, name, folded, p), [-1, p, *st.dims], "exit_delta")
    return delta, rows


def delta_rows(ctx: EmitContext, name: str) -> tuple[str, int]:
    """Deltas of a probe tensor laid out ``(N, L, R, C)`` (other axes flattened into ``C``), and
    ``R`` (:func:`~yuzu_onnx.emit.probes.probe_rows`)."""
    b, st = ctx.b, ctx.seq(name)
    others = [ax + 1 for ax in range(1, len(st.dims) + 1) if ax != st.seq_axis]
    delta, rows = deltas(ctx, name)
    moved = b.transpose(delta, [0, 1 + st.seq_axis, 1] + others, "exit_t")
    length = st.dims[st.seq_axis - 1]
    return b.reshape(moved, [0, length, rows, -1], "exit_rows"), rows


def one_mutant_per_probe(ctx: EmitContext, st: SeqState) -> bool:
    """Whether each probe of a tiled tensor holds one mutant of its tile (``P = S*T``: probe
    ``p`` is local mutant ``p``), so that a mutant's reach is its probe's whole window."""
    return ctx.tiling is not None and st.probes == ctx.plan.subs * ctx.tiling.width


def sum_over_window(ctx: EmitContext, name: str) -> str:
    """``(N*c, S*T, C)``: each mutant's deltas summed over the sequence axis, where
    :func:`one_mutant_per_probe` holds (one reduction over the probes' windows: positions a
    mutant does not reach hold its probe's reference values, delta 0 up to rounding)."""
    b, st = ctx.b, ctx.seq(name)
    summed = b.op("ReduceSum", [deltas(ctx, name)[0], b.ints([1 + st.seq_axis])], "exit_delta", keepdims=0)
    return b.reshape(summed, [0, st.probes, -1], "exit_delta")


def sum_over_reach(ctx: EmitContext, st: SeqState, per_position: str, width: int, rows: int) -> str:
    """``(N, L, R, W)`` per-position contributions (``R`` rows per position, the ``P`` probes
    first) -> ``(N, M, W)`` summed over each mutant's reach (tiled plans: ``(N*c, W_t, P, W)`` ->
    ``(N*c, S*T, W)``, the same table for every tile)."""
    b, plan = ctx.b, ctx.plan
    length = st.dims[st.seq_axis - 1]
    flat = b.reshape(per_position, [0, length * rows, width], "exit_rows")
    flat = b.op("Pad", [flat, b.ints([0, 0, 0, 0, 1, 0])], "exit_rows")  # zero row at L*R
    mutants = plan.mutants if ctx.tiling is None else plan.subs * ctx.tiling.width  # of one tile
    table = contribution_table(st, plan.subs, mutants, st.probes, rows)
    picked = b.gather(flat, table, axis=1, hint="exit_g")
    return b.op("ReduceSum", [picked, b.ints([2])], "exit_delta", keepdims=0)


def contribution_table(st, subs: int, mutants: int, probes: int, rows: int | None = None) -> np.ndarray:
    """``(M, W)`` rows of the ``(L*R + 1, C)`` product each mutant sums: mutant ``m`` at ``j`` is
    row ``j*R + m mod P`` (``R`` rows per position, default ``P``; ``L*R`` = zero row)."""
    rows = probes if rows is None else rows
    m, j = st.support.mutant_position_pairs(subs)
    length = st.dims[st.seq_axis - 1]
    counts = np.bincount(m, minlength=mutants)
    width = max(int(counts.max(initial=0)), 1)
    order = np.lexsort((j, m))
    m, j = m[order], j[order]
    rank = np.arange(m.size) - np.repeat(np.cumsum(counts) - counts, counts)
    table = np.full((mutants, width), length * rows, dtype=np.int64)
    table[m, rank] = j * rows + m % probes
    return table


def add_to_reference(ctx: EmitContext, delta: str, out: str, out_dims) -> str:
    """Per-mutant ``y0 + delta``: ``delta`` is ``(N, M, *out)`` (tiled: ``(N*c, S*T, *out)``);
    returns ``(N * M, *out)`` (tiled: ``(N * c * S*T, *out)``, ordered sequence, tile, mutant)."""
    b = ctx.b
    if ctx.tiling is None:
        delta = b.reshape(delta, [0, -1, *out_dims], "reduce_delta")
    else:
        delta = b.reshape(delta, [-1, ctx.mutants, *out_dims], "reduce_delta")
    full = b.op("Add", [delta, b.unsqueeze(out, [1], "ref") if ctx.tiling is not None else ctx.ref_broadcast(out)],
                "reduce_mut")
    return b.reshape(full, [-1, *out_dims], "reduce_mut")
