"""Groups of tiles: one Loop per group, windows cropped to the positions inside the tensors for
the group's own tiles (:func:`yuzu_onnx.tiling.plan_tiling`, :func:`yuzu_onnx.tile_geometry.cropped`)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from builders import Net, random_one_hot
from conftest import assert_matches_oracle
from yuzu_onnx import convert
from yuzu_onnx.convert import plan_conversion
from yuzu_onnx.plan import TileWindow
from yuzu_onnx.report import plan_table
from yuzu_onnx.support import Support
from yuzu_onnx.tile_geometry import cropped
from yuzu_onnx.tiling import group_bounds

LENGTH = 67


def dilated_tower(length: int = LENGTH, crop: bool = False):
    """A residual dilated tower (receptive field about the sequence's length) with a counts head
    and, with ``crop``, ChromBPNet's cropped skips (a Slice of the block's input added to its
    valid Conv's output)."""
    net = Net(seed=3)
    h = net.op("Relu", [net.conv("x", 4, 6, 5, pads=[0, 0] if crop else [2, 2])])
    width = length - 4 if crop else length
    for d in (1, 2, 4, 8):
        if crop:
            conv = net.op("Relu", [net.conv(h, 6, 6, 3, pads=[0, 0], dilations=[d])])
            skip = net.op("Slice", [h, net.const([d]), net.const([width - d]), net.const([2])])
            h, width = net.op("Add", [conv, skip]), width - 2 * d
        else:
            h = net.op("Add", [h, net.op("Relu", [net.conv(h, 6, 6, 3, pads=[d, d], dilations=[d])])])
    y = net.op("ReduceMean", [h], axes=[2], keepdims=0)
    return net.model({"x": ["N", 4, length]}, {"y": y})


def _plan(model, groups, start=0, end=LENGTH, width=2, per_chunk=2):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return plan_conversion(model, start=start, end=end, tile_width=width, tiles_per_chunk=per_chunk,
                               tile_groups=groups)


# ----------------------------------------------------------------------------- geometry


def test_a_window_keeps_the_positions_inside_the_tensor_for_some_tile():
    support = Support(np.arange(10), np.arange(10) + 2)
    window = TileWindow(start=-6, shift=2, length=12)  # tile t: positions -6 + 2t .. 3 + 2t
    # tiles 0..1: tile 1 sees -4..5, inside from its window position 4 (tile 0's start moves to -2)
    got, moved = cropped(support, window, 0, 1)
    assert (moved.start, moved.shift, got.length) == (-2, 2, 6)
    assert got.lo.tolist() == list(range(4, 10))
    # tiles 5..6: tile 5 sees 4..13, inside up to its window position 7
    got, moved = cropped(support, window, 5, 6)
    assert (moved.start, got.length) == (-6, 8)
    assert got.hi.tolist() == list(range(2, 10))
    same, kept = cropped(support, window, 3, 3)  # tile 3 sees 0..9: all inside
    assert kept == window and same is support
    far = TileWindow(start=40, shift=2, length=12)  # nothing inside: kept whole, never empty
    assert cropped(support, far, 0, 1)[1] == far


@pytest.mark.parametrize("tiles,per_chunk,groups", [(125, 32, 8), (125, 1, 8), (5, 2, 4), (7, 3, 2), (3, 1, 8),
                                                    (10, 10, 3), (1, 1, 8)])
def test_groups_cover_the_tiles_in_order(tiles, per_chunk, groups):
    bounds = group_bounds(tiles, per_chunk, groups)
    assert len(bounds) == min(groups, tiles)
    assert [first for first, _, _ in bounds] == list(np.cumsum([0] + [n for _, n, _ in bounds])[:-1])
    assert sum(n for _, n, _ in bounds) == tiles
    assert all(1 <= chunk <= max(per_chunk, 1) or chunk == n for _, n, chunk in bounds)
    if -(-tiles // per_chunk) >= groups:  # whole chunks: only the last group may hold phantom tiles
        assert all(n % per_chunk == 0 for _, n, _ in bounds[:-1])


def test_groups_cut_the_positions_outside_the_sequence():
    model = dilated_tower(crop=True)
    single, split = _plan(model, 1), _plan(model, 4)
    assert len(single.tiling.groups) == 1 and len(split.tiling.groups) == 4
    assert split.totals()["converted"] < 0.9 * single.totals()["converted"]
    assert split.totals()["converted"] >= split.totals()["floor"]
    # an op that passes its input's probes on, renumbered (a Slice), keeps the input's window
    renumbered = {np_.node.output[0] for np_ in split.nodes if np_.rule == "positional"}
    for group in split.tiling.groups:
        last = group.first + group.tiles - 1
        for name, win in group.windows.items():
            if name in renumbered:
                continue
            positions = win.positions(np.arange(group.first, last + 1), group.states[name].dims[-1])
            inside = (positions >= 0) & (positions < win.length)
            assert inside.any(axis=0).all(), f"{name}: a window position outside the tensor for every tile"


def test_the_plan_chooses_groups_where_they_cut_flops():
    model = dilated_tower(crop=True)
    auto = _plan(model, None)
    assert len(auto.tiling.groups) > 1
    assert "groups of" in plan_table(auto)
    net = Net(seed=1)  # one narrow Conv over a region in the middle: every window inside the tensor
    y = net.op("ReduceMean", [net.op("Relu", [net.conv("x", 4, 6, 3, pads=[1, 1])])], axes=[2], keepdims=0)
    inside = _plan(net.model({"x": ["N", 4, LENGTH]}, {"y": y}), None, start=20, end=40)
    assert len(inside.tiling.groups) == 1


def test_tile_groups_must_be_positive():
    with pytest.raises(ValueError, match="tile_groups"):
        convert(dilated_tower(), tile_width=2, tile_groups=0)


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("crop", [False, True], ids=["padded", "cropped-skips"])
@pytest.mark.parametrize("groups,width,per_chunk", [(2, 2, 3), (3, 1, 2), (8, 2, 1), (40, 1, 1)])
@pytest.mark.parametrize("region", [(0, LENGTH), (0, 7), (LENGTH - 9, LENGTH), (20, 41)])
def test_grouped_tiles_match_the_oracle(crop, groups, width, per_chunk, region):
    """Groups of every size (one tile each included), chunks with phantom tiles, regions touching
    either end; the cropped skips make windows of an Add's operands lie apart at the edges (the
    skip's window only reference values there)."""
    model = dilated_tower(crop=crop)
    start, end = region
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph, plan = convert(model, start=start, end=end, tile_width=width, tiles_per_chunk=per_chunk,
                              tile_groups=groups, return_plan=True)
    assert len(plan.tiling.groups) == min(groups, plan.tiling.tiles)
    loops = [n for n in graph.graph.node if n.op_type == "Loop"]
    assert len(loops) == len(plan.tiling.groups)
    assert_matches_oracle(model, graph, random_one_hot(2, LENGTH, seed=11), start=start, end=end,
                          label=f"groups={groups} T={width} c={per_chunk} {region}")


def test_convert_command_takes_the_groups(tmp_path, capsys):
    import onnx

    from yuzu_onnx.cli import main

    source, out = tmp_path / "tower.onnx", tmp_path / "tower.ism.onnx"
    onnx.save(dilated_tower(crop=True), str(source))
    assert main(["convert", str(source), "-o", str(out), "--tile-width", "2", "--tile-groups", "3"]) == 0
    assert "in 3 groups of" in capsys.readouterr().out
    assert sum(n.op_type == "Loop" for n in onnx.load(str(out)).graph.node) == 3


@pytest.mark.parametrize("region", [(0, LENGTH), (0, 9), (LENGTH - 9, LENGTH)])
def test_a_dense_head_over_groups_keeps_one_weight(region):
    """A dense layer over the flattened tower (a dense exit) in 3 groups: exact, and its weight
    rearranged per position once for all the Loops."""
    net = Net(seed=9)
    h = net.op("Relu", [net.conv("x", 4, 3, 5, pads=[4, 4], dilations=[2])])
    h = net.op("Relu", [net.conv(h, 3, 3, 3, pads=[4, 4], dilations=[4])])
    flat = net.op("Flatten", [h], axis=1)
    y = net.op("Gemm", [flat, net.w(5, 3 * LENGTH), net.w(5, scale=0.5)], transB=1)
    model = net.model({"x": ["N", 4, LENGTH]}, {"y": y})
    start, end = region
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph, plan = convert(model, start=start, end=end, tile_width=2, tiles_per_chunk=2, tile_groups=3,
                              return_plan=True)
    assert any(np_.rule == "dense-exit" for np_ in plan.nodes)
    assert len(plan.tiling.groups) == 3
    assert sum(n.op_type == "Loop" for n in graph.graph.node) == 3
    weight_rows = [n for n in graph.graph.node if n.op_type == "Pad" and "dense_w_pad" in n.output[0]]
    assert len(weight_rows) <= 1  # one per group before (3 at the full region)
    assert_matches_oracle(model, graph, random_one_hot(2, LENGTH, seed=5), start=start, end=end,
                          label=f"dense head in groups {region}")
