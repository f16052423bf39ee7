"""Pass 1, load: read and check an ONNX model, and find its sequence input.

The result is a checked ``onnx.ModelProto`` (external data resolved) and a
:class:`SequenceInput` describing the one-hot input the ISM is taken over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import onnx
from onnx import helper

from .errors import ModelLoadError, UnsupportedModelError

ModelLike = Union[str, os.PathLike, onnx.ModelProto]

#: Largest alphabet accepted as the channel axis of a sequence input (20 amino acids + gaps).
MAX_ALPHABET = 32


@dataclass(frozen=True)
class SequenceInput:
    """The model input holding one-hot sequences.

    Attributes
    ----------
    name : str
        Graph input name.
    layout : str
        ``"NCL"`` (batch, alphabet, length) or ``"NLC"`` (batch, length, alphabet).
    alphabet : int
        Alphabet size ``A`` (4 for DNA, 20 for protein).
    length : int
        Sequence length ``L`` (static in the model, or fixed with ``length=``).
    dtype : np.dtype
        Floating type the model computes in: the input's own type, or, for an integer
        one-hot input, the float type the model casts it to.
    input_dtype : np.dtype, optional
        Element type of the graph input when it differs from ``dtype`` (an integer one-hot
        input such as uint8); ``None`` when the input is float.
    """

    name: str
    layout: str
    alphabet: int
    length: int
    dtype: np.dtype
    input_dtype: np.dtype | None = None

    @property
    def feed_dtype(self) -> np.dtype:
        """Element type of the graph input (what callers feed)."""
        return self.dtype if self.input_dtype is None else self.input_dtype

    @property
    def seq_axis(self) -> int:
        return 2 if self.layout == "NCL" else 1

    @property
    def channel_axis(self) -> int:
        return 1 if self.layout == "NCL" else 2


def load_model(model: ModelLike) -> onnx.ModelProto:
    """Read a model from a path (or take a ModelProto) and run the ONNX checker.

    Parameters
    ----------
    model : str, os.PathLike or onnx.ModelProto
        The exported model. External data next to the file is loaded too.

    Returns
    -------
    onnx.ModelProto

    Raises
    ------
    ModelLoadError
        When the file is missing, unreadable, not an ONNX model, or fails the checker.
    """
    if isinstance(model, onnx.ModelProto):
        proto, where = model, "the given ModelProto"
    else:
        path = Path(model)
        where = str(path)
        if not path.is_file():
            raise ModelLoadError(f"{where}: no such file")
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # onnx raises DecodeError, OSError, ... for bad files
            raise ModelLoadError(f"{where}: not a readable ONNX model ({exc.__class__.__name__}: {exc})") from exc
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"{where}: not an ONNX model (empty graph)")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelLoadError(f"{where}: fails the ONNX checker: {exc}") from exc
    return proto


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs (not initializers listed as inputs)."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def static_dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    """Dimensions of a value, ``None`` for symbolic or unknown ones."""
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def find_sequence_input(model: onnx.ModelProto, input_name: str | None = None,
                        layout: str | None = None, length: int | None = None) -> SequenceInput:
    """Find the one-hot sequence input and its layout.

    Parameters
    ----------
    model : onnx.ModelProto
    input_name : str, optional
        Name of the sequence input; required when the model has several inputs that look
        like sequences.
    layout : {"NCL", "NLC"}, optional
        Force the layout instead of detecting it from the shape.
    length : int, optional
        Sequence length for an input whose length axis is symbolic or unknown (e.g. a model
        exported with a dynamic length). Must equal the length when the model fixes it.

    Raises
    ------
    UnsupportedModelError
        When no input (or no unique input) is a rank-3 float or integer tensor with a small
        alphabet axis, when the length axis is not static and ``length`` is not given, or
        when ``length`` contradicts the model's static length.
    ValueError
        When ``length`` is not a positive integer.
    """
    if length is not None and (isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1):
        raise ValueError(f"length must be a positive integer, got {length!r}")
    inputs = graph_inputs(model)
    choose = "name the sequence input with input_name= (--input on the command line)"
    if input_name is not None:
        chosen = [i for i in inputs if i.name == input_name]
        if not chosen:
            raise UnsupportedModelError(f"model has no input named {input_name!r} (inputs: {_describe(inputs)})")
    else:
        chosen = [i for i in inputs if len(static_dims(i)) == 3 and _alphabet_axes(static_dims(i))]
        if len(chosen) > 1:  # prefer DNA / protein alphabets
            common = [i for i in chosen if {4, 20} & set(_alphabet_axes(static_dims(i)))]
            chosen = common if len(common) == 1 else chosen
        if len(chosen) != 1:
            what = "no input looks like" if not chosen else f"{len(chosen)} inputs look like"
            raise UnsupportedModelError(
                f"cannot tell which input is the one-hot sequence: {what} a rank-3 "
                f"(batch, alphabet, length) or (batch, length, alphabet) tensor with an alphabet axis "
                f"of 2 to {MAX_ALPHABET}; inputs: {_describe(inputs)}; {choose}")
    vi = chosen[0]
    dims = static_dims(vi)
    if len(dims) != 3:
        raise UnsupportedModelError(
            f"input {vi.name!r} has shape {_shape_text(vi)} (rank {len(dims)}); a sequence input must be rank 3, "
            f"(batch, alphabet, length) or (batch, length, alphabet); inputs: {_describe(inputs)}; {choose}")
    elem = vi.type.tensor_type.elem_type
    input_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
    if input_dtype.kind == "f":
        dtype, stored = input_dtype, None
    elif input_dtype.kind in "iu" and input_dtype.itemsize in (1, 4, 8):
        dtype, stored = _compute_dtype(model, vi.name), input_dtype  # e.g. uint8 one-hot cast in the graph
    else:
        raise UnsupportedModelError(
            f"input {vi.name!r} has dtype {input_dtype}; sequence inputs must be float or int8, uint8, "
            "int32 or int64 (one-hot stored as integers)")
    if layout is None:
        layout = _detect_layout(vi.name, dims)
    if layout not in ("NCL", "NLC"):
        raise UnsupportedModelError(f"layout must be 'NCL' or 'NLC', got {layout!r}")
    alphabet, static_length = (dims[1], dims[2]) if layout == "NCL" else (dims[2], dims[1])
    if alphabet is None:
        raise UnsupportedModelError(
            f"input {vi.name!r} has shape {_shape_text(vi)}: the alphabet axis ({layout} layout) must be static")
    if static_length is None:
        if length is None:
            raise UnsupportedModelError(
                f"input {vi.name!r} has shape {_shape_text(vi)}: its length axis is not static; fix the "
                "sequence length with length= (--length on the command line)")
        static_length = int(length)
    elif length is not None and int(length) != static_length:
        raise UnsupportedModelError(
            f"length={int(length)} contradicts input {vi.name!r}, whose length is fixed at {static_length} "
            f"(shape {_shape_text(vi)}); leave length out or pass {static_length}")
    return SequenceInput(vi.name, layout, int(alphabet), int(static_length), dtype, stored)


def _shape_text(vi: onnx.ValueInfoProto) -> str:
    """A value's shape with symbolic names, e.g. ``('N', 4, 'L')``; ``?`` for unknown dims."""
    ttype = vi.type.tensor_type
    if not ttype.HasField("shape"):
        return "unknown"
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim]
    return "(" + ", ".join(str(d) if isinstance(d, int) else repr(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _describe(inputs: list[onnx.ValueInfoProto]) -> str:
    if not inputs:
        return "none"
    return ", ".join(f"{i.name!r} {_shape_text(i)} "
                     f"{np.dtype(helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)) if i.type.tensor_type.elem_type else '?'}"
                     for i in inputs)


def _compute_dtype(model: onnx.ModelProto, name: str) -> np.dtype:
    """Float type an integer input is computed in: the type of the first Cast of it to a
    float (the usual ``one_hot.float()``), else of the first float output, else float32."""
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input and node.input[0] == name:
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to:
                dtype = np.dtype(helper.tensor_dtype_to_np_dtype(to))
                if dtype.kind == "f":
                    return dtype
    for out in model.graph.output:
        elem = out.type.tensor_type.elem_type
        if elem:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
            if dtype.kind == "f":
                return dtype
    return np.dtype(np.float32)


def _alphabet_axes(dims: list[int | None]) -> list[int]:
    """Sizes of the axes 1 and 2 that could hold a one-hot alphabet."""
    return [d for d in dims[1:] if d is not None and 2 <= d <= MAX_ALPHABET]


def _detect_layout(name: str, dims: list[int | None]) -> str:
    a, b = dims[1], dims[2]
    small_a = a is not None and a <= MAX_ALPHABET
    small_b = b is not None and b <= MAX_ALPHABET
    if small_a and not small_b:
        return "NCL"
    if small_b and not small_a:
        return "NLC"
    if small_a and small_b:
        return "NCL" if a <= b else "NLC"
    raise UnsupportedModelError(
        f"input {name!r} has shape {dims}: no axis looks like an alphabet (at most {MAX_ALPHABET}); "
        "pass layout='NCL' or 'NLC'")
