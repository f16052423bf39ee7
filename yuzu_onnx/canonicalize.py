"""Pass 2, canonicalize: rewrite exporter idioms into the small core the analysis expects.

- models below the emitter's opset are upgraded (see :mod:`yuzu_onnx.opset`),
- the batch axis becomes dynamic (exporters often bake batch 1 into inputs and Reshapes),
- a symbolic sequence length is fixed to the length the load pass settled on,
- constants are folded and Constant nodes become initializers,
- Identity and inference-mode Dropout nodes are removed,
- shapes are inferred for every tensor, and a tensor whose length comes out non-positive
  (a sequence shorter than the receptive field) is refused naming its node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper, shape_inference

from .errors import UnsupportedModelError
from .load import SequenceInput, static_dims
from .opset import ensure_supported_opset

log = logging.getLogger(__name__)

BATCH_DIM = "N"


@dataclass
class TensorInfo:
    """Static facts about one tensor of the canonical graph."""

    shape: list[int | None] | None
    dtype: np.dtype | None


def canonicalize(model: onnx.ModelProto, seq: SequenceInput,
                 outputs: Sequence[str] | None = None) -> tuple[onnx.ModelProto, dict[str, TensorInfo]]:
    """Return the canonical model and the shape/dtype of each of its tensors.

    Parameters
    ----------
    model : onnx.ModelProto
        A checked model (see :func:`yuzu_onnx.load.load_model`); it is not modified.
    seq : SequenceInput
        The sequence input found by the load pass.
    outputs : sequence of str, optional
        Keep only these outputs; nodes that only feed the others are pruned.
    """
    model = _copy(ensure_supported_opset(model))
    if outputs is not None:
        _select_outputs(model, outputs)
    _make_batch_dynamic(model, seq.name)
    _fix_length(model, seq)
    model = _fold_constants(_infer(model))  # known shapes let Shape->Gather->... chains fold
    _remove_identities(model)
    model = _infer(model)
    _check_positive_dims(model, seq)
    if _has_ceil_mode_pool(model):
        # ONNX shape inference and ONNX Runtime disagree on ceil_mode pools whose last window
        # would start past the input; take the shapes ONNX Runtime really produces.
        _use_runtime_shapes(model, seq)
    if _free_reshape_batch(model):
        # Inference had copied the hard-coded batch onto the outputs: free it and infer again.
        _drop_unused_initializers(model)
        _make_batch_dynamic(model, seq.name)
        model = _infer(model)
    return model, tensor_infos(model)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _select_outputs(model: onnx.ModelProto, outputs: Sequence[str]) -> None:
    available = [o.name for o in model.graph.output]
    missing = [o for o in outputs if o not in available]
    if missing or not outputs:
        raise UnsupportedModelError(f"model has no output named {', '.join(map(repr, missing)) or '(none given)'} "
                                    f"(outputs: {', '.join(available)})")
    keep = [o for o in model.graph.output if o.name in set(outputs)]
    del model.graph.output[:]
    model.graph.output.extend(keep)  # the constant-folding cleanup prunes what no output needs


def _make_batch_dynamic(model: onnx.ModelProto, input_name: str) -> None:
    graph = model.graph
    for vi in list(graph.input) + list(graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.name in {i.name for i in graph.initializer} or not dims:
            continue
        if vi in graph.input and vi.name != input_name:
            continue
        dims[0].ClearField("dim_value")
        dims[0].dim_param = BATCH_DIM
    del graph.value_info[:]


def _fix_length(model: onnx.ModelProto, seq: SequenceInput) -> None:
    """Give a symbolic or unknown length axis of the sequence input the value ``seq.length``
    (see ``length=``), so shape inference and constant folding see a static length."""
    vi = next(i for i in model.graph.input if i.name == seq.name)
    dim = vi.type.tensor_type.shape.dim[seq.seq_axis]
    if dim.HasField("dim_value"):
        return
    dim.ClearField("dim_param")
    dim.dim_value = seq.length
    # Output dims named after the old symbolic length would now contradict the inferred ones:
    # leave every non-batch output dim that is not a number to inference.
    for out in model.graph.output:
        if out.type.tensor_type.HasField("shape"):
            for d in list(out.type.tensor_type.shape.dim)[1:]:
                if not d.HasField("dim_value"):
                    d.Clear()


def _check_positive_dims(model: onnx.ModelProto, seq: SequenceInput) -> None:
    """Refuse a graph in which a node's output has a non-positive non-batch dimension (a Conv
    or pool wider than its padded input): ONNX Runtime would fail on it with no hint why."""
    infos = tensor_infos(model)
    inits = {t.name for t in model.graph.initializer}
    for index, node in enumerate(model.graph.node):
        for out in node.output:
            info = infos.get(out)
            if info is None or not info.shape or all(d is None or d > 0 for d in info.shape[1:]):
                continue
            sources = ", ".join(f"{i!r} of shape {_dims_text(infos[i].shape)}" for i in node.input
                                if i in infos and infos[i].shape is not None and i not in inits) or "its inputs"
            label = repr(node.name) if node.name else f"#{index} (unnamed)"
            window = [f"{a.name}={list(a.ints)}" for a in node.attribute if a.ints]
            if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] in infos:
                window.insert(0, f"kernel={(infos[node.input[1]].shape or [])[2:]}")
            raise UnsupportedModelError(
                f"{node.op_type} node {label}{' (' + ', '.join(window) + ')' if window else ''} gives {out!r} "
                f"the shape {_dims_text(info.shape)} from {sources}: a non-positive length; the sequence length "
                f"{seq.length} of input "
                f"{seq.name!r} is shorter than the model's receptive field at this node")


def _dims_text(shape: list[int | None]) -> str:
    return "(" + ", ".join("N" if i == 0 and d is None else "?" if d is None else str(d)
                           for i, d in enumerate(shape)) + ")"


def _fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = gs.import_onnx(model)
    try:
        graph.fold_constants(error_ok=True)
    except Exception as exc:  # folding is an optimization; never fail the conversion on it
        log.debug("constant folding skipped: %s", exc)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    return out


def _remove_identities(model: onnx.ModelProto) -> None:
    graph = model.graph
    outputs = {o.name for o in graph.output}
    keep = []
    rename: dict[str, str] = {}
    for node in graph.node:
        passthrough = node.op_type == "Identity" or (node.op_type == "Dropout" and len(node.output) == 1)
        if passthrough and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
            continue
        keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input}
    used.update(o.name for o in model.graph.output)
    dropped = {t.name for t in model.graph.initializer if t.name not in used}
    keep = [t for t in model.graph.initializer if t.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    inputs = [i for i in model.graph.input if i.name not in dropped]
    del model.graph.input[:]
    model.graph.input.extend(inputs)


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        log.debug("shape inference failed: %s", exc)
        return model


def _free_reshape_batch(model: onnx.ModelProto) -> bool:
    """Rewrite Reshape targets that hard-code the batch size to ``-1`` in that slot."""
    infos = tensor_infos(model)
    inits = {t.name: t for t in model.graph.initializer}
    changed = False
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        target = numpy_helper.to_array(inits[node.input[1]]).astype(np.int64)
        src = infos.get(node.input[0])
        if src is None or src.shape is None or not src.shape or src.shape[0] is not None:
            continue  # only inputs whose batch axis is dynamic
        per_sample = src.shape[1:]
        if target.size == 0 or target[0] <= 0 or any(d is None for d in per_sample):
            continue
        size = int(np.prod(per_sample, dtype=np.int64))
        rest = [int(per_sample[i]) if (d == 0 and i < len(per_sample)) else int(d)
                for i, d in enumerate(target[1:])]
        if rest.count(-1) == 1:
            known = int(np.prod([d for d in rest if d != -1], dtype=np.int64))
            if known == 0 or size % known:
                continue
            rest[rest.index(-1)] = size // known
        if -1 in rest or int(np.prod(rest, dtype=np.int64)) != size:
            continue
        name = node.input[1] + "__batch_free"
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1] + rest, dtype=np.int64), name))
        node.input[1] = name
        changed = True
    return changed


def _has_ceil_mode_pool(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("MaxPool", "AveragePool") and any(a.name == "ceil_mode" and a.i for a in n.attribute)
               for n in model.graph.node)


def _use_runtime_shapes(model: onnx.ModelProto, seq: SequenceInput) -> None:
    """Replace inferred shapes by those of one batch-1 run of the model on zeros."""
    import onnxruntime as ort

    infos = tensor_infos(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            info = infos.get(name)
            if name and name not in known and info is not None and info.dtype is not None:
                probe.graph.output.append(helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(info.dtype), None))
    feeds = {}
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [1] + [d if d is not None else 1 for d in static_dims(vi)[1:]]
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = np.zeros(dims, dtype=dtype)
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        values = session.run(None, feeds)
    except Exception as exc:  # keep the inferred shapes; the converted graph is still checked
        log.debug("runtime shapes unavailable: %s", exc)
        return
    actual = {o.name: v.shape for o, v in zip(session.get_outputs(), values)}
    for vi in list(model.graph.value_info) + list(model.graph.output):
        if vi.name in actual and vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            for d, size in list(zip(dims, actual[vi.name]))[1:]:
                d.ClearField("dim_param")
                d.dim_value = int(size)


def tensor_infos(model: onnx.ModelProto) -> dict[str, TensorInfo]:
    """Shape (``None`` for symbolic dims) and dtype of every tensor the graph describes."""
    infos: dict[str, TensorInfo] = {}
    graph = model.graph
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        ttype = vi.type.tensor_type
        shape = static_dims(vi) if ttype.HasField("shape") else None
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(ttype.elem_type)) if ttype.elem_type else None
        infos[vi.name] = TensorInfo(shape, dtype)
    for init in graph.initializer:
        infos[init.name] = TensorInfo(list(init.dims), np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)))
    return infos
