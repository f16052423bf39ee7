"""Materialization: turn a probe tensor into the tensor of every mutant (batch ``N*M``)."""

from __future__ import annotations

import numpy as np

from .context import EmitContext
from .probes import reprobe


def materialize(ctx: EmitContext, name: str) -> str:
    """``(N*M, *dims)``: the tensor for every mutant, mutants ordered as in the plan."""
    if name in ctx.mut:
        return ctx.mut[name]
    if ctx.tiling is not None:
        from .tiles import materialize_tiled
        ctx.mut[name] = materialize_tiled(ctx, name)
        return ctx.mut[name]
    b, plan = ctx.b, ctx.plan
    st = ctx.seq(name)
    p = st.probes
    z = ctx.unfold(reprobe(ctx, name, p), name, p)
    m = plan.mutants
    mutant = np.arange(m)
    per_mutant = b.gather(z, mutant % p, axis=1, hint="mat_g")  # (N, M, *dims)
    # Mask of (mutant, position) pairs that reach, computed in-graph from O(M + L) constants.
    col = b.const(mutant.reshape((m,) + (1,) * len(st.dims)), "mat_m", dtype=np.int64)
    first, stop = st.support.mutant_range(plan.subs)
    shape = ctx.seq_axis_shape(name)
    below = b.op("Less", [col, b.const(first.reshape(shape), "mat_first", dtype=np.int64)], "mat_lo")
    above = b.op("Less", [col, b.const(stop.reshape(shape), "mat_stop", dtype=np.int64)], "mat_hi")
    inside = b.op("And", [b.op("Not", [below], "mat_nlo"), above], "mat_in")
    full = b.op("Where", [inside, per_mutant, ctx.ref_broadcast(name)], "mat_full")
    ctx.mut[name] = ctx.fold(full, name)
    return ctx.mut[name]
