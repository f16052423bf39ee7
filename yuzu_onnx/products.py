"""What one batch of an ``ism`` job computes: the arrays each output file needs, from one ISM run.

:func:`compute` runs the session once on a batch and returns a flat ``{key: array}`` dict whose
first axis is the batch. The same function runs in the single process and in each Ray actor, so
both engines produce the same numbers from the same batches.

Keys (``OUT`` is an original output's name):

- ``OUT/y0`` ``(b, *out)`` and ``OUT/y_hat`` ``(b, A, Lr, *out)``: the raw ISM results;
- ``OUT/attributions`` ``(b, A, Lr)``: tangermeme's ISM attributions projected on the sequence,
  and ``OUT/hypothetical`` ``(b, A, Lr)``: the same before projection (every character's
  centered effect; what tfmodisco-lite calls hypothetical contributions);
- ``ohe`` ``(b, A, Lr)``: the one-hot sequence over the mutated region, channels first
  (tfmodisco-lite's layout), whatever the model's layout;
- ``track`` ``(b, Lr)``: the attribution of the observed character at each position (the sum
  of ``attributions`` over the alphabet), NaN where the column is all zero (``N``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .attributions import attributions

__all__ = ["Request", "compute", "result_file_keys"]


@dataclass(frozen=True)
class Request:
    """Which arrays :func:`compute` returns.

    Attributes
    ----------
    raw : bool
        ``OUT/y0`` and ``OUT/y_hat`` of every output.
    attr : bool
        ``OUT/attributions`` and ``OUT/hypothetical`` of every output, and ``ohe``.
    hypothetical : str or None
        An output whose ``OUT/hypothetical`` (and ``ohe``) is needed besides (``--modisco``).
    track : str or None
        The output whose observed-character attribution is returned as ``track`` (``--bigwig``).
    """

    raw: bool = True
    attr: bool = False
    hypothetical: str | None = None
    track: str | None = None

    @property
    def ohe(self) -> bool:
        """Whether ``ohe`` is returned."""
        return self.attr or self.hypothetical is not None


def _ohe(X: np.ndarray, layout: str, start: int, end: int) -> np.ndarray:
    Xc = X if layout == "NCL" else X.transpose(0, 2, 1)
    return np.ascontiguousarray(Xc[:, :, start:end], dtype=np.float32)


def compute(session, X: np.ndarray, request: Request) -> dict[str, np.ndarray]:
    """Run ISM on one batch and return the arrays ``request`` asks for (see the module's key list).

    Parameters
    ----------
    session : yuzu_onnx.session.ISMSession
        The converted model.
    X : numpy.ndarray
        ``(b, A, L)`` or ``(b, L, A)`` sequences in the session's layout; validated by the
        session (:meth:`~yuzu_onnx.session.ISMSession.validate`).
    request : Request
        What to return.

    Returns
    -------
    dict of str to numpy.ndarray
        Arrays with the batch as first axis.
    """
    pairs = dict(zip(session.output_names, session.run(X)))
    layout, start, end = session.layout, session.start, session.end
    out: dict[str, np.ndarray] = {}
    for name, (y0, y_hat) in pairs.items():
        if request.raw:
            out[f"{name}/y0"] = y0
            out[f"{name}/y_hat"] = y_hat
        if request.attr or name == request.hypothetical:
            out[f"{name}/hypothetical"] = attributions(y0, y_hat, None, hypothetical=True)
        if request.attr or name == request.track:
            projected = attributions(y0, y_hat, X, layout=layout, start=start)
            if request.attr:
                out[f"{name}/attributions"] = projected
            if name == request.track:
                observed = projected.sum(axis=1)  # one nonzero per one-hot column
                ohe = _ohe(X, layout, start, end)
                observed[ohe.sum(axis=1) == 0] = np.nan
                out["track"] = observed.astype(np.float32)
    if request.ohe:
        out["ohe"] = _ohe(X, layout, start, end)
    return out


def result_file_keys(request: Request, keys) -> list[str]:
    """The keys of :func:`compute`'s result that go to the main result file (``-o``).

    ``OUT/y0`` and ``OUT/y_hat`` with ``raw``; ``OUT/attributions``, ``OUT/hypothetical`` and
    ``ohe`` with ``attr``; never ``track`` nor the ``--modisco``-only arrays.
    """
    chosen = []
    for key in keys:
        field = key.rpartition("/")[2]
        if request.raw and field in ("y0", "y_hat"):
            chosen.append(key)
        elif request.attr and (key == "ohe" or field in ("attributions", "hypothetical")):
            chosen.append(key)
    return chosen
