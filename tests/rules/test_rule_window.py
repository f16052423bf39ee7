"""Plan-level tests of the window family (rules/window.py): supports through Conv and pools,
K, the implementation chosen, and the decline reasons."""

from __future__ import annotations

import pytest

from builders import Net
from plan_helpers import interval, node_of, plan_of, reasons, state, window_support


@pytest.mark.parametrize("kernel,stride,dilation,pads", [(5, 1, 1, [2, 2]), (3, 2, 1, [1, 0]), (3, 1, 3, [0, 0]),
                                                          (4, 3, 2, [2, 3])])
def test_conv_support_is_the_window_hull(kernel, stride, dilation, pads):
    net = Net()
    c = net.conv("x", 4, 6, kernel, pads=pads, strides=[stride], dilations=[dilation])
    plan = plan_of(net, c, 23)
    st = state(plan, c)
    expected = window_support(23, st.dims[-1], stride, pads[0], kernel, dilation)
    assert node_of(plan, c).rule == "window"
    assert interval(st) == expected
    assert st.slots == 3 * max(hi - lo + 1 for lo, hi in expected if lo >= 0)


def test_pool_then_conv_widens_k_and_strides_the_support():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    p = net.op("MaxPool", [c], kernel_shape=[2], strides=[2])
    c2 = net.conv(p, 6, 6, 3, pads=[1, 1])
    plan = plan_of(net, c2, 20)
    assert [node_of(plan, t).rule for t in (c, p, c2)] == ["window"] * 3
    # output j of c2 reads pooled j-1..j+1 = inputs 2j-2..2j+3 of c, each reaching +-1
    assert interval(state(plan, c2))[5] == (7, 14)
    assert state(plan, c2).slots == 3 * 8


def test_few_output_channels_use_per_tap_matmuls():
    net = Net()
    c = net.conv("x", 4, 16, 3, pads=[1, 1])
    head = net.conv(c, 16, 2, 7, pads=[3, 3])  # a profile head: 3 * 2 < 16
    plan = plan_of(net, head, 30)
    assert node_of(plan, head).conv_impl == "taps"
    assert node_of(plan, c).conv_impl == "conv"


def test_ceil_mode_pool_whose_last_window_is_dropped_names_that():
    # issue 9: this used to warn "only 1-D windows over the last (sequence) axis"
    net = Net()
    c = net.conv("x", 4, 3, 3, strides=[2])  # L=7 -> 3
    p = net.op("MaxPool", [c], kernel_shape=[2], strides=[3], ceil_mode=1)  # 2nd window would start at 3
    np_ = node_of(plan_of(net, p, 7), p)
    assert np_.rule == "fallback"
    assert "ceil_mode window starts past the input" in reasons(np_)
    assert "only 1-D windows" not in np_.note


def test_conv_weight_from_a_graph_input_declines():
    net = Net()
    c = net.op("Conv", ["x", "w"], pads=[1, 1])
    np_ = node_of(plan_of(net, c, 12, inputs={"w": [5, 4, 3]}, input_name="x"), c)
    assert np_.rule == "fallback"
    assert "its weight 'w' is not a constant" in reasons(np_)


def test_unit_height_2d_conv_is_a_window_and_height_padding_is_not():
    net = Net()
    x4 = net.op("Unsqueeze", ["x", net.const([2])])  # (N, 4, 1, L)
    c = net.op("Conv", [x4, net.w(6, 4, 1, 3), net.w(6, scale=0.5)], pads=[0, 1, 0, 1])
    # pads the height but strides over it, so the output height stays 1
    p = net.op("MaxPool", [c], kernel_shape=[1, 2], strides=[3, 2], pads=[1, 0, 1, 0])
    plan = plan_of(net, p, 16)
    assert node_of(plan, c).rule == "window"
    assert interval(state(plan, c)) == window_support(16, 16, 1, 1, 3)
    np_ = node_of(plan, p)
    assert np_.rule == "fallback" and "pads the unit height axis" in reasons(np_)


def test_2d_kernel_over_channels_declines():
    net = Net()
    x4 = net.op("Unsqueeze", ["x", net.const([1])])  # (N, 1, 4, L)
    c = net.op("Conv", [x4, net.w(2, 1, 4, 3)], pads=[0, 1, 0, 1])
    np_ = node_of(plan_of(net, c, 16), c)
    assert np_.rule == "fallback"
    assert "height is not 1" in reasons(np_)


def test_conv_transpose_support():
    net = Net()
    c = net.conv("x", 4, 3, 3, pads=[1, 1])
    up = net.op("ConvTranspose", [c, net.w(3, 2, 4)], strides=[2], pads=[1, 1])  # L -> 2L
    plan = plan_of(net, up, 10)
    st = state(plan, up)
    assert node_of(plan, up).rule == "window" and st.dims == (2, 20)
    # input i adds into outputs 2i - 1 .. 2i + 2; input i is reached by i-1..i+1
    expected = []
    for j in range(20):
        src = [i for i in range(10) if 2 * i - 1 <= j <= 2 * i + 2]
        lo = max(min(src) - 1, 0)
        hi = min(max(src) + 1, 9)
        expected.append((lo, hi))
    assert interval(st) == expected
