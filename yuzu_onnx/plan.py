"""The conversion plan: representation of each tensor and the rule chosen for each node.

Representations of a sequence-dependent tensor ``t`` with logical shape ``(N, *dims)``:

- ``SeqState`` (probe form): ``N*P`` hybrid sequences; probe ``p`` at position ``j`` holds the
  value for the unique mutant ``m = p (mod P)`` that reaches ``j`` (or the reference value).
  Unique because at most ``K <= P`` consecutive mutants reach any position.
- ``MutState`` (materialized): the tensor evaluated on every mutant, batch ``N * M``.
- ``FlatState``: a flattened ``SeqState`` awaiting its dense layer (the dense exit).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import numpy_helper

from .canonicalize import TensorInfo
from .load import SequenceInput
from .support import Support

if TYPE_CHECKING:
    from .rules.base import Decline, Rule


class ConversionWarning(UserWarning):
    """An op is not accelerated and runs on materialized mutants (exact, but slow)."""


@dataclass
class SeqState:
    support: Support
    seq_axis: int
    dims: tuple[int, ...]  # logical shape without the batch axis
    slots: int  # K
    probes: int = 0  # P, assigned after supports are known


@dataclass
class MutState:
    pass


@dataclass(frozen=True)
class TileWindow:
    """Where the window of tile ``tau`` lies along a tensor's sequence axis (tiled plans).

    Window positions ``w = 0..width-1`` of tile ``tau`` are the tensor's positions
    ``start + tau * shift + w``; positions outside ``0..length-1`` are *out of range*: they
    exist only in the tile's window, and every op that reads across positions sees there
    the value its padding would give (see :mod:`yuzu_onnx.tiling`).
    """

    start: int  # virtual position of tile 0's first window position
    shift: int  # positions the window moves from one tile to the next
    length: int  # the tensor's real sequence length

    def positions(self, tiles: np.ndarray, width: int) -> np.ndarray:
        """``(len(tiles), width)`` virtual positions of the given tiles' windows."""
        return self.start + np.asarray(tiles)[:, None] * self.shift + np.arange(width)[None, :]


