"""A bigWig track of per-base attributions at genome coordinates (pyBigWig), written from loci batches.

Each locus contributes, at each position of its mutated region, the attribution of the genome's
base there (``track`` of :func:`yuzu_onnx.products.compute`). Loci arrive batch by batch, in any
order; their values wait in a temporary file on disk, next to the output, so memory does not
grow with the number of loci. On close the track is resolved and written:

- **Overlaps: the nearest center wins.** A position covered by several loci takes the value of
  the locus whose center (the BED midpoint, or start + summit) is nearest to it; at equal
  distance, the locus that comes first in the BED file.
- ``N`` positions (and positions outside the chromosome) get no value.
- Chromosome sizes (the header) are the genome's, from its ``.fai``; entries are written
  chromosome by chromosome in that order and sorted by position, as bigWig requires.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputValidationError
from .files import publish, temporary_path
from .loci import Loci

__all__ = ["BigWigWriter", "resolve_overlaps"]


def _import_pybigwig():
    try:
        import pyBigWig
    except ImportError as exc:
        raise InputValidationError("--bigwig needs pyBigWig: pip install 'yuzu-onnx[loci]'") from exc
    return pyBigWig


def resolve_overlaps(starts: np.ndarray, mids: np.ndarray, order: np.ndarray, width: int):
    """Yield ``(locus, first, last)`` pieces that tile the covered positions of one chromosome.

    Parameters
    ----------
    starts : numpy.ndarray
        ``(n,)`` first position of each locus's region.
    mids : numpy.ndarray
        ``(n,)`` center of each locus.
    order : numpy.ndarray
        ``(n,)`` rank of each locus for ties (its position in the BED file).
    width : int
        Length of every region.

    Yields
    ------
    tuple of (int, int, int)
        Locus ``k`` supplies positions ``first..last-1`` (``starts[k] <= first < last <=
        starts[k] + width``); pieces come sorted by position and do not overlap. Each covered
        position goes to the covering locus with the nearest center, ties to the lowest ``order``.
    """
    idx = np.lexsort((order, starts))
    n = len(idx)
    i = 0
    while i < n:
        # a cluster: loci whose regions chain into one covered interval
        j, end = i + 1, int(starts[idx[i]]) + width
        while j < n and int(starts[idx[j]]) < end:
            end = max(end, int(starts[idx[j]]) + width)
            j += 1
        members = idx[i:j]
        lo = int(starts[members[0]])
        owner = np.full(end - lo, -1, dtype=np.int64)
        best = np.full(end - lo, np.iinfo(np.int64).max, dtype=np.int64)
        for k in members[np.argsort(order[members], kind="stable")]:  # ties: earlier in the BED wins
            a = int(starts[k]) - lo
            dist = np.abs(np.arange(a + lo, a + lo + width, dtype=np.int64) - int(mids[k]))
            better = dist < best[a:a + width]
            best[a:a + width][better] = dist[better]
            owner[a:a + width][better] = k
        change = np.flatnonzero(np.diff(owner)) + 1
        bounds = np.concatenate([[0], change, [end - lo]])
        for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            yield int(owner[first]), lo + first, lo + last
        i = j


class BigWigWriter:
    """Collect per-locus attribution tracks and write them as one bigWig on close.

    Parameters
    ----------
    path : str or os.PathLike
        The bigWig to write (atomically: nothing is left there if the job fails).
    loci : yuzu_onnx.loci.Loci
        The loci of the job, in the order of the rows passed to :meth:`write`.
    region_start, region_end : int
        The mutated region within each window (the converted model's ``start``/``end``): row
        position ``i`` is genome position ``window start + region_start + i``.

    Notes
    -----
    Use as a context manager; :meth:`write` stores rows, leaving the context without an
    exception writes the file.
    """

    def __init__(self, path, loci: Loci, region_start: int, region_end: int):
        self.path = Path(path)
        self.loci = loci
        self.region_start = int(region_start)
        self.width = int(region_end) - int(region_start)
        self._scratch: str | None = None  # raw float32 rows, (len(loci), width), plain file I/O (no mmap,
        # so the pages do not count in the process's resident memory)
        self._fh = None

    def __enter__(self) -> BigWigWriter:
        _import_pybigwig()  # fail before any work
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._scratch = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".values", dir=self.path.parent)
        self._fh = os.fdopen(fd, "w+b")
        self._fh.truncate(len(self.loci) * self.width * 4)
        return self

    def write(self, rows: slice, track: np.ndarray) -> None:
        """Store the ``(hi - lo, width)`` observed-base attributions of loci ``rows`` (NaN: no value)."""
        if self._fh is None:
            raise RuntimeError("BigWigWriter.write outside its with block")
        lo, hi, _ = rows.indices(len(self.loci))
        track = np.ascontiguousarray(track, dtype=np.float32)
        if track.shape != (hi - lo, self.width):
            raise ValueError(f"track of shape {track.shape} does not fit loci {lo}:{hi} of width {self.width}")
        self._fh.seek(lo * self.width * 4)
        self._fh.write(track.tobytes())

    def _read(self, locus: int, offset: int, count: int) -> np.ndarray:
        self._fh.seek((locus * self.width + offset) * 4)
        return np.frombuffer(self._fh.read(count * 4), dtype=np.float32)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._fh.flush()
                tmp = temporary_path(self.path)
                try:
                    self._write_bigwig(tmp)
                    publish(tmp, self.path)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
        finally:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            if self._scratch is not None:
                Path(self._scratch).unlink(missing_ok=True)
                self._scratch = None

    def _write_bigwig(self, tmp: str) -> None:
        pyBigWig = _import_pybigwig()
        loci = self.loci
        starts = loci.start + self.region_start
        bw = pyBigWig.open(tmp, "w")
        try:
            bw.addHeader(list(zip(loci.chrom_names, loci.chrom_sizes)))
            order = np.arange(len(loci))
            for c, (chrom, size) in enumerate(zip(loci.chrom_names, loci.chrom_sizes)):
                sel = np.flatnonzero(loci.chrom == c)
                if not sel.size:
                    continue
                for k, first, last in resolve_overlaps(starts[sel], loci.mid[sel], order[sel], self.width):
                    first, last = max(first, 0), min(last, size)
                    if first >= last:
                        continue
                    locus = int(sel[k])
                    offset = first - int(starts[locus])
                    values = self._read(locus, offset, last - first).astype(np.float64)
                    self._add_runs(bw, chrom, first, values)
        finally:
            bw.close()

    @staticmethod
    def _add_runs(bw, chrom: str, first: int, values: np.ndarray) -> None:
        """Add the non-NaN runs of ``values`` (positions ``first, first + 1, ...``) as fixed-step entries."""
        valid = ~np.isnan(values)
        if not valid.any():
            return
        edges = np.flatnonzero(np.diff(np.concatenate([[0], valid.astype(np.int8), [0]])))
        for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()):
            bw.addEntries(chrom, first + a, values=values[a:b], span=1, step=1)
