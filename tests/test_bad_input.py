"""Bad input hardening (issue 5): broken files, models without a sequence input, symbolic
lengths, old and new opsets, non-finite weights, non-finite inputs, empty batches, sequences
shorter than the receptive field and integer one-hot inputs. Each case either raises a
:class:`~yuzu_onnx.errors.YuzuError` with a message that says what is wrong and what to do,
or converts and matches the naive oracle."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from yuzu_onnx import ISMSession, convert, naive_ism, run_ism
from yuzu_onnx.analyze import ConversionWarning
from yuzu_onnx.cli import main
from yuzu_onnx.errors import InputValidationError, ModelLoadError, UnsupportedModelError
from yuzu_onnx.opset import MIN_OPSET, max_opset, onnxruntime_max_opset

from builders import conv_pair, conv_relu_conv, dense_head, onnx_model, random_one_hot, weight
from conftest import assert_ism_close

L = 21


# ----------------------------------------------------------------------------- checks


def _check_exact(model: onnx.ModelProto, converted: onnx.ModelProto, X: np.ndarray, start: int = 0,
                 end: int | None = None, reference: onnx.ModelProto | None = None) -> None:
    """The converted model against naive ISM of ``reference`` (default: ``model``)."""
    got = run_ism(converted, X)
    ref = naive_ism(reference if reference is not None else model, X, start=start, end=end)
    assert len(got) == len(ref)
    for (y0, y_hat), (r0, r_hat) in zip(got, ref):
        np.testing.assert_allclose(y0, r0, rtol=1e-5, atol=1e-6)
        assert_ism_close(y_hat, r_hat, r0, start=start)


# ----------------------------------------------------------------------------- 1. broken files


@pytest.fixture
def small_model_file(tmp_path):
    path = tmp_path / "small.onnx"
    onnx.save(conv_relu_conv(L), str(path))
    return path


def test_convert_truncated_file_names_it(small_model_file):
    data = small_model_file.read_bytes()
    small_model_file.write_bytes(data[: len(data) // 2])  # cut inside the weights
    with pytest.raises(ModelLoadError, match="not a readable ONNX model") as info:
        convert(small_model_file)
    assert str(small_model_file) in str(info.value)


def test_convert_non_onnx_file_names_it(tmp_path):
    path = tmp_path / "seqs.fa"
    path.write_text(">seq1\nACGTACGTAC\n>seq2\nTTGCA\n")
    with pytest.raises(ModelLoadError) as info:
        convert(path)
    assert str(path) in str(info.value) and "not" in str(info.value)


def test_cli_truncated_file_one_line_error(small_model_file, capsys):
    data = small_model_file.read_bytes()
    small_model_file.write_bytes(data[: len(data) // 2])
    assert main(["convert", str(small_model_file), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("yuzu-onnx: error:") and str(small_model_file) in err[0]
    assert "not a readable ONNX model" in err[0]
    assert not small_model_file.with_name("small.ism.onnx").exists()


# ----------------------------------------------------------------------------- 2. no sequence input


def _dense_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return onnx_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
                 {"w": weight(rng, (10, 2), 1.0), "b": np.zeros(2, np.float32)}, ["N", 10], infer_shapes=True)


def _conv2d_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return onnx_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                 {"w": weight(rng, (2, 3, 3, 3), 1.0)}, ["N", 3, 5, 7], infer_shapes=True)


@pytest.mark.parametrize("build, shape", [(_dense_model, "('N', 10)"), (_conv2d_model, "('N', 3, 5, 7)")],
                         ids=["N_10", "N_3_5_7"])
def test_no_sequence_input_lists_inputs(build, shape):
    with pytest.raises(UnsupportedModelError) as info:
        convert(build())
    message = str(info.value)
    assert "cannot tell which input is the one-hot sequence" in message
    assert f"'x' {shape} float32" in message  # every input, with shape and dtype
    assert "input_name=" in message and "--input" in message


def test_named_input_of_wrong_rank_is_refused():
    with pytest.raises(UnsupportedModelError, match=r"input 'x' has shape \('N', 3, 5, 7\) \(rank 4\); "
                                                    r"a sequence input must be rank 3"):
        convert(_conv2d_model(), input_name="x")


def test_cli_no_sequence_input(tmp_path, capsys):
    path = tmp_path / "dense.onnx"
    onnx.save(_dense_model(), str(path))
    assert main(["convert", str(path), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot tell which input" in err[0] and "--input" in err[0]


# ----------------------------------------------------------------------------- 3. symbolic length

L_SYM = 37


def symbolic_length_model(length_dim="L") -> onnx.ModelProto:
    """Exported with a dynamic length: conv -> relu -> conv, flattened as ``view(-1,
    prod(shape[1:]))`` (Shape -> Slice -> ReduceProd -> Concat -> Reshape, which folds to a
    constant only once the length is known), then a dense head sized for L = 37."""
    nodes, inits = conv_pair("x", "c2", rng=3)
    rng = np.random.default_rng(4)
    inits.update({
        "one": np.array([1], np.int64), "big": np.array([8], np.int64), "minus1": np.array([-1], np.int64),
        "wd": weight(rng, (3 * L_SYM, 2), 1 / np.sqrt(3 * L_SYM)),
    })
    nodes += [
        helper.make_node("Shape", ["c2"], ["shape"]),
        helper.make_node("Slice", ["shape", "one", "big"], ["per_seq"]),
        helper.make_node("ReduceProd", ["per_seq"], ["features"], keepdims=1),
        helper.make_node("Concat", ["minus1", "features"], ["target"], axis=0),
        helper.make_node("Reshape", ["c2", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "wd"], ["y"]),
    ]
    return onnx_model(nodes, inits, ["N", 4, length_dim], infer_shapes=True)


def test_symbolic_length_needs_length():
    with pytest.raises(UnsupportedModelError) as info:
        convert(symbolic_length_model())
    message = str(info.value)
    assert "input 'x' has shape ('N', 4, 'L')" in message and "length axis is not static" in message
    assert "length=" in message and "--length" in message


@pytest.mark.parametrize("length_dim", ["L", None], ids=["symbolic", "unknown"])
def test_symbolic_length_fixed_by_length_is_exact(length_dim):
    model = symbolic_length_model(length_dim)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConversionWarning)  # the shape chain folds: nothing falls back
        converted = convert(model, length=L_SYM)
    dims = converted.graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_value == L_SYM  # the converted graph takes exactly this length
    props = {p.key: p.value for p in converted.metadata_props}
    assert props["yuzu_onnx.length"] == str(L_SYM)
    _check_exact(model, converted, random_one_hot(2, L_SYM, seed=11))


def test_symbolic_length_with_region():
    model = symbolic_length_model()
    converted = convert(model, length=L_SYM, start=30, end=L_SYM)
    _check_exact(model, converted, random_one_hot(2, L_SYM, seed=12), start=30, end=L_SYM)


def test_length_contradicting_static_length_is_refused():
    model = conv_relu_conv(40)
    with pytest.raises(UnsupportedModelError, match=r"length=37 contradicts input 'x', whose length is "
                                                    r"fixed at 40 .*leave length out or pass 40"):
        convert(model, length=37)
    assert convert(model, length=40).graph.input[0].type.tensor_type.shape.dim[2].dim_value == 40


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_length_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="length must be a positive integer"):
        convert(symbolic_length_model(), length=bad)


def test_cli_length_option(tmp_path, capsys):
    path = tmp_path / "dyn.onnx"
    onnx.save(symbolic_length_model(), str(path))
    assert main(["convert", str(path), "-q"]) == 2
    assert "--length" in capsys.readouterr().err
    out = tmp_path / "dyn.ism.onnx"
    assert main(["convert", str(path), "-q", "--length", str(L_SYM), "-o", str(out)]) == 0
    assert onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[2].dim_value == L_SYM
    capsys.readouterr()
    assert main(["check", str(path), "--length", str(L_SYM), "--sequences", "1"]) == 0
    assert "OK: all 1 outputs agree with naive ISM" in capsys.readouterr().out
    assert main(["bench", str(path), "--length", str(L_SYM), "--repeats", "1"]) == 0
    assert f"L={L_SYM}" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 4. opsets


def old_opset_model(opset: int) -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool -> Conv -> ReduceMean(axes attribute) -> Softmax(axis=1, the
    pre-13 2-D coercion), all written in their opset-``opset`` form."""
    nodes, inits = conv_pair("x", "c2", rng=5, mid=["Relu", ("MaxPool", dict(kernel_shape=[2], strides=[2]))])
    nodes += [
        helper.make_node("ReduceMean", ["c2"], ["m"], axes=[2], keepdims=0),
        helper.make_node("Softmax", ["m"], ["y"], axis=1),
    ]
    return onnx_model(nodes, inits, ["N", 4, L], opset=opset, ir_version=4, infer_shapes=True)


