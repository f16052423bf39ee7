"""Where the sequences of an ``ism`` job come from: an in-memory array or loci of a genome.

A source is a picklable object (it travels to Ray actors) with ``len(source)`` records that
hands out any contiguous range of them, one-hot encoded in the model's layout:

- :class:`ArraySource`: sequences already in memory (FASTA or ``.npy`` input);
- :class:`LociSource`: windows of a genome around BED loci, read from the genome per batch
  (pyfaidx), so that a BED of any size streams.

Both name their records (the result file's ``names``), say where record ``k`` comes from (for
messages) and give per-record fields stored beside the results (the loci's coordinates).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputValidationError
from .loci import Loci, one_hot_loci, open_genome

__all__ = ["ArraySource", "LociSource", "validate_batch"]


class ArraySource:
    """Sequences held in memory.

    Parameters
    ----------
    names : list of str
        One name per sequence.
    X : numpy.ndarray
        ``(N, A, L)`` or ``(N, L, A)`` sequences in the model's layout.
    """

    def __init__(self, names: list[str], X: np.ndarray):
        if len(names) != len(X):
            raise ValueError(f"{len(names)} names for {len(X)} sequences")
        self._names = list(names)
        self.X = X

    def __len__(self) -> int:
        return len(self._names)

    def names(self) -> list[str]:
        """The record names."""
        return list(self._names)

    def batch(self, lo: int, hi: int) -> np.ndarray:
        """Sequences ``lo..hi-1``."""
        return self.X[lo:hi]

    def describe(self, k: int) -> str:
        """``record k ('name')``."""
        return f"record {k} ({self._names[k]!r})"

    def fields(self, lo: int, hi: int, text_dtype: str = "U") -> dict[str, np.ndarray]:
        """No per-record fields besides the names."""
        return {}


class LociSource:
    """Windows of a genome centered on loci (:mod:`yuzu_onnx.loci`), read per batch.

    Parameters
    ----------
    loci : yuzu_onnx.loci.Loci
        The loci, with the window length of the model.
    genome : str or os.PathLike
        The indexed genome FASTA they refer to (opened lazily in each process that reads it,
        so the source pickles as a path).
    layout : {"NCL", "NLC"}
        The model's layout.
    """

    def __init__(self, loci: Loci, genome, layout: str = "NCL"):
        self.loci = loci
        self.genome_path = Path(os.path.abspath(genome))
        self.layout = layout
        self._genome = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_genome"] = None  # pyfaidx handles do not travel; each process opens its own
        return state

    def __len__(self) -> int:
        return len(self.loci)

    @property
    def genome(self):
        """The opened genome (pyfaidx.Fasta), opened on first use in this process."""
        if self._genome is None:
            self._genome = open_genome(self.genome_path)
        return self._genome

    def names(self) -> list[str]:
        """``chrom:start-end`` window coordinates of every locus."""
        return self.loci.names()

    def batch(self, lo: int, hi: int) -> np.ndarray:
        """One-hot windows of loci ``lo..hi-1`` in the model's layout."""
        return one_hot_loci(self.loci, self.genome, lo, hi, self.layout)

    def describe(self, k: int) -> str:
        """``BED: line N (chrom:start-end)``."""
        return self.loci.describe(k)

    def fields(self, lo: int, hi: int, text_dtype: str = "U") -> dict[str, np.ndarray]:
        """The window coordinates of loci ``lo..hi-1``: ``chrom`` (text), ``start``, ``end`` (int64).

        ``text_dtype`` is ``"U"`` (numpy unicode, for .npz) or ``"S"`` (ASCII bytes, for HDF5,
        which has no numpy unicode type); the width is that of the longest chromosome name.
        """
        width = max(len(n) for n in self.loci.chrom_names)
        chrom = np.array([self.loci.chrom_names[c] for c in self.loci.chrom[lo:hi].tolist()],
                         dtype=f"{text_dtype}{width}")
        return {"chrom": chrom, "start": self.loci.start[lo:hi].copy(), "end": self.loci.end[lo:hi].copy()}


def validate_batch(session, X: np.ndarray, source, lo: int) -> np.ndarray:
    """``session.validate(X)``, with an error naming the record (``source.describe``) that fails.

    ``X`` holds records ``lo..lo+len(X)-1`` of ``source``. The session's message numbers the
    sequence within the batch; the record it names here is the one in the input.

    Raises
    ------
    InputValidationError
        ``"<record>: <the session's message>"`` for the first record that does not fit.
    """
    try:
        return session.validate(X)
    except InputValidationError:
        for k in range(len(X)):
            try:
                session.validate(X[k:k + 1])
            except InputValidationError as exc:
                message = str(exc).removeprefix("sequence 0, ")
                raise InputValidationError(f"{source.describe(lo + k)}: {message}") from exc
        raise
