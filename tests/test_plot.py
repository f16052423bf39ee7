"""``yuzu-onnx plot`` and :func:`yuzu_onnx.plotting.plot_ism` on results shaped like ``ism`` writes."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import yuzu_onnx  # noqa: E402
from yuzu_onnx.commands import plot as plot_cmd  # noqa: E402
from yuzu_onnx.errors import InputValidationError  # noqa: E402

from builders import random_one_hot  # noqa: E402

MODEL = Path(__file__).resolve().parents[1] / "models" / "onnx" / "toynet_L45_torchscript.onnx"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@functools.lru_cache(maxsize=1)
def _results():
    X = random_one_hot(3, 45, seed=0)
    model = yuzu_onnx.convert(str(MODEL))
    return X, yuzu_onnx.run_ism(model, X)


def _parse(argv):
    parser = argparse.ArgumentParser(prog="yuzu-onnx")
    sub = parser.add_subparsers(dest="command", required=True)
    plot_cmd.add_parser(sub)
    return parser.parse_args(["plot", *argv])


@pytest.fixture
def npz(tmp_path):
    _, results = _results()
    arrays = {}
    for name, (y0, y_hat) in zip(["y"], results):
        arrays[f"{name}.y0"] = y0
        arrays[f"{name}.y_hat"] = y_hat
    path = tmp_path / "out.npz"
    np.savez(path, names=np.array(["chr1:100-145", "seqB", "seqC"]), **arrays)
    return path


def _check_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert 10_000 < len(data) < 5_000_000
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temp file left behind


def test_plot_command_writes_png(npz, tmp_path, capsys):
    fig = tmp_path / "figs" / "fig.png"
    args = _parse([str(npz), "--seq", "1", "-o", str(fig), "--start", "100"])
    assert args.func is plot_cmd.run
    assert plot_cmd.run(args) == 0
    _check_png(fig)
    assert str(fig) in capsys.readouterr().out


def test_plot_command_target_and_output(npz, tmp_path):
    fig = tmp_path / "fig.png"
    assert plot_cmd.run(_parse([str(npz), "--seq", "-1", "-o", str(fig), "--output", "y", "--target", "0", "3"])) == 0
    _check_png(fig)


def test_plot_attributions_only(tmp_path, capsys):
    X, results = _results()
    y0, y_hat = results[0]
    path = tmp_path / "attr.npz"
    np.savez(path, **{"y.attributions": yuzu_onnx.attributions(y0, y_hat, X)}, names=np.array(["a", "b", "c"]))
    fig = tmp_path / "logo.png"
    assert plot_cmd.run(_parse([str(path), "--seq", "0", "-o", str(fig)])) == 0
    _check_png(fig)
    assert "logo" in capsys.readouterr().err


def test_bad_index_names_range(npz, tmp_path):
    fig = tmp_path / "fig.png"
    with pytest.raises(InputValidationError, match=r"out of range.*0 to 2"):
        plot_cmd.run(_parse([str(npz), "--seq", "3", "-o", str(fig)]))
    assert not fig.exists()


def test_missing_key(tmp_path):
    _, results = _results()
    path = tmp_path / "partial.npz"
    np.savez(path, **{"y.y0": results[0][0]}, names=np.array(["a", "b", "c"]))
    fig = tmp_path / "fig.png"
    with pytest.raises(InputValidationError, match=r"missing key y\.y_hat"):
        plot_cmd.run(_parse([str(path), "--seq", "0", "-o", str(fig)]))
    assert not fig.exists()


def test_no_results_and_unknown_output(npz, tmp_path):
    empty = tmp_path / "empty.npz"
    np.savez(empty, names=np.array(["a"]))
    with pytest.raises(InputValidationError, match="no ISM results"):
        plot_cmd.run(_parse([str(empty), "--seq", "0", "-o", str(tmp_path / "f.png")]))
    with pytest.raises(InputValidationError, match="no output 'nope'"):
        plot_cmd.run(_parse([str(npz), "--seq", "0", "-o", str(tmp_path / "f.png"), "--output", "nope"]))


def test_missing_file(tmp_path):
    with pytest.raises(InputValidationError, match="not found"):
        plot_cmd.run(_parse([str(tmp_path / "nope.npz"), "--seq", "0", "-o", str(tmp_path / "f.png")]))


def test_plot_ism_infers_sequence_and_matches_attributions():
    from yuzu_onnx.plotting import infer_sequence, plot_ism

    X, results = _results()
    y0, y_hat = results[0]
    np.testing.assert_array_equal(infer_sequence(y0, y_hat), X)
    fig = plot_ism(y0, y_hat, X, 2, output="y", title="t")
    assert len(fig.axes) == 3  # logo, heatmap, colorbar
    heat = fig.axes[1].images[0].get_array()
    expected = yuzu_onnx.attributions(y0[2:3], y_hat[2:3], None, hypothetical=True)[0]
    np.testing.assert_allclose(np.asarray(heat), expected, rtol=1e-6)