@pytest.mark.parametrize("opset", [9, 10, 11, 12])
def test_old_opset_is_upgraded_and_exact(opset):
    model = old_opset_model(opset)
    converted = convert(model)
    versions = {o.domain: o.version for o in converted.opset_import}
    assert versions.get("", versions.get("ai.onnx")) == MIN_OPSET
    _check_exact(model, converted, random_one_hot(2, L, seed=opset))  # naive on the ORIGINAL model


def test_opset_range_matches_this_installation():
    assert MIN_OPSET == 13
    assert max_opset() == min(onnx.defs.onnx_opset_version(), onnxruntime_max_opset())
    # onnxruntime really loads the newest opset we accept and the newest it reports, and not the
    # next one (which this onnx may not know: every model gets an IR version onnxruntime takes)
    ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", max_opset())])
    newest = onnxruntime_max_opset()
    for version, loads in [(max_opset(), True), (newest, True), (newest + 1, False)]:
        model = conv_relu_conv(L, opset=version)
        model.ir_version = ir_version
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            loaded = True
        except Exception:
            loaded = False
        assert loaded == loads, version


@pytest.mark.parametrize("over", [1, "onnx"], ids=["past_onnxruntime", "past_onnx"])
def test_too_new_opset_is_refused(over):
    opset = onnx.defs.onnx_opset_version() + 1 if over == "onnx" else max_opset() + 1
    model = conv_relu_conv(L, opset=opset)
    with pytest.raises(UnsupportedModelError) as info:
        convert(model)
    message = str(info.value)
    assert f"uses ONNX opset {opset}, newer than" in message
    assert f"opsets {MIN_OPSET} to {max_opset()}" in message


