"""When to carry the reference along as one more probe (whole-form plans).

A reprobe by gather reads its source's ``(probe, position)`` table with the reference in slot
``P``: a plain source is first concatenated with the reference, a copy of the whole tensor. A
gather can emit the reference as one more row for free; every node after it that runs the
original op on the probes then runs on ``P + 1`` rows, and the next gather reads its source as
the table it is (:func:`yuzu_onnx.emit.probes.reprobe_carried`). That trades one row's work
through the chain of nodes between two gathers for the Concat at its end. It pays after
Basenji's and BPNet's layers, not for a chain that ends in an exit (DeepSEA's last Conv: half a
GFLOP per row, and no Concat to save) or runs a wide Conv (a row of a 128-channel k15 Conv costs
more than the copy of 40 rows of its output), so each chain is priced first
(:func:`worth_carrying`).
"""

from __future__ import annotations

import math

from ..plan import NodePlan
from .context import EmitContext

#: The time of copying one float32 element, in FLOPs of a Conv on probes: a reprobe's Concat of
#: 2.8M floats took 0.8 ms and Convs on probes run at about 250 GFLOP/s (2-core EPYC, CPU
#: provider), about 70 FLOPs per element.
COPY_FLOPS = 64


def runs_carried(ctx: EmitContext, np_: NodePlan) -> bool:
    """Whether the node's emitter runs the original op on probe rows, so that it can run on the
    carried rows as well: elementwise and position-local nodes, windows (not gaussian, not as
    taps), positional moves (not a Concat, not a Reshape to a computed shape), and a residual
    Add folded into its Conv; none of them with a side input (repeated per probe)."""
    if ctx.tiling is not None or any(name in ctx.plan.side for name in np_.node.input):
        return False
    op = np_.node.op_type
    if np_.rule in ("elementwise", "position-local", "residual"):
        return True
    if np_.rule == "window":
        return np_.sensing != "gaussian" and np_.conv_impl != "taps"
    if np_.rule == "positional":
        return op != "Concat" and not (op == "Reshape" and ctx.plan_const(np_.node.input[1]) is None)
    return False


def worth_carrying(ctx: EmitContext, name: str, probes: int) -> bool:
    """Whether gathering ``name`` at ``probes`` with the reference row saves more than it costs.

    The chain: the nodes that read ``name`` at ``probes`` and run carried (:func:`runs_carried`),
    then those that read their outputs, and so on. Cost, in FLOPs: each chain node's work on one
    row plus one pass over its output row, and a copy (a Slice of the ``P`` plain rows) of each
    chain tensor that a node reads in plain form (one that does not run carried, or a reprobe by
    mask). Saved: the Concat of each chain tensor reprobed by a gather (``P + 1`` rows copied).
    Exits and materializations read the carried rows as they are (no copy either way).
    """
    key = ("carry_worth", name, probes)
    if key not in ctx.cache:
        ctx.cache[key] = _saved_minus_cost(ctx, name, probes) > 0
    return ctx.cache[key]


def _saved_minus_cost(ctx: EmitContext, name: str, probes: int) -> int:
    """:func:`worth_carrying`'s balance in FLOPs (copies at :data:`COPY_FLOPS` an element)."""
    readers = _readers(ctx)
    cost = saved = 0
    chain, seen = [name], {name}
    while chain:
        tensor = chain.pop()
        size = math.prod(ctx.seq(tensor).dims)
        sliced = gathered = False
        for np_ in readers.get(tensor, ()):
            if not np_.spec.probe_form or (tensor == name and np_.probes != probes):
                continue  # exits read carried rows as they are; another P is reprobed from its own
            how = _how_it_reads(ctx, np_, probes)
            sliced, gathered = sliced or how == "plain", gathered or how == "gather"
            out = np_.node.output[0]
            if how == "carried" and out not in seen:
                seen.add(out)
                chain.append(out)
                cost += np_.converted_flops // max(np_.probes, 1) + COPY_FLOPS * math.prod(ctx.seq(out).dims)
        cost += COPY_FLOPS * probes * size * sliced
        saved += COPY_FLOPS * (probes + 1) * size * gathered
    return saved - cost


def _how_it_reads(ctx: EmitContext, np_: NodePlan, probes: int) -> str:
    """How a probe-form node reads a tensor whose probe count is ``probes``: ``"carried"`` (it
    runs on the carried rows), ``"gather"`` (a reprobe by gather, which reads them as its table),
    or ``"plain"`` (without the reference row: a reprobe by mask, a Conv as taps, whose blocks run
    at the input's probes first, any other emitter)."""
    if np_.rule == "window" and np_.conv_impl == "taps":
        return "plain"
    if np_.probes != probes:
        return "plain" if np_.probes % probes == 0 else "gather"
    return "carried" if runs_carried(ctx, np_) else "plain"


def _readers(ctx: EmitContext) -> dict[str, list[NodePlan]]:
    """Tensor -> the plan's nodes that read it (computed once per emit)."""
    if "carry_readers" not in ctx.cache:
        readers: dict[str, list[NodePlan]] = {}
        for np_ in ctx.plan.nodes:
            for name in set(np_.node.input):
                if name:
                    readers.setdefault(name, []).append(np_)
        ctx.cache["carry_readers"] = readers
    return ctx.cache["carry_readers"]
