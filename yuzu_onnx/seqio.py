"""Sequence input (FASTA, one-hot ``.npy``) and streaming result output (``.npz``, ``.h5``)."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from .errors import InputValidationError
from .files import publish, temporary_path

__all__ = ["read_fasta", "one_hot", "random_one_hot", "load_sequences", "ResultWriter", "FASTA_SUFFIXES",
           "OUTPUT_SUFFIXES"]

#: IUPAC ambiguity codes; they encode as an all-zero column, like N.
AMBIGUITY = "NRYKMSWBDHV"
FASTA_SUFFIXES = (".fa", ".fasta", ".fna")
OUTPUT_SUFFIXES = (".npz", ".h5", ".hdf5")


# ----------------------------------------------------------------------------- input


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_fasta(path) -> list[tuple[str, str]]:
    """Read a (multi-record, optionally gzipped) FASTA file into ``[(name, sequence), ...]``.

    The name is the first word of the header line. Sequence lines are concatenated with all
    whitespace removed; their case is kept. Blank lines and ``;`` comment lines are ignored.

    Raises
    ------
    InputValidationError
        If sequence text precedes the first ``>`` header, or the file holds no record.
    """
    path = Path(path)
    records: list[tuple[str, list[str]]] = []
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith(";"):
                    continue
                if line.startswith(">"):
                    words = line[1:].split()
                    records.append((words[0] if words else f"record{len(records)}", []))
                elif not records:
                    raise InputValidationError(
                        f"{path}: line {lineno}: sequence data before the first '>' header; "
                        "is this a FASTA file?")
                else:
                    records[-1][1].append("".join(line.split()))
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise InputValidationError(f"{path}: cannot read as FASTA: {exc}") from exc
    if not records:
        raise InputValidationError(f"{path}: no FASTA records (no line starting with '>')")
    return [(name, "".join(parts)) for name, parts in records]


def _lookup(alphabet: str) -> np.ndarray:
    """Byte -> index in ``alphabet``; ``len(alphabet)`` for ambiguity codes; 255 for invalid."""
    table = np.full(256, 255, dtype=np.uint8)
    for ch in AMBIGUITY:
        table[ord(ch)] = len(alphabet)
    for i, ch in enumerate(alphabet):
        table[ord(ch)] = i
    return table


def one_hot(seqs: Iterable, length: int, alphabet: str = "ACGT", center: bool = False,
            layout: str = "NCL") -> np.ndarray:
    """One-hot encode sequences into a float32 ``(N, A, length)`` (NCL) or ``(N, length, A)`` array.

    ``seqs`` holds strings or ``(name, sequence)`` pairs (names only appear in error messages).
    Characters are upper-cased; ``N`` and the other IUPAC ambiguity codes (``RYKMSWBDHV``)
    become all-zero columns. With ``center=True`` a longer sequence is cut to its central
    ``length`` characters (offset ``(len - length) // 2``).

    Raises
    ------
    InputValidationError
        For a character outside the alphabet and the ambiguity codes, or a sequence whose length
        is not ``length`` (and that ``center`` cannot fix).
    """
    if layout not in ("NCL", "NLC"):
        raise ValueError(f"layout must be 'NCL' or 'NLC', not {layout!r}")
    alphabet = alphabet.upper()
    if len(set(alphabet)) != len(alphabet) or not alphabet.isascii() or set(alphabet) & set(AMBIGUITY):
        raise ValueError(f"invalid alphabet {alphabet!r}")
    records = [(r if isinstance(r, tuple) else (f"#{i}", r)) for i, r in enumerate(seqs)]
    a = len(alphabet)
    table = _lookup(alphabet)
    eye = np.vstack([np.eye(a, dtype=np.float32), np.zeros((1, a), dtype=np.float32)])
    out = np.empty((len(records), length, a), dtype=np.float32)
    for k, (name, seq) in enumerate(records):
        seq = seq.upper()
        label = f"record {k} ({name!r})"
        if not seq.isascii():
            pos, ch = next((i, c) for i, c in enumerate(seq) if not c.isascii())
            raise InputValidationError(f"{label}: invalid character {ch!r} at position {pos} (0-based); "
                                       f"expected one of {alphabet} or an ambiguity code ({AMBIGUITY})")
        codes = table[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]
        bad = np.flatnonzero(codes == 255)
        if bad.size:
            pos = int(bad[0])
            raise InputValidationError(f"{label}: invalid character {seq[pos]!r} at position {pos} (0-based); "
                                       f"expected one of {alphabet} or an ambiguity code ({AMBIGUITY})")
        if len(codes) != length:
            if center and len(codes) > length:
                off = (len(codes) - length) // 2
                codes = codes[off:off + length]
            else:
                hint = ("; pass --center (center=True) to use its central part" if len(codes) > length
                        else "")
                raise InputValidationError(f"{label}: length {len(codes)} != model length {length}{hint}")
        out[k] = eye[codes]
    if layout == "NCL":
        return np.ascontiguousarray(out.transpose(0, 2, 1))
    return out


def random_one_hot(n: int, length: int, seed: int | np.random.Generator | None = 0, alphabet: int = 4,
                   layout: str = "NCL", dtype: DTypeLike = np.float32) -> np.ndarray:
    """Random one-hot sequences, each character drawn uniformly from ``alphabet`` letters.

    The characters are ``np.random.default_rng(seed).integers(0, alphabet, size=(n, length))``,
    so a seed always gives the same sequences (whatever the layout or dtype).

    Parameters
    ----------
    n : int
        Number of sequences.
    length : int
        Sequence length ``L``.
    seed : int, numpy.random.Generator or None, optional
        Seed of the generator, or a generator to draw from (it advances). Default 0.
    alphabet : int, optional
        Alphabet size ``A`` (4 for DNA).
    layout : {"NCL", "NLC"}, optional
        ``(n, A, L)`` (``NCL``, PyTorch) or ``(n, L, A)`` (``NLC``, Keras).
    dtype : numpy dtype, optional
        Element type of the result (float32 by default).

    Returns
    -------
    numpy.ndarray
        A C-contiguous array of zeros and ones in ``layout`` with one 1 per position.
    """
    if layout not in ("NCL", "NLC"):
        raise ValueError(f"layout must be 'NCL' or 'NLC', not {layout!r}")
    idx = np.random.default_rng(seed).integers(0, alphabet, size=(n, length))
    x = np.eye(alphabet, dtype=dtype)[idx]  # (n, L, A)
    return np.ascontiguousarray(x.transpose(0, 2, 1) if layout == "NCL" else x)


def _is_fasta(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith(FASTA_SUFFIXES)


def load_sequences(path, length: int, center: bool = False, layout: str = "NCL",
                   alphabet: str = "ACGT") -> tuple[list[str], np.ndarray]:
    """Load sequences for a model of ``length`` positions: ``(names, X)`` with X float32 in ``layout``.

    ``path`` is a FASTA file (``.fa``, ``.fasta``, ``.fna``, optionally ``.gz``) or a ``.npy``
    one-hot array of shape ``(N, A, L)`` or ``(N, L, A)`` (transposed to ``layout`` when needed;
    its records are named ``seq0``, ``seq1``, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise InputValidationError(f"input file not found: {path}")
    if _is_fasta(path):
        records = read_fasta(path)
        return [n for n, _ in records], one_hot(records, length, alphabet, center=center, layout=layout)
    if path.name.lower().endswith(".npy"):
        try:
            X = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputValidationError(f"{path}: cannot read as .npy: {exc}") from exc
        a = len(alphabet)
        ncl, nlc = (a, length), (length, a)
        if X.ndim != 3 or tuple(X.shape[1:]) not in (ncl, nlc):
            raise InputValidationError(
                f"{path}: array of shape {X.shape} does not fit the model: expected (N, {a}, {length}) (NCL) "
                f"or (N, {length}, {a}) (NLC) one-hot sequences")
        if X.shape[0] == 0:
            raise InputValidationError(f"{path}: the array holds no sequences (shape {X.shape})")
        if X.dtype.kind not in "fiub":
            raise InputValidationError(f"{path}: dtype {X.dtype} is not numeric")
        if center:
            raise InputValidationError(f"{path}: --center applies to FASTA input only")
        in_layout = "NCL" if tuple(X.shape[1:]) == ncl else "NLC"
        if in_layout != layout and ncl != nlc:
            X = X.transpose(0, 2, 1)
        return [f"seq{i}" for i in range(X.shape[0])], np.ascontiguousarray(X, dtype=np.float32)
    raise InputValidationError(f"{path}: unknown input format; expected FASTA ({', '.join(FASTA_SUFFIXES)}, "
                               "optionally .gz) or a one-hot .npy array")


# ----------------------------------------------------------------------------- output


def _output_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".h5", ".hdf5")):
        return "h5"
    raise InputValidationError(f"output {path}: unknown extension; use .npz or .h5/.hdf5")