def test_old_opset_the_converter_cannot_upgrade_is_refused():
    # BatchNormalization with spatial=0 (opset <= 8) has no opset-9+ equivalent
    (conv1, *_), inits = conv_pair(rng=6)
    inits.update({k: np.ones(6, np.float32) for k in ("s", "b", "m", "v")})
    nodes = [conv1, helper.make_node("BatchNormalization", ["c1", "s", "b", "m", "v"], ["y"], spatial=0)]
    model = onnx_model(nodes, inits, ["N", 4, L], opset=8, ir_version=4, infer_shapes=True)
    with pytest.raises(UnsupportedModelError) as info:
        convert(model)
    message = str(info.value)
    assert "uses ONNX opset 8, older than the supported opsets 13 to" in message
    assert "could not upgrade it to opset 13" in message and "spatial" in message


# ----------------------------------------------------------------------------- 5. non-finite weights


def non_finite_model(where: str, value: float) -> onnx.ModelProto:
    """conv -> relu -> conv with two heads: ``yc`` (the conv output, per position) and ``yh``
    (a dense layer, or a global average pool for ``b1_pool``). ``where`` picks the weight set
    to ``value``."""
    nodes, inits = conv_pair("x", "yc", rng=7)
    head, dense = dense_head("yc", "yh", 3 * L, 2, np.random.default_rng(8))
    if where == "w1":
        inits["w1"][2, 1, 3] = value  # one tap of one filter: that channel is non-finite
    elif where == "w2":
        inits["w2"][1, 4, 0] = value
    elif where == "b1_pool":
        inits["b1"][0] = value  # relu(+inf) = +inf everywhere in channel 0
        inits["w2"] = np.abs(inits["w2"])  # keep it +inf (no inf - inf) through conv2
    elif where == "wd":
        dense["wd"][5, 1] = value
    if where == "b1_pool":
        nodes.append(helper.make_node("GlobalAveragePool", ["yc"], ["yh"]))
    else:
        nodes += head
        inits.update(dense)
    return onnx_model(nodes, inits, ["N", 4, L], outputs=("yc", "yh"), infer_shapes=True)


