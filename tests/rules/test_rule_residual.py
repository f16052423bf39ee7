"""Residual folding (rules/residual.py): ``Add(Conv(x), x)`` runs on probes as one Conv whose
aligned tap carries the identity. Plan-level checks (when it folds, when it declines) and the
converted graph against the naive oracle in the whole and tiled forms."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from builders import Net, random_one_hot
from conftest import assert_matches_oracle, loop_body, original_outputs
from plan_helpers import node_of, plan_of
from yuzu_onnx import convert
from yuzu_onnx.convert import plan_conversion
from yuzu_onnx.emit.conv_layout import source_weight


def residual_tower(*, dilations=(2, 4), pads=None, swap=False, group=1, channels=8, act="Relu", seed=4):
    """``x -> Conv(4 -> C, k5) -> Relu``, then per dilation ``d``: ``act(Add(Conv_d(h), h))``
    (gReLU's dilated tower), then a ReduceMean head; returns (net, output tensor, the Adds)."""
    net = Net(seed=seed)
    h = net.op("Relu", [net.conv("x", 4, channels, 5, pads=[2, 2])])
    adds = []
    for d in dilations:
        conv = net.conv(h, channels, channels, 3, pads=pads or [d, d], dilations=[d], group=group)
        h = net.op("Add", [h, conv] if swap else [conv, h])
        adds.append(h)
        if act:
            h = net.op(act, [h])
    return net, net.op("ReduceMean", [h], axes=[2], keepdims=0), adds


def quiet_convert(model, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(model, return_plan=True, **options)


@pytest.mark.parametrize("swap,group", [(False, 1), (True, 1), (False, 8)])
def test_add_of_conv_and_its_input_folds_into_the_conv(swap, group):
    net, y, adds = residual_tower(swap=swap, group=group)
    plan = plan_of(net, y, 40)
    for add in adds:
        add_plan = node_of(plan, add)
        conv = add_plan.folded_into
        assert add_plan.rule == "residual"
        assert node_of(plan, conv).identity_tap == 1  # pads d, dilation d: the middle tap reads j


@pytest.mark.parametrize("form,options", [("whole", {}), ("tiled", dict(tile_width=3, tiles_per_chunk=2))])
@pytest.mark.parametrize("region", [(0, 61), (20, 41), (55, 61)])
def test_folded_residuals_match_the_oracle(form, options, region):
    """Whole and tiled forms, a region in the middle and one at the sequence end, batch 2; the
    reference output ``y0`` stays the model's bit for bit (only the probes use the folded W)."""
    net, y, _ = residual_tower(dilations=(2, 4, 8))
    model = net.model({"x": ["N", 4, 61]}, {"y": y})
    graph, plan = quiet_convert(model, start=region[0], end=region[1], form=form, **options)
    assert [n.rule for n in plan.nodes].count("residual") == 3
    X = random_one_hot(2, 61, seed=6)
    y0, r0 = assert_matches_oracle(model, graph, X, start=region[0], end=region[1], label=f"{form} {region}")
    assert np.array_equal(y0, original_outputs(model, X)[0])


def test_folded_residual_leaves_no_add_on_probes():
    """The tiled graph has no Add of probes for the residuals and no widening of the skip
    (Concat with reference halos); without folding each residual Add brings both."""
    net, y, _ = residual_tower(dilations=(2, 4))
    model = net.model({"x": ["N", 4, 61]}, {"y": y})
    graph, _ = quiet_convert(model, start=20, end=41, form="tiled", tile_width=3, tiles_per_chunk=2)
    body = loop_body(graph)
    assert not [n for n in body if n.op_type == "Add" and "probe_add" in n.output[0]]
    assert not [n for n in body if n.op_type == "Concat" and "/ext" in n.output[0]]
    # the body's Convs read the two folded weights (their lifted copies; the 3-D originals,
    # read by no node, are dropped from the file)
    folded = {source_weight(n.input[1]) for n in body if n.op_type == "Conv" and "residual_w" in n.input[1]}
    assert len(folded) == 2


def test_depthwise_and_non_middle_tap_fold_exactly():
    """A depthwise Conv (group = C) and asymmetric pads whose aligned tap is not the middle one
    (k = 5, dilation 1, pads 3/1: tap 3 reads j)."""
    net = Net(seed=9)
    h = net.op("Relu", [net.conv("x", 4, 6, 3, pads=[1, 1])])
    conv = net.conv(h, 6, 6, 5, pads=[3, 1], group=6)
    add = net.op("Add", [conv, h])
    y = net.op("ReduceSum", [net.op("Tanh", [add]), net.const([2])], keepdims=0)
    model = net.model({"x": ["N", 4, 37]}, {"y": y})
    for form, options in (("whole", {}), ("tiled", dict(tile_width=4, tiles_per_chunk=3))):
        graph, plan = quiet_convert(model, start=3, end=30, form=form, **options)
        assert node_of(plan, conv).identity_tap == 3
        assert_matches_oracle(model, graph, random_one_hot(2, 37, seed=2), start=3, end=30, label=form)


def test_unit_height_2d_conv_folds():
    """tf2onnx's Conv1D as a 2-D Conv with a (1, k) kernel."""
    net = Net(seed=3)
    x4 = net.op("Unsqueeze", ["x", net.const([2])])
    h = net.op("Relu", [net.op("Conv", [x4, net.w(6, 4, 1, 3), net.w(6, scale=0.5)], pads=[0, 1, 0, 1])])
    conv = net.op("Conv", [h, net.w(6, 6, 1, 3), net.w(6, scale=0.5)], pads=[0, 2, 0, 2], dilations=[1, 2])
    add = net.op("Add", [conv, h])
    y = net.op("ReduceMean", [net.op("Relu", [add])], axes=[2, 3], keepdims=0)
    model = net.model({"x": ["N", 4, 29]}, {"y": y})
    graph, plan = quiet_convert(model, form="whole")
    assert node_of(plan, conv).identity_tap == 1
    assert_matches_oracle(model, graph, random_one_hot(2, 29, seed=5), label="2-D")


def _single_block(pads, dilation, extra_use=False, other=None):
    """One residual block on 33 positions; returns (model, its plan, the Conv's and the Add's outputs)."""
    net = Net(seed=1)
    h = net.op("Relu", [net.conv("x", 4, 6, 3, pads=[1, 1])])
    conv = net.conv(h, 6, 6, 3, pads=pads, dilations=[dilation])
    skip = h if other is None else net.op(other, [h])
    add = net.op("Add", [conv, skip])
    y = net.op("ReduceMean", [add], axes=[2], keepdims=0)
    if extra_use:
        y = net.op("Add", [y, net.op("ReduceMax", [conv], axes=[2], keepdims=0)])
    model = net.model({"x": ["N", 4, 33]}, {"y": y})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = plan_conversion(model, trim=False)
    return model, plan, conv, add


@pytest.mark.parametrize("case", ["misaligned", "conv read twice", "skip is another tensor"])
def test_residual_declines_and_the_add_stays_elementwise(case):
    """No tap reads the output's own position (dilation 2, pads 1/3), the Conv's output feeds
    something else too, or the other operand is not the Conv's input: the Add runs as a plain
    elementwise Add on probes, the Conv with its own weight, and the answers match the oracle."""
    if case == "misaligned":
        model, plan, conv, add = _single_block([1, 3], 2)
    elif case == "conv read twice":
        model, plan, conv, add = _single_block([2, 2], 2, extra_use=True)
    else:
        model, plan, conv, add = _single_block([2, 2], 2, other="Sigmoid")
    assert node_of(plan, add).rule == "elementwise"
    assert node_of(plan, conv).identity_tap is None
    graph, _ = quiet_convert(model, start=5, end=25)
    assert_matches_oracle(model, graph, random_one_hot(2, 33, seed=8), start=5, end=25, label=case)
