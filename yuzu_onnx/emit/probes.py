"""Probe-form tensors: encoding the input and changing the number of probes.

See :mod:`yuzu_onnx.emit.context` for the probe form.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from ..errors import InternalError
from ..plan import NodePlan
from .carry import runs_carried, worth_carrying
from .context import EmitContext


def encode_input(ctx: EmitContext) -> str:
    """Probe form of the sequence input with ``P = S``: probe ``s`` at a mutated position is
    the position's ``s``-th substitution; outside the region it is the input itself."""
    if ctx.tiling is not None:
        from .tiles import encode_tile_input
        return encode_tile_input(ctx)
    plan, b = ctx.plan, ctx.b
    seq = plan.seq
    name, s = seq.name, plan.subs
    x_b = ctx.ref_broadcast(name)  # (N, 1, *dims)
    mutated = substituted(ctx, name)
    inside = np.zeros(seq.length, dtype=bool)
    inside[plan.start:plan.end] = True
    region = b.const(inside.reshape(ctx.seq_axis_shape(name)), "region", dtype=np.bool_)
    probes = b.op("Where", [region, mutated, x_b], "input_probes")  # (N, S, *dims)
    return ctx.fold(b.op("Expand", [probes, b.ints([1, s, *ctx.seq(name).dims])], "input_probes"), name)


def substituted(ctx: EmitContext, x: str) -> str:
    """The ``S`` substituted one-hot columns of every position of the one-hot batch ``x``:
    ``(N, S, *dims)``; for ``all`` substitutions the constant ``(S, *dims-broadcast)`` identity.

    In ``alt`` mode slot ``s`` of a position whose reference character is ``r`` holds
    character ``s + (s >= r)``. Substituted columns take the input's own type (an integer
    one-hot input stays integer up to the model's own Cast, which then runs on the probes
    like any other node).
    """
    plan, b = ctx.plan, ctx.b
    seq = plan.seq
    a, s = seq.alphabet, plan.subs
    chan_first = seq.layout == "NCL"
    feed = seq.feed_dtype
    if plan.substitutions == "all":
        eye = np.eye(a)
        return b.const(eye[:, :, None] if chan_first else eye[:, None, :], "eye", dtype=feed)
    ref = b.op("ArgMax", [x], "ref_char", axis=seq.channel_axis, keepdims=1)  # (N,1,L)|(N,L,1)
    ref_b = b.unsqueeze(ref, [1], "ref_char_b")
    slot = np.arange(s).reshape(s, 1, 1)
    shifted = b.op("Cast", [b.op("Less", [ref_b, b.const(slot + 1, dtype=np.int64)], "shift")],
                   "shift_i", to=helper.TensorProto.INT64)
    chars = b.op("Add", [shifted, b.const(slot, dtype=np.int64)], "alt_char")  # (N,S,1,L)|(N,S,L,1)
    letters = np.arange(a).reshape((a, 1) if chan_first else (1, a))
    hit = b.op("Equal", [chars, b.const(letters, dtype=np.int64)], "alt_hit")
    return b.op("Cast", [hit], "alt_onehot", to=helper.np_dtype_to_tensor_dtype(feed))


def reprobe(ctx: EmitContext, name: str, target: int) -> str:
    """Return the probe form of ``name`` with ``target`` probes (emitting a conversion once).

    ``target`` must be at least ``K`` of the tensor. When it is a multiple of the current probe
    count the conversion is a broadcast select with a 0/1 mask; otherwise a per-position gather.
    Where only the form with the reference carried along exists (:func:`reprobe_carried`), its
    reference row is dropped.
    """
    key = (name, target)
    if key in ctx.probe:
        return ctx.probe[key]
    if key in ctx.carried:
        ctx.probe[key] = _without_reference(ctx, name, ctx.carried[key], target)
        return ctx.probe[key]
    st = ctx.seq(name)
    current = st.probes
    if target == current:
        return ctx.probe[key]
    _check_target(ctx, name, target)
    mutants, positions = st.support.mutant_position_pairs(ctx.plan.subs)
    if target % current == 0:
        out = _reprobe_by_mask(ctx, name, reprobe(ctx, name, current), current, target, mutants, positions)
    else:
        out = _reprobe_by_gather(ctx, name, current, target, mutants, positions, carry=False)
    ctx.probe[key] = out
    return out


def can_carry(ctx: EmitContext, name: str, target: int) -> bool:
    """Whether :func:`reprobe_carried` gives ``name`` with ``target`` probes: it exists, or it is
    a gather that a plain reprobe would need as well and that pays
    (:func:`yuzu_onnx.emit.carry.worth_carrying`)."""
    key = (name, target)
    if key in ctx.carried:
        return True
    if ctx.tiling is not None or key in ctx.probe:
        return False
    current = ctx.seq(name).probes
    return target != current and target % current != 0 and worth_carrying(ctx, name, target)


