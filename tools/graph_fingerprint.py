"""Fingerprints of converted graphs, to show that a refactor leaves the emitted ONNX unchanged.

For every committed test model (``models/onnx/manifest.json``, plus the bundled example) and
a grid of conversion settings (structured/gaussian sensing, alt/all substitutions, the full
sequence and a sub-region), convert the model and hash its graph: the ``GraphProto`` serialized
deterministically, metadata aside (the model's ``metadata_props`` hold version strings and the
memory estimate, which are not part of the computation). Conversion warnings are recorded too.

Usage::

    python tools/graph_fingerprint.py -o before.json          # on the old commit
    python tools/graph_fingerprint.py -o after.json           # on the new one
    python tools/graph_fingerprint.py --compare before.json after.json

``--compare`` exits 1 and names every setting whose graph (or refusal) differs; settings whose
conversion warnings changed while the graph stayed the same are listed for review.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yuzu_onnx import convert  # noqa: E402

MODELS = ROOT / "models" / "onnx"


def settings(length: int) -> list[dict]:
    """Conversion settings fingerprinted for a model of ``length`` positions."""
    mid = length // 2
    out = []
    for sensing in ("structured", "gaussian"):
        for subs in ("alt", "all"):
            out.append({"sensing": sensing, "substitutions": subs})
    out.append({"start": mid - 4, "end": mid + 5})
    out.append({"start": 0, "end": 6, "substitutions": "all"})
    return out


def fingerprint(path: Path, options: dict) -> dict:
    """sha256 of the converted graph and the conversion warnings, or the error raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = convert(str(path), **options)
        except Exception as exc:  # a refusal is part of the behaviour being compared
            return {"error": f"{type(exc).__name__}: {exc}"}
    digest = hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()
    return {"graph": digest, "warnings": sorted(str(w.message) for w in caught)}


def collect() -> dict[str, dict]:
    manifest = json.loads((MODELS / "manifest.json").read_text())
    entries = [(e["file"], e["length"], e.get("outputs")) for e in manifest]
    entries.append(("example_basset_L1000.onnx", 1000, None))
    results = {}
    for file, length, outputs in entries:
        for options in settings(length):
            if outputs:
                options = {**options, "outputs": outputs}
            key = f"{file} {json.dumps(options, sort_keys=True)}"
            results[key] = fingerprint(MODELS / file, options)
            print(f"{key}: {results[key].get('graph', results[key].get('error'))[:16]}", flush=True)
    return results


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    keys = sorted(set(a) | set(b))
    missing = [k for k in keys if k not in a or k not in b]
    differ = [k for k in keys if k in a and k in b and
              (a[k].get("graph"), a[k].get("error")) != (b[k].get("graph"), b[k].get("error"))]
    reworded = [k for k in keys if k in a and k in b and k not in differ and a[k] != b[k]]
    for key in missing:
        print(f"ONLY IN ONE RUN: {key}")
    for key in differ:
        print(f"GRAPH DIFFERS: {key}\n  before {a[key]}\n  after  {b[key]}")
    for key in reworded:
        print(f"same graph, warnings changed: {key}")
        for old, new in zip(a[key]["warnings"], b[key]["warnings"]):
            if old != new:
                print(f"  - {old}\n  + {new}")
    print(f"{len(keys)} settings: {len(keys) - len(differ) - len(missing)} identical graphs, "
          f"{len(differ)} differ, {len(missing)} in one run only; {len(reworded)} with reworded warnings")
    return 1 if differ or missing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, help="write the fingerprints here (JSON)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    results = collect()
    if args.output:
        args.output.write_text(json.dumps(results, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
