"""Plan-level tests of the positional family (rules/positional.py): re-indexed supports, the
tracked sequence axis, and the decline reasons."""

from __future__ import annotations

import numpy as np

from builders import Net
from plan_helpers import interval, node_of, plan_of, reasons, state, window_support


def test_crop_reindexes_the_support():
    net = Net()
    c = net.conv("x", 4, 6, 5, pads=[2, 2])
    crop = net.op("Slice", [c, net.const([3]), net.const([-4]), net.const([2])])
    plan = plan_of(net, crop, 20)
    assert node_of(plan, crop).rule == "positional"
    assert interval(state(plan, crop)) == window_support(20, 20, 1, 2, 5)[3:16]


def test_constant_pad_positions_are_unreached():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    pad = net.op("Pad", [c, net.const([0, 0, 2, 0, 0, 1])])
    plan = plan_of(net, pad, 10)
    assert node_of(plan, pad).rule == "positional"
    got = interval(state(plan, pad))
    assert got[:2] == [(-1, -1)] * 2 and got[-1] == (-1, -1)
    assert got[2:-1] == window_support(10, 10, 1, 1, 3)


def test_channels_last_transpose_moves_the_sequence_axis():
    net = Net()
    t = net.op("Transpose", ["x"], perm=[0, 2, 1])  # NLC -> NCL
    c = net.conv(t, 4, 6, 3, pads=[1, 1])
    plan = plan_of(net, c, 12, layout="NLC")
    assert state(plan, t).seq_axis == 2 and state(plan, t).dims == (4, 12)
    assert node_of(plan, c).rule == "window"


def test_unit_reshape_keeps_the_sequence():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    r = net.op("Reshape", [c, net.const([0, 6, 1, 12])])
    plan = plan_of(net, r, 12)
    assert node_of(plan, r).rule == "positional"
    assert state(plan, r).seq_axis == 3 and state(plan, r).dims == (6, 1, 12)


def test_transpose_of_the_batch_axis_declines():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    t = net.op("Transpose", [c], perm=[1, 0, 2])
    np_ = node_of(plan_of(net, t, 12), t)
    assert np_.rule == "fallback"
    assert "moves the batch axis" in reasons(np_)


def test_concat_with_a_constant_of_another_batch_declines():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    cat = net.op("Concat", [c, net.const(np.zeros((2, 2, 12), np.float32))], axis=1)
    np_ = node_of(plan_of(net, cat, 12), cat)
    assert np_.rule == "fallback"
    assert "has a batch axis of 2, neither 1 nor the batch" in reasons(np_)


def test_concat_along_the_length_concatenates_supports():
    net = Net()
    a = net.conv("x", 4, 3, 3, pads=[1, 1])
    b = net.conv("x", 4, 3, 5, pads=[2, 2])
    cat = net.op("Concat", [a, b], axis=2)
    plan = plan_of(net, cat, 9)
    assert node_of(plan, cat).rule == "positional"
    assert interval(state(plan, cat)) == window_support(9, 9, 1, 1, 3) + window_support(9, 9, 1, 2, 5)


def test_reshape_mixing_the_sequence_gives_both_families_reasons():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    r = net.op("Reshape", [c, net.const([0, 12, 6])])  # scrambles positions and channels
    np_ = node_of(plan_of(net, r, 12), r)
    assert np_.rule == "fallback"
    text = reasons(np_)
    assert "positional: it reshapes (6, 12) into (12, 6)" in text
    assert "dense-exit: it is not a flatten" in text


def test_slice_with_computed_bounds_declines():
    net = Net()
    c = net.conv("x", 4, 6, 3, pads=[1, 1])
    s = net.op("Slice", [c, "starts", net.const([10]), net.const([2])])
    np_ = node_of(plan_of(net, s, 12, inputs={"starts": [1]}), s)
    assert "its parameter input 'starts' is not a constant" in reasons(np_)
