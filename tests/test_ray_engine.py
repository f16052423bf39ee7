"""``ism --engine ray``: a local 2-CPU Ray cluster gives the single process's output files, bit for bit.

Bit for bit because both engines run the same batches (records ``b*B .. b*B+B-1``) through the same
function (:func:`yuzu_onnx.jobs.run_batch`) on ONNX Runtime's CPU provider, which is deterministic
for a given batch; only the order in which batches are written differs.
"""

from __future__ import annotations

import numpy as np
import pytest

from yuzu_onnx.errors import InputValidationError

from loci_helpers import convert_toynet, genome_sequences, read_results, run_ism, write_bed, write_fasta

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'yuzu-onnx[ray]'); the Ray engine "
                                        "tests need a local Ray cluster")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'yuzu-onnx[ray]')")
pytest.importorskip("pyfaidx", reason="loci input needs pyfaidx (pip install 'yuzu-onnx[loci]')")

GENOME = genome_sequences()
BED = ["chr1\t30\t90", "chr1\t100\t140", "chr1\t280\t300", "chr1\t170\t190", "chr2\t0\t10", "chr2\t60\t61",
       "chr1\t200\t260"]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with 2 CPUs for the module (shut down afterwards)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray")
    return {"genome": write_fasta(d / "genome.fa", GENOME), "bed": write_bed(d / "loci.bed", BED),
            "all": convert_toynet(d, "all"), "alt": convert_toynet(d, "alt")}


def assert_same_files(a, b):
    ra, rb = read_results(a), read_results(b)
    assert sorted(ra) == sorted(rb)
    for key in ra:
        assert ra[key].dtype == rb[key].dtype, key
        assert np.array_equal(ra[key], rb[key], equal_nan=ra[key].dtype.kind == "f"), key


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_ray_loci_outputs_equal_single_process(cluster, files, tmp_path, suffix):
    if suffix == ".h5":
        pytest.importorskip("h5py")
    outs = {}
    for engine in ("local", "ray"):
        d = tmp_path / engine
        d.mkdir()
        extra = ["--bigwig", d / "t.bw"] if suffix == ".npz" else []
        assert run_ism(files["all"], "--bed", files["bed"], "--genome", files["genome"], "-o", d / f"o{suffix}",
                       "--attr", "--modisco", d / "m", *extra, "--batch-size", "2", "--engine", engine, "-q") == 0
        outs[engine] = d
    assert_same_files(outs["local"] / f"o{suffix}", outs["ray"] / f"o{suffix}")
    for name in ("m.ohe.npz", "m.attr.npz"):
        assert_same_files(outs["local"] / name, outs["ray"] / name)
    if suffix == ".npz":
        pyBigWig = pytest.importorskip("pyBigWig")
        tracks = []
        for engine in ("local", "ray"):
            bw = pyBigWig.open(str(outs[engine] / "t.bw"))
            tracks.append({c: bw.intervals(c) for c in bw.chroms()})
            bw.close()
        assert tracks[0] == tracks[1]


def test_ray_fasta_raw_outputs_equal_single_process(cluster, files, tmp_path):
    fasta = write_fasta(tmp_path / "s.fa", {f"s{i}": GENOME["chr1"][i * 20:i * 20 + 80].upper().replace("N", "A")
                                            for i in range(5)})
    local, remote = tmp_path / "l.npz", tmp_path / "r.npz"
    assert run_ism(files["alt"], fasta, "-o", local, "--batch-size", "2", "-q") == 0
    assert run_ism(files["alt"], fasta, "-o", remote, "--batch-size", "2", "--engine", "ray", "-q") == 0
    assert_same_files(local, remote)
    assert read_results(remote)["y/y_hat"].shape == (5, 4, 80, 2, 80)


def test_ray_user_error_comes_back_as_itself(cluster, files, tmp_path):
    out = tmp_path / "e.npz"
    with pytest.raises(InputValidationError, match=r"loci\.bed: line \d \(chr\d:-?\d+-\d+\): position \d+ is not "
                                                   r"one-hot.*--substitutions all"):
        run_ism(files["alt"], "--bed", files["bed"], "--genome", files["genome"], "-o", out, "--batch-size", "2",
                "--engine", "ray", "-q")
    assert not any(p.name.startswith((".e.npz", "e.npz")) for p in tmp_path.iterdir())
