"""Option groups shared by the ``yuzu-onnx`` subcommands.

Each function adds one family of options to a subcommand's parser, under a titled argument
group so that ``--help`` lists them together. Options that belong together (``--start``,
``--end`` and ``--substitutions``; ``--input``, ``--layout`` and ``--length``) join the same
group whichever function adds them first. Every flag keeps one name, default, dest and help
text across the commands that take it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..convert import DEFAULT_ALPHA
from ..memory import parse_size
from ..providers import BY_NAME
from ..sensing import DEFAULT_TOLERANCE

__all__ = ["option_group", "add_model_argument", "add_region_options", "add_substitution_option",
           "add_sensing_options", "add_input_options", "add_length_option", "add_provider_option",
           "add_memory_option"]

#: Group titles and the line ``--help`` prints under each.
_GROUPS = {
    "mutations": "which positions are mutated, and into what",
    "sensing": "how the converted graph recovers each conv's ISM deltas",
    "sequence input": "the model input that holds the one-hot sequence",
    "execution": "where and how ONNX Runtime runs the model",
    "plan": "the form of the converted graph (every form is exact)",
}


def option_group(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The argument group of ``parser`` titled ``title``, created if it is not there yet.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser.
    title : str
        One of the shared group titles: ``"mutations"``, ``"sensing"``, ``"sequence input"``
        or ``"execution"``. A command adds its own options of the same kind here (``ism``'s
        ``--batch-size`` goes to ``"execution"``).

    Returns
    -------
    argparse._ArgumentGroup
        The group; ``add_argument`` on it adds the option to ``parser``.
    """
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title, _GROUPS[title])


def add_model_argument(parser: argparse.ArgumentParser, help: str = "the original ONNX model") -> None:
    """Add the positional ``MODEL`` argument (a path).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser.
    help : str, optional
        What the model is, e.g. ``"a converted model (MODEL.ism.onnx)"``; by default the
        original (unconverted) ONNX model.

    Notes
    -----
    The value lands in ``args.model`` as a :class:`pathlib.Path`.
    """
    parser.add_argument("model", type=Path, metavar="MODEL", help=help)


def add_region_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--start`` and ``--end``: the half-open range of mutated positions.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser; the options go to its ``mutations`` group.

    Notes
    -----
    ``args.start`` defaults to 0 and ``args.end`` to None (the sequence length); both are
    passed on unchanged to :func:`yuzu_onnx.convert`, which validates them.
    """
    group = option_group(parser, "mutations")
    group.add_argument("--start", type=int, default=0, help="first mutated position (default 0)")
    group.add_argument("--end", type=int, default=None, help="one past the last mutated position (default: length)")


def add_substitution_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--substitutions {alt,all}``: which characters each mutated position takes.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser; the option goes to its ``mutations`` group.

    Notes
    -----
    ``args.substitutions`` defaults to ``"alt"``.
    """
    option_group(parser, "mutations").add_argument(
        "--substitutions", choices=["alt", "all"], default="alt",
        help="alt: the A-1 substitutions of each one-hot position (default); all: every character "
             "at every position (needed for N columns or soft encodings)")


def add_sensing_options(parser: argparse.ArgumentParser, *, seeds_sequences: bool = False) -> None:
    """Add ``--sensing``, ``--alpha``, ``--tolerance`` and ``--seed``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser; the options go to its ``sensing`` group.
    seeds_sequences : bool, optional
        True when the command also draws random sequences from ``--seed`` (``check``), so
        that its help says so. The flag itself is the same either way.

    Notes
    -----
    Defaults: ``args.sensing = "structured"``, ``args.alpha =``
    :data:`yuzu_onnx.convert.DEFAULT_ALPHA`, ``args.tolerance =``
    :data:`yuzu_onnx.sensing.DEFAULT_TOLERANCE`, ``args.seed = 0``.
    """
    group = option_group(parser, "sensing")
    group.add_argument("--sensing", choices=["structured", "gaussian"], default="structured",
                       help="structured: exact spike probes (default); gaussian: the paper's compressed "
                            "Gaussian probes with least-squares decoding (approximate in float32)")
    group.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                       help=f"probes per unknown for gaussian sensing (default {DEFAULT_ALPHA})")
    group.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                       help="gaussian sensing: bound on each conv's predicted float32 decoding error "
                            "relative to its deltas; convs over it get more probes, or the conversion "
                            f"is refused (default {DEFAULT_TOLERANCE:g})")
    seeded = "the random sequences and of the gaussian designs" if seeds_sequences else "the gaussian designs"
    group.add_argument("--seed", type=int, default=0, help=f"seed of {seeded} (default 0)")


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--input NAME`` and ``--layout {NCL,NLC}``: which model input is the sequence.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser; the options go to its ``sequence input`` group.

    Notes
    -----
    The name lands in ``args.input_name`` and the layout in ``args.layout``; both default to
    None (detected from the model).
    """
    group = option_group(parser, "sequence input")
    group.add_argument("--input", dest="input_name", help="name of the sequence input (default: detected)")
    group.add_argument("--layout", choices=["NCL", "NLC"], help="layout of the sequence input (default: detected)")


def add_length_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--length L``: fix the sequence length of a model exported with a symbolic one.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser; the option goes to its ``sequence input`` group.

    Notes
    -----
    ``args.length`` defaults to None (the model's static length).
    """
    option_group(parser, "sequence input").add_argument(
        "--length", type=int, default=None, metavar="L",
        help="sequence length, for a model exported with a dynamic length (default: the model's static length)")


