"""Plan-level tests of the exits (rules/dense_exit.py, rules/reduce_exit.py) and the
materialized rules (rules/materialized.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from builders import Net
from plan_helpers import node_of, plan_of, reasons
from yuzu_onnx.convert import plan_conversion
from yuzu_onnx.plan import ConversionWarning, FlatState, MutState
from yuzu_onnx.report import plan_table


def conv_relu(net: Net, c_out: int = 6) -> str:
    return net.op("Relu", [net.conv("x", 4, c_out, 3, pads=[1, 1])])


@pytest.mark.parametrize("flatten", ["Flatten", "Reshape"])
def test_flatten_into_gemm_is_the_dense_exit(flatten):
    net = Net()
    h = conv_relu(net)
    flat = net.op("Flatten", [h], axis=1) if flatten == "Flatten" else net.op("Reshape", [h, net.const([0, -1])])
    y = net.op("Gemm", [flat, net.w(5, 72), net.w(5)], transB=1)
    plan = plan_of(net, y, 12)
    assert node_of(plan, flat).rule == "flatten" and isinstance(plan.states[flat], FlatState)
    assert node_of(plan, y).rule == "dense-exit" and isinstance(plan.states[y], MutState)
    assert node_of(plan, y).floor_flops <= node_of(plan, y).converted_flops <= node_of(plan, y).naive_flops


def test_flatten_feeding_a_non_dense_op_names_the_consumer():
    net = Net()
    flat = net.op("Flatten", [conv_relu(net)], axis=1)
    y = net.op("Relu", [flat])
    np_ = node_of(plan_of(net, y, 12), flat)
    assert np_.rule == "fallback"
    assert "its consumer Relu" in reasons(np_) and "is not Gemm or MatMul" in reasons(np_)


@pytest.mark.parametrize("op,rule", [("GlobalAveragePool", "reduce-exit"), ("GlobalMaxPool", "exit")])
def test_pooling_over_the_sequence_exits(op, rule):
    net = Net()
    y = net.op(op, [conv_relu(net)])
    plan = plan_of(net, y, 12)
    assert node_of(plan, y).rule == rule
    assert isinstance(plan.states[y], MutState)


def test_reduce_over_channels_is_not_an_exit():
    net = Net()
    y = net.op("ReduceMean", [conv_relu(net)], axes=[1], keepdims=1)
    np_ = node_of(plan_of(net, y, 12), y)
    assert np_.rule == "position-local"  # tests/rules/test_rule_position_local.py


def test_reduce_over_the_batch_axis_declines():
    net = Net()
    y = net.op("ReduceSum", [conv_relu(net), net.const([0, 2])], keepdims=1)
    assert "reduces over the batch axis" in reasons(node_of(plan_of(net, y, 12), y))


def test_reduction_over_channels_and_length_gives_both_families_reasons():
    net = Net()
    y = net.op("ReduceLogSumExp", [conv_relu(net)], axes=[1, 2], keepdims=1)
    text = reasons(node_of(plan_of(net, y, 12), y))
    assert "reduce-exit: it reduces axes [1]" in text and "besides the sequence axis" in text
    assert "position-local: it works over axes [1, 2]" in text


def test_op_without_a_rule_falls_back_and_later_nodes_run_per_mutant():
    net = Net()
    h = conv_relu(net)
    cum = net.op("CumSum", [h, net.const(np.array(2, np.int64))])
    after = net.op("Relu", [cum])
    plan = plan_of(net, after, 12)
    assert node_of(plan, cum).rule == "fallback" and node_of(plan, cum).note == "no rule handles CumSum"
    assert node_of(plan, after).rule == "per-mutant" and not node_of(plan, after).declines


def test_mixing_a_per_mutant_and_a_probe_tensor_says_why():
    net = Net()
    h = conv_relu(net)
    cum = net.op("CumSum", [h, net.const(np.array(2, np.int64))])
    mixed = net.op("Add", [cum, h])
    np_ = node_of(plan_of(net, mixed, 12), mixed)
    assert np_.rule == "fallback"
    assert f"its input {cum!r} is already per mutant" in np_.note


def test_warning_and_plan_table_carry_the_reason():
    net = Net()
    h = conv_relu(net)
    y = net.op("CumSum", [h, net.const(np.array(2, np.int64))])
    model = net.model({"x": ["N", 4, 12]}, {"y": y})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        plan = plan_conversion(model)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConversionWarning)]
    assert messages == [f"CumSum node 'CumSum_{y[1:]}' is not accelerated: no rule handles CumSum; it runs "
                        "exactly on materialized mutants (slow)"]
    assert f"CumSum 'CumSum_{y[1:]}': no rule handles CumSum" in plan_table(plan)
