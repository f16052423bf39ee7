"""Helpers of the loci/output/Ray tests: a small genome written as FASTA, windows cut by hand,
converted toynet models, and running ``yuzu-onnx ism`` in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from yuzu_onnx import convert
from yuzu_onnx.cli import build_parser

from conftest import MODELS_DIR

TOYNET = MODELS_DIR / "toynet_L80_torchscript.onnx"
L = 80


def genome_sequences(seed: int = 0) -> dict[str, str]:
    """chr1 (300 bp: soft-masked lower case at 40..69, an N run at 150..159) and chr2 (120 bp)."""
    rng = np.random.default_rng(seed)
    chr1 = "".join("ACGT"[i] for i in rng.integers(0, 4, 300))
    chr1 = chr1[:40] + chr1[40:70].lower() + chr1[70:150] + "N" * 10 + chr1[160:]
    chr2 = "".join("ACGT"[i] for i in rng.integers(0, 4, 120))
    return {"chr1": chr1, "chr2": chr2}


def write_fasta(path: Path, records: dict[str, str], width: int = 60) -> Path:
    """Write ``{name: sequence}`` as FASTA with lines of ``width`` characters."""
    with open(path, "w") as fh:
        for name, seq in records.items():
            fh.write(f">{name}\n")
            for i in range(0, len(seq), width):
                fh.write(seq[i:i + width] + "\n")
    return path


def hand_window(genome: dict[str, str], chrom: str, start: int, end: int) -> str:
    """``chrom:[start, end)`` cut by hand, ``N`` outside the chromosome."""
    seq = genome[chrom]
    return "".join(seq[p] if 0 <= p < len(seq) else "N" for p in range(start, end))


def write_bed(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def convert_toynet(directory: Path, substitutions: str = "all", start: int = 0, end: int | None = None,
                   source: Path = TOYNET) -> Path:
    """Convert a model and save it under ``directory``; returns the path."""
    path = directory / f"{source.stem}_{substitutions}_{start}_{end}.ism.onnx"
    onnx.save(convert(str(source), substitutions=substitutions, start=start, end=end), str(path))
    return path


def run_ism(*argv) -> int:
    """``yuzu-onnx ism ARGV... --providers cpu`` in this process; errors propagate as exceptions."""
    args = build_parser().parse_args(["ism", *map(str, argv), "--providers", "cpu"])
    return args.func(args)


def read_results(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz / .h5 result file, keyed ``output/field`` (text as ``str``)."""
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {"/".join(k.rpartition(".")[::2]) if "." in k else k: z[k] for k in z.files}
    import h5py

    out: dict[str, np.ndarray] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            value = obj[()]
            if value.dtype.kind in "SO":
                value = np.array([v.decode() if isinstance(v, bytes) else v for v in value])
            out[name] = value

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out
