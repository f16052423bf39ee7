"""Materialization: turn a probe tensor into the tensor of every mutant, and run original
nodes on materialized mutants (the per-mutant tail and the exact fallback)."""

from __future__ import annotations

import numpy as np

from ..analyze import NodePlan
from .context import EmitContext
from .probes import reprobe


def materialize(ctx: EmitContext, name: str) -> str:
    """``(N*M, *dims)``: the tensor for every mutant, mutants ordered as in the plan."""
    if name in ctx.mut:
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
    first = st.support.first_mutant(plan.subs)
    stop = first + st.support.widths * plan.subs
    shape = ctx.seq_axis_shape(name)
    below = b.op("Less", [col, b.const(first.reshape(shape), "mat_first", dtype=np.int64)], "mat_lo")
    above = b.op("Less", [col, b.const(stop.reshape(shape), "mat_stop", dtype=np.int64)], "mat_hi")
    inside = b.op("And", [b.op("Not", [below], "mat_nlo"), above], "mat_in")
    full = b.op("Where", [inside, per_mutant, ctx.ref_broadcast(name)], "mat_full")
    ctx.mut[name] = ctx.fold(full, name)
    return ctx.mut[name]


def emit_per_mutant(ctx: EmitContext, np_: NodePlan) -> None:
    """Clone an original node onto materialized inputs (batch ``N*M``)."""
    node = np_.node
    inputs = []
    for name in node.input:
        if ctx.is_seq(name):
            inputs.append(materialize(ctx, name))
        elif ctx.is_mut(name):
            inputs.append(ctx.mut[name])
        elif name in ctx.plan.side:
            inputs.append(ctx.repeat_side(name, ctx.plan.mutants))
        else:
            inputs.append(name)
    outputs = []
    for name in node.output:
        if not name:
            outputs.append("")
            continue
        ctx.mut[name] = ctx.b.fresh(f"mut_{node.op_type.lower()}")
        outputs.append(ctx.mut[name])
    ctx.b.clone(node, inputs, outputs, "mut")
