"""Peephole fusions of the emitted graph (yuzu_onnx/emit/fuse.py) and the one-Where mutants of
the input: the rewritten graphs keep the oracle's answers, and the structure they promise is
there (so the tests fail when the rewrite is switched off)."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from builders import Net, random_one_hot
from conftest import assert_matches_oracle, loop_body
from yuzu_onnx import convert
from yuzu_onnx.emit.fuse import fuse_matmul_bias


def _attention_block(length: int = 21) -> onnx.ModelProto:
    """conv -> (L, C) -> q, k, v = MatMul + bias -> softmax(q k^T) v -> MatMul + bias -> mean."""
    net = Net(seed=11)
    h = net.op("Relu", [net.conv("x", 4, 8, 3, pads=[1, 1])])
    t = net.op("Transpose", [h], perm=[0, 2, 1])  # (N, L, 8)
    q, k, v = (net.op("Add", [net.op("MatMul", [t, net.w(8, 8)]), net.w(8)]) for _ in range(3))
    scores = net.op("MatMul", [q, net.op("Transpose", [k], perm=[0, 2, 1])])
    mixed = net.op("MatMul", [net.op("Softmax", [scores], axis=-1), v])
    out = net.op("Add", [net.w(3), net.op("MatMul", [mixed, net.w(8, 3)])])  # bias first: either order
    y = net.op("ReduceMean", [out], axes=[1], keepdims=0)
    return net.model({"x": ["N", 4, length]}, {"y": y})


@pytest.mark.parametrize("subs", ["alt", "all"])
@pytest.mark.parametrize("region", [(0, 21), (5, 12)])
def test_bias_matmuls_on_mutants_run_as_gemm(subs, region):
    """Attention on mutants: every MatMul by a weight followed by its bias is one Gemm (2-D rows)
    in the Loop; the position-mixing MatMuls stay; answers match the oracle at batch 2."""
    model = _attention_block()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = convert(model, start=region[0], end=region[1], substitutions=subs, form="brute-force")
    onnx.checker.check_model(graph, full_check=True)
    weights = {t.name for t in model.graph.initializer}
    body = loop_body(graph)
    assert len([n for n in body if n.op_type == "Gemm"]) == 4
    assert not [n for n in body if n.op_type == "MatMul" and n.input[1] in weights]
    assert len([n for n in body if n.op_type == "MatMul"]) == 2
    y0, r0 = assert_matches_oracle(model, graph, random_one_hot(2, 21, seed=7), start=region[0], end=region[1],
                                   label=f"gemm {subs} {region}")
    np.testing.assert_array_equal(y0, r0)  # the model's own nodes are never rewritten


def _matmul_add(a_shape, bias_shape, extra_reader: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["m"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", onnx.TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, a_shape)], outputs,
        [onnx.numpy_helper.from_array(rng.normal(size=(5, 3)).astype(np.float32), "w"),
         onnx.numpy_helper.from_array(rng.normal(size=bias_shape).astype(np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("bias_shape", [(3,), (1, 1, 3)])
def test_fused_matmul_bias_equals_the_pair(bias_shape):
    model = _matmul_add(["N", 4, 5], bias_shape)
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    fuse_matmul_bias(fused, lambda node: True)
    assert [n.op_type for n in fused.graph.node] == ["Reshape", "Gemm", "Reshape"]
    a = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    got = ort.InferenceSession(fused.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert got.shape == want.shape


@pytest.mark.parametrize("case", ["dynamic inner dim", "bias not along the output axis", "MatMul read twice",
                                  "original node"])
def test_fusion_declined(case):
    """No rewrite where a constant reshape is impossible, the Add is not a bias, the MatMul's
    own output is needed, or the node is the model's own."""
    kwargs = {"dynamic inner dim": dict(a_shape=["N", "L", 5], bias_shape=(3,)),
              "bias not along the output axis": dict(a_shape=["N", 3, 5], bias_shape=(3, 1)),
              "MatMul read twice": dict(a_shape=["N", 4, 5], bias_shape=(3,), extra_reader=True),
              "original node": dict(a_shape=["N", 4, 5], bias_shape=(3,))}[case]
    model = _matmul_add(**kwargs)
    before = [n.op_type for n in model.graph.node]
    fuse_matmul_bias(model, (lambda node: False) if case == "original node" else (lambda node: True))
    assert [n.op_type for n in model.graph.node] == before


@pytest.mark.parametrize("subs", ["alt", "all"])
def test_brute_force_mutants_of_the_input_are_one_where(subs):
    """Brute force writes every mutant of the input with one Where against the input (no
    per-mutant gathers of probe windows, no placement gather), and matches the oracle, the
    last chunk's phantom tiles included (14 positions in chunks of 4)."""
    net = Net(seed=2)
    h = net.op("Relu", [net.conv("x", 4, 6, 5, pads=[2, 2])])
    y = net.op("ReduceMax", [h], axes=[2], keepdims=0)
    model = net.model({"x": ["N", 4, 19]}, {"y": y})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = convert(model, start=3, end=17, substitutions=subs, form="brute-force", tile_width=1,
                        tiles_per_chunk=4)
    body = loop_body(graph)
    produced_by = {o: n for n in body for o in n.output}
    (where,) = [n for n in body if n.op_type == "Where"]
    reference = where.input[2]
    assert reference == "x" or produced_by[reference].input[0] == "x"
    # one Gather: the tiles' input columns read from x (the mutants themselves are never gathered)
    assert [n.input[0] for n in body if n.op_type == "Gather"] == ["x"]
    assert_matches_oracle(model, graph, random_one_hot(2, 19, seed=4), start=3, end=17, label=f"input mutants {subs}")
