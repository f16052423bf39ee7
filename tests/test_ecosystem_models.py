"""The committed small copies of the ecosystem models (bpnet-lite, gReLU; ``models/ecosystem.py``).

For every manifest entry written by ``tools/export_ecosystem.py`` (those with a ``family``): the
file is small, its interface is what the manifest says, it runs in ONNX Runtime (or, where the
manifest says ONNX Runtime cannot run it, fails with the recorded reason), and, where PyTorch
and the ecosystem package are installed (the ``bench`` extra), it computes what the PyTorch
model rebuilt from ``models/ecosystem.py`` computes. Nothing here runs the converter.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import MANIFEST, MODELS_DIR, REPO, manifest_params, model_path

ENTRIES = [e for e in MANIFEST if "family" in e]
RUNS = [e for e in ENTRIES if e.get("ort_runs", True)]
REFUSED = [e for e in ENTRIES if not e.get("ort_runs", True)]
MAX_BYTES = 2 * 2**20
#: the ecosystem package each family needs to rebuild its models in PyTorch
PACKAGES = {"bpnet-lite": "bpnetlite", "grelu": "grelu"}
ATOL = 1e-4


def _session(entry: dict) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return ort.InferenceSession(str(model_path(entry)), opts, providers=["CPUExecutionProvider"])


def _input(entry: dict, seed: int = 0) -> np.ndarray:
    """One-hot batch of the entry's length: 2 sequences (1 for dynamo's static batch)."""
    n = 1 if entry["exporter"] == "dynamo" else 2
    idx = np.random.default_rng(seed).integers(0, 4, (n, entry["length"]))
    return np.ascontiguousarray(np.eye(4, dtype=np.float32)[idx].transpose(0, 2, 1))


def _ecosystem():
    """``models/ecosystem.py``, imported by path (registered so that its dataclasses resolve)."""
    name = "yuzu_models_ecosystem"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "models" / "ecosystem.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_there_are_ecosystem_models():
    families = {e["family"] for e in ENTRIES}
    assert {"bpnet-lite", "grelu"} <= families, families


@pytest.mark.parametrize("entry", manifest_params(ENTRIES))
def test_file_is_small_and_matches_its_entry(entry):
    path = model_path(entry)
    assert path.stat().st_size <= MAX_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    model = onnx.load(str(path))
    inits = {t.name for t in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in inits]
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert dims[1:] == [4, entry["length"]], dims
    assert [o.name for o in model.graph.output] == entry.get("outputs", ["y"])


@pytest.mark.parametrize("entry", manifest_params(RUNS))
def test_runs_in_onnxruntime(entry):
    X = _input(entry)
    outputs = _session(entry).run(None, {"x": X})
    assert len(outputs) == len(entry.get("outputs", ["y"]))
    for y in outputs:
        assert y.shape[0] == X.shape[0] and np.isfinite(y).all()


@pytest.mark.parametrize("entry", manifest_params(REFUSED))
def test_refused_by_onnxruntime_as_recorded(entry):
    """Files that ONNX Runtime cannot run (e.g. a dilated Conv with auto_pad SAME_UPPER) still fail
    with the recorded reason; when they stop failing, re-export them to update the manifest."""
    with pytest.raises(Exception) as info:
        _session(entry).run(None, {"x": _input(entry)})
    recorded = entry["reason"].split("Status Message: ")[-1]
    assert recorded in " ".join(str(info.value).split())


@pytest.mark.parametrize("entry", manifest_params(RUNS))
def test_matches_the_pytorch_model(entry):
    torch = pytest.importorskip("torch")
    pytest.importorskip(PACKAGES[entry["family"]])
    eco = _ecosystem()
    model, cfg = eco.build(entry["model"], "small", entry["seed"])
    assert cfg.length == entry["length"]
    assert eco.SPECS[entry["model"]].cls == entry["class"]
    X = _input(entry, seed=1)
    got = _session(entry).run(None, {"x": X})
    with torch.no_grad():
        want = model(torch.from_numpy(X))
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    for name, g, w in zip(entry.get("outputs", ["y"]), got, want):
        w = w.numpy()
        assert g.shape == w.shape, name
        err = float(np.abs(g - w).max())
        assert err < ATOL, f"{entry['file']} output {name}: max |onnxruntime - torch| = {err:.3g}"


def test_models_dir_has_no_unlisted_ecosystem_files():
    listed = {e["file"] for e in ENTRIES}
    families = ("bpnet_lite_", "chrombpnet_lite_", "grelu_")
    stray = sorted(p.name for p in MODELS_DIR.glob("*.onnx") if p.name.startswith(families) and p.name not in listed)
    assert not stray, f"ecosystem files missing from manifest.json: {stray}"
