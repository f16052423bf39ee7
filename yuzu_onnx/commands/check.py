"""``yuzu-onnx check``: convert a model in memory and compare it with naive ISM."""

from __future__ import annotations

import argparse
import math
import sys
import warnings

from ..convert import convert
from ..plan import ConversionWarning
from . import options

#: Structured sensing passes when max |error| <= RTOL * max |delta| for every output.
RTOL = 1e-4
#: Gaussian sensing passes when the deltas' Pearson r >= MIN_PEARSON for every output.
MIN_PEARSON = 0.9999


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``check`` subcommand to the ``yuzu-onnx`` parser."""
    p = subparsers.add_parser(
        "check", help="convert a model in memory and check it against naive ISM",
        description="Convert MODEL in memory (nothing is written) and compare its ISM with naive "
                    "ISM (one forward pass per substitution) on random one-hot sequences. Prints the "
                    f"error table. Exits 0 when every output agrees: max |error| <= {RTOL:g} x max "
                    f"|delta| for structured sensing, delta Pearson r >= {MIN_PEARSON} for gaussian "
                    "sensing; else names the failing outputs and exits 1.")
    options.add_model_argument(p)
    p.add_argument("--sequences", type=int, default=2, metavar="N",
                   help="random sequences to compare on (default 2)")
    options.add_region_options(p)
    options.add_substitution_option(p)
    options.add_sensing_options(p, seeds_sequences=True)
    options.add_length_option(p)
    options.add_form_options(p)
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
    """Run the ``check`` subcommand: 0 when every output agrees with naive ISM, else 1."""
    from .. import verify as verify_module

    if args.sequences < 1:
        raise ValueError(f"--sequences must be >= 1, got {args.sequences}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        model = convert(args.model, start=args.start, end=args.end, sensing=args.sensing,
                        alpha=args.alpha, seed=args.seed, substitutions=args.substitutions,
                        length=args.length, tolerance=args.tolerance, **options.form_arguments(args))
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