def reprobe_carried(ctx: EmitContext, name: str, target: int) -> str:
    """``name`` with ``target`` probes and the reference carried along as probe ``target``:
    ``(N*(target+1), *dims)`` (whole-form plans, where :func:`can_carry` holds).

    A reprobe gathers from the ``(probe, position)`` table of its source with the reference in
    slot ``P``; a source that carries its reference row *is* that table, where a plain one is
    first concatenated with the reference (a copy of the whole tensor). The row costs one more
    row of the gather, and every op that runs on it one more probe of ``P``: the reference
    computed on probes, equal to the reference pass up to float rounding and read, like it,
    only where no mutant of a probe reaches.
    """
    key = (name, target)
    if key not in ctx.carried:
        if not can_carry(ctx, name, target):
            raise InternalError(f"the reference cannot be carried along with {name!r} at {target} probes")
        _check_target(ctx, name, target)
        mutants, positions = ctx.seq(name).support.mutant_position_pairs(ctx.plan.subs)
        ctx.carried[key] = _reprobe_by_gather(ctx, name, ctx.seq(name).probes, target, mutants, positions, carry=True)
    return ctx.carried[key]


def probe_rows(ctx: EmitContext, name: str) -> tuple[str, int]:
    """``name``'s probe form unfolded, ``(N, R, *dims)``, and ``R``: ``P``, or ``P + 1`` where
    only the form carrying the reference row exists (for readers that index probes ``< P`` only,
    the exits and materializations: the unread row costs less than a copy without it)."""
    p = ctx.seq(name).probes
    carried = carried_only(ctx, name, p)
    if carried is not None:
        return ctx.unfold(carried, name, p + 1), p + 1
    return ctx.unfold(reprobe(ctx, name, p), name, p), p


def carried_only(ctx: EmitContext, name: str, probes: int) -> str | None:
    """``name``'s form carrying the reference row at ``probes`` where it is the only one emitted
    (a reader that can take it then needs no Slice), else None."""
    key = (name, probes)
    return ctx.carried[key] if key in ctx.carried and key not in ctx.probe else None


def _check_target(ctx: EmitContext, name: str, target: int) -> None:
    st = ctx.seq(name)
    if target < st.slots:
        raise InternalError(f"reprobing {name!r} to {target} probes, fewer than the {st.slots} mutants "
                            "that reach one of its positions")


def _without_reference(ctx: EmitContext, name: str, carried: str, probes: int) -> str:
    """The plain probe form of a tensor that carries its reference row: rows ``0..P-1``."""
    b = ctx.b
    rows = b.op("Slice", [ctx.unfold(carried, name, probes + 1), b.ints([0]), b.ints([probes]), b.ints([1])],
                "drop_ref")
    return ctx.fold(rows, name)


