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

from ..memory import _subgraphs

Emitted = Callable[[onnx.NodeProto], bool]

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
    used = _all_names(model.graph)
    return _rewrite(model.graph, model.graph, emitted, constants, used)


def _rewrite(graph: onnx.GraphProto, main: onnx.GraphProto, emitted: Emitted, constants: dict,
             used: set[str]) -> int:
    count = 0

    def fresh(base: str) -> str:
        name, i = base, 0
        while name in used:
            i += 1
            name = f"{base}_{i}"
        used.add(name)
        return name

    local: dict[str, str] = {}  # constant name -> its copy (4-D weight or bias) in this graph

    def owned(name: str, four_d: bool) -> str:
        """The constant as an initializer of this graph (4-D for the weight)."""
        if graph is main and not four_d:
            return name
        key = name + ("#4d" if four_d else "")
        if key not in local:
            value = numpy_helper.to_array(constants[name])
            local[key] = fresh(name + SUFFIX if four_d else f"{name}/local")
            graph.initializer.append(numpy_helper.from_array(value[:, :, None, :] if four_d else value,
                                                             local[key]))
        return local[key]

    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for sub in _subgraphs(node):
            count += _rewrite(sub, main, emitted, constants, used)
        if not _applies(node, emitted, constants):
            nodes.append(node)
            continue
        if "#axis" not in local:  # one per graph
            local["#axis"] = fresh("yz/height_axis")
            graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), local["#axis"]))
        axis = local["#axis"]
        x4, y4 = fresh(f"{node.output[0]}/x4"), fresh(f"{node.output[0]}/y4")
        inputs = [x4, owned(node.input[1], True)]
        if len(node.input) > 2 and node.input[2]:
            inputs.append(owned(node.input[2], False))
        nodes += [helper.make_node("Unsqueeze", [node.input[0], axis], [x4], name=x4),
                  helper.make_node("Conv", inputs, [y4], name=node.name or y4, **_lifted(node)),
                  helper.make_node("Squeeze", [y4, axis], [node.output[0]], name=fresh(f"{node.output[0]}/squeeze"))]
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


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


def _lifted(node: onnx.NodeProto) -> dict:
    """The Conv's attributes for a height of 1."""
    attrs = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if a.name in ("kernel_shape", "dilations", "strides"):
            value = [1, *value]
        elif a.name == "pads":
            value = [0, value[0], 0, value[1]]
        attrs[a.name] = value
    return attrs


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
        for sub in _subgraphs(node):
            names |= _all_names(sub)
    return names
