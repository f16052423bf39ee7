"""``yuzu-onnx triton`` (Triton model repository export) and ``yuzu-onnx check``."""

from __future__ import annotations

import argparse
import os
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx import ConversionWarning, convert
from yuzu_onnx import verify as verify_module
from yuzu_onnx.cli import save_model
from yuzu_onnx.commands import check as check_cmd
from yuzu_onnx.commands import triton as triton_cmd
from yuzu_onnx.errors import ModelLoadError, UnsupportedModelError
from yuzu_onnx.triton import TRITON_TYPES, write_triton_repository

from builders import random_one_hot
from conftest import MODELS_DIR

TOYNET = MODELS_DIR / "toynet_L45_torchscript.onnx"
BPNET = MODELS_DIR / "bpnet9_L64_torchscript.onnx"
KERAS = MODELS_DIR / "keras_conv1d_L48_tf2onnx.onnx"


def _parser(module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yuzu-onnx")
    sub = parser.add_subparsers(dest="command", required=True)
    module.add_parser(sub)
    return parser


def _main(module, argv: list[str]) -> int:
    args = _parser(module).parse_args(argv)
    return args.func(args)


def read_config(text: str) -> dict:
    """A small reader for the config.pbtxt subset the writer produces."""
    cfg = {
        "name": re.search(r'^name:\s*"([^"]*)"', text, re.M).group(1),
        "platform": re.search(r'^platform:\s*"([^"]*)"', text, re.M).group(1),
        "max_batch_size": int(re.search(r"^max_batch_size:\s*(-?\d+)", text, re.M).group(1)),
        "dynamic_batching": re.search(r"^dynamic_batching\s*\{", text, re.M) is not None,
        "instance_kind": re.search(r"kind:\s*(KIND_\w+)", text).group(1),
    }
    for section in ("input", "output"):
        block = re.search(rf"^{section}\s*\[(.*?)^\]", text, re.M | re.S).group(1)
        entries = []
        for body in re.findall(r"\{(.*?)\n\s*\}", block, re.S):
            dims = re.search(r"dims:\s*\[([^\]]*)\]", body).group(1)
            entries.append((re.search(r'name:\s*"([^"]*)"', body).group(1),
                            re.search(r"data_type:\s*(TYPE_\w+)", body).group(1),
                            [int(d) for d in dims.replace(",", " ").split()]))
        cfg[section] = entries
    return cfg


def _expected(values) -> list:
    return [(v.name, TRITON_TYPES[v.type.tensor_type.elem_type],
             [d.dim_value for d in v.type.tensor_type.shape.dim][1:]) for v in values]


def _converted(src: Path, tmp_path: Path) -> Path:
    out = tmp_path / f"{src.stem}.ism.onnx"
    save_model(convert(src), out)
    return out


def _run(path: Path, X: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: X})


@pytest.mark.parametrize("src", [TOYNET, BPNET], ids=["toynet", "bpnet9"])
def test_triton_repository_matches_the_model(src, tmp_path, capsys):
    ism = _converted(src, tmp_path)
    repo = tmp_path / "repo"
    assert _main(triton_cmd, ["triton", str(ism), str(repo)]) == 0
    name = src.stem  # default: stem without .ism.onnx
    model_dir = repo / name
    printed = capsys.readouterr().out
    assert str(model_dir / "config.pbtxt") in printed and str(model_dir / "1" / "model.onnx") in printed
    assert sorted(p.name for p in repo.iterdir()) == [name]  # no temp folders left behind

    cfg = read_config((model_dir / "config.pbtxt").read_text())
    assert cfg["name"] == name
    assert cfg["platform"] == "onnxruntime_onnx"
    assert cfg["max_batch_size"] == 8
    assert cfg["dynamic_batching"]
    assert cfg["instance_kind"] == "KIND_AUTO"
    graph = onnx.load(str(ism)).graph
    inits = {t.name for t in graph.initializer}
    assert cfg["input"] == _expected([v for v in graph.input if v.name not in inits])
    assert cfg["output"] == _expected(graph.output)
    assert [o[0] for o in cfg["output"]] == [o.name for o in graph.output]
    if src is BPNET:
        assert [o[0] for o in cfg["output"]] == ["profile", "counts", "profile_ism", "counts_ism"]
        assert dict((n, d) for n, _, d in cfg["output"])["counts"] == [2]

    L = int(re.search(r"_L(\d+)_", src.name).group(1))
    X = random_one_hot(2, L, seed=1)
    for got, want in zip(_run(model_dir / "1" / "model.onnx", X), _run(ism, X), strict=True):
        np.testing.assert_array_equal(got, want)


