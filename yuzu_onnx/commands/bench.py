"""``yuzu-onnx bench``: time naive ISM against the converted graph on one provider."""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

from ..convert import convert
from ..oracle import naive_ism
from ..plan import ConversionWarning
from ..providers import BY_NAME
from ..runtime import make_session
from ..session import ISMSession
from ..seqio import random_one_hot
from . import options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand to the ``yuzu-onnx`` parser."""
    p = subparsers.add_parser(
        "bench", help="time naive ISM against the converted model",
        description="Convert MODEL in memory, then time naive ISM (the original model on every "
                    "mutant) and the converted graph on the same random sequences and provider, "
                    "after one warm-up run each. Prints the median of the repeats, the speedup, and "
                    "the FLOPs of naive ISM, the converted graph and the floor of exact ISM. For "
                    "publishable figures on the reference models use tools/benchmark.py.")
    options.add_model_argument(p)
    p.add_argument("--sequences", type=int, default=1, metavar="N", help="sequences per run (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each (default 3)")
    options.add_region_options(p)
    options.add_length_option(p)
    options.add_form_options(p)
    options.add_provider_option(p)
    p.set_defaults(func=run)


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: session start, memory planning, kernel selection
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def run(args: argparse.Namespace) -> int:
    """Run the ``bench`` subcommand: print the timings, the speedup and the FLOPs."""
    if args.sequences < 1 or args.repeats < 1:
        raise ValueError("--sequences and --repeats must be at least 1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConversionWarning)
        model, plan = convert(args.model, start=args.start, end=args.end, length=args.length, return_plan=True,
                              provider=args.provider, **options.form_arguments(args))
    providers = BY_NAME[args.provider]
    session = ISMSession(model, providers=providers, batch_size=args.sequences)
    original = make_session(str(args.model), providers)
    used = original.get_providers()[0]
    if used != providers[0] or session.provider != providers[0]:
        raise ValueError(f"{providers[0]} is not usable here (ONNX Runtime runs {used}); use --provider cpu")
    X = random_one_hot(args.sequences, plan.seq.length, alphabet=plan.seq.alphabet, layout=plan.seq.layout)
    naive = _median_seconds(lambda: naive_ism(original, X, start=plan.requested_start, end=plan.requested_end,
                                              layout=plan.seq.layout), args.repeats)
    converted = _median_seconds(lambda: session.run(X), args.repeats)
    flops = plan.totals()
    n = args.sequences
    print(f"{args.model}: L={plan.seq.length}, {plan.requested_mutants} mutants per sequence, {n} sequence(s), {used}")
    print(f"  naive ISM   {naive / n:10.4f} s/sequence   {flops['naive'] / 1e9:12,.1f} GFLOP/sequence")
    print(f"  converted   {converted / n:10.4f} s/sequence   {flops['converted'] / 1e9:12,.1f} GFLOP/sequence")
    print(f"  speedup {naive / converted:.1f}x (FLOPs {flops['naive'] / flops['converted']:.1f}x; "
          f"floor of exact ISM {flops['naive'] / flops['floor']:.1f}x); medians of {args.repeats} runs")
    return 0
