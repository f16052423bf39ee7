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

- *taps*: a Conv with few output channels (a profile head) as ``k/g`` block Convs of ``g`` taps
  plus a shifted sum (:func:`tap_block`), whose intermediates are ``g x C_in`` (the block Conv's
  im2col) and ``k/g x C_out`` per position instead of im2col's ``k x C_in``;
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
from ..ops import Window1D, attr, prod, transposed_window_1d, window_1d
from ..plan import NodePlan, SeqState, TileWindow
from ..sensing import circulant_matrix
from .base import Decline, Rule, probe_flops
from .common import shape_text

if TYPE_CHECKING:
    from ..analyze import Analysis
    from ..tile_geometry import TileGeometry

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
    """A Conv with few output channels is faster as taps in blocks plus a shifted sum
    (:func:`_conv_as_taps`): its intermediates are g*C_in and k/g*C_out per position instead of
    im2col's k*C_in."""
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
    convolve, decode. Tiled plans: the node unpadded on each tile's extended window."""
    node = np_.node
    if ctx.tiling is not None:
        _window_on_tiles(ctx, np_)
    elif np_.sensing == "gaussian":
        _gaussian_conv(ctx, np_)
    elif np_.conv_impl == "taps":
        x, out = node.input[0], node.output[0]
        l_in, l_out = ctx.seq(x).dims[-1], ctx.seq(out).dims[-1]
        win = window_1d(node, l_in, l_out, int(ctx.plan.infos[node.input[1]].shape[2]))
        ctx.probe[(out, np_.probes)] = (_taps_before_widening(ctx, np_, l_in, l_out, win)
                                        or _conv_as_taps(ctx, node, probe_inputs(ctx, np_)[0], l_in, l_out, win))
    elif np_.identity_tap is not None:  # a residual Add folds into this Conv: W' instead of W
        from .residual import folded_weight
        clone_on_probes(ctx, np_, {1: folded_weight(ctx, np_)})
    else:
        clone_on_probes(ctx, np_)


#: Attributes that say how a window op pads; the tiled form pads explicitly and drops them.
_PADDING_ATTRIBUTES = ("pads", "auto_pad", "ceil_mode")


def _window_on_tiles(ctx: EmitContext, np_: NodePlan) -> None:
    """The window op on each tile: its output window reads the tile's probes inside the input
    window, the reference (the halo) outside it, and the op's padding value out of range.

    Pools build that extended input and run unpadded. A Conv is linear, so it is split
    instead: ``conv(E) = conv(probes, zero-padded) + conv(halo, no bias)``; the first needs no
    copy of the probes (the Conv pads them itself), the second runs once per tile, not per
    probe, and one broadcast Add joins them.
    """
    from ..emit.tiles import extend

    node = np_.node
    x, out = node.input[0], node.output[0]
    full_in, full_out = ctx.plan.states[x], ctx.plan.states[out]
    w = node_window(node, full_in.dims[-1], full_out.dims[-1], ctx.plan.infos[node.input[1]].shape
                    if node.op_type == "Conv" else None)
    width = ctx.seq(out).dims[-1]
    first, last = extension(ctx.tiling.windows[x], ctx.tiling.windows[out], width, w)
    if node.op_type == "Conv":
        result = _conv_on_tiles(ctx, np_, w, first, last)
    else:
        pad = float(np.finfo(ctx.dtype).min) if node.op_type == "MaxPool" else 0.0
        extended = extend(ctx, x, reprobe(ctx, x, np_.probes), np_.probes, first, last, pad)
        result = ctx.b.op(node.op_type, [extended, *node.input[1:]], f"tile_{node.op_type.lower()}",
                          **_unpadded_attributes(node))
        if node.op_type == "MaxPool":
            # its out-of-range outputs pooled nothing but the padding, float32's lowest: a
            # BatchNormalization or Conv after it would take that to -inf and then NaN, which the
            # next Conv's zeroing (x * 0) keeps; zeroed here, they stay as finite as the rest
            from ..emit.tiles import zero_out_of_range
            result = zero_out_of_range(ctx, out, result, np_.probes)
    ctx.probe[(out, np_.probes)] = result


def _unpadded_attributes(node: onnx.NodeProto, pads: list[int] | None = None) -> dict:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if a.name not in _PADDING_ATTRIBUTES}
    if pads is not None and any(pads):
        attrs["pads"] = pads
    return attrs


