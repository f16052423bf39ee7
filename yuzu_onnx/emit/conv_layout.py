"""Emitted 1-D Convs as unit-height 2-D Convs (never the original model's own nodes, so the
reference outputs stay bit for bit those of the model).

``Conv(x, W, b)`` over ``(B, C, L)`` becomes ``Squeeze(Conv(Unsqueeze(x, 2), W[:, :, None, :], b), 2)``
with the attributes lifted to a height of 1 (kernel ``(1, k)``, dilations ``(1, d)``, strides
``(1, s)``, pads ``(0, p0, 0, p1)``): ``y[b, o, 0, j] = b[o] + sum_{c, t} W[o, c, 0, t] x[b, c, 0, j*s + t*d - p0]``,
the same sums. Why: ONNX Runtime's CPU provider runs 2-D Convs with constant weights in MLAS's
blocked NCHWc layout, which 1-D Convs never get (they run as one im2col and one small GEMM per
probe row). Measured on the tiled probe Convs of bpnet-lite (64 channels, windows of 28-1048
positions, 600 rows): 2-4x the GFLOP/s on narrow windows, 2x on wide ones; whole models 7-36%
faster (``tools/benchmark.py``). Elsewhere (CUDA, CPUs without NCHWc kernels) a unit-height 2-D
Conv is the same computation as the 1-D one.

ONNX Runtime treats only a graph's *own* initializers as constant when it picks the NCHWc
layout, so a Conv inside a Loop body gets its 4-D weight, and a copy of its bias, as
initializers of that body; the copies are of the Conv's weights only (kilobytes to a few MiB).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph_walk import all_names, drop_unread_initializers, subgraphs
from ..memory import NCHWC_FUSED_ACTIVATIONS, _itemsize
from .fuse import _consumers

Emitted = Callable[[onnx.NodeProto], bool]

#: Activations ONNX Runtime fuses into an NCHWc Conv that they alone read (attribute-free
#: ones: their elementwise result does not depend on the layout).
FUSED_ACTIVATIONS = tuple(sorted(NCHWC_FUSED_ACTIVATIONS))

#: Most bytes of weights copied into Loop bodies; Convs beyond it stay 1-D (a model file holds
#: at most 2 GiB, and a brute-force body of a large tower would otherwise double it).
MAX_COPIED_BYTES = 256 * 2**20

#: Suffix of a lifted weight's name: ``<weight>/unit_height`` (``_<i>`` added where the name is taken).
SUFFIX = "/unit_height"

#: auto_pad values whose meaning does not depend on the rank (SAME_* pads are computed per axis
#: and ONNX Runtime refuses SAME_* with dilations; canonicalization makes them explicit).
_RANK_FREE_AUTO_PAD = (b"NOTSET", b"VALID", "NOTSET", "VALID")


def convs_as_unit_height(model: onnx.ModelProto, emitted: Emitted) -> int:
    """Rewrite, in place, every emitted 1-D Conv (3-D weight) whose weight and bias are
    initializers of the main graph as a unit-height 2-D Conv between an Unsqueeze and a
    Squeeze of axis 2; Loop bodies too. Returns the number of Convs rewritten."""
    constants = {t.name: t for t in model.graph.initializer}
    used = all_names(model.graph)
    count = _rewrite(model.graph, model.graph, emitted, constants, used, [MAX_COPIED_BYTES])
    if count:  # 3-D weights now read by no node (a Loop body's Convs read their own copies)
        drop_unread_initializers(model)
    return count


def _rewrite(graph: onnx.GraphProto, main: onnx.GraphProto, emitted: Emitted, constants: dict,
             used: set[str], allowance: list[int]) -> int:
    """Lift the Convs of ``graph`` (and of its subgraphs); ``allowance[0]``: bytes of weights
    that may still be copied into subgraphs."""
    count = 0
    fresh = lambda base: fresh_name(used, base)  # noqa: E731

    local: dict[tuple[bool, str], str] = {}  # (4-D?, constant) -> its copy in this graph

    def owned(name: str, four_d: bool) -> str:
        """The constant as an initializer of this graph (4-D for the weight)."""
        if graph is main and not four_d:
            return name
        if (four_d, name) not in local:
            value = numpy_helper.to_array(constants[name])
            local[four_d, name] = fresh(name + SUFFIX if four_d else f"{name}/local")
            graph.initializer.append(numpy_helper.from_array(value[:, :, None, :] if four_d else value,
                                                             local[four_d, name]))
        return local[four_d, name]

    def copy_bytes(node: onnx.NodeProto) -> int:
        """Bytes :func:`owned` would copy into this subgraph for ``node``'s weight and bias."""
        if graph is main:
            return 0
        wanted = [(True, node.input[1])] + [(False, name) for name in node.input[2:3] if name]
        return sum(_nbytes(constants[name]) for key, name in wanted if (key, name) not in local)

    axis = None  # this graph's constant [2], made with its first lifted Conv

    readers = _consumers(graph)
    absorbed: set[int] = set()  # activations moved before the Squeeze of the Conv they follow
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) in absorbed:
            continue
        for sub in subgraphs(node):
            count += _rewrite(sub, main, emitted, constants, used, allowance)
        copied = copy_bytes(node) if _applies(node, emitted, constants) else None
        if copied is None or copied > allowance[0]:
            nodes.append(node)
            continue
        allowance[0] -= copied
        if axis is None:
            axis = fresh("yz/height_axis")
            graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), axis))
        x4, y4 = fresh(f"{node.output[0]}/x4"), fresh(f"{node.output[0]}/y4")
        inputs = [x4, owned(node.input[1], True)]
        if len(node.input) > 2 and node.input[2]:
            inputs.append(owned(node.input[2], False))
        nodes += [helper.make_node("Unsqueeze", [node.input[0], axis], [x4], name=x4),
                  helper.make_node("Conv", inputs, [y4], name=node.name or y4, **_lifted(node))]
        out = node.output[0]
        users = readers.get(out, [])
        if len(users) == 1 and users[0] is not None and users[0].op_type in FUSED_ACTIVATIONS and emitted(users[0]):
            # the Conv's only reader is an activation: apply it before the Squeeze, where ONNX
            # Runtime fuses it into the NCHWc Conv (no pass over the output of its own)
            act = users[0]
            absorbed.add(id(act))
            a4 = fresh(f"{act.output[0]}/y4")
            nodes.append(helper.make_node(act.op_type, [y4], [a4], name=act.name or a4))
            y4, out = a4, act.output[0]
            users = readers.get(out, [])
        if len(users) == 1 and users[0] is not None and _pool_1d(users[0]) and emitted(users[0]):
            # a 1-D MaxPool alone reads it: pool the 4-D output, so that ONNX Runtime chains
            # the NCHWc pool to the NCHWc Conv and copies back only the pooled (shorter) tensor
            pool = users[0]
            absorbed.add(id(pool))
            p4 = fresh(f"{pool.output[0]}/y4")
            nodes.append(helper.make_node("MaxPool", [y4], [p4], name=pool.name or p4, **_lifted(pool)))
            y4, out = p4, pool.output[0]
        nodes.append(helper.make_node("Squeeze", [y4, axis], [out], name=fresh(f"{out}/squeeze")))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def fresh_name(used: set[str], base: str) -> str:
    """``base``, or ``base_<i>`` where it is taken; recorded in ``used``."""
    name, i = base, 0
    while name in used:
        i += 1
        name = f"{base}_{i}"
    used.add(name)
    return name


