"""Peephole fusions on the emitted nodes (never on the original model's own nodes, so the
reference outputs stay bit for bit those of the model).

``MatMul(A, W) + b`` with a constant 2-D ``W`` and a constant bias along its last axis becomes
``Reshape(Gemm(Reshape(A, [-1, K]), W, b), [-1, *A.shape[1:-1], H])``. ONNX Runtime fuses a
MatMul and an Add into one Gemm itself only when it knows every dimension of ``A`` but the last,
which the batch of mutants (``N * mutants``) never is: attention run on mutants lost 4% to the
separate bias pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph_walk import subgraphs
from ..memory import static_shapes, with_batch

# Gemm's element types on both providers (ORT's kernel table); float16 has no CPU Gemm.
_GEMM_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)

Emitted = Callable[[onnx.NodeProto], bool]


def fuse_matmul_bias(model: onnx.ModelProto, emitted: Emitted) -> None:
    """Rewrite, in place, every emitted ``MatMul(A, W)`` whose only consumer is an emitted
    ``Add(., b)`` (``W``: constant ``(K, H)``; ``b``: constant ``H`` values on the last axis)
    into ``Reshape -> Gemm(A2, W, b) -> Reshape``: ``y[..., h] = sum_k A[..., k] W[k, h] + b[h]``
    row by row, in one pass. Loop bodies too. Only where shape inference shows that ``A``'s
    dimensions other than the first (``N * mutants``) are static, so the two Reshapes take
    constant shapes and every later shape stays known (the memory and time models read them).
    """
    constants = {t.name: t for t in model.graph.initializer}
    if not _has_candidate(model.graph, emitted, constants):
        return
    one, two = (static_shapes(with_batch(model, batch).graph) for batch in (1, 2))
    trailing = {name: list(dims[1:]) for name, (dims, _) in one.items()
                if len(dims) >= 2 and name in two and two[name][0][1:] == dims[1:]}
    _rewrite(model.graph, emitted, constants, trailing, model.graph)


def _has_candidate(graph: onnx.GraphProto, emitted: Emitted, constants: dict) -> bool:
    """Whether any MatMul + bias pair matches (before paying for shape inference)."""
    consumers = _consumers(graph)
    return any(_match(node, consumers, constants, emitted) is not None
               or any(_has_candidate(sub, emitted, constants) for sub in subgraphs(node)) for node in graph.node)


def _rewrite(graph: onnx.GraphProto, emitted: Emitted, constants: dict, trailing: dict,
             main: onnx.GraphProto) -> None:
    consumers = _consumers(graph)
    nodes: list[onnx.NodeProto] = []
    dropped: set[str] = set()
    for node in graph.node:
        for sub in subgraphs(node):
            _rewrite(sub, emitted, constants, trailing, main)
        if node.output and node.output[0] in dropped:
            continue
        pair = _match(node, consumers, constants, emitted)
        dims = trailing.get(node.input[0]) if pair is not None else None
        if pair is None or dims is None:
            nodes.append(node)
            continue
        add, bias = pair
        dropped.add(add.output[0])
        nodes += _gemm_nodes(main, node, add, bias, dims, constants)
    del graph.node[:]
    graph.node.extend(nodes)


def _match(node: onnx.NodeProto, consumers: dict, constants: dict, emitted: Emitted):
    """``(add, bias)`` when ``node`` is an emitted MatMul by a constant 2-D weight whose only
    reader is an emitted Add of a constant bias along the weight's output axis."""
    if node.op_type != "MatMul" or not emitted(node):
        return None
    weight = constants.get(node.input[1])
    users = consumers.get(node.output[0], [])
    if weight is None or len(weight.dims) != 2 or weight.data_type not in _GEMM_TYPES or len(users) != 1:
        return None
    add = users[0]
    if add is None or add.op_type != "Add" or not emitted(add):
        return None
    bias = constants.get(add.input[1] if add.input[0] == node.output[0] else add.input[0])
    h = weight.dims[1]
    if bias is None or bias.data_type != weight.data_type or not bias.dims or bias.dims[-1] != h \
            or any(d != 1 for d in bias.dims[:-1]):
        return None
    return add, bias


def _gemm_nodes(main: onnx.GraphProto, matmul: onnx.NodeProto, add: onnx.NodeProto,
                bias: onnx.TensorProto, dims: list[int], constants: dict) -> list[onnx.NodeProto]:
    k, h = constants[matmul.input[1]].dims
    tag = matmul.output[0]
    rows_shape = numpy_helper.from_array(np.array([-1, k], np.int64), f"{tag}/gemm_rows_shape")
    out_shape = numpy_helper.from_array(np.array([-1, *dims[:-1], h], np.int64), f"{tag}/gemm_out_shape")
    flat_bias = numpy_helper.from_array(numpy_helper.to_array(bias).reshape(h), f"{tag}/gemm_bias")
    main.initializer.extend([rows_shape, out_shape, flat_bias])  # Loop bodies read the main graph's
    return [helper.make_node("Reshape", [matmul.input[0], rows_shape.name], [f"{tag}/gemm_rows"],
                             name=f"{tag}/gemm_rows"),
            helper.make_node("Gemm", [f"{tag}/gemm_rows", matmul.input[1], flat_bias.name], [f"{tag}/gemm"],
                             name=f"{tag}/gemm"),
            helper.make_node("Reshape", [f"{tag}/gemm", out_shape.name], [add.output[0]], name=f"{tag}/gemm_back")]


def _consumers(graph: onnx.GraphProto) -> dict[str, list]:
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
        for sub in subgraphs(node):  # a body reading the tensor from the outer scope
            for inner in sub.node:
                for name in inner.input:
                    readers.setdefault(name, []).append(None)
    for out in graph.output:
        readers.setdefault(out.name, []).append(None)  # a graph output: keep the MatMul's own tensor
    return readers
