"""Human-readable plan table: what each node became and what it costs."""

from __future__ import annotations

from .memory import format_size
from .plan import Plan, SeqState


def _gflop(flops: int) -> str:
    return f"{flops / 1e9:,.2f}" if flops else "-"


def plan_table(plan: Plan) -> str:
    """Format the plan: one row per sequence-dependent node, then totals and the speedup."""
    rows = [("#", "node", "op", "rule", "width", "K", "P", "naive GF", "converted GF", "floor GF")]
    for i, np_ in enumerate(plan.nodes):
        if np_.spec.form == "reference":
            continue
        st = plan.states.get(np_.node.output[0]) if np_.node.output else None
        slots = str(st.slots) if isinstance(st, SeqState) else "-"
        probes = str(np_.probes) if np_.probes else "-"
        if np_.design is not None:
            probes += f" (gauss, cond {np_.design.cond:.3g}, err {np_.design.error:.1g})"
        rows.append((str(i), (np_.node.name or np_.node.output[0])[:32], np_.node.op_type,
                     np_.spec.label, str(np_.width) if np_.width else "-", slots,
                     probes, _gflop(np_.naive_flops), _gflop(np_.converted_flops), _gflop(np_.floor_flops)))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if c < 4 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    t = plan.totals()
    lines.append("")
    lines.append(f"mutants per sequence: {plan.requested_mutants} ({plan.subs} substitutions x positions "
                 f"{plan.requested_start}..{plan.requested_end - 1}), substitutions={plan.substitutions}, sensing="
                 f"{'structured' if plan.sensing == 'spike' else 'gaussian'}")
    if plan.requested is not None:
        lines.append(f"computed: positions {plan.start}..{plan.end - 1} ({plan.mutants} mutants); mutations "
                     "outside them reach no output (cropped away), their y_ism is y0")
    lines.append(f"FLOPs per sequence: naive ISM {t['naive'] / 1e9:,.2f} G, converted {t['converted'] / 1e9:,.2f} G, "
                 f"floor {t['floor'] / 1e9:,.2f} G")
    lines.append(f"predicted speedup (FLOPs): {t['naive'] / max(t['converted'], 1):.1f}x "
                 f"(floor allows {t['naive'] / max(t['floor'], 1):.1f}x)")
    designs = [np_ for np_ in plan.nodes if np_.design is not None]
    if designs:
        worst = max(designs, key=lambda n: n.design.error)
        lines.append(f"gaussian decoding: predicted float32 error <= {worst.design.error:.2g} of the deltas "
                     f"(worst at {worst.node.name or worst.node.output[0]}, condition number "
                     f"{worst.design.cond:.3g}); tolerance {plan.tolerance:g}")
    if plan.tiling is not None:
        tiling = plan.tiling
        per_chunk = max(g.per_chunk for g in tiling.groups)
        groups = ""
        if len(tiling.groups) > 1:
            sizes = sorted({g.tiles for g in tiling.groups}, reverse=True)
            groups = (f" in {len(tiling.groups)} groups of {'/'.join(map(str, sizes))} tiles (a Loop each, windows "
                      "cropped to the group's tiles)")
        lines.append(f"form: tiled, {tiling.tiles} tiles of {tiling.width} positions{groups}, {per_chunk} per Loop "
                     f"iteration ({tiling.chunks} iterations)")
    else:
        lines.append("form: whole sequence (one pass)")
    if plan.choice is not None:
        choice = plan.choice
        lines.append(f"predicted time per sequence (time model, CPU): this plan {choice.chosen.seconds:.3g} s, "
                     f"brute-force ISM {choice.brute_force_seconds:.3g} s "
                     f"({choice.brute_force_seconds / max(choice.chosen.seconds, 1e-12):.1f}x)")
        if len(choice.considered) > 1:
            lines.append("forms considered: " + "; ".join(
                ("* " if c is choice.chosen else "") + c.describe() for c in choice.considered))
        lines.extend(f"note: {note}" for note in choice.notes)
    if plan.memory is not None:
        m = plan.memory
        lines.append(f"memory: peak activations {format_size(m.resident(1))} for 1 sequence, "
                     f"+{format_size(m.resident(2) - m.resident(1))} per further sequence; weights {format_size(m.weights)}")
    fallbacks = [(i, np_) for i, np_ in enumerate(plan.nodes) if np_.spec.warns]
    if fallbacks:
        ops = ", ".join(sorted({np_.node.op_type for _, np_ in fallbacks}))
        lines.append(f"not accelerated (exact on materialized mutants): {ops}")
        for i, np_ in fallbacks:
            lines.append(f"  #{i} {np_.node.op_type} {np_.node.name or np_.node.output[0]!r}: {np_.note}")
    return "\n".join(lines)
