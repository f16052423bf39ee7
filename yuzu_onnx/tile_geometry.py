"""Geometry of tiled plans: tile-local states and windows, and the helpers rule families use to
move them through their ops (see :mod:`yuzu_onnx.tiling` for the idea)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .plan import SeqState, TileWindow
from .support import Support

if TYPE_CHECKING:
    from .analyze import Analysis

_EMPTY = Support.for_input(1, 0, 0)


class TileGeometry:
    """The tile-local states and windows being computed for one tile width.

    Attributes
    ----------
    analysis : Analysis
        The (whole-sequence) analysis whose rules are tiled.
    width : int
        ``T``, mutated positions per tile.
    states : dict[str, SeqState]
        Tile-local states (window dims, local support, ``K``).
    windows : dict[str, TileWindow]
    tiles : tuple[int, int] or None
        ``(first, last)``: the group of tiles (inclusive) the windows serve; each recorded
        window is cropped to the positions inside the tensor for at least one of them. None:
        no cropping (windows as wide as the tiles' reach).
    """

    def __init__(self, analysis: "Analysis", width: int, tiles: tuple[int, int] | None = None):
        self.analysis = analysis
        self.plan = analysis.plan
        self.width = width
        self.tiles = tiles
        self.states: dict[str, SeqState] = {}
        self.windows: dict[str, TileWindow] = {}

    def full(self, name: str) -> SeqState:
        """The tensor's whole-sequence state (its real dims and sequence axis)."""
        return self.plan.states[name]

    def record(self, name: str, support: Support, window: TileWindow, crop: bool = True) -> None:
        """Record a tensor's tile-local state: its real dims with the window on the sequence axis
        (cropped to the group's tiles, :func:`cropped`, unless ``crop`` is false: an op that
        passes its input's probes on as they are, renumbered, keeps their width)."""
        if self.tiles is not None and crop:
            support, window = cropped(support, window, *self.tiles)
        full = self.full(name)
        dims = list(full.dims)
        dims[full.seq_axis - 1] = support.length
        self.states[name] = SeqState(support, full.seq_axis, tuple(dims), support.slots(self.plan.subs))
        self.windows[name] = window

    def width_of(self, name: str) -> int:
        return self.states[name].support.length


def cropped(support: Support, window: TileWindow, first: int, last: int) -> tuple[Support, TileWindow]:
    """``support`` and ``window`` without the window positions that lie outside the tensor for
    every tile ``first..last``: tile ``tau`` sees window position ``w`` at ``start + tau * shift
    + w``, inside for some tile iff ``w >= -(start + last * shift)`` and ``w <= length - 1 -
    (start + first * shift)``. Such positions would only be computed and dropped (a tensor's
    edge then reads the op's padding from the reference window, as beyond any window). Kept
    whole where no position, or no position a mutant of the tiles reaches, would remain (the
    tiles' mutants reach this tensor only outside it: a branch cropped away at the edge)."""
    low = max(0, -(window.start + last * window.shift))
    high = min(support.length - 1, window.length - 1 - (window.start + first * window.shift))
    if low > high or (low == 0 and high == support.length - 1) or not support.widths[low:high + 1].any():
        return support, window  # (the next op's window follows the reached positions: keep some)
    return (Support(support.lo[low:high + 1], support.hi[low:high + 1]),
            TileWindow(window.start + low, window.shift, window.length))


def shifted(support: Support, offset: int, width: int) -> Support:
    """``support`` placed at ``offset`` inside a window of ``width`` positions (empty elsewhere)."""
    lo = np.full(width, _EMPTY.lo[0], dtype=np.int64)
    hi = np.full(width, _EMPTY.hi[0], dtype=np.int64)
    lo[offset:offset + support.length] = support.lo
    hi[offset:offset + support.length] = support.hi
    return Support(lo, hi)


def aligned(geometry: TileGeometry, names: list[str]) -> tuple[TileWindow, int] | str:
    """The hull window of several tensors' windows and its width, or why they cannot share one
    (different shifts per tile: different strides)."""
    windows = [geometry.windows[n] for n in names]
    if len({w.shift for w in windows}) != 1 or len({w.length for w in windows}) != 1:
        return (f"its inputs {', '.join(map(repr, names))} move by different steps per tile "
                "(different strides or lengths)")
    start = min(w.start for w in windows)
    end = max(w.start + geometry.width_of(n) for w, n in zip(windows, names))
    return TileWindow(start, windows[0].shift, windows[0].length), end - start


def union_in(geometry: TileGeometry, names: list[str], window: TileWindow, width: int) -> Support:
    """Union of the tensors' tile-local supports, each moved into ``window``."""
    support = None
    for name in names:
        moved = shifted(geometry.states[name].support, geometry.windows[name].start - window.start, width)
        support = moved if support is None else support.union(moved)
    return support