def check_output_path(path) -> str:
    """Return ``"npz"`` or ``"h5"`` for ``path``, or raise :class:`InputValidationError`."""
    kind = _output_kind(Path(path))
    if kind == "h5":
        _import_h5py()
    return kind


def _import_h5py():
    try:
        import h5py
    except ImportError as exc:
        raise InputValidationError("writing .h5 output needs h5py: pip install h5py") from exc
    return h5py


class ResultWriter:
    """Stream per-batch results into ``path`` (``.npz`` or ``.h5``/``.hdf5``), atomically.

    Arrays are keyed ``"{output}/{field}"`` (e.g. ``"logits/y_hat"``); each has ``total`` rows.
    In HDF5 the key is the dataset path; in ``.npz`` the ``/`` becomes ``.`` (``logits.y_hat``).
    ``names`` (the sequence names) is stored as ``names``. Shapes are given up front
    (``shapes``: key -> (row shape, dtype)) or taken from the first :meth:`write`.

    Everything is written to temporary files next to ``path``; only a successful close renames
    the result into place. If the ``with`` block raises, the temporary files are removed and
    ``path`` is left untouched.
    """

    def __init__(self, path, total: int, shapes: Mapping[str, tuple] | None = None,
                 names: list[str] | None = None):
        self.path = Path(path)
        self.kind = check_output_path(self.path)
        self.total = int(total)
        self.names = list(names) if names is not None else None
        self._initial = dict(shapes or {})
        self._fields: dict[str, tuple[tuple, np.dtype]] = {}
        self._tmp: str | None = None
        self._tmpdir: str | None = None
        self._h5 = None
        self._npy: dict[str, tuple[str, int, int]] = {}  # key -> (file, data offset, row bytes)
        self._written = 0
        self._open = False

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> ResultWriter:
        parent = self.path.parent
        self._tmp = temporary_path(self.path)
        self._open = True
        try:
            if self.kind == "h5":
                h5py = _import_h5py()
                self._h5 = h5py.File(self._tmp, "w")
                if self.names is not None:
                    self._h5.create_dataset("names", data=np.array(self.names, dtype=object),
                                            dtype=h5py.string_dtype())
            else:
                self._tmpdir = tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".d", dir=parent)
            for key, (row, dtype) in self._initial.items():
                self._create(key, tuple(row), np.dtype(dtype))
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._cleanup()
            return
        try:
            self._finish()
        except BaseException:
            self._cleanup()
            raise

    def _cleanup(self) -> None:
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:
                pass
            self._h5 = None
        if self._tmp is not None:
            Path(self._tmp).unlink(missing_ok=True)
            self._tmp = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self._open = False

    def _finish(self) -> None:
        if self.kind == "h5":
            self._h5.close()
            self._h5 = None
        else:
            with zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for key, (file, _, _) in self._npy.items():
                    zf.write(file, arcname=key.replace("/", ".") + ".npy")
                if self.names is not None:
                    names_file = os.path.join(self._tmpdir, "names.npy")
                    np.save(names_file, np.array(self.names, dtype=str))
                    zf.write(names_file, arcname="names.npy")
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        publish(self._tmp, self.path)
        self._tmp = None
        self._open = False

    # -------------------------------------------------------------- writing

    def _create(self, key: str, row: tuple, dtype: np.dtype) -> None:
        if key == "names" or not key or key.startswith("/"):
            raise ValueError(f"invalid result key {key!r}")
        shape = (self.total,) + row
        self._fields[key] = (row, dtype)
        if self.kind == "h5":
            self._h5.create_dataset(key, shape=shape, dtype=dtype)
        else:
            file = os.path.join(self._tmpdir, f"{len(self._npy)}.npy")
            mm = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)
            offset = mm.offset
            del mm  # the header and the file size are set; rows are written with plain writes
            self._npy[key] = (file, offset, int(np.prod(row, dtype=np.int64)) * dtype.itemsize)

    def write(self, sl: slice, results: Mapping[str, np.ndarray]) -> None:
        """Write rows ``sl`` (a slice of ``0..total``) of every key in ``results``."""
        if not self._open:
            raise RuntimeError("ResultWriter.write outside its with block")
        lo, hi, step = sl.indices(self.total)
        if step != 1:
            raise ValueError("ResultWriter.write needs a contiguous slice")
        for key, arr in results.items():
            arr = np.asarray(arr)
            if key not in self._fields:
                self._create(key, tuple(arr.shape[1:]), arr.dtype)
            row, dtype = self._fields[key]
            if arr.shape != (hi - lo,) + row:
                raise ValueError(f"result {key!r}: batch of shape {arr.shape} does not fit rows {lo}:{hi} "
                                 f"of row shape {row}")
            if self.kind == "h5":
                self._h5[key][lo:hi] = arr
            else:
                file, offset, row_bytes = self._npy[key]
                with open(file, "r+b") as fh:
                    fh.seek(offset + lo * row_bytes)
                    fh.write(np.ascontiguousarray(arr, dtype=dtype).tobytes())
        self._written = max(self._written, hi)
