"""Reprobe Transposes folded into NCHWc Convs (yuzu_onnx/emit/channels_last.py): the rewrite
changes no number (converted graphs equal bit for bit with and without it, and the oracle's
answers), it happens where a reprobe meets a lifted Conv on either side, ONNX Runtime then
runs no Transpose of its own there, and the memory and time models know which Transposes fold."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import yuzu_onnx.emit as emit_module
from builders import Net, random_one_hot
from conftest import assert_matches_oracle
from yuzu_onnx import convert
from yuzu_onnx.emit.channels_last import SWAP_LAST, transposes_into_convs
from yuzu_onnx.memory import INTO_NCHWC_CONV, OUT_OF_NCHWC_CONV, _four_d_constants, folded_transposes, nchwc_reorders

LENGTH = 41


def _tower(channels: int = 16) -> onnx.ModelProto:
    """stem -> three dilated Conv + ReLU layers -> k=9 head: every layer reaches further, so the
    whole form reprobes between the Convs."""
    net = Net(seed=8)
    h = net.op("Relu", [net.conv("x", 4, channels, 5, pads=[2, 2])])
    for d in (1, 2, 4):
        h = net.op("Relu", [net.conv(h, channels, channels, 3, dilations=[d], pads=[d, d])])
    return net.model({"x": ["N", 4, LENGTH]}, {"y": net.conv(h, channels, 2, 9, pads=[4, 4])})


def _convert(model, monkeypatch=None, **kwargs) -> onnx.ModelProto:
    if monkeypatch is not None:  # the same conversion without the rewrite
        monkeypatch.setattr(emit_module, "transposes_into_convs", lambda *a: 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(model, **kwargs)


def _nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(a.g)


def _perms(model: onnx.ModelProto) -> list[tuple[int, ...]]:
    return [tuple(n.attribute[0].ints) for n in _nodes(model.graph) if n.op_type == "Transpose"]


def _run(model: onnx.ModelProto, X: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


def assert_exact_and_unchanged(model: onnx.ModelProto, graph: onnx.ModelProto, plain: onnx.ModelProto,
                               X: np.ndarray, region: tuple[int, int], label: str) -> None:
    """``graph`` matches the naive oracle over ``region``, and every output equals, bit for bit,
    ``plain``'s (the same conversion without the layout pass), unless ONNX Runtime fuses more
    Adds into NCHWc Convs in ``graph``: a residual Add whose other operand the pass leaves
    blocked becomes the Conv's sum input, added in the Conv's own order (a rounding of
    1.2e-7 seen); then within a few float32 roundings of the output's scale."""
    assert_matches_oracle(model, graph, X, start=region[0], end=region[1], label=label)
    fused = _fused_sums(graph) > _fused_sums(plain)
    for got, want in zip(_run(graph, X), _run(plain, X)):
        if fused:
            np.testing.assert_allclose(got, want, rtol=0, atol=4e-7 * max(1.0, float(np.abs(want).max())))
        else:
            np.testing.assert_array_equal(got, want)


def _fused_sums(model: onnx.ModelProto) -> int:
    """NCHWc Convs of ONNX Runtime's optimized graph (Loop bodies included) that add a sum input."""
    return sum(1 for n in _nodes(_optimized(model).graph)
               if n.domain == "com.microsoft.nchwc" and n.op_type == "Conv" and len(n.input) > 3 and n.input[3])


def _checked_and_emitted(model: onnx.ModelProto, graph: onnx.ModelProto) -> tuple[dict, list[onnx.NodeProto]]:
    """Check ``graph`` (full ONNX check); return its producer map and the nodes it emitted
    (those that write none of the original model's tensors)."""
    onnx.checker.check_model(graph, full_check=True)
    original = {o for n in model.graph.node for o in n.output}
    producer = {o: n for n in graph.graph.node for o in n.output}
    return producer, [n for n in graph.graph.node if not original.intersection(n.output)]


@pytest.mark.parametrize(("form", "region"), [("whole", (0, LENGTH)), ("whole", (30, LENGTH)), ("whole", (3, 17)),
                                              ("tiled", (0, LENGTH)), ("tiled", (12, 25))])
