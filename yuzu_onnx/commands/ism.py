"""``yuzu-onnx ism``: run a converted model on sequences from a file and stream the results to disk."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..attributions import attributions
from ..errors import InputValidationError
from ..providers import BY_NAME
from ..seqio import ResultWriter, check_output_path, load_sequences
from . import options

__all__ = ["add_parser", "run"]

_ALPHABET = "ACGT"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ism`` subcommand to the ``yuzu-onnx`` parser."""
    p = subparsers.add_parser(
        "ism", help="run a converted model on sequences and save the ISM results",
        description="Run MODEL (written by `yuzu-onnx convert`) on every sequence of INPUT and write, per "
                    "original output, y0 (N, *out) and y_hat (N, A, end-start, *out) to OUT, batch by batch "
                    "(memory stays constant in the number of sequences). Nothing is left at OUT if it fails.")
    options.add_model_argument(p, help="a converted model (MODEL.ism.onnx)")
    p.add_argument("input", type=Path, metavar="INPUT",
                   help="sequences: FASTA (.fa, .fasta, .fna, optionally .gz; ACGT, any case; N and other IUPAC "
                        "ambiguity codes become all-zero columns and need a model converted with "
                        "--substitutions all) or a one-hot .npy array of shape (N, A, L) or (N, L, A)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="result file: .npz (keys OUTPUT.y0, OUTPUT.y_hat, names) or .h5/.hdf5 (datasets "
                        "OUTPUT/y0, OUTPUT/y_hat, names; needs h5py)")
    p.add_argument("--center", action="store_true",
                   help="cut FASTA records longer than the model's length to their central part "
                        "(default: any length mismatch is an error)")
    p.add_argument("--attr", action="store_true",
                   help="write only per-character attributions (N, A, end-start) per output (key "
                        "OUTPUT.attributions / dataset OUTPUT/attributions): the centered effect of each "
                        "substitution, averaged over the output's elements, projected on the sequence")
    options.option_group(p, "execution").add_argument(
        "--batch-size", type=_positive, default=None, metavar="B",
        help="sequences per ONNX Runtime call (default 8); memory grows linearly with it")
    options.add_memory_option(p)
    options.add_provider_option(p, "--providers", auto=True)
    p.add_argument("-q", "--quiet", action="store_true", help="print no progress and no summary line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the ``ism`` subcommand; errors propagate (the CLI prints them), leaving no OUT behind."""
    from ..session import ISMSession

    t0 = time.perf_counter()
    out = Path(args.output)
    check_output_path(out)  # fail on a bad extension / missing h5py before any work
    providers = BY_NAME[args.providers] if getattr(args, "providers", None) else None
    session = ISMSession(args.model, providers=providers, batch_size=getattr(args, "batch_size", None),
                         max_memory=getattr(args, "max_memory", None))
    if session.alphabet != len(_ALPHABET) and not str(args.input).lower().endswith(".npy"):
        raise InputValidationError(f"the model has an alphabet of {session.alphabet} characters; FASTA input "
                                   f"supports {_ALPHABET} only (pass a one-hot .npy array instead)")
    names, X = load_sequences(args.input, session.length, center=getattr(args, "center", False),
                              layout=session.layout, alphabet=_ALPHABET)
    total = len(names)
    attr = getattr(args, "attr", False)
    quiet = getattr(args, "quiet", False)
    progress = not quiet and sys.stderr.isatty()
    done = 0
    with ResultWriter(out, total, names=names) as writer:
        for sl, pairs in session.iter_batches(X):
            batch = {}
            for name, (y0, y_hat) in zip(session.output_names, pairs):
                if attr:
                    batch[f"{name}/attributions"] = attributions(y0, y_hat, X[sl], layout=session.layout,
                                                                 start=session.start)
                else:
                    batch[f"{name}/y0"] = y0
                    batch[f"{name}/y_hat"] = y_hat
            writer.write(sl, batch)
            done = sl.stop
            if progress:
                print(f"\r{done}/{total} sequences", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    if not quiet:
        what = "attributions" if attr else "ISM results"
        print(f"wrote {what} of {total} sequences to {out} in {time.perf_counter() - t0:.1f} s")
    return 0
