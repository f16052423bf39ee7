"""Selections by arithmetic in finite models (yuzu_onnx/emit/finite.py): a whole-form
materialization picks between the probes' values and the reference with ``x * m + r * (1 - m)``
where every probe-form op keeps finite values finite, with ONNX Runtime's Where elsewhere (and in
tiles, whose chunks are sized to memory); both
agree with the naive oracle, and where a probe can hold an infinity the Where is what keeps the
other mutants' outputs finite."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from builders import Net, random_one_hot
from conftest import assert_matches_oracle, loop_body
from yuzu_onnx import convert, naive_ism
from yuzu_onnx.emit.finite import _keeps_finite

LENGTH = 37


def _per_position(activation: str) -> onnx.ModelProto:
    """Conv k5 -> ``activation`` -> Conv k3: an output per position, so every mutant's output
    tensor is materialized from the probes."""
    net = Net(seed=17)
    h = net.op(activation, [net.conv("x", 4, 6, 5, pads=[2, 2])])
    return net.model({"x": ["N", 4, LENGTH]}, {"y": net.conv(h, 6, 2, 3, pads=[1, 1])})


def _convert(model: onnx.ModelProto, **kwargs) -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(model, **kwargs)


def _selects(nodes, hint: str) -> tuple[int, int]:
    """(Wheres, Adds) whose output is named after the materialization ``hint``."""
    named = [n for n in nodes if any(hint in o for o in n.output)]
    return (sum(n.op_type == "Where" for n in named), sum(n.op_type == "Add" for n in named))


@pytest.mark.parametrize("region", [(0, LENGTH), (4, 19), (30, LENGTH)])
def test_a_finite_models_materialization_is_arithmetic_and_exact(region):
    model = _per_position("Relu")
    graph = _convert(model, start=region[0], end=region[1], form="whole")
    assert _selects(graph.graph.node, "mat_full") == (0, 1)
    assert_matches_oracle(model, graph, random_one_hot(2, LENGTH, seed=3), start=region[0], end=region[1],
                          label=f"whole {region}")


def test_a_tiled_materialization_keeps_its_where_and_is_exact():
    """Tiles select with a Where: the arithmetic's two full-size products would sit in ONNX
    Runtime's arena beside the sum, beyond the memory the chunk was sized for."""
    model = _per_position("Tanh")
    graph = _convert(model, start=3, end=31, form="tiled", tile_width=4)
    body = loop_body(graph)
    assert _selects(body, "mat_whole") == (1, 0)
    assert_matches_oracle(model, graph, random_one_hot(2, LENGTH, seed=5), start=3, end=31, label="tiled")


def _overflowing() -> tuple[onnx.ModelProto, np.ndarray]:
    """Conv -> Exp -> Conv where letter T (channel 3) drives the first Conv to 200 (Exp: +inf in
    float32) and the other letters stay small, and a reference without T: mutants to T give
    +inf where they reach, every other mutant stays finite."""
    net = Net(seed=2)
    w = np.zeros((3, 4, 1), dtype=np.float32)
    w[:, :3, 0] = net.rng.normal(0, 0.3, (3, 3))
    w[:, 3, 0] = 200.0
    h = net.op("Exp", [net.op("Conv", ["x", net.const(w), net.w(3, scale=0.1)])])
    head = np.abs(net.rng.normal(0, 0.5, (1, 3, 3))).astype(np.float32)  # inf + inf, never inf - inf
    model = net.model({"x": ["N", 4, LENGTH]}, {"y": net.op("Conv", [h, net.const(head), net.w(1)], pads=[1, 1])})
    letters = np.random.default_rng(4).integers(0, 3, (2, LENGTH))
    return model, np.eye(4, dtype=np.float32)[letters].transpose(0, 2, 1)


def test_an_op_that_can_overflow_keeps_the_where():
    """With arithmetic, the T mutant sharing a probe with another mutant would turn that
    mutant's reference positions into inf * 0 = NaN."""
    model, X = _overflowing()
    graph = _convert(model, form="whole")
    assert _selects(graph.graph.node, "mat_full") == (1, 0)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": X})[1]
    ((_, want),) = naive_ism(model, X)
    assert np.isposinf(want).any() and not np.isnan(want).any()
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    assert not np.isnan(got).any()
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5 * float(np.abs(want[finite]).max()))


def test_non_finite_weights_keep_the_where():
    model = _per_position("Relu")
    weight = next(t for t in model.graph.initializer if len(t.dims) == 3)
    values = onnx.numpy_helper.to_array(weight).copy()
    values[0, 0, 0] = np.inf
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    assert _selects(_convert(model, form="whole").graph.node, "mat_full") == (1, 0)


def test_division_keeps_values_finite_only_by_a_constant_without_zeros():
    weights = {"c": onnx.numpy_helper.from_array(np.array([1.4142135], np.float32), "c"),
               "z": onnx.numpy_helper.from_array(np.array([2.0, 0.0], np.float32), "z")}
    div = lambda divisor: onnx.helper.make_node("Div", ["t", divisor], ["u"])  # noqa: E731
    assert _keeps_finite(div("c"), weights)
    assert not _keeps_finite(div("z"), weights)  # x / 0 = inf
    assert not _keeps_finite(div("computed"), weights)
    assert not _keeps_finite(onnx.helper.make_node("Exp", ["t"], ["u"]), weights)
    assert _keeps_finite(onnx.helper.make_node("Softplus", ["t"], ["u"]), weights)
