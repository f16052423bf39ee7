"""Emitted 1-D Convs as unit-height 2-D Convs (yuzu_onnx/emit/conv_layout.py): the same sums as
the 1-D Conv for every attribute the lift touches, the model's own Convs untouched (y0 bit for
bit), Loop bodies holding their own copies of the weights (what ONNX Runtime needs to run them
in its NCHWc layout), and the oracle's answers in every form."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from builders import Net, random_one_hot
from conftest import assert_matches_oracle
from yuzu_onnx import convert
from yuzu_onnx.emit.conv_layout import convs_as_unit_height


def _single_conv(attrs: dict, c_in: int = 6, c_out: int = 4, k: int = 3, bias: bool = True) -> onnx.ModelProto:
    net = Net(seed=3)
    w = net.w(c_out, c_in // attrs.get("group", 1), k)
    inputs = ["x", w] + ([net.w(c_out, scale=0.5)] if bias else [])
    y = net.op("Conv", inputs, **attrs)
    return net.model({"x": ["N", c_in, 23]}, {"y": y})


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("attrs", [
    {}, {"pads": [2, 1]}, {"dilations": [3], "pads": [3, 3]}, {"strides": [2], "pads": [0, 1]},
    {"group": 2, "dilations": [2]}, {"group": 6, "pads": [1, 1]}, {"auto_pad": "VALID", "kernel_shape": [3]},
])
@pytest.mark.parametrize("bias", [True, False])
def test_unit_height_conv_equals_the_1d_conv(attrs, bias):
    c_out = 6 if attrs.get("group") == 6 else 4
    model = _single_conv(attrs, c_out=c_out, bias=bias)
    lifted = onnx.ModelProto()
    lifted.CopyFrom(model)
    assert convs_as_unit_height(lifted, lambda node: True) == 1
    onnx.checker.check_model(lifted, full_check=True)
    assert [n.op_type for n in lifted.graph.node] == ["Unsqueeze", "Conv", "Squeeze", "Identity"]
    conv = lifted.graph.node[1]
    weights = {t.name: t for t in lifted.graph.initializer}
    assert len(weights[conv.input[1]].dims) == 4 and weights[conv.input[1]].dims[2] == 1
    x = np.random.default_rng(2).normal(size=(3, 6, 23)).astype(np.float32)
    want, got = _run(model, x), _run(lifted, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_only_emitted_convs_with_constant_weights_are_lifted():
    model = _single_conv({})
    kept = onnx.ModelProto()
    kept.CopyFrom(model)
    assert convs_as_unit_height(kept, lambda node: False) == 0
    assert kept == model
    # a weight computed in the graph (not an initializer) is left alone
    computed = onnx.ModelProto()
    computed.CopyFrom(model)
    conv = computed.graph.node[0]
    computed.graph.node.insert(0, helper.make_node("Identity", [conv.input[1]], ["w_copy"]))
    conv.input[1] = "w_copy"
    assert convs_as_unit_height(computed, lambda node: True) == 0


def _dilated_tower(length: int = 41) -> onnx.ModelProto:
    """stem -> three residual dilated blocks x + ReLU(Conv(x)) -> k=9 head; bpnet-lite's shape."""
    net = Net(seed=21)
    h = net.op("Relu", [net.conv("x", 4, 8, 5, pads=[2, 2])])
    for d in (2, 4, 8):
        h = net.op("Add", [h, net.op("Relu", [net.conv(h, 8, 8, 3, dilations=[d], pads=[d, d])])])
    y = net.conv(h, 8, 2, 9, pads=[4, 4])
    return net.model({"x": ["N", 4, length]}, {"y": y})


def _nodes(graph: onnx.GraphProto):
    """``(graph holding it, node)`` for every node, Loop bodies included."""
    for node in graph.node:
        yield graph, node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(a.g)


