"""Per-character attributions from ISM outputs (tangermeme-style)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InputValidationError

__all__ = ["attributions"]


def _target_indices(target, size: int) -> np.ndarray | None:
    """Validated flat output indices, or ``None`` for all outputs."""
    if target is None:
        return None
    if isinstance(target, (bool, np.bool_)):
        raise InputValidationError(f"target must be an int or a sequence of ints, not {target!r}")
    idx = np.asarray(target)
    if idx.size == 0:
        raise InputValidationError("target is an empty sequence; pass None to average over all outputs")
    if idx.ndim > 1 or idx.dtype.kind not in "iu":
        raise InputValidationError(f"target must be an int or a sequence of ints, got {target!r}")
    idx = idx.reshape(-1).astype(np.int64)
    bad = idx[(idx < -size) | (idx >= size)]
    if bad.size:
        raise InputValidationError(f"target index {int(bad[0])} is out of range for {size} output element(s) "
                                   "per sequence (indices run over the flattened output dims)")
    return idx % size


def attributions(y0: np.ndarray, y_hat: np.ndarray, X: np.ndarray | None, target: int | Sequence[int] | None = None,
                 hypothetical: bool = False, layout: str = "NCL", start: int = 0) -> np.ndarray:
    r"""ISM attributions: the centered effect of each substitution, projected on the sequence.

    With ``delta[n, a, i, k] = y_hat[n, a, i, k] - y0[n, k]`` (output dims flattened to ``k``)
    and ``T`` the selected output indices (``target``; all of them by default),

    .. math::

        d[n, a, i] = \frac{1}{|T|} \sum_{k \in T} \mathrm{delta}[n, a, i, k]

        h[n, a, i] = d[n, a, i] - \frac{1}{A} \sum_{b} d[n, b, i]

        \mathrm{attr}[n, a, i] = h[n, a, i] \cdot X[n, a, \mathrm{start} + i]

    ``h`` are the *hypothetical* attributions (``hypothetical=True``): at each position they
    sum to zero over the alphabet. Without ``hypothetical`` only the observed character of a
    one-hot column keeps its value, which is then minus the mean effect of substituting that
    position (``h`` at the observed character, i.e. how much the observed character is better
    than the average character). Since ``y0`` is constant over the alphabet, centering cancels
    it; it is subtracted anyway so the averaging works on small differences.

    Parameters
    ----------
    y0 : numpy.ndarray
        ``(N, *out)`` predictions on the unmutated sequences.
    y_hat : numpy.ndarray
        ``(N, A, Lr, *out)`` ISM predictions (``y_hat[n, a, i]``: position ``start + i`` set to
        character ``a``), as returned by :func:`yuzu_onnx.run_ism` or
        :meth:`yuzu_onnx.session.ISMSession.run`.
    X : numpy.ndarray or None
        The sequences, ``(N, A, L)`` (``layout="NCL"``) or ``(N, L, A)`` (``"NLC"``). May be
        ``None`` when ``hypothetical`` is true.
    target : int or sequence of int, optional
        Output element(s) to explain, as indices into the flattened ``out`` dims (negative
        indices count from the end). Several indices are averaged. Default: the average over
        all output elements.
    hypothetical : bool
        Return the centered effects of every character instead of projecting on ``X``.
    layout : {"NCL", "NLC"}
        Layout of ``X``. The result is always ``(N, A, Lr)``.
    start : int
        First mutated position: ``y_hat[:, :, i]`` belongs to position ``start + i`` of ``X``.

    Returns
    -------
    numpy.ndarray
        ``(N, A, Lr)`` float32 attributions.

    Raises
    ------
    InputValidationError
        If the shapes of ``y0``, ``y_hat`` and ``X`` do not fit together, the region does not fit
        in ``X``, or ``target`` is not a valid index.
    """
    y0 = np.asarray(y0)
    y_hat = np.asarray(y_hat)
    if layout not in ("NCL", "NLC"):
        raise InputValidationError(f"layout must be 'NCL' or 'NLC', not {layout!r}")
    if y0.ndim < 1 or y_hat.ndim != y0.ndim + 2:
        raise InputValidationError(f"y_hat must have shape (N, A, Lr, *out) for y0 of shape (N, *out); "
                                   f"got y0 {y0.shape}, y_hat {y_hat.shape}")
    n, a, lr = y_hat.shape[:3]
    if y0.shape[0] != n or y_hat.shape[3:] != y0.shape[1:]:
        raise InputValidationError(f"y0 {y0.shape} does not match y_hat {y_hat.shape} "
                                   f"(expected y0 of shape {(n,) + y_hat.shape[3:]})")
    size = int(np.prod(y0.shape[1:], dtype=np.int64))
    idx = _target_indices(target, size)

    flat_hat = y_hat.reshape(n, a, lr, size)
    flat_y0 = y0.reshape(n, 1, 1, size)
    if idx is not None:
        flat_hat = flat_hat[..., idx]
        flat_y0 = flat_y0[..., idx]
    delta = flat_hat.astype(np.float64) - flat_y0.astype(np.float64)
    d = delta.mean(axis=-1)  # (N, A, Lr)
    h = d - d.mean(axis=1, keepdims=True)
    if hypothetical:
        return h.astype(np.float32)

    if X is None:
        raise InputValidationError("X is required unless hypothetical=True")
    X = np.asarray(X)
    if X.ndim != 3:
        raise InputValidationError(f"X must be 3-D ({layout}), got shape {X.shape}")
    Xc = X if layout == "NCL" else X.transpose(0, 2, 1)
    if Xc.shape[0] != n or Xc.shape[1] != a:
        raise InputValidationError(f"X of shape {X.shape} ({layout}) does not match y_hat {y_hat.shape}: "
                                   f"expected {n} sequences over an alphabet of {a}")
    if not 0 <= start <= Xc.shape[2] - lr:
        raise InputValidationError(f"region start={start}, length {lr} does not fit sequences of length "
                                   f"{Xc.shape[2]}")
    return (h * Xc[:, :, start:start + lr]).astype(np.float32)
