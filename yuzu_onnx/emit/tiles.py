"""Emitting a tiled plan: one ONNX ``Loop`` over chunks of tiles per group of tiles (see
:mod:`yuzu_onnx.tiling`).

Layout inside the Loop body. A chunk holds ``c = per_chunk`` tiles; a probe tensor of the chunk
is ``(N * c * P, *window dims)`` with the batch ordered ``(sequence, tile, probe)``; its
"three-level" view is ``(N, c, P, *window dims)``. Per-mutant tensors of the chunk are
``(N * c * S*T, *dims)`` ordered ``(sequence, tile, local mutant)``, so the chunk's mutants are
global mutants ``tile * S*T + local`` in order. Reference tensors (the original graph's, computed
once outside the Loop) are read through windows gathered per tile.

Positions of a window that lie outside the tensor (``< 0`` or ``>= L``) hold whatever the ops
computed there; :func:`extend` replaces them by the padding value of the op about to read them,
and the exits ignore them.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from ..errors import InternalError
from .context import EmitContext
from .finite import finite_model


# ----------------------------------------------------------------------------- chunk indices


def tile_indices(ctx: EmitContext, iteration: str) -> str:
    """``tau = first + iteration * per_chunk + (0..per_chunk-1)``: the chunk's global tile
    indices (``first``: the group's first tile)."""
    b = ctx.b
    ct = ctx.tiling.per_chunk
    first = b.op("Mul", [iteration, b.const(np.array(ct, dtype=np.int64), "ct", dtype=np.int64)], "tile0")
    return b.op("Add", [first, b.const(ctx.tiling.first + np.arange(ct, dtype=np.int64), "tiles", dtype=np.int64)],
                "tau")


def positions(ctx: EmitContext, name: str, first: int, last: int) -> str:
    """``(per_chunk, last - first + 1)`` int64 virtual positions of window positions
    ``first..last`` (relative to the window) of the chunk's tiles in tensor ``name``."""
    key = ("pos", name, first, last)
    if key not in ctx.cache:
        b = ctx.b
        win = ctx.tiling.windows[name]
        base = b.const((win.start + first + np.arange(last - first + 1, dtype=np.int64))[None, :], "pos_base",
                       dtype=np.int64)
        shift = b.op("Mul", [b.unsqueeze(ctx.tau, [1], "tau_col"),
                             b.const(np.array(win.shift, dtype=np.int64), "shift", dtype=np.int64)], "tile_shift")
        ctx.cache[key] = b.op("Add", [shift, base], "positions")
    return ctx.cache[key]


def _seq_axis(ctx: EmitContext, name: str) -> int:
    return ctx.plan.states[name].seq_axis


def padded_reference(ctx: EmitContext, name: str, first: int, last: int, value: float) -> tuple[str, int]:
    """The reference tensor padded with ``value`` along its sequence axis so that every virtual
    position tiles read exists; returns it and the offset of position 0. Emitted outside the
    Loop (once per call)."""
    low, high = ctx.tiling.reads(name, first, last)
    full = ctx.plan.states[name]
    length = full.dims[full.seq_axis - 1]
    before, after = max(0, -low), max(0, high - (length - 1))
    key = ("ref_pad", name, value, before, after)
    if key not in ctx.cache:
        if not before and not after:
            ctx.cache[key] = name
        else:
            b = ctx.b
            rank = len(full.dims) + 1
            pads = [0] * (2 * rank)
            pads[full.seq_axis], pads[rank + full.seq_axis] = before, after
            dtype = ctx.plan.infos[name].dtype or ctx.dtype
            with b.into(ctx.outer_nodes):
                ctx.cache[key] = b.op("Pad", [name, b.ints(pads), b.const(np.array(value), "pad_value", dtype=dtype)],
                                      "ref_pad", mode="constant")
    return ctx.cache[key], before


def reference_window(ctx: EmitContext, name: str, first: int, last: int, value: float = 0.0) -> str:
    """``(N, per_chunk, 1, *dims)`` reference values at window positions ``first..last`` of each
    tile of the chunk (the sequence axis ``last - first + 1`` long); ``value`` out of range."""
    key = ("ref_win", name, first, last, value)
    if key not in ctx.cache:
        b = ctx.b
        wider = _covering_window(ctx, name, first, last, value)
        if wider is not None:  # a slice of a window already gathered (a conv's halo) costs less
            (f2, _), window = wider
            axis = 2 + ctx.plan.states[name].seq_axis
            ctx.cache[key] = b.op("Slice", [window, b.ints([first - f2]), b.ints([last - f2 + 1]), b.ints([axis])],
                                  "ref_sub")
            return ctx.cache[key]
        padded, offset = padded_reference(ctx, name, first, last, value)
        index = positions(ctx, name, first, last)
        if offset:
            index = b.op("Add", [index, b.const(np.array(offset, dtype=np.int64), "offset", dtype=np.int64)], "pos_pad")
        axis = _seq_axis(ctx, name)
        rank = len(ctx.plan.states[name].dims) + 2  # the gather adds the tile axis
        gathered = b.op("Gather", [padded, index], "ref_g", axis=axis)  # (N, .., c, W, ..)
        perm = [0, axis] + [ax for ax in range(1, rank) if ax != axis]
        ctx.cache[key] = b.unsqueeze(b.transpose(gathered, perm, "ref_t"), [2], "ref_win")
    return ctx.cache[key]


def _covering_window(ctx: EmitContext, name: str, first: int, last: int, value: float):
    """``((first', last'), window)`` of a reference window of ``name`` already emitted in this
    Loop body that covers ``first..last`` with the same out-of-range value, or None."""
    found = [((k[2], k[3]), w) for k, w in ctx.cache.items()
             if k[0] == "ref_win" and k[1] == name and k[4] == value and k[2] <= first and k[3] >= last]
    return min(found, key=lambda item: item[0][1] - item[0][0], default=None)


def window_mask_shape(ctx: EmitContext, name: str, width: int) -> list[int]:
    """Shape placing a ``(per_chunk, width)`` table on the tile and sequence axes of a
    three-level ``(N, c, P, *dims)`` tensor."""
    st = ctx.seq(name)
    dims = [1] * len(st.dims)
    dims[st.seq_axis - 1] = width
    return [1, ctx.tiling.per_chunk, 1] + dims


def in_range(ctx: EmitContext, name: str, first: int, last: int) -> str | None:
    """Bool mask (three-level broadcast shape): window positions ``first..last`` inside the
    tensor; ``None`` when every tile's are (no mask needed)."""
    low, high = ctx.tiling.reads(name, first, last)
    full = ctx.plan.states[name]
    if low >= 0 and high < full.dims[full.seq_axis - 1]:
        return None
    key = ("in_range", name, first, last)
    if key not in ctx.cache:
        b = ctx.b
        pos = positions(ctx, name, first, last)
        length = b.const(np.array(full.dims[full.seq_axis - 1], dtype=np.int64), "length", dtype=np.int64)
        inside = b.op("And", [b.op("GreaterOrEqual", [pos, b.const(np.array(0, dtype=np.int64), dtype=np.int64)],
                                   "ge0"),
                              b.op("Less", [pos, length], "lt_len")], "in_range")
        ctx.cache[key] = b.reshape(inside, window_mask_shape(ctx, name, last - first + 1), "in_range")
    return ctx.cache[key]


def zero_out_of_range(ctx: EmitContext, name: str, folded: str, probes: int) -> str:
    """``folded`` (a probe tensor of ``name``) with its out-of-range window positions set to 0
    (once per range: a tensor zeroed already for ``name``, a tiled MaxPool's output read by a
    Conv, is returned as is)."""
    b, st = ctx.b, ctx.seq(name)
    width = st.dims[st.seq_axis - 1]
    edge = in_range(ctx, name, 0, width - 1)
    if edge is None or ("zeroed", name, folded) in ctx.cache:
        return folded
    split = three_level(ctx, folded, name, probes, st.dims)
    if finite_model(ctx):
        zeroed = b.op("Mul", [split, b.op("Cast", [edge], "in_range_f", to=helper.np_dtype_to_tensor_dtype(ctx.dtype))],
                      "zero_out")
    else:  # a NaN or inf there would survive a multiplication by 0
        zeroed = b.op("Where", [edge, split, b.const(np.array(0.0), "zero")], "zero_out")
    out = b.reshape(zeroed, [-1, *st.dims], "zero_out")
    # keyed by the tensor whose range was zeroed: a positional op (a Slice of the length) can
    # pass the same probes on as a tensor with a shorter range, whose edge is not zeroed yet
    ctx.cache[("zeroed", name, out)] = out
    return out


def three_level(ctx: EmitContext, folded: str, name: str, probes: int, dims) -> str:
    """``(N * c * P, *dims)`` -> ``(N, c, P, *dims)``."""
    return ctx.b.reshape(folded, [-1, ctx.tiling.per_chunk, probes, *dims], "tiles3")


def extend(ctx: EmitContext, name: str, folded: str, probes: int, first: int, last: int,
           value: float | None) -> str:
    """The probe tensor of ``name`` over window positions ``first..last`` (relative to its
    window; either end may lie outside it): the probes where the window has them, the
    reference elsewhere, and, where ``value`` is given, ``value`` at out-of-range positions
    (the padding of the op about to read them).

    Returns ``(N * c * P, *dims)`` with the sequence axis ``last - first + 1`` long.
    """
    b = ctx.b
    st = ctx.seq(name)
    axis = st.seq_axis  # in the folded tensor (batch first)
    width = st.dims[axis - 1]
    dims = list(st.dims)
    dims[axis - 1] = last - first + 1
    out = folded
    lo, hi = max(first, 0), min(last, width - 1)
    if lo > hi:  # no position of its window is wanted (windows cropped apart): the reference only
        return _extend_by_concat(ctx, name, None, probes, (first, last), (1, 0), value)
    if lo > 0 or hi < width - 1:
        out = b.op("Slice", [out, b.ints([lo]), b.ints([hi + 1]), b.ints([axis])], "ext_crop")
    before, after = max(-first, 0), max(last - (width - 1), 0)
    own_edge = in_range(ctx, name, lo, hi) if value is not None else None
    if not before and not after and own_edge is None:
        return out
    if own_edge is None:
        return _extend_by_concat(ctx, name, out, probes, (first, lo - 1), (hi + 1, last), value)
    # some tile's own positions lie outside the tensor: they must read ``value`` too
    if before or after:
        rank = len(st.dims) + 1
        pads = [0] * (2 * rank)
        pads[axis], pads[rank + axis] = before, after
        out = b.op("Pad", [out, b.ints(pads)], "ext_pad")
    inside = (np.arange(first, last + 1) >= 0) & (np.arange(first, last + 1) < width)
    edge = in_range(ctx, name, first, last)
    keep = b.op("And", [b.const(inside.reshape(window_mask_shape(ctx, name, len(inside))[3:]), "inside",
                                dtype=np.bool_), edge], "ext_keep")  # the probes' own, in-range positions
    ref = reference_window(ctx, name, first, last, value)  # (N, c, 1, *dims)
    x3 = three_level(ctx, out, name, probes, dims)
    if not finite_model(ctx):  # NaN or inf in the window would survive the arithmetic below
        return b.reshape(b.op("Where", [keep, x3, ref], "ext"), [-1, *dims], "ext")
    # probes padded with zeros (and zeroed where the window is out of range) plus the reference
    # where the probes are not used: exact (x + 0 = x, 0 + r = r), and cheaper than a Where
    float_type = helper.np_dtype_to_tensor_dtype(ctx.dtype)
    x3 = b.op("Mul", [x3, b.op("Cast", [edge], "in_range_f", to=float_type)], "ext_zero")
    halo = b.op("Mul", [ref, b.op("Cast", [b.op("Not", [keep], "ext_halo")], "halo_f", to=float_type)], "halo")
    return b.reshape(b.op("Add", [x3, halo], "ext"), [-1, *dims], "ext")


def _extend_by_concat(ctx: EmitContext, name: str, probes_part: str, probes: int, left: tuple[int, int],
                      right: tuple[int, int], value: float | None) -> str:
    """:func:`extend` where the probes' own positions all lie in range: the reference windows
    ``left`` and ``right`` (window positions, inclusive; empty when reversed), repeated for
    each probe, concatenated around the probes along the sequence axis (``probes_part`` None:
    the reference windows alone). One copy of the probes
    (a Pad to zeros and an Add of the reference take two passes and ORT's Pad is slow on the
    last axis), values copied as they are (no arithmetic: exact for any values)."""
    b, st = ctx.b, ctx.seq(name)
    axis = st.seq_axis
    pieces = []
    for first, last in (left, right):
        if first > last:
            pieces.append(None)
            continue
        ref = reference_window(ctx, name, first, last, 0.0 if value is None else value)  # (N, c, 1, *dims)
        repeat = [1] * (len(st.dims) + 3)
        repeat[2] = probes
        dims = list(st.dims)
        dims[axis - 1] = last - first + 1
        pieces.append(b.reshape(b.op("Expand", [ref, b.ints(repeat)], "ext_ref"), [-1, *dims], "ext_ref"))
    parts = [p for p in (pieces[0], probes_part, pieces[1]) if p is not None]
    return parts[0] if len(parts) == 1 else b.op("Concat", parts, "ext", axis=axis)


# ----------------------------------------------------------------------------- input


def encode_tile_input(ctx: EmitContext) -> str:
    """Probe form of the chunk's input windows: probe ``s`` holds, at every position of the
    tile, that position's ``s``-th substitution (all ``T`` positions are mutated; the last
    tile's positions past the region are computed and dropped)."""
    from .probes import substituted  # the whole-sequence encoder shares the substitution math

    plan, b = ctx.plan, ctx.b
    seq = plan.seq
    width = ctx.tiling.width
    dims = ctx.seq(seq.name).dims
    window = reference_window(ctx, seq.name, 0, width - 1)  # (N, c, 1, *dims)
    x = b.reshape(window, [-1, *dims], "x_tiles")  # (N*c, *dims)
    mutated = substituted(ctx, x)  # (N*c, S, *dims), or the constant (S, ..) for all substitutions
    batch = b.op("Slice", [b.op("Shape", [x], "x_shape"), b.ints([0]), b.ints([1])], "batch")
    shape = b.op("Concat", [batch, b.ints([plan.subs, *dims])], "probe_shape", axis=0)
    full = b.op("Expand", [mutated, shape], "tile_probes")
    return b.reshape(full, [-1, *dims], "tile_probes")


# ----------------------------------------------------------------------------- materialize


def materialize_tiled(ctx: EmitContext, name: str) -> str:
    """``(N * c * S*T, *dims)``: the whole tensor for every mutant of the chunk's tiles: its
    probe's values where the mutant reaches (inside the tile's window), the reference elsewhere.

    Each tile's window is placed at its offset by one Gather over the (tile, window position)
    axis, then one Where picks, per (tile, mutant, position), the placed probe value where the
    mutant reaches and the reference elsewhere (window positions a mutant does not reach may
    hold values computed from the window's zero padding)."""
    b, plan = ctx.b, ctx.plan
    st, full = ctx.seq(name), plan.states[name]
    win = ctx.tiling.windows[name]
    p, ct = st.probes, ctx.tiling.per_chunk
    mutants = plan.subs * ctx.tiling.width
    axis = st.seq_axis
    width, length = st.dims[axis - 1], full.dims[axis - 1]
    if name == plan.seq.name and p == plan.subs and width == ctx.tiling.width:
        return _materialize_tile_input(ctx)
    from .probes import reprobe
    z = ctx.unfold(reprobe(ctx, name, p), name, p)  # (N*c, P, *wdims)
    local = np.arange(mutants)
    # one mutant per probe (P = S*T) needs no gather
    per_mutant = z if p == mutants else b.gather(z, local % p, axis=1, hint="mat_g")  # (N*c, S*T, *wdims)
    # Place each tile's window at its own offset: merge (tile, window position) into one axis
    # and gather it with a (c, L) table, so no tile reads another's offsets.
    before, after = list(st.dims[:axis - 1]), list(st.dims[axis:])
    split = b.reshape(per_mutant, [-1, ct, mutants, *st.dims], "mat_split")  # (N, c, S*T, .., W, ..)
    rank = len(st.dims) + 3
    seq_ax = axis + 2
    perm = [0, 2] + list(range(3, seq_ax)) + [1, seq_ax] + list(range(seq_ax + 1, rank))
    moved = b.transpose(split, perm, "mat_t")  # (N, S*T, .., c, W, ..)
    rel = b.op("Sub", [b.const(np.arange(length, dtype=np.int64)[None, :], "mat_pos", dtype=np.int64),
                       _window_offsets(ctx, win, 0, 1)], "mat_rel")  # (c, L): window position of each position
    placed = _place_windows_in_blocks(ctx, moved, rel, win, width, length, before) if not after else \
        _place_windows(ctx, moved, rel, width, before, after)
    mask_shape = [1, mutants] + [1] * len(before) + [ct, length] + [1] * len(after)
    reached = b.reshape(_reach_mask(ctx, st, rel, width, mutants), mask_shape, "mat_reach")
    ref = b.unsqueeze(name, [1, axis + 1], "mat_ref")  # (N, 1, .., 1, L, ..)
    # a Where, not finite.select: the select's two products are full-size tensors of the chunk,
    # which ONNX Runtime's arena holds beside the sum (ChromBPNet-like, all 2114 positions:
    # 1.23 GiB measured against 0.97 GiB with the Where)
    whole = b.op("Where", [reached, placed, ref], "mat_whole")
    back = [0, 2 + len(before), 1] + list(range(2, 2 + len(before))) + list(range(3 + len(before), rank))
    ordered = b.transpose(whole, back, "mat_order")  # (N, c, S*T, *dims)
    return b.reshape(ordered, [-1, *full.dims], "mat")


def _reach_mask(ctx: EmitContext, st, rel: str, width: int, mutants: int) -> str:
    """``(S*T, c, L)`` bool: local mutant ``m`` of tile ``k`` reaches position ``l``, i.e. ``l``
    lies at window position ``w = rel[k, l]`` inside the window and ``first(w) <= m < stop(w)``
    (computed in the graph from the ``W``-long support tables)."""
    b, plan = ctx.b, ctx.plan
    first, stop = st.support.mutant_range(plan.subs)
    zero = b.const(np.array(0, dtype=np.int64), dtype=np.int64)
    clipped = b.op("Clip", [rel, zero, b.const(np.array(width - 1, dtype=np.int64), dtype=np.int64)], "mat_clip")
    # out of the window: an empty range (first = stop = 0), so no mutant reaches
    inside = b.op("Equal", [clipped, rel], "mat_inside")
    lo = b.op("Where", [inside, b.gather(b.const(first, "mat_first", dtype=np.int64), clipped, axis=0,
                                         hint="mat_lo"), zero], "mat_lo")
    hi = b.op("Where", [inside, b.gather(b.const(stop, "mat_stop", dtype=np.int64), clipped, axis=0,
                                         hint="mat_hi"), zero], "mat_hi")
    m = b.const(np.arange(mutants, dtype=np.int64).reshape(mutants, 1, 1), "mat_m", dtype=np.int64)
    return b.op("And", [b.op("GreaterOrEqual", [m, lo], "mat_ge"), b.op("Less", [m, hi], "mat_lt")], "mat_reached")


def _place_windows(ctx: EmitContext, moved: str, rel: str, width: int, before: list, after: list) -> str:
    """``(N, S*T, .., c, L, ..)``: tile ``k``'s window (``moved``, ``(N, S*T, .., c, W, ..)``) at
    its offset, by one Gather of single elements along the sequence axis; ``rel`` ``(c, L)`` is
    the window position of each position (clipped outside the window, where the caller puts the
    reference)."""
    b, ct = ctx.b, ctx.tiling.per_chunk
    mutants = ctx.plan.subs * ctx.tiling.width
    merged = b.reshape(moved, [0, mutants, *before, ct * width, *after], "mat_merge")
    return b.op("Gather", [merged, _tile_index(ctx, rel, width)], "mat_place", axis=len(before) + 2)


def _tile_index(ctx: EmitContext, rel: str, per_tile: int) -> str:
    """``(c, n)`` int64: ``rel`` (an index within each tile's run of ``per_tile`` entries)
    clipped into that run, plus the run's start in the tiles' concatenation."""
    b = ctx.b
    zero = b.const(np.array(0, dtype=np.int64), dtype=np.int64)
    clipped = b.op("Clip", [rel, zero, b.const(np.array(per_tile - 1, dtype=np.int64), dtype=np.int64)], "mat_clip")
    starts = b.const((np.arange(ctx.tiling.per_chunk, dtype=np.int64) * per_tile)[:, None], dtype=np.int64)
    return b.op("Add", [clipped, starts], "mat_index")


#: The smallest block worth placing windows by when it spares the Pad and the Slice (BPNet-9:
#: blocks of 8 without them were faster than blocks of 32 with them)
ALIGNED_BLOCK = 8


def placement_block(shift: int, limit: int = 32) -> int:
    """Positions per block when windows are placed block by block: the largest power of two up
    to ``limit`` dividing the windows' step ``shift`` (so every window starts at the same
    offset within a block)."""
    block = 1
    while block < limit and shift % (2 * block) == 0:
        block *= 2
    return block


def window_block(shift: int, start: int, width: int, length: int) -> int:
    """Positions per block for placing windows of ``width`` starting at ``start + k * shift``
    into a tensor of ``length``: :func:`placement_block` of the step, or a smaller power of two
    (down to ``ALIGNED_BLOCK``) that also divides ``start``, ``width`` and ``length``, so that
    the windows and the tensor fill whole blocks: no Pad before the Gather and no Slice after
    it (two passes over the result each)."""
    block = placement_block(shift)
    aligned = placement_block(math.gcd(shift, start, width, length))
    return aligned if block > 1 and aligned >= ALIGNED_BLOCK else block


def _place_windows_in_blocks(ctx: EmitContext, moved: str, rel: str, win, width: int, length: int,
                             before: list) -> str:
    """:func:`_place_windows` for a sequence axis that comes last, ``B`` positions at a time
    (:func:`placement_block`): each window is padded to whole blocks aligned with the tensor's
    blocks, so the Gather copies runs of ``B`` values instead of single ones (ONNX Runtime
    copies each gathered block separately: BPNet-9's placement was 16% of its time)."""
    b, ct = ctx.b, ctx.tiling.per_chunk
    mutants = ctx.plan.subs * ctx.tiling.width
    block = window_block(win.shift, win.start, width, length)
    if block == 1:
        return _place_windows(ctx, moved, rel, width, before, [])
    lead = win.start % block  # window position 0 lies this far into its block
    blocks = -(-(lead + width) // block)
    padded = moved
    if lead or blocks * block > lead + width:
        pads = [0] * (2 * (len(before) + 4))
        pads[len(before) + 3], pads[-1] = lead, blocks * block - lead - width
        padded = b.op("Pad", [moved, b.ints(pads)], "mat_pad")
    merged = b.reshape(padded, [0, mutants, *before, ct * blocks, block], "mat_merge")
    span = -(-length // block)  # blocks covering the tensor (the last may run past it)
    first = _window_offsets(ctx, win, -lead, block)  # (c, 1): block of each window's (padded) start
    block_rel = b.op("Sub", [b.const(np.arange(span, dtype=np.int64)[None, :], "mat_blk", dtype=np.int64), first],
                     "mat_brel")  # (c, L/B): window block of each block
    placed = b.op("Gather", [merged, _tile_index(ctx, block_rel, blocks)], "mat_place", axis=len(before) + 2)  # (N, S*T, .., c, L/B, B)
    placed = b.reshape(placed, [0, mutants, *before, ct, span * block], "mat_blocks")
    if span * block != length:
        placed = b.op("Slice", [placed, b.ints([0]), b.ints([length]), b.ints([-1])], "mat_cut")
    return placed


def _window_offsets(ctx: EmitContext, win, extra: int, unit: int) -> str:
    """``(c, 1)`` int64: ``(start + tau * step + extra) / unit`` for the chunk's tiles (exact
    division: ``unit`` divides the step and ``start + extra``)."""
    b = ctx.b
    per_tile = b.const(np.array(win.shift // unit, dtype=np.int64), dtype=np.int64)
    base = b.const(np.array((win.start + extra) // unit, dtype=np.int64), dtype=np.int64)
    return b.op("Add", [b.op("Mul", [b.unsqueeze(ctx.tau, [1], "tau_col"), per_tile], "mat_shift"), base], "mat_start")


def _materialize_tile_input(ctx: EmitContext) -> str:
    """Mutants of the sequence input itself (brute force, or a switch at the input): mutant
    ``(tile c, position t, substitution s)`` is ``x`` with column ``pos[c, t]`` replaced by probe
    ``s``'s column ``t``. One Where writes every mutant; the general path (gather the probes
    per mutant, place each tile's window with a gather, select against the reference,
    transpose) makes four passes over the same ``(N * c * S*T, *dims)`` tensor."""
    b, plan = ctx.b, ctx.plan
    name = plan.seq.name
    st, full = ctx.seq(name), plan.states[name]
    ct, width, subs = ctx.tiling.per_chunk, ctx.tiling.width, plan.subs
    seq_ax = st.seq_axis - 1  # in dims
    from .probes import reprobe
    probes = b.reshape(reprobe(ctx, name, subs), [-1, ct, subs, *st.dims], "in_probes")  # (N, c, S, *wdims)
    rank = len(st.dims) + 3
    perm = [0, 1, seq_ax + 3, 2] + [ax for ax in range(3, rank) if ax != seq_ax + 3]
    columns = b.unsqueeze(b.transpose(probes, perm, "in_cols"), [4 + seq_ax], "in_col")  # (N, c, T, S, *dims; L -> 1)
    at = [1] * len(full.dims)
    at[seq_ax] = full.dims[seq_ax]
    where = b.reshape(positions(ctx, name, 0, width - 1), [ct, width, 1] + [1] * len(full.dims), "in_at")
    hit = b.op("Equal", [where, b.const(np.arange(full.dims[seq_ax], dtype=np.int64).reshape([1, 1, 1] + at),
                                        "in_pos", dtype=np.int64)], "in_hit")  # (c, T, 1, *dims; L)
    whole = b.op("Where", [hit, columns, b.unsqueeze(name, [1, 2, 3], "in_ref")], "in_mutants")
    return b.reshape(whole, [-1, *full.dims], "mat")


# ----------------------------------------------------------------------------- the Loop


def emit_loops(ctx: EmitContext, emit_nodes, outputs: list[tuple[str, list[int]]]) -> None:
    """Emit one Loop per group of tiles (:class:`~yuzu_onnx.plan.TileGroup`), each over its
    chunks (:func:`emit_loop`); after them, ``ctx.mut[output]`` holds ``(N * M, *out)`` for the
    whole region, the groups' mutants in tile order."""
    b, plan = ctx.b, ctx.plan
    parts: dict[str, list[str]] = {out: [] for out, _ in outputs}
    for group in plan.tiling.groups:
        ctx.enter_group(group)
        for out, part in emit_loop(ctx, emit_nodes, outputs).items():
            parts[out].append(part)
    ctx.leave_groups()
    for out, dims in outputs:
        joined = parts[out][0] if len(parts[out]) == 1 else b.op("Concat", parts[out], "groups", axis=1)
        ctx.mut[out] = b.reshape(joined, [-1, *dims], "mut_out")


def emit_loop(ctx: EmitContext, emit_nodes, outputs: list[tuple[str, list[int]]]) -> dict[str, str]:
    """Emit the Loop over one group's chunks: its body encodes the chunk's input probes, runs
    ``emit_nodes()`` (every rule's emitter) and returns each sequence-dependent output for the
    chunk's mutants. Returns, per output, ``(N, m, *out)``: the group's ``m`` mutants that lie
    in the region, in order."""
    b, plan, tiling = ctx.b, ctx.plan, ctx.tiling
    per_chunk_mutants = tiling.per_chunk * plan.subs * tiling.width
    iteration, cond_in = b.fresh("iter"), b.fresh("cond_in")
    body: list[onnx.NodeProto] = []
    scans: list[tuple[str, str, list[int]]] = []
    with b.into(body):
        ctx.tau = tile_indices(ctx, iteration)
        from .probes import encode_input
        ctx.probe[(plan.seq.name, plan.subs)] = encode_input(ctx)
        emit_nodes()
        from .materialize import materialize
        for out, dims in outputs:
            per_mutant = ctx.mut[out] if out in ctx.mut else materialize(ctx, out)
            scans.append((out, b.reshape(per_mutant, [-1, per_chunk_mutants, *dims], "scan"), dims))
        cond_out = b.op("Identity", [cond_in], "cond_out")
    elem = {out: helper.np_dtype_to_tensor_dtype(plan.infos[out].dtype or ctx.dtype) for out, _ in outputs}
    graph = helper.make_graph(
        body, "tiles", [helper.make_tensor_value_info(iteration, onnx.TensorProto.INT64, []),
                        helper.make_tensor_value_info(cond_in, onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(cond_out, onnx.TensorProto.BOOL, [])]
        + [helper.make_tensor_value_info(scan, elem[out], ["N", per_chunk_mutants, *dims]) for out, scan, dims in scans])
    b.nodes.extend(ctx.outer_nodes)
    ctx.outer_nodes = []
    trips = b.const(np.array(tiling.chunks, dtype=np.int64), "chunks", dtype=np.int64)
    results = [b.fresh("chunks_out") for _ in scans]
    if not results:
        raise InternalError("a tiled plan without sequence-dependent outputs")
    b.op("Loop", [trips, ""], outputs=results, body=graph)
    ctx.value_info.extend(helper.make_tensor_value_info(name, elem[out], [tiling.chunks, "N", per_chunk_mutants, *dims])
                          for (out, _, dims), name in zip(scans, results))
    # the group's mutants inside the region: its last tile may run past the region's end
    mutants = min(tiling.tiles * plan.subs * tiling.width, plan.mutants - tiling.first * plan.subs * tiling.width)
    parts = {}
    for (out, _, dims), stacked in zip(scans, results):
        moved = b.transpose(stacked, [1, 0, 2] + list(range(3, 3 + len(dims))), "chunks_t")  # (N, chunks, c*S*T, ..)
        flat = b.reshape(moved, [0, -1, *dims], "chunks_flat")
        parts[out] = b.op("Slice", [flat, b.ints([0]), b.ints([mutants]), b.ints([1])], "region_mutants")
    return parts
