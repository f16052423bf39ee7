"""Naive in silico saturation mutagenesis: the reference that converted graphs are checked against.

:func:`naive_ism` runs the *original* model with ONNX Runtime on every single-position
substitution of every sequence, one forward pass per mutant (batched). It is slow on purpose and
has no cleverness that could share a bug with the fast ISM graphs; its only shortcut is to copy
the unmutated prediction into the slot of a character that is already present.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from yuzu_onnx.errors import InputValidationError, ModelLoadError, UnsupportedModelError
from yuzu_onnx.providers import exact_providers

__all__ = ["naive_ism"]

ModelLike = str | Path | onnx.ModelProto | ort.InferenceSession

_LAYOUTS = ("NCL", "NLC")

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


@dataclass(frozen=True)
class _InputSpec:
    """What the oracle needs to know about the model's sequence input.

    Attributes
    ----------
    name : str
        Name of the graph input.
    dtype : numpy.dtype
        Element type the model expects.
    batch : int or None
        Static batch size baked into the graph, or ``None`` when the batch dimension is dynamic.
    alphabet : int or None
        Static alphabet size ``A``, or ``None`` when dynamic.
    length : int or None
        Static sequence length ``L``, or ``None`` when dynamic.
    """

    name: str
    dtype: np.dtype
    batch: int | None
    alphabet: int | None
    length: int | None


def naive_ism(
    model: ModelLike,
    X: np.ndarray,
    start: int = 0,
    end: int | None = None,
    batch_size: int = 256,
    providers: Sequence[str] | None = None,
    layout: str = "NCL",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Compute saturation mutagenesis by brute force with ONNX Runtime.

    Parameters
    ----------
    model : str, pathlib.Path, onnx.ModelProto or onnxruntime.InferenceSession
        The original (unconverted) model. It must have exactly one input, the sequence, and
        every output must carry the batch dimension first.
    X : numpy.ndarray
        Sequences, shape ``(N, A, L)`` for ``layout="NCL"`` or ``(N, L, A)`` for
        ``layout="NLC"``. Usually one-hot; soft or all-zero ("N") columns are allowed.
    start, end : int, optional
        Mutate positions ``start .. end - 1`` (``end`` defaults to ``L``).
    batch_size : int, optional
        Number of sequences per forward pass. Ignored when the graph fixes the batch size, in
        which case exactly that many sequences are fed per pass.
    providers : sequence of str, optional
        ONNX Runtime execution providers for a session built here; defaults to
        ``["CPUExecutionProvider"]``. Ignored when ``model`` is already a session.
    layout : {"NCL", "NLC"}, optional
        Layout of ``X`` and of the model input.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        One pair ``(y0, y_hat)`` per model output, in the session's output order.
        ``y0 = f(X)`` has shape ``(N, *out)``; ``y_hat`` has shape ``(N, A, end - start, *out)``
        and ``y_hat[n, a, i - start]`` is ``f`` of ``X[n]`` with column ``i`` replaced by the
        one-hot vector ``e_a``. Where column ``i`` is exactly one-hot, the slot of its present
        character is a copy of ``y0[n]``; every other slot is a real forward pass.

    Raises
    ------
    InputValidationError
        If ``X``, the region, ``batch_size`` or ``layout`` do not fit the model.
    ModelLoadError
        If the model cannot be loaded by ONNX Runtime.
    UnsupportedModelError
        If the model does not have a single rank-3 floating-point input, or an output lacks the
        batch dimension.
    """
    session = _make_session(model, providers)
    spec = _input_spec(session, layout)
    Xc = _validate_X(X, spec, layout)
    start, end = _validate_region(start, end, Xc.shape[2])
    chunk = _chunk_size(batch_size, spec)

    y0 = _predict(session, spec, layout, Xc, chunk)
    y_hat = [
        np.empty((Xc.shape[0], Xc.shape[1], end - start) + y.shape[1:], dtype=y.dtype) for y in y0
    ]
    present = _present_characters(Xc[:, :, start:end])

    for n_idx, a_idx, i_idx in _mutant_chunks(present, Xc.shape[1], chunk):
        batch = _build_mutants(Xc, n_idx, a_idx, i_idx + start)
        outputs = _run(session, spec, layout, batch)
        for y, out in zip(y_hat, outputs):
            y[n_idx, a_idx, i_idx] = out

    _copy_reference(y0, y_hat, present)
    return list(zip(y0, y_hat))


