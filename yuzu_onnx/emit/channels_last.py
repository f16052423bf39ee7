"""Channels-last probe tensors meet the lifted Convs without a Transpose pass of their own.

A reprobe (:func:`yuzu_onnx.emit.probes.reprobe`) gathers in the channels-last view
``(N, P, L, C)`` of a probe tensor ``(N*P, C, L)``: a Transpose brings the tensor there and
another takes the result back. ONNX Runtime's NCHWc Convs copy their input and output between
layouts anyway (``ReorderInput`` / ``ReorderOutput``), and fold a Transpose to or from
channels-last into that copy. So a *region* of probe tensors between lifted Convs and reprobes
runs channels-last, as ``(N*P, 1, L, C)`` twins:

- its *leaves*, made outside it, are reprobes folded back (``Reshape(Transpose(g, SWAP_LAST),
  [-1, C, L])``, whose twin is ``Reshape(g, [-1, 1, L, C])``) and lifted Convs' squeezed outputs
  (through fused activations and MaxPools; twin ``Transpose(y4, [0, 2, 3, 1])``, folded into
  the ReorderOutput);
- its nodes are elementwise ops (scalar constants aside), inference BatchNormalizations (run
  on the ``(rows, C)`` reshape of the twin, where the channels are axis 1 again) and 1 x 1
  Convs (a Gemm over that view, which needs neither of the NCHWc Conv's two reorders; where
  the region cannot hold one, it is a sink and a leaf like any lifted Conv);
- its *sinks* are lifted Convs (``Unsqueeze(t, [2])`` becomes ``Transpose(twin, [0, 3, 1, 2])``,
  folded into the ReorderInput), reprobes (``Transpose(Reshape(t, [-1, P, C, L]), SWAP_LAST)``
  becomes ``Reshape(twin, [-1, P, L, C])``) and narrowing 1 x 1 Convs whose result leaves the
  region, a model's head (a Gemm over the rows and a Transpose of its narrower output back).

A region is rewritten only whole (every tensor made and read inside it or at its leaves and
sinks), so no tensor is needed in both layouts, and only where it saves a reprobe Transpose.
Both layouts hold the same values and every node computes the same numbers (a BatchNormalization
applies the same per-channel scale and shift on either view; a Gemm sums a 1 x 1 Conv's products
in its own order, which on this machine's MLAS kernels gives the NCHWc Conv's numbers bit for
bit). Measured on Basenji's tower (CPU, batch 1): the Transposes, 8.4 ms of 88, go; the
reorders, the norms and the activations cost what they did; the two 1 x 1 Convs as Gemms save
about 2% more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..ops import attr
from ..graph_walk import all_names, drop_unread_initializers, subgraphs
from ..memory import INTO_NCHWC_CONV, OUT_OF_NCHWC_CONV, conv_reorders, nchwc_producer, nchwc_reorders
from .conv_layout import fresh_name
from .fuse import _consumers

#: The reprobe's transposes of a 3-D probe tensor's unfolded view: swap length and channels.
SWAP_LAST = (0, 1, 3, 2)


def transposes_into_convs(model: onnx.ModelProto, swapped: dict[str, tuple[int, int]]) -> int:
    """Run, in place, the regions of probe tensors between lifted 2-D Convs and the reprobe
    Transposes ``swapped`` (output -> ``(C, L)``, see :attr:`EmitContext.swapped
    <yuzu_onnx.emit.context.EmitContext.swapped>`) channels-last (main graph and Loop bodies),
    so that their Transposes fold into the Convs' NCHWc reorders or become Reshapes; returns
    how many regions."""
    constants = {t.name: t for t in model.graph.initializer}
    used = all_names(model.graph)
    count = _rewrite(model.graph, constants, used, swapped)
    if count:  # the removed nodes' shape and axes constants
        drop_unread_initializers(model)
    return count


def _rewrite(graph: onnx.GraphProto, constants: dict, used: set[str], swapped: dict) -> int:
    """Rewrite the regions of ``graph`` and of its Loop bodies; returns how many."""
    count = sum(_rewrite(sub, constants, used, swapped) for node in graph.node for sub in subgraphs(node))
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

    def add_constant(source: str, change) -> tuple[str, tuple[int, ...]]:
        """A new initializer of this graph holding ``change(source's array)``: (name, dims)."""
        value = change(numpy_helper.to_array(local[source]))
        name = fresh(f"{source}/2d")
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name, value.shape

    replace: dict[int, list[onnx.NodeProto]] = {}  # id(node) -> the nodes it becomes
    claimed: set[str] = set()  # tensors of the regions found so far (each is found once)
    for node in graph.node:
        seed = _seed(node, producer, local, lifted, swapped)
        if seed is None or seed in claimed:
            continue
        # 1 x 1 Convs inside the region where it can hold them, else only around them
        region = (_region(seed, producer, readers, local, lifted, swapped, pointwise=True)
                  or _region(seed, producer, readers, local, lifted, swapped, pointwise=False))
        if region is None:
            continue
        mine: dict[int, list[onnx.NodeProto]] = {}
        _write_twins(region, mine, swapped, local, fresh, shape_const, add_constant)
        if mine.keys() & replace.keys():  # a node another region rewrote already (never seen; kept safe)
            continue
        replace.update(mine)
        claimed |= region.tensors
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


class Leaf(NamedTuple):
    """A region tensor made outside it: ``kind`` "swapped" (``made`` is
    ``Reshape(Transpose(source, SWAP_LAST))``) or "conv" (``made`` is ``Squeeze(source, [2])``,
    ``source`` a lifted NCHWc Conv's output)."""

    kind: str
    source: str
    made: onnx.NodeProto


class Sink(NamedTuple):
    """Where a region tensor ``tensor`` leaves it: ``kind`` "conv" (``node`` is the Unsqueeze
    NCHWc Convs read), "reprobe" (``node`` is the reprobe Transpose of its ``(N, probes, C, L)``
    Reshape) or "gemm" (``node`` is the Squeeze of a narrowing 1 x 1 Conv whose result leaves
    the region, :func:`_narrows`; the Conv is in ``Region.pointwise``)."""

    kind: str
    node: onnx.NodeProto
    probes: int
    tensor: str


@dataclass
class Region:
    """A connected set of 3-D probe tensors ``(N*P, C, L)`` that can all run channels-last.

    Attributes
    ----------
    ops : list of onnx.NodeProto
        The nodes between them, in graph order: elementwise ops, BatchNormalizations, and the
        Squeeze that stands for each pointwise Conv (see ``pointwise``).
    leaves : dict of str to Leaf
        The tensors made outside the region: a reprobe folded back, or a lifted NCHWc Conv's
        output squeezed.
    sinks : list of Sink
        Where tensors leave it: into NCHWc Convs, or into reprobes.
    length : int
        ``L``, the same for every tensor of the region (channels may differ across pointwise
        Convs).
    tensors : set of str
        Every tensor of the region.
    pointwise : dict
        ``id(squeeze)`` -> ``(unsqueeze, conv)`` for each pointwise Conv inside the region
        (``Squeeze(Conv(Unsqueeze(t, [2]), W, b), [2])`` with a 1 x 1 kernel), which runs as a
        Gemm over the ``(rows, C)`` view instead of an NCHWc Conv with two reorders.
    """

    ops: list
    leaves: dict
    sinks: list
    length: int
    tensors: set
    pointwise: dict


def _seed(node: onnx.NodeProto, producer: dict, constants: dict, lifted: dict, swapped: dict) -> str | None:
    """The 3-D probe tensor a reprobe Transpose or an NCHWc Conv's Unsqueeze reads, or None."""
    if node.op_type == "Transpose" and node.output[0] in swapped:
        unfold = producer.get(node.input[0])
        return unfold.input[0] if unfold is not None and unfold.op_type == "Reshape" else None
    if conv_reorders(node, lifted)[0]:
        unsqueeze = producer.get(node.input[0])
        return unsqueeze.input[0] if unsqueeze is not None and unsqueeze.op_type == "Unsqueeze" else None
    return None


def _region(seed: str, producer: dict, readers: dict, constants: dict, lifted: dict, swapped: dict,
            pointwise: bool) -> Region | None:
    """The region of probe tensors connected to ``seed`` through elementwise nodes (scalar
    constants aside), inference BatchNormalizations and (if ``pointwise``) 1 x 1 Convs, if
    every one of them is made by a node of the region or is a leaf, and read only by nodes of
    the region or by sinks (see :class:`Region`), their lengths agree, and at least one
    reprobe Transpose is saved; else None. Running the region channels-last then costs no
    Transpose pass: the leaves' and sinks' Transposes fold into NCHWc reorders or become
    Reshapes."""
    ops: dict[int, onnx.NodeProto] = {}
    inside: dict[int, tuple[onnx.NodeProto, onnx.NodeProto]] = {}  # the pointwise Convs
    leaves: dict[str, Leaf] = {}
    sinks: list[Sink] = []
    lengths: set[int] = set()
    pending, seen = [seed], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        made = producer.get(name)
        inner = _pointwise_of(made, producer, readers, constants, lifted, swapped) if pointwise else None
        leaf = _leaf(made, producer, readers, constants, lifted, swapped) if inner is None else None
        if inner is not None:
            ops[id(made)] = made
            inside[id(made)] = inner
            pending.append(inner[0].input[0])
        elif leaf is not None:
            leaves[name] = leaf
            if leaf.kind == "swapped":
                lengths.add(swapped[made.input[0]][1])
        elif _layout_free(made, constants):
            ops[id(made)] = made
            pending.extend(source for source in _data_inputs(made) if source not in constants)
        else:
            return None
        for user in readers.get(name, []):
            if user is None:  # a graph output, or read inside a Loop body
                return None
            if _layout_free(user, constants) and name in _data_inputs(user):
                pending.append(user.output[0])
                continue
            conv = _only_reader(user, readers) if pointwise else None
            squeeze = _only_reader(conv, readers) if conv is not None else None
            found = _pointwise_conv(squeeze, producer, readers, constants, lifted)
            if found is not None and _ends_in_sinks(squeeze.output[0], readers, constants, lifted, swapped):
                pending.append(squeeze.output[0])
                continue
            if found is not None and _narrows(found[1], lifted):  # a head Conv leaving the region
                inside[id(squeeze)] = found
                sinks.append(Sink("gemm", squeeze, 0, name))
                continue
            sink = _sink(user, readers, constants, lifted, swapped)
            if sink is None:
                return None
            sinks.append(sink)
            if sink.kind == "reprobe":
                lengths.add(swapped[sink.node.output[0]][1])
    if len(lengths) != 1 or not (any(leaf.kind == "swapped" for leaf in leaves.values())
                                 or any(sink.kind == "reprobe" for sink in sinks)):
        return None
    order = [node for node in producer.values() if id(node) in ops]  # graph order; one output each
    return Region(order, leaves, sinks, lengths.pop(), seen, inside)


def _only_reader(node: onnx.NodeProto, readers: dict) -> onnx.NodeProto | None:
    """The one node that reads ``node``'s one output, or None (also where that is a graph
    output or a Loop body)."""
    users = readers.get(node.output[0], []) if len(node.output) == 1 else []
    return users[0] if len(users) == 1 else None


def _pointwise_of(squeeze: onnx.NodeProto | None, producer: dict, readers: dict, constants: dict, lifted: dict,
                  swapped: dict) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """``(unsqueeze, conv)`` if ``squeeze`` is a pointwise Conv (:func:`_pointwise_conv`) and
    every reader of its result, through elementwise nodes, ends in a sink or another such Conv
    (so the result stays in the region); else None."""
    found = _pointwise_conv(squeeze, producer, readers, constants, lifted)
    return found if found and _ends_in_sinks(squeeze.output[0], readers, constants, lifted, swapped) else None


def _narrows(conv: onnx.NodeProto, lifted: dict) -> bool:
    """Whether a pointwise Conv (:func:`_pointwise_conv`) has at most as many output channels as
    input channels: as a head whose result leaves the region (into an exit or a
    materialization), a Gemm over the channels-last rows and a Transpose of its output back to
    ``(N*P, C_out, L)`` skip the NCHWc Conv's copy of its input (Basenji's 96 -> 8 head: 2% of
    the graph's time, bit for bit)."""
    c_out, c_in = lifted[conv.input[1]][:2]
    return c_out <= c_in


def _pointwise_conv(squeeze: onnx.NodeProto | None, producer: dict, readers: dict, constants: dict,
                    lifted: dict) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """``(unsqueeze, conv)`` if ``squeeze`` is ``Squeeze(Conv(Unsqueeze(t, [2]), W, b), [2])``
    with a lifted 1 x 1 Conv (stride 1, no pads, one group, input channels that ONNX Runtime
    blocks: a block or more, in fours; the Gemm then gives its numbers) that alone reads the
    Unsqueeze and only the Squeeze reads; else None."""
    if squeeze is None or squeeze.op_type != "Squeeze" or _ints(squeeze, 1, constants) != [2]:
        return None
    conv = producer.get(squeeze.input[0])
    if (conv is None or conv.op_type != "Conv" or conv.input[1] not in lifted or lifted[conv.input[1]][2:] != (1, 1)
            or _only_reader(conv, readers) is not squeeze or len(conv.output) != 1):
        return None
    if any(v != 1 for v in attr(conv, "strides", [1, 1])) or any(attr(conv, "pads", [0] * 4)) \
            or attr(conv, "group", 1) != 1 or attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        return None
    if not nchwc_reorders(conv, lifted[conv.input[1]])[0]:
        # fewer than a block of input channels: ONNX Runtime's NCHWc Conv reads them unblocked,
        # with a kernel whose sums a Gemm does not repeat bit for bit (12 channels: 2.4e-7 off)
        return None
    if len(conv.input) > 2 and conv.input[2] not in constants:
        return None
    unsqueeze = producer.get(conv.input[0])
    if (unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or _ints(unsqueeze, 1, constants) != [2]
            or _only_reader(unsqueeze, readers) is not conv):
        return None
    return unsqueeze, conv


def _ends_in_sinks(name: str, readers: dict, constants: dict, lifted: dict, swapped: dict) -> bool:
    """Whether every path from ``name`` through elementwise nodes and BatchNormalizations ends
    in a sink or in the Unsqueeze of another lifted Conv."""
    pending, seen = [name], set()
    while pending:
        tensor = pending.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        for user in readers.get(tensor, []):
            if user is None:
                return False
            if _layout_free(user, constants) and tensor in _data_inputs(user):
                pending.append(user.output[0])
                continue
            conv = _only_reader(user, readers) if user.op_type == "Unsqueeze" else None
            into_lifted_conv = conv is not None and conv.op_type == "Conv" and conv.input[1] in lifted
            if not into_lifted_conv and _sink(user, readers, constants, lifted, swapped) is None:
                return False
    return True


def _leaf(made: onnx.NodeProto | None, producer: dict, readers: dict, constants: dict, lifted: dict,
          swapped: dict) -> Leaf | None:
    """A "swapped" leaf if ``made`` is ``Reshape(Transpose(g, SWAP_LAST), [-1, C, L])`` of a
    swapped reprobe, a "conv" leaf if it is ``Squeeze(y4, [2])`` of a lifted NCHWc Conv's
    output (through fused activations and MaxPools) that nothing else reads; else None."""
    if made is None:
        return None
    if made.op_type == "Reshape" and made.input[0] in swapped:
        transpose = producer.get(made.input[0])
        if (transpose is not None and tuple(attr(transpose, "perm", ())) == SWAP_LAST
                and _ints(made, 1, constants) == [-1, *swapped[made.input[0]]]):
            return Leaf("swapped", transpose.input[0], made)
        return None
    if made.op_type == "Squeeze" and _ints(made, 1, constants) == [2]:
        y4 = made.input[0]
        if len(readers.get(y4, [])) == 1 and nchwc_producer(y4, producer, lifted) is not None:
            return Leaf("conv", y4, made)
    return None


def _sink(user: onnx.NodeProto, readers: dict, constants: dict, lifted: dict, swapped: dict) -> Sink | None:
    """A "conv" sink if ``user`` is ``Unsqueeze(t, [2])`` read only as the input of NCHWc
    Convs; a "reprobe" sink if it is ``Reshape(t, [-1, P, C, L])`` read only by one swapped
    reprobe Transpose; else None."""
    users = readers.get(user.output[0], []) if len(user.output) == 1 else []
    if not users or None in users:  # None: a graph output, or read inside a Loop body
        return None
    if user.op_type == "Unsqueeze" and _ints(user, 1, constants) == [2]:
        if all(conv_reorders(conv, lifted)[0] and conv.input[0] == user.output[0]
               and list(conv.input).count(user.output[0]) == 1 for conv in users):
            return Sink("conv", user, 0, user.input[0])
        return None
    if user.op_type == "Reshape" and len(users) == 1:
        transpose = users[0]
        dims = _ints(user, 1, constants)
        if (transpose.op_type == "Transpose" and transpose.output[0] in swapped
                and tuple(attr(transpose, "perm", ())) == SWAP_LAST and dims is not None and len(dims) == 4
                and dims[0] == -1 and dims[1] > 0 and tuple(dims[2:]) == swapped[transpose.output[0]]):
            return Sink("reprobe", transpose, dims[1], user.input[0])
    return None


def _layout_free(node: onnx.NodeProto | None, constants: dict) -> bool:
    """Whether ``node`` computes the same numbers on a channels-last view: an elementwise op
    whose constants are scalars, or an inference BatchNormalization (run on the view's
    ``(rows, C)`` reshape, where the channels are axis 1 again)."""
    if node is None or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return False
    if node.op_type == "BatchNormalization":  # per-channel statistics: the (rows, C) view keeps them
        return (len(node.input) == 5 and all(name in constants and len(constants[name].dims) == 1
                                             for name in node.input[1:])
                and not attr(node, "training_mode", 0) and attr(node, "spatial", 1) == 1)
    return node.op_type in ELEMENTWISE and all(
        int(np.prod(constants[name].dims)) == 1 for name in node.input if name in constants)


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    """The inputs that carry the tensor's values (a BatchNormalization's statistics aside)."""
    return list(node.input[:1]) if node.op_type == "BatchNormalization" else [n for n in node.input if n]


def _write_twins(region: Region, replace: dict, swapped: dict, constants: dict, fresh, shape_const,
                 add_constant) -> None:
    """Record in ``replace`` the channels-last ``(N*P, 1, L, C)`` twins of ``region``: each
    leaf's twin where the leaf was made, each op's where the op was, each sink rewritten in
    place (the originals then have no readers and are dropped)."""
    length = region.length
    twin: dict[str, str] = {}
    for name, leaf in region.leaves.items():
        twin[name] = fresh(f"{name}/nhwc")
        if leaf.kind == "swapped":
            c = swapped[leaf.made.input[0]][0]
            made = helper.make_node("Reshape", [leaf.source, shape_const([-1, 1, length, c])], [twin[name]],
                                    name=twin[name])
        else:  # a lifted Conv's 4-D output, copied back channels-last by its reorder
            made = helper.make_node("Transpose", [leaf.source], [twin[name]], name=twin[name],
                                    perm=list(OUT_OF_NCHWC_CONV))
        replace[id(leaf.made)] = [made]
    for op in region.ops:
        twin[op.output[0]] = fresh(f"{op.output[0]}/nhwc")
        if id(op) in region.pointwise:
            unsqueeze, conv = region.pointwise[id(op)]
            replace[id(unsqueeze)] = replace[id(conv)] = []
            replace[id(op)] = _pointwise_gemm(conv, twin[unsqueeze.input[0]], twin[op.output[0]], length, fresh,
                                              shape_const, add_constant)
        else:
            replace[id(op)] = _twin_op(op, twin, constants, length, fresh, shape_const)
    for sink in region.sinks:
        if sink.kind == "gemm":  # a head Conv: Gemm over the rows, its (N*P, L, C_out) view transposed back
            unsqueeze, conv = region.pointwise[id(sink.node)]
            replace[id(unsqueeze)] = replace[id(conv)] = []
            rows = fresh(f"{sink.node.output[0]}/nhwc")
            gemm = _pointwise_gemm(conv, twin[sink.tensor], rows, length, fresh, shape_const, add_constant,
                                   view=[-1, length])
            replace[id(sink.node)] = gemm + [helper.make_node("Transpose", [rows], list(sink.node.output),
                                                              name=fresh(f"{sink.node.output[0]}/t"), perm=[0, 2, 1])]
        elif sink.kind == "conv":  # Unsqueeze(t, [2]) -> the Transpose the Conv's ReorderInput folds
            replace[id(sink.node)] = [helper.make_node(
                "Transpose", [twin[sink.tensor]], list(sink.node.output),
                name=fresh(f"{sink.node.output[0]}/t"), perm=list(INTO_NCHWC_CONV))]
        else:  # the reprobe's (N, P, L, C) view is a Reshape of the twin
            c = swapped[sink.node.output[0]][0]
            replace[id(sink.node)] = [helper.make_node(
                "Reshape", [twin[sink.tensor], shape_const([-1, sink.probes, length, c])],
                list(sink.node.output), name=fresh(f"{sink.node.output[0]}/nhwc"))]


def _pointwise_gemm(conv: onnx.NodeProto, source: str, out: str, length: int, fresh, shape_const,
                    add_constant, view: list[int] | None = None) -> list[onnx.NodeProto]:
    """A 1 x 1 Conv on the channels-last twin ``source``: ``Gemm(rows, W[:, :, 0, 0], b,
    transB=1)`` over its ``(rows, C_in)`` view, reshaped to ``(*view, C_out)`` (default
    ``(N*P, 1, L, C_out)``): ``y[r, o] = b[o] + sum_c x[r, c] W[o, c]``, the Conv's sums
    (float32 rounding apart)."""
    weight, (c_out, c_in) = add_constant(conv.input[1], lambda w: w.reshape(w.shape[0], w.shape[1]))
    rows, product = fresh(f"{out}/rows"), fresh(f"{out}/rows_gemm")
    gemm_inputs = [rows, weight] + ([conv.input[2]] if len(conv.input) > 2 and conv.input[2] else [])
    return [helper.make_node("Reshape", [source, shape_const([-1, c_in])], [rows], name=rows),
            helper.make_node("Gemm", gemm_inputs, [product], name=product, transB=1),
            helper.make_node("Reshape", [product, shape_const([*(view or [-1, 1, length]), c_out])], [out],
                             name=out)]


def _twin_op(op: onnx.NodeProto, twin: dict, constants: dict, length: int, fresh,
             shape_const) -> list[onnx.NodeProto]:
    """``op`` on the channels-last twins: a copy for an elementwise op; for a BatchNormalization
    the same node on the ``(rows, C)`` reshape of its twin input (bit for bit: ONNX Runtime
    applies the same per-channel scale and shift)."""
    if op.op_type != "BatchNormalization":
        copy = onnx.NodeProto()
        copy.CopyFrom(op)
        copy.name = fresh(f"{op.name or op.output[0]}/nhwc")
        copy.input[:] = [twin.get(name, name) for name in op.input]
        copy.output[:] = [twin[op.output[0]]]
        return [copy]
    c = int(constants[op.input[1]].dims[0])
    rows, normed = fresh(f"{op.output[0]}/rows"), fresh(f"{op.output[0]}/rows_bn")
    copy = onnx.NodeProto()
    copy.CopyFrom(op)
    copy.name = fresh(f"{op.name or op.output[0]}/nhwc")
    copy.input[:] = [rows, *op.input[1:]]
    copy.output[:] = [normed]
    return [helper.make_node("Reshape", [twin[op.input[0]], shape_const([-1, c])], [rows], name=rows),
            copy,
            helper.make_node("Reshape", [normed, shape_const([-1, 1, length, c])], [twin[op.output[0]]],
                             name=twin[op.output[0]])]


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
        if (any(out in keep for out in node.output) or subgraphs(node)
                or node.op_type not in ("Transpose", "Reshape", "Squeeze", "Unsqueeze")):
            alive.append(node)
            keep.update(node.input)
            for sub in subgraphs(node):
                keep |= all_names(sub)
    return alive[::-1]
