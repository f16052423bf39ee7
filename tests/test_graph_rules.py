"""Rules for general graphs on hand-built models: residual adds, concatenation, crops, pads,
axis moves (channels-last, tf2onnx's 2-D Conv1D form), depthwise convs, global pooling exits,
softmax heads and several outputs, each against the naive oracle."""

from __future__ import annotations

import numpy as np
import pytest

from yuzu_onnx import naive_ism, run_ism
from yuzu_onnx.convert import convert

from builders import Net, random_one_hot
from conftest import assert_ism_close

L = 33


def residual():
    n = Net()
    h = n.op("Relu", [n.conv("x", 4, 8, 5, pads=[2, 2])])
    r = n.op("Add", [h, n.op("Relu", [n.conv(h, 8, 8, 3, pads=[2, 2], dilations=[2])])])
    return n.model({"x": ["N", 4, L]}, {"y": n.conv(r, 8, 2, 9, pads=[4, 4])})


def concat_channels():
    n = Net()
    a = n.op("Relu", [n.conv("x", 4, 6, 3, pads=[1, 1])])
    b = n.op("Tanh", [n.conv("x", 4, 5, 7, pads=[3, 3])])
    cat = n.op("Concat", [a, b], axis=1)
    return n.model({"x": ["N", 4, L]}, {"y": n.conv(cat, 11, 3, 3)})


def chrombpnet_crop():
    """Valid convs with center-cropped residuals, then concat along length and a pad."""
    n = Net()
    c1 = n.op("Relu", [n.conv("x", 4, 8, 5)])  # L-4
    c2 = n.op("Relu", [n.conv(c1, 8, 8, 3, dilations=[2])])  # L-8
    crop = n.op("Slice", [c1, n.const([2]), n.const([L - 6]), n.const([2])])
    res = n.op("Add", [c2, crop])
    padded = n.op("Pad", [res, n.const([0, 0, 3, 0, 0, 1])])
    return n.model({"x": ["N", 4, L]}, {"y": n.conv(padded, 8, 2, 5)})


def channels_last():
    n = Net()
    t = n.op("Transpose", ["x"], perm=[0, 2, 1])
    h = n.op("Relu", [n.conv(t, 4, 6, 5, pads=[2, 2])])
    back = n.op("Transpose", [h], perm=[0, 2, 1])  # (N, L, 6)
    flat = n.op("Flatten", [back], axis=1)
    return n.model({"x": ["N", L, 4]}, {"y": n.op("MatMul", [flat, n.w(L * 6, 3)])})