def _conv_on_tiles(ctx: EmitContext, np_: NodePlan, w: Window1D, first: int, last: int) -> str:
    """``conv(probes padded with zeros) + conv(reference halo)`` over the output window."""
    from ..emit.tiles import reference_window, zero_out_of_range
    from .residual import folded_weight

    b, node = ctx.b, np_.node
    x, out = node.input[0], node.output[0]
    p = np_.probes
    st = ctx.seq(x)
    w_in = st.dims[-1]
    weight = node.input[1] if np_.identity_tap is None else folded_weight(ctx, np_)  # W' adds a residual skip
    folded = reprobe(ctx, x, p)
    folded = zero_out_of_range(ctx, x, folded, p)  # out-of-range positions read as zero padding
    lo, hi = max(first, 0), min(last, w_in - 1)
    if lo > 0 or hi < w_in - 1:
        folded = b.op("Slice", [folded, b.ints([lo]), b.ints([hi + 1]), b.ints([len(st.dims)])], "tile_crop")
    before, after = max(-first, 0), max(last - (w_in - 1), 0)
    out_width = ctx.seq(out).dims[-1]
    rank4 = len(st.dims) == 3
    if np_.conv_impl == "taps":
        y = _conv_as_taps(ctx, node, folded, hi - lo + 1, out_width, Window1D(w.kernel, w.stride, w.dilation, before))
    else:
        pads = [0, before, 0, after] if rank4 else [before, after]
        y = b.op("Conv", [folded, weight, *node.input[2:]], "tile_conv", **_unpadded_attributes(node, pads))
    outside = ~((np.arange(first, last + 1) >= 0) & (np.arange(first, last + 1) < w_in))
    if not outside.any():
        return y
    out_dims = ctx.seq(out).dims
    y_ref = _halo_on_edges(ctx, node, weight, w, (first, last), (before, after), out_width)
    if y_ref is None:
        # the halo: the reference where the extended input lies outside the probes' window
        halo_dims = list(st.dims)
        halo_dims[-1] = last - first + 1
        ref = reference_window(ctx, x, first, last, 0.0)  # (N, c, 1, *halo dims), zero out of range
        shape = [1] * (len(halo_dims) + 3)
        shape[-1] = len(outside)
        halo = b.op("Mul", [ref, b.const(outside.astype(np.float64).reshape(shape), "halo_mask")], "halo")
        halo = b.reshape(halo, [-1, *halo_dims], "halo")  # (N*c, *dims)
        y_ref = b.op("Conv", [halo, weight], "halo_conv", **_unpadded_attributes(node))
    joined = b.op("Add", [b.reshape(y, [-1, p, *out_dims], "tile_y"), b.unsqueeze(y_ref, [1], "halo_y")], "tile_conv")
    return b.reshape(joined, [-1, *out_dims], "tile_conv")


def _halo_on_edges(ctx: EmitContext, node: onnx.NodeProto, weight: str, w: Window1D, extended: tuple[int, int],
                   halo: tuple[int, int], out_width: int) -> str | None:
    """``conv(halo)`` over the output window, ``(N*c, C_out, .., out_width)``, from the halo's two
    strips alone; None where the shortcut does not apply (a stride, or strips that meet).
    ``extended`` is the Conv's input range ``first..last`` (relative to the probes' window) and
    ``halo`` the ``(before, after)`` positions of it outside the probes' window.

    With stride 1 output ``o`` reads extended positions ``o + t*d`` (``t < k``), so the left
    halo (``before`` positions) reaches outputs ``[0, before)`` only and the right one (``after``
    positions) outputs ``[out_width - after, out_width)``: each strip convolved with ``(k-1)*d``
    zeros on its inner side gives exactly those outputs, and the outputs between them get 0.
    The full-width halo conv ran over the whole window (mostly zeros): 5% of bpnet-lite's time.
    """
    from ..emit.tiles import reference_window

    b, x = ctx.b, node.input[0]
    first, last = extended
    before, after = halo
    reach = (w.kernel - 1) * w.dilation
    if w.stride != 1 or before + after > out_width:
        return None
    dims = list(ctx.seq(x).dims)
    rank4 = len(dims) == 3
    attrs = _unpadded_attributes(node)
    parts = []
    for lo, hi, pads in ((first, first + before - 1, [0, reach]), (last - after + 1, last, [reach, 0])):
        if lo > hi:
            parts.append(None)
            continue
        dims[-1] = hi - lo + 1
        strip = b.reshape(reference_window(ctx, x, lo, hi, 0.0), [-1, *dims], "halo")  # (N*c, *strip dims)
        conv_pads = [0, pads[0], 0, pads[1]] if rank4 else pads
        parts.append(b.op("Conv", [strip, weight], "halo_conv", **{**attrs, "pads": conv_pads}))
    left, right = parts
    rank = len(dims) + 1
    gap = out_width - before - after
    if left is None or right is None:  # one strip: pad it with zeros to the whole output width
        pads = [0] * (2 * rank)
        pads[rank - 1 if left is None else 2 * rank - 1] = out_width - (after if left is None else before)
        return b.op("Pad", [left if right is None else right, b.ints(pads)], "halo_y")
    if gap:
        pads = [0] * (2 * rank)
        pads[2 * rank - 1] = gap
        left = b.op("Pad", [left, b.ints(pads)], "halo_y")
    return b.op("Concat", [left, right], "halo_y", axis=-1)


