"""Memory estimates of converted graphs (yuzu_onnx.memory) and the budgets built on them."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

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
    """The plan's estimate (the arena's resident bytes, which the planner budgets) against the
    resident-memory peak of a session as ISMSession makes it."""
    model = convert(str(MODELS_DIR / "example_basset_L1000.onnx"))
    path = tmp_path / "basset.ism.onnx"
    onnx.save(model, str(path))
    batch = 4
    spec = importlib.util.spec_from_file_location("memory_check", REPO / "tools" / "memory_check.py")
    memory_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(memory_check)
    measured = memory_check.measure(path, batch)  # the child process tools/memory_check.py runs
    predicted = estimate_memory(model).resident(batch)
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


ARENA_LOG_CHILD = r"""
import sys, numpy as np, onnxruntime as ort
sys.path.insert(0, sys.argv[2])
from yuzu_onnx.runtime import make_session
ort.set_default_logger_severity(0)  # the arena logs each region it adds at INFO
sess = make_session(sys.argv[1], ['CPUExecutionProvider'])
inp = sess.get_inputs()[0]
X = np.zeros([1 if not isinstance(d, int) else d for d in inp.shape], np.float32)
X[:, 0] = 1.0
sess.run(None, {inp.name: X})
"""


def _onnx_runtime_regions(path) -> list[int]:
    """Sizes of the regions ONNX Runtime's CPU arena adds in one run at batch 1, from its log."""
    run = subprocess.run([sys.executable, "-c", ARENA_LOG_CHILD, str(path), str(REPO)], capture_output=True,
                         text=True, check=True)
    return [int(n) for n in re.findall(r"Extended allocation by (\d+) bytes", run.stdout + run.stderr)]


def _model_regions(model: onnx.ModelProto) -> list[int]:
    """Sizes of the regions :class:`ArenaModel` adds replaying ``model`` at batch 1."""
    from yuzu_onnx import memory

    arena = memory.ArenaModel()
    sizes = []
    extend = arena._extend

    def logged(want: int) -> None:
        extend(want)
        sizes.append(arena.free[-1][2])

    arena._extend = logged
    memory._replay(memory.with_batch(model, 1), {t.name for t in model.graph.initializer}, arena)
    return sizes


@pytest.mark.parametrize("name, form, groups", [("bpnet_L100_dynamo", "whole", None),
                                                ("example_basset_L1000", "whole", None),
                                                ("chrombpnet_mini_L211_dynamo", "tiled", 1),
                                                ("chrombpnet_mini_L211_dynamo", "tiled", 2)])
def test_arena_model_adds_the_regions_onnx_runtime_adds(tmp_path, name, form, groups):
    """The arena model's regions, size by size, are those ONNX Runtime's arena reports adding
    (its log) on the same converted graph: same requests in the same order (ONNX Runtime's
    execution order, NCHWc reorders as their own buffers) and its power-of-two growth rule;
    tiles in one Loop and in two (groups of tiles)."""
    model = convert(str(MODELS_DIR / f"{name}.onnx"), form=form, tile_groups=groups)
    path = tmp_path / "m.ism.onnx"
    onnx.save(model, str(path))
    observed = _onnx_runtime_regions(path)
    assert len(observed) >= 3  # the comparison says something only if the arena grew a few times
    assert _model_regions(model) == observed


def test_execution_order_is_onnx_runtimes(tmp_path):
    """:func:`execution_order` against the order ONNX Runtime's profiler records, on a tiled
    graph's Loop body, where it differs from the file's order (halos first)."""
    import onnxruntime as ort

    from yuzu_onnx.memory import execution_order

    model = convert(str(MODELS_DIR / "chrombpnet_mini_L211_dynamo.onnx"), form="tiled")
    body = next(a.g for n in model.graph.node if n.op_type == "Loop" for a in n.attribute if a.name == "body")
    options = ort.SessionOptions()
    options.enable_profiling, options.profile_file_prefix = True, str(tmp_path / "profile")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    sess.run(None, {inp.name: random_one_hot(1, inp.shape[2])})
    events = json.loads(open(sess.end_profiling()).read())
    ran = sorted((e["ts"], e["name"][: -len("_kernel_time")]) for e in events
                 if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"))
    names = {n.name for n in body.node}
    first_iteration: list[str] = []
    for _, name in ran:
        if name in names and name not in first_iteration:
            first_iteration.append(name)
    constants = {o for n in body.node if n.op_type == "Constant" for o in n.output}
    predicted = [n.name for n in execution_order(body.node, constants)]
    assert len(first_iteration) == len(predicted)
    assert predicted == first_iteration
    assert predicted != [n.name for n in body.node if n.op_type != "Constant"]  # the test tells them apart


def test_arena_resident_bytes_are_the_union_of_touched_spans():
    """:class:`ArenaModel` keeps resident bytes incrementally; after every touch they equal the
    size of the union of all touched byte spans (here counted byte by byte), spans that overlap,
    meet, nest or are empty included."""
    from yuzu_onnx.memory import ArenaModel

    rng = np.random.default_rng(7)
    arena = ArenaModel()
    arena._extend(4096)
    touched = [np.zeros(arena.free[0][2], dtype=bool)]
    for _ in range(400):
        start = int(rng.integers(0, 4000))
        end = start + int(rng.choice([0, 1, 3, 17, 256, 1000]))
        arena._touch(0, start, end)
        touched[0][start:end] = True
        assert arena.resident == int(touched[0].sum())
        spans = arena.touched[0]
        assert spans == sorted(spans) and all(a[1] < b[0] for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("groups", [1, 3])
def test_resident_memory_is_the_arena_replay_at_one_and_two_sequences(groups):
    """``resident(batch)`` is the arena model's replay exactly at batch 1 and 2 and linear from
    there, also where the arena grows faster than the batch (its fixed part is then negative;
    clamping it at 0 overstated batch 1: ChromBPNet-like in 16 groups 695 MiB against 503 MiB
    replayed and 513 MiB measured)."""
    from yuzu_onnx.memory import ArenaModel, _replay, with_batch

    model = convert(str(MODELS_DIR / "chrombpnet_mini_L211_dynamo.onnx"), form="tiled", tile_groups=groups)
    est = estimate_memory(model)
    weights = {t.name for t in model.graph.initializer}
    replayed = []
    for batch in (1, 2):
        arena = ArenaModel()
        _replay(with_batch(model, batch), weights, arena)
        replayed.append(arena.resident)
    assert [est.resident(1), est.resident(2)] == replayed
    assert est.resident(3) - est.resident(2) == replayed[1] - replayed[0]
