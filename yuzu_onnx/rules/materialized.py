"""Materialized rules: the original node on every mutant (batch ``N*M``), exactly.

- ``exit``: an op over all positions whose result cannot be summed from deltas (max or softmax
  over positions, a profile head): its probe-form input is materialized, as planned.
- ``per-mutant``: after an exit every tensor is per mutant; nodes run as in naive ISM (a Conv
  with few output channels, a profile head, as taps in blocks: the same sums, no im2col).
- ``fallback``: a node no rule accepts. Its sequence-dependent inputs are materialized for
  every mutant and it runs unchanged, so the result is exact; the conversion warns with the
  reasons each rule family gave (:attr:`yuzu_onnx.plan.NodePlan.declines`).

Materializing ``name``: each mutant takes its probe's values at the positions it reaches and the
reference elsewhere (:func:`yuzu_onnx.emit.materialize.materialize`).
"""

from __future__ import annotations

from ..emit.context import EmitContext
from ..emit.materialize import materialize
from ..plan import NodePlan
from .base import Rule, per_mutant_flops
from .window import conv_on_mutants


def emit_per_mutant(ctx: EmitContext, np_: NodePlan) -> None:
    """Clone an original node onto materialized inputs (batch ``N*M``)."""
    node = np_.node
    inputs = []
    for name in node.input:
        if ctx.is_seq(name):
            inputs.append(materialize(ctx, name))
        elif ctx.is_mut(name):
            inputs.append(ctx.mut[name])
        elif name in ctx.plan.side:
            inputs.append(ctx.repeat_side(name, ctx.mutants))
        else:
            inputs.append(name)
    taps = conv_on_mutants(ctx, node, inputs[0])
    if taps is not None:  # a profile head: the same sums without im2col
        ctx.mut[node.output[0]] = taps
        return
    outputs = []
    for name in node.output:
        if not name:
            outputs.append("")
            continue
        ctx.mut[name] = ctx.b.fresh(f"mut_{node.op_type.lower()}")
        outputs.append(ctx.mut[name])
    ctx.b.clone(node, inputs, outputs, "mut")


EXIT = Rule("exit", "exit (materialized)", "mutant", per_mutant_flops, emit_per_mutant, materializes=True)
PER_MUTANT = Rule("per-mutant", "per mutant", "mutant", per_mutant_flops, emit_per_mutant)
FALLBACK = Rule("fallback", "FALLBACK (materialized)", "mutant", per_mutant_flops, emit_per_mutant,
                materializes=True, warns=True)
RULES = (EXIT, PER_MUTANT, FALLBACK)
CHECKS: dict = {}