def _reprobe_by_mask(ctx, name, folded, current, target, mutants, positions) -> str:
    b, st = ctx.b, ctx.seq(name)
    ratio = target // current
    length = st.dims[st.seq_axis - 1]
    mask = np.zeros((ratio, current, length), dtype=bool)
    mask[(mutants % target) // current, mutants % current, positions] = True
    trailing = len(st.dims) - st.seq_axis
    mask = mask.reshape((ratio, current) + (1,) * (st.seq_axis - 1) + (length,) + (1,) * trailing)
    split = b.reshape(folded, [-1, 1, current, *st.dims], "reprobe_b")  # (N, 1, P, *dims)
    ref = b.unsqueeze(ctx.ref_broadcast(name), [1], "reprobe_ref")  # (N, 1, 1, *dims)
    chosen = b.op("Where", [b.const(mask, "reprobe_mask", dtype=np.bool_), split, ref], "reprobe")
    return ctx.fold(chosen, name)


def _reprobe_by_gather(ctx, name, current, target, mutants, positions, carry: bool) -> str:
    """One Gather over the flattened (probe, position) axes of the channels-last view
    ``(N, P + 1, L, *rest)`` (slot ``P`` holds the reference): probe ``p'`` at ``j`` reads
    slot ``(m mod P) * L + j`` for the mutant ``m`` it holds there, else ``P * L + j``.
    Probe-major order keeps a probe's reads sequential along ``j``, and the result is already
    channels-last, which ONNX Runtime's NCHWc Convs read without a Transpose of their own
    (:mod:`yuzu_onnx.emit.channels_last`). A source that carries its reference row is that view
    as it is; ``carry`` gathers one more row, the reference (:func:`reprobe_carried`)."""
    b, st = ctx.b, ctx.seq(name)
    rank = len(st.dims) + 2
    seq_ax = st.seq_axis + 1  # axis in the unfolded (N, P, *dims) tensor
    rest = [ax for ax in range(2, rank) if ax != seq_ax]
    length = st.dims[st.seq_axis - 1]
    rest_dims = [st.dims[ax - 2] for ax in rest]
    perm = [0, 1, seq_ax] + rest
    if (name, current) in ctx.carried:
        stacked = moved = b.transpose(ctx.unfold(ctx.carried[(name, current)], name, current + 1), perm,
                                      "reprobe_t")  # (N, P + 1, L, *rest), slot P the reference
    else:
        moved = b.transpose(ctx.unfold(reprobe(ctx, name, current), name, current), perm, "reprobe_t")
        ref = b.transpose(ctx.ref_broadcast(name), perm, "reprobe_ref")  # (N, 1, L, *rest)
        stacked = b.op("Concat", [moved, ref], "reprobe_cat", axis=1)  # slot P holds the reference
    flat = b.reshape(stacked, [0, (current + 1) * length, *rest_dims], "reprobe_flat")
    table = np.repeat((current * length + np.arange(length))[None, :], target + int(carry), axis=0)
    table[mutants % target, positions] = (mutants % current) * length + positions
    gathered = b.gather(flat, table, axis=1, hint="reprobe_g")  # (N, P' (+1), L, *rest)
    back = [0, 1] + [2 if ax == seq_ax else 3 + rest.index(ax) for ax in range(2, rank)]
    out = b.transpose(gathered, back, "reprobe")
    if rank == 4 and seq_ax == 3:  # (N, P, C, L) <-> (N, P, L, C)
        ctx.swapped[moved] = ctx.swapped[out] = (rest_dims[0], length)
    return ctx.fold(out, name)


def probe_inputs(ctx: EmitContext, np_: NodePlan) -> list[str]:
    """The node's inputs as the probe rules feed them: sequence tensors reprobed to the node's
    ``P``, side inputs repeated ``P`` times per sequence, constants as they are. In a tiled
    plan sequence tensors are also widened to the output's window (reference values where
    their own window does not reach) and side inputs repeated for every tile of the chunk."""
    if ctx.tiling is None:
        return [reprobe(ctx, name, np_.probes) if ctx.is_seq(name)
                else ctx.repeat_side(name, np_.probes) if name in ctx.plan.side else name
                for name in np_.node.input]
    out = np_.node.output[0]
    inputs = []
    for name in np_.node.input:
        if ctx.is_seq(name):
            inputs.append(in_window_of(ctx, name, out, np_.probes))
        elif name in ctx.plan.side:
            inputs.append(ctx.repeat_side(name, ctx.tiling.per_chunk * np_.probes))
        else:
            inputs.append(name)
    return inputs


def in_window_of(ctx: EmitContext, name: str, out: str, probes: int) -> str:
    """``name`` in probe form with ``probes`` probes, over the tile window of ``out`` (tiled
    plans: reference values where its own window does not reach)."""
    from .tiles import extend
    folded = reprobe(ctx, name, probes)
    first = ctx.tiling.windows[out].start - ctx.tiling.windows[name].start
    width = ctx.seq(out).support.length
    if (first, width) != (0, ctx.seq(name).support.length):
        folded = extend(ctx, name, folded, probes, first, first + width - 1, None)
    return folded


def clone_on_probes(ctx: EmitContext, np_: NodePlan, substitute: dict[int, str] | None = None) -> None:
    """Run the original node unchanged on probe-form inputs: the emitter of every probe rule
    whose op is exact on hybrid sequences (elementwise, positional, structured windows);
    ``substitute`` replaces inputs by position (a Conv's folded weight). Where every sequence
    input can carry its reference row along (:func:`reprobe_carried`) the node runs on those
    (each probe is a sequence of its own, the reference one more) and its output carries it."""
    node = np_.node
    carried = _carried_inputs(ctx, np_) if runs_carried(ctx, np_) else None
    inputs = carried if carried is not None else probe_inputs(ctx, np_)
    for index, name in (substitute or {}).items():
        inputs[index] = name
    out = ctx.b.fresh(f"probe_{node.op_type.lower()}")
    ctx.b.clone(node, inputs, [out], "probe")
    (ctx.probe if carried is None else ctx.carried)[(node.output[0], np_.probes)] = out


def _carried_inputs(ctx: EmitContext, np_: NodePlan) -> list[str] | None:
    """The node's inputs with every sequence tensor carrying its reference row, or None where
    one cannot (:func:`can_carry`)."""
    names = np_.node.input
    seq = [name for name in names if ctx.is_seq(name)]
    if not seq or not all(can_carry(ctx, name, np_.probes) for name in seq):
        return None
    return [reprobe_carried(ctx, name, np_.probes) if ctx.is_seq(name) else name for name in names]
