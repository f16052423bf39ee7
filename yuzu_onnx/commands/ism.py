"""``yuzu-onnx ism``: run a converted model on sequences (a FASTA/.npy file, or BED loci of a genome)
and stream the results to disk: the ISM result file, a bigWig track, tfmodisco-lite's inputs."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from ..errors import InputValidationError
from ..products import Request, result_file_keys
from ..providers import BY_NAME
from ..seqio import ResultWriter, check_output_path, load_sequences
from . import options

__all__ = ["add_parser", "run"]

_ALPHABET = "ACGT"
_BIGWIG_SUFFIXES = (".bw", ".bigwig")


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
        "ism", help="run a converted model on sequences or genome loci and save the ISM results",
        description="Run MODEL (written by `yuzu-onnx convert`) on every sequence of INPUT, or on the window "
                    "of the model's length centered on each locus of --bed in --genome, and write, per "
                    "original output, y0 (N, *out) and y_hat (N, A, end-start, *out) to OUT, batch by batch "
                    "(memory stays constant in the number of sequences). --bigwig and --modisco write "
                    "inputs for genome browsers and tfmodisco-lite. Nothing is left at OUT if it fails.")
    options.add_model_argument(p, help="a converted model (MODEL.ism.onnx)")
    p.add_argument("input", type=Path, metavar="INPUT", nargs="?", default=None,
                   help="sequences: FASTA (.fa, .fasta, .fna, optionally .gz; ACGT, any case; N and other IUPAC "
                        "ambiguity codes become all-zero columns and need a model converted with "
                        "--substitutions all) or a one-hot .npy array of shape (N, A, L) or (N, L, A); "
                        "give either INPUT or --bed")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="OUT",
                   help="result file: .npz (keys OUTPUT.y0, OUTPUT.y_hat, names) or .h5/.hdf5 (datasets "
                        "OUTPUT/y0, OUTPUT/y_hat, names; needs h5py); with --bed also chrom, start, end "
                        "(window coordinates). Needed unless --bigwig or --modisco is given")
    p.add_argument("--center", action="store_true",
                   help="cut FASTA records longer than the model's length to their central part "
                        "(default: any length mismatch is an error)")
    p.add_argument("--attr", action="store_true",
                   help="write attributions to OUT instead of y0/y_hat, per output: OUTPUT.attributions "
                        "(N, A, end-start), the centered effect of each substitution averaged over the output's "
                        "elements and projected on the sequence, and OUTPUT.hypothetical (N, A, end-start), the "
                        "same before projection; plus ohe (N, A, end-start), the one-hot sequences over the "
                        "mutated region, channels first: tfmodisco-lite's -s and -a arrays as they are")

    loci = p.add_argument_group("loci input", "windows of a genome centered on BED loci (needs pyfaidx)")
    loci.add_argument("--bed", type=Path, default=None, metavar="LOCI.bed",
                      help="BED3+ or narrowPeak loci (optionally .gz; #, track and browser lines skipped): each "
                           "becomes the window [mid - L//2, mid - L//2 + L) of the model's length L, mid = "
                           "start + (end - start)//2, as tangermeme's extract_loci centers; positions before 0 or "
                           "past the chromosome end are N (all-zero columns). Records are named chrom:start-end "
                           "(the window)")
    loci.add_argument("--genome", type=Path, default=None, metavar="GENOME.fa",
                      help="the reference FASTA of --bed (plain or bgzip; soft-masked lower case is read as its "
                           "base), read by random access through its .fai index (made next to it if missing)")
    loci.add_argument("--summits", action="store_true",
                      help="center each window on the narrowPeak summit, mid = start + column 10")

    tools = p.add_argument_group("outputs for other tools", "written beside (or instead of) OUT, batch by batch")
    tools.add_argument("--bigwig", type=Path, default=None, metavar="OUT.bw",
                       help="with --bed: a bigWig (pyBigWig) of the attribution of the observed base at every "
                            "genome position of the mutated regions; where loci overlap, a position takes the "
                            "value of the locus whose center is nearest (ties: the earlier BED line); N positions "
                            "get no value; chromosome sizes from the genome's .fai")
    tools.add_argument("--modisco", default=None, metavar="PREFIX",
                       help="write tfmodisco-lite's inputs PREFIX.ohe.npz (one-hot sequences) and PREFIX.attr.npz "
                            "(hypothetical attributions), each (N, 4, end-start) float32 under key arr_0: "
                            "run `modisco motifs -s PREFIX.ohe.npz -a PREFIX.attr.npz`")
    tools.add_argument("--output-name", default=None, metavar="NAME",
                       help="the model output explained by --bigwig and --modisco (default: the first output)")

    execution = options.option_group(p, "execution")
    execution.add_argument(
        "--batch-size", type=_positive, default=None, metavar="B",
        help="sequences per ONNX Runtime call (default 8); memory grows linearly with it")
    options.add_memory_option(p)
    options.add_provider_option(p, "--providers", auto=True)
    execution.add_argument(
        "--engine", choices=["local", "ray"], default="local",
        help="local: this process (default); ray: a Ray cluster (Ray Data map_batches over one ISMSession actor "
             "per GPU, or per CPU slot without GPUs or with --providers cpu; same batches, same numbers, same "
             "output files; needs yuzu-onnx[ray], and MODEL and GENOME at the same path on every node)")
    execution.add_argument(
        "--ray-address", default=None, metavar="ADDR",
        help="the Ray cluster to join (e.g. auto after `ray start --head`); default: a new local cluster")
    p.add_argument("-q", "--quiet", action="store_true", help="print no progress and no summary line")
    p.set_defaults(func=run)


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse contradictory or incomplete option sets, before anything is loaded."""
    bed, genome = getattr(args, "bed", None), getattr(args, "genome", None)
    bigwig, modisco = getattr(args, "bigwig", None), getattr(args, "modisco", None)
    if (args.input is None) == (bed is None):
        raise InputValidationError("give the sequences either as INPUT (FASTA or .npy) or as --bed LOCI.bed with "
                                   "--genome GENOME.fa, not both and not neither")
    if bed is not None and genome is None:
        raise InputValidationError("--bed needs --genome GENOME.fa (the FASTA the loci refer to)")
    if bed is None:
        for flag, value in (("--genome", genome), ("--summits", getattr(args, "summits", False)),
                            ("--bigwig", bigwig)):
            if value:
                raise InputValidationError(f"{flag} applies to loci input (--bed) only")
    elif getattr(args, "center", False):
        raise InputValidationError("--center applies to FASTA input only (loci windows have the model's length)")
    if args.output is None and bigwig is None and modisco is None:
        raise InputValidationError("nothing to write: give -o OUT (and/or --bigwig, --modisco)")
    if getattr(args, "attr", False) and args.output is None:
        raise InputValidationError("--attr chooses what goes to OUT: give -o OUT")
    if getattr(args, "output_name", None) is not None and bigwig is None and modisco is None:
        raise InputValidationError("--output-name applies to --bigwig and --modisco")
    if bigwig is not None and not bigwig.name.lower().endswith(_BIGWIG_SUFFIXES):
        raise InputValidationError(f"--bigwig {bigwig}: use a .bw or .bigWig file name")
    if getattr(args, "ray_address", None) is not None and getattr(args, "engine", "local") != "ray":
        raise InputValidationError("--ray-address applies to --engine ray")
    if args.output is not None:
        check_output_path(args.output)  # a bad extension / missing h5py fails before any work


