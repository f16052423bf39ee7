"""Pass 2, canonicalize: rewrite exporter idioms into the small core the analysis expects.

- models below the emitter's opset are upgraded (see :mod:`yuzu_onnx.opset`),
- the batch axis becomes dynamic (exporters often bake batch 1 into inputs, Reshapes and
  constants concatenated with batch tensors: those are expanded to the batch),
- a symbolic sequence length is fixed to the length the load pass settled on, and output dims
  an exporter left symbolic are inferred from it (or taken from one run of the model),
- constants are folded and Constant nodes become initializers, to a fixed point (shape
  chains such as ChromBPNet's crop by another branch's length fold once the shapes they read
  are known), and Reshape targets computed from the batch size become constants,
- Identity and inference-mode Dropout nodes are removed,
- shapes are inferred for every tensor, and a tensor whose length comes out non-positive
  (a sequence shorter than the receptive field) is refused naming its node,
- a dilated Conv with ``auto_pad`` SAME_UPPER/SAME_LOWER, which ONNX Runtime refuses to run,
  gets the equivalent explicit pads (with a warning: the original model cannot run in ONNX
  Runtime, the converted graph can).
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
from .graph_walk import drop_unread_initializers
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
    _free_output_dims(model)
    model = _fold_to_fixed_point(model)
    _remove_identities(model)
    model = _infer(model)
    _check_positive_dims(model, seq)
    _explicit_dilated_same_pads(model)
    if _has_ceil_mode_pool(model) or _unknown_output_dims(model):
        # ONNX shape inference and ONNX Runtime disagree on ceil_mode pools whose last window
        # would start past the input, and inference cannot follow every exporter's graph to
        # the outputs; take the shapes ONNX Runtime really produces.
        _use_runtime_shapes(model, seq)
    for _ in range(MAX_FOLD_ROUNDS):
        freed = _free_reshape_batch(model)
        if not _expand_batch_one_constants(model, seq) and not freed:
            break
        # Inference had copied the hard-coded batch onto the outputs: free it and infer again
        # (which frees the batch of the next Reshape that hard-codes it, if any).
        drop_unread_initializers(model, with_inputs=True)
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
    dim.dim_value = seq.length  # output dims named after the old length are freed by _free_output_dims


def _free_output_dims(model: onnx.ModelProto) -> None:
    """Leave every non-batch output dim that is not a number to inference: exporters name them
    after internal tensors (TorchScript: ``Sliceprofile_dim_2``, even ``batch`` for a length),
    although with a fixed input length inference (or one run) gives their values."""
    for out in model.graph.output:
        if out.type.tensor_type.HasField("shape"):
            for d in list(out.type.tensor_type.shape.dim)[1:]:
                if not d.HasField("dim_value"):
                    d.Clear()


def _unknown_output_dims(model: onnx.ModelProto) -> bool:
    """Whether some output's non-batch dims (or rank) are still unknown after inference."""
    for out in model.graph.output:
        ttype = out.type.tensor_type
        if not ttype.HasField("shape") or any(d is None for d in static_dims(out)[1:]):
            return True
    return False


#: Fold-and-infer rounds at most: each round's shapes let the next fold more (a crop computed
#: from a tensor whose own shape was only known after the previous round's folding).
MAX_FOLD_ROUNDS = 4


