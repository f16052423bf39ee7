"""ISMSession on CUDA with a model whose probe tensors approach cuDNN's 2^31-element limit.

Converts BPNet-9 at L = 1000 (3000 probes x 64 channels x 1000 positions per sequence), asks
ISMSession for batch 16 on CUDA, prints the batch it chose (kept under the limit), runs 8
sequences and compares the first two with the same converted graph on the CPU provider.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import benchmark  # noqa: E402
from cuda_check import err_over_bound  # noqa: E402
from yuzu_onnx import convert  # noqa: E402
from yuzu_onnx.memory import format_size  # noqa: E402
from yuzu_onnx.session import ISMSession  # noqa: E402


def main() -> int:
    """Run the check; exit 1 when CUDA and CPU disagree."""
    model = convert(str(benchmark.model_path("bpnet9", 1000)))
    cuda = ISMSession(model, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], batch_size=16)
    est = cuda.memory
    print(f"provider {cuda.provider}; largest tensor {est.largest_tensor} elements per sequence; "
          f"{format_size(est.per_sequence)} per sequence; batch asked 16, chosen {cuda.batch_size}")
    X = np.eye(4, dtype=np.float32)[np.random.default_rng(0).integers(0, 4, (8, 1000))].transpose(0, 2, 1).copy()
    cuda.run(X[:1])  # warm-up (cuDNN algorithm search)
    t0 = time.perf_counter()
    got = cuda.run(X)
    print(f"8 sequences on CUDA in {time.perf_counter() - t0:.3f} s")
    ref = ISMSession(model, providers=["CPUExecutionProvider"], batch_size=2).run(X[:2])
    worst = err_over_bound([y_hat[:2] for _, y_hat in got], ref)
    print(f"CUDA vs CPU (first 2 sequences): {worst:.3f} x the exactness bound")
    return 0 if worst <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
