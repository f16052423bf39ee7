"""Plan-level tests of the elementwise family (rules/elementwise.py): rule, support, K, declines."""

from __future__ import annotations

import numpy as np
import pytest

from builders import Net
from plan_helpers import interval, node_of, plan_of, reasons, state, window_support


def test_activation_keeps_the_conv_support():
    net = Net()
    c = net.conv("x", 4, 6, 5, pads=[2, 2])
    r = net.op("Relu", [c])
    plan = plan_of(net, r, 20)
    assert node_of(plan, r).rule == "elementwise"
    assert interval(state(plan, r)) == interval(state(plan, c)) == window_support(20, 20, 1, 2, 5)
    assert state(plan, r).slots == 3 * 5


def test_residual_add_takes_the_union_of_supports():
    net = Net()
    a = net.conv("x", 4, 6, 3, pads=[1, 1])
    b = net.conv(a, 6, 6, 5, pads=[2, 2])
    s = net.op("Add", [a, b])
    plan = plan_of(net, s, 24)
    assert node_of(plan, s).rule == "elementwise"
    assert interval(state(plan, s)) == interval(state(plan, b))  # b's reach contains a's
    assert state(plan, s).slots == 3 * 7


def test_sub_region_counts_only_its_mutants():
    net = Net()
    c = net.conv("x", 4, 6, 5, pads=[2, 2])
    plan = plan_of(net, net.op("Relu", [c]), 30, start=10, end=14)
    assert interval(state(plan, c)) == window_support(30, 30, 1, 2, 5, start=10, end=14)
    assert state(plan, c).slots == 3 * 4  # no position sees more than the region's 4


def test_batchnorm_with_constant_statistics_is_elementwise():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    bn = net.op("BatchNormalization", [c, net.const(np.ones(6, np.float32)), net.const(np.zeros(6, np.float32)),
                                       net.const(np.zeros(6, np.float32)), net.const(np.ones(6, np.float32))])
    plan = plan_of(net, bn)
    assert node_of(plan, bn).rule == "elementwise"


def test_batchnorm_with_computed_scale_names_the_tensor():
    # issue 9: this used to warn "no delta rule for BatchNormalization"
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    bn = net.op("BatchNormalization", [c, "scale", net.const(np.zeros(6, np.float32)),
                                       net.const(np.zeros(6, np.float32)), net.const(np.ones(6, np.float32))])
    plan = plan_of(net, bn, inputs={"scale": [6]})
    np_ = node_of(plan, bn)
    assert np_.rule == "fallback"
    assert "statistics 'scale' are computed in the graph, not constants" in reasons(np_)
    assert "no delta rule" not in np_.note


def test_constant_with_a_batch_axis_declines():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    s = net.op("Add", [c, net.const(np.ones((2, 6, 20), np.float32))])
    np_ = node_of(plan_of(net, s), s)
    assert np_.rule == "fallback"
    assert "broadcasts along the batch axis" in reasons(np_)


def test_operand_broadcasting_the_channels_is_elementwise():
    net = Net()
    c = net.conv("x", 4, 1, 3, pads=[1, 1])  # (N, 1, L)
    wide = net.op("Add", [c, net.const(np.ones((1, 6, 1), np.float32))])  # -> (N, 6, L)
    plan = plan_of(net, wide)
    assert node_of(plan, wide).rule == "elementwise"
    assert state(plan, wide).dims == (6, 20) and interval(state(plan, wide)) == interval(state(plan, c))


def test_operand_adding_axes_before_the_batch_declines():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])  # (N, 6, L)
    wide = net.op("Add", [c, net.const(np.ones((2, 1, 1, 1), np.float32))])  # -> (2, N, 6, L)
    np_ = node_of(plan_of(net, wide), wide)
    assert np_.rule == "fallback"
    assert "another input broadcasts it" in reasons(np_)


def test_per_position_matmul_over_channels():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    t = net.op("Transpose", [c], perm=[0, 2, 1])  # (N, L, 6)
    m = net.op("MatMul", [t, net.w(6, 5)])
    plan = plan_of(net, m, 16)
    assert node_of(plan, m).rule == "elementwise"
    st = state(plan, m)
    assert st.dims == (16, 5) and st.seq_axis == 1
    assert node_of(plan, m).converted_flops > 0  # counted on the probes


def test_matmul_mixing_positions_declines():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    t = net.op("Transpose", [c], perm=[0, 2, 1])  # (N, L, 6)
    scores = net.op("MatMul", [t, c])  # (N, L, L): attention-like
    np_ = node_of(plan_of(net, scores, 12), scores)
    assert np_.rule == "fallback"
    assert "both its inputs depend on the sequence" in reasons(np_)


def test_matmul_contracting_the_sequence_axis_declines():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])  # (N, 6, L)
    m = net.op("MatMul", [c, net.w(12, 3)])
    np_ = node_of(plan_of(net, m, 12), m)
    assert "contracts the sequence axis" in reasons(np_)


@pytest.mark.parametrize("op", ["Sigmoid", "Tanh", "Softplus", "HardSigmoid", "Elu", "Erf", "Abs"])
def test_unary_ops_are_elementwise(op):
    net = Net()
    c = net.conv("x", 4, 3, 3, pads=[1, 1])
    out = net.op(op, [c])
    assert node_of(plan_of(net, out, 10), out).rule == "elementwise"
