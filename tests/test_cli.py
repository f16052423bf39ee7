"""The ``yuzu-onnx convert`` command end to end, and loading models with external data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from yuzu_onnx import convert, naive_ism, run_ism
from yuzu_onnx.cli import main

from conftest import MODELS_DIR, assert_ism_close, random_one_hot

EXAMPLE = MODELS_DIR / "toynet_L45_torchscript.onnx"


def test_convert_writes_default_output_and_prints_plan(tmp_path, capsys):
    src = tmp_path / "toy.onnx"
    shutil.copy(EXAMPLE, src)
    assert main(["convert", str(src)]) == 0
    out = capsys.readouterr().out
    assert "probe window" in out and "predicted speedup" in out
    written = tmp_path / "toy.ism.onnx"
    assert written.is_file()
    X = random_one_hot(2, 45, seed=3)
    (y0, y_hat), = run_ism(str(written), X)
    (r0, r_hat), = naive_ism(str(src), X)
    assert_ism_close(y_hat, r_hat, r0)


def test_convert_options_reach_the_model(tmp_path):
    out = tmp_path / "o.ism.onnx"
    assert main(["convert", str(EXAMPLE), "-o", str(out), "--start", "5", "--end", "17",
                 "--substitutions", "all", "--sensing", "gaussian", "--alpha", "2", "--seed", "3", "-q"]) == 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert (props["yuzu_onnx.start"], props["yuzu_onnx.end"]) == ("5", "17")
    assert props["yuzu_onnx.substitutions"] == "all" and props["yuzu_onnx.sensing"] == "gaussian"


def test_verify_prints_error_table(tmp_path, capsys):
    assert main(["convert", str(EXAMPLE), "-o", str(tmp_path / "v.onnx"), "-q", "--verify", "1"]) == 0
    out = capsys.readouterr().out
    assert "verified against naive ISM on 1 random sequences" in out and "Pearson r 1.0000" in out


@pytest.mark.parametrize("content, message", [(None, "no such file"), (b"not a protobuf at all", "not")])
def test_bad_model_file_gives_one_line_error(tmp_path, capsys, content, message):
    src = tmp_path / "bad.onnx"
    if content is not None:
        src.write_bytes(content)
    assert main(["convert", str(src)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("yuzu-onnx: error:") and message in err[0] and "bad.onnx" in err[0]
    assert not (tmp_path / "bad.ism.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == (["bad.onnx"] if content is not None else [])


def test_bad_region_is_refused(capsys):
    assert main(["convert", str(EXAMPLE), "--start", "40", "--end", "50", "-o", "/tmp/never.onnx"]) == 2
    assert "region start=40, end=50" in capsys.readouterr().err
    assert not Path("/tmp/never.onnx").exists()


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "yuzu_onnx.cli", "convert", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--substitutions" in result.stdout and "--outputs" in result.stdout


def test_external_data_model_converts(tmp_path):
    model = onnx.load(str(MODELS_DIR / "basset_L101_torchscript.onnx"))
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").is_file()
    converted = convert(path)
    X = random_one_hot(2, 101, seed=4)
    (y0, y_hat), = run_ism(converted, X)
    (r0, r_hat), = naive_ism(str(MODELS_DIR / "basset_L101_torchscript.onnx"), X)
    assert_ism_close(y_hat, r_hat, r0)


def test_readme_example_model(capsys):
    """The README's first command: the bundled 1 kb example converts, verifies and is fast."""
    example = MODELS_DIR / "example_basset_L1000.onnx"
    out = Path("/tmp") / "yuzu_readme_example.ism.onnx"
    try:
        assert main(["convert", str(example), "-o", str(out), "--verify", "1"]) == 0
    finally:
        out.unlink(missing_ok=True)
    text = capsys.readouterr().out
    speedup = float(text.split("predicted speedup (FLOPs): ")[1].split("x")[0])
    assert speedup > 10 and "FALLBACK" not in text
    assert "delta Pearson r 1.0000" in text


def test_bench_prints_speedup_and_floor(capsys):
    assert main(["bench", str(EXAMPLE), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "naive ISM" in out and "converted" in out and "floor of exact ISM" in out
    assert float(out.split("speedup ")[1].split("x")[0]) > 0


def test_bench_refuses_a_provider_that_does_not_run(capsys):
    import onnxruntime as ort
    probe = ort.InferenceSession(str(EXAMPLE), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    if probe.get_providers()[0] == "CUDAExecutionProvider":
        pytest.skip("CUDA really runs here")
    assert main(["bench", str(EXAMPLE), "--provider", "cuda"]) == 2
    assert "CUDAExecutionProvider is not usable here" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["missing", "truncated", "not_onnx"])
def test_ism_bad_model_gives_one_line_error(tmp_path, capsys, kind):
    converted = tmp_path / "m.ism.onnx"
    if kind == "truncated":
        onnx.save(convert(EXAMPLE), str(converted))
        converted.write_bytes(converted.read_bytes()[:4000])
    elif kind == "not_onnx":
        converted.write_text(">seq\nACGT\n")
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\n" + "ACGT" * 11 + "A\n")
    out = tmp_path / "out.npz"
    assert main(["ism", str(converted), str(fasta), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("yuzu-onnx: error:") and "m.ism.onnx" in err[-1]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["in.fa"] + ([] if kind == "missing" else ["m.ism.onnx"]))


def test_internal_error_exits_3_with_one_line(monkeypatch, tmp_path, capsys):
    """A bug (InternalError) is told apart from a user error: its own message, exit status 3."""
    from yuzu_onnx.commands import convert as convert_command
    from yuzu_onnx.errors import InternalError

    def broken(*args, **kwargs):
        raise InternalError("rule X broke invariant Y")

    monkeypatch.setattr(convert_command, "convert", broken)
    out = tmp_path / "never.ism.onnx"
    assert main(["convert", str(EXAMPLE), "-o", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("yuzu-onnx: internal error") and "rule X broke invariant Y" in err[0]
    assert "please report" in err[0].lower() and "yuzu-onnx: error:" not in err[0]
    assert not out.exists()
    # -v adds the traceback; the one-line message stays last
    assert main(["-v", "convert", str(EXAMPLE), "-o", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("Traceback") and err[-1].startswith("yuzu-onnx: internal error")


def test_help_documents_exit_status(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "exit status" in out and "3  internal error" in out and "2  user error" in out


def test_commands_do_not_import_the_cli():
    """yuzu_onnx.cli imports the command modules, never the other way round."""
    import ast

    import yuzu_onnx.commands

    folder = Path(yuzu_onnx.commands.__file__).parent
    sources = sorted(folder.glob("*.py"))
    assert {"convert.py", "options.py", "check.py"} <= {p.name for p in sources}
    package = ["yuzu_onnx", "commands"]
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if isinstance(node, ast.Import):
                imported = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                imported = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            bad = [m for m in imported if m == "yuzu_onnx.cli" or m.startswith("yuzu_onnx.cli.")]
            assert not bad, f"{source.name}:{node.lineno} imports the CLI ({bad})"
