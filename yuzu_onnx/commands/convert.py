"""``yuzu-onnx convert``: rewrite a model into one exact ISM graph and write it next to the original."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from ..convert import convert
from ..files import save_model
from ..plan import ConversionWarning
from ..report import plan_table
from . import options

__all__ = ["add_parser", "run", "default_output"]


def default_output(model: Path) -> Path:
    """``model.onnx`` -> ``model.ism.onnx`` next to it."""
    name = model.name[:-5] if model.name.endswith(".onnx") else model.name
    return model.with_name(f"{name}.ism.onnx")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``convert`` subcommand to the ``yuzu-onnx`` parser."""
    p = subparsers.add_parser(
        "convert", help="convert a model into an exact ISM graph",
        description="Rewrite MODEL into one ONNX graph that returns, for each original output y, "
                    "y and y_ism of shape (N, A, end-start, *y.shape[1:]): the output for every "
                    "single-character substitution. Prints the conversion plan.")
    options.add_model_argument(p)
    p.add_argument("-o", "--output", type=Path, help="where to write the ISM model (default: MODEL.ism.onnx)")
    options.add_region_options(p)
    options.add_sensing_options(p)
    options.add_substitution_option(p)
    options.add_input_options(p)
    options.add_length_option(p)
    options.add_form_options(p)
    p.add_argument("--outputs", nargs="+", metavar="NAME",
                   help="convert only these outputs (prunes branches only the others need)")
    p.add_argument("--verify", type=int, default=0, metavar="N",
                   help="after converting, compare with naive ISM on N random sequences")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the plan table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the ``convert`` subcommand: convert, print the plan, write the model, optionally verify."""
    out = args.output or default_output(args.model)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        model, plan = convert(args.model, start=args.start, end=args.end, sensing=args.sensing,
                              alpha=args.alpha, seed=args.seed, substitutions=args.substitutions,
                              input_name=args.input_name, layout=args.layout, outputs=args.outputs,
                              length=args.length, tolerance=args.tolerance, return_plan=True,
                              **options.form_arguments(args))
    seconds = time.perf_counter() - t0
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if not args.quiet:
        print(plan_table(plan))
    save_model(model, out)
    names = ", ".join(f"{o} -> {o}_ism" for o in plan.outputs)
    print(f"wrote {out} in {seconds:.1f} s (outputs: {names})")
    if args.verify > 0:
        from ..verify import verify, verify_table
        print(verify_table(verify(args.model, model, sequences=args.verify)))
    return 0