def assert_same_with_non_finite(got: np.ndarray, ref: np.ndarray, label: str) -> None:
    """NaN, +inf and -inf exactly where naive ISM has them; close to it elsewhere."""
    assert got.shape == ref.shape, label
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{label}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(ref), err_msg=f"{label}: +inf positions")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(ref), err_msg=f"{label}: -inf positions")
    finite = np.isfinite(ref)
    scale = float(np.abs(ref[finite]).max()) if finite.any() else 1.0
    np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-5 * scale, err_msg=label)


@pytest.mark.parametrize("where, value", [
    ("w1", np.nan), ("w2", np.nan), ("w1", np.inf), ("w2", -np.inf),
    ("b1_pool", np.inf), ("wd", np.inf), ("wd", np.nan),
], ids=["conv1_nan", "conv2_nan", "conv1_inf", "conv2_neginf", "inf_into_mean", "dense_inf", "dense_nan"])
@pytest.mark.parametrize("subs", ["alt", "all"])
def test_non_finite_weights_match_naive(where, value, subs):
    model = non_finite_model(where, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConversionWarning)
        converted = convert(model, substitutions=subs, start=3, end=L - 2)
    X = random_one_hot(2, L, seed=21)
    got = run_ism(converted, X)
    ref = naive_ism(model, X, start=3, end=L - 2)
    some_non_finite = False
    for name, (y0, y_hat), (r0, r_hat) in zip(("yc", "yh"), got, ref):
        assert_same_with_non_finite(y0, r0, f"{name} y0")
        assert_same_with_non_finite(y_hat, r_hat, f"{name} y_hat")
        some_non_finite |= not np.isfinite(r_hat).all()
    assert some_non_finite  # the case really puts NaN or inf into naive ISM


def test_non_finite_dense_weight_warns_and_names_the_layer():
    with pytest.warns(ConversionWarning, match=r"MatMul node 'dense': its weight 'wd' holds 1 NaN or infinite"):
        convert(non_finite_model("wd", np.inf))


# ----------------------------------------------------------------------------- 6. non-finite input


_CONVERTED: dict[str, onnx.ModelProto] = {}


def _converted(subs: str) -> onnx.ModelProto:
    """``conv_relu_conv()`` converted for the region 4..14 (cached; do not modify)."""
    if subs not in _CONVERTED:
        _CONVERTED[subs] = convert(conv_relu_conv(L), substitutions=subs, start=4, end=15)
    return _CONVERTED[subs]


@pytest.fixture(scope="module")
def sessions() -> dict[str, ISMSession]:
    return {subs: ISMSession(_converted(subs), providers=["CPUExecutionProvider"]) for subs in ("alt", "all")}


@pytest.mark.parametrize("subs", ["alt", "all"])
@pytest.mark.parametrize("value, pos", [(np.nan, 7), (np.inf, 1), (-np.inf, 19)],
                         ids=["nan_in_region", "inf_before_region", "neginf_after_region"])
def test_non_finite_input_is_refused(sessions, subs, value, pos):
    X = random_one_hot(3, L, seed=31)
    if subs == "all":
        X[0, :, 9] = 0.25  # soft columns are fine in "all" mode; the non-finite one is not
    X[2, 1, pos] = value
    with pytest.raises(InputValidationError, match=rf"sequence 2, position {pos} holds a non-finite value"):
        sessions[subs].run(X)
    with pytest.raises(InputValidationError, match=rf"sequence 2, position {pos} holds a non-finite"):
        run_ism(_converted(subs), X)


def test_non_finite_input_refused_in_nlc_layout():
    model = conv_relu_conv(
        x_shape=["N", L, 4], src="xt", pre=[helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1])])
    session = ISMSession(convert(model, substitutions="all"), providers=["CPUExecutionProvider"])
    X = random_one_hot(2, L, seed=32, layout="NLC")
    X[1, 13, 2] = np.nan
    with pytest.raises(InputValidationError, match="sequence 1, position 13 holds a non-finite value"):
        session.run(X)


# ----------------------------------------------------------------------------- 7. empty batch


