"""Gaussian sensing (the paper's compressed probes), shift-structured so one pseudo-inverse
serves every position.

With a circulant design ``A[p, m] = a[(p - m) mod P]`` the columns of the ``K`` mutants that
reach a position starting at mutant ``f`` are the rows of one shared ``P x K`` block ``B``
rotated by ``f``, so decoding is: rotate the probe axis by ``f``, multiply by ``pinv(B)``.
"""

from __future__ import annotations

import numpy as np


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