def tf2onnx_conv1d():
    """Keras Conv1D/MaxPooling1D as tf2onnx writes them: 2-D ops with a unit height."""
    n = Net()
    u = n.op("Unsqueeze", ["x", n.const([1])])  # (N, 1, L, 4)
    t = n.op("Transpose", [u], perm=[0, 3, 1, 2])  # (N, 4, 1, L)
    c = n.op("Conv", [t, n.w(6, 4, 1, 5), n.w(6, scale=0.5)], kernel_shape=[1, 5], pads=[0, 2, 0, 2])
    p = n.op("MaxPool", [n.op("Relu", [c])], kernel_shape=[1, 2], strides=[1, 2])
    s = n.op("Squeeze", [p, n.const([2])])  # (N, 6, L//2)
    back = n.op("Transpose", [s], perm=[0, 2, 1])
    flat = n.op("Reshape", [back, n.const([-1, (L // 2) * 6])])
    return n.model({"x": ["N", L, 4]}, {"y": n.op("Sigmoid", [n.op("MatMul", [flat, n.w((L // 2) * 6, 3)])])})


def depthwise():
    n = Net()
    h = n.op("Relu", [n.conv("x", 4, 8, 3, pads=[1, 1])])
    d = n.conv(h, 8, 8, 5, pads=[2, 2], group=8)
    return n.model({"x": ["N", 4, L]}, {"y": n.conv(n.op("Elu", [d]), 8, 2, 3)})


def heads():
    """BPNet-like: a softmax profile head and a counts head from global pooling, plus a
    ReduceSum head."""
    n = Net()
    h = n.op("Relu", [n.conv("x", 4, 8, 7, pads=[3, 3])])
    profile = n.op("Softmax", [n.conv(h, 8, 2, 5, pads=[2, 2])], axis=2)
    gap = n.op("Flatten", [n.op("GlobalAveragePool", [h])], axis=1)
    counts = n.op("Gemm", [gap, n.w(8, 2)])
    total = n.op("ReduceSum", [h, n.const([2])], keepdims=0)
    return n.model({"x": ["N", 4, L]}, {"profile": profile, "counts": counts, "total": total})


CASES = {f.__name__: f for f in (residual, concat_channels, chrombpnet_crop, channels_last, tf2onnx_conv1d,
                                 depthwise, heads)}


@pytest.mark.parametrize("region", [(0, L), (L - 5, L), (0, 4)], ids=["full", "last", "first"])
@pytest.mark.parametrize("subs", ["alt", "all"])
@pytest.mark.parametrize("case", CASES)
def test_accelerated_and_exact(case, subs, region):
    model = CASES[case]()
    start, end = region
    # the whole form: what the rules do (on graphs this small the planner may well pick brute force)
    converted, plan = convert(model, start=start, end=end, substitutions=subs, return_plan=True, form="whole")
    assert not [n for n in plan.nodes if n.rule == "fallback"], plan.nodes
    assert any(n.rule == "window" for n in plan.nodes)
    layout = plan.seq.layout
    X = random_one_hot(2, L, seed=0, layout=layout)
    got = run_ism(converted, X)
    expected = naive_ism(model, X, start=start, end=end, layout=layout)
    assert len(got) == len(expected) == len(model.graph.output)
    for (y0, y_hat), (r0, r_hat) in zip(got, expected):
        np.testing.assert_allclose(y0, r0, rtol=1e-5, atol=1e-6)
        assert_ism_close(y_hat, r_hat, r0, start=start)


def test_layouts_detected():
    assert convert(channels_last(), return_plan=True)[1].seq.layout == "NLC"
    assert convert(residual(), return_plan=True)[1].seq.layout == "NCL"


def side_inputs():
    """A second, sequence-independent input (a coverage track and a per-sequence covariate)
    that meets the sequence path both in probe form and after the dense exit."""
    n = Net()
    track = n.conv("track", 1, 6, 3, pads=[1, 1])
    h = n.op("Relu", [n.op("Add", [n.conv("x", 4, 6, 5, pads=[2, 2]), track])])
    flat = n.op("Flatten", [n.conv(h, 6, 2, 3, pads=[1, 1])], axis=1)
    dense = n.op("Gemm", [flat, n.w(2 * L, 3)])
    joined = n.op("Concat", [dense, "covariate"], axis=1)
    return n.model({"x": ["N", 4, L], "track": ["N", 1, L], "covariate": ["N", 2]},
                   {"y": n.op("Gemm", [joined, n.w(5, 2)])})


def test_side_inputs_pass_through():
    model = side_inputs()
    converted, plan = convert(model, start=3, end=20, return_plan=True)
    assert plan.seq.name == "x"
    assert not [n for n in plan.nodes if n.rule == "fallback"]
    rng = np.random.default_rng(1)
    X = random_one_hot(2, L, seed=0)
    feeds = {"track": rng.standard_normal((2, 1, L)).astype(np.float32),
             "covariate": rng.standard_normal((2, 2)).astype(np.float32)}
    import onnxruntime as ort
    sess = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    y0, y_hat = sess.run(None, {"x": X, **feeds})
    # oracle: run the original model on every mutant with the side inputs repeated
    orig = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    r0 = orig.run(None, {"x": X, **feeds})[0]
    np.testing.assert_allclose(y0, r0, rtol=1e-5, atol=1e-6)
    for n in range(2):
        for i in range(3, 20):
            for a in range(4):
                mutant = X[n:n + 1].copy()
                mutant[0, :, i] = np.eye(4, dtype=np.float32)[a]
                ref = orig.run(None, {"x": mutant, "track": feeds["track"][n:n + 1],
                                      "covariate": feeds["covariate"][n:n + 1]})[0][0]
                np.testing.assert_allclose(y_hat[n, a, i - 3], ref, rtol=1e-4, atol=1e-5)


def test_outputs_subset_prunes_other_heads():
    model = heads()
    converted, plan = convert(model, outputs=["counts"], return_plan=True)
    assert [o.name for o in converted.graph.output] == ["counts", "counts_ism"]
    assert "Softmax" not in {n.node.op_type for n in plan.nodes}
    X = random_one_hot(2, L, seed=0)
    (y0, y_hat), = run_ism(converted, X)
    r0, r_hat = naive_ism(model, X)[1]  # counts is the second output of the full model
    assert_ism_close(y_hat, r_hat, r0)


def test_unknown_output_is_named():
    from yuzu_onnx.errors import UnsupportedModelError
    with pytest.raises(UnsupportedModelError, match="no output named 'nope'.*profile, counts, total"):
        convert(heads(), outputs=["nope"])


@pytest.mark.parametrize("attrs", [dict(strides=[2], pads=[1, 1], output_padding=[1]),
                                   dict(strides=[3], dilations=[2]),
                                   dict(strides=[2], auto_pad="SAME_UPPER"),
                                   dict(strides=[2], auto_pad="SAME_LOWER")],
                         ids=["pads", "dilated", "same_upper", "same_lower"])
def test_conv_transpose(attrs):
    n = Net()
    h = n.op("Relu", [n.conv("x", 4, 6, 5, strides=[2])])
    up = n.op("ConvTranspose", [h, n.w(6, 3, 5), n.w(3, scale=0.5)], **attrs)  # odd total SAME padding
    model = n.model({"x": ["N", 4, L]}, {"y": n.conv(n.op("Tanh", [up]), 3, 2, 3)})
    converted, plan = convert(model, start=2, end=L, return_plan=True)
    assert [n.rule for n in plan.nodes if n.node.op_type == "ConvTranspose"] == ["window"]
    X = random_one_hot(2, L, seed=0)
    (y0, y_hat), = run_ism(converted, X)
    (r0, r_hat), = naive_ism(model, X, start=2, end=L)
    assert_ism_close(y_hat, r_hat, r0, start=2)
