"""The rule table itself (rules/__init__.py): complete records, unique names, errors for
unknown names."""

from __future__ import annotations

import pytest

from yuzu_onnx import rules
from yuzu_onnx.errors import InternalError
from yuzu_onnx.rules.base import FORMS, Rule, no_flops


def test_every_rule_is_complete_and_reachable_by_name():
    assert set(rules.RULES) == {"reference", "residual", "elementwise", "window", "positional", "position-local", "flatten",
                                "dense-exit", "reduce-exit", "exit", "per-mutant", "fallback"}
    for name, rule in rules.RULES.items():
        assert rules.rule_named(name) is rule
        assert rule.label and rule.form in FORMS and callable(rule.flops)
        assert rule.emit is not None or rule.form in ("reference", "flat")


def test_unknown_rule_name_is_an_internal_error():
    with pytest.raises(InternalError, match="no rule is named 'typo'"):
        rules.rule_named("typo")


def test_a_rule_that_computes_tensors_needs_an_emitter():
    with pytest.raises(InternalError, match="has no emitter"):
        Rule("broken", "broken", "probe", no_flops, None)


def test_checks_are_registered_per_op_in_table_order():
    assert rules.checks_for("Conv") == (rules.window.check_window,)
    # a reshape may stay in probe form (positional) or be deferred into a dense layer
    assert rules.checks_for("Reshape") == (rules.positional.check_unit_reshape, rules.dense_exit.check_flatten)
    assert rules.checks_for("CumSum") == ()
    # an Add of a Conv and its input folds into the Conv before it is tried as an elementwise Add
    assert rules.checks_for("Add") == (rules.residual.check_residual_add, rules.elementwise.check_elementwise)


def test_only_the_fallback_warns():
    assert [r.name for r in rules.RULES.values() if r.warns] == ["fallback"]