def test_triton_options(tmp_path):
    ism = _converted(TOYNET, tmp_path)
    repo = tmp_path / "repo"
    assert _main(triton_cmd, ["triton", str(ism), str(repo), "--name", "toy", "--max-batch-size", "32",
                              "--no-dynamic-batching"]) == 0
    cfg = read_config((repo / "toy" / "config.pbtxt").read_text())
    assert (cfg["name"], cfg["max_batch_size"], cfg["dynamic_batching"]) == ("toy", 32, False)
    # max_batch_size 0: Triton does not batch, the batch axis stays in the dims as -1
    write_triton_repository(ism, repo, name="nobatch", max_batch_size=0)
    cfg = read_config((repo / "nobatch" / "config.pbtxt").read_text())
    assert cfg["max_batch_size"] == 0 and not cfg["dynamic_batching"]
    assert cfg["input"][0][2] == [-1, 4, 45]
    # an existing model folder is kept unless overwrite is asked for
    with pytest.raises(FileExistsError):
        write_triton_repository(ism, repo, name="toy")
    write_triton_repository(ism, repo, name="toy", max_batch_size=4, overwrite=True)
    assert read_config((repo / "toy" / "config.pbtxt").read_text())["max_batch_size"] == 4
    assert sorted(p.name for p in repo.iterdir()) == ["nobatch", "toy"]


