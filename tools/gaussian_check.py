"""Predicted versus measured float32 error of gaussian sensing on the committed test models.

For each model: convert with ``sensing="gaussian"`` (default alpha and tolerance), run the
converted graph and naive ISM on the same random sequences (CPU), and print the measured error
``max|y_hat - naive| / max|naive - y0|`` next to the plan's prediction (the sum over gaussian
convs of their predicted relative errors: each decode adds its own, later layers carry it like
the deltas). Usage: ``python tools/gaussian_check.py [--json out.json]``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yuzu_onnx import convert  # noqa: E402
from yuzu_onnx.oracle import naive_ism  # noqa: E402
from yuzu_onnx.runtime import run_ism  # noqa: E402


def measured_and_predicted(path: Path, entry: dict, seed: int = 1) -> tuple[float, float, float]:
    """(measured relative error, predicted sum, worst single-conv prediction) for one model."""
    layout = entry.get("layout", "NCL")
    model, plan = convert(str(path), sensing="gaussian", outputs=entry.get("outputs"), return_plan=True)
    rng = np.random.default_rng(seed)
    X = np.eye(4, dtype=np.float32)[rng.integers(0, 4, (2, entry["length"]))]
    X = X if layout == "NLC" else X.transpose(0, 2, 1).copy()
    naive = naive_ism(str(path), X, layout=layout)
    got = run_ism(model, X)
    measured = 0.0
    for (y0, ref), (_, y_hat) in zip(naive, got):
        delta = np.abs(ref.astype(np.float64) - y0[:, None, None]).max()
        measured = max(measured, float(np.abs(y_hat.astype(np.float64) - ref).max() / delta))
    errors = [n.design.error for n in plan.nodes if n.design is not None]
    return measured, float(sum(errors)), float(max(errors, default=0.0))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    manifest = json.loads((ROOT / "models" / "onnx" / "manifest.json").read_text())
    rows = []
    for entry in manifest:
        m, p, w = measured_and_predicted(ROOT / "models" / "onnx" / entry["file"], entry)
        rows.append({"file": entry["file"], "measured": m, "predicted": p, "worst_conv": w})
        print(f"{entry['file']:<44} measured {m:9.2e}  predicted {p:9.2e}  measured/predicted {m / p if p else 0:6.3f}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
