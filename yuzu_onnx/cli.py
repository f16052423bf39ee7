"""yuzu-onnx: exact in silico saturation mutagenesis for ONNX sequence models.

The command line is a thin shell over the library: convert a model, run it on FASTA or .npy
sequences, check it against brute-force ISM, time it, plot its results, or write a Triton model
repository. Each subcommand lives in its own module under :mod:`yuzu_onnx.commands` (an
``add_parser(subparsers)`` that registers it and a ``run(args)`` that returns the exit status);
the options several commands share are defined once, in :mod:`yuzu_onnx.commands.options`."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from .commands import bench, check, convert, ism, plot, triton
from .errors import InternalError, YuzuError
# Re-exported: tests (tests/test_triton_check.py) import save_model from here; it lives in files.py.
from .files import save_model  # noqa: F401

#: The subcommands, in the order ``yuzu-onnx --help`` lists them.
COMMANDS = (convert, ism, check, bench, plot, triton)

EXIT_STATUS = """\
exit status:
  0  success
  1  check: an output disagrees with naive ISM
  2  user error: the model, an input or an option is wrong (one line on stderr)
  3  internal error: a bug in yuzu-onnx (one line on stderr; -v adds the traceback)"""


def build_parser() -> argparse.ArgumentParser:
    """The ``yuzu-onnx`` parser, with one subparser per module of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="yuzu-onnx", description=__doc__.split("\n")[0] if __doc__ else None,
                                     epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log details of each pass, and print the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``yuzu-onnx`` command; returns the exit status (see :data:`EXIT_STATUS`)."""
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
    except InternalError as exc:
        # A bug, not the user's mistake: its message says so and asks for a report.
        if args.verbose:
            traceback.print_exc()
        print(f"yuzu-onnx: {exc}", file=sys.stderr)
        return 3
    except (YuzuError, ValueError, OSError) as exc:
        print(f"yuzu-onnx: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
