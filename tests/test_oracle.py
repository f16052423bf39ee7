"""Tests for :func:`yuzu_onnx.oracle.naive_ism` against an independent numpy model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from onnx import helper

from yuzu_onnx.errors import InputValidationError, ModelLoadError, UnsupportedModelError
from yuzu_onnx.oracle import naive_ism

from builders import onnx_model, random_one_hot

A = 4  # alphabet size
L = 9  # sequence length
C_OUT = 3  # conv channels
K = 3  # conv kernel width
D_OUT = 2  # dense outputs

RNG = np.random.default_rng(1234)
W_CONV = RNG.normal(size=(C_OUT, A, K)).astype(np.float32)
B_CONV = RNG.normal(size=C_OUT).astype(np.float32)
W_DENSE = RNG.normal(size=(C_OUT * L, D_OUT)).astype(np.float32)


# ----------------------------------------------------------------------------- model builders


def build_model(batch: int | str = "N", layout: str = "NCL") -> onnx.ModelProto:
    """Conv1d(pad 1) + bias -> Relu -> two outputs: sum over length, and Flatten + MatMul.

    Parameters
    ----------
    batch : int or str
        Static batch size or a symbolic name.
    layout : {"NCL", "NLC"}
        Layout of the graph input; NLC inputs are transposed to NCL first.

    Returns
    -------
    onnx.ModelProto
        A model with one input ``x`` and outputs ``pooled`` (N, C_OUT), ``dense`` (N, D_OUT).
    """
    nodes = []
    conv_in = "x"
    if layout == "NLC":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_ncl"], perm=[0, 2, 1]))
        conv_in = "x_ncl"
    nodes += [
        helper.make_node("Conv", [conv_in, "w", "b"], ["c"], pads=[1, 1], kernel_shape=[K]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("ReduceSum", ["r", "axes"], ["pooled"], keepdims=0),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "wd"], ["dense"]),
    ]
    in_shape = [batch, A, L] if layout == "NCL" else [batch, L, A]
    inits = {"w": W_CONV, "b": B_CONV, "wd": W_DENSE, "axes": np.array([2], dtype=np.int64)}
    return onnx_model(nodes, inits, in_shape, {"pooled": [batch, C_OUT], "dense": [batch, D_OUT]}, ir_version=8,
                      check=True)


def build_dynamic_length_model() -> onnx.ModelProto:
    """Conv1d + Relu + ReduceSum with symbolic batch and length."""
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1], kernel_shape=[K]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("ReduceSum", ["r", "axes"], ["pooled"], keepdims=0),
    ]
    inits = {"w": W_CONV, "b": B_CONV, "axes": np.array([2], dtype=np.int64)}
    return onnx_model(nodes, inits, ["N", A, "L"], {"pooled": ["N", C_OUT]}, ir_version=8)


# ----------------------------------------------------------------------------- numpy reference


def numpy_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tiny model on one ``(A, L)`` sequence, in float64."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1)))
    windows = sliding_window_view(xp, K, axis=1)  # (A, L, K)
    conv = np.einsum("alk,oak->ol", windows, W_CONV.astype(np.float64)) + B_CONV[:, None]
    relu = np.maximum(conv, 0.0)
    return relu.sum(axis=1), relu.reshape(-1) @ W_DENSE.astype(np.float64)


def numpy_ism(X: np.ndarray, start: int, end: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Brute-force ISM of :func:`numpy_forward`, recomputing every slot."""
    n = X.shape[0]
    y0 = [np.zeros((n, C_OUT)), np.zeros((n, D_OUT))]
    y_hat = [np.zeros((n, A, end - start, C_OUT)), np.zeros((n, A, end - start, D_OUT))]
    for s in range(n):
        for k, out in enumerate(numpy_forward(X[s])):
            y0[k][s] = out
        for a in range(A):
            for i in range(start, end):
                mutant = X[s].copy()
                mutant[:, i] = 0.0
                mutant[a, i] = 1.0
                for k, out in enumerate(numpy_forward(mutant)):
                    y_hat[k][s, a, i - start] = out
    return list(zip(y0, y_hat))


