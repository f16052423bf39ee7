"""Conv and pooling rules on hand-built models: every padding mode, stride, dilation and
ceil_mode, both Conv implementations (direct and per-tap), against the naive oracle."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from yuzu_onnx import convert, naive_ism, run_ism
from yuzu_onnx.convert import plan_conversion

from builders import conv_pair, onnx_model, random_one_hot
from conftest import assert_ism_close

CONV_CASES = {
    "pads": dict(pads=[3, 1]),
    "stride2": dict(strides=[2], pads=[2, 2]),
    "stride3_dil2": dict(strides=[3], dilations=[2]),
    "same_upper": dict(auto_pad="SAME_UPPER", strides=[2]),
    "same_lower": dict(auto_pad="SAME_LOWER"),
    "valid": dict(auto_pad="VALID", dilations=[3]),
}


def _conv_net(length: int, c_mid: int, c_out: int, kernel: int, attrs: dict, seed: int = 0) -> onnx.ModelProto:
    nodes, inits = conv_pair(rng=seed, c1=c_mid, c2=c_out, k2=kernel, mid="Tanh", conv2=attrs,
                             scales=(1.0, 1.0, None, 1.0))
    return onnx_model(nodes, inits, ["N", 4, length], infer_shapes=True)


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
    nodes, inits = conv_pair(rng=3, c1=6, c2=5, k1=3, k2=3, mid=[(op, attrs)], conv1={}, scales=(1.0,) * 4)
    model = onnx_model(nodes, inits, ["N", 4, 37], infer_shapes=True)
    plan = plan_conversion(model)
    assert [n.rule for n in plan.nodes] == ["window", "window", "window"]
    _check(model)
    _check(model, start=30, end=37)
