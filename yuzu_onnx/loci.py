"""Genomic loci as model inputs: BED/narrowPeak parsing and one-hot windows cut from an indexed genome.

A locus becomes the window of the model's length ``L`` centered as tangermeme's
``extract_loci`` centers it: ``mid = start + (end - start) // 2`` (or ``start + summit`` for a
narrowPeak with ``summits=True``), window ``[mid - L // 2, mid - L // 2 + L)``. Unlike
tangermeme, a window that runs off a chromosome is kept: its positions before 0 or past the
chromosome's end are ``N`` (all-zero columns).

The genome is read with pyfaidx (random access through the ``.fai`` index, created next to the
FASTA when missing); only the windows of the current batch are ever in memory.

>>> genome = open_genome("hg38.fa")                                   # doctest: +SKIP
>>> loci = read_loci("peaks.narrowPeak", genome_sizes(genome), 2114, summits=True)  # doctest: +SKIP
>>> for rows, X in iter_windows(loci, genome, batch_size=64):         # doctest: +SKIP
...     ...                                                            # X: (b, 4, 2114) float32
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputValidationError
from .seqio import AMBIGUITY

__all__ = ["Loci", "read_loci", "open_genome", "genome_sizes", "fetch_window", "encode_windows",
           "one_hot_loci", "iter_windows", "ALPHABET"]

#: The alphabet of genome windows, in one-hot channel order.
ALPHABET = "ACGT"
#: Lines of a BED file that hold no locus (besides blank lines).
_HEADER_PREFIXES = ("#", "track", "browser")
#: 0-based column of a narrowPeak's summit offset (its 10th column).
_SUMMIT_COLUMN = 9


@dataclass(frozen=True)
class Loci:
    """Loci of a BED file, reduced to what the windows need (a few bytes per locus).

    Attributes
    ----------
    path : pathlib.Path
        The BED file (for messages).
    length : int
        Window length ``L`` (the model's input length).
    chrom_names : tuple of str
        The genome's chromosomes, in the order of its index (``.fai``).
    chrom_sizes : tuple of int
        Their lengths.
    chrom : numpy.ndarray
        ``(N,)`` int32: index into ``chrom_names`` of each locus.
    mid : numpy.ndarray
        ``(N,)`` int64: the center of each locus (``start + (end - start) // 2`` or
        ``start + summit``).
    line : numpy.ndarray
        ``(N,)`` int64: the 1-based line of each locus in ``path``.
    """

    path: Path
    length: int
    chrom_names: tuple[str, ...]
    chrom_sizes: tuple[int, ...]
    chrom: np.ndarray
    mid: np.ndarray
    line: np.ndarray

    def __len__(self) -> int:
        return int(self.mid.shape[0])

    @property
    def start(self) -> np.ndarray:
        """``(N,)`` int64 first window position, ``mid - L // 2`` (may be negative)."""
        return self.mid - self.length // 2

    @property
    def end(self) -> np.ndarray:
        """``(N,)`` int64 one past the last window position, ``start + L`` (may pass the chromosome end)."""
        return self.start + self.length

    def chrom_of(self, k: int) -> str:
        """The chromosome name of locus ``k``."""
        return self.chrom_names[int(self.chrom[k])]

    def names(self, lo: int = 0, hi: int | None = None) -> list[str]:
        """Record names ``chrom:start-end`` (window coordinates, 0-based half-open) of loci ``lo..hi-1``."""
        hi = len(self) if hi is None else hi
        starts, ends = self.start[lo:hi], self.end[lo:hi]
        return [f"{self.chrom_names[c]}:{s}-{e}" for c, s, e in zip(self.chrom[lo:hi].tolist(), starts.tolist(),
                                                                     ends.tolist())]

    def describe(self, k: int) -> str:
        """``BED: line N (chrom:start-end)``: where locus ``k`` comes from, for messages."""
        return f"{self.path}: line {int(self.line[k])} ({self.names(k, k + 1)[0]})"


# ----------------------------------------------------------------------------- genome


def open_genome(path):
    """Open an indexed FASTA genome for random access (pyfaidx), creating its ``.fai`` if missing.

    Parameters
    ----------
    path : str or os.PathLike
        A FASTA file, plain or bgzip-compressed. Case is kept (soft-masked lower case is read
        as its base by :func:`encode_windows`).

    Returns
    -------
    pyfaidx.Fasta
        Records return plain strings (``as_raw``); nothing is loaded beyond the index.

    Raises
    ------
    InputValidationError
        If the file is missing, pyfaidx is not installed, or the file cannot be indexed
        (lines of unequal length, a ``.fai`` that cannot be written, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise InputValidationError(f"genome file not found: {path}")
    try:
        import pyfaidx
    except ImportError as exc:
        raise InputValidationError("reading loci from a genome needs pyfaidx: pip install 'yuzu-onnx[loci]'") \
            from exc
    try:
        return pyfaidx.Fasta(str(path), as_raw=True, sequence_always_upper=False, read_long_names=False)
    except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat, OSError, ValueError) as exc:
        raise InputValidationError(f"{path}: cannot index the genome FASTA (pyfaidx): {exc}") from exc


def genome_sizes(genome) -> dict[str, int]:
    """``{chromosome: length}`` of an opened genome, in the order of its index (``.fai``)."""
    return {name: len(record) for name, record in genome.records.items()}


def fetch_window(genome, chrom: str, start: int, end: int) -> str:
    """The genome's text at ``chrom:[start, end)``, with ``N`` for positions before 0 or past the end.

    Parameters
    ----------
    genome : pyfaidx.Fasta
        From :func:`open_genome`.
    chrom : str
        A chromosome of ``genome``.
    start, end : int
        0-based half-open window; it may extend past either end of the chromosome.

    Returns
    -------
    str
        ``end - start`` characters, case as stored.
    """
    record = genome[chrom]
    size = len(record)
    lo, hi = max(0, start), min(size, end)
    inner = record[lo:hi] if hi > lo else ""
    return "N" * (min(lo, end) - start) + inner + "N" * (end - max(hi, start))


def _lookup() -> np.ndarray:
    """Byte -> channel of :data:`ALPHABET` (either case); 4 for ambiguity codes; 255 for invalid."""
    table = np.full(256, 255, dtype=np.uint8)
    for ch in AMBIGUITY:
        table[ord(ch)] = table[ord(ch.lower())] = len(ALPHABET)
    for i, ch in enumerate(ALPHABET):
        table[ord(ch)] = table[ord(ch.lower())] = i
    return table


_TABLE = _lookup()
_EYE = np.vstack([np.eye(len(ALPHABET), dtype=np.float32), np.zeros((1, len(ALPHABET)), dtype=np.float32)])


def encode_windows(texts: list[str], layout: str = "NCL", label: Callable[[int], str] | None = None) -> np.ndarray:
    """One-hot encode equal-length genome windows.

    ``A, C, G, T`` in either case (soft-masked lower case is its base) set one channel; ``N``
    and the other IUPAC ambiguity codes give an all-zero column.

    Parameters
    ----------
    texts : list of str
        Windows of equal length ``L``.
    layout : {"NCL", "NLC"}
        ``(N, 4, L)`` or ``(N, L, 4)``.
    label : callable, optional
        ``label(k)`` names window ``k`` in error messages (default ``"window k"``).

    Returns
    -------
    numpy.ndarray
        float32 one-hot array in ``layout``.

    Raises
    ------
    InputValidationError
        For a character that is neither a base nor an ambiguity code; the message names the
        window and the position in it.
    """
    if layout not in ("NCL", "NLC"):
        raise ValueError(f"layout must be 'NCL' or 'NLC', not {layout!r}")
    length = len(texts[0]) if texts else 0
    out = np.empty((len(texts), length, len(ALPHABET)), dtype=np.float32)
    for k, text in enumerate(texts):
        raw = text.encode("ascii", errors="replace")  # a non-ASCII character becomes '?', an invalid code
        codes = _TABLE[np.frombuffer(raw, dtype=np.uint8)]
        bad = np.flatnonzero(codes == 255)
        if bad.size:
            pos = int(bad[0])
            where = label(k) if label is not None else f"window {k}"
            raise InputValidationError(f"{where}: invalid character {text[pos]!r} at window position {pos}; "
                                       f"expected one of {ALPHABET} (any case) or an ambiguity code ({AMBIGUITY})")
        out[k] = _EYE[codes]
    return np.ascontiguousarray(out.transpose(0, 2, 1)) if layout == "NCL" else out


def one_hot_loci(loci: Loci, genome, lo: int, hi: int, layout: str = "NCL") -> np.ndarray:
    """One-hot windows of loci ``lo..hi-1``: ``(hi - lo, 4, L)`` (NCL) or ``(hi - lo, L, 4)`` float32."""
    starts, ends = loci.start[lo:hi].tolist(), loci.end[lo:hi].tolist()
    texts = [fetch_window(genome, loci.chrom_of(k), s, e) for k, s, e in zip(range(lo, hi), starts, ends)]
    return encode_windows(texts, layout, label=lambda k: f"{loci.describe(lo + k)} in {genome.filename}")


def iter_windows(loci: Loci, genome, batch_size: int, layout: str = "NCL") -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(rows, X)`` batch by batch: ``rows`` a slice of loci, ``X`` their one-hot windows.

    Only one batch of windows is held at a time (the genome is read per window).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for lo in range(0, len(loci), batch_size):
        hi = min(len(loci), lo + batch_size)
        yield slice(lo, hi), one_hot_loci(loci, genome, lo, hi, layout)


# ----------------------------------------------------------------------------- BED


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _int_field(fields: list[str], col: int, what: str, where: str) -> int:
    try:
        return int(fields[col])
    except ValueError:
        raise InputValidationError(f"{where}: {what} (column {col + 1}) is not an integer: {fields[col]!r}") from None


def read_loci(path, sizes: Mapping[str, int], length: int, summits: bool = False) -> Loci:
    """Read the loci of a BED3+ or narrowPeak file and center a window of ``length`` on each.

    Parameters
    ----------
    path : str or os.PathLike
        Tab-separated BED (optionally ``.gz``): chromosome, start, end (0-based, half-open),
        further columns ignored; narrowPeak's 10th column is the summit offset from start.
        Blank lines and ``#``, ``track`` and ``browser`` lines are skipped.
    sizes : mapping of str to int
        The genome's chromosome lengths (:func:`genome_sizes`), in index order.
    length : int
        Window length ``L`` (the model's length).
    summits : bool
        Center on ``start + summit`` (column 10) instead of ``start + (end - start) // 2``.

    Returns
    -------
    Loci
        One entry per locus line, in file order.

    Raises
    ------
    InputValidationError
        Naming the file and line: fewer than 3 columns (10 with ``summits``), a non-integer
        or negative coordinate, ``end < start``, a summit outside ``[0, end - start]``
        (narrowPeak's ``-1``, "no summit", included), or a chromosome that is not in the
        genome. A file without any locus is refused too.
    """
    path = Path(path)
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not path.is_file():
        raise InputValidationError(f"BED file not found: {path}")
    names = list(sizes)
    index = {name: i for i, name in enumerate(names)}
    need = _SUMMIT_COLUMN + 1 if summits else 3
    chrom: list[int] = []
    mid: list[int] = []
    lines: list[int] = []
    try:
        with _open_text(path) as fh:
            for lineno, raw in enumerate(fh, 1):
                text = raw.rstrip("\r\n")
                if not text.strip() or text.lstrip().startswith(_HEADER_PREFIXES):
                    continue
                fields = text.split("\t") if "\t" in text else text.split()
                where = f"{path}: line {lineno}"
                if len(fields) < need:
                    what = "10 columns (narrowPeak) for --summits" if summits else "3 columns (chrom, start, end)"
                    raise InputValidationError(f"{where}: {len(fields)} column(s); a locus needs {what}")
                name = fields[0]
                start = _int_field(fields, 1, "start", where)
                end = _int_field(fields, 2, "end", where)
                if start < 0 or end < start:
                    raise InputValidationError(f"{where}: invalid interval start={start}, end={end} "
                                               "(need 0 <= start <= end)")
                if name not in index:
                    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                    raise InputValidationError(f"{where}: chromosome {name!r} is not in the genome "
                                               f"({len(names)} sequences: {shown})")
                if summits:
                    summit = _int_field(fields, _SUMMIT_COLUMN, "summit", where)
                    if not 0 <= summit <= end - start:
                        raise InputValidationError(
                            f"{where}: summit {summit} is outside the peak (0..{end - start}); narrowPeak's -1 "
                            "means no summit was called: drop --summits to center on the peak's middle")
                    center = start + summit
                else:
                    center = start + (end - start) // 2
                chrom.append(index[name])
                mid.append(center)
                lines.append(lineno)
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise InputValidationError(f"{path}: cannot read as BED: {exc}") from exc
    if not lines:
        raise InputValidationError(f"{path}: no loci (only blank, comment, track or browser lines)")
    return Loci(path=path, length=int(length), chrom_names=tuple(names), chrom_sizes=tuple(int(sizes[n]) for n in names),
                chrom=np.asarray(chrom, dtype=np.int32), mid=np.asarray(mid, dtype=np.int64),
                line=np.asarray(lines, dtype=np.int64))
