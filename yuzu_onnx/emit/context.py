"""Shared state of the emit pass: where each tensor's probe form or mutant form lives.

Probe form ("hybrid sequences"): a tensor ``F`` of shape ``(N*P, *dims)``; entry ``(n, p)`` at
sequence position ``j`` holds the value the tensor takes for the unique mutant ``m`` with
``m mod P == p`` among the mutants reaching ``j``, or the reference value where no such
mutant reaches ``j``. Since the probes are just a larger batch of sequences, every local op of
the original graph runs on them unchanged.
"""

from __future__ import annotations

import numpy as np
from onnx import numpy_helper

from ..plan import MutState, Plan, SeqState
from ..errors import InternalError
from ..graph_builder import GraphBuilder


#: Cache entries (by their key's kind) that hold values emitted outside the Loops or plan-wide
#: facts, valid in every group's body.
_OUTSIDE_LOOPS = ("ref_pad", "batch_n", "residual_w", "dense_w")


class EmitContext:
    """Maps original tensor names to the emitted tensors that represent them.

    Attributes
    ----------
    plan : Plan
    b : GraphBuilder
    probe : dict[(str, int), str]
        ``(tensor, P)`` -> emitted probe-form tensor ``(N*P, *dims)``.
    carried : dict[(str, int), str]
        ``(tensor, P)`` -> the probe form with the reference carried along as one more probe,
        ``(N*(P+1), *dims)``, row ``P`` of each sequence the reference (whole-form plans; see
        :func:`yuzu_onnx.emit.probes.reprobe_carried`).
    mut : dict[str, str]
        tensor -> emitted materialized tensor ``(N*M, *dims)``.
    """

    def __init__(self, plan: Plan, builder: GraphBuilder):
        self.plan = plan
        self.b = builder
        self.probe: dict[tuple[str, int], str] = {}
        self.carried: dict[tuple[str, int], str] = {}
        self.mut: dict[str, str] = {}
        self._ref_b: dict[str, str] = {}
        self._repeated: dict[tuple[str, int], str] = {}
        #: The group of tiles being emitted (:class:`~yuzu_onnx.plan.TileGroup`; the last one
        #: after the Loops), or None for a whole-sequence plan. In a tiled plan the probe tensors
        #: are those of one chunk of ``per_chunk`` tiles, ``(N * per_chunk * P, *window dims)``,
        #: built inside a Loop body.
        self.tiling = None if plan.tiling is None else plan.tiling.groups[0]
        #: Tiled plans: the chunk's tile indices, an int64 ``(per_chunk,)`` tensor of the body.
        self.tau: str | None = None
        #: Tiled plans: per-tensor caches of reference windows and padded references.
        self.cache: dict[tuple, str] = {}
        #: Tiled plans: nodes that must run outside the Loop body (once per call).
        self.outer_nodes: list = []
        #: Shapes the emitter knows and shape inference cannot tell (a Loop's outputs).
        self.value_info: list = []
        #: Probe-form states of tensors the emitter adds that the plan does not know (a taps
        #: head's block outputs, reprobed before its shifted sum); read by :meth:`seq`.
        self.local_states: dict[str, SeqState] = {}
        #: Reprobe Transposes that swap a 3-D probe tensor's channel and length axes in its
        #: unfolded view (output name -> ``(C, L)``); :mod:`yuzu_onnx.emit.channels_last` folds
        #: those next to NCHWc Convs into the Convs' reorders.
        self.swapped: dict[str, tuple[int, int]] = {}

    def enter_group(self, group) -> None:
        """Start emitting ``group``'s Loop body: its geometry and probe counts, and none of the
        tensors or cached windows of another group's body (values emitted outside the Loops,
        the padded references, the batch size and folded weights, are kept)."""
        self.tiling = group
        for index, count in group.probes.items():
            self.plan.nodes[index].probes = count
        self._forget_body()
        self.cache = {key: value for key, value in self.cache.items()
                      if isinstance(key, str) or key[0] in _OUTSIDE_LOOPS}

    def leave_groups(self) -> None:
        """After the last group's Loop: nothing of a body is visible any more, and the node
        plans' probe counts are the plan's (the most any group uses)."""
        self._forget_body()
        for index, count in self.plan.tiling.most_probes().items():
            self.plan.nodes[index].probes = count

    def _forget_body(self) -> None:
        """Drop the tensors a Loop body emitted (probe, carried and mutant forms, reference
        broadcasts, repeated side inputs): no other graph may read them."""
        self.probe, self.carried, self.mut = {}, {}, {}
        self._ref_b, self._repeated = {}, {}

    def plan_const(self, name: str):
        """Value of a constant of the canonical graph (an initializer), or None."""
        if not hasattr(self, "_inits"):
            self._inits = {t.name: t for t in self.plan.model.graph.initializer}
        return numpy_helper.to_array(self._inits[name]) if name in self._inits else None

    @property
    def mutants(self) -> int:
        """Mutants per sequence in a per-mutant tensor: all ``M``, or a tiled chunk's ``c * S * T``."""
        if self.tiling is None:
            return self.plan.mutants
        return self.tiling.per_chunk * self.plan.subs * self.tiling.width

    def state(self, name: str):
        return self.plan.states.get(name)

    def seq(self, name: str) -> SeqState:
        """The probe-form state of ``name``: in a tiled plan the tile-local one (window dims)."""
        st = self.local_states.get(name) or (self.tiling.states if self.tiling is not None else self.plan.states)[name]
        if not isinstance(st, SeqState):
            raise InternalError(f"tensor {name!r} is used in probe form but was planned as {type(st).__name__}")
        return st

    def is_seq(self, name: str) -> bool:
        """Whether ``name`` is in probe form (also in a tiled plan: the plan's states decide)."""
        return isinstance(self.plan.states.get(name), SeqState)

    def is_mut(self, name: str) -> bool:
        return isinstance(self.plan.states.get(name), MutState)

    def ref_broadcast(self, name: str) -> str:
        """The reference tensor with a unit probe axis: ``(N, 1, *dims)``; in a tiled plan the
        reference over each tile's window, ``(N * per_chunk, 1, *window dims)``."""
        if name not in self._ref_b:
            if self.tiling is not None:
                from .tiles import reference_window  # tiles builds on this module
                width = self.seq(name).dims[self.seq(name).seq_axis - 1]
                window = reference_window(self, name, 0, width - 1)
                self._ref_b[name] = self.b.reshape(window, [-1, 1, *self.seq(name).dims], "ref_w")
            else:
                self._ref_b[name] = self.b.unsqueeze(name, [1], "ref")
        return self._ref_b[name]

    def repeat_side(self, name: str, count: int) -> str:
        """A batch-carrying tensor that does not depend on the sequence, repeated ``count`` times
        per sequence to match probe or mutant batches: ``(N, *dims)`` -> ``(N*count, *dims)``."""
        key = (name, count)
        if key not in self._repeated:
            dims = [int(d) for d in self.plan.infos[name].shape[1:]]
            b = self.b
            expanded = b.op("Expand", [b.unsqueeze(name, [1], "side_b"), b.ints([1, count] + [1] * len(dims))], "side")
            self._repeated[key] = b.reshape(expanded, [-1, *dims], "side")
        return self._repeated[key]

    def unfold(self, folded: str, name: str, probes: int) -> str:
        """``(N*P, *dims)`` -> ``(N, P, *dims)``."""
        return self.b.reshape(folded, [-1, probes, *self.seq(name).dims], "unfold")

    def fold(self, unfolded: str, name: str) -> str:
        """``(N, P, *dims)`` (or any shape with the same trailing dims) -> ``(N*P, *dims)``."""
        return self.b.reshape(unfolded, [-1, *self.seq(name).dims], "fold")

    def seq_axis_shape(self, name: str) -> list[int]:
        """Shape that places a length-``L`` vector on the sequence axis of ``dims``."""
        st = self.seq(name)
        trailing = len(st.dims) - st.seq_axis
        return [st.dims[st.seq_axis - 1]] + [1] * trailing

    @property
    def dtype(self) -> np.dtype:
        return self.b.float_dtype
