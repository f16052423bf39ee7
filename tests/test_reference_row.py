"""The reference carried along as one more probe between reprobes
(:func:`yuzu_onnx.emit.probes.reprobe_carried`).

A reprobe gathers from its source's ``(probe, position)`` table with the reference in slot ``P``.
In the whole-sequence form the ops between two reprobes run on ``P + 1`` rows, the last the
reference, so the next reprobe reads that table as it is instead of first concatenating the
reference to the whole tensor. Checked against brute-force ISM (the whole sequence and regions at
both ends, both substitution modes, a batch of 2, an odd length), with a side input that stops
the chain (its node reads the plain form, the reference row sliced off), and against the
conversion that carries nothing.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import yuzu_onnx.emit.probes as probes
from builders import Net, random_one_hot
from oracle_modes import SUBSTITUTIONS, assert_exact, regions
from yuzu_onnx import convert

L = 37


def _dilated_stack(side: bool = False) -> onnx.ModelProto:
    """stem -> three dilated Conv + ReLU layers (each reaches further, so each reprobes by a
    gather) -> k7 head; ``side`` adds a per-sequence side input after the second layer."""
    n = Net(seed=21)
    h = n.op("Relu", [n.conv("x", 4, 6, 5, pads=[2, 2])])
    for d in (1, 2, 4):
        h = n.op("Relu", [n.conv(h, 6, 6, 3, dilations=[d], pads=[d, d])])
        if side and d == 2:
            h = n.op("Add", [h, n.op("Unsqueeze", ["cov", n.const([2])])])  # (N, 6, 1) per sequence
    inputs = {"x": ["N", 4, L], **({"cov": ["N", 6]} if side else {})}
    return n.model(inputs, {"y": n.conv(h, 6, 2, 7, pads=[3, 3])})


def _convert(model: onnx.ModelProto, region: tuple[int, int], subs: str = "alt") -> onnx.ModelProto:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(model, start=region[0], end=region[1], substitutions=subs, form="whole")


def _reprobe_sources(graph: onnx.ModelProto) -> list[str]:
    """For each reprobe Gather, what its ``(probe, position)`` table is: ``"plain"`` (the probes
    concatenated with the reference) or ``"carried"`` (the channels-last view of a source that
    carries its reference row)."""
    producer = {o: n for n in graph.graph.node for o in n.output}
    table = [producer[g.input[0]].input[0] for g in graph.graph.node
             if g.op_type == "Gather" and g.input[0].startswith("yz/reprobe_flat")]
    return ["plain" if name.startswith("yz/reprobe_cat") else "carried" if name.startswith("yz/reprobe_t") else name
            for name in table]


def _side_values() -> dict[str, np.ndarray]:
    return {"cov": np.random.default_rng(3).standard_normal((2, 6)).astype(np.float32)}


@pytest.mark.parametrize("region", regions(L))
@pytest.mark.parametrize("subs", SUBSTITUTIONS)
def test_reprobes_read_the_reference_their_source_carries(subs, region):
    model = _dilated_stack()
    sources = _reprobe_sources(_convert(model, region, subs))
    assert sources.count("carried") == len(sources) - 1, f"only the first reprobe should concatenate: {sources}"
    assert_exact(model, region=region, subs=subs, mode=(None, 1))


def test_without_carrying_every_reprobe_concatenates(monkeypatch):
    """The conversion that carries nothing: every reprobe concatenates the reference, and its
    outputs agree with the carried conversion's to float rounding."""
    model = _dilated_stack()
    carried = _convert(model, (0, L))
    monkeypatch.setattr(probes, "can_carry", lambda *a: False)
    plain = _convert(model, (0, L))
    assert set(_reprobe_sources(plain)) == {"plain"}
    assert len(_reprobe_sources(plain)) == len(_reprobe_sources(carried))
    X = random_one_hot(2, L, seed=5)
    runs = [ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": X})
            for g in (carried, plain)]
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


@pytest.mark.parametrize("region", regions(L))
def test_a_chain_that_ends_in_a_side_input_is_not_carried(region):
    """The Add of a per-sequence side input cannot run on the carried rows (its side input is
    repeated per probe): carrying the reference into it would cost a Slice of the plain rows
    and save nothing, so the gather before it does not carry (no Slice), the one after it does."""
    model = _dilated_stack(side=True)
    graph = _convert(model, region)
    assert not [n for n in graph.graph.node if n.op_type == "Slice" and n.output[0].startswith("yz/drop_ref")]
    if region == (0, L):  # the gather before the side Add's layer does not carry, the others do
        assert _reprobe_sources(graph) == ["plain", "carried", "plain", "carried"]
    assert_exact(model, region=region, subs="alt", mode=(None, 1), side=_side_values())


@pytest.mark.parametrize("region", regions(L))
def test_a_carried_tensor_read_plain_loses_its_reference_row(region, monkeypatch):
    """Carrying forced into the side Add: it reads the plain rows, its carried input sliced."""
    monkeypatch.setattr(probes, "worth_carrying", lambda *a: True)
    model = _dilated_stack(side=True)
    graph = _convert(model, region)
    sliced = [n for n in graph.graph.node if n.op_type == "Slice" and n.output[0].startswith("yz/drop_ref")]
    assert len(sliced) == 1
    assert_exact(model, region=region, subs="alt", mode=(None, 1), side=_side_values())


def _wide_then_narrow() -> onnx.ModelProto:
    """stem -> Conv 128 -> 64 k15 -> two Conv 64 -> 64 k3 -> head: a row of the k15 Conv
    (128 x 15 MACs per output) costs more than the copy of the about 40 x 64 rows that carrying
    into it would save; a row of a k3 Conv (64 x 3) far less."""
    n = Net(seed=23)
    h = n.op("Relu", [n.conv("x", 4, 128, 3, pads=[1, 1])])
    h = n.op("Relu", [n.conv(h, 128, 64, 15, pads=[7, 7])])
    for _ in range(2):
        h = n.op("Relu", [n.conv(h, 64, 64, 3, pads=[1, 1])])
    return n.model({"x": ["N", 4, L]}, {"y": n.conv(h, 64, 2, 5, pads=[2, 2])})


def test_a_chain_whose_row_costs_more_than_the_copy_it_saves_is_not_carried():
    model = _wide_then_narrow()
    sources = _reprobe_sources(_convert(model, (0, L)))
    # the gathers before the k15 Conv, the first k3, the second k3, the head (as taps: its
    # blocks read plain rows, so the second k3's chain is not carried either)
    assert sources == ["plain", "plain", "carried", "plain"], sources
    assert_exact(model, region=(0, L), subs="alt", mode=(None, 1))
