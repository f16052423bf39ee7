"""Pass 3, analyze: propagate support intervals through the graph and choose a rule per node.

See :mod:`yuzu_onnx.plan` for how tensors are represented (probe form, flat, materialized) and
:mod:`yuzu_onnx.rules` for the rule table. For each node in topological order:

- no input depends on the mutated sequence: the ``reference`` rule (the original graph
  computes it once);
- every sequence-dependent input is in probe form: the checks registered for the op are tried
  in table order; the first that accepts records the output's state and returns its plan;
- its input is a deferred flatten: the dense exit;
- otherwise (an input already per mutant, or every check declined): the node runs on
  materialized mutants, ``per-mutant`` when nothing needs materializing, else ``fallback``
  with the reasons every family gave, which the plan table and the warning show.

Probe counts are then chosen by :mod:`yuzu_onnx.probe_sizing` and FLOPs counted by
:mod:`yuzu_onnx.flops`, both from the rule records.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import numpy_helper

from . import rules
from .canonicalize import TensorInfo
from .errors import InternalError, UnsupportedModelError
from .flops import FlopCounter
from .load import SequenceInput
from .plan import ConversionWarning, FlatState, MutState, NodePlan, Plan, SeqState
from .probe_sizing import ProbeSizing
from .rules.base import Decline
from .sensing import DEFAULT_TOLERANCE
from .support import Support
from .trim import reachable_region

__all__ = ["analyze", "warn_fallbacks", "Analysis", "ConversionWarning", "FlatState", "MutState", "NodePlan", "Plan", "SeqState"]


def analyze(model: onnx.ModelProto, infos: dict[str, TensorInfo], seq: SequenceInput, *,
            start: int, end: int, substitutions: str, sensing: str, alpha: float,
            seed: int, tolerance: float = DEFAULT_TOLERANCE, tile_width: int | None = None,
            tiles_per_chunk: int = 1, tile_groups: int | None = None, brute_force: bool = False,
            warn: bool = True, trim: bool = True) -> Plan:
    """Choose a rule for each node of a canonical model and size every probe tensor.

    Emits a :class:`ConversionWarning` for each node that falls back to materialized mutants,
    giving the reasons the rules declined it (unless ``warn`` is false: the converter prices
    several plans and warns only about the one it keeps, :func:`warn_fallbacks`). With ``tile_width`` the plan is tiled
    (:mod:`yuzu_onnx.tiling`; ``tile_groups``: see :func:`~yuzu_onnx.tiling.plan_tiling`); a graph
    that cannot be tiled is refused naming the node. With
    ``brute_force`` the mutants are materialized at the input and every node runs per mutant
    (tiled, such a plan is brute-force ISM in chunks inside one graph). With ``trim`` (default)
    positions of the region whose mutations reach no output are left out of the computation
    (:mod:`yuzu_onnx.trim`; ``plan.requested`` keeps the region asked for).
    """
    def new_plan(first: int, stop: int, like: Plan | None = None) -> Plan:
        """A fresh plan of ``first..stop`` (asked for as ``like`` was, when given)."""
        return Plan(model, infos, seq, first, stop, substitutions, sensing, alpha, seed,
                    states={}, nodes=[], outputs=[o.name for o in model.graph.output], tolerance=tolerance,
                    requested=None if like is None else like.requested,
                    requested_totals=None if like is None else like.requested_totals)

    plan = new_plan(start, end)
    analysis = Analysis(plan)
    analysis.run()  # the whole-sequence form over the region asked for: supports, floor
    reached = reachable_region(plan) if trim else None
    trimmed = reached is not None and reached != (start, end)
    if trimmed or brute_force:
        totals = plan.totals()
        first, stop = reached if trimmed else (start, end)
        plan = new_plan(first, stop)
        if trimmed:
            plan.requested = (start, end)
            plan.requested_totals = {"naive": totals["naive"], "floor": totals["floor"]}
        analysis = Analysis(plan, brute_force=brute_force)
        analysis.run()
    if tile_width is not None:
        from .tiling import plan_tiling, switch_point
        switch = switch_point(analysis, tile_width)
        if switch is not None:  # tile windows would outgrow the tensor from here: run per mutant
            plan = new_plan(plan.start, plan.end, like=plan)
            analysis = Analysis(plan, materialize_at={switch})
            analysis.run()
        tiling = plan_tiling(analysis, tile_width, tiles_per_chunk, tile_groups)
        if isinstance(tiling, Decline):
            raise UnsupportedModelError(f"this model cannot be tiled: {tiling.reason}")
        analysis.adopt(tiling)
    if warn:
        warn_fallbacks(plan, stacklevel=3)
    return plan


def warn_fallbacks(plan: Plan, stacklevel: int = 2) -> None:
    """One :class:`ConversionWarning` per node of ``plan`` that falls back, with its reasons."""
    for np_ in plan.nodes:
        if np_.spec.warns:
            warnings.warn(f"{np_.node.op_type} node {np_.node.name!r} is not accelerated: {np_.note}; "
                          "it runs exactly on materialized mutants (slow)", ConversionWarning,
                          stacklevel=stacklevel + 1)


class Analysis(ProbeSizing, FlopCounter):
    """The analysis of one plan: the static facts rule checks read, and the walk.

    Attributes
    ----------
    plan : Plan
        Filled in place: ``states`` per tensor, one ``NodePlan`` per node.
    inits : dict[str, onnx.TensorProto]
        Initializers (constants) of the canonical graph.
    consumers : dict[str, list[onnx.NodeProto]]
        The nodes reading each tensor.
    output_names : set[str]
        The graph's outputs.
    """

    def __init__(self, plan: Plan, brute_force: bool = False, materialize_at: set[int] = frozenset()):
        self.plan = plan
        self.brute_force = brute_force
        #: nodes (by index) where a tiled plan switches to materialized mutants
        self.materialize_at = set(materialize_at)
        self.graph = plan.model.graph
        self.inits = {t.name: t for t in self.graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.output_names = set(plan.outputs)

    # ---------------------------------------------------------------- facts for the checks
    def shape(self, name: str) -> list[int | None] | None:
        """Inferred shape of a tensor (``None`` dims are symbolic), or ``None`` if unknown."""
        info = self.plan.infos.get(name)
        return None if info is None else info.shape

    def const(self, name: str) -> np.ndarray | None:
        """Value of a constant (initializer), or ``None`` when ``name`` is computed."""
        return numpy_helper.to_array(self.inits[name]) if name in self.inits else None

    def seq_state(self, support: Support, seq_axis: int, dims) -> SeqState:
        """Probe-form state of a tensor with this support, sequence axis and per-sequence dims."""
        return SeqState(support, seq_axis, tuple(int(d) for d in dims), support.slots(self.plan.subs))

    def opset(self) -> int:
        """The model's default-domain opset."""
        return next((o.version for o in self.plan.model.opset_import if o.domain in ("", "ai.onnx")), 1)

    # ---------------------------------------------------------------- main walk
    def run(self) -> None:
        plan = self.plan
        seq = plan.seq
        dims = (seq.alphabet, seq.length) if seq.layout == "NCL" else (seq.length, seq.alphabet)
        plan.side = {i.name for i in self.graph.input if i.name != seq.name and i.name not in self.inits}
        plan.states[seq.name] = self.seq_state(Support.for_input(seq.length, plan.start, plan.end),
                                               seq.seq_axis, dims)
        for index, node in enumerate(self.graph.node):
            plan.nodes.append(self.plan_node(node, index))
        self.assign_probes()
        self.count_flops()

    def plan_node(self, node: onnx.NodeProto, index: int = -1) -> NodePlan:
        states = self.plan.states
        dep = [n for n in node.input if n in states]
        if not dep:
            if any(n in self.plan.side for n in node.input):
                self.plan.side.update(o for o in node.output if o)
            return NodePlan(node, rules.REFERENCE)
        kinds = {type(states[n]) for n in dep}
        if (self.brute_force or index in self.materialize_at) and kinds == {SeqState}:
            for out in node.output:
                if out:
                    states[out] = MutState()
            why = ("brute force: the time model predicts no accelerated form is faster" if self.brute_force else
                   "tile windows would outgrow the tensor from here: mutants are materialized per chunk")
            return NodePlan(node, rules.EXIT, materialize=dep, note=why)
        if kinds == {SeqState}:
            declines: list[Decline] = []
            for check in rules.checks_for(node.op_type):
                result = check(self, node, dep)
                if isinstance(result, NodePlan):
                    return result
                declines.append(result)
            if not declines:
                declines.append(Decline("none", f"no rule handles {node.op_type}"))
            return self.on_mutants(node, dep, declines)
        if FlatState in kinds:
            check = rules.FLAT_CHECKS.get(node.op_type)
            if check is None:
                raise InternalError(f"{node.op_type} node {node.name or node.output[0]!r} reads a deferred "
                                   "flatten, which only dense layers may")
            return check(self, node, dep)
        if SeqState not in kinds:
            return self.on_mutants(node, dep, [])
        mutant = next(n for n in dep if isinstance(states[n], MutState))
        if self.brute_force or self.materialize_at:  # per mutant by plan, not for want of a rule
            for out in node.output:
                if out:
                    states[out] = MutState()
            return NodePlan(node, rules.EXIT, materialize=[n for n in dep if isinstance(states[n], SeqState)],
                            note=f"its input {mutant!r} is per mutant by plan; the others are materialized")
        return self.on_mutants(node, dep, [Decline(
            "none", f"its input {mutant!r} is already per mutant (after an exit or a fallback), so its other "
                    "inputs are materialized to match")])

    def adopt(self, tiling) -> None:
        """Make ``tiling`` the plan's form: node probe counts and FLOPs become the tiles'."""
        self.plan.tiling = tiling
        for index, count in tiling.most_probes().items():
            self.plan.nodes[index].probes = count
        self.plan.reference_flops = 0
        self.count_flops()

    def on_mutants(self, node: onnx.NodeProto, dep: list[str], declines: list[Decline]) -> NodePlan:
        """The node on materialized mutants: ``per-mutant`` when every sequence-dependent input
        already is, else ``fallback`` (its probe-form inputs are materialized)."""
        states = self.plan.states
        for out in node.output:
            if out:
                states[out] = MutState()
        mat = [n for n in dep if isinstance(states[n], SeqState)]
        if mat:
            return NodePlan(node, rules.FALLBACK, materialize=mat, declines=tuple(declines),
                            note="; ".join(d.reason for d in declines))
        return NodePlan(node, rules.PER_MUTANT)
