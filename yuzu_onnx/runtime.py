"""Running converted ISM models with ONNX Runtime, with input validation."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import onnx
import onnxruntime as ort

from .errors import InputValidationError, ModelLoadError
from .providers import exact_providers

ConvertedLike = Union[str, os.PathLike, onnx.ModelProto]


@dataclass(frozen=True)
class IsmMetadata:
    """What a converted model says about itself (stored in its metadata_props)."""

    input: str
    layout: str
    alphabet: int
    length: int
    start: int
    end: int
    substitutions: str
    outputs: dict[str, str]

    @classmethod
    def from_props(cls, props: dict[str, str], where: str) -> "IsmMetadata":
        try:
            return cls(props["yuzu_onnx.input"], props["yuzu_onnx.layout"], int(props["yuzu_onnx.alphabet"]),
                       int(props["yuzu_onnx.length"]), int(props["yuzu_onnx.start"]),
                       int(props["yuzu_onnx.end"]), props["yuzu_onnx.substitutions"],
                       json.loads(props["yuzu_onnx.outputs"]))
        except KeyError as exc:
            raise ModelLoadError(f"{where}: not a yuzu-onnx converted model (metadata {exc} missing); "
                                 "convert it first with `yuzu-onnx convert`") from exc


def make_session(model: ConvertedLike, providers: Sequence[str] | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU provider unless ``providers`` says otherwise (CUDA
    without TF32, see :mod:`yuzu_onnx.providers`)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, opts, providers=exact_providers(providers))


def check_one_hot(X: np.ndarray, channel_axis: int, start: int, end: int) -> None:
    """Raise if a column of the mutated region is not exactly one-hot."""
    cols = np.moveaxis(X, channel_axis, -1)[:, start:end]  # (N, Lr, A)
    ok = (np.isin(cols, (0.0, 1.0)).all(axis=-1)) & (cols.sum(axis=-1) == 1)
    if not ok.all():
        n, i = map(int, np.argwhere(~ok)[0])
        raise InputValidationError(
            f"sequence {n}, position {start + i} is not one-hot (values {cols[n, i].tolist()}); the model was "
            "converted with substitutions='alt', which needs one-hot columns; convert with "
            "substitutions='all' (--substitutions all) for N characters or soft encodings")


def run_ism(model: ConvertedLike, X: np.ndarray, batch_size: int = 16,
            providers: Sequence[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run a converted model on sequences and return ``(y0, y_hat)`` per original output.

    A one-call shortcut for :class:`yuzu_onnx.ISMSession` on the CPU provider (unless
    ``providers`` says otherwise).

    Parameters
    ----------
    model : str, os.PathLike or onnx.ModelProto
        A model produced by :func:`yuzu_onnx.convert`.
    X : np.ndarray
        Sequences in the original model's input layout, ``(N, A, L)`` or ``(N, L, A)``.
    batch_size : int
        Sequences per ONNX Runtime call (memory grows with it).
    providers : sequence of str, optional
        ONNX Runtime execution providers (default: CPU).

    Returns
    -------
    list of (np.ndarray, np.ndarray)
        In the original output order; ``y_hat`` has shape ``(N, A, end - start, *out)``.
    """
    from .session import ISMSession

    session = ISMSession(model, providers=list(providers or ["CPUExecutionProvider"]), batch_size=batch_size)
    return session.run(X)