def _convs(graph: onnx.GraphProto):
    return ((owner, node) for owner, node in _nodes(graph) if node.op_type == "Conv")


@pytest.mark.parametrize(("form", "width", "region"), [
    ("whole", None, (0, 41)), ("whole", None, (30, 41)), ("tiled", 4, (0, 41)), ("tiled", 3, (12, 25)),
    ("tiled", 5, (0, 7)), ("brute-force", None, (35, 41)),
])
def test_converted_convs_are_unit_height_and_exact(form, width, region):
    model = _dilated_tower()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = convert(model, start=region[0], end=region[1], form=form, tile_width=width)
    onnx.checker.check_model(graph, full_check=True)
    original = {n.name for n in model.graph.node if n.op_type == "Conv"}
    lifted = 0
    for owner, conv in _convs(graph.graph):
        own = {t.name: t for t in owner.initializer}
        main = {t.name: t for t in graph.graph.initializer}
        if conv.name in original:
            assert len(main[conv.input[1]].dims) == 3  # the model's own Conv, as it was
            continue
        # every emitted Conv is lifted, with its weight and bias in its own graph (a Loop body's)
        assert conv.input[1] in own and len(own[conv.input[1]].dims) == 4, conv.name
        assert all(name in own for name in conv.input[2:]), conv.name
        lifted += 1
    assert lifted > 0
    X = random_one_hot(2, 41, seed=5)
    y0, r0 = assert_matches_oracle(model, graph, X, start=region[0], end=region[1], label=f"{form} {region}")
    np.testing.assert_array_equal(y0, r0)  # the model's own nodes are never rewritten


def _nchwc_convs(model: onnx.ModelProto) -> tuple[int, int]:
    """NCHWc Convs of ONNX Runtime's optimized graph: (in the main graph, in Loop bodies)."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(opts.optimized_model_filepath)
    nchwc = [(owner is optimized.graph) for owner, conv in _convs(optimized.graph)
             if conv.domain == "com.microsoft.nchwc"]
    return sum(nchwc), len(nchwc) - sum(nchwc)


def test_tiled_convs_run_in_nchwc_layout_inside_the_loop():
    """The point of the rewrite: ONNX Runtime runs the Loop body's Convs in its NCHWc layout,
    which it does only for weights and biases that are the body's own initializers."""
    net = Net(seed=1)
    plain = net.model({"x": ["N", 8, 1, 30]}, {"y": net.op("Conv", ["x", net.w(16, 8, 1, 3)])})
    if _nchwc_convs(plain) == (0, 0):
        pytest.skip("ONNX Runtime has no NCHWc kernels for this CPU")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = convert(_dilated_tower(), start=10, end=30, form="tiled", tile_width=4)
    lifted = sum(1 for owner, conv in _convs(graph.graph) if owner is not graph.graph)
    _, in_body = _nchwc_convs(graph)
    assert lifted > 0 and in_body == lifted


