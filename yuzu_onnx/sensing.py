"""Gaussian sensing (the paper's compressed probes), shift-structured so one pseudo-inverse
serves every position.

With a circulant design ``A[p, m] = a[(p - m) mod P]`` the columns of the ``K`` mutants that
reach a position starting at mutant ``f`` are the rows of one shared ``P x K`` block ``B``
rotated by ``f``, so decoding is: rotate the probe axis by ``f``, multiply by ``pinv(B)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: float32 unit roundoff
UNIT_ROUNDOFF = 2.0**-24
#: default bound on the predicted relative error of gaussian decoding (the exactness bound of
#: structured sensing's tests)
DEFAULT_TOLERANCE = 1e-4
#: probe counts tried per conv before refusing: need, then x1.25 each step
GROWTH, MAX_STEPS = 1.25, 6


def circulant_vector(probes: int, seed: int, node_index: int) -> np.ndarray:
    """Gaussian generating vector ``a`` of one conv's design; reproducible from the seed."""
    rng = np.random.default_rng([seed, node_index])
    return rng.standard_normal(probes)


def circulant_matrix(a: np.ndarray) -> np.ndarray:
    """``C[p, q] = a[(p - q) mod P]``: mixes a probe tensor into Gaussian probes."""
    p = a.shape[0]
    idx = (np.arange(p)[:, None] - np.arange(p)[None, :]) % p
    return a[idx]


def decoder(a: np.ndarray, slots: int) -> tuple[np.ndarray, float]:
    """Least-squares decoder ``pinv(B)`` (``K x P``) and the condition number of ``B``.

    ``B[p, k] = a[(p - k) mod P]`` for ``k < K``: the design restricted to the mutants of one
    position, after rotating the probe axis to the first of them.
    """
    p = a.shape[0]
    idx = (np.arange(p)[:, None] - np.arange(slots)[None, :]) % p
    block = a[idx]
    sv = np.linalg.svd(block, compute_uv=False)
    cond = float(sv[0] / sv[-1]) if sv[-1] > 0 else float("inf")
    return np.linalg.pinv(block), cond


def predicted_error(cond: float, probes: int, reduction: int) -> float:
    """Predicted float32 error of one gaussian conv's decoded deltas, relative to their size.

    The mixed probes and the conv outputs carry rounding errors of about ``u * sqrt(n)`` of
    their magnitude for reductions of length ``n`` (the mixing MatMul over ``P`` probes, the
    conv over ``C_in * k`` inputs); least squares amplifies relative errors by at most the
    condition number of the design block.
    """
    return cond * UNIT_ROUNDOFF * (math.sqrt(probes) + math.sqrt(max(reduction, 1)))


@dataclass(frozen=True)
class GaussianDesign:
    """A sized gaussian design for one conv: probes, decoder and its predicted error."""

    probes: int
    vector: np.ndarray  # generating vector a (length P)
    pinv: np.ndarray  # K x P least-squares decoder
    cond: float
    error: float  # predicted relative float32 error


def size_design(need: int, slots: int, seed: int, node_index: int, reduction: int,
                tolerance: float) -> GaussianDesign | None:
    """Smallest design of at least ``need`` probes whose predicted error meets ``tolerance``.

    Tries ``need`` then 1.25x more probes at each step (a taller random block is better
    conditioned). Returns None when none of the tried sizes meets the tolerance.
    """
    probes = need
    for _ in range(MAX_STEPS):
        a = circulant_vector(probes, seed, node_index)
        pinv, cond = decoder(a, slots)
        err = predicted_error(cond, probes, reduction)
        if err <= tolerance:
            return GaussianDesign(probes, a, pinv, cond, err)
        probes = max(probes + 1, math.ceil(probes * GROWTH))
    return None