def _source(args: argparse.Namespace, session):
    """The job's records: loci windows of the genome, or the sequences of INPUT (validated whole)."""
    from ..sources import ArraySource, LociSource

    if getattr(args, "bed", None) is not None:
        from ..loci import genome_sizes, open_genome, read_loci

        if session.alphabet != len(_ALPHABET):
            raise InputValidationError(f"the model has an alphabet of {session.alphabet} characters; genome "
                                       f"loci give {_ALPHABET} only")
        sizes = genome_sizes(open_genome(args.genome))  # makes the .fai if missing
        loci = read_loci(args.bed, sizes, session.length, summits=getattr(args, "summits", False))
        return LociSource(loci, args.genome, session.layout)
    if session.alphabet != len(_ALPHABET) and not str(args.input).lower().endswith(".npy"):
        raise InputValidationError(f"the model has an alphabet of {session.alphabet} characters; FASTA input "
                                   f"supports {_ALPHABET} only (pass a one-hot .npy array instead)")
    names, X = load_sequences(args.input, session.length, center=getattr(args, "center", False),
                              layout=session.layout, alphabet=_ALPHABET)
    session.validate(X)  # errors name the sequence by its index in INPUT
    return ArraySource(names, X)


def _explained_output(args: argparse.Namespace, session) -> str | None:
    """The output --bigwig/--modisco explain (None without them)."""
    if getattr(args, "bigwig", None) is None and getattr(args, "modisco", None) is None:
        return None
    name = getattr(args, "output_name", None)
    if name is None:
        return session.output_names[0]
    if name not in session.output_names:
        raise InputValidationError(f"--output-name {name!r}: the model has no such output; its outputs are "
                                   f"{', '.join(map(repr, session.output_names))}")
    return name


