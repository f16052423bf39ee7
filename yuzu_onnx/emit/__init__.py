"""Pass 4, emit: build the ISM graph from a :class:`~yuzu_onnx.analyze.Plan`.

The emitted model contains the original graph unchanged (it computes the reference
activations and ``y0``) plus, for each node, what its rule's emitter appends
(:attr:`yuzu_onnx.rules.base.Rule.emit`), and one ``<output>_ism`` graph output per original
output. This package holds the machinery the emitters share: the emit context (where each
tensor's probe or mutant form lives), encoding the input into probes and reprobing
(:mod:`.probes`), materializing mutants (:mod:`.materialize`), the exits' per-mutant sums
(:mod:`.reach`) and the ``y_ism`` layout (:mod:`.outputs`).
"""

from __future__ import annotations

import json

import onnx
from onnx import helper

from ..errors import UnsupportedModelError
from ..graph_builder import GraphBuilder
from ..plan import Plan
from .context import EmitContext
from .channels_last import transposes_into_convs
from .conv_layout import convs_as_unit_height
from .fuse import fuse_matmul_bias
from .outputs import emit_ism_output, ism_output_name
from .probes import encode_input
from .tiles import emit_loops

__all__ = ["emit", "ism_output_name"]


def emit(plan: Plan) -> onnx.ModelProto:
    """Return the converted ISM model for ``plan``."""
    model = plan.model
    graph = model.graph
    reserved = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    for node in graph.node:
        reserved.update(node.input)
        reserved.update(node.output)
    reserved.update(o.name for o in graph.output)
    builder = GraphBuilder(sorted(reserved), plan.seq.dtype)
    ctx = EmitContext(plan, builder)

    def emit_nodes() -> None:
        for np_ in plan.nodes:
            if np_.spec.emit is not None:  # the reference and deferred flattens emit nothing
                np_.spec.emit(ctx, np_)

    if plan.tiling is None:
        ctx.probe[(plan.seq.name, plan.subs)] = encode_input(ctx)
        emit_nodes()
    else:  # everything sequence-dependent runs in Loops over chunks of tiles
        dependent = [o.name for o in graph.output if o.name in plan.states]
        emit_loops(ctx, emit_nodes, [(name, _static_output_dims(plan, name)) for name in dependent])
    new_outputs = []
    for out in graph.output:
        dims = _static_output_dims(plan, out.name)
        emit_ism_output(ctx, out.name, dims)
        shape = ["N", plan.seq.alphabet, plan.requested_region] + dims
        new_outputs.append(helper.make_tensor_value_info(ism_output_name(out.name),
                                                         out.type.tensor_type.elem_type, shape))
    out_graph = helper.make_graph(
        list(graph.node) + builder.nodes, f"{graph.name or 'model'}_ism", list(graph.input),
        list(graph.output) + new_outputs, list(graph.initializer) + builder.initializers,
        value_info=ctx.value_info)
    converted = helper.make_model(out_graph, opset_imports=list(model.opset_import),
                                  producer_name="yuzu-onnx")
    converted.ir_version = model.ir_version
    original = {name for node in graph.node for name in node.output}
    emitted = lambda node: not original.intersection(node.output)  # noqa: E731
    fuse_matmul_bias(converted, emitted)
    convs_as_unit_height(converted, emitted)
    transposes_into_convs(converted, ctx.swapped)
    _set_metadata(converted, plan)
    return converted


def _static_output_dims(plan: Plan, name: str) -> list[int]:
    """Per-sequence dims of an output; y_ism is reshaped with them, so they must be static.

    Canonicalization already replaced an exporter's symbolic output dims by those shape
    inference derives from the fixed input length, or by those of one run of the model
    (:func:`yuzu_onnx.canonicalize.canonicalize`); dims still unknown here depend on more than
    the length (on the input's values)."""
    info = plan.infos.get(name)
    dims = None if info is None or info.shape is None else info.shape[1:]
    if dims is None or any(d is None for d in dims):
        shape = "unknown" if dims is None else "(N, " + ", ".join("?" if d is None else str(d) for d in dims) + ")"
        raise UnsupportedModelError(
            f"output {name!r} has shape {shape} with the input length fixed to {plan.seq.length}: neither shape "
            "inference nor a run of the model on zeros gives its non-batch dimensions, which must be static "
            "to lay out its ISM")
    return [int(d) for d in dims]


def _set_metadata(model: onnx.ModelProto, plan: Plan) -> None:
    from .. import __version__
    meta = {
        "yuzu_onnx.version": __version__,
        "yuzu_onnx.input": plan.seq.name,
        "yuzu_onnx.layout": plan.seq.layout,
        "yuzu_onnx.alphabet": str(plan.seq.alphabet),
        "yuzu_onnx.length": str(plan.seq.length),
        "yuzu_onnx.start": str(plan.requested_start),
        "yuzu_onnx.end": str(plan.requested_end),
        "yuzu_onnx.substitutions": plan.substitutions,
        "yuzu_onnx.sensing": plan.sensing,
        "yuzu_onnx.outputs": json.dumps({o: ism_output_name(o) for o in plan.outputs}),
    }
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