def _fold_to_fixed_point(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and infer shapes until the graph stops shrinking. Shape->Gather->...
    chains fold once the shapes they read are known; a Reshape whose target is computed (from
    a Shape that holds the batch size) gets the constant target its inferred shape implies."""
    for _ in range(MAX_FOLD_ROUNDS):
        count = len(model.graph.node)
        model = _infer(model)
        _static_reshape_targets(model)
        model = _fold_constants(model)
        if len(model.graph.node) >= count:
            break
    return model


def _static_reshape_targets(model: onnx.ModelProto) -> None:
    """A Reshape whose target is computed (``x.view(x.shape[0], 16, 2, 4)``: the batch size read
    by a Shape node) but whose inferred output dims after the first are static and hold as many
    elements as the input's: the target is ``[-1, *those dims]`` for every batch size (the
    element count fixes the first dim), so it becomes a constant and the Shape chain dies."""
    infos = tensor_infos(model)
    inits = {t.name for t in model.graph.initializer}
    names = inits | {n for node in model.graph.node for n in list(node.input) + list(node.output)}
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] in inits:
            continue
        src, out = infos.get(node.input[0]), infos.get(node.output[0])
        if src is None or out is None or not src.shape or not out.shape:
            continue
        if any(d is None for d in src.shape[1:]) or any(d is None for d in out.shape[1:]):
            continue
        size = int(np.prod(src.shape[1:], dtype=np.int64))
        if size == 0 or size != int(np.prod(out.shape[1:], dtype=np.int64)):
            continue
        name = f"{node.output[0]}__target"
        while name in names:
            name += "_"
        names.add(name)
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1, *out.shape[1:]], dtype=np.int64), name))
        node.input[1] = name


def _explicit_dilated_same_pads(model: onnx.ModelProto) -> None:
    """Give a Conv with ``auto_pad=SAME_UPPER/SAME_LOWER`` and a dilation above 1 the explicit
    pads ONNX's definition implies (output ``ceil(L / stride)``, total padding
    ``(out - 1) * stride + (k - 1) * dilation + 1 - L``, the odd one at the end for SAME_UPPER
    and at the start for SAME_LOWER). ONNX Runtime refuses to run such a Conv ("Dilation not
    supported for AutoPadType::SAME_UPPER"), so the original model cannot run in it; the
    converted graph can, and the conversion says so with a warning."""
    infos = tensor_infos(model)
    rewritten = []
    for node in model.graph.node:
        auto_pad = _attr(node, "auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        dilations = list(_attr(node, "dilations", []) or [])
        if node.op_type != "Conv" or auto_pad not in ("SAME_UPPER", "SAME_LOWER") or all(d == 1 for d in dilations):
            continue
        x, w = infos.get(node.input[0]), infos.get(node.input[1])
        spatial = None if x is None or x.shape is None else x.shape[2:]
        kernel = list(_attr(node, "kernel_shape", []) or []) or (None if w is None or w.shape is None else w.shape[2:])
        if not spatial or kernel is None or None in spatial or None in kernel:
            continue  # left as it is: the window rule reads auto_pad itself
        strides = list(_attr(node, "strides", []) or []) or [1] * len(spatial)
        pads = same_pads(spatial, kernel, strides, dilations, auto_pad)
        keep = [a for a in node.attribute if a.name not in ("auto_pad", "pads")]
        del node.attribute[:]
        node.attribute.extend(keep + [helper.make_attribute("pads", pads)])
        rewritten.append(f"{node.name or node.output[0]!r} ({auto_pad}, dilations {dilations})")
    if rewritten:
        import warnings

        from .plan import ConversionWarning  # the plan module imports this one
        warnings.warn(f"the original model cannot run in ONNX Runtime (it refuses a Conv with auto_pad SAME_UPPER or "
                      f"SAME_LOWER and a dilation above 1: Conv node {', '.join(rewritten)}); the converted graph "
                      "uses explicit pads", ConversionWarning, stacklevel=4)


def same_pads(spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
              auto_pad: str) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) equal to ``auto_pad`` SAME_UPPER or SAME_LOWER."""
    begins, ends = [], []
    for length, k, stride, dilation in zip(spatial, kernel, strides, dilations):
        out = -(-int(length) // int(stride))
        total = max(0, (out - 1) * int(stride) + (int(k) - 1) * int(dilation) + 1 - int(length))
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


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
        if name not in inits:  # Reshapes sharing one target share the freed one too
            inits[name] = numpy_helper.from_array(np.array([-1] + rest, dtype=np.int64), name)
            model.graph.initializer.append(inits[name])
        node.input[1] = name
        changed = True
    return changed


def _expand_batch_one_constants(model: onnx.ModelProto, seq: SequenceInput) -> bool:
    """A Concat (not along the batch) of a tensor with a dynamic batch and a constant whose
    batch axis is 1: an exporter tracing with one sequence baked it in (dynamo writes
    bpnet-lite's ``x.new_zeros(N, 2, L)`` and gReLU's ``zeros_like`` in attention as constants
    of batch 1). The constant becomes an Expand to the sequence input's batch, so the graph
    runs for any batch."""
    infos = tensor_infos(model)
    inits = {t.name: t for t in model.graph.initializer}
    names = set(inits) | {n for node in model.graph.node for n in list(node.input) + list(node.output)}
    # A symbolic first axis is the batch's: the original ran with batch 1 (the constant's), so
    # in a valid model such an axis is 1 when the batch is, i.e. it is the batch.
    batched = {name for name, info in infos.items() if info.shape and info.shape[0] is None}
    batch = None
    nodes = []
    for node in model.graph.node:
        out = infos.get(node.output[0])
        rank = len(out.shape) if out is not None and out.shape else 0
        if node.op_type == "Concat" and rank and int(_attr(node, "axis", 0)) % rank != 0 and any(
                i in batched for i in node.input):
            for k, name in enumerate(node.input):
                dims = list(inits[name].dims) if name in inits else None
                if not dims or dims[0] != 1 or len(dims) != rank:
                    continue
                if batch is None:  # (1,): the sequence input's batch size
                    batch = f"{seq.name}__batch"
                    while batch in names:
                        batch += "_"
                    nodes.append(helper.make_node("Shape", [seq.name], [batch], start=0, end=1))
                target, expanded = f"{name}__target_{k}_{node.output[0]}", f"{name}__expanded_{node.output[0]}"
                rest = f"{target}_rest"
                model.graph.initializer.append(numpy_helper.from_array(np.array(dims[1:], dtype=np.int64), rest))
                nodes.append(helper.make_node("Concat", [batch, rest], [target], axis=0))
                nodes.append(helper.make_node("Expand", [name, target], [expanded]))
                node.input[k] = expanded
        nodes.append(node)
    if batch is None:
        return False
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return True


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
    for out in model.graph.output:  # an output of unknown rank: the run's rank, batch first
        if out.name in actual and not out.type.tensor_type.HasField("shape") and len(actual[out.name]):
            out.type.tensor_type.shape.dim.add().dim_param = BATCH_DIM
            for size in actual[out.name][1:]:
                out.type.tensor_type.shape.dim.add().dim_value = int(size)


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
