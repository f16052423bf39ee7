"""Fit yuzu-onnx's time model (:mod:`yuzu_onnx.timing`) to measured ONNX Runtime kernel times.

For each model and plan (whole-sequence probes, tiles of a few widths) the converted graph is
profiled on one provider (``SessionOptions.enable_profiling``), and the original model at a
few batch sizes (what brute-force ISM runs). Every kernel event of the last run gives one
sample ``(op group, bytes read and written, flops, seconds)``; the bytes and flops come from
the shapes the profile records. A least-squares fit per op group (non-negative coefficients,
relative error) is written to ``yuzu_onnx/data/time_model_<provider>.json`` with the samples'
provenance, and the predicted vs measured wall time of every profiled graph is printed.

Usage::

    python tools/calibrate_time_model.py                        # committed example + zoo models
    python tools/calibrate_time_model.py --models basset bpnet  # zoo models (needs torch)

Run it on a quiet machine: the fit is only as good as the timings.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yuzu_onnx import convert  # noqa: E402
from yuzu_onnx.analyze import Analysis  # noqa: E402
from yuzu_onnx.canonicalize import canonicalize  # noqa: E402
from yuzu_onnx.load import find_sequence_input  # noqa: E402
from yuzu_onnx.memory import format_size, parse_size  # noqa: E402
from yuzu_onnx.seqio import random_one_hot  # noqa: E402
from yuzu_onnx.tiling import tile_quantum  # noqa: E402
from yuzu_onnx.timing import DATA, fit, images, narrowness, node_flops, op_group, predict_seconds  # noqa: E402

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
ITEMSIZE = {"float": 4, "int64_t": 8, "int32_t": 4, "bool": 1, "double": 8, "uint8_t": 1, "int8_t": 1}


def profile(model: onnx.ModelProto, feeds: dict, provider: str) -> tuple[list[tuple], float]:
    """Kernel samples of the second of two runs, and that run's wall time."""
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "prof")
        path = os.path.join(tmp, "m.onnx")
        onnx.save(model, path, save_as_external_data=model.ByteSize() > 2**31 - 2**26)
        sess = ort.InferenceSession(path, opts, providers=[PROVIDERS[provider]])
        sess.run(None, feeds)
        t0 = time.perf_counter()
        sess.run(None, feeds)
        wall = time.perf_counter() - t0
        events = json.load(open(sess.end_profiling()))
    runs = [e for e in events if e.get("name") == "model_run"]
    start = runs[-1]["ts"]
    samples = []
    pending = 0.0  # a ReorderInput's seconds, charged to the blocked Conv after it
    kernels = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                      and e["ts"] >= start), key=lambda e: e["ts"])
    for e in kernels:
        op = e["args"].get("op_name", "")
        if op in ("Loop", "If", "Scan"):
            continue  # its body's kernels are samples of their own
        if op in ("ReorderInput", "ReorderOutput"):
            # ONNX Runtime's copies into and out of the NCHWc layout of a 2-D Conv: no node of
            # the graph the time model reads, so they are part of that Conv's cost
            if op == "ReorderInput":
                pending += e["dur"] / 1e6
            elif samples and samples[-1][0] == "Conv2D":
                samples[-1] = (*samples[-1][:-1], samples[-1][-1] + e["dur"] / 1e6)
            continue
        shapes_in = [_shape(s) for s in e["args"].get("input_type_shape", [])]
        shapes_out = [_shape(s) for s in e["args"].get("output_type_shape", [])]
        nbytes = sum(math.prod(d) * size for d, size in shapes_in + shapes_out if d is not None)
        out = shapes_out[0][0] if shapes_out else None
        flops = node_flops(op, [d for d, _ in shapes_in], out)
        count = images(op, shapes_in[0][0] if shapes_in else None)
        group = op_group(op, shapes_in[0][0] if shapes_in else None)
        seconds = e["dur"] / 1e6
        if group == "Conv2D":
            seconds, pending = seconds + pending, 0.0
        samples.append((group, float(nbytes), flops, count, narrowness(flops, out), seconds))
    return samples, wall


def _shape(entry: dict) -> tuple[tuple[int, ...] | None, int]:
    (dtype, dims), = entry.items()
    return (tuple(dims) if dims is not None else None), ITEMSIZE.get(dtype, 4)


def plans(length: int, quantum: int) -> list[dict]:
    """Conversion options profiled for a model: the whole-sequence form and tiles of a few
    widths, chunked to the default memory budget as the planner would."""
    out = [{"form": "whole"}]
    for width in (2 * quantum, 8 * quantum, 32 * quantum):
        if width < length:
            out.append({"tile_width": width})
    return out


