"""Probe tensors: encoding the input's deltas and changing the number of probes.

A probe tensor ``Z`` of shape ``(N, P, *dims)`` holds, at probe ``p`` and sequence position
``j``, the delta of the unique mutant ``m = p (mod P)`` that reaches ``j`` (zero if none).
"""

from __future__ import annotations

import numpy as np

from .context import EmitContext


def encode_input(ctx: EmitContext) -> str:
    """Probe tensor of the sequence input with ``P = S``: the one-hot deltas of each mutant."""
    plan, b = ctx.plan, ctx.b
    seq = plan.seq
    name, a, s = seq.name, seq.alphabet, plan.subs
    chan_first = seq.layout == "NCL"
    x_b = b.unsqueeze(name, [1], "x_b")  # (N, 1, *dims)
    if plan.substitutions == "all":
        eye = np.eye(a)
        target = b.const(eye[:, :, None] if chan_first else eye[:, None, :], "eye")
    else:
        # slot s of a position whose reference character is r holds character s + (s >= r)
        ref = b.op("ArgMax", [name], "ref_char", axis=seq.channel_axis, keepdims=1)  # (N,1,L)|(N,L,1)
        ref_b = b.unsqueeze(ref, [1], "ref_char_b")
        slot = np.arange(s).reshape(s, 1, 1)
        shifted = b.op("Cast", [b.op("Less", [ref_b, b.const(slot + 1, dtype=np.int64)], "shift")],
                       "shift_i", to=7)
        chars = b.op("Add", [shifted, b.const(slot, dtype=np.int64)], "alt_char")  # (N,S,1,L)|(N,S,L,1)
        letters = np.arange(a).reshape((a, 1) if chan_first else (1, a))
        hit = b.op("Equal", [chars, b.const(letters, dtype=np.int64)], "alt_hit")
        target = b.op("Cast", [hit], "alt_onehot", to=_onnx_float(ctx.dtype))
    delta = b.op("Sub", [target, x_b], "input_delta")  # (N, S, *dims)
    if plan.start > 0 or plan.end < seq.length:
        inside = np.zeros(seq.length)
        inside[plan.start:plan.end] = 1.0
        delta = b.op("Mul", [delta, b.const(inside.reshape(ctx.seq_axis_shape(name)), "region")], "input_delta")
    return delta


def reprobe(ctx: EmitContext, name: str, target: int) -> str:
    """Return the probe tensor of ``name`` with ``target`` probes (emitting a conversion once).

    ``target`` must be at least ``K`` of the tensor. When it is a multiple of the current probe
    count the conversion is a broadcast multiply by a 0/1 mask; otherwise a per-position gather.
    """
    key = (name, target)
    if key in ctx.probe:
        return ctx.probe[key]
    st = ctx.seq(name)
    current = st.probes
    z = ctx.probe[(name, current)]
    if target == current:
        return z
    assert target >= st.slots, (name, target, st.slots)
    mutants, positions = st.support.mutant_position_pairs(ctx.plan.subs)
    if target % current == 0:
        out = _reprobe_by_mask(ctx, name, z, current, target, mutants, positions)
    else:
        out = _reprobe_by_gather(ctx, name, z, current, target, mutants, positions)
    ctx.probe[key] = out
    return out


def _reprobe_by_mask(ctx, name, z, current, target, mutants, positions) -> str:
    b, st = ctx.b, ctx.seq(name)
    ratio = target // current
    length = st.dims[st.seq_axis - 1]
    mask = np.zeros((ratio, current, length))
    mask[(mutants % target) // current, mutants % current, positions] = 1.0
    trailing = len(st.dims) - st.seq_axis
    mask = mask.reshape((ratio, current) + (1,) * (st.seq_axis - 1) + (length,) + (1,) * trailing)
    z_b = b.unsqueeze(z, [1], "reprobe_b")  # (N, 1, P, *dims)
    split = b.op("Mul", [z_b, b.const(mask, "reprobe_mask")], "reprobe")
    return b.reshape(split, ctx.rep_shape(name, target), "reprobe")


def _reprobe_by_gather(ctx, name, z, current, target, mutants, positions) -> str:
    b, st = ctx.b, ctx.seq(name)
    rank = len(st.dims) + 2
    seq_ax = st.seq_axis + 1  # axis in the probe tensor
    rest = [ax for ax in range(2, rank) if ax != seq_ax]
    length = st.dims[st.seq_axis - 1]
    rest_dims = [st.dims[ax - 2] for ax in rest]
    moved = b.transpose(z, [0, seq_ax, 1] + rest, "reprobe_t")  # (N, L, P, *rest)
    padded = b.op("Pad", [moved, b.ints([0, 0, 0] + [0] * len(rest) + [0, 0, 1] + [0] * len(rest))],
                  "reprobe_pad")
    flat = b.reshape(padded, [0, length * (current + 1), *rest_dims], "reprobe_flat")
    table = np.arange(length)[None, :] * (current + 1) + current  # default: the zero slot
    table = np.repeat(table, target, axis=0)
    table[mutants % target, positions] = positions * (current + 1) + mutants % current
    gathered = b.gather(flat, table, axis=1, hint="reprobe_g")  # (N, P', L, *rest)
    back = [0, 1] + [2 if ax == seq_ax else 3 + rest.index(ax) for ax in range(2, rank)]
    return b.transpose(gathered, back, "reprobe")


def _onnx_float(dtype: np.dtype) -> int:
    from onnx import helper
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
