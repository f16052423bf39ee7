"""Tiled plans: each tile of the mutated region computed only where its mutants reach.

The whole-sequence probe form (``plan.states``) runs every probe over every position, so a
layer costs ``P x L_t`` position-evaluations although the mutants of a sub-region, or of one
stretch of it, reach only part of the sequence. A tiled plan splits the region into tiles of
``T`` mutated positions. For tile ``tau`` and each sequence-dependent tensor it keeps only a
*window*: the positions some mutant of the tile can change, ``start + tau * shift + (0..W-1)``
(:class:`~yuzu_onnx.plan.TileWindow`). Everything outside the window equals the reference
activations of one normal pass, so an op that reads across positions (a Conv) reads the
window from the tile's probes and its halo from the reference, and the op runs without
padding on that extended input. Positions of a window that fall outside the tensor
(``< 0`` or ``>= L_t``) are *out of range*: before such an op reads them they are replaced by
the value the op's padding would give, so edge tiles need no special case.

Windows are *uniform* within a group of consecutive tiles (:class:`~yuzu_onnx.plan.TileGroup`):
every tile's window has the same width and the same layout relative to its mutants, so every
probe table (reprobing, exits) is one small constant shared by the group's tiles, and ``K``,
the most mutants of one tile reaching one position, is at most ``S x T``. Each group crops its
windows to the positions inside the tensor for at least one of its tiles, so the tiles near
the sequence's ends, whose deep-layer windows lie half outside it, compute little there.
The work of a layer becomes ``sum over groups of tiles x P_tile x W_t``, which approaches the
windowed floor ``S x sum_j width_j`` as the tiles and groups get small against the receptive
field. Each group's tiles run in chunks (an ONNX ``Loop`` per group), so the working set is one
chunk's, a choice instead of ``P x C x L``.

This module computes the geometry (windows, tile-local supports, ``K`` and ``P`` per tensor)
by interval arithmetic at conversion time; each rule family says how its ops move windows
(``Rule.tile``). A graph whose ops cannot keep uniform windows (a Concat along the length, a
ConvTranspose, a per-position constant, gaussian sensing) is not tiled and keeps the
whole-sequence form; :func:`plan_tiling` says why.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .ops import attr
from .plan import TileGroup, Tiling, TileWindow
from .rules.base import Decline
from .support import Support
from .tile_geometry import TileGeometry

if TYPE_CHECKING:
    from .analyze import Analysis



def tile_quantum(analysis: "Analysis") -> int:
    """The smallest tile width that keeps windows uniform: the least common multiple of the
    strides accumulated along every path from the input (a tile must move whole output steps
    at every strided op)."""
    plan = analysis.plan
    cumulative = {plan.seq.name: 1}
    quantum = 1
    for np_ in plan.nodes:
        node = np_.node
        ins = [cumulative[n] for n in node.input if n in cumulative]
        if not ins or not np_.spec.probe_form:
            continue
        stride = math.lcm(*ins)
        if np_.rule == "window":
            stride *= int((attr(node, "strides") or [1])[-1])
        for out in node.output:
            if out:
                cumulative[out] = stride
        quantum = math.lcm(quantum, stride)
    return quantum


#: How much wider than its tensor a tile window may grow before the plan switches to materialized
#: mutants (:func:`switch_point`).
SWITCH_RATIO = 1.25


def switch_point(analysis: "Analysis", width: int) -> int | None:
    """The first window node (index in ``plan.nodes``) whose tile window would be at least
    :data:`SWITCH_RATIO` times as wide as its output tensor: from there a tile's probes would
    cover the whole sequence and mostly positions outside it, so the tail runs on materialized
    mutants (per chunk) instead; None if there is none or the graph cannot be tiled.

    A window only a little wider than its tensor stays in probe form: materializing costs a
    placement of every mutant's whole tensor (ChromBPNet's 64-channel tower output before its
    1-channel profile head: 1.2 s of 4.8 s when switched at a window 1.15x its tensor), more
    than the extra positions cost."""
    plan = analysis.plan
    geometry = TileGeometry(analysis, width)
    seq = plan.seq
    geometry.record(seq.name, Support.for_input(width, 0, width), TileWindow(plan.start, width, seq.length))
    for index, np_ in enumerate(plan.nodes):
        if not np_.spec.probe_form:
            continue
        if np_.spec.tile is None or np_.spec.tile(geometry, np_) is not None:
            return None
        out = np_.node.output[0]
        if np_.spec.widens and geometry.width_of(out) >= SWITCH_RATIO * geometry.windows[out].length:
            return index
    return None


#: Group counts tried in turn, each kept where it cuts the FLOPs of the one before by
#: :data:`GROUP_FLOP_GAIN`. More groups crop closer (ChromBPNet-like, central 1000 positions,
#: groups 1 / 8 / 16 / 32: plan FLOPs 1.18 / 1.06 / 1.04 / 1.03x of the floor, 0.88 / 0.86 /
#: 0.83 s for 8 / 16 / 32; all 2114 positions: 1.58 / 1.20 / 1.12 / 1.07x) but each adds a Loop
#: body to the graph: converting and loading it take longer (central, 32 groups: 10 s and 1.8 s
#: against 7.5 s and 0.6 s for 16)
GROUP_STEPS = (16, 32)
#: Groups are kept only where they cut the plan's FLOPs by at least this fraction.
GROUP_FLOP_GAIN = 0.03


def plan_tiling(analysis: "Analysis", width: int, per_chunk: int = 1, groups: int | None = None) -> Tiling | Decline:
    """Tile geometry and probe counts for tiles of ``width`` mutated positions.

    Parameters
    ----------
    analysis : Analysis
        A finished whole-sequence analysis (rules chosen, supports known).
    width : int
        ``T``. Tiles cover ``start + tau*T .. start + tau*T + T - 1``; the last may run past
        the region's end.
    per_chunk : int
        Tiles per Loop iteration.
    groups : int, optional
        Split the tiles into this many groups of consecutive tiles (at most one per tile), each
        with its windows cropped to the positions inside the tensors for its own tiles
        (:func:`~yuzu_onnx.tile_geometry.cropped`). Default: the most of :data:`GROUP_STEPS`
        each of which cuts the plan's FLOPs by :data:`GROUP_FLOP_GAIN` against the one before
        (one group to start with).

    Returns
    -------
    Tiling or Decline
        ``Decline`` names the node (and why) when the graph cannot be tiled.

    Notes
    -----
    A deep model's last layers give each tile a window nearly as wide as the tensor, so a tile
    near one end of the sequence has up to half its window outside the tensor (ChromBPNet:
    the last tower layer of the first tile reaches 483 of its 1048 window positions before
    position 0). One window shared by all tiles computes those positions for every tile; a
    group's windows hold only the positions some tile of the group has inside the tensor, so
    with small groups the plan approaches the floor counted over real positions.
    """
    plan = analysis.plan
    if plan.sensing != "spike":
        return Decline("tiling", "gaussian sensing decodes over whole positions (tiles use structured probes)")
    tiles = math.ceil(plan.region / width)
    if groups is not None:
        return _grouped(analysis, width, per_chunk, tiles, groups)
    single = _grouped(analysis, width, per_chunk, tiles, 1)
    if isinstance(single, Decline) or tiles == 1:
        return single
    best, best_flops = single, converted_flops(analysis, single)
    for count in GROUP_STEPS:
        split = _grouped(analysis, width, per_chunk, tiles, count)
        if isinstance(split, Decline) or len(split.groups) <= len(best.groups):
            break
        flops = converted_flops(analysis, split)
        if flops > (1 - GROUP_FLOP_GAIN) * best_flops:
            break
        best, best_flops = split, flops
    return best


def converted_flops(analysis: "Analysis", tiling: Tiling) -> int:
    """The converted FLOPs per sequence of the plan with ``tiling`` adopted (it stays adopted)."""
    analysis.adopt(tiling)
    return analysis.plan.totals()["converted"]


def group_bounds(tiles: int, per_chunk: int, groups: int) -> list[tuple[int, int, int]]:
    """``(first tile, tiles, per_chunk)`` of ``min(groups, tiles)`` groups of consecutive tiles:
    whole chunks split as evenly as they go, or, with fewer chunks than groups, tiles split as
    evenly as they go (each group one chunk)."""
    per_chunk = max(1, min(per_chunk, tiles))
    chunks = math.ceil(tiles / per_chunk)
    groups = max(1, min(groups, tiles))
    if chunks >= groups:
        sizes = [(chunks // groups + (g < chunks % groups)) * per_chunk for g in range(groups)]
    else:
        sizes = [tiles // groups + (g < tiles % groups) for g in range(groups)]
    bounds, first = [], 0
    for size in sizes:
        count = min(size, tiles - first)
        if count <= 0:
            break
        bounds.append((first, count, min(per_chunk if chunks >= groups else count, count)))
        first += count
    return bounds


def _grouped(analysis: "Analysis", width: int, per_chunk: int, tiles: int, groups: int) -> Tiling | Decline:
    """:func:`plan_tiling` with ``groups`` groups."""
    built = []
    for first, count, chunk in group_bounds(tiles, per_chunk, groups):
        geometry = _geometry(analysis, width, (first, first + count - 1) if groups > 1 else None)
        if geometry is None:  # cropped, some tensor would not be reached at all: the group uncropped
            geometry = _geometry(analysis, width, None)
        if isinstance(geometry, Decline):
            return geometry
        probes = analysis.assign_probes(geometry.states)
        built.append(TileGroup(width, first, count, chunk, geometry.states, geometry.windows, probes))
    return Tiling(width, tiles, max(1, min(per_chunk, tiles)), tuple(built))


def _geometry(analysis: "Analysis", width: int, tiles: tuple[int, int] | None) -> TileGeometry | Decline | None:
    """Every probe-form tensor's tile-local state and window, cropped to ``tiles`` when given.

    None where the cropped windows leave a tensor that no mutant of the group reaches (the
    group's mutants change it only outside the tensor, or only at positions no strided op
    reads): the window rules need a reached position to place the next window, so the group
    keeps the windows of all tiles instead."""
    plan = analysis.plan
    geometry = TileGeometry(analysis, width, tiles)
    seq = plan.seq
    # the input's window is the tile itself (encoded as is, never cropped)
    geometry.record(seq.name, Support.for_input(width, 0, width), TileWindow(plan.start, width, seq.length),
                    crop=False)
    for np_ in plan.nodes:
        if not np_.spec.probe_form:
            continue
        if np_.spec.tile is None:
            return Decline("tiling", f"{np_.node.op_type} node {np_.node.name or np_.node.output[0]!r}: its rule "
                                     f"{np_.rule!r} has no tiled form")
        declined = np_.spec.tile(geometry, np_)
        if declined is not None:
            return Decline("tiling", f"{np_.node.op_type} node {np_.node.name or np_.node.output[0]!r}: "
                                     f"{declined.reason}")
        if tiles is not None and any(not geometry.states[out].support.widths.any()
                                     for out in np_.node.output if out in geometry.states):
            return None
    return geometry
