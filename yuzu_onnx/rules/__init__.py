"""The rule table: every way a node of the original graph can be computed in the ISM graph.

Each family module holds, for its ops, the checks (applicability, with a reason when they
decline), the support math, the FLOP model and the emitter, and a docstring stating its delta
math. This module collects them; the analysis, FLOP count, probe sizing, plan table and emit
pass read only this table and the :class:`~yuzu_onnx.rules.base.Rule` records.

Adding an op family: write ``rules/<family>.py`` exposing ``RULES`` (its records) and
``CHECKS`` (op type -> check), then add the module to :data:`FAMILIES` below. Checks of
different families for the same op are tried in table order; the first that accepts wins, and
if none does the node falls back with every family's reason.
"""

from __future__ import annotations

from . import (dense_exit, elementwise, materialized, position_local, positional, reduce_exit, reference,
               residual, static_shape, window)
from .base import Check, Decline, Rule
from ..errors import InternalError

#: Rule families, in the order their checks are tried on an op several of them know.
FAMILIES = (
    reference,
    static_shape,
    residual,
    elementwise,
    window,
    positional,
    position_local,
    dense_exit,
    reduce_exit,
    materialized,
)

#: Every rule, by name.
RULES: dict[str, Rule] = {}
#: Checks for nodes whose sequence-dependent inputs are all in probe form, by op type.
CHECKS: dict[str, tuple[Check, ...]] = {}
for _family in FAMILIES:
    for _rule in _family.RULES:
        if _rule.name in RULES:
            raise InternalError(f"two rules are named {_rule.name!r}")
        RULES[_rule.name] = _rule
    for _op, _check in _family.CHECKS.items():
        CHECKS[_op] = CHECKS.get(_op, ()) + (_check,)
del _family, _rule, _op, _check

#: Named records the analysis needs to refer to directly.
REFERENCE = reference.REFERENCE
PER_MUTANT = materialized.PER_MUTANT
EXIT = materialized.EXIT
FALLBACK = materialized.FALLBACK
FLAT_CHECKS = dense_exit.FLAT_CHECKS


def rule_named(name: str) -> Rule:
    """The rule called ``name``; an unknown name is a bug, never skipped."""
    try:
        return RULES[name]
    except KeyError:
        raise InternalError(f"no rule is named {name!r} (known: {', '.join(RULES)})") from None


def checks_for(op_type: str) -> tuple[Check, ...]:
    """The checks that may accept a node of ``op_type`` on probe-form inputs (possibly none)."""
    return CHECKS.get(op_type, ())


__all__ = ["FAMILIES", "RULES", "CHECKS", "Rule", "Decline", "rule_named", "checks_for"]
