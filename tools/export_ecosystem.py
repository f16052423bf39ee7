"""Export models built from the ecosystem's own classes (``models/ecosystem.py``) to ONNX.

bpnet-lite's ``BPNet`` and ``ChromBPNet`` and gReLU's ``ConvModel``, ``DilatedConvModel``,
``BorzoiModel`` and ``EnformerModel``, with seeded random weights, exported with both of
PyTorch's exporters as a user would call ``torch.onnx.export``, opset 17, input ``x``, in three
ways: ``torchscript`` (``dynamo=False``, dynamic batch axis), ``dynamo`` (``dynamo=True`` with no
shapes given: static shapes, batch 1, the zoo's convention) and ``dynamo_batch`` (``dynamo=True``
with a dynamic batch axis). Needs the ``bench`` extra (``pip install -e .[bench]``) and
bpnet-lite (``pip install --no-deps bpnet-lite==1.1.0``, see pyproject.toml).

Examples
--------
Full-size models (bpnet-lite's 2114 bp windows, ...) into ``models/generated/`` (git-ignored)::

    python tools/export_ecosystem.py --full

One model, one exporter::

    python tools/export_ecosystem.py --full --models bpnet_lite --exporters dynamo

The small test copies into ``models/onnx/`` and their entries in ``manifest.json`` (entries
of other tools are kept)::

    python tools/export_ecosystem.py --test-files

Each export is checked with ``onnx.checker`` and against PyTorch on a random one-hot batch in
ONNX Runtime (CPU). A file that ONNX Runtime refuses to run, or that differs from PyTorch, is
reported and kept, since it is what the exporter wrote. Each small copy is also converted and
checked against naive ISM on one sequence; its manifest entry records ``"ort_runs": false``
(with an ``"oracle"`` twin) and/or ``"converts": false`` with the ``"reason"`` where either
fails today.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
TEST_DIR = ROOT / "models" / "onnx"
GENERATED = ROOT / "models" / "generated"
OPSET = 17
ATOL = 1e-4
#: torchscript: ``dynamo=False`` with a dynamic batch axis; dynamo: ``dynamo=True`` as called with
#: no shapes (static shapes, batch 1, as tools/export_models.py exports the zoo); dynamo_batch:
#: ``dynamo=True`` with a dynamic batch axis (``dynamic_shapes``), which naive ISM needs to run
#: many mutants per call.
EXPORTERS = ("torchscript", "dynamo", "dynamo_batch")
SEED = 0
EXTERNAL_DATA_BYTES = 2**31 - 2**26  # weights above ~2 GB stay in a side file (protobuf limit)
#: Committed test copies must stay small; a larger one is refused (models/generated/ is for those).
MAX_TEST_FILE_BYTES = 2 * 2**20
#: Ecosystem models whose small copy is committed. gReLU's EnformerModel is not: neither exporter
#: handles it (see models/ecosystem.py), and it cannot be built under ~2.4 M parameters (10 MB).
TEST_MODELS = ("bpnet_lite", "chrombpnet_lite", "grelu_conv", "grelu_dilated", "grelu_borzoi", "grelu_attnpool")


def _load_ecosystem() -> types.ModuleType:
    """Import ``models/ecosystem.py`` by path (it is not part of the package)."""
    name = "yuzu_models_ecosystem"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "models" / "ecosystem.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


eco = _load_ecosystem()


class ExportCheckError(RuntimeError):
    """The exported file does not load in ONNX Runtime, or its outputs differ from PyTorch."""


def file_name(name: str, length: int, exporter: str) -> str:
    """``{name}_L{length}_{exporter}.onnx``."""
    return f"{name}_L{length}_{exporter}.onnx"


def export(name: str, size: str, exporter: str, out: Path, seed: int = SEED) -> float:
    """Build an ecosystem model, export it with ``exporter`` to ``out`` and check it.

    Returns
    -------
    float
        Max abs difference between ONNX Runtime and PyTorch over all outputs.

    Raises
    ------
    ExportCheckError
        If ONNX Runtime cannot load the file or its outputs differ by ``ATOL`` or more (the
        file is written all the same).
    """
    model, cfg = eco.build(name, size, seed)
    names = eco.output_names(name)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed + 1)
    kwargs = dict(input_names=["x"], output_names=names, opset_version=OPSET)
    with _quiet_exporters():
        if exporter == "torchscript":
            x = eco.random_one_hot(2, cfg.length, gen)
            torch.onnx.export(model, (x,), str(out), dynamo=False,
                              dynamic_axes={n: {0: "batch"} for n in ["x", *names]}, **kwargs)
        elif exporter in ("dynamo", "dynamo_batch"):
            batch = exporter == "dynamo_batch"
            x = eco.random_one_hot(2 if batch else 1, cfg.length, gen)
            large = sum(p.numel() * p.element_size() for p in model.state_dict().values()) > EXTERNAL_DATA_BYTES
            shapes = dict(dynamic_shapes=({0: torch.export.Dim("batch")},)) if batch else {}
            # The dynamo exporter writes opset 18 when onnx's version converter has no adapter
            # down to 17 for one of its ops (it logs the failure); the file is kept as written.
            torch.onnx.export(model, (x,), str(out), dynamo=True, external_data=large, verbose=False,
                              **shapes, **kwargs)
            _inline_small_external_data(out)
        else:
            raise ValueError(f"unknown exporter {exporter!r}; choose from {EXPORTERS}")
    return verify(out, model, names, x)


@contextlib.contextmanager
def _quiet_exporters():
    """Silence the exporters' warnings and progress logs (tracer warnings, opset down-conversion)."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "torch.onnx", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.CRITICAL)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _inline_small_external_data(path: Path) -> None:
    """Re-save ``path`` as one self-contained file if the exporter split off small weights."""
    proto = onnx.load(str(path), load_external_data=False)
    files = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    if not files or sum((path.parent / f).stat().st_size for f in files) > EXTERNAL_DATA_BYTES:
        return
    proto = onnx.load(str(path))
    onnx.save(proto, str(path), save_as_external_data=False)
    for f in files:
        (path.parent / f).unlink()


