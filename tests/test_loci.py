"""Loci input (yuzu_onnx.loci, ``ism --bed --genome``): windows equal the same windows cut by hand."""

from __future__ import annotations

import numpy as np
import pytest

from yuzu_onnx.errors import InputValidationError
from yuzu_onnx.loci import (encode_windows, fetch_window, genome_sizes, iter_windows, one_hot_loci, open_genome,
                            read_loci)
from yuzu_onnx.seqio import one_hot

from loci_helpers import (L, convert_toynet, genome_sequences, hand_window, read_results, run_ism, write_bed,
                          write_fasta)

pytest.importorskip("pyfaidx", reason="loci input needs pyfaidx (pip install 'yuzu-onnx[loci]')")

GENOME = genome_sequences()

#: BED lines around the genome's features; (chrom, mid) of each locus line.
BED_LINES = [
    "browser position chr1:1-100",
    "track name=peaks description='test'",
    "# a comment",
    "",
    "chr1\t100\t140",               # mid 120: window 80..160 holds the N run 150..159
    "chr1\t30\t90\tpeak2\t0\t+",    # mid 60: window 20..100 holds the lower-case run 40..69
    "chr1\t280\t300",               # mid 290: window 250..330 runs off chr1's end (300)
    "chr2\t0\t10",                  # mid 5: window -35..45 starts before 0
    "chr2\t60\t61",                 # mid 60: window 20..100, plain
]
MIDS = [("chr1", 120), ("chr1", 60), ("chr1", 290), ("chr2", 5), ("chr2", 60)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("loci")
    return {
        "genome": write_fasta(d / "genome.fa", GENOME),
        "bed": write_bed(d / "loci.bed", BED_LINES),
        "all": convert_toynet(d, "all"),
        "alt": convert_toynet(d, "alt"),
        "dir": d,
    }


def windows_by_hand(mids) -> dict[str, str]:
    """``{chrom:start-end: text}`` of the L-windows centered on ``mids``, cut by hand."""
    out = {}
    for chrom, mid in mids:
        start = mid - L // 2
        out[f"{chrom}:{start}-{start + L}"] = hand_window(GENOME, chrom, start, start + L)
    return out


# ----------------------------------------------------------------------------- the library


def test_read_loci_centers_and_skips_headers(files):
    loci = read_loci(files["bed"], genome_sizes(open_genome(files["genome"])), L)
    assert len(loci) == 5
    assert [(loci.chrom_of(k), int(m)) for k, m in enumerate(loci.mid)] == MIDS
    assert loci.line.tolist() == [5, 6, 7, 8, 9]
    assert loci.names() == list(windows_by_hand(MIDS))
    assert (loci.end - loci.start == L).all()
    assert loci.chrom_names == ("chr1", "chr2") and loci.chrom_sizes == (300, 120)


def test_fai_is_made_when_missing(tmp_path):
    genome = write_fasta(tmp_path / "g.fa", GENOME)
    assert not (tmp_path / "g.fa.fai").exists()
    assert genome_sizes(open_genome(genome)) == {"chr1": 300, "chr2": 120}
    assert (tmp_path / "g.fa.fai").is_file()


@pytest.mark.parametrize("start,end", [(-5, 10), (290, 310), (-20, -5), (305, 320), (0, 300), (150, 160)])
def test_fetch_window_pads_with_n(files, start, end):
    genome = open_genome(files["genome"])
    assert fetch_window(genome, "chr1", start, end) == hand_window(GENOME, "chr1", start, end)


def test_windows_equal_hand_cut_one_hot(files):
    genome = open_genome(files["genome"])
    loci = read_loci(files["bed"], genome_sizes(genome), L)
    expected = one_hot(list(windows_by_hand(MIDS).values()), L)  # N -> zero column, lower case -> its base
    assert np.array_equal(one_hot_loci(loci, genome, 0, len(loci)), expected)
    batches = list(iter_windows(loci, genome, batch_size=2, layout="NLC"))
    assert [rows for rows, _ in batches] == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert np.array_equal(np.concatenate([X for _, X in batches]), expected.transpose(0, 2, 1))
    # the N run and the positions off the chromosome are all-zero columns
    assert (expected[0].sum(axis=0) == 0).tolist() == [70 <= i < 80 for i in range(L)]
    assert (expected[2].sum(axis=0) == 0).tolist() == [i >= 50 for i in range(L)]


def test_encode_windows_names_an_invalid_character():
    with pytest.raises(InputValidationError, match=r"w1: invalid character 'X' at window position 2"):
        encode_windows(["ACGT", "acXt"], label=lambda k: f"w{k}")


def test_narrowpeak_summits(tmp_path, files):
    sizes = {"chr1": 300, "chr2": 120}
    peak = "chr1\t100\t200\tp\t0\t.\t5.0\t-1\t-1\t30"
    bed = write_bed(tmp_path / "p.narrowPeak", [peak, "chr2\t10\t90\tq\t0\t.\t1\t-1\t-1\t80"])
    assert read_loci(bed, sizes, L).mid.tolist() == [150, 50]              # (start + end) // 2
    assert read_loci(bed, sizes, L, summits=True).mid.tolist() == [130, 90]  # start + summit
    out = tmp_path / "s.npz"
    assert run_ism(files["all"], "--bed", bed, "--genome", files["genome"], "--summits", "-o", out, "-q") == 0
    assert read_results(out)["names"].tolist() == ["chr1:90-170", "chr2:50-130"]


@pytest.mark.parametrize("line,summits,message", [
    ("chrZ\t10\t20", False, r"line 2: chromosome 'chrZ' is not in the genome \(2 sequences: chr1, chr2\)"),
    ("chr1\t10", False, r"line 2: 2 column\(s\); a locus needs 3 columns"),
    ("chr1\tten\t20", False, r"line 2: start \(column 2\) is not an integer: 'ten'"),
    ("chr1\t30\t20", False, r"line 2: invalid interval start=30, end=20"),
    ("chr1\t10\t20", True, r"line 2: 3 column\(s\); a locus needs 10 columns \(narrowPeak\)"),
    ("chr1\t10\t20\t.\t0\t.\t1\t-1\t-1\t-1", True, r"line 2: summit -1 is outside the peak .* drop --summits"),
])
def test_bad_bed_lines_name_file_and_line(tmp_path, line, summits, message):
    bed = write_bed(tmp_path / "bad.bed", ["chr1\t0\t10" + ("\t.\t0\t.\t1\t-1\t-1\t5" if summits else ""), line])
    with pytest.raises(InputValidationError, match=rf"bad\.bed: {message}"):
        read_loci(bed, {"chr1": 300, "chr2": 120}, L, summits=summits)


def test_empty_bed_and_missing_files(tmp_path):
    bed = write_bed(tmp_path / "e.bed", ["track x", "# nothing"])
    with pytest.raises(InputValidationError, match="no loci"):
        read_loci(bed, {"chr1": 1}, L)
    with pytest.raises(InputValidationError, match="BED file not found"):
        read_loci(tmp_path / "none.bed", {"chr1": 1}, L)
    with pytest.raises(InputValidationError, match="genome file not found"):
        open_genome(tmp_path / "none.fa")


def test_gzipped_bed(tmp_path):
    import gzip
    path = tmp_path / "l.bed.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("chr1\t100\t140\n")
    assert read_loci(path, {"chr1": 300}, L).mid.tolist() == [120]


# ----------------------------------------------------------------------------- the command


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_ism_bed_equals_hand_cut_fasta(files, tmp_path, suffix):
    """The same windows cut by hand and given as FASTA give the same results, bit for bit."""
    if suffix == ".h5":
        pytest.importorskip("h5py")
    hand = write_fasta(tmp_path / "hand.fa", windows_by_hand(MIDS))
    ref, got = tmp_path / f"ref{suffix}", tmp_path / f"bed{suffix}"
    assert run_ism(files["all"], hand, "-o", ref, "--batch-size", "2", "-q") == 0
    assert run_ism(files["all"], "--bed", files["bed"], "--genome", files["genome"], "-o", got,
                   "--batch-size", "2", "-q") == 0
    a, b = read_results(ref), read_results(got)
    assert sorted(b) == sorted([*a, "chrom", "end", "start"])
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert b["chrom"].tolist() == [c for c, _ in MIDS]
    assert b["start"].tolist() == [m - L // 2 for _, m in MIDS]
    assert b["end"].tolist() == [m - L // 2 + L for _, m in MIDS]
    assert b["start"].dtype == np.int64


def test_ism_bed_alt_model_refuses_n_naming_the_line(files, tmp_path):
    out = tmp_path / "alt.npz"
    with pytest.raises(InputValidationError, match=r"loci\.bed: line 5 \(chr1:80-160\): position 70 is not one-hot.*"
                                                   r"--substitutions all"):
        run_ism(files["alt"], "--bed", files["bed"], "--genome", files["genome"], "-o", out, "-q")
    assert not out.exists()
    # loci without N run on the alt model
    bed = write_bed(tmp_path / "clean.bed", ["chr1\t30\t90", "chr2\t60\t61"])
    assert run_ism(files["alt"], "--bed", bed, "--genome", files["genome"], "-o", out, "-q") == 0


def test_ism_bed_unknown_chromosome_leaves_nothing(files, tmp_path):
    bed = write_bed(tmp_path / "u.bed", ["chr1\t30\t90", "chrUn_1\t5\t9"])
    out = tmp_path / "u.npz"
    with pytest.raises(InputValidationError, match=r"u\.bed: line 2: chromosome 'chrUn_1' is not in the genome"):
        run_ism(files["all"], "--bed", bed, "--genome", files["genome"], "-o", out, "-q")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.bed"]


@pytest.mark.parametrize("argv,message", [
    (["IN.fa", "--bed", "B.bed", "--genome", "G.fa", "-o", "o.npz"], "either as INPUT .* or as --bed"),
    (["-o", "o.npz"], "either as INPUT .* or as --bed"),
    (["--bed", "B.bed", "-o", "o.npz"], "--bed needs --genome"),
    (["IN.fa", "--genome", "G.fa", "-o", "o.npz"], "--genome applies to loci input"),
    (["IN.fa", "--summits", "-o", "o.npz"], "--summits applies to loci input"),
    (["--bed", "B.bed", "--genome", "G.fa", "--center", "-o", "o.npz"], "--center applies to FASTA input"),
])
def test_ism_input_option_errors(files, argv, message):
    with pytest.raises(InputValidationError, match=message):
        run_ism(files["all"], *argv)
