"""Oracle checks of a converted model in the whole-sequence and the tiled form.

:func:`assert_exact` converts a model with the given region, substitutions and tiling, runs it,
and compares every output with brute-force ISM: :func:`yuzu_onnx.naive_ism` for models whose only
input is the sequence, :func:`naive_with_side_inputs` (the original model run on every mutant,
the other inputs repeated) for models with side inputs.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from builders import random_one_hot
from conftest import assert_ism_close
from yuzu_onnx import naive_ism
from yuzu_onnx.convert import convert

#: (tile_width, tiles_per_chunk[, tile_groups]): the whole-sequence form (``form="whole"``), tiles of 5
#: in chunks of 1 (groups as the plan chooses), of 8 in chunks of 3 in one group (one window for
#: every tile), and of 4 in chunks of 2 in 3 groups (windows cropped per group).
MODES = [pytest.param((None, 1), id="untiled"), pytest.param((5, 1), id="T5c1"), pytest.param((8, 3, 1), id="T8c3g1"),
         pytest.param((4, 2, 3), id="T4c2g3")]
SUBSTITUTIONS = ["alt", "all"]


def regions(length: int) -> list:
    """The whole sequence and sub-regions touching the first and the last position."""
    return [pytest.param((0, length), id="full"), pytest.param((0, 7), id="first"),
            pytest.param((length - 9, length), id="last")]


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def naive_with_side_inputs(model: onnx.ModelProto, X: np.ndarray, side: dict[str, np.ndarray], start: int,
                           end: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Brute-force ISM of a model with other inputs: every single-character substitution of
    ``X[n]`` (NCL) at ``start..end-1`` run through the original model with ``side[*][n]``."""
    session = _session(model)
    fixed = {i.name for i in session.get_inputs() if i.shape and i.shape[0] == 1}  # broadcast, not per sequence
    y0 = session.run(None, {"x": X, **side})
    alphabet = X.shape[1]
    y_hat = [np.empty((len(X), alphabet, end - start) + y.shape[1:], y.dtype) for y in y0]
    for n in range(len(X)):
        mutants = np.repeat(X[n:n + 1], alphabet * (end - start), axis=0)
        for k, (i, a) in enumerate((i, a) for i in range(start, end) for a in range(alphabet)):
            mutants[k, :, i] = np.eye(alphabet, dtype=X.dtype)[a]
        feeds = {name: value if name in fixed else np.repeat(value[n:n + 1], len(mutants), axis=0)
                 for name, value in side.items()}
        outs = session.run(None, {"x": mutants, **feeds})
        for y, out in zip(y_hat, outs):
            y[n] = out.reshape((end - start, alphabet) + out.shape[1:]).swapaxes(0, 1)
    return list(zip(y0, y_hat))


def assert_exact(model: onnx.ModelProto | str, *, region: tuple[int, int], subs: str, mode: tuple[int | None, int],
                 side: dict[str, np.ndarray] | None = None, seed: int = 0, tiled: bool = True,
                 oracle_model: onnx.ModelProto | str | None = None, batch: int = 2):
    """Convert ``model`` and compare it with brute-force ISM on a seeded batch of ``batch`` sequences.

    ``mode`` is ``(tile_width, tiles_per_chunk[, tile_groups])``; without a tile width the whole-sequence form
    is forced, with one the plan must be tiled unless ``tiled`` is False. ``oracle_model`` replaces the original as the oracle's model
    (for originals ONNX Runtime cannot run). Returns the plan.
    """
    start, end = region
    tile_width, per_chunk, groups = (*mode, None)[:3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        form = {"form": "whole"} if tile_width is None else {"tile_width": tile_width, "tiles_per_chunk": per_chunk,
                                                             "tile_groups": groups}
        converted, plan = convert(model, start=start, end=end, substitutions=subs, return_plan=True, **form)
    if tile_width is not None and tiled:
        assert plan.tiling is not None
    length = plan.seq.length
    X = random_one_hot(batch, length, seed=seed)
    side = side or {}
    got = _session(converted).run(None, {"x": X, **side})
    oracle = oracle_model if oracle_model is not None else model
    if side:
        expected = naive_with_side_inputs(oracle, X, side, start, end)
    else:
        expected = naive_ism(oracle, X, start=start, end=end)
    outputs = [o.name for o in converted.graph.output][:len(got) // 2]
    assert len(got) == 2 * len(outputs)
    for k, (r0, r_hat) in enumerate(expected):
        y0, y_hat = got[k], got[len(outputs) + k]
        np.testing.assert_allclose(y0, r0, rtol=1e-5, atol=1e-6)
        assert_ism_close(y_hat, r_hat, r0, start=start, label=f"{outputs[k]} {mode} {subs} {region}")
    return plan