def add_provider_option(parser: argparse.ArgumentParser, flag: str = "--provider", *, auto: bool = False) -> None:
    """Add the execution provider option, one of :data:`yuzu_onnx.providers.BY_NAME`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser; the option goes to its ``execution`` group.
    flag : str, optional
        The flag's name: ``--provider`` (``bench``) or ``--providers`` (``ism``); the dest
        follows it (``args.provider`` or ``args.providers``).
    auto : bool, optional
        False (``bench``): default ``cpu``, and a provider that ONNX Runtime cannot run here is
        refused. True (``ism``): default None, meaning cuda when this onnxruntime offers it,
        else cpu, and an unavailable cuda falls back to cpu with a warning.
    """
    if auto:
        default, help = None, ("execution provider: cpu, or cuda (falls back to cpu with a warning when "
                               "unavailable); default: cuda when this onnxruntime offers it, else cpu")
    else:
        default, help = "cpu", ("execution provider: cpu, or cuda (refused when ONNX Runtime cannot run it "
                                "here); default cpu")
    option_group(parser, "execution").add_argument(flag, choices=sorted(BY_NAME), default=default, help=help)


def _size(text: str) -> int:
    """argparse type of ``--max-memory``: a byte count such as ``8G`` or ``512M``."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_memory_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-memory SIZE``: the memory budget that sizes the batches.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The subcommand's parser (one that also has ``--batch-size``); the option goes to its
        ``execution`` group.

    Notes
    -----
    ``args.max_memory`` is a byte count (parsed by :func:`yuzu_onnx.memory.parse_size`), or
    None for no budget.
    """
    option_group(parser, "execution").add_argument(
        "--max-memory", type=_size, default=None, metavar="SIZE",
        help="memory budget for running the model (weights + peak activations, predicted from its "
             "tensor shapes), e.g. 8G or 512M; the batch size is the largest that fits (at most "
             "--batch-size when given); a model whose single sequence needs more is refused before "
             "anything runs")


def add_form_options(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose the converted graph's form (``plan`` group): ``--form``,
    ``--max-memory``, ``--tile-width``, ``--tiles-per-chunk`` and ``--tile-groups``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        A converting subcommand's parser (convert, check, bench).

    Notes
    -----
    ``args.form`` is one of :data:`yuzu_onnx.convert.FORMS`; ``args.max_memory`` a byte count
    (activations per sequence) or None for the default (1 GiB); the tile options None unless
    given. See :func:`yuzu_onnx.convert` for what they do.
    """
    from ..convert import FORMS
    group = option_group(parser, "plan")
    group.add_argument("--form", choices=FORMS, default="auto",
                       help="how the graph computes ISM: whole (probes over the whole sequence), tiled (tiles "
                            "computed only where their mutants reach, in chunks), brute-force (every mutant, in "
                            "chunks); auto (default) takes the fastest the time model predicts within --max-memory")
    group.add_argument("--max-memory", type=_size, default=None, metavar="SIZE",
                       help="activations per sequence the converted graph may use, e.g. 1G (default) or 512M; "
                            "tiles run in chunks that fit it")
    group.add_argument("--tile-width", type=int, default=None, metavar="T",
                       help="mutated positions per tile (implies --form tiled; a multiple of the model's total "
                            "stride; default: chosen by the time model)")
    group.add_argument("--tiles-per-chunk", type=int, default=None, metavar="C",
                       help="tiles per Loop iteration (default: the most that fit --max-memory)")
    group.add_argument("--tile-groups", type=int, default=None, metavar="G",
                       help="split the tiles into G groups of consecutive tiles, one Loop each, whose windows skip "
                            "positions outside the sequence for all of the group's tiles (default: 16 where that "
                            "cuts the FLOPs by 3%%, 32 where that cuts them by 3%% more, else 1)")


def form_arguments(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`yuzu_onnx.convert` that :func:`add_form_options` set."""
    return {"form": getattr(args, "form", "auto"), "max_memory": getattr(args, "max_memory", None),
            "tile_width": getattr(args, "tile_width", None), "tiles_per_chunk": getattr(args, "tiles_per_chunk", None),
            "tile_groups": getattr(args, "tile_groups", None)}
