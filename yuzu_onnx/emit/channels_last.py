"""Channels-last probe tensors meet the lifted Convs without a Transpose pass of their own.

A reprobe (:func:`yuzu_onnx.emit.probes.reprobe`) gathers in the channels-last view
``(N, P, L, C)`` of a probe tensor ``(N*P, C, L)``: a Transpose brings the tensor there and
another takes the result back. Where the tensor before comes from a lifted Conv
(:mod:`yuzu_onnx.emit.conv_layout`) or the result feeds one, the Transpose can be written as
one ONNX Runtime folds into the Conv's NCHWc reorder (``ReorderInput`` / ``ReorderOutput``
with ``channels_last=1``, the same copy the Conv makes anyway):

- into a Conv: ``Unsqueeze(Reshape(Transpose(g, [0, 1, 3, 2]), [-1, C, L]), [2])`` is
  ``Transpose(Reshape(g, [-1, 1, L, C]), [0, 3, 1, 2])``;
- out of a Conv: ``Transpose(Reshape(Squeeze(y4, [2]), [-1, P, C, L]), [0, 1, 3, 2])`` is
  ``Reshape(Transpose(y4, [0, 2, 3, 1]), [-1, P, L, C])``;
- through elementwise nodes: where the Conv reads a chain of elementwise nodes (scalar
  constants aside) whose leaves are such reprobes and lifted Convs' outputs (a residual ``Add``
  of a block's last Conv and the reprobed skip, then a GELU), the chain runs on channels-last
  twins of its leaves and one folded Transpose leads into the Conv.

Both sides hold the same values in the same order, so the rewrite changes no number. Measured
(a 426 x 96 x 125 probe tensor into a Conv k3): the Transpose, 4.6 ms, goes; the NCHWc
Conv's reorder costs what it did.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..ops import attr
from ..memory import (INTO_NCHWC_CONV, NCHWC_FUSED_ACTIVATIONS, OUT_OF_NCHWC_CONV, _subgraphs, conv_reorders,
                      nchwc_producer)
from .conv_layout import all_names, drop_unread_initializers, fresh_name
from .fuse import _consumers

#: The reprobe's transposes of a 3-D probe tensor's unfolded view: swap length and channels.
SWAP_LAST = (0, 1, 3, 2)


def transposes_into_convs(model: onnx.ModelProto, swapped: dict[str, tuple[int, int]]) -> int:
    """Rewrite, in place, the reprobe Transposes ``swapped`` (output -> ``(C, L)``, see
    :attr:`EmitContext.swapped <yuzu_onnx.emit.context.EmitContext.swapped>`) next to lifted
    2-D Convs (main graph and Loop bodies) as Transposes ONNX Runtime folds into the Convs'
    NCHWc reorders; returns how many."""
    constants = {t.name: t for t in model.graph.initializer}
    used = all_names(model.graph)
    count = _rewrite(model.graph, constants, used, swapped)
    if count:  # the removed nodes' shape and axes constants
        drop_unread_initializers(model)
    return count


def _rewrite(graph: onnx.GraphProto, constants: dict, used: set[str], swapped: dict) -> int:
    count = sum(_rewrite(sub, constants, used, swapped) for node in graph.node for sub in _subgraphs(node))
    local = dict(constants)
    local.update({t.name: t for t in graph.initializer})
    lifted = _lifted_weights(local)
    producer = {out: node for node in graph.node for out in node.output}
    readers = _consumers(graph)

    fresh = lambda base: fresh_name(used, base)  # noqa: E731

    def shape_const(dims: list[int]) -> str:
        name = fresh("yz/channels_last_shape")
        graph.initializer.append(numpy_helper.from_array(np.asarray(dims, dtype=np.int64), name))
        return name

    replace: dict[int, list[onnx.NodeProto]] = {}  # id(node) -> the nodes it becomes
    for node in graph.node:
        if conv_reorders(node, lifted)[0]:
            chain = _chain_into_conv(node, producer, readers, local, lifted, swapped)
            if chain is not None:
                unsqueeze, ops, leaves, (channels, length) = chain
                made: dict[str, str] = {}  # 3-D tensor -> its channels-last (N*P, 1, L, C) twin
                new_nodes = []
                for leaf, (kind, source) in leaves.items():
                    made[leaf] = fresh(f"{leaf}/nhwc")
                    if kind == "swapped":
                        new_nodes.append(helper.make_node("Reshape", [source, shape_const([-1, 1, length, channels])],
                                                          [made[leaf]], name=made[leaf]))
                    else:  # a lifted Conv's 4-D output, copied back channels-last by its reorder
                        new_nodes.append(helper.make_node("Transpose", [source], [made[leaf]], name=made[leaf],
                                                          perm=list(OUT_OF_NCHWC_CONV)))
                for op in ops:  # the elementwise nodes, on the twins (same values, other order)
                    twin = onnx.NodeProto()
                    twin.CopyFrom(op)
                    twin.name = fresh(f"{op.name or op.output[0]}/nhwc")
                    twin.input[:] = [made.get(name, name) for name in op.input]
                    made[op.output[0]] = fresh(f"{op.output[0]}/nhwc")
                    twin.output[:] = [made[op.output[0]]]
                    new_nodes.append(twin)
                    replace[id(op)] = []
                new_nodes.append(helper.make_node("Transpose", [made[unsqueeze.input[0]]], [unsqueeze.output[0]],
                                                  name=fresh(f"{unsqueeze.output[0]}/t"), perm=list(INTO_NCHWC_CONV)))
                replace[id(unsqueeze)] = new_nodes
                count += 1
        elif node.op_type == "Transpose" and node.output[0] in swapped:
            out = _out_of_conv(node, producer, local, lifted, swapped)
            if out is not None:
                y4, probes, (channels, length) = out
                nhwc = fresh(f"{node.output[0]}/nhwc")
                replace[id(node)] = [
                    helper.make_node("Transpose", [y4], [nhwc], name=nhwc, perm=list(OUT_OF_NCHWC_CONV)),
                    helper.make_node("Reshape", [nhwc, shape_const([-1, probes, length, channels])],
                                     list(node.output), name=fresh(f"{nhwc}/r"))]
                count += 1
    if replace:
        nodes = [new for node in graph.node for new in replace.get(id(node), [node])]
        del graph.node[:]
        graph.node.extend(_without_dead(nodes, graph))
    return count


#: Ops whose output at each element reads only that element of each input (the others: scalar
#: constants), so they run the same on any layout.
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Erf", "Relu", "Sigmoid", "Tanh", "Softplus", "Exp", "Neg",
                         "Abs", "Sqrt", "Gelu", "Identity"})


def _chain_into_conv(conv: onnx.NodeProto, producer: dict, readers: dict, constants: dict, lifted: dict,
                     swapped: dict):
    """``conv`` reads ``Unsqueeze(f, [2])`` where ``f`` is a swapped reprobe folded back to
    ``(N*P, C, L)`` (``Reshape(Transpose(g, SWAP_LAST), [-1, C, L])``), or is computed by
    elementwise nodes (scalar constants aside) from *leaves* that are each such a reprobe or a
    lifted Conv's squeezed output, with at least one reprobe, and every intermediate read only
    inside the chain (a residual ``Add`` of a block's last Conv and the reprobed skip, then a
    GELU, in Basenji's tower): ``(the Unsqueeze, the chain's nodes in graph order (none for a
    reprobe alone), {leaf: ("swapped", g) | ("conv", y4)}, (C, L))``; else None. The chain then
    runs channels-last and the Transposes fold into the Convs' reorders."""
    unsqueeze = producer.get(conv.input[0])
    if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or _ints(unsqueeze, 1, constants) != [2]:
        return None
    ops: dict[int, onnx.NodeProto] = {}
    leaves: dict[str, tuple[str, str]] = {}
    dims: set[tuple[int, int]] = set()
    conv_channels: set[int] = set()
    pending, seen = [unsqueeze.input[0]], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producer.get(name)
        if node is None:
            return None
        if node.op_type == "Reshape" and node.input[0] in swapped:
            transpose = producer.get(node.input[0])
            if (transpose is None or tuple(attr(transpose, "perm", ())) != SWAP_LAST
                    or _ints(node, 1, constants) != [-1, *swapped[node.input[0]]]):
                return None
            leaves[name] = ("swapped", transpose.input[0])
            dims.add(swapped[node.input[0]])
            continue
        if node.op_type == "Squeeze" and _ints(node, 1, constants) == [2]:
            made = nchwc_producer(node.input[0], producer, lifted)
            if made is None:
                return None
            leaves[name] = ("conv", node.input[0])
            conv_channels.add(lifted[made.input[1]][0])
            continue
        if node.op_type not in ELEMENTWISE or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            return None
        ops[id(node)] = node
        for source in node.input:
            if source in constants:
                if int(np.prod(constants[source].dims)) != 1:
                    return None  # a constant broadcast along channels or length depends on the layout
            else:
                pending.append(source)
    if len(dims) != 1 or not any(kind == "swapped" for kind, _ in leaves.values()):
        return None
    (channels, length), = dims
    if conv_channels - {channels}:
        return None
    inside = set(ops) | {id(unsqueeze)}
    if any(id(user) not in inside for op in ops.values() for user in readers.get(op.output[0], [])):
        return None  # an intermediate read elsewhere would be needed in both layouts
    order = [op for op in producer.values() if id(op) in ops]  # graph order; one output each
    return unsqueeze, order, leaves, (channels, length)


