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
from .memory import release_freed_memory
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


def make_session(model: ConvertedLike, providers: Sequence[str] | None = None,
                 bounded_memory: bool = False) -> ort.InferenceSession:
    """An ONNX Runtime session on the CPU provider unless ``providers`` says otherwise (CUDA
    without TF32, see :mod:`yuzu_onnx.providers`).

    Every session keeps ONNX Runtime's CPU arena (fast: freed blocks are reused from one op,
    and one Loop iteration, to the next) and turns off its *memory pattern*, which on top of the
    arena reserves one block for every tensor of the planned run: with it the process held up
    to twice the estimated peak (a tiled gReLU dilated model: 1694 MiB against 850 MiB
    predicted), without it 0.9-1.3x, at the same speed (``tools/memory_check.py``).
    ``bounded_memory`` also turns the arena off and makes glibc return large freed blocks to the
    system (:func:`yuzu_onnx.memory.release_freed_memory`): the process then holds a little less,
    at 2-3x the time on tiled graphs (their Loop allocates each iteration anew); it is for
    measuring, not a default.
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.enable_mem_pattern = False
    if bounded_memory:
        opts.enable_cpu_mem_arena = False
        release_freed_memory()
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


def check_finite(X: np.ndarray, channel_axis: int) -> None:
    """Raise if any value of a floating-point ``X`` is NaN or infinite, naming the first
    sequence and position holding one (whatever the substitution mode: a NaN reaches every
    output of the mutants around it, and in the model's own y0)."""
    if X.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(np.moveaxis(X, channel_axis, -1))  # (N, L, A)
    if bad.any():
        n, i = map(int, np.argwhere(bad.any(axis=-1))[0])
        column = np.moveaxis(X, channel_axis, -1)[n, i].tolist()
        count = int(bad.any(axis=-1).sum())
        raise InputValidationError(
            f"sequence {n}, position {i} holds a non-finite value (values {column}); "
            f"{count} column(s) in all hold NaN or infinity; sequences must be finite (use all-zero "
            "columns for unknown characters with substitutions='all')")


def coerce_input(X: np.ndarray, dtype: np.dtype, expected: str) -> np.ndarray:
    """``X`` as a C-contiguous array of the model input's ``dtype``, refusing lossy casts.

    A float model takes floating-point arrays only. An integer model (a one-hot stored as
    uint8, say) takes integer or boolean arrays whose values fit ``dtype``, and floating-point
    arrays holding only whole numbers that fit (a one-hot read from FASTA as float32).

    Raises
    ------
    InputValidationError
        When ``X`` cannot be fed to the model without changing its values.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        if X.dtype.kind != "f":
            raise InputValidationError(f"input dtype is {X.dtype}; expected a floating-point one-hot array "
                                       f"(e.g. {dtype}) of shape {expected}")
        return np.ascontiguousarray(X, dtype=dtype)
    if X.dtype.kind not in "biuf":
        raise InputValidationError(f"input dtype is {X.dtype}; the model takes {dtype} one-hot arrays "
                                   f"of shape {expected}")
    info = np.iinfo(dtype)
    if X.size and X.dtype.kind != "b" and not np.can_cast(X.dtype, dtype):
        ok = (X >= info.min) & (X <= info.max)
        if X.dtype.kind == "f":
            ok &= np.floor(X) == X  # also False for NaN and infinity
        if not ok.all():
            where = tuple(int(v) for v in np.argwhere(~ok)[0])
            raise InputValidationError(
                f"input value {X[where].item()!r} at index {where} does not fit the model's {dtype} input "
                f"(whole numbers {info.min}..{info.max}); feed a one-hot array of shape {expected}")
    return np.ascontiguousarray(X, dtype=dtype)


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
