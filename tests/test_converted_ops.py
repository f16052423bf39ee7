"""Static checks of converted reference models: CUDA kernels, the ONNX checker, the interface.

No model is run here. Every op the converter emits must have a kernel in ONNX Runtime's CUDA
table (:func:`yuzu_onnx.kernels.missing_cuda_kernels`), the graph must pass the full ONNX
checker, and the graph interface must be as documented in :func:`yuzu_onnx.convert`: the
original input name, and per original output ``y`` the outputs ``y`` and ``y_ism`` with
``y_ism`` of shape ``(N, A, end - start, *y.shape[1:])``.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from builders import conv, onnx_model, weight
from conftest import A, MANIFEST, assert_ism_close, cached_convert, manifest_params, model_path, regions
from yuzu_onnx import convert, plan_conversion, run_ism
from yuzu_onnx.kernels import missing_cuda_kernels

#: (sensing, substitutions, region): every sensing and substitution mode, full and sub-region.
CONFIGS = [
    ("structured", "alt", "full"),
    ("gaussian", "alt", "middle"),
    ("structured", "all", "middle"),
    ("gaussian", "all", "full"),
]


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in vi.type.tensor_type.shape.dim]


def _cases():
    for entry in manifest_params():
        for sensing, subs, region in CONFIGS:
            yield pytest.param(entry.values[0], sensing, subs, region, id=f"{entry.id}-{sensing}-{subs}-{region}")


def _convert(entry, sensing, subs, region):
    start, end = regions(entry["length"])[region]
    return cached_convert(entry["file"], start, end, sensing, subs), start, end


@pytest.mark.parametrize(("entry", "sensing", "subs", "region"), list(_cases()))
def test_every_op_has_a_cuda_kernel(entry, sensing, subs, region):
    converted, _, _ = _convert(entry, sensing, subs, region)
    assert missing_cuda_kernels(converted) == []


@pytest.mark.parametrize(("entry", "sensing", "subs", "region"), list(_cases()))
def test_passes_onnx_checker(entry, sensing, subs, region):
    converted, _, _ = _convert(entry, sensing, subs, region)
    onnx.checker.check_model(converted, full_check=True)


@pytest.mark.parametrize(("entry", "sensing", "subs", "region"), list(_cases()))
def test_interface(entry, sensing, subs, region):
    converted, start, end = _convert(entry, sensing, subs, region)
    original = onnx.load(str(model_path(entry)))
    inits = {t.name for t in original.graph.initializer}
    (orig_in,) = [i for i in original.graph.input if i.name not in inits]
    orig_outs = list(original.graph.output)

    (conv_in,) = [i for i in converted.graph.input if i.name not in {t.name for t in converted.graph.initializer}]
    assert conv_in.name == orig_in.name
    in_dims = _dims(conv_in)
    assert in_dims[1:] == _dims(orig_in)[1:]
    batch = in_dims[0]
    assert isinstance(batch, str) and batch, f"the converted input's batch axis is not dynamic: {in_dims}"

    names = [o.name for o in converted.graph.output]
    expected = [n for o in orig_outs for n in (o.name, f"{o.name}_ism")]
    assert sorted(names) == sorted(expected) and names[0] == orig_outs[0].name, names
    by_name = {o.name: o for o in converted.graph.output}
    for o in orig_outs:
        out = _dims(o)[1:]
        y = _dims(by_name[o.name])
        y_ism = _dims(by_name[f"{o.name}_ism"])
        # A symbolic dim of the original (an exporter's name for a static size) may come out
        # resolved to its static value; static dims must be kept as they are.
        same = lambda got, want: len(got) == len(want) and all(  # noqa: E731
            g == w or (isinstance(w, str) and isinstance(g, int)) for g, w in zip(got, want))
        assert same(y[1:], out), f"{o.name}: {y} vs original {_dims(o)}"
        assert same(y_ism[1:], [A, end - start] + out), f"{o.name}_ism: {y_ism}"
        assert y_ism[3:] == y[1:], f"{o.name}_ism: {y_ism} does not end with {o.name}'s dims {y}"
        assert y_ism[0] == batch, f"{o.name}_ism batch dim {y_ism[0]!r} is not the input's {batch!r}"
        assert by_name[f"{o.name}_ism"].type.tensor_type.elem_type == o.type.tensor_type.elem_type

    props = {p.key: p.value for p in converted.metadata_props}
    assert props["yuzu_onnx.input"] == orig_in.name
    assert (int(props["yuzu_onnx.start"]), int(props["yuzu_onnx.end"])) == (start, end)
    assert props["yuzu_onnx.substitutions"] == subs
    assert json.loads(props["yuzu_onnx.outputs"]) == {o.name: f"{o.name}_ism" for o in orig_outs}


# Regression: dynamo exports bake batch 1 into a Reshape before the dense head; shape inference
# used to copy that 1 onto the converted model's `y` output although the input batch is dynamic.
@pytest.mark.parametrize("entry", manifest_params())
def test_y_batch_dim_is_dynamic(entry):
    converted = cached_convert(entry["file"], 0, entry["length"], "structured", "alt")
    (conv_in,) = [i for i in converted.graph.input if i.name not in {t.name for t in converted.graph.initializer}]
    batch = _dims(conv_in)[0]
    for o in converted.graph.output:
        assert _dims(o)[0] == batch, f"output {o.name} declares batch {_dims(o)[0]!r}, input has {batch!r}"


@pytest.mark.parametrize("entry", manifest_params([e for e in MANIFEST if e["length"] in (41, 45, 67, 101, 99, 61)]))
def test_reference_models_need_no_fallback(entry):
    """Every op of the reference models is accelerated (no per-mutant fallback)."""
    plan = plan_conversion(str(model_path(entry)))
    rules = {(n.node.op_type, n.rule) for n in plan.nodes}
    assert not [r for r in rules if r[1] == "fallback"], sorted(rules)


def test_y_batch_dim_is_dynamic_minimal():
    """Regression (see above), minimal case: x[1,4,8] -> Conv -> Reshape([1, 16]) -> Gemm -> y[1, 2]."""
    rng = np.random.default_rng(0)
    node, inits = conv("conv", "x", "c", (2, A, 3), rng, scale=1.0, bias=None, kernel_shape=[3], pads=[1, 1])
    nodes = [node, helper.make_node("Reshape", ["c", "shape"], ["f"]), helper.make_node("Gemm", ["f", "wd"], ["y"])]
    inits.update({"shape": np.array([1, 16], dtype=np.int64), "wd": weight(rng, (16, 2), 1.0)})
    converted = convert(onnx_model(nodes, inits, [1, A, 8], {"y": [1, 2]}))
    dims = {o.name: _dims(o) for o in list(converted.graph.input) + list(converted.graph.output)}
    assert dims["x"][0] == "N" or isinstance(dims["x"][0], str), dims
    assert dims["y"][0] == dims["x"][0], dims  # fails: y is declared [1, 2], x is [N, 4, 8]


def _entry(file: str) -> dict:
    return next(e for e in MANIFEST if e["file"] == file)


@pytest.mark.parametrize("file", ["attention_L40_torchscript.onnx", "attention_L51_dynamo.onnx"])
def test_attention_falls_back_after_an_accelerated_stem(file):
    """The position-mixing MatMuls of the attention block fall back; the conv stem does not."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = plan_conversion(str(model_path(_entry(file))))
    rules = [(n.node.op_type, n.rule) for n in plan.nodes if n.rule != "reference"]
    first_fallback = next(i for i, (_, rule) in enumerate(rules) if rule == "fallback")
    assert rules[first_fallback][0] == "MatMul"
    assert ("Conv", "window") in rules[:first_fallback] and ("MaxPool", "window") in rules[:first_fallback]
    assert any("MatMul" in str(w.message) for w in caught)


@pytest.mark.parametrize("file", ["bpnet9_L97_torchscript.onnx", "chrombpnet_mini_L211_dynamo.onnx"])
def test_counts_head_alone(file):
    """--outputs counts converts the counts head only: no profile head left in the graph."""
    from conftest import cached_naive, make_input
    entry = _entry(file)
    converted = convert(str(model_path(entry)), outputs=["counts"])
    assert [o.name for o in converted.graph.output] == ["counts", "counts_ism"]
    original = onnx.load(str(model_path(entry)))
    kept = [n for n in converted.graph.node if not n.name.startswith("yz/")]
    original_convs = [n for n in original.graph.node if n.op_type == "Conv"]
    assert len([n for n in kept if n.op_type == "Conv"]) == len(original_convs) - 1  # profile conv pruned
    X = make_input(entry, "onehot", 0, entry["length"])
    (y0, y_hat), = run_ism(converted, X)
    r0, r_hat = cached_naive(entry, "onehot", 0, entry["length"])[entry["outputs"].index("counts")]
    assert_ism_close(y_hat, r_hat, r0)
