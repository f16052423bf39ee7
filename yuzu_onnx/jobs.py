"""The batches of an ``ism`` job and the single-process engine that runs them.

A job splits the records of a source (:mod:`yuzu_onnx.sources`) into consecutive batches of
``batch_size`` (the last may be smaller); each batch is read, validated and computed by
:func:`run_batch`. The single-process engine (:func:`iter_local`) runs them in order; the Ray
engine (:mod:`yuzu_onnx.ray_engine`) runs the same batches with the same function in its
actors, so that both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .products import Request, compute
from .sources import validate_batch

__all__ = ["batch_bounds", "run_batch", "iter_local"]


def batch_bounds(total: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]``: records ``0..total-1`` in consecutive batches of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [(lo, min(total, lo + batch_size)) for lo in range(0, total, batch_size)]


def run_batch(session, source, request: Request, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Read records ``lo..hi-1`` of ``source``, validate them, and compute what ``request`` asks for.

    Raises
    ------
    InputValidationError
        When a record does not fit the model; the message names the record
        (:func:`yuzu_onnx.sources.validate_batch`).
    """
    X = validate_batch(session, source.batch(lo, hi), source, lo)
    return compute(session, X, request)


def iter_local(session, source, request: Request, batch_size: int | None = None
               ) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """Run the job in this process: yield ``(rows, arrays)`` batch by batch, in order.

    Parameters
    ----------
    session : yuzu_onnx.session.ISMSession
        The converted model.
    source : ArraySource or LociSource
        The records.
    request : yuzu_onnx.products.Request
        What to compute.
    batch_size : int, optional
        Records per batch; default the session's (after its memory budget).
    """
    for lo, hi in batch_bounds(len(source), batch_size or session.batch_size):
        yield slice(lo, hi), run_batch(session, source, request, lo, hi)
