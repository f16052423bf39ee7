"""A time model of ONNX Runtime graphs, calibrated on measured kernel times.

Each node costs ``overhead + per_byte x bytes + per_flop x flops + per_image x images +
per_narrow x flops / width`` (``images``: the batch a Conv, MatMul or pool loops over, one small
GEMM each; ``flops / width``: the GEMM work per output column, which costs extra when columns are
few, as in a tile's narrow windows), with coefficients per op
type and provider fitted by ``tools/calibrate_time_model.py`` from ONNX Runtime profiles of
converted and original models (``yuzu_onnx/data/time_model_<provider>.json``). ``bytes`` are
the node's input and output tensors, ``flops`` its multiply-accumulates x 2 (Conv, MatMul,
Gemm). A Loop costs its body times its trip count. The shapes come from ONNX shape inference
at batch 1, as for the memory estimate (:mod:`yuzu_onnx.memory`).

The model ranks candidate plans of one conversion (whole-sequence probes, tiles of several
widths, brute force) and predicts brute-force ISM for the plan table; absolute times are
approximate (machines differ), ratios are what it is for.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from .graph_walk import subgraphs
from .memory import folded_transposes, nchwc_weights, static_shapes, with_batch

DATA = Path(__file__).resolve().parent / "data"
#: Op types that share a cost curve (the ops themselves differ little in what they do per byte).
GROUPS = {"FusedConv": "Conv", "Identity": "Reshape", "Flatten": "Reshape", "Squeeze": "Reshape",
          "Unsqueeze": "Reshape", "Dropout": "Reshape", "Sub": "Add", "Mul": "Add", "Div": "Add",
          "Equal": "Add", "Less": "Add", "Sum": "Add", "GreaterOrEqual": "Add", "And": "Add", "Not": "Add",
          "Sigmoid": "Relu", "Tanh": "Relu", "LeakyRelu": "Relu", "Elu": "Relu", "Softplus": "Relu",
          "Exp": "Relu", "Erf": "Relu", "Gelu": "Relu", "Clip": "Relu", "Cast": "Relu",
          "ReduceMean": "ReduceSum", "ReduceMax": "ReduceSum", "GlobalAveragePool": "ReduceSum",
          "GlobalMaxPool": "ReduceSum", "AveragePool": "MaxPool", "Gemm": "MatMul"}


@dataclass(frozen=True)
class NodeCost:
    """Coefficients of one op type's cost curve (seconds)."""

    overhead: float
    per_byte: float
    per_flop: float
    per_image: float = 0.0
    per_narrow: float = 0.0

    def seconds(self, nbytes: float, flops: float, images: float = 0.0, narrow: float = 0.0) -> float:
        return (self.overhead + self.per_byte * nbytes + self.per_flop * flops + self.per_image * images
                + self.per_narrow * narrow)


#: Used for ops the calibration has not seen: about what ONNX Runtime's CPU kernels do on a
#: 2-core machine (5 us a node, 2 GB/s moved, 100 GFLOP/s).
DEFAULT = NodeCost(5e-6, 0.5e-9, 1e-11)


@functools.lru_cache(maxsize=4)
def coefficients(provider: str = "cpu") -> dict[str, NodeCost]:
    """The calibrated cost curves of ``provider`` (``cpu``), by op group; CUDA falls back to CPU's."""
    path = DATA / f"time_model_{provider}.json"
    if not path.exists():
        path = DATA / "time_model_cpu.json"
    if not path.exists():
        return {}
    table = json.loads(path.read_text())["ops"]
    return {op: NodeCost(**c) for op, c in table.items()}


def op_group(op_type: str, first_input: tuple[int, ...] | None = None) -> str:
    """The cost curve an op runs on. A Conv over 4-D inputs is ``Conv2D``: ONNX Runtime's CPU
    provider runs it in its blocked NCHWc layout (copies in and out included), at another rate
    than a 1-D Conv's im2col and small GEMM per image (:mod:`yuzu_onnx.emit.conv_layout`)."""
    group = GROUPS.get(op_type, op_type)
    return "Conv2D" if group == "Conv" and first_input is not None and len(first_input) == 4 else group


def node_flops(op_type: str, shapes: list[tuple[int, ...] | None], out: tuple[int, ...] | None,
               group: int = 1) -> float:
    """2 x multiply-accumulates of a Conv/ConvTranspose/MatMul/Gemm node from its shapes."""
    if out is None or any(s is None for s in shapes[:2]):
        return 0.0
    if op_type in ("Conv", "FusedConv") and len(shapes) > 1:
        w = shapes[1]
        return 2.0 * math.prod(out) * math.prod(w[1:])
    if op_type == "ConvTranspose" and len(shapes) > 1:
        w = shapes[1]
        return 2.0 * math.prod(shapes[0]) * math.prod(w[1:])
    if op_type in ("MatMul", "Gemm") and len(shapes) > 1:
        return 2.0 * math.prod(out) * (shapes[0][-1] if shapes[0] else 0)
    return 0.0


#: Ops whose ONNX Runtime CPU kernel loops over the leading (batch) axis, one image at a time.
PER_IMAGE = frozenset({"Conv", "FusedConv", "ConvTranspose", "MaxPool", "AveragePool", "MatMul"})


