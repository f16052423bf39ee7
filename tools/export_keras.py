"""Export a small channels-last Keras model to ONNX with tf2onnx (test files).

The model takes one-hot DNA in the Keras layout ``(N, L, 4)`` ("NLC"), so it
tests sequence inputs whose alphabet axis is last:

    Input (L, 4) -> Conv1D 16 k7 "same" + ReLU -> MaxPooling1D 2
    -> Conv1D 16 k5 dilation 2 "same" + ReLU -> Flatten
    -> Dense 8 + ReLU -> Dense 2 + sigmoid

Weights are drawn from a seeded NumPy generator (kernels N(0, 1 / fan_in),
biases N(0, 0.1^2)). Each export is checked with ``onnx.checker`` and against
Keras on a random one-hot batch run with onnxruntime (CPU). The ONNX files
only use standard ONNX operators: TensorFlow is needed to regenerate them,
not to use them.

This script needs TensorFlow and tf2onnx, which the project does not depend
on; run it from a separate environment that can also import this checkout's
``yuzu_onnx`` (for its test inputs), e.g.::

    python -m venv tfvenv && tfvenv/bin/pip install tensorflow-cpu tf2onnx onnxruntime onnx-graphsurgeon
    tfvenv/bin/python tools/export_keras.py            # writes the test files
    tfvenv/bin/python tools/export_keras.py --length 200 -o keras.onnx

``--test-files`` (the default without ``-o``) writes
``models/onnx/keras_conv1d_L{L}_tf2onnx.onnx`` for ``TEST_LENGTHS`` and
replaces this script's entries (exporter ``tf2onnx``) in
``models/onnx/manifest.json``, keeping all others.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from tensorflow import keras  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from yuzu_onnx.seqio import random_one_hot  # noqa: E402

TEST_DIR = ROOT / "models" / "onnx"
OPSET = 17
ATOL = 1e-4
NAME = "keras_conv1d"
EXPORTER = "tf2onnx"
TEST_LENGTHS = (48, 61)  # one even, one odd (the pooling floors)
TEST_SEED = 0


def build(length: int, seed: int = 0) -> keras.Model:
    """Build the Keras model for sequences of length ``length`` with seeded random weights.

    Parameters
    ----------
    length : int
        Sequence length ``L`` of the ``(N, L, 4)`` input.
    seed : int, optional
        Seed of the weights; the same seed gives the same weights.

    Returns
    -------
    keras.Model
        A Sequential model with input ``x`` and output layer ``y``.
    """
    model = keras.Sequential([
        keras.Input((length, 4), name="x"),
        keras.layers.Conv1D(16, 7, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling1D(2, name="pool1"),
        keras.layers.Conv1D(16, 5, dilation_rate=2, padding="same", activation="relu", name="conv2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(8, activation="relu", name="dense1"),
        keras.layers.Dense(2, activation="sigmoid", name="y"),
    ], name=NAME)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            kernel, bias = weights
            fan_in = int(np.prod(kernel.shape[:-1]))
            layer.set_weights([
                rng.normal(0.0, fan_in ** -0.5, kernel.shape).astype(np.float32),
                rng.normal(0.0, 0.1, bias.shape).astype(np.float32),
            ])
    return model


def export(length: int, out: Path, seed: int = 0) -> Path:
    """Build the Keras model, export it with tf2onnx and verify the result.

    Parameters
    ----------
    length : int
        Sequence length ``L`` of the ``(N, L, 4)`` input.
    out : pathlib.Path
        Destination ``.onnx`` file.
    seed : int, optional
        Weight seed.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    RuntimeError
        If onnxruntime's output differs from Keras's by ``ATOL`` or more, or
        the graph uses an operator outside the standard ONNX domain.
    """
    model = build(length, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = (tf.TensorSpec((None, length, 4), tf.float32, name="x"),)
    # tf2onnx.convert.from_keras does not handle Keras 3 models; export the call as a tf.function.
    forward = tf.function(lambda x: {"y": model(x, training=False)}, input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    domains = {n.domain for n in proto.graph.node}
    if not domains <= {"", "ai.onnx"}:
        raise RuntimeError(f"{out}: the graph uses operators of non-standard domains {sorted(domains)}")
    _stable_names(proto)
    onnx.save(proto, str(out))
    verify(out, model, random_one_hot(3, length, seed + 1, layout="NLC"))
    return out


def _stable_names(proto: onnx.ModelProto) -> None:
    """Replace tf2onnx's run-dependent names so that re-exports are byte-identical.

    Folded constants get counter-based names (``const_fold_opt__71``) that
    change from run to run, and so do the symbolic batch dimensions
    (``unk__77``). Each initializer is renamed after its first consumer
    (``NODE/inputK``), initializers are sorted by name, and the batch
    dimension of the inputs and outputs is called ``batch``.
    """
    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    rename: dict[str, str] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in initializers and name not in rename:
                rename[name] = f"{node.name}/input{k}"
    for node in graph.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
    tensors = []
    for t in graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(t)
        copy.name = rename.get(t.name, t.name)
        tensors.append(copy)
    del graph.initializer[:]
    graph.initializer.extend(sorted(tensors, key=lambda t: t.name))
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"


def verify(path: Path, model: keras.Model, x: np.ndarray) -> float:
    """Check an exported model and compare onnxruntime with Keras on ``x``.

    Returns
    -------
    float
        Maximum absolute difference between the two outputs.

    Raises
    ------
    RuntimeError
        If the difference is ``ATOL`` or more, or the shapes differ.
    """
    onnx.checker.check_model(str(path), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
    want = np.asarray(model(x, training=False))
    if got.shape != want.shape:
        raise RuntimeError(f"{path}: onnxruntime output shape {got.shape} != Keras {want.shape}")
    err = float(np.abs(got - want).max())
    if not err < ATOL:
        raise RuntimeError(f"{path}: onnxruntime differs from Keras by {err:.3g} (tolerance {ATOL})")
    return err


def test_files(out_dir: Path = TEST_DIR) -> list[dict]:
    """(Re)generate the Keras test models and their entries in ``manifest.json``.

    Returns
    -------
    list of dict
        This script's manifest entries: file, model, exporter, length, width
        (always 1.0), seed, layout (``"NLC"``).
    """
    entries = []
    for length in TEST_LENGTHS:
        path = out_dir / f"{NAME}_L{length}_{EXPORTER}.onnx"
        export(length, path, TEST_SEED)
        print(f"exported {path.relative_to(ROOT)} ({path.stat().st_size / 1024:.0f} KiB)")
        entries.append({"file": path.name, "model": NAME, "exporter": EXPORTER, "length": length,
                        "width": 1.0, "seed": TEST_SEED, "layout": "NLC"})
    manifest_path = out_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else []
    manifest = [e for e in manifest if e.get("exporter") != EXPORTER] + entries
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return entries


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, help="sequence length L (with -o)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("-o", "--output", type=Path, help="export one model to this file")
    parser.add_argument("--test-files", action="store_true",
                        help=f"regenerate the Keras test models in {TEST_DIR.relative_to(ROOT)}/ (the default)")
    args = parser.parse_args(argv)
    if args.output is None:
        if args.length is not None:
            parser.error("--length needs -o")
        test_files()
        return 0
    if args.test_files or args.length is None:
        parser.error("-o needs --length and excludes --test-files")
    export(args.length, args.output, args.seed)
    print(f"exported {args.output} ({args.output.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
