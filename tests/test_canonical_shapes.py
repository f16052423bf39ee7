"""Canonicalization for real exports (canonicalize.py): dilated Convs with ``auto_pad`` SAME_UPPER
or SAME_LOWER, which ONNX Runtime refuses to run, get explicit pads (checked against the ONNX
definition by hand and in numpy, and against ONNX Runtime's own SAME padding where it has one);
output dims an exporter declared symbolic come from inference or one run of the model."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from builders import Net, onnx_model, random_one_hot, weight
from conftest import MANIFEST, manifest_params, model_path
from oracle_modes import MODES, SUBSTITUTIONS, assert_exact, regions
from yuzu_onnx import ConversionWarning
from yuzu_onnx.canonicalize import canonicalize, same_pads
from yuzu_onnx.convert import convert
from yuzu_onnx.load import find_sequence_input, load_model

L = 23


def _run(model, X):
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": X})


# ----------------------------------------------------------------------------- SAME pads


@pytest.mark.parametrize("length,k,stride,dilation,upper,lower", [
    (21, 3, 1, 2, [2, 2], [2, 2]),  # out 21, span 5, total (21-1)*1 + 5 - 21 = 4
    (20, 3, 2, 2, [1, 2], [2, 1]),  # out 10, total 9*2 + 5 - 20 = 3: the odd one at the end (UPPER) or start
    (21, 4, 1, 3, [4, 5], [5, 4]),  # span 10, total 20 + 10 - 21 = 9
    (7, 5, 3, 4, [8, 8], [8, 8]),  # out 3, span 17, total 2*3 + 17 - 7 = 16
])
def test_same_pads_by_hand(length, k, stride, dilation, upper, lower):
    assert same_pads([length], [k], [stride], [dilation], "SAME_UPPER") == upper
    assert same_pads([length], [k], [stride], [dilation], "SAME_LOWER") == lower


def numpy_same_conv(x, w, b, stride, dilation, mode):
    """ONNX's SAME definition written out: the output has ceil(L / stride) positions; the input
    is padded by the least total that fits, the odd pad at the end (UPPER) or start (LOWER)."""
    n, c, length = x.shape
    k = w.shape[2]
    out = -(-length // stride)
    total = max(0, (out - 1) * stride + (k - 1) * dilation + 1 - length)
    before = total // 2 if mode == "SAME_UPPER" else total - total // 2
    padded = np.zeros((n, c, length + total), np.float64)
    padded[:, :, before:before + length] = x
    y = np.zeros((n, w.shape[0], out))
    for j in range(out):
        taps = padded[:, :, j * stride + dilation * np.arange(k)]  # (n, c, k)
        y[:, :, j] = np.einsum("nck,ock->no", taps, w) + b
    return y


def same_conv_model(length, k, stride, dilation, mode, seed=0):
    rng = np.random.default_rng(seed)
    inits = {"w": weight(rng, (3, 4, k)), "b": weight(rng, 3, 0.5)}
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], auto_pad=mode, strides=[stride], dilations=[dilation])
    return onnx_model([node], inits, ["N", 4, length], ["y"], infer_shapes=True), inits


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("length,k,stride,dilation", [(21, 3, 1, 2), (20, 3, 2, 2), (21, 4, 1, 3), (7, 5, 3, 4)])
def test_explicit_pads_compute_same_padding(length, k, stride, dilation, mode):
    model, inits = same_conv_model(length, k, stride, dilation, mode)
    with pytest.raises(Exception, match="Dilation not supported"):
        _run(model, random_one_hot(2, length, seed=0))
    proto = load_model(model)
    with pytest.warns(ConversionWarning, match="the original model cannot run in ONNX Runtime.*explicit pads"):
        canonical, _ = canonicalize(proto, find_sequence_input(proto, None, None, None))
    conv = next(n for n in canonical.graph.node if n.op_type == "Conv")
    assert {a.name for a in conv.attribute} >= {"pads"} and "auto_pad" not in {a.name for a in conv.attribute}
    X = random_one_hot(2, length, seed=0)
    want = numpy_same_conv(X.astype(np.float64), inits["w"].astype(np.float64), inits["b"], stride, dilation, mode)
    np.testing.assert_allclose(_run(canonical, X)[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("length,k,stride", [(21, 3, 1), (20, 4, 2), (7, 6, 3)])
def test_same_pads_agree_with_onnxruntime_without_dilation(length, k, stride, mode):
    """Where ONNX Runtime runs SAME padding itself (dilation 1), the explicit pads give its result."""
    model, _ = same_conv_model(length, k, stride, 1, mode)
    explicit, _ = same_conv_model(length, k, stride, 1, "NOTSET")
    conv = explicit.graph.node[0]
    conv.attribute.extend([helper.make_attribute("pads", same_pads([length], [k], [stride], [1], mode))])
    X = random_one_hot(2, length, seed=1)
    np.testing.assert_allclose(_run(explicit, X)[0], _run(model, X)[0], rtol=1e-6, atol=1e-6)


def dilated_same():
    """gReLU's DilatedConvModel as TorchScript exports it: dilated convs with auto_pad SAME_*."""
    n = Net(seed=10)
    h = n.op("Relu", [n.conv("x", 4, 6, 5, auto_pad="SAME_UPPER")])
    h = n.op("Add", [h, n.op("Relu", [n.conv(h, 6, 6, 3, auto_pad="SAME_UPPER", dilations=[2])])])
    h = n.op("Add", [h, n.op("Relu", [n.conv(h, 6, 6, 4, auto_pad="SAME_LOWER", dilations=[3])])])
    return n.model({"x": ["N", 4, L]}, {"y": n.conv(h, 6, 2, 3, pads=[1, 1])})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("region", regions(L))
