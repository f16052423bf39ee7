"""Assemble ``y_hat`` (tangermeme's ``(N, A, L_region, *out)`` layout) from per-mutant outputs."""

from __future__ import annotations

import numpy as np

from .context import EmitContext
from .materialize import materialize


def ism_output_name(output: str) -> str:
    """Name of the ISM output paired with an original output."""
    return f"{output}_ism"


def emit_ism_output(ctx: EmitContext, output: str, out_dims: list[int]) -> str:
    """Emit ``y_hat`` for one original output; returns its graph name."""
    b, plan = ctx.b, ctx.plan
    a, s, region = plan.seq.alphabet, plan.subs, plan.requested_region
    name = b.reserve(ism_output_name(output))
    rest = list(range(3, 3 + len(out_dims)))
    if output in ctx.mut:  # per mutant already (a tiled plan's Loop leaves every output so)
        per_mutant = ctx.mut[output]
    elif ctx.is_seq(output):
        per_mutant = materialize(ctx, output)
    else:  # the output does not depend on the sequence: every slot equals y0
        return b.op("Expand", [_y0_broadcast(ctx, output, out_dims), b.ints([1, a, region] + [1] * len(out_dims))],
                    outputs=[name])
    by_slot = b.reshape(per_mutant, [-1, plan.region, s, *out_dims], "by_slot")  # (N, Lr, S, *out)
    by_slot = _unreached_as_y0(ctx, output, by_slot, out_dims)
    if plan.substitutions == "all":
        return b.op("Transpose", [by_slot], outputs=[name], perm=[0, 2, 1] + rest)
    # alt: slot s at a position with reference r is character s + (s >= r); r itself gets y0.
    seq = plan.seq
    ref = b.op("ArgMax", [seq.name], "ref_char", axis=seq.channel_axis, keepdims=0)  # (N, L)
    ref = b.op("Slice", [ref, b.ints([plan.requested_start]), b.ints([plan.requested_end]), b.ints([1])],
               "ref_region")
    ref = b.unsqueeze(ref, list(range(2, 3 + len(out_dims))), "ref_b")  # (N, Lr, 1, 1...)
    letters = b.const(np.arange(a).reshape((a,) + (1,) * len(out_dims)), "letters", dtype=np.int64)
    first = b.op("Slice", [by_slot, b.ints([0]), b.ints([1]), b.ints([2])], "slot0")
    below = b.op("Concat", [by_slot, first], "slot_below", axis=2)  # slot a -> mutant slot a
    above = b.op("Concat", [first, by_slot], "slot_above", axis=2)  # slot a -> mutant slot a-1
    is_below = b.op("Less", [letters, ref], "is_below")
    is_ref = b.op("Equal", [letters, ref], "is_ref")
    upper = b.op("Where", [is_ref, _y0_broadcast(ctx, output, out_dims), above], "upper")
    merged = b.op("Where", [is_below, below, upper], "merged")  # (N, Lr, A, *out)
    return b.op("Transpose", [merged], outputs=[name], perm=[0, 2, 1] + rest)


def _y0_broadcast(ctx: EmitContext, output: str, out_dims: list[int]) -> str:
    """``y0`` as ``(N, 1, 1, *out)`` (static dims, as y_ism has), emitted once per output."""
    key = ("y0_b", output)
    if key not in ctx.cache:
        ctx.cache[key] = ctx.b.reshape(output, [-1, 1, 1, *out_dims], "y0_b")
    return ctx.cache[key]


def _unreached_as_y0(ctx: EmitContext, output: str, by_slot: str, out_dims: list[int]) -> str:
    """``by_slot`` over the requested region: positions of a trimmed plan
    (:mod:`yuzu_onnx.trim`) whose mutations reach no output get ``y0`` in every slot."""
    b, plan = ctx.b, ctx.plan
    before, after = plan.start - plan.requested_start, plan.requested_end - plan.end
    if not before and not after:
        return by_slot

    def unreached(positions: int) -> list[str]:
        return [b.op("Expand", [_y0_broadcast(ctx, output, out_dims), b.ints([1, positions, plan.subs] + [1] * len(out_dims))], "unreached")
                ] if positions else []

    return b.op("Concat", unreached(before) + [by_slot] + unreached(after), "by_slot_requested", axis=1)
