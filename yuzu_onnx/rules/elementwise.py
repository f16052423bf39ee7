"""Elementwise rules: ops whose output at a position reads only that position.

Delta math. For an elementwise ``g``, a mutant's output is ``g(R + D)`` where ``R`` is the
reference and ``D`` the mutant's delta, nonzero only inside its reach. In probe form every
probe is a valid hybrid sequence (at each position it equals one mutant, or the reference), so
``g`` applied to the probes *is* ``g`` of each mutant at every position: the original node runs
on the probes unchanged and the support of the output is the union of its inputs' supports.
Inputs of different reach (a residual ``Add`` of a long and a short branch) are reprobed to a
common ``P`` first.

Covered: unary activations, binary/variadic ops with numpy broadcasting against constants,
side inputs or other sequence tensors of the same shape, inference-mode BatchNormalization
(constant statistics), and ``x @ W`` with a constant 2-D ``W`` over a channels-last tensor (a
dense layer applied at each position).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from ..plan import NodePlan, SeqState
from .base import Decline, Rule, probe_flops
from ..emit.probes import clone_on_probes
from ..tile_geometry import aligned, union_in
from .common import shape_text

if TYPE_CHECKING:
    from ..analyze import Analysis
    from ..tile_geometry import TileGeometry

FAMILY = "elementwise"

#: Ops applied independently to each element (other inputs constant or broadcast).
UNARY = {
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Exp", "Log", "Erf", "Gelu", "Mish", "Clip", "Abs", "Neg", "Sqrt",
    "Reciprocal", "ThresholdedRelu", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Shrink",
    "Identity", "Dropout", "Not", "IsNaN", "IsInf", "Cast",
}
#: Elementwise ops with several tensor inputs, numpy-style broadcasting.
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu", "Sum", "Mean", "Where",
          "Greater", "Less", "Equal", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod"}



def decline(reason: str) -> Decline:
    return Decline(FAMILY, reason)


def check_elementwise(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> NodePlan | Decline:
    """Elementwise op (and inference BatchNormalization) on probe tensors of one shape."""
    states = a.plan.states
    out = node.output[0]
    out_shape = a.shape(out)
    outputs = [o for o in node.output if o]
    if len(outputs) != 1:
        return decline(f"it has {len(outputs)} outputs (only single-output elementwise ops are accelerated)")
    if out_shape is None:
        return decline(f"the shape of its output {out!r} is unknown (shape inference could not type it)")
    if node.op_type == "BatchNormalization":
        computed = [i for i in node.input[1:] if i and i not in a.inits]
        if computed:
            return decline(f"its statistics {', '.join(map(repr, computed))} are computed in the graph, not "
                           "constants (only inference-mode BatchNormalization is elementwise)")
    first: SeqState = states[dep[0]]
    support = first.support
    for name in dep:
        st: SeqState = states[name]
        if st.dims != first.dims or st.seq_axis != first.seq_axis:
            return decline(f"its sequence-dependent inputs {dep[0]!r} {shape_text(first.dims)} and {name!r} "
                           f"{shape_text(st.dims)} differ in shape or sequence axis (one broadcasts along "
                           "the other)")
        support = support.union(st.support)
    if list(out_shape[1:]) != list(first.dims):
        return decline(f"its output {shape_text(out_shape[1:])} is larger than its sequence-dependent input "
                       f"{shape_text(first.dims)}: another input broadcasts it")
    for name in node.input:
        if not name or name in dep:
            continue
        cshape = a.shape(name) or []
        if name in a.plan.side:
            if len(cshape) != len(first.dims) + 1 or None in cshape[1:]:
                return decline(f"its side input {name!r} has shape {shape_text(cshape)}, not the full rank "
                               f"{len(first.dims) + 1} with static dims")
            continue
        if name not in a.inits:
            return decline(f"its input {name!r} is computed in the graph without depending on the sequence "
                           "(only constants and side inputs are broadcast)")
        if len(cshape) > len(first.dims) + 1 or (len(cshape) == len(first.dims) + 1 and cshape[0] != 1):
            return decline(f"its constant {name!r} of shape {shape_text(cshape)} broadcasts along the batch axis")
    states[out] = a.seq_state(support, first.seq_axis, first.dims)
    return NodePlan(node, ELEMENTWISE, width=support.max_width)


def check_pointwise_matmul(a: "Analysis", node: onnx.NodeProto, dep: list[str]) -> NodePlan | Decline:
    """``x @ W`` with a constant ``W`` over a channels-last tensor: a per-position dense layer."""
    x, w_name = node.input[0], node.input[1]
    if dep != [x]:
        return decline("both its inputs depend on the sequence (a MatMul that mixes positions, as in "
                       "attention)" if len(dep) == 2 else f"its weight {w_name!r} depends on the sequence")
    st: SeqState = a.plan.states[x]
    w = a.shape(w_name)
    if w_name not in a.inits:
        return decline(f"its weight {w_name!r} is not a constant")
    if w is None or len(w) != 2:
        return decline(f"its weight {w_name!r} has shape {shape_text(w)}, not 2-D")
    if st.seq_axis == len(st.dims):
        return decline(f"it contracts the sequence axis of {x!r} {shape_text(st.dims)} (a dense layer over "
                       "positions, not channels)")
    if st.dims[-1] != w[0]:
        return decline(f"its weight {w_name!r} {shape_text(w)} does not match the last axis of {x!r} "
                       f"{shape_text(st.dims)}")
    dims = st.dims[:-1] + (int(w[1]),)
    a.plan.states[node.output[0]] = a.seq_state(st.support, st.seq_axis, dims)
    return NodePlan(node, ELEMENTWISE, width=st.support.max_width)


def tile_elementwise(t: "TileGeometry", np_: NodePlan) -> Decline | None:
    """Tiled form: the output's window is the hull of the inputs' windows (narrower inputs are
    widened with reference values when emitted), its support their union. Operands that are
    not sequence tensors must not vary along the sequence axis (they would need a window too)."""
    node = np_.node
    seqs = [n for n in node.input if n in t.states]
    hull = aligned(t, seqs)
    if isinstance(hull, str):
        return decline(hull)
    window, width = hull
    full = t.full(node.output[0])
    rank = len(full.dims) + 1
    for name in node.input:
        if not name or name in seqs or node.op_type in ("BatchNormalization", "MatMul"):
            continue  # per-channel statistics, and a weight contracting the channels, have no length
        shape = t.analysis.shape(name) or []
        axis = len(shape) - (rank - full.seq_axis)  # numpy broadcasting aligns from the right
        if 0 <= axis < len(shape) and shape[axis] != 1:
            return decline(f"its operand {name!r} {shape_text(shape)} varies along the sequence axis")
    t.record(node.output[0], union_in(t, seqs, window, width), window)
    return None


ELEMENTWISE = Rule("elementwise", "probe elementwise", "probe", probe_flops, clone_on_probes, tile=tile_elementwise)
RULES = (ELEMENTWISE,)

CHECKS = {op: check_elementwise for op in sorted(UNARY | BINARY | {"BatchNormalization"})}
CHECKS["MatMul"] = check_pointwise_matmul
