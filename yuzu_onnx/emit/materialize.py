"""Materialization: turn a probe tensor into the tensor of every mutant (batch ``N*M``)."""

from __future__ import annotations

import numpy as np

from ..errors import InternalError
from .context import EmitContext
from .finite import select
from .probes import probe_rows


def materialize(ctx: EmitContext, name: str) -> str:
    """``(N*M, *dims)``: the tensor for every mutant, mutants ordered as in the plan."""
    if name in ctx.mut:
        return ctx.mut[name]
    if ctx.tiling is not None:
        from .tiles import materialize_tiled
        ctx.mut[name] = materialize_tiled(ctx, name)
        return ctx.mut[name]
    ctx.mut[name] = ctx.fold(_per_mutant(ctx, name, ctx.plan.mutants), name)
    return ctx.mut[name]


def materialize_with_reference(ctx: EmitContext, name: str) -> str:
    """``(N, M + 1, *dims)`` of a whole-form plan: every mutant's tensor, then the reference's
    (row ``M``, bit for bit the reference tensor), so that a gather can pick either from one
    table without a Concat of the ``M`` rows."""
    return _per_mutant(ctx, name, ctx.plan.mutants + 1)


def _per_mutant(ctx: EmitContext, name: str, rows: int) -> str:
    """``(N, rows, *dims)``: row ``m < M`` is mutant ``m``'s tensor (its probe's values where
    the mutant reaches, the reference's elsewhere); a row ``m >= M`` reaches nowhere, so it is
    the reference tensor."""
    b, plan = ctx.b, ctx.plan
    st = ctx.seq(name)
    p = st.probes
    z = probe_rows(ctx, name)[0]  # gathered at rows < P only
    mutant = np.arange(rows)
    per_mutant = b.gather(z, mutant % p, axis=1, hint="mat_g")  # (N, rows, *dims)
    # Mask of (mutant, position) pairs that reach, computed in-graph from O(M + L) constants:
    # mutants [first_j, stop_j) reach position j, and stop_j <= M.
    col = b.const(mutant.reshape((rows,) + (1,) * len(st.dims)), "mat_m", dtype=np.int64)
    first, stop = st.support.mutant_range(plan.subs)
    if rows > plan.mutants and stop.max(initial=0) > plan.mutants:
        raise InternalError(f"mutants reaching {name!r} run past the plan's {plan.mutants}")
    shape = ctx.seq_axis_shape(name)
    below = b.op("Less", [col, b.const(first.reshape(shape), "mat_first", dtype=np.int64)], "mat_lo")
    above = b.op("Less", [col, b.const(stop.reshape(shape), "mat_stop", dtype=np.int64)], "mat_hi")
    inside = b.op("And", [b.op("Not", [below], "mat_nlo"), above], "mat_in")
    return select(ctx, inside, per_mutant, ctx.ref_broadcast(name), "mat_full")
