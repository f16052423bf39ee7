"""``yuzu-onnx check``: convert a model in memory and compare it with naive ISM."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

from ..analyze import ConversionWarning
from ..cli import add_length_option, add_tolerance_option
from ..convert import DEFAULT_ALPHA, convert

#: Structured sensing passes when max |error| <= RTOL * max |delta| for every output.
RTOL = 1e-4
#: Gaussian sensing passes when the deltas' Pearson r >= MIN_PEARSON for every output.
MIN_PEARSON = 0.9999


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check", help="convert a model in memory and check it against naive ISM",
        description="Convert MODEL in memory (nothing is written) and compare its ISM with naive "
                    "ISM (one forward pass per substitution) on random one-hot sequences. Prints the "
                    f"error table. Exits 0 when every output agrees: max |error| <= {RTOL:g} x max "
                    f"|delta| for structured sensing, delta Pearson r >= {MIN_PEARSON} for gaussian "
                    "sensing; else names the failing outputs and exits 1.")
    p.add_argument("model", type=Path, metavar="MODEL", help="the original ONNX model")
    p.add_argument("--sequences", type=int, default=2, metavar="N",
                   help="random sequences to compare on (default 2)")
    p.add_argument("--start", type=int, default=0, help="first mutated position (default 0)")
    p.add_argument("--end", type=int, default=None, help="one past the last mutated position (default: length)")
    p.add_argument("--substitutions", choices=["alt", "all"], default="alt",
                   help="alt: the A-1 substitutions of each position (default); all: every character")
    p.add_argument("--sensing", choices=["structured", "gaussian"], default="structured",
                   help="structured: exact spike probes (default); gaussian: compressed Gaussian probes")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"probes per unknown for gaussian sensing (default {DEFAULT_ALPHA})")
    add_tolerance_option(p)
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random sequences and of the gaussian designs (default 0)")
    add_length_option(p)
    p.set_defaults(func=run)


def _failure(check, sensing: str) -> str | None:
    """Why one output fails, or None when it passes."""
    rel = check.relative_error
    if sensing == "gaussian" and not math.isnan(check.pearson):
        if check.pearson >= MIN_PEARSON:
            return None
        return f"delta Pearson r {check.pearson:.7f} < {MIN_PEARSON}"
    # structured sensing, or no deltas to correlate (Pearson undefined): compare errors
    if rel <= RTOL:
        return None
    return f"relative error {rel:.3g} > {RTOL:g} (max |error| {check.max_abs_error:.3g}, max |delta| {check.max_abs_delta:.3g})"


def run(args: argparse.Namespace) -> int:
    from .. import verify as verify_module

    if args.sequences < 1:
        raise ValueError(f"--sequences must be >= 1, got {args.sequences}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        model = convert(args.model, start=args.start, end=args.end, sensing=args.sensing,
                        alpha=args.alpha, seed=args.seed, substitutions=args.substitutions,
                        length=args.length, tolerance=args.tolerance)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    report = verify_module.verify(args.model, model, sequences=args.sequences, seed=args.seed)
    print(verify_module.verify_table(report))
    failures = [(c.output, why) for c in report.checks if (why := _failure(c, args.sensing))]
    for output, why in failures:
        print(f"FAILED {output}: {why}")
    if failures:
        return 1
    print(f"OK: all {len(report.checks)} outputs agree with naive ISM")
    return 0