def run(args: argparse.Namespace) -> int:
    """Run the ``ism`` subcommand; errors propagate (the CLI prints them), leaving no output file behind."""
    from ..bigwig import BigWigWriter
    from ..jobs import iter_local
    from ..modisco import ModiscoWriter, modisco_paths
    from ..progress import Progress
    from ..session import ISMSession

    _check_arguments(args)
    out = Path(args.output) if args.output is not None else None
    bigwig, modisco = getattr(args, "bigwig", None), getattr(args, "modisco", None)
    engine = getattr(args, "engine", "local")
    attr = getattr(args, "attr", False)
    quiet = getattr(args, "quiet", False)
    providers = BY_NAME[args.providers] if getattr(args, "providers", None) else None
    if engine == "ray":
        from ..ray_engine import import_ray
        import_ray()  # fail before loading anything
        providers = BY_NAME["cpu"]  # the driver only reads the model; the actors run it
    session = ISMSession(args.model, providers=providers, batch_size=getattr(args, "batch_size", None),
                         max_memory=getattr(args, "max_memory", None))
    source = _source(args, session)
    explained = _explained_output(args, session)
    request = Request(raw=out is not None and not attr, attr=out is not None and attr,
                      hypothetical=explained if modisco is not None else None,
                      track=explained if bigwig is not None else None)
    total = len(source)
    progress = Progress(total, "loci" if getattr(args, "bed", None) is not None else "sequences",
                        live=False if quiet else None)
    if engine == "ray":
        from ..ray_engine import iter_ray
        choice = getattr(args, "providers", None)
        batches = iter_ray(args.model, source, request, session.batch_size,
                           max_memory=getattr(args, "max_memory", None), address=getattr(args, "ray_address", None),
                           gpus=None if choice is None else choice == "cuda")
    else:
        batches = iter_local(session, source, request)

    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(ResultWriter(out, total, names=source.names())) if out is not None else None
        text_dtype = "S" if writer is not None and writer.kind == "h5" else "U"
        track = stack.enter_context(BigWigWriter(bigwig, source.loci, session.start, session.end)) \
            if bigwig is not None else None
        motifs = stack.enter_context(ModiscoWriter(modisco, total, explained)) if modisco is not None else None
        stack.callback(progress.close)
        for rows, arrays in batches:
            if writer is not None:
                keys = result_file_keys(request, arrays)
                writer.write(rows, {**{k: arrays[k] for k in keys}, **source.fields(rows.start, rows.stop, text_dtype)})
            if track is not None:
                track.write(rows, arrays["track"])
            if motifs is not None:
                motifs.write(rows, arrays)
            progress.advance(rows.stop - rows.start)
    written = [str(p) for p in (out, bigwig) if p is not None]
    if modisco is not None:
        written.extend(str(p) for p in modisco_paths(modisco))
    if not quiet:
        what = "attributions" if attr or out is None else "ISM results"
        print(progress.summary(what, ", ".join(written)))
    return 0
