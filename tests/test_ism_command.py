"""The ``yuzu-onnx ism`` subcommand and its FASTA / streaming-output helpers (yuzu_onnx.seqio)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from yuzu_onnx import attributions, convert, naive_ism
from yuzu_onnx.commands import ism as ism_cmd
from yuzu_onnx.errors import InputValidationError
from yuzu_onnx.seqio import ResultWriter, load_sequences, one_hot, read_fasta

from builders import conv, onnx_model
from conftest import MODELS_DIR, REPO, assert_ism_close, assert_y0_close

h5py = pytest.importorskip("h5py")

DATA = Path(__file__).resolve().parent / "data"
TOYNET = MODELS_DIR / "toynet_L45_torchscript.onnx"
L = 45


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """toynet converted with substitutions 'all' and 'alt', saved to disk."""
    out = tmp_path_factory.mktemp("ism_models")
    paths = {}
    for subs in ("all", "alt"):
        path = out / f"toynet_{subs}.ism.onnx"
        onnx.save(convert(str(TOYNET), substitutions=subs), str(path))
        paths[subs] = path
    return paths


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="yuzu-onnx")
    sub = parser.add_subparsers(dest="command", required=True)
    ism_cmd.add_parser(sub)
    return parser.parse_args(["ism", *map(str, argv)])


def run_cmd(argv) -> int:
    args = parse(argv)
    return args.func(args)


def read_results(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz / .h5 result file, keyed 'output/field' (and 'names')."""
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k.replace(".", "/"): z[k] for k in z.files}
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda k, v: out.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
    out["names"] = np.array([n.decode() if isinstance(n, bytes) else n for n in out["names"]])
    return out


def leftovers(directory: Path, name: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if name in p.name)


# ----------------------------------------------------------------------------- seqio


def test_read_fasta_multi_record_and_case():
    recs = read_fasta(DATA / "ism_clean.fa")
    assert [n for n, _ in recs] == ["seq1", "seq2", "seq3"]
    assert all(len(s) == L for _, s in recs)
    assert recs[1][1].islower()


def test_read_fasta_malformed_names_file_and_line():
    with pytest.raises(InputValidationError, match=r"ism_no_header\.fa: line 2: sequence data before"):
        read_fasta(DATA / "ism_no_header.fa")


def test_one_hot_ambiguity_center_and_layout():
    X = one_hot(["acgN", "TRYG"], 4)
    assert X.dtype == np.float32 and X.shape == (2, 4, 4)
    np.testing.assert_array_equal(X[0].argmax(axis=0)[:3], [0, 1, 2])
    assert X[0, :, 3].sum() == 0 and X[1, :, 1:3].sum() == 0
    np.testing.assert_array_equal(one_hot(["acgN"], 4, layout="NLC")[0], X[0].T)
    # central 4 of 7 characters: offset floor(3 / 2) = 1
    np.testing.assert_array_equal(one_hot(["TACGTAA"], 4, center=True), one_hot(["ACGT"], 4))
    with pytest.raises(InputValidationError, match=r"length 7 != model length 4; pass --center"):
        one_hot(["TACGTAA"], 4)
    with pytest.raises(InputValidationError, match=r"length 3 != model length 4"):
        one_hot(["ACG"], 4, center=True)
    with pytest.raises(InputValidationError, match=r"record 1 \('b'\): invalid character 'Z' at position 2"):
        one_hot([("a", "ACGT"), ("b", "ACzT")], 4)


def test_load_sequences_npy_either_layout(tmp_path):
    X = one_hot(["ACGTA", "GGCAT"], 5)
    np.save(tmp_path / "ncl.npy", X)
    np.save(tmp_path / "nlc.npy", X.transpose(0, 2, 1))
    for f in ("ncl.npy", "nlc.npy"):
        names, got = load_sequences(tmp_path / f, 5, layout="NCL")
        assert names == ["seq0", "seq1"]
        np.testing.assert_array_equal(got, X)
    with pytest.raises(InputValidationError, match=r"shape \(2, 4, 5\) does not fit.*\(N, 4, 6\)"):
        load_sequences(tmp_path / "ncl.npy", 6)


def test_load_sequences_unknown_format(tmp_path):
    (tmp_path / "x.txt").write_text(">a\nACGT\n")
    with pytest.raises(InputValidationError, match="unknown input format"):
        load_sequences(tmp_path / "x.txt", 4)