def images(op_type: str, first: tuple[int, ...] | None) -> float:
    """Images an op loops over: a Conv's or pool's batch, a batched MatMul's leading dims."""
    if op_type not in PER_IMAGE or not first:
        return 0.0
    if op_type == "MatMul":
        return float(math.prod(first[:-2])) if len(first) > 2 else 1.0
    return float(first[0])


def narrowness(flops: float, out: tuple[int, ...] | None) -> float:
    """``flops / width``: a GEMM's work per output column (width: the output's last axis)."""
    return flops / out[-1] if flops and out and out[-1] else 0.0


def node_features(node: onnx.NodeProto, shape: dict[str, tuple[tuple[int, ...], int]]
                  ) -> tuple[str, float, float, float, float]:
    """(op group, bytes read and written, flops, images, flops per output column) of a node;
    ``shape`` maps tensor -> (dims, itemsize)."""
    ins = [shape.get(n) for n in node.input if n]
    outs = [shape.get(n) for n in node.output if n]
    nbytes = sum(math.prod(d) * size for d, size in filter(None, ins + outs))
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    flops = node_flops(node.op_type, [s[0] if s else None for s in ins], outs[0][0] if outs and outs[0] else None,
                       group)
    out = outs[0][0] if outs and outs[0] else None
    first = ins[0][0] if ins and ins[0] else None
    return (op_group(node.op_type, first), float(nbytes), flops, images(node.op_type, first), narrowness(flops, out))


def predict_seconds(model: onnx.ModelProto, provider: str = "cpu", batch: int = 1) -> float:
    """Predicted seconds of one run of ``model`` on ``batch`` sequences."""
    fixed = with_batch(model, batch)
    shape = static_shapes(fixed.graph)
    for t in model.graph.initializer:  # with_batch turned large ones into inputs
        shape[t.name] = (tuple(t.dims), helper.tensor_dtype_to_np_dtype(t.data_type).itemsize)
    constants = {t.name for t in model.graph.initializer}
    return _graph_seconds(fixed.graph, shape, coefficients(provider), constants, fixed)


def _graph_seconds(graph: onnx.GraphProto, shape: dict, table: dict[str, NodeCost], constants: set[str],
                   model: onnx.ModelProto) -> float:
    total = 0.0
    folded = folded_transposes(graph, nchwc_weights(graph, constants, model))  # no pass of their own
    for node in graph.node:
        if node.op_type == "Transpose" and node.output[0] in folded:
            continue
        if node.input and all(n in constants for n in node.input if n) and not subgraphs(node):
            constants.update(node.output)  # folded at session creation
            continue
        if node.op_type == "Loop":
            trips = next((np.asarray(onnx.numpy_helper.to_array(t)).reshape(-1)[0] for t in model.graph.initializer
                          if t.name == node.input[0]), 1)
            body = _graph_seconds(subgraphs(node)[0], shape, table, set(constants), model)
            total += int(trips) * (body + table.get("Loop", DEFAULT).overhead)
            continue
        group, nbytes, flops, count, narrow = node_features(node, shape)
        total += table.get(group, DEFAULT).seconds(nbytes, flops, count, narrow)
    return total


def fit(samples: list[tuple], min_samples: int = 4) -> dict[str, NodeCost]:
    """Fit cost curves from ``(op group, bytes, flops, images, flops per column, seconds)``
    samples: least squares per
    group with non-negative coefficients (a negative one is dropped and the rest refitted);
    groups with fewer than ``min_samples`` samples are left out (they use :data:`DEFAULT`)."""
    by: dict[str, list] = {}
    for group, nbytes, flops, count, narrow, seconds in samples:
        by.setdefault(group, []).append((nbytes, flops, count, narrow, seconds))
    table = {}
    for group, rows in by.items():
        if len(rows) < min_samples:
            continue
        a = np.array(rows, dtype=np.float64)
        columns = [0, 1] + [c + 1 for c in (1, 2, 3) if a[:, c].any()]
        coef = _nonnegative_fit(a, columns)
        table[group] = NodeCost(*coef)
    return table


def _nonnegative_fit(a: np.ndarray, columns: list[int]) -> list[float]:
    """Coefficients ``[overhead, per_byte, per_flop, per_image, per_narrow]`` of
    ``seconds ~ [1, bytes, flops, images, flops per column]``, none negative.

    The overhead is what the group's smallest kernels take (10th percentile, at most 50 us): a
    free intercept would soak up the large kernels' misfit and then be charged to every small
    node, which tiled plans have many of. The other coefficients are fitted by least squares
    on the seconds beyond it (the large kernels, which set the wall time, dominate).
    """
    seconds = a[:, 4]
    overhead = float(min(np.percentile(seconds, 10), 50e-6))
    rest = np.maximum(seconds - overhead, 0.0)
    design = a[:, :4]
    active = [c - 1 for c in columns if c > 0]
    while active:
        coef = np.zeros(4)
        sol, *_ = np.linalg.lstsq(design[:, active], rest, rcond=None)
        coef[active] = sol
        negative = [c for c in active if coef[c] < 0]
        if not negative:
            return [overhead, *(float(c) for c in coef)]
        active.remove(negative[0])
    return [float(np.median(seconds)), 0.0, 0.0, 0.0, 0.0]
