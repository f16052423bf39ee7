"""Assemble ``y_hat`` (tangermeme's ``(N, A, L_region, *out)`` layout) from per-mutant outputs."""

from __future__ import annotations

import numpy as np
import onnx

from .context import EmitContext
from .materialize import materialize, materialize_with_reference


def ism_output_name(output: str) -> str:
    """Name of the ISM output paired with an original output."""
    return f"{output}_ism"


def emit_ism_output(ctx: EmitContext, output: str, out_dims: list[int]) -> str:
    """Emit ``y_hat`` for one original output; returns its graph name."""
    b, plan = ctx.b, ctx.plan
    a, s, region = plan.seq.alphabet, plan.subs, plan.requested_region
    name = b.reserve(ism_output_name(output))
    rest = list(range(3, 3 + len(out_dims)))
    if not ctx.is_seq(output) and output not in ctx.mut:  # every slot equals y0
        return b.op("Expand", [_y0_broadcast(ctx, output, out_dims), b.ints([1, a, region] + [1] * len(out_dims))],
                    outputs=[name])
    if plan.substitutions == "all":
        per_mutant = materialize(ctx, output)  # a tiled plan's Loop left it in ctx.mut already
        by_slot = b.reshape(per_mutant, [-1, plan.region, s, *out_dims], "by_slot")  # (N, Lr, S, *out)
        by_slot = _unreached_as_y0(ctx, output, by_slot, out_dims)
        return b.op("Transpose", [by_slot], outputs=[name], perm=[0, 2, 1] + rest)
    # alt: character a at a position i with reference r is mutant slot a - (a > r); r itself,
    # and every character at a position a trimmed plan does not compute (:mod:`yuzu_onnx.trim`),
    # gets y0. One GatherND per sequence picks each (a, i)'s row from the mutants' rows and y0
    # appended after them, already in y_hat's (A, L) order: two passes over the output instead
    # of two Concats, two Wheres and a Transpose (and a Concat of y0 for trimmed positions).
    # (a tiled plan's Loop leaves every output per mutant; a whole plan materializes the
    # mutants' rows with y0's after them, one pass, no Concat of the M rows)
    seq = plan.seq
    if output in ctx.mut or ctx.tiling is not None:
        per_mutant = materialize(ctx, output)
        rows = b.reshape(per_mutant, [-1, plan.region * s, *out_dims], "by_row")  # (N, M, *out)
        table = b.op("Concat", [rows, b.reshape(output, [-1, 1, *out_dims], "y0_row")], "rows_y0", axis=1)
    else:
        table = materialize_with_reference(ctx, output)  # (N, M + 1, *out)
    ref = b.op("ArgMax", [seq.name], "ref_char", axis=seq.channel_axis, keepdims=0)  # (N, L)
    ref = b.op("Slice", [ref, b.ints([plan.requested_start]), b.ints([plan.requested_end]), b.ints([1])],
               "ref_region")
    ref = b.unsqueeze(ref, [1], "ref_b")  # (N, 1, Lr)
    letters = b.const(np.arange(a, dtype=np.int64).reshape(1, a, 1), "letters", dtype=np.int64)
    above = b.op("Cast", [b.op("Greater", [letters, ref], "is_above")], "above", to=onnx.TensorProto.INT64)
    computed = np.arange(plan.requested_start, plan.requested_end) - plan.start  # position in the plan's region
    reached = (computed >= 0) & (computed < plan.region)
    first_row = b.const((np.where(reached, computed, 0) * s).reshape(1, 1, region), "first_row", dtype=np.int64)
    row = b.op("Add", [first_row, b.op("Sub", [letters, above], "slot")], "row")  # (N, A, Lr)
    is_y0 = b.op("Equal", [letters, ref], "is_ref")
    if not reached.all():
        is_y0 = b.op("Or", [is_y0, b.const(~reached.reshape(1, 1, region), "unreached", dtype=np.bool_)], "is_y0")
    row = b.op("Where", [is_y0, b.const(np.array(plan.region * s, dtype=np.int64), "y0_at", dtype=np.int64), row],
               "row")
    return b.op("GatherND", [table, b.unsqueeze(row, [3], "row_index")], outputs=[name], batch_dims=1)


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
