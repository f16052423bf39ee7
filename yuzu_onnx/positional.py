"""Ops that move, select or concatenate positions and axes without mixing them: Transpose,
Squeeze, Unsqueeze, Slice, Pad, Concat.

Each function maps the logical shape, sequence axis and support of its sequence-dependent
input(s) to those of the output, or returns ``None`` when the op touches the batch axis (or
anything this module does not understand), so the caller falls back. Output position ``j`` of
these ops copies one input position (or a constant), so the support is simply re-indexed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from .ops import attr
from .support import Support


@dataclass(frozen=True)
class Layout:
    """Logical shape without the batch axis, and the sequence axis (counting the batch as 0)."""

    dims: tuple[int, ...]
    seq_axis: int


ConstLookup = Callable[[str], "np.ndarray | None"]


def _norm(axes, rank: int) -> list[int] | None:
    out = [int(a) + rank if int(a) < 0 else int(a) for a in axes]
    return None if any(a <= 0 or a >= rank for a in out) else out


def _int_input(node: onnx.NodeProto, index: int, const: ConstLookup, attr_name: str | None = None):
    if len(node.input) > index and node.input[index]:
        value = const(node.input[index])
        return None if value is None else [int(v) for v in np.asarray(value).ravel()]
    return attr(node, attr_name) if attr_name else None


def transpose(node, lay: Layout, const: ConstLookup) -> Layout | None:
    rank = len(lay.dims) + 1
    perm = attr(node, "perm") or list(reversed(range(rank)))
    if perm[0] != 0:
        return None
    dims = tuple(lay.dims[p - 1] for p in perm[1:])
    return Layout(dims, list(perm).index(lay.seq_axis))


def unsqueeze(node, lay: Layout, const: ConstLookup) -> Layout | None:
    axes = _int_input(node, 1, const, "axes")
    if axes is None:
        return None
    rank_out = len(lay.dims) + 1 + len(axes)
    axes = _norm(axes, rank_out)
    if axes is None:
        return None
    dims, src, seq = [], 0, None
    for ax in range(1, rank_out):
        if ax in axes:
            dims.append(1)
        else:
            dims.append(lay.dims[src])
            src += 1
            if src == lay.seq_axis:
                seq = ax
    return Layout(tuple(dims), seq)


def squeeze(node, lay: Layout, const: ConstLookup) -> Layout | None:
    axes = _int_input(node, 1, const, "axes")
    rank = len(lay.dims) + 1
    if axes is None:
        return None
    axes = _norm(axes, rank)
    if axes is None or lay.seq_axis in axes or any(lay.dims[a - 1] != 1 for a in axes):
        return None
    keep = [ax for ax in range(1, rank) if ax not in axes]
    return Layout(tuple(lay.dims[a - 1] for a in keep), keep.index(lay.seq_axis) + 1)


def slice_positions(node, lay: Layout, const: ConstLookup) -> tuple[Layout, np.ndarray | None] | None:
    """Layout after a Slice and, when it slices the sequence axis, the kept input positions."""
    starts, ends = _int_input(node, 1, const), _int_input(node, 2, const)
    rank = len(lay.dims) + 1
    axes = _int_input(node, 3, const) if len(node.input) > 3 and node.input[3] else list(range(len(starts or [])))
    steps = _int_input(node, 4, const) if len(node.input) > 4 and node.input[4] else [1] * len(axes or [])
    if starts is None or ends is None or axes is None or steps is None:
        return None
    axes = _norm(axes, rank)
    if axes is None:
        return None
    dims = list(lay.dims)
    kept = None
    for start, end, ax, step in zip(starts, ends, axes, steps):
        idx = np.arange(dims[ax - 1])[slice(start, end, step)]
        dims[ax - 1] = len(idx)
        if ax == lay.seq_axis:
            kept = idx
    return Layout(tuple(dims), lay.seq_axis), kept


def pad_positions(node, lay: Layout, const: ConstLookup) -> tuple[Layout, np.ndarray | None] | None:
    """Layout after a Pad and the input position each output position copies (-1: constant)."""
    pads = _int_input(node, 1, const, "pads")
    mode = attr(node, "mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    rank = len(lay.dims) + 1
    if pads is None or mode not in ("constant", "edge", "reflect"):
        return None
    axes = _int_input(node, 3, const) if len(node.input) > 3 and node.input[3] else list(range(rank))
    axes = [a + rank if a < 0 else a for a in axes]
    n = len(axes)
    dims = list(lay.dims)
    source = None
    for i, ax in enumerate(axes):
        before, after = pads[i], pads[i + n]
        if ax == 0:
            if before or after:
                return None
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


def concat(node, layouts: list[Layout]) -> Layout | None:
    """Layout after concatenating sequence tensors (all inputs must be sequence-dependent)."""
    first = layouts[0]
    rank = len(first.dims) + 1
    axis = _norm([attr(node, "axis", 1)], rank)
    if axis is None or any(lay.seq_axis != first.seq_axis for lay in layouts):
        return None
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