def test_rewrite_changes_no_number(form, region, monkeypatch):
    model = _tower()
    kwargs = dict(start=region[0], end=region[1], form=form, tile_width=4 if form == "tiled" else None)
    graph = _convert(model, **kwargs)
    onnx.checker.check_model(graph, full_check=True)
    plain = _convert(model, monkeypatch, **kwargs)
    assert_exact_and_unchanged(model, graph, plain, random_one_hot(2, LENGTH, seed=4), region, f"{form} {region}")
    if form == "whole":  # reprobes on both sides of lifted Convs: both kinds of rewrite happen
        perms = _perms(graph)
        assert INTO_NCHWC_CONV in perms and OUT_OF_NCHWC_CONV in perms
        assert len([p for p in _perms(plain) if p == SWAP_LAST]) > len([p for p in perms if p == SWAP_LAST])


def test_only_the_reprobe_transposes_it_was_given_are_rewritten():
    model = _tower()
    graph = _convert(model, start=0, end=LENGTH, form="whole")
    plain = onnx.ModelProto()
    plain.CopyFrom(graph)
    # the converted graph has no swapped Transposes left next to a Conv; unknown ones are never touched
    assert transposes_into_convs(graph, {}) == 0
    assert graph == plain


def test_narrow_convs_are_left_as_they_are():
    """8 channels: ONNX Runtime's NCHWc Conv would read such an input as it is (no reorder
    to fold into), so the reprobe keeps its own Transpose back."""
    graph = _convert(_tower(channels=8), start=0, end=LENGTH, form="whole")
    assert INTO_NCHWC_CONV not in _perms(graph)


def _optimized(model: onnx.ModelProto) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return onnx.load(opts.optimized_model_filepath)


@pytest.mark.parametrize("build", ["_tower", "_pooled_tower"])
def test_onnx_runtime_folds_them_and_the_models_say_so(build):
    graph = _convert(globals()[build](), start=0, end=LENGTH, form="whole")
    optimized = _optimized(graph)
    reorders = [n for n in optimized.graph.node if n.op_type in ("ReorderInput", "ReorderOutput")]
    if not reorders:
        pytest.skip("ONNX Runtime has no NCHWc kernels for this CPU")
    channels_last = [n for n in reorders
                     if any(a.name == "channels_last" and a.i == 1 for a in n.attribute)]
    folded = folded_transposes(graph.graph, _four_d_constants(graph.graph, set()))
    wanted = [n for n in graph.graph.node if n.op_type == "Transpose"
              and tuple(n.attribute[0].ints) in (INTO_NCHWC_CONV, OUT_OF_NCHWC_CONV)]
    assert wanted and folded == {n.output[0] for n in wanted}
    assert len(channels_last) == len(wanted)
    left = [tuple(n.attribute[0].ints) for n in optimized.graph.node if n.op_type == "Transpose"]
    assert INTO_NCHWC_CONV not in left and OUT_OF_NCHWC_CONV not in left


@pytest.mark.parametrize(("dims", "group"), [
    ((32, 4, 1, 5), 1),  # few input channels: read as they are
    ((32, 16, 1, 3), 1),
    ((8, 32, 1, 3), 1),  # output channels padded to a block
    ((32, 24, 1, 3), 1),  # input channels padded to a block
    ((200, 300, 1, 11), 1),  # Basset's second layer
    ((300, 150, 1, 7), 1),  # input channels not in fours: no NCHWc
    ((64, 18, 1, 3), 1),
    ((150, 100, 1, 7), 1),
    ((1, 64, 1, 3), 1),
    ((64, 1, 1, 3), 64),  # depthwise
    ((60, 1, 1, 3), 60),  # depthwise, channels padded
    ((30, 1, 1, 3), 30),  # depthwise, channels not in fours: no NCHWc
    ((32, 32, 1, 3), 2),  # grouped, whole blocks per group
    ((64, 16, 1, 3), 4),  # grouped, each group's output 16
    ((16, 16, 1, 3), 4),  # grouped, each group's output 4: no NCHWc
    ((24, 24, 1, 3), 2),  # grouped, 12 output channels a group: no NCHWc
    ((64, 1, 1, 3), 32),  # one input channel a group but not depthwise
])
def test_nchwc_reorders_follows_onnx_runtime(dims, group):
    """:func:`nchwc_reorders` against the graph ONNX Runtime optimizes for one lifted Conv
    (input channel counts of 8 to 15, which copy on AVX2 and not on AVX-512, left out)."""
    if not _reorder_ops(_one_conv((32, 16, 1, 3), 1)):
        pytest.skip("ONNX Runtime has no NCHWc kernels for this CPU")
    ops = _reorder_ops(_one_conv(dims, group))
    conv = helper.make_node("Conv", ["x", "w"], ["y"], group=group)
    assert nchwc_reorders(conv, dims) == ("ReorderInput" in ops, "ReorderOutput" in ops)