def verify(path: Path, model: torch.nn.Module, names: list[str], x: torch.Tensor) -> float:
    """``onnx.checker`` plus ONNX Runtime against PyTorch on ``x``; the max abs difference.

    Raises
    ------
    ExportCheckError
        If ONNX Runtime refuses the file or differs from PyTorch by ``ATOL`` or more.
    """
    onnx.checker.check_model(str(path), full_check=True)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4  # the exception carries ONNX Runtime's message
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        got = sess.run(names, {"x": x.numpy()})
    except Exception as exc:  # ONNX Runtime raises several unrelated types
        raise ExportCheckError(f"ONNX Runtime cannot run it: {' '.join(str(exc).split())}") from exc
    with torch.no_grad():
        want = model(x)
    want = [t.numpy() for t in (want if isinstance(want, tuple) else (want,))]
    err = 0.0
    for name, g, w in zip(names, got, want, strict=True):
        if g.shape != w.shape:
            raise ExportCheckError(f"ONNX Runtime output {name!r} shape {g.shape} != torch {w.shape}")
        err = max(err, float(np.abs(g - w).max()))
    if not err < ATOL:
        raise ExportCheckError(f"ONNX Runtime differs from torch by {err:.3g} (tolerance {ATOL})")
    return err


def manifest_entry(name: str, exporter: str, seed: int = SEED) -> dict:
    """The manifest entry of a small copy (the keys every entry has, plus where it came from)."""
    spec = eco.SPECS[name]
    cfg = spec.small
    entry = {"file": file_name(name, cfg.length, exporter), "model": name, "exporter": exporter,
             "length": cfg.length, "width": 1.0, "seed": seed, "family": spec.family, "class": spec.cls,
             "config": _jsonable(cfg.kwargs)}
    if spec.outputs != ("y",):
        entry["outputs"] = list(spec.outputs)
    return entry


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _jsonable(value):
    """Constructor arguments as JSON (they are plain numbers, strings, None and dicts)."""
    return json.loads(json.dumps(value))


def conversion_status(path: Path, oracle: Path | None = None) -> str | None:
    """Why yuzu-onnx cannot handle ``path`` today, or None when it can.

    Converts the file (whole sequence mutated), runs the converted graph and naive ISM on one
    random sequence (``yuzu_onnx.verify``; naive ISM on ``oracle`` when given, an export of the
    same model that ONNX Runtime runs), and requires agreement to 1e-3 of the largest delta.
    Any exception is the reason.
    """
    from yuzu_onnx import convert
    from yuzu_onnx.verify import verify as verify_ism

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = convert(str(path))
        report = verify_ism(str(oracle or path), converted, sequences=1)
    except Exception as exc:  # the reason is recorded, whatever raised it
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    bad = [c for c in report.checks if not c.relative_error <= 1e-3]
    if bad:
        return "; ".join(f"{c.output}: relative error {c.relative_error:.2g} against naive ISM" for c in bad)
    return None


