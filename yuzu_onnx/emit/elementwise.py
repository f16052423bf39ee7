"""Delta rules for elementwise ops: ``D_out = g(R + D) - g(R)``, with linear shortcuts.

Every entry of a probe tensor is one mutant's delta (or zero), so an elementwise op applied to
``R + Z`` (``R`` broadcast over the probe axis) evaluates each mutant exactly; subtracting the
reference output leaves the delta. Ops linear in the sequence input skip the round trip.
"""

from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from ..analyze import NodePlan
from ..ops import attr
from .context import EmitContext
from .probes import reprobe


def emit_elementwise(ctx: EmitContext, np_: NodePlan) -> None:
    node = np_.node
    out = node.output[0]
    p = np_.probes
    deltas = {name: reprobe(ctx, name, p) for name in node.input if ctx.is_seq(name)}
    result = _linear_shortcut(ctx, node, deltas)
    if result is None:
        full_inputs = [ctx.b.op("Add", [ctx.ref_broadcast(name), deltas[name]], "mutant")
                       if name in deltas else name for name in node.input]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        full_out = ctx.b.op(node.op_type, full_inputs, node.op_type.lower(), **attrs)
        result = ctx.b.op("Sub", [full_out, ctx.ref_broadcast(out)], "delta")
    ctx.probe[(out, p)] = result


def _linear_shortcut(ctx: EmitContext, node, deltas: dict[str, str]) -> str | None:
    """Delta of ops that are linear in their sequence-dependent inputs, or None."""
    b = ctx.b
    op = node.op_type
    ins = list(node.input)
    dep = [i in deltas for i in ins]
    if op in ("Identity", "Dropout"):
        return deltas[ins[0]]
    if op == "Neg":
        return b.op("Neg", [deltas[ins[0]]], "delta")
    if op == "Add" or (op == "Sub" and dep[0]):
        if all(dep):
            return b.op(op, [deltas[ins[0]], deltas[ins[1]]], "delta")
        return deltas[ins[0] if dep[0] else ins[1]]
    if op == "Sub":  # constant - x
        return b.op("Neg", [deltas[ins[1]]], "delta")
    if op == "Mul" and not all(dep):
        x, c = (ins[0], ins[1]) if dep[0] else (ins[1], ins[0])
        return b.op("Mul", [deltas[x], c], "delta")
    if op == "Div" and dep[0] and not dep[1]:
        return b.op("Div", [deltas[ins[0]], ins[1]], "delta")
    if op == "BatchNormalization":
        return b.op("Mul", [deltas[ins[0]], b.const(_bn_scale(ctx, node), "bn_scale")], "delta")
    return None


def _bn_scale(ctx: EmitContext, node) -> np.ndarray:
    inits = {t.name: t for t in ctx.plan.model.graph.initializer}
    gamma = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    var = numpy_helper.to_array(inits[node.input[4]]).astype(np.float64)
    eps = attr(node, "epsilon", 1e-5)
    scale = gamma / np.sqrt(var + eps)
    dims = ctx.seq(node.input[0]).dims
    return scale.reshape((-1,) + (1,) * (len(dims) - 1))