def assert_matches_numpy(result, expected) -> None:
    """Compare naive_ism output with the numpy reference, output by output."""
    assert len(result) == len(expected)
    for (y0, y_hat), (e0, e_hat) in zip(result, expected):
        assert y0.shape == e0.shape
        assert y_hat.shape == e_hat.shape
        np.testing.assert_allclose(y0, e0, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(y_hat, e_hat, rtol=1e-5, atol=1e-4)


class CountingSession:
    """Wrap an InferenceSession and record the batch size of every run."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        self.batches: list[int] = []
        original = self.session.run

        def run(output_names, feed, *args, **kwargs):
            (value,) = feed.values()
            self.batches.append(value.shape[0])
            return original(output_names, feed, *args, **kwargs)

        self.session.run = run  # type: ignore[method-assign]


# ----------------------------------------------------------------------------- correctness


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return build_model()


def test_matches_numpy_on_every_mutant(model):
    X = random_one_hot(3, L, seed=0)
    result = naive_ism(model, X)
    assert_matches_numpy(result, numpy_ism(X, 0, L))


def test_output_order_and_shapes(model):
    X = random_one_hot(2, L, seed=0)
    (p0, p_hat), (d0, d_hat) = naive_ism(model, X)
    assert p0.shape == (2, C_OUT) and p_hat.shape == (2, A, L, C_OUT)
    assert d0.shape == (2, D_OUT) and d_hat.shape == (2, A, L, D_OUT)
    assert p0.dtype == np.float32 and p_hat.dtype == np.float32


def test_present_character_slot_is_y0(model):
    X = random_one_hot(2, L, seed=3)
    for y0, y_hat in naive_ism(model, X):
        for n in range(X.shape[0]):
            for i in range(L):
                a = int(X[n, :, i].argmax())
                np.testing.assert_array_equal(y_hat[n, a, i], y0[n])


def test_y0_is_model_on_X(model):
    X = random_one_hot(2, L, seed=4)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    direct = session.run(None, {"x": X})
    for (y0, _), ref in zip(naive_ism(session, X), direct):
        np.testing.assert_array_equal(y0, ref)


def test_one_hot_columns_run_only_other_characters(model):
    X = random_one_hot(2, L, seed=0)
    counting = CountingSession(model)
    naive_ism(counting.session, X, batch_size=5)
    assert sum(counting.batches) == 2 + 2 * (A - 1) * L
    assert max(counting.batches) <= 5


def test_non_one_hot_columns_run_every_character(model):
    X = random_one_hot(2, L, seed=5)
    X[0, :, 2] = 0.0  # "N" column
    X[1, :, 6] = 0.25  # soft column
    X[1, :, 0] = [0.0, 2.0, 0.0, 0.0]  # not one-hot: a 2 is not a 1
    counting = CountingSession(model)
    result = naive_ism(counting.session, X)
    assert sum(counting.batches) == 2 + 2 * (A - 1) * L + 3
    assert_matches_numpy(result, numpy_ism(X, 0, L))
    # No slot of an "N" column equals y0 by construction of the data here.
    for y0, y_hat in result:
        assert not np.any(np.all(y_hat[0, :, 2] == y0[0], axis=-1))


def test_float64_input_is_cast(model):
    X = random_one_hot(1, L, seed=6).astype(np.float64)
    assert_matches_numpy(naive_ism(model, X), numpy_ism(X, 0, L))


@pytest.mark.parametrize(("start", "end"), [(0, 1), (2, 5), (L - 1, L), (3, None)])
def test_region(model, start, end):
    X = random_one_hot(2, L, seed=7)
    full = naive_ism(model, X)
    part = naive_ism(model, X, start=start, end=end)
    stop = L if end is None else end
    for (f0, f_hat), (p0, p_hat) in zip(full, part):
        np.testing.assert_array_equal(p0, f0)
        assert p_hat.shape[2] == stop - start
        np.testing.assert_allclose(p_hat, f_hat[:, :, start:stop], rtol=1e-5, atol=1e-5)
    assert_matches_numpy(part, numpy_ism(X, start, stop))


def test_batch_size_does_not_change_results(model):
    X = random_one_hot(3, L, seed=8)
    X[2, :, 4] = 0.0
    small = naive_ism(model, X, batch_size=1)
    odd = naive_ism(model, X, batch_size=7)
    large = naive_ism(model, X, batch_size=1000)
    for (s0, s_hat), (o0, o_hat), (l0, l_hat) in zip(small, odd, large):
        np.testing.assert_allclose(s0, l0, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s_hat, l_hat, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(o_hat, l_hat, rtol=1e-5, atol=1e-5)


def test_model_from_path(model, tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    X = random_one_hot(1, L, seed=9)
    from_path = naive_ism(path, X)
    from_str = naive_ism(str(path), X)
    for (a0, a_hat), (b0, b_hat) in zip(from_path, from_str):
        np.testing.assert_array_equal(a0, b0)
        np.testing.assert_array_equal(a_hat, b_hat)
    assert_matches_numpy(from_path, numpy_ism(X, 0, L))


def test_nlc_layout():
    X = random_one_hot(2, L, seed=10)
    result = naive_ism(build_model(layout="NLC"), X.transpose(0, 2, 1), layout="NLC")
    assert_matches_numpy(result, numpy_ism(X, 0, L))


def test_dynamic_length_model():
    X = random_one_hot(2, 6, seed=11)
    ((y0, y_hat),) = naive_ism(build_dynamic_length_model(), X)
    assert y_hat.shape == (2, A, 6, C_OUT)
    for n in range(2):
        for a in range(A):
            for i in range(6):
                mutant = X[n].copy()
                mutant[:, i] = 0.0
                mutant[a, i] = 1.0
                xp = np.pad(mutant.astype(np.float64), ((0, 0), (1, 1)))
                conv = np.einsum("alk,oak->ol", sliding_window_view(xp, K, axis=1), W_CONV)
                expected = np.maximum(conv + B_CONV[:, None], 0).sum(axis=1)
                np.testing.assert_allclose(y_hat[n, a, i], expected, rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------- fixed batch


def test_fixed_batch_one_model():
    fixed = build_model(batch=1)
    X = random_one_hot(3, L, seed=12)
    X[1, :, 5] = 0.0
    counting = CountingSession(fixed)
    result = naive_ism(counting.session, X, batch_size=1000)
    assert set(counting.batches) == {1}
    assert_matches_numpy(result, numpy_ism(X, 0, L))


def test_fixed_batch_larger_than_one_pads_last_chunk():
    fixed = build_model(batch=2)
    X = random_one_hot(3, L, seed=13)
    counting = CountingSession(fixed)
    result = naive_ism(counting.session, X, start=1, end=4, batch_size=64)
    assert set(counting.batches) == {2}
    assert_matches_numpy(result, numpy_ism(X, 1, 4))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "X",
    [
        np.zeros((A, L), dtype=np.float32),
        np.zeros((1, 1, A, L), dtype=np.float32),
        np.zeros((0, A, L), dtype=np.float32),
        np.array([[["a"] * L] * A]),
    ],
)
def test_bad_X_rank_or_dtype(model, X):
    with pytest.raises(InputValidationError):
        naive_ism(model, X)


def test_wrong_alphabet_size(model):
    with pytest.raises(InputValidationError, match="alphabet"):
        naive_ism(model, np.zeros((1, A + 1, L), dtype=np.float32))


def test_wrong_length(model):
    with pytest.raises(InputValidationError, match="length"):
        naive_ism(model, np.zeros((1, A, L + 1), dtype=np.float32))


def test_nlc_data_given_as_ncl_is_rejected(model):
    X = random_one_hot(1, L, seed=0)
    with pytest.raises(InputValidationError):
        naive_ism(model, X.transpose(0, 2, 1))


@pytest.mark.parametrize(
    ("start", "end"), [(-1, L), (0, 0), (4, 4), (5, 3), (0, L + 1), (L, L + 1), (1.5, 4)]
)
def test_bad_region(model, start, end):
    with pytest.raises(InputValidationError):
        naive_ism(model, random_one_hot(1, L, seed=0), start=start, end=end)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5])
def test_bad_batch_size(model, batch_size):
    with pytest.raises(InputValidationError):
        naive_ism(model, random_one_hot(1, L, seed=0), batch_size=batch_size)


def test_bad_layout(model):
    with pytest.raises(InputValidationError, match="layout"):
        naive_ism(model, random_one_hot(1, L, seed=0), layout="LNC")


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelLoadError):
        naive_ism(tmp_path / "absent.onnx", random_one_hot(1, L, seed=0))


def test_two_input_model_is_unsupported():
    model = onnx_model([helper.make_node("Add", ["x", "z"], ["y"])], {}, {"x": ["N", A, L], "z": ["N", A, L]},
                       {"y": ["N", A, L]}, ir_version=8)
    with pytest.raises(UnsupportedModelError):
        naive_ism(model, random_one_hot(1, L, seed=0))
