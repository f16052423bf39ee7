"""Conv and pooling rules on hand-built models: every padding mode, stride, dilation and
ceil_mode, both Conv implementations (direct and per-tap), against the naive oracle."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx import convert, naive_ism, run_ism
from yuzu_onnx.convert import plan_conversion

from conftest import assert_ism_close, random_one_hot

CONV_CASES = {
    "pads": dict(pads=[3, 1]),
    "stride2": dict(strides=[2], pads=[2, 2]),
    "stride3_dil2": dict(strides=[3], dilations=[2]),
    "same_upper": dict(auto_pad="SAME_UPPER", strides=[2]),
    "same_lower": dict(auto_pad="SAME_LOWER"),
    "valid": dict(auto_pad="VALID", dilations=[3]),
}


def _model(nodes, inits, length: int, out_shape) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, length])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def _conv_net(length: int, c_mid: int, c_out: int, kernel: int, attrs: dict, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = {
        "w1": rng.standard_normal((c_mid, 4, 5)).astype(np.float32),
        "b1": rng.standard_normal(c_mid).astype(np.float32),
        "w2": (rng.standard_normal((c_out, c_mid, kernel)) / np.sqrt(c_mid * kernel)).astype(np.float32),
        "b2": rng.standard_normal(c_out).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[2, 2]),
             helper.make_node("Tanh", ["c1"], ["t1"]),
             helper.make_node("Conv", ["t1", "w2", "b2"], ["y"], **attrs)]
    return _model(nodes, inits, length, None)


def _check(model: onnx.ModelProto, start: int = 0, end: int | None = None, subs: str = "alt") -> None:
    length = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    X = random_one_hot(2, length, seed=7)
    converted = convert(model, start=start, end=end, substitutions=subs)
    (y0, y_hat), = run_ism(converted, X)
    (r0, r_hat), = naive_ism(model, X, start=start, end=end)
    np.testing.assert_allclose(y0, r0, rtol=1e-5, atol=1e-5)
    assert_ism_close(y_hat, r_hat, r0, start=start)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("c_out", [2, 24], ids=["taps", "direct"])
def test_conv_attributes(case, c_out):
    model = _conv_net(length=41, c_mid=16, c_out=c_out, kernel=7, attrs=CONV_CASES[case])
    plan = plan_conversion(model)
    impl = plan.nodes[-1].conv_impl
    assert impl == ("taps" if c_out == 2 else "conv")
    _check(model)
    _check(model, start=3, end=11, subs="all")


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3], strides=[2], ceil_mode=1),
                                   dict(kernel_shape=[4], strides=[3], pads=[1, 2]),
                                   dict(kernel_shape=[3], auto_pad="SAME_UPPER", strides=[2]),
                                   dict(kernel_shape=[2], strides=[2])],
                         ids=["ceil", "pads", "same", "plain"])
def test_pool_attributes(op, attrs):
    if op == "AveragePool" and "pads" in attrs:
        attrs = dict(attrs, count_include_pad=1)
    rng = np.random.default_rng(3)
    inits = {"w1": rng.standard_normal((6, 4, 3)).astype(np.float32),
             "w2": rng.standard_normal((5, 6, 3)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]),
             helper.make_node(op, ["c1"], ["p1"], **attrs),
             helper.make_node("Conv", ["p1", "w2"], ["y"], pads=[1, 1])]
    model = _model(nodes, inits, 37, None)
    plan = plan_conversion(model)
    assert [n.rule for n in plan.nodes] == ["window", "window", "window"]
    _check(model)
    _check(model, start=30, end=37)