def zoo_models(names: list[str], length: int) -> list[Path]:
    sys.path.insert(0, str(ROOT / "tools"))
    from export_models import export  # noqa: E402 (needs torch)
    out = []
    for name in names:
        path = ROOT / "models" / "generated" / f"{name}_L{length}_torchscript.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            export(name, length, path)
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["bpnet", "factorized_basset"],
                        help="zoo models to export at --length and profile (needs torch)")
    parser.add_argument("--files", nargs="*", type=Path, default=[ROOT / "models/onnx/example_basset_L1000.onnx"],
                        help="ONNX files to profile as they are")
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--region", type=int, default=None, metavar="W",
                        help="mutate the central W positions of models longer than W (default: all)")
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu")
    parser.add_argument("--naive-batches", nargs="*", type=int, default=[64, 256])
    parser.add_argument("--samples", type=Path, default=None,
                        help="also write the kernel samples here (JSON), or, with --refit, read them")
    parser.add_argument("--refit", action="store_true", help="fit the samples of --samples, profile nothing")
    parser.add_argument("--max-memory", type=parse_size, default=parse_size("4G"),
                        help="skip plans whose activations exceed this (default 4G)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    ort.set_default_logger_severity(3)
    if args.refit:
        samples = [tuple(x) for x in json.loads(args.samples.read_text())]
        table = fit(samples)
        _write(args, [], samples, table)
        return 0
    paths = list(args.files)
    if args.models:
        try:
            paths += zoo_models(args.models, args.length)
        except ImportError as exc:
            print(f"skipping zoo models ({exc})")
    samples, checks = [], []
    for path in paths:
        seq = find_sequence_input(onnx.load(str(path)))
        X = random_one_hot(1, seq.length, seed=0, layout=seq.layout)
        region = {}
        if args.region is not None and seq.length > args.region:
            start = (seq.length - args.region) // 2
            region = {"start": start, "end": start + args.region}
        _, plan = convert(str(path), return_plan=True, **region)
        quantum = tile_quantum(Analysis(plan))
        for options in plans(seq.length, quantum):
            try:
                model, converted_plan = convert(str(path), **region, **options, return_plan=True)
            except Exception as exc:  # a model that cannot be tiled
                print(f"{path.name} {options}: {exc}")
                continue
            if converted_plan.memory.resident(1) > args.max_memory:
                print(f"{path.name} {options}: skipped, needs {format_size(converted_plan.memory.resident(1))}")
                continue
            got, wall = profile(model, {seq.name: X}, args.provider)
            samples += got
            checks.append((path.name, json.dumps(options), wall, model))
            print(f"{path.name} {options}: {len(got)} kernels, {wall:.3f} s", flush=True)
        original = onnx.load(str(path))
        for batch in args.naive_batches:
            Xb = random_one_hot(batch, seq.length, seed=0, layout=seq.layout)
            canonical, _ = canonicalize(original, seq)
            got, wall = profile(canonical, {seq.name: Xb}, args.provider)
            samples += got
            checks.append((path.name, f"original, batch {batch}", wall, (canonical, batch)))
            print(f"{path.name} original batch {batch}: {wall:.3f} s", flush=True)
    if args.samples:
        args.samples.write_text(json.dumps(samples))
    table = fit(samples)
    _write(args, [p.name for p in paths], samples, table)
    from yuzu_onnx import timing
    timing.coefficients.cache_clear()
    for name, what, wall, model in checks:
        predicted = (predict_seconds(model[0], args.provider, batch=model[1]) if isinstance(model, tuple)
                     else predict_seconds(model, args.provider))
        print(f"  {name:40s} {what:50s} measured {wall:8.3f} s  predicted {predicted:8.3f} s  "
              f"ratio {predicted / wall:5.2f}")
    return 0


def _write(args: argparse.Namespace, models: list[str], samples: list, table: dict) -> None:
    out = DATA / f"time_model_{args.provider}.json"
    out.write_text(json.dumps({
        "provider": args.provider, "onnxruntime": ort.__version__, "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "models": models, "samples": len(samples),
        "ops": {op: vars(c) for op, c in sorted(table.items())}}, indent=1) + "\n")
    print(f"wrote {out} ({len(table)} op groups from {len(samples)} samples)")


if __name__ == "__main__":
    raise SystemExit(main())
