"""Differential fuzzing: random conv stacks built from supported ops, converted with random
substitutions / sensing / region, compared with the naive oracle on a batch of 2.

The CI profile is bounded and derandomized; set ``YUZU_FUZZ_EXAMPLES`` (e.g. 5000) for a
long run. A failing example prints its spec (a plain list of dicts) which
``build_model`` turns back into the same model, so it can be pasted into
``tests/test_fuzz_regressions.py``.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, reject, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from yuzu_onnx import naive_ism, run_ism  # noqa: E402
from yuzu_onnx.convert import convert  # noqa: E402

from conftest import assert_ism_close  # noqa: E402
from test_graph_rules import Net  # noqa: E402

CI_EXAMPLES = 400  # about 2.5 minutes on 2 cores; all 1000 of the first derandomized run pass too
EXAMPLES = int(os.environ.get("YUZU_FUZZ_EXAMPLES", CI_EXAMPLES))
#: Seen: r = 0.99987 on a 20-letter depthwise stack at alpha 1.5 (tests/test_fuzz_regressions.py).
GAUSSIAN_MIN_R = 0.999
ACTIVATIONS = ["Relu", "Tanh", "Sigmoid", "LeakyRelu", "Elu", "Softplus"]
PAD_MODES = ["sym", "asym", "SAME_UPPER", "SAME_LOWER", "VALID"]
HEADS = ["conv", "dense", "gap_dense", "reducesum"]
MAX_DENSE_IN = 2000


# ----------------------------------------------------------------------------- lengths


def conv_len(length: int, c: dict) -> int:
    k, d, s = c["k"], c["d"], c["s"]
    if c["pad"] in ("SAME_UPPER", "SAME_LOWER"):
        return math.ceil(length / s)
    eff = d * (k - 1) + 1
    return (length + c["pb"] + c["pe"] - eff) // s + 1


def pool_len(length: int, p: dict) -> int:
    k, s = p["k"], p["s"]
    if length < k:
        return 0
    if p["ceil"]:
        out = -(-(length - k) // s) + 1
        if (out - 1) * s >= length:  # last window would start in the (absent) padding
            out -= 1
        return out
    return (length - k) // s + 1


# ----------------------------------------------------------------------------- strategy


@st.composite
def conv_params(draw, length: int, c_in: int, allow_depthwise: bool = True) -> dict:
    k = draw(st.integers(1, 11))
    s = draw(st.integers(1, 3))
    pad = draw(st.sampled_from(PAD_MODES))
    # ONNX Runtime rejects dilation with SAME_UPPER / SAME_LOWER ("Dilation not supported")
    d = draw(st.integers(1, 4)) if k > 1 and not pad.startswith("SAME") else 1
    eff = d * (k - 1)
    pb = pe = 0
    if pad == "sym":
        pb = pe = draw(st.integers(0, (eff + 1) // 2))
    elif pad == "asym":
        pb = draw(st.integers(0, eff))
        pe = draw(st.integers(0, eff))
    depthwise = allow_depthwise and draw(st.booleans()) and c_in > 1
    c_out = c_in * draw(st.integers(1, 2)) if depthwise else draw(st.integers(2, 8))
    return dict(k=k, d=d, s=s, pad=pad, pb=pb, pe=pe, c_out=c_out, group=c_in if depthwise else 1)


@st.composite
def model_specs(draw) -> dict:
    alphabet = draw(st.sampled_from([4, 20]))
    length = draw(st.integers(5, 120))
    spec = dict(alphabet=alphabet, length=length, nlc=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
                blocks=[])
    c, L = alphabet, length
    for _ in range(draw(st.integers(1, 4))):
        b: dict = {}
        b["conv"] = conv = draw(conv_params(L, c))
        L_out = conv_len(L, conv)
        assume(L_out >= 1)
        b["act"] = draw(st.sampled_from(ACTIVATIONS))
        b["alpha"] = draw(st.sampled_from([0.01, 0.2, 1.0]))
        b["bn"] = draw(st.booleans())
        if L_out <= L and draw(st.booleans()):
            b["res_offset"] = draw(st.integers(0, L - L_out))
        c, L = conv["c_out"], L_out
        if draw(st.booleans()):
            b["pool"] = pool = dict(op=draw(st.sampled_from(["MaxPool", "AveragePool"])), k=draw(st.integers(2, 4)),
                                    s=draw(st.integers(1, 3)), ceil=draw(st.integers(0, 1)))
            L = pool_len(L, pool)
            assume(L >= 1)
        edit = draw(st.sampled_from([None, "pad", "slice"]))
        if edit == "pad":
            b["pad"] = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
            L += sum(b["pad"])
        elif edit == "slice":
            lo, hi = draw(st.integers(0, 3)), draw(st.integers(0, 3))
            b["slice"] = (lo, hi)
            L -= lo + hi
            assume(L >= 1)
        spec["blocks"].append(b)
    head = draw(st.sampled_from(HEADS))
    spec["head"] = dict(kind=head, c_out=draw(st.integers(1, 3)), k=draw(st.sampled_from([1, 3, 5])),
                        sigmoid=draw(st.booleans()))
    if head == "dense":
        assume(c * L <= MAX_DENSE_IN)
    spec["final"] = (c, L)
    return spec


# ----------------------------------------------------------------------------- model


def build_model(spec: dict):
    """The ONNX model of a spec (deterministic given ``spec["seed"]``)."""
    n = Net(seed=spec["seed"])
    A, L0 = spec["alphabet"], spec["length"]
    x = n.op("Transpose", ["x"], perm=[0, 2, 1]) if spec["nlc"] else "x"
    c, L = A, L0
    for b in spec["blocks"]:
        cv = b["conv"]
        attrs = dict(kernel_shape=[cv["k"]], dilations=[cv["d"]], strides=[cv["s"]])
        if cv["group"] > 1:
            attrs["group"] = cv["group"]
        if cv["pad"] in ("sym", "asym"):
            attrs["pads"] = [cv["pb"], cv["pe"]]
        else:
            attrs["auto_pad"] = cv["pad"]
        h = n.conv(x, c, cv["c_out"], cv["k"], **attrs)
        L_out = conv_len(L, cv)
        if b["bn"]:
            co = cv["c_out"]
            var = n.const((n.rng.uniform(0.5, 2.0, co)).astype(np.float32))
            h = n.op("BatchNormalization", [h, n.w(co, scale=0.5), n.w(co, scale=0.5), n.w(co, scale=0.5), var],
                     epsilon=1e-5)
        act = b["act"]
        if act in ("LeakyRelu", "Elu"):
            h = n.op(act, [h], alpha=b["alpha"])
        else:
            h = n.op(act, [h])
        if "res_offset" in b:
            r = n.conv(x, c, cv["c_out"], 1)
            o = b["res_offset"]
            if o or L_out != L:
                r = n.op("Slice", [r, n.const([o]), n.const([o + L_out]), n.const([2])])
            h = n.op("Add", [h, r])
        c, L = cv["c_out"], L_out
        if "pool" in b:
            p = b["pool"]
            h = n.op(p["op"], [h], kernel_shape=[p["k"]], strides=[p["s"]], ceil_mode=p["ceil"])
            L = pool_len(L, p)
        if "pad" in b:
            pb, pe = b["pad"]
            h = n.op("Pad", [h, n.const([0, 0, pb, 0, 0, pe])])
            L += pb + pe
        if "slice" in b:
            lo, hi = b["slice"]
            h = n.op("Slice", [h, n.const([lo]), n.const([L - hi]), n.const([2])])
            L -= lo + hi
        x = h
    hd = spec["head"]
    if hd["kind"] == "conv":
        y = n.conv(x, c, hd["c_out"], hd["k"], pads=[hd["k"] // 2] * 2)
    elif hd["kind"] == "dense":
        y = n.op("Gemm", [n.op("Flatten", [x], axis=1), n.w(c * L, hd["c_out"])])
        if hd["sigmoid"]:
            y = n.op("Sigmoid", [y])
    elif hd["kind"] == "gap_dense":
        g = n.op("Flatten", [n.op("GlobalAveragePool", [x])], axis=1)
        y = n.op("Gemm", [g, n.w(c, hd["c_out"]), n.w(hd["c_out"], scale=0.5)])
    else:
        y = n.op("ReduceSum", [x, n.const([2])], keepdims=0)
    shape = ["N", L0, A] if spec["nlc"] else ["N", A, L0]
    return n.model({"x": shape}, {"y": y}), ("NLC" if spec["nlc"] else "NCL")


def make_inputs(spec: dict, subs: str, rng_seed: int, n_columns: list[int]) -> np.ndarray:
    A, L = spec["alphabet"], spec["length"]
    X = np.eye(A, dtype=np.float32)[np.random.default_rng(rng_seed).integers(0, A, (2, L))].transpose(0, 2, 1).copy()
    if subs == "all":
        for j, col in enumerate(n_columns):
            X[j % 2, :, col % L] = 0.0
    return np.ascontiguousarray(X.transpose(0, 2, 1)) if spec["nlc"] else X


# ----------------------------------------------------------------------------- check


def check(spec: dict, subs: str, sensing: str, region: tuple[int, int], rng_seed: int = 0,
          n_columns: tuple[int, ...] = ()) -> None:
    model, layout = build_model(spec)
    start, end = region
    # layout passed explicitly: shape-based detection is ambiguous when length <= alphabet
    converted = convert(model, start=start, end=end, substitutions=subs, sensing=sensing, layout=layout)
    X = make_inputs(spec, subs, rng_seed, list(n_columns))
    got = run_ism(converted, X)
    expected = naive_ism(model, X, start=start, end=end, layout=layout)
    assert len(got) == len(expected) == 1
    for (y0, y_hat), (r0, r_hat) in zip(got, expected):
        np.testing.assert_allclose(y0, r0, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(r0).max())))
        assert y_hat.shape == r_hat.shape
        if sensing == "structured":
            # Random weights can saturate a sigmoid head; ONNX Runtime computes it with an absolute
            # resolution of 2^-24, so outputs near 0 differ by a few such steps between any two
            # evaluations: allow 8 of them on top of the relative bound.
            assert_ism_close(y_hat, r_hat, r0, start=start, label="fuzz", atol=8 * 2.0 ** -24)
        else:
            assert np.isfinite(y_hat).all()
            d = (y_hat - y0[:, None, None]).astype(np.float64).ravel()
            dn = (r_hat - r0[:, None, None]).astype(np.float64).ravel()
            if dn.std() > 1e-6 * max(1.0, float(np.abs(r0).max())) and d.std() > 0:
                r = float(np.corrcoef(d, dn)[0, 1])
                # Gaussian sensing is approximate: its float32 error grows with the decoder's
                # condition number (protein alphabets, wide supports). The reference models meet
                # r >= 0.9999 (test_convert); random stacks are held to GAUSSIAN_MIN_R until
                # probes are sized from the condition number (issue 5).
                assert r >= GAUSSIAN_MIN_R, f"gaussian: Pearson r of deltas {r:.6f} < {GAUSSIAN_MIN_R}"


@st.composite
def cases(draw):
    spec = draw(model_specs())
    L = spec["length"]
    subs = draw(st.sampled_from(["alt", "all"]))
    sensing = draw(st.sampled_from(["structured", "gaussian"]))
    if draw(st.booleans()):
        region = (0, L)
    else:
        start = draw(st.integers(0, L - 1))
        region = (start, draw(st.integers(start + 1, L)))
    n_columns = tuple(draw(st.lists(st.integers(0, L - 1), min_size=1, max_size=3))) if subs == "all" else ()
    return spec, subs, sensing, region, draw(st.integers(0, 1000)), n_columns


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(cases())
def test_fuzz_converted_matches_naive(case):
    spec, subs, sensing, region, rng_seed, n_columns = case
    try:
        build_model(spec)
    except KeyError:
        # ONNX shape inference could not type this generated model (e.g. a ceil_mode pool on a
        # length-3 input); it is not a valid test model, so hypothesis draws another one
        reject()
    check(spec, subs, sensing, region, rng_seed, n_columns)
