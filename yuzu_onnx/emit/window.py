"""Rules for 1-D Conv and pooling on probe tensors.

With ``P >= K_out`` probes, every input position inside one output window holds the same
mutant in probe ``p`` (or zero), so the original op applied to the probes computes each
mutant's windowed result exactly:

- linear ops (Conv without bias, AveragePool): ``D_out = op(Z)``;
- MaxPool: ``D_out = maxpool(R + Z) - maxpool(R)``.

The ``gaussian`` sensing mode instead mixes probes with a circulant Gaussian design before the
conv and decodes by least squares afterwards (approximate in floating point, as in the paper).
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from ..analyze import NodePlan
from ..sensing import circulant_matrix, circulant_vector, decoder
from .context import EmitContext
from .probes import reprobe


def emit_window(ctx: EmitContext, np_: NodePlan) -> None:
    node = np_.node
    x, out = node.input[0], node.output[0]
    p = np_.probes
    z = reprobe(ctx, x, p)
    if np_.sensing == "gaussian":
        ctx.probe[(out, p)] = _gaussian_conv(ctx, np_, z)
        return
    if node.op_type == "MaxPool":
        z = ctx.b.op("Add", [ctx.ref_broadcast(x), z], "mutant")
    y = _apply_folded(ctx, node, z, x, out, p)
    if node.op_type == "MaxPool":
        y = ctx.b.op("Sub", [y, ctx.ref_broadcast(out)], "delta")
    ctx.probe[(out, p)] = y


def _apply_folded(ctx: EmitContext, node, z: str, x: str, out: str, p: int) -> str:
    """Run the original op (without bias) on probes folded into the batch axis."""
    b = ctx.b
    folded = b.reshape(z, ctx.folded_shape(x), "fold")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    inputs = list(node.input[:2]) if node.op_type == "Conv" else [folded]
    if node.op_type == "Conv":
        inputs[0] = folded
    y = b.op(node.op_type, inputs, node.op_type.lower(), **attrs)
    return b.reshape(y, ctx.rep_shape(out, p), "unfold")


def _gaussian_conv(ctx: EmitContext, np_: NodePlan, z: str) -> str:
    b, plan = ctx.b, ctx.plan
    node = np_.node
    x, out = node.input[0], node.output[0]
    p = np_.probes
    st_out = ctx.seq(out)
    k = max(st_out.slots, 1)
    a = circulant_vector(p, plan.seed, plan.nodes.index(np_))
    c_in, l_in = ctx.seq(x).dims
    c_out, l_out = st_out.dims
    # Mix the per-mutant probes into Gaussian probes: G = C_a @ Z over the probe axis.
    flat = b.reshape(z, [0, p, c_in * l_in], "gauss_flat")
    mixed = b.op("MatMul", [b.const(circulant_matrix(a), "gauss_design"), flat], "gauss_mix")
    y = _apply_folded(ctx, node, b.reshape(mixed, ctx.rep_shape(x, p), "gauss_mixed"), x, out, p)
    # Decode per position: rotate probes to the position's first mutant, least squares, place.
    pinv, _ = decoder(a, k)
    first = st_out.support.first_mutant(plan.subs)
    valid = st_out.support.widths * plan.subs
    pos = np.arange(l_out)
    moved = b.transpose(y, [0, 3, 1, 2], "gauss_t")  # (N, L, P, C)
    rows = b.reshape(moved, [0, l_out * p, c_out], "gauss_rows")
    rot = pos[:, None] * p + (np.arange(p)[None, :] + first[:, None]) % p
    rotated = b.gather(rows, rot, axis=1, hint="gauss_rot")  # (N, L, P, C)
    solved = b.op("MatMul", [b.const(pinv, "gauss_pinv"), rotated], "gauss_solve")  # (N, L, K, C)
    padded = b.op("Pad", [solved, b.ints([0, 0, 0, 0, 0, 0, 1, 0])], "gauss_pad")
    slots = b.reshape(padded, [0, l_out * (k + 1), c_out], "gauss_slots")
    offset = (np.arange(p)[:, None] - first[None, :]) % p  # (P, L): slot k of probe q at j
    place = np.where(offset < valid[None, :], offset, k) + pos[None, :] * (k + 1)
    placed = b.gather(slots, place, axis=1, hint="gauss_place")  # (N, P, L, C)
    return b.transpose(placed, [0, 1, 3, 2], "gauss_delta")