def test_files(models: list[str], exporters: list[str], out_dir: Path = TEST_DIR) -> list[dict]:
    """Export the small copies and replace this script's entries in ``manifest.json``.

    Entries of other tools are kept in place; this script's entries (those with a ``family``)
    are rewritten after them. Every copy is kept (it is what the exporter wrote). A copy that
    ONNX Runtime cannot run gets ``"ort_runs": false`` and ``"oracle"``: the ``dynamo_batch``
    export of the same model (same weights and math; ONNX Runtime runs it), on which naive ISM
    can be computed instead. One that yuzu-onnx cannot convert, run or get right on one
    sequence today (:func:`conversion_status`, against the oracle where there is one) gets
    ``"converts": false``. Either comes with the ``"reason"``.

    Returns
    -------
    list of dict
        The entries written.
    """
    entries, flagged = [], []
    for name in models:
        done: dict[str, tuple[dict, Path, str]] = {}
        for exporter in exporters:
            entry = manifest_entry(name, exporter)
            path = out_dir / entry["file"]
            try:
                err = export(name, "small", exporter, path)
                note = f"max |ort - torch| {err:.1e}"
            except ExportCheckError as exc:
                entry.update(ort_runs=False, reason=str(exc))
                note = f"FAILS ITS CHECK: {exc}"
            size = path.stat().st_size
            if size > MAX_TEST_FILE_BYTES:
                raise SystemExit(f"{_shown(path)} is {size / 2**20:.1f} MiB, over the "
                                 f"{MAX_TEST_FILE_BYTES / 2**20:.0f} MiB limit for committed test models")
            done[exporter] = (entry, path, f"{size / 1024:.0f} KiB, {note}")
        for exporter, (entry, path, note) in done.items():
            oracle = None
            if not entry.get("ort_runs", True):
                twin = done.get("dynamo_batch")
                if twin is not None and twin[0].get("ort_runs", True):
                    entry["oracle"] = twin[0]["file"]
                    oracle = twin[1]
            if entry.get("ort_runs", True) or oracle is not None:
                reason = conversion_status(path, oracle)
            else:
                reason = "no export of this model that ONNX Runtime runs, for naive ISM"
            if reason is not None:
                entry["converts"] = False
                entry["reason"] = "; ".join(filter(None, [entry.get("reason"), reason]))
                note += f"; yuzu-onnx CANNOT HANDLE IT: {reason}"
            print(f"exported {_shown(path)} ({note})", flush=True)
            entries.append(entry)
            if "reason" in entry:
                flagged.append(f"{entry['file']}: {entry['reason']}")
    manifest_path = out_dir / "manifest.json"
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else []
    redone = {(name, exp) for name in models for exp in exporters}
    kept = [e for e in old if not ("family" in e and (e["model"], e["exporter"]) in redone)]
    order = {m: i for i, m in enumerate(eco.SPECS)}
    ours = sorted([e for e in kept if "family" in e] + entries,
                  key=lambda e: (order.get(e["model"], len(order)), EXPORTERS.index(e["exporter"])
                                 if e["exporter"] in EXPORTERS else len(EXPORTERS)))
    manifest_path.write_text(json.dumps([e for e in kept if "family" not in e] + ours, indent=1) + "\n")
    if flagged:
        print(f"{len(flagged)} flagged manifest entr{'y' if len(flagged) == 1 else 'ies'}:\n  " + "\n  ".join(flagged))
    return entries


def full_files(models: list[str], exporters: list[str], out_dir: Path = GENERATED) -> list[Path]:
    """Export the full-size models into ``out_dir``; report (and keep) those failing their check."""
    paths = []
    for name in models:
        length = eco.SPECS[name].full.length
        for exporter in exporters:
            path = out_dir / file_name(name, length, exporter)
            try:
                err = export(name, "full", exporter, path)
                print(f"exported {_shown(path)} ({path.stat().st_size / 2**20:.2f} MiB, "
                      f"max |ort - torch| {err:.1e})", flush=True)
            except ExportCheckError as exc:
                print(f"exported {_shown(path)} but it FAILS its check: {exc}", flush=True)
            except Exception as exc:  # the exporter itself failed: report it and go on
                print(f"EXPORT FAILED: {name} ({exporter}): {type(exc).__name__}: "
                      f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", flush=True)
                continue
            paths.append(path)
    return paths


def full_path(name: str, exporter: str = "torchscript", export_missing: bool = True) -> Path:
    """``models/generated/{name}_L{L}_{exporter}.onnx`` of a full-size model, exported if missing."""
    path = GENERATED / file_name(name, eco.SPECS[name].full.length, exporter)
    if export_missing and not path.is_file():
        print(f"exporting {name} ({exporter}) to {_shown(path)} ...", flush=True)
        export(name, "full", exporter, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--full", action="store_true", help=f"full-size models into {GENERATED.relative_to(ROOT)}/")
    what.add_argument("--test-files", action="store_true",
                      help=f"small copies into {TEST_DIR.relative_to(ROOT)}/ and manifest.json")
    parser.add_argument("--models", nargs="+", choices=sorted(eco.SPECS), metavar="NAME",
                        help=f"default: all ({' '.join(eco.SPECS)}; --test-files: {' '.join(TEST_MODELS)})")
    parser.add_argument("--exporters", nargs="+", choices=EXPORTERS, default=list(EXPORTERS))
    args = parser.parse_args(argv)
    if args.test_files:
        models = args.models or list(TEST_MODELS)
        too_big = [m for m in models if m not in TEST_MODELS]
        if too_big:
            parser.error(f"no small copy of {too_big} is committed (see TEST_MODELS)")
        test_files(models, args.exporters)
    else:
        full_files(args.models or list(eco.SPECS), args.exporters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
