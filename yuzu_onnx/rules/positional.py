"""Positional rules: ops that move, select or concatenate positions and axes without mixing
them (Transpose, Squeeze, Unsqueeze, Slice, Pad, Concat, and Reshape/Flatten that keep the
sequence axis and only regroup the axes before and after it: unit axes, channel splits).

Delta math. Output position ``j`` copies one input position ``source[j]`` (or a constant), so
a mutant changes ``j`` iff it changes ``source[j]``: the support is re-indexed,
``lo_out[j] = lo_in[source[j]]``, and the op is exact on probes (each probe is a hybrid
sequence; copying positions keeps it one). Concat along the sequence axis concatenates the
supports; along channels it takes their union. A Concat may also take tensors that do not
depend on the sequence (a side input such as BPNet's control tracks, a reference tensor, a
constant with a batch of 1): they are the same for every mutant, so they are repeated over the
probes (in a tiled plan cut to each tile's window, :func:`reference_on_probes`), and along the
sequence axis their positions are reached by no mutation. The sequence axis is tracked through
axis moves, so channels-last (NLC) models stay accelerated.

Each layout function maps the logical shape and sequence axis of its input(s) to the output's,
or returns a reason string when the op touches the batch axis (or anything this module does not
understand).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import onnx

from ..emit.probes import clone_on_probes
from ..ops import attr, prod
from ..plan import NodePlan, SeqState, TileWindow
from ..support import Support
from ..tile_geometry import aligned, union_in
from .base import Decline, Rule, no_flops
from .common import shape_text

if TYPE_CHECKING:
    from ..analyze import Analysis
    from ..emit.context import EmitContext
    from ..tile_geometry import TileGeometry

FAMILY = "positional"



def decline(reason: str) -> Decline:
    return Decline(FAMILY, reason)


@dataclass(frozen=True)
class Layout:
    """Logical shape without the batch axis, and the sequence axis (counting the batch as 0)."""

    dims: tuple[int, ...]
    seq_axis: int


ConstLookup = Callable[[str], "np.ndarray | None"]
#: A layout function's answer: the new layout and, where positions move, the input position
#: each output position copies (``-1``: a constant); or why the op cannot be followed.
LayoutResult = "tuple[Layout, np.ndarray | None] | str"


def _norm(axes, rank: int) -> list[int] | None:
    out = [int(a) + rank if int(a) < 0 else int(a) for a in axes]
    return None if any(a <= 0 or a >= rank for a in out) else out


def _int_input(node: onnx.NodeProto, index: int, const: ConstLookup, attr_name: str | None = None):
    if len(node.input) > index and node.input[index]:
        value = const(node.input[index])
        return None if value is None else [int(v) for v in np.asarray(value).ravel()]
    return attr(node, attr_name) if attr_name else None


def transpose(node, lay: Layout, const: ConstLookup) -> LayoutResult:
    rank = len(lay.dims) + 1
    perm = attr(node, "perm") or list(reversed(range(rank)))
    if perm[0] != 0:
        return f"its permutation {list(perm)} moves the batch axis"
    dims = tuple(lay.dims[p - 1] for p in perm[1:])
    return Layout(dims, list(perm).index(lay.seq_axis)), None


def unsqueeze(node, lay: Layout, const: ConstLookup) -> LayoutResult:
    axes = _int_input(node, 1, const, "axes")
    if axes is None:
        return "its axes are not constant"
    rank_out = len(lay.dims) + 1 + len(axes)
    axes = _norm(axes, rank_out)
    if axes is None:
        return "it inserts an axis before the batch axis"
    dims, src, seq = [], 0, None
    for ax in range(1, rank_out):
        if ax in axes:
            dims.append(1)
        else:
            dims.append(lay.dims[src])
            src += 1
            if src == lay.seq_axis:
                seq = ax
    return Layout(tuple(dims), seq), None


def squeeze(node, lay: Layout, const: ConstLookup) -> LayoutResult:
    axes = _int_input(node, 1, const, "axes")
    rank = len(lay.dims) + 1
    if axes is None:
        return "it squeezes without explicit axes (the batch axis could be dropped)"
    axes = _norm(axes, rank)
    if axes is None:
        return "it squeezes the batch axis"
    if lay.seq_axis in axes:
        return "it squeezes the sequence axis"
    if any(lay.dims[a - 1] != 1 for a in axes):
        return f"it squeezes axes {axes} of {shape_text(lay.dims)} that are not 1"
    keep = [ax for ax in range(1, rank) if ax not in axes]
    return Layout(tuple(lay.dims[a - 1] for a in keep), keep.index(lay.seq_axis) + 1), None


def slice_positions(node, lay: Layout, const: ConstLookup) -> LayoutResult:
    """Layout after a Slice and, when it slices the sequence axis, the kept input positions."""
    starts, ends = _int_input(node, 1, const), _int_input(node, 2, const)
    rank = len(lay.dims) + 1
    axes = _int_input(node, 3, const) if len(node.input) > 3 and node.input[3] else list(range(len(starts or [])))
    steps = _int_input(node, 4, const) if len(node.input) > 4 and node.input[4] else [1] * len(axes or [])
    if starts is None or ends is None or axes is None or steps is None:
        return "its starts, ends, axes or steps are not constant"
    axes = _norm(axes, rank)
    if axes is None:
        return "it slices the batch axis"
    dims = list(lay.dims)
    kept = None
    for start, end, ax, step in zip(starts, ends, axes, steps):
        idx = np.arange(dims[ax - 1])[slice(start, end, step)]
        dims[ax - 1] = len(idx)
        if ax == lay.seq_axis:
            kept = idx
    return Layout(tuple(dims), lay.seq_axis), kept


def pad_positions(node, lay: Layout, const: ConstLookup) -> LayoutResult:
    """Layout after a Pad and the input position each output position copies (-1: constant)."""
    pads = _int_input(node, 1, const, "pads")
    mode = attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    rank = len(lay.dims) + 1
    if pads is None:
        return "its pads are not constant"
    if mode not in ("constant", "edge", "reflect"):
        return f"its mode {mode!r} is not constant, edge or reflect"
    axes = _int_input(node, 3, const) if len(node.input) > 3 and node.input[3] else list(range(rank))
    axes = [a + rank if a < 0 else a for a in axes]
    n = len(axes)
    dims = list(lay.dims)
    source = None
    for i, ax in enumerate(axes):
        before, after = pads[i], pads[i + n]
        if ax == 0:
            if before or after:
                return "it pads the batch axis"
            continue
        length = dims[ax - 1]
        out = np.arange(-before, length + after)
        if ax == lay.seq_axis:
            if mode == "constant":
                source = np.where((out >= 0) & (out < length), out, -1)
            elif mode == "edge":
                source = np.clip(out, 0, length - 1)
            else:
                period = 2 * (length - 1) if length > 1 else 1
                folded = np.abs(out) % period
                source = np.where(folded >= length, period - folded, folded)
        dims[ax - 1] = len(out)
    return Layout(tuple(dims), lay.seq_axis), source


def concat(node, layouts: list[Layout]) -> Layout | str:
    """Layout after concatenating sequence tensors (all inputs must be sequence-dependent)."""
    first = layouts[0]
    rank = len(first.dims) + 1
    axis = _norm([attr(node, "axis", 1)], rank)
    if axis is None:
        return "it concatenates along the batch axis"
    if any(lay.seq_axis != first.seq_axis for lay in layouts):
        return "its inputs have their sequence on different axes"
    axis = axis[0]
    dims = list(first.dims)
    dims[axis - 1] = sum(lay.dims[axis - 1] for lay in layouts)
    return Layout(tuple(dims), first.seq_axis)


def reindex(support: Support, source: np.ndarray | None) -> Support:
    """Support of a tensor whose position ``j`` copies input position ``source[j]`` (-1: none)."""
    if source is None:
        return support
    empty = Support.for_input(1, 0, 0)
    lo = np.where(source >= 0, support.lo[np.clip(source, 0, None)], empty.lo[0])
    hi = np.where(source >= 0, support.hi[np.clip(source, 0, None)], empty.hi[0])
    return Support(lo, hi)


def concat_supports(supports: list[Support]) -> Support:
    return Support(np.concatenate([s.lo for s in supports]), np.concatenate([s.hi for s in supports]))


_SINGLE_INPUT = {"Transpose": transpose, "Unsqueeze": unsqueeze, "Squeeze": squeeze,
                 "Slice": slice_positions, "Pad": pad_positions}


# ----------------------------------------------------------------------------- checks


def check_positional(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> NodePlan | Decline:
    """Transpose/Squeeze/Unsqueeze/Slice/Pad/Concat: re-index positions and axes."""
    states = a.plan.states
    op = node.op_type
    outputs = [o for o in node.output if o]
    if len(outputs) != 1:
        return decline(f"it has {len(outputs)} outputs")
    ins: list[SeqState] = [states[n] for n in dep]
    layouts = [Layout(st.dims, st.seq_axis) for st in ins]
    if op == "Concat":
        result = _concat_with_references(a, node, dep)
        if isinstance(result, str):
            return decline(result)
        lay, support = result
    else:
        if dep != [node.input[0]]:
            return decline(f"its parameter input {next(n for n in dep if n != node.input[0])!r} depends on "
                           "the sequence")
        computed = [n for n in node.input[1:] if n and n not in a.inits]
        if computed:
            return decline(f"its parameter input {computed[0]!r} is not a constant")
        result = _SINGLE_INPUT[op](node, layouts[0], a.const)
        if isinstance(result, str):
            return decline(result)
        lay, source = result
        support = reindex(ins[0].support, source)
    out_shape = a.shape(node.output[0])
    if out_shape is not None and list(out_shape[1:]) != list(lay.dims):
        return decline(f"its output should be {shape_text(lay.dims)} by this rule's reading of the op, but "
                       f"shape inference says {shape_text(out_shape[1:])}")
    states[node.output[0]] = a.seq_state(support, lay.seq_axis, lay.dims)
    return NodePlan(node, POSITIONAL, width=support.max_width)


def _concat_with_references(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> tuple[Layout, Support] | str:
    """Layout and support of a Concat of sequence tensors and sequence-independent tensors
    (constants, side inputs, reference tensors: the same for every mutant, so repeated over
    the probes). Along channels the support is the union of the sequence tensors'; along the
    length the sequence-independent parts are positions no mutation reaches."""
    states = a.plan.states
    ins: list[SeqState] = [states[n] for n in dep]
    lay = concat(node, [Layout(st.dims, st.seq_axis) for st in ins])
    if isinstance(lay, str):
        return lay
    rank = len(lay.dims) + 1
    axis = attr(node, "axis", 1) % rank
    parts = []
    for name in node.input:
        if name in dep:
            parts.append(states[name].support)
            continue
        shape = a.shape(name)
        if shape is None or len(shape) != rank or None in shape[1:]:
            return (f"the shape of its sequence-independent input {name!r} is not known statically with the "
                    f"rank {rank} ({shape_text(shape)})")
        if name not in a.plan.side and shape[0] != 1:
            return (f"its sequence-independent input {name!r} {shape_text(shape)} has a batch axis of "
                    f"{shape[0]}, neither 1 nor the batch")
        parts.append(Support.for_input(int(shape[lay.seq_axis]), 0, 0))  # no mutation reaches it
    out_shape = a.shape(node.output[0])
    if out_shape is None or None in out_shape[1:]:
        return f"the shape of its output {node.output[0]!r} is not known statically ({shape_text(out_shape)})"
    lay = Layout(tuple(int(d) for d in out_shape[1:]), lay.seq_axis)
    if axis == lay.seq_axis:
        return lay, concat_supports(parts)
    support = ins[0].support
    for st in ins[1:]:
        support = support.union(st.support)
    return lay, support


def check_unit_reshape(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> NodePlan | Decline:
    """A Reshape or Flatten that keeps the batch and the sequence axis and only regroups the
    axes before it and the axes after it (adding or dropping unit axes, splitting or merging
    channel axes): each position's values stay at that position, so the sequence axis moves
    and the support is unchanged."""
    x = node.input[0]
    st: SeqState = a.plan.states[x]
    out_shape = a.shape(node.output[0])
    if dep != [x]:
        return decline("its target shape depends on the sequence")
    if out_shape is None or None in out_shape[1:]:
        return decline(f"the shape of its output {node.output[0]!r} is not known statically "
                       f"({shape_text(out_shape)})")
    seq_axis = unit_axes_reshape(st, out_shape[1:])
    if seq_axis is None:
        return decline(f"it reshapes {shape_text(st.dims)} into {shape_text(out_shape[1:])}, which does more "
                       "than regroup the axes before and after the sequence axis")
    a.plan.states[node.output[0]] = a.seq_state(st.support, seq_axis, out_shape[1:])
    return NodePlan(node, POSITIONAL, width=st.support.max_width)


def unit_axes_reshape(st: SeqState, out_dims) -> int | None:
    """Sequence axis after a reshape that keeps the sequence axis and regroups the axes on
    either side of it (the products before and after it are unchanged, row-major order keeps
    every position's values together), else None (also when that axis is ambiguous)."""
    length = st.dims[st.seq_axis - 1]
    if length == 1:
        return None
    before, after = prod(st.dims[:st.seq_axis - 1]), prod(st.dims[st.seq_axis:])
    out_dims = [int(d) for d in out_dims]
    found = [k for k, d in enumerate(out_dims)
             if d == length and prod(out_dims[:k]) == before and prod(out_dims[k + 1:]) == after]
    return found[0] + 1 if len(found) == 1 else None


# ----------------------------------------------------------------------------- tiles


def seq_source(node: onnx.NodeProto, a, x: str) -> np.ndarray | None:
    """For a Slice or Pad, the input position each output position copies along the sequence
    axis (-1: padding), or None when the op leaves the sequence axis alone."""
    st = a.plan.states[x]
    handler = {"Slice": slice_positions, "Pad": pad_positions}[node.op_type]
    return handler(node, Layout(st.dims, st.seq_axis), a.const)[1]


def tile_positional(t: "TileGeometry", np_: NodePlan) -> Decline | None:
    """Tiled form. Axis moves and regrouping reshapes keep the window. A crop (Slice with step
    1) and a constant Pad only renumber positions, so the window moves and nothing is copied
    (a Pad also sets the positions that become its padding). Concat along channels takes the
    hull window of its sequence inputs (its other operands are cut to it when emitted); along
    the length it would need two windows and is not tiled."""
    node = np_.node
    out = node.output[0]
    op = node.op_type
    if op == "Concat":
        full = t.full(out)
        if attr(node, "axis", 1) % (len(full.dims) + 1) == full.seq_axis:
            return decline("it concatenates along the sequence axis (two windows per tile)")
        seqs = [n for n in node.input if n in t.states]  # other operands are cut to the window when emitted
        hull = aligned(t, seqs)
        if isinstance(hull, str):
            return decline(hull)
        window, width = hull
        t.record(out, union_in(t, seqs, window, width), window)
        return None
    x = node.input[0]
    st, win = t.states[x], t.windows[x]
    start = win.start
    if op in ("Slice", "Pad"):
        source = seq_source(node, t.analysis, x)
        if source is not None:
            steps = np.diff(source[source >= 0])
            if len(steps) and not (steps == 1).all():
                return decline("it does not copy positions in order one by one (a strided slice or a "
                               "reflecting pad)")
            if op == "Pad" and (attr(node, "mode", b"constant") or b"constant") not in (b"constant", "constant"):
                return decline("an edge or reflect Pad along the sequence has no tiled form")
            first = int(np.argmax(source >= 0))  # output position of the first copied input position
            start = win.start - int(source[first]) + first
    # the probes pass on as they are (renumbered): their window keeps its width
    t.record(out, st.support, TileWindow(start, win.shift, t.full(out).dims[t.full(out).seq_axis - 1]), crop=False)
    return None


def emit_positional(ctx: "EmitContext", np_: NodePlan) -> None:
    """The original node on the probes; in a tiled plan a crop or pad along the sequence only
    renumbers window positions (nothing to copy; a Pad sets the positions that become its
    padding), and a reshape is re-targeted to the window's dims (also in the whole-sequence
    form when its target is computed: it may hold the batch size, not the probes'). A Concat
    lays its sequence-independent operands out like the probes."""
    if np_.node.op_type == "Concat":
        clone_with_references(ctx, np_, [n for n in np_.node.input if n and not ctx.is_seq(n)])
        return
    computed_target = np_.node.op_type == "Reshape" and ctx.plan_const(np_.node.input[1]) is None
    if (ctx.tiling is None and not computed_target) or np_.node.op_type in ("Transpose", "Squeeze", "Unsqueeze"):
        clone_on_probes(ctx, np_)
        return
    from ..emit.probes import reprobe
    node, b = np_.node, ctx.b
    x, out = node.input[0], node.output[0]
    folded = reprobe(ctx, x, np_.probes)
    op = node.op_type
    if op in ("Reshape", "Flatten"):
        result = b.reshape(folded, [-1, *ctx.seq(out).dims], "tile_reshape")
    elif op == "Slice":
        result = _slice_other_axes(ctx, node, folded)
    else:
        result = _pad_on_tiles(ctx, np_, folded)
    ctx.probe[(out, np_.probes)] = result


def _slice_other_axes(ctx: "EmitContext", node: onnx.NodeProto, folded: str) -> str:
    """The Slice without its sequence-axis entry (the window moved instead)."""
    full = ctx.plan.states[node.input[0]]
    rank = len(full.dims) + 1
    starts, ends = _int_input(node, 1, ctx.plan_const), _int_input(node, 2, ctx.plan_const)
    axes = _int_input(node, 3, ctx.plan_const) if len(node.input) > 3 and node.input[3] else list(range(len(starts)))
    steps = _int_input(node, 4, ctx.plan_const) if len(node.input) > 4 and node.input[4] else [1] * len(axes)
    keep = [i for i, ax in enumerate(_norm(axes, rank)) if ax != full.seq_axis]
    if not keep:
        return folded
    b = ctx.b
    pick = lambda values: b.ints([values[i] for i in keep])  # noqa: E731
    return b.op("Slice", [folded, pick(starts), pick(ends), pick([_norm(axes, rank)[i] for i in keep]), pick(steps)],
                "tile_slice")


def _pad_on_tiles(ctx: "EmitContext", np_: NodePlan, folded: str) -> str:
    """Pad on a tiled tensor: out-of-range positions of the input window become the pad value
    (they are the output's padding), and other axes are padded as the node says."""
    from ..emit.tiles import in_range, three_level
    b, node = ctx.b, np_.node
    x = node.input[0]
    st = ctx.seq(x)
    full = ctx.plan.states[x]
    rank = len(full.dims) + 1
    pads = list(_int_input(node, 1, ctx.plan_const, "pads"))
    axes = _int_input(node, 3, ctx.plan_const) if len(node.input) > 3 and node.input[3] else list(range(rank))
    axes = [a + rank if a < 0 else a for a in axes]
    value = ctx.plan_const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    value = float(np.asarray(value).ravel()[0]) if value is not None else float(attr(node, "value", 0.0))
    result = folded
    width = st.dims[st.seq_axis - 1]
    edge = in_range(ctx, x, 0, width - 1)
    if edge is not None:
        padded = b.op("Where", [edge, three_level(ctx, folded, x, np_.probes, st.dims),
                                b.const(np.array(value), "pad_value", dtype=ctx.plan.infos[x].dtype)], "tile_pad")
        result = b.reshape(padded, [-1, *st.dims], "tile_pad")
    other = [0] * (2 * rank)
    n = len(axes)
    for i, ax in enumerate(axes):
        if ax != full.seq_axis:
            other[ax], other[rank + ax] = pads[i], pads[i + n]
    if any(other):
        inputs = [result, b.ints(other)] + ([node.input[2]] if len(node.input) > 2 and node.input[2] else [])
        result = b.op("Pad", inputs, "tile_pad_other", mode="constant")
    return result


# ----------------------------------------------------------------------------- reference operands


def seq_axis_of_operand(plan, name: str, out: str) -> int | None:
    """Axis of operand ``name`` that numpy broadcasting aligns with the sequence axis of the
    probe-form tensor ``out`` (``None`` when the operand has no such axis)."""
    full = plan.states[out]
    info = plan.infos.get(name)
    shape = (info.shape if info is not None else None) or []
    axis = len(shape) - (len(full.dims) + 1 - full.seq_axis)
    return axis if 0 <= axis < len(shape) else None


def varies_along_sequence(plan, name: str, out: str) -> bool:
    """Whether the sequence-independent operand ``name`` has more than one value along the
    sequence axis of ``out`` (a tiled plan then cuts it to each tile's window)."""
    axis = seq_axis_of_operand(plan, name, out)
    return axis is not None and plan.infos[name].shape[axis] != 1


def clone_with_references(ctx: "EmitContext", np_: NodePlan, windowed: list[str]) -> None:
    """:func:`~yuzu_onnx.emit.probes.clone_on_probes`, except that the sequence-independent
    operands ``windowed`` are laid out like the probes by :func:`reference_on_probes` (a
    Concat's operands, side tensors with a static batch of 1, and in a tiled plan operands
    that vary along the sequence axis, cut to each tile's window)."""
    if not windowed:
        clone_on_probes(ctx, np_)
        return
    from dataclasses import replace

    from ..emit.probes import probe_inputs
    node = np_.node
    blanked = onnx.NodeProto()
    blanked.CopyFrom(node)
    for i, name in enumerate(node.input):
        if name in windowed:
            blanked.input[i] = ""  # probe_inputs passes it through untouched
    inputs = probe_inputs(ctx, replace(np_, node=blanked))
    for i, name in enumerate(node.input):
        if name in windowed:
            inputs[i] = reference_on_probes(ctx, name, node.output[0], np_.probes)
    out = ctx.b.fresh(f"probe_{node.op_type.lower()}")
    ctx.b.clone(node, inputs, [out], "probe")
    ctx.probe[(node.output[0], np_.probes)] = out


def batch_size(ctx: "EmitContext") -> str:
    """``(1,)`` int64: the number of sequences ``N`` of this call (from the sequence input;
    in a tiled plan computed outside the Loop)."""
    key = ("batch_n",)
    if key not in ctx.cache:
        b = ctx.b

        def emit() -> str:
            shape = b.op("Shape", [ctx.plan.seq.name], "seq_shape")
            return b.op("Slice", [shape, b.ints([0]), b.ints([1])], "batch_n")

        if ctx.tiling is None:
            ctx.cache[key] = emit()
        else:
            with b.into(ctx.outer_nodes):
                ctx.cache[key] = emit()
    return ctx.cache[key]


def reference_on_probes(ctx: "EmitContext", name: str, out: str, probes: int) -> str:
    """A sequence-independent operand of a probe-form node, laid out like the probes:
    ``(N * P, *dims)`` (tiled: ``(N * per_chunk * P, *dims)`` with the sequence axis cut to each
    tile's window of ``out``, positions outside the tensor clipped to its ends: the values there
    are replaced before any op reads across positions). ``name`` has the rank of ``out``
    (fewer leading axes are added), a batch axis of 1 or ``N``, and, along the sequence axis,
    1 or the full length of ``out``."""
    key = ("ref_on_probes", name, out, probes)
    if key in ctx.cache:
        return ctx.cache[key]
    b, plan = ctx.b, ctx.plan
    full = plan.states[out]
    rank = len(full.dims) + 1
    shape = list(plan.infos[name].shape)
    value = name if len(shape) == rank else b.unsqueeze(name, list(range(rank - len(shape))), "ref_rank")
    shape = [1] * (rank - len(shape)) + shape
    dims = [int(d) for d in shape[1:]]
    if ctx.tiling is None:
        per_tile = b.unsqueeze(value, [1], "ref_b")  # (B, 1, *dims)
        target = b.op("Concat", [batch_size(ctx), b.ints([probes] + [1] * len(dims))], "ref_target", axis=0)
    else:
        from ..emit.tiles import positions
        axis = full.seq_axis
        if dims[axis - 1] != 1:
            width = ctx.seq(out).dims[axis - 1]
            pos = positions(ctx, out, 0, width - 1)  # (c, W)
            clipped = b.op("Clip", [pos, b.const(np.array(0, dtype=np.int64), dtype=np.int64),
                                    b.const(np.array(dims[axis - 1] - 1, dtype=np.int64), dtype=np.int64)],
                           "ref_pos")
            gathered = b.op("Gather", [value, clipped], "ref_window", axis=axis)  # (B, .., c, W, ..)
            perm = [0, axis] + [ax for ax in range(1, rank + 1) if ax != axis]
            value = b.transpose(gathered, perm, "ref_window_t")  # (B, c, *window dims)
            dims[axis - 1] = width
        else:
            value = b.unsqueeze(value, [1], "ref_tile")  # (B, 1, *dims)
        per_tile = b.unsqueeze(value, [2], "ref_b")  # (B, c or 1, 1, *dims)
        target = b.op("Concat", [batch_size(ctx), b.ints([ctx.tiling.per_chunk, probes] + [1] * len(dims))],
                      "ref_target", axis=0)
    expanded = b.op("Expand", [per_tile, target], "ref_probes")
    ctx.cache[key] = b.reshape(expanded, [-1, *dims], "ref_probes")
    return ctx.cache[key]


POSITIONAL = Rule("positional", "probe positional", "probe", no_flops, emit_positional, tile=tile_positional)
RULES = (POSITIONAL,)

CHECKS = {op: check_positional for op in ("Transpose", "Squeeze", "Unsqueeze", "Slice", "Pad", "Concat")}
CHECKS.update({"Reshape": check_unit_reshape, "Flatten": check_unit_reshape})