def test_triton_copies_external_data(tmp_path):
    model = convert(TOYNET)
    ism = tmp_path / "ext.ism.onnx"
    onnx.save_model(model, str(ism), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.ism.onnx.data")
    dest = write_triton_repository(ism, tmp_path / "repo")
    assert dest.name == "ext"
    assert (dest / "1" / "ext.ism.onnx.data").is_file()
    X = random_one_hot(1, 45, seed=2)
    for got, want in zip(_run(dest / "1" / "model.onnx", X), _run(ism, X), strict=True):
        np.testing.assert_array_equal(got, want)


def test_triton_refuses_unconverted_model(tmp_path):
    repo = tmp_path / "repo"
    with pytest.raises(ModelLoadError, match="yuzu-onnx convert"):
        write_triton_repository(TOYNET, repo)
    assert not (repo / "toynet_L45_torchscript").exists()
    bad = tmp_path / "junk.ism.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError):
        write_triton_repository(bad, repo)


def test_triton_refuses_symbolic_non_batch_dims(tmp_path):
    model = convert(TOYNET)
    dim = model.graph.output[0].type.tensor_type.shape.dim[2]
    dim.ClearField("dim_value")
    dim.dim_param = "L"
    ism = tmp_path / "sym.ism.onnx"
    onnx.save_model(model, str(ism))
    repo = tmp_path / "repo"
    with pytest.raises(UnsupportedModelError, match="symbolic dim 'L'"):
        write_triton_repository(ism, repo)
    assert not (repo / "sym").exists()


def test_check_passes_on_toynet(capsys):
    assert _main(check_cmd, ["check", str(TOYNET)]) == 0
    out = capsys.readouterr().out
    assert "verified against naive ISM on 2 random sequences" in out
    assert "max |error|" in out and "FAILED" not in out


def test_check_fails_on_large_error(monkeypatch, capsys):
    def bad_verify(original, converted, sequences=2, seed=0, providers=None):
        checks = [verify_module.OutputCheck("y", max_abs_error=0.5, max_abs_delta=1.0, pearson=0.5)]
        return verify_module.VerifyReport(checks, 1.0, 0.1, sequences)

    monkeypatch.setattr(verify_module, "verify", bad_verify)
    assert _main(check_cmd, ["check", str(TOYNET), "--sequences", "1"]) == 1
    out = capsys.readouterr().out
    assert "max |error| 0.5" in out
    assert "FAILED y: relative error 0.5" in out


# ----------------------------------------------------------------------------- Triton's own schema


def scalar_uint8_model(length: int = 30) -> onnx.ModelProto:
    """uint8 one-hot (N, 4, L) -> Cast -> Conv -> Relu -> ReduceSum -> y (N,): an integer
    input, and an output with no dims besides the batch (Triton: dims [1] reshaped to [])."""
    w = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Conv", ["xf", "w"], ["h"], pads=[2, 2]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("ReduceSum", ["r", "axes"], ["y"], keepdims=0)]
    graph = helper.make_graph(
        nodes, "scalar_uint8", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", 4, length])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1, 2], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def convert_quietly(src) -> onnx.ModelProto:
    with warnings.catch_warnings():  # the scalar model's ReduceSum runs on materialized mutants
        warnings.simplefilter("ignore", ConversionWarning)
        return convert(src)


def triton_schema():
    """Triton's ModelConfig protobuf (model_config.proto of triton-inference-server/common, as
    compiled into tritonclient) and tritonclient's numpy -> Triton type names. tritonclient is
    a dev dependency: under CI (``CI`` set) its absence fails the test instead of skipping it."""
    try:
        from tritonclient.grpc import model_config_pb2
        from tritonclient.utils import np_to_triton_dtype
    except Exception as exc:  # ImportError, or tritonclient's RuntimeError without grpcio
        if os.environ.get("CI"):
            raise
        pytest.skip(f"tritonclient (with grpcio) is not installed: {exc}; pip install -e '.[dev]'")
    return model_config_pb2, np_to_triton_dtype


def parse_config(text: str):
    """config.pbtxt parsed strictly (unknown fields or enum values raise) into ModelConfig."""
    from google.protobuf import text_format
    model_config_pb2, _ = triton_schema()
    return text_format.Parse(text, model_config_pb2.ModelConfig())


SCHEMA_CASES = {  # id: (source model, max_batch_size, dynamic batching)
    "toynet": (TOYNET, 8, True),
    "bpnet9": (BPNET, 16, True),
    "keras_nlc": (KERAS, 4, False),
    "scalar_uint8": (None, 8, True),
    "toynet_unbatched": (TOYNET, 0, True),
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_triton_config_matches_triton_schema_and_model(case, tmp_path):
    """config.pbtxt parses into Triton's own ModelConfig message, and every field the
    repository relies on says what the ONNX model and the options say, under the rules Triton's
    model-config validation applies (dims > 0 or -1, reshape of the same element count, the
    batch axis left out of the dims exactly when max_batch_size > 0)."""
    mc, np_to_triton_dtype = triton_schema()
    src, max_batch, dynamic = SCHEMA_CASES[case]
    ism = tmp_path / f"{case}.ism.onnx"
    save_model(convert_quietly(src if src is not None else scalar_uint8_model()), ism)
    dest = write_triton_repository(ism, tmp_path / "repo", name=case, max_batch_size=max_batch,
                                   dynamic_batching=dynamic)
    cfg = parse_config((dest / "config.pbtxt").read_text())

    assert cfg.name == case == dest.name
    assert cfg.platform == "onnxruntime_onnx" and cfg.backend in ("", "onnxruntime")
    assert cfg.max_batch_size == max_batch
    assert cfg.WhichOneof("scheduling_choice") == ("dynamic_batching" if dynamic and max_batch > 0 else None)
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(1, mc.ModelInstanceGroup.KIND_AUTO)]
    assert not cfg.default_model_filename and (dest / "1" / "model.onnx").is_file()  # Triton's default name

    graph = onnx.load(str(ism)).graph
    inits = {t.name for t in graph.initializer}
    for entries, values in ((cfg.input, [v for v in graph.input if v.name not in inits]), (cfg.output, graph.output)):
        assert [e.name for e in entries] == [v.name for v in values]
        for e, v in zip(entries, values, strict=True):
            tt = v.type.tensor_type
            triton_type = np_to_triton_dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
            assert mc.DataType.Name(e.data_type) == "TYPE_" + triton_type.replace("BYTES", "STRING"), v.name
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            assert shape[0] == -1, f"{v.name}: the batch axis of the converted graph must be dynamic"
            dims = list(e.dims)
            assert dims and all(d > 0 or d == -1 for d in dims), (v.name, dims)  # Triton's dims rule
            model_dims = shape[1:] if max_batch > 0 else shape
            if e.HasField("reshape"):  # the per-sequence scalar: dims [1], the model sees []
                assert dims == [1] and list(e.reshape.shape) == model_dims == [], (v.name, dims, e.reshape)
            else:
                assert dims == model_dims, (v.name, dims, model_dims)
    assert cfg.input[0].data_type == (mc.TYPE_UINT8 if case == "scalar_uint8" else mc.TYPE_FP32)


def test_triton_config_rejects_what_triton_rejects():
    """The schema check is strict: a misspelled field or an unknown data type does not parse."""
    from google.protobuf import text_format
    triton_schema()
    good = 'name: "m"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 1\n'
    parse_config(good)
    with pytest.raises(text_format.ParseError, match="max_batch"):
        parse_config(good.replace("max_batch_size", "max_batchsize"))
    with pytest.raises(text_format.ParseError, match="TYPE_FLOAT32"):
        parse_config(good + 'input [ { name: "x" data_type: TYPE_FLOAT32 dims: [ 4 ] } ]\n')
