"""Choosing the number of probes ``P`` of each probe-form tensor (a mixin of the analyzer)."""

from __future__ import annotations

import math


from . import cost
from .errors import UnsupportedModelError
from .ops import prod
from .plan import NodePlan, SeqState
from .sensing import GROWTH, MAX_STEPS, GaussianDesign, circulant_vector, decoder, predicted_error, size_design


class ProbeSizing:
    """Probe counts: at least ``K`` everywhere; where ``K`` grows (convs, pools) the time model
    in :mod:`yuzu_onnx.cost` picks between sizing for the whole cheap segment that follows and
    sizing for the op alone with a reprobe later.

    Expects ``self.plan``, ``self.consumers``, ``self.output_names``, ``self.shape`` and
    ``self.node_flops`` from the class it is mixed into.
    """

    def assign_probes(self, states: dict | None = None) -> dict[int, int]:
        """Set ``probes`` of every probe-form state in ``states`` (default: the plan's own,
        whose node plans also get their ``probes``); returns each node's probe count by its
        index in ``plan.nodes``. The tiled plan sizes its tile-local states this way too."""
        plan = self.plan
        record = states is None
        states = plan.states if states is None else states
        self.sizing_states = states
        states[plan.seq.name].probes = plan.subs
        chosen: dict[int, int] = {}
        for index, np_ in enumerate(plan.nodes):
            node = np_.node
            out = node.output[0] if node.output else None
            st = states.get(out)
            if not isinstance(st, SeqState):
                continue
            p_in = max(states[n].probes for n in node.input if isinstance(states.get(n), SeqState))
            if not np_.spec.widens:
                st.probes = max(p_in, max(st.slots, 1))
            elif np_.sensing == "gaussian":
                # the input is reprobed to these probes too, so they must cover its K as well
                k_in = max(states[n].slots for n in node.input if isinstance(states.get(n), SeqState))
                need = max(math.ceil(plan.alpha * st.slots), self.segment_slots(self.segment(out)), k_in, 1)
                np_.design = self.gaussian_design(np_, need, max(st.slots, 1))
                st.probes = np_.design.probes
            elif p_in >= st.slots:
                st.probes = p_in
            else:
                st.probes = self.choose_probes(np_, p_in)
            chosen[index] = st.probes
            if record:
                np_.probes = st.probes
        self.sizing_states = plan.states
        return chosen

    def gaussian_design(self, np_: NodePlan, need: int, slots: int) -> GaussianDesign:
        """Size a gaussian conv's probes so its predicted decoding error meets the tolerance.

        Raises
        ------
        UnsupportedModelError
            If even 1.25^5 times more probes cannot meet it.
        """
        plan = self.plan
        info = plan.infos.get(np_.node.input[1])
        w = info.shape if info is not None else None
        reduction = int(w[1]) * int(prod(w[2:])) if w and len(w) >= 3 and None not in w else 1
        design = size_design(need, slots, plan.seed, plan.nodes.index(np_), reduction, plan.tolerance)
        if design is None:
            a = circulant_vector(need, plan.seed, plan.nodes.index(np_))
            cond = decoder(a, slots)[1]
            raise UnsupportedModelError(
                f"gaussian sensing cannot meet the tolerance {plan.tolerance:g} at node "
                f"{np_.node.name or np_.node.output[0]!r} ({np_.node.op_type}, K = {slots} unknowns per "
                f"position): with {need} probes the decoder's condition number is {cond:.3g}, predicted "
                f"float32 error {predicted_error(cond, need, reduction):.2g}, and up to "
                f"{GROWTH ** (MAX_STEPS - 1):.1f}x more probes do not bring it under; use structured "
                "sensing (exact) or a larger tolerance")
        return design

    def choose_probes(self, np_: NodePlan, p_in: int) -> int:
        """Probes for a widening op: enough for its whole cheap segment (no later reprobe), or
        just enough for itself and a reprobe later, whichever the time model prefers."""
        out = np_.node.output[0]
        seg = self.segment(out)
        options = set(cost.probe_candidates(p_in, self.segment_slots(seg)))
        options.update(cost.probe_candidates(p_in, self.sizing_states[out].slots))
        return min(sorted(options), key=lambda p: self.segment_seconds(np_, p_in, p, seg))

    def segment_seconds(self, np_: NodePlan, p_in: int, probes: int, seg: list[str]) -> float:
        states = self.sizing_states
        x = np_.node.input[0]
        seconds = cost.reprobe_seconds(p_in, probes, prod(states[x].dims))
        seconds += cost.conv_seconds(probes, self.node_flops(np_.node), self.conv_buffer(np_))
        current, prev = probes, seg[0]
        for i, name in enumerate(seg[1:], start=1):
            if states[name].slots > current:
                target = cost.round_probes(current, self.segment_slots(seg[i:]))
                seconds += cost.reprobe_seconds(current, target, prod(states[prev].dims))
                current = target
            seconds += cost.elementwise_seconds(current, prod(states[name].dims))
            prev = name
        return seconds

    def conv_buffer(self, np_: NodePlan) -> int:
        """Elements per probe of the buffer a Conv writes besides its output (im2col or taps)."""
        node = np_.node
        if node.op_type != "Conv":
            return 0
        x, w = self.sizing_states[node.input[0]], self.shape(node.input[1])
        l_out = self.sizing_states[node.output[0]].dims[-1]
        if np_.conv_impl == "taps":
            return 3 * int(w[0]) * int(w[2]) * x.dims[-1]
        return x.dims[0] * int(w[2]) * l_out

    def segment(self, name: str) -> list[str]:
        """``name`` and the chain of cheap ops (activations, pools) that follows it."""
        states = self.sizing_states
        chain = [name]
        by_node = {id(n.node): n for n in self.plan.nodes}
        while True:
            users = self.consumers.get(name, [])
            if len(users) != 1 or name in self.output_names:
                return chain
            user = by_node[id(users[0])]
            if not user.spec.probe_form or user.node.op_type == "Conv":
                return chain
            if [n for n in user.node.input if n in states] != [name]:
                return chain
            name = user.node.output[0]
            chain.append(name)

    def segment_slots(self, seg: list[str]) -> int:
        return max(max(self.sizing_states[n].slots for n in seg), 1)

    # ---------------------------------------------------------------- FLOPs
