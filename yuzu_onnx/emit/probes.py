"""Probe-form tensors: encoding the input and changing the number of probes.

See :mod:`yuzu_onnx.emit.context` for the probe form.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from ..errors import InternalError
from ..plan import NodePlan
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
    """
    key = (name, target)
    if key in ctx.probe:
        return ctx.probe[key]
    st = ctx.seq(name)
    current = st.probes
    folded = ctx.probe[(name, current)]
    if target == current:
        return folded
    if target < st.slots:
        raise InternalError(f"reprobing {name!r} to {target} probes, fewer than the {st.slots} mutants "
                            "that reach one of its positions")
    mutants, positions = st.support.mutant_position_pairs(ctx.plan.subs)
    if target % current == 0:
        out = _reprobe_by_mask(ctx, name, folded, current, target, mutants, positions)
    else:
        out = _reprobe_by_gather(ctx, name, folded, current, target, mutants, positions)
    ctx.probe[key] = out
    return out


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


def _reprobe_by_gather(ctx, name, folded, current, target, mutants, positions) -> str:
    """One Gather over the flattened (probe, position) axes of the channels-last view
    ``(N, P + 1, L, *rest)`` (slot ``P`` holds the reference): probe ``p'`` at ``j`` reads
    slot ``(m mod P) * L + j`` for the mutant ``m`` it holds there, else ``P * L + j``.
    Probe-major order keeps a probe's reads sequential along ``j``, and the result is already
    channels-last, which ONNX Runtime's NCHWc Convs read without a Transpose of their own
    (:mod:`yuzu_onnx.emit.channels_last`)."""
    b, st = ctx.b, ctx.seq(name)
    rank = len(st.dims) + 2
    seq_ax = st.seq_axis + 1  # axis in the unfolded (N, P, *dims) tensor
    rest = [ax for ax in range(2, rank) if ax != seq_ax]
    length = st.dims[st.seq_axis - 1]
    rest_dims = [st.dims[ax - 2] for ax in rest]
    perm = [0, 1, seq_ax] + rest
    moved = b.transpose(ctx.unfold(folded, name, current), perm, "reprobe_t")  # (N, P, L, *rest)
    ref = b.transpose(ctx.ref_broadcast(name), perm, "reprobe_ref")  # (N, 1, L, *rest)
    stacked = b.op("Concat", [moved, ref], "reprobe_cat", axis=1)  # slot P holds the reference
    flat = b.reshape(stacked, [0, (current + 1) * length, *rest_dims], "reprobe_flat")
    table = np.repeat((current * length + np.arange(length))[None, :], target, axis=0)
    table[mutants % target, positions] = (mutants % current) * length + positions
    gathered = b.gather(flat, table, axis=1, hint="reprobe_g")  # (N, P', L, *rest)
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
    ``substitute`` replaces inputs by position (a Conv's folded weight)."""
    node = np_.node
    inputs = probe_inputs(ctx, np_)
    for index, name in (substitute or {}).items():
        inputs[index] = name
    out = ctx.b.fresh(f"probe_{node.op_type.lower()}")
    ctx.b.clone(node, inputs, [out], "probe")
    ctx.probe[(node.output[0], np_.probes)] = out
