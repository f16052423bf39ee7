"""ISMSession (validation, batching, providers, layouts) and ISM attributions."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import helper

from yuzu_onnx import convert, naive_ism
from yuzu_onnx.attributions import attributions
from yuzu_onnx.errors import InputValidationError, MemoryBudgetError, ModelLoadError
from yuzu_onnx.session import ISMSession

from builders import conv, dense_head, onnx_model, random_one_hot
from conftest import MODELS_DIR, assert_ism_close, assert_y0_close

N_SEQ = 5
BATCH = 2  # 5 sequences in batches of 2: the last batch is uneven

#: (file, length, start, end): a full region and an inner one (start > 0).
MODELS = {
    "toynet": ("toynet_L45_torchscript.onnx", 45, 0, 45),
    "basset": ("basset_L101_torchscript.onnx", 101, 20, 50),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Converted copies of the committed models, saved to disk: name -> path."""
    out = tmp_path_factory.mktemp("converted")
    paths = {}
    for name, (file, _, start, end) in MODELS.items():
        path = out / f"{name}_ism.onnx"
        onnx.save(convert(str(MODELS_DIR / file), start=start, end=end), str(path))
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def toynet(converted):
    return ISMSession(converted["toynet"], batch_size=BATCH)


def _x(name: str, n: int = N_SEQ) -> np.ndarray:
    return random_one_hot(n, MODELS[name][1], seed=17 + len(name))


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("name", list(MODELS))
def test_matches_naive_ism(converted, name):
    file, length, start, end = MODELS[name]
    session = ISMSession(converted[name], batch_size=BATCH)
    X = _x(name)
    got = session.run(X)
    ref = naive_ism(str(MODELS_DIR / file), X, start, end)
    original = onnx.load(str(MODELS_DIR / file))
    assert session.output_names == [o.name for o in original.graph.output]
    assert len(got) == len(ref) == len(original.graph.output)
    for out, (y0, y_hat), (r0, r_hat) in zip(session.output_names, got, ref):
        assert y0.shape[0] == N_SEQ and y_hat.shape[:3] == (N_SEQ, 4, end - start)
        assert_y0_close(y0, r0, label=f"{name}/{out}")
        assert_ism_close(y_hat, r_hat, r0, start=start, label=f"{name}/{out}")


def test_properties_and_provider(converted, caplog):
    with caplog.at_level(logging.INFO, logger="yuzu_onnx"):
        session = ISMSession(converted["basset"])
    assert session.provider == "CPUExecutionProvider"
    assert "CPUExecutionProvider" in session.session.get_providers()
    assert any("CPUExecutionProvider" in r.getMessage() and r.levelno == logging.INFO
               and r.name == "yuzu_onnx" for r in caplog.records)
    original = onnx.load(str(MODELS_DIR / MODELS["basset"][0]))
    assert session.input_name == original.graph.input[0].name
    assert (session.layout, session.alphabet, session.length) == ("NCL", 4, 101)
    assert (session.start, session.end, session.substitutions) == (20, 50, "alt")
    assert session.batch_size == 8
    assert session.input_shape == ("N", 4, 101)


def test_explicit_cpu_provider_and_model_proto(converted, toynet):
    X = _x("toynet", 3)
    proto = onnx.load(str(converted["toynet"]))
    session = ISMSession(proto, providers=["CPUExecutionProvider"], batch_size=3)
    assert session.provider == "CPUExecutionProvider"
    for (a0, ah), (b0, bh) in zip(session.run(X), toynet.run(X)):
        np.testing.assert_array_equal(a0, b0)
        np.testing.assert_array_equal(ah, bh)


def test_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        ISMSession(tmp_path / "missing.onnx")
    with pytest.raises(ModelLoadError, match="not a yuzu-onnx converted model"):
        ISMSession(MODELS_DIR / MODELS["toynet"][0])
    with pytest.raises(ValueError, match="batch_size"):
        ISMSession(MODELS_DIR / MODELS["toynet"][0], batch_size=0)


# ----------------------------------------------------------------------------- batching


