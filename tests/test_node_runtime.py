"""A second runtime: Node.js with onnxruntime-node runs a converted model (tools/node/ism.mjs).

The test converts a model, writes a one-hot batch as .npy, runs ``node tools/node/ism.mjs`` on
it, and compares every output the script writes with :class:`yuzu_onnx.ISMSession` on the CPU
provider, to float32 rounding (|difference| <= 1e-5 x max(1, max |ISMSession's output|); the
npm package's ONNX Runtime may be another version than Python's). The largest difference per
output is printed (``pytest -s``); measured: 0 (bit for bit) with onnxruntime-node 1.30.0
against Python onnxruntime 1.31.1.

It needs ``node`` on PATH and ``tools/node/node_modules`` (``npm ci --ignore-scripts --prefix
tools/node``, which ``.ci/run`` runs when npm is there); without them it is skipped, saying why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import yuzu_onnx
from yuzu_onnx.cli import save_model
from yuzu_onnx.seqio import random_one_hot

from conftest import MODELS_DIR
from test_triton_check import convert_quietly, scalar_uint8_model

NODE_DIR = Path(__file__).resolve().parents[1] / "tools" / "node"
SCRIPT = NODE_DIR / "ism.mjs"
CASES = {
    "toynet_L80": MODELS_DIR / "toynet_L80_torchscript.onnx",
    "bpnet9_L64": MODELS_DIR / "bpnet9_L64_torchscript.onnx",
    "keras_nlc": MODELS_DIR / "keras_conv1d_L48_tf2onnx.onnx",
    "scalar_uint8": None,  # uint8 input, (N,) output
}


@pytest.fixture(scope="module")
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.skip("node is not on PATH (Node.js >= 18 runs tools/node/ism.mjs)")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node" / "package.json").is_file():
        pytest.skip(f"onnxruntime-node is not installed in {NODE_DIR}: run `npm ci --ignore-scripts --prefix "
                    "tools/node` (.ci/run does when npm is there)")
    return exe


def run_node(node: str, model: Path, X: np.ndarray, work: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Run tools/node/ism.mjs; returns its outputs by name and the JSON line it printed."""
    np.save(work / "x.npy", X)
    out = work / "node_out"
    proc = subprocess.run([node, str(SCRIPT), str(model), str(work / "x.npy"), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"node failed ({proc.returncode}):\n{proc.stderr}"
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: np.load(out / f"{name}.npy") for name in info["outputs"]}, info


@pytest.mark.parametrize("case", list(CASES))
def test_node_matches_python(node, case, tmp_path):
    src = CASES[case]
    model = tmp_path / f"{case}.ism.onnx"
    save_model(convert_quietly(src if src is not None else scalar_uint8_model()), model)
    session = yuzu_onnx.ISMSession(model, providers=["CPUExecutionProvider"])
    dtype = np.uint8 if src is None else np.float32
    X = random_one_hot(3, session.length, seed=5, layout=session.layout, dtype=dtype)

    got, info = run_node(node, model, X, tmp_path)
    assert info["dims"] == list(X.shape) and info["input"] == session.input_name
    ism_names = session.metadata.outputs
    assert list(got) == [o.name for o in session.session.get_outputs()]
    diffs = {}
    for y, (y0, y_hat) in zip(session.output_names, session.run(X), strict=True):
        for name, want in ((y, y0), (ism_names[y], y_hat)):
            g = got[name]
            assert g.shape == want.shape and g.dtype == want.dtype, (name, g.shape, want.shape, g.dtype)
            diffs[name] = float(np.max(np.abs(g - want)))
            tol = 1e-5 * max(1.0, float(np.max(np.abs(want))))
            assert diffs[name] <= tol, f"{case}/{name}: max |Node - Python| = {diffs[name]:.3g} > {tol:.3g}"
    print(f"onnxruntime-node {info['onnxruntime']['node']}, {case}: max |Node - Python| per output {diffs}")


def test_node_script_errors(node, tmp_path):
    """Wrong arguments give the usage (exit 2); a non-.npy input names the file (exit 1)."""
    proc = subprocess.run([node, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage: node ism.mjs" in proc.stderr
    bad = tmp_path / "x.npy"
    bad.write_bytes(b"not numpy")
    model = tmp_path / "toy.ism.onnx"
    save_model(convert_quietly(CASES["toynet_L80"]), model)
    proc = subprocess.run([node, str(SCRIPT), str(model), str(bad), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and f"{bad}: not a .npy file" in proc.stderr
