"""Shapes of sequence tensors (rules/static_shape.py and the shape folding of canonicalize.py)
against brute-force ISM, whole-sequence and tiled.

``tests/data/shape_crop_L31_torchscript.onnx`` is a TorchScript export (:func:`export`) of a
ChromBPNet-like model: a shallow branch cropped to a deep branch's length read from its shape,
plus bpnet-lite's zero control tracks ``x.new_zeros(x.shape[0], 2, L)``; its declared output
length is symbolic (``Convy_dim_2``) although the input length is fixed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from builders import Net
from oracle_modes import MODES, SUBSTITUTIONS, assert_exact, regions
from yuzu_onnx.canonicalize import canonicalize
from yuzu_onnx.convert import plan_conversion
from yuzu_onnx.load import find_sequence_input, load_model

DATA = Path(__file__).resolve().parent / "data"
SHAPE_CROP = DATA / "shape_crop_L31_torchscript.onnx"
L = 31


def export(path: str) -> None:
    """Write the TorchScript export of the shape-cropping model (random weights, seed 0)."""
    import torch

    torch.manual_seed(0)

    class ShapeCrop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv1d(4, 6, 5)
            self.b1 = torch.nn.Conv1d(4, 6, 3)
            self.b2 = torch.nn.Conv1d(6, 6, 5, dilation=2)
            self.head = torch.nn.Conv1d(8, 3, 3, padding=1)

        def forward(self, x):
            a = torch.relu(self.a(x))
            b = torch.relu(self.b2(torch.relu(self.b1(x))))
            crop = (a.shape[-1] - b.shape[-1]) // 2
            s = a[:, :, crop:a.shape[-1] - crop] + b
            zeros = x.new_zeros(x.shape[0], 2, s.shape[-1])
            return self.head(torch.cat([s, zeros], dim=1))

    torch.onnx.export(ShapeCrop().eval(), (torch.zeros(1, 4, L),), path, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17, dynamo=False)


def test_the_committed_export_has_the_shape_chains():
    model = onnx.load(str(SHAPE_CROP))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Shape") == 4 and "ConstantOfShape" in ops and "Slice" in ops
    out = model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in out] == ["batch", 3, "Convy_dim_2"]


def test_the_crop_folds_and_the_batch_shape_is_the_reference():
    proto = load_model(str(SHAPE_CROP))
    canonical, infos = canonicalize(proto, find_sequence_input(proto, None, None, None))
    shapes = [n for n in canonical.graph.node if n.op_type == "Shape"]
    assert [n.input[0] for n in shapes] == ["x"]  # the crop chain folded; x.shape[0] stays
    assert infos["y"].shape == [None, 3, 21]  # the symbolic output length, inferred
    plan = plan_conversion(str(SHAPE_CROP))
    by_op = {n.node.op_type: n for n in plan.nodes}
    assert by_op["Shape"].rule == "reference" and "fallback" not in [n.rule for n in plan.nodes]
    zeros = by_op["ConstantOfShape"].node.output[0]
    assert zeros in plan.side
    assert [n.rule for n in plan.nodes if n.node.op_type == "Concat" and zeros in n.node.input] == ["positional"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("region", regions(L))
@pytest.mark.parametrize("subs", SUBSTITUTIONS)
def test_shape_crop_export_is_exact(subs, region, mode):
    assert_exact(onnx.load(str(SHAPE_CROP)), region=region, subs=subs, mode=mode)


def expand_by_batch():
    """``h.expand(h.shape[0], 6, L)``: a value holding the batch size shapes a sequence tensor,
    so the Shape is not the reference; the Expand runs per mutant."""
    n = Net(seed=9)
    h = n.op("Relu", [n.conv("x", 4, 1, 5, pads=[2, 2])])  # (N, 1, L)
    first = n.op("Slice", [n.op("Shape", [h]), n.const([0]), n.const([1])])
    wide = n.op("Expand", [h, n.op("Concat", [first, n.const([6, L])], axis=0)])
    return n.model({"x": ["N", 4, L]}, {"y": n.conv(wide, 6, 2, 3, pads=[1, 1])})


@pytest.mark.parametrize("mode", MODES)
def test_batch_valued_shapes_that_shape_sequence_tensors_fall_back_exactly(mode):
    plan = assert_exact(expand_by_batch(), region=(0, L), subs="alt", mode=mode)
    shape = next(n for n in plan.nodes if n.node.op_type == "Shape")
    assert shape.rule == "fallback" and "reaches Expand node" in shape.note


def test_export_reproduces_the_committed_file(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "shape_crop.onnx"
    export(str(path))
    fresh, committed = onnx.load(str(path)), onnx.load(str(SHAPE_CROP))
    assert [n.op_type for n in fresh.graph.node] == [n.op_type for n in committed.graph.node]
    for a, b in zip(sorted(fresh.graph.initializer, key=lambda t: t.name),
                    sorted(committed.graph.initializer, key=lambda t: t.name)):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))


if __name__ == "__main__":  # python tests/test_static_shapes.py tests/data/shape_crop_L31_torchscript.onnx
    export(sys.argv[1])
