"""Window rules: 1-D Conv, ConvTranspose, MaxPool and AveragePool along the sequence axis.

Delta math. Output position ``j`` of a window op reads input positions
``j*stride - pad_begin + t*dilation`` (``t < kernel``), so a mutant reaches ``j`` iff it reaches
one of them: the output support is the hull of the window's supports (interval arithmetic,
:meth:`yuzu_onnx.support.Support.through_window`). With ``P >= K_out`` probes, mutants sharing
a probe are ``P`` apart and no window sees two of them, so each probe is a hybrid sequence that
equals exactly one mutant (or the reference) inside every window: the original node runs on the
probes unchanged and is exact (structured sensing). Its cost is ``P`` sequences instead of
``M``, and ``P`` depends on the receptive field, not on the length.

Two alternative implementations:

- *taps*: a Conv with few output channels (a profile head) as one MatMul per tap plus a shifted
  sum, whose intermediate is ``k x C_out`` per position instead of im2col's ``k x C_in``;
- *gaussian* sensing (the paper's): the deltas ``F - R`` are mixed by a circulant Gaussian
  design ``Z = A D`` before the conv (linear, no bias), and each output position decodes its
  ``K`` unknowns by least squares, ``D_out[S_j, j] = pinv(A[:, S_j]) conv(Z)[:, j]``. Exact in
  exact arithmetic, approximate in float32 (the predicted error is in the plan).

Also covered: the 2-D form with a unit height (tf2onnx's Conv1D), ``auto_pad``, asymmetric
padding, stride, dilation, groups, and ``ceil_mode`` pools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..emit.context import EmitContext
from ..emit.probes import clone_on_probes, probe_inputs, reprobe
from ..ops import attr, prod, transposed_window_1d, window_1d
from ..plan import NodePlan, SeqState
from ..sensing import circulant_matrix
from .base import Decline, Rule, probe_flops
from .common import shape_text

if TYPE_CHECKING:
    from ..analyze import Analysis

FAMILY = "window"
OPS = ("Conv", "ConvTranspose", "AveragePool", "MaxPool")


def decline(reason: str) -> Decline:
    return Decline(FAMILY, reason)


# ----------------------------------------------------------------------------- check


def check_window(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> NodePlan | Decline:
    """1-D Conv/pool over the last axis; also the 2-D form with a unit height (tf2onnx's
    Conv1D), whose kernel is ``(1, k)``."""
    states = a.plan.states
    x = node.input[0]
    if dep != [x]:
        return decline(f"its weight or bias {', '.join(repr(n) for n in dep if n != x)} depends on the sequence")
    outputs = [o for o in node.output if o]
    if len(outputs) != 1:
        return decline(f"it has {len(outputs)} outputs (MaxPool's indices are not supported)")
    st: SeqState = states[x]
    out_shape = a.shape(node.output[0])
    rank = len(st.dims) + 1
    if out_shape is None or len(out_shape) != rank or any(d is None for d in out_shape[1:]):
        return decline(f"the shape of its output {node.output[0]!r} is not known statically "
                       f"({shape_text(out_shape)})")
    if st.seq_axis != rank - 1 or rank not in (3, 4):
        return decline(f"its input {x!r} {shape_text(st.dims)} does not have the sequence as its last axis "
                       "of a 1-D window (only 1-D windows over the sequence, or 2-D with a unit height, "
                       "are accelerated)")
    if rank == 4 and (st.dims[1] != 1 or out_shape[2] != 1):
        return decline(f"it is a 2-D window over {x!r} {shape_text(st.dims)} whose height is not 1")
    kernel = attr(node, "kernel_shape")
    if node.op_type in ("Conv", "ConvTranspose"):
        w = a.shape(node.input[1])
        if node.input[1] not in a.inits or w is None:
            return decline(f"its weight {node.input[1]!r} is not a constant")
        kernel = list(w[2:])
    if not kernel or len(kernel) != rank - 2 or any(k != 1 for k in kernel[:-1]):
        return decline(f"its kernel {shape_text(kernel)} spans more than the sequence axis")
    if rank == 4 and node.op_type != "Conv" and height_padded(node):
        return decline("it pads the unit height axis")
    if node.op_type == "ConvTranspose":
        win = transposed_window_1d(node, st.dims[-1], out_shape[-1], int(kernel[-1]))
        if win is None:
            return decline("its padding is given only through output_shape")
        support = st.support.through_transposed_window(out_shape[-1], win.stride, win.pad_begin,
                                                       win.dilation, win.kernel)
    else:
        win = window_1d(node, st.dims[-1], out_shape[-1], int(kernel[-1]))
        if ceil_window_dropped(node, st.dims[-1], win):
            return decline("its last ceil_mode window starts past the input: ONNX Runtime's kernel drops it "
                           "but shape inference keeps it, so its output length cannot be told statically")
        support = st.support.through_window(out_shape[-1], win.stride, win.pad_begin, win.dilation, win.kernel)
    states[node.output[0]] = a.seq_state(support, rank - 1, out_shape[1:])
    sensing = a.plan.sensing if node.op_type == "Conv" and rank == 3 else "spike"
    impl = "conv"
    if node.op_type == "ConvTranspose":
        sensing = "spike"
    if node.op_type == "Conv" and sensing == "spike" and rank == 3 and \
            taps_pay_off(node, st.dims[0], out_shape[1], win):
        impl = "taps"
    return NodePlan(node, WINDOW, sensing=sensing, conv_impl=impl, width=support.max_width)


def ceil_window_dropped(node: onnx.NodeProto, length: int, win) -> bool:
    """A ceil_mode pool whose last window would start past the input: ONNX Runtime's kernel
    drops that window, its shape inference (and ONNX's) keeps it."""
    if node.op_type not in ("MaxPool", "AveragePool") or not attr(node, "ceil_mode", 0):
        return False
    pads = attr(node, "pads") or [0, 0]
    padded = length + int(pads[len(pads) // 2 - 1]) + int(pads[-1])
    span = (win.kernel - 1) * win.dilation + 1
    inferred = -(-(padded - span) // win.stride) + 1
    return (inferred - 1) * win.stride >= length + win.pad_begin


def height_padded(node: onnx.NodeProto) -> bool:
    pads = attr(node, "pads") or [0, 0, 0, 0]
    return bool(pads[0] or pads[2])


def taps_pay_off(node: onnx.NodeProto, c_in: int, c_out: int, win) -> bool:
    """A Conv with few output channels is faster as one MatMul per tap plus a shifted sum:
    its intermediate is k*C_out per position instead of im2col's k*C_in."""
    return attr(node, "group", 1) == 1 and win.kernel > 1 and 3 * c_out < c_in


# ----------------------------------------------------------------------------- FLOPs


def window_flops(a: "Analysis", np_: NodePlan, per_sequence: int) -> tuple[int, int]:
    """Probe work of the window (see :func:`~yuzu_onnx.rules.base.probe_flops`); gaussian
    sensing adds mixing the input (``P x P`` per input element) and decoding (``P x K`` per
    output element)."""
    converted, floor = probe_flops(a, np_, per_sequence)  # pools: no multiply-accumulates, 0
    if np_.sensing == "gaussian":
        out = a.plan.states[np_.node.output[0]]
        cin = a.plan.states[np_.node.input[0]].dims
        converted += 2 * out.probes ** 2 * prod(cin) + 2 * out.probes * out.slots * prod(out.dims)
    return converted, floor


# ----------------------------------------------------------------------------- emit


def emit_window(ctx: EmitContext, np_: NodePlan) -> None:
    """Structured: the original node on the probes (or its per-tap form); gaussian: mix,
    convolve, decode."""
    node = np_.node
    if np_.sensing == "gaussian":
        _gaussian_conv(ctx, np_)
    elif np_.conv_impl == "taps":
        ctx.probe[(node.output[0], np_.probes)] = _conv_as_taps(ctx, node, probe_inputs(ctx, np_)[0])
    else:
        clone_on_probes(ctx, np_)


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
    w_shape = ctx.plan.infos[node.input[1]].shape
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


WINDOW = Rule("window", "probe window", "probe", window_flops, emit_window, widens=True)
RULES = (WINDOW,)
CHECKS = {op: check_window for op in OPS}
