"""Shared helpers for the converter tests: the reference-model manifest, seeded inputs,
cached conversions and oracle runs, and tolerance assertions that name the worst slot."""

from __future__ import annotations

import functools
import json
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from yuzu_onnx import convert, naive_ism

from builders import random_one_hot  # noqa: F401  (re-exported: tests import it from conftest too)

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "models" / "onnx"
MANIFEST: list[dict] = json.loads((MODELS_DIR / "manifest.json").read_text())

A = 4  # DNA alphabet of every reference model
BATCH = 2

#: Exactness of structured sensing: max |y_hat - y_hat_naive| <= ISM_RTOL * max |delta_naive|.
ISM_RTOL = 1e-4
#: Float32 noise floor of an ISM comparison, relative to the output's magnitude max |y0|: where
#: mutations barely move an output (e.g. a counts head at the sequence edge of an unpadded
#: model) both naive ISM and ours are limited by float32 rounding, not by the method.
ISM_NOISE = 5e-5
#: y0 of the converted model against the original model, relative to max |y0|.
Y0_RTOL = 1e-5


# ----------------------------------------------------------------------------- manifest


def model_path(entry: dict) -> Path:
    return MODELS_DIR / entry["file"]


def manifest_params(entries: list[dict] | None = None) -> list:
    """One ``pytest.param`` per manifest entry, id = file stem."""
    return [pytest.param(e, id=Path(e["file"]).stem) for e in (MANIFEST if entries is None else entries)]


def one_length_per_model() -> list[dict]:
    """The shortest length of each (model, exporter) pair."""
    best: dict[tuple[str, str], dict] = {}
    for e in MANIFEST:
        key = (e["model"], e["exporter"])
        if key not in best or e["length"] < best[key]["length"]:
            best[key] = e
    return list(best.values())


def regions(length: int) -> dict[str, tuple[int, int]]:
    """The regions every model is checked on: full, middle, touching the first/last position."""
    mid = length // 2
    return {
        "full": (0, length),
        "middle": (mid - 4, mid + 5),
        "first": (0, 6),
        "last": (length - 6, length),
    }


# ----------------------------------------------------------------------------- inputs


def stable_seed(*parts) -> int:
    """A seed that does not depend on PYTHONHASHSEED."""
    return zlib.crc32("|".join(map(str, parts)).encode())


def with_n_and_soft(X: np.ndarray, start: int, end: int) -> np.ndarray:
    """A copy of ``X`` with all-zero ("N") columns and one soft column inside ``start..end-1``.

    Sequence 0: N at the first and the middle position of the region. Sequence 1: N at the
    last position of the region and a soft column (0.25 each) in its middle. Both sequences
    also get an N column outside the region where there is room.
    """
    X = X.copy()
    mid = (start + end) // 2
    X[0, :, start] = 0.0
    X[0, :, mid] = 0.0
    X[1, :, end - 1] = 0.0
    X[1, :, mid] = 0.25
    length = X.shape[2]
    if start > 0:
        X[1, :, start - 1] = 0.0
    if end < length:
        X[0, :, end] = 0.0
    return X


def layout(entry: dict) -> str:
    """Input layout of a manifest entry: ``NCL`` unless the entry says ``NLC`` (Keras)."""
    return entry.get("layout", "NCL")


def to_layout(X: np.ndarray, entry: dict) -> np.ndarray:
    """An NCL batch in the entry's input layout."""
    return np.ascontiguousarray(X.transpose(0, 2, 1)) if layout(entry) == "NLC" else X


def make_input(entry: dict, kind: str, start: int, end: int) -> np.ndarray:
    """Seeded batch-2 input for a manifest entry, in its layout; ``kind`` is ``onehot`` or ``n_soft``."""
    X = random_one_hot(BATCH, entry["length"], stable_seed(entry["file"], "onehot"))
    if kind == "onehot":
        return to_layout(X, entry)
    if kind == "n_soft":
        return to_layout(with_n_and_soft(X, start, end), entry)
    raise ValueError(kind)


# ----------------------------------------------------------------------------- cached runs


@functools.lru_cache(maxsize=None)
def cached_convert(file: str, start: int, end: int, sensing: str = "structured",
                   substitutions: str = "alt", alpha: float = 1.5, seed: int = 0) -> onnx.ModelProto:
    """Convert a manifest file (cached; callers must not modify the result)."""
    return convert(str(MODELS_DIR / file), start=start, end=end, sensing=sensing,
                   substitutions=substitutions, alpha=alpha, seed=seed)


@functools.lru_cache(maxsize=None)
def _cached_naive(file: str, kind: str, start: int, end: int):
    entry = next(e for e in MANIFEST if e["file"] == file)
    X = make_input(entry, kind, start, end)
    return naive_ism(str(MODELS_DIR / file), X, start, end, layout=layout(entry))


