"""Finite models, and selecting between two tensors by a mask without a Where.

ONNX Runtime's CPU ``Where`` runs element by element on one thread (a ``(3001, 8, 125)`` select:
about 1.9 ms where a vectorized, threaded ``Mul`` or ``Add`` of the same size takes a tenth of
that). Where both operands hold finite values, ``x * m + y * (1 - m)`` with ``m`` in ``{0, 1}``
is the same selection exactly: ``x * 1 + y * 0 = x + (+-0) = x`` and ``x * 0 + y * 1 = y`` (up to
the sign of a zero). A NaN or an infinity in the operand not taken would survive (``inf * 0``
is NaN), so the arithmetic is used only for models whose probe-form ops keep finite values
finite (:func:`finite_model`).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .context import EmitContext

#: Ops that keep finite values finite (no 0 -> inf, no overflow beyond what the valid positions
#: would see: bounded, or at most a constant factor of their input). Where a model has only
#: these, every probe-form tensor holds finite values: out-of-range positions of tiles are zeroed
#: by one multiplication and selections use :func:`select`'s arithmetic. (A tiled MaxPool pads
#: with float32's lowest value, which an op after it can overflow: its out-of-range outputs are
#: zeroed at once, :func:`yuzu_onnx.rules.window._window_on_tiles`.) Softplus, Elu, Celu, Selu,
#: Mish and HardSwish grow at most linearly (ONNX Runtime's Softplus of 3.4e38 is 3.4e38, not
#: inf); Softsign is bounded.
FINITE_OPS = frozenset({
    "Conv", "Relu", "LeakyRelu", "PRelu", "Add", "Sub", "Mul", "BatchNormalization", "MaxPool", "AveragePool",
    "Sigmoid", "Tanh", "HardSigmoid", "Clip", "Gemm", "MatMul", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
    "Slice", "Pad", "Concat", "Flatten", "Identity", "Dropout", "GlobalAveragePool", "GlobalMaxPool",
    "ReduceMean", "ReduceSum", "ReduceMax", "Shape", "Size", "Gather", "Cast", "Constant", "Erf", "Gelu",
    "LayerNormalization", "Softmax", "LogSoftmax", "Max", "Min", "Abs", "Neg", "Expand",
    "Softplus", "Softsign", "Elu", "Celu", "Selu", "Mish", "HardSwish"})


def finite_model(ctx: EmitContext) -> bool:
    """Whether every probe-form tensor holds finite values for a finite input: every op that
    runs on probes is in :data:`FINITE_OPS` and no weight is NaN or infinite (out-of-range
    positions exist only in probe tensors; ops after the exits never see them)."""
    if "finite" not in ctx.cache:
        weights = {t.name: t for t in ctx.plan.model.graph.initializer}
        ctx.cache["finite"] = not ctx.plan.non_finite_weights and all(
            _keeps_finite(np_.node, weights) for np_ in ctx.plan.nodes if np_.spec.probe_form)
    return ctx.cache["finite"]


def _keeps_finite(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> bool:
    """An op of :data:`FINITE_OPS`, or a division by a constant without zeros (an exported
    GELU's ``x / sqrt(2)``: a multiplication by a constant factor)."""
    if node.op_type in FINITE_OPS:
        return True
    return (node.op_type == "Div" and len(node.input) == 2 and node.input[1] in weights
            and bool(np.all(numpy_helper.to_array(weights[node.input[1]]) != 0)))


def select(ctx: EmitContext, keep: str, x: str, other: str, hint: str) -> str:
    """``where(keep, x, other)`` with broadcasting.

    In a finite model (:func:`finite_model`) this is ``x * float(keep) + other * float(not keep)``:
    exact for finite operands (``x + 0 = x``, ``0 + y = y``; a zero's sign aside) and several
    times faster than ONNX Runtime's single-threaded Where on large tensors. Elsewhere a Where.
    """
    b = ctx.b
    if not finite_model(ctx):
        return b.op("Where", [keep, x, other], hint)
    float_type = helper.np_dtype_to_tensor_dtype(ctx.dtype)
    taken = b.op("Mul", [x, b.op("Cast", [keep], f"{hint}_f", to=float_type)], f"{hint}_x")
    rest = b.op("Mul", [other, b.op("Cast", [b.op("Not", [keep], f"{hint}_not")], f"{hint}_nf", to=float_type)],
                f"{hint}_y")
    return b.op("Add", [taken, rest], hint)
