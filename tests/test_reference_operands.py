"""Sequence-independent operands of probe-form nodes against brute-force ISM, whole-sequence and
tiled: broadcasts between sequence tensors, per-channel and per-sequence biases along the
length, tracks that vary along it (a constant embedding, a side input), side inputs with a
static batch of 1, Concat with a control track (BPNet with control tracks), Concat along the
length; and a squeeze-excitation block, which runs per mutant exactly."""

from __future__ import annotations

import numpy as np
import pytest

from builders import Net
from oracle_modes import MODES, SUBSTITUTIONS, assert_exact, regions

L = 23


def side_values(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    draw = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return {"cov": draw(2, 6), "track": draw(2, 1, L), "b1": draw(1, 6, 1), "ctl": draw(2, 2, L)}


def broadcasts():
    n = Net(seed=6)
    h = n.conv("x", 4, 6, 5, pads=[2, 2])
    gate = n.op("Sigmoid", [n.op("ReduceMax", [h], axes=[1], keepdims=1)])  # (N, 1, L), a sequence tensor
    m = n.op("Mul", [h, gate])  # broadcasts (N, 1, L) over channels
    m = n.op("Add", [m, n.const(np.random.default_rng(1).standard_normal((1, 6, L)).astype(np.float32))])
    m = n.op("Add", [m, n.op("Unsqueeze", ["cov", n.const([2])])])  # (N, 6, 1) per sequence
    m = n.op("Mul", [m, n.op("Tanh", ["track"])])  # (N, 1, L) side track
    m = n.op("Add", [m, "b1"])  # (1, 6, 1): a side input with a static batch of 1
    profile = n.conv(n.op("Concat", [n.op("Relu", [m]), "ctl"], axis=1), 8, 3, 3, pads=[1, 1])  # control tracks
    return n.model({"x": ["N", 4, L], "cov": ["N", 6], "track": ["N", 1, L], "b1": [1, 6, 1], "ctl": ["N", 2, L]},
                   {"y": profile})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("region", regions(L))
@pytest.mark.parametrize("subs", SUBSTITUTIONS)
def test_reference_operands_are_exact(subs, region, mode):
    plan = assert_exact(broadcasts(), region=region, subs=subs, mode=mode, side=side_values())
    assert "fallback" not in [n.rule for n in plan.nodes]
    if plan.tiling is None:  # a tiled plan may switch to materialized mutants where tiles span everything
        assert [n.rule for n in plan.nodes if n.node.op_type == "Concat"] == ["positional"]


def concat_along_the_length():
    """A learned flank (a side input) concatenated before the sequence's features."""
    n = Net(seed=7)
    h = n.op("Relu", [n.conv("x", 4, 6, 5, pads=[2, 2])])
    cat = n.op("Concat", ["flank", h], axis=2)  # (N, 6, 3 + L)
    return n.model({"x": ["N", 4, L], "flank": ["N", 6, 3]}, {"y": n.conv(cat, 6, 2, 3)})


@pytest.mark.parametrize("region", regions(L))
@pytest.mark.parametrize("subs", SUBSTITUTIONS)
def test_concat_along_the_length_with_a_side_tensor(subs, region):
    flank = {"flank": np.random.default_rng(2).standard_normal((2, 6, 3)).astype(np.float32)}
    plan = assert_exact(concat_along_the_length(), region=region, subs=subs, mode=(None, 1), side=flank)
    assert "fallback" not in [n.rule for n in plan.nodes]


def squeeze_excitation():
    n = Net(seed=8)
    h = n.op("Relu", [n.conv("x", 4, 6, 5, pads=[2, 2])])
    s = n.op("Sigmoid", [n.op("MatMul", [n.op("Flatten", [n.op("GlobalAveragePool", [h])], axis=1), n.w(6, 6)])])
    scaled = n.op("Mul", [h, n.op("Unsqueeze", [s, n.const([2])])])  # x * s(mean(x)): s is per mutant
    return n.model({"x": ["N", 4, L]}, {"y": n.conv(scaled, 6, 2, 3, pads=[1, 1])})


@pytest.mark.parametrize("mode", MODES)
def test_squeeze_excitation_runs_per_mutant_exactly(mode):
    plan = assert_exact(squeeze_excitation(), region=(0, L), subs="alt", mode=mode)
    mul = next(n for n in plan.nodes if n.node.op_type == "Mul")
    assert mul.rule in ("fallback", "exit") and "per mutant" in mul.note


def batch_one_export():
    """As dynamo exports bpnet-lite: the batch fixed to 1 and the zero control tracks
    ``x.new_zeros(1, 2, L)`` a constant concatenated with the profile features."""
    n = Net(seed=12)
    h = n.op("Relu", [n.conv("x", 4, 6, 5, pads=[2, 2])])
    cat = n.op("Concat", [h, n.const(np.zeros((1, 2, L), np.float32))], axis=1)
    return n.model({"x": [1, 4, L]}, {"y": n.conv(cat, 8, 3, 3, pads=[1, 1])})


@pytest.mark.parametrize("mode", MODES)
def test_batch_one_constant_in_a_concat_is_expanded_to_the_batch(mode):
    """The converted graph runs any batch (here 2; the oracle feeds the original one sequence
    at a time): the constant becomes an Expand to the input's batch at canonicalization."""
    plan = assert_exact(batch_one_export(), region=(0, L), subs="alt", mode=mode)
    cats = [n.rule for n in plan.nodes if n.node.op_type == "Concat"]  # the Expand's target, the model's
    assert cats == ["reference", "positional"] or plan.tiling is not None
    assert plan.infos[plan.outputs[0]].shape[0] is None