@pytest.mark.parametrize("form", ["whole", "tiled"])
def test_activation_read_only_by_a_lifted_conv_moves_before_its_squeeze(form):
    """Whole form: each probe Conv is read only by its ReLU, which then runs on the 4-D Conv
    output (where ONNX Runtime fuses it), and no ReLU is left on a 3-D tensor after a Squeeze;
    a tiled Conv is read by the halo Add, so its ReLU stays. Both match the oracle."""
    net = Net(seed=4)
    h = net.op("Relu", [net.conv("x", 4, 8, 5, pads=[2, 2])])
    h = net.op("Relu", [net.conv(h, 8, 8, 3, dilations=[2], pads=[2, 2])])
    model = net.model({"x": ["N", 4, 31]}, {"y": net.op("ReduceMean", [h], axes=[2], keepdims=0)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = convert(model, start=5, end=26, form=form, tile_width=4 if form == "tiled" else None)
    nodes = [n for _, n in _nodes(graph.graph)]
    producer = {o: n for n in nodes for o in n.output}
    original = {o for n in model.graph.node for o in n.output}
    relus = [n for n in nodes if n.op_type == "Relu" and not original.intersection(n.output)]
    after_conv = [r for r in relus if producer.get(r.input[0]) is not None and producer[r.input[0]].op_type == "Conv"]
    if form == "whole":
        assert relus and after_conv == relus
    else:
        assert relus and not after_conv
    assert_matches_oracle(model, graph, random_one_hot(2, 31, seed=6), start=5, end=26, label=f"relu {form}")



@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2], "strides": [2]}, {"kernel_shape": [3], "strides": [2], "pads": [1, 1]},
    {"kernel_shape": [3], "strides": [3], "ceil_mode": 1}, {"kernel_shape": [2], "dilations": [2]},
    {"kernel_shape": [4], "auto_pad": "VALID", "strides": [4]},
])
def test_maxpool_alone_reading_a_lifted_conv_pools_the_4d_output(attrs):
    """Conv -> ReLU -> MaxPool: the pool runs on the 4-D output (ONNX Runtime chains NCHWc
    pool to NCHWc Conv), exactly the 1-D pool's maxima; a pool the Conv output is not alone
    read by stays 1-D."""
    net = Net(seed=5)
    h = net.op("Relu", [net.op("Conv", ["x", net.w(16, 6, 3), net.w(16)], pads=[1, 1])])
    model = net.model({"x": ["N", 6, 23]}, {"y": net.op("MaxPool", [h], **attrs)})
    lifted = onnx.ModelProto()
    lifted.CopyFrom(model)
    assert convs_as_unit_height(lifted, lambda node: True) == 1
    onnx.checker.check_model(lifted, full_check=True)
    assert [n.op_type for n in lifted.graph.node] == ["Unsqueeze", "Conv", "Relu", "MaxPool", "Squeeze", "Identity"]
    assert [len(a.ints) for a in lifted.graph.node[3].attribute if a.name == "kernel_shape"] == [2]
    x = np.random.default_rng(4).normal(size=(3, 6, 23)).astype(np.float32)
    want, got = _run(model, x), _run(lifted, x)
    assert got.shape == want.shape  # the Conv's sums may differ in order; the maxima are the same
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # the ReLU output read twice: the pool stays 1-D
    net = Net(seed=5)
    h = net.op("Relu", [net.op("Conv", ["x", net.w(16, 6, 3)], pads=[1, 1])])
    both = net.model({"x": ["N", 6, 23]}, {"y": net.op("Add", [net.op("MaxPool", [h], kernel_shape=[1]), h])})
    assert convs_as_unit_height(both, lambda node: True) == 1
    pool = next(n for n in both.graph.node if n.op_type == "MaxPool")
    assert [len(a.ints) for a in pool.attribute if a.name == "kernel_shape"] == [1]


def test_converted_pools_follow_their_convs_in_4d():
    """Whole form, Conv -> MaxPool -> Conv: the probe pool is 4-D, and the oracle agrees."""
    net = Net(seed=9)
    h = net.op("MaxPool", [net.op("Relu", [net.conv("x", 4, 16, 5, pads=[2, 2])])], kernel_shape=[2], strides=[2])
    y = net.conv(net.op("Relu", [net.conv(h, 16, 16, 3, pads=[1, 1])]), 16, 2, 3, pads=[1, 1])
    model = net.model({"x": ["N", 4, 40]}, {"y": y})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = convert(model, start=3, end=37, form="whole")
    original = {o for n in model.graph.node for o in n.output}
    pools = [n for _, n in _nodes(graph.graph) if n.op_type == "MaxPool" and not original.intersection(n.output)]
    assert pools and all(len(a.ints) == 2 for n in pools for a in n.attribute if a.name == "kernel_shape")
    assert_matches_oracle(model, graph, random_one_hot(2, 40, seed=3), start=3, end=37, label="pool 4-D")
