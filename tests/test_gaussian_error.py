"""Gaussian sensing: condition numbers, predicted float32 error, automatic probe increase."""

from __future__ import annotations

import math

import numpy as np
import pytest

from yuzu_onnx import convert, naive_ism
from yuzu_onnx.errors import UnsupportedModelError
from yuzu_onnx.report import plan_table
from yuzu_onnx.runtime import run_ism
from yuzu_onnx.sensing import circulant_vector, decoder, predicted_error, size_design

from builders import random_one_hot
from conftest import MODELS_DIR

BASSET = MODELS_DIR / "basset_L101_torchscript.onnx"
BPNET = MODELS_DIR / "bpnet_L61_torchscript.onnx"


def _designs(plan):
    return [n for n in plan.nodes if n.design is not None]


def _measured(model, path, length):
    X = random_one_hot(2, length, seed=3)
    worst = 0.0
    for (y0, ref), (_, y_hat) in zip(naive_ism(str(path), X), run_ism(model, X)):
        delta = np.abs(ref.astype(np.float64) - y0[:, None, None]).max()
        worst = max(worst, float(np.abs(y_hat - ref).max() / delta))
    return worst


@pytest.mark.parametrize("path, length", [(BASSET, 101), (BPNET, 61)])
def test_prediction_bounds_the_measured_error(path, length):
    model, plan = convert(str(path), sensing="gaussian", return_plan=True)
    designs = _designs(plan)
    assert designs, "gaussian sensing planned no gaussian conv"
    predicted = sum(n.design.error for n in designs)
    measured = _measured(model, path, length)
    # the prediction is a bound: measured 0.02-0.25x of it on every committed model
    assert 0 < measured <= predicted, (measured, predicted)


def test_design_condition_number_is_the_blocks():
    a = circulant_vector(30, 0, 4)
    pinv, cond = decoder(a, 20)
    block = a[(np.arange(30)[:, None] - np.arange(20)[None, :]) % 30]
    assert cond == pytest.approx(np.linalg.cond(block), rel=1e-9)
    np.testing.assert_allclose(pinv @ block, np.eye(20), atol=1e-8)
    assert predicted_error(cond, 30, 100) == pytest.approx(cond * 2**-24 * (math.sqrt(30) + 10))


def test_tight_tolerance_raises_probe_counts_and_meets_it():
    _, loose = convert(str(BASSET), sensing="gaussian", return_plan=True)
    model, tight = convert(str(BASSET), sensing="gaussian", tolerance=1e-5, return_plan=True)
    before = {n.node.name: n.design for n in _designs(loose)}
    after = {n.node.name: n.design for n in _designs(tight)}
    assert any(after[k].probes > before[k].probes for k in after), "no conv got more probes"
    assert all(d.error <= 1e-5 for d in after.values())
    assert all(after[k].cond <= before[k].cond for k in after)
    assert _measured(model, BASSET, 101) <= sum(d.error for d in after.values())


def test_unreachable_tolerance_is_refused_with_the_numbers():
    with pytest.raises(UnsupportedModelError, match=r"gaussian sensing cannot meet the tolerance 1e-09 at node "
                                                    r"'.*' \(Conv, K = \d+ unknowns per position\): with \d+ probes "
                                                    r"the decoder's condition number is .*use structured sensing"):
        convert(str(BASSET), sensing="gaussian", tolerance=1e-9)


def test_size_design_returns_none_when_hopeless():
    assert size_design(10, 10, 0, 1, 100, tolerance=1e-12) is None
    design = size_design(10, 10, 0, 1, 100, tolerance=1.0)
    assert design.probes == 10 and design.error <= 1.0


def test_plan_table_shows_condition_numbers():
    _, plan = convert(str(BASSET), sensing="gaussian", return_plan=True)
    table = plan_table(plan)
    assert "(gauss, cond " in table
    assert "gaussian decoding: predicted float32 error <=" in table and "tolerance 0.0001" in table