def cached_naive(entry: dict, kind: str, start: int, end: int):
    """``naive_ism`` of the original model on ``make_input(entry, kind, start, end)`` (cached)."""
    return _cached_naive(entry["file"], kind, start, end)


def original_outputs(model, X: np.ndarray) -> list[np.ndarray]:
    """The original model's outputs on ``X``, fed one sequence at a time if the batch is fixed."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    step = fixed or len(X)
    if fixed is not None and len(X) % fixed:
        raise ValueError(f"batch {len(X)} is not a multiple of the model's fixed batch {fixed}")
    chunks = [session.run(None, {inp.name: X[i:i + step]}) for i in range(0, len(X), step)]
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def loop_body(converted: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of a tiled or brute-force graph's Loop body."""
    loop = next(n for n in converted.graph.node if n.op_type == "Loop")
    return list(loop.attribute[0].g.node)


# ----------------------------------------------------------------------------- assertions


def assert_matches_oracle(model: onnx.ModelProto, converted: onnx.ModelProto, X: np.ndarray, *, start: int = 0,
                          end: int | None = None, label: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Run a converted single-output graph on ``X`` (CPU) and assert its ``y_hat`` against
    ``naive_ism(model)`` over ``[start, end)`` (:func:`assert_ism_close`); returns ``(y0, the
    oracle's y0)`` for the caller's own check of ``y0``."""
    y0, y_hat = original_outputs(converted, X)
    ((r0, r_hat),) = naive_ism(model, X, start=start, end=end)
    assert_ism_close(y_hat, r_hat, r0, start=start, label=label)
    return y0, r0


def ism_error(y_hat: np.ndarray, y_hat_ref: np.ndarray, y0_ref: np.ndarray,
              positions: slice = slice(None)) -> tuple[float, float]:
    """``(max abs error, max abs naive delta)`` over the region positions ``positions``."""
    delta = y_hat_ref - y0_ref[:, None, None]
    err = np.abs(y_hat[:, :, positions].astype(np.float64) - y_hat_ref[:, :, positions])
    return float(err.max()), float(np.abs(delta[:, :, positions]).max())


def assert_ism_close(y_hat: np.ndarray, y_hat_ref: np.ndarray, y0_ref: np.ndarray, *, start: int = 0,
                     positions: slice = slice(None), rtol: float = ISM_RTOL, label: str = "",
                     atol: float = 0.0) -> float:
    """Assert ``max|y_hat - y_hat_ref| <= rtol * max|y_hat_ref - y0_ref| + ISM_NOISE * max|y0_ref|``
    over ``positions``.

    The scale is the largest naive delta over the same positions, so a bug confined to a few
    positions with small effects cannot hide behind a large effect elsewhere. On failure the
    message names the worst slot as (sequence, character, absolute position, output index).
    Returns the ratio error / scale.
    """
    assert y_hat.shape == y_hat_ref.shape, f"{label}: y_hat shape {y_hat.shape} != naive {y_hat_ref.shape}"
    assert np.isfinite(y_hat).all(), f"{label}: y_hat has non-finite values"
    sub = y_hat[:, :, positions].astype(np.float64)
    ref = y_hat_ref[:, :, positions].astype(np.float64)
    delta = ref - y0_ref[:, None, None].astype(np.float64)
    scale = float(np.abs(delta).max())
    err = np.abs(sub - ref)
    worst = np.unravel_index(int(err.argmax()), err.shape)
    first = positions.indices(y_hat.shape[2])[0]
    n, a, i = (int(v) for v in worst[:3])
    bound = rtol * scale + ISM_NOISE * float(np.abs(y0_ref).max()) + atol
    assert err.max() <= bound, (
        f"{label}: max |y_hat - naive| = {err.max():.3e} > {rtol:g} * max|delta| + noise floor = {bound:.3e} "
        f"(max|delta| = {scale:.3e}); worst at sequence {n}, character {a}, position "
        f"{start + first + i}, output index {tuple(int(v) for v in worst[3:])}: converted "
        f"{sub[worst]:.6g}, naive {ref[worst]:.6g}; "
        f"{int((err > bound).sum())} of {err.size} slots over the bound")
    return float(err.max() / scale) if scale else 0.0


def assert_y0_close(y0: np.ndarray, ref: np.ndarray, rtol: float = Y0_RTOL, label: str = "") -> None:
    """Assert ``max|y0 - ref| <= rtol * max|ref|`` (plus a float32 ulp floor)."""
    assert y0.shape == ref.shape, f"{label}: y0 shape {y0.shape} != original {ref.shape}"
    err = np.abs(y0.astype(np.float64) - ref)
    bound = rtol * float(np.abs(ref).max()) + 1e-7
    worst = np.unravel_index(int(err.argmax()), err.shape)
    assert err.max() <= bound, (f"{label}: max |y0 - original| = {err.max():.3e} > {bound:.3e} at {worst}: "
                                f"converted {y0[worst]:.7g}, original {ref[worst]:.7g}")
