"""Memory estimates of converted graphs (yuzu_onnx.memory) and the budgets built on them."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import helper

from yuzu_onnx import convert
from yuzu_onnx.cli import main
from yuzu_onnx.errors import MemoryBudgetError
from yuzu_onnx.memory import (CUDA_MAX_TENSOR_ELEMENTS, METADATA_KEY, MemoryEstimate, batch_for_budget,
                              cuda_batch_limit, estimate_memory, format_size, parse_size)

from builders import onnx_model, random_one_hot
from conftest import MODELS_DIR, REPO

L = 50


def _chain_model() -> onnx.ModelProto:
    """x (N,4,L) -> Conv 4->8 (k1) -> Relu -> Conv 8->2 (k1) -> y; every tensor's size is known."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"])]
    inits = {"w1": np.ones((8, 4, 1), np.float32), "w2": np.ones((2, 8, 1), np.float32)}
    return onnx_model(nodes, inits, ["N", 4, L], {"y": ["N", 2, L]})


def test_replay_of_a_known_chain():
    est = estimate_memory(_chain_model())
    f = 4 * L  # bytes of one float channel
    # the first Conv holds x (4 ch) + a (8); Relu runs in place (b takes a's buffer, as in ONNX
    # Runtime); the second Conv holds b (8) + y (2): the peak is 12 channels
    assert est.per_sequence == 12 * f
    assert est.fixed == 0
    assert est.weights == (8 * 4 + 2 * 8) * 4
    assert est.largest_tensor == 8 * L
    assert est.activations(3) == 3 * 12 * f


@pytest.mark.parametrize("op,in_place", [("Relu", True), ("Sigmoid", True), ("Add", False), ("Mul", False),
                                         ("Exp", False)])
def test_only_ops_onnx_runtime_runs_in_place_reuse_their_input(op, in_place):
    """x -> Conv 4->8 -> op -> Conv 8->2: ONNX Runtime's CPU kernels run activations in place
    but write a new buffer for Add, Mul and Exp (measured with the arena off), so the op's
    output adds 8 channels to the peak unless it runs in place."""
    inputs = ["a", "bias"] if op in ("Add", "Mul") else ["a"]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node(op, inputs, ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"])]
    inits = {"w1": np.ones((8, 4, 1), np.float32), "w2": np.ones((2, 8, 1), np.float32),
             "bias": np.ones((1, 8, 1), np.float32)}
    est = estimate_memory(onnx_model(nodes, inits, ["N", 4, L], {"y": ["N", 2, L]}))
    f = 4 * L
    assert est.per_sequence == (12 if in_place else 16) * f  # x + a + b while the op runs


def test_converted_model_carries_its_estimate():
    model = convert(str(MODELS_DIR / "toynet_L45_torchscript.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    stored = MemoryEstimate.from_json(props[METADATA_KEY])
    assert stored.per_sequence > 0
    assert stored == estimate_memory(model)


def test_estimate_matches_onnx_runtime_peak(tmp_path):
    """The plan's estimate against the resident-memory peak of a bounded-memory session."""
    model = convert(str(MODELS_DIR / "example_basset_L1000.onnx"))
    path = tmp_path / "basset.ism.onnx"
    onnx.save(model, str(path))
    batch = 4
    spec = importlib.util.spec_from_file_location("memory_check", REPO / "tools" / "memory_check.py")
    memory_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memory_check)
    measured = memory_check.measure(path, batch)  # the child process tools/memory_check.py runs
    predicted = estimate_memory(model).activations(batch)
    assert abs(predicted - measured) <= 0.25 * measured, (format_size(predicted), format_size(measured))


def test_budget_picks_the_largest_batch_that_fits():
    est = MemoryEstimate(weights=100, fixed=10, per_sequence=1000, largest_tensor=10)
    assert batch_for_budget(est, est.total(3), requested=64) == 3
    assert batch_for_budget(est, est.total(3) + 999, requested=64) == 3
    assert batch_for_budget(est, est.total(3), requested=2) == 2
    assert batch_for_budget(est, est.total(1), requested=64) == 1
    with pytest.raises(MemoryBudgetError, match=r"one sequence needs about 1\.08 KiB .*to at least 1\.08 KiB"):
        batch_for_budget(est, est.total(1) - 1, requested=64)


def test_cuda_limit_keeps_tensors_under_two_to_the_31():
    # BPNet-9 at L=1000: 3000 probes x 64 channels x 1000 positions per sequence
    est = MemoryEstimate(weights=0, fixed=0, per_sequence=1, largest_tensor=3000 * 64 * 1000 * 2 + 300)
    limit = cuda_batch_limit(est)
    assert limit * est.largest_tensor <= CUDA_MAX_TENSOR_ELEMENTS < (limit + 1) * est.largest_tensor
    assert batch_for_budget(est, 10**12, requested=64, cuda=True) == limit
    assert cuda_batch_limit(MemoryEstimate(0, 0, 1, CUDA_MAX_TENSOR_ELEMENTS * 2)) == 1


@pytest.mark.parametrize("text, value", [("8G", 8 * 2**30), ("512M", 512 * 2**20), ("2.5GiB", int(2.5 * 2**30)),
                                         ("1000", 1000), ("64kb", 64 * 1024), (" 1T ", 2**40)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "G"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_plan_table_reports_memory(capsys, tmp_path):
    assert main(["convert", str(MODELS_DIR / "toynet_L45_torchscript.onnx"), "-o", str(tmp_path / "t.onnx")]) == 0
    assert "memory: peak activations" in capsys.readouterr().out


def test_ism_command_refuses_a_budget_below_one_sequence(tmp_path, capsys):
    model = tmp_path / "toynet.ism.onnx"
    onnx.save(convert(str(MODELS_DIR / "toynet_L45_torchscript.onnx")), str(model))
    X = random_one_hot(2, 45, seed=0)
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "out.npz"
    code = main(["ism", str(model), str(tmp_path / "x.npy"), "-o", str(out), "--max-memory", "1K"])
    assert code == 2
    err = capsys.readouterr().err
    assert "one sequence needs about" in err and "--max-memory" in err
    assert not out.exists()
    assert main(["ism", str(model), str(tmp_path / "x.npy"), "-o", str(out), "--max-memory", "1G", "-q"]) == 0
    assert out.exists()