def test_empty_batch_gives_empty_results():
    nodes, inits = conv_pair("x", "yc", rng=9)
    head, dense = dense_head("yc", "yh", 3 * L, 2, np.random.default_rng(10), scale=1.0)
    model = onnx_model(nodes + head, {**inits, **dense}, ["N", 4, L], outputs=("yc", "yh"), infer_shapes=True)
    for subs in ("alt", "all"):
        session = ISMSession(convert(model, substitutions=subs, start=5, end=12), providers=["CPUExecutionProvider"])
        empty = session.run(np.zeros((0, 4, L), np.float32))
        one = session.run(random_one_hot(1, L, seed=1))
        assert [(y0.shape, y_hat.shape) for y0, y_hat in empty] == [((0, 3, L), (0, 4, 7, 3, L)), ((0, 2), (0, 4, 7, 2))]
        for (y0, y_hat), (o0, o_hat) in zip(empty, one):
            assert y0.shape[1:] == o0.shape[1:] and y_hat.shape[1:] == o_hat.shape[1:]
            assert y0.dtype == o0.dtype == np.float32 and y_hat.dtype == o_hat.dtype
        assert list(session.iter_batches(np.zeros((0, 4, L), np.float32))) == []
        # the shape is still checked for an empty batch
        with pytest.raises(InputValidationError, match="length 20 != 21"):
            session.run(np.zeros((0, 4, L - 1), np.float32))
    assert [y.shape for pair in run_ism(convert(model), np.zeros((0, 4, L), np.float32)) for y in pair] == [
        (0, 3, L), (0, 4, L, 3, L), (0, 2), (0, 4, L, 2)]


def test_empty_batch_does_not_call_onnxruntime():
    session = ISMSession(_converted("alt"), providers=["CPUExecutionProvider"], max_memory=10 ** 6)

    class NoRun:
        def __getattr__(self, name):
            return getattr(real, name)

        def run(self, *args, **kwargs):
            raise AssertionError("ONNX Runtime was called on an empty batch")

    real = session._session
    session._session = NoRun()
    (y0, y_hat), = session.run(np.zeros((0, 4, L), np.float32))
    assert y0.shape == (0, 3, L) and y_hat.shape == (0, 4, 11, 3, L)


# ----------------------------------------------------------------------------- 8. short sequences


@pytest.mark.parametrize("length, attrs, expect", [
    (8, dict(k1=11, pads1=(0, 0)), r"Conv node 'conv1' \(kernel=\[11\], pads=\[0, 0\]\) gives 'c1' the "
                                   r"shape \(N, 6, -2\) from 'x' of shape \(N, 4, 8\)"),
    (6, dict(k1=4, dilations=[3]), r"Conv node 'conv1' \(kernel=\[4\], dilations=\[3\]\) gives 'c1' the "
                                   r"shape \(N, 6, -3\)"),
], ids=["kernel11_L8", "dilated_L6"])
def test_sequence_shorter_than_kernel_is_refused(length, attrs, expect):
    model = conv_relu_conv(length, **attrs)
    with pytest.raises(UnsupportedModelError, match=expect) as info:
        convert(model)
    assert f"sequence length {length} of input 'x' is shorter than the model's receptive field" in str(info.value)


def test_sequence_as_long_as_the_kernel_is_exact():
    model = conv_relu_conv(11, k1=11, pads1=(0, 0))  # conv1 leaves one position
    _check_exact(model, convert(model), random_one_hot(2, 11, seed=41))


def test_pool_wider_than_sequence_is_refused():
    (conv1, *_), inits = conv_pair(rng=11)
    nodes = [conv1, helper.make_node("MaxPool", ["c1"], ["y"], name="pool", kernel_shape=[12])]
    model = onnx_model(nodes, inits, ["N", 4, 9], infer_shapes=True)
    with pytest.raises(UnsupportedModelError, match=r"MaxPool node 'pool' \(kernel_shape=\[12\]\) "
                                                    r"gives 'y' the shape \(N, 6, -2\) from 'c1' of shape \(N, 6, 9\)"):
        convert(model)


@pytest.mark.parametrize("conv1", [dict(pads=[5, 5]), dict(auto_pad="SAME_UPPER"), dict(auto_pad="SAME_LOWER"),
                                   dict(pads=[7, 6])], ids=["pads", "same_upper", "same_lower", "wide_pads"])
@pytest.mark.parametrize("subs", ["alt", "all"])
def test_short_sequence_with_same_padding_is_exact(conv1, subs):
    model = conv_relu_conv(8, k1=11, **conv1)
    X = random_one_hot(2, 8, seed=42)
    _check_exact(model, convert(model, substitutions=subs), X)
    _check_exact(model, convert(model, substitutions=subs, start=2, end=5), X, start=2, end=5)


