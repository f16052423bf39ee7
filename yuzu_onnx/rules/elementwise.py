"""Elementwise rules: ops whose output at a position reads only that position.

Delta math. For an elementwise ``g``, a mutant's output is ``g(R + D)`` where ``R`` is the
reference and ``D`` the mutant's delta, nonzero only inside its reach. In probe form every
probe is a valid hybrid sequence (at each position it equals one mutant, or the reference), so
``g`` applied to the probes *is* ``g`` of each mutant at every position: the original node runs
on the probes unchanged and the support of the output is the union of its inputs' supports.
Inputs of different reach (a residual ``Add`` of a long and a short branch) are reprobed to a
common ``P`` first.

Covered: unary activations; binary/variadic ops with numpy broadcasting between sequence
tensors of the same rank, sequence axis and length (``(N, 1, L) * (N, C, L)``) and against
tensors that do not depend on the sequence: constants, side inputs and reference tensors the
graph computes (a per-channel ``(1, C, 1)`` or per-sequence ``(N, C, 1)`` bias broadcast along
the length, or a ``(1, C, L)`` / ``(N, C, L)`` track; these are the same for every mutant, so
each probe reads them as its sequence does); inference-mode BatchNormalization (constant
statistics); and ``x @ W`` with a constant 2-D ``W`` over a channels-last tensor (a dense
layer applied at each position). A per-mutant operand (after an exit, as in a
squeeze-excitation ``x * s(mean(x))``) changes every position of every mutant: the analysis
materializes such a node, saying why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx

from ..plan import NodePlan, SeqState
from .base import Decline, Rule, probe_flops
from .positional import clone_with_references, varies_along_sequence
from ..tile_geometry import aligned, union_in
from .common import shape_text

if TYPE_CHECKING:
    from ..analyze import Analysis
    from ..emit.context import EmitContext
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
    """Elementwise op (and inference BatchNormalization) on probe tensors, broadcasting against
    each other (same rank and sequence axis) and against tensors that do not depend on the
    sequence: constants, side inputs and other reference tensors computed in the graph."""
    states = a.plan.states
    out = node.output[0]
    out_shape = a.shape(out)
    outputs = [o for o in node.output if o]
    if len(outputs) != 1:
        return decline(f"it has {len(outputs)} outputs (only single-output elementwise ops are accelerated)")
    if out_shape is None or None in out_shape[1:]:
        return decline(f"the shape of its output {out!r} is not known statically ({shape_text(out_shape)})")
    if node.op_type == "BatchNormalization":
        computed = [i for i in node.input[1:] if i and i not in a.inits]
        if computed:
            return decline(f"its statistics {', '.join(map(repr, computed))} are computed in the graph, not "
                           "constants (only inference-mode BatchNormalization is elementwise)")
    first: SeqState = states[dep[0]]
    support = first.support
    rank = len(first.dims) + 1
    length = first.dims[first.seq_axis - 1]
    for name in dep:
        st: SeqState = states[name]
        if len(st.dims) != len(first.dims) or st.seq_axis != first.seq_axis or st.dims[st.seq_axis - 1] != length:
            return decline(f"its sequence-dependent inputs {dep[0]!r} {shape_text(first.dims)} and {name!r} "
                           f"{shape_text(st.dims)} differ in rank, sequence axis or length")
        support = support.union(st.support)
    if len(out_shape) != rank or out_shape[first.seq_axis] != length:
        return decline(f"its output {shape_text(out_shape[1:])} does not keep the rank and length of its "
                       f"sequence-dependent input {shape_text(first.dims)}: another input broadcasts it")
    for name in node.input:
        if not name or name in dep:
            continue
        cshape = a.shape(name)
        if cshape is None or (name not in a.inits and None in cshape[1:]):
            return decline(f"the shape of its input {name!r} is not known statically ({shape_text(cshape)})")
        if name in a.plan.side:
            if len(cshape) != rank:
                return decline(f"its per-sequence input {name!r} has shape {shape_text(cshape)}, not the full rank "
                               f"{rank} (its batch axis would not meet the probes' batch axis)")
            continue
        if len(cshape) > rank or (len(cshape) == rank and cshape[0] != 1):
            kind = "constant" if name in a.inits else "sequence-independent input"
            return decline(f"its {kind} {name!r} of shape {shape_text(cshape)} broadcasts along the batch axis")
    states[out] = a.seq_state(support, first.seq_axis, out_shape[1:])
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
    not sequence tensors but vary along the sequence axis are cut to each tile's window when
    emitted (:func:`~yuzu_onnx.rules.positional.reference_on_probes`)."""
    node = np_.node
    seqs = [n for n in node.input if n in t.states]
    hull = aligned(t, seqs)
    if isinstance(hull, str):
        return decline(hull)
    window, width = hull
    t.record(node.output[0], union_in(t, seqs, window, width), window)
    return None


def reference_operands(ctx: "EmitContext", np_: NodePlan) -> list[str]:
    """Sequence-independent operands laid out like the probes by
    :func:`~yuzu_onnx.rules.positional.reference_on_probes` instead of being broadcast as they
    are: side tensors whose batch axis is a static 1 (repeating them would give ``P`` rows, not
    ``N*P``), and, in a tiled plan, operands that vary along the sequence axis (each tile reads
    its own window of them; BatchNormalization statistics and a MatMul weight have no length)."""
    node, plan = np_.node, ctx.plan
    out = node.output[0]
    names = []
    for name in node.input:
        if not name or ctx.is_seq(name) or node.op_type in ("BatchNormalization", "MatMul"):
            continue
        if name in plan.side and plan.infos[name].shape[0] == 1:
            names.append(name)
        elif ctx.tiling is not None and varies_along_sequence(plan, name, out):
            names.append(name)
    return names


def emit_elementwise(ctx: "EmitContext", np_: NodePlan) -> None:
    """The original node on the probes; in a tiled plan, operands that vary along the sequence
    are cut to each tile's window first."""
    clone_with_references(ctx, np_, reference_operands(ctx, np_))


ELEMENTWISE = Rule("elementwise", "probe elementwise", "probe", probe_flops, emit_elementwise, tile=tile_elementwise)
RULES = (ELEMENTWISE,)

CHECKS = {op: check_elementwise for op in sorted(UNARY | BINARY | {"BatchNormalization"})}
CHECKS["MatMul"] = check_pointwise_matmul
