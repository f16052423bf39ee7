"""Outputs for the next tools: ``--attr`` one-hot beside the attributions, ``--modisco`` (read back with
tfmodisco-lite's reader), ``--bigwig`` (read back with pyBigWig, overlap rule included), progress."""

from __future__ import annotations

import io

import numpy as np
import pytest

from yuzu_onnx.bigwig import resolve_overlaps
from yuzu_onnx.errors import InputValidationError
from yuzu_onnx.progress import Progress, format_duration
from yuzu_onnx.seqio import one_hot

from conftest import MODELS_DIR
from loci_helpers import (L, convert_toynet, genome_sequences, hand_window, read_results, run_ism, write_bed,
                          write_fasta)

pytest.importorskip("pyfaidx", reason="loci input needs pyfaidx (pip install 'yuzu-onnx[loci]')")

GENOME = genome_sequences()
#: Overlapping loci: chr1 windows 20..100 and 80..160 (N run 150..159), 250..330 (off the end), a tie
#: (mids 180 and 220 are both 20 from position 200, the earlier line wins), a duplicate locus, chr2 -35..45
#: and 20..100.
BED = ["track name=t", "chr1\t30\t90", "chr1\t100\t140", "chr1\t280\t300", "chr1\t170\t190", "chr1\t210\t230",
       "chr1\t175\t185", "chr2\t0\t10", "chr2\t60\t61"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    return {"genome": write_fasta(d / "genome.fa", GENOME), "bed": write_bed(d / "loci.bed", BED),
            "all": convert_toynet(d, "all"), "region": convert_toynet(d, "all", start=10, end=60),
            "multi": convert_toynet(d, "all", source=MODELS_DIR / "bpnet9_L64_torchscript.onnx"), "dir": d}


def loci_windows(bed_lines, length=L):
    """(chrom, mid, start, line) of each locus line, and the hand-cut one-hot windows (N, 4, length)."""
    loci = []
    for lineno, line in enumerate(bed_lines, 1):
        f = line.split("\t")
        if len(f) < 3:
            continue
        mid = int(f[1]) + (int(f[2]) - int(f[1])) // 2
        loci.append((f[0], mid, mid - length // 2, lineno))
    X = one_hot([hand_window(GENOME, c, s, s + length) for c, _, s, _ in loci], length)
    return loci, X


# ----------------------------------------------------------------------------- --attr and --modisco


def test_attr_writes_one_hot_and_hypothetical(files, tmp_path):
    out = tmp_path / "a.npz"
    assert run_ism(files["region"], "--bed", files["bed"], "--genome", files["genome"], "-o", out, "--attr",
                   "-q") == 0
    got = read_results(out)
    assert sorted(got) == ["chrom", "end", "names", "ohe", "start", "y/attributions", "y/hypothetical"]
    loci, X = loci_windows(BED)
    assert got["ohe"].shape == (len(loci), 4, 50) and got["ohe"].dtype == np.float32
    assert np.array_equal(got["ohe"], X[:, :, 10:60])
    # the projection of the hypothetical attributions on the sequence is the attribution
    np.testing.assert_allclose(got["y/hypothetical"] * got["ohe"], got["y/attributions"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["y/hypothetical"].sum(axis=1), 0, atol=1e-6)


def test_modisco_files_load_with_modisco_lite(files, tmp_path):
    modisco_cli = pytest.importorskip("modiscolite.cli", reason="modisco-lite not installed "
                                                                "(pip install 'yuzu-onnx[modisco]')")
    from modiscolite.util import calculate_window_offsets

    prefix = tmp_path / "m"
    out = tmp_path / "a.npz"
    assert run_ism(files["multi"], "--bed", files["bed"], "--genome", files["genome"], "-o", out, "--attr",
                   "--modisco", prefix, "--output-name", "counts", "-q") == 0
    seqs = modisco_cli._load_input(tmp_path / "m.ohe.npz")   # what `modisco motifs -s` reads
    attrs = modisco_cli._load_input(tmp_path / "m.attr.npz")  # what `modisco motifs -a` reads
    got = read_results(out)
    n = len(loci_windows(BED, 64)[0])
    assert seqs.shape == attrs.shape == (n, 4, 64)
    assert np.array_equal(seqs, got["ohe"])
    assert np.array_equal(attrs, got["counts/hypothetical"])
    # the motifs command's own slicing to (N, window, 4) works on them
    start, end = calculate_window_offsets(seqs.shape[2] // 2, 40)
    assert seqs[:, :, start:end].transpose(0, 2, 1).shape == (n, 40, 4)
    with np.load(tmp_path / "m.ohe.npz") as z:
        assert z.files == ["arr_0"]


# ----------------------------------------------------------------------------- --bigwig


def expected_track(loci, attr, region_start, width):
    """Brute force: {chrom: {position: value}} by the nearest-center rule (ties: earlier line)."""
    best: dict[tuple[str, int], tuple[int, int, float]] = {}
    for k, (chrom, mid, start, line) in enumerate(loci):
        for i in range(width):
            p = start + region_start + i
            if not 0 <= p < len(GENOME[chrom]) or GENOME[chrom][p] in "Nn":
                continue
            key = (abs(p - mid), line)
            if (chrom, p) not in best or key < best[(chrom, p)][:2]:
                best[(chrom, p)] = (*key, float(attr[k, :, i].sum()))
    out: dict[str, dict[int, float]] = {c: {} for c in GENOME}
    for (chrom, p), (_, _, value) in best.items():
        out[chrom][p] = value
    return out


@pytest.mark.parametrize("model,region_start,width", [("all", 0, L), ("region", 10, 50)])
def test_bigwig_reads_back_at_genome_coordinates(files, tmp_path, model, region_start, width):
    pyBigWig = pytest.importorskip("pyBigWig", reason="--bigwig needs pyBigWig")
    out, bw_path = tmp_path / "a.npz", tmp_path / "t.bw"
    assert run_ism(files[model], "--bed", files["bed"], "--genome", files["genome"], "-o", out, "--attr",
                   "--bigwig", bw_path, "--batch-size", "3", "-q") == 0
    attr = read_results(out)["y/attributions"]
    loci, _ = loci_windows(BED)
    expected = expected_track(loci, attr, region_start, width)
    assert len(expected["chr1"]) > 150 and len(expected["chr2"]) > 50
    bw = pyBigWig.open(str(bw_path))
    try:
        assert bw.chroms() == {"chr1": 300, "chr2": 120}  # from the .fai
        for chrom, size in bw.chroms().items():
            values = np.array(bw.values(chrom, 0, size))
            want = np.full(size, np.nan)
            for p, v in expected[chrom].items():
                want[p] = v
            np.testing.assert_allclose(values, want, rtol=1e-6, atol=1e-7, equal_nan=True, err_msg=chrom)
            # intervals are sorted and do not overlap
            ivs = bw.intervals(chrom) or ()
            assert all(a[1] <= b[0] for a, b in zip(ivs, ivs[1:]))
    finally:
        bw.close()
    # the N run and the tie: position 200 is 20 from both mids 180 (line 5) and 220 (line 6)
    chr1 = expected["chr1"]
    assert not any(150 <= p < 160 for p in chr1)
    if region_start == 0:
        k5 = [k for k, locus in enumerate(loci) if locus[3] == 5][0]
        assert chr1[200] == pytest.approx(float(attr[k5, :, 200 - loci[k5][2]].sum()))


def test_resolve_overlaps_matches_brute_force():
    rng = np.random.default_rng(3)
    for trial in range(30):
        n, width = int(rng.integers(1, 12)), int(rng.integers(1, 15))
        starts = rng.integers(0, 60, n)
        mids = starts + rng.integers(-5, width + 5, n)  # asymmetric regions: the center may lie outside
        order = rng.permutation(n)
        owner = {}
        for k in range(n):
            for p in range(starts[k], starts[k] + width):
                key = (abs(p - mids[k]), order[k])
                if p not in owner or key < owner[p][0]:
                    owner[p] = (key, k)
        pieces = list(resolve_overlaps(starts, mids, order, width))
        got = {p: k for k, a, b in pieces for p in range(a, b)}
        assert got == {p: k for p, (_, k) in owner.items()}, trial
        assert all(a < b for _, a, b in pieces)
        assert all(p[2] <= q[1] for p, q in zip(pieces, pieces[1:]))


def test_bigwig_alone_and_output_name(files, tmp_path):
    pyBigWig = pytest.importorskip("pyBigWig", reason="--bigwig needs pyBigWig")
    bw_path = tmp_path / "counts.bw"
    bed = write_bed(tmp_path / "one.bed", ["chr2\t60\t61"])
    assert run_ism(files["multi"], "--bed", bed, "--genome", files["genome"], "--bigwig", bw_path,
                   "--output-name", "counts", "-q") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts.bw", "one.bed"]
    out = tmp_path / "a.npz"
    assert run_ism(files["multi"], "--bed", bed, "--genome", files["genome"], "-o", out, "--attr", "-q") == 0
    attr = read_results(out)["counts/attributions"][0]
    bw = pyBigWig.open(str(bw_path))
    try:
        np.testing.assert_allclose(bw.values("chr2", 28, 92), attr.sum(axis=0), rtol=1e-6, atol=1e-7)
    finally:
        bw.close()


@pytest.mark.parametrize("argv,message", [
    (["--output-name", "nope", "--bigwig", "x.bw"], r"--output-name 'nope': .* outputs are 'profile', 'counts'"),
    (["--output-name", "counts", "-o", "x.npz"], "--output-name applies to --bigwig and --modisco"),
    (["--bigwig", "x.txt"], "use a .bw or .bigWig file name"),
    ([], "nothing to write"),
    (["--attr", "--bigwig", "x.bw"], "--attr chooses what goes to OUT"),
    (["--ray-address", "auto", "-o", "x.npz"], "--ray-address applies to --engine ray"),
])
def test_output_option_errors(files, tmp_path, argv, message):
    argv = [str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    with pytest.raises(InputValidationError, match=message):
        run_ism(files["multi"], "--bed", files["bed"], "--genome", files["genome"], *argv, "-q")
    assert not any(p.name.startswith(("x.", ".x.")) for p in tmp_path.iterdir())


def test_bigwig_needs_loci(files, tmp_path):
    fasta = write_fasta(tmp_path / "s.fa", {"s": hand_window(GENOME, "chr1", 0, L)})
    with pytest.raises(InputValidationError, match="--bigwig applies to loci input"):
        run_ism(files["all"], fasta, "--bigwig", tmp_path / "x.bw", "-q")


# ----------------------------------------------------------------------------- progress


def test_progress_line_and_summary():
    stream = io.StringIO()
    progress = Progress(10, "loci", stream=stream, live=True, min_interval=0.0)
    progress.advance(3)
    assert "\r" in stream.getvalue() and "3/10 loci (30%)" in stream.getvalue() and "ETA" in stream.getvalue()
    progress.advance(7)
    progress.close()
    last = stream.getvalue().rsplit("\r", 1)[1]
    assert last.startswith("\x1b[K10/10 loci (100%), ") and last.endswith("ETA 0:00\n")
    summary = progress.summary("attributions", "o.h5")
    assert summary.startswith("wrote attributions of 10 loci to o.h5 in ") and summary.endswith(" loci/s)")
    silent = io.StringIO()
    Progress(5, stream=silent).advance(5)  # a StringIO is no terminal: no live line
    assert silent.getvalue() == ""
    assert format_duration(3725) == "1:02:05" and format_duration(65) == "1:05"


def test_command_prints_only_the_summary_off_a_terminal(files, tmp_path, capsys):
    out = tmp_path / "o.npz"
    assert run_ism(files["all"], "--bed", files["bed"], "--genome", files["genome"], "-o", out) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"wrote ISM results of {len(BED) - 1} loci to {out} in ")
    assert "\r" not in captured.err and "ETA" not in captured.err


def test_failure_mid_stream_leaves_no_file(files, tmp_path, monkeypatch):
    pytest.importorskip("pyBigWig", reason="--bigwig needs pyBigWig")
    from yuzu_onnx.bigwig import BigWigWriter

    calls = {"n": 0}
    real = BigWigWriter.write

    def failing(self, rows, track):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(self, rows, track)

    monkeypatch.setattr(BigWigWriter, "write", failing)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(OSError, match="disk full"):
        run_ism(files["all"], "--bed", files["bed"], "--genome", files["genome"], "-o", out_dir / "o.h5",
                "--attr", "--bigwig", out_dir / "t.bw", "--modisco", out_dir / "m", "--batch-size", "2", "-q")
    assert list(out_dir.iterdir()) == []