def test_load_sequences_gzip(tmp_path):
    import gzip
    gz = tmp_path / "s.fa.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write((DATA / "ism_clean.fa").read_text())
    names, X = load_sequences(gz, L)
    names2, X2 = load_sequences(DATA / "ism_clean.fa", L)
    assert names == names2
    np.testing.assert_array_equal(X, X2)


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_result_writer_exception_leaves_nothing(tmp_path, suffix):
    out = tmp_path / f"r{suffix}"
    with pytest.raises(RuntimeError, match="boom"):
        with ResultWriter(out, 4, names=list("abcd")) as w:
            w.write(slice(0, 2), {"y/y0": np.ones((2, 3), np.float32)})
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- command


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_ism_matches_naive(models, tmp_path, suffix):
    fasta = DATA / "ism_with_n.fa"
    out = tmp_path / f"res{suffix}"
    assert run_cmd([models["all"], fasta, "-o", out, "--batch-size", "1", "--quiet"]) == 0
    names, X = load_sequences(fasta, L)
    assert X[0, :, [0, 22, 44]].sum() == 0  # N / n / R columns
    got = read_results(out)
    assert list(got["names"]) == names == ["withN1", "withN2"]
    ref = naive_ism(str(TOYNET), X)
    outputs = onnx.load(str(TOYNET)).graph.output
    assert len(ref) == len(outputs)
    for o, (r0, rh) in zip(outputs, ref):
        assert_y0_close(got[f"{o.name}/y0"], r0, label=o.name)
        assert_ism_close(got[f"{o.name}/y_hat"], rh, r0, label=o.name)
    assert leftovers(tmp_path, "res") == [out.name]


def test_ism_clean_alt_and_summary(models, tmp_path, capsys):
    fasta = DATA / "ism_clean.fa"
    out = tmp_path / "clean.npz"
    assert run_cmd([models["alt"], fasta, "-o", out, "--batch-size", "2", "--providers", "cpu"]) == 0
    line = capsys.readouterr().out.strip()
    assert "3 sequences" in line and str(out) in line
    names, X = load_sequences(fasta, L)
    got = read_results(out)
    for o, (r0, rh) in zip(onnx.load(str(TOYNET)).graph.output, naive_ism(str(TOYNET), X)):
        assert_ism_close(got[f"{o.name}/y_hat"], rh, r0, label=o.name)


