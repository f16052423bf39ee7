"""End-to-end checks of :func:`yuzu_onnx.convert` on the committed reference models.

Every converted model is run with :func:`yuzu_onnx.run_ism` and compared with the brute-force
oracle :func:`yuzu_onnx.naive_ism` on the original model. Structured sensing must be exact to
float32 rounding (``max|y_hat - naive| <= 1e-4 * max|naive delta|``), globally and on the
first and last three positions of the region separately; Gaussian sensing must correlate with
the oracle's deltas at r >= 0.9999.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from builders import random_one_hot
from conftest import (
    A,
    BATCH,
    MANIFEST,
    assert_ism_close,
    assert_y0_close,
    cached_convert,
    cached_naive,
    layout,
    make_input,
    to_layout,
    manifest_params,
    model_path,
    original_outputs,
    regions,
    stable_seed,
)
from yuzu_onnx import convert, naive_ism, run_ism

EDGE = 3  # positions checked separately at each end of a region


#: entries whose original ONNX Runtime can run (the oracle); the others (dilated Convs with auto_pad
#: SAME_*) are checked against their canonicalized model in tests/test_canonical_shapes.py
RUNNABLE = [e for e in MANIFEST if e.get("ort_runs", True)]


def _cases():
    for entry in manifest_params(RUNNABLE):
        for subs in ("alt", "all"):
            for region in ("full", "middle", "first", "last"):
                for kind in ("onehot",) if subs == "alt" else ("onehot", "n_soft"):
                    yield pytest.param(entry.values[0], subs, region, kind,
                                       id=f"{entry.id}-{subs}-{region}-{kind}")


def _check_against_naive(result, naive, original, X, start, end, label):
    """Shapes, y0 against the original model, and y_hat against the oracle (global + edges)."""
    assert len(result) == len(naive) == len(original), label
    for k, ((y0, y_hat), (n0, n_hat), ref) in enumerate(zip(result, naive, original)):
        lab = f"{label} output {k}"
        assert y_hat.shape == (X.shape[0], A, end - start) + ref.shape[1:], lab
        assert_y0_close(y0, ref, label=lab)
        assert_ism_close(y_hat, n_hat, n0, start=start, label=lab)
        width = end - start
        for name, sl in (("first", slice(0, min(EDGE, width))), ("last", slice(max(width - EDGE, 0), width))):
            assert_ism_close(y_hat, n_hat, n0, start=start, positions=sl, label=f"{lab} ({name} {EDGE} positions)")


@pytest.mark.parametrize(("entry", "subs", "region", "kind"), list(_cases()))
def test_structured_matches_naive(entry, subs, region, kind):
    start, end = regions(entry["length"])[region]
    X = make_input(entry, kind, start, end)
    converted = cached_convert(entry["file"], start, end, "structured", subs)
    # batch_size=BATCH: the whole batch in one call, so models exported with batch 1 must
    # really accept batch 2 after conversion.
    result = run_ism(converted, X, batch_size=BATCH)
    naive = cached_naive(entry, kind, start, end)
    original = original_outputs(model_path(entry), X)
    _check_against_naive(result, naive, original, X, start, end,
                         f"{entry['file']} structured {subs} [{start}, {end}) {kind}")


@pytest.mark.parametrize("entry", manifest_params([e for e in MANIFEST if e["length"] in (67, 61)]))
def test_alt_accepts_n_columns_outside_region(entry):
    """substitutions='alt' only needs one-hot columns inside the region."""
    length = entry["length"]
    start, end = regions(length)["middle"]
    X = random_one_hot(BATCH, length, stable_seed(entry["file"], "n_outside"))
    X[0, :, start - 1] = 0.0
    X[1, :, end] = 0.25
    X[1, :, 0] = 0.0
    X = to_layout(X, entry)
    converted = cached_convert(entry["file"], start, end, "structured", "alt")
    result = run_ism(converted, X, batch_size=BATCH)
    naive = naive_ism(str(model_path(entry)), X, start, end, layout=layout(entry))
    original = original_outputs(model_path(entry), X)
    _check_against_naive(result, naive, original, X, start, end, f"{entry['file']} alt, N outside region")


# ----------------------------------------------------------------------------- Gaussian sensing


def _gaussian_stats(result, naive):
    """Per output: (Pearson r of the deltas, max abs error of y_hat)."""
    stats = []
    for (y0, y_hat), (n0, n_hat) in zip(result, naive):
        d = (y_hat - y0[:, None, None]).astype(np.float64).ravel()
        dn = (n_hat - n0[:, None, None]).astype(np.float64).ravel()
        r = float(np.corrcoef(d, dn)[0, 1])
        stats.append((r, float(np.abs(y_hat.astype(np.float64) - n_hat).max()), float(np.abs(dn).max())))
    return stats


@pytest.mark.parametrize("entry", manifest_params(RUNNABLE))
def test_gaussian_correlates_with_naive(entry, record_property):
    length = entry["length"]
    X = make_input(entry, "onehot", 0, length)
    converted = cached_convert(entry["file"], 0, length, "gaussian", "alt")
    result = run_ism(converted, X, batch_size=BATCH)
    naive = cached_naive(entry, "onehot", 0, length)
    original = original_outputs(model_path(entry), X)
    for k, ((y0, y_hat), ref) in enumerate(zip(result, original)):
        assert y_hat.shape == (BATCH, A, length) + ref.shape[1:]
        assert_y0_close(y0, ref, label=f"{entry['file']} gaussian output {k}")
    for k, (r, err, scale) in enumerate(_gaussian_stats(result, naive)):
        record_property(f"output{k}_pearson_r", r)
        record_property(f"output{k}_max_abs_err", err)
        record_property(f"output{k}_max_abs_delta", scale)
        print(f"{entry['file']} gaussian output {k}: r = {r:.9f}, max abs err = {err:.3e} "
              f"(max |delta| = {scale:.3e})")
        assert r >= 0.9999, f"{entry['file']} output {k}: Pearson r = {r:.6f} < 0.9999 (max abs err {err:.3e})"


def test_larger_alpha_is_no_worse(record_property):
    entry = next(e for e in MANIFEST if e["file"] == "toynet_L45_torchscript.onnx")
    length = entry["length"]
    X = make_input(entry, "onehot", 0, length)
    naive = cached_naive(entry, "onehot", 0, length)
    errors = {}
    for alpha in (1.0, 4.0):
        converted = cached_convert(entry["file"], 0, length, "gaussian", "alt", alpha=alpha)
        errors[alpha] = max(err for _, err, _ in _gaussian_stats(run_ism(converted, X), naive))
        record_property(f"alpha{alpha}_max_abs_err", errors[alpha])
    print(f"toynet gaussian max abs error by alpha: {errors}")
    assert errors[4.0] <= errors[1.0], errors


# ----------------------------------------------------------------------------- determinism


DET_FILE = "basset_L101_dynamo.onnx"


def _bytes(**kwargs) -> bytes:
    return convert(str(model_path({"file": DET_FILE})), **kwargs).SerializeToString()


def test_gaussian_same_seed_same_bytes():
    assert _bytes(sensing="gaussian", seed=7) == _bytes(sensing="gaussian", seed=7)


def test_gaussian_different_seed_different_bytes():
    assert _bytes(sensing="gaussian", seed=7) != _bytes(sensing="gaussian", seed=8)


def test_structured_is_deterministic():
    assert _bytes(sensing="structured") == _bytes(sensing="structured")
    assert _bytes(sensing="structured", seed=1) == _bytes(sensing="structured", seed=2), \
        "the seed should only affect Gaussian designs"


def test_conversion_is_deterministic_across_processes():
    """Same bytes in fresh interpreters with different hash seeds (no set/dict-order leaks)."""
    code = (
        "import hashlib, sys; from yuzu_onnx import convert; "
        f"print(hashlib.sha256(convert({str(model_path({'file': DET_FILE}))!r}, sensing='gaussian', "
        "seed=3, start=5, end=60).SerializeToString()).hexdigest()); "
        f"print(hashlib.sha256(convert({str(model_path({'file': DET_FILE}))!r}, substitutions='all')"
        ".SerializeToString()).hexdigest())"
    )
    digests = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=120, check=True)
        digests.append(out.stdout.split())
    assert digests[0] == digests[1]


@pytest.mark.parametrize("sensing", ["structured", "gaussian"])
def test_outputs_are_identical_across_runs_and_sessions_on_cpu(sensing):
    """Same inputs, same outputs bit for bit: twice in one session and in a second session.
    Another batch size may differ at float32 rounding (ONNX Runtime's kernels block and split
    work by shape), so that is held to the exactness bound only."""
    from yuzu_onnx.session import ISMSession

    model = convert(str(model_path({"file": DET_FILE})), sensing=sensing, substitutions="all")
    X = random_one_hot(5, 101, seed=11)
    X[1, :, 7] = 0.25  # a soft column: "all" mode takes any input
    first = ISMSession(model, providers=["CPUExecutionProvider"], batch_size=5)
    runs = [first.run(X), first.run(X),
            ISMSession(model, providers=["CPUExecutionProvider"], batch_size=5).run(X)]
    for other in runs[1:]:
        for (a0, ah), (b0, bh) in zip(runs[0], other):
            assert a0.tobytes() == b0.tobytes() and ah.tobytes() == bh.tobytes()
    split = ISMSession(model, providers=["CPUExecutionProvider"], batch_size=2).run(X)
    for (a0, ah), (b0, bh) in zip(runs[0], split):
        assert_ism_close(bh, ah, a0, label="batch 2 vs 5")


@pytest.mark.parametrize(("region", "form"), [((0, 40), "whole"), ((7, 33), "whole"), ((0, 40), "tiled"),
                                              ((5, 29), "tiled")])
def test_alt_y_hat_is_one_gather_of_mutant_rows_and_y0(region, form):
    """In ``alt`` mode ``y_hat`` is one GatherND per sequence from the mutants' rows with ``y0``
    appended (character ``a`` at a position with reference ``r``: mutant slot ``a - (a > r)``;
    ``a = r``: ``y0``), already in ``(N, A, L, *out)`` order: for an output per position and one
    per sequence, sequences with different references, whole and tiled forms, sub-regions. The
    reference slot holds ``y0`` bit for bit; every other slot matches the oracle."""
    import warnings

    import onnx

    from builders import Net
    from conftest import assert_matches_oracle, original_outputs
    from yuzu_onnx import convert

    start, end = region
    X = random_one_hot(3, 40, seed=12)
    for head in ("profile", "counts"):
        net = Net(seed=11)
        h = net.op("Relu", [net.conv("x", 4, 6, 5, pads=[2, 2])])
        out = (net.conv(h, 6, 2, 3, pads=[1, 1]) if head == "profile"
               else net.op("ReduceMean", [h], axes=[2], keepdims=0))
        model = net.model({"x": ["N", 4, 40]}, {"y": out})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = convert(model, start=start, end=end, form=form, tile_width=4 if form == "tiled" else None)
        producer = next(n for n in graph.graph.node if "y_ism" in n.output)
        assert producer.op_type == "GatherND"
        assert [a.i for a in producer.attribute if a.name == "batch_dims"] == [1]
        assert_matches_oracle(model, graph, X, start=start, end=end, label=f"alt rows {form} {region}")
        y0, y_hat = original_outputs(graph, X)
        for n in range(X.shape[0]):
            refs = X[n, :, start:end].argmax(axis=0)
            for i, r in enumerate(refs):
                np.testing.assert_array_equal(y_hat[n, r, i], y0[n])
