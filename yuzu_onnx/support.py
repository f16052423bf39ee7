"""Support intervals: which mutated input positions can change each position of a tensor.

For a tensor with a sequence axis of length ``L_t`` the support is a pair of integer arrays
``lo, hi`` of length ``L_t``: position ``j`` can be changed by a mutation at any region-relative
input position in ``lo[j]..hi[j]`` (inclusive) and by no other. ``lo[j] > hi[j]`` marks a position
no mutation reaches. Everything here is plain numpy interval arithmetic, run at conversion time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EMPTY_LO = np.iinfo(np.int64).max // 4


@dataclass(frozen=True)
class Support:
    """Hull of mutated input positions reaching each position of a sequence axis.

    Attributes
    ----------
    lo, hi : np.ndarray
        int64 arrays of the tensor's sequence length; ``lo > hi`` where no mutation reaches.
    """

    lo: np.ndarray
    hi: np.ndarray

    @classmethod
    def for_input(cls, length: int, start: int, end: int) -> "Support":
        """Support of the sequence input itself: position ``i`` is reached by itself only."""
        pos = np.arange(length, dtype=np.int64)
        inside = (pos >= start) & (pos < end)
        lo = np.where(inside, pos - start, _EMPTY_LO)
        hi = np.where(inside, pos - start, -1)
        return cls(lo, hi)

    @property
    def length(self) -> int:
        return int(self.lo.shape[0])

    @property
    def widths(self) -> np.ndarray:
        """Number of mutated positions reaching each position (0 where none)."""
        return np.maximum(self.hi - self.lo + 1, 0)

    @property
    def max_width(self) -> int:
        return int(self.widths.max(initial=0))

    def slots(self, subs_per_position: int) -> int:
        """``K``: the most mutants that reach any one position."""
        return subs_per_position * self.max_width

    def first_mutant(self, subs_per_position: int) -> np.ndarray:
        """Index of the first mutant reaching each position (0 where none reaches)."""
        return np.where(self.widths > 0, self.lo * subs_per_position, 0)

    def mutant_range(self, subs_per_position: int) -> tuple[np.ndarray, np.ndarray]:
        """``(first, stop)``: the mutants reaching each position are ``first <= m < stop``
        (an empty range where none reaches)."""
        first = self.first_mutant(subs_per_position)
        return first, first + self.widths * subs_per_position

    def union(self, other: "Support") -> "Support":
        """Support of an elementwise combination of two tensors of the same length."""
        return Support(np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi))

    def through_window(self, out_length: int, stride: int, pad_begin: int, dilation: int,
                       kernel: int) -> "Support":
        """Support after a sliding-window op (Conv, pooling) along the sequence axis.

        Output position ``j`` reads input positions ``j*stride - pad_begin + t*dilation`` for
        ``t`` in ``0..kernel-1``; positions outside the input (padding) carry no mutation.
        """
        j = np.arange(out_length, dtype=np.int64)[:, None]
        taps = j * stride - pad_begin + np.arange(kernel, dtype=np.int64)[None, :] * dilation
        valid = (taps >= 0) & (taps < self.length)
        clipped = np.clip(taps, 0, max(self.length - 1, 0))
        lo = np.where(valid, self.lo[clipped], _EMPTY_LO).min(axis=1)
        hi = np.where(valid, self.hi[clipped], -1).max(axis=1)
        empty = lo > hi
        return Support(np.where(empty, _EMPTY_LO, lo), np.where(empty, -1, hi))

    def through_transposed_window(self, out_length: int, stride: int, pad_begin: int, dilation: int,
                                  kernel: int) -> "Support":
        """Support after a transposed conv: input ``i`` adds into outputs
        ``i*stride - pad_begin + t*dilation``."""
        lo = np.full(out_length, _EMPTY_LO, dtype=np.int64)
        hi = np.full(out_length, -1, dtype=np.int64)
        i = np.arange(self.length, dtype=np.int64)
        for t in range(kernel):
            j = i * stride - pad_begin + t * dilation
            ok = (j >= 0) & (j < out_length) & (self.widths > 0)
            np.minimum.at(lo, j[ok], self.lo[ok])
            np.maximum.at(hi, j[ok], self.hi[ok])
        return Support(lo, hi)

    def mutant_position_pairs(self, subs_per_position: int) -> tuple[np.ndarray, np.ndarray]:
        """All ``(mutant, position)`` pairs where the mutant reaches the position.

        Returns
        -------
        mutants, positions : np.ndarray
            Two int64 arrays of equal length, ordered by position then mutant.
        """
        counts = self.widths * subs_per_position
        positions = np.repeat(np.arange(self.length, dtype=np.int64), counts)
        offsets = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        mutants = self.first_mutant(subs_per_position)[positions] + offsets
        return mutants, positions