def test_ism_center(models, tmp_path):
    fasta = DATA / "ism_long.fa"
    out = tmp_path / "c.h5"
    with pytest.raises(InputValidationError, match=r"record 1 \('long'\): length 52 != model length 45; pass --center"):
        run_cmd([models["alt"], fasta, "-o", out, "-q"])
    assert not out.exists()
    assert run_cmd([models["alt"], fasta, "-o", out, "-q", "--center"]) == 0
    seqs = [s for _, s in read_fasta(fasta)]
    X = one_hot([s[(len(s) - L) // 2:][:L] for s in seqs], L)
    got = read_results(out)
    for o, (r0, rh) in zip(onnx.load(str(TOYNET)).graph.output, naive_ism(str(TOYNET), X)):
        assert_ism_close(got[f"{o.name}/y_hat"], rh, r0, label=o.name)


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_ism_attr(models, tmp_path, suffix):
    fasta = DATA / "ism_clean.fa"
    out = tmp_path / f"a{suffix}"
    assert run_cmd([models["alt"], fasta, "-o", out, "--attr", "--batch-size", "2", "-q"]) == 0
    _, X = load_sequences(fasta, L)
    got = read_results(out)
    outputs = onnx.load(str(TOYNET)).graph.output
    assert sorted(got) == sorted(["names", "ohe"] + [f"{o.name}/{f}" for o in outputs
                                                     for f in ("attributions", "hypothetical")])
    from yuzu_onnx.session import ISMSession
    session = ISMSession(models["alt"], providers=["CPUExecutionProvider"])
    for o, (y0, yh) in zip(outputs, session.run(X)):
        ref = attributions(y0, yh, X, layout=session.layout, start=session.start)
        np.testing.assert_allclose(got[f"{o.name}/attributions"], ref, rtol=1e-5, atol=1e-6)


def test_ism_errors_leave_no_output(models, tmp_path):
    out = tmp_path / "e.npz"
    with pytest.raises(InputValidationError,
                       match=r"record 1 \('broken'\): invalid character 'X' at position 17"):
        run_cmd([models["alt"], DATA / "ism_bad_char.fa", "-o", out, "-q"])
    with pytest.raises(InputValidationError, match=r"record 1 \('short'\): length 40 != model length 45"):
        run_cmd([models["alt"], DATA / "ism_wrong_length.fa", "-o", out, "-q"])
    # N characters on a model converted with substitutions='alt'
    with pytest.raises(InputValidationError, match="substitutions all"):
        run_cmd([models["alt"], DATA / "ism_with_n.fa", "-o", out, "-q"])
    with pytest.raises(InputValidationError, match=r"unknown extension; use \.npz or \.h5"):
        run_cmd([models["alt"], DATA / "ism_clean.fa", "-o", tmp_path / "e.csv", "-q"])
    assert list(tmp_path.iterdir()) == []


def test_ism_unwritable_output(models, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = blocker / "sub" / "r.h5"  # the parent cannot be created (works as root, too)
    with pytest.raises(OSError):
        run_cmd([models["alt"], DATA / "ism_clean.fa", "-o", out, "-q"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_ism_failure_mid_stream_leaves_no_output(models, tmp_path, monkeypatch):
    from yuzu_onnx import seqio
    calls = {"n": 0}
    real = seqio.ResultWriter.write

    def failing(self, sl, results):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(self, sl, results)

    monkeypatch.setattr(seqio.ResultWriter, "write", failing)
    for suffix in (".npz", ".h5"):
        calls["n"] = 0
        out = tmp_path / f"m{suffix}"
        with pytest.raises(OSError, match="disk full"):
            run_cmd([models["alt"], DATA / "ism_clean.fa", "-o", out, "--batch-size", "1", "-q"])
    assert list(tmp_path.iterdir()) == []


def test_ism_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        parse(["--help"])
    text = capsys.readouterr().out
    for opt in ("--output", "--center", "--attr", "--batch-size", "--providers", "--quiet", "MODEL", "INPUT"):
        assert opt in text


# ----------------------------------------------------------------------------- streaming memory

L_SMALL = 20


def conv_model() -> onnx.ModelProto:
    """(N, 4, 20) -> Conv(16 channels, k=3, pad 1) -> (N, 16, 20): 102 KB of y_hat per sequence."""
    node, inits = conv("conv", "x", "y", (16, 4, 3), np.random.default_rng(0), scale=1.0, bias=1.0, pads=[1, 1])
    return onnx_model([node], inits, ["N", 4, L_SMALL], {"y": ["N", 16, L_SMALL]})


_CHILD = textwrap.dedent("""
    import argparse, json, resource, sys
    from yuzu_onnx.commands.ism import run
    args = argparse.Namespace(model=sys.argv[1], input=sys.argv[2], output=sys.argv[3], center=False,
                              attr=False, batch_size=64, providers="cpu", quiet=True)
    run(args)
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
""")


def test_ism_streams_with_flat_memory(tmp_path):
    model = tmp_path / "conv.ism.onnx"
    onnx.save(convert(conv_model()), str(model))
    rng = np.random.default_rng(1)
    peaks = {}
    for n in (500, 2000):
        fasta = tmp_path / f"s{n}.fa"
        idx = rng.integers(0, 4, size=(n, L_SMALL))
        fasta.write_text("".join(f">s{i}\n{''.join('ACGT'[j] for j in row)}\n" for i, row in enumerate(idx)))
        out = tmp_path / f"r{n}.h5"
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(fasta), str(out)],
                              capture_output=True, text=True, cwd=REPO, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr
        peaks[n] = json.loads(proc.stdout.strip().splitlines()[-1])["maxrss_kb"] / 1024
        with h5py.File(out, "r") as f:
            assert f["y/y_hat"].shape == (n, 4, L_SMALL, 16, L_SMALL)
            # spot-check the last batch against naive ISM
            X = one_hot(["".join("ACGT"[j] for j in row) for row in idx[-3:]], L_SMALL)
            (r0, rh), = naive_ism(conv_model(), X)
            assert_ism_close(f["y/y_hat"][-3:], rh, r0, label=f"n={n}")
    # a non-streaming run would hold 1500 * 102 KB = 150 MB more outputs for 2000 sequences
    assert peaks[2000] <= peaks[500] + 30, f"peak RSS grew from {peaks[500]:.0f} MB to {peaks[2000]:.0f} MB"
