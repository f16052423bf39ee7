"""Shared state of the emit pass: where each tensor's probe form or mutant form lives.

Probe form ("hybrid sequences"): a tensor ``F`` of shape ``(N*P, *dims)``; entry ``(n, p)`` at
sequence position ``j`` holds the value the tensor takes for the unique mutant ``m`` with
``m mod P == p`` among the mutants reaching ``j``, or the reference value where no such
mutant reaches ``j``. Since the probes are just a larger batch of sequences, every local op of
the original graph runs on them unchanged.
"""

from __future__ import annotations

import numpy as np

from ..plan import MutState, Plan, SeqState
from ..errors import InternalError
from ..graph_builder import GraphBuilder


class EmitContext:
    """Maps original tensor names to the emitted tensors that represent them.

    Attributes
    ----------
    plan : Plan
    b : GraphBuilder
    probe : dict[(str, int), str]
        ``(tensor, P)`` -> emitted probe-form tensor ``(N*P, *dims)``.
    mut : dict[str, str]
        tensor -> emitted materialized tensor ``(N*M, *dims)``.
    """

    def __init__(self, plan: Plan, builder: GraphBuilder):
        self.plan = plan
        self.b = builder
        self.probe: dict[tuple[str, int], str] = {}
        self.mut: dict[str, str] = {}
        self._ref_b: dict[str, str] = {}
        self._repeated: dict[tuple[str, int], str] = {}

    def state(self, name: str):
        return self.plan.states.get(name)

    def seq(self, name: str) -> SeqState:
        st = self.plan.states[name]
        if not isinstance(st, SeqState):
            raise InternalError(f"tensor {name!r} is used in probe form but was planned as {type(st).__name__}")
        return st

    def is_seq(self, name: str) -> bool:
        return isinstance(self.plan.states.get(name), SeqState)

    def is_mut(self, name: str) -> bool:
        return isinstance(self.plan.states.get(name), MutState)

    def ref_broadcast(self, name: str) -> str:
        """The reference tensor with a unit probe axis: ``(N, 1, *dims)``."""
        if name not in self._ref_b:
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
