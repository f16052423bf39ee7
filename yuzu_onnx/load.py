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
        Sequence length ``L``.
    dtype : np.dtype
        Element type of the input.
    """

    name: str
    layout: str
    alphabet: int
    length: int
    dtype: np.dtype

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
                        layout: str | None = None) -> SequenceInput:
    """Find the one-hot sequence input and its layout.

    Parameters
    ----------
    model : onnx.ModelProto
    input_name : str, optional
        Name of the sequence input; required when the model has several inputs that look
        like sequences.
    layout : {"NCL", "NLC"}, optional
        Force the layout instead of detecting it from the shape.

    Raises
    ------
    UnsupportedModelError
        When no input (or no unique input) is a rank-3 float tensor with a small alphabet
        axis and a static length.
    """
    inputs = graph_inputs(model)
    if input_name is not None:
        chosen = [i for i in inputs if i.name == input_name]
        if not chosen:
            names = ", ".join(i.name for i in inputs) or "none"
            raise UnsupportedModelError(f"model has no input named {input_name!r} (inputs: {names})")
    else:
        chosen = [i for i in inputs if len(static_dims(i)) == 3 and _alphabet_axes(static_dims(i))]
        if len(chosen) > 1:  # prefer DNA / protein alphabets
            common = [i for i in chosen if {4, 20} & set(_alphabet_axes(static_dims(i)))]
            chosen = common if len(common) == 1 else chosen
        if len(chosen) != 1:
            desc = ", ".join(f"{i.name} {static_dims(i)}" for i in inputs) or "none"
            raise UnsupportedModelError(
                "cannot tell which input is the one-hot sequence: expected exactly one rank-3 "
                f"input (batch, alphabet, length) or (batch, length, alphabet); inputs: {desc}; "
                "name it with --input")
    vi = chosen[0]
    dims = static_dims(vi)
    if len(dims) != 3:
        raise UnsupportedModelError(f"input {vi.name!r} has shape {dims}; a sequence input must be rank 3")
    elem = vi.type.tensor_type.elem_type
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
    if dtype.kind != "f":
        raise UnsupportedModelError(f"input {vi.name!r} has dtype {dtype}; only float sequence inputs are supported")
    if layout is None:
        layout = _detect_layout(vi.name, dims)
    if layout not in ("NCL", "NLC"):
        raise UnsupportedModelError(f"layout must be 'NCL' or 'NLC', got {layout!r}")
    alphabet, length = (dims[1], dims[2]) if layout == "NCL" else (dims[2], dims[1])
    if alphabet is None or length is None:
        raise UnsupportedModelError(
            f"input {vi.name!r} has shape {dims}: the alphabet and length axes must be static")
    return SequenceInput(vi.name, layout, int(alphabet), int(length), dtype)


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
