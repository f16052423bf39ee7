"""yuzu-onnx: exact in silico saturation mutagenesis for ONNX sequence models.

The command line is a thin shell over the library: convert a model, run it on FASTA or .npy
sequences, check it against brute-force ISM, or write a Triton model repository."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import onnx

from .sensing import DEFAULT_TOLERANCE
from .analyze import ConversionWarning
from .convert import DEFAULT_ALPHA, convert
from .errors import YuzuError
from .files import write_atomic
from .report import plan_table

# Larger models must be written with their weights in a side file (protobuf's 2 GB limit).
_PROTO_LIMIT = 2 ** 31 - 2 ** 20


def default_output(model: Path) -> Path:
    """``model.onnx`` -> ``model.ism.onnx`` next to it."""
    name = model.name[:-5] if model.name.endswith(".onnx") else model.name
    return model.with_name(f"{name}.ism.onnx")


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` atomically: nothing is left at ``path`` if writing fails."""
    if model.ByteSize() > _PROTO_LIMIT:
        write_atomic(path, lambda tmp: onnx.save_model(model, tmp, save_as_external_data=True,
                                                       all_tensors_to_one_file=True, location=f"{path.name}.data"))
    else:
        write_atomic(path, lambda tmp: onnx.save_model(model, tmp))


def add_length_option(parser: argparse.ArgumentParser) -> None:
    """``--length L``: fix a symbolic sequence length (shared by convert, check and bench)."""
    parser.add_argument("--length", type=int, default=None, metavar="L",
                        help="sequence length, for a model exported with a dynamic length "
                             "(default: the model's static length)")


def add_tolerance_option(parser: argparse.ArgumentParser) -> None:
    """``--tolerance T``: gaussian sensing's error bound (shared by convert and check)."""
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="gaussian sensing: bound on each conv's predicted float32 decoding error "
                             "relative to its deltas; convs over it get more probes, or the conversion "
                             f"is refused (default {DEFAULT_TOLERANCE:g})")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert a model into an exact ISM graph",
        description="Rewrite MODEL into one ONNX graph that returns, for each original output y, "
                    "y and y_ism of shape (N, A, end-start, *y.shape[1:]): the output for every "
                    "single-character substitution. Prints the conversion plan.")
    p.add_argument("model", type=Path, help="the original ONNX model")
    p.add_argument("-o", "--output", type=Path, help="where to write the ISM model (default: MODEL.ism.onnx)")
    p.add_argument("--start", type=int, default=0, help="first mutated position (default 0)")
    p.add_argument("--end", type=int, default=None, help="one past the last mutated position (default: length)")
    p.add_argument("--sensing", choices=["structured", "gaussian"], default="structured",
                   help="structured: exact spike probes (default); gaussian: the paper's compressed "
                        "Gaussian probes with least-squares decoding (approximate in float32)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"probes per unknown for gaussian sensing (default {DEFAULT_ALPHA})")
    add_tolerance_option(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the gaussian designs (default 0)")
    p.add_argument("--substitutions", choices=["alt", "all"], default="alt",
                   help="alt: the A-1 substitutions of each one-hot position (default); all: every "
                        "character at every position (needed for N columns or soft encodings)")
    p.add_argument("--input", dest="input_name", help="name of the sequence input (default: detected)")
    p.add_argument("--layout", choices=["NCL", "NLC"], help="layout of the sequence input (default: detected)")
    add_length_option(p)
    p.add_argument("--outputs", nargs="+", metavar="NAME",
                   help="convert only these outputs (prunes branches only the others need)")
    p.add_argument("--verify", type=int, default=0, metavar="N",
                   help="after converting, compare with naive ISM on N random sequences")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the plan table")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    out = args.output or default_output(args.model)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        model, plan = convert(args.model, start=args.start, end=args.end, sensing=args.sensing,
                              alpha=args.alpha, seed=args.seed, substitutions=args.substitutions,
                              input_name=args.input_name, layout=args.layout, outputs=args.outputs,
                              length=args.length, tolerance=args.tolerance, return_plan=True)
    seconds = time.perf_counter() - t0
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if not args.quiet:
        print(plan_table(plan))
    save_model(model, out)
    names = ", ".join(f"{o} -> {o}_ism" for o in plan.outputs)
    print(f"wrote {out} in {seconds:.1f} s (outputs: {names})")
    if args.verify > 0:
        from .verify import verify, verify_table
        print(verify_table(verify(args.model, model, sequences=args.verify)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yuzu-onnx", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="log details of each pass")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(sub)
    from .commands import bench, check, ism, plot, triton
    ism.add_parser(sub)
    check.add_parser(sub)
    bench.add_parser(sub)
    plot.add_parser(sub)
    triton.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``yuzu-onnx`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not args.verbose:
        # The GPU wheel logs a long error when it probes CUDA on a machine without it; the
        # session then runs on the CPU and says so (ISMSession.provider), which is enough.
        import onnxruntime
        onnxruntime.set_default_logger_severity(4)
    try:
        return args.func(args)
    except (YuzuError, ValueError, OSError) as exc:
        print(f"yuzu-onnx: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
