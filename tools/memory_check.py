"""Compare the plan's memory estimate with ONNX Runtime's measured peak (CPU provider).

For each model: convert it, then in a fresh subprocess per batch size create an ONNX Runtime
session, note the resident memory (VmRSS) just before the first run, run, and read the peak
(VmHWM) over three runs. Measured activations = peak - RSS before the runs. Sessions are
created as ``ISMSession`` creates them by default (:func:`yuzu_onnx.runtime.make_session`:
ONNX Runtime's CPU arena, no memory pattern). The estimate is the converted model's own
(:func:`yuzu_onnx.memory.estimate_memory`: shapes only, nothing runs); models are converted with
the default plan (``--region W``: the central W positions mutated).

Usage::

    python tools/memory_check.py --models basset deepsea ... [--length 1000] [--batches 1 4]
    python tools/memory_check.py --files models/onnx/*.onnx
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

CHILD = r"""
import sys, numpy as np, onnxruntime as ort
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
path, batch = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, sys.argv[3])
from yuzu_onnx.runtime import make_session
sess = make_session(path, ['CPUExecutionProvider'])  # as ISMSession creates it
inp = sess.get_inputs()[0]
shape = [batch if not isinstance(d, int) else d for d in inp.shape]
X = np.zeros(shape, np.float32)
A = 4 if 4 in shape[1:] else min(shape[1:])
axis = shape.index(A, 1)
idx = np.random.default_rng(0).integers(0, A, [s for i, s in enumerate(shape) if i != axis])
np.put_along_axis(X, np.expand_dims(idx, axis), 1.0, axis=axis)
open('/proc/self/clear_refs', 'w').write('5')
before = status('VmRSS:')
for _ in range(3):  # the heap reaches its steady state after a few runs
    sess.run(None, {inp.name: X})
print(status('VmHWM:') - before)
"""


def measure(path: Path, batch: int) -> int:
    """Peak RSS growth of one run on ``batch`` sequences, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(batch), str(ROOT)], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    import benchmark
    import onnx

    from yuzu_onnx import convert
    from yuzu_onnx.load import find_sequence_input
    from yuzu_onnx.memory import estimate_memory, format_size

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=[])
    parser.add_argument("--files", nargs="*", type=Path, default=[])
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--region", type=int, default=None, metavar="W",
                        help="mutate the central W positions (default: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    targets = [(m, benchmark.model_path(m, 2114 if m == "chrombpnet" else args.length)) for m in args.models]
    targets += [(f.stem, f) for f in args.files]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in targets:
            length = find_sequence_input(onnx.load(str(path))).length
            start = 0 if args.region is None else (length - args.region) // 2
            model = convert(str(path), start=start, end=None if args.region is None else start + args.region)
            est = estimate_memory(model)
            out = Path(tmp) / f"{name}.ism.onnx"
            out.write_bytes(model.SerializeToString())
            for b in args.batches:
                measured = measure(out, b)
                predicted = est.resident(b)
                ratio = predicted / measured if measured else float("inf")
                rows.append({"model": name, "batch": b, "predicted": predicted, "measured": measured,
                             "ratio": ratio})
                print(f"{name:<36} B={b:<3} predicted {format_size(predicted):>11}  measured "
                      f"{format_size(measured):>11}  predicted/measured {ratio:5.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
