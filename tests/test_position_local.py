"""Position-local ops (rules/position_local.py) against brute-force ISM, in the whole-sequence
form and tiled (tiles of 5 and 8, chunks of 1 and 3): normalizations, softmaxes, reductions and
arg-reductions over channels, a channel-splitting reshape, on odd lengths, regions touching
either end, both substitution modes, batch 2, random weights."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from builders import Net, onnx_model, weight
from oracle_modes import MODES, SUBSTITUTIONS, assert_exact, regions

L = 23


def channels_last_block():
    """A Borzoi-style block: LayerNorm over channels of a channels-last tensor, a per-position
    dense layer, a reshape splitting the channels, a max over one of the new axes."""
    n = Net(seed=3)
    h = n.op("Relu", [n.conv("x", 4, 6, 5, pads=[2, 2])])
    t = n.op("Transpose", [h], perm=[0, 2, 1])  # (N, L, 6)
    ln = n.op("LayerNormalization", [t, n.w(6, scale=1.0), n.w(6, scale=0.5)], axis=-1, epsilon=1e-3)
    m = n.op("MatMul", [ln, n.w(6, 6)])
    split = n.op("Reshape", [m, n.const([0, L, 2, 3])])  # (N, L, 2, 3)
    top = n.op("ReduceMax", [split], axes=[3], keepdims=0)  # (N, L, 2)
    back = n.op("Transpose", [top], perm=[0, 2, 1])
    return n.model({"x": ["N", 4, L]}, {"y": n.conv(back, 2, 3, 3, pads=[1, 1])})


def channel_ops():
    """Softmax, LogSoftmax, Hardmax, LpNormalization and MeanVarianceNormalization over the
    channels of an NCL tensor, then reductions over them (keepdims 0 and 1) and an ArgMax."""
    n = Net(seed=4)
    h = n.conv("x", 4, 6, 5, pads=[2, 2])
    parts = [n.op("Softmax", [h], axis=1), n.op("LogSoftmax", [h], axis=1), n.op("Hardmax", [h], axis=1),
             n.op("LpNormalization", [h], axis=1, p=2), n.op("MeanVarianceNormalization", [h], axes=[1])]
    cat = n.op("Concat", parts, axis=1)  # (N, 30, L)
    reductions = [n.op("ReduceL2", [cat], axes=[1], keepdims=1),
                  n.op("ReduceLogSumExp", [cat], axes=[1], keepdims=1),
                  n.op("ReduceSum", [cat, n.const([1])], keepdims=1),
                  n.op("Unsqueeze", [n.op("ReduceMin", [cat], axes=[1], keepdims=0), n.const([1])]),
                  n.op("Cast", [n.op("ArgMax", [h], axis=1, keepdims=1)], to=1)]
    joined = n.op("Concat", reductions + [cat], axis=1)  # (N, 35, L)
    return n.model({"x": ["N", 4, L]}, {"y": n.conv(joined, 35, 2, 3, pads=[1, 1])})


def rms_norm():
    """RMSNormalization (opset 23) over the channels of a channels-last tensor."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[2, 2]),
             helper.make_node("Transpose", ["c1"], ["t"], perm=[0, 2, 1]),
             helper.make_node("RMSNormalization", ["t", "s"], ["r"], axis=-1),
             helper.make_node("Transpose", ["r"], ["b"], perm=[0, 2, 1]),
             helper.make_node("Conv", ["b", "w2", "b2"], ["y"], pads=[1, 1])]
    inits = {"w1": weight(rng, (6, 4, 5)), "b1": weight(rng, 6, 0.5), "s": weight(rng, 6, 1.0),
             "w2": weight(rng, (3, 6, 3)), "b2": weight(rng, 3, 0.1)}
    return onnx_model(nodes, inits, ["N", 4, L], {"y": ["N", 3, L]}, opset=23, ir_version=11)


MODELS = {f.__name__: f for f in (channels_last_block, channel_ops, rms_norm)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("region", regions(L))
@pytest.mark.parametrize("subs", SUBSTITUTIONS)
@pytest.mark.parametrize("name", MODELS)
def test_position_local_ops_are_exact(name, subs, region, mode):
    plan = assert_exact(MODELS[name](), region=region, subs=subs, mode=mode)
    rules = {n.node.op_type: n.rule for n in plan.nodes}
    assert "fallback" not in rules.values(), rules
    if plan.tiling is None:  # a tiled plan may switch to materialized mutants where tiles span everything
        assert [op for op, rule in rules.items() if rule == "position-local"], rules
