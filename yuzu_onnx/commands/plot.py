"""``yuzu-onnx plot``: draw one sequence's ISM results (attribution logo + ISM heatmap) to an image."""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputValidationError
from ..files import write_atomic

__all__ = ["add_parser", "run", "load_results"]

_FIELDS = ("y0", "y_hat", "attributions")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plot`` subcommand to the ``yuzu-onnx`` parser."""
    p = subparsers.add_parser(
        "plot", help="plot one sequence's ISM results (attribution logo + ISM heatmap)",
        description="Read RESULTS (an .npz written by `yuzu-onnx ism`) and draw sequence N: on top the "
                    "attribution of each observed character as a letter logo, below the ISM heatmap of "
                    "every substitution's effect (centered over the alphabet). A file written with "
                    "--attr gives the logo alone. Needs matplotlib.")
    p.add_argument("results", type=Path, metavar="RESULTS", help="an .npz written by `yuzu-onnx ism`")
    p.add_argument("--seq", type=int, required=True, metavar="N", help="index of the sequence to plot (0-based)")
    p.add_argument("-o", "--output-file", dest="figure", type=Path, required=True, metavar="FIG",
                   help="image to write (.png, .pdf, .svg, ...; the format follows the extension)")
    p.add_argument("--output", dest="output_name", default=None, metavar="NAME",
                   help="which model output to plot (default: the first in the file)")
    p.add_argument("--target", type=int, nargs="+", default=None, metavar="I",
                   help="output element(s) to explain, as flat indices into the output's dims (several are "
                        "averaged); default: the mean over all elements")
    p.add_argument("--start", type=int, default=0, metavar="S",
                   help="position of the first mutated character, for the x axis (default 0)")
    p.add_argument("--title", default=None, help="figure title (default: the sequence's name)")
    p.add_argument("--dpi", type=int, default=150, help="resolution of raster images (default 150)")
    p.set_defaults(func=run)


def load_results(path: Path) -> tuple[dict[str, dict[str, np.ndarray]], list[str] | None]:
    """``({output: {field: array}}, names)`` from an ``ism`` .npz (arrays load lazily)."""
    path = Path(path)
    if not path.is_file():
        raise InputValidationError(f"results file not found: {path}")
    if path.name.lower().endswith((".h5", ".hdf5")):
        raise InputValidationError(f"{path}: plot reads .npz results only (run `yuzu-onnx ism -o OUT.npz`)")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise InputValidationError(f"{path}: cannot read as .npz: {exc}") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputValidationError(f"{path}: not an .npz archive")
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for key in data.files:
        name, dot, field = key.rpartition(".")
        if dot and field in _FIELDS:
            outputs.setdefault(name, {})[field] = data[key]
    names = [str(n) for n in data["names"]] if "names" in data.files else None
    if not outputs:
        raise InputValidationError(f"{path}: no ISM results (no key OUTPUT.y0, OUTPUT.y_hat or "
                                   f"OUTPUT.attributions; keys: {', '.join(data.files) or 'none'})")
    return outputs, names


def _save_atomic(fig, path: Path, dpi: int) -> None:
    fmt = path.suffix.lower().lstrip(".") or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise InputValidationError(f"figure {path}: unknown image format {fmt!r}; use one of "
                                   f"{', '.join(sorted(supported))}")
    write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))


def run(args: argparse.Namespace) -> int:
    """Run the ``plot`` subcommand; errors propagate (the CLI prints them), leaving no FIG behind."""
    outputs, names = load_results(args.results)
    name = getattr(args, "output_name", None)
    if name is None:
        name = next(iter(outputs))
        if len(outputs) > 1:
            print(f"note: {args.results} holds outputs {', '.join(outputs)}; plotting {name!r} "
                  "(choose with --output)", file=sys.stderr)
    elif name not in outputs:
        raise InputValidationError(f"{args.results}: no output {name!r}; available: {', '.join(outputs)}")
    fields = outputs[name]
    has_ism = "y0" in fields and "y_hat" in fields
    if not has_ism:
        if "attributions" not in fields:
            missing = " and ".join(f"{name}.{f}" for f in ("y0", "y_hat") if f not in fields)
            raise InputValidationError(f"{args.results}: missing key {missing} (needs {name}.y0 and "
                                       f"{name}.y_hat, or {name}.attributions)")
        print(f"note: {args.results} holds only attributions for {name!r} (written with `ism --attr`); "
              "plotting the logo without the ISM heatmap", file=sys.stderr)
    n = (fields["y_hat"] if has_ism else fields["attributions"]).shape[0]
    seq = args.seq
    if not -n <= seq < n:
        raise InputValidationError(f"--seq {seq} is out of range: {args.results} holds {n} sequence(s) "
                                   f"(valid: 0 to {n - 1})")
    seq %= n
    target = getattr(args, "target", None)
    if target is not None and len(target) == 1:
        target = target[0]
    title = getattr(args, "title", None)
    if title is None:
        label = names[seq] if names is not None and seq < len(names) else f"sequence {seq}"
        title = f"{label} (#{seq})"

    from ..plotting import plot_ism
    import matplotlib.pyplot as plt

    if has_ism:
        y0, y_hat = fields["y0"][seq:seq + 1], fields["y_hat"][seq:seq + 1]
        fig = plot_ism(y0, y_hat, None, 0, output=name, target=target, title=title,
                       start=getattr(args, "start", 0))
    else:
        if target is not None:
            raise InputValidationError("--target needs y0 and y_hat; attributions were computed when "
                                       "`ism --attr` ran")
        fig = plot_ism(None, None, fields["attributions"][seq:seq + 1], 0, output=name, title=title,
                       start=getattr(args, "start", 0))
    try:
        _save_atomic(fig, Path(args.figure), getattr(args, "dpi", 150))
    finally:
        plt.close(fig)
    print(f"wrote {args.figure}")
    return 0