def _one_conv(dims: tuple[int, ...], group: int) -> onnx.ModelProto:
    c_out, c_in = dims[0], dims[1] * group
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], group=group)], "conv",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, c_in, 1, 40])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT,
                                                             [2, c_out, 1, 40 - dims[3] + 1])],
                              [numpy_helper.from_array(np.ones(dims, np.float32), "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _reorder_ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in _optimized(model).graph.node} & {"ReorderInput", "ReorderOutput"}


@pytest.mark.parametrize("form", ["whole", "tiled"])
def test_every_initializer_of_a_converted_graph_is_read(form):
    """The rewrites leave no constant behind (a lifted Conv's 3-D weight, a removed Reshape's
    shape): ONNX Runtime would warn of each one when a session is created."""
    graph = _convert(_tower(), start=0, end=LENGTH, form=form, tile_width=4 if form == "tiled" else None)

    def read(g: onnx.GraphProto) -> set[str]:
        names = {o.name for o in g.output}
        for node in g.node:
            names.update(node.input)
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    names |= read(a.g)
        return names

    names = read(graph.graph)

    def initializers(g: onnx.GraphProto):
        yield from g.initializer
        for node in g.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    yield from initializers(a.g)

    assert [t.name for t in initializers(graph.graph) if t.name not in names] == []


def _residual_block() -> onnx.ModelProto:
    """stem -> x + Conv1(ReLU(Conv3(ReLU(x)))) -> Sigmoid -> Conv k1 -> k3 head: the skip is
    reprobed for the Add, and the Add, the Sigmoid and the Conv after them can run channels-last
    (Basenji's last block has this shape, with a GELU)."""
    net = Net(seed=12)
    x = net.op("Relu", [net.conv("x", 4, 16, 5, pads=[2, 2])])
    inner = net.op("Relu", [net.conv(net.op("Relu", [x]), 16, 16, 3, dilations=[2], pads=[2, 2])])
    h = net.op("Sigmoid", [net.op("Add", [net.conv(inner, 16, 16, 1), x])])
    y = net.conv(net.op("Relu", [net.conv(h, 16, 16, 1)]), 16, 2, 3, pads=[1, 1])
    return net.model({"x": ["N", 4, LENGTH]}, {"y": y})


@pytest.mark.parametrize("region", [(0, LENGTH), (35, LENGTH), (10, 20)])
def test_elementwise_chain_between_a_reprobe_and_a_conv_runs_channels_last(region, monkeypatch):
    model = _residual_block()
    graph = _convert(model, start=region[0], end=region[1], form="whole")
    producer, emitted = _checked_and_emitted(model, graph)
    chained = [n for n in emitted if n.op_type == "Sigmoid" and producer[n.input[0]].op_type == "Add"
               and all(producer[i].op_type in ("Reshape", "Transpose") for i in producer[n.input[0]].input)]
    assert chained, "the Add and Sigmoid should run on the channels-last twins"
    plain = _convert(model, monkeypatch, start=region[0], end=region[1], form="whole")
    assert_exact_and_unchanged(model, graph, plain, random_one_hot(2, LENGTH, seed=7), region, f"chain {region}")


def _pooled_tower() -> onnx.ModelProto:
    """Basenji's pattern: Conv -> MaxPool -> SiLU -> BatchNormalization -> dilated Conv, then a
    residual block (its 1 x 1 Conv plus the reprobed skip) whose sum is normalized again before
    the next dilated Conv: the pool's output, the normalized tensors, the 1 x 1 Conv and the
    residual sum all run channels-last between the Convs' reorders and the reprobes."""
    net = Net(seed=21)

    def silu(t: str) -> str:
        return net.op("Mul", [t, net.op("Sigmoid", [t])])

    def batch_norm(t: str, channels: int) -> str:
        var = net.const(net.rng.uniform(0.5, 2.0, channels).astype(np.float32))
        return net.op("BatchNormalization", [t, net.w(channels, scale=0.5), net.w(channels, scale=0.5),
                                             net.w(channels, scale=0.5), var], epsilon=1e-3)

    pooled = net.op("MaxPool", [net.conv("x", 4, 16, 5, pads=[2, 2])], kernel_shape=[2], strides=[2])
    h = batch_norm(silu(pooled), 16)
    inner = net.op("Relu", [net.conv(h, 16, 16, 3, dilations=[2], pads=[2, 2])])
    summed = batch_norm(net.op("Add", [net.conv(inner, 16, 16, 1), h]), 16)
    y = net.conv(net.op("Relu", [net.conv(summed, 16, 16, 3, dilations=[4], pads=[4, 4])]), 16, 2, 3, pads=[1, 1])
    return net.model({"x": ["N", 4, LENGTH]}, {"y": y})


def _probe_swaps(model: onnx.ModelProto) -> int:
    """Reprobe Transposes of probe tensors (a reference row's own, of an Unsqueeze, aside)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return len([n for n in model.graph.node if n.op_type == "Transpose" and tuple(n.attribute[0].ints) == SWAP_LAST
                and producer[n.input[0]].op_type != "Unsqueeze"])


@pytest.mark.parametrize("region", [(0, LENGTH), (3, 30), (9, 22)])
def test_pools_norms_and_pointwise_convs_between_convs_and_reprobes_run_channels_last(region, monkeypatch):
    model = _pooled_tower()
    graph = _convert(model, start=region[0], end=region[1], form="whole")
    producer, emitted = _checked_and_emitted(model, graph)
    norms = [n for n in emitted if n.op_type == "BatchNormalization"]
    assert norms and all(producer[n.input[0]].op_type == "Reshape" for n in norms), \
        "every probe BatchNormalization should run on the (rows, C) view of a channels-last twin"
    assert any(n.op_type == "Gemm" for n in emitted), "the residual block's 1 x 1 Conv should run as a Gemm"
    plain = _convert(model, monkeypatch, start=region[0], end=region[1], form="whole")
    assert _probe_swaps(graph) < _probe_swaps(plain), "the reprobes next to the pool and the norms keep no Transpose"
    assert_exact_and_unchanged(model, graph, plain, random_one_hot(2, LENGTH, seed=9), region, f"pooled {region}")


def _headed_tower(head_channels: int) -> onnx.ModelProto:
    """Basenji's end: a pooled stem, a residual block (dilated Conv, 1 x 1 Conv, plus the
    reprobed skip), an activation, then a 1 x 1 head Conv (16 -> ``head_channels``) and a
    Softplus into the output."""
    net = Net(seed=33)
    h = net.op("Relu", [net.op("MaxPool", [net.conv("x", 4, 16, 5, pads=[2, 2])], kernel_shape=[2], strides=[2])])
    inner = net.op("Relu", [net.conv(h, 16, 16, 3, dilations=[2], pads=[2, 2])])
    summed = net.op("Add", [net.conv(inner, 16, 16, 1), h])
    head = net.conv(net.op("Sigmoid", [summed]), 16, head_channels, 1)
    return net.model({"x": ["N", 4, LENGTH]}, {"y": net.op("Softplus", [head])})


def _head_gemms(graph: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Gemms whose result is transposed back to ``(N*P, C_out, L)`` by a Transpose [0, 2, 1]."""
    producer = {o: n for n in graph.graph.node for o in n.output}
    return [n for n in graph.graph.node if n.op_type == "Transpose" and list(n.attribute[0].ints) == [0, 2, 1]
            and producer[producer[n.input[0]].input[0]].op_type == "Gemm"]


@pytest.mark.parametrize("region", [(0, LENGTH), (5, 31)])
def test_a_narrowing_head_conv_runs_as_a_gemm_on_the_channels_last_rows(region, monkeypatch):
    """The head's 1 x 1 Conv (16 -> 3) leaves the region into the output: a Gemm over the
    channels-last rows and a Transpose of its 3 channels back, instead of an NCHWc Conv that
    copies its 16-channel input; the same numbers bit for bit."""
    model = _headed_tower(3)
    graph = _convert(model, start=region[0], end=region[1], form="whole")
    _checked_and_emitted(model, graph)
    assert len(_head_gemms(graph)) == 1
    head_weight = [n.input[1] for n in model.graph.node if n.op_type == "Conv"][-1]
    assert not any(n.op_type == "Conv" and n.input[1].startswith(head_weight) for n in graph.graph.node
                   if "probe" in n.name), "the head Conv on probes should be gone"
    plain = _convert(model, monkeypatch, start=region[0], end=region[1], form="whole")
    assert not _head_gemms(plain)
    assert_exact_and_unchanged(model, graph, plain, random_one_hot(2, LENGTH, seed=12), region, f"head {region}")


def test_a_widening_head_conv_stays_a_conv(monkeypatch):
    """16 -> 32: the Transpose of its output back would copy more than the NCHWc Conv's input
    reorder saves."""
    graph = _convert(_headed_tower(32), start=0, end=LENGTH, form="whole")
    assert not _head_gemms(graph)