@pytest.mark.parametrize("subs", SUBSTITUTIONS)
def test_dilated_same_convs_convert_and_are_exact(subs, region, mode):
    """The oracle runs the canonicalized model (ONNX Runtime cannot run the original)."""
    model = dilated_same()
    proto = load_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        canonical, _ = canonicalize(proto, find_sequence_input(proto, None, None, None))
    plan = assert_exact(model, region=region, subs=subs, mode=mode, oracle_model=canonical)
    assert "fallback" not in [n.rule for n in plan.nodes]  # tiled plans may materialize late layers by plan
    assert plan.nodes[0].rule == "window"


def test_conversion_says_the_original_cannot_run():
    with pytest.warns(ConversionWarning, match=r"cannot run in ONNX Runtime.*Conv node 'Conv_\d+' \(SAME_UPPER, "
                                               r"dilations \[2\]\).*the converted graph uses explicit pads"):
        convert(dilated_same(), form="whole")


# ----------------------------------------------------------------------------- output dims


def symbolic_outputs(contrib: bool):
    """Declared output dims ``('batch', 'weird', 'batch')`` although the input length is fixed;
    with ``contrib`` a com.microsoft Gelu that ONNX shape inference cannot follow sits in the
    way, so only a run of the model gives the output's shape."""
    n = Net(seed=11)
    h = n.conv("x", 4, 6, 5, pads=[2, 2])
    if contrib:
        n.nodes.append(helper.make_node("Gelu", [h], ["g"], domain="com.microsoft", name="contrib_gelu"))
        h = "g"
    else:
        h = n.op("Relu", [h])
    y = n.conv(h, 6, 3, 3)  # valid: L - 2 positions
    extra = [helper.make_opsetid("com.microsoft", 1)] if contrib else []
    return onnx_model(n.nodes, n.inits, {"x": ["N", 4, L]}, {y: ["batch", "weird", "batch"]},
                      extra_opsets=extra, name="net")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("contrib", [False, True], ids=["inferred", "from_a_run"])
def test_symbolic_output_dims_come_from_the_fixed_length(contrib, mode):
    model = symbolic_outputs(contrib)
    plan = assert_exact(model, region=(2, L - 1), subs="alt", mode=mode, tiled=not contrib)
    out = plan.outputs[0]
    assert plan.infos[out].shape == [None, 3, L - 2]


def test_output_dims_no_run_can_give_are_refused_with_the_length(monkeypatch):
    from yuzu_onnx import canonicalize as canonical_module
    from yuzu_onnx.errors import UnsupportedModelError
    monkeypatch.setattr(canonical_module, "_use_runtime_shapes", lambda model, seq: None)  # as if the run failed
    with pytest.raises(UnsupportedModelError, match=r"output '\w+' has shape \(N, \?, \?\) with the input length "
                                                    r"fixed to 23: neither shape inference nor a run"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert(symbolic_outputs(contrib=True), form="whole")


REFUSED = [e for e in MANIFEST if not e.get("ort_runs", True)]


@pytest.mark.parametrize("mode", [MODES[0], pytest.param((8, 2), id="T8c2")])
@pytest.mark.parametrize("entry", manifest_params(REFUSED))
def test_exports_onnxruntime_refuses_convert_and_are_exact(entry, mode):
    """gReLU's ConvModel and DilatedConvModel as TorchScript exports them: the converted graph
    runs and agrees with brute-force ISM of the canonicalized (explicit-pads) model."""
    path = str(model_path(entry))
    proto = load_model(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        canonical, _ = canonicalize(proto, find_sequence_input(proto, None, None, None))
    length = entry["length"]
    assert_exact(path, region=(length - 9, length), subs="alt", mode=mode, oracle_model=canonical)
