"""Walking an ONNX graph together with its subgraphs (Loop and If bodies): the names they use,
and dropping the initializers nothing reads. Shared by the passes that rewrite graphs in place
(canonicalize, emit) and the models that replay them (memory, timing)."""

from __future__ import annotations

import onnx


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs held by ``node``'s attributes (a Loop's or Scan's body, an If's branches;
    graph-list attributes too)."""
    graphs: list[onnx.GraphProto] = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            graphs.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(a.graphs)
    return graphs


def all_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor and node name used in ``graph`` and its subgraphs (for fresh names)."""
    names = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
        for sub in subgraphs(node):
            names |= all_names(sub)
    return names


def read_names(graph: onnx.GraphProto) -> set[str]:
    """Every name a node of ``graph`` or of its subgraphs reads, or a graph returns."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for sub in subgraphs(node):
            names |= read_names(sub)
    return names


def drop_unread_initializers(model: onnx.ModelProto, with_inputs: bool = False) -> None:
    """Remove, in place, the initializers (main graph and subgraphs) that no node reads (ONNX
    Runtime warns of each at session creation). An initializer that is also a graph input
    stays, unless ``with_inputs``: then both go (exporters of IR < 4 list every initializer as
    an input, so it would otherwise never be dropped)."""
    read = read_names(model.graph)
    graph = model.graph
    if with_inputs:
        dropped = {t.name for t in graph.initializer if t.name not in read}
        inputs = [i for i in graph.input if i.name not in dropped]
        del graph.input[:]
        graph.input.extend(inputs)
    _drop_unread(graph, read | {i.name for i in graph.input})


def _drop_unread(graph: onnx.GraphProto, read: set[str]) -> None:
    kept = [t for t in graph.initializer if t.name in read]
    if len(kept) < len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
    for node in graph.node:
        for sub in subgraphs(node):
            _drop_unread(sub, read | {i.name for i in sub.input})