def _make_session(model: ModelLike, providers: Sequence[str] | None) -> ort.InferenceSession:
    """Return ``model`` itself if it is a session, otherwise build one.

    Parameters
    ----------
    model : str, pathlib.Path, onnx.ModelProto or onnxruntime.InferenceSession
        The model to run.
    providers : sequence of str or None
        Execution providers; ``None`` means CPU only.

    Returns
    -------
    onnxruntime.InferenceSession
        A session ready to run.
    """
    if isinstance(model, ort.InferenceSession):
        return model
    providers = exact_providers(providers)
    if isinstance(model, onnx.ModelProto):
        source: str | bytes = model.SerializeToString()
    elif isinstance(model, (str, Path)):
        if not Path(model).is_file():
            raise ModelLoadError(f"model file not found: {model}")
        source = str(model)
    else:
        raise ModelLoadError(
            "model must be a path, an onnx.ModelProto or an onnxruntime.InferenceSession, "
            f"not {type(model).__name__}"
        )
    try:
        return ort.InferenceSession(source, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        raise ModelLoadError(f"onnxruntime could not load the model: {exc}") from exc


def _input_spec(session: ort.InferenceSession, layout: str) -> _InputSpec:
    """Describe the session's single sequence input.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        The model session.
    layout : {"NCL", "NLC"}
        Layout of the model input.

    Returns
    -------
    _InputSpec
        Name, dtype and static dimensions of the input, in NCL order.
    """
    if layout not in _LAYOUTS:
        raise InputValidationError(f"layout must be one of {_LAYOUTS}, not {layout!r}")
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise UnsupportedModelError(
            f"naive_ism needs a model with exactly one input (the sequence); this one has "
            f"{len(inputs)}: {names}"
        )
    inp = inputs[0]
    if inp.type not in _ORT_TO_NUMPY:
        raise UnsupportedModelError(
            f"input {inp.name!r} has type {inp.type}; expected a floating-point tensor "
            f"({', '.join(_ORT_TO_NUMPY)})"
        )
    shape = list(inp.shape) if inp.shape is not None else []
    if len(shape) != 3:
        raise UnsupportedModelError(
            f"input {inp.name!r} has shape {shape}; expected rank 3 ({layout})"
        )
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    batch = dims[0]
    alphabet, length = (dims[1], dims[2]) if layout == "NCL" else (dims[2], dims[1])
    return _InputSpec(inp.name, np.dtype(_ORT_TO_NUMPY[inp.type]), batch, alphabet, length)


def _validate_X(X: np.ndarray, spec: _InputSpec, layout: str) -> np.ndarray:
    """Check ``X`` against the model input and return it in NCL layout and the model's dtype.

    Parameters
    ----------
    X : array_like
        Sequences in ``layout``.
    spec : _InputSpec
        The model's input description.
    layout : {"NCL", "NLC"}
        Layout of ``X``.

    Returns
    -------
    numpy.ndarray
        A C-contiguous ``(N, A, L)`` array of dtype ``spec.dtype``.
    """
    X = np.asarray(X)
    if X.ndim != 3:
        raise InputValidationError(
            f"X must be 3-D ({layout}: N sequences x "
            f"{'A characters x L positions' if layout == 'NCL' else 'L positions x A characters'})"
            f", got shape {X.shape}"
        )
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise InputValidationError(f"X must be numeric, got dtype {X.dtype}")
    Xc = X if layout == "NCL" else X.transpose(0, 2, 1)
    n, a, length = Xc.shape
    if n == 0:
        raise InputValidationError("X holds no sequences (N = 0)")
    if spec.alphabet is not None and a != spec.alphabet:
        raise InputValidationError(
            f"X has alphabet size A = {a} but the model input expects {spec.alphabet}"
            f" (X shape {X.shape}, layout {layout})"
        )
    if spec.length is not None and length != spec.length:
        raise InputValidationError(
            f"X has length L = {length} but the model input expects {spec.length}"
            f" (X shape {X.shape}, layout {layout})"
        )
    if a == 0 or length == 0:
        raise InputValidationError(f"X must have A >= 1 and L >= 1, got shape {X.shape}")
    return np.ascontiguousarray(Xc, dtype=spec.dtype)


def _validate_region(start: int, end: int | None, length: int) -> tuple[int, int]:
    """Check ``0 <= start < end <= length`` and resolve a missing ``end``.

    Parameters
    ----------
    start, end : int
        Region to mutate; ``end=None`` means ``length``.
    length : int
        Sequence length ``L``.

    Returns
    -------
    tuple of int
        ``(start, end)`` as plain ints.
    """
    end = length if end is None else end
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputValidationError(f"{name} must be an integer, got {value!r}")
    start, end = int(start), int(end)
    if not 0 <= start < end <= length:
        raise InputValidationError(
            f"region start={start}, end={end} is invalid: need 0 <= start < end <= L = {length}"
        )
    return start, end


def _chunk_size(batch_size: int, spec: _InputSpec) -> int:
    """Number of sequences per forward pass: the graph's static batch, else ``batch_size``.

    Parameters
    ----------
    batch_size : int
        Requested sequences per pass.
    spec : _InputSpec
        The model's input description.

    Returns
    -------
    int
        The chunk size to use.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise InputValidationError(f"batch_size must be an integer, got {batch_size!r}")
    if batch_size < 1:
        raise InputValidationError(f"batch_size must be >= 1, got {batch_size}")
    return spec.batch if spec.batch is not None else int(batch_size)


def _run(
    session: ort.InferenceSession, spec: _InputSpec, layout: str, batch: np.ndarray
) -> list[np.ndarray]:
    """Run one batch of NCL sequences, padding to the static batch size if the graph has one.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        The model session.
    spec : _InputSpec
        The model's input description.
    layout : {"NCL", "NLC"}
        Layout the model expects.
    batch : numpy.ndarray
        ``(m, A, L)`` sequences, ``m >= 1`` (and ``m <= spec.batch`` when that is static).

    Returns
    -------
    list of numpy.ndarray
        One array per output, each with ``m`` rows.
    """
    m = batch.shape[0]
    if spec.batch is not None and m < spec.batch:
        padding = np.zeros((spec.batch - m,) + batch.shape[1:], dtype=batch.dtype)
        batch = np.concatenate([batch, padding], axis=0)
    feed = batch if layout == "NCL" else np.ascontiguousarray(batch.transpose(0, 2, 1))
    outputs = session.run(None, {spec.name: feed})
    for meta, out in zip(session.get_outputs(), outputs):
        if out.ndim == 0 or out.shape[0] != batch.shape[0]:
            raise UnsupportedModelError(
                f"output {meta.name!r} has shape {out.shape} for a batch of {batch.shape[0]} "
                "sequences; naive_ism needs every output to have the batch dimension first"
            )
    return [out[:m] for out in outputs]


def _predict(
    session: ort.InferenceSession, spec: _InputSpec, layout: str, Xc: np.ndarray, chunk: int
) -> list[np.ndarray]:
    """Run the model on ``Xc`` itself, ``chunk`` sequences at a time.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        The model session.
    spec : _InputSpec
        The model's input description.
    layout : {"NCL", "NLC"}
        Layout the model expects.
    Xc : numpy.ndarray
        ``(N, A, L)`` sequences.
    chunk : int
        Sequences per forward pass.

    Returns
    -------
    list of numpy.ndarray
        ``y0``, one ``(N, *out)`` array per output.
    """
    n = Xc.shape[0]
    y0: list[np.ndarray] = []
    for lo in range(0, n, chunk):
        outputs = _run(session, spec, layout, Xc[lo:lo + chunk])
        if not y0:
            y0 = [np.empty((n,) + out.shape[1:], dtype=out.dtype) for out in outputs]
        for y, out in zip(y0, outputs):
            if out.shape[1:] != y.shape[1:]:
                raise UnsupportedModelError(
                    f"output shape changed between batches ({y.shape[1:]} vs {out.shape[1:]})"
                )
            y[lo:lo + chunk] = out
    return y0


def _present_characters(region: np.ndarray) -> np.ndarray:
    """Index of the present character of each exactly one-hot column, else -1.

    Parameters
    ----------
    region : numpy.ndarray
        ``(N, A, Lr)`` slice of the sequences.

    Returns
    -------
    numpy.ndarray
        ``(N, Lr)`` int64 array: the character index where the column is exactly one-hot
        (entries all 0 or 1 and exactly one 1), ``-1`` otherwise.
    """
    ones = region == 1
    binary = ones | (region == 0)
    one_hot = binary.all(axis=1) & (ones.sum(axis=1) == 1)
    return np.where(one_hot, ones.argmax(axis=1), -1).astype(np.int64)


def _mutants_of_sequence(present_row: np.ndarray, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
    """Characters and positions to run for one sequence, position-major.

    Parameters
    ----------
    present_row : numpy.ndarray
        ``(Lr,)`` present character per position, ``-1`` for columns that are not one-hot.
    alphabet : int
        Alphabet size ``A``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(a_idx, i_idx)`` of every slot that needs a forward pass: all characters except the
        present one, or all ``A`` characters where no character is present.
    """
    run = np.arange(alphabet)[None, :] != present_row[:, None]  # (Lr, A)
    i_idx, a_idx = np.nonzero(run)
    return a_idx, i_idx


def _mutant_chunks(
    present: np.ndarray, alphabet: int, chunk: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield the mutants to run, at most ``chunk`` at a time.

    Parameters
    ----------
    present : numpy.ndarray
        ``(N, Lr)`` output of :func:`_present_characters`.
    alphabet : int
        Alphabet size ``A``.
    chunk : int
        Maximum mutants per yielded group.

    Yields
    ------
    tuple of numpy.ndarray
        ``(n_idx, a_idx, i_idx)``: sequence, character and region-relative position of each
        mutant. Index arrays are built one sequence at a time, so memory stays bounded by one
        sequence's mutants plus the current chunk.
    """
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    count = 0
    for n, present_row in enumerate(present):
        a_idx, i_idx = _mutants_of_sequence(present_row, alphabet)
        pos = 0
        while pos < a_idx.size:
            take = min(chunk - count, a_idx.size - pos)
            sl = slice(pos, pos + take)
            pending.append((np.full(take, n, dtype=np.int64), a_idx[sl], i_idx[sl]))
            count += take
            pos += take
            if count == chunk:
                yield _concat(pending)
                pending, count = [], 0
    if count:
        yield _concat(pending)


def _concat(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate lists of ``(n_idx, a_idx, i_idx)`` triples field by field."""
    n_idx, a_idx, i_idx = zip(*parts)
    return np.concatenate(n_idx), np.concatenate(a_idx), np.concatenate(i_idx)


def _build_mutants(
    Xc: np.ndarray, n_idx: np.ndarray, a_idx: np.ndarray, pos_idx: np.ndarray
) -> np.ndarray:
    """Materialise one chunk of mutant sequences.

    Parameters
    ----------
    Xc : numpy.ndarray
        ``(N, A, L)`` sequences.
    n_idx, a_idx, pos_idx : numpy.ndarray
        Sequence, new character and absolute position of each mutant.

    Returns
    -------
    numpy.ndarray
        ``(m, A, L)`` copies of ``Xc[n_idx]`` with column ``pos_idx`` set to ``e_{a_idx}``.
    """
    batch = Xc[n_idx]  # fancy indexing copies
    rows = np.arange(n_idx.size)
    batch[rows, :, pos_idx] = 0
    batch[rows, a_idx, pos_idx] = 1
    return batch


def _copy_reference(
    y0: list[np.ndarray], y_hat: list[np.ndarray], present: np.ndarray
) -> None:
    """Fill the slot of each present character with the unmutated prediction.

    Parameters
    ----------
    y0 : list of numpy.ndarray
        ``(N, *out)`` predictions on the unmutated sequences.
    y_hat : list of numpy.ndarray
        ``(N, A, Lr, *out)`` arrays, written in place.
    present : numpy.ndarray
        ``(N, Lr)`` present character per position, ``-1`` where none.
    """
    for n, present_row in enumerate(present):
        (i_idx,) = np.nonzero(present_row >= 0)
        a_idx = present_row[i_idx]
        for ref, y in zip(y0, y_hat):
            y[n, a_idx, i_idx] = ref[n]