def _nbytes(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims)) * _itemsize(t.data_type)


def source_weight(name: str) -> str:
    """The weight a lifted Conv's 4-D weight ``name`` was made from (``name`` itself otherwise)."""
    head, sep, _ = name.rpartition(SUFFIX)
    return head if sep else name


def one_d_attributes(node: onnx.NodeProto) -> dict:
    """A Conv's integer attributes as the 1-D Conv it computes: a lifted Conv's height axis
    dropped (the inverse of :func:`_lifted`)."""
    attrs = {a.name: list(a.ints) for a in node.attribute if a.type == onnx.AttributeProto.INTS}
    for key, value in attrs.items():
        if key == "pads" and len(value) == 4:
            attrs[key] = [value[1], value[3]]
        elif len(value) == 2:
            attrs[key] = [value[1]]
    return attrs


def _applies(node: onnx.NodeProto, emitted: Emitted, constants: dict) -> bool:
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or not emitted(node):
        return False
    weight = constants.get(node.input[1])
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if weight is None or len(weight.dims) != 3 or (bias is not None and bias not in constants):
        return False
    if not all(np.isfinite(numpy_helper.to_array(constants[name])).all() for name in (node.input[1], bias) if name):
        return False  # NCHWc skips padding where im2col multiplies it: 0 * inf is NaN in the model's own Conv
    auto_pad = next((a.s for a in node.attribute if a.name == "auto_pad"), b"NOTSET")
    return auto_pad in _RANK_FREE_AUTO_PAD


def _pool_1d(node: onnx.NodeProto) -> bool:
    """A MaxPool over one spatial axis with only its pooled output (no indices, whose values
    would count the height axis) and attributes :func:`_lifted` lifts."""
    if node.op_type != "MaxPool" or node.domain not in ("", "ai.onnx") or len([o for o in node.output if o]) != 1:
        return False
    attrs = {a.name: a for a in node.attribute}
    auto_pad = attrs["auto_pad"].s if "auto_pad" in attrs else b"NOTSET"
    return len(attrs["kernel_shape"].ints) == 1 and auto_pad in _RANK_FREE_AUTO_PAD


def _lifted(node: onnx.NodeProto) -> dict:
    """A Conv's or pool's attributes for a height of 1."""
    attrs = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if a.name in ("kernel_shape", "dilations", "strides"):
            value = [1, *value]
        elif a.name == "pads":
            value = [0, value[0], 0, value[1]]
        attrs[a.name] = value
    return attrs
