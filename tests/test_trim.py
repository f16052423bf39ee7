"""Trimming the region to the positions whose mutations reach an output (:mod:`yuzu_onnx.trim`).

The models crop their last conv's output by more than its receptive field reaches (as gReLU's
``crop_len=557`` on a 2114 bp input does): mutations near either end change nothing the
outputs keep. Each test compares with brute-force ISM, which computes those mutants too.
"""

from __future__ import annotations

import numpy as np
import pytest

from builders import Net, random_one_hot
from oracle_modes import SUBSTITUTIONS, assert_exact
from yuzu_onnx import naive_ism
from yuzu_onnx.convert import convert, plan_conversion
from yuzu_onnx.report import plan_table

LENGTH = 53
CROP = (11, 8)  # positions the crop drops at the start and at the end
#: receptive field of the convs: k=5 (+-2) then k=3 dilation 2 (+-2): a mutation at ``i`` reaches
#: the crop's input at ``i-4..i+4``, so the crop keeps what mutations at ``11-4 .. 53-8-1+4`` change
REACHED = (CROP[0] - 4, LENGTH - CROP[1] + 4)


def cropped_model(activation: str | None = "Relu", head: str = "pool"):
    """``x -> Conv(k5, same) -> act -> Conv(k3, dil 2, same) -> crop -> head``; heads: ``pool``
    (global average + dense: one vector per sequence), ``profile`` (the cropped track itself) or
    ``both``."""
    net = Net(seed=11)
    h = net.conv("x", 4, 6, 5, pads=[2, 2])
    if activation:
        h = net.op(activation, [h])
    h = net.conv(h, 6, 3, 3, pads=[2, 2], dilations=[2])
    crop = net.op("Slice", [h, net.const([CROP[0]]), net.const([LENGTH - CROP[1]]), net.const([2])])
    pooled = net.op("Flatten", [net.op("GlobalAveragePool", [crop])])
    outputs = {"pool": {"y": net.op("MatMul", [pooled, net.w(3, 2)])}, "profile": {"y": crop}}
    outputs["both"] = {**outputs["pool"], "track": crop}
    return net.model({"x": [None, 4, LENGTH]}, outputs[head])


def test_plan_trims_to_the_reached_positions():
    plan = plan_conversion(cropped_model())
    assert (plan.start, plan.end) == REACHED
    assert plan.requested == (0, LENGTH)
    assert plan.requested_mutants == 3 * LENGTH and plan.mutants == 3 * (REACHED[1] - REACHED[0])
    untrimmed = plan_conversion(cropped_model(), trim=False)  # naive and floor count the region asked for
    assert untrimmed.requested is None and (untrimmed.start, untrimmed.end) == (0, LENGTH)
    assert {k: plan.totals()[k] for k in ("naive", "floor")} == {k: untrimmed.totals()[k] for k in ("naive", "floor")}
    assert plan.totals()["converted"] < untrimmed.totals()["converted"]
    table = plan_table(plan)
    assert f"positions 0..{LENGTH - 1}" in table and f"computed: positions {REACHED[0]}..{REACHED[1] - 1}" in table


def test_reached_region_is_exactly_where_outputs_change():
    """Without an activation every mutation inside the hull changes the pooled output and none
    outside does: the trimmed region is neither too narrow (wrong) nor too wide (slow)."""
    model = cropped_model(activation=None)
    X = random_one_hot(1, LENGTH, seed=3)
    ((y0, y_hat),) = naive_ism(model, X)
    changed = np.abs(y_hat - y0[:, None, None]).max(axis=(0, 1, 3)) > 1e-6
    assert (np.flatnonzero(changed)[[0, -1]] == [REACHED[0], REACHED[1] - 1]).all()
    plan = plan_conversion(model)
    assert (plan.start, plan.end) == REACHED


def test_region_inside_the_reach_is_not_trimmed():
    plan = plan_conversion(cropped_model(), start=REACHED[0] + 1, end=REACHED[1] - 2)
    assert plan.requested is None and (plan.start, plan.end) == (REACHED[0] + 1, REACHED[1] - 2)


@pytest.mark.parametrize("subs", SUBSTITUTIONS)
@pytest.mark.parametrize("head", ["pool", "profile", "both"])
@pytest.mark.parametrize("mode", [(None, 1), (4, 1), (3, 2)], ids=["whole", "T4c1", "T3c2"])
@pytest.mark.parametrize("region", [(0, LENGTH), (0, 6), (2, 17), (40, LENGTH)],
                         ids=["full", "unreached", "start", "end"])
def test_trimmed_plans_are_exact(subs, head, mode, region):
    """Every form, both substitution modes, a region reaching nothing (``0..5``: no trimming,
    computed as asked) and regions overlapping either unreached margin, batch 2."""
    plan = assert_exact(cropped_model(head=head), region=region, subs=subs, mode=mode)
    expected = {(0, LENGTH): REACHED, (0, 6): (0, 6), (2, 17): (REACHED[0], 17), (40, LENGTH): (40, REACHED[1])}
    assert (plan.start, plan.end) == expected[region]


@pytest.mark.parametrize("subs", SUBSTITUTIONS)
def test_trimmed_brute_force_is_exact(subs):
    converted, plan = convert(cropped_model(head="both"), form="brute-force", substitutions=subs, return_plan=True)
    assert plan.requested == (0, LENGTH) and (plan.start, plan.end) == REACHED
    X = random_one_hot(2, LENGTH, seed=7)
    if subs == "all":
        X[1, :, 0] = 0  # an N column in an unreached position
    import onnxruntime as ort
    got = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})
    for k, (y0, y_hat) in enumerate(naive_ism(cropped_model(head="both"), X)):
        np.testing.assert_allclose(got[2 + k], y_hat, rtol=1e-5, atol=1e-6)
