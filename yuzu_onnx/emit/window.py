"""Local ops on probe tensors: elementwise ops, 1-D Conv and pooling.

In probe form every probe is a valid "hybrid" sequence: within the window of any output
position it equals exactly one mutant (or the reference), provided ``P >= K`` of the output.
So the original node runs on the probes unchanged (``structured`` sensing, exact).

The ``gaussian`` mode instead mixes the deltas ``F - R`` with a circulant Gaussian design
before the conv and decodes by least squares after it (the paper's method; approximate in
floating point).
"""

from __future__ import annotations

import numpy as np
import onnx

from ..analyze import NodePlan
from ..ops import window_1d
from ..sensing import circulant_matrix
from .context import EmitContext
from .probes import reprobe


def emit_on_probes(ctx: EmitContext, np_: NodePlan) -> None:
    """Run the original node on probe-form inputs (all reprobed to the node's ``P``)."""
    node = np_.node
    if np_.sensing == "gaussian":
        _gaussian_conv(ctx, np_)
        return
    inputs = [reprobe(ctx, name, np_.probes) if ctx.is_seq(name)
              else ctx.repeat_side(name, np_.probes) if name in ctx.plan.side else name for name in node.input]
    if np_.conv_impl == "taps":
        ctx.probe[(node.output[0], np_.probes)] = _conv_as_taps(ctx, node, inputs[0])
        return
    out = ctx.b.fresh(f"probe_{node.op_type.lower()}")
    ctx.b.clone(node, inputs, [out], "probe")
    ctx.probe[(node.output[0], np_.probes)] = out


def _conv_as_taps(ctx: EmitContext, node, folded: str) -> str:
    """1-D Conv (group 1) as ``Y = W_taps @ x_padded`` then ``out[o, j] = sum_t Y[o, t, j*s + t*d]``.

    The shifted sum uses the skew trick on taps stored in reverse order: ``k`` rows of length
    ``Lp`` read, from offset ``(k-1)*d``, as rows of length ``Lp - d``, so row ``t`` (tap
    ``k-1-t``) moves right by ``(k-1-t)*d`` and one ReduceSum adds the taps.
    """
    b = ctx.b
    x, out = node.input[0], node.output[0]
    c_out, l_out = ctx.seq(out).dims
    l_in = ctx.seq(x).dims[1]
    w_shape = next(t.dims for t in ctx.plan.model.graph.initializer if t.name == node.input[1])
    k = int(w_shape[2])
    win = window_1d(node, l_in, l_out, k)
    d = win.dilation
    span = (l_out - 1) * win.stride + (k - 1) * d + 1  # padded length actually read
    pad_end = max(span - l_in - win.pad_begin, 0)
    if win.pad_begin or pad_end:
        folded = b.op("Pad", [folded, b.ints([0, 0, win.pad_begin, 0, 0, pad_end])], "taps_pad")
    padded = l_in + win.pad_begin + pad_end
    reversed_w = b.op("Slice", [node.input[1], b.ints([-1]), b.ints([-k - 1]), b.ints([2]), b.ints([-1])], "taps_w")
    taps = b.reshape(b.transpose(reversed_w, [0, 2, 1], "taps_w"), [c_out * k, -1], "taps_w")
    y = b.op("MatMul", [taps, folded], "taps")  # (B, C_out*k, Lp), row o*k + (k-1-t)
    flat = b.reshape(y, [-1, c_out, k * padded], "taps_flat")
    offset = (k - 1) * d
    skewed = b.op("Slice", [flat, b.ints([offset]), b.ints([offset + k * (padded - d)]), b.ints([2])], "taps_skew")
    skewed = b.reshape(skewed, [-1, c_out, k, padded - d], "taps_skew")
    summed = b.op("ReduceSum", [skewed, b.ints([2])], "taps_sum", keepdims=0)  # (B, C_out, Lp - d)
    summed = b.op("Slice", [summed, b.ints([0]), b.ints([(l_out - 1) * win.stride + 1]), b.ints([2]),
                            b.ints([win.stride])], "taps_cols")
    if len(node.input) > 2 and node.input[2]:
        summed = b.op("Add", [summed, b.unsqueeze(node.input[2], [1], "taps_bias")], "taps_out")
    return summed


def _gaussian_conv(ctx: EmitContext, np_: NodePlan) -> None:
    b, plan = ctx.b, ctx.plan
    node = np_.node
    x, out = node.input[0], node.output[0]
    p = np_.probes
    st_out = ctx.seq(out)
    k = max(st_out.slots, 1)
    a = np_.design.vector  # sized (and its decoder computed) by the analyze pass
    c_in, l_in = ctx.seq(x).dims
    c_out, l_out = st_out.dims
    # Deltas of the input, mixed into Gaussian probes: G = C_a @ (F - R) over the probe axis.
    delta = b.op("Sub", [ctx.unfold(reprobe(ctx, x, p), x, p), ctx.ref_broadcast(x)], "gauss_delta_in")
    flat = b.reshape(delta, [0, p, c_in * l_in], "gauss_flat")
    mixed = b.op("MatMul", [b.const(circulant_matrix(a), "gauss_design"), flat], "gauss_mix")
    conv = b.op("Conv", [ctx.fold(mixed, x), node.input[1]], "gauss_conv",
                **{at.name: onnx.helper.get_attribute_value(at) for at in node.attribute})
    y = ctx.unfold(conv, out, p)  # (N, P, C, L)
    # Decode per position: rotate probes to the position's first mutant, least squares, place.
    pinv = np_.design.pinv
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
    offset = (np.arange(p)[:, None] - first[None, :]) % p  # (P, L): slot of probe q at j
    place = np.where(offset < valid[None, :], offset, k) + pos[None, :] * (k + 1)
    placed = b.gather(slots, place, axis=1, hint="gauss_place")  # (N, P, L, C)
    delta_out = b.transpose(placed, [0, 1, 3, 2], "gauss_delta")
    full = b.op("Add", [delta_out, ctx.ref_broadcast(out)], "gauss_full")
    ctx.probe[(out, p)] = ctx.fold(full, out)
