"""Tests for :func:`yuzu_onnx.kernels.missing_cuda_kernels` on tiny hand-built models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from yuzu_onnx.kernels import (
    cuda_kernel_table,
    missing_cuda_kernels,
    parse_since_version,
    parse_types,
    resolve_op_version,
)

from builders import onnx_model, tensor_info

_REPO = Path(__file__).resolve().parents[1]
# shared/ sits inside the checkout or beside it (CI copies it next to the clone).
REFERENCE_TABLES = [
    base / "shared" / "reference" / "ort_kernels.tsv" for base in (_REPO, _REPO.parent)
]


def make_model(
    nodes: list[onnx.NodeProto],
    opset: int = 17,
    dtype: int = TensorProto.FLOAT,
    initializers: Mapping[str, np.ndarray] | None = None,
    extra_opsets: Sequence[onnx.OperatorSetIdProto] = (),
    functions: Sequence[onnx.FunctionProto] = (),
) -> onnx.ModelProto:
    """One input ``x`` (1, 4, 10) of ``dtype``, one output ``y`` of unknown shape."""
    return onnx_model(nodes, initializers or {}, [1, 4, 10], dtype=dtype, output_dtype=dtype, opset=opset,
                      ir_version=None, extra_opsets=extra_opsets, functions=functions, name="g")


def conv_relu(opset: int = 17, dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    np_dtype = helper.tensor_dtype_to_np_dtype(dtype)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    return make_model(nodes, opset=opset, dtype=dtype, initializers={"w": np.zeros((3, 4, 3), dtype=np_dtype)})


# ----------------------------------------------------------------------------- the table


def test_table_holds_exactly_the_cuda_rows():
    rows = sum(len(r) for r in cuda_kernel_table().values())
    assert rows > 300
    for reference in REFERENCE_TABLES:
        if reference.is_file():
            lines = reference.read_text().splitlines()[1:]
            assert rows == sum(line.startswith("CUDAExecutionProvider\t") for line in lines)


def test_conv_rows_parsed():
    ranges = sorted((r.first, r.last) for r in cuda_kernel_table()[("ai.onnx", "Conv")])
    assert ranges == [(1, 10), (11, 21), (22, None)]


@pytest.mark.parametrize(
    ("text", "expected"), [("13+", (13, None)), ("[6, 12]", (6, 12)), ("12", (12, 12))]
)
def test_parse_since_version(text, expected):
    assert parse_since_version(text) == expected


def test_parse_types():
    parsed = parse_types("T = tensor(float), tensor(double) ; T1 = tensor(int64)")
    assert parsed == {
        "T": frozenset({"tensor(float)", "tensor(double)"}),
        "T1": frozenset({"tensor(int64)"}),
    }


@pytest.mark.parametrize(
    ("op", "opset", "version"),
    [("Conv", 17, 11), ("Conv", 22, 22), ("Flatten", 21, 21), ("Relu", 13, 13), ("Add", 12, 7)],
)
def test_resolve_op_version(op, opset, version):
    resolved = resolve_op_version("ai.onnx", op, opset)
    assert resolved is not None and resolved[0] == version


def test_resolve_op_version_before_op_exists():
    assert resolve_op_version("", "Gelu", 17) is None


# ----------------------------------------------------------------------------- passing models


@pytest.mark.parametrize("opset", [11, 13, 17, 21, 22])
def test_conv_relu_float_passes(opset):
    assert missing_cuda_kernels(conv_relu(opset)) == []


def test_conv_relu_float16_passes():
    assert missing_cuda_kernels(conv_relu(17, TensorProto.FLOAT16)) == []


def test_flatten_at_newer_opset_uses_open_ended_row():
    # Flatten-21 and later have no row of their own; the CUDA row "13+" serves them.
    model = make_model([helper.make_node("Flatten", ["x"], ["y"])], opset=24)
    assert missing_cuda_kernels(model) == []


def test_gelu_at_opset_20_passes():
    assert missing_cuda_kernels(make_model([helper.make_node("Gelu", ["x"], ["y"])], 20)) == []


def test_contrib_gelu_passes():
    node = helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")
    model = make_model([node], extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    assert missing_cuda_kernels(model) == []


def test_constant_node_is_ignored():
    value = numpy_helper.from_array(np.ones((1, 4, 10), dtype=np.float32), "v")
    nodes = [
        helper.make_node("Constant", [], ["k"], value=value),
        helper.make_node("Add", ["x", "k"], ["y"]),
    ]
    assert missing_cuda_kernels(make_model(nodes)) == []


def test_integer_inputs_are_not_type_checked():
    # CUDA Relu has no int32 kernel, but integer ops are left to ONNX Runtime's CPU placement.
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], opset=17, dtype=TensorProto.INT32)
    assert missing_cuda_kernels(model) == []


# ----------------------------------------------------------------------------- reported problems


def test_unique_is_reported():
    model = make_model([helper.make_node("Unique", ["x"], ["y"])])
    assert missing_cuda_kernels(model) == ["Unique (ai.onnx, opset 17): no CUDA kernel"]


def test_det_after_conv_is_reported_once():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1]),
        helper.make_node("Det", ["c"], ["d1"]),
        helper.make_node("Det", ["c"], ["d2"]),
        helper.make_node("Add", ["d1", "d2"], ["y"]),
    ]
    problems = missing_cuda_kernels(make_model(nodes, initializers={"w": np.zeros((3, 4, 3), dtype=np.float32)}))
    assert problems == ["Det (ai.onnx, opset 17): no CUDA kernel"]


def test_gelu_before_opset_20_is_reported():
    problems = missing_cuda_kernels(make_model([helper.make_node("Gelu", ["x"], ["y"])], 17))
    assert len(problems) == 1
    assert problems[0].startswith("Gelu (ai.onnx, opset 17): no CUDA kernel")


def test_op_version_without_cuda_row_is_reported():
    # Sign-9 (opsets 9..12) has only a CPU kernel; Sign-13 has a CUDA one.
    assert missing_cuda_kernels(make_model([helper.make_node("Sign", ["x"], ["y"])], 13)) == []
    problems = missing_cuda_kernels(make_model([helper.make_node("Sign", ["x"], ["y"])], 12))
    assert problems == ["Sign (ai.onnx, opset 12): no CUDA kernel for op version 9"]


def test_float_type_missing_from_kernel_is_reported():
    # CUDA Conv [11, 21] has no bfloat16; Conv 22+ has.
    assert missing_cuda_kernels(conv_relu(17, TensorProto.BFLOAT16)) == [
        "Conv (ai.onnx, opset 17): no CUDA kernel for tensor(bfloat16)"
    ]
    assert missing_cuda_kernels(conv_relu(22, TensorProto.BFLOAT16)) == []


def test_types_found_by_shape_inference():
    # Relu [6, 12] has no bfloat16; its input type is only known after shape inference.
    nodes = [helper.make_node("Identity", ["x"], ["i"]), helper.make_node("Relu", ["i"], ["y"])]
    model = make_model(nodes, opset=12, dtype=TensorProto.BFLOAT16)
    assert missing_cuda_kernels(model) == [
        "Relu (ai.onnx, opset 12): no CUDA kernel for tensor(bfloat16)"
    ]


def test_op_in_subgraph_is_reported():
    def branch(name: str, op: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node(op, ["x"], [f"{name}_out"])],
            name,
            [],
            [tensor_info(f"{name}_out", None)],
        )

    node = helper.make_node(
        "If", ["cond"], ["y"], then_branch=branch("then", "Unique"), else_branch=branch("else", "Relu"))
    model = onnx_model([node], [], [tensor_info("cond", [], TensorProto.BOOL), tensor_info("x", [4])],
                       ir_version=None, name="g")
    assert missing_cuda_kernels(model) == ["Unique (ai.onnx, opset 17): no CUDA kernel"]


def test_op_in_local_function_is_reported():
    func = helper.make_function(
        "custom", "Block", ["a"], ["b"],
        [helper.make_node("Sinh", ["a"], ["b"])],
        opset_imports=[helper.make_opsetid("", 17)],
    )
    node = helper.make_node("Block", ["x"], ["y"], domain="custom")
    model = make_model(
        [node], extra_opsets=[helper.make_opsetid("custom", 1)], functions=[func]
    )
    assert missing_cuda_kernels(model) == ["Sinh (ai.onnx, opset 17): no CUDA kernel"]


def test_unknown_custom_op_is_reported():
    node = helper.make_node("Mystery", ["x"], ["y"], domain="my.ops")
    model = make_model([node], extra_opsets=[helper.make_opsetid("my.ops", 1)])
    assert missing_cuda_kernels(model) == ["Mystery (my.ops, opset 1): no CUDA kernel"]


def test_closed_range_does_not_cover_later_versions():
    # Scatter-11 (deprecated) resolves past the CUDA row [9, 10] and has no kernel of its own.
    nodes = [helper.make_node("Scatter", ["x", "idx", "x"], ["y"], axis=0)]
    idx = {"idx": np.zeros((1, 4, 10), dtype=np.int64)}
    assert missing_cuda_kernels(make_model(nodes, opset=10, initializers=idx)) == []
    assert missing_cuda_kernels(make_model(nodes, opset=11, initializers=idx)) == [
        "Scatter (ai.onnx, opset 11): no CUDA kernel for op version 11"
    ]
