"""Trimming the mutated region to the positions whose mutations can reach an output.

A model that crops its activations before its outputs (bpnet-lite and ChromBPNet profile heads,
gReLU's ``crop_len``) ignores what happens near the sequence ends: a mutation at position ``i``
changes layer ``t`` only within its receptive field around ``i``, and where all of that lies
in the cropped margin, no output changes. For those mutants ``y_ism`` equals ``y0`` exactly (the
same arithmetic on the same values), so the converter computes only the positions whose
mutations reach some output and fills the others with ``y0``.

Which positions reach an output is read off the support intervals of the whole-sequence
analysis (:mod:`yuzu_onnx.support`): every place where the probe form ends (an exit, a
fallback, a flatten, a per-position output) reads its sequence-dependent inputs at all
positions, so the mutations that reach it are those in the hull of those inputs' supports.
Crops and strided slices narrow a support; window ops widen it; the hull over all ends is the
region worth computing. Hulls are conservative: a position inside the hull that reaches
nothing is still computed, never the other way round.
"""

from __future__ import annotations

from .plan import Plan, SeqState


def reachable_region(plan: Plan) -> tuple[int, int] | None:
    """Positions ``(first, end)`` (absolute, ``end`` exclusive) of the plan's region whose
    mutations can change some output, or None when no mutation reaches any.

    ``plan`` must come from a whole-sequence analysis (supports on every probe-form tensor).
    The union over every probe-form tensor ``t`` read where the probe form ends, of
    ``{i : lo_t[j] <= i - start <= hi_t[j] for some j}``, taken as its hull.
    """
    lo, hi = None, None

    def add(name: str) -> None:
        nonlocal lo, hi
        st = plan.states.get(name)
        if not isinstance(st, SeqState):
            return
        reached = st.support.widths > 0
        if not reached.any():
            return
        first, last = int(st.support.lo[reached].min()), int(st.support.hi[reached].max())
        lo = first if lo is None else min(lo, first)
        hi = last if hi is None else max(hi, last)

    for np_ in plan.nodes:
        if np_.spec.form == "reference":  # reads only shapes (Shape, Size), which mutants keep
            continue
        outputs = [o for o in np_.node.output if o]
        stays_probe_form = outputs and all(isinstance(plan.states.get(o), SeqState) for o in outputs)
        for name in np_.node.input:
            if not stays_probe_form or name in np_.materialize:
                add(name)
    for name in plan.outputs:
        add(name)
    if lo is None:
        return None
    return plan.start + lo, plan.start + hi + 1