def test_iter_batches_cover_every_sequence_once(toynet):
    X = _x("toynet")
    full = toynet.run(X)
    seen = []
    for sl, pairs in toynet.iter_batches(X):
        assert len(pairs) == len(toynet.output_names)
        idx = list(range(N_SEQ))[sl]
        assert 1 <= len(idx) <= BATCH
        seen.extend(idx)
        for (y0, y_hat), (f0, fh) in zip(pairs, full):
            assert y0.shape[0] == y_hat.shape[0] == len(idx)
            np.testing.assert_array_equal(y0, f0[sl])
            np.testing.assert_array_equal(y_hat, fh[sl])
    assert seen == list(range(N_SEQ))


def test_batch_size_does_not_change_results(converted, toynet):
    X = _x("toynet")
    ref = toynet.run(X)
    for bs in (1, 4, 5, 64):
        got = ISMSession(converted["toynet"], batch_size=bs).run(X)
        for (a0, ah), (b0, bh) in zip(got, ref):
            np.testing.assert_allclose(a0, b0, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(ah, bh, rtol=1e-5, atol=1e-6)


def test_max_memory_sets_the_batch_from_the_estimate(converted, toynet):
    X = _x("toynet")
    est = toynet.memory
    assert est.per_sequence > 0 and est.weights > 0
    # room for exactly two sequences
    session = ISMSession(converted["toynet"], max_memory=est.total(2) + est.per_sequence // 2)
    assert session.batch_size == 2
    assert [sl.stop - sl.start for sl, _ in session.iter_batches(X)] == [2, 2, 1][: -(-N_SEQ // 2)]
    for (a0, ah), (b0, bh) in zip(session.run(X), toynet.run(X)):
        np.testing.assert_array_equal(a0, b0)
        np.testing.assert_array_equal(ah, bh)
    # an explicit batch_size is an upper bound
    assert ISMSession(converted["toynet"], batch_size=1, max_memory=est.total(4)).batch_size == 1


def test_max_memory_below_one_sequence_is_refused_before_running(converted, toynet):
    need = toynet.memory.total(1)
    with pytest.raises(MemoryBudgetError, match=r"one sequence needs about .* more than the memory budget of "
                                                r"1\.00 KiB; raise --max-memory / max_memory to at least"):
        ISMSession(converted["toynet"], max_memory=1024)
    assert need > 1024


# ----------------------------------------------------------------------------- validation


def test_wrong_length(toynet):
    X = random_one_hot(2, 44, seed=1)
    with pytest.raises(InputValidationError, match=r"length 44 != 45.*\(N, 4, 45\)"):
        toynet.run(X)


def test_wrong_alphabet(toynet):
    X = random_one_hot(2, 45, seed=1, alphabet=5)
    with pytest.raises(InputValidationError, match=r"alphabet size 5 != 4.*\(N, 4, 45\)"):
        toynet.run(X)


def test_swapped_axes(toynet):
    X = np.ascontiguousarray(_x("toynet", 2).transpose(0, 2, 1))
    with pytest.raises(InputValidationError, match="swapped"):
        toynet.run(X)


def test_two_dimensional_input(toynet):
    with pytest.raises(InputValidationError, match=r"3-D.*2-D.*\(N, 4, 45\)"):
        toynet.run(_x("toynet", 1)[0])


def test_int_dtype(toynet):
    with pytest.raises(InputValidationError, match="dtype is int64"):
        toynet.run(_x("toynet", 2).astype(np.int64))


def test_float64_is_accepted(toynet):
    X = _x("toynet", 2)
    for (a0, ah), (b0, bh) in zip(toynet.run(X.astype(np.float64)), toynet.run(X)):
        np.testing.assert_array_equal(a0, b0)
        np.testing.assert_array_equal(ah, bh)


def test_not_one_hot_in_alt_mode(toynet):
    X = _x("toynet")
    X[3, :, 25] = 0.0
    with pytest.raises(InputValidationError, match=r"sequence 3, position 25 is not one-hot"):
        toynet.run(X)
    X = _x("toynet")
    X[1, :, 7] = 0.25
    with pytest.raises(InputValidationError, match=r"sequence 1, position 7 "):
        list(toynet.iter_batches(X))


def test_not_one_hot_outside_region_is_fine(converted):
    session = ISMSession(converted["basset"], batch_size=BATCH)
    X = _x("basset", 2)
    X[0, :, 5] = 0.0  # region is 20..49
    X[1, :, 60] = 0.25
    y0, y_hat = session.run(X)[0]
    assert np.isfinite(y_hat).all() and y_hat.shape[:3] == (2, 4, 30)


def test_empty_batch(toynet):
    # N = 0 is valid: empty results (shapes in tests/test_bad_input.py), no batches
    pairs = toynet.run(np.zeros((0, 4, 45), np.float32))
    assert pairs and all(y0.shape[0] == 0 and y_hat.shape[:3] == (0, 4, 45) for y0, y_hat in pairs)
    assert list(toynet.iter_batches(np.zeros((0, 4, 45), np.float32))) == []


# ----------------------------------------------------------------------------- NLC layout

L_NLC = 24


def nlc_model() -> onnx.ModelProto:
    """Channels-last: (N, L, 4) -> Transpose -> Conv(4->3, k=5) -> Flatten -> MatMul -> (N, 2)."""
    rng = np.random.default_rng(3)
    node, inits = conv("conv", "xt", "h", (3, 4, 5), rng, scale=1.0, bias=1.0)
    head, dense = dense_head("h", "y", 3 * (L_NLC - 4), 2, rng, flatten="Flatten")
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]), node, *head]
    return onnx_model(nodes, {**inits, **dense}, ["N", L_NLC, 4], {"y": ["N", 2]})


def test_nlc_layout():
    model = nlc_model()
    start, end = 3, 15
    session = ISMSession(convert(model, start=start, end=end), batch_size=BATCH)
    assert session.layout == "NLC" and session.input_shape == ("N", L_NLC, 4)
    assert (session.input_name, session.output_names) == ("x", ["y"])
    Xc = random_one_hot(N_SEQ, L_NLC, seed=5)
    X = np.ascontiguousarray(Xc.transpose(0, 2, 1))  # (N, L, A)
    (y0, y_hat), = session.run(X)
    (r0, r_hat), = naive_ism(model, X, start, end, layout="NLC")
    assert y_hat.shape == (N_SEQ, 4, end - start, 2)
    assert_y0_close(y0, r0, label="nlc")
    assert_ism_close(y_hat, r_hat, r0, start=start, label="nlc")

    with pytest.raises(InputValidationError, match=r"\(N, 24, 4\) \(NLC layout.*swapped"):
        session.run(Xc)  # NCL array given to an NLC model
    bad = X.copy()
    bad[1, 7, :] = 0.0  # position 7 of sequence 1, inside the region
    with pytest.raises(InputValidationError, match=r"sequence 1, position 7 "):
        session.run(bad)
    bad = X.copy()
    bad[1, 20, :] = 0.0  # outside the region: allowed
    session.run(bad)

    # attributions accept the NLC input directly
    np.testing.assert_array_equal(attributions(y0, y_hat, X, layout="NLC", start=start),
                                  attributions(y0, y_hat, Xc, layout="NCL", start=start))


# ----------------------------------------------------------------------------- attributions


def _loop_attributions(y0, y_hat, X, target, hypothetical, start):
    """Straightforward loops over n, a, i (X in NCL)."""
    n_seq, alphabet, lr = y_hat.shape[:3]
    flat0 = y0.reshape(n_seq, -1)
    flat = y_hat.reshape(n_seq, alphabet, lr, -1)
    ks = range(flat0.shape[1]) if target is None else ([target] if isinstance(target, int) else list(target))
    out = np.zeros((n_seq, alphabet, lr))
    for n in range(n_seq):
        for i in range(lr):
            effects = []
            for a in range(alphabet):
                total = 0.0
                for k in ks:
                    total += float(flat[n, a, i, k]) - float(flat0[n, k])
                effects.append(total / len(ks))
            mean = sum(effects) / alphabet
            for a in range(alphabet):
                value = effects[a] - mean
                if not hypothetical:
                    value = value * float(X[n, a, start + i])
                out[n, a, i] = value
    return out


def _tiny(out_shape=(3,), seed=0):
    rng = np.random.default_rng(seed)
    n, a, length, start, lr = 2, 4, 7, 1, 5
    y0 = rng.standard_normal((n,) + out_shape).astype(np.float32)
    y_hat = (y0[:, None, None] + rng.standard_normal((n, a, lr) + out_shape)).astype(np.float32)
    X = random_one_hot(n, length, seed=seed)
    return y0, y_hat, X, start


@pytest.mark.parametrize("target", [None, 0, 2, -1, [0, 2], (1, 1, 2)])
@pytest.mark.parametrize("hypothetical", [False, True])
def test_attributions_match_loops(target, hypothetical):
    y0, y_hat, X, start = _tiny()
    got = attributions(y0, y_hat, X, target=target, hypothetical=hypothetical, start=start)
    assert got.shape == (2, 4, 5) and got.dtype == np.float32
    t = 2 if target == -1 else target
    np.testing.assert_allclose(got, _loop_attributions(y0, y_hat, X, t, hypothetical, start), rtol=1e-5, atol=1e-6)


def test_hypothetical_keeps_all_characters_and_is_centered():
    y0, y_hat, X, start = _tiny()
    h = attributions(y0, y_hat, X, hypothetical=True, start=start)
    assert (np.abs(h) > 1e-6).all()
    np.testing.assert_allclose(h.sum(axis=1), 0.0, atol=1e-5)
    assert np.array_equal(h, attributions(y0, y_hat, None, hypothetical=True, start=start))


def test_projection_keeps_only_observed_characters():
    y0, y_hat, X, start = _tiny()
    h = attributions(y0, y_hat, X, hypothetical=True, start=start)
    attr = attributions(y0, y_hat, X, start=start)
    region = X[:, :, start:start + 5]
    assert np.array_equal(attr != 0, region == 1)
    np.testing.assert_array_equal(attr[region == 1], h[region == 1])
    observed = region.argmax(axis=1)[:, None]  # (N, 1, Lr)
    np.testing.assert_array_equal(attr.sum(axis=1), np.take_along_axis(h, observed, axis=1)[:, 0])


def test_target_indexes_flattened_output_dims():
    y0, y_hat, X, start = _tiny(out_shape=(2, 3), seed=4)
    picked = attributions(y0, y_hat, X, target=4, start=start)
    direct = attributions(y0[:, 1, 1], y_hat[..., 1, 1], X, start=start)
    np.testing.assert_allclose(picked, direct, rtol=1e-6, atol=1e-7)
    assert not np.allclose(picked, attributions(y0, y_hat, X, target=0, start=start))
    both = attributions(y0, y_hat, X, target=[0, 4], start=start, hypothetical=True)
    mean = (attributions(y0, y_hat, X, target=0, start=start, hypothetical=True)
            + attributions(y0, y_hat, X, target=4, start=start, hypothetical=True)) / 2
    np.testing.assert_allclose(both, mean, rtol=1e-5, atol=1e-6)
    everything = attributions(y0, y_hat, X, start=start, hypothetical=True)
    np.testing.assert_allclose(everything, attributions(y0, y_hat, X, target=range(6), start=start,
                                                        hypothetical=True), rtol=1e-6, atol=1e-7)


def test_scalar_outputs_and_y0_cancels():
    y0, y_hat, X, start = _tiny(out_shape=())
    a = attributions(y0, y_hat, X, start=start)
    b = attributions(np.zeros_like(y0), y_hat, X, start=start)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert a.shape == (2, 4, 5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(target=3), "out of range"),
    (dict(target=[]), "empty"),
    (dict(target=1.5), "ints"),
    (dict(start=3), "does not fit"),
    (dict(layout="LNC"), "layout"),
])
def test_attribution_errors(kwargs, match):
    y0, y_hat, X, start = _tiny()
    kwargs = {"start": start, **kwargs}
    with pytest.raises(InputValidationError, match=match):
        attributions(y0, y_hat, X, **kwargs)
    with pytest.raises(InputValidationError, match="does not match"):
        attributions(y0[:1], y_hat, X)
    with pytest.raises(InputValidationError, match="required"):
        attributions(y0, y_hat, None)