def tap_block(kernel: int, c_in: int, c_out: int) -> int:
    """Taps per block ``g`` for :func:`_conv_as_taps`: a divisor of ``k`` (no zero taps, which
    could read non-finite values the original Conv never reads) with ``2g <= k``, minimizing
    a per-position traffic model, ``0.4 * C_in * g`` (the block Conv's im2col) plus
    ``3 * C_out * k / g`` (the block outputs, written, skewed, summed). Measured on a k = 75,
    64 -> 2 channel head over 288 x 1074 positions: g = 1/3/5/15 took 63/50/46/65 ms (the model
    picks 5), ONNX Runtime's own Conv 164 ms."""
    blocks = [g for g in range(1, kernel // 2 + 1) if kernel % g == 0] or [1]
    return min(blocks, key=lambda g: 0.4 * c_in * g + 3 * c_out * kernel / g)


def _conv_as_taps(ctx: EmitContext, node, folded: str, l_in: int, l_out: int, win: Window1D,
                  c_out: int | None = None) -> str:
    """1-D Conv (group 1) as block Convs and a shifted sum: split the ``k`` taps into ``k/g``
    blocks of ``g`` (:func:`tap_block`); ``Z[(o, a), i] = sum_{b<g} W[o, :, a*g + b] . x[:, i + b*d]``
    (one Conv with ``C_out * k/g`` output channels and kernel ``g``; for ``g = 1`` a MatMul)
    then ``out[o, j] = sum_a Z[(o, a), j*s + a*g*d]`` (:func:`_tap_sum`).
    """
    c_out = ctx.seq(node.output[0]).dims[0] if c_out is None else c_out
    shape = _TapShape.of(ctx, node, l_in, l_out, win, c_out)
    return _tap_sum(ctx, node, _tap_blocks(ctx, node, folded, shape), shape)


class _TapShape:
    """Sizes of a Conv as taps in blocks: ``g`` taps per block, ``k/g`` blocks, the padding
    the block Conv's input needs and the length of its output ``Z``."""

    def __init__(self, kernel: int, dilation: int, stride: int, pad_begin: int, g: int, l_in: int, l_out: int,
                 c_out: int):
        self.kernel, self.dilation, self.stride, self.pad_begin, self.g = kernel, dilation, stride, pad_begin, g
        self.l_out, self.c_out = l_out, c_out
        self.blocks = kernel // g
        span = (l_out - 1) * stride + (kernel - 1) * dilation + 1  # padded length actually read
        self.pad_end = max(span - l_in - pad_begin, 0)
        padded = l_in + pad_begin + self.pad_end
        self.length = padded if g == 1 else padded - (g - 1) * dilation  # of Z

    @classmethod
    def of(cls, ctx: EmitContext, node, l_in: int, l_out: int, win: Window1D, c_out: int) -> "_TapShape":
        g = tap_block(win.kernel, int(ctx.plan.infos[node.input[1]].shape[1]), c_out)
        return cls(win.kernel, win.dilation, win.stride, win.pad_begin, g, l_in, l_out, c_out)


def _tap_blocks(ctx: EmitContext, node, folded: str, shape: _TapShape) -> str:
    """``Z``: ``(B, C_out * k/g, length)``, the blocks of taps stored in reverse order (the
    first ``k/g`` rows of :func:`_tap_sum`'s skew)."""
    b = ctx.b
    c_out, blocks, g = shape.c_out, shape.blocks, shape.g
    if g == 1 and (shape.pad_begin or shape.pad_end):
        folded = b.op("Pad", [folded, b.ints([0, 0, shape.pad_begin, 0, 0, shape.pad_end])], "taps_pad")
    # (C_out, C_in, k) -> (C_out, k/g, C_in, g) with the blocks reversed -> (C_out * k/g, C_in, g)
    w = ctx.plan_const(node.input[1])
    if w is not None:  # a constant, which ONNX Runtime may run in its NCHWc layout (emit/conv_layout.py)
        blocked = w.reshape(c_out, -1, blocks, g).transpose(0, 2, 1, 3)[:, ::-1].reshape(c_out * blocks, -1, g)
        weight = b.const(np.ascontiguousarray(blocked), "taps_w", dtype=w.dtype)
    else:
        split = b.transpose(b.reshape(node.input[1], [c_out, -1, blocks, g], "taps_w"), [0, 2, 1, 3], "taps_w")
        reversed_w = b.op("Slice", [split, b.ints([-1]), b.ints([-blocks - 1]), b.ints([1]), b.ints([-1])],
                          "taps_w")
        weight = b.reshape(reversed_w, [c_out * blocks, -1, g], "taps_w")
    if g == 1:
        return b.op("MatMul", [b.reshape(weight, [c_out * shape.kernel, -1], "taps_w"), folded], "taps")
    # the Conv's own zero padding: no padded copy of the input, and a channels-last input
    # reaches the NCHWc Conv without a Transpose (emit/channels_last.py)
    return b.op("Conv", [folded, weight], "taps", dilations=[shape.dilation], pads=[shape.pad_begin, shape.pad_end])


def _tap_sum(ctx: EmitContext, node, z: str, shape: _TapShape) -> str:
    """``out[o, j] = sum_a Z[(o, a), j*s + a*g*d]`` plus the bias, by the skew trick on blocks
    stored in reverse order: ``k/g`` rows of length ``Lz`` read, from offset
    ``(k/g - 1)*g*d``, as rows of length ``Lz - g*d``, so row ``r`` (block ``k/g - 1 - r``)
    moves right by ``(k/g - 1 - r)*g*d`` and one ReduceSum adds the blocks."""
    b = ctx.b
    c_out, blocks, length = shape.c_out, shape.blocks, shape.length
    step = shape.g * shape.dilation
    flat = b.reshape(z, [-1, c_out, blocks * length], "taps_flat")
    offset = (blocks - 1) * step
    skewed = b.op("Slice", [flat, b.ints([offset]), b.ints([offset + blocks * (length - step)]), b.ints([2])],
                  "taps_skew")
    skewed = b.reshape(skewed, [-1, c_out, blocks, length - step], "taps_skew")
    summed = b.op("ReduceSum", [skewed, b.ints([2])], "taps_sum", keepdims=0)  # (B, C_out, length - g*d)
    summed = b.op("Slice", [summed, b.ints([0]), b.ints([(shape.l_out - 1) * shape.stride + 1]), b.ints([2]),
                            b.ints([shape.stride])], "taps_cols")
    if len(node.input) > 2 and node.input[2]:
        summed = b.op("Add", [summed, b.unsqueeze(node.input[2], [1], "taps_bias")], "taps_out")
    return summed


def _taps_before_widening(ctx: EmitContext, np_: NodePlan, l_in: int, l_out: int, win: Window1D) -> str | None:
    """Whole form: the block Conv of :func:`_conv_as_taps` has a short window (``g`` taps), so
    it runs on about as many probes as its input has (``K`` of ``Z``), and only ``Z`` (``C_out
    * k/g`` channels) is reprobed to the output's ``P`` for the wide shifted sum, instead of
    the input (``C_in`` channels) with the block Conv on ``P`` probes (BPNet's k = 75 head:
    159 probes instead of 369). Exact: the shifted sum is a window op over ``Z`` (kernel
    ``k/g``, dilation ``g*d``) whose output support is the output's. None when ``Z`` would need
    as many probes as the output."""
    node, plan = np_.node, ctx.plan
    x, out = node.input[0], node.output[0]
    st_x = ctx.seq(x)
    shape = _TapShape.of(ctx, node, l_in, l_out, win, ctx.seq(out).dims[0])
    z_support = st_x.support.through_window(shape.length, 1, win.pad_begin, shape.dilation, shape.g)
    z_slots = z_support.slots(plan.subs)
    z_probes = max(st_x.probes, z_slots)
    if z_probes >= np_.probes:
        return None
    z_ref = _tap_blocks(ctx, node, x, shape)  # the reference Z, once per sequence
    ctx.local_states[z_ref] = SeqState(z_support, 2, (shape.c_out * shape.blocks, shape.length), z_slots, z_probes)
    ctx.probe[(z_ref, z_probes)] = _tap_blocks(ctx, node, reprobe(ctx, x, z_probes), shape)
    return _tap_sum(ctx, node, reprobe(ctx, z_ref, np_.probes), shape)


def conv_on_mutants(ctx: EmitContext, node: onnx.NodeProto, x: str) -> str | None:
    """A 1-D Conv with few output channels (a profile head) run on a per-mutant input ``x``
    as taps in blocks and a shifted sum (:func:`_conv_as_taps`: the same sums as the Conv,
    without im2col's ``k * C_in`` rows per position; BPNet-9's k=75 head on 3000 mutants as
    per-tap MatMuls, 2.1 -> 0.5 s, before blocks); None
    where :func:`taps_pay_off` says a plain Conv is as good or the shapes are not static."""
    if node.op_type != "Conv":
        return None
    shapes = [ctx.plan.infos[n].shape if n in ctx.plan.infos else None for n in (node.input[0], node.input[1],
                                                                               node.output[0])]
    if any(s is None or len(s) != 3 or None in s[1:] for s in shapes):
        return None
    (_, c_in, l_in), (_, _, k), (_, c_out, l_out) = shapes
    win = window_1d(node, int(l_in), int(l_out), int(k))
    if not taps_pay_off(node, int(c_in), int(c_out), win):
        return None
    return _conv_as_taps(ctx, node, x, int(l_in), int(l_out), win, c_out=int(c_out))


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


# ----------------------------------------------------------------------------- tiles


def node_window(node: onnx.NodeProto, in_length: int, out_length: int, weight_shape) -> Window1D:
    """The 1-D window of a Conv or pool along its last axis."""
    kernel = list(weight_shape[2:]) if node.op_type in ("Conv", "ConvTranspose") else attr(node, "kernel_shape")
    return window_1d(node, in_length, out_length, int(kernel[-1]))


def tile_window(t: "TileGeometry", np_: NodePlan) -> Decline | None:
    """Tiled form: the output window is the hull of output positions whose window meets the
    input's reached positions; the op then runs unpadded on its input window extended to the
    positions that hull reads (halo from the reference, padding values out of range)."""
    node = np_.node
    x, out = node.input[0], node.output[0]
    if node.op_type == "ConvTranspose":
        return decline("ConvTranspose has no tiled form yet")
    if node.op_type == "AveragePool" and not attr(node, "count_include_pad", 0) and (
            any(attr(node, "pads") or []) or attr(node, "ceil_mode", 0)
            or (attr(node, "auto_pad", b"NOTSET") or b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID")):
        return decline("an AveragePool whose windows may reach past the input (padding, ceil_mode) and that "
                       "leaves the padding out of its mean is not a plain window over padding values")
    if np_.conv_impl == "taps" and attr(node, "group", 1) != 1:
        return decline("grouped per-tap convs have no tiled form")
    st, win = t.states[x], t.windows[x]
    full_in, full_out = t.full(x), t.full(out)
    w = node_window(node, full_in.dims[-1], full_out.dims[-1], t.analysis.shape(node.input[1])
                    if node.op_type == "Conv" else None)
    if win.shift % w.stride:
        return decline(f"tiles move by {win.shift} positions at its input, not a multiple of its stride {w.stride} "
                       "(choose a tile width that is a multiple of the model's total stride)")
    reached = np.nonzero(st.support.widths)[0]
    span = (w.kernel - 1) * w.dilation
    first = win.start + int(reached[0]) + w.pad_begin - span
    last = win.start + int(reached[-1]) + w.pad_begin
    start = -(-first // w.stride)
    width = last // w.stride - start + 1
    support = st.support.through_window(width, w.stride, w.pad_begin + win.start - start * w.stride, w.dilation,
                                        w.kernel)
    t.record(out, support, TileWindow(start, win.shift // w.stride, full_out.dims[-1]))
    return None


def extension(t_in: TileWindow, t_out: TileWindow, out_width: int, w: Window1D) -> tuple[int, int]:
    """Input-window range ``(first, last)`` (inclusive, relative to the input window) that the
    unpadded op must read to produce the output window."""
    first = t_out.start * w.stride - w.pad_begin - t_in.start
    last = (t_out.start + out_width - 1) * w.stride - w.pad_begin + (w.kernel - 1) * w.dilation - t_in.start
    return first, last


WINDOW = Rule("window", "probe window", "probe", window_flops, emit_window, widens=True, tile=tile_window)
RULES = (WINDOW,)
CHECKS = {op: check_window for op in OPS}
