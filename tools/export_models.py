"""Export the reference models in ``models/zoo.py`` to ONNX.

Examples
--------
Export one model::

    python tools/export_models.py basset --length 1000 -o basset.onnx
    python tools/export_models.py bpnet --length 1000 --exporter dynamo

Regenerate the small test models in ``models/onnx/`` and their manifest::

    python tools/export_models.py --test-files

Every export is checked with ``onnx.checker`` and against PyTorch's output on
a random one-hot batch run with onnxruntime (CPU).

The graph input is named ``x``. A model with one output names it ``y``; a
model with several (``bpnet9``, ``chrombpnet``) uses the names in its
``output_names`` attribute (``profile``, ``counts``), which the manifest lists
under ``"outputs"``. Manifest entries written by other tools (such as
``tools/export_keras.py``, exporter ``tf2onnx``) are kept by ``--test-files``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parents[1]
TEST_DIR = ROOT / "models" / "onnx"
OPSET = 17
ATOL = 1e-4
EXTERNAL_DATA_BYTES = 2**31 - 2**26  # keep weights external above ~2 GB (protobuf limit)
EXPORTERS = ("torchscript", "dynamo")

# (model, width, lengths): one odd length, and one where pooling truncates
# (L not divisible by the pool product: 16 for DeepSEA, 48 for the Bassets,
# 8 for Basenji, 2 for attention). ChromBPNet's valid convolutions need
# L > 1114, so the test files use the scaled-down chrombpnet_mini (4 dilated
# layers, profile cropped by 10 on each side: out_length = L - 174, here 26
# and 37); full-size chrombpnet maps 2114 -> 1000 exactly.
TEST_SET: list[tuple[str, float, tuple[int, ...]]] = [
    ("onelayer", 1.0, (41, 64)),
    ("toynet", 1.0, (45, 80)),
    ("deepsea", 0.05, (67, 70)),
    ("basset", 0.1, (101, 110)),
    ("factorized_basset", 0.1, (99, 118)),
    ("bpnet", 1.0, (61, 100)),
    ("bpnet9", 0.25, (64, 97)),
    ("chrombpnet_mini", 0.25, (200, 211)),
    ("basenji", 0.25, (64, 83)),
    ("attention", 0.5, (40, 51)),
]
TEST_SEED = 0


def _load_zoo() -> types.ModuleType:
    """Import ``models/zoo.py`` by path (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("yuzu_models_zoo", ROOT / "models" / "zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


zoo = _load_zoo()


def export(name: str, length: int, out: Path, width: float = 1.0, seed: int = 0,
           exporter: str = "torchscript") -> Path:
    """Build a zoo model, export it to ONNX and verify the result.

    Parameters
    ----------
    name : str
        Model name in ``zoo.MODELS``.
    length : int
        Sequence length ``L`` of the ``(N, 4, L)`` input.
    out : pathlib.Path
        Destination ``.onnx`` file.
    width : float, optional
        Channel / unit multiplier.
    seed : int, optional
        Weight seed.
    exporter : {"torchscript", "dynamo"}, optional
        ``"torchscript"``: ``dynamo=False`` with a dynamic batch axis.
        ``"dynamo"``: ``dynamo=True`` with static shapes and batch 1.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    RuntimeError
        If onnxruntime's output differs from PyTorch's by ``ATOL`` or more.
    """
    model = zoo.build(name, length, width, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed + 1)
    names = output_names(model)
    kwargs = dict(input_names=["x"], output_names=names, opset_version=OPSET)
    if exporter == "torchscript":
        x = zoo.random_one_hot(2, length, gen)
        torch.onnx.export(model, (x,), str(out), dynamo=False,
                          dynamic_axes={n: {0: "batch"} for n in ["x", *names]}, **kwargs)
    elif exporter == "dynamo":
        x = zoo.random_one_hot(1, length, gen)
        large = sum(p.numel() * p.element_size() for p in model.state_dict().values()) > EXTERNAL_DATA_BYTES
        torch.onnx.export(model, (x,), str(out), dynamo=True, external_data=large, **kwargs)
        _inline_small_external_data(out)
    else:
        raise ValueError(f"unknown exporter {exporter!r}; choose from {EXPORTERS}")
    verify(out, model, x)
    return out


def output_names(model: torch.nn.Module) -> list[str]:
    """Names of the model's ONNX outputs: its ``output_names`` attribute, or ``["y"]``."""
    return list(getattr(model, "output_names", ("y",)))


def _inline_small_external_data(path: Path) -> None:
    """Re-save ``path`` as one self-contained file if it has external data but is small."""
    proto = onnx.load(str(path), load_external_data=False)
    files = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    if not files or sum((path.parent / f).stat().st_size for f in files) > EXTERNAL_DATA_BYTES:
        return
    proto = onnx.load(str(path))
    onnx.save(proto, str(path), save_as_external_data=False)
    for f in files:
        (path.parent / f).unlink()


def verify(path: Path, model: torch.nn.Module, x: torch.Tensor) -> float:
    """Check an exported model and compare onnxruntime with PyTorch on ``x``.

    Parameters
    ----------
    path : pathlib.Path
        The ``.onnx`` file (external data, if any, next to it).
    model : torch.nn.Module
        The exported PyTorch model.
    x : torch.Tensor
        Input batch of shape ``(N, 4, L)``.

    Returns
    -------
    float
        Maximum absolute difference between the two outputs (over all outputs).

    Raises
    ------
    RuntimeError
        If the difference is ``ATOL`` or more, or the shapes differ.
    """
    onnx.checker.check_model(str(path), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = output_names(model)
    got = sess.run(names, {"x": x.numpy()})
    with torch.no_grad():
        want = model(x)
    want = [t.numpy() for t in (want if isinstance(want, tuple) else (want,))]
    err = 0.0
    for name, g, w in zip(names, got, want, strict=True):
        if g.shape != w.shape:
            raise RuntimeError(f"{path}: onnxruntime output {name!r} shape {g.shape} != torch {w.shape}")
        err = max(err, float(np.abs(g - w).max()))
    if not err < ATOL:
        raise RuntimeError(f"{path}: onnxruntime differs from torch by {err:.3g} (tolerance {ATOL})")
    return err


def test_files(out_dir: Path = TEST_DIR) -> list[dict]:
    """(Re)generate the test models and ``manifest.json`` in ``out_dir``.

    Returns
    -------
    list of dict
        The manifest entries: file, model, exporter, length, width, seed, and
        for models with several outputs, outputs (their names). Entries of
        other exporters already in the manifest (``tools/export_keras.py``)
        are kept, after these.
    """
    manifest = []
    for name, width, lengths in TEST_SET:
        names = getattr(zoo.MODELS[name], "output_names", None)
        for length in lengths:
            for exporter in EXPORTERS:
                path = out_dir / f"{name}_L{length}_{exporter}.onnx"
                export(name, length, path, width, TEST_SEED, exporter)
                print(f"exported {path.relative_to(ROOT)} ({path.stat().st_size / 1024:.0f} KiB)")
                entry = {"file": path.name, "model": name, "exporter": exporter,
                         "length": length, "width": width, "seed": TEST_SEED}
                if names:
                    entry["outputs"] = list(names)
                manifest.append(entry)
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists():
        # keep the entries other scripts own: Keras (tools/export_keras.py) and the ecosystem
        # models (tools/export_ecosystem.py, marked by their "family")
        manifest += [e for e in json.loads(manifest_path.read_text())
                     if e.get("exporter") not in EXPORTERS or "family" in e]
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", choices=sorted(zoo.MODELS), help="model to export")
    parser.add_argument("--length", type=int, help="sequence length L")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--exporter", choices=EXPORTERS, default="torchscript")
    parser.add_argument("-o", "--output", type=Path, help="output file (default MODEL_LL_EXPORTER.onnx)")
    parser.add_argument("--test-files", action="store_true",
                        help=f"regenerate the test models in {TEST_DIR.relative_to(ROOT)}/")
    args = parser.parse_args(argv)
    if args.test_files:
        if args.model:
            parser.error("--test-files takes no model")
        test_files()
        return 0
    if not args.model or args.length is None:
        parser.error("MODEL and --length are required (or use --test-files)")
    out = args.output or Path(f"{args.model}_L{args.length}_{args.exporter}.onnx")
    export(args.model, args.length, out, args.width, args.seed, args.exporter)
    print(f"exported {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
