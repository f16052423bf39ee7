"""Peak memory of ``yuzu-onnx ism --bed`` against the number of loci: it should stay flat.

Writes a synthetic genome (random ACGT, soft-masked stretches and N runs; a few Mb) and BED
files of N random loci (some running off chromosome ends), converts a small model with
``--substitutions all``, then runs ``yuzu-onnx ism`` in a fresh process per N and reads that
process's peak resident memory (``ru_maxrss`` from ``wait4``) and its wall time. Two jobs per N:

- ``raw``: ``-o OUT.h5`` with y0 and y_hat (the largest per-locus results);
- ``tools``: ``-o OUT.npz --attr --bigwig OUT.bw --modisco PREFIX`` (every streamed output).

A job that held its loci, sequences or results in memory would grow with N; a streaming one
holds one batch (plus a few bytes of coordinates per locus).

Usage::

    python tools/loci_memory_check.py [--loci 1000 10000] [--genome-mb 4] [--model models/onnx/toynet_L80_torchscript.onnx]
                                      [--jobs raw tools] [--batch-size 64] [--max-memory SIZE] [--keep DIR]

Sessions keep ONNX Runtime's CPU arena (without its memory pattern, README, Memory), which
reaches its plateau within the first few batches; ``--max-memory`` lowers the batch size. Either
way the plateau does not depend on the number of loci.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JOBS = {
    "raw": lambda d: ["-o", d / "out.h5"],
    "tools": lambda d: ["-o", d / "out.npz", "--attr", "--bigwig", d / "out.bw", "--modisco", d / "m"],
}


def write_genome(path: Path, megabases: float, seed: int = 0, chromosomes: int = 4) -> dict[str, int]:
    """A random genome of ``megabases`` Mb in ``chromosomes`` records (60-column lines), with
    lower-case stretches and N runs; returns the chromosome sizes."""
    rng = np.random.default_rng(seed)
    size = int(megabases * 1e6) // chromosomes
    sizes = {}
    with open(path, "w") as fh:
        for c in range(chromosomes):
            codes = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, size)].copy()
            for start in rng.integers(0, size - 2000, 20):  # soft-masked repeats
                codes[start:start + 1000] += 32
            for start in rng.integers(0, size - 500, 5):  # assembly gaps
                codes[start:start + 500] = ord("N")
            text = codes.tobytes().decode()
            fh.write(f">chr{c + 1}\n")
            fh.writelines(text[i:i + 60] + "\n" for i in range(0, size, 60))
            sizes[f"chr{c + 1}"] = size
    return sizes


def write_bed(path: Path, sizes: dict[str, int], n: int, seed: int = 1) -> None:
    """``n`` loci of 50-500 bp at random places (about 1 in 100 at a chromosome end)."""
    rng = np.random.default_rng(seed)
    names = list(sizes)
    chrom = rng.integers(0, len(names), n)
    width = rng.integers(50, 500, n)
    with open(path, "w") as fh:
        for c, w in zip(chrom.tolist(), width.tolist()):
            size = sizes[names[c]]
            edge = rng.random() < 0.01
            start = size - w if edge else int(rng.integers(0, size - w))
            fh.write(f"{names[c]}\t{start}\t{start + w}\n")


def run_job(model: Path, bed: Path, genome: Path, args: list, batch_size: int,
            max_memory: str | None = None) -> tuple[int, float]:
    """Run ``yuzu-onnx ism`` in a fresh process: (peak RSS in bytes, wall seconds)."""
    budget = ["--max-memory", max_memory] if max_memory else []
    argv = [sys.executable, "-m", "yuzu_onnx.cli", "ism", str(model), "--bed", str(bed), "--genome", str(genome),
            *map(str, args), "--batch-size", str(batch_size), *budget, "--providers", "cpu", "-q"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"yuzu-onnx ism failed: {' '.join(argv)}")
    return usage.ru_maxrss * 1024, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loci", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--genome-mb", type=float, default=4.0)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "onnx" / "toynet_L80_torchscript.onnx")
    parser.add_argument("--jobs", nargs="+", choices=sorted(JOBS), default=sorted(JOBS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-memory", default=None, metavar="SIZE",
                        help="pass --max-memory SIZE to ism (bounded ONNX Runtime memory)")
    parser.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it (default: a temp dir)")
    args = parser.parse_args(argv)

    import onnx

    from yuzu_onnx import convert

    work = args.keep or Path(tempfile.mkdtemp(prefix="loci_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        genome = work / "genome.fa"
        sizes = write_genome(genome, args.genome_mb)
        model = work / "model.ism.onnx"
        onnx.save(convert(str(args.model), substitutions="all"), str(model))
        budget = f", --max-memory {args.max_memory}" if args.max_memory else ""
        print(f"genome {args.genome_mb:g} Mb, model {args.model.name} (substitutions all), batch {args.batch_size}"
              f"{budget}")
        print(f"{'job':6} {'loci':>8} {'peak RSS':>10} {'wall':>8} {'loci/s':>8}")
        for job in args.jobs:
            for n in args.loci:
                bed = work / f"loci_{n}.bed"
                if not bed.exists():
                    write_bed(bed, sizes, n)
                out = work / f"{job}_{n}"
                out.mkdir(exist_ok=True)
                peak, wall = run_job(model, bed, genome, JOBS[job](out), args.batch_size, args.max_memory)
                print(f"{job:6} {n:>8} {peak / 2**20:>7.0f} MiB {wall:>6.1f} s {n / wall:>8.0f}", flush=True)
                shutil.rmtree(out)  # results can be large (raw: 205 KB per locus for toynet L80)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
