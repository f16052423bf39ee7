"""Plan-level tests of the position-local family (rules/position_local.py), the static-shape
family (rules/static_shape.py), and the reference operands of elementwise ops and Concat
(rules/elementwise.py, rules/positional.py): rule, support, K, sequence axis, tiled window,
decline reasons."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from builders import Net
from plan_helpers import interval, node_of, plan_of, reasons, state, window_support
from yuzu_onnx.plan import MutState


def conv_relu(net: Net, c_out: int = 6, k: int = 5) -> str:
    return net.op("Relu", [net.conv("x", 4, c_out, k, pads=[k // 2, k // 2])])


def channels_last(net: Net) -> str:
    return net.op("Transpose", [conv_relu(net)], perm=[0, 2, 1])  # (N, L, 6)


# ----------------------------------------------------------------------------- position-local


def test_layer_norm_over_channels_keeps_the_support():
    net = Net()
    t = channels_last(net)
    ln = net.op("LayerNormalization", [t, net.w(6), net.w(6)], axis=-1)
    plan = plan_of(net, ln, 21)
    assert node_of(plan, ln).rule == "position-local"
    st = state(plan, ln)
    assert st.dims == (21, 6) and st.seq_axis == 1
    assert interval(st) == window_support(21, 21, 1, 2, 5) and st.slots == 3 * 5


def test_layer_norm_over_the_length_declines():
    net = Net()
    ln = net.op("LayerNormalization", [conv_relu(net), net.w(21), net.w(21)], axis=-1)  # NCL: over L
    np_ = node_of(plan_of(net, ln, 21), ln)
    assert np_.rule == "fallback"
    assert "position-local: it works over axes [2]" in reasons(np_)
    assert "include the sequence axis 2" in reasons(np_)


def test_layer_norm_from_the_channel_axis_includes_the_length():
    net = Net()
    ln = net.op("LayerNormalization", [conv_relu(net), net.w(6, 21), net.w(6, 21)], axis=1)
    assert "works over axes [1, 2]" in reasons(node_of(plan_of(net, ln, 21), ln))


def test_layer_norm_with_its_statistics_as_outputs_declines():
    net = Net()
    t = channels_last(net)
    net.nodes.append(helper.make_node("LayerNormalization", [t, net.w(6)], ["ln", "mean"], axis=-1))
    np_ = node_of(plan_of(net, "ln", 13), "ln")
    assert "it has 2 outputs" in reasons(np_)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax", "LpNormalization"])
def test_ops_over_one_channel_axis(op):
    net = Net()
    y = net.op(op, [conv_relu(net)], axis=1)
    plan = plan_of(net, y, 15)
    assert node_of(plan, y).rule == "position-local"
    assert state(plan, y).dims == (6, 15)


def test_mean_variance_normalization_over_channels():
    net = Net()
    y = net.op("MeanVarianceNormalization", [conv_relu(net)], axes=[1])
    assert node_of(plan_of(net, y, 15), y).rule == "position-local"


@pytest.mark.parametrize("keepdims,dims,seq_axis", [(1, (1, 15), 2), (0, (15,), 1)])
@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceLogSumExp",
                                "ReduceProd", "ReduceSumSquare"])
def test_reductions_over_channels(op, keepdims, dims, seq_axis):
    net = Net()
    h = conv_relu(net)
    y = net.op(op, [h, net.const([1])], keepdims=keepdims) if op == "ReduceSum" else \
        net.op(op, [h], axes=[1], keepdims=keepdims)
    plan = plan_of(net, y, 15)
    assert node_of(plan, y).rule == "position-local"
    st = state(plan, y)
    assert (st.dims, st.seq_axis) == (dims, seq_axis)
    assert interval(st) == interval(state(plan, h))


def test_reduction_dropping_an_earlier_axis_moves_the_sequence_axis():
    net = Net()
    h = conv_relu(net)
    u = net.op("Unsqueeze", [h, net.const([1])])  # (N, 1, 6, L)
    y = net.op("ReduceMax", [u], axes=[1, 2], keepdims=0)  # (N, L)
    plan = plan_of(net, y, 15)
    assert (state(plan, u).seq_axis, state(plan, y).seq_axis, state(plan, y).dims) == (3, 1, (15,))


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_over_channels(op):
    net = Net()
    y = net.op(op, [conv_relu(net)], axis=1, keepdims=0)
    plan = plan_of(net, y, 15)
    assert node_of(plan, y).rule == "position-local" and state(plan, y).dims == (15,)


def test_reduction_over_the_length_is_the_exit_and_both_families_are_tried():
    net = Net()
    y = net.op("ReduceMean", [conv_relu(net)], axes=[2], keepdims=1)
    assert node_of(plan_of(net, y, 15), y).rule == "reduce-exit"
    net = Net()
    y = net.op("ReduceL2", [conv_relu(net)], axes=[2], keepdims=1)  # no exit reads ReduceL2
    np_ = node_of(plan_of(net, y, 15), y)
    assert np_.rule == "fallback"
    assert "position-local: it works over axes [2]" in reasons(np_)


def test_softmax_over_the_length_is_the_materialized_exit():
    net = Net()
    y = net.op("Softmax", [conv_relu(net)], axis=2)
    assert node_of(plan_of(net, y, 15), y).rule == "exit"


def test_argmax_default_axis_is_the_batch():
    net = Net()
    y = net.op("ArgMax", [conv_relu(net)])
    assert "it works over the batch axis" in reasons(node_of(plan_of(net, y, 15), y))


def test_reduction_over_every_axis_declines():
    net = Net()
    y = net.op("ReduceMax", [conv_relu(net)], keepdims=1)
    assert "it reduces every axis" in reasons(node_of(plan_of(net, y, 15), y))


def test_instance_normalization_declines():
    net = Net()
    y = net.op("InstanceNormalization", [conv_relu(net), net.w(6), net.w(6)])
    np_ = node_of(plan_of(net, y, 15), y)
    assert np_.rule == "fallback"
    assert "InstanceNormalization normalizes each channel over the spatial axes, the sequence axis included" \
        in reasons(np_)


def test_position_local_output_keeps_the_tile_window():
    net = Net()
    h = conv_relu(net)
    y = net.op("Softmax", [h], axis=1)
    plan = plan_of(net, y, 31, tile_width=5)
    for group in plan.tiling.groups:
        assert group.windows[y] == group.windows[h]
        assert group.states[y].support.lo.tolist() == group.states[h].support.lo.tolist()


def test_channel_split_reshape_is_positional():
    net = Net()
    t = channels_last(net)  # (N, L, 6)
    r = net.op("Reshape", [t, net.const([0, 15, 2, 3])])
    plan = plan_of(net, r, 15)
    assert node_of(plan, r).rule == "positional"
    assert (state(plan, r).dims, state(plan, r).seq_axis) == ((15, 2, 3), 1)


# ----------------------------------------------------------------------------- reference operands


def test_per_sequence_bias_from_a_side_input_is_elementwise():
    net = Net()
    h = conv_relu(net)
    bias = net.op("Unsqueeze", ["cov", net.const([2])])  # (N, 6, 1)
    y = net.op("Add", [h, bias])
    plan = plan_of(net, y, 15, inputs={"cov": ["N", 6]})
    assert node_of(plan, bias).rule == "reference" and bias in plan.side
    assert node_of(plan, y).rule == "elementwise"
    assert interval(state(plan, y)) == interval(state(plan, h))


def test_side_operand_without_the_batch_axis_declines():
    net = Net()
    y = net.op("Add", [conv_relu(net), "bias"])
    np_ = node_of(plan_of(net, y, 15, inputs={"bias": [6, 1]}), y)
    assert "its per-sequence input 'bias' has shape (6, 1), not the full rank 3" in reasons(np_)


def test_squeeze_excitation_scale_is_per_mutant_and_says_why():
    net = Net()
    h = conv_relu(net)
    s = net.op("Sigmoid", [net.op("ReduceMean", [h], axes=[2], keepdims=1)])  # (N, 6, 1): an exit
    y = net.op("Mul", [h, s])
    plan = plan_of(net, y, 15)
    assert isinstance(plan.states[s], MutState)
    np_ = node_of(plan, y)
    assert np_.rule == "fallback" and f"its input {s!r} is already per mutant" in np_.note


@pytest.mark.parametrize("tile_width", [None, 5])
def test_concat_with_a_side_track_along_channels(tile_width):
    net = Net()
    h = conv_relu(net)
    cat = net.op("Concat", [h, "ctl"], axis=1)
    plan = plan_of(net, cat, 15, inputs={"ctl": ["N", 2, 15]}, tile_width=tile_width)
    assert node_of(plan, cat).rule == "positional"
    assert state(plan, cat).dims == (8, 15) and interval(state(plan, cat)) == interval(state(plan, h))
    if tile_width:
        assert all(group.windows[cat] == group.windows[h] for group in plan.tiling.groups)


def test_concat_with_a_side_tensor_along_the_length():
    net = Net()
    h = conv_relu(net)
    cat = net.op("Concat", ["pre", h], axis=2)
    plan = plan_of(net, cat, 15, inputs={"pre": ["N", 6, 3]})
    assert node_of(plan, cat).rule == "positional"
    assert interval(state(plan, cat)) == [(-1, -1)] * 3 + interval(state(plan, h))


def test_concat_with_a_side_tensor_of_unknown_length_declines():
    net = Net()
    cat = net.op("Concat", [conv_relu(net), "ctl"], axis=1)
    np_ = node_of(plan_of(net, cat, 15, inputs={"ctl": ["N", 2, "L"]}), cat)
    assert "the shape of its sequence-independent input 'ctl' is not known statically" in reasons(np_)


def test_concat_along_the_length_has_no_tiled_form():
    from yuzu_onnx.errors import UnsupportedModelError
    net = Net()
    cat = net.op("Concat", ["pre", conv_relu(net)], axis=2)
    with pytest.raises(UnsupportedModelError, match="concatenates along the sequence axis"):
        plan_of(net, cat, 15, inputs={"pre": ["N", 6, 3]}, tile_width=5)


# ----------------------------------------------------------------------------- shapes


def test_shape_of_a_sequence_tensor_is_the_reference_and_its_zeros_are_per_sequence():
    """bpnet-lite's control tracks: zeros of shape (N, 2, L) from the input's shape."""
    net = Net()
    h = conv_relu(net)
    shape = net.op("Shape", ["x"])
    zeros = net.op("ConstantOfShape", [net.op("Concat", [net.op("Slice", [shape, net.const([0]), net.const([1])]),
                                                         net.const([2, 15])], axis=0)])
    cat = net.op("Concat", [h, zeros], axis=1)
    plan = plan_of(net, cat, 15)
    assert node_of(plan, shape).rule == "reference" and "a shape" in node_of(plan, shape).note
    assert shape not in plan.states and zeros in plan.side
    assert node_of(plan, cat).rule == "positional"


def test_shape_without_the_batch_is_a_plain_reference():
    net = Net()
    h = conv_relu(net)
    shape = net.op("Shape", [h], start=1)
    plan = plan_of(net, shape, 15)
    assert node_of(plan, shape).rule == "reference" and shape not in plan.side


def test_size_holding_the_batch_that_shapes_a_sequence_tensor_declines():
    net = Net()
    h = conv_relu(net, c_out=1)  # (N, 1, L)
    shape = net.op("Shape", [h])
    wide = net.op("Expand", [h, net.op("Concat", [net.op("Slice", [shape, net.const([0]), net.const([1])]),
                                                  net.const([6, 15])], axis=0)])
    plan = plan_of(net, wide, 15)
    np_ = node_of(plan, shape)
    assert np_.rule == "fallback"
    assert "static-shape: its value holds the batch size and reaches Expand node" in reasons(np_)


def test_batch_read_by_a_negative_index_is_followed():
    net = Net()
    h = conv_relu(net, c_out=1)  # (N, 1, L)
    shape = net.op("Shape", [h])
    first = net.op("Unsqueeze", [net.op("Gather", [shape, net.const(np.array(-3))]), net.const([0])])  # N
    wide = net.op("Expand", [h, net.op("Concat", [first, net.const([6, 15])], axis=0)])
    np_ = node_of(plan_of(net, wide, 15), shape)
    assert np_.rule == "fallback" and "reaches Expand node" in reasons(np_)


def test_size_is_the_reference_when_its_batch_reaches_no_sequence_tensor():
    net = Net()
    h = conv_relu(net)
    size = net.op("Size", [h])
    zeros = net.op("ConstantOfShape", [net.op("Concat", [net.op("Unsqueeze", [net.op("Div", [size, net.const(90)]),
                                                                              net.const([0])]),
                                                         net.const([6, 15])], axis=0)])  # (N, 6, 15)
    y = net.op("Add", [h, zeros])
    plan = plan_of(net, y, 15)
    assert node_of(plan, size).rule == "reference" and zeros in plan.side
    assert node_of(plan, y).rule == "elementwise"


def test_computed_reshape_target_becomes_a_constant():
    """``h.view(h.shape[0], 15, 2, 3)``: the batch size read by Shape; canonicalization turns
    the target into a constant, so no Shape is left and the reshape stays in probe form."""
    net = Net()
    t = channels_last(net)
    shape = net.op("Shape", [t])
    target = net.op("Concat", [net.op("Slice", [shape, net.const([0]), net.const([1])]), net.const([15, 2, 3])],
                    axis=0)
    r = net.op("Reshape", [t, target])
    plan = plan_of(net, r, 15)
    assert "Shape" not in [n.node.op_type for n in plan.nodes]
    assert node_of(plan, r).rule == "positional"