@dataclass
class TileGroup:
    """A run of consecutive tiles sharing one geometry: one ONNX ``Loop`` of the emitted graph.

    Windows move by a fixed step from tile to tile, so one geometry serves every tile; a group
    crops each window to the positions inside the tensor for at least one of its tiles
    (:func:`yuzu_onnx.tiling.plan_tiling`), so tiles near the sequence's ends compute fewer
    positions that lie outside it.

    Attributes
    ----------
    width : int
        ``T``: mutated positions per tile (the plan's last tile may run past the region's end;
        its extra mutants are computed and dropped).
    first : int
        Index of the group's first tile in the region.
    tiles : int
        Number of tiles in the group.
    per_chunk : int
        Tiles per iteration of the group's Loop (the working set is one chunk).
    states : dict[str, SeqState]
        Tile-local probe-form state of each tensor: ``dims`` with the window width on the
        sequence axis, the support in tile-local mutated positions ``0..T-1``, ``K`` of one
        tile and its probe count.
    windows : dict[str, TileWindow]
        Where each tensor's window lies for each tile.
    probes : dict[int, int]
        Probes per tile of each probe-form node's output, by the node's index in ``plan.nodes``.
    """

    width: int
    first: int
    tiles: int
    per_chunk: int
    states: dict
    windows: dict
    probes: dict

    @property
    def chunks(self) -> int:
        """Loop iterations: ``ceil(tiles / per_chunk)`` (the last chunk may hold phantom tiles)."""
        return -(-self.tiles // self.per_chunk)

    @property
    def last_computed(self) -> int:
        """Index of the last tile the group's Loop computes (phantom tiles of its last chunk
        included: their windows are read and their results dropped)."""
        return self.first + self.chunks * self.per_chunk - 1

    def reads(self, name: str, first: int, last: int) -> tuple[int, int]:
        """Smallest and largest virtual position of ``name`` that window positions
        ``first..last`` take over the tiles the group's Loop computes (phantom tiles included)."""
        window = self.windows[name]
        return (window.start + self.first * window.shift + first,
                window.start + self.last_computed * window.shift + last)


@dataclass
class Tiling:
    """A tiled plan: the region split into tiles of ``width`` mutated positions, each tile's
    probes cropped to the positions its mutants can change, tiles run ``per_chunk`` at a time,
    in one or more groups of consecutive tiles (:class:`TileGroup`, one Loop each).

    Attributes
    ----------
    width : int
        ``T``: mutated positions per tile.
    tiles : int
        Number of tiles covering the region.
    per_chunk : int
        Tiles per Loop iteration (a group with fewer tiles runs them all in one iteration).
    groups : tuple[TileGroup, ...]
        The groups, in tile order, covering tiles ``0..tiles-1``.
    """

    width: int
    tiles: int
    per_chunk: int
    groups: tuple

    @property
    def chunks(self) -> int:
        """Loop iterations over all groups."""
        return sum(g.chunks for g in self.groups)

    def most_probes(self) -> dict[int, int]:
        """The most probes any group gives each probe-form node (by its index in ``plan.nodes``):
        the plan table's ``P``."""
        most: dict[int, int] = {}
        for g in self.groups:
            for index, count in g.probes.items():
                most[index] = max(most.get(index, 0), count)
        return most

    def positions(self, name: str) -> int:
        """Position-evaluations of a probe tensor per sequence: ``sum over groups of tiles x
        P_tile x W`` (window width)."""
        total = 0
        for g in self.groups:
            st = g.states[name]
            total += g.tiles * st.probes * st.dims[st.seq_axis - 1]
        return total


@dataclass
class FlatState:
    source: str  # the SeqState tensor that was flattened


@dataclass
class NodePlan:
    """The rule chosen for one node of the canonical graph, and what it costs."""

    node: onnx.NodeProto
    spec: "Rule"  # the rule's record (see :mod:`yuzu_onnx.rules`)
    probes: int = 0  # P of the sequence-dependent output (probe-form rules)
    sensing: str = "spike"
    conv_impl: str = "conv"  # "taps": per-tap MatMul then shifted sum (few output channels)
    materialize: list[str] = field(default_factory=list)
    naive_flops: int = 0
    converted_flops: int = 0
    floor_flops: int = 0
    width: int = 0  # support width (positions) of the output
    note: str = ""
    #: gaussian sensing: the sized design (:class:`yuzu_onnx.sensing.GaussianDesign`)
    design: object | None = None
    #: why each rule family tried on this node declined it (for fallbacks: the true reason)
    declines: tuple["Decline", ...] = ()
    #: a Conv that a residual Add folds into: the tap whose weight carries the identity
    #: (:mod:`yuzu_onnx.rules.residual`)
    identity_tap: int | None = None
    #: a residual Add: the Conv output whose probe form already holds the sum
    folded_into: str | None = None

    @property
    def rule(self) -> str:
        """Name of the chosen rule (``"window"``, ``"fallback"``, ...)."""
        return self.spec.name


@dataclass
class Plan:
    """Everything the emit pass needs, computed without running the model."""

    model: onnx.ModelProto
    infos: dict[str, TensorInfo]
    seq: SequenceInput
    start: int
    end: int
    substitutions: str  # "alt" or "all"
    sensing: str
    alpha: float
    seed: int
    states: dict[str, object]
    nodes: list[NodePlan]
    outputs: list[str]
    reference_flops: int = 0
    #: gaussian sensing: bound on each conv's predicted relative float32 decoding error
    tolerance: float = 1e-4
    #: Tensors computed from the model's other (non-sequence) inputs: they carry the batch axis
    #: and are repeated over probes or mutants wherever they meet sequence-dependent tensors.
    side: set[str] = field(default_factory=set)
    #: Memory of the converted graph (:class:`yuzu_onnx.memory.MemoryEstimate`), set after emit.
    memory: object | None = None
    #: The tiled plan (:class:`Tiling`), or None for the whole-sequence probe form.
    tiling: Tiling | None = None
    #: How the form was chosen (:class:`yuzu_onnx.planner.Choice`), set by ``convert``.
    choice: object | None = None
    #: The region the user asked for, where it is wider than ``start..end``: mutations of its
    #: positions outside ``start..end`` reach no output (a crop removes all they change), so
    #: their ``y_ism`` equals ``y0`` and nothing is computed for them (see :func:`reachable_region`).
    requested: tuple[int, int] | None = None
    #: Naive and floor FLOPs of the requested region (set with ``requested``): the trimmed
    #: plan's own count would credit the trimming to the floor.
    requested_totals: dict[str, int] | None = None

    @functools.cached_property
    def non_finite_weights(self) -> bool:
        """Whether any initializer holds NaN or +-inf (only then can finite inputs give +-inf
        activations, short of float32 overflow)."""
        return any(not np.isfinite(numpy_helper.to_array(t)).all() for t in self.model.graph.initializer
                   if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                                      onnx.TensorProto.BFLOAT16))

    @property
    def subs(self) -> int:
        """``S``: substitutions computed per position."""
        return self.seq.alphabet - 1 if self.substitutions == "alt" else self.seq.alphabet

    @property
    def region(self) -> int:
        return self.end - self.start

    @property
    def mutants(self) -> int:
        """``M``: mutants per sequence the graph computes."""
        return self.subs * self.region

    @property
    def requested_start(self) -> int:
        """First position of the region ``y_ism`` covers (``start`` unless trimmed)."""
        return self.start if self.requested is None else self.requested[0]

    @property
    def requested_end(self) -> int:
        """End (exclusive) of the region ``y_ism`` covers (``end`` unless trimmed)."""
        return self.end if self.requested is None else self.requested[1]

    @property
    def requested_region(self) -> int:
        return self.requested_end - self.requested_start

    @property
    def requested_mutants(self) -> int:
        """Mutants per sequence ``y_ism`` holds (naive ISM runs all of them)."""
        return self.subs * self.requested_region

    def totals(self) -> dict[str, int]:
        """Summed FLOPs: naive ISM, converted graph (incl. the reference pass), floor (naive
        and floor of the requested region where the plan is trimmed)."""
        naive = sum(n.naive_flops for n in self.nodes) + self.reference_flops
        conv = sum(n.converted_flops for n in self.nodes) + self.reference_flops
        floor = sum(n.floor_flops for n in self.nodes) + self.reference_flops
        totals = {"naive": naive, "converted": conv, "floor": floor}
        if self.requested_totals is not None:
            totals.update(self.requested_totals)
        return totals