# ----------------------------------------------------------------------------- 9. integer inputs


def integer_model(x_type, layout: str = "NCL") -> onnx.ModelProto:
    """An integer one-hot input cast to float inside the model, then conv -> relu -> conv."""
    cast = helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT)
    pre = [cast]
    src = "xf"
    if layout == "NLC":
        pre.append(helper.make_node("Transpose", ["xf"], ["xt"], perm=[0, 2, 1]))
        src = "xt"
    shape = ["N", 4, L] if layout == "NCL" else ["N", L, 4]
    return conv_relu_conv(x_shape=shape, src=src, pre=pre, dtype=x_type, seed=12)


def float_front(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` behind a float input cast to its integer type: the naive oracle takes float
    inputs only, and for 0/1 values the cast is exact, so this computes ``model`` itself."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    x = out.graph.input[0]
    to = x.type.tensor_type.elem_type
    for node in out.graph.node:
        node.input[:] = ["x_int" if i == "x" else i for i in node.input]
    out.graph.node.insert(0, helper.make_node("Cast", ["x"], ["x_int"], to=to))
    x.type.tensor_type.elem_type = TensorProto.FLOAT
    return out


@pytest.mark.parametrize("x_type, np_type", [(TensorProto.UINT8, np.uint8), (TensorProto.INT8, np.int8),
                                             (TensorProto.INT32, np.int32)], ids=["uint8", "int8", "int32"])
@pytest.mark.parametrize("subs", ["alt", "all"])
def test_integer_input_converts_exactly(x_type, np_type, subs):
    model = integer_model(x_type)
    converted = convert(model, substitutions=subs, start=2, end=17)
    assert converted.graph.input[0].type.tensor_type.elem_type == x_type  # fed as the original
    X = random_one_hot(2, L, seed=51).astype(np_type)
    session = ISMSession(converted, providers=["CPUExecutionProvider"])
    (y0, y_hat), = session.run(X)
    (r0, r_hat), = naive_ism(float_front(model), X.astype(np.float32), start=2, end=17)
    original = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(r0, original.run(None, {"x": X})[0])  # the front is exact
    np.testing.assert_allclose(y0, r0, rtol=1e-5, atol=1e-6)
    assert_ism_close(y_hat, r_hat, r0, start=2)
    # a float32 one-hot (e.g. read from FASTA) is accepted and cast losslessly
    (f0, f_hat), = session.run(X.astype(np.float32))
    np.testing.assert_array_equal(f_hat, y_hat)


def test_integer_input_nlc_layout():
    model = integer_model(TensorProto.UINT8, "NLC")
    converted = convert(model)
    X = random_one_hot(2, L, seed=52, layout="NLC", dtype=np.uint8)
    (y0, y_hat), = run_ism(converted, X)
    (r0, r_hat), = naive_ism(float_front(model), X.astype(np.float32), layout="NLC")
    assert_ism_close(y_hat, r_hat, r0)


def test_integer_input_refuses_values_it_cannot_hold():
    session = ISMSession(convert(integer_model(TensorProto.UINT8), substitutions="all"),
                         providers=["CPUExecutionProvider"])
    X = random_one_hot(2, L, seed=53)
    X[1, :, 6] = 0.25
    with pytest.raises(InputValidationError, match=r"input value 0\.25 at index \(1, 0, 6\) does not fit the "
                                                   r"model's uint8 input"):
        session.run(X)
    Xi = random_one_hot(2, L, seed=53).astype(np.int64)
    Xi[0, 3, 2] = 300
    with pytest.raises(InputValidationError, match=r"input value 300 at index \(0, 3, 2\) does not fit"):
        session.run(Xi)
    with pytest.raises(InputValidationError, match="holds a non-finite value"):
        session.run(np.where(X == 0.25, np.nan, X))


def test_bool_input_is_refused():
    model = conv_relu_conv(L, pre=[helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT)], src="xf",
                           dtype=TensorProto.BOOL)
    with pytest.raises(UnsupportedModelError, match="input 'x' has dtype bool; sequence inputs must be float or "
                                                    "int8, uint8, int32 or int64"):
        convert(model)
