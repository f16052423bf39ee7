"""tfmodisco-lite's two inputs, written batch by batch: ``PREFIX.ohe.npz`` and ``PREFIX.attr.npz``.

``modisco motifs -s PREFIX.ohe.npz -a PREFIX.attr.npz`` reads, from each ``.npz``, the array
under the key ``arr_0`` (what ``np.savez(path, array)`` writes), of shape ``(N, 4, L)``:

- ``PREFIX.ohe.npz``: the one-hot sequences over the mutated region (``ohe`` of
  :func:`yuzu_onnx.products.compute`), float32;
- ``PREFIX.attr.npz``: the *hypothetical* attributions of one output (``OUT/hypothetical``: the
  centered ISM effect of every character at every position), float32, as modisco's ``-a``
  asks ("the attributions for all nucleotides at all positions").

Both are streamed with :class:`yuzu_onnx.seqio.ResultWriter` (rows on disk, atomic rename).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .seqio import ResultWriter

__all__ = ["ModiscoWriter", "modisco_paths"]

#: The key modisco-lite reads from each .npz.
MODISCO_KEY = "arr_0"


def modisco_paths(prefix) -> tuple[Path, Path]:
    """``(PREFIX.ohe.npz, PREFIX.attr.npz)``."""
    prefix = str(prefix)
    return Path(prefix + ".ohe.npz"), Path(prefix + ".attr.npz")


class ModiscoWriter:
    """Write the sequences and hypothetical attributions of one output for tfmodisco-lite.

    Parameters
    ----------
    prefix : str or os.PathLike
        Files ``PREFIX.ohe.npz`` and ``PREFIX.attr.npz`` are written.
    total : int
        Number of sequences.
    output : str
        The model output whose attributions are written (key ``OUTPUT/hypothetical`` of the
        batches passed to :meth:`write`).
    """

    def __init__(self, prefix, total: int, output: str):
        ohe_path, attr_path = modisco_paths(prefix)
        self.output = output
        self._ohe = ResultWriter(ohe_path, total)
        self._attr = ResultWriter(attr_path, total)

    @property
    def paths(self) -> tuple[Path, Path]:
        return self._ohe.path, self._attr.path

    def __enter__(self) -> ModiscoWriter:
        self._ohe.__enter__()
        try:
            self._attr.__enter__()
        except BaseException as exc:
            self._ohe.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def write(self, rows: slice, batch: Mapping[str, np.ndarray]) -> None:
        """Store rows ``rows`` from a batch holding ``ohe`` and ``OUTPUT/hypothetical``."""
        self._ohe.write(rows, {MODISCO_KEY: batch["ohe"]})
        self._attr.write(rows, {MODISCO_KEY: batch[f"{self.output}/hypothetical"]})

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._ohe.__exit__(exc_type, exc, tb)
        except BaseException as err:  # the first file failed: drop the second too
            self._attr.__exit__(type(err), err, err.__traceback__)
            raise
        try:
            self._attr.__exit__(exc_type, exc, tb)
        except BaseException:
            self._ohe.path.unlink(missing_ok=True)  # published a moment ago: no half pair is left
            raise
