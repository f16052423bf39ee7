"""Exactness of converted graphs on ONNX Runtime's CUDA execution provider.

For every committed test model (models/onnx/manifest.json) this converts the model, runs naive
ISM and the converted graph on CUDA on the same random sequences (batch 2, every output), and
prints the error against the same bound the CPU tests use
(``max|err| <= 1e-4 * max|delta| + 5e-5 * max|y0|``). It also profiles one converted run and counts
the nodes ONNX Runtime placed on the CPU provider (each is a host round trip on a GPU).

TF32: ONNX Runtime's CUDA provider may run float32 Conv/MatMul in TF32 on Ampere and later;
naive ISM and the converted graph then round differently, so both settings are reported.

Usage::

    python tools/cuda_check.py [--tf32 0 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yuzu_onnx import convert  # noqa: E402
from yuzu_onnx.oracle import naive_ism  # noqa: E402
from yuzu_onnx.providers import EXACT_CUDA_OPTIONS  # noqa: E402
from yuzu_onnx.seqio import random_one_hot  # noqa: E402

RTOL, NOISE = 1e-4, 5e-5


DRY_RUN = False  # --cpu: run the same checks on the CPU provider (to test this script without a GPU)


def providers(tf32: int) -> list:
    """CUDA first, with TF32 on or off."""
    if DRY_RUN:
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {**EXACT_CUDA_OPTIONS, "use_tf32": str(tf32)}), "CPUExecutionProvider"]


def cpu_nodes(model_bytes: bytes, feed: dict, tf32: int) -> Counter:
    """Op types of the nodes ONNX Runtime ran on the CPU provider in one profiled run."""
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "p")
    sess = ort.InferenceSession(model_bytes, opts, providers=providers(tf32))
    sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    return Counter(e["args"].get("op_name", "?") for e in events
                   if e.get("cat") == "Node" and e["args"].get("provider") == "CPUExecutionProvider" and not DRY_RUN
                   and e["name"].endswith("_kernel_time"))


def check_file(entry: dict, tf32: int) -> dict:
    """Convert one manifest entry and compare it with naive ISM, both on CUDA."""
    path = ROOT / "models" / "onnx" / entry["file"]
    layout = entry.get("layout", "NCL")
    converted = convert(str(path), outputs=entry.get("outputs"))
    alphabet = 4
    X = random_one_hot(2, entry["length"], seed=1, alphabet=alphabet, layout=layout)
    naive = naive_ism(str(path), X, providers=providers(tf32), layout=layout)
    data = converted.SerializeToString()
    sess = ort.InferenceSession(data, providers=providers(tf32))
    assert DRY_RUN or sess.get_providers()[0] == "CUDAExecutionProvider", sess.get_providers()
    feed = {sess.get_inputs()[0].name: X}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    ism_names = [n for n in outs if n.endswith("_ism")]
    converted_out = [outs[name] for name in ism_names]
    naive_cpu = naive_ism(str(path), X, providers=["CPUExecutionProvider"], layout=layout)
    return {"file": entry["file"], "tf32": tf32,
            "err_over_bound": err_over_bound(converted_out, naive),
            "naive_cuda_vs_cpu": err_over_bound([y for _, y in naive], naive_cpu),
            "converted_cuda_vs_cpu": err_over_bound(converted_out, naive_cpu),
            "cpu_nodes": dict(cpu_nodes(data, feed, tf32))}


def err_over_bound(y_hats: list[np.ndarray], reference: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Worst ``max|y_hat - ref| / bound`` over outputs (the CPU tests' bound, 1 = at the bound)."""
    worst = 0.0
    for y_hat, (y0_ref, yhat_ref) in zip(y_hats, reference):
        delta = yhat_ref.astype(np.float64) - y0_ref[:, None, None].astype(np.float64)
        bound = RTOL * float(np.abs(delta).max()) + NOISE * float(np.abs(y0_ref).max())
        err = float(np.abs(y_hat.astype(np.float64) - yhat_ref).max())
        worst = max(worst, err / bound if bound else (0.0 if err == 0 else np.inf))
    return worst


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tf32", type=int, nargs="+", default=[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", help="check only files whose name contains this")
    parser.add_argument("--cpu", action="store_true", help="dry run on the CPU provider")
    args = parser.parse_args(argv)
    global DRY_RUN
    DRY_RUN = args.cpu
    if not DRY_RUN and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit(f"no CUDA provider in this onnxruntime: {ort.get_available_providers()}")
    manifest = json.loads((ROOT / "models" / "onnx" / "manifest.json").read_text())
    rows, failed = [], 0
    for tf32 in args.tf32:
        for entry in manifest:
            if args.only and args.only not in entry["file"]:
                continue
            try:
                row = check_file(entry, tf32)
            except Exception as exc:  # report and go on: one broken model must not hide the rest
                row = {"file": entry["file"], "tf32": tf32, "error": f"{type(exc).__name__}: {exc}"[:300]}
            ok = "error" not in row and row["err_over_bound"] <= 1.0
            failed += not ok
            rows.append(row)
            print(f"tf32={tf32} {'ok  ' if ok else 'FAIL'} {row['file']:<48} "
                  f"{row.get('err_over_bound', float('nan')):8.3f} x bound (vs CPU naive: naive "
                  f"{row.get('naive_cuda_vs_cpu', float('nan')):.3f}, converted "
                  f"{row.get('converted_cuda_vs_cpu', float('nan')):.3f})  cpu nodes: "
                  f"{row.get('cpu_nodes', row.get('error'))}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"{len(rows) - failed} of {len(rows)} within the bound")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