def _out_of_conv(transpose: onnx.NodeProto, producer: dict, constants: dict, lifted: dict, swapped: dict):
    """(the lifted Conv's 4-D output, P, (C, L)) where the swapped ``transpose`` is
    ``Transpose(Reshape(Squeeze(y4, [2]), [-1, P, C, L]), SWAP_LAST)`` of a lifted Conv's
    output ``y4`` (an activation ONNX Runtime fuses into it included); else None."""
    if tuple(attr(transpose, "perm", ())) != SWAP_LAST:
        return None
    unfold = producer.get(transpose.input[0])
    if unfold is None or unfold.op_type != "Reshape":
        return None
    dims = _ints(unfold, 1, constants)
    if dims is None or len(dims) != 4 or dims[0] != -1 or dims[1] <= 0 or tuple(dims[2:]) != swapped[transpose.output[0]]:
        return None
    squeeze = producer.get(unfold.input[0])
    if squeeze is None or squeeze.op_type != "Squeeze" or _ints(squeeze, 1, constants) != [2]:
        return None
    if nchwc_producer(squeeze.input[0], producer, lifted, through=NCHWC_FUSED_ACTIVATIONS) is None:
        return None
    return squeeze.input[0], dims[1], swapped[transpose.output[0]]


def _lifted_weights(constants: dict) -> dict[str, tuple[int, ...]]:
    """The lifted Convs' weights among ``constants`` (4-D, height 1) -> dims."""
    return {name: tuple(t.dims) for name, t in constants.items() if len(t.dims) == 4 and t.dims[2] == 1}


def _ints(node: onnx.NodeProto, index: int, constants: dict) -> list[int] | None:
    """A node's constant int input (axes, shape), or None."""
    if len(node.input) <= index or node.input[index] not in constants:
        return None
    return [int(v) for v in numpy_helper.to_array(constants[node.input[index]]).reshape(-1)]


def _without_dead(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """``nodes`` less those whose outputs nothing reads (the rewritten patterns' leftovers)."""
    keep = {o.name for o in graph.output}
    alive: list[onnx.NodeProto] = []
    for node in reversed(nodes):
        if (any(out in keep for out in node.output) or _subgraphs(node)
                or node.op_type not in ("Transpose", "Reshape", "Squeeze", "Unsqueeze")):
            alive.append(node)
            keep.update(node.input)
            for sub in _subgraphs(node):
                keep |= all_names(sub)
    return alive[::-1]
