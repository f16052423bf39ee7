"""What a rule is: a typed record, and the reason a rule gives when it declines a node.

A rule family (one module of :mod:`yuzu_onnx.rules`) holds, for the ops it understands:

- *checks*: ``check(analysis, node, dep) -> NodePlan | Decline``. A check reads the node,
  the states of its inputs (:mod:`yuzu_onnx.plan`) and the static facts of the analysis; when
  the node fits it records the output's state (support, dims) and returns the node's plan,
  otherwise it returns a :class:`Decline` saying why, at the point where it decides;
- *rules*: one :class:`Rule` record per outcome a check can choose, with its plan-table label,
  the representation its output takes, its FLOP model and its emitter.

The analysis, the FLOP count, probe sizing, the plan table and the emit pass read these
records; none of them knows rule names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

import onnx

from ..errors import InternalError

if TYPE_CHECKING:  # imported for type hints only: the analysis imports the rules
    from ..analyze import Analysis
    from ..emit.context import EmitContext
    from ..plan import NodePlan
    from ..tile_geometry import TileGeometry

#: Representations of a node's sequence-dependent output (see :mod:`yuzu_onnx.plan`).
FORMS = ("reference", "probe", "flat", "mutant")


@dataclass(frozen=True)
class Decline:
    """Why a rule does not apply to a node.

    Attributes
    ----------
    family : str
        The rule family that declined (module name, e.g. ``"window"``).
    reason : str
        A sentence fragment naming the tensor, op attribute or shape at fault, e.g.
        ``"its scale 'bn.weight' is computed in the graph, not a constant"``.
    """

    family: str
    reason: str

    def __str__(self) -> str:
        return self.reason


FlopModel = Callable[["Analysis", "NodePlan", int], "tuple[int, int]"]
Emitter = Callable[["EmitContext", "NodePlan"], None]
CheckResult = Union["NodePlan", Decline]
Check = Callable[["Analysis", onnx.NodeProto, "list[str]"], CheckResult]
TileRule = Callable[["TileGeometry", "NodePlan"], "Decline | None"]


@dataclass(frozen=True)
class Rule:
    """One way of computing a node of the original graph in the ISM graph.

    Attributes
    ----------
    name : str
        Key stored in :attr:`NodePlan.rule` (``"window"``, ``"dense-exit"``, ...).
    label : str
        Text of the plan table's rule column.
    form : str
        Representation of the node's sequence-dependent outputs, one of :data:`FORMS`:
        ``probe`` (``N*P`` hybrid sequences), ``flat`` (a deferred flatten awaiting its dense
        layer), ``mutant`` (``N*M`` materialized mutants) or ``reference`` (computed once by
        the original graph).
    flops : callable
        ``flops(analysis, node_plan, per_sequence) -> (converted, floor)``: FLOPs (2 x MACs) of
        the node in the converted graph and the windowed floor, per sequence, given the node's
        FLOPs on one sequence. Naive ISM's are ``mutants x per_sequence`` for every rule.
    emit : callable or None
        ``emit(ctx, node_plan)`` appends the node's ISM computation to the graph. ``None`` only
        where nothing is emitted: the reference (the original node already computes it) and
        the deferred flatten (its dense layer reads the probe tensor directly).
    widens : bool
        Probe form only: the output can be reached by more mutants than the input (convs,
        pools), so its probe count is chosen by the time model; otherwise the output keeps
        the input's probes (raised to its own ``K`` where inputs of different reach meet).
    materializes : bool
        The node runs on materialized mutants of its sequence-dependent inputs.
    warns : bool
        The node is an unplanned fallback: the conversion warns, giving the decline reasons.
    tile : callable or None
        Probe form only: ``tile(geometry, node_plan) -> Decline | None`` records the output's
        tile-local state and window (:mod:`yuzu_onnx.tiling`), or says why the node cannot be
        tiled. ``None``: the rule has no tiled form (the graph keeps the whole-sequence form).
    """

    name: str
    label: str
    form: str
    flops: FlopModel
    emit: Emitter | None
    widens: bool = False
    materializes: bool = False
    warns: bool = False
    tile: TileRule | None = None

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise InternalError(f"rule {self.name!r} declares the unknown form {self.form!r}")
        if self.emit is None and self.form not in ("reference", "flat"):
            raise InternalError(f"rule {self.name!r} computes a {self.form} tensor but has no emitter")

    @property
    def probe_form(self) -> bool:
        """Whether the node's output stays in probe form."""
        return self.form == "probe"


def no_flops(analysis: "Analysis", np_: "NodePlan", per_sequence: int) -> tuple[int, int]:
    """FLOP model of nodes that add no Conv/MatMul work of their own (moves, activations)."""
    return 0, 0


def probe_positions(analysis: "Analysis", name: str) -> int:
    """Position-evaluations of a probe tensor per sequence: ``P x L`` in the whole-sequence
    form, ``tiles x P_tile x W`` (window width) in a tiled plan, summed over its groups."""
    plan = analysis.plan
    if plan.tiling is not None:
        return plan.tiling.positions(name)
    st = plan.states[name]
    return st.probes * st.dims[st.seq_axis - 1]


def probe_flops(analysis: "Analysis", np_: "NodePlan", per_sequence: int) -> tuple[int, int]:
    """A per-position op on probes: ``per_position`` FLOPs at each position-evaluation
    (:func:`probe_positions`); the floor is each mutant's work at the positions it reaches,
    ``S x sum_j width_j x per_position``."""
    out = analysis.plan.states[np_.node.output[0]]
    per_position = per_sequence // max(out.dims[out.seq_axis - 1], 1)
    floor = int(analysis.plan.subs * out.support.widths.sum()) * per_position
    return probe_positions(analysis, np_.node.output[0]) * per_position, floor


def per_mutant_flops(analysis: "Analysis", np_: "NodePlan", per_sequence: int) -> tuple[int, int]:
    """The original node once per mutant: converted and floor equal naive ISM's."""
    return analysis.plan.mutants * per_sequence, analysis.plan.mutants * per_sequence
