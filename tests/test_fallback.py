"""Ops the converter does not accelerate: exact per-mutant fallback, a warning, and the plan.

Each model is hand-built with ``onnx.helper`` (opset 17, IR version 10, random weights): an
accelerated Conv, then an op without a delta rule, then more layers. The converter must warn
(:class:`yuzu_onnx.ConversionWarning` naming the op), mark the op ``fallback`` in the plan while
the Conv before it stays ``window``, and still match :func:`yuzu_onnx.naive_ism`.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import helper

from builders import onnx_model, random_one_hot, weight
from conftest import A, BATCH, assert_ism_close, assert_y0_close, original_outputs
from yuzu_onnx import ConversionWarning, InputValidationError, convert, naive_ism, run_ism

L = 24  # sequence length
C1 = 6  # channels of the first conv
C2 = 3  # channels of the second conv
K1 = 5
K2 = 3
D = 5  # dense outputs


def _model(name: str, nodes, out_shape, inits: dict, batch="N") -> onnx.ModelProto:
    return onnx_model(nodes, inits, [batch, A, L], {"y": [batch, *out_shape]}, name=name, check=True)


def cumsum_model() -> onnx.ModelProto:
    """Conv -> CumSum along the length axis -> Conv -> Relu."""
    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[2, 2], kernel_shape=[K1], name="conv1"),
        helper.make_node("CumSum", ["c1", "axis"], ["cs"], name="cumsum"),
        helper.make_node("Conv", ["cs", "w2", "b2"], ["c2"], pads=[1, 1], kernel_shape=[K2], name="conv2"),
        helper.make_node("Relu", ["c2"], ["y"], name="relu"),
    ]
    inits = {"w1": weight(rng, (C1, A, K1), 0.5), "b1": weight(rng, C1, 0.5), "w2": weight(rng, (C2, C1, K2), 0.2),
             "b2": weight(rng, C2, 0.5), "axis": np.array(2, dtype=np.int64)}
    return _model("cumsum", nodes, [C2, L], inits)


def softmax_model(op: str = "Softmax", axis: int = 1) -> onnx.ModelProto:
    """Conv -> Softmax over the channel axis (position-local: accelerated) -> Conv; with
    ``op="Hardmax", axis=2`` an op over the length that no rule accelerates."""
    rng = np.random.default_rng(12)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[2, 2], kernel_shape=[K1], name="conv1"),
        helper.make_node(op, ["c1"], ["sm"], axis=axis, name=op.lower()),
        helper.make_node("Conv", ["sm", "w2", "b2"], ["y"], pads=[1, 1], kernel_shape=[K2], name="conv2"),
    ]
    inits = {"w1": weight(rng, (C1, A, K1), 1.0), "b1": weight(rng, C1, 0.5), "w2": weight(rng, (C2, C1, K2), 1.0),
             "b2": weight(rng, C2, 0.5)}
    return _model("softmax", nodes, [C2, L], inits)


def reducel2_model(batch="N") -> onnx.ModelProto:
    """Conv -> ReduceL2 over the length axis (keepdims) -> Flatten/Reshape -> Gemm.

    With a fixed ``batch`` the flatten is a Reshape to ``[batch, C1]`` as exporters write it.
    """
    rng = np.random.default_rng(13)
    if batch == "N":
        flat = helper.make_node("Flatten", ["rm"], ["f"], axis=1, name="flatten")
        extra = {}
    else:
        flat = helper.make_node("Reshape", ["rm", "shape"], ["f"], name="reshape")
        extra = {"shape": np.array([batch, C1], dtype=np.int64)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[2, 2], kernel_shape=[K1], name="conv1"),
        helper.make_node("ReduceL2", ["c1"], ["rm"], axes=[2], keepdims=1, name="reducel2"),
        flat,
        helper.make_node("Gemm", ["f", "wd", "bd"], ["y"], transB=1, name="dense"),
    ]
    inits = {"w1": weight(rng, (C1, A, K1), 1.0), "b1": weight(rng, C1, 0.5), "wd": weight(rng, (D, C1), 1.0),
             "bd": weight(rng, D, 0.5), **extra}
    return _model("reducel2", nodes, [D], inits, batch=batch)


MODELS = {
    "cumsum": (cumsum_model, "CumSum"),
    "hardmax": (lambda: softmax_model("Hardmax", 2), "Hardmax"),
    "reducel2": (reducel2_model, "ReduceL2"),
    "reducel2_batch1": (lambda: reducel2_model(batch=1), "ReduceL2"),
}
REGIONS = {"full": (0, L), "middle": (8, 15), "first": (0, 4), "last": (L - 4, L)}


def _convert_with_warnings(model, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted, plan = convert(model, return_plan=True, **kwargs)
    return converted, plan, [w for w in caught if issubclass(w.category, ConversionWarning)]


@pytest.mark.parametrize("name", list(MODELS))
def test_warns_and_plans_fallback(name):
    build, op = MODELS[name]
    _, plan, caught = _convert_with_warnings(build())
    assert caught, f"no ConversionWarning for {op}"
    assert any(op in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert len(caught) == 1, f"expected one warning (only {op} falls back): {[str(w.message) for w in caught]}"
    rules = [(n.node.op_type, n.rule) for n in plan.nodes]
    ops = [o for o, _ in rules]
    i = ops.index(op)
    assert rules[i][1] == "fallback", rules
    before = [r for o, r in rules[:i] if o == "Conv"]
    assert before == ["window"], f"the Conv before {op} should be accelerated: {rules}"
    # everything after the fallback runs per mutant (it consumes materialized mutants)
    assert all(r in ("per-mutant", "fallback") for _, r in rules[i + 1:]), rules


def test_pytest_warns_names_op():
    with pytest.warns(ConversionWarning, match="CumSum"):
        convert(cumsum_model())


@pytest.mark.parametrize("region", list(REGIONS))
@pytest.mark.parametrize("subs", ["alt", "all"])
@pytest.mark.parametrize("name", list(MODELS))
def test_fallback_is_exact(name, subs, region):
    build, _ = MODELS[name]
    model = build()
    start, end = REGIONS[region]
    X = random_one_hot(BATCH, L, seed=21)
    if subs == "all":
        X[0, :, (start + end) // 2] = 0.0
        X[1, :, start] = 0.25
    converted, _, _ = _convert_with_warnings(model, start=start, end=end, substitutions=subs)
    result = run_ism(converted, X, batch_size=BATCH)
    naive = naive_ism(model, X, start, end)
    original = original_outputs(model, X)
    for (y0, y_hat), (n0, n_hat), ref in zip(result, naive, original):
        label = f"{name} {subs} [{start}, {end})"
        assert_y0_close(y0, ref, label=label)
        assert_ism_close(y_hat, n_hat, n0, start=start, label=label)
        for sl in (slice(0, 3), slice(end - start - 3, end - start)):
            assert_ism_close(y_hat, n_hat, n0, start=start, positions=sl, label=f"{label} edge {sl}")


# ----------------------------------------------------------------------------- N columns


def _input_with_n():
    X = random_one_hot(BATCH, L, seed=31)
    X[1, :, 7] = 0.0  # an "N" column at position 7 of sequence 1
    return X


def test_alt_rejects_n_column_with_position():
    model = softmax_model()
    converted, _, _ = _convert_with_warnings(model, substitutions="alt")
    with pytest.raises(InputValidationError, match=r"sequence 1, position 7\b"):
        run_ism(converted, _input_with_n())


def test_alt_rejects_soft_column_with_position():
    converted, _, _ = _convert_with_warnings(softmax_model(), start=10, end=20, substitutions="alt")
    X = random_one_hot(BATCH, L, seed=32)
    X[0, :, 13] = 0.25
    with pytest.raises(InputValidationError, match=r"sequence 0, position 13\b"):
        run_ism(converted, X)


def test_all_mode_is_exact_on_n_column():
    model = softmax_model()
    X = _input_with_n()
    converted, _, _ = _convert_with_warnings(model, substitutions="all")
    result = run_ism(converted, X)
    naive = naive_ism(model, X)
    for (y0, y_hat), (n0, n_hat), ref in zip(result, naive, original_outputs(model, X)):
        assert_y0_close(y0, ref)
        assert_ism_close(y_hat, n_hat, n0, label="softmax all, N column")
        # the N column has no reference character: every one of its A slots is a real mutant
        assert not np.allclose(y_hat[1, :, 7], y0[1])
